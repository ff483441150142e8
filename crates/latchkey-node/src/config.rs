//! What a node is told at start: where to listen, where its database lives, which peers to
//! replicate from, and the limits it holds every client to.

use std::net::SocketAddr;
use std::time::Duration;

pub use reqwest::Url;

pub use crate::store::DbLocation;

/// Everything [`crate::start`] needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address to listen on; port 0 picks a free port (read it back from `RunningNode::addr`).
    pub listen: SocketAddr,
    /// Where the data lives: a SQLite file (created if missing) or a PostgreSQL URL.
    pub db: DbLocation,
    /// Base URLs of the nodes to replicate from (e.g. `http://10.0.0.2:7400`).
    pub peers: Vec<Url>,
    /// Pause between two pulls of a peer's feed once caught up.
    pub sync_interval: Duration,
    pub limits: Limits,
}

impl NodeConfig {
    /// A node on `listen` storing into `db_path`, with no peers and the default limits.
    pub fn new(listen: SocketAddr, db: impl Into<DbLocation>) -> Self {
        NodeConfig {
            listen,
            db: db.into(),
            peers: Vec::new(),
            sync_interval: Duration::from_secs(1),
            limits: Limits::default(),
        }
    }
}

/// A per-client-address rate: `per_second` sustained, up to `burst` at once (an address is an
/// IPv4 address or an IPv6 /64, see [`crate::api::client_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Rate { per_second, burst }
    }
}

/// Limits against abuse. `None` for a rate turns that limit off.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `POST /v1/devices/{d}/ops` body.
    pub max_ops_body: usize,
    /// Largest mailbox message body.
    pub max_mailbox_body: usize,
    /// Live (unexpired) messages one sender may hold in one device or owner mailbox. A sender
    /// is the client address for a device mailbox, the signing owner and the client address
    /// for an owner mailbox (docs/API.md, "Who may post what"), so nobody can fill a mailbox
    /// others use.
    pub mailbox_per_sender: usize,
    /// Live messages one client address may hold in one reply mailbox (a reply mailbox takes
    /// one sealed answer per command).
    pub reply_mailbox_per_sender: usize,
    /// Live messages one client address may hold across all mailboxes of the node.
    pub mailbox_per_address: usize,
    /// Live messages all mailboxes of the node hold at most.
    pub mailbox_total_capacity: usize,
    /// Lifetime of a mailbox message when the sender names none.
    pub mailbox_default_ttl: Duration,
    /// Longest lifetime a sender may ask for.
    pub mailbox_max_ttl: Duration,
    /// Longest long poll (`wait_secs`).
    pub mailbox_max_wait: Duration,
    /// Most messages one mailbox read returns.
    pub mailbox_max_read: usize,
    /// Most feed entries one read returns (`limit`).
    pub feed_max_limit: usize,
    /// Fork evidence kept per device; later forks are still answered `409 fork`.
    pub max_forks_per_device: usize,
    /// Op posts per client IP.
    pub ops_rate: Option<Rate>,
    /// Mailbox posts per client IP.
    pub mailbox_rate: Option<Rate>,
    /// Every other request per client IP.
    pub read_rate: Option<Rate>,
    /// Time a request may take (long polls get their wait on top).
    pub request_timeout: Duration,
    /// Requests served at once, long polls apart; beyond it the node answers `503 overloaded`.
    pub max_concurrent_requests: usize,
    /// Ordinary requests one client address may have in flight at once; beyond it
    /// `429 too_many_at_once` (so slow bodies from one address cannot take every place).
    pub max_requests_per_address: usize,
    /// Long polls (mailbox reads with `wait_secs` > 0) held at once. They have a pool of their
    /// own, so waiting readers can never take the places ordinary requests need; beyond it the
    /// node answers `503 long_polls_full`.
    pub max_long_polls: usize,
    /// Long polls one client address may hold at once; beyond it `429 too_many_long_polls`.
    pub max_long_polls_per_address: usize,
    /// Verified chains kept in memory (least recently used are dropped and reloaded on use).
    pub max_cached_chains: usize,
    /// How often expired mailbox messages and invitation blobs are purged.
    pub purge_interval: Duration,
    /// Largest sealed invitation (`PUT /v1/invites/{id}` body).
    pub max_invite_body: usize,
    /// Live invitation blobs one client address may hold.
    pub invites_per_address: usize,
    /// Live invitation blobs the node holds at most.
    pub invite_capacity: usize,
    /// Invitation stores (`PUT /v1/invites/…`) per client IP.
    pub invite_rate: Option<Rate>,
    /// Largest `POST /v1/devices/{d}/consents` body (one encoded consent entry).
    pub max_consent_body: usize,
    /// Entries one device's consent log may hold on the node.
    pub max_consents_per_device: u64,
    /// Verified consent logs kept in memory (least recently used are reloaded and verified
    /// again on use).
    pub max_cached_consent_logs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops_body: 1024 * 1024,
            max_mailbox_body: 20_000,
            mailbox_per_sender: 64,
            reply_mailbox_per_sender: 4,
            mailbox_per_address: 1024,
            mailbox_total_capacity: 100_000,
            mailbox_default_ttl: Duration::from_secs(300),
            mailbox_max_ttl: Duration::from_secs(3600),
            mailbox_max_wait: Duration::from_secs(30),
            mailbox_max_read: 64,
            feed_max_limit: 1000,
            max_forks_per_device: 64,
            ops_rate: Some(Rate::new(10, 50)),
            mailbox_rate: Some(Rate::new(20, 60)),
            read_rate: Some(Rate::new(200, 1000)),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 512,
            max_requests_per_address: 64,
            max_long_polls: 1024,
            max_long_polls_per_address: 32,
            max_cached_chains: 10_000,
            purge_interval: Duration::from_secs(10),
            max_invite_body: crate::invites::MAX_INVITE_BODY,
            invites_per_address: 1000,
            invite_capacity: 50_000,
            invite_rate: Some(Rate::new(5, 50)),
            max_consent_body: crate::consents::MAX_ENTRY_BODY,
            max_consents_per_device: crate::consents::MAX_ENTRIES_PER_DEVICE,
            max_cached_consent_logs: 1_000,
        }
    }
}

impl Limits {
    /// The defaults without rate limits: for tests, benchmarks and simulations where every
    /// client shares 127.0.0.1.
    pub fn without_rate_limits() -> Self {
        Limits {
            ops_rate: None,
            mailbox_rate: None,
            read_rate: None,
            invite_rate: None,
            ..Limits::default()
        }
    }
}
