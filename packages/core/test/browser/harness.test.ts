import { describe, expect, it } from 'vitest';
import { openBrowser } from '../../../../testing/browser.js';
import { hasChromium } from '../../../../testing/services.js';

describe.skipIf(!(await hasChromium()))('browser harness', () => {
  it('bundles an entry that imports @ferry/core, injects globals and serves extra routes', async () => {
    const harness = await openBrowser({
      entry: new URL('./harness-entry.ts', import.meta.url),
      globals: { injected: { greeting: 'hello' } },
      routes: { '/extra.txt': { body: 'extra route', type: 'text/plain' } },
    });
    try {
      expect(harness.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
      const probe = await harness.page.evaluate(() => (globalThis as Record<string, unknown>).harnessProbe);
      expect(probe).toEqual({ encoded: 'aGVsbG8=', extra: 'extra route' });
      const second = await harness.newPage();
      expect(await second.evaluate(() => (globalThis as Record<string, unknown>).harnessProbe)).toEqual(
        probe,
      );
    } finally {
      await harness.close();
    }
  });

  it('rejects with the page error when the entry throws while loading', async () => {
    await expect(openBrowser({ entry: new URL('./broken-entry.ts', import.meta.url) })).rejects.toThrow(
      /entry exploded on purpose/,
    );
  });

  it('rejects when the entry does not bundle', async () => {
    await expect(openBrowser({ entry: new URL('./no-such-entry.ts', import.meta.url) })).rejects.toThrow();
  });
});
