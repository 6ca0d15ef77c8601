//! The client side of PostgreSQL authentication, used by the agent to log
//! in to the target with the vault credential: SCRAM-SHA-256 (RFC 5802 /
//! RFC 7677, without channel binding), MD5 and cleartext.
//!
//! The server is verified too: SCRAM's final message must carry the server
//! signature derived from the same password, so a spoofed target that does
//! not know the password is detected.

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use md5::{Digest as _, Md5};
use ring::{digest, hmac, pbkdf2, rand::SecureRandom as _};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the server's SCRAM message is malformed")]
    Malformed,
    #[error("the server's SCRAM nonce does not extend ours")]
    NonceMismatch,
    #[error("the server asks for {0} SCRAM iterations (limit 1000000)")]
    TooManyIterations(u32),
    #[error("the server could not prove it knows the password (SCRAM server signature mismatch)")]
    ServerSignature,
    #[error("random number generator failed")]
    Rng,
}

/// MD5 password hash as PostgreSQL expects: `md5` + md5(md5(password + user) + salt).
pub fn md5_password(user: &str, password: &[u8], salt: [u8; 4]) -> String {
    let mut inner = Md5::new();
    inner.update(password);
    inner.update(user.as_bytes());
    let inner = hex::encode(inner.finalize());
    let mut outer = Md5::new();
    outer.update(inner.as_bytes());
    outer.update(salt);
    format!("md5{}", hex::encode(outer.finalize()))
}

/// SCRAM-SHA-256 client state.
pub struct ScramClient {
    password: Zeroizing<Vec<u8>>,
    client_nonce: String,
    client_first_bare: String,
    expected_server_signature: Option<Vec<u8>>,
}

pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
const MAX_ITERATIONS: u32 = 1_000_000;

impl ScramClient {
    pub fn new(password: &[u8]) -> Result<Self, AuthError> {
        let mut raw = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| AuthError::Rng)?;
        Ok(Self::with_nonce(password, &B64.encode(raw)))
    }

    fn with_nonce(password: &[u8], nonce: &str) -> Self {
        Self {
            password: Zeroizing::new(password.to_vec()),
            client_nonce: nonce.to_owned(),
            // PostgreSQL takes the user name from the start-up message.
            client_first_bare: format!("n=,r={nonce}"),
            expected_server_signature: None,
        }
    }

    /// The client-first-message (for SASLInitialResponse).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Consumes server-first-message, returns client-final-message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        let server_first = std::str::from_utf8(server_first).map_err(|_| AuthError::Malformed)?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(B64.decode(v).map_err(|_| AuthError::Malformed)?),
                Some(("i", v)) => {
                    iterations = Some(v.parse::<u32>().map_err(|_| AuthError::Malformed)?)
                }
                _ => {}
            }
        }
        let (nonce, salt, iterations) = (
            nonce.ok_or(AuthError::Malformed)?,
            salt.ok_or(AuthError::Malformed)?,
            iterations.ok_or(AuthError::Malformed)?,
        );
        if !nonce.starts_with(&self.client_nonce) || nonce.len() <= self.client_nonce.len() {
            return Err(AuthError::NonceMismatch);
        }
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(AuthError::TooManyIterations(iterations));
        }
        let mut salted = Zeroizing::new([0u8; 32]);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations).ok_or(AuthError::Malformed)?,
            &salt,
            &self.password,
            salted.as_mut(),
        );
        let salted_key = hmac::Key::new(hmac::HMAC_SHA256, salted.as_ref());
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&salted_key, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        self.expected_server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final-message.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), AuthError> {
        let text = std::str::from_utf8(server_final).map_err(|_| AuthError::Malformed)?;
        let v = text.strip_prefix("v=").ok_or(AuthError::ServerSignature)?;
        let got = B64.decode(v.trim_end()).map_err(|_| AuthError::Malformed)?;
        let expected = self
            .expected_server_signature
            .as_deref()
            .ok_or(AuthError::Malformed)?;
        if ring_constant_eq(&got, expected) {
            Ok(())
        } else {
            Err(AuthError::ServerSignature)
        }
    }
}

fn ring_constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_postgres() {
        // SELECT 'md5' || md5(md5('secret' || 'alice') || E'\\x01020304'::bytea::text) is awkward in
        // SQL; this value was computed by hand from the definition.
        let inner = hex::encode(Md5::digest(b"secretalice"));
        let mut outer = Md5::new();
        outer.update(inner.as_bytes());
        outer.update([1, 2, 3, 4]);
        assert_eq!(
            md5_password("alice", b"secret", [1, 2, 3, 4]),
            format!("md5{}", hex::encode(outer.finalize()))
        );
    }

    /// RFC 7677 section 3 test vector (user "user", password "pencil").
    #[test]
    fn scram_rfc7677_vector() {
        let mut c = ScramClient::with_nonce(b"pencil", "rOprNGfwEbeRWgbNEkqO");
        c.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = c.client_final(server_first).unwrap();
        assert_eq!(
            std::str::from_utf8(&fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            c.verify_server_final(b"v=AAAA"),
            Err(AuthError::ServerSignature)
        );
    }

    #[test]
    fn scram_rejects_bad_server_messages() {
        let mut c = ScramClient::with_nonce(b"pw", "abc");
        assert_eq!(
            c.client_final(b"r=xyz,s=QUJD,i=4096"),
            Err(AuthError::NonceMismatch)
        );
        assert_eq!(
            c.client_final(b"r=abc,s=QUJD,i=4096"),
            Err(AuthError::NonceMismatch)
        );
        assert_eq!(
            c.client_final(b"r=abcd,s=QUJD,i=99999999"),
            Err(AuthError::TooManyIterations(99_999_999))
        );
        assert_eq!(c.client_final(b"r=abcd,i=1"), Err(AuthError::Malformed));
        assert_eq!(c.client_final(b"\xff"), Err(AuthError::Malformed));
    }
}
