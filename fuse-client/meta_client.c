/* meta_client.c - the metaserver client of synod-mount: leader following, session, exactly-once ReqIds,
 * retries under one total timeout. The contract is in meta_client.h.
 *
 * The current target is (index into a growable address list, generation). An attempt remembers the
 * generation it used; on a transport failure it rotates to the next address only if nobody has moved the
 * target since, so twenty threads failing at once move it one step, not twenty. Seqs in flight are kept
 * in a small unsorted array (at most a few dozen: FUSE threads plus write-back); `acked` is its minimum.
 */
#include "fuse-client/meta_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "common/clock.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "meta.pb-c.h"

#define MC_MAX_ADDRS 32
#define MC_BACKOFF_MIN_MS 20
#define MC_BACKOFF_MAX_MS 500

struct mc {
    pthread_mutex_t mu;
    char *addrs[MC_MAX_ADDRS];
    size_t naddrs;
    size_t cur;
    uint64_t cur_gen;

    uint64_t session;
    uint32_t lease_ms;
    uint64_t next_seq;
    uint64_t *inflight; /* seqs in flight (unsorted) */
    size_t ninflight, capinflight;

    pthread_mutex_t reopen_mu; /* serialises session reopening */
    void (*lost_fn)(void *arg, uint64_t old_session);
    void *lost_arg;
    uint64_t (*opens_fn)(void *arg, uint64_t **inos, size_t *n);
    void *opens_arg;
    void (*change_fn)(void *arg, const char *method, const ProtobufCMessage *req);
    void *change_arg;

    struct mc_config cfg;
    char *client_name;
    _Atomic uint64_t fsid;           /* the file system id every call carries once known (fsid_pin) */
    _Atomic uint64_t foreign_log_ns; /* when a refusal by another cluster's server was last logged */

    pthread_t ka_thread;
    bool ka_running;
    bool stopping;
    pthread_cond_t ka_cond;
};

/* ---- target selection ---------------------------------------------------------------------------------- */

static void target_get(struct mc *mc, char *buf, size_t cap, uint64_t *gen)
{
    pthread_mutex_lock(&mc->mu);
    snprintf(buf, cap, "%s", mc->addrs[mc->cur]);
    *gen = mc->cur_gen;
    pthread_mutex_unlock(&mc->mu);
}

/* Move to the next address unless someone already moved since `gen`. */
static void target_rotate(struct mc *mc, uint64_t gen)
{
    pthread_mutex_lock(&mc->mu);
    if (mc->cur_gen == gen) {
        mc->cur = (mc->cur + 1) % mc->naddrs;
        mc->cur_gen++;
    }
    pthread_mutex_unlock(&mc->mu);
}

/* Follow a "leader=host:port" hint; returns false if the detail has none. */
static bool target_follow(struct mc *mc, const char *detail)
{
    const char *p = strstr(detail, "leader=");
    if (!p)
        return false;
    p += 7;
    size_t len = strcspn(p, " ,;\t\n");
    if (len == 0 || len >= 200)
        return false;
    char addr[200];
    memcpy(addr, p, len);
    addr[len] = 0;
    pthread_mutex_lock(&mc->mu);
    size_t i;
    for (i = 0; i < mc->naddrs; i++)
        if (strcmp(mc->addrs[i], addr) == 0)
            break;
    if (i == mc->naddrs) {
        if (mc->naddrs < MC_MAX_ADDRS) {
            mc->addrs[mc->naddrs++] = xstrdup(addr);
        } else {
            i = mc->cur; /* list full: replace the current (failing) one */
            free(mc->addrs[i]);
            mc->addrs[i] = xstrdup(addr);
        }
    }
    if (mc->cur != i) {
        mc->cur = i;
        mc->cur_gen++;
    }
    pthread_mutex_unlock(&mc->mu);
    return true;
}

/* ---- seqs ------------------------------------------------------------------------------------------- */

static uint64_t seq_begin(struct mc *mc, uint64_t *session, uint64_t *acked)
{
    pthread_mutex_lock(&mc->mu);
    uint64_t s = mc->next_seq++;
    if (mc->ninflight == mc->capinflight) {
        mc->capinflight = mc->capinflight ? mc->capinflight * 2 : 64;
        mc->inflight = xrealloc(mc->inflight, mc->capinflight * sizeof(*mc->inflight));
    }
    mc->inflight[mc->ninflight++] = s;
    uint64_t lo = s;
    for (size_t i = 0; i < mc->ninflight; i++)
        lo = MIN(lo, mc->inflight[i]);
    *acked = lo;
    *session = mc->session;
    pthread_mutex_unlock(&mc->mu);
    return s;
}

