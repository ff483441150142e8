// Every call from the UI to the Rust side goes through this module, so the rest of
// the UI depends on the `Backend` interface alone and tests can swap in the mock.
import { invoke, type InvokeArgs } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';

import type {
  ActivityView,
  AppInfo,
  AuditView,
  CameraFrame,
  ClaimProgress,
  ClaimResult,
  ConsentLogEntryView,
  ConsentRequestView,
  ConsentView,
  DemoView,
  DeviceView,
  ForkAlarmView,
  GrantView,
  HeldInvitationView,
  Identity,
  InvitationView,
  MeterView,
  NewIdentity,
  OpenResult,
  OwnersDetail,
  ProposalResult,
  ProposalView,
  RecoveryWords,
  RevokeResult,
  ShareView,
  StayChangeView,
  Status,
  StaysSyncResult,
  StayView,
} from './bindings';

export type {
  ActivityView,
  ConsentLogEntryView,
  ConsentRequestView,
  ConsentView,
  MeterView,
  DoorRef,
  StayLinkView,
  ShareView,
  StayChangeView,
  StaysSyncResult,
  StayView,
  AppInfo,
  CameraFrame,
  ClaimProgress,
  AuditEntryView,
  AuditView,
  ClaimResult,
  GrantView,
  HeldInvitationView,
  InvitationView,
  OwnersDetail,
  ProposalPart,
  ProposalResult,
  ProposalView,
  RevokeResult,
  DemoView,
  DeviceView,
  DoorView,
  ForkAlarmKind,
  ForkAlarmView,
  Identity,
  NewIdentity,
  OpenResult,
  RecoveryWords,
  RouteKind,
  Status,
} from './bindings';

/** Every call the UI makes to Rust; one method per command in src-tauri/src/commands.rs. */
export interface Backend {
  appInfo(): Promise<AppInfo>;
  status(): Promise<Status>;
  /** Creates the recovery phrase; its words are shown once. */
  createIdentity(): Promise<NewIdentity>;
  /** The requested words typed back, in the order of `confirm_positions`. */
  confirmBackup(answers: string[]): Promise<void>;
  restoreIdentity(words: string): Promise<Identity>;
  recoveryWords(): Promise<RecoveryWords>;
  addNodes(urls: string[]): Promise<string[]>;
  setNodesToAsk(count: number): Promise<number>;
  /** Devices as last verified (no network). */
  devices(): Promise<DeviceView[]>;
  /** Asks the nodes for each device's newest ownership, then lists them. */
  refreshDevices(): Promise<DeviceView[]>;
  claimText(text: string): Promise<ClaimResult>;
  /** A PNG or JPEG of a claim QR, as base64 (no `data:` prefix). */
  claimImage(imageBase64: string): Promise<ClaimResult>;
  openDevice(device: string, action: string): Promise<OpenResult>;
  /** The demo panel, or null outside demo mode. */
  demoView(): Promise<DemoView | null>;
  /** Owners, threshold and waiting proposals, verified from the nodes just now. */
  deviceOwners(device: string): Promise<OwnersDetail>;
  proposeOwners(device: string, change: OwnerChangeRequest): Promise<ProposalResult>;
  approveProposal(id: string): Promise<ProposalResult>;
  /** Every owner change waiting, including those that would make this profile an owner
   * (read from its mailbox on the nodes first). */
  proposals(): Promise<ProposalView[]>;
  /** Accepts a change that adds this profile's key (a transfer to it, or joining owners). */
  acceptProposal(id: string): Promise<ProposalResult>;
  grants(device: string | null): Promise<GrantView[]>;
  /** One grant for every door in `request.doors`, as a short link and its QR code. */
  invite(request: InviteRequest): Promise<InvitationView>;
  /** Stays from the booking calendar, as last synced (no network). */
  stays(): Promise<StayView[]>;
  /** Reads the calendar and issues, keeps, re-issues or revokes one invitation per stay. */
  staysSync(request: StaysSyncRequest): Promise<StaysSyncResult>;
  /** A stay's links (one per door) with their QR codes, to hand the guest; the stay counts as sent. */
  shareStay(source: string, uid: string): Promise<ShareView[]>;
  /** What the doors reported about guests, newest first (as fetched so far). */
  activity(): Promise<ActivityView[]>;
  /** Calls `onNew` whenever the app fetched new door events; resolves to a function that stops it. */
  onActivity(onNew: () => void): Promise<() => void>;
  revoke(grantId: string): Promise<RevokeResult>;
  /** Guest side: keep the invitation from a link (`LATCHKEY://I/…` or `latchkey://invite/…`). */
  acceptInvitation(link: string): Promise<HeldInvitationView>;
  invitations(): Promise<HeldInvitationView[]>;
  audit(device: string): Promise<AuditView>;
  /** A `latchkey://invite/…` link the app was opened with, once; null when none waits. */
  takeInviteLink(): Promise<string | null>;
  /** Calls `onLink` whenever a link starts waiting; resolves to a function that stops it. */
  onInviteLink(onLink: () => void): Promise<() => void>;
  /** Calls `onStage` as a claim reaches each stage; resolves to a function that stops it. */
  onClaimProgress(onStage: (progress: ClaimProgress) => void): Promise<() => void>;
  /** Keeps a provider's request from its link (`LATCHKEY://C/…`, checked by the owner core)
   * until it is approved or dismissed. */
  consentRequestAdd(link: string): Promise<ConsentRequestView>;
  /** Requests waiting for an answer, for one device. */
  consentRequests(device: string): Promise<ConsentRequestView[]>;
  consentRequestDismiss(id: string): Promise<void>;
  /** Gives consent: signs a log entry, stores it on the nodes and tells the device (slow). */
  consentApprove(id: string): Promise<ConsentView>;
  /** Takes consent back: the device rotates the stream key at once. */
  consentRevoke(id: string): Promise<ConsentView>;
  /** Every consent ever given for the device (the nodes' verified log). */
  consents(device: string): Promise<ConsentView[]>;
  /** The device's verified consent log, oldest entry first. */
  consentLog(device: string): Promise<ConsentLogEntryView[]>;
  /** The owner's own meter; the first call starts reading `stream` from the home broker
   * (`broker`: `mqtt://HOST:PORT`, or null for the one already known, as in the demo). */
  meter(device: string, stream: string, broker: string | null): Promise<MeterView>;
  /** A consent request link the app was opened with, once; null when none waits. */
  takeConsentLink(): Promise<string | null>;
  /** Calls `onLink` whenever a consent request link starts waiting. */
  onConsentLink(onLink: () => void): Promise<() => void>;
  /** Phones: the text of a QR code read by the phone's own scanner (full screen). */
  scanWithPhone(): Promise<string>;
  /** Starts the desktop camera; rejects with `no_camera` when none opens. */
  cameraStart(): Promise<void>;
  cameraStop(): Promise<void>;
  /** Preview frames, the claim code once one is read (the scan then stops), and failures. */
  onCamera(handlers: CameraHandlers): Promise<() => void>;
}

