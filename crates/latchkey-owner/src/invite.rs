//! Guests: an owner issues a time-limited grant as an invitation link; a guest profile accepts
//! it (the guest key goes to the OS keychain, the grant chain to the store) and opens with it;
//! an owner lists the grants issued and revokes one by publishing a revoke-grant op, which the
//! device learns from the nodes even when the owner cannot reach it.
//!
//! Grants issued now bind on first use (extension 0x83) and travel as a short link whose
//! invitation is sealed on the nodes (see [`crate::link`]); accepting one makes the guest's own
//! key, redeems it at every door, and opens with that key from then on.

use std::collections::HashMap;

use latchkey_proto::audit::SignedEntry;
use latchkey_proto::chain::{Chain, OpBody};
use latchkey_proto::command::Outcome;
use latchkey_proto::grant::{
    self, is_action_name, AllowedArguments, Extension, Grant, GrantBody, GrantId, GrantScope,
    EXT_BIND_ON_FIRST_USE, MAX_ALLOWED_ARGUMENTS, MAX_ALLOWED_ARGUMENT_LEN,
};
use latchkey_proto::invite::{
    Invitation, InviteDoor, MAX_INVITE_ADDRS, MAX_INVITE_DOORS, MAX_INVITE_LABEL,
};
use latchkey_proto::keys::{DeviceId, SigningKey};
use latchkey_proto::schedule::WeeklySchedule;
use latchkey_proto::shortlink::MAX_SHORT_LINK_NODES;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::door::DoorSync;
use crate::error::{Error, Result};
use crate::link::{self, Redemption};
use crate::open::OpenReport;
use crate::profile::Profile;
use crate::store::{DeviceRecord, HeldDoorRow, InvitationRow, IssuedLinkRow, IssuedRow};

/// What an owner asks for when inviting a guest.
#[derive(Debug, Clone, Default)]
pub struct InviteRequest {
    pub guest_name: String,
    pub from_ms: u64,
    pub until_ms: u64,
    /// Actions the guest may send (e.g. `unlock`); at least one.
    pub actions: Vec<String>,
    /// How many commands the grant allows in all (`None`: no limit).
    pub use_limit: Option<u32>,
    /// The exact argument strings the guest may send (at most 8, each 1-256 bytes); empty: the
    /// guest may send its actions only without arguments.
    pub arguments: Vec<Vec<u8>>,
    /// Weekly windows the guest may open in (grant extension 0x81), checked by the device in
    /// the schedule's own time zone; `None`: any time between `from_ms` and `until_ms`.
    pub schedule: Option<WeeklySchedule>,
    /// Hand out the old self-contained `latchkey://invite/…` link (500 characters and more)
    /// instead of a short one whose invitation is sealed on the nodes. Either binds to the
    /// first phone that redeems it.
    pub long_link: bool,
    /// Let the guest issue narrower invitations from this one (delegation depth 1): a host's
    /// property manager inviting a cleaner.
    pub may_delegate: bool,
    /// Issue below an invitation this profile holds as a guest (its grant id or an 8+ hex
    /// prefix) instead of as an owner: the new grant is signed with the key that invitation is
    /// bound to (this profile's own, see `accept`) and may only narrow it. Then empty
    /// `actions` and `arguments` and a `None` `use_limit` mean the held invitation's own.
    pub from_grant: Option<String>,
}

/// An invitation just issued.
#[derive(Debug, Clone)]
pub struct IssuedInvitation {
    /// The link: `LATCHKEY://I/…` (short; the invitation is sealed on the nodes) or, asked for,
    /// `latchkey://invite/…`. Whoever redeems it first binds it to their phone, so send it
    /// privately; once redeemed it is useless to anyone else.
    pub link: Zeroizing<String>,
    pub grant: IssuedGrant,
    /// The QR code version that [`invitation_qr_png`] draws for the link (level M for a short
    /// link: at most 10, scannable from a phone screen at arm's length).
    pub qr_version: u8,
    /// How many nodes stored the sealed invitation (0 for a long link).
    pub nodes_stored: usize,
}

/// A grant revoked and issued again with the same terms to a fresh link.
#[derive(Debug, Clone)]
pub struct ReissueReport {
    pub revoked: RevokeReport,
    pub issued: IssuedInvitation,
}

/// Where a grant stands, as of the device's last verified chain and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    Upcoming,
    Active,
    Expired,
    Revoked,
    /// The device was transferred or reset since; grants of the old ownership no longer apply.
    Void,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Upcoming => "upcoming",
            GrantStatus::Active => "active",
            GrantStatus::Expired => "expired",
            GrantStatus::Revoked => "revoked",
            GrantStatus::Void => "void",
        }
    }
}

/// A grant this profile issued, with its status.
#[derive(Debug, Clone)]
pub struct IssuedGrant {
    pub id: GrantId,
    /// The first door it covers (see `doors` for all).
    pub device: DeviceId,
    pub device_name: String,
    /// Every door the grant covers that this profile knows, with its name.
    pub doors: Vec<(DeviceId, String)>,
    pub guest_name: String,
    pub grant: Grant,
    pub created_ms: u64,
    pub status: GrantStatus,
    /// Whether a phone redeemed the link, as the doors' audit logs read so far show it
    /// ([`Profile::check_redemptions`] reads them).
    pub redemption: Redemption,
    /// The grant a reissue replaced this one with.
    pub reissued_as: Option<GrantId>,
    /// For a grant delegated from an invitation this profile holds: that invitation's id.
    pub parent: Option<GrantId>,
}

