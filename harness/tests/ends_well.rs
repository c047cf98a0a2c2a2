//! The harness ends well: an interrupted run keeps what it measured (marked interrupted, its operations
//! the node's own count) and exits 130/143; no node and no temporary directory outlives it after
//! SIGTERM, SIGINT, SIGKILL, a panic or a closed stdout; impossible settings are refused up front, naming
//! the option and the limit; the exit status says whether the run was good.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use common::{eventually, PATIENCE};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

/// A `harness run` with its temporary files under `tmp` (so what it leaves behind is visible).
fn harness(tmp: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(HARNESS);
    c.arg("run").args(args).env("TMPDIR", tmp).env("RUST_LOG", "warn");
    c
}

const SHORT: [&str; 10] =
    ["--nodes", "1", "--keys", "2000", "--connections", "4", "--warmup", "0s", "--workload", "ycsb-c"];

/// Processes whose command line mentions `tmp` (the nodes' data directories are under it).
fn processes_under(tmp: &Path) -> Vec<String> {
    let needle = tmp.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && !cmdline.contains(" reap ") {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// Nothing left under `tmp`: no process, no directory.
fn nothing_left(tmp: &Path, what: &str) {
    eventually(&format!("{what}: no node left"), || processes_under(tmp).is_empty());
    eventually(&format!("{what}: no temporary directory left"), || {
        std::fs::read_dir(tmp)
            .expect("tmp")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("otkv-"))
    });
}

/// Starts `command` and waits until its stderr shows the measured window's second second. The caller
/// waits for the child.
#[allow(clippy::zombie_processes, reason = "the child is returned to be signalled and waited for")]
fn start_measuring(mut command: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("harness");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx.recv_timeout(PATIENCE * 3).expect("the harness reports its progress");
        if line.contains("[   2s/") {
            return (child, rx);
        }
    }
}

fn signal(pid: u32, name: &str) {
    assert!(Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill")
        .success());
}

#[test]
fn sigterm_and_sigint_keep_what_was_measured_and_leave_nothing_behind() {
    for (name, status) in [("TERM", 143), ("INT", 130)] {
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join("results");
        let mut command = harness(tmp.path(), &SHORT);
        command.args(["--duration", "60s", "--out"]).arg(&out);
        let (mut child, _log) = start_measuring(command);
        signal(child.id(), name);
        let exit = child.wait().expect("wait");
        assert_eq!(exit.code(), Some(status), "SIG{name}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary"))
                .expect("json");
        assert_eq!(summary["interrupted"], true, "SIG{name}");
        let run = &summary["runs"][0];
        assert_eq!(run["interrupted"], true);
        let secs = run["duration_s"].as_f64().expect("duration");
        assert!((1.5..30.0).contains(&secs), "the window actually measured: {secs} s");
        let ops = run["ops"].as_u64().expect("ops");
        assert!(ops > 0);
        assert_eq!(
            run["cost"]["servers"][0]["requests"].as_u64(),
            Some(ops),
            "the node's own count, SIG{name}"
        );
        assert!(out.join("report.html").exists() && out.join("1nodes.hgrm").exists());
        nothing_left(tmp.path(), &format!("SIG{name}"));
    }
}

#[test]
fn a_second_signal_stops_at_once_and_still_stops_the_nodes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut command = harness(tmp.path(), &SHORT);
    command.args(["--duration", "60s", "--out"]).arg(tmp.path().join("results"));
    let (mut child, _log) = start_measuring(command);
    signal(child.id(), "TERM");
    signal(child.id(), "TERM");
    let exit = child.wait().expect("wait");
    assert!(matches!(exit.code(), Some(143)), "{exit:?}");
    nothing_left(tmp.path(), "two SIGTERMs");
}

