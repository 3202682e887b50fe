/* crc32c.h - CRC32C (Castagnoli), the checksum of every stored block and of data end to end.
 *
 * Backed by ISA-L's crc32_iscsi (folding with PCLMULQDQ/SSE4.2 where the CPU has them). Standard
 * semantics: crc32c(0, "123456789", 9) == 0xE3069283, and crc32c(crc32c(0, a, n), b, m) equals the CRC of
 * a followed by b, so a CRC can be extended piece by piece. Thread-safe, pure.
 */
#ifndef SYNOD_CRC32C_H
#define SYNOD_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif
