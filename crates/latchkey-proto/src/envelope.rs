//! Sealing: a signed command, padded to a bucket, encrypted to the device's hybrid KEM keys; the
//! response encrypted back under a key from the same exchange. A relay sees only sizes from a
//! short list and the device's mailbox.

use core::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::codec::{check_len, Codec, Reader, Writer};
use crate::command::{CommandId, SignedCommand, SignedResponse};
use crate::error::{Error, Result};
use crate::kem::{self, KemCiphertext, KemPublicKey, KemSecretKey, AEAD_NONCE_LEN, AEAD_TAG_LEN};
use crate::keys::{DeviceId, PublicKey};
use crate::pad;

pub const ENVELOPE_VERSION: u8 = 1;
const KIND_COMMAND: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const COMMAND_HEADER_LEN: usize = 2 + kem::KEM_CIPHERTEXT_LEN + AEAD_NONCE_LEN;
const RESPONSE_HEADER_LEN: usize = 2 + AEAD_NONCE_LEN;

/// The largest sealed command: header plus the largest bucket plus the tag (17,497 bytes).
pub const MAX_SEALED_COMMAND: usize = COMMAND_HEADER_LEN + pad::BUCKETS[2] + AEAD_TAG_LEN;
pub const MAX_SEALED_RESPONSE: usize = RESPONSE_HEADER_LEN + pad::BUCKETS[2] + AEAD_TAG_LEN;

/// Sender side: seals `command` to the device. Returns the envelope and what the sender keeps to
/// open the device's answer.
pub fn seal_command(
    command: &SignedCommand,
    device_kem: &KemPublicKey,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Vec<u8>, PendingReply)> {
    let (shared, kem_ct) = kem::encapsulate(device_kem, rng)?;
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut w = Writer::new();
    w.u8(ENVELOPE_VERSION);
    w.u8(KIND_COMMAND);
    w.nested(&kem_ct);
    w.raw(&nonce);
    let header = w.into_inner();
    let plaintext = Zeroizing::new(command.to_bytes());
    let padded = pad::pad(&plaintext, rng)?;
    let sealed = kem::aead_seal(&shared.command_key(), &nonce, &header, &padded);
    let envelope = [header, sealed].concat();
    Ok((
        envelope,
        PendingReply {
            key: shared.response_key(),
            command: command.command.id(),
            device: command.command.device,
        },
    ))
}

/// What a sender keeps between sending a command and reading the answer.
pub struct PendingReply {
    key: Zeroizing<[u8; 32]>,
    pub command: CommandId,
    pub device: DeviceId,
}

impl fmt::Debug for PendingReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReply")
            .field("command", &self.command)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl PendingReply {
    /// Opens the device's sealed response and checks it is signed by `device_identity` and
    /// answers this command.
    pub fn open(&self, envelope: &[u8], device_identity: &PublicKey) -> Result<SignedResponse> {
        let padded = open_sealed(
            envelope,
            KIND_RESPONSE,
            MAX_SEALED_RESPONSE,
            &self.key,
            "response envelope",
            |r| r.take(0).map(|_| ()),
        )?;
        let response = SignedResponse::from_bytes(pad::unpad(&padded)?)?;
        response.verify(device_identity, &self.device, &self.command)?;
        Ok(response)
    }
}

/// Device side: a decrypted, unpadded, decoded command whose signature is not yet checked (the
/// device's pipeline does that next, so each refusal has its own reason).
#[derive(Debug)]
pub struct OpenedCommand {
    pub command: SignedCommand,
    pub reply: Responder,
}

/// What the device needs to seal its answer to one command.
pub struct Responder {
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Responder(<redacted>)")
    }
}

impl Responder {
    pub fn seal(
        &self,
        response: &SignedResponse,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; AEAD_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let header = [&[ENVELOPE_VERSION, KIND_RESPONSE][..], &nonce].concat();
        let plaintext = Zeroizing::new(response.to_bytes());
        let padded = pad::pad(&plaintext, rng)?;
        let sealed = kem::aead_seal(&self.key, &nonce, &header, &padded);
        Ok([header, sealed].concat())
    }
}

/// Opens a sealed command: size, then decryption, then padding, then decoding, each with its own
/// error.
pub fn open_command(envelope: &[u8], device_kem: &KemSecretKey) -> Result<OpenedCommand> {
    check_len("command envelope", envelope.len(), MAX_SEALED_COMMAND)?;
    let mut r = Reader::new("command envelope", envelope);
    check_header(&mut r, KIND_COMMAND)?;
    let kem_ct: KemCiphertext = r.nested()?;
    let shared = device_kem.decapsulate(&kem_ct)?;
    let padded = open_sealed(
        envelope,
        KIND_COMMAND,
        MAX_SEALED_COMMAND,
        &shared.command_key(),
        "command envelope",
        |r| r.nested::<KemCiphertext>().map(|_| ()),
    )?;
    let command = SignedCommand::from_bytes(pad::unpad(&padded)?)?;
    Ok(OpenedCommand {
        command,
        reply: Responder {
            key: shared.response_key(),
        },
    })
}

fn check_header(r: &mut Reader<'_>, kind: u8) -> Result<()> {
    let version = r.u8()?;
    if version != ENVELOPE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "envelope",
            found: version,
            supported: ENVELOPE_VERSION,
        });
    }
    let found = r.u8()?;
    if found != kind {
        return Err(Error::UnknownTag {
            what: "envelope kind",
            tag: found,
        });
    }
    Ok(())
}

/// Parses `version || kind || <skip> || nonce || ciphertext` and decrypts with the header as
/// associated data.
fn open_sealed(
    envelope: &[u8],
    kind: u8,
    max: usize,
    key: &[u8; 32],
    what: &'static str,
    skip: impl FnOnce(&mut Reader<'_>) -> Result<()>,
) -> Result<Zeroizing<Vec<u8>>> {
    check_len(what, envelope.len(), max)?;
    let mut r = Reader::new(what, envelope);
    check_header(&mut r, kind)?;
    skip(&mut r)?;
    let nonce: [u8; AEAD_NONCE_LEN] = r.array()?;
    let header_len = r.position();
    let sealed = r.take(r.remaining())?;
    let smallest = pad::BUCKETS[0] + AEAD_TAG_LEN;
    if sealed.len() < smallest {
        return Err(Error::Truncated {
            what,
            needed: smallest - sealed.len(),
        });
    }
    kem::aead_open(key, &nonce, &envelope[..header_len], sealed)
}
