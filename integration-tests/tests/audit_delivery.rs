//! Audit events survive a control-plane outage (and an agent restart in
//! the middle of it) and are delivered exactly once when it comes back;
//! under a benchmark's load, every statement's event arrives, each
//! session's chain complete.

use std::{collections::HashSet, process::Command, time::Duration};

use sluice_integration_tests::{
    AgentProc, ControlPlaneProc,
    datapath::DataPath,
    eventually, psql_via_agent,
    rawpg::{RawSession, query},
    simple_policy,
};

#[tokio::test]
async fn events_produced_while_the_control_plane_is_down_all_arrive_once() {
    let mut cp = ControlPlaneProc::start().await;
    let mut agent = AgentProc::start(&mut cp, "edge").await;
    let (_, v) = cp
        .api()
        .apply_policy(&simple_policy("edge", "orders", "devs", "127.0.0.1:5432"))
        .await;
    agent
        .wait_version(v["revision"].as_u64().unwrap(), Duration::from_secs(5))
        .await;
    let outsider = cp.user_token("outsider", &["nobody"]).await;

    cp.stop();
    const BEFORE_RESTART: usize = 7;
    const AFTER_RESTART: usize = 6;
    for _ in 0..BEFORE_RESTART {
        let (ok, _, err) = psql_via_agent(agent.pg_port, "orders", &outsider, "select 1");
        assert!(!ok && err.contains("no policy grants"), "{err}");
    }
    // The spool is durable: restart the agent while events are undelivered.
    agent.stop();
    agent.start_again().await;
    for _ in 0..AFTER_RESTART {
        let (ok, _, err) = psql_via_agent(agent.pg_port, "orders", "not-a-jwt", "select 1");
        assert!(!ok && err.contains("token rejected"), "{err}");
    }
    let pending = agent.status().await.unwrap()["audit_spool"]["pending"]
        .as_u64()
        .unwrap();
    assert_eq!(
        pending,
        (BEFORE_RESTART + AFTER_RESTART) as u64,
        "events spooled while the control plane is down"
    );

    cp.start_again().await;
    let api = cp.api();
    let events = eventually(
        Duration::from_secs(30),
        "all audit events to arrive",
        || async {
            let v = api
                .get_ok("/api/v1/audit?kind=session.start&resource=orders&limit=1000")
                .await;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            (events.len() >= BEFORE_RESTART + AFTER_RESTART).then_some(events)
        },
    )
    .await;
    // Give a duplicate delivery the chance to show up before counting.
    eventually(
        Duration::from_secs(10),
        "the spool to be acknowledged",
        || async {
            let s = agent.status().await?;
            (s["audit_spool"]["pending"] == 0).then_some(())
        },
    )
    .await;
    let events = {
        let v = api
            .get_ok("/api/v1/audit?kind=session.start&resource=orders&limit=1000")
            .await;
        let again = v["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(again.len(), events.len(), "no event delivered twice");
        again
    };
    assert_eq!(events.len(), BEFORE_RESTART + AFTER_RESTART);
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    let seqs: HashSet<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), events.len(), "sequence numbers are unique");
    let by_outsider = events.iter().filter(|e| e["subject"] == "outsider").count();
    assert_eq!(by_outsider, BEFORE_RESTART);
    assert!(
        events
            .iter()
            .all(|e| e["decision"] == "deny" && e["agent"] == "edge")
    );
    let bad_token = events
        .iter()
        .filter(|e| e["error"].as_str().unwrap_or("").contains("token rejected"))
        .count();
    assert_eq!(bad_token, AFTER_RESTART);
    // No token ever lands in the audit trail.
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(&outsider),
        "a token leaked into the audit trail"
    );
}

