//! The audit log: one entry per accepted or rejected command, hash-chained and signed by the
//! device's identity key, so an owner who reads it can tell whether anything was changed,
//! removed or reordered. Byte layout: docs/PROTOCOL.md, "Audit log".

use crate::codec::{Codec, Reader, Writer};
use crate::command::CommandId;
use crate::hash;
use crate::keys::{PublicKey, Signature, SigningKey};
use crate::Error as ProtoError;

pub const AUDIT_VERSION: u8 = 1;
/// Signatures over an entry are over this label followed by the entry's content.
pub const AUDIT_SIGNING_LABEL: &[u8] = b"latchkey/v1/audit\0";
/// `entry_hash = H(label, content)`; the next entry's `prev` is this hash.
pub const AUDIT_ENTRY_LABEL: &str = "latchkey/v1/audit-entry";
/// `envelope_hash = H(label, envelope bytes)`: names an envelope without keeping it.
pub const ENVELOPE_LABEL: &str = "latchkey/v1/envelope";
pub const MAX_DETAIL: usize = 120;
/// The largest audit page (it travels as a response body).
pub const MAX_PAGE: usize = crate::command::MAX_RESPONSE_BODY;
/// The largest encoded entry.
pub const MAX_ENTRY: usize = 512;

pub fn envelope_hash(envelope: &[u8]) -> [u8; 32] {
    hash::labeled(ENVELOPE_LABEL, &[envelope])
}

/// Where in the pipeline a command was decided. Wire values are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Stage {
    Size = 1,
    Header = 2,
    Decrypt = 3,
    Unpad = 4,
    Decode = 5,
    Signature = 6,
    Device = 7,
    Timestamp = 8,
    Challenge = 9,
    Nonce = 10,
    Authority = 11,
    UseLimit = 12,
    Action = 13,
}

impl Stage {
    pub const ALL: [Stage; 13] = [
        Stage::Size,
        Stage::Header,
        Stage::Decrypt,
        Stage::Unpad,
        Stage::Decode,
        Stage::Signature,
        Stage::Device,
        Stage::Timestamp,
        Stage::Challenge,
        Stage::Nonce,
        Stage::Authority,
        Stage::UseLimit,
        Stage::Action,
    ];

    pub fn from_u8(v: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Size => "size",
            Stage::Header => "header",
            Stage::Decrypt => "decrypt",
            Stage::Unpad => "unpad",
            Stage::Decode => "decode",
            Stage::Signature => "signature",
            Stage::Device => "device",
            Stage::Timestamp => "timestamp",
            Stage::Challenge => "challenge",
            Stage::Nonce => "nonce",
            Stage::Authority => "authority",
            Stage::UseLimit => "use_limit",
            Stage::Action => "action",
        }
    }
}

/// How the command reached the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Via {
    /// `POST /v1/command` on the local network.
    Local = 0,
    /// A registry node's mailbox.
    Relay = 1,
}

/// How much the ownership view the decision used could be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ViewMark {
    /// The last quorum check is older than the configured maximum (nodes unreachable): the
    /// decision used the cached chain.
    pub stale: bool,
    /// Seconds since the last quorum check, if there was one and the clock is set.
    pub age_s: Option<u32>,
}

/// What happened to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Device time, if its clock is set.
    pub time_ms: Option<u64>,
    pub via: Via,
    pub envelope: [u8; 32],
    /// Known once the signature verified (or, for a bad signature, the key it claimed).
    pub sender: Option<PublicKey>,
    pub command: Option<CommandId>,
    /// Empty when the command could not be read.
    pub action: String,
    /// 0 accepted, else a `RejectCode` (docs/PROTOCOL.md §5.5).
    pub code: u16,
    pub stage: Stage,
    pub detail: String,
    pub view: ViewMark,
}

/// One link of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    /// `entry_hash` of the entry before (all zeros for the first).
    pub prev: [u8; 32],
    pub record: AuditRecord,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    pub entry: AuditEntry,
    pub signature: Signature,
}

