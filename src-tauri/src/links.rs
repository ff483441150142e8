//! Invitation links from outside the app: the short `LATCHKEY://I/…` (any letter case; the
//! scheme `latchkey`, the host `i`) and the old `latchkey://invite/…`. On Linux and Windows the OS starts the app
//! with the link as its argument (a running app gets it through the single-instance plugin);
//! on macOS, iOS and Android the deep-link plugin delivers it. Either way the link waits in
//! the app state until the UI takes it, and the UI is told with an event that one is waiting,
//! so a link that arrives before the UI listens is not lost.

use tauri::{App, Emitter, Manager};
use tauri_plugin_deep_link::DeepLinkExt;

use crate::error::CommandError;
use crate::state::AppState;

/// The link forms the owner core accepts, compared without regard to letter case (a short
/// link is upper case so its QR code can use alphanumeric mode; an OS may lower-case a scheme).
const INVITE_PREFIXES: [&str; 2] = ["latchkey://i/", "latchkey://invite/"];
/// Emitted (without payload: the link itself never travels in an event) when a link waits.
pub const EVENT: &str = "invite-link";

/// Keeps `url` for the UI if it is an invitation link; other URLs are ignored.
fn offer(state: &AppState, url: &str) -> bool {
    let invitation = INVITE_PREFIXES.iter().any(|prefix| {
        url.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    });
    if !invitation {
        tracing::warn!("ignoring a link that is not an invitation");
        return false;
    }
    match state.pending_link.lock() {
        Ok(mut pending) => {
            *pending = Some(zeroize::Zeroizing::new(url.to_owned()));
            true
        }
        Err(_) => false,
    }
}

/// Picks up the link the app was started with and listens for later ones.
pub fn install(app: &App) {
    let handle = app.handle().clone();
    match app.deep_link().get_current() {
        Ok(Some(urls)) => {
            for url in urls {
                offer(&handle.state::<AppState>(), url.as_str());
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the link the app was started with"),
    }
    app.deep_link().on_open_url(move |event| {
        for url in event.urls() {
            if offer(&handle.state::<AppState>(), url.as_str()) {
                if let Err(e) = handle.emit(EVENT, ()) {
                    tracing::warn!(error = %e, "cannot tell the UI about an invitation link");
                }
            }
        }
    });
}

/// The invitation link waiting for the UI, if any; taking it clears it.
#[tauri::command]
pub fn take_invite_link(state: tauri::State<'_, AppState>) -> Result<Option<String>, CommandError> {
    let mut pending = state
        .pending_link
        .lock()
        .map_err(|_| CommandError::new("internal", "the app's state is damaged; restart it"))?;
    Ok(pending.take().map(|link| link.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invitation_links_wait_for_the_ui() {
        let state = AppState::new(std::env::temp_dir().join("latchkey-links-test"));
        assert!(!offer(&state, "https://example.com/"));
        assert!(!offer(&state, "latchkey://claim/x"));
        assert!(state.pending_link.lock().unwrap().is_none());
        assert!(!offer(&state, "latchkey://ix/ABC"));
        assert!(!offer(&state, "latchkey:/i/ABC"));
        assert!(!offer(&state, "LATCHKEY://"));
        assert!(state.pending_link.lock().unwrap().is_none());
        let pending = || {
            state
                .pending_link
                .lock()
                .unwrap()
                .as_deref()
                .map(String::to_owned)
        };
        assert!(offer(&state, "latchkey://invite/abc"));
        assert_eq!(pending().as_deref(), Some("latchkey://invite/abc"));
        // Short links in any case, exactly as they came (the core decodes any case).
        for link in [
            "LATCHKEY://I/AEBAGBAF",
            "latchkey://i/AEBAGBAF",
            "Latchkey://I/aebagbaf",
        ] {
            assert!(offer(&state, link), "{link}");
            assert_eq!(pending().as_deref(), Some(link));
        }
    }
}
