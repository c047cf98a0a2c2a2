//! `otkv-server`: one OTKV node. See `otkv-server --help` and docs/operations.md.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use otkv_adapter_http::config::{self, ParseError};

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
    let parsed = match config::parse(Cli::command(), None, "OTKV_", std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::Config(e)) => {
            eprintln!("otkv-server: {e}");
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
