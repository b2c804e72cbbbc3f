/**
 * Every failure Ferry reports is a FerryError with a stable machine-readable `code` and a human
 * `message` that says what went wrong and, where possible, what to do. Callers switch on `code`.
 */
export type FerryErrorCode =
  // decoding and validation of bytes from the network or disk
  | 'BAD_ENCODING'
  | 'BAD_BASE64'
  | 'BAD_JSON'
  | 'UNKNOWN_VERSION'
  | 'UNKNOWN_OP'
  | 'SCHEMA_MISMATCH'
  | 'TOO_LARGE'
  // cryptography
  | 'DECRYPT_FAILED'
  | 'BAD_SIGNATURE'
  | 'REPLAY'
  | 'STALE'
  | 'KDF_DOWNGRADE'
  | 'BAD_PASSPHRASE'
  | 'HANDSHAKE_FAILED'
  // sessions and transports
  | 'CLOSED'
  | 'TIMEOUT'
  | 'TRANSPORT'
  | 'LIMIT'
  // remote services
  | 'SERVER'
  | 'REJECTED' // a peer declined a request (AI: unknown model, busy, refused by policy)
  | 'TRUNCATED' // a stream arrived incomplete (sequence gap or digest mismatch)
  | 'CANCELLED'
  // the caller's own mistake: an option or argument Ferry cannot work with (fix the call; a retry cannot help)
  | 'BAD_ARGUMENT'
  | 'INTERNAL';

export class FerryError extends Error {
  override readonly name = 'FerryError';
  constructor(
    readonly code: FerryErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export const isFerryError = (error: unknown, code?: FerryErrorCode): error is FerryError =>
  error instanceof FerryError && (code === undefined || error.code === code);
