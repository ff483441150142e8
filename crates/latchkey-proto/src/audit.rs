//! The audit log: hash-chained entries signed by the device's identity key, so an owner who
//! reads it can tell whether anything was changed, removed or reordered. Byte layout:
//! docs/PROTOCOL.md §9.
//!
//! Version 2 entries carry the ownership era they belong to (the log is cut at every claim,
//! transfer and factory reset, and restarts at sequence 0 with an era marker), and one of five
//! kinds: a decision on one command, an "about to run" record written durably before an
//! actuator runs, a per-interval summary of refusals nobody with standing sent (so a flood of
//! junk costs one entry a minute, not one each), a marker of a pruned prefix, and the era
//! marker.

use crate::codec::{Codec, Reader, Writer};
use crate::command::CommandId;
use crate::hash;
use crate::keys::{PublicKey, Signature, SigningKey};
use crate::Error as ProtoError;

pub const AUDIT_VERSION: u8 = 2;
/// Signatures over an entry are over this label followed by the entry's content.
pub const AUDIT_SIGNING_LABEL: &[u8] = b"latchkey/v1/audit\0";
/// `entry_hash = H(label, content)`; the next entry's `prev` is this hash.
pub const AUDIT_ENTRY_LABEL: &str = "latchkey/v1/audit-entry";
/// `envelope_hash = H(label, envelope bytes)`: names an envelope without keeping it.
pub const ENVELOPE_LABEL: &str = "latchkey/v1/envelope";
/// `args_hash = H(label, argument bytes)`: what was passed, without keeping it.
pub const ARGS_LABEL: &str = "latchkey/v1/audit-args";
pub const MAX_DETAIL: usize = 120;
/// The largest audit page (it travels as a response body).
pub const MAX_PAGE: usize = crate::command::MAX_RESPONSE_BODY;
/// The largest encoded entry.
pub const MAX_ENTRY: usize = 512;
/// The most rows one refusal summary holds; a device starts a new summary rather than grow one.
pub const MAX_SUMMARY_ROWS: usize = 32;

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

    /// Refusals at these stages come before the sender is authenticated.
    pub fn before_signature(self) -> bool {
        self <= Stage::Signature
    }

    fn read(r: &mut Reader<'_>) -> Result<Stage, ProtoError> {
        let tag = r.u8()?;
        Stage::from_u8(tag).ok_or(ProtoError::UnknownTag {
            what: "audit stage",
            tag,
        })
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

impl Via {
    fn read(r: &mut Reader<'_>) -> Result<Via, ProtoError> {
        match r.u8()? {
            0 => Ok(Via::Local),
            1 => Ok(Via::Relay),
            tag => Err(ProtoError::UnknownTag { what: "via", tag }),
        }
    }
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

impl ViewMark {
    fn encode(&self, w: &mut Writer) {
        w.u8(u8::from(self.stale));
        w.option(self.age_s.as_ref(), |w, a| w.u32(*a));
    }

    fn read(r: &mut Reader<'_>) -> Result<ViewMark, ProtoError> {
        let stale = read_flag(r, "stale flag")?;
        let age_s = r.option(|r| r.u32())?;
        Ok(ViewMark { stale, age_s })
    }
}

fn read_flag(r: &mut Reader<'_>, what: &'static str) -> Result<bool, ProtoError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        tag => Err(ProtoError::UnknownTag { what, tag }),
    }
}

/// What a command passed to its action, without the bytes themselves: an owner who knows what
/// they sent can check it, and anyone can see whether anything was passed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgsDigest {
    /// `H("latchkey/v1/audit-args", args)`.
    pub hash: [u8; 32],
    pub len: u16,
}

impl ArgsDigest {
    pub fn of(args: &[u8]) -> ArgsDigest {
        ArgsDigest {
            hash: hash::labeled(ARGS_LABEL, &[args]),
            // Commands cap their arguments at 8,192 bytes, far below u16::MAX.
            len: u16::try_from(args.len()).unwrap_or(u16::MAX),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.raw(&self.hash);
        w.u16(self.len);
    }

    fn read(r: &mut Reader<'_>) -> Result<ArgsDigest, ProtoError> {
        let hash = r.array()?;
        let len = r.u16()?;
        // The consent action's arguments (one consent entry, §14) are the longest any has.
        if usize::from(len) > crate::event::MAX_ANY_ARGS {
            return Err(ProtoError::Invalid {
                what: "audit entry",
                why: "its argument length is over the command limit",
            });
        }
        Ok(ArgsDigest { hash, len })
    }
}

/// Kind 1: what happened to one command (accepted, refused, or the outcome of its action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub via: Via,
    pub envelope: [u8; 32],
    /// Known once the signature verified (or, for a bad signature, the key it claimed).
    pub sender: Option<PublicKey>,
    pub command: Option<CommandId>,
    /// Empty when the command could not be read.
    pub action: String,
    /// The command's arguments, once it decoded.
    pub args: Option<ArgsDigest>,
    /// 0 accepted, else a `RejectCode` (docs/PROTOCOL.md §5.5).
    pub code: u16,
    pub stage: Stage,
    pub detail: String,
    pub view: ViewMark,
}

