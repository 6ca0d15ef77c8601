//! Two control plane replicas sharing one PostgreSQL, as in an HA
//! deployment behind a load balancer. The agent is attached to one replica,
//! and the approver and administrator talk to the other. Their decisions
//! must still reach the agent. The target confirms what ran.
//!
//! The replicas poll the database only once an hour here, so what reaches
//! the other replica within the tests' waits was announced through
//! PostgreSQL's notifications.

use std::time::Duration;

use sluice_integration_tests::{
    AgentProc, ControlPlaneProc, Postgres, SluiceCli,
    datapath::{configure, create_target},
    eventually,
    rawpg::{RawSession, errors, first_column, query},
};

/// Deletes wait for a DBA; everything else the tests send is allowed.
const RULES: &str = r#"
      - approve: { sql: { statements: [delete] }, approvers: [dba], timeout: 60s }
        name: risky
      - allow: { sql: { statements: [read, transaction, session] } }
        name: work
"#;

/// Replicas `a` and `b` on one database, and agent `edge` attached to `b`.
struct Replicated {
    pg: Postgres,
    a: ControlPlaneProc,
    b: ControlPlaneProc,
    agent: AgentProc,
    /// The blob directory the replicas share.
    _blobs: tempfile::TempDir,
}

impl Replicated {
    async fn start() -> Self {
        let pg = Postgres::start();
        create_target(&pg);
        pg.psql("postgres", "CREATE DATABASE sluice");
        let shared = tempfile::Builder::new()
            .prefix("sluice-blobs-")
            .tempdir()
            .expect("tempdir");
        let env = vec![
            ("SLUICE_DATABASE_URL".to_owned(), pg.url("sluice")),
            // Replicas share the vault's key, the blob directory and the
            // public URL (the built-in issuer's name).
            ("SLUICE_MASTER_KEY".to_owned(), "ab".repeat(32)),
            (
                "SLUICE_PUBLIC_URL".to_owned(),
                "https://sluice.example.test".to_owned(),
            ),
            (
                "SLUICE_BLOB_DIR".to_owned(),
                shared.path().display().to_string(),
            ),
            ("SLUICE_HA_POLL_INTERVAL".to_owned(), "1h".to_owned()),
        ];
        let mut a = ControlPlaneProc::start_with(env.clone()).await;
        let b = ControlPlaneProc::start_with(env).await;
        let revision = configure(&mut a, pg.port, RULES).await;
        // Enrolled through `a`, attached to `b`.
        let join = a.join_token("edge").await;
        let mut agent = AgentProc::spawn_with_token(&b.grpc_url(), "edge", Some(&join), Vec::new());
        agent.wait_ready().await;
        agent.wait_version(revision, Duration::from_secs(10)).await;
        Self {
            pg,
            a,
            b,
            agent,
            _blobs: shared,
        }
    }

    /// Changes the policy through replica `a` so that reads are denied,
    /// and waits until the agent (attached to `b`) enforces it.
    async fn forbid_reads_through_a(&mut self) {
        let revision = configure(
            &mut self.a,
            self.pg.port,
            r#"
      - allow: { sql: { statements: [transaction, session] } }
        name: work
"#,
        )
        .await;
        self.agent
            .wait_version(revision, Duration::from_secs(20))
            .await;
    }

