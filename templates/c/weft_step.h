/*
 * Weft step helper for C (header only). Shipped with the template (templates/c/); copy it along
 * unchanged.
 *
 * A C step implements the two exports of the generated bindings (`step.h`, made from
 * wit/step.wit by `cargo xtask plugins`), with these helpers:
 *
 *   void exports_step_describe(step_step_description_t *ret) {
 *       weft_describe(ret, "my-step", "0.1.0", "What it does.", INPUT_SCHEMA, OUTPUT_SCHEMA);
 *   }
 *
 *   bool exports_step_run(step_step_context_t *ctx, step_string_t *input, step_string_t *ret,
 *                         step_step_error_t *err) {
 *       weft_input_t in;                       // the input object, parsed
 *       if (!weft_input_parse(&in, ctx, input, err)) return false;
 *       const weft_json_member_t *name = weft_json_get(&in.object, "name");
 *       if (!name || name->type != WEFT_JSON_STRING)
 *           return weft_input_fail(&in, err, "invalid_input", false, "`name` must be a string");
 *       weft_buf_t out = WEFT_BUF_INIT;
 *       weft_buf_append_str(&out, "{\"greeting\":");
 *       weft_buf_json_string(&out, name->string, name->string_len);
 *       weft_buf_append_str(&out, "}");
 *       weft_input_free(&in);
 *       return weft_ok(ret, err, &out);
 *   }
 *
 * Ownership (the component model's rules, as the bindings implement them): `ctx` and `input`
 * belong to the step, which frees them (`weft_input_free` does); what goes into `ret` and `err`
 * must be heap memory, freed by the bindings after the call (the helpers do this right).
 *
 * Errors: `weft_fail(err, code, retryable, fmt, ...)` fills the WIT `step-error` and returns
 * false (`retryable` true for a transient problem: the engine may retry the step).
 * Logging: `weft_log(WEFT_INFO, fmt, ...)` writes a line to the engine's log.
 * JSON: `weft_json_parse_object` validates a whole document that must be an object and gives its
 * top-level members (strings decoded); `weft_buf_json_string` writes a JSON string.
 */
#ifndef WEFT_STEP_H
#define WEFT_STEP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "step.h"

/* ---- logging ------------------------------------------------------------------------------ */

#define WEFT_TRACE WEFT_STEP_HOST_LOG_LEVEL_TRACE
#define WEFT_DEBUG WEFT_STEP_HOST_LOG_LEVEL_DEBUG
#define WEFT_INFO WEFT_STEP_HOST_LOG_LEVEL_INFO
#define WEFT_WARN WEFT_STEP_HOST_LOG_LEVEL_WARN
#define WEFT_ERROR WEFT_STEP_HOST_LOG_LEVEL_ERROR

/* A printf-style line in the engine's log (cut at 1 KiB). */
__attribute__((format(printf, 2, 3))) static inline void weft_log(weft_step_host_log_level_t level,
                                                                   const char *fmt, ...) {
    char line[1024];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(line, sizeof line, fmt, args);
    va_end(args);
    if (n < 0) return;
    step_string_t message = {(uint8_t *)line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1};
    weft_step_host_log(level, &message);
}

/* ---- a growing byte buffer ---------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed: the contents are incomplete */
} weft_buf_t;

#define WEFT_BUF_INIT {NULL, 0, 0, false}

