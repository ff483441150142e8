// Wording for the Data sharing screen: consent requests, consents, the consent log and the
// owner's meter. Like format.ts it only phrases what the owner core decided.
import type { ConsentLogEntryView, ConsentRequestView, ConsentView, MeterView } from './bindings';

const DAY = 86_400_000;

/** Request links as providers hand them out (any letter case; a QR code's text is upper case). */
export function isConsentLink(text: string): boolean {
  return /^latchkey:\/\/c\//i.test(text.trim());
}

/** The purpose code's words, as a person reads them in a sentence ("for energy insights"). */
export function purposeLabel(label: string): string {
  switch (label) {
    case 'insights':
      return 'energy insights';
    case 'billing':
      return 'billing';
    case 'research':
      return 'research';
    case 'grid':
      return 'grid services';
    case 'monitoring':
      return 'monitoring';
    case 'other':
      return 'another purpose';
    default:
      return label;
  }
}

/** What is shared: a stream in words (`p1` is the smart meter's port). */
export function streamText(stream: string): string {
  return stream === 'p1' ? 'your smart meter’s readings (P1 port)' : `the data stream “${stream}”`;
}

function dateText(ms: number): string {
  return new Date(ms).toLocaleString(undefined, {
    day: 'numeric',
    month: 'short',
    year: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
}

/** For how long: "Until you revoke it", "Until 3 Mar 2027, 12:00 (in 90 days)", "Ended …". */
export function periodText(untilMs: number | null, nowMs: number): string {
  if (untilMs === null) return 'Until you revoke it';
  const left = untilMs - nowMs;
  if (left <= 0) return `Ended ${dateText(untilMs)}`;
  const days = Math.floor(left / DAY);
  const hint = days >= 2 ? `in ${days} days` : days === 1 ? 'in 1 day' : 'today';
  return `Until ${dateText(untilMs)} (${hint}), or until you revoke it`;
}

/** How long the provider says it keeps the readings. */
export function retentionText(days: number): string {
  if (days === 0) return 'Says it keeps no readings';
  if (days % 365 === 0) {
    const years = days / 365;
    return `Says it keeps readings for ${years} year${years === 1 ? '' : 's'}`;
  }
  return `Says it keeps readings for ${days} day${days === 1 ? '' : 's'}`;
}

export function historyText(history: boolean): string {
  return history ? 'Also asks for readings from before you agree' : 'Only readings from when you agree onwards';
}

/** The request's parts, one line each, in the order a person asks about them. */
export interface RequestLines {
  who: string;
  what: string;
  why: string;
  howLong: string;
  kept: string;
  history: string;
  terms: string | null;
}

export function requestLines(r: ConsentRequestView, nowMs: number): RequestLines {
  return {
    who: r.provider_url ? `${r.provider_name} (${r.provider_url})` : r.provider_name,
    what: `${capitalize(streamText(r.stream))} from ${r.device_name}`,
    why: `For ${purposeLabel(r.purpose_label)}: ${r.purpose}`,
    howLong: periodText(r.until_ms, nowMs),
    kept: retentionText(r.retention_days),
    history: historyText(r.history),
    terms: r.terms ? `Terms offered: ${r.terms} (recorded, not settled by Latchkey)` : null,
  };
}

/** A consent's state as a chip. */
export function consentStateLabel(state: string): string {
  switch (state) {
    case 'active':
      return 'Can read now';
    case 'revoked':
      return 'Revoked';
    case 'expired':
      return 'Expired';
    case 'ended':
      return 'Ended by an ownership change';
    default:
      return state;
  }
}

/** One consent's history in a line: since when, and how it ended. */
export function consentSinceText(c: ConsentView): string {
  const given = `Given ${dateText(c.given_ms)}`;
  if (c.state === 'active' || c.ended_ms === null) return given;
  return `${given} · ${consentStateLabel(c.state).toLowerCase()} ${dateText(c.ended_ms)}`;
}

/** Active consents first (newest first), then the ended ones (most recently ended first). */
export function splitConsents(consents: ConsentView[]): { active: ConsentView[]; ended: ConsentView[] } {
  const active = consents.filter((c) => c.state === 'active').sort((a, b) => b.given_ms - a.given_ms);
  const ended = consents
    .filter((c) => c.state !== 'active')
    .sort((a, b) => (b.ended_ms ?? b.given_ms) - (a.ended_ms ?? a.given_ms));
  return { active, ended };
}

/** A log entry in words: "Given to Watt Insights for energy insights · p1 · by you". */
export function logLine(e: ConsentLogEntryView, nameOf: (key: string) => string): string {
  // The core's purpose is `label: the provider's words`; the label reads as a phrase.
  const label = e.purpose.split(':', 1)[0].trim();
  const forWhat = label ? ` for ${purposeLabel(label)}` : '';
  const verb =
    e.kind === 'given'
      ? `Given to ${e.provider_name}${forWhat}`
      : e.kind === 'revoked'
        ? `Revoked from ${e.provider_name}`
        : e.kind === 'expired'
          ? `${e.provider_name}’s consent expired`
          : `${e.kind}: ${e.provider_name}`;
  return `${verb} · ${e.stream} · by ${e.signer_is_me ? 'you' : nameOf(e.signer)}`;
}

export function logTime(ms: number): string {
  return dateText(ms);
}

/** Power as a person reads it on a meter: W below 1 kW, else kW with two decimals. */
export function powerText(kw: number | null): string {
  if (kw === null || !Number.isFinite(kw)) return '—';
  const sign = kw < 0 ? '−' : '';
  const abs = Math.abs(kw);
  return abs < 1 ? `${sign}${Math.round(abs * 1000)} W` : `${sign}${abs.toFixed(2)} kW`;
}

export function energyText(kwh: number | null): string {
  if (kwh === null || !Number.isFinite(kwh)) return '—';
  return `${kwh.toFixed(kwh < 10 ? 2 : 1)} kWh`;
}

/** Under the numbers: how many readings, which key, or why nothing arrives. */
export function meterStatusText(m: MeterView): string {
  if (m.problem) return m.problem;
  if (m.readings === 0) return 'Waiting for the first reading…';
  const key = m.key_id === null ? '' : ` · stream key ${m.key_id}`;
  return `${m.readings} reading${m.readings === 1 ? '' : 's'} opened with your own key${key}`;
}

/** The series as uPlot's columns: seconds since the epoch, and kW. */
export function chartColumns(series: Array<[number, number]>): [number[], number[]] {
  return [series.map(([t]) => t / 1000), series.map(([, kw]) => kw)];
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
