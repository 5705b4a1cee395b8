/* CRC-32 and Adler-32, and the payload decodings of c-checksum. Pure C, no Weft types. */
#ifndef CHECKSUM_H
#define CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32/ISO-HDLC (zlib, gzip, PNG): reflected polynomial 0xEDB88320, init and xorout ~0. */
uint32_t crc32_of(const uint8_t *data, size_t len);

/* Adler-32 (zlib, RFC 1950). */
uint32_t adler32_of(const uint8_t *data, size_t len);

/* Decode hex (upper or lower case, even length) into `out` (room for len / 2 bytes); returns the
 * decoded length, or -1 with the offending offset in *bad. */
long hex_decode(const char *text, size_t len, uint8_t *out, size_t *bad);

/* Decode standard base64 (RFC 4648 alphabet, `=` padding optional, no whitespace) into `out`
 * (room for len * 3 / 4 + 3 bytes); returns the decoded length, or -1 with the offending offset
 * in *bad. */
long base64_decode(const char *text, size_t len, uint8_t *out, size_t *bad);

#endif
