// Generated from src-tauri/src/views.rs by its test `bindings_are_current`;
// do not edit. Regenerate: UPDATE_BINDINGS=1 cargo test -p latchkey-app bindings

export type AppInfo = { name: string, version: string, 
/**
 * The wire protocol version this build speaks, so a person can match it
 * against a device's when the two disagree.
 */
protocol_version: number, 
/**
 * A phone build: the UI scans claim codes through the phone's own scanner.
 */
mobile: boolean, };

export type CommandError = { code: string, message: string, };

export type Status = { 
/**
 * The keychain entry's name (not a secret).
 */
profile_id: string, 
/**
 * The recovery phrase is in the OS keychain.
 */
has_identity: boolean, 
/**
 * The person typed back words of the phrase (or restored it), so it is written down.
 */
backup_confirmed: boolean, 
/**
 * `lkpk1…`, when there is an identity.
 */
owner_key: string | null, nodes: Array<string>, 
/**
 * How many of `nodes`, chosen at random, each ownership check asks (at most all of them).
 */
nodes_to_ask: number, 
/**
 * Why the OS keychain cannot be used, if it cannot (the app is unusable without it).
 */
keychain_problem: string | null, 
/**
 * Invitations this profile holds as a guest (a guest needs no identity of its own).
 */
invitations: number, 
/**
 * Started with `--demo`: local nodes and a simulated door run inside the app.
 */
demo: boolean, };

export type NewIdentity = { words: Array<string>, 
/**
 * 1-based positions to confirm, ascending.
 */
confirm_positions: Array<number>, owner_key: string, };

export type Identity = { owner_key: string, };

export type RecoveryWords = { words: Array<string>, 
/**
 * Whether the OS confirmed the owner before the words left the keychain.
 */
presence: Presence, };

export type Presence = "confirmed" | "not-offered";

export type RouteKind = "lan" | "relay";

export type OpenResult = { device_id: string, device_name: string, action: string, accepted: boolean, 
/**
 * The device's refusal, by name (`NotAuthorized`, …), when it refused.
 */
reject_code: string | null, reason: string | null, 
/**
 * The refusal in plain words (what it means), from the owner core's wording.
 */
refusal: string | null, 
/**
 * What the person can do about the refusal.
 */
what_to_do: string | null, 
/**
 * The command reached the door but its answer was lost; it was not sent again, so it ran
 * at most once (the door's log says what happened).
 */
outcome_unknown: boolean, 
/**
 * What the device's actuator reported (UTF-8, lossy).
 */
body: string, route: RouteKind, 
/**
 * The address or node the answer came through.
 */
via: string, latency_ms: number, 
/**
 * The device's clock when it answered, if it has one.
 */
device_time_ms: number | null, 
/**
 * Hex id of the command the device signed its answer for.
 */
command_id: string, 
/**
 * When this app received the answer.
 */
received_at_ms: number, };

export type DeviceView = { 
/**
 * `lkdev1…`
 */
id: string, 
/**
 * `XXXX-XXXX`, for people.
 */
short_id: string, name: string, 
/**
 * `lkpk1…` owner keys from the verified chain.
 */
owners: Array<string>, 
/**
 * Signatures needed to change the owners.
 */
threshold: number, 
/**
 * This profile's identity is one of the owners.
 */
mine: boolean, 
/**
 * The verified chain's length minus one.
 */
seq: number, 
/**
 * When the chain was last verified against the nodes (or at claim).
 */
verified_at_ms: number, 
/**
 * Addresses on the local network the device announced.
 */
lan_addrs: Array<string>, 
/**
 * The last answer this app received from it since it started.
 */
last: OpenResult | null, 
/**
 * Two histories of its ownership exist (or the door settled one against this app's).
 */
alarm: ForkAlarmView | null, };

export type ForkAlarmKind = "unresolved" | "switched";

export type ForkAlarmView = { kind: ForkAlarmKind, 
/**
 * The step of the ownership history both changes claim.
 */
seq: number, title: string, meaning: string, what_to_do: string, first_seen_ms: number, };

