//! Following other node processes' commits: every writing transaction sends a NOTIFY on
//! [`CHANNEL`] (PostgreSQL delivers it only once the transaction commits), and one task per
//! store LISTENs on a connection of its own and forwards what other processes committed to
//! [`Backend::changes`](crate::store::Backend::changes).
//!
//! The payload is compact text: `<instance> o <device hex> <version>`, `<instance> c <device
//! hex> <len>` or `<instance> m <mailbox hex>`. A store skips its own instance's payloads: it
//! announced those itself right after the commit.
//!
//! **When the listening connection drops**, notifications sent meanwhile are lost. The task
//! reconnects (with a pause), LISTENs again, and only then announces every device's current
//! chain version and consent log length and every mailbox holding live messages, read from
//! the database: a subscriber learns each change it may have missed, exactly as if it had
//! been notified (a spurious wake or an unchanged version costs nothing). With more devices
//! than the broadcast channel holds, slow subscribers lag, and a lagged subscriber drops
//! every cache (lib.rs `follow_changes`): the same outcome, cheaper.

use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use latchkey_proto::keys::DeviceId;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::Result;
use crate::store::{now_ms, Change};

/// The NOTIFY channel every node process on one database shares.
pub const CHANNEL: &str = "latchkey_changes";

/// How long the task waits before connecting again after the connection dropped.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// `application_name` of the listening connection (so an operator can tell it in
/// `pg_stat_activity`; the shared-database tests cut it there).
pub const APPLICATION_NAME: &str = "latchkey-node listener";

pub(super) fn encode(instance: &str, change: Change) -> String {
    match change {
        Change::Ops { device, version } => {
            format!("{instance} o {} {version}", hex::encode(device.0))
        }
        Change::Consents { device, len } => format!("{instance} c {} {len}", hex::encode(device.0)),
        Change::Mailbox(mailbox) => format!("{instance} m {}", hex::encode(mailbox)),
    }
}

fn id32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The sender's instance and the change, if `payload` is well formed.
fn decode(payload: &str) -> Option<(&str, Change)> {
    let mut parts = payload.split(' ');
    let instance = parts.next()?;
    let change = match (parts.next()?, parts.next()?, parts.next()) {
        ("o", device, Some(version)) => Change::Ops {
            device: DeviceId(id32(device)?),
            version: version.parse().ok()?,
        },
        ("c", device, Some(len)) => Change::Consents {
            device: DeviceId(id32(device)?),
            len: len.parse().ok()?,
        },
        ("m", mailbox, None) => Change::Mailbox(id32(mailbox)?),
        _ => return None,
    };
    Some((instance, change))
}

/// Starts the listening task; it runs until aborted (the store's drop).
pub(super) fn spawn(
    mut config: tokio_postgres::Config,
    pool: Pool,
    changes: broadcast::Sender<Change>,
    instance: String,
) -> tokio::task::JoinHandle<()> {
    config.application_name(APPLICATION_NAME);
    // A peer that vanished without closing the connection is noticed within a minute.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    tokio::spawn(async move {
        let mut resync = false;
        loop {
            if let Err(e) = listen(&config, &pool, &changes, &instance, resync).await {
                tracing::warn!(error = %e, "lost the PostgreSQL change listener; reconnecting");
            } else {
                tracing::warn!("the PostgreSQL change listener's connection closed; reconnecting");
            }
            resync = true;
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    })
}

/// One listening connection, until it ends.
async fn listen(
    config: &tokio_postgres::Config,
    pool: &Pool,
    changes: &broadcast::Sender<Change>,
    instance: &str,
    resync: bool,
) -> Result<()> {
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| crate::error::Error::PgConnect { source })?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL change listener connection failed");
                    return;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    if resync {
        // After LISTEN: a commit from now on is notified, one before it is read here.
        announce_everything(pool, changes).await?;
    }
    while let Some(payload) = rx.recv().await {
        match decode(&payload) {
            Some((from, _)) if from == instance => {}
            Some((_, change)) => {
                let _ = changes.send(change);
            }
            None => tracing::warn!(payload, "ignoring a malformed change notification"),
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Announces the current state of everything a subscriber may cache (see the module docs).
async fn announce_everything(pool: &Pool, changes: &broadcast::Sender<Change>) -> Result<()> {
    let client = pool.get().await?;
    for row in client
        .query("SELECT device, version FROM chain_versions", &[])
        .await?
    {
        if let Some(device) = id32_bytes(row.get(0)) {
            let version: i64 = row.get(1);
            let _ = changes.send(Change::Ops {
                device: DeviceId(device),
                version: u64::try_from(version).unwrap_or(0),
            });
        }
    }
    for row in client
        .query("SELECT device, MAX(seq) FROM consents GROUP BY device", &[])
        .await?
    {
        if let Some(device) = id32_bytes(row.get(0)) {
            let len: i64 = row.get(1);
            let _ = changes.send(Change::Consents {
                device: DeviceId(device),
                len: u64::try_from(len).unwrap_or(0),
            });
        }
    }
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    for row in client
        .query(
            "SELECT DISTINCT mailbox FROM mailbox_messages WHERE expires_ms > $1",
            &[&now],
        )
        .await?
    {
        if let Some(mailbox) = id32_bytes(row.get(0)) {
            let _ = changes.send(Change::Mailbox(mailbox));
        }
    }
    Ok(())
}

fn id32_bytes(bytes: Vec<u8>) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for change in [
            Change::Ops {
                device: DeviceId([7; 32]),
                version: 42,
            },
            Change::Consents {
                device: DeviceId([8; 32]),
                len: 3,
            },
            Change::Mailbox([9; 32]),
        ] {
            let payload = encode("abc", change);
            assert_eq!(decode(&payload), Some(("abc", change)));
        }
        assert_eq!(decode("abc o 00 1"), None);
        assert_eq!(decode("abc x"), None);
    }
}
