//! The native and compatible APIs, through a real HTTP client against a real server.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use common::{status_of, Node};

fn put(node: &Node, key: &str, body: &[u8]) -> (u16, String) {
    status_of(ureq::put(&format!("{}/v1/kv/{key}", node.url)).send_bytes(body))
}

fn get(node: &Node, key: &str) -> (u16, Vec<u8>) {
    match ureq::get(&format!("{}/v1/kv/{key}", node.url)).call() {
        Ok(r) => {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut body).expect("body");
            (200, body)
        }
        Err(ureq::Error::Status(code, _)) => (code, Vec::new()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn put_get_head_delete_round_trip() {
    let node = Node::start(&[]);
    assert_eq!(put(&node, "alpha", b"one").0, 201);
    assert_eq!(put(&node, "alpha", b"two").0, 204);
    assert_eq!(get(&node, "alpha"), (200, b"two".to_vec()));

    let r = ureq::get(&format!("{}/v1/kv/alpha", node.url)).call().expect("get");
    assert_eq!(r.content_type(), "application/octet-stream");
    let head = ureq::head(&format!("{}/v1/kv/alpha", node.url)).call().expect("head");
    assert_eq!(head.header("content-length"), Some("3"));

    let (code, _) = status_of(ureq::delete(&format!("{}/v1/kv/alpha", node.url)).call());
    assert_eq!(code, 204);
    let (code, _) = status_of(ureq::delete(&format!("{}/v1/kv/alpha", node.url)).call());
    assert_eq!(code, 404);
    assert_eq!(get(&node, "alpha").0, 404);
}

#[test]
fn keys_and_values_are_binary_safe() {
    let node = Node::start(&[]);
    let value: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    assert_eq!(put(&node, "a%2Fb%00%FF%20c", &value).0, 201);
    assert_eq!(get(&node, "a%2Fb%00%FF%20c"), (200, value));
    assert_eq!(put(&node, "empty-value", b"").0, 201);
    assert_eq!(get(&node, "empty-value"), (200, Vec::new()));
    // The listing gives keys in path form, ready to reuse in a URL.
    let listed =
        ureq::get(&format!("{}/v1/kv?prefix=a%2F", node.url)).call().expect("list").into_string().expect("s");
    assert_eq!(listed, r#"{"keys":["a%2Fb%00%FF%20c"]}"#);
}

#[test]
fn listing_is_filtered_limited_and_paged() {
    let node = Node::start(&[]);
    for k in ["user:3", "user:1", "user:2", "order:1", "userx"] {
        put(&node, k, b"v");
    }
    let list = |q: &str| -> serde_json::Value {
        let body =
            ureq::get(&format!("{}/v1/kv{q}", node.url)).call().expect("list").into_string().expect("s");
        serde_json::from_str(&body).expect("json")
    };
    let sorted = |v: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> =
            v["keys"].as_array().expect("keys").iter().map(|k| k.as_str().expect("str").to_owned()).collect();
        keys.sort();
        keys
    };
    let whole = list("?prefix=user:");
    assert_eq!(sorted(&whole), ["user:1", "user:2", "user:3"]);
    assert!(whole.get("next").is_none(), "the listing is over: no next");
    let first = list("?prefix=user&limit=2");
    assert_eq!(first["keys"].as_array().map(Vec::len), Some(2));
    let rest = list(&format!("?prefix=user&limit=2&cursor={}", first["next"].as_str().expect("a next")));
    let mut all = sorted(&first);
    all.extend(sorted(&rest));
    all.sort();
    assert_eq!(all, ["user:1", "user:2", "user:3", "userx"]);
    assert_eq!(list("")["keys"].as_array().map(Vec::len), Some(5));
    let (code, msg) = status_of(ureq::get(&format!("{}/v1/kv?limit=lots", node.url)).call());
    assert_eq!(code, 400, "{msg}");
    let (code, _) = status_of(ureq::get(&format!("{}/v1/kv?colour=red", node.url)).call());
    assert_eq!(code, 400);
}

#[test]
fn compatible_api_shares_the_keyspace() {
    let node = Node::start(&[]);
    let r = ureq::post(&format!("{}/greeting", node.url))
        .send_string(&serde_json::json!({"value": "héllo"}).to_string());
    let (code, body) = status_of(r);
    assert_eq!(code, 200);
    assert!(body.contains("message"), "{body}");
    let body = ureq::get(&format!("{}/greeting", node.url)).call().expect("get").into_string().expect("s");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("json"),
        serde_json::json!({"value": "héllo"})
    );
    assert_eq!(get(&node, "greeting"), (200, "héllo".as_bytes().to_vec()));

    let (code, body) = status_of(ureq::get(&format!("{}/missing", node.url)).call());
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""), "{body}");
    let (code, body) = status_of(ureq::post(&format!("{}/bad", node.url)).send_string("not json"));
    assert_eq!(code, 400);
    assert!(body.contains("\"error\""), "{body}");

    put(&node, "binary", &[0xff, 0xfe]);
    assert_eq!(status_of(ureq::get(&format!("{}/binary", node.url)).call()).0, 406);

    assert_eq!(status_of(ureq::delete(&format!("{}/greeting", node.url)).call()).0, 200);
    assert_eq!(status_of(ureq::delete(&format!("{}/greeting", node.url)).call()).0, 404);
}

