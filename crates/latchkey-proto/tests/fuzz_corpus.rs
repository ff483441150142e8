//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz targets' own entries, so
//! every input the fuzzer ever kept, and every crash it found, stays a regression test on stable.
//! The entries live in `fuzz/src/lib.rs` and are compiled here unchanged: one decode call the
//! product makes per target, plus the round-trip checks.
//!
//! `cargo test -p latchkey-proto --test fuzz_corpus -- --ignored write_seed_corpus` regenerates
//! the seed files (a handful of valid encodings per target). Envelopes differ on each run, since
//! sntrup761 encapsulation draws from the OS; everything else is deterministic.

#[path = "../../../fuzz/src/lib.rs"]
mod fuzz_entries;

use std::fs;
use std::net::SocketAddr;
use std::panic;
use std::path::{Path, PathBuf};

use latchkey_proto::chain::{Chain, Op, OpBody, OpId, OpList, OwnerSet};
use latchkey_proto::claim::{ClaimPayload, DeviceAddr};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{
    Command, Outcome, RejectCode, ReplyTo, Response, SignedCommand, SignedResponse,
};
use latchkey_proto::envelope;
use latchkey_proto::grant::{AllowedArguments, Extension, Grant, GrantBody, GrantScope};
use latchkey_proto::invite::{Invitation, InviteDoor};
use latchkey_proto::keys::{PublicKey, RecoveryPhrase, SigningKey};
use latchkey_proto::pad;
use latchkey_proto::schedule::WeeklySchedule;
use latchkey_proto::shortlink::{SealedInvitation, ShortLink};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

/// The corpus files of one target; libFuzzer's temporary files (`.tmp*`, git-ignored) skipped.
fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; every fuzz target needs a seed corpus (see this file's header)",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_replays_without_panicking() {
    let root = corpus_root();
    let mut total = 0;
    for (target, entry) in fuzz_entries::TARGETS {
        let files = corpus_files(&root.join(target));
        assert!(!files.is_empty(), "fuzz/corpus/{target}/ is empty");
        for path in files {
            let data = fs::read(&path).unwrap();
            let outcome = panic::catch_unwind(|| entry(&data));
            assert!(outcome.is_ok(), "{} panicked", path.display());
            total += 1;
        }
    }
    assert!(total >= fuzz_entries::TARGETS.len());
}

#[test]
fn every_corpus_directory_is_a_target() {
    for entry in fs::read_dir(corpus_root()).expect("fuzz/corpus/ exists") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            fuzz_entries::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name}/ matches no target in fuzz/src/lib.rs"
        );
    }
}

// --- seed corpus ---------------------------------------------------------------------------

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn owner_set(keys: &[&SigningKey], threshold: u8) -> OwnerSet {
    let mut owners: Vec<PublicKey> = keys.iter().map(|k| k.public_key()).collect();
    owners.sort();
    OwnerSet { owners, threshold }
}

fn grant(issuer: &SigningKey, subject: PublicKey, scope: GrantScope, depth: u8) -> Grant {
    GrantBody {
        issuer: issuer.public_key(),
        subject,
        scope: vec![scope],
        actions: vec!["open".into(), "status".into()],
        not_before_ms: 1_700_000_000_000,
        not_after_ms: 1_700_086_400_000,
        use_limit: Some(5 + depth as u32),
        delegation_depth: depth,
        extensions: vec![Extension {
            tag: 1,
            value: b"weekdays".to_vec(),
        }],
        salt: [depth; 16],
    }
    .sign(issuer)
    .unwrap()
}

