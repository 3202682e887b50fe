/* place_chunk.c - for fuse_unwritten_read: a second client that places chunk INDEX of the file at PATH
 * (ChunkOpenWrite, as a writer does before its first write) and writes nothing, so the chunk stays
 * `unwritten` while the test reads that range through a mount. Keeps its session alive until stdin closes,
 * then closes the session (which drops the unwritten chunk).
 *   place_chunk METASERVERS PATH INDEX      (METASERVERS: host:port,host:port,...; PATH from the root)
 * Prints "placed chunk <id> v<version> on <n> replicas" once the chunk is placed; exits 1 on any error. */
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "meta.pb-c.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *g_servers[8];
static int g_nservers, g_target;

/* A Meta call at the leader: follows "leader=host:port" hints and tries every server for up to 20 s. */
static int call(const char *method, const ProtobufCMessage *req, ProtobufCMessage **rep)
{
    uint64_t end = clk_mono_ns() + 20 * NS_PER_SEC;
    for (;;) {
        struct rpc_status st;
        int r = rpc_call(rpc_channel_get(g_servers[g_target]), &synod__v1__meta__descriptor, method, req,
                         NULL, 3000, rep, &st);
        if (r != -EREMOTE && r != -ENOTCONN && r != -EAGAIN && r != -ETIMEDOUT)
            return r;
        if (clk_mono_ns() > end)
            return r;
        const char *h = strstr(st.detail, "leader=");
        int next = (g_target + 1) % g_nservers;
        for (int i = 0; h && i < g_nservers; i++)
            if (strncmp(h + 7, g_servers[i], strlen(g_servers[i])) == 0)
                next = i;
        g_target = next;
        clk_sleep_ns(50 * NS_PER_MS);
    }
}

int main(int argc, char **argv)
{
    log_init("place_chunk", LOG_LVL_ERROR);
    if (argc != 4) {
        fprintf(stderr, "usage: place_chunk METASERVERS PATH INDEX\n");
        return 2;
    }
    char *list = strdup(argv[1]), *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t && g_nservers < 8; t = strtok_r(NULL, ",", &save))
        g_servers[g_nservers++] = t;
    Synod__V1__SessionOpenReq so = SYNOD__V1__SESSION_OPEN_REQ__INIT;
    so.client_name = "place_chunk";
    Synod__V1__SessionOpenRep *sr = NULL;
    int r = call("SessionOpen", &so.base, (ProtobufCMessage **)&sr);
    if (r) {
        fprintf(stderr, "place_chunk: SessionOpen: %s\n", strerror(-r));
        return 1;
    }
    uint64_t session = sr->session;
    rpc_message_free(&sr->base);
    Synod__V1__Cred root = SYNOD__V1__CRED__INIT;
    uint64_t ino = 1;
    char *path = strdup(argv[2]);
    for (char *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        Synod__V1__LookupReq q = SYNOD__V1__LOOKUP_REQ__INIT;
        q.cred = &root;
        q.parent = ino;
        q.name = t;
        Synod__V1__EntryRep *e = NULL;
        r = call("Lookup", &q.base, (ProtobufCMessage **)&e);
        if (r || !e->attr) {
            fprintf(stderr, "place_chunk: lookup of %s: %s\n", t, strerror(r ? -r : EIO));
            return 1;
        }
        ino = e->attr->ino;
        rpc_message_free(&e->base);
    }
    Synod__V1__ReqId rid = SYNOD__V1__REQ_ID__INIT;
    rid.session = session;
    rid.seq = 1;
    Synod__V1__ChunkOpenWriteReq w = SYNOD__V1__CHUNK_OPEN_WRITE_REQ__INIT;
    w.rid = &rid;
    w.ino = ino;
    w.index = strtoull(argv[3], NULL, 10);
    Synod__V1__ChunkOpenWriteRep *wr = NULL;
    r = call("ChunkOpenWrite", &w.base, (ProtobufCMessage **)&wr);
    if (r || !wr->chunk) {
        fprintf(stderr, "place_chunk: ChunkOpenWrite: %s\n", strerror(r ? -r : EIO));
        return 1;
    }
    printf("placed chunk %llu v%u on %zu replicas\n", (unsigned long long)wr->chunk->chunk_id,
           wr->chunk->version, wr->chunk->n_replicas);
    fflush(stdout);
    rpc_message_free(&wr->base);
    Synod__V1__SessionKeepaliveReq ka = SYNOD__V1__SESSION_KEEPALIVE_REQ__INIT;
    ka.session = session;
    for (;;) { /* until stdin closes */
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, 1000) > 0) {
            char b[64];
            if (read(0, b, sizeof(b)) <= 0)
                break;
        }
        call("SessionKeepalive", &ka.base, NULL);
    }
    Synod__V1__SessionCloseReq sc = SYNOD__V1__SESSION_CLOSE_REQ__INIT;
    sc.session = session;
    call("SessionClose", &sc.base, NULL);
    free(path);
    free(list);
    rpc_client_shutdown();
    return 0;
}
