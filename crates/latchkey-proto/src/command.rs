//! Commands and responses as signed messages (before sealing; see [`crate::envelope`]).

use core::fmt;

use crate::codec::{Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::grant::{self, Grant};
use crate::hash;
use crate::keys::{DeviceId, PublicKey, Signature, SigningKey};

pub const COMMAND_VERSION: u8 = 1;
pub const RESPONSE_VERSION: u8 = 1;
pub const MAX_ARGS: usize = 1024;
pub const MAX_RESPONSE_BODY: usize = 8 * 1024;
pub const MAX_REASON: usize = 200;
pub const NONCE_LEN: usize = 16;

const COMMAND_LABEL: &[u8] = b"latchkey/v1/command\0";
const RESPONSE_LABEL: &[u8] = b"latchkey/v1/response\0";

/// Where the device sends its sealed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTo {
    /// Tag 0: on the same connection (direct HTTP on the local network).
    Direct,
    /// Tag 1: into this mailbox on the registry nodes the command came through.
    Mailbox([u8; 32]),
}

/// What an owner or guest asks a device to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub device: DeviceId,
    pub sender: PublicKey,
    pub action: String,
    pub args: Vec<u8>,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub nonce: [u8; NONCE_LEN],
    /// A challenge the device handed out, for a device whose clock is not set.
    pub challenge: Option<[u8; NONCE_LEN]>,
    /// Empty for an owner; the delegation chain for a guest, owner's grant first.
    pub grants: Vec<Grant>,
    pub reply_to: ReplyTo,
}

/// The hash of a command's signed content; the response names it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId(pub [u8; 32]);

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({}…)", crate::keys::hex_prefix(&self.0))
    }
}

impl Command {
    fn encode_content(&self, w: &mut Writer) {
        w.u8(COMMAND_VERSION);
        w.nested(&self.device);
        w.nested(&self.sender);
        w.bytes8(self.action.as_bytes());
        w.bytes16(&self.args);
        w.u64(self.timestamp_ms);
        w.raw(&self.nonce);
        w.option(self.challenge.as_ref(), |w, c| w.raw(c));
        w.list8(&self.grants, |w, g| w.nested(g));
        match &self.reply_to {
            ReplyTo::Direct => w.u8(0),
            ReplyTo::Mailbox(m) => {
                w.u8(1);
                w.raw(m);
            }
        }
    }

