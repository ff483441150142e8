//! The verification pipeline, as a plain struct: the clock and randomness are injected and the
//! only I/O is the SQLite state, so every refusal is unit-testable without sockets.
//!
//! Order (docs/PROTOCOL.md §5.4), each step with its own logged reason ([`Stage`] plus a
//! [`RejectCode`]): size → header → decrypt → unpad → decode → signature → device id →
//! timestamp window (or a challenge when the clock is not set) → nonce → authority → use
//! limits → action. Before the signature verifies nothing is sealed back ([`Refused`]); after
//! it, every outcome is a signed, timestamped response sealed to the sender ([`Answer`]).
//!
//! **Invariant: the nonce is durable before authority is checked and the action runs**, so a
//! replay is refused even across `kill -9`.
//!
//! The caller drives the steps: [`Pipeline::open`] (through the nonce), then — after refreshing
//! the ownership view if it is old — [`Pipeline::authorize`], then runs the action and hands
//! its result to [`Pipeline::complete`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use latchkey_proto::command::{
    self, Authorization, Command, CommandId, Outcome, RejectCode, ReplyTo, Response,
    MAX_RESPONSE_BODY,
};
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::envelope::{self, Responder, MAX_SEALED_COMMAND};
use latchkey_proto::keys::{DeviceId, PublicKey};
use latchkey_proto::pad::BUCKETS;
use latchkey_proto::replay::{ChallengeBook, ReplayWindow};
use latchkey_proto::Error as ProtoError;
use rand_core::{CryptoRng, RngCore};
use std::sync::Arc;

use crate::audit::{self, AuditRecord, Stage, Via, ViewMark};
use crate::clock::Clock;
use crate::config::AUDIT_ACTION;
use crate::store::{Store, StrikeRegister};
use crate::view::View;

/// Sizes a sealed command can have: header and tag around each padding bucket.
pub const SEALED_SIZES: [usize; 3] = {
    let overhead = MAX_SEALED_COMMAND - BUCKETS[2];
    [
        BUCKETS[0] + overhead,
        BUCKETS[1] + overhead,
        BUCKETS[2] + overhead,
    ]
};

/// How often expired nonces are deleted (at most).
const PRUNE_EVERY_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub window: ReplayWindow,
    /// A view older than this is reported stale (and refreshed before acting by the agent).
    pub max_view_age_ms: u64,
    /// Configured action names (`audit` is built in and needs no entry).
    pub actions: BTreeSet<String>,
}

/// Refused before the sender was authenticated: answered without a sealed body (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub stage: Stage,
    pub code: RejectCode,
    pub message: String,
}

/// A signed, sealed response for an authenticated sender.
#[derive(Debug)]
pub struct Answer {
    pub sealed: Vec<u8>,
    pub reply_to: ReplyTo,
    pub command: CommandId,
    pub stage: Stage,
    /// 0 accepted, else the `RejectCode` (16 with a challenge).
    pub code: u16,
    pub reason: String,
}

impl Answer {
    pub fn accepted(&self) -> bool {
        self.code == 0
    }
}

/// What [`Pipeline::open`] could not pass on.
#[derive(Debug)]
pub enum Early {
    Refused(Refused),
    Answered(Answer),
}

/// A command that passed signature, device id, freshness and the strike register.
#[derive(Debug)]
pub struct Fresh {
    command: Command,
    reply: Responder,
    envelope: [u8; 32],
    via: Via,
}

impl Fresh {
    pub fn command(&self) -> &Command {
        &self.command
    }
}

/// A command its sender may run now; its use limits are already counted.
#[derive(Debug)]
pub struct Authorized {
    fresh: Fresh,
    owner: bool,
}

impl Authorized {
    pub fn command(&self) -> &Command {
        &self.fresh.command
    }
    pub fn action(&self) -> &str {
        &self.fresh.command.action
    }
    pub fn args(&self) -> &[u8] {
        &self.fresh.command.args
    }
    pub fn sender(&self) -> PublicKey {
        self.fresh.command.sender
    }
    pub fn by_owner(&self) -> bool {
        self.owner
    }
    /// The built-in `audit` action (answered by [`Pipeline::audit_page`]).
    pub fn is_audit(&self) -> bool {
        self.fresh.command.action == AUDIT_ACTION
    }
}

