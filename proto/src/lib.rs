//! The `sluice.agent.v1` contract between the control plane and its agents.
//!
//! This crate only holds generated code; it must never grow logic. Both
//! planes depend on it, and the `.proto` file next to it is the source of
//! truth.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sluice.agent.v1");
}

pub use v1::*;
