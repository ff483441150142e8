//! The consent log's rules (docs/PROTOCOL.md §14.6), each performed against a real verified
//! chain: requests and links, entries signed by owners, transfers, forged and replayed entries.

use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::RejectCode;
use latchkey_proto::consent::*;
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, SigningKey};
use latchkey_proto::Error;
use latchkey_testkit::{person, rng, sorted, TestDevice, DAY, HOUR, T0};

struct Provider {
    key: SigningKey,
    kem: KemSecretKey,
}

fn provider(seed: u64) -> Provider {
    let mut r = rng(seed);
    Provider {
        key: SigningKey::generate(&mut r),
        kem: KemSecretKey::generate(&mut r),
    }
}

fn request(
    p: &Provider,
    device: DeviceId,
    until_ms: Option<u64>,
    nonce: u8,
) -> SignedConsentRequest {
    ConsentRequest {
        provider: ProviderIdentity {
            name: "Energy Insights B.V.".into(),
            url: "https://insights.example/privacy".into(),
            signing: p.key.public_key(),
            kem: p.kem.public().clone(),
        },
        device,
        stream: "p1".into(),
        purpose_code: purpose::INSIGHTS,
        purpose: "Monthly energy report and saving tips.".into(),
        retention_days: 30,
        until_ms,
        history: false,
        terms: Some("500 units per hour".into()),
        issued_ms: T0,
        nonce: [nonce; 16],
    }
    .sign(&p.key)
    .unwrap()
}

fn claimed(seed: u64) -> TestDevice {
    let mut d = TestDevice::new(seed, "meter");
    d.claim(&[&person(1)], 1);
    d
}

fn refused_why(e: Error) -> &'static str {
    match e {
        Error::ConsentRefused { why, .. } => why,
        other => panic!("expected ConsentRefused, got {other:?}"),
    }
}

