/* meta_main.c - synod-meta: the metadata daemon (one Multi-Paxos replica + a pluggable state machine).
 *
 * The process: parse config (common/daemon.h), build the RPC server on `listen` (default: this node's own
 * address in `peers`), let the chosen plugin register its services and give its state machine, open the
 * replicated state machine runtime (rsm.h; it registers the Paxos service on the same server), start both,
 * wait for SIGTERM/SIGINT, then shut down in the order meta_plugin.h gives (RPC server first, so no handler
 * runs while the runtime stops). Every address is configurable, so nodes can run in network namespaces.
 */
#include "common/config.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "metaserver/meta_plugin.h"
#include "metaserver/rsm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The state machines this binary can run, by config name. */
static const struct meta_plugin *const plugins[] = {
    &kvsm_plugin,
    &nssm_plugin,
};

#define BASE_KEYS                                                                                            \
    {"node_id", CONFIG_INT, NULL, "this node's id: its index in `peers`"},                                   \
        {"peers", CONFIG_STR, NULL,                                                                          \
         "every node's host:port, by id: 'host:port,host:port,...' or '0=host:port,1=host:port,...'"},       \
        {"listen", CONFIG_STR, "", "address to listen on (default: this node's address in peers)"},          \
        {"data_dir", CONFIG_STR, NULL, "data directory (LevelDB in <data_dir>/db)"},                         \
        {"state_machine", CONFIG_STR, "kv", "the state machine plugin: kv | namespace"},                     \
        {"observers", CONFIG_STR, "", "comma-separated node ids that replicate without voting"},             \
        {"cluster_token", CONFIG_STR, "",                                                                    \
         "names the cluster, the same on every node; with peers and observers it makes the cluster id that " \
         "every Paxos message carries: another cluster's node (a reused port, a redeployed host) is "        \
         "refused"},                                                                                         \
        {"heartbeat", CONFIG_DURATION, "100ms", "leader heartbeat interval"},                                \
        {"election_timeout", CONFIG_DURATION, "1s",                                                          \
         "a follower campaigns after a random timeout in [t, 2t) without a leader"},                         \
        {"lease", CONFIG_DURATION, "0", "leader read lease (0 = 2/3 of election_timeout); must be shorter"}, \
        {"window", CONFIG_INT, "0", "Paxos slots in flight (0 = the core's default)"},                       \
        {"max_batch_cmds", CONFIG_INT, "0", "client commands per slot (0 = 1024)"},                          \
        {"max_batch_bytes", CONFIG_SIZE, "0", "bytes per slot (0 = 1M)"},                                    \
        {"snapshot_every", CONFIG_INT, "0", "applied entries between snapshots (0 = 100000)"},               \
        {"snapshot_chunk", CONFIG_SIZE, "0", "bytes of records per snapshot transfer piece (0 = 1M)"},       \
        {"log_retain", CONFIG_INT, "0", "log slots kept below a snapshot for catch-up (0 = 1024)"},          \
        {"session_lease", CONFIG_DURATION, "10s", "client session lease"},                                   \
        {"rpc_threads", CONFIG_INT, "1", "RPC worker threads (1: no hand-offs between threads)"},            \
    {                                                                                                        \
        "log_level", CONFIG_STR, "info", "error | warn | info | debug"                                       \
    }

#define META_MAX_NODES 16 /* PAXOS_MAX_NODES */

static const struct config_key base_keys[] = {BASE_KEYS, {NULL, 0, NULL, NULL}};

/* The daemon's key table: the base keys and every plugin's extra keys. */
static struct config_key *all_keys(void)
{
    size_t n = ARRAY_SIZE(base_keys) - 1;
    for (size_t i = 0; i < ARRAY_SIZE(plugins); i++)
        for (const struct config_key *k = plugins[i]->keys; k && k->name; k++)
            n++;
    struct config_key *keys = xcalloc(n + 1, sizeof(*keys));
    size_t j = 0;
    for (size_t i = 0; i + 1 < ARRAY_SIZE(base_keys); i++)
        keys[j++] = base_keys[i];
    for (size_t i = 0; i < ARRAY_SIZE(plugins); i++)
        for (const struct config_key *k = plugins[i]->keys; k && k->name; k++)
            keys[j++] = *k;
    return keys;
}

/* Parse "a,b,c" or "0=a,1=b,2=c" into peers[] (strings owned by *buf). Returns the count or -EINVAL. */
static int parse_peers(const char *spec, char **peers, size_t max, char **buf)
{
    *buf = xstrdup(spec);
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(*buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char *eq = strchr(tok, '=');
        int id = n;
        if (eq) {
            char *end;
            long v = strtol(tok, &end, 10);
            if (end != eq || v < 0 || v >= (long)max)
                return -EINVAL;
            id = (int)v;
            tok = eq + 1;
        }
        if (id >= (int)max || !*tok || !strchr(tok, ':') || peers[id])
            return -EINVAL;
        peers[id] = tok;
        if (id + 1 > n)
            n = id + 1;
    }
    for (int i = 0; i < n; i++)
        if (!peers[i])
            return -EINVAL;
    return n ? n : -EINVAL;
}

