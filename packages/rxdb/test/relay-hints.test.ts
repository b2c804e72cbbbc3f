import { randomFillSync as randomFill } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type DiffRelay,
  type FerryError,
  MemoryHub,
  RelayClient,
  randomBytes,
  SignalingClient,
} from '@ferry/core';
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

describe('a diff server with a smaller maxDiffBytes than relayBytes allows', () => {
  it('bad input: a diff it refuses as too large goes again in halves, a document too large alone is reported (TOO_LARGE) and skipped; nothing is retried for ever', async () => {
    const smallDir = mkdtempSync(join(tmpdir(), 'ferry-rxdb-small-'));
    const small = await startFerryServer({
      port: 0,
      dataDir: smallDir,
      logger: pino({ level: 'silent' }),
      relayLimits: { maxDiffBytes: 48 * 1024 },
    });
    const accountKey = randomBytes(32);
    const relayOf = (id: string) => new RelayClient({ url: small.url, accountKey, clientId: id });
    // Random text does not compress: each document is ~8 KiB on the wire, whatever the relay client does.
    const text = (bytes: number) => randomFill(Buffer.alloc(bytes)).toString('base64');
    const writer = { db: await openDb(newDisk()), network: new MemoryHub().join('deva') };
    const reader = { db: await openDb(newDisk()), network: new MemoryHub().join('devb') };
    try {
      const readerRelay = relayOf('devb');
      await readerRelay.register(); // the diff server takes diffs only for registered devices
      const a = await replicateFerry({
        collections: { todos: writer.db.todos },
        network: writer.network,
        relay: relayOf('deva'),
        knownDevices: ['devb'],
        retryDelayMs: 20,
      });
      const errors: FerryError[] = [];
      a.error$.subscribe((error) => errors.push(error));
      const docs = Array.from({ length: 20 }, (_, i) => ({ id: `d${i}`, title: 'x', note: text(6 * 1024) }));
      const inserted = await writer.db.todos.bulkInsert([
        ...docs,
        { id: 'huge', title: 'x', note: text(64 * 1024) },
      ]);
      expect(inserted.error).toEqual([]);
      // 20 small ones make one group under relayBytes (768 KiB), ~160 KiB for the server: refused.
      await a.awaitInSync();
      expect(errors.map((e) => e.code)).toEqual(['TOO_LARGE']);
      expect(errors[0]!.message).toContain('todos/huge is too large for the relay');
      expect(a.pendingRelay$.value).toBe(0);
      await a.cancel();

      const b = await replicateFerry({
        collections: { todos: reader.db.todos },
        network: reader.network,
        relay: readerRelay,
      });
      await b.awaitInSync();
      const received = (await reader.db.todos.find().exec()).map((doc) => doc.id).sort();
      expect(received).toEqual(docs.map((doc) => doc.id).sort());
      await b.cancel();
    } finally {
      for (const device of [writer, reader]) {
        await device.network.close();
        await device.db.close();
      }
      await small.close();
      rmSync(smallDir, { recursive: true, force: true });
    }
  }, 30_000);
});
