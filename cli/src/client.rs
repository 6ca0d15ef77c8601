//! HTTP client for the control plane's REST API (`docs/api.md`).
//!
//! Owns the base URL, the bearer token and the mapping from HTTP failures to
//! [`ClientError`]s that tell a person what to do next. Responses come back as
//! `serde_json::Value` so `--json` can print exactly what the server said.
//! Never puts the token in an error, a log line or a `Debug` string.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Streamed downloads (audit export) may legitimately take long.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How much of a non-JSON error body is worth showing.
const SNIPPET_CHARS: usize = 200;

/// Installs rustls' `ring` crypto provider; reqwest is built without one.
/// Calling it twice is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no token: pass --token, set SLUICE_TOKEN or SLUICE_TOKEN_FILE \
         (`make run` writes the demo admin token to .sluice/admin.token)"
    )]
    MissingToken,

    #[error("invalid control plane URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },

    #[error(
        "cannot reach the control plane at {url} (is it running? `make run` starts one; \
         set SLUICE_URL to point elsewhere)"
    )]
    Unreachable { url: String },

    #[error("the control plane at {url} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },

    #[error(
        "not authenticated: pass --token or set SLUICE_TOKEN \
         (the demo admin token is in .sluice/admin.token)"
    )]
    Unauthenticated,

    #[error("permission denied: this needs the admin role")]
    Forbidden,

    /// A 403 the server explained (e.g. an approver outside the groups).
    #[error("permission denied: {0}")]
    Denied(String),

    /// A well-formed error from the server: `{"error": {...}}`.
    #[error("{}", render_api_error(.message, .details))]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Vec<ErrorDetail>,
    },

    #[error("{endpoint} answered HTTP {status} without a Sluice error body: {snippet}")]
    Unexpected {
        endpoint: String,
        status: u16,
        snippet: String,
    },

    #[error("{endpoint} answered with something that is not JSON: {source}")]
    Decode {
        endpoint: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("request to {endpoint} failed")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
}

impl ClientError {
    /// True when retrying later could help (the server is down or slow).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Timeout { .. }
        )
    }
}

/// One problem in a rejected request, e.g. a policy line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub line: Option<u64>,
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    message: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

fn render_api_error(message: &str, details: &[ErrorDetail]) -> String {
    let mut out = message.to_owned();
    for d in details {
        out.push_str("\n  ");
        match (&d.path, d.line) {
            (Some(path), Some(line)) => out.push_str(&format!("{path} (line {line}): ")),
            (Some(path), None) => out.push_str(&format!("{path}: ")),
            (None, Some(line)) => out.push_str(&format!("line {line}: ")),
            (None, None) => {}
        }
        out.push_str(&d.message);
    }
    out
}

/// Maps a non-success response to the error a person should see.
/// 401 and 403 get fixed, actionable messages whatever the body says.
pub fn error_from_response(endpoint: &str, status: StatusCode, body: &[u8]) -> ClientError {
    match status {
        StatusCode::UNAUTHORIZED => ClientError::Unauthenticated,
        StatusCode::FORBIDDEN => match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(ErrorEnvelope { error }) if !error.message.is_empty() => {
                ClientError::Denied(error.message)
            }
            _ => ClientError::Forbidden,
        },
        _ => match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(ErrorEnvelope { error }) => ClientError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                details: error.details,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let mut snippet = crate::table::truncate(&text, SNIPPET_CHARS);
                if snippet.is_empty() {
                    snippet = status.canonical_reason().unwrap_or("empty body").to_owned();
                }
                ClientError::Unexpected {
                    endpoint: endpoint.to_owned(),
                    status: status.as_u16(),
                    snippet,
                }
            }
        },
    }
}

