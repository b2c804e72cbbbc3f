import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { EventEmitter } from 'eventemitter3';
import { compressionThreshold, compressMessage } from '../compression/deflate.js';
import { deriveSigningKeyPair, type SigningKeyPair, sign, signingKeyFromSeed } from '../crypto/sign.js';
import { deriveSubkey } from '../crypto/subkeys.js';
import { FerryError, type FerryErrorCode } from '../errors.js';
import type { MailboxWatch } from '../signaling/client.js';
import { fromBase64, randomBytes, toBase64, utf8 } from '../util/bytes.js';
import { requirePositive } from '../util/options.js';
import { type DiffHeader, openDiff, sealDiff } from './envelope.js';
import { relayAccountId, signRequest } from './signature.js';
import { MemoryRelayStateStore, type RelayState, type RelayStateStore } from './state.js';
import type { DiffRelay, RelayedDiff } from './types.js';
import {
  AckDiffResponseSchema,
  ALL_DEVICES,
  DeleteAccountResponseSchema,
  ListDevicesResponseSchema,
  MAX_ACK_IDS,
  MAX_PULL_LIMIT,
  MAX_PUSH_TARGETS,
  PullDiffResponseSchema,
  type PulledDiff,
  PushDiffResponseSchema,
  RELAY_PATHS,
  RegisterDeviceResponseSchema,
  RelayErrorResponseSchema,
  RemoveDeviceResponseSchema,
} from './wire.js';

export interface RelayRetryOptions {
  /** Tries per request, the first included. Default 5. */
  attempts?: number;
  /** Delay before the first retry; doubled each time, with jitter. Default 100 ms. */
  initialDelayMs?: number;
  maxDelayMs?: number;
}

export interface RelayClientOptions {
  /** Base URL of the diff server, e.g. `https://relay.example.org` (a path prefix is kept). */
  url: string;
  accountKey: Uint8Array;
  /** This device's client id (the same one it uses with the signaling server). */
  clientId: string;
  /** Where the device key, sequence numbers and acknowledged ids live. Default: in memory. */
  state?: RelayStateStore;
  fetch?: typeof globalThis.fetch;
  retry?: RelayRetryOptions;
  /** How long pushed diffs may wait for their targets. Default 7 days (the server may cap it). */
  ttlMs?: number;
  /** Diffs per pull request. Default 100. */
  pageSize?: number;
  /** Per-request timeout (a timeout is retried like a network error). Default 30 s. */
  requestTimeoutMs?: number;
  /**
   * Payloads of at least this many bytes are compressed (DEFLATE, inside the seal) when that makes
   * them at least an eighth smaller. Default 8 KiB; `false` never compresses (see the README's
   * security notes on compression).
   */
  compressMinBytes?: number | false;
  now?: () => number;
}

/** A sender's sequence jumped: diffs from..to (inclusive) never reached this device (withheld or expired). */
export interface RelayGap {
  senderClientId: string;
  epoch: string;
  stream: 'direct' | 'broadcast';
  from: number;
  to: number;
}

export type RelayRejectReason = 'malformed' | 'decrypt' | 'mismatch' | 'not-addressed' | 'expired' | 'replay';

/** A diff the server handed over that this device refused (and acknowledged, so it is not served again). */
export interface RelayRejectedDiff {
  diffId: string;
  senderClientId: string;
  reason: RelayRejectReason;
  error?: unknown;
}

export interface RelayClientEvents {
  gap: (gap: RelayGap) => void;
  rejected: (rejected: RelayRejectedDiff) => void;
}

/** The diff server refused a request: `reason` is its RELAY_ERRORS reason, `status` the HTTP status. */
export class RelayError extends FerryError {
  constructor(
    code: FerryErrorCode,
    message: string,
    readonly status: number,
    readonly reason: string,
    options?: { cause?: unknown },
    /** UNKNOWN_TARGET: the push's targets that are not registered devices of the account. */
    readonly unknownTargets: string[] = [],
  ) {
    super(code, message, options);
  }
}

