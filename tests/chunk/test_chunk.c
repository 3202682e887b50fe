/* test_chunk.c - chunk store unit tests; `test_chunk <name>` runs one (each its own ctest process). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunk_test.h"
#include "common/clock.h"
#include "common/codec.h"
#include "common/crc32c.h"
#include "tests/test.h"

#define BS CSTORE_BLOCK_SIZE
#define ID 0x1234abcd5678ull

static char *g_dir;       /* the test's scratch dir */
static char *g_mounted;   /* a tmpfs we mounted, unmounted at exit */

static void cleanup(void)
{
    if (g_mounted) {
        if (umount2(g_mounted, MNT_DETACH) < 0)
            perror("umount");
        g_mounted = NULL;
    }
    if (g_dir)
        ct_rmrf(g_dir);
}

static struct cstore *open_store(const char *const *dirs, size_t n)
{
    struct cstore_config cfg = { .dirs = dirs, .ndirs = n };
    struct cstore *s;
    T_EQ(cstore_open(&cfg, &s), 0);
    return s;
}

static struct cstore *open1(const char *dir)
{
    return open_store(&dir, 1);
}

static char *chunk_file(const char *dir, uint64_t id, uint32_t version)
{
    return xasprintf("%s/%02x/chunk_%016llx_%08x.syc", dir, (unsigned)(id & 0xff), (unsigned long long)id, version);
}

