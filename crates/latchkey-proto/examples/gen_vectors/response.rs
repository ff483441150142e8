//! response.json: signed responses, a whole sealed exchange, and what must be refused.

use crate::*;

/// Opens a response envelope with the response key: header (version, kind, nonce) as
/// associated data, then unpadding, decoding and verification. The test does the same; here
/// the result is also compared with the library's `PendingReply::open`.
fn open_response_with_key(
    key: &[u8; 32],
    env: &[u8],
    identity: &PublicKey,
    device: &DeviceId,
    command: &CommandId,
) -> Result<SignedResponse, Error> {
    let nonce: [u8; 24] = env[2..RESPONSE_HEADER_LEN].try_into().unwrap();
    let plain = kem::aead_open(
        key,
        &nonce,
        &env[..RESPONSE_HEADER_LEN],
        &env[RESPONSE_HEADER_LEN..],
    )?;
    let response = SignedResponse::from_bytes(pad::unpad(&plain)?)?;
    response.verify(identity, device, command)?;
    Ok(response)
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let c = commands(w);
    let front = w.front_id();
    let identity = w.front.identity.public_key();
    let accepted = Response {
        device: front,
        command: c.owner.command.id(),
        timestamp_ms: Some(T0 + 2 * HOUR + 150),
        outcome: Outcome::Accepted,
        body: vec![],
    }
    .sign(&w.front.identity)
    .unwrap();
    assert_eq!(RejectCode::from_u16(9), Some(RejectCode::GrantExpired));
    let rejected = Response {
        device: front,
        command: c.guest.command.id(),
        timestamp_ms: Some(T0 + 27 * HOUR),
        outcome: Outcome::Rejected {
            code: 9,
            reason: Error::GrantExpired(3600).to_string(),
        },
        body: vec![],
    }
    .sign(&w.front.identity)
    .unwrap();
    let challenge = Response {
        device: front,
        command: c.owner.command.id(),
        timestamp_ms: None,
        outcome: Outcome::ChallengeRequired {
            challenge: random(&mut rng(700)),
        },
        body: vec![],
    }
    .sign(&w.front.identity)
    .unwrap();
    let status = Response {
        device: front,
        command: c.challenge.command.id(),
        timestamp_ms: None,
        outcome: Outcome::Accepted,
        body: br#"{"locked":true,"battery_pct":87}"#.to_vec(),
    }
    .sign(&w.front.identity)
    .unwrap();
    for (name, r, description) in [
        (
            "response_accepted",
            &accepted,
            "The front door accepts command_owner_unlock.",
        ),
        (
            "response_rejected_grant_expired",
            &rejected,
            "The front door refuses command_guest_unlock_with_grants with code 9 (grant \
             expired) and a reason.",
        ),
        (
            "response_challenge_required",
            &challenge,
            "A front door whose clock is not set answers command_owner_unlock with a challenge \
             (no timestamp).",
        ),
        (
            "response_status_with_body",
            &status,
            "The front door answers command_owner_status_with_challenge with a JSON body.",
        ),
    ] {
        r.verify(&identity, &front, &r.response.command).unwrap();
        assert!(SignedResponse::from_bytes(&r.to_bytes()).unwrap() == *r);
        v.ok(
            name,
            "signed_response",
            &format!("{description} Signed by the front door's identity key `device_identity`."),
            json!({ "response": response_json(r), "device_identity": pk_hex(&identity) }),
        );
    }

    let verify_fail = |v: &mut Vectors,
                       name: &str,
                       description: &str,
                       r: &SignedResponse,
                       device: DeviceId,
                       command: CommandId,
                       e: &str| {
        let bytes = r.to_bytes();
        v.fail(
            name,
            "signed_response_fail",
            description,
            SignedResponse::from_bytes(&bytes)
                .unwrap()
                .verify(&identity, &device, &command)
                .map(|_| ()),
            e,
            json!({
                "bytes": h(&bytes),
                "device_identity": pk_hex(&identity),
                "device": h(device.0),
                "command_id": h(command.0),
            }),
        );
    };
    let by_stranger = accepted.response.clone().sign(&w.stranger).unwrap();
    verify_fail(
        &mut v,
        "fail_response_signed_by_other_key",
        "response_accepted signed by a key that is not the device's identity key.",
        &by_stranger,
        front,
        c.owner.command.id(),
        "BadSignature",
    );
    let mut changed = accepted.clone();
    changed.response.body = b"x".to_vec();
    verify_fail(
        &mut v,
        "fail_response_body_changed",
        "response_accepted with a body added after signing.",
        &changed,
        front,
        c.owner.command.id(),
        "BadSignature",
    );
    verify_fail(
        &mut v,
        "fail_response_answers_other_command",
        "response_accepted checked as the answer to command_guest_unlock_with_grants.",
        &accepted,
        front,
        c.guest.command.id(),
        "Invalid",
    );
    let other_device = Response {
        device: w.back_id(),
        ..accepted.response.clone()
    }
    .sign(&w.front.identity)
    .unwrap();
    verify_fail(
        &mut v,
        "fail_response_names_other_device",
        "A response signed by the front door's key but naming the back door.",
        &other_device,
        front,
        c.owner.command.id(),
        "WrongDevice",
    );

    response_exchange(w, &c, &mut v);

    // Encodings that must not decode.
    let bytes = accepted.to_bytes();
    v.fail_truncations("response", "SignedResponse", &bytes, "TrailingBytes");
    v.fail_decode(
        "fail_response_version",
        "SignedResponse",
        "response_accepted with version byte 2.",
        &patch(&bytes, 0, &[1], &[2]),
        "UnsupportedVersion",
    );
    // version (1), device (32), command id (32), then the timestamp's presence flag.
    const FLAG_AT: usize = 65;
    v.fail_decode(
        "fail_response_timestamp_flag",
        "SignedResponse",
        "response_accepted whose timestamp presence flag is 2.",
        &patch(&bytes, FLAG_AT, &[1], &[2]),
        "UnknownTag",
    );
    v.fail_decode(
        "fail_response_outcome_tag",
        "SignedResponse",
        "response_accepted with outcome tag 3 (known: 0 accepted, 1 rejected, 2 challenge).",
        &patch(&bytes, FLAG_AT + 9, &[0], &[3]),
        "UnknownTag",
    );
    // Rejected: flag, timestamp (8), tag, code (2), reason length, reason.
    let reason_at = FLAG_AT + 1 + 8 + 1 + 2 + 1;
    v.fail_decode(
        "fail_response_reason_not_utf8",
        "SignedResponse",
        "response_rejected_grant_expired whose reason has a byte that is not UTF-8.",
        &patch(&rejected.to_bytes(), reason_at, b"t", &[0xff]),
        "NotUtf8",
    );
    let unchecked = |r: Response| {
        SignedResponse {
            response: r,
            signature: Signature([0; 64]),
        }
        .to_bytes()
    };
    v.fail_decode(
        "fail_response_reason_too_long",
        "SignedResponse",
        "A rejection with a 201-byte reason (the limit is 200).",
        &unchecked(Response {
            outcome: Outcome::Rejected {
                code: 7,
                reason: "r".repeat(201),
            },
            ..accepted.response.clone()
        }),
        "TooLarge",
    );
    v.fail_decode(
        "fail_response_body_too_long",
        "SignedResponse",
        "A response with an 8,193-byte body (the limit is 8,192).",
        &unchecked(Response {
            body: vec![0; 8193],
            ..accepted.response.clone()
        }),
        "TooLarge",
    );
    let mut huge = bytes.clone();
    huge.resize(pad::MAX_MESSAGE + 1, 0);
    v.fail_decode(
        "fail_response_too_large",
        "SignedResponse",
        "response_accepted padded with zeros to 16,381 bytes.",
        &huge,
        "TooLarge",
    );
    v
}

