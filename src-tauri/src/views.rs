//! What commands hand the UI: plain serializable views of the owner core's types. Each view
//! only renames and formats (ids as text, bytes as text); deciding anything stays in
//! latchkey-owner. `ui/src/lib/bindings.ts` is generated from these types (see the test below).

use latchkey_owner::store::DeviceRecord;
use latchkey_owner::{
    AuditReport, ClaimReport, ForkAlarm, ForkKind, HeldInvitation, IssuedGrant, MyPart, OpenReport,
    OwnersView, Proposal, ProposalReport, RevokeReport, Route,
};
use latchkey_proto::audit::Via;
use latchkey_proto::command::{Outcome, RejectCode};
use latchkey_proto::keys::PublicKey;
use serde::Serialize;
use ts_rs::TS;

/// Where the app stands when it starts: which screen to show first.
#[derive(Debug, Clone, Serialize, TS)]
pub struct Status {
    /// The keychain entry's name (not a secret).
    pub profile_id: String,
    /// The recovery phrase is in the OS keychain.
    pub has_identity: bool,
    /// The person typed back words of the phrase (or restored it), so it is written down.
    pub backup_confirmed: bool,
    /// `lkpk1…`, when there is an identity.
    pub owner_key: Option<String>,
    pub nodes: Vec<String>,
    /// How many of `nodes`, chosen at random, each ownership check asks (at most all of them).
    pub nodes_to_ask: u32,
    /// Why the OS keychain cannot be used, if it cannot (the app is unusable without it).
    pub keychain_problem: Option<String>,
    /// Invitations this profile holds as a guest (a guest needs no identity of its own).
    pub invitations: u32,
    /// Started with `--demo`: local nodes and a simulated door run inside the app.
    pub demo: bool,
}

/// A new identity: its words, shown once, and which of them the person must type back.
#[derive(Debug, Clone, Serialize, TS)]
pub struct NewIdentity {
    pub words: Vec<String>,
    /// 1-based positions to confirm, ascending.
    pub confirm_positions: Vec<u32>,
    pub owner_key: String,
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct Identity {
    pub owner_key: String,
}

/// The recovery phrase, shown on request from Settings.
#[derive(Debug, Clone, Serialize, TS)]
pub struct RecoveryWords {
    pub words: Vec<String>,
    /// Whether the OS confirmed the owner before the words left the keychain.
    pub presence: Presence,
}

/// What the OS said before a secret was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// The OS confirmed the owner (biometry or the device's own passcode).
    Confirmed,
    /// This platform, or this machine, offers no standard prompt; only the app's own
    /// confirmation stood before the secret.
    NotOffered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// Straight to the device's own address on the local network.
    Lan,
    /// Through a registry node's mailboxes.
    Relay,
}

/// A device's verified, signed answer to a command.
#[derive(Debug, Clone, Serialize, TS)]
pub struct OpenResult {
    pub device_id: String,
    pub device_name: String,
    pub action: String,
    pub accepted: bool,
    /// The device's refusal, by name (`NotAuthorized`, …), when it refused.
    pub reject_code: Option<String>,
    pub reason: Option<String>,
    /// The refusal in plain words (what it means), from the owner core's wording.
    pub refusal: Option<String>,
    /// What the person can do about the refusal.
    pub what_to_do: Option<String>,
    /// The command reached the door but its answer was lost; it was not sent again, so it ran
    /// at most once (the door's log says what happened).
    pub outcome_unknown: bool,
    /// What the device's actuator reported (UTF-8, lossy).
    pub body: String,
    pub route: RouteKind,
    /// The address or node the answer came through.
    pub via: String,
    #[ts(type = "number")]
    pub latency_ms: u64,
    /// The device's clock when it answered, if it has one.
    #[ts(type = "number | null")]
    pub device_time_ms: Option<u64>,
    /// Hex id of the command the device signed its answer for.
    pub command_id: String,
    /// When this app received the answer.
    #[ts(type = "number")]
    pub received_at_ms: u64,
}

impl OpenResult {
    pub fn from_report(report: &OpenReport, received_at_ms: u64) -> Self {
        let r = &report.response;
        let mut words = None;
        let (accepted, reject_code, reason) = match &r.outcome {
            Outcome::Accepted => (true, None, None),
            Outcome::Rejected { code, reason } => {
                words = Some(latchkey_owner::explain(*code, reason));
                (false, Some(reject_name(*code)), Some(reason.clone()))
            }
            // The core answers only after a challenge round trip; reaching here means it
            // handed back the challenge itself, which it never does.
            Outcome::ChallengeRequired { .. } => (
                false,
                Some("ChallengeRequired".into()),
                Some("the device kept asking for a challenge".into()),
            ),
        };
        let (route, via) = match &report.route {
            Route::Direct(addr) => (RouteKind::Lan, addr.clone()),
            Route::Relay(node) => (RouteKind::Relay, node.clone()),
        };
        OpenResult {
            device_id: report.device.id.to_string(),
            device_name: report.device.name.clone(),
            action: report.action.clone(),
            accepted,
            reject_code,
            reason,
            refusal: words.as_ref().map(|w| w.meaning.clone()),
            what_to_do: words.map(|w| w.what_to_do),
            outcome_unknown: report.outcome_unknown(),
            body: String::from_utf8_lossy(&r.body).into_owned(),
            route,
            via,
            latency_ms: report.latency_ms,
            device_time_ms: r.timestamp_ms,
            command_id: hex::encode(r.command.0),
            received_at_ms,
        }
    }
}

