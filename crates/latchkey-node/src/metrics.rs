//! A handful of counters, served as Prometheus text at `GET /metrics`.
//!
//! Hand-formatted rather than a global registry, so that many nodes in one process (tests,
//! simulations) keep separate counts.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Why a posted consent entry was refused (the API error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentRejection {
    InvalidConsent,
    ConsentConflict,
    Malformed,
    TooLarge,
    LogFull,
}

impl ConsentRejection {
    const ALL: [ConsentRejection; 5] = [
        ConsentRejection::InvalidConsent,
        ConsentRejection::ConsentConflict,
        ConsentRejection::Malformed,
        ConsentRejection::TooLarge,
        ConsentRejection::LogFull,
    ];

    fn label(self) -> &'static str {
        match self {
            ConsentRejection::InvalidConsent => "invalid_consent",
            ConsentRejection::ConsentConflict => "consent_conflict",
            ConsentRejection::Malformed => "malformed",
            ConsentRejection::TooLarge => "too_large",
            ConsentRejection::LogFull => "consent_log_full",
        }
    }
}

/// Why a mailbox post was refused before storing (the API error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    NotAnEnvelope,
    NotAnOwnerMessage,
    UnknownMailbox,
}

impl NotAdmitted {
    const ALL: [NotAdmitted; 3] = [
        NotAdmitted::NotAnEnvelope,
        NotAdmitted::NotAnOwnerMessage,
        NotAdmitted::UnknownMailbox,
    ];

