//! Token verification: from a bearer token to an [`Identity`], or a
//! [`VerifyError`] the client can act on.
//!
//! The order of checks matters. Everything read before the signature is
//! checked (`alg`, `kid`, `iss`) is attacker-controlled, so it is only used to
//! *select* among keys the operator configured, never to widen what is
//! accepted: symmetric and `none` algorithms are refused before any lookup,
//! the algorithm must be one the issuer allows and match the key's type, and
//! header members that carry keys or key locations (`jwk`, `jku`, `x5u`,
//! `x5c`) are ignored entirely. Claims are trusted only after the signature
//! verifies.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::b64;
use crate::error::{IdentityError, VerifyError};
use crate::issuer::TrustedIssuer;
use crate::jwk::{VerificationKey, parse_jwks};
use crate::sign::SERVICE_ACCOUNT_KIND;

/// Longest token accepted, in bytes; longer input is rejected before any
/// decoding or allocation. Generous enough for tokens with many groups.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// How far beyond the leeway `iat` may lie in the future. `iat` is only a
/// sanity check (`nbf` is the real "not before"), so it gets some slack.
const IAT_FUTURE_TOLERANCE_SECONDS: u64 = 300;

/// Whether the subject is a person or a workload identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A human (the default).
    User,
    /// A service account: the token carries `"sluice_kind": "service_account"`.
    ServiceAccount,
}

/// Who presented a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Value of the issuer's configured subject claim.
    pub subject: String,
    /// The token's `iss`, exactly as configured for a trusted issuer.
    pub issuer: String,
    /// Values of the issuer's configured groups claim (empty when absent).
    pub groups: Vec<String>,
    /// Values of the `roles` claim (empty when absent).
    pub roles: Vec<String>,
    /// User or service account.
    pub kind: SubjectKind,
    /// The token's `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// When the verifier stops accepting the token: `exp` stretched by the
    /// issuer's clock leeway. Sessions opened with it end then.
    #[serde(default)]
    pub valid_until: u64,
    /// The token's `jti`, if any.
    pub token_id: Option<String>,
}

/// A JWKS key that [`Verifier::new`] could not use, reported so the operator
/// can see why a `kid` is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The issuer whose JWKS held the key.
    pub issuer: String,
    /// The key's `kid`, if it had one.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
struct IssuerEntry {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    /// Keys by `kid`. Usually one per kid; several are kept if a JWKS reuses
    /// a kid, and a token verifies if any of them (of a matching type) does.
    keys: HashMap<String, Vec<VerificationKey>>,
    groups_claim: String,
    subject_claim: String,
    leeway: u64,
    service_accounts: bool,
}

/// Verifies tokens against a fixed set of trusted issuers.
///
/// Build one whenever the issuer configuration (or a JWKS) changes and share
/// it (e.g. in an `Arc` inside a snapshot); verification itself is
/// allocation-light and lock-free.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    issuers: HashMap<String, IssuerEntry>,
    skipped: Vec<SkippedKey>,
}

impl Verifier {
    /// Validates the issuers and parses their JWKS documents.
    ///
    /// Fails on invalid configuration (see [`TrustedIssuer::validate`]), a
    /// duplicate issuer, or a `jwks_json` that is not a JWKS document.
    /// Individual keys that cannot be used are skipped (see
    /// [`Verifier::skipped_keys`]); an issuer may end up with no keys, in
    /// which case its tokens fail with [`VerifyError::UnknownKey`].
    pub fn new(issuers: &[TrustedIssuer]) -> Result<Verifier, IdentityError> {
        let mut verifier = Verifier::default();
        for trusted in issuers {
            let algorithms = trusted.validated_algorithms()?;
            if verifier.issuers.contains_key(&trusted.issuer) {
                return Err(IdentityError::DuplicateIssuer(trusted.issuer.clone()));
            }
            let parsed =
                parse_jwks(&trusted.jwks_json).map_err(|reason| IdentityError::InvalidJwks {
                    issuer: trusted.issuer.clone(),
                    reason,
                })?;
            let mut keys: HashMap<String, Vec<VerificationKey>> = HashMap::new();
            for (kid, key) in parsed.keys {
                keys.entry(kid).or_default().push(key);
            }
            verifier
                .skipped
                .extend(parsed.skipped.into_iter().map(|(kid, reason)| SkippedKey {
                    issuer: trusted.issuer.clone(),
                    kid,
                    reason,
                }));
            verifier.issuers.insert(
                trusted.issuer.clone(),
                IssuerEntry {
                    issuer: trusted.issuer.clone(),
                    audiences: trusted.audiences.clone(),
                    algorithms,
                    keys,
                    groups_claim: trusted.groups_claim.clone(),
                    subject_claim: trusted.subject_claim.clone(),
                    leeway: u64::from(trusted.leeway_seconds),
                    service_accounts: trusted.service_accounts,
                },
            );
        }
        Ok(verifier)
    }

