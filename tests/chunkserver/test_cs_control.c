/* test_cs_control.c - the control client of a real synod-chunk against test-double metaservers
 * (ctest cs_control_<name>).
 *
 * register:  the first metaserver address is dead and the second is a follower that redirects with
 *            EREMOTE "leader=..." to the leader double: the chunkserver registers there (id 0 -> 100),
 *            reports its chunks, heartbeats; report_wanted gets a fresh full report; a leader change
 *            (the leader starts redirecting to the other double) makes it re-register there with its id
 *            and send a full report; after a restart it keeps id and uuid (identity file).
 * commands:  delete, set version, replicate (a 5 MiB chunk, several Copy pages, from another real
 *            chunkserver), a delete of an absent chunk (-ENOENT) and a replicate from a dead source (error,
 *            no partial chunk left), with results coming back in heartbeats.
 * copyrate:  a replicate of an 8 MiB incompressible chunk by a chunkserver started with copy_rate=2M
 *            takes at least 4 s (and less than 20 s), and the copy is intact.
 * target:    every data request names the chunkserver it is for (to_uuid, from ChunkserverAddr.uuid): a
 *            chunkserver that took over another's address (a reused port) refuses Read, Write, Fsync and
 *            Copy meant for that one with ENXIO, stores nothing, and a head refuses to count a chain hop
 *            that is someone else (the failure names the hop); requests without to_uuid are served.
 * resultlag: with 3 s heartbeats, a replicate's result comes back ~20 ms after the copy ends (the finished
 *            copy wakes the control loop), not at the next heartbeat: the metaserver starts the next copy
 * only after it (max_repl_per_cs in flight), so waiting a heartbeat halved the re-replication rate. Usage:
 * test_cs_control <path to synod-chunk> <name>
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/util.h"
#include "tests/chunkserver/cs_testkit.h"
#include "tests/test.h"

#define MiB     (1u << 20)
#define WAIT_MS 20000

static bool report_has(struct fake_meta *fm, const void *id_ptr)
{
    uint64_t id = *(const uint64_t *)id_ptr;
    for (size_t i = 0; i < fm->nreport; i++)
        if (fm->report[i].chunk_id == id)
            return true;
    return false;
}

/* Ask for a full report and check that it holds exactly one chunk, `id` at version/length. */
static void check_single_report(struct fake_meta *fm, uint64_t id, uint32_t version, uint64_t length)
{
    pthread_mutex_lock(&fm->mu);
    fm->want_report = true;
    pthread_mutex_unlock(&fm->mu);
    T_CHECK(fm_wait(fm, report_has, &id, WAIT_MS));
    pthread_mutex_lock(&fm->mu);
    T_EQ(fm->nreport, 1);
    T_EQ(fm->report[0].version, version);
    T_EQ(fm->report[0].length, length);
    pthread_mutex_unlock(&fm->mu);
}

static bool registered_at_least(struct fake_meta *fm, const void *n)
{
    return fm->registrations >= *(const int *)n;
}

