//! One entry per fuzz target. Each feeds its input to the decoder the product uses and, when the
//! input decodes, checks that the value re-encodes to exactly the input (every encoding has one
//! parse and every value one encoding) and decodes again to the same value.
//!
//! This file is the fuzz crate's library and is also compiled, unchanged, into
//! `crates/latchkey-proto/tests/fuzz_corpus.rs`, which replays `fuzz/corpus/<target>/` through
//! [`TARGETS`] as an ordinary test. It may use only `latchkey_proto`, `rand_chacha` and std.

use std::fmt::Debug;
use std::sync::OnceLock;

use latchkey_proto::chain::{Chain, Op, OpBody, OpList, OwnerSet};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Command, ReplyTo, SignedCommand, SignedResponse};
use latchkey_proto::consent::{
    ConsentEntry, ConsentList, ConsentLog, SignedConsentRequest, CONSENT_LINK_PREFIX,
};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::{self, PendingReply};
use latchkey_proto::grant::{AllowedArguments, Grant};
use latchkey_proto::invite::Invitation;
use latchkey_proto::kem;
use latchkey_proto::keys::{DeviceId, PublicKey, RecoveryPhrase, SigningKey};
use latchkey_proto::pad;
use latchkey_proto::schedule::WeeklySchedule;
use latchkey_proto::shortlink::{SealedInvitation, ShortLink};
use latchkey_proto::stream::{self, Reading, StreamKey};
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
    ("invitation_v2", invitation_v2),
    ("short_link_text", short_link_text),
    ("sealed_invitation", sealed_invitation),
    ("public_key_text", public_key_text),
    ("device_id_text", device_id_text),
    ("recovery_phrase", recovery_phrase),
    ("envelope_open", envelope_open),
    ("response_open", response_open),
    ("unpad", unpad),
    ("device_key_file", device_key_file),
    ("event", event),
    ("event_message", event_message),
    ("reading", reading),
    ("sealed_reading", sealed_reading),
    ("key_grant", key_grant),
    ("consent_request", consent_request),
    ("consent_link", consent_link),
    ("consent_entry", consent_entry),
    ("consent_list", consent_list),
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
    // A version 1 invitation decodes into the version 2 shape (one door); its own layout is
    // `to_v1_bytes`.
    if data.first() == Some(&1) {
        if let Ok(invitation) = Invitation::from_bytes(data) {
            let v1 = invitation
                .to_v1_bytes()
                .expect("a version 1 invitation has one door");
            assert_eq!(v1.as_slice(), data, "invitation v1 re-encodes differently");
            assert_eq!(
                Invitation::from_bytes(&invitation.to_bytes()).as_ref(),
                Ok(&invitation)
            );
        }
        return;
    }
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

/// The version 2 invitation layout (several doors), whatever the first byte: the fuzzer spends
/// its time past the version.
pub fn invitation_v2(data: &[u8]) {
    let mut input = Vec::with_capacity(data.len() + 1);
    input.push(2);
    input.extend_from_slice(data);
    if let Some(invitation) = decoded::<Invitation>(&input) {
        let _ = invitation.check();
    }
}

pub fn short_link_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(link) = ShortLink::parse(text) {
        let canonical = link.to_text().expect("a parsed short link prints");
        assert_eq!(*canonical, text.trim().to_ascii_uppercase());
        assert_eq!(ShortLink::parse(&canonical).as_ref(), Ok(&link));
        decoded::<ShortLink>(&link.to_bytes()).expect("its bytes decode");
    }
}

/// The link the sealed-invitation target opens blobs with.
pub fn fixed_short_link() -> ShortLink {
    ShortLink {
        secret: [9u8; 16].into(),
        nodes: vec!["http://127.0.0.1:7001".into()],
    }
}

