import { FerryError, RELAY_ERRORS, type RelayErrorReason } from '@ferry/core';

/** A refused request: answered with RELAY_ERRORS[reason] and `{ error: reason, message }`. */
export class RelayRejection extends FerryError {
  readonly status: number;

  constructor(
    readonly reason: RelayErrorReason,
    message: string,
  ) {
    super(RELAY_ERRORS[reason] >= 500 ? 'SERVER' : 'REJECTED', message);
    this.status = RELAY_ERRORS[reason];
  }
}