/// One device card.
#[derive(Debug, Clone, Serialize, TS)]
pub struct DeviceView {
    /// `lkdev1…`
    pub id: String,
    /// `XXXX-XXXX`, for people.
    pub short_id: String,
    pub name: String,
    /// `lkpk1…` owner keys from the verified chain.
    pub owners: Vec<String>,
    /// Signatures needed to change the owners.
    pub threshold: u32,
    /// This profile's identity is one of the owners.
    pub mine: bool,
    /// The verified chain's length minus one.
    #[ts(type = "number")]
    pub seq: u64,
    /// When the chain was last verified against the nodes (or at claim).
    #[ts(type = "number")]
    pub verified_at_ms: u64,
    /// Addresses on the local network the device announced.
    pub lan_addrs: Vec<String>,
    /// The last answer this app received from it since it started.
    pub last: Option<OpenResult>,
    /// Two histories of its ownership exist (or the door settled one against this app's).
    pub alarm: Option<ForkAlarmView>,
}

/// Whether the door settled a fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum ForkAlarmKind {
    /// Nobody settled it; the app keeps the history it had.
    Unresolved,
    /// The door endorsed the other history; the app switched to it.
    Switched,
}

/// A fork alarm in plain words, as the owner core words it.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ForkAlarmView {
    pub kind: ForkAlarmKind,
    /// The step of the ownership history both changes claim.
    #[ts(type = "number")]
    pub seq: u64,
    pub title: String,
    pub meaning: String,
    pub what_to_do: String,
    #[ts(type = "number")]
    pub first_seen_ms: u64,
}

impl ForkAlarmView {
    pub fn new(alarm: &ForkAlarm, record: &DeviceRecord, me: Option<&PublicKey>) -> Self {
        let owner = me.is_some_and(|k| record.chain.state().is_owner(k));
        let words = alarm.words(&record.name, me, owner);
        ForkAlarmView {
            kind: match alarm.kind {
                ForkKind::Unresolved => ForkAlarmKind::Unresolved,
                ForkKind::Switched => ForkAlarmKind::Switched,
            },
            seq: alarm.seq,
            title: words.title,
            meaning: words.meaning,
            what_to_do: words.what_to_do,
            first_seen_ms: alarm.first_seen_ms,
        }
    }
}

impl DeviceView {
    pub fn new(
        record: &DeviceRecord,
        alarm: Option<&ForkAlarm>,
        me: Option<&PublicKey>,
        last: Option<OpenResult>,
    ) -> Self {
        let state = record.chain.state();
        DeviceView {
            id: record.id.to_string(),
            short_id: record.id.short(),
            name: record.name.clone(),
            owners: state.owners.iter().map(|o| o.to_string()).collect(),
            threshold: u32::from(state.threshold),
            mine: me.is_some_and(|k| state.is_owner(k)),
            seq: state.seq,
            verified_at_ms: record.verified_at_ms,
            lan_addrs: record.addrs.iter().map(|a| a.to_string()).collect(),
            last,
            alarm: alarm.map(|a| ForkAlarmView::new(a, record, me)),
        }
    }
}

/// What a claim did.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ClaimResult {
    pub device_id: String,
    pub short_id: String,
    pub name: String,
    /// The device was already this profile's; nothing was published.
    pub already_owned: bool,
    pub nodes_stored: u32,
    #[ts(type = "number")]
    pub visible_after_ms: u64,
    /// The device itself reported the claim.
    pub device_confirmed: bool,
}

impl From<&ClaimReport> for ClaimResult {
    fn from(r: &ClaimReport) -> Self {
        ClaimResult {
            device_id: r.device.to_string(),
            short_id: r.device.short(),
            name: r.name.clone(),
            already_owned: r.already_owned,
            nodes_stored: u32::try_from(r.nodes_stored).unwrap_or(u32::MAX),
            visible_after_ms: r.visible_after_ms,
            device_confirmed: r.device_confirmed,
        }
    }
}

/// The demo's simulated door, as its panel shows it.
#[derive(Debug, Clone, Serialize, TS)]
pub struct DemoView {
    pub nodes: Vec<String>,
    pub device_name: String,
    pub device_short_id: String,
    /// The device's claim QR as a `data:image/png;base64,…` URL, for the panel to show.
    pub claim_qr: String,
    pub door: DoorView,
    /// A sample booking calendar (an .ics file with stays around today), for the Stays screen.
    pub sample_calendar: String,
    /// A sample provider's request to read the door's smart meter (`LATCHKEY://C/…`), for the
    /// Data sharing screen; `null` when the demo runs without its meter.
    pub sample_consent_link: Option<String>,
    /// Why the demo runs without its smart meter, when it does (e.g. no Mosquitto installed).
    pub meter_problem: Option<String>,
}

