// The template language of js-render (README.md has the rules), with no Weft imports: `compile`
// parses a template into a tree, `render` fills it from values. Errors are `TemplateError`s with
// a stable code: `invalid_template`, `missing_variable`, `not_iterable`, `output_too_large`.

export const MAX_OUTPUT = 1_000_000;
const MAX_DEPTH = 64;

export class TemplateError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'TemplateError';
    this.code = code;
  }
}

const FILTERS = {
  upper: (v) => text(v).toUpperCase(),
  lower: (v) => text(v).toLowerCase(),
  trim: (v) => text(v).trim(),
  json: (v) => JSON.stringify(v === undefined ? null : v),
  html: (v) =>
    text(v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]),
  length: (v) => {
    if (typeof v === 'string' || Array.isArray(v)) return v.length;
    if (v !== null && typeof v === 'object') return Object.keys(v).length;
    return 0;
  },
};

const PATH = /^(?:@(?:index|key|first|last)|(?:this|[A-Za-z_$][\w$-]*)(?:\.(?:[A-Za-z_$][\w$-]*|\d+))*)$/;
const BLOCKS = ['if', 'unless', 'each'];

/** How a value is written into the text: strings as they are, null as nothing, others as JSON. */
function text(value) {
  if (typeof value === 'string') return value;
  if (value === null || value === undefined) return '';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

function position(source, index) {
  const before = source.slice(0, index);
  const line = before.split('\n').length;
  const column = index - before.lastIndexOf('\n');
  return `line ${line}, column ${column}`;
}

function syntaxError(source, index, message) {
  return new TemplateError('invalid_template', `${position(source, index)}: ${message}`);
}

/** `path | filter | filter` -> `{ path, filters }`. */
function parseExpression(source, index, expression) {
  const [path, ...filters] = expression.split('|').map((part) => part.trim());
  if (!PATH.test(path)) {
    throw syntaxError(source, index, `\`${path}\` is not a variable path (e.g. user.name, items.0, this, @index)`);
  }
  for (const filter of filters) {
    if (!Object.hasOwn(FILTERS, filter)) {
      throw syntaxError(source, index, `unknown filter \`${filter}\` (${Object.keys(FILTERS).join(', ')})`);
    }
  }
  return { path, filters };
}

/** The tags and texts of `source`, in order. */
function tokenize(source) {
  const tokens = [];
  let literal = '';
  let i = 0;
  while (i < source.length) {
    const open = source.indexOf('{{', i);
    if (open < 0) {
      literal += source.slice(i);
      break;
    }
    if (open > 0 && source[open - 1] === '\\') {
      literal += source.slice(i, open - 1) + '{{';
      i = open + 2;
      continue;
    }
    literal += source.slice(i, open);
    const close = source.indexOf('}}', open + 2);
    if (close < 0) {
      throw syntaxError(source, open, '`{{` is never closed by `}}`');
    }
    tokens.push({ kind: 'text', value: literal });
    literal = '';
    tokens.push({ kind: 'tag', body: source.slice(open + 2, close).trim(), index: open });
    i = close + 2;
  }
  tokens.push({ kind: 'text', value: literal });
  return tokens;
}

/** A tag alone on its line (besides blanks) takes the whole line with it, as in Mustache. */
function dropStandaloneLines(tokens) {
  for (let t = 1; t < tokens.length - 1; t += 2) {
    const body = tokens[t].body;
    const standalone = /^[#/!]|^else$/.test(body);
    if (!standalone) continue;
    const before = tokens[t - 1];
    const after = tokens[t + 1];
    const lineStart = before.value.lastIndexOf('\n');
    const beforeBlank = /^[ \t]*$/.test(before.value.slice(lineStart + 1)) && (lineStart >= 0 || t === 1);
    const afterMatch = /^[ \t]*(\r?\n|$)/.exec(after.value);
    const afterEnds = afterMatch && (afterMatch[1] !== '' || t + 1 === tokens.length - 1);
    if (beforeBlank && afterEnds) {
      before.value = before.value.slice(0, lineStart + 1);
      after.value = after.value.slice(afterMatch[0].length);
    }
  }
}

/** Parse `source` into a tree of nodes: text, value, if, each. */
export function compile(source) {
  const tokens = tokenize(source);
  dropStandaloneLines(tokens);
  const root = { kind: 'root', body: [] };
  const stack = [root];
  let current = root.body;
  for (const token of tokens) {
    if (token.kind === 'text') {
      if (token.value) current.push({ kind: 'text', value: token.value });
      continue;
    }
    const { body, index } = token;
    const top = stack[stack.length - 1];
    if (body.startsWith('!')) continue;
    if (body === '') throw syntaxError(source, index, 'empty `{{ }}`');
    if (body.startsWith('#')) {
      const match = /^#(\w+)\s+(.+)$/s.exec(body);
      if (!match || !BLOCKS.includes(match[1])) {
        throw syntaxError(source, index, `unknown block \`{{${body}}}\` (#if, #unless, #each)`);
      }
      if (stack.length > MAX_DEPTH) throw syntaxError(source, index, `blocks nested deeper than ${MAX_DEPTH}`);
      const expression = parseExpression(source, index, match[2]);
      const node = { kind: match[1], ...expression, body: [], otherwise: [], index };
      current.push(node);
      stack.push(node);
      current = node.body;
    } else if (body === 'else') {
      if (top.kind === 'root') throw syntaxError(source, index, '`{{else}}` outside a block');
      if (top.inElse) throw syntaxError(source, index, `second \`{{else}}\` in {{#${top.kind}}}`);
      top.inElse = true;
      current = top.otherwise;
    } else if (body.startsWith('/')) {
      const name = body.slice(1).trim();
      if (top.kind === 'root') throw syntaxError(source, index, `\`{{${body}}}\` closes no block`);
      if (name !== top.kind) {
        throw syntaxError(source, index, `\`{{${body}}}\` closes {{#${top.kind}}} (opened at ${position(source, top.index)})`);
      }
      stack.pop();
      current = lastOpenList(stack[stack.length - 1]);
    } else {
      current.push({ kind: 'value', ...parseExpression(source, index, body), index });
    }
  }
  if (stack.length > 1) {
    const open = stack[stack.length - 1];
    throw syntaxError(source, open.index, `{{#${open.kind}}} is never closed by {{/${open.kind}}}`);
  }
  return root;
}

/** The list a parent block is filling: its `otherwise` once `{{else}}` was seen. */
function lastOpenList(node) {
  if (node.kind === 'root') return node.body;
  return node.inElse ? node.otherwise : node.body;
}

/** Render `tree` (from `compile`) with `values`; throws `TemplateError`. */
export function render(tree, values) {
  const missing = new Set();
  const out = { parts: [], length: 0 };
  const scopes = [{ value: values, loop: null }];
  renderNodes(tree.body, scopes, missing, out);
  if (missing.size > 0) {
    throw new TemplateError('missing_variable', `no value for ${[...missing].join(', ')}`);
  }
  return out.parts.join('');
}

function emit(out, piece) {
  out.length += piece.length;
  if (out.length > MAX_OUTPUT) {
    throw new TemplateError('output_too_large', `the text would be longer than ${MAX_OUTPUT} characters`);
  }
  out.parts.push(piece);
}

function renderNodes(nodes, scopes, missing, out) {
  for (const node of nodes) {
    switch (node.kind) {
      case 'text':
        emit(out, node.value);
        break;
      case 'value': {
        const found = lookup(node.path, scopes);
        if (!found.ok) {
          missing.add(node.path);
          break;
        }
        emit(out, text(applyFilters(found.value, node.filters)));
        break;
      }
      case 'if':
      case 'unless': {
        const found = lookup(node.path, scopes);
        const value = found.ok ? applyFilters(found.value, node.filters) : undefined;
        const yes = truthy(value) !== (node.kind === 'unless');
        renderNodes(yes ? node.body : node.otherwise, scopes, missing, out);
        break;
      }
      case 'each': {
        const found = lookup(node.path, scopes);
        if (!found.ok) {
          missing.add(node.path);
          break;
        }
        const value = applyFilters(found.value, node.filters);
        let entries;
        if (Array.isArray(value)) entries = value.map((item, i) => [i, item]);
        else if (value === null) entries = [];
        else if (typeof value === 'object') entries = Object.entries(value);
        else throw new TemplateError('not_iterable', `{{#each ${node.path}}}: ${typeof value} is not an array or object`);
        if (entries.length === 0) {
          renderNodes(node.otherwise, scopes, missing, out);
          break;
        }
        entries.forEach(([key, item], i) => {
          const loop = { index: i, key, first: i === 0, last: i === entries.length - 1 };
          scopes.push({ value: item, loop });
          renderNodes(node.body, scopes, missing, out);
          scopes.pop();
        });
        break;
      }
      default:
        throw new Error(`unknown node ${node.kind}`);
    }
  }
}

function applyFilters(value, filters) {
  return filters.reduce((v, f) => FILTERS[f](v), value);
}

function truthy(value) {
  if (Array.isArray(value)) return value.length > 0;
  if (value !== null && typeof value === 'object') return Object.keys(value).length > 0;
  return Boolean(value);
}

/** `{ ok, value }`: the value at `path`, looked up from the innermost scope outwards. */
function lookup(path, scopes) {
  if (path.startsWith('@')) {
    const frame = [...scopes].reverse().find((s) => s.loop);
    if (!frame) return { ok: false };
    return { ok: true, value: frame.loop[path.slice(1)] };
  }
  const [head, ...rest] = path.split('.');
  let start;
  if (head === 'this') {
    start = scopes[scopes.length - 1].value;
  } else {
    const scope = [...scopes].reverse().find((s) => isObject(s.value) && Object.hasOwn(s.value, head));
    if (!scope) return { ok: false };
    start = scope.value[head];
  }
  let value = start;
  for (const key of rest) {
    if (Array.isArray(value) && /^\d+$/.test(key) && Number(key) < value.length) value = value[Number(key)];
    else if (isObject(value) && Object.hasOwn(value, key)) value = value[key];
    else return { ok: false };
  }
  return { ok: true, value };
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
