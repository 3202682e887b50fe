/* test_meta.c - real synod-meta processes (state_machine = kv) on loopback; each subtest is its own ctest
 * (meta_<name>): `test_meta NAME PATH_TO_SYNOD_META`.
 *
 *   basic      3 nodes elect a leader and serve puts/gets; a follower redirects to the leader.
 *   failover   kill -9 the leader 20 times under a concurrent put/add load: time from kill to the next
 *              acknowledged write, no acknowledged write lost, no duplicated apply (counter == acked adds).
 *   catchup    a stopped (SIGSTOP) and a killed follower catch up on the writes they missed.
 *   snapshot   a follower restarted with its data dir wiped rejoins through a snapshot.
 *   malformed  junk bytes and out-of-range Paxos/Kv requests do not crash any daemon.
 *   pipeline   16 concurrent clients add to one counter (many commands per slot, several slots in flight, the
 *              leader answering chosen slots before the fsync of the next batch, followers running turns on
 *              their RPC threads): every reply is distinct and gapless, and after kill -9 of all three nodes
 *              and a restart the counter equals the acknowledged adds.
 *   rejoin     a wiped follower rejoins a cluster holding ~160 MB: bounded memory for the install, survivors
 * up. foreign    a node of ANOTHER cluster listening on a dead member's address (a port reused, a host
 *              redeployed) never counts toward the quorum: with the one live follower stopped, a write to the
 *              leader is not acknowledged, and the stranger logs the rejected batches.
 */
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "paxos.pb-c.h"
#include "tests/metaserver/cluster.h"
#include "tests/metaserver/kvc.h"
#include "tests/test.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

static const char *bin;

static void put_ok(struct kvc *c, const char *key, const char *val)
{
    int err = kvc_write(c, KVC_PUT, key, val, strlen(val), NULL, NULL);
    if (err)
        T_FAIL("put %s: %s", key, strerror(-err));
}

static void expect_value(struct kvc *c, const char *key, const char *want)
{
    char *v;
    bool found;
    int err = kvc_get(c, key, false, &v, NULL, &found);
    if (err)
        T_FAIL("get %s: %s", key, strerror(-err));
    if (!found || strcmp(v, want) != 0)
        T_FAIL("get %s: %s, want %s", key, found ? v : "(absent)", want);
    free(v);
}

/* Wait until node i answers a stale read of key with want (it has applied that far). */
static void wait_replica_has(struct cluster *cl, int i, const char *key, const char *want, int timeout_ms)
{
    uint64_t end = clk_mono_ns() + (uint64_t)timeout_ms * NS_PER_MS;
    for (;;) {
        char *v = NULL;
        bool found = false;
        int err = kvc_get_at(cl->nodes[i].addr, key, true, &v, &found, NULL, 0);
        bool ok = err == 0 && found && strcmp(v, want) == 0;
        free(v);
        if (ok)
            return;
        if (clk_mono_ns() > end)
            T_FAIL("node %d did not get %s=%s within %d ms (last err %d)", i, key, want, timeout_ms, err);
        clk_sleep_ns(20 * NS_PER_MS);
    }
}

