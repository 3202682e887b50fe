/* bench_meta.c - metadata operations of SynodFS over RPC (no FUSE): creates, stats (Getattr and Lookup),
 * renames and unlinks per second, with p50/p99 latency, from 1 client and from 16 concurrent clients, side by
 * side in the same run with the same operations on etcd, the named peer (a file system's namespace kept in
 * etcd, modelled below at "the same operations on etcd"), as ratios.
 *
 * WHAT RUNS. 3 synod-meta with state_machine = namespace on loopback (free ports, data directories under
 * one temporary directory on the real disk, default settings: every chosen Paxos slot is fsynced), and 3 etcd
 * members (Debian's /usr/bin/etcd, default settings: its WAL is fsynced before a write answers; --etcd PATH,
 * or --no-etcd to skip it). Both clusters stay up; they take turns (all SynodFS phases of a round, then all
 * etcd phases), so only one is loaded at a time. Every child is killed by PID on exit (also on
 * SIGINT/SIGTERM; PR_SET_PDEATHSIG kills them if this process dies) and the temporary directory is removed
 * (unless --keep).
 *
 * CLIENTS. A client is a thread doing blocking rpc_call's of the Meta service (proto/meta.proto), or of
 * etcd's KV service (ops/bench/common/etcd_min.proto), one at a time. A SynodFS client opens its own session
 * (SessionOpen) and sends ReqId(session, seq) on every mutating call; a failed attempt (ENOTCONN, EAGAIN,
 * EREMOTE, ETIMEDOUT, ECANCELED) is retried with the same ReqId, after following an EREMOTE
 * "leader=host:port" hint (or moving to the next node). Latency of an op is from the first attempt to the
 * final answer (retries included; their count is printed). All client threads share the RPC layer's one
 * channel (one HTTP/2 connection) per server, as threads of one process do; separate client machines or
 * processes would each have their own.
 *
 * PHASES, per client count, each ending after --ops ops per client or --secs seconds, whichever is first:
 *   create   Mknod S_IFREG|0644 of f<k> in the client's own directory (made before, not measured)
 *   getattr  Getattr of a random file this client created
 *   lookup   Lookup(dir, f<k>) of a random file this client created
 *   rename   f<k> -> r<k> in the same directory, k = 0, 1, ...
 *   unlink   every file created (under its current name), k = 0, 1, ...
 * ops/s = successful ops of all clients / (last client's end - first client's start).
 * cpu us and cs = CPU time (user + system, in us) and context switches (voluntary + involuntary, every
 * thread) of the three synod-meta processes during the phase, per successful op, from /proc: the server-side
 * cost of an op (of the three etcd members in etcd's rows). Context switches per op hardly depend on what
 * else runs on the machine; CPU per op does (it grows by up to 2-3x on a busy shared 2-core VM, as throughput
 * and latency vary even more), so compare runs at similar load. cl us = CPU time of this process (all client
 * threads and their RPC layer) per op: on this shared machine the clients compete with the daemons for the
 * same cores, which separate client machines would not.
 * --many-only skips the 1-client round (for profiling the 16-client phases).
 *
 *   bench_meta --meta PATH/synod-meta [--etcd /usr/bin/etcd | --no-etcd] [--secs 3] [--ops 10000]
 *              [--clients 16] [--dir /var/tmp] [--keep] [--many-only]
 * BENCH_META_TIMES=1 prints each phase's CLOCK_MONOTONIC span and CPU per op per daemon on stderr (to line up
 * with perf record -k CLOCK_MONOTONIC).
 */
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "meta.pb-c.h"

#include "bench_etcd.h"
#include "bench_proc.h"
#include "etcd_min.pb-c.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NNODES       3
#define MAX_CLIENTS  64
#define CALL_TIMEOUT 5000 /* ms per attempt */
#define GIVEUP_NS    (30 * NS_PER_SEC)
#define NAME_LEN     16

/* ---------------------------------------------------------------------------------------------------- */
/* Child processes: started, killed and reaped by PID only.                                            */

static char g_dir[256];
static bool g_keep;
static pid_t g_pids[NNODES];
static char g_addrs[NNODES][64];
static pid_t g_etcd_pids[NNODES]; /* the etcd members (none with --no-etcd) */
static char g_etcd_addrs[NNODES][64];

static void kill_children(void)
{
    for (int i = 0; i < NNODES; i++) {
        pid_t *pp[2] = {&g_pids[i], &g_etcd_pids[i]};
        for (int k = 0; k < 2; k++)
            if (*pp[k] > 0) {
                kill(*pp[k], SIGKILL);
                waitpid(*pp[k], NULL, 0);
                *pp[k] = 0;
            }
    }
}

static void cleanup(void)
{
    kill_children();
    if (g_dir[0] && !g_keep)
        bench_rm_tree(g_dir);
    else if (g_dir[0])
        fprintf(stderr, "bench_meta: kept %s\n", g_dir);
    g_dir[0] = 0;
}

