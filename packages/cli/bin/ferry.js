#!/usr/bin/env node
// Committed (not built) so npm can link it with its executable bit before `tsc -b` has run.
import '../dist/bin.js';
