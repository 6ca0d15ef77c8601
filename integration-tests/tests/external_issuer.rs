//! Trusting an external OIDC issuer: discovery, JWKS, audience, groups
//! mapped to the admin role, and tokens accepted by agents. The issuer is a
//! second Sluice control plane, which is a real OIDC issuer (discovery
//! document and JWKS over HTTP).

use std::time::Duration;

use sluice_integration_tests::{ControlPlaneProc, datapath::DataPath, eventually, psql_via_agent};

fn issuer_config(dir: &std::path::Path, issuer: &str, audience: &str) -> String {
    let path = dir.join("issuers.toml");
    std::fs::write(
        &path,
        format!(
            "admin_groups = [\"platform-admins\"]\n\n[[issuers]]\nissuer = \"{issuer}\"\naudiences = [\"{audience}\"]\nalgorithms = [\"EdDSA\"]\ngroups_claim = \"groups\"\nleeway_seconds = 5\nrefresh = \"1s\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn tokens_from_a_configured_issuer_are_accepted_and_groups_map_to_admin() {
    let mut idp = ControlPlaneProc::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = issuer_config(tmp.path(), &idp.url(), "sluice");
    let mut cp = ControlPlaneProc::start_with(vec![("SLUICE_CONFIG".into(), config)]).await;

    let admin = idp
        .api()
        .post_ok(
            "/api/v1/tokens",
            serde_json::json!({"subject": "ops@idp", "groups": ["platform-admins"]}),
        )
        .await;
    let admin = admin["token"].as_str().unwrap().to_owned();
    let user = idp.user_token("dev@idp", &["developers"]).await;

    // Keys are fetched through discovery shortly after start.
    let api = cp.api();
    eventually(
        Duration::from_secs(15),
        "the external issuer's keys",
        || async {
            let (s, _) = api.with_token(Some(&admin)).get("/api/v1/whoami").await;
            s.is_success().then_some(())
        },
    )
    .await;
    let who = api.with_token(Some(&admin)).get_ok("/api/v1/whoami").await;
    assert_eq!(who["issuer"], idp.url());
    assert_eq!(who["subject"], "ops@idp");
    // Group membership from the issuer grants the admin role here.
    let (s, _) = api.with_token(Some(&admin)).get("/api/v1/resources").await;
    assert_eq!(s, 200);
    let (s, v) = api.with_token(Some(&user)).get("/api/v1/resources").await;
    assert_eq!(s, 403, "{v}");
    // The IdP's `admin` role is its own (it is an admin there), not ours:
    // only groups listed in `admin_groups` make an admin here.
    let idp_admin = idp
        .api()
        .post_ok(
            "/api/v1/tokens",
            serde_json::json!({"subject": "root@idp", "groups": ["developers"], "roles": ["admin"]}),
        )
        .await;
    let idp_admin = idp_admin["token"].as_str().unwrap().to_owned();
    let (s, _) = idp
        .api()
        .with_token(Some(&idp_admin))
        .get("/api/v1/resources")
        .await;
    assert_eq!(s, 200, "an admin at its own issuer");
    let who = api
        .with_token(Some(&idp_admin))
        .get_ok("/api/v1/whoami")
        .await;
    assert_eq!(who["roles"], serde_json::json!(["admin"]), "{who}");
    let (s, v) = api
        .with_token(Some(&idp_admin))
        .get("/api/v1/resources")
        .await;
    assert_eq!(s, 403, "{v}");
    // Nor can it change anything here: the resource it tried to create
    // does not exist for a real admin.
    let (s, v) = api
        .with_token(Some(&idp_admin))
        .put(
            "/api/v1/resources/sneaky",
            serde_json::json!({"kind": "postgres", "agent": "edge", "address": "127.0.0.1:5432", "database": "x"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = api
        .with_token(Some(&admin))
        .get("/api/v1/resources/sneaky")
        .await;
    assert_eq!(s, 404, "{v}");
    // The IdP's word that a token is a service account's is not believed:
    // only this control plane's own issuer mints service accounts.
    let bot = idp
        .api()
        .post_ok(
            "/api/v1/tokens",
            serde_json::json!({"subject": "ci-bot", "groups": ["developers"], "service_account": true}),
        )
        .await;
    let bot = bot["token"].as_str().unwrap().to_owned();
    let who = idp
        .api()
        .with_token(Some(&bot))
        .get_ok("/api/v1/whoami")
        .await;
    assert_eq!(who["kind"], "service_account", "at its own issuer: {who}");
    let who = api.with_token(Some(&bot)).get_ok("/api/v1/whoami").await;
    assert_eq!(who["kind"], "user", "{who}");
    // A token from an issuer nobody configured is refused.
    let mut stranger = ControlPlaneProc::start().await;
    let foreign = stranger.user_token("x", &["platform-admins"]).await;
    let (s, _) = api.with_token(Some(&foreign)).get("/api/v1/whoami").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn an_issuer_with_another_audience_is_not_trusted_for_ours() {
    let mut idp = ControlPlaneProc::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // Built-in tokens carry aud "sluice"; this control plane expects another.
    let config = issuer_config(tmp.path(), &idp.url(), "some-other-app");
    let mut cp = ControlPlaneProc::start_with(vec![("SLUICE_CONFIG".into(), config)]).await;
    let token = idp.user_token("ops@idp", &["platform-admins"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s, v) = cp
        .api()
        .with_token(Some(&token))
        .get("/api/v1/whoami")
        .await;
    assert_eq!(s, 401, "{v}");
    assert!(v.to_string().contains("audience"), "{v}");
}

/// A data path whose control plane trusts `idp` (leeway 5 s), once its
/// agent accepts the IdP's tokens; with an hour's token of `dev@idp` in
/// `devs`, and what it printed for `SELECT current_user`.
async fn data_path_trusting(
    idp: &mut ControlPlaneProc,
) -> (DataPath, tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let config = issuer_config(tmp.path(), &idp.url(), "sluice");
    let dp = DataPath::start_full(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        Vec::new(),
        vec![("SLUICE_CONFIG".into(), config)],
    )
    .await;
    let token = idp.user_token("dev@idp", &["devs"]).await;
    let (ok, out, err) = eventually(
        Duration::from_secs(20),
        "the agent to trust the external issuer",
        || async {
            let r = psql_via_agent(dp.agent.pg_port, "app", &token, "SELECT current_user");
            r.0.then_some(r)
        },
    )
    .await;
    assert!(ok, "{err}");
    (dp, tmp, token, out)
}

#[tokio::test]
async fn agents_accept_tokens_of_external_issuers_from_their_snapshot() {
    let mut idp = ControlPlaneProc::start().await;
    let (_dp, _config, _, current_user) = data_path_trusting(&mut idp).await;
    assert_eq!(current_user.trim(), "app");
}

#[tokio::test]
async fn a_session_ends_when_its_token_does() {
    use sluice_integration_tests::rawpg::{RawSession, errors, first_column, query};
    let mut idp = ControlPlaneProc::start().await;
    // This issuer's leeway is 5 s: its tokens verify until `exp` + 5 s.
    let (dp, _config, lasting, _) = data_path_trusting(&mut idp).await;
    let brief = idp
        .api()
        .post_ok(
            "/api/v1/tokens",
            serde_json::json!({"subject": "brief@idp", "groups": ["devs"], "ttl": "3s"}),
        )
        .await;
    let brief = brief["token"].as_str().unwrap().to_owned();
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &brief).await;
    let mut other = RawSession::connect(dp.agent.pg_port, "app", &lasting).await;
    s.send(&query("SELECT 'working'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["working"]);
    // Idle in a transaction when the token runs out.
    s.send(&query(
        "BEGIN; UPDATE items SET name = 'pending' WHERE id = 7",
    ))
    .await;
    assert_eq!(errors(&s.until(b'Z').await), "");
    let open_transactions =
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'";
    assert_eq!(dp.target(open_transactions), "1");
    let ended = tokio::time::timeout(Duration::from_secs(30), s.until_or_closed(b'E'))
        .await
        .expect("the session ended within 30 s");
    let text = errors(&ended);
    assert!(
        text.contains("57P01") && text.contains("token has expired"),
        "{text}"
    );
    // The target ended its side too: the transaction was rolled back.
    eventually(
        Duration::from_secs(10),
        "the target to roll back",
        || async { (dp.target(open_transactions) == "0").then_some(()) },
    )
    .await;
    assert_eq!(dp.target("SELECT name FROM items WHERE id = 7"), "item 7");
    // Sessions with time left go on.
    other.send(&query("SELECT 'still here'")).await;
    assert_eq!(first_column(&other.until(b'Z').await), ["still here"]);
}

#[tokio::test]
async fn issuer_key_rotation_is_picked_up_by_refresh() {
    let mut idp = ControlPlaneProc::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = issuer_config(tmp.path(), &idp.url(), "sluice");
    let mut cp = ControlPlaneProc::start_with(vec![("SLUICE_CONFIG".into(), config)]).await;
    let api = cp.api();
    let old = idp.user_token("ops@idp", &["platform-admins"]).await;
    eventually(
        Duration::from_secs(15),
        "the issuer's first key",
        || async {
            api.with_token(Some(&old))
                .get("/api/v1/whoami")
                .await
                .0
                .is_success()
                .then_some(())
        },
    )
    .await;

    // The IdP loses its keys and comes back at the same URL with new ones.
    idp.stop();
    std::fs::remove_dir_all(idp.data_dir()).unwrap();
    idp.start_again().await;
    let (ok, new, err) = idp.run_offline(&[
        "token",
        "issue",
        "--subject",
        "ops@idp",
        "--group",
        "platform-admins",
    ]);
    assert!(ok, "{err}");
    let new = new.trim().to_owned();

    eventually(
        Duration::from_secs(15),
        "the rotated key to be trusted",
        || async {
            api.with_token(Some(&new))
                .get("/api/v1/whoami")
                .await
                .0
                .is_success()
                .then_some(())
        },
    )
    .await;
    // Tokens signed by the retired key no longer verify.
    let (s, _) = api.with_token(Some(&old)).get("/api/v1/whoami").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn agents_believe_service_accounts_only_from_the_built_in_issuer() {
    let mut idp = ControlPlaneProc::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = issuer_config(tmp.path(), &idp.url(), "sluice");
    let mut dp = DataPath::start_full(
        sluice_integration_tests::datapath::DEFAULT_RULES,
        Vec::new(),
        vec![("SLUICE_CONFIG".into(), config)],
    )
    .await;
    // Granted to the service account `ci-bot` only.
    let doc = dp
        .policy("devs", sluice_integration_tests::datapath::DEFAULT_RULES)
        .replace("groups: [devs]", "service_accounts: [ci-bot]");
    assert!(doc.contains("service_accounts: [ci-bot]"), "{doc}");
    let (s, v) = dp.cp.api().apply_policy(&doc).await;
    assert!(s.is_success(), "{v}");
    dp.agent
        .wait_version(v["revision"].as_u64().unwrap(), Duration::from_secs(10))
        .await;
    let bot = serde_json::json!({"subject": "ci-bot", "service_account": true});
    let own = dp.cp.api().post_ok("/api/v1/tokens", bot.clone()).await;
    let own = own["token"].as_str().unwrap().to_owned();
    let (ok, out, err) = psql_via_agent(dp.agent.pg_port, "app", &own, "SELECT current_user");
    assert!(ok, "the control plane's own service account: {err}");
    assert_eq!(out.trim(), "app");
    let (ok, _, err) = psql_via_agent(
        dp.agent.pg_port,
        "app",
        &own,
        "INSERT INTO notes (body) VALUES ('own ci-bot')",
    );
    assert!(ok, "{err}");
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body = 'own ci-bot'"),
        "1"
    );

    // The same claims from the external issuer: a user named ci-bot, whom
    // nothing grants (once the agent trusts that issuer at all).
    let forged = idp.api().post_ok("/api/v1/tokens", bot).await;
    let forged = forged["token"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(20),
        "the agent to verify the external issuer's token",
        || async {
            let (ok, _, err) = psql_via_agent(
                dp.agent.pg_port,
                "app",
                &forged,
                "INSERT INTO notes (body) VALUES ('forged ci-bot')",
            );
            assert!(
                !ok,
                "an external issuer's service-account claim was believed"
            );
            err.contains("no policy grants").then_some(())
        },
    )
    .await;
    // The target confirms: nothing the forged token sent ran.
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body = 'forged ci-bot'"),
        "0"
    );
}
