//! Prometheus metrics of the control plane.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub agents_connected: Gauge,
    pub audit_events_ingested: Counter,
    pub snapshots_pushed: Counter,
    pub policy_versions_applied: Counter,
    pub enrollments: Counter,
    pub enrollment_failures: Counter,
    /// Change notices to other replicas (`crate::fanout`).
    pub replica_notices_sent: Counter,
    pub replica_notices_dropped: Counter,
    pub replica_notices_received: Counter,
    pub replica_listener_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice_control_plane");
        let m = Self {
            http_requests: Family::default(),
            agents_connected: Gauge::default(),
            audit_events_ingested: Counter::default(),
            snapshots_pushed: Counter::default(),
            policy_versions_applied: Counter::default(),
            enrollments: Counter::default(),
            enrollment_failures: Counter::default(),
            replica_notices_sent: Counter::default(),
            replica_notices_dropped: Counter::default(),
            replica_notices_received: Counter::default(),
            replica_listener_connected: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "agents_connected",
            "Agents with an open control stream",
            m.agents_connected.clone(),
        );
        registry.register(
            "audit_events_ingested",
            "Audit events stored (redeliveries excluded)",
            m.audit_events_ingested.clone(),
        );
        registry.register(
            "snapshots_pushed",
            "Policy snapshots sent to agents",
            m.snapshots_pushed.clone(),
        );
        registry.register(
            "policy_versions_applied",
            "Policy documents applied",
            m.policy_versions_applied.clone(),
        );
        registry.register(
            "enrollments",
            "Successful agent enrollments",
            m.enrollments.clone(),
        );
        registry.register(
            "enrollment_failures",
            "Refused agent enrollments",
            m.enrollment_failures.clone(),
        );
        registry.register(
            "replica_notices_sent",
            "Change notices sent to the other replicas (PostgreSQL NOTIFY)",
            m.replica_notices_sent.clone(),
        );
        registry.register(
            "replica_notices_dropped",
            "Change notices that could not be sent (the others see the change at their next poll)",
            m.replica_notices_dropped.clone(),
        );
        registry.register(
            "replica_notices_received",
            "Change notices received from other replicas",
            m.replica_notices_received.clone(),
        );
        registry.register(
            "replica_listener_connected",
            "1 while this replica listens for other replicas' change notices",
            m.replica_listener_connected.clone(),
        );
        Self { registry, ..m }
    }
}