    /// JWKS keys that were skipped while building this verifier, with reasons.
    pub fn skipped_keys(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Number of usable keys for `issuer` (0 for an unknown issuer).
    pub fn key_count(&self, issuer: &str) -> usize {
        self.issuers
            .get(issuer)
            .map_or(0, |e| e.keys.values().map(Vec::len).sum())
    }

    /// Verifies `token` as of the current system time. See [`Verifier::verify`].
    pub fn verify_now(&self, token: &str) -> Result<Identity, VerifyError> {
        // A clock before 1970 makes every token "not yet valid": fail closed.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify(token, now)
    }

    /// Verifies a compact JWT as of `now_unix` (seconds since the Unix
    /// epoch) and returns who presented it.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Identity, VerifyError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed);
        }
        let mut segments = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(VerifyError::Malformed);
        };

        let header = decode_json_object(header_b64)?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(VerifyError::Malformed)?;
        let alg = Algorithm::from_str(alg_name)
            .map_err(|_| VerifyError::unsupported_algorithm(alg_name))?;
        // Never, whatever the configuration says: an HMAC "signature" keyed
        // with a public key is forgeable by anyone.
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(VerifyError::unsupported_algorithm(alg_name));
        }
        // We implement no JWS extensions, so any critical one is unmet (RFC 7515 4.1.11).
        if header.contains_key("crit") {
            return Err(VerifyError::Malformed);
        }

        let claims = decode_json_object(payload_b64)?;
        let issuer = match claims.get("iss") {
            None | Some(Value::Null) => return Err(VerifyError::MissingClaim("iss")),
            Some(Value::String(iss)) => iss,
            Some(_) => return Err(VerifyError::InvalidClaim("iss")),
        };
        let entry = self.issuers.get(issuer).ok_or(VerifyError::UnknownIssuer)?;
        if !entry.algorithms.contains(&alg) {
            return Err(VerifyError::unsupported_algorithm(alg_name));
        }

        let kid = match header.get("kid") {
            None | Some(Value::Null) => return Err(VerifyError::MissingClaim("kid")),
            Some(Value::String(kid)) => kid,
            Some(_) => return Err(VerifyError::Malformed),
        };
        let keys = entry.keys.get(kid).ok_or(VerifyError::UnknownKey)?;
        if !keys.iter().any(|k| k.accepts(alg)) {
            // E.g. `ES256` with the kid of an RSA key.
            return Err(VerifyError::unsupported_algorithm(alg_name));
        }
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let message = token
            .as_bytes()
            .get(..signed_len)
            .ok_or(VerifyError::Malformed)?;
        if !keys.iter().any(|k| k.verify(message, signature_b64, alg)) {
            return Err(VerifyError::InvalidSignature);
        }

        entry.identity_from(&claims, now_unix)
    }
}

fn decode_json_object(segment: &str) -> Result<Map<String, Value>, VerifyError> {
    let bytes = b64::decode(segment).ok_or(VerifyError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(VerifyError::Malformed),
    }
}

/// A NumericDate claim (RFC 7519 section 2): integer or fractional seconds.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, VerifyError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                Ok(Some(secs))
            } else if let Some(secs) = n.as_f64()
                && secs.is_finite()
                && secs >= 0.0
            {
                // Saturating float-to-int cast; fractions are truncated.
                Ok(Some(secs as u64))
            } else {
                Err(VerifyError::InvalidClaim(name))
            }
        }
        Some(_) => Err(VerifyError::InvalidClaim(name)),
    }
}

/// A claim that may be a single string or an array of strings.
fn string_list(value: Option<&Value>, name: &'static str) -> Result<Vec<String>, VerifyError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or(VerifyError::InvalidClaim(name))
            })
            .collect(),
        Some(_) => Err(VerifyError::InvalidClaim(name)),
    }
}