/// The pipeline. `C` is the clock, `R` the randomness for challenges and sealing.
#[derive(Debug)]
pub struct Pipeline<C, R> {
    keys: DeviceKeys,
    device: DeviceId,
    clock: C,
    rng: Mutex<R>,
    store: Arc<Store>,
    view: RwLock<View>,
    challenges: Mutex<ChallengeBook>,
    config: PipelineConfig,
    last_prune_ms: AtomicU64,
}

impl<C: Clock, R: RngCore + CryptoRng> Pipeline<C, R> {
    pub fn new(
        keys: DeviceKeys,
        clock: C,
        rng: R,
        store: Arc<Store>,
        view: View,
        config: PipelineConfig,
    ) -> Self {
        Pipeline {
            device: keys.device_id(),
            keys,
            clock,
            rng: Mutex::new(rng),
            store,
            view: RwLock::new(view),
            challenges: Mutex::new(ChallengeBook::default()),
            config,
            last_prune_ms: AtomicU64::new(0),
        }
    }

    pub fn device_id(&self) -> DeviceId {
        self.device
    }
    pub fn keys(&self) -> &DeviceKeys {
        &self.keys
    }
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
    pub fn clock(&self) -> &C {
        &self.clock
    }
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the view (after a quorum check) and persists it.
    pub fn set_view(&self, view: View) -> crate::Result<()> {
        view.save(&self.store)?;
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        Ok(())
    }

    pub fn view_mark(&self) -> ViewMark {
        self.view()
            .mark(self.clock.ticks_ms(), self.config.max_view_age_ms)
    }

