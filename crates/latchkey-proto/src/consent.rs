//! Consent (docs/PROTOCOL.md §14): a provider asks for a device's stream with a signed
//! [`ConsentRequest`] (carried as a `LATCHKEY://C/…` link or QR code); the owners answer with
//! [`ConsentEntry`]s (given, revoked, expired), each signed by one owner and hash-linked into a
//! per-device log that registry nodes keep next to the ownership chain. Anyone holding the chain
//! verifies the whole log ([`ConsentLog::verify`]) and asks it who could read a stream when
//! ([`ConsentLog::readers_at`]).
//!
//! The rules, in the order they are checked (the first that fails is the error, always
//! [`Error::ConsentRefused`] with the entry's seq and the rule it broke):
//!
//! 1. the entry names the chain's device;
//! 2. its seq is the log's length + 1;
//! 3. its `prev` is the hash of the entry before (zeros for seq 1);
//! 4. its anchor is a spine op of the chain;
//! 5. its anchor is not before the previous entry's anchor;
//! 6. its time is not before the previous entry's time;
//! 7. its signer is an owner right after its anchor;
//! 8. the owner's signature verifies;
//! 9. the action: *given* — the request's provider signature verifies, the request names this
//!    device, its id was never given before, and its `until` (if any) is after the entry's
//!    time; *revoked* — the consent was given and has not ended (an earlier revoke or expiry,
//!    or an era change between its anchor and this entry's); *expired* — as revoked, and the
//!    consent has an `until` that is not after the entry's time.
//!
//! [`ConsentLog::check_next`] (a node's admission, a device's acceptance) adds, after rule 7,
//! that the signer is a *current* owner and the anchor is in the *current* era.
//!
//! A consent given in one era ends when the next era starts (a transfer or a factory reset):
//! the new owners never consented. Its end is then [`EndKind::Transferred`], at the
//! `issued_ms` of the op that started the new era.

use core::fmt;
use core::str::FromStr;
use std::collections::HashMap;

use crate::chain::{Chain, OpId};
use crate::codec::{check_len, Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::hash;
use crate::kem::KemPublicKey;
use crate::keys::{DeviceId, PublicKey, Signature, SigningKey};
use crate::stream::{validate_stream_name, MAX_STREAM_NAME};

/// The reserved owner-only action that hands the device one consent entry (its arguments, at
/// most [`MAX_CONSENT_ENTRY`] bytes).
pub const CONSENT_ACTION: &str = "latchkey.consent";
/// The version byte of requests and entries.
pub const CONSENT_VERSION: u8 = 1;
/// A consent request link starts with this (any letter case when parsed).
pub const CONSENT_LINK_PREFIX: &str = "LATCHKEY://C/";
/// Longest link text [`SignedConsentRequest::from_link`] reads.
pub const MAX_CONSENT_LINK: usize = 8192;
/// Cap of an encoded signed request (the largest valid one is 2,362 bytes).
pub const MAX_CONSENT_REQUEST: usize = 4096;
/// Cap of an encoded consent entry.
pub const MAX_CONSENT_ENTRY: usize = 8192;
/// Most entries one [`ConsentList`] carries.
pub const MAX_CONSENT_LIST_ENTRIES: usize = 10_000;
/// Cap of an encoded [`ConsentList`].
pub const MAX_CONSENT_LIST: usize = 4 + MAX_CONSENT_LIST_ENTRIES * MAX_CONSENT_ENTRY;
/// Most entries a [`ConsentLog`] holds (as [`crate::chain::MAX_OPS`] for ops).
pub const MAX_CONSENT_LOG: usize = 100_000;
pub const MAX_PROVIDER_NAME: usize = 64;
pub const MAX_PROVIDER_URL: usize = 200;
pub const MAX_PURPOSE: usize = 500;
pub const MAX_TERMS: usize = 200;
/// The smallest encoded entry (a revoke or an expiry), for the list decoder's early check.
const MIN_CONSENT_ENTRY: usize = 1 + 32 + 8 + 32 + 32 + 8 + 1 + 32 + 32 + 64;

const REQUEST_LABEL: &[u8] = b"latchkey/v1/consent-request\0";
const ENTRY_LABEL: &[u8] = b"latchkey/v1/consent-entry\0";

/// Purpose codes of a request: what the provider says it will do with the data. Free text
/// ([`ConsentRequest::purpose`]) says it in full; the code lets apps sort and warn. Unknown
/// codes are accepted (a later version may add some) and read as "other".
pub mod purpose {
    pub const OTHER: u16 = 0;
    pub const INSIGHTS: u16 = 1;
    pub const BILLING: u16 = 2;
    pub const RESEARCH: u16 = 3;
    pub const GRID: u16 = 4;
    pub const MONITORING: u16 = 5;

    /// The code's name as the CLIs spell it (`--purpose-code`).
    pub fn label(code: u16) -> &'static str {
        match code {
            INSIGHTS => "insights",
            BILLING => "billing",
            RESEARCH => "research",
            GRID => "grid",
            MONITORING => "monitoring",
            _ => "other",
        }
    }

    /// The code of a name [`label`] gives (any case).
    pub fn parse(name: &str) -> Option<u16> {
        [OTHER, INSIGHTS, BILLING, RESEARCH, GRID, MONITORING]
            .into_iter()
            .find(|&c| label(c).eq_ignore_ascii_case(name.trim()))
    }
}

