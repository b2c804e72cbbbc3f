import { AckDiffRequestSchema, PullDiffRequestSchema, PushDiffRequestSchema } from '../../relay/wire.js';
import { defineOps, type OpDataOf } from '../registry.js';

/**
 * The diff-server operations of spec 7.2. Their data is the JSON body of the diff server's endpoints,
 * defined once by the relay (relay/wire.ts) and registered here so the protocol lists every operation.
 */
export const RELAY_OPS = defineOps('sync', {
  DB_DIFF_PUSH_SERVER: {
    data: PushDiffRequestSchema,
    description:
      'POST /pushDiff: leave an encrypted diff in the mailbox of an offline device (or all others).',
  },
  DB_DIFF_PULL_SERVER: {
    data: PullDiffRequestSchema,
    description: "POST /pullDiff: fetch the encrypted diffs waiting in this device's mailbox, oldest first.",
  },
  DB_DIFF_ACK_SERVER: {
    data: AckDiffRequestSchema,
    description: 'POST /ackDiff: the diffs were applied; the server deletes them.',
  },
});

declare module '../registry.js' {
  interface OpDataMap extends OpDataOf<typeof RELAY_OPS> {}
}
