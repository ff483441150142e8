//! grant.json: grants, delegation chains checked against a device's state, and what must be
//! refused.

use crate::*;

struct Request<'a> {
    device: DeviceId,
    sender: &'a SigningKey,
    action: &'a str,
    args: &'a [u8],
    now_ms: u64,
}

fn check_grants(ops: &[Op], grants: &[Grant], req: &Request<'_>) -> Result<Value, Error> {
    let chain = Chain::verify(ops.to_vec()).expect("a valid chain");
    let sender = req.sender.public_key();
    let approval = grant::verify_grant_chain(
        grants,
        chain.state(),
        &GrantRequest {
            device: &req.device,
            sender: &sender,
            action: req.action,
            args: req.args,
            now_ms: req.now_ms,
        },
    )?;
    Ok(json!(approval
        .use_limits
        .iter()
        .map(|(id, limit)| json!({"grant_id": h(id.0), "limit": limit}))
        .collect::<Vec<_>>()))
}

fn grant_chain_fields(ops: &[Op], grants: &[Grant], req: &Request<'_>) -> Value {
    json!({
        "chain_ops": ops.iter().map(|o| h(o.to_bytes())).collect::<Vec<_>>(),
        "grants": grants.iter().map(|g| h(g.to_bytes())).collect::<Vec<_>>(),
        "request": {
            "device": h(req.device.0),
            "sender": pk_hex(&req.sender.public_key()),
            "action": req.action,
            "args": h(req.args),
            "now_ms": req.now_ms,
        },
    })
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let s = grant_setup(w);
    for (name, g, description) in [
        (
            "grant_owner_to_host_delegable",
            &s.root,
            "Owner A's grant to the host: front and back door (each pinned to its current \
             claim), unlock/lock/status, T0+1h to T0+49h, no use limit, delegable one level, \
             one non-critical extension (tag 0x21).",
        ),
        (
            "grant_host_to_cleaner",
            &s.child,
            "The host's narrower grant to the cleaner: front door, unlock, T0+2h to T0+26h, at \
             most 3 uses, not delegable.",
        ),
        (
            "grant_owner_to_cleaner_direct",
            &s.direct,
            "Owner A's direct grant to the cleaner: front door, unlock/status, T0 to T0+24h, at \
             most 10 uses.",
        ),
    ] {
        g.verify_signature().unwrap();
        assert!(Grant::from_bytes(&g.to_bytes()).unwrap() == *g);
        v.ok(
            name,
            "grant",
            &format!("{description} T0 is 2026-01-01T00:00:00Z."),
            json!({ "grant": grant_json(g) }),
        );
    }

    let front = w.front_id();
    type Case<'a> = (&'a str, &'a str, &'a [Op], Vec<Grant>, Request<'a>);
    let chains: [Case; 3] = [
        (
            "grant_chain_delegated",
            "The cleaner unlocks the front door at T0+3h with the host's delegated grant: the \
             chain passes and the device must count the cleaner grant's 3 uses.",
            &s.front_ops,
            vec![s.root.clone(), s.child.clone()],
            Request {
                device: front,
                sender: &w.cleaner,
                action: "unlock",
                args: b"",
                now_ms: T0 + 3 * HOUR,
            },
        ),
        (
            "grant_chain_direct",
            "The cleaner asks the front door's status at T0+1h with the owner's direct grant.",
            &s.front_ops,
            vec![s.direct.clone()],
            Request {
                device: front,
                sender: &w.cleaner,
                action: "status",
                args: b"",
                now_ms: T0 + HOUR,
            },
        ),
        (
            "grant_chain_root_on_second_device",
            "The host locks the back door at T0+10h with the owner's grant, checked against the \
             back door's chain: no use limit to count.",
            &s.back_ops,
            vec![s.root.clone()],
            Request {
                device: w.back_id(),
                sender: &w.host,
                action: "lock",
                args: b"",
                now_ms: T0 + 10 * HOUR,
            },
        ),
    ];
    for (name, description, ops, grants, req) in chains {
        let limits = check_grants(ops, &grants, &req).unwrap();
        let mut fields = grant_chain_fields(ops, &grants, &req);
        fields["use_limits"] = limits;
        v.ok(name, "grant_chain", description, fields);
    }
    grant_chain_fail_vectors(w, &s, &mut v);

    let root = s.root.to_bytes();
    let mut flipped = s.root.clone();
    flipped.signature.0[5] ^= 1;
    let sig_fail = |v: &mut Vectors, name: &str, description: &str, g: &Grant| {
        let bytes = g.to_bytes();
        v.fail(
            name,
            "grant_signature_fail",
            description,
            Grant::from_bytes(&bytes).unwrap().verify_signature(),
            "BadSignature",
            json!({ "bytes": h(&bytes) }),
        );
    };
    sig_fail(
        &mut v,
        "fail_grant_signature_flipped_bit",
        "grant_owner_to_host_delegable with one bit of its signature flipped.",
        &flipped,
    );
    let mut widened = s.root.clone();
    widened.body.not_after_ms += 24 * HOUR;
    sig_fail(
        &mut v,
        "fail_grant_signature_widened_window",
        "grant_owner_to_host_delegable with its end moved one day later after signing.",
        &widened,
    );

    // Encodings that must not decode.
    v.fail_truncations("grant", "Grant", &root, "TrailingBytes");
    v.fail_decode(
        "fail_grant_version",
        "Grant",
        "grant_owner_to_host_delegable with version byte 2.",
        &patch(&root, 0, &[1], &[2]),
        "UnsupportedVersion",
    );
    v.fail_decode(
        "fail_grant_issuer_not_a_point",
        "Grant",
        "grant_owner_to_host_delegable whose issuer is not an Ed25519 point.",
        &patch(&root, 1, &w.a.public_key().to_bytes(), &not_a_point()),
        "BadPublicKey",
    );
    // version, issuer, subject, scope count, 2 scopes of 64, action count, first action length.
    let action_at = 1 + 32 + 32 + 1 + 2 * 64 + 1 + 1;
    v.fail_decode(
        "fail_grant_action_not_utf8",
        "Grant",
        "grant_owner_to_host_delegable whose first action has a byte that is not UTF-8.",
        &patch(&root, action_at, b"u", &[0xff]),
        "NotUtf8",
    );
    let unsigned = |body: GrantBody| [body.content_bytes(), vec![0u8; 64]].concat();
    let body = || s.child.body.clone();
    let shape = |v: &mut Vectors, name: &str, description: &str, b: GrantBody, e: &str| {
        v.fail_decode(name, "Grant", description, &unsigned(b), e);
    };
    shape(
        &mut v,
        "fail_grant_no_device",
        "A grant covering no device.",
        GrantBody {
            scope: vec![],
            ..body()
        },
        "Invalid",
    );
    shape(
        &mut v,
        "fail_grant_no_action",
        "A grant allowing no action.",
        GrantBody {
            actions: vec![],
            ..body()
        },
        "Invalid",
    );
    shape(
        &mut v,
        "fail_grant_ends_before_it_starts",
        "A grant whose not_after is before its not_before.",
        GrantBody {
            not_after_ms: T0,
            ..body()
        },
        "Invalid",
    );
    shape(
        &mut v,
        "fail_grant_bad_action_name",
        "A grant allowing \"Unlock\" (action names are lower case).",
        GrantBody {
            actions: vec!["Unlock".into()],
            ..body()
        },
        "Invalid",
    );
    shape(
        &mut v,
        "fail_grant_action_too_long",
        "A grant allowing a 33-byte action name (the limit is 32).",
        GrantBody {
            actions: vec!["a".repeat(33)],
            ..body()
        },
        "TooLarge",
    );
    shape(
        &mut v,
        "fail_grant_seventeen_devices",
        "A grant covering 17 devices (the limit is 16).",
        GrantBody {
            scope: (0..17u8)
                .map(|i| GrantScope {
                    device: DeviceId([i; 32]),
                    epoch: OpId([i; 32]),
                })
                .collect(),
            ..body()
        },
        "TooLarge",
    );
    shape(
        &mut v,
        "fail_grant_seventeen_actions",
        "A grant allowing 17 actions (the limit is 16).",
        GrantBody {
            actions: (0..17).map(|i| format!("action-{i}")).collect(),
            ..body()
        },
        "TooLarge",
    );
    let ext = |len: usize| Extension {
        tag: 0x22,
        value: vec![0x5a; len],
    };
    shape(
        &mut v,
        "fail_grant_nine_extensions",
        "A grant with 9 extensions (the limit is 8).",
        GrantBody {
            extensions: (0..9).map(|_| ext(1)).collect(),
            ..body()
        },
        "TooLarge",
    );
    shape(
        &mut v,
        "fail_grant_extension_too_long",
        "A grant with a 513-byte extension value (the limit is 512).",
        GrantBody {
            extensions: vec![ext(513)],
            ..body()
        },
        "TooLarge",
    );
    let no_limit = unsigned(GrantBody {
        use_limit: None,
        ..body()
    });
    // From the end: signature (64), salt (16), extension count (1), delegation depth (1), then
    // the use limit's presence flag.
    let flag_at = no_limit.len() - 64 - 16 - 1 - 1 - 1;
    v.fail_decode(
        "fail_grant_use_limit_flag",
        "Grant",
        "A grant whose use-limit presence flag is 2 (only 0 and 1 are valid).",
        &patch(&no_limit, flag_at, &[0], &[2]),
        "UnknownTag",
    );
    let mut huge = root.clone();
    huge.resize(4097, 0);
    v.fail_decode(
        "fail_grant_too_large",
        "Grant",
        "grant_owner_to_host_delegable padded with zeros to 4097 bytes: over the 4 KiB limit.",
        &huge,
        "TooLarge",
    );
    argument_vectors(w, &s, &mut v);
    v
}

