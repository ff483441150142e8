//! The golden vectors: one table-driven test that checks the library against every vector in
//! `tests/vectors/*.json` at the repository root (written by
//! `crates/latchkey-proto/examples/gen_vectors.rs`; see tests/vectors/README.md).
//!
//! Positive vectors decode, re-encode byte for byte, and give the ids, signatures, derived keys
//! and states they state. Negative vectors (`fail_*`) must be refused with exactly the `Error`
//! variant they name. A missing, empty or unknown vector file fails the test, and so does a
//! vector of an unknown type, so nothing in the directory goes unchecked.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use latchkey_proto::chain::{Chain, Op, OpList};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{self, Authorization, CommandId, SignedCommand, SignedResponse};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope;
use latchkey_proto::grant::{self, AllowedArguments, Grant, GrantId, GrantRequest};
use latchkey_proto::invite::Invitation;
use latchkey_proto::kem::{self, KemCiphertext, KemPublicKey};
use latchkey_proto::keys::{self, DeviceId, KeyPurpose, PublicKey, RecoveryPhrase, Signature};
use latchkey_proto::replay::{ChallengeBook, MemoryNonceStore, NonceStore, ReplayWindow};
use latchkey_proto::schedule::WeeklySchedule;
use latchkey_proto::shortlink::{SealedInvitation, ShortLink};
use latchkey_proto::{pad, Error};
use rand_chacha::rand_core::SeedableRng;
use serde_json::{json, Value};

/// Every file the directory must hold, each with at least one vector.
const FILES: [&str; 20] = [
    "keys.json",
    "bip39_english.json",
    "slip10_ed25519.json",
    "claim_payload.json",
    "invitation.json",
    "short_link.json",
    "ops.json",
    "merge.json",
    "grant.json",
    "command.json",
    "response.json",
    "audit.json",
    "freshness.json",
    "mailbox.json",
    "precedence.json",
    "weak_keys.json",
    "schedule.json",
    "event.json",
    "stream.json",
    "consent.json",
];

/// Envelope layout (docs/PROTOCOL.md): version, kind, X25519 ephemeral (32), sntrup761
/// ciphertext (1039), nonce (24), then AEAD ciphertext || tag; a response envelope has no KEM
/// ciphertext.
const KEM_CT_AT: usize = 2;
const COMMAND_HEADER_LEN: usize = 2 + kem::KEM_CIPHERTEXT_LEN + kem::AEAD_NONCE_LEN;
const RESPONSE_HEADER_LEN: usize = 2 + kem::AEAD_NONCE_LEN;

mod render;
use render::*;

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

#[test]
fn golden_vectors() {
    let dir = vector_dir();
    let mut present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in FILES {
        assert!(
            present.remove(file),
            "{file} is missing from {}; regenerate with `cargo run -p latchkey-proto --example \
             gen_vectors -- tests/vectors`",
            dir.display()
        );
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let doc: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        assert_eq!(doc["file"], file, "{file}: wrong `file` field");
        assert!(non_empty(&doc["description"]) && non_empty(&doc["source"]));
        let vectors = doc["vectors"]
            .as_array()
            .unwrap_or_else(|| panic!("{file} has no `vectors` list"));
        assert!(!vectors.is_empty(), "{file} holds no vectors");
        let mut names = BTreeSet::new();
        for v in vectors {
            let name = v["name"].as_str().unwrap_or("<unnamed>").to_owned();
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                assert!(names.insert(name.clone()), "duplicate name");
                assert!(non_empty(&v["description"]), "no description");
                assert!(non_empty(&v["source"]), "no source");
                assert_eq!(
                    name.starts_with("fail_"),
                    v.get("error").is_some(),
                    "negative vectors, and only they, are named fail_* and name an error"
                );
                check(v);
            }));
            if outcome.is_err() {
                failures.push(format!("{file}: {name}"));
            }
            checked += 1;
        }
    }
    assert!(
        present.is_empty(),
        "vector files this test does not know: {present:?}; add them to FILES"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} vectors failed (messages above):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    eprintln!("{checked} vectors checked");
}

fn non_empty(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.trim().is_empty())
}

