//! ops.json: the ownership chain through every op kind, single ops, ops that must not extend a
//! chain, and encodings that must not decode.

use crate::*;

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let life = lifecycle(w);
    let chain = Chain::verify(life.clone()).unwrap();
    let list = OpList(life.clone()).to_bytes();
    assert!(OpList::from_bytes(&list).unwrap() == OpList(life.clone()));
    let state_after = |i: usize| state_json(Chain::verify(life[..=i].to_vec()).unwrap().state());
    let ops: Vec<Value> = life
        .iter()
        .enumerate()
        .map(|(i, op)| json!({ "op": op_json(op), "state_after": state_after(i) }))
        .collect();
    v.ok(
        "chain_lifecycle",
        "chain",
        "The front door's whole life: genesis (by the device identity key D), claim by owner A \
         (setup key T and A), amend owners to {A, B} threshold 2 (A, and B who is added), \
         revocation of A's grant to the host (A; a side op anchored on the amend), transfer to \
         {C} (A, B and C), key rotation to D' (D and D'), factory reset with a new setup key T2 \
         (D'), claim by A again (T2 and A), the device's endorsement of that claim (D'; a side \
         op). `op_list` is the u32 count || ops encoding of all of them in the order made; each \
         op comes with the state after it. `chain_ops` is what the verified chain holds at the \
         end (the revocation died with its era) in canonical order.",
        json!({
            "op_list": h(&list),
            "ops": ops,
            "head": h(chain.head().0),
            "chain_ops": h(OpList(chain.ops().to_vec()).to_bytes()),
        }),
    );

    let names = [
        "op_genesis",
        "op_claim",
        "op_amend_owners",
        "op_revoke_grant",
        "op_transfer",
        "op_rotate_keys",
        "op_factory_reset",
        "op_claim_after_reset",
        "op_endorse",
    ];
    for (i, name) in names.iter().enumerate() {
        let op = &life[i];
        v.ok(
            name,
            "op",
            &format!(
                "A single {} op (seq {}) of chain_lifecycle, after the ops in `prefix`: its \
                 encoding, signed content, id, signers, decoded body and the state it leads to.",
                op.body.kind(),
                op.seq
            ),
            json!({
                "prefix": life[..i].iter().map(|o| h(o.to_bytes())).collect::<Vec<_>>(),
                "op": op_json(op),
                "state_after": state_after(i),
            }),
        );
    }
    chain_fail_vectors(w, &life, &mut v);
    op_decode_vectors(w, &life, &mut v);
    v
}

pub fn chain_fail(v: &mut Vectors, name: &str, description: &str, prefix: &[Op], op: Op, e: &str) {
    assert!(
        Op::from_bytes(&op.to_bytes()).unwrap() == op,
        "{name}: op must decode"
    );
    let result = if prefix.is_empty() {
        Chain::verify(vec![op.clone()]).map(|_| ())
    } else {
        Chain::verify(prefix.to_vec())
            .unwrap()
            .check_next(&op)
            .map(|_| ())
    };
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
}

