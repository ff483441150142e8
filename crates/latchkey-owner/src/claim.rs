//! Taking ownership of a device from its claim QR. The flow's states, in order:
//! scanned (QR parsed) → keys fetched and checked against the QR → claim op signed by the setup
//! key and the owner → published to the nodes → visible on a quorum → owned.

use std::path::Path;
use std::time::{Duration, Instant};

use latchkey_proto::chain::{Chain, OpBody, OpList, OwnerSet};
use latchkey_proto::claim::{ClaimPayload, DeviceAddr};
use latchkey_proto::codec::Codec;
use latchkey_proto::keys::DeviceId;
use latchkey_quorum::http::{read_capped, CHAIN_PAGE_CAP, SMALL_ANSWER_CAP};
use latchkey_quorum::{CachedView, Freshness, NodeOutcome};
use rand_core::OsRng;

use crate::error::{Error, Result};
use crate::profile::Profile;
use crate::store::DeviceRecord;

/// How long to wait for the claim to show on a quorum of nodes.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);
/// How long to wait (best effort) for the device itself to report the claim.
const DEVICE_CONFIRMS_WITHIN: Duration = Duration::from_secs(15);

/// Where the claim code comes from.
#[derive(Debug, Clone, Copy)]
pub enum ClaimSource<'a> {
    /// The code's text, `LATCHKEY:C1:…`.
    Text(&'a str),
    /// A PNG or JPEG image of the QR code.
    Image(&'a Path),
}

/// Where a claim is, as it goes (see [`Profile::claim_with_progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStage {
    /// Fetching the device's keys from it and the nodes, checking them against the code.
    CheckingKeys,
    /// Signing the claim and publishing it to the nodes.
    Publishing,
    /// Stored on this many nodes; waiting until a quorum check shows it.
    WaitingForQuorum { stored_on: usize },
    /// Owned; asking the device to learn it now.
    TellingDevice,
}

#[derive(Debug, Clone)]
pub struct ClaimReport {
    pub device: DeviceId,
    pub name: String,
    /// The claim op's sequence number.
    pub seq: u64,
    /// Nodes that stored genesis + claim.
    pub nodes_stored: usize,
    /// From publishing until a quorum check saw the claim.
    pub visible_after_ms: u64,
    /// The device itself reported the claim within a few seconds.
    pub device_confirmed: bool,
    /// The profile already owned the device; nothing was published.
    pub already_owned: bool,
}

/// Fetches the device's verified chain from the device's own `GET /v1/chain`.
pub(crate) async fn chain_from_device(
    http: &reqwest::Client,
    addrs: &[DeviceAddr],
    device: &DeviceId,
) -> Option<Chain> {
    for addr in addrs {
        let url = format!("http://{addr}/v1/chain");
        // The time limit covers the body too, so a device trickling bytes cannot hold us.
        let fetched = tokio::time::timeout(Duration::from_secs(3), async {
            let resp = http.get(&url).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            match read_capped(resp, CHAIN_PAGE_CAP).await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "the device's chain could not be read");
                    None
                }
            }
        })
        .await;
        let Ok(Some(bytes)) = fetched else {
            continue;
        };
        match OpList::from_bytes(&bytes).and_then(|l| Chain::verify(l.0)) {
            Ok(chain) if chain.device() == *device => return Some(chain),
            Ok(_) => tracing::warn!(%addr, "the device at this address has another id"),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "the device served a chain that does not verify")
            }
        }
    }
    None
}

impl Profile {
    /// Claims the device whose QR code is given, for this profile's identity.
    pub async fn claim(&self, source: ClaimSource<'_>, name: Option<&str>) -> Result<ClaimReport> {
        self.claim_with_progress(source, name, &|_| {}).await
    }

