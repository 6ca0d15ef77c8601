//! The two error types: [`IdentityError`] for configuration and key handling
//! (shown to the operator), [`VerifyError`] for rejected tokens (shown to the
//! client).

use thiserror::Error;

/// An error in trusted-issuer configuration, in issuer key material, or while
/// minting a token. Meant for the operator: messages name the offending issuer
/// and configuration key. Never contains private key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    /// A trusted issuer entry is invalid; `key` names the configuration key.
    #[error("trusted issuer `{issuer}`: `{key}` {reason}")]
    InvalidIssuer {
        /// The issuer as configured (may be empty when that is the problem).
        issuer: String,
        /// The configuration key at fault, e.g. `audiences`.
        key: &'static str,
        /// What is wrong and what to do about it.
        reason: String,
    },
    /// The same issuer is configured more than once.
    #[error("trusted issuer `{0}` is configured more than once: merge the entries into one")]
    DuplicateIssuer(String),
    /// The issuer's `jwks_json` is not a JWKS document at all (individual
    /// unusable keys are skipped, not reported here).
    #[error(
        "trusted issuer `{issuer}`: `jwks_json` is not a valid JWKS document ({reason}): \
         supply the JSON served at the issuer's jwks_uri"
    )]
    InvalidJwks {
        /// The issuer whose JWKS could not be parsed.
        issuer: String,
        /// Why it could not be parsed.
        reason: String,
    },
    /// A key id for the built-in issuer is empty, too long, or has characters
    /// outside `[A-Za-z0-9._-]`.
    #[error("invalid issuer key id: use 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', '-'")]
    InvalidKeyId,
    /// The built-in issuer's private key could not be loaded.
    #[error("invalid issuer key: {0}")]
    InvalidKey(&'static str),
    /// The system random number generator failed while generating a key.
    #[error("could not generate an issuer key: the system random number generator failed")]
    KeyGeneration,
    /// The claims handed to [`crate::IssuerKey::sign`] would produce a token
    /// that Sluice itself would reject.
    #[error("cannot mint token: {0}")]
    InvalidClaims(&'static str),
    /// Claims could not be serialized.
    #[error("cannot mint token: claims could not be encoded as JSON: {0}")]
    Encoding(String),
}

/// Why a token was rejected.
///
/// The `Display` text is meant to be sent to the client as is: it says what
/// is wrong and what to do, and never contains the token or any part of it
/// (the only token-derived text is a sanitized, truncated algorithm name).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// Not a well-formed compact JWS/JWT (wrong number of segments, bad
    /// base64url, header or payload not a JSON object, too long, or an
    /// unsupported critical header).
    #[error("token is malformed: present a JWT issued by a trusted identity provider")]
    Malformed,
    /// The header's `alg` is not accepted: `none`, a symmetric `HS*`
    /// algorithm, an unknown name, one the issuer does not allow, or one that
    /// does not match the type of the key named by `kid`.
    #[error(
        "token signing algorithm `{0}` is not accepted: get a token from a trusted \
         identity provider"
    )]
    UnsupportedAlgorithm(String),
    /// The (unverified) `iss` claim does not exactly match a trusted issuer.
    #[error(
        "token issuer is not trusted: get a token from an identity provider this gateway trusts"
    )]
    UnknownIssuer,
    /// The `kid` does not name a usable key of the issuer.
    #[error(
        "token signing key is not known: the issuer may have rotated its keys; retry in a \
         minute or get a new token"
    )]
    UnknownKey,
    /// The signature does not verify with the issuer's key.
    #[error("token signature is invalid: get a new token from your identity provider")]
    InvalidSignature,
    /// `exp` is in the past (beyond the issuer's leeway).
    #[error("token expired: get a new token")]
    Expired,
    /// `nbf` (or `iat`) is in the future (beyond the issuer's leeway).
    #[error("token is not valid yet: check this machine's clock or wait and retry")]
    NotYetValid,
    /// `aud` does not contain any audience configured for the issuer.
    #[error(
        "token was not issued for this gateway (audience mismatch): request a token for \
         the gateway's audience"
    )]
    InvalidAudience,
    /// A required claim (or the `kid` header) is absent.
    #[error(
        "token is missing the required `{0}` claim: get a token from a trusted identity provider"
    )]
    MissingClaim(&'static str),
    /// A claim is present but has the wrong JSON type (for example `exp` is a
    /// string or `groups` is an object).
    #[error(
        "token claim `{0}` has an unexpected type: get a token from a trusted identity provider"
    )]
    InvalidClaim(&'static str),
}

impl VerifyError {
    /// A short, stable, machine-readable code for metrics and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Malformed => "malformed",
            VerifyError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            VerifyError::UnknownIssuer => "unknown_issuer",
            VerifyError::UnknownKey => "unknown_key",
            VerifyError::InvalidSignature => "invalid_signature",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::InvalidAudience => "invalid_audience",
            VerifyError::MissingClaim(_) => "missing_claim",
            VerifyError::InvalidClaim(_) => "invalid_claim",
        }
    }

    /// Builds [`VerifyError::UnsupportedAlgorithm`] from a token-supplied
    /// algorithm name, keeping only a short run of `[A-Za-z0-9_-]` so that
    /// attacker-chosen text cannot smuggle anything into a client message or
    /// a log line.
    pub(crate) fn unsupported_algorithm(alg: &str) -> Self {
        let clean: String = alg
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(16)
            .collect();
        VerifyError::UnsupportedAlgorithm(if clean.is_empty() {
            "?".to_owned()
        } else {
            clean
        })
    }
}
