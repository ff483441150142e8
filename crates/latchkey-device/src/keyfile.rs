//! `device.key`: the identity key D, the KEM keys and — until the device is claimed — the setup
//! key T. Once a claim is in the verified chain the setup secret is spent: it is dropped from
//! the file (and from memory), so a copy of the file taken later cannot sign a rival claim.
//!
//! Version 2 (written now): `u8 2 || D secret (32) || u8 has_setup (0|1) || [T secret (32)] ||
//! KEM secret (x25519 32 || sntrup761 secret 1763 || sntrup761 public 1158)`. Version 1 (always
//! a setup key, `DeviceKeys::to_secret_bytes`) still loads. docs/PROTOCOL.md §1.2.

use core::fmt;

use latchkey_proto::codec::{Reader, Writer};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::kem::{KemSecretKey, SNTRUP_PUBLIC_LEN, SNTRUP_SECRET_LEN};
use latchkey_proto::keys::{DeviceId, PublicKey, SigningKey};
use zeroize::Zeroizing;

const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
const KEM_SECRET_LEN: usize = 32 + SNTRUP_SECRET_LEN + SNTRUP_PUBLIC_LEN;

/// The largest key file there is (version 2 with a setup key); longer files are refused unread.
pub const MAX_KEY_FILE: usize = 1 + 32 + 1 + 32 + KEM_SECRET_LEN;

/// The device's secrets as the key file holds them: the setup key is gone once spent.
pub struct DeviceSecrets {
    pub identity: SigningKey,
    pub kem: KemSecretKey,
    /// `None` once a claim made with it is in the verified chain (until a factory reset).
    pub setup: Option<SigningKey>,
}

// By hand: never print a secret, even by mistake in a log line.
impl fmt::Debug for DeviceSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeviceSecrets({:?}, setup key {}, <redacted>)",
            self.device_id(),
            if self.setup.is_some() {
                "held"
            } else {
                "spent"
            }
        )
    }
}

impl From<DeviceKeys> for DeviceSecrets {
    fn from(keys: DeviceKeys) -> Self {
        let DeviceKeys {
            identity,
            kem,
            setup,
        } = keys;
        DeviceSecrets {
            identity,
            kem,
            setup: Some(setup),
        }
    }
}

impl DeviceSecrets {
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_identity(&self.identity.public_key())
    }

    pub fn setup_public(&self) -> Option<PublicKey> {
        self.setup.as_ref().map(SigningKey::public_key)
    }

    /// The same secrets without the setup key (which is wiped when `self` drops it).
    pub fn without_setup(mut self) -> Self {
        self.setup = None;
        self
    }

    /// The key file's contents (version 2).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        encode(&self.identity, self.setup.as_ref(), &self.kem)
    }

    /// Reads a key file of version 1 or 2; anything else, longer than [`MAX_KEY_FILE`], cut
    /// short or followed by more bytes is refused.
    pub fn from_bytes(bytes: &[u8]) -> latchkey_proto::Result<Self> {
        if bytes.len() > MAX_KEY_FILE {
            return Err(latchkey_proto::Error::TooLarge {
                what: "device key file",
                actual: bytes.len(),
                limit: MAX_KEY_FILE,
            });
        }
        let mut r = Reader::new("device key file", bytes);
        match r.u8()? {
            VERSION_1 => Ok(DeviceKeys::from_secret_bytes(bytes)?.into()),
            VERSION_2 => {
                let identity = SigningKey::from_bytes(&Zeroizing::new(r.array::<32>()?));
                let setup =
                    r.option(|r| Ok(SigningKey::from_bytes(&Zeroizing::new(r.array::<32>()?))))?;
                let kem = KemSecretKey::from_bytes(r.take(KEM_SECRET_LEN)?)?;
                r.finish()?;
                Ok(DeviceSecrets {
                    identity,
                    kem,
                    setup,
                })
            }
            found => Err(latchkey_proto::Error::UnsupportedVersion {
                what: "device key file",
                found,
                supported: VERSION_2,
            }),
        }
    }

    /// The proto crate's key set (for the genesis op and the claim code), if the setup key is
    /// still held.
    pub fn to_device_keys(&self) -> Option<DeviceKeys> {
        let setup = self.setup.as_ref()?;
        Some(DeviceKeys {
            identity: SigningKey::from_bytes(&self.identity.to_bytes()),
            kem: KemSecretKey::from_bytes(&self.kem.to_bytes()).ok()?,
            setup: SigningKey::from_bytes(&setup.to_bytes()),
        })
    }
}

