//! bip39_english.json and slip10_ed25519.json: official vectors, copied from their sources and
//! checked against the library before they are written.

use crate::*;

/// The 24-word English vectors of trezor/python-mnemonic's vectors.json (entropy, mnemonic,
/// seed; all with passphrase "TREZOR"), copied from
/// https://github.com/trezor/python-mnemonic/blob/master/vectors.json
/// (commit f5a975ab10c035596d65d854d21164266ffed284). The BIP32 xprv column is not used.
const BIP39_TREZOR_24: [(&str, &str, &str); 8] = [
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art",
        "bda85446c68413707090a52022edd26a1c9462295029f2e60cd7c4f2bbd3097170af7a4d73245cafa9c3cca8d561a7c3de6f5d4a10be8ed2a5e608d68f92fcc8",
    ),
    (
        "7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f",
        "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth title",
        "bc09fca1804f7e69da93c2f2028eb238c227f2e9dda30cd63699232578480a4021b146ad717fbb7e451ce9eb835f43620bf5c514db0f8add49f5d121449d3e87",
    ),
    (
        "8080808080808080808080808080808080808080808080808080808080808080",
        "letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor acoustic bless",
        "c0c519bd0e91a2ed54357d9d1ebef6f5af218a153624cf4f2da911a0ed8f7a09e2ef61af0aca007096df430022f7a2b6fb91661a9589097069720d015e4e982f",
    ),
    (
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote",
        "dd48c104698c30cfe2b6142103248622fb7bb0ff692eebb00089b32d22484e1613912f0a5b694407be899ffd31ed3992c456cdf60f5d4564b8ba3f05a69890ad",
    ),
    (
        "68a79eaca2324873eacc50cb9c6eca8cc68ea5d936f98787c60c7ebc74e6ce7c",
        "hamster diagram private dutch cause delay private meat slide toddler razor book happy fancy gospel tennis maple dilemma loan word shrug inflict delay length",
        "64c87cde7e12ecf6704ab95bb1408bef047c22db4cc7491c4271d170a1b213d20b385bc1588d9c7b38f1b39d415665b8a9030c9ec653d75e65f847d8fc1fc440",
    ),
    (
        "9f6a2878b2520799a44ef18bc7df394e7061a224d2c33cd015b157d746869863",
        "panda eyebrow bullet gorilla call smoke muffin taste mesh discover soft ostrich alcohol speed nation flash devote level hobby quick inner drive ghost inside",
        "72be8e052fc4919d2adf28d5306b5474b0069df35b02303de8c1729c9538dbb6fc2d731d5f832193cd9fb6aeecbc469594a70e3dd50811b5067f3b88b28c3e8d",
    ),
    (
        "066dca1a2bb7e8a1db2832148ce9933eea0f3ac9548d793112d9a95c9407efad",
        "all hour make first leader extend hole alien behind guard gospel lava path output census museum junior mass reopen famous sing advance salt reform",
        "26e975ec644423f4a4c4f4215ef09b4bd7ef924e85d1d17c4cf3f136c2863cf6df0a475045652c57eb5fb41513ca2a2d67722b77e954b4b3fc11f7590449191d",
    ),
    (
        "f585c11aec520db57dd353c69554b21a89b20fb0650966fa0a9d6f74fd989d8f",
        "void come effort suffer camp survey warrior heavy shoot primary clutch crush open amazing screen patrol group space point ten exist slush involve unfold",
        "01f5bced59dec48e362f2c45b5de68b9fd6c92c6634f44d6d40aab69056506f0e35524a518034ddc1192e1dacd32c1ed3eaa3c3b131c88ed8e7e54c49a5d0998",
    ),
];

