//! The provider's identity: an Ed25519 signing key (it signs consent requests; its public half
//! names the provider's key topic), a hybrid KEM secret (devices seal stream keys to it), and a
//! store key that encrypts the stream keys kept in the profile directory. All three live in the
//! OS keychain as one blob; the profile directory holds only the public half.

use std::fmt;

use latchkey_proto::codec::Codec;
use latchkey_proto::kem::{KemPublicKey, KemSecretKey};
use latchkey_proto::keys::{PublicKey, SigningKey};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Version byte of the keychain blob.
const SECRETS_V1: u8 = 1;

/// What the keychain holds for one profile. Debug never shows a byte of it.
pub struct Secrets {
    pub signing: SigningKey,
    pub kem: KemSecretKey,
    /// Encrypts `keys.sealed` in the profile directory (XChaCha20-Poly1305).
    pub store_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Secrets {
    /// Fresh secrets (the CLI passes `OsRng`; the KEM's sntrup761 half always comes from the OS).
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let signing = SigningKey::generate(rng);
        let kem = KemSecretKey::generate(rng);
        let mut store_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(store_key.as_mut_slice());
        Secrets {
            signing,
            kem,
            store_key,
        }
    }

    /// version (1) || signing key (32) || store key (32) || KEM secret.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let kem = self.kem.to_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(1 + 64 + kem.len()));
        out.push(SECRETS_V1);
        out.extend_from_slice(self.signing.to_bytes().as_slice());
        out.extend_from_slice(self.store_key.as_slice());
        out.extend_from_slice(&kem);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Keychain(format!("the stored provider secrets are {why}"));
        if bytes.first() != Some(&SECRETS_V1) {
            return Err(bad("of an unknown version"));
        }
        if bytes.len() < 65 {
            return Err(bad("truncated"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[1..33]);
        let signing = SigningKey::from_bytes(&seed);
        let mut store_key = Zeroizing::new([0u8; 32]);
        store_key.copy_from_slice(&bytes[33..65]);
        let kem = KemSecretKey::from_bytes(&bytes[65..]).map_err(|_| bad("damaged"))?;
        Ok(Secrets {
            signing,
            kem,
            store_key,
        })
    }

    /// The public half, as the profile directory keeps it.
    pub fn public(&self, account: &str, name: &str, url: &str, created_ms: u64) -> PublicIdentity {
        PublicIdentity {
            version: 1,
            account: account.to_owned(),
            name: name.to_owned(),
            url: url.to_owned(),
            signing_key: self.signing.public_key().to_string(),
            kem_key: hex::encode(self.kem.public().to_bytes()),
            created_ms,
        }
    }
}

/// `identity.json`: who this provider is, in public. The keychain account name ties it to its
/// secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIdentity {
    pub version: u32,
    /// The keychain user under service `latchkey-provider`.
    pub account: String,
    pub name: String,
    pub url: String,
    /// `lkpk1…`.
    pub signing_key: String,
    /// Hex of the KEM public key (X25519 || sntrup761).
    pub kem_key: String,
    pub created_ms: u64,
}

impl PublicIdentity {
    pub fn signing(&self) -> Result<PublicKey> {
        PublicKey::parse(&self.signing_key).map_err(|e| Error::BadInput {
            what: "signing key in identity.json",
            why: e.to_string(),
        })
    }

    pub fn kem(&self) -> Result<KemPublicKey> {
        let bytes = hex::decode(&self.kem_key).map_err(|e| Error::BadInput {
            what: "KEM key in identity.json",
            why: e.to_string(),
        })?;
        Ok(KemPublicKey::from_bytes(&bytes)?)
    }

    /// Lowercase hex of the signing key: the last segment of this provider's key topic.
    pub fn recipient_hex(&self) -> Result<String> {
        Ok(hex::encode(self.signing()?.to_bytes()))
    }
}

/// Checks a name and URL as the consent request will carry them (1–64 and 0–200 bytes, no
/// control characters), so `init` refuses what a request could not hold.
pub fn check_name_and_url(name: &str, url: &str) -> Result<()> {
    let bad = |what, why: &str| Error::BadInput {
        what,
        why: why.to_owned(),
    };
    if name.trim().is_empty() || name.len() > 64 {
        return Err(bad("name", "use 1 to 64 bytes"));
    }
    if url.len() > 200 {
        return Err(bad("URL", "use at most 200 bytes"));
    }
    if url.contains(char::is_whitespace) {
        return Err(bad("URL", "spaces are not allowed"));
    }
    if name.chars().chain(url.chars()).any(char::is_control) {
        return Err(bad("name or URL", "control characters are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn secrets_round_trip_and_debug_hides_them() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let s = Secrets::generate(&mut rng);
        let bytes = s.to_bytes();
        let back = Secrets::from_bytes(&bytes).unwrap();
        assert_eq!(back.signing.public_key(), s.signing.public_key());
        assert_eq!(back.kem.public(), s.kem.public());
        assert_eq!(*back.store_key, *s.store_key);
        let shown = format!("{s:?}");
        assert_eq!(shown, "Secrets(<redacted>)");
    }

    #[test]
    fn fail_damaged_secrets_are_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let bytes = Secrets::generate(&mut rng).to_bytes();
        assert!(Secrets::from_bytes(&bytes[..100]).is_err());
        let mut other = bytes.to_vec();
        other[0] = 9;
        assert!(Secrets::from_bytes(&other).is_err());
        assert!(Secrets::from_bytes(&[]).is_err());
    }

    #[test]
    fn public_identity_parses_back() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let s = Secrets::generate(&mut rng);
        let p = s.public("provider-x", "Acme", "https://acme.example", 1);
        assert_eq!(p.signing().unwrap(), s.signing.public_key());
        assert_eq!(&p.kem().unwrap(), s.kem.public());
        assert_eq!(
            p.recipient_hex().unwrap(),
            hex::encode(s.signing.public_key().to_bytes())
        );
    }

    #[test]
    fn fail_names_a_request_could_not_carry() {
        assert!(check_name_and_url("Acme", "").is_ok());
        assert!(check_name_and_url("", "").is_err());
        assert!(check_name_and_url(&"x".repeat(65), "").is_err());
        assert!(check_name_and_url("Acme", &"u".repeat(201)).is_err());
        assert!(check_name_and_url("Ac\nme", "").is_err());
    }
}