/// The key file of a full key set (a new device, or one just reset), version 2.
pub fn key_file_of(keys: &DeviceKeys) -> Zeroizing<Vec<u8>> {
    encode(&keys.identity, Some(&keys.setup), &keys.kem)
}

fn encode(
    identity: &SigningKey,
    setup: Option<&SigningKey>,
    kem: &KemSecretKey,
) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::new();
    w.u8(VERSION_2);
    w.raw(identity.to_bytes().as_slice());
    w.option(setup, |w, t| w.raw(t.to_bytes().as_slice()));
    w.raw(&kem.to_bytes());
    Zeroizing::new(w.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::TestDevice;

    fn copy(keys: &DeviceKeys) -> DeviceKeys {
        DeviceKeys::from_secret_bytes(&keys.to_secret_bytes()).unwrap()
    }

    #[test]
    fn version_1_loads_and_version_2_round_trips_with_and_without_a_setup_key() {
        let d = TestDevice::new(3, "door");
        let old = DeviceSecrets::from_bytes(&d.keys.to_secret_bytes()).unwrap();
        assert_eq!(old.device_id(), d.keys.device_id());
        assert_eq!(old.setup_public(), Some(d.keys.setup.public_key()));

        let bytes = key_file_of(&d.keys);
        assert_eq!(bytes, DeviceSecrets::from(copy(&d.keys)).to_bytes());
        assert_eq!(bytes.len(), MAX_KEY_FILE);
        let back = DeviceSecrets::from_bytes(&bytes).unwrap();
        assert_eq!(back.setup_public(), Some(d.keys.setup.public_key()));
        assert_eq!(back.kem.public(), d.keys.kem.public());

        let spent = back.without_setup();
        let bytes = spent.to_bytes();
        assert_eq!(bytes.len(), MAX_KEY_FILE - 32);
        let secret = d.keys.setup.to_bytes();
        assert!(
            !bytes.windows(32).any(|w| w == secret.as_slice()),
            "the setup secret is not in the file"
        );
        let back = DeviceSecrets::from_bytes(&bytes).unwrap();
        assert!(back.setup.is_none());
        assert_eq!(back.device_id(), d.keys.device_id());
        assert!(back.to_device_keys().is_none());
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let d = TestDevice::new(3, "door");
        let good = DeviceSecrets::from(copy(&d.keys)).to_bytes();
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(matches!(
            DeviceSecrets::from_bytes(&longer),
            Err(latchkey_proto::Error::TooLarge { .. })
        ));
        let spent = DeviceSecrets::from(copy(&d.keys))
            .without_setup()
            .to_bytes();
        let mut trailing = spent.to_vec();
        trailing.push(0);
        assert!(matches!(
            DeviceSecrets::from_bytes(&trailing),
            Err(latchkey_proto::Error::TrailingBytes { .. })
        ));
        let mut flag = good.to_vec();
        flag[33] = 2;
        assert!(matches!(
            DeviceSecrets::from_bytes(&flag),
            Err(latchkey_proto::Error::UnknownTag { .. })
        ));
        let mut version = good.to_vec();
        version[0] = 3;
        assert!(matches!(
            DeviceSecrets::from_bytes(&version),
            Err(latchkey_proto::Error::UnsupportedVersion { found: 3, .. })
        ));
        assert!(DeviceSecrets::from_bytes(&good[..good.len() - 1]).is_err());
        assert!(DeviceSecrets::from_bytes(&[]).is_err());
    }
}
