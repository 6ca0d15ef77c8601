//! Just-in-time approvals on the agent.
//!
//! A statement that policy sends to approval becomes a request to the
//! control plane. In `wait` mode the session holds the statement and waits
//! here for the decision; in `retry` mode the client is told at once, and
//! an approval becomes a one-time grant for exactly that statement: same
//! subject, resource, text and parameter values, used once, within its
//! TTL. Requests are resent whenever the agent (re)connects; the control
//! plane treats a request id it knows as the same request.
//!
//! A client sending a retry-mode statement again while its request is
//! still undecided is pointed at that request, not given another: a client
//! retrying in a loop leaves approvers one request to decide, and one that
//! retries the moment it is approved finds the grant (see
//! [`Approvals::on_retry`]). Likewise a statement whose retry-mode request
//! was denied is told so, and not filed again, until that request would
//! have expired: a client retrying a denied statement in a loop cannot
//! ask approvers again and again.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use sluice_proto as pb;
use tokio::sync::{Notify, oneshot};

/// What an approval covers, beyond its request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantKey {
    pub subject: String,
    pub resource: String,
    pub statement: String,
    /// SHA-256 of the Bind parameters exactly as sent (formats, NULLs,
    /// bytes), not of their audit rendering, where SQL NULL and the text
    /// `NULL` read alike.
    pub parameters: [u8; 32],
}

struct Outstanding {
    request: pb::ApprovalRequest,
    /// What a retry-mode approval of it will let run.
    key: GrantKey,
    /// The held statement's session, in wait mode.
    waiter: Option<oneshot::Sender<pb::ApprovalDecision>>,
    /// The retry-mode session, told once the control plane has stored it.
    filed: Option<oneshot::Sender<()>>,
    /// The control plane has stored it.
    confirmed: bool,
}

/// How a filed request goes on for its session.
#[derive(Debug)]
pub enum Filing {
    /// Wait mode: the decision arrives here.
    Wait(oneshot::Receiver<pb::ApprovalDecision>),
    /// Retry mode: resolves once the control plane has stored the request,
    /// or (closed) once it is decided or dropped, so no longer pending.
    Retry(oneshot::Receiver<()>),
}

struct Grant {
    request_id: String,
    valid_until_ms: i64,
    /// Taken by a session whose statement is not yet on its way (see
    /// [`Approvals::take_grant`]): nobody else may take it meanwhile.
    taken: bool,
}

/// A retry-mode request that was denied: what a statement sent again
/// before `until_ms` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub request_id: String,
    pub approvers: Vec<String>,
    pub reason: String,
    /// When the denied request would have expired: from then on the
    /// statement may be filed again.
    pub until_ms: i64,
}

#[derive(Default)]
struct Inner {
    outstanding: HashMap<String, Outstanding>,
    grants: HashMap<GrantKey, Grant>,
    /// Denied retry-mode requests, by what they covered (at most
    /// [`MAX_OUTSTANDING`], pruned when they lapse).
    denials: HashMap<GrantKey, Denied>,
    /// Messages for the control plane, in order.
    outbox: VecDeque<pb::ApprovalRequest>,
}

#[derive(Default)]
pub struct Approvals {
    inner: Mutex<Inner>,
    wake: Notify,
    /// Woken on every decision, for sessions waiting on [`Approvals::on_retry`].
    decided: Notify,
}

/// A retry-mode request still awaiting its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub request_id: String,
    /// The control plane has confirmed it stored the request (until then,
    /// nobody can approve it).
    pub confirmed: bool,
}

/// What a statement an approve rule covers finds on the agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried {
    /// A one-time grant for exactly this statement, now taken (see
    /// [`Approvals::take_grant`]): its request id.
    Grant(String),
    /// The undecided retry-mode request filed for exactly this statement.
    Pending(Pending),
    /// The retry-mode request for exactly this statement was denied, and
    /// would not have expired yet.
    Denied(Denied),
    /// Neither: a request is to be filed.
    Nothing,
}

/// Most outstanding requests (an abusive client cannot grow this without
/// bound; beyond it new requests are refused).
const MAX_OUTSTANDING: usize = 10_000;

