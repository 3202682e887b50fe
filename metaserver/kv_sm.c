/* kv_sm.c - the "kv" plugin of synod-meta: a test key-value state machine and its Kv RPC service.
 *
 * The Paxos real-process tests and the consensus benchmark drive it. State: "k/<key>" -> value. Commands
 * (the log's command bytes): u8 op, u32 LE key length, key, value bytes; op 0 put, 1 add (value = a decimal
 * signed delta; the stored value is a decimal total, the reply is the new total), 2 delete. Apply is
 * deterministic and uses only the state and the command.
 *
 * Service (proto/paxos.proto, Kv): OpenSession -> rsm_session_open; Put -> rsm_submit with the request's
 * (session, seq, acked), answered from the apply (deferred call); Get -> rsm_read (linearizable by the leader
 * lease, or stale with op 1). Not-leader answers EREMOTE with detail "leader=host:port" when the leader is
 * known, EAGAIN otherwise, so clients follow the leader.
 */
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "metaserver/meta_plugin.h"
#include "paxos.pb-c.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KV_PREFIX "k/"
#define KV_MAX_KEY 4096
#define KV_MAX_VALUE (1u << 20)

enum { KV_OP_PUT = 0, KV_OP_ADD = 1, KV_OP_DEL = 2 };

struct kvsm {
    struct rsm *r;
};

/* ---- the state machine ---- */

static char *kv_key(const uint8_t *key, size_t klen, size_t *out_len)
{
    char *k = xmalloc(2 + klen);
    memcpy(k, KV_PREFIX, 2);
    memcpy(k + 2, key, klen);
    *out_len = 2 + klen;
    return k;
}

static bool parse_i64(const uint8_t *s, size_t len, int64_t *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static int kvsm_apply(void *sm, struct kv_txn *txn, const struct rsm_apply_ctx *ctx, const uint8_t *cmd, size_t len,
                      struct rsm_buf *reply)
{
    UNUSED(sm);
    UNUSED(ctx);
    if (len < 5)
        return -EINVAL;
    uint8_t op = cmd[0];
    uint32_t klen = get_le32(cmd + 1);
    if (klen > len - 5)
        return -EINVAL;
    const uint8_t *key = cmd + 5, *val = cmd + 5 + klen;
    size_t vlen = len - 5 - klen, kl;
    char *k = kv_key(key, klen, &kl);
    int rc = 0;
    switch (op) {
    case KV_OP_PUT:
        kv_put(txn, k, kl, val, vlen);
        break;
    case KV_OP_DEL:
        kv_del(txn, k, kl);
        break;
    case KV_OP_ADD: {
        int64_t delta, cur = 0;
        if (!parse_i64(val, vlen, &delta)) {
            rc = -EINVAL;
            break;
        }
        char *old = NULL;
        size_t ol = 0;
        if (kv_get(txn, k, kl, &old, &ol) == 0 && !parse_i64((const uint8_t *)old, ol, &cur)) {
            free(old);
            rc = -EINVAL;
            break;
        }
        free(old);
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)((uint64_t)cur + (uint64_t)delta));
        kv_put(txn, k, kl, buf, (size_t)n);
        rsm_buf_append(reply, buf, (size_t)n);
        break;
    }
    default:
        rc = -EINVAL;
    }
    free(k);
    return rc;
}

static void kvsm_session_expired(void *sm, struct kv_txn *txn, const struct rsm_apply_ctx *ctx, uint64_t session)
{
    UNUSED(sm);
    UNUSED(txn);
    UNUSED(ctx);
    UNUSED(session); /* the test store holds nothing per session */
}

static const char *const kvsm_prefixes[] = {KV_PREFIX, NULL};

static const struct rsm_sm kvsm_sm = {
    .name = "kv",
    .prefixes = kvsm_prefixes,
    .apply = kvsm_apply,
    .session_expired = kvsm_session_expired,
};

/* ---- the Kv service ---- */

/* Fail a call, naming the leader when this node is not it. */
static void fail_call(struct kvsm *k, struct rpc_call *call, int err)
{
    char detail[300];
    const char *leader = rsm_leader(k->r);
    if (err == -EREMOTE && leader && !rsm_is_leader(k->r)) {
        snprintf(detail, sizeof(detail), "leader=%s", leader);
        rpc_fail(call, err, detail);
    } else {
        rpc_fail(call, err == -EREMOTE ? -EAGAIN : err, NULL);
    }
}