#[tokio::test]
async fn a_spool_damaged_with_intact_records_after_the_damage_is_cut_there_and_the_trail_says_so() {
    // What a power loss can leave of writes not yet synced: a record in the
    // middle of the last segment lost, later ones on disk intact.
    let mut cp = ControlPlaneProc::start().await;
    let mut agent = AgentProc::start(&mut cp, "edge").await;
    cp.stop();
    let refuse = |agent: &AgentProc, database: &str| {
        let (ok, _, err) = psql_via_agent(agent.pg_port, database, "not-a-jwt", "select 1");
        assert!(!ok && err.contains("is not a PostgreSQL resource"), "{err}");
    };
    for database in ["db-kept", "db-damaged", "db-after-1", "db-after-2"] {
        refuse(&agent, database);
    }
    agent.stop();
    let spool = agent.state_path("spool");
    let segment = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a spool segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"db-damaged")
        .expect("the refusal's record");
    bytes[at] = b'X';
    std::fs::write(&segment, &bytes).unwrap();

    agent.start_again().await;
    refuse(&agent, "db-next");
    assert!(
        agent
            .logs()
            .contains("the audit spool is damaged inside its last segment"),
        "{}",
        agent.logs()
    );
    cp.start_again().await;
    let api = cp.api();
    let report = eventually(
        Duration::from_secs(30),
        "the damage report to arrive",
        || async {
            let v = api.get_ok("/api/v1/audit?kind=audit.damaged").await;
            v["events"].as_array()?.first().cloned()
        },
    )
    .await;
    assert_eq!(report["agent"], "edge");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("on may be missing from the trail"),
        "{error}"
    );
    let kept_at = report["attributes"]["kept_at"].as_str().unwrap();
    let kept = std::fs::read(kept_at).expect("the bytes cut off are kept");
    for database in ["db-after-1", "db-after-2"] {
        assert!(
            kept.windows(database.len())
                .any(|w| w == database.as_bytes()),
            "{database} is in the kept file"
        );
    }
    let databases = eventually(
        Duration::from_secs(30),
        "the refusal after the restart to arrive",
        || async {
            let v = api
                .get_ok("/api/v1/audit?kind=session.start&limit=1000")
                .await;
            let got: Vec<String> = v["events"]
                .as_array()?
                .iter()
                .filter_map(|e| e["resource"].as_str().map(str::to_owned))
                .collect();
            got.iter().any(|d| d == "db-next").then_some(got)
        },
    )
    .await;
    let mut databases = databases;
    databases.sort();
    assert_eq!(
        databases,
        ["db-kept", "db-next"],
        "what was before the damage, and after the restart"
    );

    // Reported once: a later start finds nothing more to cut.
    agent.stop();
    agent.start_again().await;
    refuse(&agent, "db-last");
    eventually(
        Duration::from_secs(30),
        "the last refusal to arrive",
        || async {
            let v = api
                .get_ok("/api/v1/audit?kind=session.start&resource=db-last")
                .await;
            (!v["events"].as_array()?.is_empty()).then_some(())
        },
    )
    .await;
    let v = api.get_ok("/api/v1/audit?kind=audit.damaged").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
}

/// Statements pgbench runs per client below (and so at least this many
/// statement events per session).
const PGBENCH_TRANSACTIONS: u64 = 400;
const PGBENCH_CLIENTS: u64 = 4;

