import { EventEmitter } from 'eventemitter3';
import SimplePeer from 'simple-peer';
import { deriveSubkey } from '../crypto/subkeys.js';
import { FerryError } from '../errors.js';
import type { ChaChaPoly } from '../session/noise.js';
import { checkPeerSessionOptions, PeerSession, type PeerSessionOptions } from '../session/peer-session.js';
import { SignalingClient, type SignalingClientOptions } from '../signaling/client.js';
import { SimplePeerTransport } from '../transport/simple-peer.js';
import { randomBytes, toHex } from '../util/bytes.js';
import { requirePositive } from '../util/options.js';
import type { Lane, PeerMessage, PeerNetwork, PeerNetworkEvents } from './types.js';

export interface MeshNetworkOptions {
  clientId: string;
  accountKey: Uint8Array;
  /** Signaling servers in order of preference; the client fails over between them. */
  signalingUrls: readonly string[];
  /** Node 20: `WebSocket` from the `ws` package. Browsers: omit. */
  WebSocket?: SignalingClientOptions['WebSocket'];
  /** Node: `@roamhq/wrtc`. Browsers: omit (native WebRTC). */
  wrtc?: SimplePeer.Options['wrtc'];
  /** STUN/TURN servers. Default none: host candidates only (same machine or LAN). */
  iceServers?: RTCIceServer[];
  /** Faster ChaCha20-Poly1305 for session frames (Node passes OpenSSL's). */
  aead?: ChaChaPoly;
  /** A connection attempt that has not produced a session by then is abandoned and retried. Default 20 s. */
  connectTimeoutMs?: number;
  /** Backoff between reconnection attempts to one device: doubling, with jitter. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  session?: Pick<
    PeerSessionOptions,
    | 'keepaliveIntervalMs'
    | 'keepaliveTimeoutMs'
    | 'maxMessageBytes'
    | 'highWaterMark'
    | 'busyWindow'
    | 'busyHoldMs'
    | 'compressMinBytes'
    | 'timeoutMs'
  >;
  signaling?: Omit<SignalingClientOptions, 'urls' | 'accountKey' | 'clientId' | 'WebSocket'>;
}

/** What travels through the signaling server between two devices (sealed by the signaling client). */
interface MeshSignal {
  /** Identifies one connection attempt, so signals of an abandoned attempt are ignored. */
  attempt: string;
  data: SimplePeer.SignalData | DialMe;
}

/**
 * From the answering side (the greater client id) when it joins the room and holds no connection to
 * the dialling one. A dialler that still holds a session with it learns that the device restarted
 * (a crash, a killed app, a reloaded page) and dials at once, instead of waiting for the stale
 * session's keepalive to time out (15 s by default). Devices without this signal ignore it.
 */
interface DialMe {
  type: 'dial-me';
}
const DIAL_ME = 'dial-me';

interface Link {
  peerId: string;
  attempt: string;
  initiator: boolean;
  rtc: SimplePeer.Instance;
  session?: PeerSession;
  timer?: ReturnType<typeof setTimeout>;
}

const isMeshSignal = (value: unknown): value is MeshSignal =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as MeshSignal).attempt === 'string' &&
  typeof (value as MeshSignal).data === 'object' &&
  (value as MeshSignal).data !== null;

/**
 * The account's devices as a full mesh of WebRTC sessions: one connection per device pair, found
 * through the signaling server, authenticated by the Noise handshake, shared by every collection and
 * AI stream. The device with the smaller client id dials; the other answers. Dropped sessions are
 * redialled with exponential backoff and jitter while the other device is still present.
 */
export class MeshNetwork extends EventEmitter<PeerNetworkEvents> implements PeerNetwork {
  readonly clientId: string;
  readonly signaling: SignalingClient;
  private readonly links = new Map<string, Link>();
  private readonly failures = new Map<string, number>();
  private readonly retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly psk: Uint8Array;
  private isClosed = false;