static void on_signal(int sig)
{
    cleanup(); /* not async-signal-safe in theory; acceptable for an interrupted benchmark */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void start_cluster(const char *meta_bin)
{
    char peers[256] = "";
    for (int i = 0; i < NNODES; i++) {
        snprintf(g_addrs[i], sizeof(g_addrs[i]), "127.0.0.1:%d", bench_free_port());
        strcat(peers, i ? "," : "");
        strcat(peers, g_addrs[i]);
    }
    for (int i = 0; i < NNODES; i++) {
        char conf[PATH_MAX], data[PATH_MAX], logp[PATH_MAX];
        snprintf(data, sizeof(data), "%s/meta%d", g_dir, i);
        snprintf(conf, sizeof(conf), "%s/meta%d.conf", g_dir, i);
        snprintf(logp, sizeof(logp), "%s/meta%d.log", g_dir, i);
        FILE *f = fopen(conf, "w");
        if (!f)
            PANIC("cannot write %s: %s", conf, strerror(errno));
        fprintf(f,
                "# written by bench_meta\nstate_machine = namespace\nnode_id = %d\npeers = %s\nlisten = %s\n"
                "data_dir = %s\nlog_level = warn\n",
                i, peers, g_addrs[i], data);
        /* BENCH_META_CONF: extra config lines ("key = value;key = value"), for A/B runs of settings. */
        const char *extra = getenv("BENCH_META_CONF");
        for (const char *p = extra; p && *p;) {
            size_t n = strcspn(p, ";");
            fprintf(f, "%.*s\n", (int)n, p);
            p += n + (p[n] == ';');
        }
        fclose(f);
        char *const argv[] = {(char *)meta_bin, "-c", conf, NULL};
        g_pids[i] = bench_spawn(argv, logp);
    }
}

/* 3 etcd members on loopback (Debian's etcd, default settings: the WAL is fsynced before a write answers). */
static void start_etcd(const char *etcd_bin)
{
    int peer[NNODES];
    for (int i = 0; i < NNODES; i++) {
        peer[i] = bench_free_port();
        snprintf(g_etcd_addrs[i], sizeof(g_etcd_addrs[i]), "127.0.0.1:%d", bench_free_port());
    }
    char token[64], logp[PATH_MAX];
    snprintf(token, sizeof(token), "bench-meta-%d", (int)getpid());
    for (int i = 0; i < NNODES; i++) {
        char *argv[BENCH_ETCD_ARGS];
        bench_etcd_args(etcd_bin, g_dir, token, i, NNODES, g_etcd_addrs, peer, argv);
        snprintf(logp, sizeof(logp), "%s/etcd%d.log", g_dir, i);
        g_etcd_pids[i] = bench_spawn(argv, logp);
        bench_etcd_free_args(argv);
    }
}

/* The etcd leader, once every member agrees on it; -1 after wait_s. */
static int find_etcd_leader(double wait_s)
{
    uint64_t end = clk_mono_ns() + (uint64_t)(wait_s * 1e9);
    bool alive[NNODES];
    for (int i = 0; i < NNODES; i++)
        alive[i] = g_etcd_pids[i] > 0;
    do {
        int l = bench_etcd_leader(g_etcd_addrs, alive, NNODES);
        if (l >= 0)
            return l;
        clk_sleep_ns(100 * NS_PER_MS);
    } while (clk_mono_ns() < end);
    return -1;
}

/* The leader: a node that answers Getattr(root) itself (followers answer EREMOTE); -1 after wait_s. */
static int find_leader(double wait_s)
{
    uint64_t end = clk_mono_ns() + (uint64_t)(wait_s * 1e9);
    do {
        for (int i = 0; i < NNODES; i++) {
            Synod__V1__GetattrReq q = SYNOD__V1__GETATTR_REQ__INIT;
            q.ino = 1;
            if (rpc_call(rpc_channel_get(g_addrs[i]), &synod__v1__meta__descriptor, "Getattr", &q.base, NULL,
                         500, NULL, NULL) == 0)
                return i;
        }
        clk_sleep_ns(50 * NS_PER_MS);
    } while (clk_mono_ns() < end);
    return -1;
}

static int node_of(const char *detail)
{
    const char *p = strstr(detail, "leader=");
    if (!p)
        return -1;
    p += strlen("leader=");
    size_t n = strcspn(p, " ,;");
    for (int i = 0; i < NNODES; i++)
        if (strlen(g_addrs[i]) == n && strncmp(g_addrs[i], p, n) == 0)
            return i;
    return -1;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Clients                                                                                               */

enum phase { PH_CREATE, PH_GETATTR, PH_LOOKUP, PH_RENAME, PH_UNLINK, PH_COUNT };
static const char *const phase_names[PH_COUNT] = {"create", "getattr", "lookup", "rename", "unlink"};

struct client {
    int id;
    int target;
    uint64_t session, seq;
    uint64_t dir_ino;
    uint64_t *inos; /* [ops] */
    bool *renamed;  /* [ops] */
    int ncreated;
    uint64_t rng;
    /* per phase */
    uint32_t *lat_us; /* [ops] */
    int nlat;
    uint64_t errors, retries, r_eagain, r_eremote;
    uint64_t t0, t1;
    int first_err;
    char tag[32]; /* etcd: this client's key prefix part "<round>-<clients>-<id>" */
};

enum sys { SYS_SYNOD, SYS_ETCD, SYS_COUNT };
static const char *const sys_names[SYS_COUNT] = {"SynodFS", "etcd"};
static enum sys g_sys;
static int g_etcd_leader = -1;

static Synod__V1__Cred g_root = SYNOD__V1__CRED__INIT;
static int g_ops = 10000;
static double g_secs = 3.0;
static pthread_barrier_t g_barrier;
static enum phase g_phase;

static bool retryable(int rc)
{
    return rc == -ENOTCONN || rc == -EAGAIN || rc == -EREMOTE || rc == -ETIMEDOUT || rc == -ECANCELED;
}

/* One Meta call with failover (same request, so the same ReqId): 0 or the final -errno. */
static int mcall(struct client *c, const char *method, const ProtobufCMessage *req, ProtobufCMessage **rep)
{
    uint64_t giveup = clk_mono_ns() + GIVEUP_NS;
    for (;;) {
        struct rpc_status st;
        int rc = rpc_call(rpc_channel_get(g_addrs[c->target]), &synod__v1__meta__descriptor, method, req,
                          NULL, CALL_TIMEOUT, rep, &st);
        if (!retryable(rc) || clk_mono_ns() > giveup)
            return rc;
        c->retries++;
        c->r_eagain += rc == -EAGAIN;
        c->r_eremote += rc == -EREMOTE;
        int hint = rc == -EREMOTE ? node_of(st.detail) : -1;
        if (hint >= 0 && hint != c->target) {
            c->target = hint;
            continue;
        }
        if (rc != -EAGAIN)
            c->target = (c->target + 1) % NNODES;
        clk_sleep_ns(rc == -EAGAIN ? 200 * NS_PER_US : 5 * NS_PER_MS);
    }
}

static Synod__V1__ReqId *next_rid(struct client *c, Synod__V1__ReqId *r)
{
    synod__v1__req_id__init(r);
    r->session = c->session;
    r->seq = ++c->seq;
    return r;
}

static uint64_t rnd(struct client *c)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return c->rng;
}

static int do_create(struct client *c, int k)
{
    char name[NAME_LEN];
    snprintf(name, sizeof(name), "f%d", k);
    Synod__V1__ReqId rid;
    Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
    r.rid = next_rid(c, &rid);
    r.cred = &g_root;
    r.parent = c->dir_ino;
    r.name = name;
    r.mode = S_IFREG | 0644;
    Synod__V1__CreateRep *rep = NULL;
    int rc = mcall(c, "Mknod", &r.base, (ProtobufCMessage **)&rep);
    if (rc == 0) {
        c->inos[k] = rep->attr ? rep->attr->ino : 0;
        c->ncreated = k + 1;
        rpc_message_free(&rep->base);
    }
    return rc;
}

static int do_getattr(struct client *c)
{
    Synod__V1__GetattrReq r = SYNOD__V1__GETATTR_REQ__INIT;
    r.ino = c->inos[rnd(c) % (uint64_t)c->ncreated];
    return mcall(c, "Getattr", &r.base, NULL);
}

static int do_lookup(struct client *c)
{
    char name[NAME_LEN];
    snprintf(name, sizeof(name), "f%d", (int)(rnd(c) % (uint64_t)c->ncreated));
    Synod__V1__LookupReq r = SYNOD__V1__LOOKUP_REQ__INIT;
    r.cred = &g_root;
    r.parent = c->dir_ino;
    r.name = name;
    return mcall(c, "Lookup", &r.base, NULL);
}

static int do_rename(struct client *c, int k)
{
    char from[NAME_LEN], to[NAME_LEN];
    snprintf(from, sizeof(from), "f%d", k);
    snprintf(to, sizeof(to), "r%d", k);
    Synod__V1__ReqId rid;
    Synod__V1__RenameReq r = SYNOD__V1__RENAME_REQ__INIT;
    r.rid = next_rid(c, &rid);
    r.cred = &g_root;
    r.parent = r.new_parent = c->dir_ino;
    r.name = from;
    r.new_name = to;
    int rc = mcall(c, "Rename", &r.base, NULL);
    if (rc == 0)
        c->renamed[k] = true;
    return rc;
}

static int do_unlink(struct client *c, int k)
{
    char name[NAME_LEN];
    snprintf(name, sizeof(name), "%c%d", c->renamed[k] ? 'r' : 'f', k);
    Synod__V1__ReqId rid;
    Synod__V1__UnlinkReq r = SYNOD__V1__UNLINK_REQ__INIT;
    r.rid = next_rid(c, &rid);
    r.cred = &g_root;
    r.parent = c->dir_ino;
    r.name = name;
    return mcall(c, "Unlink", &r.base, NULL);
}

/* ---- the same operations on etcd ------------------------------------------------------------------------
 * A file system keeping its namespace in etcd (as JuiceFS can) stores a directory entry "d/<dir>/<name>" ->
 * inode number and an inode "i/<ino>" -> attributes (64 bytes here), and changes them in transactions:
 *   create  Txn: if d/<dir>/f<k> does not exist -> put the entry, the new inode, the directory's attributes
 *   getattr Range i/<ino> (linearizable: etcd's ReadIndex)
 *   lookup  Range d/<dir>/f<k> (linearizable)
 *   rename  Txn: if d/<dir>/f<k> exists -> delete it, put d/<dir>/r<k>, the inode's and the directory's attrs
 *   unlink  Txn: if the entry exists -> delete it and the inode, put the directory's attributes
 * Each is one Raft entry, fsynced on a quorum before it answers, as a SynodFS create is one Paxos command.
 * Fewer checks than SynodFS makes (permissions, types, link counts), so etcd's side is, if anything,
 * favoured. Failed attempts (leader change, timeout) are retried; a failed compare is an error (EEXIST or
 * ENOENT), which never happens in a clean run. */

static const char g_attr[64] = "mode=0100644 uid=0 gid=0 nlink=1 size=0 mtime=ctime=1700000000"; /* 64 B */

static int ecall(struct client *c, const char *method, const ProtobufCMessage *req, ProtobufCMessage **rep)
{
    uint64_t giveup = clk_mono_ns() + GIVEUP_NS;
    for (;;) {
        int rc = rpc_call(rpc_channel_get(g_etcd_addrs[c->target]), &etcdserverpb__kv__descriptor, method,
                          req, NULL, CALL_TIMEOUT, rep, NULL);
        if (!retryable(rc) || clk_mono_ns() > giveup)
            return rc;
        c->retries++;
        clk_sleep_ns(5 * NS_PER_MS);
        int l = find_etcd_leader(1.0);
        c->target = l >= 0 ? l : (c->target + 1) % NNODES;
    }
}

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

static void op_put(Etcdserverpb__RequestOp *op, Etcdserverpb__PutRequest *put, const char *key,
                   const char *val, size_t vlen)
{
    etcdserverpb__request_op__init(op);
    etcdserverpb__put_request__init(put);
    put->key = bin(key);
    put->value = (ProtobufCBinaryData){vlen, (uint8_t *)val};
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = put;
}

static void op_del(Etcdserverpb__RequestOp *op, Etcdserverpb__DeleteRangeRequest *del, const char *key)
{
    etcdserverpb__request_op__init(op);
    etcdserverpb__delete_range_request__init(del);
    del->key = bin(key);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op->request_delete_range = del;
}

/* Txn: if `key` exists (exists) or not (!exists), run the n ops; 0, -EEXIST/-ENOENT if the compare failed,
 * or the RPC error. */
static int etxn(struct client *c, const char *key, bool exists, Etcdserverpb__RequestOp **ops, size_t n)
{
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
    cmp.result = exists ? ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER
                        : ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
    cmp.key = bin(key);
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    cmp.create_revision = 0;
    Etcdserverpb__Compare *cmps[1] = {&cmp};
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.n_compare = 1;
    t.compare = cmps;
    t.n_success = n;
    t.success = ops;
    Etcdserverpb__TxnResponse *rep = NULL;
    int rc = ecall(c, "Txn", &t.base, (ProtobufCMessage **)&rep);
    if (rc == 0) {
        if (!rep->succeeded)
            rc = exists ? -ENOENT : -EEXIST;
        rpc_message_free(&rep->base);
    }
    return rc;
}

static int erange(struct client *c, const char *key)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = bin(key);
    Etcdserverpb__RangeResponse *rep = NULL;
    int rc = ecall(c, "Range", &r.base, (ProtobufCMessage **)&rep);
    if (rc == 0) {
        if (rep->n_kvs != 1)
            rc = -ENOENT;
        rpc_message_free(&rep->base);
    }
    return rc;
}

