//! # latchkey-device — the device agent, `latchkeyd`
//!
//! Runs on a device or the hub next to it: holds the device's keys, shows its claim QR, learns
//! its owners from several registry nodes (latchkey-quorum) and verifies the chain itself,
//! takes sealed commands over local HTTP and through node mailboxes, runs them through the
//! verification [`pipeline`], drives [`actuator`]s, and keeps a signed, hash-chained
//! [`audit`] log.
//!
//! **Invariant: nothing runs before it is verified, in order** — size, decryption, padding,
//! decoding, signature, device id, time window (or challenge), nonce, authority, use limits —
//! each refusal with its own reason (written to the audit log, or counted in its per-minute
//! summary when nobody with standing sent it). **Invariant: no command runs twice, across
//! `kill -9` and power cuts too**: nonces are taken in memory ([`strike`]) and every accepted
//! timestamp is under a durable lease, which the next run takes as its restart barrier
//! ([`store::Store::boot`]; docs/PROTOCOL.md §6.1), so no command pays an fsync for its nonce.
//!
//! The pipeline is a plain struct with an injected [`clock::Clock`] and randomness (its only
//! I/O is SQLite); sockets and timers live in [`agent`], [`server`], [`relay`] and [`mdns`].

pub mod actuator;
pub mod agent;
pub mod audit;
pub mod audit_log;
pub mod claim;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod files;
pub mod keyfile;
pub mod lifecycle;
pub mod mdns;
pub mod pipeline;
pub mod relay;
pub mod server;
pub mod store;
pub mod stream;
pub mod strike;
pub mod tally;
pub mod view;

pub use error::{Error, Result};
