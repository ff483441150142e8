//! Sending a command: signed, padded, sealed to the device's KEM keys from the verified chain;
//! direct over HTTP on the local network when the device answers there, else through the
//! nodes' mailboxes (posted to the device's mailbox, the answer long-polled from a fresh
//! random reply mailbox). The answer is opened with the [`PendingReply`] and its signature
//! checked against the device's identity key from the verified chain.

use std::time::{Duration, Instant};

use futures::future::select_ok;
use latchkey_proto::command::{Command, Outcome, ReplyTo, Response, NONCE_LEN};
use latchkey_proto::envelope::{seal_command, PendingReply};
use latchkey_proto::grant::{is_action_name, Grant};
use latchkey_proto::keys::{PublicKey, SigningKey};
use latchkey_quorum::CachedView;
use rand_core::{OsRng, RngCore};

use crate::error::{Error, Result};
use crate::mailbox;
use crate::profile::Profile;
use crate::store::DeviceRecord;

/// Time for one direct request (the actuator runs before the device answers).
const DIRECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time to wait for an answer through the mailboxes.
const RELAY_TIMEOUT: Duration = Duration::from_secs(30);
/// How old the stored check time may grow before an unchanged chain is written again.
const STORED_VIEW_REFRESH_MS: u64 = 5 * 60 * 1000;
/// How long a relayed command waits in the device's mailbox (its timestamp expires sooner).
const RELAYED_COMMAND_TTL_SECS: u32 = 120;
/// Challenge round trips before giving up.
const MAX_CHALLENGES: usize = 3;

/// One command to send: to whom, signed by which key with which grants (none for an owner).
struct Request<'a> {
    device: &'a DeviceRecord,
    key: &'a SigningKey,
    grants: &'a [Grant],
    action: &'a str,
    args: &'a [u8],
    challenge: Option<[u8; NONCE_LEN]>,
}

/// How the answer came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Direct HTTP to this address.
    Direct(String),
    /// Through this node's mailboxes.
    Relay(String),
}

/// A device's verified, signed answer.
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub device: DeviceRecord,
    pub action: String,
    pub response: Response,
    pub route: Route,
    /// From sealing the (last) command to opening its answer.
    pub latency_ms: u64,
    /// The device asked for a challenge first (its clock is not trusted).
    pub challenged: bool,
}

impl OpenReport {
    pub fn accepted(&self) -> bool {
        matches!(self.response.outcome, Outcome::Accepted)
    }
}

impl Profile {
    /// Refreshes a device's chain from the nodes (falling back to the cached one) and stores it.
    pub async fn refresh_device(&self, device: DeviceRecord) -> Result<DeviceRecord> {
        let Ok(quorum) = self.quorum() else {
            return Ok(device);
        };
        let cached = CachedView {
            chain: device.chain.clone(),
            verified_at_ms: device.verified_at_ms,
        };
        match quorum
            .check(&device.id, Some(&cached), self.now_ms(), &mut OsRng)
            .await
        {
            Ok(view) if !view.forks.is_empty() => Err(Error::Fork {
                device: device.id.to_string(),
            }),
            Ok(view) => {
                // The store is a cache of what the nodes say; a durable write (an fsync) on every
                // open when nothing changed cost more than the command itself. It is rewritten
                // when the chain moved, and now and then to keep its check time honest.
                let changed = view.chain.state().head != device.chain.state().head;
                let stale = view.checked_at_ms.saturating_sub(device.verified_at_ms)
                    > STORED_VIEW_REFRESH_MS;
                let record = DeviceRecord {
                    chain: view.chain,
                    verified_at_ms: view.checked_at_ms,
                    ..device
                };
                if changed || stale {
                    self.store.put_device(&record)?;
                }
                Ok(record)
            }
            Err(e) => {
                tracing::warn!(error = %e, "nodes unavailable; using the cached ownership chain");
                Ok(device)
            }
        }
    }

    /// Sends `action` with `args` to the device `query` names, as its owner.
    pub async fn open(&self, query: &str, action: &str, args: &[u8]) -> Result<OpenReport> {
        if !is_action_name(action) {
            return Err(Error::BadAction(action.to_owned()));
        }
        let device = self.find_device(query)?;
        let device = self.refresh_device(device).await?;
        // An owner signs as itself; anyone else needs an invitation's key and grant chain.
        let (key, grants) = match self.identity() {
            Ok(me) if device.chain.state().is_owner(&me.public_key()) => (me, Vec::new()),
            identity => match self.guest_credentials(&device)? {
                Some((grants, key)) => (key, grants),
                None => {
                    return Err(match identity {
                        Ok(_) => Error::NotOwner {
                            device: device.id.to_string(),
                        },
                        Err(Error::NoSeed) => Error::NoInvitation {
                            device: device.id.to_string(),
                        },
                        Err(other) => other,
                    })
                }
            },
        };
        let mut challenge = None;
        for _ in 0..=MAX_CHALLENGES {
            let (response, route, latency_ms) = self
                .send_once(&Request {
                    device: &device,
                    key: &key,
                    grants: &grants,
                    action,
                    args,
                    challenge,
                })
                .await?;
            if let Outcome::ChallengeRequired { challenge: c } = response.outcome {
                challenge = Some(c);
                continue;
            }
            return Ok(OpenReport {
                device,
                action: action.to_owned(),
                response,
                route,
                latency_ms,
                challenged: challenge.is_some(),
            });
        }
        Err(Error::ChallengeLoop {
            device: device.id.to_string(),
        })
    }

