//! Keys: the owner's recovery phrase and the keys derived from it, public keys and signatures
//! as they travel, and the self-certifying device id.

use core::fmt;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use crypto::keys::bip39::{self, wordlist};
use crypto::keys::slip10;
use crypto::signatures::ed25519;
use curve25519_dalek::edwards::CompressedEdwardsY;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::codec::{Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::hash;

/// SLIP-10 purpose segment for every Latchkey key ("LK" = 0x4c4b), hardened.
pub const PURPOSE: u32 = 0x4c4b;

/// What a derived key is for. Each purpose has its own subtree, so a key handed out for one
/// purpose (a guest key in an invitation) says nothing about keys of another (the identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The owner's identity: signs claims, ownership changes, grants and commands.
    /// Path `m/19531'/0'/account'`.
    OwnerIdentity,
    /// One key per accepted invitation, so a guest's grants cannot be linked to each other.
    /// Path `m/19531'/1'/index'`.
    Guest,
    /// The key a service provider's consent is bound to. Path `m/19531'/2'/index'`.
    Consent,
}

impl KeyPurpose {
    fn segment(self) -> u32 {
        match self {
            KeyPurpose::OwnerIdentity => 0,
            KeyPurpose::Guest => 1,
            KeyPurpose::Consent => 2,
        }
    }
}

/// The 64-byte BIP39 seed. Lives only as long as a derivation takes; wiped on drop.
pub struct Seed(Zeroizing<[u8; 64]>);

impl Seed {
    /// A seed from raw bytes (tests and the official SLIP-10 vectors use seeds of other sizes
    /// through [`derive_ed25519`]).
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Seed(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// The key at `m/19531'/purpose'/index'`.
    pub fn derive(&self, purpose: KeyPurpose, index: u32) -> Result<SigningKey> {
        derive_ed25519(self.0.as_slice(), &[PURPOSE, purpose.segment(), index])
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

/// SLIP-10 Ed25519 derivation along a path of hardened indices (values below 2^31; the hardened
/// bit is set here, since Ed25519 has no unhardened derivation).
pub fn derive_ed25519(seed: &[u8], path: &[u32]) -> Result<SigningKey> {
    if path.iter().any(|&i| i >= slip10::HARDEN_MASK) {
        return Err(Error::Invalid {
            what: "derivation path",
            why: "indices must be below 2^31 (they are hardened here)",
        });
    }
    let seed = slip10::Seed::from_bytes(seed);
    let segments = path.iter().map(|&i| {
        slip10::Hardened::try_from(i | slip10::HARDEN_MASK).expect("hardened bit is set")
    });
    let ext = seed.derive::<ed25519::SecretKey, _>(segments);
    Ok(SigningKey(ext.secret_key()))
}

/// The 24-word BIP39 (English) recovery phrase: the only secret an owner backs up.
pub struct RecoveryPhrase(bip39::Mnemonic);

impl RecoveryPhrase {
    pub const WORDS: usize = 24;

    /// A new phrase from 256 bits of the given randomness.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut entropy = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(entropy.as_mut_slice());
        Self::from_entropy(&entropy)
    }

    pub fn from_entropy(entropy: &[u8; 32]) -> Self {
        let m = wordlist::encode(entropy, &wordlist::ENGLISH)
            .expect("32 bytes is a valid entropy size");
        RecoveryPhrase(m)
    }

    /// Parses a phrase typed or pasted by a person: case and spacing are forgiven; a word not in
    /// the list, a wrong count, or a failed checksum each get their own error, the checksum one
    /// with the positions where a near-miss word would make the phrase valid.
    pub fn parse(text: &str) -> Result<Self> {
        let words: Vec<Zeroizing<String>> = text
            .split_whitespace()
            .map(|w| Zeroizing::new(w.to_lowercase()))
            .collect();
        if words.len() != Self::WORDS {
            return Err(Error::MnemonicWordCount(words.len()));
        }
        for (i, w) in words.iter().enumerate() {
            if wordlist::ENGLISH.lookup(w).is_none() {
                return Err(Error::MnemonicUnknownWord { position: i + 1 });
            }
        }
        let candidate = join_words(&words);
        if wordlist::verify(&candidate, &wordlist::ENGLISH).is_err() {
            return Err(Error::MnemonicChecksum {
                suspects: checksum_suspects(&words),
            });
        }
        Ok(RecoveryPhrase(candidate))
    }

    /// The words, for the one time they are shown to be written down.
    pub fn words(&self) -> Vec<&str> {
        self.0.as_ref().split(' ').collect()
    }

    /// The phrase as one space-separated string (for the OS keychain).
    pub fn phrase(&self) -> &str {
        self.0.as_ref()
    }

    /// The BIP39 seed with the empty passphrase.
    pub fn to_seed(&self) -> Seed {
        self.to_seed_with_passphrase("")
    }

    pub fn to_seed_with_passphrase(&self, passphrase: &str) -> Seed {
        let pass = bip39::Passphrase::from(passphrase.to_owned());
        let seed = bip39::mnemonic_to_seed(&self.0, &pass);
        Seed::from_bytes(*seed.bytes())
    }
}

impl fmt::Debug for RecoveryPhrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryPhrase(<redacted>)")
    }
}

