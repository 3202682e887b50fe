/* bench_ns.c - apply throughput of the namespace state machine directly on LevelDB: creates in batches of
 * 100 commands per transaction, with and without a synced commit per batch, then getattrs and lookups.
 * Usage: bench_ns [creates] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "ns_testutil.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run(int n, bool sync)
{
    struct tns t;
    tns_open(&t);
    t.sync = sync;
    uint64_t dirs[16];
    for (int i = 0; i < 16; i++) {
        char nm[16];
        snprintf(nm, sizeof(nm), "d%d", i);
        t_mknod(&t, ROOT, NS_ROOT_INO, nm, S_IFDIR | 0755, &dirs[i]);
    }
    uint64_t first = 0;
    double t0 = now_s();
    tns_begin(&t);
    for (int i = 0; i < n; i++) {
        char nm[32];
        snprintf(nm, sizeof(nm), "file-%d", i);
        uint64_t ino;
        if (t_mknod(&t, ROOT, dirs[i % 16], nm, S_IFREG | 0644, &ino))
            abort();
        if (!first)
            first = ino;
        if (i % 100 == 99) {
            tns_commit(&t);
            tns_begin(&t);
        }
    }
    tns_commit(&t);
    double t1 = now_s();
    printf("creates (batch 100, %s commit): %d in %.2fs = %.0f/s\n", sync ? "synced" : "async", n, t1 - t0,
           n / (t1 - t0));
    if (!sync) {
        t0 = now_s();
        struct kv_txn *txn = kv_txn_begin(t.db);
        t.txn = txn;
        Synod__V1__Attr a;
        for (int i = 0; i < n; i++)
            t_getattr(&t, first + (uint64_t)((i * 7919) % n), &a);
        kv_txn_abort(txn);
        t.txn = NULL;
        t1 = now_s();
        printf("getattrs: %d in %.2fs = %.0f/s\n", n, t1 - t0, n / (t1 - t0));
        t0 = now_s();
        for (int i = 0; i < n; i++) {
            char nm[32];
            snprintf(nm, sizeof(nm), "file-%d", (i * 7919) % n);
            t_lookup(&t, ROOT, dirs[((i * 7919) % n) % 16], nm, &a);
        }
        t1 = now_s();
        printf("lookups (one read txn each): %d in %.2fs = %.0f/s\n", n, t1 - t0, n / (t1 - t0));
    }
    tns_close(&t, false);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    run(n, false);
    run(n / 4, true);
    return 0;
}
