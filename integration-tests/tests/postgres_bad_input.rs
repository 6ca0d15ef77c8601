//! Hostile or broken clients: each bad connection ends with an error and
//! the agent keeps serving everyone else (a concurrent client's queries
//! keep succeeding throughout).

use std::time::Duration;

use sluice_integration_tests::{datapath::DataPath, eventually};
use sluice_pgwire::{Frame, messages};
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Sends `bytes`, then reads until the agent closes; returns what it said.
async fn send_raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("the agent must close a bad connection");
    out
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    messages::startup_message(params).to_vec()
}

#[tokio::test]
async fn bad_input_ends_that_connection_and_never_harms_other_sessions() {
    let dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--startup-timeout".into(), "1s".into()],
    )
    .await;
    let port = dp.agent.pg_port;

    // A well-behaved client keeps querying the whole time.
    let url = dp.url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let witness = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut conn = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let v: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
                    .fetch_one(&mut conn)
                    .await
                    .expect("the witness session broke");
                assert_eq!(v, 500);
                n += 1;
            }
            n
        })
    };

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero length", vec![0, 0, 0, 0, 0, 3, 0, 0]),
        ("negative length", vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0]),
        ("huge length", vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]),
        (
            "garbage start-up",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "truncated start-up",
            startup(&[("user", "alice"), ("database", "app")])[..12].to_vec(),
        ),
        ("unterminated parameters", {
            let mut v = startup(&[("user", "alice")]);
            v.pop();
            v.pop();
            let len = u32::try_from(v.len()).unwrap().to_be_bytes();
            v[..4].copy_from_slice(&len);
            v
        }),
        ("query before authentication", {
            let mut v = startup(&[("user", "alice"), ("database", "app")]);
            v.extend(
                sluice_pgwire::Frame::new(b'Q', b"DROP TABLE items\0")
                    .raw
                    .to_vec(),
            );
            v
        }),
        ("huge password message", {
            let mut v = startup(&[("user", "alice"), ("database", "app")]);
            v.push(b'p');
            v.extend_from_slice(&(100 * 1024 * 1024u32).to_be_bytes());
            v
        }),
        ("protocol 2", {
            let mut v = vec![0, 0, 0, 8];
            v.extend_from_slice(&0x0002_0000u32.to_be_bytes());
            v
        }),
    ];
    // After authentication: a bad frame length and an unknown message type.
    for (name, tail) in [
        ("zero frame length after login", vec![b'Q', 0, 0, 0, 0]),
        (
            "huge frame length after login",
            vec![b'Q', 0x7f, 0xff, 0xff, 0xff],
        ),
        (
            "unknown message type",
            sluice_pgwire::Frame::new(b'!', b"").raw.to_vec(),
        ),
        // (Outside COPY IN, PostgreSQL ignores COPY data, and so does the
        // agent; ahead of a batch it holds for its Sync, it cannot.)
        ("copy data inside an unsynced batch", {
            let mut v = sluice_integration_tests::rawpg::parse("", "SELECT 1");
            v.extend(sluice_pgwire::Frame::new(b'd', b"1\n").raw.to_vec());
            v
        }),
    ] {
        let mut v = startup(&[("user", "alice"), ("database", "app")]);
        v.extend(messages::password_message(dp.token.as_bytes()).raw.to_vec());
        v.extend(tail);
        cases.push((name, v));
    }
    for (name, bytes) in &cases {
        let answer = send_raw(port, bytes).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("FATAL") || text.contains("ERROR") || answer.is_empty(),
            "{name}: {text}"
        );
        assert!(!text.contains("item 1"), "{name}: something ran");
    }
    // What the session ends with says what was wrong.
    for (tail, says) in [
        (
            sluice_pgwire::Frame::new(b'Q', b"SELECT '\xff\xfe'\0")
                .raw
                .to_vec(),
            "the Query message's text is not valid UTF-8",
        ),
        (
            [
                sluice_integration_tests::rawpg::parse("", "SELECT 1"),
                sluice_pgwire::Frame::new(b'd', b"1\n").raw.to_vec(),
            ]
            .concat(),
            "send the data after CopyInResponse",
        ),
    ] {
        let mut v = startup(&[("user", "alice"), ("database", "app")]);
        v.extend(messages::password_message(dp.token.as_bytes()).raw.to_vec());
        v.extend(tail);
        let answer = send_raw(port, &v).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("08P01") && text.contains(says),
            "{says}: {text}"
        );
    }
    assert!(!dp.pg.logs().contains("DROP TABLE items"));

    // A client that says nothing is dropped after the start-up timeout.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut out))
        .await
        .expect("silent client not dropped")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out).contains("start-up not completed"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let queries = witness.await.expect("the witness session must survive");
    assert!(queries > 0);
    // And the agent still accepts new sessions.
    let (ok, out, err) = dp.psql("SELECT count(*) FROM items");
    assert!(ok && out.trim() == "500", "{err}");
}

#[tokio::test]
async fn per_subject_connection_limit_is_enforced() {
    let dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--max-connections-per-subject".into(), "2".into()],
    )
    .await;
    let url = dp.url();
    let a = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
    let b = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
    let err = sqlx::postgres::PgConnection::connect(&url)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("53300"),
        "{err}"
    );
    drop(a);
    drop(b);
    // Slots are released when sessions end.
    crate_eventually_connects(&url).await;
}

/// Connections that never log in hold a slot until the start-up timeout:
/// one address may hold at most `--max-startups-per-address` of them, so it
/// cannot take every slot, and other addresses and sessions go on.
#[tokio::test]
async fn connections_that_never_log_in_cannot_take_every_slot_from_one_address() {
    let dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--max-startups-per-address".into(), "4".into()],
    )
    .await;
    let port = dp.agent.pg_port;
    let url = dp.url();
    let mut established = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
    let hello = startup(&[("user", "alice"), ("database", "app")]);
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // The fifth from that address is refused at once, saying why.
    let said = send_raw(port, &hello).await;
    let text = String::from_utf8_lossy(&said);
    assert!(
        text.contains("53300") && text.contains("already logging in"),
        "{text}"
    );
    // Another address is asked for its token as usual.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
    let mut other = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    other.write_all(&hello).await.unwrap();
    let mut asked = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), other.read_exact(&mut asked))
        .await
        .expect("the agent answers the other address")
        .unwrap();
    assert_eq!(
        asked,
        [b'R', 0, 0, 0, 8, 0, 0, 0, 3],
        "cleartext password request"
    );
    // A session that had logged in is unharmed.
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM items")
        .fetch_one(&mut established)
        .await
        .unwrap();
    assert_eq!(n, 500);
    // Once the silent ones go, the address logs in again.
    drop(silent);
    crate_eventually_connects(&url).await;
}

