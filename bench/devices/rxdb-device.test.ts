import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Peer, type PeerConfig } from './rxdb-device.js';

// The rxdb bench's steps that need no network, at a small scale: if the protocol or the replication
// API moves on without the bench's scripted peer, this fails (a refused push, a hang) instead of the
// next `npm run bench` reporting nonsense.

const config = (clientId: string): PeerConfig => ({
  system: 'ferry',
  clientId,
  signalingUrl: '',
  secret: '',
  batchSize: 500,
  compress: true,
});

describe('rxdb bench device', () => {
  it("records a sending Ferry's pushes, replays them into a receiving one, and times both RxDB alone and the replay twice", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-device-'));
    const file = join(dir, 'pushes.json');
    const source = new Peer();
    const sink = new Peer();
    try {
      await source.open(config('devtest-source'));
      const sizes = await source.record(600, file);
      // The pushes' documents hold varied text: they deflate, but nowhere near the 14x of one repeated sentence.
      const ratio = sizes.jsonBytes / sizes.deflatedBytes;
      expect(ratio).toBeGreaterThan(2);
      expect(ratio).toBeLessThan(6);
      const pushes = JSON.parse(readFileSync(file, 'utf8')) as Array<{
        op: string;
        data: { changes: unknown[]; more: boolean };
      }>;
      // Batches of 500: two pushes, the last one saying nothing more follows.
      expect(pushes.map((push) => [push.op, push.data.changes.length, push.data.more])).toEqual([
        ['DB_DIFF_PUSH', 500, true],
        ['DB_DIFF_PUSH', 100, false],
      ]);

      await sink.open(config('devtest-sink'));
      // Each pass resolves only once all 600 documents' change events fired and both pushes were acked.
      const replay = await sink.replay(600, file, 3);
      const floor = await sink.floor(600);
      for (const timing of [replay, floor]) {
        expect(timing.coldMs).toBeGreaterThan(0);
        expect(timing.warmMs).toBeGreaterThan(0);
      }
    } finally {
      await source.close();
      await sink.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
