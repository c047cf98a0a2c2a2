//! The node's failures: why it could not start or stop ([`ServerError`]), and how an engine failure
//! becomes an HTTP error (the front door then picks the status, in its one place).

use otkv_engine::EngineError;

use crate::front::{HttpError, ListenError, SecurityError, StorageFailure};

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The command line does not make sense.
    #[error("{0}")]
    Config(String),
    /// The engine failed to open or flush.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The certificates or tokens cannot be used, or protected mode refuses the address.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The front door could not listen.
    #[error(transparent)]
    Listen(#[from] ListenError),
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        if let EngineError::BadCursor(why) = e {
            return HttpError::BadRequest(format!("invalid cursor: {why}"));
        }
        let failure = match e {
            EngineError::Unavailable(_) => StorageFailure::Unavailable,
            EngineError::OutOfMemory { .. } => StorageFailure::Full,
            _ => StorageFailure::Failed,
        };
        HttpError::Storage { failure, message: e.to_string() }
    }
}
