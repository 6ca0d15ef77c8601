//! Session recording on the control plane: ingesting agents' audit
//! batches (sealing each session when its last event arrives), and
//! reading a session back as a transcript or a verification report.
//!
//! What is stored is exactly what the agent hashed (see
//! `sluice_audit_chain::event_hash`), except the agent name, which comes
//! from the authenticated connection: an agent that names another agent
//! in its events gets them reported as altered. Large attributes live in
//! the blob store; the store gives them back verbatim, or marks them
//! unavailable, in which case the event never verifies and the transcript
//! says its result is unavailable.

use serde::Serialize;
use sluice_audit_chain::{self as chain, Seal, SealClaim, SealKey};
use sluice_proto as pb;

use crate::{
    ControlPlane,
    store::{MAX_SESSION_EVENTS, SessionSealRow, Store, StoreError, StoredAuditEvent, now_ms},
};

/// What the chain hash is recomputed over for an event whose blob-backed
/// attributes are unavailable: no agent writes this (a NUL never appears
/// in JSON text), so such an event is always reported as altered, even if
/// its row was tampered to point an empty attributes text at a blob.
const UNAVAILABLE_ATTRIBUTES: &str = "\u{0}attributes unavailable";

/// Converts an event received from `agent` (its authenticated name).
pub fn from_proto(e: pb::AuditEvent, agent: &str) -> StoredAuditEvent {
    let chained = !e.hash.is_empty();
    StoredAuditEvent {
        cursor: 0,
        id: e.id,
        agent: agent.to_owned(),
        seq: i64::try_from(e.seq).unwrap_or(i64::MAX),
        time_ms: e.time_unix_ms,
        kind: e.kind,
        session_id: e.session_id,
        subject: e.subject,
        groups: e.groups,
        resource: e.resource,
        decision: e.decision,
        rule: e.rule,
        statement: e.statement,
        parameters: e.parameters,
        duration_us: e.duration_us,
        rows: e.rows,
        error: e.error,
        client_addr: e.client_addr,
        attributes_json: e.attributes_json,
        attributes_blob: None,
        attributes_unavailable: None,
        session_seq: chained.then(|| i64::try_from(e.session_seq).unwrap_or(i64::MAX)),
        prev_hash: (!e.prev_hash.is_empty()).then_some(e.prev_hash),
        hash: chained.then_some(e.hash),
    }
}

/// The event as the agent hashed it (given it named itself correctly and
/// its attributes are available).
pub fn to_proto(e: &StoredAuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        seq: u64::try_from(e.seq).unwrap_or(0),
        id: e.id.clone(),
        time_unix_ms: e.time_ms,
        kind: e.kind.clone(),
        session_id: e.session_id.clone(),
        subject: e.subject.clone(),
        groups: e.groups.clone(),
        resource: e.resource.clone(),
        agent: e.agent.clone(),
        decision: e.decision.clone(),
        rule: e.rule.clone(),
        statement: e.statement.clone(),
        parameters: e.parameters.clone(),
        duration_us: e.duration_us,
        rows: e.rows,
        error: e.error.clone(),
        client_addr: e.client_addr.clone(),
        attributes_json: if e.attributes_unavailable.is_some() {
            UNAVAILABLE_ATTRIBUTES.to_owned()
        } else {
            e.attributes_json.clone()
        },
        prev_hash: e.prev_hash.clone().unwrap_or_default(),
        hash: e.hash.clone().unwrap_or_default(),
        session_seq: e
            .session_seq
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
    }
}

/// Stores a batch received from `agent` and seals the sessions it ends,
/// in one transaction. Idempotent: a redelivered batch adds no events,
/// and its seals are identical (Ed25519 signatures are deterministic).
/// Returns how many events were new.
pub async fn ingest(
    cp: &ControlPlane,
    agent: &str,
    events: Vec<pb::AuditEvent>,
) -> Result<u64, StoreError> {
    let mut seals = Vec::new();
    for e in &events {
        if !e.agent.is_empty() && e.agent != agent {
            tracing::warn!(agent, claimed = %e.agent, event = %e.id, "audit event names another agent; it is stored under the authenticated name and will not verify");
        }
        if e.hash.is_empty() || e.session_id.is_empty() || !chain::ends_session(e) {
            continue;
        }
        let claim = SealClaim::for_end(e);
        seals.push(SessionSealRow {
            session_id: claim.session_id.clone(),
            agent: agent.to_owned(),
            event_count: i64::try_from(claim.event_count).unwrap_or(i64::MAX),
            head_hash: claim.head_hash.clone(),
            signature: cp.keys.seal.sign(&claim),
            key_id: cp.keys.seal.kid().to_owned(),
            sealed_at_ms: now_ms(),
        });
    }
    let stored: Vec<StoredAuditEvent> = events.into_iter().map(|e| from_proto(e, agent)).collect();
    let inserted = cp.store.insert_audit_batch(agent, &stored, &seals).await?;
    for s in &seals {
        tracing::info!(agent, session = %s.session_id, events = s.event_count, "session sealed");
    }
    Ok(inserted)
}

