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

// DER prefixes of an Ed25519 PKCS #8 private key and SubjectPublicKeyInfo (RFC 8410): the raw
// 32-byte seed or public key follows each.
const PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);
const SPKI_LENGTH = 44;

/** Ed25519 on OpenSSL: `ed25519SigningFromNodeCrypto(await import('node:crypto'))`. */
export function ed25519SigningFromNodeCrypto(crypto: NodeCryptoEd25519): Ed25519Signing {
  // A seed's key object, built once (that costs ~15x a signature): a device signs with the same few
  // keys all its life, e.g. one per diff-server request. Keyed by the array: Ferry never changes a
  // seed in place.
  const keys = new WeakMap<Uint8Array, KeyObjectLike>();
  const privateKey = (seed: Uint8Array): KeyObjectLike => {
    let key = keys.get(seed);
    if (!key) {
      const der = new Uint8Array(PKCS8_PREFIX.length + 32);
      der.set(PKCS8_PREFIX);
      der.set(seed, PKCS8_PREFIX.length);
      key = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
      der.fill(0);
      keys.set(seed, key);
    }
    return key;
  };
  return {
    publicKey(seed) {
      const spki = crypto.createPublicKey(privateKey(seed)).export({ format: 'der', type: 'spki' });
      if (spki.length !== SPKI_LENGTH) throw new Error('unexpected Ed25519 public key encoding');
      return new Uint8Array(spki.subarray(SPKI_LENGTH - 32));
    },
    sign: (seed, message) => new Uint8Array(crypto.sign(null, message, privateKey(seed))),
  };
}