export type ClaimResult = { device_id: string, short_id: string, name: string, 
/**
 * The device was already this profile's; nothing was published.
 */
already_owned: boolean, nodes_stored: number, visible_after_ms: number, 
/**
 * The device itself reported the claim.
 */
device_confirmed: boolean, };

export type DemoView = { nodes: Array<string>, device_name: string, device_short_id: string, 
/**
 * The device's claim QR as a `data:image/png;base64,…` URL, for the panel to show.
 */
claim_qr: string, door: DoorView, 
/**
 * A sample booking calendar (an .ics file with stays around today), for the Stays screen.
 */
sample_calendar: string, 
/**
 * A sample provider's request to read the door's smart meter (`LATCHKEY://C/…`), for the
 * Data sharing screen; `null` when the demo runs without its meter.
 */
sample_consent_link: string | null, 
/**
 * Why the demo runs without its smart meter, when it does (e.g. no Mosquitto installed).
 */
meter_problem: string | null, };

export type DoorView = { 
/**
 * How many times the actuator ran.
 */
unlocks: number, 
/**
 * When it last ran (ms since the epoch).
 */
last_unlock_ms: number | null, 
/**
 * How long the simulated latch stays open after an unlock.
 */
open_for_ms: number, };

export type DoorRef = { 
/**
 * `lkdev1…`
 */
id: string, name: string, };

export type GrantView = { 
/**
 * Hex grant id (revoke takes it).
 */
id: string, device_id: string, device_name: string, guest_name: string, actions: Array<string>, not_before_ms: number, not_after_ms: number, use_limit: number | null, created_ms: number, 
/**
 * `upcoming`, `active`, `expired`, `revoked` or `void`.
 */
status: string, 
/**
 * The guest's key (`lkpk1…`), to recognise it in the audit log.
 */
guest_key: string, 
/**
 * The exact arguments the guest may send besides none (text; empty: none at all).
 */
arguments: Array<string>, 
/**
 * Every door the grant opens (one grant may cover several).
 */
doors: Array<DoorRef>, 
/**
 * Weekly windows as `mon-fri 08:00-12:00`; empty: any time in the grant's span.
 */
weekly: Array<string>, 
/**
 * The IANA zone the weekly windows are in.
 */
tz: string | null, 
/**
 * The guest may invite others below this grant (a property manager).
 */
may_delegate: boolean, 
/**
 * The held invitation this grant was issued from (delegation), by grant id.
 */
from_grant: string | null, 
/**
 * `not_needed` (an old link, bound to no phone), `not_redeemed`, `redeemed` or
 * `redeemed_contested` (another phone tried the link after it was redeemed).
 */
redemption: string, redeemed_at_ms: number | null, 
/**
 * The phone key (`lkpk1…`) the link was redeemed by: the key the door's log names when
 * this guest opens.
 */
redeemed_by: string | null, };

export type InvitationView = { 
/**
 * `LATCHKEY://I/…` (short, bound to the first phone that redeems it) or the old
 * self-contained `latchkey://invite/…`.
 */
link: string, 
/**
 * The link as a QR code, a `data:image/png;base64,…` URL.
 */
qr: string, 
/**
 * The QR code's version (1–40; 10 or less scans from a phone screen at arm's length).
 */
qr_version: number, grant: GrantView, };

export type HeldInvitationView = { id: string, device_id: string, device_name: string, guest_name: string, actions: Array<string>, not_before_ms: number, not_after_ms: number, status: string, already_held: boolean, 
/**
 * Every door the invitation opens.
 */
doors: Array<DoorRef>, 
/**
 * The host let this guest invite others below it (a property manager).
 */
may_delegate: boolean, 
/**
 * The last answer this app received from the device since it started.
 */
last: OpenResult | null, };

