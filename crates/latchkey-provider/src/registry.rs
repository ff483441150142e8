//! What the provider asks the registry nodes: a device's verified ownership chain (for the
//! identity key that signs its key messages) and its verified consent log (to say when and by
//! whom a consent ended). Nothing a single node says is taken on its word: the chain is
//! verified from its genesis, whose identity key must hash to the device id, and the consent
//! log against the chain's owners.

use latchkey_proto::chain::Chain;
use latchkey_proto::consent::{ConsentLog, ConsentStatus, Ended};
use latchkey_proto::keys::{DeviceId, PublicKey};
use latchkey_quorum::{QuorumClient, QuorumConfig};

use crate::error::{Error, Result};
use crate::profile::{DeviceRecord, Profile};

/// A quorum client over the nodes given on the command line: ask all of them, need a majority.
pub fn client(nodes: &[String]) -> Result<QuorumClient> {
    let n = nodes.len();
    let config = QuorumConfig {
        sample: n,
        min_answers: n / 2 + 1,
        publish_to: n,
        min_acks: n / 2 + 1,
        ..QuorumConfig::default()
    };
    Ok(QuorumClient::new(nodes.to_vec(), config)?)
}

/// Fetches and verifies `device`'s chain and remembers its current identity key in the
/// profile. A fork is refused: two histories may name two identity keys.
pub async fn learn_device(
    profile: &Profile,
    client: &QuorumClient,
    device: &DeviceId,
    now_ms: u64,
) -> Result<(PublicKey, Chain)> {
    let view = client
        .check(device, None, now_ms, &mut rand::thread_rng())
        .await?;
    if !view.forks.is_empty() {
        return Err(Error::Fork {
            device: device.to_string(),
        });
    }
    if view.chain.device() != *device {
        // assess() already ties the chain to the id; a mismatch would be a bug, never data.
        return Err(Error::Fork {
            device: device.to_string(),
        });
    }
    let identity = view.chain.state().identity;
    profile.set_device(
        &device.to_string(),
        DeviceRecord {
            identity: identity.to_string(),
            chain_seq: view.chain.state().seq,
            learnt_ms: now_ms,
        },
    )?;
    Ok((identity, view.chain))
}

/// The identity key a verified chain gave earlier.
pub fn known_device(profile: &Profile, device: &DeviceId) -> Result<PublicKey> {
    let record = profile
        .device(&device.to_string())?
        .ok_or_else(|| Error::UnknownDeviceKey {
            device: device.to_string(),
        })?;
    PublicKey::parse(&record.identity).map_err(|e| Error::BadInput {
        what: "device identity key in devices.json",
        why: e.to_string(),
    })
}

/// The verified consent log (the longest one that verifies against `chain`; nodes whose log
/// does not verify or conflicts are named in the report and ignored).
pub async fn consent_log(client: &QuorumClient, chain: &Chain) -> Result<ConsentLog> {
    let report = client.consent_log(chain).await?;
    for node in &report.lying {
        tracing::warn!(%node, "node served a consent log that does not verify");
    }
    for node in &report.conflicting {
        tracing::warn!(%node, "node served a conflicting consent log");
    }
    Ok(report.log)
}

/// This provider's latest consent for `stream` in the log, if any.
pub fn my_consent<'a>(
    statuses: &'a [ConsentStatus],
    me: &PublicKey,
    stream: &str,
) -> Option<&'a ConsentStatus> {
    statuses.iter().rev().find(|c| {
        c.request.request().provider.signing == *me && c.request.request().stream == stream
    })
}

/// One plain sentence on how the consent ended, from the verified log.
pub fn explain(log: &ConsentLog, me: &PublicKey, stream: &str, now_ms: u64) -> String {
    let statuses = log.consents_at(now_ms);
    let Some(c) = my_consent(&statuses, me, stream) else {
        return "the verified consent log holds no consent for this provider on this stream".into();
    };
    let given = format!(
        "consent {} (given {} by owner {})",
        short_id(&c.id.to_string()),
        show_time(c.given_ms),
        c.given_by.short()
    );
    match &c.ended {
        None => format!(
            "the verified consent log still shows {given} as active; the device may not have \
             caught up yet"
        ),
        Some(ended) => describe_end(&given, ended),
    }
}

fn describe_end(given: &str, ended: &Ended) -> String {
    use latchkey_proto::consent::EndKind;
    let by = ended
        .by
        .map(|k| format!(" by owner {}", k.short()))
        .unwrap_or_default();
    match &ended.kind {
        EndKind::Revoked => format!(
            "the verified consent log says {given} was revoked {}{by}",
            show_time(ended.time_ms)
        ),
        EndKind::Expired => format!(
            "the verified consent log says {given} expired {}{}",
            show_time(ended.time_ms),
            if by.is_empty() {
                String::new()
            } else {
                format!(" (recorded{by})")
            }
        ),
        EndKind::Lapsed(until) => format!(
            "the verified consent log says {given} lapsed at the end of its period, {}",
            show_time(*until)
        ),
        EndKind::Transferred => format!(
            "the verified consent log says {given} ended {} when the device changed owners",
            show_time(ended.time_ms)
        ),
    }
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// RFC 3339 UTC, to the second.
pub fn show_time(ms: u64) -> String {
    match jiff::Timestamp::from_millisecond(ms as i64) {
        Ok(t) => format!("at {}", t.strftime("%Y-%m-%dT%H:%M:%SZ")),
        Err(_) => format!("at {ms} ms"),
    }
}
