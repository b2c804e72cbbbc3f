import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { HandshakeState, NN_PSK0 } from '../../src/session/noise.js';
import { SECURE_FRAME_OVERHEAD, SecureChannel } from '../../src/session/secure-channel.js';
import { utf8 } from '../../src/util/bytes.js';
import { codeOf } from '../support/errors.js';

const PSK = new Uint8Array(32).fill(9);

/** Two ends of one session, keyed by a real NNpsk0 run (no transport needed). */
function session(): { alice: SecureChannel; bob: SecureChannel } {
  const prologue = utf8('secure-channel test');
  const initiator = new HandshakeState({ pattern: NN_PSK0, initiator: true, prologue, psks: [PSK] });
  const responder = new HandshakeState({ pattern: NN_PSK0, initiator: false, prologue, psks: [PSK] });
  responder.readMessage(initiator.writeMessage(new Uint8Array(0)));
  initiator.readMessage(responder.writeMessage(new Uint8Array(0)));
  return {
    alice: new SecureChannel({
      ...initiator.split(),
      handshakeHash: initiator.handshakeHash,
      remoteClientId: 'bob',
    }),
    bob: new SecureChannel({
      ...responder.split(),
      handshakeHash: responder.handshakeHash,
      remoteClientId: 'alice',
    }),
  };
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

describe('SecureChannel', () => {
  it('round-trips both ways with per-direction keys and an explicit little-endian counter', () => {
    const { alice, bob } = session();
    expect(alice.sessionId).toBe(bob.sessionId);
    const frames = ['a', 'bb', ''].map((m) => alice.encrypt(utf8(m)));
    expect(frames.map((f) => f.length)).toEqual([1, 2, 0].map((n) => n + SECURE_FRAME_OVERHEAD));
    expect(frames.map((f) => f[0])).toEqual([0, 1, 2]);
    expect(frames[1]!.subarray(1, 8)).toEqual(new Uint8Array(7));
    expect(frames.map((f) => text(bob.decrypt(f)))).toEqual(['a', 'bb', '']);
    expect(text(alice.decrypt(bob.encrypt(utf8('back'))))).toBe('back');
    expect(bob.stats).toEqual({
      framesSent: 1,
      framesReceived: 3,
      rejectedReplay: 0,
      rejectedReordered: 0,
      rejectedTampered: 0,
    });
  });

  it('rejects a replayed frame and counts it', () => {
    const { alice, bob } = session();
    const first = alice.encrypt(utf8('pay 10'));
    bob.decrypt(first);
    expect(codeOf(() => bob.decrypt(first))).toBe('REPLAY');
    expect(bob.stats.rejectedReplay).toBe(1);
    expect(text(bob.decrypt(alice.encrypt(utf8('next'))))).toBe('next');
  });

  it('rejects a reordered frame, counts it, and still takes the genuine next one', () => {
    const { alice, bob } = session();
    const [f0, f1, f2] = ['zero', 'one', 'two'].map((m) => alice.encrypt(utf8(m))) as [
      Uint8Array,
      Uint8Array,
      Uint8Array,
    ];
    bob.decrypt(f0);
    expect(codeOf(() => bob.decrypt(f2))).toBe('REPLAY');
    expect(bob.stats.rejectedReordered).toBe(1);
    expect(text(bob.decrypt(f1))).toBe('one');
    expect(text(bob.decrypt(f2))).toBe('two');
    expect(bob.stats.framesReceived).toBe(3);
  });

  it('rejects tampered, truncated, reflected and foreign-session frames as DECRYPT_FAILED', () => {
    const { alice, bob } = session();
    const frame = alice.encrypt(utf8('hello'));
    const tampered = frame.slice();
    tampered[SECURE_FRAME_OVERHEAD - 16 + 2]! ^= 0x20;
    expect(codeOf(() => bob.decrypt(tampered))).toBe('DECRYPT_FAILED');
    expect(codeOf(() => bob.decrypt(frame.subarray(0, 10)))).toBe('DECRYPT_FAILED');
    expect(codeOf(() => bob.decrypt(new Uint8Array(0)))).toBe('DECRYPT_FAILED');
    // Alice's own frame bounced back to her: the directions have different keys.
    expect(codeOf(() => alice.decrypt(frame))).toBe('DECRYPT_FAILED');
    // A frame from another session of the same account.
    expect(codeOf(() => bob.decrypt(session().alice.encrypt(utf8('hello'))))).toBe('DECRYPT_FAILED');
    // A counter pushed past 2^53 (bytes 6-7 of the little-endian counter).
    const huge = frame.slice();
    huge[7] = 0xff;
    expect(codeOf(() => bob.decrypt(huge))).toBe('DECRYPT_FAILED');
    expect(bob.stats.rejectedTampered).toBe(5);
    expect(alice.stats.rejectedTampered).toBe(1);
    expect(text(bob.decrypt(frame))).toBe('hello');
  });

  it('stats is a snapshot the caller cannot change', () => {
    const { bob } = session();
    const stats = bob.stats;
    stats.rejectedReplay = 99;
    expect(bob.stats.rejectedReplay).toBe(0);
  });

  it('property: any byte flip of any frame is rejected, and the genuine frame still goes through', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 200 }), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (messages, whichFrame, whichByte, mask) => {
          const { alice, bob } = session();
          const frames = messages.map((m) => alice.encrypt(m));
          const target = whichFrame % frames.length;
          for (let i = 0; i < target; i++) bob.decrypt(frames[i]!);
          const flipped = frames[target]!.slice();
          flipped[whichByte % flipped.length]! ^= mask;
          expect(codeOf(() => bob.decrypt(flipped))).toBe('DECRYPT_FAILED');
          expect(bob.stats.rejectedTampered).toBe(1);
          for (let i = target; i < frames.length; i++) expect(bob.decrypt(frames[i]!)).toEqual(messages[i]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('property: under any replay/reorder/drop schedule the receiver accepts only the in-order prefix', () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 10 })
          .chain((n) => fc.tuple(fc.constant(n), fc.array(fc.nat({ max: n - 1 }), { maxLength: 40 }))),
        ([count, schedule]) => {
          const { alice, bob } = session();
          const frames = Array.from({ length: count }, (_, i) => alice.encrypt(utf8(String(i))));
          const accepted: number[] = [];
          let rejected = 0;
          for (const index of schedule) {
            try {
              accepted.push(Number(text(bob.decrypt(frames[index]!))));
            } catch (error) {
              expect(isFerryError(error, 'REPLAY')).toBe(true);
              rejected++;
            }
          }
          expect(accepted).toEqual(accepted.map((_, i) => i));
          const { rejectedReplay, rejectedReordered, rejectedTampered } = bob.stats;
          expect(rejectedReplay + rejectedReordered).toBe(rejected);
          expect(rejectedTampered).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });
});
