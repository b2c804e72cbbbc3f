import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { FerryError } from '../errors.js';
import { concatBytes, utf8 } from '../util/bytes.js';

/**
 * The part of the Noise Protocol Framework (revision 34, noiseprotocol.org/noise.html) that Ferry's
 * peer handshake needs: CipherState, SymmetricState and a HandshakeState for the NN pattern family
 * (tokens `e`, `ee`, `psk`) over 25519, ChaChaPoly and SHA256. Written on noble so it runs unchanged
 * in browsers and Node; checked against the cacophony and snow test vectors
 * (packages/core/test/session/noise.test.ts).
 */

const DH_LEN = 32;
const HASH_LEN = 32;
export const KEY_LEN = 32;
export const TAG_LEN = 16;
/** Noise caps every handshake and transport message at 65535 bytes. */
const MAX_NOISE_MESSAGE = 65_535;
/**
 * Noise allows nonces up to 2^64-2; JavaScript numbers are exact up to 2^53-1, which no session
 * reaches (a frame per nanosecond would take 104 days), so that is our ceiling.
 */
export const MAX_NONCE = Number.MAX_SAFE_INTEGER;

const EMPTY = new Uint8Array(0);

/**
 * ChaCha20-Poly1305 (RFC 8439) as Noise uses it. Pure JS (noble) by default, so core runs in
 * browsers; Node can plug in OpenSSL's through `chaChaPolyFromNodeCrypto` (13x faster here: 1.7 GB/s
 * against 134 MB/s for 16 KiB frames, which matters once two peers share one process).
 */
export interface ChaChaPoly {
  /** Returns ciphertext || tag; writes into `output` (plaintext length + 16) when given. */
  encrypt(
    key: Uint8Array,
    nonce: Uint8Array,
    ad: Uint8Array,
    plaintext: Uint8Array,
    output?: Uint8Array,
  ): Uint8Array;
  /** Returns the plaintext; throws (any error) when the tag does not verify. */
  decrypt(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
}

export const nobleChaChaPoly: ChaChaPoly = {
  encrypt: (key, nonce, ad, plaintext, output) => chacha20poly1305(key, nonce, ad).encrypt(plaintext, output),
  decrypt: (key, nonce, ad, ciphertext) => chacha20poly1305(key, nonce, ad).decrypt(ciphertext),
};

/**
 * X25519 (RFC 7748) as Noise's DH functions use it. Pure JS (noble) by default; Node's entry point
 * switches to OpenSSL's (`x25519FromNodeCrypto`), since noble's first public key builds precomputed
 * tables (~60 ms and ~6 MB of memory here, on every device's first connect). Both clamp secret keys
 * as RFC 7748 says, so they give the same bytes.
 */
export interface X25519 {
  publicKey(secretKey: Uint8Array): Uint8Array;
  /** Throws (any error) when the result is all zeros: a low-order public key, chosen by an attacker. */
  sharedSecret(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array;
}

export const nobleX25519: X25519 = {
  publicKey: (secretKey) => x25519.getPublicKey(secretKey),
  sharedSecret: (secretKey, publicKey) => x25519.getSharedSecret(secretKey, publicKey),
};

let dh: X25519 = nobleX25519;

/** Use another X25519 implementation for handshakes from now on (see X25519). */
export function useX25519(implementation: X25519): void {
  dh = implementation;
}

/** ChaChaPoly nonce encoding: 32 zero bits, then the 64-bit counter little-endian. */
function chachaNonce(n: number): Uint8Array {
  const nonce = new Uint8Array(12);
  const view = new DataView(nonce.buffer);
  view.setUint32(4, n >>> 0, true);
  view.setUint32(8, Math.floor(n / 2 ** 32), true);
  return nonce;
}

export class CipherState {
  private n = 0;

  constructor(
    private readonly k: Uint8Array | null = null,
    private readonly aead: ChaChaPoly = nobleChaChaPoly,
  ) {
    if (k && k.length !== KEY_LEN)
      throw new FerryError('BAD_ARGUMENT', 'a Noise cipher key must be 32 bytes');
  }

  hasKey(): boolean {
    return this.k !== null;
  }

  get nonce(): number {
    return this.n;
  }

  /** Noise's SetNonce: lets a transport carry explicit counters (see secure-channel.ts). */
  setNonce(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new FerryError('INTERNAL', `invalid Noise nonce ${n}`);
    this.n = n;
  }

  /** Encrypts under the current nonce, then advances it. `output` (plaintext + 16 bytes) avoids a copy. */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array, output?: Uint8Array): Uint8Array {
    if (!this.k) {
      if (!output) return plaintext.slice();
      output.set(plaintext);
      return output;
    }
    if (this.n >= MAX_NONCE) throw new FerryError('LIMIT', 'Noise nonce exhausted: start a new session');
    const ciphertext = this.aead.encrypt(this.k, chachaNonce(this.n), ad, plaintext, output);
    this.n++;
    return ciphertext;
  }

