import { randomBytes, signRequest, toBase64, utf8 } from '@ferry/core';
import { describe, expect, it } from 'vitest';
import { hasPostgres } from '../../../../testing/services.js';
import {
  type Answer,
  type Backend,
  countRows,
  newAccount,
  newDeviceKey,
  type RunningRelay,
  registerDevice,
  signedPost,
  startRelay,
  type TestAccount,
  useCleanup,
} from './helpers.js';

const defer = useCleanup();
const backends: Backend[] = (await hasPostgres()) ? ['sqlite', 'postgres'] : ['sqlite'];
const id = () => toBase64(randomBytes(16), { url: true });
const blob = (length = 64) => toBase64(randomBytes(length), { url: true });
const MAX_DIFF = 4096;

interface World {
  relay: RunningRelay;
  account: TestAccount;
  other: TestAccount;
  keys: Record<'a' | 'b' | 'c' | 'x', ReturnType<typeof newDeviceKey>>;
  /** A diff waiting in b's mailbox. */
  forB: string;
}

type Case = [name: string, status: number, reason: string, send: (world: World) => Promise<Answer>];

const push = (w: World, body: Record<string, unknown>, signer = w.keys.a) =>
  signedPost(
    w.relay.url,
    '/pushDiff',
    { accountId: w.account.accountId, targetClientId: 'b', diffId: id(), encryptedDiff: blob(), ...body },
    signer,
  );
const pullAs = (w: World, signer: World['keys']['a'], body: Record<string, unknown>) =>
  signedPost(w.relay.url, '/pullDiff', body, signer);

