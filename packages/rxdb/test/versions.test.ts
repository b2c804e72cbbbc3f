import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeStamp, HybridClock } from '../src/hlc.js';
import { ATTACHMENTS, REMOVED, resolveConcurrent, stampFields } from '../src/versions.js';
import type { Change } from '../src/wire.js';

// The per-field policy's join, checked without devices: versions made apart from one base meet in
// any order, and a merged tombstone may be stored and read back in between (the storage keeps no
// attachments of a deleted document, so what reads back has none). Every way must end alike.

const ID = 'id';
const BASE_STAMP = encodeStamp(1_000, 0, 'base');
const context = {
  primaryPath: ID,
  withAttachments: true,
  clock: new HybridClock('joiner'),
  vectorId: 'joiner~store',
  ownFloor: 0,
};

type Op =
  | { t: 'rename'; name: string }
  | { t: 'attach'; digest: string }
  | { t: 'detach' }
  | { t: 'delete' }
  | { t: 'revive'; name: string };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('rename' as const), name: fc.constantFrom('p', 'q', 'r') }),
  fc.record({ t: fc.constant('attach' as const), digest: fc.constantFrom('d1', 'd2') }),
  fc.constant({ t: 'detach' as const }),
  fc.constant({ t: 'delete' as const }),
  fc.record({ t: fc.constant('revive' as const), name: fc.constantFrom('p', 's') }),
);

/** What a device's content reads as: a deleted document's attachments are gone with it. */
const stored = (version: Change): Change => {
  if (!version.del || !version.doc || !(ATTACHMENTS in version.doc)) return version;
  const { [ATTACHMENTS]: _gone, ...rest } = version.doc;
  return { ...version, doc: rest };
};

const attachment = (digest: string) => ({ 'a.txt': { digest, length: 4, type: 'text/plain' } });

/** The base, with or without an attachment. */
function base(attached: boolean): Change {
  const doc: Record<string, unknown> = { [ID]: 'x', name: 'n0' };
  if (attached) doc[ATTACHMENTS] = attachment('d0');
  return {
    id: 'x',
    st: BASE_STAMP,
    vv: { base: 1 },
    del: false,
    doc,
    fs: stampFields(undefined, doc, false, BASE_STAMP, ID, true),
  };
}

/**
 * A device's local writes on top of `from`, at its own stamps (as CollectionSync stamps them), or
 * without field stamps (`unstamped`: a device still on 'lww', before the switch to per-field merging).
 */
function write(from: Change, device: string, ops: Op[], times: number[], unstamped = false): Change {
  let version = from;
  ops.forEach((op, i) => {
    const doc: Record<string, unknown> = { ...stored(version).doc };
    let deleted = version.del;
    if (op.t === 'rename' && !deleted) doc.name = op.name;
    if (op.t === 'attach' && !deleted) doc[ATTACHMENTS] = attachment(op.digest);
    if (op.t === 'detach') delete doc[ATTACHMENTS];
    if (op.t === 'delete') deleted = true;
    if (op.t === 'revive' && deleted) {
      deleted = false;
      doc.name = op.name;
      delete doc[ATTACHMENTS];
    }
    if (deleted) delete doc[ATTACHMENTS];
    const st = encodeStamp(times[i]!, 0, device);
    version = {
      id: 'x',
      st,
      vv: { ...version.vv, [device]: (version.vv[device] ?? 0) + 1 },
      del: deleted,
      doc,
      ...(unstamped ? {} : { fs: stampFields(version.fs, doc, deleted, st, ID, true) }),
    };
  });
  return version;
}

const join = async (a: Change, b: Change) =>
  (await resolveConcurrent({ merge: 'fields' }, a, b, context)).version;

/** What the app sees of a version, and the stamps that decide later merges. */
const outcome = (version: Change) => {
  const read = stored(version);
  return { del: read.del, doc: read.doc, fs: read.fs };
};

