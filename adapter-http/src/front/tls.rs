//! TLS: the configurations (server and client, from PEM files) and a server connection's record layer
//! over may's non-blocking socket.
//!
//! rustls with the `ring` provider: it builds from crates.io with a C compiler alone (aws-lc-rs, rustls's
//! default, needs cmake and takes minutes to build), and its AES-GCM and `ChaCha20` are the assembly
//! OpenSSL's derive from. TLS 1.3 and 1.2, rustls's safe defaults.
//!
//! `TlsSession` drives a `rustls::ServerConnection` by hand rather than through `rustls::Stream`, for
//! the same reason the clear path reads the socket itself (`socket.rs`): reads and writes go through
//! `read_or_wait` and `write_all_or_wait`, so the deadlines, the readiness flag and the one-write-per-
//! batch rule are the same over TLS as in clear. A batch's responses are encrypted into one buffer and
//! sent with one write.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use may::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection};

use super::socket::{read_or_wait, write_all_or_wait};

pub use rustls::pki_types::ServerName;
pub use rustls::ClientConnection;

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the combination (a key that does not match its certificate, say).
    #[error("TLS: {0}")]
    Config(String),
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), why: why.to_string() }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_error(path, format!("no usable PEM private key: {e}")))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's configuration: its certificate chain and key, and, with `client_ca`, client certificates
/// required and checked against that CA (mutual TLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certificates(cert)?, private_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // No session tickets: a ticket costs every new connection an encryption and a write, and the clients
    // of a store keep their connections.
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's configuration: servers are trusted when signed by `ca` (or, without it, by the system's
/// roots); `cert_key` is the client certificate and key to present, if any. Session resumption is off,
/// so every connection measures a full handshake.
pub fn client_config(
    ca: Option<&Path>,
    cert_key: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = if let Some(ca) = ca {
        roots(ca)?
    } else {
        let mut roots = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        roots
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match cert_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// What a client that speaks plain HTTP to a TLS port gets (nginx does the same), before the close.
const PLAIN_HTTP_REFUSED: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: otkv\r\nConnection: close\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 40\r\n\r\nthis port speaks TLS: use https:// here\n";

/// The server side of one TLS connection.
pub(crate) struct TlsSession {
    conn: ServerConnection,
    /// Records to send, gathered so a batch goes out in one write.
    sealed: Vec<u8>,
    /// No record has been accepted yet.
    fresh: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession").field("handshaking", &self.conn.is_handshaking()).finish_non_exhaustive()
    }
}

/// The socket as rustls reads it: through [`read_or_wait`].
struct Socket<'a> {
    stream: &'a mut TcpStream,
    drained: &'a mut bool,
}

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_or_wait(self.stream, buf, self.drained)
    }
}

impl TlsSession {
    pub(crate) fn new(config: &Arc<ServerConfig>) -> io::Result<Box<TlsSession>> {
        let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        Ok(Box::new(TlsSession { conn, sealed: Vec::new(), fresh: true }))
    }

    /// The handshake is not done yet.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Reads plaintext into `buf`, reading and decrypting records (and answering the handshake) as
    /// needed. `Ok(0)` is the end of the stream. `Err(Interrupted)` says the handshake just finished
    /// with no data yet: the caller starts the request's clock afresh and reads again.
    pub(crate) fn read(
        &mut self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        drained: &mut bool,
    ) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let was_handshaking = self.conn.is_handshaking();
            if self.conn.read_tls(&mut Socket { stream: &mut *stream, drained: &mut *drained })? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                // A plain-HTTP client's first bytes are a request line: rustls refuses its first
                // "record" for its type (`G`, `P`, `H`, `D` are no TLS content type).
                let plain_http =
                    matches!(e, rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType));
                if self.fresh && plain_http {
                    let _ = write_all_or_wait(stream, PLAIN_HTTP_REFUSED);
                } else {
                    // The alert rustls queued, then close.
                    let _ = self.flush(stream);
                }
                tracing::debug!(error = %e, "TLS connection refused");
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            self.fresh = false;
            if self.conn.wants_write() {
                self.flush(stream)?;
            }
            if was_handshaking && !self.conn.is_handshaking() {
                return Err(io::ErrorKind::Interrupted.into());
            }
        }
    }

    /// Encrypts and writes all of `data`; returns whether a write had to wait (as [`write_all_or_wait`]).
    pub(crate) fn write_all(&mut self, stream: &mut TcpStream, mut data: &[u8]) -> io::Result<bool> {
        let mut waited = false;
        loop {
            let n = self.conn.writer().write(data)?;
            data = &data[n..];
            waited |= self.flush(stream)?;
            if data.is_empty() {
                return Ok(waited);
            }
        }
    }

    /// Says goodbye (`close_notify`) before the connection closes.
    pub(crate) fn close(&mut self, stream: &mut TcpStream) {
        self.conn.send_close_notify();
        let _ = self.flush(stream);
    }

    /// Writes every record rustls has queued, with one write.
    fn flush(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        self.sealed.clear();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sealed)?;
        }
        let waited = write_all_or_wait(stream, &self.sealed)?;
        if self.sealed.capacity() > 64 * 1024 {
            self.sealed = Vec::new();
        }
        Ok(waited)
    }
}
