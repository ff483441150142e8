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

use bytes::Bytes;
use latchkey_proto::chain::{Chain, ForkEvidence, Op, OpBody, OpId, OpList};
use latchkey_proto::codec::{Codec, Writer};
use latchkey_proto::keys::DeviceId;
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::store::{self, ForkRow, OpRow, Stale, Store};

/// A device's main chain, verified, and the ids of the fork ops recorded against it.
#[derive(Debug)]
struct Loaded {
    chain: Chain,
    fork_ids: HashSet<OpId>,
    /// The stored version this chain was read at or written as ([`store::DeviceRows::version`]).
    version: u64,
    /// Encoded answers to `ops?from=N` for this exact chain. Reads vastly outnumber writes
    /// and nearly all ask from 0 (a replica, a new client) or from the head (a client whose
    /// view is current), so a few entries serve them all as shared bytes instead of
    /// re-encoding the chain per request. Emptied whenever the chain changes.
    encoded: Mutex<Vec<(u64, Bytes)>>,
}

/// How many `from` positions a chain keeps encoded (see [`Loaded::encoded`]).
const ENCODED_PER_CHAIN: usize = 4;

impl Loaded {
    fn new(chain: Chain, fork_ids: HashSet<OpId>, version: u64) -> Loaded {
        Loaded {
            chain,
            fork_ids,
            version,
            encoded: Mutex::new(Vec::new()),
        }
    }

    /// The `OpList` answer for `from`, encoded at most once per chain state.
    fn ops_from(&self, from: u64) -> Bytes {
        let mut encoded = self.encoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, bytes)) = encoded.iter().find(|(at, _)| *at == from) {
            return bytes.clone();
        }
        let bytes = Bytes::from(encode_ops(self.chain.iter_from(from)));
        if encoded.len() >= ENCODED_PER_CHAIN {
            encoded.remove(0);
        }
        encoded.push((from, bytes.clone()));
        bytes
    }

    /// Forgets the encoded answers: called before anything that may change the chain.
    fn chain_changing(&mut self) {
        self.encoded
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
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
    #[error(
        "op {seq} is a revocation or endorsement anchored on an op this node does not hold at \
         that position (another branch of the chain); send the whole chain from genesis"
    )]
    UnknownAnchor { seq: u64 },
    #[error("{0}")]
    Storage(Error),
}

enum Step {
    /// The chain took ops (possibly none): write `changes`, then answer. A fork may have been
    /// seen on the way (evidence to record; the post is then refused as a fork).
    Merged {
        added: usize,
        changes: Changes,
        evidence: Option<(Box<ForkEvidence>, bool)>,
        unanchored: Option<u64>,
    },
    Gap {
        have: u64,
        first: u64,
    },
    Invalid(latchkey_proto::Error),
    KnownFork(u64),
}

/// What to write for a merge: new rows, and ids of ops the chain no longer holds.
#[derive(Default)]
struct Changes {
    rows: Vec<OpRow>,
    removed: Vec<[u8; 32]>,
}

impl Changes {
    fn between(before: &[OpId], chain: &Chain) -> Changes {
        let before_set: HashSet<&OpId> = before.iter().collect();
        let after = chain.op_ids();
        let after_set: HashSet<&OpId> = after.iter().collect();
        let rows = chain
            .ops()
            .iter()
            .zip(&after)
            .filter(|(_, id)| !before_set.contains(id))
            .map(|(op, id)| OpRow {
                seq: op.seq,
                id: id.0,
                bytes: op.to_bytes(),
            })
            .collect();
        let removed = before
            .iter()
            .filter(|id| !after_set.contains(id))
            .map(|id| id.0)
            .collect();
        Changes { rows, removed }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.removed.is_empty()
    }
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
        let known: HashSet<DeviceId> = store.known_devices().await?.into_iter().collect();
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

