import { describe, expect, it } from 'vitest';
import { BackendError } from './backend';
import type { AuditEntryView, DeviceView, OpenResult } from './bindings';
import {
  alarmHeading,
  alarmSince,
  auditLine,
  base64OfDataUrl,
  claimStageText,
  doorIsOpen,
  errorText,
  freshness,
  newestAnswer,
  fromLocalInput,
  grantStatusLabel,
  ownershipLine,
  ownerChangeText,
  proposalProgressText,
  proposerText,
  argumentsText,
  parseActions,
  parseArguments,
  parseNodeUrls,
  reachLine,
  resultHeadline,
  revokeText,
  shortKey,
  toLocalInput,
  windowText,
  activityTime,
  guestStatusText,
  isInviteLink,
  redemptionText,
  stayChangeText,
  syncSummary,
  weeklySpec,
  weeklyText,
} from './format';

const result: OpenResult = {
  device_id: 'lkdev1x',
  device_name: 'Front door',
  action: 'unlock',
  accepted: true,
  reject_code: null,
  reason: null,
  refusal: null,
  what_to_do: null,
  outcome_unknown: false,
  body: 'ok',
  route: 'lan',
  via: '192.168.1.20:7420',
  latency_ms: 30,
  device_time_ms: null,
  command_id: 'ab',
  received_at_ms: 0,
};

describe('freshness', () => {
  it('words the age and marks an hour or more as stale', () => {
    expect(freshness(1_000, 30_000)).toEqual({ text: 'Checked just now', stale: false });
    expect(freshness(0, 5 * 60_000)).toEqual({ text: 'Checked 5 min ago', stale: false });
    expect(freshness(0, 3 * 3_600_000)).toEqual({ text: 'Checked 3 h ago', stale: true });
    expect(freshness(0, 2 * 86_400_000).text).toBe('Checked 2 d ago');
  });

  it('treats a check from the future (clock skew) as just now', () => {
    expect(freshness(10_000, 0).text).toBe('Checked just now');
  });
});

describe('shortKey', () => {
  it('keeps the prefix and both ends', () => {
    expect(shortKey('lkpk1abcdefghijklmnopqrstuvwxyz')).toBe('lkpk1abcdef…uvwxyz');
  });
  it('leaves short keys whole', () => {
    expect(shortKey('lkpk1abc')).toBe('lkpk1abc');
  });
});

describe('ownershipLine', () => {
  it('says whether you own it and the signing rule when there are several owners', () => {
    expect(ownershipLine({ mine: true, owners: ['a'], threshold: 1 })).toBe('You own it');
    expect(ownershipLine({ mine: true, owners: ['a', 'b', 'c'], threshold: 2 })).toBe(
      'You and 2 others own it · 2 of 3 sign changes',
    );
    expect(ownershipLine({ mine: false, owners: ['a'], threshold: 1 })).toBe('Owned by 1 other');
  });
});

describe('reachLine', () => {
  const device: Pick<DeviceView, 'last' | 'lan_addrs'> = { last: null, lan_addrs: [] };
  it('reports the route of the last answer', () => {
    expect(reachLine({ ...device, last: result })).toBe('Reached on your network (192.168.1.20:7420)');
    expect(reachLine({ ...device, last: { ...result, route: 'relay', via: 'https://node.example:7400' } })).toBe(
      'Reached through relay node.example:7400',
    );
  });
  it('says what is known before the first command', () => {
    expect(reachLine(device)).toBe('Reachable through relays');
    expect(reachLine({ ...device, lan_addrs: ['10.0.0.2:7420'] })).toBe('Local address known; relay as fallback');
  });
});

describe('resultHeadline', () => {
  it('names the action and the outcome', () => {
    expect(resultHeadline(result)).toBe('Unlock accepted · signed by the device');
    expect(resultHeadline({ ...result, accepted: false, reject_code: 'GrantExpired', reason: 'grant expired' })).toBe(
      'Unlock refused: grant expired',
    );
  });

  it("shows the core's plain words for a refusal, with the door's time, never a bare code", () => {
    const stale = {
      ...result,
      accepted: false,
      reject_code: 'StaleView',
      reason:
        'the door cannot confirm your invitation is still valid; it has been offline from the registry since 2026-11-30T21:04Z (16 minutes)',
      refusal:
        'The door cannot confirm your invitation is still valid; it has been offline from the registry since 2026-11-30T21:04Z (16 minutes).',
      what_to_do: 'Try again once the door is back online, or ask someone on the home network to open it.',
    };
    const text = resultHeadline(stale);
    expect(text).toContain('cannot confirm your invitation is still valid');
    expect(text).toContain('since 2026-11-30T21:04Z');
    expect(text).toContain('Try again once the door is back online');
    expect(text).not.toContain('StaleView');
    expect(text).not.toMatch(/code \d+|error \d+/);
  });

  it('says a command whose answer was lost ran at most once', () => {
    const lost = { ...result, accepted: false, reject_code: 'Replayed', reason: 'replayed', outcome_unknown: true };
    expect(resultHeadline(lost)).toContain('ran at most once');
  });
});