/// Most outstanding requests of one subject (one cannot starve the rest).
const MAX_OUTSTANDING_PER_SUBJECT: usize = 100;

#[derive(Debug, thiserror::Error)]
#[error("too many approval requests are outstanding on this agent (limit {0}); wait for decisions")]
pub struct TooMany(usize);

impl Approvals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Files a request.
    pub fn request(
        &self,
        request: pb::ApprovalRequest,
        key: GrantKey,
        wait: bool,
    ) -> Result<Filing, TooMany> {
        let mut inner = self.lock();
        if inner.outstanding.len() >= MAX_OUTSTANDING {
            return Err(TooMany(MAX_OUTSTANDING));
        }
        let mine = inner
            .outstanding
            .values()
            .filter(|o| o.request.subject == request.subject)
            .count();
        if mine >= MAX_OUTSTANDING_PER_SUBJECT {
            return Err(TooMany(MAX_OUTSTANDING_PER_SUBJECT));
        }
        let (waiter, filed, filing) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), None, Filing::Wait(rx))
        } else {
            let (tx, rx) = oneshot::channel();
            (None, Some(tx), Filing::Retry(rx))
        };
        inner.outbox.push_back(request.clone());
        inner.outstanding.insert(
            request.request_id.clone(),
            Outstanding {
                request,
                key,
                waiter,
                filed,
                confirmed: false,
            },
        );
        drop(inner);
        self.wake.notify_one();
        Ok(filing)
    }

    /// The control plane has stored the request `request_id`.
    pub fn filed(&self, request_id: &str) {
        let filed = self.lock().outstanding.get_mut(request_id).and_then(|o| {
            o.confirmed = true;
            o.filed.take()
        });
        if let Some(filed) = filed {
            let _ = filed.send(());
        }
    }

    /// A decision from the control plane.
    pub fn decided(&self, decision: pb::ApprovalDecision) {
        self.apply(decision);
        // Sessions in `on_retry` look again, now the grant is in place.
        self.decided.notify_waiters();
    }

    fn apply(&self, decision: pb::ApprovalDecision) {
        let mut inner = self.lock();
        if decision.outcome != "approved" {
            // Expired or denied on the control plane: a grant it had given
            // is void too.
            inner
                .grants
                .retain(|_, g| g.request_id != decision.request_id);
        }
        let Some(o) = inner.outstanding.remove(&decision.request_id) else {
            tracing::debug!(request = %decision.request_id, "decision for a request this agent does not hold");
            return;
        };
        tracing::info!(request = %decision.request_id, outcome = %decision.outcome, "approval decided");
        match o.waiter {
            Some(waiter) => {
                let _ = waiter.send(decision);
            }
            None if decision.outcome == "approved" => {
                inner.grants.insert(
                    o.key,
                    Grant {
                        request_id: decision.request_id,
                        valid_until_ms: decision.valid_until_unix_ms,
                        taken: false,
                    },
                );
            }
            None if decision.outcome == "denied" => {
                let now = i64::try_from(crate::snapshot::now_ms()).unwrap_or(i64::MAX);
                inner.denials.retain(|_, d| d.until_ms > now);
                // Full: forgotten, so a repeat files again (as before).
                if inner.denials.len() < MAX_OUTSTANDING {
                    inner.denials.insert(
                        o.key,
                        Denied {
                            request_id: decision.request_id,
                            approvers: decision.approvers,
                            reason: decision.reason,
                            until_ms: o.request.expires_at_unix_ms,
                        },
                    );
                }
            }
            None => {}
        }
    }

    /// For a statement an approve rule covers: the grant for exactly this
    /// statement if there is one (taken, as by [`Approvals::take_grant`]),
    /// else the retry-mode request already filed for it, if still pending.
    ///
    /// A pending request the control plane has stored may have just been
    /// approved, its decision on the way here: a client told the request
    /// id can be approved and retried faster than the decision travels.
    /// So this waits up to `wait` for its decision before answering.
    pub async fn on_retry(&self, key: &GrantKey, wait: Duration) -> Retried {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let decided = self.decided.notified();
            tokio::pin!(decided);
            decided.as_mut().enable();
            let now = i64::try_from(crate::snapshot::now_ms()).unwrap_or(i64::MAX);
            // One look, under one lock: a decision applied between looking
            // for the grant and for the request would leave neither, and
            // the statement would be filed again.
            let pending = {
                let mut inner = self.lock();
                if let Some(request_id) = take_grant(&mut inner, key, now) {
                    return Retried::Grant(request_id);
                }
                let Some(pending) = pending(&inner, key, now) else {
                    return match denied(&inner, key, now) {
                        Some(d) => Retried::Denied(d),
                        None => Retried::Nothing,
                    };
                };
                pending
            };
            if !pending.confirmed || tokio::time::timeout_at(deadline, decided).await.is_err() {
                return Retried::Pending(pending);
            }
        }
    }

    /// Takes the grant for exactly this statement, if there is a valid
    /// one, and returns its request id. Nobody else can take it until the
    /// caller either spends it ([`Approvals::spend_grant`], once the
    /// statement is on record and on its way) or gives it back
    /// ([`Approvals::return_grant`], when the statement could not run, e.g.
    /// because the audit spool refused it).
    pub fn take_grant(&self, key: &GrantKey, now_ms: i64) -> Option<String> {
        take_grant(&mut self.lock(), key, now_ms)
    }

    /// The statement ran on the grant `request_id` took: the grant is gone
    /// and the control plane is told it was used.
    pub fn spend_grant(&self, key: &GrantKey, request_id: &str) {
        let mut inner = self.lock();
        if inner
            .grants
            .get(key)
            .is_some_and(|g| g.request_id == request_id)
        {
            inner.grants.remove(key);
        }
        inner.outbox.push_back(pb::ApprovalRequest {
            request_id: request_id.to_owned(),
            state: "used".into(),
            ..Default::default()
        });
        drop(inner);
        self.wake.notify_one();
    }

    /// The statement did not run: the grant `request_id` took can be used
    /// again (unless the control plane voided it meanwhile, or it expires).
    pub fn return_grant(&self, key: &GrantKey, request_id: &str) {
        if let Some(g) = self
            .lock()
            .grants
            .get_mut(key)
            .filter(|g| g.request_id == request_id)
        {
            g.taken = false;
        }
    }

    /// Ends a request without a decision (`withdrawn`, `expired`).
    pub fn abandon(&self, request_id: &str, state: &str) {
        let mut inner = self.lock();
        inner.outstanding.remove(request_id);
        inner.outbox.push_back(pb::ApprovalRequest {
            request_id: request_id.to_owned(),
            state: state.to_owned(),
            ..Default::default()
        });
        drop(inner);
        self.wake.notify_one();
    }

    /// On (re)connection: queue every undecided request again (updates
    /// not yet sent stay queued).
    pub fn resend_all(&self) {
        let mut inner = self.lock();
        let pending: Vec<_> = inner
            .outstanding
            .values()
            .map(|o| o.request.clone())
            .collect();
        inner
            .outbox
            .retain(|m| !matches!(m.state.as_str(), "" | "pending"));
        inner.outbox.extend(pending);
        drop(inner);
        self.wake.notify_one();
    }

    /// Messages to send now.
    pub fn drain(&self) -> Vec<pb::ApprovalRequest> {
        self.lock().outbox.drain(..).collect()
    }

    /// Resolves when there may be messages to send.
    pub async fn notified(&self) {
        self.wake.notified().await;
    }
}

