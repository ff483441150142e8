//! The activity feed: what the doors report about guests (first opens, redemptions,
//! refusals), sealed to this owner and fetched from its mailbox on the nodes. While the app
//! runs, a background task subscribes to the owned doors (those not subscribed yet) and
//! fetches new events on an interval; each new one reaches the UI as the `activity` event and the person as a system
//! notification. Thin like the commands: the owner core's `events` module does the work.

use std::time::Duration;

use latchkey_owner::events::{self, EventFilter};
use tauri::{AppHandle, Emitter, Manager, Runtime, State};
use tauri_plugin_notification::NotificationExt;

use crate::error::CommandError;
use crate::state::AppState;
use crate::views::ActivityView;

/// Emitted (without payload) after a fetch brought new events, so the feed reloads.
pub const EVENT: &str = "activity";
/// How often the app asks its nodes for new events; the demo's nodes are local, so it asks
/// more often there. `LATCHKEY_EVENTS_POLL_MS` overrides both.
const POLL: Duration = Duration::from_secs(20);
const DEMO_POLL: Duration = Duration::from_secs(2);

/// The doors' reports, newest first, as fetched so far.
#[tauri::command]
pub async fn activity(state: State<'_, AppState>) -> Result<Vec<ActivityView>, CommandError> {
    state
        .with_profile(|p| async move {
            Ok(events::list(&p, &EventFilter::default())?
                .iter()
                .map(ActivityView::from)
                .collect())
        })
        .await
}

/// Starts the background fetch for the app's lifetime.
pub fn watch<R: Runtime>(app: AppHandle<R>) {
    let every = std::env::var("LATCHKEY_EVENTS_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    tauri::async_runtime::spawn(async move {
        loop {
            let Some(state) = app.try_state::<AppState>() else {
                return;
            };
            let wait = every.unwrap_or(if state.is_demo() { DEMO_POLL } else { POLL });
            match state
                .with_profile(move |p| async move {
                    // Nothing to fetch for a profile without an identity (a guest, or before
                    // onboarding) or without nodes.
                    match p.identity() {
                        Err(latchkey_owner::Error::NoSeed) => return Ok(Vec::new()),
                        Err(e) => return Err(e),
                        Ok(_) if p.nodes()?.is_empty() => return Ok(Vec::new()),
                        Ok(_) => {}
                    }
                    // Asks only doors not subscribed with this profile's key yet (a door just
                    // claimed, or one out of reach last time).
                    let report = events::subscribe(&p).await?;
                    for (door, why) in &report.failed {
                        tracing::debug!(%door, %why, "not subscribed to a door's events yet");
                    }
                    let fresh = events::fetch(&p, 0).await?;
                    if fresh.is_empty() {
                        return Ok(Vec::new());
                    }
                    let limit = Some(fresh.len());
                    events::list(
                        &p,
                        &EventFilter {
                            limit,
                            ..EventFilter::default()
                        },
                    )
                })
                .await
            {
                Ok(fresh) if !fresh.is_empty() => {
                    if let Err(e) = app.emit(EVENT, ()) {
                        tracing::warn!(error = %e, "cannot tell the UI about new door events");
                    }
                    let (title, body) = notification_text(&fresh);
                    if let Err(e) = app.notification().builder().title(title).body(body).show() {
                        // No notification server (a bare X session): the feed still shows it.
                        tracing::debug!(error = %e, "no system notification");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "door events not fetched this round"),
            }
            tokio::time::sleep(wait).await;
        }
    });
}

/// One notification for what one fetch brought: the newest event in words, and how many more.
fn notification_text(fresh: &[events::EventView]) -> (String, String) {
    let newest = &fresh[0];
    let title = if newest.kind == "refused" {
        format!("{} refused a guest", newest.door)
    } else {
        newest.door.clone()
    };
    let body = match fresh.len() {
        1 => newest.what.clone(),
        n => format!("{} (and {} more)", newest.what, n - 1),
    };
    (title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, what: &str) -> events::EventView {
        events::EventView {
            device: "lkdev1x".into(),
            door: "Front door".into(),
            seq: 1,
            kind: kind.into(),
            reject_code: None,
            guest_name: "Ada".into(),
            guest_key: "lkpk1…".into(),
            grant: "ab".repeat(32),
            action: "unlock".into(),
            what: what.into(),
            time_ms: Some(1),
            received_ms: 2,
        }
    }

    #[test]
    fn one_notification_names_the_door_and_the_newest_event() {
        let (title, body) = notification_text(&[event(
            "first_open",
            "Ada used the invitation for the first time (unlock)",
        )]);
        assert_eq!(title, "Front door");
        assert_eq!(body, "Ada used the invitation for the first time (unlock)");
        let (title, body) = notification_text(&[
            event("refused", "Ada was refused (unlock): outside its hours"),
            event(
                "first_open",
                "Ada used the invitation for the first time (unlock)",
            ),
        ]);
        assert_eq!(title, "Front door refused a guest");
        assert_eq!(
            body,
            "Ada was refused (unlock): outside its hours (and 1 more)"
        );
    }
}
