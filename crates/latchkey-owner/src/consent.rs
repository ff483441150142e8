//! Consent to read a device's data stream (docs/PROTOCOL.md §14): a provider's signed request
//! (a `LATCHKEY://C/…` link) is kept as pending until the owner answers it; the answer is an
//! entry of the device's hash-linked consent log, signed by this owner, stored on a quorum of
//! the registry nodes and then handed to the device as the owner command `latchkey.consent`.
//!
//! - Pending requests are public data (a provider's request is not secret): they sit in the
//!   profile store, table `consent_requests`, with every request this profile has seen given in
//!   a log (so `revoke ID` finds the device of a consent a co-owner gave).
//! - The log is never taken from the store: each approve, revoke or listing fetches it from the
//!   nodes and verifies it against the device's verified ownership chain
//!   ([`latchkey_quorum::QuorumClient::consent_log`]); a node that serves a log that does not
//!   verify or conflicts is named in a warning and not believed.
//! - The device is told over the same routes as any owner command (direct on the LAN, else
//!   the nodes' mailboxes). One it cannot reach now keeps the entry in the **outbox**
//!   (`consent_outbox`), sent in log order at the next successful contact: any later
//!   [`Profile::open`] of that device, [`Profile::consents`], or
//!   [`Profile::consent_outbox_flush`]. Views say which entries are still waiting.

use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Outcome, RejectCode};
use latchkey_proto::consent::{
    purpose, ConsentAction, ConsentEntry, ConsentId, ConsentLog, ConsentStatus, EndKind, Ended,
    SignedConsentRequest, CONSENT_ACTION,
};
use latchkey_proto::keys::{DeviceId, PublicKey, SigningKey};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::profile::Profile;
use crate::refusal;
use crate::store::DeviceRecord;

/// Created with the profile's own tables when the store opens (src/store.rs).
pub(crate) const SCHEMA: &str = "
-- Provider requests this profile has seen (public data). `state`: pending, dismissed, given
-- (in a log this profile fetched, by this owner or another).
CREATE TABLE IF NOT EXISTS consent_requests (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    request BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    state TEXT NOT NULL
);
-- Log entries this profile signed and the device must be told. `state`: waiting (not told
-- yet), delivered, refused (the device answered no; `note` has its words).
CREATE TABLE IF NOT EXISTS consent_outbox (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entry BLOB NOT NULL,
    queued_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    tries INTEGER NOT NULL,
    last_try_ms INTEGER,
    note TEXT,
    code INTEGER,
    PRIMARY KEY (device, seq)
);
";

/// How long one delivery waits for the device's answer through the mailboxes: a device that
/// is offline should not hold an approval for the full relay timeout; the outbox retries.
const DELIVERY_WAIT: Duration = Duration::from_secs(8);
/// Shortest id prefix accepted for a consent or request.
const MIN_PREFIX: usize = 8;
/// Posting a new entry races other owners for its sequence number: tries before giving up.
const POST_TRIES: usize = 3;

/// A provider's request in plain words (pending, or the request behind a consent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentRequestView {
    /// The consent id (64 hex characters).
    pub id: String,
    /// The device (`lkdev1…`).
    pub device: String,
    /// The device's name in this profile.
    pub device_name: String,
    pub stream: String,
    pub provider_name: String,
    pub provider_url: String,
    /// The provider's signing key (`lkpk1…`).
    pub provider_key: String,
    pub purpose_code: u16,
    /// `insights`, `billing`, …
    pub purpose_label: String,
    /// The provider's own words.
    pub purpose: String,
    pub retention_days: u32,
    /// When the consent ends by itself (`None`: until withdrawn).
    pub until_ms: Option<u64>,
    /// Whether readings from before the consent are asked for too.
    pub history: bool,
    /// Terms the provider states (recorded, not settled).
    pub terms: Option<String>,
    /// Who asks what, why and for how long, in one sentence.
    pub summary: String,
}

