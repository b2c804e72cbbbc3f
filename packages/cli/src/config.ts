import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { AccountDescriptorSchema, compileCheck } from '@ferry/core';
import { type Static, Type } from '@sinclair/typebox';

/**
 * The local device config written by `ferry init`: this device's id, the account key and its KDF
 * descriptor, and the server URL. It holds a secret, so it is written with mode 0600, atomically.
 */
export const DeviceConfigSchema = Type.Object({
  version: Type.Literal(1),
  clientId: Type.String({ minLength: 1 }),
  accountId: Type.String({ minLength: 1 }),
  /** Base64 of the 32-byte account key derived from the passphrase. */
  accountKey: Type.String({ minLength: 1 }),
  /** The account's KDF descriptor (Argon2id parameters), kept to refuse downgrades. */
  kdf: AccountDescriptorSchema,
  /** Ferry server base URLs (diff server + signaling), first one preferred. */
  servers: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
});
export type DeviceConfig = Static<typeof DeviceConfigSchema>;

const checkConfig = compileCheck(DeviceConfigSchema);

export const defaultConfigPath = (): string =>
  process.env.FERRY_CONFIG ??
  join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'ferry', 'config.json');

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export async function readConfig(path: string): Promise<DeviceConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new ConfigError(`no Ferry config at ${path}: run \`ferry init\` first`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ConfigError(`${path} is not valid JSON: fix it or run \`ferry init --force\``);
  }
  const problem = checkConfig.Errors(value).First();
  if (problem) {
    throw new ConfigError(
      `${path} is not a Ferry config (${problem.path || '/'} ${problem.message}): run \`ferry init --force\``,
    );
  }
  return value as DeviceConfig;
}

export async function writeConfig(path: string, config: DeviceConfig): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await chmod(temporary, 0o600);
  await rename(temporary, path);
}