static void ekey(char *buf, size_t len, const struct client *c, char kind, char prefix, int k)
{
    if (kind == 'd')
        snprintf(buf, len, "d/%s/%c%d", c->tag, prefix, k);
    else if (k < 0)
        snprintf(buf, len, "i/%s", c->tag); /* the directory's own inode */
    else
        snprintf(buf, len, "i/%s-%d", c->tag, k);
}

static int etcd_create(struct client *c, int k)
{
    char dent[64], ino[64], dir[64];
    ekey(dent, sizeof(dent), c, 'd', 'f', k);
    ekey(ino, sizeof(ino), c, 'i', 0, k);
    ekey(dir, sizeof(dir), c, 'i', 0, -1);
    Etcdserverpb__RequestOp o[3], *ops[3] = {&o[0], &o[1], &o[2]};
    Etcdserverpb__PutRequest p[3];
    op_put(&o[0], &p[0], dent, ino, strlen(ino));
    op_put(&o[1], &p[1], ino, g_attr, sizeof(g_attr));
    op_put(&o[2], &p[2], dir, g_attr, sizeof(g_attr));
    int rc = etxn(c, dent, false, ops, 3);
    if (rc == 0)
        c->ncreated = k + 1;
    return rc;
}

static int etcd_getattr(struct client *c)
{
    char ino[64];
    ekey(ino, sizeof(ino), c, 'i', 0, (int)(rnd(c) % (uint64_t)c->ncreated));
    return erange(c, ino);
}

