//! The REST API contract (`docs/api.md`) against a real control plane:
//! authentication and authorization, policy validation with located errors,
//! the policy version round trip, and the promise that a credential's secret
//! never comes back out (API, logs, CLI, database file) and survives a
//! master key rotation.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_integration_tests::{
    AgentProc, ControlPlaneProc, SluiceCli, eventually, psql_via_agent,
};

// ------------------------------------------------------------------ helpers

fn b64_json(part: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url JWT segment");
    serde_json::from_slice(&bytes).expect("JWT segment is JSON")
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// (header, claims, signature) of a compact JWT.
fn split_jwt(token: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWT");
    (b64_json(parts[0]), b64_json(parts[1]), parts[2].to_owned())
}

fn assert_unauthorized(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
}

/// The kid of the control plane's built-in token issuer.
async fn issuer_kid(cp: &ControlPlaneProc) -> String {
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", cp.url()))
        .await
        .expect("GET jwks")
        .json()
        .await
        .expect("jwks is JSON");
    jwks["keys"][0]["kid"].as_str().expect("kid").to_owned()
}

/// A value that is easy to find and impossible to produce by accident.
fn canary(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("canary-{tag}-{}-{nanos:x}", std::process::id())
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that none of the SQLite files holds `secret` in plaintext;
/// returns how many files were inspected.
fn assert_not_in_database_files(data_dir: &Path, secrets: &[&str]) -> usize {
    let mut inspected = 0;
    for name in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
        let path = data_dir.join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        inspected += 1;
        for secret in secrets {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "{} holds a credential secret in plaintext",
                path.display()
            );
        }
    }
    assert!(
        data_dir.join("sluice.db").exists(),
        "expected the SQLite database in {}",
        data_dir.display()
    );
    inspected
}

const RESOURCE_AND_POLICY: &str = "resources:
  - name: orders
    kind: postgres
    agent: edge
    address: 127.0.0.1:5432
    database: orders
    credential: orders-cred
    labels: { env: prod }
policies:
  - name: devs-on-orders
    subjects: { groups: [devs] }
    resources: { names: [orders] }
    rules:
      - allow: { sql: { statements: [read] } }
";

// ------------------------------------------------------------ authentication

#[tokio::test]
async fn request_without_a_token_is_401_with_www_authenticate() {
    let cp = ControlPlaneProc::start().await;
    let http = reqwest::Client::new();
    let requests = [
        ("/api/v1/whoami", None),
        ("/api/v1/resources", None),
        ("/api/v1/resources", Some("Basic dGVzdDp0ZXN0")),
        ("/api/v1/credentials", Some("Bearer ")),
    ];
    for (path, authorization) in requests {
        let mut req = http.get(format!("{}{path}", cp.url()));
        if let Some(value) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{path}: 401 without WWW-Authenticate"));
        assert!(challenge.starts_with("Bearer"), "{path}: {challenge}");
        let body: Value = resp.json().await.expect("JSON error body");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Bearer <token>")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn garbage_token_is_401() {
    let mut cp = ControlPlaneProc::start().await;
    let api = cp.api();
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30.AAAA"] {
        let (status, body) = api.with_token(Some(garbage)).get("/api/v1/whoami").await;
        assert_unauthorized(status, &body, garbage);
        assert!(
            !body.to_string().contains(garbage),
            "the error must not echo the token: {body}"
        );
    }
}

#[tokio::test]
async fn expired_token_is_401() {
    let mut cp = ControlPlaneProc::start().await;
    let (ok, out, err) = cp.run_offline(&[
        "token",
        "issue",
        "--subject",
        "short-lived",
        "--role",
        "admin",
        "--ttl",
        "1s",
    ]);
    assert!(ok, "token issue failed: {err}");
    let token = out.trim().to_owned();
    let exp = split_jwt(&token).1["exp"].as_u64().expect("exp");
    let api = cp.api().with_token(Some(&token));
    let (status, body) = api.get("/api/v1/whoami").await;
    assert_eq!(status, StatusCode::OK, "a fresh token works: {body}");

    // The built-in issuer allows 30 s of clock-skew leeway past `exp`, so
    // this waits a little over half a minute.
    let start = Instant::now();
    let (status, body) = eventually(Duration::from_secs(45), "the token to expire", || async {
        let (status, body) = api.get("/api/v1/whoami").await;
        if status == StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return None;
        }
        Some((status, body))
    })
    .await;
    assert_unauthorized(status, &body, "expired token");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{body}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    assert!(
        now >= exp,
        "refused {:?} after minting but before `exp`",
        start.elapsed()
    );
}