static void test_register(void)
{
    struct fake_meta a, b;
    fm_start(&a);
    fm_start(&b);
    a.mode = FM_REDIRECT;
    snprintf(a.redirect_to, sizeof(a.redirect_to), "%s", b.addr);
    char metas[200];
    snprintf(metas, sizeof(metas), "127.0.0.1:1,%s", a.addr);
    const char *dir = tk_tempdir("ctl");
    struct cs_proc p;
    tk_start(&p, dir, metas, "--scrub_rate=0", NULL);
    int one = 1, three = 3, two = 2;
    T_CHECK(fm_wait(&b, fm_reports_at_least, &one, WAIT_MS));
    T_CHECK(fm_wait(&b, fm_heartbeats_at_least, &three, WAIT_MS));
    pthread_mutex_lock(&b.mu);
    T_EQ(b.registrations, 1);
    T_EQ(b.last_reg_id, 0);
    T_STREQ(b.last_addr, p.addr);
    T_CHECK(strlen(b.last_uuid) == 36);
    T_CHECK(b.last_total > 0);
    char uuid[64];
    snprintf(uuid, sizeof(uuid), "%s", b.last_uuid);
    pthread_mutex_unlock(&b.mu);
    T_EQ(a.registrations, 0);

    /* A chunk written now shows up in the report the metaserver asks for. */
    uint8_t *buf = xmalloc(MiB);
    tk_fill(buf, MiB, 5, true);
    T_EQ(tk_write(p.addr, NULL, 0, 0xabc, 4, 0, buf, MiB, true, NULL), 0);
    uint64_t id = 0xabc;
    check_single_report(&b, id, 4, MiB);

    /* Leader change: b now redirects to a, which leads and knows the chunkserver (registrations are
     * replicated): the chunkserver follows the redirect and heartbeats there, without registering again
     * or sending a full report. */
    pthread_mutex_lock(&a.mu);
    a.mode = FM_LEADER;
    pthread_mutex_unlock(&a.mu);
    pthread_mutex_lock(&b.mu);
    b.mode = FM_REDIRECT;
    snprintf(b.redirect_to, sizeof(b.redirect_to), "%s", a.addr);
    pthread_mutex_unlock(&b.mu);
    T_CHECK(fm_wait(&a, fm_heartbeats_at_least, &three, WAIT_MS));
    pthread_mutex_lock(&a.mu);
    T_EQ(a.registrations, 0);
    T_EQ(a.reports_done, 0);
    /* A metaserver that does not know it (ENOENT): it registers there, with its id, and reports. */
    a.unknown = true;
    pthread_mutex_unlock(&a.mu);
    T_CHECK(fm_wait(&a, report_has, &id, WAIT_MS));
    pthread_mutex_lock(&a.mu);
    T_EQ(a.registrations, 1);
    T_EQ(a.last_reg_id, 100);
    T_STREQ(a.last_uuid, uuid);
    pthread_mutex_unlock(&a.mu);

    /* Restart: same id and uuid from the identity file, full report again. */
    T_EQ(tk_stop(&p, SIGTERM), 0);
    tk_start(&p, dir, a.addr, "--scrub_rate=0", NULL);
    T_CHECK(fm_wait(&a, registered_at_least, &two, WAIT_MS));
    T_CHECK(fm_wait(&a, fm_reports_at_least, &two, WAIT_MS));
    pthread_mutex_lock(&a.mu);
    T_EQ(a.last_reg_id, 100);
    T_STREQ(a.last_uuid, uuid);
    T_EQ(a.nreport, 1);
    pthread_mutex_unlock(&a.mu);
    T_EQ(tk_stop(&p, SIGTERM), 0);
    free(buf);
    fm_free(&a);
    fm_free(&b);
    rpc_client_shutdown();
}

static void wait_result(struct fake_meta *fm, uint64_t cmd, int want)
{
    if (!fm_wait(fm, fm_has_result, &cmd, WAIT_MS))
        T_FAIL("no result for command %llu", (unsigned long long)cmd);
    int r = fm_result(fm, cmd);
    if (r != want)
        T_FAIL("command %llu: result %d, want %d", (unsigned long long)cmd, r, want);
}

/* Two chunkservers, each with its own metaserver double (m2 telling heartbeat_ms, 0 = the double's 100),
 * both registered and reported. */
static void start_pair(struct fake_meta *m1, struct fake_meta *m2, uint32_t heartbeat_ms, struct cs_proc *c1,
                       struct cs_proc *c2, const char *name1, const char *name2)
{
    fm_start(m1);
    fm_start(m2);
    m2->heartbeat_ms = heartbeat_ms;
    tk_start(c1, tk_tempdir(name1), m1->addr, "--scrub_rate=0", NULL);
    tk_start(c2, tk_tempdir(name2), m2->addr, "--scrub_rate=0", NULL);
    int one = 1;
    T_CHECK(fm_wait(m1, fm_reports_at_least, &one, WAIT_MS));
    T_CHECK(fm_wait(m2, fm_reports_at_least, &one, WAIT_MS));
}

