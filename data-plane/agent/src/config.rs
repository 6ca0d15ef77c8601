//! Typed agent configuration: flags with `SLUICE_AGENT_*` / `SLUICE_*`
//! environment fallbacks, validated at start-up.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// gRPC URL of the control plane.
    #[arg(
        long,
        env = "SLUICE_CONTROL_PLANE",
        default_value = "https://127.0.0.1:8443"
    )]
    pub control_plane: String,
    /// One-time join token (only needed until the agent is enrolled).
    #[arg(long, env = "SLUICE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Directory for the agent's key, certificate, snapshot cache and audit spool.
    #[arg(long, env = "SLUICE_AGENT_STATE_DIR", default_value = ".sluice/agent")]
    pub state_dir: PathBuf,
    /// Address of the status endpoint (/status, /metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "SLUICE_AGENT_STATUS_ADDR",
        default_value = "127.0.0.1:9190"
    )]
    pub status_addr: SocketAddr,
    /// PostgreSQL listener address.
    #[arg(
        long,
        env = "SLUICE_AGENT_POSTGRES_ADDR",
        default_value = "127.0.0.1:15432"
    )]
    pub postgres_addr: SocketAddr,
    /// Longest time to keep enforcing a snapshot without contact with the
    /// control plane (the snapshot's own setting wins when shorter).
    #[arg(long, env = "SLUICE_AGENT_MAX_STALENESS", default_value = "24h", value_parser = humantime::parse_duration)]
    pub max_staleness: Duration,
    /// Maximum size of the on-disk audit spool; when full, new sessions and
    /// statements are refused. Statements already running may take it past
    /// the limit by one record each (see docs/recording.md).
    #[arg(long, env = "SLUICE_AGENT_SPOOL_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub spool_max_bytes: u64,
    /// When audit events reach the disk: `batch` (written before a statement
    /// is forwarded, fsynced every --audit-sync-interval; survives the agent
    /// being killed) or `always` (fsynced before forwarding; survives power
    /// loss, at the cost of a disk flush on every statement's path).
    #[arg(
        long,
        env = "SLUICE_AGENT_AUDIT_SYNC",
        value_enum,
        default_value = "batch"
    )]
    pub audit_sync: crate::audit::AuditSync,
    /// Longest time audit events wait for an fsync in `batch` mode.
    #[arg(long, env = "SLUICE_AGENT_AUDIT_SYNC_INTERVAL", default_value = "5ms", value_parser = humantime::parse_duration)]
    pub audit_sync_interval: Duration,
    /// Time allowed for a client to finish the PostgreSQL start-up handshake.
    #[arg(long, env = "SLUICE_AGENT_STARTUP_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
    /// Most connections from one client address that may be in the
    /// start-up handshake at once (not yet authenticated): connections
    /// that never log in hold a slot of `--max-connections` until
    /// `--startup-timeout`, and this keeps one address from taking them
    /// all. IPv6 addresses count by their /64. Connections that logged in
    /// do not count.
    #[arg(
        long,
        env = "SLUICE_AGENT_MAX_STARTUPS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_startups_per_address: usize,
    /// Host names and IPs clients use to reach this agent (its certificate's names).
    #[arg(
        long,
        env = "SLUICE_AGENT_TLS_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1"
    )]
    pub tls_hosts: Vec<String>,
    /// Serve client TLS with this certificate chain (PEM) instead of the enrolled one.
    #[arg(long, env = "SLUICE_AGENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "SLUICE_AGENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept unencrypted client connections from non-loopback addresses.
    /// Tokens travel as passwords: leave this off unless the network is trusted.
    #[arg(long, env = "SLUICE_AGENT_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
    /// How long a read of a target's catalog (its own functions and
    /// operators, for judging statements; its columns, for masking) is
    /// used. A session's statement in its last quarter (at most 15 s) has
    /// it read again in the background, so busy sessions do not wait for
    /// the read. A DDL statement through this agent makes it read again at
    /// once; a function created on the target by other means is seen
    /// within this time.
    #[arg(long, env = "SLUICE_AGENT_CATALOG_MAX_AGE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub catalog_max_age: Duration,
    /// How often the agent checks, on each target it listens to for DDL
    /// notices (docs/ddl-notices.sql), that the event trigger sending them
    /// is still installed and enabled, and that the resource is served as
    /// it was.
    #[arg(long, env = "SLUICE_AGENT_DDL_NOTICES_RECHECK", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ddl_notices_recheck: Duration,
    /// Client sessions idle (no request in flight, or a COPY FROM STDIN
    /// waiting for data the client does not send) for longer are closed.
    #[arg(long, env = "SLUICE_AGENT_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// On SIGTERM or Ctrl-C: how long live sessions get to finish their
    /// transactions. New connections are refused at once, each session
    /// ends (SQLSTATE 57P01) as soon as it is between transactions, and
    /// those still in one when this runs out are ended there (the target
    /// rolls them back). A second signal stops at once.
    #[arg(long, env = "SLUICE_AGENT_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Most client connections the agent serves at once.
    #[arg(long, env = "SLUICE_AGENT_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Most client connections one subject may hold at once.
    #[arg(
        long,
        env = "SLUICE_AGENT_MAX_CONNECTIONS_PER_SUBJECT",
        default_value_t = 256
    )]
    pub max_connections_per_subject: usize,
    /// Largest single protocol message accepted from a client or target.
    #[arg(long, env = "SLUICE_AGENT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: u32,
    /// Memory all of one subject's connections together may hold for client
    /// messages over 1 MiB that are still arriving (each is buffered whole
    /// before it is judged), and for extended-protocol batches over 1 MiB
    /// held until their Sync; a message that would pass it ends its session
    /// with SQLSTATE 53200, and the subject's other sessions go on.
    #[arg(long, env = "SLUICE_AGENT_MAX_SUBJECT_RECEIVE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_subject_receive_bytes: usize,
    /// The same for all sessions of every subject together: the agent's
    /// ceiling for large messages still arriving. Each subject's own limit
    /// keeps any one of them from taking all of it.
    #[arg(long, env = "SLUICE_AGENT_MAX_RECEIVE_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_receive_bytes: usize,
    /// Agent memory one session may hold for its client's named prepared
    /// statements and portals (their text, parameters and bookkeeping; the
    /// unnamed ones are not counted); a Parse, Bind or SQL PREPARE beyond
    /// it is refused with SQLSTATE 54000.
    #[arg(long, env = "SLUICE_AGENT_MAX_PREPARED_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_prepared_bytes: usize,
    /// The same, for all of one subject's sessions together (a subject may
    /// hold many connections); beyond it, refused with 54000 in whichever
    /// session asks.
    #[arg(long, env = "SLUICE_AGENT_MAX_SUBJECT_PREPARED_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_subject_prepared_bytes: usize,
    /// The same, for all sessions of every subject together: the agent's
    /// ceiling for prepared statements and portals. Each subject's own
    /// limit keeps any one of them from taking all of it.
    #[arg(long, env = "SLUICE_AGENT_MAX_TOTAL_PREPARED_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_total_prepared_bytes: usize,
    /// Result rows recorded per statement in the session record (0: none).
    #[arg(long, env = "SLUICE_AGENT_RECORD_ROWS", default_value_t = 100)]
    pub record_rows: usize,
    /// Bytes of result values recorded per statement (at most 1 MiB).
    #[arg(long, env = "SLUICE_AGENT_RECORD_STATEMENT_BYTES", default_value_t = 64 * 1024)]
    pub record_statement_bytes: usize,
    /// Bytes of result values recorded per session, over all statements.
    #[arg(long, env = "SLUICE_AGENT_RECORD_SESSION_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub record_session_bytes: usize,
}

