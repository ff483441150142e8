// The host's screens with the mock backend: calendar stays, sharing a stay's link, the week
// picker's spec strings, delegation and the activity feed.
import { render } from 'svelte/server';
import { describe, expect, it } from 'vitest';
import {
  BackendError,
  MOCK_SAMPLE_CALENDAR,
  createMockBackend,
  mockParseStays,
  mockSampleCalendar,
  type InviteRequest,
  type StayView,
} from './backend';
import { fromLocalInput, toLocalInput } from './format';
import ActivityFeed from './screens/ActivityFeed.svelte';
import Invite from './screens/Invite.svelte';
import ShareSheet from './screens/ShareSheet.svelte';
import StayCard from './screens/StayCard.svelte';
import WeekPicker from './screens/WeekPicker.svelte';

const DAY = 86_400_000;

async function ownerWithDoor() {
  const backend = createMockBackend({ withIdentity: true, demo: true });
  await backend.claimText('LATCHKEY:C1:MOCK');
  const [door] = await backend.devices();
  return { backend, door };
}

const sync = (doors: string[], over: Partial<Parameters<ReturnType<typeof createMockBackend>['staysSync']>[0]> = {}) => ({
  doors,
  icsText: null,
  source: MOCK_SAMPLE_CALENDAR,
  checkIn: '15:00',
  checkOut: '11:00',
  tz: 'Europe/Amsterdam',
  ...over,
});

