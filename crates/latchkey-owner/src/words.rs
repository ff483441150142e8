//! The owner core's errors worded for the app. [`Error`]'s `Display` is written for the command
//! line and names its commands and flags; a person in the app has buttons and screens instead
//! (Settings, Add a device, Invitations, Devices, Owners, Data sharing, Stays), so every variant
//! gets a sentence of what happened and, where there is one, the next step in those terms.

use crate::Error;

/// An error in plain words, for a person using the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words {
    /// What happened, as a sentence.
    pub what_happened: String,
    /// What the person can do about it, as a sentence; `None` when there is nothing to do.
    pub next_step: Option<String>,
}

impl Words {
    fn new(what_happened: impl Into<String>, next_step: impl Into<String>) -> Self {
        Self {
            what_happened: sentence(&what_happened.into()),
            next_step: Some(sentence(&next_step.into())),
        }
    }

    fn only(what_happened: impl Into<String>) -> Self {
        Self {
            what_happened: sentence(&what_happened.into()),
            next_step: None,
        }
    }

    /// The sentence and the next step as one message.
    pub fn message(&self) -> String {
        match &self.next_step {
            Some(next) => format!("{} {next}", self.what_happened),
            None => self.what_happened.clone(),
        }
    }
}

impl Error {
    /// What happened and what to do next, in the app's terms; never a command-line command.
    ///
    /// No wildcard arm: a new variant does not compile until it has words.
    pub fn for_people(&self) -> Words {
        match self {
            Error::NoSeed => Words::new(
                "This profile has no key yet",
                "Create your own key, or restore yours from your recovery words",
            ),
            Error::SeedExists => Words::new(
                "This profile already has a key, so a new one was not made",
                "Keep using the key you have; its recovery words are in Settings",
            ),
            Error::Keychain(why) => Words::new(
                format!("Your system keychain refused: {}", plain(why)),
                "Unlock your system keychain (on Linux, a keyring such as GNOME Keyring must be running and unlocked), then try again",
            ),
            Error::Phrase(why) => Words::new(
                format!("Those recovery words are not valid: {}", plain(&why.to_string())),
                "Check each word against what you wrote down, in order",
            ),
            Error::Store { why, .. } => Words::new(
                format!("The app could not read or save its data: {}", plain(why)),
                "Close any other copy of Latchkey that is open, make sure the disk is not full, then try again",
            ),
            Error::NoNodes => Words::new(
                "No registry nodes are set up yet",
                "Add some under Registry nodes in Settings, then try again",
            ),
            Error::BadNodeUrl { url } => Words::new(
                format!("\"{url}\" is not a registry node address"),
                "Give an address that starts with http:// or https://",
            ),
            Error::Quorum(e) => quorum(e),
            Error::Image { why, .. } => Words::new(
                format!("That picture could not be read: {}", plain(why)),
                "Choose a PNG or JPEG photo of the code",
            ),
            Error::QrNotFound { .. } => Words::new(
                "No QR code was found in that picture",
                "Take the photo closer and straight on, with the whole code in view, or type the code instead",
            ),
            Error::ClaimCode(why) => Words::new(
                format!("This is not a Latchkey device code: {}", plain(&why.to_string())),
                "Scan the code the device itself shows",
            ),
            Error::DeviceUnreachable { device } => Words::new(
                format!("The keys of device {device} could not be fetched, from the device or from any registry node"),
                "Make sure the device is powered and online, then try again",
            ),
            Error::KeysMismatch { device } => Words::new(
                format!("Warning: the keys served for device {device} do not match its QR code, so someone may be impersonating it"),
                "Do not claim it; check that you scanned the right device",
            ),
            Error::OwnedByOther { device } => Words::new(
                format!("Warning: device {device} already belongs to someone else"),
                "If it is yours (bought used, or claimed by mistake), factory-reset it on the device itself and scan the new code it shows",
            ),
            Error::StaleClaimCode { device } => Words::new(
                format!("This code is out of date: device {device} was reset since it was shown"),
                "Scan the code the device shows now",
            ),
            Error::ClaimNotVisible { waited_ms } => Words::new(
                format!(
                    "The device was claimed, but after {} not enough registry nodes show it yet",
                    duration(*waited_ms)
                ),
                "Refresh Devices in a little while; it will appear there",
            ),
            Error::Fork { device } => Words::new(
                format!("Warning: the registry nodes hold two different histories of who owns device {device}, and the door has confirmed neither yet"),
                "Try again once the door settles it, or ask its other owners",
            ),
            Error::UnknownDevice(_) => Words::new(
                "That device is not in your list",
                "Refresh Devices and try again",
            ),
            Error::AmbiguousDevice(name) => Words::new(
                format!("More than one of your devices matches \"{name}\""),
                "Choose the device from Devices",
            ),
            Error::NotOwner { device } => Words::new(
                format!("You are not an owner of device {device}"),
                "Ask an owner to invite you",
            ),
            Error::BadAction(name) => Words::new(
                format!("\"{name}\" is not a valid action name"),
                "Use 1 to 32 lowercase letters, digits, '-', '_' or '.'",
            ),
            Error::NoAnswer { device, waited_ms } => Words::new(
                format!(
                    "Device {device} did not answer within {}, directly or through the registry nodes",
                    duration(*waited_ms)
                ),
                "Check that it is powered and online, then try again",
            ),
            Error::BadAnswer { device, why } => Words::new(
                format!("Device {device} sent an answer that does not check out ({})", plain(why)),
                "Try again; if it keeps happening, the device may be misconfigured or someone may be tampering with the connection",
            ),
            Error::ChallengeLoop { device } => Words::new(
                format!("Device {device} kept asking for a new challenge"),
                "Its clock may be broken; ask its owner to check the device",
            ),
            Error::BadInvite(why) => Words::new(
                format!("This invitation could not be made: {}", plain(why)),
                "Check the doors, times and actions you chose, then try again",
            ),
            Error::BadInvitation(why) => Words::new(
                format!("This is not a valid invitation link: {}", plain(&why.to_string())),
                "Ask the person who invited you to send the link again",
            ),
            Error::InviterNotOwner { device } => Words::new(
                format!("Warning: according to the registry nodes, this invitation for device {device} was not signed by one of its owners"),
                "Do not rely on it; ask the owner for a new one",
            ),
            Error::NoInvitation { device } => Words::new(
                format!("You hold no invitation for device {device}"),
                "Ask an owner to invite you",
            ),
            Error::UnknownGrant(_) => Words::new(
                "That invitation is not among the ones you gave",
                "Refresh the list and try again",
            ),
            Error::AmbiguousGrant(_) => Words::new(
                "More than one invitation you gave matches that",
                "Choose the invitation from the list",
            ),
            Error::GrantVoid { .. } => Words::only(
                "That invitation no longer applies (the device was transferred or reset since), so there is nothing to revoke",
            ),
            Error::AlreadyRedeemed => Words::new(
                "This invitation was already used by another phone",
                "Ask your host for a new link",
            ),
            Error::InviteNotPublished { why } => Words::new(
                format!("No registry node stored the invitation ({})", plain(why)),
                "Check the registry nodes in Settings and try again",
            ),
            Error::InvitationNotFound { .. } => Words::new(
                "This invitation could not be fetched: it may have ended, or the registry nodes cannot be reached",
                "Try again later, or ask your host for a new link",
            ),
            Error::BadOwners(why) => Words::new(
                format!("That change of owners is not possible: {}", plain(why)),
                "Check the co-owner's key and try again",
            ),
            Error::UnknownProposal(_) => Words::new(
                "That proposal is no longer there",
                "Open the device again to see its current proposals",
            ),
            Error::ProposalStale { .. } => Words::new(
                "That proposal is out of date: who owns the device changed after it was made",
                "Propose the change again under Owners",
            ),
            Error::WrongProposalStep { why, .. } => Words::new(
                format!("That is not your step on this proposal: {}", plain(why)),
                "Use Accept on a proposal that adds your key, and Approve when you are already an owner",
            ),
            Error::AuditRewritten { device, seq } => Words::new(
                format!("Warning: device {device} now shows a different entry {seq} in its activity than it showed before, so its log was rewritten"),
                "Keep this app's copy as evidence and tell the device's other owners",
            ),
            Error::BackupMismatch { position } => Words::new(
                format!("Word {position} does not match"),
                format!("Check what you wrote down for word {position}"),
            ),
            Error::BadSetting(why) => Words::new(
                format!("That setting is not valid: {}", plain(why)),
                "Change it and save again",
            ),
            Error::Protocol(why) => Words::new(
                format!("Something received could not be read: {}", plain(&why.to_string())),
                "Try again; if it keeps happening, update the app",
            ),
            Error::BadCalendar { line, why } => Words::new(
                format!("The calendar is not valid at line {line} ({}), so nothing was changed", plain(why)),
                "Export it again from the booking site and import it under Stays",
            ),
            Error::CalendarSource { why, .. } => Words::new(
                format!("The calendar could not be read: {}", plain(why)),
                "Check the booking site's export link or the file, then try again",
            ),
            Error::BadStay(why) => Words::new(
                format!("Stays could not be updated: {}", plain(why)),
                "Check the stay's doors and dates, then try again",
            ),
            Error::BadDelegation(why) => Words::new(
                format!("You cannot invite someone else with this invitation: {}", plain(why)),
                "Check the invitation under Invitations, or ask the owner",
            ),
            Error::BadConsentLink(why) => Words::new(
                format!("This is not a valid data-sharing request link ({}), so nothing was kept", plain(&why.to_string())),
                "Ask the provider for its link again; it starts with LATCHKEY://C/",
            ),
            Error::ConsentNotMyDevice { device } => Words::new(
                format!("This request is for device {device}, which you do not own, so nothing was kept"),
                "Check with the provider that it asked for your device",
            ),
            Error::BadStream(name) => Words::new(
                format!("\"{name}\" is not a valid data stream name, so nothing was kept"),
                "Use 1 to 32 lowercase letters, digits, '-' or '_' (for example p1)",
            ),
            Error::UnknownConsent(_) => Words::new(
                "That consent or request is no longer there",
                "Refresh Data sharing and try again",
            ),
            Error::AmbiguousConsent(_) => Words::new(
                "More than one consent or request matches that",
                "Choose it from the list in Data sharing",
            ),
            Error::ConsentNotPending { state, .. } => Words::new(
                format!("That request was already answered (it is {state})"),
                "Add its link again to answer it",
            ),
            Error::ConsentEnded { state, .. } => Words::new(
                format!("That consent is already {state}, so nothing was changed"),
                "A provider that should read again sends a new request",
            ),
            Error::ConsentNotGiven { .. } => Words::new(
                "That consent was never given, so there is nothing to revoke",
                "To turn down a request that is still waiting, use Dismiss",
            ),
            Error::ConsentPastUntil { until } => Words::new(
                format!("This request's end ({until}) has already passed, so nothing was given"),
                "Ask the provider for a new request",
            ),
            Error::ConsentNotPublished { why } => Words::new(
                format!("The registry nodes did not store the consent ({}), so nothing was changed and the device was not told", plain(why)),
                "Try again when more registry nodes can be reached; Settings lists them",
            ),
            Error::ConsentRefusedByDevice { device, words, withdrawn } => {
                // `words` is the device's refusal already worded as a sentence.
                let what = format!("Device {device} refused the consent. {}", plain(words));
                if *withdrawn {
                    Words::new(
                        what,
                        "Nothing to do: the consent log records that it does not stand, so nobody reads under it",
                    )
                } else {
                    Words::new(
                        what,
                        "The entry is in the consent log; check the device's setup, or ask its other owners",
                    )
                }
            }
            Error::BadBroker { url, why } => Words::new(
                format!("\"{url}\" is not a usable broker address: {}", plain(why)),
                "Give the home broker the device publishes to, as mqtt://HOST:PORT",
            ),
        }
    }
}

