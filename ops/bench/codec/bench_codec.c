/* bench_codec.c - throughput of the data path's CPU work: CRC32C and the zstd block codec, on 64 KiB blocks.
 *
 *   bench_codec [MIB]     MIB = data processed per measurement (default 256; each is also capped at ~2 s)
 *
 * CRC32C: ISA-L (common/crc32c) against a byte-at-a-time table CRC, over the same 64 KiB blocks; all the
 * results must agree, so the figure is of a real computation. Codec: for levels -1, 1 (the default) and 3,
 * on text-like data (log lines from a fixed-seed generator: timestamps, component names, source locations,
 * hex ids, paths, numbers - roughly what a file system stores in logs and text files) and on random data,
 * the encode and decode speed (MB/s of raw data, 1 MB = 10^6 bytes), the compression ratio (raw / stored)
 * and the share of blocks stored raw. The block pool is 64 MiB of distinct blocks, larger than the caches,
 * as in a real write stream; CRC32C is also measured on one hot 64 KiB block (compute-bound figure). Every
 * decoded block is checked once against its input (outside the timing).
 */
#include "common/clock.h"
#include "common/codec.h"
#include "common/crc32c.h"
#include "common/util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLOCK       CODEC_BLOCK_SIZE
#define POOL_BLOCKS 1024 /* 64 MiB: twice this machine's 32 MiB L3 */
#define TIME_CAP_NS (2 * NS_PER_SEC)

static uint64_t budget_bytes = 256ull << 20;

/* ---- data ------------------------------------------------------------------------------------------ */

/* Log-like text: "2026-11-26T05:03:12.123Z cs3 I chunk_store.c:412 chunk 0x3f2a v7: wrote block 12 ..." */
static void gen_log_text(uint8_t *buf, size_t len, uint64_t seed)
{
    static const char *const comps[] = {"meta1", "meta2", "meta3", "cs1", "cs2", "cs3", "cs4", "fuse"};
    static const char *const lvls = "EWIIIIDD";
    static const char *const files[] = {"paxos.c", "chunk_store.c", "replicate.c", "namespace.c",
                                        "rpc.c",   "lease.c",       "fuse_ops.c"};
    static const char *const fmts[] = {
        "chunk 0x%llx v%u: wrote block %u (%u bytes) to /data/cs%u in %u us",
        "chunk 0x%llx v%u: crc mismatch in block %u on /data/cs%u, re-fetching from replica %u",
        "paxos: instance %llu accepted by %u of %u acceptors in %u us",
        "lease 0x%llx for inode %u renewed, %u ms left, holder client %u",
        "rpc %llu /synod.Chunk/Write from 10.0.%u.%u: deadline exceeded after %u ms",
        "inode %llu: setattr mode 0%o uid %u gid %u size %u",
    };
    uint64_t ms = 1795000000000ull; /* late 2026 */
    size_t n = 0;
    while (n < len) {
        uint64_t r = util_rand_next(&seed), r2 = util_rand_next(&seed);
        ms += r % 50;
        char line[320];
        time_t sec = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&sec, &tm);
        int k = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        k += snprintf(line + k, sizeof(line) - (size_t)k, ".%03uZ %s %c %s:%u ", (unsigned)(ms % 1000),
                      comps[r % ARRAY_SIZE(comps)], lvls[(r >> 3) % 8], files[(r >> 6) % ARRAY_SIZE(files)],
                      (unsigned)(r >> 10) % 900 + 20);
        unsigned a = (unsigned)(r2 % 1000), b = (unsigned)(r2 >> 10) % 70000, c = (unsigned)(r2 >> 30) % 8;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        k += snprintf(line + k, sizeof(line) - (size_t)k, fmts[(r >> 20) % ARRAY_SIZE(fmts)],
                      (unsigned long long)(r2 >> 20) % 0x100000, a % 16 + 1, a % 64, b, c + 1, b % 5000);
#pragma GCC diagnostic pop
        line[k++] = '\n';
        for (int i = 0; i < k && n < len; i++)
            buf[n++] = (uint8_t)line[i];
    }
}

