//! Who opened what, when: the events a device posts to its owners (docs/PROTOCOL.md §13).
//!
//! - [`subscribe`] sends each owned device a `latchkey.subscribe` command carrying this
//!   profile's **event KEM public key**. The secret half is made once per profile and kept in
//!   the OS keychain (service `org.latchkey.app`, user `<profile id>/event-kem`), never on disk.
//!   A device already subscribed with the current key is not asked again.
//! - [`fetch`] reads this owner's mailbox on the profile's nodes, keeps only event messages
//!   (proposals travel in the same mailbox and are read by [`crate::owners`]; each reader
//!   skips the other's messages by their first byte), checks each against the verified chain
//!   of a device this profile owns (device signature on the message and on the event), opens
//!   it, and stores it once per `(device, seq)`.
//! - [`list`] words them for people: who (the guest's name from the grants this profile
//!   issued), which door, what happened, when.
//!
//! The app calls the same three: `events::subscribe(&profile)` at start,
//! `events::fetch(&profile, 0)` on a timer or `fetch(&profile, 25)` as a long poll, and
//! `events::list(&profile, &EventFilter::default())` for its activity feed.

use latchkey_proto::codec::Codec;
use latchkey_proto::event::{self, EventKind, EventMessage, SUBSCRIBE_ACTION};
use latchkey_proto::grant::GrantId;
use latchkey_proto::hash;
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, PublicKey};
use rand_core::OsRng;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mailbox;
use crate::profile::Profile;
use crate::refusal;
use crate::store::DeviceRecord;

/// Created with the profile's own tables when the store opens (src/store.rs).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER,
    kind INTEGER NOT NULL,
    code INTEGER,
    grant_id TEXT NOT NULL,
    guest TEXT NOT NULL,
    action TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX IF NOT EXISTS events_received ON events (received_ms);
";

/// Pages read per node and call, so one call ends even if a mailbox is full.
const MAX_PAGES: usize = 16;

/// One event, verified and opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub device: DeviceId,
    pub seq: u64,
    /// The device's clock; `None` if it was not set.
    pub time_ms: Option<u64>,
    pub kind: EventKind,
    pub grant: GrantId,
    pub guest: PublicKey,
    pub action: String,
    /// When this profile took it in.
    pub received_ms: u64,
}

/// Which events [`list`] returns (newest first).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// A device name or id prefix, as other commands take it.
    pub device: Option<String>,
    /// Only events taken in after this time (ms).
    pub since_ms: Option<u64>,
    /// At most this many (all if `None`).
    pub limit: Option<usize>,
}

/// An event in plain words, for the CLI and the app's activity feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    pub device: String,
    /// The door's name as this profile knows it.
    pub door: String,
    pub seq: u64,
    /// `first_open`, `redeemed` or `refused`.
    pub kind: String,
    /// The reject code of a refusal.
    pub reject_code: Option<u16>,
    /// Who: the guest's name from the invitation this profile issued, else "a guest".
    pub guest_name: String,
    /// The guest key's short form.
    pub guest_key: String,
    /// The grant (64 hex characters).
    pub grant: String,
    pub action: String,
    /// What happened, in a sentence.
    pub what: String,
    /// When, by the device's clock (ms), if it had one.
    pub time_ms: Option<u64>,
    pub received_ms: u64,
}

/// What [`subscribe`] did, per device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubscribeReport {
    /// Devices that accepted the subscription now.
    pub subscribed: Vec<String>,
    /// Devices already subscribed with this profile's key.
    pub already: Vec<String>,
    /// Devices that could not be reached or refused, with why (retried next time).
    pub failed: Vec<(String, String)>,
}

fn kem_entry(profile: &Profile) -> String {
    format!("{}/event-kem", profile.id())
}

/// This profile's event KEM key, made and stored in the keychain the first time.
pub(crate) fn event_key(profile: &Profile) -> Result<KemSecretKey> {
    let entry = kem_entry(profile);
    if let Some(text) = profile.seeds.load(&entry)? {
        let bytes = Zeroizing::new(
            data_encoding::BASE64
                .decode(text.as_bytes())
                .map_err(|_| Error::Keychain("the stored event key is damaged".into()))?,
        );
        return KemSecretKey::from_bytes(&bytes)
            .map_err(|_| Error::Keychain("the stored event key is damaged".into()));
    }
    let key = KemSecretKey::generate(&mut OsRng);
    let text = Zeroizing::new(data_encoding::BASE64.encode(&key.to_bytes()));
    profile.seeds.save(&entry, &text)?;
    Ok(key)
}