/// A blob as fetched from a node, opened with a fixed link; and the input as a padded
/// plaintext sealed correctly for that link, so the fuzzer reaches unpadding and decoding.
pub fn sealed_invitation(data: &[u8]) {
    let link = fixed_short_link();
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    if let Ok(invitation) = SealedInvitation::open(&link, data) {
        let again = SealedInvitation::seal(&link, &invitation, &mut rng).expect("it seals again");
        assert_eq!(
            SealedInvitation::open(&link, &again).as_ref(),
            Ok(&invitation)
        );
    }
    let nonce = [3u8; 24];
    let sealed = kem::aead_seal(&link.key(), &nonce, &link.blob_id(), data);
    let blob = [&[1u8][..], &nonce, &sealed].concat();
    if let Ok(invitation) = SealedInvitation::open(&link, &blob) {
        let again = SealedInvitation::seal(&link, &invitation, &mut rng).expect("it seals again");
        assert_eq!(
            SealedInvitation::open(&link, &again).as_ref(),
            Ok(&invitation)
        );
    }
}

// --- data streams and consent (docs/PROTOCOL.md §14) ----------------------------------------

/// The stream key the stream targets seal and open with.
pub fn stream_key() -> StreamKey {
    StreamKey::from_bytes([5; 32])
}

/// The owner of [`consent_chain`].
pub fn consent_owner() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

/// The fixed device's chain, claimed by [`consent_owner`]: the consent targets verify logs
/// against it, so corpus entries signed by that owner verify and the fuzzer mutates real ones.
pub fn consent_chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let keys = device_keys();
        let t = 1_700_000_000_000;
        let mut chain =
            Chain::from_genesis(keys.genesis("Meter", t).expect("short name")).expect("genesis");
        let owner = consent_owner();
        let mut op = chain.propose(
            t,
            OpBody::Claim(OwnerSet {
                owners: vec![owner.public_key()],
                threshold: 1,
            }),
        );
        op.sign(&keys.setup);
        op.sign(&owner);
        chain.append(op).expect("a valid claim");
        chain
    })
}

/// A reading: decodes canonically, prints (JSON fields and a 26-cell CSV row) and survives
/// sealing and opening.
pub fn reading(data: &[u8]) {
    if let Some(reading) = decoded::<Reading>(data) {
        let view = reading.view();
        assert_eq!(view.csv_row().split(',').count(), 26);
        let key = stream_key();
        let device = device_keys().device_id();
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let frame = stream::seal_reading(&device, "p1", 1, &key, 9, &reading, &mut rng)
            .expect("a decoded reading seals");
        assert_eq!(frame.len(), stream::sealed_reading_len("p1"));
        let (_, opened) = stream::open_reading(&frame, &key).expect("it opens");
        assert_eq!(opened, reading);
    }
}

/// A frame from the broker, peeked and opened with the fixed key; and the input as the padded
/// block of a frame sealed correctly under that key, so the fuzzer reaches unpadding and the
/// reading decoder behind the AEAD.
pub fn sealed_reading(data: &[u8]) {
    let key = stream_key();
    let peeked = stream::peek_reading(data);
    if let Ok((header, reading)) = stream::open_reading(data, &key) {
        assert_eq!(peeked.as_ref(), Ok(&header));
        assert_eq!(data.len(), stream::sealed_reading_len(&header.stream));
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let again = stream::seal_reading(
            &header.device,
            &header.stream,
            header.key_id,
            &key,
            header.seq,
            &reading,
            &mut rng,
        )
        .expect("an opened reading seals again");
        assert_eq!(stream::open_reading(&again, &key), Ok((header, reading)));
    }
    let mut block = data.to_vec();
    block.resize(stream::READING_BLOCK, 0);
    let device = device_keys().device_id();
    let nonce = [3u8; 24];
    let mut header = vec![1u8, 5];
    header.extend_from_slice(&device.0);
    header.push(2);
    header.extend_from_slice(b"p1");
    header.extend_from_slice(&1u32.to_be_bytes());
    header.extend_from_slice(&7u64.to_be_bytes());
    header.extend_from_slice(&nonce);
    let sealed = kem::aead_seal(&key.reading_key(&device, "p1"), &nonce, &header, &block);
    let frame = [header, sealed].concat();
    if let Ok((h, reading)) = stream::open_reading(&frame, &key) {
        assert_eq!((h.key_id, h.seq), (1, 7));
        let len = usize::from(u16::from_be_bytes([block[0], block[1]]));
        assert_eq!(reading.to_bytes(), &block[2..2 + len]);
    }
}