impl IssuerEntry {
    /// Checks the time window and audience of signature-verified claims and
    /// extracts the identity.
    fn identity_from(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<Identity, VerifyError> {
        let exp = numeric_date(claims, "exp")?.ok_or(VerifyError::MissingClaim("exp"))?;
        // Valid while now < exp (RFC 7519 4.1.4), stretched by the leeway.
        if now >= exp.saturating_add(self.leeway) {
            return Err(VerifyError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now.saturating_add(self.leeway) < nbf
        {
            return Err(VerifyError::NotYetValid);
        }
        if let Some(iat) = numeric_date(claims, "iat")?
            && now
                .saturating_add(self.leeway)
                .saturating_add(IAT_FUTURE_TOLERANCE_SECONDS)
                < iat
        {
            return Err(VerifyError::NotYetValid);
        }

        let audiences = match claims.get("aud") {
            None | Some(Value::Null) => return Err(VerifyError::MissingClaim("aud")),
            aud => string_list(aud, "aud")?,
        };
        if !audiences.iter().any(|a| self.audiences.contains(a)) {
            return Err(VerifyError::InvalidAudience);
        }

        let subject_label = if self.subject_claim == "sub" {
            "sub"
        } else {
            "subject"
        };
        let subject = match claims.get(&self.subject_claim) {
            None | Some(Value::Null) => return Err(VerifyError::MissingClaim(subject_label)),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(VerifyError::MissingClaim(subject_label));
            }
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(VerifyError::InvalidClaim(subject_label)),
        };

        let groups = string_list(claims.get(&self.groups_claim), "groups")?;
        let roles = string_list(claims.get("roles"), "roles")?;
        let kind = match claims.get("sluice_kind").and_then(Value::as_str) {
            Some(SERVICE_ACCOUNT_KIND) if self.service_accounts => SubjectKind::ServiceAccount,
            _ => SubjectKind::User,
        };
        let token_id = match claims.get("jti") {
            None | Some(Value::Null) => None,
            Some(Value::String(jti)) => Some(jti.clone()),
            Some(_) => return Err(VerifyError::InvalidClaim("jti")),
        };

        Ok(Identity {
            subject,
            issuer: self.issuer.clone(),
            groups,
            roles,
            kind,
            expires_at: exp,
            valid_until: exp.saturating_add(self.leeway),
            token_id,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::sign::{IssuerKey, TokenClaims, jwks};

    const ISS: &str = "https://idp.example";
    const AUD: &str = "sluice";
    const NOW: u64 = 1_750_000_000;

    const RSA_PEM: &[u8] = include_bytes!("testdata/rsa2048.pem");
    const RSA_PUB_PEM: &[u8] = include_bytes!("testdata/rsa2048.pub.pem");
    const P256_PEM: &[u8] = include_bytes!("testdata/ec_p256.pem");
    const P384_PEM: &[u8] = include_bytes!("testdata/ec_p384.pem");

    fn base_claims() -> Value {
        json!({
            "iss": ISS,
            "sub": "alice",
            "aud": AUD,
            "exp": NOW + 600,
            "iat": NOW - 10,
            "nbf": NOW - 10,
            "jti": "tok-1",
            "groups": ["eng", "oncall"],
            "roles": "reader",
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    fn trusted(jwks: &Value, algorithms: &[&str]) -> TrustedIssuer {
        let mut issuer = TrustedIssuer::new(ISS, vec![AUD.to_owned()], jwks.to_string());
        issuer.algorithms = algorithms.iter().map(|a| (*a).to_owned()).collect();
        issuer.leeway_seconds = 30;
        issuer.service_accounts = true;
        issuer
    }

    /// An Ed25519 issuer key and a verifier that trusts it.
    fn ed_setup() -> (IssuerKey, Verifier) {
        let (key, _) = IssuerKey::generate("ed-1").unwrap();
        let verifier = Verifier::new(&[trusted(&jwks(&[&key]), &["EdDSA"])]).unwrap();
        (key, verifier)
    }

    fn ed_token(key: &IssuerKey, claims: &Value) -> String {
        key.sign_parts(
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()}),
            claims,
        )
        .unwrap()
    }

    /// A JWK for a PEM private key, without the `alg` pin jsonwebtoken adds.
    fn jwk_for(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
        let obj = jwk.as_object_mut().unwrap();
        obj.remove("alg");
        obj.insert("kid".to_owned(), json!(kid));
        obj.insert("use".to_owned(), json!("sig"));
        jwk
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PEM).unwrap()
    }

    fn pem_token(key: &EncodingKey, alg: Algorithm, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    /// A token with arbitrary header, claims and signature bytes.
    fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64::encode(header.to_string()),
            b64::encode(claims.to_string()),
            b64::encode(signature)
        )
    }

    fn hs256_token(kid: &str, claims: &Value, secret: &[u8]) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let message = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(claims.to_string())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&key, message.as_bytes());
        format!("{message}.{}", b64::encode(tag.as_ref()))
    }

    /// Asserts the exact rejection and that the message leaks no part of the token.
    fn assert_rejects(verifier: &Verifier, token: &str, now: u64, expected: VerifyError) {
        let err = verifier.verify(token, now).unwrap_err();
        assert_eq!(err, expected, "token rejected for the wrong reason");
        let message = err.to_string();
        assert!(
            message.contains(": "),
            "message should say what to do: {message}"
        );
        if !token.is_empty() {
            assert!(
                !message.contains(token),
                "message leaks the token: {message}"
            );
        }
        for segment in token.split('.').filter(|s| s.len() >= 8) {
            assert!(
                !message.contains(segment),
                "message leaks a token segment: {message}"
            );
        }
    }

    #[test]
    fn built_in_issuer_token_verifies() {
        let (key, verifier) = ed_setup();
        let claims = TokenClaims {
            iss: ISS.to_owned(),
            sub: "ci-bot".to_owned(),
            aud: vec!["other".to_owned(), AUD.to_owned()],
            exp: NOW + 3600,
            iat: NOW,
            nbf: NOW,
            jti: "tok-42".to_owned(),
            groups: vec!["ci".to_owned(), "deployers".to_owned()],
            roles: vec!["writer".to_owned()],
            sluice_kind: Some(SERVICE_ACCOUNT_KIND.to_owned()),
        };
        let token = key.sign(&claims).unwrap();
        let identity = verifier.verify(&token, NOW + 1).unwrap();
        assert_eq!(
            identity,
            Identity {
                subject: "ci-bot".to_owned(),
                issuer: ISS.to_owned(),
                groups: vec!["ci".to_owned(), "deployers".to_owned()],
                roles: vec!["writer".to_owned()],
                kind: SubjectKind::ServiceAccount,
                expires_at: NOW + 3600,
                valid_until: NOW + 3600 + 30,
                token_id: Some("tok-42".to_owned()),
            }
        );
    }

    #[test]
    fn only_the_built_in_issuer_mints_service_accounts() {
        let (key, _) = IssuerKey::generate("ed-1").unwrap();
        let mut external = trusted(&jwks(&[&key]), &["EdDSA"]);
        external.service_accounts = false;
        let verifier = Verifier::new(&[external]).unwrap();
        let claims = with(base_claims(), "sluice_kind", json!(SERVICE_ACCOUNT_KIND));
        let identity = verifier.verify(&ed_token(&key, &claims), NOW).unwrap();
        assert_eq!(identity.kind, SubjectKind::User);
        assert_eq!(identity.subject, "alice");
    }

    #[test]
    fn user_token_with_string_roles_and_no_jti() {
        let (key, verifier) = ed_setup();
        let identity = verifier
            .verify(&ed_token(&key, &without(base_claims(), "jti")), NOW)
            .unwrap();
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.kind, SubjectKind::User);
        assert_eq!(identity.groups, vec!["eng", "oncall"]);
        assert_eq!(identity.roles, vec!["reader"]);
        assert_eq!(identity.token_id, None);

        let other_kind = with(base_claims(), "sluice_kind", json!("user"));
        assert_eq!(
            verifier
                .verify(&ed_token(&key, &other_kind), NOW)
                .unwrap()
                .kind,
            SubjectKind::User
        );
        let no_groups = without(without(base_claims(), "groups"), "roles");
        let identity = verifier.verify(&ed_token(&key, &no_groups), NOW).unwrap();
        assert!(identity.groups.is_empty() && identity.roles.is_empty());
    }

    #[test]
    fn rs256_and_ps256_tokens_verify_via_jwks() {
        let key = rsa_key();
        let set = json!({"keys": [jwk_for(&key, Algorithm::RS256, "rsa-1")]});
        let verifier = Verifier::new(&[trusted(&set, &["RS256", "PS256"])]).unwrap();
        assert_eq!(verifier.key_count(ISS), 1);
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let token = pem_token(&key, alg, "rsa-1", &base_claims());
            let identity = verifier.verify(&token, NOW).unwrap();
            assert_eq!(identity.subject, "alice", "{alg:?}");
        }
    }

