import { defineOps } from '@ferry/core';
import { type Static, type TSchema, Type } from '@sinclair/typebox';

/**
 * AI streaming operations (spec section 7.3), carried as PeerMessage `data` on the session's 'ai'
 * lane. The spec's AI_STREAM_INIT / AI_STREAM_DATA / AI_STREAM_END are kept, with the fields users
 * of streaming APIs need: a request, accept (INIT) or reject, a queued state, stream ids so several
 * streams share one connection, sequence numbers, cancel from either side, mid-stream errors, and an
 * end frame with usage and a SHA-256 digest of the whole output so a consumer detects truncation.
 *
 * Direction: the consumer (asking device) sends AI_MODELS_LIST, AI_STREAM_REQUEST and
 * AI_STREAM_CANCEL; the host (device with the model) sends everything else, and AI_STREAM_CANCEL.
 */

export const AI_OPS = {
  modelsList: 'AI_MODELS_LIST',
  models: 'AI_MODELS',
  request: 'AI_STREAM_REQUEST',
  queued: 'AI_STREAM_QUEUED',
  init: 'AI_STREAM_INIT',
  reject: 'AI_STREAM_REJECT',
  data: 'AI_STREAM_DATA',
  end: 'AI_STREAM_END',
  cancel: 'AI_STREAM_CANCEL',
  error: 'AI_STREAM_ERROR',
} as const;
export type AiOp = (typeof AI_OPS)[keyof typeof AI_OPS];

/** Chosen by the consumer: 128 random bits, base64url or hex. */
export const StreamIdSchema = Type.String({ pattern: '^[A-Za-z0-9_-]{8,64}$' });
export const ModelIdSchema = Type.String({ minLength: 1, maxLength: 256 });
/** Padding so a frame's serialized size lands on a bucket (see frames.ts); its content is ignored. */
const PadSchema = Type.String({ maxLength: 65_536 });

export const ChatMessageSchema = Type.Object(
  {
    role: Type.Union([Type.Literal('system'), Type.Literal('user'), Type.Literal('assistant')]),
    content: Type.String({ maxLength: 1_048_576 }),
  },
  { additionalProperties: false },
);
export type ChatMessage = Static<typeof ChatMessageSchema>;

export const SamplingParamsSchema = Type.Object(
  {
    temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 10 })),
    topP: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    topK: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
    seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 4_294_967_295 })),
    maxTokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    stop: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 16 })),
  },
  { additionalProperties: false },
);
export type SamplingParams = Static<typeof SamplingParamsSchema>;

export const ModelInfoSchema = Type.Object({
  id: ModelIdSchema,
  /** Backend kind, e.g. 'llama-cpp', 'openai-compatible', 'function', 'web-llm'. */
  backend: Type.String({ maxLength: 64 }),
  description: Type.Optional(Type.String({ maxLength: 1024 })),
  contextLength: Type.Optional(Type.Integer({ minimum: 0 })),
  /** Streams that may run at once, streams running now, and streams waiting. */
  concurrency: Type.Integer({ minimum: 0 }),
  active: Type.Integer({ minimum: 0 }),
  queued: Type.Integer({ minimum: 0 }),
});
export type ModelInfo = Static<typeof ModelInfoSchema>;

export const ModelsListSchema = Type.Object({ requestId: StreamIdSchema }, { additionalProperties: false });
export const ModelsSchema = Type.Object({
  requestId: StreamIdSchema,
  models: Type.Array(ModelInfoSchema, { maxItems: 1024 }),
});

export const StreamRequestSchema = Type.Object(
  {
    streamId: StreamIdSchema,
    modelId: ModelIdSchema,
    /** Either a conversation or a bare prompt (treated as one user message). */
    messages: Type.Optional(Type.Array(ChatMessageSchema, { minItems: 1, maxItems: 1024 })),
    prompt: Type.Optional(Type.String({ maxLength: 1_048_576 })),
    params: Type.Optional(SamplingParamsSchema),
  },
  { additionalProperties: false },
);
export type StreamRequest = Static<typeof StreamRequestSchema>;

export const StreamQueuedSchema = Type.Object({
  streamId: StreamIdSchema,
  /** 1 = next to start. */
  position: Type.Integer({ minimum: 1 }),
});

