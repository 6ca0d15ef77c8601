//! The control plane's only state: one SQL database, SQLite by default and
//! PostgreSQL for HA, reached through sqlx's `Any` driver so every query is
//! written once (`$n` placeholders work on both engines).
//!
//! Every change that can alter what an agent enforces bumps the global
//! configuration revision in the same transaction; agents compare snapshot
//! versions against it. This module never sees a plaintext secret: the
//! vault seals values before they get here.

mod approvals;
mod audit;
pub mod blobs;
mod commands;
mod retention;
mod rows;
mod sessions;

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    AnyPool, Row as _,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use approvals::{ApprovalRow, VoteRow};
pub use audit::{AuditFilter, StoredAuditEvent};
pub use blobs::{BlobError, BlobId, BlobStore, FsBlobStore};
pub use commands::AgentCommand;
pub use retention::{RetentionOutcome, RetentionPolicy};
pub use rows::*;
pub use sessions::{MAX_SESSION_EVENTS, SessionFilter, SessionRow, SessionStatus};

/// Which database engine backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Blob(BlobError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// Where attributes too large for a row go; `None`: always inline.
    blobs: Option<Arc<dyn BlobStore>>,
    /// Attributes longer than this many bytes are stored as a blob.
    blob_threshold: usize,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = match engine {
            // One writer at a time is what SQLite can do anyway; a small
            // pool avoids "database is locked" storms.
            Engine::Sqlite => AnyPoolOptions::new()
                .max_connections(4)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // Statement journals (multi-row inserts keep one)
                        // in memory rather than in temporary files.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                        Ok(())
                    })
                }),
            Engine::Postgres => AnyPoolOptions::new().max_connections(16),
        }
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
        match engine {
            Engine::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Engine::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self {
            pool,
            engine,
            blobs: None,
            blob_threshold: usize::MAX,
        })
    }

    /// Keeps event attributes longer than `threshold` bytes in `blobs`
    /// instead of the row (`None`: never; existing blob-backed events are
    /// still read back from `blobs`).
    #[must_use]
    pub fn with_blobs(mut self, blobs: Arc<dyn BlobStore>, threshold: Option<usize>) -> Self {
        self.blobs = Some(blobs);
        self.blob_threshold = threshold.unwrap_or(usize::MAX);
        self
    }

    /// The blob store, if one is configured.
    pub fn blobs(&self) -> Option<&Arc<dyn BlobStore>> {
        self.blobs.as_ref()
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`, waiting out `busy_timeout`): a
    /// deferred transaction that reads first and then writes fails with
    /// "database is locked" when another connection wrote in between,
    /// without waiting.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.pool.begin().await?,
        })
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ------------------------------------------------------------ revision

    /// The current configuration revision.
    pub async fn revision(&self) -> Result<u64> {
        let row = sqlx::query("SELECT value FROM config_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("value")?).unwrap_or(0))
    }

    async fn bump_revision(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<u64> {
        let row = sqlx::query(
            "UPDATE config_revision SET value = value + 1 WHERE id = 1 RETURNING value",
        )
        .fetch_one(&mut **tx)
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("value")?).unwrap_or(0))
    }

    /// Bumps the revision on its own, for changes that live outside the
    /// database (e.g. an external issuer rotated its JWKS).
    pub async fn touch_revision(&self) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let rev = Self::bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(rev)
    }

    /// Sends `payload` on notification `channel` to every session that
    /// listens (PostgreSQL's `NOTIFY`; nothing on SQLite, where no other
    /// replica can be).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    // --------------------------------------------------------- system keys

    pub async fn system_key(&self, name: &str) -> Result<Option<SystemKeyRow>> {
        let row = sqlx::query(
            "SELECT name, kid, kek_id, wrapped_dek, ciphertext, public_data, created_at
             FROM system_keys WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| SystemKeyRow::from_row(&r)).transpose()
    }

    /// Inserts a key unless one with that name exists (another replica may
    /// have created it first); returns the stored key either way.
    pub async fn insert_system_key_if_absent(&self, key: &SystemKeyRow) -> Result<SystemKeyRow> {
        sqlx::query(
            "INSERT INTO system_keys (name, kid, kek_id, wrapped_dek, ciphertext, public_data, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&key.name)
        .bind(&key.kid)
        .bind(&key.sealed.kek_id)
        .bind(&key.sealed.wrapped_dek)
        .bind(&key.sealed.ciphertext)
        .bind(&key.public_data)
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        self.system_key(&key.name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("system key {}", key.name)))
    }

    // ----------------------------------------------------------- resources

    pub async fn resources(&self) -> Result<Vec<ResourceRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ResourceRow::from_row).collect()
    }

    pub async fn resource(&self, name: &str) -> Result<Option<ResourceRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ResourceRow::from_row).transpose()
    }

    /// Creates or replaces a resource; returns the new revision.
    pub async fn upsert_resource(&self, r: &ResourceRow) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        Self::upsert_resource_tx(&mut tx, r).await?;
        let rev = Self::bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(rev)
    }

    async fn upsert_resource_tx(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        r: &ResourceRow,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO resources (name, kind, agent, address, database_name, credential, labels_json, tls_mode, audit_mode, updated_at, tls_ca,
                                    max_connections, max_connections_per_subject)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, agent = excluded.agent,
               address = excluded.address, database_name = excluded.database_name,
               credential = excluded.credential, labels_json = excluded.labels_json,
               tls_mode = excluded.tls_mode, audit_mode = excluded.audit_mode,
               updated_at = excluded.updated_at, tls_ca = excluded.tls_ca,
               max_connections = excluded.max_connections,
               max_connections_per_subject = excluded.max_connections_per_subject",
        )
        .bind(&r.name)
        .bind(&r.kind)
        .bind(&r.agent)
        .bind(&r.address)
        .bind(&r.database)
        .bind(&r.credential)
        .bind(serde_json::to_string(&r.labels).unwrap_or_else(|_| "{}".into()))
        .bind(&r.tls_mode)
        .bind(&r.audit_mode)
        .bind(r.updated_at)
        .bind(&r.tls_ca)
        .bind(i64::from(r.max_connections))
        .bind(i64::from(r.max_connections_per_subject))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn delete_resource(&self, name: &str) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM resources WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("resource `{name}`")));
        }
        let rev = Self::bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(rev)
    }

    // --------------------------------------------------------- credentials

    pub async fn credentials(&self) -> Result<Vec<CredentialRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(CredentialRow::from_row).collect()
    }

    pub async fn credential(&self, name: &str) -> Result<Option<CredentialRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(CredentialRow::from_row).transpose()
    }

    /// Sets a credential (creating it, or replacing it with version + 1).
    pub async fn set_credential(
        &self,
        name: &str,
        username: &str,
        sealed: &Sealed,
    ) -> Result<(CredentialRow, u64)> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO credentials (name, username, version, kek_id, wrapped_dek, ciphertext, created_at, updated_at)
             VALUES ($1, $2, 1, $3, $4, $5, $6, $6)
             ON CONFLICT (name) DO UPDATE SET username = excluded.username,
               version = credentials.version + 1, kek_id = excluded.kek_id,
               wrapped_dek = excluded.wrapped_dek, ciphertext = excluded.ciphertext,
               updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(username)
        .bind(&sealed.kek_id)
        .bind(&sealed.wrapped_dek)
        .bind(&sealed.ciphertext)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let rev = Self::bump_revision(&mut tx).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE name = $1"
        )))
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((CredentialRow::from_row(&row)?, rev))
    }

    /// Replaces the secret of an existing credential.
    pub async fn rotate_credential(
        &self,
        name: &str,
        username: Option<&str>,
        sealed: &Sealed,
    ) -> Result<(CredentialRow, u64)> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE credentials SET version = version + 1, username = COALESCE($2, username),
               kek_id = $3, wrapped_dek = $4, ciphertext = $5, updated_at = $6 WHERE name = $1",
        )
        .bind(name)
        .bind(username)
        .bind(&sealed.kek_id)
        .bind(&sealed.wrapped_dek)
        .bind(&sealed.ciphertext)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("credential `{name}`")));
        }
        let rev = Self::bump_revision(&mut tx).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE name = $1"
        )))
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((CredentialRow::from_row(&row)?, rev))
    }

    /// Re-wraps every sealed value with `rewrap` in one transaction (master
    /// key rotation): all or nothing.
    pub async fn rewrap_all<F>(&self, mut rewrap: F) -> Result<usize>
    where
        F: FnMut(&str, &Sealed) -> std::result::Result<Sealed, String>,
    {
        let mut tx = self.begin_write().await?;
        let mut count = 0;
        let creds = sqlx::query("SELECT name, kek_id, wrapped_dek, ciphertext FROM credentials")
            .fetch_all(&mut *tx)
            .await?;
        for row in &creds {
            let name: String = row.try_get("name")?;
            let sealed = Sealed::from_row(row)?;
            let new =
                rewrap(&format!("credential:{name}"), &sealed).map_err(StoreError::Conflict)?;
            sqlx::query("UPDATE credentials SET kek_id = $2, wrapped_dek = $3 WHERE name = $1")
                .bind(&name)
                .bind(&new.kek_id)
                .bind(&new.wrapped_dek)
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        let keys = sqlx::query("SELECT name, kek_id, wrapped_dek, ciphertext FROM system_keys")
            .fetch_all(&mut *tx)
            .await?;
        for row in &keys {
            let name: String = row.try_get("name")?;
            let sealed = Sealed::from_row(row)?;
            let new =
                rewrap(&format!("system-key:{name}"), &sealed).map_err(StoreError::Conflict)?;
            sqlx::query("UPDATE system_keys SET kek_id = $2, wrapped_dek = $3 WHERE name = $1")
                .bind(&name)
                .bind(&new.kek_id)
                .bind(&new.wrapped_dek)
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        tx.commit().await?;
        Ok(count)
    }

    // ------------------------------------------------------------ policies

    /// Stores a new policy version (and upserts the resources the document
    /// declares) atomically; returns (version, revision).
    pub async fn insert_policy_version(
        &self,
        document: &str,
        sha256: &str,
        comment: &str,
        created_by: &str,
        resources: &[ResourceRow],
    ) -> Result<(i64, u64)> {
        let mut tx = self.begin_write().await?;
        for r in resources {
            Self::upsert_resource_tx(&mut tx, r).await?;
        }
        let rev = Self::bump_revision(&mut tx).await?;
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM policy_versions")
            .fetch_one(&mut *tx)
            .await?;
        let version: i64 = row.try_get::<i64, _>("v")? + 1;
        sqlx::query(
            "INSERT INTO policy_versions (version, document, sha256, comment, created_by, created_at, revision)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(version)
        .bind(document)
        .bind(sha256)
        .bind(comment)
        .bind(created_by)
        .bind(now_ms())
        .bind(i64::try_from(rev).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict("another policy was applied at the same moment; apply again".into())
            }
            other => other.into(),
        })?;
        tx.commit().await?;
        Ok((version, rev))
    }

    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersionRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY version"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PolicyVersionRow::from_row).collect()
    }

    pub async fn policy_version(&self, version: i64) -> Result<Option<PolicyVersionRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions WHERE version = $1"
        )))
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(PolicyVersionRow::from_row).transpose()
    }

    pub async fn current_policy(&self) -> Result<Option<PolicyVersionRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY version DESC LIMIT 1"
        )))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(PolicyVersionRow::from_row).transpose()
    }

    // -------------------------------------------------------------- agents

    pub async fn upsert_agent_enrollment(
        &self,
        name: &str,
        fingerprint: &str,
        agent_version: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (name, cert_fingerprint, agent_version, enrolled_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET cert_fingerprint = excluded.cert_fingerprint,
               agent_version = excluded.agent_version, enrolled_at = excluded.enrolled_at,
               snapshot_version = 0",
        )
        .bind(name)
        .bind(fingerprint)
        .bind(agent_version)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn agent(&self, name: &str) -> Result<Option<AgentRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(AgentRow::from_row).transpose()
    }

    pub async fn agents(&self) -> Result<Vec<AgentRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AgentRow::from_row).collect()
    }

    pub async fn agent_seen(
        &self,
        name: &str,
        agent_version: &str,
        snapshot_version: u64,
        peer: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET last_seen = $2, agent_version = $3, snapshot_version = $4, peer = $5 WHERE name = $1",
        )
        .bind(name)
        .bind(now_ms())
        .bind(agent_version)
        .bind(i64::try_from(snapshot_version).unwrap_or(i64::MAX))
        .bind(peer)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that `name`'s current connection began at `at` (ms).
    pub async fn agent_attached(&self, name: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE agents SET attached_at = $2, last_seen = $2 WHERE name = $1")
            .bind(name)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that the connection that began at `at` ended, unless a newer
    /// one (perhaps on another replica) has replaced it.
    pub async fn agent_detached(&self, name: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE agents SET attached_at = 0 WHERE name = $1 AND attached_at = $2")
            .bind(name)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --------------------------------------------------------- join tokens

    pub async fn insert_join_token(&self, t: &JoinTokenRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO join_tokens (id, secret_hash, agent, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(&t.agent)
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn join_token(&self, id: &str) -> Result<Option<JoinTokenRow>> {
        let row = sqlx::query(
            "SELECT id, secret_hash, agent, created_by, created_at, expires_at, used_at FROM join_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(JoinTokenRow::from_row).transpose()
    }

    /// Marks a token used; false if it was already used or has expired in
    /// the meantime (so two racing enrollments cannot both win).
    pub async fn consume_join_token(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE join_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Hides the password of a database URL for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction that reads and then writes, while another connection
    /// writes in between: on SQLite a deferred one fails at its write with
    /// "database is locked" and does not wait; `begin_write` waits its turn.
    #[tokio::test]
    async fn a_write_transaction_that_reads_first_is_not_refused_by_a_concurrent_write() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (n BIGINT)")
            .execute(store.pool())
            .await
            .unwrap();
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let pool = store.pool().clone();
        let other = tokio::spawn(async move {
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&pool)
                .await
                .map(|_| ())
        });
        // Give the other write the chance to go first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *tx)
            .await
            .expect("the transaction's write");
        tx.commit().await.unwrap();
        other.await.unwrap().expect("the other write, after it");
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(count, 2);
    }
}
