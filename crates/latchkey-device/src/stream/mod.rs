//! Data streams the device publishes (docs/PROTOCOL.md §14): where readings come from.
//!
//! - [`dsmr`]: the DSMR P1 telegram parser (Dutch/Belgian smart meters, DSMR 2.2 to 5.0 and
//!   Fluvius e-MUCS) and the framer that cuts a byte stream into telegrams.
//! - [`source`]: where the bytes come from (a serial port, a ser2net-style TCP gateway, or a
//!   recorded file replayed at a rate), as a channel of readings and counted bad telegrams.
//!
//! **Invariant: a telegram that does not parse, or whose CRC does not match, never becomes a
//! reading**; it becomes a [`source::SourceItem::Bad`] naming the line and the reason.

pub mod dsmr;
pub mod source;