/// A request body.
pub enum Body {
    None,
    Json(Value),
    /// Raw text with its content type, e.g. a policy document as YAML.
    Text {
        content_type: &'static str,
        text: String,
    },
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// The URL as the user gave it, for error messages.
    shown_url: String,
    token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.shown_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base_url)
            .map_err(|e| bad(&format!("{e} (expected e.g. http://127.0.0.1:8080)")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad(
                "expected an http:// or https:// URL, e.g. http://127.0.0.1:8080",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("sluice-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            shown_url: base_url.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// `/api/v1/<segments...>` under the base URL; each segment is
    /// percent-encoded, so a resource name cannot change the path.
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        self.request(Method::GET, segments, query, Body::None).await
    }

    pub async fn post(&self, segments: &[&str], body: Value) -> Result<Value, ClientError> {
        self.request(Method::POST, segments, &[], Body::Json(body))
            .await
    }

    pub async fn put(&self, segments: &[&str], body: Value) -> Result<Value, ClientError> {
        self.request(Method::PUT, segments, &[], Body::Json(body))
            .await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value, ClientError> {
        self.request(Method::DELETE, segments, &[], Body::None)
            .await
    }

    /// Sends one request and returns the JSON body (`Null` for an empty one,
    /// such as `204 No Content`).
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Body,
    ) -> Result<Value, ClientError> {
        // Every /api/v1 endpoint needs a token; say so before the round trip.
        let token = self.token.as_deref().ok_or(ClientError::MissingToken)?;
        let url = self.endpoint(segments);
        let endpoint = format!("{method} {}", url.path());

        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Text { content_type, text } => req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(text),
        };

        let resp = req.send().await.map_err(|e| self.transport(&endpoint, e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.transport(&endpoint, e))?;
        if !status.is_success() {
            return Err(error_from_response(&endpoint, status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { endpoint, source })
    }

    /// GETs a streamed body and hands it to `sink` chunk by chunk as it
    /// arrives (for JSON lines), so memory stays flat however long it is.
    pub async fn download(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let token = self.token.as_deref().ok_or(ClientError::MissingToken)?;
        let url = self.endpoint(segments);
        let endpoint = format!("GET {}", url.path());
        let mut req = self
            .http
            .get(url)
            .bearer_auth(token)
            .timeout(DOWNLOAD_TIMEOUT);
        if !query.is_empty() {
            req = req.query(query);
        }
        let mut resp = req.send().await.map_err(|e| self.transport(&endpoint, e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(error_from_response(&endpoint, status, &bytes).into());
        }
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport(&endpoint, e))?
        {
            sink(&chunk)?;
        }
        Ok(())
    }

    fn transport(&self, endpoint: &str, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::Unreachable {
                url: self.shown_url.clone(),
            }
        } else if e.is_timeout() {
            ClientError::Timeout {
                url: self.shown_url.clone(),
            }
        } else {
            ClientError::Transport {
                endpoint: endpoint.to_owned(),
                source: e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn status_401_and_403_have_fixed_advice() {
        let body = br#"{"error":{"code":"unauthenticated","message":"token expired"}}"#;
        let e = error_from_response("GET /api/v1/whoami", StatusCode::UNAUTHORIZED, body);
        assert!(matches!(e, ClientError::Unauthenticated));
        assert_eq!(
            e.to_string(),
            "not authenticated: pass --token or set SLUICE_TOKEN \
             (the demo admin token is in .sluice/admin.token)"
        );
        let e = error_from_response("GET /api/v1/resources", StatusCode::FORBIDDEN, b"");
        assert_eq!(
            e.to_string(),
            "permission denied: this needs the admin role"
        );
    }

    #[test]
    fn other_statuses_show_the_server_message_and_details() {
        let body = json!({"error": {
            "code": "invalid_policy",
            "message": "the policy document is invalid",
            "details": [
                {"path": "policies[0].rules[1]", "line": 12, "message": "unknown statement kind `dorp`"},
                {"message": "no policies"}
            ]
        }})
        .to_string();
        let e = error_from_response(
            "POST /api/v1/policies",
            StatusCode::BAD_REQUEST,
            body.as_bytes(),
        );
        let ClientError::Api {
            status,
            ref code,
            ref details,
            ..
        } = e
        else {
            panic!("expected an API error, got {e:?}");
        };
        assert_eq!(status, 400);
        assert_eq!(code, "invalid_policy");
        assert_eq!(details.len(), 2);
        assert_eq!(details[0].line, Some(12));
        assert_eq!(
            e.to_string(),
            "the policy document is invalid\n  \
             policies[0].rules[1] (line 12): unknown statement kind `dorp`\n  \
             no policies"
        );

        let body = br#"{"error":{"code":"not_found","message":"no resource named `x`"}}"#;
        let e = error_from_response("GET /api/v1/resources/x", StatusCode::NOT_FOUND, body);
        assert_eq!(e.to_string(), "no resource named `x`");
    }

    #[test]
    fn bodies_that_are_not_sluice_errors_are_summarised() {
        let e = error_from_response(
            "GET /api/v1/agents",
            StatusCode::BAD_GATEWAY,
            b"<html>\n<body>bad gateway</body></html>",
        );
        assert_eq!(
            e.to_string(),
            "GET /api/v1/agents answered HTTP 502 without a Sluice error body: \
             <html> <body>bad gateway</body></html>"
        );
        let e = error_from_response("GET /api/v1/agents", StatusCode::NOT_FOUND, b"");
        assert!(
            e.to_string()
                .ends_with("HTTP 404 without a Sluice error body: Not Found")
        );
    }

    #[test]
    fn rejects_urls_without_a_scheme() {
        assert!(matches!(
            Client::new("localhost:8080", None),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(matches!(
            Client::new("127.0.0.1:8080", None),
            Err(ClientError::BadUrl { .. })
        ));
    }

    #[test]
    fn endpoints_encode_names_and_keep_a_base_path() {
        install_crypto_provider();
        let c = Client::new("http://cp.example:8080/sluice/", None).expect("client");
        assert_eq!(
            c.endpoint(&["resources", "a/b c"]).as_str(),
            "http://cp.example:8080/sluice/api/v1/resources/a%2Fb%20c"
        );
        let c = Client::new("http://cp.example:8080", None).expect("client");
        assert_eq!(
            c.endpoint(&["whoami"]).as_str(),
            "http://cp.example:8080/api/v1/whoami"
        );
    }

    #[test]
    fn debug_output_hides_the_token() {
        install_crypto_provider();
        let c = Client::new("http://x:1", Some("s3cr3t-token".into())).expect("client");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    /// Serves one canned HTTP response and hands back the raw request.
    async fn one_shot_server(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then as much body as Content-Length announces.
            loop {
                let n = sock.read(&mut chunk).await.expect("read");
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            sock.write_all(response.as_bytes()).await.expect("write");
            sock.shutdown().await.ok();
            String::from_utf8_lossy(&buf).into_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn sends_the_token_and_parses_json() {
        install_crypto_provider();
        let (url, server) = one_shot_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 19\r\nconnection: close\r\n\r\n{\"subject\":\"alice\"}",
        )
        .await;
        let c = Client::new(&url, Some("tok123".into())).expect("client");
        let v = c.get(&["whoami"], &[]).await.expect("ok");
        assert_eq!(v, json!({"subject": "alice"}));
        let req = server.await.expect("server");
        assert!(req.starts_with("GET /api/v1/whoami HTTP/1.1\r\n"), "{req}");
        assert!(
            req.to_ascii_lowercase()
                .contains("authorization: bearer tok123")
        );
    }

    #[tokio::test]
    async fn sends_query_and_text_bodies() {
        install_crypto_provider();
        let (url, server) =
            one_shot_server("HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
        let c = Client::new(&url, Some("t".into())).expect("client");
        let v = c
            .request(
                Method::POST,
                &["policies"],
                &[("comment", "a b&c".to_owned())],
                Body::Text {
                    content_type: "application/yaml",
                    text: "policies: []\n".into(),
                },
            )
            .await
            .expect("ok");
        assert_eq!(v, Value::Null);
        let req = server.await.expect("server");
        assert!(
            req.starts_with("POST /api/v1/policies?comment=a+b%26c HTTP/1.1"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase()
                .contains("content-type: application/yaml")
        );
        assert!(req.ends_with("\r\n\r\npolicies: []\n"));
    }

    #[tokio::test]
    async fn maps_http_errors() {
        install_crypto_provider();
        let (url, _server) = one_shot_server(
            "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let c = Client::new(&url, Some("t".into())).expect("client");
        let e = c.get(&["resources"], &[]).await.expect_err("must fail");
        assert!(matches!(e, ClientError::Forbidden), "{e:?}");
    }

    #[tokio::test]
    async fn connection_refused_says_how_to_start_the_server() {
        install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let c = Client::new(&url, Some("secret-token".into())).expect("client");
        let e = c.get(&["whoami"], &[]).await.expect_err("must fail");
        assert!(e.is_transient());
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("cannot reach the control plane at {url} ")),
            "{msg}"
        );
        assert!(msg.contains("make run"));
        assert!(!msg.contains("secret-token"));
    }

    #[tokio::test]
    async fn missing_token_fails_before_any_request() {
        install_crypto_provider();
        // Nothing listens here; MissingToken (not Unreachable) proves no connection was tried.
        let c = Client::new("http://127.0.0.1:9", None).expect("client");
        let e = c.get(&["whoami"], &[]).await.expect_err("must fail");
        assert!(matches!(e, ClientError::MissingToken), "{e:?}");
    }
}
