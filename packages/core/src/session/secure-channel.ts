import { FerryError } from '../errors.js';
import { toBase64 } from '../util/bytes.js';
import { type CipherState, MAX_NONCE, TAG_LEN } from './noise.js';

/**
 * Frame format after the handshake, one frame per transport message:
 *
 *   counter (8 bytes, unsigned little-endian) || ChaCha20-Poly1305(plaintext) || tag (16 bytes)
 *
 * Each direction has its own key from the Noise split, and the counter is the AEAD nonce (Noise
 * SetNonce, as WireGuard does). The counter travels in the clear so a receiver can tell a replayed
 * or reordered frame (authentic, wrong counter: REPLAY) from a forged or damaged one, or one from
 * another session (tag fails: DECRYPT_FAILED). The transport is ordered and reliable, so the receiver
 * accepts exactly the next counter and nothing else. Rejected frames change no state.
 */
export const FRAME_COUNTER_BYTES = 8;
/** Bytes a frame adds to its plaintext; the framing layer subtracts it from the transport's limit. */
export const SECURE_FRAME_OVERHEAD = FRAME_COUNTER_BYTES + TAG_LEN;

export interface SecureChannelStats {
  framesSent: number;
  framesReceived: number;
  /** Authentic frames whose counter was already used. */
  rejectedReplay: number;
  /** Authentic frames that skipped ahead of the next expected counter (reordered or a frame dropped). */
  rejectedReordered: number;
  /** Frames that failed authentication: tampered, truncated, or sealed by another session. */
  rejectedTampered: number;
}

export interface SecureChannelInit {
  send: CipherState;
  receive: CipherState;
  handshakeHash: Uint8Array;
  remoteClientId: string;
  /** Hands over frames that arrived before the caller attached its listener (see performHandshake). */
  takeEarlyFrames?: () => Uint8Array[];
}

const NO_AD = new Uint8Array(0);

export class SecureChannel {
  /** The peer's client id, proven by the handshake. */
  readonly remoteClientId: string;
  /** Noise handshake hash: identical on both sides, unique per session. */
  readonly handshakeHash: Uint8Array;
  /** The handshake hash in base64url (43 characters), for the envelope's `sessionId`. */
  readonly sessionId: string;
  private readonly sendCipher: CipherState;
  private readonly receiveCipher: CipherState;
  private readonly earlyFrames: () => Uint8Array[];
  private nextSendCounter = 0;
  private nextReceiveCounter = 0;
  private readonly counters: SecureChannelStats = {
    framesSent: 0,
    framesReceived: 0,
    rejectedReplay: 0,
    rejectedReordered: 0,
    rejectedTampered: 0,
  };

  constructor(init: SecureChannelInit) {
    this.sendCipher = init.send;
    this.receiveCipher = init.receive;
    this.handshakeHash = init.handshakeHash.slice();
    this.sessionId = toBase64(this.handshakeHash, { url: true });
    this.remoteClientId = init.remoteClientId;
    this.earlyFrames = init.takeEarlyFrames ?? (() => []);
  }

  /** A snapshot of the counters. */
  get stats(): SecureChannelStats {
    return { ...this.counters };
  }

  encrypt(plaintext: Uint8Array): Uint8Array {
    const counter = this.nextSendCounter;
    if (counter >= MAX_NONCE) throw new FerryError('LIMIT', 'frame counter exhausted: start a new session');
    const frame = new Uint8Array(SECURE_FRAME_OVERHEAD + plaintext.length);
    writeCounter(frame, counter);
    this.sendCipher.setNonce(counter);
    this.sendCipher.encryptWithAd(NO_AD, plaintext, frame.subarray(FRAME_COUNTER_BYTES));
    this.nextSendCounter++;
    this.counters.framesSent++;
    return frame;
  }

  /**
   * Opens the next frame. Throws FerryError DECRYPT_FAILED (tampered, truncated, other session) or
   * REPLAY (authentic but not the next frame); either way the frame is dropped and counted, and the
   * channel still accepts the genuine next frame.
   */
  decrypt(frame: Uint8Array): Uint8Array {
    const counter = frame.length >= SECURE_FRAME_OVERHEAD ? readCounter(frame) : -1;
    // We never send a counter beyond MAX_NONCE, so such a frame is forged whatever its tag says.
    if (counter < 0 || counter > MAX_NONCE) return this.rejectTampered('frame is truncated or malformed');
    let plaintext: Uint8Array;
    try {
      this.receiveCipher.setNonce(counter);
      plaintext = this.receiveCipher.decryptWithAd(NO_AD, frame.subarray(FRAME_COUNTER_BYTES));
    } catch (cause) {
      return this.rejectTampered('frame failed authentication (tampered, or from another session)', cause);
    }
    const expected = this.nextReceiveCounter;
    if (counter < expected) {
      this.counters.rejectedReplay++;
      throw new FerryError('REPLAY', `replayed frame: counter ${counter}, expected ${expected}`);
    }
    if (counter > expected) {
      this.counters.rejectedReordered++;
      throw new FerryError('REPLAY', `out-of-order frame: counter ${counter}, expected ${expected}`);
    }
    this.nextReceiveCounter++;
    this.counters.framesReceived++;
    return plaintext;
  }

  /**
   * Frames the peer sent right after the handshake, before your `message` listener existed. Attach
   * your listener first, then call this once and decrypt these frames before any later ones.
   */
  takeEarlyFrames(): Uint8Array[] {
    return this.earlyFrames();
  }

  private rejectTampered(message: string, cause?: unknown): never {
    this.counters.rejectedTampered++;
    throw new FerryError('DECRYPT_FAILED', message, { cause });
  }
}

function writeCounter(frame: Uint8Array, counter: number): void {
  const view = new DataView(frame.buffer, frame.byteOffset, FRAME_COUNTER_BYTES);
  view.setUint32(0, counter >>> 0, true);
  view.setUint32(4, Math.floor(counter / 2 ** 32), true);
}

/** The counter as a number; values above 2^53 lose precision but still compare as too large. */
function readCounter(frame: Uint8Array): number {
  const view = new DataView(frame.buffer, frame.byteOffset, FRAME_COUNTER_BYTES);
  return view.getUint32(4, true) * 2 ** 32 + view.getUint32(0, true);
}
