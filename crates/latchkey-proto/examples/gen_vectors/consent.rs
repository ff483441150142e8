//! consent.json: consent (PROTOCOL.md §14): signed requests and their LATCHKEY://C/ links,
//! consent logs verified against an ownership chain (with the statuses and readers they
//! answer), a log across a transfer, lists as nodes serve them, and what must be refused.
//! Deterministic: every key is fixed and Ed25519 signatures are deterministic.

use crate::*;
use latchkey_proto::consent::{
    purpose, ConsentAction, ConsentEntry, ConsentList, ConsentLog, ConsentRequest,
    ProviderIdentity, SignedConsentRequest,
};

fn provider_key(w: &World) -> SigningKey {
    copy_key(&w.host)
}

fn request(w: &World, device: DeviceId, until_ms: Option<u64>, n: u8) -> SignedConsentRequest {
    let key = provider_key(w);
    ConsentRequest {
        provider: ProviderIdentity {
            name: "Energy Insights B.V.".into(),
            url: "https://insights.example/privacy".into(),
            signing: key.public_key(),
            // The back door's KEM keys stand in for the provider's.
            kem: w.back.kem.public().clone(),
        },
        device,
        stream: "p1".into(),
        purpose_code: if until_ms.is_some() {
            purpose::RESEARCH
        } else {
            purpose::INSIGHTS
        },
        purpose: "Monthly energy report and saving tips.".into(),
        retention_days: 30,
        until_ms,
        history: until_ms.is_none(),
        terms: until_ms.map(|_| "500 units per hour".to_owned()),
        issued_ms: T0,
        nonce: [n; 16],
    }
    .sign(&key)
    .unwrap()
}

/// Genesis, then a claim by owners A and B (threshold 1).
fn chain(w: &World) -> Chain {
    let mut chain = Chain::from_genesis(w.front.genesis("Meter", T0).unwrap()).unwrap();
    extend(
        &mut chain,
        T0,
        OpBody::Claim(owners(&[&w.a, &w.b], 1)),
        &[&w.front.setup, &w.a, &w.b],
    );
    chain
}

