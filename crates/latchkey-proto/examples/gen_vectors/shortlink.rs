//! short_link.json: short invitation links (`LATCHKEY://I/…`), the blob id and key derived from
//! their secret, the sealed invitation the nodes store, and links or blobs that must be refused.

use latchkey_proto::invite::{Invitation, InviteDoor};
use latchkey_proto::shortlink::{
    SealedInvitation, ShortLink, MAX_SEALED_INVITATION, MAX_SHORT_LINK_TEXT, SHORT_LINK_PREFIX,
};
use zeroize::Zeroizing;

use crate::*;

fn b32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

fn text_of(bytes: &[u8]) -> String {
    format!("{SHORT_LINK_PREFIX}{}", b32(bytes))
}

fn link_json(l: &ShortLink) -> Value {
    json!({
        "text": l.to_text().unwrap().as_str(),
        "bytes": h(l.to_bytes()),
        "secret": h(l.secret.as_slice()),
        "nodes": l.nodes,
        "blob_id": h(l.blob_id()),
        "key": h(l.key().as_slice()),
    })
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let s = grant_setup(w);
    let mut r = rng(600);
    let one = ShortLink::generate(vec!["https://n1.latchkey.example".into()], &mut r).unwrap();
    let three = ShortLink::generate(
        vec![
            "https://n1.latchkey.example".into(),
            "https://n2.latchkey.example:8443/registry".into(),
            "http://192.168.1.5:7001".into(),
        ],
        &mut r,
    )
    .unwrap();
    // The longest: one node whose URL fills the link to exactly 300 characters.
    let longest = (1..=200)
        .rev()
        .map(|n| ShortLink {
            secret: Zeroizing::new(random(&mut rng(601))),
            nodes: vec![format!("https://{}", "n".repeat(n))],
        })
        .find(|l| l.to_text().is_ok())
        .unwrap();
    assert_eq!(longest.to_text().unwrap().len(), MAX_SHORT_LINK_TEXT);
    for (name, link, description) in [
        ("short_link_one_node", &one, "A short link naming one node."),
        (
            "short_link_three_nodes",
            &three,
            "A short link naming three nodes (with a port, a path and plain http).",
        ),
        (
            "short_link_longest",
            &longest,
            "The longest short link: 300 characters, one node URL as long as that allows.",
        ),
    ] {
        let text = link.to_text().unwrap().to_string();
        let variants = vec![
            text.to_lowercase(),
            format!(" {text}\n"),
            text.replacen("LATCHKEY://I/", "latchkey://i/", 1),
        ];
        for t in &variants {
            assert!(ShortLink::parse(t).unwrap() == *link);
        }
        v.ok(
            name,
            "short_link",
            &format!(
                "{description} `text` is `LATCHKEY://I/` and unpadded upper-case base32 of \
                 `bytes` (version 2, secret, nodes); `blob_id` = H(\"latchkey/v1/invite-id\", \
                 secret), `key` = H(\"latchkey/v1/invite-key\", secret); `text_variants` \
                 (lower case, surrounding white space) must parse to the same link."
            ),
            json!({ "link": link_json(link), "text_variants": variants }),
        );
    }

    // A sealed invitation: owner A's grant to the host, both doors.
    let invitation = Invitation {
        guest_secret: w.host.to_bytes(),
        grants: vec![s.root.clone()],
        guest_name: "Holiday host".into(),
        doors: vec![
            InviteDoor {
                device: w.front_id(),
                name: "Front door".into(),
                addrs: vec![DeviceAddr::parse("192.168.1.20:7443").unwrap()],
            },
            InviteDoor {
                device: w.back_id(),
                name: "Back door".into(),
                addrs: vec![],
            },
        ],
        nodes: vec!["https://n1.latchkey.example".into()],
    };
    let blob = SealedInvitation::seal(&three, &invitation, &mut rng(602)).unwrap();
    assert!(SealedInvitation::open(&three, &blob).unwrap() == invitation);
    v.ok(
        "sealed_invitation_two_doors",
        "sealed_invitation",
        "The blob the nodes store for short_link_three_nodes: version 1, a 24-byte nonce, then \
         XChaCha20-Poly1305 under the link's `key` with the link's `blob_id` as associated data, \
         over the invitation (version 2, two doors) padded to 1,024 bytes. Opening it with the \
         link must give `invitation` (its bytes).",
        json!({
            "link": three.to_text().unwrap().as_str(),
            "blob": h(&blob),
            "invitation": h(invitation.to_bytes()),
        }),
    );

    let link_fail = |v: &mut Vectors, name: &str, description: &str, t: String, e: &str| {
        v.fail(
            name,
            "short_link_fail",
            description,
            ShortLink::parse(&t),
            e,
            json!({ "text": t }),
        );
    };
    let bytes = three.to_bytes();
    let text = three.to_text().unwrap().to_string();
    let body = &text[SHORT_LINK_PREFIX.len()..];
    link_fail(
        &mut v,
        "fail_short_link_too_long",
        "short_link_longest with one more base32 character: 301 characters.",
        format!("{}A", longest.to_text().unwrap().as_str()),
        "TooLarge",
    );
    link_fail(
        &mut v,
        "fail_short_link_wrong_prefix",
        "short_link_three_nodes's base32 behind LATCHKEY://INVITE/.",
        format!("LATCHKEY://INVITE/{body}"),
        "WrongKind",
    );
    link_fail(
        &mut v,
        "fail_short_link_claim_code",
        "A claim code where a short link belongs.",
        w.back
            .claim_payload("", Vec::new())
            .to_text()
            .unwrap()
            .to_string(),
        "WrongKind",
    );
    link_fail(
        &mut v,
        "fail_short_link_bad_base32_character",
        "short_link_three_nodes with its first base32 character replaced by '1' (not in the \
         RFC 4648 alphabet).",
        format!("{SHORT_LINK_PREFIX}1{}", &body[1..]),
        "BadText",
    );
    link_fail(
        &mut v,
        "fail_short_link_padding",
        "short_link_three_nodes with '=' padding: the link is unpadded.",
        format!("{text}="),
        "BadText",
    );
    let noncanonical = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
        .chars()
        .map(|c| format!("{}{c}", &text[..text.len() - 1]))
        .find(|t| matches!(ShortLink::parse(t), Err(Error::BadText { .. })))
        .expect("a last character with unused bits set");
    link_fail(
        &mut v,
        "fail_short_link_noncanonical_base32",
        "short_link_three_nodes with its last character changed so its unused low bits are not \
         zero.",
        noncanonical,
        "BadText",
    );
    link_fail(
        &mut v,
        "fail_short_link_version",
        "short_link_three_nodes's bytes with version 1.",
        text_of(&patch(&bytes, 0, &[2], &[1])),
        "UnsupportedVersion",
    );
    link_fail(
        &mut v,
        "fail_short_link_truncated_secret",
        "A version byte and 10 bytes: the secret is 16.",
        text_of(&[&[2u8][..], &[7; 10]].concat()),
        "Truncated",
    );
    link_fail(
        &mut v,
        "fail_short_link_trailing_byte",
        "short_link_three_nodes's bytes and one zero byte.",
        text_of(&[&bytes[..], &[0]].concat()),
        "TrailingBytes",
    );
    let five = ShortLink {
        secret: three.secret.clone(),
        nodes: (1..=5).map(|n| format!("http://n{n}")).collect(),
    };
    link_fail(
        &mut v,
        "fail_short_link_five_nodes",
        "A short link naming five nodes (1 to 4).",
        text_of(&five.to_bytes()),
        "TooLarge",
    );
    let none = ShortLink {
        secret: three.secret.clone(),
        nodes: vec![],
    };
    link_fail(
        &mut v,
        "fail_short_link_no_node",
        "A short link naming no node.",
        text_of(&none.to_bytes()),
        "Invalid",
    );
    let ftp = ShortLink {
        secret: three.secret.clone(),
        nodes: vec!["ftp://n1.latchkey.example".into()],
    };
    link_fail(
        &mut v,
        "fail_short_link_node_not_http",
        "A short link whose node is ftp://n1.latchkey.example.",
        text_of(&ftp.to_bytes()),
        "Invalid",
    );

    // Blobs that must not open.
    let blob_fail = |v: &mut Vectors, name: &str, description: &str, b: Vec<u8>, e: &str| {
        v.fail(
            name,
            "sealed_invitation_fail",
            description,
            SealedInvitation::open(&three, &b),
            e,
            json!({ "link": three.to_text().unwrap().as_str(), "blob": h(&b) }),
        );
    };
    let other = SealedInvitation::seal(&one, &invitation, &mut rng(603)).unwrap();
    blob_fail(
        &mut v,
        "fail_sealed_invitation_other_link",
        "A blob sealed for short_link_one_node, opened with short_link_three_nodes.",
        other,
        "DecryptFailed",
    );
    let mut flipped = blob.clone();
    flipped[100] ^= 1;
    blob_fail(
        &mut v,
        "fail_sealed_invitation_tampered",
        "sealed_invitation_two_doors with one ciphertext bit flipped.",
        flipped,
        "DecryptFailed",
    );
    blob_fail(
        &mut v,
        "fail_sealed_invitation_version",
        "sealed_invitation_two_doors with version 2.",
        patch(&blob, 0, &[1], &[2]),
        "UnsupportedVersion",
    );
    blob_fail(
        &mut v,
        "fail_sealed_invitation_short",
        "sealed_invitation_two_doors cut to 1,064 bytes (at least 1 + 24 + 1,024 + 16).",
        blob[..1064].to_vec(),
        "Truncated",
    );
    let mut huge = blob.clone();
    huge.resize(MAX_SEALED_INVITATION + 1, 0);
    blob_fail(
        &mut v,
        "fail_sealed_invitation_too_large",
        "sealed_invitation_two_doors padded with zeros to 16,426 bytes.",
        huge,
        "TooLarge",
    );
    // Sealed by hand with the right key: the id is the associated data, so another is refused.
    let nonce: [u8; 24] = random(&mut rng(604));
    let padded = pad::pad(&invitation.to_bytes(), &mut rng(605)).unwrap();
    let wrong_aad = kem::aead_seal(&three.key(), &nonce, &one.blob_id(), &padded);
    blob_fail(
        &mut v,
        "fail_sealed_invitation_other_id",
        "The invitation sealed under short_link_three_nodes's key but with short_link_one_node's \
         blob id as associated data (a blob moved to another id).",
        [&[1u8][..], &nonce, &wrong_aad].concat(),
        "DecryptFailed",
    );
    let unpadded = kem::aead_seal(
        &three.key(),
        &nonce,
        &three.blob_id(),
        &[&invitation.to_bytes()[..], &vec![0u8; 1024]].concat()[..1024],
    );
    blob_fail(
        &mut v,
        "fail_sealed_invitation_bad_padding",
        "The invitation's bytes sealed without the 4-byte length prefix, zero-filled to 1,024 \
         bytes: the length read from its first bytes does not fit.",
        [&[1u8][..], &nonce, &unpadded].concat(),
        "BadPadding",
    );
    let forged = Invitation {
        guest_secret: w.cleaner.to_bytes(),
        ..invitation.clone()
    };
    let padded = pad::pad(&forged.to_bytes(), &mut rng(606)).unwrap();
    let sealed = kem::aead_seal(&three.key(), &nonce, &three.blob_id(), &padded);
    blob_fail(
        &mut v,
        "fail_sealed_invitation_guest_key_not_subject",
        "An invitation whose guest secret is not the leaf grant's subject, sealed correctly: it \
         opens, then fails the invitation check (GrantInvalid), as a long link would.",
        [&[1u8][..], &nonce, &sealed].concat(),
        "GrantInvalid",
    );
    v
}
