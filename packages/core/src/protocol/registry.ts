import type { Static, TSchema } from '@sinclair/typebox';
import { Kind } from '@sinclair/typebox';
import { FerryError } from '../errors.js';
import type { Lane } from '../network/types.js';
import { compileCheck, type SchemaCheck } from './check.js';

/**
 * The operation registry: every protocol operation is defined once, as a TypeBox schema of its `data`,
 * with its lane and a description. The static types (`OpData<'DB_DIFF_PUSH'>`), the runtime validation
 * (compileCheck) and the exported JSON Schemas all come from that one definition.
 *
 * A package defines its operations in its own module at import time (`defineOps('ai', AI_SCHEMAS)`),
 * so core never depends on the packages that extend the protocol.
 */

/** Operation names: upper snake case, as in the spec (DB_DIFF_PUSH, AI_STREAM_DATA). */
export const OP_NAME_PATTERN = /^[A-Z][A-Z0-9_]{0,63}$/;

export interface OpDefinition<Name extends string = string, Data extends TSchema = TSchema> {
  readonly name: Name;
  readonly lane: Lane;
  readonly data: Data;
  readonly description: string;
}

/** What a module passes per operation; a bare schema takes its description from the schema. */
export type OpSpec = TSchema | { data: TSchema; description?: string };

type SchemaOf<Spec extends OpSpec> = Spec extends { data: infer Data extends TSchema }
  ? Data
  : Spec extends TSchema
    ? Spec
    : never;

export type OpDefinitions<Specs extends Record<string, OpSpec>> = {
  readonly [Name in keyof Specs & string]: OpDefinition<Name, SchemaOf<Specs[Name]>>;
};

/** Name -> static `data` type of a batch of definitions; modules merge it into `OpDataMap`. */
export type OpDataOf<Defs extends Record<string, OpDefinition>> = {
  [Name in keyof Defs]: Static<Defs[Name]['data']>;
};

/**
 * Op name -> static type of its `data`. Each module that defines operations augments this interface
 * (`declare module` on the registry), so `OpData<'DB_DIFF_PUSH'>` is derived from the schema, never
 * written twice.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled by declaration merging in each ops module
export interface OpDataMap {}
export type KnownOp = keyof OpDataMap & string;
export type OpData<Name extends KnownOp> = OpDataMap[Name];

/** A decrypted message whose `data` matches its operation's schema. */
export interface TypedPeerMessage<Name extends KnownOp = KnownOp> {
  op: Name;
  data: OpData<Name>;
  timestamp: number;
  id: string;
}

interface Entry {
  definition: OpDefinition;
  /** Compiled on first use: most processes only ever see a few operations. */
  check?: SchemaCheck;
}

const registry = new Map<string, Entry>();

const isSchema = (spec: OpSpec): spec is TSchema => Kind in spec;

/** Defines one operation. Defining a name twice with a different lane or schema is a bug: it throws BAD_ARGUMENT. */
export function defineOp<Name extends string, Data extends TSchema>(
  name: Name,
  spec: { lane: Lane; data: Data; description: string },
): OpDefinition<Name, Data> {
  if (!OP_NAME_PATTERN.test(name)) {
    throw new FerryError('BAD_ARGUMENT', `operation name ${JSON.stringify(name)} is not UPPER_SNAKE_CASE`);
  }
  const definition: OpDefinition<Name, Data> = Object.freeze({
    name,
    lane: spec.lane,
    data: spec.data,
    description: spec.description,
  });
  const existing = registry.get(name);
  if (existing) {
    // The same module evaluated twice (two bundles, hot reload) is harmless; a different lane or schema is not.
    if (sameDefinition(existing.definition, definition))
      return existing.definition as OpDefinition<Name, Data>;
    throw new FerryError('BAD_ARGUMENT', `operation ${name} is already defined differently`);
  }
  registry.set(name, { definition });
  return definition;
}

/** Defines several operations of one lane: `defineOps('ai', { AI_STREAM_DATA: StreamDataSchema, ... })`. */
export function defineOps<const Specs extends Record<string, OpSpec>>(
  lane: Lane,
  specs: Specs,
): OpDefinitions<Specs> {
  const out: Record<string, OpDefinition> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const data = isSchema(spec) ? spec : spec.data;
    const description = (isSchema(spec) ? undefined : spec.description) ?? data.description ?? '';
    out[name] = defineOp(name, { lane, data, description });
  }
  return out as OpDefinitions<Specs>;
}

/** Descriptions are documentation: a re-definition without one is still the same operation. */
function sameDefinition(a: OpDefinition, b: OpDefinition): boolean {
  return a.lane === b.lane && JSON.stringify(a.data) === JSON.stringify(b.data);
}

/** The definition of `name`, or FerryError('UNKNOWN_OP'). */
export function getOp(name: string): OpDefinition {
  const entry = registry.get(name);
  if (!entry) throw new FerryError('UNKNOWN_OP', `unknown operation ${JSON.stringify(name).slice(0, 80)}`);
  return entry.definition;
}

export const hasOp = (name: string): boolean => registry.has(name);

/** Every defined operation, in definition order. */
export const listOps = (): OpDefinition[] => [...registry.values()].map((entry) => entry.definition);

/**
 * Checks `data` against the schema of operation `op`. Unknown op: UNKNOWN_OP; mismatch: SCHEMA_MISMATCH
 * whose message names the JSON path of the first offending value.
 */
export function validateOpData<Name extends KnownOp>(op: Name, data: unknown): asserts data is OpData<Name>;
export function validateOpData(op: string, data: unknown): void;
export function validateOpData(op: string, data: unknown): void {
  const entry = registry.get(op);
  if (!entry) throw new FerryError('UNKNOWN_OP', `unknown operation ${JSON.stringify(op).slice(0, 80)}`);
  entry.check ??= compileCheck(entry.definition.data);
  if (entry.check.Check(data)) return;
  const first = entry.check.Errors(data).First();
  throw new SchemaMismatchError(`/data${first?.path ?? ''}`, `${op}: ${first?.message ?? 'does not match'}`);
}

/** SCHEMA_MISMATCH with the JSON Pointer of the first offending value, relative to the message. */
export class SchemaMismatchError extends FerryError {
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super('SCHEMA_MISMATCH', `${reason} at ${path || '/'}`);
  }
}
