//! The store's contract, written once and run on both engines it supports:
//! SQLite (the single-node default) and a real PostgreSQL (HA). Every query
//! goes through sqlx's `Any` driver, so a statement that only one engine
//! understands, or a type that decodes differently, shows up here as a
//! failure on that engine alone.
//!
//! Each case gets a fresh, freshly migrated database, so cases do not depend
//! on each other's leftovers (and "the revision starts at 1" means it).

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use ring::signature::KeyPair as _;
use serde_json::json;
use sluice_control_plane::{
    recording::{from_proto, to_proto, verify_stored},
    store::{
        AgentCommand, AuditFilter, BlobId, CredentialRow, Engine, FsBlobStore, JoinTokenRow,
        ResourceRow, RetentionPolicy, Sealed, SessionFilter, SessionSealRow, SessionStatus, Store,
        StoreError, StoredAuditEvent, SystemKeyRow, now_ms,
    },
};
use sluice_integration_tests::Postgres;

type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
type Case = fn(&Store) -> CaseFuture<'_>;

/// The suite: every case runs on every engine, in this order.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        &[$((stringify!($case), {
            fn run(store: &Store) -> CaseFuture<'_> {
                Box::pin($case(store))
            }
            run as Case
        })),*]
    };
}

const SUITE: &[(&str, Case)] = cases![
    migrations_apply_and_leave_an_empty_store,
    every_mutation_strictly_increases_the_revision,
    resources_round_trip_and_delete,
    credentials_count_versions_and_keep_sealed_bytes,
    policy_versions_are_numbered_and_upsert_their_resources,
    join_tokens_are_consumed_once_and_not_after_expiry,
    concurrent_consumes_of_one_join_token_have_one_winner,
    agents_enroll_and_report,
    system_keys_keep_the_first_insert,
    messages_to_agents_are_claimed_once_and_age_out,
    audit_ingestion_is_idempotent_by_event_id,
    large_audit_batches_keep_every_event_once_in_order,
    audit_filters_and_paging,
    chained_events_round_trip_exactly,
    session_seals_are_kept_idempotently,
    sessions_are_aggregated_with_their_status,
    rewrap_all_rewraps_every_sealed_value,
    rewrap_all_is_all_or_nothing,
    large_attributes_are_blobs_read_back_verbatim,
    a_missing_or_corrupt_blob_makes_its_event_altered,
    retention_by_age_deletes_whole_old_sessions_and_their_blobs,
    retention_by_size_deletes_the_oldest_sessions_first,
];

/// Where fresh databases come from.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Backend {
    /// A new, empty database's URL.
    fn fresh_url(&self, name: &str) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}/{name}.db?mode=rwc", dir.path().display()),
            Self::Postgres(pg) => {
                pg.psql("postgres", &format!("CREATE DATABASE {name}"));
                pg.url(name)
            }
        }
    }

    fn engine(&self) -> Engine {
        match self {
            Self::Sqlite(_) => Engine::Sqlite,
            Self::Postgres(_) => Engine::Postgres,
        }
    }
}

