import {
  argon2idRaw,
  DEFAULT_ACCOUNT_DESCRIPTOR,
  deriveAccount,
  MINIMUM_ACCOUNT_DESCRIPTOR,
} from '../../packages/core/src/crypto/account.js';
import { open, seal } from '../../packages/core/src/crypto/aead.js';
import { randomBytes, utf8 } from '../../packages/core/src/util/bytes.js';
import { MB, median, opsPerSecond, ratio, significant, timeRuns, withPeakRss } from '../lib/measure.js';
import type { BenchMetric, BenchReport } from '../lib/types.js';

const subtle = globalThis.crypto.subtle;
/** Core's helpers return Uint8Array<ArrayBufferLike>; WebCrypto's types want an ArrayBuffer-backed view. */
const owned = (view: Uint8Array): Uint8Array<ArrayBuffer> => view as Uint8Array<ArrayBuffer>;
const random = (length: number) => owned(randomBytes(length));
const SIZES = [
  { label: '64 B', bytes: 64 },
  { label: '16 KiB', bytes: 16 * 1024 },
  { label: '1 MiB', bytes: 1024 * 1024 },
];
// An envelope header's worth of associated data, as Ferry seals it.
const AD = owned(
  utf8(
    JSON.stringify({ version: '1.0', accountId: 'x'.repeat(43), clientId: 'c', sessionId: 's', type: 't' }),
  ),
);

/** OWASP's PBKDF2-HMAC-SHA256 work factor: the KDF a browser offers natively, at the strength OWASP asks of it. */
const PBKDF2_ITERATIONS = 600_000;

async function aeadMetrics(): Promise<BenchMetric[]> {
  const key = randomBytes(32);
  const gcmKey = await subtle.importKey('raw', random(32), 'AES-GCM', false, ['encrypt', 'decrypt']);
  const gcmSeal = async (plaintext: Uint8Array<ArrayBuffer>) => {
    // Same shape as seal(): a fresh random nonce per message, sent along with the ciphertext.
    const iv = random(12);
    return { iv, data: await subtle.encrypt({ name: 'AES-GCM', iv, additionalData: AD }, gcmKey, plaintext) };
  };

  const metrics: BenchMetric[] = [];
  for (const { label, bytes } of SIZES) {
    const plaintext = random(bytes);
    const sealed = seal(key, plaintext, AD);
    const gcmSealed = await gcmSeal(plaintext);

    const sealRate = (await opsPerSecond(() => seal(key, plaintext, AD))) * bytes;
    const gcmSealRate = (await opsPerSecond(() => gcmSeal(plaintext))) * bytes;
    const openRate = (await opsPerSecond(() => open(key, sealed, AD))) * bytes;
    const gcmOpenRate =
      (await opsPerSecond(() =>
        subtle.decrypt({ name: 'AES-GCM', iv: gcmSealed.iv, additionalData: AD }, gcmKey, gcmSealed.data),
      )) * bytes;

    for (const [op, value, baseline] of [
      ['seal', sealRate, gcmSealRate],
      ['open', openRate, gcmOpenRate],
    ] as const) {
      metrics.push({
        name: `${op} ${label} (XChaCha20-Poly1305)`,
        value: significant(value / MB),
        unit: 'MB/s',
        baseline: significant(baseline / MB),
        ratio: ratio(value, baseline),
      });
    }
  }
  return metrics;
}

const PASSPHRASE = 'benchmark passphrase of reasonable length';

/** Runs first in the suite's fresh process, before any Argon2id call has grown the WebAssembly memory. */
async function kdfMemoryMetric(): Promise<BenchMetric> {
  const before = process.memoryUsage.rss();
  const { peakBytes } = await withPeakRss(() =>
    argon2idRaw({
      password: utf8(PASSPHRASE),
      salt: randomBytes(16),
      ...DEFAULT_ACCOUNT_DESCRIPTOR,
      length: 32,
    }),
  );
  return {
    name: 'RSS growth during the first default Argon2id run',
    value: significant(Math.max(0, peakBytes - before) / MB),
    unit: 'MB',
    target: `about ${significant((DEFAULT_ACCOUNT_DESCRIPTOR.m * 1024) / MB)} MB (m)`,
  };
}

async function kdfMetrics(): Promise<BenchMetric[]> {
  const salt = random(16);
  const pbkdf2Key = await subtle.importKey('raw', owned(utf8(PASSPHRASE)), 'PBKDF2', false, ['deriveBits']);
  const pbkdf2 = () =>
    subtle.deriveBits(
      { name: 'PBKDF2', hash: 'SHA-256', salt, iterations: PBKDF2_ITERATIONS },
      pbkdf2Key,
      256,
    );
  const pbkdf2Ms = median(await timeRuns(5, pbkdf2, { warmup: 1 }));

  const kdfMs = async (descriptor: typeof DEFAULT_ACCOUNT_DESCRIPTOR, runs: number) =>
    median(await timeRuns(runs, () => deriveAccount(PASSPHRASE, descriptor), { warmup: 1 }));
  const defaultMs = await kdfMs(DEFAULT_ACCOUNT_DESCRIPTOR, 7);
  const minimumMs = await kdfMs(MINIMUM_ACCOUNT_DESCRIPTOR, 7);

  const { m, t, p } = DEFAULT_ACCOUNT_DESCRIPTOR;
  return [
    {
      name: `deriveAccount, default Argon2id m=${m / 1024} MiB t=${t} p=${p}`,
      value: significant(defaultMs),
      unit: 'ms',
      baseline: significant(pbkdf2Ms),
      ratio: ratio(defaultMs, pbkdf2Ms),
      target: '< 1000 ms (once per device sign-in)',
    },
    {
      name: `deriveAccount, OWASP floor m=${MINIMUM_ACCOUNT_DESCRIPTOR.m / 1024} MiB t=${MINIMUM_ACCOUNT_DESCRIPTOR.t} p=${MINIMUM_ACCOUNT_DESCRIPTOR.p}`,
      value: significant(minimumMs),
      unit: 'ms',
      baseline: significant(pbkdf2Ms),
      ratio: ratio(minimumMs, pbkdf2Ms),
    },
  ];
}

async function run(): Promise<BenchReport> {
  const memory = await kdfMemoryMetric();
  const aead = await aeadMetrics();
  const kdf = await kdfMetrics();
  return {
    name: 'crypto',
    description:
      'Account crypto of @ferry/core in Node: seal/open (XChaCha20-Poly1305, @noble/ciphers, pure JS, random 24-byte nonce, envelope-sized associated data) and deriveAccount (Argon2id via hash-wasm)',
    baseline: `seal/open: WebCrypto AES-GCM (OpenSSL, random 12-byte IV, same associated data, awaited per message); KDF: WebCrypto PBKDF2-HMAC-SHA256 at OWASP's ${PBKDF2_ITERATIONS.toLocaleString('en-US')} iterations`,
    metrics: [...aead, ...kdf, memory],
    notes:
      'Throughput ratio = ours / AES-GCM (below 1: slower). KDF ratio = Argon2id time / PBKDF2 time. Medians of 5 passes of >= 300 ms each (KDF: median of 7 runs). AES-GCM is not the choice for the account key: random 96-bit IVs cap one key at about 2^32 messages, and Ferry never rotates that key.',
  };
}

export default { name: 'crypto', run };