/** Accept: the spec's AI_STREAM_INIT, sent by the host when the engine starts on this stream. */
export const StreamInitSchema = Type.Object({
  streamId: StreamIdSchema,
  modelId: ModelIdSchema,
  sessionInfo: Type.Object({
    backend: Type.String({ maxLength: 64 }),
    /** Time the request waited in the host's queue. */
    queuedMs: Type.Number({ minimum: 0 }),
  }),
});
export type StreamInit = Static<typeof StreamInitSchema>;

export const REJECT_REASONS = ['unknown-model', 'busy', 'refused', 'invalid-request', 'closing'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];
export const StreamRejectSchema = Type.Object({
  streamId: StreamIdSchema,
  reason: Type.Union(REJECT_REASONS.map((reason) => Type.Literal(reason))),
  message: Type.String({ maxLength: 4096 }),
});

export const StreamDataSchema = Type.Object({
  streamId: StreamIdSchema,
  /** 0, 1, 2... per stream: a gap means a lost frame. */
  seq: Type.Integer({ minimum: 0 }),
  /** One or more tokens' text, batched over a few milliseconds. */
  token: Type.String(),
  /** When the engine emitted the first token of this batch (sender clock, ms since epoch). */
  timestamp: Type.Number(),
  pad: PadSchema,
});
export type StreamData = Static<typeof StreamDataSchema>;

export const FINISH_REASONS = ['stop', 'length', 'cancelled'] as const;
export type FinishReason = (typeof FINISH_REASONS)[number];

export const UsageSchema = Type.Object({
  promptTokens: Type.Optional(Type.Integer({ minimum: 0 })),
  completionTokens: Type.Integer({ minimum: 0 }),
  queuedMs: Type.Number({ minimum: 0 }),
  /** From engine start to its first token. */
  timeToFirstTokenMs: Type.Number({ minimum: 0 }),
  /** From engine start to its last token. */
  generationMs: Type.Number({ minimum: 0 }),
});
export type Usage = Static<typeof UsageSchema>;

export const StreamEndSchema = Type.Object({
  streamId: StreamIdSchema,
  /** Number of AI_STREAM_DATA frames sent (the next unused seq). */
  frames: Type.Integer({ minimum: 0 }),
  /**
   * The spec's finalResult. It summarizes instead of repeating the text: the consumer already holds
   * the text, and the digest proves it is all there.
   */
  finalResult: Type.Object({
    finishReason: Type.Union(FINISH_REASONS.map((reason) => Type.Literal(reason))),
    /** UTF-8 length of the whole output. */
    bytes: Type.Integer({ minimum: 0 }),
  }),
  usage: UsageSchema,
  /** SHA-256 of the UTF-8 bytes of the whole output, lowercase hex. */
  digest: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  pad: PadSchema,
});
export type StreamEnd = Static<typeof StreamEndSchema>;

export const StreamCancelSchema = Type.Object({
  streamId: StreamIdSchema,
  /** Which end cancelled: a stream id is the consumer's, so the two directions never collide. */
  by: Type.Union([Type.Literal('consumer'), Type.Literal('host')]),
  reason: Type.Optional(Type.String({ maxLength: 4096 })),
});

export const StreamErrorSchema = Type.Object({
  streamId: StreamIdSchema,
  /** A FerryErrorCode when the failure was one, else 'INTERNAL'. */
  code: Type.String({ maxLength: 64 }),
  message: Type.String({ maxLength: 4096 }),
  pad: PadSchema,
});

export const AI_SCHEMAS = {
  [AI_OPS.modelsList]: ModelsListSchema,
  [AI_OPS.models]: ModelsSchema,
  [AI_OPS.request]: StreamRequestSchema,
  [AI_OPS.queued]: StreamQueuedSchema,
  [AI_OPS.init]: StreamInitSchema,
  [AI_OPS.reject]: StreamRejectSchema,
  [AI_OPS.data]: StreamDataSchema,
  [AI_OPS.end]: StreamEndSchema,
  [AI_OPS.cancel]: StreamCancelSchema,
  [AI_OPS.error]: StreamErrorSchema,
} as const satisfies Record<AiOp, TSchema>;

/**
 * The AI operations in core's registry, on the 'ai' lane: they validate through `validateOpData` and
 * appear in the exported JSON Schemas and docs/PROTOCOL.md like core's own operations.
 */
export const AI_OP_DEFINITIONS = defineOps('ai', AI_SCHEMAS);

export type StreamError = Static<typeof StreamErrorSchema>;
export type AiData<Op extends AiOp> = Static<(typeof AI_SCHEMAS)[Op]>;
