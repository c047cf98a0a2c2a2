//! How the harness ends: on SIGINT or SIGTERM, on a closed stdout, on a panic or when killed, it never
//! leaves a process or a temporary directory behind.
//!
//! - The first SIGINT/SIGTERM sets a flag ([`interrupted`]); the load loop ends its window there, and
//!   the run writes what it measured (marked interrupted), stops its nodes, removes its directories, and
//!   exits 128 + the signal (130, 143). A second one kills every process the harness started, removes
//!   its directories and exits at once.
//! - A closed stdout (`harness run | head`) does the same as a first signal, quietly: exit 141, as a
//!   process killed by SIGPIPE.
//! - Every process the harness starts asks the kernel to be sent SIGTERM when the harness dies
//!   (`PR_SET_PDEATHSIG`), so not even SIGKILL leaves a node running; a panic unwinds through the
//!   owners of the processes and directories, which stop and remove them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use otkv_adapter_http::front::lock;

/// The signal that interrupted the run (or SIGPIPE for a closed stdout); 0 while none has.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// The processes the harness started and has not stopped yet.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// The temporary directories it made and has not removed yet.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Their reapers.
static REAPERS: Mutex<Vec<std::process::Child>> = Mutex::new(Vec::new());

/// Watches SIGINT and SIGTERM (call once, early).
pub fn install() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("harness-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if INTERRUPTED.compare_exchange(0, signal, Relaxed, Relaxed).is_ok() {
                    eprintln!("harness: interrupted (signal {signal}): stopping the load, writing what was measured");
                } else {
                    eprintln!("harness: interrupted again: stopping now");
                    kill_everything();
                    std::process::exit(128 + signal);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// The signal the run was interrupted by, if it was.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// Ends the run as a first signal does (`signal` is what the exit status reports).
pub fn interrupt(signal: i32) {
    let _ = INTERRUPTED.compare_exchange(0, signal, Relaxed, Relaxed);
}

/// The exit status of an interrupted run: 128 + the signal.
pub fn exit_status() -> Option<u8> {
    interrupted().and_then(|s| u8::try_from(128 + s).ok())
}

/// Sleeps for `d`, or until the run is interrupted; returns whether it slept the whole time.
pub fn sleep(d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if interrupted().is_some() {
            return false;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
    }
    true
}

/// Records a process the harness started (until [`forget_child`]).
pub fn track_child(pid: u32) {
    lock(&CHILDREN).push(pid);
}

/// The process has been stopped.
pub fn forget_child(pid: u32) {
    lock(&CHILDREN).retain(|&p| p != pid);
}

/// Records a temporary directory (until [`forget_dir`]), and starts its reaper: a `harness reap`
/// process that removes it if the harness dies without doing so (SIGKILL, an abort).
pub fn track_dir(path: PathBuf) {
    let exe = std::env::current_exe();
    let reaper = exe.ok().and_then(|exe| {
        let mut command = std::process::Command::new(exe);
        command.arg("reap").arg(&path).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        die_with_parent(&mut command);
        command.spawn().ok()
    });
    lock(&DIRS).push(path);
    if let Some(reaper) = reaper {
        lock(&REAPERS).push(reaper);
    }
}

/// The directory has been removed (or kept on purpose): its reaper is stopped.
pub fn forget_dir(path: &std::path::Path) {
    lock(&DIRS).retain(|p| p != path);
    for mut reaper in lock(&REAPERS).drain(..) {
        let _ = reaper.kill();
        let _ = reaper.wait();
    }
}

/// The end of a temporary directory: kept (`--keep-data`, its path said) or removed; either way its
/// reaper is stopped.
pub fn end_dir(dir: tempfile::TempDir, keep: bool) {
    if keep {
        let kept = dir.keep();
        forget_dir(&kept);
        eprintln!("data kept in {}", kept.display());
    } else {
        let path = dir.path().to_owned();
        drop(dir);
        forget_dir(&path);
    }
}

/// `harness reap DIR`: waits for SIGTERM (sent when the harness dies: [`die_with_parent`]), then
/// removes `dir`, once the processes that wrote in it have had a moment to stop.
pub fn reap(dir: &std::path::Path) -> Result<(), String> {
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
            .map_err(|e| e.to_string())?;
    let _ = signals.forever().next();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

fn kill_everything() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for &pid in lock(&CHILDREN).iter() {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    for dir in lock(&DIRS).iter() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Prints a line on stdout; a closed stdout ends the run quietly (as SIGPIPE would) instead of
/// panicking as `println!` does.
pub fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{args}").and_then(|()| out.flush()).is_err() {
        interrupt(libc_sigpipe());
    }
}

/// Ends the run (as [`say`] would) when stdout is a pipe whose reader has gone (`| head`), even while
/// the harness has nothing to print: called once a second by the load loop.
pub fn check_stdout() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd as _;
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLOUT)];
    if poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
    {
        interrupt(libc_sigpipe());
    }
}

const fn libc_sigpipe() -> i32 {
    13
}

/// Makes `command`'s process receive SIGTERM when the harness dies, however it dies.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // A child is not the service systemd supervises: it must not speak for it (READY=1, WATCHDOG=1).
    command.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC").env_remove("WATCHDOG_PID");
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, and calls only `prctl`, `getppid` and
    // `_exit`, which are async-signal-safe; it touches no memory the parent's other threads share.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The harness may have died before the request was made: then nobody will send it.
            if u32::try_from(nix::libc::getppid()).ok() != Some(parent) {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}