/// The registry client's errors. Its enum is `#[non_exhaustive]`, so a wildcard is required
/// here; it keeps the client's own detail, cleaned of command-line advice.
fn quorum(e: &latchkey_quorum::Error) -> Words {
    use latchkey_quorum::Error as Q;
    match e {
        Q::NoNodes => Error::NoNodes.for_people(),
        Q::UnknownDevice { device } => Words::new(
            format!("No registry node knows device {device}"),
            "Check that you chose the right device, and the registry nodes in Settings",
        ),
        Q::NotEnoughAcks { acks, needed } => Words::new(
            format!("Only {acks} of the {needed} registry nodes needed stored the change"),
            "Try again when more registry nodes can be reached; Settings lists them",
        ),
        Q::Fork { device } => Error::Fork {
            device: device.clone(),
        }
        .for_people(),
        Q::NotEnoughConsentAnswers { answered, needed, .. } => Words::new(
            format!("Only {answered} registry node(s) answered with a consent log that checks out; {needed} are needed"),
            "Try again when more registry nodes can be reached; Settings lists them",
        ),
        Q::ConsentConflict { .. } => Words::new(
            "The registry nodes hold a newer consent entry than this app had",
            "Refresh Data sharing and try again",
        ),
        Q::BadUrl { url, why } => Words::new(
            format!("\"{url}\" is not a registry node address: {}", plain(why)),
            "Give an address that starts with http:// or https://",
        ),
        other => Words::new(
            format!("Asking the registry nodes failed: {}", plain(&other.to_string())),
            "Try again; if it keeps failing, check the registry nodes in Settings",
        ),
    }
}

