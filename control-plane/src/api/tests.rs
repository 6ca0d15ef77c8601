//! Router tests in memory (`tower::ServiceExt::oneshot`, no sockets) against
//! a control plane on a throwaway SQLite database.
//!
//! The OpenAPI document is held to the router both ways: every route must be
//! documented, every documented operation must exist, and the responses the
//! handlers actually produce must match the documented schemas.

use std::{collections::BTreeSet, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{AppState, MAX_BODY, OPENAPI, router};
use crate::{ControlPlane, config::CommonArgs, identity::TokenRequest};

/// Every route `router()` serves: (method, OpenAPI path, needs a token).
/// A route added to the router must be added here and documented.
const ROUTES: &[(&str, &str, bool)] = &[
    ("GET", "/", false),
    ("GET", "/healthz", false),
    ("GET", "/readyz", false),
    ("GET", "/metrics", false),
    ("GET", "/.well-known/openid-configuration", false),
    ("GET", "/.well-known/jwks.json", false),
    ("GET", "/api/v1/openapi.json", false),
    ("GET", "/api/v1/whoami", true),
    ("POST", "/api/v1/tokens", true),
    ("GET", "/api/v1/resources", true),
    ("GET", "/api/v1/resources/{name}", true),
    ("PUT", "/api/v1/resources/{name}", true),
    ("DELETE", "/api/v1/resources/{name}", true),
    ("GET", "/api/v1/credentials", true),
    ("PUT", "/api/v1/credentials/{name}", true),
    ("POST", "/api/v1/credentials/{name}/rotate", true),
    ("GET", "/api/v1/policies", true),
    ("POST", "/api/v1/policies", true),
    ("GET", "/api/v1/policies/diff", true),
    ("POST", "/api/v1/policies/explain", true),
    ("GET", "/api/v1/policies/{version}", true),
    ("GET", "/api/v1/agents", true),
    ("POST", "/api/v1/join-tokens", true),
    ("GET", "/api/v1/audit", true),
    ("GET", "/api/v1/audit/export", true),
    ("GET", "/api/v1/audit/seal-key", true),
    ("GET", "/api/v1/sessions", true),
    ("GET", "/api/v1/sessions/{id}", true),
    ("GET", "/api/v1/sessions/{id}/verify", true),
    ("POST", "/api/v1/sessions/{id}/kill", true),
    ("GET", "/api/v1/approvals", true),
    ("GET", "/api/v1/approvals/events", true),
    ("GET", "/api/v1/approvals/{id}", true),
    ("POST", "/api/v1/approvals/{id}/approve", true),
    ("POST", "/api/v1/approvals/{id}/deny", true),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

const POLICY: &str = r#"resources:
  - name: orders
    kind: postgres
    agent: edge
    address: 127.0.0.1:5432
    database: app
policies:
  - name: devs-on-orders
    subjects: { groups: [devs] }
    resources: { names: [orders] }
    rules:
      - deny: { sql: { statements: [ddl] } }
      - allow: { sql: { statements: [read] } }
"#;

/// A control plane on a fresh SQLite database, its router and an admin token.
struct Harness {
    _dir: tempfile::TempDir,
    cp: AppState,
    app: Router,
    admin: String,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let common = CommonArgs {
            data_dir: dir.path().join("data"),
            database_url: None,
            master_key_file: None,
            config: None,
            public_url: Some("https://sluice.test".to_owned()),
            http_addr: "127.0.0.1:0".parse().expect("address"),
            blob_dir: None,
            // Small, so the tests' recorded results become blobs.
            blob_threshold: crate::config::Limit(Some(256)),
        };
        let cp = ControlPlane::open(&common, Duration::from_secs(3600))
            .await
            .expect("open the control plane");
        let app = router(cp.clone());
        let mut h = Self {
            _dir: dir,
            cp,
            app,
            admin: String::new(),
        };
        h.admin = h.token("test-admin", &[], &["admin"]);
        h
    }

    fn token(&self, subject: &str, groups: &[&str], roles: &[&str]) -> String {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        self.cp
            .identity
            .issue(&TokenRequest {
                subject: subject.to_owned(),
                groups: strings(groups),
                roles: strings(roles),
                ttl: Duration::from_secs(600),
                service_account: false,
            })
            .expect("issue a token")
            .0
    }

    async fn send(&self, req: Request<Body>) -> Response {
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("read the body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            json,
        }
    }

    /// A request with `token` (if any) and a body sent with `content_type`.
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Response {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.call(method, uri, Some(&self.admin), body).await
    }
}

#[derive(Debug)]
struct Response {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    json: Value,
}

impl Response {
    /// Asserts the API's error shape with `code`; returns the message.
    fn error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..]),
            "errors are JSON: {}",
            self.text
        );
        assert_eq!(self.json["error"]["code"], code, "{}", self.text);
        let message = self.json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "error without a message: {}",
            self.text
        );
        let keys: Vec<&String> = self.json["error"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert!(
            keys.iter()
                .all(|k| ["code", "message", "details"].contains(&k.as_str())),
            "unexpected error fields: {}",
            self.text
        );
        message.to_owned()
    }
}

/// Asserts that `resp` is a documented response of `method path` and
/// matches its JSON schema.
fn check_documented(doc: &Value, method: &str, path: &str, resp: &Response) {
    let op = &doc["paths"][path][method.to_lowercase()];
    let status = resp.status.as_u16().to_string();
    let mut documented = &op["responses"][&status];
    if let Some(r) = documented.get("$ref").and_then(Value::as_str) {
        documented = doc.pointer(&r[1..]).expect("response $ref");
    }
    assert!(
        !documented.is_null(),
        "{method} {path}: status {status} is not documented ({})",
        resp.text
    );
    if let Some(schema) = documented.pointer("/content/application~1json/schema") {
        let mut errors = Vec::new();
        conforms(doc, schema, &resp.json, "$", &mut errors);
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: {errors:#?}\n{}",
            resp.json
        );
    } else {
        assert!(
            documented.get("content").is_none() || resp.status.is_success(),
            "{method} {path} {status}"
        );
    }
}

fn openapi() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is valid JSON")
}

/// (METHOD, path) of every operation in the document.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Paths registered in `router()`, read from its source so that a route
/// added there without being listed in [`ROUTES`] fails the test.
fn routes_in_source() -> BTreeSet<String> {
    let source = include_str!("mod.rs");
    let start = source.find("pub fn router(").expect("router() in mod.rs");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").expect("end of router()")];
    let nest = ".nest(\"/api/v1\", api)";
    assert!(
        body.contains(nest),
        "router() no longer nests `api` under /api/v1: update this test"
    );
    let split = body.find("let api = ").expect("the api router");
    let api_end = split + body[split..].find(';').expect("end of the api router");
    let paths = |text: &str, prefix: &str| -> Vec<String> {
        text.split(".route(")
            .skip(1)
            .filter_map(|chunk| {
                let rest = chunk.trim_start().strip_prefix('"')?;
                Some(format!("{prefix}{}", &rest[..rest.find('"')?]))
            })
            .collect()
    };
    let mut all: BTreeSet<String> = paths(&body[split..api_end], "/api/v1")
        .into_iter()
        .collect();
    all.extend(paths(&body[..split], ""));
    all.extend(paths(&body[api_end..], ""));
    all
}

/// A concrete URI for a templated path.
fn concrete(path: &str) -> String {
    path.replace("{name}", "probe")
        .replace("{version}", "1")
        .replace("{id}", "probe")
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes_of_the_router() {
    let doc = openapi();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "not OpenAPI 3.1: {}",
        doc["openapi"]
    );

    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let documented = documented_operations(&doc);
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&listed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "openapi.json documents operations the router does not have: {unrouted:?}"
    );

    let listed_paths: BTreeSet<String> = ROUTES.iter().map(|(_, p, _)| (*p).to_owned()).collect();
    assert_eq!(
        routes_in_source(),
        listed_paths,
        "router() and ROUTES disagree on the paths"
    );

    // The router agrees on methods: listed ones are routed, others get 405.
    let h = Harness::new().await;
    for path in &listed_paths {
        for method in METHODS {
            let routed = listed.contains(&((*method).to_owned(), path.clone()));
            let resp = h.call(method, &concrete(path), None, None).await;
            assert_eq!(
                resp.status != StatusCode::METHOD_NOT_ALLOWED,
                routed,
                "{method} {path}: {}",
                resp.status
            );
        }
    }
}

#[tokio::test]
async fn openapi_security_matches_what_the_router_enforces() {
    let doc = openapi();
    assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );

    let h = Harness::new().await;
    for (method, path, needs_token) in ROUTES {
        let op = &doc["paths"][path][method.to_lowercase()];
        let open = op.get("security") == Some(&json!([]));
        assert_eq!(
            open, !needs_token,
            "{method} {path}: `security` in openapi.json"
        );
        if *needs_token {
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path} does not document 401"
            );
        }
        let resp = h.call(method, &concrete(path), None, None).await;
        if *needs_token {
            resp.error(StatusCode::UNAUTHORIZED, "unauthorized");
        } else {
            assert_ne!(resp.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn openapi_is_internally_consistent() {
    let doc = openapi();
    // Every $ref resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r);
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local $ref");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    // Every path template variable is declared, operation ids are unique,
    // and every operation says what it returns.
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
            for var in path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == var && p["in"] == "path" && p["required"] == true)
                });
                assert!(
                    declared,
                    "{method} {path}: path parameter `{var}` not declared"
                );
            }
        }
    }
}