fn check(v: &Value) {
    match s(v, "type") {
        "event" => check_event(v),
        "event_message" => check_event_message(v),
        "event_message_fail" => {
            let keys = DeviceKeys::from_secret_bytes(&bytes(v, "reader_secret_keys")).unwrap();
            let message =
                latchkey_proto::event::EventMessage::from_bytes(&bytes(v, "message")).unwrap();
            expect_error(
                v,
                message.open(
                    &public_key(v, "checked_with"),
                    &array(v, "mailbox_id"),
                    &keys.kem,
                ),
            )
        }
        "decode" => check_decode(v),
        "recovery_phrase" => check_recovery_phrase(v),
        "device_keys" => check_device_keys(v),
        "recovery_phrase_fail" => expect_error(v, RecoveryPhrase::parse(s(v, "phrase"))),
        "text_fail" => check_text_fail(v),
        "device_key_file_fail" => {
            expect_error(v, DeviceKeys::from_secret_bytes(&bytes(v, "bytes")))
        }
        "signature" => check_signature(v),
        "signature_fail" => {
            check_strict_claim(v);
            expect_error(
                v,
                PublicKey::from_bytes(array(v, "public_key")).and_then(|k| {
                    k.verify_or(
                        &Signature(array(v, "signature")),
                        &bytes(v, "message"),
                        "vector",
                    )
                }),
            )
        }
        "derivation_fail" => expect_error(
            v,
            keys::derive_ed25519(&bytes(v, "seed"), &path_indices(&v["path"])),
        ),
        "bip39" => check_bip39(v),
        "slip10_ed25519" => check_slip10(v),
        "claim_payload" => check_claim(v),
        "claim_text_fail" => expect_error(v, ClaimPayload::parse(s(v, "text"))),
        "claim_kem_fail" => {
            let payload = ClaimPayload::parse(s(v, "text")).unwrap();
            let kem = KemPublicKey::from_bytes(&bytes(v, "kem_public_key")).unwrap();
            expect_error(v, payload.check_kem(&kem));
        }
        "invitation" => check_invitation(v),
        "invitation_link_fail" => expect_error(v, Invitation::parse_link(s(v, "text"))),
        "short_link" => check_short_link(v),
        "short_link_fail" => expect_error(v, ShortLink::parse(s(v, "text"))),
        "sealed_invitation" => {
            let link = ShortLink::parse(s(v, "link")).unwrap();
            let opened = SealedInvitation::open(&link, &bytes(v, "blob")).unwrap();
            assert_eq!(h(opened.to_bytes()), s(v, "invitation"));
        }
        "sealed_invitation_fail" => {
            let link = ShortLink::parse(s(v, "link")).unwrap();
            expect_error(v, SealedInvitation::open(&link, &bytes(v, "blob")));
        }
        "chain" => check_chain(v),
        "op" => check_op(v),
        "chain_fail" => check_chain_fail(v),
        "chain_merge" => check_chain_merge(v),
        "grant" => {
            let g = Grant::from_bytes(&bytes(&v["grant"], "bytes")).unwrap();
            assert_eq!(grant_json(&g), v["grant"]);
            g.verify_signature().unwrap();
        }
        "grant_chain" => {
            let limits = run_grant_chain(v).unwrap();
            assert_eq!(limits, v["use_limits"]);
        }
        "grant_chain_fail" => expect_error(v, run_grant_chain(v)),
        "schedule" => check_schedule(v),
        "schedule_fail" => expect_error(v, WeeklySchedule::decode(&bytes(v, "value"))),
        "schedule_spec_fail" => {
            let specs: Vec<&str> = v["specs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            expect_error(v, WeeklySchedule::parse_spec(&specs, s(v, "tz")))
        }
        "schedule_chain_fail" => {
            let opens_in_s = v["opens_in_s"].as_u64();
            let result = run_grant_chain(v);
            assert_eq!(
                result.clone().err(),
                Some(Error::OutsideSchedule { opens_in_s })
            );
            expect_error(v, result)
        }
        "allowed_arguments" => {
            let value = bytes(v, "value");
            let list = AllowedArguments::decode(&value).unwrap();
            assert_eq!(list.as_slice(), hex_list(v, "arguments").as_slice());
            assert_eq!(list.encode(), value);
            let mut reversed = hex_list(v, "arguments");
            reversed.reverse();
            assert_eq!(AllowedArguments::new(reversed).unwrap(), list);
        }
        "allowed_arguments_fail" => expect_error(v, AllowedArguments::decode(&bytes(v, "value"))),
        "authorize" => {
            let result = match run_authorize(v).unwrap() {
                Authorization::Owner => json!("owner"),
                Authorization::Guest(a) => json!({
                    "guest_use_limits": a
                        .use_limits
                        .iter()
                        .map(|(id, limit)| json!({"grant_id": h(id.0), "limit": limit}))
                        .collect::<Vec<_>>(),
                }),
                Authorization::Redeem { grant, key } => json!({
                    "redeem": {"grant_id": h(grant.0), "key": pk_hex(&key)},
                }),
            };
            assert_eq!(result, v["authorization"]);
        }
        "authorize_fail" => expect_error(v, run_authorize(v)),
        "grant_signature_fail" => {
            let g = Grant::from_bytes(&bytes(v, "bytes")).unwrap();
            expect_error(v, g.verify_signature());
        }
        "signed_command" => {
            let c = SignedCommand::from_bytes(&bytes(&v["command"], "bytes")).unwrap();
            assert_eq!(command_json(&c), v["command"]);
            c.verify_signature().unwrap();
        }
        "signed_command_fail" => {
            let c = SignedCommand::from_bytes(&bytes(v, "bytes")).unwrap();
            expect_error(v, c.verify_signature());
        }
        "sealed_command" => check_sealed_command(v),
        "sealed_command_fail" => {
            let keys = DeviceKeys::from_secret_bytes(&bytes(v, "device_secret_keys")).unwrap();
            expect_error(v, envelope::open_command(&bytes(v, "envelope"), &keys.kem));
        }
        "signed_response" => {
            let r = SignedResponse::from_bytes(&bytes(&v["response"], "bytes")).unwrap();
            assert_eq!(response_json(&r), v["response"]);
            let identity = public_key(v, "device_identity");
            r.verify(&identity, &r.response.device, &r.response.command)
                .unwrap();
        }
        "signed_response_fail" => {
            let r = SignedResponse::from_bytes(&bytes(v, "bytes")).unwrap();
            let result = r.verify(
                &public_key(v, "device_identity"),
                &DeviceId(array(v, "device")),
                &CommandId(array(v, "command_id")),
            );
            expect_error(v, result);
        }
        "response_exchange" => check_response_exchange(v),
        "audit_run" => {
            let entries = audit_run(v);
            let identity = public_key(v, "device_identity");
            latchkey_proto::audit::verify_entries(&entries, &identity, None).unwrap();
            if let Some(args) = v.get("args") {
                let digest = latchkey_proto::audit::ArgsDigest::of(&bytes(v, "args"));
                assert_eq!(h(digest.hash), v["args_hash"], "{args}");
            }
        }
        "audit_run_fail" => {
            let entries = audit_run(v);
            let identity = public_key(v, "device_identity");
            let broken =
                latchkey_proto::audit::verify_entries(&entries, &identity, None).unwrap_err();
            assert_eq!(s(v, "error"), "AuditBroken");
            assert_eq!(broken.seq, u(v, "broken_seq"), "{broken}");
        }
        "audit_page" => {
            let page = latchkey_proto::audit::AuditPage::from_bytes(&bytes(v, "bytes")).unwrap();
            assert_eq!(h(page.to_bytes()), s(v, "bytes"));
            assert_eq!(
                (page.oldest, page.next_seq),
                (u(v, "oldest"), u(v, "next_seq"))
            );
            let expected = v["entries"].as_array().unwrap();
            assert_eq!(page.entries.len(), expected.len());
            for (e, want) in page.entries.iter().zip(expected) {
                assert_eq!(e.entry.seq, u(want, "seq"));
                assert_eq!(h(e.to_bytes()), s(want, "bytes"));
                assert_eq!(h(e.entry.hash()), s(want, "entry_hash"));
            }
            latchkey_proto::audit::verify_entries(
                &page.entries,
                &public_key(v, "device_identity"),
                None,
            )
            .unwrap();
        }
        "audit_page_fail" => {
            let page = latchkey_proto::audit::AuditPage::from_bytes(&bytes(v, "bytes")).unwrap();
            let broken = latchkey_proto::audit::verify_entries(
                &page.entries,
                &public_key(v, "device_identity"),
                None,
            )
            .unwrap_err();
            assert_eq!(s(v, "error"), "AuditBroken");
            assert_eq!(broken.seq, u(v, "broken_seq"), "{broken}");
        }
        "response_open_fail" => expect_error(
            v,
            open_response(
                &array(v, "response_key"),
                &bytes(v, "envelope"),
                &public_key(v, "device_identity"),
                &DeviceId(array(v, "device")),
                &CommandId(array(v, "command_id")),
            ),
        ),
        "freshness_window" => check_freshness_window(v),
        "strike_register" => check_strike_register(v),
        "challenge_book" => check_challenge_book(v),
        "owner_mailbox" => assert_eq!(
            h(latchkey_proto::hash::owner_mailbox(&public_key(
                v,
                "owner_public_key"
            ))),
            s(v, "mailbox_id")
        ),
        "device_mailbox" => assert_eq!(
            h(latchkey_proto::hash::device_mailbox(&DeviceId(array(
                v,
                "device_id"
            )))),
            s(v, "mailbox_id")
        ),
        "command_checks_fail" => expect_error(v, run_command_checks(v)),
        "reading"
        | "sealed_reading"
        | "sealed_reading_fail"
        | "key_grant"
        | "key_grant_fail"
        | "key_message"
        | "key_message_fail" => check_stream(v),
        "consent_request" | "consent_log" | "consent_log_fail" | "consent_next_fail"
        | "consent_link_fail" => check_consent(v),
        other => panic!("unknown vector type {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Freshness (PROTOCOL.md §6).

fn window(v: &Value) -> ReplayWindow {
    ReplayWindow {
        max_age_ms: u(&v["window"], "max_age_ms"),
        max_lead_ms: u(&v["window"], "max_lead_ms"),
    }
}

fn check_freshness_window(v: &Value) {
    let w = window(v);
    let (now, mark) = (u(v, "now_ms"), u(v, "mark_ms"));
    assert_eq!(w.floor(now, mark), u(v, "floor_ms"), "floor");
    assert_eq!(
        Some(w.clock_behind(now, mark)),
        v["clock_behind"].as_bool(),
        "clock_behind"
    );
    let result = w.check_time(now, mark, u(v, "timestamp_ms"));
    if v.get("error").is_some() {
        expect_error(v, result);
    } else {
        result.unwrap();
    }
}

fn decision(result: Result<(), Error>) -> String {
    match result {
        Ok(()) => "accept".to_owned(),
        Err(e) => variant(&e),
    }
}

fn check_strike_register(v: &Value) {
    let w = window(v);
    let mut store = MemoryNonceStore::default();
    for (i, step) in v["steps"].as_array().unwrap().iter().enumerate() {
        let (now, mark) = (u(step, "now_ms"), u(step, "mark_ms"));
        match s(step, "step") {
            "command" => {
                let got = decision(w.check(
                    now,
                    mark,
                    u(step, "timestamp_ms"),
                    &array(step, "nonce"),
                    &mut store,
                ));
                assert_eq!(got, s(step, "expect"), "step {i}");
            }
            "forget" => {
                let floor = w.floor(now, mark);
                assert_eq!(floor, u(step, "floor_ms"), "step {i}: floor");
                store.forget_before(floor).unwrap();
            }
            other => panic!("unknown step {other:?}"),
        }
        assert_eq!(
            store.len() as u64,
            u(step, "remembered"),
            "step {i}: remembered"
        );
    }
}

fn check_challenge_book(v: &Value) {
    let mut book = ChallengeBook::with_limits(
        u(v, "capacity") as usize,
        u(v, "per_sender") as usize,
        u(v, "lifetime_ms"),
    );
    // Challenges are random: the labels name them, the bytes in the file are one run's.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut issued: Vec<(String, [u8; 16])> = Vec::new();
    for (i, step) in v["steps"].as_array().unwrap().iter().enumerate() {
        let sender = public_key(step, "sender");
        let label = s(step, "label").to_owned();
        match s(step, "step") {
            "issue" => {
                let c = book.issue(&sender, u(step, "now_ms"), &mut rng);
                issued.push((label, c));
            }
            "redeem" => {
                let c = issued
                    .iter()
                    .find(|(l, _)| *l == label)
                    .map(|(_, c)| *c)
                    .unwrap_or_else(|| array(step, "challenge"));
                let got = decision(book.redeem(&sender, &c, u(step, "now_ms")));
                assert_eq!(got, s(step, "expect"), "step {i}");
            }
            other => panic!("unknown step {other:?}"),
        }
        assert_eq!(
            book.len() as u64,
            u(step, "outstanding"),
            "step {i}: outstanding"
        );
    }
}

/// A command's checks in the device's order (PROTOCOL.md §5.4): signature, device id, time
/// window, authority.
fn run_command_checks(v: &Value) -> Result<(), Error> {
    let chain = Chain::verify(ops(v, "chain_ops")).unwrap();
    let cmd = SignedCommand::from_bytes(&bytes(v, "command")).unwrap();
    cmd.verify_signature()?;
    if cmd.command.device != chain.state().device {
        return Err(Error::WrongDevice {
            what: "command".into(),
            expected: chain.state().device.to_string(),
            found: cmd.command.device.to_string(),
        });
    }
    window(v).check_time(u(v, "now_ms"), u(v, "mark_ms"), cmd.command.timestamp_ms)?;
    command::authorize(&cmd.command, chain.state(), u(v, "now_ms")).map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Reading vectors.

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("field {key:?} is missing or not a string"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("field {key:?} is missing or not a number"))
}

fn bytes(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(s(v, key)).unwrap_or_else(|e| panic!("field {key:?} is not hex: {e}"))
}

fn array<const N: usize>(v: &Value, key: &str) -> [u8; N] {
    bytes(v, key)
        .try_into()
        .unwrap_or_else(|_| panic!("field {key:?} is not {N} bytes"))
}

fn public_key(v: &Value, key: &str) -> PublicKey {
    PublicKey::from_bytes(array(v, key)).unwrap()
}

fn hex_list(v: &Value, key: &str) -> Vec<Vec<u8>> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("field {key:?} is not a list"))
        .iter()
        .map(|x| hex::decode(x.as_str().unwrap()).unwrap())
        .collect()
}

fn ops(v: &Value, key: &str) -> Vec<Op> {
    hex_list(v, key)
        .iter()
        .map(|b| Op::from_bytes(b).unwrap())
        .collect()
}

fn path_indices(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| u32::try_from(i.as_u64().unwrap()).unwrap())
        .collect()
}

fn expect_error<T>(v: &Value, result: Result<T, Error>) {
    let expected = s(v, "error");
    match result {
        Ok(_) => panic!("accepted; expected {expected}"),
        Err(e) => assert_eq!(variant(&e), expected, "got {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Generic decoding.

fn decode(codec: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
    fn rt<T: Codec>(input: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(T::from_bytes(input)?.to_bytes())
    }
    match codec {
        "PublicKey" => rt::<PublicKey>(input),
        "Signature" => rt::<Signature>(input),
        "DeviceId" => rt::<DeviceId>(input),
        "KemPublicKey" => rt::<KemPublicKey>(input),
        "KemCiphertext" => rt::<KemCiphertext>(input),
        "Op" => rt::<Op>(input),
        "OpList" => rt::<OpList>(input),
        "Grant" => rt::<Grant>(input),
        "SignedCommand" => rt::<SignedCommand>(input),
        "SignedResponse" => rt::<SignedResponse>(input),
        "ClaimPayload" => rt::<ClaimPayload>(input),
        "Invitation" => rt::<Invitation>(input),
        "SignedEntry" => rt::<latchkey_proto::audit::SignedEntry>(input),
        "AuditPage" => rt::<latchkey_proto::audit::AuditPage>(input),
        "SignedEvent" => rt::<latchkey_proto::event::SignedEvent>(input),
        "EventMessage" => rt::<latchkey_proto::event::EventMessage>(input),
        "Reading" => rt::<latchkey_proto::stream::Reading>(input),
        "SignedConsentRequest" => rt::<latchkey_proto::consent::SignedConsentRequest>(input),
        "ConsentEntry" => rt::<latchkey_proto::consent::ConsentEntry>(input),
        "ConsentList" => rt::<latchkey_proto::consent::ConsentList>(input),
        other => panic!("unknown codec {other:?}"),
    }
}

/// The entries of an `audit_run` vector: each decodes, re-encodes to its bytes and has its
/// `entry_hash`.
fn audit_run(v: &Value) -> Vec<latchkey_proto::audit::SignedEntry> {
    v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let raw = bytes(e, "bytes");
            let entry = latchkey_proto::audit::SignedEntry::from_bytes(&raw).unwrap();
            assert_eq!(entry.to_bytes(), raw);
            assert_eq!(entry.entry.seq, u(e, "seq"));
            assert_eq!(entry.entry.body.kind_name(), s(e, "kind"));
            assert_eq!(h(entry.entry.hash()), e["entry_hash"]);
            entry
        })
        .collect()
}

fn check_decode(v: &Value) {
    let input = bytes(v, "bytes");
    let result = decode(s(v, "codec"), &input);
    if v.get("error").is_some() {
        expect_error(v, result);
    } else {
        assert_eq!(h(result.unwrap()), h(&input), "re-encoding differs");
    }
}

// ---------------------------------------------------------------------------------------------
// Keys.

fn check_recovery_phrase(v: &Value) {
    let phrase = RecoveryPhrase::from_entropy(&array(v, "entropy"));
    assert_eq!(phrase.phrase(), s(v, "phrase"));
    let parsed = RecoveryPhrase::parse(s(v, "phrase")).unwrap();
    assert_eq!(parsed.phrase(), s(v, "phrase"));
    let seed = parsed.to_seed_with_passphrase(s(v, "passphrase"));
    assert_eq!(h(seed.as_bytes()), s(v, "seed"));
    for k in v["keys"].as_array().unwrap() {
        let (purpose, segment) = match s(k, "purpose") {
            "owner-identity" => (KeyPurpose::OwnerIdentity, 0),
            "guest" => (KeyPurpose::Guest, 1),
            "consent" => (KeyPurpose::Consent, 2),
            other => panic!("unknown purpose {other}"),
        };
        let index = u32::try_from(u(k, "index")).unwrap();
        let path = format!("m/{}'/{segment}'/{index}'", keys::PURPOSE);
        assert_eq!(s(k, "path"), path, "documented path");
        let key = seed.derive(purpose, index).unwrap();
        assert_eq!(h(key.to_bytes().as_slice()), s(k, "secret_key"));
        assert_eq!(pk_hex(&key.public_key()), s(k, "public_key"));
        assert_eq!(key.public_key().to_string(), s(k, "public_key_text"));
        assert_eq!(
            PublicKey::parse(s(k, "public_key_text")).unwrap(),
            key.public_key()
        );
        let by_path =
            keys::derive_ed25519(seed.as_bytes(), &[keys::PURPOSE, segment, index]).unwrap();
        assert_eq!(h(by_path.to_bytes().as_slice()), s(k, "secret_key"));
    }
}

fn check_device_keys(v: &Value) {
    let file = bytes(v, "secret_key_file");
    let keys = DeviceKeys::from_secret_bytes(&file).unwrap();
    assert_eq!(h(keys.to_secret_bytes().as_slice()), h(&file));
    let identity = keys.identity.public_key();
    assert_eq!(pk_hex(&identity), s(v, "identity_public_key"));
    assert_eq!(identity.to_string(), s(v, "identity_public_key_text"));
    assert_eq!(
        PublicKey::parse(s(v, "identity_public_key_text")).unwrap(),
        identity
    );
    assert_eq!(pk_hex(&keys.setup.public_key()), s(v, "setup_public_key"));
    let kem = keys.kem.public();
    assert_eq!(h(kem.to_bytes()), s(v, "kem_public_key"));
    let decoded = KemPublicKey::from_bytes(&bytes(v, "kem_public_key")).unwrap();
    assert_eq!(decoded, *kem);
    assert_eq!(h(kem.commitment()), s(v, "kem_commitment"));
    let id = keys.device_id();
    assert_eq!(id, DeviceId::from_identity(&identity));
    assert_eq!(h(id.0), s(v, "device_id"));
    assert_eq!(id.to_string(), s(v, "device_id_text"));
    assert_eq!(DeviceId::parse(s(v, "device_id_text")).unwrap(), id);
    assert_eq!(id.short(), s(v, "device_id_short"));
}

fn check_text_fail(v: &Value) {
    let text = s(v, "text");
    match s(v, "kind") {
        "public-key" => expect_error(v, PublicKey::parse(text)),
        "device-id" => expect_error(v, DeviceId::parse(text)),
        other => panic!("unknown kind {other}"),
    }
}

/// A signature Latchkey's verifier (ZIP-215) accepts.
fn check_signature(v: &Value) {
    check_strict_claim(v);
    let key = PublicKey::from_bytes(array(v, "public_key")).unwrap();
    assert!(key.verify(&Signature(array(v, "signature")), &bytes(v, "message")));
}

/// The informational `cofactorless_strict_accepts` field says what a strict verifier decides.
fn check_strict_claim(v: &Value) {
    assert_eq!(
        v["cofactorless_strict_accepts"].as_bool().unwrap(),
        cofactorless_strict_accepts(
            &array(v, "public_key"),
            &array(v, "signature"),
            &bytes(v, "message")
        )
    );
}

fn check_bip39(v: &Value) {
    let entropy: [u8; 32] = array(v, "entropy");
    let mnemonic = s(v, "mnemonic");
    assert_eq!(RecoveryPhrase::from_entropy(&entropy).phrase(), mnemonic);
    let parsed = RecoveryPhrase::parse(mnemonic).unwrap();
    assert_eq!(parsed.phrase(), mnemonic);
    let seed = parsed.to_seed_with_passphrase(s(v, "passphrase"));
    assert_eq!(h(seed.as_bytes()), s(v, "seed"));
}

fn check_slip10(v: &Value) {
    let key = keys::derive_ed25519(&bytes(v, "seed"), &path_indices(&v["path"])).unwrap();
    assert_eq!(h(key.to_bytes().as_slice()), s(v, "private"));
    // SLIP-0010 writes Ed25519 public keys as 0x00 || key.
    assert_eq!(format!("00{}", pk_hex(&key.public_key())), s(v, "public"));
}

// ---------------------------------------------------------------------------------------------
// Claim codes.

fn check_claim(v: &Value) {
    let expected = &v["claim"];
    let from_text = ClaimPayload::parse(s(expected, "text")).unwrap();
    assert_eq!(claim_json(&from_text), *expected);
    let from_bytes = ClaimPayload::from_bytes(&bytes(expected, "bytes")).unwrap();
    assert_eq!(claim_json(&from_bytes), *expected);
    for variant in v["text_variants"].as_array().unwrap() {
        let p = ClaimPayload::parse(variant.as_str().unwrap()).unwrap();
        assert_eq!(h(p.to_bytes()), s(expected, "bytes"), "variant {variant}");
    }
    let kem = KemPublicKey::from_bytes(&bytes(v, "kem_public_key")).unwrap();
    from_text.check_kem(&kem).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Invitations.

fn check_invitation(v: &Value) {
    let expected = &v["invitation"];
    let from_link = Invitation::parse_link(s(expected, "link")).unwrap();
    assert_eq!(invitation_json(&from_link), *expected);
    let from_bytes = Invitation::from_bytes(&bytes(expected, "bytes")).unwrap();
    from_bytes.check().unwrap();
    assert_eq!(invitation_json(&from_bytes), *expected);
    assert_eq!(
        pk_hex(&from_link.leaf().body.subject),
        s(expected, "guest_public_key"),
        "the guest key is the last grant's subject"
    );
    for (g, e) in from_link
        .grants
        .iter()
        .zip(expected["grants"].as_array().unwrap())
    {
        assert_eq!(h(g.to_bytes()), s(e, "bytes"));
        g.verify_signature().unwrap();
    }
    for variant in v["text_variants"].as_array().unwrap() {
        let i = Invitation::parse_link(variant.as_str().unwrap()).unwrap();
        assert_eq!(h(i.to_bytes()), s(expected, "bytes"), "variant {variant}");
    }
    // The version 1 layout (a one-door long link) reads as the same invitation.
    if expected.get("v1_bytes").is_some() {
        let old = Invitation::from_bytes(&bytes(expected, "v1_bytes")).unwrap();
        assert_eq!(invitation_json(&old), *expected);
    }
}

fn check_short_link(v: &Value) {
    let expected = &v["link"];
    let link = ShortLink::parse(s(expected, "text")).unwrap();
    assert_eq!(h(link.to_bytes()), s(expected, "bytes"));
    assert_eq!(h(link.secret.as_slice()), s(expected, "secret"));
    assert_eq!(json!(link.nodes), expected["nodes"]);
    assert_eq!(h(link.blob_id()), s(expected, "blob_id"));
    assert_eq!(h(link.key().as_slice()), s(expected, "key"));
    assert_eq!(link.to_text().unwrap().as_str(), s(expected, "text"));
    for variant in v["text_variants"].as_array().unwrap() {
        assert!(ShortLink::parse(variant.as_str().unwrap()).unwrap() == link);
    }
}

// ---------------------------------------------------------------------------------------------
// Ownership chain.

fn check_chain(v: &Value) {
    let list = OpList::from_bytes(&bytes(v, "op_list")).unwrap();
    assert_eq!(h(list.to_bytes()), s(v, "op_list"));
    let expected = v["ops"].as_array().unwrap();
    assert_eq!(list.0.len(), expected.len());
    for (op, e) in list.0.iter().zip(expected) {
        let single = Op::from_bytes(&bytes(&e["op"], "bytes")).unwrap();
        assert_eq!(&single, op);
        assert_eq!(op_json(op), e["op"], "op {}", op.seq);
    }
    // Each op's state: the chain verified up to and including it.
    for (i, e) in expected.iter().enumerate() {
        let upto = Chain::verify(list.0[..=i].to_vec()).unwrap();
        assert_eq!(
            state_json(upto.state()),
            e["state_after"],
            "state after op {i}"
        );
    }
    let chain = Chain::verify(list.0.clone()).unwrap();
    assert_eq!(h(chain.head().0), s(v, "head"));
    if v.get("chain_ops").is_some() {
        assert_eq!(
            h(OpList(chain.ops().to_vec()).to_bytes()),
            s(v, "chain_ops")
        );
    }
}

fn check_chain_merge(v: &Value) {
    let ours = OpList::from_bytes(&bytes(v, "ours")).unwrap().0;
    let theirs = OpList::from_bytes(&bytes(v, "theirs")).unwrap().0;
    let mut chain = Chain::verify(ours).unwrap();
    let report = chain.merge(&theirs);
    assert_eq!(report.invalid, None);
    let seq = |f: &Option<latchkey_proto::chain::ForkEvidence>| f.as_ref().map(|f| f.seq);
    assert_eq!(report.added as u64, v["added"].as_u64().unwrap(), "added");
    assert_eq!(report.behind, v["behind"].as_bool().unwrap(), "behind");
    assert_eq!(seq(&report.fork), v["fork_seq"].as_u64(), "fork");
    assert_eq!(
        seq(&report.switched),
        v["switched_seq"].as_u64(),
        "switched"
    );
    assert_eq!(
        seq(&report.outvoted),
        v["outvoted_seq"].as_u64(),
        "outvoted"
    );
    assert_eq!(report.unanchored as u64, v["unanchored"].as_u64().unwrap());
    assert_eq!(
        h(OpList(chain.ops().to_vec()).to_bytes()),
        s(v, "ops_after")
    );
    assert_eq!(state_json(chain.state()), v["state_after"]);
}

fn check_op(v: &Value) {
    let prefix = ops(v, "prefix");
    let op = Op::from_bytes(&bytes(&v["op"], "bytes")).unwrap();
    assert_eq!(op_json(&op), v["op"]);
    let state = if prefix.is_empty() {
        Chain::from_genesis(op).unwrap().state().clone()
    } else {
        Chain::verify(prefix).unwrap().check_next(&op).unwrap()
    };
    assert_eq!(state_json(&state), v["state_after"]);
}

fn check_chain_fail(v: &Value) {
    let prefix = ops(v, "prefix");
    let op = Op::from_bytes(&bytes(v, "op")).unwrap();
    let result = if prefix.is_empty() {
        Chain::verify(vec![op]).map(|_| ())
    } else {
        Chain::verify(prefix).unwrap().check_next(&op).map(|_| ())
    };
    expect_error(v, result);
}

// ---------------------------------------------------------------------------------------------
// Grants.

/// A weekly schedule: the specs parse to the value, the value decodes to the windows, and each
/// recorded instant is allowed (and next opens) as the vector says.
fn check_schedule(v: &Value) {
    let specs: Vec<&str> = v["specs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let parsed = WeeklySchedule::parse_spec(&specs, s(v, "tz")).unwrap();
    let value = bytes(v, "value");
    assert_eq!(parsed.encode(), value);
    let decoded = WeeklySchedule::decode(&value).unwrap();
    assert_eq!(decoded, parsed);
    assert_eq!(decoded.tz_name(), s(v, "canonical_tz"));
    let windows: Vec<Value> = decoded
        .windows()
        .iter()
        .map(|w| json!({"days": w.days.bits(), "start_min": w.start_min, "end_min": w.end_min}))
        .collect();
    assert_eq!(json!(windows), v["windows"]);
    assert_eq!(decoded.describe(), s(v, "description_text"));
    for c in v["checks"].as_array().unwrap() {
        let t = u(c, "t_ms");
        assert_eq!(decoded.allows(t), c["allows"].as_bool().unwrap(), "at {t}");
        assert_eq!(
            decoded.next_open_ms(t),
            c["next_open_ms"].as_u64(),
            "at {t}"
        );
    }
}

/// Verifies the vector's grant chain against the state of its chain ops; returns the use
/// limits the device must count.
fn run_grant_chain(v: &Value) -> Result<Value, Error> {
    let chain = Chain::verify(ops(v, "chain_ops")).unwrap();
    let grants: Vec<Grant> = hex_list(v, "grants")
        .iter()
        .map(|b| Grant::from_bytes(b).unwrap())
        .collect();
    let req = &v["request"];
    let approval = grant::verify_grant_chain(
        &grants,
        chain.state(),
        &GrantRequest {
            device: &DeviceId(array(req, "device")),
            sender: &public_key(req, "sender"),
            action: s(req, "action"),
            args: &bytes(req, "args"),
            now_ms: u(req, "now_ms"),
        },
    )?;
    Ok(json!(approval
        .use_limits
        .iter()
        .map(|(id, limit)| json!({"grant_id": h(id.0), "limit": limit}))
        .collect::<Vec<_>>()))
}

// ---------------------------------------------------------------------------------------------
// Commands and responses.

/// Decodes the vector's signed command, checks its signature, and authorizes it against the
/// state of its chain ops at `now_ms`.
fn run_authorize(v: &Value) -> Result<Authorization, Error> {
    let chain = Chain::verify(ops(v, "chain_ops")).unwrap();
    let cmd = SignedCommand::from_bytes(&bytes(v, "command")).unwrap();
    cmd.verify_signature().unwrap();
    // `bindings`, where present: the device's stored redemptions (grant id -> bound key).
    let bindings: Vec<(GrantId, PublicKey)> = v
        .get("bindings")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|b| {
                    (
                        GrantId(bytes(b, "grant_id").try_into().unwrap()),
                        PublicKey::from_bytes(bytes(b, "key").try_into().unwrap()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let lookup = |id: &GrantId| bindings.iter().find(|(g, _)| g == id).map(|(_, k)| *k);
    command::authorize_bound(&cmd.command, chain.state(), u(v, "now_ms"), &lookup)
}

fn check_sealed_command(v: &Value) {
    let keys = DeviceKeys::from_secret_bytes(&bytes(v, "device_secret_keys")).unwrap();
    let env = bytes(v, "envelope");
    let opened = envelope::open_command(&env, &keys.kem).unwrap();
    assert_eq!(h(opened.command.to_bytes()), s(v, "command"));
    assert_eq!(h(opened.command.command.id().0), s(v, "command_id"));
    opened.command.verify_signature().unwrap();

    // The keys the hybrid KEM yields, and the padded plaintext under the command key.
    let ct =
        KemCiphertext::from_bytes(&env[KEM_CT_AT..KEM_CT_AT + kem::KEM_CIPHERTEXT_LEN]).unwrap();
    let shared = keys.kem.decapsulate(&ct).unwrap();
    assert_eq!(h(shared.command_key().as_slice()), s(v, "command_key"));
    assert_eq!(h(shared.response_key().as_slice()), s(v, "response_key"));
    let nonce: [u8; 24] = env[COMMAND_HEADER_LEN - kem::AEAD_NONCE_LEN..COMMAND_HEADER_LEN]
        .try_into()
        .unwrap();
    let padded = kem::aead_open(
        &shared.command_key(),
        &nonce,
        &env[..COMMAND_HEADER_LEN],
        &env[COMMAND_HEADER_LEN..],
    )
    .unwrap();
    assert_eq!(padded.len() as u64, u(v, "padded_len"));
    assert_eq!(h(pad::unpad(&padded).unwrap()), s(v, "command"));
}

/// Opens a response envelope with the response key, as a sender does: the 26-byte header
/// (version, kind, nonce) is the associated data; then unpadding, decoding and verification.
fn open_response(
    key: &[u8; 32],
    env: &[u8],
    identity: &PublicKey,
    device: &DeviceId,
    command: &CommandId,
) -> Result<SignedResponse, Error> {
    assert!(env.len() > RESPONSE_HEADER_LEN, "vector envelope too short");
    let nonce: [u8; 24] = env[2..RESPONSE_HEADER_LEN].try_into().unwrap();
    let padded = kem::aead_open(
        key,
        &nonce,
        &env[..RESPONSE_HEADER_LEN],
        &env[RESPONSE_HEADER_LEN..],
    )?;
    let response = SignedResponse::from_bytes(pad::unpad(&padded)?)?;
    response.verify(identity, device, command)?;
    Ok(response)
}

fn check_response_exchange(v: &Value) {
    let keys = DeviceKeys::from_secret_bytes(&bytes(v, "device_secret_keys")).unwrap();
    let identity = public_key(v, "device_identity");
    assert_eq!(keys.identity.public_key(), identity);
    let device = DeviceId(array(v, "device"));
    assert_eq!(keys.device_id(), device);

    let cmd_env = bytes(v, "command_envelope");
    let opened = envelope::open_command(&cmd_env, &keys.kem).unwrap();
    assert_eq!(h(opened.command.to_bytes()), s(v, "command"));
    let command_id = opened.command.command.id();
    assert_eq!(h(command_id.0), s(v, "command_id"));

    let ct = KemCiphertext::from_bytes(&cmd_env[KEM_CT_AT..KEM_CT_AT + kem::KEM_CIPHERTEXT_LEN])
        .unwrap();
    let key = keys.kem.decapsulate(&ct).unwrap().response_key();
    assert_eq!(h(key.as_slice()), s(v, "response_key"));

    let response = open_response(
        &key,
        &bytes(v, "response_envelope"),
        &identity,
        &device,
        &command_id,
    )
    .unwrap();
    assert_eq!(h(response.to_bytes()), s(v, "response"));
}

/// A signed event: decodes to its fields, re-encodes to its bytes, and verifies with the
/// device's identity key.
fn check_event(v: &Value) {
    use latchkey_proto::event::{EventKind, SignedEvent};
    let signed = SignedEvent::from_bytes(&bytes(v, "signed_event")).unwrap();
    assert_eq!(h(signed.to_bytes()), s(v, "signed_event"));
    signed.verify(&public_key(v, "device_identity")).unwrap();
    let fields = &v["event"];
    let e = &signed.event;
    assert_eq!(h(e.device.0), s(fields, "device"));
    assert_eq!(e.seq, u(fields, "seq"));
    assert_eq!(e.time_ms, fields["time_ms"].as_u64());
    let (kind, code) = match e.kind {
        EventKind::FirstOpen => ("first_open", None),
        EventKind::Redeemed => ("redeemed", None),
        EventKind::Refused { code } => ("refused", Some(u64::from(code))),
    };
    assert_eq!(kind, s(fields, "kind"));
    assert_eq!(code, fields["reject_code"].as_u64());
    assert_eq!(h(e.grant.0), s(fields, "grant"));
    assert_eq!(pk_hex(&e.guest), s(fields, "guest"));
    assert_eq!(e.action, s(fields, "action"));
}

/// A sealed event message: decodes, re-encodes, passes the node's check (device signature)
/// and opens, for the owner whose mailbox it names, to the signed event.
fn check_event_message(v: &Value) {
    use latchkey_proto::event::EventMessage;
    let keys = DeviceKeys::from_secret_bytes(&bytes(v, "reader_secret_keys")).unwrap();
    let raw = bytes(v, "message");
    assert!(EventMessage::is_event_message(&raw));
    let message = EventMessage::from_bytes(&raw).unwrap();
    assert_eq!(message.to_bytes(), raw);
    let identity = public_key(v, "device_identity");
    message.verify(&identity).unwrap();
    let mailbox: [u8; 32] = array(v, "mailbox_id");
    assert_eq!(
        h(latchkey_proto::hash::owner_mailbox(&public_key(
            v,
            "owner_public_key"
        ))),
        h(mailbox)
    );
    let opened = message.open(&identity, &mailbox, &keys.kem).unwrap();
    assert_eq!(h(opened.to_bytes()), s(v, "signed_event"));
}

// ---------------------------------------------------------------------------------------------
// Data streams and consent (PROTOCOL.md §14).

fn check_stream(v: &Value) {
    use latchkey_proto::stream::{self, KeyGrant, Reading, StreamKey, READING_BLOCK};
    match s(v, "type") {
        "reading" => {
            let r = Reading::from_bytes(&bytes(v, "bytes")).unwrap();
            assert_eq!(reading_json(&r), v["reading"]);
            assert_eq!(h(r.to_bytes()), s(v, "bytes"));
            let view = r.view();
            assert_eq!(serde_json::to_value(&view).unwrap(), v["view"]);
            assert_eq!(stream::ReadingView::csv_header(), s(v, "csv_header"));
            assert_eq!(view.csv_row(), s(v, "csv_row"));
        }
        "sealed_reading" => {
            // Rebuilt from the spec's parts with the raw AEAD, then opened by the library.
            let key = StreamKey::from_bytes(array(v, "stream_key"));
            let device = DeviceId(array(v, "device"));
            let name = s(v, "stream");
            assert_eq!(h(*key.reading_key(&device, name)), s(v, "reading_key"));
            let mut header = vec![1u8, 5];
            header.extend_from_slice(&device.0);
            header.push(name.len() as u8);
            header.extend_from_slice(name.as_bytes());
            header.extend_from_slice(&(u(v, "key_id") as u32).to_be_bytes());
            header.extend_from_slice(&u(v, "seq").to_be_bytes());
            header.extend_from_slice(&bytes(v, "nonce"));
            assert_eq!(h(&header), s(v, "header"));
            let reading = bytes(v, "reading");
            let mut block = vec![0u8; READING_BLOCK];
            block[..2].copy_from_slice(&(reading.len() as u16).to_be_bytes());
            block[2..2 + reading.len()].copy_from_slice(&reading);
            let sealed = kem::aead_seal(
                &key.reading_key(&device, name),
                &array(v, "nonce"),
                &header,
                &block,
            );
            let frame = [header, sealed].concat();
            assert_eq!(h(&frame), s(v, "frame"));
            assert_eq!(frame.len(), stream::sealed_reading_len(name));
            let (head, opened) = stream::open_reading(&frame, &key).unwrap();
            assert_eq!(
                (head.key_id as u64, head.seq),
                (u(v, "key_id"), u(v, "seq"))
            );
            assert_eq!(h(opened.to_bytes()), s(v, "reading"));
            assert_eq!(stream::peek_reading(&frame).unwrap(), head);
        }
        "sealed_reading_fail" => expect_error(
            v,
            stream::open_reading(
                &bytes(v, "frame"),
                &StreamKey::from_bytes(array(v, "stream_key")),
            ),
        ),
        "key_grant" => {
            let identity = public_key(v, "device_identity");
            let grant = KeyGrant::from_signed_bytes(&bytes(v, "signed_grant"), &identity).unwrap();
            assert_eq!(key_grant_json(&grant), v["grant"]);
        }
        "key_grant_fail" => expect_error(
            v,
            KeyGrant::from_signed_bytes(&bytes(v, "signed_grant"), &public_key(v, "checked_with")),
        ),
        "key_message" | "key_message_fail" => {
            let keys = DeviceKeys::from_secret_bytes(&bytes(v, "reader_secret_keys")).unwrap();
            let identity = public_key(v, "device_identity");
            let result = stream::open_key_grant(&bytes(v, "message"), &keys.kem, &identity);
            if v.get("error").is_some() {
                expect_error(v, result);
            } else {
                let message = bytes(v, "message");
                assert_eq!(message.len(), stream::KEY_MESSAGE_LEN);
                let expected =
                    KeyGrant::from_signed_bytes(&bytes(v, "signed_grant"), &identity).unwrap();
                assert_eq!(result.unwrap(), expected);
            }
        }
        other => unreachable!("{other}"),
    }
}

fn consent_chain(v: &Value) -> Chain {
    Chain::verify(ops(v, "chain")).unwrap()
}

fn consent_entries(v: &Value, key: &str) -> Vec<latchkey_proto::consent::ConsentEntry> {
    hex_list(v, key)
        .iter()
        .map(|b| latchkey_proto::consent::ConsentEntry::from_bytes(b).unwrap())
        .collect()
}

fn expect_refusal<T: std::fmt::Debug>(v: &Value, result: Result<T, Error>) {
    match &result {
        Err(Error::ConsentRefused { why, .. }) => assert_eq!(*why, s(v, "why")),
        other => panic!("expected ConsentRefused, got {other:?}"),
    }
    expect_error(v, result);
}

fn check_consent(v: &Value) {
    use latchkey_proto::consent::{ConsentEntry, ConsentList, ConsentLog, SignedConsentRequest};
    match s(v, "type") {
        "consent_request" => {
            let r = SignedConsentRequest::from_bytes(&bytes(v, "bytes")).unwrap();
            r.verify().unwrap();
            assert_eq!(consent_request_json(&r), v["request"]);
            assert_eq!(r.to_link(), s(v, "link"));
            let lower = s(v, "link").to_lowercase();
            assert_eq!(SignedConsentRequest::from_link(&lower).unwrap(), r);
        }
        "consent_log" => {
            let chain = consent_chain(v);
            let list = ConsentList::from_bytes(&bytes(v, "list")).unwrap();
            let expected = v["entries"].as_array().unwrap();
            assert_eq!(list.0.len(), expected.len());
            for (e, want) in list.0.iter().zip(expected) {
                assert_eq!(&consent_entry_json(e), want);
                assert_eq!(
                    h(ConsentEntry::from_bytes(&bytes(want, "bytes"))
                        .unwrap()
                        .to_bytes()),
                    s(want, "bytes")
                );
            }
            let log = ConsentLog::verify(&chain, list.0).unwrap();
            let consents: Vec<Value> = log.consents().iter().map(consent_status_json).collect();
            assert_eq!(Value::from(consents), v["consents"]);
            for probe in v["readers_at"].as_array().unwrap() {
                let ids: Vec<String> = log
                    .readers_at(u(probe, "time_ms"))
                    .iter()
                    .map(|c| c.id.to_string())
                    .collect();
                assert_eq!(json!(ids), probe["consent_ids"]);
            }
        }
        "consent_log_fail" => {
            let chain = consent_chain(v);
            expect_refusal(v, ConsentLog::verify(&chain, consent_entries(v, "entries")));
        }
        "consent_next_fail" => {
            let chain = consent_chain(v);
            let log = ConsentLog::verify(&chain, consent_entries(v, "entries")).unwrap();
            let next = ConsentEntry::from_bytes(&bytes(v, "next")).unwrap();
            expect_refusal(v, log.check_next(&chain, &next));
        }
        "consent_link_fail" => expect_error(v, SignedConsentRequest::from_link(s(v, "text"))),
        other => unreachable!("{other}"),
    }
}
