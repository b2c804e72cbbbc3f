import { FerryError, type PeerMessage, type PeerNetwork } from '@ferry/core';
import { aiMessage, isAiOp, newId, parseAiData, schemaError, TextDigest } from './frames.js';
import {
  AI_OPS,
  type AiData,
  type AiOp,
  type FinishReason,
  type ModelInfo,
  type RejectReason,
  type StreamInit,
  type StreamRequest,
  type Usage,
} from './wire.js';

/** A request to a peer's model: a conversation or a bare prompt, with sampling parameters. */
export type AskRequest = Omit<StreamRequest, 'streamId'>;

export interface AskOptions {
  signal?: AbortSignal;
  /** How long to wait for the host's first answer (queued, accepted or rejected). Default 10 s. */
  responseTimeoutMs?: number;
  /** Called when the host queues the request, and again as it moves up. */
  onQueued?: (position: number) => void;
}

export interface AskResult {
  text: string;
  finishReason: FinishReason;
  usage: Usage;
  /** SHA-256 of the UTF-8 text, checked against the host's. */
  digest: string;
  modelId: string;
  sessionInfo: StreamInit['sessionInfo'];
}

export type AiStreamState = 'requested' | 'queued' | 'streaming' | 'done' | 'failed';

/** The host declined the request; `reason` says why. */
export class AiRejectedError extends FerryError {
  constructor(
    readonly reason: RejectReason,
    message: string,
  ) {
    super('REJECTED', message);
  }
}

/**
 * One streamed answer from a peer's model: iterate it for text deltas, await `result` for the whole
 * text and usage. Every failure (rejection, cancel, host error, lost frames, disconnect) rejects
 * both with a FerryError. Leaving a `for await` loop early cancels the stream on the host.
 */
export class AiStream implements AsyncIterable<string> {
  readonly streamId = newId();
  /** Resolves when the host starts generating (AI_STREAM_INIT). */
  readonly accepted: Promise<StreamInit>;
  readonly result: Promise<AskResult>;
  private stateValue: AiStreamState = 'requested';
  private init: StreamInit | undefined;
  private readonly digest = new TextDigest();
  private text = '';
  private nextSeq = 0;
  private readonly deltas: string[] = [];
  private wake: (() => void) | undefined;
  private failure: FerryError | undefined;
  private iterated = false;
  private responseTimer: ReturnType<typeof setTimeout> | undefined;
  private resolveAccepted!: (init: StreamInit) => void;
  private rejectAccepted!: (error: FerryError) => void;
  private resolveResult!: (result: AskResult) => void;
  private rejectResult!: (error: FerryError) => void;

