//! Turning a JWKS document into verification keys.
//!
//! Keys Sluice cannot or must not use (symmetric `oct` keys, encryption keys,
//! unknown key types or curves, weak RSA moduli, malformed members) are
//! skipped with a reason rather than failing the whole issuer: identity
//! providers routinely publish keys for other purposes next to their signing
//! keys, and one exotic key must not lock everyone out.

use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

use crate::b64;

/// The key types Sluice verifies with; each accepts a fixed set of algorithms
/// so that a token cannot pick an algorithm that reinterprets the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    fn accepts(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => alg.family() == AlgorithmFamily::Rsa,
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// One usable public key from a JWKS.
#[derive(Debug, Clone)]
pub(crate) struct VerificationKey {
    kind: KeyKind,
    /// The JWK's own `alg`, if it declared one: the key is then usable with
    /// that algorithm only.
    pinned: Option<Algorithm>,
    key: DecodingKey,
}

impl VerificationKey {
    /// Whether a token signed with `alg` may be checked against this key.
    /// Symmetric algorithms never match any key kind.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.accepts(alg) && self.pinned.is_none_or(|p| p == alg)
    }

    /// Checks `signature_b64` (the third JWS segment) over `message` (the
    /// first two segments and the dot). Any decoding problem is a failed
    /// verification.
    pub(crate) fn verify(&self, message: &[u8], signature_b64: &str, alg: Algorithm) -> bool {
        self.accepts(alg)
            && matches!(
                jsonwebtoken::crypto::verify(signature_b64, message, &self.key, alg),
                Ok(true)
            )
    }
}

/// The result of parsing one JWKS document.
#[derive(Debug, Default)]
pub(crate) struct ParsedJwks {
    /// Usable keys with their `kid`.
    pub(crate) keys: Vec<(String, VerificationKey)>,
    /// Skipped keys: their `kid` if they had one, and why.
    pub(crate) skipped: Vec<(Option<String>, &'static str)>,
}

/// Parses `{"keys":[...]}`. Errors only when the document itself is not a
/// JWKS; unusable keys land in [`ParsedJwks::skipped`].
pub(crate) fn parse_jwks(json: &str) -> Result<ParsedJwks, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "expected an object with a `keys` array".to_owned())?;
    let mut parsed = ParsedJwks::default();
    for jwk in keys {
        match parse_key(jwk) {
            Ok(entry) => parsed.keys.push(entry),
            Err(reason) => {
                let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
                parsed.skipped.push((kid, reason));
            }
        }
    }
    Ok(parsed)
}

fn str_member<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

fn parse_key(jwk: &Value) -> Result<(String, VerificationKey), &'static str> {
    if !jwk.is_object() {
        return Err("not a JSON object");
    }
    let kid = match str_member(jwk, "kid") {
        Some(kid) if !kid.is_empty() => kid.to_owned(),
        _ => return Err("no `kid`: tokens must name their key, so this key can never be used"),
    };
    if let Some(usage) = jwk.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err("`use` is not `sig`");
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("`key_ops` does not include `verify`");
        }
    }
    let pinned = match jwk.get("alg") {
        None => None,
        Some(alg) => {
            let alg = alg
                .as_str()
                .and_then(|a| Algorithm::from_str(a).ok())
                .ok_or("unsupported `alg`")?;
            if alg.family() == AlgorithmFamily::Hmac {
                return Err("symmetric `alg` is never accepted");
            }
            Some(alg)
        }
    };

    let (kind, key, probe_alg) = match str_member(jwk, "kty") {
        Some("RSA") => (KeyKind::Rsa, rsa_key(jwk)?, None),
        Some("EC") => {
            let (kind, coordinate_len, alg) = match str_member(jwk, "crv") {
                Some("P-256") => (KeyKind::EcP256, 32, Algorithm::ES256),
                Some("P-384") => (KeyKind::EcP384, 48, Algorithm::ES384),
                _ => return Err("unsupported EC curve (P-256 and P-384 are supported)"),
            };
            let x = str_member(jwk, "x").ok_or("EC key without `x`")?;
            let y = str_member(jwk, "y").ok_or("EC key without `y`")?;
            let x_len = b64::decode(x).map(|b| b.len());
            let y_len = b64::decode(y).map(|b| b.len());
            if x_len != Some(coordinate_len) || y_len != Some(coordinate_len) {
                return Err("EC key coordinates have the wrong length or encoding");
            }
            let key = DecodingKey::from_ec_components(x, y).map_err(|_| "invalid EC key")?;
            (kind, key, Some(alg))
        }
        Some("OKP") => {
            if str_member(jwk, "crv") != Some("Ed25519") {
                return Err("unsupported OKP curve (Ed25519 is supported)");
            }
            let x = str_member(jwk, "x").ok_or("OKP key without `x`")?;
            // Exactly 32 bytes: the verifier slices the first 32 bytes.
            if b64::decode(x).map(|b| b.len()) != Some(32) {
                return Err("Ed25519 key `x` has the wrong length or encoding");
            }
            let key = DecodingKey::from_ed_components(x).map_err(|_| "invalid Ed25519 key")?;
            (KeyKind::Ed25519, key, Some(Algorithm::EdDSA))
        }
        Some("oct") => return Err("symmetric (`oct`) keys are never accepted"),
        _ => return Err("unsupported `kty`"),
    };

    if let Some(p) = pinned
        && !kind.accepts(p)
    {
        return Err("`alg` does not match the key type");
    }
    // EC points and Ed25519 keys are decoded when a verifier is built; build
    // one now so an invalid point is skipped here, not discovered per token.
    // An empty signature never verifies; only an error means a bad key.
    if let Some(alg) = probe_alg
        && jsonwebtoken::crypto::verify("", b"", &key, alg).is_err()
    {
        return Err("invalid public key (not a point on the curve)");
    }
    Ok((kid, VerificationKey { kind, pinned, key }))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

