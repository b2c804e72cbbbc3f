import { once } from 'node:events';
import {
  isFerryError,
  openSignal,
  randomBytes,
  roomCredentials,
  type ServerFrame,
  SignalingServerError,
  signJoinProof,
  toHex,
} from '@ferry/core';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import { Cleanup, newAccountKey, next, peersBecome, RawSocket, startClient, startServer } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('signaling: rooms, presence and sealed signals', () => {
  it('three devices of one account see each other and exchange signals; the server only ever sees ciphertext', async () => {
    const frames: string[] = [];
    const logs: string[] = [];
    const logger = pino({ level: 'trace' }, { write: (line: string) => logs.push(line) });
    const server = await startServer(cleanup, {
      tap: (_direction, _connection, frame) => frames.push(frame),
      logger,
    });
    const key = newAccountKey();
    const ids = ['laptop', 'phone', 'tablet'];
    const clients = ids.map((clientId) =>
      startClient(cleanup, { urls: [server.url], accountKey: key, clientId }),
    );
    await Promise.all(
      clients.map((client) =>
        peersBecome(
          client,
          ids.filter((id) => id !== client.clientId),
        ),
      ),
    );

    const canary = `CANARY-${toHex(randomBytes(12))}`;
    const received: string[] = [];
    const allReceived = new Promise<void>((resolve) => {
      for (const client of clients) {
        client.on('signal', (from, data) => {
          const { sdp } = data as { sdp: string };
          received.push(`${from}->${client.clientId}: ${sdp}`);
          if (received.length === 6) resolve();
        });
      }
    });
    for (const from of clients) {
      for (const to of ids.filter((id) => id !== from.clientId)) {
        from.signal(to, { type: 'offer', sdp: `${canary} from ${from.clientId} to ${to}` });
      }
    }
    await allReceived;

    expect(received.sort()).toEqual(
      ids
        .flatMap((from) =>
          ids.filter((to) => to !== from).map((to) => `${from}->${to}: ${canary} from ${from} to ${to}`),
        )
        .sort(),
    );
    // The tap really saw the relayed traffic in both directions, after WebSocket unmasking...
    const relayed = frames.filter((frame) => frame.includes('"type":"signal"'));
    expect(relayed.length).toBe(12);
    // ...and neither those frames nor the server's trace-level logs contain the plaintext.
    expect(frames.join('\n')).not.toContain(canary);
    expect(logs.join('\n')).not.toContain(canary);
    expect(server.stats()).toMatchObject({
      connections: 3,
      rooms: 1,
      memberships: 3,
      signalsRelayed: 6,
      rejectedTotal: 0,
    });
  });

  it('refuses a join without the room key, and a proof replayed on another socket', async () => {
    const server = await startServer(cleanup);
    const victimKey = newAccountKey();
    const victim = startClient(cleanup, { urls: [server.url], accountKey: victimKey, clientId: 'victim' });
    await next(victim, 'connected');

    // An attacker knows the room id (the server operator does) but not the key: it signs with its own.
    const attacker = await RawSocket.open(cleanup, server.url);
    const own = roomCredentials(newAccountKey());
    const { challenge, connectionId } = attacker.hello;
    attacker.sendJson({
      type: 'join',
      room: victim.room,
      clientId: 'attacker',
      proof: signJoinProof(own, { challenge, clientId: 'attacker', connectionId }),
    });
    expect(await attacker.error()).toMatchObject({ code: 'BAD_PROOF', fatal: true });
    expect((await attacker.closed).code).toBe(1008);

    // A valid proof captured from one connection is useless on another (challenge and connection id differ).
    const first = await RawSocket.open(cleanup, server.url);
    const credentials = roomCredentials(victimKey);
    const proof = signJoinProof(credentials, { ...first.hello, clientId: 'phone' });
    const second = await RawSocket.open(cleanup, server.url);
    second.sendJson({ type: 'join', room: credentials.room, clientId: 'phone', proof });
    expect(await second.error()).toMatchObject({ code: 'BAD_PROOF' });
    expect(victim.peers()).toEqual([]);
    expect(server.stats().rejected).toMatchObject({ BAD_PROOF: 2 });
  });

  it('keeps accounts apart: another account is another room and cannot open this one’s signals', async () => {
    const frames: string[] = [];
    const server = await startServer(cleanup, {
      tap: (direction, _c, frame) => direction === 'out' && frames.push(frame),
    });
    const keyA = newAccountKey();
    const keyB = newAccountKey();
    const a1 = startClient(cleanup, { urls: [server.url], accountKey: keyA, clientId: 'one' });
    const a2 = startClient(cleanup, { urls: [server.url], accountKey: keyA, clientId: 'two' });
    const b1 = startClient(cleanup, { urls: [server.url], accountKey: keyB, clientId: 'one' });
    const b2 = startClient(cleanup, { urls: [server.url], accountKey: keyB, clientId: 'three' });
    await Promise.all([
      peersBecome(a1, ['two']),
      peersBecome(a2, ['one']),
      peersBecome(b1, ['three']),
      peersBecome(b2, ['one']),
    ]);
    expect(a1.room).not.toBe(b1.room);

    const got = next(a2, 'signal');
    a1.signal('two', { secret: 'for account A only' });
    expect((await got)[1]).toEqual({ secret: 'for account A only' });
    const relayed = frames
      .map((text) => JSON.parse(text) as ServerFrame)
      .find((frame) => frame.type === 'signal');
    if (relayed?.type !== 'signal') throw new Error('no relayed signal captured');
    // Account B's key opens nothing, even addressed exactly as the original.
    expect(() => openSignal(roomCredentials(keyB), relayed.from, 'two', relayed.body)).toThrow(
      expect.objectContaining({ code: 'DECRYPT_FAILED' }),
    );
    // Same client id 'one' in both accounts, and no cross-room delivery: b1 saw no signal at all.
    expect(b1.peers()).toEqual(['three']);
  });

  it('tells a sender when the recipient is not in the room, without closing its socket', async () => {
    const server = await startServer(cleanup);
    const client = startClient(cleanup, {
      urls: [server.url],
      accountKey: newAccountKey(),
      clientId: 'alone',
    });
    await next(client, 'connected');
    const error = next(client, 'error');
    client.signal('nobody', { hello: 1 });
    const [reported] = await error;
    expect(reported).toBeInstanceOf(SignalingServerError);
    expect(reported).toMatchObject({ code: 'SERVER', serverCode: 'PEER_UNKNOWN', fatal: false });
    expect(client.connected).toBe(true);
    expect(() => client.signal('x'.repeat(10), 'y'.repeat(70_000))).toThrow(
      expect.objectContaining({ code: 'TOO_LARGE' }),
    );
  });
});

