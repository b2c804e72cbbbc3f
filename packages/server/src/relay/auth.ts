import { createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';
import { promisify } from 'node:util';
import { parseSignatureHeaders, relayAccountId, signatureBase } from '@ferry/core';
import { RelayRejection } from './errors.js';
import type { NonceClaim } from './storage/types.js';

/** A request whose signature verified: who signed it and the nonce it must consume. */
export interface SignedBy {
  /** base64url Ed25519 public key. */
  keyId: string;
  /** The account id this key would certify if it is an account key. */
  certifiedAccountId: string;
  claim: NonceClaim;
}

export interface RequestToVerify {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: Uint8Array;
}

const header = (headers: RequestToVerify['headers'], name: string): string | undefined => {
  const value = headers[name];
  return Array.isArray(value) ? undefined : value;
};

const MAX_CACHED_KEYS = 10_000;
/** With a callback, Node runs the verification on libuv's thread pool, off the event loop. */
const verifyOffThread = promisify(verify);

/**
 * Checks the RFC 9421-style signature of a request (see @ferry/core relay/signature.ts) with Node's
 * OpenSSL Ed25519, several times faster than a pure-JS implementation, on libuv's thread pool so
 * the event loop keeps parsing other requests meanwhile. Order: parse (UNSIGNED), time window (STALE), body digest (BAD_DIGEST), signature
 * (BAD_SIGNATURE). The nonce is consumed later, inside the storage transaction of the operation.
 */
export class RequestVerifier {
  private readonly keys = new Map<string, { key: KeyObject; accountId: string }>();

  constructor(
    private readonly windowMs: number,
    private readonly now: () => number,
  ) {}

  async verify(request: RequestToVerify): Promise<SignedBy> {
    let parsed: ReturnType<typeof parseSignatureHeaders>;
    try {
      parsed = parseSignatureHeaders({
        contentDigest: header(request.headers, 'content-digest'),
        signatureInput: header(request.headers, 'signature-input'),
        signature: header(request.headers, 'signature'),
      });
    } catch (error) {
      throw new RelayRejection('UNSIGNED', (error as Error).message);
    }
    const createdMs = parsed.created * 1000;
    if (Math.abs(this.now() - createdMs) > this.windowMs) {
      throw new RelayRejection(
        'STALE',
        `the signature's created time is more than ${this.windowMs / 1000} s from the server clock`,
      );
    }
    const digest = createHash('sha256').update(request.body).digest();
    if (!digest.equals(parsed.digest)) {
      throw new RelayRejection('BAD_DIGEST', 'Content-Digest does not match the body');
    }
    const signer = this.key(parsed.keyId, parsed.publicKey);
    const base = signatureBase(request.method, request.path, parsed.contentDigest, parsed.params);
    if (!signer || !(await verifyOffThread(null, Buffer.from(base, 'utf8'), signer.key, parsed.signature))) {
      throw new RelayRejection('BAD_SIGNATURE', 'the request signature does not verify');
    }
    return {
      keyId: parsed.keyId,
      certifiedAccountId: signer.accountId,
      claim: { keyId: parsed.keyId, nonce: parsed.nonce, expiresAt: createdMs + this.windowMs + 1000 },
    };
  }

  private key(keyId: string, publicKey: Uint8Array): { key: KeyObject; accountId: string } | undefined {
    let entry = this.keys.get(keyId);
    if (!entry) {
      try {
        entry = {
          key: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: keyId }, format: 'jwk' }),
          accountId: relayAccountId(publicKey),
        };
      } catch {
        return undefined;
      }
      if (this.keys.size >= MAX_CACHED_KEYS) this.keys.delete(this.keys.keys().next().value!);
      this.keys.set(keyId, entry);
    }
    return entry;
  }
}