/// The resource's own limits: each session is one connection to the target,
/// whose own limit (`max_connections`) no one subject may exhaust. Logins past
/// them are refused before anything reaches the target.
#[tokio::test]
async fn a_resources_connection_limits_keep_one_subject_from_taking_the_targets_connections() {
    let mut dp = DataPath::start().await;
    let api = dp.cp.api();
    let doc = dp
        .policy("devs", sluice_integration_tests::datapath::DEFAULT_RULES)
        .replace(
            "    credential: app-db\n",
            "    credential: app-db\n    max_connections: 3\n    max_connections_per_subject: 2\n",
        );
    let (s, v) = api.apply_policy(&doc).await;
    assert!(s.is_success(), "{v}");
    let revision = v["revision"].as_u64().expect("revision");
    dp.agent
        .wait_version(revision, Duration::from_secs(10))
        .await;
    let shown = api.get_ok("/api/v1/resources/app").await;
    assert_eq!(
        (
            &shown["max_connections"],
            &shown["max_connections_per_subject"]
        ),
        (&serde_json::json!(3), &serde_json::json!(2)),
        "{shown}"
    );
    let (s, v) = api
        .put(
            "/api/v1/resources/app",
            serde_json::json!({"kind": "postgres", "agent": "edge", "address": "127.0.0.1:1", "database": "app", "max_connections": 0}),
        )
        .await;
    assert_eq!(s.as_u16(), 400, "0 is not a limit: {v}");

    let bob = dp.cp.user_token("bob", &["devs"]).await;
    let carol = dp.cp.user_token("carol", &["devs"]).await;
    let url_of = |token: &str| {
        format!(
            "postgres://x:{token}@127.0.0.1:{}/app?sslmode=disable",
            dp.agent.pg_port
        )
    };
    let refusal = |err: sqlx::Error| {
        let db = err.as_database_error().expect("a PostgreSQL error");
        (db.code().map(|c| c.into_owned()), db.message().to_owned())
    };
    // Sessions' connections: not the agent's one listening for DDL notices.
    let in_target = || {
        dp.target(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = 'app' AND application_name <> 'sluice ddl notices'",
        )
    };

    let a1 = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    let _a2 = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    let (code, message) = refusal(
        sqlx::postgres::PgConnection::connect(&dp.url())
            .await
            .unwrap_err(),
    );
    assert_eq!(code.as_deref(), Some("53300"), "{message}");
    assert!(
        message.contains("\"alice\" already has the maximum of 2 sessions on \"app\"")
            && message.contains("max_connections_per_subject"),
        "{message}"
    );
    // Another subject still gets in: alice's share is not the resource's.
    let mut b1 = sqlx::postgres::PgConnection::connect(&url_of(&bob))
        .await
        .unwrap();
    let (code, message) = refusal(
        sqlx::postgres::PgConnection::connect(&url_of(&carol))
            .await
            .unwrap_err(),
    );
    assert_eq!(code.as_deref(), Some("53300"), "{message}");
    assert!(
        message.contains("\"app\" already has its maximum of 3 sessions")
            && message.contains("max_connections"),
        "{message}"
    );
    // The target saw the three sessions and none of the refused logins.
    assert_eq!(in_target(), "3");
    let one: (i32,) = sqlx::query_as("SELECT 1").fetch_one(&mut b1).await.unwrap();
    assert_eq!(one.0, 1);

    // A slot comes back when its session ends.
    drop(a1);
    crate_eventually_connects(&url_of(&carol)).await;
}

/// A Bind with a 2 MB parameter (an upload, say) in an extended-protocol
/// cycle asking for its length, and where to split it to leave it arriving.
fn two_megabyte_bind() -> (Vec<u8>, usize) {
    use sluice_integration_tests::rawpg::{execute, frame, parse, sync};
    let value = vec![b'x'; 2_000_000];
    let mut body = b"\0\0\0\0\0\x01".to_vec();
    body.extend_from_slice(&i32::try_from(value.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&value);
    body.extend_from_slice(b"\0\0");
    let big = [
        parse("", "SELECT length($1::text)"),
        frame(b'B', &body),
        execute("", 0),
        sync(),
    ]
    .concat();
    (big, 1_500_000)
}

/// Starts a 2 MB message in each of three sessions, one per token, when
/// there is room for two: exactly one is refused with `flag` named, and
/// its session ends; another subject is served meanwhile; the other two
/// finish and get their answers; then there is room again.
async fn two_of_three_large_messages_fit(dp: &mut DataPath, tokens: [String; 3], flag: &str) {
    use sluice_integration_tests::rawpg::{RawSession, errors, first_column, query};
    let port = dp.agent.pg_port;
    let (big, split) = two_megabyte_bind();
    let (head, rest) = big.split_at(split);
    let mut sessions = Vec::new();
    for token in &tokens {
        let mut s = RawSession::connect(port, "app", token).await;
        // Refused as soon as its header is read: the write may fail then.
        let _ = s.try_send(head).await;
        sessions.push(s);
    }
    // Nothing has finished arriving, so whichever header came last is
    // refused, and that session ends.
    let (refused, answer) = tokio::time::timeout(Duration::from_secs(20), async {
        let [a, b, c] = &mut sessions[..] else {
            unreachable!()
        };
        tokio::select! {
            f = a.until_or_closed(b'E') => (0, f),
            f = b.until_or_closed(b'E') => (1, f),
            f = c.until_or_closed(b'E') => (2, f),
        }
    })
    .await
    .expect("one of the three sessions was refused");
    let text = errors(&answer);
    assert!(text.contains("53200") && text.contains(flag), "{text}");
    assert!(
        sessions[refused].until_or_closed(b'Z').await.is_empty(),
        "the refused session was closed"
    );
    // Another subject is served meanwhile.
    let dave = dp.cp.user_token("dave", &["devs"]).await;
    let mut other = RawSession::connect(port, "app", &dave).await;
    other.send(&query("SELECT count(*) FROM items")).await;
    assert!(errors(&other.until(b'Z').await).is_empty());
    // The two whose messages fitted finish them and get their answers.
    for (i, s) in sessions.iter_mut().enumerate() {
        if i != refused {
            s.send(rest).await;
            let answer = s.until(b'Z').await;
            assert_eq!(first_column(&answer), ["2000000"], "{}", errors(&answer));
        }
    }
    // Their allowance is given back once their messages are in.
    let mut again = RawSession::connect(port, "app", &tokens[refused]).await;
    again.send(&big).await;
    assert_eq!(first_column(&again.until(b'Z').await), ["2000000"]);
}

#[tokio::test]
async fn one_subject_cannot_fill_the_agent_with_large_messages_and_others_are_not_harmed() {
    // Room for two of one subject's 2 MB messages arriving at once, not three.
    let mut dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--max-subject-receive-bytes".into(), "5000000".into()],
    )
    .await;
    let alice = dp.token.clone();
    let tokens = [alice.clone(), alice.clone(), alice];
    two_of_three_large_messages_fit(&mut dp, tokens, "--max-subject-receive-bytes").await;
}

#[tokio::test]
async fn many_subjects_together_cannot_fill_the_agent_with_large_messages() {
    // Each subject may have 256 MiB arriving (the default), the whole
    // agent room for two 2 MB messages, not three.
    let mut dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--max-receive-bytes".into(), "5000000".into()],
    )
    .await;
    let bob = dp.cp.user_token("bob", &["devs"]).await;
    let carol = dp.cp.user_token("carol", &["devs"]).await;
    let tokens = [dp.token.clone(), bob, carol];
    two_of_three_large_messages_fit(&mut dp, tokens, "--max-receive-bytes").await;
}

/// A Bind of `INSERT INTO notes (body) VALUES ($1)` with a `len`-byte
/// body, and an Execute of it.
fn insert_note(len: usize) -> Vec<u8> {
    use sluice_integration_tests::rawpg::{bind_text, execute};
    [bind_text("", "ins", &[&"n".repeat(len)]), execute("", 0)].concat()
}