#[test]
fn sigkill_a_panic_and_a_closed_stdout_leave_nothing_behind() {
    // SIGKILL: the nodes are told by the kernel, the reaper removes the directory.
    let tmp = tempfile::tempdir().expect("tmp");
    let mut command = harness(tmp.path(), &SHORT);
    command.args(["--duration", "60s", "--out"]).arg(tmp.path().join("results"));
    let (mut child, _log) = start_measuring(command);
    assert!(!processes_under(tmp.path()).is_empty(), "a node runs");
    signal(child.id(), "KILL");
    let _ = child.wait();
    nothing_left(tmp.path(), "SIGKILL");

    // A panic once the nodes run (a test-only hook).
    let tmp = tempfile::tempdir().expect("tmp");
    let mut command = harness(tmp.path(), &SHORT);
    command
        .args(["--duration", "60s", "--out"])
        .arg(tmp.path().join("results"))
        .env("OTKV_HARNESS_TEST_PANIC", "1");
    let out = command.output().expect("harness");
    assert_eq!(out.status.code(), Some(101), "{}", String::from_utf8_lossy(&out.stderr));
    nothing_left(tmp.path(), "a panic");

    // `| head -2`: stdout closes after two lines; the harness ends quietly, nodes stopped.
    let tmp = tempfile::tempdir().expect("tmp");
    let mut command = harness(tmp.path(), &SHORT);
    command.args(["--duration", "60s", "--out"]).arg(tmp.path().join("results"));
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("harness");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    for _ in 0..2 {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a line");
    }
    drop(stdout);
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    nothing_left(tmp.path(), "a closed stdout");
}

#[test]
fn impossible_settings_are_refused_before_any_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let refused = |args: &[&str], says: &[&str]| {
        let out =
            harness(tmp.path(), args).args(["--out"]).arg(tmp.path().join("r")).output().expect("harness");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for s in says {
            assert!(err.contains(s), "{args:?} should say {s:?}: {err}");
        }
    };
    refused(&["--value-size", "999999999999"], &["--value-size", "GiB"]);
    refused(
        &["--nodes", "1", "--keys", "100", "--value-size", "2000000", "--duration", "1s"],
        &["--value-size 2000000", "1048576"],
    );
    refused(&["--duration", "0s"], &["--duration"]);
    refused(&["--ops", "3", "--connections", "8"], &["--ops 3", "8 connections"]);
    refused(&["--rate", "2", "--connections", "8"], &["--rate 2", "8 connections"]);
    refused(&["--keys", "100000000000", "--value-size", "1000"], &["--keys", "GiB"]);
    refused(&["--max-error-rate", "150%"], &["--max-error-rate"]);
    nothing_left(tmp.path(), "refused settings");
}

#[test]
fn the_exit_status_says_whether_the_run_was_good() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good =
        harness(tmp.path(), &SHORT).args(["--duration", "1s", "--out"]).arg(tmp.path().join("a")).output();
    assert_eq!(good.expect("harness").status.code(), Some(0));

    // A node killed mid-run: errors, and the run fails, saying why on its last line.
    let node_tmp = tempfile::tempdir().expect("tmp");
    let mut node = Command::new(HARNESS)
        .args(["node", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let mut line = String::new();
    BufReader::new(node.stdout.take().expect("stdout")).read_line(&mut line).expect("listening");
    let url = line.trim().strip_prefix("listening on ").expect("url").to_string();
    let mut command =
        harness(node_tmp.path(), &["--node", &url, "--keys", "2000", "--connections", "4", "--warmup", "0s"]);
    command.args(["--duration", "4s", "--timeout", "1s", "--out"]).arg(node_tmp.path().join("r"));
    let (mut child, log) = start_measuring(command);
    let _ = node.kill();
    let _ = node.wait();
    let exit = child.wait().expect("wait");
    let lines: Vec<String> = log.try_iter().collect();
    assert_eq!(exit.code(), Some(1), "{lines:?}");
    let last = lines.last().expect("a last line");
    assert!(last.contains("errors") && last.contains("--max-error-rate"), "{last}");
}