export interface CameraHandlers {
  frame: (frame: CameraFrame) => void;
  code: (text: string) => void;
  error: (message: string) => void;
}

export interface InviteRequest {
  /** Device ids; one grant covers them all (at least one). */
  doors: string[];
  guestName: string;
  fromMs: number;
  untilMs: number;
  actions: string[];
  useLimit: number | null;
  /** Exact argument strings the guest may send; empty: the guest sends none. */
  pinnedArgs: string[];
  /** Weekly windows as the core parses them (`mon-fri 08:00-12:00`); empty: any time. */
  weekly: string[];
  /** The IANA zone of `weekly` (ignored when it is empty). */
  tz: string | null;
  /** The guest may invite others below this grant (depth 1). */
  mayDelegate: boolean;
  /** Issue below this held invitation (grant id) instead of as an owner. */
  fromGrant: string | null;
}

/** A calendar sync: the text of a chosen .ics file (`source` is its name), or none and `source`
 * is the calendar's URL (or a local path). */
export interface StaysSyncRequest {
  doors: string[];
  icsText: string | null;
  source: string;
  /** `15:00` */
  checkIn: string;
  /** `11:00` */
  checkOut: string;
  tz: string;
}

export interface OwnerChangeRequest {
  add: string | null;
  remove: string | null;
  threshold: number | null;
}

/**
 * A failed call. `code` is stable and meant for branching; `message` is meant for
 * people. Rust commands fail with `CommandError { code, message }`.
 */
export class BackendError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'BackendError';
    this.code = code;
  }
}

/** Code for rejections that did not come as a `CommandError`, e.g. an unknown command. */
export const UNEXPECTED = 'unexpected';

/** Turns whatever `invoke` rejected with into a `BackendError`. */
export function toBackendError(raw: unknown): BackendError {
  if (raw instanceof BackendError) {
    return raw;
  }
  if (typeof raw === 'object' && raw !== null) {
    const { code, message } = raw as Record<string, unknown>;
    if (typeof code === 'string' && typeof message === 'string') {
      return new BackendError(code, message);
    }
    if (raw instanceof Error) {
      return new BackendError(UNEXPECTED, raw.message);
    }
  }
  // Tauri rejects with a bare string when the command itself cannot run.
  if (typeof raw === 'string' && raw.length > 0) {
    return new BackendError(UNEXPECTED, raw);
  }
  return new BackendError(UNEXPECTED, 'The app did not answer as expected.');
}

async function call<T>(command: string, args?: InvokeArgs): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (raw) {
    throw toBackendError(raw);
  }
}