    /// Steps size through nonce.
    pub fn open(&self, envelope: &[u8], via: Via) -> Result<Fresh, Early> {
        let env_hash = audit::envelope_hash(envelope);
        let refuse = |stage: Stage, message: String, sender: Option<PublicKey>| {
            let code = if stage == Stage::Signature {
                RejectCode::BadSignature
            } else {
                RejectCode::Malformed
            };
            Early::Refused(self.refuse(env_hash, via, stage, code, message, sender))
        };

        // Size: only the three sealed sizes exist; anything else was cut or padded in transit.
        if envelope.len() > MAX_SEALED_COMMAND {
            return Err(refuse(
                Stage::Size,
                format!(
                    "envelope is {} bytes, over the {MAX_SEALED_COMMAND}-byte limit",
                    envelope.len()
                ),
                None,
            ));
        }
        if !SEALED_SIZES.contains(&envelope.len()) {
            return Err(refuse(
                Stage::Size,
                format!(
                    "envelope is {} bytes; a sealed command is {}, {} or {} bytes (truncated?)",
                    envelope.len(),
                    SEALED_SIZES[0],
                    SEALED_SIZES[1],
                    SEALED_SIZES[2]
                ),
                None,
            ));
        }

        // Header, decrypt, unpad, decode.
        let opened = match envelope::open_command(envelope, &self.keys.kem) {
            Ok(o) => o,
            Err(e) => {
                let stage = match &e {
                    ProtoError::UnsupportedVersion { .. } | ProtoError::UnknownTag { .. }
                        if is_envelope_header_error(&e) =>
                    {
                        Stage::Header
                    }
                    ProtoError::DecryptFailed => Stage::Decrypt,
                    ProtoError::BadPadding => Stage::Unpad,
                    _ => Stage::Decode,
                };
                return Err(refuse(stage, e.to_string(), None));
            }
        };
        let command = opened.command;

        // Signature.
        if let Err(e) = command.verify_signature() {
            return Err(refuse(
                Stage::Signature,
                e.to_string(),
                Some(command.command.sender),
            ));
        }
        let fresh = Fresh {
            command: command.command,
            reply: opened.reply,
            envelope: env_hash,
            via,
        };

        // Device id.
        if fresh.command.device != self.device {
            return Err(Early::Answered(self.reject(
                &fresh,
                Stage::Device,
                RejectCode::WrongDevice,
                format!(
                    "this is device {}, not {}",
                    self.device, fresh.command.device
                ),
            )));
        }

        // Timestamp window and nonce, or a challenge when the clock is not set.
        match self.clock.now_ms() {
            Some(now) => {
                self.prune_nonces(now);
                let mut register = StrikeRegister(&self.store);
                if let Err(e) = self.config.window.check(
                    now,
                    fresh.command.timestamp_ms,
                    &fresh.command.nonce,
                    &mut register,
                ) {
                    let (stage, code) = match &e {
                        ProtoError::TooOld { .. } => (Stage::Timestamp, RejectCode::TooOld),
                        ProtoError::TooNew { .. } => (Stage::Timestamp, RejectCode::TooNew),
                        ProtoError::Replayed => (Stage::Nonce, RejectCode::Replayed),
                        _ => (Stage::Nonce, RejectCode::Internal),
                    };
                    return Err(Early::Answered(self.reject(
                        &fresh,
                        stage,
                        code,
                        e.to_string(),
                    )));
                }
            }
            None => {
                let Some(challenge) = fresh.command.challenge else {
                    let challenge = {
                        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                        self.challenges
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .issue(&mut *rng)
                    };
                    return Err(Early::Answered(self.answer(
                        &fresh,
                        Stage::Challenge,
                        Outcome::ChallengeRequired { challenge },
                        Vec::new(),
                        RejectCode::ClockUnset as u16,
                        "the device clock is not set: challenge issued".into(),
                    )));
                };
                let redeemed = self
                    .challenges
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .redeem(&challenge);
                if let Err(e) = redeemed {
                    return Err(Early::Answered(self.reject(
                        &fresh,
                        Stage::Challenge,
                        RejectCode::ClockUnset,
                        e.to_string(),
                    )));
                }
                match self
                    .store
                    .insert_nonce(&fresh.command.nonce, fresh.command.timestamp_ms)
                {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(Early::Answered(self.reject(
                            &fresh,
                            Stage::Nonce,
                            RejectCode::Replayed,
                            ProtoError::Replayed.to_string(),
                        )))
                    }
                    Err(e) => {
                        return Err(Early::Answered(self.reject(
                            &fresh,
                            Stage::Nonce,
                            RejectCode::Internal,
                            format!("the strike register failed: {e}"),
                        )))
                    }
                }
            }
        }
        Ok(fresh)
    }

    /// Steps authority and use limits, against the current view.
    pub fn authorize(&self, fresh: Fresh) -> Result<Authorized, Answer> {
        let now = self.clock.now_ms();
        let decision = {
            let view = self.view();
            if !fresh.command.grants.is_empty() && now.is_none() {
                Err((
                    RejectCode::ClockUnset,
                    "guest access needs the device's clock; set it (NTP) and retry".to_owned(),
                ))
            } else {
                command::authorize(&fresh.command, view.chain.state(), now.unwrap_or(0))
                    .map_err(|e| (RejectCode::for_error(&e), e.to_string()))
            }
        };
        let auth = match decision {
            Ok(a) => a,
            Err((code, reason)) => return Err(self.reject(&fresh, Stage::Authority, code, reason)),
        };
        let owner = matches!(auth, Authorization::Owner);
        let action = fresh.command.action.as_str();
        if action == AUDIT_ACTION {
            if !owner {
                return Err(self.reject(
                    &fresh,
                    Stage::Authority,
                    RejectCode::NotAuthorized,
                    "the audit log is for owners only".into(),
                ));
            }
        } else if !self.config.actions.contains(action) {
            return Err(self.reject(
                &fresh,
                Stage::Action,
                RejectCode::UnknownAction,
                format!("this device has no action \"{action}\""),
            ));
        }
        if let Authorization::Guest(approval) = &auth {
            match self.store.take_uses(&approval.use_limits) {
                Ok(Ok(())) => {}
                Ok(Err(spent)) => {
                    return Err(self.reject(
                        &fresh,
                        Stage::UseLimit,
                        RejectCode::UseLimitReached,
                        format!(
                            "grant {} allows {} uses and all are spent",
                            spent.grant, spent.limit
                        ),
                    ))
                }
                Err(e) => {
                    return Err(self.reject(
                        &fresh,
                        Stage::UseLimit,
                        RejectCode::Internal,
                        format!("use counts failed: {e}"),
                    ))
                }
            }
        }
        Ok(Authorized { fresh, owner })
    }

    /// Step action: records the outcome and seals the signed response.
    pub fn complete(&self, auth: Authorized, result: Result<Vec<u8>, String>) -> Answer {
        match result {
            Ok(mut output) => {
                output.truncate(MAX_RESPONSE_BODY);
                let detail = format!("ran; {} bytes of output", output.len());
                self.answer(
                    &auth.fresh,
                    Stage::Action,
                    Outcome::Accepted,
                    output,
                    0,
                    detail,
                )
            }
            Err(why) => self.reject(&auth.fresh, Stage::Action, RejectCode::ActionFailed, why),
        }
    }

    /// The built-in `audit` action's output: a page of signed entries.
    pub fn audit_page(&self, args: &[u8]) -> Result<Vec<u8>, String> {
        let before = audit::parse_page_args(args)?;
        let next = self.store.audit_next_seq().map_err(|e| e.to_string())?;
        let entries = self
            .store
            .audit_newest_first(before, 255)
            .map_err(|e| e.to_string())?;
        Ok(audit::build_page(next, entries))
    }

    /// Records a refusal of a body the transport did not even read in full (over the limit).
    pub fn refuse_oversize(&self, len_hint: Option<usize>, via: Via) -> Refused {
        let message = match len_hint {
            Some(n) => format!("body is {n} bytes, over the {MAX_SEALED_COMMAND}-byte limit"),
            None => format!("body is over the {MAX_SEALED_COMMAND}-byte limit"),
        };
        self.refuse(
            [0; 32],
            via,
            Stage::Size,
            RejectCode::Malformed,
            message,
            None,
        )
    }

    fn prune_nonces(&self, now: u64) {
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PRUNE_EVERY_MS {
            return;
        }
        self.last_prune_ms.store(now, Ordering::Relaxed);
        if let Err(e) = self
            .store
            .forget_nonces_before(self.config.window.forget_horizon(now))
        {
            tracing::warn!(error = %e, "pruning the strike register failed");
        }
    }

    fn refuse(
        &self,
        envelope: [u8; 32],
        via: Via,
        stage: Stage,
        code: RejectCode,
        message: String,
        sender: Option<PublicKey>,
    ) -> Refused {
        tracing::warn!(
            stage = stage.name(),
            code = code as u16,
            reason = %message,
            via = ?via,
            "command refused"
        );
        self.audit(AuditRecord {
            time_ms: self.clock.now_ms(),
            via,
            envelope,
            sender,
            command: None,
            action: String::new(),
            code: code as u16,
            stage,
            detail: message.clone(),
            view: self.view_mark(),
        });
        Refused {
            stage,
            code,
            message,
        }
    }

    fn reject(&self, fresh: &Fresh, stage: Stage, code: RejectCode, reason: String) -> Answer {
        let outcome = Outcome::Rejected {
            code: code as u16,
            reason: reason.clone(),
        };
        self.answer(fresh, stage, outcome, Vec::new(), code as u16, reason)
    }

    /// Audits, signs and seals one response.
    fn answer(
        &self,
        fresh: &Fresh,
        stage: Stage,
        outcome: Outcome,
        body: Vec<u8>,
        code: u16,
        reason: String,
    ) -> Answer {
        let command = &fresh.command;
        let id = command.id();
        if code == 0 {
            tracing::info!(action = %command.action, sender = %command.sender, "command accepted");
        } else {
            tracing::warn!(
                stage = stage.name(),
                code,
                reason = %reason,
                action = %command.action,
                sender = %command.sender,
                "command rejected"
            );
        }
        self.audit(AuditRecord {
            time_ms: self.clock.now_ms(),
            via: fresh.via,
            envelope: fresh.envelope,
            sender: Some(command.sender),
            command: Some(id),
            action: command.action.clone(),
            code,
            stage,
            detail: reason.clone(),
            view: self.view_mark(),
        });
        let response = Response {
            device: self.device,
            command: id,
            timestamp_ms: self.clock.now_ms(),
            outcome,
            body,
        };
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let sealed = response
            .sign(&self.keys.identity)
            .and_then(|signed| fresh.reply.seal(&signed, &mut *rng))
            .expect("bodies are cut to MAX_RESPONSE_BODY, so every response signs and pads");
        Answer {
            sealed,
            reply_to: command.reply_to,
            command: id,
            stage,
            code,
            reason,
        }
    }

    fn audit(&self, record: AuditRecord) {
        if let Err(e) = self.store.append_audit(record, &self.keys.identity) {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }
}

fn is_envelope_header_error(e: &ProtoError) -> bool {
    matches!(
        e,
        ProtoError::UnsupportedVersion {
            what: "envelope",
            ..
        } | ProtoError::UnknownTag {
            what: "envelope kind",
            ..
        }
    )
}
