//! OTKV's criterion benchmarks live in `benches/`; this library is empty so the package has a target.
//!
//! `cargo bench -p otkv-benches` runs `benches/maps.rs`: the engine's backends against raw concurrent maps.
