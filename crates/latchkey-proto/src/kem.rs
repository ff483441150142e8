//! The hybrid key exchange that seals commands: X25519 + sntrup761, combined so that the shared
//! key depends on both shared secrets, both ciphertexts and both public keys (as X-Wing does).
//! An attacker must break both X25519 and sntrup761 to read a command.

use core::fmt;

use crypto::ciphers::chacha::XChaCha20Poly1305;
use crypto::ciphers::traits::Aead;
use crypto::keys::x25519;
use hkdf::Hkdf;
use pqcrypto_ntruprime::sntrup761;
use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SecretKey as _, SharedSecret as _};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::codec::{Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::hash;

pub const SNTRUP_PUBLIC_LEN: usize = 1158;
pub const SNTRUP_SECRET_LEN: usize = 1763;
pub const SNTRUP_CIPHERTEXT_LEN: usize = 1039;
/// X25519 ephemeral key + sntrup761 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 32 + SNTRUP_CIPHERTEXT_LEN;
pub const AEAD_NONCE_LEN: usize = 24;
pub const AEAD_TAG_LEN: usize = 16;

const COMBINER_LABEL: &[u8] = b"latchkey/v1/hybrid-kem/x25519-sntrup761";
const COMMAND_KEY_INFO: &[u8] = b"latchkey/v1/command-key";
const RESPONSE_KEY_INFO: &[u8] = b"latchkey/v1/response-key";
const EVENT_KEY_INFO: &[u8] = b"latchkey/v1/event-key";
const KEY_GRANT_KEY_INFO: &[u8] = b"latchkey/v1/key-grant-key";

/// A device's public KEM keys, published in its genesis op.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey {
    pub x25519: [u8; 32],
    pub sntrup: Box<[u8; SNTRUP_PUBLIC_LEN]>,
}

impl KemPublicKey {
    /// The hash a claim QR carries instead of the 1,190 bytes of keys.
    pub fn commitment(&self) -> [u8; 32] {
        hash::labeled(
            hash::KEM_COMMITMENT,
            &[&self.x25519, self.sntrup.as_slice()],
        )
    }
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KemPublicKey(commitment {})",
            crate::keys::hex_prefix(&self.commitment())
        )
    }
}

impl Codec for KemPublicKey {
    const NAME: &'static str = "KEM public key";
    const MAX_LEN: usize = 32 + SNTRUP_PUBLIC_LEN;
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.x25519);
        w.raw(self.sntrup.as_slice());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let x25519 = r.array()?;
        let sntrup = Box::new(r.array::<SNTRUP_PUBLIC_LEN>()?);
        Ok(KemPublicKey { x25519, sntrup })
    }
}

/// A device's secret KEM keys. The X25519 half wipes itself (x25519-dalek); the sntrup761 half
/// is kept in a wiping buffer and only copied out for the length of one decapsulation.
pub struct KemSecretKey {
    x25519: x25519::SecretKey,
    sntrup: Zeroizing<Vec<u8>>,
    public: KemPublicKey,
}

