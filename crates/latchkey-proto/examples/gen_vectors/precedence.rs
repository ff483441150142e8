//! precedence.json: inputs with several faults at once, each showing which error wins
//! (PROTOCOL.md §12). Every vector names the faults it carries; the error is the first rule, in
//! the spec's order, that the input breaks.

use crate::*;
use latchkey_proto::invite::{Invitation, INVITE_PREFIX};
use latchkey_proto::replay::ReplayWindow;

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    decode_order(w, &mut v);
    op_order(w, &mut v);
    grant_order(w, &mut v);
    command_order(w, &mut v);
    response_order(w, &mut v);
    envelope_order(w, &mut v);
    invitation_order(w, &mut v);
    v
}

/// Decoders: the whole input's cap, then fields in wire order, then trailing bytes.
fn decode_order(w: &World, v: &mut Vectors) {
    let c = commands(w);
    let good = c.owner.to_bytes();
    // version 1 | device 32 | sender 32 @33 | action str8 @65 ("unlock": 7 bytes) | args
    // bytes16 @72 (empty) | timestamp @74 | nonce @82 | challenge flag @98.
    const SENDER_AT: usize = 33;
    const ACTION_AT: usize = 65;
    const CHALLENGE_AT: usize = 98;
    let sender = w.a.public_key().to_bytes();
    assert_eq!(
        &good[ACTION_AT..ACTION_AT + 7],
        b"\x06unlock",
        "layout changed?"
    );

    let mut huge = patch(&good, 0, &[1], &[2]);
    huge.resize(SignedCommand::MAX_LEN + 1, 0);
    v.fail_decode(
        "fail_precedence_decode_cap_before_version",
        "SignedCommand",
        "command_owner_unlock with version byte 2, padded with zeros to one byte over the \
         16,380-byte cap: the cap is checked on the whole input before any field (TooLarge, not \
         UnsupportedVersion).",
        &huge,
        "TooLarge",
    );
    let cut = patch(&good, 0, &[1], &[2]);
    v.fail_decode(
        "fail_precedence_decode_version_before_truncation",
        "SignedCommand",
        "The first half of command_owner_unlock with version byte 2: the version is the first \
         field read (UnsupportedVersion, not Truncated).",
        &cut[..cut.len() / 2],
        "UnsupportedVersion",
    );
    let two = patch(
        &patch(&good, SENDER_AT, &sender, &not_a_point()),
        CHALLENGE_AT,
        &[0],
        &[2],
    );
    v.fail_decode(
        "fail_precedence_decode_wire_order",
        "SignedCommand",
        "command_owner_unlock with a sender that is not an Ed25519 point (offset 33) and a \
         challenge flag of 2 (offset 98): fields fail in wire order (BadPublicKey, not \
         UnknownTag).",
        &two,
        "BadPublicKey",
    );
    let mut trailing = patch(&good, CHALLENGE_AT, &[0], &[2]);
    trailing.push(0);
    v.fail_decode(
        "fail_precedence_decode_field_before_trailing",
        "SignedCommand",
        "command_owner_unlock with a challenge flag of 2 and one trailing byte (still under the \
         cap): a field's error wins over TrailingBytes, which is checked last.",
        &trailing,
        "UnknownTag",
    );
    let mut long_action = good[..ACTION_AT].to_vec();
    long_action.push(33);
    long_action.extend([0xff; 33]);
    long_action.extend(&good[ACTION_AT + 7..]);
    v.fail_decode(
        "fail_precedence_decode_length_before_utf8",
        "SignedCommand",
        "command_owner_unlock whose action is 33 bytes of 0xff: a string's length limit is \
         checked before its UTF-8 (TooLarge, not NotUtf8), and its UTF-8 before the \
         action-name rule (Invalid).",
        &long_action,
        "TooLarge",
    );
    let mut key = not_a_point().to_vec();
    key.push(0);
    v.fail_decode(
        "fail_precedence_decode_fixed_size_too_long",
        "PublicKey",
        "33 bytes whose first 32 are not an Ed25519 point: a fixed-size type's cap is its size, \
         so a longer input is TooLarge before the point is looked at (never TrailingBytes).",
        &key,
        "TooLarge",
    );
}

