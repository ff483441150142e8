//! event.json: device events for owners (PROTOCOL.md §13): signed events, the owner-mailbox
//! message that carries one sealed to an owner, and what must be refused. Sealing draws on the
//! OS (sntrup761), so the sealed message is made anew each run; its vector carries the reader's
//! secret key file and the event it must open to.

use crate::*;
use latchkey_proto::event::{self, Event, EventKind, EventMessage, SignedEvent};
use latchkey_proto::grant::GrantId;
use latchkey_proto::hash;

fn event_json(e: &Event) -> Value {
    let (kind, code) = match e.kind {
        EventKind::FirstOpen => ("first_open", None),
        EventKind::Redeemed => ("redeemed", None),
        EventKind::Refused { code } => ("refused", Some(code)),
    };
    json!({
        "device": h(e.device.0),
        "seq": e.seq,
        "time_ms": e.time_ms,
        "kind": kind,
        "reject_code": code,
        "grant": h(e.grant.0),
        "guest": pk_hex(&e.guest),
        "action": e.action,
    })
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let device = w.front_id();
    let identity = &w.front.identity;
    let guest = w.host.public_key();
    let grant = GrantId(hash::labeled("vector/event-grant", &[]));
    let make = |seq, time_ms, kind, action: &str| {
        Event {
            device,
            seq,
            time_ms,
            kind,
            grant,
            guest,
            action: action.into(),
        }
        .sign(identity)
        .expect("a valid action name")
    };
    let first = make(1, Some(T0 + HOUR), EventKind::FirstOpen, "unlock");
    let refused = make(
        2,
        Some(T0 + 2 * HOUR),
        EventKind::Refused { code: 11 },
        "unlock",
    );
    let redeemed = make(3, None, EventKind::Redeemed, "latchkey.redeem");
    for (name, e, what) in [
        (
            "event_first_open",
            &first,
            "a guest's first open with a grant",
        ),
        (
            "event_refused_revoked",
            &refused,
            "a guest refused: grant revoked (code 11)",
        ),
        (
            "event_redeemed_clock_unset",
            &redeemed,
            "a redemption on a device whose clock is not set (no time)",
        ),
    ] {
        let bytes = e.to_bytes();
        assert_eq!(SignedEvent::from_bytes(&bytes).as_ref(), Ok(e));
        e.verify(&identity.public_key())
            .expect("signed by the front door");
        v.ok(
            name,
            "event",
            &format!(
                "{what}: the signed event's bytes, its fields, and the device identity key its \
                 signature (over \"latchkey/v1/event\\0\" || content) verifies with."
            ),
            json!({
                "device_identity": pk_hex(&identity.public_key()),
                "event": event_json(&e.event),
                "signed_event": h(&bytes),
            }),
        );
    }

    // The owner's event key: the back door's KEM keys stand in for it, so the vector can carry
    // a secret key file the test already knows how to read.
    let reader = &w.back;
    let owner = w.a.public_key();
    let mailbox = hash::owner_mailbox(&owner);
    let mut r = rng(0xe7e17);
    let message =
        event::build_message(&first, reader.kem.public(), mailbox, identity, &mut r).unwrap();
    let bytes = message.to_bytes();
    assert_eq!(bytes.len(), event::EVENT_MESSAGE_LEN);
    assert_eq!(
        message
            .open(&identity.public_key(), &mailbox, &reader.kem)
            .as_ref(),
        Ok(&first)
    );
    v.ok(
        "event_message_first_open",
        "event_message",
        "The first-open event sealed to an owner's event KEM key and framed for its mailbox: \
         tag 0xE1 || device (32) || mailbox (32) || u16 length || sealed event (2,137) || device \
         signature (64) over \"latchkey/v1/event-message\\0\" || everything before it. Sealed \
         anew each run; reader_secret_keys holds the reader's KEM secret (a device key file \
         whose KEM keys play the owner's event key), and the message must open to signed_event.",
        json!({
            "device_identity": pk_hex(&identity.public_key()),
            "owner_public_key": pk_hex(&owner),
            "mailbox_id": h(mailbox),
            "reader_secret_keys": h(reader.to_secret_bytes().as_slice()),
            "message": h(&bytes),
            "signed_event": h(first.to_bytes()),
        }),
    );

    // Refusals.
    v.fail_decode(
        "fail_event_version",
        "SignedEvent",
        "A signed event whose version byte is 2.",
        &{
            let mut b = first.to_bytes();
            b[0] = 2;
            b
        },
        "UnsupportedVersion",
    );
    v.fail_decode(
        "fail_event_kind",
        "SignedEvent",
        "A signed event whose kind tag is 4 (only 1 first open, 2 redeemed, 3 refused exist).",
        &{
            let mut b = first.to_bytes();
            // version, device (32), seq (8), option flag and time (9): the kind is at 50.
            assert_eq!(b[50], 1);
            b[50] = 4;
            b
        },
        "UnknownTag",
    );
    v.fail_decode(
        "fail_event_too_large",
        "SignedEvent",
        "513 bytes: over the signed event's 512-byte cap, refused before decoding.",
        &[0u8; 513],
        "TooLarge",
    );
    v.fail_truncations("event", "SignedEvent", &first.to_bytes(), "TrailingBytes");
    v.fail_decode(
        "fail_event_message_op",
        "EventMessage",
        "An op's bytes posted as an event message: its first byte (1) is not the tag 0xE1.",
        &w.front.genesis("Front door", T0).unwrap().to_bytes()[..event::EVENT_MESSAGE_LEN.min(200)],
        "UnknownTag",
    );
    v.fail_decode(
        "fail_event_message_sealed_len",
        "EventMessage",
        "An event message whose sealed event is 2,136 bytes (it is always exactly 2,137).",
        &{
            let mut w2 = latchkey_proto::codec::Writer::new();
            w2.u8(event::EVENT_MESSAGE_TAG);
            w2.raw(&device.0);
            w2.raw(&mailbox);
            w2.bytes16(&message.sealed[..event::SEALED_EVENT_LEN - 1]);
            w2.raw(&message.signature.0);
            w2.into_inner()
        },
        "Invalid",
    );
    v.fail_decode(
        "fail_event_message_too_large",
        "EventMessage",
        "An event message one byte over its fixed 2,268 bytes: refused before decoding.",
        &[bytes.clone(), vec![0]].concat(),
        "TooLarge",
    );
    let open =
        |m: &EventMessage, key: &PublicKey, mailbox: &[u8; 32]| m.open(key, mailbox, &reader.kem);
    let mut tampered = message.clone();
    tampered.sealed[2000] ^= 1;
    for (name, what, result, expected, msg) in [
        (
            "fail_event_message_signature",
            "A sealed byte changed after the device signed the message: the device signature \
             fails (a node refuses it; so does the owner).",
            open(&tampered, &identity.public_key(), &mailbox),
            "BadSignature",
            &tampered,
        ),
        (
            "fail_event_message_other_device",
            "The message checked against another device's identity key (the back door's).",
            open(&message, &w.back.identity.public_key(), &mailbox),
            "BadSignature",
            &message,
        ),
        (
            "fail_event_message_other_mailbox",
            "Opened by owner B: the message is addressed to owner A's mailbox.",
            open(
                &message,
                &identity.public_key(),
                &hash::owner_mailbox(&w.b.public_key()),
            ),
            "Invalid",
            &message,
        ),
    ] {
        v.fail(
            name,
            "event_message_fail",
            what,
            result,
            expected,
            json!({
                "device_identity": pk_hex(&identity.public_key()),
                "checked_with": pk_hex(
                    &if name == "fail_event_message_other_device" {
                        w.back.identity.public_key()
                    } else {
                        identity.public_key()
                    }
                ),
                "mailbox_id": h(if name == "fail_event_message_other_mailbox" {
                    hash::owner_mailbox(&w.b.public_key())
                } else {
                    mailbox
                }),
                "reader_secret_keys": h(reader.to_secret_bytes().as_slice()),
                "message": h(msg.to_bytes()),
            }),
        );
    }
    v
}