static void poke(const char *path, uint64_t off, const void *buf, size_t len)
{
    int fd = open(path, O_RDWR);
    T_CHECK(fd >= 0);
    T_EQ(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
    close(fd);
}

static void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    T_CHECK(fd >= 0);
    uint8_t b;
    T_EQ(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x5a;
    T_EQ(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static uint64_t disk_bytes(const char *path)
{
    struct stat st;
    T_EQ(stat(path, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

/* ---- format --------------------------------------------------------------------------------------- */

/* The store's per-dir counters (kept incrementally) agree with a walk over its chunks. */
static void check_counts(struct cstore *s)
{
    size_t nd = cstore_ndirs(s), n;
    struct cstore_dir_stat *ds = xcalloc(nd, sizeof(*ds));
    uint64_t *chunks = xcalloc(nd, sizeof(*chunks)), *bytes = xcalloc(nd, sizeof(*bytes));
    struct cstore_chunk_info *v;
    cstore_dir_stats(s, ds);
    cstore_list(s, &v, &n);
    for (size_t i = 0; i < n; i++) {
        chunks[v[i].dir]++;
        bytes[v[i].dir] += v[i].length;
    }
    for (size_t d = 0; d < nd; d++) {
        T_EQ(ds[d].chunks, chunks[d]);
        T_EQ(ds[d].logical_bytes, bytes[d]);
    }
    free(v);
    free(ds);
    free(chunks);
    free(bytes);
}

static void test_format(void)
{
    struct cstore *s = open1(g_dir);
    T_EQ(cstore_create(s, ID, 7), 0);
    char *path = chunk_file(g_dir, ID, 7);
    struct stat st;
    T_EQ(stat(path, &st), 0);
    T_EQ(st.st_size, (off_t)(CT_DATA_OFF + 2 * CSTORE_CHUNK_SIZE));
    char hdr[8];
    int fd = open(path, O_RDONLY);
    T_EQ(pread(fd, hdr, 8, 0), 8);
    close(fd);
    T_MEMEQ(hdr, "SYNODCHK", 8);
    char msg[] = "hello, chunk";
    T_EQ(cstore_write(s, ID, 7, 100, msg, sizeof(msg)), 0);
    T_EQ(cstore_sync(s, ID, 7), 0);
    uint64_t len;
    T_EQ(cstore_length(s, ID, 7, &len), 0);
    T_EQ(len, 100 + sizeof(msg));
    cstore_close(s);

    s = open1(g_dir); /* the scan finds it, with its length */
    T_EQ(cstore_length(s, ID, 7, &len), 0);
    T_EQ(len, 100 + sizeof(msg));
    char buf[200];
    T_EQ(cstore_read(s, ID, 7, 0, buf, sizeof(buf), &len), 0);
    for (int i = 0; i < 100; i++)
        T_EQ(buf[i], 0);
    T_MEMEQ(buf + 100, msg, sizeof(msg));
    /* argument errors */
    T_EQ(cstore_read(s, ID, 7, CSTORE_CHUNK_SIZE - 10, buf, 11, NULL), -EINVAL);
    T_EQ(cstore_write(s, ID, 7, CSTORE_CHUNK_SIZE, buf, 1), -EINVAL);
    T_EQ(cstore_read(s, ID + 1, 7, 0, buf, 1, NULL), -ENOENT);
    struct cstore_block bl = { .index = 1024, .raw_len = 1, .stored_len = 1, .crc = crc32c(0, buf, 1) };
    T_EQ(cstore_write_stored(s, ID, 7, &bl, 1, buf, 1), -EINVAL);
    bl.index = 3;
    bl.crc ^= 1;
    T_EQ(cstore_write_stored(s, ID, 7, &bl, 1, buf, 1), -EBADMSG);
    bl.crc ^= 1;
    bl.stored_len = 2; /* raw blocks: stored_len must equal raw_len */
    T_EQ(cstore_write_stored(s, ID, 7, &bl, 1, buf, 2), -EINVAL);
    /* a bad header is set aside at startup */
    cstore_close(s);
    flip_byte(path, 20);
    s = open1(g_dir);
    T_EQ(cstore_length(s, ID, 7, &len), -ENOENT);
    char *bad = xasprintf("%s.bad", path);
    T_EQ(access(bad, F_OK), 0);
    free(bad);
    free(path);
    cstore_close(s);
}

/* ---- round trips against an in-memory reference ---------------------------------------------------- */

static void check_range(struct cstore *s, uint64_t id, uint32_t v, const uint8_t *ref, uint64_t off, size_t len)
{
    uint8_t *buf = xmalloc(len);
    T_EQ(cstore_read(s, id, v, off, buf, len, NULL), 0);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != ref[off + i])
            T_FAIL("chunk %llx: byte %llu: got %u want %u", (unsigned long long)id,
                   (unsigned long long)(off + i), buf[i], ref[off + i]);
    free(buf);
}

/* Copy a chunk block by block in stored form (the Copy RPC) and decode it by hand (the client's path). */
static void copy_and_check(struct cstore *s, uint64_t from, uint64_t to, const uint8_t *ref, uint64_t len)
{
    struct codec *cd = codec_new(1);
    struct cstore_block blocks[5];
    uint8_t *buf = xmalloc(5 * BS), *raw = xmalloc(BS);
    T_EQ(cstore_create(s, to, 1), 0);
    uint32_t next = 0;
    while (next < CSTORE_BLOCKS) {
        size_t n, used;
        uint64_t clen;
        T_EQ(cstore_read_stored(s, from, 1, next, 7, blocks, 5, buf, 5 * BS, &n, &used, &next, &clen), 0);
        T_EQ(clen, len);
        T_EQ(cstore_write_stored(s, to, 1, blocks, n, buf, used), 0);
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
            T_EQ(crc32c(0, buf + off, blocks[i].stored_len), blocks[i].crc);
            T_EQ(codec_decode(cd, blocks[i].flags, buf + off, blocks[i].stored_len, raw, blocks[i].raw_len), 0);
            T_MEMEQ(raw, ref + (uint64_t)blocks[i].index * BS, blocks[i].raw_len);
            off += blocks[i].stored_len;
        }
    }
    uint64_t l2;
    T_EQ(cstore_length(s, to, 1, &l2), 0);
    T_EQ(l2, len);
    check_range(s, to, 1, ref, 0, CSTORE_CHUNK_SIZE);
    free(buf);
    free(raw);
    codec_free(cd);
}

static void test_roundtrip(void)
{
    struct cstore *s = open1(g_dir);
    uint8_t *ref = xcalloc(1, CSTORE_CHUNK_SIZE), *data = xmalloc(4 << 20);
    uint64_t rng = 42, len = 0;
    T_EQ(cstore_create(s, ID, 1), 0);
    for (int op = 0; op < 400; op++) {
        uint64_t r = util_rand_next(&rng);
        size_t n;
        switch (r % 4) {
        case 0: n = 1 + r % 100; break;
        case 1: n = 1 + r % (3 * BS); break;
        case 2: n = BS * (1 + r % 16); break;
        default: n = 1 + r % (4 << 20); break;
        }
        uint64_t off = util_rand_next(&rng) % (CSTORE_CHUNK_SIZE - n + 1);
        if (r % 3 == 0) /* aligned */
            off -= off % BS;
        if (op < 40) /* dense at the start: many partial overwrites of the same blocks */
            off %= 4 * BS;
        if ((r >> 20) % 2)
            ct_fill_text(&rng, data, n);
        else
            ct_fill_random(&rng, data, n);
        T_EQ(cstore_write(s, ID, 1, off, data, n), 0);
        memcpy(ref + off, data, n);
        len = MAX(len, off + n);
        if (op % 17 == 0)
            T_EQ(cstore_sync(s, ID, 1), 0);
        if (op % 50 == 25) { /* reopen: the store must come back identical */
            cstore_close(s);
            s = open1(g_dir);
        }
        uint64_t roff = util_rand_next(&rng) % CSTORE_CHUNK_SIZE;
        check_range(s, ID, 1, ref, roff, (size_t)MIN((uint64_t)(1 + r % (2 << 20)), CSTORE_CHUNK_SIZE - roff));
        uint64_t l;
        T_EQ(cstore_length(s, ID, 1, &l), 0);
        T_EQ(l, len);
    }
    check_range(s, ID, 1, ref, 0, CSTORE_CHUNK_SIZE);
    copy_and_check(s, ID, ID + 1, ref, len);
    cstore_close(s);
    cstore_thread_release();
    free(ref);
    free(data);
}

/* ---- compression ----------------------------------------------------------------------------------- */

static void stored_of(struct cstore *s, uint64_t id, uint32_t b, struct cstore_block *out)
{
    uint8_t *buf = xmalloc(BS);
    size_t n, used;
    uint32_t next;
    T_EQ(cstore_read_stored(s, id, 1, b, 1, out, 1, buf, BS, &n, &used, &next, NULL), 0);
    T_EQ(n, 1);
    T_EQ(next, b + 1);
    free(buf);
}

static void test_compression(void)
{
    struct cstore *s = open1(g_dir);
    size_t n = 16 << 20;
    uint8_t *text = xmalloc(n), *rnd = xmalloc(n);
    uint64_t rng = 7;
    ct_fill_text(&rng, text, n);
    ct_fill_random(&rng, rnd, n);
    T_EQ(cstore_create(s, 1, 1), 0);
    T_EQ(cstore_create(s, 2, 1), 0);
    char *p1 = chunk_file(g_dir, 1, 1), *p2 = chunk_file(g_dir, 2, 1);
    uint64_t empty = disk_bytes(p1);
    for (size_t off = 0; off < n; off += 1 << 20) {
        T_EQ(cstore_write(s, 1, 1, off, text + off, 1 << 20), 0);
        T_EQ(cstore_write(s, 2, 1, off, rnd + off, 1 << 20), 0);
    }
    T_EQ(cstore_sync(s, 1, 1), 0);
    T_EQ(cstore_sync(s, 2, 1), 0);
    struct cstore_block b;
    stored_of(s, 1, 3, &b);
    T_EQ(b.flags, CODEC_ZSTD);
    T_CHECK(b.stored_len < BS / 2);
    stored_of(s, 2, 3, &b);
    T_EQ(b.flags, CODEC_RAW);
    T_EQ(b.stored_len, BS);
    uint64_t d1 = disk_bytes(p1) - empty, d2 = disk_bytes(p2) - empty;
    fprintf(stderr, "16 MiB: text uses %llu KiB on disk, random %llu KiB\n", (unsigned long long)d1 >> 10,
            (unsigned long long)d2 >> 10);
    T_CHECK(d2 >= n && d2 < n + n / 16);
    T_CHECK(d1 < n / 3);
    /* overwrite the random chunk with text: after the sync the old slots are punched and usage drops */
    for (int pass = 0; pass < 2; pass++)
        for (size_t off = 0; off < n; off += 1 << 20)
            T_EQ(cstore_write(s, 2, 1, off, text + off, 1 << 20), 0);
    T_EQ(cstore_sync(s, 2, 1), 0);
    uint64_t d3 = disk_bytes(p2) - empty;
    fprintf(stderr, "after overwrite with text + sync: %llu KiB\n", (unsigned long long)d3 >> 10);
    T_CHECK(d3 < n / 3);
    struct cstore_dir_stat ds;
    cstore_dir_stats(s, &ds);
    T_EQ(ds.chunks, 2);
    T_EQ(ds.logical_bytes, 2 * n);
    T_CHECK(cstore_stored_bytes(s) < n);
    check_counts(s);
    T_CHECK(ds.total_bytes > 0 && !ds.failed);
    free(p1);
    free(p2);
    free(text);
    free(rnd);
    cstore_close(s);
}

/* ---- corruption ------------------------------------------------------------------------------------- */

static void fill_block(uint8_t *buf, uint32_t b, uint32_t gen)
{
    uint64_t rng = (uint64_t)b << 32 | gen;
    ct_fill_text(&rng, buf, BS);
}

static void test_corrupt(void)
{
    struct cstore *s = open1(g_dir);
    uint8_t *v1 = xmalloc(BS), *v2 = xmalloc(BS), *buf = xmalloc(BS);
    char *path = chunk_file(g_dir, ID, 1);
    T_EQ(cstore_create(s, ID, 1), 0);
    for (uint32_t b = 0; b < 8; b++) {
        fill_block(v1, b, 1);
        T_EQ(cstore_write(s, ID, 1, (uint64_t)b * BS, v1, BS), 0);
    }
    T_EQ(cstore_sync(s, ID, 1), 0); /* blocks 0..7 at gen 1 in slot A, durable */
    fill_block(v2, 5, 2);
    T_EQ(cstore_write(s, ID, 1, 5ull * BS, v2, BS), 0); /* block 5 gen 2 in slot B, not synced */
    flip_byte(path, CT_SLOT_OFF(5, 1) + 100);            /* rot in the newest slot: older one is served */
    fill_block(v1, 5, 1);
    T_EQ(cstore_read(s, ID, 1, 5ull * BS, buf, BS, NULL), 0);
    T_MEMEQ(buf, v1, BS);
    flip_byte(path, CT_SLOT_OFF(2, 0) + 7); /* rot in a durable block with one slot: an error, never wrong bytes */
    T_EQ(cstore_read(s, ID, 1, 2ull * BS, buf, BS, NULL), -EBADMSG);
    T_EQ(cstore_read(s, ID, 1, 2ull * BS + 10, buf, 10, NULL), -EBADMSG);
    fill_block(v1, 3, 1);
    T_EQ(cstore_read(s, ID, 1, 3ull * BS, buf, BS, NULL), 0);
    T_MEMEQ(buf, v1, BS);
    /* a partial write into the corrupt block cannot merge */
    T_EQ(cstore_write(s, ID, 1, 2ull * BS + 5, "x", 1), -EBADMSG);
    /* the scrubber finds both */
    struct cstore_scrub *sc = cstore_scrub_new(s);
    struct cstore_bad_block bad[4];
    size_t nbad, total_bad = 0;
    bool done = false;
    int steps = 0, verified = 0;
    while (!done) {
        int r = cstore_scrub_step(sc, 3, bad + total_bad, ARRAY_SIZE(bad) - total_bad, &nbad, &done);
        T_CHECK(r >= 0);
        verified += r;
        total_bad += nbad;
        steps++;
    }
    cstore_scrub_free(sc);
    T_EQ(verified, 8);
    T_CHECK(steps >= 3);
    T_EQ(total_bad, 2);
    T_EQ(bad[0].block, 2);
    T_CHECK(!bad[0].fell_back);
    T_EQ(bad[1].block, 5);
    T_CHECK(bad[1].fell_back);
    struct cstore_lost *lost;
    size_t nlost;
    cstore_take_lost(s, &lost, &nlost);
    T_EQ(nlost, 1); /* reported once */
    T_EQ(lost[0].chunk_id, ID);
    T_EQ(lost[0].reason, CSTORE_LOST_CORRUPT);
    free(lost);
    /* a full overwrite repairs the block */
    fill_block(v2, 2, 9);
    T_EQ(cstore_write(s, ID, 1, 2ull * BS, v2, BS), 0);
    T_EQ(cstore_read(s, ID, 1, 2ull * BS, buf, BS, NULL), 0);
    T_MEMEQ(buf, v2, BS);
    cstore_close(s);
    free(path);
    free(v1);
    free(v2);
    free(buf);
}

/* Torn writes as a power loss could leave them: half a slot, a garbage entry, a truncated file. */
static void test_torn(void)
{
    struct cstore *s = open1(g_dir);
    uint8_t *v = xmalloc(BS), *buf = xmalloc(BS), *junk = xmalloc(BS);
    uint64_t rng = 3;
    ct_fill_random(&rng, junk, BS);
    char *path = chunk_file(g_dir, ID, 1);
    T_EQ(cstore_create(s, ID, 1), 0);
    for (uint32_t b = 0; b < 4; b++) {
        fill_block(v, b, 1);
        T_EQ(cstore_write(s, ID, 1, (uint64_t)b * BS, v, BS), 0);
    }
    T_EQ(cstore_sync(s, ID, 1), 0);
    for (uint32_t b = 0; b < 4; b++) { /* gen 2 of each block goes to slot B */
        fill_block(v, b, 2);
        T_EQ(cstore_write(s, ID, 1, (uint64_t)b * BS, v, BS), 0);
    }
    cstore_close(s);
    /* block 0: data of slot B half overwritten (entry B already says gen 2) */
    poke(path, CT_SLOT_OFF(0, 1) + 4096, junk, BS / 2);
    /* block 1: entry B torn (garbage) */
    poke(path, CT_TABLE_OFF(1) + 1 * 32 + 3, junk, 20);
    /* block 2: entry of slot B zeroed, as if it never reached the disk */
    static const uint8_t zero[32];
    poke(path, CT_TABLE_OFF(1) + 2 * 32, zero, 32);
    s = open1(g_dir);
    for (uint32_t b = 0; b < 4; b++) {
        fill_block(v, b, b == 3 ? 2 : 1);
        T_EQ(cstore_read(s, ID, 1, (uint64_t)b * BS, buf, BS, NULL), 0);
        if (memcmp(buf, v, BS) != 0)
            T_FAIL("block %u: wrong generation after torn write", b);
    }
    /* the first write after the reload must not destroy gen 1 of block 0 (the only valid copy) */
    fill_block(v, 0, 3);
    T_EQ(cstore_write(s, ID, 1, 0, v, BS / 2), 0); /* partial: merged with gen 1 */
    fill_block(buf, 0, 1);
    memcpy(buf, v, BS / 2);
    T_EQ(cstore_read(s, ID, 1, 0, v, BS, NULL), 0);
    T_MEMEQ(buf, v, BS);
    cstore_close(s);
    /* truncation inside data region B: block 3's gen 2 is cut off, gen 1 survives in A */
    T_EQ(truncate(path, (off_t)CT_SLOT_OFF(3, 1) + 1000), 0);
    s = open1(g_dir);
    fill_block(v, 3, 1);
    T_EQ(cstore_read(s, ID, 1, 3ull * BS, buf, BS, NULL), 0);
    T_MEMEQ(buf, v, BS);
    cstore_close(s);
    free(path);
    free(v);
    free(buf);
    free(junk);
}

/* ---- versions, delete, listing ------------------------------------------------------------------------ */

static void test_versions(void)
{
    struct cstore *s = open1(g_dir);
    char buf[10] = "abcdefghi";
    T_EQ(cstore_create(s, ID, 3), 0);
    T_EQ(cstore_create(s, ID, 3), 0);
    T_EQ(cstore_create(s, ID, 4), -EEXIST);
    T_EQ(cstore_write(s, ID, 3, 0, buf, 10), 0);
    T_EQ(cstore_write(s, ID, 2, 0, buf, 10), -ESTALE);
    T_EQ(cstore_read(s, ID, 4, 0, buf, 10, NULL), -ESTALE);
    T_EQ(cstore_sync(s, ID, 2), -ESTALE);
    T_EQ(cstore_set_version(s, ID, 2, 5), -ESTALE);
    T_EQ(cstore_set_version(s, ID, 3, 5), 0);
    T_EQ(cstore_read(s, ID, 3, 0, buf, 10, NULL), -ESTALE);
    T_EQ(cstore_read(s, ID, 5, 0, buf, 10, NULL), 0);
    T_STREQ(buf, "abcdefghi");
    check_counts(s);
    char *p3 = chunk_file(g_dir, ID, 3), *p5 = chunk_file(g_dir, ID, 5);
    T_CHECK(access(p3, F_OK) < 0 && access(p5, F_OK) == 0);
    T_EQ(cstore_sync(s, ID, 5), 0);
    cstore_close(s);
    s = open1(g_dir);
    uint64_t len;
    T_EQ(cstore_length(s, ID, 3, &len), -ESTALE);
    T_EQ(cstore_length(s, ID, 5, &len), 0);
    T_EQ(len, 10);
    T_EQ(cstore_delete(s, ID, 4), -ESTALE);
    T_EQ(cstore_delete(s, ID, 5), 0);
    T_EQ(cstore_length(s, ID, 5, &len), -ENOENT);
    T_EQ(cstore_delete(s, ID, CSTORE_ANY_VERSION), -ENOENT);
    T_CHECK(access(p5, F_OK) < 0);
    check_counts(s);
    /* a leftover older file of the same chunk (e.g. a stale copy) loses to the newer at startup */
    T_EQ(cstore_create(s, ID, 8), 0);
    T_EQ(cstore_create(s, ID + 1, 1), 0);
    cstore_close(s);
    char *p8 = chunk_file(g_dir, ID, 8), *p9 = chunk_file(g_dir, ID, 9);
    char *cmd = xasprintf("cp %s %s", p8, p9);
    T_EQ(system(cmd), 0);
    s = open1(g_dir);
    T_EQ(cstore_length(s, ID, 9, &len), 0);
    T_CHECK(access(p8, F_OK) < 0);
    check_counts(s);
    cstore_close(s);
    free(cmd);
    free(p3);
    free(p5);
    free(p8);
    free(p9);
}

static void test_list(void)
{
    char *d0 = xasprintf("%s/d0", g_dir), *d1 = xasprintf("%s/d1", g_dir);
    const char *dirs[] = { d0, d1 };
    struct cstore *s = open_store(dirs, 2);
    int per_dir[2] = { 0, 0 };
    for (uint64_t i = 0; i < 100; i++) {
        uint64_t id = (i * 7919) % 1000 + 1;
        T_EQ(cstore_create(s, id, (uint32_t)i + 1), 0);
        T_EQ(cstore_write(s, id, (uint32_t)i + 1, i * 1000, "z", 1), 0);
    }
    check_counts(s);
    cstore_close(s);
    s = open_store(dirs, 2);
    struct cstore_chunk_info *v;
    size_t n;
    cstore_list(s, &v, &n);
    T_EQ(n, 100);
    for (size_t k = 0; k < n; k++) {
        if (k)
            T_CHECK(v[k - 1].chunk_id < v[k].chunk_id);
        uint64_t i = v[k].version - 1;
        T_EQ(v[k].chunk_id, (i * 7919) % 1000 + 1);
        T_EQ(v[k].length, i * 1000 + 1);
        per_dir[v[k].dir]++;
    }
    fprintf(stderr, "placement: %d on d0, %d on d1\n", per_dir[0], per_dir[1]);
    T_CHECK(per_dir[0] > 20 && per_dir[1] > 20);
    struct cstore_dir_stat ds[2];
    T_EQ(cstore_ndirs(s), 2);
    cstore_dir_stats(s, ds);
    T_EQ(ds[0].chunks + ds[1].chunks, 100);
    check_counts(s);
    free(v);
    cstore_close(s);
    free(d0);
    free(d1);
}

/* ---- disk full -------------------------------------------------------------------------------------- */

static void test_enospc(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "SKIP: chunk_enospc needs root to mount a 2 MiB tmpfs\n");
        return;
    }
    if (mount("tmpfs", g_dir, "tmpfs", 0, "size=2m") < 0) {
        perror("SKIP: mount tmpfs");
        return;
    }
    g_mounted = g_dir;
    struct cstore *s = open1(g_dir);
    uint8_t *blk = xmalloc(BS), *buf = xmalloc(BS), *old = xmalloc(BS);
    uint64_t rng = 11;
    T_EQ(cstore_create(s, ID, 1), 0);
    /* block 0 synced; block 1 synced at gen 1, then gen 2 (slot B) and gen 3 (in place in B, since A holds
     * the last durable version) */
    fill_block(old, 0, 1);
    T_EQ(cstore_write(s, ID, 1, 0, old, BS), 0);
    for (uint32_t g = 1; g <= 3; g++) {
        fill_block(blk, 1, g);
        T_EQ(cstore_write(s, ID, 1, BS, blk, BS), 0);
        if (g == 1)
            T_EQ(cstore_sync(s, ID, 1), 0);
    }
    uint32_t b = 2;
    int r;
    for (;; b++) { /* fill the disk with incompressible blocks */
        ct_fill_random(&rng, blk, BS);
        r = cstore_write(s, ID, 1, (uint64_t)b * BS, blk, BS);
        if (r)
            break;
        T_CHECK(b < 64);
    }
    T_EQ(r, -ENOSPC);
    fprintf(stderr, "disk full after %u blocks\n", b - 2);
    T_EQ(cstore_read(s, ID, 1, (uint64_t)b * BS, buf, BS, NULL), 0); /* the failed block is still a hole */
    for (unsigned i = 0; i < BS; i++)
        T_EQ(buf[i], 0);
    ct_fill_random(&rng, blk, BS);
    T_EQ(cstore_write(s, ID, 1, 0, blk, BS), -ENOSPC); /* out-of-place overwrite of a durable block */
    T_EQ(cstore_read(s, ID, 1, 0, buf, BS, NULL), 0);
    T_MEMEQ(buf, old, BS);
    T_EQ(cstore_write(s, ID, 1, BS, blk, BS), -ENOSPC); /* in-place overwrite of an unsynced block */
    fill_block(old, 1, 3);
    T_EQ(cstore_read(s, ID, 1, BS, buf, BS, NULL), 0);
    T_MEMEQ(buf, old, BS);
    T_EQ(cstore_create(s, ID + 1, 1), -ENOSPC);
    uint64_t len;
    T_EQ(cstore_length(s, ID + 1, 1, &len), -ENOENT);
    T_EQ(cstore_sync(s, ID, 1), 0);
    cstore_close(s);
    s = open1(g_dir); /* and after a restart */
    T_EQ(cstore_read(s, ID, 1, BS, buf, BS, NULL), 0);
    T_MEMEQ(buf, old, BS);
    cstore_close(s);
    free(blk);
    free(buf);
    free(old);
}

/* ---- failing data dir ------------------------------------------------------------------------------- */

static void test_faildir(void)
{
    char *d0 = xasprintf("%s/d0", g_dir), *d1 = xasprintf("%s/d1", g_dir);
    const char *dirs[] = { d0, d1 };
    struct cstore *s = open_store(dirs, 2);
    for (uint64_t id = 1; id <= 40; id++) {
        T_EQ(cstore_create(s, id, 1), 0);
        T_EQ(cstore_write(s, id, 1, 0, &id, sizeof(id)), 0);
        T_EQ(cstore_sync(s, id, 1), 0);
    }
    struct cstore_chunk_info *v;
    size_t n;
    cstore_list(s, &v, &n);
    uint64_t victim = 0;
    int on1 = 0;
    for (size_t k = 0; k < n; k++)
        if (v[k].dir == 1) {
            victim = v[k].chunk_id;
            on1++;
        }
    T_CHECK(on1 > 0 && on1 < 40);
    uint64_t x;
    cstore_close(s); /* drop cached files so the next access does real I/O on the failing dir */
    s = open_store(dirs, 2);
    cstore_debug_inject_error(s, 1, EIO);
    T_EQ(cstore_read(s, victim, 1, 0, &x, sizeof(x), NULL), -EIO);
    T_EQ(cstore_read(s, victim, 1, 0, &x, sizeof(x), NULL), -ENOENT);
    struct cstore_lost *lost;
    size_t nlost;
    cstore_take_lost(s, &lost, &nlost);
    T_EQ(nlost, on1);
    for (size_t k = 0; k < nlost; k++)
        T_EQ(lost[k].reason, CSTORE_LOST_DIR_FAILED);
    free(lost);
    cstore_take_lost(s, &lost, &nlost);
    T_EQ(nlost, 0);
    free(lost);
    for (size_t k = 0; k < n; k++) {
        int r = cstore_read(s, v[k].chunk_id, 1, 0, &x, sizeof(x), NULL);
        if (v[k].dir == 1) {
            T_EQ(r, -ENOENT);
        } else {
            T_EQ(r, 0);
            T_EQ(x, v[k].chunk_id);
        }
    }
    for (uint64_t id = 100; id < 110; id++) /* new chunks go to the healthy dir */
        T_EQ(cstore_create(s, id, 1), 0);
    struct cstore_dir_stat ds[2];
    cstore_dir_stats(s, ds);
    T_CHECK(ds[1].failed && !ds[0].failed);
    T_EQ(ds[1].chunks, 0);
    T_EQ(ds[0].chunks, 40 - on1 + 10);
    check_counts(s);
    cstore_close(s);
    /* a real failure at startup: the dir was replaced by a file */
    ct_rmrf(d1);
    int fd = open(d1, O_CREAT | O_WRONLY, 0644);
    close(fd);
    s = open_store(dirs, 2);
    cstore_dir_stats(s, ds);
    T_CHECK(ds[1].failed && !ds[0].failed);
    T_EQ(cstore_read(s, 100, 1, 0, &x, sizeof(x), NULL), 0);
    cstore_close(s);
    free(v);
    free(d0);
    free(d1);
}

/* ---- concurrency ----------------------------------------------------------------------------------- */

struct worker {
    struct cstore *s;
    uint64_t id;      /* chunk to use */
    uint32_t first;   /* first block of this worker's region */
    uint32_t nblocks;
    int seed;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint8_t *ref = xcalloc(w->nblocks, BS), *buf = xmalloc(3 * BS);
    uint64_t rng = (uint64_t)w->seed;
    for (int op = 0; op < 300; op++) {
        uint64_t r = util_rand_next(&rng);
        uint64_t off = r % ((uint64_t)w->nblocks * BS);
        size_t n = (size_t)MIN((uint64_t)(1 + (r >> 24) % (3 * BS)), (uint64_t)w->nblocks * BS - off);
        if (op % 2)
            ct_fill_text(&rng, buf, n);
        else
            ct_fill_random(&rng, buf, n);
        T_EQ(cstore_write(w->s, w->id, 1, (uint64_t)w->first * BS + off, buf, n), 0);
        memcpy(ref + off, buf, n);
        if (op % 10 == 0)
            T_EQ(cstore_sync(w->s, w->id, 1), 0);
        off = util_rand_next(&rng) % ((uint64_t)w->nblocks * BS);
        n = (size_t)MIN((uint64_t)3 * BS, (uint64_t)w->nblocks * BS - off);
        T_EQ(cstore_read(w->s, w->id, 1, (uint64_t)w->first * BS + off, buf, n, NULL), 0);
        T_MEMEQ(buf, ref + off, n);
    }
    free(ref);
    free(buf);
    cstore_thread_release();
    return NULL;
}

static void *scrubber_main(void *arg)
{
    struct cstore *s = arg;
    struct cstore_scrub *sc = cstore_scrub_new(s);
    struct cstore_bad_block bad[8];
    for (int i = 0; i < 200; i++) {
        size_t nbad;
        bool done;
        T_CHECK(cstore_scrub_step(sc, 16, bad, ARRAY_SIZE(bad), &nbad, &done) >= 0);
        T_EQ(nbad, 0);
    }
    cstore_scrub_free(sc);
    cstore_thread_release();
    return NULL;
}

static void test_concurrency(void)
{
    struct cstore_config cfg = { .dirs = (const char *const[]){ g_dir }, .ndirs = 1, .max_open = 2 };
    struct cstore *s;
    T_EQ(cstore_open(&cfg, &s), 0); /* max_open 2: eviction runs constantly */
    for (uint64_t id = 1; id <= 3; id++)
        T_EQ(cstore_create(s, id, 1), 0);
    struct worker w[5] = {
        { s, 1, 0, 8, 1 }, { s, 2, 0, 8, 2 },           /* own chunks */
        { s, 3, 0, 4, 3 }, { s, 3, 4, 4, 4 }, { s, 3, 8, 4, 5 }, /* one shared chunk, own regions */
    };
    pthread_t th[6];
    for (int i = 0; i < 5; i++)
        T_EQ(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    T_EQ(pthread_create(&th[5], NULL, scrubber_main, s), 0);
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    check_counts(s);
    cstore_close(s);
}

/* ---- evict: unsynced chunks leave the open-file cache too ------------------------------------------- */

static int open_fds(void)
{
    int n = 0;
    char path[64];
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        n += access(path, F_OK) == 0;
    }
    return n;
}

/* Whether chunk id (v1) had its block 0 slot A entry zeroed on disk: only a sync drops an obsolete slot. */
static bool slot_a_dropped(uint64_t id)
{
    static const uint8_t zero[32];
    char *path = chunk_file(g_dir, id, 1);
    int fd = open(path, O_RDONLY);
    T_CHECK(fd >= 0);
    uint8_t e[32];
    T_EQ(pread(fd, e, sizeof(e), CT_TABLE_OFF(0)), (ssize_t)sizeof(e));
    close(fd);
    free(path);
    return memcmp(e, zero, sizeof(e)) == 0;
}

/* 64 chunks written twice each and never synced, with max_open 4: the store syncs and closes the least
 * recently used ones, so the process keeps at most about max_open chunk files open; every evicted chunk
 * was really synced (its obsolete first slot was dropped, which only a sync does); data reads back, and
 * evicted chunks take writes and syncs again. */
static void test_evict(void)
{
    enum { MAX_OPEN = 4, N = 64 };
    struct cstore_config cfg = { .dirs = (const char *const[]){ g_dir }, .ndirs = 1, .max_open = MAX_OPEN };
    struct cstore *s;
    T_EQ(cstore_open(&cfg, &s), 0);
    int fds0 = open_fds();
    uint64_t rng = 99;
    uint8_t *a = xmalloc(BS), *b = xmalloc(BS), *got = xmalloc(BS);
    int peak = 0;
    for (uint64_t id = 1; id <= N; id++) {
        T_EQ(cstore_create(s, id, 1), 0);
        ct_fill_random(&rng, a, BS);
        T_EQ(cstore_write(s, id, 1, 0, a, BS), 0);
        rng = id * 1000;
        ct_fill_random(&rng, b, BS);
        T_EQ(cstore_write(s, id, 1, 0, b, BS), 0); /* the other slot: the first stays until a sync */
        peak = MAX(peak, open_fds() - fds0);
    }
    fprintf(stderr, "peak chunk files open: %d (max_open %d)\n", peak, MAX_OPEN);
    T_CHECK(peak <= MAX_OPEN + 2);
    /* Evicted chunks were synced: slot A's entry of block 0 (the first write) is zeroed on disk. */
    for (uint64_t id = 1; id <= N - 2 * MAX_OPEN; id++)
        if (!slot_a_dropped(id))
            T_FAIL("chunk %llu was evicted without a sync (slot A entry still valid)", (unsigned long long)id);
    for (uint64_t id = 1; id <= N; id++) {
        rng = id * 1000;
        ct_fill_random(&rng, b, BS);
        T_EQ(cstore_read(s, id, 1, 0, got, BS, NULL), 0);
        T_MEMEQ(got, b, BS);
    }
    T_EQ(cstore_write(s, 1, 1, BS, a, 100), 0);
    T_EQ(cstore_sync(s, 1, 1), 0);
    T_EQ(cstore_read(s, 1, 1, BS, got, 100, NULL), 0);
    T_MEMEQ(got, a, 100);
    T_CHECK(open_fds() - fds0 <= MAX_OPEN + 2);
    cstore_close(s);
    free(a);
    free(b);
    free(got);
}

/* Whether chunk id (v1)'s file is open in this process (loaded in the store's open-file cache). */
static bool chunk_open_here(uint64_t id)
{
    char *want = chunk_file(g_dir, id, 1), path[64], link[4096];
    bool found = false;
    for (int fd = 0; fd < 4096 && !found; fd++) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = 0;
            found = strcmp(link, want) == 0;
        }
    }
    free(want);
    return found;
}

