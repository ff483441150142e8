import { clearMocks, mockIPC } from '@tauri-apps/api/mocks';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  BackendError,
  MOCK_APP_INFO,
  UNEXPECTED,
  createMockBackend,
  mockForkAlarm,
  tauriBackend,
  toBackendError,
} from './backend';

describe('createMockBackend', () => {
  it('answers appInfo and records the call', async () => {
    const backend = createMockBackend();
    expect(await backend.appInfo()).toEqual(MOCK_APP_INFO);
    expect(backend.calls).toEqual(['appInfo']);
  });

  it('hands out copies, so a caller cannot change later answers', async () => {
    const backend = createMockBackend();
    const first = await backend.appInfo();
    first.version = 'changed';
    expect((await backend.appInfo()).version).toBe(MOCK_APP_INFO.version);
  });

  it('rejects with the configured error', async () => {
    const failure = new BackendError('offline', 'No answer.');
    const backend = createMockBackend({ failWith: failure });
    await expect(backend.appInfo()).rejects.toBe(failure);
    expect(backend.calls).toEqual(['appInfo']);
  });
});

describe('mock ownership offers', () => {
  it('lists a transfer offered to this profile and accepting it adds the device', async () => {
    const backend = createMockBackend({ withIdentity: true, offer: true });
    const [offer] = await backend.proposals();
    expect(offer.my_part).toBe('accept');
    expect(offer.proposed_by_me).toBe(false);
    expect(await backend.devices()).toEqual([]);
    const result = await backend.acceptProposal(offer.id.slice(0, 16));
    expect(result.applied).toBe(true);
    expect(await backend.proposals()).toEqual([]);
    expect((await backend.devices()).map((d) => d.name)).toEqual(['Back door']);
    await expect(backend.acceptProposal(offer.id)).rejects.toMatchObject({ code: 'unknown_proposal' });
  });
});

describe('toBackendError', () => {
  it('keeps the code and message of a CommandError', () => {
    const err = toBackendError({ code: 'bad_input', message: 'Name is empty.' });
    expect(err).toBeInstanceOf(BackendError);
    expect(err.code).toBe('bad_input');
    expect(err.message).toBe('Name is empty.');
  });

  it('wraps a bare string rejection', () => {
    const err = toBackendError('command app_inf not found');
    expect(err.code).toBe(UNEXPECTED);
    expect(err.message).toBe('command app_inf not found');
  });

  it('does not trust an object whose fields have the wrong types', () => {
    const err = toBackendError({ code: 7, message: 'x' });
    expect(err.code).toBe(UNEXPECTED);
    expect(err.message).not.toBe('x');
  });

  it('returns a BackendError unchanged', () => {
    const original = new BackendError('offline', 'No answer.');
    expect(toBackendError(original)).toBe(original);
  });
});

describe('tauriBackend', () => {
  // @tauri-apps/api reaches the IPC bridge through `window`; under Node the global
  // object stands in for it.
  beforeEach(() => vi.stubGlobal('window', globalThis));
  afterEach(() => {
    clearMocks();
    vi.unstubAllGlobals();
  });

  it('invokes the app_info command', async () => {
    const seen: string[] = [];
    mockIPC((cmd) => {
      seen.push(cmd);
      return { name: 'Latchkey', version: '0.1.0', protocol_version: 1, mobile: false };
    });
    expect(await tauriBackend.appInfo()).toEqual({ name: 'Latchkey', version: '0.1.0', protocol_version: 1, mobile: false });
    expect(seen).toEqual(['app_info']);
  });

  it('sends the pinned arguments to the invite command, whose grant lists them', async () => {
    const seen: Array<[string, unknown]> = [];
    mockIPC((cmd, args) => {
      seen.push([cmd, args]);
      return { link: 'latchkey://invite/x', qr: '', grant: { arguments: ['{"entity_id":"lock.front"}'] } };
    });
    const issued = await tauriBackend.invite({
      doors: ['lkdev1x', 'lkdev1y'],
      guestName: 'Ana',
      fromMs: 1,
      untilMs: 2,
      actions: ['call'],
      useLimit: null,
      pinnedArgs: ['{"entity_id":"lock.front"}'],
      weekly: ['mon-fri 08:00-12:00'],
      tz: 'Europe/Amsterdam',
      mayDelegate: true,
      fromGrant: null,
    });
    expect(seen).toEqual([
      [
        'invite',
        {
          doors: ['lkdev1x', 'lkdev1y'],
          guestName: 'Ana',
          fromMs: 1,
          untilMs: 2,
          actions: ['call'],
          useLimit: null,
          pinnedArgs: ['{"entity_id":"lock.front"}'],
          weekly: ['mon-fri 08:00-12:00'],
          tz: 'Europe/Amsterdam',
          mayDelegate: true,
          fromGrant: null,
        },
      ],
    ]);
    expect(issued.grant.arguments).toEqual(['{"entity_id":"lock.front"}']);
  });

  it('turns a rejected CommandError into a BackendError', async () => {
    mockIPC(() => {
      throw { code: 'internal', message: 'Keychain is locked.' };
    });
    const failure = tauriBackend.appInfo();
    await expect(failure).rejects.toBeInstanceOf(BackendError);
    await expect(failure).rejects.toMatchObject({ code: 'internal', message: 'Keychain is locked.' });
  });
});

