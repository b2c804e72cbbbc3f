import type { Static, TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value, type ValueErrorIterator } from '@sinclair/typebox/value';

/** What Ferry asks of a schema check: a type guard, and the reasons a value fails it. */
export interface SchemaCheck<T extends TSchema = TSchema> {
  Check(value: unknown): value is Static<T>;
  Errors(value: unknown): ValueErrorIterator;
}

let codeGeneration: boolean | undefined;

/**
 * Whether this runtime lets code be generated from strings. A page whose Content-Security-Policy
 * lacks `'unsafe-eval'` does not (nor Node with `--disallow-code-generation-from-strings`). Asked
 * once, by trying: there is no other way to know, and under such a CSP the attempt is reported as
 * one violation.
 */
export function canGenerateCode(): boolean {
  if (codeGeneration === undefined) {
    try {
      codeGeneration = new Function('return true')() === true;
    } catch {
      codeGeneration = false;
    }
  }
  return codeGeneration;
}

/**
 * A check of `schema`: TypeBox's compiled one where code may be generated (several times faster),
 * else TypeBox's interpreter over the same schema, which gives the same answers and reasons.
 */
export function compileCheck<T extends TSchema>(schema: T): SchemaCheck<T> {
  if (canGenerateCode()) return TypeCompiler.Compile(schema);
  return {
    Check: (value): value is Static<T> => Value.Check(schema, value),
    Errors: (value) => Value.Errors(schema, value),
  };
}
