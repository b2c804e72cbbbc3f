import { equalBytes } from '@ferry/core';
import { RelayRejection } from '../errors.js';
import type {
  DeviceRecord,
  NonceClaim,
  PullInput,
  PullResult,
  PushInput,
  PushResult,
  RegisterInput,
  RelayStorage,
  StorageStats,
} from './types.js';

export type SqlValue = string | number | Uint8Array | null;

/** Statements use `?` placeholders; the PostgreSQL driver numbers them. */
export interface SqlTx {
  get<T>(sql: string, params?: SqlValue[]): Promise<T | undefined>;
  all<T>(sql: string, params?: SqlValue[]): Promise<T[]>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: SqlValue[]): Promise<number>;
}

export interface SqlDriver {
  readonly kind: RelayStorage['kind'];
  /** Row lock clause for `SELECT ... FROM accounts` ('' in SQLite, whose single writer needs none). */
  readonly forUpdate: string;
  /**
   * Announce a stored diff to every instance sharing the database, inside the push transaction (so
   * only committed pushes are announced). Absent for a single-process store.
   */
  announce?(tx: SqlTx, accountId: string, clientId: string): Promise<void>;
  onAnnounced?(listener: (stored: { accountId: string; clientIds: string[] }) => void): Promise<void>;
  /** Runs `fn` atomically and durably: resolved only once committed; a throw undoes only `fn`'s work. */
  transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T>;
  read<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

interface AccountRow {
  bytes: number;
  diffs: number;
}

/** Rows deleted per sweep transaction. */
const SWEEP_SLICE = 5_000;

const placeholders = (count: number): string => Array.from({ length: count }, () => '?').join(',');

/**
 * The relay's semantics, written once over a tiny SQL interface so both backends behave the same.
 * Every write transaction of an account first locks its account row (PostgreSQL), which orders
 * concurrent writers of one account and rules out deadlocks; SQLite has a single writer anyway.
 *
 * Tables: accounts (quota counters), devices (one key per client id), diffs (one shared body per
 * pushed diff with a reference count, kept as a body-less tombstone until expiry so retried pushes
 * stay idempotent), mailbox (one row per target in push order, unique per diff and target by
 * construction; acked rows stay until expiry so a repeated ack succeeds while an ack for someone
 * else's diff is refused), nonces.
 */
export class SqlRelayStorage implements RelayStorage {
  readonly kind: RelayStorage['kind'];

  readonly onStored?: RelayStorage['onStored'];

  constructor(private readonly driver: SqlDriver) {
    this.kind = driver.kind;
    if (driver.onAnnounced) this.onStored = (listener) => driver.onAnnounced!(listener);
  }

  findDeviceByKey(publicKey: string): Promise<DeviceRecord | undefined> {
    return this.driver.read((tx) =>
      tx.get<DeviceRecord>(
        'SELECT account_id AS "accountId", client_id AS "clientId", public_key AS "publicKey" FROM devices WHERE public_key = ?',
        [publicKey],
      ),
    );
  }

  registerDevice(claim: NonceClaim, input: RegisterInput): Promise<{ created: boolean; replaced: boolean }> {
    return this.driver.transaction(async (tx) => {
      await claimNonce(tx, claim);
      await tx.run(
        'INSERT INTO accounts (account_id, bytes, diffs, created_at) VALUES (?, 0, 0, ?) ON CONFLICT DO NOTHING',
        [input.accountId, input.now],
      );
      await this.lockAccount(tx, input.accountId);
      const existing = await tx.get<{ public_key: string }>(
        'SELECT public_key FROM devices WHERE account_id = ? AND client_id = ?',
        [input.accountId, input.clientId],
      );
      if (existing?.public_key === input.publicKey) return { created: false, replaced: false };
      if (existing && !input.replace) {
        throw new RelayRejection(
          'DEVICE_EXISTS',
          `client id ${input.clientId} is registered with another key`,
        );
      }
      const holder = await tx.get('SELECT 1 AS one FROM devices WHERE public_key = ?', [input.publicKey]);
      if (holder)
        throw new RelayRejection('DEVICE_EXISTS', 'this public key is registered for another device');
      if (existing) {
        await dropMailbox(tx, input.accountId, input.clientId);
        await tx.run(
          'UPDATE devices SET public_key = ?, created_at = ? WHERE account_id = ? AND client_id = ?',
          [input.publicKey, input.now, input.accountId, input.clientId],
        );
        return { created: false, replaced: true };
      }
      const count = await tx.get<{ n: number }>(
        'SELECT CAST(COUNT(*) AS BIGINT) AS n FROM devices WHERE account_id = ?',
        [input.accountId],
      );
      if ((count?.n ?? 0) >= input.maxDevices) {
        throw new RelayRejection('DEVICE_LIMIT', `the account already has ${input.maxDevices} devices`);
      }
      await tx.run(
        'INSERT INTO devices (account_id, client_id, public_key, created_at) VALUES (?, ?, ?, ?)',
        [input.accountId, input.clientId, input.publicKey, input.now],
      );
      return { created: true, replaced: false };
    });
  }

