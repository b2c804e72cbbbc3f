import {
  deriveSubkey,
  fromUtf8,
  MemoryRelayStateStore,
  RelayClient,
  type RelayGap,
  type RelayRejectedDiff,
  randomBytes,
  sealDiff,
  toBase64,
  utf8,
} from '@ferry/core';
import { describe, expect, it } from 'vitest';
import {
  newAccount,
  registerDevice,
  relayClient,
  signedPost,
  startRelay,
  useCleanup,
} from '../../../server/test/relay/helpers.js';

// The client against a real diff server (SQLite) on loopback; faults come from a wrapped fetch that
// plays the network or a dishonest server.

const defer = useCleanup();
const text = (payload: Uint8Array) => fromUtf8(payload);

type Fetch = typeof globalThis.fetch;
/** A fetch that lets a test rewrite the server's answers to one path. */
function intercept(path: string, rewrite: (json: Record<string, unknown>) => Record<string, unknown>): Fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    if (!String(input).endsWith(path) || !response.ok) return response;
    const json = rewrite((await response.json()) as Record<string, unknown>);
    return new Response(JSON.stringify(json), {
      status: 200,
      headers: { 'content-type': 'application/json' },
    });
  };
}

describe('RelayClient options', () => {
  it('refuses page sizes, timeouts and retry counts that would stall or spin, naming them', () => {
    const base = { url: 'http://127.0.0.1:9', accountKey: new Uint8Array(32), clientId: 'solo' };
    for (const [bad, name] of [
      [{ pageSize: 0 }, 'pageSize'],
      [{ ttlMs: -1 }, 'ttlMs'],
      [{ requestTimeoutMs: Number.NaN }, 'requestTimeoutMs'],
      [{ retry: { attempts: 0 } }, 'attempts'],
      [{ retry: { initialDelayMs: -5 } }, 'initialDelayMs'],
      [{ compressMinBytes: 0 }, 'compressMinBytes'],
    ] as const) {
      expect(() => new RelayClient({ ...base, ...bad })).toThrow(
        expect.objectContaining({
          code: 'BAD_ARGUMENT',
          message: expect.stringContaining(`${name} must be`),
        }),
      );
    }
    expect(() => new RelayClient({ ...base, retry: { initialDelayMs: 0 } })).not.toThrow();
  });
});

