import { type FerryError, MemoryHub } from '@ferry/core';
import {
  addRxPlugin,
  createRevision,
  createRxDatabase,
  type RxCollection,
  type RxDatabase,
  type RxStorageInstance,
} from 'rxdb';
import { RxDBCleanupPlugin } from 'rxdb/plugins/cleanup';
import { getCRDTSchemaPart, RxDBcrdtPlugin } from 'rxdb/plugins/crdt';
import { wrappedKeyEncryptionCryptoJsStorage } from 'rxdb/plugins/encryption-crypto-js';
import { wrappedKeyCompressionStorage } from 'rxdb/plugins/key-compression';
import { RxDBLocalDocumentsPlugin } from 'rxdb/plugins/local-documents';
import { RxDBMigrationSchemaPlugin } from 'rxdb/plugins/migration-schema';
import { getLocalStorageMock, getRxStorageLocalstorage } from 'rxdb/plugins/storage-localstorage';
import { wrappedValidateAjvStorage } from 'rxdb/plugins/validate-ajv';
import { filter, firstValueFrom, take, toArray } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  CollectionSync,
  type DiffNack,
  type DiffPush,
  type FerryConflict,
  META_COLLECTION,
  MetaStore,
  replicateFerry,
} from '../src/index.js';
import { hashValue, stampFields } from '../src/versions.js';
import {
  claimUnissuedPosition,
  converge,
  Device,
  entryOf,
  MemoryRelayServer,
  metaStorage,
  newDisk,
  openDb,
  startDevices,
  type TodoDb,
  testStorage,
  todoSchema,
  within,
  writersOf,
} from './support.js';

const started: Device[] = [];
afterEach(async () => {
  await Promise.all(
    started
      .splice(0)
      .filter((d) => d.online)
      .map((d) => d.stop()),
  );
});

/** One strictly increasing wall clock shared by the devices: "later" in a test is later in stamps too. */
function sharedClock(): () => number {
  let time = Date.now();
  return () => time++;
}

async function devices(count: number, extra: Parameters<typeof startDevices>[1] = {}) {
  const result = await startDevices(count, { now: sharedClock(), ...extra });
  started.push(...result.devices);
  return result;
}

/** An app conflict handler: the two titles, joined in a fixed order (the same on every device). */
const concatTitles = {
  isEqual: (x: { title: string }, y: { title: string }) => x.title === y.title,
  resolve: async (input: { realMasterState: { title: string }; newDocumentState: { title: string } }) => {
    const titles = [input.realMasterState.title, input.newDocumentState.title].sort();
    return { ...input.realMasterState, title: titles.join(' + '), _deleted: false };
  },
};

/** Two devices sharing a relay that have met once (so each knows the other), in sync. */
async function relayPair() {
  const relayServer = new MemoryRelayServer();
  const {
    hub,
    devices: [a, b],
  } = await devices(2, { relayServer });
  await converge([a!, b!]);
  return { relayServer, hub, a: a!, b: b! };
}

/** Three devices with a relay that met (each knows the others). */
async function relayTrio() {
  const relayServer = new MemoryRelayServer();
  const {
    hub,
    devices: [a, b, c],
  } = await devices(3, { relayServer });
  await converge([a!, b!, c!]);
  return { relayServer, hub, a: a!, b: b!, c: c! };
}

/** `a` runs once (it reads its mailbox and relays what it owes), then `b` reads its mailbox: the notes `b` holds. */
async function notesRelayed(a: Device, b: Device): Promise<unknown[]> {
  await a.start();
  await a.replication.pullRelay();
  await a.replication.awaitInSync();
  await a.stop();
  await b.start();
  await b.replication.pullRelay();
  return (await b.docs('notes')).map((doc) => doc.key);
}

/** The device's acknowledgements are lost on the way (it applies pushes; their senders never hear so). */
function loseAcks(device: Device): void {
  const send = device.network.send.bind(device.network);
  device.network.send = async (peer, message) => {
    if (message.op !== 'DB_DIFF_ACK') await send(peer, message);
  };
}

/** Three devices where A and C never meet (B passes everything on), holding one document A wrote. */
async function seededChain(): Promise<[Device, Device, Device]> {
  const {
    hub,
    devices: [a, b, c],
  } = await devices(3);
  hub.setLinked('deva', 'devc', false);
  await a!.db.todos.insert({ id: 'seed', title: 'seed' });
  await converge([a!, b!, c!]);
  return [a!, b!, c!];
}

