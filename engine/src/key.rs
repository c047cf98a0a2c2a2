//! A key as the engine keeps it outside the table: inline up to 24 bytes (most keys), so the expiry index,
//! eviction candidates and flurry's nodes hold short keys without a second allocation. Hashes, compares
//! and borrows as `[u8]`, so lookups take `&[u8]`.

pub(crate) type Key = smallvec::SmallVec<[u8; 24]>;
