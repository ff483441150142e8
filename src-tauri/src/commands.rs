//! Commands the UI can invoke. Each stays a few lines: parse, call latchkey-owner, hand back
//! a view from `views.rs`; errors keep the core's `{code, message}`.

use latchkey_owner::{BackupCheck, ClaimSource};
use serde::Serialize;
use tauri::{AppHandle, Emitter, Runtime, State};
use ts_rs::TS;
use zeroize::Zeroizing;

use crate::error::CommandError;
use crate::state::AppState;
use crate::views::{
    ClaimProgress, ClaimResult, DemoView, DeviceView, Identity, NewIdentity, OpenResult,
    RecoveryWords, Status,
};

/// What the welcome screen shows about this build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct AppInfo {
    pub name: String,
    pub version: String,
    /// The wire protocol version this build speaks, so a person can match it
    /// against a device's when the two disagree.
    pub protocol_version: u8,
    /// A phone build: the UI scans claim codes through the phone's own scanner.
    pub mobile: bool,
}

impl AppInfo {
    fn from_package(info: &tauri::PackageInfo) -> Self {
        Self {
            name: info.name.clone(),
            version: info.version.to_string(),
            protocol_version: latchkey_proto::PROTOCOL_VERSION,
            mobile: cfg!(mobile),
        }
    }
}

#[tauri::command]
pub fn app_info<R: Runtime>(app: AppHandle<R>) -> AppInfo {
    AppInfo::from_package(app.package_info())
}

#[tauri::command]
pub async fn status(state: State<'_, AppState>) -> Result<Status, CommandError> {
    let demo = state.is_demo();
    if let Some(problem) = state.keychain_problem() {
        return Ok(Status {
            profile_id: String::new(),
            has_identity: false,
            backup_confirmed: false,
            owner_key: None,
            nodes: Vec::new(),
            nodes_to_ask: 0,
            keychain_problem: Some(problem),
            invitations: 0,
            demo,
        });
    }
    state
        .with_profile(move |p| async move {
            let owner_key = match p.identity() {
                Ok(key) => Some(key.public_key().to_string()),
                Err(latchkey_owner::Error::NoSeed) => None,
                Err(e) => return Err(e),
            };
            Ok(Status {
                profile_id: p.id().to_owned(),
                has_identity: owner_key.is_some(),
                backup_confirmed: p.backup_confirmed()?,
                owner_key,
                nodes: p.nodes()?,
                nodes_to_ask: u32::try_from(p.nodes_to_ask()?).unwrap_or(u32::MAX),
                invitations: u32::try_from(p.invitations()?.len()).unwrap_or(u32::MAX),
                keychain_problem: None,
                demo,
            })
        })
        .await
}

/// Creates the recovery phrase in the keychain and returns its words for the one time they
/// are shown, with the positions the person must type back.
#[tauri::command]
pub async fn create_identity(state: State<'_, AppState>) -> Result<NewIdentity, CommandError> {
    let (words, check, owner_key) = state
        .with_profile(|p| async move {
            let phrase = p.create_seed()?;
            let words: Vec<Zeroizing<String>> = phrase
                .words()
                .iter()
                .map(|w| Zeroizing::new((*w).to_owned()))
                .collect();
            let check = BackupCheck::new(&phrase, &mut rand::rngs::OsRng);
            Ok((words, check, p.identity()?.public_key().to_string()))
        })
        .await?;
    let confirm_positions = check.positions();
    *state.backup.lock().map_err(poisoned)? = Some(check);
    Ok(NewIdentity {
        words: words.iter().map(|w| w.as_str().to_owned()).collect(),
        confirm_positions,
        owner_key,
    })
}

