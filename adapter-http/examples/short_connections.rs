//! Stress: many sequential short-lived connections (one GET each, as `ureq::get` makes them) against a
//! running node, checking every answer. It found may 0.3.51's use-after-free with `--workers 2`
//! (`third_party/may/PATCH.md`). Writes 20k keys, then makes N connections (default 100k); with `HEALTHZ`
//! set in the environment, each asks for `/healthz` instead (no engine work).
//!
//! Usage: `cargo run --release -p otkv-adapter-http --example short_connections -- URL [N]`

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("URL");
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let keys = 20_000;
    let agent = ureq::agent();
    for i in 0..keys {
        agent.put(&format!("{url}/v1/kv/key-{i}")).send_bytes(format!("value-{i}").as_bytes()).expect("put");
    }
    let started = std::time::Instant::now();
    for i in 0..n {
        let key = i % keys;
        if std::env::var_os("HEALTHZ").is_some() {
            let got = ureq::get(&format!("{url}/healthz")).call().expect("get").into_string().expect("utf8");
            assert_eq!(got.trim(), "ok");
            continue;
        }
        let got =
            ureq::get(&format!("{url}/v1/kv/key-{key}")).call().expect("get").into_string().expect("utf8");
        assert_eq!(got, format!("value-{key}"));
        if i % 50_000 == 0 {
            eprintln!("{i} connections, {:.0}/s", i as f64 / started.elapsed().as_secs_f64());
        }
    }
}
