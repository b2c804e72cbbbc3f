import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { fromUtf8, MemoryRelayStateStore, randomBytes, toHex, utf8 } from '@ferry/core';
import { describe, expect, it } from 'vitest';
import { hasPostgres, TEST_DATABASE_URL } from '../../../../testing/services.js';
import { type Backend, dropSchema, newAccount, relayClient, uniqueSchema, useCleanup } from './helpers.js';

const defer = useCleanup();
const backends: Backend[] = (await hasPostgres()) ? ['sqlite', 'postgres'] : ['sqlite'];
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** Starts the fixture server as a child process (tsx runs it from the sources). */
async function spawnRelay(store: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', here('./fixtures/relay-process.ts')], {
    env: {
      ...process.env,
      ...store,
      TSX_TSCONFIG_PATH: here('./fixtures/tsconfig.json'),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  defer(() => child.kill('SIGKILL'));
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  return { url: (JSON.parse(line) as { url: string }).url, child };
}

describe.each(backends)('crash safety on %s', (backend) => {
  it('every push answered 2xx before a kill -9 is pullable and intact after restart, none twice', async () => {
    let store: Record<string, string>;
    if (backend === 'sqlite') {
      const dataDir = mkdtempSync(join(tmpdir(), 'ferry-crash-'));
      defer(() => rmSync(dataDir, { recursive: true, force: true }));
      store = { FERRY_DATA_DIR: dataDir };
    } else {
      const schema = uniqueSchema();
      defer(() => dropSchema(schema));
      store = { FERRY_PG_URL: TEST_DATABASE_URL, FERRY_PG_SCHEMA: schema };
    }
    const first = await spawnRelay(store);
    const exited = once(first.child, 'exit');
    const key = newAccount().key;
    const receiverState = new MemoryRelayStateStore();
    await relayClient(first.url, key, 'receiver', { state: receiverState }).register();

    // Eight senders push as fast as they can; the server dies once 200 pushes were acknowledged.
    const acknowledged = new Map<string, string>();
    const attempted = new Map<string, string>();
    let killed = false;
    const sender = async (n: number) => {
      const client = relayClient(first.url, key, `sender-${n}`, { retry: { attempts: 1 } });
      await client.register();
      while (!killed) {
        const text = `sender ${n} diff ${toHex(randomBytes(8))}`;
        try {
          const { diffId } = await client.push(['receiver'], utf8(text));
          acknowledged.set(diffId, text);
          if (acknowledged.size >= 200 && !killed) {
            killed = true;
            first.child.kill('SIGKILL');
          }
        } catch {
          // In flight when the process died: the outcome is unknown, so it may or may not be stored.
          attempted.set(text, text);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, n) => sender(n)));
    await exited;
    expect(first.child.signalCode).toBe('SIGKILL');

    const second = await spawnRelay(store);
    const receiver = relayClient(second.url, key, 'receiver', { state: receiverState });
    const pulled = await receiver.pull({ limit: 10_000 });
    const ids = pulled.map((d) => d.diffId);
    expect(new Set(ids).size).toBe(ids.length); // none twice
    const byId = new Map(pulled.map((d) => [d.diffId, fromUtf8(d.payload)]));
    for (const [diffId, text] of acknowledged) expect(byId.get(diffId)).toBe(text); // present and intact
    // Anything else that survived was in flight at the kill, and is intact too (it decrypted).
    expect(pulled.length - acknowledged.size).toBeLessThanOrEqual(attempted.size);
    expect(acknowledged.size).toBeGreaterThanOrEqual(200);
  }, 90_000);
});