    /// [`Self::claim`], telling `progress` as each stage begins, so a UI can show where a slow
    /// network keeps it waiting.
    pub async fn claim_with_progress(
        &self,
        source: ClaimSource<'_>,
        name: Option<&str>,
        progress: &(dyn Fn(ClaimStage) + Send + Sync),
    ) -> Result<ClaimReport> {
        let text = match source {
            ClaimSource::Text(t) => zeroize::Zeroizing::new(t.to_owned()),
            ClaimSource::Image(path) => crate::qr::decode_image(path)?,
        };
        let payload = ClaimPayload::parse(&text).map_err(Error::ClaimCode)?;
        let device = payload.device_id();
        let me = self.identity()?;
        let quorum = self.quorum()?;

        // Keys: from the device itself, merged with what the nodes hold.
        progress(ClaimStage::CheckingKeys);
        let mut chain = chain_from_device(&self.http, &payload.addrs, &device).await;
        // The door's own chain is the base the nodes' answers are merged into: a second claim
        // someone made with a leaked setup code cannot displace the one the door accepted.
        let base = chain.clone().map(|chain| CachedView {
            chain,
            verified_at_ms: self.now_ms(),
        });
        match quorum
            .check(&device, base.as_ref(), self.now_ms(), &mut OsRng)
            .await
        {
            Ok(view) => {
                if base.is_none() && !view.forks.is_empty() {
                    return Err(Error::Fork {
                        device: device.to_string(),
                    });
                }
                chain = Some(view.chain);
            }
            Err(latchkey_quorum::Error::UnknownDevice { .. }) => {}
            Err(e) if chain.is_some() => {
                tracing::warn!(error = %e, "nodes unavailable; using the device's own chain")
            }
            Err(e) => return Err(e.into()),
        }
        let mut chain = chain.ok_or_else(|| Error::DeviceUnreachable {
            device: device.to_string(),
        })?;
        if chain.device() != device || payload.check_kem(&chain.state().kem).is_err() {
            return Err(Error::KeysMismatch {
                device: device.to_string(),
            });
        }
        let record_name = name
            .map(str::to_owned)
            .unwrap_or_else(|| chain.state().name.clone());
        let state = chain.state().clone();
        if state.is_owned() {
            if state.is_owner(&me.public_key()) {
                self.save_device(&device, &record_name, &payload.addrs, &chain)?;
                return Ok(ClaimReport {
                    device,
                    name: record_name,
                    seq: state.seq,
                    nodes_stored: 0,
                    visible_after_ms: 0,
                    device_confirmed: false,
                    already_owned: true,
                });
            }
            return Err(Error::OwnedByOther {
                device: device.to_string(),
            });
        }
        let setup = payload.setup_key();
        if state.setup != Some(setup.public_key()) {
            return Err(Error::StaleClaimCode {
                device: device.to_string(),
            });
        }

        // Sign: the setup key proves presence, the owner key proves possession.
        let mut op = chain.propose(
            self.now_ms(),
            OpBody::Claim(OwnerSet {
                owners: vec![me.public_key()],
                threshold: 1,
            }),
        );
        op.sign(&setup);
        op.sign(&me);
        let claim_id = op.id();
        chain.append(op)?;
        let seq = chain.state().seq;

        // Publish genesis + claim, then wait until a quorum check sees it.
        progress(ClaimStage::Publishing);
        let started = Instant::now();
        let published = quorum.publish_chain(&chain, 0, &mut OsRng).await?;
        progress(ClaimStage::WaitingForQuorum {
            stored_on: published.acked.len(),
        });
        let visible_after_ms = loop {
            let waited = started.elapsed();
            if waited > VISIBLE_WITHIN {
                self.save_device(&device, &record_name, &payload.addrs, &chain)?;
                return Err(Error::ClaimNotVisible {
                    waited_ms: waited.as_millis() as u64,
                });
            }
            // Asked from our own chain: a node serving a rival claim is a fork, settled by the
            // door's endorsement, and never a reason to give up on ours.
            let ours = CachedView {
                chain: chain.clone(),
                verified_at_ms: self.now_ms(),
            };
            if let Ok(view) = quorum
                .check(&device, Some(&ours), self.now_ms(), &mut OsRng)
                .await
            {
                let holds_ours = view.chain.ops().iter().any(|o| o.id() == claim_id);
                if !holds_ours || !view.chain.state().is_owner(&me.public_key()) {
                    // The door endorsed another claim.
                    return Err(Error::OwnedByOther {
                        device: device.to_string(),
                    });
                }
                let fresh = view.nodes_with(|o| matches!(o, NodeOutcome::Fresh));
                if fresh > 0 && matches!(view.freshness, Freshness::Quorum { .. }) {
                    chain = view.chain;
                    break started.elapsed().as_millis() as u64;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.save_device(&device, &record_name, &payload.addrs, &chain)?;

        // Best effort: the device learns it from the nodes, at once when it can be nudged on the
        // local network, else on its own schedule.
        progress(ClaimStage::TellingDevice);
        self.nudge_device(&payload.addrs).await;
        let deadline = Instant::now() + DEVICE_CONFIRMS_WITHIN;
        let mut device_confirmed = payload.addrs.is_empty();
        while !device_confirmed && Instant::now() < deadline {
            match chain_from_device(&self.http, &payload.addrs, &device).await {
                Some(c) if c.state().seq >= seq => device_confirmed = true,
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                None => break,
            }
        }
        Ok(ClaimReport {
            device,
            name: record_name,
            seq,
            nodes_stored: published.acked.len(),
            visible_after_ms,
            device_confirmed: device_confirmed && !payload.addrs.is_empty(),
            already_owned: false,
        })
    }

    /// Asks the device on the local network to re-check the nodes now (`POST /v1/refresh`), so
    /// a claim, a revocation or an owner change takes effect at once instead of at its next
    /// ownership check. Best effort: the chain's sequence the first address to answer reached.
    pub(crate) async fn nudge_device(&self, addrs: &[DeviceAddr]) -> Option<u64> {
        #[derive(serde::Deserialize)]
        struct Seq {
            seq: u64,
        }
        for addr in addrs {
            let answered = tokio::time::timeout(Duration::from_secs(3), async {
                let resp = self
                    .http
                    .post(format!("http://{addr}/v1/refresh"))
                    .send()
                    .await
                    .ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                let body = read_capped(resp, SMALL_ANSWER_CAP).await.ok()?;
                serde_json::from_slice::<Seq>(&body).ok().map(|s| s.seq)
            })
            .await;
            if let Ok(Some(seq)) = answered {
                return Some(seq);
            }
        }
        None
    }

    pub(crate) fn save_device(
        &self,
        device: &DeviceId,
        name: &str,
        addrs: &[DeviceAddr],
        chain: &Chain,
    ) -> Result<()> {
        self.store.put_device(&DeviceRecord {
            id: *device,
            name: name.to_owned(),
            addrs: addrs.to_vec(),
            chain: chain.clone(),
            verified_at_ms: self.now_ms(),
        })
    }
}
