import { sha256 } from '@noble/hashes/sha2.js';
import { type SigningKeyPair, sign } from '../crypto/sign.js';
import { FerryError } from '../errors.js';
import { concatBytes, fromBase64, randomBytes, toBase64, utf8 } from '../util/bytes.js';

/**
 * Request signatures for the diff server, in the shape of RFC 9421 (HTTP Message Signatures) with
 * one fixed profile: Ed25519 over `@method`, `@path` and `content-digest` (RFC 9530 SHA-256 of the
 * exact body bytes), with `created`, `nonce` and `keyid` parameters. The server keeps only public
 * keys: a request is accepted when the signature verifies, `created` is within the window and the
 * nonce was never used by that key.
 *
 *   Content-Digest: sha-256=:<base64 digest>:
 *   Signature-Input: ferry=("@method" "@path" "content-digest");created=<s>;nonce="<b64url>";keyid="<b64url key>";alg="ed25519"
 *   Signature: ferry=:<base64 signature>:
 */

export const SIGNATURE_WINDOW_MS = 300_000;
const LABEL = 'ferry';
const COVERED = '("@method" "@path" "content-digest")';
const ACCOUNT_ID_DOMAIN = utf8('ferry/v1/relay-account');

export interface SignedRequestHeaders {
  'content-digest': string;
  'signature-input': string;
  signature: string;
}

/** The account id the diff server knows: base64url SHA-256 of the account's relay public key. */
export const relayAccountId = (accountPublicKey: Uint8Array): string =>
  toBase64(sha256(concatBytes(ACCOUNT_ID_DOMAIN, accountPublicKey)), { url: true });

export const contentDigestHeader = (body: Uint8Array): string => `sha-256=:${toBase64(sha256(body))}:`;

interface SignatureParams {
  created: number;
  nonce: string;
  keyId: string;
}

const paramsString = ({ created, nonce, keyId }: SignatureParams): string =>
  `${COVERED};created=${created};nonce="${nonce}";keyid="${keyId}";alg="ed25519"`;

/** RFC 9421 section 2.5 signature base for the fixed component list. */
export const signatureBase = (method: string, path: string, contentDigest: string, params: string): string =>
  `"@method": ${method.toUpperCase()}\n"@path": ${path}\n"content-digest": ${contentDigest}\n"@signature-params": ${params}`;

export interface SignRequestInput {
  method: string;
  path: string;
  body: Uint8Array;
  /** Unix seconds; default now. */
  created?: number;
  nonce?: string;
}

/** `signWith` swaps the Ed25519 implementation (e.g. a native one in Node); the default is noble's. */
export function signRequest(
  key: SigningKeyPair,
  input: SignRequestInput,
  signWith: (secretKey: Uint8Array, message: Uint8Array) => Uint8Array = sign,
): SignedRequestHeaders {
  const digest = contentDigestHeader(input.body);
  const params = paramsString({
    created: input.created ?? Math.floor(Date.now() / 1000),
    nonce: input.nonce ?? toBase64(randomBytes(16), { url: true }),
    keyId: toBase64(key.publicKey, { url: true }),
  });
  const signature = signWith(key.secretKey, utf8(signatureBase(input.method, input.path, digest, params)));
  return {
    'content-digest': digest,
    'signature-input': `${LABEL}=${params}`,
    signature: `${LABEL}=:${toBase64(signature)}:`,
  };
}

export interface ParsedRequestSignature {
  /** base64url Ed25519 public key of the signer. */
  keyId: string;
  publicKey: Uint8Array;
  /** Unix seconds. */
  created: number;
  nonce: string;
  /** The Content-Digest header as received (part of the signature base). */
  contentDigest: string;
  /** The SHA-256 it announces. */
  digest: Uint8Array;
  /** The signature parameters as received, for the signature base. */
  params: string;
  signature: Uint8Array;
}

const SIGNATURE_INPUT = new RegExp(
  `^${LABEL}=(\\("@method" "@path" "content-digest"\\);created=(\\d{1,12});nonce="([A-Za-z0-9_-]{16,64})";keyid="([A-Za-z0-9_-]{43})";alg="ed25519")$`,
);
const SIGNATURE = new RegExp(`^${LABEL}=:([A-Za-z0-9+/]{86}==):$`);
const CONTENT_DIGEST = /^sha-256=:([A-Za-z0-9+/]{43}=):$/;

/**
 * Parses the three headers of the profile; anything else (missing header, other components, other
 * algorithm) is a BAD_SIGNATURE error before any cryptography runs. Does not verify.
 */
export function parseSignatureHeaders(headers: {
  contentDigest?: string | undefined;
  signatureInput?: string | undefined;
  signature?: string | undefined;
}): ParsedRequestSignature {
  const input = SIGNATURE_INPUT.exec(headers.signatureInput ?? '');
  if (!input) {
    throw new FerryError(
      'BAD_SIGNATURE',
      `Signature-Input must be ${LABEL}=${COVERED};created;nonce;keyid;alg`,
    );
  }
  const signature = SIGNATURE.exec(headers.signature ?? '');
  if (!signature) throw new FerryError('BAD_SIGNATURE', `Signature must be ${LABEL}=:<base64 Ed25519>:`);
  const digest = CONTENT_DIGEST.exec(headers.contentDigest ?? '');
  if (!digest) throw new FerryError('BAD_SIGNATURE', 'Content-Digest must be sha-256=:<base64>:');
  const [, params, created, nonce, keyId] = input as unknown as [string, string, string, string, string];
  return {
    keyId,
    publicKey: fromBase64(keyId),
    created: Number(created),
    nonce,
    contentDigest: headers.contentDigest!,
    digest: fromBase64(digest[1]!),
    params,
    signature: fromBase64(signature[1]!),
  };
}
