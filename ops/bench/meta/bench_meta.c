/* bench_meta.c - metadata operations of SynodFS over RPC (no FUSE): creates, stats (Getattr and Lookup),
 * renames and unlinks per second, with p50/p99 latency, from 1 client and from 16 concurrent clients.
 *
 * WHAT RUNS. 3 synod-meta with state_machine = namespace on loopback (free ports, data directories under
 * one temporary directory on the real disk, default settings: every chosen Paxos slot is fsynced). Every
 * child is killed by PID on exit (also on SIGINT/SIGTERM; PR_SET_PDEATHSIG kills them if this process dies)
 * and the temporary directory is removed (unless --keep).
 *
 * CLIENTS. A client is a thread doing blocking rpc_call's of the Meta service (proto/meta.proto) one at a
 * time. Each opens its own session (SessionOpen) and sends ReqId(session, seq) on every mutating call; a
 * failed attempt (ENOTCONN, EAGAIN, EREMOTE, ETIMEDOUT, ECANCELED) is retried with the same ReqId, after
 * following an EREMOTE "leader=host:port" hint (or moving to the next node). Latency of an op is from the
 * first attempt to the final answer (retries included; their count is printed). All client threads share
 * the RPC layer's one channel (one HTTP/2 connection) per server, as threads of one process do; separate
 * client machines or processes would each have their own.
 *
 * PHASES, per client count, each ending after --ops ops per client or --secs seconds, whichever is first:
 *   create   Mknod S_IFREG|0644 of f<k> in the client's own directory (made before, not measured)
 *   getattr  Getattr of a random file this client created
 *   lookup   Lookup(dir, f<k>) of a random file this client created
 *   rename   f<k> -> r<k> in the same directory, k = 0, 1, ...
 *   unlink   every file created (under its current name), k = 0, 1, ...
 * ops/s = successful ops of all clients / (last client's end - first client's start).
 * cpu us and cs = CPU time (user + system, in us) and context switches (voluntary + involuntary, every thread)
 * of the three synod-meta processes during the phase, per successful op, from /proc: the server-side cost of an
 * op. Context switches per op hardly depend on what else runs on the machine; CPU per op does (it grows by up to
 * 2-3x on a busy shared 2-core VM, as throughput and latency vary even more), so compare runs at similar load.
 *
 *   bench_meta --meta PATH/synod-meta [--secs 3] [--ops 10000] [--clients 16] [--dir /var/tmp] [--keep]
 */
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "meta.pb-c.h"

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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NNODES        3
#define MAX_CLIENTS   64
#define CALL_TIMEOUT  5000 /* ms per attempt */
#define GIVEUP_NS     (30 * NS_PER_SEC)
#define NAME_LEN      16

/* ---------------------------------------------------------------------------------------------------- */
/* Child processes: started, killed and reaped by PID only.                                            */

static char g_dir[256];
static bool g_keep;
static pid_t g_pids[NNODES];
static char g_addrs[NNODES][64];

static void kill_children(void)
{
    for (int i = 0; i < NNODES; i++)
        if (g_pids[i] > 0) {
            kill(g_pids[i], SIGKILL);
            waitpid(g_pids[i], NULL, 0);
            g_pids[i] = 0;
        }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    UNUSED(sb);
    UNUSED(flag);
    UNUSED(ftw);
    return remove(path) ? -1 : 0;
}