/* A scrub pass over many chunks with max_open 4 leaves the open-file cache as it found it: the chunks the
 * scrubber loads itself leave when their scrub is done, so the chunks in use (here 2 read, 1 written and not
 * synced) stay loaded and nobody pays an eviction sync. */
static void test_scrub_cache(void)
{
    enum { MAX_OPEN = 4, N = 24 };
    struct cstore_config cfg = { .dirs = (const char *const[]){ g_dir }, .ndirs = 1, .max_open = MAX_OPEN };
    struct cstore *s;
    T_EQ(cstore_open(&cfg, &s), 0);
    uint64_t rng = 5;
    uint8_t *buf = xmalloc(BS);
    for (uint64_t id = 1; id <= N; id++) {
        T_EQ(cstore_create(s, id, 1), 0);
        ct_fill_random(&rng, buf, BS);
        T_EQ(cstore_write(s, id, 1, 0, buf, BS), 0);
        T_EQ(cstore_write(s, id, 1, 2 * BS, buf, BS), 0);
        T_EQ(cstore_sync(s, id, 1), 0);
    }
    T_EQ(cstore_read(s, N, 1, 0, buf, 100, NULL), 0); /* in use: two read, one written */
    T_EQ(cstore_read(s, N - 1, 1, 0, buf, 100, NULL), 0);
    T_EQ(cstore_write(s, N - 2, 1, BS, buf, 100), 0);
    for (uint64_t id = N - 2; id <= N; id++)
        T_CHECK(chunk_open_here(id));
    uint64_t ev0, wb0, ev1, wb1;
    cstore_sync_counts(s, &ev0, &wb0);
    struct cstore_scrub *sc = cstore_scrub_new(s);
    struct cstore_bad_block bad[8];
    bool done = false;
    int steps = 0;
    while (!done) {
        size_t nbad;
        T_CHECK(cstore_scrub_step(sc, 1, bad, ARRAY_SIZE(bad), &nbad, &done) >= 0); /* 1 block a step */
        T_EQ(nbad, 0);
        steps++;
    }
    cstore_scrub_free(sc);
    cstore_sync_counts(s, &ev1, &wb1);
    fprintf(stderr, "scrub pass: %d steps, eviction syncs %llu\n", steps, (unsigned long long)(ev1 - ev0));
    T_EQ(ev1 - ev0, 0);
    for (uint64_t id = N - 2; id <= N; id++)
        if (!chunk_open_here(id))
            T_FAIL("chunk %llu was pushed out of the open-file cache by the scrub", (unsigned long long)id);
    cstore_close(s);
    free(buf);
}

