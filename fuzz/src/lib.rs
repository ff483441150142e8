//! One entry per fuzz target. Each feeds its input to the decoder the product uses and, when the
//! input decodes, checks that the value re-encodes to exactly the input (every encoding has one
//! parse and every value one encoding) and decodes again to the same value.
//!
//! This file is the fuzz crate's library and is also compiled, unchanged, into
//! `crates/latchkey-proto/tests/fuzz_corpus.rs`, which replays `fuzz/corpus/<target>/` through
//! [`TARGETS`] as an ordinary test. It may use only `latchkey_proto`, `rand_chacha` and std.

use std::fmt::Debug;
use std::sync::OnceLock;

use latchkey_proto::chain::{Chain, Op, OpList};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, ReplyTo, SignedCommand, SignedResponse};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::{self, PendingReply};
use latchkey_proto::grant::{AllowedArguments, Grant};
use latchkey_proto::invite::Invitation;
use latchkey_proto::keys::{DeviceId, PublicKey, RecoveryPhrase};
use latchkey_proto::pad;
use latchkey_proto::schedule::WeeklySchedule;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A target's entry: takes any input; panics only on a bug.
pub type Entry = fn(&[u8]);

/// Every target: the name of its binary and of its corpus directory, and its entry.
pub const TARGETS: &[(&str, Entry)] = &[
    ("op", op),
    ("op_list", op_list),
    ("grant", grant),
    ("allowed_arguments", allowed_arguments),
    ("schedule", schedule),
    ("command", command),
    ("response", response),
    ("claim_text", claim_text),
    ("claim_bytes", claim_bytes),
    ("invite_bytes", invite_bytes),
    ("invite_link", invite_link),
    ("public_key_text", public_key_text),
    ("device_id_text", device_id_text),
    ("recovery_phrase", recovery_phrase),
    ("envelope_open", envelope_open),
    ("response_open", response_open),
    ("unpad", unpad),
    ("device_key_file", device_key_file),
    ("event", event),
    ("event_message", event_message),
];

/// The device the envelope targets open for. Its key file is committed rather than generated,
/// because sntrup761 keys come from the OS and cannot be derived from a seed: with fixed keys
/// the sealed commands in `corpus/envelope_open/` decrypt in every run and the fuzzer mutates
/// real plaintexts' envelopes. (Made by `DeviceKeys::generate` with ChaCha20 seed 0x1a7c4b3e.)
pub const DEVICE_KEY_FILE: &[u8] = include_bytes!("../fixed-device.key");

pub fn device_keys() -> &'static DeviceKeys {
    static KEYS: OnceLock<DeviceKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        DeviceKeys::from_secret_bytes(DEVICE_KEY_FILE).expect("fuzz/fixed-device.key is valid")
    })
}

/// A command sealed once per process to [`device_keys`], so `response_open` has a reply to
/// wait for. Its key comes from a fresh sntrup761 encapsulation (OS randomness), so corpus
/// responses reach only the envelope checks before decryption; `unpad` and `response` cover
/// what lies behind it.
fn pending_reply() -> &'static PendingReply {
    static PENDING: OnceLock<PendingReply> = OnceLock::new();
    PENDING.get_or_init(|| {
        let keys = device_keys();
        let command = Command {
            device: keys.device_id(),
            sender: keys.setup.public_key(),
            action: "status".into(),
            args: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
            nonce: [7; 16],
            challenge: None,
            grants: Vec::new(),
            reply_to: ReplyTo::Direct,
        }
        .sign(&keys.setup)
        .expect("sender key signs");
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        envelope::seal_command(&command, keys.kem.public(), &mut rng)
            .expect("fixed command seals")
            .1
    })
}

/// Decodes one `T`; if it decodes, checks that its encoding is the input and decodes again to
/// the same value.
fn decoded<T: Codec + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let value = T::from_bytes(data).ok()?;
    let bytes = value.to_bytes();
    assert_eq!(bytes, data, "{} re-encodes differently", T::NAME);
    assert_eq!(T::from_bytes(&bytes).as_ref(), Ok(&value));
    Some(value)
}

pub fn op(data: &[u8]) {
    if let Some(op) = decoded::<Op>(data) {
        let _ = Chain::from_genesis(op);
    }
}

pub fn op_list(data: &[u8]) {
    if let Some(list) = decoded::<OpList>(data) {
        let _ = Chain::verify(list.0);
    }
}

pub fn grant(data: &[u8]) {
    if let Some(grant) = decoded::<Grant>(data) {
        let _ = grant.verify_signature();
    }
}

/// The allowed-arguments extension value on its own (the `grant` target reaches it only inside
/// a well-formed grant): what decodes has exactly one encoding and allows each of its strings.
pub fn allowed_arguments(data: &[u8]) {
    if let Ok(list) = AllowedArguments::decode(data) {
        assert_eq!(
            list.encode(),
            data,
            "allowed arguments re-encode differently"
        );
        assert!(list.as_slice().iter().all(|a| list.allows(a)));
        assert!(!list.allows(b""), "the empty string is never listed");
        let rebuilt = AllowedArguments::new(list.as_slice().iter().rev().cloned().collect());
        assert_eq!(rebuilt.as_ref(), Ok(&list));
    }
}

