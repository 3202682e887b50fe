/* test_cs_chain.c - chain replication across three real synod-chunk processes (ctest cs_chain_<name>).
 *
 * basic:     1 MiB writes (aligned, unaligned, compressible, incompressible) through the head, read back
 *            from every replica in plain and stored form, byte-identical; Fsync along the chain.
 * kill:      the last replica is killed with SIGKILL while a stream of writes runs: the write fails with
 *            EIO naming that replica (failed=3, its address); the surviving pair keeps working.
 * stall:     the last replica is stopped (SIGSTOP): the middle one's shorter deadline expires first and
 *            the write fails with EIO naming the stopped replica (failed=3:110) before the client's deadline.
 * version:   a write, fsync or read at a bumped version moves a replica's older copy forward (the
 *            metaserver bumps versions on lease grants and replica loss, handing out a version only with
 *            its member set); a request at an older version than the copy's is stale.
 * errors:    wrong version -> ESTALE (named), out-of-range / length mismatch / bad CRC / long chain ->
 *            EINVAL or EBADMSG, unknown chunk -> ENOENT; junk bytes on the wire -> INVALID_ARGUMENT and the
 *            daemons still serve.
 * overlap:   240 rounds (fixed seed) of two concurrent Writes through the head touching one 64 KiB block
 *            with disjoint bytes (one ends inside it, the other starts inside it, either possibly with
 *            whole blocks on its far side): afterwards every replica, plain and stored form, equals the
 *            reference with both writes' bytes. (Before the head forwarded partly covered blocks as
 *            plain ranges, a replica without the gate could keep the older merged block.)
 * overlap_bytes: 120 rounds of two concurrent Writes whose bytes overlap in one block: whichever the head
 *            admits first, every replica must apply them in the same order (each round's bytes equal one
 *            of the two orders, and the three replicas are identical). Without the head's per-block gate
 *            the replicas may apply the two ranges in different orders and diverge.
 * batch:     150 batched Writes (WriteReq.ranges, 1..64 runs) and plain reads with a CRC (plain_crc) from
 *            every replica; malformed batches are refused with EINVAL before anything is written.
 * overlap_wait: the last replica is stopped while a write is in flight; an overlapping write with a
 *            later deadline waits (parked) and completes after the replica resumes; one with a short
 *            deadline fails EBUSY naming the block and no replica, and succeeds when retried.
 * sync:      a Write with sync (the writer's last write before close or fsync) is answered synced = true only
 *            after every replica fdatasync'ed the chunk (strace on the three daemons, background writeback
 *            off); the same write without sync is answered synced = false and syncs nothing.
 * Usage: test_cs_chain <path to synod-chunk> <name>
 */
#include <errno.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/util.h"
#include "tests/chunkserver/cs_testkit.h"
#include "tests/test.h"

#define MiB (1u << 20)

static struct cs_proc cs[3];

static void start3(void)
{
    for (int i = 0; i < 3; i++) {
        char tag[16];
        snprintf(tag, sizeof(tag), "chain%d", i);
        tk_start(&cs[i], tk_tempdir(tag), "", "--scrub_rate=0", NULL);
    }
}

static void stop3(void)
{
    for (int i = 0; i < 3; i++)
        T_EQ(tk_stop(&cs[i], SIGTERM), 0); /* clean exit (ASan leak check runs in the children) */
    rpc_client_shutdown();
}

static void check_all(uint64_t id, uint32_t v, uint64_t off, const uint8_t *want, size_t len)
{
    uint8_t *got = xmalloc(len);
    for (int i = 0; i < 3; i++) {
        for (int stored = 0; stored < 2; stored++) {
            T_EQ(tk_read(cs[i].addr, id, v, off, len, stored, got), 0);
            if (memcmp(got, want, len) != 0)
                T_FAIL("replica %d (%s) %s read differs", i, cs[i].addr, stored ? "stored" : "plain");
        }
    }
    free(got);
}

