/* ns_cs.c - chunkserver management in the state machine: registration, heartbeat state and command
 * results, chunk report reconciliation, death, decommission, statfs; and the leader's read-only helpers
 * (dead chunkservers, expired write leases, re-replication planning, commands for a chunkserver).
 *
 * Everything that decides runs at apply time from the command's contents and the state, so it is
 * deterministic; time-driven decisions (a chunkserver silent too long, a write lease over) are taken by
 * the leader with its own clock, which then proposes a command (ChunkserverDead, LeaseExpire).
 *
 * Replica maintenance planned by the leader (read-only helpers below, each result proposed as a command):
 * re-replication of under-goal chunks, draining of DECOMMISSIONING chunkservers (copy elsewhere, then drop
 * the draining copy in the same apply as the copy's result), trimming of over-goal chunks (ReplicaDrop) and
 * rebalance moves (copy, then drop the source). Every plan skips chunks under a live write lease or with a
 * copy in flight, and never leaves fewer copies on UP chunkservers than the goal.
 *
 * Report reconciliation (pages: first .. last): a chunk at the table's version, or in the replica set,
 * is a good replica (added to the set if it was missing); an older version not in the set is stale and
 * queued for deletion; a chunk the table does not know is deleted once it was first seen longer than the
 * grace period ago; after the last page, chunks the table places on this chunkserver that no page
 * mentioned are dropped from their replica sets (missing replicas, re-replicated later).
 */
#include <stdlib.h>

#include "metaserver/ns_internal.h"

static uint32_t cmd_type(uint64_t cmd_id)
{
    return (uint32_t)(cmd_id >> 60);
}

static uint64_t cmd_chunk(uint64_t cmd_id)
{
    return cmd_id & ((1ull << 60) - 1);
}

static void pending_key(struct nkey *k, uint64_t chunk, uint32_t dst)
{
    nk_init(k, 'p');
    nk_u64(k, chunk);
    nk_u32(k, dst);
}

static void replica_add(struct ns_ctx *c, Synod__V1__ChunkRec *old, uint32_t cs)
{
    size_t n = protobuf_c_message_get_packed_size(&old->base);
    uint8_t *buf = xmalloc(n);
    protobuf_c_message_pack(&old->base, buf);
    Synod__V1__ChunkRec *nw =
        (Synod__V1__ChunkRec *)protobuf_c_message_unpack(&synod__v1__chunk_rec__descriptor, NULL, n, buf);
    free(buf);
    nw->replicas = xrealloc(nw->replicas, (nw->n_replicas + 1) * sizeof(uint32_t));
    nw->replicas[nw->n_replicas++] = cs;
    chunk_store(c, old, nw);
    chunk_free(nw);
}

static bool in_set(const Synod__V1__ChunkRec *r, uint32_t cs)
{
    for (size_t i = 0; i < r->n_replicas; i++)
        if (r->replicas[i] == cs)
            return true;
    return false;
}

int op_cs_register(struct ns_ctx *c, const Synod__V1__RegisterReq *r)
{
    if (!r->addr[0] || strlen(r->addr) > 255 || strlen(r->label) > 64 || strlen(r->uuid) > 64)
        return -EINVAL;
    Synod__V1__ChunkserverRec *cs = NULL;
    if (r->id)
        cs = cs_get(c, r->id);
    if (cs && r->uuid[0] && strcmp(cs->uuid, r->uuid)) {
        protobuf_c_message_free_unpacked(&cs->base, NULL);
        return -EEXIST; /* that id belongs to another data directory set */
    }
    if (!cs && r->uuid[0]) { /* known by its data directories? */
        struct nkey p;
        nk_init(&p, 's');
        struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
        for (; kv_iter_valid(it) && !cs; kv_iter_next(it)) {
            Synod__V1__ChunkserverRec *x =
                (Synod__V1__ChunkserverRec *)iter_msg(it, &synod__v1__chunkserver_rec__descriptor);
            if (!strcmp(x->uuid, r->uuid))
                cs = x;
            else
                protobuf_c_message_free_unpacked(&x->base, NULL);
        }
        kv_iter_free(it);
    }
    Synod__V1__ChunkserverRec fresh = SYNOD__V1__CHUNKSERVER_REC__INIT;
    Synod__V1__ChunkserverRec *w = cs ? cs : &fresh;
    Synod__V1__NsCounters *ctr = ctr_get(c);
    if (!cs) {
        fresh.id = r->id ? r->id : ctr->next_cs;
        if (fresh.id >= ctr->next_cs)
            ctr->next_cs = fresh.id + 1;
        ctr_dirty(c);
        struct nkey hk;
        cs_held_key(&hk, fresh.id);
        if (ctr->counted && nk_get(c, &hk, NULL, NULL) != 0) /* it holds nothing yet */
            nk_put(c, &hk, (const uint8_t[8]){0}, 8);
    }
    char *oaddr = w->addr, *olabel = w->label, *ouuid = w->uuid;
    w->addr = r->addr;
    w->label = r->label;
    w->uuid = r->uuid;
    w->total_bytes = r->total_bytes;
    w->used_bytes = r->used_bytes;
    w->last_heard_ns = c->now;
    w->state = w->decommission ? NS_CS_DECOMMISSIONING : NS_CS_UP; /* a drain survives a restart */
    w->recent_allocs = 0;
    cs_put(c, w);
    struct nkey rk;
    cs_recent_key(&rk, w->id);
    nk_del(c, &rk);
    Synod__V1__RegisterRep rep = SYNOD__V1__REGISTER_REP__INIT;
    rep.id = w->id;
    rep.heartbeat_ms = ctr->heartbeat_ms;
    rep.fsid = ctr->fsid;
    reply_msg(c, &rep.base);
    if (cs) {
        cs->addr = oaddr;
        cs->label = olabel;
        cs->uuid = ouuid;
        protobuf_c_message_free_unpacked(&cs->base, NULL);
    }
    return 0;
}

/* A queued deletion failed on the chunkserver (an I/O error, say): retried later, after 10 s doubling up to
 * 10 min (q value: le32 version, le64 retry-at ns, le32 failures). */
static void delete_failed(struct ns_ctx *c, const struct nkey *k, int32_t err)
{
    char *v;
    size_t vl;
    if (nk_get(c, k, &v, &vl) != 0)
        return;
    uint32_t fails = vl >= 20 ? get_le32(v + 12) : 0;
    uint8_t nv[20];
    memcpy(nv, v, 4);
    free(v);
    fails = MIN(fails + 1, 7u);
    int64_t wait = MIN(10000000000ll << (fails - 1), 600000000000ll); /* ns */
    put_le64(nv + 4, (uint64_t)(c->now + wait));
    put_le32(nv + 12, fails);
    put_le32(nv + 16, (uint32_t)(err < 0 ? -err : err));
    nk_put(c, k, nv, sizeof(nv));
}

