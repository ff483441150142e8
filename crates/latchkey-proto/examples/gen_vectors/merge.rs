//! merge.json: what a verifier holds after merging another party's view into its own
//! (docs/PROTOCOL.md §3.3): extensions, stale views, concurrent revocations (a union, never a
//! fork), forks settled by the device's endorsement, unresolved forks, side ops anchored on a
//! branch we do not hold, and revocations that die with their era.

use crate::*;

fn list(ops: &[Op]) -> String {
    h(OpList(ops.to_vec()).to_bytes())
}

fn fork_seq(f: &Option<latchkey_proto::chain::ForkEvidence>) -> Value {
    f.as_ref().map_or(Value::Null, |f| json!(f.seq))
}

/// One vector: `ours` (verified), merged with `theirs`.
fn merge(v: &mut Vectors, name: &str, description: &str, ours: &[Op], theirs: &[Op]) {
    let mut chain = Chain::verify(ours.to_vec()).expect("ours verifies");
    let report = chain.merge(theirs);
    assert!(report.invalid.is_none(), "{name}: {:?}", report.invalid);
    v.ok(
        name,
        "chain_merge",
        description,
        json!({
            "ours": list(ours),
            "theirs": list(theirs),
            "added": report.added,
            "behind": report.behind,
            "fork_seq": fork_seq(&report.fork),
            "switched_seq": fork_seq(&report.switched),
            "outvoted_seq": fork_seq(&report.outvoted),
            "unanchored": report.unanchored,
            "ops_after": list(chain.ops()),
            "state_after": state_json(chain.state()),
        }),
    );
}

fn op(chain: &Chain, ms: u64, body: OpBody, keys: &[&SigningKey]) -> Op {
    signed(chain.propose(ms, body), keys)
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let genesis = w.front.genesis("Front door", T0).unwrap();
    let base = Chain::from_genesis(genesis.clone()).unwrap();
    let claim_ab = op(
        &base,
        T0 + MINUTE,
        OpBody::Claim(owners(&[&w.a, &w.b], 1)),
        &[&w.front.setup, &w.a, &w.b],
    );
    let mut owned = base.clone();
    owned.append(claim_ab.clone()).unwrap();
    let endorse_claim = signed(
        owned.endorsement(1, T0 + 2 * MINUTE).unwrap(),
        &[&w.front.identity],
    );
    let epoch = owned.state().epoch;
    let grant_by = |issuer: &SigningKey, salt: u8| {
        GrantBody {
            issuer: issuer.public_key(),
            subject: w.host.public_key(),
            scope: vec![GrantScope {
                device: w.front_id(),
                epoch,
            }],
            actions: vec!["unlock".into()],
            not_before_ms: T0,
            not_after_ms: T0 + 24 * HOUR,
            use_limit: None,
            delegation_depth: 0,
            extensions: Vec::new(),
            salt: [salt; 16],
        }
        .sign(issuer)
        .unwrap()
    };
    let revoke_a = op(
        &owned,
        T0 + 3 * MINUTE,
        OpBody::RevokeGrant {
            chain: vec![grant_by(&w.a, 1)],
        },
        &[&w.a],
    );
    let revoke_b = op(
        &owned,
        T0 + 3 * MINUTE,
        OpBody::RevokeGrant {
            chain: vec![grant_by(&w.b, 2)],
        },
        &[&w.b],
    );
    let g = genesis.clone();

    merge(
        &mut v,
        "merge_extension",
        "Ours is genesis alone; theirs is genesis, the claim by {A, B} and the device's \
         endorsement of it: both are taken.",
        std::slice::from_ref(&g),
        &[g.clone(), claim_ab.clone(), endorse_claim.clone()],
    );
    merge(
        &mut v,
        "merge_behind",
        "Ours holds the claim; theirs is genesis alone: a stale view, nothing taken.",
        &[g.clone(), claim_ab.clone()],
        std::slice::from_ref(&g),
    );
    merge(
        &mut v,
        "merge_concurrent_revocations",
        "Owners A and B each revoked a grant against the same head (both side ops at seq 2, \
         anchored on the claim), posted to different nodes. Merging one view into the other \
         takes the other revocation: the revoked set is the union, there is no fork, and the \
         head is unchanged.",
        &[g.clone(), claim_ab.clone(), revoke_a.clone()],
        &[g.clone(), claim_ab.clone(), revoke_b.clone()],
    );

    // Rival claims with the same (leaked) setup key.
    let rival = op(
        &base,
        T0 + 5 * MINUTE,
        OpBody::Claim(owners(&[&w.stranger], 1)),
        &[&w.front.setup, &w.stranger],
    );
    merge(
        &mut v,
        "merge_rival_claim_switched",
        "Ours holds a rival claim (a stranger signed it with the leaked setup key); theirs \
         holds the claim by {A, B} with the device's endorsement. The device endorsed theirs \
         and not ours: their branch replaces ours (switched at seq 1).",
        &[g.clone(), rival.clone()],
        &[g.clone(), claim_ab.clone(), endorse_claim.clone()],
    );
    merge(
        &mut v,
        "merge_rival_claim_outvoted",
        "Ours holds the endorsed claim by {A, B}; theirs holds the rival claim: ours stands \
         (outvoted at seq 1), nothing taken.",
        &[g.clone(), claim_ab.clone(), endorse_claim.clone()],
        &[g.clone(), rival.clone()],
    );
    merge(
        &mut v,
        "merge_unresolved_fork",
        "Neither claim endorsed: an unresolved fork at seq 1. Ours is kept; raise an alarm.",
        &[g.clone(), claim_ab.clone()],
        &[g.clone(), rival.clone()],
    );
    let mut rival_chain = base.clone();
    rival_chain.append(rival.clone()).unwrap();
    let endorse_rival = signed(
        rival_chain.endorsement(1, T0 + 6 * MINUTE).unwrap(),
        &[&w.front.identity],
    );
    merge(
        &mut v,
        "merge_unanchored_side_op",
        "Theirs is only an endorsement anchored on an op ours does not hold (the rival claim): \
         not taken, counted as unanchored (a replica fetches the whole chain from whoever sent \
         it). A list with no spine op is also `behind`.",
        &[g.clone(), claim_ab.clone()],
        &[endorse_rival],
    );
    let transfer = op(
        &owned,
        T0 + 7 * MINUTE,
        OpBody::Transfer(owners(&[&w.c], 1)),
        &[&w.a, &w.c],
    );
    merge(
        &mut v,
        "merge_revocations_end_with_their_era",
        "Ours holds A's revocation; theirs holds the transfer to {C} (signed by A and by C, the \
         new owner). After the merge the new era has no revocations and ours no longer holds \
         A's: it no longer counts.",
        &[g.clone(), claim_ab.clone(), revoke_a.clone()],
        &[g.clone(), claim_ab.clone(), transfer],
    );

    side_op_fail_vectors(w, &mut v, &owned, &g, &claim_ab, &rival);
    v
}

