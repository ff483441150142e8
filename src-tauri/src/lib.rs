//! The Latchkey app: a thin Tauri shell between the UI in `ui/` and latchkey-owner. Commands
//! only translate between JSON and the core's types; the logic they reach lives in `crates/`.
//!
//! Options (flags or environment, for tests and the demo):
//! `--profile DIR` / `LATCHKEY_PROFILE`: the profile directory (default: the app data dir);
//! `--demo` / `LATCHKEY_DEMO=1`: run local nodes and a simulated door inside the app;
//! `--version` / `-V`: print the version and exit without opening a window (packaging checks).

mod activity;
#[cfg(desktop)]
mod camera;
mod commands;
mod consent;
#[cfg(feature = "demo")]
mod demo;
#[cfg(feature = "demo")]
mod demo_meter;
pub mod error;
mod images;
mod links;
mod presence;
mod sharing;
mod state;
pub mod views;

use std::path::PathBuf;

use tauri::{Manager, RunEvent};

pub use commands::AppInfo;
pub use error::CommandError;
use state::AppState;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Options {
    profile: Option<PathBuf>,
    demo: bool,
    print_version: bool,
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>, env: impl Fn(&str) -> Option<String>) -> Self {
        let mut options = Options {
            profile: env("LATCHKEY_PROFILE").map(PathBuf::from),
            demo: env("LATCHKEY_DEMO").is_some_and(|v| v == "1"),
            print_version: false,
        };
        let mut args = args.into_iter().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--demo" => options.demo = true,
                "--version" | "-V" => options.print_version = true,
                "--profile" => options.profile = args.next().map(PathBuf::from),
                _ => {
                    if let Some(dir) = arg.strip_prefix("--profile=") {
                        options.profile = Some(PathBuf::from(dir));
                    }
                }
            }
        }
        options
    }
}

/// Starts the app and blocks until its last window closes.
#[cfg_attr(mobile, tauri::mobile_entry_point)]
pub fn run() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let options = Options::parse(std::env::args(), |k| std::env::var(k).ok());
    if options.print_version {
        println!("latchkey-app {}", env!("CARGO_PKG_VERSION"));
        return;
    }

    #[cfg(feature = "demo")]
    let demo = if options.demo {
        match tauri::async_runtime::block_on(demo::Demo::start()) {
            Ok(demo) => Some(demo),
            Err(why) => {
                eprintln!("error: the demo could not start: {why}");
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    #[cfg(not(feature = "demo"))]
    if options.demo {
        eprintln!("error: this build has no demo mode (built without the `demo` feature)");
        std::process::exit(2);
    }

    let mut builder = tauri::Builder::default();
    // Phones scan a claim QR with their own camera, from the UI (Scan.svelte).
    #[cfg(mobile)]
    {
        builder = builder.plugin(tauri_plugin_barcode_scanner::init());
    }
    // One window per profile: a second launch for the default profile (e.g. the OS opening a
    // `latchkey://` link) hands its link to the running app and exits. Demo and `--profile`
    // runs are separate profiles and may run beside it (tests run two apps at once).
    #[cfg(desktop)]
    if options.profile.is_none() && !options.demo {
        builder = builder.plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            if let Some(window) = app.get_webview_window("main") {
                let _ = window.unminimize();
                let _ = window.set_focus();
            }
        }));
    }
    let app = builder
        .plugin(tauri_plugin_deep_link::init())
        .plugin(tauri_plugin_notification::init())
        // The OS's fingerprint/face/passcode prompt before the recovery words (presence.rs).
        .plugin(tauri_plugin_biometric::init())
        .setup(move |app| {
            #[cfg(feature = "demo")]
            let demo_dir = demo.as_ref().map(demo::Demo::profile_dir);
            #[cfg(not(feature = "demo"))]
            let demo_dir: Option<PathBuf> = None;
            let dir = match (demo_dir, &options.profile) {
                (Some(dir), _) => dir,
                (None, Some(dir)) => dir.clone(),
                (None, None) => app.path().app_data_dir()?.join("profile"),
            };
            let state = AppState::new(dir);
            #[cfg(feature = "demo")]
            if let Some(demo) = demo {
                state.prepare_demo(demo)?;
            }
            #[cfg(feature = "demo")]
            let is_demo = state.is_demo();
            app.manage(state);
            // After `manage`: the watcher reaches the demo through the app's state.
            #[cfg(feature = "demo")]
            if is_demo {
                watch_signals(app.handle().clone());
            }
            #[cfg(desktop)]
            app.manage(camera::CameraState::default());
            links::install(app);
            activity::watch(app.handle().clone());
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::app_info,
            commands::status,
            commands::create_identity,
            commands::confirm_backup,
            commands::restore_identity,
            commands::recovery_words,
            commands::add_nodes,
            commands::set_nodes_to_ask,
            commands::devices,
            commands::refresh_devices,
            commands::claim_text,
            commands::claim_image,
            commands::open_device,
            commands::demo_view,
            sharing::device_owners,
            sharing::propose_owners,
            sharing::approve_proposal,
            sharing::proposals,
            sharing::accept_proposal,
            sharing::grants,
            sharing::invite,
            sharing::revoke,
            sharing::accept_invitation,
            sharing::invitations,
            sharing::audit,
            sharing::stays,
            sharing::stays_sync,
            sharing::share_stay,
            activity::activity,
            consent::consent_request_add,
            consent::consent_requests,
            consent::consent_request_dismiss,
            consent::consent_approve,
            consent::consent_revoke,
            consent::consents,
            consent::consent_log,
            consent::meter,
            links::take_invite_link,
            links::take_consent_link,
            #[cfg(desktop)]
            camera::camera_start,
            #[cfg(desktop)]
            camera::camera_stop,
        ])
        .build(tauri::generate_context!())
        .expect("error while building the Latchkey app");
    app.run(|handle, event| {
        if let RunEvent::Exit = event {
            #[cfg(feature = "demo")]
            if let Some(state) = handle.try_state::<AppState>() {
                tauri::async_runtime::block_on(state.end_demo());
            }
            #[cfg(not(feature = "demo"))]
            let _ = handle;
        }
    });
}

