import { hasPostgres } from '../../../../testing/services.js';
import { openStorage, useCleanup } from './helpers.js';
import { runStorageConformance } from './storage-conformance.js';

const defer = useCleanup();

runStorageConformance('SQLite', async () => (await openStorage('sqlite', defer)).storage);

if (await hasPostgres()) {
  runStorageConformance('PostgreSQL', async () => (await openStorage('postgres', defer)).storage);
}
