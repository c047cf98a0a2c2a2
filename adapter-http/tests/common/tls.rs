//! The suites over TLS: certificates made here (rcgen, never committed), a byte stream that is TCP or TLS,
//! and a ureq agent that trusts the test CA.
//!
//! A suite runs over TLS when it is compiled into the `over_tls` test crate: [`over_tls`] tells from the
//! module path, so `bad_input.rs` and `connections.rs` run unchanged in both.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Whether this test crate runs the suites over TLS.
pub fn over_tls() -> bool {
    module_path!().starts_with("over_tls")
}

/// A test CA, a server certificate it signed (for `localhost` and 127.0.0.1), a client certificate it
/// signed, and a second CA nobody trusts with a server certificate of its own, as PEM files.
pub struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    /// Makes a fresh set in a new directory (kept until the process ends).
    pub fn new() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::Builder::new().prefix("otkv-tls-").tempdir().expect("dir").keep();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write pem");
        let ca = |cn: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let key = KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("ca");
            (cert, key)
        };
        let leaf = |names: &[&str], signer: &(rcgen::Certificate, KeyPair), days: Option<(i32, i32)>| {
            let mut params =
                CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>())
                    .expect("params");
            if let Some((from, to)) = days {
                params.not_before = rcgen::date_time_ymd(from, 1, 1);
                params.not_after = rcgen::date_time_ymd(to, 1, 1);
            }
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &signer.0, &signer.1).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let trusted = ca("otkv test CA");
        write("ca.pem", trusted.0.pem());
        for (name, names, days) in [
            ("server", &["localhost", "127.0.0.1"][..], None),
            ("client", &["otkv-test-client"][..], None),
            ("expired", &["localhost", "127.0.0.1"][..], Some((2000, 2001))),
        ] {
            let (cert, key) = leaf(names, &trusted, days);
            write(&format!("{name}.pem"), cert);
            write(&format!("{name}.key"), key);
        }
        let rogue = ca("someone else's CA");
        write("rogue-ca.pem", rogue.0.pem());
        let (cert, key) = leaf(&["localhost", "127.0.0.1"], &rogue, None);
        write("rogue.pem", cert);
        write("rogue.key", key);
        let (cert, key) = leaf(&["otkv-rogue-client"], &rogue, None);
        write("rogue-client.pem", cert);
        write("rogue-client.key", key);
        TestCerts { dir }
    }

    /// One set for the whole test process.
    pub fn shared() -> &'static TestCerts {
        static CERTS: OnceLock<TestCerts> = OnceLock::new();
        CERTS.get_or_init(TestCerts::new)
    }

    /// The path of one of its files, as an argument.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A client configuration that trusts `ca` (a file of this set), presenting `client` (a name of
    /// this set: `client` for `client.pem` and `client.key`) if given.
    pub fn client_config(&self, ca: &str, client: Option<&str>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.dir.join(ca)).expect("ca") {
            roots.add(cert.expect("cert")).expect("add");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let certs = CertificateDer::pem_file_iter(self.dir.join(format!("{name}.pem")))
                    .expect("cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs");
                let key = PrivateKeyDer::from_pem_file(self.dir.join(format!("{name}.key"))).expect("key");
                builder.with_client_auth_cert(certs, key).expect("client auth")
            }
        };
        Arc::new(config)
    }
}

/// A ureq agent for the suite: over TLS, trusting the test CA.
pub fn agent() -> ureq::Agent {
    let builder = ureq::AgentBuilder::new();
    if over_tls() {
        builder.tls_config(TestCerts::shared().client_config("ca.pem", None)).build()
    } else {
        builder.build()
    }
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// A client connection, TCP or TLS. Clones share it (as `TcpStream::try_clone` does), so a suite can
/// read through a `BufReader` of one clone while it writes on another.
#[derive(Clone)]
pub struct Stream(Arc<Mutex<Inner>>);

impl Stream {
    /// `tcp` as it is, or (over TLS) with a TLS session on it, handshake not yet done (the first write or
    /// read does it, as a client's would).
    pub fn over(tcp: TcpStream) -> Stream {
        if !over_tls() {
            return Stream(Arc::new(Mutex::new(Inner::Plain(tcp))));
        }
        let config = TestCerts::shared().client_config("ca.pem", None);
        Stream::tls(tcp, config)
    }

    /// `tcp` with a TLS session of `config` for `localhost`.
    pub fn tls(tcp: TcpStream, config: Arc<ClientConfig>) -> Stream {
        let name = ServerName::try_from("localhost").expect("name");
        let conn = ClientConnection::new(config, name).expect("tls");
        Stream(Arc::new(Mutex::new(Inner::Tls(Box::new(StreamOwned::new(conn, tcp))))))
    }

    /// As `TcpStream::try_clone`: another handle on the same connection.
    #[allow(clippy::unnecessary_wraps, reason = "the suites call it as they call TcpStream's")]
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(self.clone())
    }

    /// As `TcpStream::shutdown`; a TLS write side says `close_notify` first.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let mut inner = self.0.lock().expect("lock");
        match &mut *inner {
            Inner::Plain(s) => s.shutdown(how),
            Inner::Tls(s) => {
                if how != Shutdown::Read {
                    s.conn.send_close_notify();
                    s.conn.complete_io(&mut s.sock)?;
                }
                s.sock.shutdown(how)
            }
        }
    }

    /// As `TcpStream::set_read_timeout`.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        match &*self.0.lock().expect("lock") {
            Inner::Plain(s) => s.set_read_timeout(timeout),
            Inner::Tls(s) => s.sock.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut *self.0.lock().expect("lock") {
            Inner::Plain(s) => s.read(buf),
            // A server that closes without `close_notify` (after an error) ends the stream as TCP does.
            Inner::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *self.0.lock().expect("lock") {
            Inner::Plain(s) => s.write(buf),
            Inner::Tls(s) => {
                let n = s.write(buf)?;
                s.flush()?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut *self.0.lock().expect("lock") {
            Inner::Plain(s) => s.flush(),
            Inner::Tls(s) => s.flush(),
        }
    }
}
