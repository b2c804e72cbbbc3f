import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { deriveSubkey } from '../../src/crypto/subkeys.js';
import type { FerryError } from '../../src/errors.js';
import type { PeerMessage } from '../../src/network/types.js';
import { nodeChaChaPoly } from '../../src/node.js';
import { performHandshake } from '../../src/session/handshake.js';
import { Multiplexer } from '../../src/session/mux.js';
import { PeerSession, type PeerSessionOptions } from '../../src/session/peer-session.js';
import { createMemoryTransportPair, type MemoryTransportOptions } from '../../src/transport/memory.js';
import { SimplePeerTransport } from '../../src/transport/simple-peer.js';
import type { Transport } from '../../src/transport/types.js';
import { utf8 } from '../../src/util/bytes.js';
import { connectedSimplePeers } from '../support/webrtc.js';

const psk = deriveSubkey(new Uint8Array(32).fill(7), 'handshakePsk');
const base = { psk, roomId: 'room-1' };

async function sessionPair(
  transports: [Transport, Transport] = createMemoryTransportPair(),
  extra: Partial<PeerSessionOptions> = {},
): Promise<[PeerSession, PeerSession, Transport, Transport]> {
  const [ta, tb] = transports;
  const [a, b] = await Promise.all([
    PeerSession.open(ta, { ...base, ...extra, initiator: true, localClientId: 'alice' }),
    PeerSession.open(tb, { ...base, ...extra, initiator: false, localClientId: 'bob' }),
  ]);
  return [a, b, ta, tb];
}

const msg = (op: string, data: unknown): PeerMessage => ({
  op,
  data,
  timestamp: Date.now(),
  id: crypto.randomUUID(),
});
const received = (session: PeerSession, count: number) =>
  new Promise<PeerMessage[]>((resolve) => {
    const got: PeerMessage[] = [];
    session.on('message', (m) => {
      got.push(m);
      if (got.length === count) resolve(got);
    });
  });
const sha = (text: string) => createHash('sha256').update(text).digest('hex');

