// Bundled for Chromium by bench/suites/browser-meta.ts: one RxDB database on Dexie (IndexedDB) with
// a collection and Ferry's metadata store, driven through a page global.
import { createRxDatabase, type RxCollection } from 'rxdb';
import { getRxStorageDexie } from 'rxdb/plugins/storage-dexie';
import { MetaStore } from '../../packages/rxdb/src/store.js';
import { todoSchema as schema } from '../../packages/rxdb/test/support-schema.js';

type Todo = { id: string; title: string };

/**
 * `writes` single-document inserts, each followed by the metadata commit Ferry makes for a live
 * write; the duration of each, in ms.
 */
async function liveWrites(writes: number): Promise<{ insert: number[]; meta: number[] }> {
  const db = await createRxDatabase({
    name: `bench${Date.now()}`,
    storage: getRxStorageDexie(),
    multiInstance: false,
  });
  await db.addCollections({ todos: { schema } });
  const todos = db.todos as RxCollection<Todo>;
  const store = await MetaStore.open(db);
  await store.loadMetas('todos');
  const insert: number[] = [];
  const meta: number[] = [];
  for (let i = 0; i < writes; i++) {
    const id = `live-${i}`;
    let start = performance.now();
    const doc = await todos.insert({ id, title: `todo ${i}` });
    insert.push(performance.now() - start);
    start = performance.now();
    await store.saveMetas('todos', [
      {
        id,
        rev: doc.revision,
        st: `00lz5n8k12.${String(i).padStart(5, '0')}.page`,
        vv: { page: i + 1 },
        del: false,
        seq: i + 1,
        via: '',
        local: true,
      },
    ]);
    meta.push(performance.now() - start);
  }
  await db.close();
  return { insert, meta };
}

(globalThis as { liveWrites?: typeof liveWrites }).liveWrites = liveWrites;
