//! The per-request work of a pipelined GET (or PUT) without the socket or the engine: parse the head,
//! route it, encode a 100-byte answer, in a loop. A quick, exact instrument for the parts the connection layer owns:
//!
//! ```text
//! cargo build --release -p otkv-adapter-http --example request_path
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*request_path::measured' \
//!     target/release/examples/request_path [get|put]
//! ```
//!
//! Divide the instructions callgrind reports by the requests printed. `benches/server/instructions.sh`
//! measures the whole server; this isolates the head, routing and encoding, to try a change in seconds.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

fn main() {
    let put = std::env::args().nth(1).as_deref() == Some("put");
    let answered = otkv_adapter_http::front::request_path::run(put);
    println!("{answered} requests");
}