/// A consent's id: `H("latchkey/v1/consent-id", request content)`, the request's bytes without
/// the provider's signature (a signer can make many valid signatures over one content; the id
/// must not change with them). Shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsentId(pub [u8; 32]);

impl fmt::Display for ConsentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for ConsentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConsentId({}…)", crate::keys::hex_prefix(&self.0))
    }
}

impl FromStr for ConsentId {
    type Err = Error;
    /// 64 hex characters, any case.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or(Error::BadText {
                what: "consent id",
                encoding: "64 hexadecimal characters",
            })?;
        Ok(ConsentId(bytes))
    }
}

/// What a provider publishes about itself: who it is and where to send it stream keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderIdentity {
    /// 1 to 64 bytes, no control characters.
    pub name: String,
    /// 0 to 200 bytes, no control characters or spaces (empty when it has none).
    pub url: String,
    /// Signs its requests; its 32 bytes name it as a key-message recipient.
    pub signing: PublicKey,
    /// Stream keys are sealed to it.
    pub kem: KemPublicKey,
}

impl ProviderIdentity {
    /// The recipient bytes of its key messages: its signing key.
    pub fn recipient(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    fn problem(&self) -> Option<&'static str> {
        if self.name.is_empty() || self.name.len() > MAX_PROVIDER_NAME {
            return Some("a provider name is 1-64 bytes");
        }
        if self.name.chars().any(char::is_control) {
            return Some("a provider name has no control characters");
        }
        if self.url.len() > MAX_PROVIDER_URL {
            return Some("a provider URL is at most 200 bytes");
        }
        if self
            .url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Some("a provider URL has no spaces or control characters");
        }
        None
    }

    /// Checks the field rules (name 1-64 bytes, URL ≤ 200, no control characters).
    pub fn validate(&self) -> Result<()> {
        match self.problem() {
            Some(why) => Err(Error::Invalid {
                what: "provider identity",
                why,
            }),
            None => Ok(()),
        }
    }
}

impl Codec for ProviderIdentity {
    const NAME: &'static str = "provider identity";
    const MAX_LEN: usize = 1 + MAX_PROVIDER_NAME + 1 + MAX_PROVIDER_URL + 32 + 1190;
    fn encode(&self, w: &mut Writer) {
        w.bytes8(self.name.as_bytes());
        w.bytes8(self.url.as_bytes());
        w.nested(&self.signing);
        w.nested(&self.kem);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let identity = ProviderIdentity {
            name: r.str8("provider name", MAX_PROVIDER_NAME)?,
            url: r.str8("provider URL", MAX_PROVIDER_URL)?,
            signing: r.nested()?,
            kem: r.nested()?,
        };
        identity.validate()?;
        Ok(identity)
    }
}

