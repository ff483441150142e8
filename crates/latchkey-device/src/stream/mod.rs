//! Data streams (docs/PROTOCOL.md §14): a smart meter's P1 telegrams read from a source
//! ([`source`], [`dsmr`]), sealed under a stream key and published on the home MQTT broker
//! ([`publish`]), the keys and consents behind them ([`keys`], [`consent`]), and the free
//! tier ([`aggregate`]).

pub mod aggregate;
pub mod consent;
pub mod keys;
// pub mod publish; (after h-dsmr)
