//! Approval requests and their votes.

use sqlx::{Row as _, any::AnyRow};

use super::{Result, Store};

/// An approval request as stored. `status` is one of `pending`,
/// `approved`, `denied`, `withdrawn`, `expired`, `used`; a pending request
/// past `expires_ms` reads as `expired` (see [`ApprovalRow::effective_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub id: String,
    pub agent: String,
    pub session_id: String,
    pub statement_id: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub resource: String,
    pub statement: String,
    pub fingerprint: String,
    pub parameters: Vec<String>,
    pub rule: String,
    pub reason: String,
    pub mode: String,
    pub approvers: Vec<String>,
    pub min_approvals: i64,
    pub ttl_ms: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub status: String,
    pub decided_ms: Option<i64>,
    pub valid_until_ms: Option<i64>,
}

impl ApprovalRow {
    /// The status as of `now`: undecided requests and unused retry
    /// approvals lapse at their deadline.
    pub fn effective_status(&self, now: i64) -> &str {
        match self.status.as_str() {
            "pending" if now >= self.expires_ms => "expired",
            "approved" if self.valid_until_ms.is_some_and(|v| now >= v) => "expired",
            s => s,
        }
    }

    fn from_row(r: &AnyRow) -> Result<Self> {
        let json = |col: &str| -> Result<Vec<String>> {
            let text: String = r.try_get(col)?;
            Ok(serde_json::from_str(&text).unwrap_or_default())
        };
        Ok(Self {
            id: r.try_get("id")?,
            agent: r.try_get("agent")?,
            session_id: r.try_get("session_id")?,
            statement_id: r.try_get("statement_id")?,
            subject: r.try_get("subject")?,
            groups: json("groups_json")?,
            resource: r.try_get("resource")?,
            statement: r.try_get("statement")?,
            fingerprint: r.try_get("fingerprint")?,
            parameters: json("parameters_json")?,
            rule: r.try_get("rule")?,
            reason: r.try_get("reason")?,
            mode: r.try_get("mode")?,
            approvers: json("approvers_json")?,
            min_approvals: r.try_get("min_approvals")?,
            ttl_ms: r.try_get("ttl_ms")?,
            created_ms: r.try_get("created_ms")?,
            expires_ms: r.try_get("expires_ms")?,
            status: r.try_get("status")?,
            decided_ms: r.try_get("decided_ms")?,
            valid_until_ms: r.try_get("valid_until_ms")?,
        })
    }
}

/// One approver's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteRow {
    pub approval_id: String,
    pub approver: String,
    pub groups: Vec<String>,
    /// `approve` or `deny`.
    pub decision: String,
    pub reason: String,
    pub time_ms: i64,
}

const COLUMNS: &str = "id, agent, session_id, statement_id, subject, groups_json, resource, statement, fingerprint, parameters_json, rule, reason, mode, approvers_json, min_approvals, ttl_ms, created_ms, expires_ms, status, decided_ms, valid_until_ms";

impl Store {
    /// Stores a new request; `false` when one with its id exists already
    /// (an agent resending after a reconnect).
    pub async fn insert_approval(&self, a: &ApprovalRow) -> Result<bool> {
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) ON CONFLICT (id) DO NOTHING"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&a.id)
            .bind(&a.agent)
            .bind(&a.session_id)
            .bind(&a.statement_id)
            .bind(&a.subject)
            .bind(json(&a.groups))
            .bind(&a.resource)
            .bind(&a.statement)
            .bind(&a.fingerprint)
            .bind(json(&a.parameters))
            .bind(&a.rule)
            .bind(&a.reason)
            .bind(&a.mode)
            .bind(json(&a.approvers))
            .bind(a.min_approvals)
            .bind(a.ttl_ms)
            .bind(a.created_ms)
            .bind(a.expires_ms)
            .bind(&a.status)
            .bind(a.decided_ms)
            .bind(a.valid_until_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ApprovalRow::from_row).transpose()
    }

    /// Newest first; `status` filters on the stored status.
    /// Up to `limit` requests (with `status`, if given), newest first,
    /// older than `before` (`(created_ms, id)` of the last one seen) if
    /// given: a page of the list.
    pub async fn approvals(
        &self,
        status: Option<&str>,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<ApprovalRow>> {
        // Keyset paging; the unused conditions are switched off by their
        // own flag binds, so there is one statement for every case.
        let (after_key, created, id) = match before {
            Some((created, id)) => (1i64, created, id),
            None => (0, 0, ""),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals \
             WHERE ($1 = 0 OR status = $2) \
               AND ($3 = 0 OR created_ms < $4 OR (created_ms = $4 AND id < $5)) \
             ORDER BY created_ms DESC, id DESC LIMIT $6"
        )))
        .bind(i64::from(status.is_some()))
        .bind(status.unwrap_or(""))
        .bind(after_key)
        .bind(created)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ApprovalRow::from_row).collect()
    }

    /// Moves a request from one of `from` to `to`; `false` when it was in
    /// another state (someone else decided first).
    pub async fn set_approval_status(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        decided_ms: Option<i64>,
        valid_until_ms: Option<i64>,
    ) -> Result<bool> {
        let mut changed = false;
        for f in from {
            let done = sqlx::query(
                "UPDATE approvals SET status = $1, decided_ms = COALESCE($2, decided_ms), valid_until_ms = COALESCE($3, valid_until_ms) WHERE id = $4 AND status = $5",
            )
            .bind(to)
            .bind(decided_ms)
            .bind(valid_until_ms)
            .bind(id)
            .bind(*f)
            .execute(&self.pool)
            .await?;
            changed |= done.rows_affected() == 1;
        }
        Ok(changed)
    }

    /// Requests whose deadline passed undecided, and retry approvals not
    /// used in time, as of `now`.
    pub async fn lapsed_approvals(&self, now: i64) -> Result<Vec<ApprovalRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE (status = 'pending' AND expires_ms <= $1) OR (status = 'approved' AND valid_until_ms IS NOT NULL AND valid_until_ms <= $1) ORDER BY created_ms LIMIT 1000"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ApprovalRow::from_row).collect()
    }

    /// Records a vote; `false` when this approver already voted.
    pub async fn insert_vote(&self, v: &VoteRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO approval_votes (approval_id, approver, groups_json, decision, reason, time_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (approval_id, approver) DO NOTHING",
        )
        .bind(&v.approval_id)
        .bind(&v.approver)
        .bind(serde_json::to_string(&v.groups).unwrap_or_else(|_| "[]".into()))
        .bind(&v.decision)
        .bind(&v.reason)
        .bind(v.time_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn votes(&self, approval_id: &str) -> Result<Vec<VoteRow>> {
        let rows = sqlx::query(
            "SELECT approval_id, approver, groups_json, decision, reason, time_ms FROM approval_votes WHERE approval_id = $1 ORDER BY time_ms, approver",
        )
        .bind(approval_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let groups: String = r.try_get("groups_json")?;
                Ok(VoteRow {
                    approval_id: r.try_get("approval_id")?,
                    approver: r.try_get("approver")?,
                    groups: serde_json::from_str(&groups).unwrap_or_default(),
                    decision: r.try_get("decision")?,
                    reason: r.try_get("reason")?,
                    time_ms: r.try_get("time_ms")?,
                })
            })
            .collect()
    }
}