#[tokio::test]
async fn many_small_messages_held_until_sync_count_against_the_subjects_allowance() {
    use sluice_integration_tests::rawpg::{RawSession, errors, first_column, parse, query, sync};
    // Room for 3 MB of one subject's messages arriving at once.
    let dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--max-subject-receive-bytes".into(), "3000000".into()],
    )
    .await;
    let port = dp.agent.pg_port;
    // Forty 100 kB Binds without Sync: no message is large, but the agent
    // holds them all until the Sync to judge the batch.
    let mut s = RawSession::connect(port, "app", &dp.token).await;
    let mut batch = parse("ins", "INSERT INTO notes (body) VALUES ($1)");
    for _ in 0..40 {
        batch.extend(insert_note(100_000));
    }
    let _ = s.try_send(&batch).await;
    let answer = tokio::time::timeout(Duration::from_secs(20), s.until_or_closed(b'Z'))
        .await
        .expect("the agent refused the batch before its Sync");
    let text = errors(&answer);
    assert!(
        text.contains("53200")
            && text.contains("--max-subject-receive-bytes")
            && text.contains("send Sync more often"),
        "{text}"
    );
    assert!(
        s.until_or_closed(b'Z').await.is_empty(),
        "the refused session was closed"
    );
    // None of it reached the target.
    assert_eq!(dp.target("SELECT count(*) FROM notes"), "0");
    // The subject's other sessions go on, and a 2 MB batch that ends in
    // Sync fits (the refused one's allowance was given back).
    let mut other = RawSession::connect(port, "app", &dp.token).await;
    let mut batch = Vec::new();
    for _ in 0..20 {
        batch.extend(insert_note(100_000));
    }
    batch.extend(sync());
    other
        .send(
            &[
                parse("ins", "INSERT INTO notes (body) VALUES ($1)"),
                batch.clone(),
            ]
            .concat(),
        )
        .await;
    let answer = other.until(b'Z').await;
    assert_eq!(errors(&answer), "");
    other.send(&query("SELECT count(*) FROM notes")).await;
    assert_eq!(first_column(&other.until(b'Z').await), ["20"]);
    // And again: each batch is given back after its Sync.
    other.send(&batch).await;
    assert_eq!(errors(&other.until(b'Z').await), "");
    assert_eq!(dp.target("SELECT count(*) FROM notes"), "40");
}

#[tokio::test]
async fn a_result_row_larger_than_the_subjects_allowance_ends_that_session_only() {
    use sluice_integration_tests::rawpg::{RawSession, errors, first_column, query};
    let dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--max-subject-receive-bytes".into(), "1500000".into()],
    )
    .await;
    let port = dp.agent.pg_port;
    let mut s = RawSession::connect(port, "app", &dp.token).await;
    s.send(&query("SELECT repeat('x', 2000000)")).await;
    let answer = s.until_or_closed(b'Z').await;
    let text = errors(&answer);
    assert!(
        text.contains("53200") && text.contains("ask for smaller rows"),
        "{text}"
    );
    assert!(
        !answer.iter().any(|f| f.tag == b'D'),
        "no part of the row reached the client"
    );
    // Rows within the allowance are served, in this subject's other sessions too.
    let mut other = RawSession::connect(port, "app", &dp.token).await;
    other
        .send(&query("SELECT length(repeat('x', 2000000))"))
        .await;
    assert_eq!(first_column(&other.until(b'Z').await), ["2000000"]);
}

#[tokio::test]
async fn a_result_row_larger_than_the_message_limit_ends_that_session_saying_so() {
    use sluice_integration_tests::rawpg::{RawSession, errors, first_column, query};
    let dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--max-message-bytes".into(), "100000".into()],
    )
    .await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query("SELECT repeat('x', 200000)")).await;
    let answer = s.until_or_closed(b'Z').await;
    let text = errors(&answer);
    assert!(
        text.contains("53200")
            && text.contains("--max-message-bytes")
            && !text.contains("invalid message"),
        "{text}"
    );
    assert!(
        !answer.iter().any(|f| f.tag == b'D'),
        "no part of the row reached the client"
    );
    let mut other = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    other
        .send(&query("SELECT length(repeat('x', 200000))"))
        .await;
    assert_eq!(first_column(&other.until(b'Z').await), ["200000"]);
}

