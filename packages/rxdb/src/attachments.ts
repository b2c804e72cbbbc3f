import { FerryError, fromBase64 } from '@ferry/core';
import type { RxAttachmentData, RxAttachmentWriteData } from 'rxdb';
import type { StoredDoc } from './collection-sync.js';
import type { DocMeta } from './store.js';
import { ATTACHMENTS } from './versions.js';
import type { Change } from './wire.js';

/** RxDB's description of an attachment, as stored and as it travels (the data goes in `Change.att`). */
export interface AttachmentStub {
  digest: string;
  length: number;
  type: string;
}

/** The descriptions of a stored document's attachments, or undefined when it has none. */
export function attachmentStubs(
  attachments: Record<string, AttachmentStub> | undefined,
): Record<string, AttachmentStub> | undefined {
  let stubs: Record<string, AttachmentStub> | undefined;
  // for...in, not Object.entries: this runs for every document sent, nearly all without attachments.
  for (const id in attachments) {
    const { digest, length, type } = attachments[id]!;
    stubs ??= {};
    stubs[id] = { digest, length, type };
  }
  return stubs;
}

export const hasAttachments = (change: Change): boolean => Boolean(change.doc?.[ATTACHMENTS]);

/** The content without its attachment descriptions. */
export function withoutAttachments(
  doc: Record<string, unknown> | undefined,
): Record<string, unknown> | undefined {
  if (!doc || !Object.hasOwn(doc, ATTACHMENTS)) return doc;
  const { [ATTACHMENTS]: _descriptions, ...rest } = doc;
  return rest;
}

export function withoutAttachmentData(change: Change): Change {
  if (!change.att) return change;
  const { att: _data, ...rest } = change;
  return rest;
}

/**
 * Sets `meta.attDigests` from the attachments a live document lists (its stored `_attachments`, or
 * the same field of a version's content); a deleted one has none.
 */
export function withAttachmentDigests(meta: DocMeta, doc: Record<string, unknown>): void {
  if (doc._deleted === true || meta.del) return;
  const attachments = doc[ATTACHMENTS] as Record<string, AttachmentStub> | undefined;
  let ids: string[] | undefined;
  // for...in, not Object.keys: nearly every document has none, and gets no array.
  for (const id in attachments) {
    ids ??= [];
    ids.push(id);
  }
  if (!ids) return;
  meta.attDigests = ids
    .sort()
    .map((id) => `${id}:${attachments![id]!.digest}`)
    .join('\n');
}

/** The attachments whose data the storage holds for a stored document: none for a tombstone. */
function heldAttachments(previous: StoredDoc | undefined): Record<string, AttachmentStub> {
  return (previous && !previous._deleted ? previous._attachments : {}) as Record<string, AttachmentStub>;
}

/**
 * Ids of `changes` that came without the data of an attachment whose digest the stored document
 * does not hold (the sender took it for held). A malformed description is left to the write, which
 * refuses it.
 */
export function lackingData(
  changes: Change[],
  stored: Map<string, StoredDoc>,
  data: Map<string, string>,
): string[] {
  const lacking: string[] = [];
  for (const change of changes) {
    const stubs = change.del ? undefined : (change.doc?.[ATTACHMENTS] as Record<string, unknown> | undefined);
    if (typeof stubs !== 'object' || stubs === null) continue;
    const previous = stored.get(change.id);
    const held = heldAttachments(previous);
    for (const id in stubs) {
      const digest = (stubs[id] as Partial<AttachmentStub> | undefined)?.digest;
      if (typeof digest === 'string' && held[id]?.digest !== digest && !data.has(digest)) {
        lacking.push(change.id);
        break;
      }
    }
  }
  return lacking;
}

/** The attachment data that arrived with `changes`, by digest. */
export function receivedData(changes: Change[]): Map<string, string> {
  const data = new Map<string, string>();
  for (const change of changes) {
    if (!change.att) continue;
    const stubs = (change.doc?.[ATTACHMENTS] ?? {}) as Record<string, AttachmentStub>;
    for (const [id, base64] of Object.entries(change.att as Record<string, string>)) {
      const digest = stubs[id]?.digest;
      if (typeof digest === 'string') data.set(digest, base64);
    }
  }
  return data;
}

/**
 * The `_attachments` of a document to write: what is stored already stays (the storage keeps the
 * data of an unchanged digest), anything else takes the data that arrived. Throws SCHEMA_MISMATCH for
 * a description that is malformed or came without data, or (`checkLength`: the length describes the
 * data, not a compressed or encrypted form) data of another length than described.
 */
export function attachmentsToWrite(
  described: unknown,
  previous: StoredDoc | undefined,
  data: Map<string, string>,
  checkLength: boolean,
): StoredDoc['_attachments'] {
  const out: Record<string, RxAttachmentData | RxAttachmentWriteData> = {};
  if (described === undefined) return out;
  if (typeof described !== 'object' || described === null || Array.isArray(described)) {
    throw new FerryError('SCHEMA_MISMATCH', '_attachments must be an object');
  }
  const stored = heldAttachments(previous);
  for (const [id, stub] of Object.entries(described as Record<string, unknown>)) {
    const { digest, length, type } = (stub ?? {}) as Partial<AttachmentStub>;
    if (typeof digest !== 'string' || typeof type !== 'string' || !Number.isSafeInteger(length)) {
      throw new FerryError('SCHEMA_MISMATCH', `attachment ${id} is not described by digest, length and type`);
    }
    const description = { digest, length: length!, type };
    if (stored[id]?.digest === digest) {
      out[id] = description;
      continue;
    }
    const base64 = data.get(digest);
    if (base64 === undefined)
      throw new FerryError('SCHEMA_MISMATCH', `attachment ${id} arrived without its data`);
    const bytes = fromBase64(base64);
    if (checkLength && bytes.length !== length) {
      throw new FerryError('SCHEMA_MISMATCH', `attachment ${id} has ${bytes.length} bytes, not ${length}`);
    }
    out[id] = { ...description, data: new Blob([bytes as Uint8Array<ArrayBuffer>], { type }) };
  }
  // New data goes to the storage with the write, which keeps only the descriptions in the document.
  return out as StoredDoc['_attachments'];
}