/// Ops extending a verified chain: device, sequence, link, signatures, then the kind's rules
/// (§3 owns these rules; these vectors pin the order between them).
fn op_order(w: &World, v: &mut Vectors) {
    let life = lifecycle(w);
    let genesis_only = &life[..1];
    let owned = &life[..2];
    let front = w.front_id();
    let head = |ops: &[Op]| ops.last().unwrap().id();
    let amend = || OpBody::AmendOwners(owners(&[&w.a, &w.b], 2));
    let mut fail = |name: &str, description: &str, prefix: &[Op], op: Op, e: &str| {
        let result = Chain::verify(prefix.to_vec())
            .unwrap()
            .check_next(&op)
            .map(|_| ());
        v.fail(
            name,
            "chain_fail",
            description,
            result,
            e,
            json!({
                "prefix": prefix.iter().map(|o| h(o.to_bytes())).collect::<Vec<_>>(),
                "op": h(op.to_bytes()),
            }),
        );
    };
    let signed_amend =
        |device, seq, prev| signed(Op::new(device, seq, prev, T0 + HOUR, amend()), &[&w.a]);
    fail(
        "fail_precedence_op_device_before_sequence",
        "Owner A's amend-owners op naming the back door, with sequence 3 instead of 2: the \
         device (WrongDevice) is checked first.",
        owned,
        signed_amend(w.back_id(), 3, head(owned)),
        "WrongDevice",
    );
    fail(
        "fail_precedence_op_sequence_before_link",
        "Owner A's amend-owners op with sequence 3 instead of 2 and a prev of zeros: \
         WrongSequence before BrokenLink.",
        owned,
        signed_amend(front, 3, OpId([0; 32])),
        "WrongSequence",
    );
    let mut relinked = signed_amend(front, 2, head(owned));
    relinked.prev = OpId([0; 32]);
    fail(
        "fail_precedence_op_link_before_signature",
        "Owner A's amend-owners op whose prev was set to zeros after signing (so its signature \
         no longer verifies either): BrokenLink before BadSignature.",
        owned,
        relinked,
        "BrokenLink",
    );
    let mut by_stranger = signed(
        Op::new(front, 2, head(owned), T0 + HOUR, amend()),
        &[&w.stranger],
    );
    by_stranger.signatures[0].signature.0[0] ^= 1;
    fail(
        "fail_precedence_op_signature_before_rules",
        "An amend-owners op signed only by a stranger (no say in it), with a flipped signature \
         bit: every signature is verified (BadSignature) before the kind's rules \
         (OpNotAllowed).",
        owned,
        by_stranger,
        "BadSignature",
    );
    fail(
        "fail_precedence_op_missing_before_extra",
        "A claim of the new front door signed by owner A and a stranger but not by the setup \
         key: a missing required signature (MissingSignature) is reported before a signature \
         by a key with no say (OpNotAllowed).",
        genesis_only,
        signed(
            Op::new(
                front,
                1,
                head(genesis_only),
                T0 + HOUR,
                OpBody::Claim(owners(&[&w.a], 1)),
            ),
            &[&w.a, &w.stranger],
        ),
        "MissingSignature",
    );
}

fn grant_chain_vector(
    v: &mut Vectors,
    name: &str,
    description: &str,
    ops: &[Op],
    grants: &[Grant],
    (device, sender, action, args, now): (DeviceId, PublicKey, &str, &[u8], u64),
    expected: &str,
) {
    let chain = Chain::verify(ops.to_vec()).unwrap();
    let result = grant::verify_grant_chain(
        grants,
        chain.state(),
        &GrantRequest {
            device: &device,
            sender: &sender,
            action,
            args,
            now_ms: now,
        },
    );
    v.fail(
        name,
        "grant_chain_fail",
        description,
        result,
        expected,
        json!({
            "chain_ops": ops.iter().map(|o| h(o.to_bytes())).collect::<Vec<_>>(),
            "grants": grants.iter().map(|g| h(g.to_bytes())).collect::<Vec<_>>(),
            "request": {
                "device": h(device.0),
                "sender": pk_hex(&sender),
                "action": action,
                "args": h(args),
                "now_ms": now,
            },
            "use_limits": [],
        }),
    );
}

