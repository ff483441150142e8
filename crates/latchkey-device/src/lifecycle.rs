//! The device's life outside `run`: `init` (keys, config, state, claim QR), `reset` (factory
//! reset), `status` (who owns it, as verified, and how fresh that is) and the audit log dump.

use std::net::SocketAddr;
use std::path::PathBuf;

use latchkey_proto::chain::{Chain, OpBody};
use latchkey_proto::codec::Codec;
use latchkey_proto::device::DeviceKeys;
use latchkey_proto::keys::{DeviceId, SigningKey};
use latchkey_quorum::{CachedView, Freshness, QuorumClient};
use rand::rngs::OsRng;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::audit::{verify_entries, AuditBroken, SignedEntry};
use crate::claim::{claim_addresses, render_terminal, write_claim_files};
use crate::clock::{Clock, SystemClock};
use crate::config::{ActionConfig, Config, Driver, QuorumKnobs, WindowKnobs};
use crate::error::{Error, Result};
use crate::files::DeviceDir;
use crate::keyfile::{key_file_of, DeviceSecrets};
use crate::store::Store;
use crate::view::View;

/// What `latchkeyd init` is told.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    pub name: String,
    pub listen: SocketAddr,
    pub nodes: Vec<String>,
    pub actions: Vec<(String, Driver)>,
    pub advertise: Vec<String>,
    pub mdns: bool,
    pub refresh_secs: Option<u64>,
    pub max_view_age_secs: Option<u64>,
    pub max_guest_staleness_secs: Option<u64>,
    pub max_owner_staleness_secs: Option<u64>,
    pub trust_clock: bool,
}

/// What `latchkeyd init` is told about data streams (kept apart from [`InitOptions`], which
/// other crates' tests build field by field).
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// `--stream NAME=dsmr:SOURCE`, parsed ([`crate::config::parse_stream_option`]).
    pub streams: Vec<(String, crate::config::StreamConfig)>,
    /// `--broker mqtt://HOST:PORT`.
    pub broker: Option<String>,
    /// `--free-aggregate NAME`: streams whose free tier (`…/avg1m`) is published.
    pub free_aggregate: Vec<String>,
}

/// A new claim QR, for printing.
pub struct ClaimReport {
    pub device: DeviceId,
    pub name: String,
    /// Carries the setup secret: shown on the device's own screen, never logged.
    pub claim_text: Zeroizing<String>,
    pub terminal_qr: String,
    pub png: PathBuf,
}

// By hand: the claim text and its QR hold the setup secret, and a `{:?}` in a log or a panic
// message must not hand the device to whoever reads it.
impl std::fmt::Debug for ClaimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimReport")
            .field("device", &self.device)
            .field("name", &self.name)
            .field("claim_text", &"<redacted>")
            .field("png", &self.png)
            .finish_non_exhaustive()
    }
}

/// Creates the device: keys (mode 0600, never overwritten), config, state with its genesis
/// op, and the claim QR.
pub fn init(opts: &InitOptions) -> Result<ClaimReport> {
    init_with_streams(opts, &StreamOptions::default())
}

