/* rsm.c - the replicated state machine runtime: one turn at a time drives the Paxos core over LevelDB and
 * gRPC.
 *
 * THE LOOP. A turn takes EVERY queued input at once (peer message batches, client submissions, snapshot
 * chunks) and feeds them; ticks the core (every 5 ms, CLOCK_MONOTONIC); packs waiting submissions into as few
 * slots as the batch limits allow and proposes them while the core's window has room (batching + pipelining);
 * then runs paxos_ready/advance until it has nothing more: send_now goes out first (so followers fsync in
 * parallel with us), the persist records are written in ONE synced WriteBatch (group commit: one fsync for
 * everything that arrived during the previous fsync), send_after follows, and chosen entries are applied.
 * On the leader, entries chosen in earlier turns are applied (and their clients answered) before the fsync of
 * the turn's new slots (apply_before_persist); a ready with nothing to persist applies first and sends after,
 * so client replies leave before COMMITs. Outgoing messages are collected per peer and flushed as one
 * asynchronous Deliver per peer, or as the reply of a Deliver held from that peer (inline answers,
 * rsm_net.c); COMMITs are held back briefly because the next ACCEPT carries the commit point anyway. No turn
 * waits on a peer.
 *
 * WHO RUNS A TURN. Turns are serialised by the runtime lock (run_mu). Paxos messages come in on RPC threads
 * (the Deliver handler on a follower, the Deliver completion on the leader); such a thread queues them and,
 * if no turn is running, runs the turn itself (rsm_enqueue_run): a thread hand-off (futex wake and context
 * switch, expensive on a shared 2-core VM) less at each hop of the commit path. Otherwise, and for client
 * submissions (their callers may hold locks that completion callbacks take), the runtime thread is woken; it
 * also runs the timers (tick, held COMMITs). An RPC thread runs one turn and hands anything that arrived
 * meanwhile to the runtime thread, so it goes back to serving RPCs.
 *
 * APPLY. An entry value is a batch of commands (see rsm_internal.h). One kv_txn per entry: every command of
 * the entry, the runtime's session/reply-cache records and "r/applied" = slot commit in one WriteBatch
 * (unsynced; see rsm_store.c for why that is durable enough). Per command with a session: unknown session
 * -> -ESTALE; seq already answered (reply cache "r/c/<session><seq>") -> the cached reply, not a second
 * apply; else sm->apply and the reply is cached until the client's `acked` floor passes it. Results
 * complete the proposer's submissions (matched by slot and zxid; a different zxid in our slot means our
 * proposal lost: -EAGAIN, the client retries with the same (session, seq)).
 *
 * SESSIONS. Opened and expired through the log (RSM_CMD_OPEN / RSM_CMD_EXPIRE, ids from a counter in the
 * state). Leases live in memory: every node tracks the sessions it applied, and a node that starts serving
 * as leader reloads them from LevelDB with a fresh lease each; only the serving leader proposes expiries.
 *
 * READS. The runtime thread publishes, each turn, until when paxos_can_read() holds (read_until_us, found by
 * probing the core's pure predicate); rsm_read on any thread runs on the applied LevelDB state while its own
 * monotonic clock is before that (with 1 ms to spare for the read itself).
 */
#include "metaserver/rsm_internal.h"

#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "paxos.pb-c.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define RSM_TICK_US         5000
#define RSM_MAX_WAIT        200000 /* submissions waiting for a slot before -EAGAIN */
#define RSM_MAX_QUEUE_BYTES (512u << 20)
#define RSM_WAIT_TIMEOUT_NS (2 * NS_PER_SEC)
#define RSM_EXPIRY_SCAN_NS  (100 * NS_PER_MS)
#define RSM_SLOW_PERSIST_NS (200 * NS_PER_MS) /* a Paxos fsync this slow is logged */

void rsm_buf_append(struct rsm_buf *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = MAX(b->cap * 2, b->len + len + 64);
        b->data = xrealloc(b->data, b->cap);
    }
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
}

static uint64_t now_us(void)
{
    return clk_mono_ns() / 1000;
}

/* ---- input queue ---- */

/* Push an input; false when refused (see rsm_enqueue). Caller holds r->mu. */
static bool push_locked(struct rsm *r, struct rsm_input *in)
{
    if (r->stopping || (in->kind == RSM_IN_MSGS && r->in_bytes + in->bytes > RSM_MAX_QUEUE_BYTES))
        return false;
    in->next = NULL;
    if (r->in_tail)
        r->in_tail->next = in;
    else
        r->in_head = in;
    r->in_tail = in;
    r->in_bytes += in->bytes;
    return true;
}

bool rsm_enqueue(struct rsm *r, struct rsm_input *in)
{
    pthread_mutex_lock(&r->mu);
    bool ok = push_locked(r, in);
    if (ok)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void turn(struct rsm *r);

bool rsm_enqueue_run(struct rsm *r, struct rsm_input *in)
{
    pthread_mutex_lock(&r->mu);
    bool ok = push_locked(r, in);
    /* trylock never waits, so taking it under mu cannot deadlock with a turn (run_mu, then mu) */
    bool run = ok && pthread_mutex_trylock(&r->run_mu) == 0;
    if (ok && !run)
        pthread_cond_signal(&r->cv); /* a turn is running: the runtime thread takes over after it */
    pthread_mutex_unlock(&r->mu);
    if (!run)
        return ok;
    turn(r);
    /* One turn only (the caller is an RPC thread): what came in meanwhile goes to the runtime thread. Timers
     * set by this turn (a held COMMIT) do not wake it: it sees them at its next tick at the latest. */
    pthread_mutex_lock(&r->mu);
    if (r->in_head)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&r->run_mu);
    return true;
}

static void sub_finish(struct rsm_sub *s, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    s->done(s->arg, err, reply, len, zxid);
    free(s);
}

static void input_free(struct rsm_input *in, int err)
{
    if (in->kind == RSM_IN_MSGS) {
        rsm_msgs_free(in->msgs, in->n_msgs);
        if (in->call)
            rsm_net_ack(in->call);
    } else if (in->kind == RSM_IN_SUBMIT)
        sub_finish(in->sub, err, NULL, 0, 0);
    else
        rpc_message_free(in->snap_rep);
    free(in);
}

/* ---- sessions (in-memory leases) ---- */