export type RevokeResult = { grant_id: string, already_revoked: boolean, nodes_stored: number, 
/**
 * The device took the revocation on the local network and refuses the grant already;
 * else it will at its next check of the registry.
 */
device_told: boolean, 
/**
 * The same in words ("the door already knows" / "the door will learn at its next check…").
 */
door: string, 
/**
 * Why the registry nodes did not store it, when the door took it anyway.
 */
nodes_error: string | null, };

export type AuditEntryView = { seq: number, 
/**
 * Device time, if its clock is set.
 */
time_ms: number | null, 
/**
 * `decision`, `about_to_run`, `refusals`, `pruned` or `era`.
 */
kind: string, 
/**
 * The sender's key (`lkpk1…`), when the entry names one.
 */
sender: string | null, 
/**
 * The action, for entries about one command.
 */
action: string, 
/**
 * False only for a refused command.
 */
accepted: boolean, 
/**
 * `Accepted` or the refusal's name.
 */
outcome: string, 
/**
 * `lan` or `relay`, for entries about one command.
 */
route: RouteKind | null, 
/**
 * E.g. "1,234 unreadable envelopes refused between 02:00 and 02:01 UTC".
 */
text: string, };

export type AuditView = { device_id: string, entries: Array<AuditEntryView>, };

export type ProposalPart = "approve" | "accept" | "nothing";

export type ProposalView = { 
/**
 * Hex op id (approve and accept take it).
 */
id: string, device_id: string, device_name: string, 
/**
 * `amend-owners` or `transfer`.
 */
kind: string, owners: Array<string>, threshold: number, 
/**
 * Every signature it carries (owners' and added keys').
 */
signatures: number, 
/**
 * Current owners who approved it, of `needed`.
 */
approvals: number, needed: number, 
/**
 * The current owner who proposed it (`lkpk1…`), when known.
 */
proposed_by: string | null, proposed_by_me: boolean, 
/**
 * Keys the change adds; each must accept it.
 */
new_owners: Array<string>, 
/**
 * Added keys that have not accepted yet.
 */
awaiting_acceptance: Array<string>, signed_by_me: boolean, my_part: ProposalPart, };

export type OwnersDetail = { owners: Array<string>, threshold: number, me: string | null, proposals: Array<ProposalView>, };

export type ProposalResult = { proposal: ProposalView, 
/**
 * Enough owners signed and every added key accepted: the change is in effect.
 */
applied: boolean, 
/**
 * Once applied: whether the door itself already knows, in words.
 */
door: string | null, };

export type ShareView = { 
/**
 * The door it opens, when a stay has one link per door.
 */
door: string | null, link: string, 
/**
 * A `data:image/png;base64,…` URL.
 */
qr: string, 
/**
 * As in [`InvitationView`].
 */
qr_version: number, };

export type StayLinkView = { device_id: string, door: string, 
/**
 * Hex grant id.
 */
grant_id: string, 
/**
 * The link is kept and can be shared (not revoked).
 */
shareable: boolean, };

export type StayView = { 
/**
 * The calendar it came from (a URL, a path, or a chosen file's name); with `uid` it names
 * the stay.
 */
source: string, 
/**
 * The calendar event's UID (stable across exports).
 */
uid: string, 
/**
 * The name the invitation carries (from the event's summary, with the dates).
 */
guest_name: string, 
/**
 * The event's summary as exported.
 */
summary: string, check_in_ms: number, check_out_ms: number, 
/**
 * The zone the check-in and check-out times are in.
 */
tz: string, 
/**
 * `upcoming`, `current` or `past`.
 */
phase: string, links: Array<StayLinkView>, 
/**
 * `not_sent`, `sent`, `redeemed`, `opened` or `revoked` (the core's words, `_` for space).
 */
guest_status: string, 
/**
 * When the link was shared or the guest first opened, for `sent` and `opened`.
 */
status_at_ms: number | null, };

export type StayChangeView = { 
/**
 * `added`, `unchanged`, `reissued` (the dates changed), `revoked` (gone from the
 * calendar), `skipped-blocked` (a closed period, no stay) or `past` (over already).
 */
change: string, uid: string, guest_name: string, check_in_ms: number, check_out_ms: number, };