/// What the simulated door's actuator has done.
#[derive(Debug, Clone, Serialize, TS)]
pub struct DoorView {
    /// How many times the actuator ran.
    pub unlocks: u32,
    /// When it last ran (ms since the epoch).
    #[ts(type = "number | null")]
    pub last_unlock_ms: Option<u64>,
    /// How long the simulated latch stays open after an unlock.
    #[ts(type = "number")]
    pub open_for_ms: u64,
}

/// A door named in a grant or an invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct DoorRef {
    /// `lkdev1…`
    pub id: String,
    pub name: String,
}

/// A grant this profile issued to a guest.
#[derive(Debug, Clone, Serialize, TS)]
pub struct GrantView {
    /// Hex grant id (revoke takes it).
    pub id: String,
    pub device_id: String,
    pub device_name: String,
    pub guest_name: String,
    pub actions: Vec<String>,
    #[ts(type = "number")]
    pub not_before_ms: u64,
    #[ts(type = "number")]
    pub not_after_ms: u64,
    pub use_limit: Option<u32>,
    #[ts(type = "number")]
    pub created_ms: u64,
    /// `upcoming`, `active`, `expired`, `revoked` or `void`.
    pub status: String,
    /// The guest's key (`lkpk1…`), to recognise it in the audit log.
    pub guest_key: String,
    /// The exact arguments the guest may send besides none (text; empty: none at all).
    pub arguments: Vec<String>,
    /// Every door the grant opens (one grant may cover several).
    pub doors: Vec<DoorRef>,
    /// Weekly windows as `mon-fri 08:00-12:00`; empty: any time in the grant's span.
    pub weekly: Vec<String>,
    /// The IANA zone the weekly windows are in.
    pub tz: Option<String>,
    /// The guest may invite others below this grant (a property manager).
    pub may_delegate: bool,
    /// The held invitation this grant was issued from (delegation), by grant id.
    pub from_grant: Option<String>,
    /// `not_needed` (an old link, bound to no phone), `not_redeemed`, `redeemed` or
    /// `redeemed_contested` (another phone tried the link after it was redeemed).
    pub redemption: String,
    #[ts(type = "number | null")]
    pub redeemed_at_ms: Option<u64>,
    /// The phone key (`lkpk1…`) the link was redeemed by: the key the door's log names when
    /// this guest opens.
    pub redeemed_by: Option<String>,
}

impl From<&IssuedGrant> for GrantView {
    fn from(g: &IssuedGrant) -> Self {
        let body = &g.grant.body;
        GrantView {
            id: g.id.to_string(),
            device_id: g.device.to_string(),
            device_name: g.device_name.clone(),
            guest_name: g.guest_name.clone(),
            actions: body.actions.clone(),
            not_before_ms: body.not_before_ms,
            not_after_ms: body.not_after_ms,
            use_limit: body.use_limit,
            created_ms: g.created_ms,
            status: g.status.as_str().to_owned(),
            guest_key: body.subject.to_string(),
            arguments: latchkey_owner::pinned_by(&g.grant)
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            doors: g
                .doors
                .iter()
                .map(|(id, name)| DoorRef {
                    id: id.to_string(),
                    name: name.clone(),
                })
                .collect(),
            weekly: g.grant.schedule().map(|s| s.to_specs()).unwrap_or_default(),
            tz: g.grant.schedule().map(|s| s.tz_name().to_owned()),
            may_delegate: body.delegation_depth > 0,
            from_grant: g.parent.map(|p| p.to_string()),
            redemption: g.redemption.as_str().replace('-', "_"),
            redeemed_at_ms: match &g.redemption {
                latchkey_owner::Redemption::Redeemed { at_ms, .. } => *at_ms,
                _ => None,
            },
            redeemed_by: match &g.redemption {
                latchkey_owner::Redemption::Redeemed { phone, .. } => phone.map(|k| k.to_string()),
                _ => None,
            },
        }
    }
}

/// An invitation just issued: the link to share and its QR code.
#[derive(Debug, Clone, Serialize, TS)]
pub struct InvitationView {
    /// `LATCHKEY://I/…` (short, bound to the first phone that redeems it) or the old
    /// self-contained `latchkey://invite/…`.
    pub link: String,
    /// The link as a QR code, a `data:image/png;base64,…` URL.
    pub qr: String,
    /// The QR code's version (1–40; 10 or less scans from a phone screen at arm's length).
    pub qr_version: u8,
    pub grant: GrantView,
}

/// A link ready to share: the text and its QR code, large enough to scan.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ShareView {
    /// The door it opens, when a stay has one link per door.
    pub door: Option<String>,
    pub link: String,
    /// A `data:image/png;base64,…` URL.
    pub qr: String,
    /// As in [`InvitationView`].
    pub qr_version: u8,
}

/// One invitation of a stay (the link itself stays in the keychain until it is shared).
#[derive(Debug, Clone, Serialize, TS)]
pub struct StayLinkView {
    pub device_id: String,
    pub door: String,
    /// Hex grant id.
    pub grant_id: String,
    /// The link is kept and can be shared (not revoked).
    pub shareable: bool,
}