  constructor(private readonly options: MeshNetworkOptions) {
    super();
    // Checked now, not when the first session opens (and fails, and is retried).
    const { connectTimeoutMs, reconnect = {}, session = {} } = options;
    requirePositive('MeshNetwork', { connectTimeoutMs, ...reconnect });
    checkPeerSessionOptions(session);
    this.clientId = options.clientId;
    this.psk = deriveSubkey(options.accountKey, 'handshakePsk');
    this.signaling = new SignalingClient({
      ...options.signaling,
      urls: options.signalingUrls,
      accountKey: options.accountKey,
      clientId: options.clientId,
      ...(options.WebSocket ? { WebSocket: options.WebSocket } : {}),
    });
    this.signaling.on('peer-joined', (peerId) => this.greet(peerId));
    this.signaling.on('connected', () => {
      for (const peerId of this.signaling.peers()) this.greet(peerId);
    });
    this.signaling.on('peer-left', (peerId) => {
      this.cancelRetry(peerId);
      this.failures.delete(peerId);
      // A live session outlives its device's signaling connection; only a dial in progress is dropped.
      const link = this.links.get(peerId);
      if (link && !link.session) this.drop(link, 'device left the room');
    });
    this.signaling.on('signal', (from, data) => this.onSignal(from, data));
    this.signaling.on('error', (error) => this.emit('error', error));
  }

  connectedPeers(): string[] {
    return [...this.links.values()]
      .filter((link) => link.session && !link.session.closed)
      .map((l) => l.peerId);
  }

  /** Session of a connected device (stats, session id), if any. */
  session(peerId: string): PeerSession | undefined {
    return this.links.get(peerId)?.session;
  }

  async send(peerId: string, message: PeerMessage, options: { lane?: Lane } = {}): Promise<void> {
    const session = this.links.get(peerId)?.session;
    if (!session || session.closed) throw new FerryError('CLOSED', `no session to peer ${peerId}`);
    await session.send(message, options.lane);
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
    for (const link of [...this.links.values()]) this.drop(link, 'network closed');
    await this.signaling.close();
  }

  /** A device is in the room: dial it, or, answering it and holding no connection, ask it to dial. */
  private greet(peerId: string): void {
    this.maybeDial(peerId);
    if (this.isClosed || this.clientId <= peerId || this.links.has(peerId)) return;
    try {
      const hint: MeshSignal = { attempt: toHex(randomBytes(8)), data: { type: DIAL_ME } };
      this.signaling.signal(peerId, hint);
    } catch {
      // Signaling just went away: its reconnection greets every device again.
    }
  }

  private maybeDial(peerId: string): void {
    if (this.isClosed || peerId === this.clientId || this.clientId > peerId) return;
    if (this.links.has(peerId) || this.retryTimers.has(peerId)) return;
    this.startLink(peerId, toHex(randomBytes(8)), true);
  }

  private onSignal(from: string, value: unknown): void {
    if (this.isClosed || !isMeshSignal(value)) return;
    const link = this.links.get(from);
    if (value.data.type === DIAL_ME) {
      if (this.clientId > from) return;
      // It holds no connection to us: a session we still hold with it is stale. A dial in progress
      // stands (the hint went out before the device answered it).
      if (link?.session) this.drop(link, 'the device restarted (it holds no session with us)', false);
      this.cancelRetry(from);
      this.maybeDial(from);
      return;
    }
    if (link && link.attempt === value.attempt) {
      link.rtc.signal(value.data);
      return;
    }
    // A new attempt from the dialling side (it restarted, or gave up on the old one): answer it.
    const isOffer = value.data.type === 'offer';
    if (this.clientId < from || !isOffer) return;
    if (link) this.drop(link, 'superseded by a new connection attempt', false);
    this.startLink(from, value.attempt, false).rtc.signal(value.data);
  }

