/* bench_cstore.c - local chunk store throughput: 1 MiB writes and reads of compressible (log-like text) and
 * incompressible data at several zstd levels, with the sync cost reported separately.
 *
 * usage: bench_cstore [dir (default /tmp)] [MiB per run (default 256)]
 * Reads hit the page cache (the data was just written): they measure the store's CPU path (pread, CRC32C,
 * zstd decode), which is what bounds a chunkserver serving hot data.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "tests/chunk/chunk_test.h"

#define MiB (1u << 20)

struct reader {
    struct cstore *s;
    uint64_t first_id, nchunks;
    uint8_t *buf;
};

static void *read_chunks(void *arg)
{
    struct reader *r = arg;
    for (uint64_t id = r->first_id; id < r->first_id + r->nchunks; id++)
        for (uint64_t off = 0; off < CSTORE_CHUNK_SIZE; off += MiB)
            if (cstore_read(r->s, id, 1, off, r->buf, MiB, NULL) != 0)
                PANIC("read failed");
    cstore_thread_release();
    return NULL;
}

static double read_mbps(struct cstore *s, uint64_t nchunks, int threads)
{
    struct reader rd[2];
    pthread_t th[2];
    uint64_t t0 = clk_mono_ns();
    for (int i = 0; i < threads; i++) {
        rd[i] = (struct reader){ s, 1 + i * nchunks / threads, nchunks / threads, xmalloc(MiB) };
        pthread_create(&th[i], NULL, read_chunks, &rd[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        free(rd[i].buf);
    }
    return (double)(nchunks / threads * threads) * CSTORE_CHUNK_SIZE / MiB / ((double)(clk_mono_ns() - t0) / 1e9);
}

static void run(const char *base, const char *kind, const uint8_t *data, size_t data_len, int level, uint64_t mib)
{
    char *dir = ct_mkdtemp(base);
    const char *dirs[] = { dir };
    struct cstore_config cfg = { .dirs = dirs, .ndirs = 1, .level = level };
    struct cstore *s;
    if (cstore_open(&cfg, &s))
        PANIC("open");
    uint64_t nchunks = mib / 64, total = nchunks * CSTORE_CHUNK_SIZE;
    uint64_t t0 = clk_mono_ns();
    for (uint64_t id = 1; id <= nchunks; id++) {
        if (cstore_create(s, id, 1))
            PANIC("create");
        for (uint64_t off = 0; off < CSTORE_CHUNK_SIZE; off += MiB) {
            uint64_t src = ((id - 1) * CSTORE_CHUNK_SIZE + off) % (data_len - MiB + 1);
            if (cstore_write(s, id, 1, off, data + src, MiB))
                PANIC("write");
        }
    }
    uint64_t t1 = clk_mono_ns();
    for (uint64_t id = 1; id <= nchunks; id++)
        if (cstore_sync(s, id, 1))
            PANIC("sync");
    uint64_t t2 = clk_mono_ns();
    struct cstore_dir_stat ds;
    cstore_dir_stats(s, &ds);
    double w = (double)total / MiB / ((double)(t1 - t0) / 1e9), ws = (double)total / MiB / ((double)(t2 - t0) / 1e9);
    double r1 = read_mbps(s, nchunks, 1), r2 = read_mbps(s, nchunks, 2);
    printf("%-6s %5d %8.2f %10.0f %10.0f %9.0f %9.0f %9.0f\n", kind, level,
           (double)ds.logical_bytes / (double)(cstore_stored_bytes(s) - nchunks * 128 * 1024), w, ws,
           (double)(t2 - t1) / 1e6 / (double)nchunks, r1, r2);
    fflush(stdout);
    cstore_close(s);
    ct_rmrf(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "/tmp";
    uint64_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 256;
    if (mib < 128)
        mib = 128;
    log_init("bench", LOG_LVL_WARN);
    size_t data_len = 64 * MiB + MiB;
    uint8_t *text = xmalloc(data_len), *rnd = xmalloc(data_len);
    uint64_t rng = 1;
    ct_fill_text(&rng, text, data_len);
    ct_fill_random(&rng, rnd, data_len);
    printf("chunk store on %s, %llu MiB per run, 1 MiB writes/reads, reads from the page cache\n", base,
           (unsigned long long)mib);
    printf("%-6s %5s %8s %10s %10s %9s %9s %9s\n", "data", "level", "ratio", "write MB/s", "+sync MB/s",
           "sync ms/ch", "read 1thr", "read 2thr");
    static const int levels[] = { CODEC_DEFAULT_LEVEL, -1, 3 };
    for (size_t i = 0; i < ARRAY_SIZE(levels); i++)
        run(base, "text", text, data_len, levels[i], mib);
    run(base, "random", rnd, data_len, CODEC_DEFAULT_LEVEL, mib);
    cstore_thread_release();
    free(text);
    free(rnd);
    return 0;
}
