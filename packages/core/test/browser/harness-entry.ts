// Bundled by the harness test: proves @ferry/core resolves in the browser bundle and globals arrive.
import { toBase64, utf8 } from '@ferry/core';

const injected = (globalThis as { injected?: { greeting: string } }).injected;
const response = await fetch('/extra.txt');
Object.assign(globalThis, {
  harnessProbe: {
    encoded: toBase64(utf8(injected?.greeting ?? 'no globals')),
    extra: await response.text(),
  },
});
