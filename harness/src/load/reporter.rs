//! The reporter: once a second it takes every connection's latencies, prints a progress line and
//! records the interval; it closes the warm-up and the measured window, and assembles the
//! [`RunOutcome`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use otkv_adapter_http::front::lock;

use super::shared::{all_done, answered, ConnStats, Shared};
use crate::run_outcome::{
    new_histogram, progress_line, Interval, IntervalHistograms, RunOutcome, WarmupOutcome, KINDS,
};

/// The reporter's state: what it has taken from the connections so far.
pub(super) struct Reporter {
    /// When the measured window opened (the warm-up's start until then).
    started: Instant,
    last: Instant,
    last_ops: u64,
    last_errors: u64,
    interval: Histogram<u64>,
    /// The measured latencies of the interval, by kind (for the interval logs).
    interval_by_op: [Histogram<u64>; KINDS],
    /// The measured intervals so far.
    intervals: Vec<IntervalHistograms>,
    /// When the measured window opened, by the wall clock.
    window_start: SystemTime,
    /// The measured window's latencies by kind.
    totals: [Histogram<u64>; KINDS],
    timeline: Vec<Interval>,
    /// How long the warm-up ran, once it has.
    warmed: Option<Duration>,
}

impl Reporter {
    /// A reporter whose clock starts now.
    pub(super) fn new() -> Self {
        let now = Instant::now();
        Reporter {
            started: now,
            last: now,
            last_ops: 0,
            last_errors: 0,
            interval: new_histogram(),
            interval_by_op: std::array::from_fn(|_| new_histogram()),
            intervals: Vec::new(),
            window_start: SystemTime::now(),
            totals: std::array::from_fn(|_| new_histogram()),
            timeline: Vec::new(),
            warmed: None,
        }
    }

    /// Runs on the calling (non-coroutine) thread until the run ends: a progress line every second, the
    /// warm-up closed at `warm_until` (then `at_start`), the measured window closed at `--duration`, or
    /// when every connection is done (`--ops`, or a seed's cursor ran out).
    pub(super) fn watch(
        &mut self,
        stats: &[ConnStats],
        shared: &Shared<'_>,
        warm_until: Option<Instant>,
        at_start: &mut dyn FnMut(),
    ) {
        loop {
            let warming = shared.warming.load(Relaxed);
            let phase_end = if warming { warm_until } else { shared.spec.duration.map(|d| self.started + d) };
            let tick = self.last + Duration::from_secs(1);
            let wake = phase_end.map_or(tick, |d| d.min(tick));
            while Instant::now() < wake
                && !all_done(stats, shared)
                && crate::shutdown::interrupted().is_none()
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            crate::shutdown::check_stdout();
            // Interrupted: the phase ends here (a warm-up with nothing measured after it).
            let interrupted = crate::shutdown::interrupted().is_some();
            let ended = interrupted || phase_end.is_some_and(|d| Instant::now() >= d);
            if warming && ended && !all_done(stats, shared) && !interrupted {
                self.tick(stats, shared, false);
                self.open_window(stats, shared, at_start);
                continue;
            }
            if ended {
                shared.stop.store(true, Relaxed);
            }
            let finished = shared.stop.load(Relaxed) || all_done(stats, shared);
            if Instant::now() >= tick || finished {
                self.tick(stats, shared, !warming);
            }
            if finished {
                shared.stop.store(true, Relaxed);
                return;
            }
        }
    }

    /// What the run measured, once every connection has stopped.
    pub(super) fn finish(
        mut self,
        stats: &[ConnStats],
        shared: &Shared<'_>,
        per_node_connections: Vec<usize>,
    ) -> RunOutcome {
        let elapsed = self.started.elapsed();
        // Late completions after the last interval (coroutines finishing their batch) join the totals,
        // and a last interval of their own, so the intervals add up to the totals exactly.
        self.collect(stats);
        if self.interval_by_op.iter().any(|h| !h.is_empty()) {
            self.close_interval();
        }
        let mut per_node_ops = vec![0; shared.targets.len()];
        for conn in stats {
            per_node_ops[conn.node] += conn.ops.load(Relaxed);
        }
        let mut histogram = new_histogram();
        for h in &self.totals {
            let _ = histogram.add(h);
        }
        RunOutcome {
            ops: per_node_ops.iter().sum(),
            elapsed,
            histogram,
            by_op: self.totals,
            timeline: self.timeline,
            window_start: self.window_start,
            intervals: self.intervals,
            per_node_ops,
            per_node_connections,
            tally: Arc::clone(&shared.tallies[1]),
            warmup: self.warmed.map(|elapsed| WarmupOutcome {
                elapsed,
                ops: stats.iter().map(|c| c.warm_ops.load(Relaxed)).sum(),
                errors: shared.tallies[0].total(),
            }),
        }
    }

    /// Moves every connection's latencies into the interval, and the measured ones into the totals.
    fn collect(&mut self, stats: &[ConnStats]) {
        for conn in stats {
            let mut hists = lock(&conn.hists);
            for (i, h) in hists.iter_mut().enumerate() {
                let _ = self.interval.add(&*h);
                if let Some(total) = self.totals.get_mut(i) {
                    let _ = total.add(&*h);
                    let _ = self.interval_by_op[i].add(&*h);
                }
                h.reset();
            }
        }
    }

    /// Closes the warm-up and opens the measured window.
    fn open_window(&mut self, stats: &[ConnStats], shared: &Shared<'_>, at_start: &mut dyn FnMut()) {
        self.collect(stats);
        self.interval.reset();
        self.interval_by_op.iter_mut().for_each(Histogram::reset);
        at_start();
        shared.warming.store(false, Relaxed);
        let now = Instant::now();
        self.window_start = SystemTime::now();
        self.warmed = Some(now - self.started);
        (self.started, self.last, self.last_ops, self.last_errors) = (now, now, 0, 0);
    }

    /// Closes the interval since the last tick: a progress line, and (when `measured`) a timeline entry.
    fn tick(&mut self, stats: &[ConnStats], shared: &Shared<'_>, measured: bool) {
        self.collect(stats);
        let ops_now =
            if measured { stats.iter().map(|c| c.ops.load(Relaxed)).sum() } else { answered(stats) };
        let errors_now = shared.tally().total();
        let secs = self.last.elapsed().as_secs_f64().max(1e-9);
        let iv = interval(
            self.started,
            &self.interval,
            ops_now - self.last_ops,
            errors_now - self.last_errors,
            secs,
        );
        if shared.spec.progress {
            progress_line(&iv, if measured { shared.spec.duration } else { None }, !measured);
        }
        self.interval.reset();
        if measured {
            self.timeline.push(iv);
            self.close_interval();
        }
        (self.last, self.last_ops, self.last_errors) = (Instant::now(), ops_now, errors_now);
    }
}

impl Reporter {
    /// Moves the interval's measured latencies into a logged interval, from the last tick to now.
    fn close_interval(&mut self) {
        let by_op = std::array::from_fn(|i| {
            let h = self.interval_by_op[i].clone();
            self.interval_by_op[i].reset();
            h
        });
        let (start, length) = (self.last - self.started, self.last.elapsed());
        self.intervals.push(IntervalHistograms { start, length, by_op });
    }
}

fn interval(started: Instant, h: &Histogram<u64>, ops: u64, errors: u64, secs: f64) -> Interval {
    let ms = |v: u64| v as f64 / 1000.0;
    Interval {
        t: started.elapsed().as_secs_f64(),
        ops,
        ops_per_s: ops as f64 / secs,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        errors,
    }
}