/// Arguments a grant pins: Home Assistant-style JSON and an argv of two entries.
pub(crate) const ARG_FRONT: &[u8] = br#"{"entity_id":"lock.front"}"#;
pub(crate) const ARG_GARAGE: &[u8] = br#"{"entity_id":"lock.garage"}"#;
pub(crate) const ARG_HOLD: &[u8] = b"--hold-open\x005";

fn pinned(list: &[&[u8]]) -> Extension {
    AllowedArguments::new(list.iter().map(|a| a.to_vec()).collect())
        .unwrap()
        .to_extension()
}

/// Owner A's direct grant to the cleaner that pins two argument strings: front door, call and
/// unlock, T0 to T0+24h.
pub(crate) fn pinned_direct(w: &World, front_epoch: OpId) -> Grant {
    GrantBody {
        issuer: w.a.public_key(),
        subject: w.cleaner.public_key(),
        scope: vec![GrantScope {
            device: w.front_id(),
            epoch: front_epoch,
        }],
        actions: vec!["call".into(), "unlock".into()],
        not_before_ms: T0,
        not_after_ms: T0 + 24 * HOUR,
        use_limit: None,
        delegation_depth: 0,
        extensions: vec![pinned(&[ARG_FRONT, ARG_HOLD])],
        salt: random(&mut rng(430)),
    }
    .sign(&w.a)
    .unwrap()
}

