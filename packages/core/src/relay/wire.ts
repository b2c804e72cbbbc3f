import { FormatRegistry, type Static, type TSchema, Type } from '@sinclair/typebox';
import { ClientIdSchema } from '../protocol/signaling.js';

/**
 * HTTP bodies of the diff server (spec 7.2 and 10.3). One TypeBox source: the server validates and
 * serializes its routes with these schemas, the client checks the answers with them.
 *
 * Every POST body is JSON signed by the caller (see signature.ts). The spec's operations map to:
 * DB_DIFF_PUSH_SERVER -> POST /pushDiff, DB_DIFF_PULL_SERVER -> POST /pullDiff,
 * DB_DIFF_ACK_SERVER -> POST /ackDiff; the optional `op` field may carry those names.
 */

export const RELAY_PATHS = {
  push: '/pushDiff',
  pull: '/pullDiff',
  ack: '/ackDiff',
  registerDevice: '/registerDevice',
  removeDevice: '/removeDevice',
  listDevices: '/listDevices',
  deleteAccount: '/deleteAccount',
  health: '/health',
  metrics: '/metrics',
} as const;

const BASE64URL = /^[A-Za-z0-9_-]*$/;
/** Registered once for TypeBox's Value checks; the server registers the same format with its validator. */
export const BASE64URL_FORMAT = 'base64url';
export const isBase64Url = (value: string): boolean => BASE64URL.test(value);
if (!FormatRegistry.Has(BASE64URL_FORMAT)) FormatRegistry.Set(BASE64URL_FORMAT, isBase64Url);

/** The self-certifying account id: base64url SHA-256 of the account's relay public key (43 characters). */
export const RelayAccountIdSchema = Type.String({ minLength: 43, maxLength: 43, format: BASE64URL_FORMAT });
/** Ed25519 public key, base64url (32 bytes -> 43 characters). */
export const RelayPublicKeySchema = Type.String({ minLength: 43, maxLength: 43, format: BASE64URL_FORMAT });
/** Client-chosen, unique per account (the client uses 128 random bits). */
export const DiffIdSchema = Type.String({ minLength: 8, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' });
/** The sealed diff (see envelope.ts), base64url; its size limit is the server's configuration. */
export const EncryptedDiffSchema = Type.String({ minLength: 1, format: BASE64URL_FORMAT });
/** `*` addresses every other device registered for the account at push time. */
export const ALL_DEVICES = '*';
export const PushTargetSchema = Type.Union([ClientIdSchema, Type.Literal(ALL_DEVICES)]);
/** Opaque pagination cursor (the server's mailbox position). */
export const CursorSchema = Type.String({ minLength: 1, maxLength: 24, pattern: '^[0-9]+$' });
/** Milliseconds since the Unix epoch. */
export const EpochMsSchema = Type.Integer({ minimum: 0, maximum: 8.64e15 });

export const MAX_PUSH_TARGETS = 64;
export const MAX_ACK_IDS = 500;
export const MAX_PULL_LIMIT = 500;

const body = <T extends Record<string, TSchema>>(properties: T) =>
  Type.Object(properties, { additionalProperties: false });

export const PushDiffRequestSchema = body({
  op: Type.Optional(Type.Literal('DB_DIFF_PUSH_SERVER')),
  accountId: RelayAccountIdSchema,
  /** The spec's single target, or `*`. Exactly one of targetClientId / targetClientIds. */
  targetClientId: Type.Optional(PushTargetSchema),
  targetClientIds: Type.Optional(
    Type.Array(ClientIdSchema, { minItems: 1, maxItems: MAX_PUSH_TARGETS, uniqueItems: true }),
  ),
  diffId: DiffIdSchema,
  encryptedDiff: EncryptedDiffSchema,
  /** When the server may drop it; capped by the server's maximum TTL. Default: the server's TTL. */
  expiresAt: Type.Optional(EpochMsSchema),
});
export const PushDiffResponseSchema = body({
  diffId: DiffIdSchema,
  /** false: this diffId was already stored by this sender (a retried push); nothing changed. */
  stored: Type.Boolean(),
  targets: Type.Array(ClientIdSchema),
  expiresAt: EpochMsSchema,
});

export const PullDiffRequestSchema = body({
  op: Type.Optional(Type.Literal('DB_DIFF_PULL_SERVER')),
  accountId: RelayAccountIdSchema,
  clientId: ClientIdSchema,
  /** Continue after this position (from the previous page); absent: from the oldest unacknowledged diff. */
  cursor: Type.Optional(CursorSchema),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PULL_LIMIT })),
});
export const PulledDiffSchema = body({
  diffId: DiffIdSchema,
  senderClientId: ClientIdSchema,
  encryptedDiff: EncryptedDiffSchema,
  expiresAt: EpochMsSchema,
});
export const PullDiffResponseSchema = body({
  diffs: Type.Array(PulledDiffSchema),
  /** Position of the last diff returned (else the cursor given, else "0"); pass it back for the next page. */
  cursor: CursorSchema,
  more: Type.Boolean(),
});