/// A provider's request for consent to read one stream of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRequest {
    pub provider: ProviderIdentity,
    pub device: DeviceId,
    pub stream: String,
    /// One of [`purpose`]'s codes.
    pub purpose_code: u16,
    /// 1 to 500 bytes of plain words; no control characters but newlines.
    pub purpose: String,
    /// How long the provider keeps what it reads (days; recorded, not enforceable).
    pub retention_days: u32,
    /// When the consent ends by itself (UTC ms); `None` = until revoked.
    pub until_ms: Option<u64>,
    /// Whether the provider also gets the stream's earlier keys (readings from before).
    pub history: bool,
    /// Terms such as a price (at most 200 bytes; recorded, not settled).
    pub terms: Option<String>,
    pub issued_ms: u64,
    /// Random: two requests with the same fields are still two consents.
    pub nonce: [u8; 16],
}

impl ConsentRequest {
    fn problem(&self) -> Option<&'static str> {
        if let Some(why) = self.provider.problem() {
            return Some(why);
        }
        if validate_stream_name(&self.stream).is_err() {
            return Some("stream names are 1-32 of a-z, 0-9, '_', '-'");
        }
        if self.purpose.trim().is_empty() || self.purpose.len() > MAX_PURPOSE {
            return Some("the purpose is 1-500 bytes of text");
        }
        if self.purpose.chars().any(|c| c.is_control() && c != '\n') {
            return Some("the purpose has no control characters but newlines");
        }
        if let Some(terms) = &self.terms {
            if terms.len() > MAX_TERMS {
                return Some("terms are at most 200 bytes");
            }
            if terms.chars().any(char::is_control) {
                return Some("terms have no control characters");
            }
        }
        None
    }

    fn validate(&self) -> Result<()> {
        match self.problem() {
            Some(why) => Err(Error::Invalid {
                what: "consent request",
                why,
            }),
            None => Ok(()),
        }
    }

    fn encode_content(&self, w: &mut Writer) {
        w.u8(CONSENT_VERSION);
        w.nested(&self.provider);
        w.nested(&self.device);
        w.bytes8(self.stream.as_bytes());
        w.u16(self.purpose_code);
        w.bytes16(self.purpose.as_bytes());
        w.u32(self.retention_days);
        w.option(self.until_ms.as_ref(), |w, t| w.u64(*t));
        w.u8(u8::from(self.history));
        w.option(self.terms.as_ref(), |w, t| w.bytes8(t.as_bytes()));
        w.u64(self.issued_ms);
        w.raw(&self.nonce);
    }

    fn read_content(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != CONSENT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "consent request",
                found: version,
                supported: CONSENT_VERSION,
            });
        }
        let provider = r.nested()?;
        let device = r.nested()?;
        let stream = r.str8("stream name", MAX_STREAM_NAME)?;
        let purpose_code = r.u16()?;
        let purpose = core::str::from_utf8(r.bytes16(MAX_PURPOSE)?)
            .map_err(|_| Error::NotUtf8 { what: "purpose" })?
            .to_owned();
        let retention_days = r.u32()?;
        let until_ms = r.option(|r| r.u64())?;
        let history = match r.u8()? {
            0 => false,
            1 => true,
            tag => {
                return Err(Error::UnknownTag {
                    what: "history flag",
                    tag,
                })
            }
        };
        let terms = r.option(|r| r.str8("terms", MAX_TERMS))?;
        let request = ConsentRequest {
            provider,
            device,
            stream,
            purpose_code,
            purpose,
            retention_days,
            until_ms,
            history,
            terms,
            issued_ms: r.u64()?,
            nonce: r.array()?,
        };
        request.validate()?;
        Ok(request)
    }

    /// The bytes the provider signs (after the label).
    pub fn content_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        w.into_inner()
    }

    /// Signs with the provider's signing key, which must be `provider.signing`.
    pub fn sign(self, provider_key: &SigningKey) -> Result<SignedConsentRequest> {
        self.validate()?;
        if provider_key.public_key() != self.provider.signing {
            return Err(Error::Invalid {
                what: "consent request",
                why: "it must be signed by the provider's own signing key",
            });
        }
        let signature = provider_key.sign(&[REQUEST_LABEL, &self.content_bytes()].concat());
        Ok(SignedConsentRequest {
            request: self,
            signature,
        })
    }
}

