import * as nodeCrypto from 'node:crypto';
import { EventEmitter } from 'eventemitter3';
import { describe, expect, it } from 'vitest';
import { deriveSubkey } from '../../src/crypto/subkeys.js';
import { FerryError, isFerryError } from '../../src/errors.js';
import { type HandshakeOptions, handshakePrologue, performHandshake } from '../../src/session/handshake.js';
import { chaChaPolyFromNodeCrypto } from '../../src/session/noise/node-chachapoly.js';
import { HandshakeState, NN_PSK0 } from '../../src/session/noise.js';
import { SecureChannel } from '../../src/session/secure-channel.js';
import type { Transport, TransportEvents } from '../../src/transport/types.js';
import { utf8 } from '../../src/util/bytes.js';

/**
 * Test-only in-memory transport pair: ordered, asynchronous (one microtask per message, like a burst
 * of data-channel events), with configurable fingerprints so a test can play a signaling server that
 * rewrote one side's SDP. `delivered` records every message handed to this side.
 */
class PairTransport extends EventEmitter<TransportEvents> implements Transport {
  peer: PairTransport | undefined;
  closed = false;
  readonly delivered: Uint8Array[] = [];
  readonly bufferedAmount = 0;
  readonly lowWaterMark = 0;
  readonly maxMessageSize = 16 * 1024;

  constructor(
    readonly localFingerprint: string,
    public remoteFingerprint: string,
  ) {
    super();
  }

