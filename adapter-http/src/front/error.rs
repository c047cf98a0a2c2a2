//! Every way a request can fail, and the one place that maps failures to HTTP statuses.
//!
//! Handlers and the connection layer return [`HttpError`]; [`HttpError::status`] picks the status and
//! [`HttpError::closes_connection`] says whether the byte stream can still be trusted afterwards. The
//! message ([`std::fmt::Display`]) is what the client reads: short, and saying what was wrong.

use super::response::{ContentType, JSON, TEXT};

/// How a store failed, which decides the status: the service says which ([`HttpError::Storage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFailure {
    /// It refuses the operation for now (writes after a failed sync, or shutting down): 503.
    Unavailable,
    /// It has no room under its memory cap: 507.
    Full,
    /// Anything else (an I/O error, corruption): 500.
    Failed,
}

/// A request that cannot be answered with success.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request line or a header is not valid HTTP/1.1.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request head (request line and headers) exceeds the cap.
    #[error("request head exceeds {max} bytes")]
    HeaderTooLarge {
        /// The cap in bytes.
        max: usize,
    },
    /// More header fields than the cap.
    #[error("more than {max} header fields")]
    TooManyHeaders {
        /// The cap.
        max: usize,
    },
    /// `Content-Length` is not a number, or two of them disagree, or it comes with `Transfer-Encoding`.
    #[error("{0}")]
    BadFraming(&'static str),
    /// `Transfer-Encoding: chunked`: refused rather than risk storing a wrong value.
    #[error("chunked request bodies are not supported; send Content-Length")]
    ChunkedNotSupported,
    /// A transfer coding other than chunked.
    #[error("transfer coding not implemented")]
    TransferCodingNotImplemented,
    /// An `Expect` header other than `100-continue`.
    #[error("only `Expect: 100-continue` is supported")]
    ExpectationFailed,
    /// A bad query, path or body that is not one of the cases below.
    #[error("{0}")]
    BadRequest(String),
    /// The key in the path is empty.
    #[error("empty key")]
    EmptyKey,
    /// The key exceeds `--max-key-bytes`.
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLong {
        /// Decoded key length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value (or the body) exceeds its limit.
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Declared length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A known path with a method it does not serve.
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed {
        /// The `Allow` header's value.
        allow: &'static str,
    },
    /// No token, or one this server does not know: 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A token whose role does not allow this request (a `read` token on a write).
    #[error("{0}")]
    Forbidden(&'static str),
    /// No route has this path.
    #[error("no such path")]
    NoRoute,
    /// The key is absent.
    #[error("key not found")]
    KeyNotFound,
    /// `If-Match` or `If-None-Match` did not hold: nothing was written.
    #[error("precondition failed: {0}")]
    PreconditionFailed(&'static str),
    /// A compatible-API read of a value that is not UTF-8 text (so cannot be a JSON string).
    #[error("value is not UTF-8 text; read it with GET /v1/kv/{{key}}")]
    ValueNotText,
    /// The client sent the head but not the rest in time.
    #[error("request timed out")]
    RequestTimeout,
    /// The store behind the service failed.
    #[error("storage error: {message}")]
    Storage {
        /// Which way, for the status.
        failure: StorageFailure,
        /// What the store said.
        message: String,
    },
    /// The writes of this batch could not be made durable; the connection is closed.
    #[error("write not acknowledged: {0}")]
    NotDurable(String),
    /// A proxy could not get an answer from the node that owns the key (refused, reset, or not a valid
    /// response). The message names the node.
    #[error("{0}")]
    BadGateway(String),
    /// A proxy got no answer from the node within its upstream timeout. The message names the node.
    #[error("{0}")]
    GatewayTimeout(String),
    /// `/healthz` of a node that refuses writes: the message says since when and why.
    #[error("{0}")]
    Unhealthy(String),
    /// A proxy could not get a connection to the node within its upstream timeout: all it may open are
    /// in use. The node is not at fault. The message names the node.
    #[error("{0}")]
    UpstreamBusy(String),
    /// A member of a replica group that knows no leader (an election is under way, or it is cut off
    /// from a majority): nothing was done, and the request is safe to send again. 503 with
    /// `Retry-After: 1`.
    #[error("{0}")]
    NoLeader(String),
    /// A replicated write was proposed but not known to be committed in time (the leader changed or
    /// was lost on the way): it may still take effect. 504; resend only what is safe to repeat.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A handler panicked; the connection is closed.
    #[error("internal error")]
    Internal,
}

impl HttpError {
    /// The one mapping from failure to HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_)
            | HttpError::BadFraming(_)
            | HttpError::BadRequest(_)
            | HttpError::EmptyKey => 400,
            HttpError::Unauthorized(_) => 401,
            HttpError::Forbidden(_) => 403,
            HttpError::KeyNotFound | HttpError::NoRoute => 404,
            HttpError::MethodNotAllowed { .. } => 405,
            HttpError::ValueNotText => 406,
            HttpError::RequestTimeout => 408,
            HttpError::ChunkedNotSupported => 411,
            HttpError::PreconditionFailed(_) => 412,
            HttpError::PayloadTooLarge { .. } => 413,
            HttpError::KeyTooLong { .. } => 414,
            HttpError::ExpectationFailed => 417,
            HttpError::HeaderTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::Storage { failure: StorageFailure::Unavailable, .. }
            | HttpError::NotDurable(_)
            | HttpError::UpstreamBusy(_)
            | HttpError::Unhealthy(_)
            | HttpError::NoLeader(_) => 503,
            HttpError::Storage { failure: StorageFailure::Full, .. } => 507,
            HttpError::Storage { failure: StorageFailure::Failed, .. } | HttpError::Internal => 500,
            HttpError::TransferCodingNotImplemented => 501,
            HttpError::BadGateway(_) => 502,
            HttpError::GatewayTimeout(_) | HttpError::OutcomeUnknown(_) => 504,
        }
    }

    /// Whether the connection must close after this response: the stream's framing can no longer be
    /// trusted (we do not know where the next request starts), or the body was not read.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            HttpError::Malformed(_)
                | HttpError::HeaderTooLarge { .. }
                | HttpError::TooManyHeaders { .. }
                | HttpError::BadFraming(_)
                | HttpError::ChunkedNotSupported
                | HttpError::TransferCodingNotImplemented
                | HttpError::ExpectationFailed
                | HttpError::PayloadTooLarge { .. }
                | HttpError::RequestTimeout
                | HttpError::NotDurable(_)
                | HttpError::Internal
        )
    }

    /// The header this error's response carries besides the usual ones, as name and value: `Allow` for
    /// 405, the `WWW-Authenticate` challenge for 401.
    pub fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            HttpError::MethodNotAllowed { allow } => Some(("Allow", allow)),
            HttpError::Unauthorized(_) => Some(("WWW-Authenticate", "Bearer realm=\"otkv\"")),
            HttpError::NoLeader(_) => Some(("Retry-After", "1")),
            _ => None,
        }
    }

    /// The body of its response: JSON `{"error": ...}` on the compatible API, plain text elsewhere.
    pub fn body(&self, json: bool) -> (ContentType, Vec<u8>) {
        if json {
            (JSON, serde_json::json!({ "error": self.to_string() }).to_string().into_bytes())
        } else {
            (TEXT, format!("{self}\n").into_bytes())
        }
    }
}
