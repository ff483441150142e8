//! Replays the device fuzz corpus (`crates/latchkey-device/fuzz/corpus/<target>/*`) through the
//! fuzz targets' own entries, so every input the fuzzer kept stays a regression test on stable.
//!
//! `cargo test -p latchkey-device --test fuzz_corpus -- --ignored write_seed_corpus`
//! regenerates the seed files (valid entries and pages signed by the corpus key).

#[path = "../fuzz/src/lib.rs"]
mod fuzz_entries;

use std::fs;
use std::path::{Path, PathBuf};

use latchkey_device::audit::{
    build_page, verify_entries, ArgsDigest, AuditBody, AuditEntry, AuditRecord, EraCause, EraStart,
    Pruned, RefusalClass, RefusalCount, RefusalSummary, Running, SignedEntry, Stage, Via, ViewMark,
};
use latchkey_device::keyfile::{key_file_of, DeviceSecrets};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::CommandId;

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
    assert!(total >= 7);
}

/// Seeds for `key_file`: an old (version 1) file, and version 2 with and without a setup key.
fn key_file_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let d = latchkey_testkit::TestDevice::new(9, "fuzz");
    let full = key_file_of(&d.keys).to_vec();
    let spent = DeviceSecrets::from_bytes(&full)
        .unwrap()
        .without_setup()
        .to_bytes()
        .to_vec();
    vec![
        ("seed-v1", d.keys.to_secret_bytes().to_vec()),
        ("seed-v2-setup", full),
        ("seed-v2-spent", spent),
    ]
}

#[test]
fn key_file_seeds_load() {
    for (name, bytes) in key_file_seeds() {
        DeviceSecrets::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        fuzz_entries::key_file(&bytes);
    }
}

#[test]
#[ignore = "writes the key file seeds; run by hand"]
fn write_key_file_seeds() {
    let dir = corpus_root().join("key_file");
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in key_file_seeds() {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Seeds: an era marker, then entries of every kind covering every stage and option, and
/// pages of them.
fn seed_entries() -> Vec<SignedEntry> {
    let key = fuzz_entries::corpus_key();
    let era = [0xEA; 32];
    let mut bodies = vec![AuditBody::EraStart(EraStart {
        cause: EraCause::Claim,
        op_seq: 1,
    })];
    for (i, stage) in Stage::ALL.into_iter().enumerate() {
        let i8 = i as u8;
        bodies.push(AuditBody::Decision(AuditRecord {
            via: if i % 3 == 0 { Via::Relay } else { Via::Local },
            envelope: [i8; 32],
            sender: (i > 5).then(|| key.public_key()),
            command: (i > 6).then_some(CommandId([i8; 32])),
            action: if i > 4 {
                "unlock".into()
            } else {
                String::new()
            },
            args: (i > 4).then(|| ArgsDigest::of(&vec![i8; i])),
            code: if stage == Stage::Action { 0 } else { i as u16 },
            stage,
            detail: format!("{} refused", stage.name()),
            view: ViewMark {
                stale: i % 4 == 0,
                age_s: (i % 4 != 0).then_some(i as u32 * 7),
            },
        }));
    }
    bodies.push(AuditBody::Running(Running {
        via: Via::Relay,
        envelope: [0xAA; 32],
        sender: key.public_key(),
        command: CommandId([0xAB; 32]),
        action: "unlock".into(),
        args: ArgsDigest::of(b"{\"entity_id\":\"lock.front\"}"),
        by_owner: false,
        view: ViewMark::default(),
    }));
    bodies.push(AuditBody::Refusals(RefusalSummary {
        first_ms: Some(1_800_000_000_000),
        last_ms: Some(1_800_000_060_000),
        rows: RefusalClass::ALL
            .into_iter()
            .zip(Stage::ALL)
            .map(|(class, stage)| RefusalCount {
                class,
                stage,
                code: stage as u16,
                count: 1_000 * stage as u32,
            })
            .collect(),
    }));
    let mut out: Vec<SignedEntry> = Vec::new();
    let mut prev = [0u8; 32];
    for (i, body) in bodies.into_iter().enumerate() {
        let e = AuditEntry {
            seq: i as u64,
            prev,
            era,
            time_ms: (i % 2 == 0).then_some(1_800_000_000_000 + i as u64),
            body,
        }
        .sign(&key);
        prev = e.entry.hash();
        out.push(e);
    }
    let marker = AuditEntry {
        seq: out.len() as u64,
        prev,
        era,
        time_ms: None,
        body: AuditBody::Pruned(Pruned {
            first: 0,
            last: 2,
            last_hash: out[2].entry.hash(),
            unfetched: 1,
        }),
    }
    .sign(&key);
    out.push(marker);
    out
}

#[test]
fn seeds_are_valid_inputs() {
    let entries = seed_entries();
    for e in &entries {
        fuzz_entries::audit_entry(&e.to_bytes());
    }
    verify_entries(&entries, &fuzz_entries::corpus_key().public_key(), None).unwrap();
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let entries = seed_entries();
    let dir = corpus_root().join("audit_entry");
    fs::create_dir_all(&dir).unwrap();
    for e in &entries {
        fs::write(dir.join(format!("seed-{:02}", e.entry.seq)), e.to_bytes()).unwrap();
    }
    let dir = corpus_root().join("audit_page");
    fs::create_dir_all(&dir).unwrap();
    let newest_first: Vec<(u64, Vec<u8>)> = entries
        .iter()
        .rev()
        .map(|e| (e.entry.seq, e.to_bytes()))
        .collect();
    let next = entries.len() as u64;
    fs::write(
        dir.join("seed-all"),
        build_page(0, next, newest_first.clone()).bytes,
    )
    .unwrap();
    fs::write(
        dir.join("seed-three"),
        build_page(0, next, newest_first[..3].to_vec()).bytes,
    )
    .unwrap();
    fs::write(dir.join("seed-empty"), build_page(0, 0, vec![]).bytes).unwrap();
}
