//! Retention: deleting recorded sessions past a maximum age, or the oldest
//! ones while the recording exceeds a maximum size.
//!
//! A session is deleted whole (its events, its seal, the blobs only it
//! references) or not at all, oldest last activity first, so what remains
//! of a session always verifies as it did. A session that is live, or had
//! activity after the cutoff, is never deleted. Events without a session
//! (e.g. `session.kill`, `retention`) go by age only.

use std::time::Duration;

use sqlx::Row as _;

use super::{BlobId, Result, Store, sessions::ATTACHED_WITHIN_MS};

/// Size-based retention never deletes a session active within this long,
/// even when over the limit: it may still be running (see
/// `docs/recording.md`).
pub const SIZE_RETENTION_GRACE_MS: i64 = 60 * 60 * 1000;

/// Sessions considered per query; deleted in chunks of [`DELETE_CHUNK`].
const CANDIDATE_PAGE: i64 = 5_000;
const DELETE_CHUNK: usize = 200;

/// What to keep. `None` disables a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Sessions whose last event is older than this are deleted.
    pub max_age: Option<Duration>,
    /// While the recorded bytes (event rows and their blobs, see
    /// `stored_bytes`) exceed this, the oldest sessions are deleted.
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    pub fn is_off(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none()
    }
}

/// What one retention run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub sessions: u64,
    pub events: u64,
    /// Recorded bytes removed (rows and blobs).
    pub bytes: u64,
    /// Blob files deleted (a blob shared with a kept event stays).
    pub blobs: u64,
    /// Events older than this (ms) were eligible for deletion by age.
    pub age_cutoff_ms: Option<i64>,
    /// The latest activity of a session deleted for size (ms).
    pub size_cutoff_ms: Option<i64>,
    /// Recorded bytes left.
    pub remaining_bytes: u64,
    /// Still over `max_bytes` after the run (only protected sessions and
    /// events without a session are left to delete).
    pub over_limit: bool,
}

impl RetentionOutcome {
    pub fn removed_anything(&self) -> bool {
        self.events > 0 || self.sessions > 0
    }
}

/// A session that may be deleted.
struct Candidate {
    session_id: String,
    last_ms: i64,
    bytes: i64,
}

