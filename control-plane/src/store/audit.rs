//! Audit event ingestion (idempotent by event id), session seals, and
//! filtered listing.
//!
//! Attributes longer than the store's blob threshold are kept in the blob
//! store, the row holding only their address (`attributes_blob`, with
//! `attributes_json` empty). This module is the one place that moves them
//! in and out: every query that returns events puts the verbatim text back
//! ([`Store::load_attributes`]), so callers never see the difference, except
//! that a missing or corrupt blob leaves `attributes_unavailable` set.

use sqlx::{Row as _, any::AnyRow};

use super::{BlobId, Engine, Result, SessionSealRow, Store, StoreError};

/// An audit event as stored; mirrors `sluice.agent.v1.AuditEvent`. Every
/// field the chain hash covers is kept exactly as the agent sent it, so
/// the hash can be recomputed from the row.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredAuditEvent {
    /// Ingestion order; the polling cursor.
    pub cursor: i64,
    pub id: String,
    pub agent: String,
    pub seq: i64,
    pub time_ms: i64,
    pub kind: String,
    pub session_id: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub resource: String,
    pub decision: String,
    pub rule: String,
    pub statement: String,
    pub parameters: Vec<String>,
    pub duration_us: i64,
    pub rows: i64,
    pub error: String,
    pub client_addr: String,
    /// The attributes' JSON text verbatim (not re-serialized: the chain
    /// hash covers these exact bytes), also when it is stored as a blob.
    pub attributes_json: String,
    /// When the attributes are stored as a blob: its address (hex
    /// SHA-256 of the text). Set by the store; ignored on insertion.
    #[serde(default)]
    pub attributes_blob: Option<String>,
    /// Why blob-backed attributes could not be read back (the blob is
    /// missing, corrupt or unreadable); `attributes_json` is empty then and
    /// the event cannot verify.
    #[serde(default)]
    pub attributes_unavailable: Option<String>,
    /// Position in the session's chain; `None` for unchained events.
    pub session_seq: Option<i64>,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

impl StoredAuditEvent {
    /// The attributes parsed for display: an empty text is an empty object,
    /// text that is not JSON is shown as a string.
    pub fn attributes(&self) -> serde_json::Value {
        if self.attributes_json.trim().is_empty() {
            return serde_json::json!({});
        }
        serde_json::from_str(&self.attributes_json)
            .unwrap_or_else(|_| serde_json::Value::String(self.attributes_json.clone()))
    }
}

/// Filters for listing audit events; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub subject: Option<String>,
    pub resource: Option<String>,
    /// Matches the event's decision (allow, deny, approve, error).
    pub outcome: Option<String>,
    pub kind: Option<String>,
    pub session_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Only events ingested after this cursor, oldest first.
    pub after: Option<i64>,
    pub limit: i64,
}

pub(super) const AUDIT_COLUMNS: &str = "cursor, id, agent, seq, time_ms, kind, session_id, subject, groups_json, resource, decision, rule, statement, parameters_json, duration_us, rows_count, error, client_addr, attributes_json, attributes_blob, session_seq, prev_hash, hash";

/// Fixed part of an event's recorded size: its integer columns.
const ROW_OVERHEAD: usize = 7 * 8;

