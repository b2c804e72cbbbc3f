import { describe, expect, it, vi } from 'vitest';
import { loadNodeWebRTC } from '../../src/node.js';

// An app (or `ferry --webrtc node-datachannel`) asking for node-datachannel without installing it (an
// optional peer dependency) gets a typed error saying what to install; the default still loads.
vi.mock('node-datachannel/polyfill', () => {
  throw new Error("Cannot find package 'node-datachannel'");
});

describe('loadNodeWebRTC without node-datachannel installed', () => {
  it('refuses node-datachannel with BAD_ARGUMENT naming the package to install', async () => {
    await expect(loadNodeWebRTC('node-datachannel')).rejects.toMatchObject({
      name: 'FerryError',
      code: 'BAD_ARGUMENT',
      message: expect.stringContaining('npm install node-datachannel'),
    });
    await expect(loadNodeWebRTC('@roamhq/wrtc')).resolves.toBeDefined();
  });
});
