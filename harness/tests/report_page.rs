//! `report.html` of a real run, opened in headless Chromium: it loads with no console message and no
//! network request, has every table and plot, and its numbers are `summary.json`'s. Screenshots at
//! desktop and phone widths go to the test's output directory (`CARGO_TARGET_TMPDIR`).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::path::Path;
use std::process::Command;

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

fn chromium() -> String {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|c| {
            Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map_or_else(|| "chromium".to_string(), ToString::to_string)
}

/// Runs headless Chromium on `page` with `args`; returns (stdout, stderr).
fn headless(page: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium (apt-get install chromium)");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every `data-run`/`data-field`/`data-value` cell of the page.
fn cells(html: &str) -> Vec<(usize, String, f64)> {
    let mut out = Vec::new();
    let attr = |s: &str, name: &str| {
        let start = s.find(&format!("{name}=\""))? + name.len() + 2;
        s[start..].split('"').next().map(str::to_owned)
    };
    for piece in html.split("<td ").skip(1) {
        let tag = piece.split('>').next().unwrap_or_default();
        if let (Some(run), Some(field), Some(value)) =
            (attr(tag, "data-run"), attr(tag, "data-field"), attr(tag, "data-value"))
        {
            out.push((run.parse().expect("run"), field, value.parse().expect("a number")));
        }
    }
    out
}

/// The figure `field` of run `run` in `summary.json`.
fn expected(summary: &serde_json::Value, run: usize, field: &str) -> Option<f64> {
    let r = &summary["runs"][run];
    let parts: Vec<&str> = field.split('.').collect();
    match parts.as_slice() {
        ["p50" | "p99" | "p999" | "max"] => r["latency_ms"][parts[0]].as_f64(),
        ["by_op", kind, "ops"] => r["by_op"][*kind]["ops"].as_f64(),
        ["by_op", kind, p] => r["by_op"][*kind]["latency_ms"][*p].as_f64(),
        ["per_node", name, what] => {
            let node = r["per_node"].as_array()?.iter().find(|n| n["name"] == *name)?;
            if *what == "rss_mib" {
                node["rss_bytes"].as_f64().map(|b| b / 1_048_576.0)
            } else {
                node[*what].as_f64()
            }
        }
        ["errors", kind] => r["errors"][*kind].as_f64(),
        [one] => r[*one].as_f64(),
        _ => None,
    }
}

#[test]
fn a_real_runs_report_opens_offline_complete_and_true_to_its_summary() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("run");
    let run = Command::new(HARNESS)
        .args(["run", "--nodes", "1..2", "--duration", "2s", "--warmup", "0s", "--keys", "2000"])
        .args(["--connections", "4", "--workload", "ycsb-a", "--out"])
        .arg(&out)
        .output()
        .expect("harness run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).expect("report.html");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary"))
            .expect("json");

    // Every figure in the page is the summary's.
    let found = cells(&html);
    assert!(found.len() > 40, "{} figures", found.len());
    for (run, field, value) in &found {
        let want = expected(&summary, *run, field)
            .unwrap_or_else(|| panic!("run {run} {field}: not in summary.json"));
        assert_eq!(
            value.to_bits(),
            want.to_bits(),
            "run {run} {field}: {value} in the page, {want} in summary.json"
        );
    }
    for field in ["throughput", "p99", "server_cpu_us_per_op", "by_op.read.p999", "by_op.write.ops"] {
        assert!(found.iter().any(|(r, f, _)| *r == 1 && f == field), "{field} is shown");
    }
    // Every table and plot; nothing from the network.
    for id in ["runs", "by_op", "per_node", "errors_by_kind", "settings", "command"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert_eq!(html.matches("<img ").count(), 3, "three PNG plots");
    assert!(html.matches("src=\"data:image/png;base64,").count() == 3);
    assert_eq!(html.matches("<svg ").count(), 2, "latency over time, per node count");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no external resource");
    assert!(html.contains("harness run --nodes 1..2"), "the command line");

    // In a browser: scripts ran, no error, no request, no console message.
    let (dom, log) = headless(&page, &["--virtual-time-budget=3000", "--dump-dom"]);
    let body = dom.split("<body").nth(1).and_then(|b| b.split('>').next()).expect("a body");
    assert!(body.contains("data-ready=\"1\""), "the page's script ran: {body}");
    assert!(body.contains("data-resources=\"0\""), "no network request: {body}");
    assert!(!body.contains("data-errors"), "a script error: {body}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(dom.contains("id=\"per_node\""));

    // Screenshots, to look at.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, size) in [("report-desktop.png", "1280,4200"), ("report-phone.png", "390,6000")] {
        let shot = shots.join(name);
        let _ = std::fs::remove_file(&shot);
        headless(&page, &[&format!("--window-size={size}"), &format!("--screenshot={}", shot.display())]);
        let png = std::fs::read(&shot).expect("a screenshot");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        eprintln!("screenshot: {}", shot.display());
    }
}