/// A host's invitation to a guest and a guest's onward one to a cleaner (two grants).
fn invitation_seeds(seeds: &Seeds) {
    let device = fuzz_entries::device_keys().device_id();
    let scope = GrantScope {
        device,
        epoch: OpId([3; 32]),
    };
    let (host, guest, cleaner) = (key(1), key(4), key(5));
    let to_guest = grant(&host, guest.public_key(), scope, 1);
    let to_cleaner = grant(&guest, cleaner.public_key(), scope, 0);
    let invitations = [
        ("guest", guest.to_bytes(), vec![to_guest.clone()]),
        ("cleaner", cleaner.to_bytes(), vec![to_guest, to_cleaner]),
    ];
    for (name, secret, grants) in invitations {
        let invitation = Invitation {
            guest_secret: secret,
            grants,
            guest_name: name.into(),
            doors: vec![InviteDoor {
                device,
                name: "Front door".into(),
                addrs: vec![DeviceAddr::parse("door.local:7420").unwrap()],
            }],
            nodes: vec!["http://127.0.0.1:7001".into()],
        };
        seeds.put("invite_bytes", name, &invitation.to_bytes());
        seeds.put(
            "invite_bytes",
            &format!("{name}-v1"),
            &invitation.to_v1_bytes().unwrap(),
        );
        seeds.put("invitation_v2", name, &invitation.to_bytes()[1..]);
        let link = fuzz_entries::fixed_short_link();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        seeds.put(
            "sealed_invitation",
            name,
            &SealedInvitation::seal(&link, &invitation, &mut rng).unwrap(),
        );
        seeds.put(
            "sealed_invitation",
            &format!("{name}-padded"),
            &pad::pad(&invitation.to_bytes(), &mut rng).unwrap(),
        );
        seeds.put(
            "invite_link",
            name,
            invitation.to_link().unwrap().as_bytes(),
        );
    }
}

/// Short links: one, three and four nodes.
fn short_link_seeds(seeds: &Seeds) {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    for (name, n) in [("one", 1), ("three", 3), ("four", 4)] {
        let nodes = (1..=n).map(|i| format!("https://n{i}.example")).collect();
        let link = ShortLink::generate(nodes, &mut rng).unwrap();
        seeds.put("short_link_text", name, link.to_text().unwrap().as_bytes());
    }
}

#[test]
#[ignore = "writes fuzz/corpus/invite_*, invitation_v2, sealed_invitation and short_link_text; run by hand to regenerate those seeds alone"]
fn write_invitation_seed_corpus() {
    let seeds = Seeds {
        root: corpus_root(),
    };
    invitation_seeds(&seeds);
    short_link_seeds(&seeds);
}

/// Weekly-schedule values (extension 0x81) and a grant carrying one.
fn schedule_seeds(seeds: &Seeds) {
    // Reaches the weekly-schedule extension's own decoder (tag 0x81).
    let weekly = |specs: &[&str], tz: &str| WeeklySchedule::parse_spec(specs, tz).unwrap();
    let host = key(1);
    let scope = GrantScope {
        device: fuzz_entries::device_keys().device_id(),
        epoch: OpId([3; 32]),
    };
    let scheduled = GrantBody {
        extensions: vec![weekly(&["wed 09:00-12:00"], "Europe/Amsterdam").to_extension()],
        ..grant(&host, key(5).public_key(), scope, 0).body
    }
    .sign(&host)
    .unwrap();
    seeds.put("grant", "weekly-schedule", &scheduled.to_bytes());
    seeds.put(
        "schedule",
        "weekdays",
        &weekly(&["mon-fri 08:00-12:00"], "Europe/Amsterdam").encode(),
    );
    seeds.put(
        "schedule",
        "new-york-two",
        &weekly(
            &["sun 01:00-02:00", "sat,sun 10:00-24:00"],
            "America/New_York",
        )
        .encode(),
    );
    seeds.put(
        "schedule",
        "lord-howe-gap",
        &weekly(&["sun 02:00-02:30"], "Australia/Lord_Howe").encode(),
    );
    let sixteen: Vec<String> = (0..16)
        .map(|h| format!("mon-sun {h:02}:00-{h:02}:30"))
        .collect();
    let sixteen: Vec<&str> = sixteen.iter().map(String::as_str).collect();
    seeds.put(
        "schedule",
        "sixteen",
        &weekly(&sixteen, "America/Argentina/ComodRivadavia").encode(),
    );
}

