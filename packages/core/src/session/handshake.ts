import { FerryError, isFerryError } from '../errors.js';
import type { Transport } from '../transport/types.js';
import { concatBytes, fromUtf8, utf8 } from '../util/bytes.js';
import { type ChaChaPoly, HandshakeState, KEY_LEN, NN_PSK0, noiseProtocolName } from './noise.js';
import { SecureChannel } from './secure-channel.js';

/**
 * Ferry's peer handshake: Noise NNpsk0 over a fresh transport, before any application data.
 *
 *   initiator -> responder:  psk, e      + encrypted payload
 *   responder -> initiator:  e, ee       + encrypted payload
 *
 * The PSK (deriveSubkey(accountKey, 'handshakePsk')) proves both sides hold the account key; the
 * ephemerals give each session fresh directional keys. The prologue binds the room id and both DTLS
 * fingerprints (initiator's first), as libp2p's WebRTC handshake does: a signaling server that swaps
 * certificates in the SDP leaves the two sides with different prologues, and the first message fails.
 * Payloads carry the sender's client id and clock, so a device never pairs with itself and a recorded
 * first message goes stale.
 */
export const HANDSHAKE_PROTOCOL = noiseProtocolName(NN_PSK0);
export const HANDSHAKE_PROLOGUE_LABEL = 'ferry/v1/peer-handshake';
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Same window as the diff server's signed requests: devices' clocks drift, but not by minutes. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 300_000;
/** Messages buffered before the handshake reads them or the caller takes its early frames. */
const MAX_BUFFERED_FRAMES = 1024;
const PAYLOAD_VERSION = 1;
const MAX_CLIENT_ID_BYTES = 255;

export interface HandshakeOptions {
  /** Exactly one side initiates (e.g. simple-peer's initiator). */
  initiator: boolean;
  /** deriveSubkey(accountKey, 'handshakePsk'): 32 bytes. */
  psk: Uint8Array;
  roomId: string;
  localClientId: string;
  timeoutMs?: number;
  /** Largest accepted difference between the peer's clock and ours. */
  maxClockSkewMs?: number;
  now?: () => number;
  /** ChaCha20-Poly1305 implementation; Node passes `chaChaPolyFromNodeCrypto(crypto)` (much faster). */
  aead?: ChaChaPoly;
}

/**
 * Runs the handshake over `transport` and resolves with the channel that encrypts everything after it.
 * Every failure (wrong account key, rewritten fingerprints, own client id, stale clock, malformed
 * message, timeout, transport closed) rejects with FerryError('HANDSHAKE_FAILED') whose `cause` has
 * the detail, and closes the transport. No application data passes before success.
 *
 * Frames the peer sends right after the handshake are buffered: attach your `message` listener, then
 * call `channel.takeEarlyFrames()` and decrypt those first.
 */
