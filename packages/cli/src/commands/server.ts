import { startFerryServer } from '@ferry/server';
import { pino } from 'pino';

export interface ServerCommandOptions {
  port: number;
  host: string;
  data: string;
  logLevel: string;
  /** Also serve the web demo (apps/web, built with `npm run build -w @ferry/web`). */
  web: boolean;
  out: (line: string) => void;
}

/** `ferry server`: signaling + diff server in one process until SIGINT/SIGTERM. */
export async function runServer(options: ServerCommandOptions): Promise<void> {
  const logger = pino({ name: 'ferry', level: options.logLevel }, pino.destination(2));
  const server = await startFerryServer({
    port: options.port,
    host: options.host,
    dataDir: options.data,
    logger,
    ...(options.web
      ? { configure: async (app) => (await import('@ferry/web/server')).registerWebApp(app) }
      : {}),
  });
  const storage = process.env.FERRY_DATABASE_URL
    ? 'PostgreSQL (FERRY_DATABASE_URL)'
    : `SQLite in ${options.data}`;
  options.out(`Ferry server listening on ${server.url}`);
  options.out(`  diff server  ${server.url}  (storage: ${storage})`);
  options.out(
    `  signaling    ${server.signalingUrl}${process.env.FERRY_REDIS_URL ? '  (rooms shared through Redis)' : ''}`,
  );
  options.out('  health       GET /health, metrics GET /metrics');
  if (options.web) options.out(`  web demo     ${server.url}/`);
  options.out(
    'Plain HTTP: put a TLS-terminating reverse proxy in front for anything beyond localhost (see README).',
  );

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      options.out(`${signal}: shutting down`);
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  await server.close();
}
