/*
 * c-checksum: CRC-32 and Adler-32 of a payload.
 *
 * {"data": "abc"} -> {"bytes": 3, "crc32": "352441c2", "adler32": "024d0127"}
 * {"data": "YWJj", "encoding": "base64"} -> the same (the checksums are of the decoded bytes).
 */
#include "checksum.h"
#include "weft_step.h"

static const char INPUT_SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"data\":{\"type\":\"string\",\"description\":\"The payload.\"},"
    "\"encoding\":{\"enum\":[\"utf8\",\"hex\",\"base64\"],\"default\":\"utf8\","
    "\"description\":\"How data encodes the bytes: its UTF-8 text, hex or base64.\"}},"
    "\"required\":[\"data\"],\"additionalProperties\":false}";
static const char OUTPUT_SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"bytes\":{\"type\":\"integer\",\"description\":\"How many bytes were checksummed.\"},"
    "\"crc32\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{8}$\"},"
    "\"adler32\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{8}$\"}},"
    "\"required\":[\"bytes\",\"crc32\",\"adler32\"]}";

void exports_step_describe(step_step_description_t *ret) {
    weft_describe(ret, "c-checksum", "0.1.0",
                  "CRC-32 and Adler-32 of a payload given as UTF-8 text, hex or base64.",
                  INPUT_SCHEMA, OUTPUT_SCHEMA);
}

static bool is(const weft_json_member_t *m, const char *text) {
    return m->string_len == strlen(text) && memcmp(m->string, text, m->string_len) == 0;
}

bool exports_step_run(step_step_context_t *ctx, step_string_t *input, step_string_t *ret,
                      step_step_error_t *err) {
    weft_input_t in;
    if (!weft_input_parse(&in, ctx, input, err)) return false;

    static const char *const fields[] = {"data", "encoding", NULL};
    const weft_json_member_t *unknown = weft_json_unknown(&in.object, fields);
    if (unknown) {
        return weft_input_fail(&in, err, "invalid_input", false, "unknown field `%s`", unknown->key);
    }
    const weft_json_member_t *data = weft_json_get(&in.object, "data");
    if (!data) return weft_input_fail(&in, err, "invalid_input", false, "`data` is required");
    if (data->type != WEFT_JSON_STRING) {
        return weft_input_fail(&in, err, "invalid_input", false, "`data` must be a string");
    }
    const weft_json_member_t *encoding = weft_json_get(&in.object, "encoding");
    if (encoding && (encoding->type != WEFT_JSON_STRING ||
                     !(is(encoding, "utf8") || is(encoding, "hex") || is(encoding, "base64")))) {
        return weft_input_fail(&in, err, "invalid_input", false,
                               "`encoding` must be \"utf8\", \"hex\" or \"base64\"");
    }

    const uint8_t *bytes = (const uint8_t *)data->string;
    size_t len = data->string_len;
    uint8_t *decoded = NULL;
    if (encoding && !is(encoding, "utf8")) {
        bool hex = is(encoding, "hex");
        decoded = malloc(data->string_len / 4 * 3 + 4);
        if (!decoded) return weft_input_fail(&in, err, "out_of_memory", false, "cannot decode `data`");
        size_t bad = 0;
        long n = hex ? hex_decode(data->string, data->string_len, decoded, &bad)
                     : base64_decode(data->string, data->string_len, decoded, &bad);
        if (n < 0) {
            free(decoded);
            return weft_input_fail(&in, err, "invalid_input", false,
                                   "`data` is not %s (at character %zu)", hex ? "hex" : "base64", bad);
        }
        bytes = decoded;
        len = (size_t)n;
    }

    uint32_t crc = crc32_of(bytes, len);
    uint32_t adler = adler32_of(bytes, len);
    weft_log(WEFT_DEBUG, "checksummed %zu bytes", len);

    weft_buf_t out = WEFT_BUF_INIT;
    weft_buf_printf(&out, "{\"bytes\":%zu,\"crc32\":\"%08x\",\"adler32\":\"%08x\"}", len,
                    (unsigned)crc, (unsigned)adler);
    free(decoded);
    weft_input_free(&in);
    return weft_ok(ret, err, &out);
}
