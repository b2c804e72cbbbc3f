import { FerryError, isFerryError, type PeerMessage, type PeerNetwork, requirePositive } from '@ferry/core';
import type { BackendResult, BackendUsage, GenerateRequest, ModelBackend } from './backend.js';
import {
  aiMessage,
  isAiOp,
  isStreamId,
  MIN_FRAME_CHARS,
  parseAiData,
  schemaError,
  TextDigest,
  TokenBatcher,
  withPadding,
} from './frames.js';
import {
  AI_OPS,
  type AiData,
  type AiOp,
  type ModelInfo,
  type RejectReason,
  type StreamData,
  type StreamEnd,
  type StreamError,
  type StreamRequest,
} from './wire.js';

export type PolicyDecision = boolean | { accept: false; message: string };

export interface ServeOptions {
  backends: ModelBackend[];
  /** Streams run at once per model: one number for all, or per model id. Default: the backend's maxConcurrency, else 1. */
  concurrency?: number | Record<string, number>;
  /** Requests that may wait per model once all its slots are busy; more are rejected as 'busy'. Default 16. */
  queueLength?: number;
  /** Decide per request and peer; false or { accept: false } rejects it as 'refused'. */
  policy?: (request: StreamRequest, peerId: string) => PolicyDecision | Promise<PolicyDecision>;
  /** Tokens are collected this long before a frame goes out. Default 2 ms. */
  batchWindowMs?: number;
  /** Largest text per AI_STREAM_DATA frame, in UTF-16 units (at least 2: a surrogate pair). Default 4096. */
  maxFrameChars?: number;
}

export interface ModelStats {
  id: string;
  concurrency: number;
  active: number;
  queued: number;
  completed: number;
  rejected: number;
  cancelled: number;
  failed: number;
  /** Token-sized items produced by the backend for streams of this host. */
  tokens: number;
}

export interface ServeHandle {
  stats(): ModelStats[];
  /** Stop answering, cancel running and queued streams (peers get AI_STREAM_CANCEL) and wait for the engines to stop. */
  close(): Promise<void>;
}

interface HostedStream {
  peerId: string;
  request: StreamRequest;
  model: ServedModel;
  controller: AbortController;
  enqueuedAt: number;
  /** Set when the host (not the consumer) ends the stream early. */
  hostCancelReason?: string;
  done?: Promise<void>;
}

interface ServedModel {
  backend: ModelBackend;
  concurrency: number;
  running: Set<HostedStream>;
  queue: HostedStream[];
  stats: ModelStats;
}

const streamKey = (peerId: string, streamId: string): string => `${peerId}\n${streamId}`;

/**
 * Serve model backends to the account's other devices. Requests arrive as AI_STREAM_REQUEST; each
 * model runs at most `concurrency` streams and queues up to `queueLength` more.
 */
