/* chunk_main.c - synod-chunk: the chunkserver daemon (chunk store + ChunkData service + control client +
 * scrubber).
 *
 * Start-up: config (common/daemon.h), open the store over the data dirs, start the RPC server, print
 * "listening <host:port>" on stdout (tests and scripts that use port 0 read the bound port from it), start
 * the control client (unless no metaserver is configured: a standalone data server, for benchmarks) and
 * the scrubber. Shutdown on SIGTERM/SIGINT: scrubber, control client, RPC server (cancels calls in flight),
 * RPC client, store, in that order, so nothing uses the store after it is closed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkserver/chunk_store.h"
#include "chunkserver/cs_control.h"
#include "chunkserver/cs_scrub.h"
#include "chunkserver/cs_service.h"
#include "common/daemon.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"

static const struct config_key keys[] = {
    {"listen", CONFIG_STR, "127.0.0.1:7300", "address of the data service (port 0 = any free port)"},
    {"advertise", CONFIG_STR, "", "address announced to the metaserver (default: listen host, bound port)"},
    {"data_dirs", CONFIG_STR, "/var/lib/synod/chunk", "comma-separated data directories"},
    {"label", CONFIG_STR, "", "rack/zone label used for placement"},
    {"metaservers", CONFIG_STR, "", "comma-separated metaserver addresses (empty = standalone, no control)"},
    {"heartbeat_ms", CONFIG_DURATION, "1s", "heartbeat interval unless the metaserver sets one"},
    {"scrub_rate", CONFIG_SIZE, "16M", "scrubber verification rate in bytes per second (0 = off)"},
    {"scrub_pause", CONFIG_DURATION, "60s", "rest between two scrub passes"},
    {"zstd_level", CONFIG_INT, "1", "zstd level for block compression"},
    {"workers", CONFIG_INT, "6", "RPC worker threads"},
    {"cmd_workers", CONFIG_INT, "2", "threads executing metaserver commands (replicate, delete...)"},
    {"copy_rate", CONFIG_SIZE, "100M",
     "re-replication pull rate in bytes per second, shared by all copies (0 = unlimited)"},
    {"max_open", CONFIG_INT, "1024", "chunk files kept open"},
    {"writeback", CONFIG_DURATION, "2s",
     "sync chunks in the background once unsynced this long (0 = only on fsync and eviction)"},
    {"log_level", CONFIG_STR, "info", "error, warn, info or debug"},
    {NULL},
};

/* Split "a, b,c" into a NULL-free array of trimmed, non-empty strings. */
static char **split_list(const char *s, size_t *n)
{
    char **v = NULL;
    *n = 0;
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            v = xrealloc(v, (*n + 1) * sizeof(*v));
            v[(*n)++] = xstrndup(a, (size_t)(b - a));
        }
        p += len + (p[len] == ',');
    }
    return v;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void on_bad(void *arg, uint64_t chunk_id, uint32_t version)
{
    if (arg)
        cs_control_report_lost(arg, chunk_id, version);
}

int main(int argc, char **argv)
{
    daemon_block_signals();
    struct config *cfg;
    int r = daemon_init(argc, argv, "synod-chunk", "the SynodFS chunkserver", keys, &cfg);
    if (r)
        return r > 0 ? 0 : 2;
    int rc = 1;
    size_t ndirs, nmetas;
    char **dirs = split_list(config_get_str(cfg, "data_dirs"), &ndirs);
    char **metas = split_list(config_get_str(cfg, "metaservers"), &nmetas);
    struct cstore *store = NULL;
    struct rpc_server *srv = NULL;
    struct cs_service *svc = NULL;
    struct cs_control *ctl = NULL;
    char *addr = NULL;
    if (ndirs == 0) {
        fprintf(stderr, "synod-chunk: data_dirs is empty\n");
        goto out_free_lists;
    }

    struct cstore_config sc = {.dirs = (const char *const *)dirs, .ndirs = ndirs,
                               .level = (int)config_get_int(cfg, "zstd_level"),
                               .max_open = (unsigned)config_get_int(cfg, "max_open"),
                               .writeback_ms = (unsigned)config_get_duration_ms(cfg, "writeback")};
    r = cstore_open(&sc, &store);
    if (r) {
        LOG_ERR("%s: cannot open the chunk store", err_name(r));
        goto out_free_lists;
    }
    const char *listen = config_get_str(cfg, "listen");
    r = rpc_server_new(listen, (int)config_get_int(cfg, "workers"), &srv);
    if (r) {
        LOG_ERR("%s: cannot listen on %s", err_name(r), listen);
        goto out_close_store;
    }
    const char *adv = config_get_str(cfg, "advertise");
    if (adv[0]) {
        addr = xstrdup(adv);
    } else {
        const char *colon = strrchr(listen, ':');
        int hl = colon ? (int)(colon - listen) : (int)strlen(listen);
        addr = xasprintf("%.*s:%d", hl, listen, rpc_server_port(srv));
    }
    svc = cs_service_new(store, sc.level, addr);
    cs_service_register(svc, srv);
    r = rpc_server_start(srv);
    if (r) {
        LOG_ERR("%s: cannot start the rpc server", err_name(r));
        goto out_free_server;
    }
    printf("listening %s\n", addr);
    fflush(stdout);
    LOG_INFO("chunkserver serving %zu data dirs on %s", ndirs, addr);

    if (nmetas) {
        char *id_path = xasprintf("%s/chunkserver.id", dirs[0]);
        struct cs_control_config cc = {.metaservers = (const char *const *)metas, .nmetaservers = nmetas,
                                       .addr = addr, .label = config_get_str(cfg, "label"), .id_path = id_path,
                                       .heartbeat_ms = MAX(config_get_duration_ms(cfg, "heartbeat_ms"), 1),
                                       .workers = (int)config_get_int(cfg, "cmd_workers"),
                                       .copy_rate = config_get_size(cfg, "copy_rate")};
        r = cs_control_start(&cc, store, svc, &ctl);
        free(id_path);
        if (r)
            goto out_free_server;
    }
    struct cs_scrubber *scrub = cs_scrub_start(store, config_get_size(cfg, "scrub_rate"),
                                               config_get_duration_ms(cfg, "scrub_pause"), on_bad, ctl);

    int sig = daemon_wait_signal();
    LOG_INFO("signal %d: shutting down", sig);
    cs_scrub_stop(scrub);
    cs_control_stop(ctl);
    rc = 0;
out_free_server:
    cs_service_stop(svc); /* before the RPC client goes: a resumed write forwards */
    rpc_server_free(srv);
    rpc_client_shutdown();
    cs_service_free(svc);
out_close_store:
    cstore_close(store);
out_free_lists:
    free(addr);
    free_list(dirs, ndirs);
    free_list(metas, nmetas);
    config_free(cfg);
    return rc;
}
