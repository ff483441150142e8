//! # latchkey-node — a Latchkey registry node
//!
//! Stores each device's ownership chain in SQLite and serves it over HTTP (docs/API.md);
//! accepts only ops that verify with latchkey-proto exactly as a client verifies them; keeps a
//! valid different op at a held position as fork evidence, never preferring it; replicates
//! from peer nodes by pulling their feeds; relays sealed envelopes through mailboxes.
//!
//! **Invariant: nothing is acknowledged before it is durable** (SQLite WAL,
//! `synchronous=FULL`, one transaction per request). **Invariant: a node is not trusted** —
//! clients verify what it serves from genesis, so it can withhold but not forge.
//!
//! [`start`] runs a node inside the caller's tokio runtime, so tests and simulations can run
//! many on 127.0.0.1 port 0; each uses two SQLite connections, no threads of its own (disk
//! work runs on tokio's blocking pool), one task per peer and one for housekeeping.

pub mod admission;
pub mod api;
pub mod config;
pub mod consents;
pub mod error;
pub mod invites;
pub mod mailbox;
pub mod metrics;
pub mod registry;
pub mod replication;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{DbLocation, Limits, NodeConfig, Rate, Url};
pub use error::{Error, Result};

/// A node serving in the background. Dropping it stops it without waiting;
/// [`RunningNode::shutdown`] stops it gracefully and waits.
#[derive(Debug)]
pub struct RunningNode {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Arc<metrics::Metrics>,
    peers: Peers,
}

/// What starting a replicator needs.
#[derive(Debug)]
struct Peers {
    registry: Arc<registry::Registry>,
    owner_index: Arc<admission::OwnerIndex>,
    consents: Arc<consents::ConsentLogs>,
    store: store::Store,
    metrics: Arc<metrics::Metrics>,
    client: reqwest::Client,
    interval: std::time::Duration,
    shutdown: watch::Receiver<bool>,
}

impl Peers {
    fn spawn(&self, peer: Url) -> Result<JoinHandle<()>> {
        check_peer(&peer)?;
        let replicator = replication::Replicator {
            peer,
            registry: self.registry.clone(),
            owner_index: self.owner_index.clone(),
            consents: self.consents.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            client: self.client.clone(),
            interval: self.interval,
        };
        Ok(tokio::spawn(replicator.run(self.shutdown.clone())))
    }
}

fn check_peer(peer: &Url) -> Result<()> {
    if matches!(peer.scheme(), "http" | "https") {
        Ok(())
    } else {
        Err(Error::Config(format!("peer {peer} is not an http(s) URL")))
    }
}

impl RunningNode {
    /// The address it listens on (with the real port when the config said 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL clients and peers use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node's counters (what `GET /metrics` shows).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Starts replicating from one more peer (e.g. once every node of a simulation has its
    /// port).
    pub fn add_peer(&mut self, peer: Url) -> Result<()> {
        let task = self.peers.spawn(peer)?;
        self.tasks.push(task);
        Ok(())
    }

