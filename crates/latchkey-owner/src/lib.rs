//! # latchkey-owner — the owner and guest side, without UI
//!
//! A [`Profile`] is a directory with a SQLite store plus one recovery phrase in the OS
//! keychain. From it: create or restore the phrase ([`Profile::create_seed`],
//! [`Profile::restore_seed`]), manage registry nodes, claim a device from its QR
//! ([`Profile::claim`]), and send it sealed commands ([`Profile::open`]). The CLI (`latchkey`)
//! and the Tauri app are thin fronts over this crate.
//!
//! **Invariant: no secret reaches the disk.** The phrase lives in the keychain
//! ([`keychain::KeyringStore`]); keys are derived from it when needed and wiped on drop; the
//! store holds only public data (nodes, devices, verified chains).

pub mod answers;
pub mod audit;
pub mod backup;
pub mod claim;
pub mod consent;
pub mod door;
pub mod error;
pub mod events;
pub mod fork;
pub mod invite;
pub mod keychain;
pub mod link;
mod mailbox;
pub mod meter;
pub mod open;
pub mod owners;
pub mod profile;
pub mod qr;
pub mod refusal;
pub mod stays;
pub mod store;
pub mod words;

pub use answers::LastAnswer;
pub use audit::AuditReport;
pub use backup::BackupCheck;
pub use claim::{ClaimReport, ClaimSource, ClaimStage};
pub use consent::{ConsentLogEntryView, ConsentRequestView, ConsentView, OutboxReport};
pub use door::DoorSync;
pub use error::{Error, Result};
pub use fork::{ForkAlarm, ForkKind, ForkWords};
pub use invite::{
    invitation_qr_png, invitation_qr_text, pinned_by, GrantStatus, HeldDoor, HeldInvitation,
    InviteRequest, IssuedGrant, IssuedInvitation, ReissueReport, RevokeReport,
};
pub use link::{qr_version, Redemption};
pub use meter::{MeterSnapshot, MeterWatch};
pub use open::{OpenReport, Route, REFRESH_ALONGSIDE_MS, REFRESH_BEFORE_MS};
pub use owners::{MyPart, OwnerChange, OwnersView, Proposal, ProposalReport};
pub use profile::{Clock, Profile, Session, SystemClock};
pub use refusal::{explain, Refusal};
pub use stays::{
    StayChange, StayLink, StayPhase, StayStatus, StaySyncLine, StaySyncReport, StayTimes, StayView,
};
pub use words::Words;
