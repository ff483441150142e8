//! The SQLite backend: one file, WAL, `synchronous=FULL`. **Invariant: a write returns only
//! once it is durable.**
//!
//! One writer connection and one reader connection, each behind an async mutex: a caller waits
//! for its turn without holding a thread, then runs its SQL on tokio's blocking pool, so the
//! runtime never waits on the disk and a node keeps at most two blocking threads busy with
//! SQLite. Every write goes through the one writer, so the feed's autoincrement cursor is also
//! the commit order. One process owns the file: [`Backend::changes`] carries this process's
//! commits only.

mod chains;
mod consents;
mod invites;
mod mailboxes;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use latchkey_proto::keys::DeviceId;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{broadcast, Mutex};

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
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    changes: broadcast::Sender<Change>,
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
        let open = |path: &Path| {
            let conn = Connection::open(path).map_err(|source| Error::OpenDb {
                path: path.to_owned(),
                source,
            })?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            // A small page cache: many nodes may share one process.
            conn.pragma_update(None, "cache_size", -1024)?;
            Ok::<_, Error>(conn)
        };
        let writer = open(path)?;
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
        let reader = open(path)?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        })
    }

    /// Runs `f` in one durable transaction on the writer connection, in the blocking pool.
    /// An error rolls back whatever `f` wrote.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let mut conn = self.writer.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await?
    }

    /// Runs `f` on the reader connection in the blocking pool.
    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.reader.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&conn)).await?
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
        let written = self
            .write(move |c| chains::update_ops(c, &device, version, &rows, &removed, now_ms))
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
        self.write(move |c| {
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
        self.write(move |c| chains::set_peer_cursor(c, &peer, cursor))
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
            .write(move |c| mailboxes::post(c, &mailbox, &body, expires_ms, now_ms, &quota))
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
        self.write(move |c| {
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
        self.write(move |c| invites::put(c, &id, &body, expires_ms, now_ms, &quota))
            .await
    }

    async fn invite_get(&self, id: [u8; 32], now_ms: u64) -> Result<Option<Vec<u8>>> {
        self.read(move |c| invites::get(c, &id, now_ms)).await
    }

    async fn invite_purge(&self, now_ms: u64) -> Result<usize> {
        self.write(move |c| invites::purge(c, now_ms)).await
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
        let appended = self
            .write(move |c| consents::append(c, &device, &rows, now_ms))
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
        self.write(move |c| {
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
