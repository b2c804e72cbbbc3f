/**
 * Ed25519 and X25519 keys in the DER forms Node's crypto imports and exports (RFC 8410: PKCS #8 for
 * private keys, SubjectPublicKeyInfo for public ones): a fixed prefix, then the raw 32-byte key.
 */
const PREFIXES = {
  ed25519Private: [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
  ],
  ed25519Public: [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00],
  x25519Private: [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
  ],
  x25519Public: [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00],
} as const;

export type Rfc8410Form = keyof typeof PREFIXES;

const KEY_BYTES = 32;

/** The DER encoding of a raw 32-byte key; throws for any other length. */
export function rfc8410Der(form: Rfc8410Form, key: Uint8Array): Uint8Array {
  if (key.length !== KEY_BYTES) throw new Error(`an ${form} key must be ${KEY_BYTES} bytes`);
  const prefix = PREFIXES[form];
  const der = new Uint8Array(prefix.length + KEY_BYTES);
  der.set(prefix);
  der.set(key, prefix.length);
  return der;
}

/** The raw 32-byte key of a DER-encoded public key (the form Node exports). */
export function rfc8410RawPublicKey(form: 'ed25519Public' | 'x25519Public', der: Uint8Array): Uint8Array {
  if (der.length !== PREFIXES[form].length + KEY_BYTES) throw new Error(`unexpected ${form} encoding`);
  return new Uint8Array(der.subarray(der.length - KEY_BYTES));
}
