import * as nodeCrypto from 'node:crypto';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chaChaPolyFromNodeCrypto } from '../../src/session/noise/node-chachapoly.js';
import { type NodeCryptoX25519, x25519FromNodeCrypto } from '../../src/session/noise/node-x25519.js';
import {
  type ChaChaPoly,
  CipherState,
  type HandshakePattern,
  HandshakeState,
  NN_PSK0,
  nobleChaChaPoly,
  nobleX25519,
  noiseProtocolName,
  useX25519,
  type X25519,
} from '../../src/session/noise.js';
import { fromHex, toHex, utf8 } from '../../src/util/bytes.js';
import { codeOf } from '../support/errors.js';
import vectorFile from '../vectors/noise-nn-family.json' with { type: 'json' };

interface NoiseVector {
  protocol_name: string;
  init_prologue: string;
  init_psks?: string[];
  init_ephemeral: string;
  resp_prologue: string;
  resp_psks?: string[];
  resp_ephemeral: string;
  handshake_hash?: string;
  messages: { payload: string; ciphertext: string }[];
  source: string;
}

const PATTERNS: Record<string, HandshakePattern> = {
  NN: { name: 'NN', messages: [['e'], ['e', 'ee']] },
  NNpsk0: NN_PSK0,
  NNpsk2: { name: 'NNpsk2', messages: [['e'], ['e', 'ee', 'psk']] },
  'NNpsk0+psk2': {
    name: 'NNpsk0+psk2',
    messages: [
      ['psk', 'e'],
      ['e', 'ee', 'psk'],
    ],
  },
};

const patternOf = (protocolName: string): HandshakePattern => {
  const pattern = PATTERNS[protocolName.split('_')[1]!];
  if (!pattern) throw new Error(`no pattern for ${protocolName}`);
  return pattern;
};

const vectors = vectorFile.vectors as NoiseVector[];

const IMPLEMENTATIONS: [string, ChaChaPoly][] = [
  ['noble', nobleChaChaPoly],
  ['node:crypto', chaChaPolyFromNodeCrypto(nodeCrypto)],
];

const opensslX25519 = x25519FromNodeCrypto(nodeCrypto as unknown as NodeCryptoX25519);
const DH_IMPLEMENTATIONS: [string, X25519][] = [
  ['noble', nobleX25519],
  ['OpenSSL', opensslX25519],
];

afterEach(() => useX25519(nobleX25519));

describe('Noise known-answer vectors (cacophony, snow)', () => {
  it('covers the exact protocol of the peer handshake', () => {
    expect(vectors.map((v) => v.protocol_name)).toContain('Noise_NNpsk0_25519_ChaChaPoly_SHA256');
    expect(noiseProtocolName(NN_PSK0)).toBe('Noise_NNpsk0_25519_ChaChaPoly_SHA256');
  });

  for (const [aeadName, aead] of IMPLEMENTATIONS)
    for (const [dhName, dh] of DH_IMPLEMENTATIONS)
      for (const vector of vectors) {
        it(`${vector.protocol_name} with ${aeadName} ChaChaPoly and ${dhName} X25519 (${vector.source})`, () => {
          useX25519(dh);
          const pattern = patternOf(vector.protocol_name);
          expect(noiseProtocolName(pattern)).toBe(vector.protocol_name);
          const initiator = new HandshakeState({
            pattern,
            initiator: true,
            prologue: fromHex(vector.init_prologue),
            psks: (vector.init_psks ?? []).map(fromHex),
            ephemeralSecretKey: fromHex(vector.init_ephemeral),
            aead,
          });
          const responder = new HandshakeState({
            pattern,
            initiator: false,
            prologue: fromHex(vector.resp_prologue),
            psks: (vector.resp_psks ?? []).map(fromHex),
            ephemeralSecretKey: fromHex(vector.resp_ephemeral),
            aead,
          });

          const handshakeMessages = vector.messages.slice(0, pattern.messages.length);
          handshakeMessages.forEach((message, i) => {
            const [writer, reader] = i % 2 === 0 ? [initiator, responder] : [responder, initiator];
            const ciphertext = writer.writeMessage(fromHex(message.payload));
            expect(toHex(ciphertext)).toBe(message.ciphertext);
            expect(toHex(reader.readMessage(ciphertext))).toBe(message.payload);
          });
          expect(initiator.complete && responder.complete).toBe(true);
          expect(toHex(initiator.handshakeHash)).toBe(toHex(responder.handshakeHash));
          if (vector.handshake_hash) expect(toHex(initiator.handshakeHash)).toBe(vector.handshake_hash);

          const initiatorCiphers = initiator.split();
          const responderCiphers = responder.split();
          vector.messages.slice(pattern.messages.length).forEach((message, j) => {
            const i = pattern.messages.length + j;
            const [send, receive] =
              i % 2 === 0
                ? [initiatorCiphers.send, responderCiphers.receive]
                : [responderCiphers.send, initiatorCiphers.receive];
            const ciphertext = send.encryptWithAd(new Uint8Array(0), fromHex(message.payload));
            expect(toHex(ciphertext)).toBe(message.ciphertext);
            expect(toHex(receive.decryptWithAd(new Uint8Array(0), ciphertext))).toBe(message.payload);
          });
        });
      }
});

