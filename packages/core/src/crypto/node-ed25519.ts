import { rfc8410Der, rfc8410RawPublicKey } from './rfc8410.js';
import type { Ed25519Signing } from './sign.js';

/**
 * The slice of Node's `node:crypto` this adapter uses, typed structurally so this file never imports
 * a Node module (core stays isomorphic): Node's entry point passes the real module in.
 */
type KeyObjectLike = { export(options: { format: 'der'; type: 'spki' }): Uint8Array };
export interface NodeCryptoEd25519 {
  createPrivateKey(options: { key: Uint8Array; format: 'der'; type: 'pkcs8' }): KeyObjectLike;
  createPublicKey(key: KeyObjectLike): KeyObjectLike;
  sign(algorithm: null, data: Uint8Array, key: KeyObjectLike): Uint8Array;
}

/** Ed25519 on OpenSSL: `ed25519SigningFromNodeCrypto(await import('node:crypto'))`. */
export function ed25519SigningFromNodeCrypto(crypto: NodeCryptoEd25519): Ed25519Signing {
  // A seed's key object, built once (that costs ~15x a signature): a device signs with the same few
  // keys all its life, e.g. one per diff-server request. Keyed by the array: Ferry never changes a
  // seed in place.
  const keys = new WeakMap<Uint8Array, KeyObjectLike>();
  const privateKey = (seed: Uint8Array): KeyObjectLike => {
    let key = keys.get(seed);
    if (!key) {
      const der = rfc8410Der('ed25519Private', seed);
      key = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
      der.fill(0);
      keys.set(seed, key);
    }
    return key;
  };
  return {
    publicKey: (seed) =>
      rfc8410RawPublicKey(
        'ed25519Public',
        crypto.createPublicKey(privateKey(seed)).export({ format: 'der', type: 'spki' }),
      ),
    sign: (seed, message) => new Uint8Array(crypto.sign(null, message, privateKey(seed))),
  };
}