static size_t sess_pos(const struct rsm *r, uint64_t id) /* first index with id >= `id`; sess_mu held */
{
    size_t lo = 0, hi = r->n_sess;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->sess[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct rsm_sess *sess_find(struct rsm *r, uint64_t id)
{
    size_t i = sess_pos(r, id);
    return i < r->n_sess && r->sess[i].id == id ? &r->sess[i] : NULL;
}

static void sess_add(struct rsm *r, uint64_t id, uint64_t expires)
{
    pthread_mutex_lock(&r->sess_mu);
    size_t i = sess_pos(r, id);
    if (i < r->n_sess && r->sess[i].id == id) {
        r->sess[i].expires_ns = expires;
    } else {
        if (r->n_sess == r->cap_sess) {
            r->cap_sess = r->cap_sess ? r->cap_sess * 2 : 64;
            r->sess = xrealloc(r->sess, r->cap_sess * sizeof(*r->sess));
        }
        memmove(&r->sess[i + 1], &r->sess[i], (r->n_sess - i) * sizeof(*r->sess));
        r->sess[i] = (struct rsm_sess){id, expires, false};
        r->n_sess++;
    }
    pthread_mutex_unlock(&r->sess_mu);
}

static void sess_del(struct rsm *r, uint64_t id)
{
    pthread_mutex_lock(&r->sess_mu);
    size_t i = sess_pos(r, id);
    if (i < r->n_sess && r->sess[i].id == id) {
        memmove(&r->sess[i], &r->sess[i + 1], (r->n_sess - i - 1) * sizeof(*r->sess));
        r->n_sess--;
    }
    pthread_mutex_unlock(&r->sess_mu);
}

/* Reload every session from the state with a fresh lease (takeover, snapshot install, startup). */
static void sess_reload(struct rsm *r)
{
    pthread_mutex_lock(&r->sess_mu);
    r->n_sess = 0;
    pthread_mutex_unlock(&r->sess_mu);
    uint64_t exp = clk_mono_ns() + (uint64_t)r->session_lease_ms * NS_PER_MS;
    leveldb_iterator_t *it = leveldb_create_iterator(r->db, r->ropt);
    size_t pl = strlen(RSM_KEY_SESS);
    for (leveldb_iter_seek(it, RSM_KEY_SESS, pl); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kl;
        const char *k = leveldb_iter_key(it, &kl);
        if (kl != pl + 8 || memcmp(k, RSM_KEY_SESS, pl) != 0)
            break;
        sess_add(r, get_be64(k + pl), exp);
    }
    leveldb_iter_destroy(it);
}

struct expire_ctx {
    struct rsm *r;
    uint64_t id;
};

/* An expiry we proposed completed: when it did not make it into the log, allow another attempt. */
static void expire_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    UNUSED(reply);
    UNUSED(len);
    UNUSED(zxid);
    struct expire_ctx *x = arg;
    if (err) {
        pthread_mutex_lock(&x->r->sess_mu);
        struct rsm_sess *s = sess_find(x->r, x->id);
        if (s)
            s->expiring = false;
        pthread_mutex_unlock(&x->r->sess_mu);
    }
    free(x);
}

/* ---- submissions ---- */

static struct rsm_sub *sub_new(uint8_t type, uint64_t session, uint64_t seq, uint64_t acked, const void *cmd,
                               size_t len, rsm_done_fn done, void *arg)
{
    struct rsm_sub *s = xmalloc(sizeof(*s) + len);
    s->next = NULL;
    s->type = type;
    s->session = session;
    s->seq = seq;
    s->acked = acked;
    s->done = done;
    s->arg = arg;
    s->queued_ns = clk_mono_ns();
    s->len = (uint32_t)len;
    if (len)
        memcpy(s->cmd, cmd, len);
    return s;
}

static void wait_push(struct rsm *r, struct rsm_sub *s)
{
    s->next = NULL;
    if (r->wait_tail)
        r->wait_tail->next = s;
    else
        r->wait_head = s;
    r->wait_tail = s;
    r->n_wait++;
}

static void enqueue_sub(struct rsm *r, struct rsm_sub *s)
{
    if (s->len + RSM_ENTRY_HDR + RSM_CMD_HDR > r->max_batch_bytes) {
        sub_finish(s, -EMSGSIZE, NULL, 0, 0);
        return;
    }
    struct rsm_input *in = xcalloc(1, sizeof(*in));
    in->kind = RSM_IN_SUBMIT;
    in->sub = s;
    if (!rsm_enqueue(r, in))
        input_free(in, -ECANCELED);
}

void rsm_submit(struct rsm *r, uint64_t session, uint64_t seq, uint64_t acked, const void *cmd, size_t len,
                rsm_done_fn done, void *arg)
{
    if (atomic_load(&r->pub_state) != PAXOS_LEADING) {
        uint32_t l = atomic_load(&r->pub_leader);
        done(arg, l != PAXOS_NO_NODE && l != r->cfg.self ? -EREMOTE : -EAGAIN, NULL, 0, 0);
        return;
    }
    if (session)
        rsm_session_touch(r, session);
    enqueue_sub(r, sub_new(RSM_CMD_APPLY, session, seq, acked, cmd, len, done, arg));
}

void rsm_session_open(struct rsm *r, const char *client, rsm_done_fn done, void *arg)
{
    if (atomic_load(&r->pub_state) != PAXOS_LEADING) {
        uint32_t l = atomic_load(&r->pub_leader);
        done(arg, l != PAXOS_NO_NODE && l != r->cfg.self ? -EREMOTE : -EAGAIN, NULL, 0, 0);
        return;
    }
    size_t n = client ? MIN(strlen(client), 256) : 0;
    enqueue_sub(r, sub_new(RSM_CMD_OPEN, 0, 0, 0, client, n, done, arg));
}

int rsm_session_touch(struct rsm *r, uint64_t session)
{
    if (atomic_load(&r->pub_state) != PAXOS_LEADING)
        return -EREMOTE;
    int rc = -ESTALE;
    pthread_mutex_lock(&r->sess_mu);
    struct rsm_sess *s = sess_find(r, session);
    if (s && !s->expiring) {
        s->expires_ns = clk_mono_ns() + (uint64_t)r->session_lease_ms * NS_PER_MS;
        rc = 0;
    }
    pthread_mutex_unlock(&r->sess_mu);
    return rc;
}

uint32_t rsm_session_lease_ms(const struct rsm *r)
{
    return r->session_lease_ms;
}

/* Fail everything waiting (not leading any more, or shutting down). */
static void fail_waiting(struct rsm *r, int err)
{
    struct rsm_sub *s = r->wait_head;
    r->wait_head = r->wait_tail = NULL;
    r->n_wait = 0;
    while (s) {
        struct rsm_sub *next = s->next;
        sub_finish(s, err, NULL, 0, 0);
        s = next;
    }
}

static void pending_fail(struct rsm_pending *p, int err)
{
    for (size_t i = 0; i < p->n; i++)
        sub_finish(p->subs[i], err, NULL, 0, 0);
    free(p->subs);
    p->subs = NULL;
    p->n = 0;
}

static void fail_pending(struct rsm *r, int err)
{
    for (size_t i = 0; i < r->n_pend; i++)
        pending_fail(&r->pend[i], err);
    r->n_pend = 0;
}

/* Pack waiting submissions into slots while the core accepts proposals. */
static void propose_waiting(struct rsm *r)
{
    while (r->wait_head && paxos_state(r->px) == PAXOS_LEADING) {
        size_t n = 0, bytes = RSM_ENTRY_HDR;
        struct rsm_sub *s = r->wait_head;
        for (; s && n < r->max_batch_cmds; s = s->next) {
            if (n && bytes + RSM_CMD_HDR + s->len > r->max_batch_bytes)
                break;
            bytes += RSM_CMD_HDR + s->len;
            n++;
        }
        if (bytes > r->ebuf_cap) {
            r->ebuf_cap = MAX(bytes, r->ebuf_cap * 2);
            r->ebuf = xrealloc(r->ebuf, r->ebuf_cap);
        }
        uint8_t *p = r->ebuf;
        p[0] = RSM_ENTRY_VERSION;
        put_le64(p + 1, (uint64_t)clk_real_ns());
        put_le32(p + 9, (uint32_t)n);
        p += RSM_ENTRY_HDR;
        s = r->wait_head;
        for (size_t i = 0; i < n; i++, s = s->next) {
            p[0] = s->type;
            put_le64(p + 1, s->session);
            put_le64(p + 9, s->seq);
            put_le64(p + 17, s->acked);
            put_le32(p + 25, s->len);
            memcpy(p + RSM_CMD_HDR, s->cmd, s->len);
            p += RSM_CMD_HDR + s->len;
        }
        uint64_t slot, zxid;
        int rc = paxos_propose(r->px, PAXOS_VAL_CMD, r->ebuf, (uint32_t)bytes, now_us(), &slot, &zxid);
        if (rc != 0)
            break; /* window full or not serving yet: keep waiting */
        if (r->n_pend == r->cap_pend) {
            r->cap_pend = r->cap_pend ? r->cap_pend * 2 : 64;
            r->pend = xrealloc(r->pend, r->cap_pend * sizeof(*r->pend));
        }
        struct rsm_pending *pd = &r->pend[r->n_pend++];
        pd->slot = slot;
        pd->zxid = zxid;
        pd->n = n;
        pd->subs = xmalloc(n * sizeof(*pd->subs));
        for (size_t i = 0; i < n; i++) {
            pd->subs[i] = r->wait_head;
            r->wait_head = r->wait_head->next;
        }
        if (!r->wait_head)
            r->wait_tail = NULL;
        r->n_wait -= n;
    }
}

/* ---- apply ---- */

static void cache_key(uint8_t k[20], uint64_t session, uint64_t seq)
{
    memcpy(k, RSM_KEY_CACHE, 4);
    put_be64(k + 4, session);
    put_be64(k + 12, seq);
}

static void sess_key(uint8_t k[12], uint64_t session)
{
    memcpy(k, RSM_KEY_SESS, 4);
    put_be64(k + 4, session);
}

static void drop_cache(struct kv_txn *txn, uint64_t session, uint64_t below)
{
    uint8_t a[20], b[20];
    cache_key(a, session, 0);
    cache_key(b, session, below);
    struct kv_iter *it = kv_iter_new(txn, a, sizeof(a), b, sizeof(b));
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        kv_del(txn, k, kl);
    }
    kv_iter_free(it);
}

