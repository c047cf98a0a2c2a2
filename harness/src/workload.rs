//! What the load generator sends: workloads, key choice, and values that can be checked when read back.
//!
//! Keys are `key` plus 13 decimal digits (16 bytes, as in the engine benchmarks), numbered `0..keys`.
//! Every value written is unique (sled 0.34 skips a write whose value equals the stored one, which would
//! flatter it) and starts with `k{index}:`, so any read can check that it got *this key's* value, whole;
//! `seed` reads back exactly what the same connection just wrote.

use std::io::Write as _;

/// The workloads of `--workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// The original OTKV benchmark: each key is set, then read back (in key order).
    Seed,
    /// YCSB A: 50% reads, 50% updates.
    YcsbA,
    /// YCSB B: 95% reads, 5% updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
    /// Writes only.
    Put,
    /// Reads only (like ycsb-c).
    Get,
}

impl WorkloadKind {
    /// The fraction of operations that are reads, for the random workloads.
    pub fn read_fraction(self) -> f64 {
        match self {
            WorkloadKind::Seed => 0.5,
            WorkloadKind::YcsbA => 0.5,
            WorkloadKind::YcsbB => 0.95,
            WorkloadKind::YcsbC | WorkloadKind::Get => 1.0,
            WorkloadKind::Put => 0.0,
        }
    }

    /// Whether every key must exist before the timed run (read workloads).
    pub fn needs_preload(self) -> bool {
        self.read_fraction() > 0.0 && self != WorkloadKind::Seed
    }
}

/// How keys are chosen (`--key-dist`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// YCSB's Zipfian, θ = 0.99: key 0 is the hottest.
    Zipf,
}

/// The length of every key.
pub const KEY_LEN: usize = 16;

/// Writes key `index` as `key` + 13 digits.
pub fn key_bytes(index: u64) -> [u8; KEY_LEN] {
    let mut key = *b"key0000000000000";
    let mut n = index;
    for slot in key[3..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    key
}

/// The value written to key `index` by connection `conn` as its `seq`-th write, `size` bytes long:
/// `k{index}:c{conn}:s{seq}:` then filler, cut to `size`.
pub fn write_value(out: &mut Vec<u8>, index: u64, conn: u32, seq: u64, size: usize) {
    let start = out.len();
    let _ = write!(out, "k{index}:c{conn}:s{seq}:");
    out.resize(start + size, b'.');
    out.truncate(start + size);
}

/// What a read of key `index` may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exactly what `write_value(index, conn, seq, size)` wrote.
    Exact { conn: u32, seq: u64 },
    /// Some value written for this key by anyone: right prefix, right length.
    AnyVersion,
}

/// Whether `value` is acceptable for a read of key `index`.
pub fn check_value(value: &[u8], index: u64, expect: Expect, size: usize) -> bool {
    match expect {
        Expect::Exact { conn, seq } => {
            let mut want = Vec::with_capacity(size);
            write_value(&mut want, index, conn, seq, size);
            value == want.as_slice()
        }
        Expect::AnyVersion => {
            // `k{index}:` on the stack: this runs on every read of the hot loop.
            let mut prefix = [0u8; 24];
            prefix[0] = b'k';
            let mut itoa_buf = itoa::Buffer::new();
            let number = itoa_buf.format(index).as_bytes();
            let digits = number.len();
            prefix[1..=digits].copy_from_slice(number);
            prefix[digits + 1] = b':';
            let prefix = &prefix[..(digits + 2).min(size)];
            value.len() == size && value.starts_with(prefix)
        }
    }
}

/// YCSB's Zipfian generator (Gray et al., "Quickly generating billion-record synthetic databases"):
/// item 0 is the most popular, with probability ∝ 1/(i+1)^θ.
#[derive(Debug, Clone)]
pub struct Zipf {
    items: f64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    /// θ = 0.99, as YCSB.
    pub const YCSB_THETA: f64 = 0.99;

    /// A generator over `items` items (at least 1).
    pub fn new(items: u64, theta: f64) -> Self {
        let n = items.max(1);
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2.min(n));
        let items = n as f64;
        let eta = (1.0 - (2.0 / items).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf { items, theta, alpha: 1.0 / (1.0 - theta), zetan, eta }
    }