const REASON_CODES: Partial<Record<string, FerryErrorCode>> = {
  BAD_JSON: 'BAD_JSON',
  SCHEMA_MISMATCH: 'SCHEMA_MISMATCH',
  BAD_BASE64: 'BAD_BASE64',
  TOO_LARGE: 'TOO_LARGE',
  BAD_SIGNATURE: 'BAD_SIGNATURE',
  UNSIGNED: 'BAD_SIGNATURE',
  BAD_DIGEST: 'BAD_SIGNATURE',
  STALE: 'STALE',
  REPLAY: 'REPLAY',
  QUOTA_BYTES: 'LIMIT',
  QUOTA_COUNT: 'LIMIT',
  DEVICE_LIMIT: 'LIMIT',
  RATE_LIMITED: 'LIMIT',
};

const DEFAULT_TTL_MS = 7 * 24 * 3600_000;
const ACK_MEMORY_FALLBACK_MS = 30 * 24 * 3600_000;
const randomId = (): string => toBase64(randomBytes(16), { url: true });
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The diff server's client: seals diffs under the account's `diff` subkey, signs every request (the
 * account key for account operations, this device's own key for its mailbox), retries network errors,
 * 5xx and rate limits with exponential backoff (safe: pushes are idempotent by diffId), pulls and acks
 * in batches, and checks everything it receives: foreign, tampered, re-addressed, expired or replayed
 * diffs are dropped (reported as `rejected`), and a jump in a sender's sequence is reported as `gap`.
 *
 * Isomorphic: fetch and Uint8Array only.
 */
export class RelayClient extends EventEmitter<RelayClientEvents> implements DiffRelay {
  /** The account id the server knows (self-certifying: a hash of the account's relay public key). */
  readonly accountId: string;
  readonly clientId: string;
  private readonly accountSigner: SigningKeyPair;
  private readonly diffKey: Uint8Array;
  private readonly baseUrl: string;
  private readonly basePath: string;
  private readonly store: RelayStateStore;
  private readonly doFetch: typeof globalThis.fetch;
  private readonly retry: Required<RelayRetryOptions>;
  private readonly ttlMs: number;
  private readonly compressMinBytes: number;
  private readonly pageSize: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;

  private ready: Promise<void> | undefined;
  private device: SigningKeyPair | undefined;
  private epoch = '';
  private readonly sent = new Map<string, number>();
  private readonly received = new Map<string, number>();
  private readonly acked = new Map<string, number>();
  /** Expiry of diffs handed to the caller and not yet acknowledged, to bound the acked set. */
  private readonly pending = new Map<string, number>();
  private pushChain: Promise<unknown> = Promise.resolve();
  /** Server clock minus ours, learned from a STALE answer. */
  private clockOffsetMs = 0;
  private saveChain: Promise<void> = Promise.resolve();

  constructor(options: RelayClientOptions) {
    super();
    const { attempts, initialDelayMs, maxDelayMs } = options.retry ?? {};
    requirePositive('DiffRelay client', { attempts, pageSize: options.pageSize }, { integer: true });
    requirePositive('DiffRelay client', { ttlMs: options.ttlMs, requestTimeoutMs: options.requestTimeoutMs });
    this.compressMinBytes = compressionThreshold('DiffRelay client', options.compressMinBytes);
    // Retries are bounded by `attempts`: no delay between them is allowed.
    requirePositive('DiffRelay client', { initialDelayMs, maxDelayMs }, { zeroAllowed: true });
    this.accountSigner = deriveSigningKeyPair(options.accountKey, 'relaySigning');
    this.accountId = relayAccountId(this.accountSigner.publicKey);
    this.diffKey = deriveSubkey(options.accountKey, 'diff');
    this.clientId = options.clientId;
    const url = new URL(options.url);
    this.baseUrl = url.origin;
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.store = options.state ?? new MemoryRelayStateStore();
    this.doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.retry = { attempts: 5, initialDelayMs: 100, maxDelayMs: 5_000, ...options.retry };
    this.ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    this.pageSize = Math.min(options.pageSize ?? 100, MAX_PULL_LIMIT);
    this.timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.now = options.now ?? Date.now;
  }

  /** Loads the state and registers this device (once; called by every operation). */
  register(): Promise<void> {
    this.ready ??= this.loadAndRegister().catch((error: unknown) => {
      this.ready = undefined;
      throw error;
    });
    return this.ready;
  }

  /** Hand this to `SignalingClient.watchMailbox` to hear when diffs arrive for this device. */
  async mailboxWatch(): Promise<MailboxWatch> {
    await this.register();
    const device = this.device!;
    return {
      accountId: this.accountId,
      clientId: this.clientId,
      publicKey: toBase64(device.publicKey, { url: true }),
      sign: (message) => sign(device.secretKey, message),
    };
  }

  push(targetClientIds: string[], payload: Uint8Array): Promise<{ diffId: string }> {
    const targets = [...new Set(targetClientIds)];
    if (targets.length === 0 || targets.length > MAX_PUSH_TARGETS || targets.includes(ALL_DEVICES)) {
      return Promise.reject(
        new FerryError('SCHEMA_MISMATCH', `push needs 1..${MAX_PUSH_TARGETS} target client ids`),
      );
    }
    return this.serializedPush(targets, payload);
  }

  /** Leaves the diff for every other device registered for the account when the server receives it. */
  pushToAll(payload: Uint8Array): Promise<{ diffId: string }> {
    return this.serializedPush([ALL_DEVICES], payload);
  }

  async pull(options: { limit?: number } = {}): Promise<RelayedDiff[]> {
    await this.register();
    const limit = options.limit ?? 1_000;
    const accepted: RelayedDiff[] = [];
    const refused: string[] = [];
    let cursor: string | undefined;
    while (accepted.length < limit) {
      const page = await this.request(
        RELAY_PATHS.pull,
        {
          accountId: this.accountId,
          clientId: this.clientId,
          ...(cursor ? { cursor } : {}),
          limit: Math.min(this.pageSize, limit - accepted.length),
        },
        this.deviceKey(),
        PullDiffResponseSchema,
      );
      for (const diff of page.diffs) {
        const result = this.inspect(diff);
        if ('reason' in result) {
          refused.push(diff.diffId);
          this.emit('rejected', result);
        } else {
          accepted.push(result);
        }
      }
      if (!page.more) break;
      // A server that says more but does not move on would be asked for the same page forever.
      if (page.cursor === (cursor ?? '0')) {
        throw new FerryError(
          'SERVER',
          `the diff server said more diffs wait but stayed at cursor ${page.cursor}`,
        );
      }
      cursor = page.cursor;
    }
    if (refused.length > 0) await this.ack(refused);
    else await this.save();
    return accepted;
  }

  async ack(diffIds: string[]): Promise<void> {
    await this.register();
    const ids = [...new Set(diffIds)];
    for (let i = 0; i < ids.length; i += MAX_ACK_IDS) {
      const batch = ids.slice(i, i + MAX_ACK_IDS);
      await this.request(
        RELAY_PATHS.ack,
        { accountId: this.accountId, clientId: this.clientId, diffIds: batch },
        this.deviceKey(),
        AckDiffResponseSchema,
      );
      for (const id of batch) {
        this.acked.set(id, this.pending.get(id) ?? this.now() + ACK_MEMORY_FALLBACK_MS);
        this.pending.delete(id);
      }
    }
    await this.save();
  }

  /** Client ids registered for the account (signed with the account key). */
  async listDevices(): Promise<string[]> {
    const { devices } = await this.request(
      RELAY_PATHS.listDevices,
      { accountId: this.accountId },
      this.accountSigner,
      ListDevicesResponseSchema,
    );
    return devices;
  }

  /** Unregisters a device (default: this one) and drops its mailbox. */
  async removeDevice(clientId: string = this.clientId): Promise<{ removed: boolean; droppedDiffs: number }> {
    const result = await this.request(
      RELAY_PATHS.removeDevice,
      { accountId: this.accountId, clientId },
      this.accountSigner,
      RemoveDeviceResponseSchema,
    );
    if (clientId === this.clientId) this.ready = undefined;
    return result;
  }

  /** Deletes everything the server holds for the account: devices, mailboxes, diffs. */
  async deleteAccount(): Promise<boolean> {
    const { deleted } = await this.request(
      RELAY_PATHS.deleteAccount,
      { accountId: this.accountId },
      this.accountSigner,
      DeleteAccountResponseSchema,
    );
    this.ready = undefined;
    return deleted;
  }

  // ---- internals ----

  private async loadAndRegister(): Promise<void> {
    const state = await this.store.load();
    const fresh = state?.deviceSeed === undefined;
    const seed = fresh ? randomBytes(32) : fromBase64(state.deviceSeed!);
    this.device = signingKeyFromSeed(seed);
    this.epoch = state?.epoch ?? toBase64(randomBytes(9), { url: true });
    for (const [key, value] of state?.sent ?? []) this.sent.set(key, value);
    for (const [key, value] of state?.received ?? []) this.received.set(key, value);
    for (const [key, value] of state?.acked ?? []) this.acked.set(key, value);
    if (fresh) await this.save();
    // A device that lost its key re-keys its client id; the server then drops the old key's mailbox.
    await this.request(
      RELAY_PATHS.registerDevice,
      {
        accountId: this.accountId,
        clientId: this.clientId,
        publicKey: toBase64(this.device.publicKey, { url: true }),
        replace: fresh,
      },
      this.accountSigner,
      RegisterDeviceResponseSchema,
    );
  }

  private deviceKey(): SigningKeyPair {
    if (!this.device) throw new FerryError('INTERNAL', 'relay client used before registration');
    return this.device;
  }

  /** One push at a time, so sequence numbers reach the server in order and a refused push can give its numbers back. */
  private serializedPush(targets: string[], payload: Uint8Array): Promise<{ diffId: string }> {
    const run = this.pushChain.then(() => this.pushNow(targets, payload));
    this.pushChain = run.catch(() => undefined);
    return run;
  }

  private async pushNow(targets: string[], payload: Uint8Array): Promise<{ diffId: string }> {
    await this.register();
    const diffId = randomId();
    const expiresAt = this.now() + this.ttlMs;
    const to = targets.map((target): [string, number] => [target, (this.sent.get(target) ?? 0) + 1]);
    for (const [target, sequence] of to) this.sent.set(target, sequence);
    // Numbers are saved before the push leaves: a crash after sending must never reuse one.
    await this.save();
    const compressed = payload.length >= this.compressMinBytes ? compressMessage(payload) : undefined;
    const header: DiffHeader = {
      v: 1,
      id: diffId,
      from: this.clientId,
      ep: this.epoch,
      to,
      exp: expiresAt,
      ...(compressed ? { z: 1 as const } : {}),
    };
    const sealed = sealDiff(this.diffKey, header, compressed ?? payload);
    const encryptedDiff = toBase64(sealed, { url: true });
    try {
      await this.request(
        RELAY_PATHS.push,
        {
          accountId: this.accountId,
          ...(targets.length === 1 ? { targetClientId: targets[0] } : { targetClientIds: targets }),
          diffId,
          encryptedDiff,
          expiresAt,
        },
        this.deviceKey(),
        PushDiffResponseSchema,
      );
    } catch (error) {
      // A 4xx means nothing was stored: the numbers are free again. After a network failure the
      // outcome is unknown, so they stay used (a receiver then sees a gap, which is the truth).
      if (error instanceof RelayError && error.status >= 400 && error.status < 500) {
        for (const [target, sequence] of to) this.sent.set(target, sequence - 1);
        await this.save();
      }
      throw error;
    }
    return { diffId };
  }

  private inspect(diff: PulledDiff): RelayedDiff | RelayRejectedDiff {
    const reject = (reason: RelayRejectReason, error?: unknown): RelayRejectedDiff => ({
      diffId: diff.diffId,
      senderClientId: diff.senderClientId,
      reason,
      ...(error === undefined ? {} : { error }),
    });
    let opened: { header: DiffHeader; payload: Uint8Array };
    try {
      opened = openDiff(this.diffKey, fromBase64(diff.encryptedDiff));
    } catch (error) {
      return reject(
        error instanceof FerryError && error.code === 'DECRYPT_FAILED' ? 'decrypt' : 'malformed',
        error,
      );
    }
    const { header, payload } = opened;
    if (header.id !== diff.diffId || header.from !== diff.senderClientId) return reject('mismatch');
    const direct = header.to.find(([target]) => target === this.clientId);
    const broadcast =
      header.from === this.clientId ? undefined : header.to.find(([target]) => target === ALL_DEVICES);
    const addressed = direct ?? broadcast;
    if (!addressed) return reject('not-addressed');
    if (header.exp <= this.now()) return reject('expired');
    if (this.acked.has(header.id)) return reject('replay');

    const sequence = addressed[1];
    const stream = direct ? 'direct' : 'broadcast';
    const key = JSON.stringify([header.from, header.ep, stream]);
    // A broadcast stream starts where this device first hears it: earlier broadcasts predate its registration.
    const highest = this.received.get(key) ?? (direct ? 0 : sequence - 1);
    if (sequence > highest + 1) {
      this.emit('gap', {
        senderClientId: header.from,
        epoch: header.ep,
        stream,
        from: highest + 1,
        to: sequence - 1,
      });
    }
    this.received.set(key, Math.max(highest, sequence));
    this.pending.set(header.id, header.exp);
    return { diffId: header.id, senderClientId: header.from, sequence, payload };
  }

  private save(): Promise<void> {
    const run = this.saveChain.then(() => {
      const now = this.now();
      for (const [id, expiry] of this.acked) if (expiry <= now) this.acked.delete(id);
      const state: RelayState = {
        ...(this.device ? { deviceSeed: toBase64(this.device.secretKey, { url: true }) } : {}),
        epoch: this.epoch,
        sent: [...this.sent],
        received: [...this.received],
        acked: [...this.acked],
      };
      return this.store.save(state);
    });
    this.saveChain = run.catch(() => undefined);
    return run;
  }

  private async request<S extends TSchema>(
    path: string,
    body: unknown,
    signer: SigningKeyPair,
    responseSchema: S,
  ): Promise<Static<S>> {
    const bytes = utf8(JSON.stringify(body));
    const signedPath = this.basePath + path;
    let clockCorrected = false;
    for (let attempt = 1; ; attempt++) {
      const last = attempt >= this.retry.attempts;
      let response: Response;
      try {
        response = await this.doFetch(this.baseUrl + signedPath, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            ...signRequest(signer, {
              method: 'POST',
              path: signedPath,
              body: bytes,
              created: Math.floor((this.now() + this.clockOffsetMs) / 1000),
            }),
          },
          body: bytes as Uint8Array<ArrayBuffer>,
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (cause) {
        if (last)
          throw new RelayError('TRANSPORT', `diff server unreachable: ${String(cause)}`, 0, 'NETWORK', {
            cause,
          });
        await sleep(this.backoff(attempt));
        continue;
      }
      if (response.ok) {
        const json: unknown = await response.json().catch(() => undefined);
        if (!Value.Check(responseSchema, json)) {
          throw new RelayError(
            'SCHEMA_MISMATCH',
            `unexpected answer from ${path}`,
            response.status,
            'BAD_RESPONSE',
          );
        }
        return json;
      }
      const error = await errorFrom(response, path);
      // A clock more than the signature window off: sign again with the server's time (its Date header).
      if (error.reason === 'STALE' && !clockCorrected && !last && this.learnClockOffset(response)) {
        clockCorrected = true;
        continue;
      }
      const retryable = response.status >= 500 || error.reason === 'RATE_LIMITED';
      if (!retryable || last) throw error;
      const retryAfter = Number(response.headers.get('retry-after'));
      await sleep(
        retryAfter > 0 ? Math.min(retryAfter * 1000, this.retry.maxDelayMs) : this.backoff(attempt),
      );
    }
  }

  /** True when the server's Date header gave a usable offset (browsers may hide it across origins). */
  private learnClockOffset(response: Response): boolean {
    const serverTime = Date.parse(response.headers.get('date') ?? '');
    if (Number.isNaN(serverTime)) return false;
    this.clockOffsetMs = serverTime - this.now();
    return true;
  }

  private backoff(attempt: number): number {
    const ceiling = Math.min(this.retry.maxDelayMs, this.retry.initialDelayMs * 2 ** (attempt - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }
}

async function errorFrom(response: Response, path: string): Promise<RelayError> {
  const json: unknown = await response.json().catch(() => undefined);
  const {
    error: reason,
    message,
    unknownTargets,
  } = Value.Check(RelayErrorResponseSchema, json)
    ? json
    : { error: response.status >= 500 ? 'INTERNAL' : 'UNKNOWN', message: `HTTP ${response.status}` };
  const code = REASON_CODES[reason] ?? (response.status >= 500 ? 'SERVER' : 'REJECTED');
  return new RelayError(
    code,
    `diff server refused ${path}: ${reason}: ${message}`,
    response.status,
    reason,
    undefined,
    unknownTargets,
  );
}