/// A consent given in a device's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentView {
    pub id: String,
    pub request: ConsentRequestView,
    /// `active`, `revoked`, `expired` (its `until` passed) or `ended` (the device changed
    /// hands).
    pub state: String,
    pub given_ms: u64,
    /// The owner who gave it (`lkpk1…`).
    pub given_by: String,
    pub ended_ms: Option<u64>,
    /// Whether the device has been told this consent's latest change: `delivered`, `waiting`
    /// (in this profile's outbox: told at the next successful contact), `refused` (the device
    /// answered no: see `delivery_note`) or `unknown` (signed by another owner's profile).
    pub delivery: String,
    /// What the delivery state means, in words (`None` when delivered).
    pub delivery_note: Option<String>,
}

/// One entry of a device's verified consent log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentLogEntryView {
    pub seq: u64,
    pub time_ms: u64,
    /// `given`, `revoked` or `expired`.
    pub kind: String,
    pub consent_id: String,
    pub provider_name: String,
    pub stream: String,
    /// The purpose label and the provider's words, e.g. `insights: monthly report`.
    pub purpose: String,
    /// The owner who signed it (`lkpk1…`).
    pub signer: String,
    /// Whether that owner is this profile.
    pub signer_is_me: bool,
    /// The entry's hash (hex): the next entry links to it.
    pub hash: String,
}

/// What a flush of the outbox did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxReport {
    pub delivered: usize,
    pub refused: usize,
    pub waiting: usize,
}

fn show_time(ms: u64) -> String {
    let zone = jiff::tz::TimeZone::system();
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_zoned(zone).strftime("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// The one plain sentence a person reads before approving.
fn summary(req: &SignedConsentRequest, device_name: &str) -> String {
    let r = req.request();
    let who = if r.provider.url.is_empty() {
        r.provider.name.clone()
    } else {
        format!("{} ({})", r.provider.name, r.provider.url)
    };
    let until = match r.until_ms {
        Some(t) => format!("until {}", show_time(t)),
        None => "until you withdraw it".into(),
    };
    let history = if r.history {
        "including readings from before today's consent"
    } else {
        "only readings from now on"
    };
    let keep = match r.retention_days {
        0 => "not keeping them".to_owned(),
        1 => "keeping them 1 day".to_owned(),
        d => format!("keeping them {d} days"),
    };
    let mut s = format!(
        "{who} asks to read the live readings of stream {} of {device_name}, for {}: \"{}\"; \
         {keep}; {until}; {history}",
        r.stream,
        purpose::label(r.purpose_code),
        r.purpose
    );
    if let Some(terms) = &r.terms {
        s.push_str(&format!(
            "; terms: \"{terms}\" (recorded, not settled by Latchkey)"
        ));
    }
    s.push('.');
    s
}

fn request_view(req: &SignedConsentRequest, device_name: &str) -> ConsentRequestView {
    let r = req.request();
    ConsentRequestView {
        id: req.id().to_string(),
        device: r.device.to_string(),
        device_name: device_name.to_owned(),
        stream: r.stream.clone(),
        provider_name: r.provider.name.clone(),
        provider_url: r.provider.url.clone(),
        provider_key: r.provider.signing.to_string(),
        purpose_code: r.purpose_code,
        purpose_label: purpose::label(r.purpose_code).to_owned(),
        purpose: r.purpose.clone(),
        retention_days: r.retention_days,
        until_ms: r.until_ms,
        history: r.history,
        terms: r.terms.clone(),
        summary: summary(req, device_name),
    }
}

fn state_word(ended: &Option<Ended>) -> &'static str {
    match ended.as_ref().map(|e| &e.kind) {
        None => "active",
        Some(EndKind::Revoked) => "revoked",
        Some(EndKind::Expired) | Some(EndKind::Lapsed(_)) => "expired",
        Some(EndKind::Transferred) => "ended",
    }
}

/// Whether `text` is a consent link rather than an id.
fn is_link(text: &str) -> bool {
    text.trim()
        .get(..13)
        .is_some_and(|p| p.eq_ignore_ascii_case("latchkey://c/"))
}

fn prefix_of(query: &str) -> Result<String> {
    let q = query.trim().to_ascii_lowercase();
    if q.len() < MIN_PREFIX || q.len() > 64 || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::UnknownConsent(query.trim().to_owned()));
    }
    Ok(q)
}

