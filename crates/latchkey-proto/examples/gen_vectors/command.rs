//! command.json: signed commands, sealed envelopes, and what must be refused.

use crate::*;

/// An envelope built by hand around any plaintext, for envelopes the library would not make.
fn seal_raw(
    kem_public: &KemPublicKey,
    plaintext: &[u8],
    aad_override: Option<&[u8]>,
    seed: u64,
) -> Vec<u8> {
    let mut r = rng(seed);
    let (shared, ct) = kem::encapsulate(kem_public, &mut r).unwrap();
    let nonce: [u8; 24] = random(&mut r);
    let header = [&[1u8, 1][..], &ct.to_bytes(), &nonce].concat();
    let sealed = kem::aead_seal(
        &shared.command_key(),
        &nonce,
        aad_override.unwrap_or(&header),
        plaintext,
    );
    [header, sealed].concat()
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let c = commands(w);
    let described = [
        (
            "command_owner_unlock",
            &c.owner,
            "Owner A unlocks the front door: no arguments, no grants, reply on the same \
             connection.",
        ),
        (
            "command_guest_unlock_with_grants",
            &c.guest,
            "The cleaner unlocks the front door with the host's delegated grant chain \
             (grant_owner_to_host_delegable, grant_host_to_cleaner), JSON arguments, reply to a \
             relay mailbox.",
        ),
        (
            "command_owner_status_with_challenge",
            &c.challenge,
            "Owner A asks a device whose clock is not set for its status, echoing the challenge \
             the device handed out.",
        ),
        (
            "command_guest_1k_arguments",
            &c.big,
            "A guest command with 1,024 bytes of arguments: it pads to the 4,096-byte bucket.",
        ),
        (
            "command_guest_large_grants",
            &c.huge,
            "A guest command whose two grants carry seven 500-byte extensions each: it pads to \
             the 16,384-byte bucket.",
        ),
    ];
    for (name, cmd, description) in described {
        cmd.verify_signature().unwrap();
        assert!(SignedCommand::from_bytes(&cmd.to_bytes()).unwrap() == *cmd);
        v.ok(
            name,
            "signed_command",
            description,
            json!({ "command": command_json(cmd) }),
        );
    }

    let keys_hex = h(w.front.to_secret_bytes().as_slice());
    let mut r = rng(510);
    let mut envelopes = Vec::new();
    for (name, cmd, bucket, what) in [
        (
            "sealed_owner_unlock",
            &c.owner,
            1024,
            "command_owner_unlock",
        ),
        (
            "sealed_guest_unlock_with_grants",
            &c.guest,
            1024,
            "command_guest_unlock_with_grants",
        ),
        (
            "sealed_guest_4k_bucket",
            &c.big,
            4096,
            "command_guest_1k_arguments",
        ),
        (
            "sealed_guest_16k_bucket",
            &c.huge,
            16384,
            "command_guest_large_grants",
        ),
    ] {
        let (env, _) = envelope::seal_command(cmd, w.front.kem.public(), &mut r).unwrap();
        let (opened, mut derived) = open_with(&w.front, &env).unwrap();
        assert!(opened == *cmd);
        assert_eq!(derived["padded_len"], bucket);
        let obj = derived.as_object_mut().unwrap();
        obj.insert("device_secret_keys".into(), keys_hex.clone().into());
        obj.insert("envelope".into(), h(&env).into());
        obj.insert("command".into(), h(cmd.to_bytes()).into());
        obj.insert("command_id".into(), h(cmd.command.id().0).into());
        v.ok(
            name,
            "sealed_command",
            &format!(
                "{what} sealed to the front door ({bucket}-byte bucket). Opens with \
                 `device_secret_keys` (device_front_door's key file) to `command`; \
                 `command_key`/`response_key` are what the hybrid KEM yields for this \
                 envelope. Sealed anew on every generator run (sntrup761 uses OS randomness)."
            ),
            derived,
        );
        envelopes.push(env);
    }
    sealed_fail_vectors(w, &c, &envelopes[0], &mut v);

    // Commands that decode but whose signature fails.
    let sig_fail = |v: &mut Vectors, name: &str, description: &str, bytes: Vec<u8>| {
        let decoded = SignedCommand::from_bytes(&bytes).unwrap();
        v.fail(
            name,
            "signed_command_fail",
            description,
            decoded.verify_signature().map(|_| ()),
            "BadSignature",
            json!({ "bytes": h(&bytes) }),
        );
    };
    let owner = c.owner.to_bytes();
    sig_fail(
        &mut v,
        "fail_command_signature_flipped_bit",
        "command_owner_unlock with one bit of its signature flipped.",
        flip(&owner, owner.len() - 1),
    );
    // version (1), device (32), sender (32), action length + "unlock" (7), args length (2).
    const TIMESTAMP_AT: usize = 1 + 32 + 32 + 7 + 2;
    sig_fail(
        &mut v,
        "fail_command_signature_timestamp_changed",
        "command_owner_unlock with its timestamp moved one millisecond after signing.",
        patch(
            &owner,
            TIMESTAMP_AT,
            &(T0 + 2 * HOUR).to_be_bytes(),
            &(T0 + 2 * HOUR + 1).to_be_bytes(),
        ),
    );
    sig_fail(
        &mut v,
        "fail_command_signature_other_sender",
        "command_owner_unlock claiming to be from owner B, with A's signature.",
        patch(
            &owner,
            33,
            &w.a.public_key().to_bytes(),
            &w.b.public_key().to_bytes(),
        ),
    );

    // Encodings that must not decode.
    v.fail_truncations("command", "SignedCommand", &owner, "TrailingBytes");
    v.fail_truncations(
        "command_with_grants",
        "SignedCommand",
        &c.guest.to_bytes(),
        "TrailingBytes",
    );
    v.fail_decode(
        "fail_command_version",
        "SignedCommand",
        "command_owner_unlock with version byte 0.",
        &patch(&owner, 0, &[1], &[0]),
        "UnsupportedVersion",
    );
    v.fail_decode(
        "fail_command_sender_not_a_point",
        "SignedCommand",
        "command_owner_unlock whose sender is not an Ed25519 point.",
        &patch(&owner, 33, &w.a.public_key().to_bytes(), &not_a_point()),
        "BadPublicKey",
    );
    v.fail_decode(
        "fail_command_action_upper_case",
        "SignedCommand",
        "command_owner_unlock with action \"Unlock\".",
        &patch(&owner, 66, b"u", b"U"),
        "Invalid",
    );
    v.fail_decode(
        "fail_command_action_not_utf8",
        "SignedCommand",
        "command_owner_unlock whose action has a byte that is not UTF-8.",
        &patch(&owner, 66, b"u", &[0xff]),
        "NotUtf8",
    );
    // After the timestamp: nonce (16), challenge flag, grant count, reply-to tag.
    let challenge_at = TIMESTAMP_AT + 8 + 16;
    v.fail_decode(
        "fail_command_challenge_flag",
        "SignedCommand",
        "command_owner_unlock whose challenge presence flag is 2.",
        &patch(&owner, challenge_at, &[0, 0, 0], &[2]),
        "UnknownTag",
    );
    v.fail_decode(
        "fail_command_reply_to_tag",
        "SignedCommand",
        "command_owner_unlock whose reply-to tag is 2 (known: 0 direct, 1 mailbox).",
        &patch(&owner, challenge_at + 2, &[0], &[2]),
        "UnknownTag",
    );
    let unchecked = |cmd: Command| {
        SignedCommand {
            command: cmd,
            signature: Signature([0; 64]),
        }
        .to_bytes()
    };
    v.fail_decode(
        "fail_command_action_too_long",
        "SignedCommand",
        "A command with a 33-byte action name (the limit is 32).",
        &unchecked(Command {
            action: "a".repeat(33),
            ..c.owner.command.clone()
        }),
        "TooLarge",
    );
    v.fail_decode(
        "fail_command_arguments_too_long",
        "SignedCommand",
        "A command with 1,025 bytes of arguments (the limit is 1,024).",
        &unchecked(Command {
            args: vec![0; 1025],
            ..c.owner.command.clone()
        }),
        "TooLarge",
    );
    v.fail_decode(
        "fail_command_five_grants",
        "SignedCommand",
        "A command carrying 5 grants (the limit is 4).",
        &unchecked(Command {
            grants: vec![c.guest.command.grants[0].clone(); 5],
            ..c.owner.command.clone()
        }),
        "TooLarge",
    );
    // Every field within its limit, the whole grant over 4,096 bytes: an issuer's `sign`
    // refuses it, so its signature here is zeros; the decoder refuses it by size first.
    let mut fat = c.guest.command.grants[0].clone();
    fat.body.extensions = (0..8)
        .map(|i| Extension {
            tag: 0x20 + i,
            value: vec![i; 512],
        })
        .collect();
    fat.signature = Signature([0; 64]);
    let fat_len = fat.to_bytes().len();
    assert!(fat_len > Grant::MAX_LEN, "{fat_len}");
    v.fail_decode(
        "fail_command_grant_over_4096_bytes",
        "SignedCommand",
        &format!(
            "A command carrying one grant of {fat_len} bytes (eight non-critical 512-byte \
             extensions, each field within its limit): the 4,096-byte grant cap holds for a grant \
             inside a command too (TooLarge), not only for a grant decoded alone."
        ),
        &unchecked(Command {
            grants: vec![fat],
            ..c.owner.command.clone()
        }),
        "TooLarge",
    );
    let mut huge = owner.clone();
    huge.resize(pad::MAX_MESSAGE + 1, 0);
    v.fail_decode(
        "fail_command_too_large",
        "SignedCommand",
        "command_owner_unlock padded with zeros to 16,381 bytes: larger than the largest \
         padding bucket holds.",
        &huge,
        "TooLarge",
    );
    let ct = &envelopes[0][KEM_CT_AT..KEM_CT_AT + kem::KEM_CIPHERTEXT_LEN];
    v.fail_truncations("kem_ciphertext", "KemCiphertext", ct, "TooLarge");
    authorize_vectors(w, &c, &mut v);
    v
}

