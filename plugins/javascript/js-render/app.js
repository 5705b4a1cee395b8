// js-render: renders a text template with values (the template language is in README.md).
//
// `{"template": "Hi {{name}}!{{#each items}} {{this}}{{/each}}", "values": {"name": "Ada", "items": [1, 2]}}`
// -> `{"text": "Hi Ada! 1 2"}`.

import { compile, render, TemplateError, MAX_OUTPUT } from './render.js';
import { step, StepError, log } from './weft-step.js';

const inputSchema = {
  type: 'object',
  properties: {
    template: { type: 'string', description: 'The template text (README.md: {{path}}, {{#if}}, {{#each}}, filters).' },
    values: { type: 'object', description: 'What the template reads; {} when absent.' },
  },
  required: ['template'],
  additionalProperties: false,
};

const outputSchema = {
  type: 'object',
  properties: { text: { type: 'string', maxLength: MAX_OUTPUT } },
  required: ['text'],
};

function renderStep(input, ctx) {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new StepError('invalid_input', 'the input must be an object');
  }
  const unknown = Object.keys(input).filter((key) => !(key in inputSchema.properties));
  if (unknown.length > 0) {
    throw new StepError('invalid_input', `unknown input fields: ${unknown.join(', ')}`);
  }
  const { template, values = {} } = input;
  if (typeof template !== 'string') {
    throw new StepError('invalid_input', '`template` must be a string');
  }
  if (values === null || typeof values !== 'object' || Array.isArray(values)) {
    throw new StepError('invalid_input', '`values` must be an object');
  }
  try {
    const text = render(compile(template), values);
    log.debug(`rendered ${template.length} characters of template into ${text.length}`);
    return { text };
  } catch (e) {
    if (e instanceof TemplateError) {
      log.warn(`${e.code}: ${e.message}`);
      throw new StepError(e.code, e.message);
    }
    throw e;
  }
}

// The component's exports: the world's `describe` and `run`.
export const { describe, run } = step({
  name: 'js-render',
  version: '0.1.0',
  description: 'Renders a text template: {{path | filter}}, {{#if}}, {{#unless}}, {{#each}}.',
  inputSchema,
  outputSchema,
  run: renderStep,
});
