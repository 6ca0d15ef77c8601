//! CancelRequest routing. Clients get agent-generated (pid, key) pairs;
//! a cancel carrying a pair the agent issued is forwarded to that
//! session's target backend, and nothing else is. PostgreSQL checks a
//! 32-bit random key together with a pid anyone can guess; the agent's
//! pid is random too (31 bits, as clients read it as a positive `int4`),
//! so a client guessing pairs, one connection each, has 63 bits to search.

use std::{collections::HashMap, sync::Mutex};

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
    sessions: Mutex<HashMap<(u32, u32), Target>>,
}

impl CancelRegistry {
    /// Issues the (pid, key) pair the client will see, and a receiver that
    /// changes whenever a cancel for it arrives. `None` when the system's
    /// random source fails: a guessable pair, or one another session holds,
    /// would let others cancel this session's statements.
    pub fn register(
        &self,
        resource: &pb::Resource,
        backend_pid: u32,
        backend_key: u32,
    ) -> Option<(u32, u32, watch::Receiver<u64>)> {
        let random = || {
            let mut bytes = [0u8; 4];
            SystemRandom::new().fill(&mut bytes).ok()?;
            Some(u32::from_be_bytes(bytes))
        };
        let mut sessions = self.lock();
        let mut attempts = 0;
        let (pid, key) = loop {
            let pair = ((random()? & 0x7fff_ffff).max(1), random()?);
            if !sessions.contains_key(&pair) {
                break pair;
            }
            // Only a failing random source repeats itself like this.
            attempts += 1;
            if attempts == 64 {
                tracing::error!(
                    "the random source keeps repeating; refusing to reuse a cancel key"
                );
                return None;
            }
        };
        let (cancels, cancelled) = watch::channel(0);
        sessions.insert(
            (pid, key),
            Target {
                address: resource.address.clone(),
                backend_pid,
                backend_key,
                cancels,
            },
        );
        Some((pid, key, cancelled))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pairs_are_random_positive_and_only_the_exact_pair_cancels() {
        let registry = CancelRegistry::default();
        let resource = pb::Resource {
            address: "127.0.0.1:1".into(),
            ..Default::default()
        };
        let mut pairs = std::collections::HashSet::new();
        let mut receivers = Vec::new();
        for _ in 0..1000 {
            let (pid, key, cancelled) = registry.register(&resource, 7, 8).unwrap();
            assert!(pid >= 1 && i32::try_from(pid).is_ok(), "{pid}");
            assert!(pairs.insert((pid, key)));
            receivers.push((pid, key, cancelled));
        }
        // Not handed out in order: the pid says nothing about the next one.
        let pids: Vec<u32> = receivers.iter().map(|(p, _, _)| *p).collect();
        assert!(!pids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        let (pid, key, cancelled) = &receivers[0];
        registry.cancel(*pid, key.wrapping_add(1)).await;
        assert_eq!(*cancelled.borrow(), 0, "a wrong key cancels nothing");
        // The right pair reaches its session (the target here is not
        // listening, so only the session's own count shows it).
        registry.cancel(*pid, *key).await;
        assert_eq!(*cancelled.borrow(), 1);
        registry.unregister(*pid, *key);
        registry.cancel(*pid, *key).await;
        assert_eq!(*cancelled.borrow(), 1, "an ended session's pair is gone");
    }
}