describe('RelayClient against a real diff server', () => {
  it('pushes to one, several and all devices; the targets pull in order, in pages, and ack', async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    const a = relayClient(relay.url, key, 'a');
    const b = relayClient(relay.url, key, 'b', { pageSize: 2 });
    const c = relayClient(relay.url, key, 'c');
    await Promise.all([a.register(), b.register(), c.register()]);
    expect(await a.listDevices()).toEqual(['a', 'b', 'c']);

    await a.push(['b'], utf8('one'));
    await a.push(['b', 'c'], utf8('two'));
    await a.pushToAll(utf8('three'));
    await c.push(['b'], utf8('from c'));
    await a.push(['b'], utf8('four'));

    const forB = await b.pull();
    expect(forB.map((d) => [d.senderClientId, d.sequence, text(d.payload)])).toEqual([
      ['a', 1, 'one'],
      ['a', 2, 'two'],
      ['a', 1, 'three'],
      ['c', 1, 'from c'],
      ['a', 3, 'four'],
    ]);
    // Pulling again without acking hands out the same diffs: nothing is lost before the ack.
    expect((await b.pull()).map((d) => d.diffId)).toEqual(forB.map((d) => d.diffId));
    await b.ack(forB.map((d) => d.diffId));
    expect(await b.pull()).toEqual([]);

    const forC = await c.pull();
    expect(forC.map((d) => text(d.payload))).toEqual(['two', 'three']);
    expect(await a.pull()).toEqual([]); // a's own broadcast is not for a
  });

  it('compresses large payloads inside the seal; the target gets the bytes that were pushed', async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    const stored: number[] = [];
    const recordPushes: Fetch = async (input, init) => {
      if (String(input).endsWith('/pushDiff')) {
        const body = init?.body instanceof Uint8Array ? fromUtf8(init.body) : String(init?.body);
        stored.push((JSON.parse(body) as { encryptedDiff: string }).encryptedDiff.length);
      }
      return fetch(input, init);
    };
    const a = relayClient(relay.url, key, 'a', { fetch: recordPushes });
    const plainA = relayClient(relay.url, key, 'a2', { fetch: recordPushes, compressMinBytes: false });
    const b = relayClient(relay.url, key, 'b');
    await Promise.all([a.register(), plainA.register(), b.register()]);
    const large = utf8(
      JSON.stringify(Array.from({ length: 2000 }, (_, i) => ({ id: `doc-${i}`, done: false }))),
    );
    const small = utf8(JSON.stringify({ id: 'doc-1', title: 'one small write' }));
    await a.push(['b'], large);
    await a.push(['b'], small);
    await plainA.push(['b'], large);
    expect((await b.pull()).map((d) => d.payload)).toEqual([large, small, large]);
    // base64 of the sealed diff: the large payload compressed, the small one and compressMinBytes: false not.
    expect(stored[0]).toBeLessThan(large.length / 4);
    expect(stored[1]).toBeGreaterThan(small.length);
    expect(stored[2]).toBeGreaterThan(large.length);
  });

  it('retries network failures and lost answers; a retried push is delivered once', async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    let pushes = 0;
    const flaky: Fetch = async (input, init) => {
      if (String(input).endsWith('/pushDiff')) {
        pushes++;
        if (pushes === 1) throw new TypeError('fetch failed: connection reset');
        if (pushes === 2) {
          await fetch(input, init); // the server stores it, but the answer is lost
          throw new TypeError('fetch failed: socket hang up');
        }
        if (pushes === 3) return new Response('{"error":"INTERNAL","message":"x"}', { status: 503 });
      }
      return fetch(input, init);
    };
    const a = relayClient(relay.url, key, 'a', { fetch: flaky, retry: { attempts: 5, initialDelayMs: 1 } });
    const b = relayClient(relay.url, key, 'b');
    await b.register();
    const { diffId } = await a.push(['b'], utf8('exactly once'));
    expect(pushes).toBe(4);
    const pulled = await b.pull();
    expect(pulled.map((d) => [d.diffId, text(d.payload)])).toEqual([[diffId, 'exactly once']]);
  });

  it('gives up after its attempts with a TRANSPORT error when the server is unreachable', async () => {
    const client = relayClient('http://127.0.0.1:9', newAccount().key, 'a', {
      retry: { attempts: 2, initialDelayMs: 1 },
    });
    await expect(client.register()).rejects.toMatchObject({ code: 'TRANSPORT' });
  });

  it('signs with the server clock after a STALE answer when its own clock is far off', async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    const skewed = relayClient(relay.url, key, 'a', { now: () => Date.now() - 3_600_000 });
    const b = relayClient(relay.url, key, 'b');
    await b.register();
    await skewed.push(['b'], utf8('from an hour ago'));
    expect((await b.pull()).map((d) => text(d.payload))).toEqual(['from an hour ago']);
  });

  it('surfaces refusals as RelayError and gives refused sequence numbers back', async () => {
    const relay = await startRelay('sqlite', defer, { limits: { maxAccountBytes: 2_000 } });
    const key = newAccount().key;
    const a = relayClient(relay.url, key, 'a');
    const b = relayClient(relay.url, key, 'b');
    await b.register();
    await expect(a.push(['b', 'ghost'], utf8('x'))).rejects.toMatchObject({
      code: 'REJECTED',
      status: 404,
      reason: 'UNKNOWN_TARGET',
      unknownTargets: ['ghost'],
    });
    expect(await b.pull()).toEqual([]);
    const ghost = relayClient(relay.url, key, 'ghost');
    await ghost.register();
    await expect(a.push(['ghost'], randomBytes(3_000))).rejects.toMatchObject({
      code: 'LIMIT',
      status: 429,
      reason: 'QUOTA_BYTES',
    });
    const gaps: RelayGap[] = [];
    ghost.on('gap', (gap) => gaps.push(gap));
    await a.push(['ghost'], utf8('first that arrives'));
    expect((await ghost.pull()).map((d) => d.sequence)).toEqual([1]);
    expect(gaps).toEqual([]);
  });

  it('drops and reports foreign, re-addressed, expired and tampered diffs, and acks them away', async () => {
    const relay = await startRelay('sqlite', defer);
    const account = newAccount();
    const b = relayClient(relay.url, account.key, 'b');
    await b.register();
    const mallory = await registerDevice(relay.url, account, 'mallory');
    const leave = (header: Record<string, unknown>, sealKey: Uint8Array) => {
      const diffId = toBase64(randomBytes(16), { url: true });
      const sealed = sealDiff(
        sealKey,
        { v: 1, id: diffId, from: 'mallory', ep: 'e', to: [['b', 1]], exp: Date.now() + 60_000, ...header },
        utf8('payload'),
      );
      return signedPost(
        relay.url,
        '/pushDiff',
        {
          accountId: account.accountId,
          targetClientId: 'b',
          diffId,
          encryptedDiff: toBase64(sealed, { url: true }),
        },
        mallory,
      ).then(() => diffId);
    };
    const diffKey = deriveSubkey(account.key, 'diff');
    const foreign = await leave({}, deriveSubkey(newAccount().key, 'diff'));
    const readdressed = await leave({ to: [['c', 1]] }, diffKey);
    const expired = await leave({ exp: Date.now() - 1 }, diffKey);
    const renamed = await leave({ id: 'another-diff-id' }, diffKey);
    const junk = toBase64(randomBytes(16), { url: true });
    await signedPost(
      relay.url,
      '/pushDiff',
      { accountId: account.accountId, targetClientId: 'b', diffId: junk, encryptedDiff: 'AAAA' },
      mallory,
    );

    const rejected: RelayRejectedDiff[] = [];
    b.on('rejected', (r) => rejected.push(r));
    expect(await b.pull()).toEqual([]);
    expect(rejected.map((r) => [r.diffId, r.reason])).toEqual([
      [foreign, 'decrypt'],
      [readdressed, 'not-addressed'],
      [expired, 'expired'],
      [renamed, 'mismatch'],
      [junk, 'malformed'],
    ]);
    // They were acknowledged, so the server no longer serves them.
    const again: RelayRejectedDiff[] = [];
    b.on('rejected', (r) => again.push(r));
    expect(await b.pull()).toEqual([]);
    expect(again).toEqual([]);
  });

  it('refuses a diff the server serves again after it was acknowledged', async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    let recorded: Record<string, unknown> | undefined;
    let replay = false;
    const dishonest = intercept('/pullDiff', (json) => {
      if (replay && recorded) return recorded;
      if ((json.diffs as unknown[]).length > 0) recorded = json;
      return json;
    });
    const a = relayClient(relay.url, key, 'a');
    const b = relayClient(relay.url, key, 'b', { fetch: dishonest });
    await b.register();
    await a.push(['b'], utf8('once'));
    const first = await b.pull();
    await b.ack(first.map((d) => d.diffId));
    replay = true;
    const rejected: RelayRejectedDiff[] = [];
    b.on('rejected', (r) => rejected.push(r));
    expect(await b.pull()).toEqual([]);
    expect(rejected).toMatchObject([{ diffId: first[0]!.diffId, reason: 'replay' }]);
  });

  it('stops with a SERVER error when the server says more but does not move on (instead of asking forever)', async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    let pages = 0;
    const stuck = intercept('/pullDiff', (json) => {
      pages++;
      return { ...json, diffs: [], more: true };
    });
    const a = relayClient(relay.url, key, 'a');
    const b = relayClient(relay.url, key, 'b', { fetch: stuck });
    await b.register();
    await a.push(['b'], utf8('waiting'));
    await expect(b.pull()).rejects.toThrow(expect.objectContaining({ code: 'SERVER' }));
    expect(pages).toBeLessThanOrEqual(2);
  });

  it("reports a gap when the server withholds a diff of a sender's sequence", async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    let withheld: string | undefined;
    const withholding = intercept('/pullDiff', (json) => ({
      ...json,
      diffs: (json.diffs as Array<{ diffId: string }>).filter((d) => d.diffId !== withheld),
    }));
    const a = relayClient(relay.url, key, 'a');
    const b = relayClient(relay.url, key, 'b', { fetch: withholding });
    await b.register();
    const gaps: RelayGap[] = [];
    b.on('gap', (gap) => gaps.push(gap));
    await a.push(['b'], utf8('1'));
    withheld = (await a.push(['b'], utf8('2'))).diffId;
    await a.push(['b'], utf8('3'));
    await a.push(['b'], utf8('4'));
    expect((await b.pull()).map((d) => text(d.payload))).toEqual(['1', '3', '4']);
    expect(gaps).toEqual([
      { senderClientId: 'a', epoch: expect.any(String), stream: 'direct', from: 2, to: 2 },
    ]);
  });

  it('keeps its key, sequence numbers and acknowledged ids across restarts through its state store', async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    const aState = new MemoryRelayStateStore();
    const bState = new MemoryRelayStateStore();
    const a1 = relayClient(relay.url, key, 'a', { state: aState });
    const b1 = relayClient(relay.url, key, 'b', { state: bState });
    await b1.register();
    await a1.push(['b'], utf8('before restart'));
    const first = await b1.pull();
    await b1.ack(first.map((d) => d.diffId));
    await a1.push(['b'], utf8('waiting across the restart'));

    // Restarted processes, same stores: same device keys (mailbox kept), numbering continues.
    const a2 = relayClient(relay.url, key, 'a', { state: aState });
    const b2 = relayClient(relay.url, key, 'b', { state: bState });
    const gaps: RelayGap[] = [];
    b2.on('gap', (gap) => gaps.push(gap));
    await a2.push(['b'], utf8('after restart'));
    const pulled = await b2.pull();
    expect(pulled.map((d) => [d.sequence, text(d.payload)])).toEqual([
      [2, 'waiting across the restart'],
      [3, 'after restart'],
    ]);
    expect(gaps).toEqual([]);

    // A device that lost its state re-keys its client id; the old key's mailbox is dropped, unread.
    const b3 = relayClient(relay.url, key, 'b');
    expect(await b3.pull()).toEqual([]);
    await expect(b2.pull()).rejects.toMatchObject({ reason: 'UNKNOWN_KEY' });
  });

  it('removes a device and deletes the account', async () => {
    const relay = await startRelay('sqlite', defer);
    const key = newAccount().key;
    const a = relayClient(relay.url, key, 'a');
    const b = relayClient(relay.url, key, 'b');
    await b.register();
    await a.push(['b'], utf8('dropped with the mailbox'));
    expect(await a.removeDevice('b')).toEqual({ removed: true, droppedDiffs: 1 });
    expect(await a.listDevices()).toEqual(['a']);
    expect(await a.deleteAccount()).toBe(true);
    expect(await relay.storage.stats()).toMatchObject({ accounts: 0, devices: 0, diffs: 0 });
  });
});
