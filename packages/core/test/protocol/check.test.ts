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

  it('give the same answers and reasons when code generation is refused (as under a strict CSP)', async () => {
    const { stdout } = await run(
      process.execPath,
      ['--disallow-code-generation-from-strings', '--import', 'tsx', fixture],
      {
        cwd: fileURLToPath(new URL('../../../..', import.meta.url)),
      },
    );
    const interpreted = JSON.parse(stdout) as { codeGeneration: boolean; outcomes: string[] };
    expect(interpreted.codeGeneration).toBe(false);
    const compiled = decodeOutcomes();
    // The sample covers acceptance and refusal of every kind, so agreement is not agreement on one answer.
    expect(compiled.filter((outcome) => outcome === 'ok').length).toBeGreaterThanOrEqual(150);
    expect(new Set(compiled.map((outcome) => outcome.split(':')[0]))).toEqual(
      new Set(['ok', 'SCHEMA_MISMATCH', 'UNKNOWN_OP']),
    );
    expect(interpreted.outcomes).toEqual(compiled);
  }, 60_000);
});