static void seq_end(struct mc *mc, uint64_t seq)
{
    pthread_mutex_lock(&mc->mu);
    for (size_t i = 0; i < mc->ninflight; i++) {
        if (mc->inflight[i] == seq) {
            mc->inflight[i] = mc->inflight[--mc->ninflight];
            break;
        }
    }
    pthread_mutex_unlock(&mc->mu);
}

/* The ReqId sub-message of a request, if its type has one: the field and where its pointer lives. */
static Synod__V1__ReqId **rid_slot(ProtobufCMessage *req)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(req->descriptor, "rid");
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE || f->descriptor != &synod__v1__req_id__descriptor)
        return NULL;
    return (Synod__V1__ReqId **)((char *)req + f->offset);
}

/* Fill rid, including an `acked` field if this version of the contract has one. */
static void rid_fill(Synod__V1__ReqId *rid, uint64_t session, uint64_t seq, uint64_t acked)
{
    rid->session = session;
    rid->seq = seq;
    static const ProtobufCFieldDescriptor *acked_f;
    static int looked;
    if (!__atomic_load_n(&looked, __ATOMIC_ACQUIRE)) {
        acked_f = protobuf_c_message_descriptor_get_field_by_name(&synod__v1__req_id__descriptor, "acked");
        __atomic_store_n(&looked, 1, __ATOMIC_RELEASE);
    }
    if (acked_f && acked_f->type == PROTOBUF_C_TYPE_UINT64)
        *(uint64_t *)((char *)rid + acked_f->offset) = acked;
}

/* ---- the call loop ---------------------------------------------------------------------------------- */

static int session_open(struct mc *mc, uint64_t *out_session, uint32_t *out_lease);
static int session_check(struct mc *mc, uint64_t session);

static int64_t remaining_ms(uint64_t deadline)
{
    uint64_t now = clk_mono_ns();
    return now >= deadline ? 0 : (int64_t)((deadline - now) / NS_PER_MS);
}

/* Did a failed attempt certainly not reach a leader's state machine? Then abandoning the operation on an
 * interrupt cannot leave it applied behind the application's back. A refused connection is recognised by
 * gRPC's own status text (the server never saw the request). */
static bool attempt_unapplied(int r, const char *detail)
{
    if (r == -EREMOTE || r == -EAGAIN || r == -ENOSYS)
        return true;
    if (r == -ENXIO && !strncmp(detail, RPC_DETAIL_FOREIGN, strlen(RPC_DETAIL_FOREIGN)))
        return true; /* refused before any handler ran */
    return r == -ENOTCONN && (strstr(detail, "ailed to connect") || strstr(detail, "onnection refused"));
}

/* Said at most every 10 s: the address is skipped like a dead one, and the operation goes on elsewhere. */
static void log_foreign(struct mc *mc, const char *target, const char *detail)
{
    uint64_t now = clk_mono_ns(), last = atomic_load(&mc->foreign_log_ns);
    if ((!last || now - last >= 10 * NS_PER_SEC) &&
        atomic_compare_exchange_strong(&mc->foreign_log_ns, &last, now))
        LOG_WARN(
            "metaserver %s belongs to another cluster (%s): skipped; this mount is of file system %016llx",
            target, detail, (unsigned long long)atomic_load(&mc->fsid));
}

/* Take the file system id a metaserver told us, the first time one is known. */
static void fsid_pin(struct mc *mc, uint64_t fsid)
{
    uint64_t none = 0;
    if (fsid && atomic_compare_exchange_strong(&mc->fsid, &none, fsid))
        LOG_INFO("file system id %016llx", (unsigned long long)fsid);
}

