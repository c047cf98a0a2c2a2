//! Running a node as a service: settings from a TOML file and `OTKV_*` variables under the command line,
//! every kind of bad configuration refused at start (file, line, key; exit 2), systemd's notifications
//! on a real `$NOTIFY_SOCKET` (ready, reloading, stopping, watchdog), SIGHUP re-reading the file, and
//! JSON logs.
//!
//! The notifications are also how these tests wait: a node says `READY=1` once it serves again after a
//! SIGHUP, so no test sleeps to let a reload happen.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::status_of;

const SERVER: &str = env!("CARGO_BIN_EXE_otkv-server");

fn server() -> Command {
    let mut command = Command::new(SERVER);
    // The tests' own environment must not leak settings in.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTKV_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG").env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC");
    command
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write the file");
    path
}

/// `otkv-server ... --print-config`: each setting's value and where it came from.
fn print_config(command: &mut Command) -> Vec<(String, String, String)> {
    let out = command.arg("--print-config").output().expect("run otkv-server");
    assert!(out.status.success(), "--print-config failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (key, rest) = l.split_once(" = ").expect("key = value");
            let (value, source) = rest.split_once("  # ").expect("value  # source");
            (key.to_string(), value.to_string(), source.to_string())
        })
        .collect()
}

fn setting(settings: &[(String, String, String)], key: &str) -> (String, String) {
    let (_, value, source) = settings.iter().find(|(k, ..)| k == key).expect("the setting is listed");
    (value.clone(), source.clone())
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file_which_wins_over_defaults() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "otkv.toml",
        "# a node\nmax-key-bytes = 100\nmax-connections = 50\nbind = \"127.0.0.1\"\n",
    );
    let file_arg = file.to_string_lossy().into_owned();
    let with = |env: bool, flag: bool| {
        let mut command = server();
        command.args(["--config", &file_arg]);
        if env {
            command.env("OTKV_MAX_KEY_BYTES", "200");
        }
        if flag {
            command.args(["--max-key-bytes", "300"]);
        }
        print_config(&mut command)
    };
    let at = format!("{}:2", file.display());
    assert_eq!(setting(&with(true, true), "max-key-bytes"), ("300".into(), "--max-key-bytes".into()));
    assert_eq!(setting(&with(true, false), "max-key-bytes"), ("200".into(), "OTKV_MAX_KEY_BYTES".into()));
    assert_eq!(setting(&with(false, false), "max-key-bytes"), ("100".into(), at));
    assert_eq!(setting(&print_config(&mut server()), "max-key-bytes"), ("1024".into(), "default".into()));
    // Other keys keep their own sources meanwhile.
    assert_eq!(setting(&with(true, true), "max-connections"), ("50".into(), format!("{}:3", file.display())));
    assert_eq!(setting(&with(true, true), "port"), ("7070".into(), "default".into()));
    // The file can also be named by the environment.
    let mut by_env = server();
    by_env.env("OTKV_CONFIG", &file);
    assert_eq!(setting(&print_config(&mut by_env), "max-connections").0, "50");
}

#[test]
fn print_config_is_a_configuration_file_that_gives_the_same_settings() {
    let dir = tempfile::tempdir().expect("dir");
    let mut first = server();
    first.args(["--durability", "periodic", "--data-dir", "/var/lib/otkv", "--max-memory", "64MiB"]);
    first.env("OTKV_LOG_FORMAT", "json");
    let out = first.arg("--print-config").output().expect("run");
    let printed = write(dir.path(), "printed.toml", &String::from_utf8_lossy(&out.stdout));
    let again = print_config(server().args(["--config", &printed.to_string_lossy()]));
    let values =
        |s: &[(String, String, String)]| s.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect::<Vec<_>>();
    let first = print_config(
        server()
            .args(["--durability", "periodic", "--data-dir", "/var/lib/otkv", "--max-memory", "64MiB"])
            .env("OTKV_LOG_FORMAT", "json"),
    );
    assert_eq!(values(&again), values(&first));
    assert_eq!(setting(&again, "log-format").0, "\"json\"");
}

#[test]
fn a_node_serves_with_the_settings_of_its_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(dir.path(), "otkv.toml", "port = 0\nmax-key-bytes = 8\n");
    let mut command = server();
    command.args(["--config", &file.to_string_lossy()]);
    let mut node = Service::start(command, None);
    assert_eq!(status_of(ureq::put(&format!("{}/v1/kv/eightbyt", node.url)).send_bytes(b"v")).0, 201);
    assert_eq!(status_of(ureq::put(&format!("{}/v1/kv/ninebytes", node.url)).send_bytes(b"v")).0, 414);
    node.stop();
}

