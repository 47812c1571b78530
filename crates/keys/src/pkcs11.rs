//! The token backend: the root key is an AES-256 secret key generated on a PKCS#11 token
//! (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, so its value never leaves the token) and
//! the keystore key is wrapped by the token with `CKM_AES_KEY_WRAP_PAD` (RFC 5649, AES
//! key wrap with padding, whose integrity check rejects altered or foreign wrapped
//! bytes). The same code drives SoftHSM2 in tests, a hardware HSM or smart card, or a
//! cloud KMS's PKCS#11 library.
//!
//! # Security
//! While the keystore is open the keystore key is in host memory (it wraps session keys
//! in software); only the root stays on the token. Loading a PKCS#11 module runs its
//! code: the module path comes from the keystore header, so the keystore directory must
//! be writable only by its owner (the keystore file's mode is checked), or pass the
//! module explicitly (`SELENE_PKCS11_MODULE`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroize;

use crate::backend::{BackendDescriptor, RootKey};
use crate::error::{Error, Result};
use crate::secret::{KeyBytes, KEY_LEN};

/// One initialized context per module and process: C_Initialize may run only once per
/// module until C_Finalize, and every keystore in the process shares it.
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<Vec<(PathBuf, Pkcs11)>>> = OnceLock::new();
    let lock = CONTEXTS.get_or_init(|| Mutex::new(Vec::new()));
    let mut all = lock.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = all.iter().find(|(p, _)| p == module) {
        return Ok(c.clone());
    }
    let op = "loading the module";
    let ctx = Pkcs11::new(module).map_err(|source| Error::Pkcs11 { op, source })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(source) => {
            return Err(Error::Pkcs11 {
                op: "C_Initialize",
                source,
            })
        }
    }
    all.push((module.to_path_buf(), ctx.clone()));
    Ok(ctx)
}

fn p11(op: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Error {
    move |source| match source {
        cryptoki::error::Error::Pkcs11(RvError::PinIncorrect | RvError::PinLocked, _) => {
            Error::WrongPin
        }
        source => Error::Pkcs11 { op, source },
    }
}

/// Where to find a token: the module, and the slot id or the token's serial number.
#[derive(Clone, Debug)]
pub struct TokenLocation {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Slot id (as `softhsm2-util --show-slots` or `pkcs11-tool -L` print it).
    pub slot: Option<u64>,
    /// The token's serial number (stored in the keystore; wins over the slot).
    pub serial: Option<String>,
    /// The token's label (when neither serial nor slot is given).
    pub label: Option<String>,
}

/// A root key held on a PKCS#11 token, with a logged-in session.
pub struct Pkcs11Root {
    session: Session,
    root: ObjectHandle,
    desc: BackendDescriptor,
}

impl std::fmt::Debug for Pkcs11Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Root {{ {:?} }}", self.desc)
    }
}

/// The CKA_LABEL of the root key of `identity`.
pub fn root_label(identity: &str) -> String {
    format!("selene-root/{identity}")
}

fn find_slot(ctx: &Pkcs11, at: &TokenLocation) -> Result<(Slot, String, String)> {
    let slots = ctx.get_slots_with_token().map_err(p11("C_GetSlotList"))?;
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(p11("C_GetTokenInfo"))?;
        let serial = info.serial_number().trim().to_string();
        let label = info.label().trim().to_string();
        let hit = match (&at.serial, at.slot, &at.label) {
            (Some(s), _, _) => s == &serial,
            (None, Some(id), _) => slot.id() == id,
            (None, None, Some(l)) => l == &label,
            (None, None, None) => true,
        };
        if hit && info.token_initialized() {
            return Ok((slot, serial, label));
        }
    }
    Err(Error::NoToken {
        what: match (&at.serial, at.slot, &at.label) {
            (Some(s), _, _) => format!("with serial {s:?} in {}", at.module.display()),
            (None, Some(id), _) => format!("in slot {id} of {}", at.module.display()),
            (None, None, Some(l)) => format!("labelled {l:?} in {}", at.module.display()),
            (None, None, None) => format!("initialized in {}", at.module.display()),
        },
    })
}

