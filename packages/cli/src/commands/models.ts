import { askPeer, listPeerModels, type ModelBackend, openAiCompatibleBackend, serveModels } from '@ferry/ai';
import { llamaCppBackend } from '@ferry/ai/node';
import type { NodeWebRTCName } from '@ferry/core/node';
import { readConfig } from '../config.js';
import { openDevice, waitForPeers } from '../device.js';
import { UsageError } from '../errors.js';

export interface ShareModelOptions {
  config: string;
  webrtc: NodeWebRTCName;
  gguf?: string;
  openaiUrl?: string;
  model?: string;
  out: (line: string) => void;
}

/** `ferry share-model`: serve a local model to the account's other devices until SIGINT/SIGTERM. */
export async function shareModel(options: ShareModelOptions): Promise<void> {
  if (Boolean(options.gguf) === Boolean(options.openaiUrl)) {
    throw new UsageError('give exactly one of --gguf PATH or --openai-url URL (with --model NAME)');
  }
  if (options.openaiUrl && !options.model) throw new UsageError('--openai-url needs --model NAME');
  const config = await readConfig(options.config);
  let backend: ModelBackend & { load?: () => Promise<void>; close?: () => Promise<void> };
  if (options.gguf) {
    const id = options.model ?? options.gguf.replace(/^.*\//, '').replace(/\.gguf$/i, '');
    backend = llamaCppBackend({ id, modelPath: options.gguf, gpu: false });
    await backend.load!(); // a missing or broken file fails here, before we announce anything
  } else {
    if (!URL.canParse(options.openaiUrl!))
      throw new UsageError(`--openai-url ${options.openaiUrl} is not a URL`);
    backend = openAiCompatibleBackend({ id: options.model!, baseUrl: options.openaiUrl! });
  }
  const device = await openDevice(config, options.config, options.webrtc);
  const host = serveModels(device.network, { backends: [backend] });
  options.out(
    `Serving model "${backend.id}" to the devices of account ${config.accountId.slice(0, 12)}… (Ctrl-C to stop)`,
  );
  device.network.on('peer-connected', (peer) => options.out(`  device ${peer} connected`));
  device.network.on('peer-disconnected', (peer) => options.out(`  device ${peer} disconnected`));
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await host.close();
  await backend.close?.();
  await device.close();
}

export interface ChatOptions {
  config: string;
  webrtc: NodeWebRTCName;
  model: string;
  prompt: string;
  maxTokens: number;
  /** How long to look for a device serving the model. */
  waitMs: number;
  write: (text: string) => void;
  out: (line: string) => void;
}

/** `ferry chat`: ask a peer's model and print its tokens as they arrive. */
export async function chat(options: ChatOptions): Promise<void> {
  if (!options.prompt.trim())
    throw new UsageError('nothing to ask: give a prompt as arguments or on standard input');
  const config = await readConfig(options.config);
  const device = await openDevice(config, options.config, options.webrtc);
  try {
    const deadline = Date.now() + options.waitMs;
    let host: string | undefined;
    while (!host && Date.now() < deadline) {
      await waitForPeers(device.network, Math.max(0, deadline - Date.now()), (peers) => peers.length > 0);
      for (const peer of device.network.connectedPeers()) {
        const models = await listPeerModels(device.network, peer, { timeoutMs: 5_000 }).catch(() => []);
        if (models.some((model) => model.id === options.model)) host = peer;
      }
      if (!host) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    if (!host) {
      throw new UsageError(
        `no device of this account serves "${options.model}" right now: run \`ferry share-model\` on one`,
      );
    }
    const stream = askPeer(device.network, host, {
      modelId: options.model,
      messages: [{ role: 'user', content: options.prompt }],
      params: { maxTokens: options.maxTokens },
    });
    for await (const delta of stream) options.write(delta);
    const { usage } = await stream.result;
    options.write('\n');
    options.out(`(${usage.completionTokens} tokens from ${host} in ${Math.round(usage.generationMs)} ms)`);
  } finally {
    await device.close();
  }
}
