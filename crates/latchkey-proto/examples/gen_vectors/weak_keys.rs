//! `weak_keys.json`: the public keys strict decoding refuses (docs/PROTOCOL.md §1) and the
//! signature edge cases ZIP-215 settles, with what Latchkey's verifier decides for each.
//!
//! The points come from curve25519-dalek (its eight-torsion table, its point arithmetic), so no
//! curve arithmetic is written here; encodings above p are built byte by byte from p's.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

use crate::*;

/// p = 2^255 - 19, little-endian.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// L = 2^252 + 27742317777372353535851937790883648493 (RFC 8032), little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

const MESSAGE: &[u8] = b"latchkey/v1 ZIP-215 edge-case vector";

/// The order of each point in dalek's eight-torsion table (index i has order 8 / gcd(i, 8)).
fn torsion_order(i: usize) -> u8 {
    match i {
        0 => 1,
        4 => 2,
        2 | 6 => 4,
        _ => 8,
    }
}

/// p + k as a 32-byte encoding (k < 19, so it fits below 2^255), with the sign bit set or not.
fn above_p(k: u8, sign: bool) -> [u8; 32] {
    let mut out = P;
    out[0] += k;
    if sign {
        out[31] |= 0x80;
    }
    out
}

fn with_sign_flipped(bytes: [u8; 32]) -> [u8; 32] {
    let mut out = bytes;
    out[31] ^= 0x80;
    out
}

fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits");
    out
}

/// How dalek sees 32 bytes: no point, or a point with its order class and canonicity.
fn classify(bytes: &[u8; 32]) -> Option<(bool, bool)> {
    let encoded = CompressedEdwardsY(*bytes);
    let point = encoded.decompress()?;
    Some((point.is_small_order(), point.compress() == encoded))
}

/// An owner key's secret scalar and public point, as RFC 8032 expands a 32-byte secret.
struct Expanded {
    a: Scalar,
    prefix: [u8; 32],
    public: EdwardsPoint,
}

fn expand(key: &SigningKey) -> Expanded {
    let digest = Sha512::digest(key.to_bytes().as_slice());
    let mut s: [u8; 32] = digest[..32].try_into().unwrap();
    s[0] &= 248;
    s[31] &= 127;
    s[31] |= 64;
    let a = Scalar::from_bytes_mod_order(s);
    let public = EdwardsPoint::mul_base(&a);
    assert_eq!(
        public.compress().to_bytes(),
        key.public_key().to_bytes(),
        "RFC 8032 expansion matches the library's key"
    );
    Expanded {
        a,
        prefix: digest[32..].try_into().unwrap(),
        public,
    }
}

fn challenge(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(r)
            .chain_update(a)
            .chain_update(msg)
            .finalize()
            .into(),
    )
}

fn signature(r: &[u8; 32], s: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(r);
    out[32..].copy_from_slice(s);
    out
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    weak_keys(&mut v, w);
    signatures(&mut v, w);
    v
}

