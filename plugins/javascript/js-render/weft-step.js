// Weft step helper for JavaScript: write a step as a plain function.
//
// Shipped with the template (templates/javascript/); copy it along unchanged. A step is:
//
//   import { step, StepError, log } from './weft-step.js';
//
//   export const { describe, run } = step({
//     name: 'my-step',
//     version: '0.1.0',
//     description: '...',
//     inputSchema: { type: 'object' },
//     outputSchema: { type: 'object' },
//     run(input, ctx) {
//       log.info(`attempt ${ctx.attempt}`);
//       if (typeof input.name !== 'string') throw new StepError('invalid_input', '`name` is required');
//       return { greeting: `Hello, ${input.name}!` };
//     },
//   });
//
// The contract (wit/step.wit, `weft:step@1.0.0`) passes JSON text both ways; this module decodes
// the input, encodes the output and turns exceptions into the WIT `step-error`:
// - `new StepError(code, message, { retryable })`: that code, message and retryable flag
//   (`retryable: true` for a transient problem: the engine may retry the step);
// - anything else thrown: code `internal_error` (not retryable), its stack logged;
// - an output that is not JSON (`undefined`, a BigInt, a cycle): code `invalid_output`.
// `log.info(...)` (also `trace`, `debug`, `warn`, `error`) writes to the engine's log, tagged with
// the run and step; `console.log` goes to the sandbox's captured stdout.

import { log as hostLog } from 'weft:step/host@1.0.0';

/** A step failure: a stable machine-readable `code`, a message, and whether to retry. */
export class StepError extends Error {
  constructor(code, message, { retryable = false } = {}) {
    super(message);
    this.name = 'StepError';
    this.code = String(code);
    this.retryable = Boolean(retryable);
  }
}

/** `log.info('text')`: a line in the engine's log. */
export const log = Object.freeze({
  trace: (message) => hostLog('trace', String(message)),
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
});

// componentize-js turns a thrown `{ payload }` into the `err` of a `result`.
function failure(code, message, retryable = false) {
  return { payload: { code, message, retryable } };
}

/**
 * The world's exports, `{ describe, run }`, from a step's description and its
 * `run(input, ctx) -> output` function over plain values. The schemas (JSON Schema objects) are
 * what `describe` reports; the engine does not enforce them: check the input in `run`.
 */
export function step({ name, version, description = '', inputSchema, outputSchema, run }) {
  if (typeof run !== 'function') {
    throw new TypeError('step({ run }): run must be a function');
  }
  const described = {
    name,
    version,
    description,
    inputSchema: JSON.stringify(inputSchema ?? { type: 'object' }),
    outputSchema: JSON.stringify(outputSchema ?? { type: 'object' }),
  };
  return {
    describe() {
      return described;
    },
    run(ctx, input) {
      let value;
      try {
        value = JSON.parse(input);
      } catch (e) {
        throw failure('invalid_input', `the input is not JSON: ${e.message}`);
      }
      const context = Object.freeze({ runId: ctx.runId, stepId: ctx.stepId, attempt: ctx.attempt });
      let output;
      try {
        output = run(value, context);
      } catch (e) {
        if (e instanceof StepError) {
          throw failure(e.code, e.message, e.retryable);
        }
        log.error(e && e.stack ? e.stack : String(e));
        const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
        throw failure('internal_error', message);
      }
      if (output !== null && typeof output === 'object' && typeof output.then === 'function') {
        throw failure('invalid_output', 'run returned a Promise: steps are synchronous');
      }
      let text;
      try {
        text = JSON.stringify(output);
      } catch (e) {
        throw failure('invalid_output', `the output is not JSON: ${e.message}`);
      }
      if (text === undefined) {
        throw failure('invalid_output', `the output is not JSON: ${typeof output}`);
      }
      return text;
    },
  };
}
