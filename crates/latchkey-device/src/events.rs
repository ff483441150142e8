//! Events for owners (docs/PROTOCOL.md §13): subscriptions, the durable outbox and the
//! poster.
//!
//! The pipeline only *notes* what happened ([`EventNote`], a non-blocking channel send) when
//! it writes a guest's decision; everything else runs here, off the command's path: deciding
//! whether an accepted command is the grant's first, numbering, signing, sealing to every
//! subscribed owner (one hybrid KEM encapsulation each), writing the outbox, and posting to
//! each owner's mailbox on the relay nodes until one stores it. So an event never delays an
//! answer; a device that crashes between answering and writing the outbox (a few
//! milliseconds) loses that event, but never its audit entry.
//!
//! Subscriptions are kept per owner key and used only while the key is a current owner: a key
//! no longer an owner is deleted the next time events are built.

use std::sync::Arc;
use std::time::Duration;

use latchkey_proto::chain::ChainState;
use latchkey_proto::codec::Codec;
use latchkey_proto::event::{self, Event, EventKind};
use latchkey_proto::grant::GrantId;
use latchkey_proto::hash;
use latchkey_proto::kem::KemPublicKey;
use latchkey_proto::keys::{PublicKey, SigningKey};
use rand_core::{CryptoRng, RngCore};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, watch};

use crate::error::Result;
use crate::store::Store;

/// Notes waiting for the poster; beyond this the pipeline drops a note (and says so in the
/// log) rather than wait.
pub const NOTE_QUEUE: usize = 1024;
/// Messages the outbox keeps at most; the oldest go first when it is full (an owner's
/// mailbox also keeps only 64 live messages per device).
pub const OUTBOX_CAP: u64 = 2048;
/// An undelivered message older than this is dropped: no node will keep it longer than an
/// hour anyway, and the audit log still holds what happened.
pub const OUTBOX_MAX_AGE_MS: u64 = 24 * 3600 * 1000;
/// Lifetime asked of a node for an event (its maximum).
pub const EVENT_TTL_SECS: u64 = 3600;
/// How often undelivered messages are retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

const SEQ_KEY: &str = "event_seq";

/// What the pipeline saw, before it is known whether (and to whom) it is an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// `FirstOpen` here means "a guest command was accepted": the poster keeps it only if it
    /// is the grant's first.
    pub kind: EventKind,
    pub grant: GrantId,
    pub guest: PublicKey,
    pub action: String,
    pub time_ms: Option<u64>,
}

/// The pipeline's end of the note channel.
pub type NoteSender = mpsc::Sender<EventNote>;
pub type NoteReceiver = mpsc::Receiver<EventNote>;

pub fn channel() -> (NoteSender, NoteReceiver) {
    mpsc::channel(NOTE_QUEUE)
}

/// Records `owner`'s event key (replacing an earlier one).
pub fn subscribe(store: &Store, owner: &PublicKey, kem: &KemPublicKey) -> Result<()> {
    store.conn().execute(
        "INSERT INTO event_subscriptions (owner, kem) VALUES (?1, ?2)
         ON CONFLICT (owner) DO UPDATE SET kem = excluded.kem",
        params![owner.to_bytes().to_vec(), kem.to_bytes()],
    )?;
    Ok(())
}

/// The subscriptions of current owners; those of keys no longer owners are deleted.
pub fn subscriptions(store: &Store, state: &ChainState) -> Result<Vec<(PublicKey, KemPublicKey)>> {
    let conn = store.conn();
    let rows: Vec<(Vec<u8>, Vec<u8>)> = {
        let mut stmt = conn.prepare("SELECT owner, kem FROM event_subscriptions ORDER BY owner")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut keep = Vec::new();
    for (owner_bytes, kem) in rows {
        let parsed = <[u8; 32]>::try_from(owner_bytes.as_slice())
            .ok()
            .and_then(|b| PublicKey::from_bytes(b).ok())
            .zip(KemPublicKey::from_bytes(&kem).ok());
        match parsed {
            Some((owner, kem)) if state.is_owner(&owner) => keep.push((owner, kem)),
            _ => {
                conn.execute(
                    "DELETE FROM event_subscriptions WHERE owner = ?1",
                    [&owner_bytes],
                )?;
            }
        }
    }
    Ok(keep)
}

/// Turns a note into outbox messages, one per subscribed current owner. Returns how many
/// were written (0 when the note is not an event: a grant's second use, or nobody
/// subscribed).
pub fn prepare(
    store: &Store,
    state: &ChainState,
    identity: &SigningKey,
    note: &EventNote,
    now_ms: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<usize> {
    if note.kind == EventKind::FirstOpen {
        let first = store.conn().execute(
            "INSERT OR IGNORE INTO event_opened (grant_id) VALUES (?1)",
            [note.grant.0.to_vec()],
        )?;
        if first == 0 {
            return Ok(0);
        }
    }
    let subscribers = subscriptions(store, state)?;
    if subscribers.is_empty() {
        return Ok(0);
    }
    let device = state.device;
    let mut conn = store.conn();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let seq: u64 = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [SEQ_KEY], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        + 1;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![SEQ_KEY, seq.to_string()],
    )?;
    let signed = Event {
        device,
        seq,
        time_ms: note.time_ms,
        kind: note.kind,
        grant: note.grant,
        guest: note.guest,
        action: note.action.clone(),
    }
    .sign(identity)?;
    for (owner, kem) in &subscribers {
        let message =
            event::build_message(&signed, kem, hash::owner_mailbox(owner), identity, rng)?;
        tx.execute(
            "INSERT INTO event_outbox (owner, message, created_ms) VALUES (?1, ?2, ?3)",
            params![owner.to_bytes().to_vec(), message.to_bytes(), now_ms as i64],
        )?;
    }
    // Full: the oldest messages go, so a flood of refusals cannot grow the disk.
    tx.execute(
        "DELETE FROM event_outbox WHERE id NOT IN
         (SELECT id FROM event_outbox ORDER BY id DESC LIMIT ?1)",
        [OUTBOX_CAP as i64],
    )?;
    tx.commit()?;
    Ok(subscribers.len())
}

/// One undelivered message.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub owner: PublicKey,
    pub message: Vec<u8>,
}

