//! The hash chain over the audit events of one session.
//!
//! Every event of a session carries its position (`session_seq`, from 0),
//! the hash of the event before it (`prev_hash`, empty for the first) and
//! its own `hash`, computed by the agent when it spools the event:
//!
//! ```text
//! hash = SHA-256("sluice-audit-chain-v1\n" || prev_hash || session_seq || fields...)
//! ```
//!
//! Fields are encoded without ambiguity (length-prefixed strings, counted
//! lists, big-endian integers) in a fixed order, so the control plane can
//! recompute the hash from what it stored. The spool sequence number and
//! the hash itself are not covered: they are delivery details.
//!
//! Altering any covered field of an event breaks its hash; removing or
//! reordering events breaks the `prev_hash` links or positions; removing
//! the last events is caught by the seal the control plane signs over the
//! chain head when the session ends ([`seal`]); [`verify`] checks a stored
//! session against both and names what is wrong.
//!
//! The crate does no I/O; the seal's signature check (Ed25519 through
//! `ring`) lives here too, so an auditor's tool and the control plane
//! share one implementation.

pub mod seal;
pub mod verify;

pub use seal::{SEAL_ALGORITHM, Seal, SealClaim, SealKey, ends_session};
pub use verify::{Problem, Report, Status, verify};

use ring::digest;
use sluice_proto as pb;

const DOMAIN: &[u8] = b"sluice-audit-chain-v1\n";

/// Length of a chain hash (SHA-256).
pub const HASH_LEN: usize = 32;

/// Computes the chain hash of `event` from its `prev_hash`, `session_seq`
/// and content fields (its `hash` and `seq` are ignored).
#[must_use]
pub fn event_hash(event: &pb::AuditEvent) -> [u8; HASH_LEN] {
    let mut h = Hasher(digest::Context::new(&digest::SHA256));
    h.0.update(DOMAIN);
    h.bytes(&event.prev_hash);
    h.u64(event.session_seq);
    h.str(&event.id);
    h.i64(event.time_unix_ms);
    h.str(&event.kind);
    h.str(&event.session_id);
    h.str(&event.subject);
    h.list(&event.groups);
    h.str(&event.resource);
    h.str(&event.agent);
    h.str(&event.decision);
    h.str(&event.rule);
    h.str(&event.statement);
    h.list(&event.parameters);
    h.i64(event.duration_us);
    h.i64(event.rows);
    h.str(&event.error);
    h.str(&event.client_addr);
    h.str(&event.attributes_json);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(h.0.finish().as_ref());
    out
}

/// The running state of one session's chain, kept by whoever appends its
/// events (the session's task on the agent).
#[derive(Debug, Clone, Default)]
pub struct Chain {
    next_seq: u64,
    head: Vec<u8>,
}

impl Chain {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `event`'s position, `prev_hash` and `hash` as the next link.
    /// The chain does not move until [`Chain::commit`], so an event that
    /// could not be stored leaves no gap.
    pub fn link(&self, event: &mut pb::AuditEvent) {
        event.session_seq = self.next_seq;
        event.prev_hash.clone_from(&self.head);
        event.hash = event_hash(event).to_vec();
    }

    /// Moves the chain past `event`, which was linked with [`Chain::link`]
    /// and stored.
    pub fn commit(&mut self, event: &pb::AuditEvent) {
        self.next_seq = event.session_seq + 1;
        self.head.clone_from(&event.hash);
    }

    /// Number of events committed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// Hash of the last committed event (empty before the first).
    #[must_use]
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

struct Hasher(digest::Context);

impl Hasher {
    fn bytes(&mut self, b: &[u8]) {
        // Audit fields are far below 4 GiB; saturate rather than wrap.
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.update(&len.to_be_bytes());
        self.0.update(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.update(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.update(&v.to_be_bytes());
    }
    fn list(&mut self, items: &[String]) {
        self.u64(items.len() as u64);
        for item in items {
            self.str(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, statement: &str) -> pb::AuditEvent {
        pb::AuditEvent {
            id: format!("id-{kind}-{statement}"),
            kind: kind.into(),
            session_id: "s1".into(),
            subject: "alice".into(),
            statement: statement.into(),
            ..Default::default()
        }
    }

    #[test]
    fn links_events_in_order() {
        let mut chain = Chain::new();
        let mut a = event("session.start", "");
        chain.link(&mut a);
        chain.commit(&a);
        let mut b = event("statement", "select 1");
        chain.link(&mut b);
        chain.commit(&b);
        assert_eq!(a.session_seq, 0);
        assert!(a.prev_hash.is_empty());
        assert_eq!(b.session_seq, 1);
        assert_eq!(b.prev_hash, a.hash);
        assert_eq!(chain.head(), b.hash.as_slice());
        assert_eq!(chain.len(), 2);
        assert_eq!(event_hash(&b).to_vec(), b.hash);
    }

    #[test]
    fn every_covered_field_changes_the_hash() {
        let mut base = event("statement", "select 1");
        base.groups = vec!["g".into()];
        base.parameters = vec!["p".into()];
        let h = event_hash(&base);
        let edits: Vec<fn(&mut pb::AuditEvent)> = vec![
            |e| e.statement.push(' '),
            |e| e.session_seq += 1,
            |e| e.prev_hash = vec![1],
            |e| e.time_unix_ms += 1,
            |e| e.groups.push("h".into()),
            |e| e.parameters[0] = "q".into(),
            |e| e.rows = 7,
            |e| e.decision = "deny".into(),
            |e| e.attributes_json = "{}".into(),
        ];
        for edit in edits {
            let mut e = base.clone();
            edit(&mut e);
            assert_ne!(event_hash(&e), h);
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = event("statement", "");
        a.subject = "ab".into();
        a.resource = "c".into();
        let mut b = a.clone();
        b.subject = "a".into();
        b.resource = "bc".into();
        assert_ne!(event_hash(&a), event_hash(&b));
        let mut c = a.clone();
        c.groups = vec!["x,y".into()];
        let mut d = a.clone();
        d.groups = vec!["x".into(), "y".into()];
        assert_ne!(event_hash(&c), event_hash(&d));
    }

    #[test]
    fn spool_sequence_and_hash_are_not_covered() {
        let mut e = event("statement", "select 1");
        let h = event_hash(&e);
        e.seq = 99;
        e.hash = vec![1, 2, 3];
        assert_eq!(event_hash(&e), h);
    }
}