static void test_basic(void)
{
    struct cluster cl;
    cl_init(&cl, 3, bin, NULL);
    cl_start_all(&cl);
    uint64_t t0 = clk_mono_ns();
    int leader = cl_leader(&cl, 10000);
    T_CHECK(leader >= 0);
    fprintf(stderr, "leader node %d after %.0f ms\n", leader, (double)(clk_mono_ns() - t0) / 1e6);
    struct kvc c;
    kvc_init(&c, cl.servers, 10000);
    char key[32], val[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "b/%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        put_ok(&c, key, val);
    }
    for (int i = 0; i < 100; i += 7) {
        snprintf(key, sizeof(key), "b/%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        expect_value(&c, key, val);
    }
    char *reply = NULL;
    T_EQ(kvc_write(&c, KVC_ADD, "b/ctr", "5", 1, &reply, NULL), 0);
    T_STREQ(reply, "5");
    free(reply);
    T_EQ(kvc_write(&c, KVC_ADD, "b/ctr", "-2", 2, &reply, NULL), 0);
    T_STREQ(reply, "3");
    free(reply);
    uint64_t z1 = 0, z2 = 0;
    T_EQ(kvc_write(&c, KVC_PUT, "b/z", "1", 1, NULL, &z1), 0);
    T_EQ(kvc_write(&c, KVC_PUT, "b/z", "2", 1, NULL, &z2), 0);
    T_CHECK(z1 != 0 && z2 > z1);
    /* a follower redirects linearizable reads to the leader, and serves stale reads once it has applied */
    int f = (leader + 1) % 3;
    char detail[256], want[96];
    char *v = NULL;
    bool found;
    T_EQ(kvc_get_at(cl.nodes[f].addr, "b/1", false, &v, &found, detail, sizeof(detail)), -EREMOTE);
    snprintf(want, sizeof(want), "leader=%s", cl.nodes[leader].addr);
    T_STREQ(detail, want);
    wait_replica_has(&cl, f, "b/99", "v99", 5000);
    /* a put sent to a follower is redirected too (the client follows the hint) */
    struct kvc cf;
    kvc_init(&cf, cl.nodes[f].addr, 5000);
    put_ok(&cf, "b/via-follower", "x");
    T_CHECK(cf.retries >= 1);
    expect_value(&c, "b/via-follower", "x");
    kvc_destroy(&cf);
    kvc_destroy(&c);
    /* graceful shutdown: SIGTERM exits 0 promptly */
    T_EQ(cl_stop_all(&cl), 0);
    cl_destroy(&cl);
}

/* ---- failover ---- */

struct load {
    struct cluster *cl;
    atomic_bool stop;
    _Atomic uint64_t last_ok_ns;
    uint64_t acked_adds, failed_adds, failed_puts;
    uint32_t *puts; /* indices of acknowledged puts */
    size_t n_puts, cap_puts;
    int last_err;
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    struct kvc c;
    kvc_init(&c, l->cl->servers, 15000);
    char key[32], val[32];
    for (uint32_t i = 0; !atomic_load(&l->stop); i++) {
        snprintf(key, sizeof(key), "f/%u", i);
        snprintf(val, sizeof(val), "v%u", i);
        int err = kvc_write(&c, KVC_PUT, key, val, strlen(val), NULL, NULL);
        if (err == 0) {
            atomic_store(&l->last_ok_ns, clk_mono_ns());
            if (l->n_puts == l->cap_puts) {
                l->cap_puts = l->cap_puts ? l->cap_puts * 2 : 1024;
                l->puts = xrealloc(l->puts, l->cap_puts * sizeof(*l->puts));
            }
            l->puts[l->n_puts++] = i;
        } else {
            l->failed_puts++;
            l->last_err = err;
        }
        err = kvc_write(&c, KVC_ADD, "f/ctr", "1", 1, NULL, NULL);
        if (err == 0) {
            atomic_store(&l->last_ok_ns, clk_mono_ns());
            l->acked_adds++;
        } else {
            l->failed_adds++;
            l->last_err = err;
        }
    }
    kvc_destroy(&c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define KILLS 20

static void test_failover(void)
{
    struct cluster cl;
    cl_init(&cl, 3, bin, NULL);
    cl_start_all(&cl);
    T_CHECK(cl_leader(&cl, 10000) >= 0);
    struct load l = {.cl = &cl};
    pthread_t th;
    T_CHECK(pthread_create(&th, NULL, load_main, &l) == 0);
    double ms[KILLS];
    for (int k = 0; k < KILLS; k++) {
        int leader = cl_leader(&cl, 10000);
        T_CHECK(leader >= 0);
        clk_sleep_ns(250 * NS_PER_MS);
        uint64_t w0 = clk_mono_ns();
        while (atomic_load(&l.last_ok_ns) < w0) { /* the load is flowing before we kill */
            if (clk_mono_ns() - w0 > 5 * NS_PER_SEC)
                T_FAIL("kill %d: the load made no progress for 5 s before the kill", k);
            clk_sleep_ns(NS_PER_MS);
        }
        if (clk_mono_ns() - w0 > 100 * NS_PER_MS)
            fprintf(stderr, "kill %d: the load stalled %.0f ms before the kill\n", k,
                    (double)(clk_mono_ns() - w0) / 1e6);
        uint64_t t = clk_mono_ns();
        cl_signal(&cl, leader, SIGKILL);
        uint64_t dead = clk_mono_ns(); /* replies already on their way before it died do not count */
        while (atomic_load(&l.last_ok_ns) <= dead) {
            if (clk_mono_ns() - t > 20 * NS_PER_SEC)
                T_FAIL("kill %d: no write acknowledged within 20 s", k);
            clk_sleep_ns(NS_PER_MS);
        }
        ms[k] = (double)(atomic_load(&l.last_ok_ns) - t) / 1e6;
        fprintf(stderr, "kill %2d: leader node %d, next acknowledged write after %.0f ms\n", k, leader,
                ms[k]);
        cl_start(&cl, leader);
        clk_sleep_ns(300 * NS_PER_MS);
    }
    atomic_store(&l.stop, true);
    pthread_join(th, NULL);
    qsort(ms, KILLS, sizeof(ms[0]), cmp_double);
    fprintf(stderr, "failover over %d kills: min %.0f ms, median %.0f ms, p90 %.0f ms, max %.0f ms\n", KILLS,
            ms[0], ms[KILLS / 2], ms[KILLS * 9 / 10], ms[KILLS - 1]);
    fprintf(stderr,
            "load: %zu puts and %llu adds acknowledged, %llu puts and %llu adds failed (last err %d)\n",
            l.n_puts, (unsigned long long)l.acked_adds, (unsigned long long)l.failed_puts,
            (unsigned long long)l.failed_adds, l.last_err);
    /* Election timeout is uniform in [1, 2) s: a typical failover is one timeout (median and p90 ~2 s), and
     * a split vote costs a second one (3.5 s seen on a loaded CI run). The worst of 20 kills may take a
     * third: the killed leader restarts ~0.5 s before the next kill, and a survivor whose channel to it is
     * still reconnecting cannot win until it is back (6.8 s seen once under ASan with the FUSE tests running,
     * when each connection attempt got only 100 ms: rpc_slow_handshake). The bounds catch a lost leader or a
     * stuck election (no write at all for 20 s fails above), not unlucky draws. */
    T_CHECK(ms[KILLS / 2] < 2500);
    T_CHECK(ms[KILLS * 9 / 10] < 4500);
    T_CHECK(ms[KILLS - 1] < 8000);
    /* every acknowledged write is there; the counter saw each acknowledged add exactly once */
    struct kvc c;
    kvc_init(&c, cl.servers, 15000);
    char key[32], val[32];
    for (size_t i = 0; i < l.n_puts; i++) {
        snprintf(key, sizeof(key), "f/%u", l.puts[i]);
        snprintf(val, sizeof(val), "v%u", l.puts[i]);
        expect_value(&c, key, val);
    }
    char *v;
    bool found;
    T_EQ(kvc_get(&c, "f/ctr", false, &v, NULL, &found), 0);
    T_CHECK(found);
    long long ctr = atoll(v);
    free(v);
    fprintf(stderr, "counter %lld, acknowledged adds %llu (+%llu unknown outcome)\n", ctr,
            (unsigned long long)l.acked_adds, (unsigned long long)l.failed_adds);
    T_CHECK(ctr >= (long long)l.acked_adds && ctr <= (long long)(l.acked_adds + l.failed_adds));
    kvc_destroy(&c);
    free(l.puts);
    T_EQ(cl_stop_all(&cl), 0);
    cl_destroy(&cl);
}

/* ---- catch-up and snapshots ---- */

static void write_range(struct kvc *c, const char *prefix, int from, int to)
{
    char key[32], val[32];
    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "%s/%d", prefix, i);
        snprintf(val, sizeof(val), "v%d", i);
        put_ok(c, key, val);
    }
}

static void test_catchup(void)
{
    struct cluster cl;
    cl_init(&cl, 3, bin, NULL);
    cl_start_all(&cl);
    int leader = cl_leader(&cl, 10000);
    T_CHECK(leader >= 0);
    struct kvc c;
    kvc_init(&c, cl.servers, 10000);
    int f = (leader + 1) % 3;
    /* a stopped follower */
    cl_signal(&cl, f, SIGSTOP);
    write_range(&c, "s", 0, 300);
    cl_signal(&cl, f, SIGCONT);
    wait_replica_has(&cl, f, "s/299", "v299", 10000);
    wait_replica_has(&cl, f, "s/0", "v0", 1000);
    /* a killed follower */
    cl_signal(&cl, f, SIGKILL);
    write_range(&c, "k", 0, 300);
    cl_start(&cl, f);
    wait_replica_has(&cl, f, "k/299", "v299", 10000);
    /* it can lead: kill the others' leader and read everything back through the new one */
    leader = cl_leader(&cl, 5000);
    T_CHECK(leader >= 0);
    cl_signal(&cl, leader, SIGKILL);
    T_CHECK(cl_leader(&cl, 10000) >= 0);
    expect_value(&c, "s/150", "v150");
    expect_value(&c, "k/299", "v299");
    kvc_destroy(&c);
    T_EQ(cl_stop_all(&cl), 0);
    cl_destroy(&cl);
}

/* A wiped follower catches up by snapshot. Pieces of 64 bytes (one record each) put a piece boundary after
 * every key, the binary ones of the session table (r/s, r/c: big-endian ids with 0 bytes) included: the
 * resume key must travel as bytes (a string copy cut it at the first 0 byte and sent heap garbage after it,
 * which ASan caught in meta_pipeline). Every key must arrive. */
static void test_snapshot(void)
{
    static const char *const extra[] = {"--snapshot_every=50", "--log_retain=20", "--snapshot_chunk=64",
                                        NULL};
    struct cluster cl;
    cl_init(&cl, 3, bin, extra);
    cl_start_all(&cl);
    int leader = cl_leader(&cl, 10000);
    T_CHECK(leader >= 0);
    struct kvc c;
    kvc_init(&c, cl.servers, 10000);
    write_range(&c, "a", 0, 100);
    int f = (leader + 1) % 3;
    wait_replica_has(&cl, f, "a/99", "v99", 5000);
    cl_signal(&cl, f, SIGKILL);
    cl_wipe(&cl, f);
    write_range(&c, "b", 0, 300);
    cl_start(&cl, f);
    wait_replica_has(&cl, f, "b/299", "v299", 15000);
    T_CHECK(cl_log_has(&cl, f, "installed snapshot"));
    char key[32], val[32];
    for (int i = 0; i < 400; i++) {
        snprintf(key, sizeof(key), "%s/%d", i < 100 ? "a" : "b", i < 100 ? i : i - 100);
        snprintf(val, sizeof(val), "v%d", i < 100 ? i : i - 100);
        wait_replica_has(&cl, f, key, val, 1000);
    }
    /* Installs are staged piece by piece and swapped in batches (rsm_store.c). A follower that dies in the
     * middle of the swap (SYNOD_META_CRASH_IN_INSTALL: after 3 batches of 256 bytes, i.e. with some of the
     * staged keys copied and the rest not) finishes the install when it starts again, from its own staging
     * and without a second transfer, and has every key. */
    cl_signal(&cl, f, SIGKILL);
    cl_wipe(&cl, f);
    write_range(&c, "c", 0, 100);
    setenv("SYNOD_META_CRASH_IN_INSTALL", "3", 1);
    cl_start(&cl, f);
    unsetenv("SYNOD_META_CRASH_IN_INSTALL");
    for (int t = 0; t < 150 && cl_alive(&cl, f); t++)
        usleep(100 * 1000);
    T_CHECK(!cl_alive(&cl, f));
    T_CHECK(cl_log_has(&cl, f, "exiting in the middle of a snapshot install"));
    put_ok(&c, "keep", "alive"); /* the session's lease (10 s) runs on requests */
    cl_start(&cl, f);
    wait_replica_has(&cl, f, "c/99", "v99", 15000);
    T_CHECK(cl_log_has(&cl, f, "the install was interrupted after its commit: finishing it"));
    put_ok(&c, "keep", "alive");
    for (int i = 0; i < 500; i++) {
        const char *pre = i < 100 ? "a" : i < 400 ? "b" : "c";
        int k = i < 100 ? i : i < 400 ? i - 100 : i - 400;
        snprintf(key, sizeof(key), "%s/%d", pre, k);
        snprintf(val, sizeof(val), "v%d", k);
        wait_replica_has(&cl, f, key, val, 1000);
    }
    /* the session table came with the snapshot: the same session keeps working through f as leader */
    for (int i = 0; i < 3; i++)
        if (i != f)
            cl_signal(&cl, i, SIGKILL);
    cl_start(&cl, (f + 1) % 3);
    int nl = cl_leader(&cl, 10000);
    T_CHECK(nl >= 0);
    put_ok(&c, "after", "snap");
    expect_value(&c, "after", "snap");
    expect_value(&c, "a/42", "v42");
    kvc_destroy(&c);
    T_EQ(cl_stop_all(&cl), 0);
    cl_destroy(&cl);
}

/* Peak resident memory of a process in KiB (VmHWM), 0 if it is gone. */
static long peak_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* A wiped follower rejoins a cluster holding ~160 MB (2500 values of 64 KiB; snapshots every 500 slots, 50
 * kept): it installs the snapshot with its memory bounded by the transfer's pieces (streamed through the
 * staging prefix: the whole snapshot in one WriteBatch took ~3x its size, ~860 MiB for 290 MB), and the
 * others stay up (PROMISEs and catch-up replies to it are bounded too: with the whole retained log in each
 * PROMISE, both survivors died encoding a 50-81 GB answer when the new node campaigned). */
