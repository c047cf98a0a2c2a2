//! The standard Prometheus process metrics, read from `/proc/self` at scrape time.
//!
//! `process_cpu_seconds_total` (user + system), `process_resident_memory_bytes` and
//! `process_start_time_seconds`, as every Prometheus client library names them, so a dashboard or the
//! harness can tell what a server costs without access to its machine. Linux only: elsewhere (or if
//! `/proc` cannot be read) they are left out rather than reported as zero.
//!
//! The CPU time comes from `getrusage`, in microseconds, not from `/proc/self/stat`, which counts whole
//! clock ticks (10 ms): a short run against a fast server (a few thousand requests at a few
//! microseconds each) would read as zero CPU there.
//!
//! Also the one knob a process here turns on itself: [`background_priority`], for bulk work.

use nix::unistd::{sysconf, SysconfVar};

use super::prometheus::{Exposition, Kind};

/// One reading of the process's own counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time since the process started, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `getrusage` and `/proc/self/stat` (and `/proc/stat` for the boot time); `None` where
    /// there is no `/proc`.
    pub fn read() -> Option<ProcessStats> {
        use nix::sys::resource::{getrusage, UsageWho};
        let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().filter(|&t| t > 0)? as f64;
        let page = sysconf(SysconfVar::PAGE_SIZE).ok().flatten().filter(|&p| p > 0)? as u64;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), counted from `state` (field 3) on.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let (start, rss_pages) = (field(22)?, field(24)?);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok()))?;
        Some(ProcessStats {
            cpu_seconds: seconds(usage.user_time()) + seconds(usage.system_time()),
            rss_bytes: rss_pages * page,
            start_time_seconds: boot as f64 + start as f64 / ticks,
        })
    }

    /// Appends the three metrics in Prometheus text format.
    pub fn write_prometheus(&self, e: &mut Exposition) {
        let help = "Total user and system CPU time spent in seconds.";
        e.single("process_cpu_seconds_total", Kind::Counter, help, self.cpu_seconds);
        e.single(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            self.rss_bytes,
        );
        let help = "Start time of the process since unix epoch in seconds.";
        e.single("process_start_time_seconds", Kind::Gauge, help, self.start_time_seconds);
    }
}

/// The lowest CPU priority (nice 19) for the calling thread and the threads it starts afterwards, for
/// bulk work that shares the machine with requests being answered: a node's listing pages, the resharding
/// mover. On a 2-core machine a burst of such work at the default priority preempts the threads a
/// request passes through, and the request waits the burst out. (Linux keeps the nice value per thread;
/// `who = 0` is the caller.) Best effort: a failure leaves the priority as it was.
#[allow(unsafe_code)]
pub fn background_priority() {
    // SAFETY: setpriority reads no memory of ours; an error is only a return value.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let before = ProcessStats::read().expect("/proc is readable on Linux");
        assert!(before.rss_bytes > 1 << 20, "{before:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
        assert!(before.start_time_seconds <= now.as_secs_f64() + 1.0);
        assert!(before.start_time_seconds > now.as_secs_f64() - 3600.0, "{before:?}");
        // Burn some CPU: the counter moves.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = ProcessStats::read().expect("read");
        assert!(after.cpu_seconds > before.cpu_seconds, "{before:?} -> {after:?}");
        let mut e = Exposition::default();
        after.write_prometheus(&mut e);
        let text = e.into_text();
        assert!(
            text.contains("\nprocess_cpu_seconds_total ") && text.contains("process_resident_memory_bytes ")
        );
    }

    /// The nice value of the calling thread, from `/proc/thread-self/stat` (the 19th field).
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc is readable on Linux");
        let after_name = stat.rsplit_once(')').expect("stat has the name in parentheses").1;
        after_name.split_whitespace().nth(16).expect("a nice field").parse().expect("a number")
    }

    #[test]
    fn background_priority_lowers_only_the_calling_thread() {
        let mine = own_nice();
        let theirs = std::thread::spawn(|| {
            background_priority();
            own_nice()
        })
        .join()
        .expect("the thread ends");
        assert_eq!(theirs, 19);
        assert_eq!(own_nice(), mine, "the thread that did not ask keeps its priority");
    }
}
