//! [`init_logging`]: how every binary of the workspace logs.

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default `info`, with may's per-socket chatter
/// at `warn`), in colour only on a terminal.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,may=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
