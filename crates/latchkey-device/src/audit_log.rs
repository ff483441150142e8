//! The audit log in `state.db` (table `audit_log`): appending, era cuts, pages served to
//! owners, and pruning. docs/PROTOCOL.md §9 is the format; this is where its rules live.
//!
//! **Invariant: the log holds one ownership era.** Every append names the era the caller's
//! view is in; the first append of a new era deletes every older entry and restarts at
//! sequence 0 with an era marker, in the same transaction, so no page ever mixes eras and new
//! owners never see their predecessors' history.
//!
//! **Invariant: an accepted command's entries are never pruned before an owner fetched them.**
//! The device learns "fetched" from the pages it serves; pruning deletes a prefix only up to
//! the first accepted entry past that point, and leaves a signed marker of what it deleted.

use latchkey_proto::audit::{AuditBody, AuditEntry, EraCause, EraStart, Pruned, SignedEntry};
use latchkey_proto::chain::Chain;
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::SigningKey;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use crate::store::Store;

/// Entries with `seq ≤ this` have all been served to an owner.
const FETCHED_KEY: &str = "audit.fetched_through";
/// The run of pages served most recently that does not yet join the fetched prefix: an owner
/// pages back from the newest entry, so the run grows downwards until it meets the prefix.
const SERVED_RUN_KEY: &str = "audit.served_run";

/// The chain sequence number of the op that started the log's era.
const ERA_OP_SEQ_KEY: &str = "audit.era_op_seq";

/// The ownership era the chain is in: its `epoch` op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraInfo {
    pub id: [u8; 32],
    pub cause: EraCause,
    pub op_seq: u64,
}

impl EraInfo {
    pub fn of(chain: &Chain) -> EraInfo {
        let epoch = chain.state().epoch;
        let op = chain
            .ops()
            .iter()
            .rev()
            .find(|op| op.id() == epoch)
            .expect("a verified chain holds the op its epoch names");
        EraInfo {
            id: epoch.0,
            cause: EraCause::from_op_tag(op.body.tag())
                .expect("only genesis, claim, transfer and reset start an epoch"),
            op_seq: op.seq,
        }
    }
}

/// One page's worth of stored entries.
#[derive(Debug, Clone)]
pub struct StoredPage {
    /// The oldest entry held.
    pub oldest: u64,
    pub next_seq: u64,
    /// `(seq, encoded entry)`, newest first.
    pub newest_first: Vec<(u64, Vec<u8>)>,
}

/// What [`Store::prune_audit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    pub marker: Pruned,
}

impl Store {
    /// Appends `body` as the next entry of `era`, signed by `identity`; cuts the log first if
    /// it holds another era. Survives `kill -9`; a power cut may lose it until the next durable
    /// commit (use [`Store::append_audit_durable`] where that matters).
    pub fn append_audit(
        &self,
        era: &EraInfo,
        time_ms: Option<u64>,
        body: AuditBody,
        identity: &SigningKey,
    ) -> Result<SignedEntry> {
        append_on(&mut self.lazy(), era, time_ms, Some(body), identity)
            .map(|e| e.expect("a body was given"))
    }

    /// Like [`Store::append_audit`], committed with `synchronous=FULL`: on disk on return.
    pub fn append_audit_durable(
        &self,
        era: &EraInfo,
        time_ms: Option<u64>,
        body: AuditBody,
        identity: &SigningKey,
    ) -> Result<SignedEntry> {
        append_on(&mut self.conn(), era, time_ms, Some(body), identity)
            .map(|e| e.expect("a body was given"))
    }

    /// Starts `era` if the log is in another one (or empty): deletes older entries and writes
    /// the era marker. Returns the marker if it wrote one.
    pub fn ensure_audit_era(
        &self,
        era: &EraInfo,
        time_ms: Option<u64>,
        identity: &SigningKey,
    ) -> Result<Option<SignedEntry>> {
        append_on(&mut self.lazy(), era, time_ms, None, identity)
    }

