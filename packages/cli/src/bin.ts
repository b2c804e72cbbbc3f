#!/usr/bin/env node
import { CommanderError } from 'commander';
import { describeFailure } from './errors.js';
import { createProgram } from './program.js';

try {
  await createProgram().parseAsync(process.argv);
  // Every command has closed what it opened by now (servers after their signal). A native WebRTC
  // library's thread that failed to stop (node-datachannel, now and then) must not keep it running.
  process.exit(0);
} catch (error) {
  // commander has already printed usage errors and help; it reports them as CommanderError.
  if (error instanceof CommanderError) process.exit(error.exitCode);
  console.error(`ferry: ${describeFailure(error)}`);
  process.exit(1);
}