fn argument_vectors(w: &World, s: &GrantSetup, v: &mut Vectors) {
    let ef = epoch_of(&s.front_ops);
    let direct = pinned_direct(w, ef);
    let pinned_root = GrantBody {
        actions: vec!["unlock".into()],
        extensions: vec![pinned(&[ARG_FRONT, ARG_HOLD])],
        salt: random(&mut rng(431)),
        ..s.root.body.clone()
    }
    .sign(&w.a)
    .unwrap();
    let child_pinning = |list: &[&[u8]]| {
        GrantBody {
            extensions: vec![pinned(list)],
            ..child_body(w, ef)
        }
        .sign(&w.host)
        .unwrap()
    };
    let narrow_child = child_pinning(&[ARG_HOLD]);
    for (name, g, description) in [
        (
            "grant_pinned_arguments",
            &direct,
            "Owner A's direct grant to the cleaner: front door, call/unlock, T0 to T0+24h, with \
             the critical allowed-arguments extension (tag 0x82) pinning two strings: \
             \"--hold-open\\x005\" (argv --hold-open 5) and {\"entity_id\":\"lock.front\"}.",
        ),
        (
            "grant_pinned_arguments_delegated",
            &narrow_child,
            "The host's grant to the cleaner (as grant_host_to_cleaner) pinning only \
             \"--hold-open\\x005\", a subset of what its parent pins.",
        ),
    ] {
        g.verify_signature().unwrap();
        assert!(Grant::from_bytes(&g.to_bytes()).unwrap() == *g);
        v.ok(
            name,
            "grant",
            &format!("{description} T0 is 2026-01-01T00:00:00Z."),
            json!({ "grant": grant_json(g) }),
        );
    }

    // The extension value on its own.
    for (name, list, description) in [
        (
            "allowed_arguments_two",
            vec![ARG_FRONT.to_vec(), ARG_HOLD.to_vec()],
            "Two strings, given in any order, encode in ascending byte order: \
             list8 of bytes16.",
        ),
        (
            "allowed_arguments_eight",
            (0..8u8).map(|i| vec![b'a' + i; 50]).collect(),
            "The most strings a list holds: eight of 50 bytes (425 bytes encoded).",
        ),
        (
            "allowed_arguments_one_long",
            vec![vec![0x7a; 256]],
            "One string of the longest length, 256 bytes.",
        ),
    ] {
        let mut reversed = list.clone();
        reversed.reverse();
        let built = AllowedArguments::new(reversed).unwrap();
        let value = built.encode();
        assert!(AllowedArguments::decode(&value).unwrap() == built);
        v.ok(
            name,
            "allowed_arguments",
            description,
            json!({
                "value": h(&value),
                "arguments": built.as_slice().iter().map(h).collect::<Vec<_>>(),
            }),
        );
    }
    let value_fail = |v: &mut Vectors, name: &str, description: &str, value: Vec<u8>, e: &str| {
        v.fail(
            name,
            "allowed_arguments_fail",
            description,
            AllowedArguments::decode(&value),
            e,
            json!({ "value": h(&value) }),
        );
    };
    let encode = |list: &[&[u8]]| {
        let mut w = latchkey_proto::codec::Writer::new();
        w.list8(list, |w, a| w.bytes16(a));
        w.into_inner()
    };
    value_fail(
        v,
        "fail_allowed_arguments_empty_list",
        "A list of no strings (leave the extension out to allow none).",
        encode(&[]),
        "Invalid",
    );
    value_fail(
        v,
        "fail_allowed_arguments_empty_string",
        "A list holding the empty string (always allowed, never listed).",
        encode(&[b"", ARG_FRONT]),
        "Invalid",
    );
    value_fail(
        v,
        "fail_allowed_arguments_unsorted",
        "Two strings in descending byte order.",
        encode(&[ARG_FRONT, ARG_HOLD]),
        "Invalid",
    );
    value_fail(
        v,
        "fail_allowed_arguments_duplicate",
        "The same string twice.",
        encode(&[ARG_HOLD, ARG_HOLD]),
        "Invalid",
    );
    let nine: Vec<Vec<u8>> = (0..9u8).map(|i| vec![b'a' + i]).collect();
    let nine: Vec<&[u8]> = nine.iter().map(Vec::as_slice).collect();
    value_fail(
        v,
        "fail_allowed_arguments_nine_strings",
        "Nine strings (the limit is 8).",
        encode(&nine),
        "TooLarge",
    );
    value_fail(
        v,
        "fail_allowed_arguments_string_too_long",
        "One string of 257 bytes (the limit is 256).",
        encode(&[&[0x7a; 257]]),
        "TooLarge",
    );
    let two = encode(&[ARG_HOLD, ARG_FRONT]);
    value_fail(
        v,
        "fail_allowed_arguments_trailing_byte",
        "allowed_arguments_two followed by one zero byte.",
        [two.clone(), vec![0]].concat(),
        "TrailingBytes",
    );
    value_fail(
        v,
        "fail_allowed_arguments_truncated",
        "allowed_arguments_two without its last byte.",
        two[..two.len() - 1].to_vec(),
        "Truncated",
    );
    let long: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 200]).collect();
    let long: Vec<&[u8]> = long.iter().map(Vec::as_slice).collect();
    value_fail(
        v,
        "fail_allowed_arguments_over_512_bytes",
        "Three strings of 200 bytes: 607 bytes encoded, over the 512-byte extension limit.",
        encode(&long),
        "TooLarge",
    );

    // Grants whose extension does not decode.
    let unsigned = |body: GrantBody| [body.content_bytes(), vec![0u8; 64]].concat();
    let with_ext = |extensions: Vec<Extension>| GrantBody {
        extensions,
        ..direct.body.clone()
    };
    v.fail_decode(
        "fail_grant_two_allowed_arguments",
        "Grant",
        "grant_pinned_arguments with a second allowed-arguments extension: a grant carries at \
         most one.",
        &unsigned(with_ext(vec![pinned(&[ARG_FRONT]), pinned(&[ARG_HOLD])])),
        "Invalid",
    );
    v.fail_decode(
        "fail_grant_allowed_arguments_unsorted",
        "Grant",
        "grant_pinned_arguments whose extension lists its strings in descending order.",
        &unsigned(with_ext(vec![Extension {
            tag: 0x82,
            value: encode(&[ARG_FRONT, ARG_HOLD]),
        }])),
        "Invalid",
    );

    // Chains checked with arguments.
    let cleaner = |action, args, now_ms| Request {
        device: w.front_id(),
        sender: &w.cleaner,
        action,
        args,
        now_ms,
    };
    let at = T0 + 3 * HOUR;
    type Case<'a> = (&'a str, &'a str, Vec<Grant>, Request<'a>);
    let passing: [Case; 4] = [
        (
            "grant_chain_pinned_arguments",
            "The cleaner calls with {\"entity_id\":\"lock.front\"}, exactly what \
             grant_pinned_arguments pins.",
            vec![direct.clone()],
            cleaner("call", ARG_FRONT, at),
        ),
        (
            "grant_chain_pinned_grant_no_arguments",
            "The cleaner unlocks without arguments under grant_pinned_arguments: empty arguments \
             are always allowed.",
            vec![direct.clone()],
            cleaner("unlock", b"", at),
        ),
        (
            "grant_chain_pinned_arguments_delegated",
            "The cleaner unlocks with \"--hold-open\\x005\" through the host: the owner's grant \
             pins it and another string, the host's grant pins only it; the cleaner grant's 3 \
             uses are counted.",
            vec![pinned_root.clone(), narrow_child.clone()],
            cleaner("unlock", ARG_HOLD, at),
        ),
        (
            "grant_chain_delegated_no_arguments_under_pins",
            "The cleaner unlocks without arguments through the same pinned chain.",
            vec![pinned_root.clone(), narrow_child.clone()],
            cleaner("unlock", b"", at),
        ),
    ];
    for (name, description, grants, req) in passing {
        let limits = check_grants(&s.front_ops, &grants, &req).unwrap();
        let mut fields = grant_chain_fields(&s.front_ops, &grants, &req);
        fields["use_limits"] = limits;
        v.ok(name, "grant_chain", description, fields);
    }
    let failing: [(Case, &str); 8] = [
        (
            (
                "fail_grant_chain_arguments_not_granted",
                "The cleaner unlocks with {\"entity_id\":\"lock.garage\"} under \
                 grant_owner_to_cleaner_direct, which pins nothing: a guest sends no arguments \
                 unless its grants pin them.",
                vec![s.direct.clone()],
                cleaner("unlock", ARG_GARAGE, T0 + HOUR),
            ),
            "ArgumentsNotGranted",
        ),
        (
            (
                "fail_grant_chain_arguments_not_pinned",
                "The cleaner calls with {\"entity_id\":\"lock.garage\"} under \
                 grant_pinned_arguments, which pins only other strings.",
                vec![direct.clone()],
                cleaner("call", ARG_GARAGE, at),
            ),
            "ArgumentsNotGranted",
        ),
        (
            (
                "fail_grant_chain_arguments_extended",
                "The cleaner calls with a pinned string plus one space: the match is exact.",
                vec![direct.clone()],
                cleaner("call", br#"{"entity_id":"lock.front"} "#, at),
            ),
            "ArgumentsNotGranted",
        ),
        (
            (
                "fail_grant_chain_arguments_of_parent_only",
                "The cleaner sends {\"entity_id\":\"lock.front\"} through the host: the \
                 owner's grant pins it, the host's grant to the cleaner does not.",
                vec![pinned_root.clone(), narrow_child.clone()],
                cleaner("unlock", ARG_FRONT, at),
            ),
            "ArgumentsNotGranted",
        ),
        (
            (
                "fail_grant_chain_child_adds_arguments",
                "The host pins an argument string for the cleaner though the owner's grant pins \
                 none: a delegated grant cannot allow arguments its parent does not.",
                vec![s.root.clone(), child_pinning(&[ARG_HOLD])],
                cleaner("unlock", b"", at),
            ),
            "GrantInvalid",
        ),
        (
            (
                "fail_grant_chain_child_wider_arguments",
                "The host pins {\"entity_id\":\"lock.garage\"} besides a string the owner \
                 pinned: not a subset of the parent's list.",
                vec![pinned_root.clone(), child_pinning(&[ARG_HOLD, ARG_GARAGE])],
                cleaner("unlock", ARG_HOLD, at),
            ),
            "GrantInvalid",
        ),
        (
            (
                "fail_grant_chain_action_before_arguments",
                "The cleaner locks with unpinned arguments under grant_pinned_arguments: the \
                 action is checked first, so the refusal is ActionNotGranted.",
                vec![direct.clone()],
                cleaner("lock", ARG_GARAGE, at),
            ),
            "ActionNotGranted",
        ),
        (
            (
                "fail_grant_chain_expired_before_arguments",
                "The cleaner calls with unpinned arguments after grant_pinned_arguments ended: \
                 time is checked before arguments, so the refusal is GrantExpired.",
                vec![direct.clone()],
                cleaner("call", ARG_GARAGE, T0 + 25 * HOUR),
            ),
            "GrantExpired",
        ),
    ];
    for ((name, description, grants, req), e) in failing {
        let result = check_grants(&s.front_ops, &grants, &req);
        v.fail(
            name,
            "grant_chain_fail",
            description,
            result,
            e,
            grant_chain_fields(&s.front_ops, &grants, &req),
        );
    }
}

