//! audit.json: version 2 audit entries of every kind as one verified run, a page of them, runs
//! that must not verify, and encodings that must not decode (docs/PROTOCOL.md §9).

use latchkey_proto::audit::{
    verify_entries, ArgsDigest, AuditBody, AuditEntry, AuditPage, AuditRecord, EraCause, EraStart,
    Pruned, RefusalClass, RefusalCount, RefusalSummary, Running, SignedEntry, Stage, Via, ViewMark,
};

use crate::*;

const ERA: [u8; 32] = [0xE7; 32];

fn chain(key: &SigningKey, era: [u8; 32], bodies: Vec<AuditBody>) -> Vec<SignedEntry> {
    let mut prev = [0u8; 32];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let e = AuditEntry {
                seq: i as u64,
                prev,
                era,
                time_ms: (i != 1).then_some(T0 + i as u64 * MINUTE),
                body,
            }
            .sign(key);
            prev = e.entry.hash();
            e
        })
        .collect()
}

fn next(key: &SigningKey, run: &[SignedEntry], body: AuditBody) -> SignedEntry {
    let last = &run[run.len() - 1].entry;
    AuditEntry {
        seq: last.seq + 1,
        prev: last.hash(),
        era: last.era,
        time_ms: None,
        body,
    }
    .sign(key)
}

