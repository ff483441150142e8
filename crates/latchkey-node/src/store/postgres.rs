//! The PostgreSQL backend: several stateless node processes share one database (and rely on
//! PostgreSQL's own replication for durability). **Invariant: a write returns only once it is
//! durable** (PostgreSQL's default `synchronous_commit = on`: the commit waits for its WAL
//! flush).
//!
//! Unlike SQLite, writers of other processes run beside ours, so every rule the trait states
//! is kept by locks inside the database, never by this process alone:
//! - a chain version moves only by one `UPDATE … WHERE version = $expected` (or the first
//!   insert): of two processes racing for one seq exactly one changes the row; the other's
//!   statement waits for it, sees the new version and answers [`Stale`]. New fork evidence
//!   also moves it (`insert_fork`), so other processes drop the fork count they cache; a
//!   writer holding the version from before then answers [`Stale`] and verifies again;
//! - feed cursors come from a counter row (`feed_counters`) whose lock the writer takes just
//!   before inserting feed rows and holds until commit, so cursors become visible in the
//!   order they were handed out;
//! - a mailbox post holds advisory transaction locks on its mailbox and on its client
//!   address, so ids grow within a mailbox in commit order and the quota counts cannot be
//!   outrun by a concurrent post; a consent append holds one on its device.
//!
//! Lock order is always: chain version row → ops counter; consent device → consents counter;
//! mailbox → address. No transaction takes them the other way round, so none deadlocks.
//!
//! Each committing transaction also sends a `NOTIFY` ([`listen`]), which PostgreSQL delivers
//! only after the commit; a listener task forwards other processes' changes to
//! [`Backend::changes`]. This process's own changes are announced right after their commit.

mod listen;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use latchkey_proto::keys::DeviceId;
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls};

use super::{
    Backend, Change, ConsentRows, DeviceRows, EntryRow, FeedRow, ForkRow, MailboxId,
    MailboxRefusal, MessageRow, OpRow, PostQuota, Stale, CHANGES_CAPACITY,
};
use crate::error::{Error, Result};
use crate::invites::{InviteQuota, InviteRefusal, Stored};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Connections per node process. A front end mostly waits on the network and the database's
/// fsync; a handful of connections keeps both cores busy without crowding a shared server
/// (its default `max_connections` is 100).
const POOL_SIZE: usize = 16;

/// Namespaces of the two-key advisory locks (`pg_advisory_xact_lock(class, key)`), so a
/// mailbox's key never collides with an address's.
const LOCK_MAILBOX: i32 = 1;
const LOCK_ADDRESS: i32 = 2;
const LOCK_CONSENTS: i32 = 3;
const LOCK_INVITES: i32 = 4;
/// Session lock held while migrating, so two processes starting together do not both run
/// the same migration.
const LOCK_MIGRATE: i32 = 5;

/// A node's PostgreSQL database: a connection pool, plus the listener task that follows other
/// processes' commits.
pub struct PgStore {
    pool: Pool,
    changes: broadcast::Sender<Change>,
    /// Tells this process's NOTIFYs from others' (random per open).
    instance: String,
    listener: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("PgStore")
            .field("instance", &self.instance)
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn device_from(bytes: Vec<u8>) -> Result<DeviceId> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::Internal("a stored device id is not 32 bytes".into()))?;
    Ok(DeviceId(bytes))
}

