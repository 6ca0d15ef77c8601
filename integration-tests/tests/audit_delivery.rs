//! Audit events survive a control-plane outage (and an agent restart in
//! the middle of it) and are delivered exactly once when it comes back.

use std::{collections::HashSet, time::Duration};

use sluice_integration_tests::{
    AgentProc, ControlPlaneProc, eventually, psql_via_agent, simple_policy,
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
