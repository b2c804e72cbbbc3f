import { openBrowser } from '../../testing/browser.js';
import { hasChromium } from '../../testing/services.js';
import { median, percentile, ratio, significant } from '../lib/measure.js';
import type { BenchReport } from '../lib/types.js';

// What a live write costs Ferry in a browser: the metadata commit that must be durable before the
// write is sent, against RxDB's own single-document insert, both on Dexie (IndexedDB) in Chromium.

const WRITES = 768;

declare const liveWrites: (writes: number) => Promise<{ insert: number[]; meta: number[] }>;

async function run(): Promise<BenchReport> {
  if (!(await hasChromium())) throw new Error('needs Chromium (apt-get install -y chromium)');
  const harness = await openBrowser({ entry: new URL('../browser/dexie-live-entry.ts', import.meta.url) });
  try {
    const { insert, meta } = await harness.page.evaluate((writes) => liveWrites(writes), WRITES);
    const sortedInsert = [...insert].sort((a, b) => a - b);
    const sortedMeta = [...meta].sort((a, b) => a - b);
    const mean = (values: number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;
    return {
      name: 'browser-meta',
      description: `Chromium, RxDB on Dexie (IndexedDB): ${WRITES} live single-document writes`,
      baseline: "RxDB's insert of the same document, just before",
      metrics: [
        {
          name: "Ferry's metadata commit per live write, p50",
          value: significant(median(meta)),
          unit: 'ms',
          baseline: significant(median(insert)),
          ratio: ratio(median(meta), median(insert)),
        },
        {
          name: "Ferry's metadata commit per live write, mean",
          value: significant(mean(meta)),
          unit: 'ms',
          baseline: significant(mean(insert)),
          ratio: ratio(mean(meta), mean(insert)),
        },
        {
          name: "Ferry's metadata commit per live write, p95",
          value: significant(percentile(sortedMeta, 95)),
          unit: 'ms',
          baseline: significant(percentile(sortedInsert, 95)),
          ratio: ratio(percentile(sortedMeta, 95), percentile(sortedInsert, 95)),
        },
      ],
      notes:
        'Each live write rewrites the tail metadata segment (up to 32 entries), in one IndexedDB transaction; ' +
        'it must be durable before the write is sent (a crash cannot reuse a log position a peer acknowledged).',
    };
  } finally {
    await harness.close();
  }
}

export default { name: 'browser-meta', run };
