//! Events: what a device tells its owners about its guests (docs/PROTOCOL.md §13). A device
//! signs an [`Event`] with its identity key, seals it to one owner's event KEM key (the hybrid
//! KEM of [`crate::kem`], padded like a command) and wraps the result in an [`EventMessage`]
//! the registry nodes can check without opening it: it names the device and the owner's
//! mailbox and is signed by the device again, over the sealed bytes.
//!
//! An event message starts with the tag `0xE1`, which can never begin an op (an op's first
//! byte is its version, 1), so an owner-mailbox reader tells the two apart by the first byte.

use core::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::codec::{check_len, Codec, Reader, Writer};
use crate::command::{self, RejectCode};
use crate::error::{Error, Result};
use crate::grant::{self, GrantId};
use crate::kem::{self, KemCiphertext, KemPublicKey, KemSecretKey, AEAD_NONCE_LEN, AEAD_TAG_LEN};
use crate::keys::{DeviceId, PublicKey, Signature, SigningKey};
use crate::pad;

pub const EVENT_VERSION: u8 = 1;
/// The first byte of an event message: never an op's version byte (1), so an owner mailbox
/// can hold both and a reader tells them apart without decoding either.
pub const EVENT_MESSAGE_TAG: u8 = 0xE1;
/// The reserved owner action that subscribes the sender to the device's events. Its
/// arguments are the owner's event KEM public key (1,190 bytes, over the 1,024 other actions
/// may carry; the command decoder allows exactly this length for this action).
pub const SUBSCRIBE_ACTION: &str = "latchkey.subscribe";
/// A signed event is at most this long (the largest is 177 bytes: a refusal with a 32-byte
/// action); the cap leaves room for a later version's fields.
pub const MAX_EVENT: usize = 512;
/// Sealed event: version, kind, KEM ciphertext, nonce, then the first bucket and its tag.
pub const SEALED_EVENT_LEN: usize =
    2 + kem::KEM_CIPHERTEXT_LEN + AEAD_NONCE_LEN + pad::BUCKETS[0] + AEAD_TAG_LEN;
/// Event message: tag, device, mailbox, `u16` length and the sealed event, signature.
pub const EVENT_MESSAGE_LEN: usize = 1 + 32 + 32 + 2 + SEALED_EVENT_LEN + 64;

const EVENT_LABEL: &[u8] = b"latchkey/v1/event\0";
const MESSAGE_LABEL: &[u8] = b"latchkey/v1/event-message\0";
const SEALED_VERSION: u8 = 1;
/// Envelope kind 3: commands are 1, responses 2.
const KIND_EVENT: u8 = 3;
const SEALED_HEADER_LEN: usize = 2 + kem::KEM_CIPHERTEXT_LEN + AEAD_NONCE_LEN;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Tag 1: the first command a grant ever let through on this device.
    FirstOpen,
    /// Tag 2: a one-time link was redeemed (bound to the guest's own key).
    Redeemed,
    /// Tag 3: a guest with a structurally valid grant chain was refused, with the reject code
    /// (§5.5) it was told.
    Refused { code: u16 },
}

impl EventKind {
    pub fn tag(&self) -> u8 {
        match self {
            EventKind::FirstOpen => 1,
            EventKind::Redeemed => 2,
            EventKind::Refused { .. } => 3,
        }
    }
}

/// One event, as the device signs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    pub device: DeviceId,
    /// Per device, from 1, never reused (the device keeps its counter durably); owners dedupe
    /// by `(device, seq)`.
    pub seq: u64,
    /// The device's clock when it happened; absent when its clock is not set.
    pub time_ms: Option<u64>,
    pub kind: EventKind,
    /// The leaf grant of the guest's chain (the grant the guest holds).
    pub grant: GrantId,
    /// The command's sender.
    pub guest: PublicKey,
    pub action: String,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("device", &self.device)
            .field("seq", &self.seq)
            .field("time_ms", &self.time_ms)
            .field("kind", &self.kind)
            .field("grant", &self.grant)
            .field("guest", &self.guest.short())
            .field("action", &self.action)
            .finish()
    }
}

