import { MemoryHub } from '@ferry/core';
import { addRxPlugin } from 'rxdb';
import { RxDBCleanupPlugin } from 'rxdb/plugins/cleanup';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { converge, Device, type DeviceOptions, MemoryRelayServer, openDb, within } from './support.js';

// RxDB's cleanup plugin purges deleted documents once they have been deleted for its
// `minimumDeletedTime`; Ferry then forgets their metadata too, so that an app that creates and
// deletes many documents does not grow Ferry's log for ever.

addRxPlugin(RxDBCleanupPlugin);
// Purged at once by `collection.cleanup()`; RxDB's own cleanup cycles start only after an hour, so
// they never run in the middle of a test.
const cleanupPolicy = { minimumDeletedTime: 0, minimumCollectionAge: 3_600_000 };

describe("forgetting the deletes RxDB's cleanup purged", () => {
  const started: Device[] = [];
  afterEach(async () => {
    for (const device of started.splice(0)) if (device.online) await device.stop();
  });

  const device = (id: string, hub: MemoryHub, extra: DeviceOptions = {}) => {
    const made = new Device(id, hub, { cleanupPolicy, ...extra });
    started.push(made);
    return made;
  };
  /** Devices `<prefix>a` and `<prefix>b` with a diff server, both holding `doc` (written on a). */
  const relayPairHolding = async (prefix: string, doc: { id: string; title: string }) => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const a = await device(`${prefix}a`, hub, { relayServer }).start();
    const b = await device(`${prefix}b`, hub, { relayServer }).start();
    await a.db.todos.insert(doc);
    await converge([a, b]);
    return { hub, relayServer, a, b };
  };
  const metaOf = (device: Device, id: string) => device.replication.collection('todos')!.meta(id);
  const cleanup = (device: Device) => device.db.todos.cleanup();

  it('a delete every device holds: forgotten on each once RxDB purged it, for good (a restart loads none of its entries), and the same id written again syncs', async () => {
    const hub = new MemoryHub();
    const a = await device('cla', hub).start();
    const b = await device('clb', hub).start();
    // Forty in one commit (a segment of their own), then two writes of t1 appended elsewhere: t1's
    // superseded entry stays in the first segment, and must not come back as current.
    await a.db.todos.bulkInsert(Array.from({ length: 40 }, (_, i) => ({ id: `t${i}`, title: `first ${i}` })));
    await converge([a, b]);
    await a.db.todos.findOne('t1').update({ $set: { title: 'edited' } });
    await converge([a, b]);
    await b.db.todos.findOne('t1').remove();
    await converge([a, b]);
    expect(metaOf(a, 't1')).toMatchObject({ del: true });
    expect(metaOf(b, 't1')).toMatchObject({ del: true });

    // a received it: forgotten at its first cleanup. b made it: once its relay mark says a has it.
    await cleanup(a);
    expect(metaOf(a, 't1')).toBeUndefined();
    await within(10_000, forgottenAfterCleanups(b, 't1'), () => 'b never forgot its delete');
    expect(metaOf(a, 't2')).toMatchObject({ del: false }); // only what was purged
    for (const d of [a, b]) {
      await d.stop();
      await d.start();
      expect(metaOf(d, 't1')).toBeUndefined();
    }

    // Written again after the purge, on either device: a new document to both.
    await a.db.todos.insert({ id: 't1', title: 'written again' });
    await b.db.todos.findOne('t2').update({ $set: { title: 'still syncing' } });
    await converge([a, b]);
    expect((await b.docs()).find((doc) => doc.id === 't1')).toMatchObject({ title: 'written again' });
    expect((await a.docs()).find((doc) => doc.id === 't2')).toMatchObject({ title: 'still syncing' });
    expect(await a.docs()).toHaveLength(40);
  });

  it('a document written anew where its delete was forgotten reaches a device that still holds the delete (the new version is not taken for an older one)', async () => {
    const hub = new MemoryHub();
    const a = await device('wna', hub).start();
    const b = await device('wnb', hub).start();
    await a.db.todos.insert({ id: 't1', title: 'first' });
    await converge([a, b]);
    await b.db.todos.findOne('t1').remove();
    await converge([a, b]);
    // Only a's cleanup runs: b keeps the delete, whose vector names a's first write.
    await cleanup(a);
    expect(metaOf(a, 't1')).toBeUndefined();
    expect(metaOf(b, 't1')).toMatchObject({ del: true });
    await a.db.todos.insert({ id: 't1', title: 'written anew' });
    await converge([a, b]);
    expect((await b.docs()).find((doc) => doc.id === 't1')).toMatchObject({ title: 'written anew' });
  });

  it('a delete of a document this device never stored (no tombstone to purge) is forgotten once stamped minimumDeletedTime ago, as RxDB would have purged its tombstone', async () => {
    const hub = new MemoryHub();
    const relayServer = new MemoryRelayServer();
    const a = await device('nva', hub, { relayServer, knownDevices: ['nvb'] }).start();
    await a.db.todos.insert({ id: 'gone', title: 'written and deleted before b ever ran' });
    await a.db.todos.findOne('gone').remove();
    await a.replication.awaitInSync();
    let ahead = 0;
    const b = await device('nvb', hub, {
      relayServer,
      now: () => Date.now() + ahead,
      cleanupPolicy: { ...cleanupPolicy, minimumDeletedTime: 60_000 },
    }).start();
    await converge([a, b]);
    expect(metaOf(b, 'gone')).toMatchObject({ del: true, rev: '' });
    await cleanup(b);
    expect(metaOf(b, 'gone')).toMatchObject({ del: true }); // stamped less than a minute ago
    ahead = 120_000;
    await cleanup(b);
    expect(metaOf(b, 'gone')).toBeUndefined();
    // a stored it, and RxDB purged it there.
    await within(10_000, forgottenAfterCleanups(a, 'gone'), () => 'a never forgot its delete');
  });

  it('an own delete is kept until every known device has it: here until the device that was away acknowledged it (no diff server)', async () => {
    const hub = new MemoryHub();
    const a = await device('owa', hub, { knownDevices: ['owb'] }).start();
    const b = await device('owb', hub).start();
    await a.db.todos.insert({ id: 'doomed', title: 'deleted while b is away' });
    await converge([a, b]);
    await b.stop();
    await a.db.todos.findOne('doomed').remove();
    await a.replication.awaitInSync();
    await cleanup(a);
    // RxDB purged the tombstone; Ferry keeps the delete, which b has not got.
    expect(await a.db.todos.storageInstance.findDocumentsById(['doomed'], true)).toEqual([]);
    expect(metaOf(a, 'doomed')).toMatchObject({ del: true });
    await a.stop();
    await a.start();
    await b.start();
    await converge([a, b]);
    expect(await b.docs()).toEqual([]);
    // b acknowledged it: once the relay mark is saved (a second later), the next cleanup forgets it.
    await within(
      10_000,
      forgottenAfterCleanups(a, 'doomed'),
      () => 'a never forgot the delete b acknowledged',
    );
  });

  it('with a diff server, an own delete is forgotten once it is in the mailbox of the device that is away, which gets it from there', async () => {
    const { relayServer, a, b } = await relayPairHolding('rl', {
      id: 'doomed',
      title: 'deleted while b is away',
    });
    await b.stop();
    await a.db.todos.findOne('doomed').remove();
    await a.replication.awaitInSync();
    expect(relayServer.waiting('rlb')).toBeGreaterThan(0);
    await within(10_000, forgottenAfterCleanups(a, 'doomed'), () => 'a never forgot the relayed delete');
    await a.stop();
    await b.start();
    await b.replication.awaitInSync();
    expect(await b.docs()).toEqual([]);
    expect(relayServer.waiting('rlb')).toBe(0);
  });

  it('a relay diff holding an older version of a deleted document, waiting in the mailbox when RxDB purges the delete, is read before Ferry forgets it: the document does not come back', async () => {
    const { hub, relayServer, a, b } = await relayPairHolding('mb', { id: 'doc', title: 'first' });
    // Apart, a edits it: the edit is on its way to b's mailbox, through a slow diff server.
    let release!: () => void;
    relayServer.pushGate = new Promise<void>((resolve) => {
      release = resolve;
    });
    hub.setLinked('mba', 'mbb', false);
    await (await a.db.todos.findOne('doc').exec())!.incrementalPatch({ title: 'edited apart' });
    await vi.waitFor(() => expect(relayServer.held).toBe(1));
    // Together again, b gets the edit directly and deletes the document; a has the delete.
    hub.setLinked('mba', 'mbb', true);
    await vi.waitFor(async () => expect((await b.docs()).map((doc) => doc.title)).toEqual(['edited apart']));
    await b.db.todos.findOne('doc').remove();
    await vi.waitFor(async () => expect(await a.docs()).toEqual([]));
    // The edit lands in b's mailbox, older than the delete, and waits there.
    release();
    relayServer.pushGate = undefined;
    await a.replication.awaitInSync();
    expect(relayServer.waiting('mbb')).toBe(1);
    await within(10_000, forgottenAfterCleanups(b, 'doc'), () => 'b never forgot its delete');
    expect(relayServer.waiting('mbb')).toBe(0); // read before the delete was forgotten
    await b.replication.pullRelay();
    await converge([a, b]);
    for (const d of [a, b]) expect(await d.docs()).toEqual([]);
  });

  it('with a diff server, nothing is forgotten while the mailbox cannot be read (paused, the server unreachable: reported); a later cleanup forgets', async () => {
    const { relayServer, a, b } = await relayPairHolding('mu', { id: 'doc', title: 'deleted' });
    await b.db.todos.findOne('doc').remove();
    await converge([a, b]);
    const errors: string[] = [];
    b.replication.error$.subscribe((error) => errors.push(`${error.code}: ${error.message}`));
    b.replication.pause();
    await cleanup(b);
    expect(metaOf(b, 'doc')).toMatchObject({ del: true });
    b.replication.resume();
    await b.replication.pullRelay(); // resume()'s own read
    relayServer.down = true;
    await cleanup(b);
    expect(metaOf(b, 'doc')).toMatchObject({ del: true });
    expect(errors).toEqual([expect.stringContaining('diff server unreachable')]);
    relayServer.down = false;
    await within(10_000, forgottenAfterCleanups(b, 'doc'), () => 'b never forgot its delete');
  });

  it("forgetting the log's latest versions does not take its head back: a restart after they were forgotten is no restored database to the peer it passed them to", async () => {
    const hub = new MemoryHub();
    const a = await device('hda', hub).start();
    const b = await device('hdb', hub).start();
    const c = await device('hdc', hub).start();
    // c's versions, more than a start reserves above the head it saved (UNSAVED_MAX): b logs them
    // and passes them on to a, whose checkpoint in b's log goes past them.
    const ids = Array.from({ length: 1100 }, (_, i) => `h${i}`);
    await c.db.todos.bulkInsert(ids.map((id) => ({ id, title: id })));
    await converge([a, b, c]);
    await c.db.todos.bulkRemove(ids);
    await converge([a, b, c]);
    await cleanup(b);
    expect(metaOf(b, 'h1099')).toBeUndefined();
    await b.stop();
    await b.start();
    const errors: unknown[] = [];
    b.replication.error$.subscribe((error) => errors.push(error));
    await c.db.todos.insert({ id: 'after', title: 'after the restart' });
    await converge([a, b, c]);
    expect(errors).toEqual([]); // no STALE: a's checkpoint in b's log is one b issued
  });

  it('a delete the app made while Ferry did not run, purged before Ferry saw it: taken for a delete when the document is next read (a peer asking from scratch), not a loop that never ends', async () => {
    const hub = new MemoryHub();
    const a = await device('vna', hub).start();
    const b = await device('vnb', hub).start();
    await a.db.todos.bulkInsert([
      { id: 'x1', title: 'deleted while Ferry is off' },
      { id: 'x2', title: 'kept' },
    ]);
    await converge([a, b]);
    // The app runs without Ferry for a while: it deletes x1, and RxDB's cleanup purges it.
    await a.stop();
    const db = await openDb(a.disk, false, {}, cleanupPolicy);
    await db.todos.findOne('x1').remove();
    await db.todos.cleanup();
    expect(await db.todos.storageInstance.findDocumentsById(['x1'], true)).toEqual([]);
    await db.close();
    await a.start();
    // A new device asks a for everything: reading x1 finds it gone. (b is away: a new device that
    // caught up from b first would ask a from b's checkpoint in a's log, and a would read nothing.)
    await b.stop();
    const c = await device('vnc', hub).start();
    await within(10_000, converge([a, c]), () => 'a and c never converged');
    await b.start();
    await within(10_000, converge([a, b, c]), () => 'the devices never converged');
    for (const d of [a, b, c]) expect((await d.docs()).map((doc) => doc.id)).toEqual(['x2']);
    expect(metaOf(a, 'x1')).toMatchObject({ del: true, local: true });
  });

  /** Runs RxDB's cleanup until Ferry forgot `id` (its relay mark is saved a while after the delivery). */
  async function forgottenAfterCleanups(d: Device, id: string): Promise<void> {
    while (metaOf(d, id) !== undefined) {
      await cleanup(d);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
});
