//! Live sessions: ending them (admin, revoked grant), and the session
//! record (chain, transcript, verification).

use std::time::Duration;

use sluice_integration_tests::{
    datapath::{DEFAULT_RULES, DataPath},
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