static void apply_open(struct rsm *r, struct kv_txn *txn, const uint8_t *name, size_t len,
                       struct cmd_result *res, uint64_t *opened)
{
    uint8_t v[8];
    char *cur = NULL;
    size_t cl = 0;
    uint64_t id =
        kv_get(txn, RSM_KEY_NSESS, strlen(RSM_KEY_NSESS), &cur, &cl) == 0 && cl == 8 ? get_be64(cur) : 0;
    free(cur);
    id++;
    put_be64(v, id);
    kv_put(txn, RSM_KEY_NSESS, strlen(RSM_KEY_NSESS), v, 8);
    uint8_t k[12];
    sess_key(k, id);
    uint8_t *rec = xmalloc(8 + len);
    put_le64(rec, 0);
    memcpy(rec + 8, name, len);
    kv_put(txn, k, sizeof(k), rec, 8 + len);
    free(rec);
    uint8_t out[8];
    put_le64(out, id);
    rsm_buf_append(&res->reply, out, 8);
    *opened = id;
    (void)r;
}

static void apply_expire(struct rsm *r, struct kv_txn *txn, const struct rsm_apply_ctx *ctx,
                         const uint8_t *cmd, size_t len, uint64_t *expired)
{
    if (len != 8)
        return;
    uint64_t id = get_le64(cmd);
    uint8_t k[12];
    sess_key(k, id);
    if (kv_get(txn, k, sizeof(k), NULL, NULL) != 0)
        return;
    if (r->sm->session_expired)
        r->sm->session_expired(r->sm_arg, txn, ctx, id);
    drop_cache(txn, id, UINT64_MAX);
    kv_del(txn, k, sizeof(k));
    *expired = id;
}

/* One client command with exactly-once bookkeeping. */
static void apply_cmd(struct rsm *r, struct kv_txn *txn, const struct rsm_apply_ctx *ctx, uint64_t acked,
                      const uint8_t *cmd, size_t len, struct cmd_result *res)
{
    if (!ctx->session) {
        res->err = r->sm->apply(r->sm_arg, txn, ctx, cmd, len, &res->reply);
        return;
    }
    uint8_t sk[12];
    sess_key(sk, ctx->session);
    char *rec = NULL;
    size_t rl = 0;
    if (kv_get(txn, sk, sizeof(sk), &rec, &rl) != 0 || rl < 8) {
        free(rec);
        res->err = -ESTALE;
        return;
    }
    uint64_t floor = get_le64(rec);
    if (acked > floor) {
        if (acked - floor <= 64) { /* the usual case: a few seqs answered since; blind deletes, no scan */
            for (uint64_t q = floor; q < acked; q++) {
                uint8_t dk[20];
                cache_key(dk, ctx->session, q);
                kv_del(txn, dk, sizeof(dk));
            }
        } else {
            drop_cache(txn, ctx->session, acked);
        }
        put_le64(rec, acked);
        kv_put(txn, sk, sizeof(sk), rec, rl);
        floor = acked;
    }
    free(rec);
    if (ctx->seq < floor) {
        res->err = -EALREADY; /* answered and acknowledged long ago: a stray duplicate */
        return;
    }
    uint8_t ck[20];
    cache_key(ck, ctx->session, ctx->seq);
    char *cached = NULL;
    size_t cl = 0;
    if (kv_get(txn, ck, sizeof(ck), &cached, &cl) == 0 && cl >= 12) {
        res->err = (int32_t)get_le32(cached);
        res->zxid = get_le64(cached + 4);
        rsm_buf_append(&res->reply, cached + 12, cl - 12);
        free(cached);
        return;
    }
    free(cached);
    res->err = r->sm->apply(r->sm_arg, txn, ctx, cmd, len, &res->reply);
    if (res->err > 0)
        res->err = -EIO;
    if (res->err)
        res->reply.len = 0;
    uint8_t *c = xmalloc(12 + res->reply.len);
    put_le32(c, (uint32_t)res->err);
    put_le64(c + 4, ctx->zxid);
    if (res->reply.len)
        memcpy(c + 12, res->reply.data, res->reply.len);
    kv_put(txn, ck, sizeof(ck), c, 12 + res->reply.len);
    free(c);
}