impl KemSecretKey {
    /// New keys. The X25519 half comes from `rng`; the sntrup761 half from the OS, since
    /// pqcrypto-ntruprime's key generation cannot take a caller's randomness.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut x = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(x.as_mut_slice());
        let x25519 = x25519::SecretKey::from_bytes(*x);
        let (pq_public, mut pq_secret) = sntrup761::keypair();
        let public = KemPublicKey {
            x25519: x25519.public_key().to_bytes(),
            sntrup: Box::new(pq_public.as_bytes().try_into().expect("sntrup761 key size")),
        };
        let sntrup = Zeroizing::new(pq_secret.as_bytes().to_vec());
        wipe_secret_key(&mut pq_secret);
        KemSecretKey {
            x25519,
            sntrup,
            public,
        }
    }

    pub fn public(&self) -> &KemPublicKey {
        &self.public
    }

    /// Secret bytes for the device's key file: x25519 (32) || sntrup761 secret (1763) ||
    /// sntrup761 public (1158).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            32 + SNTRUP_SECRET_LEN + SNTRUP_PUBLIC_LEN,
        ));
        out.extend_from_slice(&self.x25519.to_bytes());
        out.extend_from_slice(&self.sntrup);
        out.extend_from_slice(self.public.sntrup.as_slice());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const LEN: usize = 32 + SNTRUP_SECRET_LEN + SNTRUP_PUBLIC_LEN;
        if bytes.len() != LEN {
            return Err(Error::Invalid {
                what: "KEM secret key",
                why: "wrong length",
            });
        }
        let x: [u8; 32] = bytes[..32].try_into().expect("checked length");
        let x25519 = x25519::SecretKey::from_bytes(x);
        let sntrup = Zeroizing::new(bytes[32..32 + SNTRUP_SECRET_LEN].to_vec());
        let public = KemPublicKey {
            x25519: x25519.public_key().to_bytes(),
            sntrup: Box::new(
                bytes[32 + SNTRUP_SECRET_LEN..]
                    .try_into()
                    .expect("checked length"),
            ),
        };
        Ok(KemSecretKey {
            x25519,
            sntrup,
            public,
        })
    }

    pub fn decapsulate(&self, ct: &KemCiphertext) -> Result<SharedKey> {
        let eph = x25519::PublicKey::from_bytes(ct.x25519_ephemeral);
        let ss_x = Zeroizing::new(self.x25519.diffie_hellman(&eph).to_bytes());
        if ss_x.iter().all(|&b| b == 0) {
            return Err(Error::DecryptFailed);
        }
        let ciphertext = sntrup761::Ciphertext::from_bytes(ct.sntrup.as_slice())
            .map_err(|_| Error::DecryptFailed)?;
        let mut sk =
            sntrup761::SecretKey::from_bytes(&self.sntrup).map_err(|_| Error::DecryptFailed)?;
        let mut ss = sntrup761::decapsulate(&ciphertext, &sk);
        wipe_secret_key(&mut sk);
        let ss_pq = Zeroizing::new(ss.as_bytes().to_vec());
        wipe_shared_secret(&mut ss);
        Ok(combine(&ss_pq, ss_x.as_slice(), ct, &self.public))
    }
}

impl fmt::Debug for KemSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KemSecretKey(<redacted>, public {:?})", self.public)
    }
}

/// What a sender transmits so the device can derive the same key.
#[derive(Clone, PartialEq, Eq)]
pub struct KemCiphertext {
    pub x25519_ephemeral: [u8; 32],
    pub sntrup: Box<[u8; SNTRUP_CIPHERTEXT_LEN]>,
}

impl fmt::Debug for KemCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KemCiphertext({}…)",
            crate::keys::hex_prefix(&self.x25519_ephemeral)
        )
    }
}

impl Codec for KemCiphertext {
    const NAME: &'static str = "KEM ciphertext";
    const MAX_LEN: usize = KEM_CIPHERTEXT_LEN;
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.x25519_ephemeral);
        w.raw(self.sntrup.as_slice());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(KemCiphertext {
            x25519_ephemeral: r.array()?,
            sntrup: Box::new(r.array::<SNTRUP_CIPHERTEXT_LEN>()?),
        })
    }
}

