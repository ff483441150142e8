//! Grants: owner-signed, time-limited permission for another key to command a device, optionally
//! delegable to a narrower grant (host to cleaner). A grant chain is verified against the
//! device's current ownership state, never against anything the holder says about itself.

use core::fmt;

use crate::chain::{ChainState, OpId};
use crate::codec::{check_len, Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::hash;
use crate::keys::{DeviceId, PublicKey, Signature, SigningKey};
use crate::schedule::{self, WeeklySchedule};

pub const GRANT_VERSION: u8 = 1;
/// Longest delegation chain a device accepts (owner → host → cleaner → … ).
pub const MAX_GRANT_CHAIN: usize = 4;
pub const MAX_GRANT_DEVICES: usize = 16;
pub const MAX_ACTIONS: usize = 16;
pub const MAX_ACTION_LEN: usize = 32;
pub const MAX_EXTENSIONS: usize = 8;
pub const MAX_EXTENSION_LEN: usize = 512;
/// Extension tags with this bit set are critical: a verifier that does not know one must refuse
/// the grant rather than ignore a restriction it does not understand.
pub const EXTENSION_CRITICAL: u8 = 0x80;
/// Critical extension limiting a grant to weekly windows of local time in an IANA zone
/// (docs/PROTOCOL.md §4, [`WeeklySchedule`]). Critical, so a verifier that predates it refuses
/// the grant instead of letting its holder in at any hour.
pub const EXT_WEEKLY_SCHEDULE: u8 = 0x81;
/// Critical extension pinning the exact argument strings a guest may send (docs/PROTOCOL.md §4).
/// Critical, so a verifier that predates it refuses the grant instead of letting its holder pass
/// any argument.
pub const EXT_ALLOWED_ARGUMENTS: u8 = 0x82;
/// At most this many allowed argument strings per grant.
pub const MAX_ALLOWED_ARGUMENTS: usize = 8;
/// Longest allowed argument string, in bytes.
pub const MAX_ALLOWED_ARGUMENT_LEN: usize = 256;

/// The critical extensions this version enforces.
const KNOWN_CRITICAL: [u8; 2] = [EXT_WEEKLY_SCHEDULE, EXT_ALLOWED_ARGUMENTS];

const SIGNING_LABEL: &[u8] = b"latchkey/v1/grant\0";

/// A grant's id: the hash of its signed content (never of the signature).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantId(pub [u8; 32]);

impl fmt::Debug for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantId({}…)", crate::keys::hex_prefix(&self.0))
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// One device a grant covers, pinned to the ownership era it was issued in (the id of the
/// device's latest claim, transfer or reset), so a transfer or reset voids every older grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantScope {
    pub device: DeviceId,
    pub epoch: OpId,
}

/// An extension field: room in the format for restrictions added later (weekly schedules,
/// invitations' metadata) without a version change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub tag: u8,
    pub value: Vec<u8>,
}

/// The content of a grant, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantBody {
    pub issuer: PublicKey,
    pub subject: PublicKey,
    pub scope: Vec<GrantScope>,
    pub actions: Vec<String>,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    pub use_limit: Option<u32>,
    /// How many further levels the subject may delegate (0: none).
    pub delegation_depth: u8,
    pub extensions: Vec<Extension>,
    /// Random bytes so two otherwise equal grants have different ids and can be revoked apart.
    pub salt: [u8; 16],
}

/// A signed grant as it travels in invitations, commands and revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub body: GrantBody,
    pub signature: Signature,
}

impl GrantBody {
    fn encode_content(&self, w: &mut Writer) {
        w.u8(GRANT_VERSION);
        w.nested(&self.issuer);
        w.nested(&self.subject);
        w.list8(&self.scope, |w, s| {
            w.nested(&s.device);
            w.raw(&s.epoch.0);
        });
        w.list8(&self.actions, |w, a| w.bytes8(a.as_bytes()));
        w.u64(self.not_before_ms);
        w.u64(self.not_after_ms);
        w.option(self.use_limit.as_ref(), |w, n| w.u32(*n));
        w.u8(self.delegation_depth);
        w.list8(&self.extensions, |w, e| {
            w.u8(e.tag);
            w.bytes16(&e.value);
        });
        w.raw(&self.salt);
    }

