//! The per-device consent log kept next to the chain (docs/API.md, "Consent logs";
//! docs/PROTOCOL.md §14): hash-linked entries, each signed by an owner of the device, verified
//! with latchkey-proto against the node's own verified chain before anything is stored.
//!
//! **Invariant: the cached log never runs ahead of the disk.** Each device has one slot whose
//! lock is held from verification through the durable write; if the write fails the slot is
//! emptied and the log is reloaded (and verified again) from SQLite on next use.
//!
//! A posted entry must be the next one by the rule a device applies (`ConsentLog::check_next`:
//! signed by a *current* owner, anchored in the current era). Entries that arrive by
//! replication may be old ones a new node has never seen, signed by owners removed since, so a
//! replicated run that does not pass that rule is taken if the log up to its last entry
//! verifies by the rule every reader applies (`ConsentLog::verify`) and its last entry passes
//! the device's rule: a current owner has built on that history. A node is never looser than a
//! device about what comes last; a log whose newest entry is by a removed owner waits on a new
//! node until a current owner appends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_proto::chain::Chain;
use latchkey_proto::codec::{Codec, Writer};
use latchkey_proto::consent::{ConsentEntry, ConsentLog};
use latchkey_proto::keys::DeviceId;

use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::registry::Registry;
use crate::store::{EntryRow, ForkRow, Stale, Store};

/// The largest entry a node takes: the protocol's cap on one encoded `ConsentEntry`.
pub const MAX_ENTRY_BODY: usize = 8 * 1024;
/// The most entries one device's log may hold on a node (a `ConsentList`'s own cap).
pub const MAX_ENTRIES_PER_DEVICE: u64 = 10_000;
/// The most bytes of entries one `GET …/consents` answer carries; a longer log is served in
/// pages (the answer then names where the next one starts).
pub const PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// What an owner signs: this label, then the entry's content (docs/PROTOCOL.md §14). The node
/// checks a rival entry's signature with it before verifying the log before the rival, so only
/// an owner's real equivocation costs that work.
const ENTRY_SIGNING_LABEL: &[u8] = b"latchkey/v1/consent-entry\0";

fn refused(seq: u64, why: &'static str) -> ConsentRefusal {
    ConsentRefusal::Invalid(latchkey_proto::Error::ConsentRefused { seq, why })
}

fn other_device(seq: u64) -> ConsentRefusal {
    refused(seq, "it is for another device")
}

/// A verified log and the hashes of the conflicting entries on record against it.
#[derive(Debug)]
struct Held {
    log: ConsentLog,
    fork_hashes: HashSet<[u8; 32]>,
}

#[derive(Debug, Default)]
struct Slot {
    held: tokio::sync::Mutex<Option<Held>>,
    last_used: AtomicU64,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<DeviceId, Arc<Slot>>,
    tick: u64,
}

/// What a post did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// The entry is new and now durable.
    Stored { seq: u64, hash: [u8; 32] },
    /// The identical entry was already held: nothing changed.
    AlreadyHeld { seq: u64, hash: [u8; 32] },
}

/// Why an entry was not taken. Nothing was stored, except conflict evidence.
#[derive(Debug, thiserror::Error)]
pub enum ConsentRefusal {
    #[error("this node holds no chain for {0}; publish the device's chain to it first")]
    UnknownDevice(DeviceId),
    #[error("{0}")]
    Invalid(latchkey_proto::Error),
    #[error(
        "the log already holds a different, validly signed entry at seq {seq}: two owners (or \
         one, twice) signed rival entries; the node keeps the first and {}",
        if *recorded { "recorded the other as evidence (GET …/consents/forks)" }
        else { "already holds the most evidence it keeps for this device" }
    )]
    Conflict { seq: u64, recorded: bool },
    #[error(
        "entry {seq} is past what this node holds ({have} entries); replication fills the gap, \
         or post the entries before it first"
    )]
    Gap { have: u64, seq: u64 },
    #[error("the device's consent log holds its maximum of {cap} entries on this node")]
    Full { cap: u64 },
    /// Another node process sharing the database stored an entry of this log first; nothing
    /// was stored (the log is reloaded on the next try).
    #[error(
        "another node process stored an entry of this consent log at the same moment; \
         nothing was stored: post the entry again"
    )]
    Stale,
    #[error("{0}")]
    Storage(Error),
}

