import type { PeerMessage } from '@ferry/core';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { type Change, type DiffPush, decodeStamp } from '../src/index.js';
import { converge, type Device, startDevices, within } from './support.js';

// A device holding the account key but running broken or hostile code: every push it sends passes
// the message schema (anything else is refused before it is read: see sync.test) but says what it
// likes: stamps of any text or far in the future, version vectors of any size, documents missing,
// renamed, of the wrong shape or carrying RxDB's own fields, attachments and per-field stamps out of
// nowhere, changes repeated, and versions that do not follow the checkpoint. Whatever it sends, the
// receiving device must not crash or hang, must report what it refuses, and once the peer behaves
// again the two must settle and sync what is written next.

const IDS = ['t0', 't1', 't2', 't3'];
const DEVICES = ['deva', 'devb', 'devz'];

/** A stamp in the clock's own format, possibly far ahead (up to the largest time it can hold). */
const wellFormedStamp = fc
  .tuple(
    fc.constantFrom('0000000000', 'lz0000000a', 'zzzzzzzzzz'),
    fc.constantFrom('00000', '00001', 'zzzzz'),
    fc.constantFrom(...DEVICES),
  )
  .map(([time, counter, client]) => `${time}.${counter}.${client}`);

const stamp = fc.oneof(wellFormedStamp, fc.string({ minLength: 17, maxLength: 40, unit: 'binary' }));

const counter = fc.oneof(fc.nat(5), fc.constantFrom(2 ** 31, Number.MAX_SAFE_INTEGER, 1e300));

/** A vector of made-up writers, or the change's own writers (the real devices' entries) set to `counter`. */
const versionVector = fc.oneof(
  fc.dictionary(fc.oneof(fc.constantFrom(...DEVICES), fc.string({ minLength: 1, maxLength: 12 })), counter, {
    maxKeys: 3,
  }),
  counter.map((value) => ({ ownWritersAt: value })),
);

/** What the document of a change becomes. */
const docMutation = fc.constantFrom(
  'missing',
  'empty',
  'other id',
  'title a number',
  'unknown field',
  'rxdb fields',
  '__proto__ key',
  'array',
);

const changeMutation = fc.record(
  {
    st: stamp,
    vv: versionVector,
    del: fc.boolean(),
    doc: docMutation,
    id: fc.constantFrom(...IDS, 'x'.repeat(512)),
    fs: fc.dictionary(fc.string({ maxLength: 5 }), fc.tuple(fc.string(), fc.string()), { maxKeys: 2 }),
    att: fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 8 }), { maxKeys: 2 }),
  },
  { requiredKeys: [] },
);

const pushMutation = fc.record({
  changes: fc.array(changeMutation, { maxLength: 3 }),
  repeat: fc.boolean(),
  reverse: fc.boolean(),
  /** The push names versions that do not follow the checkpoint (the receiver nacks and asks again). */
  gap: fc.boolean(),
});

function mutatedDoc(change: Change, how: string): Record<string, unknown> | undefined {
  const doc = { ...(change.doc ?? { id: change.id, title: 'revived' }) };
  switch (how) {
    case 'missing':
      return undefined;
    case 'empty':
      return {};
    case 'other id':
      return { ...doc, id: IDS.find((id) => id !== change.id) };
    case 'title a number':
      return { ...doc, title: 42 };
    case 'unknown field':
      return { ...doc, colour: 'red' };
    case 'rxdb fields':
      return { ...doc, _deleted: true, _rev: '1-forged', _meta: { lwt: -1 }, _attachments: { a: 'b' } };
    case '__proto__ key':
      return JSON.parse(`{"id":${JSON.stringify(change.id)},"title":"p","__proto__":{"done":true}}`);
    default:
      return [doc] as unknown as Record<string, unknown>;
  }
}