static void test_commands(void)
{
    struct fake_meta m1, m2;
    struct cs_proc c1, c2;
    start_pair(&m1, &m2, 0, &c1, &c2, "cmd1", "cmd2");
    size_t big = 5 * MiB + 12345;
    uint8_t *ref = xmalloc(big), *got = xmalloc(big);
    tk_fill(ref, big, 9, true);
    tk_fill(ref + MiB, 2 * MiB, 10, false); /* mixed compressible and random blocks */
    T_EQ(tk_write(c1.addr, NULL, 0, 0x50, 1, 0, ref, big, true, NULL), 0);
    T_EQ(tk_write(c1.addr, NULL, 0, 0x51, 1, 0, ref, 1000, true, NULL), 0);
    T_EQ(tk_write(c1.addr, NULL, 0, 0x52, 1, 0, ref, 1000, true, NULL), 0);
    T_EQ(tk_write(c1.addr, NULL, 0, 0x54, 5, 0, ref, 1000, true, NULL), 0);

    fm_push_cmd(&m1, 1, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 0x51, 1, 0, NULL);
    fm_push_cmd(&m1, 2, SYNOD__V1__CHUNK_CMD_TYPE__CMD_SET_VERSION, 0x52, 1, 2, NULL);
    fm_push_cmd(&m1, 3, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 0x99, 1, 0, NULL);
    fm_push_cmd(&m2, 4, SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, 0x50, 1, 0, c1.addr);
    fm_push_cmd(&m2, 5, SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, 0x53, 1, 0, "127.0.0.1:1");
    /* The source holds a newer version than asked for: the command is stale. */
    fm_push_cmd(&m2, 6, SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, 0x54, 3, 0, c1.addr);
    wait_result(&m1, 1, 0);
    wait_result(&m1, 2, 0);
    wait_result(&m1, 3, -ENOENT);
    wait_result(&m2, 4, 0);
    wait_result(&m2, 5, -ENOTCONN);
    wait_result(&m2, 6, -ESTALE);
    T_EQ(tk_read(c1.addr, 0x51, 1, 0, 1000, false, got), -ENOENT);
    T_EQ(tk_read(c1.addr, 0x52, 1, 0, 1000, false, got), -ESTALE);
    T_EQ(tk_read(c1.addr, 0x52, 2, 0, 1000, false, got), 0);
    T_MEMEQ(got, ref, 1000);
    T_EQ(tk_read(c2.addr, 0x50, 1, 0, big, true, got), 0);
    T_MEMEQ(got, ref, big);
    T_EQ(tk_read(c2.addr, 0x50, 1, 0, big, false, got), 0);
    T_MEMEQ(got, ref, big);
    T_EQ(tk_read(c2.addr, 0x53, 1, 0, 10, false, got), -ENOENT); /* failed copy left nothing */
    T_EQ(tk_read(c2.addr, 0x52, 7, 0, 10, false, got), -ENOENT);
    /* The replicated chunk is in the next full report at its real version. */
    check_single_report(&m2, 0x50, 1, big);
    T_EQ(tk_stop(&c1, SIGTERM), 0);
    T_EQ(tk_stop(&c2, SIGTERM), 0);
    free(ref);
    free(got);
    fm_free(&m1);
    fm_free(&m2);
    rpc_client_shutdown();
}

static void test_resultlag(void)
{
    struct fake_meta m1, m2;
    struct cs_proc c1, c2;
    start_pair(&m1, &m2, 3000, &c1, &c2, "lag1", "lag2");
    uint8_t buf[4096];
    tk_fill(buf, sizeof(buf), 3, true);
    T_EQ(tk_write(c1.addr, NULL, 0, 0x70, 1, 0, buf, sizeof(buf), true, NULL), 0);
    fm_push_cmd(&m2, 7, SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, 0x70, 1, 0, c1.addr);
    wait_result(&m2, 7, 0);
    pthread_mutex_lock(&m2.mu);
    uint64_t lag = m2.result_ns - m2.cmds_sent_ns;
    pthread_mutex_unlock(&m2.mu);
    fprintf(stderr, "resultlag: copy command sent -> result received: %llu ms (heartbeat 3000 ms)\n",
            (unsigned long long)(lag / NS_PER_MS));
    T_CHECK(lag < 1000 * NS_PER_MS);
    T_EQ(tk_read(c2.addr, 0x70, 1, 0, sizeof(buf), false, buf), 0);
    T_EQ(tk_stop(&c1, SIGTERM), 0);
    T_EQ(tk_stop(&c2, SIGTERM), 0);
    fm_free(&m1);
    fm_free(&m2);
    rpc_client_shutdown();
}

static void test_copyrate(void)
{
    struct fake_meta m;
    fm_start(&m);
    struct cs_proc src, dst;
    tk_start(&src, tk_tempdir("rate-src"), "", "--scrub_rate=0", NULL);
    tk_start(&dst, tk_tempdir("rate-dst"), m.addr, "--scrub_rate=0", "--copy_rate=2M", "--heartbeat_ms=100ms",
             NULL);
    int one = 1;
    T_CHECK(fm_wait(&m, fm_reports_at_least, &one, WAIT_MS));
    size_t len = 8 * MiB;
    uint8_t *ref = xmalloc(len), *got = xmalloc(len);
    tk_fill(ref, len, 77, false); /* incompressible: 8 MiB of stored bytes cross the wire */
    T_EQ(tk_write(src.addr, NULL, 0, 0x60, 3, 0, ref, len, true, NULL), 0);
    uint64_t t0 = clk_mono_ns();
    fm_push_cmd(&m, 1, SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, 0x60, 3, 0, src.addr);
    wait_result(&m, 1, 0);
    uint64_t ms = (clk_mono_ns() - t0) / NS_PER_MS;
    fprintf(stderr, "8 MiB copy at copy_rate=2M: %llu ms\n", (unsigned long long)ms);
    T_CHECK(ms >= 4000);
    T_CHECK(ms < 20000);
    T_EQ(tk_read(dst.addr, 0x60, 3, 0, len, true, got), 0);
    T_MEMEQ(got, ref, len);
    T_EQ(tk_stop(&src, SIGTERM), 0);
    T_EQ(tk_stop(&dst, SIGTERM), 0);
    free(ref);
    free(got);
    fm_free(&m);
    rpc_client_shutdown();
}

