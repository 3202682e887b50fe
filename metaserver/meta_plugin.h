/* meta_plugin.h - how a state machine plugs into the synod-meta daemon.
 *
 * synod-meta is one daemon for every state machine: the config key `state_machine` picks a plugin by name
 * ("namespace" in production; "kv", the test key-value store that the Paxos tests and benchmark drive).
 * meta_main.c owns the process (config, RPC server, rsm runtime, signals); a plugin owns its state machine
 * and its client-facing RPC services.
 *
 * Order at startup: create (register services on the not-yet-started server) -> rsm_new with the plugin's
 * rsm_sm -> attach (the plugin keeps the runtime for submissions and reads) -> rsm_start, rpc_server_start.
 * At shutdown: rpc_server_free -> detach (optional: stop background work that uses the runtime) -> rsm_free ->
 * destroy.
 */
#ifndef SYNOD_META_PLUGIN_H
#define SYNOD_META_PLUGIN_H

#include "common/config.h"
#include "metaserver/rsm.h"

struct rpc_server;

struct meta_plugin {
    const char *name;
    /* Extra config keys of this plugin ({NULL}-terminated; may be NULL). meta_main merges them. */
    const struct config_key *keys;
    /* Build the state machine, register its services on srv. Returns 0 with *sm (static or owned by arg)
     * and *arg, or -errno (logged). */
    int (*create)(const struct config *cfg, struct rpc_server *srv, const struct rsm_sm **sm, void **arg);
    void (*attach)(void *arg, struct rsm *r);
    void (*detach)(void *arg); /* may be NULL */
    void (*destroy)(void *arg);
};

extern const struct meta_plugin kvsm_plugin; /* metaserver/kv_sm.c: the test key-value store */
extern const struct meta_plugin nssm_plugin; /* metaserver/ns_service.c: the POSIX namespace */

#endif
