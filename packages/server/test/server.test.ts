import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromUtf8, RelayClient, randomBytes, utf8 } from '@ferry/core';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { hasPostgres, TEST_DATABASE_URL } from '../../../testing/services.js';
import { type FerryServer, startFerryServer } from '../src/index.js';
import { dropSchema, uniqueSchema } from './relay/helpers.js';

const postgres = await hasPostgres();
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function start(options: Parameters<typeof startFerryServer>[0]): Promise<FerryServer> {
  const server = await startFerryServer({ port: 0, logger: pino({ level: 'silent' }), ...options });
  cleanups.push(() => server.close());
  return server;
}

async function roundTrip(server: FerryServer): Promise<void> {
  const key = randomBytes(32);
  const a = new RelayClient({ url: server.url, accountKey: key, clientId: 'a' });
  const b = new RelayClient({ url: server.url, accountKey: key, clientId: 'b' });
  await b.register();
  await a.push(['b'], utf8('through startFerryServer'));
  expect((await b.pull()).map((d) => fromUtf8(d.payload))).toEqual(['through startFerryServer']);
}

describe('startFerryServer', () => {
  it('serves the diff server and the signaling WebSocket on one port (SQLite under dataDir)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'ferry-server-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const server = await start({
      dataDir,
      configure: (app) => {
        app.get('/hello', async () => ({ from: 'configure' }));
      },
    });
    expect(await (await fetch(`${server.url}/hello`)).json()).toEqual({ from: 'configure' });
    expect(new URL(server.signalingUrl).port).toBe(String(server.port));
    expect(await (await fetch(`${server.url}/health`)).json()).toEqual({ status: 'ok', storage: 'sqlite' });
    await roundTrip(server);

    const socket = new WebSocket(server.signalingUrl);
    const [hello] = (await once(socket, 'message')) as [Buffer];
    expect(JSON.parse(hello.toString())).toMatchObject({ type: 'hello' });
    const closed = once(socket, 'close');
    await server.close();
    await closed;
    await expect(fetch(`${server.url}/health`)).rejects.toThrow();
  });

  it('refuses to start without a place to store diffs', async () => {
    await expect(startFerryServer({ port: 0, databaseUrl: '' })).rejects.toMatchObject({
      code: 'SCHEMA_MISMATCH',
    });
    await expect(startFerryServer({ port: 0, databaseUrl: 'mysql://x' })).rejects.toMatchObject({
      code: 'SCHEMA_MISMATCH',
    });
  });

  it.skipIf(!postgres)('switches to PostgreSQL with a database URL', async () => {
    const schema = uniqueSchema();
    cleanups.push(() => dropSchema(schema));
    const server = await start({ databaseUrl: TEST_DATABASE_URL, databaseSchema: schema });
    expect(await (await fetch(`${server.url}/health`)).json()).toEqual({ status: 'ok', storage: 'postgres' });
    await roundTrip(server);
  });
});
