import type { FerryConflict } from './collection-sync.js';
import { compareStamps } from './hlc.js';
import { Serial } from './serial.js';
import type { MetaStore } from './store.js';
import { newId } from './wire.js';

/** A row of the record: its store handle, and the stamp of the conflict's resolution (its age). */
type Row = { handle: string; st: string };

/**
 * The persisted conflict record (`FerryReplicationState.conflicts()`): rows of the metadata store,
 * per collection the latest `keep` conflicts. Writes and prunes run one batch at a time.
 */
export class ConflictRecord {
  /** Per collection, its rows oldest first (read at the first add or clear). */
  private readonly rows = new Map<string, Row[]>();
  private readonly work = new Serial();

  constructor(
    private readonly store: MetaStore,
    private readonly keep: number,
  ) {}

  /**
   * Persist a batch's conflicts (all of one collection) in one write, dropping the oldest beyond
   * `keep`. One write per conflict took a storage transaction each: seconds for a batch in
   * IndexedDB, with the acknowledgement waiting.
   */
  add(conflicts: FerryConflict[]): Promise<void> {
    return this.work.run(async () => {
      const collection = conflicts[0]!.collection;
      const rows = await this.rowsOf(collection);
      const kept = this.keep === 0 ? [] : conflicts.slice(-this.keep);
      const handles = await this.store.setAll(
        kept.map((c) => [`conflict/${c.collection}/${c.id}/${c.resolved.st}/${newId()}`, c]),
      );
      rows.push(...kept.map((c, i) => ({ handle: handles[i]!, st: c.resolved.st })));
      const excess = rows.length - this.keep;
      // Records kept by an earlier run with a larger `keep` go too.
      if (excess > 0) await this.store.remove(rows.splice(0, excess).map((row) => row.handle));
    });
  }

  /** The record of these collections, oldest first, once every add so far landed. */
  async list(collections: Iterable<string>): Promise<FerryConflict[]> {
    const names = new Set(collections);
    await this.work.idle();
    const all = await this.store.list<FerryConflict>('conflict/');
    return all
      .filter((conflict) => names.has(conflict.collection))
      .sort((a, b) => compareStamps(a.resolved.st, b.resolved.st));
  }

  /** Empties the record of these collections. */
  clear(collections: Iterable<string>): Promise<void> {
    return this.work.run(async () => {
      for (const collection of collections) {
        const rows = await this.rowsOf(collection);
        await this.store.remove(rows.splice(0).map((row) => row.handle));
      }
    });
  }

  private async rowsOf(collection: string): Promise<Row[]> {
    let rows = this.rows.get(collection);
    if (!rows) {
      const entries = await this.store.entries<FerryConflict>(`conflict/${collection}/`);
      rows = entries
        .map((entry) => ({ handle: entry.handle, st: entry.value.resolved.st }))
        .sort((a, b) => compareStamps(a.st, b.st));
      this.rows.set(collection, rows);
    }
    return rows;
  }
}