impl Profile {
    /// The device `request` is for, if this profile owns it; refused in words otherwise.
    fn owned_device_for(&self, req: &SignedConsentRequest, me: &PublicKey) -> Result<DeviceRecord> {
        let device = req.request().device;
        let refuse = || Error::ConsentNotMyDevice {
            device: device.to_string(),
        };
        let text = device.to_string();
        let record = self
            .store
            .devices_where(|id, _| id == text)?
            .into_iter()
            .next()
            .ok_or_else(refuse)?;
        if !record.chain.state().is_owner(me) {
            return Err(refuse());
        }
        latchkey_proto::stream::validate_stream_name(&req.request().stream)
            .map_err(|_| Error::BadStream(req.request().stream.clone()))?;
        Ok(record)
    }

    /// Reads a request link, verifies it and checks it is for a device this profile owns,
    /// without keeping anything: what a front shows before asking "approve?".
    pub fn consent_request_preview(&self, link: &str) -> Result<ConsentRequestView> {
        let req = SignedConsentRequest::from_link(link.trim()).map_err(Error::BadConsentLink)?;
        let device = self.owned_device_for(&req, &self.identity()?.public_key())?;
        Ok(request_view(&req, &device.name))
    }

    /// Verifies a provider's request link and keeps it as pending (again, if it was
    /// dismissed). Refused, with nothing kept, when it does not verify, is for a device this
    /// profile does not own, or names no valid stream.
    pub fn consent_request_add(&self, link: &str) -> Result<ConsentRequestView> {
        let req = SignedConsentRequest::from_link(link.trim()).map_err(Error::BadConsentLink)?;
        let device = self.owned_device_for(&req, &self.identity()?.public_key())?;
        self.keep_pending(&req, &device)?;
        Ok(request_view(&req, &device.name))
    }

    fn keep_pending(&self, req: &SignedConsentRequest, device: &DeviceRecord) -> Result<()> {
        self.store
            .stmt(
                "INSERT INTO consent_requests (id, device, request, received_ms, state)
                 VALUES (?1, ?2, ?3, ?4, 'pending')
                 ON CONFLICT(id) DO UPDATE SET state = 'pending' WHERE state = 'dismissed'",
            )?
            .execute(params![
                req.id().to_string(),
                device.id.to_string(),
                req.to_bytes(),
                self.now_ms() as i64
            ])
            .map_err(|e| self.store.wrap(e))?;
        Ok(())
    }

    /// Requests waiting for an answer, oldest first.
    pub fn consent_requests(&self) -> Result<Vec<ConsentRequestView>> {
        let rows = self.request_rows("state = 'pending'", "")?;
        let devices = self.devices()?;
        Ok(rows
            .iter()
            .map(|(_, req, _)| {
                let name = devices
                    .iter()
                    .find(|d| d.id == req.request().device)
                    .map_or_else(|| req.request().device.short(), |d| d.name.clone());
                request_view(req, &name)
            })
            .collect())
    }

    /// Drops a pending request (by id or a prefix of 8+ hex characters) without answering it.
    pub fn consent_request_dismiss(&self, id: &str) -> Result<()> {
        let (id, _, state) = self.find_request(id)?;
        if state != "pending" {
            return Err(Error::ConsentNotPending { id, state });
        }
        self.store
            .stmt("UPDATE consent_requests SET state = 'dismissed' WHERE id = ?1")?
            .execute(params![id])
            .map_err(|e| self.store.wrap(e))?;
        Ok(())
    }