static int call_svc(struct mc *mc, const ProtobufCServiceDescriptor *svc, const char *method,
                    ProtobufCMessage *req, unsigned flags, bool use_session, struct rpc_cancel *cancel,
                    ProtobufCMessage **rep)
{
    *rep = NULL;
    uint64_t deadline = clk_mono_ns() + (uint64_t)mc->cfg.op_timeout_ms * NS_PER_MS;
    Synod__V1__ReqId **slot = use_session ? rid_slot(req) : NULL;
    Synod__V1__ReqId *saved = slot ? *slot : NULL;
    Synod__V1__ReqId rid = SYNOD__V1__REQ_ID__INIT;
    uint64_t seq = 0, session = 0;
    uint32_t backoff = MC_BACKOFF_MIN_MS;
    unsigned tries = 0;
    int r, last = -EIO;
    bool maybe_applied = false; /* some attempt may have reached a leader (see mc_call_cancellable) */
    for (;;) {
        if (rpc_cancel_triggered(cancel) && ((flags & MC_CANCEL_INFLIGHT) || !maybe_applied)) {
            LOG_DEBUG("%s interrupted after %u attempts", method, tries);
            r = -EINTR;
            goto out;
        }
        if (slot && !seq) {
            uint64_t acked;
            seq = seq_begin(mc, &session, &acked);
            rid_fill(&rid, session, seq, acked);
            *slot = &rid;
        }
        char target[256];
        uint64_t gen;
        target_get(mc, target, sizeof(target), &gen);
        int64_t left = remaining_ms(deadline);
        int64_t t = MAX(MIN((int64_t)mc->cfg.rpc_timeout_ms, left), 100);
        struct rpc_status st;
        struct rpc_channel *ch = rpc_channel_get(target);
        rpc_channel_set_fsid(ch, atomic_load(&mc->fsid));
        /* Only side-effect-free attempts are cancelled in flight; a mutation once sent gets its answer. */
        r = rpc_call_cancellable(ch, svc, method, req, NULL, t, (flags & MC_CANCEL_INFLIGHT) ? cancel : NULL,
                                 rep, &st);
        tries++;
        if (r == 0)
            goto out;
        if (r == -ECANCELED && (flags & MC_CANCEL_INFLIGHT) && rpc_cancel_triggered(cancel)) {
            r = -EINTR;
            goto out;
        }
        if (!attempt_unapplied(r, st.detail))
            maybe_applied = true;
        last = r;
        bool pause = false;
        switch (r) {
        case -EREMOTE:
            if (!target_follow(mc, st.detail)) {
                target_rotate(mc, gen);
                pause = tries % mc->naddrs == 0;
            }
            break;
        case -ENOTCONN:
        case -ETIMEDOUT:
        case -ECANCELED:
        case -EBADMSG:
        case -ENOSYS: /* a metaserver still starting up (service not registered yet) */
            LOG_DEBUG("%s: %s on %s, trying the next metaserver", err_name(r), method, target);
            target_rotate(mc, gen);
            pause = tries % mc->naddrs == 0;
            break;
        case -ENXIO: /* a server of another cluster on this address (rpc.h "File system id") */
            if (strncmp(st.detail, RPC_DETAIL_FOREIGN, strlen(RPC_DETAIL_FOREIGN)) != 0)
                goto out;
            log_foreign(mc, target, st.detail);
            target_rotate(mc, gen);
            pause = tries % mc->naddrs == 0;
            break;
        case -EAGAIN:
            /* the operation's answer, unless the server's runtime says it was not applied (RPC_DETAIL_RETRY):
             * then the same request again, like any other retry (a new request could be applied twice) */
            if ((flags & MC_EAGAIN_RESULT) && strcmp(st.detail, RPC_DETAIL_RETRY) != 0)
                goto out;
            pause = true;
            break;
        case -ESTALE:
            if (!slot || session_check(mc, session) != -ESTALE)
                goto out; /* the operation's own answer */
            seq_end(mc, seq);
            seq = 0; /* new session: a new seq under it */
            break;
        default:
            goto out;
        }
        if (remaining_ms(deadline) <= 0) {
            LOG_WARN("%s: %s gave up after %u ms and %u attempts (last target %s): returning EIO", err_name(last),
                     method, mc->cfg.op_timeout_ms, tries, target);
            r = (flags & MC_NO_TIMEOUT_EIO) ? last : -EIO;
            goto out;
        }
        if (pause) {
            uint64_t ns = (uint64_t)MIN((int64_t)backoff, MAX(remaining_ms(deadline), 1)) * NS_PER_MS;
            /* An interrupt cuts the pause short only when it may stop the operation (checked at the top). */
            rpc_cancel_sleep((flags & MC_CANCEL_INFLIGHT) || !maybe_applied ? cancel : NULL, ns);
            backoff = MIN(backoff * 2, MC_BACKOFF_MAX_MS);
        }
    }
out:
    if (slot) {
        if (seq)
            seq_end(mc, seq);
        *slot = saved;
        if (mc->change_fn) /* a request with a ReqId may have changed the namespace, failed or not */
            mc->change_fn(mc->change_arg, method, req);
    }
    return r;
}

int mc_call(struct mc *mc, const char *method, ProtobufCMessage *req, unsigned flags, ProtobufCMessage **rep)
{
    return call_svc(mc, &synod__v1__meta__descriptor, method, req, flags, true, NULL, rep);
}

int mc_call_cancellable(struct mc *mc, const char *method, ProtobufCMessage *req, unsigned flags,
                        struct rpc_cancel *cancel, ProtobufCMessage **rep)
{
    return call_svc(mc, &synod__v1__meta__descriptor, method, req, flags, true, cancel, rep);
}

