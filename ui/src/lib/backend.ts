// Every call from the UI to the Rust side goes through this module, so the rest of
// the UI depends on the `Backend` interface alone and tests can swap in the mock.
import { invoke, type InvokeArgs } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';

import type {
  AppInfo,
  AuditView,
  CameraFrame,
  ClaimProgress,
  ClaimResult,
  DemoView,
  DeviceView,
  GrantView,
  HeldInvitationView,
  Identity,
  InvitationView,
  NewIdentity,
  OpenResult,
  OwnersDetail,
  ProposalResult,
  ProposalView,
  RecoveryWords,
  RevokeResult,
  Status,
} from './bindings';

export type {
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
  invite(device: string, request: InviteRequest): Promise<InvitationView>;
  revoke(grantId: string): Promise<RevokeResult>;
  /** Guest side: keep the invitation from a `latchkey://invite/…` link. */
  acceptInvitation(link: string): Promise<HeldInvitationView>;
  invitations(): Promise<HeldInvitationView[]>;
  audit(device: string): Promise<AuditView>;
  /** A `latchkey://invite/…` link the app was opened with, once; null when none waits. */
  takeInviteLink(): Promise<string | null>;
  /** Calls `onLink` whenever a link starts waiting; resolves to a function that stops it. */
  onInviteLink(onLink: () => void): Promise<() => void>;
  /** Calls `onStage` as a claim reaches each stage; resolves to a function that stops it. */
  onClaimProgress(onStage: (progress: ClaimProgress) => void): Promise<() => void>;
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
  guestName: string;
  fromMs: number;
  untilMs: number;
  actions: string[];
  useLimit: number | null;
  /** Exact argument strings the guest may send; empty: the guest sends none. */
  pinnedArgs: string[];
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
  invite: (device, r) =>
    call<InvitationView>('invite', {
      device,
      guestName: r.guestName,
      fromMs: r.fromMs,
      untilMs: r.untilMs,
      actions: r.actions,
      useLimit: r.useLimit,
      pinnedArgs: r.pinnedArgs,
    }),
  revoke: (grantId) => call<RevokeResult>('revoke', { grantId }),
  acceptInvitation: (link) => call<HeldInvitationView>('accept_invitation', { link }),
  invitations: () => call<HeldInvitationView[]>('invitations'),
  audit: (device) => call<AuditView>('audit', { device }),
  takeInviteLink: () => call<string | null>('take_invite_link'),
  onInviteLink: (onLink) => listen('invite-link', () => onLink()),
  onClaimProgress: (onStage) => listen<ClaimProgress>('claim-progress', (e) => onStage(e.payload)),
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
  /** Start with a neighbour's proposal to hand their back door to this profile. */
  offer?: boolean;
}

export interface MockBackend extends Backend {
  /** Names of the calls made so far, in order. */
  readonly calls: string[];
}

export const MOCK_APP_INFO: AppInfo = { name: 'Latchkey', version: '0.0.0-mock', protocol_version: 1 };

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
  const confirm = [3, 11, 20];
  let inviteLink = options.inviteLink ?? null;
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
    recoveryWords: () => answer('recoveryWords', () => ({ words: MOCK_WORDS })),
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
    invite: (device, r) =>
      answer('invite', () => {
        const grant: GrantView = {
          id: `${issued.length + 1}`.padStart(64, '0'),
          device_id: device,
          device_name: 'Front door',
          guest_name: r.guestName,
          actions: r.actions,
          not_before_ms: r.fromMs,
          not_after_ms: r.untilMs,
          use_limit: r.useLimit,
          created_ms: Date.now(),
          status: 'active',
          guest_key: 'lkpk1mockguestkey',
          arguments: [...new Set(r.pinnedArgs)].sort(),
        };
        issued = [...issued, grant];
        return { link: `latchkey://invite/mock${issued.length}`, qr: MOCK_PNG, grant };
      }),
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
        if (!link.startsWith('latchkey://invite/')) {
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
    // Like a machine without a camera: the photo import is the way in.
    cameraStart: () =>
      answer('cameraStart', () => {
        throw new BackendError('no_camera', 'No camera could be opened (mock). Take a photo of the code instead.');
      }),
    cameraStop: () => answer('cameraStop', () => undefined),
    onCamera: async () => () => {},
  };
}
