//! How every binary of the workspace logs: `tracing` to stderr, as text for people or JSON lines for
//! machines (`--log-format`), filtered by `--log-level` (re-read on SIGHUP) or `RUST_LOG`.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer as _, Registry};

/// The log options every server takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// How log lines look on stderr: `text` for people, `json` (one JSON object a line: timestamp, level,
    /// target, fields) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,
    /// Which events to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or `tracing` directives
    /// (`info,otkv_engine=debug`). Re-read from the --config file on SIGHUP. `RUST_LOG`, when set, wins.
    #[arg(long, default_value = "info", value_parser = check_filter, help_heading = "Logging")]
    pub log_level: String,
}

impl Default for LogArgs {
    fn default() -> Self {
        LogArgs { log_format: LogFormat::Text, log_level: "info".into() }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (in colour on a terminal).
    Text,
    /// One JSON object a line.
    Json,
}

/// Checks a filter as `tracing` will read it.
fn check_filter(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text).map(|_| text.to_string()).map_err(|e| format!("not a log filter: {e}"))
}

/// The filter `level` means, with may's per-socket chatter kept at `warn` unless asked for.
fn filter(level: &str) -> Result<EnvFilter, String> {
    let text = if level.contains("may") { level.to_string() } else { format!("{level},may=warn") };
    EnvFilter::try_new(text).map_err(|e| format!("not a log filter: {e}"))
}

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Logs as [`LogArgs::default`] says (text, `info`, or `RUST_LOG`).
pub fn init_logging() {
    init_logging_with(&LogArgs::default());
}

/// Sends `tracing` output to stderr as `args` say; `RUST_LOG`, when set, is the filter instead.
pub fn init_logging_with(args: &LogArgs) {
    use std::io::IsTerminal;
    let initial = EnvFilter::try_from_default_env()
        .or_else(|_| filter(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info,may=warn"));
    let (filter_layer, handle) = reload::Layer::new(initial);
    let output = match args.log_format {
        LogFormat::Text => {
            fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).boxed()
        }
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    if tracing_subscriber::registry().with(filter_layer).with(output).try_init().is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the log filter of a running process (SIGHUP with a changed `log-level`). `RUST_LOG`, when set,
/// stays the filter.
pub(crate) fn set_filter(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Err("RUST_LOG is set and decides the filter".into());
    }
    let handle = FILTER.get().ok_or("logging is not set up")?;
    handle.reload(filter(level)?).map_err(|e| e.to_string())
}