describe('the per-field join', () => {
  it('ends alike in every order, whether or not a merged tombstone was stored and read back between, and with versions made without field stamps', async () => {
    const deviceWrites = fc.array(opArb, { minLength: 1, maxLength: 3 });
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.tuple(deviceWrites, deviceWrites, deviceWrites),
        fc.uniqueArray(fc.integer({ min: 1_001, max: 1_100 }), { minLength: 9, maxLength: 9 }),
        fc.tuple(fc.boolean(), fc.boolean(), fc.boolean()),
        async (attached, [opsA, opsB, opsC], times, unstamped) => {
          const start = base(attached);
          const versions = [
            write(start, 'a', opsA, times.slice(0, 3).sort(), unstamped[0]),
            write(start, 'b', opsB, times.slice(3, 6).sort(), unstamped[1]),
            write(start, 'c', opsC, times.slice(6, 9).sort(), unstamped[2]),
          ];
          const ends = [];
          for (const [i, j, k] of [
            [0, 1, 2],
            [1, 2, 0],
            [2, 0, 1],
          ] as const) {
            const first = await join(versions[i]!, versions[j]!);
            ends.push(outcome(await join(first, versions[k]!)));
            ends.push(outcome(await join(stored(first), versions[k]!)));
            ends.push(outcome(await join(versions[k]!, stored(first))));
          }
          for (const end of ends) expect(end).toEqual(ends[0]);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('versions written without field stamps (under lww, before a switch to per-field merging) join field by field at their own stamps', async () => {
    const lwwVersion = (device: string, time: number, doc: Record<string, unknown>, del = false): Change => ({
      id: 'x',
      st: encodeStamp(time, 0, device),
      vv: { [device]: 1 },
      del,
      doc: { [ID]: 'x', ...doc },
    });
    const fromA = lwwVersion('a', 1_010, { name: 'by a', note: 'only a wrote a note' });
    const fromB = lwwVersion('b', 1_020, { name: 'by b' });
    // Before: the join held nothing but the primary key.
    for (const [x, y] of [
      [fromA, fromB],
      [fromB, fromA],
    ] as const) {
      expect(outcome(await join(x, y)).doc).toEqual({ [ID]: 'x', name: 'by b', note: 'only a wrote a note' });
    }
    // One stamped version (a rename on C after the switch) against one without: the later write of each field wins.
    const renamedOnC = write(base(false), 'c', [{ t: 'rename', name: 'by c' }], [1_015]);
    const merged = outcome(await join(fromA, renamedOnC));
    expect(merged.doc).toEqual({ [ID]: 'x', name: 'by c', note: 'only a wrote a note' });
    expect(outcome(await join(renamedOnC, fromA))).toEqual(merged);
    // A delete without stamps wins the document's existence by its stamp, as any write does.
    const deletedOnD = lwwVersion('d', 1_030, {}, true);
    expect(outcome(await join(fromB, deletedOnD)).del).toBe(true);
    expect(outcome(await join(deletedOnD, fromB)).del).toBe(true);
  });

  it('a delete removes the attachments, so a tombstone merged with a concurrent attachment lists none', async () => {
    const start = base(false);
    const attachedOnB = write(start, 'b', [{ t: 'attach', digest: 'd1' }], [1_010]);
    const deletedOnA = write(start, 'a', [{ t: 'delete' }], [1_020]);
    expect(deletedOnA.fs?.[ATTACHMENTS]).toEqual([deletedOnA.st, REMOVED]);
    const merged = await join(deletedOnA, attachedOnB);
    expect(merged.del).toBe(true);
    expect(merged.doc).not.toHaveProperty(ATTACHMENTS);
    // A later rename on C brings the document back, whole but without the deleted attachments.
    const renamedOnC = write(start, 'c', [{ t: 'rename', name: 'later' }], [1_030]);
    expect(outcome(await join(merged, renamedOnC)).doc).toEqual({ [ID]: 'x', name: 'later' });
  });
});
