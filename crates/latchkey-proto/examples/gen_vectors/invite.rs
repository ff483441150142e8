//! invitation.json: guest invitations (`latchkey://invite/…` links), their fields, and links or
//! encodings that must be refused.

use latchkey_proto::invite::{
    Invitation, InviteDoor, INVITE_PREFIX, MAX_INVITATION, MAX_INVITE_LEN, MAX_INVITE_TEXT,
};

use crate::*;

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

/// A link made from any bytes, whether or not they decode or check.
fn link_of(bytes: &[u8]) -> String {
    format!("{INVITE_PREFIX}{}", b64(bytes))
}

/// Where `needle` starts in `haystack`; it must occur exactly once.
fn find_once(haystack: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "{needle:?} occurs {} times", hits.len());
    hits[0]
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let s = grant_setup(w);

    // Owner A invites the host to both doors (the host may delegate one level).
    let host = Invitation {
        guest_secret: w.host.to_bytes(),
        grants: vec![s.root.clone()],
        guest_name: "Holiday host".into(),
        doors: vec![
            InviteDoor {
                device: w.front_id(),
                name: "Front door".into(),
                addrs: vec![
                    DeviceAddr::parse("192.168.1.20:7443").unwrap(),
                    DeviceAddr::parse("[fd00::20]:7443").unwrap(),
                    DeviceAddr::parse("front-door.local:7443").unwrap(),
                ],
            },
            InviteDoor {
                device: w.back_id(),
                name: "Back door".into(),
                addrs: vec![DeviceAddr::parse("192.168.1.21:7443").unwrap()],
            },
        ],
        nodes: vec![
            "https://n1.latchkey.example".into(),
            "https://n2.latchkey.example:8443/registry".into(),
            "http://192.168.1.5:7001".into(),
        ],
    };
    // The host passes the front door on to the cleaner: owner -> host -> cleaner.
    let cleaner = Invitation {
        guest_secret: w.cleaner.to_bytes(),
        grants: vec![s.root.clone(), s.child.clone()],
        guest_name: "Cleaner (Tuesdays)".into(),
        doors: vec![InviteDoor {
            device: w.front_id(),
            name: "Front door".into(),
            addrs: vec![DeviceAddr::parse("192.168.1.20:7443").unwrap()],
        }],
        nodes: vec!["https://n1.latchkey.example".into()],
    };
    // Owner A's direct grant to the cleaner, with nothing else: the smallest invitation.
    let minimal = Invitation {
        guest_secret: w.cleaner.to_bytes(),
        grants: vec![s.direct.clone()],
        guest_name: String::new(),
        doors: vec![InviteDoor {
            device: w.front_id(),
            name: String::new(),
            addrs: vec![],
        }],
        nodes: vec![],
    };
    for (name, inv, description) in [
        (
            "invitation_host_both_doors",
            &host,
            "Owner A invites the host to both doors (version 2 layout) with A's root grant, \
             which covers both; three addresses for the front door, one for the back, three \
             registry nodes.",
        ),
        (
            "invitation_cleaner_delegated",
            &cleaner,
            "The cleaner's invitation to the front door: a two-grant chain, owner A -> host -> \
             cleaner, root first.",
        ),
        (
            "invitation_minimal",
            &minimal,
            "Owner A's direct grant to the cleaner with empty names, no address and no node.",
        ),
    ] {
        inv.check().unwrap();
        let link = inv.to_link().unwrap().to_string();
        assert!(Invitation::parse_link(&link).unwrap() == *inv);
        assert!(Invitation::from_bytes(&inv.to_bytes()).unwrap() == *inv);
        let shouted = link.replacen(INVITE_PREFIX, &INVITE_PREFIX.to_uppercase(), 1);
        let variants = vec![shouted, format!("  {link}\r\n")];
        for t in &variants {
            assert!(Invitation::parse_link(t).unwrap() == *inv);
        }
        v.ok(
            name,
            "invitation",
            &format!(
                "{description} `bytes` is the version 2 layout (what a short link's sealed \
                 blob holds). A one-door invitation also has `v1_bytes`, the version 1 layout, \
                 which must decode to the same invitation; `link` is `latchkey://invite/` and \
                 unpadded base64url of `v1_bytes` for one door, of `bytes` for several. \
                 `text_variants` are other spellings (upper-case scheme and path, surrounding \
                 white space) that must parse to the same invitation; `guest_public_key` is the \
                 guest secret's Ed25519 public key and the last grant's subject."
            ),
            json!({
                "invitation": invitation_json(inv),
                "text_variants": variants,
            }),
        );
    }

    let link = host.to_link().unwrap().to_string();
    let body = &link[INVITE_PREFIX.len()..];
    let link_fail = |v: &mut Vectors, name: &str, description: &str, t: String, e: &str| {
        v.fail(
            name,
            "invitation_link_fail",
            description,
            Invitation::parse_link(&t),
            e,
            json!({ "text": t }),
        );
    };

    // Prefixes.
    link_fail(
        &mut v,
        "fail_invite_link_wrong_prefix",
        "invitation_host_both_doors's link with latchkey://invitation/ instead of \
         latchkey://invite/.",
        format!("latchkey://invitation/{body}"),
        "WrongKind",
    );
    link_fail(
        &mut v,
        "fail_invite_link_https_prefix",
        "invitation_host_both_doors's base64url behind https://latchkey.example/invite/: only \
         the latchkey:// scheme is an invitation.",
        format!("https://latchkey.example/invite/{body}"),
        "WrongKind",
    );
    link_fail(
        &mut v,
        "fail_invite_link_no_prefix",
        "invitation_host_both_doors's base64url without the latchkey://invite/ prefix.",
        body.to_owned(),
        "WrongKind",
    );
    link_fail(
        &mut v,
        "fail_invite_link_claim_code",
        "A claim code scanned where an invitation is expected.",
        w.back
            .claim_payload("", Vec::new())
            .to_text()
            .unwrap()
            .to_string(),
        "WrongKind",
    );

    // Base64url.
    link_fail(
        &mut v,
        "fail_invite_link_bad_base64url_character",
        "invitation_host_both_doors's link with its first base64url character replaced by '+', \
         which is in the standard base64 alphabet but not in base64url.",
        format!("{INVITE_PREFIX}+{}", &body[1..]),
        "BadText",
    );
    link_fail(
        &mut v,
        "fail_invite_link_base64_slash",
        "invitation_host_both_doors's link with its first base64url character replaced by '/' \
         (standard base64, not base64url).",
        format!("{INVITE_PREFIX}/{}", &body[1..]),
        "BadText",
    );
    link_fail(
        &mut v,
        "fail_invite_link_base64url_padding",
        "invitation_host_both_doors's link with '=' padding added: the link is unpadded \
         base64url.",
        format!("{link}="),
        "BadText",
    );
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (which, canonical, noncanonical) = [
        ("invitation_host_both_doors", &host),
        ("invitation_cleaner_delegated", &cleaner),
        ("invitation_minimal", &minimal),
    ]
    .into_iter()
    .find(|(_, inv)| inv.to_bytes().len() % 3 != 0)
    .map(|(which, inv)| {
        let good = inv.to_link().unwrap().to_string();
        let last = good.chars().last().unwrap();
        let bad = alphabet
            .chars()
            .filter(|c| *c != last)
            .map(|c| format!("{}{c}", &good[..good.len() - 1]))
            .find(|t| matches!(Invitation::parse_link(t), Err(Error::BadText { .. })))
            .unwrap();
        (which, good, bad)
    })
    .expect("an invitation whose length leaves unused bits in the last character");
    assert_ne!(canonical, noncanonical);
    link_fail(
        &mut v,
        "fail_invite_link_noncanonical_base64url",
        &format!(
            "{which}'s link with its last character changed so the unused low bits are not \
             zero: only the canonical base64url spelling is accepted."
        ),
        noncanonical,
        "BadText",
    );

    // Lengths.
    link_fail(
        &mut v,
        "fail_invite_link_truncated",
        "invitation_host_both_doors's link with the last 16 base64url characters (12 bytes) \
         removed.",
        link[..link.len() - 16].to_owned(),
        "Truncated",
    );
    let bytes = host.to_bytes();
    let mut longer = bytes.clone();
    longer.push(0);
    link_fail(
        &mut v,
        "fail_invite_link_trailing_byte",
        "invitation_host_both_doors's bytes followed by one zero byte, as a link: trailing bytes \
         are refused.",
        link_of(&longer),
        "TrailingBytes",
    );
    let mut huge = bytes.clone();
    huge.resize(MAX_INVITE_LEN + 1, 0);
    let huge_link = link_of(&huge);
    assert!(huge_link.len() <= MAX_INVITE_TEXT);
    link_fail(
        &mut v,
        "fail_invite_link_payload_too_large",
        &format!(
            "invitation_host_both_doors's bytes padded with zeros to {} bytes, as a link ({} \
             characters, within the text limit): over the {MAX_INVITE_LEN}-byte limit.",
            MAX_INVITE_LEN + 1,
            huge_link.len()
        ),
        huge_link,
        "TooLarge",
    );
    let mut long = link.clone();
    while long.len() <= MAX_INVITE_TEXT {
        long.push('A');
    }
    link_fail(
        &mut v,
        "fail_invite_link_too_long",
        &format!(
            "A latchkey://invite/ link of {} characters: over the {MAX_INVITE_TEXT}-character \
             limit (the prefix and base64url of {MAX_INVITE_LEN} bytes).",
            long.len()
        ),
        long,
        "TooLarge",
    );

    // Links that decode but do not check.
    let forged = |f: &dyn Fn(&mut Invitation)| {
        let mut inv = host.clone();
        f(&mut inv);
        link_of(&inv.to_bytes())
    };
    link_fail(
        &mut v,
        "fail_invite_link_version",
        "invitation_host_both_doors's link with version byte 3.",
        link_of(&patch(&bytes, 0, &[2], &[3])),
        "UnsupportedVersion",
    );
    link_fail(
        &mut v,
        "fail_invite_link_guest_secret_not_subject",
        "invitation_host_both_doors with the guest secret replaced by the cleaner's: the secret's \
         public key is not the last grant's subject, so the link would open nothing (GrantInvalid, \
         as a device names a grant issued to another key than the sender's).",
        forged(&|i| i.guest_secret = w.cleaner.to_bytes()),
        "GrantInvalid",
    );
    link_fail(
        &mut v,
        "fail_invite_link_grant_for_another_device",
        "invitation_minimal's grant (front door only) in an invitation to the back door \
         (DeviceNotGranted, as in a device's grant check).",
        link_of(
            &Invitation {
                doors: vec![InviteDoor {
                    device: w.back_id(),
                    ..minimal.doors[0].clone()
                }],
                ..minimal.clone()
            }
            .to_bytes(),
        ),
        "DeviceNotGranted",
    );
    link_fail(
        &mut v,
        "fail_invite_link_tampered_grant_signature",
        "invitation_host_both_doors with one bit of its grant's signature flipped.",
        forged(&|i| i.grants[0].signature.0[0] ^= 0x01),
        "GrantInvalid",
    );
    link_fail(
        &mut v,
        "fail_invite_link_tampered_grant_body",
        "invitation_host_both_doors with its grant's not_after_ms moved one millisecond later \
         (the signature no longer covers the body).",
        forged(&|i| i.grants[0].body.not_after_ms += 1),
        "GrantInvalid",
    );
    link_fail(
        &mut v,
        "fail_invite_link_grants_not_linked",
        "Owner A's direct grant to the cleaner followed by the host's grant to the cleaner: the \
         second grant's issuer (the host) is not the first one's subject.",
        link_of(
            &Invitation {
                grants: vec![s.direct.clone(), s.child.clone()],
                ..cleaner.clone()
            }
            .to_bytes(),
        ),
        "GrantInvalid",
    );
    link_fail(
        &mut v,
        "fail_invite_link_no_grant",
        "invitation_host_both_doors with an empty grant list (an invitation holds 1 to 4).",
        forged(&|i| i.grants.clear()),
        "GrantInvalid",
    );
    link_fail(
        &mut v,
        "fail_invite_link_node_not_http",
        "invitation_host_both_doors with a node URL ftp://n3.latchkey.example (nodes are http:// \
         or https://).",
        forged(&|i| i.nodes.push("ftp://n3.latchkey.example".into())),
        "Invalid",
    );

    // Binary encodings.
    v.fail_truncations("invitation", "Invitation", &bytes, "TrailingBytes");
    v.fail_decode(
        "fail_invitation_version",
        "Invitation",
        "invitation_host_both_doors's bytes with version byte 3 (1 and 2 are known).",
        &patch(&bytes, 0, &[2], &[3]),
        "UnsupportedVersion",
    );
    let at = find_once(&bytes, b"Holiday host");
    v.fail_decode(
        "fail_invitation_guest_name_not_utf8",
        "Invitation",
        "invitation_host_both_doors's bytes with a guest-name byte that is not UTF-8.",
        &patch(&bytes, at, b"H", &[0xff]),
        "NotUtf8",
    );
    let with = |f: &dyn Fn(&mut Invitation)| {
        let mut inv = host.clone();
        f(&mut inv);
        inv.to_bytes()
    };
    v.fail_decode(
        "fail_invitation_device_name_too_long",
        "Invitation",
        "An invitation with a 65-byte device name (the limit is 64).",
        &with(&|i| i.doors[0].name = "x".repeat(65)),
        "TooLarge",
    );
    v.fail_decode(
        "fail_invitation_guest_name_too_long",
        "Invitation",
        "An invitation with a 65-byte guest name (the limit is 64).",
        &with(&|i| i.guest_name = "x".repeat(65)),
        "TooLarge",
    );
    v.fail_decode(
        "fail_invitation_five_grants",
        "Invitation",
        "An invitation whose grant list has five grants (the limit is 4).",
        &with(&|i| i.grants = vec![s.direct.clone(); 5]),
        "TooLarge",
    );
    v.fail_decode(
        "fail_invitation_five_addresses",
        "Invitation",
        "An invitation with five addresses (the limit is 4).",
        &with(&|i| {
            i.doors[0].addrs = (1..=5)
                .map(|n| DeviceAddr::parse(&format!("10.0.0.{n}:443")).unwrap())
                .collect()
        }),
        "TooLarge",
    );
    v.fail_decode(
        "fail_invitation_nine_nodes",
        "Invitation",
        "An invitation with nine node URLs (the limit is 8).",
        &with(&|i| {
            i.nodes = (1..=9)
                .map(|n| format!("https://n{n}.latchkey.example"))
                .collect()
        }),
        "TooLarge",
    );
    v.fail_decode(
        "fail_invitation_node_url_too_long",
        "Invitation",
        "An invitation with a 201-byte node URL (the limit is 200).",
        &with(&|i| i.nodes = vec![format!("https://{}", "n".repeat(193))]),
        "TooLarge",
    );
    let addrs_at = find_once(&bytes, &[3, 4, 192, 168, 1, 20]);
    v.fail_decode(
        "fail_invitation_unknown_address_tag",
        "Invitation",
        "invitation_host_both_doors's bytes whose first address has tag 5 (known: 4, 6, 0x44).",
        &patch(&bytes, addrs_at + 1, &[4], &[5]),
        "UnknownTag",
    );
    v.fail_decode(
        "fail_invitation_nine_doors",
        "Invitation",
        "An invitation naming nine doors (the limit is 8).",
        &with(&|i| i.doors = vec![i.doors[1].clone(); 9]),
        "TooLarge",
    );
    let mut huge_blob = bytes.clone();
    huge_blob.resize(MAX_INVITATION + 1, 0);
    v.fail_decode(
        "fail_invitation_too_large",
        "Invitation",
        &format!(
            "invitation_host_both_doors's bytes padded with zeros to {} bytes: over the \
             {MAX_INVITATION}-byte limit of an encoded invitation.",
            MAX_INVITATION + 1
        ),
        &huge_blob,
        "TooLarge",
    );
    v
}