static inline bool weft_buf_reserve(weft_buf_t *b, size_t more) {
    if (b->failed) return false;
    if (more <= b->cap - b->len) return true;
    if (more > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < more) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) {
        b->failed = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

static inline void weft_buf_append(weft_buf_t *b, const char *s, size_t n) {
    if (n == 0 || !weft_buf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static inline void weft_buf_append_str(weft_buf_t *b, const char *s) {
    weft_buf_append(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static inline void weft_buf_printf(weft_buf_t *b,
                                                                          const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    va_list again;
    va_copy(again, args);
    int n = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    if (n >= 0 && weft_buf_reserve(b, (size_t)n + 1)) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    } else if (n < 0) {
        b->failed = true;
    }
    va_end(again);
}

/* `s` (UTF-8, `n` bytes) as a JSON string, quotes included. */
static inline void weft_buf_json_string(weft_buf_t *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    weft_buf_append(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *escape = NULL;
        char unicode[6];
        switch (c) {
        case '"': escape = "\\\""; break;
        case '\\': escape = "\\\\"; break;
        case '\n': escape = "\\n"; break;
        case '\r': escape = "\\r"; break;
        case '\t': escape = "\\t"; break;
        default:
            if (c < 0x20) {
                memcpy(unicode, "\\u00", 4);
                unicode[4] = hex[c >> 4];
                unicode[5] = hex[c & 15];
            }
        }
        if (!escape && c >= 0x20) continue;
        weft_buf_append(b, s + start, i - start);
        if (escape) weft_buf_append_str(b, escape);
        else weft_buf_append(b, unicode, sizeof unicode);
        start = i + 1;
    }
    weft_buf_append(b, s + start, n - start);
    weft_buf_append(b, "\"", 1);
}

static inline void weft_buf_free(weft_buf_t *b) {
    free(b->data);
    *b = (weft_buf_t)WEFT_BUF_INIT;
}

/* ---- results ------------------------------------------------------------------------------ */

/* A heap copy of `s` into a WIT string (empty on allocation failure). */
static inline void weft_string_copy(step_string_t *out, const char *s, size_t n) {
    out->ptr = NULL;
    out->len = 0;
    if (n == 0) return;
    uint8_t *copy = malloc(n);
    if (!copy) return;
    memcpy(copy, s, n);
    out->ptr = copy;
    out->len = n;
}

/* Fill the step's error and return false. */
__attribute__((format(printf, 4, 5))) static inline bool weft_fail(step_step_error_t *err,
                                                                    const char *code,
                                                                    bool retryable,
                                                                    const char *fmt, ...) {
    char message[1024];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof message) n = sizeof message - 1;
    weft_string_copy(&err->code, code, strlen(code));
    weft_string_copy(&err->message, message, (size_t)n);
    err->retryable = retryable;
    return false;
}

/* Hand `out` (JSON text) over as the step's output and return true; false with an
 * `out_of_memory` error if building it ran out of memory. */
static inline bool weft_ok(step_string_t *ret, step_step_error_t *err, weft_buf_t *out) {
    if (out->failed) {
        weft_buf_free(out);
        return weft_fail(err, "out_of_memory", false, "the output did not fit in memory");
    }
    ret->ptr = (uint8_t *)out->data;
    ret->len = out->len;
    *out = (weft_buf_t)WEFT_BUF_INIT;
    return true;
}

/* What `describe` returns (each string copied to the heap, as the bindings free them). */
static inline void weft_describe(step_step_description_t *ret, const char *name,
                                 const char *version, const char *description,
                                 const char *input_schema, const char *output_schema) {
    weft_string_copy(&ret->name, name, strlen(name));
    weft_string_copy(&ret->version, version, strlen(version));
    weft_string_copy(&ret->description, description, strlen(description));
    weft_string_copy(&ret->input_schema, input_schema, strlen(input_schema));
    weft_string_copy(&ret->output_schema, output_schema, strlen(output_schema));
}

/* ---- JSON input --------------------------------------------------------------------------- */

typedef enum {
    WEFT_JSON_NULL,
    WEFT_JSON_FALSE,
    WEFT_JSON_TRUE,
    WEFT_JSON_NUMBER,
    WEFT_JSON_STRING,
    WEFT_JSON_ARRAY,
    WEFT_JSON_OBJECT,
} weft_json_type_t;

/* One top-level member of an object. */
typedef struct {
    char *key; /* decoded, NUL-terminated (it may also hold NULs: see key_len) */
    size_t key_len;
    weft_json_type_t type;
    char *string; /* for WEFT_JSON_STRING: decoded, NUL-terminated */
    size_t string_len;
    const char *raw; /* the value's JSON text in the input */
    size_t raw_len;
} weft_json_member_t;

typedef struct {
    weft_json_member_t *members;
    size_t count;
} weft_json_object_t;

#define WEFT_JSON_MAX_DEPTH 64

typedef struct {
    const char *start, *p, *end;
    const char *error;
} weft_json_parser_t;

static inline void weft_json_ws(weft_json_parser_t *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static inline bool weft_json_err(weft_json_parser_t *j, const char *error) {
    if (!j->error) j->error = error;
    return false;
}

static inline int weft_json_hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

/* A string at j->p (a `"`); decoded into a new heap buffer when `out` is not NULL. */
static inline bool weft_json_string(weft_json_parser_t *j, char **out, size_t *out_len) {
    j->p++; /* the opening quote */
    char *buf = NULL;
    size_t len = 0;
    if (out) {
        /* Decoding never makes a string longer than its JSON text. */
        const char *close = j->p;
        while (close < j->end && *close != '"') close += (*close == '\\') ? 2 : 1;
        size_t cap = (close < j->end ? (size_t)(close - j->p) : (size_t)(j->end - j->p)) + 1;
        buf = malloc(cap);
        if (!buf) return weft_json_err(j, "out of memory");
    }
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) {
            free(buf);
            return weft_json_err(j, "a control character in a string");
        }
        if (c != '\\') {
            if (buf) buf[len++] = (char)c;
            j->p++;
            continue;
        }
        if (j->end - j->p < 2) break;
        char e = j->p[1];
        j->p += 2;
        char simple = 0;
        switch (e) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': break;
        default: free(buf); return weft_json_err(j, "an unknown escape in a string");
        }
        if (simple) {
            if (buf) buf[len++] = simple;
            continue;
        }
        if (j->end - j->p < 4) break;
        long cp = weft_json_hex4(j->p);
        j->p += 4;
        if (cp < 0) {
            free(buf);
            return weft_json_err(j, "a bad \\u escape");
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            int low = (j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') ? weft_json_hex4(j->p + 2) : -1;
            if (low < 0xDC00 || low > 0xDFFF) {
                free(buf);
                return weft_json_err(j, "a lone surrogate in a \\u escape");
            }
            j->p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            free(buf);
            return weft_json_err(j, "a lone surrogate in a \\u escape");
        }
        if (!buf) continue;
        /* UTF-8: at most 4 bytes, never more than the 6+ bytes of the escape. */
        if (cp < 0x80) {
            buf[len++] = (char)cp;
        } else if (cp < 0x800) {
            buf[len++] = (char)(0xC0 | (cp >> 6));
            buf[len++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            buf[len++] = (char)(0xE0 | (cp >> 12));
            buf[len++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            buf[len++] = (char)(0x80 | (cp & 0x3F));
        } else {
            buf[len++] = (char)(0xF0 | (cp >> 18));
            buf[len++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            buf[len++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            buf[len++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    if (j->p >= j->end) {
        free(buf);
        return weft_json_err(j, "an unterminated string");
    }
    j->p++; /* the closing quote */
    if (out) {
        buf[len] = '\0';
        *out = buf;
        *out_len = len;
    }
    return true;
}

static inline bool weft_json_digits(weft_json_parser_t *j) {
    const char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    return j->p > start;
}

static inline bool weft_json_number(weft_json_parser_t *j) {
    if (*j->p == '-') j->p++;
    if (j->p < j->end && *j->p == '0') j->p++;
    else if (!weft_json_digits(j)) return weft_json_err(j, "a bad number");
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!weft_json_digits(j)) return weft_json_err(j, "a bad number");
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (!weft_json_digits(j)) return weft_json_err(j, "a bad number");
    }
    return true;
}

static inline bool weft_json_literal(weft_json_parser_t *j, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return weft_json_err(j, "an unexpected character");
    j->p += n;
    return true;
}

/* Any value at j->p (validated and skipped); its type in `type`. */
static inline bool weft_json_value(weft_json_parser_t *j, int depth, weft_json_type_t *type) {
    weft_json_ws(j);
    if (j->p >= j->end) return weft_json_err(j, "a value is missing");
    if (depth > WEFT_JSON_MAX_DEPTH) return weft_json_err(j, "nested too deeply");
    weft_json_type_t ignored;
    switch (*j->p) {
    case '"': *type = WEFT_JSON_STRING; return weft_json_string(j, NULL, NULL);
    case 't': *type = WEFT_JSON_TRUE; return weft_json_literal(j, "true");
    case 'f': *type = WEFT_JSON_FALSE; return weft_json_literal(j, "false");
    case 'n': *type = WEFT_JSON_NULL; return weft_json_literal(j, "null");
    case '[':
    case '{': {
        bool object = *j->p == '{';
        char close = object ? '}' : ']';
        *type = object ? WEFT_JSON_OBJECT : WEFT_JSON_ARRAY;
        j->p++;
        weft_json_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return true;
        }
        for (;;) {
            if (object) {
                weft_json_ws(j);
                if (j->p >= j->end || *j->p != '"') return weft_json_err(j, "an object key must be a string");
                if (!weft_json_string(j, NULL, NULL)) return false;
                weft_json_ws(j);
                if (j->p >= j->end || *j->p != ':') return weft_json_err(j, "`:` expected after a key");
                j->p++;
            }
            if (!weft_json_value(j, depth + 1, &ignored)) return false;
            weft_json_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                return true;
            }
            return weft_json_err(j, object ? "`,` or `}` expected" : "`,` or `]` expected");
        }
    }
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) {
            *type = WEFT_JSON_NUMBER;
            return weft_json_number(j);
        }
        return weft_json_err(j, "an unexpected character");
    }
}

static inline void weft_json_object_free(weft_json_object_t *o) {
    for (size_t i = 0; i < o->count; i++) {
        free(o->members[i].key);
        free(o->members[i].string);
    }
    free(o->members);
    o->members = NULL;
    o->count = 0;
}

/* Parse all of `json` as one object. On failure: false, `*error` says what and where (in a
 * static or `error_buf` text), and `out` holds nothing. Duplicate keys are refused. */
static inline bool weft_json_parse_object(const char *json, size_t len, weft_json_object_t *out,
                                          char *error_buf, size_t error_size) {
    weft_json_parser_t j = {json, json, json + len, NULL};
    out->members = NULL;
    out->count = 0;
    size_t cap = 0;
    weft_json_ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        if (error_buf && error_size > 0) snprintf(error_buf, error_size, "the input must be a JSON object");
        return false;
    }
    j.p++;
    weft_json_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            weft_json_ws(&j);
            if (j.p >= j.end || *j.p != '"') {
                weft_json_err(&j, "an object key must be a string");
                goto fail;
            }
            if (out->count == cap) {
                size_t more = cap ? cap * 2 : 8;
                weft_json_member_t *members = realloc(out->members, more * sizeof *members);
                if (!members) {
                    weft_json_err(&j, "out of memory");
                    goto fail;
                }
                out->members = members;
                cap = more;
            }
            weft_json_member_t *m = &out->members[out->count];
            memset(m, 0, sizeof *m);
            if (!weft_json_string(&j, &m->key, &m->key_len)) goto fail;
            out->count++;
            for (size_t i = 0; i + 1 < out->count; i++) {
                if (out->members[i].key_len == m->key_len && memcmp(out->members[i].key, m->key, m->key_len) == 0) {
                    weft_json_err(&j, "a duplicate key");
                    goto fail;
                }
            }
            weft_json_ws(&j);
            if (j.p >= j.end || *j.p != ':') {
                weft_json_err(&j, "`:` expected after a key");
                goto fail;
            }
            j.p++;
            weft_json_ws(&j);
            m->raw = j.p;
            if (j.p < j.end && *j.p == '"') {
                m->type = WEFT_JSON_STRING;
                if (!weft_json_string(&j, &m->string, &m->string_len)) goto fail;
            } else if (!weft_json_value(&j, 1, &m->type)) {
                goto fail;
            }
            m->raw_len = (size_t)(j.p - m->raw);
            weft_json_ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == '}') {
                j.p++;
                break;
            }
            weft_json_err(&j, "`,` or `}` expected");
            goto fail;
        }
    }
    weft_json_ws(&j);
    if (j.p != j.end) {
        weft_json_err(&j, "text after the object");
        goto fail;
    }
    return true;
fail:
    if (error_buf && error_size > 0) {
        snprintf(error_buf, error_size, "invalid JSON at byte %zu: %s", (size_t)(j.p - j.start),
                 j.error ? j.error : "unknown error");
    }
    weft_json_object_free(out);
    return false;
}

