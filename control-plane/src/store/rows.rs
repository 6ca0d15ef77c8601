//! Row types of the store and their decoding. Plain data: no secrets in
//! plaintext ever appear here.

use std::collections::BTreeMap;

use sqlx::{Row as _, any::AnyRow};

use super::Result;

/// A value sealed by the vault (envelope encryption).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kek_id: String,
    pub wrapped_dek: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

impl Sealed {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            kek_id: r.try_get("kek_id")?,
            wrapped_dek: r.try_get("wrapped_dek")?,
            ciphertext: r.try_get("ciphertext")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SystemKeyRow {
    pub name: String,
    pub kid: String,
    pub sealed: Sealed,
    pub public_data: Vec<u8>,
    pub created_at: i64,
}

impl SystemKeyRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            name: r.try_get("name")?,
            kid: r.try_get("kid")?,
            sealed: Sealed::from_row(r)?,
            public_data: r.try_get("public_data")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

pub(crate) const RESOURCE_COLUMNS: &str = "name, kind, agent, address, database_name, credential, labels_json, tls_mode, tls_ca, audit_mode, max_connections, max_connections_per_subject, updated_at";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceRow {
    pub name: String,
    pub kind: String,
    pub agent: String,
    pub address: String,
    pub database: String,
    pub credential: String,
    pub labels: BTreeMap<String, String>,
    pub tls_mode: String,
    /// PEM of the target's CA (verify-full); empty when unused.
    pub tls_ca: String,
    pub audit_mode: String,
    /// Most client sessions on the target at once; 0 = no limit of its own.
    pub max_connections: u32,
    /// The same, per subject; 0 = no limit of its own.
    pub max_connections_per_subject: u32,
    pub updated_at: i64,
}

impl ResourceRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        let labels: String = r.try_get("labels_json")?;
        Ok(Self {
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            agent: r.try_get("agent")?,
            address: r.try_get("address")?,
            database: r.try_get("database_name")?,
            credential: r.try_get("credential")?,
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            tls_mode: r.try_get("tls_mode")?,
            tls_ca: r.try_get("tls_ca")?,
            audit_mode: r.try_get("audit_mode")?,
            max_connections: limit(r.try_get("max_connections")?),
            max_connections_per_subject: limit(r.try_get("max_connections_per_subject")?),
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// A stored connection limit; anything out of range reads as none.
fn limit(stored: i64) -> u32 {
    u32::try_from(stored).unwrap_or(0)
}

pub(crate) const CREDENTIAL_COLUMNS: &str =
    "name, username, version, kek_id, wrapped_dek, ciphertext, created_at, updated_at";

#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub name: String,
    pub username: String,
    pub version: i64,
    pub sealed: Sealed,
    pub created_at: i64,
    pub updated_at: i64,
}

impl CredentialRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            name: r.try_get("name")?,
            username: r.try_get("username")?,
            version: r.try_get("version")?,
            sealed: Sealed::from_row(r)?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

pub(crate) const POLICY_COLUMNS: &str =
    "version, document, sha256, comment, created_by, created_at, revision";

#[derive(Debug, Clone)]
pub struct PolicyVersionRow {
    pub version: i64,
    pub document: String,
    pub sha256: String,
    pub comment: String,
    pub created_by: String,
    pub created_at: i64,
    pub revision: i64,
}

impl PolicyVersionRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            version: r.try_get("version")?,
            document: r.try_get("document")?,
            sha256: r.try_get("sha256")?,
            comment: r.try_get("comment")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            revision: r.try_get("revision")?,
        })
    }
}

pub(crate) const AGENT_COLUMNS: &str = "name, cert_fingerprint, agent_version, enrolled_at, last_seen, snapshot_version, peer, attached_at";

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub name: String,
    pub cert_fingerprint: String,
    pub agent_version: String,
    pub enrolled_at: i64,
    pub last_seen: i64,
    pub snapshot_version: i64,
    pub peer: String,
    /// When its current connection began; 0 when detached.
    pub attached_at: i64,
}

impl AgentRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            name: r.try_get("name")?,
            cert_fingerprint: r.try_get("cert_fingerprint")?,
            agent_version: r.try_get("agent_version")?,
            enrolled_at: r.try_get("enrolled_at")?,
            last_seen: r.try_get("last_seen")?,
            snapshot_version: r.try_get("snapshot_version")?,
            peer: r.try_get("peer")?,
            attached_at: r.try_get("attached_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct JoinTokenRow {
    pub id: String,
    pub secret_hash: String,
    pub agent: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

impl JoinTokenRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            secret_hash: r.try_get("secret_hash")?,
            agent: r.try_get("agent")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            used_at: r.try_get("used_at")?,
        })
    }
}

/// The control plane's signature over a session's chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSealRow {
    pub session_id: String,
    /// The agent that delivered the ending event.
    pub agent: String,
    pub event_count: i64,
    pub head_hash: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: String,
    pub sealed_at_ms: i64,
}

impl SessionSealRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            session_id: r.try_get("session_id")?,
            agent: r.try_get("agent")?,
            event_count: r.try_get("event_count")?,
            head_hash: r.try_get("head_hash")?,
            signature: r.try_get("signature")?,
            key_id: r.try_get("key_id")?,
            sealed_at_ms: r.try_get("sealed_at_ms")?,
        })
    }
}
