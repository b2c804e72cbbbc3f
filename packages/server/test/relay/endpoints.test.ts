import { randomBytes, toBase64 } from '@ferry/core';
import { describe, expect, it } from 'vitest';
import { hasPostgres } from '../../../../testing/services.js';
import {
  type Backend,
  countRows,
  newAccount,
  newDeviceKey,
  publicKeyOf,
  registerDevice,
  signedPost,
  startRelay,
  useCleanup,
} from './helpers.js';

const defer = useCleanup();
const backends: Backend[] = (await hasPostgres()) ? ['sqlite', 'postgres'] : ['sqlite'];
const blob = (length = 64) => toBase64(randomBytes(length), { url: true });
const diffId = () => toBase64(randomBytes(16), { url: true });

describe.each(backends)('diff server endpoints on %s', (backend) => {
  it('GET /health and GET /metrics answer without a signature', async () => {
    const relay = await startRelay(backend, defer);
    const health = await fetch(`${relay.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok', storage: backend });
    const metrics = await fetch(`${relay.url}/metrics`);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await metrics.text()).toMatch(/^ferry_relay_stored_diffs 0$/m);
  });

  it('registers, lists and removes devices; pushes, pulls in pages and acks; deletes the account', async () => {
    const relay = await startRelay(backend, defer);
    const account = newAccount();
    const { accountId } = account;

    // registerDevice (account key): created, then idempotent.
    const aKey = newDeviceKey();
    const register = (clientId: string, publicKey: string) =>
      signedPost(relay.url, '/registerDevice', { accountId, clientId, publicKey }, account.signer);
    expect(await register('a', publicKeyOf(aKey))).toEqual({
      status: 200,
      json: { clientId: 'a', created: true, replaced: false },
    });
    expect((await register('a', publicKeyOf(aKey))).json).toMatchObject({ created: false });
    const bKey = await registerDevice(relay.url, account, 'b');
    const cKey = await registerDevice(relay.url, account, 'c');

    // listDevices: with the account key and with a device key.
    for (const signer of [account.signer, bKey]) {
      expect((await signedPost(relay.url, '/listDevices', { accountId }, signer)).json).toEqual({
        devices: ['a', 'b', 'c'],
      });
    }

    // pushDiff with the spec's fields (op, single targetClientId), then to several, then to all.
    const ids = [diffId(), diffId(), diffId()];
    const bodies = [blob(), blob(), blob()];
    const one = await signedPost(
      relay.url,
      '/pushDiff',
      { op: 'DB_DIFF_PUSH_SERVER', accountId, targetClientId: 'b', diffId: ids[0], encryptedDiff: bodies[0] },
      aKey,
    );
    expect(one.status).toBe(200);
    expect(one.json).toMatchObject({ diffId: ids[0], stored: true, targets: ['b'] });
    const several = await signedPost(
      relay.url,
      '/pushDiff',
      {
        accountId,
        targetClientIds: ['b', 'c'],
        diffId: ids[1],
        encryptedDiff: bodies[1],
        expiresAt: Date.now() + 60_000,
      },
      aKey,
    );
    expect(several.json).toMatchObject({ stored: true, targets: ['b', 'c'] });
    const all = await signedPost(
      relay.url,
      '/pushDiff',
      { accountId, targetClientId: '*', diffId: ids[2], encryptedDiff: bodies[2] },
      cKey,
    );
    expect(all.json).toMatchObject({ stored: true, targets: ['a', 'b'] });
    // A retried push answers 200 and stores nothing new.
    const retried = await signedPost(
      relay.url,
      '/pushDiff',
      { accountId, targetClientId: '*', diffId: ids[2], encryptedDiff: bodies[2] },
      cKey,
    );
    expect(retried.json).toMatchObject({ stored: false, targets: ['a', 'b'] });

    // pullDiff: b's mailbox in push order, two pages via the cursor.
    const pull = (cursor?: string) =>
      signedPost(
        relay.url,
        '/pullDiff',
        { op: 'DB_DIFF_PULL_SERVER', accountId, clientId: 'b', limit: 2, ...(cursor ? { cursor } : {}) },
        bKey,
      );
    const first = await pull();
    expect(first.status).toBe(200);
    const page1 = first.json as { diffs: Array<Record<string, unknown>>; cursor: string; more: boolean };
    expect(page1.diffs.map((d) => [d.diffId, d.senderClientId, d.encryptedDiff])).toEqual([
      [ids[0], 'a', bodies[0]],
      [ids[1], 'a', bodies[1]],
    ]);
    expect(page1.more).toBe(true);
    const page2 = (await pull(page1.cursor)).json as typeof page1;
    expect(page2.diffs.map((d) => d.diffId)).toEqual([ids[2]]);
    expect(page2.more).toBe(false);

    // ackDiff: the spec's single diffId, then a list.
    const ack = (body: Record<string, unknown>) =>
      signedPost(relay.url, '/ackDiff', { accountId, clientId: 'b', ...body }, bKey);
    expect(await ack({ op: 'DB_DIFF_ACK_SERVER', diffId: ids[0] })).toEqual({
      status: 200,
      json: { acked: 1 },
    });
    expect((await ack({ diffIds: [ids[0], ids[1], ids[2]] })).json).toEqual({ acked: 2 });
    expect(((await pull()).json as typeof page1).diffs).toEqual([]);

    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    expect(metrics).toMatch(/^ferry_relay_stored_diffs 2$/m); // ids[1] for c, ids[2] for a
    expect(metrics).toMatch(/ferry_relay_requests_total\{route="\/pushDiff",status="200"\} 4/);

    // removeDevice: a device may remove itself; c's pending diff goes with its mailbox.
    expect((await signedPost(relay.url, '/removeDevice', { accountId, clientId: 'c' }, cKey)).json).toEqual({
      removed: true,
      droppedDiffs: 1,
    });
    expect(
      (await signedPost(relay.url, '/removeDevice', { accountId, clientId: 'a' }, account.signer)).json,
    ).toEqual({ removed: true, droppedDiffs: 1 });
    expect((await signedPost(relay.url, '/listDevices', { accountId }, account.signer)).json).toEqual({
      devices: ['b'],
    });

    // deleteAccount: everything of the account is gone.
    expect((await signedPost(relay.url, '/deleteAccount', { accountId }, account.signer)).json).toEqual({
      deleted: true,
    });
    const rows = await countRows(relay.location);
    expect({ ...rows, nonces: 0 }).toEqual({ accounts: 0, devices: 0, diffs: 0, mailbox: 0, nonces: 0 });
    expect((await signedPost(relay.url, '/pullDiff', { accountId, clientId: 'b' }, bKey)).json).toMatchObject(
      {
        error: 'UNKNOWN_KEY',
      },
    );
    const after = await (await fetch(`${relay.url}/metrics`)).text();
    expect(after).toMatch(/^ferry_relay_rejections_total\{reason="UNKNOWN_KEY"\} 1$/m);
    expect(after).toMatch(/^ferry_relay_stored_diffs 0$/m);
    expect(after).toMatch(/^ferry_relay_pushed_bytes_total 192$/m);
  });

  it('answers CORS preflights for the signature headers', async () => {
    const relay = await startRelay(backend, defer);
    const preflight = await fetch(`${relay.url}/pushDiff`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type,content-digest,signature-input,signature',
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('*');
    expect(preflight.headers.get('access-control-allow-headers')).toContain('signature-input');
    const health = await fetch(`${relay.url}/health`, { headers: { origin: 'https://app.example' } });
    expect(health.headers.get('access-control-expose-headers')).toBe('date, retry-after');
  });

  it('notifies listeners when diffs arrive for devices', async () => {
    const relay = await startRelay(backend, defer);
    const account = newAccount();
    const aKey = await registerDevice(relay.url, account, 'a');
    await registerDevice(relay.url, account, 'b');
    const seen: unknown[] = [];
    // On PostgreSQL the event comes back through NOTIFY, a moment after the push is answered.
    const first = new Promise((resolve) => relay.diff.events.once('diffs', resolve));
    relay.diff.events.on('diffs', (event) => seen.push(event));
    await signedPost(
      relay.url,
      '/pushDiff',
      { accountId: account.accountId, targetClientId: 'b', diffId: diffId(), encryptedDiff: blob() },
      aKey,
    );
    await first;
    expect(seen).toEqual([{ accountId: account.accountId, clientIds: ['b'] }]);
  });
});
