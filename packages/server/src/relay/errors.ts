import { FerryError, RELAY_ERRORS, type RelayErrorReason } from '@ferry/core';

/** A refused request: answered with RELAY_ERRORS[reason] and `{ error: reason, message, ...details }`. */
export class RelayRejection extends FerryError {
  readonly status: number;

  constructor(
    readonly reason: RelayErrorReason,
    message: string,
    /** Fields of the error response beyond `error` and `message` (see RelayErrorResponseSchema). */
    readonly details: { unknownTargets?: string[] } = {},
  ) {
    super(RELAY_ERRORS[reason] >= 500 ? 'SERVER' : 'REJECTED', message);
    this.status = RELAY_ERRORS[reason];
  }
}
