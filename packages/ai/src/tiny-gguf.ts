/**
 * A tiny random-weight llama model in GGUF v3, written from a seed. It is nonsense-talking but real:
 * llama.cpp (through node-llama-cpp) loads and samples it like any model, so tests and `ferry demo`
 * exercise true inference without downloading weights. Isomorphic: returns bytes, writes no file.
 *
 * Vocabulary (SentencePiece-style "llama" tokenizer): <unk>, <s>, </s>, the 256 byte tokens <0x00>..
 * <0xFF> and `▁` (the SentencePiece space) as a normal token: any text tokenizes through byte fallback.
 *
 * Random weights would sample end-of-text after ~260 tokens on average and emit bytes that are not
 * UTF-8. Residual channel 0 is therefore reserved as a bias: every embedding holds a constant there,
 * the blocks neither read it (norm weight 0) nor write it (output row 0), and the output matrix maps
 * it to a large negative logit for control tokens and non-printable bytes. The model then writes
 * printable ASCII until maxTokens, deterministically for a given sampling seed.
 */

export interface TinyLlamaOptions {
  /** Same seed, same bytes. */
  seed?: number;
  contextLength?: number;
  embeddingLength?: number;
  blockCount?: number;
  headCount?: number;
  feedForwardLength?: number;
  name?: string;
}

export const TINY_LLAMA_DEFAULTS = {
  seed: 1,
  contextLength: 256,
  embeddingLength: 64,
  blockCount: 2,
  headCount: 4,
  feedForwardLength: 128,
  name: 'ferry-tiny-llama',
} as const satisfies Required<TinyLlamaOptions>;

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const GGUF_VERSION = 3;
const ALIGNMENT = 32;

// gguf_metadata_value_type
const ValueType = { UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9 } as const;
type ValueType = typeof ValueType;
const GGML_TYPE_F32 = 0;

// llama_token_type as stored in tokenizer.ggml.token_type
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

type MetadataValue =
  | { type: ValueType['UINT32'] | ValueType['INT32'] | ValueType['FLOAT32']; value: number }
  | { type: ValueType['BOOL']; value: boolean }
  | { type: ValueType['STRING']; value: string }
  | { type: ValueType['ARRAY']; itemType: ValueType['STRING']; value: string[] }
  | { type: ValueType['ARRAY']; itemType: ValueType['INT32'] | ValueType['FLOAT32']; value: number[] };

interface Tensor {
  name: string;
  /** ggml order: dims[0] varies fastest. */
  dims: number[];
  data: Float32Array;
}

/** Little-endian byte sink that grows as needed. */
class ByteWriter {
  private buffer = new Uint8Array(1 << 16);
  private view = new DataView(this.buffer.buffer);
  length = 0;
  private static readonly encoder = new TextEncoder();

