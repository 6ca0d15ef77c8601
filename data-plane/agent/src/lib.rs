//! The Sluice data-plane agent.
//!
//! Enrolls with the control plane, holds its signed policy snapshot, and
//! enforces it locally on every client connection: no round trip to the
//! control plane on a client's path. Audit events go to a durable spool
//! first and reach the control plane when it is reachable.
//!
//! It must never serve a client without a valid snapshot, never let a
//! credential reach a client or a log, and never let work proceed whose
//! audit event could not be spooled.

pub mod approvals;
pub mod audit;
pub mod channel;
pub mod config;
pub mod enroll;
mod fsutil;
pub mod metrics;
pub mod postgres;
pub mod sessions;
pub mod snapshot;
pub mod status;
mod tls;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use sluice_proto as pb;
use tokio::sync::watch;

use crate::{
    audit::AuditLog,
    config::AgentArgs,
    enroll::{Enrolled, StatePaths},
    metrics::Metrics,
    snapshot::{Active, SnapshotRx, State},
    status::LinkStatus,
};

pub struct Agent {
    pub args: AgentArgs,
    pub paths: StatePaths,
    pub enrolled: Enrolled,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub status: LinkStatus,
    snapshot_tx: watch::Sender<Option<Arc<Active>>>,
    pub snapshot_rx: SnapshotRx,
    state: Mutex<State>,
    confirmed_at: AtomicU64,
    cache_written_at: AtomicU64,
    last_signed: Mutex<Option<pb::SignedSnapshot>>,
    pub pg_cancel: postgres::CancelRegistry,
    /// Target catalogs for masking by column origin.
    pub pg_catalogs: postgres::CatalogCache<postgres::Catalog>,
    /// Targets' own functions and operators, for judging statements.
    pub pg_routines: postgres::CatalogCache<postgres::Routines>,
    /// Connections listening for targets' notices of DDL run on them.
    pub pg_ddl_watches: postgres::DdlWatches,
    /// Masking `hash` key for resources whose snapshot carries none.
    pub local_mask_key: Vec<u8>,
    /// TLS for client connections (None: plaintext only).
    pub pg_tls: Option<tokio_rustls::TlsAcceptor>,
    subject_connections: Mutex<std::collections::HashMap<String, SubjectUse>>,
    /// Connections per client network (see [`client_network`]) still in
    /// the start-up handshake (`--max-startups-per-address`).
    startups: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Client sessions per resource, for the resource's own limits.
    resource_connections: Mutex<std::collections::HashMap<String, ResourceUse>>,
    /// Bytes of large messages still arriving for all sessions (see
    /// [`ReceiveCharge`]).
    receiving: Arc<AtomicUsize>,
    /// Bytes all sessions' prepared statements and portals hold
    /// (`--max-total-prepared-bytes`).
    prepared: Arc<AtomicUsize>,
    /// Live client sessions (to end them on request or revocation).
    pub sessions: Arc<sessions::LiveSessions>,
    /// Approval requests in flight and one-time grants.
    pub approvals: approvals::Approvals,
}

/// What one subject's connections use of the agent's shared limits.
#[derive(Default)]
struct SubjectUse {
    connections: usize,
    /// Bytes of large messages still arriving for its sessions (see
    /// [`ReceiveCharge`]).
    receiving: Arc<AtomicUsize>,
    /// Bytes its sessions' prepared statements and portals hold.
    prepared: Arc<AtomicUsize>,
}

/// Client sessions on one resource's target, in all and by subject.
#[derive(Default)]
struct ResourceUse {
    connections: u32,
    by_subject: std::collections::HashMap<String, u32>,
}

/// Why a resource has no room for another session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceFull {
    /// Its `max_connections`, over all subjects.
    All(u32),
    /// Its `max_connections_per_subject`.
    Subject(u32),
}

/// A session counted against its resource's limits; released on drop.
pub struct ResourceSlot<'a> {
    agent: &'a Agent,
    resource: String,
    subject: String,
}

