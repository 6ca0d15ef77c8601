//! How one sensitive value is rewritten.

use ring::hmac;

use crate::model::MaskStrategy;

/// What `redact` writes in place of a value.
pub const REDACTED: &str = "[REDACTED]";

/// How many trailing characters `partial` keeps.
const PARTIAL_KEEP: usize = 4;

/// How many bytes of the HMAC-SHA256 tag `hash` shows (96 bits: collisions
/// are negligible at table sizes, and the full tag is not needed for joins).
const HASH_BYTES: usize = 12;

/// Rewrites one sensitive value.
///
/// * `redact`: the fixed text [`REDACTED`];
/// * `partial`: the last 4 characters stay, every other alphanumeric
///   character becomes `*`, separators stay (`4111-1111-1111-1111` becomes
///   `****-****-****-1111`); a value of 4 characters or fewer is all `*`;
/// * `hash`: `h:` and the hex of the first 12 bytes of
///   HMAC-SHA256(`key`, `value`), equal for equal values under one key, so
///   joins and group-bys on the masked value still work;
/// * `null`: `None`, the caller sends SQL NULL.
pub fn apply(strategy: MaskStrategy, value: &str, key: &[u8]) -> Option<String> {
    match strategy {
        MaskStrategy::Redact => Some(REDACTED.to_owned()),
        MaskStrategy::Partial => Some(partial(value)),
        MaskStrategy::Hash => Some(keyed_hash(value, key)),
        MaskStrategy::Null => None,
    }
}

fn partial(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= PARTIAL_KEEP {
        return "*".repeat(chars);
    }
    let keep_from = chars - PARTIAL_KEEP;
    value
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i >= keep_from || !c.is_alphanumeric() {
                c
            } else {
                '*'
            }
        })
        .collect()
}

fn keyed_hash(value: &str, key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, value.as_bytes());
    let mut out = String::with_capacity(2 + 2 * HASH_BYTES);
    out.push_str("h:");
    for &byte in tag.as_ref().iter().take(HASH_BYTES) {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}
