import type { MailboxWatch } from '../signaling/client.js';

/**
 * The diff relay as the sync engine sees it: a mailbox per device on the diff server, holding
 * ciphertext only. Implemented by the HTTP client of the diff server (relay/client.ts).
 */
export interface RelayedDiff {
  /** Client-chosen id, unique per sender; a retried push is stored once. */
  diffId: string;
  senderClientId: string;
  /** Per-sender sequence number; a gap means the server withheld a diff. */
  sequence: number;
  /** Decrypted, authenticated payload. */
  payload: Uint8Array;
}

export interface DiffRelay {
  /** The device whose mailbox this is, when known (RelayClient): what its pushes name as sender. */
  readonly clientId?: string;
  /**
   * Seal `payload` and leave it in each target's mailbox; resolves once the server stored it durably.
   * Stores nothing if a target is not a registered device of the account: rejects with a FerryError
   * carrying `unknownTargets` (RelayError, reason UNKNOWN_TARGET).
   */
  push(targetClientIds: string[], payload: Uint8Array): Promise<{ diffId: string }>;
  /** Diffs waiting for this device, oldest first; foreign, tampered or replayed ones are dropped and reported. */
  pull(options?: { limit?: number }): Promise<RelayedDiff[]>;
  /** Delete acknowledged diffs from this device's mailbox. */
  ack(diffIds: string[]): Promise<void>;
  /** What a signaling connection needs to watch this device's mailbox (registers the device first). */
  mailboxWatch?(): Promise<MailboxWatch>;
}

/**
 * Where "new diffs wait in your mailbox" hints come from: the signaling client (SignalingClient, or
 * MeshNetwork's `signaling`) when the signaling server runs beside the diff server.
 */
export interface RelayHints {
  watchMailbox(watch: MailboxWatch): void;
  on(event: 'mailbox', listener: () => void): unknown;
  off(event: 'mailbox', listener: () => void): unknown;
}