impl AuditEntry {
    fn encode_content(&self, w: &mut Writer) {
        let r = &self.record;
        w.u8(AUDIT_VERSION);
        w.u64(self.seq);
        w.raw(&self.prev);
        w.option(r.time_ms.as_ref(), |w, t| w.u64(*t));
        w.u8(r.via as u8);
        w.raw(&r.envelope);
        w.option(r.sender.as_ref(), |w, k| w.nested(k));
        w.option(r.command.as_ref(), |w, c| w.raw(&c.0));
        w.bytes8(r.action.as_bytes());
        w.u16(r.code);
        w.u8(r.stage as u8);
        w.bytes8(r.detail.as_bytes());
        w.u8(u8::from(r.view.stale));
        w.option(r.view.age_s.as_ref(), |w, a| w.u32(*a));
    }

    fn read_content(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let version = r.u8()?;
        if version != AUDIT_VERSION {
            return Err(ProtoError::UnsupportedVersion {
                what: "audit entry",
                found: version,
                supported: AUDIT_VERSION,
            });
        }
        let seq = r.u64()?;
        let prev = r.array()?;
        let time_ms = r.option(|r| r.u64())?;
        let via = match r.u8()? {
            0 => Via::Local,
            1 => Via::Relay,
            tag => return Err(ProtoError::UnknownTag { what: "via", tag }),
        };
        let envelope = r.array()?;
        let sender = r.option(|r| r.nested())?;
        let command = r.option(|r| r.array().map(CommandId))?;
        let action = r.str8("action", crate::grant::MAX_ACTION_LEN)?;
        let code = r.u16()?;
        let stage_tag = r.u8()?;
        let stage = Stage::from_u8(stage_tag).ok_or(ProtoError::UnknownTag {
            what: "audit stage",
            tag: stage_tag,
        })?;
        let detail = r.str8("detail", MAX_DETAIL)?;
        let stale = match r.u8()? {
            0 => false,
            1 => true,
            tag => {
                return Err(ProtoError::UnknownTag {
                    what: "stale flag",
                    tag,
                })
            }
        };
        let age_s = r.option(|r| r.u32())?;
        Ok(AuditEntry {
            seq,
            prev,
            record: AuditRecord {
                time_ms,
                via,
                envelope,
                sender,
                command,
                action,
                code,
                stage,
                detail,
                view: ViewMark { stale, age_s },
            },
        })
    }

    pub fn content_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        w.into_inner()
    }

    /// The hash the next entry links to. Covers the content only, never the signature
    /// (docs/PROTOCOL.md: nothing is identified by signature bytes).
    pub fn hash(&self) -> [u8; 32] {
        hash::labeled(AUDIT_ENTRY_LABEL, &[&self.content_bytes()])
    }

    /// Signs with the device identity key. Over-long details are cut at a character boundary.
    pub fn sign(mut self, identity: &SigningKey) -> SignedEntry {
        let detail = &mut self.record.detail;
        if detail.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        let signature = identity.sign(&[AUDIT_SIGNING_LABEL, &self.content_bytes()].concat());
        SignedEntry {
            entry: self,
            signature,
        }
    }
}

impl SignedEntry {
    pub fn verify_signature(&self, identity: &PublicKey) -> bool {
        identity.verify(
            &self.signature,
            &[AUDIT_SIGNING_LABEL, &self.entry.content_bytes()].concat(),
        )
    }
}

impl Codec for SignedEntry {
    const NAME: &'static str = "audit entry";
    const MAX_LEN: usize = MAX_ENTRY;
    fn encode(&self, w: &mut Writer) {
        self.entry.encode_content(w);
        w.nested(&self.signature);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(SignedEntry {
            entry: AuditEntry::read_content(r)?,
            signature: r.nested()?,
        })
    }
}

/// Why a run of entries does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq}: {why}")]
pub struct AuditBroken {
    pub seq: u64,
    pub why: &'static str,
}