#[tokio::test]
async fn every_statement_of_a_pgbench_run_arrives_and_each_session_verifies() {
    let mut dp = DataPath::start_with(
        r#"
      - allow: { sql: { statements: [read, transaction, session] } }
"#,
        Vec::new(),
    )
    .await;
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p"])
        .arg(dp.pg.port.to_string())
        .args(["-U", "postgres", "app"])
        .output()
        .expect("run pgbench (install postgresql-contrib / postgresql)");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    dp.target("GRANT SELECT ON ALL TABLES IN SCHEMA public TO app");
    let out = Command::new("pgbench")
        .args(["-S", "-n", "-M", "prepared", "-j", "2", "-c"])
        .arg(PGBENCH_CLIENTS.to_string())
        .arg("-t")
        .arg(PGBENCH_TRANSACTIONS.to_string())
        .args(["-h", "127.0.0.1", "-p"])
        .arg(dp.agent.pg_port.to_string())
        .args(["-U", "alice", "app"])
        .env("PGPASSWORD", &dp.token)
        .env("PGSSLMODE", "disable")
        .output()
        .expect("run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let processed = PGBENCH_CLIENTS * PGBENCH_TRANSACTIONS;
    assert!(
        out.status.success()
            && stdout.contains(&format!(
                "number of transactions actually processed: {processed}/{processed}"
            )),
        "pgbench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The agent's spool drains: the control plane stored everything.
    eventually(
        Duration::from_secs(60),
        "the audit spool to be acknowledged",
        || async {
            let s = dp.agent.status().await?;
            (s["audit_spool"]["pending"] == 0).then_some(())
        },
    )
    .await;
    let api = dp.cp.api();
    let v = api
        .get_ok("/api/v1/sessions?subject=alice&resource=app&limit=100")
        .await;
    let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
    let running: Vec<_> = sessions
        .iter()
        .filter(|s| s["statements"].as_u64() >= Some(PGBENCH_TRANSACTIONS))
        .collect();
    assert_eq!(
        running.len() as u64,
        PGBENCH_CLIENTS,
        "one session per pgbench client ran its transactions: {v}"
    );
    for s in sessions {
        let id = s["id"].as_str().unwrap();
        assert_eq!(s["status"], "ended", "{s}");
        // The agent's own count, in the session's end event, matches the
        // statement events the control plane holds...
        let end = api
            .get_ok(&format!(
                "/api/v1/audit?session={id}&kind=session.end&limit=1"
            ))
            .await;
        let counted = &end["events"][0]["attributes"]["statements"];
        assert_eq!(
            counted, &s["statements"],
            "statement events stored for session {id} (agent's count, then stored): {end}"
        );
        // ...and the session's hash chain is complete and unaltered.
        let report = api.get_ok(&format!("/api/v1/sessions/{id}/verify")).await;
        assert_eq!(report["status"], "verified", "{report}");
    }
}

/// Statements and parameters larger than an event holds (1 MiB together)
/// are clipped in their events, which say how long they were and their
/// SHA-256, and the statements still run and are recorded with their
/// outcome. Before, a write-ahead record that only just fit the spool's
/// 4 MiB records left a statement that ran with no event at all (its
/// outcome made the event too long, and so did its outcome-unknown
/// stand-in). Delivery goes on past the large events: the control plane
/// once refused a batch of them as too large for a gRPC message, every
/// time it was sent, so nothing after it ever arrived.
#[tokio::test]
async fn statements_longer_than_an_event_holds_run_and_are_recorded_clipped() {
    use sluice_integration_tests::rawpg::{
        RawSession, bind_text, errors, execute, parse, query, sync,
    };
    let mut dp = DataPath::start().await;
    dp.target("SET ROLE app; CREATE TABLE blobs (body text)");
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let sha = |v: &str| {
        let d = ring::digest::digest(&ring::digest::SHA256, v.as_bytes());
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    // A parameter just short of the spool's records, and one past them.
    for len in [4 * 1024 * 1024 - 300, 5 * 1024 * 1024] {
        let body = "b".repeat(len);
        let mut batch = parse("", "INSERT INTO blobs VALUES ($1)");
        batch.extend(bind_text("", "", &[&body]));
        batch.extend(execute("", 0));
        batch.extend(sync());
        s.send(&batch).await;
        assert_eq!(errors(&s.until(b'Z').await), "", "{len}");
    }
    // Denied (over 1 MiB of SQL), and recorded.
    let long = format!("SELECT 1 /* {} */", "x".repeat(5 * 1024 * 1024));
    s.send(&query(&long)).await;
    let said = errors(&s.until(b'Z').await);
    assert!(said.contains("42501"), "{said}");
    s.send(&query("SELECT 'after the big ones'")).await;
    s.until(b'Z').await;
    assert_eq!(
        dp.target("SELECT string_agg(length(body)::text, ',' ORDER BY 1) FROM blobs"),
        format!("{},{}", 4 * 1024 * 1024 - 300, 5 * 1024 * 1024)
    );
    eventually(
        Duration::from_secs(30),
        "the audit spool to be acknowledged",
        || async {
            let s = dp.agent.status().await?;
            (s["audit_spool"]["pending"] == 0).then_some(())
        },
    )
    .await;
    let v = dp
        .cp
        .api()
        .get_ok("/api/v1/audit?kind=statement&subject=alice&limit=100")
        .await;
    let events: Vec<&serde_json::Value> = v["events"].as_array().into_iter().flatten().collect();
    assert!(
        events
            .iter()
            .any(|e| e["statement"] == "SELECT 'after the big ones'"),
        "{events:?}"
    );
    let inserts: Vec<&&serde_json::Value> = events
        .iter()
        .filter(|e| e["statement"] == "INSERT INTO blobs VALUES ($1)")
        .collect();
    assert_eq!(inserts.len(), 2);
    for len in [4 * 1024 * 1024 - 300, 5 * 1024 * 1024] {
        let note = format!(
            "... [clipped by sluice for the audit trail: {len} bytes in all, SHA-256 {}]",
            sha(&"b".repeat(len))
        );
        let event = inserts
            .iter()
            .find(|e| {
                e["parameters"][0]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&note))
            })
            .unwrap_or_else(|| panic!("the insert of {len} bytes, clipped"));
        // Recorded with its outcome, not as a stand-in.
        assert_eq!(
            (&event["decision"], &event["rows"]),
            (&"allow".into(), &1.into()),
            "{len}"
        );
        assert!(event["attributes"].get("outcome").is_none(), "{len}");
        let param = event["parameters"][0].as_str().unwrap();
        assert!(
            param.len() <= 1024 * 1024 && param.starts_with("bbbb"),
            "{len}"
        );
    }
    let denied = events
        .iter()
        .find(|e| {
            e["statement"]
                .as_str()
                .is_some_and(|t| t.starts_with("SELECT 1 /* xxx"))
        })
        .expect("the long statement's event");
    let text = denied["statement"].as_str().unwrap();
    assert_eq!(denied["decision"], "deny");
    assert!(
        text.len() <= 1024 * 1024
            && text.ends_with(&format!(
                "{} bytes in all, SHA-256 {}]",
                long.len(),
                sha(&long)
            )),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
}

/// Every file under `dir`, with its mode.
fn modes_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((entry.path(), meta.permissions().mode() & 0o777));
        }
    }
    out
}

