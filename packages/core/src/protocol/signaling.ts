import { type Static, Type } from '@sinclair/typebox';

/**
 * Wire frames of the signaling server: JSON text frames over one WebSocket. One TypeBox source gives
 * the static types and the JSON Schemas that both the server and the client validate against.
 *
 * Flow: the server greets every socket with `hello` (a random challenge and the connection id it
 * chose); the client answers `join` with an Ed25519 proof made with the room key; the server answers
 * `joined` with the peer list and tells the others `peer-joined`. Signal bodies are sealed end to end
 * by the clients: the server relays base64url ciphertext and learns only room ids and client ids.
 *
 * Mailbox hints (optional, when the signaling server runs beside a diff server): a device proves
 * with its diff-server device key which mailbox it owns (`watch-mailbox`); the server answers
 * `watching`, and sends `mailbox` whenever new diffs are stored for it, so a device that cannot reach
 * its peers directly pulls at once. This links the socket to the device's diff-server identity.
 */

export const SIGNALING_PROTOCOL_VERSION = 1;
export const DEFAULT_SIGNALING_PATH = '/signal';

const base64Url = (pattern: string, description: string) =>
  Type.String({ pattern: `^[A-Za-z0-9_-]${pattern}$`, description });

/** The room's Ed25519 public key, base64url without padding (32 bytes -> 43 characters). */
export const RoomIdSchema = base64Url('{43}', 'room id: base64url Ed25519 public key of the room');
/** A device's client id, chosen by the device; printable, short, no spaces. */
export const ClientIdSchema = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:@-]+$' });
/** Server-chosen connection id, bound into the join proof so a proof cannot be replayed on another socket. */
export const ConnectionIdSchema = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[A-Za-z0-9._:-]+$',
});
/** 32 random bytes, base64url. */
export const ChallengeSchema = base64Url('{43}', 'join challenge: 32 random bytes, base64url');
/** Ed25519 signature, base64url (64 bytes -> 86 characters). */
export const JoinProofSchema = base64Url('{86}', 'Ed25519 signature over the join proof message');
/** The diff server's account id (base64url SHA-256 of the account's relay key). */
export const MailboxAccountIdSchema = base64Url('{43}', "the diff server's account id");
/** A device's Ed25519 diff-server key, base64url. */
export const DeviceKeySchema = base64Url('{43}', "the device's Ed25519 diff-server public key, base64url");
/** Sealed signal body (XChaCha20-Poly1305 nonce || ciphertext || tag), base64url. */
export const SealedBodySchema = base64Url('+', 'sealed signal body, base64url');

// ---- client -> server ----

export const JoinFrameSchema = Type.Object(
  {
    type: Type.Literal('join'),
    room: RoomIdSchema,
    clientId: ClientIdSchema,
    proof: JoinProofSchema,
  },
  { additionalProperties: false },
);

export const LeaveFrameSchema = Type.Object(
  { type: Type.Literal('leave'), room: RoomIdSchema },
  { additionalProperties: false },
);

export const SignalFrameSchema = Type.Object(
  { type: Type.Literal('signal'), room: RoomIdSchema, to: ClientIdSchema, body: SealedBodySchema },
  { additionalProperties: false },
);

/** Ask for mailbox hints; `proof` signs the mailbox watch message with `publicKey`, a registered device key. */
export const WatchMailboxFrameSchema = Type.Object(
  {
    type: Type.Literal('watch-mailbox'),
    accountId: MailboxAccountIdSchema,
    clientId: ClientIdSchema,
    publicKey: DeviceKeySchema,
    proof: base64Url('{86}', 'Ed25519 signature over the mailbox watch message'),
  },
  { additionalProperties: false },
);

/** Application-level heartbeat: browsers cannot see WebSocket pings, so clients ask for a `pong`. */
export const PingFrameSchema = Type.Object({ type: Type.Literal('ping') }, { additionalProperties: false });

export const ClientFrameSchema = Type.Union([
  JoinFrameSchema,
  LeaveFrameSchema,
  SignalFrameSchema,
  WatchMailboxFrameSchema,
  PingFrameSchema,
]);

// ---- server -> client ----

export const HelloFrameSchema = Type.Object(
  {
    type: Type.Literal('hello'),
    version: Type.Literal(SIGNALING_PROTOCOL_VERSION),
    connectionId: ConnectionIdSchema,
    challenge: ChallengeSchema,
  },
  { additionalProperties: false },
);

export const JoinedFrameSchema = Type.Object(
  { type: Type.Literal('joined'), room: RoomIdSchema, peers: Type.Array(ClientIdSchema) },
  { additionalProperties: false },
);

export const PeerJoinedFrameSchema = Type.Object(
  { type: Type.Literal('peer-joined'), room: RoomIdSchema, clientId: ClientIdSchema },
  { additionalProperties: false },
);