static int parse_observers(const char *spec, uint32_t n, uint32_t *mask)
{
    *mask = (uint32_t)((1ull << n) - 1);
    char *buf = xstrdup(spec), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (*end || v < 0 || v >= (long)n) {
            rc = -EINVAL;
            break;
        }
        *mask &= ~(1u << v);
    }
    free(buf);
    return rc == 0 && *mask ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
    daemon_block_signals();
    struct config_key *keys = all_keys();
    struct config *cfg = NULL;
    int rc = daemon_init(argc, argv, "synod-meta", "the SynodFS metadata server (a Multi-Paxos replica)",
                         keys, &cfg);
    if (rc) {
        free(keys);
        return rc > 0 ? 0 : 2;
    }
    int exit_code = 1;
    char *peer_buf = NULL;
    char *peers[META_MAX_NODES] = {0};
    struct rpc_server *srv = NULL;
    struct rsm *r = NULL;
    void *plugin_arg = NULL;
    const struct meta_plugin *plugin = NULL;

    const char *smname = config_get_str(cfg, "state_machine");
    for (size_t i = 0; i < ARRAY_SIZE(plugins); i++)
        if (strcmp(plugins[i]->name, smname) == 0)
            plugin = plugins[i];
    if (!plugin) {
        LOG_ERR("unknown state_machine '%s'", smname);
        for (size_t i = 0; i < ARRAY_SIZE(plugins); i++)
            LOG_ERR("  this binary has: %s", plugins[i]->name);
        goto out;
    }
    int n = parse_peers(config_get_str(cfg, "peers"), peers, META_MAX_NODES, &peer_buf);
    int64_t self = config_get_int(cfg, "node_id");
    if (n < 0 || self < 0 || self >= n) {
        LOG_ERR("bad peers '%s' or node_id %lld", config_get_str(cfg, "peers"), (long long)self);
        goto out;
    }
    uint32_t voters;
    if (parse_observers(config_get_str(cfg, "observers"), (uint32_t)n, &voters) != 0) {
        LOG_ERR("bad observers '%s'", config_get_str(cfg, "observers"));
        goto out;
    }
    const char *listen = config_get_str(cfg, "listen");
    if (!*listen)
        listen = peers[self];
    /* gRPC's "poll" engine unless the environment picks one (read at gRPC's initialisation, the first RPC
     * call below). With one RPC thread it polls and runs handlers itself; with the default epoll1 engine
     * every event also hopped through an eventfd and a futex to another thread. ops/bench/meta, 2026-12-07:
     * 1-client getattr 2-3x the rate and half the context switches per create. Only here: for the client
     * and chunkserver data paths (many threads) poll measured worse (random 4K reads -30%). */
    setenv("GRPC_POLL_STRATEGY", "poll", 0);
    rc = rpc_server_new(listen, (int)config_get_int(cfg, "rpc_threads"), &srv);
    if (rc) {
        LOG_ERR("cannot listen on %s: %s", listen, strerror(-rc));
        goto out;
    }
    const struct rsm_sm *sm;
    rc = plugin->create(cfg, srv, &sm, &plugin_arg);
    if (rc)
        goto out;
    struct rsm_config rc_cfg = {
        .self = (uint32_t)self,
        .n_nodes = (uint32_t)n,
        .peers = (const char *const *)peers,
        .voter_mask = voters,
        .data_dir = config_get_str(cfg, "data_dir"),
        .heartbeat_ms = (uint32_t)config_get_duration_ms(cfg, "heartbeat"),
        .election_ms = (uint32_t)config_get_duration_ms(cfg, "election_timeout"),
        .lease_ms = (uint32_t)config_get_duration_ms(cfg, "lease"),
        .window = (uint32_t)config_get_int(cfg, "window"),
        .max_batch_cmds = (uint32_t)config_get_int(cfg, "max_batch_cmds"),
        .max_batch_bytes = (uint32_t)config_get_size(cfg, "max_batch_bytes"),
        .snapshot_every = (uint32_t)config_get_int(cfg, "snapshot_every"),
        .log_retain = (uint32_t)config_get_int(cfg, "log_retain"),
        .snapshot_chunk = (uint32_t)config_get_size(cfg, "snapshot_chunk"),
        .session_lease_ms = (uint32_t)config_get_duration_ms(cfg, "session_lease"),
        .cluster_token = config_get_str(cfg, "cluster_token"),
    };
    rc = rsm_new(&rc_cfg, sm, plugin_arg, srv, &r);
    if (rc)
        goto out;
    plugin->attach(plugin_arg, r);
    if ((rc = rsm_start(r)) != 0 || (rc = rpc_server_start(srv)) != 0) {
        LOG_ERR("cannot start: %s", strerror(-rc));
        goto out;
    }
    LOG_INFO("synod-meta node %lld of %d (%s) listening on %s, state machine %s", (long long)self, n,
             peers[self], listen, plugin->name);
    int sig = daemon_wait_signal();
    LOG_INFO("signal %d: shutting down", sig);
    exit_code = 0;
out:
    if (srv)
        rpc_server_free(srv);
    if (plugin && plugin_arg && r && plugin->detach)
        plugin->detach(plugin_arg);
    rsm_free(r);
    if (plugin && plugin_arg)
        plugin->destroy(plugin_arg);
    rpc_client_shutdown();
    free(peer_buf);
    config_free(cfg);
    free(keys);
    return exit_code;
}
