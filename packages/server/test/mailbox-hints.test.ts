import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type MailboxWatch,
  RelayClient,
  randomBytes,
  type SignalingServerError,
  sign,
  signingKeyFromSeed,
  toBase64,
  utf8,
} from '@ferry/core';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { hasPostgres, TEST_DATABASE_URL } from '../../../testing/services.js';
import { type FerryServer, startFerryServer } from '../src/index.js';
import { dropSchema, uniqueSchema } from './relay/helpers.js';
import { Cleanup, next, startClient, startServer } from './signaling/helpers.js';

// Mailbox hints: a device proves with its diff-server key which mailbox it owns over its signaling
// socket, and hears `mailbox` when diffs are stored for it. Every refusal is a non-fatal error frame:
// signaling itself goes on.

const postgres = await hasPostgres();
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function ferryServer(): Promise<FerryServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-hints-'));
  cleanup.add(() => rmSync(dataDir, { recursive: true, force: true }), undefined);
  const server = await startFerryServer({ port: 0, dataDir, logger: pino({ level: 'silent' }) });
  return cleanup.add(() => server.close(), server);
}

async function device(server: FerryServer, accountKey: Uint8Array, clientId: string) {
  const relay = new RelayClient({ url: server.url, accountKey, clientId });
  const signaling = startClient(cleanup, { urls: [server.signalingUrl], accountKey, clientId });
  await next(signaling, 'connected');
  return { relay, signaling };
}

const refusal = (client: ReturnType<typeof startClient>) =>
  next(client, 'error', (error) => 'serverCode' in error).then(([error]) => error as SignalingServerError);

describe('mailbox hints over the signaling socket', () => {
  it('tells a watching device when diffs are stored for it, and only it', async () => {
    const server = await ferryServer();
    const accountKey = randomBytes(32);
    const a = await device(server, accountKey, 'a');
    const b = await device(server, accountKey, 'b');
    const c = await device(server, accountKey, 'c');
    const [bWatch, cWatch] = await Promise.all([b.relay.mailboxWatch(), c.relay.mailboxWatch()]);
    const watching = Promise.all([next(b.signaling, 'watching'), next(c.signaling, 'watching')]);
    b.signaling.watchMailbox(bWatch);
    c.signaling.watchMailbox(cWatch);
    await watching;
    let cHints = 0;
    c.signaling.on('mailbox', () => cHints++);

    const hint = next(b.signaling, 'mailbox');
    await a.relay.push(['b'], utf8('for b only'));
    expect((await hint)[0]).toEqual({ accountId: a.relay.accountId, clientId: 'b' });
    expect((await b.relay.pull()).length).toBe(1);
    expect(cHints).toBe(0);
  });

  it('watches again after the signaling socket reconnects, and says diffs may wait', async () => {
    const server = await ferryServer();
    const accountKey = randomBytes(32);
    const a = await device(server, accountKey, 'a');
    const b = await device(server, accountKey, 'b');
    const bWatch = await b.relay.mailboxWatch();
    const watching = next(b.signaling, 'watching');
    b.signaling.watchMailbox(bWatch);
    await watching;
    // Drop b's socket from the server side: the client reconnects and must renew its watch.
    const rewatched = next(b.signaling, 'watching');
    // Diffs stored while no socket watched got no hint: the renewed watch is one.
    let hints = 0;
    b.signaling.on('mailbox', () => hints++);
    (b.signaling as unknown as { socket: { close(): void } }).socket.close();
    await rewatched;
    expect(hints).toBe(1);
    const hint = next(b.signaling, 'mailbox');
    await a.relay.push(['b'], utf8('after reconnect'));
    await hint;
  });

  it('refuses a key that is not the mailbox owner (BAD_PROOF), without closing the socket', async () => {
    const server = await ferryServer();
    const accountKey = randomBytes(32);
    const a = await device(server, accountKey, 'a');
    const b = await device(server, accountKey, 'b');
    await b.relay.register();
    // a's genuine device key, claiming b's mailbox.
    const aWatch = await a.relay.mailboxWatch();
    let refused = refusal(a.signaling);
    a.signaling.watchMailbox({ ...aWatch, clientId: 'b' });
    let error = await refused;
    expect([error.serverCode, error.fatal]).toEqual(['BAD_PROOF', false]);
    // A fresh key nobody registered.
    const stranger = signingKeyFromSeed(randomBytes(32));
    const forged: MailboxWatch = {
      accountId: aWatch.accountId,
      clientId: 'a',
      publicKey: toBase64(stranger.publicKey, { url: true }),
      sign: (message) => sign(stranger.secretKey, message),
    };
    refused = refusal(a.signaling);
    a.signaling.watchMailbox(forged);
    error = await refused;
    expect(error.serverCode).toBe('BAD_PROOF');
    // The registered key with a signature over something else (a proof made for another socket).
    refused = refusal(a.signaling);
    a.signaling.watchMailbox({ ...aWatch, sign: (message) => aWatch.sign(utf8(`other ${message.length}`)) });
    error = await refused;
    expect(error.serverCode).toBe('BAD_PROOF');
    expect(a.signaling.connected).toBe(true);
    // The genuine watch still works on the same socket.
    const watching = next(a.signaling, 'watching');
    a.signaling.watchMailbox(aWatch);
    await watching;
  });

  it('a signaling server without a diff server refuses watches with NO_MAILBOXES', async () => {
    const signalingServer = await startServer(cleanup);
    const accountKey = randomBytes(32);
    const client = startClient(cleanup, { urls: [signalingServer.url], accountKey, clientId: 'a' });
    await next(client, 'connected');
    const key = signingKeyFromSeed(randomBytes(32));
    const refused = refusal(client);
    client.watchMailbox({
      accountId: toBase64(randomBytes(32), { url: true }),
      clientId: 'a',
      publicKey: toBase64(key.publicKey, { url: true }),
      sign: (message) => sign(key.secretKey, message),
    });
    const error = await refused;
    expect([error.serverCode, error.fatal]).toEqual(['NO_MAILBOXES', false]);
    expect(client.connected).toBe(true);
  });

  it.skipIf(!postgres)(
    'two instances on one PostgreSQL: a diff stored through one hints a socket on the other',
    async () => {
      const schema = uniqueSchema();
      cleanup.add(() => dropSchema(schema), undefined);
      const instance = async () => {
        const server = await startFerryServer({
          port: 0,
          databaseUrl: TEST_DATABASE_URL,
          databaseSchema: schema,
          logger: pino({ level: 'silent' }),
        });
        return cleanup.add(() => server.close(), server);
      };
      const one = await instance();
      const two = await instance();
      const accountKey = randomBytes(32);
      const a = new RelayClient({ url: one.url, accountKey, clientId: 'a' });
      const b = await device(two, accountKey, 'b');
      const bWatch = await b.relay.mailboxWatch();
      const watching = next(b.signaling, 'watching');
      b.signaling.watchMailbox(bWatch);
      await watching;
      // Exactly one hint per stored diff, also on the instance that stored it (no double announce).
      let hints = 0;
      b.signaling.on('mailbox', () => hints++);
      const hint = next(b.signaling, 'mailbox');
      await a.push(['b'], utf8('through instance one'));
      await hint;
      expect((await b.relay.pull()).length).toBe(1);
      expect(hints).toBe(1);
    },
  );
});
