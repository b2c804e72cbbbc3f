import { rfc8410Der, rfc8410RawPublicKey } from '../../crypto/rfc8410.js';
import type { X25519 } from '../noise.js';

/**
 * The slice of Node's `node:crypto` this adapter uses, typed structurally so this file never imports
 * a Node module (core stays isomorphic): Node's entry point passes the real module in.
 */
type KeyObjectLike = { export(options: { format: 'der'; type: 'spki' }): Uint8Array };
export interface NodeCryptoX25519 {
  createPrivateKey(options: { key: Uint8Array; format: 'der'; type: 'pkcs8' }): KeyObjectLike;
  createPublicKey(options: KeyObjectLike | { key: Uint8Array; format: 'der'; type: 'spki' }): KeyObjectLike;
  diffieHellman(options: { privateKey: KeyObjectLike; publicKey: KeyObjectLike }): Uint8Array;
}

/** X25519 on OpenSSL: `x25519FromNodeCrypto(await import('node:crypto'))`. */
export function x25519FromNodeCrypto(crypto: NodeCryptoX25519): X25519 {
  const privateKey = (secretKey: Uint8Array) =>
    crypto.createPrivateKey({ key: rfc8410Der('x25519Private', secretKey), format: 'der', type: 'pkcs8' });
  return {
    publicKey: (secretKey) =>
      rfc8410RawPublicKey(
        'x25519Public',
        crypto.createPublicKey(privateKey(secretKey)).export({ format: 'der', type: 'spki' }),
      ),
    // OpenSSL refuses an all-zero result (a low-order public key) with an error.
    sharedSecret: (secretKey, publicKey) =>
      new Uint8Array(
        crypto.diffieHellman({
          privateKey: privateKey(secretKey),
          publicKey: crypto.createPublicKey({
            key: rfc8410Der('x25519Public', publicKey),
            format: 'der',
            type: 'spki',
          }),
        }),
      ),
  };
}