/// `command::authorize` on signed commands, against the front door's chain after its first
/// claim (owner A).
fn authorize_vectors(w: &World, c: &Commands, v: &mut Vectors) {
    use crate::files::grant::{pinned_direct, ARG_FRONT, ARG_GARAGE};
    use latchkey_proto::command::authorize;
    let s = grant_setup(w);
    let state = Chain::verify(s.front_ops.clone()).unwrap().state().clone();
    let fields = |cmd: &SignedCommand, now_ms: u64| {
        json!({
            "chain_ops": s.front_ops.iter().map(|o| h(o.to_bytes())).collect::<Vec<_>>(),
            "command": h(cmd.to_bytes()),
            "now_ms": now_ms,
        })
    };
    let mut r = rng(520);
    let at = T0 + 3 * HOUR;
    let owner_args = Command {
        action: "call".into(),
        args: ARG_GARAGE.to_vec(),
        timestamp_ms: at,
        nonce: random(&mut r),
        ..c.owner.command.clone()
    }
    .sign(&w.a)
    .unwrap();
    let guest = |action: &str, args: &[u8], grants: Vec<Grant>, r: &mut ChaCha20Rng| {
        Command {
            sender: w.cleaner.public_key(),
            action: action.into(),
            args: args.to_vec(),
            timestamp_ms: at,
            nonce: random(r),
            grants,
            ..c.owner.command.clone()
        }
        .sign(&w.cleaner)
        .unwrap()
    };
    let pinned = vec![pinned_direct(w, state.epoch)];
    let ok = [
        (
            "authorize_owner_with_arguments",
            "Owner A calls with {\"entity_id\":\"lock.garage\"}: owners may pass any \
             arguments.",
            owner_args,
        ),
        (
            "authorize_guest_pinned_arguments",
            "The cleaner calls with {\"entity_id\":\"lock.front\"} under \
             grant_pinned_arguments, which pins exactly that string.",
            guest("call", ARG_FRONT, pinned.clone(), &mut r),
        ),
        (
            "authorize_guest_no_arguments",
            "The cleaner unlocks without arguments under grant_owner_to_cleaner_direct.",
            guest("unlock", b"", vec![s.direct.clone()], &mut r),
        ),
    ];
    for (name, description, cmd) in ok {
        let mut f = fields(&cmd, at);
        f["authorization"] = authorization_json(authorize(&cmd.command, &state, at).unwrap());
        v.ok(name, "authorize", description, f);
    }
    redeem_vectors(w, &state, &fields, v);
    let fail = [
        (
            "fail_authorize_guest_http_body",
            "The cleaner, granted unlock and status, unlocks with {\"entity_id\":\"lock.garage\"} \
             (an http action would POST it with the owner's token): refused, the grant pins no \
             arguments.",
            guest("unlock", ARG_GARAGE, vec![s.direct.clone()], &mut r),
            at,
            "ArgumentsNotGranted",
        ),
        (
            "fail_authorize_guest_argv",
            "The cleaner unlocks with \"--guest-flag\\x00/etc/shadow\" (an exec action would \
             pass two argv entries): refused.",
            guest(
                "unlock",
                b"--guest-flag\x00/etc/shadow",
                vec![s.direct.clone()],
                &mut r,
            ),
            at,
            "ArgumentsNotGranted",
        ),
        (
            "fail_authorize_guest_arguments_not_pinned",
            "The cleaner calls with {\"entity_id\":\"lock.garage\"} under \
             grant_pinned_arguments, which pins another string.",
            guest("call", ARG_GARAGE, pinned.clone(), &mut r),
            at,
            "ArgumentsNotGranted",
        ),
        (
            "fail_authorize_command_guest_unlock_with_grants",
            "command_guest_unlock_with_grants itself: its JSON arguments are pinned by neither \
             grant of its chain, so a device refuses it.",
            c.guest.clone(),
            at,
            "ArgumentsNotGranted",
        ),
        (
            "fail_authorize_stranger_with_arguments",
            "A key that is neither an owner nor holds a grant sends arguments: NotAuthorized.",
            Command {
                sender: w.stranger.public_key(),
                action: "call".into(),
                args: ARG_FRONT.to_vec(),
                timestamp_ms: at,
                nonce: random(&mut r),
                ..c.owner.command.clone()
            }
            .sign(&w.stranger)
            .unwrap(),
            at,
            "NotAuthorized",
        ),
    ];
    for (name, description, cmd, now_ms, e) in fail {
        v.fail(
            name,
            "authorize_fail",
            description,
            authorize(&cmd.command, &state, now_ms),
            e,
            fields(&cmd, now_ms),
        );
    }
}

