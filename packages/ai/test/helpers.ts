import { MemoryHub, type MemoryNetwork, type PeerMessage, type PeerNetwork } from '@ferry/core';
import { functionBackend, type ModelBackend } from '../src/backend.js';

/** Two devices on an in-process network: `host` serves, `consumer` asks. */
export function memoryPair(): { hub: MemoryHub; host: MemoryNetwork; consumer: MemoryNetwork } {
  const hub = new MemoryHub();
  return { hub, host: hub.join('host'), consumer: hub.join('consumer') };
}

/**
 * What `backend` writes for a 'hi' at this seed, consumed in this process without any network: the
 * reference a stream over a network must reproduce.
 */
export async function generateDirect(
  backend: ModelBackend,
  seed: number,
  maxTokens: number,
): Promise<string> {
  let text = '';
  const request = {
    modelId: 'tiny',
    messages: [{ role: 'user' as const, content: 'hi' }],
    params: { seed, temperature: 0.8, maxTokens },
  };
  for await (const chunk of backend.generate(request, new AbortController().signal)) text += chunk;
  return text;
}

/**
 * Rewrite or drop (return undefined) the messages a device sends: the test stand-in for a lossy or
 * tampering link. Returns the list of messages that went out.
 */
export function interceptSends(
  network: PeerNetwork,
  rewrite: (message: PeerMessage) => PeerMessage | undefined = (message) => message,
): PeerMessage[] {
  const sent: PeerMessage[] = [];
  const send = network.send.bind(network);
  network.send = async (peerId, message, options) => {
    const next = rewrite(message);
    if (!next) return;
    sent.push(next);
    return send(peerId, next, options);
  };
  return sent;
}

/**
 * A toy engine that produces `tok0 tok1 ...` one per macrotask until it has `tokens` or is aborted.
 * It records what the engine did, independently of what reached any consumer.
 */
export class CountingEngine {
  produced = 0;
  generations = 0;
  /** Generations whose loop has exited: the engine is no longer producing for them. */
  stopped = 0;
  private waiters: Array<{ count: number; resolve: () => void }> = [];
  lastSignal: AbortSignal | undefined;
  lastRequest: Parameters<ModelBackend['generate']>[0] | undefined;

  constructor(private readonly tokens = Number.POSITIVE_INFINITY) {}

  backend(id = 'counting', info: Parameters<typeof functionBackend>[2] = {}): ModelBackend {
    return functionBackend(id, (request, signal) => this.run(request, signal), info);
  }

  /** Resolves once `count` generations have stopped in total. */
  whenStopped(count = 1): Promise<void> {
    if (this.stopped >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }

  private async *run(request: Parameters<ModelBackend['generate']>[0], signal: AbortSignal) {
    this.generations++;
    this.lastSignal = signal;
    this.lastRequest = request;
    const limit = Math.min(this.tokens, request.params.maxTokens ?? Number.POSITIVE_INFINITY);
    try {
      for (let i = 0; i < limit && !signal.aborted; i++) {
        await new Promise((resolve) => setImmediate(resolve));
        if (signal.aborted) break;
        this.produced++;
        yield `tok${i} `;
      }
    } finally {
      this.stopped++;
      for (const waiter of this.waiters.filter((w) => w.count <= this.stopped)) waiter.resolve();
      this.waiters = this.waiters.filter((w) => w.count > this.stopped);
    }
  }
}

/** A backend whose tokens the test releases one by one, for exact interleavings. */
export class GatedEngine {
  private readonly queue: Array<string | Error | null> = [];
  private wake: (() => void) | undefined;

  constructor(readonly id: string) {}

  /** Let one token (or an error, or the end with null) out. */
  release(item: string | Error | null): void {
    this.queue.push(item);
    this.wake?.();
  }

  backend(): ModelBackend {
    return functionBackend(this.id, (_request, signal) => this.run(signal));
  }

  private async *run(signal: AbortSignal) {
    signal.addEventListener('abort', () => this.wake?.());
    for (;;) {
      while (this.queue.length === 0 && !signal.aborted) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
      if (signal.aborted) return;
      const item = this.queue.shift()!;
      if (item === null) return;
      if (item instanceof Error) throw item;
      yield item;
    }
  }
}

/** Read deltas from a stream into an array until it ends, returning the deltas or the error. */
export async function drain(stream: AsyncIterable<string>): Promise<{ deltas: string[]; error?: unknown }> {
  const deltas: string[] = [];
  try {
    for await (const delta of stream) deltas.push(delta);
    return { deltas };
  } catch (error) {
    return { deltas, error };
  }
}
