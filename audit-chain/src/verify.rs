//! Verification of a stored session against its chain and seal.
//!
//! [`verify`] takes the events the control plane holds for one session (in
//! any order: they are sorted by chain position here) and the seal, if
//! any, and names every problem it can pin down:
//!
//! - an event whose content no longer matches its hash was **altered**;
//! - a position with no event means the event there was **removed**;
//! - events whose content is intact but that sit at another event's
//!   position were **reordered** (both positions are named);
//! - an intact event that does not link to its predecessor means one of
//!   the two was rewritten with a recomputed hash (a **broken link**);
//! - fewer events than the seal counts means events were **missing at
//!   the end**; events past the sealed count were **appended**;
//! - a seal whose signature does not check out is a **bad seal**.
//!
//! A session without a seal and without an ending event is
//! **incomplete** (still live, or its agent died): its present events are
//! still checked, but it is never reported as verified.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sluice_proto as pb;

use crate::{
    event_hash,
    seal::{Seal, SealKey, ends_session},
};

/// Overall outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every event intact and in place, and the seal checks out.
    Verified,
    /// Nothing wrong with what is present, but the session never ended
    /// (no end event, no seal): it cannot be verified.
    Incomplete,
    /// At least one problem other than incompleteness.
    Failed,
}

/// One thing wrong with a session's record. Positions are chain positions
/// (`session_seq`, from 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The event's content does not match its hash.
    Altered { position: u64, event_id: String },
    /// No event at these positions (inclusive), though later ones exist.
    Removed { first: u64, last: u64 },
    /// Intact events found at each other's positions.
    Reordered { positions: Vec<u64> },
    /// The event at `position` does not link to the one before it (or,
    /// at 0, claims a predecessor) although both are intact: one of them
    /// was rewritten with a recomputed hash.
    BrokenLink { position: u64 },
    /// More than one event claims this position.
    Duplicate {
        position: u64,
        event_ids: Vec<String>,
    },
    /// The seal counts `expected` events; only positions below `present`
    /// exist.
    MissingAtEnd { expected: u64, present: u64 },
    /// An event past the sealed end.
    Appended { position: u64, event_id: String },
    /// The last sealed event is not the one the seal names.
    HeadMismatch { position: u64 },
    /// The seal's signature does not verify.
    BadSignature { key_id: String },
    /// The seal was made with a key we do not have.
    UnknownSealKey { key_id: String },
    /// The seal is for another session.
    SealMismatch { sealed_session: String },
    /// The session's ending event is present but there is no seal.
    NotSealed { position: u64 },
    /// An event of another session among this session's events.
    ForeignEvent { position: u64, event_id: String },
    /// An event without chain fields (recorded without hash chaining).
    Unchained { event_id: String },
    /// No ending event and no seal: live, or its agent stopped.
    Incomplete,
}

impl Problem {
    /// A sentence for people.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Altered { position, event_id } => format!(
                "event {position} ({event_id}) was altered: its content no longer matches its hash"
            ),
            Self::Removed { first, last } if first == last => {
                format!("event {first} is missing: it was removed")
            }
            Self::Removed { first, last } => {
                format!("events {first} to {last} are missing: they were removed")
            }
            Self::Reordered { positions } => {
                let list = join(positions);
                if positions.len() == 2 {
                    format!(
                        "events {list} were reordered (swapped): each is intact but sits at the other's position"
                    )
                } else {
                    format!(
                        "events {list} were reordered: each is intact but sits at another's position"
                    )
                }
            }
            Self::BrokenLink { position: 0 } => {
                "the first event (0) claims a predecessor: it was rewritten or the record was spliced"
                    .to_owned()
            }
            Self::BrokenLink { position } => format!(
                "event {position} does not follow event {} in the chain: one of them was replaced (its hash recomputed)",
                position - 1
            ),
            Self::Duplicate {
                position,
                event_ids,
            } => format!(
                "position {position} is claimed by {} events ({}): an event was inserted",
                event_ids.len(),
                event_ids.join(", ")
            ),
            Self::MissingAtEnd { expected, present } => format!(
                "the session was sealed with {expected} events but only {present} are present: the last {} were removed",
                expected - present
            ),
            Self::Appended { position, event_id } => format!(
                "event {position} ({event_id}) lies past the sealed end of the session: it was added afterwards"
            ),
            Self::HeadMismatch { position } => format!(
                "the last event ({position}) is not the one the seal names: it was replaced"
            ),
            Self::BadSignature { key_id } => format!(
                "the seal's signature (key {key_id}) is invalid: the seal was forged or altered"
            ),
            Self::UnknownSealKey { key_id } => format!(
                "the seal was made with key {key_id}, which this control plane does not have"
            ),
            Self::SealMismatch { sealed_session } => {
                format!("the seal belongs to another session ({sealed_session})")
            }
            Self::NotSealed { position } => format!(
                "the session's end (event {position}) is recorded but the session has no seal: the seal was removed"
            ),
            Self::ForeignEvent { position, event_id } => format!(
                "event {position} ({event_id}) belongs to another session"
            ),
            Self::Unchained { event_id } => format!(
                "event {event_id} carries no chain hash, so it cannot be verified"
            ),
            Self::Incomplete => "the session has no end: it is still live or its agent stopped before ending it, so it cannot be verified".to_owned(),
        }
    }
}

