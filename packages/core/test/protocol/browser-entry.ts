// Bundled for Chromium by envelope.browser.test.ts: core's envelope and message codec as a page global.
// Bytes cross the Node/page boundary as base64 and envelopes as JSON text; failures come back as
// { code, path } so the test sees exactly what a FerryError said in the page.
import {
  type DecodeOptions,
  decodeEnvelopeJson,
  decodePeerMessageJson,
  type EnvelopeAddress,
  encodeEnvelopeJson,
  fromBase64,
  isFerryError,
  openEnvelope,
  type PeerMessage,
  sealEnvelope,
} from '@ferry/core';

export type PageResult<T> = { ok: T } | { code: string; path?: string };

function attempt<T>(fn: () => T): PageResult<T> {
  try {
    return { ok: fn() };
  } catch (error) {
    if (!isFerryError(error)) return { code: `untyped: ${String(error)}` };
    return 'path' in error ? { code: error.code, path: String(error.path) } : { code: error.code };
  }
}

const api = {
  seal: (key: string, address: EnvelopeAddress, message: PeerMessage): string =>
    encodeEnvelopeJson(sealEnvelope(fromBase64(key), address, message)),
  open: (key: string, text: string): PageResult<PeerMessage> =>
    attempt(() => openEnvelope(fromBase64(key), decodeEnvelopeJson(text)).message),
  decode: (text: string, options?: DecodeOptions): PageResult<PeerMessage> =>
    attempt(() => decodePeerMessageJson(text, options)),
};

export type BrowserProtocol = typeof api;
declare global {
  // Test callbacks passed to page.evaluate run in the page, where this global exists.
  var browserProtocol: BrowserProtocol;
}
globalThis.browserProtocol = api;