fn login(ctx: &Pkcs11, slot: Slot, pin: &AuthPin) -> Result<Session> {
    let session = ctx.open_rw_session(slot).map_err(p11("C_OpenSession"))?;
    match session.login(UserType::User, Some(pin)) {
        // Login state is per token and process: another open keystore already did it.
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            Ok(session)
        }
        Err(e) => Err(p11("C_Login")(e)),
    }
}

/// The secret key labelled `label`, checked to be fit for a root ([`check_root`]); `None`
/// when there is none. Two keys with the label are refused: which one a token returns
/// first is not specified, and a second one is someone else's.
fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(p11("C_FindObjects"))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => {
            check_root(session, *one, label)?;
            Ok(Some(*one))
        }
        more => Err(Error::UnfitRootKey {
            label: label.to_string(),
            why: format!("{} secret keys carry this label", more.len()),
        }),
    }
}

/// Refuses a root key whose value is or ever was readable off the token, or that is not
/// the AES-256 wrapping key Selene generates: an existing key with the root's label may
/// have been planted (or made) extractable, and wrapping the keystore key under it would
/// hand the keystore to whoever can export it.
fn check_root(session: &Session, key: ObjectHandle, label: &str) -> Result<()> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Wrap,
                AttributeType::Unwrap,
            ],
        )
        .map_err(p11("C_GetAttributeValue (root key)"))?;
    let mut bad: Vec<&str> = Vec::new();
    let mut seen = 0;
    for a in &attrs {
        seen += 1;
        match a {
            Attribute::KeyType(t) if *t != KeyType::AES => bad.push("not an AES key"),
            Attribute::ValueLen(n) if u64::from(*n) != KEY_LEN as u64 => {
                bad.push("not 256 bits long");
            }
            Attribute::Token(false) => bad.push("not a token object"),
            Attribute::Sensitive(false) => bad.push("not sensitive (CKA_SENSITIVE false)"),
            Attribute::AlwaysSensitive(false) => {
                bad.push("not always sensitive (CKA_ALWAYS_SENSITIVE false)");
            }
            Attribute::Extractable(true) => bad.push("extractable (CKA_EXTRACTABLE true)"),
            Attribute::NeverExtractable(false) => {
                bad.push("once extractable (CKA_NEVER_EXTRACTABLE false)");
            }
            Attribute::Wrap(false) => bad.push("not allowed to wrap"),
            Attribute::Unwrap(false) => bad.push("not allowed to unwrap"),
            _ => {}
        }
    }
    // A token that withholds an attribute leaves it unchecked: refuse that too.
    if seen < 9 {
        bad.push("some protection attributes are unavailable");
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::UnfitRootKey {
            label: label.to_string(),
            why: bad.join(", "),
        })
    }
}