/// A request as the provider signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedConsentRequest {
    request: ConsentRequest,
    signature: Signature,
}

impl SignedConsentRequest {
    pub fn request(&self) -> &ConsentRequest {
        &self.request
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Checks the provider's signature (by the key the request itself names).
    pub fn verify(&self) -> Result<()> {
        self.request.provider.signing.verify_or(
            &self.signature,
            &[REQUEST_LABEL, &self.request.content_bytes()].concat(),
            "consent request",
        )
    }

    /// `H("latchkey/v1/consent-id", request content)`: the signature is not part of it, so
    /// one request has one id whatever valid signature bytes a copy carries.
    pub fn id(&self) -> ConsentId {
        ConsentId(hash::labeled(
            hash::CONSENT_ID,
            &[&self.request.content_bytes()],
        ))
    }

    /// `LATCHKEY://C/` and the encoded signed request in upper-case base32 without padding
    /// (QR alphanumeric mode).
    pub fn to_link(&self) -> String {
        format!(
            "{CONSENT_LINK_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&self.to_bytes())
        )
    }

    /// Parses a link as scanned or pasted, in any letter case, and verifies its signature.
    /// In order: trim; over 8,192 bytes `TooLarge`; another prefix `WrongKind`; not base32
    /// `BadText`; the request's fields (as the decoder); the signature `BadSignature`.
    pub fn from_link(text: &str) -> Result<Self> {
        let text = text.trim();
        check_len("consent link", text.len(), MAX_CONSENT_LINK)?;
        let split = CONSENT_LINK_PREFIX.len().min(text.len());
        let (head, body) = text.split_at_checked(split).unwrap_or((text, ""));
        if !head.eq_ignore_ascii_case(CONSENT_LINK_PREFIX) {
            return Err(Error::WrongKind {
                expected: "consent request link (LATCHKEY://C/…)",
                found: crate::error::looks_like(text),
            });
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::BadText {
                what: "consent link",
                encoding: "base32",
            })?;
        let signed = SignedConsentRequest::from_bytes(&bytes)?;
        signed.verify()?;
        Ok(signed)
    }
}

impl Codec for SignedConsentRequest {
    const NAME: &'static str = "consent request";
    const MAX_LEN: usize = MAX_CONSENT_REQUEST;
    fn encode(&self, w: &mut Writer) {
        self.request.encode_content(w);
        w.nested(&self.signature);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SignedConsentRequest {
            request: ConsentRequest::read_content(r)?,
            signature: r.nested()?,
        })
    }
}

/// What a consent entry records.
// Not boxed: the shared API matches on `Given(request)` directly, and entries are few.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentAction {
    /// Tag 1: the owner gives the consent the provider asked for.
    Given(SignedConsentRequest),
    /// Tag 2: an owner withdraws it.
    Revoked(ConsentId),
    /// Tag 3: an owner records that its `until` passed.
    Expired(ConsentId),
}

impl ConsentAction {
    pub fn tag(&self) -> u8 {
        match self {
            ConsentAction::Given(_) => 1,
            ConsentAction::Revoked(_) => 2,
            ConsentAction::Expired(_) => 3,
        }
    }

    /// The consent it is about.
    pub fn consent_id(&self) -> ConsentId {
        match self {
            ConsentAction::Given(request) => request.id(),
            ConsentAction::Revoked(id) | ConsentAction::Expired(id) => *id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ConsentAction::Given(_) => "given",
            ConsentAction::Revoked(_) => "revoked",
            ConsentAction::Expired(_) => "expired",
        }
    }
}

