import { MemoryHub, type MemoryNetwork } from '@ferry/core';
import { addRxPlugin, createRxDatabase, type RxCollection, type RxDatabase } from 'rxdb';
import { RxDBAttachmentsPlugin } from 'rxdb/plugins/attachments';
import { wrappedAttachmentsCompressionStorage } from 'rxdb/plugins/attachments-compression';
import { wrappedKeyEncryptionCryptoJsStorage } from 'rxdb/plugins/encryption-crypto-js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type ConflictPolicy,
  type DiffPush,
  type FerryReplicationState,
  replicateFerry,
} from '../src/index.js';
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

/**
 * How a device's storage keeps attachment data: as it is, or through RxDB's wrappers that deflate
 * (attachments-compression) or encrypt it (the schema says which). The descriptions then give the
 * stored form's length.
 */
type AttachmentStorage = 'plain' | 'compressed' | 'encrypted' | 'compressed and encrypted';

type FileDoc = { id: string; name: string };
type FileState = { name?: string; _attachments?: Record<string, unknown> };
type FileDb = RxDatabase<{ files: RxCollection<FileDoc> }>;

interface FileDevice {
  disk: ReturnType<typeof newDisk>;
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
  /** The storage to open: a device restarted on the same one keeps its data and metadata. */
  disk = newDisk(),
  stored: AttachmentStorage = 'plain',
): Promise<FileDevice> {
  const compressed = stored.startsWith('compressed');
  const encrypted = stored.endsWith('encrypted');
  // Compression outside encryption: RxDB cannot read back data compressed after it was encrypted.
  let storage = encrypted ? wrappedKeyEncryptionCryptoJsStorage({ storage: disk.storage }) : disk.storage;
  if (compressed) storage = wrappedAttachmentsCompressionStorage({ storage });
  const db = (await createRxDatabase({
    name: disk.name,
    storage,
    multiInstance: false,
    ...(encrypted ? { password: 'attachments at rest' } : {}),
  })) as FileDb;
  const attachments = {
    ...(compressed ? { compression: 'deflate' as const } : {}),
    ...(encrypted ? { encrypted: true } : {}),
  };
  await db.addCollections({ files: { schema: { ...fileSchema, attachments } } });
  const network = hub.join(id);
  const replication = await replicateFerry({
    collections: { files: db.files },
    network,
    ...(relayServer ? { relay: relayServer.client(id) } : {}),
    ...(conflict ? { conflict } : {}),
    retryDelayMs: 20,
  });
  const device = {
    disk,
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

  it('are not sent again with an edit of their document: a peer that holds the data gets the descriptions only', async () => {
    const hub = new MemoryHub();
    const a = await fileDevice(hub, 'keep-a');
    const b = await fileDevice(hub, 'keep-b');
    /** What A's pushes to B carried for f7: with or without attachment data. */
    const pushed: Array<'data' | 'descriptions only'> = [];
    const watch = (device: FileDevice) =>
      device.network.on('message', (from, message) => {
        if (from !== 'keep-a' || message.op !== 'DB_DIFF_PUSH') return;
        for (const change of (message.data as DiffPush).changes) {
          if (change.id === 'f7' && change.doc?._attachments) {
            pushed.push(change.att ? 'data' : 'descriptions only');
          }
        }
      });
    watch(b);
    const doc = await a.db.files.insert({ id: 'f7', name: 'photo note' });
    await doc.putAttachment({ id: 'photo.txt', type: 'text/plain', data: text('x'.repeat(4096)) });
    await inSync(a, b);
    // Sent with its data in this stream: an edit on the same connection goes without it.
    await (await a.db.files.findOne('f7').exec())!.incrementalPatch({ name: 'renamed live' });
    await inSync(a, b);
    // B held the data at the checkpoint it resumes from: the edit it missed goes without it too.
    await b.stop();
    running.splice(running.indexOf(b), 1);
    await (await a.db.files.findOne('f7').exec())!.incrementalPatch({ name: 'renamed while B was away' });
    const back = await fileDevice(hub, 'keep-b', undefined, undefined, b.disk);
    watch(back);
    // A changed attachment travels with its new data.
    await inSync(a, back);
    await (await a.db.files.findOne('f7').exec())!.putAttachment({
      id: 'photo.txt',
      type: 'text/plain',
      data: text('y'.repeat(4096)),
    });
    expect(await inSync(a, back)).toEqual([
      {
        id: 'f7',
        name: 'renamed while B was away',
        attachments: [{ id: 'photo.txt', type: 'text/plain', text: 'y'.repeat(4096) }],
      },
    ]);
    expect(pushed).toEqual(['data', 'descriptions only', 'descriptions only', 'data']);
  });

  it.each(['compressed', 'encrypted', 'compressed and encrypted'] as const)(
    "stored %s (RxDB's storage wrappers): they sync both ways, and an edit goes without their data",
    async (stored) => {
      // The descriptions' length is the stored form's: the data that travels (read back as the app
      // reads it) has another.
      const hub = new MemoryHub();
      const a = await fileDevice(hub, 'zip-a', undefined, undefined, newDisk(), stored);
      const b = await fileDevice(hub, 'zip-b', undefined, undefined, newDisk(), stored);
      const errors: string[] = [];
      for (const device of [a, b])
        device.replication.error$.subscribe((e) => errors.push(`${e.code}: ${e.message}`));
      let withData = 0;
      b.network.on('message', (_, message) => {
        if (message.op === 'DB_DIFF_PUSH')
          withData += (message.data as DiffPush).changes.filter((c) => c.att).length;
      });
      const report = 'a long report, '.repeat(400);
      const doc = await a.db.files.insert({ id: 'z1', name: 'report' });
      await doc.putAttachment({ id: 'report.txt', type: 'text/plain', data: text(report) });
      await (await b.db.files.insert({ id: 'z2', name: 'notes' })).putAttachment({
        id: 'notes.txt',
        type: 'text/plain',
        data: text('notes, '.repeat(300)),
      });
      await inSync(a, b);
      expect((await b.db.files.findOne('z1').exec())!.getAttachment('report.txt')!.length).not.toBe(
        report.length,
      );
      await (await a.db.files.findOne('z1').exec())!.incrementalPatch({ name: 'report, renamed' });
      expect(await inSync(a, b)).toEqual([
        {
          id: 'z1',
          name: 'report, renamed',
          attachments: [{ id: 'report.txt', type: 'text/plain', text: report }],
        },
        {
          id: 'z2',
          name: 'notes',
          attachments: [{ id: 'notes.txt', type: 'text/plain', text: 'notes, '.repeat(300) }],
        },
      ]);
      expect(withData).toBe(1);
      expect(errors).toEqual([]);
    },
  );

  it('a device taken for holding data it lacks asks for the documents again, with their data', async () => {
    const hub = new MemoryHub();
    const a = await fileDevice(hub, 'lack-a');
    const b = await fileDevice(hub, 'lack-b');
    const errors: string[] = [];
    for (const device of [a, b])
      device.replication.error$.subscribe((e) => errors.push(`${e.code}: ${e.message}`));
    const doc = await a.db.files.insert({ id: 'f8', name: 'shared' });
    await doc.putAttachment({ id: 'scan.txt', type: 'text/plain', data: text('kept on A') });
    await inSync(a, b);
    const fromB: Array<{ op: string; data: unknown }> = [];
    a.network.on('message', (from, message) => {
      if (from === 'lack-b' && (message.op === 'DB_DIFF_NACK' || message.op === 'DB_SYNC_INIT')) {
        fromB.push({ op: message.op, data: message.data });
      }
    });
    // Apart, B removes the attachment (its data goes), then A renames the document: A's later
    // version wins, and A, whose last version B held with this attachment, sends it without data.
    hub.setLinked('lack-a', 'lack-b', false);
    await (await b.db.files.findOne('f8').exec())!.getAttachment('scan.txt')!.remove();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await (await a.db.files.findOne('f8').exec())!.incrementalPatch({ name: 'renamed on A' });
    hub.setLinked('lack-a', 'lack-b', true);
    expect(await inSync(a, b)).toEqual([
      {
        id: 'f8',
        name: 'renamed on A',
        attachments: [{ id: 'scan.txt', type: 'text/plain', text: 'kept on A' }],
      },
    ]);
    expect(errors).toEqual([]);
    // B refused that push as a whole and asked again from its checkpoint, naming the document.
    const nack = fromB.findIndex((m) => m.op === 'DB_DIFF_NACK');
    expect(fromB[nack]?.data).toMatchObject({ reason: 'attachments', ids: ['f8'] });
    expect(fromB.slice(nack + 1).find((m) => m.op === 'DB_SYNC_INIT')?.data).toMatchObject({
      collection: 'files',
      withData: ['f8'],
    });
  });

  it('refuses, and does not ask for again, a document that came without its data once more after it was asked for', async () => {
    const hub = new MemoryHub();
    const peer = hub.join('lossy-peer');
    const fromB: Array<{ op: string; data: Record<string, unknown> }> = [];
    // A peer that answers every request with the document's description but never its data.
    peer.on('message', (from, message) => {
      const data = message.data as Record<string, unknown>;
      fromB.push({ op: message.op, data });
      if (message.op !== 'DB_SYNC_INIT') return;
      const change = {
        id: 'x',
        st: '0001700000000000-0000-lossy-peer',
        vv: { 'lossy-peer': 1 },
        del: false,
        doc: {
          id: 'x',
          name: 'x',
          _attachments: { 'a.txt': { digest: 'md5-x', length: 5, type: 'text/plain' } },
        },
      };
      const push = {
        collection: 'files',
        stream: data.stream,
        changes: [change],
        baseVersion: 'lossy@0',
        newVersion: 'lossy@1',
        more: false,
      };
      void peer.send(from, {
        op: 'DB_DIFF_PUSH',
        data: push,
        timestamp: Date.now(),
        id: `push-${fromB.length}`,
      });
    });
    const b = await fileDevice(hub, 'ask-b');
    const errors: string[] = [];
    b.replication.error$.subscribe((e) => errors.push(e.code));
    for (let round = 0; round < 100 && errors.length === 0; round++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => setTimeout(resolve, 50)); // time for a request that should not come
    const requests = fromB.filter((m) => m.op === 'DB_SYNC_INIT' || m.op === 'DB_DIFF_NACK');
    expect(requests.map((m) => [m.op, m.data.withData ?? m.data.reason])).toEqual([
      ['DB_SYNC_INIT', undefined],
      ['DB_DIFF_NACK', 'attachments'],
      ['DB_SYNC_INIT', ['x']],
      ['DB_DIFF_NACK', 'rejected'],
    ]);
    expect(errors).toEqual(['SCHEMA_MISMATCH']);
    expect(await contents(b)).toEqual([]);
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
      { device: 'peer', store: 'peer~store' },
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