/// Grant chains: the §4 steps in order; within step 4, grant by grant in chain order, and per
/// grant: device, action, not before, not after, revoked.
fn grant_order(w: &World, v: &mut Vectors) {
    let s = grant_setup(w);
    let front = w.front_id();
    let cleaner = w.cleaner.public_key();
    let mut tampered = s.child.clone();
    tampered.body.not_after_ms += 1;
    grant_chain_vector(
        v,
        "fail_precedence_grant_signature_before_window",
        "The host's grant to the cleaner with its window changed after signing, used when it has \
         also expired (T0+30h): structure (step 2, GrantInvalid) before time (step 4, \
         GrantExpired).",
        &s.front_ops,
        &[s.root.clone(), tampered],
        (front, cleaner, "unlock", b"", T0 + 30 * HOUR),
        "GrantInvalid",
    );
    grant_chain_vector(
        v,
        "fail_precedence_grant_device_before_action",
        "The cleaner's chain (the child covers only the front door) used on the back door for \
         `lock`, which the child does not allow: per grant, the device (DeviceNotGranted) is \
         checked before the action (ActionNotGranted).",
        &s.back_ops,
        &[s.root.clone(), s.child.clone()],
        (w.back_id(), cleaner, "lock", b"", T0 + 3 * HOUR),
        "DeviceNotGranted",
    );
    grant_chain_vector(
        v,
        "fail_precedence_grant_action_before_window",
        "The cleaner's chain used for `lock` (not in the child) at T0+30h (the child expired at \
         T0+26h; the root is still valid): per grant, the action (ActionNotGranted) before the \
         window (GrantExpired).",
        &s.front_ops,
        &[s.root.clone(), s.child.clone()],
        (front, cleaner, "lock", b"", T0 + 30 * HOUR),
        "ActionNotGranted",
    );
    grant_chain_vector(
        v,
        "fail_precedence_grant_earlier_grant_first",
        "The cleaner's chain used for `status` at T0+50h: the root has expired (T0+49h) and the \
         child does not allow `status`; grants are checked in chain order, so the root's \
         GrantExpired wins over the child's ActionNotGranted.",
        &s.front_ops,
        &[s.root.clone(), s.child.clone()],
        (front, cleaner, "status", b"", T0 + 50 * HOUR),
        "GrantExpired",
    );
    // The lifecycle's fourth op revokes A's grant to the host (front door, era of the claim).
    let ops = lifecycle(w)[..4].to_vec();
    let revoked = match &ops[3].body {
        OpBody::RevokeGrant { chain } => chain.last().unwrap().clone(),
        other => panic!("the lifecycle's op 3 is a revocation, not {other:?}"),
    };
    let host = w.host.public_key();
    grant_chain_vector(
        v,
        "fail_precedence_grant_window_before_revocation",
        "A's revoked grant to the host, used after it also expired (T0+50h): per grant, the \
         window (GrantExpired) is checked before revocation (GrantRevoked).",
        &ops,
        std::slice::from_ref(&revoked),
        (front, host, "unlock", b"", T0 + 50 * HOUR),
        "GrantExpired",
    );
    grant_chain_vector(
        v,
        "fail_precedence_grant_revocation_before_sender",
        "A's revoked grant to the host, sent by a stranger within its window: step 4 \
         (GrantRevoked) before step 5 (the sender is not the subject, GrantInvalid).",
        &ops,
        std::slice::from_ref(&revoked),
        (front, w.stranger.public_key(), "unlock", b"", T0 + 2 * HOUR),
        "GrantRevoked",
    );
    grant_chain_vector(
        v,
        "fail_precedence_grant_sender_before_arguments",
        "A's direct grant to the cleaner (no allowed arguments), sent by a stranger with \
         arguments: step 5 (GrantInvalid) before step 6 (ArgumentsNotGranted).",
        &s.front_ops,
        std::slice::from_ref(&s.direct),
        (
            front,
            w.stranger.public_key(),
            "unlock",
            b"x",
            T0 + 3 * HOUR,
        ),
        "GrantInvalid",
    );
}

