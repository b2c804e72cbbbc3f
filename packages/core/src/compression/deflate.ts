import { deflateSync, inflateSync } from 'fflate';
import { FerryError } from '../errors.js';
import { requirePositive } from '../util/options.js';

/**
 * Raw DEFLATE (RFC 1951), which every implementation reads and writes alike, so a browser device and
 * a Node device exchange compressed messages in either direction. The default is pure JavaScript
 * (fflate), for every runtime; Node's entry point switches to zlib (`deflateFromNodeZlib`), which is
 * native and ~2-3x faster.
 */
export interface Deflate {
  compress(data: Uint8Array): Uint8Array;
  /**
   * Inflates `data`, which the sender said holds exactly `length` bytes. Never allocates much more
   * than `length`, whatever the input claims. Throws FerryError 'BAD_ENCODING' for data that is not
   * DEFLATE, is cut short, or inflates to any other length.
   */
  decompress(data: Uint8Array, length: number): Uint8Array;
}

/**
 * Messages smaller than this are not compressed by default: sync batches and large documents are, a
 * single small write or an AI token is not (little to gain, and it would cost latency).
 */
export const DEFAULT_COMPRESS_MIN_BYTES = 8 * 1024;

/**
 * The smallest message to compress, from a `compressMinBytes` option: its value, the default when it
 * is absent, none for `false`. Throws BAD_ARGUMENT (naming `owner`) unless it is a positive integer.
 */
export function compressionThreshold(owner: string, compressMinBytes: number | false | undefined): number {
  if (compressMinBytes === false) return Number.POSITIVE_INFINITY;
  requirePositive(owner, { compressMinBytes }, { integer: true });
  return compressMinBytes ?? DEFAULT_COMPRESS_MIN_BYTES;
}

/** Level 1: messages are compressed on the way to the wire, where speed matters more than the last 10%. */
export const DEFLATE_LEVEL = 1;

export const wrongLength = (length: number, detail: string): FerryError =>
  new FerryError(
    'BAD_ENCODING',
    `compressed message does not inflate to its announced ${length} bytes: ${detail}`,
  );

export const fflateDeflate: Deflate = {
  compress: (data) => deflateSync(data, { level: DEFLATE_LEVEL }),
  decompress(data, length) {
    // fflate writes into the buffer it is given and silently drops what does not fit, so one byte
    // more than announced tells a longer stream from an exact one without inflating all of it.
    let out: Uint8Array;
    try {
      out = inflateSync(data, { out: new Uint8Array(length + 1) });
    } catch (cause) {
      throw new FerryError('BAD_ENCODING', `compressed message is not valid DEFLATE: ${String(cause)}`, {
        cause,
      });
    }
    if (out.length > length) throw wrongLength(length, 'it is longer');
    if (out.length < length) throw wrongLength(length, `it holds ${out.length}`);
    return out;
  },
};

let implementation: Deflate = fflateDeflate;

/** A compressed message starts with its inflated length (u32 big-endian); raw DEFLATE follows. */
const INFLATED_LENGTH_BYTES = 4;

/**
 * `data` as a compressed message (session records and relay diffs use the same form), or undefined
 * when compressing saves less than an eighth of it: not worth the receiver's inflating.
 */
export function compressMessage(data: Uint8Array): Uint8Array | undefined {
  const deflated = implementation.compress(data);
  const length = INFLATED_LENGTH_BYTES + deflated.length;
  if (length > data.length - (data.length >> 3)) return undefined;
  const message = new Uint8Array(length);
  new DataView(message.buffer).setUint32(0, data.length);
  message.set(deflated, INFLATED_LENGTH_BYTES);
  return message;
}

/**
 * The bytes of a compressed message. Throws FerryError: TOO_LARGE when it announces more than
 * `maxBytes` (nothing is inflated then), BAD_ENCODING when it is malformed or inflates to any other
 * length than it announces.
 */
export function decompressMessage(message: Uint8Array, maxBytes: number): Uint8Array {
  if (message.length < INFLATED_LENGTH_BYTES) {
    throw new FerryError('BAD_ENCODING', 'compressed message without its length');
  }
  const length = new DataView(message.buffer, message.byteOffset).getUint32(0);
  if (length > maxBytes) {
    throw new FerryError('TOO_LARGE', `compressed message of ${length} bytes exceeds ${maxBytes}`);
  }
  return implementation.decompress(message.subarray(INFLATED_LENGTH_BYTES), length);
}

/** Use another DEFLATE implementation from now on (see Deflate). */
export function useDeflate(deflate: Deflate): void {
  implementation = deflate;
}
