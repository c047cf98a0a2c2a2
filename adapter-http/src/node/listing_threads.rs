//! The threads a node's listings run on: two, started with the first listing, at nice 19
//! ([`front::background_priority`]), then kept.
//!
//! Why not a thread per page: a mover pages through millions of keys, several pages a second, and each
//! new thread is a `clone`, a stack mapped and unmapped (the unmapping interrupts the other cores running
//! this process's threads to flush their TLBs) and a wake-up on a fresh run queue, all beside the
//! requests a node is answering. Measured on a 2-core machine with pages of 1,000 keys six times a second
//! beside a 10,000 GET/s load through the proxy (phases with and without listing, interleaved): the
//! load's p99 rose 1.40x and 1.42x with a thread per page, 1.32x and 1.02x with these threads. In a whole
//! move of 1M keys the difference is within the noise. Why two: a large page (up to 100,000
//! keys) takes tens of milliseconds, and a second thread keeps one other listing from waiting behind it.
//! More listings at once queue, in order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::front::{self, lock};

/// Listing threads.
const THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// The queue the listing threads take jobs from.
#[derive(Debug, Default)]
pub(super) struct ListingThreads {
    jobs: OnceLock<Result<Sender<Job>, String>>,
}

impl ListingThreads {
    /// Runs `job` on a listing thread; `Err` says why none could be started.
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) -> Result<(), String> {
        let jobs = self.jobs.get_or_init(start).as_ref().map_err(Clone::clone)?;
        jobs.send(Box::new(job)).map_err(|_| "the listing threads are gone".to_string())
    }
}

/// Starts the threads (at least one must start).
fn start() -> Result<Sender<Job>, String> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    let mut failure = String::new();
    for _ in 0..THREADS {
        let rx = Arc::clone(&rx);
        match std::thread::Builder::new().name("otkv-listing".into()).spawn(move || serve(&rx)) {
            Ok(_) => started += 1,
            Err(e) => failure = format!("cannot start a listing thread: {e}"),
        }
    }
    if started == 0 {
        return Err(failure);
    }
    Ok(tx)
}

/// One listing thread: jobs until the node's queue is dropped. A job that panics fails its own listing
/// (its answer channel is dropped), not the thread.
fn serve(jobs: &Mutex<Receiver<Job>>) {
    front::background_priority();
    loop {
        // (The queue's lock is released at the end of this statement, before the job runs.)
        let Ok(job) = lock(jobs).recv() else { return };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a listing panicked; its request failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_that_panics_fails_alone_and_the_threads_go_on() {
        let threads = ListingThreads::default();
        let (tx, rx) = channel();
        // More panics than threads: each one must leave its thread serving.
        for _ in 0..=THREADS {
            threads.run(|| panic!("a listing's bug")).expect("queued");
        }
        for i in 0..8 {
            let tx = tx.clone();
            threads.run(move || tx.send(i).expect("the test waits")).expect("queued");
        }
        let mut ran: Vec<i32> = (0..8).map(|_| rx.recv().expect("every job ran")).collect();
        ran.sort_unstable();
        assert_eq!(ran, (0..8).collect::<Vec<_>>());
    }
}
