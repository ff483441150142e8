//! Stream keys, reading sequence numbers and consents, durable in `state.db`
//! (docs/PROTOCOL.md §14.x "Device behaviour").
//!
//! **Invariant: a key is durable before anything is sealed under it or it is announced.** A
//! rotation (a consent revoked, expired, or lapsed on the device's clock) writes the new key
//! together with the consent change in one `synchronous=FULL` transaction, under the stream's
//! lock, before the pipeline answers; only then does the in-memory key change.
//!
//! **Invariant: a reading's `seq` never repeats** for a stream, across restarts and `kill -9`:
//! sequence numbers are reserved durably in blocks of [`SEQ_BLOCK`], and a restart continues
//! after the last reserved block (skipping what was reserved but unused).
//!
//! **Invariant: key messages go out before readings under their key.** A change marks the
//! stream `dirty`; [`StreamKeys::seal`] refuses to seal while it is dirty, so the publisher
//! first takes the [`Announcement`] (every current key message and the clears), publishes it,
//! then seals.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{ConsentAction, ConsentEntry, ConsentId, SignedConsentRequest};
use latchkey_proto::kem::KemPublicKey;
use latchkey_proto::keys::{DeviceId, PublicKey, SigningKey};
use latchkey_proto::stream::{self as wire, KeyEntry, KeyGrant, Reading, StreamKey};
use rand_core::{CryptoRng, RngCore};
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::Store;

pub use latchkey_proto::stream::MAX_GRANT_KEYS;

/// Reading sequence numbers reserved per durable write (one fsync per block: at the DSMR 5
/// rate of one reading a second, one every 17 minutes).
pub const SEQ_BLOCK: u64 = 1024;

const SCHEMA: &str = "
-- Stream keys (docs/PROTOCOL.md §14): key 1 is made when the stream first starts.
CREATE TABLE IF NOT EXISTS stream_keys (
    stream TEXT NOT NULL, key_id INTEGER NOT NULL, key BLOB NOT NULL,
    from_seq INTEGER NOT NULL, created_ms INTEGER NOT NULL, PRIMARY KEY (stream, key_id));
-- Sequence numbers below `reserved` may have been used.
CREATE TABLE IF NOT EXISTS stream_seq (stream TEXT PRIMARY KEY, reserved INTEGER NOT NULL);
-- The consent log entries this device accepted (it may have gaps: see stream::consent).
CREATE TABLE IF NOT EXISTS consent_entries (
    seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, entry BLOB NOT NULL);
-- Consents given for a stream of this device and what ended them.
CREATE TABLE IF NOT EXISTS stream_consents (
    id BLOB PRIMARY KEY, stream TEXT NOT NULL, request BLOB NOT NULL, given_seq INTEGER NOT NULL,
    first_key INTEGER NOT NULL, until_ms INTEGER, ended TEXT, ended_ms INTEGER);
";

/// How a consent ended, as the device recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// A `Revoked` entry.
    Revoked,
    /// An `Expired` entry.
    Expired,
    /// The device's clock passed the request's `until` (no entry needed).
    Lapsed,
    /// The device changed hands (a transfer or a factory reset): the new owners never
    /// consented (docs/PROTOCOL.md §14).
    Transferred,
}

impl EndKind {
    pub fn name(self) -> &'static str {
        match self {
            EndKind::Revoked => "revoked",
            EndKind::Expired => "expired",
            EndKind::Lapsed => "lapsed",
            EndKind::Transferred => "transferred",
        }
    }
}

/// What one accepted consent entry changes (decided by [`crate::stream::consent`]).
#[derive(Debug, Clone)]
pub enum Effect {
    /// A consent to add; `ended` when a later entry the device already holds ends it.
    Given {
        request: Box<SignedConsentRequest>,
        ended: Option<(EndKind, u64)>,
    },
    /// A consent to end (a rotation if it was active).
    Ended {
        id: ConsentId,
        kind: EndKind,
        time_ms: u64,
    },
    /// Nothing to change (an end of a consent this device never saw given).
    Nothing,
}