/// Ctrl-C, a plain `kill` or a closed terminal ends the demo through the normal exit path,
/// so it cleans up. The demo's recovery phrase leaves the keychain first, before the nodes
/// and the door stop: a terminal's Ctrl-C signals the whole job, so whatever provides the
/// keychain may be going away too. Once installed, the handlers stay for the life of the
/// process, so a second Ctrl-C during the teardown does not cut it short.
#[cfg(feature = "demo")]
fn watch_signals(handle: tauri::AppHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    tauri::async_runtime::spawn(async move {
        let (mut int, mut term, mut hup) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(int), Ok(term), Ok(hup)) => (int, term, hup),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                tracing::warn!(error = %e, "cannot watch signals; the demo cleans up only on a normal exit");
                return;
            }
        };
        tracing::info!("demo running; Ctrl-C, SIGTERM or SIGHUP ends it and cleans up");
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        if let Some(state) = handle.try_state::<AppState>() {
            state.forget_demo_phrase().await;
        }
        handle.exit(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Options {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::parse(
            std::iter::once("latchkey-app".to_owned()).chain(args.iter().map(|a| a.to_string())),
            |k| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()),
        )
    }

    #[test]
    fn flags_override_the_environment() {
        assert_eq!(parse(&[], &[]), Options::default());
        assert_eq!(
            parse(&["--profile", "/a"], &[("LATCHKEY_PROFILE", "/b")]).profile,
            Some(PathBuf::from("/a"))
        );
        assert_eq!(
            parse(&["--profile=/c"], &[]).profile,
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            parse(&[], &[("LATCHKEY_PROFILE", "/b")]).profile,
            Some(PathBuf::from("/b"))
        );
        assert!(parse(&["--demo"], &[]).demo);
        assert!(parse(&[], &[("LATCHKEY_DEMO", "1")]).demo);
        assert!(!parse(&[], &[("LATCHKEY_DEMO", "0")]).demo);
        assert!(parse(&["--version"], &[]).print_version);
        assert!(parse(&["-V"], &[]).print_version);
        // A link is never a flag, whatever it holds.
        assert!(!parse(&["latchkey://i/--version"], &[]).print_version);
    }
}
