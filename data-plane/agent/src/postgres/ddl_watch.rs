//! Hearing about DDL run on a target by other means than this agent.
//!
//! The agent reads a target's catalog (its functions, views, types,
//! casts, policies; the columns masking resolves) once per
//! `--catalog-max-age`, and again after any DDL statement it passes. DDL
//! run on the target directly (a migration tool, a DBA's psql) would be
//! seen only when the read ages out. Where the DBA installs Sluice's event
//! trigger (`docs/ddl-notices.sql`), every DDL command's transaction sends
//! a notification on channel [`CHANNEL`] when it commits (not one that
//! only created or dropped the session's own temporary tables, which no
//! session of the agent can read); the agent keeps
//! one connection per resource listening for it (the resource's own
//! credential; `LISTEN` needs no privilege) and marks the resource's
//! catalog reads out of date, so every session reads again before its
//! next statement.
//!
//! Notices take effect at most once a second ([`NOTICE_SPACING`]): the
//! first at once, those that follow within the second at its end. A
//! session of a subject allowed `NOTIFY` could otherwise make the agent
//! read the catalog without pause.
//!
//! Without the trigger the connection hears nothing and the age bound
//! stands; the agent says so when it starts listening, and checks again
//! every `--ddl-notices-recheck` (a DBA may drop, disable or install the
//! trigger later), saying when that changes; the agent's `/status` shows
//! each resource's watch ([`WatchStatus`]). The watch starts with the
//! first session on a resource, and again (at most once per
//! [`RESTART_AFTER`]) with a later session after its connection ended, and
//! follows a resource whose definition changes (checked as often);
//! notifications missed meanwhile are covered by marking the reads out of
//! date each time it starts listening or finds the trigger back.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use sluice_proto as pb;

use super::upstream;
use crate::{Agent, snapshot::now_ms};

/// The notification channel the event trigger sends on.
pub const CHANNEL: &str = "sluice_ddl";

/// Least time between two starts of one resource's watch.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Least time between two invalidations on notices: anyone who can
/// `NOTIFY sluice_ddl` on the target must not make every agent read its
/// catalog without pause. The first notice after a quiet second takes
/// effect at once; later ones within the second, at its end.
const NOTICE_SPACING: Duration = Duration::from_secs(1);

/// How the listening connection shows in the target's `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "sluice ddl notices";

/// Upper bound on connecting and setting up the listening connection.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether an enabled event trigger calls a function that notifies
/// [`CHANNEL`] (the one in `docs/ddl-notices.sql`, or the DBA's own).
const TRIGGER_PRESENT: &str = "SELECT count(*) FROM pg_event_trigger t JOIN pg_proc p ON p.oid = t.evtfoid \
     WHERE t.evtenabled <> 'D' AND t.evtevent = 'ddl_command_end' AND p.prosrc LIKE '%sluice_ddl%'";

/// One watch per resource name.
#[derive(Default)]
pub struct DdlWatches {
    watches: Mutex<HashMap<String, Watch>>,
}

struct Watch {
    started: Instant,
    running: bool,
    status: WatchStatus,
}

/// One resource's watch as the agent's `/status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WatchStatus {
    /// A connection to the target is listening for notices.
    pub listening: bool,
    /// Whether the target had Sluice's event trigger, installed and
    /// enabled, when last checked (`None`: not checked yet). Without it
    /// the connection hears nothing.
    pub event_trigger: Option<bool>,
    /// When the trigger was last checked (ms since the Unix epoch).
    pub checked_at_ms: Option<u64>,
    /// When a notice last made the agent read the catalog again.
    pub last_notice_ms: Option<u64>,
    /// Why the watch last stopped listening (empty while it never did).
    pub stopped: String,
}