fn authorization_json(a: latchkey_proto::command::Authorization) -> Value {
    use latchkey_proto::command::Authorization;
    match a {
        Authorization::Owner => json!("owner"),
        Authorization::Guest(a) => json!({
            "guest_use_limits": a
                .use_limits
                .iter()
                .map(|(id, limit)| json!({"grant_id": h(id.0), "limit": limit}))
                .collect::<Vec<_>>(),
        }),
        Authorization::Redeem { grant, key } => json!({
            "redeem": {"grant_id": h(grant.0), "key": pk_hex(&key)},
        }),
    }
}

/// Bind-on-first-use (grant extension 0x83, docs/PROTOCOL.md §10): owner A's grant to a
/// one-time link key, redeemed by the guest's phone key K. `bindings` is what the device has
/// stored (grant id → bound key).
fn redeem_vectors(
    w: &World,
    state: &latchkey_proto::chain::ChainState,
    fields: &dyn Fn(&SignedCommand, u64) -> Value,
    v: &mut Vectors,
) {
    use latchkey_proto::command::authorize_bound;
    use latchkey_proto::grant::{GrantId, EXT_BIND_ON_FIRST_USE, REDEEM_ACTION};
    use latchkey_proto::redeem::RedeemRequest;
    let mut r = rng(530);
    let link_key = SigningKey::generate(&mut r);
    let phone = SigningKey::generate(&mut r);
    let other_phone = SigningKey::generate(&mut r);
    let bound_grant = GrantBody {
        issuer: w.a.public_key(),
        subject: link_key.public_key(),
        scope: vec![GrantScope {
            device: w.front_id(),
            epoch: state.epoch,
        }],
        actions: vec!["unlock".into()],
        not_before_ms: T0 + 2 * HOUR,
        not_after_ms: T0 + 24 * HOUR,
        use_limit: Some(3),
        delegation_depth: 0,
        extensions: vec![Extension {
            tag: EXT_BIND_ON_FIRST_USE,
            value: vec![],
        }],
        salt: random(&mut r),
    }
    .sign(&w.a)
    .unwrap();
    let leaf = bound_grant.id();
    let at = T0 + 3 * HOUR;
    let cmd = |key: &SigningKey, action: &str, args: Vec<u8>, ts: u64, r: &mut ChaCha20Rng| {
        Command {
            device: w.front_id(),
            sender: key.public_key(),
            action: action.into(),
            args,
            timestamp_ms: ts,
            nonce: random(r),
            challenge: None,
            grants: vec![bound_grant.clone()],
            reply_to: ReplyTo::Direct,
        }
        .sign(key)
        .unwrap()
    };
    let redeem_args = |k: &SigningKey| RedeemRequest::sign(k, &w.front_id(), &leaf).to_args();
    let bound_to_phone = vec![(leaf, phone.public_key())];
    let none: Vec<(GrantId, PublicKey)> = vec![];
    let run = |cmd: &SignedCommand, now: u64, bindings: &[(GrantId, PublicKey)]| {
        let lookup = |id: &GrantId| bindings.iter().find(|(g, _)| g == id).map(|(_, k)| *k);
        authorize_bound(&cmd.command, state, now, &lookup)
    };
    let with_bindings = |cmd: &SignedCommand, now: u64, bindings: &[(GrantId, PublicKey)]| {
        let mut f = fields(cmd, now);
        f["bindings"] = json!(bindings
            .iter()
            .map(|(g, k)| json!({"grant_id": h(g.0), "key": pk_hex(k)}))
            .collect::<Vec<_>>());
        f
    };
    let ok = [
        (
            "authorize_redeem_unbound",
            "The link key of owner A's bind-on-first-use grant (0x83, unlock, 3 uses) redeems it              for the phone key K: args are K and K's signature over              \"latchkey/v1/redeem\\0\" || device id || grant id. No binding yet: Redeem.",
            cmd(&link_key, REDEEM_ACTION, redeem_args(&phone), at, &mut r),
            at,
            none.clone(),
        ),
        (
            "authorize_redeem_before_window",
            "The same redemption an hour before the grant's window opens: a guest redeems when              accepting the link, which may be days before the stay.",
            cmd(&link_key, REDEEM_ACTION, redeem_args(&phone), at - 2 * HOUR, &mut r),
            at - 2 * HOUR,
            none.clone(),
        ),
        (
            "authorize_redeem_again_same_key",
            "The redemption repeated after the device bound the grant to K: idempotent, Redeem              again (the device keeps the binding it has).",
            cmd(&link_key, REDEEM_ACTION, redeem_args(&phone), at, &mut r),
            at,
            bound_to_phone.clone(),
        ),
        (
            "authorize_bound_phone_unlocks",
            "K unlocks with the bound grant's chain: K is the grant's effective subject, so it              is a guest with the grant's use limit.",
            cmd(&phone, "unlock", vec![], at, &mut r),
            at,
            bound_to_phone.clone(),
        ),
    ];
    for (name, description, cmd, now, bindings) in ok {
        let mut f = with_bindings(&cmd, now, &bindings);
        f["authorization"] = authorization_json(run(&cmd, now, &bindings).unwrap());
        v.ok(name, "authorize", description, f);
    }
    let fail = [
        (
            "fail_authorize_not_redeemed",
            "The link key unlocks before any redemption: NotRedeemed (reject code 21).",
            cmd(&link_key, "unlock", vec![], at, &mut r),
            at,
            none.clone(),
            "NotRedeemed",
        ),
        (
            "fail_authorize_link_key_after_redeem",
            "The link key unlocks after the grant was bound to K (a link leaked after              redemption): AlreadyRedeemed (reject code 22).",
            cmd(&link_key, "unlock", vec![], at, &mut r),
            at,
            bound_to_phone.clone(),
            "AlreadyRedeemed",
        ),
        (
            "fail_authorize_redeem_by_another_phone",
            "The link key redeems for another phone key after the grant was bound to K:              AlreadyRedeemed.",
            cmd(&link_key, REDEEM_ACTION, redeem_args(&other_phone), at, &mut r),
            at,
            bound_to_phone.clone(),
            "AlreadyRedeemed",
        ),
        (
            "fail_authorize_other_phone_unlocks",
            "Another phone key unlocks with the bound grant's chain: not the grant's effective              subject (GrantInvalid, as a grant issued to another key).",
            cmd(&other_phone, "unlock", vec![], at, &mut r),
            at,
            bound_to_phone.clone(),
            "GrantInvalid",
        ),
        (
            "fail_authorize_bound_phone_redeems",
            "K itself sends the redemption: only the link key (the grant's subject) redeems.",
            cmd(&phone, REDEEM_ACTION, redeem_args(&phone), at, &mut r),
            at,
            bound_to_phone.clone(),
            "GrantInvalid",
        ),
        (
            "fail_authorize_redeem_signed_for_another_grant",
            "A redemption whose K signature covers another grant id: BadSignature.",
            cmd(
                &link_key,
                REDEEM_ACTION,
                RedeemRequest::sign(&phone, &w.front_id(), &GrantId([7; 32])).to_args(),
                at,
                &mut r,
            ),
            at,
            none.clone(),
            "BadSignature",
        ),
        (
            "fail_authorize_redeem_short_args",
            "A redemption with 95 bytes of arguments: Invalid.",
            cmd(
                &link_key,
                REDEEM_ACTION,
                redeem_args(&phone)[..95].to_vec(),
                at,
                &mut r,
            ),
            at,
            none.clone(),
            "Invalid",
        ),
        (
            "fail_authorize_redeem_expired",
            "A redemption after the grant ended, the grant bound to another phone: the grant's              own checks come first (GrantExpired, not AlreadyRedeemed).",
            cmd(
                &link_key,
                REDEEM_ACTION,
                redeem_args(&other_phone),
                T0 + 25 * HOUR,
                &mut r,
            ),
            T0 + 25 * HOUR,
            bound_to_phone.clone(),
            "GrantExpired",
        ),
        (
            "fail_authorize_not_redeemed_not_yet_valid",
            "The link key unlocks before the window, unredeemed: GrantNotYetValid before              NotRedeemed.",
            cmd(&link_key, "unlock", vec![], at - 2 * HOUR, &mut r),
            at - 2 * HOUR,
            none.clone(),
            "GrantNotYetValid",
        ),
    ];
    for (name, description, cmd, now, bindings, e) in fail {
        v.fail(
            name,
            "authorize_fail",
            description,
            run(&cmd, now, &bindings),
            e,
            with_bindings(&cmd, now, &bindings),
        );
    }
}

