//! The profile's SQLite store (`DIR/profile.db`): settings, registry nodes, and devices with
//! their addresses and the last verified ownership chain. **Invariant: no secret is ever
//! written here** — the recovery phrase and every key derived from it stay in the keychain and
//! in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use latchkey_proto::chain::{Chain, Op, OpList};
use latchkey_proto::claim::DeviceAddr;
use latchkey_proto::codec::{Codec, Reader, Writer};
use latchkey_proto::grant::{Grant, GrantId, MAX_GRANT_CHAIN};
use latchkey_proto::keys::{DeviceId, PublicKey};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::fork::{ForkAlarm, ForkKind};

pub const DB_FILE: &str = "profile.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (url TEXT PRIMARY KEY, added_ms INTEGER NOT NULL);
-- Each device's last signed answer (src/answers.rs): public data only.
CREATE TABLE IF NOT EXISTS last_answers (
    device      TEXT PRIMARY KEY,
    action      TEXT NOT NULL,
    response    BLOB NOT NULL,
    route       TEXT NOT NULL,
    via         TEXT NOT NULL,
    lost_route  TEXT,
    lost_via    TEXT,
    latency_ms  INTEGER NOT NULL,
    challenged  INTEGER NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    addrs TEXT NOT NULL,
    chain BLOB NOT NULL,
    verified_at_ms INTEGER NOT NULL
);
-- Grants this profile issued (invitations sent); the guest key's secret went into the link.
CREATE TABLE IF NOT EXISTS grants_issued (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    guest_name TEXT NOT NULL,
    grant_bytes BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
-- Invitations this profile accepted; each guest key's secret is in the OS keychain.
CREATE TABLE IF NOT EXISTS invitations (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    guest_name TEXT NOT NULL,
    grants BLOB NOT NULL,
    accepted_ms INTEGER NOT NULL
);
-- Copies of audit entries seen, so a rewritten entry is noticed. Version 2 entries restart at
-- sequence 0 in every ownership era, so copies are keyed by era too; the version 1 table
-- `audit_copies` is kept as it was (evidence is never deleted).
CREATE TABLE IF NOT EXISTS audit_copies (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS audit_copies_v2 (
    device TEXT NOT NULL,
    era BLOB NOT NULL,
    seq INTEGER NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (device, era, seq)
);
-- Owner-change proposals waiting for signatures (each an op, public data). `proposer` (added
-- later, see MIGRATIONS) is the current owner who signed it first as far as this profile saw.
CREATE TABLE IF NOT EXISTS proposals (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    op BLOB NOT NULL,
    received_ms INTEGER NOT NULL
);
-- The newest fork alarm per device: both ops (public) as evidence, whether the door settled it.
CREATE TABLE IF NOT EXISTS fork_alarms (
    device TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ours BLOB NOT NULL,
    theirs BLOB NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
-- How each invitation was handed out (short link or self-contained) and where its sealed blob
-- went, by grant id; absent for grants issued before short links.
CREATE TABLE IF NOT EXISTS issued_links (
    grant_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    nodes_stored INTEGER NOT NULL,
    reissued_as TEXT
);
-- The doors of each held invitation and whether this profile's own key is bound there yet (a
-- bind-on-first-use grant is redeemed door by door; a door not reached at accept time is
-- redeemed on the first open).
CREATE TABLE IF NOT EXISTS held_doors (
    grant_id TEXT NOT NULL,
    device TEXT NOT NULL,
    name TEXT NOT NULL,
    redeemed_ms INTEGER,
    PRIMARY KEY (grant_id, device)
);
-- Devices a waiting proposal would make this profile an owner of, with their verified chain:
-- the recipient of a transfer must see what it accepts before it owns anything.
CREATE TABLE IF NOT EXISTS offered_devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    addrs TEXT NOT NULL,
    chain BLOB NOT NULL,
    verified_at_ms INTEGER NOT NULL
);
-- Stays synced from a booking calendar (`source`: its URL or file path), one row per UID.
-- `devices` and `grants` are JSON lists of ids; the links themselves are in the OS keychain.
CREATE TABLE IF NOT EXISTS stays (
    source TEXT NOT NULL,
    uid TEXT NOT NULL,
    summary TEXT NOT NULL,
    guest_name TEXT NOT NULL,
    check_in TEXT NOT NULL,
    check_out TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    tz TEXT NOT NULL,
    devices TEXT NOT NULL,
    grants TEXT NOT NULL,
    cancelled_ms INTEGER,
    shared_ms INTEGER,
    synced_ms INTEGER NOT NULL,
    PRIMARY KEY (source, uid)
);
";

/// Columns added to tables that older profiles already have: (table, column, declaration).
/// Every table of the profile: the store's own and those of the modules that keep theirs.
/// Each statement is idempotent (`IF NOT EXISTS`), so running them again is harmless.
const SCHEMAS: [&str; 3] = [SCHEMA, crate::consent::SCHEMA, crate::events::SCHEMA];

/// Distinct statements kept prepared per connection: the hot ones (an open reads the device,
/// the nodes, the consent outbox and writes the answer) with room for the rest.
const STATEMENT_CACHE: usize = 64;

/// A fingerprint of the schema and migrations, kept in `user_version` (31 bits: SQLite stores
/// a signed 32-bit number). Any change to either text changes it, so nobody has to remember
/// to bump a version; a collision would only skip idempotent statements for a file that
/// already had them.
fn schema_fingerprint() -> i64 {
    let mut parts: Vec<&[u8]> = SCHEMAS.iter().map(|s| s.as_bytes()).collect();
    for (table, column, decl) in &MIGRATIONS {
        parts.extend([
            table.as_bytes(),
            b"\0",
            column.as_bytes(),
            b"\0",
            decl.as_bytes(),
            b"\0",
        ]);
    }
    let hash = latchkey_proto::hash::labeled("latchkey/profile-schema", &parts);
    (u32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]]) & 0x7fff_ffff) as i64
}

