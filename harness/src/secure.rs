//! How the harness proves who it is to a server and checks who the server is: TLS (`https://` and
//! `rediss://` targets, a private CA, a client certificate) and a token (`Authorization: Bearer` to OTKV,
//! `AUTH` to Redis).
//!
//! [`Secure`] travels with every [`crate::target::Target`]; every connection the harness opens (load,
//! counters, the proxy's upstreams) goes through [`crate::wire::Wire`], which does the handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use otkv_adapter_http::front::tls;

/// `harness run`'s options for reaching secured servers.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientSecurityArgs {
    /// Trust servers whose certificate this CA (PEM) signed, for https:// and rediss:// nodes (without
    /// it: the system's roots).
    #[arg(long, value_name = "FILE", help_heading = "Security")]
    pub tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM) to https:// and rediss:// nodes that ask for one ...
    #[arg(long, value_name = "FILE", requires = "tls_key", help_heading = "Security")]
    pub tls_cert: Option<PathBuf>,
    /// ... with this key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "Security")]
    pub tls_key: Option<PathBuf>,
    /// Send this token: `Authorization: Bearer TOKEN` to OTKV, `AUTH TOKEN` to Redis. The file holds the
    /// token alone, or is a node's token file (`ROLE TOKEN` lines: the first `write` token is used).
    #[arg(long, value_name = "FILE", help_heading = "Security")]
    pub token_file: Option<PathBuf>,
}

/// `harness proxy`'s options for reaching its nodes (its own front door takes the node's `--tls-*`).
#[derive(Debug, Clone, Default, Args)]
#[allow(clippy::struct_field_names, reason = "clap makes each field's name its flag: --upstream-tls-ca, ...")]
pub struct UpstreamSecurityArgs {
    /// Trust https:// nodes whose certificate this CA (PEM) signed (without it: the system's roots).
    #[arg(long, value_name = "FILE", help_heading = "Upstream security")]
    pub upstream_tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM) to https:// nodes ...
    #[arg(long, value_name = "FILE", requires = "upstream_tls_key", help_heading = "Upstream security")]
    pub upstream_tls_cert: Option<PathBuf>,
    /// ... with this key (PEM).
    #[arg(long, value_name = "FILE", requires = "upstream_tls_cert", help_heading = "Upstream security")]
    pub upstream_tls_key: Option<PathBuf>,
    /// The token the proxy sends its nodes (the client's own `Authorization` is checked by the proxy
    /// and never passed on). Same format as --token-file of `harness run`.
    #[arg(long, value_name = "FILE", help_heading = "Upstream security")]
    pub upstream_token_file: Option<PathBuf>,
}

impl ClientSecurityArgs {
    /// What these options say.
    pub fn load(&self) -> Result<Secure, String> {
        Secure::load(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.token_file.as_deref(),
        )
    }
}

impl UpstreamSecurityArgs {
    /// What these options say.
    pub fn load(&self) -> Result<Secure, String> {
        Secure::load(
            self.upstream_tls_ca.as_deref(),
            self.upstream_tls_cert.as_deref(),
            self.upstream_tls_key.as_deref(),
            self.upstream_token_file.as_deref(),
        )
    }
}

/// A client's TLS configuration (used for `https://` and `rediss://` targets) and token.
#[derive(Clone, Default)]
pub struct Secure {
    /// The TLS configuration; `None` until a TLS target needs one.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The token to present.
    pub token: Option<Arc<str>>,
}

impl std::fmt::Debug for Secure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Secure")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Secure {
    /// Reads the files: the CA and client certificate (a TLS configuration is made whenever TLS may be
    /// needed: it is cheap, and it checks the files before any load starts), and the token.
    pub fn load(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<Secure, String> {
        let cert_key = cert.zip(key);
        let tls = tls::client_config(ca, cert_key).map_err(|e| e.to_string())?;
        let token = token_file.map(read_token).transpose()?;
        Ok(Secure { tls: Some(tls), token: token.map(Arc::from) })
    }

    /// The `Authorization` header line (with its CRLF) that presents the token, or nothing.
    pub fn authorization_line(&self) -> String {
        self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default()
    }

    /// The same, for a plain (`http://`, `redis://`) target: no TLS.
    pub fn clear(&self) -> Secure {
        Secure { tls: None, token: self.token.clone() }
    }
}

/// The token in `path`: its only word, or the first `write` token of a node's token file (else its
/// first token).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_ascii_whitespace().collect())
        .collect();
    let pick = lines
        .iter()
        .find(|w| w.len() == 2 && w[0] == "write")
        .or_else(|| lines.first())
        .and_then(|w| w.last());
    pick.map(|t| (*t).to_string()).ok_or_else(|| format!("{} holds no token", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_alone_or_from_a_node_token_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t");
        std::fs::write(&path, "  sekrit-sekrit-sekrit \n").expect("write");
        assert_eq!(read_token(&path).expect("token"), "sekrit-sekrit-sekrit");
        std::fs::write(&path, "# x\nread rrrrrrrrrrrrrrrrrr\nwrite wwwwwwwwwwwwwwwwww\n").expect("write");
        assert_eq!(read_token(&path).expect("token"), "wwwwwwwwwwwwwwwwww");
        std::fs::write(&path, "read rrrrrrrrrrrrrrrrrr\n").expect("write");
        assert_eq!(read_token(&path).expect("token"), "rrrrrrrrrrrrrrrrrr");
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(read_token(&path).is_err());
    }
}
