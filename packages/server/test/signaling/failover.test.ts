import { isFerryError, SignalingServerError } from '@ferry/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cleanup,
  deadPort,
  newAccountKey,
  next,
  peersBecome,
  startClient,
  startServer,
  TcpProxy,
} from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('signaling client: failover and reconnection', () => {
  it('skips a dead first URL and joins through the second', async () => {
    const server = await startServer(cleanup);
    const dead = `ws://127.0.0.1:${await deadPort()}/signal`;
    const errors: string[] = [];
    const client = startClient(cleanup, {
      urls: [dead, server.url],
      accountKey: newAccountKey(),
      clientId: 'phone',
    });
    client.on('error', (error) => errors.push(error.message));
    const [url] = await next(client, 'connected');
    expect(url).toBe(server.url);
    expect(client.url).toBe(server.url);
    expect(errors.some((message) => message.includes(dead))).toBe(true);
  });

  it('reconnects and rejoins after the server restarts, and signals flow again', async () => {
    const key = newAccountKey();
    const first = await startServer(cleanup);
    const port = Number(new URL(first.url).port);
    const a = startClient(cleanup, { urls: [first.url], accountKey: key, clientId: 'a' });
    const b = startClient(cleanup, { urls: [first.url], accountKey: key, clientId: 'b' });
    await Promise.all([peersBecome(a, ['b']), peersBecome(b, ['a'])]);
    const events: string[] = [];
    a.on('peer-left', (id) => events.push(`left ${id}`));

    const disconnected = Promise.all([next(a, 'disconnected'), next(b, 'disconnected')]);
    await first.close();
    await disconnected;
    expect(a.connected).toBe(false);
    expect(() => a.signal('b', 'while down')).toThrow(expect.objectContaining({ code: 'CLOSED' }));

    const reconnected = Promise.all([next(a, 'connected'), next(b, 'connected')]);
    const second = await startServer(cleanup, { port });
    expect(second.url).toBe(first.url);
    await reconnected;
    await Promise.all([peersBecome(a, ['b']), peersBecome(b, ['a'])]);

    const got = next(b, 'signal');
    a.signal('b', { after: 'restart' });
    expect(await got).toEqual(['a', { after: 'restart' }]);
    // Whoever came back first did not see the other yet; the rejoin grace kept that from being a departure.
    expect(events).toEqual([]);
  });

  it('reports a peer that does not come back after a restart as gone once the rejoin grace ends', async () => {
    const key = newAccountKey();
    const first = await startServer(cleanup);
    const port = Number(new URL(first.url).port);
    const a = startClient(cleanup, { urls: [first.url], accountKey: key, clientId: 'a', rejoinGraceMs: 100 });
    const b = startClient(cleanup, { urls: [first.url], accountKey: key, clientId: 'b' });
    await Promise.all([peersBecome(a, ['b']), peersBecome(b, ['a'])]);

    const disconnected = next(a, 'disconnected');
    await first.close();
    await disconnected;
    await b.close(); // b never returns
    const reconnected = next(a, 'connected');
    await startServer(cleanup, { port });
    await reconnected;
    expect(a.peers()).toEqual(['b']); // not yet confirmed gone
    expect(await next(a, 'peer-left')).toEqual(['b']);
    expect(a.peers()).toEqual([]);
  });

  it('moves to the next server when its server shuts down, and backs off while none is reachable', async () => {
    const key = newAccountKey();
    const primary = await startServer(cleanup);
    const backup = await startServer(cleanup);
    const client = startClient(cleanup, {
      urls: [primary.url, backup.url],
      accountKey: key,
      clientId: 'mover',
    });
    expect((await next(client, 'connected'))[0]).toBe(primary.url);

    const moved = next(client, 'connected');
    await primary.close();
    expect((await moved)[0]).toBe(backup.url);

    // Both gone: every URL fails, then the client keeps retrying (with backoff) without throwing.
    const backupPort = Number(new URL(backup.url).port);
    const failures: string[] = [];
    const twoCycles = new Promise<void>((resolve) =>
      client.on('error', (error) => {
        if (isFerryError(error, 'TRANSPORT')) failures.push(error.message);
        if (failures.length >= 4) resolve();
      }),
    );
    await backup.close();
    await twoCycles;
    expect(client.connected).toBe(false);
    const back = next(client, 'connected');
    await startServer(cleanup, { port: backupPort });
    expect((await back)[0]).toBe(backup.url);
  });

  it('a refused client (room full) retries with backoff and gets in once there is room', async () => {
    const server = await startServer(cleanup, { limits: { maxPeersPerRoom: 2 } });
    const key = newAccountKey();
    const a = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'a' });
    const b = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'b' });
    await Promise.all([peersBecome(a, ['b']), peersBecome(b, ['a'])]);

    const late = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'late' });
    const refusals: string[] = [];
    const refusedTwice = new Promise<void>((resolve) =>
      late.on('error', (error) => {
        if (error instanceof SignalingServerError && error.serverCode === 'ROOM_FULL')
          refusals.push(error.serverCode);
        if (refusals.length === 2) resolve();
      }),
    );
    await refusedTwice;
    expect(late.connected).toBe(false);
    const joined = next(late, 'connected');
    await b.close();
    await joined;
    await peersBecome(late, ['a']);
  });

  it('reconnects when the server stops answering (heartbeat timeout on the client side)', async () => {
    const server = await startServer(cleanup);
    const proxy = await TcpProxy.start(new URL(server.url));
    cleanup.add(() => proxy.close(), proxy);
    const client = startClient(cleanup, {
      urls: [proxy.url],
      accountKey: newAccountKey(),
      clientId: 'patient',
      heartbeatIntervalMs: 50,
      heartbeatTimeoutMs: 300,
    });
    await next(client, 'connected');
    // A black hole: the TCP connection stays up but nothing comes back any more.
    const disconnected = next(client, 'disconnected', (reason) => reason.includes('no frame'));
    proxy.freeze();
    const reconnected = next(client, 'connected');
    await disconnected;
    await reconnected;
  });
});