/** The real backend: Tauri commands in src-tauri/src/commands.rs. */
export const tauriBackend: Backend = {
  appInfo: () => call<AppInfo>('app_info'),
  status: () => call<Status>('status'),
  createIdentity: () => call<NewIdentity>('create_identity'),
  confirmBackup: (answers) => call<void>('confirm_backup', { answers }),
  restoreIdentity: (words) => call<Identity>('restore_identity', { words }),
  recoveryWords: () => call<RecoveryWords>('recovery_words'),
  addNodes: (urls) => call<string[]>('add_nodes', { urls }),
  setNodesToAsk: (count) => call<number>('set_nodes_to_ask', { count }),
  devices: () => call<DeviceView[]>('devices'),
  refreshDevices: () => call<DeviceView[]>('refresh_devices'),
  claimText: (text) => call<ClaimResult>('claim_text', { text, name: null }),
  claimImage: (imageBase64) => call<ClaimResult>('claim_image', { imageBase64 }),
  openDevice: (device, action) => call<OpenResult>('open_device', { device, action }),
  demoView: () => call<DemoView | null>('demo_view'),
  deviceOwners: (device) => call<OwnersDetail>('device_owners', { device }),
  proposeOwners: (device, change) => call<ProposalResult>('propose_owners', { device, ...change }),
  approveProposal: (id) => call<ProposalResult>('approve_proposal', { id }),
  proposals: () => call<ProposalView[]>('proposals'),
  acceptProposal: (id) => call<ProposalResult>('accept_proposal', { id }),
  grants: (device) => call<GrantView[]>('grants', { device }),
  invite: (r) =>
    call<InvitationView>('invite', {
      doors: r.doors,
      guestName: r.guestName,
      fromMs: r.fromMs,
      untilMs: r.untilMs,
      actions: r.actions,
      useLimit: r.useLimit,
      pinnedArgs: r.pinnedArgs,
      weekly: r.weekly,
      tz: r.tz,
      mayDelegate: r.mayDelegate,
      fromGrant: r.fromGrant,
    }),
  stays: () => call<StayView[]>('stays'),
  staysSync: (r) =>
    call<StaysSyncResult>('stays_sync', {
      doors: r.doors,
      icsText: r.icsText,
      source: r.source,
      checkIn: r.checkIn,
      checkOut: r.checkOut,
      tz: r.tz,
    }),
  shareStay: (source, uid) => call<ShareView[]>('share_stay', { source, uid }),
  activity: () => call<ActivityView[]>('activity'),
  onActivity: (onNew) => listen('activity', () => onNew()),
  revoke: (grantId) => call<RevokeResult>('revoke', { grantId }),
  acceptInvitation: (link) => call<HeldInvitationView>('accept_invitation', { link }),
  invitations: () => call<HeldInvitationView[]>('invitations'),
  audit: (device) => call<AuditView>('audit', { device }),
  takeInviteLink: () => call<string | null>('take_invite_link'),
  onInviteLink: (onLink) => listen('invite-link', () => onLink()),
  onClaimProgress: (onStage) => listen<ClaimProgress>('claim-progress', (e) => onStage(e.payload)),
  consentRequestAdd: (link) => call<ConsentRequestView>('consent_request_add', { link }),
  consentRequests: (device) => call<ConsentRequestView[]>('consent_requests', { device }),
  consentRequestDismiss: (id) => call<void>('consent_request_dismiss', { id }),
  consentApprove: (id) => call<ConsentView>('consent_approve', { id }),
  consentRevoke: (id) => call<ConsentView>('consent_revoke', { id }),
  consents: (device) => call<ConsentView[]>('consents', { device }),
  consentLog: (device) => call<ConsentLogEntryView[]>('consent_log', { device }),
  meter: (device, stream, broker) => call<MeterView>('meter', { device, stream, broker }),
  takeConsentLink: () => call<string | null>('take_consent_link'),
  onConsentLink: (onLink) => listen('consent-link', () => onLink()),
  scanWithPhone: async () => {
    // Loaded only on phones: the plugin's commands do not exist in desktop builds.
    const { scan, Format } = await import('@tauri-apps/plugin-barcode-scanner');
    try {
      return (await scan({ windowed: false, formats: [Format.QRCode] })).content;
    } catch (raw) {
      throw toBackendError(raw);
    }
  },
  cameraStart: () => call<void>('camera_start'),
  cameraStop: () => call<void>('camera_stop'),
  onCamera: async (handlers) => {
    const stops = await Promise.all([
      listen<CameraFrame>('camera-frame', (e) => handlers.frame(e.payload)),
      listen<string>('camera-code', (e) => handlers.code(e.payload)),
      listen<string>('camera-error', (e) => handlers.error(e.payload)),
    ]);
    return () => stops.forEach((stop) => stop());
  },
};

export interface MockOptions {
  info?: AppInfo;
  /** When set, every call rejects with this error instead of answering. */
  failWith?: BackendError;
  /** Start with an identity already in the keychain. */
  withIdentity?: boolean;
  /** Act as if started with `--demo`. */
  demo?: boolean;
  /** Act as if opened with this `latchkey://invite/…` link. */
  inviteLink?: string;
  /** The claimed door carries a fork alarm of this kind (worded as the owner core words it). */
  forkAlarm?: ForkAlarmView['kind'];
  /** Start with a neighbour's proposal to hand their back door to this profile. */
  offer?: boolean;
  /** Invitations accepted here let this profile invite others below them (a manager). */
  mayDelegate?: boolean;
  /** Slow calls (calendar sync, invite, share, consent) take this long, so progress can be seen. */
  slowMs?: number;
  /** Act as if opened with this `LATCHKEY://C/…` consent request link. */
  consentLink?: string;
}

/** The sample provider request the mock's demo offers (a real one is longer). */
export const MOCK_CONSENT_LINK = 'LATCHKEY://C/MOCKWATTINSIGHTS';

/** A provider's request as the owner core words it, for the mock and for tests. */
export function mockConsentRequest(over: Partial<ConsentRequestView> = {}): ConsentRequestView {
  return {
    id: 'c0'.repeat(32),
    device: 'lkdev1mockfrontdoor',
    device_name: 'Front door',
    stream: 'p1',
    provider_name: 'Watt Insights',
    provider_url: 'https://watt-insights.example',
    provider_key: 'lkpk1mockwattinsightskey',
    purpose_code: 1,
    purpose_label: 'insights',
    purpose: 'Shows which appliances use the most power and when your usage peaks.',
    retention_days: 30,
    until_ms: null,
    history: false,
    terms: null,
    summary:
      'Watt Insights asks to read the smart meter readings (p1) of Front door for energy insights, keeping them 30 days, until you revoke it.',
    ...over,
  };
}