impl Event {
    fn encode_content(&self, w: &mut Writer) {
        w.u8(EVENT_VERSION);
        w.nested(&self.device);
        w.u64(self.seq);
        w.option(self.time_ms.as_ref(), |w, t| w.u64(*t));
        w.u8(self.kind.tag());
        if let EventKind::Refused { code } = self.kind {
            w.u16(code);
        }
        w.raw(&self.grant.0);
        w.nested(&self.guest);
        w.bytes8(self.action.as_bytes());
    }

    fn read_content(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != EVENT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "event",
                found: version,
                supported: EVENT_VERSION,
            });
        }
        let device = r.nested()?;
        let seq = r.u64()?;
        let time_ms = r.option(|r| r.u64())?;
        let kind = match r.u8()? {
            1 => EventKind::FirstOpen,
            2 => EventKind::Redeemed,
            3 => EventKind::Refused { code: r.u16()? },
            tag => {
                return Err(Error::UnknownTag {
                    what: "event kind",
                    tag,
                })
            }
        };
        let grant = GrantId(r.array()?);
        let guest = r.nested()?;
        let action = r.str8("event action", grant::MAX_ACTION_LEN)?;
        if !grant::is_action_name(&action) {
            return Err(Error::Invalid {
                what: "event action",
                why: "action names are 1-32 of a-z, 0-9, '-', '_', '.'",
            });
        }
        Ok(Event {
            device,
            seq,
            time_ms,
            kind,
            grant,
            guest,
            action,
        })
    }

    pub fn content_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        w.into_inner()
    }

    /// Signs with the device's identity key.
    pub fn sign(self, identity: &SigningKey) -> Result<SignedEvent> {
        if !grant::is_action_name(&self.action) {
            return Err(Error::Invalid {
                what: "event action",
                why: "action names are 1-32 of a-z, 0-9, '-', '_', '.'",
            });
        }
        let signature = identity.sign(&[EVENT_LABEL, &self.content_bytes()].concat());
        Ok(SignedEvent {
            event: self,
            signature,
        })
    }

    /// The reject code of a refusal event (§5.5), `None` for the other kinds.
    pub fn refusal_code(&self) -> Option<u16> {
        match self.kind {
            EventKind::Refused { code } => Some(code),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvent {
    pub event: Event,
    pub signature: Signature,
}

impl SignedEvent {
    /// Checks the device's signature (`identity`: the device key current in the reader's
    /// verified chain).
    pub fn verify(&self, identity: &PublicKey) -> Result<&Event> {
        identity.verify_or(
            &self.signature,
            &[EVENT_LABEL, &self.event.content_bytes()].concat(),
            "event",
        )?;
        Ok(&self.event)
    }
}

impl Codec for SignedEvent {
    const NAME: &'static str = "event";
    const MAX_LEN: usize = MAX_EVENT;
    fn encode(&self, w: &mut Writer) {
        self.event.encode_content(w);
        w.nested(&self.signature);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SignedEvent {
            event: Event::read_content(r)?,
            signature: r.nested()?,
        })
    }
}

/// What is posted to an owner's mailbox: checkable by a node (device signature over the
/// sealed bytes, the mailbox it is for), readable only by the owner.
#[derive(Clone, PartialEq, Eq)]
pub struct EventMessage {
    pub device: DeviceId,
    /// The owner mailbox it is posted to (`H("latchkey/v1/owner-mailbox", owner key)`).
    pub mailbox: [u8; 32],
    /// Exactly [`SEALED_EVENT_LEN`] bytes.
    pub sealed: Vec<u8>,
    pub signature: Signature,
}

impl fmt::Debug for EventMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventMessage")
            .field("device", &self.device)
            .field("mailbox", &crate::keys::hex_prefix(&self.mailbox))
            .field("sealed_len", &self.sealed.len())
            .finish_non_exhaustive()
    }
}

impl EventMessage {
    fn encode_content(&self, w: &mut Writer) {
        w.u8(EVENT_MESSAGE_TAG);
        w.nested(&self.device);
        w.raw(&self.mailbox);
        w.bytes16(&self.sealed);
    }