fn log_json(chain: &Chain, log: &ConsentLog, probes: &[u64]) -> Value {
    json!({
        "chain": chain.ops().iter().map(|op| h(op.to_bytes())).collect::<Vec<_>>(),
        "entries": log.entries().iter().map(consent_entry_json).collect::<Vec<_>>(),
        "consents": log.consents().iter().map(consent_status_json).collect::<Vec<_>>(),
        "readers_at": probes.iter().map(|t| json!({
            "time_ms": t,
            "consent_ids": log.readers_at(*t).iter().map(|c| c.id.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "list": h(ConsentList(log.entries().to_vec()).to_bytes()),
    })
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let chain = chain(w);
    let device = chain.device();
    let open = request(w, device, None, 1);
    let limited = request(w, device, Some(T0 + 30 * 24 * HOUR), 2);

    for (name, r, what) in [
        (
            "consent_request_open_ended",
            &open,
            "An open-ended request for p1 with history (purpose insights)",
        ),
        (
            "consent_request_until_terms",
            &limited,
            "A request for 30 days with terms (purpose research)",
        ),
    ] {
        let bytes = r.to_bytes();
        let link = r.to_link();
        assert_eq!(SignedConsentRequest::from_link(&link).as_ref(), Ok(r));
        v.ok(
            name,
            "consent_request",
            &format!(
                "{what}: the signed request's bytes (version 1 || provider identity || device || \
                 stream || u16 purpose code || u16 purpose length || purpose || u32 retention days \
                 || option u64 until || u8 history || option (u8 length || terms) || u64 issued || \
                 nonce (16) || provider signature over \"latchkey/v1/consent-request\\0\" || \
                 everything before it), its fields, its id (H(\"latchkey/v1/consent-id\", everything before the signature)) \
                 and its link (LATCHKEY://C/ + upper-case base32, no padding; any case parses)."
            ),
            json!({
                "bytes": h(&bytes),
                "request": consent_request_json(r),
                "link": link,
            }),
        );
    }

    // A log: given (A), given (B), revoked (A), expired (B) after the until.
    let (a, b) = (&w.a, &w.b);
    let mut log = ConsentLog::new(&chain);
    let steps = [
        (a, T0 + HOUR, ConsentAction::Given(open.clone())),
        (b, T0 + 2 * HOUR, ConsentAction::Given(limited.clone())),
        (a, T0 + 3 * HOUR, ConsentAction::Revoked(open.id())),
        (b, T0 + 31 * 24 * HOUR, ConsentAction::Expired(limited.id())),
    ];
    for (signer, t, action) in steps {
        let e = log.next_entry(&chain, signer, t, action).unwrap();
        log.append(&chain, e).unwrap();
    }
    let probes = [
        T0,
        T0 + HOUR,
        T0 + 2 * HOUR,
        T0 + 3 * HOUR,
        T0 + 30 * 24 * HOUR,
    ];
    v.ok(
        "consent_log_given_revoked_expired",
        "consent_log",
        "A device's consent log on a chain claimed by A and B: A gives the open-ended consent, \
         B gives the 30-day one, A revokes the first, B records the second's expiry after its \
         until. Each entry: version 1 || device || u64 seq || prev hash (32) || anchor op id \
         (32) || u64 time || action tag (1 given: u16 length || signed request; 2 revoked, 3 \
         expired: consent id) || signer (32) || signature over \"latchkey/v1/consent-entry\\0\" \
         || everything before it; hash = H(\"latchkey/v1/consent-entry-hash\", everything before \
         the signature). With each consent's status and who could read at several instants.",
        log_json(&chain, &log, &probes),
    );

    // Across a transfer: the consent given by A ends when C becomes the owner.
    let mut moved = chain.clone();
    let mut before = ConsentLog::new(&moved);
    let e = before
        .next_entry(&moved, a, T0 + HOUR, ConsentAction::Given(open.clone()))
        .unwrap();
    before.append(&moved, e).unwrap();
    extend(
        &mut moved,
        T0 + 5 * HOUR,
        OpBody::Transfer(owners(&[&w.c], 1)),
        &[a, &w.c],
    );
    let after = ConsentLog::verify(&moved, before.entries().to_vec()).unwrap();
    let ended = after.consents()[0].ended.unwrap();
    assert_eq!(ended.kind, latchkey_proto::consent::EndKind::Transferred);
    assert_eq!(ended.time_ms, T0 + 5 * HOUR);
    v.ok(
        "consent_log_transfer",
        "consent_log",
        "A consent given by A in the first era, then the device is transferred to C (op issued \
         at T0 + 5 h): the consent ends (transferred) at the transfer's issued_ms.",
        log_json(&moved, &after, &[T0 + 4 * HOUR, T0 + 5 * HOUR]),
    );

    // Refusals: logs. Each is a whole log that must not verify against the chain.
    let entries = log.entries().to_vec();
    let resign = |mut e: ConsentEntry, key: &SigningKey| {
        e.signer = key.public_key();
        e.signature = key.sign(
            &[
                b"latchkey/v1/consent-entry\0".as_slice(),
                &e.content_bytes(),
            ]
            .concat(),
        );
        e
    };
    let stranger_entry = resign(entries[0].clone(), &w.stranger);
    let mut wrong_prev = entries[1].clone();
    wrong_prev.prev = [0; 32];
    let wrong_prev = resign(wrong_prev, b);
    let mut early = entries[1].clone();
    early.time_ms = entries[0].time_ms - 1;
    let early = resign(early, b);
    let mut double = entries[2].clone();
    double.seq = 5;
    double.prev = entries[3].hash();
    double.time_ms = entries[3].time_ms;
    let double = resign(double, a);
    let mut early_expiry = entries[3].clone();
    early_expiry.time_ms = T0 + 4 * HOUR;
    let early_expiry = resign(early_expiry, b);
    let mut unknown = entries[2].clone();
    unknown.action = ConsentAction::Revoked(latchkey_proto::consent::ConsentId([7; 32]));
    let unknown = resign(unknown, a);
    let mut bad_sig = entries[0].clone();
    bad_sig.signature.0[10] ^= 1;
    let mut other_device = entries[0].clone();
    other_device.device = w.back_id();
    let other_device = resign(other_device, a);
    let mut unknown_anchor = entries[0].clone();
    unknown_anchor.anchor = OpId([9; 32]);
    let unknown_anchor = resign(unknown_anchor, a);
    let mut anchor_back = entries[1].clone();
    anchor_back.anchor = chain.spine_ids().next().unwrap();
    let anchor_back = resign(anchor_back, b);
    let other_request = request(w, w.back_id(), None, 3);
    let mut foreign = entries[0].clone();
    foreign.action = ConsentAction::Given(other_request);
    let foreign = resign(foreign, a);
    let stale = request(w, device, Some(T0 + HOUR), 4);
    let mut stale_given = entries[0].clone();
    stale_given.action = ConsentAction::Given(stale);
    let stale_given = resign(stale_given, a);
    let mut twice = entries[1].clone();
    twice.action = ConsentAction::Given(open.clone());
    let twice = resign(twice, b);

    let cases: Vec<(&str, &str, Vec<ConsentEntry>, &str)> = vec![
        (
            "fail_consent_log_stranger",
            "Entry 1 signed by a key that is no owner: rule 7.",
            vec![stranger_entry],
            "its signer is not an owner at its anchor",
        ),
        (
            "fail_consent_log_bad_signature",
            "Entry 1 with one signature byte changed: rule 8.",
            vec![bad_sig],
            "the owner's signature does not verify",
        ),
        (
            "fail_consent_log_other_device",
            "Entry 1 naming another device: rule 1.",
            vec![other_device],
            "it is for another device",
        ),
        (
            "fail_consent_log_unknown_anchor",
            "Entry 1 anchored on an op the chain does not hold: rule 4.",
            vec![unknown_anchor],
            "its anchor is not an op of this chain; fetch the device's chain again",
        ),
        (
            "fail_consent_log_anchor_back",
            "Entry 2 anchored on the genesis, before entry 1's anchor (the claim): rule 5.",
            vec![entries[0].clone(), anchor_back],
            "its anchor is before the previous entry's",
        ),
        (
            "fail_consent_log_prev",
            "Entry 2 whose prev is zeros instead of entry 1's hash: rule 3.",
            vec![entries[0].clone(), wrong_prev],
            "it does not link to the entry before it",
        ),
        (
            "fail_consent_log_gap",
            "Entries 1 and 3: seq 3 where the log expects 2: rule 2.",
            vec![entries[0].clone(), entries[2].clone()],
            "its seq is not the log's next",
        ),
        (
            "fail_consent_log_time_back",
            "Entry 2 one millisecond before entry 1: rule 6.",
            vec![entries[0].clone(), early],
            "its time is before the previous entry's",
        ),
        (
            "fail_consent_log_revoked_twice",
            "A fifth entry revoking the consent entry 3 already revoked: rule 9.",
            [entries.clone(), vec![double]].concat(),
            "the consent has already ended",
        ),
        (
            "fail_consent_log_expiry_early",
            "Entry 4 records the expiry at T0 + 4 h, before the consent's until (T0 + 30 days).",
            [entries[..3].to_vec(), vec![early_expiry]].concat(),
            "the consent's until has not passed",
        ),
        (
            "fail_consent_log_revoke_unknown",
            "Entry 3 revokes a consent id never given.",
            [entries[..2].to_vec(), vec![unknown]].concat(),
            "it ends a consent that was never given",
        ),
        (
            "fail_consent_log_request_other_device",
            "Entry 1 gives a request made for another device.",
            vec![foreign],
            "the request is for another device",
        ),
        (
            "fail_consent_log_until_past",
            "Entry 1 (at T0 + 1 h) gives a request whose until is T0 + 1 h.",
            vec![stale_given],
            "the request's until has passed",
        ),
        (
            "fail_consent_log_given_twice",
            "Entry 2 gives the request entry 1 already gave.",
            vec![entries[0].clone(), twice],
            "this consent was given before",
        ),
    ];
    for (name, what, list, why) in cases {
        let result = ConsentLog::verify(&chain, list.clone());
        match &result {
            Err(Error::ConsentRefused { why: got, .. }) => assert_eq!(got, &why, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        v.fail(
            name,
            "consent_log_fail",
            &format!("{what} The error's reason is the vector's `why`."),
            result,
            "ConsentRefused",
            json!({
                "chain": chain.ops().iter().map(|op| h(op.to_bytes())).collect::<Vec<_>>(),
                "entries": list.iter().map(|e| h(e.to_bytes())).collect::<Vec<_>>(),
                "why": why,
            }),
        );
    }

    // check_next: what a node or the device admits, beyond verify.
    let e = before
        .next_entry(&chain, a, T0 + 2 * HOUR, ConsentAction::Revoked(open.id()))
        .unwrap();
    v.fail(
        "fail_consent_next_old_era",
        "consent_next_fail",
        "After the transfer to C: A's revoke anchored in the first era is refused for admission \
         (signer no longer an owner), though A was an owner at its anchor.",
        after.check_next(&moved, &e),
        "ConsentRefused",
        json!({
            "chain": moved.ops().iter().map(|op| h(op.to_bytes())).collect::<Vec<_>>(),
            "entries": after.entries().iter().map(|e| h(e.to_bytes())).collect::<Vec<_>>(),
            "next": h(e.to_bytes()),
            "why": "its signer is no longer an owner",
        }),
    );

    // Refusals: links and decoding.
    let link = open.to_link();
    let mut tampered = open.to_bytes();
    // The purpose's first byte, after the provider identity, device, stream and code.
    let at = 1 + open.request().provider.to_bytes().len() + 32 + 1 + 2 + 2 + 2;
    tampered[at] ^= 0x20;
    for (name, what, text, expected) in [
        (
            "fail_consent_link_prefix",
            "An invitation link's prefix.",
            link.replacen("LATCHKEY://C/", "LATCHKEY://I/", 1),
            "WrongKind",
        ),
        (
            "fail_consent_link_base32",
            "A '1' in the base32 (not in the alphabet).",
            format!("{}1", &link[..link.len() - 1]),
            "BadText",
        ),
        (
            "fail_consent_link_signature",
            "A link whose purpose was edited (one letter's case): the provider's signature fails.",
            format!(
                "LATCHKEY://C/{}",
                data_encoding::BASE32_NOPAD.encode(&tampered)
            ),
            "BadSignature",
        ),
        (
            "fail_consent_link_lower_case_bad_base32",
            "A lower-case prefix (accepted: any case) followed by a '1': the base32 is refused \
             (BadText), not the prefix.",
            format!("latchkey://c/{}1", &link[13..link.len() - 1].to_lowercase()),
            "BadText",
        ),
        (
            "fail_consent_link_too_long",
            "8,193 characters: over the link cap, refused before decoding.",
            format!("LATCHKEY://C/{}", "A".repeat(8193 - 13)),
            "TooLarge",
        ),
        (
            "fail_consent_link_truncated",
            "The link of the request's bytes without their last 5 (its signature cut short).",
            format!(
                "LATCHKEY://C/{}",
                data_encoding::BASE32_NOPAD.encode(&open.to_bytes()[..open.to_bytes().len() - 5])
            ),
            "Truncated",
        ),
    ] {
        v.fail(
            name,
            "consent_link_fail",
            what,
            SignedConsentRequest::from_link(&text),
            expected,
            json!({ "text": text }),
        );
    }
    let good = open.to_bytes();
    v.fail_truncations(
        "consent_request",
        "SignedConsentRequest",
        &good,
        "TrailingBytes",
    );
    v.fail_decode(
        "fail_consent_request_version",
        "SignedConsentRequest",
        "A request whose version byte is 2.",
        &patch(&good, 0, &[1], &[2]),
        "UnsupportedVersion",
    );
    let stream_at = 1 + open.request().provider.to_bytes().len() + 32;
    v.fail_decode(
        "fail_consent_request_stream",
        "SignedConsentRequest",
        "A request for stream \"P1\" (not a stream name).",
        &patch(&good, stream_at, &[2, b'p', b'1'], &[2, b'P', b'1']),
        "Invalid",
    );
    let entry = entries[0].to_bytes();
    v.fail_truncations("consent_entry", "ConsentEntry", &entry, "TrailingBytes");
    let action_at = 1 + 32 + 8 + 32 + 32 + 8;
    v.fail_decode(
        "fail_consent_entry_action",
        "ConsentEntry",
        "An entry whose action tag is 4 (1 given, 2 revoked, 3 expired).",
        &patch(&entry, action_at, &[1], &[4]),
        "UnknownTag",
    );
    v.fail_decode(
        "fail_consent_entry_too_large",
        "ConsentEntry",
        "8,193 bytes: over the entry cap, refused before decoding.",
        &vec![1u8; 8193],
        "TooLarge",
    );
    let list = ConsentList(entries.clone()).to_bytes();
    v.fail_truncations("consent_list", "ConsentList", &list, "TrailingBytes");
    v.fail_decode(
        "fail_consent_list_count",
        "ConsentList",
        "A list whose count says 10,001 entries (at most 10,000).",
        &patch(&list, 0, &[0, 0, 0, 4], &10_001u32.to_be_bytes()),
        "TooLarge",
    );
    v
}