static void gen_random(uint8_t *buf, size_t len, uint64_t seed)
{
    for (size_t i = 0; i + 8 <= len; i += 8)
        put_le64(buf + i, util_rand_next(&seed));
}

/* ---- CRC32C ---------------------------------------------------------------------------------------- */

static uint32_t crc_table[256];

static void table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int b = 0; b < 8; b++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t table_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ---- the timed loop -------------------------------------------------------------------------------- */

enum op { OP_CRC_ISAL, OP_CRC_TABLE, OP_ENCODE, OP_DECODE };

/* One measurement: op applied to blocks 0..nblocks-1 of pool in turn. */
struct run {
    enum op op;
    const uint8_t *pool;
    size_t nblocks;
    uint32_t crc_xor;       /* CRC ops: xor of the CRCs of the first pass, to compare implementations */
    struct codec *codec;    /* codec ops: */
    uint8_t *stored;        /* nblocks slots of codec_bound(BLOCK) bytes */
    size_t *lens;           /* stored length of each block */
    enum codec_flag *flags; /* flag of each block */
    uint8_t *out;           /* one decoded block */
};

static void run_block(struct run *r, size_t i, bool first_pass)
{
    const uint8_t *src = r->pool + i * BLOCK;
    uint8_t *slot = r->stored + i * codec_bound(BLOCK);
    uint32_t crc;
    switch (r->op) {
    case OP_CRC_ISAL:
    case OP_CRC_TABLE:
        crc = r->op == OP_CRC_ISAL ? crc32c(0, src, BLOCK) : table_crc32c(0, src, BLOCK);
        if (first_pass)
            r->crc_xor ^= crc;
        break;
    case OP_ENCODE:
        if (codec_encode(r->codec, src, BLOCK, slot, codec_bound(BLOCK), &r->lens[i], &r->flags[i]) != 0)
            PANIC("encode of block %zu failed", i);
        break;
    case OP_DECODE:
        if (codec_decode(r->codec, r->flags[i], slot, r->lens[i], r->out, BLOCK) != 0)
            PANIC("decode of block %zu failed", i);
        break;
    }
}

/* Run r over its blocks, round and round, until budget bytes are done or (after at least one full pass)
 * the time cap is reached. Returns bytes per nanosecond, i.e. GB/s. */
static double timed(struct run *r, uint64_t budget)
{
    uint64_t pass = (uint64_t)r->nblocks * BLOCK, done = 0, t0 = clk_mono_ns(), t;
    for (size_t i = 0;; i = (i + 1) % r->nblocks) {
        run_block(r, i, done < pass);
        done += BLOCK;
        t = clk_mono_ns();
        if (done >= budget || (t - t0 > TIME_CAP_NS && done >= pass))
            break;
    }
    return (double)done / (double)(t - t0);
}

/* ---- CRC32C ---------------------------------------------------------------------------------------- */

static void run_crc(const uint8_t *pool)
{
    struct run isal = {.op = OP_CRC_ISAL, .pool = pool, .nblocks = POOL_BLOCKS};
    struct run table = {.op = OP_CRC_TABLE, .pool = pool, .nblocks = POOL_BLOCKS};
    struct run hot = {.op = OP_CRC_ISAL, .pool = pool, .nblocks = 1};
    struct run hot_table = {.op = OP_CRC_TABLE, .pool = pool, .nblocks = 1};
    table_init();
    /* ISA-L is ~100x the table: give it a proportionally larger budget so its timing is not noise */
    double hot_gbs = timed(&hot, budget_bytes * 32);
    double isal_gbs = timed(&isal, budget_bytes * 32);
    double table_gbs = timed(&table, budget_bytes);
    timed(&hot_table, BLOCK);
    if (isal.crc_xor != table.crc_xor || hot.crc_xor != hot_table.crc_xor) {
        fprintf(stderr, "bench_codec: crc mismatch: isa-l 0x%08x/0x%08x, table 0x%08x/0x%08x\n", isal.crc_xor,
                hot.crc_xor, table.crc_xor, hot_table.crc_xor);
        exit(1);
    }
    printf("CRC32C, 64 KiB blocks (ISA-L and the table agree on every block: xor 0x%08x)\n", isal.crc_xor);
    printf("  %-40s %8.2f GB/s\n", "ISA-L crc32_iscsi, one hot block", hot_gbs);
    printf("  %-40s %8.2f GB/s\n", "ISA-L crc32_iscsi, 64 MiB pool", isal_gbs);
    printf("  %-40s %8.2f GB/s\n", "byte-wise table (reference), 64 MiB pool", table_gbs);
    printf("  %-40s %8.1fx\n\n", "ISA-L / table, 64 MiB pool", isal_gbs / table_gbs);
}