/// [`init`] with data streams.
pub fn init_with_streams(opts: &InitOptions, stream_opts: &StreamOptions) -> Result<ClaimReport> {
    let dir = DeviceDir::new(&opts.dir);
    let mut quorum = QuorumKnobs::for_nodes(opts.nodes.len());
    if let Some(s) = opts.refresh_secs {
        quorum.refresh_secs = s;
    }
    if let Some(s) = opts.max_view_age_secs {
        quorum.max_view_age_secs = s;
    }
    if let Some(s) = opts.max_guest_staleness_secs {
        quorum.max_guest_staleness_secs = s;
    }
    if let Some(s) = opts.max_owner_staleness_secs {
        quorum.max_owner_staleness_secs = s;
    }
    let mut actions = std::collections::BTreeMap::new();
    for (name, driver) in &opts.actions {
        if actions
            .insert(name.clone(), ActionConfig::new(driver.clone()))
            .is_some()
        {
            return Err(Error::Invalid(format!("action {name} is given twice")));
        }
    }
    let mut streams = std::collections::BTreeMap::new();
    for (name, stream) in &stream_opts.streams {
        if streams.insert(name.clone(), stream.clone()).is_some() {
            return Err(Error::Invalid(format!("stream {name} is given twice")));
        }
    }
    for name in &stream_opts.free_aggregate {
        match streams.get_mut(name) {
            Some(s) => s.free_aggregate = true,
            None => {
                return Err(Error::Invalid(format!(
                "--free-aggregate {name}: no stream is called {name}; name one given with --stream"
            )))
            }
        }
    }
    if !streams.is_empty() && stream_opts.broker.is_none() {
        return Err(Error::Invalid(
            "--stream needs --broker mqtt://HOST:PORT: streams are published on an MQTT broker"
                .into(),
        ));
    }
    let config = Config {
        name: opts.name.clone(),
        listen: opts.listen,
        nodes: opts.nodes.clone(),
        advertise: opts.advertise.clone(),
        mdns: opts.mdns,
        quorum,
        window: WindowKnobs {
            trust_clock: opts.trust_clock,
            ..WindowKnobs::default()
        },
        audit_keep: 100_000,
        actions,
        broker: stream_opts.broker.clone(),
        streams,
    };
    config.validate().map_err(Error::Invalid)?;

    dir.create()?;
    if dir.is_initialised() {
        return Err(Error::AlreadyInitialised(dir.root().to_owned()));
    }
    let _lock = dir.lock()?;
    let keys = DeviceKeys::generate(&mut rand_core::OsRng);
    dir.create_key_file(&key_file_of(&keys))?;
    dir.write_private(crate::files::CONFIG_FILE, config.to_toml().as_bytes())?;
    let store = Store::open(&dir.db_path())?;
    let now = SystemClock {
        trusted: opts.trust_clock,
    }
    .now_ms()
    .unwrap_or(0);
    View::new(Chain::from_genesis(keys.genesis(&config.name, now)?)?).save(&store)?;
    claim_report(&dir, &keys, &config)
}

fn claim_report(dir: &DeviceDir, keys: &DeviceKeys, config: &Config) -> Result<ClaimReport> {
    let claim_text = write_claim_files(dir, keys, config)?;
    Ok(ClaimReport {
        device: keys.device_id(),
        name: config.name.clone(),
        terminal_qr: render_terminal(&claim_text)?,
        claim_text,
        png: dir.claim_png(),
    })
}

/// What a factory reset did.
#[derive(Debug)]
pub struct ResetReport {
    pub claim: ClaimReport,
    /// The reset op's sequence number.
    pub seq: u64,
    /// Nodes that stored the reset op, or why publishing failed (the agent retries on start).
    pub published: Result<usize, String>,
}