export const PeerLeftFrameSchema = Type.Object(
  { type: Type.Literal('peer-left'), room: RoomIdSchema, clientId: ClientIdSchema },
  { additionalProperties: false },
);

/** A relayed signal; `from` is set by the server from the sender's authenticated membership. */
export const RelayedSignalFrameSchema = Type.Object(
  { type: Type.Literal('signal'), room: RoomIdSchema, from: ClientIdSchema, body: SealedBodySchema },
  { additionalProperties: false },
);

export const PongFrameSchema = Type.Object({ type: Type.Literal('pong') }, { additionalProperties: false });

/** The watch was accepted: `mailbox` frames for this mailbox follow. */
export const WatchingFrameSchema = Type.Object(
  { type: Type.Literal('watching'), accountId: MailboxAccountIdSchema, clientId: ClientIdSchema },
  { additionalProperties: false },
);

/** New diffs wait in this mailbox on the diff server. */
export const MailboxFrameSchema = Type.Object(
  { type: Type.Literal('mailbox'), accountId: MailboxAccountIdSchema, clientId: ClientIdSchema },
  { additionalProperties: false },
);

export const SignalingErrorCodeSchema = Type.Union([
  Type.Literal('BAD_JSON'),
  Type.Literal('SCHEMA_MISMATCH'),
  Type.Literal('TOO_LARGE'),
  Type.Literal('RATE_LIMITED'),
  Type.Literal('ROOM_FULL'),
  Type.Literal('TOO_MANY_ROOMS'),
  Type.Literal('BAD_PROOF'),
  Type.Literal('NOT_JOINED'),
  Type.Literal('ALREADY_JOINED'),
  Type.Literal('PEER_UNKNOWN'),
  Type.Literal('JOIN_TIMEOUT'),
  Type.Literal('REPLACED'),
  Type.Literal('SHUTTING_DOWN'),
  Type.Literal('SERVER_BUSY'),
  Type.Literal('NO_MAILBOXES'),
  Type.Literal('TOO_MANY_WATCHES'),
  Type.Literal('INTERNAL'),
]);

/** `fatal: true` means the server closes the socket right after this frame. */
export const ErrorFrameSchema = Type.Object(
  {
    type: Type.Literal('error'),
    code: SignalingErrorCodeSchema,
    message: Type.String(),
    fatal: Type.Boolean(),
    room: Type.Optional(RoomIdSchema),
  },
  { additionalProperties: false },
);

export const ServerFrameSchema = Type.Union([
  HelloFrameSchema,
  JoinedFrameSchema,
  PeerJoinedFrameSchema,
  PeerLeftFrameSchema,
  RelayedSignalFrameSchema,
  PongFrameSchema,
  WatchingFrameSchema,
  MailboxFrameSchema,
  ErrorFrameSchema,
]);

/** Inside a sealed body: replay protection (id, ts) and the caller's payload (offer, answer, candidate...). */
export const SignalPlaintextSchema = Type.Object(
  {
    id: Type.String({ minLength: 16, maxLength: 64 }),
    ts: Type.Number(),
    data: Type.Unknown(),
  },
  { additionalProperties: false },
);

export type JoinFrame = Static<typeof JoinFrameSchema>;
export type LeaveFrame = Static<typeof LeaveFrameSchema>;
export type SignalFrame = Static<typeof SignalFrameSchema>;
export type PingFrame = Static<typeof PingFrameSchema>;
export type WatchMailboxFrame = Static<typeof WatchMailboxFrameSchema>;
export type WatchingFrame = Static<typeof WatchingFrameSchema>;
export type MailboxFrame = Static<typeof MailboxFrameSchema>;
export type ClientFrame = Static<typeof ClientFrameSchema>;
export type HelloFrame = Static<typeof HelloFrameSchema>;
export type JoinedFrame = Static<typeof JoinedFrameSchema>;
export type PeerJoinedFrame = Static<typeof PeerJoinedFrameSchema>;
export type PeerLeftFrame = Static<typeof PeerLeftFrameSchema>;
export type RelayedSignalFrame = Static<typeof RelayedSignalFrameSchema>;
export type PongFrame = Static<typeof PongFrameSchema>;
export type ErrorFrame = Static<typeof ErrorFrameSchema>;
export type ServerFrame = Static<typeof ServerFrameSchema>;
export type SignalingErrorCode = Static<typeof SignalingErrorCodeSchema>;
export type SignalPlaintext = Static<typeof SignalPlaintextSchema>;

/** WebSocket close codes the server uses after a fatal error frame (RFC 6455 section 7.4.1). */
export const SIGNALING_CLOSE_CODES = {
  normal: 1000,
  goingAway: 1001,
  invalidData: 1007,
  policy: 1008,
  tooLarge: 1009,
  internal: 1011,
  tryAgainLater: 1013,
} as const;