/** The mock's meter: a plausible household load that moves every second. */
export function mockPowerKw(tMs: number): number {
  const s = tMs / 1000;
  return Math.round((0.35 + 0.25 * Math.sin(s / 40) + 0.6 * Math.max(0, Math.sin(s / 7))) * 1000) / 1000;
}

/** A fork alarm as the owner core words it (crates/latchkey-owner/src/fork.rs), for the mock. */
export function mockForkAlarm(kind: ForkAlarmView['kind'], nowMs: number): ForkAlarmView {
  if (kind === 'switched') {
    return {
      kind,
      seq: 2,
      title: 'Front door confirmed a different history',
      meaning:
        'Two conflicting changes were made at step 2 of who owns Front door: a change of owners you signed, which this app held, and a change of owners signed by 1 key(s) other than yours. The door itself endorsed the other change of owners, so this app switched to it; you are still an owner.',
      what_to_do:
        'If you or a co-owner wanted the change this app held, make it again. If none of you made the one the door confirmed, a co-owner\'s key is lost or stolen: transfer ownership to fresh keys.',
      first_seen_ms: nowMs,
    };
  }
  return {
    kind,
    seq: 2,
    title: 'Two different histories of Front door exist',
    meaning:
      'The registry nodes hold two valid but conflicting changes at step 2 of who owns Front door: a change of owners signed by 1 key(s) other than yours and a change of owners signed by 1 key(s) other than yours. Both carry valid signatures, so someone holding an owner\'s key (or the door\'s old setup code) signed the one you did not expect. Your door has not confirmed either yet. This app keeps using the history it had already checked.',
    what_to_do:
      'You can keep opening and inviting as before. If neither you nor a co-owner made both changes, a co-owner\'s key is lost or stolen: transfer ownership to fresh keys. The door confirms the transfer it accepts, and that ends the dispute. Until then this alarm stays.',
    first_seen_ms: nowMs,
  };
}

export interface MockBackend extends Backend {
  /** Names of the calls made so far, in order. */
  readonly calls: string[];
  /** As if a door reported something about a guest: the feed gains it and listeners hear. */
  simulateEvent(kind: 'first_open' | 'redeemed' | 'refused', guestName: string): void;
}

/** The sample calendar the demo offers (src-tauri/demo/stays.ics, dates around today). */
export const MOCK_SAMPLE_CALENDAR = '/tmp/latchkey-demo/sample-stays.ics';

/**
 * The stays in an iCalendar text, roughly: the mock's stand-in for the owner core's parser
 * (all-day VEVENTs; blocked dates, "… Not available", are no stays). It checks only enough
 * to show the flows.
 */
export function mockParseStays(ics: string): Array<{ uid: string; summary: string; start: string; end: string }> {
  const lines = ics.replace(/\r\n[ \t]/g, '').split(/\r?\n/);
  if (!lines.some((l) => l.trim() === 'BEGIN:VCALENDAR')) {
    throw new BackendError('bad_calendar', 'line 1: this is not an iCalendar file (no BEGIN:VCALENDAR)');
  }
  const stays: Array<{ uid: string; summary: string; start: string; end: string }> = [];
  let current: Record<string, string> | null = null;
  lines.forEach((line, i) => {
    if (line === 'BEGIN:VEVENT') {
      current = {};
    } else if (line === 'END:VEVENT' && current) {
      const e: Record<string, string> = current;
      current = null;
      if (!e.DTSTART || !e.DTEND || !e.UID) {
        throw new BackendError('bad_calendar', `line ${i + 1}: an event without UID, DTSTART or DTEND`);
      }
      if (!/not available|blocked/i.test(e.SUMMARY ?? '')) {
        stays.push({ uid: e.UID, summary: e.SUMMARY ?? 'Guest', start: e.DTSTART, end: e.DTEND });
      }
    } else if (current) {
      const m = /^([A-Z-]+)(;[^:]*)?:(.*)$/.exec(line);
      if (m) current[m[1]] = m[3];
    }
  });
  return stays;
}

function mockDateMs(yyyymmdd: string, hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return new Date(+yyyymmdd.slice(0, 4), +yyyymmdd.slice(4, 6) - 1, +yyyymmdd.slice(6, 8), h, m).getTime();
}

/** An .ics with three stays (past, now, to come) and a blocked week, dated around `nowMs`. */
export function mockSampleCalendar(nowMs: number): string {
  const day = (offset: number) => {
    const d = new Date(nowMs + offset * 86_400_000);
    return `${d.getFullYear()}${String(d.getMonth() + 1).padStart(2, '0')}${String(d.getDate()).padStart(2, '0')}`;
  };
  const event = (uid: string, summary: string, from: number, to: number) =>
    `BEGIN:VEVENT\nDTSTART;VALUE=DATE:${day(from)}\nDTEND;VALUE=DATE:${day(to)}\nUID:${uid}\nSUMMARY:${summary}\nEND:VEVENT`;
  return [
    'BEGIN:VCALENDAR',
    'VERSION:2.0',
    event('past@mock', 'Grace Hopper', -9, -6),
    event('now@mock', 'Ada Lovelace', -1, 3),
    event('next@mock', 'Alan Turing', 5, 9),
    event('blocked@mock', 'Airbnb (Not available)', 12, 19),
    'END:VCALENDAR',
  ].join('\n');
}

export const MOCK_APP_INFO: AppInfo = { name: 'Latchkey', version: '0.0.0-mock', protocol_version: 1, mobile: false };
/** What the mock phone scanner reads: a claim code's text. */
export const MOCK_CLAIM_TEXT = 'LATCHKEY:C1:MOCK';