/// `$1, $2, ...` for `n` binds.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Applies `policy` at `now_ms`: age first, then size.
    pub async fn enforce_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionOutcome> {
        let mut out = RetentionOutcome::default();
        if let Some(age) = policy.max_age {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_sub(age_ms);
            out.age_cutoff_ms = Some(cutoff);
            loop {
                let page = self.retention_candidates(cutoff, now_ms).await?;
                let ids: Vec<String> = page.iter().map(|c| c.session_id.clone()).collect();
                let removed = self.delete_sessions(&ids, &mut out).await?;
                if i64::try_from(page.len()).unwrap_or(0) < CANDIDATE_PAGE || removed == 0 {
                    break;
                }
            }
            self.delete_sessionless_before(cutoff, &mut out).await?;
        }
        let mut total = self.recorded_bytes().await?;
        if let Some(max) = policy.max_bytes {
            let protect_from = now_ms.saturating_sub(SIZE_RETENTION_GRACE_MS);
            while total > max {
                let page = self.retention_candidates(protect_from, now_ms).await?;
                let mut excess = total - max;
                let mut ids = Vec::new();
                for c in &page {
                    if excess == 0 {
                        break;
                    }
                    excess = excess.saturating_sub(to_u64(c.bytes));
                    ids.push(c.session_id.clone());
                    out.size_cutoff_ms =
                        Some(out.size_cutoff_ms.map_or(c.last_ms, |m| m.max(c.last_ms)));
                }
                // Each round deletes something or stops: nothing deletable
                // is left.
                if self.delete_sessions(&ids, &mut out).await? == 0 {
                    break;
                }
                total = self.recorded_bytes().await?;
            }
            out.over_limit = total > max;
        }
        out.remaining_bytes = total;
        Ok(out)
    }

    /// Recorded bytes: every event row's `stored_bytes` (blobs included).
    pub async fn recorded_bytes(&self) -> Result<u64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(stored_bytes), 0) AS BIGINT) AS total FROM audit_events",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(to_u64(row.try_get("total")?))
    }

    /// Sessions whose last event is before `before`, not live at `now_ms`
    /// (same rule as the session status), oldest last activity first.
    async fn retention_candidates(&self, before: i64, now_ms: i64) -> Result<Vec<Candidate>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT session_id, last_ms, bytes FROM (
               SELECT s.session_id, s.last_ms, s.bytes,
                 CASE WHEN s.ended > 0 THEN 0
                      WHEN a.attached_at > 0 AND a.last_seen >= $2 AND a.attached_at <= s.started_ms THEN 1
                      ELSE 0 END AS live
               FROM (
                 SELECT session_id, MAX(agent) AS agent,
                   MIN(time_ms) AS started_ms, MAX(time_ms) AS last_ms,
                   CAST(SUM(stored_bytes) AS BIGINT) AS bytes,
                   CAST(SUM(CASE WHEN kind = 'session.end' OR (kind = 'session.start' AND decision = 'deny')
                            THEN 1 ELSE 0 END) AS BIGINT) AS ended
                 FROM audit_events WHERE session_id <> ''
                 GROUP BY session_id
                 HAVING MAX(time_ms) < $1
               ) s
               LEFT JOIN agents a ON a.name = s.agent
             ) x WHERE live = 0
             ORDER BY last_ms, session_id LIMIT {CANDIDATE_PAGE}"
        )))
        .bind(before)
        .bind(now_ms.saturating_sub(ATTACHED_WITHIN_MS))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Candidate {
                    session_id: r.try_get("session_id")?,
                    last_ms: r.try_get("last_ms")?,
                    bytes: r.try_get("bytes")?,
                })
            })
            .collect()
    }

    /// Deletes whole sessions (events and seals, then their unreferenced
    /// blobs); returns how many events went.
    async fn delete_sessions(&self, ids: &[String], out: &mut RetentionOutcome) -> Result<u64> {
        let mut removed = 0;
        for chunk in ids.chunks(DELETE_CHUNK) {
            let list = placeholders(chunk.len());
            let scope = format!("FROM audit_events WHERE session_id IN ({list})");
            let seals = format!("DELETE FROM session_seals WHERE session_id IN ({list})");
            let bind_ids = |q: AnyQuery<'static>| chunk.iter().fold(q, |q, id| q.bind(id.clone()));
            let (events, bytes, blobs) = self
                .delete_events(&scope, bind_ids, Some((&seals, chunk)))
                .await?;
            out.sessions += chunk.len() as u64;
            out.events += events;
            out.bytes += bytes;
            removed += events;
            out.blobs += self.delete_unreferenced_blobs(blobs).await;
        }
        Ok(removed)
    }

    /// Deletes events without a session older than `cutoff`.
    async fn delete_sessionless_before(
        &self,
        cutoff: i64,
        out: &mut RetentionOutcome,
    ) -> Result<()> {
        let (events, bytes, blobs) = self
            .delete_events(
                "FROM audit_events WHERE session_id = '' AND time_ms < $1",
                |q| q.bind(cutoff),
                None,
            )
            .await?;
        out.events += events;
        out.bytes += bytes;
        out.blobs += self.delete_unreferenced_blobs(blobs).await;
        Ok(())
    }

    /// In one transaction: notes the blobs and size of the events selected
    /// by `scope` (`FROM ... WHERE ...`, binds added by `bind`), deletes
    /// them, and runs `also` (a statement and its text binds). Returns
    /// (events, bytes, blob addresses).
    async fn delete_events(
        &self,
        scope: &str,
        bind: impl Fn(AnyQuery<'static>) -> AnyQuery<'static>,
        also: Option<(&str, &[String])>,
    ) -> Result<(u64, u64, Vec<String>)> {
        let mut tx = self.begin_write().await?;
        let blobs = bind(sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT attributes_blob {scope} AND attributes_blob IS NOT NULL"
        ))))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("attributes_blob"))
        .collect::<std::result::Result<Vec<_>, _>>()?;
        let stats = bind(sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS events, CAST(COALESCE(SUM(stored_bytes), 0) AS BIGINT) AS bytes {scope}"
        ))))
        .fetch_one(&mut *tx)
        .await?;
        bind(sqlx::query(sqlx::AssertSqlSafe(format!("DELETE {scope}"))))
            .execute(&mut *tx)
            .await?;
        if let Some((sql, also_binds)) = also {
            also_binds
                .iter()
                .fold(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), |q, v| {
                    q.bind(v.clone())
                })
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((
            to_u64(stats.try_get("events")?),
            to_u64(stats.try_get("bytes")?),
            blobs,
        ))
    }

    /// Deletes each blob no remaining event references; returns how many
    /// went. A blob that cannot be deleted is logged and left (an orphan
    /// takes space but is never read).
    async fn delete_unreferenced_blobs(&self, addresses: Vec<String>) -> u64 {
        let Some(blobs) = self.blobs() else {
            return 0;
        };
        let mut deleted = 0;
        for address in addresses {
            let Some(id) = BlobId::parse(&address) else {
                continue;
            };
            let referenced =
                sqlx::query("SELECT 1 AS one FROM audit_events WHERE attributes_blob = $1 LIMIT 1")
                    .bind(&address)
                    .fetch_optional(self.pool())
                    .await;
            match referenced {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(blob = %id, error = %e, "retention: cannot check whether a blob is still used; kept");
                    continue;
                }
            }
            match blobs.delete(&id).await {
                Ok(()) => deleted += 1,
                Err(e) => tracing::warn!(blob = %id, error = %e, "retention: cannot delete blob"),
            }
        }
        deleted
    }
}
