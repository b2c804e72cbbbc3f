import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { deriveSubkey, randomBytes, toBase64, toHex, utf8 } from '@ferry/core';
import pg from 'pg';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { hasPostgres, TEST_DATABASE_URL } from '../../../../testing/services.js';
import { type Backend, newAccount, relayClient, signedPost, startRelay, useCleanup } from './helpers.js';

const defer = useCleanup();
const backends: Backend[] = (await hasPostgres()) ? ['sqlite', 'postgres'] : ['sqlite'];

/** Every form in which a secret could leak: raw bytes and its usual text encodings. */
function forms(secret: Uint8Array): Uint8Array[] {
  return [secret, utf8(toHex(secret)), utf8(toBase64(secret)), utf8(toBase64(secret, { url: true }))];
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength).includes(Buffer.from(needle));
}

/** Every row of every relay table, each value as bytes (text as UTF-8, bytea as is). */
async function postgresDump(schema: string): Promise<Uint8Array[]> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    const chunks: Uint8Array[] = [];
    for (const table of ['accounts', 'devices', 'diffs', 'mailbox', 'nonces']) {
      const { rows } = await client.query(`SELECT * FROM ${schema}.${table}`);
      for (const row of rows) {
        for (const value of Object.values(row)) {
          chunks.push(value instanceof Uint8Array ? value : utf8(String(value)));
        }
      }
    }
    return chunks;
  } finally {
    await client.end();
  }
}

describe.each(backends)('zero knowledge on %s', (backend) => {
  it('neither the plaintext canary nor the account key (or its subkeys) reach storage or logs', async () => {
    const logs: Buffer[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        logs.push(Buffer.from(chunk));
        done();
      },
    });
    const relay = await startRelay(backend, defer, { logger: pino({ level: 'trace' }, sink) });
    const account = newAccount();
    const canary = `CANARY-${toHex(randomBytes(12))}`;
    const marker = `device-marker-${toHex(randomBytes(4))}`;
    const sender = relayClient(relay.url, account.key, 'sender');
    const receiver = relayClient(relay.url, account.key, marker);
    await receiver.register();

    for (let i = 0; i < 20; i++) {
      await sender.push([marker], utf8(JSON.stringify({ note: canary, i, padding: canary.repeat(i) })));
    }
    await sender.pushToAll(utf8(canary));
    // Half acknowledged (bodies freed), half still waiting; and a refused request for the logs.
    const pulled = await receiver.pull({ limit: 10 });
    await receiver.ack(pulled.map((d) => d.diffId));
    await signedPost(relay.url, '/pushDiff', { accountId: account.accountId, note: canary }, account.signer);

    const stored: Uint8Array[] = [];
    if (relay.location.backend === 'sqlite') {
      const file = join(relay.location.dataDir, 'relay.sqlite');
      for (const path of [file, `${file}-wal`, `${file}-shm`])
        if (existsSync(path)) stored.push(readFileSync(path));
      expect(existsSync(`${file}-wal`)).toBe(true);
    } else {
      stored.push(...(await postgresDump(relay.location.schema)));
    }
    await relay.diff.app.close(); // flush the request logs
    const logText = Buffer.concat(logs);

    // Controls: the scans do see what the server legitimately holds in clear.
    expect(stored.some((chunk) => contains(chunk, utf8(marker)))).toBe(true);
    expect(contains(logText, utf8('/pushDiff'))).toBe(true);

    const secrets = [
      utf8(canary),
      ...forms(account.key),
      ...forms(deriveSubkey(account.key, 'diff')),
      ...forms(account.signer.secretKey),
    ];
    for (const secret of secrets) {
      expect(stored.some((chunk) => contains(chunk, secret))).toBe(false);
      expect(contains(logText, secret)).toBe(false);
    }
  });
});
