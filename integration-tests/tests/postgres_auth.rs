//! Who gets in: token checks at the agent, the hidden upstream credential,
//! and every upstream authentication method.

use sluice_integration_tests::{
    datapath::{DataPath, TARGET_PASSWORD},
    psql_via_agent,
};
use sluice_pgwire::messages;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn clients_without_a_valid_token_or_grant_are_refused_with_the_right_sqlstate() {
    let mut dp = DataPath::start().await;
    let port = dp.agent.pg_port;
    let outsider = dp.cp.user_token("mallory", &["others"]).await;
    let (ok, expired_token, err) = dp.cp.run_offline(&[
        "token",
        "issue",
        "--subject",
        "alice",
        "--group",
        "devs",
        "--ttl",
        "1s",
    ]);
    assert!(ok, "{err}");
    let expired_token = expired_token.trim().to_owned();

    let (ok, _, err) = psql_via_agent(port, "app", "", "SELECT 1");
    assert!(
        !ok && (err.contains("no token") || err.contains("no password supplied")),
        "{err}"
    );
    let (ok, _, err) = psql_via_agent(port, "app", "not.a.jwt", "SELECT 1");
    assert!(!ok && err.contains("token rejected"), "{err}");
    let (ok, _, err) = psql_via_agent(port, "app", &outsider, "SELECT 1");
    assert!(!ok && err.contains("no policy grants \"mallory\""), "{err}");
    let (ok, _, err) = psql_via_agent(port, "nope", &dp.token, "SELECT 1");
    assert!(
        !ok && err.contains("not a PostgreSQL resource served by this agent"),
        "{err}"
    );
    // The built-in issuer allows 30 s of clock skew; wait past it.
    tokio::time::sleep(std::time::Duration::from_secs(32)).await;
    let (ok, _, err) = psql_via_agent(port, "app", &expired_token, "SELECT 1");
    assert!(!ok && err.contains("expired"), "{err}");

    // SQLSTATEs, read with a driver.
    for (token, db, code) in [
        ("not.a.jwt", "app", "28P01"),
        (outsider.as_str(), "app", "28000"),
        (dp.token.as_str(), "nope", "3D000"),
    ] {
        let url = format!("postgres://x:{token}@127.0.0.1:{port}/{db}?sslmode=disable");
        let err = <sqlx::postgres::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap_err();
        assert_eq!(
            err.as_database_error().and_then(|e| e.code()).as_deref(),
            Some(code),
            "{err}"
        );
    }
    // Nothing reached the target as any of those.
    assert!(!dp.pg.logs().contains("mallory"));
}

#[tokio::test]
async fn the_client_never_receives_the_upstream_credential() {
    let dp = DataPath::start().await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", dp.agent.pg_port))
        .await
        .unwrap();
    s.write_all(&messages::startup_message(&[
        ("user", "alice"),
        ("database", "app"),
    ]))
    .await
    .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    all.extend_from_slice(&buf[..n]);
    s.write_all(&messages::password_message(dp.token.as_bytes()).raw)
        .await
        .unwrap();
    // Queries whose errors would echo the secret if it were ever sent.
    for sql in [
        "SELECT current_user, session_user".to_owned(),
        format!("SELECT '{TARGET_PASSWORD}'::int"),
        "SELECT name FROM items LIMIT 3".to_owned(),
    ] {
        s.write_all(&sluice_pgwire::Frame::new(b'Q', format!("{sql}\0").as_bytes()).raw)
            .await
            .unwrap();
    }
    s.write_all(&messages::terminate().raw).await.unwrap();
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("item 1"), "the session worked");
    assert!(
        text.contains("[REDACTED]"),
        "the error echoing the secret was scrubbed"
    );
    assert!(
        !text.contains(TARGET_PASSWORD),
        "the upstream password reached the client"
    );
}

#[tokio::test]
async fn upstream_md5_and_cleartext_authentication_work() {
    let mut dp = DataPath::start().await;
    let address = format!("127.0.0.1:{}", dp.pg.port);
    password_resources(&mut dp, &address).await;
    for resource in ["app-md5", "app-clear"] {
        let (ok, out, err) =
            psql_via_agent(dp.agent.pg_port, resource, &dp.token, "SELECT current_user");
        assert!(ok, "{resource}: {err}");
        assert_eq!(out.trim(), resource.replace('-', "_"));
    }
}