const PSK = new Uint8Array(32).fill(7);

const pair = (initiatorOptions: { psk?: Uint8Array; prologue?: Uint8Array } = {}) => ({
  initiator: new HandshakeState({
    pattern: NN_PSK0,
    initiator: true,
    prologue: initiatorOptions.prologue ?? utf8('prologue'),
    psks: [initiatorOptions.psk ?? PSK],
  }),
  responder: new HandshakeState({
    pattern: NN_PSK0,
    initiator: false,
    prologue: utf8('prologue'),
    psks: [PSK],
  }),
});

describe.each(DH_IMPLEMENTATIONS)('NNpsk0 HandshakeState with %s X25519', (_, dh) => {
  beforeEach(() => useX25519(dh));

  it('runs with fresh ephemerals and agrees on directional keys', () => {
    const { initiator, responder } = pair();
    expect(responder.readMessage(initiator.writeMessage(utf8('hi')))).toEqual(utf8('hi'));
    expect(initiator.readMessage(responder.writeMessage(utf8('ho')))).toEqual(utf8('ho'));
    const a = initiator.split();
    const b = responder.split();
    const none = new Uint8Array(0);
    expect(b.receive.decryptWithAd(none, a.send.encryptWithAd(none, utf8('x')))).toEqual(utf8('x'));
    expect(a.receive.decryptWithAd(none, b.send.encryptWithAd(none, utf8('y')))).toEqual(utf8('y'));
  });

  it('a different PSK fails on the very first message', () => {
    const { initiator, responder } = pair({ psk: new Uint8Array(32).fill(8) });
    expect(codeOf(() => responder.readMessage(initiator.writeMessage(utf8('hi'))))).toBe('DECRYPT_FAILED');
  });

  it('a different prologue fails on the very first message', () => {
    const { initiator, responder } = pair({ prologue: utf8('prologue!') });
    expect(codeOf(() => responder.readMessage(initiator.writeMessage(utf8('hi'))))).toBe('DECRYPT_FAILED');
  });

  it('rejects truncated messages and low-order ephemerals, then refuses to continue', () => {
    const truncated = pair();
    expect(codeOf(() => truncated.responder.readMessage(new Uint8Array(20)))).toBe('HANDSHAKE_FAILED');
    const valid = truncated.initiator.writeMessage(new Uint8Array(0));
    expect(codeOf(() => truncated.responder.readMessage(valid))).toBe('INTERNAL');

    const lowOrder = pair();
    lowOrder.responder.readMessage(lowOrder.initiator.writeMessage(new Uint8Array(0)));
    const reply = lowOrder.responder.writeMessage(new Uint8Array(0));
    reply.fill(0, 0, 32);
    expect(codeOf(() => lowOrder.initiator.readMessage(reply))).toBe('HANDSHAKE_FAILED');
    expect(codeOf(() => lowOrder.initiator.split())).toBe('INTERNAL');
  });

  it('refuses out-of-turn calls', () => {
    const { initiator, responder } = pair();
    expect(initiator.isMyTurn && !responder.isMyTurn).toBe(true);
    expect(codeOf(() => responder.writeMessage(new Uint8Array(0)))).toBe('INTERNAL');
    expect(codeOf(() => initiator.readMessage(new Uint8Array(64)))).toBe('INTERNAL');
  });

  it('refuses PSKs of the wrong number or size', () => {
    const make = (psks: Uint8Array[]) => () =>
      new HandshakeState({ pattern: NN_PSK0, initiator: true, prologue: new Uint8Array(0), psks });
    expect(codeOf(make([]))).toBe('BAD_ARGUMENT');
    expect(codeOf(make([new Uint8Array(16)]))).toBe('BAD_ARGUMENT');
    expect(codeOf(make([PSK, PSK]))).toBe('BAD_ARGUMENT');
  });
});

