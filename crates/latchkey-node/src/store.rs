//! SQLite storage. **Invariant: a write returns only once it is durable** (WAL,
//! `synchronous=FULL`, one transaction per request).
//!
//! One writer connection and one reader connection, each behind an async mutex: a caller waits
//! for its turn without holding a thread, then runs its SQL on tokio's blocking pool, so the
//! runtime never waits on the disk and a node keeps at most two blocking threads busy with
//! SQLite. Every write goes through the one writer, so the feed's autoincrement cursor is also
//! the commit order.

use std::path::Path;
use std::sync::Arc;

use latchkey_proto::keys::DeviceId;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

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
";

/// Who posted a mailbox message, for the per-sender caps. A database from before them gains
/// the columns here (its messages count against nobody and expire within the hour); no schema
/// version is spent on it.
const MAILBOX_SENDERS: &str = "
CREATE INDEX IF NOT EXISTS mailbox_by_sender ON mailbox_messages (mailbox, sender, expires_ms);
CREATE INDEX IF NOT EXISTS mailbox_by_address ON mailbox_messages (address, expires_ms);
";

/// The node's database.
#[derive(Debug, Clone)]
pub struct Store {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

/// A new op of the main chain, ready to store.
#[derive(Debug, Clone)]
pub struct OpRow {
    pub seq: u64,
    pub id: [u8; 32],
    pub bytes: Vec<u8>,
}

/// One entry of the feed.
#[derive(Debug, Clone)]
pub struct FeedRow {
    pub cursor: u64,
    pub device: DeviceId,
    pub bytes: Vec<u8>,
}

/// Stored fork evidence.
#[derive(Debug, Clone)]
pub struct ForkRow {
    pub seq: u64,
    pub ours: Vec<u8>,
    pub theirs: Vec<u8>,
}

/// A device's stored main chain and the fork ops recorded against it.
#[derive(Debug, Clone, Default)]
pub struct DeviceRows {
    pub ops: Vec<Vec<u8>>,
    pub forks: Vec<Vec<u8>>,
}

/// A stored mailbox message.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: u64,
    pub body: Vec<u8>,
    pub expires_ms: u64,
}

/// Why a mailbox post was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxRefusal {
    /// This sender holds its maximum of live messages in this mailbox.
    MailboxFull,
    /// This client address holds its maximum of live messages across all mailboxes.
    AddressFull,
    /// The node holds its maximum of live messages across all mailboxes.
    NodeFull,
}

/// Who a mailbox message counts against, and how much each may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostQuota {
    /// The sender's key within the mailbox (docs/API.md, "Who may post what").
    pub sender: Vec<u8>,
    /// The client address (an IPv4 address or an IPv6 /64), across all mailboxes.
    pub address: Vec<u8>,
    pub per_sender: usize,
    pub per_address: usize,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
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

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// Blocking: call from a blocking context.
    pub fn open(path: &Path) -> Result<Store> {
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
        crate::invites::create(&writer)?;
        crate::consents::store::create(&writer)?;
        writer.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        let reader = open(path)?;
        Ok(Store {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Runs `f` on the writer connection in the blocking pool.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let mut conn = self.writer.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&mut conn)).await?
    }

    /// Runs `f` on the reader connection in the blocking pool.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.reader.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&conn)).await?
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

// --- chains ---