impl From<&latchkey_owner::stays::StayLink> for StayLinkView {
    fn from(l: &latchkey_owner::stays::StayLink) -> Self {
        StayLinkView {
            device_id: l.device.to_string(),
            door: l.device_name.clone(),
            grant_id: l.grant.to_string(),
            shareable: l.link.is_some(),
        }
    }
}

/// One stay from the booking calendar, with its guest's invitation.
#[derive(Debug, Clone, Serialize, TS)]
pub struct StayView {
    /// The calendar it came from (a URL, a path, or a chosen file's name); with `uid` it names
    /// the stay.
    pub source: String,
    /// The calendar event's UID (stable across exports).
    pub uid: String,
    /// The name the invitation carries (from the event's summary, with the dates).
    pub guest_name: String,
    /// The event's summary as exported.
    pub summary: String,
    #[ts(type = "number")]
    pub check_in_ms: u64,
    #[ts(type = "number")]
    pub check_out_ms: u64,
    /// The zone the check-in and check-out times are in.
    pub tz: String,
    /// `upcoming`, `current` or `past`.
    pub phase: String,
    pub links: Vec<StayLinkView>,
    /// `not_sent`, `sent`, `redeemed`, `opened` or `revoked` (the core's words, `_` for space).
    pub guest_status: String,
    /// When the link was shared or the guest first opened, for `sent` and `opened`.
    #[ts(type = "number | null")]
    pub status_at_ms: Option<u64>,
}

impl From<&latchkey_owner::stays::StayView> for StayView {
    fn from(v: &latchkey_owner::stays::StayView) -> Self {
        use latchkey_owner::stays::StayStatus;
        let status_at_ms = match v.status {
            StayStatus::Sent { at_ms } | StayStatus::Opened { at_ms } => Some(at_ms),
            StayStatus::Redeemed { at_ms } => at_ms,
            StayStatus::NotSent | StayStatus::Revoked => None,
        };
        StayView {
            source: v.source.clone(),
            uid: v.uid.clone(),
            guest_name: v.guest_name.clone(),
            summary: v.summary.clone(),
            check_in_ms: v.from_ms,
            check_out_ms: v.until_ms,
            tz: v.tz.clone(),
            phase: v.phase.as_str().to_owned(),
            links: v.links.iter().map(StayLinkView::from).collect(),
            guest_status: v.status.as_str().replace(' ', "_"),
            status_at_ms,
        }
    }
}

/// What one calendar sync did to one event.
#[derive(Debug, Clone, Serialize, TS)]
pub struct StayChangeView {
    /// `added`, `unchanged`, `reissued` (the dates changed), `revoked` (gone from the
    /// calendar), `skipped-blocked` (a closed period, no stay) or `past` (over already).
    pub change: String,
    pub uid: String,
    pub guest_name: String,
    #[ts(type = "number")]
    pub check_in_ms: u64,
    #[ts(type = "number")]
    pub check_out_ms: u64,
}

/// What a calendar sync did, and every stay after it.
#[derive(Debug, Clone, Serialize, TS)]
pub struct StaysSyncResult {
    pub changes: Vec<StayChangeView>,
    pub stays: Vec<StayView>,
    /// Writes the registry nodes acknowledged (revocations, invitation blobs).
    pub node_writes: u32,
    #[ts(type = "number")]
    pub elapsed_ms: u64,
}

impl StaysSyncResult {
    pub fn new(
        report: &latchkey_owner::stays::StaySyncReport,
        stays: &[latchkey_owner::stays::StayView],
    ) -> Self {
        StaysSyncResult {
            changes: report
                .lines
                .iter()
                .map(|l| StayChangeView {
                    change: l.change.as_str().to_owned(),
                    uid: l.uid.clone(),
                    guest_name: if l.change == latchkey_owner::stays::StayChange::SkippedBlocked {
                        l.summary.clone()
                    } else {
                        l.guest_name.clone()
                    },
                    check_in_ms: l.from_ms,
                    check_out_ms: l.until_ms,
                })
                .collect(),
            stays: stays.iter().map(StayView::from).collect(),
            node_writes: u32::try_from(report.node_writes).unwrap_or(u32::MAX),
            elapsed_ms: report.elapsed_ms,
        }
    }
}

/// One thing a door reported about a guest (signed by the door, delivered to the owners).
#[derive(Debug, Clone, Serialize, TS)]
pub struct ActivityView {
    pub id: String,
    pub device_id: String,
    pub device_name: String,
    /// The door's clock when it happened.
    #[ts(type = "number")]
    pub time_ms: u64,
    pub guest_name: Option<String>,
    pub grant_id: Option<String>,
    /// `first_open`, `redeemed` or `refused`.
    pub kind: String,
    /// The whole event in plain words, as the owner core words it.
    pub text: String,
}

impl From<&latchkey_owner::events::EventView> for ActivityView {
    fn from(e: &latchkey_owner::events::EventView) -> Self {
        ActivityView {
            id: format!("{}:{}", e.device, e.seq),
            device_id: e.device.clone(),
            device_name: e.door.clone(),
            // A door without a clock: when this app took the event in.
            time_ms: e.time_ms.unwrap_or(e.received_ms),
            guest_name: Some(e.guest_name.clone()),
            grant_id: Some(e.grant.clone()),
            kind: e.kind.clone(),
            text: e.what.clone(),
        }
    }
}