/// An invitation this profile holds as a guest.
#[derive(Debug, Clone)]
pub struct HeldInvitation {
    pub id: GrantId,
    pub device: DeviceId,
    pub device_name: String,
    pub guest_name: String,
    pub actions: Vec<String>,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    /// The exact arguments the guest may send besides none: what every grant of the chain pins.
    pub arguments: Vec<Vec<u8>>,
    /// The weekly schedules of the chain (the leaf's and any it was delegated under): the
    /// device lets the guest in only when every one of them allows the time.
    pub schedules: Vec<WeeklySchedule>,
    pub status: GrantStatus,
    /// The profile held this invitation already; nothing changed.
    pub already_held: bool,
    /// The invitation binds to this profile's own key (extension 0x83).
    pub binds: bool,
    /// Its doors and whether this profile's key is bound at each yet (a door not reached when
    /// the link was accepted is redeemed at the first open).
    pub doors: Vec<HeldDoor>,
    /// Whether its holder may issue narrower invitations from it (`--from-grant`).
    pub may_delegate: bool,
}

/// One door of a held invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldDoor {
    pub device: DeviceId,
    pub name: String,
    pub redeemed: bool,
}

/// What a guest opens with at one door.
pub(crate) struct GuestCredentials {
    pub id: GrantId,
    pub grants: Vec<Grant>,
    /// This profile's own key (bound by redemption), or the link's key for an invitation
    /// that does not bind.
    pub key: SigningKey,
    /// The link's one-time key while this door still needs the redemption.
    pub link_key: Option<SigningKey>,
}

/// A revocation published.
#[derive(Debug, Clone)]
pub struct RevokeReport {
    pub grant: GrantId,
    pub device: DeviceId,
    /// The spine op the revocation hangs off (a revocation is a side op: it never moves the
    /// chain's head, so a door that holds this head and took the ops knows it).
    pub seq: u64,
    pub nodes_stored: usize,
    /// Whether the device itself took the revocation on the local network (it then refuses
    /// the guest at once, even cut off from every node), or learns it at its next check.
    pub door: DoorSync,
    /// Why the nodes did not store it, when the device took it anyway (all nodes down): the
    /// revocation holds at the door; run `revoke` again to publish it once nodes are back.
    pub nodes_error: Option<String>,
    /// It was revoked before; nothing was published.
    pub already_revoked: bool,
    /// The same revocation at the grant's other doors.
    pub more: Vec<RevokeReport>,
}

/// The keychain account of a held invitation's guest key (not a secret): the profile's own
/// key for an invitation that binds, else the link's key.
fn guest_key_account(profile: &str, grant: &GrantId) -> String {
    format!("{profile}/guest/{grant}")
}

/// The keychain account of a held invitation's one-time link key, kept only while some door
/// still needs the redemption.
fn link_key_account(profile: &str, grant: &GrantId) -> String {
    format!("{profile}/link/{grant}")
}

pub(crate) fn status_of(grants: &[Grant], chain: &Chain, now_ms: u64) -> GrantStatus {
    let state = chain.state();
    if grants.iter().any(|g| state.revoked.contains(&g.id())) {
        return GrantStatus::Revoked;
    }
    let in_epoch = grants.iter().all(|g| {
        g.body
            .scope
            .iter()
            .any(|s| s.device == state.device && s.epoch == state.epoch)
    });
    if !in_epoch {
        return GrantStatus::Void;
    }
    let not_before = grants
        .iter()
        .map(|g| g.body.not_before_ms)
        .max()
        .unwrap_or(0);
    let not_after = grants
        .iter()
        .map(|g| g.body.not_after_ms)
        .min()
        .unwrap_or(0);
    if now_ms < not_before {
        GrantStatus::Upcoming
    } else if now_ms > not_after {
        GrantStatus::Expired
    } else {
        GrantStatus::Active
    }
}

impl Profile {
    /// Issues a grant for one door to a fresh link key and returns it as an invitation link.
    pub async fn invite(&self, query: &str, request: &InviteRequest) -> Result<IssuedInvitation> {
        self.invite_doors(&[query], request).await
    }

    /// Issues ONE grant covering every door `queries` name (1 to 8, each owned by this
    /// profile) and hands it out as one link: short by default (the invitation sealed on the
    /// profile's nodes; at least one must store it, else nothing is recorded), or the long
    /// self-contained link when asked. The grant binds to the first phone that redeems it.
    pub async fn invite_doors(
        &self,
        queries: &[&str],
        request: &InviteRequest,
    ) -> Result<IssuedInvitation> {
        if let Some(parent) = &request.from_grant {
            return self.invite_delegated(queries, parent, request).await;
        }
        let guest_name = request.guest_name.trim();
        if guest_name.is_empty() || guest_name.len() > MAX_INVITE_LABEL {
            return Err(Error::BadInvite(
                "give the guest a name of 1 to 64 bytes".into(),
            ));
        }
        if request.actions.is_empty() {
            return Err(Error::BadInvite("give at least one action".into()));
        }
        for action in &request.actions {
            if !is_action_name(action) {
                return Err(Error::BadAction(action.clone()));
            }
        }
        if request.until_ms <= request.from_ms {
            return Err(Error::BadInvite(
                "the invitation must end after it starts".into(),
            ));
        }
        let pinned = pinned_arguments(&request.arguments)?;
        if request.until_ms <= self.now_ms() {
            return Err(Error::BadInvite(
                "the invitation would already be over".into(),
            ));
        }
        let doors = self.owned_doors(queries).await?;
        let mut extensions: Vec<Extension> =
            pinned.iter().map(AllowedArguments::to_extension).collect();
        extensions.extend(request.schedule.iter().map(WeeklySchedule::to_extension));
        extensions.push(bind_on_first_use());
        let template = GrantBody {
            // Issuer, subject, scope and salt are set when it is issued.
            issuer: self.identity()?.public_key(),
            subject: self.identity()?.public_key(),
            scope: Vec::new(),
            actions: request.actions.clone(),
            not_before_ms: request.from_ms,
            not_after_ms: request.until_ms,
            use_limit: request.use_limit,
            delegation_depth: u8::from(request.may_delegate),
            extensions,
            salt: [0; 16],
        };
        self.hand_out(&doors, template, guest_name, request.long_link, None)
            .await
    }

