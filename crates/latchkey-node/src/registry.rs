//! The chains a node holds: verified with latchkey-proto exactly as a client verifies them,
//! cached in memory, extended only by valid ops, and written to SQLite before anyone is told.
//!
//! **Invariant: the cache never runs ahead of the disk.** Each device has one slot whose lock
//! is held from verification through the durable write; if the write fails, or a merge touched
//! the cached chain and was then refused, the slot is emptied and the chain is reloaded (and
//! re-verified) from the database on next use.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_proto::chain::{Chain, ForkEvidence, Op, OpId, OpList};
use latchkey_proto::codec::{Codec, Writer};
use latchkey_proto::keys::DeviceId;
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::store::{self, ForkRow, OpRow, Store};

/// A device's main chain, verified, and the ids of the fork ops recorded against it.
#[derive(Debug)]
struct Loaded {
    chain: Chain,
    fork_ids: HashSet<OpId>,
}

#[derive(Debug, Default)]
struct Slot {
    loaded: RwLock<Option<Loaded>>,
    last_used: AtomicU64,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<DeviceId, Arc<Slot>>,
    tick: u64,
}

/// Where a device's chain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub head: OpId,
    pub forks: u64,
}

/// A post (or replicated run) that was taken: `added` new ops are durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub added: usize,
    pub seq: u64,
    pub head: OpId,
}

/// Why ops were not taken. Nothing of the refused list was stored, except fork evidence.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the op list is empty; send at least one op")]
    Empty,
    #[error("op {seq} is for device {found}, not the device {expected} named in the path")]
    DeviceMismatch {
        seq: u64,
        expected: DeviceId,
        found: DeviceId,
    },
    #[error(
        "the list starts at seq {first} but this node holds {have} ops of the device; \
         send ops from seq {have} or earlier (the whole chain from genesis is always accepted)"
    )]
    Gap { have: u64, first: u64 },
    #[error("{0}")]
    Invalid(latchkey_proto::Error),
    #[error(
        "op {seq} differs from the valid op this node holds at that position: both are validly \
         signed, so a signer equivocated; the node keeps the first and {}",
        if *recorded { "recorded both as evidence (GET .../forks)" } else { "already holds the most evidence it keeps for this device" }
    )]
    Fork { seq: u64, recorded: bool },
    #[error("{0}")]
    Storage(Error),
}

enum Step {
    Added(usize),
    Gap { have: u64, first: u64 },
    Invalid(latchkey_proto::Error),
    Fork(Box<ForkEvidence>),
    KnownFork(u64),
}

/// The node's chains.
#[derive(Debug)]
pub struct Registry {
    store: Store,
    metrics: Arc<Metrics>,
    slots: Mutex<Slots>,
    known: Mutex<HashSet<DeviceId>>,
    max_cached: usize,
    max_forks: usize,
}

impl Registry {
    /// Reads which devices the database holds (chains themselves load on first use).
    pub async fn open(
        store: Store,
        metrics: Arc<Metrics>,
        max_cached: usize,
        max_forks: usize,
    ) -> Result<Registry> {
        let known: HashSet<DeviceId> = store
            .read(store::known_devices)
            .await?
            .into_iter()
            .collect();
        metrics.devices.store(known.len() as u64, Ordering::Relaxed);
        Ok(Registry {
            store,
            metrics,
            slots: Mutex::new(Slots::default()),
            known: Mutex::new(known),
            max_cached: max_cached.max(1),
            max_forks,
        })
    }

