//! The operating system's own check that the device's owner is at it — a fingerprint, a face,
//! the phone's passcode, Touch ID, Windows Hello — asked before the recovery words leave the
//! keychain. The check sits in the command, not in the UI: a page that skipped it would get
//! no words.
//!
//! Phones and macOS ask through tauri-plugin-biometric (Android BiometricPrompt, iOS and macOS
//! LocalAuthentication), with the device's passcode allowed when no biometry is enrolled.
//! Windows asks Windows Hello (`UserConsentVerifier`, which falls back to the PIN). Linux
//! desktops have no standard prompt: there, and on a Windows machine without Hello set up,
//! the app's own confirmation before the words is the only one, and the answer says so.

use tauri::{AppHandle, Runtime};

use crate::error::CommandError;
use crate::views::Presence;

/// Asks the OS to confirm the owner, showing `reason`; blocks until they answer, so call it
/// off the async runtime. A refusal or a cancelled prompt is an error: nothing is shown.
pub fn confirm<R: Runtime>(app: &AppHandle<R>, reason: &str) -> Result<Presence, CommandError> {
    #[cfg(any(mobile, target_os = "macos"))]
    {
        use tauri_plugin_biometric::{AuthOptions, BiometricExt};
        let options = AuthOptions {
            allow_device_credential: true,
            ..AuthOptions::default()
        };
        app.biometric()
            .authenticate(reason.to_owned(), options)
            .map_err(|e| not_confirmed(&e.to_string()))?;
        Ok(Presence::Confirmed)
    }
    #[cfg(target_os = "windows")]
    {
        windows_hello(app, reason)
    }
    #[cfg(not(any(mobile, target_os = "macos", target_os = "windows")))]
    {
        let _ = (app, reason);
        Ok(Presence::NotOffered)
    }
}

#[cfg(target_os = "windows")]
#[allow(unsafe_code)] // the one interop call below; see the SAFETY note there
fn windows_hello<R: Runtime>(app: &AppHandle<R>, reason: &str) -> Result<Presence, CommandError> {
    use tauri::Manager;
    use windows::core::{factory, HSTRING};
    use windows::Security::Credentials::UI::{
        UserConsentVerificationResult, UserConsentVerifier, UserConsentVerifierAvailability,
    };
    use windows::Win32::Foundation::HWND;
    use windows::Win32::System::WinRT::IUserConsentVerifierInterop;
    use windows_future::IAsyncOperation;

    let available = UserConsentVerifier::CheckAvailabilityAsync()
        .and_then(|op| op.join())
        .map_err(|e| not_confirmed(&e.message()))?;
    if available != UserConsentVerifierAvailability::Available {
        return Ok(Presence::NotOffered);
    }
    // A desktop app has no CoreWindow, so `RequestVerificationAsync` cannot place its prompt
    // and fails; Windows asks desktop apps to name the window the prompt belongs to instead.
    let window = app
        .get_webview_window("main")
        .ok_or_else(|| not_confirmed("the app's window is closed"))?;
    let hwnd = window.hwnd().map_err(|e| not_confirmed(&e.to_string()))?;
    let interop = factory::<UserConsentVerifier, IUserConsentVerifierInterop>()
        .map_err(|e| not_confirmed(&e.message()))?;
    // SAFETY: the call only reads the handle, and it is a real window's (the app's own). Should
    // the user close that window meanwhile, Win32 checks window handles and the call fails
    // with an error, which is a refusal here; nothing is read through a dangling pointer.
    let operation: IAsyncOperation<UserConsentVerificationResult> =
        unsafe { interop.RequestVerificationForWindowAsync(HWND(hwnd.0), &HSTRING::from(reason)) }
            .map_err(|e| not_confirmed(&e.message()))?;
    let result = operation.join().map_err(|e| not_confirmed(&e.message()))?;
    if result == UserConsentVerificationResult::Verified {
        Ok(Presence::Confirmed)
    } else {
        Err(not_confirmed(&format!("{result:?}")))
    }
}

#[cfg(any(mobile, target_os = "macos", target_os = "windows"))]
fn not_confirmed(why: &str) -> CommandError {
    tracing::info!(why, "the OS did not confirm the owner");
    CommandError::new(
        "not_confirmed",
        "Your phone or computer did not confirm it is you, so the recovery words stay hidden. \
         Try again, and use your fingerprint, face or the device's passcode when it asks.",
    )
}
