//! The control plane's own keys: the agent CA, the snapshot signer, the
//! audit seal key and the built-in token issuer key. All are created on first start, sealed by the
//! vault and kept in the database, so every replica uses the same keys and
//! none of them ever touches the filesystem in plaintext.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use ring::{
    digest,
    rand::{SecureRandom as _, SystemRandom},
    signature::{Ed25519KeyPair, KeyPair as _},
};

use crate::{
    store::{Store, SystemKeyRow, now_ms},
    vault::Vault,
};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    #[error("certificate error: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error(
        "key material in the database is invalid ({0}): restore the database or the right master key"
    )]
    Invalid(&'static str),
    #[error("identity key error: {0}")]
    Identity(String),
}

/// Signs policy snapshots (Ed25519).
pub struct SnapshotSigner {
    kid: String,
    pair: Ed25519KeyPair,
}

impl SnapshotSigner {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        self.pair.sign(payload).as_ref().to_vec()
    }
}

/// Seals ended sessions: signs the head of their audit chain (Ed25519).
/// Its own key, so that it can be published to auditors and rotated
/// without touching snapshot signing.
pub struct AuditSealer {
    kid: String,
    pair: Ed25519KeyPair,
}

impl AuditSealer {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs `claim` (see `sluice_audit_chain::seal` for the message).
    pub fn sign(&self, claim: &sluice_audit_chain::SealClaim) -> Vec<u8> {
        self.pair.sign(&claim.message()).as_ref().to_vec()
    }
}

/// The certificate authority that issues agents' client certificates and
/// the control plane's own gRPC server certificate.
pub struct CertificateAuthority {
    cert_pem: String,
    key: KeyPair,
    fingerprint: String,
}

/// A certificate with its private key, PEM-encoded.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate (DER), hex: what join tokens pin.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, KeyError> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }

    /// A fresh server certificate for the gRPC endpoint, valid for the
    /// given host names and IP addresses.
    pub fn issue_server_cert(&self, hosts: &[String]) -> Result<IssuedCert, KeyError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name = dn("sluice-control-plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, 365);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's CSR. Only the public key is taken from the request:
    /// the subject is always the agent name bound to the join token, so an
    /// agent cannot ask for another identity.
    ///
    /// The certificate also serves the agent's client-facing TLS listeners,
    /// for the host names the agent asked for (`server_names`, validated by
    /// the caller).
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        agent: &str,
        server_names: &[String],
    ) -> Result<String, KeyError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::new(server_names.to_vec())?;
        params.distinguished_name = dn(agent);
        params.subject_alt_names.push(SanType::URI(
            format!("spiffe://sluice/agent/{agent}").try_into()?,
        ));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        set_validity(&mut params, 365);
        csr.params = params;
        Ok(csr.signed_by(&self.issuer()?)?.pem())
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Sluice");
    dn
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(days);
}

/// SHA-256 of a certificate's DER encoding (first certificate of a PEM), hex.
pub fn cert_fingerprint_pem(pem: &str) -> Option<String> {
    let der = rustls_pem_first_cert(pem)?;
    Some(sha256_hex(&der))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

fn rustls_pem_first_cert(pem: &str) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(parsed.contents)
}

/// All keys, loaded (or created on first start).
pub struct Keys {
    pub ca: CertificateAuthority,
    pub snapshot: SnapshotSigner,
    pub seal: AuditSealer,
    pub mask: MaskKeys,
}

/// The root of the masking `hash` strategy's per-resource keys (kept in
/// the vault). A resource's key is derived from it and its name, so every
/// agent serving the resource hashes equal values alike, and no credential
/// is ever a hash key.
pub struct MaskKeys {
    key: ring::hmac::Key,
}

impl MaskKeys {
    pub fn for_resource(&self, resource: &str) -> Vec<u8> {
        ring::hmac::sign(&self.key, format!("sluice-mask-key\0{resource}").as_bytes())
            .as_ref()
            .to_vec()
    }
}

