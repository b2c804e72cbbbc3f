// Loads every package's protocol operations into core's registry, for the scripts that describe the
// whole protocol (JSON Schemas, docs) and their staleness tests.
import { AI_SCHEMAS } from '../packages/ai/src/wire.js';
import { defineOps } from '../packages/core/src/index.js';

// ai/wire.ts registers these itself, but through `@ferry/core`: under tsx that is the built package,
// a second registry beside the sources imported here. Defining them again is idempotent.
defineOps('ai', AI_SCHEMAS);
