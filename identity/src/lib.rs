//! Who is calling: verification of OIDC JWTs and the signing half of Sluice's
//! built-in token issuer.
//!
//! This crate owns:
//!
//! - [`TrustedIssuer`]: the configuration of one identity provider Sluice
//!   trusts (issuer URL, audiences, allowed algorithms, its JWKS, which claims
//!   carry the subject and the groups, clock-skew leeway).
//! - [`Verifier`]: built once from a list of trusted issuers (the control plane
//!   builds one for its API, every agent builds one from its snapshot) and then
//!   asked, for every client connection, to turn a bearer token into an
//!   [`Identity`] or a [`VerifyError`] that is safe to show to the client.
//! - [`IssuerKey`] and [`TokenClaims`]: the Ed25519 key with which the control
//!   plane's built-in issuer mints tokens, and the public JWKS it publishes
//!   ([`jwks`]), so that its tokens verify through the very same [`Verifier`].
//!
//! It must never do I/O: no network (JWKS documents are fetched by the control
//! plane and handed in as strings), no files (key material comes in and goes
//! out as bytes), no async runtime. The only ambient inputs are the system
//! clock in [`Verifier::verify_now`] and the OS random number generator in
//! [`IssuerKey::generate`]; everything else is a pure function of its
//! arguments, so callers can test with a fixed `now`.
//!
//! Verification fails closed: an unknown issuer, key or algorithm is an error,
//! symmetric (`HS*`) and `none` algorithms are never accepted, and a token's
//! algorithm must match the type of the key its `kid` names.

mod b64;
mod error;
mod issuer;
mod jwk;
mod sign;
mod verify;

pub use error::{IdentityError, VerifyError};
pub use issuer::{
    DEFAULT_ALGORITHMS, DEFAULT_GROUPS_CLAIM, DEFAULT_LEEWAY_SECONDS, DEFAULT_SUBJECT_CLAIM,
    MAX_LEEWAY_SECONDS, TrustedIssuer,
};
pub use sign::{IssuerKey, SERVICE_ACCOUNT_KIND, TokenClaims, jwks};
pub use verify::{Identity, MAX_TOKEN_BYTES, SkippedKey, SubjectKind, Verifier};
