//! The codec against hand-written bytes, each rejection by its exact error, and a
//! proptest round trip of arbitrary field sequences.

use proptest::prelude::*;

use super::*;

fn e(what: &'static str, offset: usize, kind: ErrorKind) -> CodecError {
    CodecError { what, offset, kind }
}

#[test]
fn numbers_are_little_endian() {
    let mut w = Writer::new();
    w.u8(1);
    w.u16(0x0302);
    w.u32(0x0706_0504);
    w.u64(0x0f0e_0d0c_0b0a_0908);
    w.i64(-2);
    w.f32(1.5);
    w.f64(-0.25);
    let b = w.into_bytes();
    assert_eq!(&b[..15], &(1u8..=15).collect::<Vec<_>>()[..]);
    assert_eq!(
        &b[15..23],
        &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(&b[23..27], &[0, 0, 0xc0, 0x3f]);
    let mut r = Reader::new(&b);
    assert_eq!(r.u8("a"), Ok(1));
    assert_eq!(r.u16("b"), Ok(0x0302));
    assert_eq!(r.u32("c"), Ok(0x0706_0504));
    assert_eq!(r.u64("d"), Ok(0x0f0e_0d0c_0b0a_0908));
    assert_eq!(r.i64("e"), Ok(-2));
    assert_eq!(r.f32("f"), Ok(1.5));
    assert_eq!(r.f64("g"), Ok(-0.25));
    assert_eq!((r.offset(), r.remaining()), (35, 0));
    assert_eq!(r.expect_end(), Ok(()));
}

#[test]
fn short_input_names_the_field_and_offset() {
    let mut r = Reader::new(&[1, 2, 3]);
    assert_eq!(r.u8("tag"), Ok(1));
    assert_eq!(
        r.u32("count"),
        Err(e("count", 1, ErrorKind::Short { needed: 4, left: 2 }))
    );
    // A failed read consumes nothing.
    assert_eq!(r.take("rest", 2), Ok(&[2u8, 3][..]));
    assert_eq!(
        r.take("more", usize::MAX),
        Err(e(
            "more",
            3,
            ErrorKind::Short {
                needed: usize::MAX,
                left: 0
            }
        ))
    );
}

#[test]
fn prefixes_check_the_maximum_then_the_bytes_left() {
    // Length 5 announced, max 4: refused at the prefix's offset, whatever follows.
    let b = [0, 5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o'];
    let mut r = Reader::new(&b);
    r.u8("pad").unwrap();
    assert_eq!(
        r.bytes_u32("name", 4),
        Err(e("name", 1, ErrorKind::OverMax { value: 5, max: 4 }))
    );
    let mut r = Reader::new(&b[1..9]);
    assert_eq!(
        r.bytes_u32("name", 8),
        Err(e("name", 4, ErrorKind::Short { needed: 5, left: 4 }))
    );
    assert_eq!(Reader::new(&b[1..]).str_u32("name", 5), Ok("hello"));
    // A u64 length of 2^63 is refused before anything could allocate for it.
    let huge = (1u64 << 63).to_le_bytes();
    assert_eq!(
        Reader::new(&huge).bytes_u64("blob", usize::MAX),
        Err(e(
            "blob",
            8,
            ErrorKind::Short {
                needed: 1 << 63,
                left: 0
            }
        ))
    );
    // The width caps the maximum.
    let mut w = Writer::new();
    assert_eq!(
        w.bytes_u16("f", &[0; 70_000], usize::MAX),
        Err(e(
            "f",
            0,
            ErrorKind::OverMax {
                value: 70_000,
                max: 65_535
            }
        ))
    );
}

#[test]
fn counts_check_items_against_the_bytes_left() {
    let mut b = 3u32.to_le_bytes().to_vec();
    b.extend_from_slice(&[0; 11]);
    assert_eq!(
        Reader::new(&b).count_u32("items", 10, 4),
        Err(e(
            "items",
            4,
            ErrorKind::Short {
                needed: 12,
                left: 11
            }
        ))
    );
    assert_eq!(Reader::new(&b).count_u32("items", 10, 3), Ok(3));
    assert_eq!(
        Reader::new(&b).count_u32("items", 2, 1),
        Err(e("items", 0, ErrorKind::OverMax { value: 3, max: 2 }))
    );
    let max = u64::MAX.to_le_bytes();
    assert_eq!(
        Reader::new(&max).count_u64("n", 1 << 20, 1),
        Err(e(
            "n",
            0,
            ErrorKind::OverMax {
                value: u64::MAX,
                max: 1 << 20
            }
        ))
    );
}

#[test]
fn bad_utf8_points_at_the_string() {
    let b = [2, 0, b'o', 0xff];
    assert_eq!(
        Reader::new(&b).str_u16("name", 8),
        Err(e("name", 2, ErrorKind::BadUtf8 { valid_up_to: 1 }))
    );
}

#[test]
fn sub_readers_keep_outer_offsets() {
    let b = [9, 1, 2, 3, 4, 5];
    let mut r = Reader::new(&b);
    r.u8("tag").unwrap();
    let mut body = r.sub("body", 3).unwrap();
    assert_eq!(r.offset(), 4);
    assert_eq!(body.u16("x"), Ok(0x0201));
    assert_eq!(
        body.u16("y"),
        Err(e("y", 3, ErrorKind::Short { needed: 2, left: 1 }))
    );
    assert_eq!(
        body.expect_end(),
        Err(e("trailing bytes", 3, ErrorKind::Trailing { count: 1 }))
    );
    assert_eq!(
        r.sub("tail", 3).map(|s| s.remaining()),
        Err(e("tail", 4, ErrorKind::Short { needed: 3, left: 2 }))
    );
}

#[test]
fn header_checks_magic_then_version() {
    let mut w = Writer::new();
    w.header(b"SELX", 3u16);
    let good = w.into_bytes();
    assert_eq!(good, [b'S', b'E', b'L', b'X', 3, 0]);
    assert_eq!(Reader::new(&good).header(b"SELX", 1u16..=3), Ok(3));
    assert_eq!(
        Reader::new(&good).header(b"SELY", 1u16..=3),
        Err(e(
            "magic",
            0,
            ErrorKind::BadMagic {
                found: *b"SELX",
                expected: *b"SELY"
            }
        ))
    );
    assert_eq!(
        Reader::new(&good).header(b"SELX", 1u16..=2),
        Err(e(
            "version",
            4,
            ErrorKind::UnsupportedVersion {
                found: 3,
                min: 1,
                max: 2
            }
        ))
    );
    // Widths differ by format: a u8 version reads one byte.
    let mut r = Reader::new(&good[4..]);
    assert_eq!(r.version(3u8..=3), Ok(3));
    assert_eq!(r.remaining(), 1);
}

#[test]
fn writer_refuses_oversize_fields_instead_of_cutting_them() {
    let mut w = Writer::new();
    w.u8(7);
    assert_eq!(
        w.bytes_u16("name", b"abcde", 4),
        Err(e("name", 1, ErrorKind::OverMax { value: 5, max: 4 }))
    );
    assert_eq!(
        w.count_u32("items", 9, 8),
        Err(e("items", 1, ErrorKind::OverMax { value: 9, max: 8 }))
    );
    // Nothing was written for the refused fields.
    assert_eq!(w.as_bytes(), &[7]);
    w.bytes_u16("name", b"abcd", 4).unwrap();
    assert_eq!(w.len(), 7);
    assert!(!w.is_empty());
}

#[test]
fn errors_print_what_where_and_why() {
    let err = Reader::new(&[0; 2]).u32("session count").unwrap_err();
    assert_eq!(
        err.to_string(),
        "session count at byte 0: needs 4 bytes, 2 left"
    );
}

/// One field of each shape the codec writes.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I64(i64),
    F32(u32),
    F64(u64),
    Bytes16(Vec<u8>),
    Bytes32(Vec<u8>),
    Str64(String),
    Count32(u8),
}

fn field() -> impl Strategy<Value = Field> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        any::<u8>().prop_map(Field::U8),
        any::<u16>().prop_map(Field::U16),
        any::<u32>().prop_map(Field::U32),
        any::<u64>().prop_map(Field::U64),
        any::<i64>().prop_map(Field::I64),
        any::<u32>().prop_map(Field::F32),
        any::<u64>().prop_map(Field::F64),
        bytes().prop_map(Field::Bytes16),
        bytes().prop_map(Field::Bytes32),
        ".{0,12}".prop_map(Field::Str64),
        any::<u8>().prop_map(Field::Count32),
    ]
}

