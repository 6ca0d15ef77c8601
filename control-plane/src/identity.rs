//! Who is calling: the built-in token issuer and the set of trusted
//! issuers (built-in plus configured external OIDC providers).
//!
//! Verification itself lives in `sluice-identity` so agents verify tokens
//! with exactly the same code. This module owns the I/O around it: OIDC
//! discovery, JWKS fetching and rotation, and minting tokens.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sluice_identity::{Identity, IssuerKey, TokenClaims, TrustedIssuer, Verifier, VerifyError};

use crate::config::ExternalIssuerConfig;

/// The audience of tokens minted by the built-in issuer.
pub const AUDIENCE: &str = "sluice";

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub subject: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub ttl: Duration,
    pub service_account: bool,
}

pub struct IdentityService {
    issuer_url: String,
    key: IssuerKey,
    admin_groups: Vec<String>,
    externals: Vec<ExternalIssuerConfig>,
    /// Current JWKS of each external issuer (same order as `externals`).
    external_jwks: RwLock<Vec<Option<String>>>,
    verifier: RwLock<Arc<Verifier>>,
}

impl IdentityService {
    pub fn new(
        issuer_url: String,
        key: IssuerKey,
        admin_groups: Vec<String>,
        externals: Vec<ExternalIssuerConfig>,
    ) -> anyhow::Result<Self> {
        let n = externals.len();
        let svc = Self {
            issuer_url,
            key,
            admin_groups,
            externals,
            external_jwks: RwLock::new(vec![None; n]),
            verifier: RwLock::new(Arc::new(Verifier::new(&[])?)),
        };
        svc.rebuild()?;
        Ok(svc)
    }

    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    /// The built-in issuer's JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        sluice_identity::jwks(&[&self.key])
    }

    /// Every issuer agents and the API must trust, with current keys.
    pub fn trusted_issuers(&self) -> Vec<TrustedIssuer> {
        let mut out = vec![TrustedIssuer {
            issuer: self.issuer_url.clone(),
            audiences: vec![AUDIENCE.to_owned()],
            algorithms: vec!["EdDSA".to_owned()],
            jwks_json: self.jwks().to_string(),
            groups_claim: "groups".to_owned(),
            subject_claim: "sub".to_owned(),
            leeway_seconds: 30,
            // Its service-account tokens are minted for registered accounts.
            service_accounts: true,
        }];
        let jwks = self.external_jwks.read().unwrap_or_else(|e| e.into_inner());
        for (cfg, keys) in self.externals.iter().zip(jwks.iter()) {
            // An issuer whose keys were never fetched is still listed with
            // an empty key set: its tokens fail closed with "unknown key".
            out.push(TrustedIssuer {
                issuer: cfg.issuer.clone(),
                audiences: cfg.audiences.clone(),
                algorithms: cfg.algorithms.clone(),
                jwks_json: keys.clone().unwrap_or_else(|| r#"{"keys":[]}"#.to_owned()),
                groups_claim: cfg.groups_claim.clone(),
                subject_claim: cfg.subject_claim.clone(),
                leeway_seconds: cfg.leeway_seconds,
                service_accounts: false,
            });
        }
        out
    }

    fn rebuild(&self) -> anyhow::Result<()> {
        let verifier = Verifier::new(&self.trusted_issuers())?;
        *self.verifier.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(verifier);
        Ok(())
    }

    pub fn verify(&self, token: &str) -> Result<Identity, VerifyError> {
        let verifier = self
            .verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        verifier.verify(token, unix_now())
    }

    /// Admins hold the `admin` role in a token of the built-in issuer, or
    /// belong to one of the configured `admin_groups`. An external issuer's
    /// `roles` claim is not believed: an identity provider's "admin" is
    /// usually some other application's, and only `admin_groups` says which
    /// of its groups this control plane trusts.
    pub fn is_admin(&self, id: &Identity) -> bool {
        (id.issuer == self.issuer_url && id.roles.iter().any(|r| r == "admin"))
            || id.groups.iter().any(|g| self.admin_groups.contains(g))
    }

    /// Mints a token with the built-in issuer.
    pub fn issue(&self, req: &TokenRequest) -> anyhow::Result<(String, u64)> {
        let now = unix_now();
        let exp = now + req.ttl.as_secs().max(1);
        let claims = TokenClaims {
            iss: self.issuer_url.clone(),
            sub: req.subject.clone(),
            aud: vec![AUDIENCE.to_owned()],
            exp,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            groups: req.groups.clone(),
            roles: req.roles.clone(),
            sluice_kind: req.service_account.then(|| "service_account".to_owned()),
        };
        Ok((self.key.sign(&claims)?, exp))
    }

    /// Fetches every external issuer's JWKS once; returns true if any
    /// issuer's keys changed (agents then need a new snapshot).
    pub async fn refresh_external(&self, http: &reqwest::Client) -> bool {
        let mut changed = false;
        for (i, cfg) in self.externals.iter().enumerate() {
            match fetch_jwks(http, cfg).await {
                Ok(jwks) => {
                    let mut all = self
                        .external_jwks
                        .write()
                        .unwrap_or_else(|e| e.into_inner());
                    if all.get(i).and_then(|k| k.as_deref()) != Some(jwks.as_str()) {
                        tracing::info!(issuer = %cfg.issuer, "trusted issuer keys updated");
                        if let Some(slot) = all.get_mut(i) {
                            *slot = Some(jwks);
                        }
                        changed = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(issuer = %cfg.issuer, error = %e, "could not refresh issuer keys; keeping the last known keys")
                }
            }
        }
        if changed && let Err(e) = self.rebuild() {
            tracing::error!(error = %e, "fetched issuer keys are unusable");
        }
        changed
    }

    pub fn refresh_interval(&self) -> Option<Duration> {
        self.externals.iter().map(|c| c.refresh).min()
    }

    pub fn has_externals(&self) -> bool {
        !self.externals.is_empty()
    }
}

async fn fetch_jwks(http: &reqwest::Client, cfg: &ExternalIssuerConfig) -> anyhow::Result<String> {
    let jwks_url = match &cfg.jwks_url {
        Some(u) => u.clone(),
        None => {
            let discovery = format!(
                "{}/.well-known/openid-configuration",
                cfg.issuer.trim_end_matches('/')
            );
            let doc: serde_json::Value = http
                .get(&discovery)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if doc.get("issuer").and_then(|v| v.as_str()) != Some(cfg.issuer.as_str()) {
                anyhow::bail!("discovery document at {discovery} names a different issuer");
            }
            doc.get("jwks_uri")
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    anyhow::anyhow!("discovery document at {discovery} has no jwks_uri")
                })?
                .to_owned()
        }
    };
    let jwks: serde_json::Value = http
        .get(&jwks_url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if !jwks.get("keys").is_some_and(|k| k.is_array()) {
        anyhow::bail!("{jwks_url} is not a JWKS document");
    }
    Ok(jwks.to_string())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(issuer: &str, groups: &[&str], roles: &[&str]) -> Identity {
        Identity {
            subject: "someone".into(),
            issuer: issuer.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            kind: sluice_identity::SubjectKind::User,
            expires_at: u64::MAX,
            valid_until: u64::MAX,
            token_id: None,
        }
    }

    #[test]
    fn only_the_built_in_issuer_confers_the_admin_role() {
        let (key, _) = IssuerKey::generate("k1").unwrap();
        let svc = IdentityService::new(
            "https://sluice.example".into(),
            key,
            vec!["platform-admins".into()],
            Vec::new(),
        )
        .unwrap();
        let ours = "https://sluice.example";
        let idp = "https://login.example.com";
        assert!(svc.is_admin(&identity(ours, &[], &["admin"])));
        assert!(!svc.is_admin(&identity(idp, &[], &["admin"])));
        assert!(svc.is_admin(&identity(idp, &["platform-admins"], &[])));
        assert!(svc.is_admin(&identity(ours, &["platform-admins"], &[])));
        assert!(!svc.is_admin(&identity(ours, &["developers"], &["reader"])));
    }
}