/// Every device that has a stored genesis.
pub fn known_devices(conn: &Connection) -> Result<Vec<DeviceId>> {
    let mut stmt = conn.prepare("SELECT device FROM ops WHERE seq = 0")?;
    let rows = stmt.query_map([], |r| device_from_blob(r.get(0)?))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A device's stored chain, in the order the ops were stored (each after its parent or anchor),
/// and its recorded fork ops.
pub fn load_device(conn: &Connection, device: &DeviceId) -> Result<DeviceRows> {
    let mut stmt =
        conn.prepare_cached("SELECT bytes FROM ops WHERE device = ?1 ORDER BY cursor")?;
    let ops = stmt
        .query_map([&device.0[..]], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached("SELECT theirs FROM forks WHERE device = ?1 ORDER BY id")?;
    let forks = stmt
        .query_map([&device.0[..]], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(DeviceRows { ops, forks })
}

/// Changes a device's stored chain in one durable transaction: `rows` are added, the ops with
/// ids in `removed` (a branch the device did not endorse, revocations of an ended era) go.
pub fn update_ops(
    conn: &mut Connection,
    device: &DeviceId,
    rows: &[OpRow],
    removed: &[[u8; 32]],
    now_ms: u64,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached("DELETE FROM ops WHERE device = ?1 AND op_id = ?2")?;
        for id in removed {
            stmt.execute(params![&device.0[..], &id[..]])?;
        }
        let mut stmt = tx.prepare_cached(
            "INSERT INTO ops (device, seq, op_id, bytes, accepted_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for row in rows {
            stmt.execute(params![
                &device.0[..],
                to_i64(row.seq),
                &row.id[..],
                &row.bytes,
                to_i64(now_ms)
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Records fork evidence; returns whether it was new.
pub fn insert_fork(
    conn: &mut Connection,
    device: &DeviceId,
    seq: u64,
    theirs_id: &[u8; 32],
    ours: &[u8],
    theirs: &[u8],
    now_ms: u64,
) -> Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO forks (device, seq, theirs_id, ours, theirs, found_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            &device.0[..],
            to_i64(seq),
            &theirs_id[..],
            ours,
            theirs,
            to_i64(now_ms)
        ],
    )?;
    Ok(n == 1)
}

pub fn forks(conn: &Connection, device: &DeviceId) -> Result<Vec<ForkRow>> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, ours, theirs FROM forks WHERE device = ?1 ORDER BY id")?;
    let rows = stmt.query_map([&device.0[..]], |r| {
        Ok(ForkRow {
            seq: to_u64(r.get(0)?),
            ours: r.get(1)?,
            theirs: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ops in acceptance order after `after`.
pub fn feed(conn: &Connection, after: u64, limit: usize) -> Result<Vec<FeedRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT cursor, device, bytes FROM ops WHERE cursor > ?1 ORDER BY cursor LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![to_i64(after), to_i64(limit as u64)], |r| {
        Ok(FeedRow {
            cursor: to_u64(r.get(0)?),
            device: device_from_blob(r.get(1)?)?,
            bytes: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// --- replication ---

pub fn peer_cursor(conn: &Connection, peer: &str) -> Result<u64> {
    let cursor: Option<i64> = conn
        .query_row(
            "SELECT cursor FROM peer_cursors WHERE peer = ?1",
            [peer],
            |r| r.get(0),
        )
        .optional()?;
    Ok(cursor.map(to_u64).unwrap_or(0))
}

pub fn set_peer_cursor(conn: &mut Connection, peer: &str, cursor: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO peer_cursors (peer, cursor) VALUES (?1, ?2)
         ON CONFLICT (peer) DO UPDATE SET cursor = excluded.cursor",
        params![peer, to_i64(cursor)],
    )?;
    Ok(())
}

// --- mailboxes ---

/// Live messages across all mailboxes.
pub fn mailbox_live_total(conn: &Connection, now_ms: u64) -> Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM mailbox_messages WHERE expires_ms > ?1",
        [to_i64(now_ms)],
        |r| r.get(0),
    )?;
    Ok(to_u64(n))
}

/// Stores a message durably unless its sender's share of the mailbox, or its address's share
/// of the node, is full; returns its id. A refusal writes nothing.
pub fn mailbox_post(
    conn: &mut Connection,
    mailbox: &[u8; 32],
    body: &[u8],
    expires_ms: u64,
    now_ms: u64,
    quota: &PostQuota,
) -> Result<Result<u64, MailboxRefusal>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = to_i64(now_ms);
    let by_sender: i64 = tx.query_row(
        "SELECT COUNT(*) FROM mailbox_messages WHERE mailbox = ?1 AND sender = ?2 AND expires_ms > ?3",
        params![&mailbox[..], &quota.sender, now],
        |r| r.get(0),
    )?;
    if to_u64(by_sender) >= quota.per_sender as u64 {
        return Ok(Err(MailboxRefusal::MailboxFull));
    }
    let by_address: i64 = tx.query_row(
        "SELECT COUNT(*) FROM mailbox_messages WHERE address = ?1 AND expires_ms > ?2",
        params![&quota.address, now],
        |r| r.get(0),
    )?;
    if to_u64(by_address) >= quota.per_address as u64 {
        return Ok(Err(MailboxRefusal::AddressFull));
    }
    tx.execute(
        "INSERT INTO mailbox_messages (mailbox, body, expires_ms, sender, address)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            &mailbox[..],
            body,
            to_i64(expires_ms),
            &quota.sender,
            &quota.address
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Ok(to_u64(id)))
}

/// Live messages of a mailbox with id > `after`, oldest first.
pub fn mailbox_read(
    conn: &Connection,
    mailbox: &[u8; 32],
    after: u64,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<MessageRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, body, expires_ms FROM mailbox_messages
         WHERE mailbox = ?1 AND id > ?2 AND expires_ms > ?3 ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![
            &mailbox[..],
            to_i64(after),
            to_i64(now_ms),
            to_i64(limit as u64)
        ],
        |r| {
            Ok(MessageRow {
                id: to_u64(r.get(0)?),
                body: r.get(1)?,
                expires_ms: to_u64(r.get(2)?),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes every expired message; returns how many.
pub fn mailbox_purge(conn: &mut Connection, now_ms: u64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM mailbox_messages WHERE expires_ms <= ?1",
        [to_i64(now_ms)],
    )?)
}

/// Milliseconds since the Unix epoch by the node's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
