import type { EventEmitter } from 'eventemitter3';

/**
 * What the sync engine and AI streams see of the network: the account's other devices, reachable by
 * client id, over one authenticated and encrypted session per device pair. Adapters: the WebRTC mesh
 * (signaling + simple-peer + handshake) and an in-memory hub for property tests. Both pass the
 * network conformance suite (packages/core/test/network-conformance.ts).
 */
export type Lane = 'control' | 'ai' | 'sync';

/** Lanes in priority order: a frame on an earlier lane never waits behind more than one chunk of a later one. */
export const LANES: readonly Lane[] = ['control', 'ai', 'sync'];

/** A decrypted protocol message (spec section 6 "decrypted payload"). */
export interface PeerMessage {
  /** Operation name, e.g. 'DB_DIFF_PUSH' or 'AI_STREAM_DATA'. */
  op: string;
  data: unknown;
  /** Sender's clock, ms since epoch. */
  timestamp: number;
  /** Unique message id (replay protection and correlation). */
  id: string;
}

export interface PeerNetworkEvents {
  'peer-connected': (peerId: string) => void;
  'peer-disconnected': (peerId: string) => void;
  /** Only from a connected peer: none between its 'peer-disconnected' and its next 'peer-connected'. */
  message: (peerId: string, message: PeerMessage) => void;
  error: (error: Error) => void;
}

export interface PeerNetwork extends EventEmitter<PeerNetworkEvents> {
  /** This device's client id. */
  readonly clientId: string;
  /** Client ids of devices with an open, authenticated session now. */
  connectedPeers(): string[];
  /**
   * Send one message of any size up to the session limit. Resolves once it is accepted by the
   * session's flow control (not when the peer has processed it). Rejects with FerryError('CLOSED')
   * if there is no session to that peer.
   */
  send(peerId: string, message: PeerMessage, options?: { lane?: Lane }): Promise<void>;
  close(): Promise<void>;
}
