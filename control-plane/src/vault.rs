//! The credential vault: AES-256-GCM envelope encryption.
//!
//! Every value gets its own random data-encryption key (DEK); the DEK is
//! wrapped with the key-encryption key (KEK), which comes from
//! `SLUICE_MASTER_KEY` or a key file and is never written to the database.
//! Rotating the KEK re-wraps DEKs only; ciphertexts stay as they are. Both
//! layers bind an "associated data" label (e.g. `credential:orders-db`) so a
//! sealed value cannot be swapped onto another row and still decrypt.

use std::path::Path;

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
    rand::{SecureRandom as _, SystemRandom},
};
use zeroize::{Zeroize as _, Zeroizing};

use crate::store::Sealed;

const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "no master key: set SLUICE_MASTER_KEY (base64 of 32 random bytes) or SLUICE_MASTER_KEY_FILE"
    )]
    Missing,
    #[error("master key from {source_name} is invalid: {reason}")]
    InvalidKey { source_name: String, reason: String },
    #[error("cannot read master key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "value was sealed with master key {found}, but the configured key is {expected}: configure the right key (or finish the key rotation)"
    )]
    WrongKey { found: String, expected: String },
    #[error("could not decrypt {label}: data is corrupt or was tampered with")]
    Decrypt { label: String },
    #[error("random number generator failed")]
    Rng,
}

/// The key-encryption key. Debug output never shows the key.
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Parses a key from its text form: base64 (standard or URL-safe) or hex
    /// of exactly 32 bytes.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, VaultError> {
        use base64::Engine as _;
        let text = text.trim();
        let invalid = |reason: &str| VaultError::InvalidKey {
            source_name: source_name.to_owned(),
            reason: reason.to_owned(),
        };
        let mut bytes = if text.len() == KEY_LEN * 2 && text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            hex::decode(text).map_err(|_| invalid("not valid hex"))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| invalid("expected base64 or hex of 32 random bytes"))?
        };
        if bytes.len() != KEY_LEN {
            bytes.zeroize();
            return Err(invalid(&format!("expected 32 bytes, got {}", bytes.len())));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&bytes);
        bytes.zeroize();
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"sluice-kek-id:v1:");
        ctx.update(key.as_ref());
        let id = hex::encode(&ctx.finish().as_ref()[..8]);
        Self { id, key }
    }

    /// Reads a key file (base64 or hex text).
    pub fn from_file(path: &Path) -> Result<Self, VaultError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| VaultError::KeyFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?,
            );
        Self::parse(&text, &path.display().to_string())
    }

    /// Generates a new random key and writes it to `path` (mode 0600),
    /// refusing to overwrite an existing file.
    pub fn generate_file(path: &Path) -> Result<Self, VaultError> {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| VaultError::Rng)?;
        let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.as_ref()));
        let io_err = |e: std::io::Error| VaultError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io_err)?;
        file.write_all(text.as_bytes()).map_err(io_err)?;
        file.write_all(b"\n").map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(Self::from_bytes(key))
    }

    /// A short public identifier of the key (not secret: a hash prefix).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Seals and opens values with the configured master key.
#[derive(Debug)]
pub struct Vault {
    kek: MasterKey,
    rng: SystemRandom,
}

/// Plaintext that wipes itself from memory when dropped.
pub type Plaintext = Zeroizing<Vec<u8>>;

impl Vault {
    pub fn new(kek: MasterKey) -> Self {
        Self {
            kek,
            rng: SystemRandom::new(),
        }
    }

    pub fn key_id(&self) -> &str {
        self.kek.id()
    }

