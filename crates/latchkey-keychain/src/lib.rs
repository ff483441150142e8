//! Which OS keychain a build uses: one keyring-core credential store per target, chosen at
//! compile time, shared by the owner core (the recovery phrase) and the provider (its keys)
//! so both keep their secrets in the same place on every platform:
//!
//! | target | store | where a secret is |
//! |---|---|---|
//! | Linux, *BSD | Secret Service over D-Bus (zbus-secret-service-keyring-store) | an item in the default collection (e.g. gnome-keyring, KWallet) with attributes `service` and `username` |
//! | macOS | Keychain Services (apple-native-keyring-store, `keychain`) | a generic password in the login keychain: service and account |
//! | iOS | Protected Data store (apple-native-keyring-store, `protected`) | a generic password in the app's access group, same service and account |
//! | Windows | Credential Manager (windows-native-keyring-store) | a generic credential, target `<account>.<service>` |
//! | Android | Keystore + SharedPreferences (android-native-keyring-store) | encrypted by an AES key that never leaves the Android Keystore, in the crate's default named store |
//!
//! Never the mock store: a target without a keychain does not build.

use std::sync::Arc;

pub use keyring_core::{CredentialStore, Entry, Error, Result};

/// This build's keychain, by name (for messages and logs).
pub const PLATFORM_STORE: &str = platform::NAME;

/// Connects to this platform's keychain.
pub fn platform_store() -> Result<Arc<CredentialStore>> {
    platform::store()
}

#[cfg(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
mod platform {
    use super::*;
    pub const NAME: &str = "Secret Service";
    pub fn store() -> Result<Arc<CredentialStore>> {
        Ok(zbus_secret_service_keyring_store::Store::new()?)
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::*;
    pub const NAME: &str = "macOS Keychain";
    pub fn store() -> Result<Arc<CredentialStore>> {
        Ok(apple_native_keyring_store::keychain::Store::new()?)
    }
}

#[cfg(target_os = "ios")]
mod platform {
    use super::*;
    pub const NAME: &str = "iOS Keychain";
    pub fn store() -> Result<Arc<CredentialStore>> {
        Ok(apple_native_keyring_store::protected::Store::new()?)
    }
}

#[cfg(target_os = "windows")]
mod platform {
    use super::*;
    pub const NAME: &str = "Windows Credential Manager";
    pub fn store() -> Result<Arc<CredentialStore>> {
        Ok(windows_native_keyring_store::Store::new()?)
    }
}

#[cfg(target_os = "android")]
mod platform {
    use super::*;
    pub const NAME: &str = "Android Keystore";
    pub fn store() -> Result<Arc<CredentialStore>> {
        Ok(android_native_keyring_store::Store::new()?)
    }
}
