/* bench_paxos.c - the consensus layer against etcd, side by side in one run: committed writes/s and p50/p99
 * latency at 1, 64 and 256 requests in flight, linearizable reads/s at 64 in flight, and failover time
 * (kill -9 of the leader -> next successful write).
 *
 * WHAT RUNS. This program starts a 3-member etcd cluster (Debian's /usr/bin/etcd, default fsync behaviour)
 * and 3 synod-meta with state_machine = kv, all on loopback with their own data directories under one
 * temporary directory on the real disk (not tmpfs, so fsync costs what it costs). Both clusters stay up for
 * the whole run; only one is loaded at a time, and the cases alternate etcd / SynodFS so both see the same
 * background noise. Every child is killed by PID on exit (also on SIGINT/SIGTERM, and PR_SET_PDEATHSIG
 * kills them if this process dies), and the temporary directory is removed.
 *
 * ONE LOAD GENERATOR FOR BOTH. A run keeps `window` requests in flight with rpc_call_async (our RPC layer
 * speaks etcd's v3 gRPC API through etcd_min.proto). Each in-flight request is a "slot", a client with one
 * outstanding request: on completion its callback (the RPC layer's dispatcher thread) records the latency
 * and issues the slot's next request at once. Failed requests go to a retry queue that the main thread
 * reissues after RETRY_NS, after choosing a new target: etcd slots move to the next member (as clientv3
 * does); SynodFS slots follow the "leader=host:port" hint of an EREMOTE answer and otherwise move on.
 * Throughput cases aim every slot at the current leader of both systems (etcd's best case: no forwarding).
 * Writes are 16-byte keys with 64-byte values over a 100k-key space; SynodFS writes carry (session, seq):
 * each slot opens its own session once (OpenSession, through the log) and retries a failed Put with the
 * same seq (exactly once). Reads: etcd Range with serializable = false (linearizable, ReadIndex), SynodFS
 * Kv.Get (the leader's lease read).
 *
 * MEASURES. A case runs WARMUP_S unmeasured, then `secs` measured: completions inside the window count
 * towards ops/s and the latency percentiles (latency of the successful attempt, issue to completion).
 * Failover: FAILOVER_WINDOW writers (light load) with a short per-attempt deadline; after about a second
 * the leader is killed with SIGKILL; the figure is the time from the kill to the first successful write
 * that was issued after the kill (so a write the old leader had already committed cannot count). The
 * killed member is then restarted on its data directory and given time to rejoin before the next trial.
 *
 *   bench_paxos --meta PATH/synod-meta [--etcd /usr/bin/etcd] [--secs 5] [--trials 5] [--dir /var/tmp]
 *               [--only etcd|synod] [--keep]
 */
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "bench_etcd.h"
#include "bench_proc.h"
#include "etcd_min.pb-c.h"
#include "paxos.pb-c.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NNODES              3
#define MAX_ARGS            BENCH_ETCD_ARGS
#define KEY_SPACE           100000
#define VALUE_LEN           64
#define WARMUP_S            1.0
#define RETRY_NS            (2 * NS_PER_MS)
#define LOAD_TIMEOUT_MS     10000 /* per attempt, throughput cases */
#define FAILOVER_TIMEOUT_MS 100   /* per attempt, failover trials */
#define FAILOVER_WINDOW     8
#define FAILOVER_GIVEUP_S   20.0

enum sys_kind { SYS_ETCD, SYS_SYNOD };
enum op_kind { OP_PUT, OP_GET };

struct node {
    pid_t pid;
    char addr[64];        /* client address, "127.0.0.1:port" */
    char *argv[MAX_ARGS]; /* kept for restarts */
    char log_path[PATH_MAX];
};

struct cluster {
    enum sys_kind kind;
    const char *name;
    struct node nodes[NNODES];
};

/* ---------------------------------------------------------------------------------------------------- */
/* Child processes: started, killed and reaped by PID only.                                            */

