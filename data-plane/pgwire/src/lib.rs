//! PostgreSQL v3 wire protocol pieces for the Sluice agent.
//!
//! Works on bytes and owns no sockets: framing with length limits
//! ([`frame`]), the start-up packet ([`startup`]), builders and parsers for
//! the messages the agent generates or inspects ([`messages`]), the text
//! form of binary values ([`binary`]), and the client side of upstream
//! authentication ([`auth`]). Messages the agent
//! does not need to understand are forwarded as the bytes they arrived in.
//!
//! Nothing here may panic on input: every length is checked before it is
//! used, and malformed input is an error value.

pub mod auth;
pub mod binary;
pub mod frame;
pub mod messages;
pub mod startup;

pub use frame::{Frame, FrameError, FrameReader};

/// Errors from parsing protocol messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// A text field that is not UTF-8: the agent reads every session's
    /// text as UTF-8.
    #[error(
        "the {0} message's text is not valid UTF-8 (sessions through Sluice use client_encoding UTF8)"
    )]
    NotUtf8(&'static str),
    #[error("{0}")]
    Unsupported(String),
}