impl AuditRecord {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.via as u8);
        w.raw(&self.envelope);
        w.option(self.sender.as_ref(), |w, k| w.nested(k));
        w.option(self.command.as_ref(), |w, c| w.raw(&c.0));
        w.bytes8(self.action.as_bytes());
        w.option(self.args.as_ref(), |w, a| a.encode(w));
        w.u16(self.code);
        w.u8(self.stage as u8);
        w.bytes8(self.detail.as_bytes());
        self.view.encode(w);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(AuditRecord {
            via: Via::read(r)?,
            envelope: r.array()?,
            sender: r.option(|r| r.nested())?,
            command: r.option(|r| r.array().map(CommandId))?,
            action: r.str8("action", crate::grant::MAX_ACTION_LEN)?,
            args: r.option(ArgsDigest::read)?,
            code: r.u16()?,
            stage: Stage::read(r)?,
            detail: r.str8("detail", MAX_DETAIL)?,
            view: ViewMark::read(r)?,
        })
    }
}

/// Kind 2: an authorized command whose action is about to run. Written durably before the
/// actuator starts, so a power cut during an unlock cannot lose it; the outcome follows as a
/// [`AuditRecord`] with the same `command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub via: Via,
    pub envelope: [u8; 32],
    pub sender: PublicKey,
    pub command: CommandId,
    pub action: String,
    pub args: ArgsDigest,
    /// The sender is an owner (else a guest holding a grant).
    pub by_owner: bool,
    pub view: ViewMark,
}

impl Running {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.via as u8);
        w.raw(&self.envelope);
        w.nested(&self.sender);
        w.raw(&self.command.0);
        w.bytes8(self.action.as_bytes());
        self.args.encode(w);
        w.u8(u8::from(self.by_owner));
        self.view.encode(w);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Running {
            via: Via::read(r)?,
            envelope: r.array()?,
            sender: r.nested()?,
            command: CommandId(r.array()?),
            action: r.str8("action", crate::grant::MAX_ACTION_LEN)?,
            args: ArgsDigest::read(r)?,
            by_owner: read_flag(r, "owner flag")?,
            view: ViewMark::read(r)?,
        })
    }
}

/// Why a refusal was counted in a summary instead of written on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum RefusalClass {
    /// Refused before the signature verified: nobody is known to have sent it.
    Unauthenticated = 1,
    /// Signed, but by a key that is neither a current owner nor the subject of a grant chain
    /// rooted at one (anyone can make such keys).
    NoStanding = 2,
    /// Another copy of an envelope already written to the log.
    Repeat = 3,
    /// From a sender with standing, beyond the refusals per interval written on their own.
    OverCap = 4,
}

impl RefusalClass {
    pub const ALL: [RefusalClass; 4] = [
        RefusalClass::Unauthenticated,
        RefusalClass::NoStanding,
        RefusalClass::Repeat,
        RefusalClass::OverCap,
    ];

    pub fn from_u8(v: u8) -> Option<RefusalClass> {
        RefusalClass::ALL.into_iter().find(|c| *c as u8 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            RefusalClass::Unauthenticated => "unauthenticated",
            RefusalClass::NoStanding => "no_standing",
            RefusalClass::Repeat => "repeat",
            RefusalClass::OverCap => "over_cap",
        }
    }
}

/// One row of a refusal summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalCount {
    pub class: RefusalClass,
    pub stage: Stage,
    pub code: u16,
    pub count: u32,
}

impl RefusalCount {
    pub fn key(&self) -> (RefusalClass, Stage, u16) {
        (self.class, self.stage, self.code)
    }
}

/// Kind 3: refusals counted over one interval. Rows are sorted by (class, stage, code), each
/// key once, each count at least 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalSummary {
    /// Device time of the first and last refusal counted, if its clock was set.
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    pub rows: Vec<RefusalCount>,
}