export async function performHandshake(
  transport: Transport,
  options: HandshakeOptions,
): Promise<SecureChannel> {
  const inbox = new HandshakeInbox(transport);
  const timeoutMs = options.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const timer = setTimeout(
    () => inbox.fail(new FerryError('TIMEOUT', `no handshake answer within ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    return await runHandshake(transport, inbox, options);
  } catch (error) {
    inbox.detach();
    transport.close();
    throw new FerryError('HANDSHAKE_FAILED', `peer handshake failed: ${describe(error)}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

async function runHandshake(
  transport: Transport,
  inbox: HandshakeInbox,
  options: HandshakeOptions,
): Promise<SecureChannel> {
  if (options.psk.length !== KEY_LEN)
    throw new FerryError('BAD_ARGUMENT', 'the handshake PSK must be 32 bytes');
  const localId = encodeClientId(options.localClientId);
  const now = options.now ?? Date.now;
  const [initiatorFingerprint, responderFingerprint] = options.initiator
    ? [transport.localFingerprint, transport.remoteFingerprint]
    : [transport.remoteFingerprint, transport.localFingerprint];
  const noise = new HandshakeState({
    pattern: NN_PSK0,
    initiator: options.initiator,
    prologue: handshakePrologue(options.roomId, initiatorFingerprint, responderFingerprint),
    psks: [options.psk],
    aead: options.aead,
  });
  const payload = () => encodePayload(localId, now());
  const checkPeer = (message: Uint8Array): string =>
    checkPeerPayload(decodePayload(noise.readMessage(message)), options, now());

  let remoteClientId: string;
  if (options.initiator) {
    transport.send(noise.writeMessage(payload()));
    remoteClientId = checkPeer(await inbox.next());
  } else {
    // The responder checks the initiator before it says anything back.
    remoteClientId = checkPeer(await inbox.next());
    transport.send(noise.writeMessage(payload()));
  }
  // From here on, whatever arrives is the peer's first frames: keep them for the caller.
  inbox.keepEarlyFrames();
  const { send, receive } = noise.split();
  return new SecureChannel({
    send,
    receive,
    handshakeHash: noise.handshakeHash,
    remoteClientId,
    takeEarlyFrames: () => inbox.detach(),
  });
}

/** Label, room id, then both fingerprints (initiator's first), each length-prefixed so no field can bleed into another. */
export function handshakePrologue(
  roomId: string,
  initiatorFingerprint: string,
  responderFingerprint: string,
): Uint8Array {
  if (!roomId) throw new FerryError('BAD_ARGUMENT', 'the handshake needs a room id');
  return concatBytes(
    ...[
      HANDSHAKE_PROLOGUE_LABEL,
      roomId,
      canonicalFingerprint(initiatorFingerprint),
      canonicalFingerprint(responderFingerprint),
    ].map(lengthPrefixed),
  );
}

/** "SHA-256  ab:CD" and "sha-256 AB:CD" name the same certificate: compare them in one spelling. */
function canonicalFingerprint(fingerprint: string): string {
  const canonical = fingerprint.trim().replace(/\s+/g, ' ').toLowerCase();
  if (!canonical) {
    throw new FerryError(
      'TRANSPORT',
      'the transport reports no DTLS fingerprint, so the session cannot be bound to it',
    );
  }
  return canonical;
}

function lengthPrefixed(field: string): Uint8Array {
  const bytes = utf8(field);
  if (bytes.length > 0xffff) throw new FerryError('TOO_LARGE', 'handshake prologue field over 65535 bytes');
  const out = new Uint8Array(2 + bytes.length);
  new DataView(out.buffer).setUint16(0, bytes.length);
  out.set(bytes, 2);
  return out;
}

interface HandshakePayload {
  clientId: string;
  timestamp: number;
}

function encodeClientId(clientId: string): Uint8Array {
  const bytes = utf8(clientId);
  if (bytes.length === 0 || bytes.length > MAX_CLIENT_ID_BYTES) {
    throw new FerryError('BAD_ARGUMENT', `a client id must be 1 to ${MAX_CLIENT_ID_BYTES} bytes of UTF-8`);
  }
  return bytes;
}

/** version (1) || timestamp ms (8, big-endian) || client id length (1) || client id (UTF-8). */
function encodePayload(clientId: Uint8Array, timestamp: number): Uint8Array {
  const out = new Uint8Array(10 + clientId.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, PAYLOAD_VERSION);
  view.setBigUint64(1, BigInt(Math.max(0, Math.floor(timestamp))));
  view.setUint8(9, clientId.length);
  out.set(clientId, 10);
  return out;
}

function decodePayload(bytes: Uint8Array): HandshakePayload {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 11 || view.getUint8(0) !== PAYLOAD_VERSION || bytes.length !== 10 + view.getUint8(9)) {
    throw new FerryError('BAD_ENCODING', 'malformed handshake payload');
  }
  return { timestamp: Number(view.getBigUint64(1)), clientId: fromUtf8(bytes.subarray(10)) };
}

function checkPeerPayload(peer: HandshakePayload, options: HandshakeOptions, now: number): string {
  if (peer.clientId === options.localClientId) {
    throw new FerryError(
      'REPLAY',
      'the peer presents our own client id (a reflected handshake, or two devices share an id)',
    );
  }
  const maxSkew = options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS;
  if (Math.abs(peer.timestamp - now) > maxSkew) {
    throw new FerryError(
      'STALE',
      `the peer's handshake timestamp is ${Math.round((now - peer.timestamp) / 1000)} s off our clock (limit ${maxSkew / 1000} s)`,
    );
  }
  return peer.clientId;
}

function describe(error: unknown): string {
  if (isFerryError(error, 'DECRYPT_FAILED')) {
    return 'the peer holds a different account key (wrong passphrase or another account), or the signaling server rewrote the DTLS fingerprints';
  }
  return error instanceof Error ? error.message : String(error);
}

/**
 * Collects transport messages for the handshake, turning close, error and timeout into a rejected
 * `next()`. After the handshake it keeps collecting, so frames sent right after the last handshake
 * message are not lost before the caller attaches its own listener.
 */
class HandshakeInbox {
  private readonly queue: Uint8Array[] = [];
  private waiter: { resolve: (message: Uint8Array) => void; reject: (error: unknown) => void } | undefined;
  private failure: FerryError | undefined;
  private handshakeDone = false;

  constructor(private readonly transport: Transport) {
    transport.on('message', this.onMessage);
    transport.on('close', this.onClose);
    transport.on('error', this.onError);
    if (transport.closed) this.onClose();
  }

  next(): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  fail(error: FerryError): void {
    this.failure ??= error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.failure);
  }

  keepEarlyFrames(): void {
    this.handshakeDone = true;
  }

  /** Stops listening and hands over whatever arrived. */
  detach(): Uint8Array[] {
    this.stopListening();
    return this.queue.splice(0);
  }

  private stopListening(): void {
    this.transport.off('message', this.onMessage);
    this.transport.off('close', this.onClose);
    this.transport.off('error', this.onError);
  }

  private readonly onMessage = (message: Uint8Array): void => {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter.resolve(message);
      return;
    }
    this.queue.push(message);
    if (this.queue.length <= MAX_BUFFERED_FRAMES) return;
    // A peer flooding an unfinished handshake, or a caller that never took its early frames.
    if (this.handshakeDone) {
      this.detach();
      this.transport.close();
    } else {
      this.fail(
        new FerryError('LIMIT', `the peer sent over ${MAX_BUFFERED_FRAMES} messages during the handshake`),
      );
    }
  };

  private readonly onClose = (): void => {
    if (this.handshakeDone) this.stopListening();
    else {
      this.fail(
        new FerryError(
          'CLOSED',
          'the peer closed the transport during the handshake (it may hold another account key, or see other DTLS fingerprints)',
        ),
      );
    }
  };

  private readonly onError = (error: Error): void => {
    if (!this.handshakeDone)
      this.fail(new FerryError('TRANSPORT', `transport error: ${error.message}`, { cause: error }));
  };
}