static void test_basic(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    uint8_t *buf = xmalloc(8 * MiB), *ref = xcalloc(1, 8 * MiB);
    struct rpc_status st;
    /* 4 aligned 1 MiB writes, alternating compressible and random data. */
    for (int i = 0; i < 4; i++) {
        tk_fill(ref + (size_t)i * MiB, MiB, 100 + (uint64_t)i, i % 2 == 0);
        T_EQ(tk_write(cs[0].addr, chain, 2, 0x42, 1, (uint64_t)i * MiB, ref + (size_t)i * MiB, MiB, i == 0, &st), 0);
    }
    check_all(0x42, 1, 0, ref, 4 * MiB);
    /* Unaligned overwrite across block boundaries (partial edge blocks merged on the head). */
    tk_fill(buf, 300000, 7, false);
    memcpy(ref + 100001, buf, 300000);
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x42, 1, 100001, buf, 300000, false, &st), 0);
    /* A small write past the end, inside one block. */
    tk_fill(buf, 1000, 8, true);
    memcpy(ref + 5 * MiB + 5, buf, 1000);
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x42, 1, 5 * MiB + 5, buf, 1000, false, &st), 0);
    check_all(0x42, 1, 0, ref, 6 * MiB);
    check_all(0x42, 1, 65536 + 3, ref + 65536 + 3, 200000); /* unaligned read */
    T_EQ(tk_fsync(cs[0].addr, chain, 2, 0x42, 1, &st), 0);
    /* Reading past the chunk's end gives zeros. */
    T_EQ(tk_read(cs[2].addr, 0x42, 1, 7 * MiB, MiB, false, buf), 0);
    for (size_t i = 0; i < MiB; i++)
        T_EQ(buf[i], 0);
    /* A second chunk, written with create by a two-replica chain only. */
    T_EQ(tk_write(cs[1].addr, chain + 1, 1, 0x43, 5, 0, ref, MiB, true, &st), 0);
    T_EQ(tk_read(cs[2].addr, 0x43, 5, 0, MiB, true, buf), 0);
    T_MEMEQ(buf, ref, MiB);
    T_EQ(tk_read(cs[0].addr, 0x43, 5, 0, MiB, false, buf), -ENOENT);
    free(buf);
    free(ref);
    stop3();
}

static void test_kill(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    uint8_t *buf = xmalloc(MiB);
    struct rpc_status st;
    int r = 0, i;
    for (i = 0; i < 64 && r == 0; i++) {
        tk_fill(buf, MiB, (uint64_t)i, false);
        if (i == 8)
            tk_stop(&cs[2], SIGKILL);
        r = tk_write(cs[0].addr, chain, 2, 0x77, 1, (uint64_t)i * MiB, buf, MiB, i == 0, &st);
    }
    fprintf(stderr, "write %d after the kill: %d (%s)\n", i - 1, r, st.detail);
    T_EQ(i - 1, 8);
    T_EQ(r, -EIO);
    char want[100];
    snprintf(want, sizeof(want), "failed=3:%d addr=%s", ENOTCONN, chain[1]);
    if (!strstr(st.detail, "failed=3:") || !strstr(st.detail, chain[1]))
        T_FAIL("detail '%s' does not name %s", st.detail, want);
    /* The pair that is left keeps working, and the earlier data is intact. */
    T_EQ(tk_write(cs[0].addr, chain, 1, 0x77, 1, 9 * MiB, buf, MiB, false, &st), 0);
    uint8_t *got = xmalloc(MiB);
    tk_fill(buf, MiB, 3, false);
    T_EQ(tk_read(cs[1].addr, 0x77, 1, 3 * MiB, MiB, true, got), 0);
    T_MEMEQ(got, buf, MiB);
    free(got);
    free(buf);
    T_EQ(tk_stop(&cs[0], SIGTERM), 0);
    T_EQ(tk_stop(&cs[1], SIGTERM), 0);
    rpc_client_shutdown();
}

/* A replica that hangs (SIGSTOP) instead of dying: the hop before it times out first (shorter deadline)
 * and names it, before the client's own deadline. */
static void test_stall(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    uint8_t *buf = xmalloc(MiB);
    tk_fill(buf, MiB, 4, false);
    struct rpc_status st;
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x88, 1, 0, buf, MiB, true, &st), 0);
    kill(cs[2].pid, SIGSTOP);
    tk_timeout_ms = 3000;
    uint64_t t0 = clk_mono_ns();
    int r = tk_write(cs[0].addr, chain, 2, 0x88, 1, MiB, buf, MiB, false, &st);
    uint64_t ms = (clk_mono_ns() - t0) / NS_PER_MS;
    fprintf(stderr, "write with a stopped replica: %d after %llu ms (%s)\n", r, (unsigned long long)ms, st.detail);
    T_EQ(r, -EIO);
    T_CHECK(strstr(st.detail, "failed=3:110") && strstr(st.detail, chain[1]));
    T_CHECK(ms < 3000);
    kill(cs[2].pid, SIGCONT);
    tk_timeout_ms = 20000;
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x88, 1, MiB, buf, MiB, false, &st), 0);
    free(buf);
    stop3();
}

