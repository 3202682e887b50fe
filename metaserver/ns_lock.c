/* ns_lock.c - cluster-wide flock and POSIX (fcntl) byte-range locks in the state machine.
 *
 * All locks on an inode are one LockSet record (n/l ino): lock sets are small and every operation needs
 * the whole set for conflict checks anyway. An owner is (session, lock owner); flock and POSIX locks do not
 * conflict with each other (Linux). POSIX set/unlock splits and merges the owner's ranges like the kernel
 * (same-type ranges that overlap or touch coalesce; an unlock or a type change punches the range out).
 * A conflicting set answers -EAGAIN; blocking waits (wait=true) are the client's retry loop, since a state
 * machine command cannot park. n/L session ino indexes the inodes a session holds locks on, so session
 * expiry drops its locks without a scan of every inode.
 */
#include <stdlib.h>

#include "metaserver/ns_internal.h"

#define RANGE_MAX UINT64_MAX

struct lk {
    uint64_t session, owner, start, end;
    uint32_t kind, type, pid;
};

struct lkset {
    struct lk *v;
    size_t n, cap;
};

static void lk_push(struct lkset *s, struct lk l)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = l;
}

static void set_key(struct nkey *k, uint64_t ino)
{
    nk_init(k, 'l');
    nk_u64(k, ino);
}

static void idx_key(struct nkey *k, uint64_t session, uint64_t ino)
{
    nk_init(k, 'L');
    nk_u64(k, session);
    nk_u64(k, ino);
}

static void lkset_load(struct ns_ctx *c, uint64_t ino, struct lkset *s)
{
    memset(s, 0, sizeof(*s));
    struct nkey k;
    set_key(&k, ino);
    Synod__V1__LockSet *ls = (Synod__V1__LockSet *)nk_get_msg(c, &k, &synod__v1__lock_set__descriptor);
    if (!ls)
        return;
    for (size_t i = 0; i < ls->n_locks; i++) {
        const Synod__V1__LockRec *r = ls->locks[i];
        lk_push(s, (struct lk){.session = r->session, .owner = r->owner, .start = r->start, .end = r->end,
                               .kind = r->kind, .type = r->type, .pid = r->pid});
    }
    protobuf_c_message_free_unpacked(&ls->base, NULL);
}

static void lkset_store(struct ns_ctx *c, uint64_t ino, const struct lkset *s)
{
    struct nkey k;
    set_key(&k, ino);
    if (s->n == 0) {
        nk_del(c, &k);
        return;
    }
    Synod__V1__LockRec *recs = xcalloc(s->n, sizeof(*recs));
    Synod__V1__LockRec **ptrs = xcalloc(s->n, sizeof(*ptrs));
    for (size_t i = 0; i < s->n; i++) {
        synod__v1__lock_rec__init(&recs[i]);
        recs[i].session = s->v[i].session;
        recs[i].owner = s->v[i].owner;
        recs[i].kind = s->v[i].kind;
        recs[i].type = s->v[i].type;
        recs[i].start = s->v[i].start;
        recs[i].end = s->v[i].end;
        recs[i].pid = s->v[i].pid;
        ptrs[i] = &recs[i];
    }
    Synod__V1__LockSet ls = SYNOD__V1__LOCK_SET__INIT;
    ls.locks = ptrs;
    ls.n_locks = s->n;
    nk_put_msg(c, &k, &ls.base);
    free(recs);
    free(ptrs);
}

static bool same_owner(const struct lk *a, const struct lk *b)
{
    return a->session == b->session && a->owner == b->owner && a->kind == b->kind;
}

static bool conflicts(const struct lk *held, const struct lk *req)
{
    if (held->kind != req->kind || (held->session == req->session && held->owner == req->owner))
        return false;
    if (held->end < req->start || req->end < held->start)
        return false;
    return held->type == SYNOD__V1__LOCK_TYPE__LOCK_WRITE || req->type == SYNOD__V1__LOCK_TYPE__LOCK_WRITE;
}

static int lock_req(struct ns_ctx *c, const Synod__V1__LockReq *r, struct lk *out)
{
    if (r->kind > SYNOD__V1__LOCK_KIND__LOCK_FLOCK || r->type > SYNOD__V1__LOCK_TYPE__LOCK_WRITE)
        return -EINVAL;
    struct lk l = {.session = c->session, .owner = r->owner, .kind = r->kind, .type = r->type, .pid = r->pid,
                   .start = r->start, .end = r->end};
    if (r->kind == SYNOD__V1__LOCK_KIND__LOCK_FLOCK) {
        l.start = 0;
        l.end = RANGE_MAX;
    } else if (l.start > l.end) {
        return -EINVAL;
    }
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    *out = l;
    return 0;
}