int mc_admin_call(struct mc *mc, const char *method, ProtobufCMessage *req, ProtobufCMessage **rep)
{
    return call_svc(mc, &synod__v1__admin__descriptor, method, req, 0, true, NULL, rep);
}

/* ---- session ---------------------------------------------------------------------------------------- */

static int session_open(struct mc *mc, uint64_t *out_session, uint32_t *out_lease)
{
    Synod__V1__SessionOpenReq req = SYNOD__V1__SESSION_OPEN_REQ__INIT;
    req.client_name = mc->client_name;
    req.lease_ms = mc->cfg.lease_ms;
    ProtobufCMessage *m;
    int r = call_svc(mc, &synod__v1__meta__descriptor, "SessionOpen", &req.base, 0, false, NULL, &m);
    if (r)
        return r;
    Synod__V1__SessionOpenRep *rep = (Synod__V1__SessionOpenRep *)m;
    fsid_pin(mc, rep->fsid);
    *out_session = rep->session;
    *out_lease = rep->lease_ms ? rep->lease_ms : 10000;
    rpc_message_free(m);
    return 0;
}

/* Reopen the session if it is still `old`. Returns 0 or the SessionOpen error. */
static int session_reopen(struct mc *mc, uint64_t old)
{
    pthread_mutex_lock(&mc->reopen_mu);
    pthread_mutex_lock(&mc->mu);
    bool still = mc->session == old;
    pthread_mutex_unlock(&mc->mu);
    int r = 0;
    if (still) {
        uint64_t s;
        uint32_t lease;
        r = session_open(mc, &s, &lease);
        if (r == 0) {
            pthread_mutex_lock(&mc->mu);
            mc->session = s;
            mc->lease_ms = lease;
            mc->next_seq = 1;
            pthread_mutex_unlock(&mc->mu);
            LOG_WARN("session %llu lost: opened session %llu (locks and write leases of the old one are gone)",
                     (unsigned long long)old, (unsigned long long)s);
            if (mc->lost_fn)
                mc->lost_fn(mc->lost_arg, old);
        } else {
            LOG_ERR("%s: cannot reopen the session", err_name(r));
        }
    }
    pthread_mutex_unlock(&mc->reopen_mu);
    return r;
}

/* Is `session` still known? -ESTALE (and reopened) if not, 0 if it is, another -errno if we cannot tell. */
static int session_check(struct mc *mc, uint64_t session)
{
    Synod__V1__SessionKeepaliveReq req = SYNOD__V1__SESSION_KEEPALIVE_REQ__INIT;
    req.session = session;
    ProtobufCMessage *m;
    int r = call_svc(mc, &synod__v1__meta__descriptor, "SessionKeepalive", &req.base, 0, false, NULL, &m);
    bool need = r == 0 && ((Synod__V1__SessionKeepaliveRep *)m)->need_opens;
    if (r == 0)
        fsid_pin(mc, ((Synod__V1__SessionKeepaliveRep *)m)->fsid);
    rpc_message_free(m);
    if (need && mc->opens_fn) {
        /* this leader does not know our open files yet (a new leader, a new session): send the whole set;
         * it purges no unlinked file before every session has */
        req.opens_report = true;
        req.open_seq = mc->opens_fn(mc->opens_arg, &req.open_inos, &req.n_open_inos);
        r = call_svc(mc, &synod__v1__meta__descriptor, "SessionKeepalive", &req.base, 0, false, NULL, &m);
        rpc_message_free(m);
        free(req.open_inos);
        if (r == 0)
            LOG_INFO("session %llu: told the leader about %zu open files", (unsigned long long)session,
                     req.n_open_inos);
    }
    if (r == -ESTALE) {
        if (session_reopen(mc, session) != 0)
            return -EIO;
        return -ESTALE;
    }
    return r;
}

static void *keepalive_main(void *arg)
{
    struct mc *mc = arg;
    pthread_mutex_lock(&mc->mu);
    while (!mc->stopping) {
        uint64_t period_ms = MAX(mc->lease_ms / 3, 200u);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec + period_ms * NS_PER_MS;
        ts.tv_sec = (time_t)(ns / NS_PER_SEC);
        ts.tv_nsec = (long)(ns % NS_PER_SEC);
        pthread_cond_timedwait(&mc->ka_cond, &mc->mu, &ts);
        if (mc->stopping)
            break;
        uint64_t s = mc->session;
        pthread_mutex_unlock(&mc->mu);
        int r = session_check(mc, s);
        if (r && r != -ESTALE)
            LOG_WARN("%s: session %llu keepalive failed", err_name(r), (unsigned long long)s);
        pthread_mutex_lock(&mc->mu);
    }
    pthread_mutex_unlock(&mc->mu);
    return NULL;
}