    /// Maps a uniform `u` in [0, 1) to an item.
    pub fn sample(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let item = (self.items * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        item.min(self.items as u64 - 1)
    }
}

/// Draws key indices from a distribution.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    /// Uniform over `0..n`.
    Uniform(u64),
    /// Zipfian over `0..n`.
    Zipf(Zipf),
}

impl KeyChooser {
    /// The chooser for `dist` over `keys` keys.
    pub fn new(dist: KeyDist, keys: u64) -> Self {
        match dist {
            KeyDist::Uniform => KeyChooser::Uniform(keys.max(1)),
            KeyDist::Zipf => KeyChooser::Zipf(Zipf::new(keys, Zipf::YCSB_THETA)),
        }
    }

    /// The next key index.
    pub fn next(&self, rng: &mut fastrand::Rng) -> u64 {
        match self {
            KeyChooser::Uniform(n) => rng.u64(0..*n),
            KeyChooser::Zipf(z) => z.sample(rng.f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_bytes_and_ordered_like_their_numbers() {
        assert_eq!(&key_bytes(0), b"key0000000000000");
        assert_eq!(&key_bytes(1_234_567), b"key0000001234567");
        assert!(key_bytes(9) < key_bytes(10));
    }

    #[test]
    fn values_check_exactly_and_by_prefix() {
        let mut v = Vec::new();
        write_value(&mut v, 42, 3, 7, 100);
        assert_eq!(v.len(), 100);
        assert!(check_value(&v, 42, Expect::Exact { conn: 3, seq: 7 }, 100));
        assert!(!check_value(&v, 42, Expect::Exact { conn: 3, seq: 8 }, 100));
        assert!(check_value(&v, 42, Expect::AnyVersion, 100));
        assert!(!check_value(&v, 43, Expect::AnyVersion, 100));
        assert!(!check_value(&v[..99], 42, Expect::AnyVersion, 100));
        let mut tiny = Vec::new();
        write_value(&mut tiny, 42, 3, 7, 2);
        assert!(check_value(&tiny, 42, Expect::AnyVersion, 2));
    }

    #[test]
    fn read_fractions_match_the_workload_definitions() {
        let mut rng = fastrand::Rng::with_seed(7);
        for (w, want) in [(WorkloadKind::YcsbA, 0.5), (WorkloadKind::YcsbB, 0.95), (WorkloadKind::YcsbC, 1.0)]
        {
            let n = 100_000;
            let reads = (0..n).filter(|_| rng.f64() < w.read_fraction()).count();
            let got = reads as f64 / f64::from(n);
            assert!((got - want).abs() < 0.01, "{w:?}: {got}");
        }
    }

    #[test]
    fn zipf_is_skewed_like_ycsb() {
        let keys = 100_000;
        let z = KeyChooser::new(KeyDist::Zipf, keys);
        let mut rng = fastrand::Rng::with_seed(1);
        let n = 200_000;
        let mut counts = vec![0u32; keys as usize];
        for _ in 0..n {
            let k = z.next(&mut rng);
            assert!(k < keys);
            counts[k as usize] += 1;
        }
        // With θ = 0.99 over 100k items, item 0 draws about 1/zeta(n) ≈ 8% of samples; the top 1% of
        // keys draw well over half; item 0 is drawn about twice as often as item 1.
        let top = f64::from(counts[0]) / f64::from(n);
        assert!((0.06..0.10).contains(&top), "hottest key share {top}");
        let top1pct: u32 = counts[..1000].iter().sum();
        assert!(f64::from(top1pct) / f64::from(n) > 0.5);
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((1.6..2.5).contains(&ratio), "p(0)/p(1) = {ratio}");
        // Uniform, by contrast, is flat.
        let u = KeyChooser::new(KeyDist::Uniform, keys);
        let hits0 = (0..n).filter(|_| u.next(&mut rng) < 1000).count();
        assert!((hits0 as f64 / f64::from(n) - 0.01).abs() < 0.003);
    }
}
