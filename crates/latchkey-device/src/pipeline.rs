//! The verification pipeline, as a plain struct: the clock and randomness are injected and the
//! only I/O is the SQLite state, so every refusal is unit-testable without sockets.
//!
//! Order (docs/PROTOCOL.md §5.4), each step with its own logged reason ([`Stage`] plus a
//! [`RejectCode`]): size → header → decrypt → unpad → decode → signature → device id →
//! timestamp window → authority (including how stale the view is) → challenge (when the clock
//! is not set or not trusted) → nonce → use limits → action. Before the signature verifies
//! nothing is sealed back ([`Refused`]); after it, every outcome is a signed, timestamped
//! response sealed to the sender ([`Answer`]).
//!
//! **Invariant: cheap work first.** Everything up to and including authority is computed in
//! memory against the verified view; the first write happens only for a sender the device
//! would obey, so a stranger costs no disk write at all.
//!
//! **Invariant: no command runs twice, across restarts too, with no fsync per command.** The
//! nonce is taken in memory ([`crate::strike`]); every accepted timestamp is under the durable
//! lease, and a run asks a challenge of every command timestamped at or under the lease the
//! previous runs left (its restart barrier, [`Store::boot`]), so an envelope captured before a
//! crash and resent after it never runs (docs/PROTOCOL.md §6).
//!
//! **Invariant: an action's "about to run" entry is written before the action starts and is
//! durable before the device answers** ([`Pipeline::make_durable`], group-committed), so what
//! the device acknowledged is never lost, and `kill -9` during an action never erases it.
//!
//! **Invariant: the wall clock is judged against a durable high-water mark** (`mark`, see
//! [`crate::store`]): a timestamp's floor and grant windows use `max(now, mark)`, and a clock
//! more than the window behind the mark is not trusted at all ([`WallClock::Behind`]): the
//! device then answers with challenges, as if it had no clock.
//!
//! The caller drives the steps: [`Pipeline::open`] (through the timestamp window), then —
//! after refreshing the ownership view if it is old — [`Pipeline::authorize`] (authority,
//! challenge, nonce, use limits), then runs the action and hands its result to
//! [`Pipeline::complete`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use latchkey_proto::command::{
    self, Authorization, Command, CommandId, Outcome, RejectCode, ReplyTo, Response,
    MAX_RESPONSE_BODY,
};
use latchkey_proto::envelope::{self, Responder, MAX_SEALED_COMMAND};
use latchkey_proto::grant::GrantId;
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
use crate::clock::{utc_minute, Clock};
use crate::config::AUDIT_ACTION;
use crate::events::{EventNote, NoteSender};
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{ConsentEntry, CONSENT_ACTION};
use latchkey_proto::event::{EventKind, SUBSCRIBE_ACTION};

/// The reserved redemption action of a one-time link (docs/PROTOCOL.md §10): its success is
/// an event of its own.
const REDEEM_ACTION: &str = "latchkey.redeem";
use crate::keyfile::DeviceSecrets;
use crate::store::{Accepted, RunningEntry, Store};
use crate::stream::consent::Verdict;
use crate::stream::keys::StreamKeys;
use crate::strike::{Strike, StrikeRegister};
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

/// How often expired nonces are forgotten (at most; more often with a shorter window).
const PRUNE_EVERY_MS: u64 = 60_000;

/// How far ahead of the clock the durable lease is kept (see [`PipelineConfig::lease_ms`]).
pub const DEFAULT_LEASE_MS: u64 = 90_000;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub window: ReplayWindow,
    /// A view older than this is reported stale (and refreshed before acting by the agent).
    pub max_view_age_ms: u64,
    /// Guests are refused ([`RejectCode::StaleView`]) once this boot's last quorum is older
    /// than this, or there was none.
    pub max_guest_staleness_ms: u64,
    /// Owners are refused ([`RejectCode::StaleView`]) once the device's up-time since its last
    /// quorum is longer than this; 0 means never.
    pub max_owner_staleness_ms: u64,
    /// Configured action names (`audit` is built in and needs no entry).
    pub actions: BTreeSet<String>,
    /// How far past `now + lead` the durable lease is pushed each time it is written (by the
    /// timer, the sync after each action, or a command whose timestamp is past it). Longer
    /// than the timer's period, so commands never wait for the lease; after a restart, commands
    /// signed within about this long before it need a challenge (one more round trip).
    pub lease_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            window: ReplayWindow::default(),
            max_view_age_ms: 300_000,
            max_guest_staleness_ms: 900_000,
            max_owner_staleness_ms: 86_400_000,
            actions: BTreeSet::new(),
            lease_ms: DEFAULT_LEASE_MS,
        }
    }
}