/// The weekly-schedule extension value (0x81) on its own: what decodes has exactly one
/// encoding, reads back from its CLI specs, and its next opening is an instant it allows.
pub fn schedule(data: &[u8]) {
    let Ok(s) = WeeklySchedule::decode(data) else {
        return;
    };
    assert_eq!(s.encode(), data, "a schedule re-encodes differently");
    let specs = s.to_specs();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    assert_eq!(
        WeeklySchedule::parse_spec(&specs, s.tz_name()).as_ref(),
        Ok(&s)
    );
    assert!(!s.describe().is_empty());
    // 2026-03-29T00:30Z and 2026-10-25T00:30Z (just before Europe's transitions), 2035, 0.
    for t in [
        1_774_744_200_000u64,
        1_792_888_200_000,
        2_051_222_400_000,
        0,
    ] {
        if let Some(open) = s.next_open_ms(t) {
            assert!(open >= t && s.allows(open), "next opening {open} from {t}");
        }
        if s.allows(t) {
            assert_eq!(s.next_open_ms(t), Some(t));
        }
    }
}

/// A signed event (the plaintext inside a sealed event): decodes canonically, and its
/// signature check against the fixed device never panics.
pub fn event(data: &[u8]) {
    if let Some(event) = decoded::<latchkey_proto::event::SignedEvent>(data) {
        let _ = event.verify(&device_keys().identity.public_key());
    }
}

/// An owner-mailbox event message, opened the way an owner's app opens one: the fixed device
/// is both the signer and (its KEM key standing in for an owner's event key) the reader, so
/// corpus messages sealed to it decrypt and the fuzzer mutates real sealed events.
pub fn event_message(data: &[u8]) {
    if let Some(message) = decoded::<latchkey_proto::event::EventMessage>(data) {
        let keys = device_keys();
        let identity = keys.identity.public_key();
        if let Ok(event) = message.open(&identity, &message.mailbox.clone(), &keys.kem) {
            assert_eq!(event.event.device, message.device);
            assert!(event.verify(&identity).is_ok());
        }
    }
}

pub fn command(data: &[u8]) {
    if let Some(command) = decoded::<SignedCommand>(data) {
        let _ = command.verify_signature();
    }
}

pub fn response(data: &[u8]) {
    if let Some(response) = decoded::<SignedResponse>(data) {
        let keys = device_keys();
        let answers = response.response.command;
        let _ = response.verify(&keys.identity.public_key(), &keys.device_id(), &answers);
    }
}

pub fn claim_bytes(data: &[u8]) {
    if let Some(claim) = decoded::<ClaimPayload>(data) {
        // The bytes limit allows more than a QR code holds, so the text may be refused.
        if let Ok(text) = claim.to_text() {
            assert_eq!(ClaimPayload::parse(&text).as_ref(), Ok(&claim));
        }
    }
}

pub fn claim_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(claim) = ClaimPayload::parse(text) {
        let canonical = claim.to_text().expect("a parsed claim code fits a QR code");
        assert_eq!(*canonical, text.trim().to_ascii_uppercase());
        assert_eq!(ClaimPayload::parse(&canonical).as_ref(), Ok(&claim));
        decoded::<ClaimPayload>(&claim.to_bytes()).expect("its bytes decode");
    }
}

pub fn invite_bytes(data: &[u8]) {
    if let Some(invitation) = decoded::<Invitation>(data) {
        // Decoding does not check signatures; a link is made only from one that checks.
        if let Ok(link) = invitation.to_link() {
            assert_eq!(Invitation::parse_link(&link).as_ref(), Ok(&invitation));
        }
    }
}

pub fn invite_link(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(invitation) = Invitation::parse_link(text) {
        let canonical = invitation
            .to_link()
            .expect("a parsed invitation makes a link");
        assert_eq!(Invitation::parse_link(&canonical).as_ref(), Ok(&invitation));
        decoded::<Invitation>(&invitation.to_bytes()).expect("its bytes decode");
    }
}

pub fn public_key_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = PublicKey::parse(text) {
        assert_eq!(PublicKey::parse(&key.to_string()), Ok(key));
        assert_eq!(decoded::<PublicKey>(&key.to_bytes()), Some(key));
    }
}

pub fn device_id_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = DeviceId::parse(text) {
        assert_eq!(DeviceId::parse(&id.to_string()), Ok(id));
        assert_eq!(decoded::<DeviceId>(&id.0), Some(id));
    }
}

pub fn recovery_phrase(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(phrase) = RecoveryPhrase::parse(text) {
        let again = RecoveryPhrase::parse(phrase.phrase()).expect("canonical phrase parses");
        assert_eq!(again.phrase(), phrase.phrase());
        assert_eq!(phrase.words().len(), RecoveryPhrase::WORDS);
    }
}

pub fn envelope_open(data: &[u8]) {
    if let Ok(opened) = envelope::open_command(data, &device_keys().kem) {
        let command = opened.command;
        assert_eq!(decoded::<SignedCommand>(&command.to_bytes()), Some(command));
    }
}

pub fn response_open(data: &[u8]) {
    let identity = device_keys().identity.public_key();
    let _ = pending_reply().open(data, &identity);
}

pub fn unpad(data: &[u8]) {
    if let Ok(message) = pad::unpad(data) {
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let padded = pad::pad(message, &mut rng).expect("an unpadded message pads again");
        assert!(padded.len() <= data.len());
        assert_eq!(pad::unpad(&padded), Ok(message));
    }
}

pub fn device_key_file(data: &[u8]) {
    if let Ok(keys) = DeviceKeys::from_secret_bytes(data) {
        assert_eq!(keys.to_secret_bytes().as_slice(), data);
        let _ = keys.device_id();
    }
}
