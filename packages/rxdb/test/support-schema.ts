// RxDB schemas of the test documents (no imports: the browser bundle uses them too).

export const todoSchema = {
  version: 0,
  primaryKey: 'id',
  type: 'object',
  properties: {
    id: { type: 'string', maxLength: 100 },
    title: { type: 'string', maxLength: 300 },
    done: { type: 'boolean' },
    n: { type: 'number' },
    note: { type: 'string' },
  },
  required: ['id', 'title'],
  // Todos may carry attachments (the browser test syncs some between Dexie and Node).
  attachments: {},
} as const;

export const noteSchema = {
  version: 0,
  primaryKey: 'key',
  type: 'object',
  properties: { key: { type: 'string', maxLength: 100 }, body: { type: 'string' } },
  required: ['key', 'body'],
} as const;