impl Pkcs11Root {
    /// Logs in to the token at `at` and finds the root key of `identity`, generating it
    /// on the token when it is not there yet; `pin_env` is recorded as the variable
    /// that holds the PIN.
    ///
    /// # Errors
    /// [`Error::WrongPin`], [`Error::NoToken`], [`Error::UnfitRootKey`] for an existing key
    /// with the root's label that is extractable, not sensitive or not an AES-256 wrapping
    /// key, token errors.
    pub fn create(
        at: &TokenLocation,
        pin: &AuthPin,
        pin_env: &str,
        identity: &str,
    ) -> Result<Self> {
        let ctx = context(&at.module)?;
        let (slot, serial, token_label) = find_slot(&ctx, at)?;
        let session = login(&ctx, slot, pin)?;
        let label = root_label(identity);
        let root = match find_key(&session, &label)? {
            Some(k) => k,
            None => session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen((KEY_LEN as u64).into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Wrap(true),
                        Attribute::Unwrap(true),
                        Attribute::Encrypt(false),
                        Attribute::Decrypt(false),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ],
                )
                .map_err(p11("C_GenerateKey (root key)"))?,
        };
        let desc = BackendDescriptor::Pkcs11 {
            module: at.module.display().to_string(),
            token_serial: serial,
            token_label,
            key_label: label,
            pin_env: pin_env.to_string(),
        };
        Ok(Self {
            session,
            root,
            desc,
        })
    }

    /// Opens the root key a keystore names; `module` overrides the module path stored in
    /// the descriptor.
    ///
    /// # Errors
    /// [`Error::WrongPin`], [`Error::NoToken`], [`Error::NoRootKey`],
    /// [`Error::UnfitRootKey`] (as [`Pkcs11Root::create`]), token errors.
    pub fn open(desc: &BackendDescriptor, pin: &AuthPin, module: Option<&Path>) -> Result<Self> {
        let BackendDescriptor::Pkcs11 {
            module: stored,
            token_serial,
            key_label,
            token_label,
            ..
        } = desc
        else {
            return Err(Error::InvalidField {
                field: "backend (expected pkcs11)",
                value: 0,
            });
        };
        let at = TokenLocation {
            module: module.map_or_else(|| PathBuf::from(stored), Path::to_path_buf),
            slot: None,
            serial: Some(token_serial.clone()),
            label: None,
        };
        let ctx = context(&at.module)?;
        let (slot, _, _) = find_slot(&ctx, &at)?;
        let session = login(&ctx, slot, pin)?;
        let root = find_key(&session, key_label)?.ok_or_else(|| Error::NoRootKey {
            label: key_label.clone(),
            token: token_label.clone(),
        })?;
        Ok(Self {
            session,
            root,
            desc: desc.clone(),
        })
    }

    /// Reads back the root key's protection attributes: `(sensitive, extractable)`.
    ///
    /// # Errors
    /// Token errors.
    pub fn root_protection(&self) -> Result<(bool, bool)> {
        let attrs = self
            .session
            .get_attributes(
                self.root,
                &[AttributeType::Sensitive, AttributeType::Extractable],
            )
            .map_err(p11("C_GetAttributeValue"))?;
        let (mut sensitive, mut extractable) = (false, true);
        for a in attrs {
            match a {
                Attribute::Sensitive(s) => sensitive = s,
                Attribute::Extractable(e) => extractable = e,
                _ => {}
            }
        }
        Ok((sensitive, extractable))
    }

    /// Tries to read the root key's value off the token (it must fail).
    pub fn try_export_root(&self) -> bool {
        matches!(
            self.session.get_attributes(self.root, &[AttributeType::Value]),
            Ok(a) if a.iter().any(|x| matches!(x, Attribute::Value(_)))
        )
    }

    fn session_key_template() -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ]
    }
}

impl RootKey for Pkcs11Root {
    fn descriptor(&self) -> &BackendDescriptor {
        &self.desc
    }

    fn wrap(&mut self, key: &KeyBytes, _context: &[u8]) -> Result<Vec<u8>> {
        let mut template = Self::session_key_template();
        template.push(Attribute::Value(key.expose().to_vec()));
        let obj = self.session.create_object(&template);
        for a in &mut template {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        let obj = obj.map_err(p11("C_CreateObject (keystore key)"))?;
        let wrapped = self
            .session
            .wrap_key(&Mechanism::AesKeyWrapPad, self.root, obj);
        let destroyed = self.session.destroy_object(obj);
        let wrapped = wrapped.map_err(p11("C_WrapKey"))?;
        destroyed.map_err(p11("C_DestroyObject"))?;
        Ok(wrapped)
    }

    fn unwrap(&mut self, wrapped: &[u8], _context: &[u8]) -> Result<KeyBytes> {
        let obj = match self.session.unwrap_key(
            &Mechanism::AesKeyWrapPad,
            self.root,
            wrapped,
            &Self::session_key_template(),
        ) {
            Ok(o) => o,
            Err(cryptoki::error::Error::Pkcs11(
                RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError,
                _,
            )) => {
                return Err(Error::Unwrap {
                    what: "keystore key",
                })
            }
            Err(e) => return Err(p11("C_UnwrapKey")(e)),
        };
        let value = self.session.get_attributes(obj, &[AttributeType::Value]);
        let destroyed = self.session.destroy_object(obj);
        let mut attrs = value.map_err(p11("C_GetAttributeValue"))?;
        destroyed.map_err(p11("C_DestroyObject"))?;
        let mut key = None;
        for a in &mut attrs {
            if let Attribute::Value(v) = a {
                key = KeyBytes::from_slice(v);
                v.zeroize();
            }
        }
        key.ok_or(Error::Unwrap {
            what: "keystore key",
        })
    }
}