/// A command's checks on the device, in §5.4's order: signature, device id, time window,
/// authority (command::authorize). The vector gives the chain and the clock; the test runs the
/// same steps in the same order.
fn command_order(w: &World, v: &mut Vectors) {
    let s = grant_setup(w);
    let window = ReplayWindow::default();
    let now = T0 + 3 * HOUR;
    let base = Command {
        device: w.front_id(),
        sender: w.a.public_key(),
        action: "unlock".into(),
        args: vec![],
        timestamp_ms: now,
        nonce: [0x42; 16],
        challenge: None,
        grants: vec![],
        reply_to: ReplyTo::Direct,
    };
    let run = |cmd: &SignedCommand| -> Result<(), Error> {
        let chain = Chain::verify(s.front_ops.clone()).unwrap();
        cmd.verify_signature()?;
        if cmd.command.device != chain.state().device {
            return Err(Error::WrongDevice {
                what: "command".into(),
                expected: chain.state().device.to_string(),
                found: cmd.command.device.to_string(),
            });
        }
        window.check_time(now, now, cmd.command.timestamp_ms)?;
        latchkey_proto::command::authorize(&cmd.command, chain.state(), now).map(|_| ())
    };
    let mut fail = |name: &str, description: &str, cmd: SignedCommand, e: &str| {
        v.fail(
            name,
            "command_checks_fail",
            description,
            run(&cmd),
            e,
            json!({
                "chain_ops": s.front_ops.iter().map(|o| h(o.to_bytes())).collect::<Vec<_>>(),
                "command": h(cmd.to_bytes()),
                "now_ms": now,
                "mark_ms": now,
                "window": { "max_age_ms": window.max_age_ms, "max_lead_ms": window.max_lead_ms },
            }),
        );
    };
    let mut bad_sig = Command {
        device: w.back_id(),
        timestamp_ms: now - 10 * MINUTE,
        ..base.clone()
    }
    .sign(&w.a)
    .unwrap();
    bad_sig.signature.0[0] ^= 1;
    fail(
        "fail_precedence_command_signature_before_device",
        "Owner A's command with a flipped signature bit, naming the back door, 10 minutes old, \
         checked by the front door: the signature is checked first (BadSignature).",
        bad_sig,
        "BadSignature",
    );
    fail(
        "fail_precedence_command_device_before_time",
        "Owner A's validly signed command naming the back door, 10 minutes old, checked by the \
         front door: the device id (WrongDevice) before the window (TooOld).",
        Command {
            device: w.back_id(),
            timestamp_ms: now - 10 * MINUTE,
            ..base.clone()
        }
        .sign(&w.a)
        .unwrap(),
        "WrongDevice",
    );
    fail(
        "fail_precedence_command_time_before_authority",
        "A stranger's validly signed command to the front door, 10 minutes old: the window \
         (TooOld) before authority (NotAuthorized).",
        Command {
            sender: w.stranger.public_key(),
            timestamp_ms: now - 10 * MINUTE,
            ..base.clone()
        }
        .sign(&w.stranger)
        .unwrap(),
        "TooOld",
    );
    fail(
        "fail_precedence_command_owner_check_ignores_grants",
        "A stranger sends the cleaner's grant chain (whose subject is the cleaner, not the \
         stranger), in the window: a command with grants is judged as a guest's, so the refusal \
         is the chain's (GrantInvalid, step 5), not NotAuthorized.",
        Command {
            sender: w.stranger.public_key(),
            grants: vec![s.root.clone(), s.child.clone()],
            ..base.clone()
        }
        .sign(&w.stranger)
        .unwrap(),
        "GrantInvalid",
    );
}

fn response_order(w: &World, v: &mut Vectors) {
    let c = commands(w);
    let identity = w.front.identity.public_key();
    let other_device = Response {
        device: w.back_id(),
        command: c.owner.command.id(),
        timestamp_ms: Some(T0 + 2 * HOUR),
        outcome: Outcome::Accepted,
        body: vec![],
    };
    let mut fail = |name: &str, description: &str, r: SignedResponse, cmd: CommandId, e: &str| {
        let bytes = r.to_bytes();
        v.fail(
            name,
            "signed_response_fail",
            description,
            SignedResponse::from_bytes(&bytes)
                .unwrap()
                .verify(&identity, &w.front_id(), &cmd)
                .map(|_| ()),
            e,
            json!({
                "bytes": h(&bytes),
                "device_identity": pk_hex(&identity),
                "device": h(w.front_id().0),
                "command_id": h(cmd.0),
            }),
        );
    };
    fail(
        "fail_precedence_response_signature_before_device",
        "A response naming the back door, answering another command, signed by a stranger: the \
         signature is checked first (BadSignature).",
        other_device.clone().sign(&w.stranger).unwrap(),
        c.guest.command.id(),
        "BadSignature",
    );
    fail(
        "fail_precedence_response_device_before_command",
        "A response signed by the front door's key, naming the back door and answering another \
         command: the device (WrongDevice) before the command id (Invalid).",
        other_device.sign(&w.front.identity).unwrap(),
        c.guest.command.id(),
        "WrongDevice",
    );
}

