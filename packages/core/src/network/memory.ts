import { EventEmitter } from 'eventemitter3';
import { FerryError } from '../errors.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../protocol/message.js';
import { decodeWireMessage, encodeWireMessage } from '../session/wire.js';
import type { PeerMessage, PeerNetwork, PeerNetworkEvents } from './types.js';

export interface MemoryHubOptions {
  /** Largest encoded message, as the sessions' limit. Default 64 MiB. */
  maxMessageBytes?: number;
}

/**
 * An in-process network of devices for tests and simulations: every device joined to one hub sees
 * every other, unless a link is cut. Deliveries are asynchronous and go through the same wire codec
 * as the WebRTC sessions, so a message arrives exactly as it would over the mesh. Property tests use it
 * to run thousands of schedules; it passes the same network conformance suite as the WebRTC mesh.
 */
export class MemoryHub {
  readonly maxMessageBytes: number;
  private readonly nodes = new Map<string, MemoryNetwork>();
  private readonly cut = new Set<string>();

  constructor(options: MemoryHubOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  }

  join(clientId: string): MemoryNetwork {
    if (this.nodes.has(clientId)) throw new FerryError('LIMIT', `client id ${clientId} already joined`);
    const node = new MemoryNetwork(clientId, this);
    this.nodes.set(clientId, node);
    for (const other of this.nodes.values()) if (other !== node) this.link(node, other);
    return node;
  }

  /** Take a device off the network (like closing the laptop lid). */
  leave(clientId: string): void {
    const node = this.nodes.get(clientId);
    if (!node) return;
    this.nodes.delete(clientId);
    for (const other of this.nodes.values()) this.unlink(node, other);
  }

  /** Cut or heal the link between two devices (a network partition). */
  setLinked(a: string, b: string, linked: boolean): void {
    const key = pairKey(a, b);
    const na = this.nodes.get(a);
    const nb = this.nodes.get(b);
    if (linked) {
      this.cut.delete(key);
      if (na && nb) this.link(na, nb);
    } else {
      this.cut.add(key);
      if (na && nb) this.unlink(na, nb);
    }
  }

  /** @internal */
  deliver(from: string, to: string, bytes: Uint8Array): boolean {
    const target = this.nodes.get(to);
    if (!target || this.cut.has(pairKey(from, to)) || !target.isLinkedTo(from)) return false;
    queueMicrotask(() => target.receive(from, bytes));
    return true;
  }

  private link(a: MemoryNetwork, b: MemoryNetwork): void {
    if (this.cut.has(pairKey(a.clientId, b.clientId))) return;
    a.connect(b.clientId);
    b.connect(a.clientId);
  }

  private unlink(a: MemoryNetwork, b: MemoryNetwork): void {
    a.disconnect(b.clientId);
    b.disconnect(a.clientId);
  }
}

const pairKey = (a: string, b: string): string => (a < b ? `${a}\u0000${b}` : `${b}\u0000${a}`);

export class MemoryNetwork extends EventEmitter<PeerNetworkEvents> implements PeerNetwork {
  private readonly peers = new Set<string>();
  private closed = false;

  constructor(
    readonly clientId: string,
    private readonly hub: MemoryHub,
  ) {
    super();
  }

  connectedPeers(): string[] {
    return [...this.peers];
  }

  isLinkedTo(peerId: string): boolean {
    return this.peers.has(peerId);
  }

  async send(peerId: string, message: PeerMessage): Promise<void> {
    if (this.closed || !this.peers.has(peerId))
      throw new FerryError('CLOSED', `no session to peer ${peerId}`);
    const bytes = encodeWireMessage(message);
    if (bytes.length > this.hub.maxMessageBytes) {
      throw new FerryError(
        'TOO_LARGE',
        `message of ${bytes.length} bytes exceeds the session limit of ${this.hub.maxMessageBytes}`,
      );
    }
    if (!this.hub.deliver(this.clientId, peerId, bytes)) {
      throw new FerryError('CLOSED', `no session to peer ${peerId}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.hub.leave(this.clientId);
    this.closed = true;
  }

  /** @internal */
  connect(peerId: string): void {
    if (this.closed || this.peers.has(peerId)) return;
    this.peers.add(peerId);
    queueMicrotask(() => this.emit('peer-connected', peerId));
  }

  /** @internal */
  disconnect(peerId: string): void {
    if (!this.peers.delete(peerId)) return;
    queueMicrotask(() => this.emit('peer-disconnected', peerId));
  }

  /** @internal */
  receive(from: string, bytes: Uint8Array): void {
    if (!this.closed && this.peers.has(from)) {
      this.emit('message', from, decodeWireMessage(bytes, this.hub.maxMessageBytes));
    }
  }
}