#[tokio::test]
async fn responses_match_the_documented_schemas() {
    let doc = openapi();
    let h = Harness::new().await;
    let user = h.token("dana", &["devs"], &[]);
    let check =
        |method: &str, path: &str, resp: &Response| check_documented(&doc, method, path, resp);

    let r = h.call("GET", "/api/v1/whoami", Some(&user), None).await;
    check("GET", "/api/v1/whoami", &r);
    assert_eq!(
        (r.json["subject"].as_str(), r.json["kind"].as_str()),
        (Some("dana"), Some("user"))
    );

    let r = h
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(
                json!({"subject": "ci", "roles": ["admin"], "ttl": "5m", "service_account": true}),
            ),
        )
        .await;
    check("POST", "/api/v1/tokens", &r);
    let r = h
        .admin("POST", "/api/v1/tokens", Some(json!({"subject": ""})))
        .await;
    check("POST", "/api/v1/tokens", &r);
    r.error(StatusCode::BAD_REQUEST, "bad_request");

    let resource = json!({"kind": "postgres", "agent": "edge", "address": "127.0.0.1:5432", "database": "app",
                          "credential": "app-rw", "labels": {"env": "test"}, "tls_mode": "disable"});
    let r = h
        .admin("PUT", "/api/v1/resources/billing", Some(resource.clone()))
        .await;
    check("PUT", "/api/v1/resources/{name}", &r);
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A GET response can be PUT back unchanged.
    let r = h.admin("GET", "/api/v1/resources/billing", None).await;
    check("GET", "/api/v1/resources/{name}", &r);
    let again = h
        .admin("PUT", "/api/v1/resources/billing", Some(r.json.clone()))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let r = h
        .admin(
            "PUT",
            "/api/v1/resources/broken",
            Some(json!({"kind": "carrier-pigeon", "agent": "edge", "address": "x:1"})),
        )
        .await;
    check("PUT", "/api/v1/resources/{name}", &r);
    r.error(StatusCode::BAD_REQUEST, "bad_request");
    let r = h
        .admin(
            "PUT",
            "/api/v1/resources/broken",
            Some(json!({"kind": "postgres", "agent": "edge", "address": "x:1"})),
        )
        .await;
    check("PUT", "/api/v1/resources/{name}", &r);
    r.error(StatusCode::BAD_REQUEST, "invalid_resource");
    assert!(
        r.json["error"]["details"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("database")),
        "{}",
        r.text
    );
    let r = h.admin("GET", "/api/v1/resources", None).await;
    check("GET", "/api/v1/resources", &r);
    let r = h.admin("GET", "/api/v1/resources/missing", None).await;
    check("GET", "/api/v1/resources/{name}", &r);
    r.error(StatusCode::NOT_FOUND, "not_found");

    let r = h
        .admin(
            "PUT",
            "/api/v1/credentials/app-rw",
            Some(json!({"username": "app", "secret": "s3cret-value"})),
        )
        .await;
    check("PUT", "/api/v1/credentials/{name}", &r);
    assert!(
        !r.text.contains("s3cret-value"),
        "a secret came back: {}",
        r.text
    );
    let r = h
        .admin(
            "POST",
            "/api/v1/credentials/app-rw/rotate",
            Some(json!({"secret": "n3w-value"})),
        )
        .await;
    check("POST", "/api/v1/credentials/{name}/rotate", &r);
    assert_eq!(r.json["version"], 2);
    let r = h
        .admin(
            "POST",
            "/api/v1/credentials/nope/rotate",
            Some(json!({"secret": "x"})),
        )
        .await;
    check("POST", "/api/v1/credentials/{name}/rotate", &r);
    r.error(StatusCode::NOT_FOUND, "not_found");
    let r = h.admin("GET", "/api/v1/credentials", None).await;
    check("GET", "/api/v1/credentials", &r);
    assert!(!r.text.contains("n3w-value"));

    let apply = |doc: &str| {
        let body = Some(("application/yaml", doc.as_bytes().to_vec()));
        h.call(
            "POST",
            "/api/v1/policies?comment=first",
            Some(&h.admin),
            body,
        )
    };
    let r = apply(POLICY).await;
    check("POST", "/api/v1/policies", &r);
    assert_eq!(
        (r.json["version"].as_i64(), r.json["comment"].as_str()),
        (Some(1), Some("first")),
        "{}",
        r.text
    );
    let r = apply(POLICY).await;
    check("POST", "/api/v1/policies", &r);
    assert_eq!(r.json["unchanged"], true);
    let r = apply(&POLICY.replace("[read]", "[read, write]")).await;
    check("POST", "/api/v1/policies", &r);
    let r =
        apply("policies:\n  - name: x\n    rules: [{ deny: { sql: { statements: [dorp] } } }]\n")
            .await;
    check("POST", "/api/v1/policies", &r);
    r.error(StatusCode::BAD_REQUEST, "invalid_policy");
    assert!(
        r.json["error"]["details"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        r.text
    );
    let r = h.admin("GET", "/api/v1/policies", None).await;
    check("GET", "/api/v1/policies", &r);
    let r = h.admin("GET", "/api/v1/policies/current", None).await;
    check("GET", "/api/v1/policies/{version}", &r);
    assert_eq!(
        (r.json["version"].as_i64(), r.json["current"].as_bool()),
        (Some(2), Some(true))
    );
    let r = h.admin("GET", "/api/v1/policies/1", None).await;
    check("GET", "/api/v1/policies/{version}", &r);
    assert_eq!(r.json["document"], POLICY);
    let r = h.admin("GET", "/api/v1/policies/latest", None).await;
    check("GET", "/api/v1/policies/{version}", &r);
    r.error(StatusCode::BAD_REQUEST, "bad_request");
    let r = h.admin("GET", "/api/v1/policies/9", None).await;
    check("GET", "/api/v1/policies/{version}", &r);
    let r = h.admin("GET", "/api/v1/policies/diff?from=1", None).await;
    check("GET", "/api/v1/policies/diff", &r);
    assert!(
        r.json["diff"]
            .as_str()
            .is_some_and(|d| d.contains("+      - allow: { sql: { statements: [read, write] } }")),
        "{}",
        r.text
    );

    let explain = |body: Value| h.admin("POST", "/api/v1/policies/explain", Some(body));
    let r = explain(json!({"subject": "dana", "groups": ["devs"], "resource": "orders"})).await;
    check("POST", "/api/v1/policies/explain", &r);
    assert_eq!(r.json["connect"], true, "{}", r.text);
    let r = explain(
        json!({"subject": "dana", "groups": ["devs"], "resource": "orders",
                           "facts": {"kinds": ["drop"], "tables_written": ["public.orders"]}}),
    )
    .await;
    check("POST", "/api/v1/policies/explain", &r);
    assert_eq!(r.json["outcome"], "deny", "{}", r.text);
    let r =
        explain(json!({"subject": "eve", "resource": "orders", "facts": {"kinds": ["select"]}}))
            .await;
    check("POST", "/api/v1/policies/explain", &r);
    let r = explain(json!({"subject": "dana", "resource": "nowhere"})).await;
    check("POST", "/api/v1/policies/explain", &r);
    r.error(StatusCode::NOT_FOUND, "not_found");

    let r = h
        .admin(
            "POST",
            "/api/v1/join-tokens",
            Some(json!({"agent": "edge", "ttl": "10m"})),
        )
        .await;
    check("POST", "/api/v1/join-tokens", &r);
    let r = h
        .admin(
            "POST",
            "/api/v1/join-tokens",
            Some(json!({"agent": "edge", "ttl": "30d"})),
        )
        .await;
    check("POST", "/api/v1/join-tokens", &r);
    r.error(StatusCode::BAD_REQUEST, "bad_request");
    h.cp.store
        .upsert_agent_enrollment("edge", "fp", "0.1.0")
        .await
        .expect("enroll");
    let r = h.admin("GET", "/api/v1/agents", None).await;
    check("GET", "/api/v1/agents", &r);
    assert_eq!(r.json["agents"][0]["last_seen"], Value::Null);

    let event = crate::store::StoredAuditEvent {
        id: "evt-1".into(),
        seq: 1,
        time_ms: 1_700_000_000_000,
        kind: "session.start".into(),
        subject: "dana".into(),
        groups: vec!["devs".into()],
        resource: "orders".into(),
        decision: "allow".into(),
        attributes_json: r#"{"protocol":"postgres"}"#.into(),
        ..Default::default()
    };
    h.cp.store
        .insert_audit_events("edge", &[event])
        .await
        .expect("audit");
    let r = h
        .admin("GET", "/api/v1/audit?subject=dana&limit=10", None)
        .await;
    check("GET", "/api/v1/audit", &r);
    assert_eq!(
        (
            r.json["events"].as_array().map(Vec::len),
            &r.json["events"][0]["time"]
        ),
        (Some(1), &json!("2023-11-14T22:13:20.000Z"))
    );
    let r = h.admin("GET", "/api/v1/audit?limit=0", None).await;
    check("GET", "/api/v1/audit", &r);
    r.error(StatusCode::BAD_REQUEST, "bad_request");

    let r = h.admin("DELETE", "/api/v1/resources/billing", None).await;
    check("DELETE", "/api/v1/resources/{name}", &r);
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.admin("DELETE", "/api/v1/resources/billing", None).await;
    check("DELETE", "/api/v1/resources/{name}", &r);
    r.error(StatusCode::NOT_FOUND, "not_found");

    let r = h.call("GET", "/api/v1/resources", Some(&user), None).await;
    check("GET", "/api/v1/resources", &r);
    r.error(StatusCode::FORBIDDEN, "forbidden");

    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/api/v1/openapi.json",
    ] {
        let r = h.call("GET", path, None, None).await;
        check("GET", path, &r);
    }
}

