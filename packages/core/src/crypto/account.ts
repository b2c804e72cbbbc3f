import { sha256 } from '@noble/hashes/sha2.js';
import { generateMnemonic, validateMnemonic } from '@scure/bip39';
import { wordlist as english } from '@scure/bip39/wordlists/english.js';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { FerryError } from '../errors.js';
import { concatBytes, toBase64, utf8 } from '../util/bytes.js';
import { deriveSubkey } from './subkeys.js';

/**
 * The account: one 32-byte key stretched from a passphrase with Argon2id, identical on every device
 * that knows the passphrase and the account descriptor (the Argon2id parameters, versioned).
 */

// Memory in KiB, as RFC 9106 and hash-wasm count it. Upper bounds keep a hostile descriptor (for example
// one received while pairing) from making a device allocate gigabytes or spin for minutes.
const MAX_MEMORY_KIB = 1024 * 1024;
const MAX_PASSES = 32;
const MAX_LANES = 16;

export const AccountDescriptorSchema = Type.Object(
  {
    v: Type.Literal(1),
    kdf: Type.Literal('argon2id'),
    /** Memory in KiB. */
    m: Type.Integer({ minimum: 1, maximum: MAX_MEMORY_KIB }),
    /** Passes over memory. */
    t: Type.Integer({ minimum: 1, maximum: MAX_PASSES }),
    /** Lanes (parallelism). */
    p: Type.Integer({ minimum: 1, maximum: MAX_LANES }),
  },
  { additionalProperties: false },
);
export type AccountDescriptor = Static<typeof AccountDescriptorSchema>;

/** RFC 9106 §4, second recommended option: 64 MiB, 3 passes, 4 lanes. */
export const DEFAULT_ACCOUNT_DESCRIPTOR: AccountDescriptor = Object.freeze({
  v: 1,
  kdf: 'argon2id',
  m: 64 * 1024,
  t: 3,
  p: 4,
});

/** OWASP Password Storage Cheat Sheet floor for Argon2id: 19 MiB, 2 passes, 1 lane. Nothing below is accepted. */
export const MINIMUM_ACCOUNT_DESCRIPTOR: AccountDescriptor = Object.freeze({
  v: 1,
  kdf: 'argon2id',
  m: 19 * 1024,
  t: 2,
  p: 1,
});

/**
 * Validates a descriptor from storage, a pairing code or the network: UNKNOWN_VERSION for a version
 * this build does not know, SCHEMA_MISMATCH for a malformed one, KDF_DOWNGRADE below the OWASP floor.
 */
export function parseAccountDescriptor(value: unknown): AccountDescriptor {
  if (typeof value === 'object' && value !== null && 'v' in value && value.v !== 1) {
    throw new FerryError('UNKNOWN_VERSION', `account descriptor version ${String(value.v)} is not supported`);
  }
  if (!Value.Check(AccountDescriptorSchema, value)) {
    const first = Value.Errors(AccountDescriptorSchema, value).First();
    throw new FerryError(
      'SCHEMA_MISMATCH',
      `invalid account descriptor${first ? ` at ${first.path || '/'}: ${first.message}` : ''}`,
    );
  }
  const floor = MINIMUM_ACCOUNT_DESCRIPTOR;
  if (value.m < floor.m || value.t < floor.t) {
    throw new FerryError(
      'KDF_DOWNGRADE',
      `Argon2id parameters m=${value.m} KiB, t=${value.t} are below the OWASP minimum m=${floor.m} KiB, t=${floor.t}`,
    );
  }
  return { v: value.v, kdf: value.kdf, m: value.m, t: value.t, p: value.p };
}

/**
 * Refuses a descriptor that costs an attacker less than the one this device already stored, so a
 * tampered pairing message or config cannot quietly weaken the account. Memory and passes set that
 * cost; lanes only split the same work (and a different lane count is simply a different account).
 */
export function assertNoKdfDowngrade(stored: AccountDescriptor, proposed: AccountDescriptor): void {
  if (proposed.v < stored.v || proposed.m < stored.m || proposed.t < stored.t) {
    throw new FerryError(
      'KDF_DOWNGRADE',
      `account descriptor (v${proposed.v}, m=${proposed.m}, t=${proposed.t}) is weaker than the stored one ` +
        `(v${stored.v}, m=${stored.m}, t=${stored.t})`,
    );
  }
}

// --- passphrases -----------------------------------------------------------------------------------

/** NIST SP 800-63B's minimum for a single-factor secret: the passphrase alone protects data an attacker can copy. */
export const MIN_PASSPHRASE_LENGTH = 15;
const MNEMONIC_WORD_COUNTS = new Set([12, 15, 18, 21, 24]);
const ENGLISH_WORDS = new Set(english);

/** 12 BIP39 English words from 128 random bits (with the BIP39 checksum, so typos are caught). */
export const generatePassphrase = (): string => generateMnemonic(english, 128);

/**
 * The canonical form every device derives from: NFKC (so composed and decomposed accents, full-width
 * forms and the like type the same), outer whitespace trimmed, inner runs collapsed to one space. A
 * valid BIP39 mnemonic in any letter case becomes lowercase (phones capitalise the first word).
 */
