// Run by check.test.ts, either as `node --disallow-code-generation-from-strings --import tsx <this
// file>` (Ferry finds out that it may not compile), or as `node --import tsx <this file> interpreted`
// (the app says so with useInterpretedChecks, and nothing may even try). Prints whether checks were
// compiled, how many functions were built from strings, and the outcome of every decode case.
let functionsBuilt = 0;
globalThis.Function = new Proxy(Function, {
  construct(target, args) {
    functionsBuilt++;
    return Reflect.construct(target, args);
  },
});
const { canGenerateCode, useInterpretedChecks } = await import('../../src/index.js');
if (process.argv[2] === 'interpreted') useInterpretedChecks();
const { decodeOutcomes } = await import('./check-cases.js');
const outcomes = decodeOutcomes();
process.stdout.write(JSON.stringify({ codeGeneration: canGenerateCode(), functionsBuilt, outcomes }));
