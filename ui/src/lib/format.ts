// Wording and small decisions about how things look. Nothing here decides anything about
// ownership or access: that is the owner core's job, and these functions only phrase it.
import { BackendError, toBackendError } from './backend';
import type {
  AuditEntryView,
  ClaimProgress,
  DeviceView,
  DoorView,
  ForkAlarmView,
  OpenResult,
  ProposalResult,
  ProposalView,
  RevokeResult,
} from './bindings';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** After this long without a check against the nodes, a card says its view may be old. */
export const STALE_AFTER_MS = HOUR;

export interface Freshness {
  text: string;
  stale: boolean;
}

/** "Checked just now", "Checked 5 min ago", … from when the chain was last verified. */
export function freshness(verifiedAtMs: number, nowMs: number): Freshness {
  const age = Math.max(0, nowMs - verifiedAtMs);
  let text: string;
  if (age < MINUTE) {
    text = 'Checked just now';
  } else if (age < HOUR) {
    text = `Checked ${Math.floor(age / MINUTE)} min ago`;
  } else if (age < DAY) {
    text = `Checked ${Math.floor(age / HOUR)} h ago`;
  } else {
    text = `Checked ${Math.floor(age / DAY)} d ago`;
  }
  return { text, stale: age >= STALE_AFTER_MS };
}

/** `lkpk1abcdef…uvwxyz`: enough to compare by eye, short enough for a phone. */
export function shortKey(key: string, keep = 6): string {
  const sep = key.indexOf('1');
  const head = sep >= 0 ? sep + 1 + keep : keep;
  if (key.length <= head + keep + 1) {
    return key;
  }
  return `${key.slice(0, head)}…${key.slice(-keep)}`;
}

/** Who owns the device, from this profile's point of view. */
export function ownershipLine(device: Pick<DeviceView, 'mine' | 'owners' | 'threshold'>): string {
  const n = device.owners.length;
  const others = device.mine ? n - 1 : n;
  const who = device.mine
    ? others === 0
      ? 'You own it'
      : `You and ${others} other${others === 1 ? '' : 's'} own it`
    : `Owned by ${n} other${n === 1 ? '' : 's'}`;
  const rule = n <= 1 ? '' : ` · ${device.threshold} of ${n} sign changes`;
  return who + rule;
}

/** How the app reached the device last time, or what it knows before the first command. */
export function reachLine(device: Pick<DeviceView, 'last' | 'lan_addrs'>): string {
  if (device.last) {
    return device.last.route === 'lan'
      ? `Reached on your network (${device.last.via})`
      : `Reached through relay ${hostOf(device.last.via)}`;
  }
  return device.lan_addrs.length > 0 ? 'Local address known; relay as fallback' : 'Reachable through relays';
}

