import { roomCredentials, type SignalingClient } from '@ferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SignalingServer } from '../../src/signaling/index.js';
import { Cleanup, newAccountKey, next, peersBecome, RawSocket, startClient, startServer } from './helpers.js';

/**
 * Every kind of bad input against one server with tight limits. Each row must get its error frame and
 * close code; after each row two well-behaved clients on the same server still exchange a signal.
 */
const cleanup = new Cleanup();
let server: SignalingServer;
let alice: SignalingClient;
let bob: SignalingClient;

const LIMITS = {
  maxFrameBytes: 1024,
  messagesPerSecond: 5,
  // Room for the bystanders' one signal per row; the flood row sends far more.
  burst: 30,
  maxPeersPerRoom: 3,
  maxRoomsPerSocket: 2,
};

beforeAll(async () => {
  // Lenient heartbeats: these rows are about limits, and on a loaded 2-core CI machine a 400 ms
  // heartbeat timeout can drop a test socket as dead before its row's error arrives.
  server = await startServer(new Cleanup(), {
    limits: LIMITS,
    heartbeatIntervalMs: 500,
    heartbeatTimeoutMs: 10_000,
  });
  cleanup.add(() => server.close(), server);
  const key = newAccountKey();
  alice = startClient(cleanup, {
    urls: [server.url],
    accountKey: key,
    clientId: 'alice',
    maxFrameBytes: 1024,
  });
  bob = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'bob', maxFrameBytes: 1024 });
  await Promise.all([peersBecome(alice, ['bob']), peersBecome(bob, ['alice'])]);
});
afterAll(() => cleanup.run());

type Case = {
  name: string;
  code: string;
  close: number;
  /** What the error message must mention, where it matters (the offending field). */
  mentions?: string;
  act: (socket: RawSocket) => Promise<void> | void;
};

const joinedElsewhere = async (socket: RawSocket) => {
  await socket.joinAndWait(newAccountKey(), 'device');
};

const cases: Case[] = [
  { name: 'malformed JSON', code: 'BAD_JSON', close: 1007, act: (s) => s.send('{"type":"join",') },
  { name: 'a binary frame', code: 'BAD_JSON', close: 1007, act: (s) => s.send(new Uint8Array([1, 2, 3])) },
  { name: 'JSON that is not an object', code: 'SCHEMA_MISMATCH', close: 1007, act: (s) => s.send('[1,2,3]') },
  {
    name: 'an unknown frame type',
    code: 'SCHEMA_MISMATCH',
    close: 1007,
    act: (s) => s.sendJson({ type: 'hack' }),
  },
  {
    name: 'a join missing its proof',
    code: 'SCHEMA_MISMATCH',
    close: 1007,
    mentions: 'join frame: /proof',
    act: (s) => s.sendJson({ type: 'join', room: roomCredentials(newAccountKey()).room, clientId: 'x' }),
  },
  {
    name: 'a frame with an extra field',
    code: 'SCHEMA_MISMATCH',
    close: 1007,
    act: (s) => s.sendJson({ type: 'ping', extra: true }),
  },
  {
    name: 'a client id with spaces',
    code: 'SCHEMA_MISMATCH',
    close: 1007,
    mentions: '/clientId',
    act: (s) =>
      s.sendJson({
        type: 'join',
        room: roomCredentials(newAccountKey()).room,
        clientId: 'a b',
        proof: 'A'.repeat(86),
      }),
  },
  {
    name: 'an oversize frame',
    code: 'TOO_LARGE',
    close: 1009,
    act: (s) => s.sendJson({ type: 'ping', pad: 'x'.repeat(2_000) }),
  },
  {
    name: 'a flood over the rate limit',
    code: 'RATE_LIMITED',
    close: 1008,
    act: (s) => {
      for (let i = 0; i < 100; i++) s.sendJson({ type: 'ping' });
    },
  },
  {
    name: 'a bad join proof',
    code: 'BAD_PROOF',
    close: 1008,
    act: (s) =>
      s.sendJson({
        type: 'join',
        room: roomCredentials(newAccountKey()).room,
        clientId: 'x',
        proof: 'A'.repeat(86),
      }),
  },
  {
    name: 'a signal before joining',
    code: 'NOT_JOINED',
    close: 1008,
    act: (s) => s.sendJson({ type: 'signal', room: alice.room, to: 'alice', body: 'AAAA' }),
  },
  {
    name: 'joining the same room twice',
    code: 'ALREADY_JOINED',
    close: 1008,
    act: async (s) => {
      const key = newAccountKey();
      await s.joinAndWait(key, 'twice');
      s.join(key, 'twice');
    },
  },
  {
    name: 'too many rooms on one socket',
    code: 'TOO_MANY_ROOMS',
    close: 1008,
    act: async (s) => {
      await joinedElsewhere(s);
      await joinedElsewhere(s);
      s.join(newAccountKey(), 'device');
    },
  },
  {
    name: 'joining a full room',
    code: 'ROOM_FULL',
    close: 1008,
    act: async (s) => {
      const key = newAccountKey();
      for (const id of ['one', 'two', 'three']) {
        const member = await RawSocket.open(cleanup, server.url);
        await member.joinAndWait(key, id);
      }
      s.join(key, 'four');
    },
  },
];

describe('signaling: bad input gets an error frame and a close, and nobody else notices', () => {
  it.each(cases)('$name -> $code, close $close', async ({ code, close, mentions, act }) => {
    const socket = await RawSocket.open(cleanup, server.url);
    await act(socket);
    const error = await socket.error();
    expect(error).toMatchObject({ type: 'error', code, fatal: true });
    if (mentions) expect(error.message).toContain(mentions);
    expect((await socket.closed).code).toBe(close);

    // Bystanders are unaffected: still joined, still exchanging signals.
    const got = next(bob, 'signal');
    alice.signal('bob', { after: code });
    expect(await got).toEqual(['alice', { after: code }]);
    expect(
      server.stats().rejected[code as keyof ReturnType<SignalingServer['stats']>['rejected']],
    ).toBeGreaterThan(0);
  });

  it('a frame beyond the hard cap is cut off by the WebSocket layer with close 1009', async () => {
    const socket = await RawSocket.open(cleanup, server.url);
    socket.send('x'.repeat(LIMITS.maxFrameBytes * 4 + 1));
    expect((await socket.closed).code).toBe(1009);
    const got = next(bob, 'signal');
    alice.signal('bob', 'still here');
    expect(await got).toEqual(['alice', 'still here']);
  });

  it('health stays accurate after all that', async () => {
    const response = await fetch(server.url.replace('ws://', 'http://').replace('/signal', '/health'));
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      status: string;
      signaling: ReturnType<SignalingServer['stats']>;
    };
    expect(body.status).toBe('ok');
    expect(body.signaling.rejectedTotal).toBeGreaterThanOrEqual(cases.length);
    expect(body.signaling.rooms).toBeGreaterThanOrEqual(1);
  });
});
