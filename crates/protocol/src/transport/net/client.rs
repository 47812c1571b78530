//! The TLS client transport (blocking: the client's token loop is synchronous) and the
//! certificate pinning verifier.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use subtle::ConstantTimeEq;

use super::identity::{cert_fingerprint, provider};
use crate::codec::wire;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::transport::Transport;

/// How the client decides to trust the server's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Exactly the certificate with this SHA-256 (a development self-signed one).
    Pinned([u8; 32]),
    /// Certificates chaining to these roots, for the server's name.
    Roots(Vec<Vec<u8>>),
}

impl Trust {
    /// Roots read from a PEM file.
    ///
    /// # Errors
    /// [`Error::Credentials`] for an unreadable file or one without certificates.
    pub fn ca_file(path: &Path) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| Error::Credentials {
            what: "CA file",
            why: e.to_string(),
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .map(|c| c.map(|c| c.as_ref().to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no certificate in it"));
        }
        Ok(Trust::Roots(certs))
    }

    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match self {
            Trust::Pinned(fp) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    fingerprint: *fp,
                    provider: provider(),
                }))
                .with_no_client_auth(),
            Trust::Roots(certs) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs {
                    roots.add(CertificateDer::from(c.clone()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Arc::new(config))
    }
}

/// Accepts exactly one certificate (by SHA-256, compared in constant time) and still
/// verifies the handshake signature with its key, so only the holder of the pinned
/// certificate's private key can complete the handshake.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let fp = cert_fingerprint(end_entity.as_ref());
        if bool::from(fp.ct_eq(&self.fingerprint)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Largest reply accepted until [`Transport::limit_reply`] says otherwise: a `Welcome`
/// of 120 layouts is about 1.5 MB.
const DEFAULT_MAX_REPLY: usize = 32 << 20;

/// How long the client waits for the server by default: for the TCP connection, each
/// read and each write of the socket (so for the start of a reply and between its
/// parts). The longest wait for one reply in `tls_replies_stay_within_the_client_bounds`
/// (tests/tls.rs, 2 threads) is 0.34 s, an 8-token `GateUp` product; a 100-token prefill
/// product scales to about 5 s and a server busy with `max_sessions` at once to several
/// times that, so the default leaves a wide margin.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A TLS connection to a `selene serve` server, carrying frames.
pub struct TlsTransport {
    stream: StreamOwned<ClientConnection, TcpStream>,
    token: Vec<u8>,
    waited: Duration,
    longest: Duration,
    limits: Limits,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("peer", &self.stream.sock.peer_addr().ok())
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl TlsTransport {
    /// Connects to `addr` (`host:port`), completes the TLS handshake under `trust`, and
    /// keeps `token` for the session's `Hello`; waits at most [`DEFAULT_TIMEOUT`] for
    /// each step.
    ///
    /// # Errors
    /// As [`TlsTransport::connect_with`].
    pub fn connect(addr: &str, trust: &Trust, token: &[u8]) -> Result<Self> {
        Self::connect_with(addr, trust, token, DEFAULT_TIMEOUT)
    }

    /// [`TlsTransport::connect`] waiting at most `timeout` for the TCP connection, and
    /// for each socket read or write then and after (a silent server fails the request
    /// with [`Error::Io`] of kind `WouldBlock` or `TimedOut` instead of hanging).
    ///
    /// # Errors
    /// [`Error::Io`] (connect, timeout), [`Error::Tls`] (handshake, certificate not
    /// trusted), [`Error::Credentials`] for a host that is no valid server name or a zero
    /// timeout.
    pub fn connect_with(
        addr: &str,
        trust: &Trust,
        token: &[u8],
        timeout: Duration,
    ) -> Result<Self> {
        let name =
            ServerName::try_from(host_of(addr).to_string()).map_err(|e| Error::Credentials {
                what: "server address",
                why: e.to_string(),
            })?;
        if timeout.is_zero() {
            return Err(Error::Credentials {
                what: "timeout",
                why: "must be above zero".into(),
            });
        }
        let mut last = None;
        let mut sock = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut sock = match (sock, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => {
                return Err(Error::Credentials {
                    what: "server address",
                    why: format!("{addr} resolves to no address"),
                })
            }
        };
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let mut conn = ClientConnection::new(trust.client_config()?, name)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(Self {
            stream: StreamOwned::new(conn, sock),
            token: token.to_vec(),
            waited: Duration::ZERO,
            longest: Duration::ZERO,
            limits: Limits {
                max_message_bytes: DEFAULT_MAX_REPLY,
                ..Limits::default()
            },
        })
    }

    /// The longest wait for one reply so far (to size [`DEFAULT_TIMEOUT`]).
    pub fn longest_wait(&self) -> Duration {
        self.longest
    }

    fn read_frame(&mut self) -> Result<Vec<u8>> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).map_err(closed)?;
        let len = wire::body_len(prefix, &self.limits)?;
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&prefix);
        self.stream.read_exact(&mut frame[4..]).map_err(closed)?;
        Ok(frame)
    }

    /// Sends raw bytes (no framing) and reads one reply frame: for tests of the server's
    /// handling of broken input.
    ///
    /// # Errors
    /// As [`Transport::exchange`].
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        self.write_raw(bytes)?;
        self.read_frame()
    }

    /// Sends raw bytes (no framing) and reads nothing: for tests of half-sent and
    /// trickled frames.
    ///
    /// # Errors
    /// [`Error::Closed`] once the server closed the connection, other channel errors.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).map_err(closed)?;
        self.stream.flush().map_err(closed)
    }
}

/// A connection the server closed reads as [`Error::Closed`].
fn closed(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => Error::Closed,
        _ => Error::Io(e),
    }
}

impl Transport for TlsTransport {
    fn send(&mut self, request: &[u8]) -> Result<()> {
        let t = Instant::now();
        let sent = self.write_raw(request);
        self.waited += t.elapsed();
        sent
    }

    fn receive(&mut self) -> Result<Vec<u8>> {
        let t = Instant::now();
        let reply = self.read_frame();
        self.waited += t.elapsed();
        self.longest = self.longest.max(t.elapsed());
        reply
    }

    fn token(&self) -> &[u8] {
        &self.token
    }

    fn limit_reply(&mut self, max_bytes: usize) {
        self.limits.max_message_bytes = max_bytes;
    }

    fn server_time(&self) -> Duration {
        self.waited
    }
}
