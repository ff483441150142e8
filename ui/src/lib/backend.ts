// Every call from the UI to the Rust side goes through this module, so the rest of
// the UI depends on the `Backend` interface alone and tests can swap in the mock.
import { invoke, type InvokeArgs } from '@tauri-apps/api/core';

/** Mirrors `AppInfo` in src-tauri/src/commands.rs, field for field. */
export interface AppInfo {
  name: string;
  version: string;
  protocol_version: number;
}

export interface Backend {
  appInfo(): Promise<AppInfo>;
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
};

export interface MockOptions {
  info?: AppInfo;
  /** When set, every call rejects with this error instead of answering. */
  failWith?: BackendError;
}

export interface MockBackend extends Backend {
  /** Names of the calls made so far, in order. */
  readonly calls: string[];
}

export const MOCK_APP_INFO: AppInfo = { name: 'Latchkey', version: '0.0.0-mock', protocol_version: 1 };

/** A backend with no Rust behind it, for tests and for running the UI in a plain browser. */
export function createMockBackend(options: MockOptions = {}): MockBackend {
  const calls: string[] = [];
  const answer = async <T>(name: string, value: T): Promise<T> => {
    calls.push(name);
    if (options.failWith) {
      throw options.failWith;
    }
    return structuredClone(value);
  };
  return {
    calls,
    appInfo: () => answer('appInfo', options.info ?? MOCK_APP_INFO),
  };
}
