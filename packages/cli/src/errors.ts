import { isFerryError } from '@ferry/core';
import { ConfigError } from './config.js';

/** Something the user can fix: printed as one line, exit code 1, no stack trace. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Turns any failure into the one line `ferry` prints, with what to do where we know it. */
export function describeFailure(error: unknown): string {
  if (error instanceof UsageError || error instanceof ConfigError) return error.message;
  if (isFerryError(error)) {
    switch (error.code) {
      case 'BAD_PASSPHRASE':
        return `${error.message} (run \`ferry init\` to generate a strong one)`;
      case 'KDF_DOWNGRADE':
        return `${error.message} (refusing weaker key-derivation settings than this device already uses)`;
      default:
        return `${error.message} [${error.code}]`;
    }
  }
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EADDRINUSE') return `${(error as Error).message}: choose another --port`;
  if (code === 'ECONNREFUSED')
    return `${(error as Error).message}: is \`ferry server\` running at that address?`;
  return error instanceof Error ? error.message : String(error);
}
