//! Who may do what: bearer tokens with a role each, read from a file and re-read on SIGHUP, and the
//! check every request passes before its service sees it.
//!
//! The token file has one token per line, `ROLE TOKEN`, the role `read` (GET and HEAD of keys, listings,
//! `/v1/stats`, `/metrics`) or `write` (everything); blank lines and lines starting with `#` are skipped.
//! `/healthz` is open to all, for probes.
//!
//! Tokens are secrets: they are compared in constant time (every token of the set is compared, each with
//! `subtle`), and never logged, echoed in an error or kept anywhere but here. What a connection presented
//! last is cached with the role it earned ([`Grant`]), so a keep-alive connection's later requests cost a
//! byte comparison with its own earlier header, not a walk of the set; the cache is dropped when the
//! file is re-read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;

use super::error::HttpError;
use super::mutex::lock;
use super::request::Method;
use super::routes::Route;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads: GET and HEAD of keys and listings, `/v1/stats`, `/metrics`.
    Read,
    /// Everything.
    Write,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: `/healthz`.
    Nothing,
    /// A token with this role at least.
    Role(Role),
}

impl Need {
    /// What `method` on `route` needs: `/healthz` nothing, other reads `read`, the rest `write`. A route
    /// error (404, 405) needs what its method would, so an unauthenticated client learns nothing about
    /// which paths exist.
    #[inline]
    pub(crate) fn of<E>(method: Method, route: &Result<Route<'_>, E>) -> Need {
        match (route, method) {
            (Ok(Route::Health), _) => Need::Nothing,
            (_, Method::Get | Method::Head) => Need::Role(Role::Read),
            _ => Need::Role(Role::Write),
        }
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `read TOKEN` or `write TOKEN`. The token itself is never quoted.
    #[error("{path} line {line}: {why} (each line is `read TOKEN` or `write TOKEN`)")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// No token in it: every request would be refused.
    #[error("{path} holds no token")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The tokens of one reading of the file.
#[derive(Default)]
pub struct TokenSet {
    tokens: Vec<(Role, Box<[u8]>)>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        write!(f, "TokenSet({} tokens)", self.tokens.len())
    }
}

/// The shortest token accepted: shorter ones can be guessed.
const MIN_TOKEN_BYTES: usize = 16;

impl TokenSet {
    /// Parses a token file's text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<TokenSet, TokenFileError> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why| TokenFileError::Line { path: path.to_owned(), line: i + 1, why };
            let mut words = line.split_ascii_whitespace();
            let role = match words.next() {
                Some("read") => Role::Read,
                Some("write") => Role::Write,
                _ => return Err(bad("the role must be `read` or `write`")),
            };
            let token = words.next().ok_or_else(|| bad("no token after the role"))?;
            if words.next().is_some() {
                return Err(bad("more than a role and a token"));
            }
            if token.len() < MIN_TOKEN_BYTES {
                return Err(bad("a token must be at least 16 characters"));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("a token is printable ASCII"));
            }
            tokens.push((role, token.as_bytes().into()));
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty { path: path.to_owned() });
        }
        Ok(TokenSet { tokens })
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<TokenSet, TokenFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenFileError::Read { path: path.to_owned(), source })?;
        TokenSet::parse(&text, path)
    }

    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The role of `token`, comparing it with every token of the set in constant time (the time depends
    /// on the number and lengths of the tokens, never on their bytes).
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let mut best: Option<Role> = None;
        for (role, known) in &self.tokens {
            let same: bool = known.as_ref().ct_eq(token).into();
            if same && best.is_none_or(|b| b < *role) {
                best = Some(*role);
            }
        }
        best
    }
}

/// The tokens a server checks, and where they come from. Re-read on SIGHUP ([`Tokens::reload`]).
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    current: Mutex<Arc<TokenSet>>,
    /// Bumped by every successful reload: connections drop their [`Grant`] when it moves.
    generation: AtomicU64,
}

impl Tokens {
    /// Reads `path`.
    pub fn from_file(path: &Path) -> Result<Tokens, TokenFileError> {
        let set = TokenSet::read(path)?;
        Ok(Tokens {
            path: path.to_owned(),
            current: Mutex::new(Arc::new(set)),
            generation: AtomicU64::new(1),
        })
    }

    /// Re-reads the file. On error the tokens in force stay in force. Returns how many tokens it holds.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let set = TokenSet::read(&self.path)?;
        let n = set.len();
        *lock(&self.current) = Arc::new(set);
        self.generation.fetch_add(1, Relaxed);
        Ok(n)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn snapshot(&self) -> (u64, Arc<TokenSet>) {
        // Generation first: a reload between the two reads only makes the next check look again.
        let generation = self.generation.load(Relaxed);
        (generation, Arc::clone(&lock(&self.current)))
    }
}

