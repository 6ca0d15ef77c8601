//! The seal: the control plane's signature over a session's chain head,
//! made when the session ends, so removing events from the end (which
//! leaves a shorter but well-linked chain) is caught.
//!
//! The signed message is domain-separated and unambiguous:
//!
//! ```text
//! "sluice-audit-seal-v1\n"
//!   || u32be(len(session_id)) || session_id
//!   || u64be(event_count)
//!   || u32be(len(head_hash))  || head_hash
//! ```
//!
//! signed with Ed25519. Anyone holding the control plane's seal public key
//! can check a seal offline.

use ring::signature::{ED25519, UnparsedPublicKey};
use sluice_proto as pb;

const SEAL_DOMAIN: &[u8] = b"sluice-audit-seal-v1\n";

/// Signature algorithm of seals.
pub const SEAL_ALGORITHM: &str = "ed25519";

/// What the control plane attests when a session ends: the session had
/// `event_count` events and the last one hashed to `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealClaim {
    pub session_id: String,
    pub event_count: u64,
    pub head_hash: Vec<u8>,
}

impl SealClaim {
    /// The claim made by the event that ends a session (see
    /// [`ends_session`]).
    #[must_use]
    pub fn for_end(event: &pb::AuditEvent) -> Self {
        Self {
            session_id: event.session_id.clone(),
            event_count: event.session_seq.saturating_add(1),
            head_hash: event.hash.clone(),
        }
    }

    /// The exact bytes that are signed.
    #[must_use]
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(
            SEAL_DOMAIN.len() + 4 + self.session_id.len() + 8 + 4 + self.head_hash.len(),
        );
        m.extend_from_slice(SEAL_DOMAIN);
        push_bytes(&mut m, self.session_id.as_bytes());
        m.extend_from_slice(&self.event_count.to_be_bytes());
        push_bytes(&mut m, &self.head_hash);
        m
    }
}

fn push_bytes(m: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(b);
}

/// A signed claim as stored by the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    pub claim: SealClaim,
    /// Identifies the signing key (see [`SealKey`]).
    pub key_id: String,
    pub signature: Vec<u8>,
}

/// A public key that seals are checked against.
#[derive(Debug, Clone, Copy)]
pub struct SealKey<'a> {
    pub key_id: &'a str,
    /// Raw Ed25519 public key (32 bytes).
    pub public_key: &'a [u8],
}

impl Seal {
    /// Checks the signature against `key` (which must be the key named by
    /// `key_id`; the caller picks it).
    #[must_use]
    pub fn signature_valid(&self, key: &SealKey<'_>) -> bool {
        UnparsedPublicKey::new(&ED25519, key.public_key)
            .verify(&self.claim.message(), &self.signature)
            .is_ok()
    }
}

/// Whether `event` is the last one its session will ever have: a
/// `session.end`, or the `session.start` of a connection that was refused
/// (the agent records nothing more for it). The control plane seals a
/// session when it receives such an event.
#[must_use]
pub fn ends_session(event: &pb::AuditEvent) -> bool {
    event.kind == "session.end" || (event.kind == "session.start" && event.decision == "deny")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::{
        rand::SystemRandom,
        signature::{Ed25519KeyPair, KeyPair as _},
    };

    #[test]
    fn message_layout_is_fixed() {
        let claim = SealClaim {
            session_id: "s1".into(),
            event_count: 3,
            head_hash: vec![0xab, 0xcd],
        };
        let mut expected = b"sluice-audit-seal-v1\n".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 2, b's', b'1']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xab, 0xcd]);
        assert_eq!(claim.message(), expected);
    }

    #[test]
    fn signatures_check_out_and_any_change_breaks_them() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let claim = SealClaim {
            session_id: "s1".into(),
            event_count: 3,
            head_hash: vec![7; 32],
        };
        let seal = Seal {
            signature: pair.sign(&claim.message()).as_ref().to_vec(),
            claim,
            key_id: "k".into(),
        };
        let key = SealKey {
            key_id: "k",
            public_key: pair.public_key().as_ref(),
        };
        assert!(seal.signature_valid(&key));
        let mut fewer = seal.clone();
        fewer.claim.event_count = 2;
        assert!(!fewer.signature_valid(&key));
        let mut other = seal.clone();
        other.claim.session_id = "s2".into();
        assert!(!other.signature_valid(&key));
        let mut head = seal;
        head.claim.head_hash[0] = 8;
        assert!(!head.signature_valid(&key));
    }

    #[test]
    fn what_ends_a_session() {
        let ev = |kind: &str, decision: &str| pb::AuditEvent {
            kind: kind.into(),
            decision: decision.into(),
            ..Default::default()
        };
        assert!(ends_session(&ev("session.end", "")));
        assert!(ends_session(&ev("session.start", "deny")));
        assert!(!ends_session(&ev("session.start", "allow")));
        assert!(!ends_session(&ev("statement", "deny")));
    }
}
