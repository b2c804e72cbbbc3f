import { EventEmitter } from 'eventemitter3';
import type SimplePeer from 'simple-peer';
import { FerryError } from '../errors.js';
import { assertSendable, type Transport, type TransportEvents } from './types.js';

export interface SimplePeerTransportOptions {
  /**
   * Default: what the connection negotiated (the SCTP transport's `maxMessageSize`: 256 KiB between
   * Chromium and @roamhq/wrtc), at most 256 KiB; 16 KiB, which every data channel accepts, where the
   * implementation does not say.
   */
  maxMessageSize?: number;
  /** Default 256 KiB; `drain` fires when the data channel's buffer falls to this. */
  lowWaterMark?: number;
}

const SAFE_MESSAGE_BYTES = 16 * 1024;
/** Below this many bytes `bufferedAmount` may be an upper bound instead of the native figure. */
const EXACT_FROM_BYTES = 4 * 1024;
const MAX_MESSAGE_BYTES = 256 * 1024;

/** The parts of simple-peer's internals we rely on: its data channel and peer connection. */
interface SimplePeerInternals {
  _channel?: RTCDataChannel;
  _pc?: RTCPeerConnection;
}

/**
 * A connected simple-peer data channel as a Transport. Flow control reads the data channel's own
 * `bufferedAmount`: simple-peer's stream backpressure lags, and @roamhq/wrtc silently drops messages
 * once about 16 MiB are queued. @roamhq/wrtc also updates `bufferedAmount` only on a later event-loop
 * turn and never fires `bufferedamountlow`, so bytes sent in the current turn are counted here, and
 * `drain` comes from a short poll (or the event, where the implementation has it).
 *
 * Reading the native `bufferedAmount` is a blocking call into WebRTC's thread (~0.15 ms with
 * @roamhq/wrtc: a tenth of a single write's latency), so it is read at most once per turn, and not at
 * all while what was last read plus what was sent since stays under `EXACT_FROM_BYTES`: the buffer
 * only drains, so that sum bounds it, and no flow-control decision tells such small amounts apart.
 */
export class SimplePeerTransport extends EventEmitter<TransportEvents> implements Transport {
  readonly maxMessageSize: number;
  readonly lowWaterMark: number;
  readonly localFingerprint: string;
  readonly remoteFingerprint: string;
  private readonly channel: RTCDataChannel;
  private isClosed = false;
  /** The native `bufferedAmount` when last read, plus the bytes sent since: at least what is queued. */
  private buffered = 0;
  private sentThisTurn = 0;
  private readThisTurn = false;
  private turnReset: ReturnType<typeof setTimeout> | undefined;
  private drainPoll: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly peer: SimplePeer.Instance,
    options: SimplePeerTransportOptions = {},
  ) {
    super();
    const internals = peer as unknown as SimplePeerInternals;
    if (!internals._channel || !internals._pc || !peer.connected) {
      throw new FerryError('TRANSPORT', 'simple-peer instance is not connected yet');
    }
    this.channel = internals._channel;
    const pc = internals._pc;
    this.maxMessageSize = options.maxMessageSize ?? negotiatedMessageSize(pc);
    this.lowWaterMark = options.lowWaterMark ?? 256 * 1024;
    this.localFingerprint = sdpFingerprint((pc.currentLocalDescription ?? pc.localDescription)?.sdp);
    this.remoteFingerprint = sdpFingerprint((pc.currentRemoteDescription ?? pc.remoteDescription)?.sdp);
    this.channel.bufferedAmountLowThreshold = this.lowWaterMark;
    this.channel.addEventListener('bufferedamountlow', this.onLow);
    peer.on('data', this.onData);
    peer.on('close', this.onClose);
    peer.on('error', this.onError);
  }

  get bufferedAmount(): number {
    if (this.isClosed) return 0;
    if (this.buffered >= EXACT_FROM_BYTES && !this.readThisTurn) {
      this.buffered = this.channel.bufferedAmount + this.sentThisTurn;
      this.readThisTurn = true;
      this.endTurnLater();
    }
    return this.buffered;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  send(data: Uint8Array): void {
    assertSendable(this, data);
    try {
      this.peer.send(data);
    } catch (cause) {
      throw new FerryError('TRANSPORT', 'data channel refused the message', { cause });
    }
    this.buffered += data.length;
    this.sentThisTurn += data.length;
    this.endTurnLater();
    if (!this.drainPoll && this.bufferedAmount > this.lowWaterMark) {
      this.drainPoll = setInterval(() => {
        if (this.isClosed || this.bufferedAmount <= this.lowWaterMark) this.onLow();
      }, 1);
    }
  }

  /** The native counter catches up on a later event-loop turn: read it again no sooner. */
  private endTurnLater(): void {
    this.turnReset ??= setTimeout(() => {
      this.readThisTurn = false;
      this.sentThisTurn = 0;
      this.turnReset = undefined;
    }, 0);
  }

  close(): void {
    if (this.isClosed) return;
    this.peer.destroy();
    this.onClose();
  }

  private readonly onLow = (): void => {
    if (this.drainPoll) {
      clearInterval(this.drainPoll);
      this.drainPoll = undefined;
    }
    if (!this.isClosed) this.emit('drain');
  };

  private readonly onData = (data: Uint8Array): void => {
    // Node's simple-peer hands out Buffers; pass a plain Uint8Array view of the same memory.
    this.emit('message', new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  };

  private readonly onError = (error: Error): void => {
    if (!this.isClosed) this.emit('error', new FerryError('TRANSPORT', error.message, { cause: error }));
  };

  private readonly onClose = (): void => {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.drainPoll) clearInterval(this.drainPoll);
    clearTimeout(this.turnReset);
    this.buffered = 0;
    this.sentThisTurn = 0;
    this.channel.removeEventListener('bufferedamountlow', this.onLow);
    this.peer.off('data', this.onData);
    this.peer.off('error', this.onError);
    this.emit('close');
  };
}