int op_cs_heartbeat(struct ns_ctx *c, const Synod__V1__HeartbeatReq *r)
{
    Synod__V1__ChunkserverRec *cs = cs_get(c, r->id);
    if (!cs)
        return -ENOENT; /* register first */
    bool was_dead = cs->state == NS_CS_DEAD;
    cs->total_bytes = r->total_bytes;
    cs->used_bytes = r->used_bytes;
    cs->logical_bytes = r->logical_bytes;
    cs->chunks = r->chunks;
    cs->load = r->load;
    cs->last_heard_ns = c->now;
    cs->recent_allocs = 0;
    if (was_dead)
        cs->state = cs->decommission ? NS_CS_DECOMMISSIONING : NS_CS_UP;
    cs_put(c, cs);
    struct nkey rk;
    cs_recent_key(&rk, cs->id);
    nk_del(c, &rk);
    protobuf_c_message_free_unpacked(&cs->base, NULL);
    for (size_t i = 0; i < r->n_results; i++) {
        const Synod__V1__ChunkCmdResult *res = r->results[i];
        uint64_t chunk = cmd_chunk(res->cmd_id);
        struct nkey k;
        switch (cmd_type(res->cmd_id)) {
        case SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE:
            nk_init(&k, 'q');
            nk_u32(&k, r->id);
            nk_u64(&k, chunk);
            if (res->err == 0 || res->err == -ENOENT || res->err == ENOENT) {
                nk_del(c, &k);
            } else if (res->err == -ESTALE || res->err == ESTALE) {
                /* it stores another version than the one queued (removals bump the table's version
                 * silently): a copy outside the set with no copy to it in flight is garbage at any version;
                 * one back in the set is wanted after all. Without this the entry would be retried forever
                 * (and would block copies of the chunk to it, see op_repl_start). */
                Synod__V1__ChunkRec *rec = chunk_get_by_id(c, chunk);
                struct nkey pk;
                pending_key(&pk, chunk, r->id);
                bool wanted = (rec && in_set(rec, r->id)) || nk_get(c, &pk, NULL, NULL) == 0;
                chunk_free(rec);
                if (wanted)
                    nk_del(c, &k);
                else
                    delete_enqueue(c, r->id, chunk, 0);
            } else {
                delete_failed(c, &k, res->err);
            }
            break;
        case SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE: {
            pending_key(&k, chunk, r->id);
            Synod__V1__ReplPending *p =
                (Synod__V1__ReplPending *)nk_get_msg(c, &k, &synod__v1__repl_pending__descriptor);
            if (!p)
                break;
            nk_del(c, &k);
            Synod__V1__ChunkRec *rec = chunk_get_by_id(c, chunk);
            if (res->err == 0 && rec && rec->version == p->version && !in_set(rec, r->id)) {
                replica_add(c, rec, r->id);
                /* a move (rebalance, drain): the copy is in the set at an unchanged version, so no write
                 * happened since it began; the set keeps its size, dropping the moved-from copy */
                if (p->drop_after && p->drop_after != r->id && in_set(rec, p->drop_after))
                    replica_drop(c, chunk, p->drop_after);
            } else if (res->err == 0 && (!rec || rec->version != p->version))
                delete_enqueue(c, r->id, chunk, p->version); /* copied something obsolete */
            chunk_free(rec);
            protobuf_c_message_free_unpacked(&p->base, NULL);
            break;
        }
        default:
            break;
        }
    }
    for (size_t i = 0; i < r->n_lost; i++)
        replica_remove(c, r->lost[i]->chunk_id, r->id, true);
    /* replicas that failed a chained write this chunkserver took part in (the writer may have died) */
    for (size_t i = 0; i < r->n_chain_failures; i++)
        bad_replica_apply(c, r->chain_failures[i]->chunk_id, r->chain_failures[i]->version,
                          r->chain_failures[i]->chunkserver);
    Synod__V1__HeartbeatRep rep = SYNOD__V1__HEARTBEAT_REP__INIT;
    rep.report_wanted = was_dead;
    reply_msg(c, &rep.base);
    return 0;
}

/* Whether a deletion of chunk's copy on cs is queued (a copy reported bad or dropped on purpose). */
static bool delete_queued(struct ns_ctx *c, uint32_t cs, uint64_t chunk)
{
    struct nkey k;
    nk_init(&k, 'q');
    nk_u32(&k, cs);
    nk_u64(&k, chunk);
    char *v;
    size_t vl;
    if (nk_get(c, &k, &v, &vl) != 0)
        return false;
    free(v);
    return true;
}

int op_cs_report(struct ns_ctx *c, const Synod__V1__ChunkReportReq *r)
{
    Synod__V1__ChunkserverRec *cs = cs_get(c, r->id);
    if (!cs)
        return -ENOENT;
    if (r->first) {
        cs->report_gen++;
        cs_put(c, cs);
    }
    uint64_t gen = cs->report_gen;
    protobuf_c_message_free_unpacked(&cs->base, NULL);
    Synod__V1__NsCounters *ctr = ctr_get(c);
    for (size_t i = 0; i < r->n_chunks; i++) {
        const Synod__V1__ChunkVersion *cv = r->chunks[i];
        Synod__V1__ChunkRec *rec = chunk_get_by_id(c, cv->chunk_id);
        struct nkey k;
        if (!rec) {
            /* n/u: when it was first reported unknown, and the report generation that last saw it */
            nk_init(&k, 'u');
            nk_u32(&k, r->id);
            nk_u64(&k, cv->chunk_id);
            char *v;
            size_t vl;
            int64_t first = c->now;
            if (nk_get(c, &k, &v, &vl) == 0) {
                first = vl >= 8 ? (int64_t)get_le64(v) : c->now;
                free(v);
            }
            if (c->now - first >= ctr->unknown_chunk_grace_ns) {
                delete_enqueue(c, r->id, cv->chunk_id, cv->version);
                nk_del(c, &k);
            } else {
                uint8_t t[16];
                put_le64(t, (uint64_t)first);
                put_le64(t + 8, gen);
                nk_put(c, &k, t, sizeof(t));
            }
            continue;
        }
        bool member = in_set(rec, r->id);
        if (!member && rec->n_replicas == 0 && !delete_queued(c, r->id, cv->chunk_id)) {
            /* the only copy known: keep it whatever its version (every member was dropped as dead or
             * missing, perhaps falsely under load; deleting it as stale would lose the data for good) */
            replica_add(c, rec, r->id);
            member = true;
        } else if (!member && cv->version < rec->version) {
            delete_enqueue(c, r->id, cv->chunk_id, cv->version); /* stale */
        } else if (!member && cv->version == rec->version) {
            replica_add(c, rec, r->id); /* a good copy we did not count (e.g. a lost copy result) */
        }
        if (member || cv->version == rec->version) {
            nk_init(&k, 'h');
            nk_u32(&k, r->id);
            nk_u64(&k, cv->chunk_id);
            uint8_t t[8];
            put_le64(t, gen);
            nk_put(c, &k, t, sizeof(t));
        }
        chunk_free(rec);
    }
    if (r->last) {
        /* replicas the table places here that no page of this report mentioned are gone */
        struct nkey p;
        nk_init(&p, 'h');
        nk_u32(&p, r->id);
        struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
        uint64_t *gone = NULL;
        size_t ngone = 0, cap = 0;
        for (; kv_iter_valid(it); kv_iter_next(it)) {
            size_t kl, vl;
            const char *k = kv_iter_key(it, &kl);
            const char *v = kv_iter_value(it, &vl);
            if (vl == 8 && get_le64(v) == gen)
                continue;
            if (ngone == cap) {
                cap = cap ? cap * 2 : 16;
                gone = xrealloc(gone, cap * sizeof(*gone));
            }
            gone[ngone++] = get_be64(k + 7);
        }
        kv_iter_free(it);
        for (size_t i = 0; i < ngone; i++)
            replica_remove(c, gone[i], r->id, false);
        free(gone);
        /* unknown chunks this report did not mention (gone, or known by now) are forgotten */
        nk_init(&p, 'u');
        nk_u32(&p, r->id);
        it = kv_iter_prefix(c->txn, p.b, p.len);
        for (; kv_iter_valid(it); kv_iter_next(it)) {
            size_t kl, vl;
            const char *k = kv_iter_key(it, &kl);
            const char *v = kv_iter_value(it, &vl);
            if (vl < 16 || get_le64(v + 8) != gen)
                kv_del(c->txn, k, kl); /* the iterator re-locates by key: safe while scanning */
        }
        kv_iter_free(it);
    }
    Synod__V1__Ack rep = SYNOD__V1__ACK__INIT;
    reply_msg(c, &rep.base);
    return 0;
}