#[test]
fn operations_endpoints_report_health_metrics_and_stats() {
    let node = Node::start(&[]);
    put(&node, "k", b"v");
    get(&node, "k");
    get(&node, "absent");
    let health =
        ureq::get(&format!("{}/healthz", node.url)).call().expect("health").into_string().expect("s");
    assert_eq!(health.trim(), "ok");

    let metrics =
        ureq::get(&format!("{}/metrics", node.url)).call().expect("metrics").into_string().expect("s");
    for needle in [
        r#"otkv_requests_total{op="put",code="201"} 1"#,
        r#"otkv_requests_total{op="get",code="200"} 1"#,
        r#"otkv_requests_total{op="get",code="404"} 1"#,
        "otkv_request_duration_seconds_bucket{le=\"+Inf\"}",
        "otkv_request_duration_seconds_count",
        "otkv_keys 1",
        "otkv_connections ",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    let stats = ureq::get(&format!("{}/v1/stats", node.url)).call().expect("stats").into_string().expect("s");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(stats["engine"], "memory");
    assert_eq!(stats["keys"], 1);
    assert_eq!(stats["requests"]["put"], 1);
    assert!(stats["uptime_seconds"].as_f64().is_some());
}

#[test]
fn sled_engine_serves_the_same_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf8 path");
    let node = Node::start(&["--engine", "sled", "--data-dir", dir_arg, "--durability", "periodic"]);
    assert_eq!(put(&node, "k", b"v").0, 201);
    assert_eq!(get(&node, "k"), (200, b"v".to_vec()));
    let stats = ureq::get(&format!("{}/v1/stats", node.url)).call().expect("stats").into_string().expect("s");
    assert!(stats.contains(r#""engine":"sled""#), "{stats}");
}

#[test]
fn sled_without_data_dir_fails_with_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otkv-server"))
        .args(["--port", "0", "--engine", "sled"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--data-dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of an unlabelled metric in a `/metrics` scrape.
fn scrape(node: &Node, name: &str) -> f64 {
    let text = ureq::get(&format!("{}/metrics", node.url)).call().expect("metrics").into_string().expect("s");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[test]
fn process_metrics_parse_and_move_under_load() {
    let node = Node::start(&[]);
    let cpu_before = scrape(&node, "process_cpu_seconds_total");
    let started = scrape(&node, "process_start_time_seconds");
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(started <= now + 1.0 && started > now - 600.0, "started {started}, now {now}");
    // Requests until the server's CPU counter moves: 10,000 pipelined PUTs at a time, at most a million.
    let mut s = node.connect();
    let batch = "PUT /v1/kv/load HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv".repeat(100);
    let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
    let mut rounds = 0;
    while scrape(&node, "process_cpu_seconds_total") <= cpu_before {
        rounds += 1;
        assert!(rounds <= 100, "a million requests did not move process_cpu_seconds_total");
        for _ in 0..100 {
            std::io::Write::write_all(&mut s, batch.as_bytes()).expect("write");
            for _ in 0..100 {
                assert!(common::read_response(&mut r, false).is_some());
            }
        }
    }
    assert!(scrape(&node, "process_resident_memory_bytes") > 1_000_000.0);
    let stats: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("{}/v1/stats", node.url)).call().expect("stats").into_string().expect("s"),
    )
    .expect("json");
    assert!(stats["cpu_seconds"].as_f64().is_some_and(|c| c > 0.0), "{stats}");
    assert!(stats["rss_bytes"].as_u64().is_some_and(|b| b > 1_000_000), "{stats}");
}