/// One entry of a device's consent log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEntry {
    pub device: DeviceId,
    /// From 1.
    pub seq: u64,
    /// The hash of the entry before; zeros for seq 1.
    pub prev: [u8; 32],
    /// A spine op of the ownership chain at which `signer` is an owner.
    pub anchor: OpId,
    /// The owner's clock (UTC ms); never before the previous entry's.
    pub time_ms: u64,
    pub action: ConsentAction,
    pub signer: PublicKey,
    /// Over `"latchkey/v1/consent-entry\0" || content` (everything before the signature).
    pub signature: Signature,
}

impl ConsentEntry {
    fn encode_content(&self, w: &mut Writer) {
        w.u8(CONSENT_VERSION);
        w.nested(&self.device);
        w.u64(self.seq);
        w.raw(&self.prev);
        w.raw(&self.anchor.0);
        w.u64(self.time_ms);
        w.u8(self.action.tag());
        match &self.action {
            ConsentAction::Given(request) => w.bytes16(&request.to_bytes()),
            ConsentAction::Revoked(id) | ConsentAction::Expired(id) => w.raw(&id.0),
        }
        w.nested(&self.signer);
    }

    /// What the signature and the hash cover: everything but the signature.
    pub fn content_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        w.into_inner()
    }

    /// `H("latchkey/v1/consent-entry-hash", content)`: what the next entry's `prev` names.
    /// The signature is not part of it, so one entry keeps one hash whatever valid signature
    /// bytes a copy carries.
    pub fn hash(&self) -> [u8; 32] {
        hash::labeled(hash::CONSENT_ENTRY_HASH, &[&self.content_bytes()])
    }

    fn signed_message(&self) -> Vec<u8> {
        [ENTRY_LABEL, &self.content_bytes()].concat()
    }
}

impl Codec for ConsentEntry {
    const NAME: &'static str = "consent entry";
    const MAX_LEN: usize = MAX_CONSENT_ENTRY;
    fn encode(&self, w: &mut Writer) {
        self.encode_content(w);
        w.nested(&self.signature);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != CONSENT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "consent entry",
                found: version,
                supported: CONSENT_VERSION,
            });
        }
        let device = r.nested()?;
        let seq = r.u64()?;
        let prev = r.array()?;
        let anchor = OpId(r.array()?);
        let time_ms = r.u64()?;
        let action = match r.u8()? {
            1 => ConsentAction::Given(SignedConsentRequest::from_bytes(
                r.bytes16(MAX_CONSENT_REQUEST)?,
            )?),
            2 => ConsentAction::Revoked(ConsentId(r.array()?)),
            3 => ConsentAction::Expired(ConsentId(r.array()?)),
            tag => {
                return Err(Error::UnknownTag {
                    what: "consent action",
                    tag,
                })
            }
        };
        Ok(ConsentEntry {
            device,
            seq,
            prev,
            anchor,
            time_ms,
            action,
            signer: r.nested()?,
            signature: r.nested()?,
        })
    }
}

/// Entries as nodes serve them: `u32 count || entries`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsentList(pub Vec<ConsentEntry>);