/// One connection's cached verdict: the `Authorization` value it sent last and the role that earned.
#[derive(Debug, Default)]
pub(crate) struct Grant {
    generation: u64,
    tokens: Option<Arc<TokenSet>>,
    /// The header value last accepted on this connection, and its role.
    accepted: Vec<u8>,
    role: Option<Role>,
}

impl Grant {
    /// Checks a request that needs `need` and carries `authorization` (the header's value) against
    /// `tokens`. `Ok` lets it through.
    #[inline]
    pub(crate) fn check(
        &mut self,
        tokens: &Tokens,
        need: Need,
        authorization: Option<&[u8]>,
    ) -> Result<(), HttpError> {
        let Need::Role(need) = need else { return Ok(()) };
        let Some(value) = authorization else {
            return Err(HttpError::Unauthorized(
                "this server needs a token: send Authorization: Bearer TOKEN",
            ));
        };
        if tokens.generation.load(Relaxed) != self.generation {
            let (generation, set) = tokens.snapshot();
            *self = Grant { generation, tokens: Some(set), accepted: Vec::new(), role: None };
        }
        let role = match self.role {
            // Not secret: the bytes this connection itself sent before.
            Some(role) if self.accepted == value => role,
            _ => {
                let role = self.verify(value)?;
                self.accepted.clear();
                self.accepted.extend_from_slice(value);
                self.role = Some(role);
                role
            }
        };
        if role >= need {
            Ok(())
        } else {
            Err(HttpError::Forbidden("this token may only read"))
        }
    }

    fn verify(&self, value: &[u8]) -> Result<Role, HttpError> {
        let value = value.trim_ascii();
        let token = match value.split_first_chunk::<7>() {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => token.trim_ascii_start(),
            _ => return Err(HttpError::Unauthorized("the Authorization header must be `Bearer TOKEN`")),
        };
        self.tokens
            .as_deref()
            .and_then(|set| set.role_of(token))
            .ok_or(HttpError::Unauthorized("unknown token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    fn set(text: &str) -> Result<TokenSet, TokenFileError> {
        TokenSet::parse(text, Path::new("tokens"))
    }

    #[test]
    fn token_file_lines() {
        let s = set(&format!("# ops\n\nread {A}\n  write {B}  \n")).expect("valid");
        assert_eq!(s.role_of(A.as_bytes()), Some(Role::Read));
        assert_eq!(s.role_of(B.as_bytes()), Some(Role::Write));
        assert_eq!(s.role_of(b"aaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(s.role_of(b""), None);
        for bad in
            [format!("admin {A}"), "read".into(), format!("read {A} x"), "read short".into(), String::new()]
        {
            let err = set(&bad).expect_err("refused").to_string();
            assert!(!err.contains(A), "the token is never quoted: {err}");
        }
        // The same token under both roles gets the larger.
        let s = set(&format!("read {A}\nwrite {A}\n")).expect("valid");
        assert_eq!(s.role_of(A.as_bytes()), Some(Role::Write));
        assert!(!format!("{s:?}").contains(A));
    }

    #[test]
    fn grants_by_route_class() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("read {A}\nwrite {B}\n")).expect("write");
        let tokens = Tokens::from_file(&path).expect("tokens");
        let mut grant = Grant::default();
        let read = Need::Role(Role::Read);
        let write = Need::Role(Role::Write);
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        let status = |r: Result<(), HttpError>| r.err().map(|e| e.status());
        assert_eq!(status(grant.check(&tokens, Need::Nothing, None)), None);
        assert_eq!(status(grant.check(&tokens, read, None)), Some(401));
        assert_eq!(status(grant.check(&tokens, read, Some(b"Basic eDp5"))), Some(401));
        assert_eq!(status(grant.check(&tokens, read, Some(&bearer(A)))), None);
        assert_eq!(status(grant.check(&tokens, write, Some(&bearer(A)))), Some(403));
        assert_eq!(status(grant.check(&tokens, write, Some(&bearer(B)))), None);
        assert_eq!(status(grant.check(&tokens, write, Some(b"bearer  bbbbbbbbbbbbbbbbbbbb"))), None);
        assert_eq!(status(grant.check(&tokens, read, Some(&bearer("cccccccccccccccccc")))), Some(401));
        // A reload that drops B: the cached grant goes with it.
        assert_eq!(status(grant.check(&tokens, write, Some(&bearer(B)))), None);
        std::fs::write(&path, format!("read {A}\n")).expect("write");
        assert_eq!(tokens.reload().expect("reload"), 1);
        assert_eq!(status(grant.check(&tokens, write, Some(&bearer(B)))), Some(401));
        // A broken file leaves the tokens in force.
        std::fs::write(&path, "nonsense\n").expect("write");
        assert!(tokens.reload().is_err());
        assert_eq!(status(grant.check(&tokens, read, Some(&bearer(A)))), None);
    }
}