    /// Loads a device's chain from the database and verifies it from genesis; `None` when none
    /// is stored.
    async fn load(&self, device: DeviceId) -> Result<Option<Loaded>> {
        let rows = self.store.load_device(device).await?;
        if rows.ops.is_empty() {
            return Ok(None);
        }
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
            Ok(Some(Loaded::new(chain, fork_ids, rows.version)))
        })
        .await?
    }

    /// Runs `f` on a device's verified chain; `None` if the node holds none.
    async fn with_chain<R>(
        &self,
        device: DeviceId,
        f: impl FnOnce(&Chain, usize) -> R,
    ) -> Result<Option<R>> {
        self.with_loaded(device, |loaded| f(&loaded.chain, loaded.fork_ids.len()))
            .await
    }

    async fn with_loaded<R>(
        &self,
        device: DeviceId,
        f: impl FnOnce(&Loaded) -> R,
    ) -> Result<Option<R>> {
        if !self.is_known(&device) {
            return Ok(None);
        }
        let slot = self.slot(device);
        {
            let guard = slot.loaded.read().await;
            if let Some(loaded) = guard.as_ref() {
                return Ok(Some(f(loaded)));
            }
        }
        let mut guard = slot.loaded.write().await;
        if guard.is_none() {
            *guard = self.load(device).await?;
        }
        Ok(guard.as_ref().map(f))
    }

    /// The `OpList` encoding of the spine ops with seq ≥ `from` and every side op (at most what
    /// one list may hold; a client asks again from where it ended).
    pub async fn ops_from(&self, device: DeviceId, from: u64) -> Result<Option<Bytes>> {
        self.with_loaded(device, |loaded| loaded.ops_from(from))
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
        Ok(Some(self.store.forks(device).await?))
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
        let _ = first;
        // The spine ops of a list are consecutive; side ops go anywhere after their anchor.
        let mut spine = ops.iter().filter(|op| !op.body.is_side());
        if let Some(first_spine) = spine.next() {
            for (i, op) in spine.enumerate() {
                let expected = first_spine.seq.saturating_add(i as u64 + 1);
                if op.seq != expected {
                    return Err(Refusal::Invalid(latchkey_proto::Error::WrongSequence {
                        expected,
                        found: op.seq,
                    }));
                }
            }
        }

        // Another node process sharing the database may store ops for this device between our
        // read and our write: the write then finds the version moved and stores nothing, and we
        // verify again against what it stored (usually finding a fork).
        for _ in 0..MAX_STALE_RETRIES {
            match self.ingest_once(device, ops.clone()).await {
                Err(Attempt::Stale) => {
                    metrics::inc(&self.metrics.stale_writes);
                    continue;
                }
                Err(Attempt::Refused(refusal)) => return Err(refusal),
                Ok(accepted) => return Ok(accepted),
            }
        }
        Err(Refusal::Storage(Error::Internal(format!(
            "the chain of {device} kept changing under this post ({MAX_STALE_RETRIES} tries); \
             post again"
        ))))
    }

    /// One verify-and-store pass of [`Registry::ingest`].
    async fn ingest_once(
        &self,
        device: DeviceId,
        ops: Vec<Op>,
    ) -> core::result::Result<Accepted, Attempt> {
        let slot = self.slot(device);
        let mut guard = slot.loaded.write().await;
        if guard.is_none() && (self.is_known(&device) || self.store.shared()) {
            *guard = self.load(device).await.map_err(Refusal::Storage)?;
        }
        let current = guard.take();
        let (back, step) = tokio::task::spawn_blocking(move || merge_into(current, ops))
            .await
            .map_err(|e| Refusal::Storage(e.into()))?;
        let (added, changes, evidence, unanchored) = match step {
            Step::Merged {
                added,
                changes,
                evidence,
                unanchored,
            } => (added, changes, evidence, unanchored),
            Step::KnownFork(seq) => {
                *guard = back;
                return Err(Refusal::Fork {
                    seq,
                    recorded: true,
                }
                .into());
            }
            Step::Invalid(e) => {
                *guard = back;
                return Err(Refusal::Invalid(e).into());
            }
            Step::Gap { have, first } => {
                *guard = back;
                return Err(Refusal::Gap { have, first }.into());
            }
        };
        let mut loaded = back.expect("a merged chain comes back");
        if !changes.is_empty() {
            let now = store::now_ms();
            let write = self
                .store
                .update_ops(device, loaded.version, changes.rows, changes.removed, now)
                .await;
            match write {
                Ok(Ok(version)) => loaded.version = version,
                Ok(Err(Stale)) => {
                    *guard = None;
                    return Err(Attempt::Stale);
                }
                Err(e) => {
                    // Nothing was stored: forget the cached change.
                    *guard = None;
                    return Err(Refusal::Storage(e).into());
                }
            }
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.insert(device) {
                self.metrics
                    .devices
                    .store(known.len() as u64, Ordering::Relaxed);
            }
            drop(known);
            metrics::add(&self.metrics.ops_accepted, added as u64);
        }
        let mut refusal = None;
        if let Some((evidence, refuse)) = evidence {
            let seq = evidence.seq;
            let theirs_id = evidence.theirs.id();
            let mut recorded = loaded.fork_ids.contains(&theirs_id);
            if !recorded && loaded.fork_ids.len() < self.max_forks {
                let ours = evidence.ours.to_bytes();
                let theirs = evidence.theirs.to_bytes();
                let now = store::now_ms();
                let write = self
                    .store
                    .insert_fork(device, seq, theirs_id.0, ours, theirs, now)
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
                        return Err(Refusal::Storage(e).into());
                    }
                }
            }
            tracing::warn!(%device, seq, recorded, refused = refuse, "fork: a different valid op at a held position");
            if refuse {
                refusal = Some(Refusal::Fork { seq, recorded });
            }
        }
        if refusal.is_none() && added == 0 {
            if let Some(seq) = unanchored {
                refusal = Some(Refusal::UnknownAnchor { seq });
            }
        }
        let accepted = accepted(&loaded.chain, added);
        *guard = Some(loaded);
        match refusal {
            Some(refusal) => Err(refusal.into()),
            None => Ok(accepted),
        }
    }

    /// Takes note of a committed change to a device's chain (announced by the store, maybe by
    /// another node process): a cached chain older than it is dropped and reloaded on next use.
    pub async fn changed(&self, device: DeviceId, version: u64) {
        {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.insert(device) {
                self.metrics
                    .devices
                    .store(known.len() as u64, Ordering::Relaxed);
            }
        }
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.map.get(&device).cloned()
        };
        if let Some(slot) = slot {
            let mut guard = slot.loaded.write().await;
            if guard.as_ref().is_some_and(|l| l.version < version) {
                *guard = None;
            }
        }
    }

    /// Drops every cached chain (the store's announcements were missed: anything may have
    /// changed), and learns devices stored meanwhile.
    pub async fn forget_all(&self) -> Result<()> {
        let slots: Vec<Arc<Slot>> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.map.values().cloned().collect()
        };
        for slot in slots {
            *slot.loaded.write().await = None;
        }
        let devices = self.store.known_devices().await?;
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(devices);
        self.metrics
            .devices
            .store(known.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// How often a post is verified again after another writer moved the chain under it.
const MAX_STALE_RETRIES: usize = 4;

/// How one pass of an ingest ended, when it did not store.
enum Attempt {
    Stale,
    Refused(Refusal),
}

impl From<Refusal> for Attempt {
    fn from(refusal: Refusal) -> Self {
        Attempt::Refused(refusal)
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

/// Verifies `ops` against `loaded` with `Chain::merge`, as a client would. Returns the chain to
/// keep in the cache (`None` when it must be reloaded from disk) and what happened.
fn merge_into(loaded: Option<Loaded>, ops: Vec<Op>) -> (Option<Loaded>, Step) {
    // Where the list starts: its first spine op, or the anchor of its first side op.
    let first_seq = ops
        .iter()
        .map(|op| {
            if op.body.is_side() {
                op.seq.saturating_sub(1)
            } else {
                op.seq
            }
        })
        .min()
        .expect("not empty");
    let (mut loaded, before, ops) = match loaded {
        Some(loaded) => {
            let before = loaded.chain.op_ids();
            (loaded, before, ops)
        }
        None => {
            if first_seq != 0 || ops[0].seq != 0 || ops[0].body.is_side() {
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
            let loaded = Loaded::new(chain, HashSet::new(), 0);
            (loaded, Vec::new(), iter.collect())
        }
    };

    let len = loaded.chain.len() as u64;
    let brings_next = ops.iter().any(|op| !op.body.is_side() && op.seq == len);
    if !before.is_empty() && (first_seq > len || (first_seq == len && !brings_next)) {
        return (
            Some(loaded),
            Step::Gap {
                have: len,
                first: first_seq,
            },
        );
    }
    // A fork already on record is answered without verifying it again (unless the post brings
    // an endorsement, which may settle it).
    if !ops.iter().any(|op| matches!(op.body, OpBody::Endorse)) {
        for op in ops
            .iter()
            .filter(|op| !op.body.is_side())
            .take_while(|op| op.seq < len)
        {
            let id = op.id();
            if loaded.chain.spine_op(op.seq).map(Op::id) == Some(id) {
                continue;
            }
            if loaded.fork_ids.contains(&id) {
                return (Some(loaded), Step::KnownFork(op.seq));
            }
            break;
        }
    }
    loaded.chain_changing();
    let report = loaded.chain.merge(&ops);
    let changes = Changes::between(&before, &loaded.chain);
    if let Some(e) = report.invalid {
        // Valid ops before the bad one were merged: drop the cache rather than store half a post.
        let keep = changes.is_empty().then_some(loaded);
        return (keep, Step::Invalid(e));
    }
    let evidence = report
        .fork
        .map(|f| (Box::new(f), true))
        .or(report.outvoted.map(|f| (Box::new(f), true)))
        .or(report.switched.map(|f| (Box::new(f), false)));
    let unanchored = (report.unanchored > 0)
        .then(|| {
            ops.iter()
                .filter(|op| op.body.is_side())
                .find(|op| loaded.chain.spine_op(op.seq - 1).map(Op::id) != Some(op.prev))
                .map(|op| op.seq)
        })
        .flatten();
    let added = changes.rows.len();
    (
        Some(loaded),
        Step::Merged {
            added,
            changes,
            evidence,
            unanchored,
        },
    )
}

/// `u32 count || op*` for `ops`, within what one `OpList` may hold.
fn encode_ops<'a>(ops: impl Iterator<Item = &'a Op>) -> Vec<u8> {
    let mut body = Writer::new();
    let mut count = 0u32;
    for op in ops {
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
