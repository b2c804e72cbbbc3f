import type { RelayState, RelayStateStore } from '@ferry/core';

/** The part of an RxDatabase (with the local-documents plugin) this store uses. */
interface LocalDocuments {
  getLocal(id: string): Promise<{ get(path: string): unknown } | null>;
  upsertLocal(id: string, data: { state: RelayState }): Promise<unknown>;
}

const DOCUMENT_ID = 'ferry-relay-state';

/**
 * Keeps the diff-server client's state (device key, sequence numbers, acknowledged ids) in an RxDB
 * local document, i.e. in the same IndexedDB as the todos: a browser that comes back keeps its
 * mailbox on the diff server and its replay protection.
 */
export class LocalDocumentRelayStateStore implements RelayStateStore {
  constructor(private readonly db: LocalDocuments) {}

  async load(): Promise<RelayState | undefined> {
    const document = await this.db.getLocal(DOCUMENT_ID);
    return document ? structuredClone(document.get('state') as RelayState) : undefined;
  }

  async save(state: RelayState): Promise<void> {
    await this.db.upsertLocal(DOCUMENT_ID, { state: structuredClone(state) });
  }
}
