//! The policy snapshot the agent enforces.
//!
//! Snapshots arrive signed from the control plane; the agent verifies the
//! signature with the keys it received at enrollment, decodes the compiled
//! policy and the trusted issuers, and publishes the result through a
//! `watch` channel. The hot path only ever calls `borrow()`: it never waits
//! on the control plane. No snapshot (or a stale one) means every client is
//! refused: there is no "allow" fallback.
//!
//! The last verified snapshot is cached on disk, encrypted with a key
//! derived from the agent's private key (it carries credentials), with the
//! time the control plane last confirmed it, so a restart while the control
//! plane is down keeps enforcing it until it becomes too stale.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use prost::Message as _;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
    rand::{SecureRandom as _, SystemRandom},
    signature::{ED25519, UnparsedPublicKey},
};
use sluice_policy::CompiledPolicy;
use sluice_proto as pb;
use tokio::sync::watch;

/// A verified, decoded snapshot ready for enforcement.
pub struct Active {
    pub version: u64,
    pub issued_at_ms: i64,
    pub policy: CompiledPolicy,
    pub verifier: sluice_identity::Verifier,
    pub resources: HashMap<String, pb::Resource>,
    /// Credentials by name. Never logged; never leave the agent except to
    /// authenticate upstream.
    pub credentials: HashMap<String, pb::Credential>,
    pub max_staleness: Duration,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active")
            .field("version", &self.version)
            .field("resources", &self.resources.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why the agent has no usable snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Never received (or could not load) a valid snapshot.
    None(String),
    Valid(u64),
    /// Had one, but lost contact for longer than the allowed staleness.
    Stale(u64),
}

pub type SnapshotRx = watch::Receiver<Option<Arc<Active>>>;

/// Verifies a signed snapshot against the enrolled keys and decodes it.
pub fn verify(
    signed: &pb::SignedSnapshot,
    keys: &[(String, String)],
    agent: &str,
    default_staleness: Duration,
) -> anyhow::Result<Active> {
    let (_, key_hex) = keys
        .iter()
        .find(|(kid, _)| *kid == signed.key_id)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "snapshot signed with unknown key `{}`: enroll the agent again",
                signed.key_id
            )
        })?;
    let key = hex::decode(key_hex).context("stored snapshot key is not hex")?;
    UnparsedPublicKey::new(&ED25519, &key)
        .verify(&signed.payload, &signed.signature)
        .map_err(|_| anyhow::anyhow!("snapshot signature is invalid"))?;
    let snap =
        pb::Snapshot::decode(signed.payload.as_slice()).context("snapshot does not decode")?;
    if snap.agent_name != agent {
        bail!("snapshot is for agent `{}`, not `{agent}`", snap.agent_name);
    }
    if snap.policy_format != sluice_policy::POLICY_FORMAT {
        bail!(
            "snapshot policy format `{}` is not supported by this agent (upgrade the agent)",
            snap.policy_format
        );
    }
    let policy = CompiledPolicy::from_json_bytes(&snap.compiled_policy)
        .context("compiled policy does not decode")?;
    let issuers: Vec<sluice_identity::TrustedIssuer> = snap
        .trusted_issuers
        .iter()
        .map(|t| sluice_identity::TrustedIssuer {
            issuer: t.issuer.clone(),
            audiences: t.audiences.clone(),
            algorithms: t.algorithms.clone(),
            jwks_json: t.jwks_json.clone(),
            groups_claim: t.groups_claim.clone(),
            subject_claim: t.subject_claim.clone(),
            leeway_seconds: t.leeway_seconds,
            service_accounts: t.service_accounts,
        })
        .collect();
    let verifier = sluice_identity::Verifier::new(&issuers)
        .context("trusted issuers in the snapshot are invalid")?;
    let settings = snap.settings.unwrap_or_default();
    let max_staleness = match settings.max_staleness_seconds {
        0 => default_staleness,
        s => default_staleness.min(Duration::from_secs(s)),
    };
    Ok(Active {
        version: snap.version,
        issued_at_ms: snap.issued_at_unix_ms,
        policy,
        verifier,
        resources: snap
            .resources
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect(),
        credentials: snap
            .credentials
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect(),
        max_staleness,
    })
}

/// On-disk cache: `SLSNAP1` | confirmed_at_ms u64 LE | nonce | AES-GCM(signed snapshot).
const MAGIC: &[u8; 7] = b"SLSNAP1";

fn cache_key(agent_key_pem: &str) -> anyhow::Result<LessSafeKey> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"sluice-snapshot-cache:v1:");
    ctx.update(agent_key_pem.as_bytes());
    let key = UnboundKey::new(&AES_256_GCM, ctx.finish().as_ref())
        .map_err(|_| anyhow::anyhow!("cache key"))?;
    Ok(LessSafeKey::new(key))
}

pub fn write_cache(
    path: &Path,
    agent_key_pem: &str,
    signed: &pb::SignedSnapshot,
    confirmed_at_ms: u64,
) -> anyhow::Result<()> {
    let key = cache_key(agent_key_pem)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| anyhow::anyhow!("random number generator failed"))?;
    let mut body = signed.encode_to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(MAGIC),
        &mut body,
    )
    .map_err(|_| anyhow::anyhow!("cannot encrypt the snapshot cache"))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + NONCE_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&confirmed_at_ms.to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    crate::fsutil::write_private(path, &out)
}

/// Reads the cache; returns the signed snapshot and when the control plane
/// last confirmed it. Any damage is an error (the caller refuses clients).
pub fn read_cache(path: &Path, agent_key_pem: &str) -> anyhow::Result<(pb::SignedSnapshot, u64)> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = MAGIC.len() + 8 + NONCE_LEN;
    if data.len() < header || &data[..MAGIC.len()] != MAGIC {
        bail!("{} is not a snapshot cache", path.display());
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&data[MAGIC.len()..MAGIC.len() + 8]);
    let confirmed_at = u64::from_le_bytes(ts);
    let nonce = Nonce::try_assume_unique_for_key(&data[MAGIC.len() + 8..header])
        .map_err(|_| anyhow::anyhow!("bad nonce"))?;
    let mut body = data[header..].to_vec();
    let plain = cache_key(agent_key_pem)?
        .open_in_place(nonce, Aad::from(MAGIC), &mut body)
        .map_err(|_| {
            anyhow::anyhow!(
                "{} is corrupt or was written by another agent",
                path.display()
            )
        })?;
    let signed =
        pb::SignedSnapshot::decode(&plain[..]).context("cached snapshot does not decode")?;
    Ok((signed, confirmed_at))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A snapshot of policy document `doc` (YAML) for tests: compiled for
/// agent `a`, each of its resources known by name, no credentials.
#[cfg(test)]
pub(crate) fn test_active(doc: &str, version: u64) -> Active {
    let doc = sluice_policy::parse_document(doc).expect("valid document");
    Active {
        version,
        issued_at_ms: 0,
        policy: sluice_policy::compile(&doc, &doc.resources, "a"),
        verifier: sluice_identity::Verifier::default(),
        resources: doc
            .resources
            .iter()
            .map(|r| {
                let resource = pb::Resource {
                    name: r.name.clone(),
                    ..Default::default()
                };
                (r.name.clone(), resource)
            })
            .collect(),
        credentials: HashMap::new(),
        max_staleness: Duration::from_secs(60),
    }
}
