import type { AppInfo, Backend } from './backend';
import { toBackendError } from './backend';

/** "Version 0.1.0 · Protocol 1", the line under the welcome pitch. */
export function formatVersionLine(info: AppInfo): string {
  const version = info.version.trim();
  if (version === '') {
    throw new RangeError('app version is empty');
  }
  const protocol = info.protocol_version;
  // The protocol version is a u8 on the Rust side; anything else means a mismatched build.
  if (!Number.isInteger(protocol) || protocol < 0 || protocol > 255) {
    throw new RangeError(`protocol version ${protocol} is not a u8`);
  }
  return `Version ${version.replace(/^v/i, '')} · Protocol ${protocol}`;
}

export type VersionLine = { ok: true; text: string } | { ok: false; text: string };

/** Fetches the app info and words it for the welcome screen; never rejects. */
export async function loadVersionLine(backend: Backend): Promise<VersionLine> {
  try {
    return { ok: true, text: formatVersionLine(await backend.appInfo()) };
  } catch (raw) {
    return { ok: false, text: `Version unavailable: ${toBackendError(raw).message}` };
  }
}