/// An invitation this profile holds as a guest.
#[derive(Debug, Clone, Serialize, TS)]
pub struct HeldInvitationView {
    pub id: String,
    pub device_id: String,
    pub device_name: String,
    pub guest_name: String,
    pub actions: Vec<String>,
    #[ts(type = "number")]
    pub not_before_ms: u64,
    #[ts(type = "number")]
    pub not_after_ms: u64,
    pub status: String,
    pub already_held: bool,
    /// Every door the invitation opens.
    pub doors: Vec<DoorRef>,
    /// The host let this guest invite others below it (a property manager).
    pub may_delegate: bool,
    /// The last answer this app received from the device since it started.
    pub last: Option<OpenResult>,
}

impl HeldInvitationView {
    pub fn new(h: &HeldInvitation, last: Option<OpenResult>) -> Self {
        HeldInvitationView {
            id: h.id.to_string(),
            device_id: h.device.to_string(),
            device_name: h.device_name.clone(),
            guest_name: h.guest_name.clone(),
            actions: h.actions.clone(),
            not_before_ms: h.not_before_ms,
            not_after_ms: h.not_after_ms,
            status: h.status.as_str().to_owned(),
            already_held: h.already_held,
            doors: h
                .doors
                .iter()
                .map(|d| DoorRef {
                    id: d.device.to_string(),
                    name: d.name.clone(),
                })
                .collect(),
            may_delegate: h.may_delegate,
            last,
        }
    }
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct RevokeResult {
    pub grant_id: String,
    pub already_revoked: bool,
    pub nodes_stored: u32,
    /// The device took the revocation on the local network and refuses the grant already;
    /// else it will at its next check of the registry.
    pub device_told: bool,
    /// The same in words ("the door already knows" / "the door will learn at its next check…").
    pub door: String,
    /// Why the registry nodes did not store it, when the door took it anyway.
    pub nodes_error: Option<String>,
}

impl From<&RevokeReport> for RevokeResult {
    fn from(r: &RevokeReport) -> Self {
        RevokeResult {
            grant_id: r.grant.to_string(),
            already_revoked: r.already_revoked,
            nodes_stored: u32::try_from(r.nodes_stored).unwrap_or(u32::MAX),
            device_told: r.door.knows(),
            door: r.door.describe(),
            nodes_error: r.nodes_error.clone(),
        }
    }
}

/// One entry of a device's signed audit log, in plain words.
#[derive(Debug, Clone, Serialize, TS)]
pub struct AuditEntryView {
    #[ts(type = "number")]
    pub seq: u64,
    /// Device time, if its clock is set.
    #[ts(type = "number | null")]
    pub time_ms: Option<u64>,
    /// `decision`, `about_to_run`, `refusals`, `pruned` or `era`.
    pub kind: String,
    /// The sender's key (`lkpk1…`), when the entry names one.
    pub sender: Option<String>,
    /// The action, for entries about one command.
    pub action: String,
    /// False only for a refused command.
    pub accepted: bool,
    /// `Accepted` or the refusal's name.
    pub outcome: String,
    /// `lan` or `relay`, for entries about one command.
    pub route: Option<RouteKind>,
    /// E.g. "1,234 unreadable envelopes refused between 02:00 and 02:01 UTC".
    pub text: String,
}

fn utc_minute(ms: u64) -> String {
    format!("{:02}:{:02} UTC", ms / 3_600_000 % 24, ms / 60_000 % 60)
}

/// A verified page of a device's audit log, newest entry first.
#[derive(Debug, Clone, Serialize, TS)]
pub struct AuditView {
    pub device_id: String,
    pub entries: Vec<AuditEntryView>,
}

impl From<&AuditReport> for AuditView {
    fn from(r: &AuditReport) -> Self {
        let lines = latchkey_owner::audit::describe_entries(&r.entries, &utc_minute);
        let entries = lines
            .into_iter()
            .rev()
            .map(|l| {
                let action = l.action.clone().unwrap_or_default();
                AuditEntryView {
                    seq: l.seq,
                    time_ms: l.time_ms,
                    kind: l.kind.to_owned(),
                    sender: l.sender.map(|k| k.to_string()),
                    action,
                    accepted: l.code == 0,
                    outcome: if l.code == 0 {
                        "Accepted".into()
                    } else {
                        reject_name(l.code)
                    },
                    route: l.via.map(|v| match v {
                        Via::Local => RouteKind::Lan,
                        Via::Relay => RouteKind::Relay,
                    }),
                    text: l.text,
                }
            })
            .collect();
        AuditView {
            device_id: r.device.id.to_string(),
            entries,
        }
    }
}

/// What this profile can still add to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ProposalPart {
    /// A current owner who has not signed: approve.
    Approve,
    /// A key the change adds: accept (nothing changes until every added key has).
    Accept,
    /// Signed already, or no say in it.
    Nothing,
}