/* A chained write that fails downstream after the head applied it: the head reports the failed replica in
 * its heartbeat (the writer may die before it reports it), and a write that fails before any forward is
 * not reported (no replica can hold it). */
static void test_chainfail(void)
{
    struct fake_meta m;
    fm_start(&m);
    struct cs_proc h;
    tk_start(&h, tk_tempdir("cf-head"), m.addr, "--scrub_rate=0", "--heartbeat_ms=100ms", NULL);
    int one = 1;
    T_CHECK(fm_wait(&m, fm_reports_at_least, &one, WAIT_MS));
    uint8_t buf[4096];
    tk_fill(buf, sizeof(buf), 5, false);
    const char *dead[] = {"127.0.0.1:1"}; /* nobody listens there: the forward fails at once (id 2) */
    struct rpc_status st;
    T_CHECK(tk_write(h.addr, dead, 1, 0x70, 1, 0, buf, sizeof(buf), true, &st) != 0);
    T_CHECK(strstr(st.detail, "failed=2:") != NULL);
    uint64_t id = 0x70;
    T_CHECK(fm_wait(&m, fm_has_chain_failure, &id, WAIT_MS));
    pthread_mutex_lock(&m.mu);
    T_EQ(m.ncfails, 1);
    T_EQ(m.cfails[0].chunkserver, 2);
    T_EQ(m.cfails[0].version, 1);
    pthread_mutex_unlock(&m.mu);
    /* refused before forwarding (no such chunk, no create): nothing to report */
    T_CHECK(tk_write(h.addr, dead, 1, 0x71, 1, 0, buf, sizeof(buf), false, &st) != 0);
    int hb;
    pthread_mutex_lock(&m.mu);
    hb = m.heartbeats + 3;
    pthread_mutex_unlock(&m.mu);
    T_CHECK(fm_wait(&m, fm_heartbeats_at_least, &hb, WAIT_MS));
    id = 0x71;
    pthread_mutex_lock(&m.mu);
    T_CHECK(!fm_has_chain_failure(&m, &id));
    pthread_mutex_unlock(&m.mu);
    T_EQ(tk_stop(&h, SIGTERM), 0);
    fm_free(&m);
    rpc_client_shutdown();
}

/* A Read of [0, 4096) of chunk id at v1 sent to addr for the chunkserver `to` (uuid; "" = none). */
static int read_for(const char *addr, const char *to, uint64_t id)
{
    Synod__V1__ReadReq req = SYNOD__V1__READ_REQ__INIT;
    req.to_uuid = (char *)to;
    req.chunk_id = id;
    req.version = 1;
    req.length = 4096;
    ProtobufCMessage *rep = NULL;
    int r = rpc_call(rpc_channel_get(addr), &synod__v1__chunk_data__descriptor, "Read", &req.base, NULL,
                     10000, &rep, NULL);
    rpc_message_free(rep);
    return r;
}

/* A Write of data (creating chunk id at v1) to head for `to`, chained to one replica (id 7 at addr2 for
 * uuid2) when addr2 is not NULL. */
static int write_for(const char *head, const char *to, const char *addr2, const char *uuid2, uint64_t id,
                     const uint8_t *data, size_t len, struct rpc_status *st)
{
    Synod__V1__ChunkserverAddr next = SYNOD__V1__CHUNKSERVER_ADDR__INIT, *chain[1] = {&next};
    next.id = 7;
    next.addr = (char *)addr2;
    next.uuid = (char *)uuid2;
    Synod__V1__WriteReq req = SYNOD__V1__WRITE_REQ__INIT;
    req.to_uuid = (char *)to;
    req.chunk_id = id;
    req.version = 1;
    req.length = (uint32_t)len;
    req.crc = crc32c(0, data, len);
    req.create = true;
    req.data.data = (uint8_t *)data;
    req.data.len = len;
    if (addr2) {
        req.chain = chain;
        req.n_chain = 1;
    }
    ProtobufCMessage *rep = NULL;
    int r = rpc_call(rpc_channel_get(head), &synod__v1__chunk_data__descriptor, "Write", &req.base, NULL,
                     10000, &rep, st);
    rpc_message_free(rep);
    return r;
}