    fn read_content(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != GRANT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "grant",
                found: version,
                supported: GRANT_VERSION,
            });
        }
        let issuer = r.nested()?;
        let subject = r.nested()?;
        let scope = r.list8(MAX_GRANT_DEVICES, |r| {
            Ok(GrantScope {
                device: r.nested()?,
                epoch: OpId(r.array()?),
            })
        })?;
        let actions = r.list8(MAX_ACTIONS, |r| r.str8("action", MAX_ACTION_LEN))?;
        let body = GrantBody {
            issuer,
            subject,
            scope,
            actions,
            not_before_ms: r.u64()?,
            not_after_ms: r.u64()?,
            use_limit: r.option(|r| r.u32())?,
            delegation_depth: r.u8()?,
            extensions: r.list8(MAX_EXTENSIONS, |r| {
                Ok(Extension {
                    tag: r.u8()?,
                    value: r.bytes16(MAX_EXTENSION_LEN)?.to_vec(),
                })
            })?,
            salt: r.array()?,
        };
        body.check_shape()?;
        Ok(body)
    }

    /// Rules that hold for any grant, whatever the device's state.
    fn check_shape(&self) -> Result<()> {
        let bad = |why| Err(Error::Invalid { what: "grant", why });
        if self.scope.is_empty() {
            return bad("it covers no device");
        }
        if self.actions.is_empty() {
            return bad("it allows no action");
        }
        if self.not_after_ms < self.not_before_ms {
            return bad("it ends before it starts");
        }
        if self.actions.iter().any(|a| !is_action_name(a)) {
            return bad("action names are 1-32 of a-z, 0-9, '-', '_', '.'");
        }
        // The decoder's limits, checked when signing too, so nobody issues a grant that no
        // device can read.
        if self.scope.len() > MAX_GRANT_DEVICES || self.actions.len() > MAX_ACTIONS {
            return bad("at most 16 devices and 16 actions");
        }
        if self.extensions.len() > MAX_EXTENSIONS
            || self
                .extensions
                .iter()
                .any(|e| e.value.len() > MAX_EXTENSION_LEN)
        {
            return bad("at most 8 extensions of at most 512 bytes");
        }
        self.allowed_arguments()?;
        self.schedule()?;
        Ok(())
    }

    /// The weekly schedule this grant keeps to (extension 0x81), or `None`: any time of the
    /// week within its validity.
    pub fn schedule(&self) -> Result<Option<WeeklySchedule>> {
        let mut found = self
            .extensions
            .iter()
            .filter(|e| e.tag == EXT_WEEKLY_SCHEDULE);
        let Some(first) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            // Two schedules would leave a verifier to guess whether they add up or intersect.
            return Err(Error::Invalid {
                what: "grant",
                why: "it carries more than one weekly-schedule extension",
            });
        }
        WeeklySchedule::decode(&first.value).map(Some)
    }

    /// The argument strings this grant pins (extension 0x82), or `None`: then its holder may
    /// send its actions only without arguments.
    pub fn allowed_arguments(&self) -> Result<Option<AllowedArguments>> {
        let mut pinned = self
            .extensions
            .iter()
            .filter(|e| e.tag == EXT_ALLOWED_ARGUMENTS);
        let Some(first) = pinned.next() else {
            return Ok(None);
        };
        if pinned.next().is_some() {
            // Two lists would leave a verifier to guess whether they add up or intersect.
            return Err(Error::Invalid {
                what: "grant",
                why: "it carries more than one allowed-arguments extension",
            });
        }
        AllowedArguments::decode(&first.value).map(Some)
    }

    /// Empty arguments always pass; anything else only when pinned byte for byte.
    fn allows_arguments(&self, args: &[u8]) -> bool {
        args.is_empty() || matches!(self.allowed_arguments(), Ok(Some(list)) if list.allows(args))
    }

    pub fn content_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        w.into_inner()
    }

    pub fn id(&self) -> GrantId {
        GrantId(hash::labeled(hash::GRANT_ID, &[&self.content_bytes()]))
    }

    /// Signs the grant. The signing key must be the issuer's.
    pub fn sign(self, issuer: &SigningKey) -> Result<Grant> {
        if issuer.public_key() != self.issuer {
            return Err(Error::Invalid {
                what: "grant",
                why: "signed by a key other than its issuer",
            });
        }
        self.check_shape()?;
        let content = self.content_bytes();
        // Within each field's limit a grant can still outgrow what a decoder accepts (eight
        // 512-byte extensions alone are over it): refuse to issue one nobody can read.
        check_len("grant", content.len() + 64, Grant::MAX_LEN)?;
        let signature = issuer.sign(&signing_message(&content));
        Ok(Grant {
            body: self,
            signature,
        })
    }

    pub(crate) fn covers(&self, device: &DeviceId, epoch: &OpId) -> bool {
        self.scope
            .iter()
            .any(|s| s.device == *device && s.epoch == *epoch)
    }

    fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}

