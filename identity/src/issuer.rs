//! Configuration of a trusted identity provider and its validation.

use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Serialize};

use crate::error::IdentityError;

/// Claim that carries group membership unless configured otherwise.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";
/// Claim that carries the subject unless configured otherwise.
pub const DEFAULT_SUBJECT_CLAIM: &str = "sub";
/// Clock-skew allowance applied to `exp`, `nbf` and `iat` unless configured.
pub const DEFAULT_LEEWAY_SECONDS: u32 = 60;
/// Largest accepted leeway: more would quietly stretch every token's lifetime.
pub const MAX_LEEWAY_SECONDS: u32 = 300;
/// Algorithms allowed when `algorithms` is omitted: the asymmetric ones OIDC
/// providers and Sluice's built-in issuer use.
pub const DEFAULT_ALGORITHMS: &[&str] = &["RS256", "ES256", "EdDSA"];

/// One identity provider whose tokens Sluice accepts.
///
/// The control plane fetches `jwks_json` (through OIDC discovery) and ships
/// the whole entry to agents in their snapshot; this crate never fetches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedIssuer {
    /// Exact value of the `iss` claim (no normalization: a trailing slash
    /// matters).
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one of them. Must
    /// not be empty: a verifier that accepts any audience would accept tokens
    /// minted for other applications.
    pub audiences: Vec<String>,
    /// Accepted `alg` header values, e.g. `RS256`, `PS256`, `ES256`, `ES384`,
    /// `EdDSA`. Symmetric (`HS*`) algorithms and `none` are refused.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The issuer's JWKS document (`{"keys":[...]}`) as JSON text.
    pub jwks_json: String,
    /// Claim holding group names (a string or an array of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim holding the subject (a non-empty string).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Clock-skew allowance in seconds, at most [`MAX_LEEWAY_SECONDS`].
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u32,
    /// Whether a token's `"sluice_kind": "service_account"` is believed:
    /// only for Sluice's built-in issuer, which mints service-account
    /// tokens for the accounts the control plane registers. Any other
    /// issuer's tokens are users' (its `sub` could otherwise name a
    /// service account a policy grants).
    #[serde(default)]
    pub service_accounts: bool,
}

fn default_algorithms() -> Vec<String> {
    DEFAULT_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect()
}

fn default_groups_claim() -> String {
    DEFAULT_GROUPS_CLAIM.to_owned()
}

fn default_subject_claim() -> String {
    DEFAULT_SUBJECT_CLAIM.to_owned()
}

fn default_leeway() -> u32 {
    DEFAULT_LEEWAY_SECONDS
}

impl TrustedIssuer {
    /// A trusted issuer with the default algorithms, claims and leeway.
    pub fn new(
        issuer: impl Into<String>,
        audiences: Vec<String>,
        jwks_json: impl Into<String>,
    ) -> Self {
        TrustedIssuer {
            issuer: issuer.into(),
            audiences,
            algorithms: default_algorithms(),
            jwks_json: jwks_json.into(),
            groups_claim: default_groups_claim(),
            subject_claim: default_subject_claim(),
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            service_accounts: false,
        }
    }