type PushMutation = typeof pushMutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(push: DiffPush, how: PushMutation): DiffPush {
  let changes = push.changes.map((change, i) => {
    const m = how.changes[i % Math.max(how.changes.length, 1)];
    if (!m) return change;
    const mutated: Change = { ...change };
    if (m.st !== undefined) mutated.st = m.st;
    if (m.vv !== undefined) {
      const { ownWritersAt } = m.vv as { ownWritersAt?: number };
      mutated.vv =
        ownWritersAt === undefined
          ? m.vv
          : Object.fromEntries(Object.keys(change.vv).map((writer) => [writer, ownWritersAt]));
    }
    if (m.del !== undefined) mutated.del = m.del;
    if (m.id !== undefined) mutated.id = m.id;
    if (m.fs !== undefined) mutated.fs = m.fs;
    if (m.att !== undefined) mutated.att = m.att;
    if (m.doc !== undefined) {
      const doc = mutatedDoc(change, m.doc);
      if (doc === undefined) delete mutated.doc;
      else mutated.doc = doc;
    }
    return mutated;
  });
  if (how.repeat) changes = [...changes, ...changes];
  if (how.reverse) changes = changes.reverse();
  const gap = how.gap ? { baseVersion: 'forged@5', newVersion: 'forged@9' } : {};
  return { ...push, changes, ...gap };
}

const started: Device[] = [];
afterEach(async () => {
  await Promise.all(
    started
      .splice(0)
      .filter((d) => d.online)
      .map((d) => d.stop()),
  );
});

describe('bad input: pushes of a peer that says what it likes', () => {
  it('are applied or refused, never crash or hang the receiver, and once the peer behaves both settle and sync new writes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(pushMutation, { minLength: 1, maxLength: 4 }), async (mutations) => {
        const { devices } = await startDevices(2);
        started.push(...devices);
        try {
          await exchange(devices as [Device, Device], mutations);
        } finally {
          // Every run's devices go, also those of a failing one (RxDB's open-core build allows 16
          // open collections per process, and shrinking runs many).
          await Promise.all(devices.filter((d) => d.online).map((d) => d.stop()));
        }
      }),
      { numRuns: Number(process.env.FERRY_HOSTILE_RUNS ?? 25) },
    );
  }, 120_000);
});

async function exchange([a, b]: [Device, Device], mutations: PushMutation[]): Promise<void> {
  const codes: string[] = [];
  b.replication.error$.subscribe((error) => codes.push(error.code));
  await a.db.todos.insert({ id: 't0', title: 'first' });
  await b.db.todos.insert({ id: 't1', title: 'second' });
  await converge([a, b]);

  // From now on a's pushes are altered on their way out, one mutation after another.
  let next = 0;
  const send = a.network.send.bind(a.network);
  let hostile = true;
  a.network.send = (peer: string, message: PeerMessage) =>
    send(
      peer,
      hostile && message.op === 'DB_DIFF_PUSH' && next < mutations.length
        ? { ...message, data: mutate(message.data as DiffPush, mutations[next++]!) }
        : message,
    );
  // Incremental writes, as an app's must be while a replication writes too (what b makes of the
  // altered pushes comes back to a).
  for (const [i, id] of IDS.entries()) {
    if (i % 2 === 0) await a.db.todos.incrementalUpsert({ id, title: `from a ${i}` });
    else await (await a.db.todos.findOne(id).exec())?.incrementalRemove();
  }
  await within(5_000, a.replication.collection('todos')!.idle(), () => 'a never settled its writes');
  await new Promise((resolve) => setTimeout(resolve, 30));

  // The peer behaves again. Versions it forged under its own writes can leave the two apart (the
  // receiver cannot tell them from real ones, and sends nothing back to where it came from), but
  // both still settle, and new documents reach each other both ways.
  hostile = false;
  await a.db.todos.insert({ id: 'fresh-a', title: 'a again' });
  await b.db.todos.insert({ id: 'fresh-b', title: 'b again' });
  const settled = () => Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
  await within(20_000, settled(), () => `not in sync after ${JSON.stringify(mutations)}`);
  // What b kept of it loads again: b restarts, and both settle again.
  await b.stop();
  await b.start();
  b.replication.error$.subscribe((error) => codes.push(error.code));
  await within(20_000, settled(), () => `not in sync after a restart, after ${JSON.stringify(mutations)}`);
  for (const device of [a, b]) {
    const held = await device.docs();
    expect(held.filter((doc) => String(doc.id).startsWith('fresh-'))).toEqual([
      { id: 'fresh-a', title: 'a again' },
      { id: 'fresh-b', title: 'b again' },
    ]);
  }
  // Whatever stamps b saw, its own still fit the clock's format (and so sort after its earlier ones).
  expect(decodeStamp(b.replication.collection('todos')!.meta('fresh-b')!.st)).toMatchObject({
    clientId: 'devb',
  });
  // What b refused it said, by the codes of refused input.
  expect(codes.filter((code) => !['SCHEMA_MISMATCH', 'REJECTED', 'STALE'].includes(code))).toEqual([]);
}