/// What an event occupies, in bytes: its text and hash columns, its
/// attributes (in the row or in a blob) and [`ROW_OVERHEAD`]. Stored as
/// `stored_bytes`, which size-based retention adds up; migration 0004
/// computes the same for events stored before it.
fn recorded_size(e: &StoredAuditEvent, agent: &str, groups_json: &str, params_json: &str) -> i64 {
    let total = ROW_OVERHEAD
        + [
            e.id.as_str(),
            agent,
            &e.kind,
            &e.session_id,
            &e.subject,
            groups_json,
            &e.resource,
            &e.decision,
            &e.rule,
            &e.statement,
            params_json,
            &e.error,
            &e.client_addr,
            &e.attributes_json,
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
        + e.prev_hash.as_ref().map_or(0, Vec::len)
        + e.hash.as_ref().map_or(0, Vec::len);
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// Columns an event is inserted with, in bind order.
const INSERT_COLUMNS: [&str; 23] = [
    "id",
    "agent",
    "seq",
    "time_ms",
    "kind",
    "session_id",
    "subject",
    "groups_json",
    "resource",
    "decision",
    "rule",
    "statement",
    "parameters_json",
    "duration_us",
    "rows_count",
    "error",
    "client_addr",
    "attributes_json",
    "session_seq",
    "prev_hash",
    "hash",
    "attributes_blob",
    "stored_bytes",
];

/// Most rows in one INSERT (23 parameters each: well under SQLite's and
/// PostgreSQL's limits on parameters per statement).
const MAX_ROWS_PER_INSERT: usize = 64;

/// Rows of the next INSERT for `left` events: the largest power of two
/// that fits, at most [`MAX_ROWS_PER_INSERT`].
fn chunk_len(left: usize) -> usize {
    let fits = 1usize << (usize::BITS - 1 - left.max(1).leading_zeros());
    fits.min(MAX_ROWS_PER_INSERT)
}

/// `INSERT INTO audit_events (...) VALUES (...), ...` for `rows` events,
/// skipping those already stored (same id: a redelivery). SQLite gets
/// anonymous `?` placeholders: it resolves each numbered one by a linear
/// scan of the statement's parameter names, which made binding a large
/// insert quadratic.
fn insert_events_sql(engine: Engine, rows: usize) -> String {
    let width = INSERT_COLUMNS.len();
    let mut sql = format!(
        "INSERT INTO audit_events ({}) VALUES ",
        INSERT_COLUMNS.join(", ")
    );
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            match engine {
                Engine::Sqlite => sql.push('?'),
                Engine::Postgres => sql.push_str(&format!("${}", row * width + col + 1)),
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

impl StoredAuditEvent {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        let groups: String = r.try_get("groups_json")?;
        let params: String = r.try_get("parameters_json")?;
        Ok(Self {
            cursor: r.try_get("cursor")?,
            id: r.try_get("id")?,
            agent: r.try_get("agent")?,
            seq: r.try_get("seq")?,
            time_ms: r.try_get("time_ms")?,
            kind: r.try_get("kind")?,
            session_id: r.try_get("session_id")?,
            subject: r.try_get("subject")?,
            groups: serde_json::from_str(&groups).unwrap_or_default(),
            resource: r.try_get("resource")?,
            decision: r.try_get("decision")?,
            rule: r.try_get("rule")?,
            statement: r.try_get("statement")?,
            parameters: serde_json::from_str(&params).unwrap_or_default(),
            duration_us: r.try_get("duration_us")?,
            rows: r.try_get("rows_count")?,
            error: r.try_get("error")?,
            client_addr: r.try_get("client_addr")?,
            attributes_json: r.try_get("attributes_json")?,
            attributes_blob: r.try_get("attributes_blob")?,
            attributes_unavailable: None,
            session_seq: r.try_get("session_seq")?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
        })
    }
}

impl Store {
    /// Stores a batch of events from one agent in one transaction. Events
    /// already stored (same id: a redelivery after a lost ack) are skipped,
    /// so delivery is effectively exactly-once. Returns how many were new.
    pub async fn insert_audit_events(
        &self,
        agent: &str,
        events: &[StoredAuditEvent],
    ) -> Result<u64> {
        self.insert_audit_batch(agent, events, &[]).await
    }

    /// [`Store::insert_audit_events`], plus the seals of sessions the batch
    /// ends, in the same transaction (so a crash cannot leave an ended
    /// session unsealed while its events are acknowledged).
    ///
    /// A seal is kept if one exists for the session, unless the new one is
    /// from the same agent and counts more events (a later ending event).
    pub async fn insert_audit_batch(
        &self,
        agent: &str,
        events: &[StoredAuditEvent],
        seals: &[SessionSealRow],
    ) -> Result<u64> {
        // Blobs first: a row must never point at a blob not yet durable. A
        // failed transaction leaves blobs behind, which the redelivery of
        // the batch stores again (same address) and uses.
        let mut spilled: Vec<Option<BlobId>> = Vec::with_capacity(events.len());
        for e in events {
            spilled.push(self.spill(&e.attributes_json).await?);
        }
        let mut tx = self.begin_write().await?;
        let mut inserted = 0;
        let rows: Vec<(&StoredAuditEvent, &Option<BlobId>)> = events.iter().zip(&spilled).collect();
        let mut rest = rows.as_slice();
        while !rest.is_empty() {
            // Many rows per statement: one statement per event costs the
            // control plane more CPU than the agent spends on the statement
            // the event describes. Chunks are powers of two so a handful of
            // prepared statements covers every batch size.
            let n = chunk_len(rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut q = sqlx::query(sqlx::AssertSqlSafe(insert_events_sql(self.engine(), n)));
            for (e, blob) in chunk.iter() {
                let groups_json = serde_json::to_string(&e.groups).unwrap_or_else(|_| "[]".into());
                let params_json =
                    serde_json::to_string(&e.parameters).unwrap_or_else(|_| "[]".into());
                let size = recorded_size(e, agent, &groups_json, &params_json);
                let inline = if blob.is_some() {
                    ""
                } else {
                    e.attributes_json.as_str()
                };
                q = q
                    .bind(e.id.as_str())
                    .bind(agent)
                    .bind(e.seq)
                    .bind(e.time_ms)
                    .bind(e.kind.as_str())
                    .bind(e.session_id.as_str())
                    .bind(e.subject.as_str())
                    .bind(groups_json)
                    .bind(e.resource.as_str())
                    .bind(e.decision.as_str())
                    .bind(e.rule.as_str())
                    .bind(e.statement.as_str())
                    .bind(params_json)
                    .bind(e.duration_us)
                    .bind(e.rows)
                    .bind(e.error.as_str())
                    .bind(e.client_addr.as_str())
                    .bind(inline)
                    .bind(e.session_seq)
                    .bind(e.prev_hash.clone())
                    .bind(e.hash.clone())
                    .bind(blob.as_ref().map(|b| b.as_str().to_owned()))
                    .bind(size);
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        for s in seals {
            sqlx::query(
                "INSERT INTO session_seals (session_id, agent, event_count, head_hash, signature, key_id, sealed_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (session_id) DO UPDATE SET event_count = excluded.event_count,
                   head_hash = excluded.head_hash, signature = excluded.signature,
                   key_id = excluded.key_id, sealed_at_ms = excluded.sealed_at_ms
                 WHERE session_seals.agent = excluded.agent AND session_seals.event_count < excluded.event_count",
            )
            .bind(&s.session_id)
            .bind(&s.agent)
            .bind(s.event_count)
            .bind(&s.head_hash)
            .bind(&s.signature)
            .bind(&s.key_id)
            .bind(s.sealed_at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The seal of a session, if it has one.
    pub async fn session_seal(&self, session_id: &str) -> Result<Option<SessionSealRow>> {
        let row = sqlx::query(
            "SELECT session_id, agent, event_count, head_hash, signature, key_id, sealed_at_ms
             FROM session_seals WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(SessionSealRow::from_row).transpose()
    }

    /// Lists events matching `filter`, oldest first. Without `after`, the
    /// most recent `limit` events are returned.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<StoredAuditEvent>> {
        let mut clauses: Vec<String> = Vec::new();
        let mut text_binds: Vec<String> = Vec::new();
        let mut int_binds: Vec<i64> = Vec::new();
        // Text binds come first ($1..), then integers; keep numbering in step.
        for (col, val) in [
            ("subject", &filter.subject),
            ("resource", &filter.resource),
            ("decision", &filter.outcome),
            ("kind", &filter.kind),
            ("session_id", &filter.session_id),
        ] {
            if let Some(v) = val {
                text_binds.push(v.clone());
                clauses.push(format!("{col} = ${}", text_binds.len()));
            }
        }
        let mut n = text_binds.len();
        for (cond, val) in [
            ("time_ms >= ", filter.since_ms),
            ("time_ms <= ", filter.until_ms),
            ("cursor > ", filter.after),
        ] {
            if let Some(v) = val {
                int_binds.push(v);
                n += 1;
                clauses.push(format!("{cond}${n}"));
            }
        }
        let where_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let limit = filter.limit.clamp(1, 1000);
        let sql = if filter.after.is_some() {
            format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events {where_sql} ORDER BY cursor ASC LIMIT {limit}"
            )
        } else {
            format!(
                "SELECT * FROM (SELECT {AUDIT_COLUMNS} FROM audit_events {where_sql} ORDER BY cursor DESC LIMIT {limit}) AS recent ORDER BY cursor ASC"
            )
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in &text_binds {
            q = q.bind(t);
        }
        for i in &int_binds {
            q = q.bind(*i);
        }
        let rows = q.fetch_all(self.pool()).await?;
        let mut events = rows
            .iter()
            .map(StoredAuditEvent::from_row)
            .collect::<Result<Vec<_>>>()?;
        self.load_attributes(&mut events).await;
        Ok(events)
    }

    /// Stores `attributes` as a blob if they are over the threshold;
    /// returns its address.
    async fn spill(&self, attributes: &str) -> Result<Option<BlobId>> {
        let Some(blobs) = self.blobs.as_ref() else {
            return Ok(None);
        };
        if attributes.len() <= self.blob_threshold {
            return Ok(None);
        }
        let id = BlobId::of(attributes.as_bytes());
        blobs.put(&id, attributes.as_bytes()).await?;
        Ok(Some(id))
    }

    /// Puts blob-backed attributes back into `attributes_json`, verbatim.
    /// A blob that is missing, does not match its address (corrupt), is
    /// not UTF-8 or cannot be read leaves the text empty and says why in
    /// `attributes_unavailable`: reading never fails because of a blob.
    pub(super) async fn load_attributes(&self, events: &mut [StoredAuditEvent]) {
        for e in events {
            let Some(address) = e.attributes_blob.as_deref() else {
                continue;
            };
            match self.read_blob(address).await {
                Ok(text) => e.attributes_json = text,
                Err(why) => {
                    tracing::warn!(event = %e.id, session = %e.session_id, blob = %address, reason = %why, "recorded attributes unavailable");
                    e.attributes_json.clear();
                    e.attributes_unavailable = Some(why);
                }
            }
        }
    }

    async fn read_blob(&self, address: &str) -> std::result::Result<String, String> {
        let id = BlobId::parse(address)
            .ok_or_else(|| format!("the blob reference `{address}` is not a SHA-256 address"))?;
        let blobs = self
            .blobs
            .as_ref()
            .ok_or_else(|| format!("blob {id} cannot be read: no blob store is configured"))?;
        let data = match blobs.get(&id).await {
            Ok(Some(data)) => data,
            Ok(None) => return Err(format!("blob {id} is missing")),
            Err(e) => return Err(format!("blob {id} cannot be read: {e}")),
        };
        if BlobId::of(&data) != id {
            return Err(format!(
                "blob {id} is corrupt (its content does not match its address)"
            ));
        }
        String::from_utf8(data).map_err(|_| format!("blob {id} is corrupt (not UTF-8 text)"))
    }
}

impl From<super::BlobError> for StoreError {
    fn from(e: super::BlobError) -> Self {
        Self::Blob(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_power_of_two_inserts() {
        let split = |mut left: usize| {
            let mut out = Vec::new();
            while left > 0 {
                let n = chunk_len(left);
                out.push(n);
                left -= n;
            }
            out
        };
        assert_eq!(split(1), vec![1]);
        assert_eq!(split(7), vec![4, 2, 1]);
        assert_eq!(split(64), vec![64]);
        assert_eq!(split(203), vec![64, 64, 64, 8, 2, 1]);
    }

    #[test]
    fn the_insert_numbers_every_parameter_once() {
        let sql = insert_events_sql(Engine::Postgres, 2);
        assert!(sql.contains("($1, $2,"), "{sql}");
        assert!(sql.contains(", ($24, $25,"), "{sql}");
        assert!(sql.contains("$46) ON CONFLICT (id) DO NOTHING"), "{sql}");
        assert!(!sql.contains("$47"), "{sql}");
        let sql = insert_events_sql(Engine::Sqlite, 2);
        assert_eq!(sql.matches('?').count(), 46, "{sql}");
        assert!(!sql.contains('$'), "{sql}");
    }
}
