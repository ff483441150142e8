//! The profile's SQLite store (`DIR/profile.db`): settings, registry nodes, and devices with
//! their addresses and the last verified ownership chain. **Invariant: no secret is ever
//! written here** — the recovery phrase and every key derived from it stay in the keychain and
//! in memory.

use std::path::{Path, PathBuf};

use latchkey_proto::chain::{Chain, OpList};
use latchkey_proto::claim::DeviceAddr;
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::DeviceId;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};

pub const DB_FILE: &str = "profile.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (url TEXT PRIMARY KEY, added_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    addrs TEXT NOT NULL,
    chain BLOB NOT NULL,
    verified_at_ms INTEGER NOT NULL
);
";

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
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating) `dir/profile.db`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(DB_FILE);
        let wrap = |e: rusqlite::Error| Error::Store {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::Store {
            path: dir.display().to_string(),
            why: e.to_string(),
        })?;
        let conn = Connection::open(&path).map_err(wrap)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(wrap)?;
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        Ok(Store { conn, path })
    }

    fn wrap(&self, e: rusqlite::Error) -> Error {
        Error::Store {
            path: self.path.display().to_string(),
            why: e.to_string(),
        }
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Adds node URLs (already normalized); returns how many were new.
    pub fn add_nodes(&self, urls: &[String], now_ms: u64) -> Result<usize> {
        let mut added = 0;
        for url in urls {
            added += self
                .conn
                .execute(
                    "INSERT OR IGNORE INTO nodes (url, added_ms) VALUES (?1, ?2)",
                    params![url, now_ms as i64],
                )
                .map_err(|e| self.wrap(e))?;
        }
        Ok(added)
    }

    pub fn nodes(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT url FROM nodes ORDER BY added_ms, url")
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .map_err(|e| self.wrap(e))?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.wrap(e))?;
        Ok(rows)
    }

    /// Inserts or replaces a device with its verified chain.
    pub fn put_device(&self, record: &DeviceRecord) -> Result<()> {
        let addrs: Vec<String> = record.addrs.iter().map(|a| a.to_string()).collect();
        let chain = OpList(record.chain.ops().to_vec()).to_bytes();
        self.conn
            .execute(
                "INSERT INTO devices (id, name, addrs, chain, verified_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, addrs = excluded.addrs,
                     chain = excluded.chain, verified_at_ms = excluded.verified_at_ms",
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
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, addrs, chain, verified_at_ms FROM devices ORDER BY name, id")
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.wrap(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.wrap(e))?;
        rows.into_iter()
            .map(|(id, name, addrs, chain, at)| {
                let bad = |why: String| Error::Store {
                    path: self.path.display().to_string(),
                    why: format!("device {id}: {why}"),
                };
                let addrs: Vec<String> =
                    serde_json::from_str(&addrs).map_err(|e| bad(e.to_string()))?;
                let chain = OpList::from_bytes(&chain)
                    .and_then(|l| Chain::verify(l.0))
                    .map_err(|e| bad(e.to_string()))?;
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
}