  removeDevice(claim: NonceClaim, accountId: string, clientId: string) {
    return this.driver.transaction(async (tx) => {
      await claimNonce(tx, claim);
      await this.lockAccount(tx, accountId);
      const droppedDiffs = await dropMailbox(tx, accountId, clientId);
      const removed = await tx.run('DELETE FROM devices WHERE account_id = ? AND client_id = ?', [
        accountId,
        clientId,
      ]);
      return { removed: removed > 0, droppedDiffs };
    });
  }

  listDevices(claim: NonceClaim, accountId: string): Promise<string[]> {
    return this.driver.transaction(async (tx) => {
      await claimNonce(tx, claim);
      const rows = await tx.all<{ client_id: string }>(
        'SELECT client_id FROM devices WHERE account_id = ? ORDER BY client_id',
        [accountId],
      );
      return rows.map((row) => row.client_id);
    });
  }

  deleteAccount(claim: NonceClaim, accountId: string): Promise<boolean> {
    return this.driver.transaction(async (tx) => {
      await claimNonce(tx, claim);
      await this.lockAccount(tx, accountId);
      await tx.run('DELETE FROM mailbox WHERE account_id = ?', [accountId]);
      await tx.run('DELETE FROM diffs WHERE account_id = ?', [accountId]);
      const devices = await tx.run('DELETE FROM devices WHERE account_id = ?', [accountId]);
      const accounts = await tx.run('DELETE FROM accounts WHERE account_id = ?', [accountId]);
      return devices + accounts > 0;
    });
  }

  push(claim: NonceClaim, input: PushInput): Promise<PushResult> {
    const { sender } = input;
    return this.driver.transaction(async (tx) => {
      await claimNonce(tx, claim);
      const account = await this.lockAccount(tx, sender.accountId);
      const registered = await tx.get(
        'SELECT 1 AS one FROM devices WHERE account_id = ? AND client_id = ? AND public_key = ?',
        [sender.accountId, sender.clientId, sender.publicKey],
      );
      if (!account || !registered)
        throw new RelayRejection('UNKNOWN_KEY', 'the sending device is not registered');

      const existing = await tx.get<{ sender: string; digest: Uint8Array; expires_at: number }>(
        'SELECT sender, digest, expires_at FROM diffs WHERE account_id = ? AND diff_id = ?',
        [sender.accountId, input.diffId],
      );
      if (existing) {
        if (existing.sender !== sender.clientId || !equalBytes(existing.digest, input.digest)) {
          throw new RelayRejection(
            'DIFF_ID_CONFLICT',
            `diffId ${input.diffId} was already used for another diff`,
          );
        }
        const rows = await tx.all<{ client_id: string }>(
          'SELECT client_id FROM mailbox WHERE account_id = ? AND diff_id = ? ORDER BY position',
          [sender.accountId, input.diffId],
        );
        return { stored: false, targets: rows.map((row) => row.client_id), expiresAt: existing.expires_at };
      }

      const targets = await resolveTargets(tx, sender, input.targets);
      const size = input.body.length;
      if (targets.length > 0) {
        if (account.bytes + size > input.quota.maxAccountBytes) {
          throw new RelayRejection(
            'QUOTA_BYTES',
            `the account stores ${account.bytes} bytes; ${size} more exceeds its quota of ${input.quota.maxAccountBytes}`,
          );
        }
        if (account.diffs + 1 > input.quota.maxAccountDiffs) {
          throw new RelayRejection(
            'QUOTA_COUNT',
            `the account already stores ${account.diffs} diffs, its quota`,
          );
        }
        await tx.run('UPDATE accounts SET bytes = bytes + ?, diffs = diffs + 1 WHERE account_id = ?', [
          size,
          sender.accountId,
        ]);
      }
      // With no target the diff is kept as a tombstone only, so a retry of this push stays a no-op.
      await tx.run(
        'INSERT INTO diffs (account_id, diff_id, sender, body, size, digest, refs, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
          sender.accountId,
          input.diffId,
          sender.clientId,
          targets.length > 0 ? input.body : null,
          size,
          input.digest,
          targets.length,
          input.now,
          input.expiresAt,
        ],
      );
      if (targets.length > 0) {
        await tx.run(
          `INSERT INTO mailbox (account_id, client_id, diff_id, acked) VALUES ${targets.map(() => '(?, ?, ?, 0)').join(', ')}`,
          targets.flatMap((target) => [sender.accountId, target, input.diffId]),
        );
        for (const target of targets) await this.driver.announce?.(tx, sender.accountId, target);
      }
      return { stored: true, targets, expiresAt: input.expiresAt };
    });
  }