impl RefusalSummary {
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|r| u64::from(r.count)).sum()
    }

    fn encode(&self, w: &mut Writer) {
        w.option(self.first_ms.as_ref(), |w, t| w.u64(*t));
        w.option(self.last_ms.as_ref(), |w, t| w.u64(*t));
        w.list8(&self.rows, |w, row| {
            w.u8(row.class as u8);
            w.u8(row.stage as u8);
            w.u16(row.code);
            w.u32(row.count);
        });
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let invalid = |why| ProtoError::Invalid {
            what: "refusal summary",
            why,
        };
        let first_ms = r.option(|r| r.u64())?;
        let last_ms = r.option(|r| r.u64())?;
        if let (Some(a), Some(b)) = (first_ms, last_ms) {
            if a > b {
                return Err(invalid("its first refusal is after its last"));
            }
        }
        let rows = r.list8(MAX_SUMMARY_ROWS, |r| {
            let tag = r.u8()?;
            let class = RefusalClass::from_u8(tag).ok_or(ProtoError::UnknownTag {
                what: "refusal class",
                tag,
            })?;
            Ok(RefusalCount {
                class,
                stage: Stage::read(r)?,
                code: r.u16()?,
                count: r.u32()?,
            })
        })?;
        if rows.is_empty() {
            return Err(invalid("it counts nothing"));
        }
        if rows.iter().any(|row| row.count == 0) {
            return Err(invalid("a row counts zero refusals"));
        }
        if rows.windows(2).any(|w| w[0].key() >= w[1].key()) {
            return Err(invalid("rows are not sorted by class, stage and code"));
        }
        Ok(RefusalSummary {
            first_ms,
            last_ms,
            rows,
        })
    }
}

/// Kind 4: a prefix of this era's log was deleted to bound its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// The first and last deleted sequence numbers (inclusive).
    pub first: u64,
    pub last: u64,
    /// `entry_hash` of entry `last`: the oldest kept entry links to it.
    pub last_hash: [u8; 32],
    /// Deleted entries no owner had fetched (never accepted commands: only refusals and
    /// summaries are deleted unfetched).
    pub unfetched: u64,
}

impl Pruned {
    /// How many entries the range holds (saturating: a range of every `u64` has no count).
    pub fn count(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    fn encode(&self, w: &mut Writer) {
        w.u64(self.first);
        w.u64(self.last);
        w.raw(&self.last_hash);
        w.u64(self.unfetched);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let p = Pruned {
            first: r.u64()?,
            last: r.u64()?,
            last_hash: r.array()?,
            unfetched: r.u64()?,
        };
        if p.first > p.last || p.unfetched > p.count() {
            return Err(ProtoError::Invalid {
                what: "prune marker",
                why: "its range is empty or counts more unfetched entries than it holds",
            });
        }
        Ok(p)
    }
}

/// What started an ownership era: the chain op kind (docs/PROTOCOL.md §3.2 tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EraCause {
    Genesis = 1,
    Claim = 2,
    Transfer = 4,
    FactoryReset = 7,
}

impl EraCause {
    pub fn from_op_tag(tag: u8) -> Option<EraCause> {
        match tag {
            1 => Some(EraCause::Genesis),
            2 => Some(EraCause::Claim),
            4 => Some(EraCause::Transfer),
            7 => Some(EraCause::FactoryReset),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EraCause::Genesis => "genesis",
            EraCause::Claim => "claim",
            EraCause::Transfer => "transfer",
            EraCause::FactoryReset => "factory-reset",
        }
    }
}

/// Kind 5: the first entry of an era (sequence 0). The entries of earlier eras are deleted
/// from the device; new owners never see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraStart {
    pub cause: EraCause,
    /// Sequence number of the chain op that started the era (its id is the entry's `era`).
    pub op_seq: u64,
}

/// An entry's content after the common header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditBody {
    Decision(AuditRecord),
    Running(Running),
    Refusals(RefusalSummary),
    Pruned(Pruned),
    EraStart(EraStart),
}

impl AuditBody {
    pub fn tag(&self) -> u8 {
        match self {
            AuditBody::Decision(_) => 1,
            AuditBody::Running(_) => 2,
            AuditBody::Refusals(_) => 3,
            AuditBody::Pruned(_) => 4,
            AuditBody::EraStart(_) => 5,
        }
    }

    /// An accepted command's entries: the device never prunes them before an owner fetched
    /// them.
    pub fn is_accepted(&self) -> bool {
        match self {
            AuditBody::Decision(r) => r.code == 0,
            AuditBody::Running(_) => true,
            _ => false,
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            AuditBody::Decision(r) => r.encode(w),
            AuditBody::Running(r) => r.encode(w),
            AuditBody::Refusals(s) => s.encode(w),
            AuditBody::Pruned(p) => p.encode(w),
            AuditBody::EraStart(e) => {
                w.u8(e.cause as u8);
                w.u64(e.op_seq);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(match r.u8()? {
            1 => AuditBody::Decision(AuditRecord::read(r)?),
            2 => AuditBody::Running(Running::read(r)?),
            3 => AuditBody::Refusals(RefusalSummary::read(r)?),
            4 => AuditBody::Pruned(Pruned::read(r)?),
            5 => {
                let tag = r.u8()?;
                let cause = EraCause::from_op_tag(tag).ok_or(ProtoError::UnknownTag {
                    what: "era cause",
                    tag,
                })?;
                AuditBody::EraStart(EraStart {
                    cause,
                    op_seq: r.u64()?,
                })
            }
            tag => {
                return Err(ProtoError::UnknownTag {
                    what: "audit entry kind",
                    tag,
                })
            }
        })
    }
}

impl AuditBody {
    /// The kind's name in JSON output and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            AuditBody::Decision(_) => "decision",
            AuditBody::Running(_) => "about_to_run",
            AuditBody::Refusals(_) => "refusals",
            AuditBody::Pruned(_) => "pruned",
            AuditBody::EraStart(_) => "era",
        }
    }