#[test]
fn every_kind_of_bad_configuration_is_refused_with_its_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cases: [(&str, &str); 10] = [
        ("port = 0\nprot = 7070\n", ":2: unknown key `prot` (did you mean `port`?)"),
        ("max_key_bytes = 5\n", ":1: unknown key `max_key_bytes` (did you mean `max-key-bytes`?)"),
        ("port = \"seventy\"\n", ":1: `port`: invalid value 'seventy'"),
        ("port = 70000\n", ":1: `port`: invalid value '70000'"),
        ("durability = \"sometimes\"\n", ":1: `durability`: invalid value 'sometimes'"),
        ("max-memory = \"5 parsecs\"\n", ":1: `max-memory`: invalid value '5 parsecs'"),
        ("allow-unauthenticated = \"yes\"\n", ":1: `allow-unauthenticated`: `yes`: write true or false"),
        ("bind = [\"127.0.0.1\", \"::1\"]\n", ":1: `bind`: takes one value, not a list"),
        ("\n[server]\nport = 1\n", ":2: `server`: a table is not a value of any option"),
        (
            "tls-cert = \"node.pem\"\n",
            ":1: `tls-cert`: the following required arguments were not provided: --tls-key",
        ),
    ];
    for (i, (text, said)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad-{i}.toml"), text);
        let out = server().args(["--config", &file.to_string_lossy()]).output().expect("run");
        assert_refused(&out, &format!("{}{said}", file.display()));
    }
    let broken = write(dir.path(), "broken.toml", "port = 0\nbind = \"127.0.0.1\n");
    let out = server().args(["--config", &broken.to_string_lossy()]).output().expect("run");
    assert_refused(&out, &format!("{}:2: not valid TOML", broken.display()));
    let out = server().args(["--config", "/nonexistent/otkv.toml"]).output().expect("run");
    assert_refused(&out, "/nonexistent/otkv.toml: cannot read the configuration file");
    // A bad environment variable is refused as a bad flag is (clap's own message and status).
    let out = server().env("OTKV_DURABILITY", "sometimes").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sometimes"));
}

fn assert_refused(out: &Output, said: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status for {said}: {stderr}");
    assert!(stderr.contains(said), "expected {said:?} in:\n{stderr}");
    assert!(out.stdout.is_empty(), "a refused start prints no `listening on` line");
}

/// A test `$NOTIFY_SOCKET`: what the node tells its service manager.
struct Notifications {
    socket: UnixDatagram,
    address: String,
    _dir: tempfile::TempDir,
}