impl AgentArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        let url: http::Uri = self.control_plane.parse().map_err(|_| {
            anyhow::anyhow!(
                "SLUICE_CONTROL_PLANE: `{}` is not a URL",
                self.control_plane
            )
        })?;
        if url.scheme_str() != Some("https") || url.host().is_none() {
            anyhow::bail!(
                "SLUICE_CONTROL_PLANE: must be an https:// URL with a host, like https://127.0.0.1:8443"
            );
        }
        if self.max_connections == 0
            || self.max_connections_per_subject == 0
            || self.max_startups_per_address == 0
        {
            anyhow::bail!(
                "SLUICE_AGENT_MAX_CONNECTIONS, SLUICE_AGENT_MAX_CONNECTIONS_PER_SUBJECT and SLUICE_AGENT_MAX_STARTUPS_PER_ADDRESS must be at least 1"
            );
        }
        if self.max_message_bytes < 64 * 1024 {
            anyhow::bail!("SLUICE_AGENT_MAX_MESSAGE_BYTES must be at least 65536");
        }
        if self.record_statement_bytes > 1024 * 1024 {
            // A statement's event, result rows included, must fit a spool
            // record (4 MiB) with its clipped text and parameters.
            anyhow::bail!("SLUICE_AGENT_RECORD_STATEMENT_BYTES must be at most 1048576");
        }
        if self.max_staleness.is_zero() {
            anyhow::bail!("SLUICE_AGENT_MAX_STALENESS: must be greater than zero");
        }
        if self.ddl_notices_recheck.is_zero() {
            anyhow::bail!("SLUICE_AGENT_DDL_NOTICES_RECHECK: must be greater than zero");
        }
        Ok(())
    }

    /// Host and port of the control plane, for the enrollment probe.
    pub fn control_plane_host_port(&self) -> anyhow::Result<(String, u16)> {
        let url: http::Uri = self.control_plane.parse()?;
        let host = url
            .host()
            .ok_or_else(|| anyhow::anyhow!("control plane URL has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok((host, url.port_u16().unwrap_or(443)))
    }
}
