import { MemoryHub, type MemoryNetwork } from '@ferry/core';
import { addRxPlugin, createRxDatabase, type RxCollection, type RxDatabase } from 'rxdb';
import { RxDBAttachmentsPlugin } from 'rxdb/plugins/attachments';
import { afterEach, describe, expect, it } from 'vitest';
import { type ConflictPolicy, type FerryReplicationState, replicateFerry } from '../src/index.js';
import { MemoryRelayServer, newDisk } from './support.js';

// RxDB attachments travel with their documents: in pushes, through the relay, and they are checked
// on arrival. (Documents are compared with their attachments' data, read back through RxDB.)

addRxPlugin(RxDBAttachmentsPlugin);

const fileSchema = {
  version: 0,
  primaryKey: 'id',
  type: 'object',
  properties: { id: { type: 'string', maxLength: 100 }, name: { type: 'string' } },
  required: ['id', 'name'],
  attachments: {},
} as const;

type FileDoc = { id: string; name: string };
type FileState = { name?: string; _attachments?: Record<string, unknown> };
type FileDb = RxDatabase<{ files: RxCollection<FileDoc> }>;

interface FileDevice {
  db: FileDb;
  network: MemoryNetwork;
  replication: FerryReplicationState;
  stop(): Promise<void>;
}

const running: FileDevice[] = [];
afterEach(async () => {
  for (const device of running.splice(0)) await device.stop();
});

async function fileDevice(
  hub: MemoryHub,
  id: string,
  relayServer?: MemoryRelayServer,
  conflict?: ConflictPolicy,
): Promise<FileDevice> {
  const disk = newDisk();
  const db = (await createRxDatabase({
    name: disk.name,
    storage: disk.storage,
    multiInstance: false,
  })) as FileDb;
  await db.addCollections({ files: { schema: fileSchema } });
  const network = hub.join(id);
  const replication = await replicateFerry({
    collections: { files: db.files },
    network,
    ...(relayServer ? { relay: relayServer.client(id) } : {}),
    ...(conflict ? { conflict } : {}),
    retryDelayMs: 20,
  });
  const device = {
    db,
    network,
    replication,
    async stop() {
      await replication.cancel();
      await network.close();
      await db.close();
    },
  };
  running.push(device);
  return device;
}

/** Each file with its attachments' ids, types and text, as the app reads them. */
async function contents(device: FileDevice) {
  const docs = await device.db.files.find({ sort: [{ id: 'asc' }] }).exec();
  return Promise.all(
    docs.map(async (doc) => ({
      id: doc.id,
      name: doc.name,
      attachments: await Promise.all(
        doc
          .allAttachments()
          .map(async (a) => ({ id: a.id, type: a.type, text: await a.getStringData() }))
          .sort(),
      ),
    })),
  );
}

