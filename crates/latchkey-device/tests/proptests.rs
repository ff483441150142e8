//! Property tests of the audit log's codec and chain: any entry round-trips, arbitrary bytes
//! never panic the decoders, and any single flipped bit of a stored run is detected.

use latchkey_device::audit::{
    verify_entries, AuditEntry, AuditPage, AuditRecord, SignedEntry, Stage, Via, ViewMark,
    MAX_DETAIL,
};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::CommandId;
use latchkey_proto::keys::SigningKey;
use proptest::prelude::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[3; 32])
}

prop_compose! {
    fn record()(
        time_ms in proptest::option::of(any::<u64>()),
        relay in any::<bool>(),
        envelope in any::<[u8; 32]>(),
        with_sender in any::<bool>(),
        command in proptest::option::of(any::<[u8; 32]>()),
        action in "[a-z0-9._-]{0,32}",
        code in any::<u16>(),
        stage in 0usize..13,
        detail in "\\PC{0,60}",
        stale in any::<bool>(),
        age_s in proptest::option::of(any::<u32>()),
    ) -> AuditRecord {
        AuditRecord {
            time_ms,
            via: if relay { Via::Relay } else { Via::Local },
            envelope,
            sender: with_sender.then(|| key().public_key()),
            command: command.map(CommandId),
            action,
            code,
            stage: Stage::ALL[stage],
            detail,
            view: ViewMark { stale, age_s },
        }
    }
}

fn chain(records: Vec<AuditRecord>) -> Vec<SignedEntry> {
    let mut prev = [0u8; 32];
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            let e = AuditEntry {
                seq: i as u64,
                prev,
                record,
            }
            .sign(&key());
            prev = e.entry.hash();
            e
        })
        .collect()
}

proptest! {
    #[test]
    fn entries_round_trip(records in proptest::collection::vec(record(), 1..6)) {
        let entries = chain(records);
        for e in &entries {
            let bytes = e.to_bytes();
            prop_assert!(bytes.len() <= SignedEntry::MAX_LEN);
            prop_assert!(e.entry.record.detail.len() <= MAX_DETAIL);
            prop_assert_eq!(&SignedEntry::from_bytes(&bytes).unwrap(), e);
        }
        verify_entries(&entries, &key().public_key(), None).unwrap();
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = SignedEntry::from_bytes(&bytes);
        let _ = AuditPage::from_bytes(&bytes);
    }

    #[test]
    fn any_flipped_bit_is_detected(
        records in proptest::collection::vec(record(), 3..4),
        which in 0usize..3,
        bit in any::<prop::sample::Index>(),
    ) {
        let entries = chain(records);
        let bytes = entries[which].to_bytes();
        let at = bit.index(bytes.len() * 8);
        let mut flipped = bytes.clone();
        flipped[at / 8] ^= 1 << (at % 8);
        if let Ok(e) = SignedEntry::from_bytes(&flipped) {
            let mut run = entries.clone();
            run[which] = e;
            prop_assert!(verify_entries(&run, &key().public_key(), None).is_err());
        }
    }
}
