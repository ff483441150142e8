//! A provider profile: a directory with the public identity and what the provider has learnt
//! (its requests, devices' identity keys from verified chains, per-stream key ids), plus the
//! secrets in the OS keychain. Nothing secret is written here in the clear: stream keys go to
//! `keys.sealed`, encrypted under the keychain-held store key ([`crate::keystore`]).
//!
//! Files (all JSON but `keys.sealed`, each replaced atomically):
//! - `identity.json` — [`PublicIdentity`];
//! - `requests.json` — the consent requests this provider made ([`RequestRecord`]);
//! - `devices.json` — device identity keys learnt from verified chains ([`DeviceRecord`]);
//! - `streams.json` — per device/stream: key ids held, last seq read, a cut-off if the
//!   provider's consent ended ([`StreamRecord`]);
//! - `keys.sealed` — the stream keys themselves.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand_core::{CryptoRng, RngCore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::{check_name_and_url, PublicIdentity, Secrets};
use crate::keychain::SecretStore;

const IDENTITY: &str = "identity.json";
const REQUESTS: &str = "requests.json";
const DEVICES: &str = "devices.json";
const STREAMS: &str = "streams.json";
/// Held (flock) around each read-modify-write of the files above: two readers of one profile
/// (say `read --follow` on two streams) must not lose each other's updates.
const LOCK: &str = "profile.lock";

/// The profile directory to use: `LATCHKEY_PROVIDER_PROFILE`, else
/// `$XDG_DATA_HOME/latchkey-provider`, else `~/.local/share/latchkey-provider`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LATCHKEY_PROVIDER_PROFILE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(data).join("latchkey-provider");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/latchkey-provider")
}

/// One consent request this provider made (all public: the link is what it handed out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The consent id (hex) owners approve and revoke by.
    pub id: String,
    pub link: String,
    pub device: String,
    pub stream: String,
    pub purpose_code: u16,
    pub purpose_label: String,
    pub purpose: String,
    pub retention_days: u32,
    pub until_ms: Option<u64>,
    pub history: bool,
    pub terms: Option<String>,
    pub issued_ms: u64,
}

/// A device's identity key, as a verified ownership chain gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// `lkpk1…`: the chain's current identity key (after any rotation).
    pub identity: String,
    /// The chain length it was read at.
    pub chain_seq: u64,
    pub learnt_ms: u64,
}

/// Why readings stopped being readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutOff {
    /// The first sequence number the provider could not read.
    pub from_seq: u64,
    /// The key id those readings were sealed under (one this provider was not given).
    pub key_id: u32,
    pub noticed_ms: u64,
    /// One plain sentence: revoked or expired, when and by whom when the log says.
    pub why: String,
}

/// What the provider knows about one device's stream (no secrets: key ids only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub device: String,
    pub stream: String,
    /// Key ids received, ascending; the last is the current one.
    pub key_ids: Vec<u32>,
    pub consent: Option<String>,
    pub last_seq: Option<u64>,
    pub readings: u64,
    pub last_key_ms: Option<u64>,
    pub cut_off: Option<CutOff>,
}

/// An open provider profile.
#[derive(Debug, Clone)]
pub struct Profile {
    dir: PathBuf,
    identity: PublicIdentity,
}