/* The member named `key`, or NULL. */
static inline const weft_json_member_t *weft_json_get(const weft_json_object_t *o, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < o->count; i++) {
        if (o->members[i].key_len == n && memcmp(o->members[i].key, key, n) == 0) return &o->members[i];
    }
    return NULL;
}

/* The first member whose key is not in `allowed` (a NULL-terminated list), or NULL. */
static inline const weft_json_member_t *weft_json_unknown(const weft_json_object_t *o,
                                                          const char *const *allowed) {
    for (size_t i = 0; i < o->count; i++) {
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++) {
            known = strlen(*a) == o->members[i].key_len && memcmp(*a, o->members[i].key, o->members[i].key_len) == 0;
        }
        if (!known) return &o->members[i];
    }
    return NULL;
}

/* ---- the step's input --------------------------------------------------------------------- */

/* The call's context and its input, parsed as a JSON object. */
typedef struct {
    step_step_context_t *ctx;
    step_string_t *input;
    weft_json_object_t object;
} weft_input_t;

/* Release the context and the input (they are the step's to free). */
static inline void weft_input_free(weft_input_t *in) {
    weft_json_object_free(&in->object);
    if (in->ctx) step_step_context_free(in->ctx);
    if (in->input) step_string_free(in->input);
    in->ctx = NULL;
    in->input = NULL;
}

/* Parse the input; on failure, free everything and fill `err` (`invalid_input`). */
static inline bool weft_input_parse(weft_input_t *in, step_step_context_t *ctx, step_string_t *input,
                                    step_step_error_t *err) {
    char error[160];
    in->ctx = ctx;
    in->input = input;
    if (!weft_json_parse_object((const char *)input->ptr, input->len, &in->object, error, sizeof error)) {
        weft_input_free(in);
        return weft_fail(err, "invalid_input", false, "%s", error);
    }
    return true;
}

/* `weft_fail`, after freeing the input. */
#define weft_input_fail(in, err, code, retryable, ...) \
    (weft_input_free(in), weft_fail((err), (code), (retryable), __VA_ARGS__))

#endif /* WEFT_STEP_H */