describe.each(IMPLEMENTATIONS)('CipherState with %s ChaChaPoly', (_, aead) => {
  it('advances the nonce only when decryption succeeds', () => {
    const key = new Uint8Array(32).fill(1);
    const sender = new CipherState(key, aead);
    const receiver = new CipherState(key, aead);
    const none = new Uint8Array(0);
    const first = sender.encryptWithAd(none, utf8('one'));
    const tampered = first.slice();
    tampered[0]! ^= 1;
    expect(codeOf(() => receiver.decryptWithAd(none, tampered))).toBe('DECRYPT_FAILED');
    expect(receiver.nonce).toBe(0);
    expect(receiver.decryptWithAd(none, first)).toEqual(utf8('one'));
    expect(receiver.nonce).toBe(1);
    expect(codeOf(() => receiver.decryptWithAd(none, new Uint8Array(15)))).toBe('DECRYPT_FAILED');
  });

  it('encrypts at an explicit nonce set with setNonce, and refuses unsafe nonces', () => {
    const key = new Uint8Array(32).fill(2);
    const sender = new CipherState(key, aead);
    const receiver = new CipherState(key, aead);
    const none = new Uint8Array(0);
    sender.setNonce(2 ** 40 + 5);
    const ciphertext = sender.encryptWithAd(none, utf8('far'));
    receiver.setNonce(2 ** 40 + 5);
    expect(receiver.decryptWithAd(none, ciphertext)).toEqual(utf8('far'));
    receiver.setNonce(2 ** 40 + 4);
    expect(codeOf(() => receiver.decryptWithAd(none, ciphertext))).toBe('DECRYPT_FAILED');
    expect(codeOf(() => sender.setNonce(2 ** 53))).toBe('INTERNAL');
    expect(codeOf(() => sender.setNonce(-1))).toBe('INTERNAL');
  });
});

describe('ChaChaPoly implementations', () => {
  it('interoperate, return plain Uint8Arrays, and both reject a flipped bit', () => {
    const [noble, native] = IMPLEMENTATIONS.map(([, aead]) => aead) as [ChaChaPoly, ChaChaPoly];
    const key = new Uint8Array(32).fill(5);
    const nonce = new Uint8Array(12).fill(1);
    const ad = utf8('ad');
    for (const length of [0, 1, 63, 64, 16_384]) {
      const plaintext = new Uint8Array(length).map((_, i) => i);
      const sealed = noble.encrypt(key, nonce, ad, plaintext);
      expect(native.encrypt(key, nonce, ad, plaintext)).toEqual(sealed);
      const opened = native.decrypt(key, nonce, ad, sealed);
      expect(opened.constructor).toBe(Uint8Array);
      expect(opened).toEqual(plaintext);
      const flipped = sealed.slice();
      flipped[flipped.length - 1]! ^= 1;
      expect(() => native.decrypt(key, nonce, ad, flipped)).toThrow();
      expect(() => noble.decrypt(key, nonce, ad, flipped)).toThrow();
      expect(() => native.decrypt(key, nonce, utf8('other'), sealed)).toThrow();
    }
    expect(() => native.decrypt(key, nonce, ad, new Uint8Array(15))).toThrow();
  });
});

describe('X25519 implementations', () => {
  it('give the same public keys and shared secrets', () => {
    const key = fc.uint8Array({ minLength: 32, maxLength: 32 });
    fc.assert(
      fc.property(key, key, (a, b) => {
        const publicB = opensslX25519.publicKey(b);
        expect(publicB).toEqual(nobleX25519.publicKey(b));
        const shared = opensslX25519.sharedSecret(a, publicB);
        expect(shared).toEqual(nobleX25519.sharedSecret(a, publicB));
        expect(shared).toEqual(nobleX25519.sharedSecret(b, nobleX25519.publicKey(a)));
      }),
      { numRuns: 50 },
    );
  });

  it.each(DH_IMPLEMENTATIONS)('%s refuses low-order public keys', (_, dh) => {
    const secret = new Uint8Array(32).fill(9);
    const one = new Uint8Array(32);
    one[0] = 1;
    for (const lowOrder of [new Uint8Array(32), one])
      expect(() => dh.sharedSecret(secret, lowOrder)).toThrow();
  });
});
