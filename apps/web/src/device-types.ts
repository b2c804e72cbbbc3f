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
  /** Every other device of the account this device knows of (registered on the diff server or met). */
  devices: string[];
  /** Changes for away devices still waiting to be stored on the diff server (being retried). */
  pendingRelay: number;
  /** Document versions sent to and received from other devices (directly or through the diff server). */
  sent: number;
  received: number;
  /** Last time a change from another device was applied here. */
  lastSyncAt?: number;
  /** Latest non-fatal problem, for the user to see (e.g. "diff server unreachable"). */
  lastError?: string;
}

/** Two devices edited one document concurrently; every device settled on the same `resolved` version. */
export interface ConflictView {
  documentId: string;
  /** The other device whose version met this device's one. */
  from: string;
  /** Both versions (the document, or `{ deleted: true }`) and which one the conflict rule kept. */
  local: unknown;
  remote: unknown;
  kept: 'local' | 'remote' | 'merged';
  resolved: unknown;
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