  /** Decrypts under the current nonce and advances it only if the tag checks out. */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (!this.k) return ciphertext.slice();
    if (this.n >= MAX_NONCE) throw new FerryError('LIMIT', 'Noise nonce exhausted: start a new session');
    if (ciphertext.length < TAG_LEN) {
      throw new FerryError('DECRYPT_FAILED', 'ciphertext is shorter than an authentication tag');
    }
    let plaintext: Uint8Array;
    try {
      plaintext = this.aead.decrypt(this.k, chachaNonce(this.n), ad, ciphertext);
    } catch (cause) {
      throw new FerryError('DECRYPT_FAILED', 'ciphertext failed authentication', { cause });
    }
    this.n++;
    return plaintext;
  }
}

/** Noise's HKDF is RFC 5869 HKDF with the chaining key as salt and an empty info. */
function noiseHkdf(chainingKey: Uint8Array, ikm: Uint8Array, outputs: 2 | 3): Uint8Array[] {
  const okm = hkdf(sha256, ikm, chainingKey, undefined, outputs * HASH_LEN);
  return Array.from({ length: outputs }, (_, i) => okm.slice(i * HASH_LEN, (i + 1) * HASH_LEN));
}

class SymmetricState {
  private ck: Uint8Array;
  private h: Uint8Array;
  private cipher: CipherState;

  constructor(
    protocolName: string,
    private readonly aead: ChaChaPoly = nobleChaChaPoly,
  ) {
    this.cipher = new CipherState(null, aead);
    const name = utf8(protocolName);
    this.h =
      name.length <= HASH_LEN ? concatBytes(name, new Uint8Array(HASH_LEN - name.length)) : sha256(name);
    this.ck = this.h;
  }

  get handshakeHash(): Uint8Array {
    return this.h.slice();
  }

  hasKey(): boolean {
    return this.cipher.hasKey();
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, k] = noiseHkdf(this.ck, ikm, 2) as [Uint8Array, Uint8Array];
    this.ck = ck;
    this.cipher = new CipherState(k, this.aead);
  }

  mixHash(data: Uint8Array): void {
    this.h = sha256(concatBytes(this.h, data));
  }

  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, tempH, k] = noiseHkdf(this.ck, ikm, 3) as [Uint8Array, Uint8Array, Uint8Array];
    this.ck = ck;
    this.mixHash(tempH);
    this.cipher = new CipherState(k, this.aead);
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.cipher.encryptWithAd(this.h, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.cipher.decryptWithAd(this.h, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }

  /** The initiator sends with the first CipherState, the responder with the second. */
  split(): [CipherState, CipherState] {
    const [k1, k2] = noiseHkdf(this.ck, EMPTY, 2) as [Uint8Array, Uint8Array];
    return [new CipherState(k1, this.aead), new CipherState(k2, this.aead)];
  }
}

/** Tokens of the NN family: no static keys, so nothing else is needed. */
export type NoiseToken = 'e' | 'ee' | 'psk';

export interface HandshakePattern {
  /** Pattern name with modifiers, as in the protocol name: "NNpsk0". */
  readonly name: string;
  /** Message patterns in order; even indexes are written by the initiator. */
  readonly messages: readonly (readonly NoiseToken[])[];
}

/** Ferry's peer handshake: both sides prove the account PSK, fresh ephemerals give forward secrecy. */
export const NN_PSK0: HandshakePattern = {
  name: 'NNpsk0',
  messages: [
    ['psk', 'e'],
    ['e', 'ee'],
  ],
};

export const noiseProtocolName = (pattern: HandshakePattern): string =>
  `Noise_${pattern.name}_25519_ChaChaPoly_SHA256`;

export interface HandshakeStateOptions {
  pattern: HandshakePattern;
  initiator: boolean;
  prologue: Uint8Array;
  /** One 32-byte key per `psk` token, in order. */
  psks?: readonly Uint8Array[];
  /** Fixed ephemeral secret key: ONLY for known-answer tests. Omit it and a fresh one is drawn. */
  ephemeralSecretKey?: Uint8Array;
  /** ChaCha20-Poly1305 implementation for the handshake and the split ciphers; noble by default. */
  aead?: ChaChaPoly;
}

export interface SplitCiphers {
  /** Encrypts what this side sends. */
  send: CipherState;
  /** Decrypts what this side receives. */
  receive: CipherState;
}

export class HandshakeState {
  private readonly symmetric: SymmetricState;
  private readonly pattern: HandshakePattern;
  private readonly initiator: boolean;
  private readonly psks: Uint8Array[];
  private readonly pskMode: boolean;
  private ephemeralSecret: Uint8Array | undefined;
  private remoteEphemeral: Uint8Array | undefined;
  private messageIndex = 0;
  private pskIndex = 0;
  /** Noise abandons a handshake after any error: its state may be half-updated. */
  private failed = false;