static void test_rejoin(void)
{
    static const char *const extra[] = {"--snapshot_every=500", "--log_retain=50", NULL};
    struct cluster cl;
    cl_init(&cl, 3, bin, extra);
    cl_start_all(&cl);
    int leader = cl_leader(&cl, 10000);
    T_CHECK(leader >= 0);
    struct kvc c;
    kvc_init(&c, cl.servers, 30000);
    static char val[64 << 10];
    char key[32];
    for (int i = 0; i < 2500; i++) {
        memset(val, 'a' + i % 26, sizeof(val) - 1);
        snprintf(key, sizeof(key), "big/%d", i);
        put_ok(&c, key, val);
    }
    int f = (leader + 1) % 3;
    cl_signal(&cl, f, SIGKILL);
    cl_wipe(&cl, f);
    write_range(&c, "after", 0, 100);
    cl_start(&cl, f);
    long peak = 0;
    uint64_t end = clk_mono_ns() + 120 * NS_PER_SEC;
    while (!cl_log_has(&cl, f, "installed snapshot") && clk_mono_ns() < end) {
        peak = MAX(peak, peak_rss_kib(cl.nodes[f].pid));
        clk_sleep_ns(50 * NS_PER_MS);
    }
    peak = MAX(peak, peak_rss_kib(cl.nodes[f].pid));
    T_CHECK(cl_log_has(&cl, f, "installed snapshot"));
    wait_replica_has(&cl, f, "after/99", "v99", 30000);
    memset(val, 'a' + 2499 % 26, sizeof(val) - 1);
    wait_replica_has(&cl, f, "big/2499", val, 5000);
    fprintf(stderr, "rejoin: peak RSS of the installing node %ld MiB\n", peak / 1024);
    T_CHECK(peak > 0 && peak < 300 * 1024);
    for (int i = 0; i < 3; i++)
        T_CHECK(cl_alive(&cl, i));
    kvc_destroy(&c);
    T_EQ(cl_stop_all(&cl), 0);
    cl_destroy(&cl);
}