async fn crate_eventually_connects(url: &str) {
    sluice_integration_tests::eventually(Duration::from_secs(10), "a slot to free up", || async {
        sqlx::postgres::PgConnection::connect(url)
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn newer_protocol_minor_versions_are_negotiated_down_to_3_0() {
    let dp = DataPath::start().await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", dp.agent.pg_port))
        .await
        .unwrap();
    let mut packet =
        messages::startup_message(&[("user", "alice"), ("database", "app"), ("_pq_.fancy", "1")])
            .to_vec();
    packet[4..8].copy_from_slice(&0x0003_0002u32.to_be_bytes());
    s.write_all(&packet).await.unwrap();
    let mut reader = sluice_pgwire::FrameReader::new(1 << 16);
    let mut tags = Vec::new();
    while tags.len() < 2 {
        s.read_buf(reader.buffer()).await.unwrap();
        while let Some(f) = reader.next_frame().unwrap() {
            if f.tag == b'v' {
                let body = f.body();
                assert_eq!(&body[..4], &0u32.to_be_bytes(), "newest minor we speak");
                assert_eq!(&body[4..8], &1u32.to_be_bytes(), "one unrecognised option");
                assert!(String::from_utf8_lossy(body).contains("_pq_.fancy"));
            }
            tags.push(f.tag);
        }
    }
    assert_eq!(
        tags,
        vec![b'v', b'R'],
        "NegotiateProtocolVersion, then the password request"
    );
    s.write_all(&messages::password_message(dp.token.as_bytes()).raw)
        .await
        .unwrap();
    s.write_all(&sluice_pgwire::Frame::new(b'Q', b"SELECT 'negotiated'\0").raw)
        .await
        .unwrap();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("negotiated") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
    }
}

/// The default rules, plus SQL `PREPARE` allowed.
fn prepare_rules() -> String {
    format!(
        "{}      - allow: {{ sql: {{ statements: [prepare] }} }}\n",
        sluice_integration_tests::datapath::DEFAULT_RULES
    )
}

/// A statement holding a little over 4 KB of the agent's memory once
/// prepared.
fn padded(i: usize) -> String {
    format!(
        "SELECT name FROM items WHERE id = {i} /* {} */",
        "x".repeat(4000)
    )
}

/// Prepares `name` as `sql`; the error text if refused.
async fn prepare(
    s: &mut sluice_integration_tests::rawpg::RawSession,
    name: &str,
    sql: &str,
) -> String {
    use sluice_integration_tests::rawpg::{errors, parse, sync};
    s.send(&[parse(name, sql), sync()].concat()).await;
    errors(&s.until(b'Z').await)
}

/// How many prepared statements the target holds for the session.
async fn prepared_count(s: &mut sluice_integration_tests::rawpg::RawSession) -> String {
    use sluice_integration_tests::rawpg::{first_column, query};
    s.send(&query("SELECT count(*) FROM pg_prepared_statements"))
        .await;
    first_column(&s.until(b'Z').await).concat()
}

#[tokio::test]
async fn a_session_that_prepares_without_end_is_refused_and_others_are_not_harmed() {
    use sluice_integration_tests::rawpg::{RawSession, errors, frame, parse, query, sync};
    let rules = prepare_rules();
    let dp =
        DataPath::start_with(&rules, vec!["--max-prepared-bytes".into(), "65536".into()]).await;
    let port = dp.agent.pg_port;
    let mut s = RawSession::connect(port, "app", &dp.token).await;
    let mut prepared = 0;
    let refusal = loop {
        assert!(prepared < 32, "64 KiB never filled up");
        s.send(&[parse(&format!("s{prepared}"), &padded(prepared)), sync()].concat())
            .await;
        let answer = s.until(b'Z').await;
        let errs = errors(&answer);
        if !errs.is_empty() {
            break errs;
        }
        prepared += 1;
    };
    assert!(
        prepared >= 10,
        "only {prepared} statements fitted in 64 KiB"
    );
    assert!(
        refusal.contains("54000") && refusal.contains("--max-prepared-bytes"),
        "{refusal}"
    );
    // The target never saw the refused Parse, and the session still works.
    assert_eq!(prepared_count(&mut s).await, prepared.to_string());
    // Small statements fill what is left.
    loop {
        assert!(prepared < 64, "the budget never filled up");
        s.send(&[parse(&format!("s{prepared}"), "SELECT 1"), sync()].concat())
            .await;
        if !errors(&s.until(b'Z').await).is_empty() {
            break;
        }
        prepared += 1;
    }
    // SQL PREPARE is held to the same budget (a longer name than any
    // small statement's: it cannot fit where they did not).
    s.send(&query(
        "PREPARE a_statement_prepared_with_sql_over_the_budget AS SELECT 1",
    ))
    .await;
    let answer = s.until(b'Z').await;
    assert!(errors(&answer).contains("54000"), "{}", errors(&answer));
    assert_eq!(prepared_count(&mut s).await, prepared.to_string());

    // Another session of the same subject prepares as usual meanwhile.
    let mut other = RawSession::connect(port, "app", &dp.token).await;
    other
        .send(&[parse("s0", &padded(0)), sync()].concat())
        .await;
    let answer = other.until(b'Z').await;
    assert!(errors(&answer).is_empty(), "{}", errors(&answer));
    assert_eq!(prepared_count(&mut other).await, "1");

    // Closing a statement makes room again.
    s.send(&[frame(b'C', b"Ss0\0"), sync()].concat()).await;
    s.until(b'Z').await;
    s.send(&[parse("again", &padded(1)), sync()].concat()).await;
    let answer = s.until(b'Z').await;
    assert!(errors(&answer).is_empty(), "{}", errors(&answer));
    assert_eq!(prepared_count(&mut s).await, prepared.to_string());

    // A value larger than the whole budget, bound through the unnamed
    // portal as drivers do, is not refused: there is only ever one.
    let mut conn = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    let upload = "u".repeat(200 * 1024);
    sqlx::query("INSERT INTO notes (body) VALUES ($1)")
        .bind(&upload)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        dp.target("SELECT length(body) FROM notes"),
        upload.len().to_string()
    );
}

#[tokio::test]
async fn one_subjects_sessions_share_a_budget_for_prepared_statements() {
    use sluice_integration_tests::rawpg::RawSession;
    let rules = prepare_rules();
    let mut dp = DataPath::start_with(
        &rules,
        vec![
            "--max-prepared-bytes".into(),
            "65536".into(),
            "--max-subject-prepared-bytes".into(),
            "100000".into(),
        ],
    )
    .await;
    let port = dp.agent.pg_port;
    let mut a = RawSession::connect(port, "app", &dp.token).await;
    for i in 0..10 {
        let refused = prepare(&mut a, &format!("s{i}"), &padded(i)).await;
        assert!(refused.is_empty(), "{refused}");
    }
    // A second session of the same subject fills what is left of the
    // subject's budget, well before its own.
    let mut b = RawSession::connect(port, "app", &dp.token).await;
    let mut prepared = 0;
    let refusal = loop {
        assert!(prepared < 15, "the subject's budget never filled up");
        let refused = prepare(&mut b, &format!("s{prepared}"), &padded(prepared)).await;
        if !refused.is_empty() {
            break refused;
        }
        prepared += 1;
    };
    assert!(
        refusal.contains("54000") && refusal.contains("--max-subject-prepared-bytes"),
        "{refusal}"
    );
    // The refused Parse never reached the target.
    assert_eq!(prepared_count(&mut b).await, prepared.to_string());
    // Another subject prepares as usual.
    let bob = dp.cp.user_token("bob", &["devs"]).await;
    let mut other = RawSession::connect(port, "app", &bob).await;
    let refused = prepare(&mut other, "s0", &padded(0)).await;
    assert!(refused.is_empty(), "{refused}");
    // Once the first session ends, its share is free again.
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !prepare(&mut b, "again", &padded(prepared)).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended session's share was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(prepared_count(&mut b).await, (prepared + 1).to_string());
}

#[tokio::test]
async fn many_subjects_together_cannot_fill_the_agent_with_prepared_statements() {
    use sluice_integration_tests::rawpg::RawSession;
    let rules = prepare_rules();
    // Each statement below holds a little over 4 KB: ten for one subject,
    // then about fourteen more for anyone, fill the agent; one subject alone
    // could hold nineteen.
    let mut dp = DataPath::start_with(
        &rules,
        vec![
            "--max-subject-prepared-bytes".into(),
            "80000".into(),
            "--max-total-prepared-bytes".into(),
            "100000".into(),
        ],
    )
    .await;
    let port = dp.agent.pg_port;
    let mut alice = RawSession::connect(port, "app", &dp.token).await;
    for i in 0..10 {
        let refused = prepare(&mut alice, &format!("s{i}"), &padded(i)).await;
        assert!(refused.is_empty(), "{refused}");
    }
    // Another subject, well within its own budget, meets the agent's.
    let bob_token = dp.cp.user_token("bob", &["devs"]).await;
    let mut bob = RawSession::connect(port, "app", &bob_token).await;
    let mut prepared = 0;
    let refusal = loop {
        assert!(prepared < 19, "the agent's budget never filled up");
        let refused = prepare(&mut bob, &format!("s{prepared}"), &padded(prepared)).await;
        if !refused.is_empty() {
            break refused;
        }
        prepared += 1;
    };
    assert!(
        refusal.contains("54000") && refusal.contains("--max-total-prepared-bytes"),
        "{refusal}"
    );
    assert!(
        prepared < 18,
        "refused for the agent, not the subject: {prepared}"
    );
    // The refused Parse never reached the target, and the session goes on.
    assert_eq!(prepared_count(&mut bob).await, prepared.to_string());
    // A third subject is refused too, with the same clear error.
    let carol_token = dp.cp.user_token("carol", &["devs"]).await;
    let mut carol = RawSession::connect(port, "app", &carol_token).await;
    let refused = prepare(&mut carol, "s0", &padded(0)).await;
    assert!(refused.contains("--max-total-prepared-bytes"), "{refused}");
    assert_eq!(prepared_count(&mut carol).await, "0");
    // Once the first subject's session ends, there is room again.
    drop(alice);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !prepare(&mut carol, "s0", &padded(0)).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended session's share was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(prepared_count(&mut carol).await, "1");
}

#[tokio::test]
async fn a_client_that_pipelines_without_reading_meets_backpressure() {
    use sluice_integration_tests::rawpg::{RawSession, bind, errors, execute, parse, sync, tags};
    use sqlx::Executor as _;
    let dp = DataPath::start().await;
    let metrics = format!("http://127.0.0.1:{}/metrics", dp.agent.status_port);
    // Statements recorded by the agent: one write-ahead record per
    // statement it forwards.
    let recorded = || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with("audit_events_total ") || l.contains("_audit_events_total "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no audit_events_total in:\n{text}")) as u64
    };
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&[parse("one", "SELECT id FROM items WHERE id = 1"), sync()].concat())
        .await;
    s.until(b'Z').await;
    // The target answers nothing while this lock is held.
    let mut lock = sqlx::PgConnection::connect(&dp.pg.url("app"))
        .await
        .unwrap();
    lock.execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    const STATEMENTS: usize = 20_000;
    let one = [bind("", "one"), execute("", 0), sync()].concat();
    let all = one.repeat(STATEMENTS);
    let before = recorded().await;
    // Send until the agent stops taking more (a slow agent under load may
    // pause mid-way: keep going), then wait for its count to settle (the
    // same over one second) to see where it stopped reading this client.
    let mut sent = 0;
    let forwarded = loop {
        sent += s.send_some(&all[sent..], Duration::from_secs(2)).await;
        let mut forwarded = recorded().await - before;
        let mut same = 0;
        while same < 2 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = recorded().await - before;
            same = if now == forwarded { same + 1 } else { 0 };
            forwarded = now;
        }
        if forwarded >= 10_000 || sent == all.len() {
            break forwarded;
        }
    };
    // 10,000 in flight, plus at most what one read of the client took.
    assert!(
        (10_000..14_000).contains(&forwarded),
        "{forwarded} statements in flight ({sent} of {} bytes sent)",
        all.len()
    );

    // Once the target answers, everything runs and the session is fine.
    lock.execute("COMMIT").await.unwrap();
    while sent < all.len() {
        sent += s.send_some(&all[sent..], Duration::from_secs(10)).await;
    }
    let answers = s.until_n(b'Z', STATEMENTS).await;
    assert_eq!(errors(&answers), "");
    assert_eq!(tags(&answers).matches('D').count(), STATEMENTS);
}