static struct cmd_result *results_get(struct rsm *r, size_t n)
{
    if (n > r->cap_res) {
        r->res = xrealloc(r->res, n * sizeof(*r->res));
        memset(r->res + r->cap_res, 0, (n - r->cap_res) * sizeof(*r->res));
        r->cap_res = n;
    }
    return r->res;
}

/* Apply one chosen entry and complete the submissions waiting for it. */
static void apply_entry(struct rsm *r, const struct paxos_entry *e)
{
    const struct paxos_val *v = e->val;
    struct kv_txn *txn = kv_txn_begin(r->db);
    size_t n = 0;
    struct cmd_result *res = NULL;
    uint64_t opened[64], n_opened = 0, expired[64], n_expired = 0;
    bool reload_sessions = false;
    if (v->kind == PAXOS_VAL_CMD) {
        const uint8_t *p = v->data, *end = v->data + v->len;
        if (v->len < RSM_ENTRY_HDR || p[0] != RSM_ENTRY_VERSION) {
            LOG_ERR("apply slot %llu: malformed entry (%u bytes): skipped", (unsigned long long)e->slot,
                    v->len);
        } else {
            struct rsm_apply_ctx ctx = {
                .index = e->slot, .zxid = v->zxid, .time_ns = (int64_t)get_le64(p + 1)};
            uint32_t count = get_le32(p + 9);
            p += RSM_ENTRY_HDR;
            res = results_get(r, MIN(count, v->len / RSM_CMD_HDR + 1));
            count = MIN(count, v->len / RSM_CMD_HDR + 1);
            for (; n < count; n++) {
                if ((size_t)(end - p) < RSM_CMD_HDR || get_le32(p + 25) > (size_t)(end - p) - RSM_CMD_HDR) {
                    LOG_ERR("apply slot %llu: truncated command %zu", (unsigned long long)e->slot, n);
                    break;
                }
                struct cmd_result *cr = &res[n];
                cr->err = 0;
                cr->zxid = v->zxid;
                cr->reply.len = 0;
                uint8_t type = p[0];
                ctx.session = get_le64(p + 1);
                ctx.seq = get_le64(p + 9);
                uint64_t acked = get_le64(p + 17);
                uint32_t len = get_le32(p + 25);
                const uint8_t *cmd = p + RSM_CMD_HDR;
                p += RSM_CMD_HDR + len;
                uint64_t id = 0;
                if (type == RSM_CMD_APPLY) {
                    apply_cmd(r, txn, &ctx, acked, cmd, len, cr);
                } else if (type == RSM_CMD_OPEN) {
                    apply_open(r, txn, cmd, len, cr, &id);
                    if (n_opened < ARRAY_SIZE(opened))
                        opened[n_opened++] = id;
                    else
                        reload_sessions = true;
                } else if (type == RSM_CMD_EXPIRE) {
                    ctx.session = 0;
                    apply_expire(r, txn, &ctx, cmd, len, &id);
                    if (id && n_expired < ARRAY_SIZE(expired))
                        expired[n_expired++] = id;
                    else if (id)
                        reload_sessions = true;
                } else {
                    cr->err = -EINVAL;
                }
            }
        }
    }
    uint8_t av[8];
    put_be64(av, e->slot);
    struct kv_pair extra = {RSM_KEY_APPLIED, strlen(RSM_KEY_APPLIED), av, 8};
    if (v->zxid)
        atomic_store(&r->pub_zxid, v->zxid);
    int rc = kv_txn_commit(txn, &extra, 1, false);
    if (rc != 0)
        PANIC("apply slot %llu: cannot commit to leveldb (%d): replica state would diverge",
              (unsigned long long)e->slot, rc);
    uint64_t exp = clk_mono_ns() + (uint64_t)r->session_lease_ms * NS_PER_MS;
    for (size_t i = 0; i < n_opened; i++)
        sess_add(r, opened[i], exp);
    for (size_t i = 0; i < n_expired; i++)
        sess_del(r, expired[i]);
    if (reload_sessions)
        sess_reload(r);

    /* complete our proposals: earlier slots of ours were lost; this one matches by zxid */
    while (r->n_pend && r->pend[0].slot <= e->slot) {
        struct rsm_pending *pd = &r->pend[0];
        if (pd->slot == e->slot && pd->zxid == v->zxid && pd->n == n) {
            for (size_t i = 0; i < n; i++)
                sub_finish(pd->subs[i], res[i].err, res[i].reply.data, res[i].reply.len, res[i].zxid);
            free(pd->subs);
            pd->subs = NULL;
            pd->n = 0;
        } else {
            pending_fail(pd, -EAGAIN);
        }
        memmove(&r->pend[0], &r->pend[1], (r->n_pend - 1) * sizeof(*r->pend));
        r->n_pend--;
    }
}

/* ---- snapshots ---- */

static void install_reset(struct rsm *r)
{
    free(r->inst.last_key);
    memset(&r->inst, 0, sizeof(r->inst));
}

static void snap_trigger(struct rsm *r, uint32_t from, uint64_t index)
{
    if (r->inst.active || paxos_state(r->px) == PAXOS_LEADING || index <= paxos_applied_index(r->px))
        return;
    LOG_INFO("snapshot: pulling snapshot %llu from node %u (applied %llu)", (unsigned long long)index, from,
             (unsigned long long)paxos_applied_index(r->px));
    if (rsm_store_stage_clear(r) != 0) /* what an abandoned transfer staged */
        PANIC("snapshot: cannot clear the staging area in leveldb");
    r->inst.active = true;
    r->inst.from = from;
    rsm_net_snap_request(r, from, 0, NULL, 0);
}

