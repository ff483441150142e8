//! Commands the UI can invoke. Each stays a few lines: look something up or call
//! into a crate, then hand back a serializable value.

use serde::Serialize;
use tauri::{AppHandle, Runtime};

/// What the welcome screen shows about this build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppInfo {
    pub name: String,
    pub version: String,
    /// The wire protocol version this build speaks, so a person can match it
    /// against a device's when the two disagree.
    pub protocol_version: u8,
}

impl AppInfo {
    fn from_package(info: &tauri::PackageInfo) -> Self {
        Self {
            name: info.name.clone(),
            version: info.version.to_string(),
            protocol_version: latchkey_proto::PROTOCOL_VERSION,
        }
    }
}

#[tauri::command]
pub fn app_info<R: Runtime>(app: AppHandle<R>) -> AppInfo {
    AppInfo::from_package(app.package_info())
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
        };
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            serde_json::json!({ "name": "Latchkey", "version": "0.1.0", "protocol_version": 1 })
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
            }
        );
    }
}
