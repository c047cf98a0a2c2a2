//! Waiting for `sync` durability (or, on a member of a replica group, for the group): the connection's
//! coroutine parks, and one relay coroutine wakes it.
//!
//! The engine's flusher thread reports durability through callbacks ([`otkv_engine::Engine::on_durable`]).
//! A callback that unparked its connection's coroutine itself would, from that foreign thread, make may
//! write to a worker's eventfd once per waiting connection: about 60 writes per sync under load, measured
//! at 50 µs of the flusher's time per sync (time in which it cannot start the next one), plus an epoll
//! round on the worker per wake-up. So the callbacks queue their coroutine and unpark only the relay, at
//! most once per round; the relay runs on a worker thread, where unparking is a push onto a local queue.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};

use may::coroutine::{self, Coroutine};
use otkv_engine::Engine;

use crate::front::lock;

/// The coroutines whose writes became durable, and the relay that wakes them.
#[derive(Debug, Default)]
pub struct DurableWaits {
    ready: Mutex<Vec<Coroutine>>,
    /// Set when the relay has been unparked and has not yet taken `ready`.
    armed: AtomicBool,
    relay: OnceLock<Coroutine>,
}

impl DurableWaits {
    /// The relay's body: runs for the life of the process on a worker thread.
    pub fn relay(&self) {
        let _ = self.relay.set(coroutine::current());
        loop {
            coroutine::park();
            // Disarm before taking the queue: a callback that queues after the take sees `armed` false
            // and unparks the relay again, so no coroutine is left parked.
            self.armed.store(false, SeqCst);
            let ready = std::mem::take(&mut *lock(&self.ready));
            for co in ready {
                co.unpark();
            }
        }
    }

    /// Parks the calling coroutine until `engine` reports `ticket` durable, or says why it never will be.
    pub fn wait(self: &Arc<Self>, engine: &Engine, ticket: u64) -> Result<(), String> {
        self.wait_for(|done| engine.on_durable(ticket, done))
    }

    /// Parks the calling coroutine until the callback `register` is given is called (from any thread),
    /// and returns what it was called with.
    ///
    /// `#[inline(never)]`, like `conn::process_batch`: a coroutine can resume on another worker thread
    /// after the park, so no thread-local access may be cached across it.
    #[inline(never)]
    pub fn wait_for<T: Send + 'static>(
        self: &Arc<Self>,
        register: impl FnOnce(Box<dyn FnOnce(T) + Send>),
    ) -> T {
        let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let filled = Arc::clone(&slot);
        let waits = Arc::clone(self);
        let co = coroutine::current();
        register(Box::new(move |result| {
            *lock(&filled) = Some(result);
            waits.wake(co);
        }));
        loop {
            if let Some(result) = lock(&slot).take() {
                return result;
            }
            coroutine::park();
        }
    }

    fn wake(&self, co: Coroutine) {
        match self.relay.get() {
            Some(relay) => {
                lock(&self.ready).push(co);
                if !self.armed.swap(true, SeqCst) {
                    relay.unpark();
                }
            }
            // No relay running (it has not started yet): wake directly.
            None => co.unpark(),
        }
    }
}