/// A deterministic generator of pseudo-random numbers (xorshift64*), so a
/// failing sequence can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Statements the policy denies (DEFAULT_RULES); none may ever reach the
/// target, whatever surrounds them.
const DENIED: &[&str] = &[
    "DROP TABLE items",
    "DELETE FROM items",
    "TRUNCATE items",
    "SELECT 1; DROP TABLE items",
    "DO $$ BEGIN DELETE FROM items; END $$",
    "SET ROLE postgres",
    "SELECT pg_read_file('/etc/hostname')",
    "COPY items FROM PROGRAM 'true'",
    "EXPLAIN ANALYZE DELETE FROM items",
];

const ALLOWED: &[&str] = &[
    "SELECT 1",
    "SELECT id, name FROM items WHERE id = $1",
    "SELECT $1::int",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT a",
    "ROLLBACK TO SAVEPOINT a",
    "INSERT INTO notes (body) VALUES ($1)",
    "UPDATE notes SET body = 'x' WHERE id = 1",
    "UPDATE notes SET body = 'refused' WHERE id = 2",
    "COPY notes (body) FROM STDIN",
    "COPY (SELECT id FROM items WHERE id < 5) TO STDOUT",
    "SELECT name FROM items WHERE id < 3",
    "SELECT id FROM items WHERE id < 50",
    "FETCH ALL FROM c",
    "SELECT upper(name) FROM items WHERE id < 3",
    "COPY (SELECT id, name FROM items WHERE id < 5) TO STDOUT",
    "SELECT * FROM items WHERE name = $1",
    "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM items",
    "FETCH 5 FROM c",
    "CLOSE c",
    "PREPARE q AS SELECT 1",
    "EXECUTE q",
    "PREPARE m AS SELECT upper(name) FROM items WHERE id < 3",
    "EXECUTE m",
    "DEALLOCATE ALL",
    "SET application_name = 'fz'",
    "LISTEN ch",
    "NOTIFY ch, 'x'",
    "SELECT 1; SELECT 2",
    "SELEC",
    "",
    "'unterminated",
];

/// A NUL-terminated string for a message body.
fn cstr(body: &mut Vec<u8>, s: &[u8]) {
    body.extend_from_slice(s);
    body.push(0);
}

/// One frontend message, well-formed or not.
fn random_message(rng: &mut Rng) -> (String, Vec<u8>) {
    use sluice_integration_tests::rawpg::frame;
    let sql = |rng: &mut Rng| -> Vec<u8> {
        match rng.below(10) {
            0..=1 => rng.pick(DENIED).as_bytes().to_vec(),
            // Garbage: mostly printable, now and then not UTF-8 at all.
            2 if rng.below(5) == 0 => rng.bytes(24).into_iter().filter(|b| *b != 0).collect(),
            2 => rng.bytes(24).into_iter().map(|b| b' ' + b % 95).collect(),
            _ => rng.pick(ALLOWED).as_bytes().to_vec(),
        }
    };
    const NAMES: [&[u8]; 4] = [b"", b"s1", b"s2", b"p1"];
    let name = |rng: &mut Rng| NAMES[rng.below(NAMES.len())];
    let count = |rng: &mut Rng, max: usize| -> i16 { i16::try_from(rng.below(max + 1)).unwrap() };
    let mut body = Vec::new();
    // Messages that end the session are rare, so most sequences reach
    // deeper states.
    match rng.below(200) {
        0 => return ("X:".into(), frame(b'X', b"")),
        1 => {
            // A length field that lies.
            let mut raw = frame(b'Q', b"SELECT 1\0");
            let lie: i32 = *rng.pick(&[0, 3, -1, i32::MAX]);
            raw[1..5].copy_from_slice(&lie.to_be_bytes());
            return ("bad length".into(), raw);
        }
        2..=3 => {
            // An unknown message type, or a known one with a bad body.
            let tag = *rng.pick(b"PBDECQZ\x00\xff");
            let body = rng.bytes(12);
            let shown = format!("{}:{}", tag as char, String::from_utf8_lossy(&body));
            return (shown, frame(tag, &body));
        }
        _ => {}
    }
    let tag = match rng.below(92) {
        0..=11 => {
            cstr(&mut body, &sql(rng));
            b'Q'
        }
        12..=27 => {
            cstr(&mut body, name(rng));
            cstr(&mut body, &sql(rng));
            let n = count(rng, 2);
            body.extend_from_slice(&n.to_be_bytes());
            for _ in 0..n {
                let oid: u32 = *rng.pick(&[0, 23, 25, 17, 16, 0xdead_beef]);
                body.extend_from_slice(&oid.to_be_bytes());
            }
            b'P'
        }
        28..=43 => {
            cstr(&mut body, name(rng));
            cstr(&mut body, name(rng));
            let formats = count(rng, 2);
            body.extend_from_slice(&formats.to_be_bytes());
            for _ in 0..formats {
                let f: i16 = *rng.pick(&[0, 1, 7]);
                body.extend_from_slice(&f.to_be_bytes());
            }
            let params = count(rng, 3);
            body.extend_from_slice(&params.to_be_bytes());
            for _ in 0..params {
                if rng.below(4) == 0 {
                    body.extend_from_slice(&(-1i32).to_be_bytes());
                } else {
                    let value = match rng.below(3) {
                        0 => b"1".to_vec(),
                        1 => b"fuzz".to_vec(),
                        _ => rng.bytes(8),
                    };
                    body.extend_from_slice(&i32::try_from(value.len()).unwrap().to_be_bytes());
                    body.extend_from_slice(&value);
                }
            }
            let results = count(rng, 2);
            body.extend_from_slice(&results.to_be_bytes());
            for _ in 0..results {
                body.extend_from_slice(&rng.pick(&[0i16, 1]).to_be_bytes());
            }
            b'B'
        }
        44..=51 => {
            body.push(*rng.pick(b"SSSSPPPPPX"));
            cstr(&mut body, name(rng));
            b'D'
        }
        52..=61 => {
            cstr(&mut body, name(rng));
            body.extend_from_slice(&rng.pick(&[0i32, 1, 2, -1]).to_be_bytes());
            b'E'
        }
        62..=66 => {
            body.push(*rng.pick(b"SSSSPPPPPX"));
            cstr(&mut body, name(rng));
            b'C'
        }
        67..=76 => b'S',
        77..=81 => b'H',
        82..=85 => {
            body = rng.bytes(16);
            b'd'
        }
        86..=87 => b'c',
        88..=89 => {
            cstr(&mut body, b"stop");
            b'f'
        }
        _ => {
            body = rng.bytes(16);
            b'F'
        }
    };
    let shown = format!("{}:{}", tag as char, String::from_utf8_lossy(&body));
    (shown, frame(tag, &body))
}