/// A key message sealed to the fixed device's KEM key (standing in for a provider's), opened
/// and checked against the fixed device's identity; and the input as the signed grant inside a
/// correctly sealed message, so the fuzzer reaches the grant decoder behind the AEAD.
pub fn key_grant(data: &[u8]) {
    let keys = device_keys();
    let identity = keys.identity.public_key();
    if let Ok(grant) = stream::open_key_grant(data, &keys.kem, &identity) {
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let again = stream::seal_key_grant(&grant, &keys.identity, keys.kem.public(), &mut rng)
            .expect("an opened grant seals again");
        assert_eq!(again.len(), stream::KEY_MESSAGE_LEN);
        assert_eq!(
            stream::open_key_grant(&again, &keys.kem, &identity),
            Ok(grant)
        );
    }
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let Ok(padded) = pad::pad_to(data, stream::GRANT_BLOCK, &mut rng) else {
        return;
    };
    let Ok((shared, ct)) = kem::encapsulate(keys.kem.public(), &mut rng) else {
        return;
    };
    let nonce = [4u8; 24];
    let mut header = vec![1u8, 4];
    header.extend_from_slice(&ct.to_bytes());
    header.extend_from_slice(&nonce);
    let sealed = kem::aead_seal(&shared.key_grant_key(), &nonce, &header, &padded);
    let msg = [header, sealed].concat();
    if let Ok(grant) = stream::open_key_grant(&msg, &keys.kem, &identity) {
        assert!(!grant.keys.is_empty());
        assert!(grant.keys.windows(2).all(|w| w[0].key_id < w[1].key_id));
    }
}

/// A signed consent request: decodes canonically; one whose signature verifies makes a link
/// that parses back to it, and keeps one id.
pub fn consent_request(data: &[u8]) {
    if let Some(request) = decoded::<SignedConsentRequest>(data) {
        if request.verify().is_ok() {
            let link = request.to_link();
            assert_eq!(
                SignedConsentRequest::from_link(&link).as_ref(),
                Ok(&request)
            );
            assert_eq!(
                SignedConsentRequest::from_link(&link.to_lowercase()).map(|r| r.id()),
                Ok(request.id())
            );
        }
    }
}

/// A consent link as scanned or pasted: what parses prints back as its canonical upper case.
pub fn consent_link(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = SignedConsentRequest::from_link(text) {
        let canonical = request.to_link();
        assert_eq!(canonical, text.trim().to_ascii_uppercase());
        assert!(canonical.starts_with(CONSENT_LINK_PREFIX));
        decoded::<SignedConsentRequest>(&request.to_bytes()).expect("its bytes decode");
    }
}

/// One consent entry: decodes canonically, and as the first entry of the fixed chain's log
/// it verifies or is refused without panicking.
pub fn consent_entry(data: &[u8]) {
    if let Some(entry) = decoded::<ConsentEntry>(data) {
        if let Ok(log) = ConsentLog::verify(consent_chain(), vec![entry.clone()]) {
            assert_eq!(log.entries(), std::slice::from_ref(&entry));
            assert_eq!(log.head_hash(), entry.hash());
        }
    }
}

/// A list of entries as a node serves it, verified as the fixed chain's whole log.
pub fn consent_list(data: &[u8]) {
    if let Some(list) = decoded::<ConsentList>(data) {
        let n = list.0.len();
        if let Ok(log) = ConsentLog::verify(consent_chain(), list.0) {
            assert_eq!(log.len(), n);
            let consents = log.consents();
            for c in &consents {
                let _ = log.readers_at(c.given_ms);
                assert!(log.consent(&c.id).is_some());
            }
        }
    }
}
