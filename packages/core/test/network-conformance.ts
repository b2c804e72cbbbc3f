import { afterEach, describe, expect, it, vi } from 'vitest';
import type { PeerMessage, PeerNetwork } from '../src/network/types.js';

/**
 * What every PeerNetwork adapter must do, given a factory that adds devices of one account to a fresh
 * network. The sync engine and AI streams rely on exactly these behaviours.
 */
export interface NetworkHarness {
  /** The message size limit the harness configured (kept small so the test stays fast). */
  maxMessageBytes: number;
  addDevice(clientId: string): Promise<PeerNetwork>;
  /** Take a device off the network abruptly (lid closed, process killed). */
  dropDevice(network: PeerNetwork): Promise<void>;
  close(): Promise<void>;
}

export const whenConnected = (network: PeerNetwork, peerId: string) =>
  new Promise<void>((resolve) => {
    if (network.connectedPeers().includes(peerId)) return resolve();
    const onPeer = (id: string) => {
      if (id !== peerId) return;
      network.off('peer-connected', onPeer);
      resolve();
    };
    network.on('peer-connected', onPeer);
  });

const nextMessages = (network: PeerNetwork, count: number) =>
  new Promise<[string, PeerMessage][]>((resolve) => {
    const got: [string, PeerMessage][] = [];
    const onMessage = (from: string, message: PeerMessage) => {
      got.push([from, message]);
      if (got.length === count) {
        network.off('message', onMessage);
        resolve(got);
      }
    };
    network.on('message', onMessage);
  });

const message = (op: string, data: unknown): PeerMessage => ({
  op,
  data,
  timestamp: Date.now(),
  id: crypto.randomUUID(),
});

export function runNetworkConformance(name: string, createHarness: () => Promise<NetworkHarness>): void {
  describe(`PeerNetwork conformance: ${name}`, () => {
    let harness: NetworkHarness | undefined;
    afterEach(async () => {
      await harness?.close();
      harness = undefined;
    });

    it('announces devices to each other and carries messages in order per peer', async () => {
      harness = await createHarness();
      const a = await harness.addDevice('conf-a');
      const b = await harness.addDevice('conf-b');
      await Promise.all([whenConnected(a, 'conf-b'), whenConnected(b, 'conf-a')]);
      const atB = nextMessages(b, 50);
      for (let i = 0; i < 50; i++) void a.send('conf-b', message('DB_SEQ', i));
      const got = await atB;
      expect(got.map(([from]) => from)).toEqual(Array(50).fill('conf-a'));
      expect(got.map(([, m]) => m.data)).toEqual([...Array(50).keys()]);
    });

    it('carries a 3 MiB message intact', async () => {
      harness = await createHarness();
      const a = await harness.addDevice('conf-a');
      const b = await harness.addDevice('conf-b');
      await whenConnected(a, 'conf-b');
      const payload = { text: 'p'.repeat(3 * 1024 * 1024), nested: [1, { two: 2 }] };
      const atB = nextMessages(b, 1);
      await a.send('conf-b', message('DB_BIG', payload));
      expect((await atB)[0]![1].data).toEqual(payload);
    });

    it('refuses oversized and malformed messages with typed errors, and keeps the session', async () => {
      harness = await createHarness();
      const a = await harness.addDevice('conf-a');
      const b = await harness.addDevice('conf-b');
      await whenConnected(a, 'conf-b');
      const tooBig = message('DB_BIG', 'o'.repeat(harness.maxMessageBytes));
      await expect(a.send('conf-b', tooBig)).rejects.toMatchObject({ code: 'TOO_LARGE' });
      const refusals: [PeerMessage, string][] = [
        [message('lower_case', 1), 'SCHEMA_MISMATCH'],
        [{ ...message('DB_X', 1), id: '' }, 'SCHEMA_MISMATCH'],
        [{ ...message('DB_X', 1), timestamp: Number.NaN }, 'SCHEMA_MISMATCH'],
        [message('DB_X', undefined), 'SCHEMA_MISMATCH'],
        [message('DB_X', { n: 1n }), 'BAD_ENCODING'],
        [message('SESSION_PING', { notAPingId: 1 }), 'SCHEMA_MISMATCH'],
      ];
      for (const [bad, code] of refusals) {
        await expect(a.send('conf-b', bad), bad.op).rejects.toMatchObject({ code });
      }
      const atB = nextMessages(b, 1);
      await a.send('conf-b', message('DB_OK', { fine: true, gone: undefined }));
      const [first] = await atB;
      expect(first![1].data).toEqual({ fine: true }); // as JSON carries it
      expect(a.connectedPeers()).toContain('conf-b');
    });

    it('rejects sends to an unknown peer with CLOSED', async () => {
      harness = await createHarness();
      const a = await harness.addDevice('conf-a');
      await expect(a.send('nobody', message('DB_X', 1))).rejects.toMatchObject({ code: 'CLOSED' });
    });

    it('reports a device that vanishes as disconnected, and refuses sends to it', async () => {
      harness = await createHarness();
      const a = await harness.addDevice('conf-a');
      const b = await harness.addDevice('conf-b');
      await whenConnected(a, 'conf-b');
      const gone = new Promise<string>((resolve) => a.once('peer-disconnected', resolve));
      await harness.dropDevice(b);
      expect(await gone).toBe('conf-b');
      expect(a.connectedPeers()).not.toContain('conf-b');
      await expect(a.send('conf-b', message('DB_X', 1))).rejects.toMatchObject({ code: 'CLOSED' });
    });

    it('delivers no message from a peer after reporting it disconnected', async () => {
      harness = await createHarness();
      const a = await harness.addDevice('conf-a');
      const b = await harness.addDevice('conf-b');
      await Promise.all([whenConnected(a, 'conf-b'), whenConnected(b, 'conf-a')]);
      const events: string[] = [];
      a.on('peer-disconnected', (peer) => events.push(`gone ${peer}`));
      // a leaves at b's first message, with the rest of b's burst still on its way.
      a.on('message', (peer) => {
        events.push(`message ${peer}`);
        if (events.length === 1) void a.close();
      });
      for (let i = 0; i < 100; i++) void b.send('conf-a', message('DB_SEQ', i)).catch(() => {});
      await vi.waitFor(() => expect(events).toContain('gone conf-b'));
      await new Promise((resolve) => setTimeout(resolve, 200)); // what was in flight has landed
      expect(events.slice(events.indexOf('gone conf-b'))).toEqual(['gone conf-b']);
    });

    it('stops delivering after close', async () => {
      harness = await createHarness();
      const a = await harness.addDevice('conf-a');
      const b = await harness.addDevice('conf-b');
      await whenConnected(a, 'conf-b');
      await b.close();
      expect(b.connectedPeers()).toEqual([]);
      await expect(b.send('conf-a', message('DB_X', 1))).rejects.toMatchObject({ code: 'CLOSED' });
    });
  });
}
