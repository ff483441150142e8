//! A device's refusal in plain words: what each reject code (docs/PROTOCOL.md §5.5) means to
//! the person who tapped "Open", and what they can do about it. The CLI and the app both show
//! this, so a guest told the door is offline from the registry is never told "error 7".

use latchkey_proto::command::RejectCode;

/// A refusal worded for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code the device sent.
    pub code: u16,
    /// The code's name (`NotAuthorized`, …), for logs and scripts; `Unknown` for a code this
    /// version does not know.
    pub name: String,
    /// What happened, in a sentence.
    pub meaning: String,
    /// What the person can do next.
    pub what_to_do: String,
}

/// Words `code` (with the device's own `reason`, shown where it carries facts such as a time).
pub fn explain(code: u16, reason: &str) -> Refusal {
    let reason = reason.trim();
    let said = |text: &str| {
        if reason.is_empty() {
            text.to_owned()
        } else {
            // Inside the sentence, so the words still end with its full stop.
            let text = text.strip_suffix('.').unwrap_or(text);
            let reason = reason.trim_end_matches('.');
            format!("{text} (the door says: {reason}).")
        }
    };
    let Some(known) = RejectCode::from_u16(code) else {
        return Refusal {
            code,
            name: "Unknown".into(),
            meaning: said(&format!(
                "The door refused with code {code}, which this app does not know."
            )),
            what_to_do: "Update the app; if it persists, ask the device's owner.".into(),
        };
    };
    use RejectCode::*;
    let (meaning, what_to_do) = match known {
        Malformed => (
            said("The door could not read the command."),
            "Update the app; if it persists, the device may run an incompatible version.",
        ),
        BadSignature => (
            said("The door could not verify who sent the command."),
            "Retry; if it persists, something on the network may be tampering with traffic.",
        ),
        WrongDevice => (
            said("The command was meant for another device."),
            "Check you chose the right door; it may have been reset and needs claiming again.",
        ),
        TooOld => (
            said("The command arrived too late; the door refuses old commands so they cannot be replayed."),
            "Check this phone's or computer's clock, then retry.",
        ),
        TooNew => (
            said("The command is dated in the future by the door's clock."),
            "Check this phone's or computer's clock, then retry.",
        ),
        Replayed => (
            said("The door had already received this exact command, so it did not run it again."),
            "Nothing to do unless the door did not open: then open again.",
        ),
        NotAuthorized => (
            said("You are not an owner of this door and hold no invitation it accepts."),
            "Ask an owner for an invitation.",
        ),
        GrantInvalid => (
            said("Your invitation is not valid for this door (it may have been reset or transferred)."),
            "Ask the owner for a new invitation.",
        ),
        GrantExpired => (
            said("Your invitation has expired."),
            "Ask the owner for a new invitation.",
        ),
        GrantNotYetValid => (
            said("Your invitation is not valid yet."),
            "Try again when it starts; the invitation shows its window.",
        ),
        GrantRevoked => (
            said("The owner has revoked your invitation."),
            "Ask the owner if this is a mistake.",
        ),
        ActionNotGranted => (
            said("Your invitation does not allow this action."),
            "Ask the owner for an invitation that includes it.",
        ),
        UseLimitReached => (
            said("Your invitation has been used as many times as it allows."),
            "Ask the owner for a new invitation.",
        ),
        UnknownAction => (
            said("The door has no such action."),
            "Check the action's name; the owner can list the door's actions.",
        ),
        ActionFailed => (
            said("The door accepted the command but the action itself failed."),
            "Try again; if it keeps failing, the owner should check the device.",
        ),
        ClockUnset => (
            said("The door does not trust its own clock and asked for a fresh challenge."),
            "Retry; the app answers the challenge by itself.",
        ),
        Internal => (
            said("The door failed internally."),
            "Try again in a moment; if it persists, the owner should check the device.",
        ),
        // The device words this one itself, for a guest or an owner, with since when it has
        // been cut off; repeating it inside a sentence of ours would say it twice.
        StaleView => (
            if reason.is_empty() {
                "The door cannot confirm your invitation is still valid: it has been offline from the registry.".to_owned()
            } else {
                sentence(reason)
            },
            "Try again once the door is back online, or ask someone on the home network to open it.",
        ),
        ArgumentsNotGranted => (
            said("Your invitation does not allow passing arguments to this action."),
            "Open without arguments, or ask the owner for an invitation that names them.",
        ),
        OutsideSchedule => (
            said("Your invitation does not allow opening at this time of the week."),
            "Try again during the hours your invitation shows; the door's reason says when it opens next.",
        ),
        NotRedeemed => (
            said("This phone has not redeemed the invitation at this door yet, so the door does not know it."),
            "Accept the link again (paste it under Invitations): it redeems the invitation for this phone.",
        ),
        AlreadyRedeemed => (
            said("This invitation was already redeemed by another phone, so it no longer works from this one."),
            "Ask your host for a new link; they can revoke this one and send a fresh one in one step.",
        ),
        UnknownStream => (
            said("The device does not publish the data stream this consent names."),
            "Check the stream's name with the device's owner (e.g. p1) and ask the provider for a new request naming it.",
        ),
        ConsentRefused => (
            said("The device did not accept the consent: it does not verify against the device's ownership (another device, a signer who is not an owner, a bad signature, an unknown consent, or an end already past)."),
            "Refresh the device's consents and retry; if it persists, the device's view of its owners may be behind.",
        ),
        // A code added to the protocol after this wording: still plain, with the door's reason.
        _ => (
            said("The door refused the command."),
            "Update the app for a fuller explanation; if it persists, ask the device's owner.",
        ),
    };
    Refusal {
        code,
        name: format!("{known:?}"),
        meaning,
        what_to_do: what_to_do.to_owned(),
    }
}

