//! `state.db`: the device's durable state in SQLite (WAL, `synchronous=FULL`): the verified
//! ownership chain, the clock's high-water mark and lease, use counts per grant, bindings of
//! redeemed invitations, the audit log, relay cursors.
//!
//! **Invariant: every timestamp the agent accepts is at or under the durable lease**
//! ([`Store::extend_lease`] runs before a timestamp above it is accepted), and each run starts
//! by reading that lease as its restart barrier ([`Store::boot`]): commands timestamped at or
//! under it need a challenge. So nonces live in memory ([`crate::strike`]) and a command
//! captured before a crash still never runs twice, with no fsync per command.
//!
//! **Invariant: the mark never goes down.** It is the newest trusted clock reading (and
//! accepted timestamp), made durable by the boot record, the timer and the sync after each
//! action; judged against it, a clock set back is caught.
//!
//! Two connections: `durable` (`synchronous=FULL`: the boot record, lease and mark, use counts,
//! bindings, the chain) fsyncs every commit; `lazy` (`synchronous=NORMAL`: the audit log,
//! relay bookkeeping, status) survives `kill -9` but may lose its last commits on power loss,
//! until the next durable commit syncs the shared WAL. An action's "about to run" entry is
//! committed on `lazy` before the action starts and made durable by [`Store::sync_through`]
//! (one group-committed fsync) before the device answers. A refused envelope nobody with
//! standing sent writes nothing at all (src/tally.rs).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use latchkey_proto::chain::{Chain, Op};
use latchkey_proto::codec::Codec;
use latchkey_proto::grant::GrantId;
use latchkey_proto::keys::PublicKey;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY, op BLOB NOT NULL, id BLOB);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS use_counts (grant_id BLOB PRIMARY KEY, used INTEGER NOT NULL);
-- Version 2 audit log (src/audit_log.rs). A version 1 table `audit`, if present, is left as it was.
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY, era BLOB NOT NULL, hash BLOB NOT NULL,
    accepted INTEGER NOT NULL, entry BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS relay_cursors (node TEXT PRIMARY KEY, after INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS relay_seen (hash BLOB PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS relay_seen_at ON relay_seen (at_ms);
CREATE TABLE IF NOT EXISTS clock (key TEXT PRIMARY KEY, ms INTEGER NOT NULL);
-- Bind-on-first-use grants redeemed here: the phone key each is bound to (docs/PROTOCOL.md §10).
CREATE TABLE IF NOT EXISTS bindings (
    grant_id BLOB PRIMARY KEY, key BLOB NOT NULL, bound_ms INTEGER NOT NULL);
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
    /// Group commit of the lazy connection's "about to run" entries ([`Store::sync_through`]).
    sync_lock: Mutex<()>,
    /// Tickets issued by [`Store::append_running`] (each after its commit).
    lazy_commits: AtomicU64,
    /// Every ticket up to this one is durable.
    durable_through: AtomicU64,
}

/// A use limit that is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReached {
    pub grant: GrantId,
    pub limit: u32,
}

