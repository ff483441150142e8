//! The SQLite backend: one file, WAL, `synchronous=FULL`. **Invariant: a write returns only
//! once it is durable.**
//!
//! Writes go through group commit ([`group`]): one writer thread owns the writer connection and
//! commits the writes waiting at once in one transaction (one fsync), each in its own savepoint,
//! and answers their callers after that commit. Every write goes through the one writer, so the
//! feeds' autoincrement cursors are also the commit order. Reads use a small pool of reader
//! connections (WAL lets them read beside the writer and each other) on tokio's blocking pool,
//! so the runtime never waits on the disk. One process owns the file: [`Backend::changes`]
//! carries this process's commits only.

mod chains;
mod consents;
mod group;
mod invites;
mod mailboxes;

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use latchkey_proto::keys::DeviceId;
use rusqlite::Connection;
use tokio::sync::{broadcast, Semaphore};

use super::{
    Backend, Change, ConsentRows, DeviceRows, EntryRow, FeedRow, ForkRow, MailboxId,
    MailboxRefusal, MessageRow, OpRow, PostQuota, Stale, CHANGES_CAPACITY,
};
use crate::error::{Error, Result};
use crate::invites::{InviteQuota, InviteRefusal, Stored};

/// 2: ops are unique by id, not by seq (side ops share seqs; docs/PROTOCOL.md §3.3).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ops (
    cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
    device      BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    op_id       BLOB NOT NULL,
    bytes       BLOB NOT NULL,
    accepted_ms INTEGER NOT NULL,
    UNIQUE (device, op_id)
);
CREATE INDEX IF NOT EXISTS ops_by_device ON ops (device, cursor);
CREATE TABLE IF NOT EXISTS forks (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    device    BLOB NOT NULL,
    seq       INTEGER NOT NULL,
    theirs_id BLOB NOT NULL,
    ours      BLOB NOT NULL,
    theirs    BLOB NOT NULL,
    found_ms  INTEGER NOT NULL,
    UNIQUE (device, seq, theirs_id)
);
CREATE TABLE IF NOT EXISTS peer_cursors (
    peer   TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox    BLOB NOT NULL,
    body       BLOB NOT NULL,
    expires_ms INTEGER NOT NULL,
    sender     BLOB NOT NULL DEFAULT x'',
    address    BLOB NOT NULL DEFAULT x''
);
CREATE INDEX IF NOT EXISTS mailbox_by_box ON mailbox_messages (mailbox, id);
CREATE INDEX IF NOT EXISTS mailbox_by_expiry ON mailbox_messages (expires_ms);
CREATE TABLE IF NOT EXISTS chain_versions (
    device  BLOB PRIMARY KEY,
    version INTEGER NOT NULL
);
";

/// Who posted a mailbox message, for the per-sender caps. A database from before them gains
/// the columns here (its messages count against nobody and expire within the hour); no schema
/// version is spent on it.
const MAILBOX_SENDERS: &str = "
CREATE INDEX IF NOT EXISTS mailbox_by_sender ON mailbox_messages (mailbox, sender, expires_ms);
CREATE INDEX IF NOT EXISTS mailbox_by_address ON mailbox_messages (address, expires_ms);
";

/// The node's SQLite database.
#[derive(Debug)]
pub struct SqliteStore {
    writer: group::GroupWriter,
    readers: Readers,
    changes: broadcast::Sender<Change>,
}

/// How many reader connections a store keeps: reads of different devices and mailboxes run
/// side by side (this many blocking threads at most), without taking every blocking thread.
pub const READERS: usize = 4;