/// Action names are short ASCII identifiers so they display and compare without surprises.
pub fn is_action_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ACTION_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// The exact argument strings a grant lets its holder send (extension [`EXT_ALLOWED_ARGUMENTS`]):
/// 1 to 8 strings of 1 to 256 bytes, compared byte for byte, kept sorted and distinct so that
/// every list has exactly one encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedArguments(Vec<Vec<u8>>);

const ALLOWED_ARGUMENTS: &str = "allowed-arguments extension";

impl AllowedArguments {
    /// Builds a list from strings in any order; repeats are dropped.
    pub fn new(mut list: Vec<Vec<u8>>) -> Result<Self> {
        list.sort();
        list.dedup();
        let list = AllowedArguments(list);
        list.check()?;
        check_len(ALLOWED_ARGUMENTS, list.encode().len(), MAX_EXTENSION_LEN)?;
        Ok(list)
    }

    /// Decodes an extension value: `list8` of `bytes16`, strictly ascending, with no slack.
    pub fn decode(value: &[u8]) -> Result<Self> {
        check_len(ALLOWED_ARGUMENTS, value.len(), MAX_EXTENSION_LEN)?;
        let mut r = Reader::new(ALLOWED_ARGUMENTS, value);
        let list = r.list8(MAX_ALLOWED_ARGUMENTS, |r| {
            Ok(r.bytes16(MAX_ALLOWED_ARGUMENT_LEN)?.to_vec())
        })?;
        r.finish()?;
        if list.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Invalid {
                what: ALLOWED_ARGUMENTS,
                why: "its strings must be distinct and in ascending byte order",
            });
        }
        let list = AllowedArguments(list);
        list.check()?;
        Ok(list)
    }

    fn check(&self) -> Result<()> {
        let bad = |why| {
            Err(Error::Invalid {
                what: ALLOWED_ARGUMENTS,
                why,
            })
        };
        if self.0.is_empty() {
            return bad("it lists no argument string (leave it out to allow none)");
        }
        if self.0.iter().any(Vec::is_empty) {
            return bad("an empty string is always allowed and is not listed");
        }
        check_len(ALLOWED_ARGUMENTS, self.0.len(), MAX_ALLOWED_ARGUMENTS)?;
        for a in &self.0 {
            check_len(ALLOWED_ARGUMENTS, a.len(), MAX_ALLOWED_ARGUMENT_LEN)?;
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.list8(&self.0, |w, a| w.bytes16(a));
        w.into_inner()
    }

    pub fn to_extension(&self) -> Extension {
        Extension {
            tag: EXT_ALLOWED_ARGUMENTS,
            value: self.encode(),
        }
    }

    /// The strings, in ascending byte order.
    pub fn as_slice(&self) -> &[Vec<u8>] {
        &self.0
    }

    pub fn allows(&self, args: &[u8]) -> bool {
        self.0.binary_search_by(|a| a.as_slice().cmp(args)).is_ok()
    }

    pub fn is_subset_of(&self, other: &AllowedArguments) -> bool {
        self.0.iter().all(|a| other.allows(a))
    }
}

