//! keys.json: recovery phrases and the keys derived from them, device key files, human key
//! forms, and what each must refuse.

use crate::*;

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let people = ["Owner A", "Owner B", "Owner C", "The host", "The cleaner"];
    for (i, (entropy, phrase)) in w.phrases.iter().enumerate() {
        let seed = phrase.to_seed();
        let mut derived = Vec::new();
        for (purpose, label, segment) in [
            (KeyPurpose::OwnerIdentity, "owner-identity", 0),
            (KeyPurpose::Guest, "guest", 1),
            (KeyPurpose::Consent, "consent", 2),
        ] {
            for index in [0u32, 1] {
                let key = seed.derive(purpose, index).unwrap();
                let same = keys::derive_ed25519(seed.as_bytes(), &[keys::PURPOSE, segment, index])
                    .unwrap();
                assert_eq!(same.public_key(), key.public_key());
                derived.push(json!({
                    "purpose": label,
                    "index": index,
                    "path": format!("m/19531'/{segment}'/{index}'"),
                    "secret_key": h(key.to_bytes().as_slice()),
                    "public_key": pk_hex(&key.public_key()),
                    "public_key_text": key.public_key().to_string(),
                }));
            }
        }
        assert_eq!(
            RecoveryPhrase::parse(phrase.phrase()).unwrap().phrase(),
            phrase.phrase()
        );
        v.ok(
            &format!("recovery_phrase_{}", i + 1),
            "recovery_phrase",
            &format!(
                "{}'s 24-word phrase from 32 bytes of entropy; its BIP39 seed with the empty \
                 passphrase; the keys at m/19531'/purpose'/index' (purpose 0 owner identity, 1 \
                 guest, 2 consent; all indices hardened) with their lkpk1 forms.",
                people[i]
            ),
            json!({
                "entropy": h(entropy),
                "phrase": phrase.phrase(),
                "passphrase": "",
                "seed": h(seed.as_bytes()),
                "keys": derived,
            }),
        );
    }

    for (name, dk, what, note) in [
        (DEVICE_FRONT, &w.front, "the front door", ""),
        (
            DEVICE_ROTATED,
            &w.rotated,
            "the front door after key rotation",
            " The device_id fields are H(device-id, D') of these keys, which is NOT the front \
             door's id: a rotate-keys op replaces D but the device keeps its genesis id (the id \
             names the device, not its current key; PROTOCOL.md §3.2), so after the rotation the \
             front door is still device_front_door's device_id. A device checks that its id is \
             H(device-id, D) only at genesis.",
        ),
        (DEVICE_BACK, &w.back, "the back door", ""),
    ] {
        let file = dk.to_secret_bytes();
        let again = DeviceKeys::from_secret_bytes(&file).unwrap();
        assert_eq!(again.to_secret_bytes().as_slice(), file.as_slice());
        let id = dk.device_id();
        v.ok(
            name,
            "device_keys",
            &format!(
                "The device key file of {what} (version || identity secret || setup secret || \
                 X25519 secret || sntrup761 secret || sntrup761 public), the public keys it \
                 holds, the KEM commitment and the device id in its three forms. Other vectors \
                 use these keys; the generator reuses this file on later runs.{note}"
            ),
            json!({
                "secret_key_file": h(file.as_slice()),
                "identity_public_key": pk_hex(&dk.identity.public_key()),
                "identity_public_key_text": dk.identity.public_key().to_string(),
                "setup_public_key": pk_hex(&dk.setup.public_key()),
                "kem_public_key": h(dk.kem.public().to_bytes()),
                "kem_commitment": h(dk.kem.public().commitment()),
                "device_id": h(id.0),
                "device_id_text": id.to_string(),
                "device_id_short": id.short(),
            }),
        );
    }

    // Recovery phrases that must be refused.
    let words: Vec<String> = w.phrases[0]
        .1
        .words()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let phrase_fail = |v: &mut Vectors, name: &str, description: &str, text: String, e: &str| {
        v.fail(
            name,
            "recovery_phrase_fail",
            description,
            RecoveryPhrase::parse(&text),
            e,
            json!({ "phrase": text }),
        );
    };
    phrase_fail(
        &mut v,
        "fail_phrase_23_words",
        "recovery_phrase_1 without its last word.",
        words[..23].join(" "),
        "MnemonicWordCount",
    );
    phrase_fail(
        &mut v,
        "fail_phrase_25_words",
        "recovery_phrase_1 with its first word repeated at the end.",
        format!("{} {}", words.join(" "), words[0]),
        "MnemonicWordCount",
    );
    phrase_fail(
        &mut v,
        "fail_phrase_12_words",
        "A valid 12-word BIP39 phrase: Latchkey phrases have exactly 24 words.",
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
            .into(),
        "MnemonicWordCount",
    );
    let mut unknown = words.clone();
    unknown[4] = "latchkey".into();
    phrase_fail(
        &mut v,
        "fail_phrase_unknown_word",
        "recovery_phrase_1 with word 5 replaced by a word not in the BIP39 English list.",
        unknown.join(" "),
        "MnemonicUnknownWord",
    );
    let checksum_breaker = words
        .iter()
        .map(|candidate| {
            let mut trial = words.clone();
            trial[23] = candidate.clone();
            trial.join(" ")
        })
        .find(|t| {
            matches!(
                RecoveryPhrase::parse(t),
                Err(Error::MnemonicChecksum { .. })
            )
        })
        .unwrap();
    phrase_fail(
        &mut v,
        "fail_phrase_checksum",
        "recovery_phrase_1 with its last word replaced by another of its words: every word is \
         in the list but the checksum fails.",
        checksum_breaker,
        "MnemonicChecksum",
    );

    // Human forms of keys and ids.
    let a = w.a.public_key();
    let id = w.front_id();
    let text_fail =
        |v: &mut Vectors, name: &str, description: &str, kind: &str, text: String, e| {
            let result = match kind {
                "public-key" => PublicKey::parse(&text).map(|_| ()),
                _ => DeviceId::parse(&text).map(|_| ()),
            };
            v.fail(
                name,
                "text_fail",
                description,
                result,
                e,
                json!({ "kind": kind, "text": text }),
            );
        };
    text_fail(
        &mut v,
        "fail_public_key_text_is_a_device_id",
        "A device id (lkdev1...) where a public key (lkpk1...) is expected.",
        "public-key",
        id.to_string(),
        "WrongKind",
    );
    text_fail(
        &mut v,
        "fail_device_id_text_is_a_public_key",
        "A public key (lkpk1...) where a device id (lkdev1...) is expected.",
        "device-id",
        a.to_string(),
        "WrongKind",
    );
    let mut typo: Vec<char> = a.to_string().chars().collect();
    let at = typo.len() - 3;
    typo[at] = if typo[at] == 'q' { 'p' } else { 'q' };
    text_fail(
        &mut v,
        "fail_public_key_text_typo",
        "owner A's lkpk1 key with one character changed: the Bech32m checksum fails.",
        "public-key",
        typo.into_iter().collect(),
        "BadText",
    );
    text_fail(
        &mut v,
        "fail_device_id_text_truncated",
        "The front door's lkdev1 id without its last character.",
        "device-id",
        {
            let t = id.to_string();
            t[..t.len() - 1].to_owned()
        },
        "BadText",
    );
    let short =
        bech32::encode::<bech32::Bech32m>(bech32::Hrp::parse("lkpk").unwrap(), &a.to_bytes()[..31])
            .unwrap();
    text_fail(
        &mut v,
        "fail_public_key_text_31_bytes",
        "A well-formed lkpk1 Bech32m string holding 31 bytes instead of 32.",
        "public-key",
        short,
        "Invalid",
    );
    let off_curve =
        bech32::encode::<bech32::Bech32m>(bech32::Hrp::parse("lkpk").unwrap(), &not_a_point())
            .unwrap();
    text_fail(
        &mut v,
        "fail_public_key_text_not_a_point",
        "A well-formed lkpk1 string whose 32 bytes are not an Ed25519 point.",
        "public-key",
        off_curve,
        "BadPublicKey",
    );

    // Binary forms.
    v.fail_decode(
        "fail_public_key_not_a_point",
        "PublicKey",
        "32 bytes that do not decompress to an Ed25519 point.",
        &not_a_point(),
        "BadPublicKey",
    );
    v.fail_truncations("public_key", "PublicKey", &a.to_bytes(), "TooLarge");
    let sig = w.a.sign(b"latchkey test vector");
    v.fail_truncations("signature", "Signature", &sig.0, "TooLarge");
    v.fail_truncations("device_id", "DeviceId", &id.0, "TooLarge");
    v.fail_truncations(
        "kem_public_key",
        "KemPublicKey",
        &w.front.kem.public().to_bytes(),
        "TooLarge",
    );

    // Device key files.
    let file = w.front.to_secret_bytes();
    let key_file_fail = |v: &mut Vectors, name: &str, description: &str, bytes: Vec<u8>, e| {
        v.fail(
            name,
            "device_key_file_fail",
            description,
            DeviceKeys::from_secret_bytes(&bytes),
            e,
            json!({ "bytes": h(&bytes) }),
        );
    };
    key_file_fail(
        &mut v,
        "fail_device_key_file_version",
        "device_front_door's key file with version byte 2.",
        patch(&file, 0, &[1], &[2]),
        "UnsupportedVersion",
    );
    key_file_fail(
        &mut v,
        "fail_device_key_file_truncated_in_keys",
        "device_front_door's key file cut inside the setup key.",
        file[..50].to_vec(),
        "Truncated",
    );
    key_file_fail(
        &mut v,
        "fail_device_key_file_truncated_by_one_byte",
        "device_front_door's key file without its last byte: the KEM part has the wrong length.",
        file[..file.len() - 1].to_vec(),
        "Invalid",
    );
    key_file_fail(
        &mut v,
        "fail_device_key_file_trailing_byte",
        "device_front_door's key file with one extra byte: the KEM part has the wrong length.",
        [file.as_slice(), &[0]].concat(),
        "Invalid",
    );

    v.fail(
        "fail_derivation_index_with_hardened_bit",
        "derivation_fail",
        "derive_ed25519 takes indices below 2^31 and hardens them itself; an index with the \
         hardened bit already set is refused.",
        keys::derive_ed25519(&[0u8; 16], &[0x8000_0000]),
        "Invalid",
        json!({ "seed": h([0u8; 16]), "path": [0x8000_0000u32] }),
    );
    v
}