/// A stored seal as the verifier takes it.
pub fn seal_of(row: &SessionSealRow) -> Seal {
    Seal {
        claim: SealClaim {
            session_id: row.session_id.clone(),
            event_count: u64::try_from(row.event_count).unwrap_or(0),
            head_hash: row.head_hash.clone(),
        },
        key_id: row.key_id.clone(),
        signature: row.signature.clone(),
    }
}

/// Verifies a stored session with this control plane's seal key; `None`
/// when nothing is known about it.
pub async fn verify(
    cp: &ControlPlane,
    session_id: &str,
) -> Result<Option<(chain::Report, Option<SessionSealRow>)>, StoreError> {
    let public = cp.keys.seal.public_key();
    let keys = [SealKey {
        key_id: cp.keys.seal.kid(),
        public_key: &public,
    }];
    verify_stored(&cp.store, session_id, &keys).await
}

/// Verifies a stored session against `keys` (the seal keys to accept).
pub async fn verify_stored(
    store: &Store,
    session_id: &str,
    keys: &[SealKey<'_>],
) -> Result<Option<(chain::Report, Option<SessionSealRow>)>, StoreError> {
    let events = store.session_events(session_id, MAX_SESSION_EVENTS).await?;
    if i64::try_from(events.len()).unwrap_or(i64::MAX) >= MAX_SESSION_EVENTS {
        // A partial load would read as events missing at the end.
        return Err(StoreError::Conflict(format!(
            "session `{session_id}` has {MAX_SESSION_EVENTS} events or more, too many to verify through the API"
        )));
    }
    let seal = store.session_seal(session_id).await?;
    if events.is_empty() && seal.is_none() {
        return Ok(None);
    }
    let events: Vec<pb::AuditEvent> = events.iter().map(to_proto).collect();
    let report = chain::verify(
        session_id,
        &events,
        seal.as_ref().map(seal_of).as_ref(),
        keys,
    );
    Ok(Some((report, seal)))
}

/// One line of a session's transcript: a statement with its decision and
/// (when it ran) its result, or another recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranscriptEntry {
    /// Chain position of the entry's first event.
    pub position: Option<i64>,
    pub time_ms: i64,
    pub kind: String,
    pub statement: String,
    pub parameters: Vec<String>,
    /// allow, deny, approve, ...
    pub decision: String,
    pub rule: String,
    /// Why the decision was made (the deny message), if given.
    pub reason: String,
    /// ok, error, denied, no_result (allowed, but no result recorded), or
    /// the decision for anything else.
    pub outcome: String,
    pub duration_us: Option<i64>,
    pub rows: Option<i64>,
    pub error: String,
    pub statement_id: Option<String>,
    /// What the client received, as the agent recorded it (bounded):
    /// `{"sets": [{"columns": [...], "rows": [[...]]}], "truncated": "..."}`.
    pub result: Option<serde_json::Value>,
    /// Set when the recorded result cannot be shown: why (its blob is
    /// missing or corrupt).
    pub result_unavailable: Option<String>,
}

impl TranscriptEntry {
    /// The entry for event `e`, with no reason, error, timing or result yet.
    fn of(e: &StoredAuditEvent, statement_id: Option<String>, outcome: String) -> Self {
        Self {
            position: e.session_seq,
            time_ms: e.time_ms,
            kind: e.kind.clone(),
            statement: e.statement.clone(),
            parameters: e.parameters.clone(),
            decision: e.decision.clone(),
            rule: e.rule.clone(),
            reason: String::new(),
            outcome,
            duration_us: None,
            rows: None,
            error: String::new(),
            statement_id,
            result: None,
            result_unavailable: None,
        }
    }
}