    pub fn is_known(&self, device: &DeviceId) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(device)
    }

    pub fn device_count(&self) -> usize {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every device the node holds a chain for.
    pub fn devices(&self) -> Vec<DeviceId> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.iter().copied().collect()
    }

    /// Runs `f` on a device's verified chain, read only (the mailboxes' admission rules ask
    /// who owns what); `None` if the node holds none.
    pub async fn inspect<R>(
        &self,
        device: DeviceId,
        f: impl FnOnce(&Chain) -> R,
    ) -> Result<Option<R>> {
        self.with_chain(device, |chain, _| f(chain)).await
    }

    fn slot(&self, device: DeviceId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.tick += 1;
        let tick = slots.tick;
        let slot = slots.map.entry(device).or_default().clone();
        slot.last_used.store(tick, Ordering::Relaxed);
        if slots.map.len() > self.max_cached {
            evict(&mut slots.map, self.max_cached);
        }
        slot
    }

    /// Loads a device's chain from the database and verifies it from genesis.
    async fn load(&self, device: DeviceId) -> Result<Loaded> {
        let rows = self
            .store
            .read(move |c| store::load_device(c, &device))
            .await?;
        tokio::task::spawn_blocking(move || {
            let corrupt = |seq: u64, source| Error::Corrupt {
                device: device.to_string(),
                seq,
                source,
            };
            let mut ops = rows.ops.iter().enumerate();
            let (_, genesis) = ops
                .next()
                .ok_or_else(|| Error::Internal(format!("no stored ops for {device}")))?;
            let genesis = Op::from_bytes(genesis).map_err(|e| corrupt(0, e))?;
            let mut chain = Chain::from_genesis(genesis).map_err(|e| corrupt(0, e))?;
            for (seq, bytes) in ops {
                let op = Op::from_bytes(bytes).map_err(|e| corrupt(seq as u64, e))?;
                chain.append(op).map_err(|e| corrupt(seq as u64, e))?;
            }
            let mut fork_ids = HashSet::new();
            for bytes in &rows.forks {
                let op = Op::from_bytes(bytes).map_err(|e| corrupt(0, e))?;
                fork_ids.insert(op.id());
            }
            Ok(Loaded { chain, fork_ids })
        })
        .await?
    }

    /// Runs `f` on a device's verified chain; `None` if the node holds none.
    async fn with_chain<R>(
        &self,
        device: DeviceId,
        f: impl FnOnce(&Chain, usize) -> R,
    ) -> Result<Option<R>> {
        if !self.is_known(&device) {
            return Ok(None);
        }
        let slot = self.slot(device);
        {
            let guard = slot.loaded.read().await;
            if let Some(loaded) = guard.as_ref() {
                return Ok(Some(f(&loaded.chain, loaded.fork_ids.len())));
            }
        }
        let mut guard = slot.loaded.write().await;
        if guard.is_none() {
            *guard = Some(self.load(device).await?);
        }
        let loaded = guard.as_ref().expect("just loaded");
        Ok(Some(f(&loaded.chain, loaded.fork_ids.len())))
    }

    /// The `OpList` encoding of the main chain's ops with seq ≥ `from` (at most what one list
    /// may hold; a client asks again from where it ended).
    pub async fn ops_from(&self, device: DeviceId, from: u64) -> Result<Option<Vec<u8>>> {
        self.with_chain(device, |chain, _| encode_ops(chain.ops(), from))
            .await
    }

    pub async fn head(&self, device: DeviceId) -> Result<Option<Head>> {
        self.with_chain(device, |chain, forks| Head {
            seq: chain.state().seq,
            head: chain.head(),
            forks: forks as u64,
        })
        .await
    }

    pub async fn forks(&self, device: DeviceId) -> Result<Option<Vec<ForkRow>>> {
        if !self.is_known(&device) {
            return Ok(None);
        }
        Ok(Some(
            self.store.read(move |c| store::forks(c, &device)).await?,
        ))
    }

    /// Verifies `ops` against the device's chain and stores what extends it, durably, before
    /// returning. Idempotent for ops already held.
    pub async fn ingest(
        &self,
        device: DeviceId,
        ops: Vec<Op>,
    ) -> core::result::Result<Accepted, Refusal> {
        let Some(first) = ops.first() else {
            return Err(Refusal::Empty);
        };
        if let Some(op) = ops.iter().find(|op| op.device != device) {
            return Err(Refusal::DeviceMismatch {
                seq: op.seq,
                expected: device,
                found: op.device,
            });
        }
        let first_seq = first.seq;
        for (i, op) in ops.iter().enumerate() {
            let expected = first_seq.saturating_add(i as u64);
            if op.seq != expected {
                return Err(Refusal::Invalid(latchkey_proto::Error::WrongSequence {
                    expected,
                    found: op.seq,
                }));
            }
        }

        let slot = self.slot(device);
        let mut guard = slot.loaded.write().await;
        if guard.is_none() && self.is_known(&device) {
            *guard = Some(self.load(device).await.map_err(Refusal::Storage)?);
        }
        let current = guard.take();
        let (back, step) = tokio::task::spawn_blocking(move || merge_into(current, ops))
            .await
            .map_err(|e| Refusal::Storage(e.into()))?;
        match step {
            Step::Added(0) => {
                let loaded = back.expect("a held chain comes back");
                let accepted = accepted(&loaded.chain, 0);
                *guard = Some(loaded);
                Ok(accepted)
            }
            Step::Added(added) => {
                let loaded = back.expect("an extended chain comes back");
                let ops = loaded.chain.ops();
                let rows: Vec<OpRow> = ops[ops.len() - added..]
                    .iter()
                    .map(|op| OpRow {
                        seq: op.seq,
                        id: op.id().0,
                        bytes: op.to_bytes(),
                    })
                    .collect();
                let now = store::now_ms();
                let write = self
                    .store
                    .write(move |c| store::insert_ops(c, &device, &rows, now))
                    .await;
                if let Err(e) = write {
                    // Nothing was stored: forget the cached extension.
                    *guard = None;
                    return Err(Refusal::Storage(e));
                }
                let accepted = accepted(&loaded.chain, added);
                *guard = Some(loaded);
                let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
                if known.insert(device) {
                    self.metrics
                        .devices
                        .store(known.len() as u64, Ordering::Relaxed);
                }
                drop(known);
                metrics::add(&self.metrics.ops_accepted, added as u64);
                Ok(accepted)
            }
            Step::Fork(evidence) => {
                let mut loaded = back.expect("a held chain comes back");
                let seq = evidence.seq;
                let theirs_id = evidence.theirs.id();
                let mut recorded = false;
                if loaded.fork_ids.len() < self.max_forks {
                    let ours = evidence.ours.to_bytes();
                    let theirs = evidence.theirs.to_bytes();
                    let now = store::now_ms();
                    let write = self
                        .store
                        .write(move |c| {
                            store::insert_fork(c, &device, seq, &theirs_id.0, &ours, &theirs, now)
                        })
                        .await;
                    match write {
                        Ok(new) => {
                            if new {
                                metrics::inc(&self.metrics.forks);
                            }
                            loaded.fork_ids.insert(theirs_id);
                            recorded = true;
                        }
                        Err(e) => {
                            *guard = Some(loaded);
                            return Err(Refusal::Storage(e));
                        }
                    }
                }
                tracing::warn!(%device, seq, recorded, "fork: a different valid op at a held position");
                *guard = Some(loaded);
                Err(Refusal::Fork { seq, recorded })
            }
            Step::KnownFork(seq) => {
                *guard = back;
                Err(Refusal::Fork {
                    seq,
                    recorded: true,
                })
            }
            Step::Invalid(e) => {
                *guard = back;
                Err(Refusal::Invalid(e))
            }
            Step::Gap { have, first } => {
                *guard = back;
                Err(Refusal::Gap { have, first })
            }
        }
    }
}

