import { FerryError } from '../errors.js';

/**
 * Checks numeric options a caller set (undefined: the default applies). A zero, negative or NaN
 * window, batch or limit would not fail anywhere: the work would just never progress, or spin.
 */
export function requirePositive(
  owner: string,
  options: Record<string, number | undefined>,
  { integer = false, zeroAllowed = false } = {},
): void {
  for (const [name, value] of Object.entries(options)) {
    if (value === undefined) continue;
    const valid =
      typeof value === 'number' &&
      (zeroAllowed ? value >= 0 : value > 0) &&
      (integer ? Number.isSafeInteger(value) : Number.isFinite(value));
    if (!valid) {
      const what = `${integer ? 'an integer' : 'a finite number'} ${zeroAllowed ? '>= 0' : '> 0'}`;
      throw new FerryError('BAD_ARGUMENT', `${owner}: ${name} must be ${what} (got ${String(value)})`);
    }
  }
}