static void snap_chunk(struct rsm *r, int err, Synod__V1__SnapshotRep *rep)
{
    if (!r->inst.active)
        return;
    if (err || !rep || !rep->snapshot_id ||
        (r->inst.snapshot_id && rep->snapshot_id != r->inst.snapshot_id)) {
        LOG_WARN("snapshot from node %u: transfer failed (%d): abandoned", r->inst.from, err);
        install_reset(r);
        return;
    }
    r->inst.snapshot_id = rep->snapshot_id;
    r->inst.bytes += rep->data.len;
    if (!rep->last && !rep->last_key.len) {
        LOG_WARN("snapshot from node %u: malformed chunk: abandoned", r->inst.from);
        install_reset(r);
        return;
    }
    int src = rsm_store_stage_put(r, rep->data.data, rep->data.len, rep->count);
    if (src == -EBADMSG) {
        LOG_WARN("snapshot from node %u: malformed chunk: abandoned", r->inst.from);
        install_reset(r);
        return;
    }
    if (src)
        PANIC("snapshot: cannot stage a piece in leveldb (%d)", src);
    if (!rep->last) {
        free(r->inst.last_key);
        r->inst.last_key = xmalloc(rep->last_key.len);
        memcpy(r->inst.last_key, rep->last_key.data, rep->last_key.len);
        r->inst.last_key_len = rep->last_key.len;
        rsm_net_snap_request(r, r->inst.from, r->inst.snapshot_id, r->inst.last_key, r->inst.last_key_len);
        return;
    }
    uint64_t index = rep->snapshot_id;
    if (paxos_state(r->px) == PAXOS_LEADING || index <= paxos_applied_index(r->px)) {
        install_reset(r);
        return;
    }
    if (rsm_store_stage_commit(r, index) != 0)
        PANIC("snapshot %llu: cannot install into leveldb", (unsigned long long)index);
    int rc = paxos_snapshot_installed(r->px, index, now_us());
    ASSERT(rc == 0);
    LOG_INFO("snapshot: installed snapshot %llu from node %u (%llu bytes)", (unsigned long long)index,
             r->inst.from, (unsigned long long)r->inst.bytes);
    install_reset(r);
    r->last_snap = index;
    rsm_snap_take(r, index);
    sess_reload(r);
    if (r->sm->restored)
        r->sm->restored(r->sm_arg);
}

static void maybe_snapshot(struct rsm *r)
{
    uint64_t applied = paxos_applied_index(r->px);
    if (applied < r->last_snap + r->snapshot_every)
        return;
    if (rsm_store_mark_snapshot(r, applied) != 0)
        return; /* retried next turn */
    rsm_snap_take(r, applied);
    paxos_snapshot_done(r->px, applied);
    r->last_snap = applied;
    LOG_DEBUG("snapshot at %llu", (unsigned long long)applied);
}

/* ---- the loop ---- */

static void publish(struct rsm *r, uint64_t now)
{
    struct paxos *p = r->px;
    enum paxos_state st = paxos_state(p);
    uint64_t until = 0;
    if (paxos_can_read(p, now)) {
        uint64_t lo = now, hi = now + (uint64_t)r->lease_ms * 1000 + 1;
        while (hi - lo > 50) { /* the lease end is the first time the pure predicate turns false */
            uint64_t mid = lo + (hi - lo) / 2;
            if (paxos_can_read(p, mid))
                lo = mid;
            else
                hi = mid;
        }
        until = lo > now + 1000 ? lo - 1000 : 0;
    }
    atomic_store(&r->read_until_us, until);
    atomic_store(&r->pub_state, (uint32_t)st);
    atomic_store(&r->pub_leader, paxos_leader_hint(p));
    atomic_store(&r->pub_serving, paxos_serving(p));
    atomic_store(&r->pub_ballot, st == PAXOS_LEADING ? paxos_ballot(p) : paxos_promised(p));
    atomic_store(&r->pub_commit, paxos_commit_index(p));
    atomic_store(&r->pub_applied, paxos_applied_index(p));
    atomic_store(&r->pub_log_start, paxos_log_start(p));
}

/* How many of a ready's chosen entries the leader may apply (and answer) before its fsync: those whose slot
 * is not among the records this ready persists. They were chosen in earlier turns, so they are durable on a
 * majority and in our own log already (the leader persists a slot in the same ready that sends its ACCEPT,
 * and counts its own vote only after that); the reply vouches for nothing the fsync still has to make
 * durable. Under load nearly every turn both proposes new slots and learns older ones chosen: without this
 * every client reply would wait for the next batch's fsync. Followers (and candidates) keep the core's
 * order: nobody waits for their applies. */
static size_t apply_before_persist(struct rsm *r, const struct paxos_ready *rd)
{
    if (!rd->n_apply || paxos_state(r->px) != PAXOS_LEADING)
        return 0;
    uint64_t lowest = UINT64_MAX;
    for (size_t i = 0; i < rd->n_entries; i++)
        lowest = MIN(lowest, rd->entries[i].slot);
    size_t n = 0;
    while (n < rd->n_apply && rd->apply[n].slot < lowest) /* apply slots are consecutive and ascending */
        n++;
    return n;
}

static void run_ready(struct rsm *r)
{
    struct paxos_ready rd;
    while (paxos_ready(r->px, &rd)) {
        if (rd.n_entries || rd.truncate_below || rd.hard_changed) {
            for (size_t i = 0; i < rd.n_send_now; i++)
                rsm_net_queue(r, &rd.send_now[i]);
            rsm_net_flush(r); /* before the fsync: peers fsync in parallel with us */
            size_t early = apply_before_persist(r, &rd);
            for (size_t i = 0; i < early; i++)
                apply_entry(r, &rd.apply[i]);
            uint64_t t0 = clk_mono_ns();
            int rc = rsm_store_persist(r, &rd);
            if (rc != 0)
                PANIC("paxos persist failed (%d): cannot keep promises, stopping", rc);
            uint64_t took = clk_mono_ns() - t0;
            if (took >=
                RSM_SLOW_PERSIST_NS) /* heartbeats and elections wait on this: say why they were late */
                LOG_WARN("slow durable write: %llu ms for %zu log entries",
                         (unsigned long long)(took / NS_PER_MS), rd.n_entries);
            for (size_t i = 0; i < rd.n_send_after; i++)
                rsm_net_queue(r, &rd.send_after[i]);
            rsm_net_flush(r);
            for (size_t i = early; i < rd.n_apply; i++)
                apply_entry(r, &rd.apply[i]);
        } else {
            /* Nothing to persist (e.g. the leader learning a commit): apply first, so clients get their
             * replies before we spend time on the COMMITs, then send everything as one batch per peer. */
            for (size_t i = 0; i < rd.n_apply; i++)
                apply_entry(r, &rd.apply[i]);
            for (size_t i = 0; i < rd.n_send_now; i++)
                rsm_net_queue(r, &rd.send_now[i]);
            for (size_t i = 0; i < rd.n_send_after; i++)
                rsm_net_queue(r, &rd.send_after[i]);
            rsm_net_flush(r);
        }
        paxos_advance(r->px, &rd);
        propose_waiting(r);
    }
}

