//! `state.db`: the device's durable state in SQLite (WAL, `synchronous=FULL`): the verified
//! ownership chain, the strike register, use counts per grant, the audit log, relay cursors.
//!
//! **Invariant: a nonce is durable before its command's action runs** (it is committed by
//! [`Store::insert_nonce`], which the pipeline calls before authority and action), so neither a
//! crash nor `kill -9` can let a replay through.
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
use latchkey_proto::replay::NonceStore;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY, op BLOB NOT NULL);
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

    /// Stores the ops of `chain` this store does not hold yet (the chain only grows; a local
    /// reset extends it like any op).
    pub fn save_chain(&self, chain: &Chain) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held: u64 = tx.query_row("SELECT COUNT(*) FROM ops", [], |r| r.get(0))?;
        let mut added = 0;
        for op in chain.ops().iter().skip(held as usize) {
            tx.execute(
                "INSERT INTO ops (seq, op) VALUES (?1, ?2)",
                params![op.seq as i64, op.to_bytes()],
            )?;
            added += 1;
        }
        tx.commit()?;
        Ok(added)
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

    // --- strike register ---

    /// Records a nonce; `false` if it was already recorded. Committed (durable) on return.
    pub fn insert_nonce(&self, nonce: &[u8; NONCE_LEN], ts_ms: u64) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO nonces (nonce, ts_ms) VALUES (?1, ?2)",
            params![&nonce[..], ts_ms as i64],
        )?;
        Ok(n == 1)
    }

    pub fn forget_nonces_before(&self, ts_ms: u64) -> Result<usize> {
        Ok(self.conn().execute(
            "DELETE FROM nonces WHERE ts_ms < ?1",
            [ts_ms.min(i64::MAX as u64) as i64],
        )?)
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
        tx.commit()?;
        Ok(Ok(()))
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

/// The strike register as latchkey-proto's [`NonceStore`].
#[derive(Debug)]
pub struct StrikeRegister<'a>(pub &'a Store);

impl NonceStore for StrikeRegister<'_> {
    type Error = Error;
    fn insert_if_absent(&mut self, nonce: &[u8; NONCE_LEN], timestamp_ms: u64) -> Result<bool> {
        self.0.insert_nonce(nonce, timestamp_ms)
    }
    fn forget_before(&mut self, timestamp_ms: u64) -> Result<()> {
        self.0.forget_nonces_before(timestamp_ms).map(|_| ())
    }
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
        assert_eq!(s.forget_nonces_before(150).unwrap(), 1);
        assert_eq!(s.nonce_count().unwrap(), 1);
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
