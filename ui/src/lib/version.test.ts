import { describe, expect, it } from 'vitest';
import { BackendError, createMockBackend } from './backend';
import { formatVersionLine, loadVersionLine } from './version';

describe('formatVersionLine', () => {
  it('names the app and protocol versions', () => {
    expect(formatVersionLine({ name: 'Latchkey', version: '0.1.0', protocol_version: 1, mobile: false })).toBe(
      'Version 0.1.0 · Protocol 1',
    );
  });

  it('drops a leading v so the line never reads "vv"', () => {
    expect(formatVersionLine({ name: 'Latchkey', version: 'v2.0.0', protocol_version: 3, mobile: false })).toBe(
      'Version 2.0.0 · Protocol 3',
    );
  });

  it.each([-1, 256, 1.5, Number.NaN])('rejects protocol version %s', (protocol_version) => {
    expect(() => formatVersionLine({ name: 'Latchkey', version: '0.1.0', protocol_version, mobile: false })).toThrow(RangeError);
  });

  it('rejects an empty app version', () => {
    expect(() => formatVersionLine({ name: 'Latchkey', version: ' ', protocol_version: 1, mobile: false })).toThrow(RangeError);
  });
});

describe('loadVersionLine', () => {
  it('formats what the backend reports', async () => {
    const backend = createMockBackend({ info: { name: 'Latchkey', version: '1.4.2', protocol_version: 2, mobile: false } });
    expect(await loadVersionLine(backend)).toEqual({ ok: true, text: 'Version 1.4.2 · Protocol 2' });
    expect(backend.calls).toEqual(['appInfo']);
  });

  it('reports a backend failure instead of rejecting', async () => {
    const backend = createMockBackend({ failWith: new BackendError('internal', 'No answer.') });
    expect(await loadVersionLine(backend)).toEqual({ ok: false, text: 'Version unavailable: No answer.' });
  });

  it('reports a malformed answer instead of rejecting', async () => {
    const backend = createMockBackend({ info: { name: 'Latchkey', version: '0.1.0', protocol_version: 300, mobile: false } });
    const line = await loadVersionLine(backend);
    expect(line.ok).toBe(false);
    expect(line.text).toContain('300');
  });
});