/* ---- writeback: chunks left unsynced are synced in the background ---------------------------------- */


/* Two writes of block 0 of chunk id: the first one's slot is obsolete from the next sync on. */
static void write_twice(struct cstore *s, uint64_t id, uint8_t *buf)
{
    uint64_t rng = id;
    T_EQ(cstore_create(s, id, 1), 0);
    ct_fill_random(&rng, buf, BS);
    T_EQ(cstore_write(s, id, 1, 0, buf, BS), 0);
    rng = id * 1000;
    ct_fill_random(&rng, buf, BS);
    T_EQ(cstore_write(s, id, 1, 0, buf, BS), 0);
}

/* One pass syncs (syncfs + bookkeeping) exactly the chunks old enough, or, under pressure (more than
 * max_open / 2 unsynced), every unused one; with the thread on, a writer of more chunks than max_open
 * never syncs another chunk on its own path. */
static void test_writeback(void)
{
    uint8_t *buf = xmalloc(BS), *got = xmalloc(BS);
    uint64_t ev, wb;
    {
        struct cstore_config cfg = { .dirs = (const char *const[]){ g_dir }, .ndirs = 1, .max_open = 64 };
        struct cstore *s;
        T_EQ(cstore_open(&cfg, &s), 0);
        for (uint64_t id = 1; id <= 8; id++)
            write_twice(s, id, buf);
        T_EQ(cstore_writeback(s, 3600 * NS_PER_SEC, 64), 0u); /* nothing is an hour old, no pressure */
        T_CHECK(!slot_a_dropped(1));
        T_EQ(cstore_writeback(s, 0, 64), 8u);
        for (uint64_t id = 1; id <= 8; id++)
            T_CHECK(slot_a_dropped(id));
        T_EQ(cstore_writeback(s, 0, 64), 0u); /* all clean now */
        for (uint64_t id = 9; id <= 48; id++) /* 40 unsynced > 64 / 2: pressure, whatever their age */
            write_twice(s, id, buf);
        T_EQ(cstore_writeback(s, 3600 * NS_PER_SEC, 64), 40u);
        T_CHECK(slot_a_dropped(48));
        cstore_sync_counts(s, &ev, &wb);
        T_EQ(ev, 0u);
        T_EQ(wb, 48u);
        cstore_close(s);
    }
    {
        enum { MAX_OPEN = 4, N = 32 };
        struct cstore_config cfg = { .dirs = (const char *const[]){ g_dir }, .ndirs = 1, .max_open = MAX_OPEN,
                                     .writeback_ms = 20 };
        struct cstore *s;
        T_EQ(cstore_open(&cfg, &s), 0);
        for (uint64_t id = 101; id < 101 + N; id++) {
            write_twice(s, id, buf);
            /* wait for the thread to sync it (bounded): then no eviction ever needs a sync */
            for (int i = 0; i < 1000; i++) {
                cstore_sync_counts(s, &ev, &wb);
                if (wb >= id - 100)
                    break;
                usleep(10000);
            }
            T_EQ(wb, id - 100);
        }
        cstore_sync_counts(s, &ev, &wb);
        fprintf(stderr, "writeback thread: %llu background syncs, %llu eviction syncs\n", (unsigned long long)wb,
                (unsigned long long)ev);
        T_EQ(ev, 0u);
        for (uint64_t id = 101; id < 101 + N; id++) {
            T_CHECK(slot_a_dropped(id));
            uint64_t rng = id * 1000;
            ct_fill_random(&rng, buf, BS);
            T_EQ(cstore_read(s, id, 1, 0, got, BS, NULL), 0);
            T_MEMEQ(got, buf, BS);
        }
        cstore_close(s);
    }
    free(buf);
    free(got);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        { "format", test_format },     { "roundtrip", test_roundtrip }, { "compression", test_compression },
        { "corrupt", test_corrupt },   { "torn", test_torn },           { "versions", test_versions },
        { "list", test_list },         { "enospc", test_enospc },       { "faildir", test_faildir },
        { "concurrency", test_concurrency }, { "evict", test_evict },
        { "writeback", test_writeback }, { "scrub_cache", test_scrub_cache },
    };
    if (argc != 2) {
        fprintf(stderr, "usage: %s <test>\n", argv[0]);
        return 2;
    }
    g_dir = ct_mkdtemp(NULL);
    atexit(cleanup);
    for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
        if (strcmp(argv[1], tests[i].name) == 0) {
            fprintf(stderr, "-- %s\n", tests[i].name);
            tests[i].fn();
            return 0;
        }
    }
    fprintf(stderr, "unknown test %s\n", argv[1]);
    return 2;
}