#[test]
fn a_request_link_round_trips_in_any_case_and_verifies() {
    let d = claimed(1);
    let p = provider(2);
    let signed = request(&p, d.chain.device(), None, 1);
    let link = signed.to_link();
    assert!(link.starts_with("LATCHKEY://C/"));
    assert!(link.len() < MAX_CONSENT_LINK);
    assert_eq!(SignedConsentRequest::from_link(&link).unwrap(), signed);
    assert_eq!(
        SignedConsentRequest::from_link(&format!("  {}\n", link.to_lowercase())).unwrap(),
        signed
    );
    let bytes = signed.to_bytes();
    assert_eq!(
        SignedConsentRequest::from_bytes(&bytes).unwrap().to_bytes(),
        bytes
    );
    let id = signed.id();
    assert_eq!(id.to_string().parse::<ConsentId>().unwrap(), id);
    assert_eq!(
        id.to_string().to_uppercase().parse::<ConsentId>().unwrap(),
        id
    );
    // Another key's signature: the link does not verify.
    let mut forged = signed.request().clone();
    forged.purpose = "Sell to advertisers.".into();
    let other = provider(3);
    forged.provider.signing = other.key.public_key();
    let forged = forged.sign(&other.key).unwrap();
    let mut tampered = forged.to_bytes();
    // Put back the original provider's key: the signature no longer matches.
    let at = tampered
        .windows(32)
        .position(|w| w == other.key.public_key().to_bytes())
        .unwrap();
    tampered[at..at + 32].copy_from_slice(&p.key.public_key().to_bytes());
    let text = format!(
        "LATCHKEY://C/{}",
        data_encoding::BASE32_NOPAD.encode(&tampered)
    );
    assert!(matches!(
        SignedConsentRequest::from_link(&text),
        Err(Error::BadSignature { .. })
    ));
    assert!(matches!(
        SignedConsentRequest::from_link("LATCHKEY://I/AAAA"),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        SignedConsentRequest::from_link(&"LATCHKEY://C/A".repeat(700)),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn a_given_and_revoked_consent_reads_back_from_the_log() {
    let d = claimed(4);
    let owner = person(1);
    let p = provider(5);
    let signed = request(&p, d.chain.device(), None, 1);
    let mut log = ConsentLog::new(&d.chain);
    let given = log
        .next_entry(
            &d.chain,
            &owner,
            T0 + HOUR,
            ConsentAction::Given(signed.clone()),
        )
        .unwrap();
    assert_eq!(ConsentEntry::from_bytes(&given.to_bytes()).unwrap(), given);
    log.append(&d.chain, given.clone()).unwrap();
    let revoke = log
        .next_entry(
            &d.chain,
            &owner,
            T0 + 2 * HOUR,
            ConsentAction::Revoked(signed.id()),
        )
        .unwrap();
    assert_eq!(revoke.prev, given.hash());
    log.append(&d.chain, revoke.clone()).unwrap();

    let list = ConsentList(log.entries().to_vec());
    let bytes = list.to_bytes();
    let again = ConsentList::from_bytes(&bytes).unwrap();
    assert_eq!(again, list);
    let verified = ConsentLog::verify(&d.chain, again.0).unwrap();
    let consents = verified.consents();
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].id, signed.id());
    assert_eq!(consents[0].given_ms, T0 + HOUR);
    let ended = consents[0].ended.unwrap();
    assert_eq!(ended.kind, EndKind::Revoked);
    assert_eq!(ended.by, Some(owner.public_key()));
    assert_eq!(ended.seq, Some(2));
    assert!(verified.readers_at(T0).is_empty());
    assert_eq!(verified.readers_at(T0 + HOUR).len(), 1);
    assert!(verified.readers_at(T0 + 2 * HOUR).is_empty());
}

#[test]
fn a_stranger_cannot_give_or_revoke() {
    let d = claimed(6);
    let p = provider(7);
    let log = ConsentLog::new(&d.chain);
    let stranger = person(9);
    let e = log.next_entry(
        &d.chain,
        &stranger,
        T0,
        ConsentAction::Given(request(&p, d.chain.device(), None, 1)),
    );
    assert_eq!(
        refused_why(e.unwrap_err()),
        "its signer is not an owner at its anchor"
    );
    let code = RejectCode::for_error(&Error::ConsentRefused { seq: 1, why: "x" });
    assert_eq!(code as u16, 24);
    let code = RejectCode::for_error(&Error::UnknownStream {
        stream: "p2".into(),
    });
    assert_eq!(code as u16, 23);
    assert_eq!(RejectCode::from_u16(24), Some(RejectCode::ConsentRefused));
}

#[test]
fn a_transfer_ends_every_consent_of_the_old_era() {
    let mut d = claimed(8);
    let old = person(1);
    let new = person(2);
    let p = provider(9);
    let signed = request(&p, d.chain.device(), None, 1);
    let mut log = ConsentLog::new(&d.chain);
    let given = log
        .next_entry(&d.chain, &old, T0, ConsentAction::Given(signed.clone()))
        .unwrap();
    log.append(&d.chain, given).unwrap();
    d.apply(
        OpBody::Transfer(OwnerSet {
            owners: sorted(&[&new]),
            threshold: 1,
        }),
        &[&old, &new],
    );
    let verified = ConsentLog::verify(&d.chain, log.entries().to_vec()).unwrap();
    let ended = verified.consents()[0].ended.unwrap();
    assert_eq!(ended.kind, EndKind::Transferred);
    // The new owner cannot revoke what already ended; the old owner can no longer sign.
    let e = verified.next_entry(
        &d.chain,
        &new,
        T0 + DAY,
        ConsentAction::Revoked(signed.id()),
    );
    assert_eq!(refused_why(e.unwrap_err()), "the consent has already ended");
    let e = verified.next_entry(
        &d.chain,
        &old,
        T0 + DAY,
        ConsentAction::Revoked(signed.id()),
    );
    assert_eq!(
        refused_why(e.unwrap_err()),
        "its signer is not an owner at its anchor"
    );
}

#[test]
fn expiry_needs_the_until_to_have_passed() {
    let d = claimed(10);
    let owner = person(1);
    let p = provider(11);
    let signed = request(&p, d.chain.device(), Some(T0 + DAY), 1);
    let mut log = ConsentLog::new(&d.chain);
    let given = log
        .next_entry(&d.chain, &owner, T0, ConsentAction::Given(signed.clone()))
        .unwrap();
    log.append(&d.chain, given).unwrap();
    let early = log.next_entry(
        &d.chain,
        &owner,
        T0 + HOUR,
        ConsentAction::Expired(signed.id()),
    );
    assert_eq!(
        refused_why(early.unwrap_err()),
        "the consent's until has not passed"
    );
    assert_eq!(log.readers_at(T0 + HOUR).len(), 1);
    assert!(log.readers_at(T0 + DAY).is_empty());
    assert_eq!(
        log.consents_at(T0 + DAY)[0].ended.unwrap().kind,
        EndKind::Lapsed(T0 + DAY)
    );
    let on_time = log
        .next_entry(
            &d.chain,
            &owner,
            T0 + DAY,
            ConsentAction::Expired(signed.id()),
        )
        .unwrap();
    log.append(&d.chain, on_time).unwrap();
    assert_eq!(log.consents()[0].ended.unwrap().kind, EndKind::Expired);
    // A request whose until is already past cannot be given.
    let stale = request(&p, d.chain.device(), Some(T0), 2);
    let e = log.next_entry(&d.chain, &owner, T0 + DAY, ConsentAction::Given(stale));
    assert_eq!(
        refused_why(e.unwrap_err()),
        "the request's until has passed"
    );
}

/// A signer can make many valid signatures over one request; the consent id must not follow
/// them, or one request could be given twice and revoked once.
#[test]
fn a_consent_id_does_not_depend_on_the_signature_bytes() {
    let d = claimed(12);
    let p = provider(13);
    let signed = request(&p, d.chain.device(), None, 1);
    let mut bytes = signed.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let other = SignedConsentRequest::from_bytes(&bytes).unwrap();
    assert_ne!(other, signed);
    assert_eq!(other.id(), signed.id());
    assert!(other.verify().is_err());
}

/// An owner who stays an owner across a transfer (the device is transferred to a set that
/// keeps them) still cannot have an entry admitted that is anchored in the old era: its
/// consents ended with that era, and a node or device must not take a stale view's entry.
#[test]
fn admission_needs_an_anchor_in_the_current_era() {
    let mut d = claimed(14);
    let owner = person(1);
    let p = provider(15);
    let signed = request(&p, d.chain.device(), None, 1);
    let old_chain = d.chain.clone();
    let log = ConsentLog::new(&old_chain);
    let stale = log
        .next_entry(&old_chain, &owner, T0, ConsentAction::Given(signed.clone()))
        .unwrap();
    d.apply(
        OpBody::Transfer(OwnerSet {
            owners: sorted(&[&owner]),
            threshold: 1,
        }),
        &[&owner],
    );
    // It verifies as history (the owner was one at its anchor) and ends at the transfer...
    let history = ConsentLog::verify(&d.chain, vec![stale.clone()]).unwrap();
    assert_eq!(
        history.consents()[0].ended.unwrap().kind,
        EndKind::Transferred
    );
    assert!(history.readers_at(T0 + HOUR).is_empty());
    // ...but it is not admitted now.
    let e = log.check_next(&d.chain, &stale).unwrap_err();
    assert_eq!(
        refused_why(e),
        "its anchor is in an earlier era (the device changed hands since)"
    );
    // Anchored on the new head, the same consent is admitted.
    let fresh = log
        .next_entry(&d.chain, &owner, T0 + HOUR, ConsentAction::Given(signed))
        .unwrap();
    assert_eq!(fresh.anchor, d.chain.head());
    let mut log = log;
    log.append(&d.chain, fresh).unwrap();
    assert_eq!(log.readers_at(T0 + HOUR).len(), 1);
}

/// The entry hash (what the next entry links to) does not cover the signature, so a copy with
/// other valid signature bytes links the same; nodes compare hashes, not bytes.
#[test]
fn the_entry_hash_covers_the_content_only() {
    let d = claimed(16);
    let owner = person(1);
    let p = provider(17);
    let log = ConsentLog::new(&d.chain);
    let e = log
        .next_entry(
            &d.chain,
            &owner,
            T0,
            ConsentAction::Given(request(&p, d.chain.device(), None, 1)),
        )
        .unwrap();
    let mut other = e.clone();
    other.signature.0[0] ^= 1;
    assert_eq!(other.hash(), e.hash());
    let mut moved = e.clone();
    moved.time_ms += 1;
    assert_ne!(moved.hash(), e.hash());
}

/// Every field at its limit: the largest valid request is 2,362 bytes, its link 3,793
/// characters, both under their caps; a given entry carrying it is 2,574 bytes.
#[test]
fn the_largest_request_fits_its_caps() {
    let d = claimed(18);
    let p = provider(19);
    let signed = ConsentRequest {
        provider: ProviderIdentity {
            name: "n".repeat(64),
            url: "u".repeat(200),
            signing: p.key.public_key(),
            kem: p.kem.public().clone(),
        },
        device: d.chain.device(),
        stream: "s".repeat(32),
        purpose_code: purpose::OTHER,
        purpose: "p".repeat(500),
        retention_days: u32::MAX,
        until_ms: Some(u64::MAX),
        history: true,
        terms: Some("t".repeat(200)),
        issued_ms: u64::MAX,
        nonce: [0xff; 16],
    }
    .sign(&p.key)
    .unwrap();
    assert_eq!(signed.to_bytes().len(), 2362);
    assert_eq!(signed.to_link().len(), 3793);
    let log = ConsentLog::new(&d.chain);
    let e = log
        .next_entry(&d.chain, &person(1), T0, ConsentAction::Given(signed))
        .unwrap();
    assert_eq!(e.to_bytes().len(), 2574);
    // One byte over a field's limit is refused when signing.
    let mut over = e.clone();
    if let ConsentAction::Given(r) = &mut over.action {
        let mut q = r.request().clone();
        q.purpose.push('p');
        assert!(matches!(q.sign(&p.key), Err(Error::Invalid { .. })));
    }
}
