/* kvclient.c - synod-kv: a small client of the kv state machine for tests and benchmarks.
 *
 *   synod-kv -s HOST:PORT,... [-t TOTAL_TIMEOUT_MS] put KEY VALUE | add KEY DELTA | del KEY
 *   synod-kv -s ... get [--stale] KEY
 *   synod-kv -s ... load [-c CLIENTS] [-d SECONDS] [-v VALUE_BYTES]
 *
 * Writes run under a session with (session, seq) and are retried with the same (session, seq) across
 * leader changes (kvc.h), so each is applied once. `load` runs CLIENTS threads, each with its own session
 * and one put in flight (so CLIENTS = requests in flight), and prints committed puts/s and latency
 * percentiles. Exit status: 0 ok, 1 operation failed (errno name printed), 2 usage.
 */
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "tests/metaserver/kvc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *servers;
static int64_t total_timeout = 10000;

struct loader {
    pthread_t th;
    int id;
    uint64_t end_ns;
    size_t vsize;
    uint64_t *lat; /* us */
    size_t n, cap;
    int err;
};

static void *load_main(void *arg)
{
    struct loader *l = arg;
    struct kvc c;
    kvc_init(&c, servers, total_timeout);
    char *val = xmalloc(l->vsize + 1);
    memset(val, 'x', l->vsize);
    char key[64];
    for (uint64_t i = 0; clk_mono_ns() < l->end_ns; i++) {
        snprintf(key, sizeof(key), "load/%d/%llu", l->id, (unsigned long long)(i % 1000));
        uint64_t t0 = clk_mono_ns();
        int err = kvc_write(&c, KVC_PUT, key, val, l->vsize, NULL, NULL);
        if (err) {
            l->err = err;
            break;
        }
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 4096;
            l->lat = xrealloc(l->lat, l->cap * sizeof(*l->lat));
        }
        l->lat[l->n++] = (clk_mono_ns() - t0) / 1000;
    }
    free(val);
    kvc_destroy(&c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int run_load(int clients, int seconds, size_t vsize)
{
    struct loader *ls = xcalloc((size_t)clients, sizeof(*ls));
    uint64_t t0 = clk_mono_ns(), end = t0 + (uint64_t)seconds * NS_PER_SEC;
    for (int i = 0; i < clients; i++) {
        ls[i].id = i;
        ls[i].end_ns = end;
        ls[i].vsize = vsize;
        if (pthread_create(&ls[i].th, NULL, load_main, &ls[i]) != 0)
            PANIC("pthread_create");
    }
    size_t total = 0;
    int err = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(ls[i].th, NULL);
        total += ls[i].n;
        if (ls[i].err)
            err = ls[i].err;
    }
    double secs = (double)(clk_mono_ns() - t0) / 1e9;
    uint64_t *all = xmalloc((total ? total : 1) * sizeof(*all));
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, ls[i].lat, ls[i].n * sizeof(*all));
        k += ls[i].n;
        free(ls[i].lat);
    }
    qsort(all, total, sizeof(*all), cmp_u64);
    printf(
        "clients=%d value=%zu puts=%zu seconds=%.2f puts_per_sec=%.0f p50_us=%llu p99_us=%llu max_us=%llu\n",
        clients, vsize, total, secs, (double)total / secs, (unsigned long long)(total ? all[total / 2] : 0),
        (unsigned long long)(total ? all[total * 99 / 100] : 0),
        (unsigned long long)(total ? all[total - 1] : 0));
    free(all);
    free(ls);
    if (err)
        fprintf(stderr, "synod-kv: a client failed: %s\n", strerror(-err));
    return err ? 1 : 0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: synod-kv -s HOST:PORT,... [-t TOTAL_TIMEOUT_MS] put KEY VALUE | add KEY DELTA | del KEY\n"
            "       synod-kv -s ... get [--stale] KEY\n"
            "       synod-kv -s ... load [-c CLIENTS] [-d SECONDS] [-v VALUE_BYTES]\n");
    return 2;
}

int main(int argc, char **argv)
{
    log_init("synod-kv", LOG_LVL_WARN);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-s") && i + 1 < argc)
            servers = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            total_timeout = atoll(argv[++i]);
        else
            return usage();
    }
    if (!servers || i >= argc)
        return usage();
    const char *cmd = argv[i++];
    int rc = 0;
    if (!strcmp(cmd, "load")) {
        int clients = 1, seconds = 5;
        size_t vsize = 100;
        for (; i < argc; i++) {
            if (!strcmp(argv[i], "-c") && i + 1 < argc)
                clients = atoi(argv[++i]);
            else if (!strcmp(argv[i], "-d") && i + 1 < argc)
                seconds = atoi(argv[++i]);
            else if (!strcmp(argv[i], "-v") && i + 1 < argc)
                vsize = (size_t)atoll(argv[++i]);
            else
                return usage();
        }
        if (clients < 1 || seconds < 1)
            return usage();
        rc = run_load(clients, seconds, vsize);
    } else if (!strcmp(cmd, "get")) {
        bool stale = i < argc && !strcmp(argv[i], "--stale");
        if (stale)
            i++;
        if (i + 1 != argc)
            return usage();
        struct kvc c;
        kvc_init(&c, servers, total_timeout);
        char *val;
        bool found;
        int err = kvc_get(&c, argv[i], stale, &val, NULL, &found);
        if (err) {
            fprintf(stderr, "synod-kv: get %s: %s\n", argv[i], strerror(-err));
            rc = 1;
        } else if (!found) {
            fprintf(stderr, "synod-kv: get %s: not found\n", argv[i]);
            rc = 1;
        } else {
            printf("%s\n", val);
        }
        free(val);
        kvc_destroy(&c);
    } else if (!strcmp(cmd, "put") || !strcmp(cmd, "add") || !strcmp(cmd, "del")) {
        int op = !strcmp(cmd, "put") ? KVC_PUT : !strcmp(cmd, "add") ? KVC_ADD : KVC_DEL;
        if (i + (op == KVC_DEL ? 1 : 2) != argc)
            return usage();
        const char *val = op == KVC_DEL ? "" : argv[i + 1];
        struct kvc c;
        kvc_init(&c, servers, total_timeout);
        char *reply = NULL;
        uint64_t zxid = 0;
        int err = kvc_write(&c, op, argv[i], val, strlen(val), &reply, &zxid);
        if (err) {
            fprintf(stderr, "synod-kv: %s %s: %s\n", cmd, argv[i], strerror(-err));
            rc = 1;
        } else {
            printf("%s%szxid=0x%llx\n", reply && *reply ? reply : "", reply && *reply ? " " : "",
                   (unsigned long long)zxid);
        }
        free(reply);
        kvc_destroy(&c);
    } else {
        return usage();
    }
    rpc_client_shutdown();
    return rc;
}