/* ---- lifecycle -------------------------------------------------------------------------------------- */

int mc_new(const struct mc_config *cfg, struct mc **out)
{
    struct mc *mc = xcalloc(1, sizeof(*mc));
    pthread_mutex_init(&mc->mu, NULL);
    pthread_mutex_init(&mc->reopen_mu, NULL);
    clk_cond_init(&mc->ka_cond);
    mc->cfg = *cfg;
    if (!mc->cfg.rpc_timeout_ms)
        mc->cfg.rpc_timeout_ms = 5000;
    if (!mc->cfg.op_timeout_ms)
        mc->cfg.op_timeout_ms = 30000;
    mc->client_name = xstrdup(cfg->client_name ? cfg->client_name : "synod-mount");
    mc->cfg.client_name = mc->client_name;
    mc->cfg.addrs = NULL;
    mc->next_seq = 1;
    atomic_store(&mc->fsid, cfg->fsid);
    const char *p = cfg->addrs ? cfg->addrs : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            if (mc->naddrs == MC_MAX_ADDRS || !memchr(a, ':', (size_t)(b - a))) {
                LOG_ERR("bad metaserver address list '%s' (want host:port[,host:port...], at most %d)",
                        cfg->addrs, MC_MAX_ADDRS);
                mc_free(mc);
                return -EINVAL;
            }
            mc->addrs[mc->naddrs++] = xstrndup(a, (size_t)(b - a));
        }
        p += len + (p[len] == ',');
    }
    if (!mc->naddrs) {
        LOG_ERR("no metaserver address given");
        mc_free(mc);
        return -EINVAL;
    }
    int r = session_open(mc, &mc->session, &mc->lease_ms);
    if (r) {
        LOG_ERR("%s: cannot open a session with the metaservers %s", err_name(r), cfg->addrs);
        mc_free(mc);
        return -EIO;
    }
    LOG_INFO("session %llu open (lease %u ms)", (unsigned long long)mc->session, mc->lease_ms);
    if (pthread_create(&mc->ka_thread, NULL, keepalive_main, mc) != 0)
        PANIC("pthread_create failed");
    mc->ka_running = true;
    *out = mc;
    return 0;
}

void mc_free(struct mc *mc)
{
    if (!mc)
        return;
    if (mc->ka_running) {
        pthread_mutex_lock(&mc->mu);
        mc->stopping = true;
        pthread_cond_broadcast(&mc->ka_cond);
        pthread_mutex_unlock(&mc->mu);
        pthread_join(mc->ka_thread, NULL);
    }
    if (mc->session) {
        Synod__V1__SessionCloseReq req = SYNOD__V1__SESSION_CLOSE_REQ__INIT;
        req.session = mc->session;
        ProtobufCMessage *m;
        mc->cfg.op_timeout_ms = MIN(mc->cfg.op_timeout_ms, 2000u);
        call_svc(mc, &synod__v1__meta__descriptor, "SessionClose", &req.base, 0, false, NULL, &m);
        rpc_message_free(m);
    }
    for (size_t i = 0; i < mc->naddrs; i++)
        free(mc->addrs[i]);
    free(mc->inflight);
    free(mc->client_name);
    pthread_cond_destroy(&mc->ka_cond);
    pthread_mutex_destroy(&mc->reopen_mu);
    pthread_mutex_destroy(&mc->mu);
    free(mc);
}

uint64_t mc_session(struct mc *mc)
{
    pthread_mutex_lock(&mc->mu);
    uint64_t s = mc->session;
    pthread_mutex_unlock(&mc->mu);
    return s;
}

void mc_set_session_lost(struct mc *mc, void (*fn)(void *arg, uint64_t old_session), void *arg)
{
    mc->lost_fn = fn;
    mc->lost_arg = arg;
}

void mc_set_change_hook(struct mc *mc, void (*fn)(void *arg, const char *method, const ProtobufCMessage *req),
                        void *arg)
{
    mc->change_fn = fn;
    mc->change_arg = arg;
}

void mc_set_opens_reporter(struct mc *mc, uint64_t (*fn)(void *arg, uint64_t **inos, size_t *n), void *arg)
{
    mc->opens_fn = fn;
    mc->opens_arg = arg;
}

uint32_t mc_op_timeout_ms(const struct mc *mc)
{
    return mc->cfg.op_timeout_ms;
}