fn signing_message(content: &[u8]) -> Vec<u8> {
    [SIGNING_LABEL, content].concat()
}

impl Grant {
    pub fn id(&self) -> GrantId {
        self.body.id()
    }

    /// The weekly schedule the grant keeps to, if any. A grant that decoded or was signed here
    /// has a well-formed one; a malformed one (only in a hand-built grant) reads as `None`, and
    /// verification refuses such a grant as `GrantInvalid`.
    pub fn schedule(&self) -> Option<WeeklySchedule> {
        self.body.schedule().ok().flatten()
    }

    pub fn verify_signature(&self) -> Result<()> {
        self.body.issuer.verify_or(
            &self.signature,
            &signing_message(&self.body.content_bytes()),
            "grant",
        )
    }
}

impl Codec for Grant {
    const NAME: &'static str = "grant";
    const MAX_LEN: usize = 4096;
    fn encode(&self, w: &mut Writer) {
        self.body.encode_content(w);
        w.nested(&self.signature);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let start = r.position();
        let grant = Grant {
            body: GrantBody::read_content(r)?,
            signature: r.nested()?,
        };
        // The cap holds for a grant inside a command, an op or an invitation too: each field
        // within its own limit still adds up to more than 4 KiB, and a grant that is refused
        // alone must not pass as part of something larger.
        check_len("grant", r.position() - start, Grant::MAX_LEN)?;
        Ok(grant)
    }
}

/// What a device needs to know to decide on a guest's command.
#[derive(Debug, Clone, Copy)]
pub struct GrantRequest<'a> {
    pub device: &'a DeviceId,
    pub sender: &'a PublicKey,
    pub action: &'a str,
    /// The command's arguments: empty, or a string every grant in the chain pins.
    pub args: &'a [u8],
    pub now_ms: u64,
}

/// A grant chain that passed: the use limits the device must still count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantApproval {
    /// Every grant in the chain that has a use limit, with that limit.
    pub use_limits: Vec<(GrantId, u32)>,
}

/// Checks the structure of a delegation chain that does not depend on time or action: each
/// signature, each link (issuer of the next is the subject of the one before), narrowing
/// delegation, and that the first issuer is a current owner. Used by both command checks and
/// revocations.
pub fn verify_chain_structure(chain: &[Grant], state: &ChainState) -> Result<()> {
    verify_chain_structure_for(chain, &state.owners)
}

/// [`verify_chain_structure`] against an owner set (a revocation is checked against the owners
/// of the op it is anchored on).
pub fn verify_chain_structure_for(chain: &[Grant], owners: &[PublicKey]) -> Result<()> {
    if chain.is_empty() || chain.len() > MAX_GRANT_CHAIN {
        return Err(Error::GrantInvalid {
            index: 0,
            why: "a grant chain holds 1 to 4 grants",
        });
    }
    if !owners.contains(&chain[0].body.issuer) {
        return Err(Error::GrantInvalid {
            index: 0,
            why: "its issuer is not a current owner",
        });
    }
    for (index, grant) in chain.iter().enumerate() {
        let invalid = |why| Error::GrantInvalid { index, why };
        grant
            .verify_signature()
            .map_err(|_| invalid("bad signature"))?;
        grant.body.check_shape().map_err(|_| invalid("malformed"))?;
        if grant
            .body
            .extensions
            .iter()
            .any(|e| e.tag & EXTENSION_CRITICAL != 0 && !KNOWN_CRITICAL.contains(&e.tag))
        {
            return Err(invalid(
                "it carries a restriction this version does not understand; update the device",
            ));
        }
        if index == 0 {
            continue;
        }
        let parent = &chain[index - 1].body;
        let child = &grant.body;
        if child.issuer != parent.subject {
            return Err(invalid("not issued by the holder of the grant before it"));
        }
        if parent.delegation_depth == 0 || child.delegation_depth >= parent.delegation_depth {
            return Err(invalid(
                "the grant before it does not allow this delegation",
            ));
        }
        if !child.scope.iter().all(|s| parent.scope.contains(s)) {
            return Err(invalid("covers a device the grant before it does not"));
        }
        if !child.actions.iter().all(|a| parent.allows(a)) {
            return Err(invalid("allows an action the grant before it does not"));
        }
        if child.not_before_ms < parent.not_before_ms || child.not_after_ms > parent.not_after_ms {
            return Err(invalid("its time window is wider than the grant before it"));
        }
        if let Some(parent_limit) = parent.use_limit {
            if child.use_limit.is_none_or(|n| n > parent_limit) {
                return Err(invalid("its use limit is wider than the grant before it"));
            }
        }
        // Both decoded in check_shape above. A parent without the extension allows only empty
        // arguments, so a child cannot add any.
        let narrower = match (child.allowed_arguments(), parent.allowed_arguments()) {
            (Ok(None), _) => true,
            (Ok(Some(c)), Ok(Some(p))) => c.is_subset_of(&p),
            _ => false,
        };
        if !narrower {
            return Err(invalid("allows arguments the grant before it does not"));
        }
    }
    Ok(())
}

