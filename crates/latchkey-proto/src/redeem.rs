//! Redeeming a bind-on-first-use grant (extension 0x83): the guest's phone makes its own key
//! `K` and asks the device, under the invitation's one-time link key, to bind the grant to `K`.
//! The request is the arguments of a [`crate::grant::REDEEM_ACTION`] command, so it travels,
//! is sealed, replay-checked and audited like any command (docs/PROTOCOL.md §10).

use crate::error::{Error, Result};
use crate::grant::GrantId;
use crate::keys::{DeviceId, PublicKey, Signature, SigningKey};

/// `K pub (32) || signature by K (64)`.
pub const REDEEM_ARGS_LEN: usize = 96;
const REDEEM_LABEL: &[u8] = b"latchkey/v1/redeem\0";

/// What a redemption carries: the key to bind to, and that key's signature over the device and
/// the leaf grant. K signs so nobody binds a grant to a key they do not hold (a typo, or
/// someone else's key, would lock the guest out); the device and grant are signed so the
/// proof cannot be replayed onto another door or another invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemRequest {
    pub key: PublicKey,
    pub signature: Signature,
}

fn message(device: &DeviceId, grant: &GrantId) -> Vec<u8> {
    [REDEEM_LABEL, &device.0, &grant.0].concat()
}

impl RedeemRequest {
    /// The guest's phone signs with its own key `K` for one door and the leaf grant.
    pub fn sign(key: &SigningKey, device: &DeviceId, grant: &GrantId) -> Self {
        RedeemRequest {
            key: key.public_key(),
            signature: key.sign(&message(device, grant)),
        }
    }

    /// The command arguments.
    pub fn to_args(&self) -> Vec<u8> {
        [self.key.as_bytes(), &self.signature.0].concat()
    }

    /// Decodes command arguments: exactly 96 bytes (`Invalid` otherwise), then the key's rules
    /// (`BadPublicKey`, `WeakKey`).
    pub fn from_args(args: &[u8]) -> Result<Self> {
        if args.len() != REDEEM_ARGS_LEN {
            return Err(Error::Invalid {
                what: "redeem request",
                why: "its arguments must be exactly 96 bytes: key (32) and signature (64)",
            });
        }
        let key = PublicKey::from_bytes(args[..32].try_into().expect("96 bytes"))?;
        let signature = Signature(args[32..].try_into().expect("96 bytes"));
        Ok(RedeemRequest { key, signature })
    }

    /// Checks K's signature over this device and leaf grant (`BadSignature`).
    pub fn verify(&self, device: &DeviceId, grant: &GrantId) -> Result<()> {
        self.key
            .verify_or(&self.signature, &message(device, grant), "redeem request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn a_request_verifies_only_for_its_device_and_grant() {
        let k = SigningKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1));
        let device = DeviceId([1; 32]);
        let grant = GrantId([2; 32]);
        let req = RedeemRequest::sign(&k, &device, &grant);
        let back = RedeemRequest::from_args(&req.to_args()).unwrap();
        assert_eq!(back, req);
        back.verify(&device, &grant).unwrap();
        assert!(matches!(
            back.verify(&DeviceId([3; 32]), &grant),
            Err(Error::BadSignature { .. })
        ));
        assert!(matches!(
            back.verify(&device, &GrantId([3; 32])),
            Err(Error::BadSignature { .. })
        ));
        assert!(matches!(
            RedeemRequest::from_args(&req.to_args()[..95]),
            Err(Error::Invalid { .. })
        ));
        let mut weak = req.to_args();
        weak[..32].copy_from_slice(&[0; 32]);
        assert!(RedeemRequest::from_args(&weak).is_err());
    }
}