/* ---- codec ----------------------------------------------------------------------------------------- */

struct result {
    double enc_mbs, dec_mbs, ratio, raw_pct;
};

static struct result bench_level(const uint8_t *pool, int level)
{
    size_t stored_len = (size_t)POOL_BLOCKS * codec_bound(BLOCK);
    struct run run = {
        .pool = pool,
        .nblocks = POOL_BLOCKS,
        .codec = codec_new(level),
        .stored = xmalloc(stored_len),
        .lens = xcalloc(POOL_BLOCKS, sizeof(size_t)),
        .flags = xcalloc(POOL_BLOCKS, sizeof(enum codec_flag)),
        .out = xmalloc(BLOCK),
    };
    struct result r = {0};
    memset(run.stored, 0, stored_len); /* fault the pages in outside the timing */

    /* encode: the first pass fills stored[]; later passes overwrite it with the same bytes */
    run.op = OP_ENCODE;
    r.enc_mbs = timed(&run, budget_bytes) * 1e3;
    uint64_t stored_total = 0, raw_blocks = 0;
    run.op = OP_DECODE;
    for (size_t i = 0; i < POOL_BLOCKS; i++) { /* check every block once, untimed */
        stored_total += run.lens[i];
        raw_blocks += run.flags[i] == CODEC_RAW;
        run_block(&run, i, false);
        if (memcmp(run.out, pool + i * BLOCK, BLOCK) != 0)
            PANIC("block %zu at level %d does not round-trip", i, level);
    }
    r.ratio = (double)POOL_BLOCKS * BLOCK / (double)stored_total;
    r.raw_pct = 100.0 * (double)raw_blocks / POOL_BLOCKS;

    r.dec_mbs = timed(&run, budget_bytes) * 1e3;
    free(run.out);
    free(run.flags);
    free(run.lens);
    free(run.stored);
    codec_free(run.codec);
    return r;
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && atoi(argv[1]) <= 0)) {
        fprintf(stderr, "usage: bench_codec [MIB per measurement, default 256]\n");
        return 2;
    }
    if (argc == 2)
        budget_bytes = (uint64_t)atoi(argv[1]) << 20;

    size_t pool_len = (size_t)POOL_BLOCKS * BLOCK;
    uint8_t *text = xmalloc(pool_len), *rnd = xmalloc(pool_len);
    gen_log_text(text, pool_len, 1);
    gen_random(rnd, pool_len, 2);

    run_crc(rnd);

    static const int levels[] = {-1, 1, 3};
    const struct {
        const char *name;
        const uint8_t *pool;
    } kinds[] = {{"text (log lines)", text}, {"random", rnd}};
    printf("zstd block codec, 64 KiB blocks, %llu MiB per figure (or ~2 s), MB = 10^6 bytes\n",
           (unsigned long long)(budget_bytes >> 20));
    printf("  %-18s %5s %12s %12s %8s %8s\n", "data", "level", "encode MB/s", "decode MB/s", "ratio",
           "raw %");
    for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
        for (size_t l = 0; l < ARRAY_SIZE(levels); l++) {
            struct result r = bench_level(kinds[k].pool, levels[l]);
            printf("  %-18s %5d%s %11.0f %12.0f %8.2f %8.0f\n", kinds[k].name, levels[l],
                   levels[l] == CODEC_DEFAULT_LEVEL ? "*" : " ", r.enc_mbs, r.dec_mbs, r.ratio, r.raw_pct);
            fflush(stdout);
        }
    }
    printf(
        "  (* = CODEC_DEFAULT_LEVEL; ratio = raw bytes / stored bytes; raw %% = blocks stored verbatim)\n");
    free(text);
    free(rnd);
    return 0;
}
