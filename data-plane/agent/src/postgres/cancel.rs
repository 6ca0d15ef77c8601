//! CancelRequest routing. Clients get agent-generated (pid, key) pairs;
//! a cancel carrying a pair the agent issued is forwarded to that
//! session's target backend, and nothing else is: the key is 32 random
//! bits checked together with the pid, as PostgreSQL does.

use std::{
    collections::HashMap,
    sync::Mutex,
    sync::atomic::{AtomicU32, Ordering},
};

use ring::rand::{SecureRandom as _, SystemRandom};
use sluice_proto as pb;
use tokio::{io::AsyncWriteExt as _, sync::watch};

struct Target {
    address: String,
    backend_pid: u32,
    backend_key: u32,
    /// Counts cancels, so a session holding a statement for approval can
    /// withdraw it.
    cancels: watch::Sender<u64>,
}

#[derive(Default)]
pub struct CancelRegistry {
    next_pid: AtomicU32,
    sessions: Mutex<HashMap<(u32, u32), Target>>,
}

impl CancelRegistry {
    /// Issues the (pid, key) pair the client will see, and a receiver that
    /// changes whenever a cancel for it arrives.
    pub fn register(
        &self,
        resource: &pb::Resource,
        backend_pid: u32,
        backend_key: u32,
    ) -> (u32, u32, watch::Receiver<u64>) {
        let pid = self
            .next_pid
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let mut key = [0u8; 4];
        let _ = SystemRandom::new().fill(&mut key);
        let key = u32::from_be_bytes(key);
        let (cancels, cancelled) = watch::channel(0);
        self.lock().insert(
            (pid, key),
            Target {
                address: resource.address.clone(),
                backend_pid,
                backend_key,
                cancels,
            },
        );
        (pid, key, cancelled)
    }

    pub fn unregister(&self, pid: u32, key: u32) {
        self.lock().remove(&(pid, key));
    }

    /// Forwards a cancel to the target if the pair is one we issued.
    pub async fn cancel(&self, pid: u32, key: u32) {
        let target = self.lock().get(&(pid, key)).map(|t| {
            t.cancels.send_modify(|n| *n += 1);
            (t.address.clone(), t.backend_pid, t.backend_key)
        });
        let Some((address, backend_pid, backend_key)) = target else {
            // Debug, not info: anyone who can reach the port can send
            // these, and guessing keys must not flood the log.
            tracing::debug!(pid, "ignoring a cancel request with an unknown key");
            return;
        };
        let result = async {
            let mut s = tokio::net::TcpStream::connect(&address).await?;
            s.write_all(&sluice_pgwire::messages::cancel_request(
                backend_pid,
                backend_key,
            ))
            .await?;
            s.shutdown().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), result).await {
            Ok(Ok(())) => tracing::info!(pid, "cancel request forwarded"),
            Ok(Err(e)) => tracing::warn!(pid, error = %e, "cannot forward a cancel request"),
            Err(_) => tracing::warn!(pid, "forwarding a cancel request timed out"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, u32), Target>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}
