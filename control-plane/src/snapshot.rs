//! Compiles and signs the per-agent policy snapshot.
//!
//! A snapshot holds everything an agent needs to decide locally: its own
//! resources (and no one else's), the compiled policy for them, the trusted
//! token issuers with their keys, and the credentials of its resources. It
//! is signed so an agent can prove, also after a restart from its disk
//! cache, that the policy it enforces came from this control plane.

use prost::Message as _;
use sluice_policy::{CompiledPolicy, Document, ResourceSpec};
use sluice_proto as pb;

use crate::{
    ControlPlane,
    store::{ResourceRow, now_ms},
};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("credential `{name}` could not be opened: {source}")]
    Credential {
        name: String,
        source: crate::vault::VaultError,
    },
    #[error("resource `{name}` is invalid: {reason}")]
    Resource { name: String, reason: String },
}

/// Converts a stored resource to the policy crate's model.
pub fn row_to_spec(row: &ResourceRow) -> Result<ResourceSpec, SnapshotError> {
    let mut v = serde_json::json!({
        "name": row.name,
        "kind": row.kind,
        "agent": row.agent,
        "address": row.address,
        "labels": row.labels,
        "tls_mode": row.tls_mode,
        "audit_mode": row.audit_mode,
    });
    if !row.database.is_empty() {
        v["database"] = row.database.clone().into();
    }
    if !row.credential.is_empty() {
        v["credential"] = row.credential.clone().into();
    }
    if !row.tls_ca.is_empty() {
        v["tls_ca"] = row.tls_ca.clone().into();
    }
    if row.max_connections > 0 {
        v["max_connections"] = row.max_connections.into();
    }
    if row.max_connections_per_subject > 0 {
        v["max_connections_per_subject"] = row.max_connections_per_subject.into();
    }
    serde_json::from_value(v).map_err(|e| SnapshotError::Resource {
        name: row.name.clone(),
        reason: e.to_string(),
    })
}

/// Converts a resource declared in a policy document to a stored row.
pub fn spec_to_row(spec: &ResourceSpec) -> ResourceRow {
    let v = serde_json::to_value(spec).unwrap_or_default();
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    ResourceRow {
        name: s("name"),
        kind: s("kind"),
        agent: s("agent"),
        address: s("address"),
        database: s("database"),
        credential: s("credential"),
        labels: v
            .get("labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default(),
        tls_mode: Some(s("tls_mode"))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "disable".into()),
        tls_ca: s("tls_ca"),
        audit_mode: Some(s("audit_mode"))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "fail_closed".into()),
        max_connections: spec.max_connections.unwrap_or_default(),
        max_connections_per_subject: spec.max_connections_per_subject.unwrap_or_default(),
        updated_at: now_ms(),
    }
}

/// The current policy document and every resource, for compilation.
pub async fn current_inputs(
    cp: &ControlPlane,
) -> Result<(Document, Vec<ResourceSpec>), SnapshotError> {
    let doc = match cp.store.current_policy().await? {
        Some(p) => match sluice_policy::parse_document(&p.document) {
            Ok(doc) => doc,
            Err(e) => {
                // Stored documents were validated when applied; if one no
                // longer parses (e.g. after a downgrade), enforce nothing
                // rather than guess: an empty policy denies everything.
                tracing::error!(version = p.version, error = %e, "stored policy no longer parses; agents get a deny-all policy");
                Document::default()
            }
        },
        None => Document::default(),
    };
    let rows = cp.store.resources().await?;
    let specs = rows
        .iter()
        .map(row_to_spec)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((doc, specs))
}

/// Builds and signs the snapshot for `agent` at the current revision.
pub async fn build(
    cp: &ControlPlane,
    agent: &str,
) -> Result<(u64, pb::SignedSnapshot), SnapshotError> {
    // Read the revision first: if something changes while we compile, the
    // change notification triggers another build with a higher version.
    let version = cp.store.revision().await?;
    let (doc, specs) = current_inputs(cp).await?;
    let compiled: CompiledPolicy = sluice_policy::compile(&doc, &specs, agent);

    let rows = cp.store.resources().await?;
    let mine: Vec<&ResourceRow> = rows.iter().filter(|r| r.agent == agent).collect();
    let mut credentials = Vec::new();
    let mut wanted: Vec<&str> = mine
        .iter()
        .map(|r| r.credential.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    for name in wanted {
        let Some(row) = cp.store.credential(name).await? else {
            tracing::warn!(
                credential = name,
                agent,
                "resource names a credential that does not exist"
            );
            continue;
        };
        let secret = cp
            .vault
            .open(&format!("credential:{name}"), &row.sealed)
            .map_err(|source| SnapshotError::Credential {
                name: name.to_owned(),
                source,
            })?;
        credentials.push(pb::Credential {
            name: row.name.clone(),
            username: row.username.clone(),
            secret: secret.to_vec(),
            version: u64::try_from(row.version).unwrap_or(0),
        });
    }

    let snapshot = pb::Snapshot {
        version,
        agent_name: agent.to_owned(),
        issued_at_unix_ms: now_ms(),
        resources: mine
            .iter()
            .map(|r| pb::Resource {
                name: r.name.clone(),
                kind: r.kind.clone(),
                address: r.address.clone(),
                database: r.database.clone(),
                credential: r.credential.clone(),
                labels: r.labels.clone().into_iter().collect(),
                tls_mode: r.tls_mode.clone(),
                tls_ca_pem: r.tls_ca.clone(),
                audit_mode: r.audit_mode.clone(),
                mask_key: cp.keys.mask.for_resource(&r.name),
                max_connections: r.max_connections,
                max_connections_per_subject: r.max_connections_per_subject,
            })
            .collect(),
        compiled_policy: compiled
            .to_json_bytes()
            .map_err(|e| SnapshotError::Resource {
                name: agent.to_owned(),
                reason: e.to_string(),
            })?,
        policy_format: sluice_policy::POLICY_FORMAT.to_owned(),
        trusted_issuers: cp
            .identity
            .trusted_issuers()
            .into_iter()
            .map(|t| pb::TrustedIssuer {
                issuer: t.issuer,
                audiences: t.audiences,
                algorithms: t.algorithms,
                jwks_json: t.jwks_json,
                groups_claim: t.groups_claim,
                leeway_seconds: t.leeway_seconds,
                subject_claim: t.subject_claim,
                service_accounts: t.service_accounts,
            })
            .collect(),
        credentials,
        settings: Some(pb::AgentSettings {
            max_staleness_seconds: cp.max_staleness.as_secs(),
        }),
    };
    let payload = snapshot.encode_to_vec();
    let signature = cp.keys.snapshot.sign(&payload);
    Ok((
        version,
        pb::SignedSnapshot {
            payload,
            key_id: cp.keys.snapshot.kid().to_owned(),
            signature,
        },
    ))
}