/// SQL text is classified as the agent classifies it, each statement
/// explained, and what the agent does with an EXECUTE beyond the rules is
/// modelled: one it cannot read before it runs is refused (0A000), a lone
/// one needing approval is denied, a lone one allowed is judged again as
/// the statement the target holds.
#[tokio::test]
async fn explain_reads_sql_text_as_the_agent_does() {
    let h = Harness::new().await;
    let policy = POLICY.replace(
        "      - allow: { sql: { statements: [read] } }\n",
        "      - allow: { sql: { statements: [read, prepare, execute] } }\n      \
         - deny: { sql: { statements: [delete] } }\n        name: no-deletes\n  \
         - name: ops-on-orders\n    subjects: { groups: [ops] }\n    resources: { names: [orders] }\n    \
         rules:\n      - allow: { sql: { statements: [read, prepare] } }\n      \
         - approve: { sql: { statements: [execute] }, approvers: [leads] }\n        name: executes-need-a-lead\n",
    );
    let body = Some(("application/yaml", policy.into_bytes()));
    let r = h
        .call("POST", "/api/v1/policies", Some(&h.admin), body)
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let explain_as = |group: &str, sql: &str| {
        h.admin(
            "POST",
            "/api/v1/policies/explain",
            Some(json!({"subject": "dana", "groups": [group], "resource": "orders", "statement": sql})),
        )
    };
    let explain = |sql: &str| explain_as("devs", sql);
    let trace = |r: &Response| r.json["trace"].to_string();

    let r = explain("SELECT 1; DROP TABLE orders").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["outcome"], "deny", "{}", r.text);
    let outcomes: Vec<&str> = r.json["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .filter_map(|s| s["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["allow", "deny"], "{}", r.text);
    assert_eq!(r.json["refusal"], Value::Null);

    let r = explain("EXECUTE p(1)").await;
    assert_eq!(r.json["outcome"], "allow", "{}", r.text);
    assert!(trace(&r).contains("pg_prepared_statements"), "{}", r.text);
    for sql in [
        "SELECT 1; EXECUTE p",
        "EXPLAIN EXECUTE p",
        "EXECUTE p(1 + 1)",
    ] {
        let r = explain(sql).await;
        assert_eq!(
            (r.json["outcome"].as_str(), r.json["refusal"].as_str()),
            (Some("deny"), Some("0A000")),
            "{sql}: {}",
            r.text
        );
        assert_eq!(
            r.json["decision"]["reason"],
            sluice_policy::SQL_EXECUTE_ALONE
        );
        assert!(trace(&r).contains("0A000"), "{}", r.text);
    }
    // A denial by the rules stands as it is.
    let r = explain("EXECUTE p; DELETE FROM orders").await;
    assert_eq!(r.json["decision"]["rule"], "no-deletes", "{}", r.text);
    assert_eq!(r.json["refusal"], Value::Null);

    // Approval is asked only of the statement itself.
    let r = explain_as("ops", "EXECUTE p").await;
    assert_eq!(r.json["outcome"], "deny", "{}", r.text);
    assert_eq!(r.json["decision"]["rule"], "executes-need-a-lead");
    assert_eq!(
        r.json["decision"]["reason"],
        sluice_policy::execute_needs_approval(
            "p",
            "`execute` needs approval by leads (rule executes-need-a-lead of policy `ops-on-orders`)"
        )
    );
    let r = explain_as("ops", "SELECT 1; EXECUTE p").await;
    assert_eq!(r.json["refusal"], "0A000", "{}", r.text);
    // A denial after a statement needing approval decides, as it does at
    // the agent.
    let r = explain_as("ops", "EXECUTE p; DELETE FROM orders").await;
    assert_eq!(r.json["outcome"], "deny", "{}", r.text);
    assert_eq!(r.json["decision"]["rule"], Value::Null, "{}", r.text);
    assert_eq!(r.json["refusal"], Value::Null, "{}", r.text);
    assert!(
        r.json["decision"]["reason"]
            .as_str()
            .is_some_and(|why| !why.contains("EXECUTE")),
        "{}",
        r.text
    );

    let r = explain("SELEC 1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = Harness::new().await;
    let r = h.call("GET", "/healthz", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "ok\n"));
    let r = h.call("GET", "/readyz", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "ready\n"));
    let r = h.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("route=\"/readyz\""),
        "requests are counted by route: {}",
        r.text
    );
    let r = h.call("GET", "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
}

#[tokio::test]
async fn oidc_discovery_names_the_issuer_and_its_jwks() {
    let h = Harness::new().await;
    let r = h
        .call("GET", "/.well-known/openid-configuration", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["issuer"], "https://sluice.test");
    assert_eq!(r.json["issuer"], h.cp.identity.issuer_url());
    assert_eq!(
        r.json["jwks_uri"],
        "https://sluice.test/.well-known/jwks.json"
    );
    assert!(
        r.json["id_token_signing_alg_values_supported"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("EdDSA")))
    );

    let r = h.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.json["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{}", r.text);
    let key = &keys[0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
        (
            &json!("OKP"),
            &json!("Ed25519"),
            &json!("EdDSA"),
            &json!("sig")
        )
    );
    assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(
        key.get("d").is_none(),
        "the private key must never be published"
    );
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let h = Harness::new().await;
    for path in ["/nope", "/api/v1/nope", "/api/v2/resources"] {
        let message = h
            .call("GET", path, None, None)
            .await
            .error(StatusCode::NOT_FOUND, "not_found");
        assert!(message.contains("/api/v1/openapi.json"), "{message}");
    }
}

