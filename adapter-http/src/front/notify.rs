//! systemd's service notifications (`sd_notify`): `READY=1` once the server accepts connections,
//! `RELOADING=1` and `READY=1` around a SIGHUP, `STOPPING=1` when it starts to shut down, and
//! `WATCHDOG=1` pings when the unit asks for them (`WatchdogSec=`).
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path,
//! or `@name` for the abstract namespace), so it is written here rather than linking libsystemd. Without
//! `$NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the service manager, if there is one.
/// Failures are logged, never fatal: a server must not stop because its supervisor went away.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let target = target.to_string_lossy().into_owned();
    let addr = if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(&target)
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        tracing::warn!(socket = %target, error = %e, "cannot notify the service manager");
    }
}

/// `READY=1`, with a status line saying where the server listens.
pub(crate) fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()));
}

/// `RELOADING=1` with the monotonic time systemd asks of it (it pairs the message with the reload it
/// started).
pub(crate) fn reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000);
    notify(&format!("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC={now}"));
}

/// `STOPPING=1`.
pub(crate) fn stopping() {
    notify("STOPPING=1\nSTATUS=shutting down: finishing the requests in flight");
}

/// How often systemd expects `WATCHDOG=1` (`$WATCHDOG_USEC`), if it expects it of this process
/// (`$WATCHDOG_PID`, when set, names the process).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}
