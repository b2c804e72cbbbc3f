import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserHarness, openBrowser } from '../../../../testing/browser.js';
import { hasChromium } from '../../../../testing/services.js';
import {
  createPeerMessage,
  decodeEnvelopeJson,
  type Envelope,
  encodeEnvelopeJson,
  fromBase64,
  openEnvelope,
  randomBytes,
  sealEnvelope,
  toBase64,
} from '../../src/index.js';

// `browserProtocol` (declared global in browser-entry.ts) exists only inside the page: use it in page.evaluate.

// Core bundled into headless Chromium must speak the same envelope as Node, and its validation must run
// there: compiled, since a page without a CSP allows `new Function` (the rxdb browser test runs a page
// under a strict CSP, where the checks are interpreted).
describe.skipIf(!(await hasChromium()))('protocol envelope and codec in headless Chromium', () => {
  let harness: BrowserHarness;
  const accountKey = randomBytes(32);
  const key = toBase64(accountKey);
  const address = { accountId: 'acct-tag', clientId: 'browser', sessionId: 's1' };
  const message = createPeerMessage('DB_DIFF_ACK', { collection: 'todos', stream: 's1', ackVersion: 'e1@3' });

  beforeAll(async () => {
    harness = await openBrowser({ entry: new URL('./browser-entry.ts', import.meta.url) });
  });
  afterAll(() => harness?.close());

  it('the page seals an envelope that Node opens', async () => {
    const text = await harness.page.evaluate(([k, a, m]) => browserProtocol.seal(k, a, m), [
      key,
      address,
      message,
    ] as const);
    const { header, message: opened } = openEnvelope(accountKey, decodeEnvelopeJson(text));
    expect(opened).toEqual(message);
    expect(header).toMatchObject({ ...address, type: 'DB_DIFF_ACK' });
  });

  it('Node seals an envelope that the page opens; a swapped header or flipped byte fails there', async () => {
    const envelope = sealEnvelope(accountKey, address, message);
    const openInPage = (value: Envelope) =>
      harness.page.evaluate(([k, t]) => browserProtocol.open(k, t), [
        key,
        encodeEnvelopeJson(value),
      ] as const);

    expect(await openInPage(envelope)).toEqual({ ok: message });
    expect(await openInPage({ ...envelope, clientId: 'mallory' })).toEqual({ code: 'DECRYPT_FAILED' });
    const sealed = fromBase64(envelope.payload);
    sealed[30]! ^= 1;
    expect(await openInPage({ ...envelope, payload: toBase64(sealed) })).toEqual({ code: 'DECRYPT_FAILED' });
  });

  it('validates in the page: compiled schema checks name the JSON path, decoders give typed errors', async () => {
    const bad = JSON.stringify({ ...message, data: { ...message.data, ackVersion: 3 } });
    const results = await harness.page.evaluate(
      ([b]) => [
        browserProtocol.decode(b),
        browserProtocol.decode('{"op":'),
        browserProtocol.decode(JSON.stringify({ op: 'NO_SUCH_OP', data: {}, timestamp: 1, id: 'x' })),
        browserProtocol.decode(b, { maxBytes: 10 }),
      ],
      [bad] as const,
    );
    expect(results).toEqual([
      { code: 'SCHEMA_MISMATCH', path: '/data/ackVersion' },
      { code: 'BAD_JSON' },
      { code: 'UNKNOWN_OP' },
      { code: 'TOO_LARGE' },
    ]);
  });
});