const inSync = async (...devices: FileDevice[]) => {
  for (let round = 0; round < 40; round++) {
    await Promise.all(devices.map((d) => d.replication.awaitInSync()));
    const all = await Promise.all(devices.map((d) => contents(d).then((c) => JSON.stringify(c))));
    if (all.every((c) => c === all[0])) return JSON.parse(all[0]!) as Awaited<ReturnType<typeof contents>>;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('devices did not converge');
};

const text = (value: string) => new Blob([value], { type: 'text/plain' });

describe('attachments', () => {
  it('are synced with their documents: initial sync, new, changed and removed attachments', async () => {
    const hub = new MemoryHub();
    const a = await fileDevice(hub, 'att-a');
    const before = await a.db.files.insert({ id: 'f1', name: 'before B came' });
    await before.putAttachment({
      id: 'notes.txt',
      type: 'text/plain',
      data: text('written before B started'),
    });
    const b = await fileDevice(hub, 'att-b');
    expect(await inSync(a, b)).toEqual([
      {
        id: 'f1',
        name: 'before B came',
        attachments: [{ id: 'notes.txt', type: 'text/plain', text: 'written before B started' }],
      },
    ]);

    // B adds a second attachment; A changes the first one (a live write each way).
    const atB = (await b.db.files.findOne('f1').exec())!;
    await atB.putAttachment({
      id: 'photo.bin',
      type: 'application/octet-stream',
      data: text('\u0000\u0001 bytes'),
    });
    await inSync(a, b);
    const atA = (await a.db.files.findOne('f1').exec())!;
    await atA.putAttachment({ id: 'notes.txt', type: 'text/plain', data: text('changed on A') });
    expect((await inSync(a, b))[0]!.attachments).toEqual([
      { id: 'notes.txt', type: 'text/plain', text: 'changed on A' },
      { id: 'photo.bin', type: 'application/octet-stream', text: '\u0000\u0001 bytes' },
    ]);

    // Removing one reaches the other device; the document itself stays.
    await (await a.db.files.findOne('f1').exec())!.getAttachment('photo.bin')!.remove();
    expect((await inSync(a, b))[0]!.attachments.map((att) => att.id)).toEqual(['notes.txt']);
  });

  it('merge as one field under the per-field policy: a rename and a new attachment made apart both survive', async () => {
    const hub = new MemoryHub();
    const a = await fileDevice(hub, 'fld-a', undefined, { merge: 'fields' });
    const b = await fileDevice(hub, 'fld-b', undefined, { merge: 'fields' });
    await a.db.files.insert({ id: 'f3', name: 'draft' });
    await inSync(a, b);
    hub.setLinked('fld-a', 'fld-b', false);
    await (await a.db.files.findOne('f3').exec())!.incrementalPatch({ name: 'final' });
    const atB = (await b.db.files.findOne('f3').exec())!;
    await atB.putAttachment({ id: 'scan.txt', type: 'text/plain', data: text('attached on B') });
    hub.setLinked('fld-a', 'fld-b', true);
    expect(await inSync(a, b)).toEqual([
      {
        id: 'f3',
        name: 'final',
        attachments: [{ id: 'scan.txt', type: 'text/plain', text: 'attached on B' }],
      },
    ]);
  });

  it('go with a deleted document, also where its tombstone travels (per-field policy)', async () => {
    const hub = new MemoryHub();
    const a = await fileDevice(hub, 'del-a', undefined, { merge: 'fields' });
    const b = await fileDevice(hub, 'del-b', undefined, { merge: 'fields' });
    const doc = await a.db.files.insert({ id: 'f4', name: 'to be deleted' });
    await doc.putAttachment({ id: 'gone.txt', type: 'text/plain', data: text('deleted with it') });
    await inSync(a, b);
    await (await a.db.files.findOne('f4').exec())!.remove();
    expect(await inSync(a, b)).toEqual([]);
    await a.db.files.insert({ id: 'f5', name: 'after the delete' });
    expect((await inSync(a, b)).map((f) => f.id)).toEqual(['f5']);
  });

  it("settle under the app's conflict handler without refusing a resolution for lack of data", async () => {
    // The handler keeps the version with more attachments; a tie goes to the greater name.
    const conflict: ConflictPolicy = {
      isEqual: (x: FileState, y: FileState) => JSON.stringify(x) === JSON.stringify(y),
      resolve: async ({
        realMasterState: x,
        newDocumentState: y,
      }: {
        realMasterState: FileState;
        newDocumentState: FileState;
      }) => {
        const rank = (s: FileState) => `${Object.keys(s._attachments ?? {}).length}:${s.name ?? ''}`;
        return rank(x) >= rank(y) ? x : y;
      },
    } as ConflictPolicy;
    const hub = new MemoryHub();
    const a = await fileDevice(hub, 'hdl-a', undefined, conflict);
    const b = await fileDevice(hub, 'hdl-b', undefined, conflict);
    const errors: string[] = [];
    for (const device of [a, b])
      device.replication.error$.subscribe((e) => errors.push(`${e.code}: ${e.message}`));
    await a.db.files.insert({ id: 'f6', name: 'shared' });
    await inSync(a, b);
    hub.setLinked('hdl-a', 'hdl-b', false);
    const atA = (await a.db.files.findOne('f6').exec())!;
    await atA.putAttachment({ id: 'from-a.txt', type: 'text/plain', data: text('attached on A') });
    await (await b.db.files.findOne('f6').exec())!.incrementalPatch({ name: 'renamed on B' });
    hub.setLinked('hdl-a', 'hdl-b', true);
    expect(await inSync(a, b)).toEqual([
      {
        id: 'f6',
        name: 'shared',
        attachments: [{ id: 'from-a.txt', type: 'text/plain', text: 'attached on A' }],
      },
    ]);
    expect(errors).toEqual([]);
  });

  it('reach an offline device through the relay', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const a = await fileDevice(hub, 'rel-a', relayServer);
    const b = await fileDevice(hub, 'rel-b', relayServer);
    await inSync(a, b); // they know each other now
    await b.stop();
    running.splice(running.indexOf(b), 1);
    const doc = await a.db.files.insert({ id: 'f2', name: 'while B was away' });
    await doc.putAttachment({ id: 'away.txt', type: 'text/plain', data: text('left in the mailbox') });
    await a.replication.awaitInSync();
    expect(relayServer.waiting('rel-b')).toBeGreaterThan(0);
    await a.stop();
    running.splice(running.indexOf(a), 1);

    const back = await fileDevice(new MemoryHub(), 'rel-b', relayServer);
    await back.replication.pullRelay();
    expect(await contents(back)).toEqual([
      {
        id: 'f2',
        name: 'while B was away',
        attachments: [{ id: 'away.txt', type: 'text/plain', text: 'left in the mailbox' }],
      },
    ]);
  });

  it('refuses a document whose attachment came without its data, or with data of another length', async () => {
    const hub = new MemoryHub();
    const a = await fileDevice(hub, 'bad-a');
    const sync = a.replication.collection('files')!;
    // Data is found by digest (equal digests, equal data): each document has its own here.
    const version = (id: string, att?: Record<string, string>) => ({
      id,
      st: '0001700000000000-0000-peer',
      vv: { peer: 1 },
      del: false,
      doc: {
        id,
        name: id,
        _attachments: { 'a.txt': { digest: `md5-${id}`, length: 5, type: 'text/plain' } },
      },
      ...(att ? { att } : {}),
    });
    const outcome = await sync.apply(
      [
        version('no-data'),
        version('wrong-length', { 'a.txt': btoa('too long') }),
        version('good', { 'a.txt': btoa('hello') }),
      ],
      'peer',
    );
    expect(outcome.rejected.map((r) => [r.id, (r.error as Error).message])).toEqual([
      ['no-data', 'attachment a.txt arrived without its data'],
      ['wrong-length', 'attachment a.txt has 8 bytes, not 5'],
    ]);
    expect(await contents(a)).toEqual([
      { id: 'good', name: 'good', attachments: [{ id: 'a.txt', type: 'text/plain', text: 'hello' }] },
    ]);
  });
});