#[tokio::test]
async fn a_wrong_upstream_password_is_reported_without_echoing_the_credential() {
    let dp = DataPath::start().await;
    let mut cp = dp.cp;
    let (s, v) = cp
        .api()
        .post(
            "/api/v1/credentials/app-db/rotate",
            serde_json::json!({"secret": "Wrong-Secret-1234"}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    // Wait until the agent has the rotated credential.
    sluice_integration_tests::eventually(
        std::time::Duration::from_secs(10),
        "the rotated credential",
        || async {
            let (ok, _, err) = psql_via_agent(dp.agent.pg_port, "app", &dp.token, "SELECT 1");
            (!ok && err.contains("refused the stored credential")).then_some(err)
        },
    )
    .await;
    let (_, _, err) = psql_via_agent(dp.agent.pg_port, "app", &dp.token, "SELECT 1");
    assert!(!err.contains("Wrong-Secret"), "{err}");
    assert!(!dp.pg.logs().is_empty());
}

/// This machine's first non-loopback IPv4 address (a test prerequisite:
/// the test needs a path to the target that is not loopback).
fn non_loopback_ip() -> std::net::Ipv4Addr {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("run `hostname -I`");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
        .expect("this test needs a non-loopback IPv4 address on this machine")
}

// Multi-threaded: the relay runs while psql blocks the test's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_never_sent_to_a_target_the_agent_cannot_authenticate() {
    let mut dp = DataPath::start().await;
    // A TCP hop on a non-loopback address in front of the real PostgreSQL,
    // recording every byte the agent sends: whoever answers there could be
    // an impostor asking for the password.
    let relay = tokio::net::TcpListener::bind((non_loopback_ip(), 0))
        .await
        .unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let pg_port = dp.pg.port;
    let record = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut agent_side, _)) = relay.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut pg = tokio::net::TcpStream::connect(("127.0.0.1", pg_port))
                    .await
                    .unwrap();
                let (mut ar, mut aw) = agent_side.split();
                let (mut pr, mut pw) = pg.split();
                let up = async {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = ar.read(&mut buf).await {
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if pw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = tokio::io::copy(&mut pr, &mut aw);
                let _ = tokio::join!(up, down);
            });
        }
    });
    password_resources(&mut dp, &relay_addr.to_string()).await;
    for (name, method) in [("app-md5", "MD5"), ("app-clear", "cleartext")] {
        let (ok, _, err) = psql_via_agent(dp.agent.pg_port, name, &dp.token, "SELECT current_user");
        assert!(!ok, "{name} logged in over an unauthenticated connection");
        assert!(
            err.contains(&format!("asked for {method} password authentication"))
                && err.contains("verify-full"),
            "{name}: {err}"
        );
    }
    let sent = sent.lock().unwrap().clone();
    assert!(!sent.is_empty(), "the agent never reached the relay");
    assert!(
        !sent.windows(8).any(|w| w == b"p\0\0\0\x28md5"),
        "an MD5 password message was sent over an unauthenticated connection"
    );
    for secret in ["pw-app_md5", "pw-app_clear"] {
        assert!(
            !sent.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "`{secret}` was sent over an unauthenticated connection"
        );
    }
}

/// Roles `app_md5` (MD5) and `app_clear` (cleartext password) on the target,
/// with credentials and resources `app-md5`/`app-clear` at `address`,
/// granted to group devs; waits for the agent to have them.
async fn password_resources(dp: &mut DataPath, address: &str) {
    let api = dp.cp.api();
    for (role, method) in [("app_md5", "md5"), ("app_clear", "password")] {
        dp.pg.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'md5'; CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'"
            ),
        );
        dp.pg
            .psql("app", &format!("GRANT SELECT ON items TO {role}"));
        dp.pg
            .prepend_hba(&format!("host all {role} 127.0.0.1/32 {method}"));
        let name = role.replace('_', "-");
        let (s, v) = api
            .put(
                &format!("/api/v1/credentials/{name}"),
                serde_json::json!({"username": role, "secret": format!("pw-{role}")}),
            )
            .await;
        assert!(s.is_success(), "{v}");
        let (s, v) = api
            .put(
                &format!("/api/v1/resources/{name}"),
                serde_json::json!({"kind": "postgres", "agent": "edge", "address": address,
                    "database": "app", "credential": name, "tls_mode": "disable"}),
            )
            .await;
        assert!(s.is_success(), "{v}");
    }
    let (s, v) = api
        .apply_policy("policies:\n  - name: devs-everywhere\n    subjects: { groups: [devs] }\n    resources: { names: [\"app*\"] }\n    rules:\n      - allow: { sql: { statements: [read] } }\n")
        .await;
    assert!(s.is_success(), "{v}");
    dp.agent
        .wait_version(
            v["revision"].as_u64().unwrap(),
            std::time::Duration::from_secs(10),
        )
        .await;
}
