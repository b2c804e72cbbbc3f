import { createHash } from 'node:crypto';
import cors from '@fastify/cors';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  AckDiffRequestSchema,
  AckDiffResponseSchema,
  ALL_DEVICES,
  BASE64URL_FORMAT,
  DeleteAccountRequestSchema,
  DeleteAccountResponseSchema,
  isBase64Url,
  ListDevicesRequestSchema,
  ListDevicesResponseSchema,
  PullDiffRequestSchema,
  PullDiffResponseSchema,
  PushDiffRequestSchema,
  PushDiffResponseSchema,
  RELAY_PATHS,
  RegisterDeviceRequestSchema,
  RegisterDeviceResponseSchema,
  RelayErrorResponseSchema,
  RemoveDeviceRequestSchema,
  RemoveDeviceResponseSchema,
  SIGNATURE_WINDOW_MS,
} from '@ferry/core';
import { EventEmitter } from 'eventemitter3';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { pino } from 'pino';
import { RequestVerifier, type SignedBy } from './auth.js';
import { RelayRejection } from './errors.js';
import { createRelayMetrics } from './metrics.js';
import { KeyedRateLimiter } from './rate-limit.js';
import type { DeviceRecord, RelayStorage } from './storage/types.js';

export interface RelayLimits {
  /** Largest sealed diff, in bytes (decoded). */
  maxDiffBytes: number;
  /** Per-account quota over the diffs still waiting for a target. */
  maxAccountBytes: number;
  maxAccountDiffs: number;
  maxDevicesPerAccount: number;
  /** TTL when a push names none, and the cap on any it names. */
  defaultTtlMs: number;
  maxTtlMs: number;
  /** Bytes of diff bodies per pull page (at least one diff is always returned). */
  maxPullBytes: number;
  /** Token buckets: per client IP before any work, per account after authentication. */
  ipRequestsPerSecond: number;
  ipBurst: number;
  accountRequestsPerSecond: number;
  accountBurst: number;
  /** How often expired diffs and nonces are deleted. */
  sweepIntervalMs: number;
}

export const DEFAULT_RELAY_LIMITS: RelayLimits = {
  maxDiffBytes: 1024 * 1024,
  maxAccountBytes: 256 * 1024 * 1024,
  maxAccountDiffs: 100_000,
  maxDevicesPerAccount: 64,
  defaultTtlMs: 7 * 24 * 3600_000,
  maxTtlMs: 30 * 24 * 3600_000,
  maxPullBytes: 8 * 1024 * 1024,
  ipRequestsPerSecond: 200,
  ipBurst: 400,
  accountRequestsPerSecond: 100,
  accountBurst: 200,
  sweepIntervalMs: 60_000,
};

export interface DiffServerOptions {
  storage: RelayStorage;
  limits?: Partial<RelayLimits>;
  logger?: FastifyBaseLogger;
  /** Log one line per request (method, URL, status, time; never headers or bodies). Default true. */
  logRequests?: boolean;
  /** Behind a reverse proxy: take the client IP (for rate limits) from X-Forwarded-For. */
  trustProxy?: boolean;
  /**
   * Origins whose pages may call the server (CORS). Default `*`: requests carry no cookies or other
   * ambient credentials, only signatures, so any page may send them; `false` turns CORS off.
   */
  corsOrigins?: string[] | '*' | false;
  now?: () => number;
}

/**
 * New diffs are waiting for these devices: emitted by the instance that stored them, or, on a shared
 * PostgreSQL, by every instance (the store announces each committed push with NOTIFY).
 */
export interface DiffsStoredEvent {
  accountId: string;
  clientIds: string[];
}

export interface DiffServerEvents {
  diffs: (event: DiffsStoredEvent) => void;
}

export interface DiffServer {
  /** The Fastify app, not yet listening (call `app.listen`, or `app.inject` in tests). */
  readonly app: FastifyInstance;
  readonly storage: RelayStorage;
  readonly events: EventEmitter<DiffServerEvents>;
  /** Runs one sweep now (it also runs every `sweepIntervalMs`). */
  sweep(): Promise<{ diffs: number; nonces: number }>;
  /** Graceful: finish in-flight requests, stop the sweeper, close the store. */
  close(): Promise<void>;
}

declare module 'fastify' {
  interface FastifyRequest {
    rawBody?: Buffer;
    signedBy?: SignedBy;
  }
  interface FastifyContextConfig {
    /** Which keys may call the route: the account key, a device's own key, or both. */
    signers?: { account?: boolean; device?: boolean };
  }
}

const SMALL_BODY_LIMIT = 128 * 1024;

