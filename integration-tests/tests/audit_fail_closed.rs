//! Audit is not optional: when the agent's spool cannot take an event, the
//! statement it describes does not run (the default, `fail_closed`), and the
//! client is told why in its own protocol. `best_effort` resources keep
//! working and lose the records instead.

use std::time::Duration;

use serde_json::json;
use sluice_integration_tests::datapath::{DEFAULT_RULES, DataPath};
use sqlx::Connection as _;

/// Inserts until the agent refuses; returns (rows inserted, the refusal).
async fn insert_until_refused(conn: &mut sqlx::postgres::PgConnection) -> (u64, sqlx::Error) {
    for i in 0..5_000u64 {
        if let Err(e) = sqlx::query("INSERT INTO notes (body) VALUES ($1)")
            .bind(format!("note {i}"))
            .execute(&mut *conn)
            .await
        {
            return (i, e);
        }
    }
    panic!("the spool never filled up");
}

/// A data path whose agent spools at most 64 KiB, a session on it, and the
/// control plane stopped: nothing the agent spools from now on is
/// acknowledged.
async fn session_on_a_small_spool_cut_off() -> (DataPath, sqlx::postgres::PgConnection) {
    let mut dp = DataPath::start_with(
        DEFAULT_RULES,
        vec!["--spool-max-bytes".into(), "65536".into()],
    )
    .await;
    let conn = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    dp.cp.stop();
    (dp, conn)
}

#[tokio::test]
async fn a_full_spool_refuses_statements_and_nothing_runs() {
    let (mut dp, mut conn) = session_on_a_small_spool_cut_off().await;

    let (inserted, err) = insert_until_refused(&mut conn).await;
    assert!(
        inserted > 0,
        "some statements were recorded before the spool filled"
    );
    let db = err
        .as_database_error()
        .expect("a database error, not a dropped connection");
    assert_eq!(db.code().as_deref(), Some("57P03"), "{err}");
    assert!(
        db.message().contains("could not record this statement"),
        "{}",
        db.message()
    );
    // Exactly the recorded statements ran; the refused one did not.
    assert_eq!(
        dp.target("SELECT count(*) FROM notes"),
        inserted.to_string()
    );
    // The session is still usable; reads are refused too while the spool is
    // full (this one's record is larger than the refused INSERT's, so it
    // cannot fit in whatever room that one left).
    let read = format!("SELECT count(*) FROM items /* {} */", "x".repeat(512));
    let err = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(read))
        .fetch_one(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57P03")
    );

    // When the control plane is back, acknowledged events free the spool.
    dp.cp.start_again().await;
    let start = std::time::Instant::now();
    let n: i64 = loop {
        match sqlx::query_scalar("SELECT count(*) FROM items")
            .fetch_one(&mut conn)
            .await
        {
            Ok(n) => break n,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(30),
                "the spool did not drain: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(n, 500);
}

#[tokio::test]
async fn best_effort_resources_keep_running_when_the_spool_is_full() {
    let mut dp = DataPath::start_with(
        DEFAULT_RULES,
        vec!["--spool-max-bytes".into(), "65536".into()],
    )
    .await;
    let port = dp.pg.port;
    let before = dp.agent.status().await.unwrap()["snapshot"]["version"]
        .as_u64()
        .unwrap();
    let (s, v) = dp
        .cp
        .api()
        .put(
            "/api/v1/resources/app",
            json!({"kind": "postgres", "agent": "edge", "address": format!("127.0.0.1:{port}"), "database": "app", "credential": "app-db", "audit_mode": "best_effort"}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    assert_eq!(
        dp.cp.api().get_ok("/api/v1/resources/app").await["audit_mode"],
        "best_effort"
    );
    // The agent holds the new setting once it enforces a newer snapshot.
    dp.agent
        .wait_version(before + 1, Duration::from_secs(10))
        .await;
    let mut conn = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    dp.cp.stop();
    for i in 0..600u64 {
        sqlx::query("INSERT INTO notes (body) VALUES ($1)")
            .bind(format!("note {i}"))
            .execute(&mut conn)
            .await
            .expect("best_effort keeps running");
    }
    assert_eq!(dp.target("SELECT count(*) FROM notes"), "600");
    // The limit holds, but for what the spool documents as its only
    // overrun (`Spool::append_over_limit`): a statement whose write-ahead
    // record went in just below the limit and whose event then did not fit
    // is recorded from that record, outcome unknown, over the limit. One
    // session runs one statement at a time, so that is one record at most.
    let status = dp.agent.status().await.unwrap();
    let one_statement = 1024;
    assert!(
        status["audit_spool"]["disk_bytes"].as_u64().unwrap() <= 65536 + one_statement,
        "{status}"
    );
}

/// Sends a start-up packet for `database`, then reads until the agent
/// closes; returns what it said.
async fn refused_start(port: u16, database: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for part in ["user", "mallory", "database", database, ""] {
        body.extend(part.as_bytes());
        body.push(0);
    }
    let mut packet = (i32::try_from(body.len()).unwrap() + 4)
        .to_be_bytes()
        .to_vec();
    packet.extend(body);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&packet).await.unwrap();
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut said))
        .await
        .expect("the agent closes a refused connection")
        .unwrap();
    String::from_utf8_lossy(&said).into_owned()
}

