//! The owner core's one error type. Every variant has a stable [`Error::code`] so a UI maps it
//! to `{code, message}` without matching on text; messages say what went wrong and what to do.

/// What the owner core can refuse or fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("this profile has no recovery phrase in the OS keychain; create one with `latchkey init` or bring yours with `latchkey restore`")]
    NoSeed,
    #[error("this profile already holds a recovery phrase in the OS keychain; use another `--profile DIR` to start over")]
    SeedExists,
    #[error("the OS keychain refused: {0}; unlock it (on Linux, the Secret Service such as gnome-keyring must be running and unlocked) and retry")]
    Keychain(String),
    #[error("the recovery phrase is not valid: {0}")]
    Phrase(latchkey_proto::Error),
    #[error("the profile database at {path} failed: {why}; check that the directory is writable and not used by another program")]
    Store { path: String, why: String },
    #[error("no registry nodes are configured; add some with `latchkey nodes add URL...`")]
    NoNodes,
    #[error("invalid node URL {url}: it must start with http:// or https://")]
    BadNodeUrl { url: String },
    #[error("asking the registry nodes failed: {0}")]
    Quorum(latchkey_quorum::Error),
    #[error("cannot read the image {path}: {why}; give a PNG or JPEG file")]
    Image { path: String, why: String },
    #[error("no QR code was found in {path}; take the photo closer and straight on, or pass the code's text with `--text`")]
    QrNotFound { path: String },
    #[error("this is not a Latchkey claim code: {0}; scan the code the device itself shows")]
    ClaimCode(latchkey_proto::Error),
    #[error("cannot fetch device {device}'s keys from it or from any node; make sure the device runs (`latchkeyd run`) and is reachable, then retry")]
    DeviceUnreachable { device: String },
    #[error("ALARM: the keys served for device {device} do not match its QR code; someone may be impersonating it. Do not claim it; check you scanned the right device")]
    KeysMismatch { device: String },
    #[error("ALARM: device {device} is already owned by someone else. If it is yours (bought used, or claimed by mistake), factory-reset it on the device (`latchkeyd reset`) and scan the new code")]
    OwnedByOther { device: String },
    #[error("this claim code is stale: device {device} was reset since it was shown; scan the code the device shows now")]
    StaleClaimCode { device: String },
    #[error("the claim was published but not yet visible on a quorum of nodes after {waited_ms} ms; run `latchkey devices` later to check")]
    ClaimNotVisible { waited_ms: u64 },
    #[error("ALARM: the registry nodes hold two different histories (a fork) for device {device} and the door has confirmed neither yet, so this profile has no history of its own to keep; retry once the door settles it (it endorses the change it accepts), or ask its owners")]
    Fork { device: String },
    #[error("no device matches \"{0}\"; list yours with `latchkey devices`")]
    UnknownDevice(String),
    #[error("\"{0}\" matches more than one device; use the full `lkdev1…` id")]
    AmbiguousDevice(String),
    #[error("you are not an owner of device {device}; ask an owner for an invitation")]
    NotOwner { device: String },
    #[error("invalid action name \"{0}\": use 1-32 of a-z, 0-9, '-', '_', '.'")]
    BadAction(String),
    #[error("device {device} did not answer directly or through the nodes' mailboxes within {waited_ms} ms; check that it is powered and online, then retry")]
    NoAnswer { device: String, waited_ms: u64 },
    #[error("device {device} answered with something that does not verify: {why}; it may be misconfigured or someone is tampering with traffic")]
    BadAnswer { device: String, why: String },
    #[error("device {device} kept asking for a new challenge; its clock may be broken")]
    ChallengeLoop { device: String },
    #[error("cannot make this invitation: {0}")]
    BadInvite(String),
    #[error("this is not a valid invitation link: {0}; ask the owner to send it again")]
    BadInvitation(latchkey_proto::Error),
    #[error("ALARM: this invitation for device {device} was not signed by one of its owners, according to the registry nodes; do not rely on it and ask the owner for a new one")]
    InviterNotOwner { device: String },
    #[error("you hold no invitation for device {device}; ask an owner to invite you")]
    NoInvitation { device: String },
    #[error("no grant issued by this profile matches \"{0}\"; list them with `latchkey grants`")]
    UnknownGrant(String),
    #[error("\"{0}\" matches more than one grant; give more of its id")]
    AmbiguousGrant(String),
    #[error("grant {grant} no longer applies (the device was transferred or reset since), so there is nothing to revoke")]
    GrantVoid { grant: String },
    #[error("this invitation was already redeemed by another phone; ask your host for a new link")]
    AlreadyRedeemed,
    #[error("no registry node stored the invitation ({why}); check the nodes with `latchkey nodes list`, or hand out a self-contained link with `--long`")]
    InviteNotPublished { why: String },
    #[error("this invitation could not be fetched: no node holds it or what they served does not open ({tried}); it may have ended, or the nodes are unreachable. Retry later or ask your host for a new link")]
    InvitationNotFound { tried: String },
    #[error("invalid owner change: {0}")]
    BadOwners(String),
    #[error("no proposal matches \"{0}\"; list them with `latchkey owners proposals`")]
    UnknownProposal(String),
    #[error("proposal {id} is stale: the device's ownership changed after it was made; propose the change again")]
    ProposalStale { id: String },
    /// Approving is for current owners, accepting for the keys a change adds: the two steps
    /// mean different things, so the wrong one is refused with the right one named.
    #[error("proposal {id}: {why}")]
    WrongProposalStep { id: String, why: &'static str },
    #[error("ALARM: device {device} now shows a different audit entry {seq} than it showed before; its log was rewritten. Keep this profile's copy as evidence")]
    AuditRewritten { device: String, seq: u64 },
    #[error("word {position} does not match; check what you wrote down for word {position}")]
    BackupMismatch { position: u32 },
    #[error("invalid setting: {0}")]
    BadSetting(String),
    #[error("protocol error: {0}")]
    Protocol(latchkey_proto::Error),
    #[error("the calendar is not valid at line {line}: {why}; nothing was changed. Export it again from the booking site, or fix that line")]
    BadCalendar { line: usize, why: String },
    #[error("cannot read the calendar {place}: {why}; check the path or URL (the booking site's export link) and retry")]
    CalendarSource { place: String, why: String },
    #[error("cannot sync stays: {0}")]
    BadStay(String),
    #[error("cannot delegate: {0}")]
    BadDelegation(String),
    #[error("this is not a valid consent request link: {0}; nothing was kept. Ask the provider for its link again (it must start with LATCHKEY://C/)")]
    BadConsentLink(latchkey_proto::Error),
    #[error("this request is for device {device}, which this profile does not own; nothing was kept. Check that the provider asked for your device (`latchkey devices` lists yours)")]
    ConsentNotMyDevice { device: String },
    #[error(
        "invalid stream name \"{0}\": use 1-32 of a-z, 0-9, '-', '_' (e.g. p1); nothing was kept"
    )]
    BadStream(String),
    #[error("no consent or request matches \"{0}\"; give its id or its first 8+ hex characters (`latchkey consents DEVICE` lists them)")]
    UnknownConsent(String),
    #[error("\"{0}\" matches more than one consent or request; give more of its id")]
    AmbiguousConsent(String),
    #[error("request {id} is {state}, not pending; add its link again to answer it")]
    ConsentNotPending { id: String, state: String },
    #[error("consent {id} is already {state}; nothing was changed. A provider that should read again sends a new request")]
    ConsentEnded { id: String, state: String },
    #[error("consent {id} was never given in the device's log, so there is nothing to revoke; a pending request is dropped with `dismiss`")]
    ConsentNotGiven { id: String },
    #[error("this request's end ({until}) has already passed; nothing was given. Ask the provider for a new request")]
    ConsentPastUntil { until: String },
    #[error("the registry nodes did not store the consent entry ({why}); nothing was changed and the device was not told. Retry when more nodes are reachable (`latchkey nodes list`)")]
    ConsentNotPublished { why: String },
    #[error("{}", refused_words(device, words, *withdrawn))]
    ConsentRefusedByDevice {
        device: String,
        words: String,
        withdrawn: bool,
    },
    #[error("invalid broker address \"{url}\": {why}; give mqtt://HOST:PORT (the home broker the device publishes to)")]
    BadBroker { url: String, why: String },
}