    #[test]
    fn jwk_alg_pins_the_key_to_one_algorithm() {
        let key = rsa_key();
        let mut jwk = jwk_for(&key, Algorithm::RS256, "rsa-1");
        jwk["alg"] = json!("RS256");
        let verifier =
            Verifier::new(&[trusted(&json!({"keys": [jwk]}), &["RS256", "PS256"])]).unwrap();
        assert!(
            verifier
                .verify(
                    &pem_token(&key, Algorithm::RS256, "rsa-1", &base_claims()),
                    NOW
                )
                .is_ok()
        );
        let ps = pem_token(&key, Algorithm::PS256, "rsa-1", &base_claims());
        assert_rejects(
            &verifier,
            &ps,
            NOW,
            VerifyError::UnsupportedAlgorithm("PS256".to_owned()),
        );
    }

    #[test]
    fn es256_and_es384_tokens_verify_via_jwks() {
        let p256 = EncodingKey::from_ec_pem(P256_PEM).unwrap();
        let p384 = EncodingKey::from_ec_pem(P384_PEM).unwrap();
        let set = json!({"keys": [
            jwk_for(&p256, Algorithm::ES256, "ec-256"),
            jwk_for(&p384, Algorithm::ES384, "ec-384"),
        ]});
        let verifier = Verifier::new(&[trusted(&set, &["ES256", "ES384"])]).unwrap();
        let token = pem_token(&p256, Algorithm::ES256, "ec-256", &base_claims());
        assert_eq!(
            verifier.verify(&token, NOW).unwrap().groups,
            vec!["eng", "oncall"]
        );
        let token = pem_token(&p384, Algorithm::ES384, "ec-384", &base_claims());
        assert!(verifier.verify(&token, NOW).is_ok());
        // Right key, wrong curve's algorithm.
        let token = pem_token(&p256, Algorithm::ES256, "ec-384", &base_claims());
        assert_rejects(
            &verifier,
            &token,
            NOW,
            VerifyError::UnsupportedAlgorithm("ES256".to_owned()),
        );
    }

    #[test]
    fn expired_and_leeway() {
        let (key, verifier) = ed_setup(); // leeway 30
        let expired_10s_ago = ed_token(&key, &with(base_claims(), "exp", json!(NOW - 10)));
        assert!(verifier.verify(&expired_10s_ago, NOW).is_ok());
        let expired_60s_ago = ed_token(&key, &with(base_claims(), "exp", json!(NOW - 60)));
        assert_rejects(&verifier, &expired_60s_ago, NOW, VerifyError::Expired);
        // The boundary: valid strictly before exp + leeway.
        let edge = ed_token(&key, &with(base_claims(), "exp", json!(NOW - 30)));
        assert_rejects(&verifier, &edge, NOW, VerifyError::Expired);
        assert!(verifier.verify(&edge, NOW - 1).is_ok());
        // Fractional NumericDate.
        let fractional = ed_token(
            &key,
            &with(base_claims(), "exp", json!((NOW + 5) as f64 + 0.5)),
        );
        assert_eq!(
            verifier.verify(&fractional, NOW).unwrap().expires_at,
            NOW + 5
        );
    }

    #[test]
    fn not_yet_valid_and_leeway() {
        let (key, verifier) = ed_setup();
        let soon = ed_token(&key, &with(base_claims(), "nbf", json!(NOW + 20)));
        assert!(verifier.verify(&soon, NOW).is_ok());
        let later = ed_token(&key, &with(base_claims(), "nbf", json!(NOW + 120)));
        assert_rejects(&verifier, &later, NOW, VerifyError::NotYetValid);
        let no_nbf = ed_token(&key, &without(base_claims(), "nbf"));
        assert!(verifier.verify(&no_nbf, NOW).is_ok());
        let absurd_iat = ed_token(&key, &with(base_claims(), "iat", json!(NOW + 86_400)));
        assert_rejects(&verifier, &absurd_iat, NOW, VerifyError::NotYetValid);
        let skewed_iat = ed_token(&key, &with(base_claims(), "iat", json!(NOW + 60)));
        assert!(verifier.verify(&skewed_iat, NOW).is_ok());
    }

