import { validateMnemonic } from '@scure/bip39';
import { wordlist } from '@scure/bip39/wordlists/english.js';
import { describe, expect, it } from 'vitest';
import {
  type AccountDescriptor,
  accountIdFromKey,
  argon2idRaw,
  assertNoKdfDowngrade,
  DEFAULT_ACCOUNT_DESCRIPTOR,
  deriveAccount,
  generatePassphrase,
  MINIMUM_ACCOUNT_DESCRIPTOR,
  normalizePassphrase,
  parseAccountDescriptor,
  passphraseSalt,
  validatePassphrase,
} from '../../src/crypto/account.js';
import { deriveSigningKeyPair, sign, verify } from '../../src/crypto/sign.js';
import { deriveSubkey, SUBKEY_PURPOSES, type SubkeyPurpose } from '../../src/crypto/subkeys.js';
import { toBase64, toHex, utf8 } from '../../src/util/bytes.js';
import { codeOf } from '../support/errors.js';

// Test speed: the OWASP floor (19 MiB, t=2, p=1), the cheapest descriptor deriveAccount accepts.
const FAST = MINIMUM_ACCOUNT_DESCRIPTOR;
const PASSPHRASE = 'correct horse battery staple, but longer';

describe('account descriptor', () => {
  it('defaults to RFC 9106 option 2 and is JSON-serialisable', () => {
    expect(DEFAULT_ACCOUNT_DESCRIPTOR).toEqual({ v: 1, kdf: 'argon2id', m: 65536, t: 3, p: 4 });
    expect(parseAccountDescriptor(JSON.parse(JSON.stringify(DEFAULT_ACCOUNT_DESCRIPTOR)))).toEqual(
      DEFAULT_ACCOUNT_DESCRIPTOR,
    );
  });

  it('accepts the OWASP floor and refuses anything below it with KDF_DOWNGRADE', () => {
    expect(parseAccountDescriptor({ v: 1, kdf: 'argon2id', m: 19456, t: 2, p: 1 })).toEqual(FAST);
    expect(codeOf(() => parseAccountDescriptor({ ...FAST, m: 19455 }))).toBe('KDF_DOWNGRADE');
    expect(codeOf(() => parseAccountDescriptor({ ...FAST, t: 1 }))).toBe('KDF_DOWNGRADE');
  });

  it('says what is wrong with a malformed or unknown descriptor', () => {
    expect(codeOf(() => parseAccountDescriptor({ ...FAST, v: 2 }))).toBe('UNKNOWN_VERSION');
    const malformed: unknown[] = [
      null,
      'argon2id',
      {},
      { ...FAST, kdf: 'scrypt' },
      { ...FAST, m: 19456.5 },
      { ...FAST, m: '65536' },
      { ...FAST, p: 0 },
      { ...FAST, p: 17 },
      { ...FAST, t: 33 },
      { ...FAST, m: 2 ** 31 },
      { ...FAST, extra: true },
    ];
    for (const value of malformed)
      expect(
        codeOf(() => parseAccountDescriptor(value)),
        JSON.stringify(value),
      ).toBe('SCHEMA_MISMATCH');
  });

  it('refuses a descriptor weaker than the stored one (memory or passes), accepts equal or stronger', () => {
    const stored: AccountDescriptor = { v: 1, kdf: 'argon2id', m: 65536, t: 3, p: 4 };
    expect(codeOf(() => assertNoKdfDowngrade(stored, { ...stored, m: 32768 }))).toBe('KDF_DOWNGRADE');
    expect(codeOf(() => assertNoKdfDowngrade(stored, { ...stored, t: 2 }))).toBe('KDF_DOWNGRADE');
    expect(codeOf(() => assertNoKdfDowngrade(stored, stored))).toBe('ok');
    expect(codeOf(() => assertNoKdfDowngrade(stored, { ...stored, m: 131072, t: 4 }))).toBe('ok');
  });
});

describe('passphrases', () => {
  it('generates 12 distinct-looking BIP39 English words with a valid checksum', () => {
    const phrases = new Set(Array.from({ length: 20 }, generatePassphrase));
    expect(phrases.size).toBe(20);
    for (const phrase of phrases) {
      expect(phrase.split(' ')).toHaveLength(12);
      expect(validateMnemonic(phrase, wordlist)).toBe(true);
      expect(validatePassphrase(phrase)).toBe(phrase);
    }
  });

  it('gives BAD_PASSPHRASE for empty, blank, too short or non-string passphrases', () => {
    for (const bad of ['', '   \n\t', 'short', 'fourteen chars', 'ä'.repeat(14), 42, undefined, null]) {
      expect(
        codeOf(() => validatePassphrase(bad)),
        String(bad),
      ).toBe('BAD_PASSPHRASE');
    }
    expect(validatePassphrase('fifteen chars!!')).toBe('fifteen chars!!');
  });

  it('counts characters, not UTF-16 units: 15 emoji are long enough', () => {
    expect(validatePassphrase('🔑'.repeat(15))).toBe('🔑'.repeat(15));
    expect(codeOf(() => validatePassphrase('🔑'.repeat(8)))).toBe('BAD_PASSPHRASE');
  });

  it('catches a typo in a generated passphrase through the BIP39 checksum', () => {
    const words = generatePassphrase().split(' ');
    // Replace the last word by every other list word: most fail the checksum, none may silently pass as
    // the original phrase. At least one replacement must be refused.
    const refused = wordlist.filter((candidate) => {
      if (candidate === words[11]) return false;
      return (
        codeOf(() => validatePassphrase([...words.slice(0, 11), candidate].join(' '))) === 'BAD_PASSPHRASE'
      );
    });
    expect(refused.length).toBeGreaterThan(wordlist.length * 0.9);
  });

  it('normalises NFKC, outer and repeated whitespace, and the letter case of a valid mnemonic only', () => {
    expect(normalizePassphrase('  caf\u0065\u0301 au lait  \n')).toBe('caf\u00e9 au lait');
    expect(normalizePassphrase('ｆｕｌｌｗｉｄｔｈ')).toBe('fullwidth');
    expect(normalizePassphrase('Mixed Case User Passphrase')).toBe('Mixed Case User Passphrase');
    const phrase = generatePassphrase();
    const typed = phrase.replace(/^./, (c) => c.toUpperCase()).replace(' ', '   ');
    expect(normalizePassphrase(typed)).toBe(phrase);
  });
});

