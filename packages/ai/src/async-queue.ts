/**
 * Turns callback-style output (an engine's onTextChunk) into an async iterator. The producer pushes
 * items and then ends (with a return value) or fails; the consumer pulls with `for await` or next().
 */
export class AsyncQueue<T, R = undefined> implements AsyncIterator<T, R | undefined> {
  private readonly items: T[] = [];
  private outcome: { done: true; value: R | undefined } | { error: unknown } | undefined;
  private wake: (() => void) | undefined;

  push(item: T): void {
    if (this.outcome) return;
    this.items.push(item);
    this.notify();
  }

  end(value?: R): void {
    this.outcome ??= { done: true, value };
    this.notify();
  }

  fail(error: unknown): void {
    this.outcome ??= { error };
    this.notify();
  }

  async next(): Promise<IteratorResult<T, R | undefined>> {
    for (;;) {
      if (this.items.length > 0) return { done: false, value: this.items.shift()! };
      if (this.outcome) {
        if ('error' in this.outcome) throw this.outcome.error;
        return this.outcome;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
