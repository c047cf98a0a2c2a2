//! `harness`: start OTKV nodes, route keys across them, drive load, report. See `harness --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = otkv_harness::cli::Cli::parse();
    match otkv_harness::cli::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harness: {e}");
            ExitCode::from(2)
        }
    }
}