fn rsa_key(jwk: &Value) -> Result<DecodingKey, &'static str> {
    let n = str_member(jwk, "n")
        .and_then(b64::decode)
        .ok_or("RSA key without a valid `n`")?;
    let e = str_member(jwk, "e")
        .and_then(b64::decode)
        .ok_or("RSA key without a valid `e`")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = match n.first() {
        Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if !(2048..=4096).contains(&bits) {
        return Err("RSA modulus must be 2048 to 4096 bits");
    }
    let exponent_ok =
        !e.is_empty() && e.len() <= 4 && e.last().is_some_and(|low| low & 1 == 1) && e != [1];
    if !exponent_ok {
        return Err("invalid RSA public exponent");
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn not_a_jwks_is_an_error() {
        assert!(parse_jwks("not json").is_err());
        assert!(parse_jwks("[]").is_err());
        assert!(parse_jwks(r#"{"keys":{}}"#).is_err());
        assert!(parse_jwks(r#"{"keys":[]}"#).unwrap().keys.is_empty());
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        let ed_x = b64::encode([0u8; 31]);
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "foo", "kid": "foo"},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64::encode([9u8; 32])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": ed_x},
            {"kty": "RSA", "kid": "small", "n": b64::encode([0xffu8; 128]), "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64::encode([0xffu8; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "even-e", "n": b64::encode([0xffu8; 256]), "e": "AQAA"},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": b64::encode([0xffu8; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": b64::encode([0xffu8; 256]), "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": "off-curve", "x": b64::encode([1u8; 32]), "y": b64::encode([2u8; 32])},
            {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": b64::encode([1u8; 32]), "y": b64::encode([2u8; 32])},
            {"kty": "RSA", "n": b64::encode([0xffu8; 256]), "e": "AQAB"},
            "not an object",
            {"kty": "RSA", "kid": "good", "n": b64::encode([0xffu8; 256]), "e": "AQAB"}
        ]});
        let parsed = parse_jwks(&doc.to_string()).unwrap();
        let kids: Vec<&str> = parsed.keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kids, vec!["good"]);
        assert_eq!(parsed.skipped.len(), 13);
    }

    #[test]
    fn key_kinds_bind_algorithms() {
        assert!(KeyKind::Rsa.accepts(Algorithm::RS256));
        assert!(KeyKind::Rsa.accepts(Algorithm::PS512));
        assert!(!KeyKind::Rsa.accepts(Algorithm::ES256));
        assert!(!KeyKind::Rsa.accepts(Algorithm::HS256));
        assert!(KeyKind::EcP256.accepts(Algorithm::ES256));
        assert!(!KeyKind::EcP256.accepts(Algorithm::ES384));
        assert!(!KeyKind::Ed25519.accepts(Algorithm::HS256));
        assert!(KeyKind::Ed25519.accepts(Algorithm::EdDSA));
    }
}
