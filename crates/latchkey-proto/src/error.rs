//! The one error type of the protocol core.

/// Everything the protocol core can refuse. Each variant names what was wrong so a caller can
/// act on it (show it, count it in the audit log, or retry differently); messages end with what
/// to do where there is something to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- encoding ---
    #[error("input is {actual} bytes, over the {limit}-byte limit for {what}")]
    TooLarge {
        what: &'static str,
        actual: usize,
        limit: usize,
    },
    #[error("{what} ends early: needed {needed} more bytes")]
    Truncated { what: &'static str, needed: usize },
    #[error("{what} has {count} unexpected trailing bytes")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("unsupported {what} version {found} (this build speaks {supported}); update the app or device")]
    UnsupportedVersion {
        what: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("invalid {what}: {why}")]
    Invalid {
        what: &'static str,
        why: &'static str,
    },
    #[error("{what} is not valid UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("{what} is not valid {encoding}; check that it was copied completely")]
    BadText {
        what: &'static str,
        encoding: &'static str,
    },

    // --- keys ---
    #[error("the recovery phrase has {0} words; it must have exactly 24")]
    MnemonicWordCount(usize),
    /// The word itself is never repeated: a mistyped word is most of a real one, and errors
    /// reach logs and screens.
    #[error("word {position} of the recovery phrase is not in the BIP39 English list; check its spelling")]
    MnemonicUnknownWord { position: usize },
    #[error("the recovery phrase fails its checksum: a word is wrong or two are swapped{}", hint_positions(.suspects))]
    MnemonicChecksum { suspects: Vec<usize> },
    #[error("the public key is not a valid Ed25519 point")]
    BadPublicKey,
    /// A point that decodes but that no honestly made key can be: one of small order (a
    /// signature under it can be forged by anyone) or a non-canonical encoding (a second
    /// spelling of a point). docs/PROTOCOL.md §1.
    #[error("the public key is weak ({why}); no real key looks like this, so ask its holder to send their key again")]
    WeakKey { why: &'static str },
    /// `found` names what the text looks like, never the text itself: a recovery phrase
    /// pasted into the wrong field must not land in an error message.
    #[error("expected a {expected} but this looks like {found}")]
    WrongKind {
        expected: &'static str,
        found: String,
    },

    // --- signatures and encryption ---
    #[error("signature by {signer} does not verify over this {what}")]
    BadSignature { what: &'static str, signer: String },
    #[error("decryption failed: the envelope was altered, truncated, or sealed to other keys")]
    DecryptFailed,
    #[error("padding is malformed")]
    BadPadding,
    #[error("the device's KEM keys do not match the commitment in its claim code; do not claim this device")]
    KemCommitmentMismatch,
    /// A device id is not `H(device-id, D)` of the identity key it comes with (a genesis op,
    /// a device's own key files against its chain). Something naming another device than the
    /// one checking it is [`Error::WrongDevice`].
    #[error("the device id does not belong to the identity key presented")]
    DeviceIdMismatch,

    // --- ownership chain ---
    /// An op, command or response that names another device than the one it is checked for.
    /// `what` says which (`op 3`, `command`, `response`).
    #[error("{what} is for device {found}, not {expected}; it was sent to the wrong device")]
    WrongDevice {
        what: String,
        expected: String,
        found: String,
    },
    #[error("op has sequence {found} but the chain expects {expected}")]
    WrongSequence { expected: u64, found: u64 },
    #[error("op {seq} does not link to the op before it (prev hash mismatch)")]
    BrokenLink { seq: u64 },
    #[error("the chain must start with a genesis op")]
    MissingGenesis,
    #[error("op {seq} ({kind}) is not allowed here: {why}")]
    OpNotAllowed {
        seq: u64,
        kind: &'static str,
        why: &'static str,
    },
    #[error("op {seq} ({kind}) has {valid} valid owner signatures; {required} are required")]
    NotEnoughSignatures {
        seq: u64,
        kind: &'static str,
        valid: usize,
        required: usize,
    },
    #[error("op {seq} is missing the signature of {who}")]
    MissingSignature { seq: u64, who: &'static str },
    #[error("fork at sequence {seq}: two different valid ops follow the same parent")]
    Fork { seq: u64 },

    // --- commands and freshness ---
    #[error("timestamp is {skew_ms} ms in the past, outside the {window_ms} ms window; check the sender's clock")]
    TooOld { skew_ms: u64, window_ms: u64 },
    #[error("timestamp is {skew_ms} ms in the future, outside the {window_ms} ms window; check the sender's clock")]
    TooNew { skew_ms: u64, window_ms: u64 },
    #[error("this command was already received (replayed nonce)")]
    Replayed,
    #[error("the device's clock is not set; retry with the challenge it returned")]
    ChallengeRequired,
    #[error("the challenge is unknown, used, expired or issued to another key; ask the device for a fresh one")]
    BadChallenge,
    #[error("the replay store failed: {0}")]
    Store(String),

    // --- grants ---
    #[error("grant {index} in the chain is not valid: {why}")]
    GrantInvalid { index: usize, why: &'static str },
    #[error("the grant is not valid yet (starts in {0} s)")]
    GrantNotYetValid(u64),
    #[error("the grant expired {0} s ago; ask the owner for a new invitation")]
    GrantExpired(u64),
    #[error("the grant has been revoked by the owner")]
    GrantRevoked,
    #[error("the grant does not allow action \"{0}\"")]
    ActionNotGranted(String),
    #[error("the invitation does not allow passing arguments to \"{0}\": only owners may, and a guest only the exact arguments its invitation pins")]
    ArgumentsNotGranted(String),
    /// Every grant of the chain carries a weekly schedule (extension `0x81`) that must allow
    /// the device's time; `opens_in_s` is how long until all of them do (rounded up), `None`
    /// when that is not within 8 days.
    #[error("the invitation does not allow opening at this time of the week{}", opens_in(.opens_in_s))]
    OutsideSchedule { opens_in_s: Option<u64> },
    /// A time zone name the embedded IANA database does not know.
    #[error(
        "unknown time zone \"{0}\"; use an IANA name such as Europe/Amsterdam or America/New_York"
    )]
    UnknownTimeZone(String),
    /// A weekly window typed by a person (`--weekly`), with what was wrong in it.
    #[error("weekly window \"{spec}\" {why}")]
    ScheduleSpec { spec: String, why: String },
    #[error("the grant does not cover this device")]
    DeviceNotGranted,
    #[error("the sender is neither an owner nor holds a grant")]
    NotAuthorized,
    /// A bind-on-first-use grant (extension 0x83) used before a phone redeemed it
    /// (docs/PROTOCOL.md §10).
    #[error("the invitation has not been redeemed on this device yet; accept the link again so the app redeems it")]
    NotRedeemed,
    /// The bind-on-first-use grant is bound to another phone's key, or the one-time link key
    /// was used after the binding (docs/PROTOCOL.md §10).
    #[error("this invitation was already redeemed by another phone; ask your host for a new link")]
    AlreadyRedeemed,

    // --- data streams and consent (docs/PROTOCOL.md §14) ---
    /// A consent (or a request) for a stream the device does not publish.
    #[error("this device publishes no stream \"{stream}\"; check the stream name the provider asked for")]
    UnknownStream { stream: String },
    /// A consent entry that does not verify against the chain and the log (docs/PROTOCOL.md
    /// §14.6 lists the rules in the order they are checked).
    #[error("consent entry {seq} is refused: {why}")]
    ConsentRefused { seq: u64, why: &'static str },
}

impl Error {
    /// The op is refused only for signatures still to come (approvals, new owners'
    /// acceptances): what a proposal may lack while it waits (docs/PROTOCOL.md §11).
    pub fn awaits_signatures(&self) -> bool {
        matches!(
            self,
            Error::NotEnoughSignatures { .. } | Error::MissingSignature { .. }
        )
    }
}

/// What pasted text looks like, for [`Error::WrongKind`], without repeating any of it.
pub(crate) fn looks_like(text: &str) -> String {
    let t = text.trim().to_ascii_lowercase();
    let kind = if t.starts_with("latchkey://invite/") || t.starts_with("latchkey://i/") {
        "an invitation link"
    } else if t.starts_with("latchkey:c1:") {
        "a claim code"
    } else if t.starts_with("lkpk1") {
        "an owner or guest key (lkpk1…)"
    } else if t.starts_with("lkdev1") {
        "a device id (lkdev1…)"
    } else if t.split_whitespace().count() >= 12 {
        "a list of words (a recovery phrase belongs only in restore)"
    } else if t.is_empty() {
        "nothing"
    } else {
        "something else"
    };
    kind.to_owned()
}

fn opens_in(seconds: &Option<u64>) -> String {
    match seconds {
        Some(s) if *s >= 86_400 => format!("; it opens in {}d {}h", s / 86_400, s % 86_400 / 3600),
        Some(s) if *s >= 3600 => format!("; it opens in {}h {:02}min", s / 3600, s % 3600 / 60),
        Some(s) => format!("; it opens in {} min", s.div_ceil(60)),
        None => "; it does not open in the next 8 days".to_owned(),
    }
}

fn hint_positions(suspects: &[usize]) -> String {
    match suspects {
        [] => String::new(),
        [one] => format!("; word {one} is the likeliest to be wrong"),
        many if many.len() <= 4 => {
            let list: Vec<String> = many.iter().map(|p| p.to_string()).collect();
            format!("; look first at words {}", list.join(", "))
        }
        _ => String::new(),
    }
}

/// The protocol core's `Result`.
pub type Result<T, E = Error> = core::result::Result<T, E>;