/// Undelivered messages, oldest first; those past [`OUTBOX_MAX_AGE_MS`] are dropped.
pub fn pending(store: &Store, now_ms: u64) -> Result<Vec<Pending>> {
    let conn = store.conn();
    let dropped = conn.execute(
        "DELETE FROM event_outbox WHERE created_ms < ?1",
        [now_ms.saturating_sub(OUTBOX_MAX_AGE_MS) as i64],
    )?;
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "events no node took within a day were dropped from the outbox"
        );
    }
    let mut stmt = conn.prepare("SELECT id, owner, message FROM event_outbox ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, owner, message) = row?;
        if let Some(owner) = <[u8; 32]>::try_from(owner.as_slice())
            .ok()
            .and_then(|b| PublicKey::from_bytes(b).ok())
        {
            out.push(Pending { id, owner, message });
        }
    }
    Ok(out)
}

pub fn delivered(store: &Store, id: i64) -> Result<()> {
    store
        .conn()
        .execute("DELETE FROM event_outbox WHERE id = ?1", [id])?;
    Ok(())
}

/// Messages waiting in the outbox.
pub fn outbox_len(store: &Store) -> Result<u64> {
    Ok(store
        .conn()
        .query_row("SELECT COUNT(*) FROM event_outbox", [], |r| {
            r.get::<_, i64>(0)
        })? as u64)
}

/// Runs the poster until shutdown: each note becomes outbox messages, and the outbox is
/// posted after every note and every [`RETRY_EVERY`] while it is not empty.
pub async fn run(
    agent: Arc<crate::agent::Agent>,
    mut notes: NoteReceiver,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let note = tokio::select! {
            n = notes.recv() => n,
            _ = tokio::time::sleep(RETRY_EVERY) => None,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        if let Some(note) = note {
            let p = agent.pipeline.clone();
            let made = tokio::task::spawn_blocking(move || {
                let state = p.view().chain.state().clone();
                let now = crate::clock::wall_ms();
                prepare(
                    p.store(),
                    &state,
                    &p.keys().identity,
                    &note,
                    now,
                    &mut rand_core::OsRng,
                )
            })
            .await;
            match made {
                Ok(Ok(n)) if n > 0 => tracing::info!(owners = n, "event queued for the owners"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "building an event failed"),
                Err(e) => tracing::error!(error = %e, "building an event panicked"),
            }
        }
        deliver(&agent).await;
    }
}

/// Posts every pending message to its owner's mailbox on each relay node; a message is
/// deleted once one node stored it.
pub async fn deliver(agent: &crate::agent::Agent) {
    let store = agent.store().clone();
    let pending =
        match tokio::task::spawn_blocking(move || pending(&store, crate::clock::wall_ms())).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the event outbox failed");
                return;
            }
            Err(_) => return,
        };
    for message in pending {
        let mailbox = hex::encode(hash::owner_mailbox(&message.owner));
        let mut stored = false;
        for node in &agent.relay_nodes {
            let url = format!("{node}/v1/mailboxes/{mailbox}");
            let result = agent
                .http
                .post(&url)
                .timeout(Duration::from_millis(agent.knobs.timeout_ms.max(1)))
                .header("x-latchkey-ttl-secs", EVENT_TTL_SECS)
                .header("content-type", "application/octet-stream")
                .body(message.message.clone())
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => stored = true,
                Ok(r) => {
                    tracing::debug!(%node, status = %r.status(), "a node refused an event; retrying later")
                }
                Err(e) => {
                    tracing::debug!(%node, error = %e.without_url(), "posting an event failed; retrying later")
                }
            }
        }
        if stored {
            if let Err(e) = delivered(agent.store(), message.id) {
                tracing::warn!(error = %e, "removing a delivered event from the outbox failed");
            }
        }
    }
}