/// Idle reader connections, and a permit per connection so a reader waits for one without
/// holding a thread.
#[derive(Debug)]
struct Readers {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn device_from_blob(blob: Vec<u8>) -> rusqlite::Result<DeviceId> {
    let bytes: [u8; 32] = blob.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "device id is not 32 bytes".into(),
        )
    })?;
    Ok(DeviceId(bytes))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// Blocking: call from a blocking context.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let writer = open_conn(path)?;
        let found: i64 = writer.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        if (1..SCHEMA_VERSION).contains(&found) {
            // Version 1 held chains of the earlier protocol (revocations on the spine), which
            // no longer verify: a node re-syncs from its peers instead.
            return Err(Error::SchemaTooOld {
                found,
                known: SCHEMA_VERSION,
            });
        }
        writer.execute_batch(SCHEMA)?;
        add_mailbox_senders(&writer)?;
        invites::create(&writer)?;
        consents::create(&writer)?;
        writer.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        let mut idle = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            idle.push(open_conn(path)?);
        }
        Ok(SqliteStore {
            writer: group::GroupWriter::start(writer)?,
            readers: Readers {
                path: path.to_owned(),
                idle: Mutex::new(idle),
                permits: Semaphore::new(READERS),
            },
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        })
    }

    /// Runs `f` in the next group commit (its own savepoint in a shared transaction) and
    /// returns its result once that transaction is durable. An error rolls back whatever `f`
    /// wrote, and only that. `bytes` is about how much `f` writes.
    async fn write<R, F>(&self, bytes: usize, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.write(bytes, f).await
    }

    /// Runs `f` on a reader connection in the blocking pool.
    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let _permit = self
            .readers
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("the reader pool is closed".into()))?;
        let idle = self
            .readers
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let path = self.readers.path.clone();
        // `spawn_blocking` needs 'static: the connection travels there and back. One lost to a
        // panic is replaced by a new one on a later read.
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(conn) => conn,
                None => open_conn(&path)?,
            };
            let out = f(&conn);
            Ok::<_, Error>((conn, out))
        })
        .await??;
        self.readers
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        out
    }

    fn announce(&self, change: Change) {
        // Nobody listening is fine: nothing is cached yet.
        let _ = self.changes.send(change);
    }
}

#[async_trait]
impl Backend for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn shared(&self) -> bool {
        false
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn known_devices(&self) -> Result<Vec<DeviceId>> {
        self.read(chains::known_devices).await
    }

    async fn load_device(&self, device: DeviceId) -> Result<DeviceRows> {
        self.read(move |c| chains::load_device(c, &device)).await
    }

    async fn update_ops(
        &self,
        device: DeviceId,
        version: u64,
        rows: Vec<OpRow>,
        removed: Vec<[u8; 32]>,
        now_ms: u64,
    ) -> Result<core::result::Result<u64, Stale>> {
        let bytes = rows.iter().map(|r| r.bytes.len()).sum();
        let written = self
            .write(bytes, move |c| {
                chains::update_ops(c, &device, version, &rows, &removed, now_ms)
            })
            .await?;
        if let Ok(version) = written {
            self.announce(Change::Ops { device, version });
        }
        Ok(written)
    }

    async fn insert_fork(
        &self,
        device: DeviceId,
        seq: u64,
        theirs_id: [u8; 32],
        ours: Vec<u8>,
        theirs: Vec<u8>,
        now_ms: u64,
    ) -> Result<bool> {
        self.write(ours.len() + theirs.len(), move |c| {
            chains::insert_fork(c, &device, seq, &theirs_id, &ours, &theirs, now_ms)
        })
        .await
    }