const MAX: usize = 40 * 4;

fn write(fields: &[Field]) -> Vec<u8> {
    let mut w = Writer::new();
    for f in fields {
        match f {
            Field::U8(v) => w.u8(*v),
            Field::U16(v) => w.u16(*v),
            Field::U32(v) => w.u32(*v),
            Field::U64(v) => w.u64(*v),
            Field::I64(v) => w.i64(*v),
            Field::F32(v) => w.f32(f32::from_bits(*v)),
            Field::F64(v) => w.f64(f64::from_bits(*v)),
            Field::Bytes16(b) => w.bytes_u16("b16", b, MAX).unwrap(),
            Field::Bytes32(b) => w.bytes_u32("b32", b, MAX).unwrap(),
            Field::Str64(s) => w.bytes_u64("s64", s.as_bytes(), MAX).unwrap(),
            Field::Count32(n) => {
                w.count_u32("count", usize::from(*n), 255).unwrap();
                w.raw(&vec![*n; usize::from(*n)]);
            }
        }
    }
    w.into_bytes()
}

fn read(bytes: &[u8], shapes: &[Field]) -> Result<Vec<Field>> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    for f in shapes {
        out.push(match f {
            Field::U8(_) => Field::U8(r.u8("u8")?),
            Field::U16(_) => Field::U16(r.u16("u16")?),
            Field::U32(_) => Field::U32(r.u32("u32")?),
            Field::U64(_) => Field::U64(r.u64("u64")?),
            Field::I64(_) => Field::I64(r.i64("i64")?),
            Field::F32(_) => Field::F32(r.f32("f32")?.to_bits()),
            Field::F64(_) => Field::F64(r.f64("f64")?.to_bits()),
            Field::Bytes16(_) => Field::Bytes16(r.bytes_u16("b16", MAX)?.to_vec()),
            Field::Bytes32(_) => Field::Bytes32(r.bytes_u32("b32", MAX)?.to_vec()),
            Field::Str64(_) => Field::Str64(r.str_u64("s64", MAX)?.to_string()),
            Field::Count32(_) => {
                let n = r.count_u32("count", 255, 1)?;
                r.take("items", n)?;
                Field::Count32(n as u8)
            }
        });
    }
    r.expect_end()?;
    Ok(out)
}

