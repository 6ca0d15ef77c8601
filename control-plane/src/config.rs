//! Typed configuration of the control plane: command-line flags with
//! `SLUICE_*` environment fallbacks, plus an optional TOML file for
//! structured settings (trusted external issuers). Validated at start-up;
//! errors name the key. Secrets (the master key) never live in this file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use serde::Deserialize;

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Directory for local state (SQLite database, generated master key).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = ".sluice/control-plane")]
    pub data_dir: PathBuf,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: SQLite in the data directory.
    #[arg(long, env = "SLUICE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the master (key-encryption) key. SLUICE_MASTER_KEY takes precedence.
    #[arg(long, env = "SLUICE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Optional TOML file with trusted external issuers and admin groups.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Public base URL of the HTTP API; the built-in issuer's `iss`.
    #[arg(long, env = "SLUICE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// HTTP listen address (REST API, console, metrics).
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Directory for recorded blobs (large result captures). Default: `blobs` in the data directory. Replicas sharing one database must share it too.
    #[arg(long, env = "SLUICE_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Event attributes larger than this are stored as a blob instead of in the database (e.g. 16KiB; `off`: never).
    #[arg(long, env = "SLUICE_BLOB_THRESHOLD", default_value = "16KiB", value_parser = parse_size_or_off)]
    pub blob_threshold: Limit<u64>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// gRPC listen address for agents (mTLS).
    #[arg(long, env = "SLUICE_GRPC_ADDR", default_value = "127.0.0.1:8443")]
    pub grpc_addr: SocketAddr,
    /// Host names and IPs for the gRPC server certificate (comma-separated).
    #[arg(
        long,
        env = "SLUICE_GRPC_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1"
    )]
    pub grpc_hosts: Vec<String>,
    /// How long agents may enforce a snapshot without reaching the control plane.
    #[arg(long, env = "SLUICE_SNAPSHOT_MAX_STALENESS", default_value = "24h", value_parser = humantime::parse_duration)]
    pub snapshot_max_staleness: Duration,
    /// URL that gets a POST for every new approval request (who, resource,
    /// statement, rule, reason; never a credential).
    #[arg(long, env = "SLUICE_APPROVAL_WEBHOOK_URL")]
    pub approval_webhook_url: Option<String>,
    /// Message format of the approval webhook.
    #[arg(
        long,
        env = "SLUICE_APPROVAL_WEBHOOK_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub approval_webhook_format: crate::approvals::WebhookFormat,
    /// How often a replica looks in the database for changes made through
    /// other replicas (a configuration revision, messages for its agents).
    /// On PostgreSQL replicas also notify each other at once; polling
    /// covers a notification lost while a listener reconnects.
    #[arg(long, env = "SLUICE_HA_POLL_INTERVAL", default_value = "2s", value_parser = parse_interval)]
    pub ha_poll_interval: Duration,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// Recording retention, enforced at start and then periodically.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Delete recorded sessions whose last event is older than this (e.g. 90d; `off` or 0: keep forever).
    #[arg(long, env = "SLUICE_RETENTION_MAX_AGE", default_value = "90d", value_parser = parse_duration_or_off)]
    pub retention_max_age: Limit<Duration>,
    /// Delete the oldest recorded sessions while the recording (event rows and blobs) exceeds this size (e.g. 50GiB; `off` or 0: no limit).
    #[arg(long, env = "SLUICE_RETENTION_MAX_BYTES", default_value = "off", value_parser = parse_size_or_off)]
    pub retention_max_bytes: Limit<u64>,
    /// How often retention is enforced.
    #[arg(long, env = "SLUICE_RETENTION_INTERVAL", default_value = "10m", value_parser = parse_interval)]
    pub retention_interval: Duration,
}

impl RetentionArgs {
    pub fn policy(&self) -> crate::store::RetentionPolicy {
        crate::store::RetentionPolicy {
            max_age: self.retention_max_age.0,
            max_bytes: self.retention_max_bytes.0,
        }
    }
}

/// A setting that can be turned off (`off` or `0`): `None` then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit<T>(pub Option<T>);

fn is_off(text: &str) -> bool {
    let t = text.trim();
    t.eq_ignore_ascii_case("off") || t == "0"
}

/// A duration (`90d`, `12h`), or `off`/`0` for none.
pub fn parse_duration_or_off(text: &str) -> Result<Limit<Duration>, String> {
    if is_off(text) {
        return Ok(Limit(None));
    }
    match humantime::parse_duration(text.trim()) {
        Ok(d) => Ok(Limit((!d.is_zero()).then_some(d))),
        Err(e) => Err(format!(
            "`{text}` is not a duration like 90d or 12h, or `off`: {e}"
        )),
    }
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err("must be at least 1s".to_owned()),
        Err(e) => Err(format!("`{text}` is not a duration like 10m: {e}")),
    }
}

/// A byte size: a number with an optional unit (`B`, `KB`/`MB`/`GB`/`TB`
/// in powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` in powers of 1024), or
/// `off`/`0` for none.
pub fn parse_size_or_off(text: &str) -> Result<Limit<u64>, String> {
    if is_off(text) {
        return Ok(Limit(None));
    }
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("`{text}` is not a size like 16KiB, 500MB or 1073741824, or `off`");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let size = n.checked_mul(factor).ok_or_else(bad)?;
    Ok(Limit((size > 0).then_some(size)))
}