  send(data: Uint8Array): void {
    if (this.closed) throw new FerryError('CLOSED', 'transport closed');
    const peer = this.peer!;
    const copy = data.slice();
    queueMicrotask(() => {
      if (peer.closed) return;
      peer.delivered.push(copy);
      peer.emit('message', copy);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close');
    queueMicrotask(() => this.peer?.close());
  }
}

const FINGERPRINT_A =
  'sha-256 AA:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF';
const FINGERPRINT_B =
  'sha-256 BB:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF';

function transportPair(): [PairTransport, PairTransport] {
  const a = new PairTransport(FINGERPRINT_A, FINGERPRINT_B);
  const b = new PairTransport(FINGERPRINT_B, FINGERPRINT_A);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

const accountKey = new Uint8Array(32).fill(42);
const psk = deriveSubkey(accountKey, 'handshakePsk');
const base = { psk, roomId: 'room-1', timeoutMs: 5_000 };
const aliceOptions: HandshakeOptions = { ...base, initiator: true, localClientId: 'alice-laptop' };
const bobOptions: HandshakeOptions = { ...base, initiator: false, localClientId: 'bob-phone' };

async function handshakeBoth(
  a: PairTransport,
  b: PairTransport,
  options: { alice?: Partial<HandshakeOptions>; bob?: Partial<HandshakeOptions> } = {},
) {
  return Promise.allSettled([
    performHandshake(a, { ...aliceOptions, ...options.alice }),
    performHandshake(b, { ...bobOptions, ...options.bob }),
  ]);
}

function failure(result: PromiseSettledResult<SecureChannel>): FerryError {
  if (result.status === 'fulfilled') throw new Error('expected the handshake to fail');
  if (!isFerryError(result.reason)) throw new Error(`untyped failure: ${String(result.reason)}`);
  return result.reason;
}

const causeCode = (error: FerryError): string | undefined =>
  isFerryError(error.cause) ? error.cause.code : undefined;

describe('performHandshake over an in-memory transport pair', () => {
  it('succeeds both ways with equal session ids and authenticated client ids', async () => {
    const [a, b] = transportPair();
    const [alice, bob] = (await handshakeBoth(a, b)).map((r) => {
      if (r.status === 'rejected') throw r.reason;
      return r.value;
    }) as [SecureChannel, SecureChannel];
    expect(alice.sessionId).toBe(bob.sessionId);
    expect(alice.sessionId).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(alice.handshakeHash).toEqual(bob.handshakeHash);
    expect(alice.remoteClientId).toBe('bob-phone');
    expect(bob.remoteClientId).toBe('alice-laptop');
    expect(bob.decrypt(alice.encrypt(utf8('ping')))).toEqual(utf8('ping'));
    expect(alice.decrypt(bob.encrypt(utf8('pong')))).toEqual(utf8('pong'));
    expect(a.closed || b.closed).toBe(false);
  });

  it('a Node side on OpenSSL ChaChaPoly and a browser side on noble agree', async () => {
    const [a, b] = transportPair();
    const [alice, bob] = await Promise.all([
      performHandshake(a, { ...aliceOptions, aead: chaChaPolyFromNodeCrypto(nodeCrypto) }),
      performHandshake(b, bobOptions),
    ]);
    expect(bob.decrypt(alice.encrypt(utf8('ping')))).toEqual(utf8('ping'));
    expect(alice.decrypt(bob.encrypt(utf8('pong')))).toEqual(utf8('pong'));
  });

  it('gives every session fresh keys and a new session id', async () => {
    const first = transportPair();
    const second = transportPair();
    const [one, two] = await Promise.all([
      handshakeBoth(...first).then((r) => (r[0] as PromiseFulfilledResult<SecureChannel>).value),
      handshakeBoth(...second).then((r) => (r[1] as PromiseFulfilledResult<SecureChannel>).value),
    ]);
    expect(one.sessionId).not.toBe(two.sessionId);
    expect(() => two.decrypt(one.encrypt(utf8('x')))).toThrow(
      expect.objectContaining({ code: 'DECRYPT_FAILED' }),
    );
  });

  it('wrong PSK (another account, wrong passphrase) fails on both sides before any data', async () => {
    const [a, b] = transportPair();
    const otherPsk = deriveSubkey(new Uint8Array(32).fill(43), 'handshakePsk');
    const [alice, bob] = await handshakeBoth(a, b, { bob: { psk: otherPsk } });
    expect(failure(alice).code).toBe('HANDSHAKE_FAILED');
    expect(failure(bob).code).toBe('HANDSHAKE_FAILED');
    expect(causeCode(failure(bob))).toBe('DECRYPT_FAILED');
    expect(failure(bob).message).toMatch(/different account key/);
    // Bob never answered: Alice received nothing, Bob only her first handshake message.
    expect(a.delivered).toHaveLength(0);
    expect(b.delivered).toHaveLength(1);
    expect(a.closed && b.closed).toBe(true);
  });

  it("a signaling server that rewrote one side's fingerprint makes both sides fail", async () => {
    const [a, b] = transportPair();
    b.remoteFingerprint =
      'sha-256 EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE';
    const [alice, bob] = await handshakeBoth(a, b);
    expect(failure(alice).code).toBe('HANDSHAKE_FAILED');
    expect(failure(bob).code).toBe('HANDSHAKE_FAILED');
    expect(a.delivered).toHaveLength(0);
    expect(a.closed && b.closed).toBe(true);
  });

  it("the prologue binds the room and puts the initiator's fingerprint first", () => {
    const prologue = handshakePrologue('room-1', FINGERPRINT_A, FINGERPRINT_B);
    expect(handshakePrologue('room-1', FINGERPRINT_B, FINGERPRINT_A)).not.toEqual(prologue);
    expect(handshakePrologue('room-2', FINGERPRINT_A, FINGERPRINT_B)).not.toEqual(prologue);
    // Spelling differences of one certificate fingerprint do not matter.
    expect(
      handshakePrologue('room-1', ` ${FINGERPRINT_A.toLowerCase().replace(' ', '  ')}`, FINGERPRINT_B),
    ).toEqual(prologue);
  });

  it('different rooms fail', async () => {
    const [a, b] = transportPair();
    const [alice, bob] = await handshakeBoth(a, b, { bob: { roomId: 'room-2' } });
    expect(failure(alice).code).toBe('HANDSHAKE_FAILED');
    expect(failure(bob).code).toBe('HANDSHAKE_FAILED');
  });

  it('a transport with no fingerprint is refused', async () => {
    const [a, b] = transportPair();
    b.remoteFingerprint = '';
    const [, bob] = await handshakeBoth(a, b);
    expect(failure(bob).code).toBe('HANDSHAKE_FAILED');
    expect(causeCode(failure(bob))).toBe('TRANSPORT');
  });

  it('rejects a peer that presents our own client id (a reflected handshake)', async () => {
    const [a, b] = transportPair();
    const [alice, bob] = await handshakeBoth(a, b, { bob: { localClientId: 'alice-laptop' } });
    // Bob sees Alice claim "his" id and hangs up without answering.
    expect(causeCode(failure(bob))).toBe('REPLAY');
    expect(failure(alice).code).toBe('HANDSHAKE_FAILED');
    expect(a.delivered).toHaveLength(0);
  });

  it('the initiator also rejects its own client id in the answer', async () => {
    const [a, b] = transportPair();
    const alice = performHandshake(a, aliceOptions).catch((e: unknown) => e);
    // A peer holding the account key but answering with Alice's own id (a relay reflecting her).
    const reflector = await manualResponder(b, payload('alice-laptop', Date.now()));
    b.send(reflector.answer);
    const error = (await alice) as FerryError;
    expect(error.code).toBe('HANDSHAKE_FAILED');
    expect(causeCode(error)).toBe('REPLAY');
  });

  it('rejects a malformed payload inside an authentic message', async () => {
    for (const bad of [
      new Uint8Array(0),
      utf8('{"clientId":"bob"}'),
      payload('bob-phone', Date.now()).slice(0, -1),
    ]) {
      const [a, b] = transportPair();
      const alice = performHandshake(a, aliceOptions).catch((e: unknown) => e);
      b.send((await manualResponder(b, bad)).answer);
      const error = (await alice) as FerryError;
      expect(error.code).toBe('HANDSHAKE_FAILED');
      expect(causeCode(error)).toBe('BAD_ENCODING');
    }
  });

  it('rejects stale timestamps on either side', async () => {
    const hourAgo = () => Date.now() - 3_600_000;
    const staleInitiator = transportPair();
    const [, bob] = await handshakeBoth(...staleInitiator, { alice: { now: hourAgo } });
    expect(causeCode(failure(bob))).toBe('STALE');

    // A responder whose clock is off: Alice refuses the answer.
    const staleResponder = transportPair();
    const [alice] = await handshakeBoth(...staleResponder, {
      bob: { now: hourAgo, maxClockSkewMs: 7_200_000 },
    });
    expect(causeCode(failure(alice))).toBe('STALE');
    expect(staleResponder[0].closed).toBe(true);
  });

  it('accepts clocks within the window', async () => {
    const [a, b] = transportPair();
    const [alice, bob] = await handshakeBoth(a, b, { bob: { now: () => Date.now() + 60_000 } });
    expect(alice.status).toBe('fulfilled');
    expect(bob.status).toBe('fulfilled');
  });

  it('times out with HANDSHAKE_FAILED and closes the transport when the peer stays silent', async () => {
    const [a] = transportPair();
    const error = await performHandshake(a, { ...aliceOptions, timeoutMs: 20 }).catch((e: unknown) => e);
    expect(isFerryError(error, 'HANDSHAKE_FAILED')).toBe(true);
    expect(causeCode(error as FerryError)).toBe('TIMEOUT');
    expect(a.closed).toBe(true);
  });

  it('fails when the peer closes, or the transport is already closed', async () => {
    const [a, b] = transportPair();
    const pending = performHandshake(b, bobOptions).catch((e: unknown) => e);
    a.close();
    expect(causeCode((await pending) as FerryError)).toBe('CLOSED');

    const [c] = transportPair();
    c.close();
    const error = await performHandshake(c, aliceOptions).catch((e: unknown) => e);
    expect(causeCode(error as FerryError)).toBe('CLOSED');
  });

  it('fails on garbage instead of a handshake message', async () => {
    for (const garbage of [
      new Uint8Array(0),
      new Uint8Array(31),
      new Uint8Array(48),
      new Uint8Array(70_000),
    ]) {
      const [a, b] = transportPair();
      const pending = performHandshake(b, bobOptions).catch((e: unknown) => e);
      a.send(garbage);
      const error = (await pending) as FerryError;
      expect(error.code).toBe('HANDSHAKE_FAILED');
      expect(b.closed).toBe(true);
    }
  });

  it('fails when both sides think they initiate', async () => {
    const [a, b] = transportPair();
    const [alice, bob] = await handshakeBoth(a, b, { bob: { initiator: true } });
    expect(failure(alice).code).toBe('HANDSHAKE_FAILED');
    expect(failure(bob).code).toBe('HANDSHAKE_FAILED');
  });

  it('refuses bad options with HANDSHAKE_FAILED and closes the transport', async () => {
    for (const bad of [
      { psk: new Uint8Array(16) },
      { localClientId: '' },
      { localClientId: 'x'.repeat(256) },
      { roomId: '' },
    ]) {
      const [a] = transportPair();
      const error = (await performHandshake(a, { ...aliceOptions, ...bad }).catch(
        (e: unknown) => e,
      )) as FerryError;
      expect(error.code).toBe('HANDSHAKE_FAILED');
      expect(a.closed).toBe(true);
    }
  });

  it('keeps frames that arrive in the same burst as the last handshake message', async () => {
    const [a, b] = transportPair();
    const alicePending = performHandshake(a, aliceOptions);
    const bob = await manualResponder(b, payload('bob-phone', Date.now()));
    // Answer and two frames in one synchronous burst: all three are delivered before Alice's
    // caller can possibly attach a listener.
    b.send(bob.answer);
    b.send(bob.channel.encrypt(utf8('first')));
    b.send(bob.channel.encrypt(utf8('second')));
    const alice = await alicePending;
    const received: string[] = [];
    const onFrame = (frame: Uint8Array) => received.push(new TextDecoder().decode(alice.decrypt(frame)));
    a.on('message', onFrame);
    const early = alice.takeEarlyFrames();
    expect(early).toHaveLength(2);
    for (const frame of early) onFrame(frame);
    b.send(bob.channel.encrypt(utf8('third')));
    await new Promise((resolve) => a.once('message', resolve));
    expect(received).toEqual(['first', 'second', 'third']);
    expect(alice.takeEarlyFrames()).toEqual([]);
  });

  it('bounds the early-frame buffer: a caller that never takes its frames gets the transport closed', async () => {
    const [a, b] = transportPair();
    const alicePending = performHandshake(a, aliceOptions);
    const bob = await manualResponder(b, payload('bob-phone', Date.now()));
    b.send(bob.answer);
    await alicePending;
    for (let i = 0; i < 1025; i++) b.send(bob.channel.encrypt(new Uint8Array(1)));
    await new Promise<void>((resolve) => a.once('close', () => resolve()));
    expect(a.closed).toBe(true);
  });
});

/** The wire payload, written out by hand to pin the format: version 1, ms big-endian, id length, id. */
function payload(clientId: string, timestamp: number): Uint8Array {
  const id = utf8(clientId);
  const out = new Uint8Array(10 + id.length);
  out[0] = 1;
  new DataView(out.buffer).setBigUint64(1, BigInt(timestamp));
  out[9] = id.length;
  out.set(id, 10);
  return out;
}

/**
 * A responder driven by hand with the Noise layer, for peers performHandshake would never be: it
 * answers with any payload, and its answer is returned rather than sent so a test controls timing.
 */
async function manualResponder(transport: PairTransport, answerPayload: Uint8Array) {
  const first = await new Promise<Uint8Array>((resolve) => transport.once('message', resolve));
  const noise = new HandshakeState({
    pattern: NN_PSK0,
    initiator: false,
    prologue: handshakePrologue(base.roomId, transport.remoteFingerprint, transport.localFingerprint),
    psks: [psk],
  });
  noise.readMessage(first);
  const answer = noise.writeMessage(answerPayload);
  const { send, receive } = noise.split();
  const channel = new SecureChannel({
    send,
    receive,
    handshakeHash: noise.handshakeHash,
    remoteClientId: 'alice-laptop',
  });
  return { answer, channel };
}