#[tokio::test]
async fn non_admin_token_gets_403_on_admin_endpoints_and_200_on_whoami() {
    let mut cp = ControlPlaneProc::start().await;
    let token = cp.user_token("alice", &["devs"]).await;
    let api = cp.api().with_token(Some(&token));

    let (status, me) = api.get("/api/v1/whoami").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["subject"], "alice", "{me}");
    assert_eq!(me["groups"], json!(["devs"]), "{me}");
    assert_eq!(me["kind"], "user", "{me}");
    assert_eq!(me["issuer"], cp.url(), "{me}");

    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/api/v1/resources", None),
        (Method::GET, "/api/v1/resources/orders", None),
        (Method::GET, "/api/v1/credentials", None),
        (Method::GET, "/api/v1/policies", None),
        (Method::GET, "/api/v1/agents", None),
        (Method::GET, "/api/v1/audit", None),
        (
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"subject": "alice", "roles": ["admin"]})),
        ),
        (
            Method::POST,
            "/api/v1/join-tokens",
            Some(json!({"agent": "edge"})),
        ),
        (
            Method::PUT,
            "/api/v1/credentials/x",
            Some(json!({"username": "u", "secret": "s"})),
        ),
        (
            Method::PUT,
            "/api/v1/resources/x",
            Some(json!({"kind": "postgres", "agent": "a", "address": "h:1", "database": "d"})),
        ),
        (Method::DELETE, "/api/v1/resources/x", None),
    ];
    for (method, path, body) in calls {
        let (status, answer) = api
            .send(
                method.clone(),
                path,
                body.map(sluice_integration_tests::api::Body::Json),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(
            answer["error"]["code"], "forbidden",
            "{method} {path}: {answer}"
        );
    }
    let (status, body) = api.apply_policy(RESOURCE_AND_POLICY).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "policy apply: {body}");
    assert!(
        cp.api().get_ok("/api/v1/policies").await["versions"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

#[tokio::test]
async fn token_signed_by_another_control_plane_is_401() {
    let mut first = ControlPlaneProc::start().await;
    // Same issuer URL, so only the signing key tells the tokens apart.
    let mut second =
        ControlPlaneProc::start_with(vec![("SLUICE_PUBLIC_URL".into(), first.url())]).await;
    let foreign = second.admin_token();
    assert_eq!(split_jwt(&foreign).1["iss"], first.url());
    let (status, body) = second.api().get("/api/v1/whoami").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the token is good where it was minted: {body}"
    );

    let api = first.api();
    let (status, body) = api.with_token(Some(&foreign)).get("/api/v1/whoami").await;
    assert_unauthorized(status, &body, "foreign key id");

    // Claiming the first control plane's key id does not help: the
    // signature does not verify with that key.
    let (mut header, _, _) = split_jwt(&foreign);
    header["kid"] = json!(issuer_kid(&first).await);
    let parts: Vec<&str> = foreign.split('.').collect();
    let relabelled = format!("{}.{}.{}", b64(&header), parts[1], parts[2]);
    let (status, body) = api
        .with_token(Some(&relabelled))
        .get("/api/v1/resources")
        .await;
    assert_unauthorized(status, &body, "foreign signature under our kid");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("signature")),
        "{body}"
    );
}

#[tokio::test]
async fn alg_none_token_is_401() {
    let mut cp = ControlPlaneProc::start().await;
    let admin = cp.admin_token();
    let (_, claims, signature) = split_jwt(&admin);
    let kid = issuer_kid(&cp).await;
    let api = cp.api();
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
        for sig in ["", signature.as_str()] {
            let token = format!("{}.{}.{sig}", b64(&header), b64(&claims));
            let (status, body) = api.with_token(Some(&token)).get("/api/v1/resources").await;
            assert_unauthorized(
                status,
                &body,
                &format!("alg {alg}, signature {:?}", !sig.is_empty()),
            );
        }
    }
}