/// An owner change waiting for signatures.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ProposalView {
    /// Hex op id (approve and accept take it).
    pub id: String,
    pub device_id: String,
    pub device_name: String,
    /// `amend-owners` or `transfer`.
    pub kind: String,
    pub owners: Vec<String>,
    pub threshold: u32,
    /// Every signature it carries (owners' and added keys').
    pub signatures: u32,
    /// Current owners who approved it, of `needed`.
    pub approvals: u32,
    pub needed: u32,
    /// The current owner who proposed it (`lkpk1…`), when known.
    pub proposed_by: Option<String>,
    pub proposed_by_me: bool,
    /// Keys the change adds; each must accept it.
    pub new_owners: Vec<String>,
    /// Added keys that have not accepted yet.
    pub awaiting_acceptance: Vec<String>,
    pub signed_by_me: bool,
    pub my_part: ProposalPart,
}

impl From<&Proposal> for ProposalView {
    fn from(p: &Proposal) -> Self {
        let keys = |list: &[PublicKey]| list.iter().map(|o| o.to_string()).collect();
        ProposalView {
            id: p.id.to_string(),
            device_id: p.device.to_string(),
            device_name: p.device_name.clone(),
            kind: p.kind.to_owned(),
            owners: keys(&p.owners),
            threshold: u32::from(p.threshold),
            signatures: u32::try_from(p.signed_by.len()).unwrap_or(u32::MAX),
            approvals: u32::try_from(p.approvals).unwrap_or(u32::MAX),
            needed: u32::from(p.needed),
            proposed_by: p.proposed_by.map(|k| k.to_string()),
            proposed_by_me: p.proposed_by_me,
            new_owners: keys(&p.new_owners),
            awaiting_acceptance: keys(&p.awaiting_acceptance),
            signed_by_me: p.signed_by_me,
            my_part: match p.my_part {
                MyPart::Approve => ProposalPart::Approve,
                MyPart::Accept => ProposalPart::Accept,
                MyPart::Nothing => ProposalPart::Nothing,
            },
        }
    }
}

/// A device's owners, as verified from the nodes just now, with waiting proposals.
#[derive(Debug, Clone, Serialize, TS)]
pub struct OwnersDetail {
    pub owners: Vec<String>,
    pub threshold: u32,
    pub me: Option<String>,
    pub proposals: Vec<ProposalView>,
}

impl From<&OwnersView> for OwnersDetail {
    fn from(v: &OwnersView) -> Self {
        OwnersDetail {
            owners: v.owners.iter().map(|o| o.to_string()).collect(),
            threshold: u32::from(v.threshold),
            me: v.me.map(|k| k.to_string()),
            proposals: v.proposals.iter().map(ProposalView::from).collect(),
        }
    }
}

/// What proposing, approving or accepting an owner change did.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ProposalResult {
    pub proposal: ProposalView,
    /// Enough owners signed and every added key accepted: the change is in effect.
    pub applied: bool,
    /// Once applied: whether the door itself already knows, in words.
    pub door: Option<String>,
}

impl From<&ProposalReport> for ProposalResult {
    fn from(r: &ProposalReport) -> Self {
        ProposalResult {
            proposal: ProposalView::from(&r.proposal),
            applied: r.applied,
            door: r.door.as_ref().map(|d| d.describe()),
        }
    }
}

fn reject_name(code: u16) -> String {
    RejectCode::from_u16(code)
        .map(|c| format!("{c:?}"))
        .unwrap_or_else(|| format!("code {code}"))
}

/// A provider's request to read one of a device's data streams, in the owner core's words.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct ConsentRequestView {
    /// Hex consent id (64): approve, dismiss and revoke take it.
    pub id: String,
    /// `lkdev1…`
    pub device: String,
    pub device_name: String,
    /// The stream asked for, e.g. `p1` (the smart meter's port).
    pub stream: String,
    /// The provider's name as it signed it (not checked by anyone: the key is what is proven).
    pub provider_name: String,
    pub provider_url: String,
    /// The provider's signing key, `lkpk1…`.
    pub provider_key: String,
    pub purpose_code: u16,
    /// The purpose code in words (`insights`, `billing`, …).
    pub purpose_label: String,
    /// Why, in the provider's own words.
    pub purpose: String,
    /// How many days the provider says it keeps readings (0: not kept).
    pub retention_days: u32,
    /// When the consent ends by itself; `null`: until revoked.
    #[ts(type = "number | null")]
    pub until_ms: Option<u64>,
    /// The provider also asks for readings from before the consent.
    pub history: bool,
    /// Terms the provider offers (recorded, not settled), e.g. "500 units per hour".
    pub terms: Option<String>,
    /// The whole request as one plain sentence.
    pub summary: String,
}

/// A consent given for a device's stream, and whether it still lets the provider read.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct ConsentView {
    pub id: String,
    pub request: ConsentRequestView,
    /// `active`, `revoked`, `expired` or `ended` (the device changed hands).
    pub state: String,
    #[ts(type = "number")]
    pub given_ms: u64,
    /// The owner who gave it, `lkpk1…`.
    pub given_by: String,
    #[ts(type = "number | null")]
    pub ended_ms: Option<u64>,
    /// Whether the device has been told the consent's latest change: `delivered`, `waiting`
    /// (told at the next contact), `refused` or `unknown` (another owner's doing).
    pub delivery: String,
    /// What the delivery state means, in words (`null` when delivered).
    pub delivery_note: Option<String>,
}