describe('doorIsOpen', () => {
  it('is open for open_for_ms after the last unlock', () => {
    const door = { unlocks: 1, last_unlock_ms: 1_000, open_for_ms: 5_000 };
    expect(doorIsOpen(door, 2_000)).toBe(true);
    expect(doorIsOpen(door, 6_000)).toBe(false);
    expect(doorIsOpen({ ...door, last_unlock_ms: null }, 0)).toBe(false);
  });
});

describe('parseNodeUrls', () => {
  it('splits on lines, spaces and commas', () => {
    expect(parseNodeUrls(' http://a:1\nhttp://b:2, http://c:3 ,\n')).toEqual(['http://a:1', 'http://b:2', 'http://c:3']);
    expect(parseNodeUrls('   ')).toEqual([]);
  });
});

describe('base64OfDataUrl', () => {
  it('strips a data URL prefix only', () => {
    expect(base64OfDataUrl('data:image/png;base64,QUJD')).toBe('QUJD');
    expect(base64OfDataUrl('QUJD')).toBe('QUJD');
  });
});

describe('errorText', () => {
  it('rewords codes whose core message names CLI commands', () => {
    expect(errorText(new BackendError('no_nodes', 'add some with `latchkey nodes add URL...`'))).toMatch(/Settings/);
  });
  it('passes other messages through, capitalized', () => {
    expect(errorText({ code: 'bad_phrase', message: 'the recovery phrase is not valid: word 5' })).toBe(
      'The recovery phrase is not valid: word 5',
    );
  });
});

describe('invitation helpers', () => {
  it('labels grant states', () => {
    expect(grantStatusLabel('active')).toBe('Valid now');
    expect(grantStatusLabel('revoked')).toBe('Revoked');
    expect(grantStatusLabel('void')).toMatch(/ownership change/);
  });

  it('round-trips datetime-local values in local time', () => {
    const ms = new Date(2026, 10, 23, 15, 30).getTime();
    expect(toLocalInput(ms)).toBe('2026-11-23T15:30');
    expect(fromLocalInput('2026-11-23T15:30')).toBe(ms);
    expect(fromLocalInput('')).toBeNull();
    expect(fromLocalInput('tomorrow')).toBeNull();
  });

  it('shows a window with an arrow, dates only when far away', () => {
    const now = new Date(2026, 10, 23, 12, 0).getTime();
    const near = windowText(now, now + 3_600_000, now);
    expect(near).toContain('→');
    const far = windowText(now + 30 * 86_400_000, now + 31 * 86_400_000, now);
    expect(far.length).toBeGreaterThan(near.length);
  });

  it('parses action lists without duplicates', () => {
    expect(parseActions('unlock, lock unlock')).toEqual(['unlock', 'lock']);
    expect(parseActions(' ')).toEqual([]);
  });

  it('keeps pinned arguments byte for byte, one per line', () => {
    expect(parseArguments('{"entity_id":"lock.front"}\r\n\n a b \n')).toEqual(['{"entity_id":"lock.front"}', ' a b ']);
    expect(parseArguments('x\nx')).toEqual(['x']);
    expect(parseArguments('')).toEqual([]);
    expect(argumentsText([])).toBe('no arguments');
    expect(argumentsText(['a', 'b'])).toBe('no arguments, or exactly: a · b');
  });
});

describe('claimStageText', () => {
  it('says what the claim waits for, with the node count once published', () => {
    expect(claimStageText({ stage: 'checking_keys', stored_on: null })).toContain("device's keys");
    expect(claimStageText({ stage: 'waiting_for_quorum', stored_on: 3 })).toBe(
      'Stored on 3 nodes; waiting until a majority shows it…',
    );
    expect(claimStageText({ stage: 'waiting_for_quorum', stored_on: 1 })).toContain('1 node;');
    expect(claimStageText({ stage: 'telling_device', stored_on: null })).toContain('Yours');
  });
});

describe('revokeText', () => {
  const base = { grant_id: 'ab', already_revoked: false, nodes_stored: 3, device_told: true, nodes_error: null };
  it("repeats the core's words on whether the door already knows", () => {
    expect(revokeText('Ann', { ...base, door: 'the door already knows' })).toBe(
      "Ann's access is revoked; the door already knows.",
    );
    const later = revokeText('Ann', {
      ...base,
      device_told: false,
      door: 'the door will learn at its next check of the registry (within 60 s unless configured otherwise): it did not answer on the local network',
    });
    expect(later).toContain('will learn at its next check');
  });
  it('says when the nodes did not take it', () => {
    expect(revokeText('Ann', { ...base, door: 'the door already knows', nodes_error: 'only 0 of 3' })).toContain(
      'revoke again once they are reachable',
    );
  });
});

