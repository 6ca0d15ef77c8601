//! Sessions, derived from the audit events that carry a session id: one
//! query aggregates them, so there is no second copy to keep in step.
//!
//! A session's status:
//! - `denied`: its `session.start` was refused (the whole session);
//! - `ended`: a `session.end` was received;
//! - `live`: no end yet, and the agent that runs it has been attached
//!   without interruption since before the session started (its current
//!   connection began no later than the session's first event, and it
//!   was heard from within [`ATTACHED_WITHIN_MS`]);
//! - `incomplete`: no end, and the agent has since detached or
//!   reconnected, so nothing vouches that the session still runs (its
//!   agent may have died). A late `session.end` (delivered from the
//!   agent's spool) still turns it into `ended`.

use sqlx::{Row as _, any::AnyRow};

use super::{Result, Store, StoredAuditEvent, audit::AUDIT_COLUMNS};

/// An agent not heard from for this long counts as detached (it sends a
/// heartbeat every 5 s; this survives a replica that died without
/// recording the detach).
pub const ATTACHED_WITHIN_MS: i64 = 30_000;

/// Most events loaded for one session.
pub const MAX_SESSION_EVENTS: i64 = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Live,
    Ended,
    Incomplete,
    Denied,
}

impl SessionStatus {
    pub const ALL: [Self; 4] = [Self::Live, Self::Ended, Self::Incomplete, Self::Denied];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Ended => "ended",
            Self::Incomplete => "incomplete",
            Self::Denied => "denied",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Filters for listing sessions; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub session_id: Option<String>,
    pub subject: Option<String>,
    pub resource: Option<String>,
    /// Sessions that started at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Sessions that started at or before this time (ms).
    pub until_ms: Option<i64>,
    pub status: Option<SessionStatus>,
    /// Only sessions first seen after this cursor, oldest first.
    pub after: Option<i64>,
    pub limit: i64,
}

/// One session's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub session_id: String,
    /// The agent that delivered its events (authenticated).
    pub agent: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub resource: String,
    pub client_addr: String,
    /// Time of its earliest event.
    pub started_ms: i64,
    /// Time of its latest event.
    pub last_ms: i64,
    /// Time of its `session.end`, if received.
    pub ended_ms: Option<i64>,
    pub events: i64,
    pub statements: i64,
    pub denied: i64,
    pub errors: i64,
    pub rows: i64,
    pub sealed: bool,
    pub status: SessionStatus,
    /// Cursor of its first ingested event: the paging key.
    pub cursor: i64,
}

impl SessionRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        let groups: String = r.try_get("groups_json")?;
        let status: String = r.try_get("status")?;
        Ok(Self {
            session_id: r.try_get("session_id")?,
            agent: r.try_get("agent")?,
            subject: r.try_get("subject")?,
            groups: serde_json::from_str(&groups).unwrap_or_default(),
            resource: r.try_get("resource")?,
            client_addr: r.try_get("client_addr")?,
            started_ms: r.try_get("started_ms")?,
            last_ms: r.try_get("last_ms")?,
            ended_ms: r.try_get("ended_ms")?,
            events: r.try_get("events")?,
            statements: r.try_get("statements")?,
            denied: r.try_get("denied")?,
            errors: r.try_get("errors")?,
            rows: r.try_get("rows_total")?,
            sealed: r.try_get::<i64, _>("sealed")? != 0,
            status: SessionStatus::parse(&status).unwrap_or(SessionStatus::Incomplete),
            cursor: r.try_get("first_cursor")?,
        })
    }
}

/// A bind value; `$n` placeholders are numbered in bind order.
enum Bind {
    Text(String),
    Int(i64),
}

struct Binds(Vec<Bind>);

impl Binds {
    fn text(&mut self, v: &str) -> String {
        self.0.push(Bind::Text(v.to_owned()));
        format!("${}", self.0.len())
    }
    fn int(&mut self, v: i64) -> String {
        self.0.push(Bind::Int(v));
        format!("${}", self.0.len())
    }
}