/* ---- malformed input ---- */

/* Call `method` with a message of ANOTHER type: the server decodes its bytes as the method's own input, so
 * wire types clash (undecodable) or bytes fields land where submessages or strings are expected (nested junk:
 * a PaxosValue's payload is parsed as a PaxosBatch's PaxosMsg). Top-level junk bytes are the RPC layer's
 * business (rpc_malformed). Returns the call's errno. */
static int call_as(const char *tgt, const ProtobufCServiceDescriptor *svc, const char *method,
                   const ProtobufCMessage *m)
{
    ProtobufCServiceDescriptor fake = *svc;
    ProtobufCMethodDescriptor *methods = xmalloc(svc->n_methods * sizeof(*methods));
    for (unsigned i = 0; i < svc->n_methods; i++) {
        methods[i] = svc->methods[i];
        methods[i].input = m->descriptor;
    }
    fake.methods = methods;
    ProtobufCMessage *rep = NULL;
    int err = rpc_call(rpc_channel_get(tgt), &fake, method, m, NULL, 2000, &rep, NULL);
    rpc_message_free(rep);
    free(methods);
    return err;
}

static uint64_t g_cluster; /* the cluster id deliver() sends */

static int deliver(const char *tgt, uint32_t from, Synod__V1__PaxosMsg **msgs, size_t n)
{
    Synod__V1__PaxosBatch b = SYNOD__V1__PAXOS_BATCH__INIT;
    b.cluster = g_cluster;
    b.from = from;
    b.msgs = msgs;
    b.n_msgs = n;
    ProtobufCMessage *rep = NULL;
    int err = rpc_call(rpc_channel_get(tgt), &synod__v1__paxos__descriptor, "Deliver", &b.base, NULL, 2000,
                       &rep, NULL);
    rpc_message_free(rep);
    return err;
}