/** Each case: what is sent, the answer expected; every case must leave every table unchanged. */
const CASES: Case[] = [
  [
    'malformed JSON',
    400,
    'BAD_JSON',
    (w) => signedPost(w.relay.url, '/pushDiff', `{"accountId": "${w.account.accountId}", `, w.keys.a),
  ],
  ['empty body', 400, 'BAD_JSON', (w) => signedPost(w.relay.url, '/pushDiff', '', w.keys.a)],
  [
    'missing field (diffId)',
    400,
    'SCHEMA_MISMATCH',
    (w) =>
      signedPost(
        w.relay.url,
        '/pushDiff',
        { accountId: w.account.accountId, targetClientId: 'b', encryptedDiff: blob() },
        w.keys.a,
      ),
  ],
  ['mistyped field (expiresAt as text)', 400, 'SCHEMA_MISMATCH', (w) => push(w, { expiresAt: 'tomorrow' })],
  [
    'mistyped field (limit as a numeric string)',
    400,
    'SCHEMA_MISMATCH',
    (w) => pullAs(w, w.keys.b, { accountId: w.account.accountId, clientId: 'b', limit: '5' }),
  ],
  ['unknown field', 400, 'SCHEMA_MISMATCH', (w) => push(w, { note: 'extra' })],
  ['two kinds of target', 400, 'SCHEMA_MISMATCH', (w) => push(w, { targetClientIds: ['c'] })],
  ['expiry in the past', 400, 'BAD_EXPIRY', (w) => push(w, { expiresAt: Date.now() - 1000 })],
  ['bad base64 (alphabet)', 400, 'BAD_BASE64', (w) => push(w, { encryptedDiff: 'not*base64!' })],
  ['bad base64 (impossible length)', 400, 'BAD_BASE64', (w) => push(w, { encryptedDiff: 'abcde' })],
  ['diff above the size limit', 413, 'TOO_LARGE', (w) => push(w, { encryptedDiff: blob(MAX_DIFF + 1) })],
  ['body above the route limit', 413, 'TOO_LARGE', (w) => push(w, { encryptedDiff: blob(MAX_DIFF * 8) })],
  [
    'not JSON content',
    415,
    'UNSUPPORTED_MEDIA_TYPE',
    (w) =>
      signedPost(w.relay.url, '/pushDiff', '{}', w.keys.a, { headers: { 'content-type': 'text/plain' } }),
  ],
  [
    'no signature',
    401,
    'UNSIGNED',
    (w) =>
      signedPost(w.relay.url, '/pushDiff', { accountId: w.account.accountId }, w.keys.a, { unsigned: true }),
  ],
  [
    'body changed after signing',
    400,
    'BAD_DIGEST',
    (w) =>
      signedPost(w.relay.url, '/pullDiff', { accountId: w.account.accountId, clientId: 'b' }, w.keys.b, {
        signedBody: utf8(JSON.stringify({ accountId: w.account.accountId, clientId: 'c' })),
      }),
  ],
  [
    "signature by another key under the device's key id",
    401,
    'BAD_SIGNATURE',
    async (w) => {
      const body = utf8(JSON.stringify({ accountId: w.account.accountId, clientId: 'b' }));
      const forged = signRequest(newDeviceKey(), { method: 'POST', path: '/pullDiff', body });
      const realKeyId = toBase64(w.keys.b.publicKey, { url: true });
      forged['signature-input'] = forged['signature-input'].replace(/keyid="[^"]+"/, `keyid="${realKeyId}"`);
      const response = await fetch(`${w.relay.url}/pullDiff`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...forged },
        body: body as Uint8Array<ArrayBuffer>,
      });
      return { status: response.status, json: (await response.json()) as Record<string, unknown> };
    },
  ],
  [
    'signed for another path',
    401,
    'BAD_SIGNATURE',
    async (w) => {
      const body = utf8(JSON.stringify({ accountId: w.account.accountId, clientId: 'b' }));
      const headers = signRequest(w.keys.b, { method: 'POST', path: '/ackDiff', body });
      const response = await fetch(`${w.relay.url}/pullDiff`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: body as Uint8Array<ArrayBuffer>,
      });
      return { status: response.status, json: (await response.json()) as Record<string, unknown> };
    },
  ],
  ['unknown key', 401, 'UNKNOWN_KEY', (w) => push(w, {}, newDeviceKey())],
  [
    'expired signature (created 10 minutes ago)',
    401,
    'STALE',
    (w) =>
      signedPost(w.relay.url, '/pullDiff', { accountId: w.account.accountId, clientId: 'b' }, w.keys.b, {
        created: Math.floor(Date.now() / 1000) - 600,
      }),
  ],
  [
    'signature from the future (10 minutes ahead)',
    401,
    'STALE',
    (w) =>
      signedPost(w.relay.url, '/pullDiff', { accountId: w.account.accountId, clientId: 'b' }, w.keys.b, {
        created: Math.floor(Date.now() / 1000) + 600,
      }),
  ],
  [
    "another account's mailbox",
    403,
    'FORBIDDEN',
    (w) => pullAs(w, w.keys.x, { accountId: w.account.accountId, clientId: 'b' }),
  ],
  [
    "another device's mailbox (pull)",
    403,
    'FORBIDDEN',
    (w) => pullAs(w, w.keys.c, { accountId: w.account.accountId, clientId: 'b' }),
  ],
  [
    "another device's mailbox (ack)",
    403,
    'FORBIDDEN',
    (w) =>
      signedPost(
        w.relay.url,
        '/ackDiff',
        { accountId: w.account.accountId, clientId: 'b', diffId: w.forB },
        w.keys.c,
      ),
  ],
  [
    'acking a diff that is not yours',
    403,
    'NOT_YOURS',
    (w) =>
      signedPost(
        w.relay.url,
        '/ackDiff',
        { accountId: w.account.accountId, clientId: 'c', diffId: w.forB },
        w.keys.c,
      ),
  ],
  [
    'mailbox operation with the account key',
    403,
    'FORBIDDEN',
    (w) => pullAs(w, w.account.signer, { accountId: w.account.accountId, clientId: 'b' }),
  ],
  [
    'registering a device with a device key',
    403,
    'FORBIDDEN',
    (w) =>
      signedPost(
        w.relay.url,
        '/registerDevice',
        {
          accountId: w.account.accountId,
          clientId: 'd',
          publicKey: toBase64(randomBytes(32), { url: true }),
        },
        w.keys.a,
      ),
  ],
  [
    "deleting another account with one's own account key",
    401,
    'UNKNOWN_KEY',
    (w) => signedPost(w.relay.url, '/deleteAccount', { accountId: w.account.accountId }, w.other.signer),
  ],
  [
    'removing another device with a device key',
    403,
    'FORBIDDEN',
    (w) =>
      signedPost(w.relay.url, '/removeDevice', { accountId: w.account.accountId, clientId: 'b' }, w.keys.c),
  ],
  ['push to an unregistered device', 404, 'UNKNOWN_TARGET', (w) => push(w, { targetClientId: 'ghost' })],
  ['quota exceeded (bytes)', 429, 'QUOTA_BYTES', (w) => push(w, { encryptedDiff: blob(MAX_DIFF) })],
  ['unknown route', 404, 'NOT_FOUND', (w) => signedPost(w.relay.url, '/stealDiffs', {}, w.keys.a)],
];