impl Drop for ResourceSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .agent
            .resource_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(u) = counts.get_mut(&self.resource) {
            u.connections = u.connections.saturating_sub(1);
            if let Some(n) = u.by_subject.get_mut(&self.subject) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    u.by_subject.remove(&self.subject);
                }
            }
            if u.connections == 0 {
                counts.remove(&self.resource);
            }
        }
    }
}

/// A connection counted against its subject's limit; released on drop.
pub struct SubjectSlot<'a> {
    agent: &'a Agent,
    subject: String,
    receiving: Arc<AtomicUsize>,
    prepared: Arc<AtomicUsize>,
}

impl SubjectSlot<'_> {
    /// This connection's share of what its subject's connections may hold
    /// for large messages still arriving (`--max-subject-receive-bytes`),
    /// and of what all the agent's connections may (`--max-receive-bytes`).
    pub fn receive_charge(&self) -> ReceiveCharge {
        ReceiveCharge {
            subject: Allowance {
                used: Arc::clone(&self.receiving),
                limit: self.agent.args.max_subject_receive_bytes,
            },
            agent: Allowance {
                used: Arc::clone(&self.agent.receiving),
                limit: self.agent.args.max_receive_bytes,
            },
            held: 0,
        }
    }

    /// What all the subject's sessions' prepared statements and portals
    /// hold (`--max-subject-prepared-bytes`).
    pub fn prepared(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.prepared)
    }
}

/// A connection in its start-up handshake, counted against its client
/// network until dropped.
pub struct StartupSlot {
    agent: Arc<Agent>,
    address: std::net::IpAddr,
}