    pub fn content_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        w.into_inner()
    }

    /// Whether `bytes` is framed as an event message (its first byte), so a mailbox reader
    /// can route it without decoding: an op can never start with this byte.
    pub fn is_event_message(bytes: &[u8]) -> bool {
        bytes.first() == Some(&EVENT_MESSAGE_TAG)
    }

    /// The node's check: signed by `identity` (the device key of the chain it holds).
    pub fn verify(&self, identity: &PublicKey) -> Result<()> {
        identity.verify_or(
            &self.signature,
            &[MESSAGE_LABEL, &self.content_bytes()].concat(),
            "event message",
        )
    }

    /// The owner's side: checks the message (device signature, addressed to `mailbox`),
    /// opens the sealed event with `kem`, and checks the event's own signature and device.
    pub fn open(
        &self,
        identity: &PublicKey,
        mailbox: &[u8; 32],
        kem: &KemSecretKey,
    ) -> Result<SignedEvent> {
        self.verify(identity)?;
        if &self.mailbox != mailbox {
            return Err(Error::Invalid {
                what: "event message",
                why: "it is addressed to another mailbox",
            });
        }
        let event = open_event(&self.sealed, kem)?;
        event.verify(identity)?;
        if event.event.device != self.device {
            return Err(Error::WrongDevice {
                what: "event".into(),
                expected: self.device.to_string(),
                found: event.event.device.to_string(),
            });
        }
        Ok(event)
    }
}

impl Codec for EventMessage {
    const NAME: &'static str = "event message";
    const MAX_LEN: usize = EVENT_MESSAGE_LEN;
    fn encode(&self, w: &mut Writer) {
        self.encode_content(w);
        w.nested(&self.signature);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let tag = r.u8()?;
        if tag != EVENT_MESSAGE_TAG {
            return Err(Error::UnknownTag {
                what: "event message",
                tag,
            });
        }
        let device = r.nested()?;
        let mailbox = r.array()?;
        let sealed = r.bytes16(SEALED_EVENT_LEN)?;
        if sealed.len() != SEALED_EVENT_LEN {
            return Err(Error::Invalid {
                what: "event message",
                why: "a sealed event is exactly 2,137 bytes",
            });
        }
        Ok(EventMessage {
            device,
            mailbox,
            sealed: sealed.to_vec(),
            signature: r.nested()?,
        })
    }
}

/// Seals a signed event to one owner's event KEM key: `version 1 || kind 3 || KEM ciphertext
/// || nonce || XChaCha20-Poly1305(event_key, nonce, aad = header, padded event)`.
pub fn seal_event(
    event: &SignedEvent,
    to: &KemPublicKey,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>> {
    let plaintext = Zeroizing::new(event.to_bytes());
    check_len("event", plaintext.len(), MAX_EVENT)?;
    let (shared, kem_ct) = kem::encapsulate(to, rng)?;
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut w = Writer::new();
    w.u8(SEALED_VERSION);
    w.u8(KIND_EVENT);
    w.nested(&kem_ct);
    w.raw(&nonce);
    let header = w.into_inner();
    let padded = pad::pad(&plaintext, rng)?;
    let sealed = kem::aead_seal(&shared.event_key(), &nonce, &header, &padded);
    Ok([header, sealed].concat())
}

/// Opens a sealed event: size, header, decapsulation, AEAD, unpadding, decoding (the
/// signature is the caller's next step, [`SignedEvent::verify`]).
pub fn open_event(sealed: &[u8], kem: &KemSecretKey) -> Result<SignedEvent> {
    check_len("sealed event", sealed.len(), SEALED_EVENT_LEN)?;
    let mut r = Reader::new("sealed event", sealed);
    let version = r.u8()?;
    if version != SEALED_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "sealed event",
            found: version,
            supported: SEALED_VERSION,
        });
    }
    let kind = r.u8()?;
    if kind != KIND_EVENT {
        return Err(Error::UnknownTag {
            what: "sealed event kind",
            tag: kind,
        });
    }
    let kem_ct: KemCiphertext = r.nested()?;
    let nonce: [u8; AEAD_NONCE_LEN] = r.array()?;
    let ciphertext = r.take(r.remaining())?;
    if ciphertext.len() != pad::BUCKETS[0] + AEAD_TAG_LEN {
        return Err(Error::Truncated {
            what: "sealed event",
            needed: (pad::BUCKETS[0] + AEAD_TAG_LEN).saturating_sub(ciphertext.len()),
        });
    }
    let shared = kem.decapsulate(&kem_ct)?;
    let padded = kem::aead_open(
        &shared.event_key(),
        &nonce,
        &sealed[..SEALED_HEADER_LEN],
        ciphertext,
    )?;
    SignedEvent::from_bytes(pad::unpad(&padded)?)
}