/* Drop pending copies from or to a chunkserver. */
static void pending_drop_cs(struct ns_ctx *c, uint32_t cs)
{
    struct nkey p;
    nk_init(&p, 'p');
    struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        Synod__V1__ReplPending *rp =
            (Synod__V1__ReplPending *)iter_msg(it, &synod__v1__repl_pending__descriptor);
        if (get_be32(k + 11) == cs || rp->src == cs)
            kv_del(c->txn, k, kl);
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    }
    kv_iter_free(it);
}

int op_cs_dead(struct ns_ctx *c, const Synod__V1__ChunkserverDead *r)
{
    Synod__V1__ChunkserverRec *cs = cs_get(c, r->id);
    if (!cs)
        return -ENOENT;
    if (cs->state != NS_CS_DEAD && !r->only_holdings) {
        cs->state = NS_CS_DEAD;
        cs_put(c, cs);
        pending_drop_cs(c, r->id);
    }
    if (cs->state == NS_CS_DEAD || !r->only_holdings) {
        /* its copies leave the replica sets in bounded steps (one apply of a million would stall every
         * replica for seconds); until then its copies still count but are not handed out (loc_fill) */
        struct nkey p;
        nk_init(&p, 'h');
        nk_u32(&p, r->id);
        struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
        for (uint32_t n = 0; kv_iter_valid(it) && (!r->max_holdings || n < r->max_holdings);
             kv_iter_next(it), n++) {
            size_t kl;
            const char *k = kv_iter_key(it, &kl);
            replica_remove(c, get_be64(k + 7), r->id, false);
        }
        kv_iter_free(it);
    }
    protobuf_c_message_free_unpacked(&cs->base, NULL);
    reply_empty(c);
    return 0;
}

/* Cancelling a drain: copies in flight stay useful, but must no longer drop the chunkserver's copy. */
static void pending_keep_source(struct ns_ctx *c, uint32_t cs)
{
    struct nkey p;
    nk_init(&p, 'p');
    struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        Synod__V1__ReplPending *rp =
            (Synod__V1__ReplPending *)iter_msg(it, &synod__v1__repl_pending__descriptor);
        if (rp->drop_after == cs) {
            rp->drop_after = 0;
            size_t n = protobuf_c_message_get_packed_size(&rp->base);
            uint8_t *buf = xmalloc(n);
            protobuf_c_message_pack(&rp->base, buf);
            kv_put(c->txn, k, kl, buf, n);
            free(buf);
        }
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    }
    kv_iter_free(it);
}

/* Decommission: the chunkserver stays readable but takes no new chunks (placement wants UP); the leader's
 * planner copies each chunk it holds elsewhere with drop_after = it, and trims its copy of chunks that
 * already meet their goal without it. Done when it holds nothing (chunks_left 0). Cancel: UP again. */
int op_decommission(struct ns_ctx *c, const Synod__V1__DecommissionReq *r)
{
    Synod__V1__ChunkserverRec *cs = cs_get(c, r->chunkserver);
    if (!cs)
        return -ENOENT;
    cs->decommission = !r->cancel;
    if (cs->state != NS_CS_DEAD)
        cs->state = r->cancel ? NS_CS_UP : NS_CS_DECOMMISSIONING;
    cs_put(c, cs);
    if (r->cancel)
        pending_keep_source(c, r->chunkserver);
    Synod__V1__DecommissionRep rep = SYNOD__V1__DECOMMISSION_REP__INIT;
    rep.chunks_left = ns_cs_held(c->txn, r->chunkserver); /* its counter (n/H), or a count of n/h */
    rep.state = cs->state == NS_CS_UP ? "UP" : cs->state == NS_CS_DEAD ? "DEAD" : "DECOMMISSIONING";
    reply_msg(c, &rep.base);
    protobuf_c_message_free_unpacked(&cs->base, NULL);
    return 0;
}

/* The planner's per-chunkserver copy limit (NsCounters.max_repl_per_cs): read (0) or set. Copies already
 * started are not stopped; the next plan counts them against the new limit. */
int op_repl_limit(struct ns_ctx *c, const Synod__V1__ReplLimitReq *r)
{
    if (r->limit > NS_MAX_REPL_LIMIT)
        return -EINVAL;
    Synod__V1__NsCounters *ctr = ctr_get(c);
    if (r->limit && r->limit != ctr->max_repl_per_cs) {
        ctr->max_repl_per_cs = r->limit;
        ctr_dirty(c);
    }
    Synod__V1__ReplLimitRep rep = SYNOD__V1__REPL_LIMIT_REP__INIT;
    rep.limit = ctr->max_repl_per_cs;
    reply_msg(c, &rep.base);
    return 0;
}