  pull(claim: NonceClaim, input: PullInput): Promise<PullResult> {
    return this.driver.transaction(async (tx) => {
      await claimNonce(tx, claim);
      const rows = await tx.all<{
        position: number;
        diff_id: string;
        sender: string;
        body: Uint8Array;
        expires_at: number;
      }>(
        `SELECT m.position, m.diff_id, d.sender, d.body, d.expires_at
           FROM mailbox m JOIN diffs d ON d.account_id = m.account_id AND d.diff_id = m.diff_id
          WHERE m.account_id = ? AND m.client_id = ? AND m.acked = 0 AND m.position > ? AND d.expires_at > ?
          ORDER BY m.position LIMIT ?`,
        [input.device.accountId, input.device.clientId, input.after, input.now, input.limit + 1],
      );
      const diffs: PullResult['diffs'] = [];
      let bytes = 0;
      for (const row of rows.slice(0, input.limit)) {
        if (diffs.length > 0 && bytes + row.body.length > input.maxBytes) break;
        bytes += row.body.length;
        diffs.push({
          diffId: row.diff_id,
          senderClientId: row.sender,
          body: row.body,
          expiresAt: row.expires_at,
          position: row.position,
        });
      }
      return { diffs, more: rows.length > diffs.length };
    });
  }

  ack(claim: NonceClaim, device: DeviceRecord, diffIds: string[]): Promise<number> {
    return this.driver.transaction(async (tx) => {
      await claimNonce(tx, claim);
      await this.lockAccount(tx, device.accountId);
      const mailbox = [device.accountId, device.clientId];
      const rows = await tx.all<{ diff_id: string; acked: number }>(
        `SELECT diff_id, acked FROM mailbox WHERE account_id = ? AND client_id = ? AND diff_id IN (${placeholders(diffIds.length)})`,
        [...mailbox, ...diffIds],
      );
      if (rows.length < diffIds.length) {
        const mine = new Set(rows.map((row) => row.diff_id));
        const foreign = diffIds.filter((id) => !mine.has(id));
        throw new RelayRejection(
          'NOT_YOURS',
          `${foreign.length} diff id(s) were never in this device's mailbox (first: ${foreign[0]}); nothing was acknowledged`,
        );
      }
      const fresh = rows.filter((row) => row.acked === 0).map((row) => row.diff_id);
      if (fresh.length === 0) return 0;
      await tx.run(
        `UPDATE mailbox SET acked = 1 WHERE account_id = ? AND client_id = ? AND diff_id IN (${placeholders(fresh.length)})`,
        [...mailbox, ...fresh],
      );
      for (const diffId of fresh) await release(tx, device.accountId, diffId);
      return fresh.length;
    });
  }

  async sweep(now: number): Promise<{ diffs: number; nonces: number }> {
    // In slices, so a backlog of expired nonces never holds the writer (or the event loop) for long.
    let nonces = 0;
    for (;;) {
      const deleted = await this.driver.transaction((tx) =>
        tx.run(
          'DELETE FROM nonces WHERE (key_id, nonce) IN (SELECT key_id, nonce FROM nonces WHERE expires_at <= ? LIMIT ?)',
          [now, SWEEP_SLICE],
        ),
      );
      nonces += deleted;
      if (deleted < SWEEP_SLICE) break;
    }
    const accounts = await this.driver.read((tx) =>
      tx.all<{ account_id: string }>(
        'SELECT DISTINCT account_id FROM diffs WHERE expires_at <= ? LIMIT 1000',
        [now],
      ),
    );
    let diffs = 0;
    for (const { account_id: accountId } of accounts) {
      diffs += await this.driver.transaction(async (tx) => {
        await this.lockAccount(tx, accountId);
        const live = await tx.get<{ bytes: number; n: number }>(
          'SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes, CAST(COUNT(*) AS BIGINT) AS n FROM diffs WHERE account_id = ? AND expires_at <= ? AND refs > 0',
          [accountId, now],
        );
        if (live && live.n > 0) {
          await tx.run('UPDATE accounts SET bytes = bytes - ?, diffs = diffs - ? WHERE account_id = ?', [
            live.bytes,
            live.n,
            accountId,
          ]);
        }
        await tx.run(
          'DELETE FROM mailbox WHERE account_id = ? AND diff_id IN (SELECT diff_id FROM diffs WHERE account_id = ? AND expires_at <= ?)',
          [accountId, accountId, now],
        );
        return tx.run('DELETE FROM diffs WHERE account_id = ? AND expires_at <= ?', [accountId, now]);
      });
    }
    return { diffs, nonces };
  }