    fn target(&self, sql: &str) -> String {
        self.pg.psql("app", sql).trim().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_given_through_one_replica_releases_a_statement_held_through_another() {
    let mut r = Replicated::start().await;
    let alice = r.a.user_token("alice", &["devs"]).await;
    let bob = r.a.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&r.a.url(), Some(&bob));
    let port = r.agent.pg_port;
    let psql = std::thread::spawn(move || {
        sluice_integration_tests::psql_script(
            port,
            &alice,
            "DELETE FROM items WHERE id = 7;\nSELECT 'after';\n",
        )
    });
    // Filed by the agent through `b`, listed and approved through `a`.
    let id = eventually(
        Duration::from_secs(20),
        "the DELETE's approval request",
        || async {
            let out = dba
                .run(&["approvals", "list", "--status", "pending", "--json"])
                .ok();
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            v["approvals"].as_array().unwrap().iter().find_map(|a| {
                a["statement"]
                    .as_str()
                    .is_some_and(|s| s.contains("id = 7"))
                    .then(|| a["id"].as_str().unwrap().to_owned())
            })
        },
    )
    .await;
    assert_eq!(
        r.target("SELECT count(*) FROM items WHERE id = 7"),
        "1",
        "nothing ran while waiting"
    );
    dba.run(&["approvals", "approve", &id, "--reason", "ticket 9"])
        .ok();
    let (out, err) = psql.join().unwrap();
    assert!(
        out.contains("DELETE 1") && out.contains("after"),
        "the approved DELETE did not run: {out}\n{err}"
    );
    assert_eq!(r.target("SELECT count(*) FROM items WHERE id = 7"), "0");
    let logs = r.a.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("approval decision sent") && l.contains("queued")),
        "replica a should have left the decision for replica b:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_requested_through_one_replica_ends_a_session_attached_to_another() {
    let mut r = Replicated::start().await;
    let alice = r.a.user_token("alice", &["devs"]).await;
    let mut s = RawSession::connect(r.agent.pg_port, "app", &alice).await;
    s.send(&query("SELECT 'working'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["working"]);
    let admin = SluiceCli::new(&r.a.url(), Some(&r.a.admin_token()));
    let id = admin.wait_sessions("alice", "live", 1).await.remove(0);
    let out = admin
        .run(&["sessions", "kill", &id, "--reason", "incident 8"])
        .ok();
    assert!(
        out.stdout
            .contains("not attached to this control plane replica"),
        "{}",
        out.stdout
    );
    let text = errors(&s.until(b'E').await);
    assert!(
        text.contains("57P01") && text.contains("incident 8"),
        "the client was not told why: {text}"
    );
    // Its end is recorded, as either replica shows.
    let other = SluiceCli::new(&r.b.url(), Some(&r.a.admin_token()));
    let show = eventually(Duration::from_secs(30), "the session's end", || async {
        let out = other.run(&["sessions", "show", &id]).ok();
        out.stdout.contains("incident 8").then_some(out.stdout)
    })
    .await;
    assert!(show.contains("ended"), "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_through_one_replica_reaches_an_agent_attached_to_another() {
    let mut r = Replicated::start().await;
    let alice = r.a.user_token("alice", &["devs"]).await;
    let mut s = RawSession::connect(r.agent.pg_port, "app", &alice).await;
    s.send(&query("SELECT count(*) FROM items")).await;
    assert_eq!(first_column(&s.until(b'Z').await).len(), 1);
    // Reads are no longer allowed: changed through `a`.
    r.forbid_reads_through_a().await;
    s.send(&query("SELECT count(*) FROM items")).await;
    let text = errors(&s.until(b'Z').await);
    assert!(text.contains("42501"), "the read was not denied: {text}");
    // What operators see of it.
    assert!(metric(&mut r.a, "replica_notices_sent_total").await >= 1.0);
    assert!(metric(&mut r.b, "replica_notices_received_total").await >= 1.0);
    assert_eq!(metric(&mut r.b, "replica_listener_connected").await, 1.0);
    assert_eq!(metric(&mut r.a, "replica_notices_dropped_total").await, 0.0);
}

/// The value of `sluice_control_plane_<name>` on `cp`'s `/metrics`.
async fn metric(cp: &mut ControlPlaneProc, name: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", cp.url()))
        .bearer_auth(cp.admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let full = format!("sluice_control_plane_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&full))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {full} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_stream_of_one_replica_shows_requests_and_votes_made_through_another() {
    let mut r = Replicated::start().await;
    let alice = r.a.user_token("alice", &["devs"]).await;
    let bob = r.a.user_token("bob", &["dba"]).await;
    // A console on `a`, subscribed before the request exists.
    let mut events = reqwest::Client::new()
        .get(format!("{}/api/v1/approvals/events", r.a.url()))
        .bearer_auth(r.a.admin_token())
        .send()
        .await
        .unwrap();
    assert!(events.status().is_success());
    let port = r.agent.pg_port;
    let psql = std::thread::spawn(move || {
        sluice_integration_tests::psql_script(port, &alice, "DELETE FROM items WHERE id = 8;\n")
    });
    // Filed by the agent through `b`.
    let mut streamed = String::new();
    let request = read_until(&mut events, &mut streamed, |s| {
        s.contains("event: approval.request") && s.contains("id = 8")
    })
    .await;
    let id = request["id"].as_str().unwrap().to_owned();
    assert_eq!(request["status"], "pending");
    // Approved through `b`; `a`'s stream shows the vote's outcome.
    SluiceCli::new(&r.b.url(), Some(&bob))
        .run(&["approvals", "approve", &id, "--reason", "ticket 10"])
        .ok();
    let update = read_until(&mut events, &mut streamed, |s| {
        s.lines()
            .any(|l| l.starts_with("data:") && l.contains(&id) && l.contains("\"approved\""))
    })
    .await;
    assert_eq!(update["id"], id.as_str());
    let (out, err) = psql.join().unwrap();
    assert!(
        out.contains("DELETE 1"),
        "the approved DELETE did not run: {out}\n{err}"
    );
    assert_eq!(r.target("SELECT count(*) FROM items WHERE id = 8"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_listening_connection_is_cut_reconnects_and_catches_up() {
    let mut r = Replicated::start().await;
    let cut = r.pg.psql(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'",
    );
    assert_eq!(cut.trim(), "2", "each replica listens on one connection");
    r.forbid_reads_through_a().await;
    let logs = r.b.logs();
    assert!(
        logs.contains("lost the connection that listens for other replicas' changes"),
        "replica b did not notice its listener was cut:\n{logs}"
    );
}

/// Reads the event stream into `streamed` until a complete event satisfies
/// `matches`, and returns that event's data (one `data:` line of JSON).
async fn read_until(
    events: &mut reqwest::Response,
    streamed: &mut String,
    matches: impl Fn(&str) -> bool,
) -> serde_json::Value {
    // Keep-alive comments arrive meanwhile, so the wait has one deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let complete = streamed.rfind("\n\n").map_or("", |end| &streamed[..end]);
        if let Some(event) = complete.split("\n\n").find(|e| matches(e)) {
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .expect("an event has data");
            let value = serde_json::from_str(data.trim()).expect("event data is JSON");
            // Later reads start after this event.
            let end = streamed.find(event).unwrap_or(0) + event.len();
            streamed.drain(..end);
            return value;
        }
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .unwrap_or_else(|_| panic!("no such event streamed; got:\n{streamed}"))
            .unwrap()
            .expect("the stream stays open");
        streamed.push_str(&String::from_utf8_lossy(&chunk));
    }
}