/// Checks the words typed back, in the order of `confirm_positions`.
#[tauri::command]
pub async fn confirm_backup(
    state: State<'_, AppState>,
    answers: Vec<String>,
) -> Result<(), CommandError> {
    let check = state
        .backup
        .lock()
        .map_err(poisoned)?
        .clone()
        .ok_or_else(|| {
            CommandError::new(
                "no_backup_pending",
                "There is no new recovery phrase waiting to be confirmed.",
            )
        })?;
    state
        .with_profile(move |p| async move { p.confirm_backup(&check, &answers) })
        .await?;
    *state.backup.lock().map_err(poisoned)? = None;
    Ok(())
}

#[tauri::command]
pub async fn restore_identity(
    state: State<'_, AppState>,
    words: String,
) -> Result<Identity, CommandError> {
    let words = Zeroizing::new(words);
    state
        .with_profile(move |p| async move {
            let key = p.restore_seed(&words)?;
            Ok(Identity {
                owner_key: key.to_string(),
            })
        })
        .await
}

/// The recovery phrase from the keychain, for Settings' "show recovery words", once the OS
/// has confirmed the owner where it offers a standard prompt (src-tauri/src/presence.rs).
#[tauri::command]
pub async fn recovery_words<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
) -> Result<RecoveryWords, CommandError> {
    let seeds = state.seeds()?;
    // The prompt blocks until the person answers: off the async runtime's workers.
    let presence = tauri::async_runtime::spawn_blocking(move || {
        crate::presence::confirm(&app, "Show your recovery words")
    })
    .await
    .map_err(|_| {
        CommandError::new("internal", "the check before the words stopped; try again")
    })??;
    state
        .with_profile(move |p| async move {
            let phrase = seeds.load(p.id())?.ok_or(latchkey_owner::Error::NoSeed)?;
            Ok(RecoveryWords {
                words: phrase.split_whitespace().map(str::to_owned).collect(),
                presence,
            })
        })
        .await
}

#[tauri::command]
pub async fn add_nodes(
    state: State<'_, AppState>,
    urls: Vec<String>,
) -> Result<Vec<String>, CommandError> {
    state
        .with_profile(move |p| async move {
            p.add_nodes(&urls)?;
            p.nodes()
        })
        .await
}

/// How many randomly chosen nodes each ownership check asks; returns the setting now in force.
#[tauri::command]
pub async fn set_nodes_to_ask(state: State<'_, AppState>, count: u32) -> Result<u32, CommandError> {
    state
        .with_profile(move |p| async move {
            p.set_nodes_to_ask(count as usize)?;
            Ok(u32::try_from(p.nodes_to_ask()?).unwrap_or(u32::MAX))
        })
        .await
}

/// The devices as last verified, without asking the nodes (fast; for the first paint).
#[tauri::command]
pub async fn devices(state: State<'_, AppState>) -> Result<Vec<DeviceView>, CommandError> {
    let records = state
        .with_profile(|p| async move {
            let me = p.identity().ok().map(|k| k.public_key());
            Ok((card_parts(&p, p.devices()?)?, me))
        })
        .await?;
    Ok(device_views(records))
}

/// Asks the nodes for each device's newest ownership chain, then lists the devices.
#[tauri::command]
pub async fn refresh_devices(state: State<'_, AppState>) -> Result<Vec<DeviceView>, CommandError> {
    let records = state
        .with_profile(|p| async move {
            let me = p.identity().ok().map(|k| k.public_key());
            let mut fresh = Vec::new();
            for device in p.devices()? {
                fresh.push(p.refresh_device(device).await?);
            }
            Ok((card_parts(&p, fresh)?, me))
        })
        .await?;
    Ok(device_views(records))
}

/// A device with what its card shows beside the chain: a fork alarm, its last answer.
type CardParts = (
    latchkey_owner::store::DeviceRecord,
    Option<latchkey_owner::ForkAlarm>,
    Option<OpenResult>,
);

