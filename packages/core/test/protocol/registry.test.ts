import { type Static, Type } from '@sinclair/typebox';
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  createPeerMessage,
  DB_OPS,
  defineOp,
  defineOps,
  getOp,
  hasOp,
  isFerryError,
  listOps,
  type OpData,
  PeerMessageSchema,
  RELAY_OPS,
  SchemaMismatchError,
  SESSION_OPS,
  validateOpData,
} from '../../src/index.js';
import type { PeerMessage } from '../../src/network/types.js';
import { PushDiffRequestSchema } from '../../src/relay/wire.js';

const push: OpData<'DB_DIFF_PUSH'> = {
  collection: 'todos',
  stream: 'stream-1',
  changes: [{ id: 'a', st: '0000000000001-0000-c1', vv: { c1: 1 }, del: false, doc: { title: 'x' } }],
  baseVersion: 'e1@0',
  newVersion: 'e1@1',
  more: false,
};

describe('operation registry', () => {
  it('defines every core operation once, on its lane', () => {
    const lanes = Object.fromEntries(listOps().map((op) => [op.name, op.lane]));
    for (const name of Object.keys(DB_OPS)) expect(lanes[name]).toBe('sync');
    for (const name of Object.keys(RELAY_OPS)) expect(lanes[name]).toBe('sync');
    for (const name of Object.keys(SESSION_OPS)) expect(lanes[name]).toBe('control');
    expect(Object.keys(lanes)).toEqual(
      expect.arrayContaining([
        'DB_SYNC_INIT',
        'DB_DIFF_PUSH',
        'DB_DIFF_ACK',
        'DB_DIFF_NACK',
        'DB_CONFLICT_RESOLVE',
        'DB_DIFF_PUSH_SERVER',
        'DB_DIFF_PULL_SERVER',
        'DB_DIFF_ACK_SERVER',
        'SESSION_PING',
        'SESSION_PONG',
        'SESSION_CLOSE',
        'SESSION_ERROR',
      ]),
    );
    for (const op of listOps()) expect(op.description.length, op.name).toBeGreaterThan(10);
  });

  it('re-uses the diff server body schemas for the relay operations', () => {
    expect(getOp('DB_DIFF_PUSH_SERVER').data).toBe(PushDiffRequestSchema);
  });

  it('looks operations up by name; an unknown name is UNKNOWN_OP', () => {
    expect(getOp('DB_DIFF_PUSH')).toBe(DB_OPS.DB_DIFF_PUSH);
    expect(hasOp('NOPE')).toBe(false);
    expect(() => getOp('NOPE')).toThrow(expect.objectContaining({ code: 'UNKNOWN_OP' }));
    expect(() => validateOpData('NOPE', {})).toThrow(expect.objectContaining({ code: 'UNKNOWN_OP' }));
  });

  it('validates data and names the JSON path of the first bad value', () => {
    expect(() => validateOpData('DB_DIFF_PUSH', push)).not.toThrow();
    const bad = { ...push, changes: [{ id: 7, st: '0000000000001-0000-c1', vv: {}, del: false }] };
    try {
      validateOpData('DB_DIFF_PUSH', bad);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(SchemaMismatchError);
      expect((error as SchemaMismatchError).path).toBe('/data/changes/0/id');
      expect((error as SchemaMismatchError).message).toContain('/data/changes/0/id');
    }
    expect(() => validateOpData('DB_SYNC_INIT', { collection: 'todos', stream: 's' })).toThrow(
      expect.objectContaining({ code: 'SCHEMA_MISMATCH', path: '/data/checkpoint' }),
    );
    expect(() =>
      validateOpData('DB_SYNC_INIT', { collection: 'todos', stream: 's', checkpoint: '', dbVersion: 'e1@3' }),
    ).not.toThrow();
  });

  // The vector and the field stamps are maps checked field by field (not TypeBox Records, whose
  // compiled check was half the cost of checking a push): each kind of bad value, and where it is named.
  it.each([
    ['a negative counter', { vv: { c1: -1 } }, '/data/changes/0/vv/c1'],
    ['a fractional counter', { vv: { c1: 1.5 } }, '/data/changes/0/vv/c1'],
    ['a counter as text', { vv: { c1: '1' } }, '/data/changes/0/vv/c1'],
    ['a vector that is an array', { vv: [1] }, '/data/changes/0/vv'],
    ['a field stamp that is not a pair', { fs: { title: ['s'] } }, '/data/changes/0/fs/title'],
    ['a field stamp of numbers', { fs: { title: [1, 2] } }, '/data/changes/0/fs/title/0'],
  ])('refuses a change with %s, naming it', (_, fields, path) => {
    const bad = { ...push, changes: [{ ...push.changes[0]!, ...fields }] };
    expect(() => validateOpData('DB_DIFF_PUSH', bad)).toThrow(
      expect.objectContaining({ code: 'SCHEMA_MISMATCH', path }),
    );
  });

  it('takes vectors of any writers and field stamps of any fields', () => {
    const change = push.changes[0]!;
    const vv = { c1: 0, 'device-2.epoch': 2 ** 53 - 1, '': 3 };
    const fs = { title: ['0000000000001-0000-c1', 'h1'], '': ['s', '-'] } as Record<string, [string, string]>;
    expect(() =>
      validateOpData('DB_DIFF_PUSH', { ...push, changes: [{ ...change, vv: {}, fs: {} }] }),
    ).not.toThrow();
    expect(() => validateOpData('DB_DIFF_PUSH', { ...push, changes: [{ ...change, vv, fs }] })).not.toThrow();
  });

  it('lets another module define its operations at import time, idempotently', () => {
    const schemas = { TEST_REGISTRY_HELLO: Type.Object({ n: Type.Integer() }, { description: 'hello' }) };
    const defs = defineOps('ai', schemas);
    expect(defs.TEST_REGISTRY_HELLO).toMatchObject({
      name: 'TEST_REGISTRY_HELLO',
      lane: 'ai',
      description: 'hello',
    });
    // Evaluating the same module twice (two bundles) returns the first definition.
    expect(defineOps('ai', schemas).TEST_REGISTRY_HELLO).toBe(defs.TEST_REGISTRY_HELLO);
    expect(() =>
      defineOp('TEST_REGISTRY_HELLO', { lane: 'sync', data: Type.Null(), description: 'x' }),
    ).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    expect(() => defineOp('lower_case', { lane: 'sync', data: Type.Null(), description: 'x' })).toThrow(
      expect.objectContaining({ code: 'BAD_ARGUMENT' }),
    );
  });

  it('builds checked messages with a timestamp and a fresh id', () => {
    const a = createPeerMessage('DB_DIFF_PUSH', push);
    const b = createPeerMessage('DB_DIFF_PUSH', push);
    expect(a.id).not.toBe(b.id);
    expect(a.timestamp).toBeGreaterThan(0);
    let caught: unknown;
    try {
      createPeerMessage('SESSION_CLOSE', { reason: 1 } as unknown as OpData<'SESSION_CLOSE'>);
    } catch (error) {
      caught = error;
    }
    expect(isFerryError(caught, 'SCHEMA_MISMATCH')).toBe(true);
  });

  it("keeps the decrypted-payload schema and the network's PeerMessage one shape", () => {
    // Checked by the type checker (npm run typecheck): the schema and the interface cannot drift apart.
    expectTypeOf<Static<typeof PeerMessageSchema>>().toEqualTypeOf<PeerMessage>();
    expect(Object.keys(PeerMessageSchema.properties).sort()).toEqual(['data', 'id', 'op', 'timestamp']);
  });
});
