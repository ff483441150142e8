//! Storage behind one trait, [`Backend`], with two implementations: SQLite ([`sqlite`], the
//! default for a single small node) and PostgreSQL ([`postgres`], several stateless node
//! processes sharing one replicated database).
//!
//! **Invariant: a write returns only once it is durable.** Every method that changes data
//! resolves after the commit that holds the change.
//!
//! **Invariant: a writer never overwrites a chain or consent log it has not seen.** Each
//! device's chain carries a version ([`DeviceRows::version`]); [`Backend::update_ops`] stores
//! only when the version it was given is still the stored one, else answers [`Stale`] and
//! stores nothing, so two node processes that verified a post against two different views
//! cannot both win a seq: the loser reloads, verifies again, and finds a fork. The consent log
//! has the same rule by its seqs ([`Backend::consent_append`]).
//!
//! What changed is announced on [`Backend::changes`]: after each commit of this process and,
//! for a shared database, of every other process (PostgreSQL LISTEN/NOTIFY), so caches drop
//! what another front end replaced and long polls wake wherever the message was posted.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use latchkey_proto::keys::DeviceId;
use tokio::sync::broadcast;

use crate::error::Result;
use crate::invites::{InviteQuota, InviteRefusal, Stored};

/// A mailbox id: 32 bytes (a device's mailbox is its device id).
pub type MailboxId = [u8; 32];

/// A new op of the main chain, ready to store.
#[derive(Debug, Clone)]
pub struct OpRow {
    pub seq: u64,
    pub id: [u8; 32],
    pub bytes: Vec<u8>,
}

/// One entry of a feed (ops, or consent entries).
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
    /// The ops in the order they were stored (each after its parent or anchor).
    pub ops: Vec<Vec<u8>>,
    pub forks: Vec<Vec<u8>>,
    /// Bumped by every [`Backend::update_ops`]; 0 when nothing is stored.
    pub version: u64,
}

/// A verified consent entry, ready to store.
#[derive(Debug, Clone)]
pub struct EntryRow {
    pub seq: u64,
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
}

/// A device's stored consent log.
#[derive(Debug, Clone, Default)]
pub struct ConsentRows {
    /// The entries in seq order (seqs run from 1 without gaps).
    pub entries: Vec<Vec<u8>>,
    /// The hashes of the rival entries on record.
    pub fork_hashes: Vec<[u8; 32]>,
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

/// The stored chain or log moved on since the caller read it: nothing was written. Reload,
/// verify again, and retry (the retry then finds the other writer's ops, maybe a fork).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale;

/// A committed change, announced on [`Backend::changes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A device's chain now has this version.
    Ops { device: DeviceId, version: u64 },
    /// A device's consent log now holds `len` entries.
    Consents { device: DeviceId, len: u64 },
    /// A message was posted to this mailbox.
    Mailbox(MailboxId),
}

/// How many announcements a slow subscriber may fall behind before it is told it lagged (and
/// must then treat everything as changed).
pub const CHANGES_CAPACITY: usize = 4096;