    #[test]
    fn time_claims_must_be_present_and_numeric() {
        let (key, verifier) = ed_setup();
        let no_exp = ed_token(&key, &without(base_claims(), "exp"));
        assert_rejects(&verifier, &no_exp, NOW, VerifyError::MissingClaim("exp"));
        let string_exp = ed_token(&key, &with(base_claims(), "exp", json!("9999999999")));
        assert_rejects(
            &verifier,
            &string_exp,
            NOW,
            VerifyError::InvalidClaim("exp"),
        );
        let negative_nbf = ed_token(&key, &with(base_claims(), "nbf", json!(-1)));
        assert_rejects(
            &verifier,
            &negative_nbf,
            NOW,
            VerifyError::InvalidClaim("nbf"),
        );
    }

    #[test]
    fn wrong_issuer() {
        let (key, verifier) = ed_setup();
        for iss in [
            "https://evil.example",
            "https://idp.example/",
            "HTTPS://IDP.EXAMPLE",
            "",
        ] {
            let token = ed_token(&key, &with(base_claims(), "iss", json!(iss)));
            assert_rejects(&verifier, &token, NOW, VerifyError::UnknownIssuer);
        }
        let no_iss = ed_token(&key, &without(base_claims(), "iss"));
        assert_rejects(&verifier, &no_iss, NOW, VerifyError::MissingClaim("iss"));
        let array_iss = ed_token(&key, &with(base_claims(), "iss", json!([ISS])));
        assert_rejects(&verifier, &array_iss, NOW, VerifyError::InvalidClaim("iss"));
    }

    #[test]
    fn keys_are_scoped_to_their_issuer() {
        // Two issuers whose keys share a kid: a token from A claiming to be
        // from B is checked against B's key and fails.
        let (key_a, _) = IssuerKey::generate("shared").unwrap();
        let (key_b, _) = IssuerKey::generate("shared").unwrap();
        let mut a = trusted(&jwks(&[&key_a]), &["EdDSA"]);
        a.issuer = "https://a.example".to_owned();
        let mut b = trusted(&jwks(&[&key_b]), &["EdDSA"]);
        b.issuer = "https://b.example".to_owned();
        let verifier = Verifier::new(&[a, b]).unwrap();
        let from_a = with(base_claims(), "iss", json!("https://a.example"));
        assert_eq!(
            verifier
                .verify(&ed_token(&key_a, &from_a), NOW)
                .unwrap()
                .issuer,
            "https://a.example"
        );
        let forged = ed_token(
            &key_a,
            &with(base_claims(), "iss", json!("https://b.example")),
        );
        assert_rejects(&verifier, &forged, NOW, VerifyError::InvalidSignature);
    }

    #[test]
    fn wrong_audience() {
        let (key, verifier) = ed_setup();
        let other = ed_token(&key, &with(base_claims(), "aud", json!("another-app")));
        assert_rejects(&verifier, &other, NOW, VerifyError::InvalidAudience);
        let others = ed_token(&key, &with(base_claims(), "aud", json!(["a", "b"])));
        assert_rejects(&verifier, &others, NOW, VerifyError::InvalidAudience);
        let empty = ed_token(&key, &with(base_claims(), "aud", json!([])));
        assert_rejects(&verifier, &empty, NOW, VerifyError::InvalidAudience);
        let missing = ed_token(&key, &without(base_claims(), "aud"));
        assert_rejects(&verifier, &missing, NOW, VerifyError::MissingClaim("aud"));
        let array_with_ours = ed_token(&key, &with(base_claims(), "aud", json!(["a", AUD])));
        assert!(verifier.verify(&array_with_ours, NOW).is_ok());
        let bad_type = ed_token(&key, &with(base_claims(), "aud", json!({"aud": AUD})));
        assert_rejects(&verifier, &bad_type, NOW, VerifyError::InvalidClaim("aud"));
    }

    #[test]
    fn alg_none_is_rejected() {
        let (key, verifier) = ed_setup();
        for alg in ["none", "None", "NONE"] {
            let token = raw_token(&json!({"alg": alg, "kid": key.kid()}), &base_claims(), b"");
            assert!(token.ends_with('.'));
            assert_rejects(
                &verifier,
                &token,
                NOW,
                VerifyError::UnsupportedAlgorithm(alg.to_owned()),
            );
        }
        // A "none" token that carries a stolen valid signature changes nothing.
        let valid = ed_token(&key, &base_claims());
        let signature = b64::decode(valid.rsplit('.').next().unwrap()).unwrap();
        let token = raw_token(
            &json!({"alg": "none", "kid": key.kid()}),
            &base_claims(),
            &signature,
        );
        assert_rejects(
            &verifier,
            &token,
            NOW,
            VerifyError::UnsupportedAlgorithm("none".to_owned()),
        );
    }