const MIGRATIONS: [(&str, &str, &str); 2] = [
    ("proposals", "proposer", "TEXT"),
    // The held invitation a delegated grant was issued from (`--from-grant`).
    ("grants_issued", "parent", "TEXT"),
];

/// A grant this profile issued.
#[derive(Debug, Clone)]
pub struct IssuedRow {
    pub device: DeviceId,
    pub guest_name: String,
    pub grant: Grant,
    pub created_ms: u64,
    /// For a delegated grant: the held invitation (grant id) it was issued from.
    pub parent: Option<GrantId>,
}
/// A stay from a booking calendar (see `stays`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StayRow {
    pub source: String,
    pub uid: String,
    pub summary: String,
    pub guest_name: String,
    /// `YYYY-MM-DD`.
    pub check_in: String,
    pub check_out: String,
    pub from_ms: u64,
    pub until_ms: u64,
    pub tz: String,
    /// The doors, sorted.
    pub devices: Vec<DeviceId>,
    /// The grants issued for it now (one per door).
    pub grants: Vec<GrantId>,
    /// Gone from the export and revoked at this time.
    pub cancelled_ms: Option<u64>,
    pub shared_ms: Option<u64>,
    pub synced_ms: u64,
}

/// An invitation this profile accepted (the key stays in the keychain).
#[derive(Debug, Clone)]
pub struct InvitationRow {
    pub id: GrantId,
    pub device: DeviceId,
    pub guest_name: String,
    pub grants: Vec<Grant>,
    pub accepted_ms: u64,
}

/// How an issued invitation was handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLinkRow {
    pub grant: GrantId,
    /// `short` (`LATCHKEY://I/…`, the invitation sealed on the nodes) or `long` (the
    /// self-contained `latchkey://invite/…`).
    pub kind: String,
    /// How many nodes stored the sealed invitation (0 for a long link).
    pub nodes_stored: usize,
    /// The grant issued in its place by a reissue.
    pub reissued_as: Option<GrantId>,
}

/// One door of a held invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldDoorRow {
    pub grant: GrantId,
    pub device: DeviceId,
    pub name: String,
    /// When this profile's own key was bound at the door (`None`: not yet).
    pub redeemed_ms: Option<u64>,
}

/// A proposal waiting for signatures.
#[derive(Debug, Clone)]
pub struct ProposalRow {
    pub op: Op,
    pub received_ms: u64,
    /// `None` for a row an older version stored.
    pub proposer: Option<PublicKey>,
}

/// A device this profile knows, with its last verified chain.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub name: String,
    pub addrs: Vec<DeviceAddr>,
    pub chain: Chain,
    pub verified_at_ms: u64,
}

#[derive(Debug)]
pub struct Store {
    conn: Pooled,
    path: PathBuf,
    chains: Arc<VerifiedChains>,
}

/// Open connections to profile files, handed from one [`Store`] to the next over the same
/// file. The app opens a profile for every command; a new connection (the file, its WAL
/// index, the schema check) cost about a quarter of a millisecond each time, and a reused one
/// also keeps its prepared statements.
#[derive(Debug, Default)]
pub struct ConnectionPool {
    idle: Mutex<Vec<(PathBuf, Connection)>>,
}

/// Idle connections kept per pool: as many as commands the app runs at once, about.
const POOL_IDLE_MAX: usize = 4;

impl ConnectionPool {
    fn take(&self, path: &Path) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let at = idle.iter().rposition(|(p, _)| p == path)?;
        Some(idle.swap_remove(at).1)
    }

    fn give_back(&self, path: PathBuf, conn: Connection) {
        // A connection left inside a transaction (a panic mid-way) is closed, not reused:
        // closing rolls the transaction back.
        if !conn.is_autocommit() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_IDLE_MAX {
            idle.push((path, conn));
        }
    }
}

