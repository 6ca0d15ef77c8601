//! Live sessions: ending them (admin, revoked grant), and the session
//! record (chain, transcript, verification).

use std::time::Duration;

use sluice_integration_tests::{
    SluiceCli,
    datapath::{DEFAULT_RULES, DataPath},
    eventually, psql_script,
    rawpg::{RawSession, errors, first_column, query},
};

#[tokio::test]
async fn revoking_the_grant_ends_the_subject_s_live_sessions() {
    let mut dp = DataPath::start().await;
    let bob = dp.cp.user_token("bob", &["devs", "ops"]).await;
    let mut alice = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut bystander = RawSession::connect(dp.agent.pg_port, "app", &bob).await;
    alice.send(&query("SELECT 'before'")).await;
    assert_eq!(first_column(&alice.until(b'Z').await), ["before"]);

    // The new policy grants ops instead of devs.
    let (s, v) = dp
        .cp
        .api()
        .apply_policy(&dp.policy("ops", DEFAULT_RULES))
        .await;
    assert!(s.is_success(), "{v}");
    dp.agent
        .wait_version(v["revision"].as_u64().unwrap(), Duration::from_secs(10))
        .await;
    let got = alice.until(b'E').await;
    let text = errors(&got);
    assert!(
        text.contains("57P01") && text.contains("revoked"),
        "alice's session was not ended with a clear message: {text}"
    );
    // bob is still granted (through ops): his session goes on.
    bystander.send(&query("SELECT 'still-granted'")).await;
    assert_eq!(
        first_column(&bystander.until(b'Z').await),
        ["still-granted"]
    );
}

/// Kills the agent (SIGKILL) and starts it again: the CLI and the id of
/// the session it left incomplete.
async fn crash_the_agent(
    agent: &mut sluice_integration_tests::AgentProc,
    cp: &mut sluice_integration_tests::ControlPlaneProc,
) -> (SluiceCli, String) {
    agent.kill9();
    agent.start_again().await;
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    let id = cli.wait_sessions("alice", "incomplete", 1).await.remove(0);
    (cli, id)
}