/// Checks a consecutive run of entries, oldest first: every signature by `identity`,
/// consecutive sequence numbers, and each `prev` equal to the hash of the entry before. The
/// first entry's `prev` must be zeros when it is entry 0, or equal `anchor` when given (the
/// hash of the entry before the run, e.g. from an earlier page).
pub fn verify_entries(
    entries: &[SignedEntry],
    identity: &PublicKey,
    anchor: Option<[u8; 32]>,
) -> Result<(), AuditBroken> {
    let mut expected_prev = anchor;
    let mut expected_seq: Option<u64> = None;
    for e in entries {
        let seq = e.entry.seq;
        if !e.verify_signature(identity) {
            return Err(AuditBroken {
                seq,
                why: "its signature does not verify (altered, or not signed by this device)",
            });
        }
        if let Some(want) = expected_seq {
            if seq != want {
                return Err(AuditBroken {
                    seq,
                    why: "sequence gap: entries were removed or reordered",
                });
            }
        }
        if seq == 0 && e.entry.prev != [0; 32] {
            return Err(AuditBroken {
                seq,
                why: "the first entry must link to nothing",
            });
        }
        if let Some(prev) = expected_prev {
            if e.entry.prev != prev {
                return Err(AuditBroken {
                    seq,
                    why: "it does not link to the entry before (hash chain broken)",
                });
            }
        }
        expected_prev = Some(e.entry.hash());
        expected_seq = Some(seq + 1);
    }
    Ok(())
}

/// A page of the log as the `audit` action returns it: `u8 version || u64 next_seq ||
/// list8(entry)`, oldest first. `next_seq` is the sequence the device's next entry will get, so
/// the reader knows whether the page reaches the newest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub next_seq: u64,
    pub entries: Vec<SignedEntry>,
}

impl Codec for AuditPage {
    const NAME: &'static str = "audit page";
    const MAX_LEN: usize = MAX_PAGE;
    fn encode(&self, w: &mut Writer) {
        w.u8(AUDIT_VERSION);
        w.u64(self.next_seq);
        w.list8(&self.entries, |w, e| w.nested(e));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let version = r.u8()?;
        if version != AUDIT_VERSION {
            return Err(ProtoError::UnsupportedVersion {
                what: "audit page",
                found: version,
                supported: AUDIT_VERSION,
            });
        }
        Ok(AuditPage {
            next_seq: r.u64()?,
            entries: r.list8(255, |r| r.nested())?,
        })
    }
}

/// The `audit` action's argument: empty for the newest entries, or `u64 before` for the entries
/// with a sequence below `before` (paging back).
pub fn parse_page_args(args: &[u8]) -> Result<Option<u64>, &'static str> {
    match args.len() {
        0 => Ok(None),
        8 => Ok(Some(u64::from_be_bytes(args.try_into().expect("8 bytes")))),
        _ => Err("audit takes no argument, or an 8-byte big-endian sequence to page back from"),
    }
}