static int etcd_lookup(struct client *c)
{
    char dent[64];
    ekey(dent, sizeof(dent), c, 'd', 'f', (int)(rnd(c) % (uint64_t)c->ncreated));
    return erange(c, dent);
}

static int etcd_rename(struct client *c, int k)
{
    char from[64], to[64], ino[64], dir[64];
    ekey(from, sizeof(from), c, 'd', 'f', k);
    ekey(to, sizeof(to), c, 'd', 'r', k);
    ekey(ino, sizeof(ino), c, 'i', 0, k);
    ekey(dir, sizeof(dir), c, 'i', 0, -1);
    Etcdserverpb__RequestOp o[4], *ops[4] = {&o[0], &o[1], &o[2], &o[3]};
    Etcdserverpb__DeleteRangeRequest d;
    Etcdserverpb__PutRequest p[3];
    op_del(&o[0], &d, from);
    op_put(&o[1], &p[0], to, ino, strlen(ino));
    op_put(&o[2], &p[1], ino, g_attr, sizeof(g_attr));
    op_put(&o[3], &p[2], dir, g_attr, sizeof(g_attr));
    int rc = etxn(c, from, true, ops, 4);
    if (rc == 0)
        c->renamed[k] = true;
    return rc;
}

static int etcd_unlink(struct client *c, int k)
{
    char dent[64], ino[64], dir[64];
    ekey(dent, sizeof(dent), c, 'd', c->renamed[k] ? 'r' : 'f', k);
    ekey(ino, sizeof(ino), c, 'i', 0, k);
    ekey(dir, sizeof(dir), c, 'i', 0, -1);
    Etcdserverpb__RequestOp o[3], *ops[3] = {&o[0], &o[1], &o[2]};
    Etcdserverpb__DeleteRangeRequest d[2];
    Etcdserverpb__PutRequest p;
    op_del(&o[0], &d[0], dent);
    op_del(&o[1], &d[1], ino);
    op_put(&o[2], &p, dir, g_attr, sizeof(g_attr));
    return etxn(c, dent, true, ops, 3);
}