impl Notifications {
    fn bind(abstract_name: bool) -> Notifications {
        let dir = tempfile::tempdir().expect("dir");
        let (socket, address) = if abstract_name {
            use std::os::linux::net::SocketAddrExt as _;
            let name = format!("otkv-test-{}-{:?}", std::process::id(), std::thread::current().id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
            (UnixDatagram::bind_addr(&addr).expect("bind"), format!("@{name}"))
        } else {
            let path = dir.path().join("notify");
            (UnixDatagram::bind(&path).expect("bind"), path.to_string_lossy().into_owned())
        };
        socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        Notifications { socket, address, _dir: dir }
    }

    /// The next message (its `KEY=VALUE` lines).
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Waits for a message with `line`, returning it.
    fn expect(&self, line: &str) -> String {
        loop {
            let message = self.next();
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }
}

/// A node started as a service manager would: its stderr kept in a file.
struct Service {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    fn start(mut command: Command, notify: Option<&Notifications>) -> Service {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("stderr.log");
        command.args(["--port", "0"]).stderr(fs::File::create(&log).expect("log file"));
        if let Some(n) = notify {
            command.env("NOTIFY_SOCKET", &n.address);
        }
        let (child, url) = common::spawn_listening(command);
        Service { child, url, log, _dir: dir }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(status.expect("kill").success());
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).expect("the log")
    }

    fn stop(&mut self) {
        self.signal("TERM");
        assert!(self.child.wait().expect("wait").success());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_service_manager_hears_ready_reloading_and_stopping() {
    for abstract_name in [false, true] {
        let notify = Notifications::bind(abstract_name);
        let mut node = Service::start(server(), Some(&notify));
        let ready = notify.expect("READY=1");
        assert!(ready.contains(&format!("MAINPID={}", node.child.id())), "{ready}");
        assert!(ready.contains("STATUS=serving on http://127.0.0.1:"), "{ready}");

        node.signal("HUP");
        let reloading = notify.next();
        assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
        assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading}");
        notify.expect("READY=1");
        assert_eq!(status_of(ureq::get(&format!("{}/healthz", node.url)).call()).0, 200);

        node.signal("TERM");
        notify.expect("STOPPING=1");
        assert!(node.child.wait().expect("wait").success());
    }
}

#[test]
fn the_watchdog_is_pinged_when_the_unit_asks_for_it() {
    let notify = Notifications::bind(false);
    let mut command = server();
    command.env("WATCHDOG_USEC", "200000");
    let mut node = Service::start(command, Some(&notify));
    notify.expect("READY=1");
    notify.expect("WATCHDOG=1");
    notify.expect("WATCHDOG=1");
    node.stop();

    // A watchdog meant for another process (WATCHDOG_PID) is not pinged.
    let notify = Notifications::bind(false);
    let mut command = server();
    command.env("WATCHDOG_USEC", "200000").env("WATCHDOG_PID", "1");
    let mut node = Service::start(command, Some(&notify));
    notify.expect("READY=1");
    node.signal("TERM");
    let stopping = notify.next();
    assert!(stopping.starts_with("STOPPING=1"), "only STOPPING=1 after READY=1, got {stopping}");
    assert!(node.child.wait().expect("wait").success());
}

#[test]
fn sighup_applies_the_log_level_and_names_what_waits_for_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = write(dir.path(), "tokens", &format!("write {}\n", "w".repeat(24)));
    let file = write(
        dir.path(),
        "otkv.toml",
        &format!("max-key-bytes = 100\nlog-level = \"info\"\nauth-token-file = \"{}\"\n", tokens.display()),
    );
    let notify = Notifications::bind(false);
    let mut command = server();
    command.args(["--config", &file.to_string_lossy()]);
    let mut node = Service::start(command, Some(&notify));
    notify.expect("READY=1");

    // A new log level and a new key limit; and a second token in the token file.
    fs::write(
        &file,
        format!("max-key-bytes = 200\nlog-level = \"debug\"\nauth-token-file = \"{}\"\n", tokens.display()),
    )
    .expect("edit the file");
    fs::write(&tokens, format!("write {}\nread {}\n", "w".repeat(24), "r".repeat(24))).expect("edit tokens");
    node.signal("HUP");
    notify.expect("READY=1");
    let log = node.log();
    assert!(log.contains("SIGHUP: setting applied") && log.contains("log-level"), "{log}");
    assert!(
        log.contains("SIGHUP: this setting changes only on a restart") && log.contains("max-key-bytes"),
        "{log}"
    );
    assert!(log.contains("SIGHUP: tokens re-read"), "{log}");
    // The key limit in force is still the one the node started with; the new token works.
    let long_key = "k".repeat(150);
    let put = ureq::put(&format!("{}/v1/kv/{long_key}", node.url))
        .set("Authorization", &format!("Bearer {}", "w".repeat(24)));
    assert_eq!(status_of(put.send_bytes(b"v")).0, 414);
    let read = ureq::get(&format!("{}/v1/kv/absent", node.url))
        .set("Authorization", &format!("Bearer {}", "r".repeat(24)));
    assert_eq!(status_of(read.call()).0, 404);

    // A file that no longer checks changes nothing, and says why.
    fs::write(&file, "max-key-bytes = \"many\"\n").expect("break the file");
    node.signal("HUP");
    notify.expect("READY=1");
    assert!(node.log().contains("SIGHUP: configuration not re-read"), "{}", node.log());
    node.stop();
}

#[test]
fn json_logs_are_one_object_a_line() {
    let mut command = server();
    command.args(["--log-format", "json"]);
    let mut node = Service::start(command, None);
    assert_eq!(status_of(ureq::get(&format!("{}/v1/kv/absent", node.url)).call()).0, 404);
    node.stop();
    let log = node.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "a start and a stop are logged: {log}");
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event.get("timestamp").is_some() && event.get("level").is_some(), "{line}");
    }
    assert!(log.contains("\"message\":\"listening\""), "{log}");
}
