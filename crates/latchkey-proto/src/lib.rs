//! # latchkey-proto — the Latchkey protocol core
//!
//! Pure types and state machines: key derivation, the one binary codec, the device's claim
//! code, the ownership chain, grants, sealed commands and responses, padding and the replay
//! window, weekly schedules, data streams and consent. **Invariant: no I/O.** Nothing here reads a clock, a socket, a file or the
//! environment; time is a `u64` of milliseconds passed in, randomness is a `CryptoRng` passed in
//! (the one exception, sntrup761 key generation and encapsulation, draws from the OS because
//! pqcrypto-ntruprime offers no other way). The byte layouts are specified in docs/PROTOCOL.md.

pub mod audit;
pub mod chain;
pub mod claim;
pub mod codec;
pub mod command;
pub mod consent;
pub mod device;
pub mod envelope;
pub mod error;
pub mod event;
pub mod grant;
pub mod hash;
pub mod invite;
pub mod kem;
pub mod keys;
pub mod pad;
pub mod redeem;
pub mod replay;
pub mod schedule;
pub mod shortlink;
pub mod stream;

pub use error::{Error, Result};

/// The protocol version every versioned encoding starts with.
pub const PROTOCOL_VERSION: u8 = 1;
