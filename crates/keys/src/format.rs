//! The keystore's field conventions on top of `selene_codec`: little-endian integers and
//! length-prefixed fields with caps. The codec checks every length read from the file
//! against its cap and the bytes left before anything is allocated, and refuses to write
//! a field longer than its cap ([`crate::Error::TooLong`]) rather than cut it.

/// Cap on a short field behind a u16 length (names, paths, wrapped keys).
pub(crate) const MAX_FIELD: usize = 4096;
/// Cap on the policy text behind a u32 length.
pub(crate) const MAX_POLICY: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use selene_codec::{Reader, Writer};

    use super::*;
    use crate::error::{Error, Result};

    #[test]
    fn fields_round_trip_and_short_input_names_the_field() -> Result<()> {
        let mut w = Writer::new();
        w.u8(7);
        w.u32(0xdead_beef);
        w.bytes_u16("c", b"alice", MAX_FIELD)?;
        w.bytes_u32("d", b"policy", MAX_POLICY)?;
        let buf = w.into_bytes();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8("a")?, 7);
        assert_eq!(r.u32("b")?, 0xdead_beef);
        assert_eq!(r.str_u16("c", MAX_FIELD)?, "alice");
        assert_eq!(r.bytes_u32("d", MAX_POLICY)?, b"policy");
        r.expect_end()?;
        let mut r = Reader::new(&buf[..7]);
        r.u8("a")?;
        r.u32("b")?;
        match r.str_u16("name", MAX_FIELD).map_err(Error::from) {
            Err(Error::Truncated { field: "name", .. }) => {}
            other => panic!("{other:?}"),
        }
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            Reader::new(&huge)
                .bytes_u32("p", MAX_POLICY)
                .map_err(Error::from),
            Err(Error::TooLong {
                field: "p",
                len: 0xffff_ffff,
                max: 65536
            })
        ));
        Ok(())
    }

    #[test]
    fn an_oversize_field_is_refused_not_cut() {
        // The old writer cut a field to its cap and wrote it anyway.
        let mut w = Writer::new();
        let long = vec![b'x'; MAX_FIELD + 1];
        assert!(matches!(
            w.bytes_u16("identity", &long, MAX_FIELD)
                .map_err(Error::from),
            Err(Error::TooLong {
                field: "identity",
                len: 4097,
                max: 4096
            })
        ));
        assert!(w.is_empty());
    }
}
