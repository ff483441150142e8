//! The device agent's one error type.

use std::path::PathBuf;

/// What can stop the agent or one of its commands (`init`, `run`, `reset`, `status`). Refusals
/// of individual sealed commands are not errors: they are [`crate::pipeline::Refused`] and
/// signed rejections, logged in the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already holds a device (device.key exists); use `latchkeyd reset --dir {0}` for a factory reset, or choose another --dir")]
    AlreadyInitialised(PathBuf),
    #[error("{0} holds no device; run `latchkeyd init --dir {0} …` first")]
    NotInitialised(PathBuf),
    #[error("another latchkeyd is using {0}; stop it first (e.g. `systemctl stop latchkeyd`)")]
    Locked(PathBuf),
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}` and keep it owned by the agent's user")]
    KeyFileExposed { path: PathBuf, mode: u32 },
    #[error("{path} does not hold a device's keys ({why}); restore it from a backup of the device directory, or `latchkeyd init` a new device elsewhere")]
    BadKeyFile {
        path: PathBuf,
        why: latchkey_proto::Error,
    },
    #[error("config {path}: {why}")]
    Config { path: PathBuf, why: String },
    #[error("invalid option: {0}")]
    Invalid(String),
    #[error("invalid action \"{spec}\": {why} (expected NAME=DRIVER:SPEC, e.g. unlock=exec:/usr/local/bin/open-door)")]
    BadAction { spec: String, why: String },
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Proto(#[from] latchkey_proto::Error),
    #[error(transparent)]
    Quorum(#[from] latchkey_quorum::Error),
    #[error("the stored ownership chain does not verify ({0}); the database was altered: restore it or factory-reset the device")]
    CorruptChain(latchkey_proto::Error),
    #[error("{0}")]
    NoChain(String),
    #[error("claim QR code: {0}")]
    Qr(String),
    #[error("the audit log does not verify at entry {seq}: {why}")]
    AuditTampered { seq: u64, why: String },
    #[error(
        "cannot listen on {addr}: {source}; pick another --listen address or stop what uses it"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The device agent's `Result`.
pub type Result<T, E = Error> = core::result::Result<T, E>;
