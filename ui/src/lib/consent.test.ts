// The Data sharing screen's wording and its parts with the mock backend: requests in plain
// words, consents and their log, and the meter's numbers.
import { render } from 'svelte/server';
import { describe, expect, it } from 'vitest';
import { BackendError, MOCK_CONSENT_LINK, createMockBackend, mockConsentRequest } from './backend';
import type { ConsentLogEntryView, ConsentView, MeterView } from './bindings';
import {
  chartColumns,
  consentSinceText,
  consentStateLabel,
  energyText,
  historyText,
  isConsentLink,
  logLine,
  meterStatusText,
  periodText,
  powerText,
  purposeLabel,
  requestLines,
  retentionText,
  splitConsents,
  streamText,
} from './consent';
import ConsentRequestCard from './screens/ConsentRequestCard.svelte';
import DataSharing from './screens/DataSharing.svelte';
import MeterChart from './screens/MeterChart.svelte';

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 1, 12, 0);

function consent(over: Partial<ConsentView>): ConsentView {
  return {
    id: 'c1'.repeat(32),
    request: mockConsentRequest(),
    state: 'active',
    given_ms: NOW - DAY,
    given_by: 'lkpk1me',
    ended_ms: null,
    delivery: 'delivered',
    delivery_note: null,
    ...over,
  };
}

function meter(over: Partial<MeterView>): MeterView {
  return {
    device: 'lkdev1door',
    stream: 'p1',
    power_kw: 0.42,
    energy_today_kwh: 3.456,
    series: [],
    key_id: 1,
    last_seq: 10,
    readings: 10,
    last_reading_ms: NOW,
    problem: null,
    ...over,
  };
}

describe('request wording', () => {
  it('recognises request links in any case and nothing else', () => {
    expect(isConsentLink('LATCHKEY://C/ABCDEF')).toBe(true);
    expect(isConsentLink('  latchkey://c/abcdef ')).toBe(true);
    expect(isConsentLink('LATCHKEY://I/ABCDEF')).toBe(false);
    expect(isConsentLink('https://example.com/c/')).toBe(false);
    expect(isConsentLink('')).toBe(false);
  });

  it('says each purpose code as a person would', () => {
    expect(purposeLabel('insights')).toBe('energy insights');
    expect(purposeLabel('grid')).toBe('grid services');
    expect(purposeLabel('other')).toBe('another purpose');
    // A code this app does not know yet still shows, as the core labels it.
    expect(purposeLabel('code 9')).toBe('code 9');
    expect(streamText('p1')).toContain('smart meter');
    expect(streamText('water')).toBe('the data stream “water”');
  });

  it('says for how long: open-ended, until a date, or over', () => {
    expect(periodText(null, NOW)).toBe('Until you revoke it');
    const month = periodText(NOW + 30 * DAY + 1000, NOW);
    expect(month).toMatch(/^Until .*2026.*\(in 30 days\), or until you revoke it$/);
    expect(periodText(NOW + DAY + 1000, NOW)).toContain('(in 1 day)');
    expect(periodText(NOW + 3_600_000, NOW)).toContain('(today)');
    expect(periodText(NOW - 1000, NOW)).toMatch(/^Ended /);
  });

  it('says how long readings are kept, in days or whole years', () => {
    expect(retentionText(0)).toBe('Says it keeps no readings');
    expect(retentionText(1)).toBe('Says it keeps readings for 1 day');
    expect(retentionText(30)).toBe('Says it keeps readings for 30 days');
    expect(retentionText(365)).toBe('Says it keeps readings for 1 year');
    expect(retentionText(730)).toBe('Says it keeps readings for 2 years');
    expect(historyText(true)).toContain('before you agree');
    expect(historyText(false)).toContain('from when you agree');
  });

  it('puts who, what, why and how long on their own lines', () => {
    const lines = requestLines(
      mockConsentRequest({ terms: '500 units per hour', until_ms: NOW + 10 * DAY, retention_days: 7 }),
      NOW,
    );
    expect(lines.who).toBe('Watt Insights (https://watt-insights.example)');
    expect(lines.what).toBe('Your smart meter’s readings (P1 port) from Front door');
    expect(lines.why).toMatch(/^For energy insights: Shows which appliances/);
    expect(lines.howLong).toContain('in 10 days');
    expect(lines.kept).toBe('Says it keeps readings for 7 days');
    expect(lines.terms).toBe('Terms offered: 500 units per hour (recorded, not settled by Latchkey)');
    expect(requestLines(mockConsentRequest({ provider_url: '' }), NOW).who).toBe('Watt Insights');
    expect(requestLines(mockConsentRequest(), NOW).terms).toBeNull();
  });
});