fn grant_chain_fail_vectors(w: &World, s: &GrantSetup, v: &mut Vectors) {
    let front = w.front_id();
    let ef = epoch_of(&s.front_ops);
    let cleaner_unlock = |now_ms| Request {
        device: front,
        sender: &w.cleaner,
        action: "unlock",
        args: b"",
        now_ms,
    };
    let at = T0 + 3 * HOUR;
    let pair = || vec![s.root.clone(), s.child.clone()];
    let fail = |v: &mut Vectors,
                name: &str,
                description: &str,
                ops: &[Op],
                grants: Vec<Grant>,
                req: Request<'_>,
                e: &str| {
        let result = check_grants(ops, &grants, &req);
        v.fail(
            name,
            "grant_chain_fail",
            description,
            result,
            e,
            grant_chain_fields(ops, &grants, &req),
        );
    };
    fail(
        v,
        "fail_grant_chain_expired",
        "grant_chain_delegated at T0+27h: the cleaner's grant ended at T0+26h.",
        &s.front_ops,
        pair(),
        cleaner_unlock(T0 + 27 * HOUR),
        "GrantExpired",
    );
    fail(
        v,
        "fail_grant_chain_not_yet_valid",
        "grant_chain_delegated at T0+90min: the cleaner's grant starts at T0+2h.",
        &s.front_ops,
        pair(),
        cleaner_unlock(T0 + 90 * MINUTE),
        "GrantNotYetValid",
    );
    fail(
        v,
        "fail_grant_chain_action_not_granted",
        "grant_chain_delegated asking to lock: the cleaner may only unlock.",
        &s.front_ops,
        pair(),
        Request {
            action: "lock",
            ..cleaner_unlock(at)
        },
        "ActionNotGranted",
    );
    fail(
        v,
        "fail_grant_chain_device_not_granted",
        "grant_chain_delegated used on the back door: the cleaner's grant covers only the \
         front door.",
        &s.back_ops,
        pair(),
        Request {
            device: w.back_id(),
            ..cleaner_unlock(at)
        },
        "DeviceNotGranted",
    );
    let mut reclaimed = Chain::verify(s.front_ops.clone()).unwrap();
    extend(
        &mut reclaimed,
        T0 + HOUR,
        OpBody::Transfer(owners(&[&w.a], 1)),
        &[&w.a],
    );
    fail(
        v,
        "fail_grant_chain_previous_era",
        "grant_chain_delegated after owner A transferred the front door to A (a new era): \
         grants pinned to the old claim lapse.",
        reclaimed.ops(),
        pair(),
        cleaner_unlock(at),
        "GrantInvalid",
    );
    let mut revoked = Chain::verify(s.front_ops.clone()).unwrap();
    extend(
        &mut revoked,
        T0 + HOUR,
        OpBody::RevokeGrant { chain: pair() },
        &[&w.a],
    );
    fail(
        v,
        "fail_grant_chain_revoked",
        "grant_chain_delegated after owner A revoked the cleaner's grant on the chain.",
        revoked.ops(),
        pair(),
        cleaner_unlock(at),
        "GrantRevoked",
    );
    fail(
        v,
        "fail_grant_chain_wrong_sender",
        "grant_chain_delegated presented by the host, not the cleaner it ends with.",
        &s.front_ops,
        pair(),
        Request {
            sender: &w.host,
            ..cleaner_unlock(at)
        },
        "GrantInvalid",
    );
    let by_stranger = GrantBody {
        issuer: w.stranger.public_key(),
        ..s.root.body.clone()
    }
    .sign(&w.stranger)
    .unwrap();
    fail(
        v,
        "fail_grant_chain_issuer_not_owner",
        "A chain whose first grant is issued by a key that does not own the device.",
        &s.front_ops,
        vec![by_stranger, s.child.clone()],
        cleaner_unlock(at),
        "GrantInvalid",
    );
    let mut bad_child = s.child.clone();
    bad_child.signature.0[0] ^= 1;
    fail(
        v,
        "fail_grant_chain_bad_signature",
        "grant_chain_delegated with one bit of the cleaner grant's signature flipped.",
        &s.front_ops,
        vec![s.root.clone(), bad_child],
        cleaner_unlock(at),
        "GrantInvalid",
    );
    let not_delegable = GrantBody {
        delegation_depth: 0,
        ..s.root.body.clone()
    }
    .sign(&w.a)
    .unwrap();
    fail(
        v,
        "fail_grant_chain_delegation_not_allowed",
        "The host delegates a grant whose delegation depth is 0.",
        &s.front_ops,
        vec![not_delegable, s.child.clone()],
        cleaner_unlock(at),
        "GrantInvalid",
    );
    let child_with = |change: &dyn Fn(&mut GrantBody)| {
        let mut b = child_body(w, ef);
        change(&mut b);
        b.sign(&w.host).unwrap()
    };
    let narrower_fails: [(&str, &str, Grant); 5] = [
        (
            "fail_grant_chain_depth_not_narrower",
            "The cleaner's grant keeps delegation depth 1, as deep as the host's.",
            child_with(&|b| b.delegation_depth = 1),
        ),
        (
            "fail_grant_chain_wider_device",
            "The cleaner's grant also covers a device the host's grant does not.",
            child_with(&|b| {
                b.scope.push(GrantScope {
                    device: DeviceId([7; 32]),
                    epoch: OpId([7; 32]),
                })
            }),
        ),
        (
            "fail_grant_chain_wider_actions",
            "The cleaner's grant also allows open-garage, which the host's grant does not.",
            child_with(&|b| b.actions.push("open-garage".into())),
        ),
        (
            "fail_grant_chain_wider_window",
            "The cleaner's grant ends at T0+50h, after the host's (T0+49h).",
            child_with(&|b| b.not_after_ms = T0 + 50 * HOUR),
        ),
        (
            "fail_grant_chain_critical_extension",
            "The cleaner's grant carries a critical extension (tag 0xc1) this version does not \
             know.",
            child_with(&|b| {
                b.extensions.push(Extension {
                    tag: 0xc1,
                    value: vec![1],
                })
            }),
        ),
    ];
    for (name, description, child) in narrower_fails {
        fail(
            v,
            name,
            description,
            &s.front_ops,
            vec![s.root.clone(), child],
            cleaner_unlock(at),
            "GrantInvalid",
        );
    }
    let limited_root = GrantBody {
        use_limit: Some(5),
        ..s.root.body.clone()
    }
    .sign(&w.a)
    .unwrap();
    let unlimited_child = child_with(&|b| b.use_limit = None);
    fail(
        v,
        "fail_grant_chain_drops_use_limit",
        "The host's grant allows 5 uses; the cleaner's has no limit.",
        &s.front_ops,
        vec![limited_root, unlimited_child],
        cleaner_unlock(at),
        "GrantInvalid",
    );
    let from_stranger = GrantBody {
        issuer: w.stranger.public_key(),
        ..child_body(w, ef)
    }
    .sign(&w.stranger)
    .unwrap();
    fail(
        v,
        "fail_grant_chain_broken_delegation",
        "The second grant is issued by a key other than the first grant's subject.",
        &s.front_ops,
        vec![s.root.clone(), from_stranger],
        cleaner_unlock(at),
        "GrantInvalid",
    );
    fail(
        v,
        "fail_grant_chain_empty",
        "An empty grant chain.",
        &s.front_ops,
        vec![],
        cleaner_unlock(at),
        "GrantInvalid",
    );
    fail(
        v,
        "fail_grant_chain_too_long",
        "A chain of 5 grants (the limit is 4).",
        &s.front_ops,
        vec![s.direct.clone(); 5],
        cleaner_unlock(at),
        "GrantInvalid",
    );
    fail(
        v,
        "fail_grant_chain_unowned_device",
        "grant_chain_direct checked against a device that has no owner yet.",
        &s.front_ops[..1],
        vec![s.direct.clone()],
        Request {
            action: "status",
            ..cleaner_unlock(T0 + HOUR)
        },
        "GrantInvalid",
    );
}