/// One entry of a device's consent log, verified against its owners.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct ConsentLogEntryView {
    #[ts(type = "number")]
    pub seq: u64,
    #[ts(type = "number")]
    pub time_ms: u64,
    /// `given`, `revoked` or `expired`.
    pub kind: String,
    pub consent_id: String,
    pub provider_name: String,
    pub stream: String,
    /// The purpose label and the provider's words, e.g. `insights: monthly report`.
    pub purpose: String,
    /// The owner who signed the entry, `lkpk1…`.
    pub signer: String,
    /// That owner is this profile.
    pub signer_is_me: bool,
    /// Hex hash of the entry (the next one links to it).
    pub hash: String,
}

/// The owner's own meter, read with the owner's copy of the stream key.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct MeterView {
    pub device: String,
    pub stream: String,
    /// Power drawn now (kW; negative: returned to the grid).
    pub power_kw: Option<f64>,
    /// Energy drawn since local midnight (kWh).
    pub energy_today_kwh: Option<f64>,
    /// The last 10 minutes: `[ms since the epoch, kW]`, oldest first.
    #[ts(type = "Array<[number, number]>")]
    pub series: Vec<(u64, f64)>,
    /// The stream key the last reading was sealed with (it changes at each revocation).
    pub key_id: Option<u32>,
    #[ts(type = "number | null")]
    pub last_seq: Option<u64>,
    /// Readings opened since the app started watching.
    #[ts(type = "number")]
    pub readings: u64,
    /// When the last reading was taken (meter time, else arrival), ms since the epoch.
    #[ts(type = "number | null")]
    pub last_reading_ms: Option<u64>,
    /// Why no reading arrives, in plain words, when none does.
    pub problem: Option<String>,
}

impl From<&latchkey_owner::ConsentRequestView> for ConsentRequestView {
    fn from(r: &latchkey_owner::ConsentRequestView) -> Self {
        ConsentRequestView {
            id: r.id.clone(),
            device: r.device.clone(),
            device_name: r.device_name.clone(),
            stream: r.stream.clone(),
            provider_name: r.provider_name.clone(),
            provider_url: r.provider_url.clone(),
            provider_key: r.provider_key.clone(),
            purpose_code: r.purpose_code,
            purpose_label: r.purpose_label.clone(),
            purpose: r.purpose.clone(),
            retention_days: r.retention_days,
            until_ms: r.until_ms,
            history: r.history,
            terms: r.terms.clone(),
            summary: r.summary.clone(),
        }
    }
}

impl From<&latchkey_owner::ConsentView> for ConsentView {
    fn from(c: &latchkey_owner::ConsentView) -> Self {
        ConsentView {
            id: c.id.clone(),
            request: ConsentRequestView::from(&c.request),
            state: c.state.clone(),
            given_ms: c.given_ms,
            given_by: c.given_by.clone(),
            ended_ms: c.ended_ms,
            delivery: c.delivery.clone(),
            delivery_note: c.delivery_note.clone(),
        }
    }
}

impl From<&latchkey_owner::ConsentLogEntryView> for ConsentLogEntryView {
    fn from(e: &latchkey_owner::ConsentLogEntryView) -> Self {
        ConsentLogEntryView {
            seq: e.seq,
            time_ms: e.time_ms,
            kind: e.kind.clone(),
            consent_id: e.consent_id.clone(),
            provider_name: e.provider_name.clone(),
            stream: e.stream.clone(),
            purpose: e.purpose.clone(),
            signer: e.signer.clone(),
            signer_is_me: e.signer_is_me,
            hash: e.hash.clone(),
        }
    }
}

impl MeterView {
    pub fn new(device: &str, stream: &str, s: &latchkey_owner::MeterSnapshot) -> Self {
        MeterView {
            device: device.to_owned(),
            stream: stream.to_owned(),
            power_kw: s.power_kw,
            energy_today_kwh: s.energy_today_kwh,
            series: s.series.clone(),
            key_id: s.key_id,
            last_seq: s.last_seq,
            readings: s.readings,
            last_reading_ms: s.last_reading_ms,
            problem: s.problem.clone(),
        }
    }
}

/// Which stage a claim has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ClaimStageKind {
    CheckingKeys,
    Publishing,
    WaitingForQuorum,
    TellingDevice,
}

/// Sent as event `claim-progress` while a claim runs.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ClaimProgress {
    pub stage: ClaimStageKind,
    /// Nodes that stored the claim, once published.
    pub stored_on: Option<u32>,
}