describe('invitation links in the mock', () => {
  it('issues a grant that lists exactly the arguments pinned, or none', async () => {
    const backend = createMockBackend({ withIdentity: true });
    const request = {
      doors: ['lkdev1x'],
      guestName: 'Ana',
      fromMs: 1,
      untilMs: 2,
      actions: ['call'],
      useLimit: null,
      weekly: [],
      tz: null,
      mayDelegate: false,
      fromGrant: null,
    };
    const bare = await backend.invite({ ...request, pinnedArgs: [] });
    expect(bare.grant.arguments).toEqual([]);
    const pinned = await backend.invite({
      ...request,
      pinnedArgs: ['{"entity_id":"lock.front"}', '--hold-open', '--hold-open'],
    });
    expect(pinned.grant.arguments).toEqual(['--hold-open', '{"entity_id":"lock.front"}']);
  });

  it('hands out the opening link once', async () => {
    const backend = createMockBackend({ inviteLink: 'latchkey://invite/abc' });
    expect(await backend.takeInviteLink()).toBe('latchkey://invite/abc');
    expect(await backend.takeInviteLink()).toBeNull();
  });

  it('makes a guest of a profile without a key once a link is accepted', async () => {
    const backend = createMockBackend();
    expect((await backend.status()).invitations).toBe(0);
    await expect(backend.acceptInvitation('https://example.com')).rejects.toMatchObject({ code: 'bad_invite' });
    await backend.acceptInvitation('latchkey://invite/abc');
    const status = await backend.status();
    expect(status.has_identity).toBe(false);
    expect(status.invitations).toBe(1);
  });

  it('counts the phrase as written down only once words are typed back', async () => {
    const backend = createMockBackend();
    const created = await backend.createIdentity();
    expect((await backend.status()).backup_confirmed).toBe(false);
    await expect(backend.confirmBackup(['wrong', 'words', 'here'])).rejects.toMatchObject({ code: 'backup_mismatch' });
    expect((await backend.status()).backup_confirmed).toBe(false);
    await backend.confirmBackup(created.confirm_positions.map((p) => created.words[p - 1]));
    expect((await backend.status()).backup_confirmed).toBe(true);
  });

  it('asks five nodes by default and refuses a count out of range', async () => {
    const backend = createMockBackend();
    expect((await backend.status()).nodes_to_ask).toBe(5);
    await expect(backend.setNodesToAsk(0)).rejects.toMatchObject({ code: 'bad_setting' });
    expect(await backend.setNodesToAsk(7)).toBe(7);
    expect((await backend.status()).nodes_to_ask).toBe(7);
  });

  it('behaves like a machine without a camera, so the photo import stays the way in', async () => {
    const backend = createMockBackend();
    await expect(backend.cameraStart()).rejects.toMatchObject({ code: 'no_camera' });
    await backend.cameraStop();
    expect(backend.calls).toEqual(['cameraStart', 'cameraStop']);
  });

  it('reports each stage of a claim to its listeners until they stop listening', async () => {
    const backend = createMockBackend({ withIdentity: true, demo: true });
    const seen: string[] = [];
    const stop = await backend.onClaimProgress((p) => seen.push(p.stage));
    await backend.claimText('LATCHKEY:C1:MOCK');
    expect(seen).toEqual(['checking_keys', 'publishing', 'waiting_for_quorum', 'telling_device']);
    stop();
    await backend.claimText('LATCHKEY:C1:MOCK');
    expect(seen).toHaveLength(4);
  });
});

describe('fork alarms in the mock', () => {
  it('shows no alarm unless asked to', async () => {
    const backend = createMockBackend({ withIdentity: true });
    await backend.claimText('LATCHKEY:C1:MOCK');
    const [door] = await backend.devices();
    expect(door.alarm).toBeNull();
  });

  it('words an unresolved fork with what to do, and a switch as a notice', async () => {
    const backend = createMockBackend({ withIdentity: true, forkAlarm: 'unresolved' });
    await backend.claimText('LATCHKEY:C1:MOCK');
    const [door] = await backend.devices();
    expect(door.alarm?.kind).toBe('unresolved');
    expect(door.alarm?.title).toContain('Two different histories');
    expect(door.alarm?.what_to_do).toContain('keep opening');
    expect(door.alarm?.what_to_do).toContain('fresh keys');
    const switched = mockForkAlarm('switched', 0);
    expect(switched.meaning).toContain('still an owner');
    // The app never shows a command-line command.
    for (const alarm of [mockForkAlarm('unresolved', 0), switched]) {
      for (const text of [alarm.title, alarm.meaning, alarm.what_to_do]) {
        expect(text).not.toMatch(/`|--|latchkey /);
      }
    }
  });
});

describe('tauriBackend for the host', () => {
  beforeEach(() => vi.stubGlobal('window', globalThis));
  afterEach(() => {
    clearMocks();
    vi.unstubAllGlobals();
  });

  it('sends a calendar file as text, a share by uid and reads the activity feed', async () => {
    const seen: Array<[string, unknown]> = [];
    mockIPC((cmd, args) => {
      seen.push([cmd, args]);
      return cmd === 'stays_sync' ? { changes: [], stays: [] } : cmd === 'activity' ? [] : { link: 'L', qr: '', qr_version: 3 };
    });
    await tauriBackend.staysSync({
      doors: ['lkdev1a'],
      icsText: 'BEGIN:VCALENDAR',
      source: 'listing.ics',
      checkIn: '15:00',
      checkOut: '11:00',
      tz: 'Europe/Amsterdam',
    });
    await tauriBackend.shareStay('listing.ics', 'uid-1');
    await tauriBackend.activity();
    expect(seen).toEqual([
      [
        'stays_sync',
        { doors: ['lkdev1a'], icsText: 'BEGIN:VCALENDAR', source: 'listing.ics', checkIn: '15:00', checkOut: '11:00', tz: 'Europe/Amsterdam' },
      ],
      ['share_stay', { source: 'listing.ics', uid: 'uid-1' }],
      ['activity', {}],
    ]);
  });
});