/// A consent as the device keeps it.
#[derive(Debug, Clone)]
pub struct HeldConsent {
    pub id: ConsentId,
    pub stream: String,
    pub request: SignedConsentRequest,
    pub given_seq: u64,
    /// The stream's key when it was given: the first key the provider gets (without history).
    pub first_key: u32,
    pub until_ms: Option<u64>,
    pub ended: Option<(EndKind, u64)>,
}

impl HeldConsent {
    pub fn active(&self) -> bool {
        self.ended.is_none()
    }
    /// The provider's recipient id (its signing key).
    pub fn recipient(&self) -> [u8; 32] {
        self.request.request().provider.recipient()
    }
}

/// One retained MQTT message: a key message, or an empty payload that clears one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A stream's sealed reading, ready to publish.
#[derive(Debug, Clone)]
pub struct SealedReading {
    pub frame: Vec<u8>,
    pub key_id: u32,
    pub seq: u64,
}

/// What to publish for one stream before readings continue: a key message per authorised
/// recipient, and an empty retained message per recipient no longer authorised.
#[derive(Debug, Clone)]
pub struct Plan {
    pub stream: String,
    pub key_id: u32,
    /// `(recipient, KEM key, consent, first key id)`: providers with an active consent.
    pub providers: Vec<([u8; 32], KemPublicKey, ConsentId, u32)>,
    /// Recipients whose topic is cleared.
    pub cleared: Vec<[u8; 32]>,
    /// Every stored key, oldest first.
    pub keys: Vec<(u32, u64, StreamKey)>,
}

use latchkey_proto::stream::key_topic;

impl Plan {
    /// Seals every key message (one hybrid KEM encapsulation each) and the clears. Owners
    /// (`owners`: subscribed current owners and their event KEM keys) get every key.
    pub fn build(
        &self,
        device: &DeviceId,
        identity: &SigningKey,
        owners: &[(PublicKey, KemPublicKey)],
        issued_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<Retained>> {
        let entries = |from: u32| -> Vec<KeyEntry> {
            let chosen: Vec<&(u32, u64, StreamKey)> =
                self.keys.iter().filter(|(id, _, _)| *id >= from).collect();
            chosen[chosen.len().saturating_sub(MAX_GRANT_KEYS)..]
                .iter()
                .map(|(key_id, from_seq, key)| KeyEntry {
                    key_id: *key_id,
                    from_seq: *from_seq,
                    key: key.clone(),
                })
                .collect()
        };
        let mut out = Vec::with_capacity(self.providers.len() + owners.len() + self.cleared.len());
        for (recipient, kem, consent, first_key) in &self.providers {
            let grant = KeyGrant {
                device: *device,
                stream: self.stream.clone(),
                recipient: *recipient,
                consent: Some(*consent),
                issued_ms,
                keys: entries(*first_key),
            };
            out.push(Retained {
                topic: key_topic(device, &self.stream, recipient),
                payload: wire::seal_key_grant(&grant, identity, kem, rng)?,
            });
        }
        for (owner, kem) in owners {
            let recipient = owner.to_bytes();
            let grant = KeyGrant {
                device: *device,
                stream: self.stream.clone(),
                recipient,
                consent: None,
                issued_ms,
                keys: entries(1),
            };
            out.push(Retained {
                topic: key_topic(device, &self.stream, &recipient),
                payload: wire::seal_key_grant(&grant, identity, kem, rng)?,
            });
        }
        for recipient in &self.cleared {
            out.push(Retained {
                topic: key_topic(device, &self.stream, recipient),
                payload: Vec::new(),
            });
        }
        Ok(out)
    }
}

struct StreamState {
    key_id: u32,
    key: StreamKey,
    /// The next reading's sequence number.
    next_seq: u64,
    /// Sequence numbers below this are reserved on disk.
    reserved: u64,
    /// Key messages must be published before the next reading.
    dirty: bool,
}

/// Counters `latchkeyd status` shows (kept in memory, saved to `meta` now and then).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamCounters {
    pub published: u64,
    pub bad_telegrams: u64,
    /// Readings dropped because the broker connection's queue was full.
    pub dropped: u64,
    pub last_bad: Option<String>,
}