    /// The classic key-confusion attack: sign HS256 with the public key as
    /// HMAC secret. Refused even when the issuer's algorithm list (which
    /// validation would normally reject) includes HS256.
    #[test]
    fn hs256_with_public_key_as_secret_is_rejected() {
        let (key, mut verifier) = ed_setup();
        let jwk = key.public_jwk();
        let x = jwk["x"].as_str().unwrap().to_owned();

        let rsa = rsa_key();
        let rsa_set = json!({"keys": [jwk_for(&rsa, Algorithm::RS256, "rsa-1")]});
        let mut rsa_issuer = trusted(&rsa_set, &["RS256"]);
        rsa_issuer.issuer = "https://rsa.example".to_owned();
        let mut rsa_verifier = Verifier::new(&[rsa_issuer]).unwrap();

        // Simulate a configuration that slipped HS256 past validation.
        for v in [&mut verifier, &mut rsa_verifier] {
            for entry in v.issuers.values_mut() {
                entry.algorithms.push(Algorithm::HS256);
            }
        }

        let hs = VerifyError::UnsupportedAlgorithm("HS256".to_owned());
        for secret in [key.public_key(), x.as_bytes(), jwk.to_string().as_bytes()] {
            let token = hs256_token(key.kid(), &base_claims(), secret);
            assert_rejects(&verifier, &token, NOW, hs.clone());
        }
        let rsa_claims = with(base_claims(), "iss", json!("https://rsa.example"));
        let rsa_n = rsa_set["keys"][0]["n"].as_str().unwrap().to_owned();
        for secret in [RSA_PUB_PEM, rsa_n.as_bytes()] {
            let token = hs256_token("rsa-1", &rsa_claims, secret);
            assert_rejects(&rsa_verifier, &token, NOW, hs.clone());
        }
        // Also refused under an unconfigured kid, or with HS384/HS512.
        let token = hs256_token("nope", &base_claims(), key.public_key());
        assert_rejects(&verifier, &token, NOW, hs);
        for alg in ["HS384", "HS512"] {
            let token = raw_token(
                &json!({"alg": alg, "kid": key.kid()}),
                &base_claims(),
                &[0; 48],
            );
            assert_rejects(
                &verifier,
                &token,
                NOW,
                VerifyError::UnsupportedAlgorithm(alg.to_owned()),
            );
        }
    }

    #[test]
    fn unknown_and_missing_kid() {
        let (key, verifier) = ed_setup();
        let unknown = key
            .sign_parts(&json!({"alg": "EdDSA", "kid": "ed-2"}), &base_claims())
            .unwrap();
        assert_rejects(&verifier, &unknown, NOW, VerifyError::UnknownKey);
        let missing = key
            .sign_parts(&json!({"alg": "EdDSA"}), &base_claims())
            .unwrap();
        assert_rejects(&verifier, &missing, NOW, VerifyError::MissingClaim("kid"));
        let numeric = key
            .sign_parts(&json!({"alg": "EdDSA", "kid": 1}), &base_claims())
            .unwrap();
        assert_rejects(&verifier, &numeric, NOW, VerifyError::Malformed);
        // Header-supplied keys are never used.
        let (attacker, _) = IssuerKey::generate("ed-1").unwrap();
        let embedded = attacker
            .sign_parts(
                &json!({"alg": "EdDSA", "kid": "ed-1", "jwk": attacker.public_jwk(),
                        "jku": "https://evil.example/jwks"}),
                &base_claims(),
            )
            .unwrap();
        assert_rejects(&verifier, &embedded, NOW, VerifyError::InvalidSignature);
    }

    #[test]
    fn issuer_without_usable_keys_rejects_with_unknown_key() {
        let (key, _) = IssuerKey::generate("ed-1").unwrap();
        let set = json!({"keys": [{"kty": "oct", "kid": "ed-1", "k": "c2VjcmV0"}]});
        let verifier = Verifier::new(&[trusted(&set, &["EdDSA"])]).unwrap();
        assert_eq!(verifier.key_count(ISS), 0);
        assert_eq!(verifier.skipped_keys().len(), 1);
        assert_eq!(verifier.skipped_keys()[0].kid.as_deref(), Some("ed-1"));
        assert_rejects(
            &verifier,
            &ed_token(&key, &base_claims()),
            NOW,
            VerifyError::UnknownKey,
        );
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let (key, verifier) = ed_setup();
        let token = ed_token(&key, &base_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let tampered_claims = [
            with(base_claims(), "sub", json!("root")),
            with(base_claims(), "groups", json!(["eng", "oncall", "admins"])),
            with(base_claims(), "exp", json!(NOW + 86_400 * 365)),
        ];
        for claims in tampered_claims {
            let forged = format!(
                "{}.{}.{}",
                parts[0],
                b64::encode(claims.to_string()),
                parts[2]
            );
            assert_rejects(&verifier, &forged, NOW, VerifyError::InvalidSignature);
        }
        // Flipping one signature byte, truncating it, or dropping it.
        let mut signature = b64::decode(parts[2]).unwrap();
        signature[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64::encode(&signature));
        assert_rejects(&verifier, &flipped, NOW, VerifyError::InvalidSignature);
        let truncated = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            b64::encode(&signature[..63])
        );
        assert_rejects(&verifier, &truncated, NOW, VerifyError::InvalidSignature);
        let stripped = format!("{}.{}.", parts[0], parts[1]);
        assert_rejects(&verifier, &stripped, NOW, VerifyError::InvalidSignature);

        // Same for RSA.
        let rsa = rsa_key();
        let set = json!({"keys": [jwk_for(&rsa, Algorithm::RS256, "rsa-1")]});
        let verifier = Verifier::new(&[trusted(&set, &["RS256"])]).unwrap();
        let token = pem_token(&rsa, Algorithm::RS256, "rsa-1", &base_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let claims = with(base_claims(), "sub", json!("root"));
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64::encode(claims.to_string()),
            parts[2]
        );
        assert_rejects(&verifier, &forged, NOW, VerifyError::InvalidSignature);
    }