fn accepted(chain: &Chain, added: usize) -> Accepted {
    Accepted {
        added,
        seq: chain.state().seq,
        head: chain.head(),
    }
}

/// Drops the least recently used slots nobody is using, down to 90% of `cap`.
fn evict(map: &mut HashMap<DeviceId, Arc<Slot>>, cap: usize) {
    let target = cap - cap / 10;
    let mut idle: Vec<(u64, DeviceId)> = map
        .iter()
        .filter(|(_, slot)| Arc::strong_count(slot) == 1)
        .map(|(d, slot)| (slot.last_used.load(Ordering::Relaxed), *d))
        .collect();
    idle.sort_unstable();
    let excess = map.len().saturating_sub(target);
    for (_, device) in idle.into_iter().take(excess) {
        map.remove(&device);
    }
}

/// Verifies `ops` (consecutive) against `loaded` with `Chain::merge`, as a client would.
/// Returns the chain to keep in the cache (`None` when it must be reloaded from disk) and
/// what happened.
fn merge_into(loaded: Option<Loaded>, ops: Vec<Op>) -> (Option<Loaded>, Step) {
    let first_seq = ops[0].seq;
    let Some(mut loaded) = loaded else {
        if first_seq != 0 {
            return (
                None,
                Step::Gap {
                    have: 0,
                    first: first_seq,
                },
            );
        }
        let mut iter = ops.into_iter();
        let genesis = iter.next().expect("not empty");
        let chain = match Chain::from_genesis(genesis) {
            Ok(chain) => chain,
            Err(e) => return (None, Step::Invalid(e)),
        };
        let mut loaded = Loaded {
            chain,
            fork_ids: HashSet::new(),
        };
        let rest: Vec<Op> = iter.collect();
        if rest.is_empty() {
            return (Some(loaded), Step::Added(1));
        }
        let report = loaded.chain.merge(&rest);
        if let Some(e) = report.invalid {
            return (None, Step::Invalid(e));
        }
        return (Some(loaded), Step::Added(1 + report.added));
    };

    let len = loaded.chain.len() as u64;
    if first_seq > len {
        return (
            Some(loaded),
            Step::Gap {
                have: len,
                first: first_seq,
            },
        );
    }
    // A fork already on record is answered without verifying it again.
    for op in ops.iter().take_while(|op| op.seq < len) {
        let id = op.id();
        if loaded.chain.ops()[op.seq as usize].id() == id {
            continue;
        }
        if loaded.fork_ids.contains(&id) {
            return (Some(loaded), Step::KnownFork(op.seq));
        }
        break;
    }
    let report = loaded.chain.merge(&ops);
    if let Some(e) = report.invalid {
        // A merge that appended ops before hitting the invalid one changed the cached chain.
        let keep = (report.added == 0).then_some(loaded);
        return (keep, Step::Invalid(e));
    }
    if let Some(evidence) = report.fork {
        return (Some(loaded), Step::Fork(Box::new(evidence)));
    }
    (Some(loaded), Step::Added(report.added))
}

/// `u32 count || op*` for the ops from `from`, within what one `OpList` may hold.
fn encode_ops(ops: &[Op], from: u64) -> Vec<u8> {
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(ops.len());
    let mut body = Writer::new();
    let mut count = 0u32;
    for op in &ops[start..] {
        if count as usize >= latchkey_proto::chain::MAX_OPS
            || body.len() + latchkey_proto::chain::MAX_OP_LEN + 4 > OpList::MAX_LEN
        {
            break;
        }
        body.nested(op);
        count += 1;
    }
    let mut out = Writer::new();
    out.u32(count);
    out.raw(&body.into_inner());
    out.into_inner()
}