static void test_malformed(void)
{
    struct cluster cl;
    cl_init(&cl, 3, bin, NULL);
    cl_start_all(&cl);
    int leader = cl_leader(&cl, 10000);
    T_CHECK(leader >= 0);
    static const struct {
        const ProtobufCServiceDescriptor *svc;
        const char *method;
    } targets[] = {{&synod__v1__paxos__descriptor, "Deliver"},
                   {&synod__v1__paxos__descriptor, "SnapshotChunk"},
                   {&synod__v1__kv__descriptor, "Put"},
                   {&synod__v1__kv__descriptor, "Get"},
                   {&synod__v1__kv__descriptor, "OpenSession"}};
    uint64_t rng = 42;
    uint8_t junk[512];
    int rejected = 0;
    for (int node = 0; node < 3; node++) {
        for (size_t p = 0; p < ARRAY_SIZE(targets); p++) {
            for (int k = 0; k < 40; k++) {
                size_t len = util_rand_next(&rng) % sizeof(junk);
                for (size_t i = 0; i < len; i++)
                    junk[i] = (uint8_t)util_rand_next(&rng);
                Synod__V1__PaxosValue pv = SYNOD__V1__PAXOS_VALUE__INIT;
                pv.kind = (uint32_t)util_rand_next(&rng);
                pv.zxid = util_rand_next(&rng);
                pv.payload.data = junk;
                pv.payload.len = len;
                Synod__V1__SnapshotReq sr = SYNOD__V1__SNAPSHOT_REQ__INIT;
                sr.from = (uint32_t)util_rand_next(&rng) % 5;
                sr.after_key.data = junk;
                sr.after_key.len = len;
                const ProtobufCMessage *m = k % 2 ? &pv.base : &sr.base;
                rejected += call_as(cl.nodes[node].addr, targets[p].svc, targets[p].method, m) != 0;
            }
        }
    }
    fprintf(stderr, "600 mistyped requests: %d rejected\n", rejected);
    /* well-formed protobuf, hostile content */
    int f = (leader + 1) % 3;
    const char *tgt = cl.nodes[f].addr;
    Synod__V1__PaxosValue val = SYNOD__V1__PAXOS_VALUE__INIT;
    val.kind = 77;
    val.payload.data = (uint8_t *)"junk";
    val.payload.len = 4;
    Synod__V1__PaxosSlot slot = SYNOD__V1__PAXOS_SLOT__INIT, *slots[1] = {&slot};
    Synod__V1__PaxosMsg m = SYNOD__V1__PAXOS_MSG__INIT, *mp[1] = {&m};
    m.from = 0;
    m.to = 99;
    uint32_t peer = (uint32_t)((f + 1) % 3); /* a valid sender id (not the target's own) */
    g_cluster = cl_cluster_id(&cl) ^ 1;
    T_EQ(deliver(tgt, peer, mp, 1), -EPERM); /* another cluster's batch: refused before its messages */
    g_cluster = 0;
    T_EQ(deliver(tgt, peer, mp, 1), -EPERM); /* no cluster id at all */
    g_cluster = cl_cluster_id(&cl);
    T_EQ(deliver(tgt, 99, mp, 1), -EINVAL);          /* batch from an unknown node */
    T_EQ(deliver(tgt, (uint32_t)f, mp, 1), -EINVAL); /* from itself */
    uint32_t other = (uint32_t)((f + 1) % 3);
    m.from = other;
    m.to = (uint32_t)f;
    uint32_t types[] = {0, 3, 11, 99, 8, 10, 2, 4, 9};
    for (size_t t = 0; t < ARRAY_SIZE(types); t++) {
        m.type = types[t];
        m.ballot = 1ull << 62; /* absurd round */
        deliver(tgt, other, mp, 1);
        m.ballot = 5;
        m.first_slot = 1ull << 63;
        m.commit = (1ull << 62) - 1;
        m.log_start = 1ull << 61;
        m.max_slots = UINT32_MAX;
        m.entries = slots;
        m.n_entries = 1;
        slot.slot = 1ull << 63;
        slot.value = &val;
        deliver(tgt, other, mp, 1);
        slot.slot = (1ull << 61) + 7;
        val.kind = 1;
        deliver(tgt, other, mp, 1);
        slot.slot = 0;
        deliver(tgt, other, mp, 1);
        m.entries = NULL;
        m.n_entries = 0;
        m.first_slot = 0;
        m.commit = 0;
    }
    m.to = 1000;
    T_EQ(deliver(tgt, other, mp, 1), -EINVAL);
    /* snapshot requests for a snapshot that does not exist, with a junk resume key */
    Synod__V1__SnapshotReq sq = SYNOD__V1__SNAPSHOT_REQ__INIT;
    sq.cluster = g_cluster;
    sq.snapshot_id = 123456789;
    sq.after_key.data = junk;
    sq.after_key.len = 100;
    ProtobufCMessage *rep = NULL;
    T_EQ(rpc_call(rpc_channel_get(tgt), &synod__v1__paxos__descriptor, "SnapshotChunk", &sq.base, NULL, 2000,
                  &rep, NULL),
         -ESTALE);
    sq.snapshot_id = 0;
    T_EQ(rpc_call(rpc_channel_get(tgt), &synod__v1__paxos__descriptor, "SnapshotChunk", &sq.base, NULL, 2000,
                  &rep, NULL),
         0);
    rpc_message_free(rep);
    sq.cluster ^= 1; /* another cluster's puller gets nothing */
    T_EQ(rpc_call(rpc_channel_get(tgt), &synod__v1__paxos__descriptor, "SnapshotChunk", &sq.base, NULL, 2000,
                  &rep, NULL),
         -EPERM);
    /* Kv requests out of range */
    const char *ltgt = cl.nodes[leader].addr;
    Synod__V1__KvReq kq = SYNOD__V1__KV_REQ__INIT;
    kq.key = "";
    T_EQ(rpc_call(rpc_channel_get(ltgt), &synod__v1__kv__descriptor, "Put", &kq.base, NULL, 2000, &rep, NULL),
         -EINVAL);
    kq.key = "x";
    kq.op = 9;
    T_EQ(rpc_call(rpc_channel_get(ltgt), &synod__v1__kv__descriptor, "Put", &kq.base, NULL, 2000, &rep, NULL),
         -EINVAL);
    kq.op = 0;
    kq.session = 999999;
    kq.seq = 1;
    T_EQ(rpc_call(rpc_channel_get(ltgt), &synod__v1__kv__descriptor, "Put", &kq.base, NULL, 2000, &rep, NULL),
         -ESTALE);
    kq.op = 1;
    kq.session = 0;
    kq.value.data = (uint8_t *)"notanumber";
    kq.value.len = 10;
    T_EQ(rpc_call(rpc_channel_get(ltgt), &synod__v1__kv__descriptor, "Put", &kq.base, NULL, 2000, &rep, NULL),
         -EINVAL);
    /* every daemon is alive and the cluster still serves */
    for (int i = 0; i < 3; i++)
        T_CHECK(cl_alive(&cl, i));
    struct kvc c;
    kvc_init(&c, cl.servers, 10000);
    put_ok(&c, "m/after", "ok");
    expect_value(&c, "m/after", "ok");
    kvc_destroy(&c);
    for (int i = 0; i < 3; i++)
        T_CHECK(cl_alive(&cl, i));
    T_EQ(cl_stop_all(&cl), 0);
    cl_destroy(&cl);
}

