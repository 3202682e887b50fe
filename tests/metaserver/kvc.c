/* kvc.c - the kv state machine client (see kvc.h). */
#include "tests/metaserver/kvc.h"

#include "common/clock.h"
#include "common/rpc.h"
#include "common/util.h"
#include "paxos.pb-c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kvc_init(struct kvc *c, const char *servers, int64_t total_timeout_ms)
{
    memset(c, 0, sizeof(*c));
    char *buf = xstrdup(servers), *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        c->servers = xrealloc(c->servers, (size_t)(c->n_servers + 1) * sizeof(char *));
        c->servers[c->n_servers++] = xstrdup(t);
    }
    free(buf);
    c->call_timeout_ms = 1000;
    c->total_timeout_ms = total_timeout_ms;
    if (c->n_servers)
        snprintf(c->target, sizeof(c->target), "%s", c->servers[0]);
}

void kvc_destroy(struct kvc *c)
{
    for (int i = 0; i < c->n_servers; i++)
        free(c->servers[i]);
    free(c->servers);
    memset(c, 0, sizeof(*c));
}

static bool retryable(int err)
{
    return err == -ENOTCONN || err == -ETIMEDOUT || err == -EAGAIN || err == -EREMOTE || err == -ECANCELED ||
           err == -ECONNRESET || err == -EIO;
}

/* One request with leader following and retries until success, a final error, or the total timeout. */
static int call(struct kvc *c, const char *method, const Synod__V1__KvReq *req, Synod__V1__KvRep **rep)
{
    if (!c->n_servers)
        return -EINVAL;
    uint64_t deadline = clk_mono_ns() + (uint64_t)c->total_timeout_ms * NS_PER_MS;
    int misses = 0;
    for (;;) {
        struct rpc_status st;
        ProtobufCMessage *out = NULL;
        int64_t left = (int64_t)(deadline - clk_mono_ns()) / (int64_t)NS_PER_MS;
        int err = rpc_call(rpc_channel_get(c->target), &synod__v1__kv__descriptor, method, &req->base, NULL,
                           MAX(1, MIN(c->call_timeout_ms, left)), &out, &st);
        if (err == 0) {
            *rep = (Synod__V1__KvRep *)out;
            return 0;
        }
        if (!retryable(err))
            return err;
        if (clk_mono_ns() >= deadline)
            return -ETIMEDOUT;
        c->retries++;
        if (err == -EREMOTE && strncmp(st.detail, "leader=", 7) == 0 &&
            strcmp(st.detail + 7, c->target) != 0) {
            snprintf(c->target, sizeof(c->target), "%s", st.detail + 7);
            continue;
        }
        c->cur = (c->cur + 1) % c->n_servers;
        snprintf(c->target, sizeof(c->target), "%s", c->servers[c->cur]);
        if (++misses % c->n_servers == 0 || err == -EAGAIN)
            clk_sleep_ns(5 * NS_PER_MS);
    }
}

int kvc_open(struct kvc *c)
{
    Synod__V1__KvReq req = SYNOD__V1__KV_REQ__INIT;
    req.key = "kvc";
    Synod__V1__KvRep *rep;
    int err = call(c, "OpenSession", &req, &rep);
    if (err)
        return err;
    if (rep->value.len != 8) {
        rpc_message_free(&rep->base);
        return -EBADMSG;
    }
    c->session = get_le64(rep->value.data);
    c->seq = 0;
    rpc_message_free(&rep->base);
    return 0;
}

int kvc_write(struct kvc *c, int op, const char *key, const void *val, size_t vlen, char **reply,
              uint64_t *zxid)
{
    if (!c->session) {
        int err = kvc_open(c);
        if (err)
            return err;
    }
    Synod__V1__KvReq req = SYNOD__V1__KV_REQ__INIT;
    req.session = c->session;
    req.seq = ++c->seq;
    req.acked = c->seq; /* one request at a time: everything before it was answered */
    req.op = (uint32_t)op;
    req.key = (char *)key;
    req.value.data = (uint8_t *)val;
    req.value.len = vlen;
    Synod__V1__KvRep *rep;
    int err = call(c, "Put", &req, &rep);
    if (err)
        return err;
    if (reply) {
        *reply = xmalloc(rep->value.len + 1);
        memcpy(*reply, rep->value.data, rep->value.len);
        (*reply)[rep->value.len] = 0;
    }
    if (zxid)
        *zxid = rep->zxid;
    rpc_message_free(&rep->base);
    return 0;
}

static void take_value(Synod__V1__KvRep *rep, char **val, size_t *vlen, bool *found)
{
    *found = rep->found;
    *val = NULL;
    if (vlen)
        *vlen = 0;
    if (rep->found) {
        *val = xmalloc(rep->value.len + 1);
        memcpy(*val, rep->value.data, rep->value.len);
        (*val)[rep->value.len] = 0;
        if (vlen)
            *vlen = rep->value.len;
    }
    rpc_message_free(&rep->base);
}

int kvc_get(struct kvc *c, const char *key, bool stale, char **val, size_t *vlen, bool *found)
{
    Synod__V1__KvReq req = SYNOD__V1__KV_REQ__INIT;
    req.session = c->session;
    req.op = stale ? 1 : 0;
    req.key = (char *)key;
    Synod__V1__KvRep *rep;
    int err = call(c, "Get", &req, &rep);
    if (err)
        return err;
    take_value(rep, val, vlen, found);
    return 0;
}

int kvc_get_at(const char *server, const char *key, bool stale, char **val, bool *found, char *detail,
               size_t dlen)
{
    Synod__V1__KvReq req = SYNOD__V1__KV_REQ__INIT;
    req.op = stale ? 1 : 0;
    req.key = (char *)key;
    struct rpc_status st;
    ProtobufCMessage *out = NULL;
    int err = rpc_call(rpc_channel_get(server), &synod__v1__kv__descriptor, "Get", &req.base, NULL, 1000,
                       &out, &st);
    if (detail)
        snprintf(detail, dlen, "%s", err ? st.detail : "");
    if (err)
        return err;
    take_value((Synod__V1__KvRep *)out, val, NULL, found);
    return 0;
}
