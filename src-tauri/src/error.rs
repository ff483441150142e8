//! The one error shape the UI receives from every fallible command.

use std::fmt;

use serde::Serialize;
use ts_rs::TS;

/// An error as the UI sees it: a stable machine-readable `code` to branch on and a
/// `message` fit to show a person. Serialized as `{"code": ..., "message": ...}`,
/// which `ui/src/lib/backend.ts` turns back into a `BackendError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl CommandError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The owner core's errors keep their stable code; the message is the core's words for
/// people (what happened, then what to do in the app), not its command-line text, which
/// names CLI commands a person in the app has no use for.
impl From<latchkey_owner::Error> for CommandError {
    fn from(e: latchkey_owner::Error) -> Self {
        Self::new(e.code(), e.for_people().message())
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for CommandError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_code_and_message() {
        let err = CommandError::new("device_unreachable", "The lock did not answer.");
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            serde_json::json!({ "code": "device_unreachable", "message": "The lock did not answer." })
        );
    }

    #[test]
    fn owner_errors_keep_their_code() {
        let err = CommandError::from(latchkey_owner::Error::NoNodes);
        assert_eq!(err.code, "no_nodes");
        assert!(
            err.message.starts_with("No registry nodes are set up"),
            "{}",
            err.message
        );
        assert!(err.message.contains("Settings"), "{}", err.message);
        for cli in ["latchkey ", "`", "--"] {
            assert!(!err.message.contains(cli), "{}", err.message);
        }
    }

    #[test]
    fn displays_code_then_message() {
        let err = CommandError::new("bad_input", "Name is empty.");
        assert_eq!(err.to_string(), "bad_input: Name is empty.");
    }
}
