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
 * Interpret schema checks from now on instead of compiling them, without asking the runtime. A page
 * whose Content-Security-Policy refuses `'unsafe-eval'` calls this right after importing Ferry:
 * then nothing tries to generate code, and the page reports no CSP violation for Ferry's probe.
 * Checks compile on their first use, so this holds for every check unless one was used before.
 */
export function useInterpretedChecks(): void {
  codeGeneration = false;
}

/**
 * A check of `schema`: TypeBox's compiled one where code may be generated (several times faster),
 * else TypeBox's interpreter over the same schema, which gives the same answers and reasons. Built
 * on first use, not when a module defines it (see useInterpretedChecks).
 */
export function compileCheck<T extends TSchema>(schema: T): SchemaCheck<T> {
  let built: SchemaCheck<T> | undefined;
  const check = (): SchemaCheck<T> =>
    (built ??= canGenerateCode()
      ? TypeCompiler.Compile(schema)
      : {
          Check: (value): value is Static<T> => Value.Check(schema, value),
          Errors: (value) => Value.Errors(schema, value),
        });
  return {
    Check: (value): value is Static<T> => check().Check(value),
    Errors: (value) => check().Errors(value),
  };
}
