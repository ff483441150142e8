//! Sending a command: signed, padded, sealed to the device's KEM keys from the verified chain;
//! direct over HTTP on the local network when the device answers there, else through the
//! nodes' mailboxes (posted to the device's mailbox, the answer long-polled from a fresh
//! random reply mailbox). One command is sealed once and the same envelope goes over every
//! route tried, so a lost answer never makes the action run twice. The answer is opened with the [`PendingReply`] and its signature
//! checked against the device's identity key from the verified chain.

use std::time::{Duration, Instant};

use futures::future::select_ok;
use latchkey_proto::command::{
    Command, Outcome, RejectCode, ReplyTo, Response, SignedResponse, NONCE_LEN,
};
use latchkey_proto::envelope::{seal_command, PendingReply};
use latchkey_proto::grant::{is_action_name, Grant};
use latchkey_proto::keys::{PublicKey, Signature, SigningKey};
use latchkey_quorum::http::{read_capped, SEALED_ANSWER_CAP};
use latchkey_quorum::CachedView;
use rand_core::{OsRng, RngCore};

use crate::error::{Error, Result};
use crate::mailbox;
use crate::profile::Profile;
use crate::store::DeviceRecord;

/// Time for one direct request (the actuator runs before the device answers).
const DIRECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time to wait for an answer through the mailboxes.
pub(crate) const RELAY_TIMEOUT: Duration = Duration::from_secs(30);
/// How old the stored check time may grow before an unchanged chain is written again.
const STORED_VIEW_REFRESH_MS: u64 = 5 * 60 * 1000;
/// A device's chain checked with the nodes longer ago than this is checked again alongside
/// the next command (concurrently: the command does not wait for it).
pub const REFRESH_ALONGSIDE_MS: u64 = 30_000;
/// A chain checked longer ago than this (or never this session and not recently stored) is
/// checked before the command is sealed: sealing needs the device's current KEM keys, and
/// choosing between owner and guest needs the current owners.
pub const REFRESH_BEFORE_MS: u64 = 10 * 60 * 1000;
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
    /// How long to wait for an answer through the mailboxes.
    relay_wait: Duration,
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
    /// The device's signature over `response`, kept so the answer can be stored and checked
    /// again later (the device card's last answer survives a restart).
    pub signature: Signature,
    pub route: Route,
    /// From sealing the (last) command to opening its answer.
    pub latency_ms: u64,
    /// The device asked for a challenge first (its clock is not trusted).
    pub challenged: bool,
    /// A route that may have delivered this same envelope but whose answer was lost (a
    /// connection closed after sending, a timeout, an answer that did not verify); `route`
    /// then carried the same envelope again.
    pub lost_reply: Option<Route>,
}

impl OpenReport {
    pub fn accepted(&self) -> bool {
        matches!(self.response.outcome, Outcome::Accepted)
    }

    /// The device refused our own envelope as a replay after an earlier route lost its answer:
    /// the first copy reached the device, so the action most likely ran once, but what it
    /// answered is lost. Never retried with a new nonce (that could run it twice); the device's
    /// audit log (`latchkey audit`) has the first copy's outcome.
    pub fn outcome_unknown(&self) -> bool {
        self.lost_reply.is_some()
            && matches!(
                self.response.outcome,
                Outcome::Rejected { code, .. } if code == RejectCode::Replayed as u16
            )
    }
}

