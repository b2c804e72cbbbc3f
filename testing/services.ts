import net from 'node:net';

/**
 * Tests that need a real PostgreSQL, Redis or Chromium call these. On a developer machine a missing
 * service skips those tests with a visible reason; in CI (FERRY_REQUIRE_SERVICES=1, set by .ci/run)
 * a missing service fails the run, so a green CI always means the tests really ran.
 */
export const TEST_DATABASE_URL =
  process.env.FERRY_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const TEST_REDIS_URL = process.env.FERRY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const CHROMIUM_PATH = process.env.FERRY_CHROMIUM_PATH ?? '/usr/bin/chromium';

const required = process.env.FERRY_REQUIRE_SERVICES === '1';

function portOpen(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
    socket.setTimeout(1000, () => {
      socket.destroy();
      resolve(false);
    });
  });
}

async function check(name: string, available: boolean): Promise<boolean> {
  if (available) return true;
  if (required) throw new Error(`${name} is required (FERRY_REQUIRE_SERVICES=1) but not reachable`);
  console.warn(`[ferry tests] ${name} not reachable: its tests are skipped`);
  return false;
}

export const hasPostgres = async (): Promise<boolean> =>
  check('PostgreSQL', await portOpen(TEST_DATABASE_URL));
export const hasRedis = async (): Promise<boolean> => check('Redis', await portOpen(TEST_REDIS_URL));
export const hasChromium = async (): Promise<boolean> => {
  const { existsSync } = await import('node:fs');
  return check('Chromium', existsSync(CHROMIUM_PATH));
};