/// Factory reset: a new setup key, a `factory-reset` op signed by the identity key appended to
/// the newest chain the nodes know, published, and a new claim QR. Owners and grants lose all
/// power. Refuses while the agent runs on the directory.
pub async fn reset(dir: &std::path::Path) -> Result<ResetReport> {
    let dir = DeviceDir::new(dir);
    let _lock = dir.lock()?;
    let config = Config::load(&dir.config_path())?;
    let keys = dir.read_keys()?;
    let store = Store::open(&dir.db_path())?;
    let clock = SystemClock {
        trusted: config.window.trust_clock,
    };
    let now = clock.now_ms();
    let device = keys.device_id();
    let quorum = QuorumClient::new(config.nodes.clone(), config.quorum.quorum_config())?;
    let stored = View::load(&store)?;
    let cached = stored.as_ref().map(|view| CachedView {
        chain: view.chain.clone(),
        verified_at_ms: view.checks.last_quorum_ms.unwrap_or(0),
    });
    // Extend the newest chain the nodes know, so the reset does not fork it.
    let checked = quorum
        .check(&device, cached.as_ref(), now.unwrap_or(0), &mut OsRng)
        .await;
    let mut view = match (stored, checked) {
        (Some(mut view), Ok(checked)) => {
            // Fork choice included: a branch the device endorsed stays.
            view.chain.merge(checked.chain.ops());
            view
        }
        (Some(view), Err(e)) => {
            tracing::warn!(error = %e, "nodes unreachable; resetting from the cached chain");
            view
        }
        (None, Ok(checked)) => View::new(checked.chain),
        // Only a device never claimed can rebuild its genesis: it needs the setup key.
        (None, Err(e)) => match keys.to_device_keys() {
            Some(full) => View::new(Chain::from_genesis(
                full.genesis(&config.name, now.unwrap_or(0))?,
            )?),
            None => {
                return Err(Error::NoChain(format!(
                    "no ownership chain is stored and no node gave one ({e}); reset again when the nodes are reachable"
                )))
            }
        },
    };
    if view.chain.device() != device {
        return Err(Error::CorruptChain(latchkey_proto::Error::DeviceIdMismatch));
    }
    let DeviceSecrets { identity, kem, .. } = keys;
    let setup = SigningKey::generate(&mut rand_core::OsRng);
    let mut op = view.chain.propose(
        now.unwrap_or(0),
        OpBody::FactoryReset {
            setup: setup.public_key(),
        },
    );
    op.sign(&identity);
    let seq = op.seq;
    view.chain.append(op)?;
    let keys = DeviceKeys {
        identity,
        kem,
        setup,
    };
    // The key file first: if the chain were saved first and the key write failed, no one could
    // claim the device until another reset.
    dir.replace_key_file(&key_file_of(&keys))?;
    view.save(&store)?;
    let published = quorum
        .publish(&device, view.chain.ops(), &mut OsRng)
        .await
        .map(|r| r.acked.len())
        .map_err(|e| e.to_string());
    let claim = claim_report(&dir, &keys, &config)?;
    Ok(ResetReport {
        claim,
        seq,
        published,
    })
}

/// What `latchkeyd status` says of a claimed device's setup code: the secret is gone.
pub const SETUP_SPENT: &str = "claimed; no setup code exists";

/// Drops the setup key and the claim files of a device whose verified chain holds a claim
/// (docs/SECURITY.md, "The setup secret after a claim"). Call it under the directory's lock.
pub fn spend_setup(dir: &DeviceDir, device: &DeviceId) -> Result<()> {
    if dir.spend_setup(device)? {
        tracing::info!("the device is claimed: its setup secret and claim QR are erased");
    }
    Ok(())
}

fn setup_code_words(dir: &DeviceDir, chain: &Chain, keys: &DeviceSecrets) -> String {
    let on_disk = !dir.claim_files().is_empty() || keys.setup.is_some();
    match (chain.state().is_owned(), on_disk) {
        (true, false) => SETUP_SPENT.into(),
        (true, true) => "claimed; the spent setup code is still on disk until the agent runs (`latchkeyd run`) and erases it".into(),
        (false, _) if keys.setup.is_none() => "unclaimed, but the key file holds no setup key: run `latchkeyd reset` for a new claim code".into(),
        (false, _) => format!(
            "unclaimed; the claim code is in {} and {}",
            dir.claim_txt().display(),
            dir.claim_png().display()
        ),
    }
}