impl DdlWatches {
    /// Each watched resource's watch, by resource name.
    pub fn status(&self) -> BTreeMap<String, WatchStatus> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches
            .iter()
            .map(|(name, w)| (name.clone(), w.status.clone()))
            .collect()
    }

    fn update(&self, resource: &str, f: impl FnOnce(&mut WatchStatus)) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watches.get_mut(resource) {
            f(&mut w.status);
        }
    }

    /// Starts listening on `resource` unless a watch is running, or one
    /// started less than [`RESTART_AFTER`] ago.
    pub fn ensure(&self, agent: &Arc<Agent>, resource: &pb::Resource, credential: &pb::Credential) {
        {
            let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = watches.get(&resource.name)
                && (w.running || w.started.elapsed() < RESTART_AFTER)
            {
                return;
            }
            let status = watches
                .remove(&resource.name)
                .map(|w| w.status)
                .unwrap_or_default();
            watches.insert(
                resource.name.clone(),
                Watch {
                    started: Instant::now(),
                    running: true,
                    status,
                },
            );
        }
        let weak = Arc::downgrade(agent);
        let (mut resource, mut credential) = (resource.clone(), credential.clone());
        tokio::spawn(async move {
            loop {
                let why = watch(&weak, &resource, &credential).await;
                tracing::info!(resource = %resource.name, "stopped listening for the target's DDL notices: {why}");
                if let Some(a) = weak.upgrade() {
                    a.pg_ddl_watches.update(&resource.name, |s| {
                        s.listening = false;
                        s.stopped.clone_from(&why);
                    });
                }
                // Changed but still served: listen as the snapshot now says
                // (sessions already open keep hearing of DDL).
                let now = weak.upgrade().and_then(|a| served(&a, &resource.name));
                match now {
                    Some((r, c)) if why == CHANGED && r != resource => {
                        (resource, credential) = (r, c)
                    }
                    _ => break,
                }
            }
            if let Some(agent) = weak.upgrade() {
                let mut watches = agent
                    .pg_ddl_watches
                    .watches
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if let Some(w) = watches.get_mut(&resource.name) {
                    w.running = false;
                }
            }
        });
    }
}

