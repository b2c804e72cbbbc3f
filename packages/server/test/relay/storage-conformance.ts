import { createHash } from 'node:crypto';
import { randomBytes, toBase64 } from '@ferry/core';
import { describe, expect, it } from 'vitest';
import type { DeviceRecord, NonceClaim, PushInput, RelayStorage } from '../../src/index.js';

/**
 * The behaviour every RelayStorage backend must have, written once; storage.test.ts runs it against
 * SQLite and PostgreSQL. `open` gives a fresh, empty store for each test (and arranges its cleanup).
 */
export function runStorageConformance(name: string, open: () => Promise<RelayStorage>): void {
  const NOW = 1_700_000_000_000;
  const QUOTA = { maxAccountBytes: 1_000, maxAccountDiffs: 8 };
  const claim = (keyId = 'key'): NonceClaim => ({
    keyId,
    nonce: toBase64(randomBytes(12), { url: true }),
    expiresAt: NOW + 300_000,
  });
  const id = () => toBase64(randomBytes(12), { url: true });
  const bytes = (length: number) => new Uint8Array(randomBytes(length));
  const digest = (body: Uint8Array) => new Uint8Array(createHash('sha256').update(body).digest());

  async function withAccount(storage: RelayStorage, clientIds: string[]) {
    const accountId = id();
    const devices: Record<string, DeviceRecord> = {};
    for (const clientId of clientIds) {
      const publicKey = id();
      await storage.registerDevice(claim(), {
        accountId,
        clientId,
        publicKey,
        replace: false,
        maxDevices: 10,
        now: NOW,
      });
      devices[clientId] = { accountId, clientId, publicKey };
    }
    return { accountId, devices };
  }

  const push = (storage: RelayStorage, input: Partial<PushInput> & Pick<PushInput, 'sender' | 'targets'>) => {
    const body = input.body ?? bytes(100);
    return storage.push(claim(), {
      diffId: id(),
      body,
      digest: digest(body),
      expiresAt: NOW + 60_000,
      now: NOW,
      quota: QUOTA,
      ...input,
    });
  };
  const pullAll = async (storage: RelayStorage, device: DeviceRecord, now = NOW) =>
    (await storage.pull(claim(), { device, after: 0, limit: 500, maxBytes: 1e9, now })).diffs;

  describe(`relay storage conformance: ${name}`, () => {
    it('registers devices, finds them by key, and is idempotent for the same key', async () => {
      const storage = await open();
      const { accountId, devices } = await withAccount(storage, ['a', 'b']);
      expect(await storage.findDeviceByKey(devices.a!.publicKey)).toEqual(devices.a);
      expect(await storage.findDeviceByKey('nobody')).toBeUndefined();
      const again = await storage.registerDevice(claim(), {
        accountId,
        clientId: 'a',
        publicKey: devices.a!.publicKey,
        replace: false,
        maxDevices: 10,
        now: NOW,
      });
      expect(again).toEqual({ created: false, replaced: false });
      expect(await storage.listDevices(claim(), accountId)).toEqual(['a', 'b']);
      expect(await storage.stats()).toMatchObject({ accounts: 1, devices: 2, diffs: 0, bytes: 0 });
    });

    it('refuses another key for a registered client id unless replacing, which drops its mailbox', async () => {
      const storage = await open();
      const { accountId, devices } = await withAccount(storage, ['a', 'b']);
      await push(storage, { sender: devices.a!, targets: ['b'] });
      const register = (publicKey: string, replace: boolean) =>
        storage.registerDevice(claim(), {
          accountId,
          clientId: 'b',
          publicKey,
          replace,
          maxDevices: 10,
          now: NOW,
        });
      await expect(register(id(), false)).rejects.toMatchObject({ reason: 'DEVICE_EXISTS' });
      await expect(register(devices.a!.publicKey, true)).rejects.toMatchObject({ reason: 'DEVICE_EXISTS' });
      const newKey = id();
      expect(await register(newKey, true)).toEqual({ created: false, replaced: true });
      expect(await pullAll(storage, { ...devices.b!, publicKey: newKey })).toEqual([]);
      expect(await storage.stats()).toMatchObject({ diffs: 0, bytes: 0 });
    });

    it('enforces the device limit', async () => {
      const storage = await open();
      const accountId = id();
      const register = (clientId: string) =>
        storage.registerDevice(claim(), {
          accountId,
          clientId,
          publicKey: id(),
          replace: false,
          maxDevices: 2,
          now: NOW,
        });
      await register('a');
      await register('b');
      await expect(register('c')).rejects.toMatchObject({ reason: 'DEVICE_LIMIT', status: 429 });
    });

    it('refuses a reused nonce and stores nothing for it', async () => {
      const storage = await open();
      const { devices } = await withAccount(storage, ['a', 'b']);
      const used = claim('device-a');
      const body = bytes(10);
      const input = { sender: devices.a!, targets: ['b'], diffId: id(), body, digest: digest(body) };
      await storage.push(used, { ...input, expiresAt: NOW + 1000, now: NOW, quota: QUOTA });
      await expect(
        storage.push(used, { ...input, diffId: id(), expiresAt: NOW + 1000, now: NOW, quota: QUOTA }),
      ).rejects.toMatchObject({ reason: 'REPLAY', status: 401 });
      expect(await pullAll(storage, devices.b!)).toHaveLength(1);
    });

    it('keeps each mailbox in push order and pages through it', async () => {
      const storage = await open();
      const { devices } = await withAccount(storage, ['a', 'b', 'c']);
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const diffId = id();
        ids.push(diffId);
        await push(storage, { sender: i % 2 ? devices.a! : devices.c!, targets: ['b'], diffId });
      }
      const first = await storage.pull(claim(), {
        device: devices.b!,
        after: 0,
        limit: 3,
        maxBytes: 1e9,
        now: NOW,
      });
      expect(first.diffs.map((d) => d.diffId)).toEqual(ids.slice(0, 3));
      expect(first.more).toBe(true);
      const rest = await storage.pull(claim(), {
        device: devices.b!,
        after: first.diffs.at(-1)!.position,
        limit: 10,
        maxBytes: 1e9,
        now: NOW,
      });
      expect(rest.diffs.map((d) => d.diffId)).toEqual(ids.slice(3));
      expect(rest.more).toBe(false);
      expect(await pullAll(storage, devices.a!)).toEqual([]);
      // The byte budget ends a page early but always returns at least one diff.
      const small = await storage.pull(claim(), {
        device: devices.b!,
        after: 0,
        limit: 10,
        maxBytes: 150,
        now: NOW,
      });
      expect(small.diffs).toHaveLength(1);
      expect(small.more).toBe(true);
    });

    it('stores a retried push once and refuses a reused diffId with other bytes', async () => {
      const storage = await open();
      const { devices } = await withAccount(storage, ['a', 'b']);
      const body = bytes(50);
      const diffId = id();
      expect(await push(storage, { sender: devices.a!, targets: ['b'], diffId, body })).toMatchObject({
        stored: true,
        targets: ['b'],
      });
      expect(await push(storage, { sender: devices.a!, targets: ['b'], diffId, body })).toMatchObject({
        stored: false,
        targets: ['b'],
      });
      await expect(push(storage, { sender: devices.a!, targets: ['b'], diffId })).rejects.toMatchObject({
        reason: 'DIFF_ID_CONFLICT',
      });
      const pulled = await pullAll(storage, devices.b!);
      expect(pulled).toHaveLength(1);
      expect(Buffer.from(pulled[0]!.body).equals(Buffer.from(body))).toBe(true);
      expect(await storage.stats()).toMatchObject({ diffs: 1, bytes: 50 });
      // Still a no-op after it was acknowledged and its body freed.
      await storage.ack(claim(), devices.b!, [diffId]);
      expect(await push(storage, { sender: devices.a!, targets: ['b'], diffId, body })).toMatchObject({
        stored: false,
      });
      expect(await pullAll(storage, devices.b!)).toEqual([]);
    });

    it('shares one body between targets and frees it when the last target acknowledges', async () => {
      const storage = await open();
      const { devices } = await withAccount(storage, ['a', 'b', 'c']);
      const diffId = id();
      const result = await push(storage, { sender: devices.a!, targets: '*', diffId, body: bytes(200) });
      expect(result.targets).toEqual(['b', 'c']);
      expect(await storage.stats()).toMatchObject({ diffs: 1, bytes: 200 });
      expect(await storage.ack(claim(), devices.b!, [diffId])).toBe(1);
      expect(await pullAll(storage, devices.b!)).toEqual([]);
      expect(await pullAll(storage, devices.c!)).toHaveLength(1);
      expect(await storage.stats()).toMatchObject({ diffs: 1, bytes: 200 });
      expect(await storage.ack(claim(), devices.c!, [diffId])).toBe(1);
      expect(await storage.stats()).toMatchObject({ diffs: 0, bytes: 0 });
      // A repeated ack is harmless.
      expect(await storage.ack(claim(), devices.c!, [diffId])).toBe(0);
    });

    it("refuses unknown targets and acks of diffs that are not in the caller's mailbox, changing nothing", async () => {
      const storage = await open();
      const { devices } = await withAccount(storage, ['a', 'b', 'c']);
      await expect(push(storage, { sender: devices.a!, targets: ['b', 'ghost'] })).rejects.toMatchObject({
        reason: 'UNKNOWN_TARGET',
        status: 404,
        details: { unknownTargets: ['ghost'] },
      });
      expect(await pullAll(storage, devices.b!)).toEqual([]);
      const diffId = id();
      await push(storage, { sender: devices.a!, targets: ['b'], diffId });
      const mine = id();
      await push(storage, { sender: devices.a!, targets: ['c'], diffId: mine });
      await expect(storage.ack(claim(), devices.c!, [mine, diffId])).rejects.toMatchObject({
        reason: 'NOT_YOURS',
        status: 403,
      });
      expect(await pullAll(storage, devices.b!)).toHaveLength(1);
      expect(await pullAll(storage, devices.c!)).toHaveLength(1);
      expect(await storage.stats()).toMatchObject({ diffs: 2 });
    });

    it('enforces the byte and count quotas per account', async () => {
      const storage = await open();
      const { devices } = await withAccount(storage, ['a', 'b']);
      await push(storage, { sender: devices.a!, targets: ['b'], body: bytes(900) });
      await expect(
        push(storage, { sender: devices.a!, targets: ['b'], body: bytes(101) }),
      ).rejects.toMatchObject({
        reason: 'QUOTA_BYTES',
        status: 429,
      });
      for (let i = 0; i < 7; i++)
        await push(storage, { sender: devices.a!, targets: ['b'], body: bytes(10) });
      await expect(
        push(storage, { sender: devices.a!, targets: ['b'], body: bytes(10) }),
      ).rejects.toMatchObject({
        reason: 'QUOTA_COUNT',
      });
      expect(await storage.stats()).toMatchObject({ diffs: 8, bytes: 970 });
      // Another account has its own quota.
      const other = await withAccount(storage, ['x', 'y']);
      await push(storage, { sender: other.devices.x!, targets: ['y'], body: bytes(900) });
    });

    it("drops a removed device's mailbox and everything of a deleted account", async () => {
      const storage = await open();
      const { accountId, devices } = await withAccount(storage, ['a', 'b', 'c']);
      await push(storage, { sender: devices.a!, targets: ['b'], body: bytes(10) });
      await push(storage, { sender: devices.a!, targets: ['b', 'c'], body: bytes(20) });
      expect(await storage.removeDevice(claim(), accountId, 'b')).toEqual({ removed: true, droppedDiffs: 2 });
      expect(await storage.findDeviceByKey(devices.b!.publicKey)).toBeUndefined();
      expect(await storage.stats()).toMatchObject({ diffs: 1, bytes: 20, devices: 2 });
      expect(await storage.removeDevice(claim(), accountId, 'b')).toEqual({
        removed: false,
        droppedDiffs: 0,
      });
      const other = await withAccount(storage, ['x', 'y']);
      await push(storage, { sender: other.devices.x!, targets: ['y'] });
      expect(await storage.deleteAccount(claim(), accountId)).toBe(true);
      expect(await storage.stats()).toMatchObject({ accounts: 1, devices: 2, diffs: 1 });
      expect(await pullAll(storage, devices.c!)).toEqual([]);
      expect(await pullAll(storage, other.devices.y!)).toHaveLength(1);
      await expect(push(storage, { sender: devices.a!, targets: ['c'] })).rejects.toMatchObject({
        reason: 'UNKNOWN_KEY',
      });
    });

    it('sweeps expired diffs (freeing quota) and expired nonces', async () => {
      const storage = await open();
      const { devices } = await withAccount(storage, ['a', 'b']);
      await push(storage, { sender: devices.a!, targets: ['b'], expiresAt: NOW + 1_000, body: bytes(30) });
      await push(storage, { sender: devices.a!, targets: ['b'], expiresAt: NOW + 60_000, body: bytes(40) });
      expect(await pullAll(storage, devices.b!, NOW + 2_000)).toHaveLength(1);
      const swept = await storage.sweep(NOW + 2_000);
      expect(swept.diffs).toBe(1);
      expect(await storage.stats()).toMatchObject({ diffs: 1, bytes: 40 });
      expect((await storage.sweep(NOW + 10 * 60_000)).nonces).toBeGreaterThan(0);
    });

    it('loses nothing under concurrent pushes from several devices', async () => {
      const storage = await open();
      const { devices } = await withAccount(storage, ['a', 'b', 'c']);
      const results = await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          push(storage, {
            sender: i % 2 ? devices.a! : devices.c!,
            targets: ['b'],
            body: bytes(5),
            quota: { maxAccountBytes: 1e9, maxAccountDiffs: 1e9 },
          }),
        ),
      );
      expect(results.every((r) => r.stored)).toBe(true);
      expect(await pullAll(storage, devices.b!)).toHaveLength(60);
      expect(await storage.stats()).toMatchObject({ diffs: 60, bytes: 300 });
    });
  });
}
