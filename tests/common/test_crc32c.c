/* test_crc32c.c - unit tests of common/crc32c: the standard check value and the RFC 3720 (iSCSI) vectors,
 * chaining over random splits, agreement with a bitwise reference on random buffers (fixed seed) at every
 * length and alignment around ISA-L's SIMD strides, length 0, and buffers longer than INT_MAX. */
#include "common/crc32c.h"

#include "common/util.h"
#include "tests/test.h"

#include <limits.h>
#include <sys/mman.h>

/* The reference model: reflected CRC-32C, polynomial 0x82F63B78, init and final xor 0xFFFFFFFF, one bit
 * at a time. Slow and obviously right. */
static uint32_t ref_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void fill_random(uint8_t *buf, size_t len, uint64_t *seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)util_rand_next(seed);
}

static void test_vectors(void)
{
    uint8_t buf[32];
    T_EQU(crc32c(0, "123456789", 9), 0xE3069283u);
    T_EQU(ref_crc32c(0, "123456789", 9), 0xE3069283u);

    memset(buf, 0, sizeof(buf));
    T_EQU(crc32c(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xFF, sizeof(buf));
    T_EQU(crc32c(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    T_EQU(crc32c(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    T_EQU(crc32c(0, buf, 32), 0x113FDB5Cu);

    /* RFC 3720 B.4: an iSCSI Read (10) command PDU */
    static const uint8_t pdu[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
        0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    T_EQU(crc32c(0, pdu, sizeof(pdu)), 0xD9963A56u);
}

static void test_len0(void)
{
    T_EQU(crc32c(0, NULL, 0), 0);
    T_EQU(crc32c(0x12345678u, NULL, 0), 0x12345678u);
    T_EQU(crc32c(0xE3069283u, "x", 0), 0xE3069283u);
}

static void test_reference(void)
{
    uint64_t seed = 0xC0FFEE;
    uint8_t *buf = xmalloc(70000);
    fill_random(buf, 70000, &seed);
    /* every length 0..1100 at every alignment 0..15: covers ISA-L's head/tail handling and SIMD strides */
    for (size_t align = 0; align < 16; align++)
        for (size_t len = 0; len <= 1100; len++)
            if (crc32c(0, buf + align, len) != ref_crc32c(0, buf + align, len))
                T_FAIL("mismatch at align %zu len %zu", align, len);
    /* random lengths up to 64 KiB + a bit, random starting CRCs */
    for (int i = 0; i < 200; i++) {
        size_t off = util_rand_next(&seed) % 64;
        size_t len = util_rand_next(&seed) % (70000 - 64);
        uint32_t init = (uint32_t)util_rand_next(&seed);
        if (crc32c(init, buf + off, len) != ref_crc32c(init, buf + off, len))
            T_FAIL("mismatch at off %zu len %zu init 0x%08x", off, len, init);
    }
    free(buf);
}

static void test_chaining(void)
{
    uint64_t seed = 42;
    size_t n = 1u << 17;
    uint8_t *buf = xmalloc(n);
    fill_random(buf, n, &seed);
    uint32_t whole = crc32c(0, buf, n);
    T_EQU(whole, ref_crc32c(0, buf, n));
    for (int round = 0; round < 300; round++) {
        /* split into 1..8 random pieces (including empty ones) and chain */
        uint32_t crc = 0;
        size_t pos = 0;
        int pieces = 1 + (int)(util_rand_next(&seed) % 8);
        for (int p = 0; p < pieces - 1; p++) {
            size_t len = util_rand_next(&seed) % (n - pos + 1);
            if (round % 3 == 0)
                len %= 97; /* many short pieces too */
            crc = crc32c(crc, buf + pos, len);
            pos += len;
        }
        crc = crc32c(crc, buf + pos, n - pos);
        if (crc != whole)
            T_FAIL("round %d: chained 0x%08x != whole 0x%08x", round, crc, whole);
    }
    /* byte at a time */
    uint32_t crc = 0;
    for (size_t i = 0; i < 4096; i++)
        crc = crc32c(crc, buf + i, 1);
    T_EQU(crc, crc32c(0, buf, 4096));
    free(buf);
}

/* A length above INT_MAX goes through the piecewise loop; chaining smaller pieces (each one ISA-L call; the
 * chaining itself is checked against the reference above) is the expected value. The buffer is untouched
 * anonymous memory: zero pages, no RSS cost. */
static void test_huge(void)
{
    size_t n = (size_t)INT_MAX + 4097;
    uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "   skipped: cannot map %zu bytes\n", n);
        return;
    }
    p[n - 1] = 0x5A; /* so the tail matters */
    p[12345] = 0xA5;
    /* pieces below crc32c.c's 1 GiB stride, so each is one ISA-L call and the boundaries differ from its own
     */
    size_t a = 700u << 20, b = 900u << 20;
    uint32_t want = crc32c(crc32c(crc32c(0, p, a), p + a, b), p + a + b, n - a - b);
    T_EQU(crc32c(0, p, n), want);
    /* the tail alone against the reference, to pin the expected value to something independent */
    T_EQU(crc32c(0, p + n - 10000, 10000), ref_crc32c(0, p + n - 10000, 10000));
    munmap(p, n);
}

int main(void)
{
    T_RUN(test_vectors);
    T_RUN(test_len0);
    T_RUN(test_reference);
    T_RUN(test_chaining);
    T_RUN(test_huge);
    fprintf(stderr, "ok\n");
    return 0;
}