/// Listens until the connection ends, the resource changes, or the agent
/// is gone; returns why it stopped.
async fn watch(
    agent: &Weak<Agent>,
    resource: &pb::Resource,
    credential: &pb::Credential,
) -> String {
    let Some((max_message, recheck_every)) = agent
        .upgrade()
        .map(|a| (a.args.max_message_bytes, a.args.ddl_notices_recheck))
    else {
        return "the agent is shutting down".into();
    };
    let setup = async {
        let name = [("application_name".to_owned(), APPLICATION_NAME.to_owned())];
        let mut conn =
            upstream::connect(resource, credential, &name, SETUP_TIMEOUT, max_message).await?;
        conn.simple_query(&format!("LISTEN {CHANNEL}")).await?;
        let present = trigger_present(&mut conn).await?;
        Ok::<_, upstream::UpstreamError>((conn, present))
    };
    let (mut conn, present) = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok(set_up)) => set_up,
        Ok(Err(e)) => return format!("cannot listen: {e}"),
        Err(_) => return "cannot listen: the target database did not answer in time".into(),
    };
    if present {
        tracing::info!(resource = %resource.name, "listening for the target's DDL notices: DDL run on it by other means is seen when it commits");
    } else {
        tracing::warn!(resource = %resource.name, "{NO_TRIGGER}");
    }
    let Some(a) = agent.upgrade() else {
        return "the agent is shutting down".into();
    };
    // What changed before the LISTEN took effect went unheard: read again,
    // though nothing is known to have changed (the last read may stand in
    // if the new one fails).
    a.pg_routines.refresh(&resource.name);
    a.pg_catalogs.refresh(&resource.name);
    a.pg_ddl_watches.update(&resource.name, |s| {
        s.listening = true;
        s.event_trigger = Some(present);
        s.checked_at_ms = Some(now_ms());
    });
    drop(a);
    let mut present = present;
    let mut last = Instant::now();
    // A notice heard within NOTICE_SPACING of the last invalidation.
    let mut pending = false;
    let mut recheck = tokio::time::interval_at((last + recheck_every).into(), recheck_every);
    loop {
        tokio::select! {
            heard = conn.notification() => match heard {
                Ok(channel) if channel == CHANNEL => {
                    if last.elapsed() < NOTICE_SPACING {
                        pending = true;
                        continue;
                    }
                    let Some(a) = agent.upgrade() else {
                        return "the agent is shutting down".into();
                    };
                    tracing::info!(resource = %resource.name, "the target's catalog changed (DDL notice); sessions read it again before their next statement");
                    invalidate(&a, &resource.name);
                    last = Instant::now();
                }
                Ok(_) => {}
                Err(e) => return format!("the listening connection ended: {e}"),
            },
            () = tokio::time::sleep_until((last + NOTICE_SPACING).into()), if pending => {
                let Some(a) = agent.upgrade() else {
                    return "the agent is shutting down".into();
                };
                tracing::info!(resource = %resource.name, "the target's catalog changed (DDL notices); sessions read it again before their next statement");
                invalidate(&a, &resource.name);
                last = Instant::now();
                pending = false;
            }
            _ = recheck.tick() => {
                let Some(a) = agent.upgrade() else {
                    return "the agent is shutting down".into();
                };
                if served(&a, &resource.name).is_none_or(|(r, _)| r != *resource) {
                    return CHANGED.into();
                }
                drop(a);
                // A notice arriving meanwhile is kept for the next turn.
                let now_present = match tokio::time::timeout(SETUP_TIMEOUT, trigger_present(&mut conn)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return format!("cannot check for the event trigger: {e}"),
                    Err(_) => return "cannot check for the event trigger: the target database did not answer in time".into(),
                };
                let Some(a) = agent.upgrade() else {
                    return "the agent is shutting down".into();
                };
                match (present, now_present) {
                    (true, false) => tracing::warn!(resource = %resource.name, "the Sluice DDL event trigger is gone or disabled on the target: {NO_TRIGGER_CONSEQUENCE}"),
                    (false, true) => {
                        tracing::info!(resource = %resource.name, "the Sluice DDL event trigger is installed on the target now: DDL run on it by other means is seen when it commits");
                        // DDL run before it was installed went unheard.
                        a.pg_routines.refresh(&resource.name);
                        a.pg_catalogs.refresh(&resource.name);
                    }
                    _ => {}
                }
                present = now_present;
                a.pg_ddl_watches.update(&resource.name, |s| {
                    s.event_trigger = Some(present);
                    s.checked_at_ms = Some(now_ms());
                });
            }
        }
    }
}

/// What the agent logs when the target has no trigger.
const NO_TRIGGER: &str = "the target has no Sluice DDL event trigger: DDL run on it other than through this agent is seen within --catalog-max-age; a superuser can install it with docs/ddl-notices.sql";

/// What a trigger gone means, and what to do.
const NO_TRIGGER_CONSEQUENCE: &str = "DDL run on it other than through this agent is seen within --catalog-max-age until a superuser installs it again (docs/ddl-notices.sql)";

/// Whether the target has the trigger ([`TRIGGER_PRESENT`]).
async fn trigger_present(conn: &mut upstream::Upstream) -> Result<bool, upstream::UpstreamError> {
    let rows = conn.simple_query(TRIGGER_PRESENT).await?;
    Ok(rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .is_some_and(|n| n != "0"))
}

/// Why a watch stops when its resource changed or is no longer served.
const CHANGED: &str = "the resource changed or is no longer served";

/// The resource named `name` and its credential, as the current snapshot
/// has them.
fn served(agent: &Agent, name: &str) -> Option<(pb::Resource, pb::Credential)> {
    let active = agent.snapshot_rx.borrow().clone()?;
    let resource = active.resources.get(name)?.clone();
    let credential = active.credentials.get(&resource.credential)?.clone();
    Some((resource, credential))
}

fn invalidate(agent: &Agent, resource: &str) {
    agent.pg_routines.invalidate(resource);
    agent.pg_catalogs.invalidate(resource);
    agent
        .pg_ddl_watches
        .update(resource, |s| s.last_notice_ms = Some(now_ms()));
}