static char g_dir[256];
static bool g_keep;
static bool g_verbose; /* BENCH_PAXOS_VERBOSE=1: trial details on stderr */
static struct cluster *g_clusters[2];

static void kill_all_children(void)
{
    for (int c = 0; c < 2; c++) {
        if (!g_clusters[c])
            continue;
        for (int i = 0; i < NNODES; i++) {
            struct node *n = &g_clusters[c]->nodes[i];
            if (n->pid > 0) {
                kill(n->pid, SIGKILL);
                waitpid(n->pid, NULL, 0);
                n->pid = 0;
            }
        }
    }
}

static void cleanup(void)
{
    kill_all_children();
    if (g_dir[0] && !g_keep)
        bench_rm_tree(g_dir);
    else if (g_dir[0])
        fprintf(stderr, "bench_paxos: kept %s\n", g_dir);
    g_dir[0] = 0;
}

static void on_signal(int sig)
{
    /* Not async-signal-safe in theory (nftw); acceptable for a benchmark being interrupted. */
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void node_start(struct node *n)
{
    ASSERT(n->pid == 0);
    n->pid = bench_spawn(n->argv, n->log_path);
}

static void set_args(struct node *n, ...)
{
    va_list ap;
    va_start(ap, n);
    int i = 0;
    for (const char *s; (s = va_arg(ap, const char *));) {
        ASSERT(i < MAX_ARGS - 1);
        n->argv[i++] = xstrdup(s);
    }
    n->argv[i] = NULL;
    va_end(ap);
}

static void node_free_args(struct node *n)
{
    for (int i = 0; n->argv[i]; i++)
        free(n->argv[i]);
}

/* ---------------------------------------------------------------------------------------------------- */
/* etcd                                                                                                 */

static void etcd_setup(struct cluster *c, const char *etcd_bin)
{
    c->kind = SYS_ETCD;
    c->name = "etcd";
    int peer[NNODES];
    char client[NNODES][64];
    for (int i = 0; i < NNODES; i++) {
        peer[i] = bench_free_port();
        snprintf(c->nodes[i].addr, sizeof(c->nodes[i].addr), "127.0.0.1:%d", bench_free_port());
        snprintf(client[i], sizeof(client[i]), "%s", c->nodes[i].addr);
    }
    char token[64];
    snprintf(token, sizeof(token), "bench-paxos-%d", (int)getpid());
    for (int i = 0; i < NNODES; i++) {
        struct node *n = &c->nodes[i];
        snprintf(n->log_path, sizeof(n->log_path), "%s/etcd%d.log", g_dir, i);
        bench_etcd_args(etcd_bin, g_dir, token, i, NNODES, client, peer, n->argv);
    }
}

static int etcd_status(struct cluster *c, int i, uint64_t *self_id, uint64_t *leader_id)
{
    return bench_etcd_status(c->nodes[i].addr, self_id, leader_id);
}

/* Index of the member that every answering member names as leader, or -1. */
static int etcd_leader(struct cluster *c)
{
    char client[NNODES][64];
    bool alive[NNODES];
    for (int i = 0; i < NNODES; i++) {
        snprintf(client[i], sizeof(client[i]), "%s", c->nodes[i].addr);
        alive[i] = c->nodes[i].pid > 0;
    }
    return bench_etcd_leader(client, alive, NNODES);
}

/* ---------------------------------------------------------------------------------------------------- */
/* SynodFS (synod-meta, state_machine = kv)                                                             */

static void synod_setup(struct cluster *c, const char *meta_bin)
{
    c->kind = SYS_SYNOD;
    c->name = "SynodFS";
    char peers[512] = "";
    for (int i = 0; i < NNODES; i++) {
        snprintf(c->nodes[i].addr, sizeof(c->nodes[i].addr), "127.0.0.1:%d", bench_free_port());
        strcat(peers, i ? "," : "");
        strcat(peers, c->nodes[i].addr);
    }
    for (int i = 0; i < NNODES; i++) {
        struct node *n = &c->nodes[i];
        char conf[PATH_MAX], data[PATH_MAX];
        snprintf(data, sizeof(data), "%s/meta%d", g_dir, i);
        snprintf(conf, sizeof(conf), "%s/meta%d.conf", g_dir, i);
        snprintf(n->log_path, sizeof(n->log_path), "%s/meta%d.log", g_dir, i);
        FILE *f = fopen(conf, "w");
        if (!f)
            PANIC("cannot write %s: %s", conf, strerror(errno));
        fprintf(f,
                "# written by bench_paxos\nstate_machine = kv\nnode_id = %d\npeers = %s\nlisten = %s\n"
                "data_dir = %s\nlog_level = warn\n",
                i, peers, n->addr, data);
        fclose(f);
        set_args(n, meta_bin, "-c", conf, NULL);
    }
}

static int synod_index_of(struct cluster *c, const char *addr)
{
    for (int i = 0; i < NNODES; i++)
        if (strcmp(c->nodes[i].addr, addr) == 0)
            return i;
    return -1;
}

/* The node a "leader=host:port" detail names, or -1. */
static int synod_hint(struct cluster *c, const char *detail)
{
    const char *p = strstr(detail, "leader=");
    if (!p)
        return -1;
    p += strlen("leader=");
    char addr[64];
    size_t n = strcspn(p, " ,;");
    if (n == 0 || n >= sizeof(addr))
        return -1;
    memcpy(addr, p, n);
    addr[n] = 0;
    return synod_index_of(c, addr);
}

/* A lease read (Kv Get) at node i alone: 0 if it answered itself (it is the serving leader), else -errno
 * with the leader hint, if any, in st->detail. */
static int synod_probe(struct cluster *c, int i, struct rpc_status *st)
{
    Synod__V1__KvReq req = SYNOD__V1__KV_REQ__INIT;
    req.key = "bench-probe";
    ProtobufCMessage *rep = NULL;
    int r = rpc_call(rpc_channel_get(c->nodes[i].addr), &synod__v1__kv__descriptor, "Get", &req.base, NULL,
                     500, &rep, st);
    rpc_message_free(rep);
    return r;
}

/* The leader: a node that answers a lease read itself; -1 if none does right now. */
static int synod_leader(struct cluster *c)
{
    struct rpc_status st;
    for (int i = 0; i < NNODES; i++)
        if (c->nodes[i].pid > 0 && synod_probe(c, i, &st) == 0)
            return i;
    return -1;
}

static int find_leader(struct cluster *c, double wait_s)
{
    uint64_t end = clk_mono_ns() + (uint64_t)(wait_s * 1e9);
    do {
        int l = c->kind == SYS_ETCD ? etcd_leader(c) : synod_leader(c);
        if (l >= 0)
            return l;
        clk_sleep_ns(50 * NS_PER_MS);
    } while (clk_mono_ns() < end);
    return -1;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The load generator                                                                                   */

struct run;

struct slot {
    struct run *r;
    int target;       /* node index the next attempt goes to */
    int errs_here;    /* consecutive failures on this target */
    bool opening;     /* the attempt in flight is an OpenSession */
    uint64_t session; /* SynodFS: 0 until opened */
    uint64_t seq;     /* SynodFS: seq of the current Put (retries reuse it) */
    uint64_t t_issue; /* start of the current attempt */
    uint64_t rng;
    char key[17];
    uint64_t retry_at;
    struct slot *next_retry;
};

struct run {
    struct cluster *c;
    enum op_kind op;
    int window;
    int64_t timeout_ms;
    atomic_bool stop;
    atomic_int active;             /* slots not finished */
    uint64_t meas_start, meas_end; /* completions in [start, end) are counted */
    /* Touched only by the dispatcher thread (completion callbacks). */
    uint32_t *lat_us;
    size_t nlat, cap;
    uint64_t errors;
    atomic_ulong ok;          /* successful completions, any time */
    _Atomic uint64_t kill_ns; /* failover: 0 until the leader was killed */
    _Atomic uint64_t first_ok_after_kill;
    /* Retry queue, shared by callbacks and the main thread. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct slot *retry_head;
    struct slot *slots;
};

static uint8_t g_value[VALUE_LEN];

static void slot_new_key(struct slot *s)
{
    snprintf(s->key, sizeof(s->key), "k%015llu", (unsigned long long)(util_rand_next(&s->rng) % KEY_SPACE));
}

static void on_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg);

static void slot_issue(struct slot *s)
{
    struct run *r = s->r;
    struct cluster *c = r->c;
    struct rpc_channel *ch = rpc_channel_get(c->nodes[s->target].addr);
    s->t_issue = clk_mono_ns();
    if (c->kind == SYS_ETCD) {
        if (r->op == OP_PUT) {
            Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
            req.key.data = (uint8_t *)s->key;
            req.key.len = 16;
            req.value.data = g_value;
            req.value.len = VALUE_LEN;
            rpc_call_async(ch, &etcdserverpb__kv__descriptor, "Put", &req.base, NULL, r->timeout_ms, on_done,
                           s);
        } else {
            Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
            req.key.data = (uint8_t *)s->key;
            req.key.len = 16;
            req.serializable = false;
            rpc_call_async(ch, &etcdserverpb__kv__descriptor, "Range", &req.base, NULL, r->timeout_ms,
                           on_done, s);
        }
        return;
    }
    Synod__V1__KvReq req = SYNOD__V1__KV_REQ__INIT;
    const char *method;
    if (r->op == OP_GET) {
        req.key = s->key;
        method = "Get";
    } else if (s->session == 0) {
        s->opening = true;
        method = "OpenSession";
    } else {
        req.session = s->session;
        req.seq = s->seq;
        req.acked = s->seq; /* one request per session at a time: every earlier seq was answered */
        req.key = s->key;
        req.value.data = g_value;
        req.value.len = VALUE_LEN;
        method = "Put";
    }
    rpc_call_async(ch, &synod__v1__kv__descriptor, method, &req.base, NULL, r->timeout_ms, on_done, s);
}

static void record_ok(struct run *r, struct slot *s, uint64_t now)
{
    uint64_t kill_ns = atomic_load(&r->kill_ns);
    atomic_fetch_add(&r->ok, 1);
    if (kill_ns && s->t_issue > kill_ns && atomic_load(&r->first_ok_after_kill) == 0)
        atomic_store(&r->first_ok_after_kill, now);
    if (now < r->meas_start || now >= r->meas_end)
        return;
    if (r->nlat == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1 << 16;
        r->lat_us = xrealloc(r->lat_us, r->cap * sizeof(*r->lat_us));
    }
    uint64_t us = (now - s->t_issue) / NS_PER_US;
    r->lat_us[r->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* After a failure: where the retry goes. */
static void slot_retarget(struct slot *s, int err, const struct rpc_status *st)
{
    struct cluster *c = s->r->c;
    s->errs_here++;
    if (c->kind == SYS_SYNOD) {
        if (err == -ESTALE) { /* session unknown or expired: open a new one */
            s->session = 0;
            return;
        }
        if (err == -EREMOTE) {
            int h = st ? synod_hint(c, st->detail) : -1;
            if (h >= 0 && h != s->target) {
                s->target = h;
                s->errs_here = 0;
                return;
            }
        }
        /* Leader not serving yet: stay a little, then look elsewhere. */
        if (err == -EAGAIN && s->errs_here < 5)
            return;
    }
    s->target = (s->target + 1) % NNODES;
    s->errs_here = 0;
}

static void slot_finish(struct run *r)
{
    pthread_mutex_lock(&r->mu);
    atomic_fetch_sub(&r->active, 1);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void on_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    struct slot *s = arg;
    struct run *r = s->r;
    uint64_t now = clk_mono_ns();
    bool was_open = s->opening;
    s->opening = false;
    if (err == 0) {
        s->errs_here = 0;
        if (was_open) {
            const Synod__V1__KvRep *rep = (const Synod__V1__KvRep *)reply;
            s->session = rep->value.len == 8 ? get_le64(rep->value.data) : 0; /* kv_sm: 8 bytes LE */
            s->seq = 1;
        } else {
            record_ok(r, s, now);
            if (r->c->kind == SYS_SYNOD && r->op == OP_PUT)
                s->seq++;
            slot_new_key(s);
        }
    } else {
        if (now >= r->meas_start && now < r->meas_end)
            r->errors++;
        slot_retarget(s, err, st);
    }
    rpc_message_free(reply);
    if (atomic_load(&r->stop)) {
        slot_finish(r);
        return;
    }
    if (err == 0) {
        slot_issue(s);
        return;
    }
    pthread_mutex_lock(&r->mu);
    s->retry_at = now + RETRY_NS;
    s->next_retry = r->retry_head;
    r->retry_head = s;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void run_init(struct run *r, struct cluster *c, enum op_kind op, int window, int target,
                     int64_t timeout_ms)
{
    memset(r, 0, sizeof(*r));
    r->c = c;
    r->op = op;
    r->window = window;
    r->timeout_ms = timeout_ms;
    r->meas_start = UINT64_MAX;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->slots = xcalloc((size_t)window, sizeof(*r->slots));
    for (int i = 0; i < window; i++) {
        struct slot *s = &r->slots[i];
        s->r = r;
        s->target = target;
        s->rng = 0x5eed0000ull + (uint64_t)i * 7919 + (uint64_t)clk_mono_ns();
        slot_new_key(s);
    }
}

static void run_destroy(struct run *r)
{
    free(r->slots);
    free(r->lat_us);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static void run_start(struct run *r)
{
    atomic_store(&r->active, r->window);
    for (int i = 0; i < r->window; i++)
        slot_issue(&r->slots[i]);
}

/* Reissue due retries until `until` (monotonic ns) or until `done` says so. */
static void run_pump(struct run *r, uint64_t until, bool (*done)(struct run *))
{
    pthread_mutex_lock(&r->mu);
    for (;;) {
        uint64_t now = clk_mono_ns();
        if (now >= until || (done && done(r)))
            break;
        struct slot *due = NULL, **pp = &r->retry_head;
        while (*pp) {
            struct slot *s = *pp;
            if (s->retry_at <= now) {
                *pp = s->next_retry;
                s->next_retry = due;
                due = s;
            } else {
                pp = &s->next_retry;
            }
        }
        if (due) {
            pthread_mutex_unlock(&r->mu);
            while (due) {
                struct slot *s = due;
                due = s->next_retry;
                slot_issue(s);
            }
            pthread_mutex_lock(&r->mu);
            continue;
        }
        uint64_t wake = MIN(until, now + NS_PER_MS);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t abs_ns = (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec + (wake - now);
        ts.tv_sec = (time_t)(abs_ns / NS_PER_SEC);
        ts.tv_nsec = (long)(abs_ns % NS_PER_SEC);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
}

/* Stop issuing; wait until every slot has finished (in-flight attempts complete or time out). */
static void run_stop(struct run *r)
{
    atomic_store(&r->stop, true);
    pthread_mutex_lock(&r->mu);
    for (;;) {
        /* A callback that saw stop == false just before we set it may still queue its slot: drain again
         * after every wakeup. */
        while (r->retry_head) {
            r->retry_head = r->retry_head->next_retry;
            atomic_fetch_sub(&r->active, 1);
        }
        if (atomic_load(&r->active) == 0)
            break;
        pthread_cond_wait(&r->cv, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

struct result {
    double ops_s, p50_ms, p99_ms;
    uint64_t errors;
    bool valid;
};

static struct result run_case(struct cluster *c, enum op_kind op, int window, double secs)
{
    struct result res = {0};
    int leader = find_leader(c, 15.0);
    if (leader < 0) {
        fprintf(stderr, "bench_paxos: %s has no leader, case skipped\n", c->name);
        return res;
    }
    struct run r;
    run_init(&r, c, op, window, leader, LOAD_TIMEOUT_MS);
    uint64_t t0 = clk_mono_ns();
    r.meas_start = t0 + (uint64_t)(WARMUP_S * 1e9);
    r.meas_end = r.meas_start + (uint64_t)(secs * 1e9);
    run_start(&r);
    run_pump(&r, r.meas_end, NULL);
    run_stop(&r);
    res.ops_s = (double)r.nlat / secs;
    res.errors = r.errors;
    if (r.nlat) {
        qsort(r.lat_us, r.nlat, sizeof(*r.lat_us), cmp_u32);
        res.p50_ms = r.lat_us[r.nlat / 2] / 1000.0;
        res.p99_ms = r.lat_us[MIN(r.nlat - 1, r.nlat * 99 / 100)] / 1000.0;
        res.valid = true;
    }
    run_destroy(&r);
    return res;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Failover                                                                                             */

static bool got_write_after_kill(struct run *r)
{
    return atomic_load(&r->first_ok_after_kill) != 0;
}

/* Wait until the restarted node `i` is back in the cluster (answers, knows the leader). */
static bool wait_rejoined(struct cluster *c, int i, double wait_s)
{
    uint64_t end = clk_mono_ns() + (uint64_t)(wait_s * 1e9);
    while (clk_mono_ns() < end) {
        clk_sleep_ns(100 * NS_PER_MS);
        if (c->kind == SYS_ETCD) {
            uint64_t self_id, leader_id;
            if (etcd_status(c, i, &self_id, &leader_id) == 0 && leader_id != 0 && etcd_leader(c) >= 0)
                return true;
        } else {
            struct rpc_status st;
            int r = synod_probe(c, i, &st);
            if ((r == 0 || (r == -EREMOTE && synod_hint(c, st.detail) >= 0)) && synod_leader(c) >= 0)
                return true;
        }
    }
    return false;
}

/* One trial: milliseconds from kill -9 of the leader to the next successful write, or -1. */
static double failover_trial(struct cluster *c)
{
    int leader = find_leader(c, 15.0);
    if (leader < 0)
        return -1;
    struct run r;
    run_init(&r, c, OP_PUT, FAILOVER_WINDOW, leader, FAILOVER_TIMEOUT_MS);
    r.meas_start = 0;
    r.meas_end = UINT64_MAX;
    run_start(&r);
    run_pump(&r, clk_mono_ns() + NS_PER_SEC, NULL);
    unsigned long before = atomic_load(&r.ok);
    uint64_t kill_ns = clk_mono_ns();
    atomic_store(&r.kill_ns, kill_ns);
    kill(c->nodes[leader].pid, SIGKILL);
    run_pump(&r, kill_ns + (uint64_t)(FAILOVER_GIVEUP_S * 1e9), got_write_after_kill);
    run_stop(&r);
    waitpid(c->nodes[leader].pid, NULL, 0);
    c->nodes[leader].pid = 0;
    uint64_t ok = atomic_load(&r.first_ok_after_kill);
    double ms = ok ? (double)(ok - kill_ns) / 1e6 : -1;
    if (g_verbose) {
        char ts[64];
        int64_t kill_real = clk_real_ns() - (int64_t)(clk_mono_ns() - kill_ns);
        time_t sec = (time_t)(kill_real / (int64_t)NS_PER_SEC);
        strftime(ts, sizeof(ts), "%H:%M:%S", gmtime(&sec));
        fprintf(stderr, "bench_paxos: %s: killed node %d at %s.%03lldZ, next write after %.0f ms\n", c->name,
                leader, ts, (long long)(kill_real / (int64_t)NS_PER_MS % 1000), ms);
    }
    if (before == 0)
        fprintf(stderr, "bench_paxos: %s: no write succeeded before the kill\n", c->name);
    run_destroy(&r);
    node_start(&c->nodes[leader]);
    if (!wait_rejoined(c, leader, 30.0))
        fprintf(stderr, "bench_paxos: %s node %d did not rejoin after restart\n", c->name, leader);
    clk_sleep_ns(1500 * NS_PER_MS); /* let it catch up before the next trial */
    return ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct failover_result {
    double median_ms, max_ms;
    int ok, trials;
    double all[32];
};

static void failover_summarize(struct failover_result *f)
{
    double v[32];
    int n = 0;
    for (int i = 0; i < f->trials; i++)
        if (f->all[i] >= 0)
            v[n++] = f->all[i];
    f->ok = n;
    if (n == 0)
        return;
    qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
    f->median_ms = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    f->max_ms = v[n - 1];
}

/* ---------------------------------------------------------------------------------------------------- */
/* Output                                                                                               */

static void loadavg(char *buf, size_t len)
{
    FILE *f = fopen("/proc/loadavg", "r");
    buf[0] = 0;
    if (f) {
        if (fgets(buf, (int)len, f))
            buf[strcspn(buf, "\n")] = 0;
        fclose(f);
    }
}

static void fmt_result(char *buf, size_t len, const struct result *r)
{
    if (!r->valid)
        snprintf(buf, len, "%-30s", "-");
    else
        snprintf(buf, len, "%8.0f/s %6.2f %7.2f ms", r->ops_s, r->p50_ms, r->p99_ms);
}

static void print_row(const char *name, const struct result *e, const struct result *s)
{
    char eb[64], sb[64], ratio[32] = "-";
    fmt_result(eb, sizeof(eb), e);
    fmt_result(sb, sizeof(sb), s);
    if (e->valid && s->valid && e->ops_s > 0)
        snprintf(ratio, sizeof(ratio), "%.2fx", s->ops_s / e->ops_s);
    printf("%-22s %-30s %-30s %8s\n", name, eb, sb, ratio);
    if (e->errors || s->errors)
        printf("%-22s errors: etcd %llu, SynodFS %llu\n", "", (unsigned long long)e->errors,
               (unsigned long long)s->errors);
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_paxos --meta PATH [--etcd PATH] [--secs S] [--trials N] [--dir DIR] "
                    "[--only etcd|synod] [--keep]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *meta_bin = NULL, *etcd_bin = "/usr/bin/etcd", *base = "/var/tmp", *only = NULL;
    double secs = 5.0;
    int trials = 5;
    static const struct option opts[] = {{"meta", 1, 0, 'm'},   {"etcd", 1, 0, 'e'}, {"secs", 1, 0, 's'},
                                         {"trials", 1, 0, 't'}, {"dir", 1, 0, 'd'},  {"only", 1, 0, 'o'},
                                         {"keep", 0, 0, 'k'},   {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'm':
            meta_bin = optarg;
            break;
        case 'e':
            etcd_bin = optarg;
            break;
        case 's':
            secs = atof(optarg);
            break;
        case 't':
            trials = atoi(optarg);
            break;
        case 'd':
            base = optarg;
            break;
        case 'o':
            only = optarg;
            break;
        case 'k':
            g_keep = true;
            break;
        default:
            usage();
        }
    }
    bool run_etcd = !only || strcmp(only, "etcd") == 0;
    bool run_synod = !only || strcmp(only, "synod") == 0;
    if (secs <= 0 || trials < 0 || trials > 32 || (run_synod && !meta_bin))
        usage();
    if (run_etcd && access(etcd_bin, X_OK)) {
        fprintf(stderr, "bench_paxos: %s not found (ops/install-deps --bench installs etcd-server)\n",
                etcd_bin);
        return 1;
    }
    if (run_synod && access(meta_bin, X_OK)) {
        fprintf(stderr, "bench_paxos: %s not found or not executable\n", meta_bin);
        return 1;
    }
    log_init("bench_paxos", LOG_LVL_ERROR);
    g_verbose = getenv("BENCH_PAXOS_VERBOSE") != NULL;
    for (size_t i = 0; i < VALUE_LEN; i++)
        g_value[i] = (uint8_t)('a' + i % 26);

    snprintf(g_dir, sizeof(g_dir), "%s/bench-paxos.XXXXXX", base);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "bench_paxos: mkdtemp in %s: %s\n", base, strerror(errno));
        return 1;
    }
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    static struct cluster etcd, synod;
    struct cluster *cl[2];
    int ncl = 0;
    if (run_etcd) {
        etcd_setup(&etcd, etcd_bin);
        cl[ncl++] = g_clusters[0] = &etcd;
    }
    if (run_synod) {
        synod_setup(&synod, meta_bin);
        cl[ncl++] = g_clusters[1] = &synod;
    }
    for (int k = 0; k < ncl; k++)
        for (int i = 0; i < NNODES; i++)
            node_start(&cl[k]->nodes[i]);
    for (int k = 0; k < ncl; k++) {
        if (find_leader(cl[k], 30.0) < 0) {
            fprintf(stderr, "bench_paxos: %s did not elect a leader in 30 s; logs in %s\n", cl[k]->name,
                    g_dir);
            g_keep = true;
            return 1;
        }
    }

    char la[128];
    loadavg(la, sizeof(la));
    printf("consensus benchmark: etcd %s vs SynodFS synod-meta (kv), 3 replicas each on loopback, fsync on\n",
           run_etcd ? "(/usr/bin/etcd)" : "(not run)");
    printf("data in %s; %.1f s measured per case after %.1f s warmup; 16 B keys, 64 B values; "
           "loadavg at start: %s\n\n",
           g_dir, secs, WARMUP_S, la);
    printf("%-22s %-30s %-30s %8s\n", "case", "etcd  ops/s  p50  p99", "SynodFS  ops/s  p50  p99",
           "Synod/etcd");

    static const struct {
        const char *name;
        enum op_kind op;
        int window;
    } cases[] = {
        {"writes, 1 in flight", OP_PUT, 1},
        {"writes, 64 in flight", OP_PUT, 64},
        {"writes, 256 in flight", OP_PUT, 256},
        {"lin. reads, 64 in fl.", OP_GET, 64},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct result e = {0}, s = {0};
        if (run_etcd)
            e = run_case(&etcd, cases[i].op, cases[i].window, secs);
        if (run_synod)
            s = run_case(&synod, cases[i].op, cases[i].window, secs);
        print_row(cases[i].name, &e, &s);
    }

    if (trials > 0) {
        struct failover_result fe = {.trials = trials}, fs = {.trials = trials};
        for (int t = 0; t < trials; t++) {
            if (run_etcd)
                fe.all[t] = failover_trial(&etcd);
            if (run_synod)
                fs.all[t] = failover_trial(&synod);
        }
        failover_summarize(&fe);
        failover_summarize(&fs);
        printf("\nfailover: kill -9 of the leader under %d writers -> first successful write issued after "
               "the kill\n",
               FAILOVER_WINDOW);
        for (int k = 0; k < 2; k++) {
            struct failover_result *f = k ? &fs : &fe;
            if (!(k ? run_synod : run_etcd))
                continue;
            printf("%-8s median %7.0f ms  max %7.0f ms  (%d/%d trials ok:", k ? "SynodFS" : "etcd",
                   f->median_ms, f->max_ms, f->ok, f->trials);
            for (int t = 0; t < f->trials; t++)
                printf(" %.0f", f->all[t]);
            printf(")\n");
        }
        if (run_etcd && run_synod && fe.ok && fs.ok)
            printf("ratio SynodFS/etcd: median %.2fx, max %.2fx (lower is better)\n",
                   fs.median_ms / fe.median_ms, fs.max_ms / fe.max_ms);
    }
    loadavg(la, sizeof(la));
    printf("\nloadavg at end: %s\n", la);
    fflush(stdout);
    cleanup();
    rpc_client_shutdown();
    for (int k = 0; k < ncl; k++)
        for (int i = 0; i < NNODES; i++)
            node_free_args(&cl[k]->nodes[i]);
    return 0;
}
