//! Property tests of the audit log's codec and chain: any entry round-trips, arbitrary bytes
//! never panic the decoders, and any single flipped bit of a stored run is detected. And the
//! key file: any cut or changed byte either is refused or loads to keys that write back.

use latchkey_device::audit::{
    verify_entries, ArgsDigest, AuditBody, AuditEntry, AuditPage, AuditRecord, EraCause, EraStart,
    RefusalClass, RefusalCount, RefusalSummary, Running, SignedEntry, Stage, Via, ViewMark,
    MAX_DETAIL, MAX_SUMMARY_ROWS,
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
        relay in any::<bool>(),
        envelope in any::<[u8; 32]>(),
        with_sender in any::<bool>(),
        command in proptest::option::of(any::<[u8; 32]>()),
        action in "[a-z0-9._-]{0,32}",
        args in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..1024)),
        code in any::<u16>(),
        stage in 0usize..13,
        detail in "\\PC{0,60}",
        stale in any::<bool>(),
        age_s in proptest::option::of(any::<u32>()),
    ) -> AuditRecord {
        AuditRecord {
            via: if relay { Via::Relay } else { Via::Local },
            envelope,
            sender: with_sender.then(|| key().public_key()),
            command: command.map(CommandId),
            action,
            args: args.map(|a| ArgsDigest::of(&a)),
            code,
            stage: Stage::ALL[stage],
            detail,
            view: ViewMark { stale, age_s },
        }
    }
}

prop_compose! {
    fn summary()(
        first_ms in proptest::option::of(0u64..1 << 50),
        span in 0u64..1 << 20,
        rows in proptest::collection::btree_map((0usize..4, 0usize..13, any::<u16>()), 1u32.., 1..=MAX_SUMMARY_ROWS),
    ) -> RefusalSummary {
        RefusalSummary {
            first_ms,
            last_ms: first_ms.map(|f| f + span),
            rows: rows
                .into_iter()
                .map(|((class, stage, code), count)| RefusalCount {
                    class: RefusalClass::ALL[class],
                    stage: Stage::ALL[stage],
                    code,
                    count,
                })
                .collect(),
        }
    }
}

fn body() -> impl Strategy<Value = AuditBody> {
    prop_oneof![
        record().prop_map(AuditBody::Decision),
        (record(), any::<bool>()).prop_map(|(r, by_owner)| AuditBody::Running(Running {
            via: r.via,
            envelope: r.envelope,
            sender: key().public_key(),
            command: CommandId(r.envelope),
            action: r.action,
            args: r.args.unwrap_or(ArgsDigest::of(&[])),
            by_owner,
            view: r.view,
        })),
        summary().prop_map(AuditBody::Refusals),
    ]
}

fn chain(bodies: Vec<AuditBody>) -> Vec<SignedEntry> {
    let mut prev = [0u8; 32];
    let era = [5; 32];
    std::iter::once(AuditBody::EraStart(EraStart {
        cause: EraCause::Transfer,
        op_seq: 9,
    }))
    .chain(bodies)
    .enumerate()
    .map(|(i, body)| {
        let e = AuditEntry {
            seq: i as u64,
            prev,
            era,
            time_ms: Some(i as u64),
            body,
        }
        .sign(&key());
        prev = e.entry.hash();
        e
    })
    .collect()
}

proptest! {
    #[test]
    fn entries_round_trip(bodies in proptest::collection::vec(body(), 1..6)) {
        let entries = chain(bodies);
        for e in &entries {
            let bytes = e.to_bytes();
            prop_assert!(bytes.len() <= SignedEntry::MAX_LEN);
            if let AuditBody::Decision(r) = &e.entry.body {
                prop_assert!(r.detail.len() <= MAX_DETAIL);
            }
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
        bodies in proptest::collection::vec(body(), 3..4),
        which in 0usize..3,
        bit in any::<prop::sample::Index>(),
    ) {
        let entries = chain(bodies);
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

fn key_file_bytes(with_setup: bool) -> Vec<u8> {
    let d = latchkey_testkit::TestDevice::new(5, "door");
    let full = latchkey_device::keyfile::DeviceSecrets::from(
        latchkey_proto::device::DeviceKeys::from_secret_bytes(&d.keys.to_secret_bytes()).unwrap(),
    );
    if with_setup {
        full.to_bytes().to_vec()
    } else {
        full.without_setup().to_bytes().to_vec()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn a_damaged_key_file_is_refused_or_loads_consistently(
        with_setup in any::<bool>(),
        cut in proptest::option::of(0usize..3100),
        at in 0usize..3100,
        byte in any::<u8>(),
        extra in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        use latchkey_device::keyfile::{DeviceSecrets, MAX_KEY_FILE};
        let mut bytes = key_file_bytes(with_setup);
        let len = bytes.len();
        bytes[at % len] = byte;
        if let Some(cut) = cut {
            bytes.truncate(cut.min(len));
        }
        bytes.extend_from_slice(&extra);
        // Refusing is fine; what loads must write back and load the same.
        if let Ok(keys) = DeviceSecrets::from_bytes(&bytes) {
            prop_assert!(bytes.len() <= MAX_KEY_FILE);
            let again = keys.to_bytes();
            if bytes[0] == 2 {
                prop_assert_eq!(&again[..], &bytes[..]);
            }
            let back = DeviceSecrets::from_bytes(&again).unwrap();
            prop_assert_eq!(back.setup_public(), keys.setup_public());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_key_file_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..4000),
    ) {
        let _ = latchkey_device::keyfile::DeviceSecrets::from_bytes(&bytes);
    }
}