async fn run_suite(backend: Backend) {
    for (i, (name, case)) in SUITE.iter().enumerate() {
        eprintln!("--- {name} ({:?})", backend.engine());
        let url = backend.fresh_url(&format!("case{i:02}"));
        let store = Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{name}: cannot open {url}: {e}"));
        assert_eq!(store.engine(), backend.engine());
        case(&store).await;
        store.close().await;
    }
    reopening_a_migrated_database_keeps_its_data(&backend).await;
    the_size_backfill_matches_the_size_recorded_on_insertion(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_contract_on_sqlite() {
    let dir = tempfile::Builder::new()
        .prefix("sluice-store-")
        .tempdir()
        .expect("tempdir");
    run_suite(Backend::Sqlite(dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_contract_on_postgres() {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("start PostgreSQL");
    run_suite(Backend::Postgres(pg)).await;
}

#[tokio::test]
async fn unsupported_database_urls_are_refused_without_leaking_the_password() {
    let err = Store::connect("mysql://root:hunter2@db/sluice")
        .await
        .expect_err("mysql is not supported");
    assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("sqlite://") && text.contains("postgres://"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

// ------------------------------------------------------------------ helpers

fn resource(name: &str, agent: &str) -> ResourceRow {
    ResourceRow {
        name: name.to_owned(),
        kind: "postgres".to_owned(),
        agent: agent.to_owned(),
        address: "127.0.0.1:5432".to_owned(),
        database: "app".to_owned(),
        credential: "app-rw".to_owned(),
        labels: BTreeMap::new(),
        tls_mode: "disable".to_owned(),
        tls_ca: String::new(),
        audit_mode: "fail_closed".to_owned(),
        max_connections: 0,
        max_connections_per_subject: 0,
        updated_at: 1_700_000_000_000,
    }
}

/// Sealed bytes that a text column would mangle: NUL, invalid UTF-8, 0xff.
fn sealed(tag: u8) -> Sealed {
    Sealed {
        kek_id: format!("kek-{tag}"),
        wrapped_dek: vec![0, 0xff, 0xfe, tag, 0x80, 0],
        ciphertext: (0..=255u8).map(|b| b ^ tag).collect(),
    }
}

fn system_key(name: &str, kid: &str, tag: u8) -> SystemKeyRow {
    SystemKeyRow {
        name: name.to_owned(),
        kid: kid.to_owned(),
        sealed: sealed(tag),
        public_data: vec![tag; 32],
        created_at: 1_700_000_000_000 + i64::from(tag),
    }
}

fn join_token(id: &str, expires_at: i64) -> JoinTokenRow {
    JoinTokenRow {
        id: id.to_owned(),
        secret_hash: format!("sha256-of-{id}"),
        agent: "edge".to_owned(),
        created_by: "admin".to_owned(),
        created_at: now_ms(),
        expires_at,
        used_at: None,
    }
}

/// An audit event; `n` makes the id, sequence and time distinct.
fn event(
    n: i64,
    subject: &str,
    resource: &str,
    decision: &str,
    kind: &str,
    session: &str,
) -> StoredAuditEvent {
    StoredAuditEvent {
        cursor: 0,
        id: format!("evt-{n:04}"),
        agent: String::new(),
        seq: n,
        time_ms: 1_700_000_000_000 + n * 1000,
        kind: kind.to_owned(),
        session_id: session.to_owned(),
        subject: subject.to_owned(),
        groups: vec!["devs".to_owned(), "on-call".to_owned()],
        resource: resource.to_owned(),
        decision: decision.to_owned(),
        rule: "rules[0]".to_owned(),
        statement: format!("SELECT {n} -- 'quoted' \"and\" ünïcode"),
        parameters: vec![n.to_string(), "x'y".to_owned()],
        duration_us: n * 10,
        rows: n,
        error: String::new(),
        client_addr: "127.0.0.1:50000".to_owned(),
        attributes_json: json!({"protocol": "postgres", "n": n}).to_string(),
        attributes_blob: None,
        attributes_unavailable: None,
        session_seq: Some(n - 1),
        prev_hash: Some(vec![0, 1, 2, u8::try_from(n % 256).unwrap_or(0)]),
        hash: Some(vec![0xff; 32]),
    }
}

fn ids(events: &[StoredAuditEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

fn filter() -> AuditFilter {
    AuditFilter {
        limit: 1000,
        ..AuditFilter::default()
    }
}

async fn revision(store: &Store) -> u64 {
    store.revision().await.expect("revision")
}

// -------------------------------------------------------------------- cases

async fn migrations_apply_and_leave_an_empty_store(store: &Store) {
    store.ping().await.expect("ping");
    assert_eq!(revision(store).await, 1, "a new store starts at revision 1");
    assert!(store.resources().await.expect("resources").is_empty());
    assert!(store.credentials().await.expect("credentials").is_empty());
    assert!(
        store
            .policy_versions()
            .await
            .expect("policy versions")
            .is_empty()
    );
    assert!(
        store
            .current_policy()
            .await
            .expect("current policy")
            .is_none()
    );
    assert!(store.agents().await.expect("agents").is_empty());
    assert!(store.system_key("jwt").await.expect("system key").is_none());
    assert!(
        store
            .join_token("nope")
            .await
            .expect("join token")
            .is_none()
    );
    assert!(
        store
            .audit_events(&filter())
            .await
            .expect("audit")
            .is_empty()
    );
}

async fn every_mutation_strictly_increases_the_revision(store: &Store) {
    let mut last = revision(store).await;
    let mut check = |what: &str, returned: u64| {
        assert!(
            returned > last,
            "{what}: revision went from {last} to {returned}"
        );
        last = returned;
    };

    check(
        "upsert (create)",
        store
            .upsert_resource(&resource("db", "edge"))
            .await
            .expect("upsert"),
    );
    check(
        "upsert (replace)",
        store
            .upsert_resource(&resource("db", "edge-2"))
            .await
            .expect("upsert"),
    );
    check("delete", store.delete_resource("db").await.expect("delete"));
    check(
        "credential set",
        store
            .set_credential("c", "u", &sealed(1))
            .await
            .expect("set")
            .1,
    );
    check(
        "credential set again",
        store
            .set_credential("c", "u", &sealed(2))
            .await
            .expect("set")
            .1,
    );
    check(
        "credential rotate",
        store
            .rotate_credential("c", None, &sealed(3))
            .await
            .expect("rotate")
            .1,
    );
    check(
        "policy version",
        store
            .insert_policy_version("policies: []", "sha-1", "", "admin", &[])
            .await
            .expect("policy")
            .1,
    );
    check("touch", store.touch_revision().await.expect("touch"));
    let last = last;
    assert_eq!(
        revision(store).await,
        last,
        "revision() reports the last bump"
    );

    // Failed mutations leave it alone.
    assert!(matches!(
        store.delete_resource("missing").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.rotate_credential("missing", None, &sealed(4)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        revision(store).await,
        last,
        "a failed mutation must not bump the revision"
    );

    // Bookkeeping that does not change what agents enforce does not bump it.
    store
        .upsert_agent_enrollment("edge", "fp", "0.1.0")
        .await
        .expect("enroll");
    store
        .agent_seen("edge", "0.1.0", last, "127.0.0.1:1")
        .await
        .expect("seen");
    store
        .insert_join_token(&join_token("t", now_ms() + 60_000))
        .await
        .expect("join token");
    store
        .insert_audit_events("edge", &[event(1, "a", "db", "allow", "query", "s")])
        .await
        .expect("audit");
    assert_eq!(revision(store).await, last);
}

async fn resources_round_trip_and_delete(store: &Store) {
    assert!(store.resource("orders").await.expect("get").is_none());

    let mut orders = resource("orders", "edge");
    orders.labels = BTreeMap::from([
        ("env".to_owned(), "prod".to_owned()),
        ("team".to_owned(), "payments \"core\"".to_owned()),
        (
            "note".to_owned(),
            "ünïcode, {braces} and 'quotes'".to_owned(),
        ),
    ]);
    orders.tls_mode = "verify-full".to_owned();
    orders.audit_mode = "best_effort".to_owned();
    orders.max_connections = 90;
    orders.max_connections_per_subject = 4_000_000_000;
    store.upsert_resource(&orders).await.expect("create");
    let mut billing = resource("billing", "edge-2");
    billing.kind = "ssh".to_owned();
    billing.database = String::new();
    store.upsert_resource(&billing).await.expect("create");

    assert_eq!(
        store.resource("orders").await.expect("get"),
        Some(orders.clone()),
        "every field round trips"
    );
    let names: Vec<String> = store
        .resources()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["billing", "orders"], "listed by name");

    // Replace: every column follows, labels included (also back to none).
    let mut replaced = orders.clone();
    replaced.agent = "edge-3".to_owned();
    replaced.address = "10.0.0.7:6432".to_owned();
    replaced.labels = BTreeMap::new();
    replaced.updated_at += 1;
    store.upsert_resource(&replaced).await.expect("replace");
    assert_eq!(store.resource("orders").await.expect("get"), Some(replaced));
    assert_eq!(
        store.resources().await.expect("list").len(),
        2,
        "a replace does not add a row"
    );

    store.delete_resource("orders").await.expect("delete");
    assert!(store.resource("orders").await.expect("get").is_none());
    match store.delete_resource("orders").await {
        Err(StoreError::NotFound(what)) => assert!(what.contains("orders"), "{what}"),
        other => panic!("deleting a missing resource: {other:?}"),
    }
    assert_eq!(store.resources().await.expect("list"), vec![billing]);
}

async fn credentials_count_versions_and_keep_sealed_bytes(store: &Store) {
    assert!(store.credential("app-rw").await.expect("get").is_none());

    let (v1, _) = store
        .set_credential("app-rw", "app", &sealed(1))
        .await
        .expect("set");
    assert_eq!(
        (v1.name.as_str(), v1.username.as_str(), v1.version),
        ("app-rw", "app", 1)
    );
    assert_eq!(
        v1.sealed,
        sealed(1),
        "sealed bytes are stored exactly as given"
    );
    assert_eq!(v1.created_at, v1.updated_at);

    let (v2, _) = store
        .set_credential("app-rw", "app2", &sealed(2))
        .await
        .expect("set again");
    assert_eq!((v2.username.as_str(), v2.version), ("app2", 2));
    assert_eq!(v2.sealed, sealed(2));
    assert_eq!(
        v2.created_at, v1.created_at,
        "setting again keeps the creation time"
    );
    assert!(v2.updated_at >= v1.updated_at);

    let (v3, _) = store
        .rotate_credential("app-rw", None, &sealed(3))
        .await
        .expect("rotate");
    assert_eq!(
        (v3.username.as_str(), v3.version),
        ("app2", 3),
        "rotate without a username keeps it"
    );
    assert_eq!(v3.sealed, sealed(3));

    let (v4, _) = store
        .rotate_credential("app-rw", Some("app3"), &sealed(4))
        .await
        .expect("rotate");
    assert_eq!((v4.username.as_str(), v4.version), ("app3", 4));

    let stored = store
        .credential("app-rw")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((stored.version, stored.sealed.clone()), (4, sealed(4)));

    match store.rotate_credential("nope", None, &sealed(5)).await {
        Err(StoreError::NotFound(what)) => assert!(what.contains("nope"), "{what}"),
        other => panic!("rotating a missing credential: {other:?}"),
    }
    assert!(
        store.credential("nope").await.expect("get").is_none(),
        "rotate must not create"
    );

    store
        .set_credential("aaa", "u", &sealed(6))
        .await
        .expect("set");
    let listed: Vec<(String, i64)> = store
        .credentials()
        .await
        .expect("list")
        .into_iter()
        .map(|c: CredentialRow| (c.name, c.version))
        .collect();
    assert_eq!(listed, [("aaa".to_owned(), 1), ("app-rw".to_owned(), 4)]);
}

async fn policy_versions_are_numbered_and_upsert_their_resources(store: &Store) {
    store
        .upsert_resource(&resource("orders", "old-agent"))
        .await
        .expect("seed resource");
    let before = revision(store).await;

    let declared = [resource("orders", "edge"), resource("billing", "edge")];
    let (v1, rev1) = store
        .insert_policy_version("doc one", "sha-1", "first", "alice", &declared)
        .await
        .expect("insert");
    assert_eq!(v1, 1);
    assert_eq!(
        rev1,
        before + 1,
        "one revision for the version and all its resources: one transaction"
    );
    assert_eq!(
        store
            .resource("orders")
            .await
            .expect("get")
            .expect("orders")
            .agent,
        "edge",
        "existing resource replaced"
    );
    assert!(
        store.resource("billing").await.expect("get").is_some(),
        "new resource created"
    );

    let (v2, rev2) = store
        .insert_policy_version("doc two", "sha-2", "", "bob", &[])
        .await
        .expect("insert");
    let (v3, rev3) = store
        .insert_policy_version("doc three", "sha-3", "third", "carol", &[])
        .await
        .expect("insert");
    assert_eq!((v2, v3), (2, 3));
    assert!(rev1 < rev2 && rev2 < rev3);

    let all = store.policy_versions().await.expect("list");
    let numbers: Vec<i64> = all.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let first = &all[0];
    assert_eq!(
        (
            first.document.as_str(),
            first.sha256.as_str(),
            first.comment.as_str(),
            first.created_by.as_str()
        ),
        ("doc one", "sha-1", "first", "alice")
    );
    assert_eq!(
        first.revision,
        i64::try_from(rev1).expect("revision fits"),
        "the version records its revision"
    );
    assert!(first.created_at > 0);

    let current = store
        .current_policy()
        .await
        .expect("current")
        .expect("some");
    assert_eq!(
        (current.version, current.document.as_str()),
        (3, "doc three"),
        "current is the last one"
    );
    assert_eq!(
        store
            .policy_version(2)
            .await
            .expect("get")
            .expect("v2")
            .document,
        "doc two"
    );
    assert!(store.policy_version(4).await.expect("get").is_none());
}

async fn join_tokens_are_consumed_once_and_not_after_expiry(store: &Store) {
    let now = now_ms();
    let token = join_token("live", now + 60_000);
    store.insert_join_token(&token).await.expect("insert");
    let stored = store
        .join_token("live")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (
            stored.secret_hash.as_str(),
            stored.agent.as_str(),
            stored.expires_at,
            stored.used_at
        ),
        (token.secret_hash.as_str(), "edge", token.expires_at, None)
    );

    assert!(
        store
            .consume_join_token("live", now)
            .await
            .expect("consume"),
        "first consume wins"
    );
    assert!(
        !store
            .consume_join_token("live", now + 1)
            .await
            .expect("consume"),
        "second consume loses"
    );
    assert_eq!(
        store
            .join_token("live")
            .await
            .expect("get")
            .expect("exists")
            .used_at,
        Some(now)
    );

    store
        .insert_join_token(&join_token("expired", now - 1))
        .await
        .expect("insert");
    assert!(
        !store
            .consume_join_token("expired", now)
            .await
            .expect("consume"),
        "expired token"
    );
    assert_eq!(
        store
            .join_token("expired")
            .await
            .expect("get")
            .expect("exists")
            .used_at,
        None
    );

    store
        .insert_join_token(&join_token("edge-of-expiry", now))
        .await
        .expect("insert");
    assert!(
        !store
            .consume_join_token("edge-of-expiry", now)
            .await
            .expect("consume"),
        "expiry is exclusive"
    );

    assert!(
        !store
            .consume_join_token("unknown", now)
            .await
            .expect("consume"),
        "unknown token"
    );
}

async fn concurrent_consumes_of_one_join_token_have_one_winner(store: &Store) {
    const TOKENS: usize = 20;
    const RACERS: usize = 4;
    let now = now_ms();
    for i in 0..TOKENS {
        store
            .insert_join_token(&join_token(&format!("race-{i}"), now + 60_000))
            .await
            .expect("insert");
    }
    for i in 0..TOKENS {
        let id = format!("race-{i}");
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.consume_join_token(&id, now).await
                })
            })
            .collect();
        let mut winners = 0;
        for r in racers {
            if r.await.expect("racer panicked").expect("consume failed") {
                winners += 1;
            }
        }
        assert_eq!(
            winners, 1,
            "token {id}: {winners} of {RACERS} concurrent consumes won"
        );
    }
}

async fn agents_enroll_and_report(store: &Store) {
    assert!(store.agent("edge").await.expect("get").is_none());
    store
        .upsert_agent_enrollment("edge", "fp-1", "0.1.0")
        .await
        .expect("enroll");
    store
        .upsert_agent_enrollment("alpha", "fp-a", "0.1.0")
        .await
        .expect("enroll");

    let edge = store.agent("edge").await.expect("get").expect("enrolled");
    assert_eq!(
        (edge.cert_fingerprint.as_str(), edge.agent_version.as_str()),
        ("fp-1", "0.1.0")
    );
    assert_eq!(
        (edge.last_seen, edge.snapshot_version, edge.peer.as_str()),
        (0, 0, ""),
        "never seen yet"
    );
    assert!(edge.enrolled_at > 0);

    store
        .agent_seen("edge", "0.2.0", 42, "10.0.0.9:5555")
        .await
        .expect("seen");
    let seen = store.agent("edge").await.expect("get").expect("enrolled");
    assert_eq!(
        (
            seen.agent_version.as_str(),
            seen.snapshot_version,
            seen.peer.as_str()
        ),
        ("0.2.0", 42, "10.0.0.9:5555")
    );
    assert!(seen.last_seen >= edge.enrolled_at);

    // Re-enrollment (new certificate) starts the snapshot over.
    store
        .upsert_agent_enrollment("edge", "fp-2", "0.3.0")
        .await
        .expect("re-enroll");
    let again = store.agent("edge").await.expect("get").expect("enrolled");
    assert_eq!(
        (
            again.cert_fingerprint.as_str(),
            again.agent_version.as_str(),
            again.snapshot_version
        ),
        ("fp-2", "0.3.0", 0)
    );

    // Seeing an agent that never enrolled records nothing.
    store
        .agent_seen("ghost", "0.1.0", 1, "x")
        .await
        .expect("seen");
    let names: Vec<String> = store
        .agents()
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["alpha", "edge"], "listed by name, no ghost");
}

async fn system_keys_keep_the_first_insert(store: &Store) {
    let first = store
        .insert_system_key_if_absent(&system_key("jwt", "kid-1", 1))
        .await
        .expect("insert");
    assert_eq!(
        (first.kid.as_str(), &first.sealed, &first.public_data),
        ("kid-1", &sealed(1), &vec![1; 32])
    );

    let second = store
        .insert_system_key_if_absent(&system_key("jwt", "kid-2", 2))
        .await
        .expect("insert again");
    assert_eq!(
        (second.kid.as_str(), second.sealed, second.created_at),
        ("kid-1", sealed(1), first.created_at),
        "the first key stays"
    );

    let stored = store.system_key("jwt").await.expect("get").expect("exists");
    assert_eq!(
        (stored.kid, stored.public_data),
        ("kid-1".to_owned(), vec![1; 32])
    );

    store
        .insert_system_key_if_absent(&system_key("ca", "kid-ca", 3))
        .await
        .expect("insert");
    assert_eq!(
        store
            .system_key("ca")
            .await
            .expect("get")
            .expect("exists")
            .sealed,
        sealed(3)
    );
}

async fn messages_to_agents_are_claimed_once_and_age_out(store: &Store) {
    let command = |id: &str, agent: &str, created_ms: i64| AgentCommand {
        id: id.into(),
        agent: agent.into(),
        // Every byte value, so an engine that mangles binary shows here.
        message: (0..=255u8).collect(),
        created_ms,
    };
    let now = now_ms();
    for c in [
        command("m1", "edge", now - 3_000),
        command("m2", "core", now - 2_000),
        command("m3", "edge", now - 1_000),
        command("old", "edge", now - 100_000),
    ] {
        store.insert_agent_command(&c, None).await.expect("insert");
    }
    // Written as claimed by a replica about to send it: never listed.
    store
        .insert_agent_command(&command("mine", "edge", now - 500), Some(now))
        .await
        .expect("insert");
    let ids = |cs: Vec<AgentCommand>| cs.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let since = now - 10_000;

    let all = store
        .unsent_agent_commands(None, since, 100)
        .await
        .expect("list");
    assert_eq!(
        all[0],
        command("m1", "edge", now - 3_000),
        "read back exactly"
    );
    assert_eq!(ids(all), ["m1", "m2", "m3"], "oldest first, none too old");
    let edge = store
        .unsent_agent_commands(Some("edge"), since, 100)
        .await
        .expect("list");
    assert_eq!(ids(edge), ["m1", "m3"]);
    assert_eq!(
        store
            .agents_with_unsent_commands(since)
            .await
            .expect("agents"),
        ["core", "edge"],
        "each once; the too old one's agent only through it"
    );

    // Two replicas racing for one message: one wins.
    let (a, b) = tokio::join!(
        store.claim_agent_command("m1", now),
        store.claim_agent_command("m1", now)
    );
    assert_eq!(
        [a.expect("claim"), b.expect("claim")]
            .iter()
            .filter(|won| **won)
            .count(),
        1
    );
    let left = store
        .unsent_agent_commands(Some("edge"), since, 100)
        .await
        .expect("list");
    assert_eq!(ids(left), ["m3"], "a claimed message is not listed");
    // What was sent, for sending kills again: claimed ones only, newest
    // first, so a limit keeps the latest.
    let sent = store
        .sent_agent_commands("edge", since, 100)
        .await
        .expect("list");
    assert_eq!(ids(sent), ["mine", "m1"]);
    let latest = store
        .sent_agent_commands("edge", since, 1)
        .await
        .expect("list");
    assert_eq!(ids(latest), ["mine"]);
    assert!(
        store
            .sent_agent_commands("core", since, 100)
            .await
            .expect("list")
            .is_empty()
    );
    // Given back (the stream did not take it), it is listed and claimable again.
    store.unclaim_agent_command("m1").await.expect("unclaim");
    assert!(store.claim_agent_command("m1", now).await.expect("claim"));

    assert_eq!(
        store
            .prune_agent_commands(now - 1_500)
            .await
            .expect("prune"),
        3,
        "sent or not, old ones go"
    );
    let left = store
        .unsent_agent_commands(None, 0, 100)
        .await
        .expect("list");
    assert_eq!(ids(left), ["m3"]);
    store.unclaim_agent_command("mine").await.expect("unclaim");
    let left = store
        .unsent_agent_commands(None, 0, 100)
        .await
        .expect("list");
    assert_eq!(ids(left), ["m3", "mine"], "given back, it is listed");
}

async fn audit_ingestion_is_idempotent_by_event_id(store: &Store) {
    let batch: Vec<_> = (1..=5)
        .map(|n| event(n, "alice", "orders", "allow", "query", "s1"))
        .collect();
    assert_eq!(
        store
            .insert_audit_events("edge", &batch)
            .await
            .expect("insert"),
        5
    );
    assert_eq!(
        store
            .insert_audit_events("edge", &batch)
            .await
            .expect("redeliver"),
        0,
        "a redelivered batch adds nothing"
    );

    // A batch that overlaps the stored events stores only the new ones.
    let overlap: Vec<_> = (4..=7)
        .map(|n| event(n, "alice", "orders", "allow", "query", "s1"))
        .collect();
    assert_eq!(
        store
            .insert_audit_events("edge", &overlap)
            .await
            .expect("insert"),
        2
    );

    let stored = store.audit_events(&filter()).await.expect("list");
    assert_eq!(
        ids(&stored),
        (1..=7).map(|n| format!("evt-{n:04}")).collect::<Vec<_>>(),
        "each event once, in order"
    );
    assert!(
        stored.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "cursors increase"
    );

    // Every field round trips; the agent comes from the caller.
    let mut expected = event(3, "alice", "orders", "allow", "query", "s1");
    expected.agent = "edge".to_owned();
    expected.cursor = stored[2].cursor;
    assert_eq!(stored[2], expected);

    // Events without attributes or hashes.
    let mut bare = event(8, "bob", "orders", "deny", "query", "s2");
    (
        bare.attributes_json,
        bare.session_seq,
        bare.prev_hash,
        bare.hash,
        bare.groups,
        bare.parameters,
    ) = (String::new(), None, None, None, Vec::new(), Vec::new());
    assert_eq!(
        store
            .insert_audit_events("edge", &[bare])
            .await
            .expect("insert"),
        1
    );
    let stored = store
        .audit_events(&AuditFilter {
            subject: Some("bob".into()),
            ..filter()
        })
        .await
        .expect("list");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (&stored[0].prev_hash, &stored[0].hash, stored[0].session_seq),
        (&None, &None, None)
    );
    assert_eq!(
        stored[0].attributes_json, "",
        "attributes are stored verbatim, even when empty"
    );
    assert_eq!(
        stored[0].attributes(),
        json!({}),
        "and shown as an empty object"
    );
    assert!(stored[0].groups.is_empty() && stored[0].parameters.is_empty());
}

/// Batches are inserted many rows per statement: a batch larger than one
/// statement, with a redelivered event and a duplicate inside it, stores
/// each event once, in the order sent, every field intact.
async fn large_audit_batches_keep_every_event_once_in_order(store: &Store) {
    let first: Vec<_> = (1..=3)
        .map(|n| event(n, "alice", "orders", "allow", "query", "s1"))
        .collect();
    store
        .insert_audit_events("edge", &first)
        .await
        .expect("insert");
    // 203 events: 2 already stored, one sent twice within one INSERT (the
    // second 64-row chunk).
    let mut batch: Vec<_> = (2..=203)
        .map(|n| event(n, "alice", "orders", "allow", "query", "s1"))
        .collect();
    batch.insert(100, event(120, "alice", "orders", "allow", "query", "s1"));
    assert_eq!(batch.len(), 203);
    assert_eq!(
        store
            .insert_audit_events("edge", &batch)
            .await
            .expect("insert"),
        200,
        "only the 200 new events are stored"
    );
    let stored = store.audit_events(&filter()).await.expect("list");
    // First occurrences, in order: 1..=101, 120, 102..=119, 121..=203.
    let mut expected: Vec<String> = (1..=101).map(|n| format!("evt-{n:04}")).collect();
    expected.push("evt-0120".to_owned());
    expected.extend(
        (102..=203)
            .filter(|n| *n != 120)
            .map(|n| format!("evt-{n:04}")),
    );
    assert_eq!(ids(&stored), expected, "each event once, in the order sent");
    assert!(stored.windows(2).all(|w| w[0].cursor < w[1].cursor));
    for n in [4, 64, 65, 120, 203] {
        let mut want = event(n, "alice", "orders", "allow", "query", "s1");
        want.agent = "edge".to_owned();
        let got = stored
            .iter()
            .find(|e| e.id == want.id)
            .expect("stored event");
        want.cursor = got.cursor;
        assert_eq!(got, &want, "event {n} round trips");
    }
}

async fn audit_filters_and_paging(store: &Store) {
    // 1..=12: alternate subjects, resources, outcomes, kinds and sessions.
    let events: Vec<_> = (1..=12)
        .map(|n| {
            event(
                n,
                if n % 2 == 0 { "alice" } else { "bob" },
                if n % 3 == 0 { "billing" } else { "orders" },
                if n % 4 == 0 { "deny" } else { "allow" },
                if n == 1 { "session.start" } else { "query" },
                if n <= 6 { "s1" } else { "s2" },
            )
        })
        .collect();
    assert_eq!(
        store
            .insert_audit_events("edge", &events[..6])
            .await
            .expect("insert"),
        6
    );
    assert_eq!(
        store
            .insert_audit_events("edge-2", &events[6..])
            .await
            .expect("insert"),
        6
    );
    let evt = |ns: &[i64]| ns.iter().map(|n| format!("evt-{n:04}")).collect::<Vec<_>>();
    let list = |f: AuditFilter| async move { ids(&store.audit_events(&f).await.expect("list")) };

    assert_eq!(
        list(AuditFilter {
            subject: Some("alice".into()),
            ..filter()
        })
        .await,
        evt(&[2, 4, 6, 8, 10, 12])
    );
    assert_eq!(
        list(AuditFilter {
            resource: Some("billing".into()),
            ..filter()
        })
        .await,
        evt(&[3, 6, 9, 12])
    );
    assert_eq!(
        list(AuditFilter {
            outcome: Some("deny".into()),
            ..filter()
        })
        .await,
        evt(&[4, 8, 12])
    );
    assert_eq!(
        list(AuditFilter {
            kind: Some("session.start".into()),
            ..filter()
        })
        .await,
        evt(&[1])
    );
    assert_eq!(
        list(AuditFilter {
            session_id: Some("s2".into()),
            ..filter()
        })
        .await,
        evt(&[7, 8, 9, 10, 11, 12])
    );
    assert_eq!(
        list(AuditFilter {
            subject: Some("nobody".into()),
            ..filter()
        })
        .await,
        evt(&[])
    );

    // Time bounds are inclusive.
    let t = |n: i64| event(n, "", "", "", "", "").time_ms;
    assert_eq!(
        list(AuditFilter {
            since_ms: Some(t(10)),
            ..filter()
        })
        .await,
        evt(&[10, 11, 12])
    );
    assert_eq!(
        list(AuditFilter {
            until_ms: Some(t(2)),
            ..filter()
        })
        .await,
        evt(&[1, 2])
    );
    assert_eq!(
        list(AuditFilter {
            since_ms: Some(t(5)),
            until_ms: Some(t(7)),
            ..filter()
        })
        .await,
        evt(&[5, 6, 7])
    );

    // Everything at once: text and integer parameters must stay in step.
    let all = store.audit_events(&filter()).await.expect("list");
    let cursor_of = |n: usize| all[n - 1].cursor;
    let combined = AuditFilter {
        subject: Some("alice".into()),
        resource: Some("orders".into()),
        outcome: Some("allow".into()),
        kind: Some("query".into()),
        session_id: Some("s2".into()),
        since_ms: Some(t(7)),
        until_ms: Some(t(12)),
        after: Some(cursor_of(8)),
        limit: 1000,
    };
    assert_eq!(list(combined).await, evt(&[10]));

    // Without `after`: the latest N, oldest first.
    assert_eq!(
        list(AuditFilter {
            limit: 3,
            ..filter()
        })
        .await,
        evt(&[10, 11, 12])
    );
    assert_eq!(
        list(AuditFilter {
            subject: Some("bob".into()),
            limit: 2,
            ..filter()
        })
        .await,
        evt(&[9, 11])
    );

    // With `after`: the next N after the cursor, oldest first; paging
    // through returns every event exactly once.
    assert_eq!(
        list(AuditFilter {
            after: Some(cursor_of(4)),
            limit: 3,
            ..filter()
        })
        .await,
        evt(&[5, 6, 7])
    );
    assert_eq!(
        list(AuditFilter {
            after: Some(cursor_of(12)),
            ..filter()
        })
        .await,
        evt(&[])
    );
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .audit_events(&AuditFilter {
                after: Some(after),
                limit: 5,
                ..filter()
            })
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 5);
        after = last.cursor;
        seen.extend(ids(&page));
    }
    assert_eq!(seen, evt(&(1..=12).collect::<Vec<_>>()));

    // Paging respects filters too.
    let page = store
        .audit_events(&AuditFilter {
            subject: Some("alice".into()),
            after: Some(cursor_of(4)),
            limit: 2,
            ..filter()
        })
        .await
        .expect("page");
    assert_eq!(ids(&page), evt(&[6, 8]));
    assert_eq!(page[1].agent, "edge-2");
}

/// A chained-looking event (the store does not check hashes; the
/// control plane's verifier does).
fn proto(session: &str, pos: u64, kind: &str, time_ms: i64) -> sluice_proto::AuditEvent {
    sluice_proto::AuditEvent {
        seq: pos + 1,
        id: format!("{session}-{pos}"),
        time_unix_ms: time_ms,
        kind: kind.to_owned(),
        session_id: session.to_owned(),
        subject: "alice".to_owned(),
        groups: vec!["devs".to_owned()],
        resource: "orders".to_owned(),
        agent: "edge".to_owned(),
        decision: "allow".to_owned(),
        client_addr: "10.0.0.1:5000".to_owned(),
        session_seq: pos,
        prev_hash: if pos == 0 {
            Vec::new()
        } else {
            vec![u8::try_from(pos).unwrap_or(0); 32]
        },
        hash: vec![u8::try_from(pos + 1).unwrap_or(0); 32],
        ..Default::default()
    }
}

async fn chained_events_round_trip_exactly(store: &Store) {
    // Every field the chain hash covers must come back byte for byte:
    // list order, empty strings and lists, extreme integers, and the
    // attributes' exact text (spacing and key order included).
    let mut tricky = proto("s1", 1, "statement", i64::MIN + 1);
    tricky.groups = vec![
        "zeta".into(),
        "alpha".into(),
        String::new(),
        "ünï \"q\" \\ ,".into(),
    ];
    tricky.parameters = vec![String::new(), "x'y".into(), "a\u{0}b".into(), "\n\t".into()];
    tricky.statement = "SELECT $1 -- 'quoted' \"and\" ünïcode \\".into();
    tricky.error = "ERROR:  relation \"x\" does not exist".into();
    tricky.rule = "policies[0].rules[2]".into();
    tricky.attributes_json = r#"{ "b":1,  "a" : [2,  3], "s": "\u00e9" }"#.into();
    tricky.duration_us = i64::MAX;
    tricky.rows = i64::MIN;
    tricky.session_seq = u64::try_from(i64::MAX).unwrap_or(0);
    tricky.prev_hash = (0u8..32).collect();
    tricky.hash = vec![0; 32];
    let mut first = proto("s1", 0, "session.start", 1_700_000_000_000);
    first.attributes_json = String::new();
    first.groups.clear();
    let mut empty = proto("s1", 2, "statement.result", 0);
    (
        empty.subject,
        empty.resource,
        empty.decision,
        empty.client_addr,
    ) = (String::new(), String::new(), String::new(), String::new());
    let events = vec![first, empty, tricky];
    let stored: Vec<StoredAuditEvent> = events
        .iter()
        .cloned()
        .map(|e| from_proto(e, "edge"))
        .collect();
    assert_eq!(
        store
            .insert_audit_events("edge", &stored)
            .await
            .expect("insert"),
        3
    );
    let back = store.session_events("s1", 100).await.expect("events");
    let back: Vec<sluice_proto::AuditEvent> = back.iter().map(to_proto).collect();
    assert_eq!(back, events, "chain order, every field exact");
}

fn seal_row(session: &str, agent: &str, count: i64, byte: u8) -> SessionSealRow {
    SessionSealRow {
        session_id: session.to_owned(),
        agent: agent.to_owned(),
        event_count: count,
        head_hash: vec![byte; 32],
        signature: vec![0, byte, 0xff, 0],
        key_id: "k1".to_owned(),
        sealed_at_ms: 1_700_000_000_000,
    }
}

async fn session_seals_are_kept_idempotently(store: &Store) {
    assert_eq!(store.session_seal("s1").await.expect("get"), None);
    let end = from_proto(proto("s1", 3, "session.end", 10), "edge");
    let seal = seal_row("s1", "edge", 4, 7);
    assert_eq!(
        store
            .insert_audit_batch(
                "edge",
                std::slice::from_ref(&end),
                std::slice::from_ref(&seal)
            )
            .await
            .expect("insert"),
        1
    );
    assert_eq!(
        store.session_seal("s1").await.expect("get"),
        Some(seal.clone())
    );
    // Redelivery: nothing new, the same seal.
    assert_eq!(
        store
            .insert_audit_batch("edge", &[end], std::slice::from_ref(&seal))
            .await
            .expect("redeliver"),
        0
    );
    assert_eq!(
        store.session_seal("s1").await.expect("get"),
        Some(seal.clone())
    );
    // A seal over fewer events, or from another agent, does not replace it.
    for other in [seal_row("s1", "edge", 2, 9), seal_row("s1", "rogue", 9, 9)] {
        store
            .insert_audit_batch("edge", &[], &[other])
            .await
            .expect("insert");
        assert_eq!(
            store.session_seal("s1").await.expect("get"),
            Some(seal.clone())
        );
    }
    // A later end from the same agent does.
    let later = seal_row("s1", "edge", 6, 8);
    store
        .insert_audit_batch("edge", &[], std::slice::from_ref(&later))
        .await
        .expect("insert");
    assert_eq!(store.session_seal("s1").await.expect("get"), Some(later));
}

async fn sessions_are_aggregated_with_their_status(store: &Store) {
    let now = now_ms();
    store
        .upsert_agent_enrollment("edge", "fp", "0.1.0")
        .await
        .expect("enroll");
    store
        .agent_attached("edge", now - 60_000)
        .await
        .expect("attach");
    store
        .agent_seen("edge", "0.1.0", 1, "peer")
        .await
        .expect("seen");
    assert_eq!(
        store
            .agent("edge")
            .await
            .expect("get")
            .map(|a| a.attached_at),
        Some(now - 60_000)
    );

    let session = |id: &str, start: i64, kinds: &[(&str, &str)]| -> Vec<StoredAuditEvent> {
        kinds
            .iter()
            .enumerate()
            .map(|(n, (kind, decision))| {
                let n = u64::try_from(n).unwrap_or(0);
                let mut e = proto(id, n, kind, start + i64::try_from(n).unwrap_or(0));
                e.decision = (*decision).to_owned();
                if *kind == "statement.result" {
                    e.rows = 5;
                }
                from_proto(e, "edge")
            })
            .collect()
    };
    let full = [
        ("session.start", "allow"),
        ("statement", "allow"),
        ("statement.result", "allow"),
        ("statement", "deny"),
        ("session.end", ""),
    ];
    let open = &full[..3];
    let mut batch = session("ended", now - 50_000, &full);
    batch.extend(session("live", now - 40_000, open));
    batch.extend(session("dead", now - 90_000, open));
    batch.extend(session(
        "refused",
        now - 30_000,
        &[("session.start", "deny")],
    ));
    store
        .insert_audit_batch("edge", &batch, &[seal_row("ended", "edge", 5, 1)])
        .await
        .expect("insert");

    let list = |f: SessionFilter| async move {
        store
            .sessions(&SessionFilter { limit: 100, ..f }, now)
            .await
            .expect("sessions")
            .into_iter()
            .map(|s| (s.session_id, s.status))
            .collect::<Vec<_>>()
    };
    let all = store
        .sessions(
            &SessionFilter {
                limit: 100,
                ..Default::default()
            },
            now,
        )
        .await
        .expect("sessions");
    assert_eq!(
        all.iter()
            .map(|s| (s.session_id.as_str(), s.status))
            .collect::<Vec<_>>(),
        [
            ("ended", SessionStatus::Ended),
            ("live", SessionStatus::Live),
            ("dead", SessionStatus::Incomplete),
            ("refused", SessionStatus::Denied),
        ]
    );
    let ended = &all[0];
    assert_eq!(
        (
            ended.events,
            ended.statements,
            ended.denied,
            ended.rows,
            ended.sealed
        ),
        (5, 2, 1, 5, true)
    );
    assert_eq!(
        (ended.started_ms, ended.ended_ms, ended.last_ms),
        (now - 50_000, Some(now - 50_000 + 4), now - 50_000 + 4)
    );
    assert_eq!(
        (
            ended.subject.as_str(),
            ended.resource.as_str(),
            ended.agent.as_str(),
            ended.groups.clone()
        ),
        ("alice", "orders", "edge", vec!["devs".to_owned()])
    );
    assert!(!all[1].sealed && all[1].ended_ms.is_none());

    for (status, expected) in [
        (SessionStatus::Live, "live"),
        (SessionStatus::Incomplete, "dead"),
        (SessionStatus::Denied, "refused"),
        (SessionStatus::Ended, "ended"),
    ] {
        let got = list(SessionFilter {
            status: Some(status),
            ..Default::default()
        })
        .await;
        assert_eq!(got, [(expected.to_owned(), status)], "{status:?}");
    }
    let got = list(SessionFilter {
        subject: Some("alice".into()),
        resource: Some("orders".into()),
        since_ms: Some(now - 45_000),
        until_ms: Some(now - 35_000),
        status: Some(SessionStatus::Live),
        after: Some(0),
        ..Default::default()
    })
    .await;
    assert_eq!(got, [("live".to_owned(), SessionStatus::Live)]);
    assert!(
        list(SessionFilter {
            subject: Some("bob".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // Paging: the latest N oldest first, then after a cursor.
    let latest = store
        .sessions(
            &SessionFilter {
                limit: 2,
                ..Default::default()
            },
            now,
        )
        .await
        .expect("sessions");
    assert_eq!(
        latest
            .iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        ["dead", "refused"]
    );
    let next = store
        .sessions(
            &SessionFilter {
                after: Some(all[0].cursor),
                limit: 1,
                ..Default::default()
            },
            now,
        )
        .await
        .expect("sessions");
    assert_eq!(next[0].session_id, "live");
    assert_eq!(
        store
            .session("dead", now)
            .await
            .expect("one")
            .map(|s| s.status),
        Some(SessionStatus::Incomplete)
    );
    assert_eq!(store.session("nope", now).await.expect("one"), None);

    // The agent goes away: its open session is incomplete. A stale
    // heartbeat means the same, even without a recorded detach.
    let later = now + 31_000;
    assert_eq!(
        store
            .session("live", later)
            .await
            .expect("one")
            .map(|s| s.status),
        Some(SessionStatus::Incomplete)
    );
    store
        .agent_detached("edge", now - 1)
        .await
        .expect("not the current connection");
    assert_eq!(
        store
            .session("live", now)
            .await
            .expect("one")
            .map(|s| s.status),
        Some(SessionStatus::Live)
    );
    store
        .agent_detached("edge", now - 60_000)
        .await
        .expect("detach");
    assert_eq!(
        store
            .session("live", now)
            .await
            .expect("one")
            .map(|s| s.status),
        Some(SessionStatus::Incomplete)
    );
}

async fn rewrap_all_rewraps_every_sealed_value(store: &Store) {
    store
        .set_credential("app-rw", "app", &sealed(1))
        .await
        .expect("set");
    store
        .set_credential("report", "ro", &sealed(2))
        .await
        .expect("set");
    store
        .insert_system_key_if_absent(&system_key("jwt", "kid", 3))
        .await
        .expect("key");
    store
        .insert_system_key_if_absent(&system_key("ca", "kid", 4))
        .await
        .expect("key");
    let rev = revision(store).await;

    let mut seen: Vec<(String, Sealed)> = Vec::new();
    let count = store
        .rewrap_all(|name, old| {
            seen.push((name.to_owned(), old.clone()));
            Ok(Sealed {
                kek_id: format!("new-{}", old.kek_id),
                wrapped_dek: old.wrapped_dek.iter().rev().copied().collect(),
                ciphertext: old.ciphertext.clone(),
            })
        })
        .await
        .expect("rewrap");
    assert_eq!(count, 4);
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = [
        ("credential:app-rw", sealed(1)),
        ("credential:report", sealed(2)),
        ("system-key:ca", sealed(4)),
        ("system-key:jwt", sealed(3)),
    ];
    assert_eq!(seen.len(), expected.len());
    for ((name, old), (want_name, want_old)) in seen.iter().zip(&expected) {
        assert_eq!(
            (name.as_str(), old),
            (*want_name, want_old),
            "the closure sees every value as stored"
        );
    }

    let rewrapped = |tag: u8| {
        let old = sealed(tag);
        Sealed {
            kek_id: format!("new-{}", old.kek_id),
            wrapped_dek: old.wrapped_dek.iter().rev().copied().collect(),
            ciphertext: old.ciphertext,
        }
    };
    let cred = store
        .credential("app-rw")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (cred.sealed, cred.version),
        (rewrapped(1), 1),
        "stored, and not a new version of the secret"
    );
    assert_eq!(
        store
            .credential("report")
            .await
            .expect("get")
            .expect("exists")
            .sealed,
        rewrapped(2)
    );
    assert_eq!(
        store
            .system_key("jwt")
            .await
            .expect("get")
            .expect("exists")
            .sealed,
        rewrapped(3)
    );
    assert_eq!(
        store
            .system_key("ca")
            .await
            .expect("get")
            .expect("exists")
            .sealed,
        rewrapped(4)
    );
    assert_eq!(
        revision(store).await,
        rev,
        "re-wrapping does not change what agents enforce"
    );
}

async fn rewrap_all_is_all_or_nothing(store: &Store) {
    store
        .set_credential("a", "u", &sealed(1))
        .await
        .expect("set");
    store
        .set_credential("b", "u", &sealed(2))
        .await
        .expect("set");
    store
        .insert_system_key_if_absent(&system_key("jwt", "kid", 3))
        .await
        .expect("key");
    let mut calls = 0;
    let result = store
        .rewrap_all(|name, old| {
            calls += 1;
            if name == "system-key:jwt" {
                return Err("wrong old key".to_owned());
            }
            Ok(Sealed {
                kek_id: "new".to_owned(),
                ..old.clone()
            })
        })
        .await;
    assert!(
        matches!(&result, Err(StoreError::Conflict(m)) if m == "wrong old key"),
        "{result:?}"
    );
    assert_eq!(calls, 3, "stops at the first failure");
    assert_eq!(
        store
            .credential("a")
            .await
            .expect("get")
            .expect("exists")
            .sealed,
        sealed(1),
        "rolled back"
    );
    assert_eq!(
        store
            .credential("b")
            .await
            .expect("get")
            .expect("exists")
            .sealed,
        sealed(2),
        "rolled back"
    );
    assert_eq!(
        store
            .system_key("jwt")
            .await
            .expect("get")
            .expect("exists")
            .sealed,
        sealed(3)
    );
}

/// Connecting again runs the migrator against an up-to-date schema: a no-op
/// that must keep the data.
async fn reopening_a_migrated_database_keeps_its_data(backend: &Backend) {
    eprintln!(
        "--- reopening_a_migrated_database_keeps_its_data ({:?})",
        backend.engine()
    );
    let url = backend.fresh_url("reopen");
    let store = Store::connect(&url).await.expect("open");
    store
        .upsert_resource(&resource("orders", "edge"))
        .await
        .expect("upsert");
    let rev = revision(&store).await;
    store.close().await;
    let again = Store::connect(&url).await.expect("reopen");
    assert_eq!(revision(&again).await, rev);
    assert!(again.resource("orders").await.expect("get").is_some());
    again.close().await;
}

// ------------------------------------------------------- blobs, retention

/// Attributes over this many bytes become blobs in these cases.
const THRESHOLD: usize = 200;

/// `store` with a fresh blob directory (kept alive by the returned guard).
fn with_blobs(store: &Store) -> (Store, FsBlobStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = FsBlobStore::new(dir.path().join("blobs"));
    let store = store
        .clone()
        .with_blobs(Arc::new(blobs.clone()), Some(THRESHOLD));
    (store, blobs, dir)
}

/// The control plane's seal key, as far as these cases need it.
struct Sealer {
    pair: ring::signature::Ed25519KeyPair,
}

impl Sealer {
    fn new() -> Self {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .expect("generate");
        Self {
            pair: ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key"),
        }
    }

    fn seal(&self, end: &sluice_proto::AuditEvent) -> SessionSealRow {
        let claim = sluice_audit_chain::SealClaim::for_end(end);
        SessionSealRow {
            session_id: claim.session_id.clone(),
            agent: "edge".to_owned(),
            event_count: i64::try_from(claim.event_count).unwrap_or(0),
            head_hash: claim.head_hash.clone(),
            signature: self.pair.sign(&claim.message()).as_ref().to_vec(),
            key_id: "seal-1".to_owned(),
            sealed_at_ms: now_ms(),
        }
    }

    async fn verify(&self, store: &Store, session: &str) -> sluice_audit_chain::Report {
        let public = self.pair.public_key().as_ref().to_vec();
        let keys = [sluice_audit_chain::SealKey {
            key_id: "seal-1",
            public_key: &public,
        }];
        verify_stored(store, session, &keys)
            .await
            .expect("verify")
            .expect("the session is known")
            .0
    }
}

/// A really chained session: start, `statements` (each with a result of
/// `rows` recorded rows), and an end unless `open`.
fn chained(
    session: &str,
    start_ms: i64,
    statements: usize,
    rows: usize,
    open: bool,
) -> Vec<sluice_proto::AuditEvent> {
    let mut raw = vec![(
        "session.start",
        String::new(),
        r#"{"protocol":"postgres"}"#.to_owned(),
    )];
    for n in 0..statements {
        let id = format!("{session}-q{n}");
        raw.push((
            "statement",
            format!("SELECT * FROM t{n}"),
            format!(r#"{{"statement_id":"{id}"}}"#),
        ));
        let rows: Vec<_> = (0..rows)
            .map(|i| json!([i.to_string(), format!("ünï {session} {i}")]))
            .collect();
        raw.push((
            "statement.result",
            format!("SELECT * FROM t{n}"),
            // Odd spacing: kept verbatim.
            format!(
                r#"{{ "statement_id":"{id}",   "result": {} }}"#,
                json!({"sets": [{"columns": ["id", "name"], "rows": rows}]})
            ),
        ));
    }
    if !open {
        raw.push((
            "session.end",
            String::new(),
            r#"{"statements": 1}"#.to_owned(),
        ));
    }
    let mut chain = sluice_audit_chain::Chain::new();
    raw.into_iter()
        .enumerate()
        .map(|(n, (kind, statement, attributes))| {
            let n = i64::try_from(n).unwrap_or(0);
            let mut e = sluice_proto::AuditEvent {
                id: format!("{session}-{n}"),
                seq: u64::try_from(n + 1).unwrap_or(0),
                time_unix_ms: start_ms + n,
                kind: kind.to_owned(),
                session_id: session.to_owned(),
                subject: "alice".to_owned(),
                groups: vec!["devs".to_owned()],
                resource: "orders".to_owned(),
                agent: "edge".to_owned(),
                decision: "allow".to_owned(),
                statement,
                rows: 1,
                client_addr: "10.0.0.1:5000".to_owned(),
                attributes_json: attributes,
                ..Default::default()
            };
            chain.link(&mut e);
            chain.commit(&e);
            e
        })
        .collect()
}

/// Stores a chained session as ingestion does (sealed if it ended).
async fn record(store: &Store, sealer: &Sealer, events: &[sluice_proto::AuditEvent]) {
    let seals: Vec<SessionSealRow> = events
        .iter()
        .filter(|e| sluice_audit_chain::ends_session(e))
        .map(|e| sealer.seal(e))
        .collect();
    let stored: Vec<StoredAuditEvent> = events
        .iter()
        .cloned()
        .map(|e| from_proto(e, "edge"))
        .collect();
    store
        .insert_audit_batch("edge", &stored, &seals)
        .await
        .expect("insert");
}

/// Every blob file under `dir`.
fn blob_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(blob_files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn blob_of(blobs: &FsBlobStore, e: &sluice_proto::AuditEvent) -> std::path::PathBuf {
    blobs.path_of(&BlobId::of(e.attributes_json.as_bytes()))
}

async fn large_attributes_are_blobs_read_back_verbatim(plain: &Store) {
    let (store, blobs, _dir) = with_blobs(plain);
    let sealer = Sealer::new();
    let events = chained("s1", now_ms() - 10_000, 2, 30, false);
    record(&store, &sealer, &events).await;

    // The two results are blobs; everything else stays in its row.
    let back = store.session_events("s1", 100).await.expect("events");
    let blob_backed: Vec<Option<i64>> = back
        .iter()
        .filter(|e| e.attributes_blob.is_some())
        .map(|e| e.session_seq)
        .collect();
    assert_eq!(blob_backed, [Some(2), Some(4)]);
    for e in [&events[2], &events[4]] {
        assert!(e.attributes_json.len() > THRESHOLD);
        assert_eq!(
            std::fs::read(blob_of(&blobs, e)).expect("blob file"),
            e.attributes_json.as_bytes()
        );
    }
    assert_eq!(blob_files(blobs.root()).len(), 2);

    // Readers get exactly what the agent hashed: session events ...
    let protos: Vec<sluice_proto::AuditEvent> = back.iter().map(to_proto).collect();
    assert_eq!(protos, events);
    assert!(back.iter().all(|e| e.attributes_unavailable.is_none()));
    // ... and the filtered listing.
    let listed = store
        .audit_events(&AuditFilter {
            session_id: Some("s1".into()),
            kind: Some("statement.result".into()),
            ..filter()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].attributes_json, events[2].attributes_json);
    assert_eq!(
        listed[1].attributes()["result"]["sets"][0]["rows"][29][1],
        "ünï s1 29"
    );

    let report = sealer.verify(&store, "s1").await;
    assert_eq!(
        report.status,
        sluice_audit_chain::Status::Verified,
        "{report:?}"
    );

    // Redelivery: no new events, still two blobs.
    assert_eq!(
        store
            .insert_audit_events(
                "edge",
                &events
                    .iter()
                    .cloned()
                    .map(|e| from_proto(e, "edge"))
                    .collect::<Vec<_>>()
            )
            .await
            .expect("redeliver"),
        0
    );
    assert_eq!(blob_files(blobs.root()).len(), 2);

    // Without a blob store everything stays inline, and still verifies.
    let inline = chained("s2", now_ms(), 1, 30, false);
    record(plain, &sealer, &inline).await;
    let back = plain.session_events("s2", 100).await.expect("events");
    assert!(back.iter().all(|e| e.attributes_blob.is_none()));
    assert_eq!(back.iter().map(to_proto).collect::<Vec<_>>(), inline);
    assert_eq!(blob_files(blobs.root()).len(), 2);
    let report = sealer.verify(plain, "s2").await;
    assert_eq!(
        report.status,
        sluice_audit_chain::Status::Verified,
        "{report:?}"
    );
}

async fn a_missing_or_corrupt_blob_makes_its_event_altered(plain: &Store) {
    let (store, blobs, _dir) = with_blobs(plain);
    let sealer = Sealer::new();
    let now = now_ms();
    let (ok, gone, bad) = (
        chained("ok", now - 3_000, 2, 30, false),
        chained("gone", now - 2_000, 2, 30, false),
        chained("bad", now - 1_000, 2, 30, false),
    );
    for s in [&ok, &gone, &bad] {
        record(&store, &sealer, s).await;
    }
    std::fs::remove_file(blob_of(&blobs, &gone[2])).expect("delete the blob");
    let path = blob_of(&blobs, &bad[4]);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).expect("corrupt the blob");

    for (session, position, why) in [("gone", 2, "missing"), ("bad", 4, "corrupt")] {
        let report = sealer.verify(&store, session).await;
        assert_eq!(
            report.status,
            sluice_audit_chain::Status::Failed,
            "{report:?}"
        );
        assert!(
            matches!(
                report.problems.as_slice(),
                [sluice_audit_chain::Problem::Altered { position: p, .. }] if *p == position
            ),
            "{session}: {report:?}"
        );
        let events = store.session_events(session, 100).await.expect("events");
        let e = &events[usize::try_from(position).unwrap_or(0)];
        assert_eq!(e.attributes_json, "");
        assert!(
            e.attributes_unavailable
                .as_deref()
                .is_some_and(|m| m.contains(why)),
            "{e:?}"
        );
    }
    let report = sealer.verify(&store, "ok").await;
    assert_eq!(
        report.status,
        sluice_audit_chain::Status::Verified,
        "{report:?}"
    );
    // Without a blob store, blob-backed attributes are unavailable, never
    // silently empty.
    let events = plain.session_events("ok", 100).await.expect("events");
    assert!(events[2].attributes_unavailable.is_some());
    assert!(events[1].attributes_unavailable.is_none());
}

async fn retention_by_age_deletes_whole_old_sessions_and_their_blobs(plain: &Store) {
    let (store, blobs, _dir) = with_blobs(plain);
    let sealer = Sealer::new();
    let now = now_ms();
    let day: i64 = 86_400_000;
    store
        .upsert_agent_enrollment("edge", "fp", "0.1.0")
        .await
        .expect("enroll");
    store
        .agent_attached("edge", now - 200 * day)
        .await
        .expect("attach");
    store
        .agent_seen("edge", "0.1.0", 1, "peer")
        .await
        .expect("seen");
    let old = chained("old", now - 100 * day, 2, 30, false);
    let older = chained("older", now - 120 * day, 1, 30, false);
    let recent = chained("recent", now - 10 * day, 2, 30, false);
    // Started before the cutoff, last active after it: kept whole.
    let mut spanning = chained("spanning", now - 95 * day, 1, 30, false);
    let n = spanning.len();
    spanning[n - 1].time_unix_ms = now - 80 * day;
    spanning = rechain(spanning);
    // Never ended, its agent attached since before it began: live, so kept
    // however long it has been quiet.
    let live = chained("live", now - 100 * day, 1, 30, true);
    // Never ended, and its agent is gone: incomplete, so it goes.
    let dead = chained("dead", now - 150 * day, 1, 30, true);
    for s in [&old, &older, &recent, &spanning, &live] {
        record(&store, &sealer, s).await;
    }
    // `dead` was recorded by an agent that has since gone.
    let dead_stored: Vec<StoredAuditEvent> = dead
        .iter()
        .cloned()
        .map(|e| from_proto(e, "gone"))
        .collect();
    store
        .insert_audit_events("gone", &dead_stored)
        .await
        .expect("insert");
    // A shared blob: a kept event (here one without a session) with the
    // same content as an event of a deleted session keeps the blob alive.
    let mut twin = from_proto(old[2].clone(), "edge");
    twin.id = "twin".into();
    twin.session_id = String::new();
    twin.time_ms = now - day;
    store
        .insert_audit_events("edge", &[twin])
        .await
        .expect("twin");
    // Events without a session go by age alone.
    let mut kill_old = event(1, "admin", "orders", "allow", "session.kill", "");
    kill_old.time_ms = now - 100 * day;
    let mut kill_new = event(2, "admin", "orders", "allow", "session.kill", "");
    kill_new.time_ms = now - day;
    store
        .insert_audit_events("", &[kill_old, kill_new])
        .await
        .expect("kills");
    let before = blob_files(blobs.root()).len();
    // One per result: old 2, older 1, recent 2, spanning 1, live 1, dead 1.
    assert_eq!(before, 8);

    let total = store.recorded_bytes().await.expect("bytes");
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(90 * 86_400)),
        max_bytes: None,
    };
    let out = store
        .enforce_retention(&policy, now)
        .await
        .expect("retention");
    assert_eq!(out.sessions, 3, "{out:?}");
    // old 6, older 4, dead 3, and the old kill.
    assert_eq!(out.events, 6 + 4 + 3 + 1, "{out:?}");
    assert_eq!(out.age_cutoff_ms, Some(now - 90 * day));
    assert_eq!(out.remaining_bytes, total - out.bytes);
    assert_eq!(
        store.recorded_bytes().await.expect("bytes"),
        out.remaining_bytes
    );
    for gone in ["old", "older", "dead"] {
        assert!(
            store
                .session_events(gone, 100)
                .await
                .expect("events")
                .is_empty(),
            "{gone}"
        );
        assert_eq!(store.session_seal(gone).await.expect("seal"), None);
    }
    // Their results' blobs went, except old's first (the twin uses it).
    assert!(blob_of(&blobs, &old[2]).exists());
    for e in [&old[4], &older[2], &dead[2]] {
        assert!(!blob_of(&blobs, e).exists());
    }
    assert_eq!(out.blobs, 3);
    assert_eq!(blob_files(blobs.root()).len(), before - 3);
    let mut kept: Vec<String> = store
        .sessions(
            &SessionFilter {
                limit: 100,
                ..SessionFilter::default()
            },
            now,
        )
        .await
        .expect("sessions")
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    kept.sort();
    assert_eq!(kept, ["live", "recent", "spanning"]);
    for s in ["recent", "spanning"] {
        let report = sealer.verify(&store, s).await;
        assert_eq!(
            report.status,
            sluice_audit_chain::Status::Verified,
            "{s}: {report:?}"
        );
    }
    let kills = store
        .audit_events(&AuditFilter {
            kind: Some("session.kill".into()),
            ..filter()
        })
        .await
        .expect("kills");
    assert_eq!(ids(&kills), ["evt-0002"]);

    // Nothing left to delete: a second run removes nothing.
    let again = store
        .enforce_retention(&policy, now)
        .await
        .expect("retention");
    assert!(!again.removed_anything(), "{again:?}");
    // Off removes nothing either.
    let off = store
        .enforce_retention(&RetentionPolicy::default(), now + 1000 * day)
        .await
        .expect("retention");
    assert!(!off.removed_anything());
}

/// Recomputes a session's chain after its events were edited.
fn rechain(events: Vec<sluice_proto::AuditEvent>) -> Vec<sluice_proto::AuditEvent> {
    let mut chain = sluice_audit_chain::Chain::new();
    events
        .into_iter()
        .map(|mut e| {
            chain.link(&mut e);
            chain.commit(&e);
            e
        })
        .collect()
}

async fn retention_by_size_deletes_the_oldest_sessions_first(plain: &Store) {
    let (store, blobs, _dir) = with_blobs(plain);
    let sealer = Sealer::new();
    let now = now_ms();
    let hour: i64 = 3_600_000;
    // Five ended sessions of the same size, an hour apart, the newest
    // active a few minutes ago.
    let sessions: Vec<Vec<sluice_proto::AuditEvent>> = (0..5)
        .map(|i| {
            chained(
                &format!("s{i}"),
                now - (5 - i) * hour + 50 * 60_000,
                1,
                30,
                false,
            )
        })
        .collect();
    for s in &sessions {
        record(&store, &sealer, s).await;
    }
    let total = store.recorded_bytes().await.expect("bytes");
    let per_session = total / 5;
    assert!(per_session > 30 * 10, "blobs count: {per_session}");

    // Room for three and a half sessions: the two oldest go, whole.
    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(per_session * 7 / 2),
    };
    let out = store
        .enforce_retention(&policy, now)
        .await
        .expect("retention");
    assert_eq!((out.sessions, out.events), (2, 8), "{out:?}");
    assert!(!out.over_limit, "{out:?}");
    assert_eq!(out.size_cutoff_ms, Some(sessions[1][3].time_unix_ms));
    assert!(out.remaining_bytes <= per_session * 7 / 2, "{out:?}");
    let mut kept: Vec<String> = store
        .sessions(
            &SessionFilter {
                limit: 100,
                ..SessionFilter::default()
            },
            now,
        )
        .await
        .expect("sessions")
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    kept.sort();
    assert_eq!(kept, ["s2", "s3", "s4"]);
    assert!(!blob_of(&blobs, &sessions[0][2]).exists());
    assert!(!blob_of(&blobs, &sessions[1][2]).exists());
    assert!(blob_of(&blobs, &sessions[2][2]).exists());
    assert_eq!(out.blobs, 2);

    // A limit below what is left: everything but the session active
    // within the last hour goes, and the run says it is still over.
    let out = store
        .enforce_retention(
            &RetentionPolicy {
                max_age: None,
                max_bytes: Some(1),
            },
            now,
        )
        .await
        .expect("retention");
    assert_eq!(out.sessions, 2, "{out:?}");
    assert!(out.over_limit);
    let left = store
        .sessions(
            &SessionFilter {
                limit: 100,
                ..SessionFilter::default()
            },
            now,
        )
        .await
        .expect("sessions");
    assert_eq!(
        left.iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        ["s4"]
    );
    let report = sealer.verify(&store, "s4").await;
    assert_eq!(
        report.status,
        sluice_audit_chain::Status::Verified,
        "{report:?}"
    );
}

async fn the_size_backfill_matches_the_size_recorded_on_insertion(backend: &Backend) {
    eprintln!(
        "--- the_size_backfill_matches_the_size_recorded_on_insertion ({:?})",
        backend.engine()
    );
    let url = backend.fresh_url("backfill");
    let store = Store::connect(&url).await.expect("open");
    let mut events: Vec<StoredAuditEvent> = (1..=5)
        .map(|n| event(n, "ünï", "orders", "allow", "statement", "s1"))
        .collect();
    events[0].prev_hash = None;
    events[1].hash = None;
    events[2].attributes_json = String::new();
    store
        .insert_audit_events("édge", &events)
        .await
        .expect("insert");
    let recorded = store.recorded_bytes().await.expect("bytes");
    assert!(recorded > 5 * 100, "{recorded}");
    store.close().await;

    // Run the migration's backfill over the same rows: same sizes.
    let migration = match backend.engine() {
        Engine::Sqlite => include_str!("../../migrations/sqlite/0004_blobs_and_retention.sql"),
        Engine::Postgres => include_str!("../../migrations/postgres/0004_blobs_and_retention.sql"),
    };
    let start = migration.find("UPDATE audit_events").expect("the backfill");
    let update = &migration[start..];
    let update = &update[..update.find(';').expect("end of statement")];
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    sqlx::query("UPDATE audit_events SET stored_bytes = 0")
        .execute(&pool)
        .await
        .expect("reset");
    sqlx::query(sqlx::AssertSqlSafe(update.to_owned()))
        .execute(&pool)
        .await
        .expect("backfill");
    pool.close().await;
    let again = Store::connect(&url).await.expect("reopen");
    assert_eq!(again.recorded_bytes().await.expect("bytes"), recorded);
    again.close().await;
}
