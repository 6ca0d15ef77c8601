//! `sluice-spool`: the data-plane agent's durable, bounded, on-disk FIFO of
//! audit events.
//!
//! Design §6 says audit is not optional: an event the agent cannot spool
//! means the statement does not run, and every spooled event reaches the
//! control plane exactly once, acknowledged by sequence number. This crate
//! owns the half of that promise that lives on the agent's disk:
//!
//! * [`Spool::append`] / [`Spool::append_batch`] assign each record a
//!   strictly increasing `u64` sequence number and return only once the
//!   record is on stable storage (write + `fdatasync`).
//! * [`Spool::read_after`] serves unacknowledged records in order, in bounded
//!   pages, without loading the spool into memory.
//! * [`Spool::ack`] durably records how far the control plane has confirmed
//!   and frees the disk space of fully acknowledged segments.
//! * [`Spool::open`] recovers after a crash: a torn write at the very end of
//!   the spool is trimmed; damage inside the last segment with intact records
//!   after it (what a power loss can leave of unsynced writes) ends the spool
//!   there, the bytes cut off kept in a file and reported as [`SetAside`];
//!   any other damage fails closed with [`SpoolError::Corrupt`].
//!
//! What it must never do: drop a durable record that was handed a sequence
//! number and not yet acknowledged, hand out the same sequence number twice
//! (even after every segment was deleted), or guess its way past damage it
//! cannot explain. Damage it can explain only as a power loss, or as a disk
//! losing data, is the one exception to the first two, and it is never
//! silent: the bytes are kept and the caller is told (the agent records it
//! in the trail). Any other doubt returns an error, and the agent refuses
//! to serve rather than lose track of what it has audited.
//!
//! Records are opaque bytes: encoding audit events is the caller's business.
//! The API is synchronous `std::fs`; the agent drives it from a dedicated
//! blocking task, so each call may block on `fdatasync`.
//!
//! On-disk layout of the spool directory:
//!
//! * `NNNNNNNNNNNNNNNNNNNN.seg`: segment files, named by the sequence number
//!   of their first record (20 digits, so names sort numerically), holding
//!   frames `len u32 LE | crc32 u32 LE | seq u64 LE | payload`.
//! * `acked`: the highest acknowledged sequence number in ASCII decimal,
//!   replaced atomically (write temp, fsync, rename, fsync directory).
//! * `<segment>.<offset>.<first lost seq>.<n>.damaged`: bytes cut off a
//!   segment at `offset` by recovery ([`SetAside`]), kept for inspection
//!   and never read again; `.reported` is added to the name once the caller
//!   has recorded the damage ([`Spool::reported`]).
//! * `spool.lock`: held with an exclusive lock while a [`Spool`] is open, so
//!   two processes never append to the same spool.

mod acked;
mod error;
mod frame;
mod fsutil;
mod segment;
mod spool;

pub use error::SpoolError;
pub use spool::{SetAside, Spool, SpoolConfig, SyncMode};