/// The refusal for a chain one of whose schedules excludes `now_ms`: with how long until every
/// schedule of the chain allows a time (not whether the grants are still valid then).
fn outside_schedule(chain: &[Grant], now_ms: u64) -> Error {
    let schedules: Vec<WeeklySchedule> = chain.iter().filter_map(Grant::schedule).collect();
    Error::OutsideSchedule {
        opens_in_s: schedule::next_open_all(&schedules, now_ms)
            .map(|t| (t - now_ms).div_ceil(1000)),
    }
}

/// Decides whether `chain` lets `request.sender` run `request.action` on `request.device` now,
/// given the device's verified ownership state. Use limits are returned for the device to count.
pub fn verify_grant_chain(
    chain: &[Grant],
    state: &ChainState,
    request: &GrantRequest<'_>,
) -> Result<GrantApproval> {
    verify_chain_structure(chain, state)?;
    let mut use_limits = Vec::new();
    for (index, grant) in chain.iter().enumerate() {
        let body = &grant.body;
        if !body.covers(request.device, &state.epoch) {
            return Err(if body.scope.iter().any(|s| s.device == *request.device) {
                Error::GrantInvalid {
                    index,
                    why: "issued before the device changed hands or was reset",
                }
            } else {
                Error::DeviceNotGranted
            });
        }
        if !body.allows(request.action) {
            return Err(Error::ActionNotGranted(request.action.to_owned()));
        }
        if request.now_ms < body.not_before_ms {
            return Err(Error::GrantNotYetValid(
                (body.not_before_ms - request.now_ms).div_ceil(1000),
            ));
        }
        if request.now_ms > body.not_after_ms {
            return Err(Error::GrantExpired(
                (request.now_ms - body.not_after_ms) / 1000,
            ));
        }
        let id = grant.id();
        if state.revoked.contains(&id) {
            return Err(Error::GrantRevoked);
        }
        // Decoded in check_shape above. Every grant of the chain must allow the time, so a
        // delegated grant can only narrow its parent's schedule, whatever it says itself.
        if let Ok(Some(s)) = body.schedule() {
            if !s.allows(request.now_ms) {
                return Err(outside_schedule(chain, request.now_ms));
            }
        }
        if let Some(limit) = body.use_limit {
            use_limits.push((id, limit));
        }
    }
    if chain.last().map(|g| &g.body.subject) != Some(request.sender) {
        return Err(Error::GrantInvalid {
            index: chain.len() - 1,
            why: "it was issued to a different key than the sender's",
        });
    }
    // Last, so a guest whose grant is void, expired or revoked is told that rather than about
    // its arguments. Every grant, not just the leaf: the subset rule makes that the same, and
    // this does not lean on it.
    if !chain.iter().all(|g| g.body.allows_arguments(request.args)) {
        return Err(Error::ArgumentsNotGranted(request.action.to_owned()));
    }
    Ok(GrantApproval { use_limits })
}
