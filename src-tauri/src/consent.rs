//! Commands for a device's data: providers' consent requests (`LATCHKEY://C/…`), consents
//! given and revoked, the verified consent log, and the owner's own meter. Thin adapters like
//! `commands.rs`; the rules (verifying requests and the log, signing entries, telling the
//! device, opening readings) live in latchkey-owner.

use latchkey_owner::MeterWatch;
use tauri::State;
use zeroize::Zeroizing;

use crate::error::CommandError;
use crate::state::AppState;
use crate::views::{ConsentLogEntryView, ConsentRequestView, ConsentView, MeterView};

/// Verifies a provider's request link and keeps it until it is approved or dismissed.
#[tauri::command]
pub async fn consent_request_add(
    state: State<'_, AppState>,
    link: String,
) -> Result<ConsentRequestView, CommandError> {
    let link = Zeroizing::new(link);
    state
        .with_profile(move |p| async move {
            Ok(ConsentRequestView::from(
                &p.consent_request_add(link.trim())?,
            ))
        })
        .await
}

/// Requests waiting for an answer, for one device (all of them without one).
#[tauri::command]
pub async fn consent_requests(
    state: State<'_, AppState>,
    device: Option<String>,
) -> Result<Vec<ConsentRequestView>, CommandError> {
    state
        .with_profile(move |p| async move {
            let device = device
                .map(|d| p.find_device(&d).map(|r| r.id.to_string()))
                .transpose()?;
            Ok(p.consent_requests()?
                .iter()
                .map(ConsentRequestView::from)
                .filter(|r| device.as_ref().is_none_or(|d| &r.device == d))
                .collect())
        })
        .await
}

#[tauri::command]
pub async fn consent_request_dismiss(
    state: State<'_, AppState>,
    id: String,
) -> Result<(), CommandError> {
    state
        .with_profile(move |p| async move { p.consent_request_dismiss(&id) })
        .await
}

/// Gives consent: a signed entry in the device's log on the nodes, then the device told.
#[tauri::command]
pub async fn consent_approve(
    state: State<'_, AppState>,
    id: String,
) -> Result<ConsentView, CommandError> {
    state
        .with_profile(move |p| async move { Ok(ConsentView::from(&p.consent_approve(&id).await?)) })
        .await
}

/// Takes consent back (the device rotates the stream key at once).
#[tauri::command]
pub async fn consent_revoke(
    state: State<'_, AppState>,
    id: String,
) -> Result<ConsentView, CommandError> {
    state
        .with_profile(move |p| async move { Ok(ConsentView::from(&p.consent_revoke(&id).await?)) })
        .await
}

/// Every consent ever given for a device, from its verified log.
#[tauri::command]
pub async fn consents(
    state: State<'_, AppState>,
    device: String,
) -> Result<Vec<ConsentView>, CommandError> {
    state
        .with_profile(move |p| async move {
            let id = p.find_device(&device)?.id;
            Ok(p.consents(&id)
                .await?
                .iter()
                .map(ConsentView::from)
                .collect())
        })
        .await
}

/// A device's verified consent log, oldest entry first.
#[tauri::command]
pub async fn consent_log(
    state: State<'_, AppState>,
    device: String,
) -> Result<Vec<ConsentLogEntryView>, CommandError> {
    state
        .with_profile(move |p| async move {
            let id = p.find_device(&device)?.id;
            Ok(p.consent_log(&id)
                .await?
                .iter()
                .map(ConsentLogEntryView::from)
                .collect())
        })
        .await
}

/// The owner's own meter. The first call for a device and stream starts watching it on the
/// home broker (`broker`, or the demo's when none is given); later calls read the watch's
/// latest snapshot, so the UI may poll every second at no cost to the device.
#[tauri::command]
pub async fn meter(
    state: State<'_, AppState>,
    device: String,
    stream: String,
    broker: Option<String>,
) -> Result<MeterView, CommandError> {
    let broker = broker
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty());
    let key = (device.clone(), stream.clone());
    if broker.is_none() {
        if let Some(watch) = state.meters.lock().map_err(poisoned)?.get(&key) {
            return Ok(MeterView::new(&device, &stream, &watch.snapshot()));
        }
    }
    let broker = broker.or_else(|| demo_broker(&state)).ok_or_else(|| {
        CommandError::new(
            "no_broker",
            "Type the address of your home MQTT broker (mqtt://HOST:PORT), where the device \
             publishes its readings.",
        )
    })?;
    let (id, s) = (device.clone(), stream.clone());
    let watch = state
        .with_profile(move |p| async move {
            let device = p.find_device(&id)?.id;
            MeterWatch::start(&p, device, &s, &broker).await
        })
        .await?;
    let view = MeterView::new(&device, &stream, &watch.snapshot());
    state.meters.lock().map_err(poisoned)?.insert(key, watch);
    Ok(view)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> CommandError {
    CommandError::new(
        "internal",
        "an earlier command failed midway; restart the app",
    )
}

/// The demo's own broker when the demo runs; a product build has none to offer.
#[cfg(feature = "demo")]
fn demo_broker(state: &AppState) -> Option<String> {
    state.demo_broker()
}

#[cfg(not(feature = "demo"))]
fn demo_broker(_: &AppState) -> Option<String> {
    None
}
