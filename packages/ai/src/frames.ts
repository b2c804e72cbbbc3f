import {
  compileCheck,
  FerryError,
  newMessageId,
  type PeerMessage,
  randomBytes,
  toBase64,
  toHex,
  validateOpData,
} from '@ferry/core';
import { sha256 } from '@noble/hashes/sha2.js';
import { AI_OPS, type AiData, type AiOp, StreamIdSchema } from './wire.js';

const encoder = new TextEncoder();
export const utf8Length = (text: string): number => encoder.encode(text).length;

export const newId = (): string => toBase64(randomBytes(16), { url: true }).replace(/=+$/, '');

export function aiMessage<Op extends AiOp>(op: Op, data: AiData<Op>): PeerMessage {
  return { op, data, timestamp: Date.now(), id: newMessageId() };
}

const streamIdCheck = compileCheck(StreamIdSchema);
export const isStreamId = (value: unknown): value is string => streamIdCheck.Check(value);

const AI_OP_SET = new Set<string>(Object.values(AI_OPS));
export const isAiOp = (op: string): op is AiOp => AI_OP_SET.has(op);

/** Validate the data of an incoming AI message; returns undefined (never throws) when it does not fit. */
export function parseAiData<Op extends AiOp>(op: Op, data: unknown): AiData<Op> | undefined {
  return schemaError(op, data) === undefined ? (data as AiData<Op>) : undefined;
}

/** Why `data` does not fit the schema of `op` ("... at /data/params/temperature"), if it does not. */
export function schemaError(op: AiOp, data: unknown): string | undefined {
  try {
    validateOpData(op, data);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * Padding buckets for frame sizes. Ciphertext length follows plaintext length, and per-token frame
 * sizes reveal token lengths, enough to reconstruct much of a response (Cloudflare, 2024). Every AI
 * frame is padded so its serialized data lands on one of these sizes.
 */
const SMALL_BUCKETS = [128, 256, 512, 1024, 2048, 4096];
const LARGE_BUCKET_STEP = 4096;

export function bucketSize(bytes: number): number {
  for (const bucket of SMALL_BUCKETS) if (bytes <= bucket) return bucket;
  return Math.ceil(bytes / LARGE_BUCKET_STEP) * LARGE_BUCKET_STEP;
}

/** Fill `pad` so the JSON form of `data` is exactly a bucket size in UTF-8 bytes. */
export function withPadding<T extends { pad: string }>(data: Omit<T, 'pad'>): T {
  const bare = { ...data, pad: '' } as T;
  const size = utf8Length(JSON.stringify(bare));
  bare.pad = ' '.repeat(bucketSize(size) - size);
  return bare;
}

/** Incremental SHA-256 over the UTF-8 bytes of a text arriving in pieces. */
export class TextDigest {
  private readonly hash = sha256.create();
  bytes = 0;

  update(text: string): void {
    const bytes = encoder.encode(text);
    this.bytes += bytes.length;
    this.hash.update(bytes);
  }

  hex(): string {
    return toHex(this.hash.digest());
  }
}

/** The least text a frame can carry: one surrogate pair, which is never cut. */
export const MIN_FRAME_CHARS = 2;

/**
 * Splits `text` into pieces of at most `maxChars` UTF-16 units without cutting a surrogate pair,
 * which a UTF-8 encoder would turn into replacement characters.
 */
export function splitText(text: string, maxChars: number): string[] {
  // A smaller frame could not hold a surrogate pair: the loop below would never advance.
  if (!(maxChars >= MIN_FRAME_CHARS)) {
    throw new FerryError(
      'BAD_ARGUMENT',
      `text frames must hold at least ${MIN_FRAME_CHARS} characters (got ${maxChars})`,
    );
  }
  const pieces: string[] = [];
  let start = 0;
  while (text.length - start > maxChars) {
    let end = start + maxChars;
    const code = text.charCodeAt(end - 1);
    if (code >= 0xd800 && code <= 0xdbff) end -= 1;
    pieces.push(text.slice(start, end));
    start = end;
  }
  if (start < text.length || pieces.length === 0) pieces.push(text.slice(start));
  return pieces;
}

/**
 * Sends at most one frame per `windowMs`, carrying every token produced since the last one, so frame
 * count and timing follow the clock rather than the tokenizer. A token arriving after a quiet window
 * goes out at once (slow engines pay no batching delay); tokens arriving faster wait for the window.
 * While a frame is in flight (session backpressure) tokens keep accumulating: the engine is never
 * blocked by the network.
 */
export class TokenBatcher {
  private pending = '';
  private pendingSince = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private scheduled = false;
  /** Bumped to invalidate a scheduled send. */
  private scheduleTicket = 0;
  private lastSentAt = Number.NEGATIVE_INFINITY;
  private inFlight: Promise<void> | undefined;
  /** The first send failure; later tokens are dropped. */
  failure: unknown;

  constructor(
    private readonly sendFrame: (text: string, firstEmittedAt: number) => Promise<void>,
    private readonly windowMs: number,
    private readonly maxFrameChars: number,
  ) {}

  push(text: string, emittedAt: number): void {
    if (this.failure !== undefined || text.length === 0) return;
    if (this.pending.length === 0) this.pendingSince = emittedAt;
    this.pending += text;
    this.schedule();
  }

  /** Send what is pending now and wait until every frame is accepted by the session. */
  async flush(): Promise<void> {
    this.clearTimer();
    while (this.inFlight || (this.pending.length > 0 && this.failure === undefined)) {
      if (this.inFlight) await this.inFlight;
      else this.sendPending(true);
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /** Drop pending tokens (the stream was cancelled). */
  discard(): void {
    this.clearTimer();
    this.pending = '';
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight) return;
    this.scheduled = true;
    const ticket = ++this.scheduleTicket;
    const fire = () => {
      if (ticket === this.scheduleTicket) this.sendPending();
    };
    const wait = this.lastSentAt + this.windowMs - performance.now();
    // A microtask, not setTimeout(0): timers round up to 1 ms or more.
    if (wait <= 0) queueMicrotask(fire);
    else this.timer = setTimeout(fire, wait);
  }

  /**
   * Send the pending text. Until the final flush a trailing high surrogate waits for its partner, so
   * no frame carries half a character (a UTF-8 encoder on the way would replace it).
   */
  private sendPending(final = false): void {
    this.clearTimer();
    if (this.pending.length === 0 || this.failure !== undefined) return;
    const last = this.pending.charCodeAt(this.pending.length - 1);
    const keep = !final && last >= 0xd800 && last <= 0xdbff ? 1 : 0;
    const text = this.pending.slice(0, this.pending.length - keep);
    if (text.length === 0) return;
    const since = this.pendingSince;
    this.pending = this.pending.slice(text.length);
    this.lastSentAt = performance.now();
    const sending = (async () => {
      for (const piece of splitText(text, this.maxFrameChars)) await this.sendFrame(piece, since);
    })();
    this.inFlight = sending
      .catch((error: unknown) => {
        this.failure = error;
        this.pending = '';
      })
      .finally(() => {
        this.inFlight = undefined;
        if (this.pending.length > 0) this.schedule();
      });
  }

  private clearTimer(): void {
    this.scheduleTicket++;
    this.scheduled = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
