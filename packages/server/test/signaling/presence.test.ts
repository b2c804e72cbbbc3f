import { SignalingServerError } from '@ferry/core';
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, newAccountKey, next, peersBecome, RawSocket, startClient, startServer } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('signaling presence: no ghosts', () => {
  it('drops a peer whose socket is destroyed without a close frame', async () => {
    const server = await startServer(cleanup);
    const key = newAccountKey();
    const watcher = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'watcher' });
    await next(watcher, 'connected');
    const victim = await RawSocket.open(cleanup, server.url);
    await victim.joinAndWait(key, 'victim');
    await peersBecome(watcher, ['victim']);

    const left = next(watcher, 'peer-left');
    victim.tcp?.destroy();
    expect(await left).toEqual(['victim']);
    expect(watcher.peers()).toEqual([]);
    expect(server.stats()).toMatchObject({ connections: 1, memberships: 1 });
  });

  it('drops a frozen peer (TCP open, no pongs) within the heartbeat window', async () => {
    const server = await startServer(cleanup, { heartbeatIntervalMs: 100, heartbeatTimeoutMs: 300 });
    const key = newAccountKey();
    const watcher = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'watcher' });
    await next(watcher, 'connected');
    const frozen = await RawSocket.open(cleanup, server.url);
    await frozen.joinAndWait(key, 'frozen');
    await peersBecome(watcher, ['frozen']);

    // Stop reading: the kernel keeps the connection up, but ws can no longer answer pings.
    frozen.tcp?.pause();
    const left = next(watcher, 'peer-left');
    expect(await left).toEqual(['frozen']);
    // It was the heartbeat that removed it, not a TCP close seen by the client side.
    expect(frozen.tcp?.destroyed).toBe(false);
    expect(server.stats().memberships).toBe(1);
  });

  it('announces an explicit leave and a clean close', async () => {
    const server = await startServer(cleanup);
    const key = newAccountKey();
    const watcher = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'watcher' });
    const leaver = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'leaver' });
    const raw = await RawSocket.open(cleanup, server.url);
    await raw.joinAndWait(key, 'raw');
    await peersBecome(watcher, ['leaver', 'raw']);

    const rawLeft = next(watcher, 'peer-left');
    raw.sendJson({ type: 'leave', room: watcher.room });
    expect(await rawLeft).toEqual(['raw']);
    const leaverLeft = next(watcher, 'peer-left');
    const disconnected = next(leaver, 'disconnected');
    await leaver.close();
    await disconnected;
    expect(await leaverLeft).toEqual(['leaver']);
    expect(watcher.peers()).toEqual([]);
  });

  it('lets a device that reconnects take over its client id without a peer-left blip, closing the stale socket', async () => {
    const server = await startServer(cleanup);
    const key = newAccountKey();
    const watcher = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'watcher' });
    await next(watcher, 'connected');
    const stale = await RawSocket.open(cleanup, server.url);
    await stale.joinAndWait(key, 'phone');
    await peersBecome(watcher, ['phone']);
    const presenceEvents: string[] = [];
    watcher.on('peer-left', (id) => presenceEvents.push(`left ${id}`));
    watcher.on('peer-joined', (id) => presenceEvents.push(`joined ${id}`));

    const fresh = await RawSocket.open(cleanup, server.url);
    expect(await fresh.joinAndWait(key, 'phone')).toEqual(['watcher']);
    expect(await stale.error()).toMatchObject({ code: 'REPLACED', fatal: true });
    expect((await stale.closed).code).toBe(1008);

    // The fresh socket is the one that receives signals now.
    watcher.signal('phone', { after: 'takeover' });
    const relayed = await fresh.next((frame) => frame.type === 'signal');
    expect(relayed).toMatchObject({ from: 'watcher' });
    expect(presenceEvents).toEqual([]);
    expect(watcher.peers()).toEqual(['phone']);
    expect(server.stats().memberships).toBe(2);
  });

  it('two live clients with one client id: the newest wins and the older stops instead of fighting back', async () => {
    const server = await startServer(cleanup);
    const key = newAccountKey();
    const watcher = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'watcher' });
    const older = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'dup' });
    await peersBecome(watcher, ['dup']);
    const replaced = next(older, 'error', (error) => error instanceof SignalingServerError);
    const newer = startClient(cleanup, { urls: [server.url], accountKey: key, clientId: 'dup' });
    expect((await replaced)[0]).toMatchObject({ serverCode: 'REPLACED' });
    await next(newer, 'connected');
    expect(older.connected).toBe(false);

    const got = next(newer, 'signal');
    watcher.signal('dup', 'to the newest');
    expect(await got).toEqual(['watcher', 'to the newest']);
    // The older client closed for good: it never rejoined, so the newer one was never replaced.
    expect(newer.connected).toBe(true);
    expect(server.stats()).toMatchObject({ connections: 2, memberships: 2 });
  });

  it('closes sockets that never join', async () => {
    const server = await startServer(cleanup, { limits: { joinTimeoutMs: 200 } });
    const idle = await RawSocket.open(cleanup, server.url);
    expect(await idle.error()).toMatchObject({ code: 'JOIN_TIMEOUT', fatal: true });
    expect((await idle.closed).code).toBe(1008);
  });
});
