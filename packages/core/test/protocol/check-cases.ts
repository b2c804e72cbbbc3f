import fc from 'fast-check';
import { decodePeerMessageJson, isFerryError } from '../../src/index.js';
import { peerMessage } from './arbitraries.js';

/** Ways to break a valid message: each gives a value that a check must refuse, with a reason. */
const breakages: Array<(message: Record<string, unknown>) => unknown> = [
  (m) => ({ ...m, id: 42 }),
  (m) => ({ ...m, timestamp: 'now' }),
  (m) => ({ ...m, op: 'NOT_AN_OP' }),
  (m) => ({ ...m, extra: true }),
  (m) => {
    const { timestamp: _, ...rest } = m;
    return rest;
  },
  (m) => ({ ...m, data: 42 }),
  (m) => {
    const data = m.data as Record<string, unknown> | null;
    if (typeof data !== 'object' || data === null) return { ...m, data: [] };
    const [first] = Object.keys(data);
    return { ...m, data: first === undefined ? { unexpected: 1 } : { ...data, [first]: { wrong: [1] } } };
  },
];

/**
 * What decoding gives for a fixed sample of valid messages of every operation and broken variants of
 * each: "ok", or the error's code and message. The same seed gives the same values in every process.
 */
export function decodeOutcomes(): string[] {
  const messages = fc.sample(peerMessage, { seed: 20261127, numRuns: 150 });
  const values = messages.flatMap((message) => [
    message,
    ...breakages.map((breakIt) => breakIt(message as unknown as Record<string, unknown>)),
  ]);
  return values.map((value) => {
    try {
      decodePeerMessageJson(JSON.stringify(value));
      return 'ok';
    } catch (error) {
      return isFerryError(error) ? `${error.code}: ${error.message}` : `not a FerryError: ${String(error)}`;
    }
  });
}
