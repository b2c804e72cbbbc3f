import { FerryError, type FerryErrorCode } from '../../src/errors.js';

/**
 * The code of the FerryError `fn` throws, or 'ok' when it returns. Anything else it throws fails the
 * test: bad input must always get a typed error.
 */
export function codeOf(fn: () => unknown): FerryErrorCode | 'ok' {
  try {
    fn();
    return 'ok';
  } catch (error) {
    if (error instanceof FerryError) return error.code;
    throw error;
  }
}
