//! The stream keys a provider was given, kept durably in `keys.sealed` in the profile
//! directory, encrypted (XChaCha20-Poly1305) under the store key that only the OS keychain
//! holds. A copy of the profile directory alone reveals no reading.
//!
//! File: `LKPKS1` || nonce (24) || AEAD(store key, nonce, aad = `LKPKS1` || account, plaintext),
//! plaintext = u32 stream count || per stream: device id (32) || name length (u8) || name ||
//! u16 key count || per key: key id (u32) || from seq (u64) || key (32), all big-endian.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use latchkey_proto::kem::{aead_open, aead_seal, AEAD_NONCE_LEN};
use latchkey_proto::stream::validate_stream_name;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::profile::write_atomic;

const MAGIC: &[u8; 6] = b"LKPKS1";
const FILE: &str = "keys.sealed";
/// Far above any real holding (64 keys per grant, a handful of streams), far below memory.
pub const MAX_FILE: usize = 4 << 20;
/// As many keys as one device stream may hand a provider (the key grant's own cap).
pub const MAX_KEYS_PER_STREAM: usize = 4096;

/// One stream key as held.
#[derive(Clone)]
pub struct HeldKey {
    pub key_id: u32,
    pub from_seq: u64,
    pub key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HeldKey(id {}, from seq {}, <redacted>)",
            self.key_id, self.from_seq
        )
    }
}

/// (device id, stream name).
pub type StreamRef = ([u8; 32], String);

/// Every key held, per device and stream, ascending by key id.
#[derive(Debug, Default)]
pub struct KeyStore {
    path: PathBuf,
    aad: Vec<u8>,
    streams: BTreeMap<StreamRef, Vec<HeldKey>>,
}

