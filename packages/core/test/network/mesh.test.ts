import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  createNodeMesh,
  deriveAccount,
  type MeshNetwork,
  MINIMUM_ACCOUNT_DESCRIPTOR,
  type PeerMessage,
  toHex,
  type WebRTCImplementation,
} from '@ferry/core/node';
import { createSignalingServer, type SignalingServer } from '@ferry/server';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runNetworkConformance } from '../network-conformance.js';
import { nodeWebRTCs } from '../support/webrtc.js';

const PASSPHRASE = 'mesh test passphrase correct horse';
let server: SignalingServer;
let accountKey: Uint8Array;
const meshes: MeshNetwork[] = [];

beforeAll(async () => {
  server = await createSignalingServer({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }) });
  accountKey = (await deriveAccount(PASSPHRASE, MINIMUM_ACCOUNT_DESCRIPTOR)).key;
});

afterAll(async () => {
  await Promise.all(meshes.map((mesh) => mesh.close()));
  await server.close();
});

function device(
  clientId: string,
  key = accountKey,
  maxMessageBytes?: number,
  wrtc: WebRTCImplementation = nodeWebRTCs[0]!.wrtc,
): MeshNetwork {
  const mesh = createNodeMesh({
    wrtc,
    clientId,
    accountKey: key,
    signalingUrls: [server.url],
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    ...(maxMessageBytes ? { session: { maxMessageBytes } } : {}),
  });
  mesh.on('error', () => {}); // failures are asserted through events and state below
  meshes.push(mesh);
  return mesh;
}

const connectedTo = (mesh: MeshNetwork, peerId: string) =>
  new Promise<void>((resolve) => {
    if (mesh.connectedPeers().includes(peerId)) return resolve();
    const onPeer = (id: string) => {
      if (id === peerId) {
        mesh.off('peer-connected', onPeer);
        resolve();
      }
    };
    mesh.on('peer-connected', onPeer);
  });

const nextMessage = (mesh: MeshNetwork, op: string) =>
  new Promise<{ from: string; message: PeerMessage }>((resolve) => {
    const onMessage = (from: string, message: PeerMessage) => {
      if (message.op === op) {
        mesh.off('message', onMessage);
        resolve({ from, message });
      }
    };
    mesh.on('message', onMessage);
  });

const message = (op: string, data: unknown): PeerMessage => ({
  op,
  data,
  timestamp: Date.now(),
  id: crypto.randomUUID(),
});

describe('MeshNetwork options', () => {
  it('refuses timeouts, backoffs and session windows that would stall or spin when created', () => {
    for (const bad of [
      { connectTimeoutMs: 0 },
      { reconnect: { initialDelayMs: 0 } },
      { reconnect: { maxDelayMs: -1 } },
      { session: { keepaliveTimeoutMs: 0 } },
      { session: { highWaterMark: 0 } },
    ]) {
      expect(() =>
        createNodeMesh({
          clientId: 'solo',
          accountKey: new Uint8Array(32),
          signalingUrls: ['ws://127.0.0.1:9'],
          ...bad,
        }),
      ).toThrow(
        expect.objectContaining({ code: 'BAD_ARGUMENT', message: expect.stringContaining('must be') }),
      );
    }
  });
});