#[tokio::test]
async fn token_with_tampered_claims_is_401() {
    let mut cp = ControlPlaneProc::start().await;
    let token = cp.user_token("mallory", &["devs"]).await;
    let (_, mut claims, _) = split_jwt(&token);
    claims["roles"] = json!(["admin"]);
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let (status, body) = cp
        .api()
        .with_token(Some(&forged))
        .get("/api/v1/resources")
        .await;
    assert_unauthorized(status, &body, "self-promoted token");
}

// ------------------------------------------------------------------ policies

#[tokio::test]
async fn unknown_statement_kind_is_400_invalid_policy_with_path_and_line() {
    let mut cp = ControlPlaneProc::start().await;
    let api = cp.api();
    let doc = "resources:
  - name: orders
    kind: postgres
    agent: edge
    address: 127.0.0.1:5432
    database: orders
policies:
  - name: devs-on-orders
    subjects: { groups: [devs] }
    resources: { names: [orders] }
    rules:
      - allow: { sql: { statements: [read] } }
      - deny:
          sql:
            statements: [ddl, dorp]
";
    let (status, body) = api.apply_policy(doc).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_policy", "{body}");
    let details = body["error"]["details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "{body}");
    assert_eq!(
        details[0]["path"], "policies[0].rules[1].deny.sql.statements[1]",
        "{body}"
    );
    assert_eq!(details[0]["line"], 15, "{body}");
    assert!(
        details[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown statement kind `dorp`")),
        "{body}"
    );

    // Nothing was applied, not even the resources.
    assert!(
        api.get_ok("/api/v1/policies").await["versions"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    assert!(
        api.get_ok("/api/v1/resources").await["resources"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

#[tokio::test]
async fn yaml_syntax_error_is_400_invalid_policy_with_the_line() {
    let mut cp = ControlPlaneProc::start().await;
    let api = cp.api();
    let doc = "policies:
  - name: devs-on-orders
    subjects: { groups: [devs] }
    resources: { names: [orders }
    rules:
      - allow: { sql: { statements: [read] } }
";
    let (status, body) = api.apply_policy(doc).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_policy", "{body}");
    let details = body["error"]["details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "{body}");
    assert_eq!(details[0]["line"], 4, "{body}");
    assert!(
        details[0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        api.get_ok("/api/v1/policies").await["versions"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

#[tokio::test]
async fn policy_apply_list_show_diff_round_trip() {
    let mut cp = ControlPlaneProc::start().await;
    let api = cp.api();
    let v1 = RESOURCE_AND_POLICY.to_owned();
    let v2 = v1.replace("statements: [read] }", "statements: [read, transaction] }");
    assert_ne!(v1, v2);

    let send = |doc: String, comment: &'static str| {
        let api = api.clone();
        async move {
            api.send(
                Method::POST,
                &format!("/api/v1/policies?comment={comment}"),
                Some(sluice_integration_tests::api::Body::Text(doc)),
            )
            .await
        }
    };
    let (status, first) = send(v1.clone(), "first").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["current"], true, "{first}");
    assert_eq!(first["policies"], 1, "{first}");
    assert_eq!(first["resources"], 1, "{first}");
    assert_eq!(first["comment"], "first", "{first}");
    assert_eq!(first["created_by"], "test-admin", "{first}");

    let (status, second) = send(v2.clone(), "second").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["version"], 2, "{second}");
    assert!(
        second["revision"].as_u64() > first["revision"].as_u64(),
        "{first} {second}"
    );

    // Applying the current document again changes nothing.
    let (status, again) = send(v2.clone(), "again").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["version"], 2, "{again}");
    assert_eq!(again["unchanged"], true, "{again}");

    let list = api.get_ok("/api/v1/policies").await;
    let versions = list["versions"].as_array().expect("versions");
    let summary: Vec<(Value, Value, Value)> = versions
        .iter()
        .map(|v| {
            (
                v["version"].clone(),
                v["current"].clone(),
                v["comment"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!(1), json!(false), json!("first")),
            (json!(2), json!(true), json!("second"))
        ],
        "{list}"
    );

    let current = api.get_ok("/api/v1/policies/current").await;
    assert_eq!(current["version"], 2, "{current}");
    assert_eq!(
        current["document"], v2,
        "the document comes back exactly as applied"
    );
    let old = api.get_ok("/api/v1/policies/1").await;
    assert_eq!(old["document"], v1);
    assert_eq!(old["current"], false, "{old}");
    assert_eq!(old["sha256"], first["sha256"], "{old}");

    for path in [
        "/api/v1/policies/diff?from=1",
        "/api/v1/policies/diff?from=1&to=2",
    ] {
        let diff = api.get_ok(path).await;
        assert_eq!(
            (diff["from"].clone(), diff["to"].clone()),
            (json!(1), json!(2)),
            "{diff}"
        );
        let text = diff["diff"].as_str().expect("diff text");
        assert!(
            text.contains("--- version 1") && text.contains("+++ version 2"),
            "{text}"
        );
        assert!(
            text.contains("-      - allow: { sql: { statements: [read] } }"),
            "{text}"
        );
        assert!(
            text.contains("+      - allow: { sql: { statements: [read, transaction] } }"),
            "{text}"
        );
    }
    let same = api.get_ok("/api/v1/policies/diff?from=2").await;
    assert_eq!(same["diff"], "", "{same}");

    let (status, body) = api.get("/api/v1/policies/9").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The document's resources were registered.
    let orders = api.get_ok("/api/v1/resources/orders").await;
    assert_eq!(orders["agent"], "edge", "{orders}");
    assert_eq!(orders["credential"], "orders-cred", "{orders}");
}

// --------------------------------------------------------------- credentials

#[tokio::test]
async fn credential_secrets_never_leave_the_vault() {
    let mut cp = ControlPlaneProc::start().await;
    let api = cp.api();
    let first = canary("first");
    let second = canary("second");
    let secrets = [first.as_str(), second.as_str()];

    let applied = api.apply_policy(RESOURCE_AND_POLICY).await;
    assert!(applied.0.is_success(), "{}", applied.1);
    let mut agent = AgentProc::start(&mut cp, "edge").await;
    let before = agent.wait_ready().await;

    let (status, set) = api
        .put(
            "/api/v1/credentials/orders-cred",
            json!({"username": "app", "secret": first}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["version"], 1, "{set}");
    let (status, rotated) = api
        .post(
            "/api/v1/credentials/orders-cred/rotate",
            json!({"secret": second}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["version"], 2, "{rotated}");
    assert_eq!(rotated["username"], "app", "{rotated}");
    for answer in [&set, &rotated] {
        for secret in secrets {
            assert!(
                !answer.to_string().contains(secret),
                "a write answered with the secret: {answer}"
            );
        }
    }

    // The rotated secret travels to the agent in its snapshot (setting and
    // rotating each bump the configuration revision)...
    agent
        .wait_version(before + 2, Duration::from_secs(10))
        .await;
    // ...and a refused connection leaves an audit event to list.
    let (ok, _, stderr) = psql_via_agent(agent.pg_port, "orders", "not-a-token", "select 1");
    assert!(!ok, "a bad token must be refused: {stderr}");
    eventually(
        Duration::from_secs(15),
        "the refused session in the audit log",
        || async {
            let audit = api.get_ok("/api/v1/audit").await;
            audit["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
                .then_some(())
        },
    )
    .await;

    let http = reqwest::Client::new();
    let token = cp.admin_token();
    let paths = [
        "/api/v1/whoami",
        "/api/v1/resources",
        "/api/v1/resources/orders",
        "/api/v1/credentials",
        "/api/v1/policies",
        "/api/v1/policies/current",
        "/api/v1/policies/1",
        "/api/v1/policies/diff?from=1",
        "/api/v1/agents",
        "/api/v1/audit",
        "/api/v1/audit?limit=1000&after=0",
        "/api/v1/openapi.json",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/metrics",
        "/healthz",
        "/readyz",
        "/",
    ];
    for path in paths {
        let resp = http
            .get(format!("{}{path}", cp.url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "GET {path}: {status} {text}");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "GET {path} returned a credential secret"
            );
        }
    }
    let listed = api.get_ok("/api/v1/credentials").await;
    assert_eq!(listed["credentials"][0]["name"], "orders-cred", "{listed}");
    assert_eq!(listed["credentials"][0]["version"], 2, "{listed}");

    let cli = SluiceCli::new(&cp.url(), Some(&token));
    for args in [
        &["credentials", "list"][..],
        &["credentials", "list", "--json"][..],
    ] {
        let out = cli.run(args).ok();
        assert!(
            out.stdout.contains("orders-cred"),
            "sluice {args:?} should list the credential:\n{}",
            out.stdout
        );
        for secret in secrets {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "sluice {args:?} printed a secret"
            );
        }
    }

    for secret in secrets {
        assert!(
            !cp.logs().contains(secret),
            "the control plane logged a credential secret"
        );
        assert!(
            !agent.logs().contains(secret),
            "the agent logged a credential secret"
        );
    }
    assert!(
        !cp.logs().contains(&token),
        "the control plane logged a bearer token"
    );
    assert!(assert_not_in_database_files(&cp.data_dir(), &secrets) >= 1);
    // Once more after shutdown, when the write-ahead log has been folded
    // into the main file.
    cp.stop();
    assert_not_in_database_files(&cp.data_dir(), &secrets);
    for secret in secrets {
        assert!(
            !cp.logs().contains(secret),
            "the control plane logged a credential secret on shutdown"
        );
    }
}

#[tokio::test]
async fn master_key_rotation_rewraps_credentials_and_the_old_key_is_refused() {
    let mut cp = ControlPlaneProc::start().await;
    let api = cp.api();
    let applied = api.apply_policy(RESOURCE_AND_POLICY).await;
    assert!(applied.0.is_success(), "{}", applied.1);
    let (status, set) = api
        .put(
            "/api/v1/credentials/orders-cred",
            json!({"username": "app", "secret": canary("rotate")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");

    cp.stop();
    let new_key = cp.dir.path().join("new-master.key");
    let new_key_arg = new_key.to_str().expect("UTF-8 path");
    let (ok, out, err) = cp.run_offline(&["rotate-master-key", "--new-key-file", new_key_arg]);
    assert!(ok, "rotate-master-key failed:\n{out}\n{err}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&new_key)
            .expect("new key file")
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the new master key must be private to its owner"
    );
    // One credential plus the CA, snapshot-signing, token-issuer,
    // audit-seal and mask keys.
    assert!(out.contains("re-wrapped 6 data keys"), "{out}");
    let new_id = out
        .split("under master key ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no key id in: {out}"))
        .to_owned();

    // The old key (still in the data directory) no longer opens anything.
    let (ok, output) = cp.serve_until_exit(Duration::from_secs(20));
    assert!(
        !ok,
        "the control plane started with the old master key:\n{output}"
    );
    assert!(
        output.contains(&format!("sealed with master key {new_id}"))
            && output.contains("configure the right key"),
        "the start-up error should name the key mismatch:\n{output}"
    );

    cp.set_env("SLUICE_MASTER_KEY_FILE", new_key_arg);
    cp.start_again().await;
    let api = cp.api();
    let listed = api.get_ok("/api/v1/credentials").await;
    assert_eq!(listed["credentials"][0]["name"], "orders-cred", "{listed}");
    assert_eq!(listed["credentials"][0]["version"], 1, "{listed}");

    // Building the agent's snapshot opens the credential: a valid snapshot
    // with the resource proves the re-wrapped secret still decrypts.
    let agent = AgentProc::start(&mut cp, "edge").await;
    let status = agent.status().await.expect("agent status");
    assert_eq!(
        status["snapshot"]["resources"],
        json!(["orders"]),
        "{status}"
    );
    assert!(!cp.logs().contains("could not be opened"), "{}", cp.logs());
}