export type StaysSyncResult = { changes: Array<StayChangeView>, stays: Array<StayView>, 
/**
 * Writes the registry nodes acknowledged (revocations, invitation blobs).
 */
node_writes: number, elapsed_ms: number, };

export type ActivityView = { id: string, device_id: string, device_name: string, 
/**
 * The door's clock when it happened.
 */
time_ms: number, guest_name: string | null, grant_id: string | null, 
/**
 * `first_open`, `redeemed` or `refused`.
 */
kind: string, 
/**
 * The whole event in plain words, as the owner core words it.
 */
text: string, };

export type CameraFrame = { jpeg_base64: string, width: number, height: number, };

export type ClaimStageKind = "checking_keys" | "publishing" | "waiting_for_quorum" | "telling_device";

export type ClaimProgress = { stage: ClaimStageKind, 
/**
 * Nodes that stored the claim, once published.
 */
stored_on: number | null, };

export type ConsentRequestView = { 
/**
 * Hex consent id (64): approve, dismiss and revoke take it.
 */
id: string, 
/**
 * `lkdev1…`
 */
device: string, device_name: string, 
/**
 * The stream asked for, e.g. `p1` (the smart meter's port).
 */
stream: string, 
/**
 * The provider's name as it signed it (not checked by anyone: the key is what is proven).
 */
provider_name: string, provider_url: string, 
/**
 * The provider's signing key, `lkpk1…`.
 */
provider_key: string, purpose_code: number, 
/**
 * The purpose code in words (`insights`, `billing`, …).
 */
purpose_label: string, 
/**
 * Why, in the provider's own words.
 */
purpose: string, 
/**
 * How many days the provider says it keeps readings (0: not kept).
 */
retention_days: number, 
/**
 * When the consent ends by itself; `null`: until revoked.
 */
until_ms: number | null, 
/**
 * The provider also asks for readings from before the consent.
 */
history: boolean, 
/**
 * Terms the provider offers (recorded, not settled), e.g. "500 units per hour".
 */
terms: string | null, 
/**
 * The whole request as one plain sentence.
 */
summary: string, };

export type ConsentView = { id: string, request: ConsentRequestView, 
/**
 * `active`, `revoked`, `expired` or `ended` (the device changed hands).
 */
state: string, given_ms: number, 
/**
 * The owner who gave it, `lkpk1…`.
 */
given_by: string, ended_ms: number | null, 
/**
 * Whether the device has been told the consent's latest change: `delivered`, `waiting`
 * (told at the next contact), `refused` or `unknown` (another owner's doing).
 */
delivery: string, 
/**
 * What the delivery state means, in words (`null` when delivered).
 */
delivery_note: string | null, };

export type ConsentLogEntryView = { seq: number, time_ms: number, 
/**
 * `given`, `revoked` or `expired`.
 */
kind: string, consent_id: string, provider_name: string, stream: string, 
/**
 * The purpose label and the provider's words, e.g. `insights: monthly report`.
 */
purpose: string, 
/**
 * The owner who signed the entry, `lkpk1…`.
 */
signer: string, 
/**
 * That owner is this profile.
 */
signer_is_me: boolean, 
/**
 * Hex hash of the entry (the next one links to it).
 */
hash: string, };

export type MeterView = { device: string, stream: string, 
/**
 * Power drawn now (kW; negative: returned to the grid).
 */
power_kw: number | null, 
/**
 * Energy drawn since local midnight (kWh).
 */
energy_today_kwh: number | null, 
/**
 * The last 10 minutes: `[ms since the epoch, kW]`, oldest first.
 */
series: Array<[number, number]>, 
/**
 * The stream key the last reading was sealed with (it changes at each revocation).
 */
key_id: number | null, last_seq: number | null, 
/**
 * Readings opened since the app started watching.
 */
readings: number, 
/**
 * When the last reading was taken (meter time, else arrival), ms since the epoch.
 */
last_reading_ms: number | null, 
/**
 * Why no reading arrives, in plain words, when none does.
 */
problem: string | null, };