describe('PeerSession', () => {
  it('refuses timeouts and windows that would stall or spin before the handshake, naming the option', async () => {
    for (const bad of [
      { keepaliveTimeoutMs: 0 },
      { keepaliveIntervalMs: -1 },
      { timeoutMs: Number.NaN },
      { highWaterMark: 0 },
    ]) {
      const [ta] = createMemoryTransportPair();
      const [name] = Object.keys(bad);
      await expect(
        PeerSession.open(ta, { ...base, ...bad, initiator: true, localClientId: 'alice' }),
      ).rejects.toThrow(
        expect.objectContaining({
          code: 'BAD_ARGUMENT',
          message: expect.stringContaining(`${name} must be`),
        }),
      );
      expect(ta.closed).toBe(false); // nothing was sent: the caller still owns the transport
      ta.close();
    }
  });

  it('authenticates both sides and carries messages of any size both ways, in order', async () => {
    const [a, b] = await sessionPair();
    expect(a.remoteClientId).toBe('bob');
    expect(b.remoteClientId).toBe('alice');
    expect(a.sessionId).toBe(b.sessionId);
    const big = 'y'.repeat(5 * 1024 * 1024 + 17);
    const atB = received(b, 3);
    await Promise.all([a.send(msg('DB_X', 1)), a.send(msg('DB_BIG', big)), a.send(msg('DB_X', 2))]);
    const got = await atB;
    expect(got.map((m) => m.op)).toEqual(['DB_X', 'DB_BIG', 'DB_X']);
    expect(sha(got[1]!.data as string)).toBe(sha(big));
    const atA = received(a, 1);
    await b.send(msg('AI_TOKEN', 'hello'));
    expect((await atA)[0]!.data).toBe('hello');
    a.close();
  });

  it('lets a control or AI message overtake a long sync transfer (priority lanes)', async () => {
    // A slow link: few messages per event-loop turn, so the sync transfer is still running.
    // Uncompressed: 4 MiB of one letter would deflate to a few KiB and be over at once.
    const [a, b] = await sessionPair(createMemoryTransportPair({ messagesPerTurn: 4 }), {
      compressMinBytes: false,
    });
    const order: string[] = [];
    const both = received(b, 2);
    b.on('message', (m) => order.push(m.op));
    const bulk = a.send(msg('DB_BULK', 'z'.repeat(4 * 1024 * 1024)));
    await new Promise((resolve) => setTimeout(resolve, 5));
    await a.send(msg('AI_STREAM_DATA', 'token'));
    await Promise.all([bulk, both]);
    expect(order).toEqual(['AI_STREAM_DATA', 'DB_BULK']);
    a.close();
  });

  it('rejects and counts replayed, reordered and tampered frames, and keeps going', async () => {
    const [ta, tb] = createMemoryTransportPair();
    const captured: Uint8Array[] = [];
    tb.on('message', (frame) => captured.push(frame.slice()));
    const [a, b] = await sessionPair([ta, tb]);
    const errors: string[] = [];
    b.on('error', (e) => errors.push(e.code));
    const first = received(b, 2);
    await a.send(msg('DB_ONE', 1));
    await a.send(msg('DB_TWO', 2));
    await first;
    const replayed = captured.at(-1)!;
    const tampered = captured.at(-1)!.slice();
    tampered[tampered.length - 1]! ^= 1;
    tb.emit('message', replayed); // a replay of an authentic frame
    tb.emit('message', tampered); // a forgery
    const later = received(b, 1);
    await a.send(msg('DB_THREE', 3));
    expect((await later)[0]!.op).toBe('DB_THREE');
    expect(errors).toEqual(['REPLAY', 'DECRYPT_FAILED']);
    expect(b.stats.rejectedReplay).toBe(1);
    expect(b.stats.rejectedTampered).toBe(1);
    a.close();
  });

  it('fails the handshake when a hostile signaling server rewrote the DTLS fingerprints: no data passes', async () => {
    const rewritten: MemoryTransportOptions['fingerprints'] = {
      a: { local: 'sha-256 AA', remote: 'sha-256 EVIL' }, // alice sees the attacker's certificate
      b: { local: 'sha-256 BB', remote: 'sha-256 AA' },
    };
    const [ta, tb] = createMemoryTransportPair({ fingerprints: rewritten });
    const results = await Promise.allSettled([
      PeerSession.open(ta, { ...base, initiator: true, localClientId: 'alice', timeoutMs: 2000 }),
      PeerSession.open(tb, { ...base, initiator: false, localClientId: 'bob', timeoutMs: 2000 }),
    ]);
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason.code).toBe('HANDSHAKE_FAILED');
    }
    expect(ta.closed && tb.closed).toBe(true);
  });

  it('fails the handshake through a real WebRTC man in the middle with its own DTLS certificates', async () => {
    // What a signaling server that rewrites SDP fingerprints achieves: two DTLS connections that it
    // terminates, relaying the data channel between them. Only the first handshake message crosses.
    const [p, mitmToAlice] = await connectedSimplePeers();
    const [mitmToBob, q] = await connectedSimplePeers();
    const relayed: number[] = [];
    mitmToAlice.on('data', (data: Uint8Array) => {
      relayed.push(data.length);
      mitmToBob.send(data);
    });
    mitmToBob.on('data', (data: Uint8Array) => {
      relayed.push(data.length);
      mitmToAlice.send(data);
    });
    const [ta, tb] = [new SimplePeerTransport(p), new SimplePeerTransport(q)];
    expect(ta.remoteFingerprint).not.toBe(tb.localFingerprint);
    const results = await Promise.allSettled([
      // Bob refuses the first message; Alice, whose link the attacker keeps open, gives up at her timeout.
      PeerSession.open(ta, { ...base, initiator: true, localClientId: 'alice', timeoutMs: 1000 }),
      PeerSession.open(tb, { ...base, initiator: false, localClientId: 'bob', timeoutMs: 5000 }),
    ]);
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason.code).toBe('HANDSHAKE_FAILED');
    }
    expect(relayed).toHaveLength(1);
    mitmToAlice.destroy();
    mitmToBob.destroy();
  });

  it('never opens a session with a device holding another account key, over real WebRTC', async () => {
    const [p, q] = await connectedSimplePeers();
    const otherPsk = deriveSubkey(new Uint8Array(32).fill(8), 'handshakePsk');
    const [ta, tb] = [new SimplePeerTransport(p), new SimplePeerTransport(q)];
    const results = await Promise.allSettled([
      PeerSession.open(ta, { ...base, initiator: true, localClientId: 'alice', timeoutMs: 5000 }),
      PeerSession.open(tb, {
        ...base,
        psk: otherPsk,
        initiator: false,
        localClientId: 'mallory',
        timeoutMs: 5000,
      }),
    ]);
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason.code).toBe('HANDSHAKE_FAILED');
    }
    expect(ta.closed && tb.closed).toBe(true);
  });

  it('refuses messages above the limit, and closes a session whose peer announces one', async () => {
    const [a, b] = await sessionPair(createMemoryTransportPair(), { maxMessageBytes: 1024 * 1024 });
    await expect(a.send(msg('DB_HUGE', 'x'.repeat(2 * 1024 * 1024)))).rejects.toMatchObject({
      code: 'TOO_LARGE',
    });
    a.close();
    b.close();

    // A peer configured with a larger limit announces a message this side refuses: a protocol
    // violation, whether the message comes as it is or compressed (its inflated size is what counts).
    for (const [compressMinBytes, reason] of [
      [false, /protocol violation: announced message of \d+ bytes exceeds 1048576/],
      [undefined, /protocol violation: compressed message of \d+ bytes exceeds 1048576/],
    ] as const) {
      const [ta, tb] = createMemoryTransportPair();
      const [big, small] = await Promise.all([
        PeerSession.open(ta, { ...base, initiator: true, localClientId: 'alice', compressMinBytes }),
        PeerSession.open(tb, {
          ...base,
          initiator: false,
          localClientId: 'bob',
          maxMessageBytes: 1024 * 1024,
        }),
      ]);
      const closed = new Promise<string>((resolve) => small.on('close', resolve));
      await big.send(msg('DB_HUGE', 'x'.repeat(2 * 1024 * 1024))).catch(() => {});
      expect(await closed).toMatch(reason);
    }
  });

  it('answers undecodable messages with SESSION_ERROR and goes on', async () => {
    // The far side is a bare handshake + multiplexer, so it can put any bytes on a lane.
    const [ta, tb] = createMemoryTransportPair();
    const [session, channel] = await Promise.all([
      PeerSession.open(ta, { ...base, initiator: true, localClientId: 'alice' }),
      performHandshake(tb, { ...base, initiator: false, localClientId: 'bob' }),
    ]);
    const raw = new Multiplexer(tb, channel);
    tb.on('message', (frame) => raw.receive(frame));
    const replies: PeerMessage[] = [];
    raw.on('message', (_lane, bytes) => replies.push(JSON.parse(new TextDecoder().decode(bytes))));
    const errors: string[] = [];
    session.on('error', (e) => errors.push(e.code));
    const bad = [
      new Uint8Array([0xff, 0xfe]),
      utf8('{"op":'),
      utf8(JSON.stringify({ op: 'DB_X', data: 1, timestamp: 1 })),
      utf8(JSON.stringify({ op: 'SESSION_NOPE', data: 1, timestamp: 1, id: 'x' })),
    ];
    for (const bytes of bad) await raw.send('sync', bytes);
    const ok = received(session, 1);
    await raw.send('sync', utf8(JSON.stringify(msg('DB_FINE', 1))));
    expect((await ok)[0]!.op).toBe('DB_FINE');
    expect(errors).toEqual(['BAD_ENCODING', 'BAD_JSON', 'SCHEMA_MISMATCH', 'UNKNOWN_OP']);
    await vi.waitFor(() => expect(replies).toHaveLength(4));
    expect(replies.map((r) => [r.op, (r.data as { code: string }).code])).toEqual([
      ['SESSION_ERROR', 'BAD_ENCODING'],
      ['SESSION_ERROR', 'BAD_JSON'],
      ['SESSION_ERROR', 'SCHEMA_MISMATCH'],
      ['SESSION_ERROR', 'UNKNOWN_OP'],
    ]);
    expect(session.closed).toBe(false);
    session.close();
  });

  it('reports a refusal by the peer as REJECTED, and measures round trips with its keepalive', async () => {
    const [a, b] = await sessionPair(createMemoryTransportPair(), { keepaliveIntervalMs: 20 });
    await vi.waitFor(() => expect(a.stats.rttMs).toBeTypeOf('number'));
    const refused = new Promise<FerryError>((resolve) => a.once('error', resolve));
    // What a session sends when it refuses a message (see the test above).
    await b.send(msg('SESSION_ERROR', { code: 'UNKNOWN_OP', message: 'no such op', inReplyTo: 'm-1' }));
    const error = await refused;
    expect(error.code).toBe('REJECTED');
    expect(error.message).toMatch(/bob refused message m-1: UNKNOWN_OP: no such op/);
    a.close();
  });

  it('closes within a second even when the close message cannot leave (dead peer, full buffer)', async () => {
    const [ta, tb] = createMemoryTransportPair();
    const [a, b] = await sessionPair([ta, tb]);
    // The link stalls: nothing more is accepted by the network, and the buffer stays full.
    Object.defineProperty(ta, 'bufferedAmount', { get: () => 64 * 1024 * 1024 });
    const closed = new Promise<string>((resolve) => a.on('close', resolve));
    a.close('going away');
    expect(a.closed).toBe(true);
    await expect(a.send(msg('DB_X', 1))).rejects.toMatchObject({ code: 'CLOSED' });
    expect(await closed).toBe('closed: going away');
    expect(ta.closed).toBe(true);
    b.close();
  });

  it('tells the peer why it closes', async () => {
    const [a, b] = await sessionPair();
    const atB = new Promise<string>((resolve) => b.on('close', resolve));
    a.close('user signed out');
    expect(await atB).toBe('closed by alice: user signed out');
  });

  it('sends nothing after its close message, and ends once the peer hung up', async () => {
    const [ta, tb] = createMemoryTransportPair();
    const [a, b] = await sessionPair([ta, tb]);
    // A message of many frames (16 KiB each here) is still going out when the session closes.
    const bulk = a.send(msg('DB_X', Array.from({ length: 60_000 }, () => crypto.randomUUID()).join()));
    await new Promise((resolve) => setTimeout(resolve, 0));
    const framesAfterClose: Uint8Array[] = [];
    const send = ta.send.bind(ta);
    ta.send = (frame) => {
      framesAfterClose.push(frame);
      send(frame);
    };
    const order: string[] = [];
    b.on('close', () => order.push('b ended'));
    const aClosed = new Promise<string>((resolve) =>
      a.on('close', (reason) => {
        order.push('a ended');
        resolve(reason);
      }),
    );
    a.close('bye');
    await expect(bulk).rejects.toMatchObject({ code: 'CLOSED' });
    expect(await aClosed).toBe('closed: bye');
    // One frame, the close message's: the rest of the bulk message was never handed over (a data
    // channel the peer closes under a send can crash @roamhq/wrtc), and the peer, having read it,
    // hung up first.
    expect(framesAfterClose).toHaveLength(1);
    expect(order).toEqual(['b ended', 'a ended']);
  });

  it('ends a session whose peer falls silent (keepalive), and emits close once', async () => {
    const [ta, tb] = createMemoryTransportPair();
    const [a, b] = await sessionPair([ta, tb], { keepaliveIntervalMs: 50, keepaliveTimeoutMs: 300 });
    const reasons: string[] = [];
    const closed = new Promise<void>((resolve) =>
      b.on('close', (reason) => {
        reasons.push(reason);
        resolve();
      }),
    );
    tb.removeAllListeners('message'); // b hears nothing more from a
    await closed;
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(/no frame from alice/);
    await expect(b.send(msg('DB_X', 1))).rejects.toMatchObject({ code: 'CLOSED' });
    a.close();
  });

  it('carries 40 MiB over real WebRTC without loss while small messages keep flowing', async () => {
    const [p, q] = await connectedSimplePeers();
    // Uncompressed, or the 40 MiB of one letter would cross as ~40 KiB.
    const [a, b] = await sessionPair([new SimplePeerTransport(p), new SimplePeerTransport(q)], {
      aead: nodeChaChaPoly,
      compressMinBytes: false,
    });
    const big = 'w'.repeat(40 * 1024 * 1024);
    const atB = received(b, 2);
    await Promise.all([a.send(msg('DB_BIG', big)), a.send(msg('AI_STREAM_DATA', 'tok'))]);
    const got = await atB;
    expect(got.map((m) => m.op)).toEqual(['AI_STREAM_DATA', 'DB_BIG']);
    expect(sha(got[1]!.data as string)).toBe(sha(big));
    a.close();
  }, 60_000);
});