/// A detail from deeper in the core, with anything written for the command line taken out:
/// parentheses and clauses that name a command or flag are dropped, so the rest still reads.
fn plain(detail: &str) -> String {
    let mut kept = String::with_capacity(detail.len());
    let mut rest = detail;
    while let Some(open) = rest.find(" (") {
        let Some(len) = rest[open..].find(')') else {
            break;
        };
        let inside = &rest[open..open + len + 1];
        kept.push_str(&rest[..open]);
        if !for_the_command_line(inside) {
            kept.push_str(inside);
        }
        rest = &rest[open + len + 1..];
    }
    kept.push_str(rest);
    let clauses: Vec<&str> = kept
        .split("; ")
        .filter(|c| !for_the_command_line(c))
        .collect();
    let joined = clauses.join("; ");
    let cleaned = joined.trim().trim_end_matches(['.', ';', ':']).trim();
    if cleaned.is_empty() {
        "no further detail".to_owned()
    } else {
        cleaned.replace('`', "'")
    }
}

fn for_the_command_line(text: &str) -> bool {
    text.contains('`')
        || text.contains("--")
        || text.contains("latchkey ")
        || text.contains("latchkeyd ")
        || text.contains("CLI")
        || text.contains("profile.db")
}

/// Milliseconds as people say them.
fn duration(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    match secs {
        0..=1 => "a second".to_owned(),
        2..=119 => format!("{secs} seconds"),
        _ => format!("{} minutes", secs.div_ceil(60)),
    }
}