fn statement_id(e: &StoredAuditEvent) -> Option<String> {
    e.attributes()
        .get("statement_id")
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// The session's statements and other events, in chain order; the
/// session's start and end are summarized elsewhere.
///
/// A `statement` event carries the decision and, for a statement that ran,
/// its outcome. Agents before one event per statement recorded the outcome
/// in a separate `statement.result` event; those are paired with their
/// decision by statement id.
pub fn transcript(events: &[StoredAuditEvent]) -> Vec<TranscriptEntry> {
    let mut entries: Vec<TranscriptEntry> = Vec::new();
    let mut open: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // A session is recorded by one agent, so in one form.
    let split = events.iter().any(|e| e.kind == "statement.result");
    for e in events {
        match e.kind.as_str() {
            "session.start" | "session.end" => {}
            "statement.result" => {
                let id = statement_id(e);
                let slot = match (&id, &e.attributes_unavailable) {
                    (Some(id), _) => open.remove(id),
                    // Its statement id was in the lost attributes: pair it
                    // with the earliest open statement of the same text.
                    (None, Some(_)) => {
                        let found = open
                            .iter()
                            .filter(|(_, i)| {
                                entries.get(**i).is_some_and(|x| x.statement == e.statement)
                            })
                            .min_by_key(|(_, i)| **i)
                            .map(|(k, _)| k.clone());
                        found.and_then(|k| open.remove(&k))
                    }
                    (None, None) => None,
                };
                let outcome = if e.error.is_empty() { "ok" } else { "error" };
                let result = e.attributes().get("result").cloned();
                let unavailable = e
                    .attributes_unavailable
                    .as_ref()
                    .map(|why| format!("the recorded result is unavailable: {why}"));
                match slot.and_then(|i| entries.get_mut(i)) {
                    Some(entry) => {
                        entry.result = result;
                        entry.result_unavailable = unavailable;
                        entry.outcome = outcome.to_owned();
                        entry.duration_us = Some(e.duration_us);
                        entry.rows = Some(e.rows);
                        entry.error.clone_from(&e.error);
                    }
                    None => entries.push(TranscriptEntry {
                        duration_us: Some(e.duration_us),
                        rows: Some(e.rows),
                        error: e.error.clone(),
                        result,
                        result_unavailable: unavailable,
                        ..TranscriptEntry::of(e, id, outcome.to_owned())
                    }),
                }
            }
            "statement" if e.decision != "deny" && !split => {
                let attrs = e.attributes();
                let outcome = if attrs.get("outcome").is_some_and(|o| o == "unknown") {
                    "no_result"
                } else if e.decision == "error" || !e.error.is_empty() {
                    "error"
                } else {
                    "ok"
                };
                entries.push(TranscriptEntry {
                    duration_us: Some(e.duration_us),
                    rows: Some(e.rows),
                    error: e.error.clone(),
                    result: attrs.get("result").cloned(),
                    result_unavailable: e
                        .attributes_unavailable
                        .as_ref()
                        .map(|why| format!("the recorded result is unavailable: {why}")),
                    ..TranscriptEntry::of(e, statement_id(e), outcome.to_owned())
                });
            }
            _ => {
                let id = statement_id(e);
                let is_statement = e.kind == "statement";
                let outcome = match (is_statement, e.decision.as_str()) {
                    (true, "deny") => "denied".to_owned(),
                    (true, "allow") => "no_result".to_owned(),
                    (_, d) => d.to_owned(),
                };
                if is_statement
                    && e.decision == "allow"
                    && let Some(id) = &id
                {
                    open.insert(id.clone(), entries.len());
                }
                // A statement's error field is its denial reason; anything
                // else's is an error.
                let (reason, error) = if is_statement {
                    (e.error.clone(), String::new())
                } else {
                    (String::new(), e.error.clone())
                };
                entries.push(TranscriptEntry {
                    reason,
                    error,
                    duration_us: (!is_statement).then_some(e.duration_us),
                    rows: (!is_statement).then_some(e.rows),
                    ..TranscriptEntry::of(e, id, outcome)
                });
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(kind: &str, decision: &str, statement: &str, id: &str) -> StoredAuditEvent {
        StoredAuditEvent {
            kind: kind.into(),
            decision: decision.into(),
            statement: statement.into(),
            attributes_json: format!(r#"{{"statement_id":"{id}"}}"#),
            ..Default::default()
        }
    }

    #[test]
    fn proto_round_trip_keeps_the_hash() {
        let mut e = pb::AuditEvent {
            id: "e1".into(),
            time_unix_ms: -5,
            kind: "statement".into(),
            session_id: "s".into(),
            agent: "edge".into(),
            groups: vec!["b".into(), "a".into(), String::new()],
            parameters: vec![String::new(), "x\u{0}y".into()],
            attributes_json: r#"{ "b":1, "a":2 }"#.into(),
            rows: i64::MIN,
            duration_us: i64::MAX,
            session_seq: 7,
            prev_hash: vec![1; 32],
            seq: 42,
            ..Default::default()
        };
        e.hash = chain::event_hash(&e).to_vec();
        let back = to_proto(&from_proto(e.clone(), "edge"));
        assert_eq!(back, e);
        assert_eq!(chain::event_hash(&back).to_vec(), e.hash);
        // The first event of a session has an empty prev_hash.
        let mut first = e.clone();
        first.session_seq = 0;
        first.prev_hash.clear();
        first.hash = chain::event_hash(&first).to_vec();
        assert_eq!(to_proto(&from_proto(first.clone(), "edge")), first);
    }

    #[test]
    fn transcript_shows_each_statement_with_its_outcome() {
        let mut ran = stored("statement", "allow", "select 1", "q1");
        (ran.rows, ran.duration_us) = (3, 120);
        ran.attributes_json =
            r#"{"statement_id":"q1","result":{"sets":[{"columns":["a"],"rows":[["1"]]}]}}"#.into();
        let mut denied = stored("statement", "deny", "drop table t", "q2");
        denied.error = "rule no-ddl".into();
        let mut failed = stored("statement", "error", "select x", "q3");
        failed.error = "column x does not exist".into();
        let mut unknown = stored("statement", "allow", "select pg_sleep(10)", "q4");
        unknown.error = "the agent stopped".into();
        unknown.attributes_json = r#"{"statement_id":"q4","outcome":"unknown"}"#.into();
        let events = vec![
            stored("session.start", "allow", "", ""),
            ran,
            denied,
            failed,
            unknown,
            stored("session.end", "", "", ""),
        ];
        let t = transcript(&events);
        let outcomes: Vec<_> = t.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, ["ok", "denied", "error", "no_result"]);
        assert_eq!((t[0].rows, t[0].duration_us), (Some(3), Some(120)));
        assert_eq!(t[0].result.as_ref().unwrap()["sets"][0]["rows"][0][0], "1");
        assert_eq!(t[0].statement_id.as_deref(), Some("q1"));
        assert_eq!(
            (t[1].reason.as_str(), t[1].error.as_str()),
            ("rule no-ddl", "")
        );
        assert_eq!(t[2].error, "column x does not exist");
        assert_eq!(t[3].error, "the agent stopped");
    }

    #[test]
    fn transcript_pairs_decisions_with_results_of_earlier_agents() {
        let mut result = stored("statement.result", "allow", "select 1", "q1");
        (result.rows, result.duration_us) = (3, 120);
        let mut denied = stored("statement", "deny", "drop table t", "q2");
        denied.error = "rule no-ddl".into();
        let mut failed = stored("statement.result", "error", "select x", "q3");
        failed.error = "column x does not exist".into();
        let events = vec![
            stored("session.start", "allow", "", ""),
            stored("statement", "allow", "select 1", "q1"),
            result,
            denied,
            stored("statement", "allow", "select x", "q3"),
            failed,
            stored("statement", "allow", "select pg_sleep(10)", "q4"),
            stored("session.end", "", "", ""),
        ];
        let t = transcript(&events);
        let outcomes: Vec<_> = t.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, ["ok", "denied", "error", "no_result"]);
        assert_eq!((t[0].rows, t[0].duration_us), (Some(3), Some(120)));
        assert_eq!(t[1].reason, "rule no-ddl");
        assert_eq!(t[2].error, "column x does not exist");
        assert_eq!((t[3].rows, t[3].duration_us), (None, None));
    }
}
