//! A thin REST client for tests: returns status and JSON, never panics on
//! an error status (tests assert on those).

use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Self {
        crate::init_crypto();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Text(t)) => req.header("content-type", "application/yaml").body(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(Body::Json(body))).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PUT, path, Some(Body::Json(body))).await
    }

    pub async fn apply_policy(&self, doc: &str) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            "/api/v1/policies",
            Some(Body::Text(doc.to_owned())),
        )
        .await
    }

    /// GET that must succeed.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (s, v) = self.get(path).await;
        assert!(s.is_success(), "GET {path}: {s} {v}");
        v
    }

    /// The parameters of the audited statement whose text contains
    /// `needle`, once its event is stored (waits up to 30 s).
    pub async fn statement_parameters(&self, needle: &str) -> Value {
        self.event_where("statement", "statement", needle).await["parameters"].clone()
    }

    /// The first stored audit event of `kind` whose string `field`
    /// contains `needle`, once there is one (waits up to 30 s).
    pub async fn event_where(&self, kind: &str, field: &str, needle: &str) -> Value {
        crate::eventually(
            std::time::Duration::from_secs(30),
            &format!("a {kind} event whose {field} contains {needle:?}"),
            || async {
                let v = self
                    .get_ok(&format!("/api/v1/audit?kind={kind}&limit=1000"))
                    .await;
                v["events"]
                    .as_array()?
                    .iter()
                    .find(|e| e[field].as_str().is_some_and(|t| t.contains(needle)))
                    .cloned()
            },
        )
        .await
    }

    /// POST that must succeed.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.post(path, body).await;
        assert!(s.is_success(), "POST {path}: {s} {v}");
        v
    }
}

pub enum Body {
    Json(Value),
    Text(String),
}
