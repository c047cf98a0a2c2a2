//! The per-request work of a pipelined GET (or PUT) without the socket or the engine: parse the head,
//! route it, encode a 100-byte answer, in a loop. Run by `examples/request_path.rs` under callgrind (see
//! there); hidden from the crate's documentation, it is an instrument, not part of the front door's face.

use std::hint::black_box;

use super::request::{self, MAX_HEAD_BYTES};
use super::response::{Encoder, EntryMeta, Framing, Reply, OCTET_STREAM};
use super::routes::{self, Limits};

const REQUESTS: usize = 1_000_000;

#[inline(never)]
fn measured(heads: &[Vec<u8>], encoder: &mut Encoder, out: &mut Vec<u8>) -> usize {
    let limits = Limits { max_key_bytes: 1024, max_value_bytes: 1 << 20, panic_route: false };
    let value = [b'v'; 100];
    let framing = Framing { close: false, http10_keep_alive: false, head_only: false };
    let mut answered = 0;
    for i in 0..REQUESTS {
        let buf = &heads[i % heads.len()];
        let Ok(Some(head)) = request::parse(black_box(buf), MAX_HEAD_BYTES) else { continue };
        let routed = routes::resolve(head.method, head.target, &limits);
        if routed.route.is_ok() {
            let entry = Some(EntryMeta { version: i as u64, expires_ms: 0 });
            let reply = Reply {
                status: 200,
                content_type: Some(OCTET_STREAM),
                body: &value,
                header: None,
                entry,
                location: None,
            };
            encoder.encode(out, &reply, framing);
            answered += 1;
        }
        if out.len() > 32 * 1024 {
            out.clear();
        }
    }
    answered
}

/// Parses, routes and encodes a million GETs (or PUTs), as wrk sends them (`benches/server/kv.lua`);
/// returns how many were answered.
pub fn run(put: bool) -> usize {
    let heads: Vec<Vec<u8>> = (0..1000)
        .map(|k| {
            let path = format!("/v1/kv/key{k:013}");
            if put {
                let body = format!("{k:012}{}", "v".repeat(88));
                format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:38021\r\nContent-Length: 100\r\n\r\n{body}")
            } else {
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:38021\r\n\r\n")
            }
        })
        .map(String::into_bytes)
        .collect();
    let mut encoder = Encoder::default();
    let mut out = Vec::with_capacity(64 * 1024);
    measured(&heads, &mut encoder, &mut out)
}