impl From<Error> for ConsentRefusal {
    fn from(e: Error) -> Self {
        ConsentRefusal::Storage(e)
    }
}

/// How often a post is verified again after another node process moved the log under it.
const MAX_STALE_RETRIES: usize = 4;

/// The consent logs of the devices the node holds.
#[derive(Debug)]
pub struct ConsentLogs {
    store: Store,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    slots: Mutex<Slots>,
    max_cached: usize,
    max_forks: usize,
    max_entries: u64,
}

impl ConsentLogs {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        max_cached: usize,
        max_forks: usize,
        max_entries: u64,
    ) -> Self {
        ConsentLogs {
            store,
            registry,
            metrics,
            slots: Mutex::new(Slots::default()),
            max_cached: max_cached.max(1),
            max_forks,
            max_entries,
        }
    }

    /// Takes note of a committed change to a device's log (maybe by another node process): a
    /// cached log shorter than it is dropped and reloaded on next use.
    pub async fn changed(&self, device: DeviceId, len: u64) {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.map.get(&device).cloned()
        };
        if let Some(slot) = slot {
            let mut guard = slot.held.lock().await;
            if guard
                .as_ref()
                .is_some_and(|h| (h.log.entries().len() as u64) < len)
            {
                *guard = None;
            }
        }
    }

    /// Drops every cached log (the store's announcements were missed).
    pub async fn forget_all(&self) {
        let slots: Vec<Arc<Slot>> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.map.values().cloned().collect()
        };
        for slot in slots {
            *slot.held.lock().await = None;
        }
    }

    fn slot(&self, device: DeviceId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.tick += 1;
        let tick = slots.tick;
        let slot = slots.map.entry(device).or_default().clone();
        slot.last_used.store(tick, Ordering::Relaxed);
        if slots.map.len() > self.max_cached {
            let target = self.max_cached - self.max_cached / 10;
            let mut idle: Vec<(u64, DeviceId)> = slots
                .map
                .iter()
                .filter(|(_, s)| Arc::strong_count(s) == 1)
                .map(|(d, s)| (s.last_used.load(Ordering::Relaxed), *d))
                .collect();
            idle.sort_unstable();
            let excess = slots.map.len().saturating_sub(target);
            for (_, d) in idle.into_iter().take(excess) {
                slots.map.remove(&d);
            }
        }
        slot
    }

    /// The device's verified chain, cloned out of the registry's cache (verification runs on
    /// the blocking pool, off the registry's lock).
    async fn chain(&self, device: DeviceId) -> core::result::Result<Chain, ConsentRefusal> {
        self.registry
            .inspect(device, Chain::clone)
            .await?
            .ok_or(ConsentRefusal::UnknownDevice(device))
    }

    /// Loads a device's stored log and verifies it against `chain`.
    async fn load(&self, device: DeviceId, chain: Chain) -> Result<Held> {
        let stored = self.store.consent_load(device).await?;
        let (rows, fork_hashes) = (stored.entries, stored.fork_hashes);
        tokio::task::spawn_blocking(move || {
            let corrupt = |seq: u64, source| Error::Corrupt {
                device: format!("{device} consent log"),
                seq,
                source,
            };
            let entries = rows
                .iter()
                .enumerate()
                .map(|(i, b)| ConsentEntry::from_bytes(b).map_err(|e| corrupt(i as u64 + 1, e)))
                .collect::<Result<Vec<_>>>()?;
            let log = ConsentLog::verify(&chain, entries).map_err(|e| corrupt(0, e))?;
            Ok(Held {
                log,
                fork_hashes: fork_hashes.into_iter().collect(),
            })
        })
        .await?
    }

    /// A page of the stored log from `from` (seq numbers start at 1): the `ConsentList`
    /// encoding, and the seq the next page starts at when more follow. `None` when the node
    /// holds no chain for the device.
    pub async fn page(
        &self,
        device: DeviceId,
        from: u64,
    ) -> Result<Option<(Vec<u8>, Option<u64>)>> {
        if !self.registry.is_known(&device) {
            return Ok(None);
        }
        let from = from.max(1);
        let (rows, more) = self
            .store
            .consent_page(
                device,
                from,
                MAX_ENTRIES_PER_DEVICE as usize,
                PAGE_MAX_BYTES,
            )
            .await?;
        let next = more.then_some(from + rows.len() as u64);
        let mut out = Writer::new();
        out.u32(rows.len() as u32);
        for row in &rows {
            out.raw(row);
        }
        Ok(Some((out.into_inner(), next)))
    }

    /// The conflicting entries on record for a device; `None` when the node holds no chain.
    pub async fn forks(&self, device: DeviceId) -> Result<Option<Vec<ForkRow>>> {
        if !self.registry.is_known(&device) {
            return Ok(None);
        }
        Ok(Some(self.store.consent_forks(device).await?))
    }

    /// Takes one posted entry for `device` if it is the log's next by the device's rule
    /// (`ConsentLog::check_next`), durably before returning; answers a repeat of a held entry
    /// without change, and keeps a validly signed rival of a held entry as evidence.
    pub async fn post(
        &self,
        device: DeviceId,
        entry: ConsentEntry,
    ) -> core::result::Result<Posted, ConsentRefusal> {
        let mut tries = 0;
        loop {
            match self.post_once(device, entry.clone()).await {
                Err(ConsentRefusal::Stale) if tries < MAX_STALE_RETRIES => {
                    metrics::inc(&self.metrics.stale_writes);
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    async fn post_once(
        &self,
        device: DeviceId,
        entry: ConsentEntry,
    ) -> core::result::Result<Posted, ConsentRefusal> {
        if entry.device != device {
            return Err(other_device(entry.seq));
        }
        let chain = self.chain(device).await?;
        let slot = self.slot(device);
        let mut guard = slot.held.lock().await;
        if guard.is_none() {
            *guard = Some(self.load(device, chain.clone()).await?);
        }
        let held = guard.as_mut().expect("just loaded");
        let len = held.log.entries().len() as u64;
        let hash = entry.hash();
        if entry.seq >= 1 && entry.seq <= len {
            let ours = &held.log.entries()[(entry.seq - 1) as usize];
            if *ours == entry {
                return Ok(Posted::AlreadyHeld {
                    seq: entry.seq,
                    hash,
                });
            }
            if ours.hash() == hash {
                // The held entry's content under other signature bytes: Ed25519 signatures
                // are deterministic, so this copy's is not the owner's.
                return Err(refused(
                    entry.seq,
                    "the node holds this entry with the owner's signature, and this copy's \
                     signature differs from it",
                ));
            }
            return self.rival(device, &chain, held, entry).await;
        }
        if entry.seq == len + 1 && len >= self.max_entries {
            return Err(ConsentRefusal::Full {
                cap: self.max_entries,
            });
        }
        // Verify on the blocking pool with the log moved out of the slot; it comes back
        // extended only if the entry passed.
        let mut taken = guard.take().expect("loaded");
        let (taken, checked) = tokio::task::spawn_blocking(move || {
            let checked = taken.log.append(&chain, entry.clone()).map(|()| entry);
            (taken, checked)
        })
        .await
        .map_err(|e| ConsentRefusal::Storage(e.into()))?;
        let entry = match checked {
            Ok(entry) => entry,
            Err(e) => {
                *guard = Some(taken);
                return Err(ConsentRefusal::Invalid(e));
            }
        };
        let row = EntryRow {
            seq: entry.seq,
            hash,
            bytes: entry.to_bytes(),
        };
        let now = crate::store::now_ms();
        let write = self.store.consent_append(device, vec![row], now).await;
        match write {
            Ok(Ok(())) => {}
            Ok(Err(Stale)) => {
                // Another node process stored an entry first: verify again against it.
                *guard = None;
                return Err(ConsentRefusal::Stale);
            }
            Err(e) => {
                // The cached log holds the entry the disk does not: forget it.
                *guard = None;
                return Err(ConsentRefusal::Storage(e));
            }
        }
        *guard = Some(taken);
        metrics::inc(&self.metrics.consents_accepted);
        Ok(Posted::Stored {
            seq: entry.seq,
            hash,
        })
    }

    /// An entry at a seq the log already holds, different from the held one. It is evidence
    /// only if it is validly signed and would have been the next entry after the log's
    /// entries before it; otherwise it is merely invalid.
    async fn rival(
        &self,
        device: DeviceId,
        chain: &Chain,
        held: &mut Held,
        theirs: ConsentEntry,
    ) -> core::result::Result<Posted, ConsentRefusal> {
        let seq = theirs.seq;
        let theirs_hash = theirs.hash();
        if held.fork_hashes.contains(&theirs_hash) {
            return Err(ConsentRefusal::Conflict {
                seq,
                recorded: true,
            });
        }
        let ours = held.log.entries()[(seq - 1) as usize].clone();
        // The cheap tests first: a rival shares its parent with ours and is signed by an owner
        // at its anchor; anything else is refused without verifying the log before it.
        if theirs.prev != ours.prev {
            return Err(refused(seq, "it does not link to the entry before it"));
        }
        let owner_then = chain
            .spine_anchor(&theirs.anchor)
            .is_some_and(|(_, owners, _)| owners.contains(&theirs.signer));
        if !owner_then {
            return Err(refused(seq, "its signer is not an owner at its anchor"));
        }
        let message = [ENTRY_SIGNING_LABEL, &theirs.content_bytes()].concat();
        if !theirs.signer.verify(&theirs.signature, &message) {
            return Err(refused(seq, "the owner's signature does not verify"));
        }
        let before = held.log.entries()[..(seq - 1) as usize].to_vec();
        let chain = chain.clone();
        let check = tokio::task::spawn_blocking(move || {
            let prefix = ConsentLog::verify(&chain, before)?;
            prefix.check_next(&chain, &theirs).map(|()| theirs)
        })
        .await
        .map_err(|e| ConsentRefusal::Storage(e.into()))?;
        let theirs = check.map_err(ConsentRefusal::Invalid)?;
        let mut recorded = false;
        if held.fork_hashes.len() < self.max_forks {
            let (ours, theirs) = (ours.to_bytes(), theirs.to_bytes());
            let now = crate::store::now_ms();
            let new = self
                .store
                .consent_insert_fork(device, seq, theirs_hash, ours, theirs, now)
                .await?;
            if new {
                metrics::inc(&self.metrics.consent_forks);
            }
            held.fork_hashes.insert(theirs_hash);
            recorded = true;
        }
        tracing::warn!(%device, seq, recorded, "consent log conflict: a rival validly signed entry");
        Err(ConsentRefusal::Conflict { seq, recorded })
    }

    /// Takes a run of entries a peer served (replication): entries already held are skipped,
    /// a rival of a held one is kept as evidence, and the new ones are taken if each is the
    /// next by the device's rule, or else if the whole log then verifies by the reader's rule.
    /// Returns how many were added.
    pub async fn ingest_replicated(
        &self,
        device: DeviceId,
        run: Vec<ConsentEntry>,
    ) -> core::result::Result<usize, ConsentRefusal> {
        let mut tries = 0;
        loop {
            match self.ingest_replicated_once(device, run.clone()).await {
                Err(ConsentRefusal::Stale) if tries < MAX_STALE_RETRIES => {
                    metrics::inc(&self.metrics.stale_writes);
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    async fn ingest_replicated_once(
        &self,
        device: DeviceId,
        run: Vec<ConsentEntry>,
    ) -> core::result::Result<usize, ConsentRefusal> {
        if let Some(e) = run.iter().find(|e| e.device != device) {
            return Err(other_device(e.seq));
        }
        let chain = self.chain(device).await?;
        let slot = self.slot(device);
        let mut guard = slot.held.lock().await;
        if guard.is_none() {
            *guard = Some(self.load(device, chain.clone()).await?);
        }
        let held = guard.as_mut().expect("just loaded");
        let len = held.log.entries().len() as u64;
        let mut new = Vec::new();
        for entry in run {
            if entry.seq >= 1 && entry.seq <= len {
                if held.log.entries()[(entry.seq - 1) as usize] != entry {
                    match self.rival(device, &chain, held, entry).await {
                        Err(ConsentRefusal::Storage(e)) => return Err(ConsentRefusal::Storage(e)),
                        _ => continue,
                    }
                }
                continue;
            }
            new.push(entry);
        }
        let Some(first) = new.first() else {
            return Ok(0);
        };
        if first.seq != len + 1 {
            return Err(ConsentRefusal::Gap {
                have: len,
                seq: first.seq,
            });
        }
        if len + new.len() as u64 > self.max_entries {
            return Err(ConsentRefusal::Full {
                cap: self.max_entries,
            });
        }
        let taken = guard.take().expect("loaded");
        let (back, result) = tokio::task::spawn_blocking(move || extend(taken, &chain, new))
            .await
            .map_err(|e| ConsentRefusal::Storage(e.into()))?;
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                *guard = back;
                return Err(ConsentRefusal::Invalid(e));
            }
        };
        let added = rows.len();
        let now = crate::store::now_ms();
        let write = self.store.consent_append(device, rows, now).await;
        match write {
            Ok(Ok(())) => {}
            Ok(Err(Stale)) => {
                *guard = None;
                return Err(ConsentRefusal::Stale);
            }
            Err(e) => {
                *guard = None;
                return Err(ConsentRefusal::Storage(e));
            }
        }
        *guard = back;
        metrics::add(&self.metrics.consents_accepted, added as u64);
        Ok(added)
    }
}

/// How far back from a replicated run's end [`settled_prefix`] looks for an entry a current
/// owner signed (a removed owner's tail longer than this is refused whole).
const MAX_UNSETTLED_TAIL: usize = 64;

/// The longest prefix of `all` (longer than `held` entries) that verifies by the reader's rule
/// and whose last entry also passes the device's rule: history may be signed by owners removed
/// since, but a current owner must have built on it. Otherwise a removed owner and one lying
/// peer could plant an entry with an anchor from her time (say, a consent for her own
/// provider) at the head of the log on every honest node.
fn settled_prefix(
    chain: &Chain,
    mut all: Vec<ConsentEntry>,
    held: usize,
) -> latchkey_proto::Result<ConsentLog> {
    let mut first_error = None;
    for _ in 0..MAX_UNSETTLED_TAIL {
        if all.len() <= held {
            break;
        }
        let last = all.pop().expect("longer than held");
        let attempt = ConsentLog::verify(chain, all.clone()).and_then(|mut log| {
            log.append(chain, last)?;
            Ok(log)
        });
        match attempt {
            Ok(log) => return Ok(log),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.expect("the run is not empty"))
}

/// Extends `held` by `new` (consecutive, starting right after it): entry by entry by the
/// device's rule, else the whole log by the reader's rule. Returns the log to keep (`None`
/// when it must be reloaded) and the rows to store.
fn extend(
    mut held: Held,
    chain: &Chain,
    new: Vec<ConsentEntry>,
) -> (Option<Held>, latchkey_proto::Result<Vec<EntryRow>>) {
    let rows: Vec<EntryRow> = new
        .iter()
        .map(|e| EntryRow {
            seq: e.seq,
            hash: e.hash(),
            bytes: e.to_bytes(),
        })
        .collect();
    let before = held.log.entries().len();
    let mut strict = true;
    for entry in &new {
        if held.log.append(chain, entry.clone()).is_err() {
            strict = false;
            break;
        }
    }
    if strict {
        return (Some(held), Ok(rows));
    }
    let mut all = held.log.entries()[..before].to_vec();
    all.extend(new);
    match settled_prefix(chain, all, before) {
        Ok(log) => {
            let rows = rows[..log.entries().len() - before].to_vec();
            held.log = log;
            (Some(held), Ok(rows))
        }
        Err(e) => {
            // The log took some of the run in memory: rebuild it from the disk.
            let keep = (held.log.entries().len() == before).then_some(held);
            (keep, Err(e))
        }
    }
}
