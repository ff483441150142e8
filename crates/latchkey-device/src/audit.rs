//! The audit log's wire types live in [`latchkey_proto::audit`] so an owner app can verify what
//! the device signs; re-exported here, where the device writes the log.

pub use latchkey_proto::audit::*;