impl Codec for ConsentList {
    const NAME: &'static str = "consent list";
    const MAX_LEN: usize = MAX_CONSENT_LIST;
    fn encode(&self, w: &mut Writer) {
        w.u32(self.0.len() as u32);
        for entry in &self.0 {
            w.nested(entry);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u32()? as usize;
        check_len("consent list entries", n, MAX_CONSENT_LIST_ENTRIES)?;
        // Before allocating: every entry takes at least MIN_CONSENT_ENTRY bytes.
        if r.remaining() < n * MIN_CONSENT_ENTRY {
            return Err(Error::Truncated {
                what: "consent list",
                needed: n * MIN_CONSENT_ENTRY - r.remaining(),
            });
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let start = r.position();
            let entry: ConsentEntry = r.nested()?;
            check_len("consent entry", r.position() - start, MAX_CONSENT_ENTRY)?;
            entries.push(entry);
        }
        Ok(ConsentList(entries))
    }
}

/// How a consent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// A revoke entry.
    Revoked,
    /// An expiry entry.
    Expired,
    /// Its `until` (the value) passed; no expiry entry yet. Only [`ConsentLog::consents_at`]
    /// and [`ConsentLog::readers_at`] report it, as of the time they are asked about.
    Lapsed(u64),
    /// A new era began (transfer or factory reset): the new owners never consented.
    Transferred,
}

/// When and how a consent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub kind: EndKind,
    pub time_ms: u64,
    /// The owner who signed the entry (revoked, expired); `None` for a lapse or a transfer.
    pub by: Option<PublicKey>,
    /// The entry's seq (revoked, expired).
    pub seq: Option<u64>,
}

/// One consent as the log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentStatus {
    pub id: ConsentId,
    pub request: SignedConsentRequest,
    pub given_ms: u64,
    pub given_by: PublicKey,
    pub given_seq: u64,
    pub ended: Option<Ended>,
}

impl ConsentStatus {
    /// Whether its provider could read new readings at `t_ms`: given at or before `t_ms`, not
    /// ended, and not past `until`.
    pub fn active_at(&self, t_ms: u64) -> bool {
        self.given_ms <= t_ms
            && self.ended.is_none_or(|e| e.time_ms > t_ms)
            && self.request.request().until_ms.is_none_or(|u| u > t_ms)
    }

    /// Its status as of `t_ms`: an `until` at or before `t_ms` ends it as
    /// [`EndKind::Lapsed`] unless it ended earlier.
    fn as_of(&self, t_ms: u64) -> ConsentStatus {
        let mut status = self.clone();
        if let Some(until) = self.request.request().until_ms {
            if until <= t_ms && self.ended.is_none_or(|e| e.time_ms > until) {
                status.ended = Some(Ended {
                    kind: EndKind::Lapsed(until),
                    time_ms: until,
                    by: None,
                    seq: None,
                });
            }
        }
        status
    }
}

/// What the log keeps per consent beyond its public status.
#[derive(Debug, Clone)]
struct Given {
    status: ConsentStatus,
    /// The era (epoch op id) of the anchor of the entry that gave it.
    era: OpId,
    /// The spine seq of that anchor.
    anchor_seq: u64,
    /// Ended by a revoke or expiry entry (as opposed to the chain's era change).
    by_entry: Option<Ended>,
}

/// A verified consent log (possibly empty) of one device.
#[derive(Debug, Clone)]
pub struct ConsentLog {
    device: DeviceId,
    entries: Vec<ConsentEntry>,
    last_hash: [u8; 32],
    last_anchor_seq: u64,
    given: Vec<Given>,
    by_id: HashMap<ConsentId, usize>,
}

fn refused(seq: u64, why: &'static str) -> Error {
    Error::ConsentRefused { seq, why }
}

