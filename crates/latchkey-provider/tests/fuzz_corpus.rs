//! Replays the provider fuzz corpus (`crates/latchkey-provider/fuzz/corpus/<target>/*`)
//! through the fuzz targets' own entries, so every input the fuzzer kept stays a regression
//! test on stable; and property tests of the same entries: any bytes are a value or a clear
//! error, and records the profile writes read back unchanged.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_entries;

use std::fs;
use std::path::{Path, PathBuf};

use latchkey_provider::keystore::{HeldKey, KeyStore};
use latchkey_provider::profile::{parse_json, CutOff, RequestRecord, StreamRecord};
use proptest::prelude::*;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn every_corpus_file_replays_without_panicking() {
    let mut total = 0;
    for (target, entry) in fuzz_entries::TARGETS {
        let dir = corpus_root().join(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus/{target}/ is empty");
        for path in files {
            entry(&fs::read(&path).unwrap());
            total += 1;
        }
    }
    assert!(total >= 8);
}

/// The committed seeds are real files, so the targets start past the first checks: the sealed
/// store opens under the fuzz store key, and each profile file parses.
#[test]
fn the_seeds_are_valid_files() {
    let root = corpus_root();
    let sealed = fs::read(root.join("keystore/keys.sealed")).unwrap();
    let store = KeyStore::from_sealed(
        "keys.sealed".into(),
        &sealed,
        fuzz_entries::ACCOUNT,
        &fuzz_entries::STORE_KEY,
    )
    .unwrap();
    assert_eq!(store.streams().count(), 2);
    let requests = fs::read(root.join("profile/requests.json")).unwrap();
    let requests: Vec<RequestRecord> = parse_json(Path::new("requests.json"), &requests).unwrap();
    assert_eq!(requests.len(), 1);
    let streams = fs::read(root.join("profile/streams.json")).unwrap();
    let streams: Vec<StreamRecord> = parse_json(Path::new("streams.json"), &streams).unwrap();
    assert!(streams[0].cut_off.is_some());
}

fn stream_record() -> impl Strategy<Value = StreamRecord> {
    (
        "[0-9a-z]{0,70}",
        "[a-z0-9_-]{1,32}",
        proptest::collection::vec(any::<u32>(), 0..6),
        proptest::option::of("[0-9a-f]{64}"),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        proptest::option::of((any::<u64>(), any::<u32>(), any::<u64>(), "(?s).{0,80}")),
    )
        .prop_map(
            |(device, stream, key_ids, consent, last_seq, readings, cut)| StreamRecord {
                device,
                stream,
                key_ids,
                consent,
                last_seq,
                readings,
                last_key_ms: last_seq,
                cut_off: cut.map(|(from_seq, key_id, noticed_ms, why)| CutOff {
                    from_seq,
                    key_id,
                    noticed_ms,
                    why,
                }),
            },
        )
}

proptest! {
    #[test]
    fn any_bytes_are_a_store_or_damaged(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzz_entries::keystore(&bytes);
    }

    #[test]
    fn any_bytes_are_profile_files_or_an_error_naming_them(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        fuzz_entries::profile(&bytes);
        fuzz_entries::secrets(&bytes);
    }

    #[test]
    fn any_text_is_profile_files_or_an_error_naming_them(text in "(?s).{0,300}") {
        fuzz_entries::profile(text.as_bytes());
    }

    #[test]
    fn a_mangled_seed_is_still_handled(
        which in 0usize..6,
        at in any::<usize>(),
        junk in proptest::collection::vec(any::<u8>(), 0..8),
        cut in any::<bool>(),
    ) {
        let names = ["keystore/keys.sealed", "keystore/plaintext", "profile/identity.json",
                     "profile/requests.json", "profile/devices.json", "profile/streams.json"];
        let mut bytes = fs::read(corpus_root().join(names[which])).unwrap();
        let at = at % (bytes.len() + 1);
        if cut {
            bytes.truncate(at);
        }
        bytes.splice(at.min(bytes.len())..at.min(bytes.len()), junk);
        if which < 2 {
            fuzz_entries::keystore(&bytes);
        } else {
            fuzz_entries::profile(&bytes);
        }
    }

    #[test]
    fn written_stream_records_read_back(records in proptest::collection::vec(stream_record(), 0..5)) {
        let written = serde_json::to_vec_pretty(&records).unwrap();
        let back: Vec<StreamRecord> = parse_json(Path::new("streams.json"), &written).unwrap();
        prop_assert_eq!(&back, &records);
        fuzz_entries::profile(&written);
    }

    #[test]
    fn stores_of_any_keys_read_back(
        ids in proptest::collection::btree_set(any::<u32>(), 0..20),
        key in any::<[u8; 32]>(),
    ) {
        let mut store = KeyStore::from_sealed(
            "keys.sealed".into(),
            &latchkey_provider::keystore::seal_plaintext(
                fuzz_entries::ACCOUNT, &fuzz_entries::STORE_KEY, &[0; 24], &[0, 0, 0, 0]),
            fuzz_entries::ACCOUNT,
            &fuzz_entries::STORE_KEY,
        ).unwrap();
        let keys: Vec<HeldKey> = ids.iter().rev().map(|&key_id| HeldKey {
            key_id, from_seq: key_id as u64, key: key.into(),
        }).collect();
        store.add(&key, "p1", keys);
        let sealed = store.seal(&fuzz_entries::STORE_KEY, &[9; 24]);
        fuzz_entries::keystore(&sealed);
        let back = KeyStore::from_sealed(
            "keys.sealed".into(), &sealed, fuzz_entries::ACCOUNT, &fuzz_entries::STORE_KEY,
        ).unwrap();
        let got: Vec<u32> = back.keys(&key, "p1").iter().map(|k| k.key_id).collect();
        prop_assert_eq!(got, ids.into_iter().collect::<Vec<_>>());
    }
}
