import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { askPeer, serveModels } from '@ferry/ai';
import { tinyLlamaBackend, writeTinyLlamaGguf } from '@ferry/ai/node';
import {
  createNodeMesh,
  deriveAccount,
  generatePassphrase,
  loadNodeWebRTC,
  type MeshNetwork,
  type NodeWebRTCName,
  RelayClient,
} from '@ferry/core/node';
import { type FerryReplicationState, replicateFerry } from '@ferry/rxdb';
import { startFerryServer } from '@ferry/server';
import { pino } from 'pino';
import { createRxDatabase, type RxCollection, type RxDatabase } from 'rxdb';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';

interface Todo {
  id: string;
  title: string;
  done: boolean;
}

const todoSchema = {
  version: 0,
  primaryKey: 'id',
  type: 'object',
  properties: {
    id: { type: 'string', maxLength: 64 },
    title: { type: 'string' },
    done: { type: 'boolean' },
  },
  required: ['id', 'title', 'done'],
} as const;

type TodoDb = RxDatabase<{ todos: RxCollection<Todo> }>;

/** One in-process device: its own RxDB, WebRTC mesh, diff-server client and replication. */
interface Device {
  name: string;
  db: TodoDb;
  /** Kept across offline periods: it holds the device's relay key and sequence state, as a disk would. */
  relay: RelayClient;
  network?: MeshNetwork;
  replication?: FerryReplicationState;
}

export interface DemoOptions {
  out: (line: string) => void;
  /** Writes streamed text as it arrives, without a line break. */
  write: (text: string) => void;
  /** Skip the AI step (for machines without node-llama-cpp). */
  ai: boolean;
  /** The devices' WebRTC implementation. */
  webrtc: NodeWebRTCName;
}

/** A check for `until`: true once `promise` has resolved; throws what it rejected with. */
const settled = (promise: Promise<unknown>): (() => boolean) => {
  let done = false;
  let failure: unknown;
  promise.then(
    () => {
      done = true;
    },
    (error: unknown) => {
      failure = error ?? new Error('rejected');
    },
  );
  return () => {
    if (failure !== undefined) throw failure;
    return done;
  };
};