    async fn forks(&self, device: DeviceId) -> Result<Vec<ForkRow>> {
        self.read(move |c| chains::forks(c, &device)).await
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedRow>> {
        self.read(move |c| chains::feed(c, after, limit)).await
    }

    async fn peer_cursor(&self, peer: &str) -> Result<u64> {
        let peer = peer.to_owned();
        self.read(move |c| chains::peer_cursor(c, &peer)).await
    }

    async fn set_peer_cursor(&self, peer: &str, cursor: u64) -> Result<()> {
        let peer = peer.to_owned();
        self.write(0, move |c| chains::set_peer_cursor(c, &peer, cursor))
            .await
    }

    async fn mailbox_live_total(&self, now_ms: u64) -> Result<u64> {
        self.read(move |c| mailboxes::live_total(c, now_ms)).await
    }

    async fn mailbox_post(
        &self,
        mailbox: MailboxId,
        body: Vec<u8>,
        expires_ms: u64,
        now_ms: u64,
        quota: PostQuota,
    ) -> Result<core::result::Result<u64, MailboxRefusal>> {
        let posted = self
            .write(body.len(), move |c| {
                mailboxes::post(c, &mailbox, &body, expires_ms, now_ms, &quota)
            })
            .await?;
        if posted.is_ok() {
            self.announce(Change::Mailbox(mailbox));
        }
        Ok(posted)
    }

    async fn mailbox_read(
        &self,
        mailbox: MailboxId,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<MessageRow>> {
        self.read(move |c| mailboxes::read(c, &mailbox, after, now_ms, limit))
            .await
    }

    async fn mailbox_purge(&self, now_ms: u64) -> Result<(usize, u64)> {
        self.write(0, move |c| {
            let purged = mailboxes::purge(c, now_ms)?;
            Ok((purged, mailboxes::live_total(c, now_ms)?))
        })
        .await
    }

    async fn invite_put(
        &self,
        id: [u8; 32],
        body: Vec<u8>,
        expires_ms: u64,
        now_ms: u64,
        quota: InviteQuota,
    ) -> Result<core::result::Result<Stored, InviteRefusal>> {
        self.write(body.len(), move |c| {
            invites::put(c, &id, &body, expires_ms, now_ms, &quota)
        })
        .await
    }

    async fn invite_get(&self, id: [u8; 32], now_ms: u64) -> Result<Option<Vec<u8>>> {
        self.read(move |c| invites::get(c, &id, now_ms)).await
    }

    async fn invite_purge(&self, now_ms: u64) -> Result<usize> {
        self.write(0, move |c| invites::purge(c, now_ms)).await
    }

    async fn consent_load(&self, device: DeviceId) -> Result<ConsentRows> {
        self.read(move |c| {
            Ok(ConsentRows {
                entries: consents::load(c, &device)?,
                fork_hashes: consents::fork_hashes(c, &device)?,
            })
        })
        .await
    }

    async fn consent_page(
        &self,
        device: DeviceId,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        self.read(move |c| consents::page(c, &device, from, max_entries, max_bytes))
            .await
    }

    async fn consent_append(
        &self,
        device: DeviceId,
        rows: Vec<EntryRow>,
        now_ms: u64,
    ) -> Result<core::result::Result<(), Stale>> {
        let len = rows.last().map(|r| r.seq);
        let bytes = rows.iter().map(|r| r.bytes.len()).sum();
        let appended = self
            .write(bytes, move |c| consents::append(c, &device, &rows, now_ms))
            .await?;
        if let (Ok(()), Some(len)) = (appended, len) {
            self.announce(Change::Consents { device, len });
        }
        Ok(appended)
    }

    async fn consent_insert_fork(
        &self,
        device: DeviceId,
        seq: u64,
        theirs_hash: [u8; 32],
        ours: Vec<u8>,
        theirs: Vec<u8>,
        now_ms: u64,
    ) -> Result<bool> {
        self.write(ours.len() + theirs.len(), move |c| {
            consents::insert_fork(c, &device, seq, &theirs_hash, &ours, &theirs, now_ms)
        })
        .await
    }

    async fn consent_forks(&self, device: DeviceId) -> Result<Vec<ForkRow>> {
        self.read(move |c| consents::forks(c, &device)).await
    }

    async fn consent_feed(&self, after: u64, limit: usize) -> Result<Vec<FeedRow>> {
        self.read(move |c| consents::feed(c, after, limit)).await
    }
}

/// Opens one connection to the database file with the node's settings.
fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|source| Error::OpenDb {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // A small page cache: many nodes may share one process.
    conn.pragma_update(None, "cache_size", -1024)?;
    // The bundled SQLite has STAT4, which otherwise recompiles a cached statement whenever a
    // value bound against an indexed column changes (every mailbox read, by its cursor and
    // clock): the plans here do not depend on the values.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    // Every statement the store runs stays prepared on each connection.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn add_mailbox_senders(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('mailbox_messages')")?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for column in ["sender", "address"] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE mailbox_messages ADD COLUMN {column} BLOB NOT NULL DEFAULT x''"
            ))?;
        }
    }
    conn.execute_batch(MAILBOX_SENDERS)?;
    Ok(())
}