    fn read_content(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != COMMAND_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "command",
                found: version,
                supported: COMMAND_VERSION,
            });
        }
        let device = r.nested()?;
        let sender = r.nested()?;
        let action = r.str8("action", grant::MAX_ACTION_LEN)?;
        if !grant::is_action_name(&action) {
            return Err(Error::Invalid {
                what: "action",
                why: "action names are 1-32 of a-z, 0-9, '-', '_', '.'",
            });
        }
        // Only the reserved subscribe action carries more: one KEM public key (§13).
        let args = r.bytes16(crate::event::max_args(&action))?.to_vec();
        Ok(Command {
            device,
            sender,
            action,
            args,
            timestamp_ms: r.u64()?,
            nonce: r.array()?,
            challenge: r.option(|r| r.array())?,
            grants: r.list8(grant::MAX_GRANT_CHAIN, |r| r.nested())?,
            reply_to: match r.u8()? {
                0 => ReplyTo::Direct,
                1 => ReplyTo::Mailbox(r.array()?),
                tag => {
                    return Err(Error::UnknownTag {
                        what: "reply-to",
                        tag,
                    })
                }
            },
        })
    }

    pub fn content_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        w.into_inner()
    }

    pub fn id(&self) -> CommandId {
        CommandId(hash::labeled(hash::COMMAND_ID, &[&self.content_bytes()]))
    }

    /// Signs the command; `key` must be the sender's.
    pub fn sign(self, key: &SigningKey) -> Result<SignedCommand> {
        if key.public_key() != self.sender {
            return Err(Error::Invalid {
                what: "command",
                why: "signed by a key other than its sender",
            });
        }
        if self.args.len() > crate::event::max_args(&self.action)
            || !grant::is_action_name(&self.action)
            || self.grants.len() > grant::MAX_GRANT_CHAIN
        {
            return Err(Error::Invalid {
                what: "command",
                why: "action name, arguments or grant chain out of bounds",
            });
        }
        let signature = key.sign(&[COMMAND_LABEL, &self.content_bytes()].concat());
        Ok(SignedCommand {
            command: self,
            signature,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommand {
    pub command: Command,
    pub signature: Signature,
}

impl SignedCommand {
    pub fn verify_signature(&self) -> Result<&Command> {
        self.command.sender.verify_or(
            &self.signature,
            &[COMMAND_LABEL, &self.command.content_bytes()].concat(),
            "command",
        )?;
        Ok(&self.command)
    }
}

impl Codec for SignedCommand {
    const NAME: &'static str = "command";
    const MAX_LEN: usize = crate::pad::MAX_MESSAGE;
    fn encode(&self, w: &mut Writer) {
        self.command.encode_content(w);
        w.nested(&self.signature);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SignedCommand {
            command: Command::read_content(r)?,
            signature: r.nested()?,
        })
    }
}

/// Why a device refused a command. Stable numbers: the owner app and audit logs use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectCode {
    Malformed = 1,
    BadSignature = 2,
    WrongDevice = 3,
    TooOld = 4,
    TooNew = 5,
    Replayed = 6,
    NotAuthorized = 7,
    GrantInvalid = 8,
    GrantExpired = 9,
    GrantNotYetValid = 10,
    GrantRevoked = 11,
    ActionNotGranted = 12,
    UseLimitReached = 13,
    UnknownAction = 14,
    ActionFailed = 15,
    ClockUnset = 16,
    Internal = 17,
    /// The device has not confirmed its ownership chain with a quorum of registry nodes within
    /// its bound for this kind of sender (docs/PROTOCOL.md §8.1).
    StaleView = 18,
    /// A guest command carried arguments its grant does not pin.
    ArgumentsNotGranted = 19,
    /// A guest command at a time of the week its grant chain's schedule excludes.
    OutsideSchedule = 20,
    /// A bind-on-first-use grant used before its redemption (docs/PROTOCOL.md §10).
    NotRedeemed = 21,
    /// A bind-on-first-use grant bound to another phone, or its link key used after binding.
    AlreadyRedeemed = 22,
    /// A consent for a stream the device does not publish (docs/PROTOCOL.md §14).
    UnknownStream = 23,
    /// A consent entry that does not verify against the device's chain view and log.
    ConsentRefused = 24,
}

impl RejectCode {
    pub fn from_u16(v: u16) -> Option<Self> {
        use RejectCode::*;
        Some(match v {
            1 => Malformed,
            2 => BadSignature,
            3 => WrongDevice,
            4 => TooOld,
            5 => TooNew,
            6 => Replayed,
            7 => NotAuthorized,
            8 => GrantInvalid,
            9 => GrantExpired,
            10 => GrantNotYetValid,
            11 => GrantRevoked,
            12 => ActionNotGranted,
            13 => UseLimitReached,
            14 => UnknownAction,
            15 => ActionFailed,
            16 => ClockUnset,
            17 => Internal,
            18 => StaleView,
            19 => ArgumentsNotGranted,
            20 => OutsideSchedule,
            21 => NotRedeemed,
            22 => AlreadyRedeemed,
            23 => UnknownStream,
            24 => ConsentRefused,
            _ => return None,
        })
    }

    /// The code for a protocol-core refusal.
    pub fn for_error(e: &Error) -> Self {
        match e {
            Error::BadSignature { .. } => RejectCode::BadSignature,
            Error::WrongDevice { .. } | Error::DeviceIdMismatch => RejectCode::WrongDevice,
            Error::TooOld { .. } => RejectCode::TooOld,
            Error::TooNew { .. } => RejectCode::TooNew,
            Error::Replayed => RejectCode::Replayed,
            Error::ChallengeRequired | Error::BadChallenge => RejectCode::ClockUnset,
            Error::NotAuthorized => RejectCode::NotAuthorized,
            Error::GrantInvalid { .. } | Error::DeviceNotGranted => RejectCode::GrantInvalid,
            Error::GrantExpired(_) => RejectCode::GrantExpired,
            Error::GrantNotYetValid(_) => RejectCode::GrantNotYetValid,
            Error::GrantRevoked => RejectCode::GrantRevoked,
            Error::ActionNotGranted(_) => RejectCode::ActionNotGranted,
            Error::ArgumentsNotGranted(_) => RejectCode::ArgumentsNotGranted,
            Error::OutsideSchedule { .. } => RejectCode::OutsideSchedule,
            Error::NotRedeemed => RejectCode::NotRedeemed,
            Error::AlreadyRedeemed => RejectCode::AlreadyRedeemed,
            Error::UnknownStream { .. } => RejectCode::UnknownStream,
            Error::ConsentRefused { .. } => RejectCode::ConsentRefused,
            Error::Store(_) => RejectCode::Internal,
            _ => RejectCode::Malformed,
        }
    }
}

/// What the device did with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Tag 0: the action ran.
    Accepted,
    /// Tag 1: refused, with a stable code and a human reason.
    Rejected { code: u16, reason: String },
    /// Tag 2: the device's clock is not set; resend with this challenge.
    ChallengeRequired { challenge: [u8; NONCE_LEN] },
}