fn join(positions: &[u64]) -> String {
    match positions {
        [a, b] => format!("{a} and {b}"),
        _ => positions
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The verdict on one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub session_id: String,
    pub status: Status,
    /// Events examined.
    pub events: usize,
    /// Events the seal counts, when sealed.
    pub sealed_events: Option<u64>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// True only for a verified session.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.status == Status::Verified
    }

    /// One line for people.
    #[must_use]
    pub fn summary(&self) -> String {
        match self.status {
            Status::Verified => format!(
                "OK: {} events, chain intact and sealed by the control plane",
                self.events
            ),
            Status::Incomplete => format!(
                "INCOMPLETE: {} events, chain intact so far, but the session has no end (live, or its agent stopped); not verified",
                self.events
            ),
            Status::Failed => {
                let n = self
                    .problems
                    .iter()
                    .filter(|p| **p != Problem::Incomplete)
                    .count();
                format!(
                    "FAILED: {n} problem{} found in {} events",
                    if n == 1 { "" } else { "s" },
                    self.events
                )
            }
        }
    }
}

/// Checks `events` (the stored events of `session_id`) against their chain
/// and `seal`, using the seal key named by the seal among `keys`.
#[must_use]
pub fn verify(
    session_id: &str,
    events: &[pb::AuditEvent],
    seal: Option<&Seal>,
    keys: &[SealKey<'_>],
) -> Report {
    let mut problems = Vec::new();

    // Chain positions, each with the events that claim it.
    let mut by_pos: BTreeMap<u64, Vec<&pb::AuditEvent>> = BTreeMap::new();
    for e in events {
        if e.hash.is_empty() {
            problems.push(Problem::Unchained {
                event_id: e.id.clone(),
            });
        } else {
            by_pos.entry(e.session_seq).or_default().push(e);
        }
    }
    let valid = |e: &pb::AuditEvent| event_hash(e).as_slice() == e.hash.as_slice();

    // One event per position for the walk: prefer an intact one.
    let mut chain: BTreeMap<u64, &pb::AuditEvent> = BTreeMap::new();
    for (&pos, claimants) in &by_pos {
        if claimants.len() > 1 {
            problems.push(Problem::Duplicate {
                position: pos,
                event_ids: claimants.iter().map(|e| e.id.clone()).collect(),
            });
        }
        let pick = claimants
            .iter()
            .find(|e| valid(e))
            .or_else(|| claimants.first());
        if let Some(e) = pick {
            chain.insert(pos, e);
        }
    }
    for (&pos, e) in &chain {
        if e.session_id != session_id {
            problems.push(Problem::ForeignEvent {
                position: pos,
                event_id: e.id.clone(),
            });
        }
    }

    let invalid: Vec<u64> = chain
        .iter()
        .filter(|(_, e)| !valid(e))
        .map(|(&p, _)| p)
        .collect();
    let reordered = find_reordered(&chain, &invalid);
    let moved: BTreeSet<u64> = reordered.iter().flatten().copied().collect();
    for group in &reordered {
        problems.push(Problem::Reordered {
            positions: group.clone(),
        });
    }
    let altered: BTreeSet<u64> = invalid
        .iter()
        .copied()
        .filter(|p| !moved.contains(p))
        .collect();
    for &pos in &altered {
        problems.push(Problem::Altered {
            position: pos,
            event_id: chain.get(&pos).map(|e| e.id.clone()).unwrap_or_default(),
        });
    }

    // Gaps below the highest position present.
    let present_end = chain.keys().next_back().map_or(0, |p| p + 1);
    let mut expected = 0u64;
    for &pos in chain.keys() {
        if pos > expected {
            problems.push(Problem::Removed {
                first: expected,
                last: pos - 1,
            });
        }
        expected = pos + 1;
    }

    // Links between neighbours that are both in place and intact.
    for (&pos, e) in &chain {
        if moved.contains(&pos) {
            continue;
        }
        if pos == 0 {
            if !e.prev_hash.is_empty() && !altered.contains(&0) {
                problems.push(Problem::BrokenLink { position: 0 });
            }
            continue;
        }
        let Some(prev) = chain.get(&(pos - 1)) else {
            continue; // a removal, reported above
        };
        if moved.contains(&(pos - 1)) || altered.contains(&(pos - 1)) || altered.contains(&pos) {
            continue; // already named
        }
        if e.prev_hash != prev.hash {
            problems.push(Problem::BrokenLink { position: pos });
        }
    }

    let end_event = chain.iter().find(|(_, e)| ends_session(e)).map(|(&p, _)| p);
    match seal {
        None => match end_event {
            Some(position) => problems.push(Problem::NotSealed { position }),
            None => problems.push(Problem::Incomplete),
        },
        Some(seal) => {
            match keys.iter().find(|k| k.key_id == seal.key_id) {
                None => problems.push(Problem::UnknownSealKey {
                    key_id: seal.key_id.clone(),
                }),
                Some(key) if !seal.signature_valid(key) => problems.push(Problem::BadSignature {
                    key_id: seal.key_id.clone(),
                }),
                Some(_) => {}
            }
            if seal.claim.session_id != session_id {
                problems.push(Problem::SealMismatch {
                    sealed_session: seal.claim.session_id.clone(),
                });
            }
            let count = seal.claim.event_count;
            if present_end < count {
                problems.push(Problem::MissingAtEnd {
                    expected: count,
                    present: present_end,
                });
            } else if count > 0 {
                let last = count - 1;
                if let Some(e) = chain.get(&last)
                    && !moved.contains(&last)
                    && e.hash != seal.claim.head_hash
                {
                    problems.push(Problem::HeadMismatch { position: last });
                }
            }
            for (&pos, e) in chain.range(count..) {
                problems.push(Problem::Appended {
                    position: pos,
                    event_id: e.id.clone(),
                });
            }
        }
    }

    let status = if problems.is_empty() {
        Status::Verified
    } else if problems == [Problem::Incomplete] {
        Status::Incomplete
    } else {
        Status::Failed
    };
    Report {
        session_id: session_id.to_owned(),
        status,
        events: events.len(),
        sealed_events: seal.map(|s| s.claim.event_count),
        problems,
    }
}

/// Most mismatched events examined for reordering (quadratic in this).
const MAX_REORDER_CANDIDATES: usize = 256;

/// Among events whose hash does not match, finds those that are intact
/// but sit at another mismatched event's position: either their position
/// was changed (the hash matches with the other position), or their
/// content was moved into another row (the hash matches the other row's
/// chain fields and stored hash). Returns groups of positions.
fn find_reordered(chain: &BTreeMap<u64, &pb::AuditEvent>, invalid: &[u64]) -> Vec<Vec<u64>> {
    if invalid.len() < 2 || invalid.len() > MAX_REORDER_CANDIDATES {
        return Vec::new();
    }
    // Union-find over the candidates.
    let mut parent: Vec<usize> = (0..invalid.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut linked = vec![false; invalid.len()];
    for (i, &x) in invalid.iter().enumerate() {
        let Some(ex) = chain.get(&x) else { continue };
        for (j, &y) in invalid.iter().enumerate() {
            if i == j {
                continue;
            }
            let Some(ey) = chain.get(&y) else { continue };
            let mut moved = (*ex).clone();
            moved.session_seq = y;
            let own = event_hash(&moved);
            moved.prev_hash.clone_from(&ey.prev_hash);
            let theirs = event_hash(&moved);
            if own.as_slice() == ex.hash.as_slice() || theirs.as_slice() == ey.hash.as_slice() {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a] = b;
                linked[i] = true;
                linked[j] = true;
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (i, &pos) in invalid.iter().enumerate() {
        if linked[i] {
            let r = root(&mut parent, i);
            groups.entry(r).or_default().push(pos);
        }
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use ring::{
        rand::SystemRandom,
        signature::{Ed25519KeyPair, KeyPair as _},
    };

    use super::*;
    use crate::{Chain, SealClaim};

    struct Signer {
        pair: Ed25519KeyPair,
        public: Vec<u8>,
    }

    impl Signer {
        fn new() -> Self {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let public = pair.public_key().as_ref().to_vec();
            Self { pair, public }
        }

        fn key(&self) -> SealKey<'_> {
            SealKey {
                key_id: "k1",
                public_key: &self.public,
            }
        }

        fn seal(&self, end: &pb::AuditEvent) -> Seal {
            let claim = SealClaim::for_end(end);
            Seal {
                signature: self.pair.sign(&claim.message()).as_ref().to_vec(),
                claim,
                key_id: "k1".into(),
            }
        }
    }

    fn ev(kind: &str, decision: &str, statement: &str) -> pb::AuditEvent {
        pb::AuditEvent {
            id: format!("id-{kind}-{statement}"),
            time_unix_ms: 1_700_000_000_000,
            kind: kind.into(),
            session_id: "s1".into(),
            subject: "alice".into(),
            groups: vec!["devs".into()],
            resource: "orders".into(),
            agent: "edge".into(),
            decision: decision.into(),
            statement: statement.into(),
            attributes_json: r#"{"protocol":"postgres"}"#.into(),
            ..Default::default()
        }
    }

    /// A chained session of `n` events: start, statements, and an end
    /// when `ended`.
    fn session(statements: usize, ended: bool) -> Vec<pb::AuditEvent> {
        let mut raw = vec![ev("session.start", "allow", "")];
        for i in 0..statements {
            raw.push(ev("statement", "allow", &format!("select {i}")));
        }
        if ended {
            raw.push(ev("session.end", "", ""));
        }
        let mut chain = Chain::new();
        raw.into_iter()
            .map(|mut e| {
                chain.link(&mut e);
                chain.commit(&e);
                e
            })
            .collect()
    }

    fn sealed(statements: usize) -> (Vec<pb::AuditEvent>, Signer, Seal) {
        let events = session(statements, true);
        let signer = Signer::new();
        let seal = signer.seal(events.last().unwrap());
        (events, signer, seal)
    }

    fn check(events: &[pb::AuditEvent], seal: Option<&Seal>, signer: &Signer) -> Report {
        verify("s1", events, seal, &[signer.key()])
    }

    #[test]
    fn an_untouched_sealed_session_verifies() {
        let (events, signer, seal) = sealed(4);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(report.status, Status::Verified, "{report:?}");
        assert!(report.ok() && report.problems.is_empty());
        assert_eq!((report.events, report.sealed_events), (6, Some(6)));
        assert!(report.summary().starts_with("OK"), "{}", report.summary());
    }

    #[test]
    fn input_order_does_not_matter() {
        let (mut events, signer, seal) = sealed(4);
        events.reverse();
        assert!(check(&events, Some(&seal), &signer).ok());
    }

    #[test]
    fn an_altered_event_is_named() {
        let (mut events, signer, seal) = sealed(4);
        events[2].statement = "drop table orders".into();
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(report.status, Status::Failed);
        assert_eq!(
            report.problems,
            [Problem::Altered {
                position: 2,
                event_id: events[2].id.clone()
            }]
        );
        assert!(report.problems[0].describe().contains("event 2"));
    }

    #[test]
    fn every_covered_field_counts_as_an_alteration() {
        let (events, signer, seal) = sealed(2);
        let edits: Vec<fn(&mut pb::AuditEvent)> = vec![
            |e| e.parameters.push("1".into()),
            |e| e.groups.clear(),
            |e| e.rows += 1,
            |e| e.time_unix_ms -= 1,
            |e| e.decision = "deny".into(),
            |e| e.attributes_json = r#"{"protocol": "postgres"}"#.into(),
            |e| e.agent = "other".into(),
        ];
        for edit in edits {
            let mut copy = events.clone();
            edit(&mut copy[1]);
            let report = check(&copy, Some(&seal), &signer);
            assert!(
                matches!(report.problems[..], [Problem::Altered { position: 1, .. }]),
                "{report:?}"
            );
        }
    }

    #[test]
    fn an_event_rewritten_with_a_recomputed_hash_breaks_the_next_link() {
        let (mut events, signer, seal) = sealed(4);
        events[2].statement = "drop table orders".into();
        events[2].hash = event_hash(&events[2]).to_vec();
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(report.problems, [Problem::BrokenLink { position: 3 }]);
        assert!(
            report.problems[0]
                .describe()
                .contains("event 3 does not follow event 2")
        );

        // The last event rewritten: the seal names another head.
        let (mut events, signer, seal) = sealed(2);
        events[3].rows = 99;
        events[3].hash = event_hash(&events[3]).to_vec();
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(report.problems, [Problem::HeadMismatch { position: 3 }]);
    }

    #[test]
    fn a_removed_event_is_named() {
        let (mut events, signer, seal) = sealed(4);
        events.remove(2);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(report.problems, [Problem::Removed { first: 2, last: 2 }]);
        assert_eq!(
            report.problems[0].describe(),
            "event 2 is missing: it was removed"
        );

        let (mut events, signer, seal) = sealed(4);
        events.drain(0..2);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(report.problems, [Problem::Removed { first: 0, last: 1 }]);
    }

    #[test]
    fn swapped_positions_are_reported_as_reordered() {
        let (mut events, signer, seal) = sealed(4);
        // Swap the positions of two rows (what an UPDATE of session_seq does).
        (events[1].session_seq, events[3].session_seq) = (3, 1);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::Reordered {
                positions: vec![1, 3]
            }]
        );
        assert!(
            report.problems[0]
                .describe()
                .contains("events 1 and 3 were reordered")
        );
    }

    #[test]
    fn swapped_contents_are_reported_as_reordered() {
        let (mut events, signer, seal) = sealed(4);
        // Swap everything but the chain fields (rows exchanging their data).
        let (a, b) = (events[2].clone(), events[3].clone());
        let swap = |into: &mut pb::AuditEvent, from: &pb::AuditEvent| {
            let (seq, prev, hash) = (into.session_seq, into.prev_hash.clone(), into.hash.clone());
            *into = from.clone();
            (into.session_seq, into.prev_hash, into.hash) = (seq, prev, hash);
        };
        swap(&mut events[2], &b);
        swap(&mut events[3], &a);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::Reordered {
                positions: vec![2, 3]
            }]
        );

        // Swapping whole rows except their positions.
        let (mut events, signer, seal) = sealed(4);
        let (a, b) = (events[1].clone(), events[4].clone());
        events[1] = pb::AuditEvent {
            session_seq: 1,
            ..b
        };
        events[4] = pb::AuditEvent {
            session_seq: 4,
            ..a
        };
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::Reordered {
                positions: vec![1, 4]
            }]
        );
    }

    #[test]
    fn events_missing_at_the_end_are_caught_by_the_seal() {
        let (mut events, signer, seal) = sealed(4);
        events.truncate(4);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::MissingAtEnd {
                expected: 6,
                present: 4
            }]
        );
        assert!(
            report.problems[0]
                .describe()
                .contains("the last 2 were removed")
        );
    }

    #[test]
    fn a_session_without_an_end_is_incomplete_never_verified() {
        let events = session(3, false);
        let signer = Signer::new();
        let report = check(&events, None, &signer);
        assert_eq!(report.status, Status::Incomplete);
        assert!(!report.ok());
        assert_eq!(report.problems, [Problem::Incomplete]);
        assert!(report.summary().starts_with("INCOMPLETE"));

        // Tampering shows through incompleteness.
        let mut events = session(3, false);
        events.remove(1);
        let report = check(&events, None, &signer);
        assert_eq!(report.status, Status::Failed);
        assert_eq!(
            report.problems,
            [Problem::Removed { first: 1, last: 1 }, Problem::Incomplete]
        );

        // Nothing at all is incomplete too.
        assert_eq!(check(&[], None, &signer).status, Status::Incomplete);
    }

    #[test]
    fn an_end_without_a_seal_fails() {
        let events = session(1, true);
        let report = check(&events, None, &Signer::new());
        assert_eq!(report.problems, [Problem::NotSealed { position: 2 }]);
        assert_eq!(report.status, Status::Failed);
    }

    #[test]
    fn a_bad_or_foreign_seal_fails() {
        let (events, signer, mut seal) = sealed(2);
        seal.signature[0] ^= 1;
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::BadSignature {
                key_id: "k1".into()
            }]
        );

        // Re-signed by someone else, claiming the same key id.
        let (events, signer, _) = sealed(2);
        let forged = Signer::new().seal(events.last().unwrap());
        let report = check(&events, Some(&forged), &signer);
        assert!(matches!(
            report.problems[..],
            [Problem::BadSignature { .. }]
        ));

        // A seal with a shorter count, to hide a removed tail, must be re-signed.
        let (mut events, signer, mut seal) = sealed(3);
        events.truncate(3);
        seal.claim.event_count = 3;
        seal.claim.head_hash = events[2].hash.clone();
        let report = check(&events, Some(&seal), &signer);
        assert!(matches!(
            report.problems[..],
            [Problem::BadSignature { .. }]
        ));

        let (events, signer, mut seal) = sealed(2);
        seal.key_id = "k9".into();
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::UnknownSealKey {
                key_id: "k9".into()
            }]
        );

        let (events, signer, _) = sealed(2);
        let mut other = events.last().unwrap().clone();
        other.session_id = "s2".into();
        let seal = signer.seal(&other);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::SealMismatch {
                sealed_session: "s2".into()
            }]
        );
    }

    #[test]
    fn inserted_and_appended_events_are_named() {
        let (mut events, signer, seal) = sealed(2);
        let mut extra = events[1].clone();
        extra.id = "intruder".into();
        extra.statement = "select secret".into();
        extra.hash = event_hash(&extra).to_vec();
        events.push(extra);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::Duplicate {
                position: 1,
                event_ids: vec![events[1].id.clone(), "intruder".into()]
            }]
        );

        let (mut events, signer, seal) = sealed(2);
        let mut chain = Chain::new();
        for e in &events {
            chain.commit(e);
        }
        let mut late = ev("statement", "allow", "select late");
        chain.link(&mut late);
        events.push(late);
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::Appended {
                position: 4,
                event_id: "id-statement-select late".into()
            }]
        );
    }

    #[test]
    fn unchained_and_foreign_events_are_named() {
        let (mut events, signer, seal) = sealed(2);
        events.push(pb::AuditEvent {
            id: "legacy".into(),
            session_id: "s1".into(),
            ..Default::default()
        });
        let report = check(&events, Some(&seal), &signer);
        assert_eq!(
            report.problems,
            [Problem::Unchained {
                event_id: "legacy".into()
            }]
        );

        let (events, signer, seal) = sealed(2);
        let report = verify("s2", &events, Some(&seal), &[signer.key()]);
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::ForeignEvent { .. }))
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::SealMismatch { .. }))
        );
    }

    #[test]
    fn a_refused_connection_is_a_one_event_session() {
        let mut start = ev("session.start", "deny", "");
        Chain::new().link(&mut start);
        let signer = Signer::new();
        let seal = signer.seal(&start);
        let report = check(std::slice::from_ref(&start), Some(&seal), &signer);
        assert!(report.ok(), "{report:?}");
    }

    #[test]
    fn the_report_serializes_with_tagged_problems() {
        let (mut events, signer, seal) = sealed(2);
        events.remove(1);
        let report = check(&events, Some(&seal), &signer);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "session_id": "s1", "status": "failed", "events": 3, "sealed_events": 4,
                "problems": [{"kind": "removed", "first": 1, "last": 1}]
            })
        );
    }
}