/** The zero-knowledge diff server (spec 7.2): signed requests, per-device mailboxes of ciphertext. */
export async function createDiffServer(options: DiffServerOptions): Promise<DiffServer> {
  const limits: RelayLimits = { ...DEFAULT_RELAY_LIMITS, ...options.limits };
  const now = options.now ?? Date.now;
  const storage = options.storage;
  const events = new EventEmitter<DiffServerEvents>();
  const metrics = createRelayMetrics(storage);
  // Listening before the first request, so no announcement of an early push is missed.
  await storage.onStored?.((stored) => events.emit('diffs', stored));
  const verifier = new RequestVerifier(SIGNATURE_WINDOW_MS, now);
  const ipLimiter = new KeyedRateLimiter(limits.ipRequestsPerSecond, limits.ipBurst);
  const accountLimiter = new KeyedRateLimiter(limits.accountRequestsPerSecond, limits.accountBurst);

  const app = Fastify({
    loggerInstance: options.logger ?? pino({ name: 'ferry-relay' }),
    logController: new LogController({ disableRequestLogging: options.logRequests === false }),
    trustProxy: options.trustProxy ?? false,
    ajv: {
      // Mistyped fields are refused, never coerced; unknown fields are refused, never silently dropped.
      customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false },
      plugins: [addBase64UrlFormat],
    },
    // The serializer validates `anyOf` branches with its own Ajv, which must know the format too.
    serializerOpts: { ajv: { formats: { [BASE64URL_FORMAT]: isBase64Url } } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  if (options.corsOrigins !== false) {
    await app.register(cors, {
      origin: options.corsOrigins ?? '*',
      methods: ['GET', 'POST'],
      allowedHeaders: ['content-type', 'content-digest', 'signature-input', 'signature'],
      // The client reads Date to correct a skewed clock, and Retry-After when rate limited.
      exposedHeaders: ['date', 'retry-after'],
      maxAge: 600,
    });
  }

  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    request.rawBody = body as Buffer;
    jsonParser(request, (body as Buffer).toString('utf8'), (error, value) =>
      error
        ? done(new RelayRejection('BAD_JSON', 'the request body is not valid JSON'), undefined)
        : done(null, value),
    );
  });

  app.addHook('onRequest', async (request) => {
    if (!ipLimiter.take(request.ip))
      throw new RelayRejection('RATE_LIMITED', 'too many requests from this address');
  });
  app.addHook('preValidation', async (request) => {
    if (!request.routeOptions.config.signers) return;
    request.signedBy = await verifier.verify({
      method: request.method,
      path: request.url.split('?', 1)[0]!,
      headers: request.headers,
      body: request.rawBody ?? new Uint8Array(0),
    });
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.requests.inc({ route: request.routeOptions.url ?? 'unmatched', status: reply.statusCode });
  });

  app.setErrorHandler(
    (error: Error & { statusCode?: number; code?: string; validation?: unknown[] }, request, reply) => {
      const rejection = toRejection(error);
      metrics.rejections.inc({ reason: rejection.reason });
      if (rejection.status >= 500) request.log.error({ err: error }, 'relay request failed');
      if (rejection.reason === 'RATE_LIMITED') void reply.header('retry-after', '1');
      return reply
        .code(rejection.status)
        .send({ error: rejection.reason, message: rejection.message, ...rejection.details });
    },
  );
  app.setNotFoundHandler((request, reply) => {
    metrics.rejections.inc({ reason: 'NOT_FOUND' });
    return reply
      .code(404)
      .send({ error: 'NOT_FOUND', message: `no route ${request.method} ${request.url.split('?', 1)[0]}` });
  });

  /** Resolves the signer against the body's accountId and the route's allowed signers. */
  async function authorize(request: FastifyRequest, accountId: string): Promise<{ device?: DeviceRecord }> {
    const signedBy = request.signedBy!;
    const allowed = request.routeOptions.config.signers!;
    let device: DeviceRecord | undefined;
    if (signedBy.certifiedAccountId === accountId) {
      if (!allowed.account) {
        throw new RelayRejection('FORBIDDEN', "mailbox operations must be signed with the device's own key");
      }
    } else {
      device = await storage.findDeviceByKey(signedBy.keyId);
      if (!device)
        throw new RelayRejection(
          'UNKNOWN_KEY',
          'this key is neither the account key nor a registered device',
        );
      if (device.accountId !== accountId)
        throw new RelayRejection('FORBIDDEN', 'this key belongs to another account');
      if (!allowed.device)
        throw new RelayRejection('FORBIDDEN', 'this operation must be signed with the account key');
    }
    if (!accountLimiter.take(accountId))
      throw new RelayRejection('RATE_LIMITED', 'too many requests for this account');
    return device ? { device } : {};
  }

  const ownMailbox = (device: DeviceRecord | undefined, clientId: string): DeviceRecord => {
    if (!device || device.clientId !== clientId) {
      throw new RelayRejection('FORBIDDEN', `only ${clientId}'s own key may use its mailbox`);
    }
    return device;
  };

  const errorResponses = { '4xx': RelayErrorResponseSchema, '5xx': RelayErrorResponseSchema };
  const deviceOnly = { signers: { device: true } };
  const accountOnly = { signers: { account: true } };
  const pushBodyLimit = Math.ceil((limits.maxDiffBytes * 4) / 3) + 16 * 1024;

  app.post(
    RELAY_PATHS.push,
    {
      config: deviceOnly,
      bodyLimit: pushBodyLimit,
      schema: { body: PushDiffRequestSchema, response: { 200: PushDiffResponseSchema, ...errorResponses } },
    },
    async (request) => {
      const body = request.body;
      const { device } = await authorize(request, body.accountId);
      if ((body.targetClientId === undefined) === (body.targetClientIds === undefined)) {
        throw new RelayRejection('SCHEMA_MISMATCH', 'give exactly one of targetClientId and targetClientIds');
      }
      const targets =
        body.targetClientId === ALL_DEVICES ? ALL_DEVICES : (body.targetClientIds ?? [body.targetClientId!]);
      const diff = decodeBase64Url(body.encryptedDiff, 'encryptedDiff');
      if (diff.length > limits.maxDiffBytes) {
        throw new RelayRejection(
          'TOO_LARGE',
          `the diff has ${diff.length} bytes; the limit is ${limits.maxDiffBytes}`,
        );
      }
      const at = now();
      if (body.expiresAt !== undefined && body.expiresAt <= at) {
        throw new RelayRejection('BAD_EXPIRY', 'expiresAt is in the past');
      }
      const expiresAt = Math.min(body.expiresAt ?? at + limits.defaultTtlMs, at + limits.maxTtlMs);
      const result = await storage.push(request.signedBy!.claim, {
        sender: device!,
        diffId: body.diffId,
        targets,
        body: diff,
        digest: createHash('sha256').update(diff).digest(),
        expiresAt,
        now: at,
        quota: { maxAccountBytes: limits.maxAccountBytes, maxAccountDiffs: limits.maxAccountDiffs },
      });
      if (result.stored && result.targets.length > 0) {
        metrics.pushedBytes.inc(diff.length);
        // A shared store announces to every instance (this one included) through onStored.
        if (!storage.onStored) events.emit('diffs', { accountId: body.accountId, clientIds: result.targets });
      }
      return { diffId: body.diffId, ...result };
    },
  );

  app.post(
    RELAY_PATHS.pull,
    {
      config: deviceOnly,
      bodyLimit: SMALL_BODY_LIMIT,
      schema: { body: PullDiffRequestSchema, response: { 200: PullDiffResponseSchema, ...errorResponses } },
    },
    async (request) => {
      const body = request.body;
      const device = ownMailbox((await authorize(request, body.accountId)).device, body.clientId);
      const page = await storage.pull(request.signedBy!.claim, {
        device,
        after: body.cursor === undefined ? 0 : Number(body.cursor),
        limit: body.limit ?? 100,
        maxBytes: limits.maxPullBytes,
        now: now(),
      });
      const last = page.diffs.at(-1);
      return {
        diffs: page.diffs.map((diff) => ({
          diffId: diff.diffId,
          senderClientId: diff.senderClientId,
          encryptedDiff: Buffer.from(diff.body.buffer, diff.body.byteOffset, diff.body.byteLength).toString(
            'base64url',
          ),
          expiresAt: diff.expiresAt,
        })),
        cursor: last ? String(last.position) : (body.cursor ?? '0'),
        more: page.more,
      };
    },
  );

  app.post(
    RELAY_PATHS.ack,
    {
      config: deviceOnly,
      bodyLimit: SMALL_BODY_LIMIT,
      schema: { body: AckDiffRequestSchema, response: { 200: AckDiffResponseSchema, ...errorResponses } },
    },
    async (request) => {
      const body = request.body;
      const device = ownMailbox((await authorize(request, body.accountId)).device, body.clientId);
      if ((body.diffId === undefined) === (body.diffIds === undefined)) {
        throw new RelayRejection('SCHEMA_MISMATCH', 'give exactly one of diffId and diffIds');
      }
      const acked = await storage.ack(request.signedBy!.claim, device, body.diffIds ?? [body.diffId!]);
      return { acked };
    },
  );

  app.post(
    RELAY_PATHS.registerDevice,
    {
      config: accountOnly,
      bodyLimit: SMALL_BODY_LIMIT,
      schema: {
        body: RegisterDeviceRequestSchema,
        response: { 200: RegisterDeviceResponseSchema, ...errorResponses },
      },
    },
    async (request) => {
      const body = request.body;
      await authorize(request, body.accountId);
      const result = await storage.registerDevice(request.signedBy!.claim, {
        accountId: body.accountId,
        clientId: body.clientId,
        publicKey: body.publicKey,
        replace: body.replace ?? false,
        maxDevices: limits.maxDevicesPerAccount,
        now: now(),
      });
      return { clientId: body.clientId, ...result };
    },
  );

  app.post(
    RELAY_PATHS.removeDevice,
    {
      config: { signers: { account: true, device: true } },
      bodyLimit: SMALL_BODY_LIMIT,
      schema: {
        body: RemoveDeviceRequestSchema,
        response: { 200: RemoveDeviceResponseSchema, ...errorResponses },
      },
    },
    async (request) => {
      const body = request.body;
      const { device } = await authorize(request, body.accountId);
      // A device may remove itself; removing another device takes the account key.
      if (device) ownMailbox(device, body.clientId);
      return storage.removeDevice(request.signedBy!.claim, body.accountId, body.clientId);
    },
  );

  app.post(
    RELAY_PATHS.listDevices,
    {
      config: { signers: { account: true, device: true } },
      bodyLimit: SMALL_BODY_LIMIT,
      schema: {
        body: ListDevicesRequestSchema,
        response: { 200: ListDevicesResponseSchema, ...errorResponses },
      },
    },
    async (request) => {
      await authorize(request, request.body.accountId);
      return { devices: await storage.listDevices(request.signedBy!.claim, request.body.accountId) };
    },
  );

  app.post(
    RELAY_PATHS.deleteAccount,
    {
      config: accountOnly,
      bodyLimit: SMALL_BODY_LIMIT,
      schema: {
        body: DeleteAccountRequestSchema,
        response: { 200: DeleteAccountResponseSchema, ...errorResponses },
      },
    },
    async (request) => {
      await authorize(request, request.body.accountId);
      return { deleted: await storage.deleteAccount(request.signedBy!.claim, request.body.accountId) };
    },
  );

  app.get(RELAY_PATHS.health, async () => ({ status: 'ok', storage: storage.kind }));
  app.get(RELAY_PATHS.metrics, async (_request, reply: FastifyReply) =>
    reply.type(metrics.registry.contentType).send(await metrics.render()),
  );

  const sweep = () => storage.sweep(now());
  const sweeper = setInterval(() => {
    sweep().then(
      (swept) => {
        if (swept.diffs > 0) app.log.info(swept, 'expired diffs deleted');
      },
      (error: unknown) => app.log.error({ err: error }, 'relay sweep failed'),
    );
  }, limits.sweepIntervalMs);
  sweeper.unref();

  let closed: Promise<void> | undefined;
  return {
    app,
    storage,
    events,
    sweep,
    close() {
      closed ??= (async () => {
        clearInterval(sweeper);
        await app.close();
        await storage.close();
      })();
      return closed;
    },
  };
}