fn response_exchange(w: &World, c: &Commands, v: &mut Vectors) {
    let front = w.front_id();
    let identity = w.front.identity.public_key();
    let cmd_id = c.owner.command.id();
    let mut r = rng(710);
    let (cmd_env, pending) =
        envelope::seal_command(&c.owner, w.front.kem.public(), &mut r).unwrap();
    let opened = envelope::open_command(&cmd_env, &w.front.kem).unwrap();
    let (_, derived) = open_with(&w.front, &cmd_env).unwrap();
    let key: [u8; 32] = hex::decode(derived["response_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let response = Response {
        device: front,
        command: cmd_id,
        timestamp_ms: Some(T0 + 2 * HOUR + 150),
        outcome: Outcome::Accepted,
        body: br#"{"locked":false}"#.to_vec(),
    }
    .sign(&w.front.identity)
    .unwrap();
    let env = opened.reply.seal(&response, &mut r).unwrap();
    assert!(pending.open(&env, &identity).unwrap() == response);
    assert!(open_response_with_key(&key, &env, &identity, &front, &cmd_id).unwrap() == response);
    v.ok(
        "response_exchange_owner_unlock",
        "response_exchange",
        "A whole exchange: command_owner_unlock sealed to the front door (`command_envelope`, \
         opens with `device_secret_keys`), and the device's signed answer sealed back \
         (`response_envelope`) under `response_key`, the key both sides derive from the \
         command's KEM exchange. The response envelope is version 1, kind 2, a 24-byte nonce, \
         then XChaCha20-Poly1305 over the padded response with those 26 header bytes as \
         associated data. Sealed anew on every generator run.",
        json!({
            "device_secret_keys": h(w.front.to_secret_bytes().as_slice()),
            "device_identity": pk_hex(&identity),
            "device": h(front.0),
            "command_envelope": h(&cmd_env),
            "command": h(c.owner.to_bytes()),
            "command_id": h(cmd_id.0),
            "response_key": h(key),
            "response_envelope": h(&env),
            "response": h(response.to_bytes()),
        }),
    );

    // Response envelopes that must be refused, each checked through PendingReply::open and
    // through opening with the response key.
    let fail = |v: &mut Vectors,
                name: &str,
                description: &str,
                env: &[u8],
                pending: &PendingReply,
                e: &str| {
        let expected_by_library = pending.open(env, &identity);
        let by_key = open_response_with_key(&key, env, &identity, &front, &cmd_id);
        assert_eq!(
            expected_by_library.as_ref().map_err(variant).err(),
            by_key.as_ref().map_err(variant).err(),
            "{name}"
        );
        v.fail(
            name,
            "response_open_fail",
            &format!("{description} (From response_exchange_owner_unlock.)"),
            expected_by_library,
            e,
            json!({
                "response_key": h(key),
                "envelope": h(env),
                "device_identity": pk_hex(&identity),
                "device": h(front.0),
                "command_id": h(cmd_id.0),
            }),
        );
    };
    fail(
        v,
        "fail_response_envelope_tampered_ciphertext",
        "The response envelope with one bit of its ciphertext flipped.",
        &flip(&env, RESPONSE_HEADER_LEN + 5),
        &pending,
        "DecryptFailed",
    );
    fail(
        v,
        "fail_response_envelope_tampered_nonce",
        "The response envelope with one bit of its nonce flipped.",
        &flip(&env, 2),
        &pending,
        "DecryptFailed",
    );
    let other = envelope::open_command(
        &envelope::seal_command(&c.owner, w.front.kem.public(), &mut r)
            .unwrap()
            .0,
        &w.front.kem,
    )
    .unwrap();
    fail(
        v,
        "fail_response_envelope_other_exchange",
        "The same response sealed under the key of another exchange.",
        &other.reply.seal(&response, &mut r).unwrap(),
        &pending,
        "DecryptFailed",
    );
    let reseal =
        |resp: &SignedResponse, seed: u64| opened.reply.seal(resp, &mut rng(seed)).unwrap();
    fail(
        v,
        "fail_response_envelope_signed_by_other_key",
        "A correctly sealed response signed by a key that is not the device's.",
        &reseal(&response.response.clone().sign(&w.stranger).unwrap(), 721),
        &pending,
        "BadSignature",
    );
    let for_other = Response {
        command: c.guest.command.id(),
        ..response.response.clone()
    }
    .sign(&w.front.identity)
    .unwrap();
    fail(
        v,
        "fail_response_envelope_answers_other_command",
        "A correctly sealed, correctly signed response to a different command.",
        &reseal(&for_other, 722),
        &pending,
        "Invalid",
    );
    let for_back = Response {
        device: w.back_id(),
        ..response.response.clone()
    }
    .sign(&w.front.identity)
    .unwrap();
    fail(
        v,
        "fail_response_envelope_names_other_device",
        "A correctly sealed response signed by the front door's key but naming the back door.",
        &reseal(&for_back, 723),
        &pending,
        "WrongDevice",
    );
    let raw = |plaintext: &[u8], seed: u64| {
        let nonce: [u8; 24] = random(&mut rng(seed));
        let header = [&[1u8, 2][..], &nonce].concat();
        [
            header.clone(),
            kem::aead_seal(&key, &nonce, &header, plaintext),
        ]
        .concat()
    };
    let resp_bytes = response.to_bytes();
    fail(
        v,
        "fail_response_envelope_bad_padding",
        "A response sealed with the right key whose plaintext is 2,000 bytes, not a bucket \
         size.",
        &raw(&padded(&resp_bytes, resp_bytes.len() as u32, 2000), 730),
        &pending,
        "BadPadding",
    );
    fail(
        v,
        "fail_response_envelope_truncated_response",
        "A response sealed with the right key whose padded message is the signed response \
         without its last byte.",
        &raw(
            &padded(
                &resp_bytes[..resp_bytes.len() - 1],
                resp_bytes.len() as u32 - 1,
                1024,
            ),
            731,
        ),
        &pending,
        "Truncated",
    );
}