  /** @internal use askPeer() */
  constructor(
    private readonly router: ConsumerRouter,
    readonly peerId: string,
    private readonly request: AskRequest,
    private readonly options: AskOptions,
  ) {
    this.accepted = new Promise((resolve, reject) => {
      this.resolveAccepted = resolve;
      this.rejectAccepted = reject;
    });
    this.result = new Promise((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    // Callers often use only one of the three outlets; the others must not become unhandled rejections.
    this.accepted.catch(() => {});
    this.result.catch(() => {});
  }

  get state(): AiStreamState {
    return this.stateValue;
  }

  /** Stop the stream here and the engine on the host. No-op once finished. */
  cancel(reason = 'cancelled by the consumer'): void {
    this.stopHost(new FerryError('CANCELLED', reason));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    if (this.iterated) throw new FerryError('LIMIT', 'an AiStream can be iterated once');
    this.iterated = true;
    try {
      for (;;) {
        if (this.deltas.length > 0) {
          yield this.deltas.splice(0).join('');
          continue;
        }
        if (this.failure) throw this.failure;
        if (this.stateValue === 'done') return;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      // Reached on a normal end too, where cancel() is a no-op.
      this.cancel('the consumer stopped reading');
    }
  }

  /** @internal */
  start(): void {
    const { signal, responseTimeoutMs = 10_000 } = this.options;
    if (signal?.aborted) {
      this.fail(abortError(signal));
      return;
    }
    const request = { ...this.request, streamId: this.streamId };
    const invalid = schemaError(AI_OPS.request, request);
    if (invalid) {
      this.fail(new FerryError('SCHEMA_MISMATCH', `invalid request ${invalid}`));
      return;
    }
    signal?.addEventListener('abort', this.onAbort, { once: true });
    this.responseTimer = setTimeout(() => {
      this.stopHost(
        new FerryError('TIMEOUT', `no answer from ${this.peerId} within ${responseTimeoutMs} ms`),
      );
    }, responseTimeoutMs);
    this.router
      .send(this.peerId, AI_OPS.request, request)
      .catch((error: unknown) => this.fail(asFerryError(error)));
  }

  /** @internal */
  handle(op: AiOp, raw: unknown): void {
    if (this.finished) return;
    switch (op) {
      case AI_OPS.queued: {
        const data = this.parse(op, raw);
        if (!data || this.stateValue === 'streaming') return;
        this.answered();
        this.stateValue = 'queued';
        this.options.onQueued?.(data.position);
        return;
      }
      case AI_OPS.init: {
        const data = this.parse(op, raw);
        if (!data) return;
        this.answered();
        this.init = data;
        this.stateValue = 'streaming';
        this.resolveAccepted(data);
        return;
      }
      case AI_OPS.reject: {
        const data = this.parse(op, raw);
        if (data)
          this.fail(new AiRejectedError(data.reason, `${this.peerId} rejected the request: ${data.message}`));
        return;
      }
      case AI_OPS.data: {
        const data = this.parse(op, raw);
        if (!data) return;
        if (this.stateValue !== 'streaming') {
          this.protocolError('AI_STREAM_DATA before AI_STREAM_INIT');
          return;
        }
        if (data.seq !== this.nextSeq) {
          this.truncated(`frame ${this.nextSeq} is missing (got ${data.seq})`);
          return;
        }
        this.nextSeq++;
        this.digest.update(data.token);
        this.text += data.token;
        this.deltas.push(data.token);
        this.notify();
        return;
      }
      case AI_OPS.end: {
        const data = this.parse(op, raw);
        if (!data) return;
        if (!this.init) {
          this.protocolError('AI_STREAM_END before AI_STREAM_INIT');
          return;
        }
        if (data.frames !== this.nextSeq) {
          this.truncated(`the host sent ${data.frames} frames, ${this.nextSeq} arrived`);
          return;
        }
        const digest = this.digest.hex();
        if (data.digest !== digest || data.finalResult.bytes !== this.digest.bytes) {
          this.truncated('the received text does not match the host digest');
          return;
        }
        this.settle();
        this.stateValue = 'done';
        this.resolveResult({
          text: this.text,
          finishReason: data.finalResult.finishReason,
          usage: data.usage,
          digest,
          modelId: this.init.modelId,
          sessionInfo: this.init.sessionInfo,
        });
        this.notify();
        return;
      }
      case AI_OPS.error: {
        const data = this.parse(op, raw);
        if (data)
          this.fail(
            new FerryError('SERVER', `model on ${this.peerId} failed (${data.code}): ${data.message}`),
          );
        return;
      }
      case AI_OPS.cancel: {
        const data = this.parse(op, raw);
        if (data?.by === 'host')
          this.fail(new FerryError('CANCELLED', `${this.peerId} cancelled: ${data.reason ?? ''}`));
        return;
      }
      default:
        return;
    }
  }

  /** @internal the session to the host closed. */
  disconnected(): void {
    this.fail(new FerryError('CLOSED', `the session to ${this.peerId} closed mid-stream`));
  }

  private get finished(): boolean {
    return this.stateValue === 'done' || this.stateValue === 'failed';
  }

  private parse<Op extends AiOp>(op: Op, raw: unknown): AiData<Op> | undefined {
    const data = parseAiData(op, raw);
    if (!data) this.protocolError(`malformed ${op} frame`);
    return data;
  }

  private readonly onAbort = (): void => {
    if (this.options.signal) this.stopHost(abortError(this.options.signal));
  };

  private protocolError(message: string): void {
    this.stopHost(new FerryError('SCHEMA_MISMATCH', `${this.peerId}: ${message}`));
  }

  private truncated(message: string): void {
    this.stopHost(new FerryError('TRUNCATED', `stream from ${this.peerId} is incomplete: ${message}`));
  }

  /** Fail here and tell the host to stop its engine. */
  private stopHost(error: FerryError): void {
    if (this.finished) return;
    const reason = error.message;
    this.router.sendQuietly(this.peerId, AI_OPS.cancel, { streamId: this.streamId, by: 'consumer', reason });
    this.fail(error);
  }

  private answered(): void {
    if (this.responseTimer) clearTimeout(this.responseTimer);
    this.responseTimer = undefined;
  }

  private fail(error: FerryError): void {
    if (this.finished) return;
    this.settle();
    this.stateValue = 'failed';
    this.failure = error;
    this.rejectAccepted(error);
    this.rejectResult(error);
    this.notify();
  }

  private settle(): void {
    this.answered();
    this.options.signal?.removeEventListener('abort', this.onAbort);
    this.router.forget(this);
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

const abortError = (signal: AbortSignal): FerryError =>
  new FerryError(
    'CANCELLED',
    signal.reason instanceof Error ? signal.reason.message : 'aborted by the caller',
  );

const asFerryError = (error: unknown): FerryError =>
  error instanceof FerryError
    ? error
    : new FerryError('TRANSPORT', String((error as Error)?.message ?? error));

interface PendingList {
  peerId: string;
  resolve: (models: ModelInfo[]) => void;
  reject: (error: FerryError) => void;
}

/**
 * Routes the AI frames a network delivers to this device's open streams and model-list requests.
 * One per network, listening only while something is open.
 */
class ConsumerRouter {
  private readonly streams = new Map<string, AiStream>();
  private readonly lists = new Map<string, PendingList>();
  private listening = false;

  constructor(private readonly network: PeerNetwork) {}

  send<Op extends AiOp>(peerId: string, op: Op, data: AiData<Op>): Promise<void> {
    return this.network.send(peerId, aiMessage(op, data), { lane: 'ai' });
  }

  sendQuietly<Op extends AiOp>(peerId: string, op: Op, data: AiData<Op>): void {
    this.send(peerId, op, data).catch(() => {});
  }

  open(stream: AiStream): void {
    this.streams.set(stream.streamId, stream);
    this.listen();
  }

  forget(stream: AiStream): void {
    this.streams.delete(stream.streamId);
    this.unlistenWhenIdle();
  }

  listModels(peerId: string, signal: AbortSignal | undefined, timeoutMs: number): Promise<ModelInfo[]> {
    const requestId = newId();
    return new Promise<ModelInfo[]>((resolve, reject) => {
      const timer = setTimeout(
        () => done(new FerryError('TIMEOUT', `${peerId} did not list its models`)),
        timeoutMs,
      );
      const onAbort = () => done(abortError(signal!));
      const done = (outcome: ModelInfo[] | FerryError) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.lists.delete(requestId);
        this.unlistenWhenIdle();
        if (outcome instanceof FerryError) reject(outcome);
        else resolve(outcome);
      };
      if (signal?.aborted) return done(abortError(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.lists.set(requestId, { peerId, resolve: done, reject: done });
      this.listen();
      this.send(peerId, AI_OPS.modelsList, { requestId }).catch((error: unknown) =>
        done(asFerryError(error)),
      );
    });
  }

  private readonly onMessage = (peerId: string, message: PeerMessage): void => {
    if (!isAiOp(message.op)) return;
    if (message.op === AI_OPS.models) {
      const data = parseAiData(AI_OPS.models, message.data);
      const pending = data && this.lists.get(data.requestId);
      if (data && pending?.peerId === peerId) pending.resolve(data.models);
      return;
    }
    const streamId = (message.data as { streamId?: unknown } | null)?.streamId;
    const stream = typeof streamId === 'string' ? this.streams.get(streamId) : undefined;
    if (stream && stream.peerId === peerId) stream.handle(message.op, message.data);
  };

  private readonly onPeerDisconnected = (peerId: string): void => {
    for (const stream of [...this.streams.values()]) if (stream.peerId === peerId) stream.disconnected();
    for (const pending of [...this.lists.values()]) {
      if (pending.peerId === peerId)
        pending.reject(new FerryError('CLOSED', `the session to ${peerId} closed`));
    }
  };

  private listen(): void {
    if (this.listening) return;
    this.listening = true;
    this.network.on('message', this.onMessage);
    this.network.on('peer-disconnected', this.onPeerDisconnected);
  }

  private unlistenWhenIdle(): void {
    if (!this.listening || this.streams.size > 0 || this.lists.size > 0) return;
    this.listening = false;
    this.network.off('message', this.onMessage);
    this.network.off('peer-disconnected', this.onPeerDisconnected);
  }
}

const routers = new WeakMap<PeerNetwork, ConsumerRouter>();
const routerFor = (network: PeerNetwork): ConsumerRouter => {
  let router = routers.get(network);
  if (!router) {
    router = new ConsumerRouter(network);
    routers.set(network, router);
  }
  return router;
};

/** Ask a peer's model; iterate the returned stream for text deltas, await `.result` for the whole. */
export function askPeer(
  network: PeerNetwork,
  peerId: string,
  request: AskRequest,
  options: AskOptions = {},
): AiStream {
  const router = routerFor(network);
  const stream = new AiStream(router, peerId, request, options);
  router.open(stream);
  stream.start();
  return stream;
}

/** The models a peer serves, with their load. Rejects with TIMEOUT if the peer serves none. */
export function listPeerModels(
  network: PeerNetwork,
  peerId: string,
  options: { signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<ModelInfo[]> {
  return routerFor(network).listModels(peerId, options.signal, options.timeoutMs ?? 10_000);
}