fn chain_fail_vectors(w: &World, life: &[Op], v: &mut Vectors) {
    let front = w.front_id();
    let genesis_only = &life[..1];
    let owned = &life[..2];
    let two_owners = &life[..3];
    let transferred = &life[..5];
    let rotated = &life[..6];
    // The spine's head: side ops are never anyone's parent.
    let spine_head = |ops: &[Op]| ops.iter().rfind(|op| !op.body.is_side()).unwrap().clone();
    let head = |ops: &[Op]| spine_head(ops).id();
    let next = |ops: &[Op], body: OpBody| {
        Op::new(front, spine_head(ops).seq + 1, head(ops), T0 + HOUR, body)
    };
    let claim_a = || OpBody::Claim(owners(&[&w.a], 1));
    let setup = &w.front.setup;

    chain_fail(
        v,
        "fail_broken_link",
        "A claim whose prev is not the id of the genesis before it.",
        genesis_only,
        signed(
            Op::new(front, 1, OpId([0x11; 32]), T0 + HOUR, claim_a()),
            &[setup, &w.a],
        ),
        "BrokenLink",
    );
    chain_fail(
        v,
        "fail_wrong_sequence",
        "A claim after genesis with sequence 2 instead of 1.",
        genesis_only,
        signed(
            Op::new(front, 2, head(genesis_only), T0 + HOUR, claim_a()),
            &[setup, &w.a],
        ),
        "WrongSequence",
    );
    chain_fail(
        v,
        "fail_wrong_device",
        "A claim that links to the front door's genesis but names the back door.",
        genesis_only,
        signed(
            Op::new(w.back_id(), 1, head(genesis_only), T0 + HOUR, claim_a()),
            &[setup, &w.a],
        ),
        "WrongDevice",
    );
    chain_fail(
        v,
        "fail_claim_missing_setup_signature",
        "A claim signed by the new owner but not by the setup key (no proof of physical \
         presence).",
        genesis_only,
        signed(next(genesis_only, claim_a()), &[&w.a]),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_claim_missing_owner_signature",
        "A claim signed by the setup key but not by the owner it names.",
        genesis_only,
        signed(next(genesis_only, claim_a()), &[setup]),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_claim_extra_signature",
        "A claim signed by the setup key, the owner and a key with no say in it.",
        genesis_only,
        signed(next(genesis_only, claim_a()), &[setup, &w.a, &w.stranger]),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_claim_after_owned",
        "A second claim (by B, signed with the spent setup key) after the device is owned.",
        owned,
        signed(
            next(owned, OpBody::Claim(owners(&[&w.b], 1))),
            &[setup, &w.b],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_claim_no_owners",
        "A claim naming no owner.",
        genesis_only,
        signed(
            next(
                genesis_only,
                OpBody::Claim(OwnerSet {
                    owners: vec![],
                    threshold: 0,
                }),
            ),
            &[setup],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_claim_threshold_zero",
        "A claim with threshold 0.",
        genesis_only,
        signed(
            next(genesis_only, OpBody::Claim(owners(&[&w.a], 0))),
            &[setup, &w.a],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_claim_threshold_above_owner_count",
        "A claim with one owner and threshold 2.",
        genesis_only,
        signed(
            next(genesis_only, OpBody::Claim(owners(&[&w.a], 2))),
            &[setup, &w.a],
        ),
        "OpNotAllowed",
    );
    let mut unsorted = owners(&[&w.a, &w.b], 1);
    unsorted.owners.reverse();
    chain_fail(
        v,
        "fail_claim_owners_unsorted",
        "A claim whose owners are not in ascending byte order.",
        genesis_only,
        signed(
            next(genesis_only, OpBody::Claim(unsorted)),
            &[setup, &w.a, &w.b],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_claim_duplicate_owner",
        "A claim listing the same owner twice.",
        genesis_only,
        signed(
            next(
                genesis_only,
                OpBody::Claim(OwnerSet {
                    owners: vec![w.a.public_key(), w.a.public_key()],
                    threshold: 1,
                }),
            ),
            &[setup, &w.a],
        ),
        "OpNotAllowed",
    );
    let mut bad_sig = life[1].clone();
    bad_sig.signatures[0].signature.0[0] ^= 1;
    chain_fail(
        v,
        "fail_claim_bad_signature",
        "op_claim with one bit of its first signature flipped.",
        genesis_only,
        bad_sig,
        "BadSignature",
    );
    let mut moved = signed(
        Op::new(front, 1, head(genesis_only), T0 + 2 * HOUR, claim_a()),
        &[],
    );
    moved.signatures = life[1].signatures.clone();
    chain_fail(
        v,
        "fail_claim_signatures_from_another_op",
        "op_claim's signatures on a claim with a different issued_ms.",
        genesis_only,
        moved,
        "BadSignature",
    );
    let mut reversed = life[1].clone();
    reversed.signatures.reverse();
    chain_fail(
        v,
        "fail_signatures_unsorted",
        "op_claim with its two signatures in descending signer order.",
        genesis_only,
        reversed,
        "Invalid",
    );
    let mut doubled = life[1].clone();
    doubled.signatures.insert(0, doubled.signatures[0].clone());
    chain_fail(
        v,
        "fail_signatures_duplicated",
        "op_claim carrying its first signature twice.",
        genesis_only,
        doubled,
        "Invalid",
    );
    chain_fail(
        v,
        "fail_second_genesis",
        "A genesis op at sequence 1.",
        genesis_only,
        signed(
            next(genesis_only, life[0].body.clone()),
            &[&w.front.identity],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_amend_unowned",
        "Amend-owners on a device nobody has claimed.",
        genesis_only,
        signed(
            next(genesis_only, OpBody::AmendOwners(owners(&[&w.a], 1))),
            &[&w.a],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_amend_by_non_owner",
        "Amend-owners to {stranger} signed only by the stranger: its signature proves it holds \
         the key it adds but is no owner's vote.",
        owned,
        signed(
            next(owned, OpBody::AmendOwners(owners(&[&w.stranger], 1))),
            &[&w.stranger],
        ),
        "NotEnoughSignatures",
    );
    chain_fail(
        v,
        "fail_amend_signed_by_outsider",
        "Amend-owners to {A, B} signed by A, B and a key that is neither a current nor a new \
         owner.",
        owned,
        signed(
            next(owned, OpBody::AmendOwners(owners(&[&w.a, &w.b], 1))),
            &[&w.a, &w.b, &w.stranger],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_amend_new_owner_unsigned",
        "Amend-owners to {A, B} signed by A alone: B, who is added, did not sign (no proof \
         that B's key is held).",
        owned,
        signed(
            next(owned, OpBody::AmendOwners(owners(&[&w.a, &w.b], 1))),
            &[&w.a],
        ),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_transfer_to_unsigned_key",
        "A transfer to {C} signed by A (the only owner) but not by C: a transfer to a key \
         nobody holds (a typo) must never take effect.",
        owned,
        signed(next(owned, OpBody::Transfer(owners(&[&w.c], 1))), &[&w.a]),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_amend_below_threshold",
        "With owners {A, B} and threshold 2, amend-owners signed by A alone.",
        two_owners,
        signed(
            next(two_owners, OpBody::AmendOwners(owners(&[&w.a], 1))),
            &[&w.a],
        ),
        "NotEnoughSignatures",
    );
    chain_fail(
        v,
        "fail_amend_unsigned",
        "Amend-owners with no signature.",
        owned,
        next(owned, OpBody::AmendOwners(owners(&[&w.a, &w.b], 1))),
        "NotEnoughSignatures",
    );
    chain_fail(
        v,
        "fail_amend_threshold_above_owner_count",
        "Amend-owners to {A} with threshold 2.",
        owned,
        signed(
            next(owned, OpBody::AmendOwners(owners(&[&w.a], 2))),
            &[&w.a],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_transfer_below_threshold",
        "With owners {A, B} and threshold 2, a transfer to {C} signed by B alone.",
        two_owners,
        signed(
            next(two_owners, OpBody::Transfer(owners(&[&w.c], 1))),
            &[&w.b],
        ),
        "NotEnoughSignatures",
    );
    chain_fail(
        v,
        "fail_transfer_by_previous_owner",
        "After the transfer to {C}, a transfer back to A signed by A: A's signature only proves \
         possession of the key it adds; no current owner voted.",
        transferred,
        signed(
            next(transferred, OpBody::Transfer(owners(&[&w.a], 1))),
            &[&w.a],
        ),
        "NotEnoughSignatures",
    );
    let epoch = epoch_of(owned);
    let host_grant = root_grant(w, &[(front, epoch)], 1);
    let revoke = |chain: Vec<Grant>| OpBody::RevokeGrant { chain };
    chain_fail(
        v,
        "fail_revoke_unowned",
        "A grant revocation on a device nobody has claimed.",
        genesis_only,
        signed(
            next(genesis_only, revoke(vec![host_grant.clone()])),
            &[&w.a],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_revoke_by_stranger",
        "A revocation of A's grant signed by neither an owner nor the grant's issuer.",
        owned,
        signed(
            next(owned, revoke(vec![host_grant.clone()])),
            &[&w.stranger],
        ),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_revoke_with_outsider_cosignature",
        "A revocation signed by owner A and by a key with no say in it.",
        owned,
        signed(
            next(owned, revoke(vec![host_grant.clone()])),
            &[&w.a, &w.stranger],
        ),
        "OpNotAllowed",
    );
    let stranger_grant = GrantBody {
        issuer: w.stranger.public_key(),
        ..host_grant.body.clone()
    }
    .sign(&w.stranger)
    .unwrap();
    chain_fail(
        v,
        "fail_revoke_grant_not_from_an_owner",
        "A revocation of a grant whose issuer never owned the device.",
        owned,
        signed(next(owned, revoke(vec![stranger_grant])), &[&w.a]),
        "OpNotAllowed",
    );
    let rotate = || OpBody::RotateKeys {
        identity: w.rotated.identity.public_key(),
        kem: w.rotated.kem.public().clone(),
    };
    chain_fail(
        v,
        "fail_rotate_without_new_key_signature",
        "A key rotation signed by the current identity key only.",
        owned,
        signed(next(owned, rotate()), &[&w.front.identity]),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_rotate_without_current_key_signature",
        "A key rotation signed by the new identity key only.",
        owned,
        signed(next(owned, rotate()), &[&w.rotated.identity]),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_rotate_by_owner",
        "A key rotation signed by owner A instead of the device.",
        owned,
        signed(next(owned, rotate()), &[&w.a]),
        "MissingSignature",
    );
    let reset = || OpBody::FactoryReset {
        setup: w.reset_setup.public_key(),
    };
    chain_fail(
        v,
        "fail_reset_by_owner",
        "A factory reset signed by owner A instead of the device identity key.",
        owned,
        signed(next(owned, reset()), &[&w.a]),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_reset_by_old_identity",
        "After rotation to D', a factory reset signed by the old identity key D.",
        rotated,
        signed(next(rotated, reset()), &[&w.front.identity]),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_reset_with_owner_cosignature",
        "A factory reset signed by the identity key and by owner A.",
        owned,
        signed(next(owned, reset()), &[&w.front.identity, &w.a]),
        "OpNotAllowed",
    );

    // Chains that do not start with a valid genesis.
    let genesis = &life[0];
    let genesis_body = genesis.body.clone();
    chain_fail(
        v,
        "fail_missing_genesis",
        "A chain that starts with op_claim.",
        &[],
        life[1].clone(),
        "MissingGenesis",
    );
    chain_fail(
        v,
        "fail_genesis_device_id_mismatch",
        "The front door's genesis body under the back door's id (the id is not the hash of the \
         identity key).",
        &[],
        signed(
            Op::new(w.back_id(), 0, OpId::NONE, T0, genesis_body.clone()),
            &[&w.front.identity],
        ),
        "DeviceIdMismatch",
    );
    chain_fail(
        v,
        "fail_genesis_unsigned",
        "The front door's genesis without a signature.",
        &[],
        Op::new(front, 0, OpId::NONE, T0, genesis_body.clone()),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_genesis_signed_by_setup_key",
        "The front door's genesis signed by its setup key instead of its identity key.",
        &[],
        signed(
            Op::new(front, 0, OpId::NONE, T0, genesis_body.clone()),
            &[setup],
        ),
        "MissingSignature",
    );
    chain_fail(
        v,
        "fail_genesis_extra_signature",
        "The front door's genesis signed by its identity key and its setup key.",
        &[],
        signed(
            Op::new(front, 0, OpId::NONE, T0, genesis_body.clone()),
            &[&w.front.identity, setup],
        ),
        "OpNotAllowed",
    );
    chain_fail(
        v,
        "fail_genesis_nonzero_sequence",
        "A genesis with sequence 1.",
        &[],
        signed(
            Op::new(front, 1, OpId::NONE, T0, genesis_body.clone()),
            &[&w.front.identity],
        ),
        "WrongSequence",
    );
    chain_fail(
        v,
        "fail_genesis_nonzero_prev",
        "A genesis whose prev is not all zeros.",
        &[],
        signed(
            Op::new(front, 0, OpId([1; 32]), T0, genesis_body),
            &[&w.front.identity],
        ),
        "BrokenLink",
    );
}

fn op_decode_vectors(w: &World, life: &[Op], v: &mut Vectors) {
    let genesis = life[0].to_bytes();
    let claim = life[1].to_bytes();
    v.fail_truncations("op_genesis", "Op", &genesis, "TrailingBytes");
    v.fail_truncations("op_claim", "Op", &claim, "TrailingBytes");
    v.fail_decode(
        "fail_op_version",
        "Op",
        "op_genesis with version byte 2.",
        &patch(&genesis, 0, &[1], &[2]),
        "UnsupportedVersion",
    );
    v.fail_decode(
        "fail_op_unknown_kind",
        "Op",
        "op_genesis with kind tag 9 (known: 1 to 8).",
        &patch(&genesis, 1, &[1], &[9]),
        "UnknownTag",
    );
    v.fail_decode(
        "fail_op_kind_zero",
        "Op",
        "op_claim with kind tag 0.",
        &patch(&claim, 1, &[2], &[0]),
        "UnknownTag",
    );
    // version, kind, device (32), seq (8), prev (32), issued (8): the body starts at 82.
    const BODY_AT: usize = 82;
    let identity = w.front.identity.public_key().to_bytes();
    v.fail_decode(
        "fail_op_identity_not_a_point",
        "Op",
        "op_genesis whose identity key is not an Ed25519 point.",
        &patch(&genesis, BODY_AT, &identity, &not_a_point()),
        "BadPublicKey",
    );
    // Genesis body: identity (32), KEM keys (1190), setup (32), then the name's length.
    let name_at = BODY_AT + 32 + KemPublicKey::MAX_LEN + 32;
    v.fail_decode(
        "fail_op_name_not_utf8",
        "Op",
        "op_genesis whose name has a byte that is not UTF-8.",
        &patch(&genesis, name_at, &[10, b'F'], &[10, 0xff]),
        "NotUtf8",
    );
    let OpBody::Genesis(g) = &life[0].body else {
        unreachable!()
    };
    let long_name = Op::new(
        w.front_id(),
        0,
        OpId::NONE,
        T0,
        OpBody::Genesis(Box::new(Genesis {
            name: "x".repeat(65),
            ..(**g).clone()
        })),
    );
    v.fail_decode(
        "fail_op_name_too_long",
        "Op",
        "A genesis with a 65-byte name (the limit is 64).",
        &signed(long_name, &[&w.front.identity]).to_bytes(),
        "TooLarge",
    );
    let many: Vec<SigningKey> = (0..19)
        .map(|i| SigningKey::generate(&mut rng(300 + i)))
        .collect();
    let refs: Vec<&SigningKey> = many.iter().collect();
    let seventeen = Op::new(
        w.front_id(),
        1,
        life[0].id(),
        T0,
        OpBody::Claim(owners(&refs[..17], 1)),
    );
    v.fail_decode(
        "fail_op_seventeen_owners",
        "Op",
        "A claim naming 17 owners (the limit is 16).",
        &seventeen.to_bytes(),
        "TooLarge",
    );
    v.fail_decode(
        "fail_op_nineteen_signatures",
        "Op",
        "op_claim's content with 19 signatures: its own 2 and 17 more (the limit is 18).",
        &{
            let op = signed(life[1].clone(), &refs[..17]);
            assert_eq!(op.signatures.len(), 19);
            op.to_bytes()
        },
        "TooLarge",
    );
    // Claim: body is owner count (1), one owner (32), threshold (1); then the signature count
    // and the first signer.
    let signer_at = BODY_AT + 1 + 32 + 1 + 1;
    v.fail_decode(
        "fail_op_signer_not_a_point",
        "Op",
        "op_claim whose first signer is not an Ed25519 point.",
        &patch(
            &claim,
            signer_at,
            &life[1].signatures[0].signer.to_bytes(),
            &not_a_point(),
        ),
        "BadPublicKey",
    );
    let OpBody::RevokeGrant { chain } = &life[3].body else {
        unreachable!()
    };
    let five = Op::new(
        w.front_id(),
        3,
        life[2].id(),
        T0,
        OpBody::RevokeGrant {
            chain: vec![chain[0].clone(); 5],
        },
    );
    v.fail_decode(
        "fail_op_revocation_of_five_grants",
        "Op",
        "A revocation carrying a delegation chain of 5 grants (the limit is 4).",
        &five.to_bytes(),
        "TooLarge",
    );
    let mut huge = genesis.clone();
    huge.resize(latchkey_proto::chain::MAX_OP_LEN + 1, 0);
    v.fail_decode(
        "fail_op_too_large",
        "Op",
        "op_genesis padded with zeros to 24577 bytes: over the 24 KiB op limit.",
        &huge,
        "TooLarge",
    );

    // Op lists.
    let list = OpList(life[..2].to_vec()).to_bytes();
    v.fail_truncations("op_list", "OpList", &list, "TrailingBytes");
    v.fail_decode(
        "fail_op_list_count_too_high",
        "OpList",
        "Genesis and claim under a count of 3.",
        &patch(&list, 0, &[0, 0, 0, 2], &[0, 0, 0, 3]),
        "Truncated",
    );
    v.fail_decode(
        "fail_op_list_count_beyond_input",
        "OpList",
        "A count of 1,000 ops in front of 2 ops: more ops than the input can hold.",
        &patch(&list, 0, &[0, 0, 0, 2], &1000u32.to_be_bytes()),
        "Truncated",
    );
    v.fail_decode(
        "fail_op_list_count_over_limit",
        "OpList",
        "A count of 100,001 ops (the limit is 100,000).",
        &patch(&list, 0, &[0, 0, 0, 2], &100_001u32.to_be_bytes()),
        "TooLarge",
    );
    v.fail_decode(
        "fail_op_list_bad_op",
        "OpList",
        "Genesis and claim where the claim has version byte 2.",
        &patch(&list, 4 + genesis.len(), &[1], &[2]),
        "UnsupportedVersion",
    );
}