int op_repl_start(struct ns_ctx *c, const Synod__V1__ReplStart *r)
{
    Synod__V1__ChunkRec *rec = chunk_get_by_id(c, r->chunk_id);
    if (!rec)
        return -ENOENT;
    bool ok = rec->version == r->version && in_set(rec, r->src) && !in_set(rec, r->dst) &&
              (!r->drop_after || in_set(rec, r->drop_after));
    bool leased = rec->lease_session && rec->lease_expire_ns > c->now;
    chunk_free(rec);
    if (!ok)
        return -ESTALE;
    if (leased)
        return -EBUSY; /* being written: a copy would miss the writes after its start */
    Synod__V1__ChunkserverRec *dst = cs_get(c, r->dst);
    bool up = dst && dst->state == NS_CS_UP;
    if (dst)
        protobuf_c_message_free_unpacked(&dst->base, NULL);
    if (!up)
        return -EHOSTDOWN;
    struct nkey k;
    nk_init(&k, 'q');
    nk_u32(&k, r->dst);
    nk_u64(&k, r->chunk_id);
    if (nk_get(c, &k, NULL, NULL) == 0)
        return -EBUSY; /* its old copy is still to be deleted: the deletion could hit the new copy */
    pending_key(&k, r->chunk_id, r->dst);
    Synod__V1__ReplPending p = SYNOD__V1__REPL_PENDING__INIT;
    p.src = r->src;
    p.version = r->version;
    p.drop_after = r->drop_after;
    p.started_ns = c->now;
    nk_put_msg(c, &k, &p.base);
    reply_empty(c);
    return 0;
}

int op_statfs(struct ns_ctx *c)
{
    Synod__V1__StatfsRep rep = SYNOD__V1__STATFS_REP__INIT;
    struct nkey p;
    nk_init(&p, 's');
    struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        Synod__V1__ChunkserverRec *r =
            (Synod__V1__ChunkserverRec *)iter_msg(it, &synod__v1__chunkserver_rec__descriptor);
        if (r->state != NS_CS_DEAD) {
            rep.total_bytes += r->total_bytes;
            rep.used_bytes += MIN(r->used_bytes, r->total_bytes);
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    kv_iter_free(it);
    rep.free_bytes = rep.total_bytes - rep.used_bytes;
    rep.inodes = ctr_get(c)->inodes;
    rep.free_inodes = (1ull << 32) > rep.inodes ? (1ull << 32) - rep.inodes : 0;
    reply_msg(c, &rep.base);
    return 0;
}

/* --- leader helpers (read-only) ----------------------------------------------------------------------- */

static void ro_ctx(struct ns_ctx *c, struct kv_txn *txn)
{
    memset(c, 0, sizeof(*c));
    c->txn = txn;
}

size_t ns_find_dead_chunkservers(struct kv_txn *txn, int64_t now_ns, int64_t timeout_ns, uint32_t **ids)
{
    struct ns_ctx c;
    ro_ctx(&c, txn);
    struct nkey p;
    nk_init(&p, 's');
    size_t n = 0;
    *ids = NULL;
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        Synod__V1__ChunkserverRec *r =
            (Synod__V1__ChunkserverRec *)iter_msg(it, &synod__v1__chunkserver_rec__descriptor);
        if (r->state != NS_CS_DEAD && r->last_heard_ns + timeout_ns < now_ns) {
            *ids = xrealloc(*ids, (n + 1) * sizeof(**ids));
            (*ids)[n++] = r->id;
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    kv_iter_free(it);
    return n;
}

size_t ns_find_expired_leases(struct kv_txn *txn, int64_t now_ns, size_t max, uint64_t **ids)
{
    struct ns_ctx c;
    ro_ctx(&c, txn);
    struct nkey p;
    nk_init(&p, 'W');
    size_t n = 0;
    *ids = NULL;
    /* oldest expiry first; the first one still running ends the search */
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    for (; kv_iter_valid(it) && n < max; kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        if (kl != 3 + 16)
            continue;
        if ((int64_t)get_be64(k + 3) > now_ns)
            break;
        Synod__V1__ChunkRec *rec = chunk_get_by_id(&c, get_be64(k + 11));
        if (rec && rec->lease_session && rec->lease_expire_ns <= now_ns) {
            *ids = xrealloc(*ids, (n + 1) * sizeof(**ids));
            (*ids)[n++] = rec->chunk_id;
        }
        chunk_free(rec);
    }
    kv_iter_free(it);
    ctx_finish(&c, false);
    return n;
}

static struct cs_cand *cand_find(struct cs_cand *v, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].id == id)
            return &v[i];
    return NULL;
}

/* Chunkservers draining (DECOMMISSIONING): still sources of copies, never targets. */
static size_t drains_load(struct ns_ctx *c, struct cs_cand **out)
{
    struct nkey p;
    nk_init(&p, 's');
    size_t n = 0;
    struct cs_cand *v = NULL;
    struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        Synod__V1__ChunkserverRec *r =
            (Synod__V1__ChunkserverRec *)iter_msg(it, &synod__v1__chunkserver_rec__descriptor);
        if (r->state == NS_CS_DECOMMISSIONING) {
            v = xrealloc(v, (n + 1) * sizeof(*v));
            v[n++] = (struct cs_cand){.id = r->id, .label = xstrdup(r->label), .addr = xstrdup(r->addr)};
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    kv_iter_free(it);
    *out = v;
    return n;
}

/* Planner state shared by the scans of one planning round. */
struct plan {
    struct ns_ctx c;
    int64_t now;
    uint32_t limit;
    struct cs_cand *v, *dv; /* UP targets (and sources), draining sources */
    size_t nc, nd;
    uint64_t *busy_chunks; /* chunks with a live pending copy, sorted */
    size_t nbusy;
    uint64_t *marked; /* chunks planned in this round */
    size_t nmarked;
};

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void plan_init(struct plan *pl, struct kv_txn *txn, int64_t now_ns, int64_t stale_ns)
{
    memset(pl, 0, sizeof(*pl));
    ro_ctx(&pl->c, txn);
    pl->now = now_ns;
    pl->limit = ctr_get(&pl->c)->max_repl_per_cs;
    pl->nc = cands_load(&pl->c, &pl->v);
    pl->nd = drains_load(&pl->c, &pl->dv);
    /* in-flight copies per source / destination; chunks with a live pending copy are skipped */
    struct nkey p;
    nk_init(&p, 'p');
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        Synod__V1__ReplPending *rp =
            (Synod__V1__ReplPending *)iter_msg(it, &synod__v1__repl_pending__descriptor);
        if (rp->started_ns + stale_ns > now_ns) {
            struct cs_cand *d = cand_find(pl->v, pl->nc, get_be32(k + 11));
            struct cs_cand *sv = cand_find(pl->v, pl->nc, rp->src);
            if (!sv)
                sv = cand_find(pl->dv, pl->nd, rp->src);
            if (d)
                d->busy++;
            if (sv)
                sv->busy_src++;
            pl->busy_chunks = xrealloc(pl->busy_chunks, (pl->nbusy + 1) * sizeof(*pl->busy_chunks));
            pl->busy_chunks[pl->nbusy++] = get_be64(k + 3);
        }
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    }
    kv_iter_free(it);
    if (pl->nbusy)
        qsort(pl->busy_chunks, pl->nbusy, sizeof(*pl->busy_chunks), u64_cmp);
}

