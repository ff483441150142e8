//! The one error shape the UI receives from every fallible command.

use std::fmt;

use serde::Serialize;

/// An error as the UI sees it: a stable machine-readable `code` to branch on and a
/// `message` fit to show a person. Serialized as `{"code": ..., "message": ...}`,
/// which `ui/src/lib/backend.ts` turns back into a `BackendError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    fn displays_code_then_message() {
        let err = CommandError::new("bad_input", "Name is empty.");
        assert_eq!(err.to_string(), "bad_input: Name is empty.");
    }
}