impl Profile {
    /// Creates the identity: secrets into the keychain, the public half into `dir`.
    pub fn init(
        dir: &Path,
        name: &str,
        url: &str,
        store: &dyn SecretStore,
        rng: &mut (impl RngCore + CryptoRng),
        now_ms: u64,
    ) -> Result<Profile> {
        check_name_and_url(name, url)?;
        let path = dir.join(IDENTITY);
        if path.exists() {
            return Err(Error::ProfileExists {
                path: dir.display().to_string(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::profile(dir, e))?;
        let mut tag = [0u8; 8];
        rng.fill_bytes(&mut tag);
        let account = format!("provider-{}", hex::encode(tag));
        let secrets = Secrets::generate(rng);
        store.save(&account, &secrets.to_bytes())?;
        let identity = secrets.public(&account, name.trim(), url.trim(), now_ms);
        if let Err(e) = write_json(&path, &identity) {
            // Leave no orphan secret behind a profile that does not exist.
            let _ = store.delete(&account);
            return Err(e);
        }
        Ok(Profile {
            dir: dir.to_owned(),
            identity,
        })
    }

    pub fn open(dir: &Path) -> Result<Profile> {
        let path = dir.join(IDENTITY);
        if !path.exists() {
            return Err(Error::NoProfile {
                path: dir.display().to_string(),
            });
        }
        let identity: PublicIdentity = read_json(&path)?;
        identity.signing()?;
        identity.kem()?;
        Ok(Profile {
            dir: dir.to_owned(),
            identity,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn identity(&self) -> &PublicIdentity {
        &self.identity
    }

    /// The secrets from the keychain, checked against the public identity.
    pub fn secrets(&self, store: &dyn SecretStore) -> Result<Secrets> {
        let account = &self.identity.account;
        let bytes = store.load(account)?.ok_or_else(|| Error::NoSecrets {
            account: account.clone(),
            path: self.dir.display().to_string(),
        })?;
        let secrets = Secrets::from_bytes(&bytes)?;
        if secrets.signing.public_key() != self.identity.signing()?
            || secrets.kem.public() != &self.identity.kem()?
        {
            return Err(Error::SecretsMismatch {
                account: account.clone(),
                path: self.dir.display().to_string(),
            });
        }
        Ok(secrets)
    }

    pub fn requests(&self) -> Result<Vec<RequestRecord>> {
        read_json_or_default(&self.dir.join(REQUESTS))
    }

    pub fn add_request(&self, record: RequestRecord) -> Result<()> {
        let _lock = self.lock()?;
        let mut all = self.requests()?;
        all.retain(|r| r.id != record.id);
        all.push(record);
        write_json(&self.dir.join(REQUESTS), &all)
    }

    pub fn devices(&self) -> Result<BTreeMap<String, DeviceRecord>> {
        read_json_or_default(&self.dir.join(DEVICES))
    }

    pub fn device(&self, device: &str) -> Result<Option<DeviceRecord>> {
        Ok(self.devices()?.remove(device))
    }

    pub fn set_device(&self, device: &str, record: DeviceRecord) -> Result<()> {
        let _lock = self.lock()?;
        let mut all = self.devices()?;
        all.insert(device.to_owned(), record);
        write_json(&self.dir.join(DEVICES), &all)
    }

    pub fn streams(&self) -> Result<Vec<StreamRecord>> {
        read_json_or_default(&self.dir.join(STREAMS))
    }

    /// Changes (or creates) one stream's record.
    pub fn update_stream(
        &self,
        device: &str,
        stream: &str,
        change: impl FnOnce(&mut StreamRecord),
    ) -> Result<StreamRecord> {
        let _lock = self.lock()?;
        let mut all = self.streams()?;
        let index = match all
            .iter()
            .position(|s| s.device == device && s.stream == stream)
        {
            Some(i) => i,
            None => {
                all.push(StreamRecord {
                    device: device.to_owned(),
                    stream: stream.to_owned(),
                    ..StreamRecord::default()
                });
                all.len() - 1
            }
        };
        change(&mut all[index]);
        let out = all[index].clone();
        write_json(&self.dir.join(STREAMS), &all)?;
        Ok(out)
    }
}

impl Profile {
    /// An exclusive lock on the profile's files, released when the returned file drops.
    fn lock(&self) -> Result<std::fs::File> {
        let path = self.dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::profile(&path, e))?;
        file.lock().map_err(|e| Error::profile(&path, e))?;
        Ok(file)
    }
}

/// The largest profile JSON file read back. The biggest, `requests.json`, grows by about 10 KB
/// per request made (a link is at most 8,192 characters): thousands fit, and a damaged or
/// planted file cannot make a command load gigabytes.
pub const MAX_JSON_FILE: usize = 32 << 20;

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::profile(path, e))?;
    // One byte past the limit is enough to know it is too large, without reading the rest.
    let mut bytes = Vec::new();
    file.take(MAX_JSON_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::profile(path, e))?;
    parse_json(path, &bytes)
}

/// Decodes the bytes of one profile JSON file (`path` only names it in errors): at most
/// [`MAX_JSON_FILE`] bytes of JSON for `T` ([`PublicIdentity`], `Vec<RequestRecord>`,
/// `BTreeMap<String, DeviceRecord>` or `Vec<StreamRecord>`).
pub fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_JSON_FILE {
        return Err(Error::profile(
            path,
            format!(
                "it is larger than the {} MiB a profile file may be",
                MAX_JSON_FILE >> 20
            ),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::profile(path, e))
}

fn read_json_or_default<T: DeserializeOwned + Default>(path: &Path) -> Result<T> {
    if !path.exists() {
        return Ok(T::default());
    }
    read_json(path)
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::profile(path, e))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` so a crash leaves either the old file or the new one: a temporary
/// file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::profile(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keychain::MemoryStore;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn init_then_open_gives_the_same_identity_and_its_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let made = Profile::init(tmp.path(), "Acme", "", &store, &mut rng, 5).unwrap();
        let opened = Profile::open(tmp.path()).unwrap();
        assert_eq!(opened.identity(), made.identity());
        let s = opened.secrets(&store).unwrap();
        assert_eq!(s.signing.public_key(), made.identity().signing().unwrap());
        let text = std::fs::read_to_string(tmp.path().join(IDENTITY)).unwrap();
        assert!(text.contains("\"name\": \"Acme\""), "{text}");
    }

    #[test]
    fn fail_a_second_init_or_foreign_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let p = Profile::init(tmp.path(), "Acme", "", &store, &mut rng, 5).unwrap();
        let again = Profile::init(tmp.path(), "Acme", "", &store, &mut rng, 5);
        assert!(matches!(again, Err(Error::ProfileExists { .. })));
        // Someone swaps the keychain entry for other secrets.
        store.delete(&p.identity().account).unwrap();
        let other = Secrets::generate(&mut rng);
        store
            .save(&p.identity().account, &other.to_bytes())
            .unwrap();
        assert!(matches!(
            p.secrets(&store),
            Err(Error::SecretsMismatch { .. })
        ));
        store.delete(&p.identity().account).unwrap();
        assert!(matches!(p.secrets(&store), Err(Error::NoSecrets { .. })));
    }

    #[test]
    fn fail_open_without_a_profile_says_how_to_make_one() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Profile::open(&tmp.path().join("none")).unwrap_err();
        assert!(e.to_string().contains("latchkey-provider init"), "{e}");
    }

    #[test]
    fn concurrent_updates_of_one_profile_lose_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        Profile::init(tmp.path(), "Acme", "", &store, &mut rng, 5).unwrap();
        let threads: Vec<_> = ["p1", "p2", "p3"]
            .into_iter()
            .map(|stream| {
                let dir = tmp.path().to_owned();
                std::thread::spawn(move || {
                    // Each thread opens the profile on its own, as separate processes would.
                    let p = Profile::open(&dir).unwrap();
                    for _ in 0..30 {
                        p.update_stream("d", stream, |s| s.readings += 1).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = Profile::open(tmp.path()).unwrap().streams().unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|s| s.readings == 30), "{all:?}");
    }

    #[test]
    fn fail_an_unknown_device_key_says_to_ask_the_nodes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let p = Profile::init(tmp.path(), "Acme", "", &store, &mut rng, 5).unwrap();
        let device = latchkey_proto::keys::DeviceId([9; 32]);
        let e = crate::registry::known_device(&p, &device).unwrap_err();
        assert!(e.to_string().contains("--node URL"), "{e}");
    }

    #[test]
    fn fail_an_oversized_profile_file_is_refused_with_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(6);
        let p = Profile::init(tmp.path(), "Acme", "", &store, &mut rng, 5).unwrap();
        // Valid JSON (an empty list and spaces), only too large.
        let mut big = b"[]".to_vec();
        big.resize(MAX_JSON_FILE + 1, b' ');
        std::fs::write(tmp.path().join(STREAMS), &big).unwrap();
        let e = p.streams().unwrap_err().to_string();
        assert!(
            e.contains("streams.json") && e.contains("larger than the 32 MiB"),
            "{e}"
        );
        big.truncate(MAX_JSON_FILE);
        std::fs::write(tmp.path().join(STREAMS), &big).unwrap();
        assert!(p.streams().unwrap().is_empty());
    }

    #[test]
    fn stream_records_update_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let p = Profile::init(tmp.path(), "Acme", "", &store, &mut rng, 5).unwrap();
        p.update_stream("d", "p1", |s| s.key_ids.push(1)).unwrap();
        p.update_stream("d", "p1", |s| s.key_ids.push(2)).unwrap();
        p.update_stream("d", "p2", |s| s.readings = 3).unwrap();
        let all = p.streams().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].key_ids, vec![1, 2]);
        assert_eq!(all[1].readings, 3);
    }
}