export function serveModels(network: PeerNetwork, options: ServeOptions): ServeHandle {
  checkServeOptions(options);
  const queueLength = options.queueLength ?? 16;
  const batchWindowMs = options.batchWindowMs ?? 2;
  const maxFrameChars = options.maxFrameChars ?? 4096;
  const models = new Map<string, ServedModel>();
  for (const backend of options.backends) {
    if (models.has(backend.id)) throw new FerryError('LIMIT', `two backends serve model id ${backend.id}`);
    const configured =
      typeof options.concurrency === 'number' ? options.concurrency : options.concurrency?.[backend.id];
    const concurrency = Math.max(
      1,
      Math.min(configured ?? backend.maxConcurrency ?? 1, backend.maxConcurrency ?? Number.POSITIVE_INFINITY),
    );
    models.set(backend.id, {
      backend,
      concurrency,
      running: new Set(),
      queue: [],
      stats: {
        id: backend.id,
        concurrency,
        active: 0,
        queued: 0,
        completed: 0,
        rejected: 0,
        cancelled: 0,
        failed: 0,
        tokens: 0,
      },
    });
  }
  const streams = new Map<string, HostedStream>();
  let closed = false;

  const send = <Op extends AiOp>(peerId: string, op: Op, data: AiData<Op>): Promise<void> =>
    network.send(peerId, aiMessage(op, data), { lane: 'ai' });
  // Replies that may race a disconnect: a peer that is gone needs no answer.
  const sendQuietly = <Op extends AiOp>(peerId: string, op: Op, data: AiData<Op>): void => {
    send(peerId, op, data).catch(() => {});
  };

  const reject = (
    peerId: string,
    streamId: string,
    reason: RejectReason,
    message: string,
    model?: ServedModel,
  ) => {
    if (model) model.stats.rejected++;
    sendQuietly(peerId, AI_OPS.reject, { streamId, reason, message });
  };

  const modelInfo = (model: ServedModel): ModelInfo => ({
    id: model.backend.id,
    backend: model.backend.kind,
    ...(model.backend.description !== undefined && { description: model.backend.description }),
    ...(model.backend.contextLength !== undefined && { contextLength: model.backend.contextLength }),
    concurrency: model.concurrency,
    active: model.running.size,
    queued: model.queue.length,
  });

  async function admit(peerId: string, request: StreamRequest): Promise<void> {
    const { streamId, modelId } = request;
    const model = models.get(modelId);
    if (!model) return reject(peerId, streamId, 'unknown-model', `no model ${modelId} is served here`);
    if (!request.messages && request.prompt === undefined) {
      return reject(peerId, streamId, 'invalid-request', 'a request needs messages or a prompt', model);
    }
    const key = streamKey(peerId, streamId);
    if (streams.has(key))
      return reject(peerId, streamId, 'invalid-request', 'stream id already in use', model);
    // Hold the id while the policy decides, so a duplicate cannot slip in meanwhile.
    const stream: HostedStream = {
      peerId,
      request,
      model,
      controller: new AbortController(),
      enqueuedAt: performance.now(),
    };
    streams.set(key, stream);
    let decision: PolicyDecision;
    try {
      decision = options.policy ? await options.policy(request, peerId) : true;
    } catch (error) {
      decision = { accept: false, message: `policy failed: ${(error as Error).message}` };
    }
    if (stream.controller.signal.aborted || closed) {
      streams.delete(key);
      return;
    }
    if (decision !== true) {
      streams.delete(key);
      const message = decision === false ? 'refused by the host policy' : decision.message;
      return reject(peerId, streamId, 'refused', message, model);
    }
    if (model.running.size < model.concurrency) return start(stream);
    if (model.queue.length >= queueLength) {
      streams.delete(key);
      return reject(peerId, streamId, 'busy', `model ${modelId} is busy and its queue is full`, model);
    }
    model.queue.push(stream);
    model.stats.queued = model.queue.length;
    sendQuietly(peerId, AI_OPS.queued, { streamId, position: model.queue.length });
  }

  function start(stream: HostedStream): void {
    stream.model.running.add(stream);
    stream.model.stats.active = stream.model.running.size;
    stream.done = run(stream).finally(() => {
      const { model } = stream;
      model.running.delete(stream);
      model.stats.active = model.running.size;
      streams.delete(streamKey(stream.peerId, stream.request.streamId));
      startQueued(model);
    });
  }

  function startQueued(model: ServedModel): void {
    let moved = false;
    while (!closed && model.running.size < model.concurrency && model.queue.length > 0) {
      start(model.queue.shift()!);
      moved = true;
    }
    model.stats.queued = model.queue.length;
    if (moved) {
      model.queue.forEach((waiting, index) => {
        sendQuietly(waiting.peerId, AI_OPS.queued, {
          streamId: waiting.request.streamId,
          position: index + 1,
        });
      });
    }
  }

  async function run(stream: HostedStream): Promise<void> {
    const { peerId, request, model, controller } = stream;
    const { streamId } = request;
    const signal = controller.signal;
    const queuedMs = performance.now() - stream.enqueuedAt;
    const sendData = (data: Omit<StreamData, 'pad'>) =>
      send(peerId, AI_OPS.data, withPadding<StreamData>(data));
    try {
      await send(peerId, AI_OPS.init, {
        streamId,
        modelId: model.backend.id,
        sessionInfo: { backend: model.backend.kind, queuedMs },
      });
    } catch {
      controller.abort();
      model.stats.cancelled++;
      return;
    }

    let seq = 0;
    // The digest covers exactly the text of the frames, which is what the consumer hashes.
    const digest = new TextDigest();
    const batcher = new TokenBatcher(
      (token, timestamp) => {
        digest.update(token);
        return sendData({ streamId, seq: seq++, token, timestamp });
      },
      batchWindowMs,
      maxFrameChars,
    );
    const maxTokens = request.params?.maxTokens;
    const generateRequest: GenerateRequest = {
      modelId: model.backend.id,
      messages: request.messages ?? [{ role: 'user', content: request.prompt ?? '' }],
      params: request.params ?? {},
    };
    const startedAt = performance.now();
    let firstTokenAt: number | undefined;
    let lastTokenAt = startedAt;
    let items = 0;
    let usage: BackendUsage | undefined;
    let hitLimit = false;
    let iterator: AsyncIterator<string, BackendResult> | undefined;
    try {
      iterator = model.backend.generate(generateRequest, signal)[Symbol.asyncIterator]();
      for (;;) {
        const next = await iterator.next();
        if (next.done) {
          usage = next.value ?? undefined;
          break;
        }
        if (signal.aborted) break;
        if (next.value.length === 0) continue;
        // Enforce maxTokens for a backend that overshoots it (one that honours it ends by itself).
        if (maxTokens !== undefined && items >= maxTokens) {
          hitLimit = true;
          await iterator.return?.();
          break;
        }
        lastTokenAt = performance.now();
        firstTokenAt ??= lastTokenAt;
        items++;
        model.stats.tokens++;
        batcher.push(next.value, Date.now());
        // The consumer is gone (send failed): stop the engine rather than generate into the void.
        if (batcher.failure !== undefined) controller.abort();
      }
    } catch (error) {
      if (!signal.aborted) {
        model.stats.failed++;
        await batcher.flush().catch(() => {});
        const code = isFerryError(error) ? error.code : 'INTERNAL';
        const message = (error as Error).message;
        sendQuietly(peerId, AI_OPS.error, withPadding<StreamError>({ streamId, code, message }));
        return;
      }
    }

    if (signal.aborted) {
      await iterator?.return?.().catch(() => {});
      batcher.discard();
      model.stats.cancelled++;
      if (stream.hostCancelReason !== undefined) {
        sendQuietly(peerId, AI_OPS.cancel, { streamId, by: 'host', reason: stream.hostCancelReason });
      }
      return;
    }
    try {
      await batcher.flush();
      const completionTokens = usage?.completionTokens ?? items;
      const limited = hitLimit || (maxTokens !== undefined && completionTokens >= maxTokens);
      await send(
        peerId,
        AI_OPS.end,
        withPadding<StreamEnd>({
          streamId,
          frames: seq,
          finalResult: {
            finishReason: usage?.finishReason ?? (limited ? 'length' : 'stop'),
            bytes: digest.bytes,
          },
          usage: {
            ...(usage?.promptTokens !== undefined && { promptTokens: usage.promptTokens }),
            completionTokens,
            queuedMs,
            timeToFirstTokenMs: (firstTokenAt ?? lastTokenAt) - startedAt,
            generationMs: lastTokenAt - startedAt,
          },
          digest: digest.hex(),
        }),
      );
      model.stats.completed++;
    } catch {
      model.stats.cancelled++; // the consumer disconnected before the end
    }
  }

  function cancelByConsumer(peerId: string, streamId: string): void {
    const stream = streams.get(streamKey(peerId, streamId));
    if (!stream) return;
    stream.controller.abort();
    const index = stream.model.queue.indexOf(stream);
    if (index >= 0) {
      stream.model.queue.splice(index, 1);
      stream.model.stats.queued = stream.model.queue.length;
      stream.model.stats.cancelled++;
      streams.delete(streamKey(peerId, streamId));
    }
  }

  function onMessage(peerId: string, message: PeerMessage): void {
    if (closed || !isAiOp(message.op)) return;
    switch (message.op) {
      case AI_OPS.modelsList: {
        const data = parseAiData(AI_OPS.modelsList, message.data);
        if (data) {
          sendQuietly(peerId, AI_OPS.models, {
            requestId: data.requestId,
            models: [...models.values()].map(modelInfo),
          });
        }
        return;
      }
      case AI_OPS.request: {
        const data = parseAiData(AI_OPS.request, message.data);
        if (data) {
          void admit(peerId, data);
          return;
        }
        const streamId = (message.data as { streamId?: unknown } | null)?.streamId;
        if (isStreamId(streamId)) {
          reject(
            peerId,
            streamId,
            'invalid-request',
            `bad request ${schemaError(AI_OPS.request, message.data)}`,
          );
        }
        return;
      }
      case AI_OPS.cancel: {
        const data = parseAiData(AI_OPS.cancel, message.data);
        if (data?.by === 'consumer') cancelByConsumer(peerId, data.streamId);
        return;
      }
      default:
        return; // frames for the consumer side of this device
    }
  }

  function onPeerDisconnected(peerId: string): void {
    for (const stream of [...streams.values()]) {
      if (stream.peerId === peerId) cancelByConsumer(peerId, stream.request.streamId);
    }
  }

  network.on('message', onMessage);
  network.on('peer-disconnected', onPeerDisconnected);

  return {
    stats: () => [...models.values()].map((model) => ({ ...model.stats })),
    async close() {
      if (closed) return;
      closed = true;
      network.off('message', onMessage);
      network.off('peer-disconnected', onPeerDisconnected);
      const running: Promise<void>[] = [];
      for (const model of models.values()) {
        for (const waiting of model.queue.splice(0)) {
          model.stats.cancelled++;
          streams.delete(streamKey(waiting.peerId, waiting.request.streamId));
          sendQuietly(waiting.peerId, AI_OPS.cancel, {
            streamId: waiting.request.streamId,
            by: 'host',
            reason: 'the host is closing',
          });
        }
        model.stats.queued = 0;
        for (const stream of model.running) {
          stream.hostCancelReason = 'the host is closing';
          stream.controller.abort();
          if (stream.done) running.push(stream.done);
        }
      }
      await Promise.all(running);
    },
  };
}

/**
 * Refuses (FerryError 'BAD_ARGUMENT', naming the option) values that would stall or spin the host: a
 * concurrency of 0 or NaN never starts a stream, and frames under 2 characters cannot carry a
 * surrogate pair, so splitting text into them never ends.
 */
function checkServeOptions(options: ServeOptions): void {
  const { concurrency, queueLength, batchWindowMs, maxFrameChars } = options;
  const perModel = typeof concurrency === 'number' ? { concurrency } : concurrency;
  requirePositive('serveModels concurrency', { ...perModel }, { integer: true });
  requirePositive('serveModels', { queueLength }, { integer: true, zeroAllowed: true });
  requirePositive('serveModels', { batchWindowMs }, { zeroAllowed: true });
  requirePositive('serveModels', { maxFrameChars }, { integer: true });
  if (maxFrameChars !== undefined && maxFrameChars < MIN_FRAME_CHARS) {
    throw new FerryError(
      'BAD_ARGUMENT',
      `serveModels: maxFrameChars must be at least ${MIN_FRAME_CHARS}, a surrogate pair (got ${maxFrameChars})`,
    );
  }
}
