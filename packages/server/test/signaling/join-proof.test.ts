import { randomBytes, roomCredentials, signJoinProof, toBase64, verifyJoinProof } from '@ferry/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { verifyJoinProofNative } from '../../src/signaling/join-proof.js';

const credentials = roomCredentials(randomBytes(32));
const challenge = toBase64(randomBytes(32), { url: true });

describe('server join-proof check (OpenSSL Ed25519)', () => {
  it('agrees with core verifyJoinProof on genuine and altered statements', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 40 }),
        fc.string({ minLength: 1, maxLength: 40 }),
        fc.constantFrom('none', 'challenge', 'clientId', 'connectionId', 'room', 'signature'),
        (clientId, connectionId, alteration) => {
          const proof = signJoinProof(credentials, { challenge, clientId, connectionId });
          const input = { challenge, room: credentials.room, clientId, connectionId };
          const altered = {
            none: input,
            challenge: { ...input, challenge: toBase64(randomBytes(32), { url: true }) },
            clientId: { ...input, clientId: `${clientId}x` },
            connectionId: { ...input, connectionId: `${connectionId}x` },
            room: { ...input, room: roomCredentials(randomBytes(32)).room },
            signature: input,
          }[alteration];
          const signature =
            alteration === 'signature'
              ? `${proof.slice(0, 10)}${proof[10] === 'A' ? 'B' : 'A'}${proof.slice(11)}`
              : proof;
          const native = verifyJoinProofNative(altered, signature);
          expect(native).toBe(verifyJoinProof(altered, signature));
          expect(native).toBe(alteration === 'none');
        },
      ),
      { numRuns: 200 },
    );
  });

  it('never throws on garbage room ids or proofs', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (room, proof) => {
        expect(verifyJoinProofNative({ challenge, room, clientId: 'a', connectionId: 'b' }, proof)).toBe(
          false,
        );
      }),
    );
  });
});