/// Runs seeded random message sequences through `dp`'s agent, one session
/// each (`SLUICE_RANDOM_SESSIONS`, default `default_sessions`, from seed
/// `SLUICE_RANDOM_FIRST_SEED`), `SLUICE_RANDOM_CONCURRENCY` (default 2) at
/// once: each must end with an answer to its last query or with an error,
/// never hang, and leave the agent serving; then nothing the policy denies
/// ran on the target. `check` sees every frame a session received.
async fn random_sequences(dp: &DataPath, default_sessions: u64, check: impl Fn(&str, &[Frame])) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let first = env("SLUICE_RANDOM_FIRST_SEED", 1);
    let sessions = env("SLUICE_RANDOM_SESSIONS", default_sessions);
    let concurrency = env("SLUICE_RANDOM_CONCURRENCY", 2).max(1);
    let (mut answered, mut closed) = (0, 0);
    let seeds: Vec<u64> = (first..first + sessions).collect();
    for group in seeds.chunks(usize::try_from(concurrency).unwrap_or(1)) {
        let runs =
            futures::future::join_all(group.iter().map(|seed| one_sequence(dp, *seed))).await;
        for run in runs {
            check(&run.context, &run.seen);
            match run.outcome {
                None => panic!("the session hung: {}", run.context),
                Some(false) => {
                    closed += 1;
                    assert!(
                        run.ends_itself || run.seen.iter().any(|f| f.tag == b'E'),
                        "the agent closed the connection without saying why: {}",
                        run.context
                    );
                }
                Some(true) => answered += 1,
            }
        }
        assert!(
            dp.agent.status().await.is_some(),
            "the agent stopped after seeds {group:?}"
        );
    }
    eprintln!("{answered} sessions answered at the end, {closed} were ended");
    assert!(answered > 0, "no session lasted to the end");
    // Nothing the policy denies ran; the agent serves a new client.
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
    let logs = dp.pg.logs();
    for denied in DENIED {
        assert!(!logs.contains(denied), "the target ran `{denied}`");
    }
}

/// What one random sequence's session did.
struct SequenceRun {
    /// `Some(true)`: its last query was answered; `Some(false)`: the
    /// agent ended it; `None`: neither within 20 s.
    outcome: Option<bool>,
    seen: Vec<Frame>,
    /// It sent Terminate or a lying length itself.
    ends_itself: bool,
    /// The seed, what was sent and the tags received, for a failure.
    context: String,
}

/// One session of [`random_sequences`]: the messages of `seed`, then
/// whatever takes any state back to a query that shows the session works
/// (out of COPY, past any error, a transaction ended).
async fn one_sequence(dp: &DataPath, seed: u64) -> SequenceRun {
    use sluice_integration_tests::rawpg::{RawSession, first_column, query, sync};
    const MESSAGES: usize = 24;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1000_0001));
    let mut sent = Vec::new();
    let mut bytes = Vec::new();
    // Extended-protocol messages sent since the last Sync: a Query,
    // FunctionCall or COPY message then mostly comes after a Sync (the
    // agent ends a session that sends one inside a batch, which would end
    // most sequences early).
    let mut open = false;
    for _ in 0..MESSAGES {
        let (shown, raw) = random_message(&mut rng);
        let tag = raw[0];
        if open && matches!(tag, b'Q' | b'F' | b'd' | b'c' | b'f') && rng.below(10) != 0 {
            sent.push("S:".into());
            bytes.extend_from_slice(&sync());
            open = false;
        }
        match tag {
            b'P' | b'B' | b'D' | b'E' | b'C' => open = true,
            b'S' => open = false,
            _ => {}
        }
        sent.push(shown);
        bytes.extend_from_slice(&raw);
    }
    let ends_itself = sent.iter().any(|m| m == "X:" || m == "bad length");
    if open {
        bytes.extend_from_slice(&sync());
    }
    bytes.extend_from_slice(&sluice_integration_tests::rawpg::frame(b'f', b"stop\0"));
    bytes.extend_from_slice(&sync());
    bytes.extend_from_slice(&query("ROLLBACK; SELECT 4242"));
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let _ = s.try_send(&bytes).await;
    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let frames = s.until_or_closed(b'Z').await;
            let closed = frames.last().is_none_or(|f| f.tag != b'Z');
            let answered = first_column(&frames).iter().any(|v| v == "4242");
            seen.extend(frames);
            if answered {
                return true;
            }
            if closed {
                return false;
            }
        }
    })
    .await
    .ok();
    let said: String = seen.iter().map(|f| f.tag as char).collect();
    SequenceRun {
        outcome,
        seen,
        ends_itself,
        context: format!("seed {seed}: sent {sent:?}; received {said}"),
    }
}

#[tokio::test]
async fn random_message_sequences_never_crash_or_hang_the_agent_nor_run_what_it_denies() {
    let dp = DataPath::start().await;
    random_sequences(&dp, 150, |_, _| {}).await;
    let (ok, out, err) = dp.psql("SELECT count(*) FROM items");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "500");
}