/// Capital first letter and a full stop, unless the text already ends a sentence.
fn sentence(text: &str) -> String {
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(text.chars().skip(1))
        .collect();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// Fails unless `text` reads as a sentence meant for the app: no command, flag or CLI file.
#[cfg(test)]
pub(crate) fn assert_for_people(text: &str, what: &str) {
    assert!(!text.trim().is_empty(), "{what}: empty");
    assert!(
        text.ends_with(['.', '!', '?']),
        "{what}: does not end a sentence: {text}"
    );
    for banned in ["latchkey ", "`", "--", "CLI", "profile.db"] {
        assert!(
            !text.contains(banned),
            "{what}: contains {banned:?}: {text}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variant after `e` in declaration order, `None` after the last. No wildcard: a new
    /// variant does not compile without an arm here, and the chain from [`Error::NoSeed`]
    /// reaches it only if the previous arm hands it on; the source check below catches a
    /// variant that is left out of the chain.
    fn next(e: &Error) -> Option<Error> {
        let proto = || latchkey_proto::Error::Truncated {
            what: "link",
            needed: 3,
        };
        let dev = || "lkdev1qxyz".to_owned();
        Some(match e {
            Error::NoSeed => Error::SeedExists,
            Error::SeedExists => Error::Keychain("the collection is locked".into()),
            Error::Keychain(_) => Error::Phrase(proto()),
            Error::Phrase(_) => Error::Store {
                path: "/home/a/.local/share/latchkey/profile.db".into(),
                why: "database is locked".into(),
            },
            Error::Store { .. } => Error::NoNodes,
            Error::NoNodes => Error::BadNodeUrl {
                url: "node.example".into(),
            },
            Error::BadNodeUrl { .. } => Error::Quorum(latchkey_quorum::Error::NoNodes),
            Error::Quorum(_) => Error::Image {
                path: "/tmp/qr.png".into(),
                why: "unknown format".into(),
            },
            Error::Image { .. } => Error::QrNotFound {
                path: "/tmp/qr.png".into(),
            },
            Error::QrNotFound { .. } => Error::ClaimCode(proto()),
            Error::ClaimCode(_) => Error::DeviceUnreachable { device: dev() },
            Error::DeviceUnreachable { .. } => Error::KeysMismatch { device: dev() },
            Error::KeysMismatch { .. } => Error::OwnedByOther { device: dev() },
            Error::OwnedByOther { .. } => Error::StaleClaimCode { device: dev() },
            Error::StaleClaimCode { .. } => Error::ClaimNotVisible { waited_ms: 8_000 },
            Error::ClaimNotVisible { .. } => Error::Fork { device: dev() },
            Error::Fork { .. } => Error::UnknownDevice("garage".into()),
            Error::UnknownDevice(_) => Error::AmbiguousDevice("door".into()),
            Error::AmbiguousDevice(_) => Error::NotOwner { device: dev() },
            Error::NotOwner { .. } => Error::BadAction("Open!".into()),
            Error::BadAction(_) => Error::NoAnswer {
                device: dev(),
                waited_ms: 15_000,
            },
            Error::NoAnswer { .. } => Error::BadAnswer {
                device: dev(),
                why: "signature does not verify".into(),
            },
            Error::BadAnswer { .. } => Error::ChallengeLoop { device: dev() },
            Error::ChallengeLoop { .. } => Error::BadInvite(
                "the grant is over; issue a new invitation with `latchkey invite`".into(),
            ),
            Error::BadInvite(_) => Error::BadInvitation(proto()),
            Error::BadInvitation(_) => Error::InviterNotOwner { device: dev() },
            Error::InviterNotOwner { .. } => Error::NoInvitation { device: dev() },
            Error::NoInvitation { .. } => Error::UnknownGrant("abcd1234".into()),
            Error::UnknownGrant(_) => Error::AmbiguousGrant("ab".into()),
            Error::AmbiguousGrant(_) => Error::GrantVoid {
                grant: "abcd1234".into(),
            },
            Error::GrantVoid { .. } => Error::AlreadyRedeemed,
            Error::AlreadyRedeemed => Error::InviteNotPublished {
                why: "0 of 2 nodes stored it".into(),
            },
            Error::InviteNotPublished { .. } => Error::InvitationNotFound {
                tried: "https://n1.example: 404".into(),
            },
            Error::InvitationNotFound { .. } => {
                Error::BadOwners("a threshold of 3 needs at least 3 owners".into())
            }
            Error::BadOwners(_) => Error::UnknownProposal("ffee".into()),
            Error::UnknownProposal(_) => Error::ProposalStale { id: "ffee".into() },
            Error::ProposalStale { .. } => Error::WrongProposalStep {
                id: "ffee".into(),
                why: "it adds your key, so you accept it (`latchkey owners accept`) rather than approve it",
            },
            Error::WrongProposalStep { .. } => Error::AuditRewritten {
                device: dev(),
                seq: 41,
            },
            Error::AuditRewritten { .. } => Error::BackupMismatch { position: 7 },
            Error::BackupMismatch { .. } => {
                Error::BadSetting("ask 1 to 32 nodes, not 0 (`--quorum`)".into())
            }
            Error::BadSetting(_) => Error::Protocol(proto()),
            Error::Protocol(_) => Error::BadCalendar {
                line: 12,
                why: "an event without UID".into(),
            },
            Error::BadCalendar { .. } => Error::CalendarSource {
                place: "https://booking.example/ical/x.ics".into(),
                why: "HTTP 403".into(),
            },
            Error::CalendarSource { .. } => Error::BadStay("name at least one door".into()),
            Error::BadStay(_) => Error::BadDelegation(
                "this profile holds no invitation \"ab\"; list them with `latchkey invitations`"
                    .into(),
            ),
            Error::BadDelegation(_) => Error::BadConsentLink(proto()),
            Error::BadConsentLink(_) => Error::ConsentNotMyDevice { device: dev() },
            Error::ConsentNotMyDevice { .. } => Error::BadStream("P 1".into()),
            Error::BadStream(_) => Error::UnknownConsent("1234".into()),
            Error::UnknownConsent(_) => Error::AmbiguousConsent("12".into()),
            Error::AmbiguousConsent(_) => Error::ConsentNotPending {
                id: "1234".into(),
                state: "given".into(),
            },
            Error::ConsentNotPending { .. } => Error::ConsentEnded {
                id: "1234".into(),
                state: "revoked".into(),
            },
            Error::ConsentEnded { .. } => Error::ConsentNotGiven { id: "1234".into() },
            Error::ConsentNotGiven { .. } => Error::ConsentPastUntil {
                until: "2026-11-30".into(),
            },
            Error::ConsentPastUntil { .. } => Error::ConsentNotPublished {
                why: "1 of 2 nodes stored it".into(),
            },
            Error::ConsentNotPublished { .. } => Error::ConsentRefusedByDevice {
                device: dev(),
                words: crate::refusal::explain(24, "bad signature").meaning,
                withdrawn: false,
            },
            Error::ConsentRefusedByDevice { .. } => Error::BadBroker {
                url: "mqtt:/x".into(),
                why: "no host".into(),
            },
            Error::BadBroker { .. } => return None,
        })
    }

    fn every_variant() -> Vec<Error> {
        let mut all = vec![Error::NoSeed];
        while let Some(e) = next(all.last().unwrap()) {
            all.push(e);
        }
        all
    }

    /// The codes `Error::code` names, read from its source: that match is exhaustive, so this
    /// is every variant, and a variant missing from the chain above shows up as a missing code.
    fn codes_in_source() -> Vec<String> {
        let src = include_str!("error.rs");
        let body = &src[src.find("pub fn code(").unwrap()..];
        let body = &body[..body.find("\n    }\n").unwrap()];
        body.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("Error::"))
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .collect()
    }

    #[test]
    fn every_error_has_words_for_people() {
        let all = every_variant();
        let mut seen: Vec<String> = all.iter().map(|e| e.code().to_owned()).collect();
        let mut want = codes_in_source();
        assert!(want.len() > 50, "parsed only {} codes", want.len());
        seen.sort();
        want.sort();
        assert_eq!(
            seen, want,
            "the chain in `next` misses or repeats a variant"
        );
        for e in &all {
            let w = e.for_people();
            assert_for_people(&w.what_happened, e.code());
            let next = w.next_step.as_deref().unwrap_or("Nothing to do.");
            assert_for_people(next, e.code());
            assert_for_people(&w.message(), e.code());
        }
    }

    #[test]
    fn quorum_errors_have_words_for_people() {
        use latchkey_quorum::Error as Q;
        let all = [
            Q::NoNodes,
            Q::UnknownDevice {
                device: "lkdev1q".into(),
            },
            Q::NotEnoughAcks { acks: 1, needed: 2 },
            Q::Rejected("bad op".into()),
            Q::Fork {
                device: "lkdev1q".into(),
            },
            Q::TooLarge { cap: 10, seen: 11 },
            Q::Read("reset".into()),
            Q::InviteExists { node: "n1".into() },
            Q::NodeRefused {
                node: "n1".into(),
                why: "full".into(),
            },
            Q::NotEnoughConsentAnswers {
                device: "lkdev1q".into(),
                answered: 1,
                needed: 2,
            },
            Q::ConsentLogUnverified {
                device: "lkdev1q".into(),
                lying: vec!["n1".into()],
            },
            Q::ConsentConflict {
                device: "lkdev1q".into(),
                seq: 3,
                nodes: vec!["n1".into()],
            },
            Q::ConsentRejected("stale".into()),
            Q::BadUrl {
                url: "x".into(),
                why: "no scheme".into(),
            },
        ];
        for q in all {
            let e = Error::Quorum(q);
            assert_for_people(&e.for_people().message(), &e.to_string());
        }
    }

    #[test]
    fn keeps_the_details_that_help() {
        let w = Error::NoAnswer {
            device: "lkdev1qxyz".into(),
            waited_ms: 15_000,
        }
        .for_people();
        assert!(
            w.what_happened.contains("lkdev1qxyz"),
            "{}",
            w.what_happened
        );
        assert!(
            w.what_happened.contains("15 seconds"),
            "{}",
            w.what_happened
        );
        let w = Error::NoNodes.for_people();
        assert_eq!(w.what_happened, "No registry nodes are set up yet.");
        assert!(w.message().contains("Settings"), "{}", w.message());
    }

    #[test]
    fn command_line_advice_is_taken_out_of_details() {
        assert_eq!(
            plain("the grant is over; issue a new invitation with `latchkey invite`"),
            "the grant is over"
        );
        assert_eq!(
            plain("it adds your key, so you accept it (`latchkey owners accept`) rather than approve it"),
            "it adds your key, so you accept it rather than approve it"
        );
        assert_eq!(
            plain("0 of 2 nodes (n1, n2) stored it."),
            "0 of 2 nodes (n1, n2) stored it"
        );
        assert_eq!(plain("`latchkey init`"), "no further detail");
    }
}
