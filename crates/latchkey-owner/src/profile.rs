//! A profile: one directory (its SQLite store) plus one recovery phrase in the OS keychain,
//! keyed by the profile's id. Everything the owner or guest does starts here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_proto::claim::DeviceAddr;
use latchkey_proto::keys::{DeviceId, KeyPurpose, PublicKey, RecoveryPhrase, SigningKey};
use latchkey_quorum::{QuorumClient, QuorumConfig};
use rand_core::{OsRng, RngCore};

use crate::error::{Error, Result};
use crate::keychain::SeedStore;
use crate::store::{ConnectionPool, DeviceRecord, Store, VerifiedChains};

/// Wall-clock time, injected so flows can be tested at a fixed "now".
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

const PROFILE_ID: &str = "profile_id";
const NODES_TO_ASK: &str = "nodes_to_ask";
const DEFAULT_NODES_TO_ASK: usize = 5;
const MAX_NODES_TO_ASK: usize = 32;

#[derive(Debug)]
pub struct Profile {
    dir: PathBuf,
    id: String,
    pub(crate) store: Store,
    pub(crate) seeds: Arc<dyn SeedStore>,
    pub(crate) clock: Arc<dyn Clock>,
    /// One HTTP client for everything the profile reaches (devices, nodes, mailboxes, quorum
    /// checks), so its connections stay alive between commands (the session's).
    pub(crate) http: reqwest::Client,
    session: Arc<Session>,
}

/// What a profile keeps in memory between commands, and can hand to the next [`Profile`] over
/// the same directory ([`Profile::with_session`]): an app that opens a profile per command
/// (its SQLite connection is not shared between threads) keeps its connections and keys.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    /// Signing keys read from the keychain this session (by keychain account, which names the
    /// profile): deriving the owner key from the phrase costs 2,048 PBKDF2 rounds, and every
    /// read is a keychain round trip. Held only in memory, wiped on drop, forgotten by
    /// [`Profile::lock`] and whenever the profile replaces the account.
    keys: Mutex<HashMap<String, SigningKey>>,
    /// When each device's chain was last checked with the nodes this session (the store keeps
    /// a check time too, but rewrites it only now and then).
    checked_ms: Mutex<HashMap<DeviceId, u64>>,
    /// Stored chains already verified, shared by every profile of the session.
    chains: Arc<VerifiedChains>,
    /// The store's connections, each handed to the next profile when one is dropped.
    connections: Arc<ConnectionPool>,
}

impl Session {
    pub fn new() -> Result<Arc<Session>> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::Keychain(format!("HTTP client: {e}")))?;
        Ok(Arc::new(Session {
            http,
            keys: Mutex::new(HashMap::new()),
            checked_ms: Mutex::new(HashMap::new()),
            chains: Arc::default(),
            connections: Arc::default(),
        }))
    }
}

impl Profile {
    /// Opens the profile in `dir`, creating the directory, its store and its id if needed.
    pub fn at(dir: &Path, seeds: Arc<dyn SeedStore>, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::with_session(dir, seeds, clock, Session::new()?)
    }

    /// [`Profile::at`], continuing `session` (from [`Profile::session`] of an earlier profile).
    pub fn with_session(
        dir: &Path,
        seeds: Arc<dyn SeedStore>,
        clock: Arc<dyn Clock>,
        session: Arc<Session>,
    ) -> Result<Self> {
        let store = Store::open_pooled(dir, session.chains.clone(), session.connections.clone())?;
        let id = match store.setting(PROFILE_ID)? {
            Some(id) => id,
            None => {
                let mut raw = [0u8; 16];
                OsRng.fill_bytes(&mut raw);
                let id = format!("profile-{}", hex::encode(raw));
                store.set_setting(PROFILE_ID, &id)?;
                id
            }
        };
        Ok(Profile {
            dir: dir.to_path_buf(),
            id,
            store,
            seeds,
            clock,
            http: session.http.clone(),
            session,
        })
    }

    /// What this profile keeps in memory between commands, for the next one over the same
    /// directory.
    pub fn session(&self) -> Arc<Session> {
        self.session.clone()
    }

