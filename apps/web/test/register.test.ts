import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWebAppBuilt, registerWebApp } from '../server/register.js';

// registerWebApp on a Fastify instance that also has API routes, as in `ferry server --web`.
let root: string;
let app: FastifyInstance;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'ferry-web-static-'));
  app = Fastify();
  app.post('/pushDiff', async () => ({ stored: true }));
  app.get('/health', async () => ({ status: 'ok' }));
});

afterEach(async () => {
  await app.close();
  await rm(root, { recursive: true, force: true });
});

async function writeBuild(): Promise<void> {
  await mkdir(join(root, 'assets'));
  await writeFile(join(root, 'index.html'), '<!doctype html><title>Ferry</title>');
  await writeFile(join(root, 'assets', 'index-abc123.js'), 'console.log(1)');
}

describe('registerWebApp', () => {
  it('serves index.html at / (revalidated) and fingerprinted assets (cached for good)', async () => {
    await writeBuild();
    await registerWebApp(app, { root });
    const index = await app.inject({ url: '/' });
    expect(index.statusCode).toBe(200);
    expect(index.headers['content-type']).toMatch(/^text\/html/);
    expect(index.headers['cache-control']).toBe('no-cache');
    const asset = await app.inject({ url: '/assets/index-abc123.js' });
    expect(asset.statusCode).toBe(200);
    expect(asset.headers['content-type']).toMatch(/javascript/);
    expect(asset.headers['cache-control']).toBe('public, max-age=31536000, immutable');
  });

  it('leaves the server routes alone', async () => {
    await writeBuild();
    await registerWebApp(app, { root });
    expect((await app.inject({ method: 'POST', url: '/pushDiff' })).json()).toEqual({ stored: true });
    expect((await app.inject({ url: '/health' })).json()).toEqual({ status: 'ok' });
  });

  it('answers 404 for missing files and never serves outside its root', async () => {
    await writeBuild();
    const outside = `outside-${basename(root)}.txt`;
    await writeFile(join(root, '..', outside), 'secret');
    try {
      await registerWebApp(app, { root });
      expect((await app.inject({ url: '/assets/missing.js' })).statusCode).toBe(404);
      for (const url of [`/../${outside}`, `/%2e%2e/${outside}`, `/assets/..%2f..%2f${outside}`]) {
        const response = await app.inject({ url });
        expect(response.statusCode, url).not.toBe(200);
        expect(response.body, url).not.toContain('secret');
      }
    } finally {
      await rm(join(root, '..', outside));
    }
  });

  it('refuses to start without a build, saying how to make one', async () => {
    expect(isWebAppBuilt(root)).toBe(false);
    await expect(registerWebApp(app, { root })).rejects.toMatchObject({
      name: 'FerryError',
      code: 'SERVER',
      message: expect.stringContaining('npm run build -w @ferry/web'),
    });
  });
});