static void plan_destroy(struct plan *pl)
{
    free(pl->busy_chunks);
    free(pl->marked);
    cands_free(pl->v, pl->nc);
    cands_free(pl->dv, pl->nd);
    ctx_finish(&pl->c, false);
}

static bool plan_busy(const struct plan *pl, uint64_t chunk)
{
    if (pl->nbusy && bsearch(&chunk, pl->busy_chunks, pl->nbusy, sizeof(chunk), u64_cmp))
        return true;
    for (size_t i = 0; i < pl->nmarked; i++) /* at most one round's plan */
        if (pl->marked[i] == chunk)
            return true;
    return false;
}

static void plan_mark_busy(struct plan *pl, uint64_t chunk)
{
    pl->marked = xrealloc(pl->marked, (pl->nmarked + 1) * sizeof(*pl->marked));
    pl->marked[pl->nmarked++] = chunk;
}

/* Some UP chunkserver can still take a copy this round (the throttle). */
static bool plan_room(const struct plan *pl)
{
    for (size_t i = 0; i < pl->nc; i++)
        if (!pl->limit || pl->v[i].busy < pl->limit)
            return true;
    return false;
}

/* ---- bounded scans of an index, resumed across rounds (struct ns_plan_cursor) ---- */

typedef bool (*plan_fn)(struct plan *pl, const char *k, size_t kl, void *arg);

static void pos_set(struct ns_plan_pos *pos, const char *k, size_t kl)
{
    ASSERT(kl <= sizeof(pos->key));
    memcpy(pos->key, k, kl);
    pos->len = kl;
}

static int pos_cmp(const struct ns_plan_pos *a, const struct ns_plan_pos *b)
{
    int r = memcmp(a->key, b->key, MIN(a->len, b->len));
    return r ? r : (a->len > b->len) - (a->len < b->len);
}

/* Calls fn on at most `budget` entries of the index `prefix`: half of them from `front` on (the start of what
 * matters most; NULL: the prefix), the rest resuming after *pos, the previous round's stop, or after the
 * front part if that is further. *pos becomes the last entry looked at, or empty when the index ended. So
 * the most urgent entries are looked at every round, entries that cannot be planned now (being written, no
 * source or target free) cost a bounded time per round, and they never starve the entries behind them. fn
 * returns false to end the round. */
static void plan_scan(struct plan *pl, const struct nkey *prefix, const struct nkey *front,
                      struct ns_plan_pos *pos, size_t budget, plan_fn fn, void *arg)
{
    if (pos->len < prefix->len || memcmp(pos->key, prefix->b, prefix->len))
        pos->len = 0; /* another index's, or another chunkserver's holdings */
    const struct nkey *f = front ? front : prefix;
    struct ns_plan_pos last = {.len = 0};
    size_t seen = 0, kl;
    bool go = true;
    struct kv_iter *it = kv_iter_prefix_from(pl->c.txn, prefix->b, prefix->len, f->b, f->len);
    while (go && seen < budget / 2 && kv_iter_valid(it)) {
        const char *k = kv_iter_key(it, &kl);
        pos_set(&last, k, kl);
        go = fn(pl, k, kl, arg);
        seen++;
        kv_iter_next(it);
    }
    bool ended = go && !kv_iter_valid(it);
    kv_iter_free(it);
    if (ended) {
        pos->len = 0;
        return;
    }
    if (!go) {
        if (pos_cmp(&last, pos) > 0)
            *pos = last;
        return;
    }
    const struct ns_plan_pos *from = pos->len && pos_cmp(pos, &last) > 0 ? pos : &last;
    uint8_t start[sizeof(from->key) + 1]; /* the smallest key after `from` */
    memcpy(start, from->key, from->len);
    start[from->len] = 0;
    size_t slen = from->len + 1;
    it = kv_iter_prefix_from(pl->c.txn, prefix->b, prefix->len, start, slen);
    while (go && seen < budget && kv_iter_valid(it)) {
        const char *k = kv_iter_key(it, &kl);
        pos_set(pos, k, kl);
        go = fn(pl, k, kl, arg);
        seen++;
        kv_iter_next(it);
    }
    if (go && !kv_iter_valid(it))
        pos->len = 0; /* the end: the next round starts over */
    kv_iter_free(it);
}

static bool leased(const Synod__V1__ChunkRec *rec, int64_t now)
{
    return rec->lease_session && rec->lease_expire_ns > now;
}

/* A copy may start: no writer (a copy would miss the writes after its start) and some write completed (an
 * unwritten chunk's replicas hold nothing to copy: the source answers ENOENT, every round). */
static bool copyable(const Synod__V1__ChunkRec *rec, int64_t now)
{
    return !leased(rec, now) && !rec->unwritten;
}

/* Replicas of rec on UP chunkservers (the copies that count toward the goal). */
static size_t good_copies(struct ns_ctx *c, const Synod__V1__ChunkRec *rec, uint32_t except)
{
    size_t n = 0;
    for (size_t i = 0; i < rec->n_replicas; i++) {
        if (rec->replicas[i] == except)
            continue;
        Synod__V1__ChunkserverRec *cs = cs_get(c, rec->replicas[i]);
        if (cs && cs->state == NS_CS_UP)
            n++;
        if (cs)
            protobuf_c_message_free_unpacked(&cs->base, NULL);
    }
    return n;
}

/* Plan one copy of rec (source: an UP replica under the throttle, else the draining `drain`; target by
 * placement, never a chunkserver that still has this chunk's deletion queued). False if none fits. */
static bool plan_copy(struct plan *pl, const Synod__V1__ChunkRec *rec, uint32_t drain,
                      Synod__V1__ReplStart **out)
{
    struct cs_cand *src = NULL;
    for (size_t j = 0; j < rec->n_replicas && !src; j++) {
        struct cs_cand *sv = cand_find(pl->v, pl->nc, rec->replicas[j]);
        if (!sv)
            sv = cand_find(pl->dv, pl->nd, rec->replicas[j]);
        if (sv && (!pl->limit || sv->busy_src < pl->limit))
            src = sv;
    }
    if (!src)
        return false;
    uint32_t srcid = src->id;
    uint32_t excl[NS_MAX_GOAL * 4 + 64];
    size_t ne = 0;
    for (size_t j = 0; j < rec->n_replicas && ne < ARRAY_SIZE(excl); j++)
        excl[ne++] = rec->replicas[j];
    uint32_t dst;
    for (;;) { /* the best target, checked for a queued deletion (one get, not one per chunkserver) */
        if (placement_pick(pl->v, pl->nc, excl, ne, 1, pl->limit, &dst) != 1)
            return false;
        struct nkey k;
        nk_init(&k, 'q');
        nk_u32(&k, dst);
        nk_u64(&k, rec->chunk_id);
        if (nk_get(&pl->c, &k, NULL, NULL) != 0)
            break;
        if (ne == ARRAY_SIZE(excl))
            return false;
        excl[ne++] = dst;
    }
    Synod__V1__ReplStart *rs = xmalloc(sizeof(*rs));
    synod__v1__repl_start__init(rs);
    rs->chunk_id = rec->chunk_id;
    rs->version = rec->version;
    rs->src = srcid;
    rs->dst = dst;
    rs->drop_after = drain;
    cand_find(pl->v, pl->nc, dst)->busy++; /* placement_pick reorders v: look up by id again */
    src = cand_find(pl->v, pl->nc, srcid);
    if (!src)
        src = cand_find(pl->dv, pl->nd, srcid);
    src->busy_src++;
    plan_mark_busy(pl, rec->chunk_id);
    *out = rs;
    return true;
}