  constructor(options: HandshakeStateOptions) {
    this.pattern = options.pattern;
    this.initiator = options.initiator;
    this.psks = [...(options.psks ?? [])];
    const pskTokens = this.pattern.messages.flat().filter((token) => token === 'psk').length;
    if (this.psks.length !== pskTokens || this.psks.some((psk) => psk.length !== KEY_LEN)) {
      throw new FerryError(
        'BAD_ARGUMENT',
        `${this.pattern.name} needs ${pskTokens} pre-shared keys of 32 bytes`,
      );
    }
    this.pskMode = pskTokens > 0;
    this.ephemeralSecret = options.ephemeralSecretKey;
    this.symmetric = new SymmetricState(noiseProtocolName(this.pattern), options.aead);
    this.symmetric.mixHash(options.prologue);
  }

  get complete(): boolean {
    return this.messageIndex >= this.pattern.messages.length;
  }

  get handshakeHash(): Uint8Array {
    return this.symmetric.handshakeHash;
  }

  /** Whether the next message is ours to write. */
  get isMyTurn(): boolean {
    return !this.complete && this.messageIndex % 2 === (this.initiator ? 0 : 1);
  }

  writeMessage(payload: Uint8Array): Uint8Array {
    return this.guard(() => this.write(payload));
  }

  readMessage(message: Uint8Array): Uint8Array {
    return this.guard(() => this.read(message));
  }

  private write(payload: Uint8Array): Uint8Array {
    const tokens = this.nextTokens(true);
    const parts: Uint8Array[] = [];
    for (const token of tokens) {
      if (token === 'e') {
        this.ephemeralSecret ??= x25519.utils.randomSecretKey();
        const publicKey = dh.publicKey(this.ephemeralSecret);
        parts.push(publicKey);
        this.mixEphemeral(publicKey);
      } else {
        this.mixToken(token);
      }
    }
    parts.push(this.symmetric.encryptAndHash(payload));
    const message = concatBytes(...parts);
    if (message.length > MAX_NOISE_MESSAGE)
      throw new FerryError('TOO_LARGE', 'Noise message over 65535 bytes');
    this.messageIndex++;
    return message;
  }

  private read(message: Uint8Array): Uint8Array {
    if (message.length > MAX_NOISE_MESSAGE)
      throw new FerryError('TOO_LARGE', 'Noise message over 65535 bytes');
    const tokens = this.nextTokens(false);
    let offset = 0;
    for (const token of tokens) {
      if (token === 'e') {
        if (message.length - offset < DH_LEN) {
          throw new FerryError('HANDSHAKE_FAILED', 'handshake message too short for an ephemeral key');
        }
        this.remoteEphemeral = message.slice(offset, offset + DH_LEN);
        offset += DH_LEN;
        this.mixEphemeral(this.remoteEphemeral);
      } else {
        this.mixToken(token);
      }
    }
    const payload = this.symmetric.decryptAndHash(message.subarray(offset));
    this.messageIndex++;
    return payload;
  }

  /** Per-direction ciphers, oriented for this side. Only after the last message. */
  split(): SplitCiphers {
    if (!this.complete) throw new FerryError('INTERNAL', 'Noise split before the handshake completed');
    const [first, second] = this.symmetric.split();
    return this.initiator ? { send: first, receive: second } : { send: second, receive: first };
  }

  private guard<T>(step: () => T): T {
    if (this.failed) throw new FerryError('INTERNAL', 'this Noise handshake failed earlier: start a new one');
    try {
      return step();
    } catch (error) {
      this.failed = true;
      throw error;
    }
  }

  private nextTokens(writing: boolean): readonly NoiseToken[] {
    const tokens = this.pattern.messages[this.messageIndex];
    if (!tokens) throw new FerryError('INTERNAL', 'the Noise handshake is already complete');
    if (this.isMyTurn !== writing) {
      throw new FerryError(
        'INTERNAL',
        `Noise message ${this.messageIndex} is not ours to ${writing ? 'write' : 'read'}`,
      );
    }
    return tokens;
  }

  private mixEphemeral(publicKey: Uint8Array): void {
    this.symmetric.mixHash(publicKey);
    // PSK handshakes also mix `e` into the key: every session encrypts its first payload at nonce 0
    // under the PSK, and the fresh ephemeral is what keeps (key, nonce) from repeating.
    if (this.pskMode) this.symmetric.mixKey(publicKey);
  }

  private mixToken(token: 'ee' | 'psk'): void {
    if (token === 'psk') {
      this.symmetric.mixKeyAndHash(this.psks[this.pskIndex++]!);
      return;
    }
    if (!this.ephemeralSecret || !this.remoteEphemeral) {
      throw new FerryError('INTERNAL', 'Noise `ee` token before both ephemerals are known');
    }
    let shared: Uint8Array;
    try {
      shared = dh.sharedSecret(this.ephemeralSecret, this.remoteEphemeral);
    } catch (cause) {
      // A low-order point would give an all-zero, attacker-chosen secret.
      throw new FerryError('HANDSHAKE_FAILED', 'the peer sent an invalid ephemeral key', { cause });
    }
    this.symmetric.mixKey(shared);
  }
}
