//! `sluice-agent`: the data-plane agent.

use clap::{Parser, Subcommand};
use sluice_agent::config::AgentArgs;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "sluice-agent", version, about = "The Sluice data-plane agent")]
struct Cli {
    /// Log format: text or json.
    #[arg(long, env = "SLUICE_LOG_FORMAT", default_value = "text", global = true)]
    log_format: sluice_telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll (with --join-token, the first time) and run.
    Run(AgentArgs),
    /// Measure masking throughput on this machine (used by `make bench`):
    /// rewrites synthetic 5-column DataRows with two masked columns and
    /// detectors on, and prints MB/s on one core.
    #[command(hide = true)]
    BenchMasking {
        /// Rows per result.
        #[arg(long, default_value_t = 1000)]
        rows: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _telemetry = sluice_telemetry::init("sluice-agent", cli.log_format)?;
        match cli.command {
            Command::Run(args) => {
                sluice_agent::run(args, shutdown_signal(), async {
                    shutdown_signal().await;
                })
                .await
            }
            Command::BenchMasking { rows, seconds } => {
                let (bytes, secs) = sluice_agent::postgres::masking_throughput(
                    rows,
                    std::time::Duration::from_secs_f64(seconds),
                );
                println!(
                    "{:.1} MB/s ({bytes} bytes of DataRow in {secs:.2} s, one core)",
                    bytes as f64 / secs / 1e6
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
