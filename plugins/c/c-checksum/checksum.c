/* CRC-32, Adler-32, hex and base64: see checksum.h. */
#include "checksum.h"

#include <stdbool.h>

static uint32_t crc_table[256];
static bool crc_table_ready;

static void crc_table_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
    crc_table_ready = true;
}

uint32_t crc32_of(const uint8_t *data, size_t len) {
    if (!crc_table_ready) crc_table_init();
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) c = crc_table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t adler32_of(const uint8_t *data, size_t len) {
    /* 5552: the most bytes summed before the 32-bit sums could overflow (zlib's NMAX). */
    const uint32_t mod = 65521u;
    uint32_t a = 1, b = 0;
    while (len > 0) {
        size_t chunk = len < 5552 ? len : 5552;
        len -= chunk;
        while (chunk--) {
            a += *data++;
            b += a;
        }
        a %= mod;
        b %= mod;
    }
    return (b << 16) | a;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long hex_decode(const char *text, size_t len, uint8_t *out, size_t *bad) {
    if (len % 2 != 0) {
        *bad = len;
        return -1;
    }
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
        if (hi < 0 || lo < 0) {
            *bad = hi < 0 ? i : i + 1;
            return -1;
        }
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

static int base64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

long base64_decode(const char *text, size_t len, uint8_t *out, size_t *bad) {
    /* Padding: up to two `=` at the end, and only to complete a group of four. */
    size_t data_len = len;
    while (data_len > 0 && len - data_len < 2 && text[data_len - 1] == '=') data_len--;
    if (data_len != len && len % 4 != 0) {
        *bad = data_len;
        return -1;
    }
    if (data_len % 4 == 1) {
        *bad = data_len - 1;
        return -1;
    }
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < data_len; i++) {
        int v = base64_value(text[i]);
        if (v < 0) {
            *bad = i;
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {
        /* Non-zero leftover bits: not the canonical encoding of any bytes. */
        *bad = data_len - 1;
        return -1;
    }
    return (long)n;
}
