//! `harness`: start OTKV nodes, route keys across them, drive load, report. See `harness --help`.
//!
//! Exit statuses: 0 a good run; 1 a run with errors over `--max-error-rate`, or a node that exited; 2 bad
//! options or settings (nothing was run); 128 + N interrupted by signal N (130 SIGINT, 143 SIGTERM; the
//! results cover what was measured); 141 stdout closed.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use otkv_adapter_http::config::{self, ParseError};
use otkv_harness::cli::Cli;

fn main() -> ExitCode {
    // `harness proxy` is a server: its options also come from `OTKV_PROXY_*` variables and `--config`.
    let parsed =
        match config::parse(Cli::command(), Some("proxy"), "OTKV_PROXY_", std::env::args_os().collect()) {
            Ok(parsed) => parsed,
            Err(ParseError::Clap(e)) => e.exit(),
            Err(ParseError::Config(e)) => {
                eprintln!("harness proxy: {e}");
                return ExitCode::from(2);
            }
        };
    let cli = match Cli::from_arg_matches(&parsed.matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if parsed.print_config() {
        print!("{}", parsed.describe());
        return ExitCode::SUCCESS;
    }
    parsed.remember();
    match otkv_harness::cli::execute(cli) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("harness: {e}");
            ExitCode::from(2)
        }
    }
}
