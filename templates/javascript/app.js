// js-hello: a Weft step in JavaScript. `{"name": "Ada"}` -> `{"greeting": "Hello, Ada!"}`.
//
// Start here: change `run`, the schemas and the description. `weft-step.js` is the helper that
// turns `run` into the component's `describe`/`run` exports; leave it as it is.

import { step, StepError, log } from './weft-step.js';

const inputSchema = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1 },
    simulateOutage: { type: 'boolean' },
  },
  required: ['name'],
  additionalProperties: false,
};

const outputSchema = {
  type: 'object',
  properties: { greeting: { type: 'string' } },
  required: ['greeting'],
};

function greet(input, ctx) {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new StepError('invalid_input', 'the input must be an object');
  }
  const unknown = Object.keys(input).filter((key) => !(key in inputSchema.properties));
  if (unknown.length > 0) {
    throw new StepError('invalid_input', `unknown fields: ${unknown.join(', ')}`);
  }
  const { name } = input;
  if (typeof name !== 'string' || name.trim() === '') {
    throw new StepError('invalid_input', '`name` must be a non-empty string');
  }
  if (input.simulateOutage) {
    // A transient failure: the engine may retry the step (with backoff).
    throw new StepError('unavailable', 'simulated outage, try again', { retryable: true });
  }
  log.info(`greeting ${JSON.stringify(name)} (run ${ctx.runId}, attempt ${ctx.attempt})`);
  return { greeting: `Hello, ${name.trim()}!` };
}

// The component's exports: the world's `describe` and `run`.
export const { describe, run } = step({
  name: 'js-hello',
  version: '0.1.0',
  description: 'Greets `name` (a template to start JavaScript steps from).',
  inputSchema,
  outputSchema,
  run: greet,
});