static int run_op(struct client *c, enum phase ph, int k)
{
    bool e = g_sys == SYS_ETCD;
    switch (ph) {
    case PH_CREATE:
        return e ? etcd_create(c, k) : do_create(c, k);
    case PH_GETATTR:
        return e ? etcd_getattr(c) : do_getattr(c);
    case PH_LOOKUP:
        return e ? etcd_lookup(c) : do_lookup(c);
    case PH_RENAME:
        return e ? etcd_rename(c, k) : do_rename(c, k);
    case PH_UNLINK:
        return e ? etcd_unlink(c, k) : do_unlink(c, k);
    default:
        return -EINVAL;
    }
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    enum phase ph = g_phase;
    c->nlat = 0;
    c->errors = c->retries = c->r_eagain = c->r_eremote = 0;
    c->first_err = 0;
    /* keep the session alive across the read-only phases, like the real client (every 2 s, not measured):
     * reads do not touch the session, and a lease of 10 s would lapse over two long read phases */
    Synod__V1__SessionKeepaliveReq ka = SYNOD__V1__SESSION_KEEPALIVE_REQ__INIT;
    ka.session = c->session;
    ka.opens_report = true; /* like synod-mount: this client's open files (none), so the leader may purge */
    uint64_t last_ka = clk_mono_ns();
    bool synod = g_sys == SYS_SYNOD;
    if (synod && (ph == PH_RENAME || ph == PH_UNLINK))
        mcall(c, "SessionKeepalive", &ka.base, NULL);
    int limit = ph == PH_RENAME || ph == PH_UNLINK ? c->ncreated : g_ops;
    pthread_barrier_wait(&g_barrier);
    c->t0 = clk_mono_ns();
    uint64_t end = c->t0 + (uint64_t)(g_secs * 1e9);
    for (int k = 0; k < limit; k++) {
        uint64_t t = clk_mono_ns();
        if (t >= end)
            break;
        if (synod && (ph == PH_GETATTR || ph == PH_LOOKUP) && t - last_ka > 2 * NS_PER_SEC) {
            mcall(c, "SessionKeepalive", &ka.base, NULL);
            last_ka = t = clk_mono_ns();
        }
        if (ph != PH_CREATE && c->ncreated == 0)
            break;
        int rc = run_op(c, ph, k);
        uint64_t d = clk_mono_ns() - t;
        if (rc == 0) {
            c->lat_us[c->nlat++] = (uint32_t)(d / NS_PER_US);
        } else {
            if (!c->first_err)
                c->first_err = rc;
            c->errors++;
        }
    }
    c->t1 = clk_mono_ns();
    return NULL;
}

/* CPU time (us) and context switches of every daemon thread, from /proc: the server side of a phase. */
struct usage {
    uint64_t cpu_us, ctxsw;
    uint64_t node_us[NNODES];
};