static void test_target(void)
{
    struct fake_meta fm;
    fm_start(&fm);
    struct cs_proc p, q;
    char up[64], uq[64];
    int one = 1, two = 2;
    tk_start(&p, tk_tempdir("tp"), fm.addr, "--scrub_rate=0", NULL);
    T_CHECK(fm_wait(&fm, registered_at_least, &one, WAIT_MS));
    pthread_mutex_lock(&fm.mu);
    snprintf(up, sizeof(up), "%s", fm.last_uuid);
    pthread_mutex_unlock(&fm.mu);
    tk_start(&q, tk_tempdir("tq"), fm.addr, "--scrub_rate=0", NULL);
    T_CHECK(fm_wait(&fm, registered_at_least, &two, WAIT_MS));
    pthread_mutex_lock(&fm.mu);
    snprintf(uq, sizeof(uq), "%s", fm.last_uuid);
    pthread_mutex_unlock(&fm.mu);
    T_CHECK(strlen(up) == 36 && strlen(uq) == 36 && strcmp(up, uq) != 0);
    const char *other = "00000000-0000-4000-8000-000000000000";
    uint8_t buf[4096];
    tk_fill(buf, sizeof(buf), 3, true);
    struct rpc_status st;
    /* the right one, and a sender that names nobody, are served */
    T_EQ(write_for(p.addr, up, NULL, NULL, 0x51, buf, sizeof(buf), &st), 0);
    T_EQ(write_for(p.addr, "", NULL, NULL, 0x52, buf, sizeof(buf), &st), 0);
    T_EQ(read_for(p.addr, up, 0x51), 0);
    T_EQ(read_for(p.addr, "", 0x51), 0);
    /* meant for another chunkserver: refused, nothing stored */
    T_EQ(read_for(p.addr, other, 0x51), -ENXIO);
    T_EQ(write_for(p.addr, other, NULL, NULL, 0x53, buf, sizeof(buf), &st), -ENXIO);
    T_CHECK(strstr(st.detail, "not the chunkserver addressed") != NULL);
    T_EQ(read_for(p.addr, up, 0x53), -ENOENT);
    T_EQ(tk_fsync(p.addr, NULL, 0, 0x51, 1, NULL), 0);
    Synod__V1__FsyncReq fq = SYNOD__V1__FSYNC_REQ__INIT;
    fq.to_uuid = (char *)other;
    fq.chunk_id = 0x51;
    fq.version = 1;
    T_EQ(rpc_call(rpc_channel_get(p.addr), &synod__v1__chunk_data__descriptor, "Fsync", &fq.base, NULL, 10000,
                  NULL, NULL),
         -ENXIO);
    Synod__V1__CopyReq cq = SYNOD__V1__COPY_REQ__INIT;
    cq.to_uuid = (char *)other;
    cq.chunk_id = 0x51;
    cq.version = 1;
    T_EQ(rpc_call(rpc_channel_get(p.addr), &synod__v1__chunk_data__descriptor, "Copy", &cq.base, NULL, 10000,
                  NULL, NULL),
         -ENXIO);
    /* a chain whose next hop is not who the sender meant: the write fails naming that hop, which stores
     * nothing; with the right uuid the same chain works */
    T_CHECK(write_for(p.addr, up, q.addr, other, 0x54, buf, sizeof(buf), &st) != 0);
    T_CHECK(strstr(st.detail, "failed=7:") != NULL);
    T_EQ(read_for(q.addr, uq, 0x54), -ENOENT);
    T_EQ(write_for(p.addr, up, q.addr, uq, 0x55, buf, sizeof(buf), &st), 0);
    T_EQ(read_for(q.addr, uq, 0x55), 0);
    T_EQ(tk_stop(&p, SIGTERM), 0);
    T_EQ(tk_stop(&q, SIGTERM), 0);
    fm_free(&fm);
    rpc_client_shutdown();
}

int main(int argc, char **argv)
{
    static const struct tk_test tests[] = {{"register", test_register},
                                           {"commands", test_commands},
                                           {"copyrate", test_copyrate},
                                           {"chainfail", test_chainfail},
                                           {"resultlag", test_resultlag},
                                           {"target", test_target},
                                           {NULL, NULL}};
    return tk_main(argc, argv, tests);
}
