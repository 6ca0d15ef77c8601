//! `sluice`: the command-line client for the Sluice control plane.
//!
//! Talks only to the control plane's REST API (`docs/api.md`); it never
//! connects to agents or resources, and never prints the bearer token or a
//! credential secret. `main` stays thin: parse, run, turn errors into
//! `error: ...` on stderr and exit code 1.

mod auth;
mod cli;
mod client;
mod commands;
mod output;
mod secret;
mod table;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    client::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // `sluice audit tail | head`: the reader left, which is not a failure.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
