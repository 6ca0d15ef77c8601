//! Telling the other replicas at once what changed here, through
//! PostgreSQL's LISTEN/NOTIFY.
//!
//! Replicas share state through the database; what they must hear about
//! promptly is a change that concerns something attached to another
//! replica: a new configuration revision (its agents need a new snapshot),
//! a message in the outbox for an agent attached elsewhere (an approval
//! decision, a kill), and an approval request filed or changed (its live
//! stream, `/api/v1/approvals/events`, is served by every replica). Each
//! is announced on one channel as a small JSON notice and acted on by the
//! replicas that receive it, after reading the database: a notice says
//! where to look, never what to do, so a forged or stale one does no more
//! than an extra read.
//!
//! Notifications are lost while a listener is disconnected, so each replica
//! also polls (`SLUICE_HA_POLL_INTERVAL`) and catches up whenever its
//! listener (re)connects. On SQLite (one replica) there is nothing to tell
//! and nothing is sent.

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch};

use crate::{ControlPlane, store::Store};

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "sluice_changes";

/// Notices waiting to be sent; beyond this they are dropped (and the
/// pollers deliver what they announced).
const QUEUE: usize = 1024;

/// What changed. Serialized as `{"kind": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The configuration revision moved.
    Revision,
    /// The outbox holds messages for `agent`.
    Commands { agent: String },
    /// Approval request `id` was filed (`event` is `approval.request`) or
    /// changed (`approval.update`).
    Approval { id: String, event: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    /// The replica that sent it (a replica ignores its own).
    origin: String,
    #[serde(flatten)]
    change: Change,
}

/// This replica's side of the fan-out: [`Fanout::emit`] queues a notice
/// for the other replicas.
pub struct Fanout {
    origin: String,
    tx: Option<mpsc::Sender<Change>>,
    /// Notices that could not be queued.
    dropped: Counter,
}

impl Fanout {
    /// No other replica to tell (SQLite).
    pub fn disabled() -> Self {
        Self {
            origin: String::new(),
            tx: None,
            dropped: Counter::default(),
        }
    }

    /// Sends notices through `store`'s database from a background task,
    /// counting them in `metrics`.
    pub fn start(store: Store, metrics: &crate::metrics::Metrics) -> Self {
        let (sent, dropped) = (
            metrics.replica_notices_sent.clone(),
            metrics.replica_notices_dropped.clone(),
        );
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = mpsc::channel::<Change>(QUEUE);
        let sender = origin.clone();
        let failed = dropped.clone();
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let payload = serde_json::to_string(&Notice {
                    origin: sender.clone(),
                    change,
                })
                .unwrap_or_default();
                match store.notify(CHANNEL, &payload).await {
                    Ok(()) => {
                        sent.inc();
                    }
                    Err(e) => {
                        failed.inc();
                        tracing::warn!(error = %e, "cannot tell the other replicas about a change; they pick it up when they next poll");
                    }
                }
            }
        });
        Self {
            origin,
            tx: Some(tx),
            dropped,
        }
    }

    /// Queues `change` for the other replicas; never waits.
    pub fn emit(&self, change: Change) {
        let Some(tx) = &self.tx else {
            return;
        };
        if let Err(e) = tx.try_send(change) {
            self.dropped.inc();
            tracing::warn!(error = %e, "too many changes to tell the other replicas about; they pick this one up when they next poll");
        }
    }

    /// Whether `payload` is a notice another replica sent, and what it says.
    fn parse(&self, payload: &str) -> Option<Change> {
        match serde_json::from_str::<Notice>(payload) {
            Ok(n) if n.origin == self.origin => None,
            Ok(n) => Some(n.change),
            Err(e) => {
                tracing::warn!(error = %e, payload, "ignoring a malformed notice on the change channel");
                None
            }
        }
    }
}

/// Listens for the other replicas' notices on `url` and acts on them until
/// `stop` flips; reconnects after a failure, and catches up (reads the
/// revision, sends waiting messages) each time it (re)connects.
pub async fn listen(cp: Arc<ControlPlane>, url: String, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match subscribe(&url).await {
            Ok(mut listener) => {
                backoff = Duration::from_millis(500);
                cp.metrics.replica_listener_connected.set(1);
                tracing::debug!("listening for changes made through other replicas");
                catch_up(&cp).await;
                loop {
                    tokio::select! {
                        r = listener.try_recv() => match r {
                            Ok(Some(n)) => {
                                if let Some(change) = cp.fanout.parse(n.payload()) {
                                    cp.metrics.replica_notices_received.inc();
                                    apply(&cp, change).await;
                                }
                            }
                            Ok(None) => {
                                tracing::warn!("lost the connection that listens for other replicas' changes; reconnecting");
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot listen for other replicas' changes; reconnecting");
                                break;
                            }
                        },
                        _ = stop.changed() => return,
                    }
                }
                cp.metrics.replica_listener_connected.set(0);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for other replicas' changes (polling meanwhile)");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn subscribe(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// What a poll would have found: notices sent while nobody listened.
async fn catch_up(cp: &ControlPlane) {
    apply(cp, Change::Revision).await;
    if let Err(e) = crate::commands::deliver_pending(cp, None).await {
        tracing::warn!(error = %e, "cannot look for messages to agents");
    }
}

async fn apply(cp: &ControlPlane, change: Change) {
    match change {
        Change::Revision => match cp.store.revision().await {
            Ok(rev) => cp.notify_change(rev),
            Err(e) => tracing::warn!(error = %e, "cannot read the configuration revision"),
        },
        Change::Commands { agent } => {
            if let Err(e) = crate::commands::deliver_pending(cp, Some(&agent)).await {
                tracing::warn!(agent, error = %e, "cannot look for messages to the agent; the next poll sends them");
            }
        }
        Change::Approval { id, event } => crate::approvals::relay(cp, &id, &event).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_small_tagged_json() {
        let notice = Notice {
            origin: "r1".into(),
            change: Change::Commands {
                agent: "edge".into(),
            },
        };
        let text = serde_json::to_string(&notice).unwrap();
        assert_eq!(text, r#"{"origin":"r1","kind":"commands","agent":"edge"}"#);
        let back: Notice = serde_json::from_str(&text).unwrap();
        assert_eq!(back.change, notice.change);
    }

    #[test]
    fn a_replica_ignores_its_own_notices_and_malformed_ones() {
        let mine = Fanout {
            origin: "me".into(),
            tx: None,
            dropped: Counter::default(),
        };
        assert_eq!(mine.parse(r#"{"origin":"me","kind":"revision"}"#), None);
        assert_eq!(
            mine.parse(r#"{"origin":"other","kind":"revision"}"#),
            Some(Change::Revision)
        );
        assert_eq!(
            mine.parse(
                r#"{"origin":"other","kind":"approval","id":"a1","event":"approval.update"}"#
            ),
            Some(Change::Approval {
                id: "a1".into(),
                event: "approval.update".into()
            })
        );
        assert_eq!(mine.parse(r#"{"origin":"other","kind":"reboot"}"#), None);
        assert_eq!(mine.parse("not json"), None);
    }
}
