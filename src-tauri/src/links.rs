//! Links from outside the app: invitations, the short `LATCHKEY://I/…` (any letter case; the
//! scheme `latchkey`, the host `i`) and the old `latchkey://invite/…`; and a data provider's
//! consent request, `LATCHKEY://C/…`. On Linux and Windows the OS starts the app
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
/// A provider's consent request (checked by the owner core when the UI hands it over).
const CONSENT_PREFIX: &str = "latchkey://c/";
/// The web host whose `https://HOST/i/…` and `https://HOST/c/…` links phones hand to the app
/// (Android App Links, iOS associated domains: tauri.conf.json's deep-link `mobile` entry and
/// docs/MOBILE.md). A link there carries the same code as the `LATCHKEY://` form after the
/// host; a browser without the app shows the page the domain serves instead.
pub const APP_LINK_HOST: &str = "links.latchkey.example";
/// Emitted (without payload: the link itself never travels in an event) when a link waits.
pub const EVENT: &str = "invite-link";
/// Emitted, likewise, when a consent request link waits.
pub const CONSENT_EVENT: &str = "consent-link";

fn starts_with_any_case(url: &str, prefix: &str) -> bool {
    url.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// An App Link (`https://APP_LINK_HOST/i/CODE`) in the `LATCHKEY://I/CODE` form the owner
/// core reads; any other URL as it came.
fn from_app_link(url: &str) -> std::borrow::Cow<'_, str> {
    let prefix = format!("https://{APP_LINK_HOST}/");
    match url.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(&prefix) => {
            format!("LATCHKEY://{}", &url[prefix.len()..]).into()
        }
        _ => url.into(),
    }
}

/// Keeps `url` for the UI if it is an invitation or a consent request link, and names the
/// event that tells the UI; other URLs are ignored.
fn offer(state: &AppState, url: &str) -> Option<&'static str> {
    let url = &*from_app_link(url);
    let (slot, event) = if INVITE_PREFIXES
        .iter()
        .any(|prefix| starts_with_any_case(url, prefix))
    {
        (&state.pending_link, EVENT)
    } else if starts_with_any_case(url, CONSENT_PREFIX) {
        (&state.pending_consent_link, CONSENT_EVENT)
    } else {
        tracing::warn!("ignoring a link that is neither an invitation nor a consent request");
        return None;
    };
    match slot.lock() {
        Ok(mut pending) => {
            *pending = Some(zeroize::Zeroizing::new(url.to_owned()));
            Some(event)
        }
        Err(_) => None,
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
            if let Some(event) = offer(&handle.state::<AppState>(), url.as_str()) {
                if let Err(e) = handle.emit(event, ()) {
                    tracing::warn!(error = %e, "cannot tell the UI about a link");
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

/// The consent request link waiting for the UI, if any; taking it clears it.
#[tauri::command]
pub fn take_consent_link(
    state: tauri::State<'_, AppState>,
) -> Result<Option<String>, CommandError> {
    let mut pending = state
        .pending_consent_link
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
        assert!(offer(&state, "https://example.com/").is_none());
        assert!(offer(&state, "latchkey://claim/x").is_none());
        assert!(state.pending_link.lock().unwrap().is_none());
        assert!(offer(&state, "latchkey://ix/ABC").is_none());
        assert!(offer(&state, "latchkey:/i/ABC").is_none());
        assert!(offer(&state, "LATCHKEY://").is_none());
        assert!(state.pending_link.lock().unwrap().is_none());
        let pending = || {
            state
                .pending_link
                .lock()
                .unwrap()
                .as_deref()
                .map(String::to_owned)
        };
        assert_eq!(offer(&state, "latchkey://invite/abc"), Some(EVENT));
        assert_eq!(pending().as_deref(), Some("latchkey://invite/abc"));
        // Short links in any case, exactly as they came (the core decodes any case).
        for link in [
            "LATCHKEY://I/AEBAGBAF",
            "latchkey://i/AEBAGBAF",
            "Latchkey://I/aebagbaf",
        ] {
            assert_eq!(offer(&state, link), Some(EVENT), "{link}");
            assert_eq!(pending().as_deref(), Some(link));
        }
    }

    #[test]
    fn app_links_on_the_web_host_wait_in_the_latchkey_form() {
        let state = AppState::new(std::env::temp_dir().join("latchkey-links-test-app-links"));
        let taken = |slot: &std::sync::Mutex<Option<zeroize::Zeroizing<String>>>| {
            slot.lock().unwrap().take().map(|l| l.as_str().to_owned())
        };
        let invite = format!("https://{APP_LINK_HOST}/I/AEBAGBAF");
        assert_eq!(offer(&state, &invite), Some(EVENT));
        assert_eq!(
            taken(&state.pending_link).as_deref(),
            Some("LATCHKEY://I/AEBAGBAF")
        );
        let consent = format!("https://{}/c/AEBA", APP_LINK_HOST.to_uppercase());
        assert_eq!(offer(&state, &consent), Some(CONSENT_EVENT));
        assert_eq!(
            taken(&state.pending_consent_link).as_deref(),
            Some("LATCHKEY://c/AEBA")
        );
        // Another host, plain http, or a host that only starts like ours: not ours.
        for url in [
            "https://links.latchkey.example.evil/i/AEBA".to_owned(),
            format!("http://{APP_LINK_HOST}/i/AEBA"),
            "https://example.com/i/AEBA".to_owned(),
            format!("https://{APP_LINK_HOST}/x/AEBA"),
        ] {
            assert!(offer(&state, &url).is_none(), "{url}");
        }
        assert!(state.pending_link.lock().unwrap().is_none());
    }

    #[test]
    fn consent_request_links_wait_apart_from_invitations() {
        let state = AppState::new(std::env::temp_dir().join("latchkey-links-test-consent"));
        let taken = |slot: &std::sync::Mutex<Option<zeroize::Zeroizing<String>>>| {
            slot.lock().unwrap().take().map(|l| l.as_str().to_owned())
        };
        for link in ["LATCHKEY://C/AEBAGBAF", "latchkey://c/aebagbaf"] {
            assert_eq!(offer(&state, link), Some(CONSENT_EVENT), "{link}");
            assert_eq!(taken(&state.pending_consent_link).as_deref(), Some(link));
            assert!(state.pending_link.lock().unwrap().is_none());
        }
        assert!(offer(&state, "latchkey://cx/AEBA").is_none());
        assert!(offer(&state, "latchkey:/c/AEBA").is_none());
        assert!(taken(&state.pending_consent_link).is_none());
    }
}
