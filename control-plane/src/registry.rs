//! Agents currently attached to this replica, and the channel to each.
//!
//! Approval decisions and session kills are sent by looking the agent up
//! here and sending on its stream (see `crate::commands`).

use std::{
    collections::HashMap,
    sync::Mutex,
    sync::atomic::{AtomicU64, Ordering},
};

use sluice_proto::ControlMessage;
use tokio::sync::mpsc;

pub struct Attached {
    pub connection_id: u64,
    pub peer: String,
    pub agent_version: String,
    pub since_ms: i64,
    pub snapshot_version: u64,
    pub sender: mpsc::Sender<ControlMessage>,
}

#[derive(Default)]
pub struct AgentRegistry {
    next_id: AtomicU64,
    agents: Mutex<HashMap<String, Attached>>,
}

/// What the API shows about an attached agent.
#[derive(Debug, Clone)]
pub struct AttachedInfo {
    pub peer: String,
    pub agent_version: String,
    pub snapshot_version: u64,
}

impl AgentRegistry {
    pub fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a connection; a previous connection of the same agent is
    /// replaced (its stream ends when its sender is dropped).
    pub fn attach(&self, name: &str, conn: Attached) {
        self.lock().insert(name.to_owned(), conn);
    }

    /// Removes the agent only if `connection_id` is still the current one.
    pub fn detach(&self, name: &str, connection_id: u64) -> bool {
        let mut agents = self.lock();
        if agents
            .get(name)
            .is_some_and(|a| a.connection_id == connection_id)
        {
            agents.remove(name);
            true
        } else {
            false
        }
    }

    pub fn update(&self, name: &str, connection_id: u64, f: impl FnOnce(&mut Attached)) {
        if let Some(a) = self
            .lock()
            .get_mut(name)
            .filter(|a| a.connection_id == connection_id)
        {
            f(a);
        }
    }

    pub fn info(&self, name: &str) -> Option<AttachedInfo> {
        self.lock().get(name).map(|a| AttachedInfo {
            peer: a.peer.clone(),
            agent_version: a.agent_version.clone(),
            snapshot_version: a.snapshot_version,
        })
    }

    pub fn sender(&self, name: &str) -> Option<mpsc::Sender<ControlMessage>> {
        self.lock().get(name).map(|a| a.sender.clone())
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }
}