/// A stable 32-bit advisory-lock key for some bytes (FNV-1a). Two values that share a key
/// only wait for each other.
fn lock_key(bytes: &[u8]) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// Whether a PostgreSQL error is a unique violation (another writer stored the same key).
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl PgStore {
    /// Connects to the database at `url`, brings its schema up to date (refinery migrations
    /// embedded in the binary) and starts following other processes' commits.
    pub async fn open(url: &str) -> Result<PgStore> {
        let config =
            tokio_postgres::Config::from_str(url).map_err(|source| Error::PgUrl { source })?;
        migrate(&config).await?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the PostgreSQL pool: {e}")))?;
        // Fail now, not on the first request, when the database is unreachable.
        drop(pool.get().await?);
        let changes = broadcast::channel(CHANGES_CAPACITY).0;
        let instance = format!("{:016x}", rand_instance());
        let listener = listen::spawn(config, pool.clone(), changes.clone(), instance.clone());
        Ok(PgStore {
            pool,
            changes,
            instance,
            listener,
        })
    }

    async fn conn(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    fn announce(&self, change: Change) {
        // Nobody listening is fine: nothing is cached yet.
        let _ = self.changes.send(change);
    }

    /// Sends `change` to the other processes when `tx` commits.
    async fn notify(&self, tx: &deadpool_postgres::Transaction<'_>, change: Change) -> Result<()> {
        let payload = listen::encode(&self.instance, change);
        let stmt = tx
            .prepare_cached("SELECT pg_notify('latchkey_changes', $1)")
            .await?;
        tx.execute(&stmt, &[&payload]).await?;
        Ok(())
    }

    /// Fork evidence rows (`seq, ours, theirs`) of one device, oldest first.
    async fn fork_rows(&self, sql: &str, device: DeviceId) -> Result<Vec<ForkRow>> {
        Ok(self
            .query_read(sql, &[&&device.0[..]])
            .await?
            .iter()
            .map(|r| ForkRow {
                seq: to_u64(r.get(0)),
                ours: r.get(1),
                theirs: r.get(2),
            })
            .collect())
    }

    /// A page of a feed (`cursor, device, bytes` after `after`, at most `limit`).
    async fn feed_rows(&self, sql: &str, after: u64, limit: usize) -> Result<Vec<FeedRow>> {
        self.query_read(sql, &[&to_i64(after), &to_i64(limit as u64)])
            .await?
            .into_iter()
            .map(|r| {
                Ok(FeedRow {
                    cursor: to_u64(r.get(0)),
                    device: device_from(r.get(1))?,
                    bytes: r.get(2),
                })
            })
            .collect()
    }

    async fn query_read(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let client = self.conn().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, params).await?)
    }

    async fn execute_write(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let client = self.conn().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.execute(&stmt, params).await?)
    }

    /// Reads from one snapshot (the version must match the ops read beside it).
    async fn snapshot(client: &mut Object) -> Result<deadpool_postgres::Transaction<'_>> {
        Ok(client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?)
    }
}

fn rand_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; mixed with the time and pid it tells
    // processes (and two stores of one process) apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(super::now_ms());
    h.write_u32(std::process::id());
    h.finish()
}

/// Runs the embedded migrations under a session advisory lock.
async fn migrate(config: &tokio_postgres::Config) -> Result<()> {
    let (mut client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| Error::PgConnect { source })?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .execute("SELECT pg_advisory_lock($1, 0)", &[&LOCK_MIGRATE])
        .await?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|source| Error::PgMigrate {
            source: Box::new(source),
        });
    let _ = client
        .execute("SELECT pg_advisory_unlock($1, 0)", &[&LOCK_MIGRATE])
        .await;
    drop(client);
    let _ = driver.await;
    for m in report?.applied_migrations() {
        tracing::info!(
            version = m.version(),
            name = m.name(),
            "PostgreSQL schema migrated"
        );
    }
    Ok(())
}