function hostOf(url: string): string {
  return url.replace(/^[a-z]+:\/\//, '');
}

/**
 * The headline of a device's signed answer. A refusal is worded by the owner core (what it
 * means, what to do), never shown as a bare code.
 */
/**
 * The answer a device card shows: the one its own Open just got, until the devices list
 * brings one at least as new (the same answer, or a later one from elsewhere).
 */
export function newestAnswer(mine: OpenResult | null, listed: OpenResult | null): OpenResult | null {
  if (mine === null) return listed;
  if (listed === null) return mine;
  return listed.received_at_ms >= mine.received_at_ms ? listed : mine;
}

export function resultHeadline(result: OpenResult): string {
  const action = capitalize(result.action);
  if (result.accepted) {
    return `${action} accepted · signed by the device`;
  }
  if (result.outcome_unknown) {
    return `${action} reached the door but its answer was lost; it was not sent again, so it ran at most once. The door's log shows what happened.`;
  }
  if (result.refusal) {
    return [`${action} refused.`, result.refusal, result.what_to_do].filter((s) => s).join(' ');
  }
  return `${action} refused: ${result.reason ?? result.reject_code ?? 'no reason given'}`;
}

/** After a revocation: whether the door already knows (the core's words), and any node trouble. */
export function revokeText(guestName: string, result: RevokeResult): string {
  const lines = [`${guestName}'s access is revoked; ${result.door}.`];
  if (result.nodes_error) {
    lines.push(`The registry nodes did not store it (${result.nodes_error}); revoke again once they are reachable.`);
  }
  return lines.join(' ');
}

/** After proposing, approving or accepting an owner change. */
export function ownerChangeText(result: ProposalResult): string {
  if (result.applied) {
    return result.door ? `The change is in effect; ${result.door}.` : 'The change is in effect.';
  }
  const p = result.proposal;
  const parts: string[] = [];
  if (p.awaiting_acceptance.length > 0) {
    const who = p.awaiting_acceptance.map((k) => shortKey(k, 4)).join(', ');
    parts.push(
      `Nothing changes until ${who} accept${p.awaiting_acceptance.length === 1 ? 's' : ''} it in their own app (a key nobody holds never can)`,
    );
  }
  if (p.approvals < p.needed) {
    parts.push(`${p.needed - p.approvals} more co-owner approval${p.needed - p.approvals === 1 ? '' : 's'} needed`);
  }
  return `Proposal sent. ${parts.join('; ')}.`;
}

/** Who proposed an owner change: "you", or the proposer's key in short. */
export function proposerText(p: ProposalView): string {
  if (p.proposed_by_me) return 'Proposed by you';
  return p.proposed_by ? `Proposed by ${shortKey(p.proposed_by, 4)}` : 'Proposed by an owner';
}

/** What an owner change would do, in words. */
export function proposalChangeText(p: ProposalView): string {
  const keys = p.owners.map((o) => shortKey(o, 4)).join(', ');
  const sign = `${p.threshold} to sign changes`;
  return p.kind === 'transfer' ? `Hand ${p.device_name} over to ${keys} (${sign})` : `Owners of ${p.device_name} become ${keys} (${sign})`;
}

/** How far an owner change has come: owners' approvals and new owners' acceptance. */
export function proposalProgressText(p: ProposalView): string {
  const approvals = `${p.approvals} of ${p.needed} owner approval${p.needed === 1 ? '' : 's'}`;
  if (p.new_owners.length === 0) return approvals;
  if (p.awaiting_acceptance.length === 0) return `${approvals} · every new owner accepted`;
  const who = p.awaiting_acceptance.map((k) => shortKey(k, 4)).join(', ');
  return `${approvals} · waiting for ${who} to accept`;
}

function capitalize(word: string): string {
  return word.length === 0 ? word : word[0].toUpperCase() + word.slice(1);
}

/** Is the simulated door's latch open at `nowMs`? */
export function doorIsOpen(door: DoorView, nowMs: number): boolean {
  return door.last_unlock_ms !== null && nowMs - door.last_unlock_ms < door.open_for_ms;
}

/** Node URLs typed one per line, or separated by spaces or commas. */
export function parseNodeUrls(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((u) => u.trim())
    .filter((u) => u.length > 0);
}

/** `data:image/png;base64,AAAA` → `AAAA`; plain base64 passes through. */
export function base64OfDataUrl(dataUrl: string): string {
  const comma = dataUrl.indexOf(',');
  return dataUrl.startsWith('data:') && comma >= 0 ? dataUrl.slice(comma + 1) : dataUrl;
}

/**
 * The owner core words every error for the app itself (`Error::for_people`); these few codes
 * keep the screens' own shorter wording, and cover the mock backend, whose messages are terse.
 */
const IN_APP: Record<string, string> = {
  no_nodes: 'No registry nodes are set up yet. Add some in Settings, then try again.',
  no_seed: 'This profile has no identity yet. Create one or restore yours first.',
  unknown_device: 'That device is not in your list any more. Refresh the list and try again.',
  qr_not_found:
    'No QR code was found in that picture. Take the photo closer and straight on, with the whole code in view.',
  claim_not_visible:
    'The claim was sent, but not enough registry nodes show it yet. Your devices list will pick it up shortly.',
};

/** What to show for a failed call: the app's wording for known codes, else the core's message. */
export function errorText(raw: unknown): string {
  const err: BackendError = toBackendError(raw);
  return IN_APP[err.code] ?? (capitalize(err.message) || `The app failed (${err.code}).`);
}

/** What a grant's status means to a person. */
export function grantStatusLabel(status: string): string {
  switch (status) {
    case 'upcoming':
      return 'Not valid yet';
    case 'active':
      return 'Valid now';
    case 'expired':
      return 'Expired';
    case 'revoked':
      return 'Revoked';
    case 'void':
      return 'Ended by an ownership change';
    default:
      return status;
  }
}

/** "Fri 15:00 → Sun 11:00" in the viewer's time zone (with the date when not this week). */
export function windowText(fromMs: number, untilMs: number, nowMs: number): string {
  const week = 6 * DAY;
  const near = (t: number) => Math.abs(t - nowMs) < week;
  const fmt = (t: number) =>
    new Date(t).toLocaleString(undefined, {
      weekday: 'short',
      ...(near(t) ? {} : { day: 'numeric', month: 'short' }),
      hour: '2-digit',
      minute: '2-digit',
    });
  return `${fmt(fromMs)} → ${fmt(untilMs)}`;
}

/** A `datetime-local` input's value for `ms`, in local time (`2026-11-23T15:00`). */
export function toLocalInput(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The instant a `datetime-local` value names in local time, or null when it is empty or bad. */
export function fromLocalInput(value: string): number | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(value)) {
    return null;
  }
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? null : ms;
}