    fn command(&self, request: &Request<'_>, reply_to: ReplyTo) -> Command {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        Command {
            device: request.device.id,
            sender: request.key.public_key(),
            action: request.action.to_owned(),
            args: request.args.to_vec(),
            timestamp_ms: self.now_ms(),
            nonce,
            challenge: request.challenge,
            grants: request.grants.to_vec(),
            reply_to,
        }
    }

    async fn send_once(&self, request: &Request<'_>) -> Result<(Response, Route, u64)> {
        let (device, key) = (request.device, request.key);
        let state = device.chain.state();
        let bad = |why: String| Error::BadAnswer {
            device: device.id.to_string(),
            why,
        };
        // Direct, on the local network.
        for addr in &device.addrs {
            let command = self.command(request, ReplyTo::Direct);
            let signed = command.sign(key)?;
            let started = Instant::now();
            let (envelope, pending) = seal_command(&signed, &state.kem, &mut OsRng)?;
            let url = format!("http://{addr}/v1/command");
            let sent = self
                .http
                .post(&url)
                .timeout(DIRECT_TIMEOUT)
                .header("content-type", "application/octet-stream")
                .body(envelope)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%addr, error = %e.without_url(), "direct send failed");
                    continue;
                }
            };
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| bad(e.to_string()))?;
            if !status.is_success() {
                return Err(bad(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )));
            }
            let response = open_reply(&pending, &body, &state.identity).map_err(bad)?;
            return Ok((
                response,
                Route::Direct(addr.to_string()),
                started.elapsed().as_millis() as u64,
            ));
        }
        // Through the nodes' mailboxes.
        let nodes = self.nodes()?;
        if nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        let mut mailbox = [0u8; 32];
        OsRng.fill_bytes(&mut mailbox);
        let command = self.command(request, ReplyTo::Mailbox(mailbox));
        let signed = command.sign(key)?;
        let started = Instant::now();
        let (envelope, pending) = seal_command(&signed, &state.kem, &mut OsRng)?;
        let posted = mailbox::post_all(
            &self.http,
            &nodes,
            &hex::encode(device.id.0),
            &envelope,
            RELAYED_COMMAND_TTL_SECS,
        )
        .await;
        if posted == 0 {
            return Err(Error::NoAnswer {
                device: device.id.to_string(),
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        let reply_box = hex::encode(mailbox);
        let polls = nodes.iter().map(|node| {
            let pending = &pending;
            let reply_box = &reply_box;
            Box::pin(async move {
                let response = self
                    .poll_reply(node, reply_box, pending, &state.identity, started)
                    .await
                    .ok_or(())?;
                Ok::<_, ()>((response, node.clone()))
            })
        });
        let first = select_ok(polls).await.map(|(won, _rest)| won);
        match first {
            Ok((response, node)) => Ok((
                response,
                Route::Relay(node),
                started.elapsed().as_millis() as u64,
            )),
            Err(()) => Err(Error::NoAnswer {
                device: device.id.to_string(),
                waited_ms: started.elapsed().as_millis() as u64,
            }),
        }
    }

    /// Long-polls one node's reply mailbox until an answer opens or the relay timeout passes.
    async fn poll_reply(
        &self,
        node: &str,
        mailbox: &str,
        pending: &PendingReply,
        identity: &PublicKey,
        started: Instant,
    ) -> Option<Response> {
        let mut after = 0;
        loop {
            let left = RELAY_TIMEOUT.checked_sub(started.elapsed())?;
            let wait = left.as_secs().clamp(1, 25);
            let page = mailbox::read(&self.http, node, mailbox, after, wait).await?;
            for message in &page.messages {
                match open_reply(pending, message, identity) {
                    Ok(r) => return Some(r),
                    Err(why) => tracing::warn!(node, %why, "a reply did not open"),
                }
            }
            after = page.next;
        }
    }
}

fn open_reply(
    pending: &PendingReply,
    sealed: &[u8],
    identity: &PublicKey,
) -> std::result::Result<Response, String> {
    pending
        .open(sealed, identity)
        .map(|signed| signed.response)
        .map_err(|e| e.to_string())
}
