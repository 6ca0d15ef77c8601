//! Agent enrollment: a one-time join token (`sjt1.<id>.<secret>.<ca-sha256>`)
//! buys exactly one agent certificate, and only from the control plane whose
//! CA the token pins. Every refusal must stop the agent with a message that
//! says why, and must not spend a token that was never really presented.

use std::time::Duration;

use ring::rand::{SecureRandom as _, SystemRandom};
use serde_json::{Value, json};
use sluice_integration_tests::{AgentProc, Api, ControlPlaneProc, eventually, init_crypto};
use sluice_proto::{EnrollRequest, EnrollResponse, agent_service_client::AgentServiceClient};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// An agent that is refused exits long before this.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The four dot-separated parts of a join token.
struct TokenParts {
    id: String,
    secret: String,
    fingerprint: String,
}

impl TokenParts {
    fn of(token: &str) -> Self {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 4, "join token should have four parts: {token}");
        assert_eq!(parts[0], "sjt1", "{token}");
        Self {
            id: parts[1].to_owned(),
            secret: parts[2].to_owned(),
            fingerprint: parts[3].to_owned(),
        }
    }

    fn token(&self) -> String {
        format!("sjt1.{}.{}.{}", self.id, self.secret, self.fingerprint)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 64-hex fingerprint that is certainly not `real`.
fn other_fingerprint(real: &str) -> String {
    loop {
        let fp = random_hex(32);
        if fp != real {
            return fp;
        }
    }
}

/// Starts an agent with `token` against `grpc_url` and expects it to give
/// up: returns its log after asserting a non-zero exit.
fn refused(grpc_url: &str, name: &str, token: &str) -> String {
    let mut agent = AgentProc::spawn_with_token(grpc_url, name, Some(token), Vec::new());
    let (ok, log) = agent.wait_exit(EXIT_TIMEOUT);
    assert!(
        !ok,
        "the agent should exit non-zero when enrollment is refused:\n{log}"
    );
    assert!(
        !agent.state_path("identity.json").exists() && !agent.state_path("agent.crt").exists(),
        "a refused agent must not keep an identity or certificate"
    );
    log
}

/// Spawns an agent with `token` and waits for it to hold a valid snapshot.
async fn enrolls(grpc_url: &str, name: &str, token: &str) -> AgentProc {
    let mut agent = AgentProc::spawn_with_token(grpc_url, name, Some(token), Vec::new());
    agent.wait_ready().await;
    agent
}

async fn agent_entry(api: &Api, name: &str) -> Option<Value> {
    let agents = api.get_ok("/api/v1/agents").await;
    agents["agents"]
        .as_array()
        .expect("agents array")
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

/// Calls `Enroll` directly over TLS (trusting the control plane's CA), the
/// way a hostile or buggy client that skips the agent's own pin check would.
async fn enroll_directly(
    cp: &ControlPlaneProc,
    token: &str,
) -> Result<EnrollResponse, tonic::Status> {
    init_crypto();
    let (ok, ca_pem, err) = cp.run_offline(&["ca"]);
    assert!(ok, "`sluice-control-plane ca` failed: {err}");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(cp.grpc_url())
        .expect("gRPC URL")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("connect to the control plane's gRPC port");
    AgentServiceClient::new(channel)
        .enroll(EnrollRequest {
            join_token: token.to_owned(),
            csr_pem: String::new(),
            agent_version: "test".to_owned(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn valid_join_token_enrolls_the_agent_and_it_is_listed_as_connected() {
    let mut cp = ControlPlaneProc::start().await;
    let token = cp.join_token("edge-1").await;
    let agent = enrolls(&cp.grpc_url(), "edge-1", &token).await;

    let status = agent.status().await.expect("agent status");
    assert_eq!(status["agent"], "edge-1", "{status}");
    assert_eq!(status["snapshot"]["state"], "valid", "{status}");
    let identity: Value = serde_json::from_str(
        &std::fs::read_to_string(agent.state_path("identity.json")).expect("identity.json"),
    )
    .expect("identity.json is JSON");
    assert_eq!(
        identity["ca_fingerprint"],
        TokenParts::of(&token).fingerprint,
        "the agent pins the CA named by the token"
    );

    let api = cp.api();
    let entry = eventually(
        Duration::from_secs(10),
        "edge-1 to show as connected",
        || async {
            agent_entry(&api, "edge-1")
                .await
                .filter(|a| a["connected"] == true)
        },
    )
    .await;
    assert!(entry["enrolled_at"].is_string(), "{entry}");
    assert!(
        entry["agent_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{entry}"
    );
    let secret = TokenParts::of(&token).secret;
    assert!(
        !cp.logs().contains(&secret),
        "the control plane logged the join token's secret"
    );
    assert!(
        !agent.logs().contains(&secret),
        "the agent logged the join token's secret"
    );
}

#[tokio::test]
async fn expired_join_token_is_refused_and_the_agent_exits_non_zero() {
    let mut cp = ControlPlaneProc::start().await;
    let created = cp
        .api()
        .post_ok("/api/v1/join-tokens", json!({"agent": "late", "ttl": "1s"}))
        .await;
    let token = created["token"].as_str().expect("token").to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let log = refused(&cp.grpc_url(), "late", &token);
    assert!(
        log.contains("expired"),
        "the agent should say the token expired:\n{log}"
    );
    assert!(
        agent_entry(&cp.api(), "late").await.is_none(),
        "an expired token must not enroll anything"
    );
}

#[tokio::test]
async fn reused_join_token_is_refused_as_already_used() {
    let mut cp = ControlPlaneProc::start().await;
    let token = cp.join_token("edge-1").await;
    let _first = enrolls(&cp.grpc_url(), "edge-1", &token).await;

    let log = refused(&cp.grpc_url(), "edge-1", &token);
    assert!(
        log.contains("already used"),
        "the agent should say the token was already used:\n{log}"
    );
}

#[tokio::test]
async fn forged_secret_is_refused_as_not_recognised_and_does_not_spend_the_real_token() {
    let mut cp = ControlPlaneProc::start().await;
    let token = cp.join_token("edge-1").await;
    let mut forged = TokenParts::of(&token);
    forged.secret = format!("{}x", random_hex(21));
    assert_ne!(forged.token(), token);

    let log = refused(&cp.grpc_url(), "edge-1", &forged.token());
    assert!(
        log.contains("not recognised"),
        "the agent should say the token is not recognised:\n{log}"
    );

    // Guessing at a token's secret must not burn the real one.
    let _agent = enrolls(&cp.grpc_url(), "edge-1", &token).await;
}

#[tokio::test]
async fn token_of_another_control_plane_is_refused_because_the_pinned_ca_does_not_match() {
    let first = ControlPlaneProc::start().await;
    let mut second = ControlPlaneProc::start().await;
    let foreign = second.join_token("edge-1").await;

    let log = refused(&first.grpc_url(), "edge-1", &foreign);
    assert!(
        log.contains("pinned"),
        "the agent should say the control plane's CA is not the pinned one:\n{log}"
    );
    assert!(
        log.contains(&TokenParts::of(&foreign).fingerprint),
        "the message should name the pinned fingerprint:\n{log}"
    );
    // The agent checks the pin before it sends anything: the wrong control
    // plane never even saw the token.
    assert!(
        !first.logs().contains("enrollment refused"),
        "the token must not have been presented to the wrong control plane:\n{}",
        first.logs()
    );
    // And the token is still good where it belongs.
    let _agent = enrolls(&second.grpc_url(), "edge-1", &foreign).await;
}

#[tokio::test]
async fn token_with_a_wrong_ca_fingerprint_is_refused_and_the_real_token_stays_unused() {
    let mut cp = ControlPlaneProc::start().await;
    let token = cp.join_token("edge-1").await;
    let mut tampered = TokenParts::of(&token);
    tampered.fingerprint = other_fingerprint(&tampered.fingerprint);

    let log = refused(&cp.grpc_url(), "edge-1", &tampered.token());
    assert!(
        log.contains("pinned"),
        "the agent should say the control plane's CA is not the pinned one:\n{log}"
    );

    // Same id and secret, right pin: the token was never spent.
    let _agent = enrolls(&cp.grpc_url(), "edge-1", &token).await;
    let entry = agent_entry(&cp.api(), "edge-1")
        .await
        .expect("edge-1 enrolled");
    assert!(entry["enrolled_at"].is_string(), "{entry}");
}

#[tokio::test]
async fn control_plane_refuses_a_token_pinned_to_another_ca_without_spending_it() {
    let mut cp = ControlPlaneProc::start().await;
    let token = cp.join_token("edge-1").await;
    let mut tampered = TokenParts::of(&token);
    tampered.fingerprint = other_fingerprint(&tampered.fingerprint);

    let status = enroll_directly(&cp, &tampered.token())
        .await
        .expect_err("a mismatched pin must be refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("not recognised"), "{status:?}");

    let _agent = enrolls(&cp.grpc_url(), "edge-1", &token).await;
}

#[tokio::test]
async fn malformed_join_tokens_are_refused_with_a_clear_error() {
    let mut cp = ControlPlaneProc::start().await;
    let real = TokenParts::of(&cp.join_token("edge-1").await);
    let malformed = [
        "not-a-join-token".to_owned(),
        format!("sjt1.{}.{}", real.id, real.secret),
        format!("sjt2.{}.{}.{}", real.id, real.secret, real.fingerprint),
        format!("sjt1.{}.{}.{}", real.id, real.secret, "z".repeat(64)),
        format!("sjt1..{}.{}", real.secret, real.fingerprint),
    ];
    for token in &malformed {
        let log = refused(&cp.grpc_url(), "edge-1", token);
        assert!(
            log.contains("join token is malformed"),
            "token `{token}` should be called malformed:\n{log}"
        );
        assert!(
            !log.contains(&real.secret),
            "the error must not echo the token's secret:\n{log}"
        );
    }
}

#[tokio::test]
async fn control_plane_rejects_a_malformed_join_token_as_invalid_argument() {
    let mut cp = ControlPlaneProc::start().await;
    let real = TokenParts::of(&cp.join_token("edge-1").await);
    let status = enroll_directly(&cp, &format!("sjt1.{}.{}", real.id, real.secret))
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed"), "{status:?}");
}