/* ---- pipeline ---- */

#define PIPE_CLIENTS 16

struct adder {
    struct cluster *cl;
    uint64_t end_ns;
    uint64_t *got; /* the counter value each acknowledged add returned */
    size_t n, cap;
    int errors, last_err;
};

static void *adder_main(void *arg)
{
    struct adder *a = arg;
    struct kvc c;
    kvc_init(&c, a->cl->servers, 15000);
    while (clk_mono_ns() < a->end_ns) {
        char *reply = NULL;
        int err = kvc_write(&c, KVC_ADD, "p/ctr", "1", 1, &reply, NULL);
        if (err) {
            a->errors++;
            a->last_err = err;
            continue;
        }
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 256;
            a->got = xrealloc(a->got, a->cap * sizeof(*a->got));
        }
        a->got[a->n++] = strtoull(reply, NULL, 10);
        free(reply);
    }
    kvc_destroy(&c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_pipeline(void)
{
    struct cluster cl;
    cl_init(&cl, 3, bin, NULL);
    cl_start_all(&cl);
    T_CHECK(cl_leader(&cl, 10000) >= 0);
    static struct adder ad[PIPE_CLIENTS];
    pthread_t th[PIPE_CLIENTS];
    uint64_t end = clk_mono_ns() + 3 * NS_PER_SEC;
    for (int i = 0; i < PIPE_CLIENTS; i++) {
        ad[i] = (struct adder){.cl = &cl, .end_ns = end};
        T_EQ(pthread_create(&th[i], NULL, adder_main, &ad[i]), 0);
    }
    size_t total = 0;
    for (int i = 0; i < PIPE_CLIENTS; i++) {
        pthread_join(th[i], NULL);
        if (ad[i].errors)
            T_FAIL("client %d: %d adds failed (last: %s) without any fault injected", i, ad[i].errors,
                   strerror(-ad[i].last_err));
        total += ad[i].n;
    }
    uint64_t *all = xcalloc(total + 1, sizeof(*all));
    size_t k = 0;
    for (int i = 0; i < PIPE_CLIENTS; i++) {
        memcpy(all + k, ad[i].got, ad[i].n * sizeof(*all));
        k += ad[i].n;
        free(ad[i].got);
    }
    qsort(all, total, sizeof(*all), cmp_u64);
    fprintf(stderr, "%zu acknowledged adds from %d clients in 3 s\n", total, PIPE_CLIENTS);
    T_CHECK(total > 100);
    for (size_t i = 0; i < total; i++) /* exactly once, in one order: replies are 1..total */
        if (all[i] != i + 1)
            T_FAIL("reply %zu of %zu is %llu (duplicated or lost add)", i, total, (unsigned long long)all[i]);
    free(all);
    /* Every acknowledged add survives losing every process at once. */
    for (int i = 0; i < 3; i++)
        cl_signal(&cl, i, SIGKILL);
    clk_sleep_ns(200 * NS_PER_MS);
    cl_start_all(&cl);
    T_CHECK(cl_leader(&cl, 15000) >= 0);
    struct kvc c;
    kvc_init(&c, cl.servers, 15000);
    char want[32];
    snprintf(want, sizeof(want), "%zu", total);
    expect_value(&c, "p/ctr", want);
    kvc_destroy(&c);
    T_EQ(cl_stop_all(&cl), 0);
    cl_destroy(&cl);
}

/* ---- another cluster's node on a dead member's address ---- */

static void test_foreign(void)
{
    struct cluster a;
    cl_init(&a, 3, bin, NULL);
    cl_start_all(&a);
    int l = cl_leader(&a, 10000);
    T_CHECK(l >= 0);
    struct kvc c;
    kvc_init(&c, a.servers, 10000);
    put_ok(&c, "before", "1");
    kvc_destroy(&c);
    int k = (l + 1) % 3, f = (l + 2) % 3;
    cl_signal(&a, k, SIGKILL);
    /* cluster b: same shape, its node k on a's node k's address (b's other nodes never start: it has no
     * leader, and its node k's promise is low, so it would accept a's ACCEPTs if it took a's batches) */
    struct cluster b;
    cl_init(&b, 3, bin, NULL);
    b.nodes[k].port = a.nodes[k].port;
    snprintf(b.nodes[k].addr, sizeof(b.nodes[k].addr), "%s", a.nodes[k].addr);
    b.peers[0] = 0;
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(b.peers);
        snprintf(b.peers + n, sizeof(b.peers) - n, "%s%d=%s", i ? "," : "", i, b.nodes[i].addr);
    }
    cl_start(&b, k);
    clk_sleep_ns(1500 * NS_PER_MS); /* a's leader reconnects to the address and sends heartbeats there */
    T_EQ(cl_signal(&a, f, SIGSTOP), 0);
    /* one live voter of three: nothing may be acknowledged, however long a's nodes (the leader, or whichever
     * a's node runs phase 1 against the stranger's answers) keep trying */
    int err = 0;
    uint64_t end = clk_mono_ns() + 10 * NS_PER_SEC;
    for (int i = 0; clk_mono_ns() < end && err != 1; i++) {
        char key[32];
        snprintf(key, sizeof(key), "cut-off/%d", i);
        kvc_init(&c, a.servers, 1500);
        err = kvc_write(&c, KVC_PUT, key, "1", 1, NULL, NULL);
        kvc_destroy(&c);
        if (err == 0) {
            fprintf(stderr,
                    "write %d acknowledged with the follower stopped and a stranger on node %d's address\n",
                    i, k);
            err = 1;
        }
    }
    T_CHECK(err != 1);
    T_CHECK(cl_log_has(&b, k, "another cluster"));
    cl_signal(&a, f, SIGCONT);
    kvc_init(&c, a.servers, 15000);
    put_ok(&c, "after", "1"); /* the leader and the resumed follower */
    kvc_destroy(&c);
    T_EQ(cl_stop_all(&b), 0);
    T_EQ(cl_stop_all(&a), 0);
    cl_destroy(&b);
    cl_destroy(&a);
}

int main(int argc, char **argv)
{
    log_init("test_meta", LOG_LVL_WARN);
    if (argc != 3) {
        fprintf(stderr, "usage: test_meta basic|failover|catchup|snapshot|malformed|pipeline|rejoin|foreign "
                        "PATH_TO_SYNOD_META\n");
        return 2;
    }
    bin = argv[2];
    signal(SIGPIPE, SIG_IGN);
    const char *t = argv[1];
    if (!strcmp(t, "basic"))
        T_RUN(test_basic);
    else if (!strcmp(t, "failover"))
        T_RUN(test_failover);
    else if (!strcmp(t, "catchup"))
        T_RUN(test_catchup);
    else if (!strcmp(t, "snapshot"))
        T_RUN(test_snapshot);
    else if (!strcmp(t, "malformed"))
        T_RUN(test_malformed);
    else if (!strcmp(t, "pipeline"))
        T_RUN(test_pipeline);
    else if (!strcmp(t, "rejoin"))
        T_RUN(test_rejoin);
    else if (!strcmp(t, "foreign"))
        T_RUN(test_foreign);
    else
        T_FAIL("unknown test %s", t);
    rpc_client_shutdown();
    fprintf(stderr, "ok\n");
    return 0;
}