struct plan_out {
    void **v; /* ReplStart or ReplicaDrop */
    size_t n, max;
    uint32_t drain;
};

static void out_push(struct plan_out *o, void *m)
{
    o->v = xrealloc(o->v, (o->n + 1) * sizeof(*o->v));
    o->v[o->n++] = m;
}

/* n/g entry: an under-goal chunk. */
static bool plan_under_goal(struct plan *pl, const char *k, size_t kl, void *arg)
{
    UNUSED(kl);
    struct plan_out *o = arg;
    uint64_t chunk = get_be64(k + 4);
    if ((uint8_t)k[3] == 0 || plan_busy(pl, chunk))
        return true; /* no copy left: nothing to copy from (reported as missing); or a copy in flight */
    Synod__V1__ChunkRec *rec = chunk_get_by_id(&pl->c, chunk);
    ASSERT(rec);
    Synod__V1__ReplStart *rs;
    if (copyable(rec, pl->now) && plan_copy(pl, rec, 0, &rs))
        out_push(o, rs);
    chunk_free(rec);
    return o->n < o->max && plan_room(pl);
}

/* n/h entry of a draining chunkserver: a chunk that meets its goal only by counting the draining copy. */
static bool plan_drain(struct plan *pl, const char *k, size_t kl, void *arg)
{
    UNUSED(kl);
    struct plan_out *o = arg;
    uint64_t chunk = get_be64(k + 7);
    if (plan_busy(pl, chunk))
        return true;
    Synod__V1__ChunkRec *rec = chunk_get_by_id(&pl->c, chunk);
    if (!rec)
        return true;
    Synod__V1__ReplStart *rs;
    if (rec->n_replicas >= rec->goal && copyable(rec, pl->now) && good_copies(&pl->c, rec, 0) < rec->goal &&
        plan_copy(pl, rec, o->drain, &rs))
        out_push(o, rs);
    chunk_free(rec);
    return o->n < o->max && plan_room(pl);
}

size_t ns_plan_replication(struct kv_txn *txn, int64_t now_ns, int64_t stale_ns, size_t max,
                           struct ns_plan_cursor *cur, Synod__V1__ReplStart ***out)
{
    struct plan pl;
    plan_init(&pl, txn, now_ns, stale_ns);
    size_t budget = cur->budget ? cur->budget : NS_PLAN_SCAN;
    struct plan_out o = {.max = max};
    struct nkey p, front;
    nk_init(&p, 'g');
    front = p;
    front.b[front.len++] = 1; /* fewest copies first, from one copy on */
    if (max && plan_room(&pl))
        plan_scan(&pl, &p, &front, &cur->g, budget, plan_under_goal, &o);
    /* Draining chunkservers: a chunk that meets its goal only by counting a draining copy is copied to an
     * UP chunkserver, dropping the draining copy when the copy lands (one step per draining copy). Chunks
     * below goal anyway were planned above; chunks over it are trimmed (ns_plan_trim). */
    for (size_t d = 0; d < pl.nd && o.n < max && plan_room(&pl); d++) {
        o.drain = pl.dv[d].id;
        nk_init(&p, 'h');
        nk_u32(&p, o.drain);
        plan_scan(&pl, &p, NULL, &cur->h, budget, plan_drain, &o);
    }
    plan_destroy(&pl);
    *out = (Synod__V1__ReplStart **)o.v;
    return o.n;
}

/* Which copy of an over-goal chunk goes: a copy on a chunkserver that is not UP (draining) first, then
 * the fullest chunkserver by used fraction, then the highest id. Deterministic. 0 if none may go. */
static uint32_t trim_victim(struct plan *pl, const Synod__V1__ChunkRec *rec)
{
    uint32_t best = 0;
    int best_rank = -1;
    double best_use = -1;
    for (size_t i = 0; i < rec->n_replicas; i++) {
        uint32_t id = rec->replicas[i];
        const struct cs_cand *cv = cand_find(pl->v, pl->nc, id);
        int rank = cv ? 0 : 1;
        double use = cv ? (double)cv->used / (double)cv->total : 2.0;
        bool better =
            rank > best_rank || (rank == best_rank && (use > best_use || (use == best_use && id > best)));
        if (!better)
            continue;
        /* never below the goal in UP copies */
        if (good_copies(&pl->c, rec, id) < rec->goal)
            continue;
        best = id;
        best_rank = rank;
        best_use = use;
    }
    return best;
}

/* n/G entry: an over-goal chunk. */
static bool plan_over_goal(struct plan *pl, const char *k, size_t kl, void *arg)
{
    UNUSED(kl);
    struct plan_out *o = arg;
    uint64_t chunk = get_be64(k + 3);
    if (plan_busy(pl, chunk))
        return true; /* a copy in flight: its result decides; trim afterwards */
    Synod__V1__ChunkRec *rec = chunk_get_by_id(&pl->c, chunk);
    if (!rec)
        return true;
    uint32_t victim = leased(rec, pl->now) ? 0 : trim_victim(pl, rec);
    if (victim) {
        Synod__V1__ReplicaDrop *d = xmalloc(sizeof(*d));
        synod__v1__replica_drop__init(d);
        d->chunk_id = chunk;
        d->version = rec->version;
        d->cs = victim;
        out_push(o, d);
    }
    chunk_free(rec);
    return o->n < o->max;
}

size_t ns_plan_trim(struct kv_txn *txn, int64_t now_ns, int64_t stale_ns, size_t max,
                    struct ns_plan_cursor *cur, Synod__V1__ReplicaDrop ***out)
{
    struct plan pl;
    plan_init(&pl, txn, now_ns, stale_ns);
    struct plan_out o = {.max = max};
    struct nkey p;
    nk_init(&p, 'G');
    if (max)
        plan_scan(&pl, &p, NULL, &cur->g, cur->budget ? cur->budget : NS_PLAN_SCAN, plan_over_goal, &o);
    plan_destroy(&pl);
    *out = (Synod__V1__ReplicaDrop **)o.v;
    return o.n;
}