/// See [`Approvals::take_grant`].
fn take_grant(inner: &mut Inner, key: &GrantKey, now_ms: i64) -> Option<String> {
    inner
        .grants
        .retain(|_, g| g.taken || g.valid_until_ms > now_ms);
    let grant = inner.grants.get_mut(key).filter(|g| !g.taken)?;
    grant.taken = true;
    Some(grant.request_id.clone())
}

/// The undecided retry-mode request for exactly this statement, unless it
/// has expired.
fn pending(inner: &Inner, key: &GrantKey, now_ms: i64) -> Option<Pending> {
    inner
        .outstanding
        .values()
        .filter(|o| o.waiter.is_none() && o.request.expires_at_unix_ms > now_ms && o.key == *key)
        .max_by_key(|o| o.confirmed)
        .map(|o| Pending {
            request_id: o.request.request_id.clone(),
            confirmed: o.confirmed,
        })
}

/// The denial of the retry-mode request for exactly this statement, while
/// that request would not have expired.
fn denied(inner: &Inner, key: &GrantKey, now_ms: i64) -> Option<Denied> {
    inner
        .denials
        .get(key)
        .filter(|d| d.until_ms > now_ms)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, params: &[&str]) -> pb::ApprovalRequest {
        pb::ApprovalRequest {
            request_id: id.into(),
            subject: "alice".into(),
            resource: "app".into(),
            statement: "DELETE FROM t WHERE id = $1".into(),
            parameters: params.iter().map(|p| (*p).to_owned()).collect(),
            mode: "retry".into(),
            expires_at_unix_ms: i64::MAX,
            ..Default::default()
        }
    }

    /// A key for `r` (the parameters stand in for the exact Bind bytes).
    fn key(r: &pb::ApprovalRequest) -> GrantKey {
        let digest =
            ring::digest::digest(&ring::digest::SHA256, r.parameters.join("\0").as_bytes());
        GrantKey {
            subject: r.subject.clone(),
            resource: r.resource.clone(),
            statement: r.statement.clone(),
            parameters: digest.as_ref().try_into().unwrap(),
        }
    }

    fn file(a: &Approvals, r: pb::ApprovalRequest, wait: bool) -> Result<Filing, TooMany> {
        let k = key(&r);
        a.request(r, k, wait)
    }

    fn approved(id: &str, until: i64) -> pb::ApprovalDecision {
        pb::ApprovalDecision {
            request_id: id.into(),
            outcome: "approved".into(),
            valid_until_unix_ms: until,
            ..Default::default()
        }
    }

    #[test]
    fn one_subject_cannot_hold_more_than_its_share_of_requests() {
        let a = Approvals::default();
        for i in 0..MAX_OUTSTANDING_PER_SUBJECT {
            file(&a, req(&format!("r{i}"), &[]), false).unwrap();
        }
        let err = file(&a, req("one-too-many", &[]), false).unwrap_err();
        assert!(err.to_string().contains("limit 100"), "{err}");
        // Someone else is not starved.
        let mut bob = req("bob-1", &[]);
        bob.subject = "bob".into();
        assert!(file(&a, bob, true).is_ok());
        // A decision frees a place.
        a.decided(pb::ApprovalDecision {
            request_id: "r0".into(),
            outcome: "denied".into(),
            ..Default::default()
        });
        assert!(file(&a, req("again", &[]), false).is_ok());
        assert!(file(&a, req("and-again", &[]), false).is_err());
    }

    #[test]
    fn a_retry_approval_covers_exactly_one_execution_of_exactly_that_statement() {
        let a = Approvals::default();
        file(&a, req("r1", &["1"]), false).unwrap();
        assert_eq!(a.drain().len(), 1);
        a.decided(approved("r1", 1_000));
        let other_param = key(&req("x", &["2"]));
        assert_eq!(a.take_grant(&other_param, 10), None);
        let mut other_subject = key(&req("x", &["1"]));
        other_subject.subject = "bob".into();
        assert_eq!(a.take_grant(&other_subject, 10), None);
        let same = key(&req("x", &["1"]));
        assert_eq!(a.take_grant(&same, 10).as_deref(), Some("r1"));
        assert_eq!(a.take_grant(&same, 10), None, "taken");
        assert!(a.drain().is_empty(), "not used yet");
        a.spend_grant(&same, "r1");
        assert_eq!(a.take_grant(&same, 10), None, "used once");
        // A grant the control plane expires is void.
        file(&a, req("r2", &["3"]), false).unwrap();
        a.decided(approved("r2", 1_000));
        a.decided(pb::ApprovalDecision {
            request_id: "r2".into(),
            outcome: "expired".into(),
            ..Default::default()
        });
        assert_eq!(a.take_grant(&key(&req("x", &["3"])), 10), None);
        let used = a.drain();
        assert_eq!(used[0].state, "used");
    }

    #[test]
    fn a_grant_whose_statement_could_not_run_can_be_used_again() {
        let a = Approvals::default();
        file(&a, req("r1", &["1"]), false).unwrap();
        a.drain();
        a.decided(approved("r1", 1_000));
        let same = key(&req("x", &["1"]));
        assert_eq!(a.take_grant(&same, 10).as_deref(), Some("r1"));
        // Taken: another session cannot take it meanwhile...
        assert_eq!(a.take_grant(&same, 10), None);
        // ...and it is not spent when the statement did not run.
        a.return_grant(&same, "r1");
        assert!(a.drain().is_empty(), "the control plane was told nothing");
        assert_eq!(a.take_grant(&same, 20).as_deref(), Some("r1"));
        a.spend_grant(&same, "r1");
        let used = a.drain();
        assert_eq!(used.len(), 1);
        assert_eq!(
            (used[0].request_id.as_str(), used[0].state.as_str()),
            ("r1", "used")
        );
        assert_eq!(a.take_grant(&same, 30), None);
        // A grant the control plane voids while taken is not given back.
        file(&a, req("r2", &["2"]), false).unwrap();
        a.decided(approved("r2", 1_000));
        let other = key(&req("x", &["2"]));
        assert_eq!(a.take_grant(&other, 10).as_deref(), Some("r2"));
        a.decided(pb::ApprovalDecision {
            request_id: "r2".into(),
            outcome: "expired".into(),
            ..Default::default()
        });
        a.return_grant(&other, "r2");
        assert_eq!(a.take_grant(&other, 10), None);
        // Nor one that expired while taken.
        file(&a, req("r3", &["3"]), false).unwrap();
        a.decided(approved("r3", 100));
        let third = key(&req("x", &["3"]));
        assert_eq!(a.take_grant(&third, 10).as_deref(), Some("r3"));
        a.return_grant(&third, "r3");
        assert_eq!(a.take_grant(&third, 100), None);
    }

    #[test]
    fn an_expired_grant_is_not_used() {
        let a = Approvals::default();
        file(&a, req("r1", &[]), false).unwrap();
        a.decided(approved("r1", 1_000));
        assert_eq!(a.take_grant(&key(&req("x", &[])), 1_000), None);
    }

    #[tokio::test]
    async fn a_wait_request_receives_its_decision_and_is_resent_until_decided() {
        let a = Approvals::default();
        let Ok(Filing::Wait(rx)) = file(&a, req("r1", &[]), true) else {
            panic!("a wait-mode request is waited on");
        };
        a.drain();
        a.resend_all();
        assert_eq!(a.drain().len(), 1, "undecided requests are resent");
        a.decided(pb::ApprovalDecision {
            request_id: "r1".into(),
            outcome: "denied".into(),
            ..Default::default()
        });
        assert_eq!(rx.await.unwrap().outcome, "denied");
        a.resend_all();
        assert!(a.drain().is_empty());
    }

    #[tokio::test]
    async fn a_statement_sent_again_is_pointed_at_its_pending_request() {
        let a = Approvals::default();
        let no_wait = Duration::ZERO;
        file(&a, req("r1", &["1"]), false).unwrap();
        let same = key(&req("x", &["1"]));
        let unconfirmed = Pending {
            request_id: "r1".into(),
            confirmed: false,
        };
        assert_eq!(
            a.on_retry(&same, no_wait).await,
            Retried::Pending(unconfirmed)
        );
        a.filed("r1");
        let confirmed = Pending {
            request_id: "r1".into(),
            confirmed: true,
        };
        assert_eq!(
            a.on_retry(&same, Duration::from_millis(20)).await,
            Retried::Pending(confirmed),
            "undecided after the wait"
        );
        // Not for another parameter value or subject.
        assert_eq!(
            a.on_retry(&key(&req("x", &["2"])), no_wait).await,
            Retried::Nothing
        );
        let mut bob = same.clone();
        bob.subject = "bob".into();
        assert_eq!(a.on_retry(&bob, no_wait).await, Retried::Nothing);
        // Not for a request held in wait mode (that statement is its own),
        // nor for one past its expiry.
        file(&a, req("w1", &["3"]), true).unwrap();
        assert_eq!(
            a.on_retry(&key(&req("x", &["3"])), no_wait).await,
            Retried::Nothing
        );
        let mut lapsed = req("r2", &["4"]);
        lapsed.expires_at_unix_ms = 1_000;
        file(&a, lapsed, false).unwrap();
        assert_eq!(
            a.on_retry(&key(&req("x", &["4"])), no_wait).await,
            Retried::Nothing
        );
        // Expired: no longer pending, so the next run files anew.
        a.decided(pb::ApprovalDecision {
            request_id: "r1".into(),
            outcome: "expired".into(),
            ..Default::default()
        });
        assert_eq!(a.on_retry(&same, no_wait).await, Retried::Nothing);
    }

    #[tokio::test]
    async fn a_denied_statement_sent_again_is_told_so_until_its_request_would_have_expired() {
        let a = Approvals::default();
        let no_wait = Duration::ZERO;
        let now = i64::try_from(crate::snapshot::now_ms()).unwrap();
        let mut r = req("r1", &["1"]);
        r.expires_at_unix_ms = now + 60_000;
        file(&a, r, false).unwrap();
        let mut lapsing = req("r2", &["2"]);
        lapsing.expires_at_unix_ms = now + 100;
        file(&a, lapsing, false).unwrap();
        for id in ["r1", "r2"] {
            a.decided(pb::ApprovalDecision {
                request_id: id.into(),
                outcome: "denied".into(),
                approvers: vec!["dana".into()],
                reason: "not on a Friday".into(),
                ..Default::default()
            });
        }
        let same = key(&req("x", &["1"]));
        assert_eq!(
            a.on_retry(&same, no_wait).await,
            Retried::Denied(Denied {
                request_id: "r1".into(),
                approvers: vec!["dana".into()],
                reason: "not on a Friday".into(),
                until_ms: now + 60_000,
            })
        );
        // Only exactly that statement, and only until it would have expired.
        assert_eq!(
            a.on_retry(&key(&req("x", &["3"])), no_wait).await,
            Retried::Nothing
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            a.on_retry(&key(&req("x", &["2"])), no_wait).await,
            Retried::Nothing,
            "past the denied request's expiry it may be asked again"
        );
        // A wait-mode denial reaches its held statement, nothing is kept.
        let Ok(Filing::Wait(decision)) = file(&a, req("w1", &["4"]), true) else {
            panic!("a wait-mode request is filed");
        };
        a.decided(pb::ApprovalDecision {
            request_id: "w1".into(),
            outcome: "denied".into(),
            ..Default::default()
        });
        assert_eq!(decision.await.unwrap().outcome, "denied");
        assert_eq!(
            a.on_retry(&key(&req("x", &["4"])), no_wait).await,
            Retried::Nothing
        );
    }

    #[tokio::test]
    async fn a_decision_on_its_way_reaches_the_statement_sent_again() {
        let a = std::sync::Arc::new(Approvals::default());
        file(&a, req("r1", &["1"]), false).unwrap();
        a.filed("r1");
        let same = key(&req("x", &["1"]));
        let waiting = tokio::spawn({
            let (a, same) = (a.clone(), same.clone());
            async move { a.on_retry(&same, Duration::from_secs(30)).await }
        });
        // Approved while the statement sent again waits for it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "waits for the decision");
        a.decided(approved("r1", i64::MAX));
        assert_eq!(waiting.await.unwrap(), Retried::Grant("r1".into()));
        // Taken by that statement: nobody else gets it.
        assert_eq!(a.on_retry(&same, Duration::ZERO).await, Retried::Nothing);
    }

    #[tokio::test]
    async fn a_retry_session_learns_when_its_request_is_on_the_control_plane() {
        let a = Approvals::default();
        let Ok(Filing::Retry(mut filed)) = file(&a, req("r1", &[]), false) else {
            panic!("a retry-mode request is filed");
        };
        a.filed("another");
        assert!(filed.try_recv().is_err(), "not yet stored");
        a.filed("r1");
        assert_eq!(filed.await, Ok(()));
        a.filed("r1");
        // A request decided before it was confirmed is no longer pending.
        let Ok(Filing::Retry(filed)) = file(&a, req("r2", &[]), false) else {
            panic!("a retry-mode request is filed");
        };
        a.decided(approved("r2", 1_000));
        assert!(filed.await.is_err(), "closed: decided");
    }
}