static void test_version(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    uint8_t *a = xmalloc(MiB), *b = xmalloc(MiB);
    tk_fill(a, MiB, 7, false);
    tk_fill(b, 4096, 8, false);
    struct rpc_status st;
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x20, 1, 0, a, MiB, true, &st), 0);
    /* A write at version 2 (a new lease) upgrades all three copies and merges with the old content. */
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x20, 2, 8192, b, 4096, false, &st), 0);
    memcpy(a + 8192, b, 4096);
    check_all(0x20, 2, 0, a, MiB);
    /* The old version is now stale everywhere, for reads and writes. */
    for (int i = 0; i < 3; i++)
        T_EQ(tk_read(cs[i].addr, 0x20, 1, 0, 4096, false, b), -ESTALE);
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x20, 1, 0, b, 4096, false, &st), -ESTALE);
    /* An fsync at a bumped version (a lease with no write) upgrades too, so reads at it work. */
    T_EQ(tk_fsync(cs[0].addr, chain, 2, 0x20, 3, &st), 0);
    check_all(0x20, 3, 0, a, MiB);
    /* A lease granted with nothing written (version 4, no write, no fsync): reads at 4 adopt it, since
     * the metaserver hands out a version only with its member set. */
    uint8_t *got = xmalloc(MiB);
    T_EQ(tk_read(cs[2].addr, 0x20, 4, 0, MiB, true, got), 0);
    T_MEMEQ(got, a, MiB);
    /* A reader with stale locations (an older version than the copy's) is told: ESTALE. */
    T_EQ(tk_read(cs[2].addr, 0x20, 3, 0, 4096, false, b), -ESTALE);
    T_EQ(tk_read(cs[0].addr, 0x20, 3, 0, 4096, false, b), 0); /* cs0 is still at 3: it adopts nothing */
    free(got);
    free(a);
    free(b);
    stop3();
}

static void test_errors(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    uint8_t *buf = xmalloc(MiB);
    tk_fill(buf, MiB, 1, false);
    struct rpc_status st;
    int r0 = tk_write(cs[0].addr, chain, 2, 0x10, 3, 0, buf, MiB, true, &st);
    if (r0)
        T_FAIL("first write: %d (%s)", r0, st.detail);
    /* Wrong version: ESTALE from the head, named. */
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x10, 2, 0, buf, 4096, false, &st), -ESTALE);
    T_CHECK(strstr(st.detail, "failed=") != NULL);
    T_EQ(tk_read(cs[2].addr, 0x10, 2, 0, 4096, false, buf), -ESTALE); /* older than the copy */
    /* Only the last replica has a different version: the head reports that replica. */
    const char *one[] = {cs[2].addr};
    T_EQ(tk_write(cs[1].addr, one, 1, 0x11, 1, 0, buf, 4096, true, &st), 0);
    T_EQ(tk_write(cs[2].addr, NULL, 0, 0x12, 9, 0, buf, 4096, true, &st), 0);
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x12, 1, 0, buf, 4096, true, &st), -ESTALE);
    fprintf(stderr, "stale last replica: %s\n", st.detail);
    T_CHECK(strstr(st.detail, "failed=") && strstr(st.detail, cs[2].addr));
    /* Unknown chunk. */
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x99, 1, 0, buf, 4096, false, &st), -ENOENT);
    T_EQ(tk_read(cs[0].addr, 0x99, 1, 0, 4096, false, buf), -ENOENT);
    /* Out of range. */
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x10, 3, (64u << 20) - 100, buf, 4096, false, &st), -EINVAL);
    fprintf(stderr, "out of range: %s\n", st.detail);
    T_EQ(tk_read(cs[0].addr, 0x10, 3, (64u << 20) - 100, 4096, false, buf), -EINVAL);
    T_EQ(tk_read(cs[0].addr, 0x10, 3, 0, (32u << 20), false, buf), -EINVAL);
    /* Length != data length, bad CRC, over-long chain, empty address: hand-built requests. */
    Synod__V1__WriteReq req = SYNOD__V1__WRITE_REQ__INIT;
    req.chunk_id = 0x10;
    req.version = 3;
    req.length = 100;
    struct rpc_payload p = {.data = buf, .len = 50};
    ProtobufCMessage *rep = NULL;
    struct rpc_channel *ch = rpc_channel_get(cs[0].addr);
    T_EQ(rpc_call(ch, &synod__v1__chunk_data__descriptor, "Write", &req.base, &p, 5000, &rep, &st), -EINVAL);
    fprintf(stderr, "length mismatch: %s\n", st.detail);
    req.length = 50;
    req.crc = 12345;
    T_EQ(rpc_call(ch, &synod__v1__chunk_data__descriptor, "Write", &req.base, &p, 5000, &rep, &st), -EBADMSG);
    Synod__V1__ChunkserverAddr a = SYNOD__V1__CHUNKSERVER_ADDR__INIT, *many[9];
    a.addr = "";
    for (int i = 0; i < 9; i++)
        many[i] = &a;
    req.chain = many;
    req.n_chain = 9;
    T_EQ(rpc_call(ch, &synod__v1__chunk_data__descriptor, "Write", &req.base, &p, 5000, &rep, &st), -EINVAL);
    req.n_chain = 1;
    T_EQ(rpc_call(ch, &synod__v1__chunk_data__descriptor, "Write", &req.base, &p, 5000, &rep, &st), -EINVAL);
    /* Malformed stored blocks sent straight to a replica. */
    Synod__V1__WriteBlocksReq wb = SYNOD__V1__WRITE_BLOCKS_REQ__INIT;
    Synod__V1__StoredBlock b = SYNOD__V1__STORED_BLOCK__INIT, *bp = &b;
    wb.chunk_id = 0x10;
    wb.version = 3;
    wb.blocks = &bp;
    wb.n_blocks = 1;
    b.index = 5000;
    b.raw_len = b.stored_len = 50;
    T_EQ(rpc_call(ch, &synod__v1__chunk_data__descriptor, "WriteBlocks", &wb.base, &p, 5000, &rep, &st), -EINVAL);
    b.index = 1;
    b.stored_len = 49; /* does not add up to data.len */
    T_EQ(rpc_call(ch, &synod__v1__chunk_data__descriptor, "WriteBlocks", &wb.base, &p, 5000, &rep, &st), -EINVAL);
    b.stored_len = 50;
    b.crc = 1; /* wrong CRC: the store rejects it before writing */
    T_EQ(rpc_call(ch, &synod__v1__chunk_data__descriptor, "WriteBlocks", &wb.base, &p, 5000, &rep, &st), -EBADMSG);
    /* Junk on the wire, to every method. */
    grpc_init();
    uint64_t seed = 2024;
    uint8_t junk[600];
    const char *const methods[] = {"Write", "WriteBlocks", "Read", "Copy", "Fsync"};
    int invalid = 0;
    for (int i = 0; i < 200; i++) {
        size_t len = 1 + util_rand_next(&seed) % sizeof(junk);
        for (size_t k = 0; k < len; k++)
            junk[k] = (uint8_t)util_rand_next(&seed);
        char path[64];
        snprintf(path, sizeof(path), "/synod.v1.ChunkData/%s", methods[i % 5]);
        int s = tk_raw_call(cs[i % 3].addr, path, junk, len);
        invalid += s == GRPC_STATUS_INVALID_ARGUMENT;
    }
    fprintf(stderr, "200 junk requests: %d INVALID_ARGUMENT\n", invalid);
    T_CHECK(invalid > 100);
    const uint8_t bad[] = {0x0a, 0x50, 'a', 'b'};
    T_EQ(tk_raw_call(cs[0].addr, "/synod.v1.ChunkData/Write", bad, sizeof(bad)), GRPC_STATUS_INVALID_ARGUMENT);
    /* An empty data field at the very end of a request (decodes; once crashed the receiver's free). */
    const uint8_t empty_tail[] = {0x08, 0x10, 0x7a, 0x00};
    for (int i = 0; i < 3; i++)
        T_CHECK(tk_raw_call(cs[i].addr, "/synod.v1.ChunkData/Write", empty_tail, sizeof(empty_tail)) !=
                GRPC_STATUS_INVALID_ARGUMENT);
    grpc_shutdown();
    /* Still serving, data intact. */
    uint8_t *got = xmalloc(MiB);
    tk_fill(buf, MiB, 1, false);
    for (int i = 0; i < 3; i++) {
        T_EQ(tk_read(cs[i].addr, 0x10, 3, 0, MiB, i == 1, got), 0);
        T_MEMEQ(got, buf, MiB);
    }
    free(got);
    free(buf);
    stop3();
}