describe('replicateFerry over the in-memory network', () => {
  it("refuses batch, window and retry options that would stall or spin, a conflict rule or version it cannot run, a network or collection of another kind, and another device's relay, before touching the database", async () => {
    const db = await openDb(newDisk());
    const network = new MemoryHub().join('solo');
    try {
      for (const bad of [
        { batchSize: 0 },
        { batchSize: 2.5 },
        { window: 0 },
        { batchBytes: -1 },
        { relayBytes: Number.NaN },
        { retryDelayMs: 0 },
        { keepConflicts: -1 },
        { keepConflicts: 1.5 },
        { conflictVersion: '' },
        { conflictVersion: 'v'.repeat(65) },
        { conflict: 'fields' }, // a plain-JS app's typo for { merge: 'fields' }
        { conflict: { merge: 'field' } },
        { conflict: { resolve: () => ({}) } }, // a handler needs isEqual too
        { network: {} },
      ]) {
        const [name] = Object.keys(bad);
        await expect(
          replicateFerry({ collections: { todos: db.todos }, network, ...(bad as object) }),
        ).rejects.toThrow(
          expect.objectContaining({
            code: 'BAD_ARGUMENT',
            message: expect.stringContaining(`replicateFerry: ${name} must be`),
          }),
        );
      }
      // A relay of another device's mailbox: peers' diffs for this one would never be read.
      await expect(
        replicateFerry({
          collections: { todos: db.todos },
          network,
          relay: { ...new MemoryRelayServer().client('other'), clientId: 'other' },
        }),
      ).rejects.toThrow(
        expect.objectContaining({
          code: 'BAD_ARGUMENT',
          message: 'replicateFerry: relay is the mailbox of other, this device is solo',
        }),
      );
      await expect(
        replicateFerry({ collections: { todos: db.todos, notes: { name: 'notes' } as never }, network }),
      ).rejects.toThrow(
        expect.objectContaining({
          code: 'BAD_ARGUMENT',
          message: 'replicateFerry: notes is not an RxCollection',
        }),
      );
      expect(META_COLLECTION in db.collections).toBe(false);
    } finally {
      await network.close();
      await db.close();
    }
  });

  it('replications of separate collections share a network and a database; a collection or a name is taken once', async () => {
    const hub = new MemoryHub();
    const db = await openDb(newDisk(), true);
    const other = await openDb(newDisk(), true);
    const network = hub.join('solo');
    const elsewhere = hub.join('elsewhere');
    const refused = (message: string) => expect.objectContaining({ code: 'BAD_ARGUMENT', message });
    try {
      const todos = await replicateFerry({ collections: { todos: db.todos }, network });
      const notes = await replicateFerry({ collections: { notes: db.notes }, network });
      // Two owners of one name on a network would answer each other's peers.
      await expect(replicateFerry({ collections: { notes: other.notes }, network })).rejects.toThrow(
        refused(expect.stringContaining('this network already carries a replication of notes')),
      );
      // Two replications of one collection would both record its writes as new versions.
      await expect(replicateFerry({ collections: { again: db.todos }, network: elsewhere })).rejects.toThrow(
        refused(expect.stringContaining('again already replicated')),
      );
      await expect(
        replicateFerry({ collections: { one: other.todos, two: other.todos }, network: elsewhere }),
      ).rejects.toThrow(refused(expect.stringContaining('two already replicated, under another name')));
      await todos.cancel();
      const moved = await replicateFerry({ collections: { todos: db.todos }, network: elsewhere });
      await Promise.all([moved.cancel(), notes.cancel()]);
    } finally {
      await network.close();
      await elsewhere.close();
      await db.close();
      await other.close();
    }
  });

  it('cancel() and a new replicateFerry() of the collection without awaiting it (an effect cleaned up and run again): the new one waits for the cancel', async () => {
    const hub = new MemoryHub();
    const now = sharedClock();
    const [dbA, dbB] = await Promise.all([openDb(newDisk()), openDb(newDisk())]);
    const [networkA, networkB] = [hub.join('rema'), hub.join('remb')];
    const b = await replicateFerry({ collections: { todos: dbB.todos }, network: networkB, now });
    try {
      let a = await replicateFerry({ collections: { todos: dbA.todos }, network: networkA, now });
      await dbA.todos.insert({ id: 't1', title: 'before the re-run' });
      for (let run = 0; run < 3; run++) {
        const cancelled = a.cancel();
        expect(a.cancel()).toBe(cancelled); // every call waits for the same work
        a = await replicateFerry({ collections: { todos: dbA.todos }, network: networkA, now });
        expect(a.isStopped()).toBe(false);
        await cancelled;
      }
      await dbA.todos.insert({ id: 't2', title: 'after the re-runs' });
      await Promise.all([a.awaitInSync(), b.awaitInSync()]);
      expect((await dbB.todos.find().exec()).map((doc) => doc.primary)).toEqual(['t1', 't2']);
      await a.cancel();
    } finally {
      await b.cancel();
      await Promise.all([networkA.close(), networkB.close(), dbA.close(), dbB.close()]);
    }
  });

  it('one replicateFerry per collection, started one after the other: relay diffs of the later one wait in the mailbox, then all syncs live', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    const [dbA, dbB] = await Promise.all([openDb(newDisk(), true), openDb(newDisk(), true)]);
    // B runs both collections in one call and knows A, which is not there yet: its writes go to A's mailbox.
    let networkB = hub.join('perb');
    const bOptions = (network: typeof networkB) => ({
      collections: { todos: dbB.todos, notes: dbB.notes },
      network,
      relay: relayServer.client('perb'),
      knownDevices: ['pera'],
      now,
    });
    let b = await replicateFerry(bOptions(networkB));
    await dbB.todos.insert({ id: 't1', title: 'while a was away' });
    await dbB.notes.insert({ key: 'n1', body: 'while a was away' });
    await b.awaitInSync();
    await b.cancel();
    await networkB.close();
    expect(relayServer.waiting('pera')).toBe(2);

    // A starts its todos replication first: the notes diff is nobody's yet, and stays.
    const networkA = hub.join('pera');
    const aOptions = { network: networkA, relay: relayServer.client('pera'), now };
    const aTodos = await replicateFerry({ collections: { todos: dbA.todos }, ...aOptions });
    await aTodos.pullRelay();
    expect((await dbA.todos.find().exec()).map((doc) => doc.primary)).toEqual(['t1']);
    expect(await dbA.notes.find().exec()).toEqual([]);
    expect(relayServer.waiting('pera')).toBe(1);
    const aNotes = await replicateFerry({ collections: { notes: dbA.notes }, ...aOptions });
    await aNotes.pullRelay();
    expect((await dbA.notes.find().exec()).map((doc) => doc.primary)).toEqual(['n1']);
    expect(relayServer.waiting('pera')).toBe(0);

    // B comes back: each of A's replications serves its own collection, live, both ways.
    networkB = hub.join('perb');
    b = await replicateFerry(bOptions(networkB));
    const errors: unknown[] = [];
    for (const state of [aTodos, aNotes, b]) state.error$.subscribe((error) => errors.push(error));
    await Promise.all([aTodos.awaitInitialReplication(), aNotes.awaitInitialReplication()]);
    await dbA.todos.insert({ id: 't2', title: 'from a' });
    await dbA.notes.insert({ key: 'n2', body: 'from a' });
    await dbB.notes.insert({ key: 'n3', body: 'from b' });
    for (let i = 0; i < 2; i++) await Promise.all([aTodos, aNotes, b].map((state) => state.awaitInSync()));
    for (const db of [dbA, dbB]) {
      expect((await db.todos.find().exec()).map((doc) => doc.primary).sort()).toEqual(['t1', 't2']);
      expect((await db.notes.find().exec()).map((doc) => doc.primary).sort()).toEqual(['n1', 'n2', 'n3']);
    }
    expect(relayServer.waiting('pera')).toBe(0);
    expect(errors).toEqual([]);

    // B meets A while A runs no notes replication (and its todos one is paused): A says so, then
    // starts one and asks B back.
    await Promise.all([aNotes.cancel(), b.cancel()]);
    await networkB.close();
    aTodos.pause();
    await dbB.notes.insert({ key: 'n4', body: 'b, before meeting a' });
    networkB = hub.join('perb');
    b = await replicateFerry(bOptions(networkB));
    const refused = firstValueFrom(b.error$);
    await expect(refused).resolves.toMatchObject({
      code: 'REJECTED',
      message: expect.stringContaining('unknown-collection'),
    });
    aTodos.resume();
    const aNotesAgain = await replicateFerry({ collections: { notes: dbA.notes }, ...aOptions });
    for (let i = 0; i < 2; i++) {
      await Promise.all([aTodos, aNotesAgain, b].map((state) => state.awaitInSync()));
    }
    expect((await dbA.notes.find().exec()).map((doc) => doc.primary).sort()).toEqual([
      'n1',
      'n2',
      'n3',
      'n4',
    ]);
    await Promise.all([aTodos.cancel(), aNotesAgain.cancel(), b.cancel()]);
    await Promise.all([networkA.close(), networkB.close(), dbA.close(), dbB.close()]);
  });

  it('two devices: initial sync, live edits and deletes, both ways', async () => {
    const {
      devices: [a, b],
    } = await devices(2, { withNotes: true });
    await a!.db.todos.bulkInsert(Array.from({ length: 50 }, (_, i) => ({ id: `t${i}`, title: `todo ${i}` })));
    await converge([a!, b!]);
    expect(await b!.docs()).toHaveLength(50);

    await b!.db.todos.findOne('t3').update({ $set: { done: true } });
    await a!.db.todos.findOne('t4').remove();
    await a!.db.notes.insert({ key: 'k', body: 'note' });
    await converge([a!, b!]);
    const atA = await a!.docs();
    expect(atA).toHaveLength(49);
    expect(atA.find((d) => d.id === 't3')).toEqual({ id: 't3', title: 'todo 3', done: true });
    expect(await b!.docs('notes')).toEqual([{ key: 'k', body: 'note' }]);
  });

  it('writes taking turns on two devices go out once each: a push after versions that came from its receiver follows its checkpoint', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await converge([a!, b!]);
    const seen: string[] = [];
    let pushed = 0;
    for (const [device, other] of [
      [a!, 'b'],
      [b!, 'a'],
    ] as const) {
      device.network.on('message', (_from, message) => {
        if (message.op === 'DB_DIFF_PUSH') pushed += (message.data as DiffPush).changes.length;
        else
          seen.push(`${other}: ${message.op} ${(message.data as { reason?: string }).reason ?? ''}`.trim());
      });
    }
    // Each device's write comes after applying the other's, whose version its log holds above its
    // peer's checkpoint (and never sends back).
    for (let turn = 0; turn < 6; turn++) {
      const writer = turn % 2 === 0 ? a! : b!;
      await writer.db.todos.insert({ id: `turn${turn}`, title: `written in turn ${turn}` });
      await converge([a!, b!]);
    }
    expect(await a!.docs()).toHaveLength(6);
    // No gap: no push was refused, no stream asked for again, nothing sent twice.
    expect(seen.filter((line) => !line.endsWith('DB_DIFF_ACK'))).toEqual([]);
    expect(pushed).toBe(6);
  });

  it('three devices: a change reaches a device that never meets its author (A -> B -> C)', async () => {
    const {
      hub,
      devices: [a, b, c],
    } = await devices(3);
    hub.setLinked('deva', 'devc', false);
    await a!.db.todos.insert({ id: 'x', title: 'from a' });
    await converge([a!, b!, c!]);
    expect(await c!.docs()).toEqual([{ id: 'x', title: 'from a' }]);
    await c!.db.todos.findOne('x').update({ $set: { title: 'from c' } });
    await converge([a!, b!, c!]);
    expect(await a!.docs()).toEqual([{ id: 'x', title: 'from c' }]);
  });

  it('a live write, and a version passed on to a third device, go out without reading the document back', async () => {
    const [a, b, c] = await seededChain();
    const reads = { deva: 0, devb: 0 };
    for (const device of [a, b]) {
      // Ferry works below RxDB's wrapper of the storage instance.
      const wrapped = device.db.todos.storageInstance as typeof device.db.todos.storageInstance & {
        originalStorageInstance: typeof device.db.todos.storageInstance;
      };
      const storage = wrapped.originalStorageInstance;
      const find = storage.findDocumentsById.bind(storage);
      storage.findDocumentsById = (ids, deleted) => {
        reads[device.id as keyof typeof reads] += 1;
        return find(ids, deleted);
      };
    }
    await a.db.todos.insert({ id: 'live', title: 'from a' });
    await converge([a, b, c]);
    expect(await c.docs()).toContainEqual({ id: 'live', title: 'from a' });
    // A sends what its change event carried. B reads once, to apply; it passes on what it wrote.
    expect(reads).toEqual({ deva: 0, devb: 1 });
  });

  it('a live write, and a version passed on to a third device, go out while their metadata is still being saved', async () => {
    const [a, b, c] = await seededChain();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const held: string[] = [];
    for (const device of [a, b]) {
      const storage = metaStorage(device.db);
      const bulkWrite = storage.bulkWrite.bind(storage);
      storage.bulkWrite = async (rowsToWrite, context) => {
        held.push(device.id);
        await gate;
        return bulkWrite(rowsToWrite, context);
      };
    }
    await a.db.todos.insert({ id: 'live', title: 'from a' });
    let arrived = false;
    for (let wait = 0; wait < 200 && !arrived; wait++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      arrived = (await c.db.todos.findOne('live').exec()) !== null;
    }
    // C holds the write while neither A nor B has saved its metadata (B's own write of it included).
    expect(arrived).toBe(true);
    expect(new Set(held)).toEqual(new Set(['deva', 'devb']));
    release();
    await converge([a, b, c]);
    expect(await c.docs()).toContainEqual({ id: 'live', title: 'from a' });
  });

  it('a crash after sending a version but before saving its metadata: later versions reuse neither its log position nor its vector entry', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.insert({ id: 'x', title: 'one' });
    await converge([a!, b!]);
    const first = a!.replication.collection('todos')!.meta('x')!;
    await a!.db.todos.findOne('x').update({ $set: { title: 'two' } });
    await converge([a!, b!]);
    await a!.stop();
    // What the crash leaves on A's disk: 'two' stored and sent (B has it), its metadata not saved
    // (the first version's is current); then the app's next write, also stored before the crash.
    const disk = await openDb(a!.disk);
    await MetaStore.open(disk as unknown as RxDatabase);
    const rows = (disk.collections as unknown as Record<string, RxCollection>)[META_COLLECTION]!;
    for (const row of await rows.find().exec()) {
      const { value, n } = row.get('v') as { value: unknown; n?: number };
      if (n === undefined || !Array.isArray(value)) continue;
      const others = value.filter((meta: { id: string }) => meta.id !== 'x');
      if (others.length !== value.length) await row.incrementalPatch({ v: { value: [...others, first], n } });
    }
    await disk.todos.findOne('x').update({ $set: { title: 'three' } });
    await disk.close();
    await a!.start();
    await a!.db.todos.insert({ id: 'y', title: 'after the restart' });
    await converge([a!, b!]);
    expect(await b!.docs()).toEqual([
      { id: 'x', title: 'three' },
      { id: 'y', title: 'after the restart' },
    ]);
    const again = a!.replication.collection('todos')!.meta('x')!;
    expect(again.seq).toBeGreaterThan(first.seq + 1);
    expect(entryOf(again.vv, 'deva')).toBeGreaterThan(2);
  });

  it("a crash before saving the metadata of a resolution of the device's own write: the restarted device still relays it (no one else may hold it)", async () => {
    const { relayServer, hub, a, b } = await relayPair();
    await a.db.todos.insert({ id: 'c', title: 'base' });
    await converge([a, b]);
    hub.setLinked('deva', 'devb', false);
    relayServer.down = true;
    await a.db.todos.findOne('c').update({ $set: { title: 'edit at a' } });
    // A device that only A meets, and that relays nothing, sends a concurrent version that wins
    // (a later stamp): A's resolution of its own write, which only A can relay to B.
    const later = `${(Date.now() + 60_000).toString(36).padStart(10, '0')}.00000.devc`;
    const devc = hub.join('devc');
    devc.on('message', (from, message) => {
      const { collection, stream } = message.data as { collection: string; stream: string };
      if (message.op !== 'DB_SYNC_INIT' || collection !== 'todos' || from !== 'deva') return;
      const change = { id: 'c', st: later, vv: { devc: 1 }, del: false, doc: { id: 'c', title: 'from c' } };
      const push = {
        collection,
        stream,
        changes: [change],
        baseVersion: 'devc@0',
        newVersion: 'devc@1',
        more: false,
      };
      void devc.send(from, { op: 'DB_DIFF_PUSH', data: push, timestamp: Date.now(), id: `${stream}1` });
    });
    await vi.waitFor(async () => expect(await a.docs()).toEqual([{ id: 'c', title: 'from c' }]));
    await a.crash(); // the resolution stored, its metadata lost
    await devc.close();
    // A run that cannot reach the diff server either, then one that can.
    await a.start();
    await a.stop();
    relayServer.down = false;
    await a.start();
    await a.replication.awaitInSync();
    await b.replication.pullRelay();
    expect(await b.docs()).toEqual([{ id: 'c', title: 'from c' }]);
  });

  it('serves a batch from hand only while its log holds every write it has heard of', async () => {
    const {
      devices: [a],
    } = await devices(1);
    await a!.db.todos.insert({ id: 'h1', title: 'one' });
    await a!.replication.awaitInSync();
    const sync = a!.replication.collection('todos')!;
    const limits = { count: 100, bytes: 1 << 20 };
    const inHand = () => sync.changesInHand(0, 'devx~store', limits)?.changes.map((c) => c.id);
    expect(inHand()).toEqual(['h1']);
    // A change event waiting to be recorded: the queue serves the next batch, after it.
    const [stored] = await a!.db.todos.storageInstance.findDocumentsById(['h1'], false);
    const recording = sync.record(stored as never);
    expect(inHand()).toBeUndefined();
    await recording;
    expect(inHand()).toEqual(['h1']);
    // A scan for app writes under way: the same.
    const scanning = sync.scan();
    expect(inHand()).toBeUndefined();
    await scanning;
    expect(inHand()).toEqual(['h1']);
  });

  it('a device that lost its database but kept its client id: what it writes afterwards is not taken for older than its lost writes', async () => {
    const {
      hub,
      devices: [a, b],
    } = await devices(2);
    await b!.db.todos.insert({ id: 'cfg', title: 'first' });
    for (const title of ['second', 'third']) await b!.db.todos.findOne('cfg').update({ $set: { title } });
    await converge([a!, b!]);
    // b's store is wiped (a reinstall, a memory storage restarted) and the app writes before b meets a.
    await b!.stop();
    const wiped = new Device('devb', hub, b!.extra);
    started.push(wiped);
    hub.setLinked('deva', 'devb', false);
    await wiped.start();
    await wiped.db.todos.upsert({ id: 'cfg', title: 'after the wipe' });
    await wiped.db.todos.insert({ id: 'new', title: 'also after' });
    await wiped.replication.awaitInSync(); // recorded as b's versions before the two meet
    hub.setLinked('deva', 'devb', true);
    await converge([a!, wiped]);
    expect(await a!.docs()).toEqual([
      { id: 'cfg', title: 'after the wipe' },
      { id: 'new', title: 'also after' },
    ]);
    // The older write it met again is a conflict, recorded with both versions.
    const [conflict] = await wiped.replication.conflicts();
    expect(conflict).toMatchObject({
      id: 'cfg',
      local: { doc: { title: 'after the wipe' } },
      remote: { doc: { title: 'third' } },
    });
  });

  it('bad input: a device whose clock runs far ahead is reported (STALE, once per device), and its writes still sync', async () => {
    const {
      hub,
      devices: [a],
    } = await devices(1);
    const errors: FerryError[] = [];
    a!.replication.error$.subscribe((error) => errors.push(error));
    // Over WebRTC the session handshake refuses a peer this far off; its stamps still come through
    // the relay or a third device.
    const ahead = new Device('devb', hub, { now: () => Date.now() + 10 * 60_000 });
    started.push(ahead);
    await ahead.start();
    await ahead.db.todos.insert({ id: 'f1', title: 'from ten minutes ahead' });
    await ahead.db.todos.insert({ id: 'f2', title: 'and another' });
    await converge([a!, ahead]);
    expect((await a!.docs()).map((doc) => doc.id)).toEqual(['f1', 'f2']);
    expect(
      errors.map((error) => [
        error.code,
        error.message.match(/^devb's clock runs (5|6)\d\d s ahead/) !== null,
      ]),
    ).toEqual([['STALE', true]]);
  });

  it('five devices converge after concurrent edits of the same documents', async () => {
    const { hub, devices: five } = await devices(5);
    await five[0]!.db.todos.bulkInsert(
      Array.from({ length: 20 }, (_, i) => ({ id: `d${i}`, title: 'base' })),
    );
    await converge(five);
    // Everyone apart, everyone edits the same documents, then the network heals.
    const ids = five.map((d) => d.id);
    for (const x of ids) for (const y of ids) if (x < y) hub.setLinked(x, y, false);
    for (const [i, device] of five.entries()) {
      for (let j = 0; j < 20; j += i + 1)
        await device.db.todos.findOne(`d${j}`).update({ $set: { title: `by ${device.id}` } });
      if (i === 4) await device.db.todos.findOne('d1').remove();
      await device.replication.awaitInSync(); // recorded (stamped) before the next device writes
    }
    for (const x of ids) for (const y of ids) if (x < y) hub.setLinked(x, y, true);
    await converge(five);
    const docs = await five[0]!.docs();
    // d0 was edited by all five: the last writer (the highest stamp: device e, which wrote last) wins.
    expect(docs.find((d) => d.id === 'd0')).toEqual({ id: 'd0', title: 'by deve' });
    expect(docs.find((d) => d.id === 'd1')).toBeUndefined();
    const conflicts = await five[0]!.replication.conflicts();
    expect(conflicts.length).toBeGreaterThan(0);
    expect(conflicts[0]).toMatchObject({ collection: 'todos', policy: 'lww' });
  });

  /** Two devices in sync on one document, then each edits it apart: linked again, each meets a conflict. */
  async function apartEdits() {
    const {
      hub,
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.insert({ id: 'c', title: 'base' });
    await converge([a!, b!]);
    hub.setLinked('deva', 'devb', false);
    await a!.db.todos.findOne('c').update({ $set: { title: 'edit at a' } });
    await a!.replication.awaitInSync();
    await b!.db.todos.findOne('c').update({ $set: { title: 'edit at b' } });
    await b!.replication.awaitInSync();
    return { a: a!, b: b!, link: () => hub.setLinked('deva', 'devb', true) };
  }

  it('records and emits each conflict with both versions; the later write wins on every device', async () => {
    const { a, b, link } = await apartEdits();
    const emitted = firstValueFrom(b.replication.conflict$);
    link();
    await converge([a, b]);
    const conflict: FerryConflict = await emitted;
    expect(conflict.local.doc).toEqual({ id: 'c', title: 'edit at b' });
    expect(conflict.remote.doc).toEqual({ id: 'c', title: 'edit at a' });
    expect(conflict.resolved.doc).toEqual({ id: 'c', title: 'edit at b' });
    expect(await a.docs()).toEqual([{ id: 'c', title: 'edit at b' }]);
    expect((await a.replication.conflicts()).length).toBe(1);
  });

  it('the conflict record keeps the latest keepConflicts per collection, across restarts, in one write per batch; clearConflicts() empties it; conflict$ emits every conflict', async () => {
    const {
      hub,
      devices: [a, b],
    } = await devices(2, { keepConflicts: 3 });
    const ids = ['c1', 'c2', 'c3', 'c4', 'c5'];
    await a!.db.todos.bulkInsert(ids.map((id) => ({ id, title: 'base' })));
    await converge([a!, b!]);
    // Both edit while apart; b edits last, so its versions win and are the resolutions.
    const conflictRound = async (edited: string[], round: number) => {
      hub.setLinked('deva', 'devb', false);
      await a!.db.todos.bulkUpsert(edited.map((id) => ({ id, title: `a${round}` })));
      await a!.replication.awaitInSync();
      await b!.db.todos.bulkUpsert(edited.map((id) => ({ id, title: `b${round}` })));
      await b!.replication.awaitInSync();
      hub.setLinked('deva', 'devb', true);
      await converge([a!, b!]);
    };
    const emitted: string[] = [];
    b!.replication.conflict$.subscribe((c) => emitted.push(c.id));
    const writes = vi.spyOn(metaStorage(b!.db), 'bulkWrite');
    await conflictRound(ids, 1);
    expect(emitted.sort()).toEqual(ids);
    const recordWrites = writes.mock.calls.filter(([rows]) =>
      rows.some((row) => row.document.k.startsWith('sconflict/')),
    );
    expect(recordWrites).toHaveLength(1); // not one per conflict (until the sixteenth round)
    const recorded = async (device: Device) =>
      (await device.replication.conflicts()).map(
        (c) => `${c.id}:${(c.resolved.doc as { title: string }).title}`,
      );
    expect(await recorded(b!)).toEqual(['c3:b1', 'c4:b1', 'c5:b1']);
    await b!.stop();
    await b!.start();
    expect(await recorded(b!)).toEqual(['c3:b1', 'c4:b1', 'c5:b1']);
    await conflictRound(['c1', 'c2'], 2);
    expect(await recorded(b!)).toEqual(['c5:b1', 'c1:b2', 'c2:b2']);
    await b!.replication.clearConflicts();
    expect(await b!.replication.conflicts()).toEqual([]);
    // keepConflicts: 0 keeps none (and drops what an earlier run kept); conflict$ still tells.
    expect(await a!.replication.conflicts()).toHaveLength(3);
    await a!.stop();
    a!.extra.keepConflicts = 0;
    await a!.start();
    const told = firstValueFrom(a!.replication.conflict$);
    await conflictRound(['c3'], 3);
    expect((await told).id).toBe('c3');
    expect(await a!.replication.conflicts()).toEqual([]);
  });

  /** Spies on the conflict record's writes (of every device), which `around` wraps. */
  function onConflictRecord(around: (write: () => Promise<string[]>) => Promise<string[]>) {
    const setAll = MetaStore.prototype.setAll;
    return vi.spyOn(MetaStore.prototype, 'setAll').mockImplementation(function (this: MetaStore, entries) {
      const write = () => setAll.call(this, entries);
      return entries.some(([key]) => key.startsWith('conflict/')) ? around(write) : write();
    });
  }

  it('bad input: a conflict record the storage refuses is reported; the push is still applied and acknowledged, the conflict emitted, and the next writes sync', async () => {
    const { a, b, link } = await apartEdits();
    const errors: string[] = [];
    const emitted: string[] = [];
    for (const device of [a, b]) {
      device.replication.error$.subscribe((error) => errors.push(error.message));
      device.replication.conflict$.subscribe((conflict) => emitted.push(conflict.id));
    }
    let refused = 0;
    const spy = onConflictRecord((write) =>
      refused++ === 0 ? Promise.reject(new Error('disk full')) : write(),
    );
    try {
      link();
      await converge([a, b]); // every push acknowledged (a rejected record left one unanswered)
      expect(errors).toEqual(['disk full']);
      expect(emitted).toEqual(['c', 'c']);
      expect(await a.docs()).toEqual([{ id: 'c', title: 'edit at b' }]);
      expect(await b.docs()).toEqual(await a.docs());
      // One device's record lacks the conflict it could not save; the other's holds it.
      const records = [await a.replication.conflicts(), await b.replication.conflicts()];
      expect(records.map((record) => record.length).sort()).toEqual([0, 1]);
      // The streams go on: pushes after the failed record are applied (its failure stopped them).
      await a.db.todos.insert({ id: 'after', title: 'next' });
      await b.db.todos.insert({ id: 'after-b', title: 'next' });
      await converge([a, b]);
      expect((await a.docs()).map((doc) => doc.id)).toEqual(['after', 'after-b', 'c']);
      expect(await b.docs()).toEqual(await a.docs());
    } finally {
      spy.mockRestore();
    }
  });

  it('cancel() waits for the pushes being applied, their conflict records included: the records are there after a restart', async () => {
    const { a, b, link } = await apartEdits();
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let recording = 0;
    const spy = onConflictRecord(async (write) => {
      recording++;
      await held;
      return write();
    });
    try {
      link();
      await vi.waitFor(() => expect(recording).toBe(2)); // each device is writing its record
      let stopped = false;
      const stopping = Promise.all([a.stop(), b.stop()]).then(() => {
        stopped = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(stopped).toBe(false); // a record is held, and the database stays open for it
      release();
      await stopping;
    } finally {
      spy.mockRestore();
    }
    await Promise.all([a.start(), b.start()]);
    for (const device of [a, b]) {
      expect((await device.replication.conflicts()).map((conflict) => conflict.id)).toEqual(['c']);
    }
  });

  it.each([
    ['lww', undefined],
    ['per-field', { merge: 'fields' as const }],
  ])(
    'copies of a document two devices held before they first synced: the one written last wins (%s), whichever device started syncing last',
    async (_, conflict) => {
      // An app that adds Ferry to devices already holding data (synced another way before, or seeded
      // apart). The wall clock, not a test clock: RxDB records each write's time on the same clock.
      const hub = new MemoryHub();
      const [a, b] = ['deva', 'devb'].map((id) => new Device(id, hub, conflict ? { conflict } : {}));
      const pause = () => new Promise((resolve) => setTimeout(resolve, 5));
      await a!.writeWhileDown({ id: 'same', title: 'held by both' });
      await b!.writeWhileDown({ id: 'same', title: 'held by both' });
      await a!.writeWhileDown({ id: 'x', title: 'x, written first (a)' });
      await pause();
      await b!.writeWhileDown({ id: 'x', title: 'x, written last (b)' });
      await b!.writeWhileDown({ id: 'y', title: 'y, written first (b)' });
      await pause();
      await a!.writeWhileDown({ id: 'y', title: 'y, written last (a)' });
      await pause();
      started.push(await b!.start());
      await pause();
      started.push(await a!.start());
      const conflicts = new Map<Device, string[]>([
        [a!, []],
        [b!, []],
      ]);
      for (const [device, ids] of conflicts) device.replication.conflict$.subscribe((c) => ids.push(c.id));
      await converge([a!, b!]);
      const expected = [
        { id: 'same', title: 'held by both' },
        { id: 'x', title: 'x, written last (b)' },
        { id: 'y', title: 'y, written last (a)' },
      ];
      expect(await a!.docs()).toEqual(expected);
      expect(await b!.docs()).toEqual(expected);
      // Equal copies are no conflict; each device settled the two that differed (it received the
      // other's copy while holding its own).
      for (const ids of conflicts.values()) expect(ids.sort()).toEqual(['x', 'y']);
    },
  );

  it("a document written anew after RxDB's cleanup purged its tombstone syncs, live and when a restart finds it", async () => {
    addRxPlugin(RxDBCleanupPlugin);
    const {
      devices: [a, b],
    } = await devices(2);
    const purge = async (id: string) => {
      await (await a!.db.todos.findOne(id).exec())!.remove();
      await converge([a!, b!]);
      await a!.db.todos.cleanup(0);
      expect(await a!.db.todos.storageInstance.findDocumentsById([id], true)).toEqual([]);
    };
    for (const id of ['live', 'down']) {
      await a!.db.todos.insert({ id, title: 'first' });
      await a!.db.todos.findOne(id).update({ $set: { title: 'second' } });
    }
    await converge([a!, b!]);
    // Written again: its `_rev` counts from 1, below the tombstone's in Ferry's log.
    await purge('live');
    await a!.db.todos.insert({ id: 'live', title: 'written anew' });
    await converge([a!, b!]);
    expect(await b!.docs()).toEqual([
      { id: 'down', title: 'second' },
      { id: 'live', title: 'written anew' },
    ]);
    await purge('down');
    await a!.stop();
    await a!.writeWhileDown({ id: 'down', title: 'written anew while down' });
    await a!.start();
    await converge([a!, b!]);
    expect(await b!.docs()).toEqual([
      { id: 'down', title: 'written anew while down' },
      { id: 'live', title: 'written anew' },
    ]);
  });

  it.each([
    ['while its replication ran (closing the collection cancels it)', true],
    ['after its replication was cancelled', false],
  ])(
    'a collection removed (RxDB collection.remove()) %s and added again gets the documents back from its peer',
    async (_, running) => {
      const {
        devices: [a, b],
      } = await devices(2);
      await a!.db.todos.bulkInsert([
        { id: 'a1', title: 'by a' },
        { id: 'a2', title: 'by a, edited on b' },
      ]);
      await converge([a!, b!]);
      await b!.db.todos.findOne('a2').update({ $set: { title: 'edited on b' } });
      await b!.db.todos.insert({ id: 'b1', title: 'by b' });
      await converge([a!, b!]);
      if (!running) await a!.replication.cancel();
      await a!.db.todos.remove();
      expect(a!.replication.isStopped()).toBe(true);
      // The app's new collection: written to before the replication starts again.
      await a!.db.addCollections({ todos: { schema: todoSchema } });
      await a!.db.todos.insert({ id: 'a3', title: 'after the reset' });
      a!.replication = await replicateFerry({ collections: { todos: a!.db.todos }, network: a!.network });
      await converge([a!, b!]);
      const expected = [
        { id: 'a1', title: 'by a' },
        { id: 'a2', title: 'edited on b' },
        { id: 'a3', title: 'after the reset' },
        { id: 'b1', title: 'by b' },
      ];
      expect(await a!.docs()).toEqual(expected);
      expect(await b!.docs()).toEqual(expected);
      // Live both ways afterwards, and a restart finds nothing amiss (its documents are there).
      await b!.db.todos.findOne('a1').update({ $set: { title: 'edited on b later' } });
      await a!.stop();
      await a!.start();
      await a!.db.todos.findOne('b1').update({ $set: { title: 'edited on a' } });
      await converge([a!, b!]);
      expect((await b!.docs()).map((doc) => doc.title)).toEqual([
        'edited on b later',
        'edited on b',
        'after the reset',
        'edited on a',
      ]);
    },
  );

  it('a new device meeting two devices that hold the same documents gets them once: it asks the second from the checkpoint the first holds in its log', async () => {
    const {
      hub,
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.bulkInsert(Array.from({ length: 300 }, (_, i) => ({ id: `a${i}`, title: 'by a' })));
    await b!.db.todos.bulkInsert(Array.from({ length: 20 }, (_, i) => ({ id: `b${i}`, title: 'by b' })));
    await converge([a!, b!]);
    // Each has pushed the other past what came from it (the empty push after a skipped range).
    const checkpointOf = async (device: Device, peer: Device) =>
      (await MetaStore.open(device.db as unknown as RxDatabase)).get<{ seq: number }>(
        device.replication.collection('todos')!.peerKey('cp', peer.id),
      );
    await vi.waitFor(
      async () => {
        expect((await checkpointOf(a!, b!))?.seq).toBe(b!.replication.collection('todos')!.head);
        expect((await checkpointOf(b!, a!))?.seq).toBe(a!.replication.collection('todos')!.head);
      },
      { timeout: 5000 },
    );
    const c = await new Device('devc', hub, { now: sharedClock() }).start();
    started.push(c);
    await converge([a!, b!, c]);
    expect(await c.docs()).toHaveLength(320);
    // The first stream brought all 320; the second asked from the inherited checkpoint (from the
    // beginning, it would have brought them all again).
    expect(c.replication.received$.value).toBe(320);
    // Live afterwards, both ways, with both.
    await b!.db.todos.insert({ id: 'late-b', title: 'by b, later' });
    await c.db.todos.insert({ id: 'late-c', title: 'by c' });
    await converge([a!, b!, c]);
    expect(await a!.docs()).toHaveLength(322);
  });

  it('an inherited checkpoint naming a position the store does not know it issued is served from the beginning, not taken for a restored store', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.insert({ id: 'x', title: 'by a' });
    await converge([a!, b!]);
    const errors: FerryError[] = [];
    a!.replication.error$.subscribe((error) => errors.push(error));
    const epoch = await (await MetaStore.open(a!.db as unknown as RxDatabase)).epoch();
    const pushes: DiffPush[] = [];
    b!.network.on('message', (from, message) => {
      if (from === a!.id && message.op === 'DB_DIFF_PUSH') pushes.push(message.data as DiffPush);
    });
    await b!.network.send(a!.id, {
      op: 'DB_SYNC_INIT',
      data: {
        collection: 'todos',
        stream: 'inherited',
        checkpoint: `${epoch}@${a!.replication.collection('todos')!.head + 100}`,
        dbVersion: '',
        inherited: true,
      },
      timestamp: Date.now(),
      id: 'inherited-init',
    });
    await vi.waitFor(() => expect(pushes.some((push) => push.stream === 'inherited')).toBe(true));
    const first = pushes.find((push) => push.stream === 'inherited')!;
    expect(first.baseVersion).toBe(`${epoch}@0`);
    expect(errors.filter((error) => error.code === 'STALE')).toEqual([]);
    expect(await (await MetaStore.open(a!.db as unknown as RxDatabase)).epoch()).toBe(epoch);
  });

  it.each([
    ['while its replication ran', true],
    ['after its replication was cancelled', false],
  ])(
    'a collection removed %s starts over even when the app rewrote its latest documents before the replication started again (Ferry marked the removal)',
    async (_, running) => {
      const {
        devices: [a, b],
      } = await devices(2);
      await a!.db.todos.insert({ id: 'a1', title: 'by a' });
      await b!.db.todos.bulkInsert([
        { id: 'b1', title: 'by b' },
        { id: 'b2', title: 'by b too' },
      ]);
      await converge([a!, b!]);
      if (!running) await a!.replication.cancel();
      await a!.db.todos.remove();
      await a!.db.addCollections({ todos: { schema: todoSchema } });
      // Two of the latest documents written anew, more often than before: the storage looks as if it
      // still held the collection's documents, so only the mark tells that it was removed.
      for (const title of ['anew', 'anew again']) {
        await a!.db.todos.upsert({ id: 'a1', title });
        await a!.db.todos.upsert({ id: 'b1', title });
      }
      a!.replication = await replicateFerry({ collections: { todos: a!.db.todos }, network: a!.network });
      await converge([a!, b!]);
      // The app's new writes are the latest and win, and b2, which the app did not write, comes back.
      const expected = [
        { id: 'a1', title: 'anew again' },
        { id: 'b1', title: 'anew again' },
        { id: 'b2', title: 'by b too' },
      ];
      expect(await a!.docs()).toEqual(expected);
      expect(await b!.docs()).toEqual(expected);
      await b!.db.todos.insert({ id: 'b3', title: 'after' });
      await converge([a!, b!]);
      expect((await a!.docs()).map((doc) => doc.id)).toEqual(['a1', 'b1', 'b2', 'b3']);
      // Removing the whole database while it replicates marks nothing (the store goes with it).
      await expect(b!.db.remove()).resolves.toEqual(expect.any(Array));
    },
  );

  it('a database restored from a backup: its sync starts over when a peer holds log positions it never issued, and the writes made last win', async () => {
    // RxDB's localStorage storage (a process-wide store keyed by database name): the test copies a
    // database's keys as a backup would, and puts them back.
    const localStorage = getLocalStorageMock();
    const keysOf = (name: string) =>
      Array.from({ length: localStorage.length }, (_, i) => localStorage.key(i)!).filter((key) =>
        key.includes(`-${name}--`),
      );
    const hub = new MemoryHub();
    const [a, b] = ['deva', 'devb'].map((id) => new Device(id, hub));
    a!.disk = {
      storage: wrappedValidateAjvStorage({ storage: getRxStorageLocalstorage({ localStorage }) }),
      name: newDisk().name,
    };
    started.push(await a!.start(), await b!.start());
    const errors: FerryError[] = [];
    await a!.db.todos.bulkInsert([
      { id: 'kept', title: 'before the backup' },
      { id: 'x', title: 'before the backup' },
    ]);
    await converge([a!, b!]);
    await a!.stop();
    const backup = new Map(keysOf(a!.disk.name).map((key) => [key, localStorage.getItem(key)!]));
    await a!.start();
    await a!.db.todos.findOne('x').update({ $set: { title: 'after the backup, then lost' } });
    await a!.db.todos.insert({ id: 'lost', title: 'after the backup, then lost' });
    await converge([a!, b!]);
    await a!.stop();
    for (const key of keysOf(a!.disk.name)) localStorage.removeItem(key);
    for (const [key, value] of backup) localStorage.setItem(key, value);
    // Restored, and written to before it meets its peer: these reuse lost log positions and vector entries.
    hub.setLinked('deva', 'devb', false);
    await a!.start();
    a!.replication.error$.subscribe((error) => errors.push(error));
    expect(await a!.docs()).toEqual([
      { id: 'kept', title: 'before the backup' },
      { id: 'x', title: 'before the backup' },
    ]);
    await a!.db.todos.findOne('x').update({ $set: { title: 'after the restore' } });
    await a!.db.todos.insert({ id: 'new', title: 'after the restore' });
    hub.setLinked('deva', 'devb', true);
    await within(5_000, converge([a!, b!]), () => 'the restored device and its peer did not converge');
    const expected = [
      { id: 'kept', title: 'before the backup' },
      { id: 'lost', title: 'after the backup, then lost' },
      { id: 'new', title: 'after the restore' },
      { id: 'x', title: 'after the restore' },
    ];
    expect(await a!.docs()).toEqual(expected);
    expect(await b!.docs()).toEqual(expected);
    expect(errors.map((error) => error.code)).toEqual(['STALE']);
    // Live afterwards, both ways.
    await b!.db.todos.findOne('new').update({ $set: { title: 'edited on b' } });
    await a!.db.todos.findOne('kept').update({ $set: { title: 'edited on a' } });
    await converge([a!, b!]);
    expect((await b!.docs()).map((doc) => doc.title)).toEqual([
      'edited on a',
      'after the backup, then lost',
      'edited on b',
      'after the restore',
    ]);
  });

  it('a sync marked to start over (its process died while starting over) does so at its next start', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.insert({ id: 'x', title: 'before' });
    await converge([a!, b!]);
    const epochBefore = await (await MetaStore.open(a!.db as unknown as RxDatabase)).epoch();
    await a!.stop();
    const db = await openDb(a!.disk);
    await (await MetaStore.open(db as unknown as RxDatabase)).set('start-over/todos', true);
    await db.close();
    await a!.start();
    const store = await MetaStore.open(a!.db as unknown as RxDatabase);
    expect(await store.epoch()).not.toBe(epochBefore);
    expect(await store.get('start-over/todos')).toBeNull();
    await b!.db.todos.insert({ id: 'y', title: 'after' });
    await converge([a!, b!]);
    expect(await a!.docs()).toEqual([
      { id: 'x', title: 'before' },
      { id: 'y', title: 'after' },
    ]);
  });

  it('a change event seen late, after its write was superseded, records nothing: the log keeps the later write', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.insert({ id: 'x', title: 'first' });
    await converge([a!, b!]);
    const storage = a!.db.todos.storageInstance;
    const [first] = await storage.findDocumentsById(['x'], false);
    await a!.db.todos.findOne('x').update({ $set: { title: 'second' } });
    await converge([a!, b!]);
    const sync = a!.replication.collection('todos')!;
    const head = sync.head;
    await sync.record(first as never);
    expect(sync.head).toBe(head);
    expect(sync.meta('x')!.rev).toBe((await storage.findDocumentsById(['x'], false))[0]!._rev);
    await converge([a!, b!]);
    expect(await b!.docs()).toEqual([{ id: 'x', title: 'second' }]);
  });

  it('a delete wins or loses by the same rule as an edit', async () => {
    const {
      hub,
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.bulkInsert([
      { id: 'p', title: 'p' },
      { id: 'q', title: 'q' },
    ]);
    await converge([a!, b!]);
    hub.setLinked('deva', 'devb', false);
    // Each write is recorded (stamped) before the next one, as writes minutes apart would be.
    const write = async (device: Device, action: Promise<unknown>) => {
      await action;
      await device.replication.awaitInSync();
    };
    await write(a!, a!.db.todos.findOne('p').remove()); // earlier delete loses to b's later edit
    await write(b!, b!.db.todos.findOne('p').update({ $set: { title: 'p edited' } }));
    await write(b!, b!.db.todos.findOne('q').update({ $set: { title: 'q edited' } })); // earlier edit loses to a's later delete
    await write(a!, a!.db.todos.findOne('q').remove());
    hub.setLinked('deva', 'devb', true);
    await converge([a!, b!]);
    expect(await a!.docs()).toEqual([{ id: 'p', title: 'p edited' }]);
  });

  it('the per-field policy keeps both sides edits of different fields', async () => {
    const {
      hub,
      devices: [a, b],
    } = await devices(2, { conflict: { merge: 'fields' } });
    await a!.db.todos.insert({ id: 'f', title: 'base', done: false, n: 1 });
    await converge([a!, b!]);
    hub.setLinked('deva', 'devb', false);
    await a!.db.todos.findOne('f').update({ $set: { title: 'renamed at a' } });
    await b!.db.todos.findOne('f').update({ $set: { done: true } });
    await b!.db.todos.findOne('f').update({ $unset: { n: '' } });
    hub.setLinked('deva', 'devb', true);
    await converge([a!, b!]);
    expect(await a!.docs()).toEqual([{ id: 'f', title: 'renamed at a', done: true }]);
    expect((await b!.replication.conflicts())[0]).toMatchObject({ policy: 'fields' });
  });

  it('the per-field policy: a later edit revives a concurrent delete whole, a later delete wins over an edit', async () => {
    const {
      hub,
      devices: [a, b],
    } = await devices(2, { conflict: { merge: 'fields' } });
    await a!.db.todos.bulkInsert([
      { id: 'r', title: 'r', done: false, n: 1 },
      { id: 's', title: 's', done: false },
    ]);
    await converge([a!, b!]);
    hub.setLinked('deva', 'devb', false);
    const write = async (device: Device, action: Promise<unknown>) => {
      await action;
      await device.replication.awaitInSync();
    };
    await write(a!, a!.db.todos.findOne('r').update({ $set: { title: 'r renamed at a' } }));
    await write(a!, a!.db.todos.findOne('r').remove());
    await write(b!, b!.db.todos.findOne('r').update({ $set: { done: true } })); // later: revives r
    await write(b!, b!.db.todos.findOne('s').update({ $set: { done: true } }));
    await write(a!, a!.db.todos.findOne('s').remove()); // later: s stays deleted
    hub.setLinked('deva', 'devb', true);
    await converge([a!, b!]);
    // Every field of the revived document is there (title as renamed before the delete), none lost.
    expect(await a!.docs()).toEqual([{ id: 'r', title: 'r renamed at a', done: true, n: 1 }]);
  });

  it("the app's RxDB conflict handler decides; the resolution travels back (DB_CONFLICT_RESOLVE)", async () => {
    const {
      hub,
      devices: [a, b],
    } = await devices(2, { conflict: concatTitles });
    const ops: string[] = [];
    a!.network.on('message', (_from, message) => ops.push(message.op));
    await a!.db.todos.insert({ id: 'h', title: 'base' });
    await converge([a!, b!]);
    hub.setLinked('deva', 'devb', false);
    await a!.db.todos.findOne('h').update({ $set: { title: 'A' } });
    await b!.db.todos.findOne('h').update({ $set: { title: 'B' } });
    hub.setLinked('deva', 'devb', true);
    await converge([a!, b!]);
    expect(await a!.docs()).toEqual([{ id: 'h', title: 'A + B' }]);
    expect(ops).toContain('DB_CONFLICT_RESOLVE');
  });

  it("a collection's own RxDB conflictHandler (addCollections) settles its conflicts; collections without one use 'lww'", async () => {
    const {
      hub,
      devices: [a, b],
    } = await devices(2, { withNotes: true, conflictHandlers: { todos: concatTitles } });
    await a!.db.todos.insert({ id: 'h', title: 'base' });
    await a!.db.notes.insert({ key: 'k', body: 'base' });
    await converge([a!, b!]);
    hub.setLinked('deva', 'devb', false);
    await a!.db.todos.findOne('h').update({ $set: { title: 'A' } });
    await a!.db.notes.findOne('k').update({ $set: { body: 'A' } });
    await b!.db.todos.findOne('h').update({ $set: { title: 'B' } });
    await b!.db.notes.findOne('k').update({ $set: { body: 'B' } });
    hub.setLinked('deva', 'devb', true);
    await converge([a!, b!]);
    expect(await a!.docs('todos')).toEqual([{ id: 'h', title: 'A + B' }]);
    expect(await a!.docs('notes')).toEqual([{ key: 'k', body: 'B' }]); // b wrote last
    const policies = (await a!.replication.conflicts()).map((c) => `${c.collection}: ${c.policy}`);
    expect(policies.sort()).toEqual(['notes: lww', 'todos: handler']);
  });

  it("RxDB's CRDT plugin: concurrent updateCRDT() on two devices all count (the collection's CRDT conflict handler settles them)", async () => {
    addRxPlugin(RxDBcrdtPlugin);
    const schema = {
      version: 0,
      primaryKey: 'id',
      type: 'object',
      properties: {
        id: { type: 'string', maxLength: 100 },
        points: { type: 'number' },
        title: { type: 'string' },
        crdts: getCRDTSchemaPart(),
      },
      required: ['id', 'points'],
      crdt: { field: 'crdts' },
    } as const;
    const hub = new MemoryHub();
    const open = async (id: string) => {
      const disk = newDisk();
      const db = await createRxDatabase({ name: disk.name, storage: disk.storage, multiInstance: false });
      const { scores } = await db.addCollections({ scores: { schema } });
      const replication = await replicateFerry({ collections: { scores }, network: hub.join(id) });
      return { db, scores, replication };
    };
    const [a, b] = await Promise.all([open('crdta'), open('crdtb')]);
    const inSync = () => Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
    const score = async (device: typeof a) => (await device.scores.findOne('s').exec())!;
    await a.scores.insertCRDT({ ifMatch: { $set: { id: 's', points: 0 } } });
    await inSync();
    hub.setLinked('crdta', 'crdtb', false);
    await (await score(a)).updateCRDT({ ifMatch: { $inc: { points: 1 } } });
    await (await score(b)).updateCRDT({ ifMatch: { $inc: { points: 1 } } });
    await (await score(b)).updateCRDT({ ifMatch: { $set: { title: 'named at b' } } });
    hub.setLinked('crdta', 'crdtb', true);
    await inSync();
    await inSync(); // the resolution travels back
    const [atA, atB] = [(await score(a)).toJSON(), (await score(b)).toJSON()];
    expect([atA.points, atA.title]).toEqual([2, 'named at b']);
    expect(atB).toEqual(atA);
    await Promise.all([a.replication.cancel(), b.replication.cancel()]);
    await Promise.all([a.db.close(), b.db.close()]);
  });

  it('bad input: a device whose collection has no conflictHandler and one whose has sync nothing of that collection and say why; the others sync', async () => {
    const keepLocal = {
      isEqual: () => false,
      resolve: async (input: { realMasterState: unknown }) => input.realMasterState,
    };
    const hub = new MemoryHub();
    const a = new Device('hnda', hub, { withNotes: true, conflictHandlers: { todos: keepLocal } });
    const b = new Device('hndb', hub, { withNotes: true });
    started.push(a, b);
    await b.start();
    const reported = firstValueFrom(b.replication.error$);
    await a.start();
    await a.db.todos.insert({ id: 't1', title: 'from a' });
    await a.db.notes.insert({ key: 'n1', body: 'from a' });
    await expect(reported).resolves.toMatchObject({
      code: 'REJECTED',
      message: expect.stringContaining("hnda settles conflicts in todos by 'handler', hndb by 'lww'"),
    });
    const arrived = firstValueFrom(b.db.notes.findOne('n1').$.pipe(filter(Boolean)));
    await within(5000, arrived, () => 'the note never arrived');
    expect(await b.docs('notes')).toEqual([{ key: 'n1', body: 'from a' }]);
    expect(await b.docs('todos')).toEqual([]);
  });

  it('sends batches, acknowledges them, and reports sent and received counts', async () => {
    const {
      devices: [a, b],
    } = await devices(2, { batchSize: 100 });
    const ops: string[] = [];
    b!.network.on('message', (_from, message) => ops.push(message.op));
    await a!.db.todos.bulkInsert(Array.from({ length: 1000 }, (_, i) => ({ id: `b${i}`, title: 'x' })));
    await converge([a!, b!]);
    expect(ops.filter((op) => op === 'DB_DIFF_PUSH').length).toBeLessThanOrEqual(12);
    expect(b!.replication.received$.value).toBeGreaterThanOrEqual(1000);
    expect(a!.replication.sent$.value).toBeGreaterThanOrEqual(1000);
    // No echo: b does not send a's documents back to a.
    expect(b!.replication.sent$.value).toBe(0);
  });

  it('cuts pushes by bytes too; a document larger than the budget travels alone', async () => {
    const {
      devices: [a, b],
    } = await devices(2, { batchBytes: 10_000 });
    const pushes: number[] = [];
    b!.network.on('message', (_from, message) => {
      if (message.op === 'DB_DIFF_PUSH') pushes.push((message.data as { changes: unknown[] }).changes.length);
    });
    await a!.db.todos.bulkInsert([
      ...Array.from({ length: 12 }, (_, i) => ({
        id: `s${String(i).padStart(2, '0')}`,
        title: 't',
        note: 'n'.repeat(3000),
      })),
      { id: 'zbig', title: 'big', note: 'b'.repeat(300 * 1024) },
    ]);
    await converge([a!, b!]);
    expect((await b!.docs()).find((d) => d.id === 'zbig')?.note).toHaveLength(300 * 1024);
    expect(pushes.reduce((n, x) => n + x, 0)).toBe(13);
    // ~3.2 KB each against a 10 KB budget: at most the budget plus the one change that crosses it.
    expect(Math.max(...pushes)).toBe(4);
    expect(pushes.at(-1)).toBe(1); // the 300 KiB document, alone
  });

  it('a restart resumes from persisted checkpoints instead of resending everything, both ways', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.bulkInsert(Array.from({ length: 300 }, (_, i) => ({ id: `r${i}`, title: 'x' })));
    await converge([a!, b!]);
    await b!.stop();
    await a!.db.todos.insert({ id: 'late', title: 'written while b was down' });
    const sentBefore = a!.replication.sent$.value;
    await b!.start();
    await converge([a!, b!]);
    expect(await b!.docs()).toHaveLength(301);
    expect(a!.replication.sent$.value - sentBefore).toBe(1);
    // b only received: its log holds a's versions alone, which a has. Its answer to a's first
    // request (b's log was empty then) was an empty push; until the sixteenth round its checkpoint
    // was never saved, so each device's next start asked b from scratch and got all 301 back.
    expect(b!.replication.sent$.value).toBe(0);
    await a!.stop();
    await a!.start();
    await converge([a!, b!]);
    expect(a!.replication.sent$.value + b!.replication.sent$.value).toBe(0);
    await b!.replication.awaitInitialReplication();
  });

  it('a device whose collection is empty keeps one checkpoint per peer, however often it restarts', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await converge([a!, b!]);
    // Each start with nothing recorded asks the peers from scratch under a new copy of the
    // checkpoints; until the seventeenth round the old copy's stayed, one more row per peer each time.
    for (let run = 0; run < 3; run++) {
      await b!.stop();
      await b!.start();
      await converge([a!, b!]);
    }
    const checkpoints = await b!.replication.store.list('cp/');
    expect(checkpoints).toHaveLength(1);
  });

  it('two devices starting on a connected network, their requests crossing, send nothing twice', async () => {
    const hub = new MemoryHub();
    const [dbA, dbB] = [await openDb(newDisk()), await openDb(newDisk())];
    await dbA.todos.bulkInsert(Array.from({ length: 600 }, (_, i) => ({ id: `x${i}`, title: 'x' })));
    const [netA, netB] = [hub.join('deva'), hub.join('devb')];
    // A starts first and asks B for its request back, but its link to B is slow: what A sends is
    // held, in order, until its first push to B. B, starting meanwhile, has asked A by then, so
    // the two requests cross.
    let held: Array<() => Promise<void>> | undefined = [];
    const sendA = netA.send.bind(netA);
    netA.send = async (peer, message) => {
      if (held && message.op === 'DB_DIFF_PUSH') {
        const queued = held;
        held = undefined;
        for (const send of queued) await send();
      }
      if (!held) return sendA(peer, message);
      const slow = held;
      return new Promise<void>((resolve, reject) => {
        slow.push(() => sendA(peer, message).then(resolve, reject));
      });
    };
    const pushed: string[] = [];
    netB.on('message', (_from, message) => {
      if (message.op === 'DB_DIFF_PUSH') {
        pushed.push(...(message.data as { changes: Array<{ id: string }> }).changes.map((c) => c.id));
      }
    });
    const options = { batchSize: 100, retryDelayMs: 20 };
    const a = await replicateFerry({ collections: { todos: dbA.todos }, network: netA, ...options });
    const b = await replicateFerry({ collections: { todos: dbB.todos }, network: netB, ...options });
    try {
      await Promise.all([a.awaitInSync(), b.awaitInSync()]);
      expect(await dbB.todos.count().exec()).toBe(600);
      // B's request, repeated when A's ask arrived, was the same stream: A went on instead of
      // starting over from B's empty checkpoint.
      expect(held).toBeUndefined();
      expect(pushed).toHaveLength(600);
      expect(new Set(pushed).size).toBe(600);
      expect(a.sent$.value).toBe(600);
    } finally {
      await Promise.all([a.cancel(), b.cancel()]);
      await Promise.all([dbA.close(), dbB.close()]);
    }
  });

  it('own writes a peer never acknowledged go to its relay mailbox when it disconnects', async () => {
    const { relayServer, hub, a, b } = await relayPair();
    loseAcks(b); // b applies a's write, but a never hears it did
    await a.db.todos.insert({ id: 'unacked', title: 'x' });
    await vi.waitFor(async () => expect(await b.docs()).toEqual([{ id: 'unacked', title: 'x' }]));
    expect(relayServer.waiting('devb')).toBe(0); // b is connected: no relay yet
    hub.setLinked('deva', 'devb', false);
    await a.replication.awaitInSync();
    expect(relayServer.waiting('devb')).toBe(1);
    await a.stop();
    await b.replication.pullRelay();
    expect(await b.docs()).toEqual([{ id: 'unacked', title: 'x' }]);
    expect(relayServer.waiting('devb')).toBe(0);
  });

  it('a conflict resolution that carries an own write unacknowledged by a peer is relayed to it when the link breaks', async () => {
    const { hub, a, b } = await relayPair();
    b.replication.pause(); // b refuses pushes: a's write reaches b neither now nor by relay (b is connected)
    await b.db.todos.insert({ id: 'both', title: 'from b' });
    const atB = b.replication.collection('todos')!;
    await atB.settle();
    const [fromB] = await atB.current(['both']);
    await a.db.todos.insert({ id: 'both', title: 'from a' }); // later: wins under 'lww'
    const atA = a.replication.collection('todos')!;
    await atA.settle();
    // b's version reaches a by another way (another device, the relay): a joins the two versions.
    await atA.apply([fromB!], { device: 'devb', store: 'devb~store' });
    expect(writersOf(atA.meta('both')!.vv)).toEqual(['deva', 'devb']);
    hub.setLinked('deva', 'devb', false);
    await a.replication.awaitInSync();
    b.replication.resume();
    await b.replication.pullRelay();
    expect(await b.docs()).toEqual([{ id: 'both', title: 'from a' }]);
    expect(await a.docs()).toEqual([{ id: 'both', title: 'from a' }]);
  });

  it('writes made while paused reach a connected peer directly after resume(), not also through its mailbox', async () => {
    const { relayServer, a, b } = await relayPair();
    const pushesBefore = relayServer.pushes;
    a.replication.pause();
    await a.db.todos.insert({ id: 'paused', title: 'written while paused' });
    a.replication.resume();
    await converge([a, b]);
    expect(await b.docs()).toEqual([{ id: 'paused', title: 'written while paused' }]);
    expect(relayServer.waiting('devb')).toBe(0);
    expect(relayServer.pushes).toBe(pushesBefore);
  });

  it('a connected peer that has not asked for a collection yet gets its writes through its mailbox', async () => {
    const { relayServer, hub, a, b } = await relayPair();
    hub.setLinked('deva', 'devb', false);
    a.replication.pause(); // a connects again but does not ask b for anything (no DB_SYNC_INIT)
    hub.setLinked('deva', 'devb', true);
    expect(b.replication.peers$.value).toEqual(['deva']);
    await b.db.todos.insert({ id: 'early', title: 'written before a asked' });
    // Not awaitInSync: it waits for a to catch up, which a paused device never does.
    await vi.waitFor(() => expect(relayServer.waiting('deva')).toBe(1), { timeout: 5000, interval: 10 });
    await a.stop(); // a goes before it ever asks
    await b.stop();
    await a.start();
    await a.replication.pullRelay();
    expect(await a.docs()).toEqual([{ id: 'early', title: 'written before a asked' }]);
  });

  it('a device learns the devices it relays to from peers connected before it started and from relay diffs it receives', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    const [dbA, dbB, dbC] = await Promise.all([openDb(newDisk()), openDb(newDisk()), openDb(newDisk())]);
    const start = async (id: string, db: TodoDb, knownDevices: string[] = []) => {
      const network = hub.join(id);
      const state = await replicateFerry({
        collections: { todos: db.todos },
        network,
        relay: relayServer.client(id),
        knownDevices,
        now,
      });
      const stop = async () => {
        await state.cancel();
        await network.close();
      };
      return { state, stop };
    };
    // B's network is connected to A before B's replication starts (an app that opens its database late).
    const a = await start('pera', dbA);
    const networkB = hub.join('perb');
    await vi.waitFor(() => expect(networkB.connectedPeers()).toEqual(['pera']));
    const b = await replicateFerry({
      collections: { todos: dbB.todos },
      network: networkB,
      relay: relayServer.client('perb'),
      now,
    });
    await Promise.all([a.state.awaitInSync(), b.awaitInSync()]);
    await a.stop();
    await dbB.todos.insert({ id: 't1', title: 'from b, a away' });
    await b.awaitInSync();
    expect(relayServer.waiting('pera')).toBe(1);
    await b.cancel();
    await networkB.close();

    // C never meets A; A hears of C only through C's relay diff, and relays to it from then on.
    const c = await start('perc', dbC, ['pera']);
    await dbC.todos.insert({ id: 't2', title: 'from c' });
    await c.state.awaitInSync();
    await c.stop();
    const aAgain = await start('pera', dbA);
    await aAgain.state.pullRelay();
    expect((await dbA.todos.find().exec()).map((doc) => doc.primary).sort()).toEqual(['t1', 't2']);
    await dbA.todos.insert({ id: 't3', title: 'from a' });
    await aAgain.state.awaitInSync();
    expect(relayServer.waiting('perc')).toBe(1);
    await aAgain.stop();
    await Promise.all([dbA.close(), dbB.close(), dbC.close()]);
  });

  it('a mailbox read that failed (the device started while the diff server was unreachable) is retried until it succeeds', async () => {
    const { relayServer, a, b } = await relayPair();
    await b.stop();
    await a.db.todos.insert({ id: 'r1', title: "left in b's mailbox" });
    await a.replication.awaitInSync();
    await a.stop();
    relayServer.down = true;
    await b.start();
    await vi.waitFor(() => expect(relayServer.failedPulls).toBeGreaterThan(0));
    relayServer.down = false;
    // No peer comes and nobody calls pullRelay(): the replication reads the mailbox again by itself.
    await vi.waitFor(async () => expect((await b.docs()).map((doc) => doc.id)).toEqual(['r1']));
    // Acknowledged once applied: the document can be read before the acknowledgement is made.
    await vi.waitFor(() => expect(relayServer.waiting('devb')).toBe(0));
  });

  // Both make a new store of the collection, which asks its peers from scratch.
  const replaced: Array<[string, (device: Device) => void | Promise<void>]> = [
    ['its disk wiped, a reinstall under the same client id', (device) => device.wipe()],
    ['the app removed its collection', (device) => device.removeCollection()],
  ];
  for (const [how, replace] of replaced) {
    it(`a write relayed before the writer's store was replaced (${how}), read from the mailbox after the new store asked from scratch, goes back to the writer`, async () => {
      const { relayServer, a, b } = await relayPair();
      await b.stop();
      await a.db.todos.insert({ id: 'r1', title: "left in b's mailbox" });
      await a.replication.awaitInSync();
      await a.stop();
      await replace(a);
      relayServer.down = true; // b reads its mailbox only after it has answered a's request
      await b.start();
      const send = b.network.send.bind(b.network);
      let answered = false;
      b.network.send = async (peer, message) => {
        if (peer === 'deva' && message.op === 'DB_DIFF_PUSH') answered = true;
        await send(peer, message);
      };
      await a.start();
      await vi.waitFor(() => expect(answered).toBe(true));
      relayServer.down = false;
      await b.replication.pullRelay();
      // Before, b took the version for the new store's (it came from a) and never sent it back.
      await converge([a, b]);
      expect((await a.docs()).map((doc) => doc.id)).toEqual(['r1']);
    });
  }

  it("bad input: a relay diff naming another device's store is taken for its sender's: what it brings still reaches that device", async () => {
    const relayServer = new MemoryRelayServer();
    const {
      devices: [a, b],
    } = await devices(2, { relayServer });
    await converge([a!, b!]);
    // Believed, the named store (b's) would have a skip the version for b, as if it came from b.
    const diff = {
      v: 1,
      collection: 'todos',
      store: b!.replication.collection('todos')!.storeId,
      changes: [
        {
          id: 'w',
          st: a!.replication.clock.now(),
          vv: { 'devx~0': 1 },
          del: false,
          doc: { id: 'w', title: 'x' },
        },
      ],
    };
    await relayServer.client('devx').push([a!.id], new TextEncoder().encode(JSON.stringify(diff)));
    await a!.replication.pullRelay();
    await converge([a!, b!]);
    expect(await b!.docs()).toEqual([{ id: 'w', title: 'x' }]);
  });

  it('the replications of one database share the devices they relay to: one learns a device, the other relays to it too', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    const [dbA, dbC] = await Promise.all([openDb(newDisk(), true), openDb(newDisk())]);
    const networkA = hub.join('pera');
    const relayA = relayServer.client('pera');
    const aTodos = await replicateFerry({
      collections: { todos: dbA.todos },
      network: networkA,
      relay: relayA,
      now,
    });
    const aNotes = await replicateFerry({
      collections: { notes: dbA.notes },
      network: networkA,
      relay: relayA,
      now,
    });
    // C, which a has never met, leaves a todo in a's mailbox.
    hub.setLinked('pera', 'perc', false);
    const networkC = hub.join('perc');
    const c = await replicateFerry({
      collections: { todos: dbC.todos },
      network: networkC,
      relay: relayServer.client('perc'),
      knownDevices: ['pera'],
      now,
    });
    await dbC.todos.insert({ id: 't1', title: 'from c' });
    await c.awaitInSync();
    await aTodos.pullRelay();
    expect((await dbA.todos.find().exec()).map((doc) => doc.primary)).toEqual(['t1']);
    // a's notes replication relays to c as well.
    await dbA.notes.insert({ key: 'n1', body: 'from a' });
    await aNotes.awaitInSync();
    expect(relayServer.waiting('perc')).toBe(1);
    await Promise.all([aTodos.cancel(), aNotes.cancel(), c.cancel()]);
    await Promise.all([networkA.close(), networkC.close(), dbA.close(), dbC.close()]);
  });

  it('awaitInSync() on a device that starts with no peer online waits for its mailbox to be read and applied', async () => {
    const { relayServer, a, b } = await relayPair();
    await b.stop();
    await a.db.todos.insert({ id: 'm1', title: 'left in the mailbox' });
    await a.replication.awaitInSync();
    expect(relayServer.waiting('devb')).toBe(1);
    await a.stop();
    await b.start();
    // Until the sixteenth round it resolved at once, before the start's mailbox read.
    await b.replication.awaitInSync();
    expect(await b.docs()).toEqual([{ id: 'm1', title: 'left in the mailbox' }]);
    expect(relayServer.waiting('devb')).toBe(0);
  });

  it('pendingRelay$ counts own writes until they are in the mailbox: queued, then while their push is under way', async () => {
    const { relayServer, a, b } = await relayPair();
    await b.stop();
    let release!: () => void;
    relayServer.pushGate = new Promise((resolve) => {
      release = resolve;
    });
    const pending = (n: number) =>
      vi.waitFor(() => expect(a.replication.pendingRelay$.value).toBe(n), { timeout: 5000, interval: 10 });
    try {
      await a.db.todos.bulkInsert([
        { id: 'p1', title: 'x' },
        { id: 'p2', title: 'y' },
      ]);
      await pending(2);
      await vi.waitFor(() => expect(relayServer.held).toBe(1), { timeout: 5000, interval: 10 });
      expect(a.replication.pendingRelay$.value).toBe(2); // taken out of the queue, not yet stored
      await a.db.todos.insert({ id: 'p3', title: 'z' }); // queued behind the push
      await pending(3);
    } finally {
      release(); // also when it failed: the device's cleanup waits for the held push
    }
    await pending(0);
    expect(relayServer.waiting('devb')).toBe(2);
    await a.replication.awaitInSync();
    expect(a.replication.pendingRelay$.value).toBe(0);
  });

  it('a relay push that failed is made by the next run: a device that never meets the writer again still gets the write', async () => {
    const { relayServer, a, b } = await relayPair(); // they met once, so each knows the other
    await b.stop();
    relayServer.down = true;
    const errors: string[] = [];
    a.replication.error$.subscribe((e) => errors.push(e.code));
    await a.db.todos.bulkInsert([
      { id: 'f1', title: 'while the diff server was down' },
      { id: 'f2', title: 'also' },
    ]);
    await vi.waitFor(() => expect(errors).toContain('TRANSPORT'), { timeout: 5000, interval: 20 });
    expect(a.replication.pendingRelay$.value).toBe(2); // queued again, to be retried
    await a.stop(); // the process ends with both pushes still failing
    relayServer.down = false;

    await a.start();
    expect(a.replication.pendingRelay$.value).toBe(2); // left over from the last run
    await a.replication.awaitInSync();
    expect(relayServer.waiting('devb')).toBe(1);
    await a.stop();
    await b.start();
    await b.replication.pullRelay();
    expect(await b.docs()).toEqual([
      { id: 'f1', title: 'while the diff server was down' },
      { id: 'f2', title: 'also' },
    ]);
  });

  it('a relay push that was failing when the sync started over is retried after it', async () => {
    const { relayServer, a, b, c } = await relayTrio();
    await c.stop();
    relayServer.down = true;
    const errors: string[] = [];
    a.replication.error$.subscribe((e) => errors.push(e.code));
    await a.db.todos.insert({ id: 'owed', title: 'for c, while the diff server was down' });
    await vi.waitFor(() => expect(errors).toContain('TRANSPORT'), { timeout: 5000, interval: 20 });
    // a's sync starts over while its push to c's mailbox waits to be retried.
    await claimUnissuedPosition(b, a);
    await vi.waitFor(() => expect(errors).toContain('STALE'), { timeout: 5000, interval: 20 });
    relayServer.down = false;
    await within(5_000, a.replication.awaitInSync(), () => 'the relay push was never retried');
    expect(a.replication.pendingRelay$.value).toBe(0);
    // c gets the write from its mailbox alone.
    await a.stop();
    await b.stop();
    await c.start();
    await c.replication.pullRelay();
    expect(await c.docs()).toEqual([{ id: 'owed', title: 'for c, while the diff server was down' }]);
  });

  it('a mailbox read that was failing when the sync started over is retried after it', async () => {
    const { relayServer, hub, a, b, c } = await relayTrio();
    // c's write reaches a through a's mailbox alone.
    hub.setLinked('deva', 'devc', false);
    hub.setLinked('devb', 'devc', false);
    await c.db.todos.insert({ id: 'from-c', title: 'left in the mailbox' });
    await c.replication.awaitInSync();
    expect(relayServer.waiting('deva')).toBe(1);
    relayServer.down = true;
    const errors: string[] = [];
    a.replication.error$.subscribe((e) => errors.push(e.code));
    await expect(a.replication.pullRelay()).rejects.toThrow('unreachable'); // retried later
    // a's sync starts over, and its first read fails too.
    const failedBefore = relayServer.failedPulls;
    await claimUnissuedPosition(b, a);
    await vi.waitFor(() => expect(errors).toContain('STALE'), { timeout: 5000, interval: 20 });
    await vi.waitFor(() => expect(relayServer.failedPulls).toBeGreaterThan(failedBefore), {
      timeout: 5000,
      interval: 20,
    });
    relayServer.down = false;
    await vi.waitFor(async () => expect((await a.docs()).map((doc) => doc.id)).toContain('from-c'), {
      timeout: 5000,
      interval: 50,
    });
    // Acknowledged once applied: the document can be read before the acknowledgement is made.
    await vi.waitFor(() => expect(relayServer.waiting('deva')).toBe(0), { timeout: 5000, interval: 20 });
  });

  for (const call of ['resume', 'pause'] as const) {
    it(`${call}() while the sync starts over is what the sync does once it started again`, async () => {
      const {
        devices: [a, b],
      } = await devices(2);
      await a!.db.todos.insert({ id: 'before', title: 'x' });
      await converge([a!, b!]);
      // Called while the start-over has paused the replication, before it starts again.
      const called = firstValueFrom(a!.replication.active$.pipe(filter((active) => !active)));
      await claimUnissuedPosition(b!, a!);
      await called;
      expect(a!.replication.isPaused()).toBe(false); // halted by the start-over, not by the app
      a!.replication[call]();
      expect(a!.replication.isPaused()).toBe(call === 'pause');
      // Started again (no event tells it when the replication stays paused).
      const started = () => (a!.replication as unknown as { started: boolean }).started;
      await vi.waitFor(() => expect(started()).toBe(true));
      expect(a!.replication.isPaused()).toBe(call === 'pause');
      if (call === 'pause') a!.replication.resume();
      await b!.db.todos.insert({ id: 'after', title: 'y' });
      await within(5_000, converge([a!, b!]), () => 'the devices did not sync after the start-over');
      expect((await a!.docs()).map((doc) => doc.id)).toEqual(['after', 'before']);
    });
  }

  it('awaitInSync() during a start-over waits for it: a write made meanwhile is in the mailboxes when it resolves', async () => {
    const { relayServer, hub, a, b } = await relayPair();
    const halted = firstValueFrom(a.replication.active$.pipe(filter((active) => !active)));
    await claimUnissuedPosition(b, a);
    await halted;
    hub.setLinked('deva', 'devb', false);
    await a.db.todos.insert({ id: 'meanwhile', title: 'written while the sync started over' });
    await a.replication.awaitInSync();
    expect(relayServer.waiting('devb')).toBeGreaterThan(0);
    expect(a.replication.pendingRelay$.value).toBe(0);
  });

  it('a write a connected peer had not acknowledged when the process stopped goes to its mailbox on the next run', async () => {
    const { relayServer, hub, a, b } = await relayPair();
    loseAcks(b); // b applies a's write, but a never hears it did
    await a.db.todos.insert({ id: 'unacked', title: 'x' });
    await vi.waitFor(async () => expect(await b.docs()).toEqual([{ id: 'unacked', title: 'x' }]));
    await a.stop(); // no disconnect event reaches a's replication: it stopped first
    expect(relayServer.waiting('devb')).toBe(0);
    hub.setLinked('deva', 'devb', false);

    await a.start();
    await a.replication.awaitInSync();
    expect(relayServer.waiting('devb')).toBe(1);
    await b.replication.pullRelay();
    expect(await b.docs()).toEqual([{ id: 'unacked', title: 'x' }]);
    expect(relayServer.waiting('devb')).toBe(0);
  });

  describe('a restart pushes nothing the relay already holds or the peers acknowledged', () => {
    /** a wrote 30 documents: b acknowledged them, c (down) has them in its mailbox. */
    async function written() {
      const { relayServer, a, b, c } = await relayTrio();
      await c.stop();
      await a.db.todos.bulkInsert(Array.from({ length: 30 }, (_, i) => ({ id: `k${i}`, title: 'x' })));
      await converge([a, b]);
      expect(relayServer.waiting('devc')).toBeGreaterThan(0);
      return { relayServer, a, b, pushes: relayServer.pushes };
    }

    it('after cancel(), twice', async () => {
      const { relayServer, a, b, pushes } = await written();
      for (let run = 0; run < 2; run++) {
        await a.stop();
        await a.start();
        await converge([a, b]);
      }
      expect(relayServer.pushes).toBe(pushes);
      expect(a.replication.pendingRelay$.value).toBe(0);
    });

    it('after an abrupt end: what the relay holds and the peers acknowledged is recorded within about a second', async () => {
      const { relayServer, a, b, pushes } = await written();
      const head = a.replication.collection('todos')!.announcedThrough;
      await vi.waitFor(async () => expect(await a.replication.store.get('relayed/todos')).toBe(head), {
        timeout: 5000,
        interval: 50,
      });
      // The process dies: from here on nothing it writes lands (cancel() cannot save anything).
      metaStorage(a.db).bulkWrite = async () => ({ error: [] });
      await a.stop();
      await a.start();
      await converge([a, b]);
      expect(relayServer.pushes).toBe(pushes);
    });
  });

  // A device that is never online with this one has only the relay: what a run without one owed
  // it, and that run's own writes, go to its mailbox with the next run that has a relay.
  it('a run without a relay leaves what was owed to the next run with one, with its own writes', async () => {
    const { relayServer, a, b } = await relayPair();
    await b.stop();
    relayServer.down = true;
    const errors: string[] = [];
    a.replication.error$.subscribe((e) => errors.push(e.code));
    await a.db.todos.insert({ id: 'owed', title: 'x' });
    await vi.waitFor(() => expect(errors).toContain('TRANSPORT'), { timeout: 5000, interval: 20 }); // its push failed
    expect(a.replication.pendingRelay$.value).toBe(1);
    await a.stop();
    relayServer.down = false;
    a.extra.relayServer = undefined;
    await a.start();
    await a.db.todos.insert({ id: 'unrelayed', title: 'x' });
    await a.stop();
    expect(relayServer.pushes).toBe(0);
    a.extra.relayServer = relayServer;
    await a.start();
    expect(a.replication.pendingRelay$.value).toBe(2);
    await a.replication.awaitInSync();
    await a.stop(); // b never meets a again: the relay alone brings both
    await b.start();
    await b.replication.pullRelay();
    expect((await b.docs()).map((d) => d.id)).toEqual(['owed', 'unrelayed']);
    expect(relayServer.waiting('devb')).toBe(0);
  });

  it('a run without a relay counts as delivered what every known device acknowledged: the next run with one pushes none of it', async () => {
    const { relayServer, a, b } = await relayPair();
    a.extra.relayServer = undefined;
    await a.stop();
    await a.start();
    await a.db.todos.insert({ id: 'met', title: 'x' });
    await converge([a, b]);
    const head = a.replication.collection('todos')!.announcedThrough;
    await vi.waitFor(async () => expect(await a.replication.store.get('relayed/todos')).toBe(head), {
      timeout: 5000,
      interval: 50,
    });
    await a.stop();
    await b.stop();
    a.extra.relayServer = relayServer;
    await a.start();
    await a.replication.awaitInSync();
    expect(relayServer.pushes).toBe(0);
    expect(a.replication.pendingRelay$.value).toBe(0);
  });

  it('a run without a relay does not wait for acknowledgements from a device that does not run the collection', async () => {
    const relayServer = new MemoryRelayServer();
    const hub = new MemoryHub();
    const now = sharedClock();
    const [a, b, c] = [
      new Device('deva', hub, { relayServer, withNotes: true, now }),
      new Device('devb', hub, { relayServer, now }), // runs todos only: answers `unknown-collection` for notes
      new Device('devc', hub, { relayServer, withNotes: true, now }),
    ];
    started.push(a, b, c);
    for (const device of [a, b, c]) await device.start();
    await converge([a, c]); // b holds no notes to compare
    await b.replication.awaitInSync();
    await a.stop();
    a.extra.relayServer = undefined;
    await a.start();
    await a.db.notes.insert({ key: 'n1', body: 'c acknowledges it, b never will' });
    await converge([a, c]); // b holds no notes to compare
    await b.replication.awaitInSync();
    const head = a.replication.collection('notes')!.announcedThrough;
    await vi.waitFor(async () => expect(await a.replication.store.get('relayed/notes')).toBe(head), {
      timeout: 5000,
      interval: 50,
    });
    await Promise.all([a.stop(), b.stop(), c.stop()]);
    a.extra.relayServer = relayServer;
    await a.start();
    await a.replication.awaitInSync();
    expect(relayServer.pushes).toBe(0); // c holds the note already: nothing goes to its mailbox
  });

  it('a store whose first runs had no relay relays their writes once it runs with one', async () => {
    const { relayServer, a, b } = await relayPair();
    await b.stop();
    await a.stop();
    // As a store from before relay marks: nothing saved, so the log counts as delivered.
    const db = await openDb(a.disk);
    await (await MetaStore.open(db as unknown as RxDatabase)).set('relayed/todos', null);
    await db.close();
    a.extra.relayServer = undefined;
    await a.start();
    await a.db.todos.insert({ id: 'before the relay', title: 'x' });
    await a.stop();
    a.extra.relayServer = relayServer;
    await a.start();
    await a.replication.awaitInSync();
    await a.stop();
    await b.start();
    await b.replication.pullRelay();
    expect((await b.docs()).map((d) => d.id)).toEqual(['before the relay']);
  });

  it('a stored relay mark that is not a log position is taken as missing: the log counts as delivered', async () => {
    const { relayServer, a, b } = await relayPair();
    await a.db.todos.insert({ id: 'm1', title: 'x' });
    await converge([a, b]);
    await a.stop();
    for (const garbage of ['garbage', -5, 2.5, { seq: 3 }]) {
      const db = await openDb(a.disk);
      await (await MetaStore.open(db as unknown as RxDatabase)).set('relayed/todos', garbage);
      await db.close();
      await a.start();
      expect(await a.replication.store.get('relayed/todos')).toBe(
        a.replication.collection('todos')!.announcedThrough,
      );
      await a.stop();
    }
    expect(relayServer.pushes).toBe(0);
  });

  it('bad relay diffs (not JSON, wrong shape) are reported, acknowledged and never applied; one of a collection not replicated here waits', async () => {
    const relayServer = new MemoryRelayServer();
    const {
      devices: [, b],
    } = await devices(2, { relayServer });
    const errors: string[] = [];
    b!.replication.error$.subscribe((e) => errors.push(e.code));
    const stranger = relayServer.client('devx');
    const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    await stranger.push(['devb'], new TextEncoder().encode('not json {'));
    await stranger.push(['devb'], encode({ v: 1, collection: 'todos', changes: [{ id: 'x', doc: 'nope' }] }));
    await stranger.push(['devb'], encode({ v: 1, collection: 'secrets', changes: [] }));
    await b!.replication.pullRelay();
    expect(errors).toEqual(['SCHEMA_MISMATCH', 'SCHEMA_MISMATCH']);
    // A replication of `secrets` may start later on this device (its TTL removes it otherwise).
    expect(relayServer.waiting('devb')).toBe(1);
    expect(await b!.docs()).toEqual([]);
  });

  it('an app write racing an incoming diff is never overwritten by it', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    const sync = b!.replication.collection('todos')!;
    for (let delay = 0; delay < 12; delay++) {
      const id = `race${String(delay).padStart(2, '0')}`;
      await b!.db.todos.insert({ id, title: 'base' });
      await b!.replication.awaitInSync();
      const base = sync.meta(id)!;
      // A version from a that does not include b's coming write.
      const remote = {
        id,
        st: a!.replication.clock.now(),
        vv: { ...base.vv, deva: 1 },
        del: false,
        doc: { id, title: 'from a' },
      };
      const applying = sync.apply([remote], { device: 'deva', store: 'deva~store' });
      for (let i = 0; i < delay; i++) await new Promise((resolve) => setImmediate(resolve));
      // incrementalPatch: RxDB's write that re-reads on a conflict (a plain update may throw CONFLICT
      // when any replication writes the document at the same moment).
      await (await b!.db.todos.findOne(id).exec())!.incrementalPatch({ title: `app write ${delay}` });
      await applying;
      await b!.replication.awaitInSync();
      expect((await b!.db.todos.findOne(id).exec())!.title).toBe(`app write ${delay}`);
      expect(entryOf(sync.meta(id)!.vv, 'devb')).toBeGreaterThan(entryOf(base.vv, 'devb')); // b's own write
    }
    await converge([a!, b!]);
    expect((await a!.docs()).map((d) => d.title)).toEqual(
      Array.from({ length: 12 }, (_, i) => `app write ${i}`),
    );
  });

  it("a write the storage's change feed never shows (made while Ferry did not run, at a write time before its scan checkpoint): taken for the app's write when the document is next read, and it reaches every device", async () => {
    const hub = new MemoryHub();
    const a = new Device('fda', hub);
    const b = new Device('fdb', hub);
    started.push(a, b);
    await a.start();
    await b.start();
    await a.db.todos.bulkInsert([
      { id: 'y1', title: 'first' },
      { id: 'y2', title: 'kept' },
    ]);
    await converge([a, b]);
    // A restart scans the storage: Ferry's scan checkpoint passes both documents.
    await a.stop();
    await a.start();
    // Written below RxDB's collection API, as a storage-level restore of one document could: an
    // hour back in write time, so the change feed, read from that checkpoint, never shows it.
    await a.stop();
    const db = await openDb(a.disk);
    const [previous] = await db.todos.storageInstance.findDocumentsById(['y1'], false);
    const document = {
      ...previous!,
      title: 'changed unseen',
      _rev: createRevision(db.token, previous),
      _meta: { lwt: previous!._meta.lwt - 3_600_000 },
    };
    // RxDB's wrapper of the storage would stamp the write now: this writes under it.
    const storage = db.todos.internalStorageInstance;
    expect((await storage.bulkWrite([{ document, previous }], 'restore')).error).toEqual([]);
    await db.close();
    await a.start();
    expect(a.replication.collection('todos')!.meta('y1')!.rev).toBe(previous!._rev); // not scanned
    // A new device asks a for everything: a reads y1, finds it at a `_rev` it never recorded, and
    // records it as its own write, which b gets too.
    const c = new Device('fdc', hub);
    started.push(c);
    await c.start();
    await within(10_000, converge([a, b, c]), () => 'the devices never converged');
    for (const d of [a, b, c]) {
      expect((await d.docs()).map((doc) => doc.title)).toEqual(['changed unseen', 'kept']);
    }
    expect(a.replication.collection('todos')!.meta('y1')).toMatchObject({ rev: document._rev, local: true });
  });

  it("an app handler that keeps the master (as RxDB's default does): two devices settling one conflict at once agree, the later write wins", async () => {
    // The master is the version the last-writer rule would keep, on every device. With the local copy
    // as master, each device kept its own, and the two resolved each other's resolutions for ever.
    const keepMaster = {
      isEqual: (x: { title: string }, y: { title: string }) => x.title === y.title,
      resolve: async (input: { realMasterState: unknown }) => input.realMasterState,
    };
    const {
      hub,
      devices: [a, b],
    } = await devices(2, { conflict: keepMaster });
    await a!.db.todos.insert({ id: 'km', title: 'base' });
    await converge([a!, b!]);
    hub.setLinked('deva', 'devb', false);
    await (await a!.db.todos.findOne('km').exec())!.incrementalPatch({ title: 'earlier, at a' });
    await (await b!.db.todos.findOne('km').exec())!.incrementalPatch({ title: 'later, at b' });
    hub.setLinked('deva', 'devb', true);
    await converge([a!, b!]);
    expect(await a!.docs()).toEqual([{ id: 'km', title: 'later, at b' }]);
    const conflicts = [...(await a!.replication.conflicts()), ...(await b!.replication.conflicts())];
    expect(conflicts.length).toBeLessThanOrEqual(2); // each device settled it once at most
  });

  it('bad input: an app conflict handler that throws is named in the error (BAD_ARGUMENT), nothing is lost, and the conflict settles once it stops', async () => {
    let failing = true;
    const flaky = {
      isEqual: (x: { title: string }, y: { title: string }) => x.title === y.title,
      resolve: async (input: { realMasterState: unknown }) => {
        if (failing) throw new Error('the prompt was dismissed');
        return input.realMasterState;
      },
    };
    const {
      hub,
      devices: [a, b],
    } = await devices(2, { conflict: flaky });
    await a!.db.todos.insert({ id: 'fl', title: 'base' });
    await converge([a!, b!]);
    const reported = firstValueFrom(a!.replication.error$);
    hub.setLinked('deva', 'devb', false);
    await (await a!.db.todos.findOne('fl').exec())!.incrementalPatch({ title: 'at a' });
    await (await b!.db.todos.findOne('fl').exec())!.incrementalPatch({ title: 'at b, later' });
    hub.setLinked('deva', 'devb', true);
    await expect(reported).resolves.toMatchObject({
      code: 'BAD_ARGUMENT',
      message: "the app's conflict handler threw while settling todos/fl: the prompt was dismissed",
    });
    expect((await a!.docs())[0]!.title).toBe('at a'); // nothing overwritten meanwhile
    failing = false; // the push is retried after retryDelayMs
    await converge([a!, b!]);
    expect(await b!.docs()).toEqual([{ id: 'fl', title: 'at b, later' }]);
  });

  it('an app write landing while a conflict is being resolved is resolved again, not overwritten', async () => {
    const seen: string[] = [];
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    // An app conflict handler that takes its time (a prompt, a network call): the app writes meanwhile.
    const slowMerge = {
      isEqual: (x: { title: string }, y: { title: string }) => x.title === y.title,
      resolve: async (input: { realMasterState: { title: string }; newDocumentState: { title: string } }) => {
        seen.push(input.realMasterState.title);
        await released;
        return {
          ...input.realMasterState,
          title: `${input.realMasterState.title} + ${input.newDocumentState.title}`,
          _deleted: false,
        };
      },
    };
    const {
      devices: [a, b],
    } = await devices(2, { conflict: slowMerge });
    await b!.db.todos.insert({ id: 'slow', title: 'base' });
    await b!.replication.awaitInSync();
    const sync = b!.replication.collection('todos')!;
    const base = sync.meta('slow')!;
    await (await b!.db.todos.findOne('slow').exec())!.incrementalPatch({ title: 'local edit' });
    await b!.replication.awaitInSync();
    const remote = {
      id: 'slow',
      st: a!.replication.clock.now(),
      vv: { ...base.vv, deva: 1 },
      del: false,
      doc: { id: 'slow', title: 'from a' },
    };
    const applying = sync.apply([remote], { device: 'deva', store: 'deva~store' });
    while (seen.length === 0) await new Promise((resolve) => setImmediate(resolve));
    await (await b!.db.todos.findOne('slow').exec())!.incrementalPatch({ title: 'written during resolve' });
    release();
    await applying;
    // The storage refused the resolution written over the app's write (409); the engine recorded the
    // app's write and asked the handler again with it. (The master is the later write of the two.)
    expect(seen).toEqual(['from a', 'written during resolve']);
    expect((await b!.db.todos.findOne('slow').exec())!.title).toBe('written during resolve + from a');
  });

  for (const layout of ['stamp in the document', 'intent row of an earlier Ferry'] as const) {
    it(`a crash between writing a received document and saving its metadata does not turn it into a local write (${layout})`, async () => {
      const {
        devices: [a, b],
      } = await devices(2);
      await a!.db.todos.insert({ id: 'cw', title: 'from a' });
      await converge([a!, b!]);
      const received = b!.replication.collection('todos')!.meta('cw')!;
      await b!.stop();
      // What a crash between the document write and the metadata write leaves on disk: the
      // document (with Ferry's stamp in its `_meta`, or, from an earlier Ferry, without it but with
      // the intent saved before writing it) and no metadata for it.
      const disk = await openDb(b!.disk);
      const [stored] = await disk.todos.storageInstance.findDocumentsById(['cw'], false);
      expect(stored!._meta.ferry).toMatchObject({ r: received.rev, st: received.st, vv: received.vv });
      const store = await MetaStore.open(disk as unknown as RxDatabase);
      if (layout === 'intent row of an earlier Ferry') {
        await store.set('intent/todos', [
          ['cw', received.rev, { id: 'cw', st: received.st, vv: received.vv, del: false }],
        ]);
        const { ferry: _, ...meta } = stored!._meta;
        // Same `_rev`: the document as the earlier Ferry wrote it (below RxDB's wrapper, which sets a new one).
        const raw = (
          disk.todos.storageInstance as unknown as {
            originalStorageInstance: RxStorageInstance<unknown, unknown, unknown>;
          }
        ).originalStorageInstance;
        await raw.bulkWrite([{ previous: stored!, document: { ...stored!, _meta: meta } }], 'test');
      }
      const rows = (disk.collections as unknown as Record<string, RxCollection>)[META_COLLECTION]!;
      let dropped = 0;
      for (const row of await rows.find().exec()) {
        const { value, n } = row.get('v') as { value: unknown; n?: number };
        if (n === undefined || !Array.isArray(value)) continue;
        const kept = value.filter((meta: { id: string }) => meta.id !== 'cw');
        dropped += value.length - kept.length;
        await row.incrementalPatch({ v: { value: kept, n } });
      }
      expect(dropped).toBeGreaterThan(0);
      await disk.close();
      await b!.start();
      const adopted = b!.replication.collection('todos')!.meta('cw')!;
      expect(adopted).toMatchObject({ st: received.st, vv: received.vv, local: false });
      // a's later edit still wins (a phantom local write with a fresh stamp would have beaten it).
      await a!.db.todos.findOne('cw').update({ $set: { title: 'edited at a' } });
      await converge([a!, b!]);
      expect(await b!.docs()).toEqual([{ id: 'cw', title: 'edited at a' }]);
      expect(await b!.replication.conflicts()).toEqual([]);
    });
  }

  const keepTitle = {
    isEqual: () => true,
    resolve: async (input: { realMasterState: unknown }) => input.realMasterState,
  };
  it.each([
    {
      differ: 'their built-in rules',
      a: { conflict: 'lww' },
      b: { conflict: { merge: 'fields' } },
      aSays: "'lww'",
      bSays: "'fields'",
      agree: { conflict: 'lww' },
    },
    {
      differ: 'the versions of their app conflict handlers',
      a: { conflict: keepTitle, conflictVersion: 'v1' },
      b: { conflict: keepTitle, conflictVersion: 'v2' },
      aSays: `'handler' version "v1"`,
      bSays: `'handler' version "v2"`,
      agree: { conflictVersion: 'v1' },
    },
  ] as const)(
    'bad input: devices whose conflict policies differ ($differ) sync nothing and say why, then sync once they agree',
    async (policies) => {
      const hub = new MemoryHub();
      const relayServer = new MemoryRelayServer();
      const a = new Device('pola', hub, { relayServer, ...policies.a, knownDevices: ['polb'] });
      const b = new Device('polb', hub, { relayServer, ...policies.b });
      started.push(a, b);
      await b.start();
      const reported = firstValueFrom(b.replication.error$);
      // (a answers b's first request while it starts: 'paused', then b asks again.)
      const refused = new Promise((resolve) =>
        b.network.on('message', (_from, message) => {
          if (message.op === 'DB_DIFF_NACK' && (message.data as DiffNack).reason !== 'paused')
            resolve(message.data);
        }),
      );
      await a.start();
      await a.db.todos.insert({ id: 't1', title: 'from a' });
      // b refuses a's request, and a refuses b's: each says so on its own error$.
      await expect(reported).resolves.toMatchObject({
        code: 'REJECTED',
        message: expect.stringContaining(
          `pola settles conflicts in todos by ${policies.aSays}, polb by ${policies.bSays}`,
        ),
      });
      await expect(refused).resolves.toMatchObject({
        reason: 'policy',
        message: expect.stringContaining(
          `polb settles conflicts in todos by ${policies.bSays}, pola by ${policies.aSays}`,
        ),
      });
      expect(await b.docs()).toEqual([]);
      // Connected, the two have nothing to wait for from each other (an app mid-rollout of a new
      // rule must not hang on it): a's write went to b's mailbox, for when b runs a's rule.
      await Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
      expect(relayServer.waiting('polb')).toBeGreaterThan(0);
      expect(a.network.connectedPeers()).toContain('polb');

      // Through the mailbox neither: a's diffs wait there while b runs the other policy.
      await b.stop();
      await a.db.todos.insert({ id: 't2', title: 'from a, b away' });
      await a.replication.awaitInSync();
      await a.stop();
      await b.start();
      const waiting = relayServer.waiting('polb');
      expect(waiting).toBeGreaterThan(0);
      await b.replication.pullRelay();
      expect(await b.docs()).toEqual([]);
      expect(relayServer.waiting('polb')).toBe(waiting);

      // b's app now runs a's policy: the mailbox is applied, and the two sync again.
      await b.stop();
      Object.assign(b.extra, policies.agree);
      await b.start();
      await b.replication.pullRelay();
      expect((await b.docs()).map((doc) => doc.id)).toEqual(['t1', 't2']);
      expect(relayServer.waiting('polb')).toBe(0);
      await a.start();
      await b.db.todos.insert({ id: 't3', title: 'from b' });
      await converge([a, b]);
      expect((await a.docs()).map((doc) => doc.id)).toEqual(['t1', 't2', 't3']);
    },
  );

  it("versions the local schema refused arrive once the app's schema changes (a migrated collection asks again from where they were)", async () => {
    addRxPlugin(RxDBMigrationSchemaPlugin);
    const hub = new MemoryHub();
    const now = sharedClock();
    // A's titles may be long; B's first schema allows 20 characters, its next one 300.
    const schema = (version: number, maxLength: number) => ({
      ...todoSchema,
      version,
      properties: { ...todoSchema.properties, title: { type: 'string', maxLength } },
    });
    const open = async (disk: ReturnType<typeof newDisk>, version: number, maxLength: number) => {
      const db = await createRxDatabase({ name: disk.name, storage: disk.storage, multiInstance: false });
      const { todos } = await db.addCollections({
        todos: {
          schema: schema(version, maxLength),
          migrationStrategies: version > 0 ? { 1: (doc: unknown) => doc } : {},
        },
      });
      return { db, todos };
    };
    const a = await open(newDisk(), 1, 300);
    const diskB = newDisk();
    let b = await open(diskB, 0, 20);
    const networkA = hub.join('scha');
    const replicationA = await replicateFerry({ collections: { todos: a.todos }, network: networkA, now });
    const startB = async () => {
      const network = hub.join('schb');
      const replication = await replicateFerry({ collections: { todos: b.todos }, network, now });
      const errors: string[] = [];
      replication.error$.subscribe((error) => errors.push(error.code));
      return { network, replication, errors };
    };
    const stopB = async (running: Awaited<ReturnType<typeof startB>>) => {
      await running.replication.cancel();
      await running.network.close();
      await b.db.close();
    };
    await a.todos.bulkInsert([
      { id: 'short', title: 'fits' },
      { id: 'long', title: 'a title longer than twenty characters' },
    ]);
    let runB = await startB();
    await vi.waitFor(() => expect(runB.errors).toContain('SCHEMA_MISMATCH'));
    await Promise.all([replicationA.awaitInSync(), runB.replication.awaitInSync()]);
    expect((await b.todos.find().exec()).map((doc) => doc.primary)).toEqual(['short']);

    // The same schema would refuse them again: a restart does not ask for them.
    await stopB(runB);
    b = await open(diskB, 0, 20);
    runB = await startB();
    await Promise.all([replicationA.awaitInSync(), runB.replication.awaitInSync()]);
    expect([runB.replication.received$.value, runB.errors]).toEqual([0, []]);

    // The app's update migrates B's collection to a schema that takes long titles.
    await stopB(runB);
    b = await open(diskB, 1, 300);
    runB = await startB();
    await vi.waitFor(async () =>
      expect((await b.todos.find().exec()).map((doc) => doc.primary)).toEqual(['long', 'short']),
    );
    await Promise.all([replicationA.awaitInSync(), runB.replication.awaitInSync()]);
    expect(runB.errors).toEqual([]);
    // Asked for once: the next start begins at the checkpoint again.
    await stopB(runB);
    b = await open(diskB, 1, 300);
    runB = await startB();
    await Promise.all([replicationA.awaitInSync(), runB.replication.awaitInSync()]);
    expect(runB.replication.received$.value).toBe(0);
    await stopB(runB);
    await replicationA.cancel();
    await networkA.close();
    await a.db.close();
  });

  it('awaitInSync() does not wait for a collection a peer does not replicate, and syncs it once the peer starts', async () => {
    const hub = new MemoryHub();
    const now = sharedClock();
    const [dbA, dbB] = await Promise.all([openDb(newDisk(), true), openDb(newDisk(), true)]);
    const [networkA, networkB] = [hub.join('botha'), hub.join('todob')];
    const a = await replicateFerry({
      collections: { todos: dbA.todos, notes: dbA.notes },
      network: networkA,
      now,
    });
    const bTodos = await replicateFerry({ collections: { todos: dbB.todos }, network: networkB, now });
    await dbA.todos.insert({ id: 't1', title: 'from a' });
    await dbA.notes.insert({ key: 'n1', body: 'from a' });
    await a.awaitInitialReplication();
    // b answers `unknown-collection` for notes: nothing to hear from it or tell it there.
    await within(2_000, Promise.all([a.awaitInSync(), bTodos.awaitInSync()]), () => 'still waiting');
    expect((await dbB.todos.find().exec()).map((doc) => doc.primary)).toEqual(['t1']);
    // b's app starts syncing notes: a waits for that collection again, and b gets the note.
    const bNotes = await replicateFerry({ collections: { notes: dbB.notes }, network: networkB, now });
    await vi.waitFor(async () =>
      expect((await dbB.notes.find().exec()).map((doc) => doc.primary)).toEqual(['n1']),
    );
    await Promise.all([a.awaitInSync(), bTodos.awaitInSync(), bNotes.awaitInSync()]);
    await Promise.all([a.cancel(), bTodos.cancel(), bNotes.cancel()]);
    await Promise.all([networkA.close(), networkB.close(), dbA.close(), dbB.close()]);
  });

  it('a peer that said it does not replicate a collection gets none of its writes in its mailbox, until it asks for it or relays it', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    const [dbA, dbB] = await Promise.all([openDb(newDisk(), true), openDb(newDisk(), true)]);
    const errorsOfA: FerryError[] = [];
    const startA = async () => {
      const network = hub.join('pera');
      const state = await replicateFerry({
        collections: { todos: dbA.todos, notes: dbA.notes },
        network,
        relay: relayServer.client('pera'),
        now,
      });
      state.error$.subscribe((error) => errorsOfA.push(error));
      const stop = async () => {
        await state.cancel();
        await network.close();
      };
      return { state, stop };
    };
    const startB = async (collections: Partial<Record<'todos' | 'notes', RxCollection>>) => {
      const network = hub.join('perb');
      const states = await Promise.all(
        Object.entries(collections).map(([name, collection]) =>
          replicateFerry({
            collections: { [name]: collection },
            network,
            relay: relayServer.client('perb'),
            now,
          }),
        ),
      );
      return {
        states,
        stop: async () => {
          await Promise.all(states.map((s) => s.cancel()));
          await network.close();
        },
      };
    };
    const primaries = async (collection: RxCollection) =>
      (await collection.find().exec()).map((doc) => doc.primary).sort();

    // B runs only todos: it answers `unknown-collection` for notes, and A says so once.
    let a = await startA();
    let b = await startB({ todos: dbB.todos });
    await Promise.all([
      a.state.awaitInitialReplication(),
      ...b.states.map((s) => s.awaitInitialReplication()),
    ]);
    await a.state.awaitInSync();
    expect(errorsOfA.map((error) => error.message)).toEqual([expect.stringContaining('unknown-collection')]);

    // B is away: A's todo goes to its mailbox, A's note does not (nothing there would take it).
    await b.stop();
    await dbA.todos.insert({ id: 't1', title: 'from a' });
    await dbA.notes.insert({ key: 'n1', body: 'from a, not for b yet' });
    await a.state.awaitInSync();
    expect(relayServer.waiting('perb')).toBe(1);

    // A restarts and meets B again: it remembers, and says nothing this time.
    await a.stop();
    a = await startA();
    b = await startB({ todos: dbB.todos });
    await Promise.all([a.state.awaitInSync(), ...b.states.map((s) => s.awaitInSync())]);
    expect(await primaries(dbB.todos)).toEqual(['t1']);
    expect(errorsOfA).toHaveLength(1);
    await a.stop();

    // B's app now syncs notes too, while A is away: B's note reaches A through the relay, and that
    // tells A that B runs notes, so A's next note goes to B's mailbox, and so does n1, written while
    // B did not run notes (the two need not meet for it).
    await b.stop();
    b = await startB({ todos: dbB.todos, notes: dbB.notes });
    await dbB.notes.insert({ key: 'n2', body: 'from b' });
    await Promise.all(b.states.map((s) => s.awaitInSync()));
    await b.stop();
    a = await startA();
    await a.state.pullRelay();
    expect(await primaries(dbA.notes)).toEqual(['n1', 'n2']);
    await dbA.notes.insert({ key: 'n3', body: 'from a, for b' });
    await a.state.awaitInSync();
    await a.stop();
    b = await startB({ todos: dbB.todos, notes: dbB.notes });
    await Promise.all(b.states.map((s) => s.pullRelay()));
    expect(await primaries(dbB.notes)).toEqual(['n1', 'n2', 'n3']);
    expect(relayServer.waiting('perb')).toBe(0);

    // When they meet again, nothing is missing and nothing is said.
    a = await startA();
    for (let i = 0; i < 2; i++) await Promise.all([a.state, ...b.states].map((s) => s.awaitInSync()));
    expect(await primaries(dbB.notes)).toEqual(['n1', 'n2', 'n3']);
    expect(errorsOfA).toHaveLength(1);
    await Promise.all([a.stop(), b.stop()]);
    await Promise.all([dbA.close(), dbB.close()]);
  });

  /**
   * A (todos and notes; its relay pushes fail while `pushesFail` is set) wrote a note while B ran
   * todos only and had told it so (`unknown-collection`); B then ran notes once and told A through
   * the relay, which A has not read yet.
   */
  async function noteOwedToB(a: string, b: string) {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    const client = relayServer.client(a);
    const control = { pushesFail: false };
    const relay = {
      ...client,
      push: (targets: string[], payload: Uint8Array) =>
        control.pushesFail
          ? Promise.reject(new Error('diff server unreachable'))
          : client.push(targets, payload),
    };
    const deviceA = new Device(a, hub, { relay, withNotes: true, now });
    const deviceB = new Device(b, hub, { relayServer, now }); // runs todos only
    started.push(deviceA, deviceB);
    await deviceA.start();
    await deviceB.start();
    await converge([deviceA, deviceB]);
    await deviceB.stop();
    await deviceA.db.notes.insert({ key: 'n1', body: 'written while b did not run notes' });
    await deviceA.replication.awaitInSync();
    expect(relayServer.waiting(b)).toBe(0);
    await deviceA.stop();
    deviceB.extra.withNotes = true;
    await deviceB.start();
    await deviceB.replication.awaitInSync();
    await deviceB.stop();
    expect(relayServer.waiting(a)).toBe(1);
    return { relayServer, a: deviceA, b: deviceB, control };
  }

  /** Saves of the metadata rows under these prefixes do not land (the process dies first, or the storage fails). */
  function loseSaves(...prefixes: string[]) {
    const lost: string[] = [];
    const set = MetaStore.prototype.set;
    const spy = vi.spyOn(MetaStore.prototype, 'set').mockImplementation(function (
      this: MetaStore,
      key,
      value,
    ) {
      if (!prefixes.some((prefix) => key.startsWith(prefix))) return set.call(this, key, value);
      lost.push(key);
      return Promise.reject(new Error('the process died before this landed'));
    });
    return { lost, restore: () => spy.mockRestore() };
  }

  it('what a device was not sent while it did not run a collection reaches its mailbox once it says through the relay that it runs it, also after a failed push and a restart', async () => {
    const { a, b, control } = await noteOwedToB('rela', 'relb');
    // a hears it, but its push of n1 fails, and the process ends: its next run makes the push.
    control.pushesFail = true;
    await a.start();
    const errors: string[] = [];
    a.replication.error$.subscribe((e) => errors.push(e.code));
    await a.replication.pullRelay();
    await vi.waitFor(() => expect(errors).toContain('INTERNAL'), { timeout: 5000, interval: 20 }); // its push failed (a plain Error)
    expect(a.replication.pendingRelay$.value).toBe(1);
    await a.stop();
    control.pushesFail = false;
    expect(await notesRelayed(a, b)).toEqual(['n1']);
  });

  it('a device told through the relay that a peer runs a collection now saves that before acknowledging the diff: unsaved, the diff stays in the mailbox for the next run', async () => {
    const { relayServer, a, b, control } = await noteOwedToB('anna', 'annb');
    // a's record that b runs notes does not land, its push of n1 fails, and the process ends.
    const saves = loseSaves('not-run/');
    control.pushesFail = true;
    try {
      await a.start();
      await a.replication.pullRelay().catch(() => undefined);
      await a.stop();
    } finally {
      saves.restore();
    }
    expect(saves.lost.length).toBeGreaterThan(0);
    expect(relayServer.waiting('anna')).toBe(1); // not acknowledged
    control.pushesFail = false;
    expect(await notesRelayed(a, b)).toEqual(['n1']);
  });

  it('a relay diff that says a peer runs a collection is acknowledged only once the record of it landed, also when a meeting made that record first', async () => {
    const { relayServer, a, b } = await noteOwedToB('meta', 'metb');
    // a cannot read its mailbox yet; b asks it for notes directly, and a's record of that hangs.
    relayServer.down = true;
    let died!: (error: Error) => void;
    const set = MetaStore.prototype.set;
    const spy = vi.spyOn(MetaStore.prototype, 'set').mockImplementation(function (
      this: MetaStore,
      key,
      value,
    ) {
      if (!key.startsWith('not-run/')) return set.call(this, key, value);
      spy.mockRestore();
      return new Promise((_, reject) => {
        died = reject;
      });
    });
    await a.start();
    await b.start();
    await vi.waitFor(() => expect(died).toBeDefined());
    relayServer.down = false;
    const pulled = a.replication.pullRelay().catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 100));
    died(new Error('the process died before this landed'));
    await pulled;
    await b.stop();
    await a.stop();
    // b said it only once. Its diff was acknowledged only after the record landed (a second try
    // made it), so the next run relays b what a writes from then on.
    await a.start();
    await a.replication.pullRelay();
    await a.db.notes.insert({ key: 'n2', body: 'written after b ran notes again' });
    await a.replication.awaitInSync();
    await a.stop();
    await b.start();
    await b.replication.pullRelay();
    expect((await b.docs('notes')).map((doc) => doc.key)).toEqual(['n1', 'n2']);
  });

  it('a relay diff from a device never met is acknowledged only once the device is saved as known: unsaved, the diff is served again, and the writes made after it are relayed to that device', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    // Two devices that never meet; b knows a from its own setup, a learns b from b's diff.
    const a = new Device('kna', hub, { relayServer, now });
    const b = new Device('knb', hub, { relayServer, now, knownDevices: ['kna'] });
    started.push(a, b);
    hub.setLinked('kna', 'knb', false);
    await b.start();
    await b.db.todos.insert({ id: 'from-b', title: 'b writes' });
    await b.replication.awaitInSync();
    await b.stop();
    const lost = loseSaves('devices');
    try {
      await a.start();
      await a.replication.pullRelay().catch(() => undefined);
    } finally {
      lost.restore();
    }
    expect(lost.lost).toContain('devices');
    await a.replication.pullRelay();
    await a.stop();
    // The next run of a knows b: its writes go to b's mailbox.
    await a.start();
    expect(await a.docs()).toEqual([{ id: 'from-b', title: 'b writes' }]);
    await a.db.todos.insert({ id: 'from-a', title: 'a writes' });
    await a.replication.awaitInSync();
    await a.stop();
    await b.start();
    await b.replication.pullRelay();
    expect((await b.docs()).map((doc) => doc.id)).toEqual(['from-a', 'from-b']);
  });

  it('failed saves of what a meeting taught (a new device; that it does not run notes) hold up no relay diff of a device already known', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    const a = new Device('hla', hub, { relayServer, now, withNotes: true, knownDevices: ['hlc'] });
    const c = new Device('hlc', hub, { relayServer, now, withNotes: true, knownDevices: ['hla'] });
    started.push(a, c);
    hub.setLinked('hla', 'hlc', false);
    await c.start();
    await c.db.todos.insert({ id: 'from-c', title: 'c writes' });
    await c.db.notes.insert({ key: 'note-c', body: 'c notes' });
    await c.replication.awaitInSync();
    await c.stop();
    relayServer.down = true; // a does not read its mailbox yet
    await a.start();
    const lost = loseSaves('devices', 'not-run/');
    try {
      // A device a meets for the first time, running todos only: both records fail to save.
      const live = new Device('hl-live', hub, { now });
      started.push(live);
      await live.start();
      await vi.waitFor(() => expect(new Set(lost.lost)).toEqual(new Set(['devices', 'not-run/notes'])));
      await live.stop();
    } finally {
      lost.restore();
    }
    relayServer.down = false;
    await a.replication.pullRelay();
    expect(await a.docs()).toEqual([{ id: 'from-c', title: 'c writes' }]);
    expect(await a.docs('notes')).toEqual([{ key: 'note-c', body: 'c notes' }]);
  });

  it('a device answers `unknown-collection` only once it saved that it did: unsaved (a crash, a storage failure), the asking device goes on relaying the collection to it', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    const a = new Device('unsa', hub, { relayServer, withNotes: true, now });
    const b = new Device('unsb', hub, { relayServer, now }); // runs todos only
    started.push(a, b);
    const saves = loseSaves('told-not-run/');
    try {
      await a.start();
      await b.start();
      await vi.waitFor(() => expect(saves.lost).toHaveLength(1)); // b took a's request for notes
      await b.stop();
    } finally {
      saves.restore();
    }
    await a.db.notes.insert({ key: 'n1', body: 'written while b did not run notes' });
    await a.replication.awaitInSync();
    await a.stop();
    // b's app syncs notes now. With no record of its answer, it tells a nothing: a must not have
    // taken the answer for good (it did, and relayed b no note again).
    b.extra.withNotes = true;
    expect(await notesRelayed(a, b)).toEqual(['n1']);
  });

  it('a device saved as not running a collection by an earlier Ferry (no relay mark with it) is owed every own write of it', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const now = sharedClock();
    const options = { relayServer, withNotes: true, now };
    const a = new Device('olda', hub, { ...options, knownDevices: ['oldb'] });
    const b = new Device('oldb', hub, { ...options, knownDevices: ['olda'] });
    started.push(a, b);
    const save = async (device: Device, key: string, value: unknown) => {
      const db = await openDb(device.disk, true);
      await (await MetaStore.open(db as unknown as RxDatabase)).set(key, value);
      await db.close();
    };
    await save(a, 'not-run/notes', ['oldb']); // the earlier format: a list of devices
    await a.start();
    await a.db.notes.insert({ key: 'n1', body: 'not for b, as far as a knows' });
    await a.replication.awaitInSync();
    await a.stop();
    expect(relayServer.waiting('oldb')).toBe(0);
    await save(b, 'told-not-run/notes', ['olda']);
    await b.start(); // it runs notes now, and tells a so through the relay
    await b.replication.awaitInSync();
    await b.stop();
    expect(await notesRelayed(a, b)).toEqual(['n1']);
  });

  it('a connected device that runs no replication (an AI-only device): awaitInSync() stops waiting for it, awaitInitialReplication() does not count it; they sync once it starts one', async () => {
    const hub = new MemoryHub();
    const b = new Device('silb', hub);
    started.push(await b.start());
    const silent = hub.join('sila'); // on the network, no replicateFerry (yet)
    await b.db.todos.insert({ id: 's1', title: 'written next to a silent device' });
    // Before, its request to the silent device held it up for good.
    await within(
      10_000,
      b.replication.awaitInSync(),
      () => 'still waiting for a device that runs no replication',
    );
    let initial = false;
    const initialDone = b.replication.awaitInitialReplication().then(() => {
      initial = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(initial).toBe(false); // no one to sync with yet
    const db = await openDb(newDisk());
    const replication = await replicateFerry({
      collections: { todos: db.todos },
      network: silent,
      retryDelayMs: 20,
    });
    try {
      await within(10_000, initialDone, () => 'the device that started a replication was not waited for');
      await replication.awaitInSync();
      expect((await db.todos.find().exec()).map((doc) => doc.primary)).toEqual(['s1']);
    } finally {
      await replication.cancel();
      await silent.close();
      await db.close();
    }
  });

  it('a request that comes while a replication starts is answered (paused); one started with autoStart: false then asks back at start()', async () => {
    const hub = new MemoryHub();
    const b = new Device('gateb', hub);
    started.push(await b.start());
    const network = hub.join('gatea');
    const db = await openDb(newDisk());
    // The replication's start is held while it opens its metadata collection.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const addCollections = db.addCollections.bind(db);
    db.addCollections = (async (creators: Record<string, unknown>) => {
      if (META_COLLECTION in creators) await gate;
      return addCollections(creators as never);
    }) as typeof db.addCollections;
    const starting = replicateFerry({ collections: { todos: db.todos }, network, autoStart: false });
    await new Promise((resolve) => setTimeout(resolve, 10));
    const answers: DiffNack[] = [];
    b.network.on('message', (from, message) => {
      if (from === 'gatea' && message.op === 'DB_DIFF_NACK') answers.push(message.data as DiffNack);
    });
    b.replication.pause();
    b.replication.resume(); // b asks again, while a starts
    await within(10_000, b.replication.awaitInSync(), () => 'b still waits for the starting device');
    expect(answers).toEqual([
      expect.objectContaining({ reason: 'paused', message: 'replication is starting' }),
    ]);
    open();
    const replication = await starting;
    try {
      await db.todos.insert({ id: 'g1', title: 'written before start()' });
      await replication.start();
      await within(
        10_000,
        Promise.all([replication.awaitInSync(), b.replication.awaitInSync()]),
        () => 'no sync',
      );
      await converge([b]);
      expect((await b.docs()).map((doc) => doc.id)).toEqual(['g1']);
    } finally {
      await replication.cancel();
      await network.close();
      await db.close();
    }
  });

  it('awaitInSync() does not wait for a connected peer that paused its replication; its writes wait in its mailbox', async () => {
    const { relayServer, a, b } = await relayPair();
    b.replication.pause();
    await a.db.todos.insert({ id: 'p1', title: 'while b was paused' });
    await within(2_000, a.replication.awaitInSync(), () => 'still waiting for the paused peer');
    expect(relayServer.waiting('devb')).toBe(1);
    b.replication.resume();
    await converge([a, b]);
    expect((await b.docs()).map((doc) => doc.id)).toEqual(['p1']);
    await b.replication.pullRelay(); // the read resume() started may still be acknowledging
    expect(relayServer.waiting('devb')).toBe(0);
  });

  it('pause stops the exchange; resume catches up', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await converge([a!, b!]);
    expect(b!.replication.isPaused()).toBe(false);
    b!.replication.pause();
    expect(b!.replication.active$.value).toBe(false);
    expect(b!.replication.isPaused()).toBe(true);
    expect(b!.replication.isStoppedOrPaused()).toBe(true);
    await a!.db.todos.insert({ id: 'during-pause', title: 'x' });
    await a!.replication.awaitInSync().catch(() => undefined);
    expect(await b!.docs()).toEqual([]);
    b!.replication.resume();
    await converge([a!, b!]);
    expect(await b!.docs()).toEqual([{ id: 'during-pause', title: 'x' }]);
    expect([b!.replication.isStopped(), b!.replication.isStoppedOrPaused()]).toEqual([false, false]);
    const canceled = firstValueFrom(b!.replication.canceled$.pipe(toArray()));
    await b!.stop();
    expect([b!.replication.isStopped(), b!.replication.isPaused()]).toEqual([true, false]);
    expect(await canceled).toEqual([false, true]);
  });

  it("RxDB's start(): runs a replication created with autoStart: false, resumes a paused one, and changes nothing on a running or cancelled one", async () => {
    const hub = new MemoryHub();
    const a = new Device('sta', hub, { autoStart: false });
    const b = new Device('stb', hub);
    started.push(await a.start(), await b.start());
    await a.db.todos.insert({ id: 't1', title: 'written before start()' });
    await b.replication.awaitInSync();
    expect([a.replication.active$.value, a.replication.isPaused()]).toEqual([false, true]);
    expect(await b.docs()).toEqual([]);
    await a.replication.start();
    await converge([a, b]);
    expect(await b.docs()).toEqual([{ id: 't1', title: 'written before start()' }]);
    // Again on a running replication: nothing starts twice (each write goes out once).
    await a.replication.start();
    const pushed: string[] = [];
    b.network.on('message', (_from, message) => {
      if (message.op === 'DB_DIFF_PUSH') pushed.push(...(message.data as DiffPush).changes.map((c) => c.id));
    });
    await a.db.todos.insert({ id: 't2', title: 'after a second start()' });
    await converge([a, b]);
    expect(pushed).toEqual(['t2']);
    a.replication.pause();
    await b.db.todos.insert({ id: 't3', title: 'while a was paused' });
    await a.replication.start();
    await converge([a, b]);
    expect((await a.docs()).map((d) => d.id)).toEqual(['t1', 't2', 't3']);
    await a.stop();
    await a.replication.start();
    expect([a.replication.isStopped(), a.replication.active$.value]).toEqual([true, false]);
  });

  it("remove(): cancels, and the next replication of the collection starts its sync over (RxDB's remove())", async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    await a!.db.todos.bulkInsert([
      { id: 'r1', title: 'one' },
      { id: 'r2', title: 'two' },
    ]);
    await converge([a!, b!]);
    await a!.replication.remove();
    expect(a!.replication.isStopped()).toBe(true);
    await a!.stop();
    await b!.db.todos.insert({ id: 'r3', title: 'written while a was stopped' });
    const asked: string[] = [];
    b!.network.on('message', (from, message) => {
      if (from === 'deva' && message.op === 'DB_SYNC_INIT')
        asked.push((message.data as { checkpoint: string }).checkpoint);
    });
    await a!.start();
    await converge([a!, b!]);
    expect(asked[0]).toBe(''); // from scratch, not from its checkpoint in b's log
    expect((await a!.docs()).map((d) => d.id)).toEqual(['r1', 'r2', 'r3']);
    // Its documents, found again, are the ones the peer holds: no conflict.
    expect([await a!.replication.conflicts(), await b!.replication.conflicts()]).toEqual([[], []]);
    await a!.db.todos.insert({ id: 'r4', title: 'after' });
    await converge([a!, b!]);
    expect((await b!.docs()).map((d) => d.id)).toEqual(['r1', 'r2', 'r3', 'r4']);
  });

  for (const closing of ['the database', 'a replicated collection'] as const) {
    it(`closing ${closing} cancels the replication, as RxDB's replications do, and frees its collections`, async () => {
      const hub = new MemoryHub();
      const network = hub.join('closer');
      const disk = newDisk();
      let db = await openDb(disk);
      const replication = await replicateFerry({ collections: { todos: db.todos }, network });
      await db.todos.insert({ id: 't1', title: 'written before closing' });
      await (closing === 'the database' ? db.close() : db.todos.close());
      expect([replication.isStopped(), replication.canceled$.value]).toEqual([true, true]);
      await db.close();
      // The name on the network is free again, and the write was recorded before closing.
      db = await openDb(disk);
      const again = await replicateFerry({ collections: { todos: db.todos }, network });
      expect(again.collection('todos')!.meta('t1')).toMatchObject({ local: true });
      await again.cancel();
      // A cancelled replication leaves no hook behind on the database.
      expect(db.onClose).toEqual([]);
      await db.close();
      await network.close();
    });
  }

  it("reSync() reads the mailbox now, as RxDB's reSync() pulls", async () => {
    const relayServer = new MemoryRelayServer();
    const {
      devices: [b],
    } = await devices(1, { relayServer });
    // c is on a network b is not on (no session between them), and knows b: it writes to b's mailbox.
    const c = new Device('devc', new MemoryHub(), { relayServer, knownDevices: [b!.id] });
    started.push(c);
    await c.start();
    await c.db.todos.insert({ id: 'r1', title: 'through the mailbox' });
    await c.replication.awaitInSync();
    expect(relayServer.waiting(b!.id)).toBe(1);
    expect(await b!.docs()).toEqual([]);
    b!.replication.reSync();
    await vi.waitFor(async () =>
      expect(await b!.docs()).toEqual([{ id: 'r1', title: 'through the mailbox' }]),
    );
    await vi.waitFor(() => expect(relayServer.waiting(b!.id)).toBe(0)); // acknowledged after the apply
  });

  it("RxDB local documents of a replicated collection stay on their device and are not taken for the app's writes", async () => {
    addRxPlugin(RxDBLocalDocumentsPlugin);
    const hub = new MemoryHub();
    const open = async (id: string) => {
      const disk = newDisk();
      const db = await createRxDatabase({ name: disk.name, storage: disk.storage, multiInstance: false });
      const { todos } = await db.addCollections({ todos: { schema: todoSchema, localDocuments: true } });
      const replication = await replicateFerry({ collections: { todos }, network: hub.join(id) });
      return { db, todos, replication };
    };
    const [a, b] = await Promise.all([open('loca'), open('locb')]);
    const errors: unknown[] = [];
    a.replication.error$.subscribe((error) => errors.push(error));
    await a.todos.insertLocal('settings', { theme: 'dark' });
    await a.todos.insert({ id: 't1', title: 'synced' });
    await Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
    expect((await b.todos.find().exec()).map((doc) => doc.primary)).toEqual(['t1']);
    expect(await b.todos.getLocal('settings')).toBeNull();
    expect(a.replication.collection('todos')!.meta('settings')).toBeUndefined();
    expect(errors).toEqual([]);
    await Promise.all([a.replication.cancel(), b.replication.cancel()]);
    await Promise.all([a.db.close(), b.db.close()]);
  });

  it("RxDB's storage wrappers (key compression, field encryption): documents sync, and received ones are stored encrypted", async () => {
    // Ferry writes received documents below RxDB's collection wrapper: through the storage's own
    // wrappers all the same, so what lands on disk is compressed and encrypted as the app's writes.
    const stored: string[] = [];
    const base = testStorage();
    const recording = {
      ...base,
      async createStorageInstance(params: Parameters<typeof base.createStorageInstance>[0]) {
        const instance = await base.createStorageInstance(params);
        const write = instance.bulkWrite.bind(instance);
        instance.bulkWrite = (rows, context) => {
          if (params.collectionName === 'secrets')
            for (const row of rows) stored.push(JSON.stringify(row.document));
          return write(rows, context);
        };
        return instance;
      },
    } as typeof base;
    const schema = {
      version: 0,
      primaryKey: 'id',
      type: 'object',
      keyCompression: true,
      properties: {
        id: { type: 'string', maxLength: 100 },
        title: { type: 'string' },
        pin: { type: 'string' },
      },
      required: ['id', 'title'],
      encrypted: ['pin'],
    } as const;
    const hub = new MemoryHub();
    const open = async (id: string) => {
      const db = await createRxDatabase({
        name: newDisk().name,
        storage: wrappedValidateAjvStorage({
          storage: wrappedKeyCompressionStorage({
            storage: wrappedKeyEncryptionCryptoJsStorage({ storage: id === 'wrapb' ? recording : base }),
          }),
        }),
        password: 'correct horse battery staple',
        multiInstance: false,
      });
      const { secrets } = await db.addCollections({ secrets: { schema } });
      const replication = await replicateFerry({ collections: { secrets }, network: hub.join(id) });
      return { db, secrets, replication };
    };
    const [a, b] = await Promise.all([open('wrapa'), open('wrapb')]);
    const errors: unknown[] = [];
    for (const device of [a, b]) device.replication.error$.subscribe((error) => errors.push(error));
    await a.secrets.insert({ id: 's1', title: 'bank', pin: 'pin-4711' });
    await b.secrets.insert({ id: 's2', title: 'door', pin: 'pin-0815' });
    await Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
    await (await b.secrets.findOne('s1').exec())!.incrementalPatch({ title: 'bank, renamed' });
    await Promise.all([b.replication.awaitInSync(), a.replication.awaitInSync()]);
    const contents = async (db: typeof a) =>
      (await db.secrets.find({ sort: [{ id: 'asc' }] }).exec()).map((doc) => doc.toJSON());
    expect(await contents(b)).toEqual([
      { id: 's1', title: 'bank, renamed', pin: 'pin-4711' },
      { id: 's2', title: 'door', pin: 'pin-0815' },
    ]);
    expect(await contents(a)).toEqual(await contents(b));
    expect(errors).toEqual([]);
    // B stored A's document (Ferry's write) as it stored its own (the app's): no plain PIN, no plain keys.
    // B's rows of s1: Ferry's write of A's version, then the app's rename.
    expect(stored.filter((row) => row.includes('"s1"')).length).toBeGreaterThanOrEqual(2);
    for (const row of stored) {
      expect(row).not.toContain('pin-');
      expect(row).not.toContain('"title"');
    }
    await Promise.all([a.replication.cancel(), b.replication.cancel()]);
    await Promise.all([a.db.close(), b.db.close()]);
  });

  it('bad input: a peer whose pushes never follow the checkpoint is asked again after a growing delay, not in a loop', async () => {
    const hub = new MemoryHub();
    const peer = hub.join('gappy');
    let requests = 0;
    peer.on('message', (from, message) => {
      if (message.op !== 'DB_SYNC_INIT') return;
      requests++;
      const { stream } = message.data as { stream: string };
      // Every push starts at position 5 of its log, past the empty checkpoint it was asked from.
      const push = {
        collection: 'todos',
        stream,
        changes: [],
        baseVersion: 'gappy@5',
        newVersion: 'gappy@6',
        more: false,
      };
      void peer.send(from, { op: 'DB_DIFF_PUSH', data: push, timestamp: Date.now(), id: `gap${requests}` });
    });
    const device = new Device('gap-victim', hub, { retryDelayMs: 20 });
    await device.start();
    try {
      await new Promise((resolve) => setTimeout(resolve, 400));
      // Asked at once after the first gap, then after 20, 40, 80, 160 ms: it goes on asking, slowly.
      expect(requests).toBeGreaterThanOrEqual(3);
      expect(requests).toBeLessThanOrEqual(8);
    } finally {
      await device.stop();
    }
  });

  it('a push that fails to apply drops the rest of its stream and is asked for once more, after the retry delay', async () => {
    const hub = new MemoryHub();
    const peer = hub.join('flaky');
    const requests: string[] = [];
    const nacks: string[] = [];
    const change = (id: string, seq: number) => ({
      id,
      st: `00000000${seq}.00000.flaky`,
      vv: { flaky: seq },
      del: false,
      doc: { id, title: id },
    });
    peer.on('message', (from, message) => {
      if (message.op === 'DB_DIFF_NACK') nacks.push((message.data as { reason: string }).reason);
      if (message.op !== 'DB_SYNC_INIT') return;
      const { stream } = message.data as { stream: string };
      requests.push(stream);
      // Two pushes back to back, as a sender with a window of several sends them.
      for (const seq of [1, 2]) {
        const push = {
          collection: 'todos',
          stream,
          changes: [change(`t${seq}`, seq)],
          baseVersion: `flaky@${seq - 1}`,
          newVersion: `flaky@${seq}`,
          more: seq === 1,
        };
        void peer.send(from, {
          op: 'DB_DIFF_PUSH',
          data: push,
          timestamp: Date.now(),
          id: `${stream}${seq}`,
        });
      }
    });
    // The receiving device's first apply fails (a storage error, say).
    const apply = vi
      .spyOn(CollectionSync.prototype, 'apply')
      .mockRejectedValueOnce(new Error('storage is busy'));
    const device = started[started.push(new Device('victim', hub, { retryDelayMs: 50 })) - 1]!;
    await device.start();
    const errors: string[] = [];
    device.replication.error$.subscribe((error) => errors.push(error.message));
    try {
      await vi.waitFor(async () => expect(await device.docs()).toHaveLength(2));
      await new Promise((resolve) => setTimeout(resolve, 150));
      // The second push of the failed stream is dropped, not answered with a gap and a new request
      // that the delayed one would then replace.
      expect(nacks).toEqual(['failed']);
      expect(requests).toHaveLength(2);
      expect(await device.docs()).toEqual([
        { id: 't1', title: 't1' },
        { id: 't2', title: 't2' },
      ]);
      expect(errors).toEqual(['storage is busy']);
    } finally {
      apply.mockRestore();
    }
  });

  it.each([
    ['lww', 'lww' as const],
    ['the per-field merge', { merge: 'fields' } as const],
  ])(
    'bad input: two versions under one vector (a writer that used its counters twice) are a conflict that every device settles alike: the later stamp wins whole (%s)',
    async (_name, conflict) => {
      const {
        hub,
        devices: [a, b, c],
      } = await devices(3, { conflict });
      const link = (linked: boolean) => {
        hub.setLinked('devc', 'deva', linked);
        hub.setLinked('devc', 'devb', linked);
      };
      link(false);
      await a!.db.todos.insert({ id: 'x', title: 'original' });
      await converge([a!, b!]);
      const { vv } = a!.replication.collection('todos')!.meta('x')!;
      // Device z wrote x again under the vector of its earlier write (as a database restored from a
      // backup would) and only c got that copy. It is stamped later; under the per-field merge its
      // title is stamped before a's, so merging the two would make a third version under the vector.
      const st = c!.replication.clock.now();
      const doc = { id: 'x', title: 'second copy', n: 7 };
      const fs = {
        ...stampFields(undefined, doc, false, st, 'id', true),
        title: ['0000000001.00000.devz', hashValue(doc.title)] as [string, string],
      };
      const second = { id: 'x', st, vv, del: false, doc, ...(conflict === 'lww' ? {} : { fs }) };
      await c!.replication.collection('todos')!.apply([second], { device: 'devz', store: 'devz~store' });
      link(true);
      await within(5_000, converge([a!, b!, c!]), () => 'the two copies under one vector were kept apart');
      for (const device of [a!, b!, c!]) expect(await device.docs()).toEqual([doc]);
      for (const device of [a!, b!]) {
        expect((await device.replication.conflicts()).map((found) => found.resolved.st)).toEqual([st]);
      }
    },
  );

  it('bad input: malformed messages and documents the schema refuses are reported, never applied, never crash', async () => {
    const {
      devices: [a, b],
    } = await devices(2);
    const errors: string[] = [];
    b!.replication.error$.subscribe((e) => errors.push(e.code));
    const nacks: unknown[] = [];
    a!.network.on('message', (_f, m) => m.op === 'DB_DIFF_NACK' && nacks.push(m.data));
    await converge([a!, b!]);
    const send = (op: string, data: unknown) =>
      a!.network.send('devb', { op, data, timestamp: Date.now(), id: `m${Math.random()}` });
    await send('DB_DIFF_PUSH', { collection: 'todos', stream: 's', changes: 'nope' });
    await send('DB_SYNC_INIT', null);
    await send('DB_DIFF_ACK', { collection: 'todos' });
    await send('DB_SYNC_INIT', { collection: 'missing', stream: 's1', checkpoint: '', dbVersion: '' });
    // A well-formed push on a stream b never opened is ignored.
    await send('DB_DIFF_PUSH', {
      collection: 'todos',
      stream: 'unknown',
      baseVersion: 'e@0',
      newVersion: 'e@1',
      more: false,
      changes: [
        {
          id: 'evil',
          st: '0000000000.00000.deva',
          vv: { deva: 1 },
          del: false,
          doc: { id: 'evil', title: 'x' },
        },
      ],
    });
    // A document that breaks b's schema, inside an otherwise valid live push from a.
    await a!.db.todos.insert({ id: 'ok', title: 'fine' });
    await converge([a!, b!]);
    const collection = b!.replication.collection('todos')!;
    const outcome = await collection.apply(
      [
        {
          id: 'bad',
          st: a!.replication.clock.now(),
          vv: { deva: 99 },
          del: false,
          doc: { id: 'bad', title: 42 },
        },
      ],
      { device: 'deva', store: 'deva~store' },
    );
    expect(outcome.rejected.map((r) => r.id)).toEqual(['bad']);
    // JSON can carry a `__proto__` key: it stays a plain field of the document (which RxDB's schema
    // then refuses as an additional property), never the document's prototype.
    const proto = await collection.apply(
      [
        {
          id: 'proto',
          st: a!.replication.clock.now(),
          vv: { deva: 100 },
          del: false,
          doc: JSON.parse('{"id":"proto","title":"p","__proto__":{"done":true}}'),
        },
      ],
      { device: 'deva', store: 'deva~store' },
    );
    expect(proto.rejected.map((r) => r.id)).toEqual(['proto']);
    expect(proto.rejected[0]!.error).toMatchObject({
      validationErrors: [{ params: { additionalProperty: '__proto__' } }],
    });
    expect(await b!.docs()).toEqual([{ id: 'ok', title: 'fine' }]);
    expect(errors.filter((c) => c === 'SCHEMA_MISMATCH').length).toBeGreaterThanOrEqual(3);
    expect(nacks).toContainEqual(expect.objectContaining({ reason: 'invalid' }));
    expect(await firstValueFrom(a!.replication.peers$.pipe(take(1), toArray()))).toEqual([['devb']]);
  });
});
