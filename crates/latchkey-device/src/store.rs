//! `state.db`: the device's durable state in SQLite (WAL, `synchronous=FULL`): the verified
//! ownership chain, the strike register, use counts per grant, the audit log, relay cursors.
//!
//! **Invariant: a nonce is durable before its command's action runs** (it is committed by
//! [`Store::record_nonce`], which the pipeline calls after authority and before the action), so
//! neither a crash nor `kill -9` can let a replay through.
//!
//! **Invariant: the strike register holds every nonce with a timestamp at or above its floor,
//! and the floor never exceeds `mark − window`**, where `mark` is the durable high-water mark of
//! time (newest trusted clock reading, newest accepted timestamp; it never goes down). Pruning
//! raises the floor; [`Store::record_nonce`] refuses timestamps under it in the same
//! transaction as the insert. So setting the clock back cannot revive a forgotten nonce.
//!
//! Two connections: `durable` (`synchronous=FULL`: strike register, use counts, the chain, an
//! action's "about to run" audit entry) fsyncs every commit; `lazy` (`synchronous=NORMAL`: the
//! rest of the audit log, relay bookkeeping, status) survives `kill -9` but may lose its last
//! commits on power loss, until the next durable commit syncs the shared WAL. A refused
//! envelope nobody with standing sent writes nothing at all (src/tally.rs); an accepted command
//! costs two fsyncs (its nonce, then its "about to run" entry).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use latchkey_proto::chain::{Chain, Op};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::NONCE_LEN;
use latchkey_proto::grant::GrantId;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY, op BLOB NOT NULL, id BLOB);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (nonce BLOB PRIMARY KEY, ts_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS nonces_ts ON nonces (ts_ms);
CREATE TABLE IF NOT EXISTS use_counts (grant_id BLOB PRIMARY KEY, used INTEGER NOT NULL);
-- Version 2 audit log (src/audit_log.rs). A version 1 table `audit`, if present, is left as it was.
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY, era BLOB NOT NULL, hash BLOB NOT NULL,
    accepted INTEGER NOT NULL, entry BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS relay_cursors (node TEXT PRIMARY KEY, after INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS relay_seen (hash BLOB PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS relay_seen_at ON relay_seen (at_ms);
CREATE TABLE IF NOT EXISTS clock (key TEXT PRIMARY KEY, ms INTEGER NOT NULL);
-- Events for owners (src/events.rs, docs/PROTOCOL.md §13).
CREATE TABLE IF NOT EXISTS event_subscriptions (owner BLOB PRIMARY KEY, kem BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS event_opened (grant_id BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS event_outbox (
    id INTEGER PRIMARY KEY, owner BLOB NOT NULL, message BLOB NOT NULL, created_ms INTEGER NOT NULL);
";

/// The SQLite state; one connection behind a mutex (every statement is short).
#[derive(Debug)]
pub struct Store {
    durable: Mutex<Connection>,
    lazy: Mutex<Connection>,
}

/// A use limit that is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReached {
    pub grant: GrantId,
    pub limit: u32,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let open = |synchronous: &str| -> Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", synchronous)?;
            Ok(conn)
        };
        let durable = open("FULL")?;
        durable.execute_batch(SCHEMA)?;
        // Stores from before op ids were kept: the ids are filled in by the next save.
        let has_id: bool = durable
            .prepare("SELECT 1 FROM pragma_table_info('ops') WHERE name = 'id'")?
            .exists([])?;
        if !has_id {
            durable.execute_batch("ALTER TABLE ops ADD COLUMN id BLOB")?;
        }
        let lazy = open("NORMAL")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Store {
            durable: Mutex::new(durable),
            lazy: Mutex::new(lazy),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is still usable.
        self.durable.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lazy(&self) -> MutexGuard<'_, Connection> {
        self.lazy.lock().unwrap_or_else(|p| p.into_inner())
    }

    // --- ownership chain ---

    /// The stored chain, verified from genesis; `None` if none is stored.
    pub fn load_chain(&self) -> Result<Option<Chain>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT op FROM ops ORDER BY seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut ops = Vec::new();
        for row in rows {
            ops.push(Op::from_bytes(&row?).map_err(Error::CorruptChain)?);
        }
        if ops.is_empty() {
            return Ok(None);
        }
        Chain::verify(ops).map(Some).map_err(Error::CorruptChain)
    }

    /// Stores `chain` as [`Chain::ops`] lists it. The `seq` column is the op's position in that
    /// list, not its sequence number: side ops (revocations, endorsements) share their anchor's
    /// successor's number, are inserted mid-list and dropped when an era ends, and a fork choice
    /// can replace a branch. A pure extension appends; any other change rewrites the list, in
    /// one transaction either way. Returns how many rows were written.
    pub fn save_chain(&self, chain: &Chain) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Compared by op id, which the chain remembers: a save (about once a minute) neither
        // reads the stored ops back nor encodes the chain again. A row without an id (an older
        // store) never matches, so the list is rewritten once with ids.
        let held: Vec<Option<Vec<u8>>> = {
            let mut stmt = tx.prepare("SELECT id FROM ops ORDER BY seq")?;
            let rows = stmt.query_map([], |r| r.get::<_, Option<Vec<u8>>>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let ops = chain.ops();
        let ids = chain.op_ids();
        let extends = held.len() <= ops.len()
            && held
                .iter()
                .zip(&ids)
                .all(|(stored, id)| stored.as_deref() == Some(&id.0[..]));
        let from = if extends {
            held.len()
        } else {
            tx.execute("DELETE FROM ops", [])?;
            0
        };
        for (pos, (op, id)) in ops.iter().zip(&ids).enumerate().skip(from) {
            tx.execute(
                "INSERT INTO ops (seq, op, id) VALUES (?1, ?2, ?3)",
                params![pos as i64, op.to_bytes(), &id.0[..]],
            )?;
        }
        tx.commit()?;
        Ok(ops.len() - from)
    }

    // --- small settings and status ---

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .lazy()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.lazy().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    // --- strike register and the high-water mark of time ---

    /// Records a nonce; `false` if it was already recorded. Committed (durable) on return.
    /// Bypasses the floor and the mark: for tests and benchmarks of the bare insert.
    pub fn insert_nonce(&self, nonce: &[u8; NONCE_LEN], ts_ms: u64) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO nonces (nonce, ts_ms) VALUES (?1, ?2)",
            params![&nonce[..], ts_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// Records an accepted command's nonce and raises the mark, in one durable transaction.
    /// `trusted_now` is the device's clock when it is trusted: then a timestamp under the floor
    /// is refused, and both the clock and the timestamp (already checked to be at most the
    /// window's lead ahead of it) raise the mark. Without a trusted clock (challenge mode) the
    /// sender's timestamp means nothing and touches neither.
    pub fn record_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        ts_ms: u64,
        trusted_now: Option<u64>,
    ) -> Result<Strike> {
        match self.accept(nonce, ts_ms, trusted_now, &[], None)? {
            Accepted::Recorded { mark } => Ok(Strike::Recorded { mark }),
            Accepted::Refused(strike) => Ok(strike),
            Accepted::LimitReached(_) => unreachable!("no use limit was given"),
        }
    }

    /// An authorized command's durable writes, all in one transaction (one fsync) and all or
    /// nothing: its nonce and the mark (as [`Store::record_nonce`]), one use of every grant in
    /// `limits` (as [`Store::take_uses`]), and, for an action, its "about to run" audit entry —
    /// so the record that an action began is on disk before it starts.
    pub fn accept(
        &self,
        nonce: &[u8; NONCE_LEN],
        ts_ms: u64,
        trusted_now: Option<u64>,
        limits: &[(GrantId, u32)],
        running: Option<RunningEntry<'_>>,
    ) -> Result<Accepted> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let floor = clock_value(&tx, FLOOR)?;
        let mark = clock_value(&tx, MARK)?;
        if trusted_now.is_some() && ts_ms < floor {
            return Ok(Accepted::Refused(Strike::BelowFloor { floor }));
        }
        let n = tx.execute(
            "INSERT OR IGNORE INTO nonces (nonce, ts_ms) VALUES (?1, ?2)",
            params![&nonce[..], clamp(ts_ms)],
        )?;
        if n == 0 {
            return Ok(Accepted::Refused(Strike::Replayed));
        }
        let new_mark = match trusted_now {
            Some(now) => mark.max(now).max(ts_ms),
            None => mark,
        };
        if new_mark != mark {
            set_clock_value(&tx, MARK, new_mark)?;
        }
        if let Err(spent) = take_uses_in(&tx, limits)? {
            return Ok(Accepted::LimitReached(spent));
        }
        if let Some(entry) = running {
            crate::audit_log::append_in(
                &tx,
                entry.era,
                entry.time_ms,
                Some(entry.body),
                entry.identity,
            )?;
        }
        tx.commit()?;
        Ok(Accepted::Recorded { mark: new_mark })
    }

    /// Forgets nonces no command can reuse any more: with a trusted clock `now`, the mark is
    /// raised to it first; the floor becomes `mark − max_age_ms` and every nonce under it goes.
    /// Returns how many went and the mark.
    pub fn prune_nonces(&self, trusted_now: Option<u64>, max_age_ms: u64) -> Result<(usize, u64)> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut mark = clock_value(&tx, MARK)?;
        if let Some(now) = trusted_now.filter(|now| *now > mark) {
            mark = now;
            set_clock_value(&tx, MARK, mark)?;
        }
        let floor = clock_value(&tx, FLOOR)?;
        let new_floor = mark.saturating_sub(max_age_ms).max(floor);
        if new_floor != floor {
            set_clock_value(&tx, FLOOR, new_floor)?;
        }
        let n = tx.execute("DELETE FROM nonces WHERE ts_ms < ?1", [clamp(new_floor)])?;
        tx.commit()?;
        Ok((n, mark))
    }

    /// Raises the mark to a trusted clock reading (durably); returns the mark.
    pub fn raise_mark(&self, now: u64) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mark = clock_value(&tx, MARK)?;
        if now <= mark {
            return Ok(mark);
        }
        set_clock_value(&tx, MARK, now)?;
        tx.commit()?;
        Ok(now)
    }

    /// The high-water mark of time (0 before the first trusted reading).
    pub fn clock_mark(&self) -> Result<u64> {
        clock_value(&self.conn(), MARK)
    }

    pub fn nonce_count(&self) -> Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM nonces", [], |r| r.get(0))?)
    }

    // --- use limits ---

    /// Spends one use of every grant in `limits`, all or none: if any is spent, nothing is
    /// counted and the first spent one is returned.
    pub fn take_uses(&self, limits: &[(GrantId, u32)]) -> Result<Result<(), LimitReached>> {
        if limits.is_empty() {
            return Ok(Ok(()));
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken = take_uses_in(&tx, limits)?;
        if taken.is_ok() {
            tx.commit()?;
        }
        Ok(taken)
    }

    pub fn uses(&self, grant: &GrantId) -> Result<u32> {
        Ok(self
            .conn()
            .query_row(
                "SELECT used FROM use_counts WHERE grant_id = ?1",
                [&grant.0[..]],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    // --- audit log: src/audit_log.rs ---

    // --- relay ---

    pub fn relay_cursor(&self, node: &str) -> Result<u64> {
        let v: Option<i64> = self
            .lazy()
            .query_row(
                "SELECT after FROM relay_cursors WHERE node = ?1",
                [node],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map_or(0, |v| v as u64))
    }

    pub fn set_relay_cursor(&self, node: &str, after: u64) -> Result<()> {
        self.lazy().execute(
            "INSERT INTO relay_cursors (node, after) VALUES (?1, ?2)
             ON CONFLICT (node) DO UPDATE SET after = excluded.after",
            params![node, after as i64],
        )?;
        Ok(())
    }

    /// Records a relayed envelope's hash; `false` if it was seen before (a copy through
    /// another node).
    pub fn relay_first_sight(&self, hash: &[u8; 32], at_ms: u64) -> Result<bool> {
        let n = self.lazy().execute(
            "INSERT OR IGNORE INTO relay_seen (hash, at_ms) VALUES (?1, ?2)",
            params![&hash[..], at_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// Whether a relayed envelope's hash was recorded (a read: no write for junk).
    pub fn relay_seen(&self, hash: &[u8; 32]) -> Result<bool> {
        Ok(self
            .lazy()
            .query_row(
                "SELECT 1 FROM relay_seen WHERE hash = ?1",
                [&hash[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn forget_relay_seen_before(&self, at_ms: u64) -> Result<usize> {
        Ok(self.lazy().execute(
            "DELETE FROM relay_seen WHERE at_ms < ?1",
            [at_ms.min(i64::MAX as u64) as i64],
        )?)
    }
}

/// What the strike register said of an authorized command's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// New; recorded durably. The mark after it.
    Recorded { mark: u64 },
    /// Seen before.
    Replayed,
    /// The timestamp is under the floor the register was pruned to (a prune ran after the
    /// window check): too old.
    BelowFloor { floor: u64 },
}

/// What [`Store::accept`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Everything is on disk; the mark after it.
    Recorded { mark: u64 },
    /// Refused by the strike register (never [`Strike::Recorded`]); nothing was written.
    Refused(Strike),
    /// A use limit is spent; nothing was written, the nonce included.
    LimitReached(LimitReached),
}

/// The "about to run" entry [`Store::accept`] writes with the nonce.
#[derive(Debug)]
pub struct RunningEntry<'a> {
    pub era: &'a crate::audit_log::EraInfo,
    pub time_ms: Option<u64>,
    pub body: latchkey_proto::audit::AuditBody,
    pub identity: &'a latchkey_proto::keys::SigningKey,
}

/// Spends one use of every grant in `limits` inside `tx`, all or none.
fn take_uses_in(
    tx: &rusqlite::Transaction<'_>,
    limits: &[(GrantId, u32)],
) -> Result<std::result::Result<(), LimitReached>> {
    for (grant, limit) in limits {
        let used: u32 = tx
            .query_row(
                "SELECT used FROM use_counts WHERE grant_id = ?1",
                [&grant.0[..]],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if used >= *limit {
            return Ok(Err(LimitReached {
                grant: *grant,
                limit: *limit,
            }));
        }
    }
    for (grant, _) in limits {
        tx.execute(
            "INSERT INTO use_counts (grant_id, used) VALUES (?1, 1)
             ON CONFLICT (grant_id) DO UPDATE SET used = used + 1",
            [&grant.0[..]],
        )?;
    }
    Ok(Ok(()))
}

const MARK: &str = "mark";
const FLOOR: &str = "floor";

fn clock_value(conn: &Connection, key: &str) -> Result<u64> {
    let v: Option<i64> = conn
        .query_row("SELECT ms FROM clock WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(v.map_or(0, |v| v.max(0) as u64))
}

fn set_clock_value(conn: &Connection, key: &str, ms: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO clock (key, ms) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET ms = excluded.ms",
        params![key, clamp(ms)],
    )?;
    Ok(())
}

fn clamp(ms: u64) -> i64 {
    ms.min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::{person, TestDevice};

    #[test]
    fn nonces_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.db");
        {
            let s = Store::open(&path).unwrap();
            assert!(s.insert_nonce(&[1; 16], 100).unwrap());
            assert!(!s.insert_nonce(&[1; 16], 100).unwrap());
        }
        let s = Store::open(&path).unwrap();
        assert!(!s.insert_nonce(&[1; 16], 100).unwrap());
        assert!(s.insert_nonce(&[2; 16], 200).unwrap());
        assert_eq!(s.prune_nonces(Some(150), 0).unwrap(), (1, 150));
        assert_eq!(s.nonce_count().unwrap(), 1);
    }

    #[test]
    fn the_floor_and_mark_survive_reopening_and_never_go_down() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.db");
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(
                s.record_nonce(&[1; 16], 1_000, Some(1_010)).unwrap(),
                Strike::Recorded { mark: 1_010 }
            );
            assert_eq!(
                s.record_nonce(&[1; 16], 1_000, Some(1_010)).unwrap(),
                Strike::Replayed
            );
            // A timestamp ahead of the clock (inside the lead) raises the mark.
            assert_eq!(
                s.record_nonce(&[2; 16], 1_030, Some(1_010)).unwrap(),
                Strike::Recorded { mark: 1_030 }
            );
            // Challenge mode: the sender's timestamp raises nothing.
            assert_eq!(
                s.record_nonce(&[3; 16], 9_999_999, None).unwrap(),
                Strike::Recorded { mark: 1_030 }
            );
            assert_eq!(s.prune_nonces(Some(2_000), 60).unwrap(), (2, 2_000));
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.clock_mark().unwrap(), 2_000);
        // The clock set back: the mark stays, and the floor refuses what was pruned.
        assert_eq!(s.prune_nonces(Some(1_000), 60).unwrap(), (0, 2_000));
        assert_eq!(
            s.record_nonce(&[1; 16], 1_000, Some(1_000)).unwrap(),
            Strike::BelowFloor { floor: 1_940 }
        );
        assert_eq!(s.raise_mark(1_500).unwrap(), 2_000);
        assert_eq!(s.raise_mark(2_500).unwrap(), 2_500);
        assert_eq!(
            s.nonce_count().unwrap(),
            1,
            "the challenge-mode nonce is kept"
        );
    }

    #[test]
    fn chain_is_saved_and_verified_on_load() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        assert!(s.load_chain().unwrap().is_none());
        let mut d = TestDevice::new(3, "door");
        assert_eq!(s.save_chain(&d.chain).unwrap(), 1);
        d.claim(&[&person(1)], 1);
        assert_eq!(s.save_chain(&d.chain).unwrap(), 1);
        assert_eq!(s.save_chain(&d.chain).unwrap(), 0);
        let back = s.load_chain().unwrap().unwrap();
        assert_eq!(back.head(), d.chain.head());
        // Another branch from the genesis replaces the stored one instead of mixing with it.
        let mut other = TestDevice::new(3, "door");
        other.claim(&[&person(2)], 1);
        assert_eq!(s.save_chain(&other.chain).unwrap(), 2);
        let back = s.load_chain().unwrap().unwrap();
        assert_eq!(back.head(), other.chain.head());
        assert_eq!(s.save_chain(&d.chain).unwrap(), 2);
        // An altered op in the database is refused on load.
        let op: Vec<u8> = s
            .conn()
            .query_row("SELECT op FROM ops WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        s.conn()
            .execute(
                "UPDATE ops SET op = ?1 WHERE seq = 1",
                [latchkey_testkit::flip_bit(&op, 60)],
            )
            .unwrap();
        assert!(matches!(s.load_chain(), Err(Error::CorruptChain(_))));
    }

    #[test]
    fn a_store_from_before_op_ids_loads_and_gains_them_on_the_next_save() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.db");
        let mut d = TestDevice::new(4, "door");
        d.claim(&[&person(1)], 1);
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch("CREATE TABLE ops (seq INTEGER PRIMARY KEY, op BLOB NOT NULL)")
                .unwrap();
            for (pos, op) in d.chain.ops().iter().enumerate() {
                old.execute(
                    "INSERT INTO ops (seq, op) VALUES (?1, ?2)",
                    params![pos as i64, op.to_bytes()],
                )
                .unwrap();
            }
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.load_chain().unwrap().unwrap().head(), d.chain.head());
        // Rows without ids are rewritten once, then a save of the same chain writes nothing.
        assert_eq!(s.save_chain(&d.chain).unwrap(), 2);
        assert_eq!(s.save_chain(&d.chain).unwrap(), 0);
        d.chain.append(d.endorsement(1)).unwrap();
        assert_eq!(s.save_chain(&d.chain).unwrap(), 1);
        assert_eq!(s.load_chain().unwrap().unwrap().ops(), d.chain.ops());
    }

    #[test]
    fn an_accepted_command_is_one_transaction_all_or_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        let a = GrantId([1; 32]);
        assert_eq!(
            s.accept(&[1; 16], 1_000, Some(1_000), &[(a, 1)], None)
                .unwrap(),
            Accepted::Recorded { mark: 1_000 }
        );
        // The limit is spent: neither the nonce, the mark nor a use is written.
        assert_eq!(
            s.accept(&[2; 16], 5_000, Some(5_000), &[(a, 1)], None)
                .unwrap(),
            Accepted::LimitReached(LimitReached { grant: a, limit: 1 })
        );
        assert_eq!(s.nonce_count().unwrap(), 1);
        assert_eq!(s.clock_mark().unwrap(), 1_000);
        assert_eq!(s.uses(&a).unwrap(), 1);
        assert_eq!(
            s.accept(&[1; 16], 1_000, Some(1_000), &[], None).unwrap(),
            Accepted::Refused(Strike::Replayed)
        );
    }

    #[test]
    fn use_limits_are_all_or_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        let a = GrantId([1; 32]);
        let b = GrantId([2; 32]);
        assert_eq!(s.take_uses(&[(a, 2), (b, 1)]).unwrap(), Ok(()));
        assert_eq!(
            s.take_uses(&[(a, 2), (b, 1)]).unwrap(),
            Err(LimitReached { grant: b, limit: 1 })
        );
        assert_eq!((s.uses(&a).unwrap(), s.uses(&b).unwrap()), (1, 1));
        assert_eq!(s.take_uses(&[(a, 2)]).unwrap(), Ok(()));
        assert!(s.take_uses(&[(a, 2)]).unwrap().is_err());
    }

    #[test]
    fn relay_bookkeeping() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        assert_eq!(s.relay_cursor("http://a").unwrap(), 0);
        s.set_relay_cursor("http://a", 42).unwrap();
        assert_eq!(s.relay_cursor("http://a").unwrap(), 42);
        assert!(!s.relay_seen(&[1; 32]).unwrap());
        assert!(s.relay_first_sight(&[1; 32], 10).unwrap());
        assert!(s.relay_seen(&[1; 32]).unwrap());
        assert!(!s.relay_first_sight(&[1; 32], 11).unwrap());
        assert_eq!(s.forget_relay_seen_before(11).unwrap(), 1);
        assert!(s.relay_first_sight(&[1; 32], 12).unwrap());
    }
}