#[tokio::test]
async fn random_message_sequences_never_return_more_rows_than_the_limit() {
    // Every statement that returns rows returns at most 3, whatever the
    // order of messages around it: query results, portal fetches, FETCH
    // and COPY output (a header line or the binary trailer besides), and
    // the tags the client reads say no more.
    const LIMIT: usize = 3;
    let rules = format!(
        "{}      - limit: {{ rows: {LIMIT} }}\n",
        sluice_integration_tests::datapath::DEFAULT_RULES
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    let limited = std::sync::atomic::AtomicUsize::new(0);
    random_sequences(&dp, 100, |context, frames| {
        let (mut rows, mut copied) = (0, 0);
        for f in frames {
            match f.tag {
                b'D' => rows += 1,
                b'd' => copied += 1,
                b'H' | b'c' => copied = 0,
                b'C' | b's' | b'E' | b'I' | b'Z' => {
                    assert!(rows <= LIMIT, "{rows} rows for one statement: {context}");
                    rows = 0;
                }
                b'N' if String::from_utf8_lossy(f.body()).contains("by policy") => {
                    limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                _ => {}
            }
            assert!(
                copied <= LIMIT + 1,
                "{copied} COPY messages for one statement: {context}"
            );
            if f.tag == b'C' {
                let tag = String::from_utf8_lossy(f.body());
                let mut words = tag.trim_end_matches('\0').split(' ');
                if let (Some("SELECT" | "FETCH" | "COPY"), Some(n)) =
                    (words.next(), words.next_back())
                {
                    let n: usize = n.parse().unwrap_or(usize::MAX);
                    assert!(n <= LIMIT, "the tag says `{tag}`: {context}");
                }
            }
        }
    })
    .await;
    assert!(
        limited.into_inner() > 0,
        "no sequence ran into the limit: the test proves nothing"
    );
    let (ok, out, err) = dp.psql("SELECT id FROM items");
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), LIMIT);
}

#[tokio::test]
async fn random_message_sequences_never_carry_a_masked_value() {
    // `items.name` ('item 1' ... 'item 500') is masked, and so is every
    // expression over `items`: whatever the sequence, no frame a session
    // receives may carry a name in clear. (Updates need approval, which
    // they are refused for at once: mode retry. SQL PREPARE and EXECUTE
    // are allowed, so the agent reads what an EXECUTE runs amid the
    // sequence's messages.)
    let rules = format!(
        "{}      - mask: {{ columns: [\"public.items.name\"], as: redact, strict_tables: [\"public.items\"] }}\n        name: names\n      - approve: {{ sql: {{ statements: [update] }}, approvers: [dba], mode: retry, ttl: 10m }}\n        name: updates\n      - allow: {{ sql: {{ statements: [prepare, execute] }} }}\n        name: prepared\n",
        sluice_integration_tests::datapath::DEFAULT_RULES
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    random_sequences(&dp, 100, |context, frames| {
        for f in frames {
            assert!(
                !f.raw.windows(5).any(|w| w.eq_ignore_ascii_case(b"item ")),
                "a name in clear in `{}`: {context}",
                String::from_utf8_lossy(&f.raw)
            );
        }
    })
    .await;
    let (ok, out, err) = dp.psql("SELECT name FROM items WHERE id = 7");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[REDACTED]");
    // The agent read, amid the sequences, which statement an EXECUTE
    // would run.
    assert!(
        dp.pg.logs().contains("pg_catalog.pg_prepared_statements"),
        "no EXECUTE was read: the test proves less than it says"
    );
}

#[tokio::test]
async fn random_message_sequences_around_statements_held_for_approval() {
    // Updates wait in the session for an approver, who grants every
    // request but those setting `refused`: whatever the messages around a
    // held statement, the session goes on once it is decided (or ends
    // with an error), and a denied one never runs.
    let rules = format!(
        "{}      - approve: {{ sql: {{ statements: [update] }}, approvers: [dba], mode: wait, timeout: 1m, ttl: 10m }}\n        name: updates\n",
        sluice_integration_tests::datapath::DEFAULT_RULES
    );
    let mut dp = DataPath::start_with(&rules, Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = dp.cp.api().with_token(Some(&bob));
    let done = std::sync::atomic::AtomicBool::new(false);
    let approver = async {
        let (mut granted, mut denied) = (0, 0);
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let (_, list) = dba.get("/api/v1/approvals?status=pending").await;
            for request in list["approvals"].as_array().into_iter().flatten() {
                let (Some(id), Some(statement)) =
                    (request["id"].as_str(), request["statement"].as_str())
                else {
                    continue;
                };
                let refuse = statement.contains("refused");
                let verb = if refuse { "deny" } else { "approve" };
                // A request its session withdrew meanwhile is a conflict.
                let (status, _) = dba
                    .post(
                        &format!("/api/v1/approvals/{id}/{verb}"),
                        serde_json::json!({ "reason": "random sequences" }),
                    )
                    .await;
                if status.is_success() {
                    if refuse {
                        denied += 1;
                    } else {
                        granted += 1;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (granted, denied)
    };
    let sequences = async {
        random_sequences(&dp, 100, |_, _| {}).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let ((), (granted, denied)) = tokio::join!(sequences, approver);
    eprintln!("{granted} requests granted, {denied} denied");
    assert!(
        granted > 0 && denied > 0,
        "no statement was held and decided both ways: the test proves nothing"
    );
    // What the target ran (or began to: an Execute is logged before an
    // aborted transaction refuses it). A Parse of a statement awaiting
    // approval may reach it (parsing runs nothing) and show in an error's
    // context; its Bind and Execute wait for the approval.
    let logs = dp.pg.logs();
    let ran = |needle: &str| {
        logs.lines().any(|line| {
            (line.contains("LOG:  statement: ") || line.contains("LOG:  execute "))
                && line.contains(needle)
        })
    };
    assert!(
        !ran("body = 'refused'"),
        "a denied update ran on the target"
    );
    assert!(ran("body = 'x'"), "no approved update ran on the target");
}

/// Ten bytes of binary `numeric` (one digit, the largest weight) print as
/// 131,069 digits: an array of them bound as a parameter once made its
/// audit text thousands of times its size, built in full before any limit
/// was checked (80,000 of them in a 1.1 MB Bind: 10 GB, and the agent
/// killed with every session). Such a value is recorded as hex; the
/// statement runs as the target reads it.
#[tokio::test]
async fn a_binary_parameter_whose_text_would_be_huge_is_recorded_as_hex() {
    use sluice_integration_tests::rawpg::{
        RawSession, bind_binary, errors, execute, first_column, parse_typed, sync,
    };
    let mut dp = DataPath::start().await;
    const N: i32 = 2_000;
    let mut array = Vec::new();
    for v in [1, 0, 1700, N, 1] {
        array.extend(i32::to_be_bytes(v));
    }
    for _ in 0..N {
        array.extend(10i32.to_be_bytes());
        array.extend([0, 1, 0x7f, 0xff, 0, 0, 0, 0, 0, 1]);
    }
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut batch = parse_typed("", "SELECT cardinality($1::numeric[])", &[1231]);
    batch.extend(bind_binary("", "", &[&array]));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    let answer = s.until(b'Z').await;
    assert_eq!(errors(&answer), "");
    assert_eq!(first_column(&answer), ["2000"]);
    let parameters = dp
        .cp
        .api()
        .statement_parameters("SELECT cardinality($1::numeric[])")
        .await;
    let recorded = parameters[0].as_str().unwrap();
    let hex: String = array.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        recorded == format!("\\x{hex}"),
        "recorded as {} bytes: {}...",
        recorded.len(),
        &recorded[..100]
    );
    // A numeric the size of its text reads as PostgreSQL prints it.
    let mut one = Vec::new();
    one.extend([0, 1, 0, 2, 0, 0, 0, 0, 0, 7]);
    let mut batch = parse_typed("", "SELECT $1::numeric + 0 AS small", &[1700]);
    batch.extend(bind_binary("", "", &[&one]));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["700000000"]);
    let parameters = dp.cp.api().statement_parameters("AS small").await;
    assert_eq!(parameters, serde_json::json!(["700000000"]));
}

/// Waits until the target has sent the whole answer to the query whose
/// text ends `AS {alias}`: its backend is idle with that query's text.
async fn target_sent(dp: &DataPath, alias: &str) {
    let poll = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%AS {alias}' AND state = 'idle'"
    );
    eventually(
        Duration::from_secs(30),
        "the target to send the row",
        || async { (dp.target(&poll) == "1").then_some(()) },
    )
    .await;
}

/// A client that asks for a large row and stops reading: what the agent
/// holds for it past its buffer counts against the subject's allowance
/// until the client reads it (once, only the row still arriving did, so
/// one subject's stalled sessions could hold gigabytes), and the session
/// ends at the idle timeout (once, with statements in flight, it lived
/// until the token expired), taking its target connection with it.
#[tokio::test]
async fn a_client_that_stops_reading_holds_its_answer_against_its_allowance_and_is_ended() {
    use sluice_integration_tests::rawpg::{RawSession, errors, query};
    let mut dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec![
            "--max-subject-receive-bytes".into(),
            "40000000".into(),
            "--idle-timeout".into(),
            "6s".into(),
        ],
    )
    .await;
    let port = dp.agent.pg_port;
    let mut stalled = RawSession::connect(port, "app", &dp.token).await;
    stalled
        .send(&query("SELECT repeat('x', 30000000) AS stalled"))
        .await;
    // The agent reads the row from the target and holds what the client's
    // socket does not take (all but a few MB).
    target_sent(&dp, "stalled").await;
    let mut other = RawSession::connect(port, "app", &dp.token).await;
    other.send(&query("SELECT repeat('y', 30000000)")).await;
    let text = errors(&other.until_or_closed(b'Z').await);
    assert!(
        text.contains("53200") && text.contains("--max-subject-receive-bytes"),
        "{text}"
    );
    // The stalled session ends, and its target connection with it.
    eventually(
        Duration::from_secs(30),
        "the stalled session's target connection to close",
        || async {
            let left =
                dp.target("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%AS stalled'");
            (left == "0").then_some(())
        },
    )
    .await;
    dp.cp
        .api()
        .event_where(
            "session.end",
            "error",
            "read nothing of what was sent to it for longer than 6s",
        )
        .await;
    // With it gone, the row fits the allowance again.
    let mut reader = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    let (row,): (String,) = sqlx::query_as("SELECT repeat('z', 30000000)")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(row.len(), 30_000_000);
}

/// A client that resets its connection right after sending its token, so
/// it is gone by the time the agent has opened the upstream session and
/// answers, leaves a whole session in the trail: its start, and an end
/// that says the client left before the session began.
#[tokio::test]
async fn a_client_that_leaves_before_its_session_begins_is_recorded_as_started_and_ended() {
    let mut dp = DataPath::start().await;
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", dp.agent.pg_port))
        .await
        .unwrap();
    c.write_all(&startup(&[("user", "alice"), ("database", "app")]))
        .await
        .unwrap();
    // AuthenticationCleartextPassword: 'R', length 8, code 3.
    let mut asked = [0u8; 9];
    c.read_exact(&mut asked).await.unwrap();
    assert_eq!(asked, [b'R', 0, 0, 0, 8, 0, 0, 0, 3]);
    c.write_all(&messages::password_message(dp.token.as_bytes()).raw)
        .await
        .unwrap();
    // A reset, not a FIN: the agent's first write then fails.
    c.set_zero_linger().unwrap();
    drop(c);

    let api = dp.cp.api();
    let end = api
        .event_where(
            "session.end",
            "error",
            "the client left before its session began",
        )
        .await;
    let id = end["session_id"].as_str().unwrap();
    let v = api
        .get_ok(&format!("/api/v1/audit?session={id}&limit=10"))
        .await;
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"session.start") && kinds.contains(&"session.end"),
        "{v}"
    );
    assert_eq!(kinds.len(), 2, "{v}");
    // The agent serves the next client.
    let mut next = sqlx::postgres::PgConnection::connect(&dp.url())
        .await
        .unwrap();
    let (one,): (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut next)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

/// Over TLS, a client that stops reading is ended all the same. Closing a
/// TLS session writes to the client (its close_notify), which waits for the
/// client to read; that wait is bounded, so the session's end is recorded
/// and its target connection closed while the client still holds its
/// socket open, reading nothing.
#[tokio::test]
async fn a_tls_client_that_stops_reading_is_ended_and_its_end_recorded() {
    use sluice_integration_tests::rawpg::{RawSession, query};
    let mut dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--idle-timeout".into(), "3s".into()],
    )
    .await;
    let (ok, ca, err) = dp.cp.run_offline(&["ca"]);
    assert!(ok, "{err}");
    let mut stalled = RawSession::connect_tls(dp.agent.pg_port, "app", &dp.token, &ca).await;
    stalled
        .send(&query("SELECT repeat('x', 30000000) AS tls_stalled"))
        .await;
    target_sent(&dp, "tls_stalled").await;
    dp.cp
        .api()
        .event_where(
            "session.end",
            "error",
            "read nothing of what was sent to it",
        )
        .await;
    let left =
        dp.target("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%AS tls_stalled'");
    assert_eq!(left, "0");
    // Held open, unread, until here.
    drop(stalled);
}