/* ---- overlapping writes ---- */

#define BLK 65536u

struct ov_writer {
    pthread_barrier_t *bar;
    const char *const *chain;
    bool quit;
    uint64_t id, off;
    const uint8_t *data;
    size_t len;
    int64_t timeout_ms;
    int r;
    struct rpc_status st;
};

/* Waits at the barrier, writes, waits again; until quit. */
static void *ov_writer_main(void *arg)
{
    struct ov_writer *w = arg;
    for (;;) {
        pthread_barrier_wait(w->bar);
        if (w->quit)
            return NULL;
        w->r = tk_write_timeout(cs[0].addr, w->chain, 2, w->id, 1, w->off, w->data, w->len, false, w->timeout_ms,
                                &w->st);
        pthread_barrier_wait(w->bar);
    }
}

/* Two ov_writers on one barrier: started, driven round by round, stopped. Must not move once started. */
struct ov_pair {
    pthread_barrier_t bar;
    struct ov_writer w[2];
    pthread_t th[2];
};

static void ov_pair_start(struct ov_pair *p, const char *const *chain, const uint8_t *da, const uint8_t *db)
{
    pthread_barrier_init(&p->bar, NULL, 3);
    p->w[0] = (struct ov_writer){.bar = &p->bar, .chain = chain, .data = da, .timeout_ms = 20000};
    p->w[1] = (struct ov_writer){.bar = &p->bar, .chain = chain, .data = db, .timeout_ms = 20000};
    for (int i = 0; i < 2; i++)
        T_EQ(pthread_create(&p->th[i], NULL, ov_writer_main, &p->w[i]), 0);
}

