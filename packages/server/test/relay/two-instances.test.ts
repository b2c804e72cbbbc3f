import { fromUtf8, utf8 } from '@ferry/core';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { hasPostgres, TEST_DATABASE_URL } from '../../../../testing/services.js';
import { createDiffServer, createPostgresStorage } from '../../src/index.js';
import {
  dropSchema,
  GENEROUS_LIMITS,
  newAccount,
  registerDevice,
  relayClient,
  signedPost,
  uniqueSchema,
  useCleanup,
} from './helpers.js';

const defer = useCleanup();

async function instance(schema: string): Promise<string> {
  const storage = await createPostgresStorage({ url: TEST_DATABASE_URL, schema, maxConnections: 4 });
  const diff = await createDiffServer({
    storage,
    limits: GENEROUS_LIMITS,
    logger: pino({ level: 'silent' }),
  });
  await diff.app.listen({ port: 0, host: '127.0.0.1' });
  defer(() => diff.close());
  return `http://127.0.0.1:${(diff.app.server.address() as { port: number }).port}`;
}

describe.skipIf(!(await hasPostgres()))('two diff server instances on one PostgreSQL', () => {
  it('push through one, pull and ack through the other; nonces are shared', async () => {
    const schema = uniqueSchema();
    defer(() => dropSchema(schema));
    const [one, two] = await Promise.all([instance(schema), instance(schema)]);
    const account = newAccount();
    const a = relayClient(one, account.key, 'a');
    const b = relayClient(two, account.key, 'b');
    await b.register();

    const pushed = [];
    for (let i = 0; i < 5; i++) pushed.push((await a.push(['b'], utf8(`diff ${i}`))).diffId);
    const pulled = await b.pull();
    expect(pulled.map((d) => [d.diffId, fromUtf8(d.payload)])).toEqual(
      pushed.map((id, i) => [id, `diff ${i}`]),
    );
    await b.ack(pulled.map((d) => d.diffId));
    expect(await b.pull()).toEqual([]);

    // The first instance sees the acknowledgements made through the second.
    const viaOne = await signedPost(one, '/listDevices', { accountId: account.accountId }, account.signer);
    expect(viaOne.json).toEqual({ devices: ['a', 'b'] });
    const c = await registerDevice(two, account, 'c');
    const body = { accountId: account.accountId, clientId: 'c' };
    const nonce = 'shared-nonce-0123456789';
    expect((await signedPost(one, '/pullDiff', body, c, { nonce })).status).toBe(200);
    expect(await signedPost(two, '/pullDiff', body, c, { nonce })).toMatchObject({
      status: 401,
      json: { error: 'REPLAY' },
    });
  });
});