fn sealed_fail_vectors(w: &World, c: &Commands, env: &[u8], v: &mut Vectors) {
    let keys_hex = h(w.front.to_secret_bytes().as_slice());
    let fail = |v: &mut Vectors, name: &str, description: &str, env: &[u8], e: &str| {
        v.fail(
            name,
            "sealed_command_fail",
            &format!("{description} Device keys: device_front_door."),
            envelope::open_command(env, &w.front.kem),
            e,
            json!({ "device_secret_keys": keys_hex, "envelope": h(env) }),
        );
    };
    let n = env.len();
    let body_at = COMMAND_HEADER_LEN;
    fail(
        v,
        "fail_envelope_tampered_ciphertext",
        "sealed_owner_unlock with one bit of the AEAD ciphertext flipped.",
        &flip(env, body_at + 10),
        "DecryptFailed",
    );
    fail(
        v,
        "fail_envelope_tampered_tag",
        "sealed_owner_unlock with one bit of the AEAD tag flipped.",
        &flip(env, n - 1),
        "DecryptFailed",
    );
    fail(
        v,
        "fail_envelope_tampered_nonce",
        "sealed_owner_unlock with one bit of the AEAD nonce flipped.",
        &flip(env, body_at - 1),
        "DecryptFailed",
    );
    fail(
        v,
        "fail_envelope_tampered_x25519_ephemeral",
        "sealed_owner_unlock with one bit of the X25519 ephemeral key flipped: the device \
         derives a different key.",
        &flip(env, KEM_CT_AT),
        "DecryptFailed",
    );
    fail(
        v,
        "fail_envelope_tampered_sntrup_ciphertext",
        "sealed_owner_unlock with one bit of the sntrup761 ciphertext flipped (implicit \
         rejection: the device derives a different key).",
        &flip(env, KEM_CT_AT + 32 + 100),
        "DecryptFailed",
    );
    let mut low_order = env.to_vec();
    low_order[KEM_CT_AT..KEM_CT_AT + 32].fill(0);
    fail(
        v,
        "fail_envelope_low_order_x25519_ephemeral",
        "sealed_owner_unlock with an all-zero X25519 ephemeral key (a low-order point whose \
         shared secret is zero).",
        &low_order,
        "DecryptFailed",
    );
    let (to_back, _) =
        envelope::seal_command(&c.owner, w.back.kem.public(), &mut rng(520)).unwrap();
    fail(
        v,
        "fail_envelope_sealed_to_other_device",
        "command_owner_unlock sealed to the back door's KEM keys, opened with the front \
         door's.",
        &to_back,
        "DecryptFailed",
    );
    fail(
        v,
        "fail_envelope_truncated_by_one_byte",
        "sealed_owner_unlock without its last byte: the ciphertext is shorter than the smallest \
         bucket plus tag.",
        &env[..n - 1],
        "Truncated",
    );
    fail(
        v,
        "fail_envelope_trailing_byte",
        "sealed_owner_unlock with one extra byte: authentication fails.",
        &[env, &[0]].concat(),
        "DecryptFailed",
    );
    fail(
        v,
        "fail_envelope_version",
        "sealed_owner_unlock with version byte 2.",
        &patch(env, 0, &[1], &[2]),
        "UnsupportedVersion",
    );
    fail(
        v,
        "fail_envelope_kind_response",
        "sealed_owner_unlock with kind byte 2 (a response envelope) where a command is \
         expected.",
        &patch(env, 1, &[1], &[2]),
        "UnknownTag",
    );
    fail(
        v,
        "fail_envelope_empty",
        "An empty envelope.",
        &[],
        "Truncated",
    );
    fail(
        v,
        "fail_envelope_truncated_in_kem_ciphertext",
        "sealed_owner_unlock cut to its first 500 bytes, inside the KEM ciphertext.",
        &env[..500],
        "Truncated",
    );
    fail(
        v,
        "fail_envelope_shorter_than_smallest_bucket",
        "sealed_owner_unlock cut 100 bytes after its header: too short to hold the smallest \
         bucket and tag.",
        &env[..body_at + 100],
        "Truncated",
    );
    let mut huge = env.to_vec();
    huge.resize(envelope::MAX_SEALED_COMMAND + 1, 0);
    fail(
        v,
        "fail_envelope_too_large",
        "sealed_owner_unlock padded with zeros to one byte over the largest sealed command \
         (17,497 bytes).",
        &huge,
        "TooLarge",
    );
    let kem_pub = w.front.kem.public();
    let owner = c.owner.to_bytes();
    let raw = |v: &mut Vectors, name: &str, description: &str, plaintext: &[u8], e: &str| {
        let seed = 600 + v.list.len() as u64;
        let env = seal_raw(kem_pub, plaintext, None, seed);
        fail(v, name, description, &env, e);
    };
    raw(
        v,
        "fail_envelope_plaintext_not_a_bucket",
        "A correctly sealed plaintext of 2,000 bytes: not one of the bucket sizes.",
        &padded(&owner, owner.len() as u32, 2000),
        "BadPadding",
    );
    raw(
        v,
        "fail_envelope_padding_length_too_large",
        "A correctly sealed 1,024-byte plaintext whose length prefix says 1,021 bytes (at most \
         1,020 fit).",
        &padded(&owner, 1021, 1024),
        "BadPadding",
    );
    raw(
        v,
        "fail_envelope_padded_message_not_a_command",
        "A correctly sealed, correctly padded message that is command_owner_unlock with \
         version byte 9.",
        &padded(&patch(&owner, 0, &[1], &[9]), owner.len() as u32, 1024),
        "UnsupportedVersion",
    );
    let longer = [owner.as_slice(), &[0]].concat();
    raw(
        v,
        "fail_envelope_padded_command_trailing_byte",
        "A correctly sealed, correctly padded message that is command_owner_unlock followed by \
         one byte.",
        &padded(&longer, longer.len() as u32, 1024),
        "TrailingBytes",
    );
    let env = seal_raw(
        kem_pub,
        &padded(&owner, owner.len() as u32, 1024),
        Some(&[]),
        690,
    );
    fail(
        v,
        "fail_envelope_header_not_authenticated",
        "command_owner_unlock sealed with an empty associated data instead of the envelope \
         header: the header must be the AEAD's associated data.",
        &env,
        "DecryptFailed",
    );
}