/* Let both write at once (their id, off and len set) and check both succeeded. */
static void ov_pair_round(struct ov_pair *p, int round)
{
    pthread_barrier_wait(&p->bar); /* go */
    pthread_barrier_wait(&p->bar); /* both answered */
    for (int i = 0; i < 2; i++)
        if (p->w[i].r)
            T_FAIL("round %d write %c: %d %s", round, 'A' + i, p->w[i].r, p->w[i].st.detail);
}

static void ov_pair_stop(struct ov_pair *p)
{
    p->w[0].quit = p->w[1].quit = true;
    pthread_barrier_wait(&p->bar);
    for (int i = 0; i < 2; i++)
        pthread_join(p->th[i], NULL);
    pthread_barrier_destroy(&p->bar);
}

static void check_chunk(uint64_t id, const uint8_t *ref, size_t len)
{
    uint8_t *got = xmalloc(8 * MiB);
    for (size_t off = 0; off < len; off += 8 * MiB) {
        size_t n = MIN((size_t)8 * MiB, len - off);
        for (int i = 0; i < 3; i++) {
            for (int stored = 0; stored < 2; stored++) {
                T_EQ(tk_read(cs[i].addr, id, 1, off, n, stored, got), 0);
                if (memcmp(got, ref + off, n) == 0)
                    continue;
                size_t k = 0;
                while (got[k] == ref[off + k])
                    k++;
                T_FAIL("chunk %llx replica %d (%s) %s form: first difference at byte %zu (block %zu)",
                       (unsigned long long)id, i, cs[i].addr, stored ? "stored" : "plain", off + k,
                       (off + k) / BLK);
            }
        }
    }
    free(got);
}

static void test_overlap(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    enum { CHUNKS = 2, ROUNDS = 120 }; /* block b = 4 + 8 j: rounds never touch each other's blocks */
    size_t span = (size_t)(4 + 8 * ROUNDS) * BLK;
    uint8_t *ref = xmalloc(span), *da = xmalloc(4 * BLK), *db = xmalloc(4 * BLK);
    struct ov_pair pair;
    ov_pair_start(&pair, chain, da, db);
    struct ov_writer *w = pair.w;
    uint64_t seed = 0x5eed0f;
    for (int c = 0; c < CHUNKS; c++) {
        uint64_t id = 0x300 + (uint64_t)c;
        memset(ref, 0, span);
        ref[0] = 1;
        T_EQ(tk_write(cs[0].addr, chain, 2, id, 1, 0, ref, 1, true, NULL), 0);
        for (int j = 0; j < ROUNDS; j++) {
            uint64_t b = 4 + 8 * (uint64_t)j, bs = b * BLK;
            /* A ends in the first half of block b, B starts in the second half: disjoint bytes. */
            uint64_t a_end = bs + 1 + util_rand_next(&seed) % (BLK / 2 - 1);
            uint64_t ka = util_rand_next(&seed) % 4, kb = util_rand_next(&seed) % 4;
            uint64_t a_off = ka ? (b - ka) * BLK + util_rand_next(&seed) % BLK
                                : bs + util_rand_next(&seed) % (a_end - bs);
            uint64_t b_off = bs + BLK / 2 + util_rand_next(&seed) % (BLK / 2 - 1);
            uint64_t b_end = kb ? (b + kb) * BLK + 1 + util_rand_next(&seed) % BLK
                                : b_off + 1 + util_rand_next(&seed) % (bs + BLK - b_off);
            w[0].id = w[1].id = id;
            w[0].off = a_off;
            w[0].len = (size_t)(a_end - a_off);
            w[1].off = b_off;
            w[1].len = (size_t)(b_end - b_off);
            tk_fill(da, w[0].len, seed + 1, j % 2 == 0);
            tk_fill(db, w[1].len, seed + 2, j % 3 == 0);
            memcpy(ref + a_off, da, w[0].len);
            memcpy(ref + b_off, db, w[1].len);
            ov_pair_round(&pair, j);
        }
        check_chunk(id, ref, span);
    }
    ov_pair_stop(&pair);
    free(ref);
    free(da);
    free(db);
    stop3();
}