/// `text` as a sentence: capital first letter, final full stop.
fn sentence(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(text.chars().skip(1))
        .collect();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_words_and_a_next_step() {
        for code in 0..=64u16 {
            let r = explain(code, "");
            assert!(!r.meaning.is_empty() && !r.what_to_do.is_empty(), "{code}");
            assert!(!r.meaning.contains("error"), "{code}: {}", r.meaning);
            let known = RejectCode::from_u16(code).is_some();
            assert_eq!(r.name != "Unknown", known, "{code}");
        }
    }

    /// The CLI and the app both show these words, so they name no command: every code the
    /// protocol defines, and one it does not, with and without the door's reason.
    #[test]
    fn every_code_is_worded_for_people() {
        let mut known = 0;
        for code in 0..=u8::MAX as u16 {
            for reason in ["", "it opens in 2h"] {
                let r = explain(code, reason);
                let what = format!("{code} {}", r.name);
                crate::words::assert_for_people(&r.meaning, &what);
                crate::words::assert_for_people(&r.what_to_do, &what);
            }
            known += usize::from(RejectCode::from_u16(code).is_some());
        }
        assert!(known >= 24, "only {known} codes known");
    }

    #[test]
    fn stale_view_shows_since_when() {
        let said = "the door cannot confirm your invitation is still valid; it has been offline \
                    from the registry since 2026-11-30T21:04Z (16 minutes)";
        let r = explain(18, said);
        assert_eq!(r.name, "StaleView");
        assert!(r
            .meaning
            .starts_with("The door cannot confirm your invitation is still valid"));
        assert!(
            r.meaning.contains("since 2026-11-30T21:04Z (16 minutes)"),
            "{}",
            r.meaning
        );
        assert_eq!(
            r.meaning.matches("cannot confirm").count(),
            1,
            "{}",
            r.meaning
        );
        let bare = explain(18, "");
        assert!(bare.meaning.contains("offline from the registry"));
    }

    #[test]
    fn outside_schedule_is_worded_with_when_it_opens() {
        let r = explain(
            20,
            "the invitation does not allow opening at this time of the week; it opens in 17h 59min",
        );
        assert_eq!(r.name, "OutsideSchedule");
        assert!(
            r.meaning.contains("at this time of the week"),
            "{}",
            r.meaning
        );
        assert!(r.meaning.contains("opens in 17h 59min"), "{}", r.meaning);
    }

    #[test]
    fn redemption_refusals_are_worded() {
        let r = explain(RejectCode::AlreadyRedeemed as u16, "");
        assert_eq!(r.name, "AlreadyRedeemed");
        assert!(
            r.meaning.contains("already redeemed by another phone"),
            "{}",
            r.meaning
        );
        assert!(r.what_to_do.contains("new link"), "{}", r.what_to_do);
        let r = explain(RejectCode::NotRedeemed as u16, "");
        assert_eq!(r.name, "NotRedeemed");
        assert!(
            r.what_to_do.contains("Accept the link again"),
            "{}",
            r.what_to_do
        );
    }

    #[test]
    fn consent_refusals_are_worded() {
        let r = explain(23, "");
        assert_eq!(r.name, "UnknownStream");
        assert!(r.meaning.contains("does not publish"), "{}", r.meaning);
        let r = explain(24, "bad signature");
        assert_eq!(r.name, "ConsentRefused");
        assert!(
            r.meaning.contains("did not accept the consent"),
            "{}",
            r.meaning
        );
        assert!(r.meaning.contains("bad signature"), "{}", r.meaning);
    }

    #[test]
    fn arguments_not_granted_is_worded() {
        let r = explain(19, "");
        assert_eq!(r.name, "ArgumentsNotGranted");
        assert!(r.meaning.contains("does not allow passing arguments"));
    }
}