fn run_json(entries: &[SignedEntry]) -> Value {
    json!(entries
        .iter()
        .map(|e| json!({
            "seq": e.entry.seq,
            "kind": e.entry.body.kind_name(),
            "bytes": h(e.to_bytes()),
            "entry_hash": h(e.entry.hash()),
        }))
        .collect::<Vec<_>>())
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let key = &w.front.identity;
    let guest = w.front.setup.public_key();
    let args = br#"{"entity_id":"lock.front"}"#;
    let digest = ArgsDigest::of(args);
    let command = CommandId([0xC1; 32]);
    let bodies = vec![
        AuditBody::EraStart(EraStart {
            cause: EraCause::Claim,
            op_seq: 1,
        }),
        AuditBody::Refusals(RefusalSummary {
            first_ms: Some(T0 + 2 * HOUR),
            last_ms: Some(T0 + 2 * HOUR + MINUTE),
            rows: vec![
                RefusalCount {
                    class: RefusalClass::Unauthenticated,
                    stage: Stage::Header,
                    code: RejectCode::Malformed as u16,
                    count: 98_000,
                },
                RefusalCount {
                    class: RefusalClass::Unauthenticated,
                    stage: Stage::Decrypt,
                    code: RejectCode::Malformed as u16,
                    count: 2_000,
                },
                RefusalCount {
                    class: RefusalClass::NoStanding,
                    stage: Stage::Authority,
                    code: RejectCode::NotAuthorized as u16,
                    count: 200,
                },
            ],
        }),
        AuditBody::Running(Running {
            via: Via::Relay,
            envelope: [0xE0; 32],
            sender: guest,
            command,
            action: "unlock".into(),
            args: digest,
            by_owner: false,
            view: ViewMark {
                stale: false,
                age_s: Some(42),
            },
        }),
        AuditBody::Decision(AuditRecord {
            via: Via::Relay,
            envelope: [0xE0; 32],
            sender: Some(guest),
            command: Some(command),
            action: "unlock".into(),
            args: Some(digest),
            code: 0,
            stage: Stage::Action,
            detail: "ran; 6 bytes of output".into(),
            view: ViewMark {
                stale: false,
                age_s: Some(42),
            },
        }),
        AuditBody::Decision(AuditRecord {
            via: Via::Local,
            envelope: [0xE1; 32],
            sender: Some(guest),
            command: Some(CommandId([0xC2; 32])),
            action: "unlock".into(),
            args: Some(ArgsDigest::of(b"")),
            code: RejectCode::GrantExpired as u16,
            stage: Stage::Authority,
            detail: "the grant expired 5 s ago; ask the owner for a new invitation".into(),
            view: ViewMark {
                stale: true,
                age_s: None,
            },
        }),
    ];
    let mut run = chain(key, ERA, bodies);
    let marker = next(
        key,
        &run,
        AuditBody::Pruned(Pruned {
            first: 0,
            last: 1,
            last_hash: run[1].entry.hash(),
            unfetched: 1,
        }),
    );
    run.push(marker);
    verify_entries(&run, &key.public_key(), None).expect("the run verifies");
    v.ok(
        "audit_run_every_kind",
        "audit_run",
        "One era's log signed by the front door's identity key: the era marker (claim), a \
         refusal summary, a guest's \"about to run\" unlock and its outcome, a refused expired \
         grant, and a prune marker for entries 0-1. Each entry decodes and re-encodes to its \
         bytes, has the given entry_hash, and the run verifies (verify_entries, no anchor).",
        json!({
            "device_identity": h(key.public_key().as_bytes()),
            "entries": run_json(&run),
            "args": h(args),
            "args_hash": h(digest.hash),
        }),
    );
    // What the device keeps after pruning 0-1: the run from 2 verifies against the marker.
    v.ok(
        "audit_run_after_pruning",
        "audit_run",
        "The same log after entries 0-1 were pruned: the kept run starts at entry 2 (whose prev \
         is the marker's last_hash) and verifies.",
        json!({
            "device_identity": h(key.public_key().as_bytes()),
            "entries": run_json(&run[2..]),
        }),
    );
    let newest_first: Vec<(u64, Vec<u8>)> = run
        .iter()
        .rev()
        .map(|e| (e.entry.seq, e.to_bytes()))
        .collect();
    let page = latchkey_proto::audit::build_page(2, run.len() as u64, newest_first).bytes;
    assert_eq!(AuditPage::from_bytes(&page).unwrap().to_bytes(), page);
    v.ok(
        "audit_page",
        "decode",
        "An audit page (version 2, oldest 2, next_seq 6, every entry above).",
        json!({ "codec": "AuditPage", "bytes": h(&page) }),
    );

    // A page as an owner receives it after the device pruned entries 0-1: its entries are a
    // hash chain that verifies with the device's identity key.
    let page_of = |entries: &[SignedEntry]| {
        let newest_first: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .rev()
            .map(|e| (e.entry.seq, e.to_bytes()))
            .collect();
        latchkey_proto::audit::build_page(2, run.len() as u64, newest_first).bytes
    };
    let kept = page_of(&run[2..]);
    let decoded = AuditPage::from_bytes(&kept).unwrap();
    verify_entries(&decoded.entries, &key.public_key(), None).expect("the page verifies");
    v.ok(
        "audit_page_after_pruning",
        "audit_page",
        "The page an owner gets after entries 0-1 were pruned (`audit` with no argument): \
         version 2, oldest 2, next_seq 6, entries 2-5 oldest first. Each entry has the given \
         bytes and entry_hash; entry n's prev is entry n-1's entry_hash (entry 2's is the prune \
         marker's last_hash), and the run verifies with device_identity.",
        json!({
            "bytes": h(&kept),
            "device_identity": h(key.public_key().as_bytes()),
            "oldest": 2,
            "next_seq": run.len(),
            "entries": run_json(&run[2..]),
        }),
    );
    let mut gap = run[2..].to_vec();
    gap.remove(1);
    let gap_page = page_of(&gap);
    let broken = verify_entries(
        &AuditPage::from_bytes(&gap_page).unwrap().entries,
        &key.public_key(),
        None,
    )
    .expect_err("a page with a gap");
    assert_eq!(broken.seq, 4);
    v.push_with_source(
        "fail_audit_page_entry_withheld",
        "audit_page_fail",
        "audit_page_after_pruning with entry 3 left out (a device hiding the outcome of a \
         command): the page decodes, but its entries do not verify: AuditBroken at entry 4 \
         (sequence gap).",
        SOURCE,
        json!({
            "bytes": h(&gap_page),
            "device_identity": h(key.public_key().as_bytes()),
            "broken_seq": 4,
            "error": "AuditBroken",
        }),
    );

    // Runs that must not verify.
    let pk = h(key.public_key().as_bytes());
    let mut fail_run = |name: &str, description: &str, entries: Vec<SignedEntry>, seq: u64| {
        let broken =
            verify_entries(&entries, &key.public_key(), None).expect_err("the run must not verify");
        assert_eq!(broken.seq, seq, "{name}: {broken}");
        v.push_with_source(
            name,
            "audit_run_fail",
            description,
            SOURCE,
            json!({
                "device_identity": pk,
                "entries": run_json(&entries),
                "error": "AuditBroken",
                "broken_seq": seq,
            }),
        );
    };
    let mut gap = run.clone();
    gap.remove(3);
    fail_run(
        "fail_audit_run_gap",
        "Entry 3 removed: entry 4 follows entry 2.",
        gap,
        4,
    );
    let other = chain(
        key,
        [0xE8; 32],
        vec![AuditBody::EraStart(EraStart {
            cause: EraCause::Transfer,
            op_seq: 4,
        })],
    );
    let mut mixed = run[..3].to_vec();
    mixed.push(
        AuditEntry {
            era: [0xE8; 32],
            ..next(key, &mixed, run[3].entry.body.clone()).entry
        }
        .sign(key),
    );
    assert_eq!(other.len(), 1);
    fail_run(
        "fail_audit_run_other_era",
        "Entry 3 names another era than the entries before it (correctly linked and signed).",
        mixed,
        3,
    );
    let mut not_marker = run.clone();
    not_marker[0] = AuditEntry {
        body: run[4].entry.body.clone(),
        ..run[0].entry.clone()
    }
    .sign(key);
    fail_run(
        "fail_audit_run_first_entry_not_an_era_marker",
        "Entry 0 is a decision, not the era marker.",
        not_marker,
        0,
    );
    let mut lying = run[2..5].to_vec();
    lying.push(next(
        key,
        &lying,
        AuditBody::Pruned(Pruned {
            first: 0,
            last: 1,
            last_hash: [0x77; 32],
            unfetched: 0,
        }),
    ));
    fail_run(
        "fail_audit_run_prune_marker_lies",
        "A prune marker whose last_hash is not what the oldest kept entry (2) links to.",
        lying,
        5,
    );
    let mut forged = run.clone();
    forged.push(next(&w.back.identity, &run, run[3].entry.body.clone()));
    fail_run(
        "fail_audit_run_signed_by_another_key",
        "Entry 6 is signed by another device's identity key.",
        forged,
        6,
    );

    // Encodings that must not decode.
    let good = run[4].to_bytes();
    v.fail_truncations("audit_entry", "SignedEntry", &good, "TrailingBytes");
    let mut v1 = good.clone();
    v1[0] = 1;
    v.fail_decode(
        "fail_audit_entry_version_1",
        "SignedEntry",
        "A version 1 entry: this version reads version 2 only.",
        &v1,
        "UnsupportedVersion",
    );
    let no_time = AuditEntry {
        time_ms: None,
        ..run[4].entry.clone()
    }
    .sign(key)
    .to_bytes();
    let mut kind = no_time.clone();
    kind[1 + 8 + 32 + 32 + 1] = 9;
    v.fail_decode(
        "fail_audit_entry_unknown_kind",
        "SignedEntry",
        "Kind 9 does not exist.",
        &kind,
        "UnknownTag",
    );
    let bad_summary = |rows: Vec<RefusalCount>| {
        AuditEntry {
            body: AuditBody::Refusals(RefusalSummary {
                first_ms: None,
                last_ms: None,
                rows,
            }),
            ..run[1].entry.clone()
        }
        .sign(key)
        .to_bytes()
    };
    let row = |class, count| RefusalCount {
        class,
        stage: Stage::Decrypt,
        code: 1,
        count,
    };
    v.fail_decode(
        "fail_audit_entry_summary_unsorted",
        "SignedEntry",
        "A refusal summary whose rows are not sorted by class, stage and code.",
        &bad_summary(vec![
            row(RefusalClass::Repeat, 1),
            row(RefusalClass::Unauthenticated, 1),
        ]),
        "Invalid",
    );
    v.fail_decode(
        "fail_audit_entry_summary_counts_zero",
        "SignedEntry",
        "A refusal summary row counting zero refusals.",
        &bad_summary(vec![row(RefusalClass::Repeat, 0)]),
        "Invalid",
    );
    v.fail_decode(
        "fail_audit_entry_summary_empty",
        "SignedEntry",
        "A refusal summary with no rows.",
        &bad_summary(vec![]),
        "Invalid",
    );
    let empty_range = AuditEntry {
        body: AuditBody::Pruned(Pruned {
            first: 5,
            last: 4,
            last_hash: [0; 32],
            unfetched: 0,
        }),
        ..run[5].entry.clone()
    }
    .sign(key)
    .to_bytes();
    v.fail_decode(
        "fail_audit_entry_pruned_empty_range",
        "SignedEntry",
        "A prune marker whose first deleted entry is after its last.",
        &empty_range,
        "Invalid",
    );
    let mut bad_page = page.clone();
    bad_page[1..9].copy_from_slice(&99u64.to_be_bytes());
    v.fail_decode(
        "fail_audit_page_oldest_after_next",
        "AuditPage",
        "A page whose oldest entry (99) is after its next_seq (6).",
        &bad_page,
        "Invalid",
    );
    v
}
