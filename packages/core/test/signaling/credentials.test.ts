import { Value } from '@sinclair/typebox/value';
import fc from 'fast-check';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { WebSocket as NodeWebSocket } from 'ws';
import {
  ClientFrameSchema,
  fromBase64,
  openSignal,
  randomBytes,
  roomCredentials,
  ServerFrameSchema,
  SignalingClient,
  sealSignal,
  signJoinProof,
  toBase64,
  verifyJoinProof,
  type WebSocketConstructor,
} from '../../src/index.js';

const key = randomBytes(32);
const credentials = roomCredentials(key);

describe('room credentials', () => {
  it('derive a stable room id per account key that reveals nothing else', () => {
    expect(roomCredentials(key).room).toBe(credentials.room);
    expect(credentials.room).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(roomCredentials(randomBytes(32)).room).not.toBe(credentials.room);
    // The room id is the public half of the room key, never the key or the sealing key.
    expect(fromBase64(credentials.room)).toEqual(credentials.roomKey.publicKey);
    expect(credentials.sealKey).not.toEqual(credentials.roomKey.secretKey);
  });
});

describe('join proofs', () => {
  const input = {
    challenge: toBase64(randomBytes(32), { url: true }),
    clientId: 'laptop',
    connectionId: 'abc.1',
  };
  const proof = signJoinProof(credentials, input);

  it('verify for exactly the statement that was signed', () => {
    expect(verifyJoinProof({ ...input, room: credentials.room }, proof)).toBe(true);
    const variants = [
      { challenge: toBase64(randomBytes(32), { url: true }) },
      { clientId: 'phone' },
      { connectionId: 'abc.2' },
      { room: roomCredentials(randomBytes(32)).room },
    ];
    for (const change of variants) {
      expect(verifyJoinProof({ ...input, room: credentials.room, ...change }, proof)).toBe(false);
    }
  });

  it('never throw on garbage', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (room, garbage) => {
        expect(verifyJoinProof({ ...input, room }, garbage)).toBe(false);
      }),
    );
  });
});

describe('sealed signals', () => {
  it('round-trip any JSON value, addressed to one recipient', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (data) => {
        const body = sealSignal(credentials, 'a', 'b', data);
        const opened = openSignal(credentials, 'a', 'b', body);
        expect(opened.data).toEqual(JSON.parse(JSON.stringify(data)));
      }),
      { numRuns: 50 },
    );
  });

  it('fail to open when re-addressed, under another key, or tampered with', () => {
    const body = sealSignal(credentials, 'a', 'b', { sdp: 'v=0' });
    const decryptFailed = expect.objectContaining({ code: 'DECRYPT_FAILED' });
    expect(() => openSignal(credentials, 'mallory', 'b', body)).toThrow(decryptFailed);
    expect(() => openSignal(credentials, 'a', 'c', body)).toThrow(decryptFailed);
    expect(() => openSignal(credentials, 'b', 'a', body)).toThrow(decryptFailed);
    expect(() => openSignal(roomCredentials(randomBytes(32)), 'a', 'b', body)).toThrow(decryptFailed);
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), (at, flip) => {
        const bytes = fromBase64(body);
        const i = at % bytes.length;
        bytes[i] = bytes[i]! ^ flip;
        expect(() => openSignal(credentials, 'a', 'b', toBase64(bytes, { url: true }))).toThrow(
          decryptFailed,
        );
      }),
    );
    expect(() => openSignal(credentials, 'a', 'b', '***')).toThrow(
      expect.objectContaining({ code: 'BAD_BASE64' }),
    );
  });
});

describe('wire schemas', () => {
  it('accept well-formed frames and refuse extra fields', () => {
    const join = {
      type: 'join',
      room: credentials.room,
      clientId: 'x',
      proof: signJoinProof(credentials, { challenge: 'c', clientId: 'x', connectionId: 'y' }),
    };
    expect(Value.Check(ClientFrameSchema, join)).toBe(true);
    expect(Value.Check(ClientFrameSchema, { ...join, extra: 1 })).toBe(false);
    expect(Value.Check(ServerFrameSchema, { type: 'joined', room: credentials.room, peers: ['a'] })).toBe(
      true,
    );
    expect(Value.Check(ServerFrameSchema, { type: 'error', code: 'NOPE', message: '', fatal: true })).toBe(
      false,
    );
  });
});

describe('SignalingClient construction', () => {
  it('accepts both the browser WebSocket and the ws class', () => {
    expectTypeOf(NodeWebSocket).toExtend<WebSocketConstructor>();
    expectTypeOf<typeof globalThis.WebSocket>().toExtend<WebSocketConstructor>();
  });

  it('refuses bad options with typed errors', () => {
    const base = { urls: ['ws://127.0.0.1:1/signal'], accountKey: key, WebSocket: NodeWebSocket };
    expect(() => new SignalingClient({ ...base, urls: [], clientId: 'a' })).toThrow(
      expect.objectContaining({ code: 'BAD_ARGUMENT' }),
    );
    expect(() => new SignalingClient({ ...base, clientId: 'has space' })).toThrow(
      expect.objectContaining({ code: 'SCHEMA_MISMATCH' }),
    );
    // Timeouts, delays and limits that would stall or spin, named in the error.
    for (const [bad, name] of [
      [{ connectTimeoutMs: 0 }, 'connectTimeoutMs'],
      [{ heartbeatTimeoutMs: -1 }, 'heartbeatTimeoutMs'],
      [{ reconnect: { initialDelayMs: 0 } }, 'initialDelayMs'],
      [{ maxFrameBytes: 0.5 }, 'maxFrameBytes'],
      [{ rejoinGraceMs: Number.NaN }, 'rejoinGraceMs'],
    ] as const) {
      expect(() => new SignalingClient({ ...base, clientId: 'a', ...bad })).toThrow(
        expect.objectContaining({
          code: 'BAD_ARGUMENT',
          message: expect.stringContaining(`${name} must be`),
        }),
      );
    }
  });
});