/** A WebRTC implementation for simple-peer's `wrtc` option (Node has none of its own). */
export type WebRTCImplementation = NonNullable<SimplePeer.Options['wrtc']>;

/** The parts of a W3C WebRTC polyfill simple-peer uses. */
export interface WebRTCPolyfill {
  RTCPeerConnection: new (
    configuration?: RTCConfiguration,
  ) => {
    createOffer(options?: RTCOfferOptions): Promise<RTCSessionDescriptionInit>;
    createAnswer(options?: RTCAnswerOptions): Promise<RTCSessionDescriptionInit>;
  };
  RTCSessionDescription: unknown;
  RTCIceCandidate: unknown;
}

/**
 * A W3C WebRTC polyfill, such as `node-datachannel/polyfill`, as simple-peer can use it. simple-peer
 * rewrites the `sdp` of the descriptions that createOffer and createAnswer return, which such
 * polyfills make read-only: they are handed over as plain objects. Its ICE candidates are handed over
 * in the standard form: node-datachannel's keep the SDP line's `a=` and have no `sdpMLineIndex`, and
 * libwebrtc (@roamhq/wrtc, browsers) refuses them, so a pair could connect only where the other side's
 * own candidates reach it. (@roamhq/wrtc is wrapped for another reason: see node-webrtc.ts.)
 */
export function simplePeerWebRTC(polyfill: WebRTCPolyfill): WebRTCImplementation {
  const plain = ({ type, sdp }: RTCSessionDescriptionInit): RTCSessionDescriptionInit => ({ type, sdp });
  class PeerConnection extends polyfill.RTCPeerConnection {
    override async createOffer(options?: RTCOfferOptions): Promise<RTCSessionDescriptionInit> {
      return plain(await super.createOffer(options));
    }
    override async createAnswer(options?: RTCAnswerOptions): Promise<RTCSessionDescriptionInit> {
      return plain(await super.createAnswer(options));
    }
    constructor(configuration?: RTCConfiguration) {
      super(configuration);
      // The polyfill keeps `onicecandidate` as an own field and calls what it holds: it holds the
      // handler simple-peer sets, wrapped.
      let wrapped: CandidateHandler | null = null;
      Object.defineProperty(this, 'onicecandidate', {
        configurable: true,
        get: () => wrapped,
        set: (handler: CandidateHandler | null) => {
          wrapped =
            handler &&
            ((event) => handler({ candidate: event.candidate && standardCandidate(event.candidate) }));
        },
      });
    }
  }
  return {
    RTCPeerConnection: PeerConnection,
    RTCSessionDescription: polyfill.RTCSessionDescription,
    RTCIceCandidate: polyfill.RTCIceCandidate,
  } as unknown as WebRTCImplementation;
}

type CandidateHandler = (event: { candidate: RTCIceCandidateInit | null }) => void;

/** A candidate as RTCIceCandidateInit has it: no `a=` before `candidate:`, a line index (Ferry negotiates one m-line, the data channel's). */
function standardCandidate({ candidate, sdpMid, sdpMLineIndex }: RTCIceCandidateInit): RTCIceCandidateInit {
  return {
    candidate: candidate?.startsWith('a=') ? candidate.slice(2) : candidate,
    sdpMid: sdpMid ?? '0',
    sdpMLineIndex: sdpMLineIndex ?? 0,
  };
}

/** The largest message both ends accept, as the connection reports it (Infinity: any size). */
function negotiatedMessageSize(pc: RTCPeerConnection): number {
  const negotiated = pc.sctp?.maxMessageSize;
  if (!negotiated || negotiated < SAFE_MESSAGE_BYTES) return SAFE_MESSAGE_BYTES;
  return Math.min(MAX_MESSAGE_BYTES, negotiated);
}

/** The `a=fingerprint:` of an SDP ("sha-256 AB:CD:..."); the handshake binds both into its prologue. */
export function sdpFingerprint(sdp: string | undefined): string {
  const match = sdp && /^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$/m.exec(sdp);
  if (!match) throw new FerryError('TRANSPORT', 'session description carries no DTLS fingerprint');
  return `${match[1]!.toLowerCase()} ${match[2]!.toUpperCase()}`;
}
