/* util.h - allocation that never fails, always-on assertions, and small helpers shared by every module.
 *
 * Out-of-memory is not an error we handle at call sites: xmalloc and friends abort with a message, so code
 * stays straight-line (the MooseFS/git convention). ASSERT is for invariants of our own state and stays on
 * in release builds; untrusted input (network, disk) must be validated and answered with an error, never
 * asserted.
 */
#ifndef SYNOD_UTIL_H
#define SYNOD_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define UNUSED(x) ((void)(x))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Abort the process with a message naming the source location. Never returns. */
_Noreturn void util_panic(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define PANIC(...) util_panic(__FILE__, __LINE__, __VA_ARGS__)
/* Always-on invariant check (not compiled out by NDEBUG). */
#define ASSERT(cond)                                                                                        \
    do {                                                                                                    \
        if (UNLIKELY(!(cond)))                                                                              \
            util_panic(__FILE__, __LINE__, "assertion failed: %s", #cond);                                  \
    } while (0)

/* Allocation that aborts on failure; xmalloc(0) returns a unique non-NULL pointer. Caller frees with free(). */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string; caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Little-endian fixed-width encode/decode for on-disk formats. Cannot fail. */
static inline void put_le32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);
}
static inline uint32_t get_le32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline void put_le64(void *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t get_le64(const void *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32((const uint8_t *)p + 4) << 32;
}
/* Big-endian 64-bit (for LevelDB keys that must sort numerically). */
static inline void put_be64(void *p, uint64_t v)
{
    uint8_t *b = p;
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
}
static inline uint64_t get_be64(const void *p)
{
    const uint8_t *b = p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

/* Protobuf-style base-128 varints (wire framing, snapshot records). util_put_varint writes at most 10 bytes
 * and returns how many; util_get_varint reads one at p (< end) and returns the bytes used, or 0 if it is
 * truncated or longer than 10 bytes. Neither can fail otherwise. */
static inline size_t util_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}
static inline size_t util_get_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (size_t i = 0; i < 10 && p + i < end; i++) {
        r |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = r;
            return i + 1;
        }
    }
    return 0;
}

/* Deterministic PRNG (xorshift64*), for seeded tests, simulators and jitter. Not thread-safe per state. */
static inline uint64_t util_rand_next(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif
