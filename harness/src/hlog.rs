//! `HdrHistogram` interval logs (`.hlog`): one compressed histogram per second of the measured window, in
//! the format `HdrHistogram`'s own tools read (Java's `HistogramLogProcessor`, the Python and Go readers).
//!
//! A run's logs are what lets runs from several client machines be merged exactly (`harness merge`):
//! histograms add without loss, percentiles of averages do not. Values are microseconds; the `max`
//! column is written in milliseconds (a max-value divisor of 1000, as the Java tools expect).
//!
//! Each log starts with `#[StartTime: …]` and `#[BaseTime: …]`, both the moment the measured window
//! opened (wall clock), so an interval's timestamp is seconds since that moment and its wall-clock time
//! is `BaseTime + timestamp`.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// One interval of a log: when it started (seconds since the Unix epoch), how long it lasted, and its
/// latencies (µs).
#[derive(Debug, Clone)]
pub struct LoggedInterval {
    /// Wall-clock start, seconds since the Unix epoch.
    pub start: f64,
    /// Its length, seconds.
    pub length: f64,
    /// Its latencies.
    pub histogram: Histogram<u64>,
}

/// Seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Writes an interval log of `intervals` (start since `base`, length, histogram) to `path`.
pub fn write(
    path: &Path,
    base: SystemTime,
    intervals: &[(Duration, Duration, &Histogram<u64>)],
) -> Result<(), String> {
    let failed = |e: String| format!("cannot write {}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(|e| failed(e.to_string()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("harness: latencies in microseconds, one interval per second of the measured window")
            .with_start_time(base)
            .with_base_time(base)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(|e| failed(e.to_string()))?;
        for (start, length, h) in intervals {
            log.write_histogram(*h, *start, *length, None).map_err(|e| failed(format!("{e:?}")))?;
        }
    }
    out.flush().map_err(|e| failed(e.to_string()))
}

/// Reads an interval log: every interval, with its wall-clock start (`BaseTime` + its timestamp).
pub fn read(path: &Path) -> Result<Vec<LoggedInterval>, String> {
    let failed = |e: String| format!("{}: {e}", path.display());
    let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let mut base = 0.0;
    let mut intervals = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        match entry.map_err(|e| failed(format!("not an interval log: {e:?}")))? {
            LogEntry::BaseTime(t) => base = t.as_secs_f64(),
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(i) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(i.encoded_histogram())
                    .map_err(|e| failed(format!("an interval is not base64: {e}")))?;
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut raw.as_slice())
                    .map_err(|e| failed(format!("an interval's histogram does not decode: {e:?}")))?;
                intervals.push(LoggedInterval {
                    start: base + i.start_timestamp().as_secs_f64(),
                    length: i.duration().as_secs_f64(),
                    histogram,
                });
            }
        }
    }
    Ok(intervals)
}

/// The sum of `intervals`' histograms.
pub fn total(intervals: &[LoggedInterval]) -> Histogram<u64> {
    let mut sum = crate::run_outcome::new_histogram();
    for i in intervals {
        // Same bounds on both sides (the harness's own histograms), so this cannot fail.
        let _ = sum.add(&i.histogram);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("x.hlog");
        let base = UNIX_EPOCH + Duration::from_millis(1_800_000_000_250);
        let mut a = crate::run_outcome::new_histogram();
        let mut b = crate::run_outcome::new_histogram();
        for v in [1, 10, 100, 1000, 123_456] {
            a.record(v).expect("record");
            b.record(v * 2).expect("record");
        }
        let s = Duration::from_secs;
        write(&path, base, &[(s(0), s(1), &a), (s(1), Duration::from_millis(500), &b)]).expect("write");
        let back = read(&path).expect("read");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].histogram, a);
        assert_eq!(back[1].histogram, b);
        assert!((back[1].start - 1_800_000_001.25).abs() < 1e-3, "{}", back[1].start);
        assert!((back[1].length - 0.5).abs() < 1e-3);
        assert_eq!(total(&back).len(), 10);
    }
}