/// What the device's wall clock can be trusted for right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WallClock {
    /// Set and not far behind the mark: it judges timestamps (`max(now, mark)` for their
    /// floor and for grant windows, `now` for their lead).
    Trusted { now: u64, mark: u64 },
    /// Set, but more than the window behind the high-water mark: set back, or reset to a
    /// wrong time. Not trusted until it passes the mark again; commands need a challenge.
    Behind { now: u64, mark: u64 },
    /// Not set (or configured untrusted): commands need a challenge.
    Unset,
}

impl WallClock {
    /// The time grant windows are judged at: `max(now, mark)`, if the clock is trusted.
    pub fn effective(&self) -> Option<u64> {
        match *self {
            WallClock::Trusted { now, mark } => Some(now.max(mark)),
            _ => None,
        }
    }

    /// The clock reading when it is trusted.
    pub fn trusted_now(&self) -> Option<u64> {
        match *self {
            WallClock::Trusted { now, .. } => Some(now),
            _ => None,
        }
    }

    /// Why the device asks for a challenge (or refuses guests), in words.
    pub fn why_untrusted(&self) -> String {
        match *self {
            WallClock::Behind { now, mark } => format!(
                "the device clock ({}) is behind its high-water mark ({}); using challenges",
                utc_minute(now),
                utc_minute(mark)
            ),
            _ => "the device clock is not set; using challenges".into(),
        }
    }
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
    /// A redemption, already stored with the nonce: the grant and the key it is bound to.
    redeemed: Option<(GrantId, PublicKey)>,
    /// The "about to run" entry's group-commit ticket, if it was written lazily and is not
    /// durable yet ([`Pipeline::make_durable`]).
    ticket: Option<u64>,
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
    /// A redemption of a bind-on-first-use grant: the binding is already on disk and there is
    /// no action to run; [`Pipeline::complete`] it with `Ok(vec![])`.
    pub fn redeemed(&self) -> Option<(GrantId, PublicKey)> {
        self.redeemed
    }

    /// The reserved `latchkey.subscribe` action (answered by [`Pipeline::subscribe`]).
    pub fn is_subscribe(&self) -> bool {
        self.fresh.command.action == SUBSCRIBE_ACTION
    }

    /// The reserved `latchkey.consent` action (answered by [`Pipeline::consent`]).
    pub fn is_consent(&self) -> bool {
        self.fresh.command.action == CONSENT_ACTION
    }

    /// What [`Pipeline::make_durable`] takes: the "about to run" entry still to be synced.
    pub fn ticket(&self) -> Option<u64> {
        self.ticket
    }
}

/// The pipeline. `C` is the clock, `R` the randomness for challenges and sealing.
#[derive(Debug)]
pub struct Pipeline<C, R> {
    /// Without the setup key: commands never need it, and the agent spends it from disk.
    keys: DeviceSecrets,
    device: DeviceId,
    clock: C,
    rng: Mutex<R>,
    store: Arc<Store>,
    view: RwLock<View>,
    challenges: Mutex<ChallengeBook>,
    config: PipelineConfig,
    /// Ticks of the last prune of the strike register.
    last_prune_ms: AtomicU64,
    /// The high-water mark of time: the durable one at start, raised by trusted readings and
    /// accepted timestamps (made durable by the timer and the sync after each action).
    mark: AtomicU64,
    /// This run's strike register.
    strikes: Mutex<StrikeRegister>,
    /// The durable lease: no timestamp above it is accepted before it is raised on disk.
    lease: AtomicU64,
    /// Commands timestamped at or under this need a challenge in this run ([`Store::boot`]).
    barrier: u64,
    /// This boot's id (the clock's), read once.
    boot: String,
    /// Refusals counted, not written one by one (see [`crate::tally`]).
    tally: Mutex<RefusalTally>,
    /// The ownership era of `view`, which every audit entry names.
    era: RwLock<EraInfo>,
    /// The owners of `view`, to notice one being removed within an era.
    owners: RwLock<Vec<PublicKey>>,
    /// Bind-on-first-use grants redeemed here (grant → phone key), as in the store: read by
    /// authority in memory, written after the store committed.
    bindings: RwLock<HashMap<GrantId, PublicKey>>,
    /// Where guest decisions are noted for the event poster ([`crate::events`]); none in
    /// tests and tools that post no events.
    events: RwLock<Option<NoteSender>>,
    /// The device's data streams, if it publishes any ([`crate::stream`]).
    streams: RwLock<Option<Arc<StreamKeys>>>,
    /// One consent entry judged and recorded at a time.
    consent_lock: Mutex<()>,
}