/// Runs `work`, which takes a while (scanning a large row, waiting for the
/// disk), with the runtime told that this worker is busy, so the other
/// sessions' tasks move to another thread instead of waiting behind it.
/// Outside a multi-threaded runtime it just runs.
pub fn off_worker<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// What `--max-startups-per-address` counts a client address against: an
/// IPv4 address on its own (also when it arrives IPv4-mapped on an IPv6
/// socket), an IPv6 address as its /64. One IPv6 host is usually handed a
/// whole /64, so counting single IPv6 addresses would let it take every
/// start-up slot by cycling through its own addresses.
pub fn client_network(address: std::net::IpAddr) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V4(_) => address,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// How a client network reads in messages: `192.0.2.7`, `2001:db8::/64`.
pub fn describe_client_network(address: std::net::IpAddr) -> String {
    match client_network(address) {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

impl Drop for StartupSlot {
    fn drop(&mut self) {
        let mut counts = self
            .agent
            .startups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

impl Drop for SubjectSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .agent
            .subject_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(u) = counts.get_mut(&self.subject) {
            u.connections = u.connections.saturating_sub(1);
            if u.connections == 0 {
                counts.remove(&self.subject);
            }
        }
    }
}

/// Messages larger than this, from a client or from the target for it, are
/// counted while they arrive against the subject's
/// `--max-subject-receive-bytes` and the agent's `--max-receive-bytes`: a
/// message is buffered whole before it is judged (or masked), and neither
/// one subject's many connections nor many subjects together may fill the
/// agent's memory that way.
pub const LARGE_MESSAGE: usize = 1024 * 1024;

/// Bytes counted against a limit shared by many sessions.
struct Allowance {
    used: Arc<AtomicUsize>,
    limit: usize,
}

impl Allowance {
    /// Takes `n` bytes; `Err` with what the others hold when that would
    /// pass the limit.
    fn take(&self, n: usize) -> Result<(), usize> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .map(drop)
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Which shared limit a large message would pass.
#[derive(Debug, PartialEq, Eq)]
pub enum OverLimit {
    /// `--max-subject-receive-bytes`: the subject's other sessions hold
    /// `others` bytes.
    Subject { others: usize, limit: usize },
    /// `--max-receive-bytes`: all the agent's other sessions hold `others`.
    Agent { others: usize, limit: usize },
}

/// The bytes one session holds of its subject's and of the agent's
/// allowances for large messages still arriving; given back when it holds
/// another amount or is dropped.
pub struct ReceiveCharge {
    subject: Allowance,
    agent: Allowance,
    held: usize,
}

impl ReceiveCharge {
    /// Holds `n` bytes instead of what it held; when `n` would pass either
    /// limit, holds nothing and says which.
    pub fn hold(&mut self, n: usize) -> Result<(), OverLimit> {
        if n == self.held {
            return Ok(());
        }
        self.release();
        if n == 0 {
            return Ok(());
        }
        self.subject.take(n).map_err(|others| OverLimit::Subject {
            others,
            limit: self.subject.limit,
        })?;
        if let Err(others) = self.agent.take(n) {
            self.subject.give(n);
            return Err(OverLimit::Agent {
                others,
                limit: self.agent.limit,
            });
        }
        self.held = n;
        Ok(())
    }

    fn release(&mut self) {
        if self.held > 0 {
            self.subject.give(self.held);
            self.agent.give(self.held);
            self.held = 0;
        }
    }
}

impl Drop for ReceiveCharge {
    fn drop(&mut self) {
        self.release();
    }
}

/// How often the cache's "confirmed at" time is refreshed on disk.
const CACHE_REFRESH: Duration = Duration::from_secs(30);

impl Agent {
    fn new(
        args: AgentArgs,
        paths: StatePaths,
        enrolled: Enrolled,
        audit: AuditLog,
        pg_tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let (snapshot_tx, snapshot_rx) = watch::channel(None);
        let catalog_max_age = args.catalog_max_age;
        Self {
            args,
            paths,
            enrolled,
            audit,
            metrics: Metrics::default(),
            status: LinkStatus::default(),
            snapshot_tx,
            snapshot_rx,
            state: Mutex::new(State::None(
                "no snapshot received from the control plane yet".into(),
            )),
            confirmed_at: AtomicU64::new(0),
            cache_written_at: AtomicU64::new(0),
            last_signed: Mutex::new(None),
            pg_cancel: postgres::CancelRegistry::default(),
            pg_catalogs: postgres::CatalogCache::new(catalog_max_age),
            pg_routines: postgres::CatalogCache::new(catalog_max_age),
            pg_ddl_watches: postgres::DdlWatches::default(),
            local_mask_key: {
                use ring::rand::SecureRandom as _;
                let mut key = vec![0u8; 32];
                let _ = ring::rand::SystemRandom::new().fill(&mut key);
                key
            },
            pg_tls,
            subject_connections: Mutex::new(std::collections::HashMap::new()),
            startups: Mutex::new(std::collections::HashMap::new()),
            resource_connections: Mutex::new(std::collections::HashMap::new()),
            receiving: Arc::default(),
            prepared: Arc::default(),
            sessions: Arc::default(),
            approvals: approvals::Approvals::default(),
        }
    }

    /// What all sessions' prepared statements and portals hold
    /// (`--max-total-prepared-bytes`).
    pub fn prepared(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.prepared)
    }

    /// Counts a connection from `address` in its start-up handshake, unless
    /// its client network ([`client_network`]) is at
    /// `--max-startups-per-address`.
    pub fn claim_startup_slot(self: &Arc<Self>, address: std::net::IpAddr) -> Option<StartupSlot> {
        let address = client_network(address);
        let mut counts = self.startups.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(address).or_default();
        if *n >= self.args.max_startups_per_address {
            return None;
        }
        *n += 1;
        Some(StartupSlot {
            agent: Arc::clone(self),
            address,
        })
    }

    /// Counts a connection of `subject`, unless it is at its limit.
    pub fn claim_subject_slot(&self, subject: &str) -> Option<SubjectSlot<'_>> {
        let mut counts = self
            .subject_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let u = counts.entry(subject.to_owned()).or_default();
        if u.connections >= self.args.max_connections_per_subject {
            return None;
        }
        u.connections += 1;
        Some(SubjectSlot {
            agent: self,
            subject: subject.to_owned(),
            receiving: Arc::clone(&u.receiving),
            prepared: Arc::clone(&u.prepared),
        })
    }

    /// Counts a session of `subject` on `resource`, unless the resource's
    /// own limits (`max_connections`, `max_connections_per_subject`; 0 for
    /// none) leave no room. Each session is one connection to the target,
    /// so these keep one client from taking all of the target's.
    pub fn claim_resource_slot(
        &self,
        resource: &pb::Resource,
        subject: &str,
    ) -> Result<ResourceSlot<'_>, ResourceFull> {
        let mut counts = self
            .resource_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let u = counts.entry(resource.name.clone()).or_default();
        let all = resource.max_connections;
        if all > 0 && u.connections >= all {
            return Err(ResourceFull::All(all));
        }
        let each = resource.max_connections_per_subject;
        let mine = u.by_subject.get(subject).copied().unwrap_or(0);
        if each > 0 && mine >= each {
            return Err(ResourceFull::Subject(each));
        }
        u.connections += 1;
        *u.by_subject.entry(subject.to_owned()).or_default() += 1;
        Ok(ResourceSlot {
            agent: self,
            resource: resource.name.clone(),
            subject: subject.to_owned(),
        })
    }

    pub fn snapshot_state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_state(&self, state: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Version of the snapshot being enforced; 0 when none (or stale), so
    /// the control plane resends one.
    pub fn current_version(&self) -> u64 {
        match self.snapshot_state() {
            State::Valid(v) => v,
            _ => 0,
        }
    }

    pub fn confirmed_at_ms(&self) -> u64 {
        self.confirmed_at.load(Ordering::SeqCst)
    }

    fn publish(&self, active: Option<Active>) {
        let version = active.as_ref().map(|a| a.version).unwrap_or(0);
        self.metrics
            .snapshot_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.snapshot_tx.send_replace(active.map(Arc::new));
    }

    /// Verifies and installs a snapshot from the control plane. An invalid
    /// snapshot replaces the current one with nothing: deny everything
    /// rather than keep enforcing something the control plane has moved on
    /// from.
    pub fn apply_snapshot(&self, signed: &pb::SignedSnapshot) {
        let identity = &self.enrolled.identity;
        match snapshot::verify(
            signed,
            &identity.snapshot_keys,
            &identity.agent_name,
            self.args.max_staleness,
        ) {
            Ok(active) => {
                let version = active.version;
                let now = snapshot::now_ms();
                self.confirmed_at.store(now, Ordering::SeqCst);
                if let Err(e) =
                    snapshot::write_cache(&self.paths.snapshot, &self.enrolled.key_pem, signed, now)
                {
                    tracing::warn!(error = %format!("{e:#}"), "cannot cache the snapshot on disk; a restart without the control plane would refuse clients");
                } else {
                    self.cache_written_at.store(now, Ordering::SeqCst);
                }
                *self.last_signed.lock().unwrap_or_else(|e| e.into_inner()) = Some(signed.clone());
                tracing::info!(
                    version,
                    resources = active.resources.len(),
                    "policy snapshot applied"
                );
                // Published before live sessions are checked against it: a
                // session that registers meanwhile checks itself against
                // this snapshot (`LiveSessions::recheck`), so none is missed.
                self.publish(Some(active));
                let current = self.snapshot_rx.borrow().clone();
                let ended = current.map_or(0, |a| self.sessions.revoke(&a));
                if ended > 0 {
                    tracing::warn!(
                        version,
                        sessions = ended,
                        "ended sessions whose grant or mask rules the new policy changes"
                    );
                }
                self.set_state(State::Valid(version));
                self.metrics.snapshot_updates.inc();
            }
            Err(e) => {
                let reason = format!("snapshot from the control plane rejected: {e:#}");
                tracing::error!(error = %reason, "refusing every client until a valid snapshot arrives");
                self.publish(None);
                self.set_state(State::None(reason));
                self.metrics.snapshot_rejections.inc();
            }
        }
    }

    /// The control plane answered a heartbeat: the snapshot is current.
    pub fn confirm_snapshot(&self) {
        let now = snapshot::now_ms();
        self.confirmed_at.store(now, Ordering::SeqCst);
        let written = self.cache_written_at.load(Ordering::SeqCst);
        if now.saturating_sub(written)
            >= u64::try_from(CACHE_REFRESH.as_millis()).unwrap_or(u64::MAX)
            && let Some(signed) = self
                .last_signed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            && snapshot::write_cache(&self.paths.snapshot, &self.enrolled.key_pem, &signed, now)
                .is_ok()
        {
            self.cache_written_at.store(now, Ordering::SeqCst);
        }
    }

    /// Loads the cached snapshot at start-up. Any problem leaves the agent
    /// without a snapshot: it refuses clients until the control plane
    /// sends a fresh one.
    fn load_cache(&self) {
        if !self.paths.snapshot.exists() {
            return;
        }
        let identity = &self.enrolled.identity;
        let loaded = snapshot::read_cache(&self.paths.snapshot, &self.enrolled.key_pem).and_then(
            |(signed, confirmed)| {
                let active = snapshot::verify(
                    &signed,
                    &identity.snapshot_keys,
                    &identity.agent_name,
                    self.args.max_staleness,
                )?;
                Ok((signed, active, confirmed))
            },
        );
        match loaded {
            Ok((signed, active, confirmed)) => {
                let age = Duration::from_millis(snapshot::now_ms().saturating_sub(confirmed));
                if age > active.max_staleness {
                    tracing::error!(version = active.version, age = %humantime::format_duration(age), "cached snapshot is too stale to enforce; refusing clients until the control plane is reachable");
                    self.set_state(State::Stale(active.version));
                    return;
                }
                let version = active.version;
                self.confirmed_at.store(confirmed, Ordering::SeqCst);
                self.cache_written_at.store(confirmed, Ordering::SeqCst);
                *self.last_signed.lock().unwrap_or_else(|e| e.into_inner()) = Some(signed);
                self.publish(Some(active));
                self.set_state(State::Valid(version));
                tracing::info!(version, age = %humantime::format_duration(Duration::from_secs(age.as_secs())), "enforcing the cached snapshot");
            }
            Err(e) => {
                let reason = format!("cached snapshot unusable: {e:#}");
                tracing::error!(error = %reason, "refusing every client until the control plane sends a snapshot");
                self.set_state(State::None(reason));
            }
        }
    }

    /// Drops the snapshot once contact with the control plane has been
    /// lost for longer than allowed.
    async fn watch_staleness(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if self.status.connected() {
                continue;
            }
            let Some(active) = self.snapshot_rx.borrow().clone() else {
                continue;
            };
            let age =
                Duration::from_millis(snapshot::now_ms().saturating_sub(self.confirmed_at_ms()));
            if age > active.max_staleness {
                tracing::error!(
                    version = active.version,
                    "lost contact with the control plane for too long; refusing clients until it is back"
                );
                self.publish(None);
                self.set_state(State::Stale(active.version));
            }
        }
    }
}

