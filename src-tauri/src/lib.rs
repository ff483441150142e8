//! The Latchkey desktop app: a thin Tauri shell between the UI in `ui/` and the
//! protocol crates. Commands only translate between JSON and the crates' types;
//! the logic they reach lives in `crates/`.

mod commands;
pub mod error;

pub use commands::AppInfo;
pub use error::CommandError;

/// Starts the app and blocks until its last window closes.
pub fn run() {
    tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![commands::app_info])
        .run(tauri::generate_context!())
        .expect("error while running the Latchkey app");
}
