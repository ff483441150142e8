//! A handful of counters, served as Prometheus text at `GET /metrics`.
//!
//! Hand-formatted rather than a global registry, so that many nodes in one process (tests,
//! simulations) keep separate counts.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a posted op list was refused (the API error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    InvalidOp,
    Fork,
    DeviceMismatch,
    Malformed,
    TooLarge,
}

impl Rejection {
    const ALL: [Rejection; 5] = [
        Rejection::InvalidOp,
        Rejection::Fork,
        Rejection::DeviceMismatch,
        Rejection::Malformed,
        Rejection::TooLarge,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::InvalidOp => "invalid_op",
            Rejection::Fork => "fork",
            Rejection::DeviceMismatch => "device_mismatch",
            Rejection::Malformed => "malformed",
            Rejection::TooLarge => "too_large",
        }
    }
}

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub ops_accepted: AtomicU64,
    rejected: [AtomicU64; 5],
    /// New fork evidence stored.
    pub forks: AtomicU64,
    pub chain_reads: AtomicU64,
    pub feed_reads: AtomicU64,
    pub mailbox_posts: AtomicU64,
    pub mailbox_reads: AtomicU64,
    pub mailbox_refused: AtomicU64,
    pub replication_pulls: AtomicU64,
    pub replication_ops: AtomicU64,
    pub replication_errors: AtomicU64,
    pub rate_limited: AtomicU64,
    pub overloaded: AtomicU64,
    pub devices: AtomicU64,
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn reject(&self, why: Rejection) {
        let i = Rejection::ALL
            .iter()
            .position(|r| *r == why)
            .expect("listed");
        inc(&self.rejected[i]);
    }

    pub fn rejected(&self, why: Rejection) -> u64 {
        let i = Rejection::ALL
            .iter()
            .position(|r| *r == why)
            .expect("listed");
        self.rejected[i].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "latchkey_ops_accepted_total",
            "Ops added to a main chain (posted or replicated).",
            get(&self.ops_accepted),
        );
        counter(
            "latchkey_forks_total",
            "New fork evidence stored.",
            get(&self.forks),
        );
        counter(
            "latchkey_chain_reads_total",
            "Reads of a device's ops or head.",
            get(&self.chain_reads),
        );
        counter(
            "latchkey_feed_reads_total",
            "Reads of the replication feed.",
            get(&self.feed_reads),
        );
        counter(
            "latchkey_mailbox_posts_total",
            "Mailbox messages stored.",
            get(&self.mailbox_posts),
        );
        counter(
            "latchkey_mailbox_reads_total",
            "Mailbox reads (long polls count once).",
            get(&self.mailbox_reads),
        );
        counter(
            "latchkey_mailbox_refused_total",
            "Mailbox posts refused because a mailbox or the node was full.",
            get(&self.mailbox_refused),
        );
        counter(
            "latchkey_replication_pulls_total",
            "Feed pages pulled from peers.",
            get(&self.replication_pulls),
        );
        counter(
            "latchkey_replication_ops_total",
            "Ops added from peers.",
            get(&self.replication_ops),
        );
        counter(
            "latchkey_replication_errors_total",
            "Failed pulls, and ops from peers that did not verify.",
            get(&self.replication_errors),
        );
        counter(
            "latchkey_rate_limited_total",
            "Requests refused by a per-IP rate limit.",
            get(&self.rate_limited),
        );
        counter(
            "latchkey_overloaded_total",
            "Requests refused because the node served its maximum at once.",
            get(&self.overloaded),
        );
        let _ = writeln!(
            out,
            "# HELP latchkey_ops_rejected_total Op posts refused, by reason.\n\
             # TYPE latchkey_ops_rejected_total counter"
        );
        for r in Rejection::ALL {
            let _ = writeln!(
                out,
                "latchkey_ops_rejected_total{{reason=\"{}\"}} {}",
                r.label(),
                self.rejected(r)
            );
        }
        let _ = writeln!(
            out,
            "# HELP latchkey_devices Devices with a stored chain.\n\
             # TYPE latchkey_devices gauge\nlatchkey_devices {}",
            get(&self.devices)
        );
        out
    }
}