    /// Encoded entries with `seq < before` (all if `None`), newest first, at most `max`, with
    /// the oldest held and the next sequence number.
    pub fn audit_page(&self, before: Option<u64>, max: usize) -> Result<StoredPage> {
        let mut conn = self.lazy();
        let tx = conn.transaction()?;
        let (oldest, next_seq) = bounds(&tx)?;
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let newest_first = {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, entry FROM audit_log WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before, max as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        Ok(StoredPage {
            oldest,
            next_seq,
            newest_first,
        })
    }

    /// Records that an owner was served entries `lo..=hi`. Conservative if lost (the entries
    /// only look unfetched for longer), so it is written like the rest of the log.
    pub fn audit_served(&self, lo: u64, hi: u64) -> Result<()> {
        let mut conn = self.lazy();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (oldest, next) = bounds(&tx)?;
        if lo > hi || hi >= next {
            return Ok(());
        }
        let mut fetched = get_u64(&tx, FETCHED_KEY)?;
        let mut run = get_run(&tx)?;
        let joins_prefix = |lo: u64, fetched: Option<u64>| {
            lo <= oldest || fetched.is_some_and(|f| lo <= f.saturating_add(1))
        };
        if joins_prefix(lo, fetched) {
            fetched = Some(fetched.map_or(hi, |f| f.max(hi)));
        } else {
            run = Some(match run {
                Some((rlo, rhi)) if hi.saturating_add(1) >= rlo && lo <= rhi.saturating_add(1) => {
                    (rlo.min(lo), rhi.max(hi))
                }
                _ => (lo, hi),
            });
        }
        if let Some((rlo, rhi)) = run {
            if joins_prefix(rlo, fetched) {
                fetched = Some(fetched.map_or(rhi, |f| f.max(rhi)));
                run = None;
            }
        }
        if let Some(f) = fetched {
            set_meta(&tx, FETCHED_KEY, &f.to_string())?;
        }
        match run {
            Some((a, b)) => set_meta(&tx, SERVED_RUN_KEY, &format!("{a}-{b}"))?,
            None => {
                tx.prepare_cached("DELETE FROM meta WHERE key = ?1")?
                    .execute([SERVED_RUN_KEY])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The highest sequence number below which every entry was served to an owner.
    pub fn audit_fetched_through(&self) -> Result<Option<u64>> {
        get_u64(&self.lazy(), FETCHED_KEY)
    }

    /// Every stored entry, oldest first, as stored bytes.
    pub fn audit_all(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        let conn = self.lazy();
        let mut stmt = conn.prepare_cached("SELECT seq, entry FROM audit_log ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The sequence the next entry will get.
    pub fn audit_next_seq(&self) -> Result<u64> {
        let mut conn = self.lazy();
        let tx = conn.transaction()?;
        Ok(bounds(&tx)?.1)
    }

    /// Entries held now.
    pub fn audit_len(&self) -> Result<u64> {
        Ok(self
            .lazy()
            .prepare_cached("SELECT COUNT(*) FROM audit_log")?
            .query_row([], |r| r.get(0))?)
    }

    /// Bounds the log near `keep` entries: deletes the oldest prefix, but never past the first
    /// accepted entry an owner has not fetched, and only once at least a tenth of `keep` can
    /// go (so pruning does not write a marker for every few entries). Writes the marker.
    pub fn prune_audit(
        &self,
        keep: u64,
        era: &EraInfo,
        time_ms: Option<u64>,
        identity: &SigningKey,
    ) -> Result<Option<PruneReport>> {
        let keep = keep.max(1);
        let mut conn = self.lazy();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some((_, _, head_era)) = head(&tx)? else {
            return Ok(None);
        };
        if head_era != era.id {
            // The next append cuts the log; nothing of the old era is worth a marker.
            return Ok(None);
        }
        let (oldest, next) = bounds(&tx)?;
        let slack = (keep / 10).max(1);
        let fetched = get_u64(&tx, FETCHED_KEY)?;
        let first_unfetched_accepted: Option<i64> = tx
            .prepare_cached("SELECT MIN(seq) FROM audit_log WHERE accepted = 1 AND seq > ?1")?
            .query_row([fetched.map_or(-1, |f| f as i64)], |r| r.get(0))?;
        let cut = next
            .saturating_sub(keep)
            .min(first_unfetched_accepted.map_or(u64::MAX, |s| s as u64));
        if cut <= oldest || cut - oldest < slack {
            return Ok(None);
        }
        let last = cut - 1;
        let last_hash: Vec<u8> = tx
            .prepare_cached("SELECT hash FROM audit_log WHERE seq = ?1")?
            .query_row([last as i64], |r| r.get(0))?;
        let unfetched: u64 = tx
            .prepare_cached("SELECT COUNT(*) FROM audit_log WHERE seq < ?1 AND seq > ?2")?
            .query_row(params![cut as i64, fetched.map_or(-1, |f| f as i64)], |r| {
                r.get(0)
            })?;
        tx.prepare_cached("DELETE FROM audit_log WHERE seq < ?1")?
            .execute([cut as i64])?;
        let marker = Pruned {
            first: oldest,
            last,
            last_hash: hash32(last_hash)?,
            unfetched,
        };
        insert_next(&tx, era, time_ms, AuditBody::Pruned(marker), identity)?;
        tx.commit()?;
        Ok(Some(PruneReport { marker }))
    }
}

fn append_on(
    conn: &mut Connection,
    era: &EraInfo,
    time_ms: Option<u64>,
    body: Option<AuditBody>,
    identity: &SigningKey,
) -> Result<Option<SignedEntry>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let written = append_in(&tx, era, time_ms, body, identity)?;
    tx.commit()?;
    Ok(written)
}

/// [`append_on`] inside the caller's transaction (committed by the caller).
pub(crate) fn append_in(
    tx: &Transaction<'_>,
    era: &EraInfo,
    time_ms: Option<u64>,
    body: Option<AuditBody>,
    identity: &SigningKey,
) -> Result<Option<SignedEntry>> {
    // Eras only advance. A writer that read the view just before it moved on names the era
    // that ended; its entry happened after the cut, so it goes into the current era rather
    // than cutting the log back.
    let current = head(tx)?.map(|(_, _, id)| id);
    let stored_op_seq = get_u64(tx, ERA_OP_SEQ_KEY)?;
    let era = match (current, stored_op_seq) {
        (Some(id), Some(op_seq)) if id != era.id && op_seq > era.op_seq => {
            EraInfo { id, op_seq, ..*era }
        }
        _ => *era,
    };
    let started = start_era_if_needed(tx, &era, time_ms, identity)?;
    Ok(match body {
        Some(body) => Some(insert_next(tx, &era, time_ms, body, identity)?),
        None => started,
    })
}

/// Deletes the entries of any other era and writes `era`'s marker at sequence 0.
fn start_era_if_needed(
    tx: &Transaction<'_>,
    era: &EraInfo,
    time_ms: Option<u64>,
    identity: &SigningKey,
) -> Result<Option<SignedEntry>> {
    if head(tx)?.is_some_and(|(_, _, e)| e == era.id) {
        return Ok(None);
    }
    let dropped = tx.prepare_cached("DELETE FROM audit_log")?.execute([])?;
    tx.prepare_cached("DELETE FROM meta WHERE key IN (?1, ?2)")?
        .execute([FETCHED_KEY, SERVED_RUN_KEY])?;
    set_meta(tx, ERA_OP_SEQ_KEY, &era.op_seq.to_string())?;
    if dropped > 0 {
        tracing::info!(
            dropped,
            cause = era.cause.name(),
            "new ownership era: the previous era's audit log was deleted"
        );
    }
    let marker = AuditBody::EraStart(EraStart {
        cause: era.cause,
        op_seq: era.op_seq,
    });
    insert_next(tx, era, time_ms, marker, identity).map(Some)
}

fn insert_next(
    tx: &Transaction<'_>,
    era: &EraInfo,
    time_ms: Option<u64>,
    body: AuditBody,
    identity: &SigningKey,
) -> Result<SignedEntry> {
    let (seq, prev) = match head(tx)? {
        None => (0, [0u8; 32]),
        Some((seq, hash, _)) => (seq + 1, hash),
    };
    let accepted = body.is_accepted();
    let signed = AuditEntry {
        seq,
        prev,
        era: era.id,
        time_ms,
        body,
    }
    .sign(identity);
    tx.prepare_cached(
        "INSERT INTO audit_log (seq, era, hash, accepted, entry) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        seq as i64,
        &era.id[..],
        &signed.entry.hash()[..],
        accepted,
        signed.to_bytes()
    ])?;
    Ok(signed)
}

/// The newest entry's sequence, hash and era.
type Head = (u64, [u8; 32], [u8; 32]);

fn head(conn: &Connection) -> Result<Option<Head>> {
    let row: Option<(i64, Vec<u8>, Vec<u8>)> = conn
        .prepare_cached("SELECT seq, hash, era FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(seq, hash, era)| Ok((seq as u64, hash32(hash)?, hash32(era)?)))
        .transpose()
}

/// The oldest held sequence and the next one (both the next when empty).
fn bounds(conn: &Connection) -> Result<(u64, u64)> {
    let (min, max): (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT MIN(seq), MAX(seq) FROM audit_log")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let next = max.map_or(0, |m| m as u64 + 1);
    Ok((min.map_or(next, |m| m as u64), next))
}

fn hash32(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| Error::Internal("an audit hash column is not 32 bytes".into()))
}

fn get_u64(conn: &Connection, key: &str) -> Result<Option<u64>> {
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()))
}

fn get_run(conn: &Connection) -> Result<Option<(u64, u64)>> {
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([SERVED_RUN_KEY], |r| r.get(0))
        .optional()?;
    Ok(v.and_then(|v| {
        let (a, b) = v.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }))
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_proto::audit::{verify_entries, AuditRecord, Stage, Via, ViewMark};
    use latchkey_testkit::person;

    fn era(n: u8) -> EraInfo {
        EraInfo {
            id: [n; 32],
            cause: EraCause::Claim,
            op_seq: u64::from(n),
        }
    }

    fn decision(code: u16) -> AuditBody {
        AuditBody::Decision(AuditRecord {
            via: Via::Local,
            envelope: [1; 32],
            sender: None,
            command: None,
            action: String::new(),
            args: None,
            code,
            stage: Stage::Authority,
            detail: "d".into(),
            view: ViewMark::default(),
        })
    }

    fn entries(s: &Store) -> Vec<SignedEntry> {
        s.audit_all()
            .unwrap()
            .iter()
            .map(|(_, b)| SignedEntry::from_bytes(b).unwrap())
            .collect()
    }

    #[test]
    fn an_era_starts_with_its_marker_and_cuts_the_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        let key = person(4);
        for i in 0..5 {
            s.append_audit(&era(1), Some(i), decision(0), &key).unwrap();
        }
        let first = entries(&s);
        assert_eq!(first.len(), 6, "marker and five entries");
        assert!(matches!(first[0].entry.body, AuditBody::EraStart(_)));
        verify_entries(&first, &key.public_key(), None).unwrap();
        assert!(s.ensure_audit_era(&era(1), None, &key).unwrap().is_none());
        s.audit_served(0, 5).unwrap();
        // A new era: everything before is gone, and the log restarts at 0.
        let marker = s.ensure_audit_era(&era(2), Some(9), &key).unwrap().unwrap();
        assert_eq!(marker.entry.seq, 0);
        s.append_audit(&era(2), Some(10), decision(7), &key)
            .unwrap();
        let second = entries(&s);
        assert_eq!(second.len(), 2);
        assert!(second.iter().all(|e| e.entry.era == [2; 32]));
        verify_entries(&second, &key.public_key(), None).unwrap();
        assert_eq!(
            s.audit_fetched_through().unwrap(),
            None,
            "reset with the era"
        );
        // A late writer still naming the era that ended does not cut the log back.
        s.append_audit(&era(1), Some(11), decision(0), &key)
            .unwrap();
        let third = entries(&s);
        assert_eq!(third.len(), 3);
        assert!(third.iter().all(|e| e.entry.era == [2; 32]));
        verify_entries(&third, &key.public_key(), None).unwrap();
    }

    #[test]
    fn fetched_is_learned_from_pages_served_back_to_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        let key = person(4);
        for _ in 0..30 {
            s.append_audit(&era(1), None, decision(0), &key).unwrap();
        }
        // The newest page, then paging back: fetched only once the pages reach the start.
        s.audit_served(20, 30).unwrap();
        assert_eq!(s.audit_fetched_through().unwrap(), None);
        s.audit_served(10, 19).unwrap();
        assert_eq!(s.audit_fetched_through().unwrap(), None);
        s.audit_served(0, 9).unwrap();
        assert_eq!(s.audit_fetched_through().unwrap(), Some(30));
        // Ranges past the end are ignored.
        s.audit_served(0, 99).unwrap();
        assert_eq!(s.audit_fetched_through().unwrap(), Some(30));
    }

    #[test]
    fn pruning_keeps_unfetched_accepted_entries_and_leaves_a_marker() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        let key = person(4);
        let pk = key.public_key();
        // 0 marker, 1..=20 refusals, 21 accepted, 22..=99 refusals.
        for i in 1..100u64 {
            let code = if i == 21 { 0 } else { 7 };
            s.append_audit(&era(1), None, decision(code), &key).unwrap();
        }
        let report = s.prune_audit(10, &era(1), None, &key).unwrap().unwrap();
        assert_eq!(
            (
                report.marker.first,
                report.marker.last,
                report.marker.unfetched
            ),
            (0, 20, 21),
            "stops before the unfetched accepted entry 21"
        );
        let kept = entries(&s);
        assert_eq!(kept[0].entry.seq, 21);
        assert!(kept[0].entry.body.is_accepted());
        verify_entries(&kept, &pk, None).unwrap();
        let marker = kept.last().unwrap();
        assert!(matches!(marker.entry.body, AuditBody::Pruned(_)));
        // Too little to gain: nothing happens.
        assert!(s.prune_audit(10, &era(1), None, &key).unwrap().is_none());
        // Once the owner fetched everything, the rest of the prefix can go.
        s.audit_served(21, 100).unwrap();
        let report = s.prune_audit(10, &era(1), None, &key).unwrap().unwrap();
        assert_eq!((report.marker.first, report.marker.unfetched), (21, 0));
        let kept = entries(&s);
        assert_eq!(kept.len(), 11);
        verify_entries(&kept, &pk, None).unwrap();
    }
}