    /// `(id, request, state)` rows matching `filter` (an SQL condition on `state`, `id`).
    fn request_rows(
        &self,
        filter: &str,
        prefix: &str,
    ) -> Result<Vec<(String, SignedConsentRequest, String)>> {
        let conn = self.store.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT id, request, state FROM consent_requests
                 WHERE ({filter}) AND id LIKE ?1 || '%' ORDER BY received_ms, id"
            ))
            .map_err(|e| self.store.wrap(e))?;
        let rows = stmt
            .query_map(params![prefix], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.store.wrap(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.store.wrap(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, bytes, state) in rows {
            // The file is not trusted: a row that does not decode and verify is skipped.
            match SignedConsentRequest::from_bytes(&bytes) {
                Ok(req) if req.verify().is_ok() && req.id().to_string() == id => {
                    out.push((id, req, state))
                }
                _ => tracing::warn!(%id, "a stored consent request does not verify; ignored"),
            }
        }
        Ok(out)
    }

    /// The one request whose id starts with `query`.
    fn find_request(&self, query: &str) -> Result<(String, SignedConsentRequest, String)> {
        let prefix = prefix_of(query)?;
        let mut rows = self.request_rows("1", &prefix)?;
        match rows.len() {
            0 => Err(Error::UnknownConsent(query.trim().to_owned())),
            1 => Ok(rows.remove(0)),
            _ => Err(Error::AmbiguousConsent(query.trim().to_owned())),
        }
    }

    /// [`Self::mark_given`] for the consents of `log` not yet known as given, in one
    /// transaction (one durable write, none when nothing is new).
    fn mark_all_given(&self, log: &ConsentLog) -> Result<()> {
        let known: std::collections::HashSet<String> = {
            let conn = self.store.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM consent_requests WHERE device = ?1 AND state = 'given'",
                )
                .map_err(|e| self.store.wrap(e))?;
            let ids = stmt
                .query_map(params![log.device().to_string()], |r| r.get(0))
                .map_err(|e| self.store.wrap(e))?
                .collect::<rusqlite::Result<_>>()
                .map_err(|e| self.store.wrap(e))?;
            ids
        };
        let new: Vec<ConsentStatus> = log
            .consents()
            .into_iter()
            .filter(|s| !known.contains(&s.id.to_string()))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let conn = self.store.conn();
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.store.wrap(e))?;
        let done = new.iter().try_for_each(|s| self.mark_given(&s.request));
        let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
        conn.execute_batch(end).map_err(|e| self.store.wrap(e))?;
        done
    }

    fn mark_given(&self, req: &SignedConsentRequest) -> Result<()> {
        self.store
            .stmt(
                "INSERT INTO consent_requests (id, device, request, received_ms, state)
                 VALUES (?1, ?2, ?3, ?4, 'given')
                 ON CONFLICT(id) DO UPDATE SET state = 'given'",
            )?
            .execute(params![
                req.id().to_string(),
                req.request().device.to_string(),
                req.to_bytes(),
                self.now_ms() as i64
            ])
            .map(|_| ())
            .map_err(|e| self.store.wrap(e))
    }

    /// The device record, refreshed from the nodes, if this profile is a current owner.
    async fn owned_refreshed(&self, device: &DeviceId, me: &PublicKey) -> Result<DeviceRecord> {
        let text = device.to_string();
        let record = self
            .store
            .devices_where(|id, _| id == text)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::UnknownDevice(text.clone()))?;
        let record = self.refresh_device(record).await?;
        if !record.chain.state().is_owner(me) {
            return Err(Error::NotOwner { device: text });
        }
        Ok(record)
    }

    /// The device's consent log from a quorum of nodes, verified against its chain.
    async fn fetch_consent_log(&self, device: &DeviceRecord) -> Result<ConsentLog> {
        let report = self.quorum()?.consent_log(&device.chain).await?;
        for node in report.lying.iter().chain(&report.conflicting) {
            tracing::warn!(
                device = %device.name,
                %node,
                "a node served a consent log that does not verify or conflicts; not believed"
            );
        }
        // Every request given is remembered, so `revoke ID` finds its device later.
        self.mark_all_given(&report.log)?;
        Ok(report.log)
    }

    /// Signs `action` as the next entry of the device's log and stores it on a quorum of
    /// nodes; another owner's entry taking the same place first makes it try on top of that.
    async fn post_next(
        &self,
        device: &DeviceRecord,
        mut log: ConsentLog,
        action: ConsentAction,
        tell_device: bool,
        key: &SigningKey,
    ) -> Result<(ConsentEntry, ConsentLog)> {
        let quorum = self.quorum()?;
        let mut last = None;
        for _ in 0..POST_TRIES {
            let entry = log.next_entry(&device.chain, key, self.now_ms(), action.clone())?;
            match quorum.post_consent(&entry).await {
                Ok(_) => {
                    if tell_device {
                        self.queue_entry(&entry)?;
                    }
                    log.append(&device.chain, entry.clone())?;
                    return Ok((entry, log));
                }
                Err(e) => {
                    tracing::info!(error = %e, "posting a consent entry failed; re-reading the log");
                    last = Some(e);
                    log = self.fetch_consent_log(device).await?;
                }
            }
        }
        Err(Error::ConsentNotPublished {
            why: last.map_or_else(|| "no answer".into(), |e| e.to_string()),
        })
    }

    fn queue_entry(&self, entry: &ConsentEntry) -> Result<()> {
        self.store.stmt("INSERT OR IGNORE INTO consent_outbox
                 (device, seq, entry, queued_ms, state, tries) VALUES (?1, ?2, ?3, ?4, 'waiting', 0)")?.execute(params![
                    entry.device.to_string(),
                    entry.seq as i64,
                    entry.to_bytes(),
                    self.now_ms() as i64
                ],
            )
            .map(|_| ())
            .map_err(|e| self.store.wrap(e))
    }

    /// Whether entries for `device` wait in the outbox (a cheap check for every open).
    pub(crate) fn consent_outbox_waiting(&self, device: &DeviceId) -> bool {
        let conn = self.store.conn();
        let Ok(mut waiting) = conn.prepare_cached(
            "SELECT 1 FROM consent_outbox WHERE device = ?1 AND state = 'waiting' LIMIT 1",
        ) else {
            return false;
        };
        waiting
            .query_row(params![device.to_string()], |_| Ok(()))
            .optional()
            .ok()
            .flatten()
            .is_some()
    }

    /// Tells the device `record` every waiting entry of this profile's outbox, in log order,
    /// stopping at the first it cannot reach (the rest wait for the next contact).
    pub(crate) async fn flush_device(
        &self,
        record: &DeviceRecord,
        key: &SigningKey,
    ) -> Result<OutboxReport> {
        let rows: Vec<(i64, Vec<u8>)> = {
            let conn = self.store.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, entry FROM consent_outbox WHERE device = ?1 AND state = 'waiting'
                     ORDER BY seq",
                )
                .map_err(|e| self.store.wrap(e))?;
            let rows = stmt
                .query_map(params![record.id.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(|e| self.store.wrap(e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.store.wrap(e))?;
            rows
        };
        let mut report = OutboxReport::default();
        if rows.is_empty() {
            return Ok(report);
        }
        let nodes = self.nodes()?;
        let mut rest = rows.len();
        for (seq, bytes) in rows {
            let set = |state: &str, note: Option<String>, code: Option<u16>| -> Result<()> {
                self.store
                    .stmt(
                        "UPDATE consent_outbox SET state = ?3, tries = tries + 1,
                         last_try_ms = ?4, note = ?5, code = ?6 WHERE device = ?1 AND seq = ?2",
                    )?
                    .execute(params![
                        record.id.to_string(),
                        seq,
                        state,
                        self.now_ms() as i64,
                        note,
                        code
                    ])
                    .map(|_| ())
                    .map_err(|e| self.store.wrap(e))
            };
            let sent = self
                .send_within(
                    record.clone(),
                    key,
                    &[],
                    CONSENT_ACTION,
                    &bytes,
                    &nodes,
                    DELIVERY_WAIT,
                )
                .await;
            match sent {
                // A device that already holds the entry (our earlier copy got through, its
                // answer lost) answers accepted too (docs/PROTOCOL.md §14.9).
                Ok(r) if r.accepted() || r.outcome_unknown() => {
                    set("delivered", None, None)?;
                    report.delivered += 1;
                }
                Ok(r) => {
                    let (words, code) = match &r.response.outcome {
                        Outcome::Rejected { code, reason } => {
                            let w = refusal::explain(*code, reason);
                            (
                                format!("{} {} (code {code})", w.meaning, w.what_to_do),
                                Some(*code),
                            )
                        }
                        // Only a device with its clock unset asks for a challenge; the
                        // next delivery round answers it.
                        _ => (
                            "The device's clock is not set yet; the consent goes out again on \
                             the next try."
                                .to_owned(),
                            None,
                        ),
                    };
                    set("refused", Some(words), code)?;
                    report.refused += 1;
                }
                Err(e) => {
                    set("waiting", Some(e.for_people().message()), None)?;
                    report.waiting = rest;
                    break;
                }
            }
            rest -= 1;
        }
        Ok(report)
    }

    /// Tells devices the consent entries this profile signed that they have not been told yet
    /// (all devices, or just `device`).
    pub async fn consent_outbox_flush(&self, device: Option<&DeviceId>) -> Result<OutboxReport> {
        let mut total = OutboxReport::default();
        let mut key = None;
        for record in self.devices()? {
            if device.is_some_and(|d| *d != record.id) || !self.consent_outbox_waiting(&record.id) {
                continue;
            }
            if key.is_none() {
                key = Some(self.identity()?);
            }
            let r = self
                .flush_device(&record, key.as_ref().expect("derived just above"))
                .await?;
            total.delivered += r.delivered;
            total.refused += r.refused;
            total.waiting += r.waiting;
        }
        Ok(total)
    }

    /// The delivery state of the entry `seq` of `device` in this profile's outbox.
    fn delivery_of(&self, device: &DeviceId, seq: u64) -> Result<(String, Option<String>)> {
        let row: Option<(String, Option<String>, Option<i64>)> = self.store.stmt("SELECT state, note, last_try_ms FROM consent_outbox WHERE device = ?1 AND seq = ?2")?.query_row(params![device.to_string(), seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.store.wrap(e))?;
        Ok(match row {
            None => (
                "unknown".into(),
                Some("signed by another owner's app; the device learns it from them".into()),
            ),
            Some((state, note, last)) => match state.as_str() {
                "delivered" => (state, None),
                "refused" => (
                    state,
                    Some(format!(
                        "the device refused it: {}",
                        note.unwrap_or_default()
                    )),
                ),
                _ => (
                    state,
                    Some(format!(
                        "the device has not been told yet{}; it is told at the next successful \
                         contact (open it, or list its consents, once it is online)",
                        match last {
                            Some(t) => format!(" (last tried {})", show_time(t as u64)),
                            None => String::new(),
                        }
                    )),
                ),
            },
        })
    }

    fn consent_view(&self, device: &DeviceRecord, status: &ConsentStatus) -> Result<ConsentView> {
        // The latest change of this consent is what the device must know.
        let seq = status
            .ended
            .as_ref()
            .and_then(|e| e.seq)
            .unwrap_or(status.given_seq);
        let (delivery, delivery_note) = self.delivery_of(&device.id, seq)?;
        Ok(ConsentView {
            id: status.id.to_string(),
            request: request_view(&status.request, &device.name),
            state: state_word(&status.ended).into(),
            given_ms: status.given_ms,
            given_by: status.given_by.to_string(),
            ended_ms: status.ended.as_ref().map(|e| e.time_ms),
            delivery,
            delivery_note,
        })
    }

    /// Approves a request (its link, or the id of a pending one): verifies it, checks the
    /// device is this profile's, signs the next entry of the device's consent log, stores it
    /// on a quorum of nodes, then tells the device (or keeps it in the outbox when the device
    /// cannot be reached now). Approving a consent already given and active returns it.
    pub async fn consent_approve(&self, link_or_id: &str) -> Result<ConsentView> {
        // Derived once: each derivation is a keychain read and 2,048 PBKDF2 rounds.
        let key = self.identity()?;
        let me = key.public_key();
        let req = if is_link(link_or_id) {
            let req = SignedConsentRequest::from_link(link_or_id.trim())
                .map_err(Error::BadConsentLink)?;
            let device = self.owned_device_for(&req, &me)?;
            self.keep_pending(&req, &device)?;
            req
        } else {
            let (id, req, state) = self.find_request(link_or_id)?;
            if state == "dismissed" {
                return Err(Error::ConsentNotPending { id, state });
            }
            self.owned_device_for(&req, &me)?;
            req
        };
        let device = self.owned_refreshed(&req.request().device, &me).await?;
        let log = self.fetch_consent_log(&device).await?;
        let id = req.id();
        if let Some(status) = log.consents().into_iter().find(|s| s.id == id) {
            if status.ended.is_none() {
                self.mark_given(&req)?;
                self.flush_device(&device, &key).await?;
                return self.consent_view(&device, &status);
            }
            return Err(Error::ConsentEnded {
                id: id.to_string(),
                state: state_word(&status.ended).into(),
            });
        }
        if let Some(until) = req.request().until_ms {
            if until <= self.now_ms() {
                return Err(Error::ConsentPastUntil {
                    until: show_time(until),
                });
            }
        }
        let (entry, log) = self
            .post_next(&device, log, ConsentAction::Given(req.clone()), true, &key)
            .await?;
        self.mark_given(&req)?;
        self.flush_device(&device, &key).await?;
        if let Some((code, words)) = self.refused_at_device(&device, &entry)? {
            // The device does not publish that stream, so nobody could ever read under this
            // consent; the log must not go on saying it stands. The withdrawal is for the
            // record only: the device never took the consent in.
            let withdrawn = if code == Some(RejectCode::UnknownStream as u16) {
                match self
                    .post_next(
                        &device,
                        log.clone(),
                        ConsentAction::Revoked(id),
                        false,
                        &key,
                    )
                    .await
                {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not withdraw a consent the device refused");
                        false
                    }
                }
            } else {
                false
            };
            return Err(Error::ConsentRefusedByDevice {
                device: device.name.clone(),
                words,
                withdrawn,
            });
        }
        let status = log
            .consents()
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::ConsentNotPublished {
                why: "the entry is not in the log after posting".into(),
            })?;
        self.consent_view(&device, &status)
    }

    /// The device's refusal of `entry` (its reject code and words), if it refused it.
    fn refused_at_device(
        &self,
        device: &DeviceRecord,
        entry: &ConsentEntry,
    ) -> Result<Option<(Option<u16>, String)>> {
        let row: Option<(String, Option<String>, Option<u16>)> = self
            .store
            .stmt("SELECT state, note, code FROM consent_outbox WHERE device = ?1 AND seq = ?2")?
            .query_row(params![device.id.to_string(), entry.seq as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(|e| self.store.wrap(e))?;
        Ok(match row {
            Some((state, note, code)) if state == "refused" => {
                Some((code, note.unwrap_or_default()))
            }
            _ => None,
        })
    }

    /// Finds the device and status of consent `id` (or a prefix of 8+ hex characters),
    /// reading the logs of this profile's devices when the id is not known yet.
    async fn find_consent(
        &self,
        query: &str,
        me: &PublicKey,
    ) -> Result<(DeviceRecord, ConsentLog, ConsentId)> {
        let found = match self.find_request(query) {
            Ok(row) => Some(row),
            Err(Error::UnknownConsent(_)) => None,
            Err(e) => return Err(e),
        };
        let found = match found {
            Some(row) => row,
            None => {
                // Maybe given by a co-owner: learn the logs of the devices this profile owns.
                for d in self.devices()? {
                    if d.chain.state().is_owner(me) {
                        if let Err(e) = self.fetch_consent_log(&d).await {
                            tracing::warn!(device = %d.name, error = %e, "could not read its consent log");
                        }
                    }
                }
                self.find_request(query)?
            }
        };
        let (_, req, _) = found;
        let device = self.owned_refreshed(&req.request().device, me).await?;
        let log = self.fetch_consent_log(&device).await?;
        Ok((device, log, req.id()))
    }

    /// Withdraws a consent (by id or a prefix of 8+ hex characters): the next log entry, on a
    /// quorum of nodes, then the device is told (it rotates the stream key at once).
    pub async fn consent_revoke(&self, id: &str) -> Result<ConsentView> {
        let key = self.identity()?;
        let (device, log, id) = self.find_consent(id, &key.public_key()).await?;
        let Some(status) = log.consents().into_iter().find(|s| s.id == id) else {
            return Err(Error::ConsentNotGiven { id: id.to_string() });
        };
        if status.ended.is_some() {
            return Err(Error::ConsentEnded {
                id: id.to_string(),
                state: state_word(&status.ended).into(),
            });
        }
        let (entry, log) = self
            .post_next(&device, log, ConsentAction::Revoked(id), true, &key)
            .await?;
        self.flush_device(&device, &key).await?;
        if let Some((_, words)) = self.refused_at_device(&device, &entry)? {
            return Err(Error::ConsentRefusedByDevice {
                device: device.name.clone(),
                words,
                withdrawn: true,
            });
        }
        let status = log
            .consents()
            .into_iter()
            .find(|s| s.id == id)
            .expect("the consent was in the log before the revocation was appended");
        self.consent_view(&device, &status)
    }

    /// Every consent ever given for `device`, in log order. Consents whose `until` has passed
    /// without an `Expired` entry get one now (best effort: a failure is logged, the view
    /// still says `expired`), and the outbox for the device is flushed.
    pub async fn consents(&self, device: &DeviceId) -> Result<Vec<ConsentView>> {
        let key = self.identity()?;
        let record = self.owned_refreshed(device, &key.public_key()).await?;
        let mut log = self.fetch_consent_log(&record).await?;
        let now = self.now_ms();
        let lapsed: Vec<ConsentId> = log
            .consents_at(now)
            .into_iter()
            .filter(|s| {
                matches!(
                    s.ended.as_ref().map(|e| &e.kind),
                    Some(EndKind::Lapsed(until)) if *until <= now
                )
            })
            .map(|s| s.id)
            .collect();
        for id in lapsed {
            match self
                .post_next(&record, log.clone(), ConsentAction::Expired(id), true, &key)
                .await
            {
                Ok((_, next)) => log = next,
                Err(e) => {
                    tracing::warn!(consent = %id, error = %e, "could not record the expiry; retried next time")
                }
            }
        }
        if let Err(e) = self.flush_device(&record, &key).await {
            tracing::warn!(error = %e, "could not tell the device its consent changes");
        }
        // As of now: a lapse whose expiry could not be recorded still shows as expired.
        log.consents_at(self.now_ms().max(now))
            .iter()
            .map(|s| self.consent_view(&record, s))
            .collect()
    }

    /// A device's consent log, verified, oldest first.
    pub async fn consent_log(&self, device: &DeviceId) -> Result<Vec<ConsentLogEntryView>> {
        let text = device.to_string();
        let record = self
            .store
            .devices_where(|id, _| id == text)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::UnknownDevice(text.clone()))?;
        let record = self.refresh_device(record).await?;
        let log = self.fetch_consent_log(&record).await?;
        let me = self.identity().ok().map(|k| k.public_key());
        let consents = log.consents();
        let request_of = |id: &ConsentId| consents.iter().find(|s| s.id == *id);
        Ok(log
            .entries()
            .iter()
            .map(|e| {
                let (kind, id) = match &e.action {
                    ConsentAction::Given(r) => ("given", r.id()),
                    ConsentAction::Revoked(id) => ("revoked", *id),
                    ConsentAction::Expired(id) => ("expired", *id),
                };
                let (provider_name, stream, purpose) = request_of(&id).map_or_else(
                    || (String::new(), String::new(), String::new()),
                    |s| {
                        let r = s.request.request();
                        (
                            r.provider.name.clone(),
                            r.stream.clone(),
                            format!("{}: {}", purpose::label(r.purpose_code), r.purpose),
                        )
                    },
                );
                ConsentLogEntryView {
                    seq: e.seq,
                    time_ms: e.time_ms,
                    kind: kind.into(),
                    consent_id: id.to_string(),
                    provider_name,
                    stream,
                    purpose,
                    signer: e.signer.to_string(),
                    signer_is_me: me.as_ref() == Some(&e.signer),
                    hash: hex::encode(e.hash()),
                }
            })
            .collect())
    }
}

/// The owner key that signed, for people: `lkpk1abc…`, or `you`.
pub fn signer_label(signer: &str, is_me: bool) -> String {
    if is_me {
        "you".into()
    } else {
        PublicKey::parse(signer).map_or_else(|_| signer.to_owned(), |k| format!("{}…", k.short()))
    }
}

/// The reject codes a device answers a consent with (for fronts that match on them).
pub fn is_consent_refusal(code: u16) -> bool {
    code == RejectCode::UnknownStream as u16 || code == RejectCode::ConsentRefused as u16
}