/// Seals `event` to `to` and frames it for the owner mailbox `mailbox`, signed by `identity`.
pub fn build_message(
    event: &SignedEvent,
    to: &KemPublicKey,
    mailbox: [u8; 32],
    identity: &SigningKey,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<EventMessage> {
    let sealed = seal_event(event, to, rng)?;
    frame_message(event.event.device, mailbox, sealed, identity)
}

/// Frames already sealed bytes (vectors and tests use it with fixed bytes).
pub fn frame_message(
    device: DeviceId,
    mailbox: [u8; 32],
    sealed: Vec<u8>,
    identity: &SigningKey,
) -> Result<EventMessage> {
    if sealed.len() != SEALED_EVENT_LEN {
        return Err(Error::Invalid {
            what: "event message",
            why: "a sealed event is exactly 2,137 bytes",
        });
    }
    let mut message = EventMessage {
        device,
        mailbox,
        sealed,
        signature: Signature([0; 64]),
    };
    message.signature = identity.sign(&[MESSAGE_LABEL, &message.content_bytes()].concat());
    Ok(message)
}

/// The subscribe command's arguments: the owner's event KEM public key.
pub fn subscribe_args(kem: &KemPublicKey) -> Vec<u8> {
    kem.to_bytes()
}

/// Reads a subscribe command's arguments (exactly a KEM public key).
pub fn parse_subscribe_args(args: &[u8]) -> Result<KemPublicKey> {
    if args.len() != KemPublicKey::MAX_LEN {
        return Err(Error::Invalid {
            what: "subscribe arguments",
            why: "they are exactly one event KEM public key (1,190 bytes)",
        });
    }
    KemPublicKey::from_bytes(args)
}

/// Whether a device emits a refusal event for this reject code: refusals that judge a guest
/// whose chain is sound (its window, its revocation, its actions, uses, arguments, schedule,
/// binding); not decoding, freshness or replays, which say nothing about the guest's access.
pub fn refusal_is_event(code: u16) -> bool {
    const CODES: [u16; 6] = [
        RejectCode::GrantExpired as u16,
        RejectCode::GrantNotYetValid as u16,
        RejectCode::GrantRevoked as u16,
        RejectCode::ActionNotGranted as u16,
        RejectCode::UseLimitReached as u16,
        RejectCode::ArgumentsNotGranted as u16,
    ];
    // 20 outside schedule, 21 not redeemed, 22 already redeemed (docs/PROTOCOL.md §5.5).
    CODES.contains(&code) || (20..=22).contains(&code)
}

/// The arguments cap of a command's action (the decoder applies it before reading them):
/// 1,190 for [`SUBSCRIBE_ACTION`], 8,192 for [`crate::consent::CONSENT_ACTION`], else 1,024.
pub fn max_args(action: &str) -> usize {
    if action == SUBSCRIBE_ACTION {
        KemPublicKey::MAX_LEN
    } else if action == crate::consent::CONSENT_ACTION {
        crate::consent::MAX_CONSENT_ENTRY
    } else {
        command::MAX_ARGS
    }
}

/// The longest arguments any command may carry (a consent entry's).
pub const MAX_ANY_ARGS: usize = crate::consent::MAX_CONSENT_ENTRY;

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn sample(rng: &mut ChaCha20Rng, kind: EventKind) -> (SigningKey, SignedEvent) {
        let device_key = SigningKey::generate(rng);
        let guest = SigningKey::generate(rng).public_key();
        let event = Event {
            device: DeviceId::from_identity(&device_key.public_key()),
            seq: 7,
            time_ms: Some(1_767_225_600_000),
            kind,
            grant: GrantId([9; 32]),
            guest,
            action: "unlock".into(),
        };
        let signed = event.sign(&device_key).unwrap();
        (device_key, signed)
    }

    #[test]
    fn a_sealed_event_opens_for_its_owner_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let (device_key, signed) = sample(&mut rng, EventKind::Refused { code: 11 });
        let owner = KemSecretKey::generate(&mut rng);
        let stranger = KemSecretKey::generate(&mut rng);
        let mailbox = [3u8; 32];
        let message =
            build_message(&signed, owner.public(), mailbox, &device_key, &mut rng).unwrap();
        let bytes = message.to_bytes();
        assert_eq!(bytes.len(), EVENT_MESSAGE_LEN);
        assert!(EventMessage::is_event_message(&bytes));
        let decoded = EventMessage::from_bytes(&bytes).unwrap();
        let id = device_key.public_key();
        assert_eq!(decoded.open(&id, &mailbox, &owner).unwrap(), signed);
        assert_eq!(
            decoded.open(&id, &mailbox, &stranger).unwrap_err(),
            Error::DecryptFailed
        );
        assert!(matches!(
            decoded.open(&id, &[4; 32], &owner),
            Err(Error::Invalid { .. })
        ));
        let other = SigningKey::generate(&mut rng).public_key();
        assert!(matches!(
            decoded.open(&other, &mailbox, &owner),
            Err(Error::BadSignature { .. })
        ));
    }

    #[test]
    fn a_message_never_decodes_as_an_op() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (device_key, signed) = sample(&mut rng, EventKind::FirstOpen);
        let owner = KemSecretKey::generate(&mut rng);
        let message =
            build_message(&signed, owner.public(), [0; 32], &device_key, &mut rng).unwrap();
        let err = crate::chain::Op::from_bytes(&message.to_bytes()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err:?}");
    }

    #[test]
    fn tampering_with_the_sealed_bytes_breaks_the_device_signature() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let (device_key, signed) = sample(&mut rng, EventKind::Redeemed);
        let owner = KemSecretKey::generate(&mut rng);
        let mut message =
            build_message(&signed, owner.public(), [0; 32], &device_key, &mut rng).unwrap();
        message.sealed[100] ^= 1;
        assert!(matches!(
            message.verify(&device_key.public_key()),
            Err(Error::BadSignature { .. })
        ));
    }

    #[test]
    fn subscribe_args_carry_a_whole_kem_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(14);
        let owner = KemSecretKey::generate(&mut rng);
        let args = subscribe_args(owner.public());
        assert_eq!(args.len(), 1190);
        assert_eq!(&parse_subscribe_args(&args).unwrap(), owner.public());
        assert!(parse_subscribe_args(&args[1..]).is_err());
        assert_eq!(max_args(SUBSCRIBE_ACTION), 1190);
        assert_eq!(max_args("unlock"), 1024);
        assert_eq!(max_args(crate::consent::CONSENT_ACTION), 8192);
    }
}