/// Envelope steps (§5.4): size, header (version, kind), KEM ciphertext, length, AEAD, unpad,
/// decode.
fn envelope_order(w: &World, v: &mut Vectors) {
    let c = commands(w);
    let (env, _) = envelope::seal_command(&c.owner, w.front.kem.public(), &mut rng(960)).unwrap();
    let keys_hex = h(w.front.to_secret_bytes().as_slice());
    let mut fail = |name: &str, description: &str, env: &[u8], e: &str| {
        v.fail(
            name,
            "sealed_command_fail",
            &format!("{description} Device keys: device_front_door; sealed anew on every run."),
            envelope::open_command(env, &w.front.kem),
            e,
            json!({ "device_secret_keys": keys_hex, "envelope": h(env) }),
        );
    };
    let mut huge = patch(&env, 0, &[1], &[2]);
    huge.resize(envelope::MAX_SEALED_COMMAND + 1, 0);
    fail(
        "fail_precedence_envelope_size_before_header",
        "An owner's sealed command with version byte 2, extended to 17,498 bytes: size first \
         (TooLarge).",
        &huge,
        "TooLarge",
    );
    fail(
        "fail_precedence_envelope_version_before_kind",
        "An owner's sealed command with version 2 and kind 2: UnsupportedVersion.",
        &patch(&env, 0, &[1, 1], &[2, 2]),
        "UnsupportedVersion",
    );
    let kind = patch(&env, 1, &[1], &[2]);
    fail(
        "fail_precedence_envelope_kind_before_length",
        "An owner's sealed command with kind 2 (a response), cut to 100 bytes: the kind \
         (UnknownTag) before the missing KEM ciphertext (Truncated).",
        &kind[..100],
        "UnknownTag",
    );
    let short = flip(&env[..COMMAND_HEADER_LEN + 1000], COMMAND_HEADER_LEN + 10);
    fail(
        "fail_precedence_envelope_length_before_decryption",
        "An owner's sealed command cut to its header and 1,000 ciphertext bytes, one of them \
         flipped: shorter than the smallest bucket plus tag (1,040) is Truncated before any \
         decryption (not DecryptFailed).",
        &short,
        "Truncated",
    );
    let mut long = env.clone();
    long.push(0);
    fail(
        "fail_precedence_envelope_no_trailing_bytes",
        "An owner's sealed command with one extra byte: the ciphertext is everything after the \
         nonce, so the extra byte is part of it and the AEAD fails (DecryptFailed); an envelope \
         never reports TrailingBytes.",
        &long,
        "DecryptFailed",
    );
}

fn invitation_order(w: &World, v: &mut Vectors) {
    let s = grant_setup(w);
    let base = Invitation {
        guest_secret: w.cleaner.to_bytes(),
        grants: vec![s.direct.clone()],
        guest_name: "Cleaner".into(),
        doors: vec![latchkey_proto::invite::InviteDoor {
            device: w.front_id(),
            name: "Front door".into(),
            addrs: vec![],
        }],
        nodes: vec!["https://n1.latchkey.example".into()],
    };
    base.check().unwrap();
    let link = |bytes: &[u8]| {
        format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(bytes)
        )
    };
    let mut fail = |name: &str, description: &str, text: String, e: &str| {
        v.fail(
            name,
            "invitation_link_fail",
            description,
            Invitation::parse_link(&text),
            e,
            json!({ "text": text }),
        );
    };
    let mut tampered = base.clone();
    tampered.grants[0].body.not_after_ms += 1;
    tampered.doors[0].device = w.back_id();
    tampered.guest_secret = w.host.to_bytes();
    fail(
        "fail_precedence_invite_signature_before_device",
        "A's grant to the cleaner with its window changed after signing, in an invitation to \
         the back door whose guest secret is the host's: per grant, signature and link \
         (GrantInvalid) before any grant's device (DeviceNotGranted), before the guest key.",
        link(&tampered.to_bytes()),
        "GrantInvalid",
    );
    let mut elsewhere = base.clone();
    elsewhere.doors[0].device = w.back_id();
    elsewhere.guest_secret = w.host.to_bytes();
    fail(
        "fail_precedence_invite_device_before_subject",
        "A's valid grant to the cleaner in an invitation to the back door whose guest secret is \
         the host's: the device (DeviceNotGranted) before the guest key (GrantInvalid).",
        link(&elsewhere.to_bytes()),
        "DeviceNotGranted",
    );
    let mut trailing = tampered.to_bytes();
    trailing.push(0);
    fail(
        "fail_precedence_invite_decode_before_check",
        "The tampered invitation above with one trailing byte: the link decodes completely \
         (TrailingBytes) before any grant is checked.",
        link(&trailing),
        "TrailingBytes",
    );
}