#[tokio::test]
async fn bodies_over_one_mib_are_refused_with_413() {
    let h = Harness::new().await;
    let label = "x".repeat(MAX_BODY);
    let big = json!({"kind": "postgres", "agent": "edge", "address": "127.0.0.1:5432", "labels": {"big": label}});
    let r = h.admin("PUT", "/api/v1/resources/orders", Some(big)).await;
    let message = r.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(message.contains("1 MiB"), "{message}");

    let doc = format!("# {}\n{POLICY}", "x".repeat(MAX_BODY));
    let r = h
        .call(
            "POST",
            "/api/v1/policies",
            Some(&h.admin),
            Some(("application/yaml", doc.into_bytes())),
        )
        .await;
    r.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(
        h.cp.store.current_policy().await.expect("store").is_none(),
        "nothing was applied"
    );

    // Just under the limit is read (and then judged on its content).
    let doc = format!("# {}\n{POLICY}", "x".repeat(MAX_BODY - POLICY.len() - 100));
    let r = h
        .call(
            "POST",
            "/api/v1/policies",
            Some(&h.admin),
            Some(("application/yaml", doc.into_bytes())),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn invalid_json_bodies_are_400_with_the_error_shape() {
    let h = Harness::new().await;
    let send = |body: &str| {
        let body = Some(("application/json", body.as_bytes().to_vec()));
        h.call("PUT", "/api/v1/resources/orders", Some(&h.admin), body)
    };
    let message = send(r#"{"kind": "postgres", "agent": "#)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.starts_with("invalid JSON body"), "{message}");

    let message =
        send(r#"{"kind": "postgres", "agent": "edge", "address": "x:1", "colour": "red"}"#)
            .await
            .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        message.contains("colour"),
        "unknown fields are named: {message}"
    );

    let message = send(r#"{"kind": "postgres"}"#)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        message.contains("agent"),
        "missing fields are named: {message}"
    );

    let r = h
        .call(
            "PUT",
            "/api/v1/resources/orders",
            Some(&h.admin),
            Some(("text/plain", b"{}".to_vec())),
        )
        .await;
    r.error(StatusCode::BAD_REQUEST, "bad_request");

    let r = h
        .call(
            "POST",
            "/api/v1/policies",
            Some(&h.admin),
            Some(("application/yaml", vec![0xff, 0xfe, b'\n'])),
        )
        .await;
    r.error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn resource_names_are_checked_against_the_naming_rule() {
    let h = Harness::new().await;
    let body = json!({"kind": "postgres", "agent": "edge", "address": "127.0.0.1:5432", "database": "app"});
    for bad in [
        "Orders",
        "-orders",
        "orders%20db",
        "o%C3%BC",
        &"o".repeat(64),
    ] {
        let r = h
            .admin(
                "PUT",
                &format!("/api/v1/resources/{bad}"),
                Some(body.clone()),
            )
            .await;
        let message = r.error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            message.contains("invalid resource name"),
            "{bad}: {message}"
        );
        assert!(
            message.contains(
                "1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
            ),
            "{bad}: the message states the rule: {message}"
        );
    }
    assert!(h.cp.store.resources().await.expect("store").is_empty());
    let r = h
        .admin(
            "PUT",
            &format!("/api/v1/resources/{}", "o".repeat(63)),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn missing_or_invalid_tokens_are_401_and_non_admins_403() {
    let h = Harness::new().await;
    let r = h.call("GET", "/api/v1/resources", None, None).await;
    let message = r.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("Authorization: Bearer"), "{message}");
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"sluice\""
    );

    let r = h
        .call("GET", "/api/v1/resources", Some("not-a-jwt"), None)
        .await;
    r.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        !r.text.contains("not-a-jwt"),
        "the token is not echoed: {}",
        r.text
    );

    let user = h.token("dana", &["devs"], &[]);
    let r = h.call("GET", "/api/v1/whoami", Some(&user), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let message = h
        .call("GET", "/api/v1/resources", Some(&user), None)
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    assert!(
        message.contains("dana") && message.contains("admin"),
        "{message}"
    );
}

#[test]
fn the_schema_checker_catches_mismatches() {
    let doc = openapi();
    let schema = json!({"$ref": "#/components/schemas/CredentialMeta"});
    let good = json!({"name": "a", "username": "u", "version": 1,
                      "created_at": "2026-01-31T12:00:00.000Z", "updated_at": "2026-01-31T12:00:00.000Z"});
    let problems = |value: &Value| {
        let mut errors = Vec::new();
        conforms(&doc, &schema, value, "$", &mut errors);
        errors
    };
    assert_eq!(problems(&good), Vec::<String>::new());
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("version");
    let mut extra = good.clone();
    extra["secret"] = json!("leak");
    let mut wrong_type = good.clone();
    wrong_type["version"] = json!("1");
    let mut bad_time = good.clone();
    bad_time["created_at"] = json!("yesterday");
    for (value, expected) in [
        (missing, "missing `version`"),
        (extra, "`secret` is not documented"),
        (wrong_type, "$.version: expected"),
        (bad_time, "not an RFC 3339"),
    ] {
        let errors = problems(&value);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{expected}: {errors:?}"
        );
    }
}

/// The facts explain takes are documented as the agent produces them:
/// every field of [`sluice_policy::StatementFacts`] (built here without
/// `..Default::default()`, so a new field fails to compile until it is
/// added), every statement kind, and every kind of rename.
#[test]
fn openapi_documents_every_statement_fact_explain_takes() {
    use sluice_policy::{Rename, SqlKind, StatementFacts};

    let doc = openapi();
    let schema = &doc["components"]["schemas"]["StatementFacts"];
    let documented_kinds: BTreeSet<&str> = schema["properties"]["kinds"]["items"]["enum"]
        .as_array()
        .expect("kinds enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let kinds: BTreeSet<&str> = SqlKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(documented_kinds, kinds, "StatementFacts.kinds enum");

    // One of each kind of rename; the match below stops compiling when a
    // kind is added, until it is added here (and documented).
    let renames = vec![
        Rename::Relation {
            old: "app.payroll".into(),
            new: "pay2".into(),
        },
        Rename::Schema {
            old: "app".into(),
            new: "app2".into(),
        },
        Rename::Type {
            old: "mood".into(),
            new: "feeling".into(),
        },
        Rename::Function {
            old: "app.f".into(),
            new: "g".into(),
        },
        Rename::Column {
            relation: "app.payroll".into(),
            old: "salary".into(),
            new: "pay".into(),
        },
        Rename::Extension {
            name: "pgcrypto".into(),
            schema: "tools".into(),
        },
    ];
    for rename in &renames {
        match rename {
            Rename::Relation { .. }
            | Rename::Schema { .. }
            | Rename::Type { .. }
            | Rename::Function { .. }
            | Rename::Column { .. }
            | Rename::Extension { .. } => {}
        }
    }
    let one = |s: &str| vec![s.to_owned()];
    let facts = StatementFacts {
        kinds: SqlKind::ALL.to_vec(),
        tables_read: one("app.orders"),
        tables_written: one("app.payroll"),
        functions: one("app.f"),
        user_functions: one("app.f"),
        foreign_tables: one("app.remote"),
        credential_catalogs: one("pg_catalog.pg_authid"),
        tables_reached: one("app.base"),
        functions_reached: one("pg_catalog.md5"),
        renames,
        has_where: true,
        reaches_unnamed_tables: true,
    };
    let value = serde_json::to_value(&facts).expect("facts serialize");
    let mut errors = Vec::new();
    conforms(&doc, schema, &value, "$", &mut errors);
    assert_eq!(errors, Vec::<String>::new(), "{value}");
    for bad in [
        json!({"of": "relation", "name": "pgcrypto", "schema": "tools"}),
        json!({"of": "table", "old": "a", "new": "b"}),
    ] {
        let mut errors = Vec::new();
        conforms(
            &doc,
            &schema["properties"]["renames"]["items"],
            &bad,
            "$",
            &mut errors,
        );
        assert!(
            errors.iter().any(|e| e.contains("oneOf")),
            "{bad} passes as a rename: {errors:?}"
        );
    }
    let fields: BTreeSet<&String> = value.as_object().expect("object").keys().collect();
    let documented: BTreeSet<&String> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .collect();
    assert_eq!(
        documented, fields,
        "openapi.json documents StatementFacts fields the agent does not have"
    );
    // And the documented shape is one explain reads back as the same facts.
    let read: StatementFacts = serde_json::from_value(value).expect("facts deserialize");
    assert_eq!(read, facts);
}

// ------------------------------------------------------------ a tiny JSON Schema checker

/// Checks `value` against the subset of JSON Schema openapi.json uses.
/// Stricter than JSON Schema in one way, on purpose: an object schema that
/// lists `properties` must list every property the server sends.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        match r.strip_prefix('#').and_then(|p| doc.pointer(p)) {
            Some(target) => conforms(doc, target, value, at, errors),
            None => errors.push(format!("{at}: dangling $ref {r}")),
        }
        return;
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let ok = options.iter().any(|o| {
            let mut e = Vec::new();
            conforms(doc, o, value, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{at}: matches none of anyOf: {value}"));
        }
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|o| {
                let mut e = Vec::new();
                conforms(doc, o, value, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!(
                "{at}: matches {matching} of oneOf, not exactly one: {value}"
            ));
        }
    }
    if let Some(ty) = schema.get("type") {
        let types: Vec<&str> = match ty {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"))
        {
            errors.push(format!("{at}: expected {types:?}, got {value}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        errors.push(format!("{at}: expected {c}, got {value}"));
    }
    if let (Some("date-time"), Some(s)) =
        (schema.get("format").and_then(Value::as_str), value.as_str())
        && humantime::parse_rfc3339(s).is_err()
    {
        errors.push(format!("{at}: `{s}` is not an RFC 3339 UTC time"));
    }
    match value {
        Value::Object(o) => {
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(k) = required.as_str().filter(|k| !o.contains_key(*k)) {
                    errors.push(format!("{at}: missing `{k}`"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, v) in o {
                match (
                    props.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => conforms(doc, s, v, &format!("{at}.{k}"), errors),
                    (None, Some(Value::Bool(false))) => {
                        errors.push(format!("{at}: `{k}` is not allowed"))
                    }
                    (None, Some(extra @ Value::Object(_))) => {
                        conforms(doc, extra, v, &format!("{at}.{k}"), errors)
                    }
                    (None, _) if props.is_some() => {
                        errors.push(format!("{at}: `{k}` is not documented"))
                    }
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (n, v) in items.iter().enumerate() {
                    conforms(doc, item, v, &format!("{at}[{n}]"), errors);
                }
            }
        }
        _ => {}
    }
}

// ------------------------------------------------------------ sessions

/// One chained session as agents before one event per statement recorded
/// it: a start, each statement (with a separate result event when allowed)
/// and, when `ended`, an end. The control plane reads both forms; the
/// current one is shown end to end in `integration-tests/tests/sessions.rs`
/// and in `recording::tests`.
fn chained_session(
    id: &str,
    start_ms: i64,
    statements: &[(&str, &str)],
    ended: bool,
) -> Vec<sluice_proto::AuditEvent> {
    recorded_session(id, start_ms, statements, ended, 0)
}

/// The recorded result of a statement: `rows` rows of two columns, in the
/// agent's shape, as JSON text with odd spacing (kept verbatim). Distinct
/// per session, as real ones are (their statement ids are UUIDs).
fn result_attributes(session: &str, statement_id: &str, rows: usize) -> String {
    let rows: Vec<Value> = (0..rows)
        .map(|i| json!([i.to_string(), format!("user{i}@{session}.example.com")]))
        .collect();
    let result = json!({"sets": [{"columns": ["id", "email"], "rows": rows}], "truncated": ""});
    format!(r#"{{ "statement_id":"{statement_id}",  "result": {result} }}"#)
}

/// [`chained_session`] whose results record `rows` rows each (with the
/// harness's 256-byte threshold, more than a few rows make a blob).
fn recorded_session(
    id: &str,
    start_ms: i64,
    statements: &[(&str, &str)],
    ended: bool,
    rows: usize,
) -> Vec<sluice_proto::AuditEvent> {
    let base = sluice_proto::AuditEvent {
        session_id: id.to_owned(),
        subject: "dana".into(),
        groups: vec!["devs".into(), "oncall".into()],
        resource: "orders".into(),
        agent: "edge".into(),
        client_addr: "127.0.0.1:5555".into(),
        ..Default::default()
    };
    let mut raw = vec![sluice_proto::AuditEvent {
        kind: "session.start".into(),
        decision: "allow".into(),
        attributes_json: r#"{"protocol":"postgres"}"#.into(),
        ..base.clone()
    }];
    for (n, (sql, decision)) in statements.iter().enumerate() {
        let attrs = format!(r#"{{"statement_id":"q{n}"}}"#);
        raw.push(sluice_proto::AuditEvent {
            kind: "statement".into(),
            decision: (*decision).into(),
            rule: format!("rules[{n}]"),
            statement: (*sql).into(),
            parameters: vec![n.to_string(), String::new()],
            error: if *decision == "deny" {
                "denied by rule no-ddl".into()
            } else {
                String::new()
            },
            attributes_json: attrs.clone(),
            ..base.clone()
        });
        if *decision == "allow" {
            raw.push(sluice_proto::AuditEvent {
                kind: "statement.result".into(),
                decision: "allow".into(),
                statement: (*sql).into(),
                duration_us: 250,
                rows: 2,
                attributes_json: if rows > 0 {
                    result_attributes(id, &format!("q{n}"), rows)
                } else {
                    attrs
                },
                ..base.clone()
            });
        }
    }
    if ended {
        raw.push(sluice_proto::AuditEvent {
            kind: "session.end".into(),
            duration_us: 5_000,
            // Not re-serialized by the control plane: odd spacing survives.
            attributes_json: r#"{"protocol": "postgres",  "statements":3}"#.into(),
            ..base.clone()
        });
    }
    let mut chain = sluice_audit_chain::Chain::new();
    raw.into_iter()
        .enumerate()
        .map(|(n, mut e)| {
            let n = i64::try_from(n).expect("small");
            e.id = format!("{id}-{n}");
            e.seq = u64::try_from(n + 1).expect("small");
            e.time_unix_ms = start_ms + n;
            chain.link(&mut e);
            chain.commit(&e);
            e
        })
        .collect()
}

const STATEMENTS: &[(&str, &str)] = &[
    ("SELECT * FROM orders WHERE id = $1", "allow"),
    ("DROP TABLE orders", "deny"),
    ("SELECT email FROM customers", "allow"),
];

impl Harness {
    async fn ingest(&self, events: Vec<sluice_proto::AuditEvent>) -> u64 {
        crate::recording::ingest(&self.cp, "edge", events)
            .await
            .expect("ingest")
    }

    async fn sql(&self, sql: &str) -> u64 {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(self.cp.store.pool())
            .await
            .expect("tamper")
            .rows_affected()
    }

    /// Agent `edge`, enrolled, with session `s-live` still running and
    /// `s-ended` over; returns the time they are relative to.
    async fn live_and_ended_sessions_on_edge(&self) -> i64 {
        let now = crate::store::now_ms();
        self.cp
            .store
            .upsert_agent_enrollment("edge", "fp", "0.1.0")
            .await
            .expect("enroll");
        self.ingest(chained_session("s-live", now - 1_000, STATEMENTS, false))
            .await;
        self.ingest(chained_session("s-ended", now - 1_000, STATEMENTS, true))
            .await;
        now
    }

    /// Attaches agent `name` to this replica; what is sent to it arrives
    /// on the returned channel.
    fn attach(&self, name: &str) -> tokio::sync::mpsc::Receiver<sluice_proto::ControlMessage> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        self.cp.registry.attach(
            name,
            crate::registry::Attached {
                connection_id: 1,
                peer: "peer".into(),
                agent_version: "0.1.0".into(),
                since_ms: crate::store::now_ms(),
                snapshot_version: 1,
                sender: tx,
            },
        );
        rx
    }

    async fn kill(&self, id: &str, body: Option<Value>) -> Response {
        let r = self
            .admin("POST", &format!("/api/v1/sessions/{id}/kill"), body)
            .await;
        check_documented(&openapi(), "POST", "/api/v1/sessions/{id}/kill", &r);
        r
    }

    async fn verify(&self, id: &str) -> Response {
        let r = self
            .admin("GET", &format!("/api/v1/sessions/{id}/verify"), None)
            .await;
        check_documented(&openapi(), "GET", "/api/v1/sessions/{id}/verify", &r);
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r
    }
}

fn problem_kinds(r: &Response) -> Vec<String> {
    r.json["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn ended_sessions_are_sealed_and_verify() {
    let h = Harness::new().await;
    let now = crate::store::now_ms();
    let events = chained_session("s-ok", now - 10_000, STATEMENTS, true);
    assert_eq!(h.ingest(events.clone()).await, 7);
    let seal =
        h.cp.store
            .session_seal("s-ok")
            .await
            .expect("seal")
            .expect("sealed");
    assert_eq!(seal.event_count, 7);
    assert_eq!(Some(&seal.head_hash), events.last().map(|e| &e.hash));

    // Redelivery stores nothing new and leaves the seal as it was.
    assert_eq!(h.ingest(events.clone()).await, 0);
    assert_eq!(
        h.cp.store.session_seal("s-ok").await.expect("seal"),
        Some(seal.clone())
    );

    let r = h.verify("s-ok").await;
    assert_eq!(r.json["ok"], true, "{}", r.text);
    assert_eq!(r.json["status"], "verified");
    assert_eq!(r.json["problems"], json!([]));
    assert!(
        r.json["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("OK"))
    );

    // The seal checks out offline with the published key.
    let user = h.token("auditor", &[], &[]);
    let key = h
        .call("GET", "/api/v1/audit/seal-key", Some(&user), None)
        .await;
    check_documented(&openapi(), "GET", "/api/v1/audit/seal-key", &key);
    assert_eq!(key.json["key_id"], r.json["seal"]["key_id"]);
    let public = hex::decode(key.json["public_key_hex"].as_str().expect("hex")).expect("hex");
    let offline = sluice_audit_chain::Seal {
        claim: sluice_audit_chain::SealClaim {
            session_id: "s-ok".into(),
            event_count: 7,
            head_hash: hex::decode(r.json["seal"]["head_hash"].as_str().expect("head"))
                .expect("hex"),
        },
        key_id: seal.key_id.clone(),
        signature: hex::decode(r.json["seal"]["signature"].as_str().expect("sig")).expect("hex"),
    };
    assert!(offline.signature_valid(&sluice_audit_chain::SealKey {
        key_id: &seal.key_id,
        public_key: &public,
    }));

    // Stored rows give back exactly what the agent hashed.
    let stored =
        h.cp.store
            .session_events("s-ok", 100)
            .await
            .expect("events");
    for (s, e) in stored.iter().zip(&events) {
        assert_eq!(&crate::recording::to_proto(s), e);
    }
}

#[tokio::test]
async fn verify_names_each_kind_of_tampering() {
    let h = Harness::new().await;
    let now = crate::store::now_ms();
    for id in [
        "s-ok", "s-alter", "s-remove", "s-swap", "s-trunc", "s-unseal", "s-rehash",
    ] {
        h.ingest(chained_session(id, now - 10_000, STATEMENTS, true))
            .await;
    }
    let where_ = |id: &str| format!("WHERE session_id = '{id}'");

    assert_eq!(
        h.sql(&format!(
            "UPDATE audit_events SET statement = 'SELECT 1' {} AND session_seq = 3",
            where_("s-alter")
        ))
        .await,
        1
    );
    let r = h.verify("s-alter").await;
    assert_eq!(
        (r.json["ok"].clone(), r.json["status"].clone()),
        (json!(false), json!("failed"))
    );
    assert_eq!(problem_kinds(&r), ["altered"]);
    assert_eq!(r.json["problems"][0]["position"], 3);
    assert_eq!(r.json["problems"][0]["event_id"], "s-alter-3");
    assert!(
        r.json["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("event 3 (s-alter-3) was altered")),
        "{}",
        r.text
    );

    h.sql(&format!(
        "DELETE FROM audit_events {} AND session_seq = 2",
        where_("s-remove")
    ))
    .await;
    let r = h.verify("s-remove").await;
    assert_eq!(problem_kinds(&r), ["removed"]);
    assert_eq!(
        (
            &r.json["problems"][0]["first"],
            &r.json["problems"][0]["last"]
        ),
        (&json!(2), &json!(2))
    );

    h.sql(&format!(
        "UPDATE audit_events SET session_seq = CASE WHEN session_seq = 1 THEN 4 ELSE 1 END {} AND session_seq IN (1, 4)",
        where_("s-swap")
    ))
    .await;
    let r = h.verify("s-swap").await;
    assert_eq!(problem_kinds(&r), ["reordered"]);
    assert_eq!(r.json["problems"][0]["positions"], json!([1, 4]));
    assert!(
        r.json["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("events 1 and 4 were reordered")),
        "{}",
        r.text
    );

    h.sql(&format!(
        "DELETE FROM audit_events {} AND session_seq >= 5",
        where_("s-trunc")
    ))
    .await;
    let r = h.verify("s-trunc").await;
    assert_eq!(problem_kinds(&r), ["missing_at_end"]);
    assert_eq!(
        (
            &r.json["problems"][0]["expected"],
            &r.json["problems"][0]["present"]
        ),
        (&json!(7), &json!(5))
    );

    h.sql("DELETE FROM session_seals WHERE session_id = 's-unseal'")
        .await;
    let r = h.verify("s-unseal").await;
    assert_eq!(problem_kinds(&r), ["not_sealed"]);

    // A rewrite that also recomputes the hash breaks the next link.
    let mut rewritten =
        h.cp.store
            .session_events("s-rehash", 100)
            .await
            .expect("events")[4]
            .clone();
    rewritten.statement = "SELECT 1".into();
    let hash = sluice_audit_chain::event_hash(&crate::recording::to_proto(&rewritten));
    h.sql(&format!(
        "UPDATE audit_events SET statement = 'SELECT 1', hash = X'{}' {} AND session_seq = 4",
        hex::encode(hash),
        where_("s-rehash")
    ))
    .await;
    let r = h.verify("s-rehash").await;
    assert_eq!(problem_kinds(&r), ["broken_link"], "{}", r.text);
    assert_eq!(r.json["problems"][0]["position"], 5);

    // The untouched session still verifies.
    assert_eq!(h.verify("s-ok").await.json["ok"], true);

    let r = h.admin("GET", "/api/v1/sessions/nope/verify", None).await;
    check_documented(&openapi(), "GET", "/api/v1/sessions/{id}/verify", &r);
    r.error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn sessions_are_listed_shown_and_classified() {
    let h = Harness::new().await;
    let doc = openapi();
    let now = crate::store::now_ms();
    h.cp.store
        .upsert_agent_enrollment("edge", "fp", "0.1.0")
        .await
        .expect("enroll");
    // The agent's current connection began a minute ago.
    h.cp.store
        .agent_attached("edge", now - 60_000)
        .await
        .expect("attach");
    h.cp.store
        .agent_seen("edge", "0.1.0", 1, "peer")
        .await
        .expect("seen");

    h.ingest(chained_session("s-ended", now - 50_000, STATEMENTS, true))
        .await;
    h.ingest(chained_session("s-live", now - 40_000, STATEMENTS, false))
        .await;
    // Started before the agent's current connection, never ended: its
    // agent went away (or restarted) in between.
    h.ingest(chained_session("s-dead", now - 120_000, STATEMENTS, false))
        .await;
    let mut refused = chained_session("s-refused", now - 30_000, &[], false);
    refused[0].decision = "deny".into();
    refused[0].error = "no policy grants dana access to orders".into();
    refused[0].hash = sluice_audit_chain::event_hash(&refused[0]).to_vec();
    h.ingest(refused).await;

    let r = h.admin("GET", "/api/v1/sessions", None).await;
    check_documented(&doc, "GET", "/api/v1/sessions", &r);
    let listed: Vec<(String, String)> = r.json["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_owned(),
                s["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("s-ended", "ended"),
            ("s-live", "live"),
            ("s-dead", "incomplete"),
            ("s-refused", "denied")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let ended = &r.json["sessions"][0];
    assert_eq!(
        (
            &ended["statements"],
            &ended["denied"],
            &ended["rows"],
            &ended["events"],
            &ended["sealed"]
        ),
        (&json!(3), &json!(1), &json!(4), &json!(7), &json!(true))
    );
    assert_eq!(ended["groups"], json!(["devs", "oncall"]));

    for (query, expected) in [
        ("outcome=live", vec!["s-live"]),
        ("outcome=incomplete", vec!["s-dead"]),
        ("outcome=denied", vec!["s-refused"]),
        (
            "outcome=ended&subject=dana&resource=orders",
            vec!["s-ended"],
        ),
        ("subject=erin", vec![]),
        ("limit=2", vec!["s-dead", "s-refused"]),
        (
            &format!("since={}", now - 45_000),
            vec!["s-live", "s-refused"],
        ),
    ] {
        let r = h
            .admin("GET", &format!("/api/v1/sessions?{query}"), None)
            .await;
        check_documented(&doc, "GET", "/api/v1/sessions", &r);
        let ids: Vec<&str> = r.json["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert_eq!(ids, expected, "{query}");
    }
    // Paging by cursor.
    let first = h.admin("GET", "/api/v1/sessions?limit=2", None).await;
    let cursor = first.json["sessions"][0]["cursor"]
        .as_i64()
        .expect("cursor");
    let r = h
        .admin(
            "GET",
            &format!("/api/v1/sessions?after={cursor}&limit=1"),
            None,
        )
        .await;
    assert_eq!(r.json["sessions"][0]["id"], "s-refused");
    let r = h.admin("GET", "/api/v1/sessions?outcome=gone", None).await;
    check_documented(&doc, "GET", "/api/v1/sessions", &r);
    r.error(StatusCode::BAD_REQUEST, "bad_request");

    let r = h.admin("GET", "/api/v1/sessions/s-ended", None).await;
    check_documented(&doc, "GET", "/api/v1/sessions/{id}", &r);
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let transcript = r.json["transcript"].as_array().expect("transcript");
    let lines: Vec<(&str, &str, &str)> = transcript
        .iter()
        .map(|t| {
            (
                t["statement"].as_str().unwrap_or_default(),
                t["decision"].as_str().unwrap_or_default(),
                t["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("SELECT * FROM orders WHERE id = $1", "allow", "ok"),
            ("DROP TABLE orders", "deny", "denied"),
            ("SELECT email FROM customers", "allow", "ok"),
        ]
    );
    assert_eq!(
        (
            &transcript[0]["rows"],
            &transcript[0]["duration_us"],
            &transcript[0]["parameters"]
        ),
        (&json!(2), &json!(250), &json!(["0", ""]))
    );
    assert_eq!(transcript[1]["reason"], "denied by rule no-ddl");
    assert_eq!(r.json["duration_us"], 5_000);
    let r = h.admin("GET", "/api/v1/sessions/s-refused", None).await;
    assert_eq!(
        r.json["start_error"],
        "no policy grants dana access to orders"
    );
    assert_eq!(r.json["transcript"], json!([]));
    // A refused connection is a complete, sealed one-event session.
    assert_eq!(h.verify("s-refused").await.json["ok"], true);

    let r = h.verify("s-live").await;
    assert_eq!(
        (r.json["ok"].clone(), r.json["status"].clone()),
        (json!(false), json!("incomplete"))
    );
    assert_eq!(problem_kinds(&r), ["incomplete"]);
    assert_eq!(h.verify("s-dead").await.json["status"], "incomplete");

    let r = h.admin("GET", "/api/v1/sessions/missing", None).await;
    check_documented(&doc, "GET", "/api/v1/sessions/{id}", &r);
    r.error(StatusCode::NOT_FOUND, "not_found");

    // Once the agent is gone, its live session is incomplete.
    h.cp.store
        .agent_detached("edge", now - 60_000)
        .await
        .expect("detach");
    let r = h
        .admin("GET", "/api/v1/sessions?outcome=incomplete", None)
        .await;
    assert_eq!(
        r.json["sessions"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn admins_end_live_sessions_through_the_agent() {
    let h = Harness::new().await;
    h.live_and_ended_sessions_on_edge().await;

    // Not attached here: stored for whichever replica it is attached to,
    // or for when it attaches.
    let r = h
        .kill("s-live", Some(json!({"reason": "while away"})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["delivery"], json!("queued"), "{}", r.text);

    let mut rx = h.attach("edge");
    let kill = |reason: &str| {
        Some(sluice_proto::control_message::Msg::KillSession(
            sluice_proto::KillSession {
                session_id: "s-live".into(),
                subject: String::new(),
                resource: String::new(),
                reason: reason.into(),
            },
        ))
    };
    // What waited is sent once the agent is attached (the poller, or the
    // attach itself, does this), and only once.
    assert!(rx.try_recv().is_err());
    assert_eq!(
        crate::commands::deliver_pending(&h.cp, None)
            .await
            .expect("deliver"),
        1
    );
    assert_eq!(
        rx.try_recv().expect("the agent was asked").msg,
        kill("while away")
    );
    assert_eq!(
        crate::commands::deliver_pending(&h.cp, None)
            .await
            .expect("deliver"),
        0
    );
    let r = h
        .kill("s-live", Some(json!({"reason": "suspicious activity"})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(
        (&r.json["agent"], &r.json["reason"], &r.json["delivery"]),
        (
            &json!("edge"),
            &json!("suspicious activity"),
            &json!("sent")
        )
    );
    assert_eq!(
        rx.try_recv().expect("the agent was asked").msg,
        kill("suspicious activity")
    );
    // The request itself is audited.
    let r = h
        .admin("GET", "/api/v1/audit?kind=session.kill", None)
        .await;
    let event = &r.json["events"][0];
    assert_eq!(
        (&event["subject"], &event["attributes"]["target_session"]),
        (&json!("test-admin"), &json!("s-live"))
    );
    // A kill without a body gets a default reason.
    let r = h.kill("s-live", None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert!(
        r.json["reason"]
            .as_str()
            .is_some_and(|m| m.contains("test-admin"))
    );

    h.kill("s-ended", None)
        .await
        .error(StatusCode::CONFLICT, "conflict");
    h.kill("nope", None)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    h.kill("s-live", Some(json!({"reason": "x", "extra": 1})))
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    let user = h.token("dana", &["devs"], &[]);
    h.call("POST", "/api/v1/sessions/s-live/kill", Some(&user), None)
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn kills_whose_session_has_not_ended_are_sent_again_when_the_agent_attaches() {
    use prost::Message as _;
    use sluice_proto::{ControlMessage, KillSession, control_message::Msg};
    let h = Harness::new().await;
    let now = h.live_and_ended_sessions_on_edge().await;
    let kill = |session: &str, reason: &str| {
        Some(Msg::KillSession(KillSession {
            session_id: session.into(),
            reason: reason.into(),
            ..Default::default()
        }))
    };
    let mut first = h.attach("edge");
    for reason in ["first", "second"] {
        let r = h.kill("s-live", Some(json!({"reason": reason}))).await;
        assert_eq!(r.json["delivery"], json!("sent"), "{}", r.text);
        assert_eq!(first.try_recv().expect("sent").msg, kill("s-live", reason));
    }
    // A kill sent before its session ended (which the agent carried out).
    h.cp.store
        .insert_agent_command(
            &crate::store::AgentCommand {
                id: "k-ended".into(),
                agent: "edge".into(),
                message: ControlMessage {
                    msg: kill("s-ended", "done"),
                }
                .encode_to_vec(),
                created_ms: now - 500,
            },
            Some(now - 500),
        )
        .await
        .expect("insert");
    // The stream those went to failed; the agent attaches again. Only the
    // live session's kill is sent again, once, with its latest reason.
    drop(first);
    let mut second = h.attach("edge");
    assert_eq!(
        crate::commands::resend_kills(&h.cp, "edge")
            .await
            .expect("resend"),
        1
    );
    assert_eq!(
        second.try_recv().expect("sent again").msg,
        kill("s-live", "second")
    );
    assert!(second.try_recv().is_err(), "nothing else is sent");
    // Nothing to send to an agent that is not attached.
    assert_eq!(
        crate::commands::resend_kills(&h.cp, "away")
            .await
            .expect("resend"),
        0
    );
}

#[tokio::test]
async fn messages_for_an_agent_that_is_away_do_not_hold_up_those_for_one_attached_here() {
    let h = Harness::new().await;
    let now = crate::store::now_ms();
    // More than one pass's worth waiting for an agent that is not here,
    // all older than the one for the agent that is.
    for i in 0..600 {
        h.cp.store
            .insert_agent_command(
                &crate::store::AgentCommand {
                    id: format!("away-{i:03}"),
                    agent: "away".into(),
                    message: Vec::new(),
                    created_ms: now - 10_000 + i,
                },
                None,
            )
            .await
            .expect("insert");
    }
    crate::commands::send(
        &h.cp,
        "edge",
        sluice_proto::control_message::Msg::KillSession(sluice_proto::KillSession {
            session_id: "s1".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("queued");
    let mut rx = h.attach("edge");
    assert_eq!(
        crate::commands::deliver_pending(&h.cp, None)
            .await
            .expect("deliver"),
        1
    );
    assert!(rx.try_recv().is_ok(), "edge got its message");
}

#[tokio::test]
async fn audit_export_streams_json_lines() {
    let h = Harness::new().await;
    let now = crate::store::now_ms();
    h.ingest(chained_session("s-1", now - 10_000, STATEMENTS, true))
        .await;
    h.ingest(chained_session("s-2", now - 5_000, STATEMENTS, false))
        .await;
    let r = h.admin("GET", "/api/v1/audit/export", None).await;
    check_documented(&openapi(), "GET", "/api/v1/audit/export", &r);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 13);
    let schema = json!({"$ref": "#/components/schemas/AuditEvent"});
    let mut errors = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        conforms(&openapi(), &schema, line, &format!("line {n}"), &mut errors);
    }
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["cursor"].as_i64() < w[1]["cursor"].as_i64())
    );
    assert_eq!(lines[6]["attributes"]["statements"], 3);
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);

    let after = lines[10]["cursor"].as_i64().expect("cursor");
    let r = h
        .admin(
            "GET",
            &format!("/api/v1/audit/export?after={after}&limit=2"),
            None,
        )
        .await;
    assert_eq!(r.text.lines().count(), 2);
    let r = h
        .admin(
            "GET",
            &format!("/api/v1/audit/export?since={}", now - 6_000),
            None,
        )
        .await;
    assert_eq!(r.text.lines().count(), 6);
    let r = h
        .admin("GET", "/api/v1/audit/export?since=yesterday", None)
        .await;
    check_documented(&openapi(), "GET", "/api/v1/audit/export", &r);
    r.error(StatusCode::BAD_REQUEST, "bad_request");
}

// ------------------------------------------------------ blobs and retention

impl Harness {
    fn blob_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data").join("blobs")
    }

    /// The blob file of the event at `position` in `session`.
    async fn blob_file(&self, session: &str, position: i64) -> std::path::PathBuf {
        let row = sqlx::query(
            "SELECT attributes_blob, attributes_json FROM audit_events WHERE session_id = $1 AND session_seq = $2",
        )
        .bind(session)
        .bind(position)
        .fetch_one(self.cp.store.pool())
        .await
        .expect("event row");
        use sqlx::Row as _;
        let address: Option<String> = row.try_get("attributes_blob").expect("column");
        let inline: String = row.try_get("attributes_json").expect("column");
        let address = address.expect("the attributes are a blob");
        assert_eq!(inline, "", "a blob-backed row keeps no inline copy");
        self.blob_dir().join(&address[..2]).join(&address[2..])
    }
}

#[tokio::test]
async fn large_results_are_stored_as_blobs_and_read_back_verbatim() {
    let h = Harness::new().await;
    let doc = openapi();
    let now = crate::store::now_ms();
    let events = recorded_session("s-big", now - 10_000, STATEMENTS, true, 40);
    assert!(events[2].attributes_json.len() > 256);
    assert_eq!(h.ingest(events.clone()).await, 7);

    // Positions 2 and 5 are the results: blobs, named by the SHA-256 of
    // the exact text.
    for (position, event) in [(2, &events[2]), (5, &events[5])] {
        let file = h.blob_file("s-big", position).await;
        assert_eq!(
            std::fs::read(&file).expect("blob file"),
            event.attributes_json.as_bytes()
        );
        let name = format!(
            "{}{}",
            file.parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or_default(),
            file.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        );
        assert_eq!(
            name,
            crate::keys::sha256_hex(event.attributes_json.as_bytes())
        );
    }
    // Small attributes stay in the row.
    let inline: Vec<_> =
        h.cp.store
            .session_events("s-big", 100)
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.attributes_blob.is_none())
            .map(|e| e.session_seq)
            .collect();
    assert_eq!(inline, [Some(0), Some(1), Some(3), Some(4), Some(6)]);

    // Every reader gets the verbatim text: the store ...
    let stored =
        h.cp.store
            .session_events("s-big", 100)
            .await
            .expect("events");
    for (s, e) in stored.iter().zip(&events) {
        assert_eq!(&crate::recording::to_proto(s), e);
    }
    // ... verification ...
    let r = h.verify("s-big").await;
    assert_eq!(r.json["status"], "verified", "{}", r.text);
    // ... the transcript ...
    let r = h.admin("GET", "/api/v1/sessions/s-big", None).await;
    check_documented(&doc, "GET", "/api/v1/sessions/{id}", &r);
    let t = &r.json["transcript"];
    assert_eq!(
        t[0]["result"]["sets"][0]["rows"][39][1],
        "user39@s-big.example.com"
    );
    assert_eq!(t[0]["result_unavailable"], Value::Null);
    assert_eq!(t[2]["outcome"], "ok");
    // ... the listing and the export.
    let r = h.admin("GET", "/api/v1/audit?session=s-big", None).await;
    check_documented(&doc, "GET", "/api/v1/audit", &r);
    assert_eq!(r.json["events"][2]["attributes"]["statement_id"], "q0");
    assert_eq!(r.json["events"][2]["attributes_unavailable"], Value::Null);
    let r = h.admin("GET", "/api/v1/audit/export", None).await;
    let line: Value = serde_json::from_str(r.text.lines().nth(5).expect("line")).expect("json");
    assert_eq!(line["attributes"]["result"]["sets"][0]["rows"][0][0], "0");

    // Redelivery stores nothing new and keeps one blob per content.
    assert_eq!(h.ingest(events).await, 0);
    let files = walk(&h.blob_dir());
    assert_eq!(files.len(), 2, "{files:?}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_missing_or_corrupt_blob_fails_verification_and_hides_the_result() {
    let h = Harness::new().await;
    let doc = openapi();
    let now = crate::store::now_ms();
    for id in ["s-ok", "s-gone", "s-bad", "s-swapped"] {
        h.ingest(recorded_session(id, now - 10_000, STATEMENTS, true, 40))
            .await;
    }
    std::fs::remove_file(h.blob_file("s-gone", 2).await).expect("delete blob");
    let bad = h.blob_file("s-bad", 5).await;
    let mut bytes = std::fs::read(&bad).expect("read");
    // Same length, one digit changed: still valid JSON, still UTF-8.
    let at = bytes.iter().position(|b| *b == b'7').expect("a digit 7");
    bytes[at] = b'8';
    std::fs::write(&bad, &bytes).expect("corrupt");
    // A row pointed at another event's (intact) blob.
    let other = h.blob_file("s-ok", 2).await;
    let address = format!(
        "{}{}",
        other
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or_default(),
        other
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    );
    h.sql(&format!(
        "UPDATE audit_events SET attributes_blob = '{address}' WHERE session_id = 's-swapped' AND session_seq = 5"
    ))
    .await;
    // A reference that is not an address never reaches the filesystem.
    h.sql("UPDATE audit_events SET attributes_blob = '../../master.key' WHERE session_id = 's-ok' AND session_seq = 0")
        .await;

    for (id, position) in [("s-gone", 2), ("s-bad", 5), ("s-swapped", 5), ("s-ok", 0)] {
        let r = h.verify(id).await;
        assert_eq!(
            (r.json["ok"].clone(), r.json["status"].clone()),
            (json!(false), json!("failed")),
            "{id}: {}",
            r.text
        );
        assert_eq!(problem_kinds(&r), ["altered"], "{id}: {}", r.text);
        assert_eq!(r.json["problems"][0]["position"], position, "{id}");
    }

    // The transcript keeps the statement's outcome and says why its result
    // is not shown.
    let r = h.admin("GET", "/api/v1/sessions/s-gone", None).await;
    check_documented(&doc, "GET", "/api/v1/sessions/{id}", &r);
    let t = &r.json["transcript"];
    assert_eq!(t.as_array().map(Vec::len), Some(3), "{}", r.text);
    assert_eq!(
        (&t[0]["outcome"], &t[0]["result"]),
        (&json!("ok"), &Value::Null)
    );
    assert!(
        t[0]["result_unavailable"]
            .as_str()
            .is_some_and(|m| m.contains("unavailable") && m.contains("missing")),
        "{}",
        r.text
    );
    assert_eq!(t[2]["result"]["sets"][0]["rows"][0][0], "0");
    let r = h.admin("GET", "/api/v1/sessions/s-bad", None).await;
    assert!(
        r.json["transcript"][2]["result_unavailable"]
            .as_str()
            .is_some_and(|m| m.contains("corrupt")),
        "{}",
        r.text
    );
    let r = h.admin("GET", "/api/v1/audit?session=s-gone", None).await;
    check_documented(&doc, "GET", "/api/v1/audit", &r);
    assert_eq!(r.json["events"][2]["attributes"], json!({}));
    assert!(r.json["events"][2]["attributes_unavailable"].is_string());
    // The export carries on past it.
    let r = h.admin("GET", "/api/v1/audit/export", None).await;
    assert_eq!(r.text.lines().count(), 28);
}

#[tokio::test]
async fn retention_deletes_old_sessions_whole_and_records_it() {
    let h = Harness::new().await;
    let doc = openapi();
    let now = crate::store::now_ms();
    let day = 86_400_000;
    h.ingest(recorded_session(
        "s-old",
        now - 100 * day,
        STATEMENTS,
        true,
        40,
    ))
    .await;
    h.ingest(recorded_session("s-new", now - day, STATEMENTS, true, 40))
        .await;
    let old_blob = h.blob_file("s-old", 2).await;
    let new_blob = h.blob_file("s-new", 2).await;
    let policy = crate::store::RetentionPolicy {
        max_age: Some(Duration::from_secs(90 * 86_400)),
        max_bytes: None,
    };
    let out = crate::retention::run_once(&h.cp, &policy, now)
        .await
        .expect("retention");
    assert_eq!((out.sessions, out.events, out.blobs), (1, 7, 2));
    assert!(out.bytes > 2 * 40 * 20, "{out:?}");
    assert!(!old_blob.exists());
    assert!(new_blob.exists());
    assert_eq!(h.cp.store.session_seal("s-old").await.expect("seal"), None);
    let r = h.admin("GET", "/api/v1/sessions/s-old", None).await;
    r.error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(h.verify("s-new").await.json["ok"], true);

    // The run is on record.
    let r = h.admin("GET", "/api/v1/audit?kind=retention", None).await;
    check_documented(&doc, "GET", "/api/v1/audit", &r);
    let events = r.json["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{}", r.text);
    let a = &events[0]["attributes"];
    assert_eq!((&a["sessions"], &a["events"]), (&json!(1), &json!(7)));
    assert_eq!(a["bytes"], json!(out.bytes));
    assert_eq!(a["cutoff"], json!(super::rfc3339(now - 90 * day)));

    // A run that deletes nothing records nothing.
    let out = crate::retention::run_once(&h.cp, &policy, now)
        .await
        .expect("retention");
    assert_eq!(out.events, 0);
    let r = h.admin("GET", "/api/v1/audit?kind=retention", None).await;
    assert_eq!(r.json["events"].as_array().map(Vec::len), Some(1));
}

fn approval_request(id: &str, mode: &str, min: u32) -> sluice_proto::ApprovalRequest {
    sluice_proto::ApprovalRequest {
        request_id: id.into(),
        session_id: "s-1".into(),
        subject: "alice".into(),
        groups: vec!["devs".into()],
        resource: "orders".into(),
        statement: "DELETE FROM orders WHERE id = $1".into(),
        fingerprint: "abc".into(),
        parameters: vec!["7".into()],
        rule: "devs/risky".into(),
        reason: "deletes need a second pair of eyes".into(),
        mode: mode.into(),
        expires_at_unix_ms: crate::store::now_ms() + 60_000,
        state: "pending".into(),
        statement_id: "st-1".into(),
        approvers: vec!["dba".into()],
        min_approvals: min,
        ttl_ms: 600_000,
    }
}

impl Harness {
    async fn vote(&self, who: &str, groups: &[&str], id: &str, verb: &str) -> Response {
        let token = self.token(who, groups, &[]);
        let path = format!("/api/v1/approvals/{id}/{verb}");
        let body = json!({"reason": format!("{who} says {verb}")})
            .to_string()
            .into_bytes();
        let r = self
            .call(
                "POST",
                &path,
                Some(&token),
                Some(("application/json", body)),
            )
            .await;
        check_documented(
            &openapi(),
            "POST",
            &format!("/api/v1/approvals/{{id}}/{verb}"),
            &r,
        );
        r
    }
}

#[tokio::test]
async fn approvals_need_distinct_approvers_from_the_listed_groups_and_never_the_requester() {
    let h = Harness::new().await;
    let filed =
        crate::approvals::on_agent_request(&h.cp, "edge", approval_request("r1", "retry", 2))
            .await
            .unwrap();
    assert!(filed.is_none());
    // Resending (an agent reconnecting) does not duplicate it.
    crate::approvals::on_agent_request(&h.cp, "edge", approval_request("r1", "retry", 2))
        .await
        .unwrap();
    let list = h
        .admin("GET", "/api/v1/approvals?status=pending", None)
        .await;
    check_documented(&openapi(), "GET", "/api/v1/approvals", &list);
    assert_eq!(
        list.json["approvals"].as_array().unwrap().len(),
        1,
        "{}",
        list.text
    );

    // The request (statement text, parameter values) is shown to its
    // requester, its approvers and admins, and to nobody else.
    for (who, groups, sees) in [
        ("alice", &["devs"][..], true),
        ("bob", &["dba"][..], true),
        ("mallory", &["devs"][..], false),
        ("eve", &[][..], false),
    ] {
        let token = h.token(who, groups, &[]);
        let list = h.call("GET", "/api/v1/approvals", Some(&token), None).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.text);
        let listed = list.json["approvals"].as_array().map_or(0, Vec::len);
        assert_eq!(listed, usize::from(sees), "{who}: {}", list.text);
        let shown = h
            .call("GET", "/api/v1/approvals/r1", Some(&token), None)
            .await;
        check_documented(&openapi(), "GET", "/api/v1/approvals/{id}", &shown);
        if sees {
            assert_eq!(shown.json["statement"], "DELETE FROM orders WHERE id = $1");
        } else {
            let message = shown.error(StatusCode::FORBIDDEN, "forbidden");
            assert!(message.contains("may not see"), "{message}");
            assert!(!shown.text.contains("DELETE"), "{}", shown.text);
        }
    }

    // A newer request bob may not see does not hide the one he may, however
    // small the page.
    let mut hidden = approval_request("r9", "retry", 1);
    hidden.subject = "zed".into();
    hidden.approvers = vec!["ops".into()];
    crate::approvals::on_agent_request(&h.cp, "edge", hidden)
        .await
        .unwrap();
    let bob = h.token("bob", &["dba"], &[]);
    let list = h
        .call("GET", "/api/v1/approvals?limit=1", Some(&bob), None)
        .await;
    assert_eq!(list.json["approvals"][0]["id"], "r1", "{}", list.text);
    // Pages of the store follow on from one another.
    let newest = h.cp.store.approvals(None, None, 1).await.unwrap();
    assert_eq!(newest[0].id, "r9");
    let next =
        h.cp.store
            .approvals(None, Some((newest[0].created_ms, "r9")), 10)
            .await
            .unwrap();
    assert_eq!(
        next.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r1"]
    );

    let r = h.vote("alice", &["dba"], "r1", "approve").await;
    assert!(
        r.error(StatusCode::FORBIDDEN, "forbidden")
            .contains("someone else")
    );
    let r = h.vote("mallory", &["devs"], "r1", "approve").await;
    assert!(r.error(StatusCode::FORBIDDEN, "forbidden").contains("dba"));
    let r = h.vote("bob", &["dba"], "r1", "approve").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "pending", "one of two approvals");
    let r = h.vote("bob", &["dba"], "r1", "approve").await;
    r.error(StatusCode::CONFLICT, "conflict");
    let r = h.vote("carol", &["dba"], "r1", "approve").await;
    assert_eq!(r.json["status"], "approved", "{}", r.text);
    assert!(
        r.json["valid_until"].is_string(),
        "retry approvals carry a TTL"
    );
    assert_eq!(r.json["votes"].as_array().unwrap().len(), 2);
    let r = h.vote("dave", &["dba"], "r1", "deny").await;
    r.error(StatusCode::CONFLICT, "conflict");

    // An agent resending a decided request hears the decision.
    let d = crate::approvals::on_agent_request(&h.cp, "edge", approval_request("r1", "retry", 2))
        .await
        .unwrap()
        .expect("decision");
    assert_eq!(d.outcome, "approved");
    assert_eq!(d.approvers, ["bob", "carol"]);
    // ...but not another agent.
    let other =
        crate::approvals::on_agent_request(&h.cp, "other", approval_request("r1", "retry", 2))
            .await
            .unwrap();
    assert!(other.is_none());

    // The first denial decides.
    crate::approvals::on_agent_request(&h.cp, "edge", approval_request("r2", "wait", 2))
        .await
        .unwrap();
    let r = h.vote("bob", &["dba"], "r2", "deny").await;
    assert_eq!(r.json["status"], "denied", "{}", r.text);
    let shown = h.admin("GET", "/api/v1/approvals/r2", None).await;
    check_documented(&openapi(), "GET", "/api/v1/approvals/{id}", &shown);
    assert_eq!(shown.json["votes"][0]["reason"], "bob says deny");
    let missing = h.admin("GET", "/api/v1/approvals/nope", None).await;
    missing.error(StatusCode::NOT_FOUND, "not_found");

    // Votes are audited.
    let audit = h
        .admin("GET", "/api/v1/audit?kind=approval.vote", None)
        .await;
    assert_eq!(
        audit.json["events"].as_array().unwrap().len(),
        3,
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn lapsed_approvals_expire_with_an_audit_event() {
    let h = Harness::new().await;
    let now = crate::store::now_ms();
    let mut pending = approval_request("late", "wait", 1);
    pending.expires_at_unix_ms = now - 1;
    crate::approvals::on_agent_request(&h.cp, "edge", pending)
        .await
        .unwrap();
    // An approved retry request whose TTL runs out unused.
    let mut retry = approval_request("unused", "retry", 1);
    retry.ttl_ms = 60_000;
    crate::approvals::on_agent_request(&h.cp, "edge", retry)
        .await
        .unwrap();
    let r = h.vote("bob", &["dba"], "unused", "approve").await;
    assert_eq!(r.json["status"], "approved", "{}", r.text);
    // A request still in time is left alone.
    let mut fresh = approval_request("fresh", "wait", 1);
    fresh.expires_at_unix_ms = now + 3_600_000;
    crate::approvals::on_agent_request(&h.cp, "edge", fresh)
        .await
        .unwrap();

    // Two minutes later: the retry approval's TTL has run out unused.
    let later = now + 120_000;
    let lapsed = crate::approvals::sweep(&h.cp, later).await.unwrap();
    assert_eq!(lapsed, 2);
    assert_eq!(
        crate::approvals::sweep(&h.cp, later).await.unwrap(),
        0,
        "once"
    );
    for id in ["late", "unused"] {
        let row = h.cp.store.approval(id).await.unwrap().unwrap();
        assert_eq!(row.status, "expired", "{id}: stored, not only shown");
    }
    let r = h.admin("GET", "/api/v1/approvals/fresh", None).await;
    assert_eq!(r.json["status"], "pending");
    let audit = h
        .admin("GET", "/api/v1/audit?kind=approval.expired", None)
        .await;
    let events = audit.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{}", audit.text);
    assert!(
        audit.text.contains("not used within its TTL"),
        "{}",
        audit.text
    );
}