static void handle_role(struct rsm *r, uint64_t now_ns)
{
    enum paxos_state st = paxos_state(r->px);
    bool serving = paxos_serving(r->px);
    if (st != PAXOS_LEADING) {
        if (r->wait_head || r->n_pend) {
            uint32_t l = paxos_leader_hint(r->px);
            fail_waiting(r, l != PAXOS_NO_NODE && l != r->cfg.self ? -EREMOTE : -EAGAIN);
            fail_pending(r, -EAGAIN);
        }
    } else {
        /* waiting too long (not serving yet, or overloaded): let clients retry */
        while (r->wait_head && now_ns - r->wait_head->queued_ns > RSM_WAIT_TIMEOUT_NS) {
            struct rsm_sub *s = r->wait_head;
            r->wait_head = s->next;
            if (!r->wait_head)
                r->wait_tail = NULL;
            r->n_wait--;
            sub_finish(s, -EAGAIN, NULL, 0, 0);
        }
    }
    uint64_t ballot = paxos_ballot(r->px);
    uint32_t leader = paxos_leader_hint(r->px);
    if (st == PAXOS_LOOKING && ballot && ballot != r->logged_ballot) {
        LOG_INFO("campaigning with ballot %llu.%u from slot %llu",
                 (unsigned long long)PAXOS_BALLOT_ROUND(ballot), PAXOS_BALLOT_NODE(ballot),
                 (unsigned long long)paxos_commit_index(r->px) + 1);
        r->logged_ballot = ballot;
        r->logged_leader = PAXOS_NO_NODE;
    } else if ((st == PAXOS_FOLLOWING || st == PAXOS_OBSERVING) && leader != r->logged_leader) {
        LOG_INFO("%s node %u (commit %llu)", st == PAXOS_FOLLOWING ? "following" : "observing", leader,
                 (unsigned long long)paxos_commit_index(r->px));
        r->logged_leader = leader;
        r->logged_ballot = 0;
    } else if (st == PAXOS_LEADING) {
        r->logged_ballot = ballot;
        r->logged_leader = r->cfg.self;
    }
    if (serving && !r->was_serving) {
        LOG_INFO("leading with ballot %llu.%u from slot %llu: serving",
                 (unsigned long long)PAXOS_BALLOT_ROUND(paxos_ballot(r->px)),
                 PAXOS_BALLOT_NODE(paxos_ballot(r->px)), (unsigned long long)paxos_applied_index(r->px));
        sess_reload(r); /* fresh lease for every session on takeover */
        r->next_expiry_scan = now_ns + (uint64_t)r->session_lease_ms * NS_PER_MS / 4;
    }
    if (!serving && r->was_serving)
        LOG_INFO("no longer serving (state %s)", paxos_state_name(st));
    r->was_serving = serving;
}

static void expiry_scan(struct rsm *r, uint64_t now_ns)
{
    if (now_ns < r->next_expiry_scan)
        return;
    r->next_expiry_scan = now_ns + RSM_EXPIRY_SCAN_NS;
    uint64_t ids[64];
    size_t n = 0;
    pthread_mutex_lock(&r->sess_mu);
    for (size_t i = 0; i < r->n_sess && n < ARRAY_SIZE(ids); i++) {
        if (!r->sess[i].expiring && r->sess[i].expires_ns < now_ns) {
            r->sess[i].expiring = true;
            ids[n++] = r->sess[i].id;
        }
    }
    pthread_mutex_unlock(&r->sess_mu);
    for (size_t i = 0; i < n; i++) {
        uint8_t c[8];
        put_le64(c, ids[i]);
        LOG_INFO("session %llu: lease expired, expiring through the log", (unsigned long long)ids[i]);
        struct expire_ctx *x = xmalloc(sizeof(*x));
        x->r = r;
        x->id = ids[i];
        wait_push(r, sub_new(RSM_CMD_EXPIRE, 0, 0, 0, c, 8, expire_done, x));
    }
}

/* One loop turn: take every queued input, feed it, tick, propose, run the core until it has nothing more.
 * Caller holds run_mu. */
static void turn(struct rsm *r)
{
    pthread_mutex_lock(&r->mu);
    struct rsm_input *in = r->in_head;
    r->in_head = r->in_tail = NULL;
    r->in_bytes = 0;
    pthread_mutex_unlock(&r->mu);

    uint64_t now = now_us();
    while (in) {
        struct rsm_input *next = in->next;
        if (in->kind == RSM_IN_MSGS) {
            for (size_t i = 0; i < in->n_msgs; i++) {
                if (in->msgs[i].type == PAXOS_MSG_SNAPSHOT)
                    snap_trigger(r, in->msgs[i].from, in->msgs[i].log_start);
                else
                    paxos_step(r->px, &in->msgs[i], now);
            }
            if (in->call) { /* answered by this turn's flush to that peer, or acked empty at its end */
                rsm_net_hold(r, in->from, in->call);
                in->call = NULL;
            }
            input_free(in, 0);
        } else if (in->kind == RSM_IN_SUBMIT) {
            if (r->n_wait >= RSM_MAX_WAIT) {
                input_free(in, -EAGAIN);
            } else {
                wait_push(r, in->sub);
                free(in);
            }
        } else {
            snap_chunk(r, in->err, in->snap_rep);
            input_free(in, 0);
        }
        in = next;
    }
    now = now_us();
    if (now >= r->next_tick) {
        paxos_tick(r->px, now);
        r->next_tick = now + RSM_TICK_US;
    }
    uint64_t now_ns = now * 1000;
    handle_role(r, now_ns);
    if (r->was_serving) {
        expiry_scan(r, now_ns);
        if (r->sm->leader_tick && now_ns >= r->next_sm_tick) {
            r->sm->leader_tick(r->sm_arg, r, now_ns);
            r->next_sm_tick = now_ns + 10 * NS_PER_MS;
        }
    }
    propose_waiting(r);
    run_ready(r);
    r->next_commit = rsm_net_commits(r, now_us());
    rsm_net_release(r);
    handle_role(r, now_ns);
    maybe_snapshot(r);
    publish(r, now_us());
    atomic_store(&r->wake_us, MIN(r->next_tick, r->next_commit));
}

