//! Where the provider's secrets live: the OS keychain, and nowhere else. Service
//! `latchkey-provider`, user = the profile's account name (`provider-…`, kept in the profile's
//! `identity.json`). The store is the platform's own, the same one the owner core keeps its
//! recovery phrase in (`latchkey-keychain`: Secret Service on Linux, Keychain on Apple
//! systems, Credential Manager on Windows); never the mock store.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The keychain service name every provider profile shares.
pub const SERVICE: &str = "latchkey-provider";

/// A place that keeps one secret blob per account.
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// The secret for `account`, or `None` if there is none.
    fn load(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>>;
    /// Stores `secret` for `account`, replacing nothing: fails if one exists.
    fn save(&self, account: &str, secret: &[u8]) -> Result<()>;
    /// Removes the secret for `account` (absent is fine).
    fn delete(&self, account: &str) -> Result<()>;
}

/// The OS keychain through keyring-core.
pub struct KeyringStore {
    store: Arc<keyring_core::CredentialStore>,
}

impl std::fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyringStore({})", latchkey_keychain::PLATFORM_STORE)
    }
}

impl KeyringStore {
    /// Connects to the platform keychain.
    pub fn open() -> Result<Self> {
        let store =
            latchkey_keychain::platform_store().map_err(|e| Error::Keychain(e.to_string()))?;
        Ok(KeyringStore { store })
    }

    fn entry(&self, account: &str) -> Result<keyring_core::Entry> {
        self.store
            .build(SERVICE, account, None)
            .map_err(|e| Error::Keychain(e.to_string()))
    }
}

impl SecretStore for KeyringStore {
    fn load(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match self.entry(account)?.get_secret() {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(Error::Keychain(e.to_string())),
        }
    }

    fn save(&self, account: &str, secret: &[u8]) -> Result<()> {
        if self.load(account)?.is_some() {
            return Err(Error::SecretsExist {
                account: account.to_owned(),
            });
        }
        self.entry(account)?
            .set_secret(secret)
            .map_err(|e| Error::Keychain(e.to_string()))
    }

    fn delete(&self, account: &str) -> Result<()> {
        match self.entry(account)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(Error::Keychain(e.to_string())),
        }
    }
}

/// In memory, for unit tests of logic around the keychain only.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryStore(std::sync::Mutex<std::collections::HashMap<String, Zeroizing<Vec<u8>>>>);

#[cfg(test)]
impl SecretStore for MemoryStore {
    fn load(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(self.0.lock().unwrap().get(account).cloned())
    }
    fn save(&self, account: &str, secret: &[u8]) -> Result<()> {
        let mut map = self.0.lock().unwrap();
        if map.contains_key(account) {
            return Err(Error::SecretsExist {
                account: account.to_owned(),
            });
        }
        map.insert(account.into(), Zeroizing::new(secret.to_vec()));
        Ok(())
    }
    fn delete(&self, account: &str) -> Result<()> {
        self.0.lock().unwrap().remove(account);
        Ok(())
    }
}
