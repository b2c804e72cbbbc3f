import { MemoryHub } from '@ferry/core';
import fc from 'fast-check';
import { createRxDatabase, type RxCollection, type RxDatabase } from 'rxdb';
import { describe, expect, it } from 'vitest';
import { META_COLLECTION, MetaStore, replicateFerry, storageKey } from '../src/index.js';
import { entryOf, newDisk, writersOf } from './support.js';

// Ferry's metadata collection: keys short enough to keep the memory storage's index entries small,
// long document ids hashed into them, and databases from the earlier key layout migrated on open.

const longSchema = {
  version: 0,
  primaryKey: 'id',
  type: 'object',
  properties: { id: { type: 'string', maxLength: 500 }, title: { type: 'string' } },
  required: ['id', 'title'],
} as const;

/** Ferry's metadata schema before version 1 (primary key padded to 1024 characters). */
const metaSchemaV0 = {
  version: 0,
  primaryKey: 'k',
  type: 'object',
  properties: {
    k: { type: 'string', maxLength: 1024 },
    c: { type: 'string', maxLength: 128 },
    v: { type: 'object' },
  },
  required: ['k', 'c', 'v'],
  indexes: ['c'],
} as const;

type LongDb = RxDatabase<{ longs: RxCollection<{ id: string; title: string }> }>;

async function open(disk: ReturnType<typeof newDisk>): Promise<LongDb> {
  const db = (await createRxDatabase({
    name: disk.name,
    storage: disk.storage,
    multiInstance: false,
  })) as LongDb;
  await db.addCollections({ longs: { schema: longSchema } });
  return db;
}

const longId = (n: number) => `${'x'.repeat(400)}-${n}`;

describe('metadata store', () => {
  it('keeps keys within the limit: short keys as they are, long ones as prefix + SHA-256', () => {
    expect(storageKey('dtodos\u0000a')).toBe('dtodos\u0000a');
    const long = `dlongs\u0000${longId(1)}`;
    const key = storageKey(long);
    expect(key.length).toBeLessThanOrEqual(160);
    expect(key.startsWith(long.slice(0, 64))).toBe(true);
    expect(storageKey(`dlongs\u0000${longId(2)}`)).not.toBe(key);
  });

  it('replicates documents whose ids are longer than the key limit, and finds their metadata after a restart', async () => {
    const hub = new MemoryHub();
    const disks = [newDisk(), newDisk()];
    const start = async (i: number) => {
      const db = await open(disks[i]!);
      const network = hub.join(i === 0 ? 'deva' : 'devb');
      const replication = await replicateFerry({ collections: { longs: db.longs }, network });
      return { db, network, replication };
    };
    const a = await start(0);
    let b = await start(1);
    await a.db.longs.bulkInsert([1, 2, 3].map((n) => ({ id: longId(n), title: `t${n}` })));
    await Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
    expect((await b.db.longs.find().exec()).length).toBe(3);
    const before = b.replication.collection('longs')!.meta(longId(2));
    expect(writersOf(before!.vv)).toEqual(['deva']);
    expect(entryOf(before!.vv, 'deva')).toBe(1);

    await b.replication.cancel();
    await b.network.close();
    await b.db.close();
    b = await start(1);
    expect(b.replication.collection('longs')!.meta(longId(2))).toEqual(before);
    await a.db.longs.findOne(longId(2)).update({ $set: { title: 'edited' } });
    await Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
    expect((await b.db.longs.findOne(longId(2)).exec())?.title).toBe('edited');
    for (const device of [a, b]) {
      await device.replication.cancel();
      await device.network.close();
      await device.db.close();
    }
  });

  it('migrates metadata written with the version 0 layout (checkpoints and versions survive)', async () => {
    const disk = newDisk();
    const old = await open(disk);
    await old.longs.insert({ id: longId(7), title: 'written before the upgrade' });
    const rev = (await old.longs.findOne(longId(7)).exec())!.revision;
    await old.addCollections({ [META_COLLECTION]: { schema: metaSchemaV0 } });
    const meta = {
      id: longId(7),
      rev,
      st: '00lz0000aa.00000.deva',
      vv: { deva: 5 },
      del: false,
      seq: 1,
      via: '',
      local: true,
    };
    await (old.collections as unknown as Record<string, RxCollection>)[META_COLLECTION]!.bulkInsert([
      { k: 'sepoch', c: '', v: { value: 'epoch-from-version-0' } },
      { k: `dlongs\u0000${longId(7)}`, c: 'longs', v: { value: meta } },
    ]);
    await old.close();

    const db = await open(disk);
    const replication = await replicateFerry({
      collections: { longs: db.longs },
      network: new MemoryHub().join('deva'),
    });
    expect(await replication.store.get('epoch')).toBe('epoch-from-version-0');
    expect(replication.collection('longs')!.meta(longId(7))).toEqual(meta);
    // The per-document row moved into a segment.
    const rows = await (db.collections as unknown as Record<string, RxCollection>)
      [META_COLLECTION]!.find({ selector: { c: 'longs' } })
      .exec();
    expect(rows.map((row) => (row.get('v') as { n?: number }).n)).toEqual([0]);
    await replication.cancel();
    await db.close();
  });
});

