import { randomUUID } from 'node:crypto';
import { deriveAccount, generatePassphrase, toBase64, validatePassphrase } from '@ferry/core';
import { readConfig, writeConfig } from '../config.js';
import { UsageError } from '../errors.js';

export interface InitOptions {
  config: string;
  server: string;
  force: boolean;
  /** A passphrase the user chose (read from stdin by the command); generated when absent. */
  passphrase?: string;
  out: (line: string) => void;
}

/** Creates this device's config: a new account (or joins one with a known passphrase). */
export async function init(options: InitOptions): Promise<void> {
  const existing = await readConfig(options.config).catch(() => undefined);
  if (existing && !options.force) {
    throw new UsageError(
      `${options.config} already holds device ${existing.clientId}: pass --force to replace it`,
    );
  }
  const generated = options.passphrase === undefined;
  const passphrase = options.passphrase ?? generatePassphrase();
  validatePassphrase(passphrase);
  if (!URL.canParse(options.server))
    throw new UsageError(`--server ${options.server} is not a URL (e.g. http://127.0.0.1:8787)`);
  const account = await deriveAccount(passphrase);
  const clientId = randomUUID();
  await writeConfig(options.config, {
    version: 1,
    clientId,
    accountId: account.accountId,
    accountKey: toBase64(account.key),
    kdf: account.descriptor,
    servers: [options.server],
  });
  if (generated) {
    options.out('Your new account passphrase (shown once; write it down, it is the only way in):');
    options.out('');
    options.out(`    ${passphrase}`);
    options.out('');
    options.out('Use it with `ferry init --passphrase-stdin` on your other devices.');
  }
  options.out(
    `Device ${clientId} of account ${account.accountId.slice(0, 12)}… saved to ${options.config} (mode 0600).`,
  );
}