/// The node's storage. Every method is one durable unit: a write resolves after its commit.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// `"sqlite"` or `"postgres"` (logs, metrics, bench output).
    fn kind(&self) -> &'static str;

    /// Whether other processes may write the same database (then caches must listen to
    /// [`Backend::changes`] and a device unknown here may still be stored).
    fn shared(&self) -> bool;

    /// Committed changes from now on, this process's and (when [`Backend::shared`]) others'.
    fn changes(&self) -> broadcast::Receiver<Change>;

    // --- chains ---

    /// Every device that has a stored genesis.
    async fn known_devices(&self) -> Result<Vec<DeviceId>>;

    /// A device's stored chain, its fork ops and its version (all empty and 0 when none).
    async fn load_device(&self, device: DeviceId) -> Result<DeviceRows>;

    /// Adds `rows` and removes the ops with ids in `removed` in one durable transaction, if
    /// the device's stored version is still `version`; returns the new version.
    async fn update_ops(
        &self,
        device: DeviceId,
        version: u64,
        rows: Vec<OpRow>,
        removed: Vec<[u8; 32]>,
        now_ms: u64,
    ) -> Result<core::result::Result<u64, Stale>>;

    /// Records fork evidence; returns whether it was new.
    async fn insert_fork(
        &self,
        device: DeviceId,
        seq: u64,
        theirs_id: [u8; 32],
        ours: Vec<u8>,
        theirs: Vec<u8>,
        now_ms: u64,
    ) -> Result<bool>;

    /// The fork evidence on record for a device, oldest first.
    async fn forks(&self, device: DeviceId) -> Result<Vec<ForkRow>>;

    /// Ops of every device in commit order after cursor `after`. A cursor is never handed
    /// out below one already visible, so a replicator that saw cursor N never misses a
    /// later commit.
    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedRow>>;

    // --- replication ---

    async fn peer_cursor(&self, peer: &str) -> Result<u64>;
    async fn set_peer_cursor(&self, peer: &str, cursor: u64) -> Result<()>;

    // --- mailboxes ---

    /// Live messages across all mailboxes.
    async fn mailbox_live_total(&self, now_ms: u64) -> Result<u64>;

    /// Stores a message durably unless its sender's share of the mailbox, or its address's
    /// share of the node, is full; returns its id (ids grow within a mailbox). A refusal
    /// writes nothing.
    async fn mailbox_post(
        &self,
        mailbox: MailboxId,
        body: Vec<u8>,
        expires_ms: u64,
        now_ms: u64,
        quota: PostQuota,
    ) -> Result<core::result::Result<u64, MailboxRefusal>>;

    /// Live messages of a mailbox with id > `after`, oldest first.
    async fn mailbox_read(
        &self,
        mailbox: MailboxId,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<MessageRow>>;

    /// Deletes every expired message; returns how many, and how many live ones remain.
    async fn mailbox_purge(&self, now_ms: u64) -> Result<(usize, u64)>;

    // --- invitation blobs ---

    /// Stores `body` under `id` durably, unless other bytes are there or a cap is reached. An
    /// expired blob under the id (not yet purged) counts as absent.
    async fn invite_put(
        &self,
        id: [u8; 32],
        body: Vec<u8>,
        expires_ms: u64,
        now_ms: u64,
        quota: InviteQuota,
    ) -> Result<core::result::Result<Stored, InviteRefusal>>;

    /// The live blob under `id`, if any.
    async fn invite_get(&self, id: [u8; 32], now_ms: u64) -> Result<Option<Vec<u8>>>;

    /// Deletes every expired blob; returns how many.
    async fn invite_purge(&self, now_ms: u64) -> Result<usize>;

    // --- consent logs ---

    /// A device's stored log and the hashes of its recorded rivals.
    async fn consent_load(&self, device: DeviceId) -> Result<ConsentRows>;

    /// One page of a device's entries with seq ≥ `from`: at most `max_entries` of them and,
    /// past the first, at most `max_bytes` in all; and whether more follow.
    async fn consent_page(
        &self,
        device: DeviceId,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, bool)>;

    /// Appends `rows` (consecutive seqs, verified by the caller) in one durable transaction,
    /// if they continue exactly what is stored; else stores nothing and answers [`Stale`].
    async fn consent_append(
        &self,
        device: DeviceId,
        rows: Vec<EntryRow>,
        now_ms: u64,
    ) -> Result<core::result::Result<(), Stale>>;

    /// Records a rival entry as evidence; returns whether it was new.
    async fn consent_insert_fork(
        &self,
        device: DeviceId,
        seq: u64,
        theirs_hash: [u8; 32],
        ours: Vec<u8>,
        theirs: Vec<u8>,
        now_ms: u64,
    ) -> Result<bool>;

    /// The rival entries on record for a device, oldest first.
    async fn consent_forks(&self, device: DeviceId) -> Result<Vec<ForkRow>>;

    /// Entries of every device in commit order after `after` (the consent feed), with the
    /// same cursor rule as [`Backend::feed`].
    async fn consent_feed(&self, after: u64, limit: usize) -> Result<Vec<FeedRow>>;
}

/// Where a node keeps its data: `--db FILE` or `--db postgres://…`.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl DbLocation {
    /// Reads what `--db` was given: a `postgres://` or `postgresql://` URL, else a file path.
    pub fn parse(text: &str) -> DbLocation {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            DbLocation::Postgres(text.to_owned())
        } else {
            DbLocation::Sqlite(PathBuf::from(text))
        }
    }
}

impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Shows a PostgreSQL URL without its password, so it can be logged.
impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::Sqlite(path) => write!(f, "{}", path.display()),
            DbLocation::Postgres(url) => match reqwest::Url::parse(url) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    write!(f, "{parsed}")
                }
                Err(_) => f.write_str("postgres://(unparsable URL)"),
            },
        }
    }
}

impl From<PathBuf> for DbLocation {
    fn from(path: PathBuf) -> Self {
        DbLocation::Sqlite(path)
    }
}

impl From<&std::path::Path> for DbLocation {
    fn from(path: &std::path::Path) -> Self {
        DbLocation::Sqlite(path.to_owned())
    }
}

/// The node's storage handle: cheap to clone, shared by every part of the node.
pub type Store = Arc<dyn Backend>;

/// Opens (creating and migrating if needed) the database at `location`.
pub async fn open(location: &DbLocation) -> Result<Store> {
    match location {
        DbLocation::Sqlite(path) => {
            let path = path.clone();
            let store =
                tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path)).await??;
            Ok(Arc::new(store))
        }
        DbLocation::Postgres(url) => open_postgres(url).await,
    }
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Store> {
    Err(crate::error::Error::Config(
        "this node was built without PostgreSQL support; rebuild with --features postgres \
         or give --db a SQLite file"
            .into(),
    ))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Store> {
    Ok(Arc::new(postgres::PgStore::open(url).await?))
}

/// Milliseconds since the Unix epoch by the node's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