/* The file bytes a chunk holds (its share of the inode's size): what moving it shifts, roughly. */
static uint64_t chunk_bytes(struct ns_ctx *c, const Synod__V1__ChunkRec *rec)
{
    struct nkey k;
    nk_init(&k, 'i');
    nk_u64(&k, rec->ino);
    Synod__V1__InodeRec *ir = (Synod__V1__InodeRec *)nk_get_msg(c, &k, &synod__v1__inode_rec__descriptor);
    if (!ir)
        return 0;
    uint64_t start = rec->index * NS_CHUNK_SIZE, size = ir->size;
    protobuf_c_message_free_unpacked(&ir->base, NULL);
    return size > start ? MIN(size - start, NS_CHUNK_SIZE) : 0;
}

static double use_of(const struct cs_cand *v)
{
    return (double)v->used / (double)v->total;
}

/* May a copy of rec move from `from` to `to` without losing label spread? */
static bool label_ok(const struct plan *pl, const Synod__V1__ChunkRec *rec, const struct cs_cand *from,
                     const struct cs_cand *to)
{
    if (!to->label[0] || !strcmp(to->label, from->label))
        return true;
    for (size_t i = 0; i < rec->n_replicas; i++) {
        const struct cs_cand *o = cand_find(pl->v, pl->nc, rec->replicas[i]);
        if (o && o != from && !strcmp(o->label, to->label))
            return false;
    }
    return true;
}

#define REBALANCE_SCAN_MAX 20000 /* holdings looked at per source chunkserver (one admin request) */

size_t ns_plan_rebalance(struct kv_txn *txn, int64_t now_ns, int64_t stale_ns, uint32_t threshold_pct,
                         size_t max_moves, struct ns_move **out, uint32_t *mean_pct)
{
    struct plan pl;
    plan_init(&pl, txn, now_ns, stale_ns);
    *out = NULL;
    *mean_pct = 0;
    size_t n = 0;
    uint64_t used = 0, total = 0;
    for (size_t i = 0; i < pl.nc; i++) {
        used += pl.v[i].used;
        total += pl.v[i].total;
    }
    if (pl.nc < 2 || total == 0) {
        plan_destroy(&pl);
        return 0;
    }
    double mean = (double)used / (double)total, line = mean + threshold_pct / 100.0;
    *mean_pct = (uint32_t)(mean * 100 + 0.5);
    /* sources in order: the fullest first (ids keep it deterministic on ties) */
    uint32_t *srcs = xmalloc(pl.nc * sizeof(*srcs));
    size_t ns = 0;
    for (size_t i = 0; i < pl.nc; i++)
        if (use_of(&pl.v[i]) > line)
            srcs[ns++] = pl.v[i].id;
    for (size_t i = 1; i < ns; i++) /* insertion sort: few chunkservers */
        for (size_t j = i; j > 0; j--) {
            const struct cs_cand *a = cand_find(pl.v, pl.nc, srcs[j - 1]),
                                 *b = cand_find(pl.v, pl.nc, srcs[j]);
            if (use_of(a) >= use_of(b))
                break;
            uint32_t t = srcs[j - 1];
            srcs[j - 1] = srcs[j];
            srcs[j] = t;
        }
    for (size_t si = 0; si < ns && n < max_moves; si++) {
        struct nkey p;
        nk_init(&p, 'h');
        nk_u32(&p, srcs[si]);
        struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
        size_t scanned = 0;
        for (; kv_iter_valid(it) && n < max_moves && scanned < REBALANCE_SCAN_MAX;
             kv_iter_next(it), scanned++) {
            struct cs_cand *from = cand_find(pl.v, pl.nc, srcs[si]);
            if (use_of(from) <= line || (pl.limit && from->busy_src >= pl.limit))
                break;
            size_t kl;
            const char *k = kv_iter_key(it, &kl);
            uint64_t chunk = get_be64(k + 7);
            if (plan_busy(&pl, chunk))
                continue;
            Synod__V1__ChunkRec *rec = chunk_get_by_id(&pl.c, chunk);
            if (!rec)
                continue;
            uint64_t bytes = 0;
            if (copyable(rec, now_ns) && rec->n_replicas >= rec->goal)
                bytes = chunk_bytes(&pl.c, rec);
            struct cs_cand *to = NULL;
            for (size_t i = 0; bytes && i < pl.nc; i++) {
                struct cs_cand *t = &pl.v[i];
                if (use_of(t) >= mean || (pl.limit && t->busy >= pl.limit) || in_set(rec, t->id) ||
                    !label_ok(&pl, rec, from, t))
                    continue;
                struct nkey q;
                nk_init(&q, 'q');
                nk_u32(&q, t->id);
                nk_u64(&q, chunk);
                if (nk_get(&pl.c, &q, NULL, NULL) == 0)
                    continue;
                if (!to || use_of(t) < use_of(to) || (use_of(t) == use_of(to) && t->id < to->id))
                    to = t;
            }
            if (to) {
                *out = xrealloc(*out, (n + 1) * sizeof(**out));
                (*out)[n++] = (struct ns_move){.chunk_id = chunk,
                                               .bytes = bytes,
                                               .version = rec->version,
                                               .from = from->id,
                                               .to = to->id};
                from->used -= MIN(from->used, bytes);
                from->busy_src++;
                to->used = MIN(to->used + bytes, to->total);
                to->busy++;
                plan_mark_busy(&pl, chunk);
            }
            chunk_free(rec);
        }
        kv_iter_free(it);
    }
    free(srcs);
    plan_destroy(&pl);
    return n;
}

size_t ns_cs_commands(struct kv_txn *txn, uint32_t cs, int64_t now_ns, size_t max, Synod__V1__ChunkCmd ***out)
{
    struct ns_ctx c;
    ro_ctx(&c, txn);
    *out = NULL;
    size_t n = 0;
    struct nkey p;
    nk_init(&p, 'q');
    nk_u32(&p, cs);
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    for (size_t seen = 0; kv_iter_valid(it) && n < max && seen < 32 * max; kv_iter_next(it), seen++) {
        size_t kl, vl;
        const char *k = kv_iter_key(it, &kl);
        const char *v = kv_iter_value(it, &vl);
        if (vl >= 16 && (int64_t)get_le64(v + 4) > now_ns)
            continue; /* failed there: not yet */
        Synod__V1__ChunkCmd *cmd = xmalloc(sizeof(*cmd));
        synod__v1__chunk_cmd__init(cmd);
        cmd->type = SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE;
        cmd->chunk_id = get_be64(k + 7);
        cmd->version = get_le32(v);
        cmd->cmd_id = NS_CMD_ID(cmd->type, cmd->chunk_id);
        *out = xrealloc(*out, (n + 1) * sizeof(**out));
        (*out)[n++] = cmd;
    }
    kv_iter_free(it);
    nk_init(&p, 'p');
    it = kv_iter_prefix(txn, p.b, p.len);
    for (; kv_iter_valid(it) && n < max; kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        if (get_be32(k + 11) != cs)
            continue;
        Synod__V1__ReplPending *rp =
            (Synod__V1__ReplPending *)iter_msg(it, &synod__v1__repl_pending__descriptor);
        Synod__V1__ChunkCmd *cmd = xmalloc(sizeof(*cmd));
        synod__v1__chunk_cmd__init(cmd);
        cmd->type = SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE;
        cmd->chunk_id = get_be64(k + 3);
        cmd->version = rp->version;
        cmd->cmd_id = NS_CMD_ID(cmd->type, cmd->chunk_id);
        Synod__V1__ChunkserverAddr *a = xmalloc(sizeof(*a));
        synod__v1__chunkserver_addr__init(a);
        a->id = rp->src;
        Synod__V1__ChunkserverRec *src = cs_get(&c, rp->src);
        a->addr = xstrdup(src ? src->addr : "");
        a->label = xstrdup(src ? src->label : "");
        a->uuid = xstrdup(src ? src->uuid : "");
        if (src)
            protobuf_c_message_free_unpacked(&src->base, NULL);
        cmd->source = a;
        *out = xrealloc(*out, (n + 1) * sizeof(**out));
        (*out)[n++] = cmd;
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    }
    kv_iter_free(it);
    return n;
}

