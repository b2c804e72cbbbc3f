import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderSchemaFiles, SCHEMAS_DIR } from '../../../../scripts/export-schemas.js';
import { listOps } from '../../src/index.js';

const FIX = 'run `npx tsx scripts/export-schemas.ts` and commit docs/schemas';

const committedFiles = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? committedFiles(join(dir, entry.name))
      : [relative(SCHEMAS_DIR, join(dir, entry.name)).split('\\').join('/')],
  );

describe('docs/schemas', () => {
  const expected = renderSchemaFiles();

  it('has one schema per operation of every package, plus the envelope, payload and signaling frames', () => {
    for (const op of listOps()) expect(expected.has(`ops/${op.name}.schema.json`), op.name).toBe(true);
    for (const name of [
      'AI_STREAM_INIT',
      'AI_STREAM_DATA',
      'AI_STREAM_END',
      'DB_DIFF_PUSH_SERVER',
      'SESSION_PING',
    ]) {
      expect(expected.has(`ops/${name}.schema.json`), name).toBe(true);
    }
    expect(expected.has('envelope.schema.json')).toBe(true);
    expect(expected.has('signaling/client-frame.schema.json')).toBe(true);
  });

  it('lists exactly the files the schemas produce', () => {
    expect(committedFiles(SCHEMAS_DIR).sort(), FIX).toEqual([...expected.keys()].sort());
  });

  it.each([...expected.keys()])('%s is current', (file) => {
    expect(readFileSync(join(SCHEMAS_DIR, file), 'utf8'), `${file} is stale: ${FIX}`).toBe(
      expected.get(file),
    );
  });
});