    pub(crate) fn checked_ms(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, u64>> {
        self.session
            .checked_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every signing key held in memory (wiped as they drop): the next command reads
    /// the keychain again, and derives the owner key anew. For an app going to the background
    /// or locked by its user; a profile dropped forgets them too.
    pub fn lock(&self) {
        self.session
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The key held for `account`, or the one `read` gives (then held for the session).
    pub(crate) fn session_key(
        &self,
        account: &str,
        read: impl FnOnce() -> Result<SigningKey>,
    ) -> Result<SigningKey> {
        if let Some(key) = self
            .session
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
        {
            return Ok(SigningKey::from_bytes(&key.to_bytes()));
        }
        let key = read()?;
        self.session
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_owned(), SigningKey::from_bytes(&key.to_bytes()));
        Ok(key)
    }

    /// Drops what is held for `account` (it was replaced or deleted in the keychain).
    pub(crate) fn forget_key(&self, account: &str) {
        self.session
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id the keychain entry is stored under (not a secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn has_seed(&self) -> Result<bool> {
        Ok(self.seeds.load(&self.id)?.is_some())
    }

    /// Creates a new recovery phrase and stores it in the keychain. The caller shows the words
    /// once; they are never written anywhere else.
    pub fn create_seed(&self) -> Result<RecoveryPhrase> {
        if self.has_seed()? {
            return Err(Error::SeedExists);
        }
        let phrase = RecoveryPhrase::generate(&mut OsRng);
        self.forget_key(&self.id);
        self.seeds.save(&self.id, phrase.phrase())?;
        Ok(phrase)
    }

    /// Stores a phrase typed by the owner; returns the identity key it gives.
    pub fn restore_seed(&self, text: &str) -> Result<PublicKey> {
        let phrase = RecoveryPhrase::parse(text).map_err(Error::Phrase)?;
        self.forget_key(&self.id);
        self.seeds.save(&self.id, phrase.phrase())?;
        // Typed in, so written down somewhere.
        self.store
            .set_setting(crate::backup::BACKUP_CONFIRMED, "1")?;
        self.identity().map(|k| k.public_key())
    }

    /// The owner identity key, `m/19531'/0'/0'`, derived from the keychain's phrase once per
    /// session (see [`Profile::lock`]); the phrase and seed are wiped as soon as it is derived.
    pub fn identity(&self) -> Result<SigningKey> {
        self.session_key(&self.id, || {
            let phrase = self.seeds.load(&self.id)?.ok_or(Error::NoSeed)?;
            let phrase = RecoveryPhrase::parse(&phrase)
                .map_err(|_| Error::Keychain("the stored recovery phrase is damaged".into()))?;
            Ok(phrase.to_seed().derive(KeyPurpose::OwnerIdentity, 0)?)
        })
    }

    /// Adds registry nodes; returns how many were new.
    pub fn add_nodes(&self, urls: &[String]) -> Result<usize> {
        let mut clean = Vec::new();
        for url in urls {
            let trimmed = url.trim().trim_end_matches('/');
            if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
                return Err(Error::BadNodeUrl { url: url.clone() });
            }
            clean.push(trimmed.to_owned());
        }
        self.store.add_nodes(&clean, self.now_ms())
    }

    pub fn nodes(&self) -> Result<Vec<String>> {
        self.store.nodes()
    }

    /// How many randomly chosen nodes each ownership check asks (default 5; fewer when fewer
    /// are configured). More is slower but harder to fool: a check is right as long as one
    /// honest, up-to-date node is among those asked.
    pub fn nodes_to_ask(&self) -> Result<usize> {
        Ok(self
            .store
            .setting(NODES_TO_ASK)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_NODES_TO_ASK))
    }

    pub fn set_nodes_to_ask(&self, count: usize) -> Result<()> {
        if !(1..=MAX_NODES_TO_ASK).contains(&count) {
            return Err(Error::BadSetting(format!(
                "ask 1 to {MAX_NODES_TO_ASK} nodes, not {count}"
            )));
        }
        self.store.set_setting(NODES_TO_ASK, &count.to_string())
    }

    /// A quorum client over the configured nodes: ask [`Self::nodes_to_ask`] of them, need a
    /// majority of those; publish to all, need a majority to store.
    pub fn quorum(&self) -> Result<QuorumClient> {
        self.quorum_over(self.nodes()?)
    }

    /// A quorum client over `nodes` (e.g. a guest's invitation's, before they are kept).
    pub(crate) fn quorum_over(&self, nodes: Vec<String>) -> Result<QuorumClient> {
        if nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        let n = nodes.len();
        let sample = self.nodes_to_ask()?.min(n);
        let config = QuorumConfig {
            sample,
            min_answers: sample / 2 + 1,
            timeout: Duration::from_secs(3),
            publish_to: n,
            min_acks: n / 2 + 1,
        };
        Ok(QuorumClient::with_http(nodes, config, self.http.clone())?)
    }

    pub fn devices(&self) -> Result<Vec<DeviceRecord>> {
        self.store.devices()
    }

    /// Replaces where a device is reached directly (empty: only through the nodes' mailboxes),
    /// e.g. after it moved to another network.
    pub fn set_device_addresses(
        &self,
        query: &str,
        addrs: Vec<DeviceAddr>,
    ) -> Result<DeviceRecord> {
        let record = DeviceRecord {
            addrs,
            ..self.find_device(query)?
        };
        self.store.put_device(&record)?;
        Ok(record)
    }

    /// Finds a device by full id, short id (`XXXX-XXXX`), id prefix, or exact name.
    pub fn find_device(&self, query: &str) -> Result<DeviceRecord> {
        let q = query.trim();
        let mut hits = self.store.devices_where(|id, name| {
            id == q
                || DeviceId::parse(id).is_ok_and(|d| d.short().eq_ignore_ascii_case(q))
                || (q.len() >= 10 && id.starts_with(q))
                || name == q
        })?;
        match hits.len() {
            0 => Err(Error::UnknownDevice(q.to_owned())),
            1 => Ok(hits.remove(0)),
            _ => Err(Error::AmbiguousDevice(q.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keychain::MemoryStore;

    fn profile(dir: &Path) -> Profile {
        Profile::at(dir, Arc::new(MemoryStore::default()), Arc::new(SystemClock)).unwrap()
    }

    #[test]
    fn restore_gives_the_same_identity_and_names_the_wrong_word() {
        let tmp = tempfile::tempdir().unwrap();
        let a = profile(&tmp.path().join("a"));
        let phrase = a.create_seed().unwrap();
        assert!(matches!(a.create_seed(), Err(Error::SeedExists)));
        let b = profile(&tmp.path().join("b"));
        assert!(matches!(b.identity(), Err(Error::NoSeed)));
        let mut words: Vec<&str> = phrase.words();
        words[4] = "notaword";
        let err = b.restore_seed(&words.join(" ")).unwrap_err();
        assert_eq!(err.code(), "bad_phrase");
        assert!(err.to_string().contains("word 5"), "{err}");
        let key = b.restore_seed(phrase.phrase()).unwrap();
        assert_eq!(key, a.identity().unwrap().public_key());
        // The profile id survives reopening; nothing of the phrase is in the store.
        let id = b.id().to_owned();
        drop(b);
        let db = std::fs::read(tmp.path().join("b").join(crate::store::DB_FILE)).unwrap();
        assert!(!db
            .windows(phrase.words()[0].len() + 1 + phrase.words()[1].len())
            .any(|w| w == format!("{} {}", phrase.words()[0], phrase.words()[1]).as_bytes()));
        assert_eq!(profile(&tmp.path().join("b")).id(), id);
    }

    #[test]
    fn the_identity_is_derived_once_per_session_and_forgotten_on_lock_or_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let seeds = Arc::new(MemoryStore::default());
        let p = Profile::at(tmp.path(), seeds.clone(), Arc::new(SystemClock)).unwrap();
        p.create_seed().unwrap();
        let first = p.identity().unwrap().public_key();
        // Another phrase put in the keychain behind the profile's back: the session's key is
        // still used (the keychain is not read again) ...
        let other = RecoveryPhrase::generate(&mut OsRng);
        seeds.delete(p.id()).unwrap();
        seeds.save(p.id(), other.phrase()).unwrap();
        assert_eq!(p.identity().unwrap().public_key(), first);
        // ... and a profile continuing the session shares it.
        let next = Profile::with_session(
            tmp.path(),
            seeds.clone(),
            Arc::new(SystemClock),
            p.session(),
        )
        .unwrap();
        assert_eq!(next.identity().unwrap().public_key(), first);
        // Locked: read and derived anew.
        p.lock();
        let derived = other
            .to_seed()
            .derive(KeyPurpose::OwnerIdentity, 0)
            .unwrap()
            .public_key();
        assert_eq!(next.identity().unwrap().public_key(), derived);
        // Replaced through the profile: forgotten at once.
        let typed = RecoveryPhrase::generate(&mut OsRng);
        seeds.delete(p.id()).unwrap();
        let restored = p.restore_seed(typed.phrase()).unwrap();
        assert_ne!(restored, derived);
        assert_eq!(next.identity().unwrap().public_key(), restored);
        // Without a phrase there is nothing to cache.
        let empty = Profile::at(&tmp.path().join("e"), seeds, Arc::new(SystemClock)).unwrap();
        assert!(matches!(empty.identity(), Err(Error::NoSeed)));
    }

    #[test]
    fn node_urls_are_checked_and_deduplicated() {
        let tmp = tempfile::tempdir().unwrap();
        let p = profile(tmp.path());
        assert!(matches!(p.quorum(), Err(Error::NoNodes)));
        assert!(matches!(
            p.add_nodes(&["ftp://x".into()]),
            Err(Error::BadNodeUrl { .. })
        ));
        assert_eq!(
            p.add_nodes(&["http://a:1/".into(), "http://a:1".into()])
                .unwrap(),
            1
        );
        assert_eq!(p.nodes().unwrap(), vec!["http://a:1".to_owned()]);
        assert!(p.quorum().is_ok());
        assert_eq!(p.nodes_to_ask().unwrap(), 5);
        assert_eq!(
            p.quorum().unwrap().config().sample,
            1,
            "never more than configured"
        );
        assert!(matches!(p.set_nodes_to_ask(0), Err(Error::BadSetting(_))));
        p.add_nodes(&[
            "http://b:1".into(),
            "http://c:1".into(),
            "http://d:1".into(),
        ])
        .unwrap();
        p.set_nodes_to_ask(3).unwrap();
        let config = p.quorum().unwrap().config().clone();
        assert_eq!((config.sample, config.min_answers), (3, 2));
    }
}
