// Writes docs/PROTOCOL.md from the protocol's own definitions: the operation registry (every package's
// ops), the envelope schema, the handshake module and the diff server's wire schemas.
// Usage: npx tsx scripts/generate-protocol-doc.ts   (packages/core/test/protocol/protocol-doc-current.test.ts
// fails when the committed file differs from what this writes)
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kind, OptionalKind, type TSchema } from '@sinclair/typebox';
import {
  AckDiffRequestSchema,
  AckDiffResponseSchema,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_CLOCK_SKEW_MS,
  DEFAULT_MAX_MESSAGE_BYTES,
  DeleteAccountRequestSchema,
  DeleteAccountResponseSchema,
  DiffHeaderSchema,
  ENVELOPE_VERSION,
  EnvelopeSchema,
  HANDSHAKE_PROLOGUE_LABEL,
  HANDSHAKE_PROTOCOL,
  LANES,
  ListDevicesRequestSchema,
  ListDevicesResponseSchema,
  listOps,
  PeerMessageSchema,
  PullDiffRequestSchema,
  PullDiffResponseSchema,
  PushDiffRequestSchema,
  PushDiffResponseSchema,
  RELAY_ERRORS,
  RELAY_PATHS,
  RegisterDeviceRequestSchema,
  RegisterDeviceResponseSchema,
  RemoveDeviceRequestSchema,
  RemoveDeviceResponseSchema,
  SIGNATURE_WINDOW_MS,
  SUBKEY_PURPOSES,
} from '../packages/core/src/index.js';
import './protocol-ops.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const PROTOCOL_DOC = join(ROOT, 'docs', 'PROTOCOL.md');
const HANDSHAKE_SOURCE = 'packages/core/src/session/handshake.ts';
const MUX_SOURCE = 'packages/core/src/session/mux.ts';
const SECURE_CHANNEL_SOURCE = 'packages/core/src/session/secure-channel.ts';
const SEALED_DIFF_SOURCE = 'packages/core/src/relay/envelope.ts';

interface Endpoint {
  method: 'GET' | 'POST';
  path: string;
  op?: string;
  request?: TSchema;
  response?: TSchema;
  purpose: string;
}

/** The diff server's routes (packages/server/src/relay/app.ts validates with these same schemas). */
export const ENDPOINTS: Endpoint[] = [
  {
    method: 'POST',
    path: RELAY_PATHS.push,
    op: 'DB_DIFF_PUSH_SERVER',
    request: PushDiffRequestSchema,
    response: PushDiffResponseSchema,
    purpose: 'store a sealed diff for one, several or all other devices (idempotent per diffId)',
  },
  {
    method: 'POST',
    path: RELAY_PATHS.pull,
    op: 'DB_DIFF_PULL_SERVER',
    request: PullDiffRequestSchema,
    response: PullDiffResponseSchema,
    purpose: "page through this device's mailbox, oldest first",
  },
  {
    method: 'POST',
    path: RELAY_PATHS.ack,
    op: 'DB_DIFF_ACK_SERVER',
    request: AckDiffRequestSchema,
    response: AckDiffResponseSchema,
    purpose: 'delete applied diffs from the mailbox',
  },
  {
    method: 'POST',
    path: RELAY_PATHS.registerDevice,
    request: RegisterDeviceRequestSchema,
    response: RegisterDeviceResponseSchema,
    purpose: "register a device's own public key (signed with the account key)",
  },
  {
    method: 'POST',
    path: RELAY_PATHS.removeDevice,
    request: RemoveDeviceRequestSchema,
    response: RemoveDeviceResponseSchema,
    purpose: 'remove a device and drop its mailbox',
  },
  {
    method: 'POST',
    path: RELAY_PATHS.listDevices,
    request: ListDevicesRequestSchema,
    response: ListDevicesResponseSchema,
    purpose: "list the account's registered devices",
  },
  {
    method: 'POST',
    path: RELAY_PATHS.deleteAccount,
    request: DeleteAccountRequestSchema,
    response: DeleteAccountResponseSchema,
    purpose: 'delete every trace of the account (its devices and mailboxes)',
  },
  { method: 'GET', path: RELAY_PATHS.health, purpose: 'liveness and storage kind (unsigned)' },
  { method: 'GET', path: RELAY_PATHS.metrics, purpose: 'Prometheus metrics (unsigned)' },
];

// ---- schema rendering ----

const cell = (text: string): string => text.replaceAll('|', '\\|').replaceAll('\n', ' ');