impl<C: Clock, R: RngCore + CryptoRng> Pipeline<C, R> {
    pub fn new(
        keys: impl Into<DeviceSecrets>,
        clock: C,
        rng: R,
        store: Arc<Store>,
        view: View,
        config: PipelineConfig,
    ) -> Self {
        // The boot record. If it cannot be written the agent must not take commands without
        // challenges: the barrier then covers any timestamp (challenges do not survive this run).
        let trusted = clock.now_ms().filter(|now| {
            !config
                .window
                .clock_behind(*now, store.clock_mark().unwrap_or(0))
        });
        let (mark, lease, barrier) = match store.boot(trusted).and_then(|b| Ok((b, store.lease()?)))
        {
            Ok((boot, lease)) => {
                if boot.barrier > 0 {
                    tracing::info!(
                        run = boot.boots,
                        barrier = %crate::clock::utc_minute(boot.barrier),
                        "restarted: commands signed before the barrier need a challenge"
                    );
                }
                (boot.mark, lease, boot.barrier)
            }
            Err(e) => {
                tracing::error!(error = %e, "writing the boot record failed; every command needs a challenge");
                (store.clock_mark().unwrap_or(0), u64::MAX, u64::MAX)
            }
        };
        let keys = keys.into().without_setup();
        let era = EraInfo::of(&view.chain);
        let owners = view.chain.state().owners.clone();
        let bindings = store.bindings().unwrap_or_else(|e| {
            // Unreadable bindings make every bound phone NotRedeemed until fixed: safe, and said.
            tracing::error!(error = %e, "reading the invitation bindings failed; bound phones are refused");
            Vec::new()
        });
        let pipeline = Pipeline {
            device: keys.device_id(),
            keys,
            boot: clock.boot_id(),
            clock,
            rng: Mutex::new(rng),
            store,
            view: RwLock::new(view),
            challenges: Mutex::new(ChallengeBook::default()),
            config,
            last_prune_ms: AtomicU64::new(0),
            mark: AtomicU64::new(mark),
            strikes: Mutex::new(StrikeRegister::default()),
            lease: AtomicU64::new(lease),
            barrier,
            tally: Mutex::new(RefusalTally::default()),
            era: RwLock::new(era),
            owners: RwLock::new(owners),
            bindings: RwLock::new(bindings.into_iter().collect()),
            events: RwLock::new(None),
            streams: RwLock::new(None),
            consent_lock: Mutex::new(()),
        };
        pipeline.start_era_if_new();
        pipeline
    }

    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// Notes guest decisions on `sink` from now on (the agent's event poster reads it).
    pub fn set_event_sink(&self, sink: NoteSender) {
        *self.events.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }
    pub fn keys(&self) -> &DeviceSecrets {
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

    /// Replaces the view and persists it.
    pub fn set_view(&self, mut view: View) -> crate::Result<()> {
        view.checks.saved_ms = Some(self.clock.ticks_ms());
        view.save(&self.store)?;
        let era = EraInfo::of(&view.chain);
        let owners = view.chain.state().owners.clone();
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        let rotated = self.note_era(era);
        self.note_owners(owners, &rotated);
        Ok(())
    }

    /// Follows the view's ownership era: a new era starts a new audit log and ends the old
    /// owners' consents. Returns the streams that rotated.
    fn note_era(&self, era: EraInfo) -> Vec<String> {
        let changed = {
            let mut current = self.era.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *current, era) != era
        };
        if changed {
            // Counts of the old era would land in a log about to be deleted.
            let _ = self.tally().take();
            self.start_era_if_new();
            return self.end_consents_of_old_era();
        }
        Vec::new()
    }

    /// Changes the view in place under its write lock and persists it, so concurrent updates
    /// (a quorum check, ops pushed by an owner) never overwrite each other. Nothing changes
    /// when `f` fails.
    pub fn update_view<T, E: From<crate::Error>>(
        &self,
        f: impl FnOnce(&mut View) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut guard = self.view.write().unwrap_or_else(|p| p.into_inner());
        let mut view = guard.clone();
        let out = f(&mut view)?;
        view.checks.saved_ms = Some(self.clock.ticks_ms());
        view.save(&self.store)?;
        let era = EraInfo::of(&view.chain);
        let owners = view.chain.state().owners.clone();
        *guard = view;
        drop(guard);
        let rotated = self.note_era(era);
        self.note_owners(owners, &rotated);
        Ok(out)
    }

