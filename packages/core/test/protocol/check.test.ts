import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { canGenerateCode } from '../../src/index.js';
import { decodeOutcomes } from './check-cases.js';

const run = promisify(execFile);
const fixture = fileURLToPath(new URL('./no-codegen.fixture.ts', import.meta.url));

describe('schema checks with and without code generation', () => {
  it('are compiled where code may be generated', () => {
    expect(canGenerateCode()).toBe(true);
  });

  const interpreted = async (args: string[]) => {
    const { stdout } = await run(process.execPath, args, {
      cwd: fileURLToPath(new URL('../../../..', import.meta.url)),
    });
    return JSON.parse(stdout) as { codeGeneration: boolean; functionsBuilt: number; outcomes: string[] };
  };

  it('give the same answers and reasons when code generation is refused (as under a strict CSP)', async () => {
    const refused = await interpreted([
      '--disallow-code-generation-from-strings',
      '--import',
      'tsx',
      fixture,
    ]);
    expect(refused.codeGeneration).toBe(false);
    expect(refused.functionsBuilt).toBe(1); // the probe, which the runtime refused
    const compiled = decodeOutcomes();
    // The sample covers acceptance and refusal of every kind, so agreement is not agreement on one answer.
    expect(compiled.filter((outcome) => outcome === 'ok').length).toBeGreaterThanOrEqual(150);
    expect(new Set(compiled.map((outcome) => outcome.split(':')[0]))).toEqual(
      new Set(['ok', 'SCHEMA_MISMATCH', 'UNKNOWN_OP']),
    );
    expect(refused.outcomes).toEqual(compiled);
  }, 60_000);

  it('are interpreted without even a probe after useInterpretedChecks(), with the same answers', async () => {
    const told = await interpreted(['--import', 'tsx', fixture, 'interpreted']);
    expect(told.codeGeneration).toBe(false);
    expect(told.functionsBuilt).toBe(0);
    expect(told.outcomes).toEqual(decodeOutcomes());
  }, 60_000);
});