  /** Claim `bytes` at the end; call it before touching `buffer`/`view`, which it may replace. */
  private reserve(bytes: number): number {
    const at = this.length;
    if (at + bytes > this.buffer.length) {
      let size = this.buffer.length * 2;
      while (size < at + bytes) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.buffer.subarray(0, at));
      this.buffer = next;
      this.view = new DataView(next.buffer);
    }
    this.length += bytes;
    return at;
  }

  u8(value: number): void {
    const at = this.reserve(1);
    this.view.setUint8(at, value);
  }
  u32(value: number): void {
    const at = this.reserve(4);
    this.view.setUint32(at, value, true);
  }
  i32(value: number): void {
    const at = this.reserve(4);
    this.view.setInt32(at, value, true);
  }
  u64(value: number): void {
    const at = this.reserve(8);
    this.view.setBigUint64(at, BigInt(value), true);
  }
  f32(value: number): void {
    const at = this.reserve(4);
    this.view.setFloat32(at, value, true);
  }
  private bytes(value: Uint8Array): void {
    const at = this.reserve(value.length);
    this.buffer.set(value, at);
  }
  string(value: string): void {
    const encoded = ByteWriter.encoder.encode(value);
    this.u64(encoded.length);
    this.bytes(encoded);
  }
  padTo(alignment: number): void {
    while (this.length % alignment !== 0) this.u8(0);
  }
  result(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

/** Deterministic PRNG (mulberry32): the same seed gives the same weights on every platform. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function tinyLlamaVocabulary(): { tokens: string[]; types: number[] } {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  for (let byte = 0; byte < 256; byte++) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_BYTE);
  }
  tokens.push('\u2581');
  types.push(TOKEN_NORMAL);
  return { tokens, types };
}

/** Build the GGUF file bytes (~470 KB with the defaults). */
export function createTinyLlamaGguf(options: TinyLlamaOptions = {}): Uint8Array {
  const o = { ...TINY_LLAMA_DEFAULTS, ...options };
  if (o.embeddingLength % o.headCount !== 0)
    throw new RangeError('embeddingLength must be a multiple of headCount');
  const random = mulberry32(o.seed);
  const { tokens, types } = tinyLlamaVocabulary();
  const vocab = tokens.length;

  // Uniform weights scaled by 1/sqrt(fan-in) keep activations and logits in a useful range.
  const matrix = (name: string, cols: number, rows: number): Tensor => {
    const data = new Float32Array(cols * rows);
    const scale = Math.sqrt(3 / cols);
    for (let i = 0; i < data.length; i++) data[i] = (random() * 2 - 1) * scale;
    return { name, dims: [cols, rows], data };
  };
  const ones = (name: string, size: number): Tensor => ({
    name,
    dims: [size],
    data: new Float32Array(size).fill(1),
  });

  // The bias channel (see the header comment): element 0 of every row, or the whole row 0.
  const biasColumn = (tensor: Tensor, value: (row: number) => number): Tensor => {
    const cols = tensor.dims[0]!;
    for (let row = 0; row < tensor.data.length / cols; row++) tensor.data[row * cols] = value(row);
    return tensor;
  };
  const zeroFirstRow = (tensor: Tensor): Tensor => {
    tensor.data.fill(0, 0, tensor.dims[0]);
    return tensor;
  };
  const blockNorm = (name: string): Tensor => {
    const tensor = ones(name, o.embeddingLength);
    tensor.data[0] = 0;
    return tensor;
  };
  const allowed = tokens.map((token, id) => types[id] === TOKEN_NORMAL || isPrintableByteToken(token));

  const tensors: Tensor[] = [
    biasColumn(matrix('token_embd.weight', o.embeddingLength, vocab), () => BIAS_LEVEL),
  ];
  for (let block = 0; block < o.blockCount; block++) {
    const p = `blk.${block}.`;
    tensors.push(
      blockNorm(`${p}attn_norm.weight`),
      matrix(`${p}attn_q.weight`, o.embeddingLength, o.embeddingLength),
      matrix(`${p}attn_k.weight`, o.embeddingLength, o.embeddingLength),
      matrix(`${p}attn_v.weight`, o.embeddingLength, o.embeddingLength),
      zeroFirstRow(matrix(`${p}attn_output.weight`, o.embeddingLength, o.embeddingLength)),
      blockNorm(`${p}ffn_norm.weight`),
      matrix(`${p}ffn_gate.weight`, o.embeddingLength, o.feedForwardLength),
      matrix(`${p}ffn_up.weight`, o.embeddingLength, o.feedForwardLength),
      zeroFirstRow(matrix(`${p}ffn_down.weight`, o.feedForwardLength, o.embeddingLength)),
    );
  }
  tensors.push(
    ones('output_norm.weight', o.embeddingLength),
    biasColumn(matrix('output.weight', o.embeddingLength, vocab), (token) =>
      allowed[token] ? 0 : BANNED_WEIGHT,
    ),
  );

  const u32 = (value: number) => ({ type: ValueType.UINT32, value }) as const;
  const metadata: Array<[string, MetadataValue]> = [
    ['general.architecture', { type: ValueType.STRING, value: 'llama' }],
    ['general.name', { type: ValueType.STRING, value: o.name }],
    ['general.alignment', u32(ALIGNMENT)],
    ['llama.context_length', u32(o.contextLength)],
    ['llama.embedding_length', u32(o.embeddingLength)],
    ['llama.block_count', u32(o.blockCount)],
    ['llama.feed_forward_length', u32(o.feedForwardLength)],
    ['llama.attention.head_count', u32(o.headCount)],
    ['llama.attention.head_count_kv', u32(o.headCount)],
    ['llama.rope.dimension_count', u32(o.embeddingLength / o.headCount)],
    ['llama.attention.layer_norm_rms_epsilon', { type: ValueType.FLOAT32, value: 1e-5 }],
    ['tokenizer.ggml.model', { type: ValueType.STRING, value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: tokens }],
    [
      'tokenizer.ggml.scores',
      { type: ValueType.ARRAY, itemType: ValueType.FLOAT32, value: tokens.map(() => 0) },
    ],
    ['tokenizer.ggml.token_type', { type: ValueType.ARRAY, itemType: ValueType.INT32, value: types }],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(2)],
    ['tokenizer.ggml.add_bos_token', { type: ValueType.BOOL, value: true }],
  ];

  const out = new ByteWriter();
  out.u32(GGUF_MAGIC);
  out.u32(GGUF_VERSION);
  out.u64(tensors.length);
  out.u64(metadata.length);
  for (const [key, value] of metadata) {
    out.string(key);
    writeValue(out, value);
  }
  let offset = 0;
  for (const tensor of tensors) {
    out.string(tensor.name);
    out.u32(tensor.dims.length);
    for (const dim of tensor.dims) out.u64(dim);
    out.u32(GGML_TYPE_F32);
    out.u64(offset);
    offset += align(tensor.data.byteLength);
  }
  out.padTo(ALIGNMENT);
  for (const tensor of tensors) {
    for (const weight of tensor.data) out.f32(weight);
    out.padTo(ALIGNMENT);
  }
  return out.result();
}

/** Residual value of the bias channel, and its output weight for banned tokens (logit about -40). */
const BIAS_LEVEL = 8;
const BANNED_WEIGHT = -6;

function isPrintableByteToken(token: string): boolean {
  const match = /^<0x([0-9A-F]{2})>$/.exec(token);
  if (!match) return false;
  const byte = Number.parseInt(match[1]!, 16);
  return byte >= 0x20 && byte <= 0x7e;
}

const align = (size: number): number => Math.ceil(size / ALIGNMENT) * ALIGNMENT;

function writeValue(out: ByteWriter, value: MetadataValue): void {
  out.u32(value.type);
  switch (value.type) {
    case ValueType.UINT32:
      out.u32(value.value);
      return;
    case ValueType.INT32:
      out.i32(value.value);
      return;
    case ValueType.FLOAT32:
      out.f32(value.value);
      return;
    case ValueType.BOOL:
      out.u8(value.value ? 1 : 0);
      return;
    case ValueType.STRING:
      out.string(value.value);
      return;
    case ValueType.ARRAY: {
      out.u32(value.itemType);
      out.u64(value.value.length);
      if (value.itemType === ValueType.STRING) for (const item of value.value) out.string(item);
      else if (value.itemType === ValueType.INT32) for (const item of value.value) out.i32(item);
      else for (const item of value.value) out.f32(item);
    }
  }
}
