// Run by check.test.ts as `node --disallow-code-generation-from-strings --import tsx <this file>`.
import { canGenerateCode } from '../../src/index.js';
import { decodeOutcomes } from './check-cases.js';

process.stdout.write(JSON.stringify({ codeGeneration: canGenerateCode(), outcomes: decodeOutcomes() }));