/* The runtime thread: runs a turn when inputs are queued that no RPC thread took, and for the timers (the
 * tick, held COMMITs: a COMMIT held by a turn on an RPC thread goes out at the next tick at the latest). */
static void *rsm_main(void *arg)
{
    struct rsm *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->in_head && !r->stopping) {
            uint64_t t = now_us(), wake = atomic_load(&r->wake_us);
            if (t >= wake)
                break;
            uint64_t dl = clk_mono_ns() + (wake - t) * 1000;
            struct timespec ts = {(time_t)(dl / NS_PER_SEC), (long)(dl % NS_PER_SEC)};
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
        bool stop = r->stopping;
        pthread_mutex_unlock(&r->mu);
        if (stop)
            break;
        pthread_mutex_lock(&r->run_mu);
        turn(r);
        pthread_mutex_unlock(&r->run_mu);
    }
    pthread_mutex_lock(&r->run_mu);
    rsm_net_release(r);
    pthread_mutex_unlock(&r->run_mu);
    return NULL;
}

/* ---- public API ---- */

static int check_config(const struct rsm_config *c)
{
    if (c->n_nodes == 0 || c->n_nodes > PAXOS_MAX_NODES || c->self >= c->n_nodes || !c->peers || !c->data_dir)
        return -EINVAL;
    for (uint32_t i = 0; i < c->n_nodes; i++)
        if (!c->peers[i] || !*c->peers[i])
            return -EINVAL;
    return 0;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t rsm_cluster_id(const struct rsm_config *cfg)
{
    static const char tag[] = "synodfs-cluster";
    const char *token = cfg->cluster_token ? cfg->cluster_token : "";
    uint64_t h = fnv1a(0xcbf29ce484222325ull, tag, sizeof(tag));
    h = fnv1a(h, token, strlen(token) + 1);
    for (uint32_t i = 0; i < cfg->n_nodes; i++)
        h = fnv1a(h, cfg->peers[i], strlen(cfg->peers[i]) + 1);
    uint32_t voters = cfg->voter_mask ? cfg->voter_mask : (uint32_t)((1ull << cfg->n_nodes) - 1);
    uint8_t v[4] = {(uint8_t)voters, (uint8_t)(voters >> 8), (uint8_t)(voters >> 16),
                    (uint8_t)(voters >> 24)};
    h = fnv1a(h, v, sizeof(v));
    return h ? h : 1;
}

int rsm_new(const struct rsm_config *cfg, const struct rsm_sm *sm, void *sm_arg, struct rpc_server *srv,
            struct rsm **out)
{
    *out = NULL;
    if (check_config(cfg) != 0 || !sm || !sm->apply) {
        LOG_ERR("rsm: invalid configuration");
        return -EINVAL;
    }
    struct rsm *r = xcalloc(1, sizeof(*r));
    r->cfg = *cfg;
    r->cfg.data_dir = xstrdup(cfg->data_dir);
    r->cfg.cluster_token = NULL; /* not kept: only its hash */
    r->cluster_id = rsm_cluster_id(cfg);
    const char *old = getenv("SYNOD_META_TEST_OLD");
    r->version = old && !strcmp(old, "1") ? 0 : RSM_VERSION;
    r->sm = sm;
    r->sm_arg = sm_arg;
    r->heartbeat_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : 50;
    r->election_ms = cfg->election_ms ? cfg->election_ms : 300;
    r->lease_ms = cfg->lease_ms ? cfg->lease_ms : r->election_ms * 2 / 3;
    r->session_lease_ms = cfg->session_lease_ms ? cfg->session_lease_ms : 10000;
    r->snapshot_every = cfg->snapshot_every ? cfg->snapshot_every : 100000;
    r->max_batch_cmds = cfg->max_batch_cmds ? cfg->max_batch_cmds : 1024;
    r->max_batch_bytes = cfg->max_batch_bytes ? cfg->max_batch_bytes : (1u << 20);
    r->snapshot_chunk = cfg->snapshot_chunk ? cfg->snapshot_chunk : (1u << 20);
    r->install_batch = 4 * (size_t)r->snapshot_chunk;
    size_t np = 0;
    while (sm->prefixes && sm->prefixes[np])
        np++;
    r->prefixes = xcalloc(np + 2, sizeof(*r->prefixes));
    r->prefixes[0] = "r/";
    for (size_t i = 0; i < np; i++)
        r->prefixes[i + 1] = sm->prefixes[i];
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->run_mu, NULL);
    r->next_tick = now_us();
    r->next_commit = UINT64_MAX;
    r->logged_leader = PAXOS_NO_NODE;
    atomic_init(&r->wake_us, r->next_tick);
    clk_cond_init(&r->cv);
    pthread_mutex_init(&r->sess_mu, NULL);
    pthread_mutex_init(&r->snap_mu, NULL);
    for (uint32_t i = 0; i < cfg->n_nodes; i++) {
        r->peers[i].r = r;
        r->peers[i].id = i;
        r->peers[i].addr = xstrdup(cfg->peers[i]);
        atomic_init(&r->peers[i].inflight, 0);
    }
    atomic_store(&r->pub_leader, PAXOS_NO_NODE);

    int rc = rsm_store_open(r);
    if (rc)
        goto out_free;
    struct paxos_durable d;
    rc = rsm_store_install_recover(r); /* before the applied index is read: an install may be half done */
    if (rc)
        goto out_free;
    rc = rsm_store_recover(r, &d);
    if (rc)
        goto out_free;
    uint64_t snap_mark = rsm_store_get_u64(r, RSM_KEY_SNAP);
    if (snap_mark > d.applied) {
        /* Applies are unsynced; a power failure right after a LevelDB log switch can lose them while a later
         * synced batch (the snapshot marker, log truncation) survives. The log may then lack the entries to
         * redo them: drop the derived state and let a peer's snapshot replace it (the acceptor state in "p/"
         * is intact, which is what safety needs). */
        LOG_ERR(
            "applied index %llu is below the durable snapshot marker %llu (applies lost in a power failure):"
            " discarding the state machine's state; it will be reinstalled from a peer's snapshot",
            (unsigned long long)d.applied, (unsigned long long)snap_mark);
        rsm_store_durable_free(&d);
        rc = rsm_store_reset_content(r);
        if (rc || (rc = rsm_store_recover(r, &d)) != 0)
            goto out_free;
    }
    struct paxos_config pc;
    paxos_config_defaults(&pc);
    pc.self = cfg->self;
    pc.n_nodes = cfg->n_nodes;
    pc.voter_mask = cfg->voter_mask ? cfg->voter_mask : (uint32_t)((1ull << cfg->n_nodes) - 1);
    pc.seed = cfg->seed ? cfg->seed : (clk_mono_ns() ^ ((uint64_t)cfg->self << 32) ^ (uint64_t)clk_real_ns());
    pc.heartbeat_ms = r->heartbeat_ms;
    pc.election_ms = r->election_ms;
    pc.lease_ms = r->lease_ms;
    if (cfg->window)
        pc.window = cfg->window;
    if (cfg->log_retain)
        pc.log_retain = cfg->log_retain;
    if (pc.max_ahead < pc.window * 2u)
        pc.max_ahead = pc.window * 2u;
    uint64_t applied = d.applied;
    size_t n_ent = d.n_entries;
    rc = paxos_new(&pc, &d, now_us(), &r->px);
    rsm_store_durable_free(&d);
    if (rc) {
        LOG_ERR("rsm: invalid paxos configuration (heartbeat %u ms, election %u ms, lease %u ms)",
                pc.heartbeat_ms, pc.election_ms, pc.lease_ms);
        goto out_free;
    }
    /* The core treats the recovered applied index as a durable snapshot: serve that state. */
    r->last_snap = applied;
    rsm_snap_take(r, applied);
    sess_reload(r);
    for (uint32_t i = 0; i < cfg->n_nodes; i++)
        if (i != cfg->self)
            r->peers[i].ch = rpc_channel_get(r->peers[i].addr);
    if (srv)
        rsm_net_register(r, srv);
    publish(r, now_us());
    LOG_INFO("node %u of %u (cluster id %016llx): recovered applied %llu, %zu log entries, promised %llu.%u",
             cfg->self, cfg->n_nodes, (unsigned long long)r->cluster_id, (unsigned long long)applied, n_ent,
             (unsigned long long)PAXOS_BALLOT_ROUND(paxos_promised(r->px)),
             PAXOS_BALLOT_NODE(paxos_promised(r->px)));
    *out = r;
    return 0;

out_free:
    rsm_free(r);
    return rc;
}