describe('stays in the mock', () => {
  it('imports the sample calendar: one invitation per stay, none for the blocked week', async () => {
    const { backend, door } = await ownerWithDoor();
    const result = await backend.staysSync(sync([door.id]));
    // The past stay is left as it was: nothing to issue for it.
    expect(result.changes.map((c) => c.change)).toEqual(['past', 'added', 'added']);
    // A stay over before its first import gets no invitation and is not kept.
    expect(result.stays.map((s) => s.guest_name)).toEqual(['Ada Lovelace', 'Alan Turing']);
    expect(result.stays.every((s) => s.guest_status === 'not_sent' && s.links.every((l) => l.shareable))).toBe(true);
    expect(result.stays.map((s) => s.phase)).toEqual(['current', 'upcoming']);
    expect(result.stays[0].links.map((l) => l.door)).toEqual(['Front door']);
    expect(await backend.stays()).toEqual(result.stays);
    const checkIn = new Date(result.stays[1].check_in_ms);
    expect([checkIn.getHours(), checkIn.getMinutes()]).toEqual([15, 0]);
  });

  it('keeps unchanged stays, re-issues moved ones and revokes cancelled ones on the next import', async () => {
    const { backend, door } = await ownerWithDoor();
    const now = Date.now();
    const file = (icsText: string) => sync([door.id], { source: 'listing.ics', icsText });
    const first = await backend.staysSync(file(mockSampleCalendar(now)));
    const ada = first.stays.find((s) => s.guest_name === 'Ada Lovelace')!;
    // Ada's stay moves by a day; Alan's is cancelled (gone from the export).
    const edited = mockSampleCalendar(now)
      .replace(/BEGIN:VEVENT\n(?:(?!END:VEVENT)[^])*UID:next@mock\n(?:(?!END:VEVENT)[^])*END:VEVENT\n/, '')
      .replace(/(DTEND;VALUE=DATE:)(\d+)(\nUID:now@mock)/, (_m, a, d, b) => `${a}${Number(d) + 1}${b}`);
    const second = await backend.staysSync(file(edited));
    const change = Object.fromEntries(second.changes.map((c) => [c.guest_name, c.change]));
    expect(change).toEqual({ 'Ada Lovelace': 'reissued', 'Alan Turing': 'revoked', 'Grace Hopper': 'past' });
    const after = Object.fromEntries(second.stays.map((s) => [s.guest_name, s]));
    expect(after['Alan Turing'].guest_status).toBe('revoked');
    expect(after['Alan Turing'].links.some((l) => l.shareable)).toBe(false);
    expect(after['Ada Lovelace'].links[0].grant_id).not.toBe(ada.links[0].grant_id);
    // A third import of the same text changes nothing.
    const third = await backend.staysSync(file(edited));
    expect(third.changes.filter((c) => c.change !== 'past').every((c) => c.change === 'unchanged')).toBe(true);
  });

  it('refuses a file that is not a calendar and keeps the stays it had', async () => {
    const { backend, door } = await ownerWithDoor();
    await backend.staysSync(sync([door.id]));
    const before = await backend.stays();
    await expect(backend.staysSync(sync([door.id], { source: 'x.ics', icsText: 'hello' }))).rejects.toMatchObject({
      code: 'bad_calendar',
    });
    await expect(backend.staysSync(sync([]))).rejects.toMatchObject({ code: 'bad_stay' });
    expect(await backend.stays()).toEqual(before);
  });

  it('shares a stay: its link and QR, and the stay counts as sent', async () => {
    const { backend, door } = await ownerWithDoor();
    const { stays } = await backend.staysSync(sync([door.id]));
    const [share] = await backend.shareStay(stays[0].source, stays[0].uid);
    expect(share.link).toMatch(/^LATCHKEY:\/\/I\//);
    expect(share.door).toBe('Front door');
    expect(share.qr).toMatch(/^data:image\/png;base64,/);
    expect((await backend.stays())[0].guest_status).toBe('sent');
    await expect(backend.shareStay(stays[0].source, 'nope')).rejects.toMatchObject({ code: 'bad_stay' });
  });

  it('tells listeners about a door event; the stay shows the first open', async () => {
    const { backend, door } = await ownerWithDoor();
    await backend.staysSync(sync([door.id]));
    let heard = 0;
    const stop = await backend.onActivity(() => (heard += 1));
    backend.simulateEvent('first_open', 'Ada Lovelace');
    expect(heard).toBe(1);
    const [event] = await backend.activity();
    expect(event.kind).toBe('first_open');
    expect(event.text).toContain('Ada Lovelace used the invitation for the first time');
    const ada = (await backend.stays()).find((s) => s.guest_name === 'Ada Lovelace')!;
    expect(ada.guest_status).toBe('opened');
    expect(event.grant_id).toBe(ada.links[0].grant_id);
    stop();
    backend.simulateEvent('refused', 'Ada Lovelace');
    expect(heard).toBe(1);
  });

  it('reads VEVENTs like the exports do, and says which line is wrong', () => {
    const ics = 'BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261205\r\nDTEND;VALUE=DATE:20261207\r\nUID:a\r\nSUMMARY:CLOSED - Not available\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n';
    expect(() => mockParseStays(ics)).toThrow(/line 10/);
    expect(mockParseStays(ics.replace('BEGIN:VEVENT\r\nUID:b\r\nEND:VEVENT\r\n', ''))).toEqual([]);
  });
});

describe('invitations in the mock', () => {
  const request = (over: Partial<InviteRequest>): InviteRequest => ({
    doors: ['lkdev1mockfrontdoor'],
    guestName: 'Maria',
    fromMs: 0,
    untilMs: DAY,
    actions: ['unlock'],
    useLimit: null,
    pinnedArgs: [],
    weekly: [],
    tz: null,
    mayDelegate: false,
    fromGrant: null,
    ...over,
  });

  it('issues one grant for several doors, with a weekly schedule, as a short link', async () => {
    const { backend, door } = await ownerWithDoor();
    const issued = await backend.invite(
      request({ doors: [door.id, 'lkdev1mockbackdoor'], weekly: ['mon-fri 08:00-12:00'], tz: 'Europe/Amsterdam', mayDelegate: true }),
    );
    expect(issued.link).toMatch(/^LATCHKEY:\/\/I\//);
    expect(issued.grant.doors.map((d) => d.id)).toEqual([door.id, 'lkdev1mockbackdoor']);
    expect(issued.grant.weekly).toEqual(['mon-fri 08:00-12:00']);
    expect(issued.grant.tz).toBe('Europe/Amsterdam');
    expect(issued.grant.may_delegate).toBe(true);
    await expect(backend.invite(request({ weekly: ['weekdays mornings'] }))).rejects.toMatchObject({ code: 'bad_schedule' });
    await expect(backend.invite(request({ doors: [] }))).rejects.toMatchObject({ code: 'no_doors' });
  });

  it('lets a manager invite below an invitation that allows it, and lists it as delegated', async () => {
    const manager = createMockBackend({ mayDelegate: true });
    const held = await manager.acceptInvitation('latchkey://i/ABCDEF');
    expect(held.may_delegate).toBe(true);
    const cleaner = await manager.invite(request({ guestName: 'Cleaner', fromGrant: held.id, weekly: ['wed 09:00-13:00'] }));
    expect(cleaner.grant.from_grant).toBe(held.id);
    expect((await manager.grants(null)).filter((g) => g.from_grant === held.id)).toHaveLength(1);

    const guest = createMockBackend();
    const plain = await guest.acceptInvitation('LATCHKEY://I/ABCDEF');
    await expect(guest.invite(request({ fromGrant: plain.id }))).rejects.toBeInstanceOf(BackendError);
  });
});

function stay(over: Partial<StayView>): StayView {
  const link = (door: string, grant: string) => ({ device_id: `lkdev1${grant}`, door, grant_id: grant.repeat(64), shareable: true });
  return {
    source: 'listing.ics',
    uid: 'u1',
    guest_name: 'Ada Lovelace',
    summary: 'Reserved - Ada Lovelace',
    check_in_ms: Date.now() - DAY,
    check_out_ms: Date.now() + 2 * DAY,
    tz: 'Europe/Amsterdam',
    phase: 'current',
    links: [link('Front door', 'a'), link('Garden gate', 'b')],
    guest_status: 'not_sent',
    status_at_ms: null,
    ...over,
  };
}

const card = (s: StayView) =>
  render(StayCard, { props: { stay: s, history: [], now: Date.now(), sharing: false, onShare: () => {} } }).body;

describe('StayCard', () => {
  it('shows the guest, the doors, the status and one Share button', () => {
    const html = card(stay({}));
    expect(html).toContain('Ada Lovelace');
    expect(html).toContain('Front door, Garden gate');
    expect(html).toContain('Link not sent');
    expect(html.match(/data-testid="stay-share"/g)).toHaveLength(1);
  });

  it('says when the guest first opened', () => {
    const opened = Date.UTC(2026, 11, 4, 15, 7);
    const html = card(stay({ guest_status: 'opened', status_at_ms: opened }));
    expect(html).toContain('Opened at');
    expect(html).toContain('data-status="opened"');
  });

  it('offers no link for a revoked stay or a past one', () => {
    const revoked = stay({ guest_status: 'revoked' });
    revoked.links = revoked.links.map((l) => ({ ...l, shareable: false }));
    expect(card(revoked)).not.toContain('stay-share');
    expect(card(stay({ phase: 'past' }))).not.toContain('stay-share');
  });
});

describe('ShareSheet', () => {
  it('shows each door\'s QR code full width with its link text', () => {
    const html = render(ShareSheet, {
      props: {
        shares: [
          { door: 'Front door', link: 'LATCHKEY://I/ABC', qr: 'data:image/png;base64,AAAA', qr_version: 7 },
          { door: 'Garden gate', link: 'LATCHKEY://I/DEF', qr: 'data:image/png;base64,BBBB', qr_version: 6 },
        ],
        title: 'Ada',
        onClose: () => {},
      },
    }).body;
    expect(html).toContain('src="data:image/png;base64,AAAA"');
    expect(html).toContain('LATCHKEY://I/DEF');
    expect(html).toContain('Garden gate');
    expect(html).toContain('QR version 7');
    expect(html.match(/data-testid="share-qr"/g)).toHaveLength(2);
  });
});

describe('WeekPicker', () => {
  it('shows the spec string the core parses for each window', () => {
    const html = render(WeekPicker, {
      props: {
        windows: [
          { days: [true, true, true, true, true, false, false], from: '08:00', to: '12:00' },
          { days: [false, false, false, false, false, true, true], from: '10:00', to: '11:00' },
        ],
        tz: 'Europe/Amsterdam',
      },
    }).body;
    expect(html).toContain('mon-fri 08:00-12:00');
    expect(html).toContain('sat,sun 10:00-11:00');
    expect(html).toContain('value="Europe/Amsterdam"');
  });
});

describe('Invite', () => {
  const doors = [
    { id: 'lkdev1a', name: 'Front door' },
    { id: 'lkdev1b', name: 'Garden gate' },
  ];
  const show = (fromGrant: string | null) =>
    render(Invite, {
      props: { backend: createMockBackend(), doors, initialDoors: ['lkdev1a'], fromGrant, onIssued: () => {} },
    }).body;

  it('offers every door and delegation to an owner', () => {
    const html = show(null);
    expect(html).toContain('Garden gate');
    expect(html.match(/data-testid="invite-door"/g)).toHaveLength(2);
    expect(html).toContain('data-testid="invite-may-delegate"');
    expect(html).toContain('Only on certain days and hours');
  });

  it("starts a delegated invitation inside the held one's span, on whole minutes", () => {
    const held = { from_ms: Date.now() + 3_600_000 + 30_000, until_ms: Date.now() + 5 * 3_600_000 + 30_000 };
    const html = render(Invite, {
      props: { backend: createMockBackend(), doors, initialDoors: ['lkdev1a'], fromGrant: 'ab'.repeat(32), within: held, onIssued: () => {} },
    }).body;
    const from = toLocalInput(Math.ceil(held.from_ms / 60_000) * 60_000);
    const until = toLocalInput(held.until_ms);
    expect(html).toContain(`value="${from}"`);
    expect(html).toContain(`value="${until}"`);
    expect(fromLocalInput(from)!).toBeGreaterThanOrEqual(held.from_ms);
    expect(fromLocalInput(until)!).toBeLessThanOrEqual(held.until_ms);
    // A span that began long ago starts the form at this minute.
    const started = { from_ms: Date.now() - 3_600_000, until_ms: Date.now() + 3_600_000 };
    const before = toLocalInput(Date.now());
    const now = render(Invite, {
      props: { backend: createMockBackend(), doors, initialDoors: ['lkdev1a'], fromGrant: 'ab'.repeat(32), within: started, onIssued: () => {} },
    }).body;
    const after = toLocalInput(Date.now());
    expect(now.includes(`value="${before}"`) || now.includes(`value="${after}"`)).toBe(true);
  });

  it('offers a manager no further delegation', () => {
    const html = show('ab'.repeat(32));
    expect(html).toContain('Invite someone with your invitation');
    expect(html).not.toContain('invite-may-delegate');
  });
});

describe('ActivityFeed', () => {
  it('lists what the doors reported, refusals marked', () => {
    const now = Date.now();
    const html = render(ActivityFeed, {
      props: {
        now,
        events: [
          { id: '2', device_id: 'd', device_name: 'Front door', time_ms: now - 5_000, guest_name: 'Ada', grant_id: null, kind: 'refused', text: 'Front door refused Ada' },
          { id: '1', device_id: 'd', device_name: 'Front door', time_ms: now - 120_000, guest_name: 'Ada', grant_id: null, kind: 'first_open', text: 'Ada opened Front door' },
        ],
      },
    }).body;
    expect(html.indexOf('refused Ada')).toBeLessThan(html.indexOf('Ada opened'));
    expect(html).toContain('just now');
    expect(html).toContain('2 min ago');
    expect(html).toMatch(/data-kind="refused" class="[^"]*\brefused\b/);
  });
});