/* CPU time (user + system, us) of this process: the clients' side of an op. */
static uint64_t self_cpu_us(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return 0;
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static struct usage daemons_usage(const pid_t *pids)
{
    struct usage u = {0};
    long hz = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < NNODES; i++) {
        if (pids[i] <= 0)
            continue;
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pids[i]);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            buf[n] = 0;
            fclose(f);
            const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
            unsigned long ut = 0, st = 0;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
                u.node_us[i] = (uint64_t)(ut + st) * 1000000u / (uint64_t)hz;
            u.cpu_us += u.node_us[i];
        }
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pids[i]);
        DIR *d = opendir(path);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (e->d_name[0] == '.')
                continue;
            char sp[300];
            snprintf(sp, sizeof(sp), "/proc/%d/task/%s/status", (int)pids[i], e->d_name);
            FILE *sf = fopen(sp, "r");
            while (sf && fgets(buf, sizeof(buf), sf)) {
                unsigned long long v;
                if (sscanf(buf, "voluntary_ctxt_switches: %llu", &v) == 1 ||
                    sscanf(buf, "nonvoluntary_ctxt_switches: %llu", &v) == 1)
                    u.ctxsw += v;
            }
            if (sf)
                fclose(sf);
        }
        if (d)
            closedir(d);
    }
    return u;
}

struct result {
    double cpu_us_op, cs_op; /* synod-meta CPU time and context switches (all 3 daemons) per op */
    double client_us_op;     /* this process's CPU time (every client thread and the RPC layer's) per op */
    double ops_s, p50_ms, p99_ms;
    uint64_t n, errors, retries, r_eagain, r_eremote;
    int first_err;
};

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static struct result run_phase(struct client *cl, int n, enum phase ph)
{
    g_phase = ph;
    pthread_barrier_init(&g_barrier, NULL, (unsigned)n);
    pthread_t th[MAX_CLIENTS];
    const pid_t *pids = g_sys == SYS_ETCD ? g_etcd_pids : g_pids;
    struct usage u0 = daemons_usage(pids);
    uint64_t c0 = self_cpu_us();
    for (int i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, client_main, &cl[i]))
            PANIC("pthread_create");
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_barrier);
    struct usage u1 = daemons_usage(pids);
    uint64_t c1 = self_cpu_us();
    struct result r = {0};
    uint64_t t0 = UINT64_MAX, t1 = 0;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += (size_t)cl[i].nlat;
    uint32_t *all = xcalloc(total + 1, sizeof(*all));
    size_t j = 0;
    for (int i = 0; i < n; i++) {
        memcpy(all + j, cl[i].lat_us, (size_t)cl[i].nlat * sizeof(*all));
        j += (size_t)cl[i].nlat;
        t0 = cl[i].t0 < t0 ? cl[i].t0 : t0;
        t1 = cl[i].t1 > t1 ? cl[i].t1 : t1;
        r.errors += cl[i].errors;
        r.retries += cl[i].retries;
        r.r_eagain += cl[i].r_eagain;
        r.r_eremote += cl[i].r_eremote;
        if (!r.first_err)
            r.first_err = cl[i].first_err;
    }
    qsort(all, total, sizeof(*all), cmp_u32);
    r.n = total;
    if (getenv(
            "BENCH_META_TIMES")) /* CLOCK_MONOTONIC span of the phase, for perf record -k CLOCK_MONOTONIC */
        fprintf(stderr, "%s phase %s x%d: %.6f-%.6f; us/op per node: %.0f %.0f %.0f\n", sys_names[g_sys],
                phase_names[ph], n, (double)t0 / 1e9, (double)t1 / 1e9,
                (double)(u1.node_us[0] - u0.node_us[0]) / (double)MAX(total, 1),
                (double)(u1.node_us[1] - u0.node_us[1]) / (double)MAX(total, 1),
                (double)(u1.node_us[2] - u0.node_us[2]) / (double)MAX(total, 1));
    if (total) {
        r.ops_s = (double)total / ((double)(t1 - t0) / 1e9);
        r.p50_ms = all[total / 2] / 1000.0;
        r.p99_ms = all[(size_t)((double)total * 0.99)] / 1000.0;
        r.cpu_us_op = (double)(u1.cpu_us - u0.cpu_us) / (double)total;
        r.cs_op = (double)(u1.ctxsw - u0.ctxsw) / (double)total;
        r.client_us_op = (double)(c1 - c0) / (double)total;
    }
    free(all);
    return r;
}

/* Open a session and make the client's directory (not measured). */
static void client_setup(struct client *c, int round, int nclients, int id, int leader)
{
    memset(c, 0, sizeof(*c));
    c->id = id;
    c->target = leader;
    c->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1) + (uint64_t)nclients;
    c->inos = xcalloc((size_t)g_ops, sizeof(*c->inos));
    c->renamed = xcalloc((size_t)g_ops, sizeof(*c->renamed));
    c->lat_us = xcalloc((size_t)g_ops, sizeof(*c->lat_us));
    snprintf(c->tag, sizeof(c->tag), "%d-%d-%d", round, nclients, id);
    if (g_sys == SYS_ETCD) /* no sessions; the "directory" is the key prefix d/<tag>/ */
        return;
    Synod__V1__SessionOpenReq so = SYNOD__V1__SESSION_OPEN_REQ__INIT;
    char cname[64];
    snprintf(cname, sizeof(cname), "bench-meta-r%d-%d-%d", round, nclients, id);
    so.client_name = cname;
    Synod__V1__SessionOpenRep *sr = NULL;
    int rc = mcall(c, "SessionOpen", &so.base, (ProtobufCMessage **)&sr);
    if (rc)
        PANIC("SessionOpen: %s", strerror(-rc));
    c->session = sr->session;
    rpc_message_free(&sr->base);
    char dname[NAME_LEN + 16];
    snprintf(dname, sizeof(dname), "r%d-c%d-%d", round, nclients, id); /* --clients 1: both rounds have 1 */
    Synod__V1__ReqId rid;
    Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
    r.rid = next_rid(c, &rid);
    r.cred = &g_root;
    r.parent = 1;
    r.name = dname;
    r.mode = S_IFDIR | 0755;
    Synod__V1__CreateRep *rep = NULL;
    rc = mcall(c, "Mknod", &r.base, (ProtobufCMessage **)&rep);
    if (rc || !rep->attr)
        PANIC("mkdir %s: %s", dname, strerror(-rc));
    c->dir_ino = rep->attr->ino;
    rpc_message_free(&rep->base);
}