function describeType(schema: TSchema): string {
  if ('const' in schema) return `\`${JSON.stringify(schema.const)}\``;
  if (schema.enum)
    return `one of ${(schema.enum as unknown[]).map((v) => `\`${JSON.stringify(v)}\``).join(', ')}`;
  if (schema.anyOf) return (schema.anyOf as TSchema[]).map(describeType).join(' or ');
  const limits: string[] = [];
  if (schema.minLength !== undefined || schema.maxLength !== undefined) {
    const [min, max] = [schema.minLength ?? 0, schema.maxLength ?? '∞'];
    limits.push(min === max ? `length ${min}` : `length ${min}..${max}`);
  }
  if (schema.pattern) limits.push(`\`${schema.pattern}\``);
  if (schema.format) limits.push(schema.format);
  if (schema.minimum !== undefined || schema.maximum !== undefined) {
    limits.push(`${schema.minimum ?? '-∞'}..${schema.maximum ?? '∞'}`);
  }
  if (schema.maxItems !== undefined) limits.push(`at most ${schema.maxItems} items`);
  const suffix = limits.length ? ` (${limits.join(', ')})` : '';
  switch (schema[Kind]) {
    case 'Unknown':
      return 'any JSON';
    case 'Null':
      return '`null`';
    case 'Array':
      return `array of ${describeType(schema.items as TSchema)}${suffix}`;
    default:
      return `${schema.type ?? schema[Kind]}${suffix}`;
  }
}

/** One row per field, nested objects (and arrays of objects) flattened to dotted paths. */
function fieldRows(schema: TSchema, prefix = ''): string[] {
  const properties = (schema.properties ?? {}) as Record<string, TSchema>;
  const required = new Set((schema.required as string[] | undefined) ?? []);
  return Object.entries(properties).flatMap(([name, field]) => {
    const path = `${prefix}${name}`;
    const optional = field[OptionalKind] === 'Optional' || !required.has(name);
    const row = `| \`${path}\` | ${cell(describeType(field))} | ${optional ? 'no' : 'yes'} | ${cell(field.description ?? '')} |`;
    const nested =
      field[Kind] === 'Object'
        ? fieldRows(field, `${path}.`)
        : field[Kind] === 'Array' && (field.items as TSchema)[Kind] === 'Object'
          ? fieldRows(field.items as TSchema, `${path}[].`)
          : [];
    return [row, ...nested];
  });
}

function fieldTable(schema: TSchema): string {
  const rows = fieldRows(schema);
  if (rows.length === 0) return '_No fields._';
  return ['| field | type | required | description |', '|---|---|---|---|', ...rows].join('\n');
}

// ---- sections ----

/**
 * The doc comment right above `declaration` in a module, as prose: the handshake's and the session
 * frames' comments are their specification.
 */
function docCommentAbove(path: string, declaration: string): string {
  const source = readFileSync(join(ROOT, path), 'utf8');
  const match = new RegExp(`/\\*\\*\\n((?: \\*.*\\n)+?) \\*/\\n${declaration}`).exec(source);
  if (!match) throw new Error(`no doc comment above ${declaration} in ${path}`);
  const lines = match[1]!.split('\n').map((line) => line.replace(/^ \* ?/, ''));
  // Indented lines are the message flow: keep them as a code block.
  const out: string[] = [];
  let inCode = false;
  for (const line of lines) {
    const code = line.startsWith('  ');
    if (code !== inCode && line !== '') {
      if (inCode) while (out.at(-1) === '') out.pop();
      out.push(...(code ? ['```text'] : ['```', '']));
      inCode = code;
    }
    out.push(code ? line.trimStart() : line);
  }
  if (inCode) out.push('```');
  return out.join('\n').trim();
}

function opsSection(): string {
  const ops = listOps();
  return LANES.map((lane) => {
    const laneOps = ops.filter((op) => op.lane === lane);
    const body = laneOps
      .map((op) =>
        [`#### \`${op.name}\``, '', op.description || '_(no description)_', '', fieldTable(op.data)].join(
          '\n',
        ),
      )
      .join('\n\n');
    return [`### Lane \`${lane}\``, '', body || '_No operations._'].join('\n');
  }).join('\n\n');
}

