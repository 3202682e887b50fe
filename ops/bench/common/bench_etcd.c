/* bench_etcd.c - see bench_etcd.h. */
#include "bench_etcd.h"

#include "common/rpc.h"
#include "common/util.h"
#include "etcd_min.pb-c.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void bench_etcd_args(const char *etcd_bin, const char *dir, const char *token, int i, int n,
                     char client[][64], const int *peer_port, char *argv[BENCH_ETCD_ARGS])
{
    char initial[1024] = "";
    for (int j = 0; j < n; j++) {
        char one[96];
        snprintf(one, sizeof(one), "%se%d=http://127.0.0.1:%d", j ? "," : "", j, peer_port[j]);
        ASSERT(strlen(initial) + strlen(one) < sizeof(initial));
        strcat(initial, one);
    }
    char name[16], data[PATH_MAX], curl[96], purl[96];
    snprintf(name, sizeof(name), "e%d", i);
    snprintf(data, sizeof(data), "%s/etcd%d", dir, i);
    snprintf(curl, sizeof(curl), "http://%s", client[i]);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", peer_port[i]);
    const char *const args[] = {etcd_bin, "--name",
                                name,     "--data-dir",
                                data,     "--listen-client-urls",
                                curl,     "--advertise-client-urls",
                                curl,     "--listen-peer-urls",
                                purl,     "--initial-advertise-peer-urls",
                                purl,     "--initial-cluster",
                                initial,  "--initial-cluster-token",
                                token,    "--initial-cluster-state",
                                "new",    "--logger",
                                "zap",    "--log-outputs",
                                "stderr", "--log-level",
                                "warn"};
    size_t k = 0;
    for (; k < sizeof(args) / sizeof(args[0]); k++) {
        ASSERT(k < BENCH_ETCD_ARGS - 1);
        argv[k] = xstrdup(args[k]);
    }
    argv[k] = NULL;
}

void bench_etcd_free_args(char *argv[BENCH_ETCD_ARGS])
{
    for (int i = 0; i < BENCH_ETCD_ARGS && argv[i]; i++) {
        free(argv[i]);
        argv[i] = NULL;
    }
}

int bench_etcd_status(const char *addr, uint64_t *self_id, uint64_t *leader_id)
{
    Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
    ProtobufCMessage *rep = NULL;
    int r = rpc_call(rpc_channel_get(addr), &etcdserverpb__maintenance__descriptor, "Status", &req.base, NULL,
                     500, &rep, NULL);
    if (r == 0) {
        Etcdserverpb__StatusResponse *s = (Etcdserverpb__StatusResponse *)rep;
        *self_id = s->header ? s->header->member_id : 0;
        *leader_id = s->leader;
        rpc_message_free(rep);
    }
    return r;
}

int bench_etcd_leader(char client[][64], const bool *alive, int n)
{
    int leader = -1;
    uint64_t ids[16] = {0}, lead[16] = {0};
    ASSERT(n <= 16);
    for (int i = 0; i < n; i++)
        if (alive[i] && bench_etcd_status(client[i], &ids[i], &lead[i]) != 0)
            ids[i] = lead[i] = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] && lead[i] == ids[i])
            leader = i;
    if (leader < 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (ids[i] && lead[i] != ids[leader])
            return -1;
    return leader;
}