describe('signaling: a hostile server cannot forge, re-address or replay signals', () => {
  /** A man-in-the-middle relay: forwards everything, lets the test rewrite server->client frames. */
  async function hostileProxy(
    upstream: string,
    rewrite: (frame: ServerFrame) => ServerFrame[],
  ): Promise<string> {
    const { WebSocket } = await import('ws');
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    wss.on('connection', (downstream: WebSocket) => {
      const up = new WebSocket(upstream);
      const queued: string[] = [];
      up.on('open', () => {
        for (const text of queued.splice(0)) up.send(text);
      });
      downstream.on('message', (data) =>
        up.readyState === up.OPEN ? up.send(data.toString()) : queued.push(data.toString()),
      );
      up.on('message', (data) => {
        for (const frame of rewrite(JSON.parse(data.toString()) as ServerFrame))
          downstream.send(JSON.stringify(frame));
      });
      up.on('close', () => downstream.close());
      downstream.on('close', () => up.close());
    });
    cleanup.add(() => new Promise((resolve) => wss.close(resolve)), undefined);
    return `ws://127.0.0.1:${(wss.address() as { port: number }).port}/signal`;
  }

  it('drops replayed and re-addressed signals with REPLAY and DECRYPT_FAILED errors', async () => {
    const server = await startServer(cleanup);
    const key = newAccountKey();
    const proxied = await hostileProxy(server.url, (frame) => {
      if (frame.type !== 'signal') return [frame];
      // Deliver the original, a replay, and a copy claiming to come from someone else.
      return [frame, frame, { ...frame, from: 'mallory' }];
    });
    const sender = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'sender' });
    const receiver = startClient(cleanup, { urls: [proxied], accountKey: key, clientId: 'receiver' });
    await Promise.all([peersBecome(sender, ['receiver']), peersBecome(receiver, ['sender'])]);

    const signals: unknown[] = [];
    receiver.on('signal', (from, data) => signals.push({ from, data }));
    const errors: string[] = [];
    const twoErrors = new Promise<void>((resolve) =>
      receiver.on('error', (error) => {
        if (isFerryError(error)) errors.push(error.code);
        if (errors.length === 2) resolve();
      }),
    );
    sender.signal('receiver', { candidate: 'a=candidate:1' });
    await twoErrors;
    expect(errors.sort()).toEqual(['DECRYPT_FAILED', 'REPLAY']);
    expect(signals).toEqual([{ from: 'sender', data: { candidate: 'a=candidate:1' } }]);
  });
});
