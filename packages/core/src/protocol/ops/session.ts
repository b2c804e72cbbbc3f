import { Type } from '@sinclair/typebox';
import { defineOps, type OpDataOf } from '../registry.js';

/**
 * Control-lane operations a peer session needs for itself: keepalive and an orderly close. They are
 * handled by the session and never reach the application.
 */

const PingIdSchema = Type.String({ minLength: 1, maxLength: 64, description: 'echoed by the pong' });

export const SESSION_OPS = defineOps('control', {
  SESSION_PING: {
    data: Type.Object({ pingId: PingIdSchema }, { additionalProperties: false }),
    description:
      'Keepalive: sent after a quiet interval; the peer answers SESSION_PONG with the same pingId.',
  },
  SESSION_PONG: {
    data: Type.Object({ pingId: PingIdSchema }, { additionalProperties: false }),
    description: 'Answer to SESSION_PING, carrying its pingId (round-trip time, liveness).',
  },
  SESSION_CLOSE: {
    data: Type.Object(
      { reason: Type.String({ maxLength: 1024, description: 'why the sender ends the session' }) },
      { additionalProperties: false },
    ),
    description:
      'The sender is closing the session and sends nothing after this; the receiver ends it too and closes the connection, without reconnecting at once.',
  },
  SESSION_ERROR: {
    data: Type.Object(
      {
        code: Type.String({
          maxLength: 64,
          description: 'a FerryErrorCode, e.g. UNKNOWN_OP or SCHEMA_MISMATCH',
        }),
        message: Type.String({ maxLength: 4096 }),
        inReplyTo: Type.Optional(
          Type.String({ maxLength: 128, description: 'id of the message that caused the error' }),
        ),
      },
      { additionalProperties: false },
    ),
    description: 'The sender refused a message (unknown op, bad data); the session goes on.',
  },
});

declare module '../registry.js' {
  interface OpDataMap extends OpDataOf<typeof SESSION_OPS> {}
}