  private startLink(peerId: string, attempt: string, initiator: boolean): Link {
    const rtc = new SimplePeer({
      initiator,
      trickle: true,
      config: { iceServers: this.options.iceServers ?? [] },
      ...(this.options.wrtc ? { wrtc: this.options.wrtc } : {}),
    });
    const link: Link = { peerId, attempt, initiator, rtc };
    this.links.set(peerId, link);
    link.timer = setTimeout(
      () => this.drop(link, 'connection attempt timed out'),
      this.options.connectTimeoutMs ?? 20_000,
    );
    rtc.on('signal', (data) => {
      try {
        this.signaling.signal(peerId, { attempt, data } satisfies MeshSignal);
      } catch (error) {
        this.drop(link, `signaling unavailable: ${(error as Error).message}`);
      }
    });
    rtc.on('error', (error) => this.drop(link, `WebRTC error: ${error.message}`));
    rtc.on('close', () => this.drop(link, 'WebRTC connection closed'));
    rtc.on('connect', () => void this.secure(link));
    return link;
  }

  private async secure(link: Link): Promise<void> {
    let session: PeerSession;
    try {
      const transport = new SimplePeerTransport(link.rtc);
      session = await PeerSession.open(transport, {
        ...this.options.session,
        initiator: link.initiator,
        psk: this.psk,
        roomId: this.signaling.room,
        localClientId: this.clientId,
        ...(this.options.aead ? { aead: this.options.aead } : {}),
      });
    } catch (error) {
      this.emit('error', error as FerryError);
      this.drop(link, `handshake failed: ${(error as Error).message}`);
      return;
    }
    if (this.links.get(link.peerId) !== link || this.isClosed) {
      session.close('superseded');
      return;
    }
    if (session.remoteClientId !== link.peerId) {
      session.close('unexpected client id');
      this.emit(
        'error',
        new FerryError('HANDSHAKE_FAILED', `expected ${link.peerId}, met ${session.remoteClientId}`),
      );
      this.drop(link, 'peer proved a different client id');
      return;
    }
    clearTimeout(link.timer);
    link.session = session;
    this.failures.delete(link.peerId);
    // A session closed by drop() still receives for a moment (it lets its goodbye out): once the
    // peer is reported gone, nothing more of it is delivered.
    session.on('message', (message) => {
      if (this.links.get(link.peerId) === link) this.emit('message', link.peerId, message);
    });
    session.on('error', (error) => this.emit('error', error));
    session.on('close', (reason) => this.drop(link, reason));
    this.emit('peer-connected', link.peerId);
  }

  /**
   * Forget a link (idempotent), telling the peer `reason` if the session is still up, and, when we
   * dial this device, schedule a redial with backoff.
   */
  private drop(link: Link, reason: string, redial = true): void {
    if (this.links.get(link.peerId) !== link) return;
    this.links.delete(link.peerId);
    clearTimeout(link.timer);
    const wasConnected = Boolean(link.session);
    // A session tells the peer why, then tears the connection down itself.
    if (link.session) link.session.close(reason);
    else link.rtc.destroy();
    if (wasConnected) this.emit('peer-disconnected', link.peerId);
    if (redial && link.initiator && !this.isClosed && this.signaling.peers().includes(link.peerId)) {
      this.scheduleRedial(link.peerId);
    }
  }

  private scheduleRedial(peerId: string): void {
    const failures = (this.failures.get(peerId) ?? 0) + 1;
    this.failures.set(peerId, failures);
    const initial = this.options.reconnect?.initialDelayMs ?? 250;
    const max = this.options.reconnect?.maxDelayMs ?? 30_000;
    const delay = Math.min(max, initial * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);
    this.retryTimers.set(
      peerId,
      setTimeout(() => {
        this.retryTimers.delete(peerId);
        if (this.signaling.peers().includes(peerId)) this.maybeDial(peerId);
      }, delay),
    );
  }

  private cancelRetry(peerId: string): void {
    clearTimeout(this.retryTimers.get(peerId));
    this.retryTimers.delete(peerId);
  }
}