static void test_overlap_bytes(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    enum { ROUNDS = 120 };
    size_t span = (size_t)(2 * ROUNDS + 2) * BLK;
    uint8_t *ab = xcalloc(1, span), *ba = xcalloc(1, span), *da = xmalloc(2 * BLK), *db = xmalloc(2 * BLK);
    struct ov_pair pair;
    ov_pair_start(&pair, chain, da, db);
    struct ov_writer *w = pair.w;
    uint64_t seed = 0xb17e5;
    const uint64_t id = 0x380;
    ab[0] = ba[0] = 1;
    T_EQ(tk_write(cs[0].addr, chain, 2, id, 1, 0, ab, 1, true, NULL), 0);
    uint64_t rounds_ab = 0;
    for (int j = 0; j < ROUNDS; j++) {
        uint64_t bs = (2 * (uint64_t)j + 1) * BLK;
        /* two ranges inside one block that share bytes, sometimes one spilling into the next block */
        uint64_t a_off = bs + util_rand_next(&seed) % (BLK / 2), a_len = 1 + util_rand_next(&seed) % (BLK / 2);
        uint64_t b_off = a_off + util_rand_next(&seed) % a_len, b_len = 1 + util_rand_next(&seed) % BLK;
        w[0].id = w[1].id = id;
        w[0].off = a_off;
        w[0].len = (size_t)a_len;
        w[1].off = b_off;
        w[1].len = (size_t)b_len;
        tk_fill(da, a_len, seed + 1, false);
        tk_fill(db, b_len, seed + 2, j % 2 == 0);
        memcpy(ab + a_off, da, a_len); /* A then B */
        memcpy(ab + b_off, db, b_len);
        memcpy(ba + b_off, db, b_len); /* B then A */
        memcpy(ba + a_off, da, a_len);
        ov_pair_round(&pair, j);
        /* Which order the head chose shows on replica 0; the others must match it. */
        uint8_t got[2 * BLK];
        T_EQ(tk_read(cs[0].addr, id, 1, bs, 2 * BLK, false, got), 0);
        bool is_ab = memcmp(got, ab + bs, 2 * BLK) == 0;
        T_CHECK(is_ab || memcmp(got, ba + bs, 2 * BLK) == 0);
        memcpy(is_ab ? ba + bs : ab + bs, got, 2 * BLK); /* the reference follows the head's order */
        rounds_ab += is_ab;
    }
    check_chunk(id, ab, span); /* every replica, plain and stored form */
    fprintf(stderr, "overlap_bytes: %llu of %d rounds applied A first\n", (unsigned long long)rounds_ab, ROUNDS);
    ov_pair_stop(&pair);
    free(ab);
    free(ba);
    free(da);
    free(db);
    stop3();
}

static void *ov_once(void *arg)
{
    struct ov_writer *w = arg;
    w->r = tk_write_timeout(cs[0].addr, w->chain, 2, w->id, 1, w->off, w->data, w->len, false, w->timeout_ms, &w->st);
    return NULL;
}

static void test_overlap_wait(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    uint8_t *ref = xmalloc(MiB), *a = xmalloc(4096), *b = xmalloc(4096);
    tk_fill(ref, MiB, 31, true);
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x400, 1, 0, ref, MiB, true, NULL), 0);
    tk_fill(a, 4096, 32, false);
    tk_fill(b, 4096, 33, false);

    /* 1. The last replica hangs with A in flight; B (same block, other bytes) waits behind A and both
     *    complete once the replica resumes. */
    kill(cs[2].pid, SIGSTOP);
    struct ov_writer wa = {.chain = chain, .id = 0x400, .off = 1000, .data = a, .len = 3000, .timeout_ms = 20000};
    struct ov_writer wb = {.chain = chain, .id = 0x400, .off = 40000, .data = b, .len = 3000, .timeout_ms = 20000};
    pthread_t ta, tb;
    T_EQ(pthread_create(&ta, NULL, ov_once, &wa), 0);
    clk_sleep_ns(300 * NS_PER_MS);
    T_EQ(pthread_create(&tb, NULL, ov_once, &wb), 0);
    clk_sleep_ns(500 * NS_PER_MS);
    kill(cs[2].pid, SIGCONT);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    T_EQ(wa.r, 0);
    T_EQ(wb.r, 0);
    memcpy(ref + 1000, a, 3000);
    memcpy(ref + 40000, b, 3000);
    check_all(0x400, 1, 0, ref, MiB);

    /* 2. Same, but B's deadline comes first: EBUSY naming the block, no replica blamed, and before the
     *    deadline so the answer arrives. Retried later, it succeeds. */
    tk_fill(a, 4096, 34, false);
    tk_fill(b, 4096, 35, false);
    kill(cs[2].pid, SIGSTOP);
    wa.off = 70000; /* block 1 */
    T_EQ(pthread_create(&ta, NULL, ov_once, &wa), 0);
    clk_sleep_ns(1000 * NS_PER_MS); /* A must be in flight on the head first, even on a loaded machine */
    struct rpc_status st;
    uint64_t t0 = clk_mono_ns();
    int r = tk_write_timeout(cs[0].addr, chain, 2, 0x400, 1, 100000, b, 3000, false, 3000, &st);
    uint64_t ms = (clk_mono_ns() - t0) / NS_PER_MS;
    fprintf(stderr, "overlapping write behind a stalled one: %d after %llu ms (%s)\n", r, (unsigned long long)ms,
            st.detail);
    T_EQ(r, -EBUSY);
    T_CHECK(strstr(st.detail, "block 1 ") != NULL);
    T_CHECK(strstr(st.detail, "failed=") == NULL);
    T_CHECK(ms >= 2000 && ms < 3000); /* expires at the deadline less the 10 % margin, answered in time */
    kill(cs[2].pid, SIGCONT);
    pthread_join(ta, NULL);
    T_EQ(wa.r, 0);
    T_EQ(tk_write(cs[0].addr, chain, 2, 0x400, 1, 100000, b, 3000, false, &st), 0);
    memcpy(ref + 70000, a, 3000);
    memcpy(ref + 100000, b, 3000);
    check_all(0x400, 1, 0, ref, MiB);
    free(ref);
    free(a);
    free(b);
    stop3();
}