/// Encapsulates to a device: fresh X25519 ephemeral from `rng`, sntrup761 randomness from the
/// OS (see [`KemSecretKey::generate`]).
pub fn encapsulate(
    public: &KemPublicKey,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(SharedKey, KemCiphertext)> {
    let mut e = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(e.as_mut_slice());
    let eph = x25519::SecretKey::from_bytes(*e);
    let ss_x = Zeroizing::new(
        eph.diffie_hellman(&x25519::PublicKey::from_bytes(public.x25519))
            .to_bytes(),
    );
    if ss_x.iter().all(|&b| b == 0) {
        return Err(Error::Invalid {
            what: "device X25519 key",
            why: "it is a low-order point",
        });
    }
    let pq_public = sntrup761::PublicKey::from_bytes(public.sntrup.as_slice())
        .expect("length fixed by the type");
    let (mut ss, ct_pq) = sntrup761::encapsulate(&pq_public);
    let ss_pq = Zeroizing::new(ss.as_bytes().to_vec());
    wipe_shared_secret(&mut ss);
    let ct = KemCiphertext {
        x25519_ephemeral: eph.public_key().to_bytes(),
        sntrup: Box::new(
            ct_pq
                .as_bytes()
                .try_into()
                .expect("sntrup761 ciphertext size"),
        ),
    };
    Ok((combine(&ss_pq, ss_x.as_slice(), &ct, public), ct))
}

// pqcrypto-ntruprime's secret types are `Copy` byte arrays that never wipe themselves, and this
// workspace forbids the unsafe code that could zero them in place. So each one this module holds
// is overwritten with a zero value (kept observable, so the store is not optimised away) as soon
// as its bytes are copied into a wiping buffer. Copies the library makes inside its own calls
// (its stack frames, the C code's temporaries) are beyond reach; docs/SECURITY.md says so.
fn wipe_secret_key(sk: &mut sntrup761::SecretKey) {
    *sk = sntrup761::SecretKey::from_bytes(&[0u8; SNTRUP_SECRET_LEN]).expect("fixed length");
    core::hint::black_box(sk);
}

fn wipe_shared_secret(ss: &mut sntrup761::SharedSecret) {
    let zeros = [0u8; 64];
    let len = ss.as_bytes().len();
    *ss = sntrup761::SharedSecret::from_bytes(&zeros[..len]).expect("same length");
    core::hint::black_box(ss);
}

fn combine(ss_pq: &[u8], ss_x: &[u8], ct: &KemCiphertext, public: &KemPublicKey) -> SharedKey {
    let mut ikm = Zeroizing::new(Vec::with_capacity(
        64 + KEM_CIPHERTEXT_LEN + 32 + SNTRUP_PUBLIC_LEN,
    ));
    ikm.extend_from_slice(ss_pq);
    ikm.extend_from_slice(ss_x);
    ikm.extend_from_slice(ct.sntrup.as_slice());
    ikm.extend_from_slice(&ct.x25519_ephemeral);
    ikm.extend_from_slice(public.sntrup.as_slice());
    ikm.extend_from_slice(&public.x25519);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(COMBINER_LABEL), &ikm);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&prk);
    SharedKey(key)
}

/// The key both sides share after one exchange; each direction gets its own AEAD key from it.
pub struct SharedKey(Zeroizing<[u8; 32]>);

impl SharedKey {
    fn expand(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::from_prk(self.0.as_slice()).expect("32-byte PRK");
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(info, out.as_mut_slice())
            .expect("32 bytes is a valid HKDF length");
        out
    }
    pub fn command_key(&self) -> Zeroizing<[u8; 32]> {
        self.expand(COMMAND_KEY_INFO)
    }
    pub fn response_key(&self) -> Zeroizing<[u8; 32]> {
        self.expand(RESPONSE_KEY_INFO)
    }
    /// The key of a sealed event (docs/PROTOCOL.md §13), sealed one way, to an owner.
    pub fn event_key(&self) -> Zeroizing<[u8; 32]> {
        self.expand(EVENT_KEY_INFO)
    }
    /// The key of a stream key message (docs/PROTOCOL.md §14), sealed one way, to a provider
    /// or an owner.
    pub fn key_grant_key(&self) -> Zeroizing<[u8; 32]> {
        self.expand(KEY_GRANT_KEY_INFO)
    }
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedKey(<redacted>)")
    }
}

