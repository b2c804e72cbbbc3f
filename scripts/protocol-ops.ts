// Loads every package's protocol operations into core's registry, for the scripts that describe the
// whole protocol (JSON Schemas, docs) and their staleness tests.
import { AI_SCHEMAS } from '../packages/ai/src/wire.js';
import { defineOps } from '../packages/core/src/index.js';

// @ferry/ai's ops; idempotent once packages/ai/src/wire.ts registers them itself.
defineOps('ai', AI_SCHEMAS);