    #[test]
    fn algorithm_outside_the_issuers_list_is_rejected() {
        let rsa = rsa_key();
        let p256 = EncodingKey::from_ec_pem(P256_PEM).unwrap();
        let set = json!({"keys": [
            jwk_for(&rsa, Algorithm::RS256, "rsa-1"),
            jwk_for(&p256, Algorithm::ES256, "ec-1"),
        ]});
        let verifier = Verifier::new(&[trusted(&set, &["ES256"])]).unwrap();
        assert!(
            verifier
                .verify(
                    &pem_token(&p256, Algorithm::ES256, "ec-1", &base_claims()),
                    NOW
                )
                .is_ok()
        );
        let rs = pem_token(&rsa, Algorithm::RS256, "rsa-1", &base_claims());
        assert_rejects(
            &verifier,
            &rs,
            NOW,
            VerifyError::UnsupportedAlgorithm("RS256".to_owned()),
        );
        let unknown = raw_token(
            &json!({"alg": "ES512", "kid": "ec-1"}),
            &base_claims(),
            &[1; 64],
        );
        assert_rejects(
            &verifier,
            &unknown,
            NOW,
            VerifyError::UnsupportedAlgorithm("ES512".to_owned()),
        );
    }

    #[test]
    fn algorithm_must_match_the_key_type() {
        // Both algorithms allowed, but the kid names an RSA key: ES256 and
        // EdDSA must not be tried against it.
        let rsa = rsa_key();
        let set = json!({"keys": [jwk_for(&rsa, Algorithm::RS256, "rsa-1")]});
        let verifier = Verifier::new(&[trusted(&set, &["RS256", "ES256", "EdDSA"])]).unwrap();
        let (ed, _) = IssuerKey::generate("rsa-1").unwrap();
        let token = ed_token(&ed, &base_claims());
        assert_rejects(
            &verifier,
            &token,
            NOW,
            VerifyError::UnsupportedAlgorithm("EdDSA".to_owned()),
        );
        let p256 = EncodingKey::from_ec_pem(P256_PEM).unwrap();
        let token = pem_token(&p256, Algorithm::ES256, "rsa-1", &base_claims());
        assert_rejects(
            &verifier,
            &token,
            NOW,
            VerifyError::UnsupportedAlgorithm("ES256".to_owned()),
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let (key, verifier) = ed_setup();
        let valid = ed_token(&key, &base_claims());
        let parts: Vec<&str> = valid.split('.').collect();
        let header = parts[0];
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let cases = [
            String::new(),
            "abc".to_owned(),
            "a.b".to_owned(),
            "..".to_owned(),
            "a.b.c.d".to_owned(),
            "!!!.###.$$$".to_owned(),
            "eyJ!.eyJ!.abc".to_owned(),
            format!("{valid}.extra"),
            format!("{}.{}.{}", b64::encode("not json"), parts[1], parts[2]),
            format!("{}.{}.{}", b64::encode("[1,2]"), parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                b64::encode(r#"{"kid":"ed-1"}"#),
                parts[1],
                parts[2]
            ),
            format!("{header}.{}.{}", b64::encode("not json"), parts[2]),
            format!("{header}.{}.{}", b64::encode("\"a string\""), parts[2]),
            format!("{header}.{}=.{}", parts[1], parts[2]),
            format!("{header}.{}.{}", b64::encode([0xff, 0xfe]), parts[2]),
            format!(" {valid}"),
            long,
        ];
        for token in &cases {
            assert_rejects(&verifier, token, NOW, VerifyError::Malformed);
        }
        // Header with an unsupported critical extension.
        let crit = key
            .sign_parts(
                &json!({"alg": "EdDSA", "kid": "ed-1", "crit": ["b64"], "b64": false}),
                &base_claims(),
            )
            .unwrap();
        assert_rejects(&verifier, &crit, NOW, VerifyError::Malformed);
    }

    #[test]
    fn echoed_algorithm_names_are_sanitized() {
        let (_, verifier) = ed_setup();
        let token = raw_token(
            &json!({"alg": "<script>alert(1)</script>\n\u{1b}[31m"}),
            &base_claims(),
            b"x",
        );
        let err = verifier.verify(&token, NOW).unwrap_err();
        assert_eq!(
            err,
            VerifyError::UnsupportedAlgorithm("scriptalert1scri".to_owned())
        );
        let token = raw_token(&json!({"alg": "\u{1b}"}), &base_claims(), b"x");
        assert_eq!(
            verifier.verify(&token, NOW).unwrap_err(),
            VerifyError::UnsupportedAlgorithm("?".to_owned())
        );
    }

    #[test]
    fn configured_claims_and_claim_types() {
        let (key, _) = IssuerKey::generate("ed-1").unwrap();
        let mut issuer = trusted(&jwks(&[&key]), &["EdDSA"]);
        issuer.groups_claim = "https://sluice.example/groups".to_owned();
        issuer.subject_claim = "email".to_owned();
        let verifier = Verifier::new(&[issuer]).unwrap();

        let claims = with(
            with(base_claims(), "https://sluice.example/groups", json!("dba")),
            "email",
            json!("alice@example.com"),
        );
        let identity = verifier.verify(&ed_token(&key, &claims), NOW).unwrap();
        assert_eq!(identity.subject, "alice@example.com");
        assert_eq!(identity.groups, vec!["dba"]);

        let no_email = ed_token(&key, &base_claims());
        assert_rejects(
            &verifier,
            &no_email,
            NOW,
            VerifyError::MissingClaim("subject"),
        );
        let numeric_email = ed_token(&key, &with(base_claims(), "email", json!(7)));
        assert_rejects(
            &verifier,
            &numeric_email,
            NOW,
            VerifyError::InvalidClaim("subject"),
        );

        // Default claims.
        let verifier = Verifier::new(&[trusted(&jwks(&[&key]), &["EdDSA"])]).unwrap();
        let empty_sub = ed_token(&key, &with(base_claims(), "sub", json!("")));
        assert_rejects(&verifier, &empty_sub, NOW, VerifyError::MissingClaim("sub"));
        let no_sub = ed_token(&key, &without(base_claims(), "sub"));
        assert_rejects(&verifier, &no_sub, NOW, VerifyError::MissingClaim("sub"));
        let bad_groups = ed_token(
            &key,
            &with(base_claims(), "groups", json!(["ok", {"id": 1}])),
        );
        assert_rejects(
            &verifier,
            &bad_groups,
            NOW,
            VerifyError::InvalidClaim("groups"),
        );
        let bad_roles = ed_token(&key, &with(base_claims(), "roles", json!(3)));
        assert_rejects(
            &verifier,
            &bad_roles,
            NOW,
            VerifyError::InvalidClaim("roles"),
        );
        let bad_jti = ed_token(&key, &with(base_claims(), "jti", json!(12)));
        assert_rejects(&verifier, &bad_jti, NOW, VerifyError::InvalidClaim("jti"));
        let null_groups = ed_token(&key, &with(base_claims(), "groups", Value::Null));
        assert!(
            verifier
                .verify(&null_groups, NOW)
                .unwrap()
                .groups
                .is_empty()
        );
    }

    #[test]
    fn construction_errors() {
        let (key, _) = IssuerKey::generate("ed-1").unwrap();
        let good = trusted(&jwks(&[&key]), &["EdDSA"]);
        assert_eq!(
            Verifier::new(&[good.clone(), good.clone()]).unwrap_err(),
            IdentityError::DuplicateIssuer(ISS.to_owned())
        );
        let mut bad_jwks = good.clone();
        bad_jwks.jwks_json = "<html>".to_owned();
        assert!(matches!(
            Verifier::new(&[bad_jwks]),
            Err(IdentityError::InvalidJwks { .. })
        ));
        let mut no_aud = good.clone();
        no_aud.audiences.clear();
        assert!(matches!(
            Verifier::new(&[no_aud]),
            Err(IdentityError::InvalidIssuer {
                key: "audiences",
                ..
            })
        ));
        let mut hs = good;
        hs.algorithms.push("HS256".to_owned());
        assert!(matches!(
            Verifier::new(&[hs]),
            Err(IdentityError::InvalidIssuer {
                key: "algorithms",
                ..
            })
        ));
        // No issuers at all: everything is an unknown issuer.
        let empty = Verifier::new(&[]).unwrap();
        assert_rejects(
            &empty,
            &ed_token(&key, &base_claims()),
            NOW,
            VerifyError::UnknownIssuer,
        );
    }

    #[test]
    fn key_rotation_keeps_old_tokens_valid() {
        let (old, _) = IssuerKey::generate("2025-01").unwrap();
        let (new, _) = IssuerKey::generate("2025-02").unwrap();
        let verifier = Verifier::new(&[trusted(&jwks(&[&new, &old]), &["EdDSA"])]).unwrap();
        assert!(
            verifier
                .verify(&ed_token(&old, &base_claims()), NOW)
                .is_ok()
        );
        assert!(
            verifier
                .verify(&ed_token(&new, &base_claims()), NOW)
                .is_ok()
        );
    }

    #[test]
    fn verify_now_uses_the_system_clock() {
        let (key, verifier) = ed_setup();
        // Far-future window: valid now; far-past: expired now.
        let future = with(
            with(base_claims(), "exp", json!(u64::MAX / 2)),
            "nbf",
            json!(0),
        );
        let future = with(future, "iat", json!(0));
        assert!(verifier.verify_now(&ed_token(&key, &future)).is_ok());
        let past = with(base_claims(), "exp", json!(1_000));
        assert_eq!(
            verifier.verify_now(&ed_token(&key, &past)).unwrap_err(),
            VerifyError::Expired
        );
    }

    #[test]
    fn error_codes_are_distinct() {
        let errors = [
            VerifyError::Malformed,
            VerifyError::UnsupportedAlgorithm("x".to_owned()),
            VerifyError::UnknownIssuer,
            VerifyError::UnknownKey,
            VerifyError::InvalidSignature,
            VerifyError::Expired,
            VerifyError::NotYetValid,
            VerifyError::InvalidAudience,
            VerifyError::MissingClaim("exp"),
            VerifyError::InvalidClaim("exp"),
        ];
        let codes: std::collections::HashSet<_> = errors.iter().map(VerifyError::code).collect();
        assert_eq!(codes.len(), errors.len());
        assert_eq!(
            VerifyError::Expired.to_string(),
            "token expired: get a new token"
        );
    }
}
