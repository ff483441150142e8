//! Guests: an owner issues a time-limited grant as an invitation link; a guest profile accepts
//! it (the guest key goes to the OS keychain, the grant chain to the store) and opens with it;
//! an owner lists the grants issued and revokes one by publishing a revoke-grant op, which the
//! device learns from the nodes even when the owner cannot reach it.

use latchkey_proto::chain::{Chain, OpBody};
use latchkey_proto::grant::{
    self, is_action_name, AllowedArguments, Grant, GrantBody, GrantId, GrantScope,
    MAX_ALLOWED_ARGUMENTS, MAX_ALLOWED_ARGUMENT_LEN,
};
use latchkey_proto::invite::{Invitation, MAX_INVITE_LABEL, MAX_INVITE_NODES};
use latchkey_proto::keys::{DeviceId, SigningKey};
use latchkey_proto::schedule::WeeklySchedule;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::door::DoorSync;
use crate::error::{Error, Result};
use crate::profile::Profile;
use crate::store::{DeviceRecord, InvitationRow, IssuedRow};

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
    /// Let the guest issue narrower invitations from this one (delegation depth 1): a host's
    /// property manager inviting a cleaner.
    pub may_delegate: bool,
    /// Issue below an invitation this profile holds as a guest (its grant id or an 8+ hex
    /// prefix) instead of as an owner: the new grant is signed with that invitation's key and
    /// may only narrow it. Then empty `actions` and `arguments` and a `None` `use_limit` mean
    /// the held invitation's own.
    pub from_grant: Option<String>,
    /// Weekly windows the guest may open in (grant extension 0x81), checked by the device in
    /// the schedule's own time zone; `None`: any time between `from_ms` and `until_ms`.
    pub schedule: Option<WeeklySchedule>,
}

/// An invitation just issued.
#[derive(Debug, Clone)]
pub struct IssuedInvitation {
    /// The `latchkey://invite/…` link: a bearer credential until the grant ends or is revoked.
    pub link: Zeroizing<String>,
    pub grant: IssuedGrant,
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
    pub device: DeviceId,
    pub device_name: String,
    pub guest_name: String,
    pub grant: Grant,
    pub created_ms: u64,
    pub status: GrantStatus,
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
    /// Whether its holder may issue narrower invitations from it (`--from-grant`).
    pub may_delegate: bool,
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
}

