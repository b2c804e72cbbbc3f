import { addRxPlugin, createRxDatabase, type RxCollection, type RxDatabase, type RxJsonSchema } from 'rxdb';
import { RxDBLocalDocumentsPlugin } from 'rxdb/plugins/local-documents';
import { getRxStorageDexie } from 'rxdb/plugins/storage-dexie';

addRxPlugin(RxDBLocalDocumentsPlugin);

export interface Todo {
  id: string;
  text: string;
  done: boolean;
  createdAt: number;
}

const todoSchema: RxJsonSchema<Todo> = {
  version: 0,
  primaryKey: 'id',
  type: 'object',
  properties: {
    id: { type: 'string', maxLength: 64 },
    text: { type: 'string', maxLength: 1000 },
    done: { type: 'boolean' },
    createdAt: { type: 'number', minimum: 0, maximum: 1e15, multipleOf: 1 },
  },
  required: ['id', 'text', 'done', 'createdAt'],
  indexes: ['createdAt'],
};

export type TodoDatabase = RxDatabase<{ todos: RxCollection<Todo> }>;

/**
 * Opens this browser's todo database in IndexedDB (through Dexie). One database per account, named
 * from the account's public tag, so two accounts used in one browser never see each other's data.
 */
export async function openTodoDatabase(accountTag: string): Promise<TodoDatabase> {
  const db: TodoDatabase = await createRxDatabase({
    name: `ferry-${accountTag
      .toLowerCase()
      .replace(/[^a-z0-9]/g, '')
      .slice(0, 24)}`,
    storage: getRxStorageDexie(),
    // One tab per device (main.ts holds a Web Lock), so no cross-tab leader election is needed.
    multiInstance: false,
    // Device state that is not a todo (the diff-server client's keys and counters) lives here too.
    localDocuments: true,
  });
  await db.addCollections({ todos: { schema: todoSchema } });
  return db;
}