    /// The entry in plain words, e.g. "1,234 unreadable envelopes refused between 02:00 and
    /// 02:01". `time` formats a device time (milliseconds since the Unix epoch).
    pub fn describe(&self, time: &dyn Fn(u64) -> String) -> String {
        match self {
            AuditBody::EraStart(e) => match e.cause {
                EraCause::Genesis => "device set up; not claimed yet".to_owned(),
                EraCause::Claim => "claimed: new owners from here".to_owned(),
                EraCause::Transfer => {
                    "ownership transferred: new owners from here (earlier entries deleted)"
                        .to_owned()
                }
                EraCause::FactoryReset => {
                    "factory reset: no owners from here (earlier entries deleted)".to_owned()
                }
            },
            AuditBody::Pruned(p) => {
                let fetched = if p.unfetched == 0 {
                    "all fetched".to_owned()
                } else {
                    format!(
                        "{} never fetched, none of them accepted commands",
                        thousands(p.unfetched)
                    )
                };
                format!("entries {}–{} pruned ({fetched})", p.first, p.last)
            }
            AuditBody::Refusals(s) => {
                let mut parts = Vec::new();
                for class in RefusalClass::ALL {
                    let n: u64 = s
                        .rows
                        .iter()
                        .filter(|r| r.class == class)
                        .map(|r| u64::from(r.count))
                        .sum();
                    if n == 0 {
                        continue;
                    }
                    let what = match (class, n) {
                        (RefusalClass::Unauthenticated, 1) => "unreadable envelope",
                        (RefusalClass::Unauthenticated, _) => "unreadable envelopes",
                        (RefusalClass::NoStanding, 1) => "command from an unknown key",
                        (RefusalClass::NoStanding, _) => "commands from unknown keys",
                        (RefusalClass::Repeat, 1) => "repeated copy of an envelope",
                        (RefusalClass::Repeat, _) => "repeated copies of envelopes",
                        (RefusalClass::OverCap, 1) => "further refusal of a known sender",
                        (RefusalClass::OverCap, _) => "further refusals of known senders",
                    };
                    parts.push(format!("{} {what}", thousands(n)));
                }
                let when = match (s.first_ms, s.last_ms) {
                    (Some(a), Some(b)) if a != b => {
                        format!(" between {} and {}", time(a), time(b))
                    }
                    (Some(a), _) => format!(" at {}", time(a)),
                    _ => String::new(),
                };
                format!("{} refused{when}", parts.join(", "))
            }
            AuditBody::Running(r) => format!(
                "about to run {} for {} ({})",
                r.action,
                if r.by_owner { "an owner" } else { "a guest" },
                args_words(&r.args)
            ),
            AuditBody::Decision(r) => {
                let action = if r.action.is_empty() {
                    "a command".to_owned()
                } else {
                    r.action.clone()
                };
                match (r.code, r.stage) {
                    (0, _) => format!(
                        "{action}: ran ({})",
                        r.detail.strip_prefix("ran; ").unwrap_or(&r.detail)
                    ),
                    (15, Stage::Action) => format!("{action}: failed ({})", r.detail),
                    _ => format!("{action}: refused at {}: {}", r.stage.name(), r.detail),
                }
            }
        }
    }
}

fn args_words(a: &ArgsDigest) -> String {
    if a.len == 0 {
        "no arguments".to_owned()
    } else {
        format!(
            "{} bytes of arguments, hash {}",
            a.len,
            crate::keys::hex_prefix(&a.hash)
        )
    }
}

/// `1234567` → `"1,234,567"`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One link of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// 0 for an era's first entry (its [`EraStart`]), then +1.
    pub seq: u64,
    /// `entry_hash` of the entry before (all zeros for entry 0).
    pub prev: [u8; 32],
    /// The ownership era: the id of the claim, transfer, factory reset (or genesis) op that
    /// started it (the chain's `epoch`).
    pub era: [u8; 32],
    /// Device time, if its clock is set.
    pub time_ms: Option<u64>,
    pub body: AuditBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    pub entry: AuditEntry,
    pub signature: Signature,
}