/// A store's connection, back to its pool (if any) when the store is dropped.
#[derive(Debug)]
struct Pooled {
    conn: Option<Connection>,
    home: Option<(Arc<ConnectionPool>, PathBuf)>,
}

impl std::ops::Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("held until drop")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("held until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let (Some(conn), Some((pool, path))) = (self.conn.take(), self.home.take()) {
            pool.give_back(path, conn);
        }
    }
}

/// Chains verified this session, by their stored bytes. Finding a device verified its whole
/// stored chain (every op's signatures) on every open, a quarter of a direct open's time; the
/// same bytes always verify to the same chain, so a chain is verified once per session and
/// cloned after. Keyed by the bytes themselves, not a digest of them: nothing to collide.
#[derive(Debug, Default)]
pub struct VerifiedChains {
    by_bytes: Mutex<HashMap<Vec<u8>, Chain>>,
}

impl VerifiedChains {
    /// Enough for every device of a household or a rental business; past it the cache starts
    /// over rather than growing with a profile that sees many chains (each stored version of
    /// a chain is its own entry).
    const MOST: usize = 256;

    fn verify(&self, bytes: &[u8]) -> latchkey_proto::Result<Chain> {
        let lock = || self.by_bytes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(chain) = lock().get(bytes) {
            return Ok(chain.clone());
        }
        // Verified without the lock: a long chain must not hold up every other command.
        let chain = OpList::from_bytes(bytes).and_then(|l| Chain::verify(l.0))?;
        let mut by_bytes = lock();
        if by_bytes.len() >= Self::MOST {
            by_bytes.clear();
        }
        by_bytes.insert(bytes.to_vec(), chain.clone());
        Ok(chain)
    }
}

impl Store {
    /// Opens (creating) `dir/profile.db`, reusing the chains `chains` already verified.
    pub fn open(dir: &Path, chains: Arc<VerifiedChains>) -> Result<Self> {
        let path = dir.join(DB_FILE);
        let conn = Self::connect(dir, &path)?;
        Ok(Store {
            conn: Pooled {
                conn: Some(conn),
                home: None,
            },
            path,
            chains,
        })
    }

    /// [`Store::open`] with a connection from `pool` when one to the same file is idle there;
    /// the connection goes back to `pool` when the store is dropped.
    pub fn open_pooled(
        dir: &Path,
        chains: Arc<VerifiedChains>,
        pool: Arc<ConnectionPool>,
    ) -> Result<Self> {
        let path = dir.join(DB_FILE);
        let conn = match pool.take(&path) {
            Some(conn) => conn,
            None => Self::connect(dir, &path)?,
        };
        Ok(Store {
            conn: Pooled {
                conn: Some(conn),
                home: Some((pool, path.clone())),
            },
            path,
            chains,
        })
    }

    /// A new connection to `path` in `dir`, its schema brought up to date.
    fn connect(dir: &Path, path: &Path) -> Result<Connection> {
        let wrap = |e: rusqlite::Error| Error::Store {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::Store {
            path: dir.display().to_string(),
            why: e.to_string(),
        })?;
        let conn = Connection::open(path).map_err(wrap)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(wrap)?;
        // The app opens the profile for every command: the schema (a dozen CREATE statements
        // and the migrations' table scans, most of an open's cost) runs only when the file was
        // last set up by a different schema; the fingerprint sits in SQLite's `user_version`.
        let fingerprint = schema_fingerprint();
        let stored: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(wrap)?;
        if stored != fingerprint {
            for schema in SCHEMAS {
                conn.execute_batch(schema).map_err(wrap)?;
            }
            for (table, column, decl) in MIGRATIONS {
                let has: bool = conn
                    .query_row(
                        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
                        params![table, column],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(wrap)?
                    > 0;
                if !has {
                    conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                        .map_err(wrap)?;
                }
            }
            conn.pragma_update(None, "user_version", fingerprint)
                .map_err(wrap)?;
        }
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// The connection, for modules that keep their own tables (src/events.rs).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// `sql` prepared once per connection and kept; errors name the profile's file.
    pub(crate) fn stmt(&self, sql: &str) -> Result<rusqlite::CachedStatement<'_>> {
        self.conn.prepare_cached(sql).map_err(|e| self.wrap(e))
    }

    pub(crate) fn wrap(&self, e: rusqlite::Error) -> Error {
        Error::Store {
            path: self.path.display().to_string(),
            why: e.to_string(),
        }
    }

    /// Runs a query and collects its rows.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.stmt(sql)?;
        let rows = stmt
            .query_map(params, map)
            .map_err(|e| self.wrap(e))?
            .collect::<rusqlite::Result<Vec<T>>>()
            .map_err(|e| self.wrap(e));
        rows
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.stmt("SELECT value FROM settings WHERE key = ?1")?
            .query_row(params![key], |r| r.get(0))
            .optional()
            .map_err(|e| self.wrap(e))
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.stmt(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![key, value])
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }

