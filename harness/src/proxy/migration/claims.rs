//! During a move: which keys are being moved right now (claimed), and which this proxy has settled.
//!
//! **Claims.** One move of a key at a time, and no write of it meanwhile: two connections (or the mover
//! and a client) moving the same key at once could each see the other's half-done move, and a client's
//! delete between them could be undone. A claim is exact (per key, not per stripe), so a batch of keys
//! in flight delays no request for another key; reads take none (`moving::read_moving` says why they need
//! none). A batch only *tries* to claim (a key it cannot claim is moved on its own afterwards), and every
//! other holder claims a single key, so no two holders ever wait for each other. A waiter sleeps its
//! coroutine in short steps: waits are rare (a client's write of the very key being moved) and last a
//! few node round trips.
//!
//! **Settled.** Keys this proxy has moved (or found gone) already, so each costs the look at its
//! old owner once, not on every request. Only this proxy writes to a previous owner's keys' new
//! owners, and a moved key never goes back, so a key once settled stays settled.
//!
//! Both sets are sharded by key hash: one set would stall every request of a moving key for as long as
//! it grows (a rehash of hundreds of thousands of keys takes tens of milliseconds).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use otkv_adapter_http::front::lock;

/// Shards of each set.
const SHARDS: usize = 64;

/// How long a waiter for a claimed key sleeps before it looks again.
const WAIT_STEP: Duration = Duration::from_micros(100);

type KeySet = Mutex<HashSet<Box<[u8]>>>;

/// The claimed and the settled keys.
#[derive(Debug)]
pub struct Claims {
    in_flight: Vec<KeySet>,
    settled: Vec<KeySet>,
}

/// A key claimed for a move: released when dropped.
#[derive(Debug)]
pub struct Claim<'c> {
    claims: &'c Claims,
    key: Box<[u8]>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.claims.in_flight[shard(&self.key)]).remove(&self.key);
    }
}

fn shard(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % SHARDS as u64) as usize
}

impl Default for Claims {
    fn default() -> Claims {
        let sets = || (0..SHARDS).map(|_| Mutex::default()).collect();
        Claims { in_flight: sets(), settled: sets() }
    }
}

impl Claims {
    /// Claims `key` if nobody holds it.
    pub fn try_claim(&self, key: &[u8]) -> Option<Claim<'_>> {
        let key: Box<[u8]> = key.into();
        let claimed = lock(&self.in_flight[shard(&key)]).insert(key.clone());
        // (Built only when claimed, and after the shard's lock is released: a claim's drop takes it.)
        claimed.then(|| Claim { claims: self, key })
    }

    /// Claims `key`, waiting while another holds it.
    pub fn claim(&self, key: &[u8]) -> Claim<'_> {
        loop {
            if let Some(claim) = self.try_claim(key) {
                return claim;
            }
            may::coroutine::sleep(WAIT_STEP);
        }
    }

    /// Whether `key` is settled.
    pub fn is_settled(&self, key: &[u8]) -> bool {
        lock(&self.settled[shard(key)]).contains(key)
    }

    /// Marks `key` settled: its previous owner does not hold it.
    pub fn settle(&self, key: &[u8]) {
        lock(&self.settled[shard(key)]).insert(key.into());
    }
}
