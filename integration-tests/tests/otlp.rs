//! OpenTelemetry export: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the control
//! plane and the agent send their spans over OTLP/gRPC, under their own
//! service names. The receiver is a real OTLP trace service started by the
//! test on a free port.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
};
use sluice_integration_tests::{AgentProc, ControlPlaneProc, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    attributes: BTreeMap<String, String>,
}

/// An OTLP trace receiver that keeps everything it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        for rs in request.into_inner().resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: s.name,
                        attributes: attributes(&s.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

impl Receiver {
    /// Starts serving on a free loopback port; returns the endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("local addr");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("OTLP receiver failed");
        });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for a span of `service` named `name` whose attributes satisfy `matches`.
    async fn wait_for(
        &self,
        service: &str,
        name: &str,
        matches: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Span {
        eventually(
            Duration::from_secs(20),
            &format!("a `{name}` span from {service}"),
            || async {
                self.spans()
                    .into_iter()
                    .find(|s| s.service == service && s.name == name && matches(&s.attributes))
            },
        )
        .await
    }
}

fn otel_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            endpoint.to_owned(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ]
}

#[tokio::test]
async fn control_plane_exports_a_span_per_http_request() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let mut cp = ControlPlaneProc::start_with(otel_env(&endpoint)).await;
    let api = cp.api();
    api.get_ok("/api/v1/resources").await;
    api.get_ok("/api/v1/resources").await;
    let (status, _) = api.get("/api/v1/resources/missing").await;
    assert_eq!(status, 404);

    let list = receiver
        .wait_for("sluice-control-plane", "http.request", |a| {
            a.get("http.route").map(String::as_str) == Some("/api/v1/resources")
        })
        .await;
    assert_eq!(
        list.attributes.get("http.method").map(String::as_str),
        Some("GET"),
        "{list:?}"
    );

    // The route template, never the raw path (which would carry names).
    let show = receiver
        .wait_for("sluice-control-plane", "http.request", |a| {
            a.get("http.route")
                .is_some_and(|r| r.starts_with("/api/v1/resources/"))
        })
        .await;
    assert_eq!(
        show.attributes.get("http.route").map(String::as_str),
        Some("/api/v1/resources/{name}"),
        "{show:?}"
    );

    let services: Vec<String> = receiver.spans().into_iter().map(|s| s.service).collect();
    assert!(
        services.iter().all(|s| s == "sluice-control-plane"),
        "unexpected services: {services:?}"
    );
}

#[tokio::test]
async fn agent_exports_connection_spans() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let mut cp = ControlPlaneProc::start().await;
    let agent = AgentProc::start_with_env(&mut cp, "edge", otel_env(&endpoint)).await;

    receiver
        .wait_for("sluice-agent", "control_plane.connect", |a| {
            a.get("control_plane") == Some(&cp.grpc_url())
        })
        .await;

    // A PostgreSQL client asking for a resource the agent does not serve:
    // refused, and the connection is traced with the client's address.
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", agent.pg_port))
        .await
        .expect("connect to the agent");
    let local = client.local_addr().expect("local addr").to_string();
    client
        .write_all(&startup_message(&[("user", "alice"), ("database", "nope")]))
        .await
        .expect("send start-up");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut reply))
        .await
        .expect("the agent answers and closes")
        .expect("read the reply");
    assert_eq!(
        reply.first(),
        Some(&b'E'),
        "expected an ErrorResponse, got {reply:?}"
    );

    receiver
        .wait_for("sluice-agent", "postgres.connection", |a| {
            a.get("client") == Some(&local)
        })
        .await;
    let services: Vec<String> = receiver.spans().into_iter().map(|s| s.service).collect();
    assert!(
        services.iter().all(|s| s == "sluice-agent"),
        "unexpected services: {services:?}"
    );
}

/// A PostgreSQL v3.0 StartupMessage.
fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608_u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).expect("short message");
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend(body);
    msg
}
