// Bundled for Chromium by crypto.test.ts: the crypto API of @ferry/core as a page global, with bytes
// crossing the Node/page boundary as base64 strings.
import {
  deriveAccount,
  deriveSigningKeyPair,
  deriveSubkey,
  fromBase64,
  fromUtf8,
  isFerryError,
  MINIMUM_ACCOUNT_DESCRIPTOR,
  open,
  seal,
  sign,
  toBase64,
  utf8,
} from '@ferry/core';

async function envelopeKey(
  passphrase: string,
): Promise<{ accountId: string; key: Uint8Array; accountKey: Uint8Array }> {
  const account = await deriveAccount(passphrase, MINIMUM_ACCOUNT_DESCRIPTOR);
  return {
    accountId: account.accountId,
    key: deriveSubkey(account.key, 'envelope'),
    accountKey: account.key,
  };
}

const api = {
  /** The production parameters (64 MiB): proves hash-wasm's WebAssembly memory grows that far in a page. */
  async defaultAccountId(passphrase: string): Promise<string> {
    return (await deriveAccount(passphrase)).accountId;
  },
  async accountId(passphrase: string): Promise<string> {
    return (await envelopeKey(passphrase)).accountId;
  },
  async seal(passphrase: string, text: string, header: string): Promise<string> {
    const { key } = await envelopeKey(passphrase);
    return toBase64(seal(key, utf8(text), utf8(header)));
  },
  async open(passphrase: string, sealed: string, header: string): Promise<{ text?: string; error?: string }> {
    const { key } = await envelopeKey(passphrase);
    try {
      return { text: fromUtf8(open(key, fromBase64(sealed), utf8(header))) };
    } catch (error) {
      return { error: isFerryError(error) ? error.code : String(error) };
    }
  },
  async sign(passphrase: string, text: string): Promise<{ publicKey: string; signature: string }> {
    const { accountKey } = await envelopeKey(passphrase);
    const keys = deriveSigningKeyPair(accountKey, 'relaySigning');
    return { publicKey: toBase64(keys.publicKey), signature: toBase64(sign(keys.secretKey, utf8(text))) };
  },
};

export type BrowserCrypto = typeof api;
declare global {
  // Test callbacks passed to page.evaluate run in the page, where this global exists.
  var browserCrypto: BrowserCrypto;
}
globalThis.browserCrypto = api;
