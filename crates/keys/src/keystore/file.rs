//! The keystore file's encoding (layout in the parent module's docs): header, parsing
//! with bounds checks, and the private atomic write.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use selene_codec::{Reader, Writer};

pub use crate::private_file::write_private;

use super::{KIND_KEYSTORE, MAGIC, MAX_SESSIONS, VERSION};
use crate::backend::BackendDescriptor;
use crate::error::{io, Error, Result};
use crate::format::{MAX_FIELD, MAX_POLICY};
use crate::session::{PARAMS_FINGERPRINT_LEN, SESSION_ID_LEN};

pub(super) fn check_mode(path: &Path) -> Result<()> {
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The public header of a keystore.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The client identity the root key belongs to.
    pub identity: String,
    /// Random keystore id (salt of every subkey).
    pub id: [u8; 16],
    /// Keystore-key generation: 0 at init, +1 per rotation.
    pub generation: u32,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The root backend.
    pub backend: BackendDescriptor,
}

impl Header {
    /// The header's bytes (the associated data of the root's wrap).
    ///
    /// # Errors
    /// [`Error::TooLong`] for an identity or backend string above its cap.
    pub(super) fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.header(MAGIC, VERSION);
        w.u8(KIND_KEYSTORE);
        w.bytes_u16("identity", self.identity.as_bytes(), MAX_FIELD)?;
        w.raw(&self.id);
        w.u32(self.generation);
        w.u64(self.created);
        self.backend.write(&mut w)?;
        Ok(w.into_bytes())
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self> {
        r.header(MAGIC, VERSION..=VERSION)?;
        let k = r.u8("kind")?;
        if k != KIND_KEYSTORE {
            return Err(Error::InvalidField {
                field: "kind",
                value: k.into(),
            });
        }
        Ok(Self {
            identity: r.str_u16("identity", MAX_FIELD)?.to_string(),
            id: r.array("keystore id")?,
            generation: r.u32("generation")?,
            created: r.u64("created")?,
            backend: BackendDescriptor::read(r)?,
        })
    }
}

/// A persisted session key, wrapped.
#[derive(Clone, Debug)]
pub(super) struct StoredSession {
    pub(super) id: [u8; SESSION_ID_LEN],
    pub(super) params: [u8; PARAMS_FINGERPRINT_LEN],
    pub(super) created: u64,
    pub(super) wrapped: Vec<u8>,
}

/// A persisted session key as `selene keys list` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// Its id (hex).
    pub id: String,
    /// Fingerprint of the CKKS parameter set it is for
    /// (`selene_ckks::Parameters::fingerprint`).
    pub params: [u8; PARAMS_FINGERPRINT_LEN],
    /// When it was persisted.
    pub created: u64,
}

/// The parsed file, before the root is asked for anything.
pub(super) struct Parsed {
    pub(super) header: Header,
    pub(super) header_len: usize,
    pub(super) wrapped_ksk: Vec<u8>,
    pub(super) policy_text: String,
    pub(super) policy_tag: [u8; 32],
    pub(super) sessions: Vec<StoredSession>,
    pub(super) body_len: usize,
    pub(super) mac: [u8; 32],
}

/// Writes everything the keystore MAC covers: header, wrapped keystore key, signed
/// policy, sessions (the layout in the parent module's docs).
///
/// # Errors
/// [`Error::TooLong`] for a field above its cap, [`Error::TooManySessions`]: nothing is
/// cut to fit.
pub(super) fn write_body(
    w: &mut Writer,
    header: &Header,
    wrapped_ksk: &[u8],
    policy: (&str, &[u8; 32]),
    sessions: &[StoredSession],
) -> Result<()> {
    w.raw(&header.encode()?);
    w.bytes_u16("wrapped keystore key", wrapped_ksk, MAX_FIELD)?;
    w.bytes_u32("policy", policy.0.as_bytes(), MAX_POLICY)?;
    w.raw(policy.1);
    if sessions.len() > MAX_SESSIONS {
        return Err(Error::TooManySessions {
            count: sessions.len(),
            max: MAX_SESSIONS,
        });
    }
    // At most MAX_SESSIONS, far below u16::MAX.
    w.u16(sessions.len() as u16);
    for s in sessions {
        w.raw(&s.id);
        w.raw(&s.params);
        w.u64(s.created);
        w.bytes_u16("wrapped session key", &s.wrapped, MAX_FIELD)?;
    }
    Ok(())
}

impl Parsed {
    /// The file again: body then the MAC as read (the inverse of [`parse`]; the format
    /// is canonical, so this gives back the parsed bytes).
    #[cfg(any(test, fuzzing))]
    pub(super) fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        write_body(
            &mut w,
            &self.header,
            &self.wrapped_ksk,
            (&self.policy_text, &self.policy_tag),
            &self.sessions,
        )?;
        w.raw(&self.mac);
        Ok(w.into_bytes())
    }
}

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed> {
    let mut r = Reader::new(bytes);
    let header = Header::read(&mut r)?;
    let header_len = r.offset();
    let wrapped_ksk = r.bytes_u16("wrapped keystore key", MAX_FIELD)?.to_vec();
    let policy_bytes = r.bytes_u32("policy", MAX_POLICY)?;
    let policy_text =
        String::from_utf8(policy_bytes.to_vec()).map_err(|e| Error::InvalidField {
            field: "policy (not UTF-8)",
            value: e.utf8_error().valid_up_to() as u64,
        })?;
    let policy_tag = r.array("policy tag")?;
    let n = r.u16("session count")? as usize;
    if n > MAX_SESSIONS {
        return Err(Error::TooManySessions {
            count: n,
            max: MAX_SESSIONS,
        });
    }
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(StoredSession {
            id: r.array("session id")?,
            params: r.array("session parameters fingerprint")?,
            created: r.u64("session created")?,
            wrapped: r.bytes_u16("wrapped session key", MAX_FIELD)?.to_vec(),
        });
    }
    let body_len = r.offset();
    let mac = r.array("keystore MAC")?;
    r.expect_end()?;
    Ok(Parsed {
        header,
        header_len,
        wrapped_ksk,
        policy_text,
        policy_tag,
        sessions,
        body_len,
        mac,
    })
}