impl AuditEntry {
    fn encode_content(&self, w: &mut Writer) {
        w.u8(AUDIT_VERSION);
        w.u64(self.seq);
        w.raw(&self.prev);
        w.raw(&self.era);
        w.option(self.time_ms.as_ref(), |w, t| w.u64(*t));
        self.body.encode(w);
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
        Ok(AuditEntry {
            seq: r.u64()?,
            prev: r.array()?,
            era: r.array()?,
            time_ms: r.option(|r| r.u64())?,
            body: AuditBody::read(r)?,
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
        if let AuditBody::Decision(r) = &mut self.body {
            let detail = &mut r.detail;
            if detail.len() > MAX_DETAIL {
                let mut cut = MAX_DETAIL;
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                detail.truncate(cut);
            }
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

/// Checks a consecutive run of entries, oldest first: every signature by `identity`, one era
/// throughout, consecutive sequence numbers, each `prev` equal to the hash of the entry before,
/// entry 0 (and only entry 0) an era marker linking to nothing, and every prune marker
/// consistent with the entries it names. The first entry's `prev` must equal `anchor` when
/// given (the hash of the entry before the run, e.g. from an earlier page).
pub fn verify_entries(
    entries: &[SignedEntry],
    identity: &PublicKey,
    anchor: Option<[u8; 32]>,
) -> Result<(), AuditBroken> {
    let mut expected_prev = anchor;
    let mut expected_seq: Option<u64> = None;
    let era = entries.first().map(|e| e.entry.era);
    for (i, e) in entries.iter().enumerate() {
        let seq = e.entry.seq;
        let broken = |why| Err(AuditBroken { seq, why });
        if !e.verify_signature(identity) {
            return broken("its signature does not verify (altered, or not signed by this device)");
        }
        if Some(e.entry.era) != era {
            return broken("it belongs to another ownership era than the entries before it");
        }
        if let Some(want) = expected_seq {
            if seq != want {
                return broken("sequence gap: entries were removed or reordered");
            }
        }
        let is_era_start = matches!(e.entry.body, AuditBody::EraStart(_));
        if seq == 0 && !is_era_start {
            return broken("an era's first entry must be its era marker");
        }
        if seq != 0 && is_era_start {
            return broken("an era marker that is not its era's first entry");
        }
        if seq == 0 && e.entry.prev != [0; 32] {
            return broken("the first entry must link to nothing");
        }
        if let Some(prev) = expected_prev {
            if e.entry.prev != prev {
                return broken("it does not link to the entry before (hash chain broken)");
            }
        }
        if let AuditBody::Pruned(p) = &e.entry.body {
            if p.last >= seq {
                return broken("a prune marker names entries at or after itself");
            }
            let named = entries.iter().find(|k| k.entry.seq == p.last);
            let after = entries.iter().find(|k| k.entry.seq == p.last + 1);
            if named.is_some_and(|k| k.entry.hash() != p.last_hash)
                || after.is_some_and(|k| k.entry.prev != p.last_hash)
            {
                return broken("a prune marker's hash does not match the entries it names");
            }
        }
        expected_prev = Some(e.entry.hash());
        expected_seq = match seq.checked_add(1) {
            Some(next) => Some(next),
            None if i + 1 < entries.len() => {
                return broken("an entry follows the largest sequence number there is")
            }
            None => None,
        };
    }
    Ok(())
}

/// A page of the log as the `audit` action returns it: `u8 version || u64 oldest ||
/// u64 next_seq || list8(entry)`, oldest first. `oldest` is the oldest entry the device still
/// holds in this era (so a reader paging back knows where to stop); `next_seq` is the sequence
/// the device's next entry will get (so it knows whether the page reaches the newest entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub oldest: u64,
    pub next_seq: u64,
    pub entries: Vec<SignedEntry>,
}

impl Codec for AuditPage {
    const NAME: &'static str = "audit page";
    const MAX_LEN: usize = MAX_PAGE;
    fn encode(&self, w: &mut Writer) {
        w.u8(AUDIT_VERSION);
        w.u64(self.oldest);
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
        let oldest = r.u64()?;
        let next_seq = r.u64()?;
        if oldest > next_seq {
            return Err(ProtoError::Invalid {
                what: "audit page",
                why: "its oldest entry is after its next sequence number",
            });
        }
        Ok(AuditPage {
            oldest,
            next_seq,
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
/// `newest_first` encoded entries. Returns the page and the sequence range it holds.
pub fn build_page(oldest: u64, next_seq: u64, newest_first: Vec<(u64, Vec<u8>)>) -> PageBytes {
    let mut chosen: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut size = 1 + 8 + 8 + 1;
    for e in newest_first {
        if chosen.len() == 255 || size + e.1.len() > MAX_PAGE {
            break;
        }
        size += e.1.len();
        chosen.push(e);
    }
    chosen.reverse();
    let range = chosen.first().zip(chosen.last()).map(|(a, b)| (a.0, b.0));
    let mut w = Writer::new();
    w.u8(AUDIT_VERSION);
    w.u64(oldest);
    w.u64(next_seq);
    w.u8(chosen.len() as u8);
    for (_, e) in chosen {
        w.raw(&e);
    }
    PageBytes {
        bytes: w.into_inner(),
        range,
    }
}

/// An encoded page and the first and last sequence numbers in it (none if empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBytes {
    pub bytes: Vec<u8>,
    pub range: Option<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn person(n: u64) -> SigningKey {
        SigningKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(n))
    }

    const ERA: [u8; 32] = [0xE1; 32];

    fn body(i: u8) -> AuditBody {
        match i % 4 {
            0 => AuditBody::Decision(AuditRecord {
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
                args: (!i.is_multiple_of(3)).then(|| ArgsDigest::of(&[i; 5])),
                code: u16::from(i % 4),
                stage: Stage::ALL[usize::from(i) % Stage::ALL.len()],
                detail: "x".repeat(usize::from(i) * 10),
                view: ViewMark {
                    stale: !i.is_multiple_of(2),
                    age_s: i.is_multiple_of(2).then_some(u32::from(i)),
                },
            }),
            1 => AuditBody::Running(Running {
                via: Via::Relay,
                envelope: [i; 32],
                sender: person(2).public_key(),
                command: CommandId([i; 32]),
                action: "unlock".into(),
                args: ArgsDigest::of(b"{\"entity_id\":\"lock.front\"}"),
                by_owner: false,
                view: ViewMark::default(),
            }),
            2 => AuditBody::Refusals(RefusalSummary {
                first_ms: Some(1_000),
                last_ms: Some(61_000),
                rows: vec![
                    RefusalCount {
                        class: RefusalClass::Unauthenticated,
                        stage: Stage::Size,
                        code: 1,
                        count: 99_000,
                    },
                    RefusalCount {
                        class: RefusalClass::Unauthenticated,
                        stage: Stage::Decrypt,
                        code: 1,
                        count: 1_000,
                    },
                    RefusalCount {
                        class: RefusalClass::NoStanding,
                        stage: Stage::Authority,
                        code: 7,
                        count: u32::from(i) + 1,
                    },
                ],
            }),
            _ => AuditBody::Decision(AuditRecord {
                via: Via::Local,
                envelope: [0; 32],
                sender: None,
                command: None,
                action: String::new(),
                args: None,
                code: 0,
                stage: Stage::Action,
                detail: "é".repeat(100),
                view: ViewMark::default(),
            }),
        }
    }

    fn log(n: u8) -> (SigningKey, Vec<SignedEntry>) {
        let key = person(9);
        let mut prev = [0u8; 32];
        let mut out = Vec::new();
        for i in 0..n {
            let body = if i == 0 {
                AuditBody::EraStart(EraStart {
                    cause: EraCause::Claim,
                    op_seq: 1,
                })
            } else {
                body(i)
            };
            let e = AuditEntry {
                seq: u64::from(i),
                prev,
                era: ERA,
                time_ms: (i != 5).then_some(1_800_000_000_000 + u64::from(i)),
                body,
            }
            .sign(&key);
            prev = e.entry.hash();
            out.push(e);
        }
        (key, out)
    }

    fn push(key: &SigningKey, run: &mut Vec<SignedEntry>, body: AuditBody) {
        let last = run.last().unwrap();
        let e = AuditEntry {
            seq: last.entry.seq + 1,
            prev: last.entry.hash(),
            era: last.entry.era,
            time_ms: None,
            body,
        }
        .sign(key);
        run.push(e);
    }

    #[test]
    fn ranges_at_the_end_of_u64_neither_overflow_nor_verify() {
        // Found by the `audit_entry` fuzz target: a marker of every sequence number.
        let whole = Pruned {
            first: 0,
            last: u64::MAX,
            last_hash: [0; 32],
            unfetched: 3,
        };
        assert_eq!(whole.count(), u64::MAX);
        let (key, mut run) = log(3);
        push(&key, &mut run, AuditBody::Pruned(whole));
        assert!(verify_entries(&run, &key.public_key(), None).is_err());
        // An entry at the largest sequence number cannot be followed.
        let last = |seq: u64, prev: [u8; 32]| {
            AuditEntry {
                seq,
                prev,
                era: run[0].entry.era,
                time_ms: None,
                body: AuditBody::Pruned(Pruned {
                    first: 0,
                    last: 0,
                    last_hash: [0; 32],
                    unfetched: 0,
                }),
            }
            .sign(&key)
        };
        let a = last(u64::MAX, [1; 32]);
        let b = last(u64::MAX, a.entry.hash());
        let err = verify_entries(&[a, b], &key.public_key(), None).unwrap_err();
        assert_eq!(err.seq, u64::MAX);
    }

    #[test]
    fn entries_round_trip_and_verify() {
        let (key, entries) = log(40);
        for e in &entries {
            let bytes = e.to_bytes();
            assert!(bytes.len() <= MAX_ENTRY, "{} bytes", bytes.len());
            assert_eq!(&SignedEntry::from_bytes(&bytes).unwrap(), e);
        }
        let AuditBody::Decision(r) = &entries[15].entry.body else {
            panic!("entry 15 is a decision")
        };
        assert!(r.detail.len() <= MAX_DETAIL, "cut at a char boundary");
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
    fn a_full_summary_fits_an_entry() {
        let mut rows = Vec::new();
        for class in RefusalClass::ALL {
            for stage in Stage::ALL {
                if rows.len() < MAX_SUMMARY_ROWS {
                    rows.push(RefusalCount {
                        class,
                        stage,
                        code: u16::MAX,
                        count: u32::MAX,
                    });
                }
            }
        }
        let e = AuditEntry {
            seq: u64::MAX,
            prev: [1; 32],
            era: ERA,
            time_ms: Some(u64::MAX),
            body: AuditBody::Refusals(RefusalSummary {
                first_ms: Some(u64::MAX),
                last_ms: Some(u64::MAX),
                rows,
            }),
        }
        .sign(&person(1));
        assert!(e.to_bytes().len() <= MAX_ENTRY);
        // The largest decision, too.
        let big = AuditEntry {
            seq: u64::MAX,
            prev: [1; 32],
            era: ERA,
            time_ms: Some(u64::MAX),
            body: AuditBody::Decision(AuditRecord {
                via: Via::Relay,
                envelope: [2; 32],
                sender: Some(person(2).public_key()),
                command: Some(CommandId([3; 32])),
                action: "a".repeat(crate::grant::MAX_ACTION_LEN),
                args: Some(ArgsDigest::of(&[0; 1024])),
                code: u16::MAX,
                stage: Stage::Action,
                detail: "d".repeat(500),
                view: ViewMark {
                    stale: true,
                    age_s: Some(u32::MAX),
                },
            }),
        }
        .sign(&person(1));
        assert!(big.to_bytes().len() <= MAX_ENTRY);
    }

    #[test]
    fn fail_summaries_must_be_canonical() {
        let key = person(1);
        let summary = |rows: Vec<RefusalCount>| {
            AuditEntry {
                seq: 1,
                prev: [0; 32],
                era: ERA,
                time_ms: None,
                body: AuditBody::Refusals(RefusalSummary {
                    first_ms: None,
                    last_ms: None,
                    rows,
                }),
            }
            .sign(&key)
            .to_bytes()
        };
        let row = |class, count| RefusalCount {
            class,
            stage: Stage::Decrypt,
            code: 1,
            count,
        };
        assert!(SignedEntry::from_bytes(&summary(vec![row(RefusalClass::Repeat, 1)])).is_ok());
        for rows in [
            vec![],
            vec![row(RefusalClass::Repeat, 0)],
            vec![row(RefusalClass::Repeat, 1), row(RefusalClass::Repeat, 2)],
            vec![
                row(RefusalClass::Repeat, 1),
                row(RefusalClass::Unauthenticated, 2),
            ],
        ] {
            assert!(
                SignedEntry::from_bytes(&summary(rows.clone())).is_err(),
                "{rows:?}"
            );
        }
    }

    #[test]
    fn fail_tampering_is_detected() {
        let (key, entries) = log(8);
        let pk = key.public_key();
        // An altered field breaks the signature.
        let mut altered = entries.clone();
        if let AuditBody::Decision(r) = &mut altered[4].entry.body {
            r.code = 9;
        }
        assert_eq!(verify_entries(&altered, &pk, None).unwrap_err().seq, 4);
        // A removed entry breaks the sequence.
        let mut removed = entries.clone();
        removed.remove(3);
        assert_eq!(verify_entries(&removed, &pk, None).unwrap_err().seq, 4);
        // Swapped entries break the sequence.
        let mut swapped = entries.clone();
        swapped.swap(1, 2);
        assert!(verify_entries(&swapped, &pk, None).is_err());
        // A re-signed entry by another key fails the signature.
        let mut with_forged = entries.clone();
        push(&person(2), &mut with_forged, body(1));
        assert_eq!(verify_entries(&with_forged, &pk, None).unwrap_err().seq, 8);
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
    fn fail_eras_and_markers_are_strict() {
        let (key, entries) = log(4);
        let pk = key.public_key();
        let resign = |e: AuditEntry| e.sign(&key);
        // Entry 0 must be an era marker.
        let mut not_marker = entries[0].entry.clone();
        not_marker.body = body(4);
        let run = [resign(not_marker)];
        assert!(verify_entries(&run, &pk, None).is_err());
        // An era marker elsewhere is refused.
        let mut run = entries.clone();
        push(
            &key,
            &mut run,
            AuditBody::EraStart(EraStart {
                cause: EraCause::Transfer,
                op_seq: 4,
            }),
        );
        assert_eq!(verify_entries(&run, &pk, None).unwrap_err().seq, 4);
        // An entry of another era in the same run is refused, even correctly linked.
        let other = AuditEntry {
            seq: 4,
            prev: entries[3].entry.hash(),
            era: [0xE2; 32],
            time_ms: None,
            body: body(4),
        };
        let mut run = entries.clone();
        run.push(other.sign(&key));
        assert_eq!(verify_entries(&run, &pk, None).unwrap_err().seq, 4);
    }

    #[test]
    fn prune_markers_must_match_what_they_name() {
        let (key, entries) = log(10);
        let pk = key.public_key();
        let honest = Pruned {
            first: 0,
            last: 5,
            last_hash: entries[5].entry.hash(),
            unfetched: 2,
        };
        let mut run = entries.clone();
        push(&key, &mut run, AuditBody::Pruned(honest));
        // What the device keeps after pruning: entries 6.. and the marker.
        verify_entries(&run[6..], &pk, None).unwrap();
        verify_entries(&run, &pk, None).unwrap();
        let lying = Pruned {
            last_hash: [9; 32],
            ..honest
        };
        let mut run = entries.clone();
        push(&key, &mut run, AuditBody::Pruned(lying));
        assert_eq!(verify_entries(&run[6..], &pk, None).unwrap_err().seq, 10);
        let ahead = Pruned { last: 10, ..honest };
        let mut run = entries.clone();
        push(&key, &mut run, AuditBody::Pruned(ahead));
        assert!(verify_entries(&run[6..], &pk, None).is_err());
    }

    #[test]
    fn entries_are_worded_plainly() {
        let t = |ms: u64| format!("{:02}:{:02}", ms / 3_600_000 % 24, ms / 60_000 % 60);
        let summary = AuditBody::Refusals(RefusalSummary {
            first_ms: Some(2 * 3_600_000),
            last_ms: Some(2 * 3_600_000 + 60_000),
            rows: vec![RefusalCount {
                class: RefusalClass::Unauthenticated,
                stage: Stage::Decrypt,
                code: 1,
                count: 1_234,
            }],
        });
        assert_eq!(
            summary.describe(&t),
            "1,234 unreadable envelopes refused between 02:00 and 02:01"
        );
        let pruned = AuditBody::Pruned(Pruned {
            first: 0,
            last: 999,
            last_hash: [0; 32],
            unfetched: 0,
        });
        assert_eq!(pruned.describe(&t), "entries 0–999 pruned (all fetched)");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        let era = AuditBody::EraStart(EraStart {
            cause: EraCause::Transfer,
            op_seq: 3,
        });
        assert!(era.describe(&t).contains("new owners from here"));
        assert!(body(1).describe(&t).starts_with("about to run unlock"));
    }

    #[test]
    fn pages_fit_a_response_body() {
        let (key, entries) = log(200);
        let newest_first: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .rev()
            .map(|e| (e.entry.seq, e.to_bytes()))
            .collect();
        let page_bytes = build_page(0, 200, newest_first);
        assert!(page_bytes.bytes.len() <= MAX_PAGE);
        let page = AuditPage::from_bytes(&page_bytes.bytes).unwrap();
        assert!(page.entries.len() > 10);
        assert_eq!(page.entries.last().unwrap().entry.seq, 199);
        assert_eq!(
            page_bytes.range,
            Some((page.entries[0].entry.seq, 199)),
            "the range served"
        );
        verify_entries(&page.entries, &key.public_key(), None).unwrap();
        assert_eq!(parse_page_args(&[]), Ok(None));
        assert_eq!(parse_page_args(&7u64.to_be_bytes()), Ok(Some(7)));
        assert!(parse_page_args(&[1, 2]).is_err());
        assert_eq!(build_page(3, 3, vec![]).range, None);
        // oldest after next_seq is refused.
        let mut bad = build_page(0, 0, vec![]).bytes;
        bad[1..9].copy_from_slice(&5u64.to_be_bytes());
        assert!(AuditPage::from_bytes(&bad).is_err());
    }
}