    /// Checks everything except the JWKS contents (which [`crate::Verifier::new`]
    /// parses), returning the allowed algorithms parsed.
    pub(crate) fn validated_algorithms(&self) -> Result<Vec<Algorithm>, IdentityError> {
        let invalid = |key: &'static str, reason: String| IdentityError::InvalidIssuer {
            issuer: self.issuer.clone(),
            key,
            reason,
        };
        if self.issuer.is_empty() {
            return Err(invalid("issuer", "must not be empty".to_owned()));
        }
        if self.issuer.trim() != self.issuer {
            return Err(invalid(
                "issuer",
                "has leading or trailing whitespace: it must equal the `iss` claim exactly"
                    .to_owned(),
            ));
        }
        if self.audiences.is_empty() {
            return Err(invalid(
                "audiences",
                "must list at least one audience (the client id or API identifier tokens \
                 are issued for)"
                    .to_owned(),
            ));
        }
        if self.audiences.iter().any(|a| a.is_empty()) {
            return Err(invalid(
                "audiences",
                "must not contain an empty string".to_owned(),
            ));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                "algorithms",
                "must list at least one algorithm, e.g. RS256".to_owned(),
            ));
        }
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for name in &self.algorithms {
            let alg = Algorithm::from_str(name).map_err(|_| {
                invalid(
                    "algorithms",
                    format!(
                        "contains unsupported algorithm `{name}`: use RS256, RS384, RS512, \
                         PS256, PS384, PS512, ES256, ES384 or EdDSA"
                    ),
                )
            })?;
            if alg.family() == AlgorithmFamily::Hmac {
                return Err(invalid(
                    "algorithms",
                    format!(
                        "contains symmetric algorithm `{name}`: symmetric algorithms are never \
                         accepted; use the issuer's asymmetric algorithm (e.g. RS256)"
                    ),
                ));
            }
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if self.groups_claim.is_empty() {
            return Err(invalid("groups_claim", "must not be empty".to_owned()));
        }
        if self.subject_claim.is_empty() {
            return Err(invalid("subject_claim", "must not be empty".to_owned()));
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(invalid(
                "leeway_seconds",
                format!("must be at most {MAX_LEEWAY_SECONDS}; fix the clocks instead"),
            ));
        }
        Ok(algorithms)
    }

    /// Checks the configuration (everything except individual JWKS keys):
    /// non-empty issuer, at least one audience, known asymmetric algorithms
    /// only, non-empty claim names, leeway within bounds.
    pub fn validate(&self) -> Result<(), IdentityError> {
        self.validated_algorithms().map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn issuer() -> TrustedIssuer {
        TrustedIssuer::new(
            "https://idp.example",
            vec!["sluice".to_owned()],
            r#"{"keys":[]}"#,
        )
    }

    fn key_of(err: IdentityError) -> &'static str {
        match err {
            IdentityError::InvalidIssuer { key, .. } => key,
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_when_deserializing() {
        let parsed: TrustedIssuer = serde_json::from_str(
            r#"{"issuer":"https://idp.example","audiences":["sluice"],"jwks_json":"{}"}"#,
        )
        .expect("parse");
        assert_eq!(parsed.groups_claim, "groups");
        assert_eq!(parsed.subject_claim, "sub");
        assert_eq!(parsed.leeway_seconds, DEFAULT_LEEWAY_SECONDS);
        assert_eq!(parsed.algorithms, vec!["RS256", "ES256", "EdDSA"]);
        assert!(parsed.validate().is_ok());
    }

    #[test]
    fn validation_names_the_key() {
        let mut i = issuer();
        i.audiences.clear();
        assert_eq!(key_of(i.validate().unwrap_err()), "audiences");

        let mut i = issuer();
        i.issuer = String::new();
        assert_eq!(key_of(i.validate().unwrap_err()), "issuer");

        let mut i = issuer();
        i.issuer = "https://idp.example ".to_owned();
        assert_eq!(key_of(i.validate().unwrap_err()), "issuer");

        let mut i = issuer();
        i.algorithms = vec!["RS256".to_owned(), "HS256".to_owned()];
        let err = i.validate().unwrap_err();
        assert!(err.to_string().contains("symmetric"), "{err}");
        assert_eq!(key_of(err), "algorithms");

        let mut i = issuer();
        i.algorithms = vec!["none".to_owned()];
        assert_eq!(key_of(i.validate().unwrap_err()), "algorithms");

        let mut i = issuer();
        i.algorithms.clear();
        assert_eq!(key_of(i.validate().unwrap_err()), "algorithms");

        let mut i = issuer();
        i.groups_claim = String::new();
        assert_eq!(key_of(i.validate().unwrap_err()), "groups_claim");

        let mut i = issuer();
        i.subject_claim = String::new();
        assert_eq!(key_of(i.validate().unwrap_err()), "subject_claim");

        let mut i = issuer();
        i.leeway_seconds = MAX_LEEWAY_SECONDS + 1;
        assert_eq!(key_of(i.validate().unwrap_err()), "leeway_seconds");
    }
}