impl Store {
    /// Lists sessions matching `filter` (status computed at `now_ms`).
    /// Without `after`, the most recent `limit` sessions, oldest first.
    pub async fn sessions(&self, filter: &SessionFilter, now_ms: i64) -> Result<Vec<SessionRow>> {
        let mut b = Binds(Vec::new());
        let mut inner = vec!["session_id <> ''".to_owned()];
        for (col, val) in [
            ("session_id", &filter.session_id),
            ("subject", &filter.subject),
            ("resource", &filter.resource),
        ] {
            if let Some(v) = val {
                inner.push(format!("{col} = {}", b.text(v)));
            }
        }
        let fresh = b.int(now_ms.saturating_sub(ATTACHED_WITHIN_MS));
        let mut outer = Vec::new();
        if let Some(v) = filter.since_ms {
            outer.push(format!("started_ms >= {}", b.int(v)));
        }
        if let Some(v) = filter.until_ms {
            outer.push(format!("started_ms <= {}", b.int(v)));
        }
        if let Some(v) = filter.after {
            outer.push(format!("first_cursor > {}", b.int(v)));
        }
        if let Some(s) = filter.status {
            outer.push(format!("status = {}", b.text(s.as_str())));
        }
        let inner_sql = inner.join(" AND ");
        let outer_sql = if outer.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", outer.join(" AND "))
        };
        let limit = filter.limit.clamp(1, 1000);
        let (order, reverse) = if filter.after.is_some() {
            ("ASC", false)
        } else {
            ("DESC", true)
        };
        let sql = format!(
            "SELECT * FROM (
               SELECT s.*,
                 CASE WHEN s.refused > 0 THEN 'denied'
                      WHEN s.ended_ms IS NOT NULL THEN 'ended'
                      WHEN a.attached_at > 0 AND a.last_seen >= {fresh} AND a.attached_at <= s.started_ms THEN 'live'
                      ELSE 'incomplete' END AS status,
                 CAST(CASE WHEN k.session_id IS NULL THEN 0 ELSE 1 END AS BIGINT) AS sealed
               FROM (
                 SELECT session_id,
                   MAX(agent) AS agent, MAX(subject) AS subject, MAX(groups_json) AS groups_json,
                   MAX(resource) AS resource, MAX(client_addr) AS client_addr,
                   MIN(time_ms) AS started_ms, MAX(time_ms) AS last_ms,
                   MAX(CASE WHEN kind = 'session.end' THEN time_ms END) AS ended_ms,
                   CAST(COUNT(*) AS BIGINT) AS events,
                   CAST(SUM(CASE WHEN kind = 'statement' THEN 1 ELSE 0 END) AS BIGINT) AS statements,
                   CAST(SUM(CASE WHEN kind = 'statement' AND decision = 'deny' THEN 1 ELSE 0 END) AS BIGINT) AS denied,
                   CAST(SUM(CASE WHEN decision = 'error' AND kind IN ('statement', 'statement.result') THEN 1 ELSE 0 END) AS BIGINT) AS errors,
                   CAST(SUM(CASE WHEN kind IN ('statement', 'statement.result') THEN rows_count ELSE 0 END) AS BIGINT) AS rows_total,
                   CAST(SUM(CASE WHEN kind = 'session.start' AND decision = 'deny' THEN 1 ELSE 0 END) AS BIGINT) AS refused,
                   MIN(cursor) AS first_cursor
                 FROM audit_events WHERE {inner_sql}
                 GROUP BY session_id
               ) s
               LEFT JOIN agents a ON a.name = s.agent
               LEFT JOIN session_seals k ON k.session_id = s.session_id
             ) x {outer_sql}
             ORDER BY first_cursor {order} LIMIT {limit}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in b.0 {
            q = match bind {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(self.pool()).await?;
        let mut out = rows
            .iter()
            .map(SessionRow::from_row)
            .collect::<Result<Vec<_>>>()?;
        if reverse {
            out.reverse();
        }
        Ok(out)
    }

    /// One session's summary, if any event names it.
    pub async fn session(&self, session_id: &str, now_ms: i64) -> Result<Option<SessionRow>> {
        let rows = self
            .sessions(
                &SessionFilter {
                    session_id: Some(session_id.to_owned()),
                    limit: 1,
                    ..Default::default()
                },
                now_ms,
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// A session's events in chain order (unchained ones last, by
    /// ingestion), at most `limit`.
    pub async fn session_events(
        &self,
        session_id: &str,
        limit: i64,
    ) -> Result<Vec<StoredAuditEvent>> {
        let limit = limit.clamp(1, MAX_SESSION_EVENTS);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE session_id = $1
             ORDER BY CASE WHEN session_seq IS NULL THEN 1 ELSE 0 END, session_seq, cursor
             LIMIT {limit}"
        )))
        .bind(session_id)
        .fetch_all(self.pool())
        .await?;
        let mut events = rows
            .iter()
            .map(StoredAuditEvent::from_row)
            .collect::<Result<Vec<_>>>()?;
        self.load_attributes(&mut events).await;
        Ok(events)
    }
}
