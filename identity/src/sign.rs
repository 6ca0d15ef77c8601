//! The signing half of Sluice's built-in issuer: an Ed25519 key that mints
//! EdDSA JWTs, and the JWKS through which verifiers (including this crate's
//! [`crate::Verifier`]) trust it.
//!
//! Persisting the key (the PKCS#8 document) and choosing claim values (ids,
//! lifetimes) are the control plane's job; this module only encodes and signs.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::b64;
use crate::error::IdentityError;
use crate::verify::MAX_TOKEN_BYTES;

/// Value of the `sluice_kind` claim that marks a service-account token.
pub const SERVICE_ACCOUNT_KIND: &str = "service_account";

const MAX_KID_LEN: usize = 128;

/// The claims of a token minted by the built-in issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer: the built-in issuer's URL, as configured in its [`crate::TrustedIssuer`].
    pub iss: String,
    /// Subject: user name or service-account name.
    pub sub: String,
    /// Audiences; at least one.
    pub aud: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued-at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not-before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Unique token id, for audit and revocation.
    pub jti: String,
    /// Group memberships.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// [`SERVICE_ACCOUNT_KIND`] for service accounts; `None` for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sluice_kind: Option<String>,
}

impl TokenClaims {
    /// Refuses claims that would produce a token Sluice itself rejects, so a
    /// minting bug shows up where it happens instead of at every agent.
    fn check(&self) -> Result<(), IdentityError> {
        if self.iss.is_empty() {
            return Err(IdentityError::InvalidClaims("`iss` is empty"));
        }
        if self.sub.is_empty() {
            return Err(IdentityError::InvalidClaims("`sub` is empty"));
        }
        if self.aud.is_empty() || self.aud.iter().any(String::is_empty) {
            return Err(IdentityError::InvalidClaims(
                "`aud` must hold at least one non-empty audience",
            ));
        }
        if self.jti.is_empty() {
            return Err(IdentityError::InvalidClaims("`jti` is empty"));
        }
        if self.exp <= self.nbf || self.exp <= self.iat {
            return Err(IdentityError::InvalidClaims(
                "`exp` must be after `nbf` and `iat`",
            ));
        }
        Ok(())
    }
}

/// The built-in issuer's signing key (Ed25519, JWS algorithm `EdDSA`).
pub struct IssuerKey {
    kid: String,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for IssuerKey {
    // Only public parts: the private key must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("kid", &self.kid)
            .field("x", &b64::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

fn check_kid(kid: &str) -> Result<(), IdentityError> {
    let ok = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidKeyId)
    }
}

impl IssuerKey {
    /// Generates a new key. Returns it together with its PKCS#8 (v2) DER
    /// document, which the caller persists (as a secret) and later hands to
    /// [`IssuerKey::from_pkcs8`].
    pub fn generate(kid: impl Into<String>) -> Result<(IssuerKey, Vec<u8>), IdentityError> {
        let kid = kid.into();
        check_kid(&kid)?;
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::KeyGeneration)?;
        let pkcs8 = document.as_ref().to_vec();
        let key = IssuerKey::from_pkcs8(kid, &pkcs8)?;
        Ok((key, pkcs8))
    }

    /// Loads a key from a PKCS#8 DER document: v2 as written by
    /// [`IssuerKey::generate`], or v1 as written by `openssl genpkey -algorithm ed25519`.
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: &[u8]) -> Result<IssuerKey, IdentityError> {
        let kid = kid.into();
        check_kid(&kid)?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8))
            .map_err(|_| IdentityError::InvalidKey("not a PKCS#8 Ed25519 private key"))?;
        Ok(IssuerKey { kid, pair })
    }

    /// The key id, written into every token's `kid` header and the JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key as a JWK:
    /// `{"kty":"OKP","crv":"Ed25519","x":...,"kid":...,"alg":"EdDSA","use":"sig"}`.
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64::encode(self.public_key()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// Mints a compact JWS (`header.payload.signature`) over `claims`, with
    /// header `{"alg":"EdDSA","typ":"JWT","kid":...}`.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, IdentityError> {
        claims.check()?;
        let claims =
            serde_json::to_value(claims).map_err(|e| IdentityError::Encoding(e.to_string()))?;
        let token = self.sign_parts(
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid}),
            &claims,
        )?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(IdentityError::InvalidClaims(
                "token would exceed the maximum token size; list fewer groups or roles",
            ));
        }
        Ok(token)
    }

    /// Signs arbitrary header and claims JSON. Not public: callers go through
    /// [`IssuerKey::sign`], which checks the claims; tests use this to craft
    /// tokens the verifier must reject.
    pub(crate) fn sign_parts(
        &self,
        header: &Value,
        claims: &Value,
    ) -> Result<String, IdentityError> {
        let header =
            serde_json::to_vec(header).map_err(|e| IdentityError::Encoding(e.to_string()))?;
        let claims =
            serde_json::to_vec(claims).map_err(|e| IdentityError::Encoding(e.to_string()))?;
        let message = format!("{}.{}", b64::encode(header), b64::encode(claims));
        let signature = self.pair.sign(message.as_bytes());
        Ok(format!("{message}.{}", b64::encode(signature.as_ref())))
    }
}