/* Batched writes (WriteReq.ranges, what the client sends when small writes pile up) and the plain reads
 * with a CRC (what it uses for small reads). 150 batches of 1..64 runs (seed fixed), runs of 1 byte to
 * three blocks, partial and whole blocks mixed, compressible or not: every replica must end equal to the
 * reference, read in plain, stored and plain+CRC form. Then every malformed batch is refused before
 * anything is written. Without batch support the head answers EINVAL (its length is not the data's). */
static void test_batch(void)
{
    start3();
    const char *chain[] = {cs[1].addr, cs[2].addr};
    enum { BLOCKS = 160, BATCHES = 150, MAXRUNS = 64 };
    size_t span = (size_t)BLOCKS * BLK;
    uint8_t *ref = xcalloc(1, span), *data = xmalloc(MAXRUNS * 3 * BLK), *got = xmalloc(span);
    uint64_t offs[MAXRUNS];
    uint32_t lens[MAXRUNS];
    uint64_t seed = 0xba7c4;
    const uint64_t id = 0x500;
    ref[0] = 7;
    T_EQ(tk_write(cs[0].addr, chain, 2, id, 1, 0, ref, 1, true, NULL), 0);
    for (int k = 0; k < BATCHES; k++) {
        size_t n = 1 + util_rand_next(&seed) % MAXRUNS, len = 0, i = 0;
        uint64_t b = util_rand_next(&seed) % 4; /* next free block */
        for (; i < n && b < BLOCKS; i++) {
            uint64_t bs = b * BLK, off, end;
            switch (util_rand_next(&seed) % 4) {
            case 0: /* 4 KiB, the random-write case */
                off = bs + util_rand_next(&seed) % (BLK - 4096 + 1);
                end = off + 4096;
                break;
            case 1: /* anywhere within the block */
                off = bs + util_rand_next(&seed) % BLK;
                end = off + 1 + util_rand_next(&seed) % (bs + BLK - off);
                break;
            default: /* into the next one or two blocks, maybe covering one whole */
                off = bs + util_rand_next(&seed) % BLK;
                end = off + 1 + util_rand_next(&seed) % (2 * BLK); /* not inside MIN: evaluated twice */
                end = MIN(end, (uint64_t)span);
                break;
            }
            offs[i] = off;
            lens[i] = (uint32_t)(end - off);
            tk_fill(data + len, lens[i], seed, util_rand_next(&seed) % 3 == 0);
            memcpy(ref + off, data + len, lens[i]);
            len += lens[i];
            b = (end - 1) / BLK + 1 + util_rand_next(&seed) % 3; /* never the block of the run before */
        }
        int r = tk_write_runs(cs[0].addr, chain, 2, id, 1, offs, lens, i, data, false, NULL);
        if (r)
            T_FAIL("batch %d of %zu runs: %d", k, i, r);
    }
    check_chunk(id, ref, span);
    for (int c = 0; c < 3; c++) {
        T_EQ(tk_read_crc(cs[c].addr, id, 1, 0, span, got), 0);
        T_MEMEQ(got, ref, span);
        for (int j = 0; j < 50; j++) { /* small reads at random places, as the client sends them */
            uint64_t off = util_rand_next(&seed) % (span - 4096);
            T_EQ(tk_read_crc(cs[c].addr, id, 1, off, 4096, got), 0);
            T_MEMEQ(got, ref + off, 4096);
        }
    }
    /* Past the chunk's end: nothing sent, and the CRC is that of nothing. */
    T_EQ(tk_read_crc(cs[1].addr, id, 1, span + 10 * BLK, 4096, got), 0);
    T_CHECK(got[0] == 0 && got[4095] == 0);

    /* Malformed batches: refused with EINVAL, nothing written anywhere. */
    memset(data, 0xee, 3 * BLK);
    struct {
        uint64_t offs[2];
        uint32_t lens[2];
    } bad[] = {
        {{5 * BLK + 10, 2 * BLK}, {100, 100}},      /* out of order */
        {{5 * BLK + 10, 5 * BLK + 9000}, {100, 100}}, /* two runs in one block */
        {{5 * BLK, 6 * BLK - 1}, {BLK, 2}},         /* the second starts in the first's last block */
        {{5 * BLK, 6 * BLK}, {0, 100}},             /* empty run */
        {{5 * BLK, 64 * MiB - 10}, {100, 100}},     /* past the chunk */
    };
    for (size_t j = 0; j < ARRAY_SIZE(bad); j++) {
        struct rpc_status st;
        T_EQ(tk_write_runs(cs[0].addr, chain, 2, id, 1, bad[j].offs, bad[j].lens, 2, data, false, &st), -EINVAL);
    }
    uint64_t o1 = 5 * BLK;
    uint32_t l1 = 100;
    uint64_t too_many[65];
    uint32_t ones[65];
    for (int j = 0; j < 65; j++) {
        too_many[j] = (uint64_t)j * BLK;
        ones[j] = 1;
    }
    T_EQ(tk_write_runs(cs[0].addr, chain, 2, id, 1, too_many, ones, 65, data, false, NULL), -EINVAL);
    T_EQ(tk_write(cs[0].addr, chain, 2, id, 1, o1, data, l1, false, NULL), 0); /* a plain write still works */
    memcpy(ref + o1, data, l1);
    check_chunk(id, ref, span);
    free(ref);
    free(data);
    free(got);
    stop3();
}

