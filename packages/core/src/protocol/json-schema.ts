import { type TSchema, Type } from '@sinclair/typebox';
import { EnvelopeSchema } from './envelope.js';
import { PeerMessageSchema } from './message.js';
import { listOps } from './registry.js';
import { ClientFrameSchema, ServerFrameSchema, SignalPlaintextSchema } from './signaling.js';

/**
 * The JSON Schemas of spec appendix A, derived from the same TypeBox definitions that type and
 * validate the messages: the envelope, the decrypted payload, one payload schema per registered
 * operation (whichever packages defined theirs before the call) and the signaling frames.
 */

export const SCHEMA_ID_PREFIX = 'urn:ferry:protocol:1.0:';

export interface ProtocolJsonSchema {
  /** Relative file name, e.g. 'ops/DB_DIFF_PUSH.schema.json'. */
  file: string;
  schema: Record<string, unknown>;
}

/** A plain JSON Schema object: TypeBox's symbol keys dropped. */
const plain = (schema: TSchema, id: string, title: string, extra: Record<string, unknown> = {}) => ({
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: `${SCHEMA_ID_PREFIX}${id}`,
  title,
  ...(JSON.parse(JSON.stringify(schema)) as Record<string, unknown>),
  ...extra,
});

/** The payload schema of one operation: a PeerMessage whose op is fixed and whose data is the op's. */
const opPayloadSchema = (name: string, data: TSchema) =>
  Type.Object(
    { ...PeerMessageSchema.properties, op: Type.Literal(name), data },
    { additionalProperties: false },
  );

export function protocolJsonSchemas(): ProtocolJsonSchema[] {
  const ops = listOps()
    .slice()
    .sort((a, b) => a.name.localeCompare(b.name));
  return [
    { file: 'envelope.schema.json', schema: plain(EnvelopeSchema, 'envelope', 'Message envelope') },
    { file: 'payload.schema.json', schema: plain(PeerMessageSchema, 'payload', 'Decrypted payload') },
    ...ops.map((op) => ({
      file: `ops/${op.name}.schema.json`,
      schema: plain(opPayloadSchema(op.name, op.data), `op:${op.name}`, op.name, {
        description: op.description,
        'x-ferry-lane': op.lane,
      }),
    })),
    {
      file: 'signaling/client-frame.schema.json',
      schema: plain(ClientFrameSchema, 'signaling:client-frame', 'Signaling frame, client to server'),
    },
    {
      file: 'signaling/server-frame.schema.json',
      schema: plain(ServerFrameSchema, 'signaling:server-frame', 'Signaling frame, server to client'),
    },
    {
      file: 'signaling/signal-plaintext.schema.json',
      schema: plain(SignalPlaintextSchema, 'signaling:signal-plaintext', 'Sealed signal body, decrypted'),
    },
  ];
}
