import fc from 'fast-check';
import { getChangedDocumentsSince } from 'rxdb';
import { afterEach, describe, expect, it } from 'vitest';
import { type ChangeCheckpoint, changedDocumentsSince } from '../src/change-feed.js';
import { storageBelowWrapper } from '../src/store.js';
import { newDisk, openDb, type Todo, type TodoDb } from './support.js';

type Op =
  | { kind: 'insert'; count: number }
  | { kind: 'update'; pick: number }
  | { kind: 'remove'; pick: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  // One bulk insert gives all its documents one `_meta.lwt`: pages must walk such a group by id.
  fc.record({ kind: fc.constant('insert' as const), count: fc.integer({ min: 1, max: 30 }) }),
  fc.record({ kind: fc.constant('update' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }),
);

let db: TodoDb | undefined;
afterEach(async () => {
  await db?.close();
  db = undefined;
});

/** Runs the operations; returns the id of every document written (deleted ones included). */
async function apply(todos: TodoDb['todos'], ops: Op[]): Promise<string[]> {
  const ids: string[] = [];
  let next = 0;
  for (const step of ops) {
    if (step.kind === 'insert') {
      const docs: Todo[] = Array.from({ length: step.count }, () => {
        const n = next++;
        // Ids out of insertion order, so id order and write order differ.
        return { id: `t${String((n * 7919) % 10_007).padStart(5, '0')}-${n}`, title: `todo ${n}` };
      });
      await todos.bulkInsert(docs);
      ids.push(...docs.map((doc) => doc.id));
      continue;
    }
    const live = await todos.find().exec();
    if (live.length === 0) continue;
    const doc = live[step.pick % live.length]!;
    if (step.kind === 'update') await doc.incrementalPatch({ title: `${doc.title}!` });
    else await doc.remove();
  }
  return ids;
}

/** Every page from the start, as ids and checkpoints. */
async function pages(
  maxPages: number,
  read: (checkpoint: ChangeCheckpoint | undefined) => Promise<{ documents: object[]; checkpoint: unknown }>,
): Promise<Array<{ ids: string[]; checkpoint: unknown }>> {
  const out: Array<{ ids: string[]; checkpoint: unknown }> = [];
  let checkpoint: ChangeCheckpoint | undefined;
  for (;;) {
    // A feed that does not advance would page forever.
    if (out.length > maxPages) throw new Error(`still paging after ${maxPages} pages`);
    const page = await read(checkpoint);
    out.push({ ids: page.documents.map((doc) => (doc as Todo).id), checkpoint: page.checkpoint });
    if (page.documents.length === 0) return out;
    checkpoint = page.checkpoint as ChangeCheckpoint;
  }
}

describe('changedDocumentsSince (the scan of local writes)', () => {
  it('reads the same pages as RxDB getChangedDocumentsSince, deleted documents included', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(op, { minLength: 1, maxLength: 25 }),
        fc.integer({ min: 1, max: 12 }),
        async (ops, limit) => {
          db = await openDb(newDisk());
          const written = await apply(db.todos, ops);
          const storage = storageBelowWrapper(db.todos as never);
          const ours = await pages(written.length + 1, (checkpoint) =>
            changedDocumentsSince(storage as never, limit, checkpoint),
          );
          const rxdb = await pages(written.length + 1, (checkpoint) =>
            getChangedDocumentsSince(storage, limit, checkpoint as never),
          );
          expect(ours).toEqual(rxdb);
          // Each document once, at its latest write; tombstones too.
          const seen = ours.flatMap((page) => page.ids);
          expect(seen.length).toBe(written.length);
          expect(new Set(seen)).toEqual(new Set(written));
          await db.close();
          db = undefined;
        },
      ),
      { numRuns: 40 },
    );
  });

  it("uses a storage's own change feed where it has one", async () => {
    db = await openDb(newDisk());
    const written = await apply(db.todos, [{ kind: 'insert', count: 9 }]);
    const storage = storageBelowWrapper(db.todos as never);
    let calls = 0;
    // A storage instance with a native feed (as RxDB's remote storage has), answering as RxDB's helper would.
    const native = Object.create(storage, {
      getChangedDocumentsSince: {
        value: (limit: number, checkpoint: never) => {
          calls++;
          return getChangedDocumentsSince(storage, limit, checkpoint);
        },
      },
    });
    const read = await pages(written.length + 1, (checkpoint) =>
      changedDocumentsSince(native, 4, checkpoint),
    );
    expect(read.flatMap((page) => page.ids).sort()).toEqual([...written].sort());
    expect(calls).toBe(read.length);
  });
});
