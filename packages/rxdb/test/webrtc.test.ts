import { mkdtempSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createNodeMesh,
  deriveAccount,
  loadNodeWebRTC,
  MemoryHub,
  MemoryRelayStateStore,
  type MeshNetwork,
  MINIMUM_ACCOUNT_DESCRIPTOR,
  RelayClient,
  type WebRTCImplementation,
} from '@ferry/core/node';
import { type FerryServer, startFerryServer } from '@ferry/server';
import { pino } from 'pino';
import type { RxDatabase } from 'rxdb';
import { filter, firstValueFrom } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type FerryReplicationState, MetaStore, replicateFerry } from '../src/index.js';
import { newDisk, openDb, type TodoDb, within } from './support.js';

// Real devices: RxDB (memory storage) + the WebRTC mesh (@roamhq/wrtc, one test also node-datachannel;
// Noise sessions) found through
// the real signaling server, and the real diff server (SQLite) as the offline relay; all on loopback.

let server: FerryServer;
let dataDir: string;
let accountKey: Uint8Array;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ferry-rxdb-'));
  server = await startFerryServer({
    port: 0,
    dataDir,
    logger: pino({ level: 'silent' }),
    logRequests: false,
  });
  accountKey = (await deriveAccount('rxdb webrtc test passphrase', MINIMUM_ACCOUNT_DESCRIPTOR)).key;
});

afterAll(async () => {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A device whose disk (RxDB storage + relay client state) survives stop/start, like a real one. */
class RealDevice {
  readonly disk = newDisk();
  readonly relayState = new MemoryRelayStateStore();
  db!: TodoDb;
  mesh!: MeshNetwork;
  relay!: RelayClient;
  replication!: FerryReplicationState;
  online = false;
  /** Where the next start() finds the diff server (the test's server unless set). */
  relayUrl: string | undefined;

  constructor(
    readonly id: string,
    private readonly wrtc?: WebRTCImplementation,
  ) {}

  /** `beforeReplication` sees the mesh before any sync message can arrive. */
  async start(beforeReplication?: (mesh: MeshNetwork) => void): Promise<this> {
    this.db = await openDb(this.disk);
    this.mesh = createNodeMesh({
      ...(this.wrtc ? { wrtc: this.wrtc } : {}),
      clientId: this.id,
      accountKey,
      signalingUrls: [server.signalingUrl],
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
      // With five devices joining at once an attempt is sometimes lost (reported to the mesh owner);
      // retry it after 2 s instead of the default 20 s.
      connectTimeoutMs: 2000,
    });
    this.mesh.on('error', () => {});
    beforeReplication?.(this.mesh);
    this.relay = new RelayClient({
      url: this.relayUrl ?? server.url,
      accountKey,
      clientId: this.id,
      state: this.relayState,
    });
    this.replication = await replicateFerry({
      collections: { todos: this.db.todos },
      network: this.mesh,
      relay: this.relay,
      retryDelayMs: 50,
    });
    this.online = true;
    return this;
  }

  /** Abrupt: sessions die without a goodbye, then the process's database goes away. */
  async stop(): Promise<void> {
    this.online = false;
    for (const peer of this.mesh.connectedPeers()) this.mesh.session(peer)?.close('stopped');
    await this.mesh.close();
    await this.replication.cancel();
    await this.db.close();
  }

  async docs(): Promise<Record<string, unknown>[]> {
    const rows = await this.db.todos.find().exec();
    return rows
      .map((r): Record<string, unknown> => ({ ...r.toMutableJSON() }))
      .sort((a, b) => String(a.id).localeCompare(String(b.id)));
  }
}

const running: RealDevice[] = [];
afterEach(async () => {
  await Promise.all(
    running
      .splice(0)
      .filter((d) => d.online)
      .map((d) => d.stop()),
  );
});

let deviceCounter = 0;
/** `wrtc`: each device's WebRTC implementation, by index (default @roamhq/wrtc). */
async function realDevices(
  count: number,
  wrtc: Array<WebRTCImplementation | undefined> = [],
): Promise<RealDevice[]> {
  const suffix = ++deviceCounter;
  const devices = Array.from(
    { length: count },
    (_, i) => new RealDevice(`r${suffix}${String.fromCharCode(97 + i)}`, wrtc[i]),
  );
  running.push(...devices);
  await Promise.all(devices.map((d) => d.start()));
  return devices;
}

/** A loopback address where nothing listens: connections to it are refused at once. */
async function closedPortUrl(): Promise<string> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return `http://127.0.0.1:${port}`;
}

const connectedToAll = (devices: RealDevice[]) =>
  Promise.all(
    devices.map(
      (d) =>
        new Promise<void>((resolve) => {
          const check = () => {
            if (devices.every((o) => o === d || d.mesh.connectedPeers().includes(o.id))) {
              d.mesh.off('peer-connected', check);
              resolve();
            }
          };
          d.mesh.on('peer-connected', check);
          check();
        }),
    ),
  );

async function converged(devices: RealDevice[], rounds = 30): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    await Promise.all(devices.map((d) => d.replication.awaitInSync()));
    const states = await Promise.all(devices.map(async (d) => JSON.stringify(await d.docs())));
    if (states.every((s) => s === states[0])) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`not converged: ${JSON.stringify(await Promise.all(devices.map((d) => d.docs())))}`);
}