fn refused_words(device: &str, words: &str, withdrawn: bool) -> String {
    let tail = if withdrawn {
        " The consent log on the nodes records that it does not stand, so nobody reads under it."
    } else {
        " The entry is in the consent log on the nodes; check the device's configuration, or ask its owners."
    };
    format!("device {device} refused the consent: {words}.{tail}")
}

impl Error {
    /// A stable snake_case code for UIs and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NoSeed => "no_seed",
            Error::SeedExists => "seed_exists",
            Error::Keychain(_) => "keychain",
            Error::Phrase(_) => "bad_phrase",
            Error::Store { .. } => "store",
            Error::NoNodes => "no_nodes",
            Error::BadNodeUrl { .. } => "bad_node_url",
            Error::Quorum(_) => "quorum",
            Error::Image { .. } => "image",
            Error::QrNotFound { .. } => "qr_not_found",
            Error::ClaimCode(_) => "bad_claim_code",
            Error::DeviceUnreachable { .. } => "device_unreachable",
            Error::KeysMismatch { .. } => "keys_mismatch",
            Error::OwnedByOther { .. } => "owned_by_other",
            Error::StaleClaimCode { .. } => "stale_claim_code",
            Error::ClaimNotVisible { .. } => "claim_not_visible",
            Error::Fork { .. } => "fork",
            Error::UnknownDevice(_) => "unknown_device",
            Error::AmbiguousDevice(_) => "ambiguous_device",
            Error::NotOwner { .. } => "not_owner",
            Error::BadAction(_) => "bad_action",
            Error::NoAnswer { .. } => "no_answer",
            Error::BadAnswer { .. } => "bad_answer",
            Error::ChallengeLoop { .. } => "challenge_loop",
            Error::BadInvite(_) => "bad_invite",
            Error::BadInvitation(_) => "bad_invitation",
            Error::InviterNotOwner { .. } => "inviter_not_owner",
            Error::NoInvitation { .. } => "no_invitation",
            Error::UnknownGrant(_) => "unknown_grant",
            Error::AmbiguousGrant(_) => "ambiguous_grant",
            Error::GrantVoid { .. } => "grant_void",
            Error::AlreadyRedeemed => "already_redeemed",
            Error::InviteNotPublished { .. } => "invite_not_published",
            Error::InvitationNotFound { .. } => "invitation_not_found",
            Error::BadOwners(_) => "bad_owners",
            Error::UnknownProposal(_) => "unknown_proposal",
            Error::ProposalStale { .. } => "proposal_stale",
            Error::WrongProposalStep { .. } => "wrong_proposal_step",
            Error::AuditRewritten { .. } => "audit_rewritten",
            Error::BackupMismatch { .. } => "backup_mismatch",
            Error::BadSetting(_) => "bad_setting",
            Error::Protocol(_) => "protocol",
            Error::BadCalendar { .. } => "bad_calendar",
            Error::CalendarSource { .. } => "calendar_source",
            Error::BadStay(_) => "bad_stay",
            Error::BadDelegation(_) => "bad_delegation",
            Error::BadConsentLink(_) => "bad_consent_link",
            Error::ConsentNotMyDevice { .. } => "consent_not_my_device",
            Error::BadStream(_) => "bad_stream",
            Error::UnknownConsent(_) => "unknown_consent",
            Error::AmbiguousConsent(_) => "ambiguous_consent",
            Error::ConsentNotPending { .. } => "consent_not_pending",
            Error::ConsentEnded { .. } => "consent_ended",
            Error::ConsentNotGiven { .. } => "consent_not_given",
            Error::ConsentPastUntil { .. } => "consent_past_until",
            Error::ConsentNotPublished { .. } => "consent_not_published",
            Error::ConsentRefusedByDevice { .. } => "consent_refused_by_device",
            Error::BadBroker { .. } => "bad_broker",
        }
    }

    /// The `{code, message}` pair a UI shows.
    pub fn to_ui(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code(), "message": self.to_string()})
    }
}

// Not `#[from]`: the message already includes the cause, and a `source` would print it twice.
impl From<latchkey_quorum::Error> for Error {
    fn from(e: latchkey_quorum::Error) -> Self {
        Error::Quorum(e)
    }
}

impl From<latchkey_proto::Error> for Error {
    fn from(e: latchkey_proto::Error) -> Self {
        Error::Protocol(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store {
            path: String::from("(profile)"),
            why: e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = core::result::Result<T, E>;