/// Builds the largest page (newest entries, oldest first) that fits a response body from
/// `newest_first` encoded entries.
pub fn build_page(next_seq: u64, newest_first: Vec<Vec<u8>>) -> Vec<u8> {
    let mut chosen: Vec<Vec<u8>> = Vec::new();
    let mut size = 1 + 8 + 1;
    for e in newest_first {
        if chosen.len() == 255 || size + e.len() > MAX_PAGE {
            break;
        }
        size += e.len();
        chosen.push(e);
    }
    chosen.reverse();
    let mut w = Writer::new();
    w.u8(AUDIT_VERSION);
    w.u64(next_seq);
    w.u8(chosen.len() as u8);
    for e in chosen {
        w.raw(&e);
    }
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn person(n: u64) -> SigningKey {
        SigningKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(n))
    }

    fn record(i: u8) -> AuditRecord {
        AuditRecord {
            time_ms: Some(1_800_000_000_000 + u64::from(i)),
            via: if i.is_multiple_of(2) {
                Via::Local
            } else {
                Via::Relay
            },
            envelope: [i; 32],
            sender: (!i.is_multiple_of(3)).then(|| person(1).public_key()),
            command: (!i.is_multiple_of(3)).then_some(CommandId([i; 32])),
            action: if i.is_multiple_of(3) {
                String::new()
            } else {
                "unlock".into()
            },
            code: u16::from(i % 4),
            stage: Stage::ALL[usize::from(i) % Stage::ALL.len()],
            detail: "x".repeat(usize::from(i) * 10),
            view: ViewMark {
                stale: !i.is_multiple_of(2),
                age_s: i.is_multiple_of(2).then_some(u32::from(i)),
            },
        }
    }

    fn log(n: u8) -> (SigningKey, Vec<SignedEntry>) {
        let key = person(9);
        let mut prev = [0u8; 32];
        let mut out = Vec::new();
        for i in 0..n {
            let e = AuditEntry {
                seq: u64::from(i),
                prev,
                record: record(i),
            }
            .sign(&key);
            prev = e.entry.hash();
            out.push(e);
        }
        (key, out)
    }

    #[test]
    fn entries_round_trip_and_verify() {
        let (key, entries) = log(20);
        for e in &entries {
            let bytes = e.to_bytes();
            assert!(bytes.len() <= MAX_ENTRY);
            assert_eq!(&SignedEntry::from_bytes(&bytes).unwrap(), e);
        }
        assert_eq!(entries[15].entry.record.detail.len(), MAX_DETAIL, "cut");
        verify_entries(&entries, &key.public_key(), None).unwrap();
        verify_entries(&entries[5..], &key.public_key(), None).unwrap();
        verify_entries(
            &entries[5..],
            &key.public_key(),
            Some(entries[4].entry.hash()),
        )
        .unwrap();
    }

    #[test]
    fn fail_tampering_is_detected() {
        let (key, entries) = log(6);
        let pk = key.public_key();
        // An altered field breaks the signature.
        let mut altered = entries.clone();
        altered[2].entry.record.code = 0;
        assert_eq!(verify_entries(&altered, &pk, None).unwrap_err().seq, 2);
        // A removed entry breaks the sequence.
        let mut removed = entries.clone();
        removed.remove(3);
        assert_eq!(verify_entries(&removed, &pk, None).unwrap_err().seq, 4);
        // Swapped entries break the sequence.
        let mut swapped = entries.clone();
        swapped.swap(1, 2);
        assert!(verify_entries(&swapped, &pk, None).is_err());
        // A re-signed entry by another key fails the signature.
        let forged = AuditEntry {
            seq: 6,
            prev: entries[5].entry.hash(),
            record: record(6),
        }
        .sign(&person(2));
        let mut with_forged = entries.clone();
        with_forged.push(forged);
        assert_eq!(verify_entries(&with_forged, &pk, None).unwrap_err().seq, 6);
        // A wrong anchor is refused.
        assert!(verify_entries(&entries[1..], &pk, Some([7; 32])).is_err());
        // A flipped byte of the encoding either fails to decode or fails to verify.
        for i in 0..entries[1].to_bytes().len() {
            let bytes = latchkey_testkit::flip_bit(&entries[1].to_bytes(), i);
            if let Ok(e) = SignedEntry::from_bytes(&bytes) {
                let run = [entries[0].clone(), e, entries[2].clone()];
                assert!(verify_entries(&run, &pk, None).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn pages_fit_a_response_body() {
        let (key, entries) = log(200);
        let newest_first: Vec<Vec<u8>> = entries.iter().rev().map(|e| e.to_bytes()).collect();
        let page_bytes = build_page(200, newest_first);
        assert!(page_bytes.len() <= MAX_PAGE);
        let page = AuditPage::from_bytes(&page_bytes).unwrap();
        assert!(page.entries.len() > 10);
        assert_eq!(page.entries.last().unwrap().entry.seq, 199);
        verify_entries(&page.entries, &key.public_key(), None).unwrap();
        assert_eq!(parse_page_args(&[]), Ok(None));
        assert_eq!(parse_page_args(&7u64.to_be_bytes()), Ok(Some(7)));
        assert!(parse_page_args(&[1, 2]).is_err());
    }
}