export const AckDiffRequestSchema = body({
  op: Type.Optional(Type.Literal('DB_DIFF_ACK_SERVER')),
  accountId: RelayAccountIdSchema,
  clientId: ClientIdSchema,
  /** The spec's single id, or several. Exactly one of diffId / diffIds. */
  diffId: Type.Optional(DiffIdSchema),
  diffIds: Type.Optional(Type.Array(DiffIdSchema, { minItems: 1, maxItems: MAX_ACK_IDS, uniqueItems: true })),
});
export const AckDiffResponseSchema = body({
  /** How many were removed by this request (already acknowledged ones count 0). */
  acked: Type.Integer({ minimum: 0 }),
});

export const RegisterDeviceRequestSchema = body({
  accountId: RelayAccountIdSchema,
  clientId: ClientIdSchema,
  /** The device's own Ed25519 public key: it alone may pull and acknowledge this device's mailbox. */
  publicKey: RelayPublicKeySchema,
  /** Re-key an existing clientId; its mailbox is dropped so the new key never reads the old one's diffs. */
  replace: Type.Optional(Type.Boolean()),
});
export const RegisterDeviceResponseSchema = body({
  clientId: ClientIdSchema,
  created: Type.Boolean(),
  replaced: Type.Boolean(),
});

export const RemoveDeviceRequestSchema = body({ accountId: RelayAccountIdSchema, clientId: ClientIdSchema });
export const RemoveDeviceResponseSchema = body({
  removed: Type.Boolean(),
  droppedDiffs: Type.Integer({ minimum: 0 }),
});

export const ListDevicesRequestSchema = body({ accountId: RelayAccountIdSchema });
export const ListDevicesResponseSchema = body({ devices: Type.Array(ClientIdSchema) });

export const DeleteAccountRequestSchema = body({ accountId: RelayAccountIdSchema });
export const DeleteAccountResponseSchema = body({ deleted: Type.Boolean() });

/** Why the server refused a request, with its HTTP status. Stable: clients switch on these. */
export const RELAY_ERRORS = {
  BAD_JSON: 400,
  SCHEMA_MISMATCH: 400,
  BAD_BASE64: 400,
  BAD_DIGEST: 400,
  BAD_EXPIRY: 400,
  UNSIGNED: 401,
  BAD_SIGNATURE: 401,
  STALE: 401,
  REPLAY: 401,
  UNKNOWN_KEY: 401,
  FORBIDDEN: 403,
  NOT_YOURS: 403,
  NOT_FOUND: 404,
  UNKNOWN_TARGET: 404,
  DIFF_ID_CONFLICT: 409,
  DEVICE_EXISTS: 409,
  TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  QUOTA_BYTES: 429,
  QUOTA_COUNT: 429,
  DEVICE_LIMIT: 429,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  SHUTTING_DOWN: 503,
} as const;
export type RelayErrorReason = keyof typeof RELAY_ERRORS;

export const RelayErrorResponseSchema = body({
  // A string enum rather than a union of literals: serializers write it without a per-response validation.
  error: Type.String({ enum: Object.keys(RELAY_ERRORS) }),
  message: Type.String(),
  /** UNKNOWN_TARGET: the targets that are not registered devices of the account (a push may go again without them). */
  unknownTargets: Type.Optional(Type.Array(ClientIdSchema, { maxItems: MAX_PUSH_TARGETS })),
});

export type PushDiffRequest = Static<typeof PushDiffRequestSchema>;
export type PushDiffResponse = Static<typeof PushDiffResponseSchema>;
export type PullDiffRequest = Static<typeof PullDiffRequestSchema>;
export type PulledDiff = Static<typeof PulledDiffSchema>;
export type PullDiffResponse = Static<typeof PullDiffResponseSchema>;
export type AckDiffRequest = Static<typeof AckDiffRequestSchema>;
export type AckDiffResponse = Static<typeof AckDiffResponseSchema>;
export type RegisterDeviceRequest = Static<typeof RegisterDeviceRequestSchema>;
export type RegisterDeviceResponse = Static<typeof RegisterDeviceResponseSchema>;
export type RemoveDeviceRequest = Static<typeof RemoveDeviceRequestSchema>;
export type RemoveDeviceResponse = Static<typeof RemoveDeviceResponseSchema>;
export type ListDevicesRequest = Static<typeof ListDevicesRequestSchema>;
export type ListDevicesResponse = Static<typeof ListDevicesResponseSchema>;
export type DeleteAccountRequest = Static<typeof DeleteAccountRequestSchema>;
export type DeleteAccountResponse = Static<typeof DeleteAccountResponseSchema>;
export type RelayErrorResponse = Static<typeof RelayErrorResponseSchema>;
