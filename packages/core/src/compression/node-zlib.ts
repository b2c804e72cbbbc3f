import { FerryError } from '../errors.js';
import { DEFLATE_LEVEL, type Deflate, wrongLength } from './deflate.js';

/**
 * The slice of Node's `node:zlib` this adapter uses, typed structurally so this file never imports a
 * Node module (core stays isomorphic): Node's entry point passes the real module in.
 */
export interface NodeZlib {
  deflateRawSync(data: Uint8Array, options: { level: number }): Uint8Array;
  inflateRawSync(data: Uint8Array, options: { maxOutputLength: number; chunkSize: number }): Uint8Array;
}

/** zlib's smallest output chunk (`zlib.constants.Z_MIN_CHUNK`). */
const MIN_CHUNK_BYTES = 64;

/** Raw DEFLATE on Node's native zlib: the same format as the default, faster. */
export function deflateFromNodeZlib(zlib: NodeZlib): Deflate {
  return {
    compress: (data) => plain(zlib.deflateRawSync(data, { level: DEFLATE_LEVEL })),
    decompress(data, length) {
      let out: Uint8Array;
      try {
        // zlib stops with a RangeError past maxOutputLength, so a longer stream costs no more memory.
        // One output chunk of the announced length: no joining of 16 KiB chunks (a third of the time).
        out = zlib.inflateRawSync(data, {
          maxOutputLength: Math.max(1, length),
          chunkSize: Math.max(MIN_CHUNK_BYTES, length),
        });
      } catch (cause) {
        if (cause instanceof RangeError) throw wrongLength(length, 'it is longer');
        throw new FerryError('BAD_ENCODING', `compressed message is not valid DEFLATE: ${String(cause)}`, {
          cause,
        });
      }
      if (out.length !== length) throw wrongLength(length, `it holds ${out.length}`);
      return plain(out);
    },
  };
}

/** zlib returns Buffers; core hands out plain Uint8Arrays (a view, no copy), as in browsers. */
const plain = (bytes: Uint8Array): Uint8Array => new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
