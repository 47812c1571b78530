//! The server's certificate and key, and what the client trusts.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The crypto provider every Selene TLS endpoint uses (ring: no cmake, small build).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a certificate's DER bytes: what a client pins.
pub fn cert_fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a SHA-256 fingerprint written as 64 hex digits (`:` separators allowed).
///
/// # Errors
/// [`Error::Credentials`] for anything else.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    let bad = || Error::Credentials {
        what: "fingerprint",
        why: "expected 64 hex digits (SHA-256 of the server certificate)".to_string(),
    };
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        *o = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A server's certificate chain and private key.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &to_hex(&self.fingerprint()))
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Identity {
    /// A development certificate signed by its own key (ECDSA P-256) for `names`
    /// (DNS names or IP addresses); clients pin its [`Identity::fingerprint`].
    ///
    /// # Errors
    /// [`Error::Credentials`] when a name cannot go in a certificate.
    pub fn self_signed(names: &[String]) -> Result<Self> {
        let ck =
            rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| Error::Credentials {
                what: "self-signed certificate",
                why: e.to_string(),
            })?;
        Ok(Self {
            chain: vec![ck.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into()),
        })
    }

    /// A certificate chain and key from PEM files.
    ///
    /// # Errors
    /// [`Error::Credentials`] for unreadable files or no certificate / key in them.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self> {
        let bad = |what: &'static str, e: &dyn std::fmt::Display| Error::Credentials {
            what,
            why: e.to_string(),
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad("certificate file", &e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate file", &e))?;
        if chain.is_empty() {
            return Err(bad("certificate file", &"no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key file", &e))?;
        Ok(Self { chain, key })
    }

    /// A chain and key in DER form (the first certificate is the server's).
    pub fn from_der(chain: Vec<Vec<u8>>, pkcs8_key: Vec<u8>) -> Self {
        Self {
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            key: PrivateKeyDer::Pkcs8(pkcs8_key.into()),
        }
    }

    /// SHA-256 of the server's certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.chain
            .first()
            .map_or([0; 32], |c| cert_fingerprint(c.as_ref()))
    }

    /// The server's certificate in PEM form (for `--ca` on a client).
    pub fn cert_pem(&self) -> String {
        let der = self.chain.first().map_or(&[][..], |c| c.as_ref());
        pem_encode("CERTIFICATE", der)
    }

    /// The rustls server configuration for this identity.
    ///
    /// # Errors
    /// [`Error::Tls`] when the key does not match the certificate or is unsupported.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let v = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[(v >> (18 - 6 * i)) as usize & 63]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_and_pem_round_trips() {
        let id = Identity::self_signed(&["localhost".to_string()]).unwrap();
        let fp = id.fingerprint();
        assert_eq!(parse_fingerprint(&to_hex(&fp)).unwrap(), fp);
        let colons: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), fp);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        let pem = id.cert_pem();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(cert_fingerprint(der.as_ref()), fp);
        assert!(format!("{id:?}").contains("[redacted]"));
    }
}
