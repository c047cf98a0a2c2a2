//! `harness`: start OTKV nodes, route keys across them, drive load, report. See `harness --help`.
//!
//! Exit statuses: 0 a good run; 1 a run with errors over `--max-error-rate`, or a node that exited; 2 bad
//! options or settings (nothing was run); 128 + N interrupted by signal N (130 SIGINT, 143 SIGTERM; the
//! results cover what was measured); 141 stdout closed.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use otkv_adapter_http::config;
use otkv_harness::cli::Cli;

fn main() -> ExitCode {
    // `harness proxy` is a server: its options also come from `OTKV_PROXY_*` variables and `--config`.
    let parsed =
        match config::parse_command_line(Cli::command(), Some("proxy"), "OTKV_PROXY_", "harness proxy") {
            Ok(parsed) => parsed,
            Err(status) => return ExitCode::from(status),
        };
    let cli = Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    parsed.remember();
    match otkv_harness::cli::execute(cli) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("harness: {e}");
            ExitCode::from(2)
        }
    }
}
