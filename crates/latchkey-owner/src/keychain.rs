//! Where the recovery phrase lives: the OS keychain, and nowhere else. The store is the
//! platform's own, chosen at compile time (`latchkey-keychain` lists each target's), always
//! with service `org.latchkey.app` and user = the profile id (a random hex id, never the
//! phrase); on Windows the credential's target is `<profile id>.org.latchkey.app`.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The keychain service name all profiles share.
pub const SERVICE: &str = "org.latchkey.app";

/// A place that keeps one recovery phrase per profile id.
pub trait SeedStore: Send + Sync + std::fmt::Debug {
    /// The phrase for `profile`, or `None` if there is none.
    fn load(&self, profile: &str) -> Result<Option<Zeroizing<String>>>;
    /// Stores `phrase` for `profile`, replacing nothing: fails if one exists.
    fn save(&self, profile: &str, phrase: &str) -> Result<()>;
    /// Removes the phrase for `profile` (absent is fine).
    fn delete(&self, profile: &str) -> Result<()>;
}

/// The OS keychain through keyring-core.
pub struct KeyringStore {
    store: Arc<keyring_core::CredentialStore>,
}

impl std::fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyringStore({PLATFORM_STORE})")
    }
}

pub use latchkey_keychain::PLATFORM_STORE;

impl KeyringStore {
    /// Connects to the platform keychain.
    pub fn open() -> Result<Self> {
        let store =
            latchkey_keychain::platform_store().map_err(|e| Error::Keychain(e.to_string()))?;
        Ok(KeyringStore { store })
    }

    fn entry(&self, profile: &str) -> Result<keyring_core::Entry> {
        self.store
            .build(SERVICE, profile, None)
            .map_err(|e| Error::Keychain(e.to_string()))
    }
}

impl SeedStore for KeyringStore {
    fn load(&self, profile: &str) -> Result<Option<Zeroizing<String>>> {
        match self.entry(profile)?.get_secret() {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| Error::Keychain("the stored phrase is not UTF-8".into()))?;
                Ok(Some(Zeroizing::new(text.to_owned())))
            }
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(Error::Keychain(e.to_string())),
        }
    }

    fn save(&self, profile: &str, phrase: &str) -> Result<()> {
        if self.load(profile)?.is_some() {
            return Err(Error::SeedExists);
        }
        self.entry(profile)?
            .set_secret(phrase.as_bytes())
            .map_err(|e| Error::Keychain(e.to_string()))
    }

    fn delete(&self, profile: &str) -> Result<()> {
        match self.entry(profile)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(Error::Keychain(e.to_string())),
        }
    }
}

/// In memory, for unit tests of logic around the keychain only.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryStore(std::sync::Mutex<std::collections::HashMap<String, Zeroizing<String>>>);

#[cfg(test)]
impl SeedStore for MemoryStore {
    fn load(&self, profile: &str) -> Result<Option<Zeroizing<String>>> {
        Ok(self.0.lock().unwrap().get(profile).cloned())
    }
    fn save(&self, profile: &str, phrase: &str) -> Result<()> {
        let mut map = self.0.lock().unwrap();
        if map.contains_key(profile) {
            return Err(Error::SeedExists);
        }
        map.insert(profile.into(), Zeroizing::new(phrase.into()));
        Ok(())
    }
    fn delete(&self, profile: &str) -> Result<()> {
        self.0.lock().unwrap().remove(profile);
        Ok(())
    }
}
