//! The node library's one error type.

use std::path::PathBuf;

/// What can go wrong inside the node (request-level refusals are `api::ApiError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot open the database {path}: {source}; check the path and its permissions")]
    OpenDb {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(
        "the database holds an op that no longer verifies ({device}, seq {seq}): {source}; \
         restore the database from a backup or remove it and let the node replicate again"
    )]
    Corrupt {
        device: String,
        seq: u64,
        source: latchkey_proto::Error,
    },
    #[error("the database was written by a newer node (schema {found}, this build knows {known}); update the node")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the database holds chains of an earlier protocol (schema {found}, this build knows {known}); move it aside and start with a new --db file: the node re-syncs from its peers")]
    SchemaTooOld { found: i64, known: i64 },
    #[cfg(feature = "postgres")]
    #[error("the PostgreSQL URL given to --db does not parse: {source}; write it as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")]
    PgUrl { source: tokio_postgres::Error },
    #[cfg(feature = "postgres")]
    #[error("cannot connect to PostgreSQL: {source}; check that the server runs, the URL's host, port, user and database, and that the server lets this user in (pg_hba.conf)")]
    PgConnect { source: tokio_postgres::Error },
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL error: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[cfg(feature = "postgres")]
    #[error("no PostgreSQL connection available: {0}; check that the server runs and accepts more connections (max_connections)")]
    PgPool(#[from] deadpool_postgres::PoolError),
    #[cfg(feature = "postgres")]
    #[error("cannot migrate the PostgreSQL schema: {source}; if the database was migrated by a newer node, update this node; otherwise give --db an empty database of its own")]
    PgMigrate { source: Box<refinery::Error> },
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer {peer}: {message}")]
    Peer { peer: String, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The node library's `Result`.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("a background task failed: {e}"))
    }
}
