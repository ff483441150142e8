//! claim_payload.json: claim codes, their fields, and codes that must be refused.

use crate::*;
use latchkey_proto::claim;

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let addrs = vec![
        DeviceAddr::parse("192.168.1.20:7443").unwrap(),
        DeviceAddr::parse("[fd00::20]:7443").unwrap(),
        DeviceAddr::parse("front-door.local:7443").unwrap(),
    ];
    let front = w.front.claim_payload("Front door", addrs);
    let back = w.back.claim_payload("", Vec::new());
    let after_reset = DeviceKeys {
        identity: copy_key(&w.rotated.identity),
        kem: DeviceKeys::from_secret_bytes(&w.rotated.to_secret_bytes())
            .unwrap()
            .kem,
        setup: copy_key(&w.reset_setup),
    }
    .claim_payload(
        "Front door, hall side of the house",
        vec![DeviceAddr::parse("10.0.0.7:443").unwrap()],
    );
    assert_eq!(after_reset.name.len(), 24, "names are cut to 24 bytes");
    for (name, payload, kem, description) in [
        (
            "claim_front_door",
            &front,
            w.front.kem.public(),
            "The front door's claim code with an IPv4, an IPv6 and a host-name address.",
        ),
        (
            "claim_back_door_minimal",
            &back,
            w.back.kem.public(),
            "The back door's claim code with an empty name and no address: the smallest code.",
        ),
        (
            "claim_front_door_after_reset",
            &after_reset,
            w.rotated.kem.public(),
            "The front door's claim code after key rotation and factory reset (new identity, \
             KEM keys and setup key); its name was cut to the code's 24-byte limit.",
        ),
    ] {
        let text = payload.to_text().unwrap();
        let variants = vec![text.to_lowercase(), format!("  {}\n", text.as_str())];
        for t in &variants {
            assert!(ClaimPayload::parse(t).unwrap() == *payload);
        }
        payload.check_kem(kem).unwrap();
        v.ok(
            name,
            "claim_payload",
            &format!(
                "{description} `text_variants` are other spellings (lower case, surrounding \
                 white space) that must parse to the same payload; `kem_public_key` must match \
                 the commitment."
            ),
            json!({
                "claim": claim_json(payload),
                "text_variants": variants,
                "kem_public_key": h(kem.to_bytes()),
            }),
        );
    }

    let text = front.to_text().unwrap().to_string();
    let body = &text[12..];
    let text_fail = |v: &mut Vectors, name: &str, description: &str, t: String, e: &str| {
        v.fail(
            name,
            "claim_text_fail",
            description,
            ClaimPayload::parse(&t),
            e,
            json!({ "text": t }),
        );
    };
    text_fail(
        &mut v,
        "fail_claim_text_wrong_prefix",
        "claim_front_door's code with prefix LATCHKEY:C2: instead of LATCHKEY:C1:.",
        format!("LATCHKEY:C2:{body}"),
        "WrongKind",
    );
    text_fail(
        &mut v,
        "fail_claim_text_no_prefix",
        "claim_front_door's base32 without the LATCHKEY:C1: prefix.",
        body.to_owned(),
        "WrongKind",
    );
    text_fail(
        &mut v,
        "fail_claim_text_lkpk_key",
        "A public key's text scanned where a claim code is expected.",
        w.a.public_key().to_string(),
        "WrongKind",
    );
    text_fail(
        &mut v,
        "fail_claim_text_bad_base32_character",
        "claim_front_door's code with a '1', which is not in the RFC 4648 base32 alphabet.",
        format!("LATCHKEY:C1:1{}", &body[1..]),
        "BadText",
    );
    text_fail(
        &mut v,
        "fail_claim_text_base32_padding",
        "claim_back_door_minimal's code with '=' padding added: the code is unpadded base32.",
        format!("{}=", back.to_text().unwrap().as_str()),
        "BadText",
    );
    let minimal = back.to_text().unwrap().to_string();
    let last = minimal.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let noncanonical = alphabet
        .chars()
        .filter(|c| *c != last)
        .map(|c| format!("{}{c}", &minimal[..minimal.len() - 1]))
        .find(|t| matches!(ClaimPayload::parse(t), Err(Error::BadText { .. })))
        .unwrap();
    text_fail(
        &mut v,
        "fail_claim_text_noncanonical_base32",
        "claim_back_door_minimal's code with its last character changed so the unused low bits \
         are not zero: only the canonical base32 spelling is accepted.",
        noncanonical,
        "BadText",
    );
    let mut long = text.clone();
    while long.len() <= 300 {
        long.push('A');
    }
    text_fail(
        &mut v,
        "fail_claim_text_too_long",
        "A LATCHKEY:C1: code of 301 characters: over the 300-character limit.",
        long,
        "TooLarge",
    );
    text_fail(
        &mut v,
        "fail_claim_text_truncated_payload",
        "claim_front_door's code with the last 16 base32 characters (10 bytes) removed.",
        text[..text.len() - 16].to_owned(),
        "Truncated",
    );
    v.fail(
        "fail_claim_kem_commitment_mismatch",
        "claim_kem_fail",
        "claim_front_door's code checked against the back door's KEM keys: the commitment does \
         not match, so the claim must stop.",
        ClaimPayload::parse(&text)
            .unwrap()
            .check_kem(w.back.kem.public()),
        "KemCommitmentMismatch",
        json!({ "text": text, "kem_public_key": h(w.back.kem.public().to_bytes()) }),
    );

    // Binary payloads.
    let bytes = front.to_bytes();
    v.fail_truncations("claim_payload", "ClaimPayload", &bytes, "TrailingBytes");
    v.fail_decode(
        "fail_claim_payload_version",
        "ClaimPayload",
        "claim_front_door's payload with version byte 2.",
        &patch(&bytes, 0, &[1], &[2]),
        "UnsupportedVersion",
    );
    v.fail_decode(
        "fail_claim_payload_identity_not_a_point",
        "ClaimPayload",
        "claim_front_door's payload whose identity key is not an Ed25519 point.",
        &patch(
            &bytes,
            1,
            &w.front.identity.public_key().to_bytes(),
            &not_a_point(),
        ),
        "BadPublicKey",
    );
    // version 1 + identity 32 + commitment 32 + setup secret 32 = 97: the name's length byte.
    const NAME_AT: usize = 97;
    v.fail_decode(
        "fail_claim_payload_name_not_utf8",
        "ClaimPayload",
        "claim_front_door's payload with a name byte that is not UTF-8.",
        &patch(&bytes, NAME_AT + 1, b"F", &[0xff]),
        "NotUtf8",
    );
    let mut long_name = ClaimPayload::from_bytes(&bytes).unwrap();
    long_name.name = "x".repeat(25);
    v.fail_decode(
        "fail_claim_payload_name_too_long",
        "ClaimPayload",
        "A claim payload with a 25-byte name (the limit is 24).",
        &long_name.to_bytes(),
        "TooLarge",
    );
    let addrs_at = NAME_AT + 1 + front.name.len();
    v.fail_decode(
        "fail_claim_payload_unknown_address_tag",
        "ClaimPayload",
        "claim_front_door's payload whose first address has tag 5 (known: 4, 6, 0x44).",
        &patch(&bytes, addrs_at + 1, &[4], &[5]),
        "UnknownTag",
    );
    let mut five = ClaimPayload::from_bytes(&back.to_bytes()).unwrap();
    five.addrs = (1..=5)
        .map(|i| DeviceAddr::parse(&format!("10.0.0.{i}:443")).unwrap())
        .collect();
    v.fail_decode(
        "fail_claim_payload_five_addresses",
        "ClaimPayload",
        "A claim payload with five addresses (the limit is 4).",
        &five.to_bytes(),
        "TooLarge",
    );
    let mut bad_host = ClaimPayload::from_bytes(&back.to_bytes()).unwrap();
    bad_host.addrs = vec![DeviceAddr::Host {
        host: "front_door.local".into(),
        port: 443,
    }];
    v.fail_decode(
        "fail_claim_payload_bad_host_name",
        "ClaimPayload",
        "A claim payload whose host-name address contains '_' (allowed: letters, digits, '-', \
         '.').",
        &bad_host.to_bytes(),
        "Invalid",
    );
    let mut ip_as_host = ClaimPayload::from_bytes(&back.to_bytes()).unwrap();
    ip_as_host.addrs = vec![DeviceAddr::Host {
        host: "192.168.1.20".into(),
        port: 7443,
    }];
    v.fail_decode(
        "fail_claim_payload_ip_address_as_host_name",
        "ClaimPayload",
        "A claim payload carrying 192.168.1.20:7443 under the host-name tag (0x44): an IP \
         address has its own tag (4 or 6), so each address has exactly one encoding.",
        &ip_as_host.to_bytes(),
        "Invalid",
    );
    let mut huge = bytes.clone();
    huge.resize(claim::MAX_CLAIM_PAYLOAD + 1, 0);
    v.fail_decode(
        "fail_claim_payload_too_large",
        "ClaimPayload",
        "claim_front_door's payload padded with zeros to 181 bytes: over the 180-byte limit \
         (the most a 300-character code can carry), refused before decoding.",
        &huge,
        "TooLarge",
    );
    v
}
