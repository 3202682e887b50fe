/* crc32c.c - see crc32c.h. CRC32C on top of ISA-L's crc32_iscsi.
 *
 * ISA-L's crc32_iscsi(buf, len, init) is the raw reflected CRC register update: it neither inverts the
 * initial value nor the result. The standard CRC32C (iSCSI, RFC 3720; ext4, btrfs, SSE4.2 crc32) starts
 * from 0xFFFFFFFF and inverts at the end. Passing ~crc in and inverting the result out gives the standard
 * value (crc32c(0, "123456789", 9) == 0xE3069283) and makes chaining work: the inversion applied at the end
 * of one piece is undone at the start of the next, so crc32c(crc32c(0, a), b) == crc32c(0, a || b).
 *
 * ISA-L takes an int length, so longer buffers are fed in pieces of 1 GiB (chaining in register form).
 */
#include "common/crc32c.h"

#include <isa-l/crc.h>

#define CRC32C_PIECE (1u << 30) /* < INT_MAX, and a multiple of every SIMD stride ISA-L uses */

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t reg = ~crc;
    while (len > 0) {
        size_t n = len < CRC32C_PIECE ? len : CRC32C_PIECE;
        /* ISA-L's prototype lacks const; it only reads the buffer. */
        reg = crc32_iscsi((unsigned char *)p, (int)n, reg);
        p += n;
        len -= n;
    }
    return ~reg;
}