impl Keys {
    /// Returns the keys and the built-in issuer's signing key (handed to the
    /// identity service, which owns it).
    pub async fn load_or_create(
        store: &Store,
        vault: &Vault,
    ) -> Result<(Self, sluice_identity::IssuerKey), KeyError> {
        let ca = load_or_create(store, vault, "ca", || {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn("Sluice control plane CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            set_validity(&mut params, 3650);
            let cert = params.self_signed(&key)?;
            Ok((
                random_kid(),
                key.serialize_pem().into_bytes(),
                cert.pem().into_bytes(),
            ))
        })
        .await?;
        let ca = {
            let (_, secret, public) = ca;
            let key_pem =
                String::from_utf8(secret.to_vec()).map_err(|_| KeyError::Invalid("CA key"))?;
            let cert_pem =
                String::from_utf8(public).map_err(|_| KeyError::Invalid("CA certificate"))?;
            let fingerprint =
                cert_fingerprint_pem(&cert_pem).ok_or(KeyError::Invalid("CA certificate"))?;
            CertificateAuthority {
                key: KeyPair::from_pem(&key_pem)?,
                cert_pem,
                fingerprint,
            }
        };

        let (kid, secret, _) = load_or_create(store, vault, "snapshot", || {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| KeyError::Invalid("could not generate snapshot key"))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| KeyError::Invalid("snapshot key"))?;
            Ok((
                random_kid(),
                pkcs8.as_ref().to_vec(),
                pair.public_key().as_ref().to_vec(),
            ))
        })
        .await?;
        let snapshot = SnapshotSigner {
            kid,
            pair: Ed25519KeyPair::from_pkcs8(&secret)
                .map_err(|_| KeyError::Invalid("snapshot key"))?,
        };

        let (kid, secret, _) = load_or_create(store, vault, "audit-seal", || {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| KeyError::Invalid("could not generate audit seal key"))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| KeyError::Invalid("audit seal key"))?;
            Ok((
                random_kid(),
                pkcs8.as_ref().to_vec(),
                pair.public_key().as_ref().to_vec(),
            ))
        })
        .await?;
        let seal = AuditSealer {
            kid,
            pair: Ed25519KeyPair::from_pkcs8(&secret)
                .map_err(|_| KeyError::Invalid("audit seal key"))?,
        };

        let (_, secret, _) = load_or_create(store, vault, "mask", || {
            let mut key = vec![0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| KeyError::Invalid("could not generate the mask key"))?;
            Ok((random_kid(), key, Vec::new()))
        })
        .await?;
        let mask = MaskKeys {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
        };

        let (kid, secret, _) = load_or_create(store, vault, "token-issuer", || {
            let kid = random_kid();
            let (_, pkcs8) = sluice_identity::IssuerKey::generate(&kid)
                .map_err(|e| KeyError::Identity(e.to_string()))?;
            Ok((kid, pkcs8, Vec::new()))
        })
        .await?;
        let issuer = sluice_identity::IssuerKey::from_pkcs8(&kid, &secret)
            .map_err(|e| KeyError::Identity(e.to_string()))?;

        Ok((
            Self {
                ca,
                snapshot,
                seal,
                mask,
            },
            issuer,
        ))
    }
}

type KeyMaterial = (String, Vec<u8>, Vec<u8>);

async fn load_or_create<F>(
    store: &Store,
    vault: &Vault,
    name: &str,
    create: F,
) -> Result<(String, crate::vault::Plaintext, Vec<u8>), KeyError>
where
    F: FnOnce() -> Result<KeyMaterial, KeyError>,
{
    let label = format!("system-key:{name}");
    let row = match store.system_key(name).await? {
        Some(row) => row,
        None => {
            let (kid, secret, public_data) = create()?;
            let sealed = vault.seal(&label, &secret)?;
            let row = SystemKeyRow {
                name: name.to_owned(),
                kid,
                sealed,
                public_data,
                created_at: now_ms(),
            };
            tracing::info!(key = name, "created control plane key");
            // Another replica may have won the race: use whatever is stored.
            store.insert_system_key_if_absent(&row).await?
        }
    };
    let secret = vault.open(&label, &row.sealed)?;
    Ok((row.kid, secret, row.public_data))
}

fn random_kid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}
