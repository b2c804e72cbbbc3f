import * as zlib from 'node:zlib';
import { fflateDeflate } from '../../src/compression/deflate.js';
import { deflateFromNodeZlib } from '../../src/compression/node-zlib.js';
import { runDeflateConformance } from '../deflate-conformance.js';

const nodeZlib = deflateFromNodeZlib(zlib);

runDeflateConformance('fflate (browsers, default)', fflateDeflate, { 'Node zlib': nodeZlib });
runDeflateConformance('Node zlib', nodeZlib, { fflate: fflateDeflate });