describe('metadata segments', () => {
  const metaOf = (id: string, seq: number) => ({
    id,
    rev: `${seq}-x`,
    st: '00lz0000aa.00000.deva',
    vv: { deva: seq },
    del: false,
    seq,
    via: '',
    local: true,
  });

  async function segmentEntries(db: LongDb): Promise<number> {
    const rows = await (db.collections as unknown as Record<string, RxCollection>)
      [META_COLLECTION]!.find()
      .exec();
    return rows
      .map((row) => (row.get('v') as { value: unknown }).value)
      .filter(Array.isArray)
      .reduce((sum: number, value) => sum + (value as unknown[]).length, 0);
  }

  it('bad input: a saved device list that is not a list of strings reads as what strings it holds; the list is shared and saved whole', async () => {
    const disk = newDisk();
    let db = await open(disk);
    let store = await MetaStore.open(db as unknown as RxDatabase);
    await store.set('devices', { not: 'a list' });
    await store.set('not-run/longs', ['deva', 7, null, 'devb']);
    expect(await store.getStrings('not-run/longs')).toEqual(['deva', 'devb']);
    const devices = await store.devices();
    expect([...devices]).toEqual([]);
    expect(await store.devices()).toBe(devices); // one set for every replication of the database
    devices.add('devc');
    await store.saveDevices();
    await db.close();
    db = await open(disk);
    store = await MetaStore.open(db as unknown as RxDatabase);
    expect([...(await store.devices())]).toEqual(['devc']);
    await db.close();
  });

  it('any sequence of commits reloads to the latest version of each document, with at most twice as many entries stored', async () => {
    // Live writes (a few documents) share the tail segment (up to 32 entries); batches (hundreds)
    // get their own; commits of 20-40 fill a tail past its cap or start their own.
    const ids = (min: number, max: number) =>
      fc.uniqueArray(fc.integer({ min: 0, max: 299 }), { minLength: min, maxLength: max });
    const commits = fc.array(fc.oneof(ids(1, 4), ids(1, 4), ids(20, 40), ids(200, 300)), { maxLength: 40 });
    await fc.assert(
      fc.asyncProperty(commits, async (commits) => {
        const disk = newDisk();
        let db = await open(disk);
        let store = await MetaStore.open(db as unknown as RxDatabase);
        await store.loadMetas('longs');
        const latest = new Map<string, ReturnType<typeof metaOf>>();
        let seq = 0;
        for (const commit of commits) {
          const metas = commit.map((i) => metaOf(`d${i}`, ++seq));
          await store.saveMetas('longs', metas);
          for (const meta of metas) latest.set(meta.id, meta);
        }
        expect(await segmentEntries(db)).toBeLessThanOrEqual(2 * latest.size);
        await db.close();
        db = await open(disk);
        store = await MetaStore.open(db as unknown as RxDatabase);
        const loaded = await store.loadMetas('longs');
        expect(new Map(loaded.map((m) => [m.id, m]))).toEqual(latest);
        await db.close();
      }),
      { numRuns: 40 },
    );
  });
});