/** Ajv plugin: the `base64url` format of the wire schemas (a failure is answered as BAD_BASE64). */
function addBase64UrlFormat<
  A extends { addFormat(name: string, format: { type: 'string'; validate: (value: string) => boolean }): A },
>(ajv: A): A {
  return ajv.addFormat(BASE64URL_FORMAT, { type: 'string', validate: isBase64Url });
}

function decodeBase64Url(text: string, field: string): Buffer {
  // The schema already limits the alphabet; a length of 4n+1 characters cannot be base64 at all.
  if (text.length % 4 === 1) throw new RelayRejection('BAD_BASE64', `${field} is not valid base64url`);
  return Buffer.from(text, 'base64url');
}

function toRejection(
  error: Error & { statusCode?: number; code?: string; validation?: unknown[] },
): RelayRejection {
  if (error instanceof RelayRejection) return error;
  if (error.validation) {
    const first = error.validation[0] as { keyword?: string; params?: { format?: string } } | undefined;
    const base64 = first?.keyword === 'format' && first.params?.format === BASE64URL_FORMAT;
    return new RelayRejection(base64 ? 'BAD_BASE64' : 'SCHEMA_MISMATCH', error.message);
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new RelayRejection('TOO_LARGE', 'the request body is larger than this route accepts');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new RelayRejection('UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new RelayRejection('BAD_JSON', error.message);
  }
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
    return new RelayRejection('SCHEMA_MISMATCH', error.message);
  }
  return new RelayRejection('INTERNAL', 'internal error');
}
