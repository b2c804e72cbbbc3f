/**
 * The diff server's storage: one interface, two backends (SQLite for one process, PostgreSQL for
 * several instances), both built on the same semantics (sql-storage.ts) and run through the same
 * conformance suite. Every mutating call takes the request's nonce claim and records it in the same
 * transaction, so a request is either refused with nothing stored or done exactly once.
 * Refusals are RelayRejection errors with their RELAY_ERRORS reason.
 */

/** A signed request's nonce: refused with REPLAY if this key used it before (until it expires). */
export interface NonceClaim {
  keyId: string;
  nonce: string;
  /** ms; after this the signature window alone refuses the request. */
  expiresAt: number;
}

/** A registered device, identified by its own public key. */
export interface DeviceRecord {
  accountId: string;
  clientId: string;
  publicKey: string;
}

export interface QuotaLimits {
  maxAccountBytes: number;
  maxAccountDiffs: number;
}

export interface PushInput {
  sender: DeviceRecord;
  diffId: string;
  /** Explicit client ids, or `*` for every other device of the account. */
  targets: string[] | '*';
  body: Uint8Array;
  /** SHA-256 of body: a retried push must carry the same bytes. */
  digest: Uint8Array;
  expiresAt: number;
  now: number;
  quota: QuotaLimits;
}

export interface PushResult {
  /** false when this sender had already pushed this diffId with the same bytes. */
  stored: boolean;
  targets: string[];
  expiresAt: number;
}

export interface StoredDiff {
  diffId: string;
  senderClientId: string;
  body: Uint8Array;
  expiresAt: number;
  /** Mailbox position, for the pull cursor. */
  position: number;
}

export interface PullInput {
  device: DeviceRecord;
  after: number;
  limit: number;
  /** Stop adding diffs once this many body bytes are in the page (at least one diff is returned). */
  maxBytes: number;
  now: number;
}

export interface PullResult {
  diffs: StoredDiff[];
  more: boolean;
}

export interface RegisterInput {
  accountId: string;
  clientId: string;
  publicKey: string;
  replace: boolean;
  maxDevices: number;
  now: number;
}

export interface StorageStats {
  diffs: number;
  bytes: number;
  accounts: number;
  devices: number;
}

export interface RelayStorage {
  readonly kind: 'sqlite' | 'postgres';
  findDeviceByKey(publicKey: string): Promise<DeviceRecord | undefined>;
  /** Creates the account on first use (its id is self-certifying). DEVICE_EXISTS, DEVICE_LIMIT. */
  registerDevice(claim: NonceClaim, input: RegisterInput): Promise<{ created: boolean; replaced: boolean }>;
  removeDevice(
    claim: NonceClaim,
    accountId: string,
    clientId: string,
  ): Promise<{ removed: boolean; droppedDiffs: number }>;
  listDevices(claim: NonceClaim, accountId: string): Promise<string[]>;
  deleteAccount(claim: NonceClaim, accountId: string): Promise<boolean>;
  /** UNKNOWN_KEY (sender gone), UNKNOWN_TARGET, DIFF_ID_CONFLICT, QUOTA_BYTES, QUOTA_COUNT. */
  push(claim: NonceClaim, input: PushInput): Promise<PushResult>;
  pull(claim: NonceClaim, input: PullInput): Promise<PullResult>;
  /** All or nothing: NOT_YOURS if any id was never in this device's mailbox. Returns how many were removed now. */
  ack(claim: NonceClaim, device: DeviceRecord, diffIds: string[]): Promise<number>;
  /** Drops expired diffs and nonces. */
  sweep(now: number): Promise<{ diffs: number; nonces: number }>;
  stats(): Promise<StorageStats>;
  /**
   * Storages shared by several server instances (PostgreSQL) announce every stored diff to all of
   * them, so a mailbox hint reaches a device whose signaling socket is on another instance. The
   * listener hears this instance's pushes too. Resolves once announcements are being received.
   * Absent: the diff server announces its own pushes.
   */
  onStored?(listener: (stored: { accountId: string; clientIds: string[] }) => void): Promise<void>;
  close(): Promise<void>;
}