fn weak_keys(v: &mut Vectors, w: &World) {
    let mut canonical_small = Vec::new();
    for (i, point) in EIGHT_TORSION.iter().enumerate() {
        let bytes = point.compress().to_bytes();
        assert_eq!(classify(&bytes), Some((true, true)));
        canonical_small.push(bytes);
        v.fail_decode(
            &format!("fail_weak_key_small_order_{i}"),
            "PublicKey",
            &format!(
                "The canonical encoding of a point of order {} (the eight-torsion point T{i}, \
                 T1 generating the group). Under cofactored verification [8][k]A vanishes, so \
                 a signature under it verifies for any message: refused at decoding.",
                torsion_order(i)
            ),
            &bytes,
            "WeakKey",
        );
    }

    // Every other spelling of a small-order point: the sign bit set on x = 0 ("negative
    // zero"), and y + p for the small y values (y = 0 is the order-4 pair, y = 1 the identity).
    let mut candidates: Vec<([u8; 32], String)> = Vec::new();
    for (i, c) in canonical_small.iter().enumerate() {
        candidates.push((
            with_sign_flipped(*c),
            format!("T{i}'s canonical encoding with the sign bit flipped"),
        ));
    }
    for k in 0..19u8 {
        for sign in [false, true] {
            candidates.push((
                above_p(k, sign),
                format!(
                    "y = p + {k} (that is, y = {k} written at or above p), sign bit {}",
                    u8::from(sign)
                ),
            ));
        }
    }
    let mut n_small = 0;
    let mut n_big = 0;
    let mut canonical_twin = None;
    for (bytes, how) in &candidates {
        match classify(bytes) {
            Some((true, false)) => {
                v.fail_decode(
                    &format!("fail_weak_key_small_order_noncanonical_{n_small}"),
                    "PublicKey",
                    &format!(
                        "A non-canonical encoding of a small-order point: {how}. ZIP-215 \
                         decoding takes it; Latchkey refuses it (small order, and not the \
                         point's one encoding)."
                    ),
                    bytes,
                    "WeakKey",
                );
                n_small += 1;
            }
            Some((false, false)) => {
                v.fail_decode(
                    &format!("fail_weak_key_y_at_least_p_{n_big}"),
                    "PublicKey",
                    &format!(
                        "{how}: a point of large order, but y is not reduced below p, so these \
                         bytes are a second spelling of a point another key already is. Refused."
                    ),
                    bytes,
                    "WeakKey",
                );
                if canonical_twin.is_none() {
                    let reduced = CompressedEdwardsY(*bytes).decompress().unwrap().compress();
                    canonical_twin = Some((reduced.to_bytes(), how.clone()));
                }
                n_big += 1;
            }
            // Flipping the sign of a point with x != 0 spells its negation, canonically.
            Some((_, true)) => assert!(canonical_small.contains(bytes), "{how}"),
            None => {}
        }
    }
    assert_eq!(
        n_small, 6,
        "the six known non-canonical small-order encodings"
    );
    assert!(n_big > 0);
    let (twin, how) = canonical_twin.expect("some y below 19 is on the curve");
    let twin_key = PublicKey::from_bytes(twin).expect("the canonical form is a valid key");
    v.ok(
        "weak_key_canonical_twin",
        "decode",
        &format!(
            "The canonical encoding of the point fail_weak_key_y_at_least_p_0 spells ({how}): \
             a valid public key (nobody knows its secret, but it is not weak by this rule)."
        ),
        json!({ "codec": "PublicKey", "bytes": pk_hex(&twin_key) }),
    );

    // The human form and a decoder that carries keys: the same rule wherever a key is read.
    let identity_text =
        bech32::encode::<bech32::Bech32m>(bech32::Hrp::parse("lkpk").unwrap(), &canonical_small[0])
            .unwrap();
    v.fail(
        "fail_weak_key_text_identity",
        "text_fail",
        "The identity point (order 1) in its lkpk1 text form.",
        PublicKey::parse(&identity_text),
        "WeakKey",
        json!({ "kind": "public-key", "text": identity_text }),
    );
    let op = {
        let mut chain = Chain::from_genesis(w.front.genesis("Front door", T0).unwrap()).unwrap();
        let body = OpBody::Claim(owners(&[&w.a], 1));
        let op = signed(chain.propose(T0 + MINUTE, body), &[&w.front.setup, &w.a]);
        chain.append(op.clone()).unwrap();
        op.to_bytes()
    };
    let a = w.a.public_key().to_bytes();
    let at = op
        .windows(32)
        .position(|win| win == a)
        .expect("the claim names A");
    let weak_owner = patch(&op, at, &a, &canonical_small[2]);
    v.fail_decode(
        "fail_weak_key_in_claim_op",
        "Op",
        "A claim op for the front door whose owner set names the order-4 point T2 instead of \
         owner A: the op does not decode, whatever its signatures.",
        &weak_owner,
        "WeakKey",
    );

    // What is not weak: a key with a torsion component of large order still needs its prime
    // part's discrete log to sign, and the cofactored equation ignores the torsion.
    let mixed = (expand(&w.a).public + EIGHT_TORSION[1])
        .compress()
        .to_bytes();
    assert_eq!(classify(&mixed), Some((false, true)));
    v.ok(
        "weak_key_mixed_order_accepted",
        "decode",
        "Owner A's public point plus the order-8 point T1: of order 8L, canonical, and not of \
         small order. Accepted: only A's holder can sign for it (see \
         signature_zip215_mixed_order_key).",
        json!({ "codec": "PublicKey", "bytes": h(mixed) }),
    );
}

