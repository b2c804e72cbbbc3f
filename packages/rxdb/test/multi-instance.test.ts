import { MemoryHub } from '@ferry/core';
import { addRxPlugin, createRxDatabase } from 'rxdb';
import { disableWarnings, RxDBDevModePlugin } from 'rxdb/plugins/dev-mode';
import { describe, expect, it, vi } from 'vitest';
import { type FerryReplicationState, replicateFerry } from '../src/index.js';
import { newDisk, openDb, type TodoDb, todoSchema } from './support.js';

// Two instances of one multiInstance database in one process share its storage and its events, as
// two browser tabs of one app do (RxDB's memory storage; dev-mode allows the second instance).
disableWarnings();
addRxPlugin(RxDBDevModePlugin);

async function openTab(disk: ReturnType<typeof newDisk>): Promise<TodoDb> {
  const db = (await createRxDatabase({
    name: disk.name,
    storage: disk.storage,
    multiInstance: true,
    ignoreDuplicate: true,
  })) as TodoDb;
  await db.addCollections({ todos: { schema: todoSchema } });
  return db;
}

const docsOf = async (db: TodoDb) =>
  (await db.todos.find().exec()).map((d) => d.toMutableJSON()).sort((a, b) => a.id.localeCompare(b.id));

describe('several instances of one database (browser tabs)', () => {
  it('only the leader replicates; another instance takes over, on the same metadata, when it goes', async () => {
    const hub = new MemoryHub();
    const disk = newDisk();
    const peerDb = await openDb(newDisk());
    const peer = await replicateFerry({ collections: { todos: peerDb.todos }, network: hub.join('peer') });
    const first = await openTab(disk);
    const firstSync = await replicateFerry({
      collections: { todos: first.todos },
      network: hub.join('tabs'),
    });
    await first.waitForLeadership();
    // The second tab's own connection: this test's hub allows one node per id, so it reaches no one.
    const secondNetwork = new MemoryHub().join('tabs');
    const second = await openTab(disk);
    let secondSync: FerryReplicationState | undefined;
    try {
      secondSync = await replicateFerry({ collections: { todos: second.todos }, network: secondNetwork });
      expect(second.isLeader()).toBe(false);
      expect(secondSync.active$.value).toBe(false);
      expect(secondSync.isPaused()).toBe(true);
      expect(secondSync.collection('todos')).toBeUndefined(); // it has not touched the metadata

      // A write in either tab reaches the peer through the leader.
      await second.todos.insert({ id: 'from-second', title: 'written in the follower' });
      await first.todos.insert({ id: 'from-first', title: 'written in the leader' });
      await vi.waitFor(async () => expect(await docsOf(peerDb)).toHaveLength(2), { timeout: 5000 });
      await firstSync.awaitInSync();
      const leaderLog = firstSync.collection('todos')!;
      const leaderHead = leaderLog.announcedThrough;
      expect(leaderLog.meta('from-second')?.local).toBe(true);

      await firstSync.cancel();
      await first.close();
      await second.waitForLeadership();
      await vi.waitFor(() => expect(secondSync!.active$.value).toBe(true), { timeout: 5000 });
      const takenOver = secondSync.collection('todos')!;
      // The same log: the leader's versions are there, and the next one comes after them.
      expect(takenOver.meta('from-first')).toEqual(leaderLog.meta('from-first'));
      await second.todos.insert({ id: 'after', title: 'written after the takeover' });
      await secondSync.awaitInSync();
      expect(takenOver.meta('after')!.seq).toBeGreaterThan(leaderHead);
    } finally {
      await secondSync?.cancel();
      await second.close();
      await peer.cancel();
      await peerDb.close();
    }
  }, 30_000);

  it('waitForLeadership: false starts at once, leader or not', async () => {
    const tab = await openTab(newDisk());
    const sync = await replicateFerry({
      collections: { todos: tab.todos },
      network: new MemoryHub().join('tabs'),
      waitForLeadership: false,
    });
    expect(sync.active$.value).toBe(true);
    await sync.cancel();
    await tab.close();
  });

  it('a follower cancelled before it leads never starts', async () => {
    const disk = newDisk();
    const first = await openTab(disk);
    const firstSync = await replicateFerry({
      collections: { todos: first.todos },
      network: new MemoryHub().join('tabs'),
    });
    await first.waitForLeadership();
    const second = await openTab(disk);
    const secondSync = await replicateFerry({
      collections: { todos: second.todos },
      network: new MemoryHub().join('tabs'),
    });
    await secondSync.cancel();
    await firstSync.cancel();
    await first.close();
    await second.waitForLeadership();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(secondSync.active$.value).toBe(false);
    expect(secondSync.collection('todos')).toBeUndefined();
    await second.close();
  }, 30_000);
});
