//! Real clients through the agent: psql (simple protocol), pgbench (simple,
//! extended, prepared), a Rust driver (sqlx, extended protocol), pg_dump,
//! COPY, transactions, cancel, row limits, and the audit trail they leave.

use std::{process::Command, time::Duration};

use sluice_integration_tests::{
    datapath::{DataPath, TARGET_PASSWORD},
    eventually,
};
use sqlx::{Connection as _, Row as _};

#[tokio::test]
async fn psql_runs_queries_and_transactions_through_the_agent() {
    let dp = DataPath::start().await;
    let (ok, out, err) = dp.psql("SELECT count(*) FROM items");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "500");
    let (ok, out, err) = dp.psql("BEGIN; INSERT INTO notes (body) VALUES ('from psql'); UPDATE items SET name = 'renamed' WHERE id = 7; COMMIT; SELECT name FROM items WHERE id = 7");
    assert!(ok, "{err}");
    assert!(out.contains("renamed"), "{out}");
    assert_eq!(dp.target("SELECT body FROM notes"), "from psql");
    assert_eq!(dp.target("SELECT current_user"), "postgres");
    // The session runs as the vault credential's role, not as the client.
    let (ok, out, _) = dp.psql("SELECT current_user");
    assert!(ok);
    assert_eq!(out.trim(), "app");
}

#[tokio::test]
async fn copy_from_stdin_is_allowed_by_policy_and_lands_on_the_target() {
    let dp = DataPath::start().await;
    let (ok, _, err) =
        dp.psql("\\copy notes (body) FROM PROGRAM 'printf \"one\\ntwo\\nthree\\n\"'");
    assert!(ok, "{err}");
    assert_eq!(dp.target("SELECT count(*) FROM notes"), "3");
}

#[tokio::test]
async fn a_rust_driver_uses_the_extended_protocol_with_prepared_statements() {
    let dp = DataPath::start().await;
    let mut conn = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .expect("connect through the agent");
    for id in [3, 4, 5, 3] {
        let row = sqlx::query("SELECT name FROM items WHERE id = $1")
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), format!("item {id}"));
    }
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ($1)")
        .bind("via sqlx")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(dp.target("SELECT body FROM notes"), "via sqlx");
    // A denied statement through the extended protocol: error, nothing runs,
    // and the connection stays usable.
    let err = sqlx::query("DELETE FROM items WHERE id = $1")
        .bind(1)
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    assert_eq!(dp.target("SELECT count(*) FROM items WHERE id = 1"), "1");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 500);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn pgbench_select_only_runs_in_simple_extended_and_prepared_modes() {
    let dp = DataPath::start_with(
        r#"
      - allow: { sql: { statements: [read, transaction, session, insert, update] } }
"#,
        Vec::new(),
    )
    .await;
    let status = Command::new("pgbench")
        .args([
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &dp.pg.port.to_string(),
            "-U",
            "postgres",
            "app",
        ])
        .output()
        .expect("run pgbench (install postgresql-contrib / postgresql)");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    dp.target("GRANT SELECT, UPDATE, INSERT ON ALL TABLES IN SCHEMA public TO app");
    for mode in ["simple", "extended", "prepared"] {
        let out = Command::new("pgbench")
            .args([
                "-S",
                "-n",
                "-M",
                mode,
                "-c",
                "2",
                "-t",
                "50",
                "-h",
                "127.0.0.1",
                "-p",
                &dp.agent.pg_port.to_string(),
                "-U",
                "alice",
                "app",
            ])
            .env("PGPASSWORD", &dp.token)
            .env("PGSSLMODE", "disable")
            .output()
            .expect("run pgbench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pgbench -M {mode} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of transactions actually processed: 100/100"),
            "{stdout}"
        );
    }
}

#[tokio::test]
async fn cancel_reaches_the_right_upstream_session() {
    let dp = DataPath::start().await;
    let mut conn = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    let mut other = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    let url = dp.url();
    // psql cancels with CancelRequest on SIGINT; send it after the query started.
    let mut child = Command::new("psql")
        .arg(url.replace("postgres://", "postgresql://"))
        .args(["-Atc", "SELECT pg_sleep(60)"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the sleep to start on the target",
        || async {
            (dp.target("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")
                == "1")
                .then_some(())
        },
    )
    .await;
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        loop {
            if let Some(_status) = child.try_wait().unwrap() {
                return child.wait_with_output().unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "psql did not finish after cancel"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"),
        "0"
    );
    // The other sessions were not touched.
    let n: i64 = sqlx::query_scalar("SELECT (41 + 1)::bigint")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 42);
    let n: i64 = sqlx::query_scalar("SELECT 1::bigint")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn row_limit_rule_caps_results() {
    let dp = DataPath::start_with(
        r#"
      - limit: { rows: 25 }
      - allow: { sql: { statements: [read] } }
"#,
        Vec::new(),
    )
    .await;
    let (ok, out, err) = dp.psql("SELECT id FROM items ORDER BY id");
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 25, "{out}");
    assert!(err.contains("limited to 25 rows"), "{err}");
    let mut conn = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    let rows = sqlx::query("SELECT id FROM items")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 25);
    // Small results are untouched.
    let rows = sqlx::query("SELECT id FROM items WHERE id <= 3")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
}