fn side_op_fail_vectors(
    w: &World,
    v: &mut Vectors,
    owned: &Chain,
    g: &Op,
    claim_ab: &Op,
    rival: &Op,
) {
    let fail = super::ops::chain_fail;
    let prefix = [g.clone(), claim_ab.clone()];
    fail(
        v,
        "fail_endorse_not_by_the_device",
        "An endorsement of the claim signed by owner A instead of the device key.",
        &prefix,
        signed(owned.endorsement(1, T0 + HOUR).unwrap(), &[&w.a]),
        "MissingSignature",
    );
    let mut on_rival = owned.endorsement(1, T0 + HOUR).unwrap();
    on_rival.prev = rival.id();
    fail(
        v,
        "fail_side_op_anchored_off_the_spine",
        "An endorsement whose prev is the rival claim, an op not on this chain's spine.",
        &prefix,
        signed(on_rival, &[&w.front.identity]),
        "BrokenLink",
    );
    let back_epoch = Chain::verify(back_chain(w)).unwrap().state().epoch;
    let other_device = GrantBody {
        issuer: w.a.public_key(),
        subject: w.host.public_key(),
        scope: vec![GrantScope {
            device: w.back_id(),
            epoch: back_epoch,
        }],
        actions: vec!["unlock".into()],
        not_before_ms: T0,
        not_after_ms: T0 + HOUR,
        use_limit: None,
        delegation_depth: 0,
        extensions: Vec::new(),
        salt: [9; 16],
    }
    .sign(&w.a)
    .unwrap();
    fail(
        v,
        "fail_revoke_grant_for_another_device",
        "Owner A revokes, on the front door's chain, a grant for the back door: it would only \
         bloat the chain.",
        &prefix,
        signed(
            owned.propose(
                T0 + HOUR,
                OpBody::RevokeGrant {
                    chain: vec![other_device],
                },
            ),
            &[&w.a],
        ),
        "OpNotAllowed",
    );
    // A host who may delegate revokes 32 sub-grants it issued, then a 33rd.
    let root = GrantBody {
        issuer: w.a.public_key(),
        subject: w.host.public_key(),
        scope: vec![GrantScope {
            device: w.front_id(),
            epoch: owned.state().epoch,
        }],
        actions: vec!["unlock".into()],
        not_before_ms: T0,
        not_after_ms: T0 + 24 * HOUR,
        use_limit: None,
        delegation_depth: 1,
        extensions: Vec::new(),
        salt: [7; 16],
    }
    .sign(&w.a)
    .unwrap();
    let sub = |n: u8| {
        GrantBody {
            issuer: w.host.public_key(),
            subject: w.cleaner.public_key(),
            delegation_depth: 0,
            salt: [n; 16],
            ..root.body.clone()
        }
        .sign(&w.host)
        .unwrap()
    };
    let mut capped = owned.clone();
    let mut prefix = prefix.to_vec();
    for n in 0..latchkey_proto::chain::MAX_ISSUER_REVOCATIONS as u8 {
        let revocation = signed(
            capped.propose(
                T0 + HOUR,
                OpBody::RevokeGrant {
                    chain: vec![root.clone(), sub(n)],
                },
            ),
            &[&w.host],
        );
        capped.append(revocation.clone()).unwrap();
        prefix.push(revocation);
    }
    fail(
        v,
        "fail_revoke_issuer_over_cap",
        "The host (a grant holder who may delegate, not an owner) has revoked 32 sub-grants it \
         issued this era; a 33rd revocation signed by the host is refused (an owner could \
         still revoke it).",
        &prefix,
        signed(
            capped.propose(
                T0 + HOUR,
                OpBody::RevokeGrant {
                    chain: vec![root.clone(), sub(200)],
                },
            ),
            &[&w.host],
        ),
        "OpNotAllowed",
    );
}
