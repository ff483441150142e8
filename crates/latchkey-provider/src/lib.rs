//! latchkey-provider: the data provider's side of consent. A provider has an identity (a
//! signing key and a hybrid KEM key in the OS keychain), asks an owner for consent with a
//! signed request link, and reads a device's sealed stream from the home broker with the
//! stream keys the device sealed to it, until the owner revokes or the consent expires.

pub mod error;
pub mod identity;
pub mod keychain;
pub mod keystore;
pub mod output;
pub mod profile;
pub mod read;
pub mod reader;
pub mod registry;
pub mod request;

pub use error::{Error, Result};
pub use profile::Profile;