fn subscribed_setting(device: &DeviceId) -> String {
    format!("events_subscribed:{device}")
}

/// What a device's subscription is remembered by: the owner key and the event key, so a new
/// key (or a new owner identity) subscribes again.
fn subscription_mark(owner: &PublicKey, key: &KemSecretKey) -> String {
    hex::encode(hash::labeled(
        "latchkey/v1/event-subscription-mark",
        &[&owner.to_bytes(), &key.public().commitment()],
    ))
}

/// Subscribes this profile to the events of every device it owns that is not subscribed with
/// its current key yet. A device that cannot be reached is listed in `failed` and asked again
/// next time.
pub async fn subscribe(profile: &Profile) -> Result<SubscribeReport> {
    subscribe_where(profile, None).await
}

/// [`subscribe`] for one device only (e.g. before watching its meter, which needs the device
/// to know this profile's event key: it seals the owner's copy of the stream key to it).
pub async fn subscribe_device(profile: &Profile, device: &DeviceId) -> Result<SubscribeReport> {
    subscribe_where(profile, Some(device)).await
}

async fn subscribe_where(profile: &Profile, only: Option<&DeviceId>) -> Result<SubscribeReport> {
    let me = profile.identity()?.public_key();
    let key = event_key(profile)?;
    let mark = subscription_mark(&me, &key);
    let args = event::subscribe_args(key.public());
    let mut report = SubscribeReport::default();
    for device in profile.devices()? {
        if !device.chain.state().is_owner(&me) || only.is_some_and(|d| *d != device.id) {
            continue;
        }
        let setting = subscribed_setting(&device.id);
        if profile.store.setting(&setting)?.as_deref() == Some(mark.as_str()) {
            report.already.push(device.name.clone());
            continue;
        }
        match profile
            .open(&device.id.to_string(), SUBSCRIBE_ACTION, &args)
            .await
        {
            Ok(r) if r.accepted() => {
                profile.store.set_setting(&setting, &mark)?;
                report.subscribed.push(device.name.clone());
            }
            Ok(r) => {
                let why = match &r.response.outcome {
                    latchkey_proto::command::Outcome::Rejected { code, reason } => {
                        refusal::explain(*code, reason).meaning
                    }
                    other => format!("{other:?}"),
                };
                report.failed.push((device.name.clone(), why));
            }
            Err(e) => report.failed.push((device.name.clone(), e.to_string())),
        }
    }
    Ok(report)
}

/// Opens one mailbox message if it is an event from a device this profile owns; `None` for
/// anything else (a proposal, junk, a device it does not know, a message that does not open).
fn open_message(
    bytes: &[u8],
    devices: &[DeviceRecord],
    me: &PublicKey,
    mailbox: &[u8; 32],
    key: &KemSecretKey,
) -> Option<latchkey_proto::event::Event> {
    if !EventMessage::is_event_message(bytes) {
        return None;
    }
    let message = match EventMessage::from_bytes(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "an event message did not decode; dropped");
            return None;
        }
    };
    let device = devices.iter().find(|d| d.id == message.device)?;
    let state = device.chain.state();
    if !state.is_owner(me) {
        return None;
    }
    match message.open(&state.identity, mailbox, key) {
        Ok(signed) => Some(signed.event),
        Err(e) => {
            tracing::warn!(device = %device.name, error = %e, "an event did not verify; dropped");
            None
        }
    }
}

/// Stores `event` unless `(device, seq)` is already stored; `true` if it is new.
fn store_event(profile: &Profile, e: &latchkey_proto::event::Event, now: u64) -> Result<bool> {
    let code = match e.kind {
        EventKind::Refused { code } => Some(code),
        _ => None,
    };
    let n = profile
        .store
        .conn()
        .execute(
            "INSERT OR IGNORE INTO events
             (device, seq, time_ms, kind, code, grant_id, guest, action, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                e.device.to_string(),
                e.seq as i64,
                e.time_ms.map(|t| t as i64),
                e.kind.tag(),
                code,
                hex::encode(e.grant.0),
                hex::encode(e.guest.to_bytes()),
                e.action,
                now as i64,
            ],
        )
        .map_err(|err| profile.store.wrap(err))?;
    Ok(n == 1)
}

