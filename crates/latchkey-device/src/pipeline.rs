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

use crate::audit::{
    self, ArgsDigest, AuditBody, AuditRecord, RefusalClass, RefusalSummary, Running, Stage, Via,
    ViewMark,
};
use crate::audit_log::{EraInfo, PruneReport};
use crate::clock::Clock;
use crate::config::AUDIT_ACTION;
use crate::store::{Store, StrikeRegister};
use crate::tally::{Disposition, RefusalTally};
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
    /// Refusals counted, not written one by one (see [`crate::tally`]).
    tally: Mutex<RefusalTally>,
    /// The ownership era of `view`, which every audit entry names.
    era: RwLock<EraInfo>,
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
        let era = EraInfo::of(&view.chain);
        let pipeline = Pipeline {
            device: keys.device_id(),
            keys,
            clock,
            rng: Mutex::new(rng),
            store,
            view: RwLock::new(view),
            challenges: Mutex::new(ChallengeBook::default()),
            config,
            last_prune_ms: AtomicU64::new(0),
            tally: Mutex::new(RefusalTally::default()),
            era: RwLock::new(era),
        };
        pipeline.start_era_if_new();
        pipeline
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
        let era = EraInfo::of(&view.chain);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        let changed = {
            let mut current = self.era.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *current, era) != era
        };
        if changed {
            // Counts of the old era would land in a log about to be deleted.
            let _ = self.tally().take();
            self.start_era_if_new();
        }
        Ok(())
    }

    /// The ownership era audit entries are written in.
    pub fn era(&self) -> EraInfo {
        *self.era.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the era marker (deleting an older era's log) if the log is not in this era yet,
    /// so new owners find their era's first entry even before any command arrives.
    fn start_era_if_new(&self) {
        match self
            .store
            .ensure_audit_era(&self.era(), self.clock.now_ms(), &self.keys.identity)
        {
            Ok(Some(_)) => tracing::info!("audit log: a new ownership era starts"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "starting the audit log's new era failed"),
        }
    }

    pub fn view_mark(&self) -> ViewMark {
        self.view()
            .mark(self.clock.ticks_ms(), self.config.max_view_age_ms)
    }

    /// Steps size through nonce.
    pub fn open(&self, envelope: &[u8], via: Via) -> Result<Fresh, Early> {
        let refuse = |stage: Stage, message: String, sender: Option<PublicKey>| {
            let code = if stage == Stage::Signature {
                RejectCode::BadSignature
            } else {
                RejectCode::Malformed
            };
            Early::Refused(self.refuse(via, stage, code, message, sender))
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
        // Hashed only once the sender is known: junk costs no hashing beyond the AEAD's.
        let env_hash = audit::envelope_hash(envelope);
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

    /// The built-in `audit` action's output: a page of signed entries. The open refusal
    /// summary is written first, so the owner sees every refusal up to now; the range served
    /// is recorded, so pruning knows what the owners have.
    pub fn audit_page(&self, args: &[u8]) -> Result<Vec<u8>, String> {
        let before = audit::parse_page_args(args)?;
        self.flush_refusals(true);
        let stored = self
            .store
            .audit_page(before, 255)
            .map_err(|e| e.to_string())?;
        let page = audit::build_page(stored.oldest, stored.next_seq, stored.newest_first);
        if let Some((lo, hi)) = page.range {
            if let Err(e) = self.store.audit_served(lo, hi) {
                tracing::warn!(error = %e, "recording the audit page served failed");
            }
        }
        Ok(page.bytes)
    }

    /// Writes the "about to run" entry of an authorized command, durably (fsynced), before its
    /// action starts: a power cut during the action cannot lose the record that it began. If
    /// it cannot be written the action must not run.
    pub fn about_to_run(&self, auth: &Authorized) -> Result<(), String> {
        let fresh = &auth.fresh;
        let command = &fresh.command;
        let body = AuditBody::Running(Running {
            via: fresh.via,
            envelope: fresh.envelope,
            sender: command.sender,
            command: command.id(),
            action: command.action.clone(),
            args: ArgsDigest::of(&command.args),
            by_owner: auth.owner,
            view: self.view_mark(),
        });
        self.store
            .append_audit_durable(
                &self.era(),
                self.clock.now_ms(),
                body,
                &self.keys.identity,
            )
            .map_err(|e| {
                tracing::error!(error = %e, "writing the audit log failed; the action will not run");
                "the device could not write its audit log, so the action did not run; see the device log".to_owned()
            })?;
        self.tally().logged(fresh.envelope);
        Ok(())
    }

    /// Writes the open refusal summary: when its interval is over, or now if `force`.
    pub fn flush_refusals(&self, force: bool) {
        let summary = {
            let mut tally = self.tally();
            if force {
                tally.take()
            } else {
                tally.due(self.clock.ticks_ms())
            }
        };
        if let Some(summary) = summary {
            self.write_summary(summary);
        }
    }

    /// Bounds the audit log near `keep` entries (never losing an unfetched accepted entry).
    pub fn prune_audit(&self, keep: u64) -> crate::Result<Option<PruneReport>> {
        self.store
            .prune_audit(keep, &self.era(), self.clock.now_ms(), &self.keys.identity)
    }

    /// Records a refusal of a body the transport did not even read in full (over the limit).
    pub fn refuse_oversize(&self, len_hint: Option<usize>, via: Via) -> Refused {
        let message = match len_hint {
            Some(n) => format!("body is {n} bytes, over the {MAX_SEALED_COMMAND}-byte limit"),
            None => format!("body is over the {MAX_SEALED_COMMAND}-byte limit"),
        };
        self.refuse(via, Stage::Size, RejectCode::Malformed, message, None)
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
        via: Via,
        stage: Stage,
        code: RejectCode,
        message: String,
        sender: Option<PublicKey>,
    ) -> Refused {
        // Nobody is known to have sent this: counted, not written (and not logged at warn
        // level, which a flood would turn into a disk-filling log of its own).
        tracing::debug!(
            stage = stage.name(),
            code = code as u16,
            reason = %message,
            via = ?via,
            claimed_sender = ?sender.map(|s| s.short()),
            "envelope refused before the sender was authenticated"
        );
        self.count_refusal(RefusalClass::Unauthenticated, stage, code as u16);
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
        self.record_decision(fresh, stage, code, &reason);
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

    /// Writes one command's decision, unless it is a refusal nobody with standing sent, a
    /// copy of an envelope already written, or one too many from one sender this interval:
    /// those are counted (docs/PROTOCOL.md §8.3). The outcome of an action that ran is always
    /// written.
    fn record_decision(&self, fresh: &Fresh, stage: Stage, code: u16, reason: &str) {
        let command = &fresh.command;
        let ran = stage == Stage::Action && (code == 0 || code == RejectCode::ActionFailed as u16);
        if code != 0 && !ran {
            let standing = self.has_standing(command);
            let disposition = self.tally().classify(
                self.clock.ticks_ms(),
                standing,
                &command.sender,
                &fresh.envelope,
            );
            if let Disposition::Count(class) = disposition {
                tracing::debug!(
                    stage = stage.name(),
                    code,
                    class = class.name(),
                    "command rejected (counted)"
                );
                self.count_refusal(class, stage, code);
                return;
            }
        }
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
        self.write(AuditBody::Decision(AuditRecord {
            via: fresh.via,
            envelope: fresh.envelope,
            sender: Some(command.sender),
            command: Some(command.id()),
            action: command.action.clone(),
            args: Some(ArgsDigest::of(&command.args)),
            code,
            stage,
            detail: reason.to_owned(),
            view: self.view_mark(),
        }));
        self.tally().logged(fresh.envelope);
    }

    /// The sender is a current owner, or the subject of a grant chain that verifies against
    /// the current owners (whatever its window, actions or revocation say). Anyone else could
    /// be one of unlimited keys made for a flood.
    fn has_standing(&self, command: &Command) -> bool {
        let view = self.view();
        let state = view.chain.state();
        if state.is_owner(&command.sender) {
            return true;
        }
        command
            .grants
            .last()
            .is_some_and(|g| g.body.subject == command.sender)
            && latchkey_proto::grant::verify_chain_structure(&command.grants, state).is_ok()
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, RefusalTally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_refusal(&self, class: RefusalClass, stage: Stage, code: u16) {
        let closed = self.tally().count(
            self.clock.ticks_ms(),
            self.clock.now_ms(),
            class,
            stage,
            code,
        );
        if let Some(summary) = closed {
            self.write_summary(summary);
        }
    }

    fn write_summary(&self, summary: RefusalSummary) {
        tracing::warn!(
            refused = summary.total(),
            "refusals from unknown senders in the last interval (one audit entry)"
        );
        self.write(AuditBody::Refusals(summary));
    }

    fn write(&self, body: AuditBody) {
        if let Err(e) =
            self.store
                .append_audit(&self.era(), self.clock.now_ms(), body, &self.keys.identity)
        {
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