#[async_trait]
impl Backend for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn known_devices(&self) -> Result<Vec<DeviceId>> {
        self.query_read("SELECT device FROM ops WHERE seq = 0", &[])
            .await?
            .into_iter()
            .map(|r| device_from(r.get(0)))
            .collect()
    }

    async fn load_device(&self, device: DeviceId) -> Result<DeviceRows> {
        let mut client = self.conn().await?;
        let tx = Self::snapshot(&mut client).await?;
        let d = &device.0[..];
        let ops = blobs_of(
            &tx,
            "SELECT bytes FROM ops WHERE device = $1 ORDER BY cursor",
            d,
        )
        .await?;
        let forks = blobs_of(
            &tx,
            "SELECT theirs FROM forks WHERE device = $1 ORDER BY id",
            d,
        )
        .await?;
        let stmt = tx
            .prepare_cached("SELECT version FROM chain_versions WHERE device = $1")
            .await?;
        let version = tx
            .query_opt(&stmt, &[&d])
            .await?
            .map(|r| to_u64(r.get(0)))
            .unwrap_or(0);
        tx.commit().await?;
        Ok(DeviceRows {
            ops,
            forks,
            version,
        })
    }

    async fn update_ops(
        &self,
        device: DeviceId,
        version: u64,
        rows: Vec<OpRow>,
        removed: Vec<[u8; 32]>,
        now_ms: u64,
    ) -> Result<core::result::Result<u64, Stale>> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let d = &device.0[..];
        let next = to_i64(version + 1);
        // The version check and the move are one statement: a racing writer's UPDATE waits
        // for ours, re-reads the row, no longer matches and changes nothing.
        let moved = if version == 0 {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO chain_versions (device, version) VALUES ($1, 1)
                     ON CONFLICT (device) DO NOTHING",
                )
                .await?;
            tx.execute(&stmt, &[&d]).await?
        } else {
            let stmt = tx
                .prepare_cached(
                    "UPDATE chain_versions SET version = $3 WHERE device = $1 AND version = $2",
                )
                .await?;
            tx.execute(&stmt, &[&d, &to_i64(version), &next]).await?
        };
        if moved != 1 {
            tx.rollback().await?;
            return Ok(Err(Stale));
        }
        if !removed.is_empty() {
            let stmt = tx
                .prepare_cached("DELETE FROM ops WHERE device = $1 AND op_id = $2")
                .await?;
            for id in &removed {
                tx.execute(&stmt, &[&d, &&id[..]]).await?;
            }
        }
        if !rows.is_empty() {
            // Cursors last: the counter row's lock is held from here to the commit.
            let stmt = tx
                .prepare_cached(
                    "UPDATE feed_counters SET last = last + $1 WHERE feed = 'ops' RETURNING last",
                )
                .await?;
            let last: i64 = tx.query_one(&stmt, &[&(rows.len() as i64)]).await?.get(0);
            let first = last - rows.len() as i64 + 1;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO ops (cursor, device, seq, op_id, bytes, accepted_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await?;
            for (i, row) in rows.iter().enumerate() {
                tx.execute(
                    &stmt,
                    &[
                        &(first + i as i64),
                        &d,
                        &to_i64(row.seq),
                        &&row.id[..],
                        &row.bytes,
                        &to_i64(now_ms),
                    ],
                )
                .await?;
            }
        }
        let change = Change::Ops {
            device,
            version: version + 1,
        };
        self.notify(&tx, change).await?;
        tx.commit().await?;
        self.announce(change);
        Ok(Ok(version + 1))
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
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let d = &device.0[..];
        let stmt = tx
            .prepare_cached(
                "INSERT INTO forks (device, seq, theirs_id, ours, theirs, found_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .await?;
        let n = tx
            .execute(
                &stmt,
                &[
                    &d,
                    &to_i64(seq),
                    &&theirs_id[..],
                    &ours,
                    &theirs,
                    &to_i64(now_ms),
                ],
            )
            .await?;
        if n != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        // Other processes cache a device's fork count beside its chain (`GET …/head`) and drop
        // a cached chain only when its version moves: new evidence moves the version too, or
        // they would go on serving the count from before it.
        let stmt = tx
            .prepare_cached(
                "UPDATE chain_versions SET version = version + 1 WHERE device = $1
                 RETURNING version",
            )
            .await?;
        let change = match tx.query_opt(&stmt, &[&d]).await? {
            Some(row) => {
                let change = Change::Ops {
                    device,
                    version: to_u64(row.get(0)),
                };
                self.notify(&tx, change).await?;
                Some(change)
            }
            // No stored chain to cache (evidence comes with a chain, so not seen in practice).
            None => None,
        };
        tx.commit().await?;
        if let Some(change) = change {
            self.announce(change);
        }
        Ok(true)
    }

    async fn forks(&self, device: DeviceId) -> Result<Vec<ForkRow>> {
        self.fork_rows(
            "SELECT seq, ours, theirs FROM forks WHERE device = $1 ORDER BY id",
            device,
        )
        .await
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedRow>> {
        self.feed_rows(
            "SELECT cursor, device, bytes FROM ops WHERE cursor > $1 ORDER BY cursor LIMIT $2",
            after,
            limit,
        )
        .await
    }

    async fn peer_cursor(&self, peer: &str) -> Result<u64> {
        Ok(self
            .query_read("SELECT cursor FROM peer_cursors WHERE peer = $1", &[&peer])
            .await?
            .first()
            .map(|r| to_u64(r.get(0)))
            .unwrap_or(0))
    }

    async fn set_peer_cursor(&self, peer: &str, cursor: u64) -> Result<()> {
        self.execute_write(
            "INSERT INTO peer_cursors (peer, cursor) VALUES ($1, $2)
             ON CONFLICT (peer) DO UPDATE SET cursor = excluded.cursor",
            &[&peer, &to_i64(cursor)],
        )
        .await?;
        Ok(())
    }

    async fn mailbox_live_total(&self, now_ms: u64) -> Result<u64> {
        let rows = self
            .query_read(
                "SELECT COUNT(*) FROM mailbox_messages WHERE expires_ms > $1",
                &[&to_i64(now_ms)],
            )
            .await?;
        Ok(rows.first().map(|r| to_u64(r.get(0))).unwrap_or(0))
    }

    async fn mailbox_post(
        &self,
        mailbox: MailboxId,
        body: Vec<u8>,
        expires_ms: u64,
        now_ms: u64,
        quota: PostQuota,
    ) -> Result<core::result::Result<u64, MailboxRefusal>> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let m = &mailbox[..];
        let now = to_i64(now_ms);
        let stmt = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1, $2), pg_advisory_xact_lock($3, $4)")
            .await?;
        tx.execute(
            &stmt,
            &[
                &LOCK_MAILBOX,
                &lock_key(m),
                &LOCK_ADDRESS,
                &lock_key(&quota.address),
            ],
        )
        .await?;
        let stmt = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM mailbox_messages
                 WHERE mailbox = $1 AND sender = $2 AND expires_ms > $3 LIMIT $4) AS live",
            )
            .await?;
        // Each count stops at its cap (see the SQLite store).
        let (sender_cap, address_cap) = (cap(quota.per_sender), cap(quota.per_address));
        let by_sender: i64 = tx
            .query_one(&stmt, &[&m, &quota.sender, &now, &sender_cap])
            .await?
            .get(0);
        if to_u64(by_sender) >= quota.per_sender as u64 {
            tx.rollback().await?;
            return Ok(Err(MailboxRefusal::MailboxFull));
        }
        let stmt = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM mailbox_messages
                 WHERE address = $1 AND expires_ms > $2 LIMIT $3) AS live",
            )
            .await?;
        let by_address: i64 = tx
            .query_one(&stmt, &[&quota.address, &now, &address_cap])
            .await?
            .get(0);
        if to_u64(by_address) >= quota.per_address as u64 {
            tx.rollback().await?;
            return Ok(Err(MailboxRefusal::AddressFull));
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO mailbox_messages (id, mailbox, body, expires_ms, sender, address)
                 VALUES (nextval('mailbox_ids'), $1, $2, $3, $4, $5) RETURNING id",
            )
            .await?;
        let id: i64 = tx
            .query_one(
                &stmt,
                &[
                    &m,
                    &body,
                    &to_i64(expires_ms),
                    &quota.sender,
                    &quota.address,
                ],
            )
            .await?
            .get(0);
        let change = Change::Mailbox(mailbox);
        self.notify(&tx, change).await?;
        tx.commit().await?;
        self.announce(change);
        Ok(Ok(to_u64(id)))
    }

    async fn mailbox_read(
        &self,
        mailbox: MailboxId,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<MessageRow>> {
        Ok(self
            .query_read(
                "SELECT id, body, expires_ms FROM mailbox_messages
                 WHERE mailbox = $1 AND id > $2 AND expires_ms > $3 ORDER BY id LIMIT $4",
                &[
                    &&mailbox[..],
                    &to_i64(after),
                    &to_i64(now_ms),
                    &to_i64(limit as u64),
                ],
            )
            .await?
            .iter()
            .map(|r| MessageRow {
                id: to_u64(r.get(0)),
                body: r.get(1),
                expires_ms: to_u64(r.get(2)),
            })
            .collect())
    }

    async fn mailbox_purge(&self, now_ms: u64) -> Result<(usize, u64)> {
        let purged = self
            .execute_write(
                "DELETE FROM mailbox_messages WHERE expires_ms <= $1",
                &[&to_i64(now_ms)],
            )
            .await?;
        Ok((purged as usize, self.mailbox_live_total(now_ms).await?))
    }

    async fn invite_put(
        &self,
        id: [u8; 32],
        body: Vec<u8>,
        expires_ms: u64,
        now_ms: u64,
        quota: InviteQuota,
    ) -> Result<core::result::Result<Stored, InviteRefusal>> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let now = to_i64(now_ms);
        // One lock for all invitation puts: the node-wide cap is counted across every blob,
        // and invitations are rare next to ops and mailbox traffic.
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_INVITES])
            .await?;
        let existing = tx
            .query_opt(
                "SELECT body FROM invites WHERE id = $1 AND expires_ms > $2",
                &[&&id[..], &now],
            )
            .await?;
        if let Some(existing) = existing {
            let existing: Vec<u8> = existing.get(0);
            tx.rollback().await?;
            return Ok(if existing == body {
                Ok(Stored::Same)
            } else {
                Err(InviteRefusal::Exists)
            });
        }
        let by_address: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM invites WHERE address = $1 AND expires_ms > $2",
                &[&quota.address, &now],
            )
            .await?
            .get(0);
        if to_u64(by_address) >= quota.per_address as u64 {
            tx.rollback().await?;
            return Ok(Err(InviteRefusal::AddressFull));
        }
        let total: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM invites WHERE expires_ms > $1",
                &[&now],
            )
            .await?
            .get(0);
        if to_u64(total) >= quota.capacity as u64 {
            tx.rollback().await?;
            return Ok(Err(InviteRefusal::NodeFull));
        }
        tx.execute(
            "INSERT INTO invites (id, body, expires_ms, address) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE
             SET body = excluded.body, expires_ms = excluded.expires_ms, address = excluded.address",
            &[&&id[..], &body, &to_i64(expires_ms), &quota.address],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(Stored::Created))
    }

    async fn invite_get(&self, id: [u8; 32], now_ms: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_read(
                "SELECT body FROM invites WHERE id = $1 AND expires_ms > $2",
                &[&&id[..], &to_i64(now_ms)],
            )
            .await?
            .first()
            .map(|r| r.get(0)))
    }

    async fn invite_purge(&self, now_ms: u64) -> Result<usize> {
        Ok(self
            .execute_write(
                "DELETE FROM invites WHERE expires_ms <= $1",
                &[&to_i64(now_ms)],
            )
            .await? as usize)
    }

    async fn consent_load(&self, device: DeviceId) -> Result<ConsentRows> {
        let mut client = self.conn().await?;
        let tx = Self::snapshot(&mut client).await?;
        let d = &device.0[..];
        let entries = blobs_of(
            &tx,
            "SELECT bytes FROM consents WHERE device = $1 ORDER BY seq",
            d,
        )
        .await?;
        let stmt = tx
            .prepare_cached("SELECT theirs_hash FROM consent_forks WHERE device = $1")
            .await?;
        let fork_hashes = tx
            .query(&stmt, &[&d])
            .await?
            .into_iter()
            .map(|r| {
                let hash: Vec<u8> = r.get(0);
                hash.try_into()
                    .map_err(|_| Error::Internal("a consent fork hash is not 32 bytes".into()))
            })
            .collect::<Result<_>>()?;
        tx.commit().await?;
        Ok(ConsentRows {
            entries,
            fork_hashes,
        })
    }

    async fn consent_page(
        &self,
        device: DeviceId,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        // One more than the page holds, to know whether more follow.
        let rows = self
            .query_read(
                "SELECT bytes FROM consents WHERE device = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                &[
                    &&device.0[..],
                    &to_i64(from),
                    &to_i64(max_entries as u64 + 1),
                ],
            )
            .await?;
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut total = 0usize;
        for row in rows {
            let bytes: Vec<u8> = row.get(0);
            if out.len() == max_entries || (!out.is_empty() && total + bytes.len() > max_bytes) {
                return Ok((out, true));
            }
            total += bytes.len();
            out.push(bytes);
        }
        Ok((out, false))
    }

    async fn consent_append(
        &self,
        device: DeviceId,
        rows: Vec<EntryRow>,
        now_ms: u64,
    ) -> Result<core::result::Result<(), Stale>> {
        let Some(first) = rows.first() else {
            return Ok(Ok(()));
        };
        if let Some((_, row)) = rows
            .iter()
            .enumerate()
            .find(|(i, row)| row.seq != first.seq + *i as u64)
        {
            return Err(Error::Internal(format!(
                "consent entries for {device} are not consecutive at seq {}",
                row.seq
            )));
        }
        let len = first.seq + rows.len() as u64 - 1;
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let d = &device.0[..];
        let stmt = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1, $2)")
            .await?;
        tx.execute(&stmt, &[&LOCK_CONSENTS, &lock_key(d)]).await?;
        let stmt = tx
            .prepare_cached("SELECT MAX(seq) FROM consents WHERE device = $1")
            .await?;
        let have: Option<i64> = tx.query_one(&stmt, &[&d]).await?.get(0);
        if first.seq != have.map(to_u64).unwrap_or(0) + 1 {
            tx.rollback().await?;
            return Ok(Err(Stale));
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE feed_counters SET last = last + $1 WHERE feed = 'consents' RETURNING last",
            )
            .await?;
        let last: i64 = tx.query_one(&stmt, &[&(rows.len() as i64)]).await?.get(0);
        let cursor0 = last - rows.len() as i64 + 1;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO consents (cursor, device, seq, hash, bytes, accepted_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        for (i, row) in rows.iter().enumerate() {
            let inserted = tx
                .execute(
                    &stmt,
                    &[
                        &(cursor0 + i as i64),
                        &d,
                        &to_i64(row.seq),
                        &&row.hash[..],
                        &row.bytes,
                        &to_i64(now_ms),
                    ],
                )
                .await;
            match inserted {
                Ok(_) => {}
                // Cannot happen under the device lock; kept as the same answer if it did.
                Err(e) if is_unique_violation(&e) => return Ok(Err(Stale)),
                Err(e) => return Err(e.into()),
            }
        }
        let change = Change::Consents { device, len };
        self.notify(&tx, change).await?;
        tx.commit().await?;
        self.announce(change);
        Ok(Ok(()))
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
        let n = self
            .execute_write(
                "INSERT INTO consent_forks (device, seq, theirs_hash, ours, theirs, found_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &&device.0[..],
                    &to_i64(seq),
                    &&theirs_hash[..],
                    &ours,
                    &theirs,
                    &to_i64(now_ms),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn consent_forks(&self, device: DeviceId) -> Result<Vec<ForkRow>> {
        self.fork_rows(
            "SELECT seq, ours, theirs FROM consent_forks WHERE device = $1 ORDER BY id",
            device,
        )
        .await
    }

    async fn consent_feed(&self, after: u64, limit: usize) -> Result<Vec<FeedRow>> {
        self.feed_rows(
            "SELECT cursor, device, bytes FROM consents WHERE cursor > $1 ORDER BY cursor LIMIT $2",
            after,
            limit,
        )
        .await
    }
}

/// A quota as a SQL `LIMIT`.
fn cap(quota: usize) -> i64 {
    i64::try_from(quota).unwrap_or(i64::MAX)
}

/// The one byte column `sql` selects for the device `d`, row by row, inside `tx`.
async fn blobs_of(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    d: &[u8],
) -> Result<Vec<Vec<u8>>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx
        .query(&stmt, &[&d])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