proptest! {
    /// What the writer wrote reads back field for field, bit-exact; every strict prefix
    /// is short, one more byte is trailing.
    #[test]
    fn fields_round_trip(fields in proptest::collection::vec(field(), 0..12)) {
        let bytes = write(&fields);
        prop_assert_eq!(read(&bytes, &fields), Ok(fields.clone()));
        for cut in 0..bytes.len() {
            let err = read(&bytes[..cut], &fields).unwrap_err();
            prop_assert!(matches!(err.kind, ErrorKind::Short { .. }), "cut {}: {}", cut, err);
        }
        let mut long = bytes.clone();
        long.push(0);
        let want = e("trailing bytes", bytes.len(), ErrorKind::Trailing { count: 1 });
        prop_assert_eq!(read(&long, &fields), Err(want));
    }

    /// Any bytes read as any field sequence give fields or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        fields in proptest::collection::vec(field(), 0..8),
    ) {
        let _ = read(&bytes, &fields);
    }
}

/// The bit packing one byte at a time, as the wire format defines it.
fn pack_bytewise(values: &[u64], bits: u32) -> Vec<u8> {
    let (mut out, mut acc, mut have) = (Vec::new(), 0u128, 0u32);
    for &v in values {
        acc |= u128::from(v) << have;
        have += bits;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
    out
}

#[test]
fn bit_fields_have_a_fixed_layout() {
    // 3-bit fields 1, 2, 7, 5: bits 001 010 111 101 -> bytes 0b11_010_001, 0b1011.
    let mut w = Writer::new();
    w.bits(&[1, 2, 7, 5], 3);
    assert_eq!(w.as_bytes(), &[0b1101_0001, 0b0000_1011]);
    assert_eq!(packed_len(4, 3), 2);
    let mut out = [0u64; 4];
    unpack_bits(w.as_bytes(), 3, &mut out);
    assert_eq!(out, [1, 2, 7, 5]);
    // Full-width fields and an empty list.
    let mut w = Writer::new();
    w.bits(&[u64::MAX, 1], 64);
    w.bits(&[], 17);
    assert_eq!(w.len(), 16);
    let mut out = [0u64; 2];
    unpack_bits(w.as_bytes(), 64, &mut out);
    assert_eq!(out, [u64::MAX, 1]);
}

proptest! {
    #[test]
    fn bit_fields_match_the_bytewise_packing_and_round_trip(
        bits in 1u32..=64,
        raw in proptest::collection::vec(any::<u64>(), 0..300),
    ) {
        let values: Vec<u64> = raw
            .iter()
            .map(|v| if bits == 64 { *v } else { v & ((1u64 << bits) - 1) })
            .collect();
        let mut w = Writer::new();
        w.u8(0xAB);
        w.bits(&values, bits);
        let bytes = w.into_bytes();
        prop_assert_eq!(&bytes[1..], &pack_bytewise(&values, bits)[..]);
        prop_assert_eq!(bytes.len() - 1, packed_len(values.len(), bits));
        let mut out = vec![0u64; values.len()];
        unpack_bits(&bytes[1..], bits, &mut out);
        prop_assert_eq!(out, values);
    }
}
