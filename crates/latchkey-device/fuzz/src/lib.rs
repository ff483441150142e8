//! One entry per fuzz target. Each feeds its input to the decoder the agent and owners use and,
//! when the input decodes, checks that the value re-encodes to exactly the input and decodes
//! again to the same value, and that verifying never panics.
//!
//! Also compiled, unchanged, into `crates/latchkey-device/tests/fuzz_corpus.rs`, which replays
//! `corpus/<target>/` as an ordinary test. It may use only `latchkey_device`, `latchkey_proto`
//! and std.

use latchkey_device::audit::{verify_entries, AuditPage, SignedEntry};
use latchkey_device::keyfile::DeviceSecrets;
use latchkey_device::stream::dsmr::{
    frames, parse_telegram, write_telegram, Frame, MAX_TELEGRAM_BYTES,
};
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::SigningKey;

/// A target's entry: takes any input; panics only on a bug.
pub type Entry = fn(&[u8]);

/// Every target: the name of its binary and corpus directory, and its entry.
pub const TARGETS: &[(&str, Entry)] = &[
    ("audit_entry", audit_entry),
    ("audit_page", audit_page),
    ("key_file", key_file),
    ("dsmr", dsmr),
];

/// The key the seed corpus is signed with (`SigningKey::from_bytes(&[7; 32])`).
pub fn corpus_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

pub fn audit_entry(data: &[u8]) {
    if let Ok(entry) = SignedEntry::from_bytes(data) {
        assert_eq!(entry.to_bytes(), data, "one encoding per entry");
        assert_eq!(SignedEntry::from_bytes(&entry.to_bytes()).unwrap(), entry);
        let _ = verify_entries(
            std::slice::from_ref(&entry),
            &corpus_key().public_key(),
            None,
        );
    }
}

pub fn audit_page(data: &[u8]) {
    if let Ok(page) = AuditPage::from_bytes(data) {
        assert_eq!(page.to_bytes(), data, "one encoding per page");
        assert_eq!(AuditPage::from_bytes(&page.to_bytes()).unwrap(), page);
        let _ = verify_entries(&page.entries, &corpus_key().public_key(), None);
    }
}

/// `device.key` (versions 1 and 2): a file that loads is written back as version 2 and loads
/// again to the same keys; a version 2 file is written back byte for byte.
pub fn key_file(data: &[u8]) {
    if let Ok(keys) = DeviceSecrets::from_bytes(data) {
        let again = keys.to_bytes();
        if data.first() == Some(&2) {
            assert_eq!(&again[..], data, "one encoding per key file");
        }
        let back = DeviceSecrets::from_bytes(&again).unwrap();
        assert_eq!(back.device_id(), keys.device_id());
        assert_eq!(back.setup_public(), keys.setup_public());
        assert_eq!(back.kem.public(), keys.kem.public());
    }
}

/// A DSMR P1 recording: the framer never yields a telegram over the cap, and any telegram
/// that parses gives a reading within the proto's caps which, written back as a telegram,
/// parses to the same reading.
pub fn dsmr(data: &[u8]) {
    let mut texts = vec![String::from_utf8_lossy(data).into_owned()];
    for frame in frames(data) {
        if let Frame::Telegram { text, .. } = frame {
            assert!(text.len() <= MAX_TELEGRAM_BYTES);
            texts.push(text);
        }
    }
    for text in texts {
        if let Ok(reading) = parse_telegram(&text) {
            reading
                .validate()
                .expect("a parsed reading is within the caps");
            assert!(reading.to_bytes().len() <= 256);
            if let Some(again) = write_telegram(&reading, "ISK5\\2M550T-1012") {
                assert_eq!(parse_telegram(&again).as_ref(), Ok(&reading), "{again}");
            }
        }
    }
}