#[tokio::test]
async fn every_statement_and_session_is_audited() {
    let dp = DataPath::start().await;
    let (ok, _, err) = dp.psql("SELECT count(*) FROM items");
    assert!(ok, "{err}");
    let (ok, _, _) = dp.psql("DROP TABLE items");
    assert!(!ok);
    let mut cp = dp.cp;
    let api = cp.api();
    let events = eventually(
        Duration::from_secs(20),
        "statement events to arrive",
        || async {
            let v = api.get_ok("/api/v1/audit?subject=alice&limit=1000").await;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            let ends = events.iter().filter(|e| e["kind"] == "session.end").count();
            (ends >= 2).then_some(events)
        },
    )
    .await;
    let allowed = events
        .iter()
        .find(|e| e["kind"] == "statement" && e["statement"] == "SELECT count(*) FROM items")
        .expect("allowed statement event");
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["rule"], "devs-on-app/work");
    assert_eq!(allowed["groups"], serde_json::json!(["devs"]));
    assert_eq!(allowed["agent"], "edge");
    // One event per statement: the decision and the outcome together.
    assert_eq!(allowed["rows"], 1);
    assert_eq!(allowed["error"], "");
    assert!(allowed["duration_us"].as_i64().unwrap() > 0, "{allowed}");
    let records = events
        .iter()
        .filter(|e| e["statement"] == "SELECT count(*) FROM items")
        .count();
    assert_eq!(records, 1, "{events:?}");
    let denied = events
        .iter()
        .find(|e| e["kind"] == "statement" && e["statement"] == "DROP TABLE items")
        .expect("denied statement event");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["rule"], "devs-on-app/no-changes");
    let end = events.iter().find(|e| e["kind"] == "session.end").unwrap();
    assert!(end["attributes"]["statements"].is_number(), "{end}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(TARGET_PASSWORD),
        "the credential leaked into the audit trail"
    );
}

#[tokio::test]
async fn tls_is_offered_and_verifies_against_the_control_plane_ca() {
    let dp = DataPath::start().await;
    let (ok, ca_pem, err) = dp.cp.run_offline(&["ca"]);
    assert!(ok, "{err}");
    let ca = dp.agent.dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    for (host, mode) in [
        ("localhost", "verify-full"),
        ("127.0.0.1", "verify-full"),
        ("127.0.0.1", "require"),
    ] {
        let out = Command::new("psql")
            .arg(format!(
                "host={host} port={} dbname=app user=alice sslmode={mode} sslrootcert={}",
                dp.agent.pg_port,
                ca.display()
            ))
            .args([
                "-Atc",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ])
            .env("PGPASSWORD", &dp.token)
            .output()
            .unwrap();
        // The target connection itself is plaintext here; what matters is
        // that the client's connection to the agent negotiated TLS and the
        // agent's certificate verified for `host`.
        assert!(
            out.status.success(),
            "{host} {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A name the certificate does not carry fails verification.
    let out = Command::new("psql")
        .arg(format!(
            "host=not-the-agent.example hostaddr=127.0.0.1 port={} dbname=app user=alice sslmode=verify-full sslrootcert={}",
            dp.agent.pg_port,
            ca.display()
        ))
        .args(["-Atc", "SELECT 1"])
        .env("PGPASSWORD", &dp.token)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not match host name"),
        "{err}"
    );
}

#[tokio::test]
async fn pg_dump_dumps_the_database_through_the_agent() {
    // Besides reading, pg_dump locks the tables it dumps (ACCESS SHARE),
    // runs its catalog queries as SQL PREPARE and EXECUTE, and counts the
    // database's subscriptions (their connection strings are readable by
    // superusers only, and the agent logs in as `app`); it sets a parameter
    // only newer servers have through `pg_settings`.
    let rules = format!(
        "{}      - allow: {{ sql: {{ statements: [credential_catalog], tables: [pg_catalog.pg_subscription] }} }}\n        name: dump-subscriptions\n",
        sluice_integration_tests::datapath::DEFAULT_RULES.replace(
            "copy, transaction, session]",
            "copy, transaction, session, lock, prepare, execute]"
        )
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    let out = Command::new("pg_dump")
        .arg(format!(
            "host=127.0.0.1 port={} dbname=app user=client sslmode=disable connect_timeout=5",
            dp.agent.pg_port
        ))
        .env("PGPASSWORD", &dp.token)
        .env_remove("PGSERVICE")
        .output()
        .expect("run pg_dump (install postgresql-client)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pg_dump failed: {stderr}");
    let dump = String::from_utf8(out.stdout).unwrap();
    assert!(dump.contains("CREATE TABLE public.items"), "{dump}");
    // Restored into a new database on the target, it holds the same rows.
    dp.pg.psql("postgres", "CREATE DATABASE restored");
    let mut psql = Command::new("psql")
        .arg(format!("{}?sslmode=disable", dp.pg.url("restored")))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run psql");
    use std::io::Write as _;
    psql.stdin
        .take()
        .unwrap()
        .write_all(dump.as_bytes())
        .unwrap();
    let restore = psql.wait_with_output().unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let rows = "SELECT count(*), sum(id), md5(string_agg(name, ',' ORDER BY id)) FROM items";
    assert_eq!(dp.pg.psql("restored", rows), dp.pg.psql("app", rows));
    // Its EXECUTEs were judged as the statements they run, which the agent
    // read from the target first.
    let logs = dp.pg.logs();
    assert!(logs.contains("EXECUTE getColumnACLs("), "{logs}");
    assert!(logs.contains("FROM pg_catalog.pg_prepared_statements"));
}
