//! The agent's directory: `device.key` (secret, mode 0600, created exclusively),
//! `latchkeyd.toml`, `claim.png` and `claim.txt` (they hold the setup secret: mode 0600),
//! `state.db`, and a lock file that keeps two agents (or `reset` and a running agent) apart.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use latchkey_proto::keys::DeviceId;

use crate::error::{Error, Result};
use crate::keyfile::{DeviceSecrets, MAX_KEY_FILE};

pub const KEY_FILE: &str = "device.key";
pub const CONFIG_FILE: &str = "latchkeyd.toml";
pub const CLAIM_PNG: &str = "claim.png";
pub const CLAIM_TXT: &str = "claim.txt";
pub const STATE_DB: &str = "state.db";
const LOCK_FILE: &str = "latchkeyd.lock";

#[derive(Debug, Clone)]
pub struct DeviceDir {
    root: PathBuf,
}

/// Held while a process works on the directory; released on drop (and by the kernel on kill).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DeviceDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DeviceDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn key_path(&self) -> PathBuf {
        self.root.join(KEY_FILE)
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    pub fn claim_png(&self) -> PathBuf {
        self.root.join(CLAIM_PNG)
    }
    pub fn claim_txt(&self) -> PathBuf {
        self.root.join(CLAIM_TXT)
    }
    pub fn db_path(&self) -> PathBuf {
        self.root.join(STATE_DB)
    }

    /// Creates the directory (mode 0700) if missing.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(Error::io(&self.root))?;
        let meta = std::fs::metadata(&self.root).map_err(Error::io(&self.root))?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .map_err(Error::io(&self.root))?;
        }
        Ok(())
    }

    pub fn is_initialised(&self) -> bool {
        self.key_path().exists()
    }

    /// Takes the directory's lock, or says another process holds it.
    pub fn lock(&self) -> Result<DirLock> {
        let path = self.root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(Error::io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked(self.root.clone())),
            Err(TryLockError::Error(e)) => Err(Error::io(&path)(e)),
        }
    }

    /// Writes a new key file; refuses to overwrite one (O_EXCL).
    /// `bytes`: the encoded key file ([`crate::keyfile`]).
    pub fn create_key_file(&self, bytes: &[u8]) -> Result<()> {
        let path = self.key_path();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyInitialised(self.root.clone())
                } else {
                    Error::io(&path)(e)
                }
            })?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(Error::io(&path))?;
        sync_dir(&self.root)
    }

    /// Replaces the key file atomically (factory reset: a new setup key; a claim: none).
    pub fn replace_key_file(&self, bytes: &[u8]) -> Result<()> {
        write_private(&self.key_path(), bytes)
    }

    /// Reads the keys; refuses a key file other users can read.
    pub fn read_keys(&self) -> Result<DeviceSecrets> {
        let path = self.key_path();
        if !path.exists() {
            return Err(Error::NotInitialised(self.root.clone()));
        }
        let mode = std::fs::metadata(&path)
            .map_err(Error::io(&path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::KeyFileExposed {
                path,
                mode: mode & 0o777,
            });
        }
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE + 1));
        File::open(&path)
            .and_then(|f| f.take(MAX_KEY_FILE as u64 + 1).read_to_end(&mut bytes))
            .map_err(Error::io(&path))?;
        DeviceSecrets::from_bytes(&bytes).map_err(|e| Error::BadKeyFile { path, why: e })
    }

    /// The claim files (`claim.txt`, `claim.png`) that are still on disk.
    pub fn claim_files(&self) -> Vec<PathBuf> {
        [self.claim_txt(), self.claim_png()]
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    }

    /// Spends the setup secret once a claim is in the verified chain: rewrites the key file
    /// without the setup key (atomically, fsynced) if it still holds one, then deletes the
    /// claim files and syncs the directory. The key file goes first: a crash in between leaves
    /// only copies of a secret the key file no longer has, and the next call deletes them.
    /// Call it under the directory's lock, for the device the caller verified the claim of.
    /// Returns whether anything was on disk to erase.
    pub fn spend_setup(&self, device: &DeviceId) -> Result<bool> {
        let held = self.read_keys()?;
        if held.device_id() != *device {
            return Err(Error::Internal(
                "the key file now holds another device's keys; refusing to rewrite it".into(),
            ));
        }
        let mut erased = false;
        if held.setup.is_some() {
            self.replace_key_file(&held.without_setup().to_bytes())?;
            erased = true;
        }
        let claim_files = self.claim_files();
        for path in &claim_files {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path)(e)),
            }
        }
        if !claim_files.is_empty() {
            sync_dir(&self.root)?;
            erased = true;
        }
        Ok(erased)
    }

    /// Writes `bytes` to `name` in the directory, mode 0600, atomically.
    pub fn write_private(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_private(&self.root.join(name), bytes)
    }
}

/// Writes a sibling temporary file with mode 0600 (created exclusively), syncs it, and renames
/// it over `path`, so a crash leaves either the old or the new content.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp-latchkeyd");
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io(&tmp))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::TestDevice;

    #[test]
    fn key_file_is_private_exclusive_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DeviceDir::new(tmp.path().join("d"));
        dir.create().unwrap();
        let device = TestDevice::new(1, "door");
        let keys = crate::keyfile::key_file_of(&device.keys);
        dir.create_key_file(&keys).unwrap();
        let mode = std::fs::metadata(dir.key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            dir.create_key_file(&keys),
            Err(Error::AlreadyInitialised(_))
        ));
        let back = dir.read_keys().unwrap();
        assert_eq!(back.device_id(), device.keys.device_id());
        std::fs::set_permissions(dir.key_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(dir.read_keys(), Err(Error::KeyFileExposed { .. })));
    }

    #[test]
    fn spending_the_setup_secret_erases_it_once_and_keeps_the_other_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DeviceDir::new(tmp.path().join("d"));
        dir.create().unwrap();
        let device = TestDevice::new(1, "door");
        // An old (version 1) key file and both claim files.
        dir.create_key_file(&device.keys.to_secret_bytes()).unwrap();
        dir.write_private(CLAIM_TXT, b"LATCHKEY:C1:...").unwrap();
        dir.write_private(CLAIM_PNG, b"png").unwrap();
        let other = TestDevice::new(2, "other").keys.device_id();
        assert!(matches!(dir.spend_setup(&other), Err(Error::Internal(_))));
        assert!(dir.read_keys().unwrap().setup.is_some(), "unchanged");

        assert!(dir.spend_setup(&device.keys.device_id()).unwrap());
        let keys = dir.read_keys().unwrap();
        assert!(keys.setup.is_none());
        assert_eq!(keys.kem.public(), device.keys.kem.public());
        assert!(dir.claim_files().is_empty());
        assert!(
            !dir.spend_setup(&device.keys.device_id()).unwrap(),
            "nothing left"
        );
        let mode = std::fs::metadata(dir.key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_oversized_key_file_is_refused_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DeviceDir::new(tmp.path());
        dir.create_key_file(&vec![2u8; MAX_KEY_FILE + 1000])
            .unwrap();
        assert!(matches!(
            dir.read_keys(),
            Err(Error::BadKeyFile {
                why: latchkey_proto::Error::TooLarge { .. },
                ..
            })
        ));
    }

    #[test]
    fn lock_is_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DeviceDir::new(tmp.path());
        let held = dir.lock().unwrap();
        assert!(matches!(dir.lock(), Err(Error::Locked(_))));
        drop(held);
        dir.lock().unwrap();
    }
}
