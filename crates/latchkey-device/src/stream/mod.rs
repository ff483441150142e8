//! Data streams the device publishes (docs/PROTOCOL.md §14).
//!
//! - [`dsmr`]: the DSMR P1 telegram parser (Dutch/Belgian smart meters, DSMR 2.2 to 5.0 and
//!   Fluvius e-MUCS) and the framer that cuts a byte stream into telegrams.
//! - [`source`]: where the bytes come from (a serial port, a ser2net-style TCP gateway, or a
//!   recorded file replayed at a rate), as a channel of readings and counted bad telegrams.
//! - [`keys`]: stream keys, reading sequence numbers and the consents the device holds, durable
//!   in `state.db`; rotation.
//! - [`consent`]: the owner-only reserved action `latchkey.consent`, judged against the
//!   device's chain view and the entries it holds.
//! - [`publish`]: the broker connection and the per-stream publisher (key messages, sealed
//!   readings, the free tier).
//! - [`aggregate`]: the free tier's 1-minute mean power and hourly energy.
//!
//! **Invariant: a telegram that does not parse, or whose CRC does not match, never becomes a
//! reading**; it becomes a [`source::SourceItem::Bad`] naming the line and the reason, which
//! the publisher counts and drops.

pub mod aggregate;
pub mod consent;
pub mod dsmr;
pub mod keys;
pub mod publish;
pub mod source;