struct kv_wait {
    struct kvsm *k;
    struct rpc_call *call;
};

static void submit_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    struct kv_wait *w = arg;
    if (err) {
        fail_call(w->k, w->call, err);
    } else {
        Synod__V1__KvRep rep = SYNOD__V1__KV_REP__INIT;
        rep.found = true;
        rep.value.data = (uint8_t *)reply;
        rep.value.len = len;
        rep.zxid = zxid;
        rpc_reply(w->call, &rep.base);
    }
    free(w);
}

static int kv_put_handler(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct kvsm *k = arg;
    const Synod__V1__KvReq *req = (const Synod__V1__KvReq *)m;
    size_t klen = strlen(req->key);
    if (klen == 0 || klen > KV_MAX_KEY || req->value.len > KV_MAX_VALUE || req->op > KV_OP_DEL)
        return -EINVAL;
    if (req->session && (req->seq == 0 || req->acked > req->seq))
        return -EINVAL;
    size_t len = 5 + klen + req->value.len;
    uint8_t *cmd = xmalloc(len);
    cmd[0] = (uint8_t)req->op;
    put_le32(cmd + 1, (uint32_t)klen);
    memcpy(cmd + 5, req->key, klen);
    if (req->value.len)
        memcpy(cmd + 5 + klen, req->value.data, req->value.len);
    struct kv_wait *w = xmalloc(sizeof(*w));
    w->k = k;
    w->call = call;
    rsm_submit(k->r, req->session, req->seq, req->acked, cmd, len, submit_done, w);
    free(cmd);
    return RPC_DEFERRED;
}

struct get_ctx {
    const char *key;
    char *val;
    size_t vlen;
    bool found;
};

static int get_fn(void *arg, struct kv_txn *txn)
{
    struct get_ctx *g = arg;
    size_t kl;
    char *k = kv_key((const uint8_t *)g->key, strlen(g->key), &kl);
    int rc = kv_get(txn, k, kl, &g->val, &g->vlen);
    free(k);
    if (rc == -ENOENT)
        return 0;
    g->found = rc == 0;
    return rc;
}

static int kv_get_handler(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct kvsm *k = arg;
    const Synod__V1__KvReq *req = (const Synod__V1__KvReq *)m;
    if (strlen(req->key) == 0 || strlen(req->key) > KV_MAX_KEY)
        return -EINVAL;
    if (req->session)
        rsm_session_touch(k->r, req->session);
    struct get_ctx g = {.key = req->key};
    int rc = rsm_read(k->r, req->op == 1, get_fn, &g);
    if (rc) {
        free(g.val);
        fail_call(k, call, rc);
        return 0;
    }
    Synod__V1__KvRep rep = SYNOD__V1__KV_REP__INIT;
    rep.found = g.found;
    rep.value.data = (uint8_t *)g.val;
    rep.value.len = g.found ? g.vlen : 0;
    rpc_reply(call, &rep.base);
    free(g.val);
    return 0;
}

static int kv_open_handler(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct kvsm *k = arg;
    const Synod__V1__KvReq *req = (const Synod__V1__KvReq *)m;
    struct kv_wait *w = xmalloc(sizeof(*w));
    w->k = k;
    w->call = call;
    rsm_session_open(k->r, req->key, submit_done, w);
    return RPC_DEFERRED;
}

static const rpc_handler_fn kv_handlers[] = {kv_put_handler, kv_get_handler, kv_open_handler};

/* ---- plugin ---- */

static int kvsm_create(const struct config *cfg, struct rpc_server *srv, const struct rsm_sm **sm, void **arg)
{
    UNUSED(cfg);
    ASSERT(synod__v1__kv__descriptor.n_methods == ARRAY_SIZE(kv_handlers));
    ASSERT(strcmp(synod__v1__kv__descriptor.methods[0].name, "Put") == 0);
    struct kvsm *k = xcalloc(1, sizeof(*k));
    rpc_server_add_service(srv, &synod__v1__kv__descriptor, kv_handlers, k);
    *sm = &kvsm_sm;
    *arg = k;
    return 0;
}

static void kvsm_attach(void *arg, struct rsm *r)
{
    struct kvsm *k = arg;
    k->r = r;
}

static void kvsm_destroy(void *arg) { free(arg); }

const struct meta_plugin kvsm_plugin = {
    .name = "kv",
    .keys = NULL,
    .create = kvsm_create,
    .attach = kvsm_attach,
    .destroy = kvsm_destroy,
};