static void reply_lock(struct ns_ctx *c, const struct lk *l, uint32_t type)
{
    Synod__V1__LockRep rep = SYNOD__V1__LOCK_REP__INIT;
    rep.type = type;
    if (l) {
        rep.start = l->start;
        rep.end = l->end;
        rep.pid = l->pid;
        rep.owner = l->owner;
    }
    reply_msg(c, &rep.base);
}

int op_get_lock(struct ns_ctx *c, const Synod__V1__LockReq *r)
{
    struct lk req;
    int rc = lock_req(c, r, &req);
    if (rc)
        return rc;
    if (req.type == SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK)
        return -EINVAL;
    struct lkset s;
    lkset_load(c, r->ino, &s);
    const struct lk *hit = NULL;
    for (size_t i = 0; i < s.n && !hit; i++)
        if (conflicts(&s.v[i], &req))
            hit = &s.v[i];
    if (hit)
        reply_lock(c, hit, hit->type);
    else
        reply_lock(c, NULL, SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK);
    free(s.v);
    return 0;
}

int op_set_lock(struct ns_ctx *c, const Synod__V1__LockReq *r)
{
    struct lk req;
    int rc = lock_req(c, r, &req);
    if (rc)
        return rc;
    struct lkset s;
    lkset_load(c, r->ino, &s);
    bool unlock = req.type == SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK;
    if (!unlock) {
        for (size_t i = 0; i < s.n; i++) {
            if (conflicts(&s.v[i], &req)) {
                free(s.v);
                return -EAGAIN;
            }
        }
    }
    struct lkset out = {0};
    struct lk nw = req;
    for (size_t i = 0; i < s.n; i++) {
        struct lk l = s.v[i];
        if (!same_owner(&l, &req)) {
            lk_push(&out, l);
            continue;
        }
        bool overlap = !(l.end < nw.start || nw.end < l.start);
        bool touch = (l.end != RANGE_MAX && l.end + 1 == nw.start) || (nw.end != RANGE_MAX && nw.end + 1 == l.start);
        if (!unlock && l.type == req.type && (overlap || touch)) {
            /* coalesce into the new range */
            nw.start = MIN(nw.start, l.start);
            nw.end = MAX(nw.end, l.end);
            continue;
        }
        if (!overlap) {
            lk_push(&out, l);
            continue;
        }
        /* punch [req.start, req.end] out of l */
        if (l.start < req.start) {
            struct lk left = l;
            left.end = req.start - 1;
            lk_push(&out, left);
        }
        if (l.end > req.end) {
            struct lk right = l;
            right.start = req.end + 1;
            lk_push(&out, right);
        }
    }
    if (!unlock)
        lk_push(&out, nw);
    lkset_store(c, r->ino, &out);
    bool holds = false;
    for (size_t i = 0; i < out.n && !holds; i++)
        holds = out.v[i].session == c->session;
    struct nkey ik;
    idx_key(&ik, c->session, r->ino);
    if (holds)
        nk_put(c, &ik, "", 0);
    else
        nk_del(c, &ik);
    reply_lock(c, unlock ? &req : &nw, req.type);
    free(s.v);
    free(out.v);
    return 0;
}

void locks_release_session(struct ns_ctx *c, uint64_t session)
{
    struct nkey p;
    nk_init(&p, 'L');
    nk_u64(&p, session);
    struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        uint64_t ino = get_be64(k + 11);
        kv_del(c->txn, k, kl);
        struct lkset s, out = {0};
        lkset_load(c, ino, &s);
        for (size_t i = 0; i < s.n; i++)
            if (s.v[i].session != session)
                lk_push(&out, s.v[i]);
        lkset_store(c, ino, &out);
        free(s.v);
        free(out.v);
    }
    kv_iter_free(it);
}

void locks_drop_inode(struct ns_ctx *c, uint64_t ino)
{
    struct lkset s;
    lkset_load(c, ino, &s);
    if (!s.n)
        return;
    for (size_t i = 0; i < s.n; i++) {
        struct nkey ik;
        idx_key(&ik, s.v[i].session, ino);
        nk_del(c, &ik);
    }
    struct lkset empty = {0};
    lkset_store(c, ino, &empty);
    free(s.v);
}