pub fn bip39() -> Vectors {
    let mut v = Vectors::new();
    for (i, (entropy, mnemonic, seed)) in BIP39_TREZOR_24.iter().enumerate() {
        let e: [u8; 32] = hex::decode(entropy).unwrap().try_into().unwrap();
        let phrase = RecoveryPhrase::from_entropy(&e);
        assert_eq!(phrase.phrase(), *mnemonic, "official vector {i}");
        let parsed = RecoveryPhrase::parse(mnemonic).unwrap();
        assert_eq!(
            h(parsed.to_seed_with_passphrase("TREZOR").as_bytes()),
            *seed,
            "official vector {i}"
        );
        v.push_with_source(
            &format!("bip39_english_24_words_{}", i + 1),
            "bip39",
            "Official BIP39 vector: entropy -> 24-word English mnemonic -> seed with passphrase \
             \"TREZOR\".",
            "trezor/python-mnemonic vectors.json",
            json!({
                "url": "https://github.com/trezor/python-mnemonic/blob/master/vectors.json",
                "commit": "f5a975ab10c035596d65d854d21164266ffed284",
                "entropy": entropy,
                "mnemonic": mnemonic,
                "passphrase": "TREZOR",
                "seed": seed,
            }),
        );
    }
    v
}

// ---------------------------------------------------------------------------------------------
// slip10_ed25519.json

