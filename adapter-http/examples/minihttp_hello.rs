//! The speed baseline: a plaintext "hello" server on `may_minihttp` 0.1.11, the crate otkv-server's
//! connection layer is modelled on. `benches/server/compare.sh` runs it beside otkv-server.
//!
//! `cargo run --release -p otkv-adapter-http --example minihttp_hello -- [PORT] [WORKERS]`

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::io;

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.body("Hello, World!");
        Ok(())
    }
}

struct HelloFactory;

impl HttpServiceFactory for HelloFactory {
    type Service = Hello;
    fn new_service(&self, _id: usize) -> Hello {
        Hello
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(7071);
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(2);
    may::config().set_workers(workers).set_worker_pin(false);
    let addr = format!("127.0.0.1:{port}");
    let server = HelloFactory.start(&addr)?;
    println!("listening on http://{addr}");
    server.join().map_err(|_| io::Error::other("server panicked"))
}
