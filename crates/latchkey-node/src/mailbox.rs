//! Mailboxes: sealed envelopes relayed between parties that cannot reach each other directly.
//! **Invariant: the node stores opaque bytes only**; what a mailbox may be sent is decided
//! before, by [`crate::admission`], from sizes and public ops, never by opening an envelope.
//! Each message counts against its sender's share of the mailbox and its client address's
//! share of the node ([`PostQuota`]), so one sender cannot fill a mailbox others use.
//!
//! Messages live in SQLite until they expire. A reader long-polls: it is answered at once when
//! messages after its cursor exist, else woken by the next post to that mailbox (one
//! [`Notify`] per mailbox with waiters), else answered empty when its wait runs out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::config::Limits;
use crate::error::Result;
use crate::metrics::{self, Metrics};
use crate::store::{self, MailboxRefusal, MessageRow, PostQuota, Store};

pub use crate::store::MailboxId;

/// The node's mailboxes.
#[derive(Debug)]
pub struct Mailboxes {
    store: Store,
    metrics: Arc<Metrics>,
    waiters: Mutex<HashMap<MailboxId, Arc<Notify>>>,
    /// Live messages across all mailboxes (approximate between purges: expiry lowers it late).
    live_total: AtomicU64,
    total_capacity: usize,
}

/// Removes a mailbox's `Notify` when its last waiter leaves.
struct WaiterGuard<'a> {
    mailboxes: &'a Mailboxes,
    mailbox: MailboxId,
    notify: Arc<Notify>,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut waiters = self
            .mailboxes
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&self.notify) == 2 {
            waiters.remove(&self.mailbox);
        }
    }
}

impl Mailboxes {
    pub async fn open(store: Store, metrics: Arc<Metrics>, limits: &Limits) -> Result<Mailboxes> {
        let now = store::now_ms();
        let (_, live) = store.mailbox_purge(now).await?;
        Ok(Mailboxes {
            store,
            metrics,
            waiters: Mutex::new(HashMap::new()),
            live_total: AtomicU64::new(live),
            total_capacity: limits.mailbox_total_capacity,
        })
    }

    /// Stores `body` durably for `ttl`, counted against `quota`; returns its id, or why it was
    /// refused.
    pub async fn post(
        &self,
        mailbox: MailboxId,
        body: Vec<u8>,
        ttl: Duration,
        quota: PostQuota,
    ) -> Result<core::result::Result<u64, MailboxRefusal>> {
        if self.live_total.load(Ordering::Relaxed) >= self.total_capacity as u64 {
            metrics::inc(&self.metrics.mailbox_refused);
            return Ok(Err(MailboxRefusal::NodeFull));
        }
        let now = store::now_ms();
        let expires = now.saturating_add(ttl.as_millis() as u64);
        let posted = self
            .store
            .mailbox_post(mailbox, body, expires, now, quota)
            .await?;
        match posted {
            Ok(_) => {
                self.live_total.fetch_add(1, Ordering::Relaxed);
                metrics::inc(&self.metrics.mailbox_posts);
                let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(notify) = waiters.get(&mailbox) {
                    notify.notify_waiters();
                }
            }
            Err(_) => metrics::inc(&self.metrics.mailbox_refused),
        }
        Ok(posted)
    }

    /// Live messages after `after`; waits up to `wait` for one when there are none yet.
    /// Returns early (empty) when the node shuts down.
    pub async fn read(
        &self,
        mailbox: MailboxId,
        after: u64,
        limit: usize,
        wait: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Vec<MessageRow>> {
        metrics::inc(&self.metrics.mailbox_reads);
        let deadline = tokio::time::Instant::now() + wait;
        let guard = (!wait.is_zero()).then(|| {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            let notify = waiters.entry(mailbox).or_default().clone();
            WaiterGuard {
                mailboxes: self,
                mailbox,
                notify,
            }
        });
        loop {
            // Register for wake-ups before looking, so a post between the look and the wait
            // is not missed.
            let notified = guard.as_ref().map(|g| g.notify.notified());
            let mut notified = notified.map(Box::pin);
            if let Some(n) = notified.as_mut() {
                n.as_mut().enable();
            }
            let now = store::now_ms();
            let messages = self.store.mailbox_read(mailbox, after, now, limit).await?;
            if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(messages);
            }
            let Some(notified) = notified else {
                return Ok(messages);
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.wait_for(|stop| *stop) => return Ok(Vec::new()),
            }
        }
    }

    /// Wakes the readers of a mailbox another node process posted to.
    pub fn posted_elsewhere(&self, mailbox: MailboxId) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = waiters.get(&mailbox) {
            notify.notify_waiters();
        }
    }

    /// Wakes every reader (the store's announcements were missed): each looks again.
    pub fn wake_all(&self) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for notify in waiters.values() {
            notify.notify_waiters();
        }
    }

    /// Deletes expired messages and recounts the live ones.
    pub async fn purge(&self) -> Result<usize> {
        let now = store::now_ms();
        let (purged, live) = self.store.mailbox_purge(now).await?;
        self.live_total.store(live, Ordering::Relaxed);
        Ok(purged)
    }
}
