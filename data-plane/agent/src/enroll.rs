//! Enrollment: exchanging a one-time join token for a client certificate.
//!
//! The join token pins the control plane CA's SHA-256 fingerprint (like
//! kubeadm's discovery hash). Before sending anything secret, the agent
//! opens a TLS connection, takes the CA certificate the server presents in
//! its chain and checks it against the pin; only then does it trust that CA
//! for the real, fully verified connection that carries the token.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, bail};
use ring::digest;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use sluice_proto::{EnrollRequest, agent_service_client::AgentServiceClient};

/// Files the agent keeps in its state directory.
pub struct StatePaths {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
    pub identity: PathBuf,
    pub snapshot: PathBuf,
    pub spool: PathBuf,
}

impl StatePaths {
    pub fn new(dir: &Path) -> Self {
        Self {
            key: dir.join("agent.key"),
            cert: dir.join("agent.crt"),
            ca: dir.join("ca.crt"),
            identity: dir.join("identity.json"),
            snapshot: dir.join("snapshot.bin"),
            spool: dir.join("spool"),
        }
    }
}

/// What enrollment leaves behind, besides the key and certificates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolledIdentity {
    pub agent_name: String,
    pub ca_fingerprint: String,
    /// Snapshot signing keys: (key id, raw Ed25519 public key hex).
    pub snapshot_keys: Vec<(String, String)>,
}

/// Credentials for the mTLS channel.
pub struct Enrolled {
    pub identity: EnrolledIdentity,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl Enrolled {
    pub fn load(paths: &StatePaths) -> anyhow::Result<Option<Self>> {
        if !paths.identity.exists() {
            return Ok(None);
        }
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let identity: EnrolledIdentity = serde_json::from_str(&read(&paths.identity)?)
            .with_context(|| {
                format!(
                    "{} is corrupt: remove the state directory and enroll again",
                    paths.identity.display()
                )
            })?;
        Ok(Some(Self {
            identity,
            key_pem: read(&paths.key)?,
            cert_pem: read(&paths.cert)?,
            ca_pem: read(&paths.ca)?,
        }))
    }
}

/// A parsed join token: `sjt1.<id>.<secret>.<ca-sha256>`.
fn pinned_fingerprint(token: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    match parts.as_slice() {
        ["sjt1", id, secret, fp]
            if !id.is_empty()
                && !secret.is_empty()
                && fp.len() == 64
                && fp.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(fp.to_ascii_lowercase())
        }
        _ => bail!(
            "join token is malformed: copy it exactly as `sluice join-token create` printed it"
        ),
    }
}

/// Fetches the CA certificate from the control plane's TLS handshake and
/// returns it (PEM) only if its fingerprint matches the pin.
async fn fetch_pinned_ca(host: &str, port: u16, pin: &str) -> anyhow::Result<String> {
    // Validation happens after the handshake, against the pinned
    // fingerprint, and again by the real (fully verified) connection.
    let chain: crate::tls::Chain = Arc::new(Mutex::new(Vec::new()));
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAnyServer::capturing(
            chain.clone(),
        )))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot reach the control plane at {host}:{port}"))?;
    let name = ServerName::try_from(host.to_owned()).context("invalid control plane host name")?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let _tls = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        connector.connect(name, tcp),
    )
    .await
    .context("TLS handshake with the control plane timed out")?
    .context("TLS handshake with the control plane failed")?;
    let chain = chain.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for cert in &chain {
        let fp = hex::encode(digest::digest(&digest::SHA256, cert.as_ref()));
        if fp == pin {
            return Ok(der_to_pem(cert.as_ref()));
        }
    }
    bail!(
        "the control plane at {host}:{port} did not present the CA pinned by the join token (sha256 {pin}): \
         refusing to enroll. Check SLUICE_CONTROL_PLANE, or create a token on the right control plane"
    )
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Enrolls with the control plane and writes the results to the state
/// directory (private key mode 0600).
pub async fn enroll(
    args: &crate::config::AgentArgs,
    paths: &StatePaths,
    join_token: &str,
) -> anyhow::Result<Enrolled> {
    let pin = pinned_fingerprint(join_token)?;
    let (host, port) = args.control_plane_host_port()?;
    let ca_pem = fetch_pinned_ca(&host, port, &pin).await?;

    let key = rcgen::KeyPair::generate().context("cannot generate the agent key")?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice-agent");
    let csr = params
        .serialize_request(&key)
        .context("cannot create the certificate signing request")?;

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
        .domain_name(host.clone());
    let channel = tonic::transport::Endpoint::from_shared(args.control_plane.clone())?
        .tls_config(tls)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot connect to the control plane at {}",
                args.control_plane
            )
        })?;
    let response = AgentServiceClient::new(channel)
        .enroll(EnrollRequest {
            join_token: join_token.trim().to_owned(),
            csr_pem: csr.pem()?,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            server_names: args.tls_hosts.clone(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("enrollment refused: {}", status.message()))?
        .into_inner();

    let identity = EnrolledIdentity {
        agent_name: response.agent_name,
        ca_fingerprint: pin,
        snapshot_keys: response
            .snapshot_keys
            .iter()
            .map(|k| (k.key_id.clone(), hex::encode(&k.public_key)))
            .collect(),
    };
    let enrolled = Enrolled {
        identity,
        key_pem: key.serialize_pem(),
        cert_pem: response.certificate_pem,
        ca_pem,
    };
    save(paths, &enrolled)?;
    Ok(enrolled)
}

fn save(paths: &StatePaths, e: &Enrolled) -> anyhow::Result<()> {
    if let Some(dir) = paths.key.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::fsutil::write_private(&paths.key, e.key_pem.as_bytes())?;
    crate::fsutil::write_atomic(&paths.cert, e.cert_pem.as_bytes())?;
    crate::fsutil::write_atomic(&paths.ca, e.ca_pem.as_bytes())?;
    crate::fsutil::write_atomic(
        &paths.identity,
        serde_json::to_string_pretty(&e.identity)?.as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_taken_from_the_token() {
        let fp = "AB".repeat(32);
        assert_eq!(
            pinned_fingerprint(&format!("sjt1.id.secret.{fp}")).unwrap(),
            fp.to_ascii_lowercase()
        );
        assert!(pinned_fingerprint("sjt1.id.secret").is_err());
        assert!(pinned_fingerprint(&format!("sjt1.id.secret.{}", "g".repeat(64))).is_err());
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let pem = der_to_pem(&[7u8; 100]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
    }
}