impl From<latchkey_owner::ClaimStage> for ClaimProgress {
    fn from(stage: latchkey_owner::ClaimStage) -> Self {
        use latchkey_owner::ClaimStage as S;
        let (stage, stored_on) = match stage {
            S::CheckingKeys => (ClaimStageKind::CheckingKeys, None),
            S::Publishing => (ClaimStageKind::Publishing, None),
            S::WaitingForQuorum { stored_on } => (
                ClaimStageKind::WaitingForQuorum,
                Some(u32::try_from(stored_on).unwrap_or(u32::MAX)),
            ),
            S::TellingDevice => (ClaimStageKind::TellingDevice, None),
        };
        ClaimProgress { stage, stored_on }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::AppInfo;
    use crate::error::CommandError;

    const BINDINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ui/src/lib/bindings.ts");

    fn render() -> String {
        // Millisecond times and counters fit a JS number (2^53) for millennia.
        let cfg = ts_rs::Config::new().with_large_int("number");
        let decls = [
            AppInfo::decl(&cfg),
            CommandError::decl(&cfg),
            Status::decl(&cfg),
            NewIdentity::decl(&cfg),
            Identity::decl(&cfg),
            RecoveryWords::decl(&cfg),
            Presence::decl(&cfg),
            RouteKind::decl(&cfg),
            OpenResult::decl(&cfg),
            DeviceView::decl(&cfg),
            ForkAlarmKind::decl(&cfg),
            ForkAlarmView::decl(&cfg),
            ClaimResult::decl(&cfg),
            DemoView::decl(&cfg),
            DoorView::decl(&cfg),
            DoorRef::decl(&cfg),
            GrantView::decl(&cfg),
            InvitationView::decl(&cfg),
            HeldInvitationView::decl(&cfg),
            RevokeResult::decl(&cfg),
            AuditEntryView::decl(&cfg),
            AuditView::decl(&cfg),
            ProposalPart::decl(&cfg),
            ProposalView::decl(&cfg),
            OwnersDetail::decl(&cfg),
            ProposalResult::decl(&cfg),
            ShareView::decl(&cfg),
            StayLinkView::decl(&cfg),
            StayView::decl(&cfg),
            StayChangeView::decl(&cfg),
            StaysSyncResult::decl(&cfg),
            ActivityView::decl(&cfg),
            crate::camera::CameraFrame::decl(&cfg),
            ClaimStageKind::decl(&cfg),
            ClaimProgress::decl(&cfg),
            ConsentRequestView::decl(&cfg),
            ConsentView::decl(&cfg),
            ConsentLogEntryView::decl(&cfg),
            MeterView::decl(&cfg),
        ];
        let mut out = String::from(
            "// Generated from src-tauri/src/views.rs by its test `bindings_are_current`;\n\
             // do not edit. Regenerate: UPDATE_BINDINGS=1 cargo test -p latchkey-app bindings\n",
        );
        for decl in decls {
            out.push_str("\nexport ");
            out.push_str(&decl);
            out.push('\n');
        }
        out
    }

    #[test]
    fn bindings_are_current() {
        let fresh = render();
        if std::env::var_os("UPDATE_BINDINGS").is_some() {
            std::fs::write(BINDINGS, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(BINDINGS).unwrap_or_default();
        assert!(
            committed == fresh,
            "ui/src/lib/bindings.ts is stale; regenerate it with \
             `UPDATE_BINDINGS=1 cargo test -p latchkey-app bindings` and commit it"
        );
    }

    #[test]
    fn the_consent_views_keep_the_core_s_words_and_the_meter_its_series() {
        let entry = latchkey_owner::ConsentLogEntryView {
            seq: 2,
            time_ms: 1_700_000_000_000,
            kind: "revoked".into(),
            consent_id: "ab".repeat(32),
            provider_name: "Watt Insights".into(),
            stream: "p1".into(),
            purpose: "insights: monthly report".into(),
            signer: "lkpk1someone".into(),
            signer_is_me: true,
            hash: "cd".repeat(32),
        };
        let ours = serde_json::to_value(ConsentLogEntryView::from(&entry)).unwrap();
        // The same field names and values the core serializes: the UI reads either.
        assert_eq!(ours, serde_json::to_value(&entry).unwrap());
        let snap = latchkey_owner::MeterSnapshot {
            power_kw: Some(0.42),
            energy_today_kwh: Some(1.5),
            series: vec![(1_000, 0.4), (2_000, 0.42)],
            key_id: Some(2),
            last_seq: Some(7),
            readings: 7,
            last_reading_ms: Some(2_000),
            problem: None,
        };
        let view = serde_json::to_value(MeterView::new("lkdev1x", "p1", &snap)).unwrap();
        assert_eq!(
            view["series"],
            serde_json::json!([[1000, 0.4], [2000, 0.42]])
        );
        assert_eq!(view["key_id"], 2);
        assert_eq!(view["device"], "lkdev1x");
        assert!(view["problem"].is_null());
    }

    #[test]
    fn routes_serialize_as_the_ui_expects() {
        assert_eq!(serde_json::to_value(RouteKind::Lan).unwrap(), "lan");
        assert_eq!(serde_json::to_value(RouteKind::Relay).unwrap(), "relay");
        assert_eq!(
            serde_json::to_value(ClaimProgress::from(
                latchkey_owner::ClaimStage::WaitingForQuorum { stored_on: 3 }
            ))
            .unwrap(),
            serde_json::json!({"stage": "waiting_for_quorum", "stored_on": 3})
        );
    }
}
