//! Live client sessions on this agent, so that an admin (a `KillSession`
//! from the control plane) or a policy change that revokes a grant can end
//! them. A session registers when it starts and is removed when its guard
//! drops; ending it sends the reason on the session's own channel, and the
//! session closes itself with a FATAL error the client can read.
//!
//! When the agent shuts down it *drains*: every session is told, and each
//! ends on its own as soon as it is between transactions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sluice_policy::Subject;
use tokio::sync::watch;

use crate::snapshot::Active;

struct Live {
    subject: Subject,
    resource: String,
    /// The mask rules the session was started with.
    masks: Vec<sluice_policy::MaskSpec>,
    end: watch::Sender<Option<String>>,
}

pub struct LiveSessions {
    sessions: Mutex<HashMap<String, Live>>,
    /// `true` once the agent is shutting down.
    draining: watch::Sender<bool>,
}

impl Default for LiveSessions {
    fn default() -> Self {
        Self {
            sessions: Mutex::default(),
            draining: watch::Sender::new(false),
        }
    }
}

/// Removes its session from the registry when dropped.
pub struct Registration {
    registry: Arc<LiveSessions>,
    id: String,
    /// Receives the reason when the session must end.
    pub ended: watch::Receiver<Option<String>>,
    /// Becomes `true` when the agent shuts down: the session should end
    /// at its next point between transactions.
    pub draining: watch::Receiver<bool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl LiveSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(
        self: &Arc<Self>,
        id: &str,
        subject: Subject,
        resource: &str,
        masks: Vec<sluice_policy::MaskSpec>,
    ) -> Registration {
        let (end, ended) = watch::channel(None);
        self.lock().insert(
            id.to_owned(),
            Live {
                subject,
                resource: resource.to_owned(),
                masks,
                end,
            },
        );
        Registration {
            registry: self.clone(),
            id: id.to_owned(),
            ended,
            draining: self.draining.subscribe(),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every session, live and yet to register, to end at its next
    /// point between transactions (see [`Registration::draining`]).
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Ends every live session now; how many.
    pub fn end_all(&self, reason: &str) -> usize {
        let sessions = self.lock();
        for live in sessions.values() {
            live.end.send_replace(Some(reason.to_owned()));
        }
        sessions.len()
    }

    /// Ends one session; `false` when it is not live here.
    pub fn end(&self, id: &str, reason: &str) -> bool {
        match self.lock().get(id) {
            Some(live) => {
                live.end.send_replace(Some(reason.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Ends every session of `subject` (on `resource`, when not empty).
    pub fn end_subject(&self, subject: &str, resource: &str, reason: &str) -> usize {
        let sessions = self.lock();
        let mut n = 0;
        for live in sessions.values() {
            if live.subject.id == subject && (resource.is_empty() || live.resource == resource) {
                live.end.send_replace(Some(reason.to_owned()));
                n += 1;
            }
        }
        n
    }

    /// Ends the sessions `active` no longer grants (their subject may not
    /// connect to their resource any more, or the resource is gone) and
    /// those whose mask rules changed (a session masks with the rules it
    /// started with; it must not go on with weaker ones).
    pub fn revoke(&self, active: &Active) -> usize {
        let sessions = self.lock();
        let mut n = 0;
        for (id, live) in sessions.iter() {
            if let Some(why) = outdated(active, live) {
                tracing::warn!(session = %id, subject = %live.subject.id, resource = %live.resource, version = active.version, reason = %why, "ending the session");
                live.end.send_replace(Some(why.to_string()));
                n += 1;
            }
        }
        n
    }

    /// Why session `id`, just registered, may not begin under `active`
    /// (the snapshot in force now; `None` when there is none). A session
    /// is granted and its mask rules are read from the snapshot of its
    /// login, before it registers; a snapshot applied in between ends the
    /// sessions registered then ([`LiveSessions::revoke`]) and is published
    /// first, so checking again once registered misses none.
    pub fn recheck(&self, id: &str, active: Option<&Active>) -> Option<Outdated> {
        let Some(active) = active else {
            return Some(Outdated::NoSnapshot);
        };
        self.lock().get(id).and_then(|live| outdated(active, live))
    }
}

/// Why a session no longer matches the policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outdated {
    /// Its subject is no longer granted its resource.
    Revoked { resource: String, version: u64 },
    /// The mask rules for its subject and resource are not the ones it
    /// started with.
    MasksChanged { resource: String, version: u64 },
    /// The agent holds no valid snapshot (it denies everything).
    NoSnapshot,
}

impl std::fmt::Display for Outdated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outdated::Revoked { resource, version } => write!(
                f,
                "access to \"{resource}\" was revoked (policy version {version})"
            ),
            Outdated::MasksChanged { resource, version } => write!(
                f,
                "the mask rules for \"{resource}\" changed (policy version {version}); reconnect"
            ),
            Outdated::NoSnapshot => f.write_str(
                "the agent has no valid policy from the control plane; connect again when it has",
            ),
        }
    }
}

fn outdated(active: &Active, live: &Live) -> Option<Outdated> {
    let granted = active.resources.contains_key(&live.resource)
        && active
            .policy
            .connect(&live.subject, &live.resource)
            .is_some();
    if !granted {
        return Some(Outdated::Revoked {
            resource: live.resource.clone(),
            version: active.version,
        });
    }
    let masks: Vec<&sluice_policy::MaskSpec> =
        active.policy.masks_for(&live.subject, &live.resource);
    if masks.len() != live.masks.len() || masks.iter().zip(&live.masks).any(|(a, b)| *a != b) {
        return Some(Outdated::MasksChanged {
            resource: live.resource.clone(),
            version: active.version,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_reaches_the_session_and_the_guard_deregisters() {
        let registry = Arc::new(LiveSessions::default());
        let a = registry.register("s1", Subject::user("alice", ["devs"]), "app", Vec::new());
        let b = registry.register("s2", Subject::user("bob", ["devs"]), "app", Vec::new());
        assert_eq!(registry.len(), 2);
        assert!(registry.end("s1", "ended by admin"));
        assert_eq!(a.ended.borrow().as_deref(), Some("ended by admin"));
        assert!(b.ended.borrow().is_none());
        assert_eq!(registry.end_subject("bob", "other", "x"), 0);
        assert_eq!(registry.end_subject("bob", "app", "revoked"), 1);
        assert_eq!(b.ended.borrow().as_deref(), Some("revoked"));
        drop(a);
        assert!(!registry.end("s1", "again"));
        assert_eq!(registry.len(), 1);
    }

    const MASKED: &str = r#"
resources:
  - { name: db, kind: postgres, agent: a, address: "h:1", database: d }
policies:
  - name: p
    subjects: { groups: [devs] }
    resources: { names: [db] }
    rules:
      - mask: { columns: ["public.t.secret"], as: redact }
        name: hide
      - allow: { sql: { statements: [read] } }
"#;

    /// A session granted and given its mask rules under one snapshot, and
    /// registered after another was applied, finds out once registered.
    #[test]
    fn a_session_registered_after_a_policy_change_is_checked_against_it() {
        let registry = Arc::new(LiveSessions::default());
        let alice = Subject::user("alice", ["devs"]);
        let now = crate::snapshot::test_active(MASKED, 2);
        // Started under a snapshot without the mask rule.
        let _a = registry.register("s1", alice.clone(), "db", Vec::new());
        assert_eq!(
            registry.recheck("s1", Some(&now)),
            Some(Outdated::MasksChanged {
                resource: "db".into(),
                version: 2
            })
        );
        let masks = now
            .policy
            .masks_for(&alice, "db")
            .into_iter()
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(masks.len(), 1);
        let _b = registry.register("s2", alice, "db", masks);
        assert_eq!(registry.recheck("s2", Some(&now)), None);
        // Granted under a snapshot that gave bob the resource.
        let _c = registry.register("s3", Subject::user("bob", ["ops"]), "db", Vec::new());
        assert_eq!(
            registry.recheck("s3", Some(&now)),
            Some(Outdated::Revoked {
                resource: "db".into(),
                version: 2
            })
        );
        assert_eq!(registry.recheck("s2", None), Some(Outdated::NoSnapshot));
    }

    #[test]
    fn draining_reaches_live_sessions_and_later_ones() {
        let registry = Arc::new(LiveSessions::default());
        let mut a = registry.register("s1", Subject::user("alice", ["devs"]), "app", Vec::new());
        assert!(!*a.draining.borrow());
        registry.drain();
        assert!(registry.is_draining());
        assert!(
            a.draining.has_changed().unwrap_or(false),
            "a live session is woken"
        );
        assert!(*a.draining.borrow_and_update());
        // Registered after the drain began (accepted just before the
        // listener closed): it sees the state, though nothing changes.
        let b = registry.register("s2", Subject::user("bob", ["devs"]), "app", Vec::new());
        assert!(*b.draining.borrow());
        assert_eq!(registry.end_all("the grace period ran out"), 2);
        assert_eq!(
            b.ended.borrow().as_deref(),
            Some("the grace period ran out")
        );
    }
}
