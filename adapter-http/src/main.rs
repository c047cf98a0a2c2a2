//! `otkv-server`: one OTKV node. See `otkv-server --help` and docs/operations.md.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use otkv_adapter_http::config;

/// One OTKV node: a key-value store served over HTTP/1.1.
///
/// Every option can also be set by an `OTKV_*` environment variable (shown with each option) or in a
/// TOML file given with --config; the command line wins over the environment, which wins over the file.
#[derive(Debug, clap::Parser)]
#[command(name = "otkv-server", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    server: otkv_adapter_http::ServerArgs,
    #[command(flatten)]
    log: otkv_adapter_http::LogArgs,
}

fn main() -> ExitCode {
    let parsed = match config::parse_command_line(Cli::command(), None, "OTKV_", "otkv-server") {
        Ok(parsed) => parsed,
        Err(status) => return ExitCode::from(status),
    };
    let cli = Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    otkv_adapter_http::init_logging_with(&cli.log);
    parsed.remember();
    match otkv_adapter_http::run(cli.server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("otkv-server: {e}");
            ExitCode::from(2)
        }
    }
}