/// Enrolls if needed, then runs the agent until `shutdown` resolves; then
/// drains (see [`Agent::drain`]) unless `stop_now` resolves first. Poll
/// `stop_now` only after `shutdown` (a second signal).
pub async fn run(
    args: AgentArgs,
    shutdown: impl std::future::Future<Output = ()>,
    stop_now: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    args.validate()?;
    // The state directory holds the agent's key and its audit spool
    // (statements and parameter values): the owner's only.
    let mut state_dir = std::fs::DirBuilder::new();
    state_dir.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut state_dir, 0o700);
    state_dir.create(&args.state_dir).with_context(|| {
        format!(
            "SLUICE_AGENT_STATE_DIR: cannot create {}",
            args.state_dir.display()
        )
    })?;
    // One made before (or by someone else) keeps its mode: say so.
    if let Ok(meta) = std::fs::metadata(&args.state_dir) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %args.state_dir.display(),
                mode = format!("{mode:o}"),
                "the state directory (the agent's key, its audit spool) is open to other users; chmod 700 it"
            );
        }
    }
    let paths = StatePaths::new(&args.state_dir);
    let enrolled = match Enrolled::load(&paths)? {
        Some(e) => {
            if args.join_token.is_some() {
                tracing::info!(agent = %e.identity.agent_name, "already enrolled; ignoring the join token");
            }
            e
        }
        None => {
            let token = args.join_token.clone().ok_or_else(|| {
                anyhow::anyhow!("this agent is not enrolled yet: pass --join-token (create one with `sluice join-token create --agent NAME`)")
            })?;
            let e = enroll::enroll(&args, &paths, &token).await?;
            tracing::info!(agent = %e.identity.agent_name, "enrolled with the control plane");
            e
        }
    };
    let audit = AuditLog::open(
        &paths.spool,
        args.spool_max_bytes,
        args.audit_sync,
        args.audit_sync_interval.max(Duration::from_millis(1)),
        enrolled.identity.agent_name.clone(),
    )
    .with_context(|| format!("cannot open the audit spool in {}", paths.spool.display()))?;

    let postgres = tokio::net::TcpListener::bind(args.postgres_addr)
        .await
        .with_context(|| {
            format!(
                "SLUICE_AGENT_POSTGRES_ADDR: cannot listen on {}",
                args.postgres_addr
            )
        })?;
    let status_listener = tokio::net::TcpListener::bind(args.status_addr)
        .await
        .with_context(|| {
            format!(
                "SLUICE_AGENT_STATUS_ADDR: cannot listen on {}",
                args.status_addr
            )
        })?;

    let pg_tls = match postgres::tls_acceptor(&args, &enrolled) {
        Ok(a) => Some(a),
        Err(e) if args.tls_cert.is_some() => return Err(e),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no TLS for clients: only loopback plaintext connections will be served");
            None
        }
    };
    let agent = Arc::new(Agent::new(args, paths, enrolled, audit, pg_tls));
    agent.load_cache();
    tracing::info!(
        agent = %agent.enrolled.identity.agent_name,
        postgres = %agent.args.postgres_addr,
        status = %agent.args.status_addr,
        control_plane = %agent.args.control_plane,
        "agent ready"
    );

    let listener = tokio::spawn(postgres::serve(agent.clone(), postgres));
    let tasks = [
        tokio::spawn(channel::run(agent.clone())),
        tokio::spawn(agent.clone().watch_staleness()),
        tokio::spawn({
            let agent = agent.clone();
            async move {
                if let Err(e) = axum::serve(status_listener, status::router(agent)).await {
                    tracing::error!(error = %e, "status endpoint failed");
                }
            }
        }),
    ];
    shutdown.await;
    // The listening socket closes with its task: new clients are refused
    // by the kernel and can go to another agent.
    listener.abort();
    tokio::select! {
        () = agent.drain() => {}
        () = stop_now => tracing::warn!(sessions = agent.sessions.len(), "stopping at once (second signal): live sessions are cut off"),
    }
    for t in &tasks {
        t.abort();
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// After live sessions ended: how long a draining agent waits for the
/// control plane to acknowledge the last audit events (those it does not
/// are delivered after the next start).
const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// After the grace period: how long ended sessions get to close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Agent {
    /// Shuts down without cutting anyone off mid-transaction: readiness
    /// turns false, each live session ends as soon as it is between
    /// transactions (57P01, with its end recorded), those still in one
    /// after `--shutdown-grace` are ended there; then the spool is synced
    /// and the last events are given [`DELIVERY_WAIT`] to reach the
    /// control plane.
    async fn drain(&self) {
        let grace = self.args.shutdown_grace;
        self.sessions.drain();
        if !self.sessions.is_empty() {
            tracing::info!(
                sessions = self.sessions.len(),
                grace = %humantime::format_duration(grace),
                "shutting down: new connections refused; each session ends when its transaction does (send the signal again to stop at once)"
            );
        }
        if !self.sessions_end_within(grace).await {
            let n = self.sessions.end_all(&format!(
                "{} (its transaction was still open after the agent's {} grace period, and is rolled back)",
                postgres::SHUTTING_DOWN,
                humantime::format_duration(grace)
            ));
            tracing::warn!(
                sessions = n,
                "grace period over: ending sessions still in a transaction"
            );
            if !self.sessions_end_within(CLOSE_WAIT).await {
                tracing::warn!(
                    sessions = self.sessions.len(),
                    "sessions did not close; stopping anyway"
                );
            }
        }
        if let Err(e) = self.audit.flush() {
            tracing::error!(error = %e, "cannot flush the audit spool");
        }
        let mut status = self.audit.status();
        let delivered = tokio::time::timeout(DELIVERY_WAIT, async {
            loop {
                if status.borrow_and_update().pending == 0 || !self.status.connected() {
                    return;
                }
                // Re-checked on every change, and every 100 ms for the link.
                let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
            }
        })
        .await;
        let pending = status.borrow().pending;
        if pending > 0 {
            tracing::warn!(
                events = pending,
                waited = delivered.is_ok(),
                "audit events not yet acknowledged by the control plane stay in the spool and are delivered after the next start"
            );
        }
    }

    /// Waits until no session is live, at most `limit`; whether none is.
    async fn sessions_end_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.sessions.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(subject: &Arc<AtomicUsize>, agent: &Arc<AtomicUsize>) -> ReceiveCharge {
        ReceiveCharge {
            subject: Allowance {
                used: Arc::clone(subject),
                limit: 10,
            },
            agent: Allowance {
                used: Arc::clone(agent),
                limit: 15,
            },
            held: 0,
        }
    }

    #[test]
    fn start_ups_count_against_an_ipv4_address_or_an_ipv6_64() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(client_network(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_network(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            client_network(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_network(ip("2001:db8:1:2::1")),
            client_network(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            "one /64, one count"
        );
        assert_ne!(
            client_network(ip("2001:db8:1:2::1")),
            client_network(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            describe_client_network(ip("2001:db8:1:2::9")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(describe_client_network(ip("::1")), "::/64");
        assert_eq!(describe_client_network(ip("::ffff:10.0.0.1")), "10.0.0.1");
    }

    #[test]
    fn sessions_of_one_subject_share_their_allowance_for_large_messages() {
        let (used, agent) = (Arc::default(), Arc::default());
        let (mut a, mut b) = (charge(&used, &agent), charge(&used, &agent));
        assert_eq!(a.hold(6), Ok(()));
        assert_eq!(
            b.hold(5),
            Err(OverLimit::Subject {
                others: 6,
                limit: 10
            }),
            "over the limit: refused, told what others hold"
        );
        assert_eq!(agent.load(Ordering::Acquire), 6, "a refusal holds nothing");
        assert_eq!(b.hold(4), Ok(()));
        // Holding another amount gives back the old one first.
        assert_eq!(a.hold(5), Ok(()));
        assert_eq!(used.load(Ordering::Acquire), 9);
        assert_eq!(a.hold(0), Ok(()));
        drop(b);
        assert_eq!(used.load(Ordering::Acquire), 0, "given back on drop");
        assert_eq!(agent.load(Ordering::Acquire), 0);
    }

    #[test]
    fn all_subjects_together_stay_within_the_agents_allowance() {
        let agent = Arc::default();
        let (alice, bob, carol): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
            Default::default();
        let (mut a, mut b, mut c) = (
            charge(&alice, &agent),
            charge(&bob, &agent),
            charge(&carol, &agent),
        );
        assert_eq!(a.hold(8), Ok(()));
        assert_eq!(b.hold(6), Ok(()));
        assert_eq!(
            c.hold(2),
            Err(OverLimit::Agent {
                others: 14,
                limit: 15
            }),
            "within carol's own limit, but not the agent's"
        );
        assert_eq!(
            carol.load(Ordering::Acquire),
            0,
            "the subject's share taken for it is given back"
        );
        assert_eq!(c.hold(1), Ok(()));
        drop(a);
        assert_eq!(c.hold(2), Ok(()), "room again once alice's is in");
        assert_eq!(agent.load(Ordering::Acquire), 8);
    }
}
