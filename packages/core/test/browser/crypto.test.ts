import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserHarness, openBrowser } from '../../../../testing/browser.js';
import { hasChromium } from '../../../../testing/services.js';
import { deriveAccount, MINIMUM_ACCOUNT_DESCRIPTOR } from '../../src/crypto/account.js';
import { open, seal } from '../../src/crypto/aead.js';
import { deriveSigningKeyPair, verify } from '../../src/crypto/sign.js';
import { deriveSubkey } from '../../src/crypto/subkeys.js';
import { fromBase64, fromUtf8, toBase64, utf8 } from '../../src/util/bytes.js';

// `browserCrypto` (declared global in crypto-entry.ts) exists only inside the page: use it in page.evaluate.

// The same passphrase on a "phone" (core bundled into headless Chromium) and a "laptop" (Node) must give
// the same account, and each must open what the other sealed: the isomorphic promise of core.
const PASSPHRASE = 'ferry browser interop passphrase';
const HEADER = JSON.stringify({ version: '1.0', clientId: 'browser', sessionId: 's1', type: 'DB_DIFF_PUSH' });

describe.skipIf(!(await hasChromium()))('core crypto in headless Chromium interoperates with Node', () => {
  let harness: BrowserHarness;
  let nodeKey: Uint8Array;
  let nodeAccount: Awaited<ReturnType<typeof deriveAccount>>;

  beforeAll(async () => {
    harness = await openBrowser({ entry: new URL('./crypto-entry.ts', import.meta.url) });
    nodeAccount = await deriveAccount(PASSPHRASE, MINIMUM_ACCOUNT_DESCRIPTOR);
    nodeKey = deriveSubkey(nodeAccount.key, 'envelope');
  });
  afterAll(() => harness?.close());

  it('derives the same accountId from the same passphrase', async () => {
    const accountId = await harness.page.evaluate((p) => browserCrypto.accountId(p), PASSPHRASE);
    expect(accountId).toBe(nodeAccount.accountId);
  });

  it('derives the same accountId with the default 64 MiB descriptor', async () => {
    const accountId = await harness.page.evaluate((p) => browserCrypto.defaultAccountId(p), PASSPHRASE);
    expect(accountId).toBe((await deriveAccount(PASSPHRASE)).accountId);
  });

  it('the browser seals a message that Node opens', async () => {
    const text = 'sealed in Chromium ✓';
    const sealed = await harness.page.evaluate(([p, t, h]) => browserCrypto.seal(p, t, h), [
      PASSPHRASE,
      text,
      HEADER,
    ] as const);
    expect(fromUtf8(open(nodeKey, fromBase64(sealed), utf8(HEADER)))).toBe(text);
    expect(() => open(nodeKey, fromBase64(sealed), utf8(HEADER.replace('browser', 'mallory')))).toThrow(
      expect.objectContaining({ code: 'DECRYPT_FAILED' }),
    );
  });

  it('Node seals a message that the browser opens, and the browser refuses a tampered one', async () => {
    const text = 'sealed in Node ✓';
    const sealed = seal(nodeKey, utf8(text), utf8(HEADER));
    const opened = await harness.page.evaluate(([p, s, h]) => browserCrypto.open(p, s, h), [
      PASSPHRASE,
      toBase64(sealed),
      HEADER,
    ] as const);
    expect(opened).toEqual({ text });
    sealed[sealed.length - 1]! ^= 1;
    const tampered = await harness.page.evaluate(([p, s, h]) => browserCrypto.open(p, s, h), [
      PASSPHRASE,
      toBase64(sealed),
      HEADER,
    ] as const);
    expect(tampered).toEqual({ error: 'DECRYPT_FAILED' });
  });

  it('a relay-signing signature made in the browser verifies in Node under the same derived key', async () => {
    const signed = await harness.page.evaluate(([p, t]) => browserCrypto.sign(p, t), [
      PASSPHRASE,
      'GET /pullDiff',
    ] as const);
    const keys = deriveSigningKeyPair(nodeAccount.key, 'relaySigning');
    expect(signed.publicKey).toBe(toBase64(keys.publicKey));
    expect(verify(keys.publicKey, utf8('GET /pullDiff'), fromBase64(signed.signature))).toBe(true);
  });
});