describe('replicateFerry over real WebRTC sessions and a real Ferry server', () => {
  for (const count of [2, 3, 5]) {
    it(`${count} devices: initial sync, live edits, deletes, concurrent edits of one document`, async () => {
      const devices = await realDevices(count);
      const [first, second] = devices as [RealDevice, RealDevice];
      await first.db.todos.bulkInsert(
        Array.from({ length: 200 }, (_, i) => ({ id: `w${i}`, title: `todo ${i}` })),
      );
      await connectedToAll(devices);
      await Promise.all(devices.map((d) => d.replication.awaitInitialReplication()));
      await converged(devices);
      expect(await devices.at(-1)!.docs()).toHaveLength(200);

      await second.db.todos.findOne('w1').update({ $set: { done: true } });
      await devices.at(-1)!.db.todos.findOne('w2').remove();
      // Every device edits the same document at once: concurrent versions, one winner everywhere.
      await Promise.all(
        devices.map((d) => d.db.todos.findOne('w0').update({ $set: { title: `by ${d.id}` } })),
      );
      await converged(devices);
      const docs = await first.docs();
      expect(docs).toHaveLength(199);
      expect(docs.find((d) => d.id === 'w1')).toMatchObject({ done: true });
      expect(devices.map((d) => `by ${d.id}`)).toContain(docs.find((d) => d.id === 'w0')!.title);
    }, 60_000);
  }

  it('devices on different WebRTC implementations (@roamhq/wrtc, node-datachannel) sync with each other', async () => {
    const nodeDatachannel = await loadNodeWebRTC('node-datachannel');
    const devices = await realDevices(3, [undefined, nodeDatachannel, nodeDatachannel]);
    const [onWrtc, onDatachannel] = devices as [RealDevice, RealDevice];
    await onDatachannel.db.todos.bulkInsert(
      Array.from({ length: 300 }, (_, i) => ({ id: `d${i}`, title: `todo ${i}` })),
    );
    await connectedToAll(devices);
    await converged(devices);
    expect(await onWrtc.docs()).toHaveLength(300);
    await onWrtc.db.todos.findOne('d1').update({ $set: { done: true } });
    await Promise.all(devices.map((d) => d.db.todos.findOne('d0').update({ $set: { title: `by ${d.id}` } })));
    await converged(devices);
    const docs = await devices[2]!.docs();
    expect(docs.find((d) => d.id === 'd1')).toMatchObject({ done: true });
    expect(devices.map((d) => `by ${d.id}`)).toContain(docs.find((d) => d.id === 'd0')!.title);
  }, 60_000);

  it('one replicateFerry per collection on one mesh syncs live and through the diff server with a device that runs both in one', async () => {
    const suffix = ++deviceCounter;
    const [idA, idB] = [`p${suffix}a`, `p${suffix}b`];
    const [dbA, dbB] = await Promise.all([openDb(newDisk(), true), openDb(newDisk(), true)]);
    // A device's diff-server key lives in its relay state, which survives its restarts.
    const relayStates = new Map([idA, idB].map((id) => [id, new MemoryRelayStateStore()]));
    const open = (id: string) => {
      const mesh = createNodeMesh({ clientId: id, accountKey, signalingUrls: [server.signalingUrl] });
      mesh.on('error', () => {});
      const relay = new RelayClient({
        url: server.url,
        accountKey,
        clientId: id,
        state: relayStates.get(id)!,
      });
      return { mesh, relay };
    };
    const a = open(idA);
    const aTodos = await replicateFerry({
      collections: { todos: dbA.todos },
      network: a.mesh,
      relay: a.relay,
    });
    const aNotes = await replicateFerry({
      collections: { notes: dbA.notes },
      network: a.mesh,
      relay: a.relay,
    });
    let b = open(idB);
    let bBoth = await replicateFerry({
      collections: { todos: dbB.todos, notes: dbB.notes },
      network: b.mesh,
      relay: b.relay,
    });
    const inSync = async () => {
      for (let i = 0; i < 2; i++) await Promise.all([aTodos, aNotes, bBoth].map((s) => s.awaitInSync()));
    };
    const keys = async (db: TodoDb, collection: 'todos' | 'notes') =>
      (await db[collection].find().exec()).map((doc) => doc.primary as string).sort();
    try {
      await dbA.todos.insert({ id: 't1', title: 'from a' });
      await dbB.notes.insert({ key: 'n1', body: 'from b' });
      await Promise.all([aTodos.awaitInitialReplication(), aNotes.awaitInitialReplication()]);
      await inSync();
      expect([await keys(dbA, 'notes'), await keys(dbB, 'todos')]).toEqual([['n1'], ['t1']]);

      // B goes away: A's writes in both collections wait in B's mailbox on the diff server. Then A
      // goes too, and B gets them from there alone.
      await bBoth.cancel();
      await b.mesh.close();
      await firstValueFrom(aNotes.peers$.pipe(filter((peers) => peers.length === 0)));
      await dbA.todos.insert({ id: 't2', title: 'while b was away' });
      await dbA.notes.insert({ key: 'n2', body: 'while b was away' });
      await Promise.all([aTodos.awaitInSync(), aNotes.awaitInSync()]);
      expect([aTodos.pendingRelay$.value, aNotes.pendingRelay$.value]).toEqual([0, 0]);
      await Promise.all([aTodos.cancel(), aNotes.cancel()]);
      await a.mesh.close();
      b = open(idB);
      bBoth = await replicateFerry({
        collections: { todos: dbB.todos, notes: dbB.notes },
        network: b.mesh,
        relay: b.relay,
      });
      await bBoth.pullRelay();
      expect([await keys(dbB, 'todos'), await keys(dbB, 'notes')]).toEqual([
        ['t1', 't2'],
        ['n1', 'n2'],
      ]);
      expect(b.mesh.connectedPeers()).toEqual([]);
      expect(await b.relay.pull()).toEqual([]);
    } finally {
      await Promise.all([aTodos.cancel(), aNotes.cancel(), bBoth.cancel()]);
      await Promise.all([a.mesh.close(), b.mesh.close()]);
      await Promise.all([dbA.close(), dbB.close()]);
    }
  }, 60_000);

  it('documents over 256 KiB (1 MiB each) travel through the session layer chunked, nothing dropped', async () => {
    const [a, b] = await realDevices(2);
    await connectedToAll([a!, b!]);
    const big = (seed: string) => seed.repeat((1024 * 1024) / seed.length);
    await a!.db.todos.bulkInsert([
      { id: 'big1', title: 'one', note: big('abcd') },
      { id: 'big2', title: 'two', note: big('wxyz') },
      { id: 'big3', title: 'three', note: big('0123') },
    ]);
    await converged([a!, b!]);
    const docs = await b!.docs();
    expect(docs.map((d) => [d.id, (d.note as string).length])).toEqual([
      ['big1', 1024 * 1024],
      ['big2', 1024 * 1024],
      ['big3', 1024 * 1024],
    ]);
    expect(docs[1]!.note).toBe(big('wxyz'));
  }, 60_000);

  it('offline relay: B offline, A writes, A offline, B online: B gets the writes from the diff server alone', async () => {
    const [a, b] = await realDevices(2);
    await connectedToAll([a!, b!]);
    await converged([a!, b!]); // they meet once, so each knows the other
    await b!.stop();
    await a!.db.todos.bulkInsert([
      { id: 'o1', title: 'while b was away' },
      { id: 'o2', title: 'also' },
    ]);
    await a!.db.todos.findOne('o2').update({ $set: { title: 'also, edited' } });
    await a!.replication.awaitInSync(); // the relay push is stored
    expect(a!.replication.pendingRelay$.value).toBe(0);
    await a!.stop();

    await b!.start();
    await b!.replication.pullRelay();
    expect(await b!.docs()).toEqual([
      { id: 'o1', title: 'while b was away' },
      { id: 'o2', title: 'also, edited' },
    ]);
    expect(b!.mesh.connectedPeers()).toEqual([]);
    expect(await b!.relay.pull()).toEqual([]); // acknowledged: the mailbox is empty
  }, 60_000);

  it('a device removed from the account on the diff server is no longer relayed to; the others still get the writes', async () => {
    const [a, b, c] = await realDevices(3);
    await connectedToAll([a!, b!, c!]);
    await converged([a!, b!, c!]);
    await Promise.all([b!.stop(), c!.stop()]);
    expect(await a!.relay.removeDevice(c!.id)).toMatchObject({ removed: true }); // a lost phone
    const errors: string[] = [];
    a!.replication.error$.subscribe((e) => errors.push(e.message));
    await a!.db.todos.insert({ id: 'x1', title: 'after c was removed' });
    // The diff server refuses a push naming c (UNKNOWN_TARGET, nothing stored): a pushes again to b alone.
    await within(10_000, a!.replication.awaitInSync(), () => 'relay push still pending');
    expect(errors).toEqual([
      expect.stringContaining(`${c!.id} is not a device of this account on the diff server`),
    ]);
    await a!.db.todos.insert({ id: 'x2', title: 'and again' });
    await a!.replication.awaitInSync();
    expect(errors).toHaveLength(1);
    await a!.stop();

    await b!.start();
    await b!.replication.pullRelay();
    expect((await b!.docs()).map((doc) => doc.id)).toEqual(['x1', 'x2']);
    expect(b!.mesh.connectedPeers()).toEqual([]);
  }, 60_000);

  it('more known devices than one push may name (64): the pushes are split, and the unregistered ones forgotten', async () => {
    // No WebRTC needed: one device alone on its network, and the real diff server.
    const relayOf = (clientId: string) =>
      new RelayClient({ url: server.url, accountKey, clientId, state: new MemoryRelayStateStore() });
    const registered = relayOf('manyb');
    await registered.register();
    const ghosts = Array.from({ length: 70 }, (_, i) => `ghost${i}`);
    const db = await openDb(newDisk());
    const network = new MemoryHub().join('manya');
    const a = await replicateFerry({
      collections: { todos: db.todos },
      network,
      relay: relayOf('manya'),
      knownDevices: [...ghosts, 'manyb'],
      retryDelayMs: 50,
    });
    const errors: string[] = [];
    a.error$.subscribe((e) => errors.push(e.message));
    try {
      await db.todos.insert({ id: 'm1', title: 'for the one registered device' });
      await within(10_000, a.awaitInSync(), () => `relay push still pending: ${errors.join('; ')}`);
      const [diff, ...more] = await registered.pull();
      expect(more).toEqual([]);
      expect(diff?.senderClientId).toBe('manya');
      expect(errors.join(' ')).toContain('ghost69');
      expect(
        errors.every((message) => message.includes('is not a device') || message.includes('are not devices')),
      ).toBe(true);
    } finally {
      await a.cancel();
      await network.close();
      await db.close();
    }
  }, 60_000);

  it('a relay push that failed (diff server unreachable) is made by the next run, and B gets it from the diff server alone', async () => {
    const [a, b] = await realDevices(2);
    await connectedToAll([a!, b!]);
    await converged([a!, b!]);
    await b!.stop();
    await a!.stop();
    a!.relayUrl = await closedPortUrl();
    await a!.start();
    const errors: string[] = [];
    a!.replication.error$.subscribe((e) => errors.push(e.code));
    await a!.db.todos.bulkInsert([
      { id: 'u1', title: 'written while the diff server was unreachable' },
      { id: 'u2', title: 'also' },
    ]);
    await vi.waitFor(() => expect(errors).toContain('TRANSPORT'), { timeout: 10_000, interval: 50 });
    expect(a!.replication.pendingRelay$.value).toBe(2); // queued again, to be retried
    await a!.stop();

    a!.relayUrl = undefined;
    await a!.start();
    await a!.replication.awaitInSync(); // the pushes left over from the last run are stored
    await a!.stop();
    await b!.start();
    await b!.replication.pullRelay();
    expect(await b!.docs()).toEqual([
      { id: 'u1', title: 'written while the diff server was unreachable' },
      { id: 'u2', title: 'also' },
    ]);
    expect(b!.mesh.connectedPeers()).toEqual([]);
    expect(await b!.relay.pull()).toEqual([]);
  }, 60_000);

  it('relay diffs are split under the diff server size limit; a document too large for it arrives by checkpoint', async () => {
    const [a, b] = await realDevices(2);
    await connectedToAll([a!, b!]);
    await converged([a!, b!]);
    await b!.stop();
    const errors: string[] = [];
    a!.replication.error$.subscribe((e) => errors.push(e.code));
    await a!.db.todos.bulkInsert([
      ...Array.from({ length: 6 }, (_, i) => ({ id: `mid${i}`, title: 'x', note: 'm'.repeat(300 * 1024) })),
      { id: 'huge', title: 'x', note: 'h'.repeat(2 * 1024 * 1024) },
    ]);
    await a!.replication.awaitInSync();
    expect(errors).toEqual(['TOO_LARGE']);
    await a!.stop(); // b gets what the relay holds, and only that
    await b!.start();
    await b!.replication.pullRelay();
    expect((await b!.docs()).map((d) => d.id)).toEqual(['mid0', 'mid1', 'mid2', 'mid3', 'mid4', 'mid5']);
    await a!.start();
    await connectedToAll([a!, b!]);
    await converged([a!, b!]);
    expect((await b!.docs()).find((d) => d.id === 'huge')?.note).toHaveLength(2 * 1024 * 1024);
  }, 60_000);

  it('a crash in the middle of a large initial sync resumes from the checkpoint and converges', async () => {
    const [a, b] = await realDevices(2);
    await b!.stop();
    await a!.db.todos.bulkInsert(
      Array.from({ length: 3000 }, (_, i) => ({
        id: `big${String(i).padStart(4, '0')}`,
        title: 'x'.repeat(200),
      })),
    );
    await a!.replication.awaitInSync();
    await b!.start();
    // Kill B as soon as part of the data arrived.
    await new Promise<void>((resolve) => {
      const sub = b!.replication.received$.subscribe((n) => {
        if (n > 0) {
          sub?.unsubscribe();
          resolve();
        }
      });
    });
    await b!.stop();
    // What B holds on disk after the crash: some documents, and its checkpoint in A's log.
    const disk = await openDb(b!.disk);
    const kept = await disk.todos.count().exec();
    const store = await MetaStore.open(disk as unknown as RxDatabase);
    // Checkpoint keys name the collection's copy (a new one when it started over, as b does here:
    // it ran before, with nothing recorded).
    const copy = (await store.get<string>('copy/todos')) ?? '';
    const checkpoint = await store.get<{ seq: number }>(`cp/${a!.id}/todos${copy ? `/${copy}` : ''}`);
    await disk.close();
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(3000);
    expect(checkpoint!.seq).toBeGreaterThan(0);
    expect(checkpoint!.seq).toBeLessThanOrEqual(kept);

    let pushed = 0;
    await b!.start((mesh) =>
      mesh.on('message', (_from, message) => {
        if (message.op === 'DB_DIFF_PUSH') pushed += (message.data as { changes: unknown[] }).changes.length;
      }),
    );
    await connectedToAll([a!, b!]);
    await converged([a!, b!]);
    expect(await b!.docs()).toHaveLength(3000);
    // A resent exactly what came after B's persisted checkpoint, not everything.
    expect(pushed).toBe(3000 - checkpoint!.seq);
  }, 60_000);
});