int rsm_start(struct rsm *r)
{
    int rc = pthread_create(&r->thread, NULL, rsm_main, r);
    if (rc)
        return -rc;
    r->started = true;
    return 0;
}

void rsm_free(struct rsm *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->started)
        pthread_join(r->thread, NULL);
    /* Asynchronous calls hold pointers into r: wait for their completions (each has a deadline). */
    for (int i = 0; i < 12000; i++) {
        bool busy = atomic_load(&r->snap_inflight) > 0;
        for (uint32_t j = 0; j < r->cfg.n_nodes; j++)
            busy |= atomic_load(&r->peers[j].inflight) > 0;
        if (!busy)
            break;
        clk_sleep_ns(NS_PER_MS);
    }
    /* A turn started by a Deliver completion before `stopping` may still be finishing. */
    pthread_mutex_lock(&r->run_mu);
    pthread_mutex_unlock(&r->run_mu);
    struct rsm_input *in = r->in_head;
    r->in_head = r->in_tail = NULL;
    while (in) {
        struct rsm_input *next = in->next;
        input_free(in, -ECANCELED);
        in = next;
    }
    fail_waiting(r, -ECANCELED);
    fail_pending(r, -ECANCELED);
    free(r->pend);
    install_reset(r);
    paxos_free(r->px);
    if (r->snap)
        rsm_snap_put(r, r->snap);
    rsm_store_close(r);
    for (uint32_t i = 0; i < r->cfg.n_nodes; i++) {
        free(r->peers[i].addr);
        free(r->peers[i].out);
    }
    free(r->prefixes);
    free(r->sess);
    free(r->ebuf);
    for (size_t i = 0; i < r->cap_res; i++)
        free(r->res[i].reply.data);
    free(r->res);
    free((char *)r->cfg.data_dir);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->run_mu);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->sess_mu);
    pthread_mutex_destroy(&r->snap_mu);
    free(r);
}

int rsm_read(struct rsm *r, bool stale_ok, int (*fn)(void *arg, struct kv_txn *txn), void *arg)
{
    if (!stale_ok) {
        if (atomic_load(&r->pub_state) != PAXOS_LEADING) {
            uint32_t l = atomic_load(&r->pub_leader);
            return l != PAXOS_NO_NODE && l != r->cfg.self ? -EREMOTE : -EAGAIN;
        }
        if (!atomic_load(&r->pub_serving) || now_us() >= atomic_load(&r->read_until_us))
            return -EAGAIN;
    }
    struct kv_txn *txn = kv_txn_begin(r->db);
    int rc = fn(arg, txn);
    kv_txn_abort(txn);
    return rc;
}

const char *rsm_leader(const struct rsm *r)
{
    uint32_t l = atomic_load(&r->pub_leader);
    return l < r->cfg.n_nodes ? r->peers[l].addr : NULL;
}

uint32_t rsm_min_version(const struct rsm *r)
{
    uint32_t v = r->version;
    for (uint32_t i = 0; i < r->cfg.n_nodes; i++)
        if (i != r->cfg.self)
            v = MIN(v, atomic_load(&r->peers[i].version));
    return v;
}

bool rsm_is_leader(const struct rsm *r)
{
    return atomic_load(&r->pub_state) == PAXOS_LEADING;
}

void rsm_get_status(const struct rsm *r, struct rsm_status *st)
{
    st->self = r->cfg.self;
    st->state = paxos_state_name((enum paxos_state)atomic_load(&r->pub_state));
    st->serving = atomic_load(&r->pub_serving);
    st->leader = atomic_load(&r->pub_leader);
    st->ballot = atomic_load(&r->pub_ballot);
    st->commit = atomic_load(&r->pub_commit);
    st->applied = atomic_load(&r->pub_applied);
    st->log_start = atomic_load(&r->pub_log_start);
    st->zxid = atomic_load(&r->pub_zxid);
}

leveldb_t *rsm_db(const struct rsm *r)
{
    return r->db;
}

size_t rsm_session_ids(struct rsm *r, uint64_t *ids, size_t max)
{
    pthread_mutex_lock(&r->sess_mu);
    size_t n = r->n_sess;
    for (size_t i = 0; i < n && i < max; i++)
        ids[i] = r->sess[i].id;
    pthread_mutex_unlock(&r->sess_mu);
    return n;
}