    /// Adds node URLs (already normalized); returns how many were new.
    pub fn add_nodes(&self, urls: &[String], now_ms: u64) -> Result<usize> {
        let mut added = 0;
        for url in urls {
            added += self
                .stmt("INSERT OR IGNORE INTO nodes (url, added_ms) VALUES (?1, ?2)")?
                .execute(params![url, now_ms as i64])
                .map_err(|e| self.wrap(e))?;
        }
        Ok(added)
    }

    pub fn nodes(&self) -> Result<Vec<String>> {
        let rows: Vec<String> =
            self.rows("SELECT url FROM nodes ORDER BY added_ms, url", [], |r| {
                r.get(0)
            })?;
        Ok(rows)
    }

    /// Inserts or replaces a device with its verified chain.
    pub fn put_device(&self, record: &DeviceRecord) -> Result<()> {
        self.put_record("devices", record)?;
        // Owned (or once owned) now: no longer only on offer.
        self.stmt("DELETE FROM offered_devices WHERE id = ?1")?
            .execute(params![record.id.to_string()])
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Keeps a device a waiting proposal would make this profile an owner of.
    pub fn put_offered_device(&self, record: &DeviceRecord) -> Result<()> {
        self.put_record("offered_devices", record)
    }

    /// Devices on offer (see [`Self::put_offered_device`]), verified from genesis as read.
    pub fn offered_devices(&self) -> Result<Vec<DeviceRecord>> {
        self.records_where("offered_devices", |_, _| true)
    }

    fn put_record(&self, table: &str, record: &DeviceRecord) -> Result<()> {
        let addrs: Vec<String> = record.addrs.iter().map(|a| a.to_string()).collect();
        let chain = OpList(record.chain.ops().to_vec()).to_bytes();
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {table} (id, name, addrs, chain, verified_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, addrs = excluded.addrs,
                     chain = excluded.chain, verified_at_ms = excluded.verified_at_ms"
                ),
                params![
                    record.id.to_string(),
                    record.name,
                    serde_json::to_string(&addrs).expect("strings serialize"),
                    chain,
                    record.verified_at_ms as i64
                ],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Every device, verified again from genesis as it is read (the file is not trusted).
    pub fn devices(&self) -> Result<Vec<DeviceRecord>> {
        self.devices_where(|_, _| true)
    }

    /// The devices whose id text and name pass `keep`; only those are verified, so finding one
    /// device among many costs one chain verification.
    pub fn devices_where(&self, keep: impl Fn(&str, &str) -> bool) -> Result<Vec<DeviceRecord>> {
        self.records_where("devices", keep)
    }

    fn records_where(
        &self,
        table: &str,
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<DeviceRecord>> {
        let rows = self.rows(
            &format!(
                "SELECT id, name, addrs, chain, verified_at_ms FROM {table} ORDER BY name, id"
            ),
            [],
            record_columns,
        )?;
        rows.into_iter()
            .filter(|(id, name, ..)| keep(id, name))
            .map(|(id, name, addrs, chain, at)| {
                let bad = |why: String| Error::Store {
                    path: self.path.display().to_string(),
                    why: format!("device {id}: {why}"),
                };
                let addrs: Vec<String> =
                    serde_json::from_str(&addrs).map_err(|e| bad(e.to_string()))?;
                let chain = self.chains.verify(&chain).map_err(|e| bad(e.to_string()))?;
                if chain.device().to_string() != id {
                    return Err(bad("the stored chain is for another device".into()));
                }
                Ok(DeviceRecord {
                    id: chain.device(),
                    name,
                    addrs: addrs
                        .iter()
                        .filter_map(|a| DeviceAddr::parse(a).ok())
                        .collect(),
                    chain,
                    verified_at_ms: at as u64,
                })
            })
            .collect()
    }

    /// Decodes one stored blob, naming the row when the file was damaged.
    fn decode<T: Codec>(&self, row: &str, bytes: &[u8]) -> Result<T> {
        T::from_bytes(bytes).map_err(|e| Error::Store {
            path: self.path.display().to_string(),
            why: format!("{row}: {e}"),
        })
    }

    pub fn put_issued(&self, row: &IssuedRow) -> Result<()> {
        self.stmt(
            "INSERT OR REPLACE INTO grants_issued
                     (id, device, guest_name, grant_bytes, created_ms, parent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            row.grant.id().to_string(),
            row.device.to_string(),
            row.guest_name,
            row.grant.to_bytes(),
            row.created_ms as i64,
            row.parent.map(|p| p.to_string())
        ])
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }

    /// Grants issued, newest first; for one device when given.
    pub fn issued(&self, device: Option<&DeviceId>) -> Result<Vec<IssuedRow>> {
        let rows = self.rows(
            "SELECT id, device, guest_name, grant_bytes, created_ms, parent FROM grants_issued
                 WHERE ?1 IS NULL OR device = ?1 ORDER BY created_ms DESC, id",
            params![device.map(|d| d.to_string())],
            |r| Ok((record_columns(r)?, r.get::<_, Option<String>>(5)?)),
        )?;
        rows.into_iter()
            .map(|((id, device, guest_name, grant, created), parent)| {
                let grant: Grant = self.decode(&format!("grant {id}"), &grant)?;
                let parent = parent
                    .map(|p| {
                        parse_grant_id(&p).ok_or_else(|| Error::Store {
                            path: self.path.display().to_string(),
                            why: format!("grant {id}: parent {p} is not a grant id"),
                        })
                    })
                    .transpose()?;
                Ok(IssuedRow {
                    parent,
                    device: DeviceId::parse(&device).map_err(|e| Error::Store {
                        path: self.path.display().to_string(),
                        why: format!("grant {id}: {e}"),
                    })?,
                    guest_name,
                    grant,
                    created_ms: created as u64,
                })
            })
            .collect()
    }

    pub fn put_invitation(&self, row: &InvitationRow) -> Result<()> {
        self.stmt(
            "INSERT OR REPLACE INTO invitations (id, device, guest_name, grants, accepted_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            row.id.to_string(),
            row.device.to_string(),
            row.guest_name,
            encode_grants(&row.grants),
            row.accepted_ms as i64
        ])
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }

    /// Accepted invitations, newest first.
    pub fn invitations(&self) -> Result<Vec<InvitationRow>> {
        let rows = self.rows(
            "SELECT id, device, guest_name, grants, accepted_ms FROM invitations
                 ORDER BY accepted_ms DESC, id",
            [],
            record_columns,
        )?;
        rows.into_iter()
            .map(|(id, device, guest_name, grants, at)| {
                let bad = |why: String| Error::Store {
                    path: self.path.display().to_string(),
                    why: format!("invitation {id}: {why}"),
                };
                let grants = decode_grants(&grants).map_err(|e| bad(e.to_string()))?;
                let leaf = grants.last().ok_or_else(|| bad("no grant".into()))?;
                Ok(InvitationRow {
                    id: leaf.id(),
                    device: DeviceId::parse(&device).map_err(|e| bad(e.to_string()))?,
                    guest_name,
                    grants,
                    accepted_ms: at as u64,
                })
            })
            .collect()
    }

    pub fn put_issued_link(&self, row: &IssuedLinkRow) -> Result<()> {
        self.stmt(
            "INSERT INTO issued_links (grant_id, kind, nodes_stored, reissued_as)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(grant_id) DO UPDATE SET kind = excluded.kind,
                     nodes_stored = excluded.nodes_stored, reissued_as = excluded.reissued_as",
        )?
        .execute(params![
            row.grant.to_string(),
            row.kind,
            row.nodes_stored as i64,
            row.reissued_as.map(|g| g.to_string())
        ])
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }

    pub fn issued_link(&self, grant: &GrantId) -> Result<Option<IssuedLinkRow>> {
        let row = self
            .stmt("SELECT kind, nodes_stored, reissued_as FROM issued_links WHERE grant_id = ?1")?
            .query_row(params![grant.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()
            .map_err(|e| self.wrap(e))?;
        Ok(row.map(|(kind, nodes_stored, reissued_as)| IssuedLinkRow {
            grant: *grant,
            kind,
            nodes_stored: nodes_stored as usize,
            reissued_as: reissued_as.as_deref().and_then(parse_grant_id),
        }))
    }

    /// Records a held invitation's door; an existing row keeps its redemption time.
    pub fn put_held_door(&self, row: &HeldDoorRow) -> Result<()> {
        self.stmt(
            "INSERT INTO held_doors (grant_id, device, name, redeemed_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(grant_id, device) DO UPDATE SET name = excluded.name,
                     redeemed_ms = COALESCE(held_doors.redeemed_ms, excluded.redeemed_ms)",
        )?
        .execute(params![
            row.grant.to_string(),
            row.device.to_string(),
            row.name,
            row.redeemed_ms.map(|t| t as i64)
        ])
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }

    /// The doors of held invitations: of one grant, or (with `None`) of every grant.
    pub fn held_doors(&self, grant: Option<&GrantId>) -> Result<Vec<HeldDoorRow>> {
        let rows = self.rows(
            "SELECT grant_id, device, name, redeemed_ms FROM held_doors
                 WHERE ?1 IS NULL OR grant_id = ?1 ORDER BY rowid",
            params![grant.map(|g| g.to_string())],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            },
        )?;
        rows.into_iter()
            .map(|(grant, device, name, at)| {
                let bad = |why: String| Error::Store {
                    path: self.path.display().to_string(),
                    why: format!("held door {grant}/{device}: {why}"),
                };
                Ok(HeldDoorRow {
                    grant: parse_grant_id(&grant).ok_or_else(|| bad("not a grant id".into()))?,
                    device: DeviceId::parse(&device).map_err(|e| bad(e.to_string()))?,
                    name,
                    redeemed_ms: at.map(|t| t as u64),
                })
            })
            .collect()
    }

    /// Every audit entry kept for `device` (all eras), as stored, oldest first per era.
    pub fn kept_audit_entries(&self, device: &DeviceId) -> Result<Vec<Vec<u8>>> {
        self.rows(
            "SELECT entry FROM audit_copies_v2 WHERE device = ?1 ORDER BY era, seq",
            params![device.to_string()],
            |r| r.get(0),
        )
    }

    /// Inserts or replaces a stay.
    pub fn put_stay(&self, row: &StayRow) -> Result<()> {
        let ids = |v: Vec<String>| serde_json::to_string(&v).expect("strings serialize");
        self.stmt(
            "INSERT OR REPLACE INTO stays (source, uid, summary, guest_name, check_in,
                     check_out, from_ms, until_ms, tz, devices, grants, cancelled_ms, shared_ms,
                     synced_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            row.source,
            row.uid,
            row.summary,
            row.guest_name,
            row.check_in,
            row.check_out,
            row.from_ms as i64,
            row.until_ms as i64,
            row.tz,
            ids(row.devices.iter().map(|d| d.to_string()).collect()),
            ids(row.grants.iter().map(|g| g.to_string()).collect()),
            row.cancelled_ms.map(|t| t as i64),
            row.shared_ms.map(|t| t as i64),
            row.synced_ms as i64
        ])
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }

    /// Stays (of one calendar source when given), by check-in day.
    pub fn stays(&self, source: Option<&str>) -> Result<Vec<StayRow>> {
        type Columns = (
            (String, String, String, String, String, String),
            (i64, i64, String, String, String),
            (Option<i64>, Option<i64>, i64),
        );
        let rows: Vec<Columns> = self.rows(
            "SELECT source, uid, summary, guest_name, check_in, check_out, from_ms, until_ms, tz,
                    devices, grants, cancelled_ms, shared_ms, synced_ms
                 FROM stays WHERE ?1 IS NULL OR source = ?1 ORDER BY check_in, source, uid",
            params![source],
            |r| {
                Ok((
                    (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ),
                    (r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
                    (r.get(11)?, r.get(12)?, r.get(13)?),
                ))
            },
        )?;
        rows.into_iter()
            .map(
                |(
                    (source, uid, summary, guest_name, check_in, check_out),
                    (from_ms, until_ms, tz, devices, grants),
                    (cancelled_ms, shared_ms, synced_ms),
                )| {
                    let bad = |why: String| Error::Store {
                        path: self.path.display().to_string(),
                        why: format!("stay {uid}: {why}"),
                    };
                    let list = |text: &str| -> Result<Vec<String>> {
                        serde_json::from_str(text).map_err(|e| bad(e.to_string()))
                    };
                    let devices = list(&devices)?
                        .iter()
                        .map(|d| DeviceId::parse(d).map_err(|e| bad(e.to_string())))
                        .collect::<Result<Vec<_>>>()?;
                    let grants = list(&grants)?
                        .iter()
                        .map(|g| {
                            parse_grant_id(g).ok_or_else(|| bad(format!("{g} is not a grant id")))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(StayRow {
                        source,
                        uid,
                        summary,
                        guest_name,
                        check_in,
                        check_out,
                        from_ms: from_ms as u64,
                        until_ms: until_ms as u64,
                        tz,
                        devices,
                        grants,
                        cancelled_ms: cancelled_ms.map(|t| t as u64),
                        shared_ms: shared_ms.map(|t| t as u64),
                        synced_ms: synced_ms as u64,
                    })
                },
            )
            .collect()
    }

    /// Keeps a copy of an audit entry; false when a different entry was seen at that era and
    /// sequence.
    pub fn keep_audit_entry(
        &self,
        device: &DeviceId,
        era: &[u8; 32],
        seq: u64,
        entry: &[u8],
    ) -> Result<bool> {
        self.stmt(
            "INSERT OR IGNORE INTO audit_copies_v2 (device, era, seq, entry)
                 VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![device.to_string(), &era[..], seq as i64, entry])
        .map_err(|e| self.wrap(e))?;
        Ok(self.kept_audit_entry(device, era, seq)?.as_deref() == Some(entry))
    }

    /// The kept copy of an audit entry, if this profile has seen it.
    pub fn kept_audit_entry(
        &self,
        device: &DeviceId,
        era: &[u8; 32],
        seq: u64,
    ) -> Result<Option<Vec<u8>>> {
        self.stmt("SELECT entry FROM audit_copies_v2 WHERE device = ?1 AND era = ?2 AND seq = ?3")?
            .query_row(params![device.to_string(), &era[..], seq as i64], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// Keeps a proposal (merging is the caller's): the first `proposer` recorded for an id
    /// stays (a row from before proposers were kept gets this one).
    pub fn put_proposal(&self, op: &Op, proposer: &PublicKey, now_ms: u64) -> Result<()> {
        self.stmt(
            "INSERT INTO proposals (id, device, op, received_ms, proposer)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET op = excluded.op,
                     proposer = COALESCE(proposals.proposer, excluded.proposer)",
        )?
        .execute(params![
            op.id().to_string(),
            op.device.to_string(),
            op.to_bytes(),
            now_ms as i64,
            proposer.to_string()
        ])
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }

    pub fn delete_proposal(&self, id: &str) -> Result<()> {
        self.stmt("DELETE FROM proposals WHERE id = ?1")?
            .execute(params![id])
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Proposals waiting, oldest first.
    pub fn proposals(&self) -> Result<Vec<ProposalRow>> {
        let rows = self.rows(
            "SELECT id, op, received_ms, proposer FROM proposals ORDER BY received_ms, id",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            },
        )?;
        rows.into_iter()
            .map(|(id, op, at, proposer)| {
                Ok(ProposalRow {
                    op: self.decode(&format!("proposal {id}"), &op)?,
                    received_ms: at as u64,
                    proposer: proposer.and_then(|p| PublicKey::parse(&p).ok()),
                })
            })
            .collect()
    }
}

impl Store {
    /// Keeps `alarm` as the device's fork alarm, replacing an older one.
    pub fn put_fork_alarm(&self, alarm: &ForkAlarm) -> Result<()> {
        self.stmt(
            "INSERT INTO fork_alarms (device, kind, seq, ours, theirs, first_seen_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(device) DO UPDATE SET kind = excluded.kind, seq = excluded.seq,
                     ours = excluded.ours, theirs = excluded.theirs,
                     first_seen_ms = excluded.first_seen_ms, last_seen_ms = excluded.last_seen_ms",
        )?
        .execute(params![
            alarm.device.to_string(),
            alarm.kind.as_str(),
            alarm.seq as i64,
            alarm.ours.to_bytes(),
            alarm.theirs.to_bytes(),
            alarm.first_seen_ms as i64,
            alarm.last_seen_ms as i64
        ])
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }

    pub fn delete_fork_alarm(&self, device: &DeviceId) -> Result<()> {
        self.stmt("DELETE FROM fork_alarms WHERE device = ?1")?
            .execute(params![device.to_string()])
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// The device's fork alarm, if any. The ops are decoded again (the file is not trusted);
    /// they are evidence to show, never a chain to act on.
    pub fn fork_alarm(&self, device: &DeviceId) -> Result<Option<ForkAlarm>> {
        let rows = self.rows(
            "SELECT kind, seq, ours, theirs, first_seen_ms, last_seen_ms FROM fork_alarms
                 WHERE device = ?1",
            params![device.to_string()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )?;
        let Some((kind, seq, ours, theirs, first, last)) = rows.into_iter().next() else {
            return Ok(None);
        };
        let row = format!("fork alarm of {device}");
        let kind = ForkKind::parse(&kind).ok_or_else(|| Error::Store {
            path: self.path.display().to_string(),
            why: format!("{row}: unknown kind {kind:?}"),
        })?;
        Ok(Some(ForkAlarm {
            device: *device,
            kind,
            seq: seq as u64,
            ours: self.decode(&row, &ours)?,
            theirs: self.decode(&row, &theirs)?,
            first_seen_ms: first as u64,
            last_seen_ms: last as u64,
        }))
    }
}

/// The shape the device, grant and invitation tables share: id, two texts, the encoded
/// record, a time in milliseconds.
type RecordColumns = (String, String, String, Vec<u8>, i64);

fn record_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// A grant id as the store writes it (64 lower-case hex digits).
fn parse_grant_id(text: &str) -> Option<GrantId> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(text, &mut id).ok()?;
    Some(GrantId(id))
}

/// A grant chain as stored: the protocol's own list encoding (`u8 count`, then each grant).
fn encode_grants(grants: &[Grant]) -> Vec<u8> {
    let mut w = Writer::new();
    w.list8(grants, |w, g| w.nested(g));
    w.into_inner()
}

fn decode_grants(bytes: &[u8]) -> std::result::Result<Vec<Grant>, latchkey_proto::Error> {
    let mut r = Reader::new("stored grant chain", bytes);
    let grants = r.list8(MAX_GRANT_CHAIN, |r| r.nested())?;
    r.finish()?;
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_proto::chain::{OpBody, OwnerSet};
    use latchkey_testkit::{person, TestDevice};

    #[test]
    fn a_stored_chain_is_verified_once_per_session_and_a_damaged_one_every_time() {
        let mut door = TestDevice::new(1, "Door");
        door.claim(&[&person(1)], 1);
        let bytes = OpList(door.chain.ops().to_vec()).to_bytes();
        let chains = VerifiedChains::default();
        let cached = |c: &VerifiedChains| c.by_bytes.lock().unwrap().len();
        let first = chains.verify(&bytes).unwrap();
        let again = chains.verify(&bytes).unwrap();
        assert_eq!(first.state().head, again.state().head);
        assert_eq!(cached(&chains), 1);
        // A flipped bit in the last op's signature: other bytes, verified, refused, not kept.
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(chains.verify(&damaged).is_err());
        assert!(chains.verify(&damaged).is_err());
        assert_eq!(cached(&chains), 1);
    }

    #[test]
    fn a_pooled_connection_goes_to_the_next_store_over_the_same_file_only() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let pool = Arc::new(ConnectionPool::default());
        let open = |dir: &Path| Store::open_pooled(dir, Arc::default(), pool.clone()).unwrap();
        // A TEMP table lives only as long as its connection: seeing it again means the same one.
        let first = open(&a);
        first
            .conn()
            .execute_batch("CREATE TEMP TABLE mark (x)")
            .unwrap();
        drop(first);
        let has_mark = |s: &Store| s.conn().prepare("SELECT x FROM temp.mark").is_ok();
        let other = open(&b);
        assert!(
            !has_mark(&other),
            "another file's connection was handed out"
        );
        let again = open(&a);
        assert!(
            has_mark(&again),
            "the idle connection to the same file was not reused"
        );
        // Two stores at once each hold their own.
        let beside = open(&a);
        assert!(!has_mark(&beside));
        drop((other, again, beside));
        // A connection dropped inside a transaction is closed (rolled back), not handed on.
        let pool = Arc::new(ConnectionPool::default());
        let busy = Store::open_pooled(&a, Arc::default(), pool.clone()).unwrap();
        busy.conn
            .execute_batch("CREATE TEMP TABLE mark (x); BEGIN;")
            .unwrap();
        drop(busy);
        assert!(pool.idle.lock().unwrap().is_empty());
    }

    #[test]
    fn every_table_exists_from_the_open_and_the_schema_is_fingerprinted() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), Arc::default()).unwrap();
        for table in ["devices", "consent_outbox", "consent_requests", "events"] {
            let n: i64 = store
                .conn()
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{table} is missing after the open");
        }
        let version: i64 = store
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema_fingerprint());
        // A file set up by another schema (here: none recorded) is brought up to date again.
        store
            .conn()
            .execute_batch("DROP TABLE events; PRAGMA user_version = 0;")
            .unwrap();
        drop(store);
        let store = Store::open(tmp.path(), Arc::default()).unwrap();
        assert!(store.conn().prepare("SELECT * FROM events").is_ok());
    }

    #[test]
    fn a_profile_from_before_proposers_opens_and_keeps_its_proposals() {
        let tmp = tempfile::tempdir().unwrap();
        let mut door = TestDevice::new(1, "Door");
        door.claim(&[&person(1)], 1);
        let mut op = door.chain.propose(
            0,
            OpBody::AmendOwners(OwnerSet {
                owners: vec![person(1).public_key()],
                threshold: 1,
            }),
        );
        op.sign(&person(1));
        {
            // The proposals table as the previous version created it: no proposer column.
            let conn = Connection::open(tmp.path().join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE proposals (id TEXT PRIMARY KEY, device TEXT NOT NULL,
                 op BLOB NOT NULL, received_ms INTEGER NOT NULL);",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO proposals (id, device, op, received_ms) VALUES (?1, ?2, ?3, 5)",
                params![op.id().to_string(), op.device.to_string(), op.to_bytes()],
            )
            .unwrap();
        }
        let store = Store::open(tmp.path(), Arc::default()).unwrap();
        let rows = store.proposals().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].proposer, None);
        store.put_proposal(&op, &person(1).public_key(), 6).unwrap();
        // The first proposer recorded stays: a later copy cannot rename who proposed it.
        store.put_proposal(&op, &person(2).public_key(), 7).unwrap();
        let again = Store::open(tmp.path(), Arc::default())
            .unwrap()
            .proposals()
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].proposer, Some(person(1).public_key()));
    }
}