describe('auditLine', () => {
  const entry = (over: Partial<AuditEntryView>): AuditEntryView => ({
    seq: 1,
    time_ms: null,
    kind: 'decision',
    sender: null,
    action: '',
    accepted: true,
    outcome: 'Accepted',
    route: null,
    text: '',
    ...over,
  });
  const nameOf = (k: string | null) => (k === 'lkpk1guest' ? 'Ana (guest)' : 'someone');

  it('tells summaries, pruning and new eras in the device words, with no sender', () => {
    const summary = entry({
      kind: 'refusals',
      text: '1,234 unreadable envelopes refused between 02:00 and 02:01 UTC',
    });
    expect(auditLine(summary, nameOf)).toBe('1,234 unreadable envelopes refused between 02:00 and 02:01 UTC');
    expect(auditLine(entry({ kind: 'pruned', text: 'entries 0–999 pruned (all fetched)' }), nameOf)).toBe(
      'entries 0–999 pruned (all fetched)',
    );
    expect(auditLine(entry({ kind: 'era', text: 'claimed: new owners from here' }), nameOf)).toBe(
      'claimed: new owners from here',
    );
  });

  it('names the sender of an action and says why a refusal happened', () => {
    const ran = entry({
      kind: 'about_to_run',
      sender: 'lkpk1guest',
      route: 'lan',
      text: 'about to run unlock for a guest (no arguments) … then: ran',
    });
    expect(auditLine({ ...ran, action: 'unlock' }, nameOf)).toBe(
      'Ana (guest) · unlock · accepted — about to run unlock for a guest (no arguments) … then: ran',
    );
    const refused = entry({
      sender: 'lkpk1guest',
      action: 'unlock',
      accepted: false,
      outcome: 'Grant expired',
      text: 'unlock: refused at authority: the grant expired 5 s ago',
    });
    expect(auditLine(refused, nameOf)).toBe(
      'Ana (guest) · unlock · refused (Grant expired) — unlock: refused at authority: the grant expired 5 s ago',
    );
  });
});

describe('fork alarms', () => {
  it('heads an unsettled fork as an alarm and a switch as a notice', () => {
    expect(alarmHeading({ kind: 'unresolved', title: 'Two different histories of Front door exist' })).toBe(
      'Alarm: Two different histories of Front door exist',
    );
    expect(alarmHeading({ kind: 'switched', title: 'Front door confirmed a different history' })).toBe(
      'Notice: Front door confirmed a different history',
    );
  });

  it('says since when the dispute has been seen', () => {
    const now = 10 * 24 * 3_600_000;
    expect(alarmSince({ first_seen_ms: now - 5_000 }, now)).toBe('First seen just now');
    expect(alarmSince({ first_seen_ms: now - 7 * 60_000 }, now)).toBe('First seen 7 min ago');
    expect(alarmSince({ first_seen_ms: now - 5 * 3_600_000 }, now)).toBe('First seen 5 h ago');
    expect(alarmSince({ first_seen_ms: now - 3 * 24 * 3_600_000 }, now)).toBe('First seen 3 days ago');
    expect(alarmSince({ first_seen_ms: now + 1_000 }, now)).toBe('First seen just now');
  });
});

describe('owner changes', () => {
  const base = {
    id: '00'.repeat(32),
    device_id: 'lkdev1door',
    device_name: 'Door',
    kind: 'amend-owners',
    owners: ['lkpk1aaaaaaaaaaaaaaaaaaaa1111', 'lkpk1bbbbbbbbbbbbbbbbbbbb2222'],
    threshold: 2,
    signatures: 1,
    approvals: 1,
    needed: 1,
    proposed_by: 'lkpk1aaaaaaaaaaaaaaaaaaaa1111',
    proposed_by_me: true,
    new_owners: ['lkpk1bbbbbbbbbbbbbbbbbbbb2222'],
    awaiting_acceptance: ['lkpk1bbbbbbbbbbbbbbbbbbbb2222'],
    signed_by_me: true,
    my_part: 'nothing' as const,
  };

  it('says nothing changes until the new owner accepts', () => {
    const text = ownerChangeText({ proposal: base, applied: false, door: null });
    expect(text).toContain('Nothing changes until lkpk1bbbb…2222 accepts it');
    expect(text).not.toContain('approval');
  });

  it('counts the approvals still needed once every new owner accepted', () => {
    const p = { ...base, needed: 3, awaiting_acceptance: [] };
    expect(ownerChangeText({ proposal: p, applied: false, door: null })).toBe(
      'Proposal sent. 2 more co-owner approvals needed.',
    );
    expect(proposalProgressText(p)).toBe('1 of 3 owner approvals · every new owner accepted');
  });

  it('names the proposer', () => {
    expect(proposerText(base)).toBe('Proposed by you');
    expect(proposerText({ ...base, proposed_by_me: false })).toBe('Proposed by lkpk1aaaa…1111');
    expect(proposerText({ ...base, proposed_by_me: false, proposed_by: null })).toBe('Proposed by an owner');
  });
});