describe('MeshNetwork over real WebRTC and a real signaling server', () => {
  it('connects three devices pairwise and carries messages both ways, including 10 MiB', async () => {
    const [a, b, c] = [device('device-a'), device('device-b'), device('device-c')];
    await Promise.all([
      connectedTo(a, 'device-b'),
      connectedTo(a, 'device-c'),
      connectedTo(b, 'device-a'),
      connectedTo(b, 'device-c'),
      connectedTo(c, 'device-a'),
      connectedTo(c, 'device-b'),
    ]);
    expect(a.connectedPeers().sort()).toEqual(['device-b', 'device-c']);

    const atC = nextMessage(c, 'TEST_HELLO');
    await a.send('device-c', message('TEST_HELLO', { text: 'hi from a' }));
    expect((await atC).from).toBe('device-a');
    expect((await atC).message.data).toEqual({ text: 'hi from a' });

    const big = 'x'.repeat(10 * 1024 * 1024);
    const atA = nextMessage(a, 'TEST_BIG');
    await b.send('device-a', message('TEST_BIG', big));
    const received = (await atA).message.data as string;
    expect(createHash('sha256').update(received).digest('hex')).toBe(
      createHash('sha256').update(big).digest('hex'),
    );
    expect(a.session('device-b')?.sessionId).toBe(b.session('device-a')?.sessionId);
  });

  it('never gives a session to a device with the wrong passphrase', async () => {
    const wrong = (await deriveAccount('a different passphrase entirely', MINIMUM_ACCOUNT_DESCRIPTOR)).key;
    const intruder = device('device-0', wrong); // different key: different room, and a different PSK
    await new Promise((resolve) => intruder.signaling.once('connected', resolve));
    // Two honest devices that join after it find each other, so the intruder had every chance to be seen.
    const honestKey = crypto.getRandomValues(new Uint8Array(32)); // an account of its own: no other devices
    const [g, h] = [device('device-g', honestKey), device('device-h', honestKey)];
    await Promise.all([connectedTo(g, 'device-h'), connectedTo(h, 'device-g')]);
    expect(intruder.connectedPeers()).toEqual([]);
    expect(intruder.signaling.peers()).toEqual([]);
    expect(h.connectedPeers()).toEqual(['device-g']);
    await expect(intruder.send('device-h', message('TEST', 1))).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('fails over to the next signaling server when the first is down', async () => {
    const dead = await createSignalingServer({
      host: '127.0.0.1',
      port: 0,
      logger: pino({ level: 'silent' }),
    });
    const deadUrl = dead.url;
    await dead.close(); // nothing listens there any more
    const key = crypto.getRandomValues(new Uint8Array(32));
    const [x, y] = ['device-x', 'device-y'].map((clientId) => {
      const mesh = createNodeMesh({ clientId, accountKey: key, signalingUrls: [deadUrl, server.url] });
      mesh.on('error', () => {});
      meshes.push(mesh);
      return mesh;
    }) as [MeshNetwork, MeshNetwork];
    await Promise.all([connectedTo(x, 'device-y'), connectedTo(y, 'device-x')]);
    const atY = nextMessage(y, 'TEST_FAILOVER');
    await x.send('device-y', message('TEST_FAILOVER', 'via the second server'));
    expect((await atY).message.data).toBe('via the second server');
  });

  it('reconnects by itself after the connection drops', async () => {
    const [d, e] = [device('device-d'), device('device-e')];
    await Promise.all([connectedTo(d, 'device-e'), connectedTo(e, 'device-d')]);
    const firstSession = d.session('device-e')!.sessionId;
    const dropped = new Promise((resolve) => d.once('peer-disconnected', resolve));
    e.session('device-d')!.close('simulated drop');
    await dropped;
    await connectedTo(d, 'device-e');
    await connectedTo(e, 'device-d');
    expect(d.session('device-e')!.sessionId).not.toBe(firstSession);
    const atE = nextMessage(e, 'TEST_AFTER');
    await d.send('device-e', message('TEST_AFTER', 'still here'));
    expect((await atE).message.data).toBe('still here');
  });
});

describe('MeshNetwork when a device dies without a goodbye', () => {
  const fixture = fileURLToPath(new URL('./mesh-device.fixture.ts', import.meta.url));
  /** A device process that answers (its id is the greater); resolves once it connected to `peerId`. */
  const spawnDevice = async (clientId: string, peerId: string): Promise<ChildProcess> => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fixture, server.url, toHex(accountKey), clientId, peerId],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`device process exited (${code}) before connecting`)));
      child.stdout!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('connected')) resolve();
      });
    });
    return child;
  };

  it('is dialled again as soon as it restarts, not once the stale session times out', async () => {
    const dialler = device('device-m0');
    const first = await spawnDevice('device-z0', 'device-m0');
    let second: ChildProcess | undefined;
    try {
      await connectedTo(dialler, 'device-z0');
      const stale = dialler.session('device-z0')!;
      const closed = new Promise<string>((resolve) => stale.once('close', resolve));
      first.kill('SIGKILL');
      second = await spawnDevice('device-z0', 'device-m0');
      // Without the restarted device's hint, the stale session would end only by its keepalive
      // timeout (15 s by default), and the new connection would wait for that.
      expect(await closed).toMatch(/the device restarted/);
      await connectedTo(dialler, 'device-z0');
      expect(dialler.session('device-z0')!.sessionId).not.toBe(stale.sessionId);
    } finally {
      first.kill('SIGKILL');
      second?.kill('SIGKILL');
    }
  }, 30_000);
});

for (const { name, wrtc } of nodeWebRTCs) {
  runNetworkConformance(`MeshNetwork (WebRTC on ${name}, real signaling)`, async () => {
    const devices: MeshNetwork[] = [];
    const harnessKey = crypto.getRandomValues(new Uint8Array(32)); // a fresh account (room) per test
    const maxMessageBytes = 4 * 1024 * 1024;
    return {
      maxMessageBytes,
      addDevice: async (clientId) => {
        const mesh = device(clientId, harnessKey, maxMessageBytes, wrtc);
        devices.push(mesh);
        return mesh;
      },
      // An abrupt drop: the WebRTC connections die without a goodbye, the signaling socket too.
      dropDevice: async (network) => {
        const mesh = network as MeshNetwork;
        for (const peerId of mesh.connectedPeers()) mesh.session(peerId)?.close('dropped');
        await mesh.close();
      },
      close: async () => {
        await Promise.all(devices.map((d) => d.close()));
      },
    };
  });
}
