import { type MemoryHub, type PeerMessage, SyncNackReasonSchema } from '@ferry/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Change, type DiffPush, decodeStamp } from '../src/index.js';
import { converge, type Device, MemoryRelayServer, startDevices, within } from './support.js';

// A device holding the account key but running broken or hostile code, whose messages all pass the
// message schema (anything else is refused before it is read: see sync.test). Its pushes say what
// they like: stamps of any text or far in the future, version vectors of any size, documents
// missing, renamed, of the wrong shape or carrying RxDB's own fields, attachments and per-field
// stamps out of nowhere, changes repeated, and versions that do not follow the checkpoint. Its other
// messages ask for streams and log positions that do not exist, acknowledge and refuse what was never
// sent, and resolve conflicts that never were; its relay diffs are altered as its pushes are.
// Whatever it sends, the receiving device must not crash or hang, must report what it refuses, and
// must sync new writes once the peer behaves.

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

/** A vector of made-up writers. */
const versionVector = fc.dictionary(
  fc.oneof(fc.constantFrom(...DEVICES), fc.string({ minLength: 1, maxLength: 12 })),
  counter,
  { maxKeys: 3 },
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

/** A log position of the receiver's (its epoch, when known) or of no one's, near or far. */
const version = fc.oneof(
  fc.constant(''),
  fc
    .tuple(
      fc.constantFrom('RECEIVER', 'forged', 'x'.repeat(64)),
      fc.constantFrom(0, 1, 3, 1e9, 999_999_999_999_999),
    )
    .map(([epoch, seq]) => `${epoch}@${seq}`),
);
const changeMutation = fc.record(
  {
    st: stamp,
    vv: versionVector,
    /** The change's own writers (the real devices' entries) all set to this counter. */
    writersAt: counter,
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
  /** Checkpoints the peer claims to hold in other devices' logs (the receiver, the sender, no one). */
  holds: fc.option(
    fc.dictionary(fc.constantFrom('deva', 'devb', 'devc', '__proto__'), version, { maxKeys: 3 }),
    { nil: undefined },
  ),
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
    if (m.vv !== undefined) mutated.vv = m.vv;
    const { writersAt } = m;
    if (writersAt !== undefined)
      mutated.vv = Object.fromEntries(Object.keys(mutated.vv).map((writer) => [writer, writersAt]));
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
  return { ...push, changes, ...gap, ...(how.holds ? { holds: how.holds } : {}) };
}

const stream = fc.constantFrom('OPEN', 's1', 'x'.repeat(512));
const collectionName = fc.constantFrom('todos', 'notes', 'z');

/** Sync messages other than pushes, each valid by the message schema. */
const otherMessage = fc.oneof(
  fc.record(
    {
      op: fc.constant('DB_SYNC_INIT'),
      collection: collectionName,
      stream,
      checkpoint: version,
      dbVersion: version,
      store: fc.constantFrom('deva~x', 'devb~y', 'z'),
      askBack: fc.boolean(),
      inherited: fc.boolean(),
      withData: fc.array(fc.constantFrom(...IDS), { maxLength: 2 }),
      policy: fc.constantFrom('lww', 'fields', 'handler'),
      policyVersion: fc.constantFrom('1', 'x'.repeat(64)),
    },
    { requiredKeys: ['op', 'collection', 'stream', 'checkpoint', 'dbVersion'] },
  ),
  fc.record(
    {
      op: fc.constant('DB_DIFF_ACK'),
      collection: collectionName,
      stream,
      ackVersion: version,
      resolvedConflicts: fc.array(fc.constantFrom(...IDS), { maxLength: 2 }),
    },
    { requiredKeys: ['op', 'collection', 'stream', 'ackVersion'] },
  ),
  fc.record(
    {
      op: fc.constant('DB_DIFF_NACK'),
      collection: collectionName,
      stream,
      baseVersion: version,
      reason: fc.constantFrom(...SyncNackReasonSchema.anyOf.map((reason) => reason.const)),
      message: fc.string({ maxLength: 20 }),
      ids: fc.array(fc.constantFrom(...IDS), { maxLength: 2 }),
    },
    { requiredKeys: ['op', 'collection', 'stream', 'baseVersion', 'reason', 'message'] },
  ),
  fc.record({
    op: fc.constant('DB_CONFLICT_RESOLVE'),
    collection: collectionName,
    changes: fc.array(changeMutation, { minLength: 1, maxLength: 2 }),
  }),
);

type OtherMessage = typeof otherMessage extends fc.Arbitrary<infer T> ? T : never;

interface Pair {
  hub: MemoryHub;
  relayServer: MemoryRelayServer;
  /** What becomes of each relay diff a leaves (as it is, until a test says otherwise). */
  relayed: { alter: (payload: Uint8Array) => Uint8Array };
}

/** Runs `body` on two fresh devices sharing a diff server, which go afterwards also when it fails. */
async function withPair(body: (pair: [Device, Device], context: Pair) => Promise<void>): Promise<void> {
  const relayServer = new MemoryRelayServer();
  const relayed = { alter: (payload: Uint8Array) => payload };
  const client = relayServer.client.bind(relayServer);
  relayServer.client = (clientId) => {
    const mailbox = client(clientId);
    return clientId === 'deva'
      ? { ...mailbox, push: (targets, payload) => mailbox.push(targets, relayed.alter(payload)) }
      : mailbox;
  };
  const { hub, devices } = await startDevices(2, { relayServer });
  try {
    await body(devices as [Device, Device], { hub, relayServer, relayed });
  } finally {
    // RxDB's open-core build allows 16 open collections per process, and shrinking runs many.
    await Promise.all(devices.filter((d) => d.online).map((d) => d.stop()));
  }
}

const RUNS = Number(process.env.FERRY_HOSTILE_RUNS ?? 25);
const REFUSED = ['SCHEMA_MISMATCH', 'REJECTED', 'STALE'];

/** Checks `run` on two fresh devices for each value `arbitrary` makes. */
const check = <T>(
  arbitrary: fc.Arbitrary<T>,
  run: (value: T, pair: [Device, Device], context: Pair) => Promise<void>,
) =>
  fc.assert(
    fc.asyncProperty(arbitrary, (value) => withPair((pair, context) => run(value, pair, context))),
    { numRuns: RUNS },
  );

const pushMutations = fc.array(pushMutation, { minLength: 1, maxLength: 4 });

describe('bad input: a peer that says what it likes', () => {
  it(
    'its pushes are applied or refused, never crash or hang the receiver, and once the peer behaves both settle and sync new writes',
    () => check(pushMutations, exchange),
    120_000,
  );

  it(
    'its requests, acknowledgements, refusals and conflict resolutions never crash or hang the receiver, and a new meeting syncs new writes',
    () => check(fc.array(otherMessage, { minLength: 1, maxLength: 6 }), tell),
    120_000,
  );

  it(
    'its relay diffs are applied or refused, never crash the receiver, leave its mailbox empty, and new writes sync once they meet',
    () => check(pushMutations, leave),
    120_000,
  );
});

async function exchange(mutations: PushMutation[], [a, b]: [Device, Device]): Promise<void> {
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
  expect(codes.filter((code) => !REFUSED.includes(code))).toEqual([]);
}

/**
 * a sends b `messages` (its own streams' ids and b's epoch filled in where a message names them),
 * between writes of both. What a says of itself (that it paused, runs another policy, lacks a
 * collection, asks for a stream it then ignores) b may believe until they next meet: b must stay
 * whole, report only refused input, stop when told, and once it meets a again (a restart) settle
 * and sync new writes both ways.
 */
async function tell(messages: OtherMessage[], [a, b]: [Device, Device]): Promise<void> {
  const codes: string[] = [];
  b.replication.error$.subscribe((error) => codes.push(error.code));
  // Learned from what a and b send: b's epoch (in its pushes' versions), the streams of each.
  let receiverEpoch = 'forged';
  const streams: string[] = [];
  a.network.on('message', (_from, message) => {
    const data = message.data as { newVersion?: string; stream?: string };
    if (message.op === 'DB_DIFF_PUSH' && data.newVersion) receiverEpoch = data.newVersion.split('@')[0]!;
    if (data.stream) streams.push(data.stream);
  });
  await a.db.todos.insert({ id: 't0', title: 'first' });
  await b.db.todos.insert({ id: 't1', title: 'second' });
  await converge([a, b]);
  const fill = (text: string) => text.replace('RECEIVER', receiverEpoch);
  for (const [i, message] of messages.entries()) {
    const { op, ...fields } = message;
    let data: Record<string, unknown> = { ...fields };
    for (const key of ['checkpoint', 'dbVersion', 'ackVersion', 'baseVersion'])
      if (typeof data[key] === 'string') data[key] = fill(data[key] as string);
    if (data.stream === 'OPEN') data.stream = streams.at(-1) ?? 's1';
    if (op === 'DB_CONFLICT_RESOLVE') {
      const template: Change = {
        id: 't0',
        st: a.replication.clock.now(),
        vv: { [receiverEpoch]: 1 },
        del: false,
        doc: { id: 't0', title: 'resolved' },
      };
      const resolutions = mutate(
        {
          collection: 'todos',
          stream: 's',
          changes: [template],
          baseVersion: '',
          newVersion: '',
          more: false,
        },
        { changes: message.changes, repeat: false, reverse: false, gap: false, holds: undefined },
      ).changes;
      data = { collection: message.collection, conflicts: [], clientResolution: resolutions };
    }
    await a.network.send('devb', { op, data, timestamp: Date.now(), id: `hostile-${i}` });
    if (i % 2 === 0) await a.db.todos.incrementalUpsert({ id: IDS[i % IDS.length]!, title: `from a ${i}` });
    else await b.db.todos.incrementalUpsert({ id: IDS[i % IDS.length]!, title: `from b ${i}` });
  }
  await new Promise((resolve) => setTimeout(resolve, 30));

  // b may now wait on a for good (a asked for a stream it then ignores, say), as for any peer that
  // stops answering; it must still stop when told. They meet again (b restarts): new writes go both ways.
  await within(5_000, b.stop(), () => `b did not stop after ${JSON.stringify(messages)}`);
  await b.start();
  b.replication.error$.subscribe((error) => codes.push(error.code));
  await a.db.todos.insert({ id: 'fresh-a', title: 'a again' });
  await b.db.todos.insert({ id: 'fresh-b', title: 'b again' });
  const settled = () => Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
  await within(20_000, settled(), () => `not in sync after a new meeting, after ${JSON.stringify(messages)}`);
  for (const device of [a, b]) {
    expect((await device.docs()).filter((doc) => String(doc.id).startsWith('fresh-'))).toEqual([
      { id: 'fresh-a', title: 'a again' },
      { id: 'fresh-b', title: 'b again' },
    ]);
  }
  expect(codes.filter((code) => !REFUSED.includes(code))).toEqual([]);
}

/**
 * While the two are apart, a leaves its writes in b's mailbox, each relay diff altered as a push
 * would be. b reads its mailbox: it applies or refuses each diff, reports what it refuses, and
 * acknowledges them all (a diff refused once is refused for good). Then they meet, and new writes
 * go both ways.
 */
async function leave(
  mutations: PushMutation[],
  [a, b]: [Device, Device],
  { hub, relayServer, relayed }: Pair,
): Promise<void> {
  const codes: string[] = [];
  b.replication.error$.subscribe((error) => codes.push(error.code));
  await a.db.todos.insert({ id: 't0', title: 'first' });
  await b.db.todos.insert({ id: 't1', title: 'second' });
  await converge([a, b]);
  hub.setLinked('deva', 'devb', false);
  let next = 0;
  relayed.alter = (payload) => {
    if (next >= mutations.length) return payload;
    const diff = JSON.parse(new TextDecoder().decode(payload)) as DiffPush;
    const altered = mutate(
      { ...diff, stream: '', baseVersion: '', newVersion: '', more: false },
      mutations[next++]!,
    );
    return new TextEncoder().encode(JSON.stringify({ ...diff, changes: altered.changes }));
  };
  for (const [i, id] of IDS.entries()) {
    if (i % 2 === 0) await a.db.todos.incrementalUpsert({ id, title: `from a ${i}` });
    else await (await a.db.todos.findOne(id).exec())?.incrementalRemove();
    await within(5_000, a.replication.awaitInSync(), () => 'a never left its write in the mailbox');
  }
  b.replication.reSync();
  await within(
    5_000,
    b.replication.awaitInSync(),
    () => `b never read its mailbox after ${JSON.stringify(mutations)}`,
  );
  expect(relayServer.waiting('devb')).toBe(0);

  hub.setLinked('deva', 'devb', true);
  await a.db.todos.insert({ id: 'fresh-a', title: 'a again' });
  await b.db.todos.insert({ id: 'fresh-b', title: 'b again' });
  const settled = () => Promise.all([a.replication.awaitInSync(), b.replication.awaitInSync()]);
  await within(20_000, settled(), () => `not in sync after they met, after ${JSON.stringify(mutations)}`);
  for (const device of [a, b]) {
    expect((await device.docs()).filter((doc) => String(doc.id).startsWith('fresh-'))).toEqual([
      { id: 'fresh-a', title: 'a again' },
      { id: 'fresh-b', title: 'b again' },
    ]);
  }
  expect(codes.filter((code) => !REFUSED.includes(code))).toEqual([]);
}
