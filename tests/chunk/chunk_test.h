/* chunk_test.h - helpers shared by the chunk store tests and benchmark: scratch dirs, data generators,
 * and the on-disk layout constants the corruption tests poke at (they must match chunk_store.c). */
#ifndef SYNOD_CHUNK_TEST_H
#define SYNOD_CHUNK_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkserver/chunk_store.h"
#include "common/util.h"

#define CT_DATA_OFF (128u * 1024u)
#define CT_TABLE_OFF(slot) (65536u + (unsigned)(slot) * 32768u)
#define CT_SLOT_OFF(b, slot) (CT_DATA_OFF + (uint64_t)(slot) * CSTORE_CHUNK_SIZE + (uint64_t)(b) * CSTORE_BLOCK_SIZE)

/* A fresh scratch dir under base (default /tmp); caller frees the string and removes it with ct_rmrf. */
static inline char *ct_mkdtemp(const char *base)
{
    char *tmpl = xasprintf("%s/synod-chunk-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        exit(1);
    }
    return tmpl;
}

static inline void ct_rmrf(const char *path)
{
    char *cmd = xasprintf("rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: %s failed\n", cmd);
    free(cmd);
}

/* Random bytes (incompressible). */
static inline void ct_fill_random(uint64_t *rng, void *buf, size_t len)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = util_rand_next(rng);
        memcpy(p + i, &v, MIN((size_t)8, len - i));
    }
}

/* Log-like text (realistic compressible data: ~3-5x at zstd level 1). */
static inline void ct_fill_text(uint64_t *rng, void *buf, size_t len)
{
    static const char *lvl[] = { "INFO", "WARN", "DEBUG", "ERROR" };
    static const char *words[] = { "request", "completed", "chunk", "server", "latency", "client", "write",
                                   "read", "block", "replica", "timeout", "retry", "session", "lease",
                                   "commit", "user", "path", "/var/lib/app", "status=200", "bytes" };
    char *p = buf;
    size_t n = 0;
    while (n < len) {
        char line[256];
        uint64_t r = util_rand_next(rng);
        int k = snprintf(line, sizeof(line), "2026-11-26T05:%02u:%02u.%03uZ %s [worker-%u] ", (unsigned)(r % 60),
                         (unsigned)(r >> 8) % 60, (unsigned)(r >> 16) % 1000, lvl[(r >> 26) % 4],
                         (unsigned)(r >> 30) % 16);
        int nw = 4 + (int)((r >> 40) % 8);
        for (int i = 0; i < nw && k < 200; i++) {
            uint64_t w = util_rand_next(rng);
            k += snprintf(line + k, sizeof(line) - (size_t)k, "%s%s", words[w % ARRAY_SIZE(words)],
                          (w >> 20) % 5 == 0 ? "=" : " ");
            if ((w >> 20) % 5 == 0)
                k += snprintf(line + k, sizeof(line) - (size_t)k, "%u ", (unsigned)(w >> 32) % 100000);
        }
        line[k++] = '\n';
        size_t m = MIN((size_t)k, len - n);
        memcpy(p + n, line, m);
        n += m;
    }
}

#endif