/// A device's signed answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub device: DeviceId,
    pub command: CommandId,
    /// The device's clock, or `None` if it is not set.
    pub timestamp_ms: Option<u64>,
    pub outcome: Outcome,
    /// Action output (e.g. an audit log page), at most 8 KiB.
    pub body: Vec<u8>,
}

impl Response {
    fn encode_content(&self, w: &mut Writer) {
        w.u8(RESPONSE_VERSION);
        w.nested(&self.device);
        w.raw(&self.command.0);
        w.option(self.timestamp_ms.as_ref(), |w, t| w.u64(*t));
        match &self.outcome {
            Outcome::Accepted => w.u8(0),
            Outcome::Rejected { code, reason } => {
                w.u8(1);
                w.u16(*code);
                w.bytes8(reason.as_bytes());
            }
            Outcome::ChallengeRequired { challenge } => {
                w.u8(2);
                w.raw(challenge);
            }
        }
        w.bytes16(&self.body);
    }

    fn read_content(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != RESPONSE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "response",
                found: version,
                supported: RESPONSE_VERSION,
            });
        }
        Ok(Response {
            device: r.nested()?,
            command: CommandId(r.array()?),
            timestamp_ms: r.option(|r| r.u64())?,
            outcome: match r.u8()? {
                0 => Outcome::Accepted,
                1 => Outcome::Rejected {
                    code: r.u16()?,
                    reason: r.str8("reason", MAX_REASON)?,
                },
                2 => Outcome::ChallengeRequired {
                    challenge: r.array()?,
                },
                tag => {
                    return Err(Error::UnknownTag {
                        what: "outcome",
                        tag,
                    })
                }
            },
            body: r.bytes16(MAX_RESPONSE_BODY)?.to_vec(),
        })
    }

    /// Signs with the device's identity key. Over-long reasons are cut at a character boundary.
    pub fn sign(mut self, device_identity: &SigningKey) -> Result<SignedResponse> {
        if let Outcome::Rejected { reason, .. } = &mut self.outcome {
            truncate_utf8(reason, MAX_REASON);
        }
        if self.body.len() > MAX_RESPONSE_BODY {
            return Err(Error::TooLarge {
                what: "response body",
                actual: self.body.len(),
                limit: MAX_RESPONSE_BODY,
            });
        }
        let mut w = Writer::new();
        self.encode_content(&mut w);
        let signature = device_identity.sign(&[RESPONSE_LABEL, &w.into_inner()].concat());
        Ok(SignedResponse {
            response: self,
            signature,
        })
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedResponse {
    pub response: Response,
    pub signature: Signature,
}

impl SignedResponse {
    /// Checks the device's signature and that this answers `command` from `device`.
    pub fn verify(
        &self,
        device_identity: &PublicKey,
        device: &DeviceId,
        command: &CommandId,
    ) -> Result<&Response> {
        let mut w = Writer::new();
        self.response.encode_content(&mut w);
        device_identity.verify_or(
            &self.signature,
            &[RESPONSE_LABEL, &w.into_inner()].concat(),
            "response",
        )?;
        if self.response.device != *device {
            return Err(Error::WrongDevice {
                what: "response".to_owned(),
                expected: device.to_string(),
                found: self.response.device.to_string(),
            });
        }
        if self.response.command != *command {
            return Err(Error::Invalid {
                what: "response",
                why: "it answers a different command",
            });
        }
        Ok(&self.response)
    }
}

impl Codec for SignedResponse {
    const NAME: &'static str = "response";
    const MAX_LEN: usize = crate::pad::MAX_MESSAGE;
    fn encode(&self, w: &mut Writer) {
        self.response.encode_content(w);
        w.nested(&self.signature);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SignedResponse {
            response: Response::read_content(r)?,
            signature: r.nested()?,
        })
    }
}

