/**
 * What a relay client must remember across restarts to keep its guarantees: its device key (else it
 * must re-register and its old mailbox is dropped), the next sequence number per outgoing stream
 * (receivers detect gaps), the highest sequence seen per incoming stream, and the diff ids it has
 * acknowledged until they expire (so a server that re-serves one is caught). Plain JSON values, so a
 * store can keep it anywhere (a file, IndexedDB, an RxDB local document).
 */
export interface RelayState {
  /** base64url Ed25519 seed of this device's own relay key. */
  deviceSeed?: string;
  /** Random id of this sender's numbering; a fresh state starts a new epoch at sequence 1. */
  epoch?: string;
  /** [stream, last sequence sent]; the stream is the target clientId or `*`. */
  sent: Array<[string, number]>;
  /** [sender/epoch/stream key, highest sequence received]. */
  received: Array<[string, number]>;
  /** [diffId, expiry ms] of acknowledged diffs. */
  acked: Array<[string, number]>;
}

/** Loads and saves the whole state; `save` is awaited before the client relies on what it wrote. */
export interface RelayStateStore {
  load(): Promise<RelayState | undefined>;
  save(state: RelayState): Promise<void>;
}

/** The default: state lives as long as the process (a restart re-registers the device, see RelayState). */
export class MemoryRelayStateStore implements RelayStateStore {
  private state: RelayState | undefined;

  async load(): Promise<RelayState | undefined> {
    return this.state === undefined ? undefined : structuredClone(this.state);
  }

  async save(state: RelayState): Promise<void> {
    this.state = structuredClone(state);
  }
}
