//! The Sluice control plane.
//!
//! Owns identity configuration, resources, the credential vault, policies
//! (validation, storage, per-agent compilation and signing), agent
//! enrollment and the audit trail. Serves the REST API and console over
//! HTTP and the agent service over mutually authenticated gRPC. Apart from
//! its database it is stateless, so replicas can share one PostgreSQL.
//!
//! It must never return a credential's secret through the API, log it, or
//! send it anywhere but to the agent that serves a resource using it.

pub mod api;
pub mod approvals;
pub mod commands;
pub mod config;
pub mod fanout;
pub mod grpc;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod recording;
pub mod registry;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod vault;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::{
    config::{CommonArgs, ServeArgs},
    identity::IdentityService,
    keys::Keys,
    metrics::Metrics,
    registry::AgentRegistry,
    store::{FsBlobStore, Store},
    vault::Vault,
};

/// Largest message accepted from an agent: an audit batch (4 MiB of spooled
/// records plus one of up to 4 MiB) with room to spare.
pub const MAX_AGENT_MESSAGE: usize = 16 * 1024 * 1024;

/// Shared state of one control plane replica.
pub struct ControlPlane {
    pub store: Store,
    pub vault: Vault,
    pub keys: Keys,
    pub identity: IdentityService,
    pub registry: AgentRegistry,
    pub approvals: approvals::Approvals,
    pub metrics: Metrics,
    /// Carries the latest configuration revision to every agent stream.
    pub changes: watch::Sender<u64>,
    /// Tells the other replicas what changed here.
    pub fanout: fanout::Fanout,
    /// Flips to true when the replica shuts down; agent streams end then,
    /// so graceful shutdown does not wait on them forever.
    pub stopping: watch::Sender<bool>,
    pub max_staleness: Duration,
}

/// Creates `dir` and missing parents, readable by the owner only (an
/// existing directory keeps its mode, with a warning when others may read
/// it).
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir)?.permissions()) & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{mode:o}"),
            "the data directory (audit trail, vault, keys) is open to other users; chmod 700 it"
        );
    }
    Ok(())
}

impl ControlPlane {
    /// Opens the database, the vault and the keys.
    pub async fn open(common: &CommonArgs, max_staleness: Duration) -> anyhow::Result<Arc<Self>> {
        let file_config = common.file_config()?;
        if common.uses_default_sqlite() {
            create_private_dir(&common.data_dir).with_context(|| {
                format!(
                    "SLUICE_DATA_DIR: cannot create {}",
                    common.data_dir.display()
                )
            })?;
            // The database holds the audit trail (statements, parameter
            // values): SQLite creates its file, and its journals after it,
            // with the umask's mode; create it private first.
            let db = common.data_dir.join("sluice.db");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&db) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", db.display()));
                }
            }
        }
        let master_key = common.master_key()?;
        let url = common.database_url();
        let blob_dir = common.blob_dir();
        create_private_dir(&blob_dir)
            .with_context(|| format!("SLUICE_BLOB_DIR: cannot create {}", blob_dir.display()))?;
        let threshold = common
            .blob_threshold
            .0
            .map(|t| usize::try_from(t).unwrap_or(usize::MAX));
        let store = Store::connect(&url)
            .await
            .with_context(|| format!("cannot open the database at {}", store::redact_url(&url)))?
            .with_blobs(Arc::new(FsBlobStore::new(blob_dir)), threshold);
        let vault = Vault::new(master_key);
        let (keys, issuer_key) = Keys::load_or_create(&store, &vault).await?;
        let identity = IdentityService::new(
            common.public_url(),
            issuer_key,
            file_config.admin_groups,
            file_config.issuers,
        )?;
        let revision = store.revision().await?;
        let (changes, _) = watch::channel(revision);
        let metrics = Metrics::default();
        let fanout = match store.engine() {
            store::Engine::Postgres => fanout::Fanout::start(store.clone(), &metrics),
            store::Engine::Sqlite => fanout::Fanout::disabled(),
        };
        Ok(Arc::new(Self {
            store,
            vault,
            keys,
            identity,
            registry: AgentRegistry::default(),
            approvals: approvals::Approvals::default(),
            metrics,
            changes,
            fanout,
            stopping: watch::channel(false).0,
            max_staleness,
        }))
    }

    /// Tells every agent, attached here or to another replica, that the
    /// configuration changed to `revision` through this replica.
    pub fn changed(&self, revision: u64) {
        self.notify_change(revision);
        self.fanout.emit(fanout::Change::Revision);
    }

    /// Tells every agent attached here that the configuration is now at
    /// `revision` (if that is newer than what they were told).
    pub fn notify_change(&self, revision: u64) {
        self.changes.send_if_modified(|current| {
            if revision > *current {
                *current = revision;
                true
            } else {
                false
            }
        });
    }
}