/// A JWKS document (`{"keys":[...]}`) publishing the given keys, e.g. the
/// current key and the one it replaced, during rotation.
pub fn jwks(keys: &[&IssuerKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            iss: "https://sluice.example".to_owned(),
            sub: "ci-bot".to_owned(),
            aud: vec!["sluice".to_owned()],
            exp: 1_000_600,
            iat: 1_000_000,
            nbf: 1_000_000,
            jti: "tok-1".to_owned(),
            groups: vec!["ci".to_owned()],
            roles: vec![],
            sluice_kind: Some(SERVICE_ACCOUNT_KIND.to_owned()),
        }
    }

    #[test]
    fn generate_and_reload_give_the_same_key() {
        let (key, pkcs8) = IssuerKey::generate("k1").unwrap();
        let again = IssuerKey::from_pkcs8("k1", &pkcs8).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(key.public_key().len(), 32);
        assert_eq!(again.kid(), "k1");
    }

    #[test]
    fn loads_openssl_pkcs8_v1() {
        let pem = include_str!("testdata/ed25519.pem");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap();
        let key = IssuerKey::from_pkcs8("openssl", &der).unwrap();
        assert_eq!(key.public_key().len(), 32);
    }

    #[test]
    fn rejects_bad_key_material_and_kids() {
        assert!(matches!(
            IssuerKey::from_pkcs8("k1", b"garbage"),
            Err(IdentityError::InvalidKey(_))
        ));
        for kid in ["", "has space", "slash/", "x\"y", &"a".repeat(129)] {
            assert_eq!(
                IssuerKey::generate(kid).unwrap_err(),
                IdentityError::InvalidKeyId,
                "{kid}"
            );
        }
        assert!(IssuerKey::generate("2025-06-01.key_1").is_ok());
    }

    #[test]
    fn public_jwk_and_jwks_shape() {
        let (a, _) = IssuerKey::generate("a").unwrap();
        let (b, _) = IssuerKey::generate("b").unwrap();
        let jwk = a.public_jwk();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["kid"], "a");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(
            b64::decode(jwk["x"].as_str().unwrap()).unwrap(),
            a.public_key()
        );
        assert!(jwk.get("d").is_none());
        let set = jwks(&[&a, &b]);
        let keys = set["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1]["kid"], "b");
        // Debug shows no private material.
        let debug = format!("{a:?}");
        assert!(debug.contains("kid") && debug.contains(jwk["x"].as_str().unwrap()));
    }

    #[test]
    fn token_layout() {
        let (key, _) = IssuerKey::generate("k1").unwrap();
        let token = key.sign(&claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&b64::decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}));
        let payload: TokenClaims = serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload, claims());
        assert_eq!(b64::decode(parts[2]).unwrap().len(), 64);
    }

    #[test]
    fn interoperates_with_jsonwebtoken() {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let (key, _) = IssuerKey::generate("k1").unwrap();
        let token = key.sign(&claims()).unwrap();
        let decoding = DecodingKey::from_ed_der(key.public_key());
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.set_audience(&["sluice"]);
        let data = jsonwebtoken::decode::<TokenClaims>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims, claims());
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn refuses_claims_sluice_would_reject() {
        let (key, _) = IssuerKey::generate("k1").unwrap();
        let cases: [fn(&mut TokenClaims); 7] = [
            |c| c.iss.clear(),
            |c| c.sub.clear(),
            |c| c.aud.clear(),
            |c| c.aud = vec![String::new()],
            |c| c.jti.clear(),
            |c| c.exp = c.nbf,
            |c| c.groups = vec!["g".repeat(1000); 100],
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut c = claims();
            mutate(&mut c);
            assert!(
                matches!(key.sign(&c), Err(IdentityError::InvalidClaims(_))),
                "case {i}"
            );
        }
    }
}
