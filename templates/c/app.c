/*
 * c-hello: a Weft step in C. {"name": "Ada"} -> {"greeting": "Hello, Ada!"}.
 *
 * Start here: change the description, the schemas and exports_step_run. `weft_step.h` is the
 * helper (logging, errors, JSON input and output); `step.h` is generated from wit/step.wit by
 * `cargo xtask plugins`.
 */
#include "weft_step.h"

static const char INPUT_SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":1},"
    "\"simulateOutage\":{\"type\":\"boolean\"}},\"required\":[\"name\"],"
    "\"additionalProperties\":false}";
static const char OUTPUT_SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{\"greeting\":{\"type\":\"string\"}},"
    "\"required\":[\"greeting\"]}";

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

void exports_step_describe(step_step_description_t *ret) {
    weft_describe(ret, "c-hello", "0.1.0", "Greets `name` (a template to start C steps from).",
                  INPUT_SCHEMA, OUTPUT_SCHEMA);
}

bool exports_step_run(step_step_context_t *ctx, step_string_t *input, step_string_t *ret,
                      step_step_error_t *err) {
    weft_input_t in;
    if (!weft_input_parse(&in, ctx, input, err)) return false;

    static const char *const fields[] = {"name", "simulateOutage", NULL};
    const weft_json_member_t *unknown = weft_json_unknown(&in.object, fields);
    if (unknown) {
        return weft_input_fail(&in, err, "invalid_input", false, "unknown field `%s`", unknown->key);
    }
    const weft_json_member_t *name = weft_json_get(&in.object, "name");
    /* The name without surrounding blanks. */
    const char *text = name && name->type == WEFT_JSON_STRING ? name->string : "";
    size_t len = name && name->type == WEFT_JSON_STRING ? name->string_len : 0;
    while (len > 0 && is_blank(text[0])) text++, len--;
    while (len > 0 && is_blank(text[len - 1])) len--;
    if (len == 0) {
        return weft_input_fail(&in, err, "invalid_input", false, "`name` must be a non-empty string");
    }
    const weft_json_member_t *outage = weft_json_get(&in.object, "simulateOutage");
    if (outage && outage->type == WEFT_JSON_TRUE) {
        /* A transient failure: the engine may retry the step (with backoff). */
        return weft_input_fail(&in, err, "unavailable", true, "simulated outage, try again");
    }
    weft_log(WEFT_INFO, "greeting %.*s (attempt %u)", (int)len, text, (unsigned)ctx->attempt);

    weft_buf_t greeting = WEFT_BUF_INIT;
    weft_buf_append_str(&greeting, "Hello, ");
    weft_buf_append(&greeting, text, len);
    weft_buf_append_str(&greeting, "!");
    weft_buf_t out = WEFT_BUF_INIT;
    weft_buf_append_str(&out, "{\"greeting\":");
    weft_buf_json_string(&out, greeting.data, greeting.len);
    weft_buf_append_str(&out, "}");
    out.failed |= greeting.failed;
    weft_buf_free(&greeting);
    weft_input_free(&in);
    return weft_ok(ret, err, &out);
}
