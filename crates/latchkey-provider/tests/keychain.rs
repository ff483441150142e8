//! The provider identity in the real OS keychain (the Secret Service of a private D-Bus
//! session: run inside `with_secret_service` from scripts/lib.sh, as scripts/test.sh does).

use std::path::{Path, PathBuf};
use std::process::Command;

use latchkey_provider::keychain::{KeyringStore, SecretStore};
use latchkey_provider::{Error, Profile};

fn require_secret_service() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "this test needs a Secret Service: run it inside `with_secret_service` (scripts/lib.sh)"
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_binary_keeps_the_secrets_in_the_keychain_and_only_the_public_half_on_disk() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("acme");
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey-provider"))
        .arg("--profile")
        .arg(&dir)
        .args([
            "init",
            "--name",
            "Acme Energy",
            "--url",
            "https://acme.example",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let store = KeyringStore::open().unwrap();
    let profile = Profile::open(&dir).unwrap();
    assert_eq!(profile.identity().name, "Acme Energy");
    let secrets = profile.secrets(&store).unwrap();
    assert_eq!(
        secrets.signing.public_key(),
        profile.identity().signing().unwrap()
    );
    // No byte of any secret is in the profile directory.
    let seed = secrets.signing.to_bytes();
    let kem = secrets.kem.to_bytes();
    for file in files_under(&dir) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for secret in [&seed[..], &secrets.store_key[..], &kem[..32]] {
            assert!(!contains(&bytes, secret), "{file:?} holds a secret");
            assert!(
                !text.contains(&hex::encode(secret)),
                "{file:?} holds a secret in hex"
            );
        }
    }

    // A second init refuses and changes nothing.
    let again = Command::new(env!("CARGO_BIN_EXE_latchkey-provider"))
        .arg("--profile")
        .arg(&dir)
        .args(["init", "--name", "Other"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(Profile::open(&dir).unwrap().identity().name, "Acme Energy");

    // Without its keychain entry the profile says so instead of inventing keys.
    store.delete(&profile.identity().account).unwrap();
    assert!(matches!(
        profile.secrets(&store),
        Err(Error::NoSecrets { .. })
    ));
}

#[test]
fn two_profiles_have_two_identities_under_one_service() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let store = KeyringStore::open().unwrap();
    let a = Profile::init(
        &tmp.path().join("a"),
        "A",
        "",
        &store,
        &mut rand::rngs::OsRng,
        1,
    )
    .unwrap();
    let b = Profile::init(
        &tmp.path().join("b"),
        "B",
        "",
        &store,
        &mut rand::rngs::OsRng,
        1,
    )
    .unwrap();
    assert_ne!(a.identity().account, b.identity().account);
    let (sa, sb) = (a.secrets(&store).unwrap(), b.secrets(&store).unwrap());
    assert_ne!(sa.signing.public_key(), sb.signing.public_key());
    assert_ne!(*sa.store_key, *sb.store_key);
    // Swapping the directories' identities is caught: the keychain secrets do not match.
    std::fs::copy(
        tmp.path().join("b/identity.json"),
        tmp.path().join("a/identity.json"),
    )
    .unwrap();
    let mut swapped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("a/identity.json")).unwrap())
            .unwrap();
    swapped["account"] = serde_json::json!(a.identity().account);
    std::fs::write(
        tmp.path().join("a/identity.json"),
        serde_json::to_vec(&swapped).unwrap(),
    )
    .unwrap();
    let reopened = Profile::open(&tmp.path().join("a")).unwrap();
    assert!(matches!(
        reopened.secrets(&store),
        Err(Error::SecretsMismatch { .. })
    ));
    store.delete(&a.identity().account).unwrap();
    store.delete(&b.identity().account).unwrap();
}