/// `latchkeyd status`, as JSON or for people.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub device: String,
    pub short_id: String,
    pub name: String,
    /// Whether an agent holds the directory's lock right now.
    pub agent_running: bool,
    pub claimed: bool,
    /// Owners' keys (`lkpk1…`), as verified from genesis.
    pub owners: Vec<String>,
    pub threshold: u8,
    pub seq: u64,
    pub head: String,
    pub epoch: String,
    /// False when the key file's setup key is not the one the chain expects (rerun `reset`).
    pub setup_key_matches: bool,
    /// Where the setup code stands, in words: [`SETUP_SPENT`] once the device is claimed.
    pub setup_code: String,
    pub freshness: FreshnessReport,
    pub clock: ClockReport,
    pub live_check: Option<LiveCheck>,
    pub addresses: Addresses,
    pub actions: Vec<String>,
    /// Per action, whether command arguments reach its actuator and who may pass them.
    pub action_arguments: Vec<ActionArguments>,
    pub audit_entries: u64,
    /// Data streams: where they come from and what the agent did with them (as last saved).
    pub streams: Vec<StreamStatus>,
}

/// One data stream in `latchkeyd status`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub name: String,
    pub source: String,
    pub format: String,
    pub free_aggregate: bool,
    pub broker: Option<String>,
    /// The current stream key's id (none before the stream first ran).
    pub key_id: Option<u32>,
    pub published: u64,
    /// Telegrams that did not parse or failed their CRC: counted, never published.
    pub bad_telegrams: u64,
    pub last_bad: Option<String>,
    /// Readings dropped because the broker connection's queue was full.
    pub dropped: u64,
    pub active_consents: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionArguments {
    pub action: String,
    /// Command arguments reach the actuator (argv, or the body without a fixed payload).
    pub takes_arguments: bool,
    /// Owners may pass any; guests only arguments their grant pins (docs/PROTOCOL.md §4).
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct FreshnessReport {
    /// The last quorum check is older than `max_view_age_secs`, or there was none.
    pub stale: bool,
    /// Since the last quorum check of this boot (`None`: none since the device started).
    pub last_quorum_age_s: Option<u64>,
    pub last_check_age_s: Option<u64>,
    /// The device's up-time since its last quorum, across reboots (what owners are judged by).
    pub owner_view_age_s: Option<u64>,
    /// Guests would be refused now (StaleView): no quorum within `max_guest_staleness_secs`.
    pub guests_refused: bool,
    /// Owners would be refused now (StaleView): no quorum within `max_owner_staleness_secs`.
    pub owners_refused: bool,
    pub max_guest_staleness_s: u64,
    pub max_owner_staleness_s: u64,
    pub answers: usize,
    pub needed: usize,
    pub problem: Option<String>,
    pub forks: usize,
    /// The device's own endorsement is not stored by any node yet (retried at every check).
    pub endorsement_unpublished: bool,
}

/// The wall clock against the durable high-water mark of time.
#[derive(Debug, Clone, Serialize)]
pub struct ClockReport {
    /// `trusted`, `behind` (set back below its mark: challenges only) or `unset`.
    pub state: &'static str,
    /// The high-water mark (ms since the epoch; 0 before the first trusted reading).
    pub mark_ms: u64,
    /// What the state means for commands, in words (absent when trusted).
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveCheck {
    pub quorum: bool,
    pub answers: usize,
    pub seq: Option<u64>,
    pub owners: Vec<String>,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Addresses {
    pub listen: String,
    pub claim: Vec<String>,
    pub nodes: Vec<String>,
    pub mailbox: String,
}

pub async fn status(dir: &std::path::Path, check: bool) -> Result<StatusReport> {
    let dir = DeviceDir::new(dir);
    if !dir.is_initialised() {
        return Err(Error::NotInitialised(dir.root().to_owned()));
    }
    let lock = dir.lock();
    let agent_running = matches!(lock, Err(Error::Locked(_)));
    let config = Config::load(&dir.config_path())?;
    let store = Store::open(&dir.db_path())?;
    let mut view = View::load(&store)?
        .ok_or_else(|| Error::CorruptChain(latchkey_proto::Error::MissingGenesis))?;
    // A claim the agent learnt but had no chance to act on (it was stopped in between, or the
    // key file is of an older version): the secret is spent, so it goes now.
    if lock.is_ok() && view.chain.state().is_owned() {
        spend_setup(&dir, &view.chain.device())?;
    }
    drop(lock);
    let keys = dir.read_keys()?;
    let setup_code = setup_code_words(&dir, &view.chain, &keys);
    let clock = SystemClock {
        trusted: config.window.trust_clock,
    };
    let now = clock.now_ms();
    let ticks = clock.ticks_ms();
    let boot = clock.boot_id();
    // As the agent would see it if it started now (not saved).
    view.adopt_boot(
        &boot,
        ticks,
        config.quorum.refresh_secs.saturating_mul(1000),
    );
    let mark = store.clock_mark()?;
    let window = config.window.replay_window();
    let clock_report = match now {
        None => ClockReport {
            state: "unset",
            mark_ms: mark,
            message: Some(
                "the clock is not set or not trusted; owners need a challenge round trip and guests are refused".into(),
            ),
        },
        Some(now) if window.clock_behind(now, mark) => ClockReport {
            state: "behind",
            mark_ms: mark,
            message: Some(format!(
                "clock is behind its high-water mark ({} < {}); using challenges until it passes it (guests are refused)",
                crate::clock::utc_minute(now),
                crate::clock::utc_minute(mark)
            )),
        },
        Some(_) => ClockReport {
            state: "trusted",
            mark_ms: mark,
            message: None,
        },
    };
    let state = view.chain.state();
    let max_age_ms = config.quorum.max_view_age_secs.saturating_mul(1000);
    let live_check = if check {
        let quorum = QuorumClient::new(config.nodes.clone(), config.quorum.quorum_config())?;
        let cached = CachedView {
            chain: view.chain.clone(),
            verified_at_ms: view.checks.last_quorum_ms.unwrap_or(0),
        };
        Some(
            match quorum
                .check(&state.device, Some(&cached), now.unwrap_or(0), &mut OsRng)
                .await
            {
                Ok(v) => LiveCheck {
                    quorum: matches!(v.freshness, Freshness::Quorum { .. }),
                    answers: match v.freshness {
                        Freshness::Quorum { answers } | Freshness::Degraded { answers, .. } => {
                            answers
                        }
                    },
                    seq: Some(v.chain.state().seq),
                    owners: v
                        .chain
                        .state()
                        .owners
                        .iter()
                        .map(|o| o.to_string())
                        .collect(),
                    problem: (!v.forks.is_empty())
                        .then(|| format!("{} fork(s) in the ownership chain", v.forks.len())),
                },
                Err(e) => LiveCheck {
                    quorum: false,
                    answers: 0,
                    seq: None,
                    owners: vec![],
                    problem: Some(e.to_string()),
                },
            },
        )
    } else {
        None
    };
    let age = |t: Option<u64>| Some(ticks.saturating_sub(t?) / 1000);
    let guest_bound = config.quorum.max_guest_staleness_secs;
    let owner_bound = config.quorum.max_owner_staleness_secs;
    let guest_age = view.guest_age_ms(&boot, ticks);
    let owner_age = view.owner_age_ms(&boot, ticks);
    Ok(StatusReport {
        device: state.device.to_string(),
        short_id: state.device.short(),
        name: state.name.clone(),
        agent_running,
        claimed: state.is_owned(),
        owners: state.owners.iter().map(|o| o.to_string()).collect(),
        threshold: state.threshold,
        seq: state.seq,
        head: state.head.to_string(),
        epoch: state.epoch.to_string(),
        setup_key_matches: state.setup.is_none_or(|s| Some(s) == keys.setup_public()),
        setup_code,
        freshness: FreshnessReport {
            stale: view.mark(ticks, max_age_ms).stale,
            last_quorum_age_s: age(view.checks.last_quorum_ms),
            last_check_age_s: age(view.checks.last_check_ms),
            owner_view_age_s: owner_age.map(|a| a / 1000),
            guests_refused: guest_age.is_none_or(|a| a > guest_bound.saturating_mul(1000)),
            owners_refused: owner_bound != 0
                && owner_age.is_none_or(|a| a > owner_bound.saturating_mul(1000)),
            max_guest_staleness_s: guest_bound,
            max_owner_staleness_s: owner_bound,
            answers: view.checks.last_answers,
            needed: view.checks.last_needed,
            problem: view.checks.last_problem.clone(),
            forks: view.checks.forks,
            endorsement_unpublished: view.checks.unpublished != 0,
        },
        clock: clock_report,
        live_check,
        addresses: Addresses {
            listen: config.listen.to_string(),
            claim: claim_addresses(&config)
                .iter()
                .map(|a| a.to_string())
                .collect(),
            nodes: config.nodes.clone(),
            mailbox: hex::encode(state.device.0),
        },
        actions: config
            .actions
            .iter()
            .map(|(n, a)| format!("{n}={}", a.driver))
            .collect(),
        action_arguments: config
            .drivers()
            .map_err(Error::Invalid)?
            .iter()
            .map(|(name, driver)| {
                let settings = &config.actions[name];
                ActionArguments {
                    action: name.clone(),
                    takes_arguments: settings.takes_arguments(driver),
                    note: settings.arguments_note(driver),
                }
            })
            .collect(),
        audit_entries: store.audit_next_seq()?,
        streams: config
            .streams
            .iter()
            .map(|(name, s)| {
                let saved = crate::stream::keys::saved_counters(&store, name)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                StreamStatus {
                    name: name.clone(),
                    source: s.source.clone(),
                    format: s.format.clone(),
                    free_aggregate: s.free_aggregate,
                    broker: config.broker.clone(),
                    key_id: saved.key_id,
                    published: saved.published,
                    bad_telegrams: saved.bad_telegrams,
                    last_bad: saved.last_bad,
                    dropped: saved.dropped,
                    active_consents: crate::stream::keys::active_consents(&store, name),
                }
            })
            .collect(),
    })
}

/// The stored audit log and whether it verifies.
#[derive(Debug)]
pub struct AuditDump {
    pub entries: Vec<SignedEntry>,
    pub verified: Result<(), AuditBroken>,
}

/// Reads every stored entry and verifies the chain with the device's identity key.
pub fn audit_log(dir: &std::path::Path) -> Result<AuditDump> {
    let dir = DeviceDir::new(dir);
    let keys = dir.read_keys()?;
    let store = Store::open(&dir.db_path())?;
    let mut entries = Vec::new();
    for (seq, bytes) in store.audit_all()? {
        match SignedEntry::from_bytes(&bytes) {
            Ok(e) if e.entry.seq == seq => entries.push(e),
            Ok(_) => {
                return Ok(AuditDump {
                    entries,
                    verified: Err(AuditBroken {
                        seq,
                        why: "stored under another sequence number",
                    }),
                })
            }
            Err(_) => {
                return Ok(AuditDump {
                    entries,
                    verified: Err(AuditBroken {
                        seq,
                        why: "the stored entry does not decode",
                    }),
                })
            }
        }
    }
    let verified = verify_entries(&entries, &keys.identity.public_key(), None);
    Ok(AuditDump { entries, verified })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_report_printed_by_mistake_does_not_show_the_setup_secret() {
        let key = latchkey_proto::keys::SigningKey::from_bytes(&[7; 32]);
        let report = ClaimReport {
            device: DeviceId::from_identity(&key.public_key()),
            name: "Door".into(),
            claim_text: Zeroizing::new("LK1:SECRET-SETUP-KEY".into()),
            terminal_qr: "QR-OF-SECRET".into(),
            png: PathBuf::from("/tmp/claim.png"),
        };
        let shown = format!("{report:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("Door"));
    }
}