fn signatures(v: &mut Vectors, w: &World) {
    let key = expand(&w.a);
    let a_bytes = w.a.public_key().to_bytes();
    let nonce = Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(key.prefix)
            .chain_update(MESSAGE)
            .finalize()
            .into(),
    );
    let sig_ok = |v: &mut Vectors, name: &str, description: &str, pk: [u8; 32], sig: [u8; 64]| {
        let strict = cofactorless_strict_accepts(&pk, &sig, MESSAGE);
        let key = PublicKey::from_bytes(pk).expect("a valid key");
        assert!(key.verify(&Signature(sig), MESSAGE), "{name}");
        v.ok(
            name,
            "signature",
            description,
            json!({
                "public_key": h(pk),
                "message": h(MESSAGE),
                "signature": h(sig),
                "cofactorless_strict_accepts": strict,
            }),
        );
    };
    let sig_fail =
        |v: &mut Vectors, name: &str, description: &str, pk: [u8; 32], sig: [u8; 64], e| {
            let strict = cofactorless_strict_accepts(&pk, &sig, MESSAGE);
            v.fail(
                name,
                "signature_fail",
                description,
                PublicKey::from_bytes(pk)
                    .and_then(|k| k.verify_or(&Signature(sig), MESSAGE, "vector")),
                e,
                json!({
                    "public_key": h(pk),
                    "message": h(MESSAGE),
                    "signature": h(sig),
                    "cofactorless_strict_accepts": strict,
                }),
            );
        };

    // The ordinary case, as RFC 8032 signs.
    let r = EdwardsPoint::mul_base(&nonce).compress().to_bytes();
    let plain_s = (nonce + challenge(&r, &a_bytes, MESSAGE) * key.a).to_bytes();
    let plain = signature(&r, &plain_s);
    assert_eq!(
        plain,
        w.a.sign(MESSAGE).0,
        "RFC 8032 signing matches the library's"
    );
    sig_ok(
        v,
        "signature_zip215_rfc8032",
        "Owner A's RFC 8032 signature over the message: every verifier accepts it.",
        a_bytes,
        plain,
    );

    // S not reduced: S + L verifies the same equation but is refused by every rule.
    let unreduced = signature(&r, &add_le(&plain_s, &L));
    sig_fail(
        v,
        "fail_signature_zip215_s_plus_l",
        "signature_zip215_rfc8032 with L added to S (S >= L): refused, as ZIP-215 and RFC 8032 \
         both require S < L; otherwise every signature would have a second valid form.",
        a_bytes,
        unreduced,
        "BadSignature",
    );
    sig_fail(
        v,
        "fail_signature_zip215_s_is_l",
        "R of signature_zip215_rfc8032 with S = L exactly: not reduced, refused.",
        a_bytes,
        signature(&r, &L),
        "BadSignature",
    );

    // Small-order R, canonical and not: with S = k·a, [8]R = [8]([S]B - [k]A) holds.
    let small_r = [
        (
            EIGHT_TORSION[0].compress().to_bytes(),
            "the identity, canonical",
        ),
        (
            above_p(1, false),
            "the identity written as y = p + 1 (non-canonical)",
        ),
        (
            with_sign_flipped(EIGHT_TORSION[0].compress().to_bytes()),
            "the identity with the sign bit set (non-canonical)",
        ),
        (
            EIGHT_TORSION[1].compress().to_bytes(),
            "the order-8 point T1, canonical",
        ),
        (
            above_p(0, false),
            "the order-4 point with y = 0 written as y = p (non-canonical)",
        ),
    ];
    for (i, (r, how)) in small_r.iter().enumerate() {
        let s = (challenge(r, &a_bytes, MESSAGE) * key.a).to_bytes();
        sig_ok(
            v,
            &format!("signature_zip215_small_order_r_{i}"),
            &format!(
                "R is {how} and S = k·a: only A's holder can make it, and the cofactored \
                 equation [8][S]B = [8]R + [8][k]A holds. Accepted (ZIP-215 takes R in any \
                 encoding and of any order); strict cofactorless verifiers refuse it."
            ),
            a_bytes,
            signature(r, &s),
        );
    }

    // Mixed-order R: R = [r]B + T1.
    let r_mixed = (EdwardsPoint::mul_base(&nonce) + EIGHT_TORSION[1])
        .compress()
        .to_bytes();
    let s = (nonce + challenge(&r_mixed, &a_bytes, MESSAGE) * key.a).to_bytes();
    sig_ok(
        v,
        "signature_zip215_mixed_order_r",
        "R = [r]B + T1 (T1 of order 8), S = r + k·a: the cofactorless equation misses by T1, \
         the cofactored one holds. Accepted by Latchkey; strict cofactorless verifiers refuse it.",
        a_bytes,
        signature(&r_mixed, &s),
    );

    // Mixed-order key: A' = A + T1, signed by A's holder.
    let mixed_key = (key.public + EIGHT_TORSION[1]).compress().to_bytes();
    let found = (0u8..=255)
        .map(|i| {
            let msg_nonce = nonce + Scalar::from(u64::from(i));
            let r = EdwardsPoint::mul_base(&msg_nonce).compress().to_bytes();
            let k = challenge(&r, &mixed_key, MESSAGE);
            (r, msg_nonce + k * key.a, k)
        })
        // k·T1 vanishes when 8 divides k; pick a nonce where it does not, so the two rules part.
        .find(|(_, _, k)| k.to_bytes()[0] % 8 != 0)
        .expect("some nonce gives k not divisible by 8");
    sig_ok(
        v,
        "signature_zip215_mixed_order_key",
        "The key weak_key_mixed_order_accepted (A + T1) and a signature by A's holder: \
         [8][S]B = [8]R + [8][k]A' holds because [8]T1 is the identity. Accepted by Latchkey; \
         a cofactorless verifier misses by [k]T1 and refuses it.",
        mixed_key,
        signature(&found.0, &found.1.to_bytes()),
    );

    // A key of small order would let anyone sign: R = identity, S = 0 verifies for it under
    // ZIP-215. The key is refused before any signature is looked at.
    let identity = EIGHT_TORSION[0].compress().to_bytes();
    sig_fail(
        v,
        "fail_signature_zip215_small_order_key",
        "Key = the identity, R = the identity, S = 0: ZIP-215's equation holds for any message \
         (a forgery nobody needed a secret for). Latchkey refuses the key itself (WeakKey), so \
         no signature under it is ever checked.",
        identity,
        signature(&identity, &[0u8; 32]),
        "WeakKey",
    );
    sig_fail(
        v,
        "fail_signature_zip215_noncanonical_key",
        "Key = the order-4 point written as y = p, R = the identity, S = 0: the same forgery \
         with a non-canonical key encoding; refused at decoding.",
        above_p(0, false),
        signature(&identity, &[0u8; 32]),
        "WeakKey",
    );
    let mut off_curve = r;
    for b in 0u8..=255 {
        off_curve[0] = b;
        if CompressedEdwardsY(off_curve).decompress().is_none() {
            break;
        }
    }
    assert!(CompressedEdwardsY(off_curve).decompress().is_none());
    sig_fail(
        v,
        "fail_signature_zip215_r_not_a_point",
        "signature_zip215_rfc8032 with R's first byte changed so R is no curve point: refused.",
        a_bytes,
        signature(&off_curve, &plain_s),
        "BadSignature",
    );
    sig_fail(
        v,
        "fail_signature_zip215_other_message",
        "signature_zip215_rfc8032 checked over the message with its last byte flipped.",
        a_bytes,
        {
            // A valid signature over a different message, so the vector's message fails.
            let mut other = MESSAGE.to_vec();
            *other.last_mut().unwrap() ^= 1;
            w.a.sign(&other).0
        },
        "BadSignature",
    );
}
