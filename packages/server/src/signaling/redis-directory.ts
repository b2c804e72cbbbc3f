import { EventEmitter } from 'eventemitter3';
import { Redis } from 'ioredis';
import type { BaseLogger } from 'pino';
import type { DirectoryEvents, JoinResult, LocalMembership, RoomDirectory } from './directory.js';

/**
 * Rooms shared by several signaling processes through Redis.
 *
 * - Presence: one hash per room, `clientId -> "<connectionId>|<expiresAtMs>"`. Each process refreshes
 *   its own members every heartbeat; entries of a dead process stop being refreshed, and whichever
 *   live process next maintains the room removes them and announces peer-left. Time comes from Redis
 *   (TIME), so clocks of the processes do not matter.
 * - Events: one pub/sub channel per room (join, leave, relayed signal), published from the same Lua
 *   scripts that change the hash, so a change and its announcement are atomic.
 * - Scripts run with EVAL, never EVALSHA-with-fallback: a NOSCRIPT retry would reorder a join and a
 *   leave issued back to back.
 */
export interface RedisDirectoryOptions {
  url: string;
  keyPrefix: string;
  presenceTtlMs: number;
  logger: BaseLogger;
}

const LUA_HELPERS = `
local function now_ms() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
local function expiry(v) return tonumber(string.match(v, '|(%d+)$')) or 0 end
local function owner(v) return string.match(v, '^(.-)|') end
`;

/** KEYS[1] members hash; ARGV clientId, connectionId, ttlMs, capacity, channel. Returns {1, peers...} or {0}. */
const JOIN = `${LUA_HELPERS}
local now = now_ms()
local ttl = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local reply = {1}
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and expiry(all[i + 1]) > now then reply[#reply + 1] = all[i] end
end
if #reply - 1 >= tonumber(ARGV[4]) then return {0} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. (now + ttl))
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
redis.call('PUBLISH', ARGV[5], cjson.encode({e = 'join', c = ARGV[1], k = ARGV[2]}))
return reply`;

/** KEYS[1] members hash; ARGV clientId, connectionId, channel. Removes only if still owned. */
const LEAVE = `${LUA_HELPERS}
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and owner(v) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], cjson.encode({e = 'leave', c = ARGV[1]}))
  return 1
end
return 0`;

/** KEYS[1] members hash; ARGV to, channel, message. Publishes only if the recipient is present. */
const RELAY = `${LUA_HELPERS}
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and expiry(v) > now_ms() then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0`;

/**
 * KEYS[1] members hash; ARGV ttlMs, channel, then (clientId, connectionId) pairs of this process.
 * Refreshes ours (re-announcing any that were swept while Redis was unreachable), sweeps expired
 * members of dead processes with a peer-left each, and returns {clientId, owner} pairs that another
 * connection has taken over.
 */
const MAINTAIN = `${LUA_HELPERS}
local now = now_ms()
local ttl = tonumber(ARGV[1])
local taken = {}
for i = 3, #ARGV, 2 do
  local c, k = ARGV[i], ARGV[i + 1]
  local v = redis.call('HGET', KEYS[1], c)
  if v and owner(v) ~= k then
    taken[#taken + 1] = c
    taken[#taken + 1] = owner(v)
  else
    redis.call('HSET', KEYS[1], c, k .. '|' .. (now + ttl))
    if not v then redis.call('PUBLISH', ARGV[2], cjson.encode({e = 'join', c = c, k = k})) end
  end
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if expiry(all[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('PUBLISH', ARGV[2], cjson.encode({e = 'leave', c = all[i]}))
  end
end
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return taken`;

type RoomEvent =
  | { e: 'join'; c: string; k: string }
  | { e: 'leave'; c: string }
  | { e: 'signal'; f: string; t: string; b: string };

interface Subscription {
  count: number;
  ready: Promise<unknown>;
}

export async function createRedisDirectory(options: RedisDirectoryOptions): Promise<RoomDirectory> {
  const commands = new Redis(options.url, { lazyConnect: true });
  const subscriber = new Redis(options.url, { lazyConnect: true });
  for (const client of [commands, subscriber]) {
    client.on('error', (error: Error) =>
      options.logger.warn({ err: error }, 'signaling redis connection error'),
    );
  }
  try {
    await Promise.all([commands.connect(), subscriber.connect()]);
  } catch (error) {
    commands.disconnect();
    subscriber.disconnect();
    throw error;
  }
  return new RedisDirectory(commands, subscriber, options);
}

