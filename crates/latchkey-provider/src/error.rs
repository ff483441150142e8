//! The provider crate's one error type. Messages say what went wrong and what to do next; none
//! ever carries key material.

/// What the provider can refuse or fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no provider profile at {path}; create one with `latchkey-provider init --name NAME` (or pass the right `--profile DIR`)")]
    NoProfile { path: String },
    #[error("a provider profile already exists at {path}; use another `--profile DIR` to make a second identity")]
    ProfileExists { path: String },
    #[error("the OS keychain holds no secrets for provider profile {account}; the profile at {path} cannot sign or read without them. Restore the keychain, or start a new profile with `latchkey-provider init` in another directory")]
    NoSecrets { account: String, path: String },
    #[error("the OS keychain already holds secrets for provider profile {account}; refusing to overwrite them")]
    SecretsExist { account: String },
    #[error("the secrets in the OS keychain for provider profile {account} do not belong to the identity in {path}; the profile directory or the keychain entry was replaced")]
    SecretsMismatch { account: String, path: String },
    #[error("the OS keychain refused: {0}; unlock it (on Linux, the Secret Service such as gnome-keyring must be running and unlocked) and retry")]
    Keychain(String),
    #[error("the profile file {path} failed: {why}; check that the directory is writable and the file was not edited by hand")]
    Profile { path: String, why: String },
    #[error("the stored stream keys in {path} do not decrypt with this profile's keychain key; the file was damaged or belongs to another profile. Move it away and read again: the device re-sends current keys")]
    KeysDamaged { path: String },
    #[error("invalid {what}: {why}")]
    BadInput { what: &'static str, why: String },
    #[error("{0}")]
    Proto(#[from] latchkey_proto::Error),
    #[error("asking the registry nodes failed: {0}")]
    Quorum(#[from] latchkey_quorum::Error),
    #[error("the registry nodes do not agree on device {device}'s history (a fork); its identity key cannot be trusted until its owners settle it")]
    Fork { device: String },
    #[error("this profile has never learnt device {device}'s identity key from its verified ownership chain; run once with `--node URL` (a registry node) so key messages can be checked")]
    UnknownDeviceKey { device: String },
    #[error("invalid broker address {url}: {why}; use mqtt://HOST:PORT")]
    BadBroker { url: String, why: String },
    #[error("the MQTT broker at {url} failed: {why}; check that it runs and is reachable")]
    Broker { url: String, why: String },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn profile(path: &std::path::Path, why: impl std::fmt::Display) -> Self {
        Error::Profile {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }
}