/// XChaCha20-Poly1305: returns ciphertext || tag.
pub fn aead_seal(
    key: &[u8; 32],
    nonce: &[u8; AEAD_NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut out = vec![0u8; plaintext.len() + AEAD_TAG_LEN];
    let (ct, tag) = out.split_at_mut(plaintext.len());
    XChaCha20Poly1305::try_encrypt(key, nonce, aad, plaintext, ct, tag)
        .expect("buffer sizes match the AEAD");
    out
}

/// Opens ciphertext || tag, or fails without revealing why.
pub fn aead_open(
    key: &[u8; 32],
    nonce: &[u8; AEAD_NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < AEAD_TAG_LEN {
        return Err(Error::DecryptFailed);
    }
    let (ct, tag) = sealed.split_at(sealed.len() - AEAD_TAG_LEN);
    let mut out = Zeroizing::new(vec![0u8; ct.len()]);
    XChaCha20Poly1305::try_decrypt(key, nonce, aad, &mut out, ct, tag)
        .map_err(|_| Error::DecryptFailed)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn both_sides_derive_the_same_keys() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let device = KemSecretKey::generate(&mut rng);
        let (sender, ct) = encapsulate(device.public(), &mut rng).unwrap();
        let receiver = device.decapsulate(&ct).unwrap();
        assert_eq!(*sender.command_key(), *receiver.command_key());
        assert_ne!(*sender.command_key(), *sender.response_key());
    }

    #[test]
    fn tampering_with_either_ciphertext_changes_the_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let device = KemSecretKey::generate(&mut rng);
        let (sender, ct) = encapsulate(device.public(), &mut rng).unwrap();
        let mut bad = ct.clone();
        bad.sntrup[10] ^= 1;
        // sntrup761 decapsulation is implicit-reject: it yields a different secret, not an error.
        let k = device.decapsulate(&bad).unwrap();
        assert_ne!(*k.command_key(), *sender.command_key());
        let mut bad = ct.clone();
        bad.x25519_ephemeral[0] ^= 1;
        let k = device.decapsulate(&bad).unwrap();
        assert_ne!(*k.command_key(), *sender.command_key());
    }

    /// Every small-order X25519 point, in each spelling RFC 7748 reads the same (top bit set;
    /// u + p), gives the all-zero secret under a clamped scalar: refused on both sides.
    #[test]
    fn small_order_x25519_points_are_refused_on_both_sides() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let device = KemSecretKey::generate(&mut rng);
        let (_, good) = encapsulate(device.public(), &mut rng).unwrap();
        // The Montgomery u of the curve's small-order points (u = 0, 1 and the two of order 8),
        // from curve25519-dalek's eight-torsion (Edwards) points; then u = p - 1 (order 4 on
        // the twist) and spellings of u = 1 and u = 0 that RFC 7748 reduces to them.
        let mut small: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|p| p.to_montgomery().to_bytes())
            .collect();
        let mut p_plus_1 = [0xff; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        let mut zero_high_bit = [0u8; 32];
        zero_high_bit[31] = 0x80;
        let mut p_minus_1 = p_plus_1;
        p_minus_1[0] = 0xec;
        small.extend([p_plus_1, p_minus_1, zero_high_bit]);
        for u in small {
            let mut ct = good.clone();
            ct.x25519_ephemeral = u;
            assert_eq!(device.decapsulate(&ct).unwrap_err(), Error::DecryptFailed);
            let mut weak = device.public().clone();
            weak.x25519 = u;
            assert!(matches!(
                encapsulate(&weak, &mut rng),
                Err(Error::Invalid { .. })
            ));
        }
    }

    #[test]
    fn secret_key_bytes_round_trip() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let device = KemSecretKey::generate(&mut rng);
        let again = KemSecretKey::from_bytes(&device.to_bytes()).unwrap();
        assert_eq!(again.public(), device.public());
        let (sender, ct) = encapsulate(device.public(), &mut rng).unwrap();
        assert_eq!(
            *again.decapsulate(&ct).unwrap().command_key(),
            *sender.command_key()
        );
    }

    #[test]
    fn aead_rejects_any_change() {
        let key = [9u8; 32];
        let nonce = [1u8; 24];
        let sealed = aead_seal(&key, &nonce, b"aad", b"hello");
        assert_eq!(
            aead_open(&key, &nonce, b"aad", &sealed).unwrap().as_slice(),
            b"hello"
        );
        assert!(aead_open(&key, &nonce, b"aaD", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(aead_open(&key, &nonce, b"aad", &bad).is_err());
        assert!(aead_open(&key, &nonce, b"aad", &sealed[..3]).is_err());
    }

    #[test]
    fn pqcrypto_secrets_we_hold_are_overwritten() {
        let (pk, mut sk) = sntrup761::keypair();
        let (mut ss, _) = sntrup761::encapsulate(&pk);
        assert!(sk.as_bytes().iter().any(|&b| b != 0));
        assert!(ss.as_bytes().iter().any(|&b| b != 0));
        wipe_secret_key(&mut sk);
        wipe_shared_secret(&mut ss);
        assert!(sk.as_bytes().iter().all(|&b| b == 0));
        assert!(ss.as_bytes().iter().all(|&b| b == 0));
    }
}
