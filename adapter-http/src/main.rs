//! `otkv-server`: one OTKV node. See `otkv-server --help` and docs/operations.md.

use std::process::ExitCode;

use clap::Parser;

/// One OTKV node: a key-value store served over HTTP/1.1.
#[derive(Debug, Parser)]
#[command(name = "otkv-server", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    server: otkv_adapter_http::ServerArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    otkv_adapter_http::init_logging();
    match otkv_adapter_http::run(cli.server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("otkv-server: {e}");
            ExitCode::from(2)
        }
    }
}
