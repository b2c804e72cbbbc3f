import { once } from 'node:events';
import { roomCredentials, type ServerFrame, SignalingClient } from '@ferry/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import type { SignalingServer } from '../../src/signaling/index.js';
import { Cleanup, newAccountKey, next, peersBecome, RawSocket, startClient, startServer } from './helpers.js';

const cleanup = new Cleanup();
afterAll(() => cleanup.run());

const room = roomCredentials(newAccountKey()).room;

/** Frames near the valid ones (right type, wrong fields), plus arbitrary JSON and arbitrary text. */
const hostileFrame = fc.oneof(
  fc.string(),
  fc.json(),
  fc
    .record(
      {
        type: fc.constantFrom('join', 'leave', 'signal', 'ping', 'joined', 'error'),
        room: fc.oneof(fc.constant(room), fc.string()),
        clientId: fc.oneof(fc.constant('device'), fc.string()),
        to: fc.string(),
        proof: fc.string(),
        body: fc.oneof(fc.base64String(), fc.string()),
        extra: fc.jsonValue(),
      },
      { requiredKeys: ['type'] },
    )
    .map((frame) => JSON.stringify(frame)),
);

describe('fuzzing the signaling server with hostile frames', () => {
  let server: SignalingServer;
  let alice: SignalingClient;
  let bob: SignalingClient;
  beforeAll(async () => {
    server = await startServer(cleanup);
    const key = newAccountKey();
    alice = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'alice' });
    bob = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'bob' });
    await Promise.all([peersBecome(alice, ['bob']), peersBecome(bob, ['alice'])]);
  });

  it('answers every frame with a pong-able socket or an error frame and a close; never crashes', async () => {
    await fc.assert(
      fc.asyncProperty(hostileFrame, async (text) => {
        const socket = await RawSocket.open(cleanup, server.url);
        socket.send(text);
        socket.sendJson({ type: 'ping' });
        const outcome = await socket.next(
          (frame) => frame.type === 'pong' || (frame.type === 'error' && frame.fatal),
        );
        if (outcome.type === 'error') expect((await socket.closed).code).toBeGreaterThanOrEqual(1007);
        socket.ws.terminate();
      }),
      { numRuns: 150 },
    );
    const got = next(bob, 'signal');
    alice.signal('bob', 'survived the fuzz');
    expect(await got).toEqual(['alice', 'survived the fuzz']);
  });
});

describe('fuzzing the client with a hostile server', () => {
  it('reports garbage frames as errors and never throws', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    cleanup.add(() => new Promise((resolve) => wss.close(resolve)), wss);
    const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/signal`;
    let frames: string[] = [];
    wss.on('connection', (socket) => {
      socket.send(
        JSON.stringify({ type: 'hello', version: 1, connectionId: 'c.1', challenge: 'A'.repeat(43) }),
      );
      socket.once('message', () => {
        socket.send(JSON.stringify({ type: 'joined', room: client.room, peers: [] } satisfies ServerFrame));
        for (const frame of frames) socket.send(frame);
        socket.send(
          JSON.stringify({
            type: 'peer-joined',
            room: client.room,
            clientId: 'sentinel',
          } satisfies ServerFrame),
        );
      });
    });
    const key = newAccountKey();
    let client = new SignalingClient({ urls: [url], accountKey: key, clientId: 'target', WebSocket });

    await fc.assert(
      fc.asyncProperty(fc.array(hostileFrame, { maxLength: 8 }), async (batch) => {
        await client.close();
        frames = batch;
        client = new SignalingClient({ urls: [url], accountKey: key, clientId: 'target', WebSocket });
        client.on('error', () => {});
        // Frames are handled in order: the sentinel arriving proves every hostile frame before it was
        // handled without an exception escaping (vitest fails the run on any uncaught one).
        await next(client, 'peer-joined', (id) => id === 'sentinel');
        expect(client.connected).toBe(true);
      }),
      { numRuns: 60 },
    );
    await client.close();
  });
});
