//! Shutting an agent down (SIGTERM, as a rolling update does): new
//! connections are refused, open transactions may finish, every session
//! ends with 57P01 between transactions, its end is recorded and delivered,
//! and a transaction still open when the grace period ends is rolled back.

use std::time::Duration;

use sluice_pgwire::{Frame, FrameReader, messages};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use sluice_integration_tests::{
    SluiceCli,
    datapath::{DEFAULT_RULES, DataPath},
    eventually,
    rawpg::{RawSession, errors, query, tags},
};

/// Whether a new TCP connection to the agent's PostgreSQL port is accepted.
async fn accepts_connections(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// The next frame `stream` sends.
async fn read_frame(stream: &mut tokio::net::TcpStream, reader: &mut FrameReader) -> Frame {
    loop {
        if let Some(f) = reader.next_frame().unwrap() {
            return f;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(reader.buffer()))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed without a message");
    }
}

async fn readyz(status_port: u16) -> Option<reqwest::StatusCode> {
    let url = format!("http://127.0.0.1:{status_port}/readyz");
    reqwest::get(url).await.ok().map(|r| r.status())
}

#[tokio::test]
async fn shutdown_lets_open_transactions_commit_and_ends_every_session_between_transactions() {
    let mut dp =
        DataPath::start_with(DEFAULT_RULES, vec!["--shutdown-grace".into(), "60s".into()]).await;
    let port = dp.agent.pg_port;
    let mut idle = RawSession::connect(port, "app", &dp.token).await;
    let mut busy = RawSession::connect(port, "app", &dp.token).await;
    busy.send(&query(
        "BEGIN; INSERT INTO notes (body) VALUES ('inside-the-grace-period')",
    ))
    .await;
    let got = busy.until(b'Z').await;
    assert!(errors(&got).is_empty(), "{}", errors(&got));
    // A client accepted before the listener closes, still logging in.
    let mut late = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    late.write_all(&messages::startup_message(&[
        ("user", "alice"),
        ("database", "app"),
    ]))
    .await
    .unwrap();
    let mut late_reader = FrameReader::new(1 << 20);
    read_frame(&mut late, &mut late_reader).await; // the password request

    dp.agent.terminate();

    // No new clients: the listening socket is closed, readiness is false.
    eventually(Duration::from_secs(10), "the listener to close", || async {
        (!accepts_connections(port).await).then_some(())
    })
    .await;
    assert_eq!(
        readyz(dp.agent.status_port).await,
        Some(reqwest::StatusCode::SERVICE_UNAVAILABLE),
        "a draining agent must not report ready"
    );

    // The late client is refused at the door, not given a session.
    late.write_all(&messages::password_message(dp.token.as_bytes()).raw)
        .await
        .unwrap();
    let refusal = read_frame(&mut late, &mut late_reader).await;
    let text = errors(std::slice::from_ref(&refusal));
    assert!(
        text.contains("57P03") && text.contains("shutting down"),
        "the late client was not refused: {text}"
    );

    // The session between transactions is ended at once, and told why.
    let got = tokio::time::timeout(Duration::from_secs(10), idle.until_or_closed(b'E'))
        .await
        .expect("the idle session was not ended");
    let text = errors(&got);
    assert!(
        text.contains("57P01") && text.contains("shutting down"),
        "the idle session was not ended with 57P01: {text}"
    );

    // The one inside a transaction goes on until it commits...
    busy.send(&query(
        "INSERT INTO notes (body) VALUES ('inside-the-grace-period'); COMMIT",
    ))
    .await;
    let got = busy.until(b'Z').await;
    assert!(errors(&got).is_empty(), "{}", errors(&got));
    assert!(
        tags(&got).contains('C'),
        "no CommandComplete: {}",
        tags(&got)
    );
    // ...and is ended right after.
    let got = tokio::time::timeout(Duration::from_secs(10), busy.until_or_closed(b'E'))
        .await
        .expect("the session was not ended after its transaction");
    assert!(errors(&got).contains("57P01"), "{}", errors(&got));

    let (ok, logs) = dp.agent.wait_exit(Duration::from_secs(20));
    assert!(ok, "the agent did not exit cleanly:\n{logs}");
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body = 'inside-the-grace-period'"),
        "2",
        "the transaction's work must be committed on the target"
    );

    // Both sessions' ends reached the control plane before the agent exited:
    // the records are complete and sealed, nothing waits for a restart.
    let cli = SluiceCli::new(&dp.cp.url(), Some(&dp.cp.admin_token()));
    let ended = cli.sessions("alice", "ended");
    assert_eq!(ended.len(), 2, "both sessions recorded as ended: {ended:?}");
    for id in &ended {
        cli.run(&["audit", "verify", id]).ok();
    }
}

#[tokio::test]
async fn a_transaction_still_open_when_the_grace_period_ends_is_rolled_back() {
    let mut dp =
        DataPath::start_with(DEFAULT_RULES, vec!["--shutdown-grace".into(), "1s".into()]).await;
    let mut open = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    open.send(&query(
        "BEGIN; INSERT INTO notes (body) VALUES ('never-committed')",
    ))
    .await;
    let got = open.until(b'Z').await;
    assert!(errors(&got).is_empty(), "{}", errors(&got));
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND state = 'idle in transaction'"),
        "1"
    );

    dp.agent.terminate();
    let got = tokio::time::timeout(Duration::from_secs(15), open.until_or_closed(b'E'))
        .await
        .expect("the session was not ended at the end of the grace period");
    let text = errors(&got);
    assert!(
        text.contains("57P01") && text.contains("grace period") && text.contains("rolled back"),
        "not told that its transaction is rolled back: {text}"
    );
    let (ok, logs) = dp.agent.wait_exit(Duration::from_secs(15));
    assert!(ok, "the agent did not exit cleanly:\n{logs}");
    // The target saw the connection end inside the transaction.
    eventually(
        Duration::from_secs(10),
        "the target to end the upstream session",
        || async {
            (dp.target(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND usename = 'app'",
            ) == "0")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body = 'never-committed'"),
        "0",
        "an unfinished transaction must not be committed"
    );
}