impl KeyStore {
    /// Loads `keys.sealed` from `dir` (empty if there is none).
    pub fn open(dir: &Path, account: &str, store_key: &[u8; 32]) -> Result<KeyStore> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(KeyStore::empty(path, account));
        }
        let len = std::fs::metadata(&path)
            .map_err(|e| Error::profile(&path, e))?
            .len();
        // Checked before reading, so a huge file is refused without being loaded.
        if len > MAX_FILE as u64 {
            return Err(Error::KeysDamaged {
                path: path.display().to_string(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::profile(&path, e))?;
        KeyStore::from_sealed(path, &bytes, account, store_key)
    }

    /// Decodes the bytes of a `keys.sealed` file (what [`KeyStore::open`] read from `path`):
    /// at most [`MAX_FILE`] bytes, sealed under `store_key` for `account`, holding a canonical
    /// encoding (each stream once, a valid stream name, key ids strictly ascending, at most
    /// [`MAX_KEYS_PER_STREAM`] of them). Anything else is [`Error::KeysDamaged`].
    pub fn from_sealed(
        path: PathBuf,
        bytes: &[u8],
        account: &str,
        store_key: &[u8; 32],
    ) -> Result<KeyStore> {
        let mut ks = KeyStore::empty(path, account);
        let damaged = || Error::KeysDamaged {
            path: ks.path.display().to_string(),
        };
        if bytes.len() > MAX_FILE
            || bytes.len() < MAGIC.len() + AEAD_NONCE_LEN
            || &bytes[..MAGIC.len()] != MAGIC
        {
            return Err(damaged());
        }
        let nonce: [u8; AEAD_NONCE_LEN] = bytes[MAGIC.len()..MAGIC.len() + AEAD_NONCE_LEN]
            .try_into()
            .expect("sliced to the nonce length");
        let plain = aead_open(
            store_key,
            &nonce,
            &ks.aad,
            &bytes[MAGIC.len() + AEAD_NONCE_LEN..],
        )
        .map_err(|_| damaged())?;
        let streams = decode(&plain).ok_or_else(damaged)?;
        ks.streams = streams;
        Ok(ks)
    }

    fn empty(path: PathBuf, account: &str) -> KeyStore {
        let mut aad = MAGIC.to_vec();
        aad.extend_from_slice(account.as_bytes());
        KeyStore {
            path,
            aad,
            streams: BTreeMap::new(),
        }
    }

    /// Every (device, stream) held, in order, with its keys.
    pub fn streams(&self) -> impl Iterator<Item = (&StreamRef, &[HeldKey])> {
        self.streams.iter().map(|(k, v)| (k, v.as_slice()))
    }

    /// The keys for one stream, ascending by id.
    pub fn keys(&self, device: &[u8; 32], stream: &str) -> &[HeldKey] {
        self.streams
            .get(&(*device, stream.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn key(&self, device: &[u8; 32], stream: &str, key_id: u32) -> Option<&HeldKey> {
        self.keys(device, stream)
            .iter()
            .find(|k| k.key_id == key_id)
    }

    /// Adds keys not held yet; returns the ids that were new. A key id already held keeps its
    /// first key: a device never reuses an id, so a different key under a held id is refused.
    pub fn add(&mut self, device: &[u8; 32], stream: &str, keys: Vec<HeldKey>) -> Vec<u32> {
        // Key grants carry only valid names; the file's encoding holds no other.
        if validate_stream_name(stream).is_err() {
            tracing::warn!("keys for an invalid stream name not kept");
            return Vec::new();
        }
        let held = self
            .streams
            .entry((*device, stream.to_owned()))
            .or_default();
        let mut new = Vec::new();
        for k in keys {
            if held.len() >= MAX_KEYS_PER_STREAM {
                tracing::warn!(stream, "key store full for this stream; key not kept");
                break;
            }
            match held.iter().find(|h| h.key_id == k.key_id) {
                Some(h) if *h.key != *k.key => {
                    tracing::warn!(
                        key_id = k.key_id,
                        "a different key under a held key id; kept the first"
                    );
                }
                Some(_) => {}
                None => {
                    new.push(k.key_id);
                    held.push(k);
                }
            }
        }
        held.sort_by_key(|k| k.key_id);
        new
    }

    /// Writes the store (atomically, fsynced) under `store_key`.
    pub fn save(&self, store_key: &[u8; 32], rng: &mut (impl RngCore + CryptoRng)) -> Result<()> {
        let mut nonce = [0u8; AEAD_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        write_atomic(&self.path, &self.seal(store_key, &nonce))
    }

    /// The bytes [`KeyStore::save`] writes, with a given nonce (a fresh random one there).
    pub fn seal(&self, store_key: &[u8; 32], nonce: &[u8; AEAD_NONCE_LEN]) -> Vec<u8> {
        let plain = encode(&self.streams);
        let sealed = aead_seal(store_key, nonce, &self.aad, &plain);
        let mut out = Vec::with_capacity(MAGIC.len() + AEAD_NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&sealed);
        out
    }
}

/// The sealed file around any plaintext: what a fuzzer needs to reach the plaintext decoder
/// past the AEAD (the file format is `MAGIC || nonce || AEAD(store key, nonce, MAGIC || account,
/// plaintext)`).
pub fn seal_plaintext(
    account: &str,
    store_key: &[u8; 32],
    nonce: &[u8; AEAD_NONCE_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut aad = MAGIC.to_vec();
    aad.extend_from_slice(account.as_bytes());
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(nonce);
    out.extend_from_slice(&aead_seal(store_key, nonce, &aad, plaintext));
    out
}

fn encode(streams: &BTreeMap<StreamRef, Vec<HeldKey>>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    out.extend_from_slice(&(streams.len() as u32).to_be_bytes());
    for ((device, name), keys) in streams {
        out.extend_from_slice(device);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(keys.len() as u16).to_be_bytes());
        for k in keys {
            out.extend_from_slice(&k.key_id.to_be_bytes());
            out.extend_from_slice(&k.from_seq.to_be_bytes());
            out.extend_from_slice(k.key.as_slice());
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Option<BTreeMap<StreamRef, Vec<HeldKey>>> {
    let mut r = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (head, tail) = r.split_at(n);
        r = tail;
        Some(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut streams = BTreeMap::new();
    for _ in 0..count {
        let device: [u8; 32] = take(32)?.try_into().ok()?;
        let len = take(1)?[0] as usize;
        let name = std::str::from_utf8(take(len)?).ok()?.to_owned();
        validate_stream_name(&name).ok()?;
        let n = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        if n > MAX_KEYS_PER_STREAM {
            return None;
        }
        let mut keys = Vec::with_capacity(n.min(MAX_KEYS_PER_STREAM));
        for _ in 0..n {
            let key_id = u32::from_be_bytes(take(4)?.try_into().ok()?);
            // Strictly ascending, as `add` keeps them: one encoding per store.
            if keys.last().is_some_and(|k: &HeldKey| k.key_id >= key_id) {
                return None;
            }
            let from_seq = u64::from_be_bytes(take(8)?.try_into().ok()?);
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(take(32)?);
            keys.push(HeldKey {
                key_id,
                from_seq,
                key,
            });
        }
        if streams.insert((device, name), keys).is_some() {
            return None;
        }
    }
    if !r.is_empty() {
        return None;
    }
    Some(streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn key(id: u32, byte: u8) -> HeldKey {
        HeldKey {
            key_id: id,
            from_seq: id as u64 * 100,
            key: Zeroizing::new([byte; 32]),
        }
    }

    #[test]
    fn keys_survive_a_reopen_and_the_file_holds_no_key_in_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let store_key = [7u8; 32];
        let mut ks = KeyStore::open(tmp.path(), "provider-a", &store_key).unwrap();
        assert_eq!(
            ks.add(&[1; 32], "p1", vec![key(1, 0xaa), key(2, 0xbb)]),
            [1, 2]
        );
        assert_eq!(
            ks.add(&[1; 32], "p1", vec![key(2, 0xbb), key(3, 0xcc)]),
            [3]
        );
        ks.save(&store_key, &mut rng).unwrap();
        let raw = std::fs::read(tmp.path().join(FILE)).unwrap();
        assert!(!raw.windows(32).any(|w| w == [0xaa; 32]), "a key in clear");
        let back = KeyStore::open(tmp.path(), "provider-a", &store_key).unwrap();
        let ids: Vec<u32> = back.keys(&[1; 32], "p1").iter().map(|k| k.key_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(*back.key(&[1; 32], "p1", 3).unwrap().key, [0xcc; 32]);
        assert!(back.keys(&[2; 32], "p1").is_empty());
    }

    #[test]
    fn fail_another_store_key_or_profile_or_a_flipped_bit() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let mut ks = KeyStore::open(tmp.path(), "provider-a", &[7; 32]).unwrap();
        ks.add(&[1; 32], "p1", vec![key(1, 1)]);
        ks.save(&[7; 32], &mut rng).unwrap();
        assert!(matches!(
            KeyStore::open(tmp.path(), "provider-a", &[8; 32]),
            Err(Error::KeysDamaged { .. })
        ));
        assert!(matches!(
            KeyStore::open(tmp.path(), "provider-b", &[7; 32]),
            Err(Error::KeysDamaged { .. })
        ));
        let path = tmp.path().join(FILE);
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&path, raw).unwrap();
        assert!(matches!(
            KeyStore::open(tmp.path(), "provider-a", &[7; 32]),
            Err(Error::KeysDamaged { .. })
        ));
    }

    #[test]
    fn fail_a_different_key_under_a_held_id_is_not_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ks = KeyStore::open(tmp.path(), "provider-a", &[7; 32]).unwrap();
        ks.add(&[1; 32], "p1", vec![key(1, 1)]);
        assert!(ks.add(&[1; 32], "p1", vec![key(1, 2)]).is_empty());
        assert_eq!(*ks.key(&[1; 32], "p1", 1).unwrap().key, [1; 32]);
    }

    proptest::proptest! {
        // The plaintext reaches `decode` only after the AEAD tag verified under the keychain's
        // store key; still, no byte string makes it panic or allocate beyond its input.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_then_decode_is_the_identity(
            streams in proptest::collection::vec(
                (proptest::array::uniform32(0u8..), "[a-z0-9_-]{1,32}",
                 proptest::collection::btree_map(proptest::num::u32::ANY,
                    (proptest::num::u64::ANY, proptest::array::uniform32(0u8..)), 0..5)),
                0..4),
        ) {
            let mut map = BTreeMap::new();
            for (device, name, keys) in streams {
                let held = keys
                    .into_iter()
                    .map(|(key_id, (from_seq, key))| HeldKey { key_id, from_seq, key: Zeroizing::new(key) })
                    .collect::<Vec<_>>();
                map.insert((device, name), held);
            }
            let encoded = encode(&map);
            let back = decode(&encoded).expect("its own encoding decodes");
            proptest::prop_assert_eq!(&encode(&back)[..], &encoded[..]);
            proptest::prop_assert_eq!(back.len(), map.len());
            for (k, v) in &map {
                let w = &back[k];
                proptest::prop_assert_eq!(v.len(), w.len());
                for (a, b) in v.iter().zip(w) {
                    proptest::prop_assert_eq!((a.key_id, a.from_seq, *a.key), (b.key_id, b.from_seq, *b.key));
                }
            }
        }
    }

    #[test]
    fn fail_a_count_larger_than_the_input_is_refused_without_a_large_allocation() {
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 32]);
        bytes.extend_from_slice(&[2, b'p', b'1']);
        bytes.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(decode(&bytes).is_none());
    }

    /// One stream's plaintext: device [1; 32], `name`, keys with these ids.
    fn plain(name: &[u8], ids: &[u32]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 1];
        out.extend_from_slice(&[1; 32]);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&[3; 32]);
        }
        out
    }

    #[test]
    fn fail_a_non_canonical_plaintext_even_under_the_right_store_key() {
        assert!(decode(&plain(b"p1", &[1, 2])).is_some());
        // Ids out of order or twice, a name no stream can have, one stream twice.
        assert!(decode(&plain(b"p1", &[2, 1])).is_none());
        assert!(decode(&plain(b"p1", &[1, 1])).is_none());
        assert!(decode(&plain(b"P1", &[1])).is_none());
        assert!(decode(&plain(b"", &[1])).is_none());
        let mut twice = plain(b"p1", &[1]);
        twice[3] = 2;
        twice.extend_from_slice(&plain(b"p1", &[1])[4..]);
        assert!(decode(&twice).is_none());
        let ids: Vec<u32> = (0..=MAX_KEYS_PER_STREAM as u32).collect();
        assert!(decode(&plain(b"p1", &ids)).is_none());
        assert!(decode(&plain(b"p1", &ids[1..])).is_some());
        // Sealed correctly, the store still refuses it as damaged.
        let sealed = seal_plaintext("provider-a", &[7; 32], &[0; 24], &plain(b"p1", &[2, 1]));
        let e = KeyStore::from_sealed("keys.sealed".into(), &sealed, "provider-a", &[7; 32]);
        assert!(matches!(e, Err(Error::KeysDamaged { .. })));
    }

    #[test]
    fn fail_an_oversized_store_file_is_refused_before_it_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(tmp.path().join(FILE)).unwrap();
        f.set_len(MAX_FILE as u64 + 1).unwrap();
        let e = KeyStore::open(tmp.path(), "provider-a", &[7; 32]).unwrap_err();
        assert!(matches!(e, Error::KeysDamaged { .. }), "{e}");
        assert!(e.to_string().contains("Move it away"), "{e}");
    }

    #[test]
    fn a_store_seals_back_to_the_bytes_it_was_read_from() {
        let mut ks = KeyStore::empty("keys.sealed".into(), "provider-a");
        ks.add(&[1; 32], "p1", vec![key(3, 1), key(1, 2)]);
        assert!(ks.add(&[1; 32], "Not A Stream", vec![key(1, 1)]).is_empty());
        let sealed = ks.seal(&[7; 32], &[5; 24]);
        let back =
            KeyStore::from_sealed("keys.sealed".into(), &sealed, "provider-a", &[7; 32]).unwrap();
        assert_eq!(back.seal(&[7; 32], &[5; 24]), sealed);
        assert_eq!(back.streams().count(), 1);
    }

    #[test]
    fn debug_shows_no_key() {
        assert_eq!(
            format!("{:?}", key(4, 0x42)),
            "HeldKey(id 4, from seq 400, <redacted>)"
        );
    }
}