/// Why a device may run a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The sender is a current owner.
    Owner,
    /// The sender holds a valid grant chain; the device must still count these use limits.
    Guest(grant::GrantApproval),
    /// A valid redemption of the bind-on-first-use leaf `grant` by the phone key `key`: the
    /// device stores the binding (or finds it already stored for `key`) and runs nothing.
    Redeem {
        grant: grant::GrantId,
        key: PublicKey,
    },
}

/// Decides whether `command`'s sender may run its action, with its arguments, on the device
/// whose verified state is `state`, at device time `now_ms`, for a verifier that keeps no
/// binding of bind-on-first-use grants (see [`authorize_bound`]). The signature, device id and
/// freshness are checked before this, in the device's pipeline. Owners may pass any arguments;
/// a guest only none, or a string every grant of its chain pins (docs/PROTOCOL.md §4).
pub fn authorize(
    command: &Command,
    state: &crate::chain::ChainState,
    now_ms: u64,
) -> Result<Authorization> {
    authorize_bound(command, state, now_ms, &grant::no_bindings)
}

/// [`authorize`] with the device's bindings (grant id → the phone key it was bound to). A
/// [`grant::REDEEM_ACTION`] command with a grant chain is a redemption: after the chain's own
/// checks (docs/PROTOCOL.md §4, steps 1–5 as for a redemption) its arguments must be a
/// [`RedeemRequest`](crate::redeem::RedeemRequest) signed by the key to bind, for this device
/// and the leaf grant; then the leaf must be unbound or bound to that same key (a repeat is
/// idempotent), else `AlreadyRedeemed`.
pub fn authorize_bound(
    command: &Command,
    state: &crate::chain::ChainState,
    now_ms: u64,
    bindings: grant::Bindings<'_>,
) -> Result<Authorization> {
    if command.device != state.device {
        return Err(Error::WrongDevice {
            what: "command".to_owned(),
            expected: state.device.to_string(),
            found: command.device.to_string(),
        });
    }
    if command.grants.is_empty() {
        return if state.is_owner(&command.sender) {
            Ok(Authorization::Owner)
        } else {
            Err(Error::NotAuthorized)
        };
    }
    let request = grant::GrantRequest {
        device: &command.device,
        sender: &command.sender,
        action: &command.action,
        args: &command.args,
        now_ms,
    };
    let approval = grant::verify_grant_chain_bound(&command.grants, state, &request, bindings)?;
    if command.action != grant::REDEEM_ACTION {
        return Ok(Authorization::Guest(approval));
    }
    let leaf = command.grants[command.grants.len() - 1].id();
    let redeem = crate::redeem::RedeemRequest::from_args(&command.args)?;
    redeem.verify(&command.device, &leaf)?;
    match bindings(&leaf) {
        Some(bound) if bound != redeem.key => Err(Error::AlreadyRedeemed),
        _ => Ok(Authorization::Redeem {
            grant: leaf,
            key: redeem.key,
        }),
    }
}
