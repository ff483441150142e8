//! Handing a device its new ops on the local network as they are published, so a revocation
//! or an owner change holds at once even when the device cannot reach any registry node.
//!
//! The whole verified chain goes to `POST /v1/ops` on each of the device's addresses (the device
//! verifies it as an extension of its own chain, skips what it holds, and answers its head). A
//! device too old for that endpoint (404) is nudged to re-check the nodes instead
//! (`POST /v1/refresh`), which answers the sequence it reached. Either way the owner learns
//! whether the door already knows, or only will at its next check of the nodes.

use std::time::Duration;

use latchkey_proto::chain::{Chain, OpList};
use latchkey_proto::claim::DeviceAddr;
use latchkey_proto::codec::Codec;
use latchkey_quorum::http::{read_capped, SMALL_ANSWER_CAP};
use serde::Deserialize;

use crate::profile::Profile;

/// Time for one address to take the ops (they are few; the device verifies and fsyncs).
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest body a device takes at `POST /v1/ops`.
const MAX_PUSH: usize = 256 * 1024;
/// How often `latchkeyd` checks the nodes unless configured otherwise (`--refresh-secs`).
pub const DEVICE_DEFAULT_CHECK_SECS: u64 = 60;

/// Whether the device itself holds an op just published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoorSync {
    /// The device answered on the local network with a chain at least this far.
    Knows { seq: u64 },
    /// The device was not reached or did not take the ops; it learns them from the nodes at
    /// its next check (every [`DEVICE_DEFAULT_CHECK_SECS`] s by default).
    WillLearn { reason: String },
}

impl DoorSync {
    pub fn knows(&self) -> bool {
        matches!(self, DoorSync::Knows { .. })
    }

    /// One line for a person.
    pub fn describe(&self) -> String {
        match self {
            DoorSync::Knows { .. } => "the door already knows".into(),
            DoorSync::WillLearn { reason } => format!(
                "the door will learn at its next check of the registry (within {DEVICE_DEFAULT_CHECK_SECS} s unless configured otherwise): {reason}"
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Head {
    seq: u64,
}

enum Push {
    Took(u64),
    /// The device has no `/v1/ops` (an older agent).
    NoEndpoint,
    Refused(String),
    Unreachable(String),
}

impl Profile {
    /// Gives `chain` (verified, ending with the ops just published from sequence `from`) to
    /// the device on the local network, falling back to a nudge for a device without
    /// `POST /v1/ops`.
    pub(crate) async fn tell_door(
        &self,
        addrs: &[DeviceAddr],
        chain: &Chain,
        from: u64,
    ) -> DoorSync {
        let target = chain.state().seq;
        if addrs.is_empty() {
            return DoorSync::WillLearn {
                reason: "no local address is known for it".into(),
            };
        }
        // The whole chain when it fits the device's limit (a device that missed earlier ops
        // catches up too), else only the ops just published.
        let mut body = OpList(chain.ops().to_vec()).to_bytes();
        if body.len() > MAX_PUSH {
            body = OpList(chain.ops_from(from.min(target))).to_bytes();
        }
        let mut reasons = Vec::new();
        let mut nudge = false;
        for addr in addrs {
            match self.push_ops(addr, &body).await {
                Push::Took(seq) if seq >= target => return DoorSync::Knows { seq },
                Push::Took(seq) => reasons.push(format!("{addr} holds only up to {seq}")),
                Push::NoEndpoint => nudge = true,
                Push::Refused(why) => reasons.push(format!("{addr} refused the ops: {why}")),
                Push::Unreachable(why) => reasons.push(format!("{addr}: {why}")),
            }
        }
        if nudge {
            if let Some(seq) = self.nudge_device(addrs).await {
                if seq >= target {
                    return DoorSync::Knows { seq };
                }
                reasons.push(format!(
                    "it re-checked the nodes but they showed it only up to {seq}"
                ));
            }
        }
        DoorSync::WillLearn {
            reason: if reasons.is_empty() {
                "it did not answer on the local network".into()
            } else {
                reasons.join("; ")
            },
        }
    }

    async fn push_ops(&self, addr: &DeviceAddr, body: &[u8]) -> Push {
        let request = async {
            let resp = self
                .http
                .post(format!("http://{addr}/v1/ops"))
                .header("content-type", "application/octet-stream")
                .body(body.to_vec())
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let status = resp.status();
            let text = read_capped(resp, SMALL_ANSWER_CAP)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, text))
        };
        match tokio::time::timeout(PUSH_TIMEOUT, request).await {
            Err(_) => Push::Unreachable("timed out".into()),
            Ok(Err(why)) => Push::Unreachable(why),
            Ok(Ok((status, _))) if status == reqwest::StatusCode::NOT_FOUND => Push::NoEndpoint,
            Ok(Ok((status, text))) if status.is_success() => {
                match serde_json::from_slice::<Head>(&text) {
                    Ok(head) => Push::Took(head.seq),
                    Err(e) => Push::Refused(format!("unreadable answer: {e}")),
                }
            }
            Ok(Ok((status, text))) => Push::Refused(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&text[..text.len().min(300)])
            )),
        }
    }
}
