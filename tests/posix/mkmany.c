/* mkmany.c - create many empty regular files in one directory of a SynodFS cluster over RPC (no FUSE), for
 * tests that need a huge directory but do not test creation itself (posix_big's readdir of 100k entries:
 * through the kernel, creates in one directory are serialized by its inode lock, ~300-1000/s here).
 *
 *   posix_mkmany METASERVERS /dir/path THREADS < names     (one name per line; mode 0644, owner root)
 *
 * The directory is resolved from the root with Lookup. Names are split round-robin over THREADS threads
 * sharing one session (synod-mount's meta client: leader following, exactly-once retries). Prints the
 * count and rate; exits 1 on the first error (naming it), 2 on bad usage. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "common/errors.h"
#include "common/util.h"
#include "fuse-client/meta_client.h"
#include "meta.pb-c.h"

static struct mc *g_mc;
static char **g_names;
static size_t g_n;
static int g_threads;
static uint64_t g_dir;
static atomic_int g_err;

static void *worker(void *arg)
{
    size_t k = (size_t)(uintptr_t)arg;
    Synod__V1__Cred cr = SYNOD__V1__CRED__INIT;
    for (size_t i = k; i < g_n && !atomic_load(&g_err); i += (size_t)g_threads) {
        Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
        r.cred = &cr;
        r.parent = g_dir;
        r.name = g_names[i];
        r.mode = S_IFREG | 0644;
        ProtobufCMessage *rep;
        int rc = mc_call(g_mc, "Mknod", &r.base, 0, &rep);
        if (rc) {
            fprintf(stderr, "mkmany: mknod %s: %s\n", g_names[i], err_name(rc));
            atomic_store(&g_err, rc);
            break;
        }
        rpc_message_free(rep);
    }
    return NULL;
}

static uint64_t resolve(const char *path)
{
    uint64_t ino = 1; /* NS_ROOT_INO */
    char *p = xstrdup(path), *save = NULL;
    Synod__V1__Cred cr = SYNOD__V1__CRED__INIT;
    for (char *c = strtok_r(p, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        Synod__V1__LookupReq r = SYNOD__V1__LOOKUP_REQ__INIT;
        r.cred = &cr;
        r.parent = ino;
        r.name = c;
        Synod__V1__EntryRep *rep;
        int rc = mc_call(g_mc, "Lookup", &r.base, 0, (ProtobufCMessage **)&rep);
        if (rc || !rep->attr) {
            fprintf(stderr, "mkmany: lookup of %s in %s: %s\n", c, path, err_name(rc ? rc : -EIO));
            exit(1);
        }
        ino = rep->attr->ino;
        rpc_message_free(&rep->base);
    }
    free(p);
    return ino;
}

int main(int argc, char **argv)
{
    if (argc != 4 || atoi(argv[3]) < 1) {
        fprintf(stderr, "usage: posix_mkmany METASERVERS /dir/path THREADS < names\n");
        return 2;
    }
    g_threads = atoi(argv[3]);
    size_t cap = 1024;
    g_names = xmalloc(cap * sizeof(*g_names));
    char line[512];
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (!line[0])
            continue;
        if (g_n == cap)
            g_names = xrealloc(g_names, (cap *= 2) * sizeof(*g_names));
        g_names[g_n++] = xstrdup(line);
    }
    struct mc_config cfg = {.addrs = argv[1], .client_name = "posix_mkmany"};
    int rc = mc_new(&cfg, &g_mc);
    if (rc) {
        fprintf(stderr, "mkmany: cannot reach %s: %s\n", argv[1], err_name(rc));
        return 1;
    }
    g_dir = resolve(argv[2]);
    uint64_t t0 = clk_mono_ns();
    pthread_t *th = xmalloc((size_t)g_threads * sizeof(*th));
    for (int i = 0; i < g_threads; i++)
        ASSERT(pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i) == 0);
    for (int i = 0; i < g_threads; i++)
        pthread_join(th[i], NULL);
    double secs = (double)(clk_mono_ns() - t0) / 1e9;
    mc_free(g_mc);
    rpc_client_shutdown();
    if (!atomic_load(&g_err))
        printf("mkmany: %zu names in %.1f s (%.0f/s)\n", g_n, secs, (double)g_n / (secs > 0 ? secs : 1));
    for (size_t i = 0; i < g_n; i++)
        free(g_names[i]);
    free(g_names);
    free(th);
    return atomic_load(&g_err) ? 1 : 0;
}
