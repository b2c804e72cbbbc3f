import type { RxCollection } from 'rxdb';
import type { Observable } from 'rxjs';
import type { Todo } from './db.js';

/** What the panels see of a signed-in device; device.ts builds it from the Ferry libraries. */
export interface Device {
  /** The account's public tag (what the servers see instead of the account). */
  readonly accountTag: string;
  readonly clientId: string;
  readonly todos: RxCollection<Todo>;
  readonly status$: Observable<DeviceStatus>;
  readonly conflicts$: Observable<ConflictView[]>;
  /** Models the account's connected devices serve right now. */
  listModels(): Promise<PeerModel[]>;
  /** Streams a reply from a peer's model, text delta by text delta. Abort stops the peer's engine. */
  ask(model: PeerModel, prompt: string, signal: AbortSignal): ChatReply;
  close(): Promise<void>;
}

export type SignalingState = 'connecting' | 'online' | 'offline';

export interface DeviceStatus {
  signaling: SignalingState;
  /** Other devices of the account with an open, authenticated session. */
  peers: string[];
  /** Diffs this device left on the diff server that their targets have not acknowledged yet. */
  pendingRelay: number;
  /** Last time a change from another device was applied here. */
  lastSyncAt?: number;
  /** Latest non-fatal problem, for the user to see (e.g. "diff server unreachable"). */
  lastError?: string;
}

export interface ConflictView {
  documentId: string;
  /** The version every device now holds. */
  winner: unknown;
  /** The concurrent version the conflict rule set aside. */
  loser: unknown;
  at: number;
}

export interface PeerModel {
  peerId: string;
  modelId: string;
}

/** Iterate for text deltas; `result` settles once the whole reply arrived and was checked. */
export interface ChatReply extends AsyncIterable<string> {
  readonly result: Promise<{ completionTokens: number; finishReason: string }>;
}