    pub fn label(self) -> &'static str {
        match self {
            NotAdmitted::NotAnEnvelope => "not_an_envelope",
            NotAdmitted::NotAnOwnerMessage => "not_an_owner_message",
            NotAdmitted::UnknownMailbox => "unknown_mailbox",
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
    /// Writes that found the chain or consent log moved by another node process (then
    /// verified again).
    pub stale_writes: AtomicU64,
    pub chain_reads: AtomicU64,
    pub feed_reads: AtomicU64,
    pub mailbox_posts: AtomicU64,
    pub mailbox_reads: AtomicU64,
    pub mailbox_refused: AtomicU64,
    /// Mailbox posts refused by the admission rules, by [`NotAdmitted`].
    not_admitted: [AtomicU64; 3],
    /// Long polls being held now.
    pub long_polls: Arc<AtomicU64>,
    /// Ordinary requests in flight now.
    pub requests: Arc<AtomicU64>,
    /// Ordinary requests refused because their address held its maximum at once.
    pub too_many_at_once: AtomicU64,
    /// Long polls refused because their address held its maximum.
    pub long_polls_refused_address: AtomicU64,
    /// Long polls refused because the pool was full.
    pub long_polls_refused_pool: AtomicU64,
    pub replication_pulls: AtomicU64,
    pub replication_ops: AtomicU64,
    pub replication_errors: AtomicU64,
    pub rate_limited: AtomicU64,
    pub overloaded: AtomicU64,
    pub devices: AtomicU64,
    /// Invitation blobs stored (a repeat of the same bytes not counted).
    pub invites_stored: AtomicU64,
    pub invite_reads: AtomicU64,
    /// Invitation stores refused: other bytes under the id, or a cap reached.
    pub invites_refused: AtomicU64,
    /// Consent entries added to a log (posted or replicated).
    pub consents_accepted: AtomicU64,
    /// Reads of a consent log, its forks or the consent feed.
    pub consent_reads: AtomicU64,
    /// New conflicting-entry evidence stored.
    pub consent_forks: AtomicU64,
    consents_rejected: [AtomicU64; 5],
    /// Consent entries from peers added.
    pub replication_consents: AtomicU64,
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

    pub fn not_admitted(&self, why: NotAdmitted) -> u64 {
        let i = NotAdmitted::ALL
            .iter()
            .position(|r| *r == why)
            .expect("listed");
        self.not_admitted[i].load(Ordering::Relaxed)
    }

    pub fn refuse_mailbox_post(&self, why: NotAdmitted) {
        let i = NotAdmitted::ALL
            .iter()
            .position(|r| *r == why)
            .expect("listed");
        inc(&self.not_admitted[i]);
    }

    pub fn reject_consent(&self, why: ConsentRejection) {
        let i = ConsentRejection::ALL
            .iter()
            .position(|r| *r == why)
            .expect("listed");
        inc(&self.consents_rejected[i]);
    }

    pub fn consents_rejected(&self, why: ConsentRejection) -> u64 {
        let i = ConsentRejection::ALL
            .iter()
            .position(|r| *r == why)
            .expect("listed");
        self.consents_rejected[i].load(Ordering::Relaxed)
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
            "latchkey_stale_writes_total",
            "Writes that found the chain or consent log moved by another node process.",
            get(&self.stale_writes),
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
            "Mailbox posts refused because a sender's, an address's or the node's share was full.",
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
        counter(
            "latchkey_too_many_at_once_total",
            "Requests refused because their address had its maximum in flight.",
            get(&self.too_many_at_once),
        );
        counter(
            "latchkey_invites_stored_total",
            "Sealed invitation blobs stored.",
            get(&self.invites_stored),
        );
        counter(
            "latchkey_invite_reads_total",
            "Reads of a sealed invitation blob (found or not).",
            get(&self.invite_reads),
        );
        counter(
            "latchkey_invites_refused_total",
            "Invitation stores refused: other bytes under the id, or an address's or the node's share full.",
            get(&self.invites_refused),
        );
        counter(
            "latchkey_consents_accepted_total",
            "Consent entries added to a device's log (posted or replicated).",
            get(&self.consents_accepted),
        );
        counter(
            "latchkey_consent_reads_total",
            "Reads of a consent log, its conflict evidence, or the consent feed.",
            get(&self.consent_reads),
        );
        counter(
            "latchkey_consent_forks_total",
            "New conflicting consent entries stored as evidence.",
            get(&self.consent_forks),
        );
        counter(
            "latchkey_replication_consents_total",
            "Consent entries added from peers.",
            get(&self.replication_consents),
        );
        let _ = writeln!(
            out,
            "# HELP latchkey_consents_rejected_total Consent entry posts refused, by reason.\n\
             # TYPE latchkey_consents_rejected_total counter"
        );
        for r in ConsentRejection::ALL {
            let _ = writeln!(
                out,
                "latchkey_consents_rejected_total{{reason=\"{}\"}} {}",
                r.label(),
                self.consents_rejected(r)
            );
        }
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
            "# HELP latchkey_mailbox_not_admitted_total Mailbox posts refused by the admission rules, by reason.\n\
             # TYPE latchkey_mailbox_not_admitted_total counter"
        );
        for r in NotAdmitted::ALL {
            let _ = writeln!(
                out,
                "latchkey_mailbox_not_admitted_total{{reason=\"{}\"}} {}",
                r.label(),
                self.not_admitted(r)
            );
        }
        let _ = writeln!(
            out,
            "# HELP latchkey_long_polls_refused_total Long polls refused: the address held its maximum, or the pool was full.\n\
             # TYPE latchkey_long_polls_refused_total counter\n\
             latchkey_long_polls_refused_total{{reason=\"address\"}} {}\n\
             latchkey_long_polls_refused_total{{reason=\"pool\"}} {}",
            get(&self.long_polls_refused_address),
            get(&self.long_polls_refused_pool)
        );
        let _ = writeln!(
            out,
            "# HELP latchkey_requests_in_flight Ordinary requests in flight now (long polls apart).\n\
             # TYPE latchkey_requests_in_flight gauge\nlatchkey_requests_in_flight {}",
            get(&self.requests)
        );
        let _ = writeln!(
            out,
            "# HELP latchkey_long_polls Long polls held now.\n\
             # TYPE latchkey_long_polls gauge\nlatchkey_long_polls {}",
            get(&self.long_polls)
        );
        let _ = writeln!(
            out,
            "# HELP latchkey_devices Devices with a stored chain.\n\
             # TYPE latchkey_devices gauge\nlatchkey_devices {}",
            get(&self.devices)
        );
        out
    }
}