/// The device's streams: keys, sequence numbers and consents; shared by the pipeline (which
/// records consent entries and rotates) and the publisher (which seals and announces).
pub struct StreamKeys {
    device: DeviceId,
    store: Arc<Store>,
    streams: BTreeSet<String>,
    state: Mutex<BTreeMap<String, StreamState>>,
    counters: Mutex<BTreeMap<String, StreamCounters>>,
    /// Bumped at every change that needs key messages published.
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for StreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("StreamKeys")
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

fn counter_key(stream: &str) -> String {
    format!("stream.{stream}.counters")
}

impl StreamKeys {
    /// Loads (or, for a stream's first start, makes and stores) every stream's key and marks
    /// all streams dirty, so their key messages are republished on start.
    pub fn open(
        store: Arc<Store>,
        device: DeviceId,
        streams: impl IntoIterator<Item = String>,
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self> {
        let streams: BTreeSet<String> = streams.into_iter().collect();
        store.conn().execute_batch(SCHEMA)?;
        let mut state = BTreeMap::new();
        let mut counters = BTreeMap::new();
        for name in &streams {
            let mut conn = store.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let reserved = reserved_in(&tx, name)?;
            let (key_id, key) = match latest_key_in(&tx, name)? {
                Some(k) => k,
                None => {
                    let key = StreamKey::generate(rng);
                    insert_key_in(&tx, name, 1, &key, reserved, now_ms)?;
                    (1, key)
                }
            };
            tx.commit()?;
            drop(conn);
            state.insert(
                name.clone(),
                StreamState {
                    key_id,
                    key,
                    next_seq: reserved,
                    reserved,
                    dirty: true,
                },
            );
            let saved = store
                .meta(&counter_key(name))?
                .and_then(|v| serde_json::from_str::<SavedCounters>(&v).ok())
                .unwrap_or_default();
            counters.insert(
                name.clone(),
                StreamCounters {
                    published: saved.published,
                    bad_telegrams: saved.bad_telegrams,
                    dropped: saved.dropped,
                    last_bad: None,
                },
            );
        }
        let (changed, _) = watch::channel(0);
        Ok(StreamKeys {
            device,
            store,
            streams,
            state: Mutex::new(state),
            counters: Mutex::new(counters),
            changed,
        })
    }

    pub fn device(&self) -> DeviceId {
        self.device
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The configured stream names.
    pub fn streams(&self) -> &BTreeSet<String> {
        &self.streams
    }

    pub fn publishes(&self, stream: &str) -> bool {
        self.streams.contains(stream)
    }

    fn state(&self) -> MutexGuard<'_, BTreeMap<String, StreamState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes whenever key messages must be published.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Marks every stream's key messages for republishing (an owner subscribed, or the
    /// broker connection came back).
    pub fn mark_all_dirty(&self) {
        for s in self.state().values_mut() {
            s.dirty = true;
        }
        self.notify();
    }

    /// The current key id of `stream`.
    pub fn current_key_id(&self, stream: &str) -> Option<u32> {
        self.state().get(stream).map(|s| s.key_id)
    }

    /// Every stored key of `stream`, oldest first (tests and tools).
    pub fn keys(&self, stream: &str) -> Result<Vec<(u32, u64, StreamKey)>> {
        keys_in(&self.store.conn(), stream)
    }

    /// Whether key messages must go out before the next reading of `stream`.
    pub fn is_dirty(&self, stream: &str) -> bool {
        self.state().get(stream).is_some_and(|s| s.dirty)
    }

    /// Seals `reading` under the stream's current key with the next sequence number (reserving
    /// a block durably when needed). `Ok(None)` while key messages are unpublished: take the
    /// [`StreamKeys::plan`] first.
    pub fn seal(
        &self,
        stream: &str,
        reading: &Reading,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Option<SealedReading>> {
        let mut state = self.state();
        let s = state
            .get_mut(stream)
            .ok_or_else(|| Error::Internal(format!("no stream {stream}")))?;
        if s.dirty {
            return Ok(None);
        }
        if s.next_seq >= s.reserved {
            let reserved = s.next_seq + SEQ_BLOCK;
            self.store.conn().execute(
                "INSERT INTO stream_seq (stream, reserved) VALUES (?1, ?2)
                 ON CONFLICT (stream) DO UPDATE SET reserved = excluded.reserved",
                params![stream, clamp(reserved)],
            )?;
            s.reserved = reserved;
        }
        let seq = s.next_seq;
        let frame = wire::seal_reading(&self.device, stream, s.key_id, &s.key, seq, reading, rng)?;
        s.next_seq += 1;
        Ok(Some(SealedReading {
            frame,
            key_id: s.key_id,
            seq,
        }))
    }

    /// What to publish for `stream` now, if it is dirty; clears the flag (a change after this
    /// sets it again, so nothing is sealed under a key its messages did not announce).
    pub fn plan(&self, stream: &str) -> Result<Option<Plan>> {
        let mut state = self.state();
        let Some(s) = state.get_mut(stream) else {
            return Ok(None);
        };
        if !s.dirty {
            return Ok(None);
        }
        let consents = self.consents_of(stream)?;
        let keys = keys_in(&self.store.conn(), stream)?;
        s.dirty = false;
        let key_id = s.key_id;
        drop(state);
        let mut providers = Vec::new();
        let mut active = BTreeSet::new();
        for c in consents.iter().filter(|c| c.active()) {
            let request = c.request.request();
            let first = if request.history { 1 } else { c.first_key };
            active.insert(c.recipient());
            providers.push((c.recipient(), request.provider.kem.clone(), c.id, first));
        }
        let cleared: Vec<[u8; 32]> = consents
            .iter()
            .filter(|c| !c.active())
            .map(|c| c.recipient())
            .filter(|r| !active.contains(r))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(Some(Plan {
            stream: stream.to_owned(),
            key_id,
            providers,
            cleared,
            keys,
        }))
    }

    /// Puts a plan's stream back to dirty (its messages could not be published).
    pub fn unpublished(&self, stream: &str) {
        if let Some(s) = self.state().get_mut(stream) {
            s.dirty = true;
        }
    }

    /// The consents given for `stream`, in log order.
    pub fn consents_of(&self, stream: &str) -> Result<Vec<HeldConsent>> {
        Ok(self
            .consents()?
            .into_iter()
            .filter(|c| c.stream == stream)
            .collect())
    }

    /// Every consent this device holds, in log order.
    pub fn consents(&self) -> Result<Vec<HeldConsent>> {
        let conn = self.store.conn();
        let mut stmt = conn.prepare(
            "SELECT id, stream, request, given_seq, first_key, until_ms, ended, ended_ms
             FROM stream_consents ORDER BY given_seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<i64>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, stream, request, given_seq, first_key, until, ended, ended_ms) = row?;
            let id = <[u8; 32]>::try_from(id.as_slice())
                .map(ConsentId)
                .map_err(|_| Error::Internal("a stored consent id is not 32 bytes".into()))?;
            let request = SignedConsentRequest::from_bytes(&request)
                .map_err(|e| Error::Internal(format!("a stored consent request: {e}")))?;
            let ended = ended.map(|k| {
                let kind = match k.as_str() {
                    "revoked" => EndKind::Revoked,
                    "expired" => EndKind::Expired,
                    "transferred" => EndKind::Transferred,
                    _ => EndKind::Lapsed,
                };
                (kind, ended_ms.unwrap_or(0) as u64)
            });
            out.push(HeldConsent {
                id,
                stream,
                request,
                given_seq: given_seq as u64,
                first_key: first_key as u32,
                until_ms: until.map(|u| u as u64),
                ended,
            });
        }
        Ok(out)
    }

    /// The consent log entries this device accepted, by sequence number.
    pub fn held_entries(&self) -> Result<BTreeMap<u64, ConsentEntry>> {
        let conn = self.store.conn();
        let mut stmt = conn.prepare("SELECT seq, entry FROM consent_entries ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (seq, bytes) = row?;
            let entry = ConsentEntry::from_bytes(&bytes)
                .map_err(|e| Error::Internal(format!("stored consent entry {seq}: {e}")))?;
            out.insert(seq as u64, entry);
        }
        Ok(out)
    }

    /// Records an accepted entry and its effect in ONE durable transaction, rotating the
    /// stream's key when an active consent ends — all before the caller answers. Returns the
    /// streams whose key rotated.
    pub fn record(
        &self,
        entry: &ConsentEntry,
        effect: &Effect,
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<String>> {
        let mut state = self.state();
        let mut conn = self.store.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO consent_entries (seq, hash, entry) VALUES (?1, ?2, ?3)",
            params![clamp(entry.seq), &entry.hash()[..], entry.to_bytes()],
        )?;
        let mut rotate: Vec<String> = Vec::new();
        match effect {
            Effect::Given { request, ended } => {
                let r = request.request();
                let first_key = state.get(&r.stream).map_or(1, |s| s.key_id);
                tx.execute(
                    "INSERT OR IGNORE INTO stream_consents
                     (id, stream, request, given_seq, first_key, until_ms, ended, ended_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        &request.id().0[..],
                        r.stream,
                        request.to_bytes(),
                        clamp(entry.seq),
                        first_key,
                        r.until_ms.map(clamp),
                        ended.map(|(k, _)| k.name()),
                        ended.map(|(_, t)| clamp(t)),
                    ],
                )?;
            }
            Effect::Ended { id, kind, time_ms } => {
                if let Some(stream) = end_in(&tx, id, *kind, *time_ms)? {
                    rotate.push(stream);
                }
            }
            Effect::Nothing => {}
        }
        let new_keys = self.rotate_in(&tx, &state, &rotate, now_ms, rng)?;
        tx.commit()?;
        drop(conn);
        let changed = matches!(effect, Effect::Given { .. }) || !rotate.is_empty();
        self.install(&mut state, new_keys, effect);
        drop(state);
        if changed {
            self.notify();
        }
        Ok(rotate)
    }

    /// Ends every active consent whose `until` is at or before `now_ms` (the device's clock
    /// passed it) and rotates their streams, in one durable transaction. Returns the streams
    /// rotated.
    pub fn lapse_due(
        &self,
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<String>> {
        self.end_where(
            "ended IS NULL AND until_ms IS NOT NULL AND until_ms <= ?1",
            EndKind::Lapsed,
            now_ms,
            rng,
        )
    }

    /// Ends every active consent because the device changed hands, rotating their streams
    /// (the new owners never consented; the old providers must not read on).
    pub fn end_era(
        &self,
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<String>> {
        self.end_where(
            "ended IS NULL AND ?1 >= 0",
            EndKind::Transferred,
            now_ms,
            rng,
        )
    }

    /// Rotates every stream but `except` without ending any consent: an owner was removed,
    /// and the owner's copy they held must open nothing published from now on. Returns the
    /// streams rotated.
    pub fn rotate_all_except(
        &self,
        except: &[String],
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<String>> {
        let mut state = self.state();
        let streams: Vec<String> = state
            .keys()
            .filter(|s| !except.contains(s))
            .cloned()
            .collect();
        if streams.is_empty() {
            return Ok(streams);
        }
        let mut conn = self.store.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new_keys = self.rotate_in(&tx, &state, &streams, now_ms, rng)?;
        tx.commit()?;
        drop(conn);
        self.install(&mut state, new_keys, &Effect::Nothing);
        drop(state);
        self.notify();
        Ok(streams)
    }

    fn end_where(
        &self,
        condition: &str,
        kind: EndKind,
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<String>> {
        let due: Vec<(Vec<u8>, String)> = {
            let conn = self.store.conn();
            let mut stmt = conn.prepare(&format!(
                "SELECT id, stream FROM stream_consents WHERE {condition}"
            ))?;
            let rows = stmt.query_map([clamp(now_ms)], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = self.state();
        let mut conn = self.store.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rotate = BTreeSet::new();
        for (id, _) in &due {
            let id = <[u8; 32]>::try_from(id.as_slice())
                .map(ConsentId)
                .map_err(|_| Error::Internal("a stored consent id is not 32 bytes".into()))?;
            if let Some(stream) = end_in(&tx, &id, kind, now_ms)? {
                rotate.insert(stream);
            }
        }
        let rotate: Vec<String> = rotate.into_iter().collect();
        let new_keys = self.rotate_in(&tx, &state, &rotate, now_ms, rng)?;
        tx.commit()?;
        drop(conn);
        self.install(&mut state, new_keys, &Effect::Nothing);
        drop(state);
        if !rotate.is_empty() {
            self.notify();
        }
        Ok(rotate)
    }

    /// New keys for `streams`, written in `tx` (the caller holds the state lock, so `from_seq`
    /// is the first reading after the rotation).
    fn rotate_in(
        &self,
        tx: &Transaction<'_>,
        state: &BTreeMap<String, StreamState>,
        streams: &[String],
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<(String, u32, StreamKey)>> {
        let mut out = Vec::new();
        for stream in streams {
            let Some(s) = state.get(stream) else {
                continue;
            };
            let key = StreamKey::generate(rng);
            let key_id = s.key_id + 1;
            insert_key_in(tx, stream, key_id, &key, s.next_seq, now_ms)?;
            out.push((stream.clone(), key_id, key));
        }
        Ok(out)
    }

    fn install(
        &self,
        state: &mut BTreeMap<String, StreamState>,
        new_keys: Vec<(String, u32, StreamKey)>,
        effect: &Effect,
    ) {
        for (stream, key_id, key) in new_keys {
            if let Some(s) = state.get_mut(&stream) {
                s.key_id = key_id;
                s.key = key;
                s.dirty = true;
                tracing::info!(%stream, key_id, "stream key rotated");
            }
        }
        if let Effect::Given {
            request,
            ended: None,
        } = effect
        {
            if let Some(s) = state.get_mut(&request.request().stream) {
                s.dirty = true;
            }
        }
    }

    /// Counts a reading published.
    pub fn count_published(&self, stream: &str) {
        self.bump(stream, |c| c.published += 1);
    }

    /// Counts a bad telegram (never published) and why.
    pub fn count_bad(&self, stream: &str, why: String) {
        self.bump(stream, |c| {
            c.bad_telegrams += 1;
            c.last_bad = Some(why);
        });
    }

    /// Counts a reading dropped for a full broker queue.
    pub fn count_dropped(&self, stream: &str) {
        self.bump(stream, |c| c.dropped += 1);
    }

    fn bump(&self, stream: &str, f: impl FnOnce(&mut StreamCounters)) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counters.get_mut(stream) {
            f(c);
        }
    }

    pub fn counters(&self, stream: &str) -> StreamCounters {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .cloned()
            .unwrap_or_default()
    }

    /// Saves the counters for `latchkeyd status` (a lazy write: a crash loses a few seconds).
    pub fn save_counters(&self) {
        let all = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (stream, c) in all {
            let saved = SavedCounters {
                published: c.published,
                bad_telegrams: c.bad_telegrams,
                dropped: c.dropped,
                last_bad: c.last_bad,
                key_id: self.current_key_id(&stream),
            };
            if let Ok(text) = serde_json::to_string(&saved) {
                if let Err(e) = self.store.set_meta(&counter_key(&stream), &text) {
                    tracing::warn!(error = %e, "saving stream counters failed");
                }
            }
        }
    }
}

/// Counters as `meta` keeps them between runs (and `latchkeyd status` reads them).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SavedCounters {
    pub published: u64,
    pub bad_telegrams: u64,
    pub dropped: u64,
    pub last_bad: Option<String>,
    pub key_id: Option<u32>,
}

/// The counters saved for `stream` (for `latchkeyd status`, with the agent running or not).
pub fn saved_counters(store: &Store, stream: &str) -> Result<Option<SavedCounters>> {
    Ok(store
        .meta(&counter_key(stream))?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

/// Active consents for `stream` as stored (0 before the stream first ran).
pub fn active_consents(store: &Store, stream: &str) -> usize {
    store
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM stream_consents WHERE stream = ?1 AND ended IS NULL",
            [stream],
            |r| r.get::<_, i64>(0),
        )
        .map_or(0, |n| n as usize)
}

/// Marks consent `id` ended; returns its stream if it was active (so the stream rotates).
fn end_in(
    tx: &Transaction<'_>,
    id: &ConsentId,
    kind: EndKind,
    time_ms: u64,
) -> Result<Option<String>> {
    let stream: Option<String> = tx
        .query_row(
            "SELECT stream FROM stream_consents WHERE id = ?1 AND ended IS NULL",
            [&id.0[..]],
            |r| r.get(0),
        )
        .optional()?;
    if stream.is_some() {
        tx.execute(
            "UPDATE stream_consents SET ended = ?2, ended_ms = ?3 WHERE id = ?1",
            params![&id.0[..], kind.name(), clamp(time_ms)],
        )?;
    }
    Ok(stream)
}

fn reserved_in(tx: &Transaction<'_>, stream: &str) -> Result<u64> {
    Ok(tx
        .query_row(
            "SELECT reserved FROM stream_seq WHERE stream = ?1",
            [stream],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map_or(0, |v| v as u64))
}

fn latest_key_in(tx: &Transaction<'_>, stream: &str) -> Result<Option<(u32, StreamKey)>> {
    let row: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT key_id, key FROM stream_keys WHERE stream = ?1 ORDER BY key_id DESC LIMIT 1",
            [stream],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(id, key)| Ok((id as u32, key_from(&key)?)))
        .transpose()
}

fn keys_in(conn: &rusqlite::Connection, stream: &str) -> Result<Vec<(u32, u64, StreamKey)>> {
    let mut stmt = conn.prepare(
        "SELECT key_id, from_seq, key FROM stream_keys WHERE stream = ?1 ORDER BY key_id",
    )?;
    let rows = stmt.query_map([stream], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            zeroize::Zeroizing::new(r.get::<_, Vec<u8>>(2)?),
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, from, key) = row?;
        out.push((id as u32, from as u64, key_from(&key)?));
    }
    Ok(out)
}

fn key_from(bytes: &[u8]) -> Result<StreamKey> {
    let bytes: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
        bytes
            .try_into()
            .map_err(|_| Error::Internal("a stored stream key is not 32 bytes".into()))?,
    );
    Ok(StreamKey::from_bytes(*bytes))
}

fn insert_key_in(
    tx: &Transaction<'_>,
    stream: &str,
    key_id: u32,
    key: &StreamKey,
    from_seq: u64,
    now_ms: u64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO stream_keys (stream, key_id, key, from_seq, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![stream, key_id, &key.as_bytes()[..], clamp(from_seq), clamp(now_ms)],
    )?;
    Ok(())
}

fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Whether the entry's action is a consent given, and its request.
pub fn given_request(entry: &ConsentEntry) -> Option<&SignedConsentRequest> {
    match &entry.action {
        ConsentAction::Given(r) => Some(r),
        _ => None,
    }
}
