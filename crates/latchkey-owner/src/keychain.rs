//! Where the recovery phrase lives: the OS keychain, and nowhere else. Every platform's store
//! is a keyring-core credential store chosen at compile time, always with service
//! `org.latchkey.app` and user = the profile id (a random hex id, never the phrase):
//!
//! | target | store | where the phrase is |
//! |---|---|---|
//! | Linux, *BSD | Secret Service over D-Bus (zbus-secret-service-keyring-store) | an item in the default collection (e.g. gnome-keyring, KWallet) with attributes `service` and `username` |
//! | macOS | Keychain Services (apple-native-keyring-store, `keychain`) | a generic password in the login keychain: service `org.latchkey.app`, account = profile id |
//! | iOS | Protected Data store (apple-native-keyring-store, `protected`) | a generic password in the app's access group, same service and account |
//! | Windows | Credential Manager (windows-native-keyring-store) | a generic credential, target `<profile id>.org.latchkey.app` |
//! | Android | Keystore + SharedPreferences (android-native-keyring-store) | encrypted by an AES key that never leaves the Android Keystore, in the crate's default named store |
//!
//! Never the mock store: a target without a keychain does not build.

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

/// This build's keychain, by name (for messages and logs).
#[cfg(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
pub const PLATFORM_STORE: &str = "Secret Service";
#[cfg(target_os = "macos")]
pub const PLATFORM_STORE: &str = "macOS Keychain";
#[cfg(target_os = "ios")]
pub const PLATFORM_STORE: &str = "iOS Keychain";
#[cfg(target_os = "windows")]
pub const PLATFORM_STORE: &str = "Windows Credential Manager";
#[cfg(target_os = "android")]
pub const PLATFORM_STORE: &str = "Android Keystore";

/// The platform's store, as a keyring-core credential store.
fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    #[cfg(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ))]
    let store: Arc<keyring_core::CredentialStore> =
        zbus_secret_service_keyring_store::Store::new()?;
    #[cfg(target_os = "macos")]
    let store: Arc<keyring_core::CredentialStore> =
        apple_native_keyring_store::keychain::Store::new()?;
    #[cfg(target_os = "ios")]
    let store: Arc<keyring_core::CredentialStore> =
        apple_native_keyring_store::protected::Store::new()?;
    #[cfg(target_os = "windows")]
    let store: Arc<keyring_core::CredentialStore> = windows_native_keyring_store::Store::new()?;
    #[cfg(target_os = "android")]
    let store: Arc<keyring_core::CredentialStore> = android_native_keyring_store::Store::new()?;
    Ok(store)
}

impl KeyringStore {
    /// Connects to the platform keychain.
    pub fn open() -> Result<Self> {
        let store = platform_store().map_err(|e| Error::Keychain(e.to_string()))?;
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