#[tokio::test]
async fn the_audit_trail_at_rest_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut dp = DataPath::start().await;
    let (ok, _, err) = dp.psql("SELECT 'a statement worth keeping private'");
    assert!(ok, "{err}");
    let api = dp.cp.api();
    eventually(Duration::from_secs(10), "the event to arrive", || async {
        let (_, v) = api.get("/api/v1/audit?kind=statement").await;
        (!v["events"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The agent's state (its key, the spool of statements and parameter
    // values) and the control plane's data (the database, blobs).
    let state = dp.agent.state_dir();
    let data = dp.cp.dir.path().join("data");
    for dir in [&state, &data] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let spooled: Vec<_> = modes_under(&state)
        .into_iter()
        .filter(|(p, _)| p.components().any(|c| c.as_os_str() == "spool"))
        .collect();
    assert!(spooled.iter().any(|(p, _)| p.is_file()), "{spooled:?}");
    let stored = modes_under(&data);
    assert!(
        stored.iter().any(|(p, _)| p.ends_with("sluice.db")),
        "{stored:?}"
    );
    for (path, mode) in spooled.iter().chain(&stored) {
        let private = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, private, "{} is {mode:o}", path.display());
    }
    // A directory opened up since keeps its mode, and each says so when it
    // starts again.
    for dir in [&state, &data] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dp.agent.stop();
    dp.cp.restart().await;
    dp.agent.start_again().await;
    for logs in [dp.cp.logs(), dp.agent.logs()] {
        assert!(logs.contains("open to other users; chmod 700 it"), "{logs}");
    }
}

/// `--audit-sync always`: every record is fsynced before its statement is
/// forwarded (off the runtime's worker, so sessions wait for the disk, not
/// for each other). Concurrent sessions all run, and every statement's
/// event arrives with its outcome; a statement its client walked away
/// from (recorded as its session's task ends) arrives outcome unknown.
#[tokio::test]
async fn with_audit_sync_always_concurrent_sessions_run_and_every_statement_is_recorded() {
    use sqlx::Connection as _;
    const SESSIONS: usize = 4;
    const INSERTS: usize = 25;
    let mut dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--audit-sync".into(), "always".into()],
    )
    .await;
    let status = dp.agent.status().await.unwrap();
    assert_eq!(status["audit_spool"]["sync"], "always", "{status}");
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let url = dp.url();
            tokio::spawn(async move {
                let mut conn = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
                for j in 0..INSERTS {
                    sqlx::query("INSERT INTO notes (body) VALUES ($1)")
                        .bind(format!("always {i} {j}"))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for session in sessions {
        session.await.unwrap();
    }
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body LIKE 'always %'"),
        (SESSIONS * INSERTS).to_string()
    );
    let mut walker = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    walker
        .send(&query("SELECT pg_sleep(5), 'always-walked-away'"))
        .await;
    eventually(
        Duration::from_secs(10),
        "the statement to run on the target",
        || async {
            let active = dp.target(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%always-walked' || '-away%'",
            );
            (active == "1").then_some(())
        },
    )
    .await;
    drop(walker);
    let api = dp.cp.api();
    let recorded = eventually(
        Duration::from_secs(30),
        "every statement's event to arrive",
        || async {
            let v = api.get_ok("/api/v1/audit?kind=statement&limit=1000").await;
            let recorded: Vec<serde_json::Value> = v["events"]
                .as_array()?
                .iter()
                .filter(|e| {
                    e["parameters"][0]
                        .as_str()
                        .is_some_and(|p| p.starts_with("always "))
                })
                .cloned()
                .collect();
            (recorded.len() >= SESSIONS * INSERTS).then_some(recorded)
        },
    )
    .await;
    assert_eq!(recorded.len(), SESSIONS * INSERTS);
    for event in &recorded {
        assert_eq!(event["rows"], 1, "{event}");
        assert!(event["attributes"].get("outcome").is_none(), "{event}");
    }
    let walked_away = api
        .event_where("statement", "statement", "always-walked-away")
        .await;
    assert_eq!(
        walked_away["attributes"]["outcome"], "unknown",
        "{walked_away}"
    );
}