/* --- status figures (read-only) ----------------------------------------------------------------------- */

static uint64_t count_prefix(struct kv_txn *txn, char tag, uint64_t *zero_copies)
{
    struct nkey p;
    nk_init(&p, tag);
    uint64_t n = 0;
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        n++;
        if (zero_copies) {
            size_t kl;
            const char *k = kv_iter_key(it, &kl);
            if (kl > 3 && k[3] == 0)
                (*zero_copies)++;
        }
    }
    kv_iter_free(it);
    return n;
}

uint64_t ns_fsid(struct kv_txn *txn)
{
    struct ns_ctx c;
    ro_ctx(&c, txn);
    uint64_t id = ctr_get(&c)->fsid;
    ctx_finish(&c, false);
    return id;
}

void ns_count(struct kv_txn *txn, struct ns_counts *out)
{
    memset(out, 0, sizeof(*out));
    struct ns_ctx c;
    ro_ctx(&c, txn);
    const Synod__V1__NsCounters *ctr = ctr_get(&c);
    out->inodes = ctr->inodes;
    struct nkey p;
    struct kv_iter *it;
    if (ctr->counted) { /* kept as the state changes: O(1) */
        out->dirs = ctr->dirs;
        out->files = ctr->files;
        out->chunks = ctr->chunks;
        out->under_goal = ctr->under_goal + ctr->missing;
        out->missing = ctr->missing;
        out->over_goal = ctr->over_goal;
    } else { /* a state from before the counters: scan (O(namespace)) */
        nk_init(&p, 'd');
        it = kv_iter_prefix(txn, p.b, p.len);
        for (; kv_iter_valid(it); kv_iter_next(it)) {
            size_t vl;
            const char *v = kv_iter_value(it, &vl);
            if (vl == 9 && ((uint32_t)(uint8_t)v[8] << 12) == S_IFDIR)
                out->dirs++;
            else
                out->files++;
        }
        kv_iter_free(it);
        out->chunks = count_prefix(txn, 'K', NULL);
        out->under_goal = count_prefix(txn, 'g', &out->missing);
        out->over_goal = count_prefix(txn, 'G', NULL);
    }
    ctx_finish(&c, false);
    out->dirs++; /* the root has no entry */
    /* chunks that meet their goal only by counting a draining copy are under goal too (they must be copied
     * before that copy may go); counted once, by their first draining replica */
    ro_ctx(&c, txn);
    struct cs_cand *dv;
    size_t nd = drains_load(&c, &dv);
    for (size_t d = 0; d < nd; d++) {
        nk_init(&p, 'h');
        nk_u32(&p, dv[d].id);
        it = kv_iter_prefix(txn, p.b, p.len);
        for (; kv_iter_valid(it); kv_iter_next(it)) {
            size_t kl;
            const char *k = kv_iter_key(it, &kl);
            Synod__V1__ChunkRec *rec = chunk_get_by_id(&c, get_be64(k + 7));
            if (!rec)
                continue;
            uint32_t first = 0;
            for (size_t i = 0; i < rec->n_replicas && !first; i++)
                if (cand_find(dv, nd, rec->replicas[i]))
                    first = rec->replicas[i];
            if (first == dv[d].id && rec->n_replicas >= rec->goal && good_copies(&c, rec, 0) < rec->goal)
                out->under_goal++;
            chunk_free(rec);
        }
        kv_iter_free(it);
    }
    cands_free(dv, nd);
    ctx_finish(&c, false);
}

uint64_t ns_cs_held(struct kv_txn *txn, uint32_t cs)
{
    struct nkey hk;
    cs_held_key(&hk, cs);
    char *v;
    size_t vl;
    if (kv_get(txn, hk.b, hk.len, &v, &vl) == 0) { /* counted */
        uint64_t n = vl == 8 ? get_le64(v) : 0;
        free(v);
        return n;
    }
    struct nkey p;
    nk_init(&p, 'h');
    nk_u32(&p, cs);
    uint64_t n = 0;
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it))
        n++;
    kv_iter_free(it);
    return n;
}

bool ns_cs_unknown_due(struct kv_txn *txn, uint32_t cs, int64_t now_ns)
{
    struct ns_ctx c;
    ro_ctx(&c, txn);
    int64_t grace = ctr_get(&c)->unknown_chunk_grace_ns;
    ctx_finish(&c, false);
    struct nkey p;
    nk_init(&p, 'u');
    nk_u32(&p, cs);
    bool due = false;
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    for (int n = 0; kv_iter_valid(it) && n < 64 && !due; kv_iter_next(it), n++) {
        size_t vl;
        const char *v = kv_iter_value(it, &vl);
        due = vl < 8 || now_ns - (int64_t)get_le64(v) >= grace;
    }
    kv_iter_free(it);
    return due;
}

bool ns_cs_holds_any(struct kv_txn *txn, uint32_t cs)
{
    struct nkey p;
    nk_init(&p, 'h');
    nk_u32(&p, cs);
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    bool any = kv_iter_valid(it);
    kv_iter_free(it);
    return any;
}

Synod__V1__ChunkserverRec *ns_chunkserver(struct kv_txn *txn, uint32_t id)
{
    struct ns_ctx c;
    ro_ctx(&c, txn);
    return cs_get(&c, id);
}

size_t ns_chunkservers(struct kv_txn *txn, Synod__V1__ChunkserverRec ***out)
{
    struct nkey p;
    nk_init(&p, 's');
    size_t n = 0;
    *out = NULL;
    struct kv_iter *it = kv_iter_prefix(txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        *out = xrealloc(*out, (n + 1) * sizeof(**out));
        (*out)[n++] = (Synod__V1__ChunkserverRec *)iter_msg(it, &synod__v1__chunkserver_rec__descriptor);
    }
    kv_iter_free(it);
    return n;
}