/** The words of the mock's phrase: "word1" … "word24", easy to type back in a browser. */
const MOCK_WORDS = Array.from({ length: 24 }, (_, i) => `word${i + 1}`);
const MOCK_OWNER = 'lkpk1mockownerkey';
const MOCK_DEVICE = 'lkdev1mockfrontdoor';
const MOCK_OFFERED_DEVICE = 'lkdev1mockbackdoor';
const MOCK_NEIGHBOUR = 'lkpk1mockneighbourkey';
/** A 1x1 white PNG: the mock has no real QR codes to show. */
const MOCK_PNG =
  'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAG4lS3wAAAABJRU5ErkJggg==';

/**
 * A backend with no Rust behind it, for tests and for running the UI in a plain browser.
 * It plays the flows with canned data (one demo door, accepted commands) so every screen
 * can be reached; it checks nothing a real profile would.
 */
export function createMockBackend(options: MockOptions = {}): MockBackend {
  const calls: string[] = [];
  let identity = options.withIdentity ?? false;
  let backedUp = identity;
  let ask = 5;
  let nodes = options.demo ? ['http://127.0.0.1:7401', 'http://127.0.0.1:7402', 'http://127.0.0.1:7403'] : [];
  let devices: DeviceView[] = [];
  let unlocks = 0;
  let issued: GrantView[] = [];
  let held: HeldInvitationView[] = [];
  let lastUnlock: number | null = null;
  let stays: StayView[] = [];
  let activity: ActivityView[] = [];
  const activityListeners = new Set<() => void>();
  const confirm = [3, 11, 20];
  let inviteLink = options.inviteLink ?? null;
  let consentLink = options.consentLink ?? null;
  let requests: ConsentRequestView[] = [];
  let consents: ConsentView[] = [];
  let consentLog: ConsentLogEntryView[] = [];
  const meterSince = Date.now();
  const logEntry = (kind: string, c: ConsentView): void => {
    consentLog = [
      ...consentLog,
      {
        seq: consentLog.length + 1,
        time_ms: Date.now(),
        kind,
        consent_id: c.id,
        provider_name: c.request.provider_name,
        stream: c.request.stream,
        purpose: `${c.request.purpose_label}: ${c.request.purpose}`,
        signer: MOCK_OWNER,
        signer_is_me: true,
        hash: `${consentLog.length + 1}`.padStart(64, 'e'),
      },
    ];
  };
  let offers: ProposalView[] = options.offer
    ? [
        {
          id: 'cd'.repeat(32),
          device_id: MOCK_OFFERED_DEVICE,
          device_name: 'Back door',
          kind: 'transfer',
          owners: [MOCK_OWNER],
          threshold: 1,
          signatures: 1,
          approvals: 1,
          needed: 1,
          proposed_by: MOCK_NEIGHBOUR,
          proposed_by_me: false,
          new_owners: [MOCK_OWNER],
          awaiting_acceptance: [MOCK_OWNER],
          signed_by_me: false,
          my_part: 'accept',
        },
      ]
    : [];

  const answer = async <T>(name: string, value: () => T): Promise<T> => {
    calls.push(name);
    if (options.failWith) {
      throw options.failWith;
    }
    return structuredClone(value());
  };
  // A call that takes a while on a real profile (nodes to write to), so progress shows.
  const slow = async <T>(name: string, value: () => T): Promise<T> => {
    if (options.slowMs) {
      await new Promise((resolve) => setTimeout(resolve, options.slowMs));
    }
    return answer(name, value);
  };
  const doorRef = (id: string) => ({ id, name: devices.find((d) => d.id === id)?.name ?? 'Front door' });
  const shareOf = (link: string, door: string | null = null): ShareView => ({ door, link, qr: MOCK_PNG, qr_version: 5 });
  // The links of the mock's stays, by grant id: kept apart like the core keeps them in the keychain.
  const stayLinks = new Map<string, string>();
  const progressListeners = new Set<(progress: ClaimProgress) => void>();
  const claim = (): ClaimResult => {
    for (const stage of ['checking_keys', 'publishing', 'waiting_for_quorum', 'telling_device'] as const) {
      progressListeners.forEach((tell) => tell({ stage, stored_on: stage === 'waiting_for_quorum' ? nodes.length : null }));
    }
    if (devices.length === 0) {
      devices = [
        {
          id: MOCK_DEVICE,
          short_id: 'MOCK-D00R',
          name: 'Front door',
          owners: [MOCK_OWNER],
          threshold: 1,
          mine: true,
          seq: 1,
          verified_at_ms: Date.now(),
          lan_addrs: ['127.0.0.1:7410'],
          last: null,
          alarm: options.forkAlarm ? mockForkAlarm(options.forkAlarm, Date.now()) : null,
        },
      ];
    }
    return {
      device_id: MOCK_DEVICE,
      short_id: 'MOCK-D00R',
      name: 'Front door',
      already_owned: false,
      nodes_stored: nodes.length,
      visible_after_ms: 120,
      device_confirmed: true,
    };
  };

  return {
    calls,
    appInfo: () => answer('appInfo', () => options.info ?? MOCK_APP_INFO),
    status: () =>
      answer('status', () => ({
        profile_id: 'profile-mock',
        has_identity: identity,
        backup_confirmed: backedUp,
        owner_key: identity ? MOCK_OWNER : null,
        nodes,
        nodes_to_ask: ask,
        keychain_problem: null,
        invitations: held.length,
        demo: options.demo ?? false,
      })),
    createIdentity: () =>
      answer('createIdentity', () => {
        identity = true;
        return { words: MOCK_WORDS, confirm_positions: confirm, owner_key: MOCK_OWNER };
      }),
    confirmBackup: (answers) =>
      answer('confirmBackup', () => {
        const wrong = confirm.find((p, i) => answers[i]?.trim().toLowerCase() !== MOCK_WORDS[p - 1]);
        if (wrong !== undefined) {
          throw new BackendError('backup_mismatch', `Word ${wrong} does not match.`);
        }
        backedUp = true;
      }),
    restoreIdentity: (words) =>
      answer('restoreIdentity', () => {
        if (words.trim().split(/\s+/).length !== 24) {
          throw new BackendError('bad_phrase', 'the recovery phrase is not valid: it must have 24 words');
        }
        identity = true;
        backedUp = true;
        return { owner_key: MOCK_OWNER };
      }),
    recoveryWords: () => answer('recoveryWords', () => ({ words: MOCK_WORDS, presence: 'not-offered' as const })),
    setNodesToAsk: (count) =>
      answer('setNodesToAsk', () => {
        if (!Number.isInteger(count) || count < 1 || count > 32) {
          throw new BackendError('bad_setting', `invalid setting: ask 1 to 32 nodes, not ${count}`);
        }
        ask = count;
        return ask;
      }),
    addNodes: (urls) =>
      answer('addNodes', () => {
        nodes = [...new Set([...nodes, ...urls.map((u) => u.trim().replace(/\/+$/, ''))])];
        return nodes;
      }),
    devices: () => answer('devices', () => devices),
    refreshDevices: () => answer('refreshDevices', () => devices),
    claimText: () => answer('claimText', claim),
    claimImage: () => answer('claimImage', claim),
    openDevice: (device, action) =>
      answer('openDevice', () => {
        const target = devices.find((d) => d.id === device || d.name === device);
        if (!target) {
          throw new BackendError('unknown_device', `no device matches "${device}"`);
        }
        unlocks += 1;
        lastUnlock = Date.now();
        const result: OpenResult = {
          device_id: target.id,
          device_name: target.name,
          action,
          accepted: true,
          reject_code: null,
          reason: null,
          refusal: null,
          what_to_do: null,
          outcome_unknown: false,
          body: 'Door unlocked. It locks again in 5 s.\n',
          route: 'lan',
          via: target.lan_addrs[0] ?? '',
          latency_ms: 42,
          device_time_ms: lastUnlock,
          command_id: '00'.repeat(32),
          received_at_ms: lastUnlock,
        };
        target.last = result;
        return result;
      }),
    demoView: () =>
      answer('demoView', () =>
        options.demo
          ? {
              nodes,
              device_name: 'Front door',
              device_short_id: 'MOCK-D00R',
              claim_qr: MOCK_PNG,
              door: { unlocks, last_unlock_ms: lastUnlock, open_for_ms: 5000 },
              sample_calendar: MOCK_SAMPLE_CALENDAR,
              sample_consent_link: MOCK_CONSENT_LINK,
              meter_problem: null,
            }
          : null,
      ),
    deviceOwners: () =>
      answer('deviceOwners', () => ({ owners: [MOCK_OWNER], threshold: 1, me: MOCK_OWNER, proposals: [] })),
    proposeOwners: () =>
      answer('proposeOwners', () => {
        throw new BackendError('not_supported', 'The mock backend does not change owners.');
      }),
    approveProposal: () =>
      answer('approveProposal', () => {
        throw new BackendError('unknown_proposal', 'The mock backend holds no proposals for an owner.');
      }),
    proposals: () => answer('proposals', () => offers),
    acceptProposal: (id) =>
      answer('acceptProposal', () => {
        const offer = offers.find((p) => p.id.startsWith(id));
        if (!offer) {
          throw new BackendError('unknown_proposal', `no proposal matches "${id}"`);
        }
        offers = offers.filter((p) => p !== offer);
        devices = [
          ...devices,
          {
            id: offer.device_id,
            short_id: 'MOCK-BACK',
            name: offer.device_name,
            owners: offer.owners,
            threshold: offer.threshold,
            mine: true,
            seq: 2,
            verified_at_ms: Date.now(),
            lan_addrs: [],
            last: null,
            alarm: null,
          },
        ];
        const proposal: ProposalView = {
          ...offer,
          signatures: offer.signatures + 1,
          awaiting_acceptance: [],
          signed_by_me: true,
          my_part: 'nothing',
        };
        return { proposal, applied: true, door: 'the door will learn at its next check' };
      }),
    grants: () => answer('grants', () => issued),
    invite: (r) =>
      slow('invite', () => {
        if (r.doors.length === 0) {
          throw new BackendError('no_doors', 'choose at least one door');
        }
        if (r.fromGrant !== null && !held.some((h) => h.id === r.fromGrant && h.may_delegate)) {
          throw new BackendError('not_delegable', 'that invitation does not let you invite others');
        }
        const bad = r.weekly.find((w) => !/^[a-z,-]+ \d\d:\d\d-\d\d:\d\d$/.test(w));
        if (bad !== undefined) {
          throw new BackendError('bad_schedule', `"${bad}" is not a weekly window like "mon-fri 08:00-12:00"`);
        }
        const doors = r.doors.map(doorRef);
        const grant: GrantView = {
          id: `${issued.length + 1}`.padStart(64, '0'),
          device_id: doors[0].id,
          device_name: doors[0].name,
          guest_name: r.guestName,
          actions: r.actions,
          not_before_ms: r.fromMs,
          not_after_ms: r.untilMs,
          use_limit: r.useLimit,
          created_ms: Date.now(),
          status: 'active',
          guest_key: 'lkpk1mockguestkey',
          arguments: [...new Set(r.pinnedArgs)].sort(),
          doors,
          weekly: r.weekly,
          tz: r.weekly.length > 0 ? r.tz : null,
          may_delegate: r.mayDelegate,
          from_grant: r.fromGrant,
          redemption: 'not_redeemed',
          redeemed_at_ms: null,
          redeemed_by: null,
        };
        issued = [...issued, grant];
        return { ...shareOf(`LATCHKEY://I/MOCK${issued.length}`), grant };
      }),
    stays: () => answer('stays', () => stays),
    staysSync: (r) =>
      slow('staysSync', () => {
        let text: string;
        if (r.icsText !== null) {
          text = r.icsText;
        } else if (r.source === MOCK_SAMPLE_CALENDAR) {
          text = mockSampleCalendar(Date.now());
        } else {
          throw new BackendError('calendar_source', `cannot read the calendar at ${r.source}: the mock reads no network`);
        }
        const found = mockParseStays(text);
        if (r.doors.length === 0) {
          throw new BackendError('bad_stay', 'name at least one door');
        }
        const now = Date.now();
        const changes: StayChangeView[] = [];
        const mine = stays.filter((s) => s.source === r.source);
        const next: StayView[] = found.flatMap((f) => {
          const checkIn = mockDateMs(f.start, r.checkIn);
          const checkOut = mockDateMs(f.end, r.checkOut);
          const before = mine.find((s) => s.uid === f.uid && s.guest_status !== 'revoked');
          const same = before && before.check_in_ms === checkIn && before.check_out_ms === checkOut;
          const change = checkOut <= now ? 'past' : !before ? 'added' : same ? 'unchanged' : 'reissued';
          changes.push({ change, uid: f.uid, guest_name: f.summary, check_in_ms: checkIn, check_out_ms: checkOut });
          // A stay over before it was ever imported is left out; one imported before stays as it was.
          if (change === 'past') return before ? [before] : [];
          if (same && before) return [before];
          const links = r.doors.map((d, i) => {
            const grant = `${stayLinks.size + i + 1}`.padStart(64, 'f');
            stayLinks.set(grant, `LATCHKEY://I/MOCKSTAY${stayLinks.size + i + 1}`);
            return { device_id: d, door: doorRef(d).name, grant_id: grant, shareable: true };
          });
          const stay: StayView = {
            source: r.source,
            uid: f.uid,
            guest_name: f.summary,
            summary: f.summary,
            check_in_ms: checkIn,
            check_out_ms: checkOut,
            tz: r.tz,
            phase: checkOut <= now ? 'past' : checkIn <= now ? 'current' : 'upcoming',
            links,
            guest_status: 'not_sent',
            status_at_ms: null,
          };
          return [stay];
        });
        const gone: StayView[] = mine
          .filter((s) => !found.some((f) => f.uid === s.uid))
          .map((s) => {
            if (s.guest_status !== 'revoked') {
              changes.push({
                change: 'revoked',
                uid: s.uid,
                guest_name: s.guest_name,
                check_in_ms: s.check_in_ms,
                check_out_ms: s.check_out_ms,
              });
            }
            return { ...s, guest_status: 'revoked', links: s.links.map((l) => ({ ...l, shareable: false })) };
          });
        stays = [...stays.filter((s) => s.source !== r.source), ...next, ...gone].sort((a, b) => a.check_in_ms - b.check_in_ms);
        return { changes, stays, node_writes: changes.filter((c) => c.change !== 'unchanged').length * nodes.length, elapsed_ms: 42 };
      }),
    shareStay: (source, uid) =>
      slow('shareStay', () => {
        const stay = stays.find((s) => s.source === source && s.uid === uid);
        const shares = (stay?.links ?? []).filter((l) => l.shareable).map((l) => shareOf(stayLinks.get(l.grant_id) ?? '', l.door));
        if (!stay || shares.length === 0) {
          throw new BackendError('bad_stay', 'that stay has no link to share: it was revoked (cancelled in the calendar)');
        }
        if (stay.guest_status === 'not_sent') {
          stay.guest_status = 'sent';
          stay.status_at_ms = Date.now();
        }
        return shares;
      }),
    activity: () => answer('activity', () => activity),
    onActivity: async (onNew) => {
      activityListeners.add(onNew);
      return () => activityListeners.delete(onNew);
    },
    simulateEvent: (kind, guestName) => {
      const time = Date.now();
      const stay = stays.find((s) => s.guest_name === guestName);
      if (stay && kind === 'first_open' && stay.guest_status !== 'opened') {
        stay.guest_status = 'opened';
        stay.status_at_ms = time;
      }
      const words = {
        first_open: `${guestName} used the invitation for the first time (unlock)`,
        redeemed: `${guestName} redeemed the invitation on their phone`,
        refused: `${guestName} was refused (unlock): outside the invitation's weekly hours`,
      }[kind];
      activity = [
        {
          id: `${activity.length + 1}`,
          device_id: MOCK_DEVICE,
          device_name: 'Front door',
          time_ms: time,
          guest_name: guestName,
          grant_id: stay?.links[0]?.grant_id ?? null,
          kind,
          text: words,
        },
        ...activity,
      ];
      activityListeners.forEach((tell) => tell());
    },
    revoke: (grantId) =>
      answer('revoke', () => {
        issued = issued.map((g) => (g.id === grantId ? { ...g, status: 'revoked' } : g));
        return {
          grant_id: grantId,
          already_revoked: false,
          nodes_stored: nodes.length,
          device_told: true,
          door: 'the door already knows',
          nodes_error: null,
        };
      }),
    acceptInvitation: (link) =>
      answer('acceptInvitation', () => {
        if (!/^latchkey:\/\/(invite|i)\//i.test(link)) {
          throw new BackendError('bad_invite', 'this is not a Latchkey invitation link');
        }
        const invitation: HeldInvitationView = {
          id: 'ab'.repeat(32),
          device_id: MOCK_DEVICE,
          device_name: 'Front door',
          guest_name: 'Guest',
          actions: ['unlock'],
          not_before_ms: Date.now() - 60_000,
          not_after_ms: Date.now() + 86_400_000,
          status: 'active',
          already_held: false,
          doors: [{ id: MOCK_DEVICE, name: 'Front door' }],
          may_delegate: options.mayDelegate ?? false,
          last: null,
        };
        held = [invitation];
        return invitation;
      }),
    invitations: () => answer('invitations', () => held),
    audit: (device) => answer('audit', () => ({ device_id: device, entries: [] })),
    takeInviteLink: () =>
      answer('takeInviteLink', () => {
        const link = inviteLink;
        inviteLink = null;
        return link;
      }),
    // Nothing outside a browser tab can open links into the mock.
    onInviteLink: async () => () => {},
    onClaimProgress: async (onStage) => {
      progressListeners.add(onStage);
      return () => progressListeners.delete(onStage);
    },
    consentRequestAdd: (link) =>
      answer('consentRequestAdd', () => {
        if (!/^latchkey:\/\/c\/[a-z0-9]+$/i.test(link.trim())) {
          throw new BackendError('bad_consent_link', 'this is not a consent request link (LATCHKEY://C/…)');
        }
        const door = devices.find((d) => d.mine);
        if (!door) {
          throw new BackendError('unknown_device', 'the request is for a device this profile does not own');
        }
        const request = mockConsentRequest({ device: door.id, device_name: door.name });
        if (consents.some((c) => c.id === request.id)) {
          throw new BackendError('consent_given', 'you already answered this request');
        }
        requests = [...requests.filter((r) => r.id !== request.id), request];
        return request;
      }),
    consentRequests: (device) => answer('consentRequests', () => requests.filter((r) => r.device === device)),
    consentRequestDismiss: (id) =>
      answer('consentRequestDismiss', () => {
        requests = requests.filter((r) => r.id !== id);
      }),
    consentApprove: (id) =>
      slow('consentApprove', () => {
        const request = requests.find((r) => r.id === id);
        if (!request) {
          throw new BackendError('unknown_consent', `no pending request ${id.slice(0, 8)}`);
        }
        requests = requests.filter((r) => r !== request);
        const consent: ConsentView = {
          id,
          request,
          state: 'active',
          given_ms: Date.now(),
          given_by: MOCK_OWNER,
          ended_ms: null,
          delivery: 'delivered',
          delivery_note: null,
        };
        consents = [...consents, consent];
        logEntry('given', consent);
        return consent;
      }),
    consentRevoke: (id) =>
      slow('consentRevoke', () => {
        const consent = consents.find((c) => c.id === id && c.state === 'active');
        if (!consent) {
          throw new BackendError('unknown_consent', `no active consent ${id.slice(0, 8)}`);
        }
        consent.state = 'revoked';
        consent.ended_ms = Date.now();
        logEntry('revoked', consent);
        return consent;
      }),
    consents: (device) => answer('consents', () => consents.filter((c) => c.request.device === device)),
    consentLog: (device) =>
      answer('consentLog', () =>
        consentLog.filter((e) => consents.some((c) => c.id === e.consent_id && c.request.device === device)),
      ),
    meter: (device, stream) =>
      answer('meter', () => {
        const now = Date.now();
        const series: Array<[number, number]> = [];
        for (let t = Math.max(meterSince, now - 600_000); t <= now; t += 1000) {
          series.push([t, mockPowerKw(t)]);
        }
        const revocations = consentLog.filter((e) => e.kind !== 'given').length;
        return {
          device,
          stream,
          power_kw: mockPowerKw(now),
          energy_today_kwh: 3.2 + (now - meterSince) / 3_600_000,
          series,
          key_id: 1 + revocations,
          last_seq: series.length,
          readings: series.length,
          last_reading_ms: now,
          problem: null,
        };
      }),
    takeConsentLink: () =>
      answer('takeConsentLink', () => {
        const link = consentLink;
        consentLink = null;
        return link;
      }),
    onConsentLink: async () => () => {},
    // Like a machine without a camera: the photo import is the way in.
    cameraStart: () =>
      answer('cameraStart', () => {
        throw new BackendError('no_camera', 'No camera could be opened (mock). Take a photo of the code instead.');
      }),
    scanWithPhone: () => answer('scanWithPhone', () => MOCK_CLAIM_TEXT),
    cameraStop: () => answer('cameraStop', () => undefined),
    onCamera: async () => () => {},
  };
}
