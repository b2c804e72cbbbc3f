import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DiffRelay, MemoryHub, RelayClient, randomBytes, SignalingClient } from '@ferry/core';
import { type FerryServer, startFerryServer } from '@ferry/server';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { replicateFerry } from '../src/index.js';
import { MemoryRelayServer, newDisk, openDb } from './support.js';

// Two devices online at the same time that cannot reach each other directly (no peer link): a write
// on one reaches the other through the diff server, pulled because the signaling socket said so
// (without the hint, the mailbox is read only at start and when a peer connects).

let server: FerryServer;
let dataDir: string;
beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ferry-rxdb-hints-'));
  server = await startFerryServer({ port: 0, dataDir, logger: pino({ level: 'silent' }) });
});
afterAll(async () => {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('relay hints', () => {
  it('a device that cannot reach its peer pulls at once when the signaling socket says diffs wait', async () => {
    const accountKey = randomBytes(32);
    const hub = new MemoryHub();
    const devices = await Promise.all(
      ['deva', 'devb'].map(async (id) => {
        const db = await openDb(newDisk());
        const signaling = new SignalingClient({
          urls: [server.signalingUrl],
          accountKey,
          clientId: id,
          WebSocket,
        });
        const watching = new Promise((resolve) => signaling.once('watching', resolve));
        const replication = await replicateFerry({
          collections: { todos: db.todos },
          network: hub.join(id),
          relay: new RelayClient({ url: server.url, accountKey, clientId: id }),
          relayHints: signaling,
          knownDevices: ['deva', 'devb'],
          retryDelayMs: 20,
        });
        await watching;
        return { db, signaling, replication };
      }),
    );
    const [a, b] = devices as [(typeof devices)[0], (typeof devices)[0]];
    try {
      hub.setLinked('deva', 'devb', false);
      await Promise.all(devices.map((d) => d.replication.awaitInSync()));
      // b's pull at start may still be in flight (it would fetch a's diff without any hint): let it end.
      await b.replication.pullRelay();
      let pulls = 0;
      const arrived = new Promise<void>((resolve) => {
        const subscription = b.db.todos.findOne('hinted').$.subscribe((doc) => {
          if (doc) {
            subscription.unsubscribe();
            resolve();
          }
        });
      });
      b.signaling.on('mailbox', () => pulls++);
      await a.db.todos.insert({ id: 'hinted', title: 'through the mailbox, on a hint' });
      await arrived;
      expect(pulls).toBeGreaterThan(0);
      expect((await b.db.todos.findOne('hinted').exec())?.title).toBe('through the mailbox, on a hint');
    } finally {
      for (const { db, signaling, replication } of devices) {
        await replication.cancel();
        await signaling.close();
        await db.close();
      }
    }
  }, 30_000);
});

describe('pullRelay', () => {
  it('a call made while a pull is in flight gets one more pull after it (calls in between share it)', async () => {
    const relayServer = new MemoryRelayServer();
    const inner = relayServer.client('devb');
    let pulls = 0;
    const relay: DiffRelay = {
      ...inner,
      pull: (options) => {
        pulls++;
        return inner.pull(options);
      },
    };
    const db = await openDb(newDisk());
    const network = new MemoryHub().join('devb');
    const replication = await replicateFerry({ collections: { todos: db.todos }, network, relay });
    await replication.awaitInSync();
    await replication.pullRelay();
    pulls = 0;
    await Promise.all([replication.pullRelay(), replication.pullRelay(), replication.pullRelay()]);
    expect(pulls).toBe(2);
    await replication.cancel();
    await network.close();
    await db.close();
  });
});