describe.each(backends)('bad input on %s: the expected 4xx, its reason, and nothing stored', (backend) => {
  let world: World;
  const setup = async (): Promise<World> => {
    const relay = await startRelay(backend, defer, {
      limits: { maxDiffBytes: MAX_DIFF, maxAccountBytes: 3 * 1024, maxAccountDiffs: 3 },
    });
    const account = newAccount();
    const other = newAccount();
    const keys = {
      a: await registerDevice(relay.url, account, 'a'),
      b: await registerDevice(relay.url, account, 'b'),
      c: await registerDevice(relay.url, account, 'c'),
      x: await registerDevice(relay.url, other, 'x'),
    };
    const world: World = { relay, account, other, keys, forB: id() };
    const stored = await push(world, { diffId: world.forB });
    expect(stored.status).toBe(200);
    return world;
  };

  it.each(CASES)('%s -> %i %s', async (_name, status, reason, send) => {
    world = await setup();
    const before = await countRows(world.relay.location);
    const answer = await send(world);
    expect(answer).toMatchObject({ status, json: { error: reason } });
    expect(typeof answer.json.message).toBe('string');
    expect(await countRows(world.relay.location)).toEqual(before);
  });

  it('reused nonce -> 401 REPLAY, and the replayed request changes nothing', async () => {
    world = await setup();
    const body = { accountId: world.account.accountId, clientId: 'b', diffId: world.forB };
    const nonce = id();
    expect((await signedPost(world.relay.url, '/ackDiff', body, world.keys.b, { nonce })).json).toEqual({
      acked: 1,
    });
    const before = await countRows(world.relay.location);
    const replay = await signedPost(world.relay.url, '/ackDiff', body, world.keys.b, { nonce });
    expect(replay).toMatchObject({ status: 401, json: { error: 'REPLAY' } });
    expect(await countRows(world.relay.location)).toEqual(before);
  });

  it('quota exceeded (count) -> 429 QUOTA_COUNT', async () => {
    world = await setup();
    await push(world, {});
    await push(world, {});
    const before = await countRows(world.relay.location);
    expect(await push(world, {})).toMatchObject({ status: 429, json: { error: 'QUOTA_COUNT' } });
    expect(await countRows(world.relay.location)).toEqual(before);
  });
});

describe('rate limits', () => {
  it('answers 429 RATE_LIMITED with Retry-After once an account exceeds its budget', async () => {
    const relay = await startRelay('sqlite', defer, {
      limits: { accountRequestsPerSecond: 0.001, accountBurst: 3 },
    });
    const account = newAccount();
    const b = await registerDevice(relay.url, account, 'b');
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      statuses.push(
        (await signedPost(relay.url, '/pullDiff', { accountId: account.accountId, clientId: 'b' }, b)).status,
      );
    }
    // registerDevice took the first token.
    expect(statuses).toEqual([200, 200, 429, 429]);
    const response = await fetch(`${relay.url}/pullDiff`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...signRequest(b, {
          method: 'POST',
          path: '/pullDiff',
          body: utf8(JSON.stringify({ accountId: account.accountId, clientId: 'b' })),
        }),
      },
      body: JSON.stringify({ accountId: account.accountId, clientId: 'b' }),
    });
    expect(response.status).toBe(429);
    expect(response.headers.get('retry-after')).toBe('1');
    expect(await response.json()).toMatchObject({ error: 'RATE_LIMITED' });
  });

  it('limits requests per client address before any work', async () => {
    const relay = await startRelay('sqlite', defer, { limits: { ipRequestsPerSecond: 0.001, ipBurst: 2 } });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await fetch(`${relay.url}/health`)).status);
    expect(statuses).toEqual([200, 200, 429]);
  });
});