/** Actions typed as a list: "unlock, lock" → ["unlock", "lock"]. */
export function parseActions(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).filter((a) => a.length > 0))];
}

/**
 * Exact arguments typed one per line. Lines are kept byte for byte (the device compares them
 * exactly), so only empty lines and the CR of CRLF line ends are dropped.
 */
export function parseArguments(text: string): string[] {
  return [...new Set(text.split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l.length > 0))];
}

/** What a guest may send with its actions, for an invitation's summary. */
export function argumentsText(args: string[]): string {
  return args.length === 0 ? 'no arguments' : `no arguments, or exactly: ${args.join(' · ')}`;
}

/** What a claim is doing now, for the progress line. */
export function claimStageText(progress: ClaimProgress): string {
  switch (progress.stage) {
    case 'checking_keys':
      return "Checking the device's keys against its code…";
    case 'publishing':
      return 'Publishing your claim to the registry nodes…';
    case 'waiting_for_quorum':
      return `Stored on ${progress.stored_on ?? 0} node${progress.stored_on === 1 ? '' : 's'}; waiting until a majority shows it…`;
    case 'telling_device':
      return 'Yours. Telling the device…';
  }
}

/**
 * One audit entry for the activity list. Entries about one command name who sent it; the rest
 * (refusal summaries, pruning, a new ownership era) are told in the device's own words.
 */
export function auditLine(e: AuditEntryView, nameOf: (key: string | null) => string): string {
  if (e.kind === 'decision' || e.kind === 'about_to_run') {
    const verdict = e.accepted ? 'accepted' : `refused (${e.outcome})`;
    return `${nameOf(e.sender)} · ${e.action || '(unreadable)'} · ${verdict} — ${e.text}`;
  }
  return e.text;
}

/** A fork alarm's first line: an alarm while nobody settled it, a notice once the door did. */
export function alarmHeading(alarm: Pick<ForkAlarmView, 'kind' | 'title'>): string {
  return `${alarm.kind === 'switched' ? 'Notice' : 'Alarm'}: ${alarm.title}`;
}

/** Since when the app has seen the dispute. */
export function alarmSince(alarm: Pick<ForkAlarmView, 'first_seen_ms'>, nowMs: number): string {
  const age = Math.max(0, nowMs - alarm.first_seen_ms);
  if (age < MINUTE) {
    return 'First seen just now';
  }
  if (age < HOUR) {
    return `First seen ${Math.floor(age / MINUTE)} min ago`;
  }
  if (age < DAY) {
    return `First seen ${Math.floor(age / HOUR)} h ago`;
  }
  return `First seen ${Math.floor(age / DAY)} days ago`;
}

/** Day names as the core's `--weekly` syntax spells them, Monday first. */
export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;

/**
 * One weekly window in the core's syntax (`WeeklySchedule::parse_spec`): the ticked days as
 * ranges where three or more follow each other (`mon-fri`), else a comma list (`sat,sun`),
 * then `HH:MM-HH:MM`. Null when no day is ticked or a time is missing.
 */
