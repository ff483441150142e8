//! One entry per fuzz target. Each feeds its input to a decoder the provider uses on bytes
//! from its profile directory or the keychain, and checks what a success promises.
//!
//! Also compiled, unchanged, into `crates/latchkey-provider/tests/fuzz_corpus.rs`, which
//! replays `corpus/<target>/` as an ordinary test. It may use only `latchkey_provider`,
//! `latchkey_proto`, `serde`, `serde_json` and std.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use latchkey_proto::kem::AEAD_NONCE_LEN;
use latchkey_proto::stream::validate_stream_name;
use latchkey_provider::identity::{PublicIdentity, Secrets};
use latchkey_provider::keystore::{seal_plaintext, KeyStore, MAX_KEYS_PER_STREAM};
use latchkey_provider::profile::{parse_json, DeviceRecord, RequestRecord, StreamRecord};
use latchkey_provider::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A target's entry: takes any input; panics only on a bug.
pub type Entry = fn(&[u8]);

/// Every target: the name of its binary and corpus directory, and its entry.
pub const TARGETS: &[(&str, Entry)] = &[
    ("keystore", keystore),
    ("profile", profile),
    ("secrets", secrets),
];

/// The store key and keychain account the keystore target seals under (the corpus's sealed
/// files are sealed under them too).
pub const STORE_KEY: [u8; 32] = [0x5a; 32];
pub const ACCOUNT: &str = "provider-fuzz";

/// `keys.sealed` twice: the input as the whole file (almost always refused at the AEAD), and
/// the input as the plaintext of a correctly sealed file (reaching the plaintext decoder).
/// Either a `KeysDamaged` error, or a store that holds only valid stream names with at most
/// `MAX_KEYS_PER_STREAM` strictly ascending key ids, and that seals back to the same bytes.
pub fn keystore(data: &[u8]) {
    let path = PathBuf::from("keys.sealed");
    check_store(&path, data);
    let nonce = [0u8; AEAD_NONCE_LEN];
    check_store(&path, &seal_plaintext(ACCOUNT, &STORE_KEY, &nonce, data));
}

fn check_store(path: &Path, file: &[u8]) {
    match KeyStore::from_sealed(path.to_owned(), file, ACCOUNT, &STORE_KEY) {
        Ok(store) => {
            for ((_, name), keys) in store.streams() {
                assert!(validate_stream_name(name).is_ok(), "{name:?}");
                assert!(keys.len() <= MAX_KEYS_PER_STREAM);
                assert!(keys.windows(2).all(|w| w[0].key_id < w[1].key_id));
            }
            let nonce: [u8; AEAD_NONCE_LEN] = file[6..6 + AEAD_NONCE_LEN].try_into().unwrap();
            assert!(
                store.seal(&STORE_KEY, &nonce) == file,
                "a store read back does not seal to the bytes it was read from"
            );
        }
        Err(Error::KeysDamaged { .. }) => {}
        Err(other) => panic!("a store file fails only as KeysDamaged: {other}"),
    }
}

/// The input as each profile JSON file: either a `Profile` error naming the file, or a value
/// that writes back (as the profile writes it) and reads back unchanged. For `identity.json`
/// the keys it names are parsed too (as opening a profile does), which may fail but not panic.
pub fn profile(data: &[u8]) {
    if let Some(identity) = json::<PublicIdentity>("identity.json", data) {
        let _ = identity.signing();
        let _ = identity.kem();
        let _ = identity.recipient_hex();
    }
    json::<Vec<RequestRecord>>("requests.json", data);
    json::<BTreeMap<String, DeviceRecord>>("devices.json", data);
    json::<Vec<StreamRecord>>("streams.json", data);
}

fn json<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    name: &str,
    data: &[u8],
) -> Option<T> {
    let path = Path::new(name);
    match parse_json::<T>(path, data) {
        Ok(value) => {
            let written = serde_json::to_vec_pretty(&value).expect("a read value writes");
            let back: T = parse_json(path, &written).expect("a written value reads back");
            assert_eq!(back, value, "{name}");
            Some(value)
        }
        Err(e @ Error::Profile { .. }) => {
            assert!(e.to_string().contains(name), "{e}");
            None
        }
        Err(other) => panic!("{name} fails only as a Profile error: {other}"),
    }
}

/// The keychain's secrets blob: either a `Keychain` error, or secrets that write back to the
/// same length and whose public half reads back as the same keys.
pub fn secrets(data: &[u8]) {
    match Secrets::from_bytes(data) {
        Ok(s) => {
            assert_eq!(s.to_bytes().len(), data.len());
            assert_eq!(&s.to_bytes()[..65], &data[..65]);
            let public = s.public(ACCOUNT, "fuzz", "", 0);
            assert_eq!(public.signing().unwrap(), s.signing.public_key());
            assert_eq!(&public.kem().unwrap(), s.kem.public());
        }
        Err(Error::Keychain(why)) => assert!(why.contains("provider secrets"), "{why}"),
        Err(other) => panic!("secrets fail only as Keychain: {other}"),
    }
}