describe('deriveAccount', () => {
  it('is deterministic: the same passphrase gives the same key and accountId on another device', async () => {
    const a = await deriveAccount(PASSPHRASE, FAST);
    const b = await deriveAccount(`  ${PASSPHRASE.replace(' ', '  ')}`, FAST);
    expect(a.key).toHaveLength(32);
    expect(toHex(b.key)).toBe(toHex(a.key));
    expect(b.accountId).toBe(a.accountId);
    expect(a.descriptor).toEqual(FAST);
  });

  it('is exactly Argon2id(normalised passphrase, domain-separated salt) with the descriptor parameters', async () => {
    const account = await deriveAccount(PASSPHRASE, FAST);
    const expected = await argon2idRaw({
      password: utf8(PASSPHRASE),
      salt: passphraseSalt(PASSPHRASE),
      m: FAST.m,
      t: FAST.t,
      p: FAST.p,
      length: 32,
    });
    expect(toHex(account.key)).toBe(toHex(expected));
    expect(passphraseSalt(PASSPHRASE)).toHaveLength(16);
    expect(toHex(passphraseSalt(PASSPHRASE))).not.toBe(toHex(passphraseSalt(`${PASSPHRASE}.`)));
  });

  it('gives different keys for different passphrases or different parameters', async () => {
    const base = await deriveAccount(PASSPHRASE, FAST);
    const otherPass = await deriveAccount(`${PASSPHRASE}!`, FAST);
    const otherParams = await deriveAccount(PASSPHRASE, { ...FAST, t: 3 });
    expect(new Set([base, otherPass, otherParams].map((a) => toHex(a.key))).size).toBe(3);
    expect(new Set([base, otherPass, otherParams].map((a) => a.accountId)).size).toBe(3);
  });

  it('derives an opaque base64url accountId from the accountTag subkey, revealing nothing typed', async () => {
    const account = await deriveAccount(PASSPHRASE, FAST);
    expect(account.accountId).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(account.accountId).toBe(toBase64(deriveSubkey(account.key, 'accountTag'), { url: true }));
    expect(account.accountId).toBe(accountIdFromKey(account.key));
    expect(account.accountId).not.toContain('horse');
  });

  it('validates before stretching: bad passphrase, bad descriptor and downgrades are refused', async () => {
    await expect(deriveAccount('', FAST)).rejects.toMatchObject({ code: 'BAD_PASSPHRASE' });
    await expect(deriveAccount(PASSPHRASE, { ...FAST, m: 1024 })).rejects.toMatchObject({
      code: 'KDF_DOWNGRADE',
    });
    await expect(deriveAccount(PASSPHRASE, { ...FAST, v: 9 } as never)).rejects.toMatchObject({
      code: 'UNKNOWN_VERSION',
    });
    await expect(
      deriveAccount(PASSPHRASE, FAST, { previous: DEFAULT_ACCOUNT_DESCRIPTOR }),
    ).rejects.toMatchObject({ code: 'KDF_DOWNGRADE' });
    await expect(deriveAccount(PASSPHRASE, FAST, { previous: FAST })).resolves.toMatchObject({
      descriptor: FAST,
    });
  });
});

describe('subkeys and derived signing keys', () => {
  it('gives one distinct subkey per purpose', () => {
    const key = new Uint8Array(32).fill(9);
    const purposes = Object.keys(SUBKEY_PURPOSES) as SubkeyPurpose[];
    expect(new Set(purposes.map((purpose) => toHex(deriveSubkey(key, purpose)))).size).toBe(purposes.length);
  });

  it('derives the relay and room Ed25519 key pairs from the account key, distinct and usable', () => {
    const key = new Uint8Array(32).fill(9);
    const relay = deriveSigningKeyPair(key, 'relaySigning');
    const room = deriveSigningKeyPair(key, 'roomSigning');
    expect(toHex(relay.secretKey)).toBe(toHex(deriveSubkey(key, 'relaySigning')));
    expect(toHex(relay.publicKey)).not.toBe(toHex(room.publicKey));
    const message = utf8('POST /pushDiff');
    expect(verify(relay.publicKey, message, sign(relay.secretKey, message))).toBe(true);
    expect(verify(room.publicKey, message, sign(relay.secretKey, message))).toBe(false);
    expect(verify(relay.publicKey, message, new Uint8Array(3))).toBe(false);
  });
});
