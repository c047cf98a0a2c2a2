//! `harness`: start OTKV nodes, route keys across them, drive load, report. See `harness --help`.
//!
//! Exit statuses: 0 a good run; 1 a run with errors over `--max-error-rate`, or a node that exited; 2 bad
//! options or settings (nothing was run); 128 + N interrupted by signal N (130 SIGINT, 143 SIGTERM; the
//! results cover what was measured); 141 stdout closed.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = otkv_harness::cli::Cli::parse();
    match otkv_harness::cli::execute(cli) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("harness: {e}");
            ExitCode::from(2)
        }
    }
}