/// The keychain account of a held invitation's guest key (not a secret).
fn guest_key_account(profile: &str, grant: &GrantId) -> String {
    format!("{profile}/guest/{grant}")
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
    /// Issues a grant to a fresh guest key and returns it as an invitation link.
    pub async fn invite(&self, query: &str, request: &InviteRequest) -> Result<IssuedInvitation> {
        if let Some(parent) = &request.from_grant {
            return self.invite_delegated(query, parent, request).await;
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
        let device = self.find_device(query)?;
        let device = self.refresh_device(device).await?;
        let me = self.identity()?;
        let state = device.chain.state();
        if !state.is_owner(&me.public_key()) {
            return Err(Error::NotOwner {
                device: device.id.to_string(),
            });
        }
        let guest = SigningKey::generate(&mut OsRng);
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let grant = GrantBody {
            issuer: me.public_key(),
            subject: guest.public_key(),
            scope: vec![GrantScope {
                device: device.id,
                epoch: state.epoch,
            }],
            actions: request.actions.clone(),
            not_before_ms: request.from_ms,
            not_after_ms: request.until_ms,
            use_limit: request.use_limit,
            delegation_depth: u8::from(request.may_delegate),
            extensions: pinned
                .iter()
                .map(AllowedArguments::to_extension)
                .chain(request.schedule.iter().map(WeeklySchedule::to_extension))
                .collect(),
            salt,
        }
        .sign(&me)?;
        let mut nodes = self.nodes()?;
        nodes.truncate(MAX_INVITE_NODES);
        let invitation = Invitation {
            device: device.id,
            guest_secret: guest.to_bytes(),
            grants: vec![grant.clone()],
            device_name: truncate(&device.name, MAX_INVITE_LABEL),
            guest_name: guest_name.to_owned(),
            addrs: device.addrs.iter().take(4).cloned().collect(),
            nodes,
        };
        let link = invitation.to_link()?;
        let row = IssuedRow {
            device: device.id,
            guest_name: guest_name.to_owned(),
            grant: grant.clone(),
            created_ms: self.now_ms(),
            parent: None,
        };
        self.store.put_issued(&row)?;
        Ok(IssuedInvitation {
            link,
            grant: IssuedGrant {
                id: grant.id(),
                device: device.id,
                device_name: device.name.clone(),
                guest_name: row.guest_name,
                status: status_of(std::slice::from_ref(&grant), &device.chain, self.now_ms()),
                grant,
                created_ms: row.created_ms,
                parent: None,
            },
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

    /// The key of a held invitation (its grant's subject), from the OS keychain.
    fn held_key(&self, id: &GrantId) -> Result<SigningKey> {
        let account = guest_key_account(self.id(), id);
        let secret = self.seeds.load(&account)?.ok_or_else(|| {
            Error::Keychain(format!(
                "the key of invitation {id} is missing from the keychain; accept the link again"
            ))
        })?;
        let mut raw = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(secret.as_bytes(), raw.as_mut())
            .map_err(|_| Error::Keychain("a stored guest key is damaged".into()))?;
        Ok(SigningKey::from_bytes(&raw))
    }

    /// Issues a grant below a held invitation's chain, signed with its key: only ever narrower
    /// than the invitation in doors, actions, time, uses and arguments (the device checks the
    /// same rules on every command, so revoking the held grant voids this one too).
    async fn invite_delegated(
        &self,
        query: &str,
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
        let device = self.find_device(query)?;
        let device = self.refresh_device(device).await?;
        let state = device.chain.state();
        let scope = GrantScope {
            device: device.id,
            epoch: state.epoch,
        };
        if !p.scope.contains(&scope) {
            return Err(deny(format!(
                "invitation {short} does not cover {} (or it was issued before the device \
                 changed hands)",
                device.name
            )));
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
        let key = self.held_key(&held.id)?;
        let guest = SigningKey::generate(&mut OsRng);
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let grant = GrantBody {
            issuer: key.public_key(),
            subject: guest.public_key(),
            scope: vec![scope],
            actions,
            not_before_ms: request.from_ms,
            not_after_ms: request.until_ms,
            use_limit,
            delegation_depth: 0,
            // A delegated grant may carry its own weekly windows; the door holds the guest to
            // every schedule of the chain, so it can only narrow.
            extensions: pinned
                .iter()
                .map(AllowedArguments::to_extension)
                .chain(request.schedule.iter().map(WeeklySchedule::to_extension))
                .collect(),
            salt,
        }
        .sign(&key)?;
        let mut chain = held.grants.clone();
        chain.push(grant.clone());
        // The device's own rule, so nothing it would refuse leaves this profile.
        grant::verify_chain_structure(&chain, state).map_err(|e| deny(e.to_string()))?;
        let mut nodes = self.nodes()?;
        nodes.truncate(MAX_INVITE_NODES);
        let invitation = Invitation {
            device: device.id,
            guest_secret: guest.to_bytes(),
            grants: chain.clone(),
            device_name: truncate(&device.name, MAX_INVITE_LABEL),
            guest_name: guest_name.to_owned(),
            addrs: device.addrs.iter().take(4).cloned().collect(),
            nodes,
        };
        let link = invitation.to_link()?;
        let row = IssuedRow {
            device: device.id,
            guest_name: guest_name.to_owned(),
            grant: grant.clone(),
            created_ms: self.now_ms(),
            parent: Some(held.id),
        };
        self.store.put_issued(&row)?;
        Ok(IssuedInvitation {
            link,
            grant: IssuedGrant {
                id: grant.id(),
                device: device.id,
                device_name: device.name.clone(),
                guest_name: row.guest_name,
                status: status_of(&chain, &device.chain, self.now_ms()),
                grant,
                created_ms: row.created_ms,
                parent: Some(held.id),
            },
        })
    }

    /// Grants this profile issued for `query`'s device (every device when `None`), newest first.
    pub fn grants(&self, query: Option<&str>) -> Result<Vec<IssuedGrant>> {
        let devices = self.devices()?;
        let only = query.map(|q| self.find_device(q)).transpose()?;
        let rows = self.store.issued(only.as_ref().map(|d| &d.id))?;
        let held = self.store.invitations()?;
        let now = self.now_ms();
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let device = devices.iter().find(|d| d.id == row.device)?;
                // A delegated grant stands or falls with the chain above it.
                let mut chain: Vec<Grant> = row
                    .parent
                    .and_then(|p| held.iter().find(|h| h.id == p))
                    .map(|h| h.grants.clone())
                    .unwrap_or_default();
                chain.push(row.grant.clone());
                Some(IssuedGrant {
                    id: row.grant.id(),
                    device: row.device,
                    device_name: device.name.clone(),
                    guest_name: row.guest_name,
                    status: status_of(&chain, &device.chain, now),
                    grant: row.grant,
                    created_ms: row.created_ms,
                    parent: row.parent,
                })
            })
            .collect())
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

    /// Revokes an issued grant: publishes a revoke-grant op signed by this owner to the nodes.
    pub async fn revoke(&self, grant_query: &str) -> Result<RevokeReport> {
        let row = self.find_issued(grant_query)?;
        let device = self.find_device(&row.device.to_string())?;
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
        self.store.put_device(&DeviceRecord { chain, ..device })?;
        Ok(RevokeReport {
            door,
            nodes_error,
            grant: grant_id,
            device: row.device,
            seq,
            nodes_stored,
            already_revoked: false,
        })
    }

    /// Accepts an invitation link as a guest: checks it against the device's ownership on a
    /// quorum of nodes, keeps the guest key in the OS keychain and the grant in the store.
    pub async fn accept(&self, link: &str) -> Result<HeldInvitation> {
        let invitation = Invitation::parse_link(link).map_err(Error::BadInvitation)?;
        // A guest profile with no nodes of its own learns them from the link; a profile that has
        // nodes keeps asking its own, so a link cannot steer an owner to nodes it did not choose.
        if self.nodes()?.is_empty() {
            self.add_nodes(&invitation.nodes)?;
        }
        let quorum = self.quorum()?;
        let view = quorum
            .check(&invitation.device, None, self.now_ms(), &mut OsRng)
            .await?;
        if !view.forks.is_empty() {
            return Err(Error::Fork {
                device: invitation.device.to_string(),
            });
        }
        let chain = view.chain;
        grant::verify_chain_structure(&invitation.grants, chain.state()).map_err(|_| {
            Error::InviterNotOwner {
                device: invitation.device.to_string(),
            }
        })?;
        let leaf = invitation.leaf().clone();
        let id = leaf.id();
        let existing = self
            .devices()?
            .into_iter()
            .find(|d| d.id == invitation.device);
        let record = DeviceRecord {
            id: invitation.device,
            name: existing
                .as_ref()
                .map(|d| d.name.clone())
                .unwrap_or_else(|| invitation.device_name.clone()),
            addrs: existing
                .as_ref()
                .filter(|d| !d.addrs.is_empty())
                .map(|d| d.addrs.clone())
                .unwrap_or_else(|| invitation.addrs.clone()),
            chain,
            verified_at_ms: view.checked_at_ms,
        };
        let account = guest_key_account(self.id(), &id);
        let already_held = self.seeds.load(&account)?.is_some();
        if !already_held {
            let secret = Zeroizing::new(hex::encode(*invitation.guest_secret));
            self.seeds.save(&account, &secret)?;
        }
        self.store.put_device(&record)?;
        self.store.put_invitation(&InvitationRow {
            id,
            device: invitation.device,
            guest_name: invitation.guest_name.clone(),
            grants: invitation.grants.clone(),
            accepted_ms: self.now_ms(),
        })?;
        Ok(HeldInvitation {
            id,
            device: invitation.device,
            device_name: record.name.clone(),
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
            status: status_of(&invitation.grants, &record.chain, self.now_ms()),
            already_held,
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
                    "the device of invitation {} is no longer known to this profile; accept the link again",
                    row.id
                ))
            })
    }

    /// Invitations this profile holds as a guest, newest first.
    pub fn invitations(&self) -> Result<Vec<HeldInvitation>> {
        let devices = self.devices()?;
        let now = self.now_ms();
        Ok(self
            .store
            .invitations()?
            .into_iter()
            .filter_map(|row| {
                let device = devices.iter().find(|d| d.id == row.device)?;
                let leaf = row.grants.last()?;
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
                    may_delegate: leaf.body.delegation_depth > 0,
                })
            })
            .collect())
    }

    /// The grant chain and guest key to open `device` with as a guest: the newest held
    /// invitation that is active now, else the newest one (the device will say why it refuses).
    pub(crate) fn guest_credentials(
        &self,
        device: &DeviceRecord,
    ) -> Result<Option<(Vec<Grant>, SigningKey)>> {
        let now = self.now_ms();
        let mut rows: Vec<InvitationRow> = self
            .store
            .invitations()?
            .into_iter()
            .filter(|r| r.device == device.id)
            .collect();
        rows.sort_by_key(|r| status_of(&r.grants, &device.chain, now) != GrantStatus::Active);
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let key = self.held_key(&row.id)?;
        Ok(Some((row.grants, key)))
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

/// An invitation link as a QR code PNG (black on white), to show on a screen or print.
pub fn invitation_qr_png(link: &str) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let qr_error = |why: String| Error::BadInvite(format!("cannot draw the QR code: {why}"));
    // Low error correction: an invitation link is several times longer than a claim code and
    // is shown on a screen, not printed on a sticker that wears.
    let code = qrcode::QrCode::with_error_correction_level(link.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| qr_error(e.to_string()))?;
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