export function weeklySpec(days: readonly boolean[], from: string, to: string): string | null {
  const runs: string[] = [];
  let i = 0;
  while (i < 7) {
    if (!days[i]) {
      i += 1;
      continue;
    }
    let j = i;
    while (j + 1 < 7 && days[j + 1]) j += 1;
    if (j - i >= 2) {
      runs.push(`${WEEKDAYS[i]}-${WEEKDAYS[j]}`);
    } else {
      for (let k = i; k <= j; k += 1) runs.push(WEEKDAYS[k]);
    }
    i = j + 1;
  }
  if (runs.length === 0 || !/^\d\d:\d\d$/.test(from) || !/^\d\d:\d\d$/.test(to)) {
    return null;
  }
  return `${runs.join(',')} ${from}-${to}`;
}

/** The viewer's IANA time zone (`Europe/Amsterdam`), the default for schedules and stays. */
export function localZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

/** A grant's weekly windows in words, or null when it is valid at any time of its span. */
export function weeklyText(weekly: string[], tz: string | null): string | null {
  if (weekly.length === 0) return null;
  return `Only ${weekly.join('; ')}${tz ? ` (${tz})` : ''}`;
}

/** Whether a grant's link is bound to a phone yet, as the owner core read the doors' logs. */
export function redemptionText(redemption: string, redeemedAtMs: number | null): string | null {
  const redeemed =
    redeemedAtMs === null
      ? "Redeemed by the guest's phone"
      : `Redeemed ${new Date(redeemedAtMs).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })}`;
  switch (redemption) {
    case 'not_redeemed':
      return 'Link not redeemed yet';
    case 'redeemed':
      return redeemed;
    case 'redeemed_contested':
      return `${redeemed}; another phone tried the link too. If your guest says it does not work, revoke it and send a new one.`;
    default:
      return null;
  }
}

/** A short link (`LATCHKEY://I/…`): it binds to the first phone that redeems it. */
export function isShortLink(text: string): boolean {
  return /^latchkey:\/\/i\//i.test(text.trim());
}

/** Invitation links the app accepts: the short `LATCHKEY://I/…` (any case) and the old long one. */
export function isInviteLink(text: string): boolean {
  return /^latchkey:\/\/(i|invite)\/\S+$/i.test(text.trim());
}

/** The guest's side of a stay, as its card says it. */
export function guestStatusText(stay: { guest_status: string; status_at_ms: number | null }): string {
  const at = (ms: number) =>
    new Date(ms).toLocaleString(undefined, { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
  switch (stay.guest_status) {
    case 'not_sent':
      return 'Link not sent';
    case 'sent':
      return 'Link sent, not opened yet';
    case 'redeemed':
      return stay.status_at_ms === null ? 'Redeemed' : `Redeemed ${at(stay.status_at_ms)}`;
    case 'opened':
      return stay.status_at_ms === null ? 'Opened' : `Opened at ${at(stay.status_at_ms)}`;
    case 'revoked':
      return 'Revoked';
    default:
      return stay.guest_status;
  }
}

/** One line of a sync's report. */
export function stayChangeText(change: string): string {
  switch (change) {
    case 'added':
      return 'New stay: invitation issued';
    case 'unchanged':
      return 'Unchanged';
    case 'reissued':
      return 'Dates changed: new invitation, old one revoked';
    case 'revoked':
      return 'Gone from the calendar: invitation revoked';
    case 'skipped-blocked':
      return 'Closed period, not a stay';
    case 'past':
      return 'Over already: left as it was';
    default:
      return change;
  }
}

/** A sync's report in one sentence: "2 added, 1 revoked, 3 unchanged". */
export function syncSummary(changes: Array<{ change: string }>): string {
  const words: Record<string, string> = {
    added: 'added',
    reissued: 're-issued',
    revoked: 'revoked',
    unchanged: 'unchanged',
    past: 'past',
    'skipped-blocked': 'closed periods skipped',
  };
  const counts = Object.entries(words)
    .map(([kind, word]) => [word, changes.filter((c) => c.change === kind).length] as const)
    .filter(([, n]) => n > 0)
    .map(([word, n]) => `${n} ${word}`);
  return counts.length === 0 ? 'The calendar holds no stays.' : `${counts.join(', ')}.`;
}

/** When an event happened, for the activity feed. */
export function activityTime(ms: number, nowMs: number): string {
  const age = nowMs - ms;
  if (age >= 0 && age < MINUTE) return 'just now';
  if (age >= 0 && age < HOUR) return `${Math.floor(age / MINUTE)} min ago`;
  return new Date(ms).toLocaleString(undefined, { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
}