  stats(): Promise<StorageStats> {
    return this.driver.read(async (tx) => {
      const totals = await tx.get<{ bytes: number; diffs: number; accounts: number }>(
        'SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes, CAST(COALESCE(SUM(diffs), 0) AS BIGINT) AS diffs, CAST(COUNT(*) AS BIGINT) AS accounts FROM accounts',
      );
      const devices = await tx.get<{ n: number }>('SELECT CAST(COUNT(*) AS BIGINT) AS n FROM devices');
      return {
        bytes: totals?.bytes ?? 0,
        diffs: totals?.diffs ?? 0,
        accounts: totals?.accounts ?? 0,
        devices: devices?.n ?? 0,
      };
    });
  }

  close(): Promise<void> {
    return this.driver.close();
  }

  private lockAccount(tx: SqlTx, accountId: string): Promise<AccountRow | undefined> {
    return tx.get<AccountRow>(
      `SELECT bytes, diffs FROM accounts WHERE account_id = ?${this.driver.forUpdate}`,
      [accountId],
    );
  }
}

async function claimNonce(tx: SqlTx, claim: NonceClaim): Promise<void> {
  const inserted = await tx.run(
    'INSERT INTO nonces (key_id, nonce, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
    [claim.keyId, claim.nonce, claim.expiresAt],
  );
  if (inserted === 0) throw new RelayRejection('REPLAY', 'this nonce was already used with this key');
}

async function resolveTargets(tx: SqlTx, sender: DeviceRecord, targets: string[] | '*'): Promise<string[]> {
  if (targets === '*') {
    const rows = await tx.all<{ client_id: string }>(
      'SELECT client_id FROM devices WHERE account_id = ? AND client_id <> ? ORDER BY client_id',
      [sender.accountId, sender.clientId],
    );
    return rows.map((row) => row.client_id);
  }
  const rows = await tx.all<{ client_id: string }>(
    `SELECT client_id FROM devices WHERE account_id = ? AND client_id IN (${placeholders(targets.length)})`,
    [sender.accountId, ...targets],
  );
  if (rows.length < targets.length) {
    const known = new Set(rows.map((row) => row.client_id));
    const unknown = targets.filter((target) => !known.has(target));
    throw new RelayRejection(
      'UNKNOWN_TARGET',
      `not a registered device of this account: ${unknown.join(', ')}`,
      {
        unknownTargets: unknown,
      },
    );
  }
  return targets;
}

/** One target is done with a diff; the last one frees its body and the account's quota. */
async function release(tx: SqlTx, accountId: string, diffId: string): Promise<void> {
  const row = await tx.get<{ refs: number; size: number }>(
    'UPDATE diffs SET refs = refs - 1, body = CASE WHEN refs = 1 THEN NULL ELSE body END WHERE account_id = ? AND diff_id = ? RETURNING refs, size',
    [accountId, diffId],
  );
  if (row?.refs === 0) {
    await tx.run('UPDATE accounts SET bytes = bytes - ?, diffs = diffs - 1 WHERE account_id = ?', [
      row.size,
      accountId,
    ]);
  }
}

/** Releases every pending diff of a device and deletes its mailbox; returns how many were pending. */
async function dropMailbox(tx: SqlTx, accountId: string, clientId: string): Promise<number> {
  const pending = await tx.all<{ diff_id: string }>(
    'SELECT diff_id FROM mailbox WHERE account_id = ? AND client_id = ? AND acked = 0',
    [accountId, clientId],
  );
  for (const { diff_id: diffId } of pending) await release(tx, accountId, diffId);
  await tx.run('DELETE FROM mailbox WHERE account_id = ? AND client_id = ?', [accountId, clientId]);
  return pending.length;
}
