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

// DER prefixes of an X25519 PKCS #8 private key and SubjectPublicKeyInfo (RFC 8410): the raw 32-byte
// key follows each.
const PKCS8_PREFIX = [
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];
const SPKI_PREFIX = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00];
const KEY_LEN = 32;

const der = (prefix: number[], key: Uint8Array): Uint8Array => {
  if (key.length !== KEY_LEN) throw new Error('an X25519 key must be 32 bytes');
  const out = new Uint8Array(prefix.length + KEY_LEN);
  out.set(prefix);
  out.set(key, prefix.length);
  return out;
};

/** X25519 on OpenSSL: `x25519FromNodeCrypto(await import('node:crypto'))`. */
export function x25519FromNodeCrypto(crypto: NodeCryptoX25519): X25519 {
  const privateKey = (secretKey: Uint8Array) =>
    crypto.createPrivateKey({ key: der(PKCS8_PREFIX, secretKey), format: 'der', type: 'pkcs8' });
  return {
    publicKey(secretKey) {
      const spki = crypto.createPublicKey(privateKey(secretKey)).export({ format: 'der', type: 'spki' });
      return new Uint8Array(spki.subarray(SPKI_PREFIX.length));
    },
    // OpenSSL refuses an all-zero result (a low-order public key) with an error.
    sharedSecret: (secretKey, publicKey) =>
      new Uint8Array(
        crypto.diffieHellman({
          privateKey: privateKey(secretKey),
          publicKey: crypto.createPublicKey({
            key: der(SPKI_PREFIX, publicKey),
            format: 'der',
            type: 'spki',
          }),
        }),
      ),
  };
}