static void cleanup(void)
{
    kill_children();
    if (g_dir[0] && !g_keep)
        nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
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

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || getsockname(fd, (struct sockaddr *)&a, &len))
        PANIC("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static void start_cluster(const char *meta_bin)
{
    char peers[256] = "";
    for (int i = 0; i < NNODES; i++) {
        snprintf(g_addrs[i], sizeof(g_addrs[i]), "127.0.0.1:%d", free_port());
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
        pid_t pid = fork();
        if (pid < 0)
            PANIC("fork: %s", strerror(errno));
        if (pid == 0) {
            int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            int nfd = open("/dev/null", O_RDONLY);
            if (nfd >= 0)
                dup2(nfd, 0);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            execl(meta_bin, meta_bin, "-c", conf, (char *)NULL);
            _exit(127);
        }
        g_pids[i] = pid;
    }
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
};

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
        int rc = rpc_call(rpc_channel_get(g_addrs[c->target]), &synod__v1__meta__descriptor, method, req, NULL,
                          CALL_TIMEOUT, rep, &st);
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
    if (ph == PH_RENAME || ph == PH_UNLINK)
        mcall(c, "SessionKeepalive", &ka.base, NULL);
    int limit = ph == PH_RENAME || ph == PH_UNLINK ? c->ncreated : g_ops;
    pthread_barrier_wait(&g_barrier);
    c->t0 = clk_mono_ns();
    uint64_t end = c->t0 + (uint64_t)(g_secs * 1e9);
    for (int k = 0; k < limit; k++) {
        uint64_t t = clk_mono_ns();
        if (t >= end)
            break;
        if ((ph == PH_GETATTR || ph == PH_LOOKUP) && t - last_ka > 2 * NS_PER_SEC) {
            mcall(c, "SessionKeepalive", &ka.base, NULL);
            last_ka = t = clk_mono_ns();
        }
        if (ph != PH_CREATE && c->ncreated == 0)
            break;
        int rc = 0;
        switch (ph) {
        case PH_CREATE: rc = do_create(c, k); break;
        case PH_GETATTR: rc = do_getattr(c); break;
        case PH_LOOKUP: rc = do_lookup(c); break;
        case PH_RENAME: rc = do_rename(c, k); break;
        case PH_UNLINK: rc = do_unlink(c, k); break;
        default: break;
        }
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

/* CPU time (us) and context switches of every synod-meta thread, from /proc: the server-side cost of a phase. */
struct usage {
    uint64_t cpu_us, ctxsw;
};

static struct usage daemons_usage(void)
{
    struct usage u = {0, 0};
    long hz = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < NNODES; i++) {
        if (g_pids[i] <= 0)
            continue;
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)g_pids[i]);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            buf[n] = 0;
            fclose(f);
            const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
            unsigned long ut = 0, st = 0;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
                u.cpu_us += (uint64_t)(ut + st) * 1000000u / (uint64_t)hz;
        }
        snprintf(path, sizeof(path), "/proc/%d/task", (int)g_pids[i]);
        DIR *d = opendir(path);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (e->d_name[0] == '.')
                continue;
            char sp[300];
            snprintf(sp, sizeof(sp), "/proc/%d/task/%s/status", (int)g_pids[i], e->d_name);
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
    struct usage u0 = daemons_usage();
    for (int i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, client_main, &cl[i]))
            PANIC("pthread_create");
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_barrier);
    struct usage u1 = daemons_usage();
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
    if (total) {
        r.ops_s = (double)total / ((double)(t1 - t0) / 1e9);
        r.p50_ms = all[total / 2] / 1000.0;
        r.p99_ms = all[(size_t)((double)total * 0.99)] / 1000.0;
        r.cpu_us_op = (double)(u1.cpu_us - u0.cpu_us) / (double)total;
        r.cs_op = (double)(u1.ctxsw - u0.ctxsw) / (double)total;
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
    Synod__V1__SessionCloseReq q = SYNOD__V1__SESSION_CLOSE_REQ__INIT;
    q.session = c->session;
    mcall(c, "SessionClose", &q.base, NULL);
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

static void print_row(int nclients, enum phase ph, const struct result *r)
{
    printf("%7d  %-8s %10.0f %9.3f %9.3f %8llu %7llu %7llu %8.0f %6.1f", nclients, phase_names[ph], r->ops_s,
           r->p50_ms, r->p99_ms, (unsigned long long)r->n, (unsigned long long)r->errors,
           (unsigned long long)r->retries, r->cpu_us_op, r->cs_op);
    if (r->retries)
        printf("  (retries: %llu EAGAIN, %llu EREMOTE, %llu other)", (unsigned long long)r->r_eagain,
               (unsigned long long)r->r_eremote, (unsigned long long)(r->retries - r->r_eagain - r->r_eremote));
    if (r->errors)
        printf("  (first error: %s)", strerror(-r->first_err));
    printf("\n");
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_meta --meta PATH [--secs S] [--ops N] [--clients N] [--dir DIR] [--keep]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *meta_bin = NULL, *base = "/var/tmp";
    int many = 16;
    static const struct option opts[] = {{"meta", 1, 0, 'm'}, {"secs", 1, 0, 's'}, {"ops", 1, 0, 'n'},
                                         {"clients", 1, 0, 'c'}, {"dir", 1, 0, 'd'}, {"keep", 0, 0, 'k'},
                                         {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'm': meta_bin = optarg; break;
        case 's': g_secs = atof(optarg); break;
        case 'n': g_ops = atoi(optarg); break;
        case 'c': many = atoi(optarg); break;
        case 'd': base = optarg; break;
        case 'k': g_keep = true; break;
        default: usage();
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

    start_cluster(meta_bin);
    int leader = find_leader(30.0);
    if (leader < 0) {
        fprintf(stderr, "bench_meta: no leader in 30 s; logs kept in %s\n", g_dir);
        g_keep = true;
        return 1;
    }
    char la[128];
    loadavg(la, sizeof(la));
    printf("metadata benchmark: 3 x synod-meta (namespace), loopback, fsync on, over RPC (no FUSE)\n");
    printf("leader: node %d (%s, pid %d); data in %s; per phase %d ops per client or %.1f s; loadavg at "
           "start: %s\n\n",
           leader, g_addrs[leader], (int)g_pids[leader], g_dir, g_ops, g_secs, la);
    printf("%7s  %-8s %10s %9s %9s %8s %7s %7s %8s %6s\n", "clients", "op", "ops/s", "p50 ms", "p99 ms", "ops",
           "errors", "retries", "cpu us", "cs");

    int counts[2] = {1, many};
    struct result res[2][PH_COUNT];
    static struct client cl[MAX_CLIENTS];
    for (int ci = 0; ci < 2; ci++) {
        int n = counts[ci];
        for (int i = 0; i < n; i++)
            client_setup(&cl[i], ci, n, i, leader);
        for (int ph = 0; ph < PH_COUNT; ph++) {
            res[ci][ph] = run_phase(cl, n, (enum phase)ph);
            print_row(n, (enum phase)ph, &res[ci][ph]);
        }
        for (int i = 0; i < n; i++)
            client_free(&cl[i]);
    }

    /* Reference figures and targets from GitHub issue 5; NOT measured in this run. */
    static const double mfs[PH_COUNT] = {4700, 12900, 12900, 7000, 12200};
    printf("\nMooseFS through FUSE, one master WITHOUT fsync, 1 client: reference figures quoted in issue 5,\n"
           "NOT measured in this run (different system, different machine, FUSE in the path):\n");
    printf("%-8s %14s %14s %10s\n", "op", "SynodFS 1 cl.", "MooseFS ref", "ratio");
    for (int ph = 0; ph < PH_COUNT; ph++)
        printf("%-8s %12.0f/s %12.0f/s %9.2fx%s\n", phase_names[ph], res[0][ph].ops_s, mfs[ph],
               res[0][ph].ops_s / mfs[ph], ph == PH_GETATTR || ph == PH_LOOKUP ? "  (MooseFS 'stats')" : "");
    printf("\ntargets (issue 5; ratios are measured / target):\n");
    printf("  %2d clients, durable creates/s > 15000: %8.0f/s  (%.2fx of target)\n", many, res[1][PH_CREATE].ops_s,
           res[1][PH_CREATE].ops_s / 15000.0);
    printf("  %2d clients, stats/s > 50000:   getattr %8.0f/s  (%.2fx), lookup %8.0f/s  (%.2fx)\n", many,
           res[1][PH_GETATTR].ops_s, res[1][PH_GETATTR].ops_s / 50000.0, res[1][PH_LOOKUP].ops_s,
           res[1][PH_LOOKUP].ops_s / 50000.0);
    printf("   1 client, create latency < 0.5 ms: p50 %.3f ms (%.2fx the target; lower is better), p99 %.3f ms\n",
           res[0][PH_CREATE].p50_ms, res[0][PH_CREATE].p50_ms / 0.5, res[0][PH_CREATE].p99_ms);
    if (many != 16)
        printf("  (note: the targets are stated for 16 clients; this run used %d)\n", many);
    int leader_end = find_leader(5.0);
    if (leader_end != leader)
        printf("\nNOTE: the leader changed during the run (node %d at start, %d at end)\n", leader, leader_end);
    loadavg(la, sizeof(la));
    printf("\nloadavg at end: %s\n", la);
    fflush(stdout);
    cleanup();
    rpc_client_shutdown();
    return 0;
}
