import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createSignalingServer } from '../../src/signaling/index.js';
import {
  Cleanup,
  FAST,
  newAccountKey,
  next,
  peersBecome,
  RawSocket,
  silentLogger,
  startClient,
  startServer,
} from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Resolves with the HTTP status of a refused WebSocket upgrade. */
function refusedStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('open', () => reject(new Error(`upgrade to ${url} was accepted`)));
    ws.on('error', () => {});
  });
}

describe('signaling: hosting and shutdown', () => {
  it('shares a Fastify server’s port: signaling on /signal, HTTP routes untouched, other upgrades refused', async () => {
    const app = Fastify();
    app.get('/hello', async () => ({ hello: 'world' }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    cleanup.add(() => app.close(), app);
    const signaling = await createSignalingServer({ server: app.server, logger: silentLogger, ...FAST });
    cleanup.add(() => signaling.close(), signaling);

    const key = newAccountKey();
    const a = startClient(cleanup, { urls: [signaling.url], accountKey: key, clientId: 'a' });
    const b = startClient(cleanup, { urls: [signaling.url], accountKey: key, clientId: 'b' });
    await Promise.all([peersBecome(a, ['b']), peersBecome(b, ['a'])]);
    const got = next(b, 'signal');
    a.signal('b', 'hosted');
    expect(await got).toEqual(['a', 'hosted']);

    const base = signaling.url.replace('ws://', 'http://').replace('/signal', '');
    expect(await (await fetch(`${base}/hello`)).json()).toEqual({ hello: 'world' });
    expect(await refusedStatus(signaling.url.replace('/signal', '/elsewhere'))).toBe(404);
  });

  it('standalone: GET /health answers stats, other routes 404 with a JSON reason', async () => {
    const server = await startServer(cleanup);
    const client = startClient(cleanup, { urls: [server.url], accountKey: newAccountKey(), clientId: 'x' });
    await next(client, 'connected');
    const base = server.url.replace('ws://', 'http://').replace('/signal', '');
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({
      status: 'ok',
      signaling: { connections: 1, rooms: 1, memberships: 1 },
    });
    const missing = await fetch(`${base}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'NOT_FOUND' });
  });

  it('refuses upgrades over the connection limit with 503', async () => {
    const server = await startServer(cleanup, { limits: { maxConnections: 1 } });
    await RawSocket.open(cleanup, server.url);
    expect(await refusedStatus(server.url)).toBe(503);
  });

  it('close() sends SHUTTING_DOWN and close 1001 to every socket, then stops listening', async () => {
    const server = await createSignalingServer({ logger: silentLogger, ...FAST });
    const key = newAccountKey();
    const raw = await RawSocket.open(cleanup, server.url);
    await raw.joinAndWait(key, 'raw');
    const client = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'client' });
    await peersBecome(client, ['raw']);
    const departures: string[] = [];
    client.on('peer-left', (id) => departures.push(id));
    const disconnected = next(client, 'disconnected');

    await server.close();
    expect(await raw.error()).toMatchObject({ code: 'SHUTTING_DOWN', fatal: true });
    expect((await raw.closed).code).toBe(1001);
    await disconnected;
    // Sockets being shut down are not told about each other's departure: it would be noise.
    expect(departures).toEqual([]);
    expect(server.stats()).toMatchObject({ connections: 0, rooms: 0, memberships: 0 });
    await expect(
      fetch(server.url.replace('ws://', 'http://').replace('/signal', '/health')),
    ).rejects.toThrow();
  });
});
