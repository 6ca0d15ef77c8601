//! Prometheus metrics of the agent.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub protocol: &'static str,
    pub outcome: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub connected: Gauge,
    pub snapshot_version: Gauge,
    pub snapshot_updates: Counter,
    pub snapshot_rejections: Counter,
    pub spool_pending: Gauge,
    pub audit_events: Counter,
    pub audit_failures: Counter,
    pub refusals_unrecorded: Counter,
    pub client_connections: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice_agent");
        let m = Self {
            registry: Registry::default(),
            connected: Gauge::default(),
            snapshot_version: Gauge::default(),
            snapshot_updates: Counter::default(),
            snapshot_rejections: Counter::default(),
            spool_pending: Gauge::default(),
            audit_events: Counter::default(),
            audit_failures: Counter::default(),
            refusals_unrecorded: Counter::default(),
            client_connections: Family::default(),
        };
        registry.register(
            "control_plane_connected",
            "1 while the control plane stream is up",
            m.connected.clone(),
        );
        registry.register(
            "snapshot_version",
            "Version of the enforced snapshot (0: none)",
            m.snapshot_version.clone(),
        );
        registry.register(
            "snapshot_updates",
            "Snapshots verified and applied",
            m.snapshot_updates.clone(),
        );
        registry.register(
            "snapshot_rejections",
            "Snapshots refused (bad signature, wrong agent, undecodable)",
            m.snapshot_rejections.clone(),
        );
        registry.register(
            "audit_spool_pending",
            "Audit events spooled but not yet acknowledged",
            m.spool_pending.clone(),
        );
        registry.register(
            "audit_events",
            "Audit events recorded",
            m.audit_events.clone(),
        );
        registry.register(
            "audit_failures",
            "Statements refused because their audit event could not be spooled",
            m.audit_failures.clone(),
        );
        registry.register(
            "refusals_unrecorded",
            "Connections refused before any session began and not recorded: the audit spool was nearly full (its last eighth is kept for sessions)",
            m.refusals_unrecorded.clone(),
        );
        registry.register(
            "client_connections",
            "Client connections by protocol and outcome",
            m.client_connections.clone(),
        );
        Self { registry, ..m }
    }
}