export function normalizePassphrase(passphrase: string): string {
  const text = passphrase.normalize('NFKC').trim().replace(/\s+/gu, ' ');
  const lower = text.toLowerCase();
  return lower !== text && validateMnemonic(lower, english) ? lower : text;
}

/** Returns the normalised passphrase, or throws BAD_PASSPHRASE saying what is wrong with it. */
export function validatePassphrase(passphrase: unknown): string {
  if (typeof passphrase !== 'string') throw new FerryError('BAD_PASSPHRASE', 'passphrase must be a string');
  const text = normalizePassphrase(passphrase);
  if (text.length === 0) throw new FerryError('BAD_PASSPHRASE', 'passphrase is empty');
  const length = [...text].length; // code points, not UTF-16 units
  if (length < MIN_PASSPHRASE_LENGTH) {
    throw new FerryError(
      'BAD_PASSPHRASE',
      `passphrase has ${length} characters; use at least ${MIN_PASSPHRASE_LENGTH}, or a generated one`,
    );
  }
  // Every word from the BIP39 list in a mnemonic-sized phrase: almost surely a generated passphrase,
  // so a failing checksum means a typo that would otherwise silently open a different, empty account.
  const words = text.toLowerCase().split(' ');
  if (
    MNEMONIC_WORD_COUNTS.has(words.length) &&
    words.every((word) => ENGLISH_WORDS.has(word)) &&
    !validateMnemonic(words.join(' '), english)
  ) {
    throw new FerryError(
      'BAD_PASSPHRASE',
      'these words look like a generated passphrase but their checksum fails: check each word for a typo',
    );
  }
  return text;
}

// --- derivation ------------------------------------------------------------------------------------

export const ACCOUNT_KEY_BYTES = 32;
const SALT_DOMAIN = utf8('ferry/v1/argon2id-salt');

/**
 * The salt is a domain-separated hash of the passphrase, not random: a second device knows only the
 * passphrase, and there is nowhere to fetch a random salt from before the account exists (the diff
 * server is addressed by the account id, which is derived from the key this salt helps make). The
 * salt's job of making precomputation useless is kept where it matters: the domain label means no table
 * built for another system applies, and a generated passphrase carries 128 random bits, out of reach
 * of any table. Two people choosing the same passphrase share one account, as they would with any
 * passphrase-only scheme, which is why short user passphrases are refused.
 */
export function passphraseSalt(normalizedPassphrase: string): Uint8Array {
  return sha256(concatBytes(SALT_DOMAIN, new Uint8Array([0]), utf8(normalizedPassphrase))).subarray(0, 16);
}

export interface Argon2idInput {
  password: Uint8Array;
  salt: Uint8Array;
  /** Optional Argon2 secret (K in RFC 9106); hash-wasm has no associated-data input. */
  secret?: Uint8Array;
  m: number;
  t: number;
  p: number;
  length: number;
}

/**
 * Raw Argon2id (version 0x13) through hash-wasm: WebAssembly, the same code in browsers and Node.
 * Loaded on first use: most processes hold a key already and never need it (it costs ~3-10 MB).
 */
export async function argon2idRaw(input: Argon2idInput): Promise<Uint8Array> {
  try {
    const { argon2id } = await import('hash-wasm');
    return await argon2id({
      password: input.password,
      salt: input.salt,
      ...(input.secret ? { secret: input.secret } : {}),
      memorySize: input.m,
      iterations: input.t,
      parallelism: input.p,
      hashLength: input.length,
      outputType: 'binary',
    });
  } catch (cause) {
    throw new FerryError('INTERNAL', `Argon2id failed: ${(cause as Error).message}`, { cause });
  }
}

export interface Account {
  /** The 32-byte account key: never leaves the device; every other key is an HKDF subkey of it. */
  readonly key: Uint8Array;
  readonly descriptor: AccountDescriptor;
  /** Opaque tag (base64url of the accountTag subkey) used as `accountId` on the wire. */
  readonly accountId: string;
}

export const accountIdFromKey = (key: Uint8Array): string =>
  toBase64(deriveSubkey(key, 'accountTag'), { url: true });

export interface DeriveAccountOptions {
  /** The descriptor this device stored earlier: a weaker `descriptor` is refused with KDF_DOWNGRADE. */
  previous?: AccountDescriptor;
}

/**
 * Stretches a passphrase into the account. Validation comes first (BAD_PASSPHRASE, SCHEMA_MISMATCH,
 * UNKNOWN_VERSION, KDF_DOWNGRADE), so bad input never costs an Argon2id run.
 */
export async function deriveAccount(
  passphrase: string,
  descriptor: AccountDescriptor = DEFAULT_ACCOUNT_DESCRIPTOR,
  options: DeriveAccountOptions = {},
): Promise<Account> {
  const text = validatePassphrase(passphrase);
  const params = parseAccountDescriptor(descriptor);
  if (options.previous) assertNoKdfDowngrade(parseAccountDescriptor(options.previous), params);
  const key = await argon2idRaw({
    password: utf8(text),
    salt: passphraseSalt(text),
    m: params.m,
    t: params.t,
    p: params.p,
    length: ACCOUNT_KEY_BYTES,
  });
  return { key, descriptor: params, accountId: accountIdFromKey(key) };
}