    /// Encrypts `plaintext` under a fresh DEK bound to `label`.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Sealed, VaultError> {
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        self.rng.fill(dek.as_mut()).map_err(|_| VaultError::Rng)?;
        let ciphertext = encrypt(&self.rng, dek.as_ref(), &data_aad(label), plaintext)?;
        let wrapped_dek = encrypt(
            &self.rng,
            self.kek.key.as_ref(),
            &dek_aad(label),
            dek.as_ref(),
        )?;
        Ok(Sealed {
            kek_id: self.kek.id.clone(),
            wrapped_dek,
            ciphertext,
        })
    }

    /// Decrypts a value sealed for `label`.
    pub fn open(&self, label: &str, sealed: &Sealed) -> Result<Plaintext, VaultError> {
        let dek = self.unwrap_dek(label, sealed)?;
        decrypt(dek.as_ref(), &data_aad(label), &sealed.ciphertext).ok_or_else(|| {
            VaultError::Decrypt {
                label: label.to_owned(),
            }
        })
    }

    fn unwrap_dek(&self, label: &str, sealed: &Sealed) -> Result<Plaintext, VaultError> {
        if sealed.kek_id != self.kek.id {
            return Err(VaultError::WrongKey {
                found: sealed.kek_id.clone(),
                expected: self.kek.id.clone(),
            });
        }
        let dek = decrypt(self.kek.key.as_ref(), &dek_aad(label), &sealed.wrapped_dek).ok_or_else(
            || VaultError::Decrypt {
                label: label.to_owned(),
            },
        )?;
        if dek.len() != KEY_LEN {
            return Err(VaultError::Decrypt {
                label: label.to_owned(),
            });
        }
        Ok(dek)
    }

    /// Re-wraps the DEK of `sealed` under `new_kek`; the ciphertext is kept.
    pub fn rewrap(
        &self,
        label: &str,
        sealed: &Sealed,
        new_kek: &MasterKey,
    ) -> Result<Sealed, VaultError> {
        let dek = self.unwrap_dek(label, sealed)?;
        let wrapped_dek = encrypt(
            &self.rng,
            new_kek.key.as_ref(),
            &dek_aad(label),
            dek.as_ref(),
        )?;
        Ok(Sealed {
            kek_id: new_kek.id.clone(),
            wrapped_dek,
            ciphertext: sealed.ciphertext.clone(),
        })
    }
}

fn data_aad(label: &str) -> Vec<u8> {
    [b"sluice-data:v1:".as_slice(), label.as_bytes()].concat()
}

fn dek_aad(label: &str) -> Vec<u8> {
    [b"sluice-dek:v1:".as_slice(), label.as_bytes()].concat()
}

/// nonce || ciphertext || tag
fn encrypt(
    rng: &SystemRandom,
    key: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| VaultError::Rng)?);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| VaultError::Rng)?;
    let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    buf.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| VaultError::Rng)?;
    buf.extend_from_slice(&body);
    body.zeroize();
    Ok(buf)
}

fn decrypt(key: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Plaintext> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::parse(&hex::encode([byte; 32]), "test").unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_no_plaintext_in_sealed_form() {
        let vault = Vault::new(key(1));
        let secret = b"hunter2-very-secret";
        let sealed = vault.seal("credential:db", secret).unwrap();
        let all = [sealed.wrapped_dek.clone(), sealed.ciphertext.clone()].concat();
        assert!(!all.windows(secret.len()).any(|w| w == secret));
        assert_eq!(
            vault.open("credential:db", &sealed).unwrap().as_slice(),
            secret
        );
    }

    #[test]
    fn label_binding_prevents_swapping_rows() {
        let vault = Vault::new(key(1));
        let sealed = vault.seal("credential:a", b"x").unwrap();
        assert!(matches!(
            vault.open("credential:b", &sealed),
            Err(VaultError::Decrypt { .. })
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let vault = Vault::new(key(1));
        let mut sealed = vault.seal("l", b"secret").unwrap();
        let last = sealed.ciphertext.len() - 1;
        sealed.ciphertext[last] ^= 1;
        assert!(vault.open("l", &sealed).is_err());
        let mut short = vault.seal("l", b"secret").unwrap();
        short.wrapped_dek.truncate(4);
        assert!(vault.open("l", &short).is_err());
    }

    #[test]
    fn rotation_rewraps_and_old_key_is_refused() {
        let old = Vault::new(key(1));
        let sealed = old.seal("l", b"secret").unwrap();
        let new_key = key(2);
        let rewrapped = old.rewrap("l", &sealed, &new_key).unwrap();
        assert_eq!(rewrapped.ciphertext, sealed.ciphertext);
        let new = Vault::new(key(2));
        assert_eq!(new.open("l", &rewrapped).unwrap().as_slice(), b"secret");
        let err = old.open("l", &rewrapped).unwrap_err();
        assert!(matches!(err, VaultError::WrongKey { .. }), "{err}");
    }

    #[test]
    fn key_parsing_names_the_source_and_never_echoes_the_key() {
        let err = MasterKey::parse("c2hvcnQ=", "SLUICE_MASTER_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SLUICE_MASTER_KEY") && err.contains("32 bytes"),
            "{err}"
        );
        assert!(!err.contains("c2hvcnQ"));
        assert!(
            MasterKey::parse(
                &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]),
                "x"
            )
            .is_ok()
        );
    }

    #[test]
    fn generated_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let k = MasterKey::generate_file(&path).unwrap();
        let again = MasterKey::from_file(&path).unwrap();
        assert_eq!(k.id(), again.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(
            MasterKey::generate_file(&path).is_err(),
            "must not overwrite"
        );
    }
}