class RedisDirectory extends EventEmitter<DirectoryEvents> implements RoomDirectory {
  private readonly subscriptions = new Map<string, Subscription>();

  constructor(
    private readonly commands: Redis,
    private readonly subscriber: Redis,
    private readonly options: RedisDirectoryOptions,
  ) {
    super();
    subscriber.on('message', (channel: string, message: string) => this.onMessage(channel, message));
  }

  async join(membership: LocalMembership, capacity: number): Promise<JoinResult> {
    const { room, clientId, connectionId } = membership;
    // Subscribe first: events published between our join script and a later subscribe would be lost.
    await this.watch(room);
    const reply = (await this.eval(
      JOIN,
      room,
      clientId,
      connectionId,
      this.options.presenceTtlMs,
      capacity,
      this.channel(room),
    )) as [number, ...string[]];
    if (reply[0] === 1) return { ok: true, peers: reply.slice(1) as string[] };
    this.unwatch(room);
    return { ok: false, reason: 'ROOM_FULL' };
  }

  async leave({ room, clientId, connectionId }: LocalMembership): Promise<void> {
    const left = this.eval(LEAVE, room, clientId, connectionId, this.channel(room));
    this.unwatch(room);
    await left;
  }

  async relay(room: string, from: string, to: string, body: string): Promise<boolean> {
    const event: RoomEvent = { e: 'signal', f: from, t: to, b: body };
    return (await this.eval(RELAY, room, to, this.channel(room), JSON.stringify(event))) === 1;
  }

  async maintain(memberships: readonly LocalMembership[]): Promise<void> {
    const byRoom = new Map<string, string[]>();
    for (const { room, clientId, connectionId } of memberships) {
      const pairs = byRoom.get(room) ?? [];
      pairs.push(clientId, connectionId);
      byRoom.set(room, pairs);
    }
    // Every script is issued before the first await, so a leave issued later runs after this refresh.
    const runs = [...byRoom].map(async ([room, pairs]) => {
      const taken = (await this.eval(
        MAINTAIN,
        room,
        this.options.presenceTtlMs,
        this.channel(room),
        ...pairs,
      )) as string[];
      for (let i = 0; i + 1 < taken.length; i += 2) this.emit('peer-joined', room, taken[i]!, taken[i + 1]!);
    });
    await Promise.all(runs);
  }

  async close(): Promise<void> {
    this.subscriptions.clear();
    this.removeAllListeners();
    await Promise.allSettled([this.subscriber.quit(), this.commands.quit()]);
  }

  private eval(script: string, room: string, ...args: (string | number)[]): Promise<unknown> {
    return this.commands.eval(script, 1, this.membersKey(room), ...args);
  }

  private membersKey(room: string): string {
    return `${this.options.keyPrefix}members:${room}`;
  }

  private channel(room: string): string {
    return `${this.options.keyPrefix}events:${room}`;
  }

  private watch(room: string): Promise<unknown> {
    const existing = this.subscriptions.get(room);
    if (existing) {
      existing.count++;
      return existing.ready;
    }
    const ready = this.subscriber.subscribe(this.channel(room));
    this.subscriptions.set(room, { count: 1, ready });
    return ready;
  }

  private unwatch(room: string): void {
    const subscription = this.subscriptions.get(room);
    if (!subscription || --subscription.count > 0) return;
    this.subscriptions.delete(room);
    this.subscriber.unsubscribe(this.channel(room)).catch((error: unknown) => {
      this.options.logger.warn({ err: error }, 'signaling redis unsubscribe failed');
    });
  }

  private onMessage(channel: string, message: string): void {
    const prefix = this.channel('');
    if (!channel.startsWith(prefix)) return;
    const room = channel.slice(prefix.length);
    let event: RoomEvent;
    try {
      event = JSON.parse(message) as RoomEvent;
    } catch {
      this.options.logger.warn({ channel }, 'ignoring a malformed signaling event from redis');
      return;
    }
    switch (event.e) {
      case 'join':
        return void this.emit('peer-joined', room, event.c, event.k);
      case 'leave':
        return void this.emit('peer-left', room, event.c);
      case 'signal':
        return void this.emit('signal', room, event.f, event.t, event.b);
    }
  }
}