#[cfg(test)]
mod subscribe_tests {
    use super::*;
    use crate::command::{Command, ReplyTo, SignedCommand};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn command(action: &str, args: Vec<u8>, key: &SigningKey) -> Command {
        Command {
            device: DeviceId([1; 32]),
            sender: key.public_key(),
            action: action.into(),
            args,
            timestamp_ms: 1,
            nonce: [2; 16],
            challenge: None,
            grants: Vec::new(),
            reply_to: ReplyTo::Direct,
        }
    }

    /// Only the subscribe action may carry a whole KEM key; any other action over 1,024 bytes
    /// of arguments is refused by the signer and by the decoder.
    #[test]
    fn only_subscribe_carries_more_than_1024_bytes() {
        let mut rng = ChaCha20Rng::seed_from_u64(15);
        let key = SigningKey::generate(&mut rng);
        let kem = KemSecretKey::generate(&mut rng);
        let signed = command(SUBSCRIBE_ACTION, subscribe_args(kem.public()), &key)
            .sign(&key)
            .unwrap();
        let bytes = signed.to_bytes();
        assert_eq!(SignedCommand::from_bytes(&bytes).unwrap(), signed);
        assert!(command("unlock", vec![0; 1190], &key).sign(&key).is_err());
        // The same bytes with the action renamed (same length): the decoder's cap refuses.
        let mut other = bytes.clone();
        let at = 1 + 32 + 32 + 1;
        other[at..at + SUBSCRIBE_ACTION.len()].copy_from_slice(b"latchkey.subscribx");
        assert!(matches!(
            SignedCommand::from_bytes(&other),
            Err(Error::TooLarge { .. })
        ));
    }
}
