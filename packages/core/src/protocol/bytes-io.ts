import { FerryError } from '../errors.js';

/**
 * Small lib0-style writer and reader for the binary codecs: unsigned LEB128 varints, float64 and
 * length-prefixed byte strings. The reader never reads past its input: a short input is BAD_ENCODING.
 */

export class ByteWriter {
  private buffer: Uint8Array;
  private view: DataView;
  private length = 0;

  constructor(initialCapacity = 256) {
    this.buffer = new Uint8Array(initialCapacity);
    this.view = new DataView(this.buffer.buffer);
  }

  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const grown = new Uint8Array(Math.max(this.buffer.length * 2, this.length + bytes));
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
    this.view = new DataView(grown.buffer);
  }

  byte(value: number): this {
    this.reserve(1);
    this.buffer[this.length++] = value;
    return this;
  }

  /** Unsigned LEB128 for 0..2^53-1. */
  varUint(value: number): this {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new FerryError('BAD_ENCODING', `cannot encode ${value} as an unsigned varint`);
    }
    this.reserve(8);
    let rest = value;
    while (rest >= 0x80) {
      this.buffer[this.length++] = (rest % 0x80) | 0x80;
      rest = Math.floor(rest / 0x80);
    }
    this.buffer[this.length++] = rest;
    return this;
  }

  float64(value: number): this {
    this.reserve(8);
    this.view.setFloat64(this.length, value, true);
    this.length += 8;
    return this;
  }

  raw(bytes: Uint8Array): this {
    this.reserve(bytes.length);
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
    return this;
  }

  /** Length-prefixed bytes. */
  bytes(bytes: Uint8Array): this {
    return this.varUint(bytes.length).raw(bytes);
  }

  /** A view of the written bytes (no copy). */
  finish(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
}

export class ByteReader {
  private offset = 0;
  private readonly view: DataView;

  constructor(private readonly input: Uint8Array) {
    this.view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  }

  get remaining(): number {
    return this.input.length - this.offset;
  }

  private need(bytes: number, what: string): void {
    if (bytes > this.remaining) {
      throw new FerryError('BAD_ENCODING', `input ends inside ${what} at byte ${this.offset}`);
    }
  }

  byte(what = 'a byte'): number {
    this.need(1, what);
    return this.input[this.offset++]!;
  }

  varUint(what = 'a varint'): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const byte = this.byte(what);
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        if (!Number.isSafeInteger(value)) break;
        return value;
      }
      scale *= 0x80;
    }
    throw new FerryError('BAD_ENCODING', `${what} is longer than a safe integer`);
  }

  float64(what = 'a float64'): number {
    this.need(8, what);
    const value = this.view.getFloat64(this.offset, true);
    this.offset += 8;
    return value;
  }

  /** Length-prefixed bytes (a view into the input). */
  bytes(what = 'a byte string'): Uint8Array {
    const length = this.varUint(`the length of ${what}`);
    this.need(length, what);
    const out = this.input.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  /** Everything not read yet. */
  rest(): Uint8Array {
    const out = this.input.subarray(this.offset);
    this.offset = this.input.length;
    return out;
  }
}