/// Waits until session `id`'s transcript satisfies `done`: the `show
/// --json` output and the transcript.
async fn wait_transcript(
    cli: &SluiceCli,
    id: &str,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> (String, Vec<serde_json::Value>) {
    eventually(Duration::from_secs(30), what, || async {
        let (out, t) = transcript(cli, id);
        done(&t).then_some((out, t))
    })
    .await
}

/// A session that ran `SELECT '<answered>'`, then sent a statement marked
/// `running` that sleeps on the target: returned once it runs there.
async fn answered_then_running(
    pg: &sluice_integration_tests::Postgres,
    port: u16,
    token: &str,
    answered: &str,
    running: &str,
) -> RawSession {
    let mut s = RawSession::connect(port, "app", token).await;
    s.send(&query(&format!("SELECT '{answered}'"))).await;
    s.until(b'Z').await;
    s.send(&query(&format!("SELECT pg_sleep(5), '{running}'")))
        .await;
    eventually(
        Duration::from_secs(10),
        "the statement to run on the target",
        || async {
            let active = pg.psql(
                "app",
                &format!("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{running}%' AND pid <> pg_backend_pid()"),
            );
            (active.trim() == "1").then_some(())
        },
    )
    .await;
    s
}

/// The control plane's SQLite database, for tampering with the record.
async fn record_db(cp: &sluice_integration_tests::ControlPlaneProc) -> sqlx::SqliteConnection {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", cp.data_dir().join("sluice.db").display());
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

/// `sluice sessions show --json` of `id`: the output and its transcript.
fn transcript(cli: &SluiceCli, id: &str) -> (String, Vec<serde_json::Value>) {
    let out = cli.run(&["sessions", "show", id, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let entries = v["transcript"].as_array().cloned().unwrap_or_default();
    (out.stdout, entries)
}

/// Each transcript entry's outcome, in order.
fn outcomes(transcript: &[serde_json::Value]) -> Vec<&str> {
    transcript
        .iter()
        .map(|t| t["outcome"].as_str().unwrap())
        .collect()
}

fn verify(cli: &SluiceCli, session: &str) -> (bool, String) {
    let out = cli.run(&["audit", "verify", session]);
    (out.success(), format!("{}{}", out.stdout, out.stderr))
}

#[tokio::test]
async fn a_session_is_listed_with_its_transcript_and_verifies_until_tampered_with() {
    let DataPath {
        pg: _pg,
        mut cp,
        agent,
        token,
    } = DataPath::start().await;
    let (out, err) = psql_script(
        agent.pg_port,
        &token,
        "SELECT id, name FROM items WHERE id <= 2 ORDER BY id;\nDROP TABLE items;\nSELECT count(*) FROM items;\n",
    );
    assert!(err.contains("denied this statement"), "{err}");
    assert!(out.contains("1|item 1") && out.contains("500"), "{out}");
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    let id = cli.wait_sessions("alice", "ended", 1).await.remove(0);

    let (shown, transcript) = transcript(&cli, &id);
    let outcomes = outcomes(&transcript);
    assert_eq!(outcomes, ["ok", "denied", "ok"], "{shown}");
    assert_eq!(
        transcript[0]["result"]["sets"][0]["rows"],
        serde_json::json!([["1", "item 1"], ["2", "item 2"]])
    );
    assert_eq!(transcript[1]["rule"], "devs-on-app/no-changes");
    let text = cli.run(&["sessions", "show", &id]).ok().stdout;
    assert!(
        text.contains("item 2") && text.contains("denied") && text.contains("DROP TABLE items"),
        "{text}"
    );
    let (ok, report) = verify(&cli, &id);
    assert!(ok && report.starts_with("OK"), "{report}");

    // Four more sessions to tamper with, one way each, and one left alone.
    for i in 0..5 {
        psql_script(
            agent.pg_port,
            &token,
            &format!("SELECT {i};\nSELECT {i} + 1;\nSELECT {i} + 2;\n"),
        );
    }
    let mut ids = cli.wait_sessions("alice", "ended", 6).await;
    ids.retain(|s| *s != id);
    let mut db = record_db(&cp).await;
    let sql = [
        // Altered: one statement's text changed.
        "UPDATE audit_events SET statement = 'SELECT 42' WHERE session_id = $1 AND session_seq = 3",
        // Removed: an event in the middle.
        "DELETE FROM audit_events WHERE session_id = $1 AND session_seq = 2",
        // Reordered: two events swap places.
        "UPDATE audit_events SET session_seq = CASE session_seq WHEN 1 THEN 2 ELSE 1 END WHERE session_id = $1 AND session_seq IN (1, 2)",
        // Missing at the end: the last two events deleted.
        "DELETE FROM audit_events WHERE session_id = $1 AND session_seq >= (SELECT max(session_seq) - 1 FROM audit_events WHERE session_id = $1)",
    ];
    let expect = ["was altered", "was removed", "reordered", "were removed"];
    for ((session, sql), expect) in ids.iter().zip(sql).zip(expect) {
        let done = sqlx::query(sql)
            .bind(session)
            .execute(&mut db)
            .await
            .unwrap();
        assert!(done.rows_affected() > 0, "{sql}");
        let (ok, report) = verify(&cli, session);
        assert!(!ok, "a tampered session verified: {report}");
        assert!(
            report.contains("FAILED") && report.contains(expect),
            "`{sql}` should be reported as `{expect}`: {report}"
        );
    }
    let untouched = &ids[4];
    let (ok, report) = verify(&cli, untouched);
    assert!(ok, "the untouched session: {report}");
    let (ok, report) = verify(&cli, &id);
    assert!(ok, "the first session: {report}");
}

#[tokio::test]
async fn ending_a_session_through_the_cli_closes_the_client_with_a_message() {
    let DataPath {
        pg: _pg,
        mut cp,
        agent,
        token,
    } = DataPath::start().await;
    let mut s = RawSession::connect(agent.pg_port, "app", &token).await;
    s.send(&query("SELECT 'working'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["working"]);
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    let id = cli.wait_sessions("alice", "live", 1).await.remove(0);
    cli.run(&["sessions", "kill", &id, "--reason", "incident 7"])
        .ok();
    let killed = std::time::Instant::now();
    let got = s.until(b'E').await;
    let elapsed = killed.elapsed();
    let text = errors(&got);
    assert!(
        text.contains("57P01") && text.contains("incident 7"),
        "the client was not told why: {text}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "the session ended {elapsed:?} after the kill"
    );
    let ended = cli.wait_sessions("alice", "ended", 1).await;
    assert_eq!(ended, std::slice::from_ref(&id));
    let show = cli.run(&["sessions", "show", &id]).ok().stdout;
    assert!(show.contains("incident 7"), "{show}");
    let (ok, report) = verify(&cli, &id);
    assert!(ok, "{report}");
}

#[tokio::test]
async fn a_killed_agent_leaves_an_incomplete_session_that_never_verifies() {
    let DataPath {
        pg: _pg,
        mut cp,
        mut agent,
        token,
    } = DataPath::start().await;
    let mut s = RawSession::connect(agent.pg_port, "app", &token).await;
    for i in 0..3 {
        s.send(&query(&format!("SELECT 'before-crash-{i}'"))).await;
        s.until(b'Z').await;
    }
    let (cli, id) = crash_the_agent(&mut agent, &mut cp).await;
    let (show, _) = wait_transcript(&cli, &id, "the events before the crash", |t| {
        t.len() == 3 && t.iter().all(|e| e["outcome"] == "ok")
    })
    .await;
    assert!(show.contains("before-crash-2"), "{show}");
    let (ok, report) = verify(&cli, &id);
    assert!(!ok, "a session without an end verified: {report}");
    assert!(report.contains("INCOMPLETE"), "{report}");
}

#[tokio::test]
async fn a_statement_running_when_the_agent_dies_is_recorded_with_its_outcome_unknown() {
    let DataPath {
        pg,
        mut cp,
        mut agent,
        token,
    } = DataPath::start().await;
    let _s = answered_then_running(&pg, agent.pg_port, &token, "finished-first", "cut-short").await;
    let (cli, id) = crash_the_agent(&mut agent, &mut cp).await;
    let (_, transcript) = wait_transcript(&cli, &id, "both statements in the transcript", |t| {
        t.len() == 2
    })
    .await;
    assert_eq!(transcript[0]["outcome"], "ok", "{transcript:?}");
    assert!(
        transcript[1]["statement"]
            .as_str()
            .unwrap()
            .contains("cut-short"),
        "{transcript:?}"
    );
    assert_eq!(transcript[1]["outcome"], "no_result", "{transcript:?}");
    assert!(
        transcript[1]["error"]
            .as_str()
            .unwrap()
            .contains("outcome was not recorded"),
        "{transcript:?}"
    );
    // Recorded once, under the statement's own id.
    let all = cp
        .api()
        .get_ok("/api/v1/audit?kind=statement&limit=100")
        .await;
    let cut: Vec<_> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["statement"].as_str().unwrap_or("").contains("cut-short"))
        .collect();
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!(cut[0]["attributes"]["outcome"], "unknown", "{cut:?}");
}

#[tokio::test]
async fn a_statement_its_client_walked_away_from_is_recorded_with_its_outcome_unknown() {
    let DataPath {
        pg,
        mut cp,
        agent,
        token,
    } = DataPath::start().await;
    let s =
        answered_then_running(&pg, agent.pg_port, &token, "answered-first", "walked-away").await;
    drop(s);
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    let id = cli.wait_sessions("alice", "ended", 1).await.remove(0);
    let (shown, transcript) = transcript(&cli, &id);
    let outcomes = outcomes(&transcript);
    // Not "ok": the session ended before the target answered it.
    assert_eq!(outcomes, ["ok", "no_result"], "{shown}");
    assert!(
        transcript[1]["error"]
            .as_str()
            .unwrap()
            .contains("may or may not have run"),
        "{shown}"
    );
    // Recorded by the session itself: a link of its chain, which verifies.
    let (ok, report) = verify(&cli, &id);
    assert!(ok && report.starts_with("OK"), "{report}");
}

#[tokio::test]
async fn a_session_while_the_control_plane_is_down_arrives_whole_and_verifies() {
    let DataPath {
        pg: _pg,
        mut cp,
        agent,
        token,
    } = DataPath::start().await;
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    cp.stop();
    let (out, err) = psql_script(
        agent.pg_port,
        &token,
        "SELECT 'while-down-1';\nSELECT 'while-down-2';\n",
    );
    assert!(out.contains("while-down-2"), "{out}{err}");
    cp.start_again().await;
    let id = cli.wait_sessions("alice", "ended", 1).await.remove(0);
    let show = cli.run(&["sessions", "show", &id]).ok().stdout;
    assert!(
        show.contains("while-down-1") && show.contains("while-down-2"),
        "{show}"
    );
    let (ok, report) = verify(&cli, &id);
    assert!(ok, "{report}");
}

#[tokio::test]
async fn a_transcript_shows_each_outcome_with_masked_values_only() {
    let rules = format!(
        "{DEFAULT_RULES}      - mask: {{ columns: [\"public.items.name\"], as: redact }}\n        name: hide-names\n"
    );
    let DataPath {
        pg: _pg,
        mut cp,
        agent,
        token,
    } = DataPath::start_with(&rules, Vec::new()).await;
    let (out, err) = psql_script(
        agent.pg_port,
        &token,
        "SELECT id, name FROM items WHERE id <= 2 ORDER BY id;\nDROP TABLE items;\nSELECT count(*) FROM items;\nSELECT no_such_column FROM items;\n",
    );
    assert!(out.contains("1|[REDACTED]"), "{out}\n{err}");
    assert!(err.contains("no_such_column"), "{err}");
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    let id = cli.wait_sessions("alice", "ended", 1).await.remove(0);
    let (shown, transcript) = transcript(&cli, &id);
    let outcomes = outcomes(&transcript);
    assert_eq!(outcomes, ["ok", "denied", "ok", "error"], "{shown}");
    assert!(
        transcript[3]["error"]
            .as_str()
            .unwrap()
            .contains("no_such_column"),
        "{shown}"
    );
    // The session's totals count each statement once, from its one event.
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (&v["statements"], &v["denied"], &v["errors"], &v["rows"]),
        (
            &serde_json::json!(4),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(3)
        ),
        "{shown}"
    );
    assert_eq!(
        transcript[0]["result"]["sets"][0]["rows"],
        serde_json::json!([["1", "[REDACTED]"], ["2", "[REDACTED]"]])
    );
    assert!(
        !shown.contains("item 1") && !shown.contains("item 2"),
        "an unmasked value is in the record: {shown}"
    );
    let (ok, report) = verify(&cli, &id);
    assert!(ok, "{report}");
}

#[tokio::test]
async fn a_change_to_the_mask_rules_ends_the_sessions_they_apply_to() {
    let mut dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query("SELECT name FROM items WHERE id = 1")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["item 1"]);
    // Names become masked: the live session, started without the rule,
    // must not go on unmasked.
    let rules = format!("{DEFAULT_RULES}      - mask: {{ columns: [\"public.items.name\"] }}\n");
    let (status, v) = dp.cp.api().apply_policy(&dp.policy("devs", &rules)).await;
    assert!(status.is_success(), "{v}");
    dp.agent
        .wait_version(v["revision"].as_u64().unwrap(), Duration::from_secs(10))
        .await;
    let got = s.until(b'E').await;
    let text = errors(&got);
    assert!(
        text.contains("57P01") && text.contains("mask rules"),
        "{text}"
    );
    // A new session masks.
    let mut again = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    again
        .send(&query("SELECT name FROM items WHERE id = 1"))
        .await;
    assert_eq!(first_column(&again.until(b'Z').await), ["[REDACTED]"]);
}

#[tokio::test]
async fn retention_deletes_old_sessions_through_the_binary_and_says_so() {
    let DataPath {
        pg: _pg,
        mut cp,
        agent,
        token,
    } = DataPath::start().await;
    let (out, err) = psql_script(agent.pg_port, &token, "SELECT 'soon-forgotten';\n");
    assert!(out.contains("soon-forgotten"), "{out}{err}");
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    let id = cli.wait_sessions("alice", "ended", 1).await.remove(0);

    // Restarted with a 2 s retention: the session, older by then, goes at
    // start-up, and the run is recorded as a `retention` audit event.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cp.stop();
    cp.set_env("SLUICE_RETENTION_MAX_AGE", "2s");
    cp.set_env("SLUICE_RETENTION_INTERVAL", "1s");
    cp.start_again().await;
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    let api = cp.api();
    // The run that deleted it says so in a `retention` event. Looked for
    // while waiting: with a 2 s retention, a later run deletes that event
    // too once it is 2 s old.
    eventually(
        Duration::from_secs(20),
        "the old session deleted, and a retention event saying so",
        || async {
            let gone = cli.sessions("alice", "ended").iter().all(|s| *s != id);
            let v = api.get_ok("/api/v1/audit?kind=retention&limit=10").await;
            let deleted: u64 = v["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["attributes"]["sessions"].as_u64())
                .sum();
            (gone && deleted >= 1).then_some(())
        },
    )
    .await;
    let shown = cli.run(&["sessions", "show", &id, "--json"]);
    assert!(
        !shown.success(),
        "a deleted session is still shown: {}",
        shown.stdout
    );
    let v = api
        .get_ok(&format!("/api/v1/audit?session={id}&limit=10"))
        .await;
    assert_eq!(v["events"].as_array().map(Vec::len), Some(0), "{v}");
}