describe('consents and the log', () => {
  it('labels states and says when a consent ended', () => {
    expect(consentStateLabel('active')).toBe('Can read now');
    expect(consentStateLabel('ended')).toBe('Ended by an ownership change');
    expect(consentSinceText(consent({}))).toMatch(/^Given /);
    expect(consentSinceText(consent({ state: 'revoked', ended_ms: NOW }))).toMatch(/^Given .* · revoked /);
  });

  it('lists active consents first, newest first, then the ended ones', () => {
    const a = consent({ id: 'a', given_ms: 1 });
    const b = consent({ id: 'b', given_ms: 2 });
    const old = consent({ id: 'c', state: 'expired', given_ms: 0, ended_ms: 5 });
    const recent = consent({ id: 'd', state: 'revoked', given_ms: 0, ended_ms: 9 });
    const { active, ended } = splitConsents([a, old, b, recent]);
    expect(active.map((c) => c.id)).toEqual(['b', 'a']);
    expect(ended.map((c) => c.id)).toEqual(['d', 'c']);
    expect(splitConsents([])).toEqual({ active: [], ended: [] });
  });

  it('words each log entry with its purpose and who signed it', () => {
    const entry = (kind: string, over: Partial<ConsentLogEntryView> = {}): ConsentLogEntryView => ({
      seq: 1,
      time_ms: NOW,
      kind,
      consent_id: 'c1',
      provider_name: 'Watt Insights',
      stream: 'p1',
      purpose: 'insights: which appliances use the most power',
      signer: 'lkpk1me',
      signer_is_me: true,
      hash: '00',
      ...over,
    });
    const name = (key: string) => (key === 'lkpk1other' ? 'co-owner lkpk1oth…' : 'someone');
    expect(logLine(entry('given'), name)).toBe('Given to Watt Insights for energy insights · p1 · by you');
    expect(logLine(entry('revoked'), name)).toBe('Revoked from Watt Insights · p1 · by you');
    expect(logLine(entry('expired'), name)).toBe('Watt Insights’s consent expired · p1 · by you');
    expect(logLine(entry('given', { purpose: 'grid: balancing', signer: 'lkpk1other', signer_is_me: false }), name)).toBe(
      'Given to Watt Insights for grid services · p1 · by co-owner lkpk1oth…',
    );
    expect(logLine(entry('given', { purpose: '' }), name)).toBe('Given to Watt Insights · p1 · by you');
  });
});

describe('meter numbers', () => {
  it('shows power in W below 1 kW and kW above, and returned power as negative', () => {
    expect(powerText(0.42)).toBe('420 W');
    expect(powerText(1.234)).toBe('1.23 kW');
    expect(powerText(-0.3)).toBe('−300 W');
    expect(powerText(null)).toBe('—');
    expect(powerText(Number.NaN)).toBe('—');
    expect(energyText(3.456)).toBe('3.46 kWh');
    expect(energyText(12.34)).toBe('12.3 kWh');
    expect(energyText(null)).toBe('—');
  });

  it('says why nothing arrives, or how many readings were opened with which key', () => {
    expect(meterStatusText(meter({ problem: 'The broker at mqtt://x refused the connection.' }))).toBe(
      'The broker at mqtt://x refused the connection.',
    );
    expect(meterStatusText(meter({ readings: 0 }))).toBe('Waiting for the first reading…');
    expect(meterStatusText(meter({ readings: 1, key_id: 2 }))).toBe('1 reading opened with your own key · stream key 2');
  });

  it('hands uPlot seconds and kW as columns', () => {
    expect(chartColumns([[1000, 0.5], [2000, 0.75]])).toEqual([[1, 2], [0.5, 0.75]]);
    expect(chartColumns([])).toEqual([[], []]);
  });

  it('renders the numbers before the chart library loads', () => {
    const { body } = render(MeterChart, { props: { meter: meter({ power_kw: 1.5, series: [[NOW, 1.5]] }) } });
    expect(body).toContain('1.50 kW');
    expect(body).toContain('3.46 kWh');
    expect(body).toContain('data-points="1"');
    expect(render(MeterChart, { props: { meter: null } }).body).toContain('Connecting to your meter');
  });
});