/// While the target waits for COPY data, a client that sends a query
/// instead has its session ended with a protocol error (the query would
/// break the COPY, or be read as part of it), and the query never runs; a
/// client that sends nothing at all is ended at the idle timeout, which
/// ends the target's COPY and its transaction with it.
#[tokio::test]
async fn a_copy_waiting_for_data_takes_no_query_and_is_ended_when_idle() {
    use sluice_integration_tests::rawpg::{RawSession, errors, query};
    let dp = DataPath::start_with(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        vec!["--idle-timeout".into(), "3s".into()],
    )
    .await;
    let port = dp.agent.pg_port;

    let mut s = RawSession::connect(port, "app", &dp.token).await;
    s.send(&query("COPY notes (body) FROM STDIN")).await;
    s.until(b'G').await;
    s.send(&query("INSERT INTO notes (body) VALUES ('into-the-copy')"))
        .await;
    let frames = tokio::time::timeout(Duration::from_secs(20), s.until_or_closed(b'Z'))
        .await
        .expect("the session ends");
    let text = errors(&frames);
    assert!(
        text.contains("08P01") && text.contains("a Query arrived where the COPY's data belongs"),
        "{text}"
    );
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body = 'into-the-copy'"),
        "0"
    );

    let mut idle = RawSession::connect(port, "app", &dp.token).await;
    idle.send(&query("/* idle-copy */ COPY notes (body) FROM STDIN"))
        .await;
    idle.until(b'G').await;
    let frames = tokio::time::timeout(Duration::from_secs(20), idle.until_or_closed(b'Z'))
        .await
        .expect("the idle session ends");
    let text = errors(&frames);
    assert!(text.contains("57P05") && text.contains("idle"), "{text}");
    eventually(
        Duration::from_secs(10),
        "the target's COPY to end",
        || async {
            let left = dp.target(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%idle-' || 'copy%'",
            );
            (left == "0").then_some(())
        },
    )
    .await;
}