    /// Stops accepting connections, lets requests in flight finish (long polls return at
    /// once), stops replication, and waits for all of it.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            server.await??;
        }
        for task in self.tasks.drain(..) {
            task.await?;
        }
        Ok(())
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Opens the database, binds the listener, and starts serving, replicating and
/// housekeeping. Returns once the node answers requests.
pub async fn start(config: NodeConfig) -> Result<RunningNode> {
    for peer in &config.peers {
        if !matches!(peer.scheme(), "http" | "https") {
            return Err(Error::Config(format!("peer {peer} is not an http(s) URL")));
        }
    }
    if config.sync_interval.is_zero() {
        return Err(Error::Config("the sync interval must be above zero".into()));
    }
    let store = store::open(&config.db).await?;
    // Listen before reading what is stored, so no change falls between the two.
    let changes = store.changes();
    let metrics = Arc::new(metrics::Metrics::default());
    let limits = Arc::new(config.limits.clone());
    let registry = Arc::new(
        registry::Registry::open(
            store.clone(),
            metrics.clone(),
            limits.max_cached_chains,
            limits.max_forks_per_device,
        )
        .await?,
    );
    let mailboxes =
        Arc::new(mailbox::Mailboxes::open(store.clone(), metrics.clone(), &limits).await?);
    let owner_index = Arc::new(admission::OwnerIndex::build(&registry).await?);
    let consents = Arc::new(consents::ConsentLogs::new(
        store.clone(),
        registry.clone(),
        metrics.clone(),
        limits.max_cached_consent_logs,
        limits.max_forks_per_device,
        limits.max_consents_per_device,
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limiters = Arc::new(api::Limiters::new(&limits));
    let state = api::AppState {
        registry: registry.clone(),
        mailboxes: mailboxes.clone(),
        owner_index: owner_index.clone(),
        consents: consents.clone(),
        requests: Arc::new(api::Places::new(
            limits.max_concurrent_requests,
            limits.max_requests_per_address,
            metrics.requests.clone(),
        )),
        long_polls: Arc::new(api::Places::new(
            limits.max_long_polls,
            limits.max_long_polls_per_address,
            metrics.long_polls.clone(),
        )),
        store: store.clone(),
        metrics: metrics.clone(),
        limits: limits.clone(),
        limiters: limiters.clone(),
        shutdown: shutdown_rx.clone(),
    };
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut stop = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });

    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .connect_timeout(std::time::Duration::from_secs(3))
        .pool_max_idle_per_host(1)
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
    let peers = Peers {
        registry: registry.clone(),
        owner_index,
        consents,
        store,
        metrics: metrics.clone(),
        client,
        interval: config.sync_interval,
        shutdown: shutdown_rx.clone(),
    };
    let mut tasks = Vec::new();
    for peer in &config.peers {
        tasks.push(peers.spawn(peer.clone())?);
    }
    tasks.push(tokio::spawn(follow_changes(
        changes,
        registry.clone(),
        peers.consents.clone(),
        mailboxes.clone(),
        peers.store.shared(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(housekeeping(
        mailboxes,
        peers.store.clone(),
        limiters,
        limits.purge_interval,
        shutdown_rx,
    )));
    tracing::info!(%addr, peers = config.peers.len(), devices = registry.device_count(), "node ready");
    Ok(RunningNode {
        addr,
        shutdown: shutdown_tx,
        server: Some(server),
        tasks,
        metrics,
        peers,
    })
}

/// Keeps the caches true to the store: a chain or consent log another node process changed is
/// dropped, a device it stored becomes known, and long polls wake for messages it took.
async fn follow_changes(
    mut changes: tokio::sync::broadcast::Receiver<store::Change>,
    registry: Arc<registry::Registry>,
    consents: Arc<consents::ConsentLogs>,
    mailboxes: Arc<mailbox::Mailboxes>,
    shared: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match change {
            Ok(store::Change::Ops { device, version }) => registry.changed(device, version).await,
            Ok(store::Change::Consents { device, len }) => consents.changed(device, len).await,
            // This process's own posts woke their readers already.
            Ok(store::Change::Mailbox(mailbox)) => {
                if shared {
                    mailboxes.posted_elsewhere(mailbox);
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "fell behind the store's change announcements; dropping every cache"
                );
                if let Err(e) = registry.forget_all().await {
                    tracing::warn!(error = %e, "re-reading the known devices failed");
                }
                consents.forget_all().await;
                mailboxes.wake_all();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Purges expired mailbox messages, expired invitation blobs and idle rate-limit entries now
/// and then.
async fn housekeeping(
    mailboxes: Arc<mailbox::Mailboxes>,
    store: store::Store,
    limiters: Arc<api::Limiters>,
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match mailboxes.purge().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired mailbox messages purged"),
            Err(e) => tracing::warn!(error = %e, "purging mailboxes failed"),
        }
        match store.invite_purge(store::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired invitation blobs purged"),
            Err(e) => tracing::warn!(error = %e, "purging invitation blobs failed"),
        }
        limiters.forget_idle();
    }
}