    /// The devices `queries` name, refreshed from the nodes, each owned by this profile.
    async fn owned_doors(&self, queries: &[&str]) -> Result<Vec<DeviceRecord>> {
        if queries.is_empty() || queries.len() > MAX_INVITE_DOORS {
            return Err(Error::BadInvite(format!(
                "name 1 to {MAX_INVITE_DOORS} doors"
            )));
        }
        let me = self.identity()?.public_key();
        let mut doors: Vec<DeviceRecord> = Vec::new();
        for query in queries {
            let device = self.find_device(query)?;
            if doors.iter().any(|d| d.id == device.id) {
                continue;
            }
            let device = self.refresh_device(device).await?;
            if !device.chain.state().is_owner(&me) {
                return Err(Error::NotOwner {
                    device: device.id.to_string(),
                });
            }
            doors.push(device);
        }
        Ok(doors)
    }

    /// Signs `template` (its terms) for `doors` to a fresh link key, builds the invitation and
    /// hands it out as a link; records the grant only once the link exists.
    async fn hand_out(
        &self,
        doors: &[DeviceRecord],
        template: GrantBody,
        guest_name: &str,
        long_link: bool,
        below: Option<&Below>,
    ) -> Result<IssuedInvitation> {
        let owner;
        let me = match below {
            Some(b) => &b.key,
            None => {
                owner = self.identity()?;
                &owner
            }
        };
        let link_key = SigningKey::generate(&mut OsRng);
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let grant = GrantBody {
            issuer: me.public_key(),
            subject: link_key.public_key(),
            scope: doors
                .iter()
                .map(|d| GrantScope {
                    device: d.id,
                    epoch: d.chain.state().epoch,
                })
                .collect(),
            salt,
            ..template
        }
        .sign(me)?;
        let mut chain: Vec<Grant> = below.map(|b| b.chain.clone()).unwrap_or_default();
        chain.push(grant.clone());
        if below.is_some() {
            // The device's own rule, so nothing it would refuse leaves this profile.
            for d in doors {
                grant::verify_chain_structure(&chain, d.chain.state())
                    .map_err(|e| Error::BadDelegation(e.to_string()))?;
            }
        }
        let mut nodes = self.nodes()?;
        nodes.truncate(latchkey_proto::invite::MAX_INVITE_NODES);
        let invitation = Invitation {
            guest_secret: link_key.to_bytes(),
            grants: chain.clone(),
            guest_name: guest_name.to_owned(),
            doors: doors
                .iter()
                .map(|d| InviteDoor {
                    device: d.id,
                    name: truncate(&d.name, MAX_INVITE_LABEL),
                    addrs: d.addrs.iter().take(MAX_INVITE_ADDRS).cloned().collect(),
                })
                .collect(),
            nodes: nodes.clone(),
        };
        let (link, nodes_stored) = if long_link {
            (invitation.to_link()?, 0)
        } else {
            if nodes.is_empty() {
                return Err(Error::NoNodes);
            }
            let mut sealed = link::seal(&invitation)?;
            let expires = link::blob_expiry(self.now_ms(), grant.body.not_after_ms);
            let (stored, failed) = self
                .publish_blob(&self.nodes()?, &sealed.link, &sealed.blob, expires)
                .await;
            if stored.is_empty() {
                return Err(Error::InviteNotPublished {
                    why: failed.join("; "),
                });
            }
            // The link names nodes that hold the blob, as many as fit in a short link.
            let mut named: Vec<String> =
                stored.iter().take(MAX_SHORT_LINK_NODES).cloned().collect();
            let text = loop {
                sealed.link.nodes = named.clone();
                match sealed.link.to_text() {
                    Ok(text) => break text,
                    Err(e) if named.len() <= 1 => return Err(e.into()),
                    Err(_) => {
                        named.pop();
                    }
                }
            };
            (text, stored.len())
        };
        let qr_version = link::qr_version(&link)?;
        let row = IssuedRow {
            device: doors[0].id,
            guest_name: guest_name.to_owned(),
            grant: grant.clone(),
            created_ms: self.now_ms(),
            parent: below.map(|b| b.parent),
        };
        self.store.put_issued(&row)?;
        self.store.put_issued_link(&IssuedLinkRow {
            grant: grant.id(),
            kind: if long_link { "long" } else { "short" }.into(),
            nodes_stored,
            reissued_as: None,
        })?;
        Ok(IssuedInvitation {
            link,
            grant: IssuedGrant {
                id: grant.id(),
                device: doors[0].id,
                device_name: doors[0].name.clone(),
                doors: doors.iter().map(|d| (d.id, d.name.clone())).collect(),
                guest_name: row.guest_name,
                status: status_of(&chain, &doors[0].chain, self.now_ms()),
                redemption: Redemption::NotRedeemed,
                reissued_as: None,
                parent: below.map(|b| b.parent),
                grant,
                created_ms: row.created_ms,
            },
            qr_version,
            nodes_stored,
        })
    }

    /// Revokes an issued grant and issues a fresh link with the same terms (doors, actions,
    /// window, uses, arguments, every restriction) in one step: for a link that reached the
    /// wrong phone. The old grant is revoked first, so a leaked link stops working even if
    /// issuing the new one fails.
    pub async fn reissue(&self, grant_query: &str) -> Result<ReissueReport> {
        let row = self.find_issued(grant_query)?;
        let me = self.identity()?.public_key();
        if row.grant.body.issuer != me {
            return Err(Error::BadInvite(
                "only a grant this profile signed itself can be reissued; issue a new one".into(),
            ));
        }
        let queries: Vec<String> = row
            .grant
            .body
            .scope
            .iter()
            .map(|s| s.device.to_string())
            .collect();
        let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
        let doors = self.owned_doors(&queries).await?;
        if row.grant.body.not_after_ms <= self.now_ms() {
            return Err(Error::BadInvite(
                "the grant is over; issue a new invitation with `latchkey invite`".into(),
            ));
        }
        let long = self
            .store
            .issued_link(&row.grant.id())?
            .is_some_and(|l| l.kind == "long");
        let revoked = self.revoke(grant_query).await?;
        let mut template = row.grant.body.clone();
        if !template.binds_on_first_use() {
            template.extensions.push(bind_on_first_use());
        }
        let issued = self
            .hand_out(&doors, template, &row.guest_name, long, None)
            .await?;
        let mut link_row = self
            .store
            .issued_link(&row.grant.id())?
            .unwrap_or(IssuedLinkRow {
                grant: row.grant.id(),
                kind: "long".into(),
                nodes_stored: 0,
                reissued_as: None,
            });
        link_row.reissued_as = Some(issued.grant.id);
        self.store.put_issued_link(&link_row)?;
        Ok(ReissueReport { revoked, issued })
    }

