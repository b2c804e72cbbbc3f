import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { randomBytes, toHex } from '@ferry/core';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasRedis, TEST_REDIS_URL } from '../../../../testing/services.js';
import type { SignalingServerOptions } from '../../src/signaling/index.js';
import { Cleanup, newAccountKey, next, peersBecome, RawSocket, startClient, startServer } from './helpers.js';

const cleanup = new Cleanup();
let prefix = '';

beforeEach(() => {
  // Each test gets its own key space, so parallel runs and leftovers never meet.
  prefix = `ferry-test:${toHex(randomBytes(6))}:`;
});
afterEach(async () => {
  await cleanup.run();
  const redis = new Redis(TEST_REDIS_URL);
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
});

const instance = (options: SignalingServerOptions = {}) =>
  startServer(cleanup, { redisUrl: TEST_REDIS_URL, redisKeyPrefix: prefix, ...options });

/** A signaling instance in a child process (tsx runs it from the sources), for SIGKILL tests. */
async function spawnInstance(env: Record<string, string>): Promise<{ url: string; child: ChildProcess }> {
  const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', here('./fixtures/instance.ts')], {
    env: { ...process.env, TSX_TSCONFIG_PATH: here('./fixtures/tsconfig.json'), ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  cleanup.add(() => child.kill('SIGKILL'), undefined);
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  return { url: (JSON.parse(line) as { url: string }).url, child };
}

describe.skipIf(!(await hasRedis()))('signaling across instances through Redis', () => {
  it('devices on different instances see each other, exchange signals and see departures', async () => {
    const [one, two] = [await instance(), await instance()];
    const key = newAccountKey();
    const a = startClient(cleanup, { urls: [one.url], accountKey: key, clientId: 'a' });
    const b = startClient(cleanup, { urls: [two.url], accountKey: key, clientId: 'b' });
    const c = startClient(cleanup, { urls: [one.url], accountKey: key, clientId: 'c' });
    await Promise.all([peersBecome(a, ['b', 'c']), peersBecome(b, ['a', 'c']), peersBecome(c, ['a', 'b'])]);

    const toB = next(b, 'signal');
    a.signal('b', { offer: 'from a on instance one' });
    expect(await toB).toEqual(['a', { offer: 'from a on instance one' }]);
    const toC = next(c, 'signal');
    b.signal('c', { answer: 'from b on instance two' });
    expect(await toC).toEqual(['b', { answer: 'from b on instance two' }]);

    const left = Promise.all([next(a, 'peer-left'), next(c, 'peer-left')]);
    await b.close();
    expect(await left).toEqual([['b'], ['b']]);
    expect(one.stats().signalsRelayed + two.stats().signalsRelayed).toBe(2);
  });

  it('counts every instance’s members against the room limit', async () => {
    const [one, two] = [
      await instance({ limits: { maxPeersPerRoom: 2 } }),
      await instance({ limits: { maxPeersPerRoom: 2 } }),
    ];
    const key = newAccountKey();
    const first = await RawSocket.open(cleanup, one.url);
    await first.joinAndWait(key, 'first');
    const second = await RawSocket.open(cleanup, two.url);
    expect(await second.joinAndWait(key, 'second')).toEqual(['first']);
    const third = await RawSocket.open(cleanup, one.url);
    third.join(key, 'third');
    expect(await third.error()).toMatchObject({ code: 'ROOM_FULL', fatal: true });
    // The refused joiner left no trace: the next legitimate peer list is unchanged.
    expect(await (await RawSocket.open(cleanup, two.url)).joinAndWait(key, 'second')).toEqual(['first']);
  });

  it('a device that reconnects through another instance takes over its id; the stale socket is closed', async () => {
    const [one, two] = [await instance(), await instance()];
    const key = newAccountKey();
    const watcher = startClient(cleanup, { urls: [one.url], accountKey: key, clientId: 'watcher' });
    await next(watcher, 'connected');
    const stale = await RawSocket.open(cleanup, one.url);
    await stale.joinAndWait(key, 'phone');
    await peersBecome(watcher, ['phone']);
    const departures: string[] = [];
    watcher.on('peer-left', (id) => departures.push(id));

    const fresh = await RawSocket.open(cleanup, two.url);
    expect(await fresh.joinAndWait(key, 'phone')).toEqual(['watcher']);
    expect(await stale.error()).toMatchObject({ code: 'REPLACED' });
    watcher.signal('phone', 'reaches the new socket');
    expect(await fresh.next((frame) => frame.type === 'signal')).toMatchObject({ from: 'watcher' });
    expect(departures).toEqual([]);
  });

  it('a gracefully closing instance announces its members at once; they fail over and reappear', async () => {
    // A long presence TTL: the departure can only come from the graceful leave, not from expiry.
    const [one, two] = [await instance({ presenceTtlMs: 60_000 }), await instance({ presenceTtlMs: 60_000 })];
    const key = newAccountKey();
    const watcher = startClient(cleanup, { urls: [one.url], accountKey: key, clientId: 'watcher' });
    const mover = startClient(cleanup, { urls: [two.url, one.url], accountKey: key, clientId: 'mover' });
    await Promise.all([peersBecome(watcher, ['mover']), peersBecome(mover, ['watcher'])]);

    const left = next(watcher, 'peer-left');
    const back = next(watcher, 'peer-joined');
    const moved = next(mover, 'connected');
    await two.close();
    expect(await left).toEqual(['mover']);
    expect((await moved)[0]).toBe(one.url);
    expect(await back).toEqual(['mover']);
  });

  it('members of a killed instance expire from presence and their peers are told', async () => {
    const heartbeat = { heartbeatIntervalMs: 100, presenceTtlMs: 500 };
    const survivor = await instance(heartbeat);
    const doomed = await spawnInstance({
      FERRY_REDIS_URL: TEST_REDIS_URL,
      FERRY_REDIS_PREFIX: prefix,
      FERRY_HEARTBEAT_MS: String(heartbeat.heartbeatIntervalMs),
      FERRY_PRESENCE_TTL_MS: String(heartbeat.presenceTtlMs),
    });
    const key = newAccountKey();
    const watcher = startClient(cleanup, { urls: [survivor.url], accountKey: key, clientId: 'watcher' });
    const victim = startClient(cleanup, { urls: [doomed.url], accountKey: key, clientId: 'victim' });
    await Promise.all([peersBecome(watcher, ['victim']), peersBecome(victim, ['watcher'])]);

    const left = next(watcher, 'peer-left');
    doomed.child.kill('SIGKILL');
    await once(doomed.child, 'exit');
    expect(await left).toEqual(['victim']);
    // Nothing of the dead instance is left in the room's presence hash.
    const redis = new Redis(TEST_REDIS_URL);
    const members = await redis.hkeys(`${prefix}members:${watcher.room}`);
    await redis.quit();
    expect(members).toEqual(['watcher']);
  });
});