/// Clients that never log in cannot fill the spool and so stop every
/// session's statements: their refusals are recorded only while the
/// spool's last eighth is free, and are refused all the same after that
/// (with their own reason, not 57P03), counted and logged.
#[tokio::test]
async fn refused_connections_cannot_fill_the_spool_for_sessions() {
    let (dp, mut conn) = session_on_a_small_spool_cut_off().await;
    let unknown = "d".repeat(4000);
    for _ in 0..150 {
        let said = refused_start(dp.agent.pg_port, &unknown).await;
        assert!(
            said.contains("3D000") && said.contains("is not a PostgreSQL resource"),
            "{said}"
        );
    }
    dp.agent_logged("connection refused and not recorded").await;
    let metrics = format!("http://127.0.0.1:{}/metrics", dp.agent.status_port);
    let metrics = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    let unrecorded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_agent_refusals_unrecorded_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(unrecorded > 0, "{metrics}");
    // The session's statements still run, and are recorded.
    // (The last eighth, 8 KiB here, holds a few statements' records.)
    for i in 0..4 {
        sqlx::query("INSERT INTO notes (body) VALUES ($1)")
            .bind(format!("kept {i}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body LIKE 'kept %'"),
        "4"
    );
}

/// A statement already running when the spool fills up is recorded with
/// its outcome when it finishes (over the limit, like the outcome-unknown
/// record it replaces), without its result rows.
#[tokio::test]
async fn a_statement_that_finishes_into_a_full_spool_is_recorded_with_its_outcome() {
    let (mut dp, mut filler) = session_on_a_small_spool_cut_off().await;
    let mut waiting = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    // Held on the target, outside the agent, so the statement below waits
    // for as long as the test says.
    let mut holder = sqlx::postgres::PgConnection::connect(&dp.pg.url("app"))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let running = tokio::spawn(async move {
        // One Query (simple protocol): a Parse would wait for the lock
        // too, and the Execute after it needs a record of its own.
        use sqlx::Row as _;
        sqlx::raw_sql("SELECT count(*) FROM items /* waits */")
            .fetch_one(&mut waiting)
            .await
            .map(|row| row.get::<i64, _>(0))
    });
    let start = std::time::Instant::now();
    while dp.target(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%/* waits */'",
    ) != "1"
    {
        assert!(start.elapsed() < Duration::from_secs(30), "the statement never reached the target");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, err) = insert_until_refused(&mut filler).await;
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57P03"),
        "{err}"
    );
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    assert_eq!(running.await.unwrap().unwrap(), 500);

    dp.cp.start_again().await;
    let event = dp
        .cp
        .api()
        .event_where("statement", "statement", "/* waits */")
        .await;
    assert_eq!(event["rows"], 1, "{event}");
    assert!(event["attributes"].get("outcome").is_none(), "{event}");
    assert!(event["error"].as_str().unwrap_or("").is_empty(), "{event}");
    assert!(event["attributes"].get("result").is_none(), "{event}");
    assert!(
        event["attributes"]["result_unrecorded"]
            .as_str()
            .is_some_and(|s| s.contains("spool was full")),
        "{event}"
    );
}
