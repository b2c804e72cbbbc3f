/** Tasks run one after another, each once the one before settled; a failed task does not stop the rest. */
export class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Settles once every task given so far has. */
  async idle(): Promise<void> {
    await this.tail;
  }
}
