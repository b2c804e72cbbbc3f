import { EventEmitter } from 'eventemitter3';

/**
 * Who is in which room, across every signaling process that shares it. The hub keeps the sockets of
 * its own process; the directory owns membership, room limits and fan-out. In-process by default,
 * Redis-backed (redis-directory.ts) when several instances must share rooms.
 *
 * A membership is (room, clientId) owned by one connection id. A newer connection with the same
 * client id takes it over (a device that reconnected before its old socket timed out); removals are
 * conditional on ownership, so a late close of the old socket never removes the new one.
 */
export interface DirectoryEvents {
  /** `clientId` entered `room` over `connectionId` (also emitted when it takes over from an older connection). */
  'peer-joined': (room: string, clientId: string, connectionId: string) => void;
  'peer-left': (room: string, clientId: string) => void;
  signal: (room: string, from: string, to: string, body: string) => void;
}

export type JoinResult = { ok: true; peers: string[] } | { ok: false; reason: 'ROOM_FULL' };

export interface LocalMembership {
  room: string;
  clientId: string;
  connectionId: string;
}

export interface RoomDirectory extends EventEmitter<DirectoryEvents> {
  /** Enter a room unless it already holds `capacity` other clients; answers the others' client ids. */
  join(membership: LocalMembership, capacity: number): Promise<JoinResult>;
  /** Leave, if `connectionId` still owns the membership (announces peer-left only then). */
  leave(membership: LocalMembership): Promise<void>;
  /** Deliver a sealed body to `to` in `room`; false when no such client is present. */
  relay(room: string, from: string, to: string, body: string): Promise<boolean>;
  /** Once per heartbeat with this process's memberships: keep them alive, expire dead instances' ones. */
  maintain(memberships: readonly LocalMembership[]): Promise<void>;
  close(): Promise<void>;
}

/** Single-process directory: one map, events emitted synchronously. */
export class MemoryDirectory extends EventEmitter<DirectoryEvents> implements RoomDirectory {
  private readonly rooms = new Map<string, Map<string, string>>();

  async join({ room, clientId, connectionId }: LocalMembership, capacity: number): Promise<JoinResult> {
    const members = this.rooms.get(room) ?? new Map<string, string>();
    const peers = [...members.keys()].filter((id) => id !== clientId);
    if (peers.length >= capacity) return { ok: false, reason: 'ROOM_FULL' };
    members.set(clientId, connectionId);
    this.rooms.set(room, members);
    this.emit('peer-joined', room, clientId, connectionId);
    return { ok: true, peers };
  }

  async leave({ room, clientId, connectionId }: LocalMembership): Promise<void> {
    const members = this.rooms.get(room);
    if (members?.get(clientId) !== connectionId) return;
    members.delete(clientId);
    if (members.size === 0) this.rooms.delete(room);
    this.emit('peer-left', room, clientId);
  }

  async relay(room: string, from: string, to: string, body: string): Promise<boolean> {
    if (!this.rooms.get(room)?.has(to)) return false;
    this.emit('signal', room, from, to, body);
    return true;
  }

  async maintain(): Promise<void> {
    // Every member lives in this process: the hub's socket heartbeats are the whole story.
  }

  async close(): Promise<void> {
    this.rooms.clear();
    this.removeAllListeners();
  }
}
