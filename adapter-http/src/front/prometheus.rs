//! [`Exposition`]: Prometheus's text format, written by one helper for every `/metrics` in the workspace
//! (the front door's counters, the node's engine gauges, the process's, the proxy's per-node counters).
//!
//! Why not the `prometheus-client` crate: its metrics are its own types, counted through a label-set
//! lookup (`Family::get_or_create`: a hash and a read lock per increment), and ours are plain atomics in
//! fixed arrays that the request path bumps with no lookup at all. What a crate would add is only this
//! text, which is a dozen lines: a family's `# HELP` and `# TYPE`, then its samples.

use std::fmt::{Display, Write as _};

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (a `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, a sum and a count.
    Histogram,
}

/// A Prometheus text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty exposition with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Exposition { text: String::with_capacity(capacity) }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample: `name{label="value",...} value`, label values escaped as the format requires.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &dyn Display)], value: impl Display) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"");
                for c in v.to_string().chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// Appends another exposition (its families must not repeat this one's).
    pub fn append(&mut self, other: Exposition) -> &mut Self {
        self.text.push_str(&other.text);
        self
    }

    /// The text.
    pub fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_escaped_labels() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "Things.").sample("x_total", &[("a", &"q\"\\\n"), ("b", &7)], 3);
        e.single("y", Kind::Gauge, "A gauge.", 1.5);
        assert_eq!(
            e.into_text(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\",b=\"7\"} 3\n\
             # HELP y A gauge.\n# TYPE y gauge\ny 1.5\n"
        );
    }
}