describe('screens', () => {
  it('shows a request with every part in plain words and both answers', () => {
    const { body } = render(ConsentRequestCard, {
      props: {
        request: mockConsentRequest({ until_ms: null, retention_days: 0 }),
        now: NOW,
        busy: false,
        approving: false,
        onApprove: () => {},
        onDismiss: () => {},
      },
    });
    expect(body).toContain('Watt Insights (https://watt-insights.example)');
    expect(body).toContain('Until you revoke it');
    expect(body).toContain('Says it keeps no readings');
    expect(body).toContain('For energy insights');
    expect(body).toContain('data-testid="consent-approve"');
    expect(body).not.toContain('consent-approving');
  });

  it('shows progress and holds both buttons while the nodes are asked', () => {
    const { body } = render(ConsentRequestCard, {
      props: {
        request: mockConsentRequest(),
        now: NOW,
        busy: true,
        approving: true,
        onApprove: () => {},
        onDismiss: () => {},
      },
    });
    expect(body).toContain('Writing your consent to the registry nodes');
    expect(body.match(/disabled/g)?.length).toBe(2);
  });

  it('starts with empty states: no request waiting, the nodes being asked', async () => {
    const backend = createMockBackend({ withIdentity: true, demo: true });
    await backend.claimText('LATCHKEY:C1:MOCK');
    const [door] = await backend.devices();
    const { body } = render(DataSharing, { props: { backend, device: door, me: null, onBack: () => {} } });
    expect(body).toContain('Data sharing');
    expect(body).toContain('No provider is waiting for an answer.');
    expect(body).toContain('Asking the nodes');
    expect(body).toContain('Connecting to your meter');
  });
});

describe('the mock plays the whole flow', () => {
  it('keeps a request from its link, approves it, revokes it, and logs both', async () => {
    const backend = createMockBackend({ withIdentity: true, demo: true });
    await expect(backend.consentRequestAdd(MOCK_CONSENT_LINK)).rejects.toThrow(BackendError);
    await backend.claimText('LATCHKEY:C1:MOCK');
    const [door] = await backend.devices();
    await expect(backend.consentRequestAdd('LATCHKEY://I/NOTCONSENT')).rejects.toMatchObject({ code: 'bad_consent_link' });
    const request = await backend.consentRequestAdd(MOCK_CONSENT_LINK);
    expect(await backend.consentRequests(door.id)).toHaveLength(1);
    const given = await backend.consentApprove(request.id);
    expect(given.state).toBe('active');
    expect(await backend.consentRequests(door.id)).toHaveLength(0);
    const first = await backend.meter(door.id, 'p1', null);
    expect(first.key_id).toBe(1);
    const revoked = await backend.consentRevoke(request.id);
    expect(revoked.state).toBe('revoked');
    await expect(backend.consentRevoke(request.id)).rejects.toMatchObject({ code: 'unknown_consent' });
    expect((await backend.consentLog(door.id)).map((e) => [e.seq, e.kind])).toEqual([
      [1, 'given'],
      [2, 'revoked'],
    ]);
    // The revocation rotated the key the owner's copy opens readings with.
    expect((await backend.meter(door.id, 'p1', null)).key_id).toBe(2);
  });

  it('dismisses a request without a trace in the log', async () => {
    const backend = createMockBackend({ withIdentity: true, demo: true });
    await backend.claimText('LATCHKEY:C1:MOCK');
    const [door] = await backend.devices();
    const request = await backend.consentRequestAdd(MOCK_CONSENT_LINK);
    await backend.consentRequestDismiss(request.id);
    expect(await backend.consentRequests(door.id)).toEqual([]);
    expect(await backend.consentLog(door.id)).toEqual([]);
  });
});