/* Trace fdatasync of the three daemons into dir/fds.<i> while fn runs; returns 0 after the tracers ended. */
static void traced(const char *dir, void (*fn)(void *), void *arg)
{
    for (int i = 0; i < 3; i++)
        T_EQ(tk_sh("strace -qq -f -y -e trace=fdatasync -p %d -o %s/fds.%d & echo $! >%s/tracer.%d", (int)cs[i].pid,
                   dir, i, dir, i), 0);
    clk_sleep_ns(NS_PER_SEC); /* attached */
    fn(arg);
    /* strace takes a while to detach from every thread: stop the three at once, then wait for them. */
    T_EQ(tk_sh("d=%s; p=\"$(cat $d/tracer.0 $d/tracer.1 $d/tracer.2)\"; kill $p; "
               "for x in $p; do while kill -0 $x 2>/dev/null; do sleep 0.05; done; done", dir), 0);
}

/* Whether replica i's trace shows an fdatasync of chunk id's file. */
static bool trace_synced(const char *dir, int i, uint64_t id)
{
    return tk_sh("grep -q 'fdatasync(.*chunk_%016llx_' %s/fds.%d", (unsigned long long)id, dir, i) == 0;
}

struct sync_write {
    uint64_t id;
    bool sync, synced;
    const uint8_t *data;
};

static void do_sync_write(void *arg)
{
    struct sync_write *w = arg;
    const char *chain[] = {cs[1].addr, cs[2].addr};
    struct rpc_status st;
    T_EQ(tk_write_sync(cs[0].addr, chain, 2, w->id, 1, 0, w->data, 100000, true, w->sync, &w->synced, 20000, &st), 0);
}

static void test_sync(void)
{
    for (int i = 0; i < 3; i++) {
        char tag[16];
        snprintf(tag, sizeof(tag), "sync%d", i);
        tk_start(&cs[i], tk_tempdir(tag), "", "--scrub_rate=0", "--writeback=0", NULL);
    }
    const char *dir = tk_tempdir("synctrace");
    uint8_t *buf = xmalloc(100000);
    tk_fill(buf, 100000, 5, true);
    struct sync_write plain = {.id = 0xa1, .sync = false, .data = buf}, synced = {.id = 0xa2, .sync = true, .data = buf};
    traced(dir, do_sync_write, &plain);
    T_CHECK(!plain.synced);
    for (int i = 0; i < 3; i++)
        if (trace_synced(dir, i, plain.id))
            T_FAIL("replica %d synced a write without sync (the trace cannot tell the two apart)", i);
    traced(dir, do_sync_write, &synced);
    T_CHECK(synced.synced);
    for (int i = 0; i < 3; i++)
        if (!trace_synced(dir, i, synced.id))
            T_FAIL("replica %d answered a write with sync without an fdatasync of the chunk", i);
    check_all(0xa2, 1, 0, buf, 100000);
    free(buf);
    stop3();
}

int main(int argc, char **argv)
{
    static const struct tk_test tests[] = {{"basic", test_basic}, {"kill", test_kill}, {"stall", test_stall}, {"version", test_version}, {"errors", test_errors}, {"overlap", test_overlap},
                                              {"overlap_wait", test_overlap_wait}, {"batch", test_batch}, {"overlap_bytes", test_overlap_bytes},
                                              {"sync", test_sync}, {NULL, NULL}};
    return tk_main(argc, argv, tests);
}