/// Distinct statements kept prepared per connection (the hot path uses about fifteen).
const STATEMENT_CACHE: usize = 64;

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let open = |synchronous: &str| -> Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", synchronous)?;
            // Every command runs the same dozen statements; kept prepared, SQLite parses
            // none of them again.
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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
        migrate_strike_register(&durable)?;
        let lazy = open("NORMAL")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Store {
            durable: Mutex::new(durable),
            lazy: Mutex::new(lazy),
            sync_lock: Mutex::new(()),
            lazy_commits: AtomicU64::new(0),
            durable_through: AtomicU64::new(0),
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
        let mut stmt = conn.prepare_cached("SELECT op FROM ops ORDER BY seq")?;
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
            let mut stmt = tx.prepare_cached("SELECT id FROM ops ORDER BY seq")?;
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
            tx.prepare_cached("DELETE FROM ops")?.execute([])?;
            0
        };
        for (pos, (op, id)) in ops.iter().zip(&ids).enumerate().skip(from) {
            tx.prepare_cached("INSERT INTO ops (seq, op, id) VALUES (?1, ?2, ?3)")?
                .execute(params![pos as i64, op.to_bytes(), &id.0[..]])?;
        }
        tx.commit()?;
        Ok(ops.len() - from)
    }

    // --- small settings and status ---

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .lazy()
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.lazy()
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
        Ok(())
    }

    // --- the restart barrier, the lease and the high-water mark of time ---

    /// The boot record, written once when a run of the agent starts (one fsync): counts the
    /// run, raises the mark to a trusted clock reading, and returns the **restart barrier**: the
    /// lease as the previous runs left it. Every timestamp they accepted is at or under it
    /// ([`Store::extend_lease`] is durable before a timestamp above the old lease is accepted),
    /// so this run asks a challenge of every command timestamped at or under it, and no
    /// envelope accepted before a crash, `kill -9` or power cut can run again.
    pub fn boot(&self, trusted_now: Option<u64>) -> Result<BootRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let boots = clock_value(&tx, BOOTS)?.saturating_add(1);
        set_clock_value(&tx, BOOTS, boots)?;
        let mut mark = clock_value(&tx, MARK)?;
        if let Some(now) = trusted_now.filter(|now| *now > mark) {
            mark = now;
            set_clock_value(&tx, MARK, mark)?;
        }
        let barrier = clock_value(&tx, LEASE)?;
        set_clock_value(&tx, BARRIER, barrier)?;
        tx.commit()?;
        Ok(BootRecord {
            boots,
            barrier,
            mark,
        })
    }

    /// Raises the lease (the bound on every timestamp this run may accept) and the mark,
    /// durably: one `synchronous=FULL` transaction, which also makes every earlier commit of
    /// the lazy connection durable (they share the WAL it syncs). Neither ever goes down.
    /// Always writes, so the commit always syncs. Returns `(lease, mark)` as stored.
    pub fn extend_lease(&self, lease: u64, mark: u64) -> Result<(u64, u64)> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let lease = clock_value(&tx, LEASE)?.max(lease);
        let mark = clock_value(&tx, MARK)?.max(mark);
        set_clock_value(&tx, LEASE, lease)?;
        set_clock_value(&tx, MARK, mark)?;
        // SQLite writes no page for an update to the value a row already holds, and a commit
        // without pages neither writes nor syncs the WAL. Lease and mark stand still within a
        // millisecond and on a door without a trusted clock, so the count of durable commits
        // is what makes every one of them a write, and so a sync.
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('durable_commits', '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        )?
        .execute([])?;
        tx.commit()?;
        Ok((lease, mark))
    }

    /// Makes every lazy commit up to `ticket` (from [`Store::append_running`]) durable, with
    /// the lease and mark as [`Store::extend_lease`]. Group commit: callers queue on one lock,
    /// and a sync covers every lazy commit made before it started, so concurrent commands share
    /// one fsync. Returns at once if an earlier sync already covered `ticket`.
    pub fn sync_through(&self, ticket: u64, lease: u64, mark: u64) -> Result<()> {
        let _one_at_a_time = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.durable_through.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Read before the commit: every ticket up to here was committed before it was issued.
        let target = self.lazy_commits.load(Ordering::SeqCst);
        self.extend_lease(lease, mark)?;
        self.durable_through.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    /// The high-water mark of time (0 before the first trusted reading).
    pub fn clock_mark(&self) -> Result<u64> {
        clock_value(&self.conn(), MARK)
    }

    /// The lease: no run accepted a timestamp above it (0 if none ever accepted one).
    pub fn lease(&self) -> Result<u64> {
        clock_value(&self.conn(), LEASE)
    }

    /// The barrier of the current (or last) run, as its boot record wrote it.
    pub fn restart_barrier(&self) -> Result<u64> {
        clock_value(&self.conn(), BARRIER)
    }

    // --- an accepted command's records ---

    /// An action's "about to run" entry on the lazy connection: committed to the WAL (so it
    /// survives `kill -9`) but not fsynced. Returns the ticket to pass to
    /// [`Store::sync_through`], which makes it durable (the pipeline does so before answering).
    pub fn append_running(&self, entry: RunningEntry<'_>) -> Result<u64> {
        let mut conn = self.lazy();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        entry.append_in(&tx)?;
        tx.commit()?;
        // Issued after the commit, so a sync that reads a count at or above it covers it.
        Ok(self.lazy_commits.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// The durable writes of a command whose grants count uses or which redeems a binding, all
    /// in one transaction (one fsync) and all or nothing, before the action runs: one use of
    /// every grant in `limits` (as [`Store::take_uses`]), the binding, and the "about to run"
    /// entry. A use limit must not come back after a crash (a guest would get more uses than
    /// granted), nor may a binding, so these few commands still pay their fsync up front.
    pub fn accept_durable(
        &self,
        limits: &[(GrantId, u32)],
        binding: Option<(GrantId, PublicKey, u64)>,
        running: Option<RunningEntry<'_>>,
    ) -> Result<Accepted> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Err(spent) = take_uses_in(&tx, limits)? {
            return Ok(Accepted::LimitReached(spent));
        }
        if let Some((grant, key, bound_ms)) = binding {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO bindings (grant_id, key, bound_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![&grant.0[..], key.as_bytes(), clamp(bound_ms)])?;
            let stored: Vec<u8> = tx
                .prepare_cached("SELECT key FROM bindings WHERE grant_id = ?1")?
                .query_row([&grant.0[..]], |r| r.get(0))?;
            if stored != key.as_bytes() {
                return Ok(Accepted::AlreadyBound);
            }
        }
        if let Some(entry) = running {
            entry.append_in(&tx)?;
        }
        tx.commit()?;
        Ok(Accepted::Recorded)
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

    /// Every stored binding: grant id and the phone key it is bound to.
    pub fn bindings(&self) -> Result<Vec<(GrantId, PublicKey)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT grant_id, key FROM bindings")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (grant, key) = row?;
            let (Ok(grant), Ok(key)) = (<[u8; 32]>::try_from(grant), <[u8; 32]>::try_from(key))
            else {
                return Err(Error::Internal(
                    "a row of the bindings table is not a 32-byte grant id and key; the database was altered".into(),
                ));
            };
            let key = PublicKey::from_bytes(key)
                .map_err(|e| Error::Internal(format!("a binding's key in the database: {e}")))?;
            out.push((GrantId(grant), key));
        }
        Ok(out)
    }

    pub fn uses(&self, grant: &GrantId) -> Result<u32> {
        Ok(self
            .conn()
            .prepare_cached("SELECT used FROM use_counts WHERE grant_id = ?1")?
            .query_row([&grant.0[..]], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    // --- audit log: src/audit_log.rs ---

    // --- relay ---

    pub fn relay_cursor(&self, node: &str) -> Result<u64> {
        let v: Option<i64> = self
            .lazy()
            .prepare_cached("SELECT after FROM relay_cursors WHERE node = ?1")?
            .query_row([node], |r| r.get(0))
            .optional()?;
        Ok(v.map_or(0, |v| v as u64))
    }

    pub fn set_relay_cursor(&self, node: &str, after: u64) -> Result<()> {
        self.lazy()
            .prepare_cached(
                "INSERT INTO relay_cursors (node, after) VALUES (?1, ?2)
             ON CONFLICT (node) DO UPDATE SET after = excluded.after",
            )?
            .execute(params![node, after as i64])?;
        Ok(())
    }

    /// Records a relayed envelope's hash; `false` if it was seen before (a copy through
    /// another node).
    pub fn relay_first_sight(&self, hash: &[u8; 32], at_ms: u64) -> Result<bool> {
        let n = self
            .lazy()
            .prepare_cached("INSERT OR IGNORE INTO relay_seen (hash, at_ms) VALUES (?1, ?2)")?
            .execute(params![&hash[..], at_ms as i64])?;
        Ok(n == 1)
    }

    /// Whether a relayed envelope's hash was recorded (a read: no write for junk).
    pub fn relay_seen(&self, hash: &[u8; 32]) -> Result<bool> {
        Ok(self
            .lazy()
            .prepare_cached("SELECT 1 FROM relay_seen WHERE hash = ?1")?
            .query_row([&hash[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn forget_relay_seen_before(&self, at_ms: u64) -> Result<usize> {
        Ok(self
            .lazy()
            .prepare_cached("DELETE FROM relay_seen WHERE at_ms < ?1")?
            .execute([at_ms.min(i64::MAX as u64) as i64])?)
    }
}

/// What [`Store::boot`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootRecord {
    /// How many runs the agent has started on this state, this one included.
    pub boots: u64,
    /// Commands timestamped at or under this need a challenge in this run (0: none do).
    pub barrier: u64,
    /// The high-water mark of time after the record.
    pub mark: u64,
}

/// What [`Store::accept_durable`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Everything is on disk.
    Recorded,
    /// A use limit is spent; nothing was written.
    LimitReached(LimitReached),
    /// The grant being redeemed is bound to another key; nothing was written.
    AlreadyBound,
}

/// The "about to run" entry of an accepted action.
#[derive(Debug)]
pub struct RunningEntry<'a> {
    pub era: &'a crate::audit_log::EraInfo,
    pub time_ms: Option<u64>,
    pub body: latchkey_proto::audit::AuditBody,
    pub identity: &'a latchkey_proto::keys::SigningKey,
}

impl RunningEntry<'_> {
    /// Appends the entry inside `tx` (committed by the caller).
    fn append_in(self, tx: &rusqlite::Transaction<'_>) -> Result<()> {
        crate::audit_log::append_in(tx, self.era, self.time_ms, Some(self.body), self.identity)?;
        Ok(())
    }
}

/// Spends one use of every grant in `limits` inside `tx`, all or none.
fn take_uses_in(
    tx: &rusqlite::Transaction<'_>,
    limits: &[(GrantId, u32)],
) -> Result<std::result::Result<(), LimitReached>> {
    for (grant, limit) in limits {
        let used: u32 = tx
            .prepare_cached("SELECT used FROM use_counts WHERE grant_id = ?1")?
            .query_row([&grant.0[..]], |r| r.get(0))
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
        tx.prepare_cached(
            "INSERT INTO use_counts (grant_id, used) VALUES (?1, 1)
             ON CONFLICT (grant_id) DO UPDATE SET used = used + 1",
        )?
        .execute([&grant.0[..]])?;
    }
    Ok(Ok(()))
}

const MARK: &str = "mark";
/// The bound on every timestamp accepted so far (see [`Store::boot`]).
const LEASE: &str = "lease";
/// The current run's restart barrier (status only: [`Store::boot`] recomputes it).
const BARRIER: &str = "barrier";
const BOOTS: &str = "boots";

/// A store from before the restart barrier kept its strike register in a `nonces` table.
/// Its newest timestamp bounds every timestamp accepted then, so it becomes the lease (the
/// first run after the upgrade asks a challenge of everything at or under it) and the table
/// goes, in one durable transaction.
fn migrate_strike_register(conn: &Connection) -> Result<()> {
    let has_table: bool = conn
        .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nonces'")?
        .exists([])?;
    if !has_table {
        return Ok(());
    }
    let newest: Option<i64> = conn
        .prepare_cached("SELECT MAX(ts_ms) FROM nonces")?
        .query_row([], |r| r.get(0))?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let done = (|| -> Result<()> {
        let lease = clock_value(conn, LEASE)?.max(newest.map_or(0, |t| t.max(0) as u64));
        set_clock_value(conn, LEASE, lease)?;
        conn.execute_batch("DROP TABLE nonces")?;
        Ok(())
    })();
    match done {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}

fn clock_value(conn: &Connection, key: &str) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT ms FROM clock WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(v.map_or(0, |v| v.max(0) as u64))
}

fn set_clock_value(conn: &Connection, key: &str, ms: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO clock (key, ms) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET ms = excluded.ms",
    )?
    .execute(params![key, clamp(ms)])?;
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
    fn every_sync_commits_even_when_the_lease_and_mark_stand_still() {
        // An update to the value a row already holds writes no page in SQLite, and a commit
        // without pages neither writes nor syncs the WAL: a sync in the same millisecond as
        // the last one (or on a door without a trusted clock) would have acknowledged an
        // entry that was never made durable.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.db");
        let s = Store::open(&path).unwrap();
        let observer = Connection::open(&path).unwrap();
        let version = || -> i64 {
            observer
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .unwrap()
        };
        s.extend_lease(5_000, 1_200).unwrap();
        for _ in 0..3 {
            // As `append_running` does after its lazy commit.
            let ticket = s.lazy_commits.fetch_add(1, Ordering::SeqCst) + 1;
            let before = version();
            s.sync_through(ticket, 5_000, 1_200).unwrap();
            assert_ne!(version(), before, "the sync committed nothing");
            assert_eq!(s.lease().unwrap(), 5_000);
            assert_eq!(s.clock_mark().unwrap(), 1_200);
        }
    }

    #[test]
    fn the_barrier_is_the_lease_the_last_run_left_and_nothing_goes_down() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.db");
        {
            let s = Store::open(&path).unwrap();
            // A new device: nothing was ever accepted, so nothing needs a challenge.
            assert_eq!(
                s.boot(Some(1_000)).unwrap(),
                BootRecord {
                    boots: 1,
                    barrier: 0,
                    mark: 1_000
                }
            );
            assert_eq!(s.extend_lease(5_000, 1_200).unwrap(), (5_000, 1_200));
            // Lower values never lower what is stored.
            assert_eq!(s.extend_lease(4_000, 1_100).unwrap(), (5_000, 1_200));
        }
        // As after kill -9: the next run's barrier is the lease, even with the clock set back
        // (a reading under the mark does not lower it).
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.boot(Some(900)).unwrap(),
            BootRecord {
                boots: 2,
                barrier: 5_000,
                mark: 1_200
            }
        );
        assert_eq!(s.restart_barrier().unwrap(), 5_000);
        assert_eq!(s.lease().unwrap(), 5_000);
        // A clockless run keeps the mark.
        assert_eq!(s.boot(None).unwrap().mark, 1_200);
    }

    #[test]
    fn a_store_with_the_old_strike_register_turns_it_into_the_lease() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE nonces (nonce BLOB PRIMARY KEY, ts_ms INTEGER NOT NULL);
                 INSERT INTO nonces VALUES (x'01', 7000), (x'02', 9000);",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.boot(Some(8_000)).unwrap().barrier, 9_000);
        let gone: bool = s
            .conn()
            .prepare("SELECT 1 FROM sqlite_master WHERE name = 'nonces'")
            .unwrap()
            .exists([])
            .unwrap();
        assert!(!gone, "the old table is dropped");
    }

    #[test]
    fn lazy_entries_become_durable_in_one_group_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        let d = TestDevice::new(5, "door");
        let era = crate::audit_log::EraInfo::of(&d.chain);
        let entry = || RunningEntry {
            era: &era,
            time_ms: Some(1),
            body: crate::audit::AuditBody::Refusals(crate::audit::RefusalSummary {
                first_ms: None,
                last_ms: None,
                rows: vec![],
            }),
            identity: &d.keys.identity,
        };
        let first = s.append_running(entry()).unwrap();
        let second = s.append_running(entry()).unwrap();
        assert_eq!((first, second), (1, 2));
        s.sync_through(first, 10, 10).unwrap();
        // The sync read the count after both commits: the second is covered too, no new write.
        assert_eq!(s.durable_through.load(Ordering::SeqCst), 2);
        s.sync_through(second, 99, 99).unwrap();
        assert_eq!(s.lease().unwrap(), 10, "no second sync");
        let third = s.append_running(entry()).unwrap();
        s.sync_through(third, 20, 20).unwrap();
        assert_eq!((s.lease().unwrap(), s.clock_mark().unwrap()), (20, 20));
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
    fn a_durable_acceptance_is_one_transaction_all_or_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s.db")).unwrap();
        let a = GrantId([1; 32]);
        let b = GrantId([2; 32]);
        assert_eq!(
            s.accept_durable(&[(a, 1)], None, None).unwrap(),
            Accepted::Recorded
        );
        // One limit spent: no use of the other grant is counted either.
        assert_eq!(
            s.accept_durable(&[(b, 5), (a, 1)], None, None).unwrap(),
            Accepted::LimitReached(LimitReached { grant: a, limit: 1 })
        );
        assert_eq!((s.uses(&a).unwrap(), s.uses(&b).unwrap()), (1, 0));
        // A binding to another key: refused, and the use it came with is not counted.
        let (k1, k2) = (person(1).public_key(), person(2).public_key());
        assert_eq!(
            s.accept_durable(&[], Some((b, k1, 5)), None).unwrap(),
            Accepted::Recorded
        );
        assert_eq!(
            s.accept_durable(&[(b, 5)], Some((b, k2, 6)), None).unwrap(),
            Accepted::AlreadyBound
        );
        assert_eq!(s.uses(&b).unwrap(), 0);
        assert_eq!(s.bindings().unwrap(), vec![(b, k1)]);
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
