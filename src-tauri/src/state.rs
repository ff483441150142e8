//! What the app keeps between commands: where the profile lives, the keychain handle, the
//! backup check while onboarding, links from outside until the UI takes them, meter watches.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use latchkey_owner::keychain::{KeyringStore, SeedStore};
use latchkey_owner::{BackupCheck, Profile, Session, SystemClock};
use zeroize::Zeroizing;

use crate::error::CommandError;

pub struct AppState {
    profile_dir: PathBuf,
    seeds: Result<Arc<dyn SeedStore>, String>,
    /// The few words of a new phrase to be typed back; in memory only, until the check passes.
    pub backup: Mutex<Option<BackupCheck>>,
    /// An invitation link from outside the app, until the UI takes it (see `links.rs`).
    pub pending_link: Mutex<Option<Zeroizing<String>>>,
    /// The owner's meter watches, by (device, stream): started by the first `meter` call, then
    /// read on each poll; each stops when dropped.
    pub meters: Mutex<HashMap<(String, String), latchkey_owner::MeterWatch>>,
    /// A consent request link from outside the app, likewise.
    pub pending_consent_link: Mutex<Option<Zeroizing<String>>>,
    /// What the profile keeps in memory between commands (kept-alive connections to doors and
    /// nodes, signing keys read from the keychain once), handed to each command's profile.
    session: Mutex<Option<Arc<Session>>>,
    #[cfg(feature = "demo")]
    pub demo: Mutex<Option<crate::demo::Demo>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("profile_dir", &self.profile_dir)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Connects to the OS keychain now, so a missing Secret Service shows on the first screen
    /// rather than at the first command that needs it.
    pub fn new(profile_dir: PathBuf) -> Self {
        let seeds = KeyringStore::open()
            .map(|s| Arc::new(s) as Arc<dyn SeedStore>)
            .map_err(|e| e.to_string());
        AppState {
            profile_dir,
            seeds,
            backup: Mutex::new(None),
            pending_link: Mutex::new(None),
            pending_consent_link: Mutex::new(None),
            meters: Mutex::new(HashMap::new()),
            session: Mutex::new(None),
            #[cfg(feature = "demo")]
            demo: Mutex::new(None),
        }
    }

    pub fn is_demo(&self) -> bool {
        #[cfg(feature = "demo")]
        return self.demo.lock().is_ok_and(|d| d.is_some());
        #[cfg(not(feature = "demo"))]
        false
    }

    pub fn keychain_problem(&self) -> Option<String> {
        self.seeds.as_ref().err().cloned()
    }

    pub fn seeds(&self) -> Result<Arc<dyn SeedStore>, CommandError> {
        self.seeds
            .clone()
            .map_err(|why| CommandError::from(latchkey_owner::Error::Keychain(why)))
    }

    /// Runs `f` with a freshly opened profile on a blocking thread. The profile holds a SQLite
    /// connection, so it cannot be shared between threads, and the core's futures borrow it
    /// (they are not `Send`); each call therefore has its own profile and drives the future to
    /// completion on the app's runtime from a blocking-pool thread. The profiles share one
    /// [`Session`]: its HTTP connections to the door and the nodes, the keys derived from the
    /// phrase, and the SQLite connection each profile hands to the next (issue 15).
    pub async fn with_profile<T, F, Fut>(&self, f: F) -> Result<T, CommandError>
    where
        T: Send + 'static,
        F: FnOnce(Profile) -> Fut + Send + 'static,
        Fut: Future<Output = latchkey_owner::Result<T>>,
    {
        let dir = self.profile_dir.clone();
        let seeds = self.seeds()?;
        let session = {
            let mut held = self.session.lock().unwrap_or_else(|p| p.into_inner());
            match &*held {
                Some(s) => s.clone(),
                None => held.insert(Session::new()?).clone(),
            }
        };
        tauri::async_runtime::spawn_blocking(move || {
            let profile = Profile::with_session(&dir, seeds, Arc::new(SystemClock), session)?;
            tauri::async_runtime::block_on(f(profile))
        })
        .await
        .map_err(|e| CommandError::new("internal", format!("the command stopped: {e}")))?
        .map_err(CommandError::from)
    }
}