fn join_words(words: &[Zeroizing<String>]) -> bip39::Mnemonic {
    let mut joined = String::with_capacity(words.len() * 9);
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            joined.push(' ');
        }
        joined.push_str(w);
    }
    bip39::Mnemonic::from(joined)
}

/// Positions (1-based) where swapping in a word one or two letters away, or swapping with the
/// next word, makes the checksum pass: the likeliest places for a transcription error.
fn checksum_suspects(words: &[Zeroizing<String>]) -> Vec<usize> {
    let list = wordlist::ENGLISH.words();
    let mut suspects = Vec::new();
    let mut trial: Vec<Zeroizing<String>> = words.to_vec();
    for i in 0..words.len() {
        let near = list
            .iter()
            .filter(|cand| **cand != words[i].as_str() && edit_distance(cand, &words[i]) <= 1);
        let mut fixes = false;
        for cand in near {
            trial[i] = Zeroizing::new((*cand).to_owned());
            if wordlist::verify(&join_words(&trial), &wordlist::ENGLISH).is_ok() {
                fixes = true;
                break;
            }
        }
        trial[i] = words[i].clone();
        if !fixes && i + 1 < words.len() {
            trial.swap(i, i + 1);
            fixes = wordlist::verify(&join_words(&trial), &wordlist::ENGLISH).is_ok();
            trial.swap(i, i + 1);
            if fixes {
                suspects.push(i + 2);
            }
        }
        if fixes {
            suspects.push(i + 1);
        }
    }
    suspects.sort_unstable();
    suspects.dedup();
    suspects
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// An Ed25519 signing key. Wiped on drop (by iota-crypto); never printed.
pub struct SigningKey(ed25519::SecretKey);

impl SigningKey {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut_slice());
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        SigningKey(ed25519::SecretKey::from_bytes(bytes))
    }

    /// The 32 secret bytes, in a buffer that wipes itself.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.public_key())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<redacted>, public {})", self.public_key())
    }
}

/// A validated Ed25519 public key. Shown to people as `lkpk1…` (Bech32m).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(ed25519::PublicKey);

impl PublicKey {
    pub const LEN: usize = 32;
    const HRP: &'static str = "lkpk";

