//! A device's key set and the first things it says: its genesis op and its claim code.

use core::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::chain::{Genesis, Op, OpBody, OpId};
use crate::claim::{ClaimPayload, DeviceAddr};
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::kem::KemSecretKey;
use crate::keys::{DeviceId, SigningKey};

const KEY_FILE_VERSION: u8 = 1;

/// Everything secret a device holds: identity key D, KEM keys, and the setup key T (replaced at
/// each factory reset).
pub struct DeviceKeys {
    pub identity: SigningKey,
    pub kem: KemSecretKey,
    pub setup: SigningKey,
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKeys({:?}, <redacted>)", self.device_id())
    }
}

impl DeviceKeys {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        DeviceKeys {
            identity: SigningKey::generate(rng),
            kem: KemSecretKey::generate(rng),
            setup: SigningKey::generate(rng),
        }
    }

    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_identity(&self.identity.public_key())
    }

    /// The genesis op, signed by the identity key.
    pub fn genesis(&self, name: &str, issued_ms: u64) -> Result<Op> {
        if name.len() > crate::chain::MAX_DEVICE_NAME {
            return Err(Error::TooLarge {
                what: "device name",
                actual: name.len(),
                limit: crate::chain::MAX_DEVICE_NAME,
            });
        }
        let mut op = Op::new(
            self.device_id(),
            0,
            OpId::NONE,
            issued_ms,
            OpBody::Genesis(Box::new(Genesis {
                identity: self.identity.public_key(),
                kem: self.kem.public().clone(),
                setup: self.setup.public_key(),
                name: name.to_owned(),
            })),
        );
        op.sign(&self.identity);
        Ok(op)
    }

    /// The claim code for the current setup key. Names longer than the code allows are cut (the
    /// genesis op carries the full name).
    pub fn claim_payload(&self, name: &str, addrs: Vec<DeviceAddr>) -> ClaimPayload {
        let mut short = name.to_owned();
        if short.len() > crate::claim::MAX_CLAIM_NAME {
            let mut cut = crate::claim::MAX_CLAIM_NAME;
            while !short.is_char_boundary(cut) {
                cut -= 1;
            }
            short.truncate(cut);
        }
        ClaimPayload {
            identity: self.identity.public_key(),
            kem_commitment: self.kem.public().commitment(),
            setup_secret: self.setup.to_bytes(),
            name: short,
            addrs,
        }
    }

    /// The key file's contents: `version || identity (32) || setup (32) || KEM secret`.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.u8(KEY_FILE_VERSION);
        w.raw(self.identity.to_bytes().as_slice());
        w.raw(self.setup.to_bytes().as_slice());
        w.raw(&self.kem.to_bytes());
        Zeroizing::new(w.into_inner())
    }

    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new("device key file", bytes);
        let version = r.u8()?;
        if version != KEY_FILE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "device key file",
                found: version,
                supported: KEY_FILE_VERSION,
            });
        }
        let identity = SigningKey::from_bytes(&Zeroizing::new(r.array::<32>()?));
        let setup = SigningKey::from_bytes(&Zeroizing::new(r.array::<32>()?));
        let kem = KemSecretKey::from_bytes(r.take(r.remaining())?)?;
        Ok(DeviceKeys {
            identity,
            kem,
            setup,
        })
    }
}
