// Writes the protocol's JSON Schemas (spec appendix A) to docs/schemas, from the TypeBox definitions.
// Usage: npx tsx scripts/export-schemas.ts   (packages/core/test/protocol/schemas-current.test.ts
// fails when the committed files differ from what this writes)
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { protocolJsonSchemas } from '../packages/core/src/index.js';
import './protocol-ops.js';

export const SCHEMAS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'schemas');

/** File name (relative to docs/schemas) -> exact file content. */
export function renderSchemaFiles(): Map<string, string> {
  return new Map(
    protocolJsonSchemas().map(({ file, schema }) => [file, `${JSON.stringify(schema, null, 2)}\n`]),
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  rmSync(SCHEMAS_DIR, { recursive: true, force: true });
  const files = renderSchemaFiles();
  for (const [file, text] of files) {
    mkdirSync(dirname(join(SCHEMAS_DIR, file)), { recursive: true });
    writeFileSync(join(SCHEMAS_DIR, file), text);
  }
  console.log(`wrote ${files.size} schemas to ${SCHEMAS_DIR}`);
}