    /// Decodes strictly (docs/PROTOCOL.md §1): bytes that are no point are `BadPublicKey`; a
    /// point of small order, or any encoding other than the point's one canonical form, is
    /// `WeakKey`. Verification itself follows ZIP-215, which would take both.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self> {
        refuse_weak(&bytes)?;
        ed25519::PublicKey::try_from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| Error::BadPublicKey)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    pub fn verify(&self, signature: &Signature, message: &[u8]) -> bool {
        self.0
            .verify(&ed25519::Signature::from_bytes(signature.0), message)
    }

    /// Verifies or says whose signature failed over what.
    pub fn verify_or(
        &self,
        signature: &Signature,
        message: &[u8],
        what: &'static str,
    ) -> Result<()> {
        if self.verify(signature, message) {
            Ok(())
        } else {
            Err(Error::BadSignature {
                what,
                signer: self.short(),
            })
        }
    }

    /// The first characters of the human form, for logs and lists.
    pub fn short(&self) -> String {
        let full = self.to_string();
        full.chars().take(14).collect()
    }

    pub fn parse(text: &str) -> Result<Self> {
        let bytes = bech32_decode(text, Self::HRP, "public key (lkpk1…)")?;
        Self::from_bytes(bytes)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bech32_encode(Self::HRP, self.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Codec for PublicKey {
    const NAME: &'static str = "public key";
    const MAX_LEN: usize = 32;
    fn encode(&self, w: &mut Writer) {
        w.raw(self.as_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let bytes = r.array()?;
        if let Some(key) = r.known_key(&bytes) {
            return Ok(key);
        }
        let key = Self::from_bytes(bytes)?;
        r.remember_key(key);
        Ok(key)
    }
}

/// Refuses what ZIP-215 verification would accept as a key but no key holder can have made:
/// under cofactored verification a small-order key verifies a forged signature over any
/// message, and a second spelling of a point would make one owner count as two. A key with a
/// torsion component that is not of small order is left alone: forging for it still takes its
/// prime-order part's discrete log, and the cofactored equation ignores the torsion.
fn refuse_weak(bytes: &[u8; 32]) -> Result<()> {
    let point = CompressedEdwardsY(*bytes)
        .decompress()
        .ok_or(Error::BadPublicKey)?;
    if point.is_small_order() {
        return Err(Error::WeakKey {
            why: "a point of small order, under which anyone can forge signatures",
        });
    }
    if !y_is_canonical(bytes) {
        return Err(Error::WeakKey {
            why: "a non-canonical encoding of a point",
        });
    }
    Ok(())
}

/// Whether the encoding is the one `compress()` gives for its decompressed point, without the
/// field inversion a re-compression costs. Decompression takes x's sign from bit 255, so the
/// round trip changes only an encoding whose 255-bit y is not reduced (y ≥ p = 2^255 − 19), or
/// one with the sign bit set on x = 0. x = 0 only for y = ±1, the identity and the point of
/// order 2, which [`refuse_weak`] has already refused as small-order. So for the points that
/// get here the test is y < p; the y ≥ p encodings are bytes 1..=30 all 0xff, bit 0..=6 of
/// byte 31 all set and byte 0 ≥ 0xed (the test `strict_decode_matches_recompression` checks
/// every one of them, and the proptest random bytes, against dalek's re-compression).
fn y_is_canonical(bytes: &[u8; 32]) -> bool {
    !(bytes[0] >= 0xed && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[31] & 0x7f == 0x7f)
}

/// An Ed25519 signature as it travels: 64 bytes, checked only by [`PublicKey::verify`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex_prefix(&self.0))
    }
}

impl Codec for Signature {
    const NAME: &'static str = "signature";
    const MAX_LEN: usize = 64;
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Signature(r.array()?))
    }
}

/// A device's id: the hash of its identity public key, so anyone holding the key can check the
/// id and nobody can claim an id without the key. Shown as `lkdev1…`; [`DeviceId::short`] gives
/// a `XXXX-XXXX` form for screens.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub [u8; 32]);

impl DeviceId {
    const HRP: &'static str = "lkdev";

    pub fn from_identity(identity: &PublicKey) -> Self {
        DeviceId(hash::labeled(hash::DEVICE_ID, &[identity.as_bytes()]))
    }

    pub fn parse(text: &str) -> Result<Self> {
        Ok(DeviceId(bech32_decode(
            text,
            Self::HRP,
            "device id (lkdev1…)",
        )?))
    }

    /// Eight base32 characters (40 bits) in two groups: enough for a person to tell their own
    /// devices apart and to compare with the device's display; never used for security.
    pub fn short(&self) -> String {
        let b32 = data_encoding::BASE32_NOPAD.encode(&self.0[..5]);
        format!("{}-{}", &b32[..4], &b32[4..8])
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bech32_encode(Self::HRP, &self.0))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl Codec for DeviceId {
    const NAME: &'static str = "device id";
    const MAX_LEN: usize = 32;
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DeviceId(r.array()?))
    }
}

fn bech32_encode(hrp: &str, data: &[u8]) -> String {
    let hrp = Hrp::parse(hrp).expect("constant HRP is valid");
    bech32::encode::<Bech32m>(hrp, data).expect("32 bytes fit in bech32")
}

