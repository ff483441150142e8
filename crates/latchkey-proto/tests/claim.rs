//! The claim code a device shows as a QR code, and the claim an owner builds from it.

use latchkey_proto::chain::{OpBody, OwnerSet};
use latchkey_proto::claim::{ClaimPayload, DeviceAddr, MAX_CLAIM_TEXT};
use latchkey_proto::Error;
use latchkey_testkit::{person, TestDevice, T0};

fn addrs() -> Vec<DeviceAddr> {
    vec![
        DeviceAddr::parse("192.168.1.40:7380").unwrap(),
        DeviceAddr::parse("[fd00::1234:5678]:7380").unwrap(),
        DeviceAddr::parse("front-door.local:7380").unwrap(),
    ]
}

#[test]
fn a_full_claim_code_fits_the_qr_budget_and_round_trips() {
    let dev = TestDevice::new(40, "Front door");
    let payload = dev.keys.claim_payload("Front door, main entrance", addrs());
    let text = payload.to_text().unwrap();
    assert!(text.len() <= MAX_CLAIM_TEXT, "{} chars", text.len());
    assert!(text.starts_with("LATCHKEY:C1:"));
    // Everything in the text is in the QR alphanumeric set.
    assert!(text
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || " $%*+-./:".contains(c)));
    let parsed = ClaimPayload::parse(&format!("  {}\n", text.to_lowercase())).unwrap();
    assert_eq!(parsed, payload);
    assert_eq!(parsed.device_id(), dev.chain.device());
    assert_eq!(parsed.name.len(), 24, "names are cut to fit");
    assert!(
        !format!("{parsed:?}").contains(&text[12..40]),
        "Debug hides the setup secret"
    );
}

#[test]
fn the_scanner_checks_the_published_keys_and_claims_with_the_setup_secret() {
    let alice = person(1);
    let mut dev = TestDevice::new(41, "Door");
    let payload =
        ClaimPayload::parse(&dev.keys.claim_payload("Door", addrs()).to_text().unwrap()).unwrap();
    // The owner fetched the genesis from a node: it must match the code.
    let genesis = &dev.chain.ops()[0];
    let OpBody::Genesis(g) = &genesis.body else {
        panic!("first op is the genesis")
    };
    payload.check_kem(&g.kem).unwrap();
    assert_eq!(genesis.device, payload.device_id());
    let impostor = TestDevice::new(42, "Door");
    assert_eq!(
        payload.check_kem(&impostor.chain.state().kem),
        Err(Error::KemCommitmentMismatch)
    );
    let mut claim = dev.chain.propose(
        T0,
        OpBody::Claim(OwnerSet {
            owners: vec![alice.public_key()],
            threshold: 1,
        }),
    );
    claim.sign(&payload.setup_key());
    claim.sign(&alice);
    dev.chain.append(claim).unwrap();
    assert!(dev.chain.state().is_owner(&alice.public_key()));
}

#[test]
fn bad_codes_get_clear_errors() {
    assert!(matches!(
        ClaimPayload::parse("https://example.com"),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        ClaimPayload::parse("LATCHKEY:C1:!!!!"),
        Err(Error::BadText { .. })
    ));
    assert!(matches!(
        ClaimPayload::parse(&format!("LATCHKEY:C1:{}", "A".repeat(400))),
        Err(Error::TooLarge { .. })
    ));
    let dev = TestDevice::new(43, "Door");
    let text = dev.keys.claim_payload("Door", vec![]).to_text().unwrap();
    assert!(matches!(
        ClaimPayload::parse(&text[..text.len() - 8]),
        Err(Error::Truncated { .. } | Error::BadText { .. })
    ));
    let too_many = dev.keys.claim_payload("Door", [addrs(), addrs()].concat());
    assert!(too_many.to_text().is_err());
    assert!(DeviceAddr::parse("no port").is_err());
    assert!(DeviceAddr::parse("bad_host!:80").is_err());
}