fn card_parts(
    p: &latchkey_owner::Profile,
    records: Vec<latchkey_owner::store::DeviceRecord>,
) -> Result<Vec<CardParts>, latchkey_owner::Error> {
    records
        .into_iter()
        .map(|r| {
            let alarm = p.fork_alarm(&r.id)?;
            let last = p
                .last_answer(&r)?
                .map(|a| OpenResult::from_report(&a.report, a.received_ms));
            Ok((r, alarm, last))
        })
        .collect()
}

fn device_views(
    (records, me): (Vec<CardParts>, Option<latchkey_proto::keys::PublicKey>),
) -> Vec<DeviceView> {
    records
        .into_iter()
        .map(|(r, alarm, last)| DeviceView::new(&r, alarm.as_ref(), me.as_ref(), last))
        .collect()
}

/// Claims a device from its code's text (`LATCHKEY:C1:…`), typed or pasted.
#[tauri::command]
pub async fn claim_text<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    text: String,
    name: Option<String>,
) -> Result<ClaimResult, CommandError> {
    claim_with_progress(app, &state, Zeroizing::new(text), name).await
}

/// Claims from the code's text, telling the window each stage (event `claim-progress`).
async fn claim_with_progress<R: Runtime>(
    app: AppHandle<R>,
    state: &AppState,
    text: Zeroizing<String>,
    name: Option<String>,
) -> Result<ClaimResult, CommandError> {
    state
        .with_profile(move |p| async move {
            let tell = move |stage| {
                let _ = app.emit("claim-progress", ClaimProgress::from(stage));
            };
            let report = p
                .claim_with_progress(ClaimSource::Text(&text), name.as_deref(), &tell)
                .await?;
            Ok(ClaimResult::from(&report))
        })
        .await
}

/// Claims a device from a photo or screenshot of its QR code, chosen in the UI: the image's
/// bytes (PNG or JPEG) as base64, so the same call works where the IPC carries only JSON.
#[tauri::command]
pub async fn claim_image<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    image_base64: String,
) -> Result<ClaimResult, CommandError> {
    let text = crate::images::claim_text_from_image(&image_base64)?;
    claim_with_progress(app, &state, text, None).await
}

/// Sends `action` to a device and returns its verified, signed answer.
#[tauri::command]
pub async fn open_device(
    state: State<'_, AppState>,
    device: String,
    action: String,
) -> Result<OpenResult, CommandError> {
    state
        .with_profile(move |p| async move {
            let report = p.open(&device, &action, b"").await?;
            Ok(OpenResult::from_report(&report, p.now_ms()))
        })
        .await
}

/// The demo panel (the simulated door's claim QR and state); `None` outside demo mode.
#[tauri::command]
pub fn demo_view(state: State<'_, AppState>) -> Result<Option<DemoView>, CommandError> {
    #[cfg(feature = "demo")]
    return state.demo_view();
    #[cfg(not(feature = "demo"))]
    {
        let _ = state;
        Ok(None)
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> CommandError {
    CommandError::new(
        "internal",
        "an earlier command failed midway; restart the app",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_the_field_names_the_ui_reads() {
        let info = AppInfo {
            name: "Latchkey".into(),
            version: "0.1.0".into(),
            protocol_version: 1,
            mobile: false,
        };
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            serde_json::json!({
                "name": "Latchkey",
                "version": "0.1.0",
                "protocol_version": 1,
                "mobile": false
            })
        );
    }

    #[test]
    fn reports_the_package_and_the_protocol_version_it_speaks() {
        let package = tauri::PackageInfo {
            name: "Latchkey".into(),
            version: "1.2.3".parse().unwrap(),
            authors: "",
            description: "",
            crate_name: "latchkey-app",
        };
        assert_eq!(
            AppInfo::from_package(&package),
            AppInfo {
                name: "Latchkey".into(),
                version: "1.2.3".into(),
                protocol_version: latchkey_proto::PROTOCOL_VERSION,
                // This test runs on a desktop.
                mobile: false,
            }
        );
    }
}
