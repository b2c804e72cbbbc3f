import type { ChaChaPoly } from '../noise.js';

/**
 * The slice of Node's `node:crypto` this adapter uses, typed structurally so this file never imports
 * a Node module (core stays isomorphic): Node's entry point passes the real module in.
 */
interface AeadCipherLike {
  setAAD(ad: Uint8Array, options: { plaintextLength: number }): unknown;
  update(data: Uint8Array): Uint8Array;
  final(): Uint8Array;
  getAuthTag(): Uint8Array;
}
interface AeadDecipherLike {
  setAAD(ad: Uint8Array, options: { plaintextLength: number }): unknown;
  setAuthTag(tag: Uint8Array): unknown;
  update(data: Uint8Array): Uint8Array;
  final(): Uint8Array;
}
export interface NodeCryptoChaChaPoly {
  createCipheriv(
    algorithm: 'chacha20-poly1305',
    key: Uint8Array,
    iv: Uint8Array,
    options: { authTagLength: number },
  ): AeadCipherLike;
  createDecipheriv(
    algorithm: 'chacha20-poly1305',
    key: Uint8Array,
    iv: Uint8Array,
    options: { authTagLength: number },
  ): AeadDecipherLike;
}

const TAG = 16;

/** ChaCha20-Poly1305 on OpenSSL: `chaChaPolyFromNodeCrypto(await import('node:crypto'))`. */
export function chaChaPolyFromNodeCrypto(crypto: NodeCryptoChaChaPoly): ChaChaPoly {
  const options = { authTagLength: TAG };
  return {
    encrypt(key, nonce, ad, plaintext, output) {
      const cipher = crypto.createCipheriv('chacha20-poly1305', key, nonce, options);
      cipher.setAAD(ad, { plaintextLength: plaintext.length });
      const body = cipher.update(plaintext);
      const rest = cipher.final();
      const out = output ?? new Uint8Array(plaintext.length + TAG);
      out.set(body, 0);
      out.set(rest, body.length);
      out.set(cipher.getAuthTag(), plaintext.length);
      return out;
    },
    decrypt(key, nonce, ad, ciphertext) {
      if (ciphertext.length < TAG) throw new Error('ciphertext shorter than a tag');
      const decipher = crypto.createDecipheriv('chacha20-poly1305', key, nonce, options);
      decipher.setAAD(ad, { plaintextLength: ciphertext.length - TAG });
      decipher.setAuthTag(ciphertext.subarray(ciphertext.length - TAG));
      const body = decipher.update(ciphertext.subarray(0, ciphertext.length - TAG));
      const rest = decipher.final(); // throws when the tag does not verify; `body` is discarded then
      // ChaCha20 is a stream cipher: `final` adds nothing, and `body` is a fresh buffer (no copy).
      if (rest.length === 0) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
      const out = new Uint8Array(body.length + rest.length);
      out.set(body, 0);
      out.set(rest, body.length);
      return out;
    },
  };
}
