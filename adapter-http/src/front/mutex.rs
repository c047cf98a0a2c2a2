//! [`lock`]: the one way this workspace takes a `std::sync::Mutex`.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering from poisoning: every mutex here guards data that stays consistent if a holder
/// panicked (a panic must end one connection, never wedge the server).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
