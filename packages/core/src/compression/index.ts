export {
  compressionThreshold,
  compressMessage,
  DEFAULT_COMPRESS_MIN_BYTES,
  type Deflate,
  decompressMessage,
  fflateDeflate,
  useDeflate,
} from './deflate.js';
export { deflateFromNodeZlib, type NodeZlib } from './node-zlib.js';
