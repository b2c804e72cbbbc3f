import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ENDPOINTS, PROTOCOL_DOC, renderProtocolDoc } from '../../../../scripts/generate-protocol-doc.js';
import { listOps, RELAY_PATHS } from '../../src/index.js';

describe('docs/PROTOCOL.md', () => {
  const doc = renderProtocolDoc();

  it('documents every operation and every diff-server route', () => {
    for (const op of listOps()) expect(doc, op.name).toContain(`#### \`${op.name}\``);
    expect(ENDPOINTS.map((endpoint) => endpoint.path).sort()).toEqual(Object.values(RELAY_PATHS).sort());
    expect(doc).toContain('Noise_NNpsk0');
  });

  it('is current', () => {
    expect(
      readFileSync(PROTOCOL_DOC, 'utf8'),
      'run `npx tsx scripts/generate-protocol-doc.ts` and commit',
    ).toBe(doc);
  });
});