    /// Grants this profile issued for `query`'s device (every device when `None`), newest
    /// first, with what the kept audit logs say about their redemption.
    pub fn grants(&self, query: Option<&str>) -> Result<Vec<IssuedGrant>> {
        let devices = self.devices()?;
        let only = query.map(|q| self.find_device(q)).transpose()?;
        let rows = self.store.issued(None)?;
        let held = self.store.invitations()?;
        let now = self.now_ms();
        let mut out = Vec::new();
        // Each door's kept log is decoded once, however many grants it has.
        let mut logs: HashMap<DeviceId, Vec<SignedEntry>> = HashMap::new();
        for row in rows {
            // A delegated grant stands or falls with the chain above it.
            let mut chain: Vec<Grant> = row
                .parent
                .and_then(|p| held.iter().find(|h| h.id == p))
                .map(|h| h.grants.clone())
                .unwrap_or_default();
            chain.push(row.grant.clone());
            let covers = |d: &DeviceId| row.grant.body.scope.iter().any(|s| s.device == *d);
            if only.as_ref().is_some_and(|o| !covers(&o.id)) {
                continue;
            }
            let Some(device) = devices.iter().find(|d| d.id == row.device) else {
                continue;
            };
            let doors: Vec<&DeviceRecord> = devices.iter().filter(|d| covers(&d.id)).collect();
            let mut entries = Vec::new();
            if row.grant.body.binds_on_first_use() {
                for d in &doors {
                    let log = match logs.entry(d.id) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(link::decode_entries(&self.store.kept_audit_entries(&d.id)?))
                        }
                    };
                    entries.extend(log.iter().cloned());
                }
            }
            let link_row = self.store.issued_link(&row.grant.id())?;
            out.push(IssuedGrant {
                id: row.grant.id(),
                device: row.device,
                device_name: device.name.clone(),
                doors: doors.iter().map(|d| (d.id, d.name.clone())).collect(),
                guest_name: row.guest_name,
                status: status_of(&chain, &device.chain, now),
                redemption: link::redemption_from(&row.grant, &entries),
                reissued_as: link_row.and_then(|l| l.reissued_as),
                parent: row.parent,
                grant: row.grant,
                created_ms: row.created_ms,
            });
        }
        Ok(out)
    }

    /// Finds an issued grant by its id or an id prefix of at least 8 hex characters.
    fn find_issued(&self, query: &str) -> Result<IssuedRow> {
        let q = query.trim().to_ascii_lowercase();
        if q.len() < 8 {
            return Err(Error::UnknownGrant(query.to_owned()));
        }
        let mut hits: Vec<IssuedRow> = self
            .store
            .issued(None)?
            .into_iter()
            .filter(|r| r.grant.id().to_string().starts_with(&q))
            .collect();
        match hits.len() {
            0 => Err(Error::UnknownGrant(query.to_owned())),
            1 => Ok(hits.remove(0)),
            _ => Err(Error::AmbiguousGrant(query.to_owned())),
        }
    }

    /// Revokes an issued grant: publishes a revoke-grant op signed by this owner to the nodes
    /// of every door it covers that this profile knows.
    pub async fn revoke(&self, grant_query: &str) -> Result<RevokeReport> {
        let row = self.find_issued(grant_query)?;
        let mut doors = vec![row.device];
        for s in &row.grant.body.scope {
            if !doors.contains(&s.device) && self.find_device(&s.device.to_string()).is_ok() {
                doors.push(s.device);
            }
        }
        let mut report = self.revoke_at(&row, &doors[0]).await?;
        for d in &doors[1..] {
            report.more.push(self.revoke_at(&row, d).await?);
        }
        Ok(report)
    }

    /// Revokes `row`'s grant in `device`'s chain.
    async fn revoke_at(&self, row: &IssuedRow, device: &DeviceId) -> Result<RevokeReport> {
        let device = self.find_device(&device.to_string())?;
        let device = self.refresh_device(device).await?;
        let grant_id = row.grant.id();
        if device.chain.state().revoked.contains(&grant_id) {
            // Revoked before, perhaps while every node was down: publish the chain again
            // (idempotent on nodes that have it) and hand it to the door again.
            let (nodes_stored, nodes_error) = match self
                .quorum()?
                .publish_chain(&device.chain, 0, &mut OsRng)
                .await
            {
                Ok(report) => (report.acked.len(), None),
                Err(e) => (0, Some(e.to_string())),
            };
            let door = self
                .tell_door(&device.addrs, &device.chain, device.chain.state().seq)
                .await;
            return Ok(RevokeReport {
                grant: grant_id,
                device: device.id,
                seq: device.chain.state().seq,
                nodes_stored,
                door,
                nodes_error,
                already_revoked: true,
                more: Vec::new(),
            });
        }
        let me = self.identity()?;
        let mut op = device.chain.propose(
            self.now_ms(),
            OpBody::RevokeGrant {
                chain: vec![row.grant.clone()],
            },
        );
        op.sign(&me);
        device.chain.check_next(&op).map_err(|e| match e {
            latchkey_proto::Error::OpNotAllowed { .. } => Error::GrantVoid {
                grant: grant_id.to_string(),
            },
            other => Error::Protocol(other),
        })?;
        let seq = device.chain.state().seq;
        let published = self
            .quorum()?
            .publish(&device.id, std::slice::from_ref(&op), &mut OsRng)
            .await;
        // A fork or a refusal means the op itself is in question: never kept, never pushed.
        if let Err(
            e @ (latchkey_quorum::Error::Fork { .. } | latchkey_quorum::Error::Rejected(_)),
        ) = published
        {
            return Err(e.into());
        }
        let mut chain = device.chain.clone();
        chain.append(op)?;
        // The door is told whatever else the nodes did: a guest cut off from the registry with
        // the device must be refused now, not when the nodes come back.
        let door = self.tell_door(&device.addrs, &chain, seq).await;
        let (nodes_stored, nodes_error) = match published {
            Ok(report) => (report.acked.len(), None),
            Err(e) if door.knows() => (0, Some(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let device_id = device.id;
        self.store.put_device(&DeviceRecord { chain, ..device })?;
        Ok(RevokeReport {
            door,
            nodes_error,
            grant: grant_id,
            device: device_id,
            seq,
            nodes_stored,
            already_revoked: false,
            more: Vec::new(),
        })
    }

    /// Accepts an invitation link as a guest, short (`LATCHKEY://I/…`: the invitation is
    /// fetched from the link's nodes, then this profile's, the first that opens under the
    /// link's key wins) or long (`latchkey://invite/…`). Checks the grant chain against each
    /// door's ownership on a quorum of nodes. For an invitation that binds on first use it
    /// makes this profile's own key (OS keychain), redeems it at every door it reaches (on the
    /// LAN, else through the nodes' mailboxes; a door not reached now is redeemed at the first
    /// open), and keeps the invitation. A door that says another phone redeemed it first fails
    /// the whole accept with [`Error::AlreadyRedeemed`], and nothing is kept.
    pub async fn accept(&self, link: &str) -> Result<HeldInvitation> {
        let invitation = match link::ParsedLink::parse(link)? {
            link::ParsedLink::Long(invitation) => invitation,
            link::ParsedLink::Short(short) => self.fetch_invitation(&short).await?,
        };
        // A guest profile with no nodes of its own uses the invitation's (kept once it is
        // accepted); a profile that has nodes keeps asking its own, so a link cannot steer an
        // owner to nodes it did not choose.
        let own_nodes = self.nodes()?;
        let nodes = if own_nodes.is_empty() {
            invitation.nodes.clone()
        } else {
            own_nodes.clone()
        };
        let quorum = self.quorum_over(nodes.clone())?;
        let known = self.devices()?;
        let mut records = Vec::new();
        for door in &invitation.doors {
            let view = quorum
                .check(&door.device, None, self.now_ms(), &mut OsRng)
                .await?;
            if !view.forks.is_empty() {
                return Err(Error::Fork {
                    device: door.device.to_string(),
                });
            }
            let chain = view.chain;
            grant::verify_chain_structure(&invitation.grants, chain.state()).map_err(|_| {
                Error::InviterNotOwner {
                    device: door.device.to_string(),
                }
            })?;
            let existing = known.iter().find(|d| d.id == door.device);
            records.push(DeviceRecord {
                id: door.device,
                name: existing
                    .map(|d| d.name.clone())
                    .unwrap_or_else(|| door.name.clone()),
                addrs: existing
                    .filter(|d| !d.addrs.is_empty())
                    .map(|d| d.addrs.clone())
                    .unwrap_or_else(|| door.addrs.clone()),
                chain,
                verified_at_ms: view.checked_at_ms,
            });
        }
        let leaf = invitation.leaf().clone();
        let id = leaf.id();
        let binds = leaf.body.binds_on_first_use();
        let account = guest_key_account(self.id(), &id);
        let held_key = self.seeds.load(&account)?;
        let already_held = held_key.is_some();
        // The key this profile opens with: its own for an invitation that binds (made now, or
        // the one made when it first accepted this link, so a second accept is a no-op), else
        // the link's.
        let key = match (&held_key, binds) {
            (Some(secret), _) => link::key_from_hex(secret)?,
            (None, true) => SigningKey::generate(&mut OsRng),
            (None, false) => invitation.guest_key(),
        };
        let mut redeemed_at = vec![None; records.len()];
        if binds {
            let link_key = invitation.guest_key();
            for (record, at) in records.iter().zip(redeemed_at.iter_mut()) {
                match self
                    .redeem(
                        record,
                        &invitation.grants,
                        &link_key,
                        &key,
                        &nodes,
                        link::ACCEPT_RELAY_WAIT,
                    )
                    .await
                {
                    Ok(report) if report.accepted() => *at = Some(self.now_ms()),
                    Ok(report) if link::already_redeemed(&report) => {
                        return Err(Error::AlreadyRedeemed)
                    }
                    Ok(report) => tracing::info!(
                        device = %record.id,
                        outcome = ?report.response.outcome,
                        "the door did not redeem the invitation now; it is redeemed at the first open"
                    ),
                    Err(e) => tracing::info!(
                        device = %record.id,
                        error = %e,
                        "the door was not reached; the invitation is redeemed at the first open"
                    ),
                }
            }
            if redeemed_at.iter().any(Option::is_none) {
                let link_account = link_key_account(self.id(), &id);
                if self.seeds.load(&link_account)?.is_none() {
                    self.seeds.save(
                        &link_account,
                        &Zeroizing::new(hex::encode(*invitation.guest_secret)),
                    )?;
                }
            }
        }
        if !already_held {
            self.forget_key(&account);
            self.seeds
                .save(&account, &Zeroizing::new(hex::encode(*key.to_bytes())))?;
        }
        if own_nodes.is_empty() {
            self.add_nodes(&invitation.nodes)?;
        }
        for record in &records {
            self.store.put_device(record)?;
        }
        self.store.put_invitation(&InvitationRow {
            id,
            device: records[0].id,
            guest_name: invitation.guest_name.clone(),
            grants: invitation.grants.clone(),
            accepted_ms: self.now_ms(),
        })?;
        for (record, at) in records.iter().zip(&redeemed_at) {
            self.store.put_held_door(&HeldDoorRow {
                grant: id,
                device: record.id,
                name: record.name.clone(),
                redeemed_ms: *at,
            })?;
        }
        let doors = self.store.held_doors(Some(&id))?;
        Ok(HeldInvitation {
            id,
            device: records[0].id,
            device_name: records[0].name.clone(),
            guest_name: invitation.guest_name.clone(),
            actions: leaf.body.actions.clone(),
            not_before_ms: leaf.body.not_before_ms,
            not_after_ms: leaf.body.not_after_ms,
            arguments: pinned_by(&leaf),
            schedules: invitation
                .grants
                .iter()
                .filter_map(Grant::schedule)
                .collect(),
            status: status_of(&invitation.grants, &records[0].chain, self.now_ms()),
            already_held,
            binds,
            doors: held_doors_of(&doors, binds),
            may_delegate: leaf.body.delegation_depth > 0,
        })
    }

    /// One held invitation, by its id or an 8+ hex prefix (what `--from-grant` names).
    pub fn held_invitation(&self, query: &str) -> Result<HeldInvitation> {
        let row = self.find_held(query)?;
        self.invitations()?
            .into_iter()
            .find(|h| h.id == row.id)
            .ok_or_else(|| {
                Error::BadDelegation(format!(
                    "the door of invitation {} is no longer known to this profile; accept the link again",
                    row.id
                ))
            })
    }

    /// Finds a held invitation by its id or an id prefix of at least 8 hex characters.
    fn find_held(&self, query: &str) -> Result<InvitationRow> {
        let q = query.trim().to_ascii_lowercase();
        let unknown = || {
            Error::BadDelegation(format!(
                "this profile holds no invitation \"{query}\"; list them with `latchkey invitations`"
            ))
        };
        if q.len() < 8 {
            return Err(unknown());
        }
        let mut hits: Vec<InvitationRow> = self
            .store
            .invitations()?
            .into_iter()
            .filter(|r| r.id.to_string().starts_with(&q))
            .collect();
        match hits.len() {
            0 => Err(unknown()),
            1 => Ok(hits.remove(0)),
            _ => Err(Error::BadDelegation(format!(
                "\"{query}\" matches more than one held invitation; give more of its id"
            ))),
        }
    }

    /// Issues a grant below a held invitation's chain, signed with the key that invitation is
    /// bound to: only ever narrower in doors, actions, time, uses and arguments (the device
    /// checks the same rules on every command, so revoking the held grant voids this one too).
    async fn invite_delegated(
        &self,
        queries: &[&str],
        parent_query: &str,
        request: &InviteRequest,
    ) -> Result<IssuedInvitation> {
        let deny = |why: String| Error::BadDelegation(why);
        let guest_name = request.guest_name.trim();
        if guest_name.is_empty() || guest_name.len() > MAX_INVITE_LABEL {
            return Err(Error::BadInvite(
                "give the guest a name of 1 to 64 bytes".into(),
            ));
        }
        if request.may_delegate {
            return Err(deny(
                "a delegated invitation cannot be delegated further (depth 1)".into(),
            ));
        }
        let held = self.find_held(parent_query)?;
        let short = &held.id.to_string()[..16];
        let parent = held
            .grants
            .last()
            .ok_or_else(|| deny("the held invitation has no grant".into()))?
            .clone();
        let p = &parent.body;
        if p.delegation_depth == 0 {
            return Err(deny(format!(
                "invitation {short} does not allow delegation; ask whoever sent it for one made \
                 with --may-delegate"
            )));
        }
        if held.grants.len() >= grant::MAX_GRANT_CHAIN {
            return Err(deny(format!(
                "invitation {short} is already {} grants deep, the most a chain may hold",
                held.grants.len()
            )));
        }
        if queries.is_empty() || queries.len() > MAX_INVITE_DOORS {
            return Err(Error::BadInvite(format!(
                "name 1 to {MAX_INVITE_DOORS} doors"
            )));
        }
        let mut doors: Vec<DeviceRecord> = Vec::new();
        for q in queries {
            let device = self.find_device(q)?;
            if doors.iter().any(|d| d.id == device.id) {
                continue;
            }
            let device = self.refresh_device(device).await?;
            let scope = GrantScope {
                device: device.id,
                epoch: device.chain.state().epoch,
            };
            if !p.scope.contains(&scope) {
                return Err(deny(format!(
                    "invitation {short} does not cover {} (or it was issued before the door \
                     changed hands)",
                    device.name
                )));
            }
            doors.push(device);
        }
        let actions = if request.actions.is_empty() {
            p.actions.clone()
        } else {
            request.actions.clone()
        };
        for action in &actions {
            if !is_action_name(action) {
                return Err(Error::BadAction(action.clone()));
            }
            if !p.actions.contains(action) {
                return Err(deny(format!(
                    "invitation {short} does not allow \"{action}\"; it allows {}",
                    p.actions.join(", ")
                )));
            }
        }
        if request.until_ms <= request.from_ms {
            return Err(Error::BadInvite(
                "the invitation must end after it starts".into(),
            ));
        }
        if request.from_ms < p.not_before_ms || request.until_ms > p.not_after_ms {
            return Err(deny(format!(
                "the time is wider than invitation {short}, which runs from {} to {} (ms since \
                 1970); choose --from and --until inside it",
                p.not_before_ms, p.not_after_ms
            )));
        }
        if request.until_ms <= self.now_ms() {
            return Err(Error::BadInvite(
                "the invitation would already be over".into(),
            ));
        }
        let use_limit = match (request.use_limit, p.use_limit) {
            (None, limit) => limit,
            (Some(n), Some(limit)) if n > limit => {
                return Err(deny(format!(
                    "{n} uses is more than invitation {short} allows ({limit})"
                )))
            }
            (Some(n), _) => Some(n),
        };
        let parent_pinned = pinned_by(&parent);
        let arguments = if request.arguments.is_empty() {
            parent_pinned.clone()
        } else {
            if let Some(a) = request
                .arguments
                .iter()
                .find(|a| !parent_pinned.contains(a))
            {
                return Err(deny(format!(
                    "invitation {short} does not allow the argument {}",
                    String::from_utf8_lossy(a)
                )));
            }
            request.arguments.clone()
        };
        let pinned = pinned_arguments(&arguments)?;
        // The key the held invitation is bound to (this profile's own for one that binds on
        // first use: the door takes it as the grant's holder once redeemed), else the link's.
        let account = guest_key_account(self.id(), &held.id);
        let key = link::key_from_hex(&self.seeds.load(&account)?.ok_or_else(|| {
            Error::Keychain(format!(
                "the key of invitation {} is missing from the keychain; accept the link again",
                held.id
            ))
        })?)?;
        let mut extensions: Vec<Extension> =
            pinned.iter().map(AllowedArguments::to_extension).collect();
        extensions.extend(request.schedule.iter().map(WeeklySchedule::to_extension));
        extensions.push(bind_on_first_use());
        let template = GrantBody {
            issuer: key.public_key(),
            subject: key.public_key(),
            scope: Vec::new(),
            actions,
            not_before_ms: request.from_ms,
            not_after_ms: request.until_ms,
            use_limit,
            delegation_depth: 0,
            extensions,
            salt: [0; 16],
        };
        let below = Below {
            key,
            chain: held.grants.clone(),
            parent: held.id,
        };
        self.hand_out(
            &doors,
            template,
            guest_name,
            request.long_link,
            Some(&below),
        )
        .await
    }

    /// Invitations this profile holds as a guest, newest first.
    pub fn invitations(&self) -> Result<Vec<HeldInvitation>> {
        let devices = self.devices()?;
        let doors = self.store.held_doors(None)?;
        let now = self.now_ms();
        Ok(self
            .store
            .invitations()?
            .into_iter()
            .filter_map(|row| {
                let device = devices.iter().find(|d| d.id == row.device)?;
                let leaf = row.grants.last()?;
                let binds = leaf.body.binds_on_first_use();
                let mine: Vec<HeldDoorRow> = doors
                    .iter()
                    .filter(|d| d.grant == row.id)
                    .cloned()
                    .collect();
                let mut doors = held_doors_of(&mine, binds);
                if doors.is_empty() {
                    // Accepted before invitations listed their doors: the one it was for.
                    doors.push(HeldDoor {
                        device: row.device,
                        name: device.name.clone(),
                        redeemed: !binds,
                    });
                }
                Some(HeldInvitation {
                    id: row.id,
                    device: row.device,
                    device_name: device.name.clone(),
                    guest_name: row.guest_name.clone(),
                    actions: leaf.body.actions.clone(),
                    not_before_ms: leaf.body.not_before_ms,
                    not_after_ms: leaf.body.not_after_ms,
                    arguments: pinned_by(leaf),
                    schedules: row.grants.iter().filter_map(Grant::schedule).collect(),
                    status: status_of(&row.grants, &device.chain, now),
                    already_held: true,
                    binds,
                    doors,
                    may_delegate: leaf.body.delegation_depth > 0,
                })
            })
            .collect())
    }

    /// The grant chain and key to open `device` with as a guest: the newest held invitation
    /// covering it that is active now, else the newest one (the device will say why it
    /// refuses); with the link's key when the door still needs the redemption.
    pub(crate) fn guest_credentials(
        &self,
        device: &DeviceRecord,
    ) -> Result<Option<GuestCredentials>> {
        let now = self.now_ms();
        let doors = self.store.held_doors(None)?;
        let mut rows: Vec<InvitationRow> = self
            .store
            .invitations()?
            .into_iter()
            .filter(|r| {
                r.device == device.id
                    || doors
                        .iter()
                        .any(|d| d.grant == r.id && d.device == device.id)
            })
            .collect();
        rows.sort_by_key(|r| status_of(&r.grants, &device.chain, now) != GrantStatus::Active);
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let missing = || {
            Error::Keychain(format!(
                "the key of invitation {} is missing from the keychain; accept the link again",
                row.id
            ))
        };
        let account = guest_key_account(self.id(), &row.id);
        let key = self.session_key(&account, || {
            link::key_from_hex(&self.seeds.load(&account)?.ok_or_else(missing)?)
        })?;
        let binds = row
            .grants
            .last()
            .is_some_and(|g| g.body.binds_on_first_use());
        let pending = binds
            && doors
                .iter()
                .find(|d| d.grant == row.id && d.device == device.id)
                .is_none_or(|d| d.redeemed_ms.is_none());
        let link_key = if pending {
            let secret = self
                .seeds
                .load(&link_key_account(self.id(), &row.id))?
                .ok_or_else(missing)?;
            Some(link::key_from_hex(&secret)?)
        } else {
            None
        };
        Ok(Some(GuestCredentials {
            id: row.id,
            grants: row.grants,
            key,
            link_key,
        }))
    }

    /// Redeems a held invitation at a door not reached when it was accepted, before the first
    /// command with this profile's own key. `Ok(None)` once redeemed (recorded, and the link's
    /// key deleted from the keychain when no door needs it any more); `Ok(Some(report))` with
    /// the door's refusal to show instead of the command's answer.
    pub(crate) async fn redeem_at(
        &self,
        device: &DeviceRecord,
        guest: &GuestCredentials,
        link_key: &SigningKey,
    ) -> Result<Option<OpenReport>> {
        let report = self
            .redeem(
                device,
                &guest.grants,
                link_key,
                &guest.key,
                &self.nodes()?,
                crate::open::RELAY_TIMEOUT,
            )
            .await?;
        if link::already_redeemed(&report) {
            return Err(Error::AlreadyRedeemed);
        }
        if !matches!(report.response.outcome, Outcome::Accepted) {
            return Ok(Some(report));
        }
        self.store.put_held_door(&HeldDoorRow {
            grant: guest.id,
            device: device.id,
            name: device.name.clone(),
            redeemed_ms: Some(self.now_ms()),
        })?;
        let left = self
            .store
            .held_doors(Some(&guest.id))?
            .iter()
            .any(|d| d.redeemed_ms.is_none());
        if !left {
            self.seeds.delete(&link_key_account(self.id(), &guest.id))?;
        }
        Ok(None)
    }
}

/// Where a delegated grant hangs: the held invitation's chain and the key it is bound to.
struct Below {
    key: SigningKey,
    chain: Vec<Grant>,
    parent: GrantId,
}

/// The doors of a held invitation as shown (an invitation that does not bind needs no
/// redemption anywhere).
fn held_doors_of(rows: &[HeldDoorRow], binds: bool) -> Vec<HeldDoor> {
    rows.iter()
        .map(|d| HeldDoor {
            device: d.device,
            name: d.name.clone(),
            redeemed: !binds || d.redeemed_ms.is_some(),
        })
        .collect()
}

/// Extension 0x83: the grant binds to the first phone that redeems it.
fn bind_on_first_use() -> Extension {
    Extension {
        tag: EXT_BIND_ON_FIRST_USE,
        value: Vec::new(),
    }
}

/// The allowed-arguments extension for an invitation, or none when no argument is pinned.
fn pinned_arguments(arguments: &[Vec<u8>]) -> Result<Option<AllowedArguments>> {
    if arguments.is_empty() {
        return Ok(None);
    }
    if arguments.iter().any(Vec::is_empty) {
        return Err(Error::BadInvite(
            "an empty argument is always allowed; give only non-empty arguments to pin".into(),
        ));
    }
    AllowedArguments::new(arguments.to_vec())
        .map(Some)
        .map_err(|_| {
            Error::BadInvite(format!(
                "pin at most {MAX_ALLOWED_ARGUMENTS} arguments of at most \
                 {MAX_ALLOWED_ARGUMENT_LEN} bytes each, about 500 bytes in all"
            ))
        })
}

/// The argument strings `grant` pins, in ascending byte order (empty: none may be sent).
pub fn pinned_by(grant: &Grant) -> Vec<Vec<u8>> {
    grant
        .body
        .allowed_arguments()
        .ok()
        .flatten()
        .map(|a| a.as_slice().to_vec())
        .unwrap_or_default()
}

/// The longest prefix of `s` within `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn qr_error(why: String) -> Error {
    Error::BadInvite(format!("cannot draw the QR code: {why}"))
}

/// The QR code of an invitation link: level M for a short link (upper case, so the encoder
/// uses alphanumeric mode), level L for a long one, which is several times longer and only
/// fits at low error correction.
pub(crate) fn qr_code(link: &str) -> Result<qrcode::QrCode> {
    let level = if link.starts_with("latchkey://invite/") {
        qrcode::EcLevel::L
    } else {
        qrcode::EcLevel::M
    };
    qrcode::QrCode::with_error_correction_level(link.as_bytes(), level)
        .map_err(|e| qr_error(e.to_string()))
}

/// An invitation link as a QR code drawn in the terminal (two rows of modules per line).
pub fn invitation_qr_text(link: &str) -> Result<String> {
    Ok(qr_code(link)?
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build())
}

/// An invitation link as a QR code PNG (black on white), to show on a screen or print.
pub fn invitation_qr_png(link: &str) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let code = qr_code(link)?;
    let img = code
        .render::<image::Luma<u8>>()
        .module_dimensions(6, 6)
        .build();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(|e| qr_error(e.to_string()))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_proto::chain::OwnerSet;
    use latchkey_testkit::{person, TestDevice, HOUR, T0};

    #[test]
    fn a_grant_is_upcoming_active_expired_then_revoked_or_void() {
        let (alice, guest) = (person(1), person(2));
        let mut door = TestDevice::new(1, "Door");
        door.claim(&[&alice], 1);
        let grant = door.grant(
            &alice,
            &guest.public_key(),
            &["unlock"],
            T0 + HOUR,
            T0 + 2 * HOUR,
            0,
        );
        let g = std::slice::from_ref(&grant);
        assert_eq!(status_of(g, &door.chain, T0), GrantStatus::Upcoming);
        assert_eq!(status_of(g, &door.chain, T0 + HOUR), GrantStatus::Active);
        assert_eq!(
            status_of(g, &door.chain, T0 + 2 * HOUR + 1),
            GrantStatus::Expired
        );
        let mut revoked = TestDevice {
            chain: door.chain.clone(),
            ..TestDevice::new(1, "Door")
        };
        revoked.apply(
            OpBody::RevokeGrant {
                chain: vec![grant.clone()],
            },
            &[&alice],
        );
        assert_eq!(
            status_of(g, &revoked.chain, T0 + HOUR),
            GrantStatus::Revoked
        );
        // The new owner signs too: a key must prove it is held to become an owner.
        door.apply(
            OpBody::Transfer(OwnerSet {
                owners: vec![person(3).public_key()],
                threshold: 1,
            }),
            &[&alice, &person(3)],
        );
        assert_eq!(status_of(g, &door.chain, T0 + HOUR), GrantStatus::Void);
    }

    #[test]
    fn pinned_arguments_are_checked_before_anything_is_issued() {
        assert_eq!(pinned_arguments(&[]).unwrap(), None);
        let two = pinned_arguments(&[b"b".to_vec(), b"a".to_vec(), b"b".to_vec()])
            .unwrap()
            .unwrap();
        assert_eq!(two.as_slice(), [b"a".to_vec(), b"b".to_vec()]);
        for bad in [
            vec![Vec::new()],
            vec![vec![b'x'; 257]],
            (0..9u8).map(|i| vec![b'a' + i]).collect(),
            (0..3u8).map(|i| vec![b'a' + i; 200]).collect(),
        ] {
            let e = pinned_arguments(&bad).unwrap_err();
            assert_eq!(e.code(), "bad_invite", "{e}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("Türschloss", 2), "T");
        assert_eq!(truncate("Door", 64), "Door");
    }
}