describe('weeklySpec', () => {
  const days = (...on: number[]) => Array.from({ length: 7 }, (_, i) => on.includes(i));

  it('writes the core syntax: ranges for three or more days, comma lists otherwise', () => {
    expect(weeklySpec(days(0, 1, 2, 3, 4), '08:00', '12:00')).toBe('mon-fri 08:00-12:00');
    expect(weeklySpec(days(5, 6), '10:00', '11:00')).toBe('sat,sun 10:00-11:00');
    expect(weeklySpec(days(2), '09:00', '13:00')).toBe('wed 09:00-13:00');
    expect(weeklySpec(days(0, 1, 2, 4), '08:00', '12:00')).toBe('mon-wed,fri 08:00-12:00');
    expect(weeklySpec(days(0, 1, 2, 3, 4, 5, 6), '00:00', '23:59')).toBe('mon-sun 00:00-23:59');
  });

  it('gives nothing without a day or a time', () => {
    expect(weeklySpec(days(), '08:00', '12:00')).toBeNull();
    expect(weeklySpec(days(1), '', '12:00')).toBeNull();
  });
});

describe('links and stays in words', () => {
  it('accepts short links in any case and the old long ones', () => {
    expect(isInviteLink('LATCHKEY://I/AEBAGBAF')).toBe(true);
    expect(isInviteLink('latchkey://i/aebagbaf')).toBe(true);
    expect(isInviteLink(' latchkey://invite/abc ')).toBe(true);
    expect(isInviteLink('latchkey://claim/abc')).toBe(false);
    expect(isInviteLink('https://example.com/i/abc')).toBe(false);
  });

  it("words the guest's status", () => {
    const base = { status_at_ms: null };
    expect(guestStatusText({ ...base, guest_status: 'not_sent' })).toBe('Link not sent');
    expect(guestStatusText({ ...base, guest_status: 'sent' })).toBe('Link sent, not opened yet');
    expect(guestStatusText({ ...base, guest_status: 'revoked' })).toBe('Revoked');
    expect(guestStatusText({ guest_status: 'opened', status_at_ms: Date.UTC(2026, 11, 4, 15) })).toMatch(/^Opened at /);
    expect(guestStatusText({ ...base, guest_status: 'redeemed' })).toBe('Redeemed');
  });

  it("sums up a sync's changes", () => {
    expect(
      syncSummary([{ change: 'added' }, { change: 'added' }, { change: 'unchanged' }, { change: 'revoked' }, { change: 'skipped-blocked' }]),
    ).toBe('2 added, 1 revoked, 1 unchanged, 1 closed periods skipped.');
    expect(syncSummary([])).toBe('The calendar holds no stays.');
    expect(stayChangeText('reissued')).toContain('new invitation');
  });

  it('words weekly windows and redemption', () => {
    expect(weeklyText([], null)).toBeNull();
    expect(weeklyText(['mon-fri 08:00-12:00'], 'Europe/Amsterdam')).toBe('Only mon-fri 08:00-12:00 (Europe/Amsterdam)');
    expect(redemptionText('not_needed', null)).toBeNull();
    expect(redemptionText('redeemed_contested', null)).toContain('another phone tried the link');
    expect(redemptionText('not_redeemed', null)).toBe('Link not redeemed yet');
    expect(redemptionText('redeemed', null)).toBe("Redeemed by the guest's phone");
  });

  it('dates activity relative to now while recent', () => {
    expect(activityTime(10_000_000, 10_000_500)).toBe('just now');
    expect(activityTime(10_000_000, 10_000_000 + 5 * 60_000)).toBe('5 min ago');
  });
});

describe('newestAnswer', () => {
  const answer = (received_at_ms: number, body: string): OpenResult =>
    ({ accepted: true, body, received_at_ms }) as unknown as OpenResult;

  it("shows the card's own answer at once, before the list has it", () => {
    const mine = answer(2_000, 'just now');
    expect(newestAnswer(mine, answer(1_000, 'before'))).toBe(mine);
    expect(newestAnswer(mine, null)).toBe(mine);
  });

  it('gives way to the list once it holds the same answer or a newer one', () => {
    const listed = answer(3_000, 'from elsewhere');
    expect(newestAnswer(answer(2_000, 'mine'), listed)).toBe(listed);
    expect(newestAnswer(null, listed)).toBe(listed);
    expect(newestAnswer(null, null)).toBeNull();
  });
});