fn bech32_decode(text: &str, expected_hrp: &'static str, what: &'static str) -> Result<[u8; 32]> {
    // Only the Bech32m checksum is accepted, so each key has one spelling (up to case: text
    // may be all upper case, as in a QR code).
    let checked = CheckedHrpstring::new::<Bech32m>(text.trim()).map_err(|_| Error::BadText {
        what,
        encoding: "Bech32m",
    })?;
    let hrp = checked.hrp();
    if !hrp.as_str().eq_ignore_ascii_case(expected_hrp) {
        return Err(Error::WrongKind {
            expected: what,
            found: crate::error::looks_like(text),
        });
    }
    let mut data = Zeroizing::new(checked.byte_iter().collect::<Vec<u8>>());
    let bytes: [u8; 32] = data.as_slice().try_into().map_err(|_| Error::Invalid {
        what,
        why: "must hold exactly 32 bytes",
    })?;
    data.zeroize();
    Ok(bytes)
}

pub(crate) fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(7)
    }

    #[test]
    fn phrase_round_trips_and_derives_stable_keys() {
        let phrase = RecoveryPhrase::generate(&mut rng());
        assert_eq!(phrase.words().len(), 24);
        let again = RecoveryPhrase::parse(&phrase.words().join("  ").to_uppercase()).unwrap();
        let a = phrase
            .to_seed()
            .derive(KeyPurpose::OwnerIdentity, 0)
            .unwrap();
        let b = again
            .to_seed()
            .derive(KeyPurpose::OwnerIdentity, 0)
            .unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let guest = phrase.to_seed().derive(KeyPurpose::Guest, 0).unwrap();
        assert_ne!(a.public_key(), guest.public_key(), "purposes are separated");
    }

    #[test]
    fn a_phrase_pasted_into_the_wrong_field_is_not_repeated() {
        let phrase = RecoveryPhrase::generate(&mut rng());
        let words = phrase.words().join(" ");
        let errors = [
            crate::claim::ClaimPayload::parse(&words).unwrap_err(),
            crate::invite::Invitation::parse_link(&words).unwrap_err(),
        ];
        for err in errors {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(&words[..5]), "{shown}");
            assert!(
                shown.contains("recovery phrase belongs only in restore"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_mistyped_word_is_never_repeated_in_the_error() {
        let phrase = RecoveryPhrase::generate(&mut rng());
        let mut words: Vec<String> = phrase.words().iter().map(|w| w.to_string()).collect();
        // One letter off a real word: most of the secret word would leak with it.
        let typo = format!("{}q", &words[7][..words[7].len() - 1]);
        words[7] = typo.clone();
        let err = RecoveryPhrase::parse(&words.join(" ")).unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(&typo), "{shown}");
            assert!(shown.contains('8'), "the position is named: {shown}");
        }
    }

    #[test]
    fn phrase_errors_name_the_problem() {
        let phrase = RecoveryPhrase::generate(&mut rng());
        let mut words: Vec<String> = phrase.words().iter().map(|w| w.to_string()).collect();
        assert_eq!(
            RecoveryPhrase::parse(&words[..23].join(" ")).unwrap_err(),
            Error::MnemonicWordCount(23)
        );
        let original = words[4].clone();
        words[4] = "notaword".into();
        assert_eq!(
            RecoveryPhrase::parse(&words.join(" ")).unwrap_err(),
            Error::MnemonicUnknownWord { position: 5 }
        );
        // A swap of two different words almost always breaks the checksum.
        words[4] = original;
        let (i, j) = (0..23)
            .map(|i| (i, i + 1))
            .find(|&(i, j)| words[i] != words[j])
            .unwrap();
        words.swap(i, j);
        match RecoveryPhrase::parse(&words.join(" ")) {
            Err(Error::MnemonicChecksum { suspects }) => {
                assert!(
                    suspects.contains(&(i + 1)) || suspects.contains(&(j + 1)),
                    "{suspects:?}"
                )
            }
            Ok(_) => {} // 1 in 256: the swapped phrase happens to be valid too.
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn debug_never_prints_secrets() {
        let phrase = RecoveryPhrase::generate(&mut rng());
        let key = phrase
            .to_seed()
            .derive(KeyPurpose::OwnerIdentity, 0)
            .unwrap();
        let printed = format!("{phrase:?} {key:?} {:?}", phrase.to_seed());
        for word in phrase.words() {
            assert!(!printed.contains(&format!(" {word} ")));
        }
        assert!(!printed.contains(&crate::keys::hex_prefix(key.to_bytes().as_slice())));
    }

    #[test]
    fn a_small_order_key_is_refused_with_what_to_do() {
        // The identity point: under cofactored verification anyone could sign for it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let err = PublicKey::from_bytes(identity).unwrap_err();
        assert!(matches!(err, Error::WeakKey { .. }), "{err:?}");
        assert!(err.to_string().contains("send their key again"), "{err}");
        let text = bech32_encode(PublicKey::HRP, &identity);
        assert!(matches!(
            PublicKey::parse(&text),
            Err(Error::WeakKey { .. })
        ));
    }

    /// The strict decode before the re-compression was replaced by [`y_is_canonical`].
    fn strict_by_recompression(bytes: [u8; 32]) -> Result<PublicKey> {
        let encoded = CompressedEdwardsY(bytes);
        let point = encoded.decompress().ok_or(Error::BadPublicKey)?;
        if point.is_small_order() {
            return Err(Error::WeakKey {
                why: "a point of small order, under which anyone can forge signatures",
            });
        }
        if point.compress() != encoded {
            return Err(Error::WeakKey {
                why: "a non-canonical encoding of a point",
            });
        }
        ed25519::PublicKey::try_from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| Error::BadPublicKey)
    }

    #[test]
    fn strict_decode_matches_recompression() {
        // Every encoding whose y is not reduced (y = p + k, 0 <= k < 19), both sign bits, and
        // their canonical twins and the points of small order: the only places the byte test
        // could differ from dalek's round trip.
        let mut cases = Vec::new();
        for k in 0u8..19 {
            for sign in [0u8, 0x80] {
                let mut high = [0xffu8; 32];
                high[0] = 0xed + k;
                high[31] = 0x7f | sign;
                let mut low = [0u8; 32];
                low[0] = k;
                low[31] = sign;
                cases.extend([high, low]);
            }
        }
        for t in curve25519_dalek::constants::EIGHT_TORSION {
            let mut b = t.compress().to_bytes();
            cases.push(b);
            b[31] ^= 0x80;
            cases.push(b);
        }
        let mut r = rng();
        for _ in 0..64 {
            let key = SigningKey::generate(&mut r).public_key().to_bytes();
            let mut flipped = key;
            flipped[31] ^= 0x80;
            cases.extend([key, flipped]);
        }
        let mut canonical_refused = 0;
        for bytes in cases {
            let ours = PublicKey::from_bytes(bytes);
            assert_eq!(ours, strict_by_recompression(bytes), "{bytes:02x?}");
            canonical_refused += usize::from(matches!(
                ours,
                Err(Error::WeakKey { why }) if why.contains("non-canonical")
            ));
        }
        // The non-canonical branch is actually exercised (y = p + k for some decodable k).
        assert!(canonical_refused > 0);
    }

    #[test]
    fn a_repeated_key_in_one_decode_is_the_same_key() {
        let mut r = rng();
        let keys: Vec<PublicKey> = (0..6)
            .map(|_| SigningKey::generate(&mut r).public_key())
            .collect();
        // More distinct keys than the memo holds, repeated out of order.
        let order = [0, 1, 2, 3, 4, 5, 0, 5, 1, 1, 4, 2, 3, 0];
        let mut w = Writer::new();
        for &i in &order {
            w.nested(&keys[i]);
        }
        let bytes = w.into_inner();
        let mut rd = Reader::new("keys", &bytes);
        for &i in &order {
            let read: PublicKey = rd.nested().unwrap();
            assert_eq!(read, keys[i]);
            assert_eq!(read.to_bytes(), keys[i].to_bytes());
        }
        rd.finish().unwrap();
        // A weak key after a good one is still refused, repeated or not.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let twice = [keys[0].to_bytes(), identity, keys[0].to_bytes(), identity].concat();
        let mut rd = Reader::new("keys", &twice);
        assert_eq!(rd.nested::<PublicKey>().unwrap(), keys[0]);
        assert!(matches!(
            rd.nested::<PublicKey>(),
            Err(Error::WeakKey { .. })
        ));
    }

    #[test]
    fn human_forms_round_trip_and_refuse_the_wrong_kind() {
        let key = SigningKey::generate(&mut rng()).public_key();
        let text = key.to_string();
        assert!(text.starts_with("lkpk1"));
        assert_eq!(PublicKey::parse(&text).unwrap(), key);
        let id = DeviceId::from_identity(&key);
        assert!(id.to_string().starts_with("lkdev1"));
        assert_eq!(DeviceId::parse(&id.to_string()).unwrap(), id);
        assert!(matches!(
            DeviceId::parse(&text),
            Err(Error::WrongKind { .. })
        ));
        assert_eq!(id.short().len(), 9);
    }
}