const until = async (what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`demo: timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
};

/**
 * `ferry demo`: the whole system on embedded defaults in one process. A real server (SQLite diff
 * server + signaling), three devices with RxDB over real WebRTC sessions, live sync, an offline
 * device catching up from the diff server alone, and tokens streamed from one device's local model
 * (a tiny random-weight GGUF written on the spot) to another.
 */
export async function runDemo(options: DemoOptions): Promise<void> {
  const { out } = options;
  const dir = await mkdtemp(join(tmpdir(), 'ferry-demo-'));
  const started = Date.now();
  const step = (text: string) => out(`\n▶ ${text}`);
  const done = (text: string) => out(`  ✓ ${text}`);
  const summary: [string, string][] = [];

  const server = await startFerryServer({ port: 0, dataDir: dir, logger: pino({ level: 'silent' }) });
  const devices: Device[] = [];
  try {
    step('Starting a Ferry server (diff server on SQLite + signaling) on loopback');
    done(`listening on ${server.url} (data in ${dir})`);

    step('Creating an account: a generated passphrase, Argon2id, one key for every device');
    const passphrase = generatePassphrase();
    const t0 = Date.now();
    const account = await deriveAccount(passphrase);
    done(
      `passphrase "${passphrase.split(' ').slice(0, 3).join(' ')} …" -> account ${account.accountId.slice(0, 10)}… in ${Date.now() - t0} ms`,
    );

    const wrtc = await loadNodeWebRTC(options.webrtc);
    const bring = async (device: Device) => {
      device.network = createNodeMesh({
        wrtc,
        clientId: device.name,
        accountKey: account.key,
        signalingUrls: [server.signalingUrl],
      });
      device.network.on('error', () => {}); // transient WebRTC and signaling errors are retried by the mesh
      const { relay } = device;
      device.replication = await replicateFerry({
        collections: { todos: device.db.todos },
        network: device.network,
        relay,
        relayHints: device.network.signaling,
        knownDevices: ['laptop', 'phone', 'desktop'].filter((name) => name !== device.name),
      });
    };
    const takeOffline = async (device: Device) => {
      await device.replication?.cancel();
      await device.network?.close();
      device.network = undefined;
      device.replication = undefined;
    };
    const titles = async (device: Device) =>
      (await device.db.todos.find().exec())
        .map((doc) => doc.title)
        .sort()
        .join(' | ');

    step('Starting three devices (laptop, phone, desktop), each with its own RxDB');
    for (const name of ['laptop', 'phone', 'desktop']) {
      const db = (await createRxDatabase({
        name: `${name}${Date.now()}`,
        storage: getRxStorageMemory(),
        multiInstance: false,
      })) as TodoDb;
      await db.addCollections({ todos: { schema: todoSchema } });
      devices.push({
        name,
        db,
        relay: new RelayClient({ url: server.url, accountKey: account.key, clientId: name }),
      });
    }
    const [laptop, phone, desktop] = devices as [Device, Device, Device];
    const t1 = Date.now();
    await Promise.all(devices.map(bring));
    await until('every device to connect', () =>
      devices.every((d) => d.network!.connectedPeers().length === 2),
    );
    done(
      `3 devices, 3 encrypted WebRTC sessions (Noise handshake, ${options.webrtc}) in ${Date.now() - t1} ms`,
    );
    summary.push(['sessions', `3 (full mesh, end-to-end encrypted, on ${options.webrtc})`]);

    step('Live sync: the laptop writes three todos');
    const t2 = Date.now();
    await laptop.db.todos.bulkInsert([
      { id: 'milk', title: 'buy milk', done: false },
      { id: 'taxes', title: 'file taxes', done: false },
      { id: 'call', title: 'call mum', done: false },
    ]);
    await until('the todos to reach every device', async () => {
      for (const d of devices) if ((await d.db.todos.count().exec()) !== 3) return false;
      return true;
    });
    done(`phone and desktop have them after ${Date.now() - t2} ms: ${await titles(phone)}`);
    summary.push(['live sync', `3 todos to 2 devices in ${Date.now() - t2} ms`]);

    step('Offline relay: the phone goes offline; the laptop keeps editing');
    await takeOffline(phone);
    await until('the others to notice', () => !laptop.network!.connectedPeers().includes('phone'));
    await laptop.db.todos.insert({ id: 'plants', title: 'water plants', done: false });
    await (await laptop.db.todos.findOne('milk').exec())!.patch({ done: true, title: 'buy oat milk' });
    // In sync: both writes recorded and left in the phone's mailbox.
    await until('the laptop to relay its writes', settled(laptop.replication!.awaitInSync()));
    const stored = await mailboxCount(server.url);
    done(
      `changes left encrypted in the phone's mailbox on the diff server (${stored} stored diff(s), ciphertext only)`,
    );

    step('The laptop and desktop go offline too; the phone comes back: only the diff server can help');
    await takeOffline(laptop);
    await takeOffline(desktop);
    const t3 = Date.now();
    await bring(phone);
    await until('the phone to catch up from its mailbox', async () => {
      await phone.replication!.pullRelay();
      return (await titles(phone)).includes('water plants') && (await titles(phone)).includes('oat milk');
    });
    done(`phone caught up from the diff server alone in ${Date.now() - t3} ms: ${await titles(phone)}`);
    await until(
      'the mailbox to be emptied by the acknowledgement',
      async () => (await mailboxCount(server.url)) === 0,
    );
    done('the phone acknowledged: the diff server deleted the diffs (mailbox empty)');
    summary.push(['offline relay', 'phone caught up from the diff server; mailbox empty after ack']);

    if (options.ai) {
      step('AI streaming: the desktop serves a local model; the phone asks it');
      await bring(laptop);
      await bring(desktop);
      const modelPath = join(dir, 'tiny-llama.gguf');
      await writeTinyLlamaGguf(modelPath, { seed: 7 });
      const backend = tinyLlamaBackend({ id: 'tiny-llama', modelPath });
      await backend.load();
      const host = serveModels(desktop.network!, { backends: [backend] });
      await until('phone and desktop to reconnect', () =>
        phone.network!.connectedPeers().includes('desktop'),
      );
      done('desktop serves "tiny-llama" (a random-weight llama GGUF written just now; its words are noise)');
      const t4 = Date.now();
      const stream = askPeer(phone.network!, 'desktop', {
        modelId: 'tiny-llama',
        messages: [{ role: 'user', content: 'Say something.' }],
        params: { seed: 42, maxTokens: 48, temperature: 0.8 },
      });
      options.write('  phone receives: ');
      for await (const delta of stream) options.write(delta);
      options.write('\n');
      const result = await stream.result;
      done(
        `${result.usage.completionTokens} tokens streamed over the encrypted session in ${Date.now() - t4} ms, digest verified`,
      );
      summary.push(['AI streaming', `${result.usage.completionTokens} tokens from desktop to phone`]);
      await host.close();
      await backend.close();
    }

    out('\nSummary');
    for (const [what, result] of summary) out(`  ${what.padEnd(14)} ${result}`);
    out(`  total          ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    for (const device of devices) {
      await device.replication?.cancel().catch(() => {});
      await device.network?.close().catch(() => {});
      await device.db.remove().catch(() => {});
    }
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Stored diffs, read from the diff server's Prometheus metrics (what an operator sees). */
async function mailboxCount(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => /^ferry_relay_stored_diffs(\{[^}]*\})? /.test(l));
  return line ? Number(line.split(' ').pop()) : Number.NaN;
}