/// What one envelope's trip over the routes brought back.
struct Sent {
    signed: SignedResponse,
    route: Route,
    latency_ms: u64,
    lost_reply: Option<Route>,
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
            Ok(view) => {
                self.checked_ms().insert(device.id, view.checked_at_ms);
                // A fork never stops the owner: the view is built on this profile's own verified
                // chain (the door's endorsement decides between branches; an unresolved fork
                // keeps ours), and the dispute is kept as an alarm for the CLI and the app.
                self.note_forks(&device, &view)?;
                let chain = crate::fork::own_branch(&device.chain, &view);
                // The store is a cache of what the nodes say; a durable write (an fsync) on every
                // open when nothing changed cost more than the command itself. It is rewritten
                // when the chain moved, and now and then to keep its check time honest.
                // Side ops (revocations, endorsements) change the chain without moving its head.
                let changed = chain.state().head != device.chain.state().head
                    || chain.ops().len() != device.chain.ops().len();
                let stale = view.checked_at_ms.saturating_sub(device.verified_at_ms)
                    > STORED_VIEW_REFRESH_MS;
                let record = DeviceRecord {
                    chain,
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

    /// Sends `action` with `args` to the device `query` names, as its owner (or as a guest
    /// holding an invitation to it), and keeps the device's signed answer as its last one.
    pub async fn open(&self, query: &str, action: &str, args: &[u8]) -> Result<OpenReport> {
        let report = self.open_unkept(query, action, args).await?;
        // The door already acted: failing to keep its answer for the card must not turn that
        // into an error.
        if let Err(e) = self.keep_last_answer(&report) {
            tracing::warn!(error = %e, "the device's answer could not be kept in the profile");
        }
        Ok(report)
    }

    /// How long ago `device`'s chain was last checked with the nodes, this session or as
    /// stored.
    pub(crate) fn view_age_ms(&self, device: &DeviceRecord) -> u64 {
        let session = self.checked_ms().get(&device.id).copied().unwrap_or(0);
        self.now_ms()
            .saturating_sub(session.max(device.verified_at_ms))
    }

    /// The ownership check need not sit in front of the command: the device judges authority
    /// itself against its own verified view, so a command sealed from a recent view is sent at
    /// once, and the check (raising the same fork alarms, storing what changed) runs beside it
    /// when due. Before sending only when the view is older than [`REFRESH_BEFORE_MS`]. If the
    /// device refuses for a reason a newer chain explains ("not an owner", a revoked or void
    /// grant), the chain is checked; after "not an owner", when it changed, the command is
    /// decided and sent once more (a refusal at authority ran nothing, so the retry cannot run
    /// the action twice).
    async fn open_unkept(&self, query: &str, action: &str, args: &[u8]) -> Result<OpenReport> {
        if !is_action_name(action) {
            return Err(Error::BadAction(action.to_owned()));
        }
        let device = self.find_device(query)?;
        let age = self.view_age_ms(&device);
        if age > REFRESH_BEFORE_MS {
            let device = self.refresh_device(device).await?;
            return self.open_as_held(device, action, args).await;
        }
        let (sent, refreshed) = if age > REFRESH_ALONGSIDE_MS {
            let (sent, refreshed) = tokio::join!(
                self.open_as_held(device.clone(), action, args),
                self.refresh_device(device.clone())
            );
            // The door may already have acted: a check that failed to store is said, and the
            // door's answer is still returned.
            let refreshed = refreshed
                .inspect_err(
                    |e| tracing::warn!(error = %e, "the ownership check beside the command failed"),
                )
                .ok();
            (sent, refreshed)
        } else {
            (self.open_as_held(device.clone(), action, args).await, None)
        };
        let refused_for = match &sent {
            Ok(report) => match &report.response.outcome {
                Outcome::Rejected { code, .. } => RejectCode::from_u16(*code),
                _ => None,
            },
            Err(_) => None,
        };
        // Refusals a newer chain explains: an owner removed, a grant revoked or voided by a
        // transfer. The door knows before this profile does; the chain is checked now so what
        // the profile shows (an invitation's status, the owners) agrees with the door's answer.
        let chain_explains = matches!(
            refused_for,
            Some(RejectCode::NotAuthorized | RejectCode::GrantRevoked | RejectCode::GrantInvalid)
        );
        if !chain_explains {
            return sent;
        }
        let refreshed = match refreshed {
            Some(r) => r,
            None => self.refresh_device(device.clone()).await?,
        };
        let moved = refreshed.chain.state().head != device.chain.state().head
            || refreshed.chain.ops().len() != device.chain.ops().len();
        if !moved || refused_for != Some(RejectCode::NotAuthorized) {
            // The nodes agree with what we sent from, or the grant really is gone: the door's
            // refusal stands.
            return sent;
        }
        tracing::info!(device = %device.id, "refused as not an owner; the chain changed, sending again");
        self.open_as_held(refreshed, action, args).await
    }

    /// Sends as whoever this profile is to `device` by the chain it holds: its owner, or a
    /// guest with an invitation.
    async fn open_as_held(
        &self,
        device: DeviceRecord,
        action: &str,
        args: &[u8],
    ) -> Result<OpenReport> {
        // An owner signs as itself; anyone else needs an invitation's key and grant chain.
        let (key, grants) = match self.identity() {
            Ok(me) if device.chain.state().is_owner(&me.public_key()) => (me, Vec::new()),
            identity => match self.guest_credentials(&device)? {
                Some(guest) => {
                    // A bind-on-first-use invitation not yet redeemed at this door (it was
                    // not reachable when the link was accepted) is redeemed first, with the
                    // link's key, so this and every later command signs with our own key.
                    if let Some(link_key) = &guest.link_key {
                        if let Some(mut refused) = self.redeem_at(&device, &guest, link_key).await?
                        {
                            // Shown as the refusal of what was asked: the words say why.
                            refused.action = action.to_owned();
                            return Ok(refused);
                        }
                    }
                    (guest.key, guest.grants)
                }
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
        let nodes = self.nodes()?;
        let as_owner = grants.is_empty();
        let report = self
            .send_as(device, &key, &grants, action, args, &nodes)
            .await?;
        // The device answered: the consent entries it could not be told before go now.
        if as_owner
            && action != latchkey_proto::consent::CONSENT_ACTION
            && self.consent_outbox_waiting(&report.device.id)
        {
            if let Err(e) = self.flush_device(&report.device, &key).await {
                tracing::warn!(error = %e, "could not tell the device its consent changes");
            }
        }
        Ok(report)
    }

    /// Sends `action` signed by `key` with `grants` (none for an owner), relaying through
    /// `nodes` when no LAN address answers; answers a challenge with a fresh command.
    pub(crate) async fn send_as(
        &self,
        device: DeviceRecord,
        key: &SigningKey,
        grants: &[Grant],
        action: &str,
        args: &[u8],
        nodes: &[String],
    ) -> Result<OpenReport> {
        self.send_within(device, key, grants, action, args, nodes, RELAY_TIMEOUT)
            .await
    }

    /// [`Self::send_as`], waiting at most `relay_wait` for an answer through the mailboxes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_within(
        &self,
        device: DeviceRecord,
        key: &SigningKey,
        grants: &[Grant],
        action: &str,
        args: &[u8],
        nodes: &[String],
        relay_wait: Duration,
    ) -> Result<OpenReport> {
        let mut challenge = None;
        for _ in 0..=MAX_CHALLENGES {
            let sent = self
                .send_once(
                    &Request {
                        device: &device,
                        key,
                        grants,
                        action,
                        args,
                        challenge,
                        relay_wait,
                    },
                    nodes,
                )
                .await?;
            // A challenge is answered with a new command by necessity: the challenge is part
            // of what is signed. The first one did not run (the device ran nothing without it).
            if let Outcome::ChallengeRequired { challenge: c } = sent.signed.response.outcome {
                challenge = Some(c);
                continue;
            }
            return Ok(OpenReport {
                device,
                action: action.to_owned(),
                response: sent.signed.response,
                signature: sent.signed.signature,
                route: sent.route,
                latency_ms: sent.latency_ms,
                challenged: challenge.is_some(),
                lost_reply: sent.lost_reply,
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

    /// Seals ONE command and offers that same envelope to every route in turn: each LAN
    /// address, then the nodes' mailboxes. A route that failed after the envelope may have
    /// left (a reply lost on the way back) is remembered: the device's strike register refuses
    /// any later copy as a replay, so the action runs at most once, and a `Replayed` answer to
    /// our own copy means the first one got through (see [`OpenReport::outcome_unknown`]).
    async fn send_once(&self, request: &Request<'_>, nodes: &[String]) -> Result<Sent> {
        let (device, key) = (request.device, request.key);
        let state = device.chain.state();
        let bad = |why: String| Error::BadAnswer {
            device: device.id.to_string(),
            why,
        };
        // The reply mailbox is named in the signed command whichever route carries it; the
        // device answers a direct request on its connection and ignores the mailbox then.
        let mut reply_box = [0u8; 32];
        OsRng.fill_bytes(&mut reply_box);
        let command = self.command(request, ReplyTo::Mailbox(reply_box));
        let signed = command.sign(key)?;
        let started = Instant::now();
        let (envelope, pending) = seal_command(&signed, &state.kem, &mut OsRng)?;
        let mut lost_reply = None;
        let mut unverified = None;
        // Direct, on the local network.
        for addr in &device.addrs {
            let url = format!("http://{addr}/v1/command");
            let sent = self
                .http
                .post(&url)
                .timeout(DIRECT_TIMEOUT)
                .header("content-type", "application/octet-stream")
                .body(envelope.clone())
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    // Refused before connecting: the envelope never left. Anything later (a
                    // timeout, a connection closed mid-answer) may have reached the device.
                    if !e.is_connect() {
                        lost_reply.get_or_insert(Route::Direct(addr.to_string()));
                    }
                    tracing::debug!(%addr, error = %e.without_url(), "direct send failed");
                    continue;
                }
            };
            let status = resp.status();
            let body = match read_capped(resp, SEALED_ANSWER_CAP).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "direct answer unreadable");
                    lost_reply.get_or_insert(Route::Direct(addr.to_string()));
                    unverified = Some(e.to_string());
                    continue;
                }
            };
            if !status.is_success() {
                // Refused before the sender was authenticated (it could not be opened): every
                // route would carry the same bytes to the same refusal.
                return Err(bad(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )));
            }
            match open_reply(&pending, &body, &state.identity) {
                Ok(signed) => {
                    return Ok(Sent {
                        signed,
                        route: Route::Direct(addr.to_string()),
                        latency_ms: started.elapsed().as_millis() as u64,
                        lost_reply,
                    })
                }
                // Something on the path answered in the device's place; the device may still
                // have run the command, and the next route carries the same envelope.
                Err(why) => {
                    tracing::warn!(%addr, %why, "a direct answer did not verify");
                    lost_reply.get_or_insert(Route::Direct(addr.to_string()));
                    unverified = Some(why);
                }
            }
        }
        // Through the nodes' mailboxes.
        if nodes.is_empty() {
            return Err(match unverified {
                Some(why) => bad(why),
                None => Error::NoNodes,
            });
        }
        let posted = mailbox::post_all(
            &self.http,
            nodes,
            &hex::encode(device.id.0),
            &envelope,
            RELAYED_COMMAND_TTL_SECS,
        )
        .await;
        let no_answer = || match &unverified {
            Some(why) => bad(why.clone()),
            None => Error::NoAnswer {
                device: device.id.to_string(),
                waited_ms: started.elapsed().as_millis() as u64,
            },
        };
        if posted == 0 {
            return Err(no_answer());
        }
        let reply_box = hex::encode(reply_box);
        let polls = nodes.iter().map(|node| {
            let pending = &pending;
            let reply_box = &reply_box;
            Box::pin(async move {
                let response = self
                    .poll_reply(
                        node,
                        reply_box,
                        pending,
                        &state.identity,
                        started,
                        request.relay_wait,
                    )
                    .await
                    .ok_or(())?;
                Ok::<_, ()>((response, node.clone()))
            })
        });
        match select_ok(polls).await.map(|(won, _rest)| won) {
            Ok((signed, node)) => Ok(Sent {
                signed,
                route: Route::Relay(node),
                latency_ms: started.elapsed().as_millis() as u64,
                lost_reply,
            }),
            Err(()) => Err(no_answer()),
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
        wait: Duration,
    ) -> Option<SignedResponse> {
        let mut after = 0;
        loop {
            let left = wait.checked_sub(started.elapsed())?;
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
) -> std::result::Result<SignedResponse, String> {
    pending.open(sealed, identity).map_err(|e| e.to_string())
}