/// One chain of a SLIP-0010 test vector: (chain, path without hardened bits, fingerprint,
/// chain code, private key, public key with its 0x00 prefix).
type Slip10Chain = (
    &'static str,
    &'static [u32],
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// "Test vector 1 for ed25519" and "Test vector 2 for ed25519" of SLIP-0010, copied from
/// https://github.com/satoshilabs/slips/blob/master/slip-0010.md
/// (commit ac9e0ca32fbde4ee6c14e5565ffaee5e7ad65103).
const SLIP10_ED25519: [(&str, &str, [Slip10Chain; 6]); 2] = [
    (
        "Test vector 1 for ed25519",
        "000102030405060708090a0b0c0d0e0f",
        [
            (
                "m",
                &[],
                "00000000",
                "90046a93de5380a72b5e45010748567d5ea02bbf6522f979e05c0d8d8ca9fffb",
                "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7",
                "00a4b2856bfec510abab89753fac1ac0e1112364e7d250545963f135f2a33188ed",
            ),
            (
                "m/0H",
                &[0],
                "ddebc675",
                "8b59aa11380b624e81507a27fedda59fea6d0b779a778918a2fd3590e16e9c69",
                "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3",
                "008c8a13df77a28f3445213a0f432fde644acaa215fc72dcdf300d5efaa85d350c",
            ),
            (
                "m/0H/1H",
                &[0, 1],
                "13dab143",
                "a320425f77d1b5c2505a6b1b27382b37368ee640e3557c315416801243552f14",
                "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2",
                "001932a5270f335bed617d5b935c80aedb1a35bd9fc1e31acafd5372c30f5c1187",
            ),
            (
                "m/0H/1H/2H",
                &[0, 1, 2],
                "ebe4cb29",
                "2e69929e00b5ab250f49c3fb1c12f252de4fed2c1db88387094a0f8c4c9ccd6c",
                "92a5b23c0b8a99e37d07df3fb9966917f5d06e02ddbd909c7e184371463e9fc9",
                "00ae98736566d30ed0e9d2f4486a64bc95740d89c7db33f52121f8ea8f76ff0fc1",
            ),
            (
                "m/0H/1H/2H/2H",
                &[0, 1, 2, 2],
                "316ec1c6",
                "8f6d87f93d750e0efccda017d662a1b31a266e4a6f5993b15f5c1f07f74dd5cc",
                "30d1dc7e5fc04c31219ab25a27ae00b50f6fd66622f6e9c913253d6511d1e662",
                "008abae2d66361c879b900d204ad2cc4984fa2aa344dd7ddc46007329ac76c429c",
            ),
            (
                "m/0H/1H/2H/2H/1000000000H",
                &[0, 1, 2, 2, 1_000_000_000],
                "d6322ccd",
                "68789923a0cac2cd5a29172a475fe9e0fb14cd6adb5ad98a3fa70333e7afa230",
                "8f94d394a8e8fd6b1bc2f3f49f5c47e385281d5c17e65324b0f62483e37e8793",
                "003c24da049451555d51a7014a37337aa4e12d41e485abccfa46b47dfb2af54b7a",
            ),
        ],
    ),
    (
        "Test vector 2 for ed25519",
        "fffcf9f6f3f0edeae7e4e1dedbd8d5d2cfccc9c6c3c0bdbab7b4b1aeaba8a5a29f9c999693908d8a8784817e7b7875726f6c696663605d5a5754514e4b484542",
        [
            (
                "m",
                &[],
                "00000000",
                "ef70a74db9c3a5af931b5fe73ed8e1a53464133654fd55e7a66f8570b8e33c3b",
                "171cb88b1b3c1db25add599712e36245d75bc65a1a5c9e18d76f9f2b1eab4012",
                "008fe9693f8fa62a4305a140b9764c5ee01e455963744fe18204b4fb948249308a",
            ),
            (
                "m/0H",
                &[0],
                "31981b50",
                "0b78a3226f915c082bf118f83618a618ab6dec793752624cbeb622acb562862d",
                "1559eb2bbec5790b0c65d8693e4d0875b1747f4970ae8b650486ed7470845635",
                "0086fab68dcb57aa196c77c5f264f215a112c22a912c10d123b0d03c3c28ef1037",
            ),
            (
                "m/0H/2147483647H",
                &[0, 2_147_483_647],
                "1e9411b1",
                "138f0b2551bcafeca6ff2aa88ba8ed0ed8de070841f0c4ef0165df8181eaad7f",
                "ea4f5bfe8694d8bb74b7b59404632fd5968b774ed545e810de9c32a4fb4192f4",
                "005ba3b9ac6e90e83effcd25ac4e58a1365a9e35a3d3ae5eb07b9e4d90bcf7506d",
            ),
            (
                "m/0H/2147483647H/1H",
                &[0, 2_147_483_647, 1],
                "fcadf38c",
                "73bd9fff1cfbde33a1b846c27085f711c0fe2d66fd32e139d3ebc28e5a4a6b90",
                "3757c7577170179c7868353ada796c839135b3d30554bbb74a4b1e4a5a58505c",
                "002e66aa57069c86cc18249aecf5cb5a9cebbfd6fadeab056254763874a9352b45",
            ),
            (
                "m/0H/2147483647H/1H/2147483646H",
                &[0, 2_147_483_647, 1, 2_147_483_646],
                "aca70953",
                "0902fe8a29f9140480a00ef244bd183e8a13288e4412d8389d140aac1794825a",
                "5837736c89570de861ebc173b1086da4f505d4adb387c6a1b1342d5e4ac9ec72",
                "00e33c0f7d81d843c572275f287498e8d408654fdf0d1e065b84e2e6f157aab09b",
            ),
            (
                "m/0H/2147483647H/1H/2147483646H/2H",
                &[0, 2_147_483_647, 1, 2_147_483_646, 2],
                "422c654b",
                "5d70af781f3a37b829f0d060924d5e960bdc02e85423494afc0b1a41bbe196d4",
                "551d333177df541ad876a60ea71f00447931c0a9da16f227c11ea080d7391b8d",
                "0047150c75db263559a70d5778bf36abbab30fb061ad69f69ece61a72b0cfa4fc0",
            ),
        ],
    ),
];

pub fn slip10() -> Vectors {
    let mut v = Vectors::new();
    for (n, (title, seed, chains)) in SLIP10_ED25519.iter().enumerate() {
        for (chain, path, fingerprint, chain_code, private, public) in chains {
            let key = keys::derive_ed25519(&hex::decode(seed).unwrap(), path).unwrap();
            assert_eq!(h(key.to_bytes().as_slice()), *private, "{title} {chain}");
            assert_eq!(
                format!("00{}", pk_hex(&key.public_key())),
                *public,
                "{title} {chain}"
            );
            let name = format!(
                "slip10_ed25519_vector_{}_{}",
                n + 1,
                chain.replace('/', "_").to_lowercase()
            );
            v.push_with_source(
                &name,
                "slip10_ed25519",
                &format!(
                    "{title}, chain {chain}. The public key is SLIP-0010's 33-byte form (0x00 || \
                     Ed25519 key). Fingerprint and chain code are copied for completeness; \
                     derive_ed25519 returns only the key, so the test checks private and public."
                ),
                "SLIP-0010",
                json!({
                    "url": "https://github.com/satoshilabs/slips/blob/master/slip-0010.md",
                    "commit": "ac9e0ca32fbde4ee6c14e5565ffaee5e7ad65103",
                    "seed": seed,
                    "chain": chain,
                    "path": path,
                    "fingerprint": fingerprint,
                    "chain_code": chain_code,
                    "private": private,
                    "public": public,
                }),
            );
        }
    }
    v
}
