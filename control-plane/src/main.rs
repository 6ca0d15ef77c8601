//! `sluice-control-plane`: serve the control plane, or run an offline
//! maintenance command against its database and master key.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_control_plane::{
    ControlPlane,
    config::{CommonArgs, ServeArgs},
    identity::TokenRequest,
    vault::MasterKey,
};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-control-plane",
    version,
    about = "The Sluice control plane"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Log format: text or json.
    #[arg(long, env = "SLUICE_LOG_FORMAT", default_value = "text", global = true)]
    log_format: sluice_telemetry::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane (the default).
    Serve(ServeArgs),
    /// Mint a token with the built-in issuer, reading the database and
    /// master key directly (bootstrap: how the first admin gets a token).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Re-wrap every data key under a new master key, in one transaction.
    /// Afterwards, start the control plane with the new key.
    RotateMasterKey {
        /// File holding the new key (base64 or hex of 32 bytes). Created with a fresh key if missing.
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Print the CA certificate agents pin (PEM) and its SHA-256 fingerprint.
    Ca,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    Issue {
        #[arg(long)]
        subject: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long)]
        service_account: bool,
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
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _telemetry = sluice_telemetry::init("sluice-control-plane", cli.log_format)?;
    match cli.command {
        None => {
            sluice_control_plane::serve(cli.common, default_serve_args(), shutdown_signal()).await
        }
        Some(Command::Serve(args)) => {
            sluice_control_plane::serve(cli.common, args, shutdown_signal()).await
        }
        Some(Command::Token {
            command:
                TokenCommand::Issue {
                    subject,
                    groups,
                    roles,
                    ttl,
                    service_account,
                },
        }) => {
            let cp = ControlPlane::open(&cli.common, Duration::from_secs(0)).await?;
            let (token, _) = cp.identity.issue(&TokenRequest {
                subject,
                groups,
                roles,
                ttl,
                service_account,
            })?;
            println!("{token}");
            cp.store.close().await;
            Ok(())
        }
        Some(Command::RotateMasterKey { new_key_file }) => {
            rotate_master_key(&cli.common, &new_key_file).await
        }
        Some(Command::Ca) => {
            let cp = ControlPlane::open(&cli.common, Duration::from_secs(0)).await?;
            print!("{}", cp.keys.ca.cert_pem());
            eprintln!("sha256 fingerprint: {}", cp.keys.ca.fingerprint());
            cp.store.close().await;
            Ok(())
        }
    }
}

fn default_serve_args() -> ServeArgs {
    // Parse an empty `serve` so defaults and SLUICE_* variables apply.
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }
    Wrapper::parse_from(["serve"]).args
}

async fn rotate_master_key(
    common: &CommonArgs,
    new_key_file: &std::path::Path,
) -> anyhow::Result<()> {
    let new_key = if new_key_file.exists() {
        MasterKey::from_file(new_key_file)?
    } else {
        MasterKey::generate_file(new_key_file)?
    };
    let cp = ControlPlane::open(common, Duration::from_secs(0)).await?;
    if new_key.id() == cp.vault.key_id() {
        anyhow::bail!("the new key is the key already in use; nothing to rotate");
    }
    let count = cp
        .store
        .rewrap_all(|label, sealed| {
            cp.vault
                .rewrap(label, sealed, &new_key)
                .map_err(|e| e.to_string())
        })
        .await
        .context("rotation failed; nothing was changed")?;
    cp.store.close().await;
    println!(
        "re-wrapped {count} data keys under master key {}. Start the control plane with SLUICE_MASTER_KEY_FILE={} from now on; the old key no longer opens anything.",
        new_key.id(),
        new_key_file.display()
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