    /// This boot's id, as the clock gives it.
    pub fn boot_id(&self) -> &str {
        &self.boot
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

    /// The wall clock, judged against the high-water mark.
    pub fn wall_clock(&self) -> WallClock {
        let mark = self.mark.load(Ordering::SeqCst);
        match self.clock.now_ms() {
            None => WallClock::Unset,
            Some(now) if self.config.window.clock_behind(now, mark) => {
                WallClock::Behind { now, mark }
            }
            Some(now) => WallClock::Trusted { now, mark },
        }
    }

    /// The timer's share of the mark: raises it to a trusted clock reading (durably), so a
    /// clock set back later is caught even when no command was accepted meanwhile, and pushes
    /// the lease ahead of the clock, so commands do not wait for it.
    pub fn raise_mark(&self) -> crate::Result<WallClock> {
        let clock = self.wall_clock();
        if let Some(now) = clock.trusted_now() {
            self.mark.fetch_max(now, Ordering::SeqCst);
            if self.lease.load(Ordering::SeqCst) > 0 {
                self.persist_lease(now)?;
            } else {
                // Nothing was ever accepted here: no lease to keep ahead, so a restart of a
                // device never used asks no challenge. The first acceptance takes one.
                let (_, mark) = self.store.extend_lease(0, now)?;
                self.mark.fetch_max(mark, Ordering::SeqCst);
            }
        } else if let WallClock::Behind { .. } = clock {
            tracing::warn!("{}", clock.why_untrusted());
        }
        Ok(self.wall_clock())
    }

    /// The lease this run would write at `now`: past the furthest timestamp the window admits.
    fn lease_at(&self, now: u64) -> u64 {
        now.saturating_add(self.config.window.max_lead_ms)
            .saturating_add(self.config.lease_ms)
    }

    /// Writes the lease for `now` and the in-memory mark (one fsync).
    fn persist_lease(&self, now: u64) -> crate::Result<()> {
        let (lease, mark) = self
            .store
            .extend_lease(self.lease_at(now), self.mark.load(Ordering::SeqCst))?;
        self.lease.fetch_max(lease, Ordering::SeqCst);
        self.mark.fetch_max(mark, Ordering::SeqCst);
        Ok(())
    }

    /// Commands timestamped at or under this need a challenge in this run: the lease the
    /// previous runs left (0 on a device's first run).
    pub fn restart_barrier(&self) -> u64 {
        self.barrier
    }

    /// Makes the accepted command's "about to run" entry durable, if it is not yet: one fsync
    /// shared with every command accepted meanwhile (group commit), which also writes the mark
    /// and pushes the lease. The agent runs it while the actuator runs; [`Pipeline::complete`]
    /// runs it (again: then free) before sealing the answer.
    pub fn make_durable(&self, ticket: Option<u64>) -> crate::Result<()> {
        let Some(ticket) = ticket else {
            return Ok(());
        };
        let lease = match self.wall_clock().trusted_now() {
            Some(now) => self.lease_at(now),
            None => 0,
        };
        self.store
            .sync_through(ticket, lease, self.mark.load(Ordering::SeqCst))?;
        self.lease.fetch_max(lease, Ordering::SeqCst);
        Ok(())
    }

    /// Whether a guest (`owner == false`) or an owner would be refused now because the view is
    /// too stale; the refusal's words if so.
    pub fn staleness(&self, owner: bool) -> Option<String> {
        let ticks = self.clock.ticks_ms();
        let (age, bound) = {
            let view = self.view();
            if owner {
                (
                    view.owner_age_ms(&self.boot, ticks),
                    self.config.max_owner_staleness_ms,
                )
            } else {
                (
                    view.guest_age_ms(&self.boot, ticks),
                    self.config.max_guest_staleness_ms,
                )
            }
        };
        if owner && bound == 0 {
            return None;
        }
        if age.is_some_and(|a| a <= bound) {
            return None;
        }
        let what = if owner {
            "you are still an owner"
        } else {
            "your invitation is still valid"
        };
        let since = match (age, self.wall_clock().effective()) {
            (None, _) => "since it started".to_owned(),
            (Some(a), Some(now)) => format!(
                "since {} ({} minutes)",
                utc_minute(now.saturating_sub(a)),
                a / 60_000
            ),
            (Some(a), None) => format!("for {} minutes", a / 60_000),
        };
        Some(format!(
            "the door cannot confirm {what}; it has been offline from the registry {since}"
        ))
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

        // Timestamp window (the nonce is recorded after authority). Without a trusted clock
        // the command needs a challenge instead, after authority.
        if let WallClock::Trusted { now, mark } = self.wall_clock() {
            if let Err(e) = self
                .config
                .window
                .check_time(now, mark, fresh.command.timestamp_ms)
            {
                let code = match &e {
                    ProtoError::TooNew { .. } => RejectCode::TooNew,
                    _ => RejectCode::TooOld,
                };
                return Err(Early::Answered(self.reject(
                    &fresh,
                    Stage::Timestamp,
                    code,
                    e.to_string(),
                )));
            }
        }
        Ok(fresh)
    }

    /// Steps authority (in memory, staleness included), challenge, nonce (durable) and use
    /// limits, against the current view.
    pub fn authorize(&self, fresh: Fresh) -> Result<Authorized, Answer> {
        let clock = self.wall_clock();
        let decision = {
            let view = self.view();
            match clock.effective() {
                None if !fresh.command.grants.is_empty() => Err((
                    RejectCode::ClockUnset,
                    format!(
                        "guest access needs the device's clock ({}); set it (NTP) and retry",
                        clock.why_untrusted()
                    ),
                )),
                effective => {
                    let bindings = self.bindings.read().unwrap_or_else(|p| p.into_inner());
                    let lookup = |id: &GrantId| bindings.get(id).copied();
                    command::authorize_bound(
                        &fresh.command,
                        view.chain.state(),
                        effective.unwrap_or(0),
                        &lookup,
                    )
                    .map_err(|e| (RejectCode::for_error(&e), e.to_string()))
                }
            }
        };
        let auth = match decision {
            Ok(a) => a,
            Err((code, reason)) => return Err(self.reject(&fresh, Stage::Authority, code, reason)),
        };
        let owner = matches!(auth, Authorization::Owner);
        if let Some(reason) = self.staleness(owner) {
            return Err(self.reject(&fresh, Stage::Authority, RejectCode::StaleView, reason));
        }
        let redeemed = match auth {
            Authorization::Redeem { grant, key } => Some((grant, key)),
            _ => None,
        };
        let action = fresh.command.action.as_str();
        if redeemed.is_some() {
            // The reserved action: nothing to configure, nothing to run.
        } else if action == AUDIT_ACTION || action == SUBSCRIBE_ACTION || action == CONSENT_ACTION {
            if !owner {
                let what = if action == AUDIT_ACTION {
                    "the audit log is for owners only"
                } else if action == CONSENT_ACTION {
                    "only owners give or withdraw consent to the device's data"
                } else {
                    "only owners subscribe to a device's events"
                };
                return Err(self.reject(
                    &fresh,
                    Stage::Authority,
                    RejectCode::NotAuthorized,
                    what.into(),
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
        // Without a trusted clock, or signed at or before the restart barrier (it could have
        // been accepted by an earlier run, whose nonces this run does not know), the
        // timestamp proves nothing: only a challenge of this run does.
        let before_restart = fresh.command.timestamp_ms <= self.barrier;
        if clock.trusted_now().is_none() {
            self.challenge(&fresh, clock.why_untrusted())?;
        } else if before_restart {
            self.challenge(
                &fresh,
                format!(
                    "the device restarted; commands signed before {} need a challenge",
                    utc_minute(self.barrier.saturating_add(60_000))
                ),
            )?;
        }
        let limits = match &auth {
            Authorization::Guest(approval) => approval.use_limits.as_slice(),
            _ => &[],
        };
        let ticket = self.accept(&fresh, &clock, owner, limits, redeemed, before_restart)?;
        if let Some((grant, key)) = redeemed {
            self.bindings
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(grant, key);
        }
        Ok(Authorized {
            fresh,
            owner,
            redeemed,
            ticket,
        })
    }

    /// Step action: records the outcome and seals the signed response.
    pub fn complete(&self, auth: Authorized, result: Result<Vec<u8>, String>) -> Answer {
        // Nothing acknowledged is lost: the record that the action started is on disk before
        // the answer says it ran.
        if let Err(e) = self.make_durable(auth.ticket) {
            tracing::error!(error = %e, "the audit log could not be made durable");
            return self.reject(
                &auth.fresh,
                Stage::Action,
                RejectCode::Internal,
                "the action ran, but the device could not write its audit log to disk; see the device log".into(),
            );
        }
        match result {
            Ok(mut output) => {
                output.truncate(MAX_RESPONSE_BODY);
                let detail = match auth.redeemed {
                    // The owner's "redeemed by phone …": the grant (its id's first 16 hex
                    // digits) and the whole phone key, within the entry's 120-byte detail.
                    Some((grant, key)) => {
                        format!("bound grant {} to {key}", &grant.to_string()[..16])
                    }
                    None => format!("ran; {} bytes of output", output.len()),
                };
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

    /// The `latchkey.subscribe` action: keeps the owner's event KEM key (its arguments), so
    /// the device seals its events to it (docs/PROTOCOL.md §13).
    pub fn subscribe(&self, owner: &PublicKey, args: &[u8]) -> Result<Vec<u8>, String> {
        let kem = latchkey_proto::event::parse_subscribe_args(args).map_err(|e| e.to_string())?;
        crate::events::subscribe(&self.store, owner, &kem).map_err(|e| {
            tracing::error!(error = %e, "storing a subscription failed");
            "the device could not store the subscription; see the device log".to_owned()
        })?;
        tracing::info!(owner = %owner.short(), "owner subscribed to events");
        if let Some(streams) = self.streams() {
            // The owner's own copy of every stream key goes out with its new KEM key.
            streams.mark_all_dirty();
        }
        Ok(Vec::new())
    }

    /// Follows the owners of the view: when one is removed (amend-owners, a transfer, a reset),
    /// every stream not already rotated (`rotated`, by the end of an era's consents) rotates,
    /// so the owner's copy of the stream key the removed owner held opens nothing published
    /// from then on.
    fn note_owners(&self, owners: Vec<PublicKey>, rotated: &[String]) {
        let removed = {
            let mut current = self.owners.write().unwrap_or_else(|p| p.into_inner());
            let old = std::mem::replace(&mut *current, owners);
            old.iter().any(|k| !current.contains(k))
        };
        if !removed {
            return;
        }
        let Some(streams) = self.streams() else {
            return;
        };
        let now = self.clock.now_ms().unwrap_or(0);
        let rotated = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            streams.rotate_all_except(rotated, now, &mut *rng)
        };
        match rotated {
            Ok(rotated) if !rotated.is_empty() => {
                tracing::info!(?rotated, "an owner was removed: stream keys rotated")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "rotating after an owner was removed failed"),
        }
    }

    /// A new ownership era (a transfer, a factory reset): consents the old owners gave end and
    /// the streams they covered rotate, before any command of the new era is answered.
    fn end_consents_of_old_era(&self) -> Vec<String> {
        let Some(streams) = self.streams() else {
            return Vec::new();
        };
        let now = self.clock.now_ms().unwrap_or(0);
        let ended = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            streams.end_era(now, &mut *rng)
        };
        match ended {
            Ok(rotated) => {
                if !rotated.is_empty() {
                    tracing::info!(
                        ?rotated,
                        "the device changed hands: consents of the old owners ended, stream keys rotated"
                    );
                }
                rotated
            }
            Err(e) => {
                tracing::error!(error = %e, "ending the old owners' consents failed");
                Vec::new()
            }
        }
    }

    /// Gives the pipeline the device's streams, so it answers `latchkey.consent`.
    pub fn set_streams(&self, streams: Arc<StreamKeys>) {
        *self.streams.write().unwrap_or_else(|p| p.into_inner()) = Some(streams);
    }

    pub fn streams(&self) -> Option<Arc<StreamKeys>> {
        self.streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The `latchkey.consent` action (docs/PROTOCOL.md §14): judges the consent entry in its
    /// arguments ([`crate::stream::consent`]) and records it — with a new stream key when an
    /// active consent ends — durably, before answering. An entry it already holds, byte for
    /// byte, is answered accepted and changes nothing. Refusals are `UnknownStream` (23) and
    /// `ConsentRefused` (24).
    pub fn consent(&self, auth: Authorized) -> Answer {
        let entry = match ConsentEntry::from_bytes(auth.args()) {
            Ok(e) => e,
            Err(e) => {
                return self.reject(
                    &auth.fresh,
                    Stage::Action,
                    RejectCode::ConsentRefused,
                    format!("the arguments are not a consent entry: {e}"),
                )
            }
        };
        let Some(streams) = self.streams() else {
            return self.reject(
                &auth.fresh,
                Stage::Action,
                RejectCode::UnknownStream,
                "this device publishes no data streams".into(),
            );
        };
        let _one_at_a_time = self.consent_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.wall_clock().effective();
        let judged = {
            let view = self.view();
            crate::stream::consent::judge(&streams, &view.chain, &entry, now)
        };
        let effect = match judged {
            Ok(Verdict::Record(effect)) => effect,
            // An owner resending after a lost answer (or a replay): the device already acted
            // on this very entry, so the answer is the same "accepted" and nothing changes.
            Ok(Verdict::AlreadyHeld) => {
                tracing::info!(
                    seq = entry.seq,
                    "consent entry already held; nothing changes"
                );
                return self.complete(
                    auth,
                    Ok(format!(
                        "consent entry {} is already recorded here; nothing changes",
                        entry.seq
                    )
                    .into_bytes()),
                );
            }
            Err((code, why)) => return self.reject(&auth.fresh, Stage::Action, code, why),
        };
        let recorded = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            streams.record(&entry, &effect, now.unwrap_or(entry.time_ms), &mut *rng)
        };
        match recorded {
            Ok(rotated) => {
                let mut said = format!("consent entry {} recorded", entry.seq);
                for stream in &rotated {
                    said.push_str(&format!(
                        "; stream {stream} now uses key {}",
                        streams.current_key_id(stream).unwrap_or(0)
                    ));
                }
                tracing::info!(seq = entry.seq, ?rotated, "consent entry recorded");
                self.complete(auth, Ok(said.into_bytes()))
            }
            Err(e) => {
                tracing::error!(error = %e, "recording a consent entry failed; nothing changed");
                self.reject(
                    &auth.fresh,
                    Stage::Action,
                    RejectCode::Internal,
                    "the device could not record the consent entry, so nothing changed; see the device log".into(),
                )
            }
        }
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

    /// Clock not trusted: hands the (authorized) sender a challenge, or spends the one it
    /// echoes. Challenges are bound to their sender and capped per sender, so no one can push
    /// out another sender's outstanding challenge.
    fn challenge(&self, fresh: &Fresh, why: String) -> Result<(), Answer> {
        let sender = fresh.command.sender;
        let ticks = self.clock.ticks_ms();
        let mut book = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        let Some(challenge) = fresh.command.challenge else {
            let challenge = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                book.issue(&sender, ticks, &mut *rng)
            };
            drop(book);
            return Err(self.answer(
                fresh,
                Stage::Challenge,
                Outcome::ChallengeRequired { challenge },
                Vec::new(),
                RejectCode::ClockUnset as u16,
                format!("{why}: challenge issued"),
            ));
        };
        let redeemed = book.redeem(&sender, &challenge, ticks);
        drop(book);
        redeemed.map_err(|e| {
            self.reject(
                fresh,
                Stage::Challenge,
                RejectCode::ClockUnset,
                format!("{e} ({why})"),
            )
        })
    }

    /// Takes an authorized command's nonce and writes its records before the action: the
    /// nonce in memory; the lease first, durably, if the timestamp is past it (rare: the timer
    /// keeps it ahead); then either, for a grant with a use limit or a redemption, the uses,
    /// the binding and the "about to run" entry in one durable transaction, or else the entry
    /// alone on the lazy connection (no fsync: [`Pipeline::make_durable`] syncs it before the
    /// answer). Returns the entry's ticket if it still has to be made durable. If anything
    /// cannot be written, nothing runs.
    fn accept(
        &self,
        fresh: &Fresh,
        clock: &WallClock,
        owner: bool,
        limits: &[(GrantId, u32)],
        redeemed: Option<(GrantId, PublicKey)>,
        challenged: bool,
    ) -> Result<Option<u64>, Answer> {
        let command = &fresh.command;
        let internal = |e: crate::Error| {
            tracing::error!(error = %e, "the device's state could not be written; nothing runs");
            self.reject(
                fresh,
                Stage::Nonce,
                RejectCode::Internal,
                "the device could not write its durable state, so the action did not run; see the device log".into(),
            )
        };
        // A timestamp judged by a trusted clock must be under the durable lease before it is
        // accepted: the next run's barrier is that lease.
        let judged = clock.trusted_now().filter(|_| !challenged);
        if let Some(now) = judged {
            if command.timestamp_ms > self.lease.load(Ordering::SeqCst) {
                self.persist_lease(now.max(command.timestamp_ms))
                    .map_err(internal)?;
            }
        }
        self.prune_nonces(clock);
        let strike = self
            .strikes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                &command.nonce,
                command.timestamp_ms,
                clock.trusted_now().is_some(),
            );
        match strike {
            Strike::Recorded => {}
            Strike::BelowFloor { floor } => {
                return Err(self.reject(
                    fresh,
                    Stage::Timestamp,
                    RejectCode::TooOld,
                    format!(
                    "timestamp is older than the strike register keeps ({} ms before its floor)",
                    floor - command.timestamp_ms
                ),
                ))
            }
            Strike::Replayed => {
                return Err(self.reject(
                    fresh,
                    Stage::Nonce,
                    RejectCode::Replayed,
                    ProtoError::Replayed.to_string(),
                ))
            }
        }
        if let Some(now) = judged {
            self.mark
                .fetch_max(now.max(command.timestamp_ms), Ordering::SeqCst);
        }
        // A refusal below gives the nonce back: the command did not run.
        let release = || {
            self.strikes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(&command.nonce)
        };
        let era = self.era();
        let running = (command.action != AUDIT_ACTION).then(|| RunningEntry {
            era: &era,
            time_ms: self.clock.now_ms(),
            body: AuditBody::Running(Running {
                via: fresh.via,
                envelope: fresh.envelope,
                sender: command.sender,
                command: command.id(),
                action: command.action.clone(),
                args: ArgsDigest::of(&command.args),
                by_owner: owner,
                view: self.view_mark(),
            }),
            identity: &self.keys.identity,
        });
        let wrote_running = running.is_some();
        let ticket = if limits.is_empty() && redeemed.is_none() {
            match running
                .map(|entry| self.store.append_running(entry))
                .transpose()
            {
                Ok(ticket) => ticket,
                Err(e) => {
                    release();
                    return Err(internal(e));
                }
            }
        } else {
            let binding = redeemed.map(|(grant, key)| (grant, key, clock.effective().unwrap_or(0)));
            match self.store.accept_durable(limits, binding, running) {
                Ok(Accepted::Recorded) => None,
                Ok(Accepted::AlreadyBound) => {
                    release();
                    return Err(self.reject(
                        fresh,
                        Stage::Authority,
                        RejectCode::AlreadyRedeemed,
                        ProtoError::AlreadyRedeemed.to_string(),
                    ));
                }
                Ok(Accepted::LimitReached(spent)) => {
                    release();
                    return Err(self.reject(
                        fresh,
                        Stage::UseLimit,
                        RejectCode::UseLimitReached,
                        format!(
                            "grant {} allows {} uses and all are spent",
                            spent.grant, spent.limit
                        ),
                    ));
                }
                Err(e) => {
                    release();
                    return Err(internal(e));
                }
            }
        };
        if wrote_running {
            self.tally().logged(fresh.envelope);
        }
        Ok(ticket)
    }

    /// Forgets nonces under `max(now, mark) − window` (at most once per window, or minute):
    /// the window refuses their timestamps from then on, since the mark never goes down.
    fn prune_nonces(&self, clock: &WallClock) {
        let ticks = self.clock.ticks_ms();
        let every = PRUNE_EVERY_MS.min(self.config.window.max_age_ms.max(1));
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if last != 0 && ticks.saturating_sub(last) < every {
            return;
        }
        self.last_prune_ms.store(ticks.max(1), Ordering::Relaxed);
        let mark = self.mark.load(Ordering::SeqCst);
        let now = clock.trusted_now().unwrap_or(0);
        let floor = self.config.window.floor(now, mark);
        self.strikes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .prune(floor);
    }

    /// Nonces this run holds (tests and status).
    pub fn nonce_count(&self) -> usize {
        self.strikes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The timer's housekeeping: raises the mark and prunes the strike register.
    pub fn housekeeping(&self) {
        match self.raise_mark() {
            Ok(clock) => self.prune_nonces(&clock),
            Err(e) => tracing::warn!(error = %e, "raising the clock mark failed"),
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
        self.note_event(command, stage, code);
    }

    /// Notes a guest's decision that the audit log records one by one, if it can be an event
    /// (docs/PROTOCOL.md §13): an accepted command (the poster keeps a grant's first), a
    /// redemption, or a refusal that judges a sound chain. A channel send that never waits: a
    /// full queue drops the note, never the answer.
    fn note_event(&self, command: &Command, stage: Stage, code: u16) {
        let Some(leaf) = command.grants.last() else {
            return;
        };
        let kind = if code == 0 && stage == Stage::Action {
            if command.action == REDEEM_ACTION {
                EventKind::Redeemed
            } else {
                EventKind::FirstOpen
            }
        } else if code != 0 && latchkey_proto::event::refusal_is_event(code) {
            EventKind::Refused { code }
        } else {
            return;
        };
        let sink = self.events.read().unwrap_or_else(|p| p.into_inner());
        let Some(sink) = sink.as_ref() else {
            return;
        };
        // A refusal is written (and so reaches here) only with standing, and `has_standing`
        // already verified a guest's chain structure; only an owner who attached grants got
        // standing without that check, so only then is the structure verified here.
        if matches!(kind, EventKind::Refused { .. }) {
            let view = self.view();
            let state = view.chain.state();
            if state.is_owner(&command.sender)
                && latchkey_proto::grant::verify_chain_structure(&command.grants, state).is_err()
            {
                return;
            }
        }
        let note = EventNote {
            kind,
            grant: leaf.id(),
            guest: command.sender,
            action: command.action.clone(),
            time_ms: self.clock.now_ms(),
        };
        if sink.try_send(note).is_err() {
            tracing::warn!(
                "the event queue is full or closed; an event for the owners was dropped"
            );
        }
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
        // The leaf's subject, or for a redeemed bind-on-first-use leaf the phone bound to it.
        let holder = command.grants.last().is_some_and(|g| {
            g.body.subject == command.sender
                || (g.body.binds_on_first_use()
                    && self
                        .bindings
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&g.id())
                        == Some(&command.sender))
        });
        holder && latchkey_proto::grant::verify_chain_structure(&command.grants, state).is_ok()
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
