//! # latchkey-quorum — ask several random registry nodes, trust none of them
//!
//! A node can lie only by withholding (serving an old chain): it cannot forge signatures. So
//! the client asks `k` nodes chosen at random, verifies every answer from genesis (or from a
//! chain it verified before), takes the longest valid extension, and reports every fork as an
//! alarm. With too few answers it says so and how old its cached view is.
//!
//! [`assess`] is the pure merge (no I/O); [`QuorumClient`] does the sampling and HTTP.

pub mod assess;
pub mod client;
pub mod config;
pub mod consent;
pub mod error;
pub mod http;
pub mod invites;

pub use assess::{assess, Answer, Assessment, NodeOutcome, NodeReport};
pub use client::{CachedView, Freshness, OwnershipView, PublishReport, QuorumClient};
pub use config::QuorumConfig;
pub use consent::{assess_consents, ConsentAnswer, ConsentLogReport};
pub use error::{Error, Result};
pub use http::read_capped;
pub use invites::{get_invite, put_invite, InvitePublishReport, Put};
