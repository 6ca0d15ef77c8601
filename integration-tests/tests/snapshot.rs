//! Policy snapshots: pushed to agents promptly, survive restarts of either
//! side, and fail closed when the cached copy is damaged or too old.

use std::time::{Duration, Instant};

use sluice_integration_tests::{
    AgentProc, ControlPlaneProc, eventually, psql_via_agent, simple_policy,
};

const NO_SNAPSHOT: &str = "no valid policy snapshot";

#[tokio::test]
async fn applied_policy_reaches_the_agent_within_one_second() {
    let mut cp = ControlPlaneProc::start().await;
    let agent = AgentProc::start(&mut cp, "edge").await;
    let api = cp.api();
    for i in 0..3 {
        let doc = simple_policy("edge", &format!("db{i}"), "devs", "127.0.0.1:5432");
        let start = Instant::now();
        let (status, body) = api.apply_policy(&doc).await;
        assert!(status.is_success(), "{body}");
        let revision = body["revision"].as_u64().expect("revision");
        agent.wait_version(revision, Duration::from_secs(5)).await;
        let elapsed = start.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "policy took {elapsed:?} to reach the agent"
        );
        let status = agent.status().await.expect("status");
        let resources = status["snapshot"]["resources"]
            .as_array()
            .expect("resources");
        assert!(resources.iter().any(|r| r == &format!("db{i}")), "{status}");
    }
}

#[tokio::test]
async fn agent_reconnects_after_a_control_plane_restart_and_ends_on_the_current_snapshot() {
    let mut cp = ControlPlaneProc::start().await;
    let mut agent = AgentProc::start(&mut cp, "edge").await;
    let api = cp.api();
    let (_, v1) = api
        .apply_policy(&simple_policy("edge", "before", "devs", "127.0.0.1:5432"))
        .await;
    agent
        .wait_version(v1["revision"].as_u64().unwrap(), Duration::from_secs(5))
        .await;

    cp.restart().await;
    eventually(
        Duration::from_secs(30),
        "the agent to reconnect",
        || async {
            let s = agent.status().await?;
            (s["control_plane"]["connected"] == true).then_some(())
        },
    )
    .await;
    let api = cp.api();
    let (_, v2) = api
        .apply_policy(&simple_policy("edge", "after", "devs", "127.0.0.1:5432"))
        .await;
    let rev2 = v2["revision"].as_u64().unwrap();
    agent.wait_version(rev2, Duration::from_secs(5)).await;

    // A change made while the agent is away is picked up when it returns.
    agent.stop();
    let (_, v3) = api
        .apply_policy(&simple_policy(
            "edge",
            "while-away",
            "devs",
            "127.0.0.1:5432",
        ))
        .await;
    let rev3 = v3["revision"].as_u64().unwrap();
    agent.start_again().await;
    agent.wait_version(rev3, Duration::from_secs(30)).await;
    let agents = api.get_ok("/api/v1/agents").await;
    assert_eq!(agents["agents"][0]["connected"], true, "{agents}");
    assert_eq!(
        agents["agents"][0]["snapshot_version"].as_u64(),
        Some(rev3),
        "{agents}"
    );
}

#[tokio::test]
async fn agent_restarted_while_the_control_plane_is_down_enforces_the_cached_snapshot() {
    let mut cp = ControlPlaneProc::start().await;
    let mut agent = AgentProc::start(&mut cp, "edge").await;
    let (_, v) = cp
        .api()
        .apply_policy(&simple_policy("edge", "orders", "devs", "127.0.0.1:5432"))
        .await;
    let rev = v["revision"].as_u64().unwrap();
    agent.wait_version(rev, Duration::from_secs(5)).await;
    let granted = cp.user_token("alice", &["devs"]).await;
    let not_granted = cp.user_token("mallory", &["others"]).await;

    cp.stop();
    agent.stop();
    agent.start_again().await;
    let status = agent.status().await.expect("status");
    assert_eq!(status["snapshot"]["state"], "valid", "{status}");
    assert_eq!(
        status["snapshot"]["version"].as_u64(),
        Some(rev),
        "{status}"
    );
    assert_eq!(status["control_plane"]["connected"], false, "{status}");

    // Enforcing means deciding with that policy: the granted subject gets
    // past authorization (this resource has no credential, so that is as far
    // as it goes), the other one is refused by policy.
    let (_, _, err) = psql_via_agent(agent.pg_port, "orders", &granted, "select 1");
    assert!(err.contains("no usable credential"), "{err}");
    let (ok, _, err) = psql_via_agent(agent.pg_port, "orders", &not_granted, "select 1");
    assert!(!ok && err.contains("no policy grants \"mallory\""), "{err}");
}

#[tokio::test]
async fn corrupt_snapshot_cache_makes_the_agent_refuse_clients() {
    let mut cp = ControlPlaneProc::start().await;
    let mut agent = AgentProc::start(&mut cp, "edge").await;
    let (_, v) = cp
        .api()
        .apply_policy(&simple_policy("edge", "orders", "devs", "127.0.0.1:5432"))
        .await;
    agent
        .wait_version(v["revision"].as_u64().unwrap(), Duration::from_secs(5))
        .await;
    let granted = cp.user_token("alice", &["devs"]).await;

    cp.stop();
    agent.stop();
    let path = agent.snapshot_file();
    let mut bytes = std::fs::read(&path).expect("snapshot cache exists");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    agent.start_again().await;
    let status = agent.status().await.expect("status");
    assert_eq!(status["snapshot"]["state"], "none", "{status}");
    assert!(
        status["snapshot"]["reason"]
            .as_str()
            .unwrap()
            .contains("cached snapshot unusable"),
        "{status}"
    );
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", agent.status_port))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let (ok, _, err) = psql_via_agent(agent.pg_port, "orders", &granted, "select 1");
    assert!(!ok && err.contains(NO_SNAPSHOT), "{err}");

    // When the control plane is back, the agent recovers a valid snapshot.
    cp.start_again().await;
    agent.wait_version(1, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_snapshot_older_than_the_allowed_staleness_is_no_longer_enforced() {
    let mut cp = ControlPlaneProc::start().await;
    let token = cp.join_token("edge").await;
    let mut agent = AgentProc::spawn_with_token(
        &cp.grpc_url(),
        "edge",
        Some(&token),
        vec!["--max-staleness".into(), "2s".into()],
    );
    agent.wait_ready().await;
    let granted = cp.user_token("alice", &["devs"]).await;
    let (_, v) = cp
        .api()
        .apply_policy(&simple_policy("edge", "orders", "devs", "127.0.0.1:5432"))
        .await;
    agent
        .wait_version(v["revision"].as_u64().unwrap(), Duration::from_secs(5))
        .await;

    cp.stop();
    eventually(
        Duration::from_secs(15),
        "the snapshot to go stale",
        || async {
            let s = agent.status().await?;
            (s["snapshot"]["state"] == "stale").then_some(())
        },
    )
    .await;
    let (ok, _, err) = psql_via_agent(agent.pg_port, "orders", &granted, "select 1");
    assert!(!ok && err.contains(NO_SNAPSHOT), "{err}");
}
