//! JSON renderings of decoded values, shared by the vector generator
//! (`examples/gen_vectors.rs`) and the table-driven test (`tests/vectors.rs`), so both write and
//! compare one form.

#![allow(dead_code)]

use latchkey_proto::chain::{ChainState, Op, OpBody};
use latchkey_proto::claim::ClaimPayload;
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Outcome, ReplyTo, SignedCommand, SignedResponse};
use latchkey_proto::grant::Grant;
use latchkey_proto::invite::Invitation;
use latchkey_proto::keys::PublicKey;
use latchkey_proto::Error;
use serde_json::{json, Value};

pub fn h(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

pub fn pk_hex(k: &PublicKey) -> String {
    h(k.to_bytes())
}

/// The `Error` variant's name: what every `fail_*` vector names.
pub fn variant(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

pub fn state_json(s: &ChainState) -> Value {
    json!({
        "device": h(s.device.0),
        "name": s.name,
        "identity": pk_hex(&s.identity),
        "kem_commitment": h(s.kem.commitment()),
        "setup": s.setup.as_ref().map(pk_hex),
        "owners": s.owners.iter().map(pk_hex).collect::<Vec<_>>(),
        "threshold": s.threshold,
        "epoch": h(s.epoch.0),
        "revoked": s.revoked.iter().map(|g| h(g.0)).collect::<Vec<_>>(),
        "issuer_revocations": s.issuer_revocations.iter().map(|(k, n)| json!({"issuer": pk_hex(k), "count": n})).collect::<Vec<_>>(),
        "head": h(s.head.0),
        "seq": s.seq,
    })
}

pub fn body_json(body: &OpBody) -> Value {
    match body {
        OpBody::Genesis(g) => json!({
            "identity": pk_hex(&g.identity),
            "kem_public_key": h(g.kem.to_bytes()),
            "setup": pk_hex(&g.setup),
            "name": g.name,
        }),
        OpBody::Claim(set) | OpBody::AmendOwners(set) | OpBody::Transfer(set) => json!({
            "owners": set.owners.iter().map(pk_hex).collect::<Vec<_>>(),
            "threshold": set.threshold,
        }),
        OpBody::RevokeGrant { chain } => json!({
            "grants": chain.iter().map(|g| h(g.to_bytes())).collect::<Vec<_>>(),
            "revoked_grant_id": chain.last().map(|g| h(g.id().0)),
        }),
        OpBody::RotateKeys { identity, kem } => json!({
            "identity": pk_hex(identity),
            "kem_public_key": h(kem.to_bytes()),
        }),
        OpBody::FactoryReset { setup } => json!({ "setup": pk_hex(setup) }),
        OpBody::Endorse => json!({}),
    }
}

pub fn op_json(op: &Op) -> Value {
    json!({
        "bytes": h(op.to_bytes()),
        "content": h(op.content_bytes()),
        "id": h(op.id().0),
        "kind": op.body.kind(),
        "tag": op.body.tag(),
        "device": h(op.device.0),
        "seq": op.seq,
        "prev": h(op.prev.0),
        "issued_ms": op.issued_ms,
        "signers": op.signatures.iter().map(|s| pk_hex(&s.signer)).collect::<Vec<_>>(),
        "body": body_json(&op.body),
    })
}

pub fn grant_json(g: &Grant) -> Value {
    let b = &g.body;
    json!({
        "bytes": h(g.to_bytes()),
        "content": h(b.content_bytes()),
        "id": h(g.id().0),
        "signature": h(g.signature.0),
        "issuer": pk_hex(&b.issuer),
        "subject": pk_hex(&b.subject),
        "scope": b.scope.iter().map(|s| json!({"device": h(s.device.0), "epoch": h(s.epoch.0)})).collect::<Vec<_>>(),
        "actions": b.actions,
        "not_before_ms": b.not_before_ms,
        "not_after_ms": b.not_after_ms,
        "use_limit": b.use_limit,
        "delegation_depth": b.delegation_depth,
        "extensions": b.extensions.iter().map(|e| json!({"tag": e.tag, "value": h(&e.value)})).collect::<Vec<_>>(),
        "allowed_arguments": b.allowed_arguments().ok().flatten().map(|a| a.as_slice().iter().map(h).collect::<Vec<_>>()),
        "salt": h(b.salt),
    })
}

pub fn command_json(sc: &SignedCommand) -> Value {
    let c = &sc.command;
    json!({
        "bytes": h(sc.to_bytes()),
        "content": h(c.content_bytes()),
        "id": h(c.id().0),
        "signature": h(sc.signature.0),
        "device": h(c.device.0),
        "sender": pk_hex(&c.sender),
        "action": c.action,
        "args": h(&c.args),
        "timestamp_ms": c.timestamp_ms,
        "nonce": h(c.nonce),
        "challenge": c.challenge.map(h),
        "grants": c.grants.iter().map(|g| h(g.to_bytes())).collect::<Vec<_>>(),
        "reply_to": match c.reply_to {
            ReplyTo::Direct => json!({"kind": "direct"}),
            ReplyTo::Mailbox(m) => json!({"kind": "mailbox", "mailbox": h(m)}),
        },
    })
}

pub fn response_json(sr: &SignedResponse) -> Value {
    let r = &sr.response;
    json!({
        "bytes": h(sr.to_bytes()),
        "signature": h(sr.signature.0),
        "device": h(r.device.0),
        "command_id": h(r.command.0),
        "timestamp_ms": r.timestamp_ms,
        "outcome": match &r.outcome {
            Outcome::Accepted => json!({"kind": "accepted"}),
            Outcome::Rejected { code, reason } => json!({"kind": "rejected", "code": code, "reason": reason}),
            Outcome::ChallengeRequired { challenge } => json!({"kind": "challenge-required", "challenge": h(challenge)}),
        },
        "body": h(&r.body),
    })
}

pub fn claim_json(p: &ClaimPayload) -> Value {
    json!({
        "bytes": h(p.to_bytes()),
        "text": p.to_text().unwrap().as_str(),
        "identity": pk_hex(&p.identity),
        "kem_commitment": h(p.kem_commitment),
        "setup_secret": h(p.setup_secret.as_slice()),
        "setup_public_key": pk_hex(&p.setup_key().public_key()),
        "name": p.name,
        "addrs": p.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "device_id": h(p.device_id().0),
        "device_id_text": p.device_id().to_string(),
    })
}

pub fn invitation_json(i: &Invitation) -> Value {
    let mut v = json!({
        "bytes": h(i.to_bytes()),
        "link": i.to_link().unwrap().as_str(),
        "guest_secret": h(i.guest_secret.as_slice()),
        "guest_public_key": pk_hex(&i.guest_key().public_key()),
        "grants": i.grants.iter().map(grant_json).collect::<Vec<_>>(),
        "guest_name": i.guest_name,
        "doors": i.doors.iter().map(|d| json!({
            "device": h(d.device.0),
            "device_text": d.device.to_string(),
            "name": d.name,
            "addrs": d.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "nodes": i.nodes,
    });
    // A one-door invitation's long link is in the version 1 layout.
    if i.doors.len() == 1 {
        v["v1_bytes"] = json!(h(i.to_v1_bytes().unwrap().as_slice()));
    }
    v
}

/// Whether a strict, cofactorless Ed25519 verifier (libsodium's `crypto_sign_verify_detached`,
/// ed25519-dalek's `verify_strict`) accepts: `S < L`, `A` and `R` canonical and not of small
/// order, and `R == [S]B - [k]A` exactly. Latchkey's own rule is ZIP-215 (cofactored); the
/// signature vectors state both so another implementation sees where the two part.
pub fn cofactorless_strict_accepts(
    public_key: &[u8; 32],
    signature: &[u8; 64],
    msg: &[u8],
) -> bool {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};
    let canonical_point = |bytes: &[u8]| -> Option<EdwardsPoint> {
        let encoded = CompressedEdwardsY::from_slice(bytes).ok()?;
        let point = encoded.decompress()?;
        (point.compress() == encoded && !point.is_small_order()).then_some(point)
    };
    let (Some(a), Some(r)) = (
        canonical_point(public_key),
        canonical_point(&signature[..32]),
    ) else {
        return false;
    };
    let s_bytes: [u8; 32] = signature[32..].try_into().expect("64-byte signature");
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    let k = Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(&signature[..32])
            .chain_update(public_key)
            .chain_update(msg)
            .finalize()
            .into(),
    );
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s) == r
}

// --- data streams and consent (docs/PROTOCOL.md §14) -----------------------------------------

pub fn reading_json(r: &latchkey_proto::stream::Reading) -> Value {
    json!({
        "meter_time_ms": r.meter_time_ms,
        "tariff": r.tariff,
        "energy_delivered_wh": r.energy_delivered_wh,
        "energy_returned_wh": r.energy_returned_wh,
        "power_delivered_w": r.power_delivered_w,
        "power_returned_w": r.power_returned_w,
        "phases": r.phases.iter().map(|p| json!({
            "voltage_mv": p.voltage_mv,
            "current_ma": p.current_ma,
            "power_delivered_w": p.power_delivered_w,
            "power_returned_w": p.power_returned_w,
        })).collect::<Vec<_>>(),
        "gas_l": r.gas_l,
        "gas_time_ms": r.gas_time_ms,
    })
}

pub fn key_grant_json(g: &latchkey_proto::stream::KeyGrant) -> Value {
    json!({
        "device": h(g.device.0),
        "stream": g.stream,
        "recipient": h(g.recipient),
        "consent": g.consent.map(|c| h(c.0)),
        "issued_ms": g.issued_ms,
        "keys": g.keys.iter().map(|k| json!({
            "key_id": k.key_id,
            "from_seq": k.from_seq,
            "key": h(k.key.as_bytes()),
        })).collect::<Vec<_>>(),
    })
}

pub fn consent_request_json(r: &latchkey_proto::consent::SignedConsentRequest) -> Value {
    let q = r.request();
    json!({
        "provider": {
            "name": q.provider.name,
            "url": q.provider.url,
            "signing": pk_hex(&q.provider.signing),
            "kem_public_key": h(q.provider.kem.to_bytes()),
        },
        "device": h(q.device.0),
        "stream": q.stream,
        "purpose_code": q.purpose_code,
        "purpose_label": latchkey_proto::consent::purpose::label(q.purpose_code),
        "purpose": q.purpose,
        "retention_days": q.retention_days,
        "until_ms": q.until_ms,
        "history": q.history,
        "terms": q.terms,
        "issued_ms": q.issued_ms,
        "nonce": h(q.nonce),
        "signature": h(r.signature().0),
        "id": r.id().to_string(),
    })
}

pub fn consent_entry_json(e: &latchkey_proto::consent::ConsentEntry) -> Value {
    use latchkey_proto::consent::ConsentAction;
    let (kind, consent) = match &e.action {
        ConsentAction::Given(r) => ("given", r.id()),
        ConsentAction::Revoked(id) => ("revoked", *id),
        ConsentAction::Expired(id) => ("expired", *id),
    };
    json!({
        "bytes": h(e.to_bytes()),
        "seq": e.seq,
        "prev": h(e.prev),
        "anchor": h(e.anchor.0),
        "time_ms": e.time_ms,
        "action": kind,
        "consent_id": consent.to_string(),
        "signer": pk_hex(&e.signer),
        "hash": h(e.hash()),
    })
}

pub fn consent_status_json(s: &latchkey_proto::consent::ConsentStatus) -> Value {
    use latchkey_proto::consent::EndKind;
    json!({
        "id": s.id.to_string(),
        "given_ms": s.given_ms,
        "given_by": pk_hex(&s.given_by),
        "given_seq": s.given_seq,
        "ended": s.ended.map(|e| json!({
            "kind": match e.kind {
                EndKind::Revoked => "revoked".to_owned(),
                EndKind::Expired => "expired".to_owned(),
                EndKind::Lapsed(_) => "lapsed".to_owned(),
                EndKind::Transferred => "transferred".to_owned(),
            },
            "time_ms": e.time_ms,
            "by": e.by.as_ref().map(pk_hex),
            "seq": e.seq,
        })),
    })
}