static void client_free(struct client *c)
{
    if (g_sys == SYS_SYNOD) {
        Synod__V1__SessionCloseReq q = SYNOD__V1__SESSION_CLOSE_REQ__INIT;
        q.session = c->session;
        mcall(c, "SessionClose", &q.base, NULL);
    }
    free(c->inos);
    free(c->renamed);
    free(c->lat_us);
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

static void print_row(enum sys sy, int nclients, enum phase ph, const struct result *r)
{
    printf("%-8s %7d  %-8s %10.0f %9.3f %9.3f %8llu %7llu %7llu %8.0f %6.1f %7.0f", sys_names[sy], nclients,
           phase_names[ph], r->ops_s, r->p50_ms, r->p99_ms, (unsigned long long)r->n,
           (unsigned long long)r->errors, (unsigned long long)r->retries, r->cpu_us_op, r->cs_op,
           r->client_us_op);
    if (r->retries)
        printf("  (retries: %llu EAGAIN, %llu EREMOTE, %llu other)", (unsigned long long)r->r_eagain,
               (unsigned long long)r->r_eremote,
               (unsigned long long)(r->retries - r->r_eagain - r->r_eremote));
    if (r->errors)
        printf("  (first error: %s)", strerror(-r->first_err));
    printf("\n");
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_meta --meta PATH [--etcd PATH | --no-etcd] [--secs S] [--ops N] [--clients N]\n"
            "                  [--dir DIR] [--keep] [--many-only]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *meta_bin = NULL, *base = "/var/tmp";
    int many = 16;
    bool many_only = false;
    const char *etcd_bin = access("/usr/bin/etcd", X_OK) == 0 ? "/usr/bin/etcd" : NULL;
    static const struct option opts[] = {
        {"meta", 1, 0, 'm'},    {"secs", 1, 0, 's'}, {"ops", 1, 0, 'n'},       {"clients", 1, 0, 'c'},
        {"dir", 1, 0, 'd'},     {"keep", 0, 0, 'k'}, {"many-only", 0, 0, 'M'}, {"etcd", 1, 0, 'e'},
        {"no-etcd", 0, 0, 'E'}, {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'm':
            meta_bin = optarg;
            break;
        case 's':
            g_secs = atof(optarg);
            break;
        case 'n':
            g_ops = atoi(optarg);
            break;
        case 'c':
            many = atoi(optarg);
            break;
        case 'd':
            base = optarg;
            break;
        case 'k':
            g_keep = true;
            break;
        case 'M':
            many_only = true;
            break;
        case 'e':
            etcd_bin = optarg;
            break;
        case 'E':
            etcd_bin = NULL;
            break;
        default:
            usage();
        }
    }
    if (!meta_bin || g_secs <= 0 || g_ops <= 0 || many < 1 || many > MAX_CLIENTS)
        usage();
    if (access(meta_bin, X_OK)) {
        fprintf(stderr, "bench_meta: %s not found or not executable\n", meta_bin);
        return 1;
    }
    log_init("bench_meta", LOG_LVL_ERROR);
    snprintf(g_dir, sizeof(g_dir), "%s/bench-meta.XXXXXX", base);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "bench_meta: mkdtemp in %s: %s\n", base, strerror(errno));
        return 1;
    }
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    if (etcd_bin && access(etcd_bin, X_OK)) {
        fprintf(stderr, "bench_meta: %s not found or not executable (--no-etcd to run without it)\n",
                etcd_bin);
        return 1;
    }
    start_cluster(meta_bin);
    if (etcd_bin)
        start_etcd(etcd_bin);
    int leader = find_leader(30.0);
    if (leader < 0) {
        fprintf(stderr, "bench_meta: no leader in 30 s; logs kept in %s\n", g_dir);
        g_keep = true;
        return 1;
    }
    if (etcd_bin && (g_etcd_leader = find_etcd_leader(30.0)) < 0) {
        fprintf(stderr, "bench_meta: etcd elected no leader in 30 s; logs kept in %s\n", g_dir);
        g_keep = true;
        return 1;
    }
    char la[128];
    loadavg(la, sizeof(la));
    printf("metadata benchmark: 3 x synod-meta (namespace) vs the same operations on 3 x etcd (see the "
           "source),\n"
           "loopback, fsync on, over RPC (no FUSE); the two systems take turns, never loaded at once\n");
    printf(
        "SynodFS leader: node %d (%s, pid %d); etcd leader: %s; data in %s; per phase %d ops per client or "
        "%.1f s; loadavg at start: %s\n\n",
        leader, g_addrs[leader], (int)g_pids[leader], etcd_bin ? g_etcd_addrs[g_etcd_leader] : "(not run)",
        g_dir, g_ops, g_secs, la);
    printf("%-8s %7s  %-8s %10s %9s %9s %8s %7s %7s %8s %6s %7s\n", "system", "clients", "op", "ops/s",
           "p50 ms", "p99 ms", "ops", "errors", "retries", "cpu us", "cs", "cl us");

    int counts[2] = {1, many};
    struct result all[SYS_COUNT][2][PH_COUNT] = {0};
    struct result(*res)[PH_COUNT] = all[SYS_SYNOD];
    static struct client cl[MAX_CLIENTS];
    for (int ci = many_only ? 1 : 0; ci < 2; ci++) {
        int n = counts[ci];
        for (int sy = 0; sy < (etcd_bin ? SYS_COUNT : 1); sy++) {
            g_sys = (enum sys)sy;
            for (int i = 0; i < n; i++)
                client_setup(&cl[i], ci, n, i, sy == SYS_ETCD ? g_etcd_leader : leader);
            for (int ph = 0; ph < PH_COUNT; ph++) {
                all[sy][ci][ph] = run_phase(cl, n, (enum phase)ph);
                print_row((enum sys)sy, n, (enum phase)ph, &all[sy][ci][ph]);
            }
            for (int i = 0; i < n; i++)
                client_free(&cl[i]);
        }
    }
    g_sys = SYS_SYNOD;

    if (etcd_bin) {
        printf("\nSynodFS / etcd, measured in this run (ops/s: higher is better; p50: lower is better):\n");
        printf("%7s  %-8s %12s %12s %8s %12s %12s\n", "clients", "op", "SynodFS/s", "etcd/s", "ratio",
               "SynodFS p50", "etcd p50");
        for (int ci = many_only ? 1 : 0; ci < 2; ci++)
            for (int ph = 0; ph < PH_COUNT; ph++) {
                const struct result *a = &all[SYS_SYNOD][ci][ph], *e = &all[SYS_ETCD][ci][ph];
                printf("%7d  %-8s %12.0f %12.0f %7.2fx %9.3f ms %9.3f ms\n", counts[ci], phase_names[ph],
                       a->ops_s, e->ops_s, e->ops_s > 0 ? a->ops_s / e->ops_s : 0.0, a->p50_ms, e->p50_ms);
            }
    }

    /* Reference figures and targets from GitHub issue 5; NOT measured in this run. */
    static const double mfs[PH_COUNT] = {4700, 12900, 12900, 7000, 12200};
    if (!many_only) {
        printf("\nMooseFS through FUSE, one master WITHOUT fsync, 1 client: reference figures quoted in "
               "issue 5,\n"
               "NOT measured in this run (different system, different machine, FUSE in the path):\n");
        printf("%-8s %14s %14s %10s\n", "op", "SynodFS 1 cl.", "MooseFS ref", "ratio");
        for (int ph = 0; ph < PH_COUNT; ph++)
            printf("%-8s %12.0f/s %12.0f/s %9.2fx%s\n", phase_names[ph], res[0][ph].ops_s, mfs[ph],
                   res[0][ph].ops_s / mfs[ph],
                   ph == PH_GETATTR || ph == PH_LOOKUP ? "  (MooseFS 'stats')" : "");
    }
    printf("\ntargets (issue 5; ratios are measured / target):\n");
    printf("  %2d clients, durable creates/s > 15000: %8.0f/s  (%.2fx of target)\n", many,
           res[1][PH_CREATE].ops_s, res[1][PH_CREATE].ops_s / 15000.0);
    printf("  %2d clients, stats/s > 50000:   getattr %8.0f/s  (%.2fx), lookup %8.0f/s  (%.2fx)\n", many,
           res[1][PH_GETATTR].ops_s, res[1][PH_GETATTR].ops_s / 50000.0, res[1][PH_LOOKUP].ops_s,
           res[1][PH_LOOKUP].ops_s / 50000.0);
    if (!many_only)
        printf("   1 client, create latency < 0.5 ms: p50 %.3f ms (%.2fx the target; lower is better), p99 "
               "%.3f ms\n",
               res[0][PH_CREATE].p50_ms, res[0][PH_CREATE].p50_ms / 0.5, res[0][PH_CREATE].p99_ms);
    if (many != 16)
        printf("  (note: the targets are stated for 16 clients; this run used %d)\n", many);
    int leader_end = find_leader(5.0);
    if (leader_end != leader)
        printf("\nNOTE: the leader changed during the run (node %d at start, %d at end)\n", leader,
               leader_end);
    loadavg(la, sizeof(la));
    printf("\nloadavg at end: %s\n", la);
    fflush(stdout);
    cleanup();
    rpc_client_shutdown();
    return 0;
}