#[test]
#[ignore = "writes fuzz/corpus/schedule and one grant seed; run by hand to regenerate those alone"]
fn write_schedule_seed_corpus() {
    schedule_seeds(&Seeds {
        root: corpus_root(),
    });
}

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A chain with one op of every kind, and the grants and commands that go with it.
#[test]
#[ignore = "writes fuzz/corpus/; run by hand to regenerate the seeds"]
fn write_seed_corpus() {
    let seeds = Seeds {
        root: corpus_root(),
    };
    let device = fuzz_entries::device_keys();
    let (a, b, c, guest, cleaner) = (key(1), key(2), key(3), key(4), key(5));
    let new_identity = key(6);
    let new_setup = key(7);
    let t = 1_700_000_000_000;

    let mut chain = Chain::from_genesis(device.genesis("Front door", t).unwrap()).unwrap();
    let add = |chain: &mut Chain, body: OpBody, signers: &[&SigningKey]| {
        let mut op = chain.propose(t + chain.len() as u64, body);
        for k in signers {
            op.sign(k);
        }
        chain.append(op).unwrap();
    };
    add(
        &mut chain,
        OpBody::Claim(owner_set(&[&a, &b], 1)),
        &[&device.setup, &a, &b],
    );
    add(
        &mut chain,
        OpBody::AmendOwners(owner_set(&[&a, &b, &c], 2)),
        &[&a],
    );
    let scope = GrantScope {
        device: chain.device(),
        epoch: chain.state().epoch,
    };
    let host_grant = grant(&a, guest.public_key(), scope, 1);
    let cleaner_grant = grant(&guest, cleaner.public_key(), scope, 0);
    let grants = vec![host_grant.clone(), cleaner_grant.clone()];
    let owner_command = Command {
        device: chain.device(),
        sender: a.public_key(),
        action: "open".into(),
        args: b"{\"seconds\":5}".to_vec(),
        timestamp_ms: t,
        nonce: [1; 16],
        challenge: None,
        grants: Vec::new(),
        reply_to: ReplyTo::Direct,
    }
    .sign(&a)
    .unwrap();
    let guest_command = Command {
        device: chain.device(),
        sender: cleaner.public_key(),
        action: "status".into(),
        args: Vec::new(),
        timestamp_ms: t + 1,
        nonce: [2; 16],
        challenge: Some([3; 16]),
        grants: grants.clone(),
        reply_to: ReplyTo::Mailbox([4; 32]),
    }
    .sign(&cleaner)
    .unwrap();
    // Over 1 KiB of plaintext: sealed in the second bucket.
    let big_command = Command {
        args: vec![b'x'; 1024],
        nonce: [5; 16],
        ..owner_command.command.clone()
    }
    .sign(&a)
    .unwrap();
    add(
        &mut chain,
        OpBody::RevokeGrant {
            chain: grants.clone(),
        },
        &[&guest],
    );
    add(&mut chain, OpBody::Transfer(owner_set(&[&c], 1)), &[&a, &b]);
    add(
        &mut chain,
        OpBody::RotateKeys {
            identity: new_identity.public_key(),
            kem: device.kem.public().clone(),
        },
        &[&device.identity, &new_identity],
    );
    add(
        &mut chain,
        OpBody::FactoryReset {
            setup: new_setup.public_key(),
        },
        &[&new_identity],
    );

    for op in chain.ops() {
        seeds.put(
            "op",
            &format!("{}-{}", op.seq, op.body.kind()),
            &op.to_bytes(),
        );
    }
    let ops = chain.ops().to_vec();
    seeds.put("op_list", "chain", &OpList(ops.clone()).to_bytes());
    seeds.put("op_list", "genesis", &OpList(ops[..1].to_vec()).to_bytes());
    seeds.put("op_list", "empty", &OpList(Vec::new()).to_bytes());

    seeds.put("grant", "host", &host_grant.to_bytes());
    seeds.put("grant", "cleaner", &cleaner_grant.to_bytes());
    // Reaches the allowed-arguments extension's own decoder (tag 0x82).
    let pinned = GrantBody {
        extensions: vec![AllowedArguments::new(vec![
            b"{\"entity_id\":\"lock.front\"}".to_vec(),
            b"--hold-open\x005".to_vec(),
        ])
        .unwrap()
        .to_extension()],
        ..cleaner_grant.body.clone()
    }
    .sign(&guest)
    .unwrap();
    seeds.put("grant", "pinned-arguments", &pinned.to_bytes());
    let one = |list: &[&[u8]]| {
        AllowedArguments::new(list.iter().map(|a| a.to_vec()).collect())
            .unwrap()
            .encode()
    };
    seeds.put(
        "allowed_arguments",
        "two",
        &one(&[b"{\"entity_id\":\"lock.front\"}", b"--hold-open\x005"]),
    );
    seeds.put("allowed_arguments", "one-long", &one(&[&[0x7a; 256]]));
    seeds.put(
        "allowed_arguments",
        "eight",
        &one(&[b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"]),
    );

    schedule_seeds(&seeds);

    seeds.put("command", "owner", &owner_command.to_bytes());
    seeds.put("command", "guest", &guest_command.to_bytes());
    seeds.put("command", "big-args", &big_command.to_bytes());

    let respond = |command: &SignedCommand, timestamp_ms, outcome, body: &[u8]| {
        Response {
            device: device.device_id(),
            command: command.command.id(),
            timestamp_ms,
            outcome,
            body: body.to_vec(),
        }
        .sign(&device.identity)
        .unwrap()
    };
    let responses: Vec<(&str, SignedResponse)> = vec![
        (
            "accepted",
            respond(&owner_command, Some(t + 5), Outcome::Accepted, b"ok"),
        ),
        (
            "rejected",
            respond(
                &guest_command,
                Some(t + 6),
                Outcome::Rejected {
                    code: RejectCode::GrantRevoked as u16,
                    reason: "the grant has been revoked by the owner".into(),
                },
                b"",
            ),
        ),
        (
            "challenge",
            respond(
                &owner_command,
                None,
                Outcome::ChallengeRequired { challenge: [9; 16] },
                b"",
            ),
        ),
    ];
    for (name, response) in &responses {
        seeds.put("response", name, &response.to_bytes());
    }

    let addrs = vec![
        DeviceAddr::Socket("192.168.1.20:8443".parse::<SocketAddr>().unwrap()),
        DeviceAddr::Socket("[fe80::1]:8443".parse::<SocketAddr>().unwrap()),
        DeviceAddr::parse("door.local:8443").unwrap(),
    ];
    let claims = [
        ("three-addrs", device.claim_payload("Front door", addrs)),
        ("no-addrs", device.claim_payload("Garage", Vec::new())),
    ];
    for (name, claim) in &claims {
        seeds.put("claim_bytes", name, &claim.to_bytes());
        let text = claim.to_text().unwrap();
        seeds.put("claim_text", name, text.as_bytes());
    }
    let pasted = format!(
        "  {}\n",
        claims[1].1.to_text().unwrap().to_ascii_lowercase()
    );
    seeds.put("claim_text", "pasted-lower-case", pasted.as_bytes());
    invitation_seeds(&seeds);
    short_link_seeds(&seeds);

    seeds.put(
        "public_key_text",
        "owner",
        a.public_key().to_string().as_bytes(),
    );
    let id_text = chain.device().to_string();
    seeds.put("public_key_text", "device-id", id_text.as_bytes());
    seeds.put("device_id_text", "device", id_text.as_bytes());
    seeds.put(
        "device_id_text",
        "public-key",
        a.public_key().to_string().as_bytes(),
    );

    let phrase = RecoveryPhrase::from_entropy(&[0x42; 32]);
    seeds.put("recovery_phrase", "valid", phrase.phrase().as_bytes());
    let shouted = phrase.words().join("   ").to_uppercase();
    seeds.put("recovery_phrase", "upper-case", shouted.as_bytes());
    let mut words = phrase.words();
    let swap = (0..23).find(|&i| words[i] != words[i + 1]).unwrap();
    words.swap(swap, swap + 1);
    seeds.put("recovery_phrase", "swapped", words.join(" ").as_bytes());

    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed);
    for (name, command) in [
        ("owner", &owner_command),
        ("guest", &guest_command),
        ("big-args", &big_command),
    ] {
        let (sealed, _) = envelope::seal_command(command, device.kem.public(), &mut rng).unwrap();
        seeds.put("envelope_open", name, &sealed);
        let opened = envelope::open_command(&sealed, &device.kem).unwrap();
        let reply = opened.reply.seal(&responses[0].1, &mut rng).unwrap();
        seeds.put("response_open", name, &reply);
    }

    for (name, message) in [
        ("empty", Vec::new()),
        ("command", owner_command.to_bytes()),
        ("second-bucket", vec![0xa5; 3000]),
        ("third-bucket", vec![0x5a; 5000]),
    ] {
        seeds.put("unpad", name, &pad::pad(&message, &mut rng).unwrap());
    }

    seeds.put("device_key_file", "fixed", fuzz_entries::DEVICE_KEY_FILE);

    // The seeds must themselves be what they claim: every one decodes.
    Op::from_bytes(&ops[0].to_bytes()).unwrap();
    Chain::verify(OpList::from_bytes(&OpList(ops).to_bytes()).unwrap().0).unwrap();
    ClaimPayload::parse(&pasted).unwrap();
}

/// Seeds of the event targets: each kind of event, signed by the fixed device and sealed to
/// its own KEM key (which stands in for an owner's event key), so the corpus messages open.
#[test]
#[ignore = "writes fuzz/corpus/event*/; run by hand to regenerate the seeds"]
fn write_event_seed_corpus() {
    use latchkey_proto::event::{self, Event, EventKind};
    use latchkey_proto::grant::GrantId;
    let seeds = Seeds {
        root: corpus_root(),
    };
    let device = fuzz_entries::device_keys();
    let mut rng = ChaCha20Rng::seed_from_u64(0xe7e1);
    for (name, kind, time_ms) in [
        ("first-open", EventKind::FirstOpen, Some(1_700_000_000_000)),
        ("redeemed", EventKind::Redeemed, None),
        ("refused-revoked", EventKind::Refused { code: 11 }, Some(1)),
    ] {
        let signed = Event {
            device: device.device_id(),
            seq: 42,
            time_ms,
            kind,
            grant: GrantId([5; 32]),
            guest: key(4).public_key(),
            action: "unlock".into(),
        }
        .sign(&device.identity)
        .unwrap();
        seeds.put("event", name, &signed.to_bytes());
        let message = event::build_message(
            &signed,
            device.kem.public(),
            [9; 32],
            &device.identity,
            &mut rng,
        )
        .unwrap();
        seeds.put("event_message", name, &message.to_bytes());
    }
}

/// A three-phase DSMR 5 reading with gas, as `latchkeyd` makes from a telegram.
fn three_phase_reading() -> latchkey_proto::stream::Reading {
    use latchkey_proto::stream::{Phase, Reading};
    let phase = |v: u32, a: u32, w: u32| Phase {
        voltage_mv: Some(v),
        current_ma: Some(a),
        power_delivered_w: Some(w),
        power_returned_w: Some(0),
    };
    Reading {
        meter_time_ms: Some(1_700_000_000_000),
        tariff: Some(2),
        energy_delivered_wh: vec![4_546_201, 2_984_102],
        energy_returned_wh: vec![12, 0],
        power_delivered_w: Some(1_193),
        power_returned_w: Some(0),
        phases: vec![
            phase(229_000, 2_000, 445),
            phase(230_100, 1_000, 213),
            phase(229_900, 3_000, 535),
        ],
        gas_l: Some(2_569_646),
        gas_time_ms: Some(1_699_999_800_000),
    }
}

/// Seeds of the stream and consent targets: readings, frames sealed under the fixed stream
/// key, key messages sealed to the fixed device's KEM key and signed by its identity, and
/// consent requests, links, entries and lists on the fixed chain (docs/PROTOCOL.md §14).
#[test]
#[ignore = "writes fuzz/corpus/{reading,sealed_reading,key_grant,consent_*}/; run by hand to regenerate those seeds"]
fn write_stream_seed_corpus() {
    use latchkey_proto::consent::{
        purpose, ConsentAction, ConsentList, ConsentLog, ConsentRequest, ProviderIdentity,
    };
    use latchkey_proto::stream::{self, KeyEntry, KeyGrant, Reading, StreamKey};
    let seeds = Seeds {
        root: corpus_root(),
    };
    let device = fuzz_entries::device_keys();
    let id = device.device_id();
    let stream_key = fuzz_entries::stream_key();
    let mut rng = ChaCha20Rng::seed_from_u64(0x57e4);
    let single = Reading {
        meter_time_ms: Some(1_700_000_000_000),
        tariff: Some(1),
        energy_delivered_wh: vec![1_000, 2_000],
        energy_returned_wh: vec![0, 0],
        power_delivered_w: Some(250),
        power_returned_w: Some(0),
        phases: vec![latchkey_proto::stream::Phase {
            voltage_mv: Some(231_000),
            current_ma: Some(1_000),
            power_delivered_w: Some(250),
            power_returned_w: None,
        }],
        gas_l: None,
        gas_time_ms: None,
    };
    for (name, reading) in [
        ("empty", Reading::default()),
        ("single-phase", single),
        ("three-phase-gas", three_phase_reading()),
    ] {
        seeds.put("reading", name, &reading.to_bytes());
        let frame =
            stream::seal_reading(&id, "p1", 1, &stream_key, 42, &reading, &mut rng).unwrap();
        assert_eq!(
            stream::open_reading(&frame, &stream_key).unwrap().1,
            reading
        );
        seeds.put("sealed_reading", name, &frame);
    }
    let long = "a".repeat(32);
    let frame = stream::seal_reading(
        &id,
        &long,
        7,
        &stream_key,
        u64::MAX,
        &three_phase_reading(),
        &mut rng,
    )
    .unwrap();
    seeds.put("sealed_reading", "long-name", &frame);

    let entry = |key_id: u32, from_seq: u64| KeyEntry {
        key_id,
        from_seq,
        key: StreamKey::from_bytes([key_id as u8; 32]),
    };
    let provider = key(8);
    for (name, consent, keys) in [
        ("current-only", Some([6; 32]), vec![entry(3, 900)]),
        (
            "history",
            Some([7; 32]),
            vec![entry(1, 0), entry(2, 500), entry(3, 900)],
        ),
        ("owner-copy", None, vec![entry(1, 0)]),
    ] {
        let grant = KeyGrant {
            device: id,
            stream: "p1".into(),
            recipient: provider.public_key().to_bytes(),
            consent: consent.map(latchkey_proto::consent::ConsentId),
            issued_ms: 1_700_000_000_000,
            keys,
        };
        let msg = stream::seal_key_grant(&grant, &device.identity, device.kem.public(), &mut rng)
            .unwrap();
        let opened =
            stream::open_key_grant(&msg, &device.kem, &device.identity.public_key()).unwrap();
        assert_eq!(opened, grant);
        seeds.put("key_grant", name, &msg);
    }

    let chain = fuzz_entries::consent_chain();
    let owner = fuzz_entries::consent_owner();
    let request = |until_ms, terms: Option<&str>, nonce| {
        ConsentRequest {
            provider: ProviderIdentity {
                name: "Energy Insights".into(),
                url: "https://insights.example".into(),
                signing: provider.public_key(),
                kem: device.kem.public().clone(),
            },
            device: id,
            stream: "p1".into(),
            purpose_code: purpose::INSIGHTS,
            purpose: "Monthly report.\nSaving tips.".into(),
            retention_days: 30,
            until_ms,
            history: terms.is_some(),
            terms: terms.map(str::to_owned),
            issued_ms: 1_700_000_000_000,
            nonce: [nonce; 16],
        }
        .sign(&provider)
        .unwrap()
    };
    let open = request(None, None, 1);
    let limited = request(Some(1_800_000_000_000), Some("500 units per hour"), 2);
    for (name, r) in [("open-ended", &open), ("until-terms", &limited)] {
        seeds.put("consent_request", name, &r.to_bytes());
        seeds.put("consent_link", name, r.to_link().as_bytes());
    }
    seeds.put(
        "consent_link",
        "lower-case",
        open.to_link().to_lowercase().as_bytes(),
    );
    let mut log = ConsentLog::new(chain);
    let t = 1_700_000_100_000;
    for action in [
        ConsentAction::Given(open.clone()),
        ConsentAction::Given(limited.clone()),
        ConsentAction::Revoked(open.id()),
    ] {
        let e = log.next_entry(chain, &owner, t, action).unwrap();
        log.append(chain, e).unwrap();
    }
    let entries = log.entries().to_vec();
    seeds.put("consent_entry", "given", &entries[0].to_bytes());
    seeds.put("consent_entry", "given-until", &entries[1].to_bytes());
    seeds.put("consent_entry", "revoked", &entries[2].to_bytes());
    seeds.put("consent_list", "three", &ConsentList(entries).to_bytes());
    seeds.put("consent_list", "empty", &ConsentList(Vec::new()).to_bytes());
}