function endpointsSection(): string {
  const rows = ENDPOINTS.map(
    (e) => `| ${e.method} | \`${e.path}\` | ${e.op ? `\`${e.op}\`` : ''} | ${cell(e.purpose)} |`,
  );
  const bodies = ENDPOINTS.filter((e) => e.request).map((e) =>
    [
      `#### ${e.method} \`${e.path}\``,
      '',
      e.op ? `Request body: the data of \`${e.op}\` (above).` : 'Request body:',
      '',
      ...(e.op ? [] : [fieldTable(e.request!), '']),
      'Response body (200):',
      '',
      fieldTable(e.response!),
    ].join('\n'),
  );
  const errors = Object.entries(RELAY_ERRORS).map(([reason, status]) => `| \`${reason}\` | ${status} |`);
  return [
    '| method | path | spec operation | purpose |',
    '|---|---|---|---|',
    ...rows,
    '',
    ...bodies.flatMap((body) => [body, '']),
    'Refusals answer `{ "error": REASON, "message": "..." }` (an `UNKNOWN_TARGET` refusal also lists the ' +
      'targets that are not registered devices of the account in `unknownTargets`; nothing was stored) with:',
    '',
    '| reason | HTTP status |',
    '|---|---|',
    ...errors,
  ].join('\n');
}

export function renderProtocolDoc(): string {
  return `<!-- Generated by scripts/generate-protocol-doc.ts from the protocol definitions: do not edit by hand. -->

# Ferry protocol reference

Ferry implements the protocol of the project specification (peer-to-peer sync of RxDB collections and AI
streaming over WebRTC, with an optional zero-knowledge diff server). This file lists what the code
defines; JSON Schemas of every message are in [docs/schemas](schemas) (\`npx tsx scripts/export-schemas.ts\`).

## Message envelope

The JSON reference form of a message under the account key (spec section 6), version \`${ENVELOPE_VERSION}\`.

${fieldTable(EnvelopeSchema)}

\`payload\` is base64 of \`nonce (24 bytes) || ciphertext || tag (16 bytes)\`: XChaCha20-Poly1305 under
\`HKDF-SHA256(accountKey, info "${SUBKEY_PURPOSES.envelope}")\`. The associated data is the canonical
encoding of the header (a label, then \`version\`, \`accountId\`, \`clientId\`, \`sessionId\`, \`type\`, each as a
4-byte big-endian length and UTF-8, \`0xffffffff\` for an absent \`sessionId\`), so no header field can be
changed, swapped or dropped. Opening checks that \`type\` equals the decrypted \`op\`.

### Decrypted payload

${fieldTable(PeerMessageSchema)}

On the peer channel the same payload travels as UTF-8 JSON inside the session's own encryption (the
handshake below); a binary header was measured slower (bench/suites/protocol.ts).

### Decoding errors

Every decoder throws only \`FerryError\`s: \`TOO_LARGE\` (input above the limit, default
${DEFAULT_MAX_MESSAGE_BYTES / 1024 / 1024} MiB), \`BAD_ENCODING\` (not UTF-8), \`BAD_JSON\`, \`BAD_BASE64\`,
\`UNKNOWN_VERSION\`, \`UNKNOWN_OP\`, \`SCHEMA_MISMATCH\` (with the JSON path of the first offending value) and
\`DECRYPT_FAILED\` (wrong key, tampered payload or header).

## Operations

Each operation belongs to a lane of the peer session; lanes are served in priority order
(${LANES.map((lane) => `\`${lane}\``).join(' > ')}). Messages carry these fields in \`data\`.

${opsSection()}

## Peer handshake

Protocol \`${HANDSHAKE_PROTOCOL}\`, prologue label \`${HANDSHAKE_PROLOGUE_LABEL}\`, timeout
${DEFAULT_HANDSHAKE_TIMEOUT_MS / 1000} s, accepted clock skew ±${DEFAULT_MAX_CLOCK_SKEW_MS / 1000} s
(from ${HANDSHAKE_SOURCE}):

${docCommentAbove(HANDSHAKE_SOURCE, 'export const HANDSHAKE_PROTOCOL')}

## Session frames

From ${SECURE_CHANNEL_SOURCE}:

${docCommentAbove(SECURE_CHANNEL_SOURCE, 'export const FRAME_COUNTER_BYTES')}

### Records

Inside a frame (from ${MUX_SOURCE}):

${docCommentAbove(MUX_SOURCE, 'const FIRST')}

## Diff server endpoints

Every POST body is JSON signed by the caller with an Ed25519 key derived from the account key (or the
device's own key): method, path, creation time, nonce and body digest, within a ±${SIGNATURE_WINDOW_MS / 1000} s window.

${endpointsSection()}

### Sealed diffs

\`encryptedDiff\` is base64url of a sealed diff (from ${SEALED_DIFF_SOURCE}):

${docCommentAbove(SEALED_DIFF_SOURCE, 'const FORMAT_VERSION')}

The header (\`DiffHeader\`):

${fieldTable(DiffHeaderSchema)}
`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(PROTOCOL_DOC, renderProtocolDoc());
  console.log(`wrote ${PROTOCOL_DOC}`);
}
