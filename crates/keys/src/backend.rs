//! The root of trust behind one trait: [`RootKey`] wraps and unwraps the keystore key.
//! Two implementations: [`crate::passphrase::PassphraseRoot`] (Argon2id over a
//! passphrase, for laptops) and [`crate::pkcs11::Pkcs11Root`] (an AES key that never
//! leaves a PKCS#11 token: an HSM, a smart card, a cloud KMS's PKCS#11 library, or
//! SoftHSM2 in tests). [`BackendDescriptor`] is the public half stored in the keystore
//! header: enough to find the root again, nothing secret.

use selene_codec::{Reader, Writer};

use crate::error::Result;
use crate::format::MAX_FIELD;
use crate::kdf::KdfParams;
use crate::secret::KeyBytes;

/// Which root backend and where to find its key (public, stored in the keystore header).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendDescriptor {
    /// A root key derived from a passphrase with Argon2id.
    Passphrase {
        /// Argon2id salt.
        salt: [u8; 16],
        /// Argon2id cost.
        params: KdfParams,
        /// 16 bytes derived from the root key, to tell a wrong passphrase from a damaged
        /// keystore (no more useful to an attacker than the AEAD tag it sits beside).
        check: [u8; 16],
        /// Environment variable that holds the passphrase by default.
        env: String,
    },
    /// A non-extractable AES-256 key on a PKCS#11 token.
    Pkcs11 {
        /// Path of the PKCS#11 module (shared library).
        module: String,
        /// The token's serial number.
        token_serial: String,
        /// The token's label.
        token_label: String,
        /// CKA_LABEL of the root key.
        key_label: String,
        /// Environment variable that holds the user PIN by default.
        pin_env: String,
    },
}

const TAG_PASSPHRASE: u8 = 1;
const TAG_PKCS11: u8 = 2;

impl BackendDescriptor {
    /// Short name: `passphrase` or `pkcs11`.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendDescriptor::Passphrase { .. } => "passphrase",
            BackendDescriptor::Pkcs11 { .. } => "pkcs11",
        }
    }

    /// The environment variable that holds this backend's secret by default.
    pub fn secret_env(&self) -> &str {
        match self {
            BackendDescriptor::Passphrase { env, .. } => env,
            BackendDescriptor::Pkcs11 { pin_env, .. } => pin_env,
        }
    }

    /// One line for `selene keys list`.
    pub fn summary(&self) -> String {
        match self {
            BackendDescriptor::Passphrase { params, env, .. } => format!(
                "passphrase (Argon2id m = {} KiB, t = {}, p = {}; passphrase from ${env})",
                params.m_kib, params.t, params.p
            ),
            BackendDescriptor::Pkcs11 {
                module,
                token_label,
                token_serial,
                key_label,
                pin_env,
            } => format!(
                "pkcs11 (module {module}, token {token_label:?} serial {token_serial}, root key \
                 {key_label:?}, AES-256, non-extractable; PIN from ${pin_env})"
            ),
        }
    }

    /// # Errors
    /// [`crate::Error::TooLong`] for a string longer than the format's cap.
    pub(crate) fn write(&self, w: &mut Writer) -> Result<()> {
        let str16 = |w: &mut Writer, what: &'static str, s: &str| {
            w.bytes_u16(what, s.as_bytes(), MAX_FIELD)
        };
        match self {
            BackendDescriptor::Passphrase {
                salt,
                params,
                check,
                env,
            } => {
                w.u8(TAG_PASSPHRASE);
                w.raw(salt);
                w.u32(params.m_kib);
                w.u32(params.t);
                w.u32(params.p);
                w.raw(check);
                str16(w, "passphrase env", env)?;
            }
            BackendDescriptor::Pkcs11 {
                module,
                token_serial,
                token_label,
                key_label,
                pin_env,
            } => {
                w.u8(TAG_PKCS11);
                str16(w, "pkcs11 module", module)?;
                str16(w, "token serial", token_serial)?;
                str16(w, "token label", token_label)?;
                str16(w, "key label", key_label)?;
                str16(w, "pin env", pin_env)?;
            }
        }
        Ok(())
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8("backend tag")? {
            TAG_PASSPHRASE => {
                let salt = r.array::<16>("kdf salt")?;
                let params = KdfParams {
                    m_kib: r.u32("kdf memory")?,
                    t: r.u32("kdf passes")?,
                    p: r.u32("kdf lanes")?,
                };
                params.validate()?;
                Ok(BackendDescriptor::Passphrase {
                    salt,
                    params,
                    check: r.array::<16>("passphrase check")?,
                    env: r.str_u16("passphrase env", MAX_FIELD)?.to_string(),
                })
            }
            TAG_PKCS11 => Ok(BackendDescriptor::Pkcs11 {
                module: r.str_u16("pkcs11 module", MAX_FIELD)?.to_string(),
                token_serial: r.str_u16("token serial", MAX_FIELD)?.to_string(),
                token_label: r.str_u16("token label", MAX_FIELD)?.to_string(),
                key_label: r.str_u16("key label", MAX_FIELD)?.to_string(),
                pin_env: r.str_u16("pin env", MAX_FIELD)?.to_string(),
            }),
            t => Err(crate::Error::InvalidField {
                field: "backend tag",
                value: t.into(),
            }),
        }
    }
}

/// A root key: wraps and unwraps the keystore key, and never hands out its own bytes.
pub trait RootKey: Send {
    /// The public descriptor stored in the keystore header.
    fn descriptor(&self) -> &BackendDescriptor;

    /// Wraps `key` for the keystore whose header is `context` (the passphrase backend
    /// binds it as AEAD associated data; AES key wrap on a token has no associated data,
    /// so there the keystore MAC under the unwrapped key does the binding).
    ///
    /// # Errors
    /// The backend failed (token errors).
    fn wrap(&mut self, key: &KeyBytes, context: &[u8]) -> Result<Vec<u8>>;

    /// Unwraps what [`RootKey::wrap`] produced for the same `context`.
    ///
    /// # Errors
    /// [`crate::Error::Unwrap`] for altered, truncated or foreign bytes; token errors.
    fn unwrap(&mut self, wrapped: &[u8], context: &[u8]) -> Result<KeyBytes>;
}
