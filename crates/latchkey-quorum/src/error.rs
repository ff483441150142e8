//! The quorum client's error type.

/// What can go wrong asking nodes. Per-node failures are not errors of the whole check: they
/// are reported in [`crate::NodeReport`]s; these are the failures a caller must act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no registry nodes are configured; add some (e.g. `latchkey nodes add URL`)")]
    NoNodes,
    #[error("no node knows device {device} and nothing is cached; check the device id, or publish its genesis first")]
    UnknownDevice { device: String },
    #[error("only {acks} of the {needed} required nodes stored the ops; retry when more nodes are reachable")]
    NotEnoughAcks { acks: usize, needed: usize },
    #[error("nodes refused the ops as invalid: {0}")]
    Rejected(String),
    #[error("a node holds a different valid op at the same place (fork) for device {device}; ownership is in dispute")]
    Fork { device: String },
    /// A peer declared or sent more than the endpoint's cap; reading stopped there.
    #[error("the answer is over this endpoint's limit of {cap} bytes (the peer sent or declared {seen}); it was ignored")]
    TooLarge { cap: usize, seen: u64 },
    #[error("reading the answer failed: {0}")]
    Read(String),
    /// Other bytes are stored under the invitation id on this node (blobs are write-once).
    #[error("node {node} holds a different invitation under this id; make a new link")]
    InviteExists { node: String },
    #[error("node {node} refused: {why}")]
    NodeRefused { node: String, why: String },
    #[error("only {answered} node(s) served a consent log of {device} that verifies; {needed} are needed; retry when more nodes are reachable, or publish the device's chain to more nodes")]
    NotEnoughConsentAnswers {
        device: String,
        answered: usize,
        needed: usize,
    },
    #[error("no node served a consent log of {device} that verifies against its chain (lying: {}); ask other nodes", lying.join(", "))]
    ConsentLogUnverified { device: String, lying: Vec<String> },
    #[error("nodes hold a different consent entry at seq {seq} of {device} ({}); fetch the log again and sign the next entry on top of it", nodes.join(", "))]
    ConsentConflict {
        device: String,
        seq: u64,
        nodes: Vec<String>,
    },
    #[error("nodes refused the consent entry as invalid: {0}")]
    ConsentRejected(String),
    #[error("invalid node URL {url}: {why}")]
    BadUrl { url: String, why: String },
}

pub type Result<T, E = Error> = core::result::Result<T, E>;