/// Settings from the optional TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Groups (from any trusted issuer) whose members get the admin role.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    #[serde(default)]
    pub issuers: Vec<ExternalIssuerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuerConfig {
    /// Exact `iss` value; discovery is fetched from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub audiences: Vec<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Skip discovery and fetch keys from here.
    pub jwks_url: Option<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u32,
    /// How often keys are re-fetched (rotation), e.g. "5m".
    #[serde(default = "default_refresh", with = "humantime_serde_compat")]
    pub refresh: Duration,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_leeway() -> u32 {
    60
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

mod humantime_serde_compat {
    use serde::Deserialize as _;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("SLUICE_CONFIG: cannot read {}", path.display()))?;
        let cfg: Self = toml::from_str(&text)
            .with_context(|| format!("SLUICE_CONFIG: {} is invalid", path.display()))?;
        for (i, iss) in cfg.issuers.iter().enumerate() {
            if !(iss.issuer.starts_with("https://") || iss.issuer.starts_with("http://")) {
                bail!("SLUICE_CONFIG: issuers[{i}].issuer must be an http(s) URL");
            }
            if iss.audiences.is_empty() {
                bail!("SLUICE_CONFIG: issuers[{i}].audiences must name at least one audience");
            }
            if let Some(bad) = iss
                .algorithms
                .iter()
                .find(|a| a.starts_with("HS") || a.eq_ignore_ascii_case("none"))
            {
                bail!(
                    "SLUICE_CONFIG: issuers[{i}].algorithms: `{bad}` is not allowed (asymmetric algorithms only)"
                );
            }
        }
        Ok(cfg)
    }
}

impl CommonArgs {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("sluice.db").display()
            )
        })
    }

    pub fn uses_default_sqlite(&self) -> bool {
        self.database_url.is_none()
    }

    /// Where blobs are kept: `SLUICE_BLOB_DIR`, else `<data_dir>/blobs`.
    pub fn blob_dir(&self) -> PathBuf {
        self.blob_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("blobs"))
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_addr))
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn file_config(&self) -> anyhow::Result<FileConfig> {
        match &self.config {
            Some(path) => FileConfig::load(path),
            None => Ok(FileConfig::default()),
        }
    }

    /// Resolves the master key: `SLUICE_MASTER_KEY`, then the key file,
    /// then `<data_dir>/master.key`, generated on first start only for the
    /// single-node SQLite default (HA replicas must share one key, so they
    /// must be given it).
    pub fn master_key(&self) -> anyhow::Result<crate::vault::MasterKey> {
        use crate::vault::MasterKey;
        if let Ok(text) = std::env::var("SLUICE_MASTER_KEY") {
            return Ok(MasterKey::parse(&text, "SLUICE_MASTER_KEY")?);
        }
        if let Some(path) = &self.master_key_file {
            return Ok(MasterKey::from_file(path)?);
        }
        let path = self.data_dir.join("master.key");
        if path.exists() {
            return Ok(MasterKey::from_file(&path)?);
        }
        if self.uses_default_sqlite() {
            tracing::warn!(path = %path.display(), "no master key configured: generated one; back it up, or set SLUICE_MASTER_KEY_FILE");
            return Ok(MasterKey::generate_file(&path)?);
        }
        Err(crate::vault::VaultError::Missing.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_off() {
        for (text, want) in [
            ("16KiB", Some(16 * 1024)),
            ("16kib", Some(16 * 1024)),
            ("500MB", Some(500_000_000)),
            ("2 GiB", Some(2 << 30)),
            ("1073741824", Some(1 << 30)),
            ("1b", Some(1)),
            ("off", None),
            ("OFF", None),
            ("0", None),
            ("0GiB", None),
        ] {
            assert_eq!(parse_size_or_off(text), Ok(Limit(want)), "{text}");
        }
        for bad in [
            "",
            "KiB",
            "-1",
            "1.5GiB",
            "12 parsecs",
            "99999999999999999999TiB",
        ] {
            assert!(parse_size_or_off(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_with_off() {
        assert_eq!(
            parse_duration_or_off("90d"),
            Ok(Limit(Some(Duration::from_secs(90 * 86_400))))
        );
        for off in ["off", "0", "0s"] {
            assert_eq!(parse_duration_or_off(off), Ok(Limit(None)), "{off}");
        }
        assert!(parse_duration_or_off("ninety days").is_err());
        assert!(parse_interval("0s").is_err());
        assert_eq!(parse_interval("10m"), Ok(Duration::from_secs(600)));
    }

    #[test]
    fn defaults_are_as_documented() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            common: CommonArgs,
            #[command(flatten)]
            serve: ServeArgs,
        }
        let w = <Wrapper as clap::Parser>::try_parse_from(["sluice"]).expect("defaults parse");
        assert_eq!(w.common.blob_threshold, Limit(Some(16 * 1024)));
        assert_eq!(w.common.blob_dir(), w.common.data_dir.join("blobs"));
        let r = &w.serve.retention;
        assert_eq!(
            r.retention_max_age,
            Limit(Some(Duration::from_secs(90 * 86_400)))
        );
        assert_eq!(r.retention_max_bytes, Limit(None));
        assert_eq!(r.retention_interval, Duration::from_secs(600));
    }
}