impl ConsentLog {
    /// An empty log for the chain's device.
    pub fn new(chain: &Chain) -> ConsentLog {
        ConsentLog {
            device: chain.device(),
            entries: Vec::new(),
            last_hash: [0; 32],
            last_anchor_seq: 0,
            given: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    /// Verifies a whole log from seq 1 against a verified chain (module docs: the rules).
    pub fn verify(chain: &Chain, entries: Vec<ConsentEntry>) -> Result<ConsentLog> {
        check_len("consent log", entries.len(), MAX_CONSENT_LOG)?;
        let mut log = ConsentLog::new(chain);
        for entry in entries {
            log.check(chain, &entry, false)?;
            log.push(chain, entry);
        }
        log.refresh_eras(chain);
        Ok(log)
    }

    /// Whether `entry` may be appended now: the log rules plus a *current* owner as signer and
    /// an anchor in the *current* era (a node admitting it, a device accepting it).
    pub fn check_next(&self, chain: &Chain, entry: &ConsentEntry) -> Result<()> {
        self.check(chain, entry, true)
    }

    /// Appends after [`Self::check_next`].
    pub fn append(&mut self, chain: &Chain, entry: ConsentEntry) -> Result<()> {
        self.check(chain, &entry, true)?;
        self.push(chain, entry);
        self.refresh_eras(chain);
        Ok(())
    }

    /// Builds and signs the next entry: anchored on the chain's spine head, at `time_ms` (or
    /// the previous entry's time, if later), and checked as [`Self::check_next`] would.
    pub fn next_entry(
        &self,
        chain: &Chain,
        owner: &SigningKey,
        time_ms: u64,
        action: ConsentAction,
    ) -> Result<ConsentEntry> {
        let time_ms = time_ms.max(self.entries.last().map_or(0, |e| e.time_ms));
        let mut entry = ConsentEntry {
            device: chain.device(),
            seq: self.entries.len() as u64 + 1,
            prev: self.last_hash,
            anchor: chain.head(),
            time_ms,
            action,
            signer: owner.public_key(),
            signature: Signature([0; 64]),
        };
        entry.signature = owner.sign(&entry.signed_message());
        self.check_next(chain, &entry)?;
        Ok(entry)
    }

    pub fn device(&self) -> DeviceId {
        self.device
    }

    pub fn entries(&self) -> &[ConsentEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The hash the next entry's `prev` must name (zeros for an empty log).
    pub fn head_hash(&self) -> [u8; 32] {
        self.last_hash
    }

    /// Every consent ever given, in log order, with how it ended by the log and the chain
    /// (revoked, expired, transferred). A lapsed `until` is not applied: see
    /// [`Self::consents_at`].
    pub fn consents(&self) -> Vec<ConsentStatus> {
        self.given.iter().map(|g| g.status.clone()).collect()
    }

    /// One consent's status.
    pub fn consent(&self, id: &ConsentId) -> Option<&ConsentStatus> {
        self.by_id.get(id).map(|&i| &self.given[i].status)
    }

    /// Every consent given at or before `t_ms`, as of `t_ms` (an `until` at or before it ends
    /// the consent as [`EndKind::Lapsed`]; ends after `t_ms` are not shown).
    pub fn consents_at(&self, t_ms: u64) -> Vec<ConsentStatus> {
        self.given
            .iter()
            .filter(|g| g.status.given_ms <= t_ms)
            .map(|g| {
                let mut s = g.status.clone();
                if s.ended.is_some_and(|e| e.time_ms > t_ms) {
                    s.ended = None;
                }
                s.as_of(t_ms)
            })
            .collect()
    }

    /// Who could read the stream(s) at `t_ms`: the consents active then, in log order.
    pub fn readers_at(&self, t_ms: u64) -> Vec<ConsentStatus> {
        self.given
            .iter()
            .filter(|g| g.status.active_at(t_ms))
            .map(|g| g.status.clone())
            .collect()
    }

    fn check(&self, chain: &Chain, e: &ConsentEntry, current: bool) -> Result<()> {
        let seq = e.seq;
        if e.device != self.device || chain.device() != self.device {
            return Err(refused(seq, "it is for another device"));
        }
        if self.entries.len() >= MAX_CONSENT_LOG {
            return Err(refused(seq, "the log is full (100,000 entries)"));
        }
        if seq != self.entries.len() as u64 + 1 {
            return Err(refused(seq, "its seq is not the log's next"));
        }
        if e.prev != self.last_hash {
            return Err(refused(seq, "it does not link to the entry before it"));
        }
        let Some((anchor_seq, owners, era)) = chain.spine_anchor(&e.anchor) else {
            return Err(refused(
                seq,
                "its anchor is not an op of this chain; fetch the device's chain again",
            ));
        };
        if anchor_seq < self.last_anchor_seq {
            return Err(refused(seq, "its anchor is before the previous entry's"));
        }
        if let Some(last) = self.entries.last() {
            if e.time_ms < last.time_ms {
                return Err(refused(seq, "its time is before the previous entry's"));
            }
        }
        if !owners.contains(&e.signer) {
            return Err(refused(seq, "its signer is not an owner at its anchor"));
        }
        if current {
            if !chain.state().is_owner(&e.signer) {
                return Err(refused(seq, "its signer is no longer an owner"));
            }
            if era != chain.state().epoch {
                return Err(refused(
                    seq,
                    "its anchor is in an earlier era (the device changed hands since)",
                ));
            }
        }
        if !e.signer.verify(&e.signature, &e.signed_message()) {
            return Err(refused(seq, "the owner's signature does not verify"));
        }
        match &e.action {
            ConsentAction::Given(request) => {
                if request.verify().is_err() {
                    return Err(refused(
                        seq,
                        "the provider's signature on the request does not verify",
                    ));
                }
                if request.request().device != self.device {
                    return Err(refused(seq, "the request is for another device"));
                }
                if self.by_id.contains_key(&request.id()) {
                    return Err(refused(seq, "this consent was given before"));
                }
                if request.request().until_ms.is_some_and(|u| u <= e.time_ms) {
                    return Err(refused(seq, "the request's until has passed"));
                }
            }
            ConsentAction::Revoked(id) | ConsentAction::Expired(id) => {
                let Some(given) = self.by_id.get(id).map(|&i| &self.given[i]) else {
                    return Err(refused(seq, "it ends a consent that was never given"));
                };
                if given.by_entry.is_some() || given.era != era {
                    return Err(refused(seq, "the consent has already ended"));
                }
                if matches!(e.action, ConsentAction::Expired(_))
                    && given
                        .status
                        .request
                        .request()
                        .until_ms
                        .is_none_or(|u| u > e.time_ms)
                {
                    return Err(refused(seq, "the consent's until has not passed"));
                }
            }
        }
        Ok(())
    }

    /// Records an entry that passed [`Self::check`].
    fn push(&mut self, chain: &Chain, e: ConsentEntry) {
        let (anchor_seq, _, era) = chain
            .spine_anchor(&e.anchor)
            .expect("checked: the anchor is a spine op");
        match &e.action {
            ConsentAction::Given(request) => {
                let id = request.id();
                self.by_id.insert(id, self.given.len());
                self.given.push(Given {
                    status: ConsentStatus {
                        id,
                        request: request.clone(),
                        given_ms: e.time_ms,
                        given_by: e.signer,
                        given_seq: e.seq,
                        ended: None,
                    },
                    era,
                    anchor_seq,
                    by_entry: None,
                });
            }
            ConsentAction::Revoked(id) | ConsentAction::Expired(id) => {
                let kind = if matches!(e.action, ConsentAction::Revoked(_)) {
                    EndKind::Revoked
                } else {
                    EndKind::Expired
                };
                let i = self.by_id[id];
                self.given[i].by_entry = Some(Ended {
                    kind,
                    time_ms: e.time_ms,
                    by: Some(e.signer),
                    seq: Some(e.seq),
                });
            }
        }
        self.last_hash = e.hash();
        self.last_anchor_seq = anchor_seq;
        self.entries.push(e);
    }

    /// Each consent's end: the earlier of its revoke/expiry entry and the start of the next era
    /// after its anchor in `chain`.
    fn refresh_eras(&mut self, chain: &Chain) {
        for g in &mut self.given {
            let transfer = chain.era_end_after(g.anchor_seq).map(|(_, t)| Ended {
                kind: EndKind::Transferred,
                time_ms: t,
                by: None,
                seq: None,
            });
            g.status.ended = match (g.by_entry, transfer) {
                (Some(a), Some(b)) => Some(if b.time_ms < a.time_ms { b } else { a }),
                (a, b) => a.or(b),
            };
        }
    }
}