/// Reads new events from this owner's mailbox on every node, verifies, opens and stores them
/// (each `(device, seq)` once), and returns the new ones, oldest first. With `wait_secs` > 0
/// and nothing new at once, it long-polls every node and returns when one brings something
/// (or the wait is over).
pub async fn fetch(profile: &Profile, wait_secs: u64) -> Result<Vec<Event>> {
    let me = profile.identity()?.public_key();
    let key = event_key(profile)?;
    let nodes = profile.nodes()?;
    if nodes.is_empty() {
        return Err(Error::NoNodes);
    }
    let mailbox_id = hash::owner_mailbox(&me);
    let mailbox_hex = hex::encode(mailbox_id);
    let cursor_key = |node: &str| format!("events_after:{node}");
    let cursor = |node: &str| -> Result<u64> {
        Ok(profile
            .store
            .setting(&cursor_key(node))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    };
    let devices = profile.devices()?;
    let mut new = Vec::new();
    let take = |messages: &[Vec<u8>], new: &mut Vec<Event>| -> Result<()> {
        let now = profile.now_ms();
        for bytes in messages {
            let Some(e) = open_message(bytes, &devices, &me, &mailbox_id, &key) else {
                continue;
            };
            if store_event(profile, &e, now)? {
                new.push(Event {
                    device: e.device,
                    seq: e.seq,
                    time_ms: e.time_ms,
                    kind: e.kind,
                    grant: e.grant,
                    guest: e.guest,
                    action: e.action,
                    received_ms: now,
                });
            }
        }
        Ok(())
    };
    // At once, from every node.
    for node in &nodes {
        let mut after = cursor(node)?;
        for _ in 0..MAX_PAGES {
            let Some(page) = mailbox::read(&profile.http, node, &mailbox_hex, after, 0).await
            else {
                break;
            };
            take(&page.messages, &mut new)?;
            let done = page.messages.is_empty() || page.next == after;
            after = page.next;
            profile
                .store
                .set_setting(&cursor_key(node), &after.to_string())?;
            if done {
                break;
            }
        }
    }
    if !new.is_empty() || wait_secs == 0 {
        return Ok(new);
    }
    // Nothing yet: wait on every node, take the first that answers with messages.
    let mut polls = Vec::new();
    for node in &nodes {
        let after = cursor(node)?;
        let (http, mailbox_hex) = (&profile.http, &mailbox_hex);
        polls.push(Box::pin(async move {
            let page = mailbox::read(http, node, mailbox_hex, after, wait_secs).await;
            (node.clone(), page)
        }));
    }
    while !polls.is_empty() {
        let ((node, page), _, rest) = futures::future::select_all(polls).await;
        polls = rest;
        if let Some(page) = page {
            take(&page.messages, &mut new)?;
            profile
                .store
                .set_setting(&cursor_key(&node), &page.next.to_string())?;
            if !page.messages.is_empty() {
                break;
            }
        }
    }
    Ok(new)
}

/// One stored event's columns: device, seq, time, kind, code, grant, guest, action, received.
type Row = (
    String,
    i64,
    Option<i64>,
    u8,
    Option<u16>,
    String,
    String,
    String,
    i64,
);

/// Stored events, newest first, in plain words.
pub fn list(profile: &Profile, filter: &EventFilter) -> Result<Vec<EventView>> {
    let device = match &filter.device {
        Some(q) => Some(profile.find_device(q)?.id.to_string()),
        None => None,
    };
    let limit = filter.limit.map_or(-1, |l| l as i64);
    let rows: Vec<Row> = {
        let conn = profile.store.conn();
        let mut stmt = conn
            .prepare(
                "SELECT device, seq, time_ms, kind, code, grant_id, guest, action, received_ms
                 FROM events WHERE (?1 IS NULL OR device = ?1) AND received_ms > ?2
                 ORDER BY COALESCE(time_ms, received_ms) DESC, seq DESC LIMIT ?3",
            )
            .map_err(|e| profile.store.wrap(e))?;
        let rows = stmt
            .query_map(
                params![device, filter.since_ms.unwrap_or(0) as i64 - 1, limit],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )
            .map_err(|e| profile.store.wrap(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| profile.store.wrap(e))?
    };
    let devices = profile.devices()?;
    let issued = profile.store.issued(None)?;
    let mut out = Vec::with_capacity(rows.len());
    for (device, seq, time_ms, kind, code, grant, guest, action, received_ms) in rows {
        let door = devices
            .iter()
            .find(|d| d.id.to_string() == device)
            .map_or_else(|| device.chars().take(12).collect(), |d| d.name.clone());
        let guest_name = issued
            .iter()
            .find(|r| hex::encode(r.grant.id().0) == grant)
            .map_or_else(|| "a guest".to_owned(), |r| r.guest_name.clone());
        let guest_key = hex::decode(&guest)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| PublicKey::from_bytes(b).ok())
            .map_or_else(|| guest.clone(), |k| k.short());
        let (kind_name, what) = match (kind, code) {
            (1, _) => (
                "first_open",
                format!("{guest_name} used the invitation for the first time ({action})"),
            ),
            (2, _) => (
                "redeemed",
                format!("{guest_name} redeemed the invitation on their phone"),
            ),
            (_, Some(code)) => {
                let words = refusal::explain(code, "");
                (
                    "refused",
                    format!("{guest_name} was refused ({action}): {}", words.meaning),
                )
            }
            _ => ("refused", format!("{guest_name} was refused ({action})")),
        };
        out.push(EventView {
            device,
            door,
            seq: seq as u64,
            kind: kind_name.into(),
            reject_code: code,
            guest_name,
            guest_key,
            grant,
            action,
            what,
            time_ms: time_ms.map(|t| t as u64),
            received_ms: received_ms as u64,
        });
    }
    Ok(out)
}

/// The newest `(device, seq)` stored, for callers that show "what is new" (none stored:
/// `None`).
pub fn latest(profile: &Profile) -> Result<Option<(String, u64)>> {
    profile
        .store
        .conn()
        .query_row(
            "SELECT device, seq FROM events ORDER BY received_ms DESC, seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
        )
        .optional()
        .map_err(|e| profile.store.wrap(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keychain::MemoryStore;
    use crate::profile::SystemClock;
    use latchkey_proto::keys::SigningKey;
    use std::sync::Arc;

    fn profile(dir: &std::path::Path) -> Profile {
        Profile::at(dir, Arc::new(MemoryStore::default()), Arc::new(SystemClock)).unwrap()
    }

    #[test]
    fn the_event_key_is_made_once_and_kept_in_the_keychain_only() {
        let tmp = tempfile::tempdir().unwrap();
        let p = profile(tmp.path());
        let first = event_key(&p).unwrap();
        let again = event_key(&p).unwrap();
        assert_eq!(first.public(), again.public());
        // Nothing of the secret reaches the profile directory.
        let secret = first.to_bytes();
        for entry in std::fs::read_dir(tmp.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes
                .windows(32)
                .any(|w| w == &secret[..32] || w == &secret[32..64]));
        }
    }

    #[test]
    fn stored_events_are_deduplicated_by_device_and_sequence() {
        let tmp = tempfile::tempdir().unwrap();
        let p = profile(tmp.path());
        let mut rng = OsRng;
        let device_key = SigningKey::generate(&mut rng);
        let e = latchkey_proto::event::Event {
            device: DeviceId::from_identity(&device_key.public_key()),
            seq: 1,
            time_ms: Some(5),
            kind: EventKind::FirstOpen,
            grant: GrantId([1; 32]),
            guest: SigningKey::generate(&mut rng).public_key(),
            action: "unlock".into(),
        };
        assert!(store_event(&p, &e, 10).unwrap());
        assert!(!store_event(&p, &e, 11).unwrap());
        let refused = latchkey_proto::event::Event {
            seq: 2,
            kind: EventKind::Refused { code: 11 },
            ..e.clone()
        };
        assert!(store_event(&p, &refused, 12).unwrap());
        let views = list(&p, &EventFilter::default()).unwrap();
        assert_eq!(views.len(), 2);
        // Newest first: same device time, higher sequence first.
        assert_eq!(views[0].kind, "refused");
        assert_eq!(views[1].kind, "first_open");
        assert_eq!(views[0].reject_code, Some(11));
        assert!(views[0].what.contains("revoked"), "{}", views[0].what);
        assert_eq!(views[1].guest_name, "a guest");
    }

    #[test]
    fn proposals_are_not_events() {
        let mut rng = OsRng;
        let key = KemSecretKey::generate(&mut rng);
        let me = SigningKey::generate(&mut rng).public_key();
        // An op's first byte is its version, 1: never taken for an event.
        let op_like = [1u8; 300];
        assert!(open_message(&op_like, &[], &me, &[0; 32], &key).is_none());
    }
}