/// Runs the HTTP API and the agent gRPC service until `shutdown` resolves.
pub async fn serve(
    common: CommonArgs,
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cp = ControlPlane::open(&common, args.snapshot_max_staleness).await?;
    if let Some(url) = &args.approval_webhook_url {
        cp.approvals
            .set_webhook(approvals::Webhook {
                url: url.clone(),
                format: args.approval_webhook_format,
            })
            .context("SLUICE_APPROVAL_WEBHOOK_URL")?;
    }

    let http_listener = tokio::net::TcpListener::bind(common.http_addr)
        .await
        .with_context(|| format!("SLUICE_HTTP_ADDR: cannot listen on {}", common.http_addr))?;
    let grpc_listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("SLUICE_GRPC_ADDR: cannot listen on {}", args.grpc_addr))?;

    let server_cert = cp.keys.ca.issue_server_cert(&args.grpc_hosts)?;
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            format!("{}{}", server_cert.cert_pem, cp.keys.ca.cert_pem()),
            &server_cert.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(
            cp.keys.ca.cert_pem(),
        ))
        // Enrollment happens before the agent has a certificate; `Attach`
        // checks for one itself.
        .client_auth_optional(true);

    let stop_tx = cp.stopping.clone();
    let stop_rx = stop_tx.subscribe();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    // Changes made through other replicas arrive at once through the
    // database's notifications (PostgreSQL), and within a poll interval
    // when a notification is lost.
    if cp.store.engine() == store::Engine::Postgres {
        tokio::spawn(fanout::listen(
            cp.clone(),
            common.database_url(),
            stop_rx.clone(),
        ));
    }
    // Revision poller: also picks up anything else that bumps the revision.
    {
        let cp = cp.clone();
        let mut stop = stop_rx.clone();
        let every = args.ha_poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                match cp.store.revision().await {
                    Ok(rev) => cp.notify_change(rev),
                    Err(e) => tracing::warn!(error = %e, "cannot read configuration revision"),
                }
            }
        });
    }

    // Decisions and kills made through another replica reach the agents
    // attached to this one.
    tokio::spawn(commands::run_poller(
        cp.clone(),
        args.ha_poll_interval,
        stop_rx.clone(),
    ));

    // Approvals that lapse are expired (and audited) within seconds.
    tokio::spawn(approvals::run_sweeper(
        cp.clone(),
        Duration::from_secs(2),
        stop_rx.clone(),
    ));

    // Retention: at start, then periodically.
    tokio::spawn(retention::run(
        cp.clone(),
        args.retention.policy(),
        args.retention.retention_interval,
        stop_rx.clone(),
    ));

    // External issuers' keys: fetched now and refreshed for rotation.
    if cp.identity.has_externals() {
        let cp = cp.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            let every = cp
                .identity
                .refresh_interval()
                .unwrap_or(Duration::from_secs(300));
            loop {
                if cp.identity.refresh_external(&http).await {
                    match cp.store.touch_revision().await {
                        Ok(rev) => cp.changed(rev),
                        Err(e) => tracing::warn!(error = %e, "cannot record issuer key change"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    let grpc = {
        let mut stop = stop_rx.clone();
        // An agent's audit batch is at most 4 MiB of records plus one more
        // (the spool keeps records up to 4 MiB), framing aside: tonic's
        // default limit, 4 MiB, would refuse such a batch every time it
        // was sent, and delivery would never move past it.
        let svc = sluice_proto::agent_service_server::AgentServiceServer::new(
            grpc::AgentGrpc::new(cp.clone()),
        )
        .max_decoding_message_size(MAX_AGENT_MESSAGE);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        tonic::transport::Server::builder()
            .tls_config(tls)?
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            })
    };

    let http = {
        let mut stop = stop_rx.clone();
        let app = api::router(cp.clone());
        axum::serve(
            http_listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
    };

    tracing::info!(
        http = %common.http_addr,
        grpc = %args.grpc_addr,
        issuer = %cp.identity.issuer_url(),
        ca_fingerprint = %cp.keys.ca.fingerprint(),
        database = ?cp.store.engine(),
        "control plane ready"
    );
    let (grpc_result, http_result) = tokio::join!(grpc, http);
    grpc_result.context("gRPC server failed")?;
    http_result.context("HTTP server failed")?;
    cp.store.close().await;
    tracing::info!("control plane stopped");
    Ok(())
}
