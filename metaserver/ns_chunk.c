/* ns_chunk.c - the chunk table of the state machine and the client-facing chunk operations: locations,
 * open-for-write (allocate + place, or bump the version) with one write lease per chunk, write completion,
 * bad-replica reports, truncation, and replica placement.
 *
 * A chunk record is keyed by (inode, index); chunk_store keeps its four indexes in step on every change:
 * n/K (id -> record), n/h (chunkserver -> chunks it holds), n/g (under-goal chunks by copy count) and n/G
 * (over-goal chunks), so chunkserver death, reports, re-replication and trimming never scan the whole table.
 *
 * Versions: the replica set is authoritative. A version bump (reopen for write, any replica leaving the
 * set) keeps the remaining replicas in the set; they adopt the new version on the next write (the
 * chunkserver accepts a write at a newer version). A replica at an older version that is NOT in the set is
 * stale and deleted. Every removal bumps, so a removed copy (a dead chunkserver that comes back, a lost
 * copy) never rejoins at the version the others went on writing. Re-replication never starts on a chunk
 * under a live write lease, and a lease granted after a copy started bumps the version, so a copy's result
 * is accepted only if no write can have happened since it began.
 *
 * Placement is deterministic: candidates in id order, sorted by free-space bucket (5 %), then load plus
 * chunks placed since the last heartbeat, then free bytes, then id; labels are spread first.
 */
#include <stdlib.h>

#include "metaserver/ns_internal.h"

static void chunk_key(struct nkey *k, uint64_t ino, uint64_t index)
{
    nk_init(k, 'k');
    nk_u64(k, ino);
    nk_u64(k, index);
}

void chunk_free(Synod__V1__ChunkRec *r)
{
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

Synod__V1__ChunkRec *chunk_get(struct ns_ctx *c, uint64_t ino, uint64_t index)
{
    struct nkey k;
    chunk_key(&k, ino, index);
    return (Synod__V1__ChunkRec *)nk_get_msg(c, &k, &synod__v1__chunk_rec__descriptor);
}

Synod__V1__ChunkRec *chunk_get_by_id(struct ns_ctx *c, uint64_t chunk_id)
{
    struct nkey k;
    nk_init(&k, 'K');
    nk_u64(&k, chunk_id);
    char *v;
    size_t vl;
    if (nk_get(c, &k, &v, &vl) < 0)
        return NULL;
    ASSERT(vl == 16);
    Synod__V1__ChunkRec *r = chunk_get(c, get_be64(v), get_be64(v + 8));
    free(v);
    ASSERT(r && r->chunk_id == chunk_id);
    return r;
}

Synod__V1__ChunkserverRec *cs_get(struct ns_ctx *c, uint32_t id)
{
    struct nkey k;
    nk_init(&k, 's');
    nk_u32(&k, id);
    return (Synod__V1__ChunkserverRec *)nk_get_msg(c, &k, &synod__v1__chunkserver_rec__descriptor);
}

void cs_recent_key(struct nkey *k, uint32_t cs)
{
    nk_init(k, 'a');
    nk_u32(k, cs);
}

uint32_t cs_recent(struct ns_ctx *c, uint32_t cs)
{
    struct nkey k;
    cs_recent_key(&k, cs);
    char *v;
    size_t vl;
    if (nk_get(c, &k, &v, &vl) != 0)
        return 0;
    uint32_t n = vl == 4 ? get_le32(v) : 0;
    free(v);
    return n;
}

void cs_put(struct ns_ctx *c, const Synod__V1__ChunkserverRec *r)
{
    struct nkey k;
    nk_init(&k, 's');
    nk_u32(&k, r->id);
    nk_put_msg(c, &k, &r->base);
}

static bool has_replica(const Synod__V1__ChunkRec *r, uint32_t cs)
{
    for (size_t i = 0; r && i < r->n_replicas; i++)
        if (r->replicas[i] == cs)
            return true;
    return false;
}

static void goal_key(struct nkey *k, size_t copies, uint64_t chunk)
{
    nk_init(k, 'g');
    nk_u8(k, (uint8_t)MIN(copies, 255u));
    nk_u64(k, chunk);
}

static void over_key(struct nkey *k, uint64_t chunk)
{
    nk_init(k, 'G');
    nk_u64(k, chunk);
}

/* n/W <expire_ns> <chunk>: write leases by expiry (what the leader's expiry search walks, oldest first) */
static void lease_expiry_key(struct nkey *k, int64_t expire_ns, uint64_t chunk)
{
    nk_init(k, 'W');
    nk_u64(k, (uint64_t)MAX(expire_ns, 0));
    nk_u64(k, chunk);
}

static void held_key(struct nkey *k, uint32_t cs, uint64_t chunk)
{
    nk_init(k, 'h');
    nk_u32(k, cs);
    nk_u64(k, chunk);
}

void cs_held_key(struct nkey *k, uint32_t cs)
{
    nk_init(k, 'H');
    nk_u32(k, cs);
}

/* A chunkserver's counted copies change by delta (no-op when it has no counter: registered before). */
static void cs_held_add(struct ns_ctx *c, uint32_t cs, int delta)
{
    struct nkey k;
    cs_held_key(&k, cs);
    char *v;
    size_t vl;
    if (nk_get(c, &k, &v, &vl) != 0)
        return;
    uint8_t b[8];
    put_le64(b, vl == 8 ? get_le64(v) + (uint64_t)(int64_t)delta : 0);
    free(v);
    nk_put(c, &k, b, sizeof(b));
}

/* The status counters of the chunk table and its indexes (NsCounters.counted). */
static void chunk_count(struct ns_ctx *c, uint64_t *field, int delta)
{
    Synod__V1__NsCounters *ctr = ctr_get(c);
    if (!ctr->counted)
        return;
    *field += (uint64_t)(int64_t)delta;
    ctr_dirty(c);
}

void chunk_store(struct ns_ctx *c, const Synod__V1__ChunkRec *old, const Synod__V1__ChunkRec *nw)
{
    Synod__V1__NsCounters *ctr = ctr_get(c);
    struct nkey k;
    ASSERT(old || nw);
    const Synod__V1__ChunkRec *any = nw ? nw : old;
    if (nw) {
        chunk_key(&k, nw->ino, nw->index);
        nk_put_msg(c, &k, &nw->base);
        if (!old) {
            nk_init(&k, 'K');
            nk_u64(&k, nw->chunk_id);
            uint8_t v[16];
            put_be64(v, nw->ino);
            put_be64(v + 8, nw->index);
            nk_put(c, &k, v, sizeof(v));
            chunk_count(c, &ctr->chunks, 1);
        }
    } else {
        chunk_key(&k, old->ino, old->index);
        nk_del(c, &k);
        nk_init(&k, 'K');
        nk_u64(&k, old->chunk_id);
        nk_del(c, &k);
        chunk_count(c, &ctr->chunks, -1);
    }
    /* replica index */
    for (size_t i = 0; old && i < old->n_replicas; i++) {
        if (!has_replica(nw, old->replicas[i])) {
            held_key(&k, old->replicas[i], any->chunk_id);
            nk_del(c, &k);
            cs_held_add(c, old->replicas[i], -1);
        }
    }
    for (size_t i = 0; nw && i < nw->n_replicas; i++) {
        if (!has_replica(old, nw->replicas[i])) {
            Synod__V1__ChunkserverRec *cs = cs_get(c, nw->replicas[i]);
            uint8_t v[8];
            put_le64(v, cs ? cs->report_gen : 0);
            if (cs)
                protobuf_c_message_free_unpacked(&cs->base, NULL);
            held_key(&k, nw->replicas[i], nw->chunk_id);
            nk_put(c, &k, v, sizeof(v));
            cs_held_add(c, nw->replicas[i], 1);
        }
    }
    /* under-goal index */
    bool old_under = old && old->n_replicas < old->goal;
    bool new_under = nw && nw->n_replicas < nw->goal;
    if (old_under && (!new_under || old->n_replicas != nw->n_replicas)) {
        goal_key(&k, old->n_replicas, old->chunk_id);
        nk_del(c, &k);
        chunk_count(c, old->n_replicas ? &ctr->under_goal : &ctr->missing, -1);
    }
    if (new_under && (!old_under || old->n_replicas != nw->n_replicas)) {
        goal_key(&k, nw->n_replicas, nw->chunk_id);
        nk_put(c, &k, "", 0);
        chunk_count(c, nw->n_replicas ? &ctr->under_goal : &ctr->missing, 1);
    }
    /* lease expiry index */
    bool old_lease = old && old->lease_session, new_lease = nw && nw->lease_session;
    bool same_lease = old_lease && new_lease && old->lease_expire_ns == nw->lease_expire_ns;
    if (old_lease && !same_lease) {
        lease_expiry_key(&k, old->lease_expire_ns, old->chunk_id);
        nk_del(c, &k);
    }
    if (new_lease && !same_lease) {
        lease_expiry_key(&k, nw->lease_expire_ns, nw->chunk_id);
        nk_put(c, &k, "", 0);
    }
    /* over-goal index: what the leader trims after a goal decrease or a finished drain copy */
    bool old_over = old && old->n_replicas > old->goal;
    bool new_over = nw && nw->n_replicas > nw->goal;
    if (old_over != new_over) {
        over_key(&k, any->chunk_id);
        if (new_over)
            nk_put(c, &k, "", 0);
        else
            nk_del(c, &k);
        chunk_count(c, &ctr->over_goal, new_over ? 1 : -1);
    }
}

void delete_enqueue(struct ns_ctx *c, uint32_t cs, uint64_t chunk_id, uint32_t version)
{
    struct nkey k;
    nk_init(&k, 'q');
    nk_u32(&k, cs);
    nk_u64(&k, chunk_id);
    uint8_t v[4];
    put_le32(v, version);
    nk_put(c, &k, v, sizeof(v));
}

/* A heap copy of a record with a replica list we can edit (unpacked records own their arrays). */
static Synod__V1__ChunkRec *chunk_dup(const Synod__V1__ChunkRec *r)
{
    size_t n = protobuf_c_message_get_packed_size(&r->base);
    uint8_t *buf = xmalloc(n);
    protobuf_c_message_pack(&r->base, buf);
    Synod__V1__ChunkRec *d =
        (Synod__V1__ChunkRec *)protobuf_c_message_unpack(&synod__v1__chunk_rec__descriptor, NULL, n, buf);
    ASSERT(d);
    free(buf);
    return d;
}

/* Replace the replica list of a (heap, unpacked) record: the array is allocated with the default
 * allocator, so free() matches protobuf-c's. */
static void set_replicas(Synod__V1__ChunkRec *r, const uint32_t *ids, size_t n)
{
    free(r->replicas);
    r->replicas = xmalloc(MAX(n, 1) * sizeof(uint32_t));
    memcpy(r->replicas, ids, n * sizeof(uint32_t));
    r->n_replicas = n;
}

bool replica_remove(struct ns_ctx *c, uint64_t chunk_id, uint32_t cs, bool failed)
{
    Synod__V1__ChunkRec *old = chunk_get_by_id(c, chunk_id);
    if (!old)
        return false;
    if (!has_replica(old, cs)) {
        chunk_free(old);
        return false;
    }
    Synod__V1__ChunkRec *nw = chunk_dup(old);
    uint32_t keep[NS_MAX_GOAL * 4];
    size_t nk = 0;
    for (size_t i = 0; i < old->n_replicas && nk < ARRAY_SIZE(keep); i++)
        if (old->replicas[i] != cs)
            keep[nk++] = old->replicas[i];
    set_replicas(nw, keep, nk);
    /* A failed copy can never rejoin at the version the others go on writing. A copy that is only out of
     * reach (dead, missing from a report) keeps the version unless a write lease is live: without one no
     * write can happen before the next grant, which bumps; so it may rejoin if it comes back (a false death
     * under load must not cost data). */
    if (failed || (old->lease_session && old->lease_expire_ns > c->now))
        nw->version++;
    chunk_store(c, old, nw);
    chunk_free(old);
    chunk_free(nw);
    return true;
}

bool replica_drop(struct ns_ctx *c, uint64_t chunk_id, uint32_t cs)
{
    if (!replica_remove(c, chunk_id, cs, true))
        return false;
    /* Version 0 = whatever version it stores: removals bump the table's version without telling the
     * chunkservers, so the copy may sit at any older version. A copy to cs is never started while this
     * deletion is queued (op_repl_start), so it cannot hit a newer copy. */
    delete_enqueue(c, cs, chunk_id, 0);
    return true;
}

static void lease_key(struct nkey *k, uint64_t session, uint64_t chunk)
{
    nk_init(k, 'w');
    nk_u64(k, session);
    nk_u64(k, chunk);
}

/* Truncation to `size` inside chunk size / NS_CHUNK_SIZE: clamp that chunk's extent (and n's blocks). */
void chunk_clamp_extent(struct ns_ctx *c, struct inode *n, uint64_t size)
{
    uint64_t index = size / NS_CHUNK_SIZE, keep = size % NS_CHUNK_SIZE;
    Synod__V1__ChunkRec *old = chunk_get(c, n->ino, index);
    if (old && old->extent > keep) {
        Synod__V1__ChunkRec *nw = chunk_dup(old);
        n->blocks -= MIN(n->blocks, (old->extent + 511) / 512 - (keep + 511) / 512);
        nw->extent = keep;
        chunk_store(c, old, nw);
        chunk_free(nw);
    }
    chunk_free(old);
}

/* The session that placed an unwritten chunk (ChunkRec.placed_by; the lease holder in older records). */
static uint64_t chunk_placer(const Synod__V1__ChunkRec *r)
{
    return r->placed_by ? r->placed_by : r->lease_session;
}

/* Remove chunk r from the table: its replicas queued for deletion (at del_version; 0 = any), its lease and
 * pending copies gone. The caller accounts for the inode's blocks. */
static void chunk_drop(struct ns_ctx *c, Synod__V1__ChunkRec *r, uint32_t del_version)
{
    for (size_t i = 0; i < r->n_replicas; i++)
        delete_enqueue(c, r->replicas[i], r->chunk_id, del_version);
    struct nkey lk;
    if (r->lease_session) {
        lease_key(&lk, r->lease_session, r->chunk_id);
        nk_del(c, &lk);
    }
    if (r->unwritten && r->placed_by && r->placed_by != r->lease_session) { /* kept past its lease lapse */
        lease_key(&lk, r->placed_by, r->chunk_id);
        nk_del(c, &lk);
    }
    struct nkey pk;
    nk_init(&pk, 'p');
    nk_u64(&pk, r->chunk_id);
    struct kv_iter *pit = kv_iter_prefix(c->txn, pk.b, pk.len);
    for (; kv_iter_valid(pit); kv_iter_next(pit)) {
        size_t kl;
        const char *key = kv_iter_key(pit, &kl);
        kv_del(c->txn, key, kl);
    }
    kv_iter_free(pit);
    chunk_store(c, r, NULL);
}

/* Drop every chunk of n at index >= first: replicas queued for deletion, leases and pending copies gone. */
void chunks_drop_from(struct ns_ctx *c, struct inode *n, uint64_t first_index)
{
    struct nkey s, e;
    chunk_key(&s, n->ino, first_index);
    chunk_key(&e, n->ino + 1, 0);
    struct kv_iter *it = kv_iter_new(c->txn, s.b, s.len, e.b, e.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        Synod__V1__ChunkRec *r = (Synod__V1__ChunkRec *)iter_msg(it, &synod__v1__chunk_rec__descriptor);
        n->blocks -= MIN(n->blocks, (r->extent + 511) / 512);
        chunk_drop(c, r, r->version);
        chunk_free(r);
    }
    kv_iter_free(it);
    if (first_index == 0)
        n->has_chunks = false;
}

void chunks_set_goal(struct ns_ctx *c, struct inode *n)
{
    struct nkey s, e;
    chunk_key(&s, n->ino, 0);
    chunk_key(&e, n->ino + 1, 0);
    struct kv_iter *it = kv_iter_new(c->txn, s.b, s.len, e.b, e.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        Synod__V1__ChunkRec *old = (Synod__V1__ChunkRec *)iter_msg(it, &synod__v1__chunk_rec__descriptor);
        Synod__V1__ChunkRec *nw = chunk_dup(old);
        nw->goal = n->goal;
        chunk_store(c, old, nw);
        chunk_free(old);
        chunk_free(nw);
    }
    kv_iter_free(it);
}

/* --- placement ---------------------------------------------------------------------------------------- */

size_t cands_load(struct ns_ctx *c, struct cs_cand **out)
{
    struct nkey p;
    nk_init(&p, 's');
    size_t n = 0, cap = 0;
    struct cs_cand *v = NULL;
    struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        Synod__V1__ChunkserverRec *r =
            (Synod__V1__ChunkserverRec *)iter_msg(it, &synod__v1__chunkserver_rec__descriptor);
        if (r->state == NS_CS_UP && r->total_bytes > 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                v = xrealloc(v, cap * sizeof(*v));
            }
            v[n++] = (struct cs_cand){.id = r->id,
                                      .total = r->total_bytes,
                                      .used = MIN(r->used_bytes, r->total_bytes),
                                      .load = r->load,
                                      .recent = cs_recent(c, r->id),
                                      .label = xstrdup(r->label),
                                      .addr = xstrdup(r->addr)};
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    kv_iter_free(it);
    *out = v;
    return n;
}

void cands_free(struct cs_cand *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].label);
        free(v[i].addr);
    }
    free(v);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const struct cs_cand *a = pa, *b = pb;
    uint64_t fa = a->total - a->used, fb = b->total - b->used;
    uint64_t ba = fa * 20 / a->total, bb = fb * 20 / b->total;
    if (ba != bb)
        return ba > bb ? -1 : 1;
    uint64_t la = (uint64_t)a->load + a->recent, lb = (uint64_t)b->load + b->recent;
    if (la != lb)
        return la < lb ? -1 : 1;
    if (fa != fb)
        return fa > fb ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

size_t placement_pick(struct cs_cand *v, size_t n, const uint32_t *exclude, size_t nexcl, size_t want,
                      uint32_t max_busy, uint32_t *out)
{
    if (n > 1)                             /* (v may be NULL when no chunkserver is a candidate) */
        qsort(v, n, sizeof(*v), cand_cmp); /* total order (id last): deterministic */
    size_t got = 0;
    const char *labels[64];
    size_t nlabels = 0;
    /* labels already used by the replicas we keep */
    for (size_t j = 0; j < nexcl; j++)
        for (size_t i = 0; i < n; i++)
            if (v[i].id == exclude[j] && v[i].label[0] && nlabels < ARRAY_SIZE(labels))
                labels[nlabels++] = v[i].label;
    for (int pass = 0; pass < 2 && got < want; pass++) {
        for (size_t i = 0; i < n && got < want; i++) {
            bool skip = max_busy && v[i].busy >= max_busy;
            for (size_t j = 0; j < nexcl && !skip; j++)
                skip = v[i].id == exclude[j];
            for (size_t j = 0; j < got && !skip; j++)
                skip = out[j] == v[i].id;
            if (!skip && pass == 0 && v[i].label[0]) {
                for (size_t j = 0; j < nlabels && !skip; j++)
                    skip = !strcmp(labels[j], v[i].label);
            }
            if (skip)
                continue;
            out[got++] = v[i].id;
            if (v[i].label[0] && nlabels < ARRAY_SIZE(labels))
                labels[nlabels++] = v[i].label;
        }
    }
    return got;
}

/* --- client operations -------------------------------------------------------------------------------- */

/* Fill a ChunkLoc; the replica array is heap storage released by loc_release. Copies on a DEAD chunkserver
 * (still in the set while its death is applied in steps, op_cs_dead) are left out. */
static void loc_fill(struct ns_ctx *c, const Synod__V1__ChunkRec *r, Synod__V1__ChunkLoc *loc)
{
    synod__v1__chunk_loc__init(loc);
    loc->index = r->index;
    loc->chunk_id = r->chunk_id;
    loc->version = r->version;
    loc->unwritten = r->unwritten;
    loc->replicas = xcalloc(MAX(r->n_replicas, 1), sizeof(*loc->replicas));
    for (size_t i = 0; i < r->n_replicas; i++) {
        Synod__V1__ChunkserverRec *cs = cs_get(c, r->replicas[i]);
        if (cs && cs->state == NS_CS_DEAD) {
            protobuf_c_message_free_unpacked(&cs->base, NULL);
            continue;
        }
        Synod__V1__ChunkserverAddr *a = xmalloc(sizeof(*a));
        synod__v1__chunkserver_addr__init(a);
        a->id = r->replicas[i];
        a->addr = xstrdup(cs ? cs->addr : "");
        a->label = xstrdup(cs ? cs->label : "");
        a->uuid = xstrdup(cs ? cs->uuid : "");
        if (cs)
            protobuf_c_message_free_unpacked(&cs->base, NULL);
        loc->replicas[loc->n_replicas++] = a;
    }
}

static void loc_release(Synod__V1__ChunkLoc *loc)
{
    for (size_t i = 0; i < loc->n_replicas; i++) {
        free(loc->replicas[i]->addr);
        free(loc->replicas[i]->label);
        free(loc->replicas[i]->uuid);
        free(loc->replicas[i]);
    }
    free(loc->replicas);
}

size_t chunk_locs_get(struct ns_ctx *c, const struct inode *n, uint64_t first, uint32_t count,
                      Synod__V1__ChunkLoc **out_locs, Synod__V1__ChunkLoc ***out_ptrs)
{
    Synod__V1__ChunkLoc *locs = xcalloc(count ? count : 1, sizeof(*locs));
    Synod__V1__ChunkLoc **ptrs = xcalloc(count ? count : 1, sizeof(*ptrs));
    size_t nl = 0;
    if (n->has_chunks && first < UINT64_MAX - count) {
        struct nkey s, e;
        chunk_key(&s, n->ino, first);
        chunk_key(&e, n->ino, first + count);
        struct kv_iter *it = kv_iter_new(c->txn, s.b, s.len, e.b, e.len);
        for (; kv_iter_valid(it); kv_iter_next(it)) {
            size_t vl;
            const char *v = kv_iter_value(it, &vl);
            Synod__V1__ChunkRec *cr = (Synod__V1__ChunkRec *)protobuf_c_message_unpack(
                &synod__v1__chunk_rec__descriptor, NULL, vl, (const uint8_t *)v);
            ASSERT(cr && nl < count);
            loc_fill(c, cr, &locs[nl]);
            ptrs[nl] = &locs[nl];
            nl++;
            chunk_free(cr);
        }
        kv_iter_free(it);
    }
    *out_locs = locs;
    *out_ptrs = ptrs;
    return nl;
}

void chunk_locs_free(Synod__V1__ChunkLoc *locs, Synod__V1__ChunkLoc **ptrs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        loc_release(&locs[i]);
    free(locs);
    free(ptrs);
}

/* The inode of a chunk operation: EISDIR for a directory. */
static int chunk_inode(struct ns_ctx *c, uint64_t ino, struct inode **n)
{
    int rc = ino_get(c, ino, n);
    return rc ? rc : S_ISDIR((*n)->mode) ? -EISDIR : 0;
}

int op_chunk_locations(struct ns_ctx *c, const Synod__V1__ChunkLocReq *r)
{
    struct inode *n;
    int rc = chunk_inode(c, r->ino, &n);
    if (rc)
        return rc;
    uint32_t count = r->count ? MIN(r->count, 1024u) : 1;
    Synod__V1__ChunkLocRep rep = SYNOD__V1__CHUNK_LOC_REP__INIT;
    rep.size = n->size;
    Synod__V1__ChunkLoc *locs;
    rep.n_chunks = chunk_locs_get(c, n, r->first_index, count, &locs, &rep.chunks);
    reply_msg(c, &rep.base);
    chunk_locs_free(locs, rep.chunks, rep.n_chunks);
    return 0;
}

/* Count a placement on each chosen chunkserver (spreads placement between heartbeats; see cs_recent). */
static void note_placed(struct ns_ctx *c, const uint32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct nkey k;
        cs_recent_key(&k, ids[i]);
        uint8_t v[4];
        put_le32(v, cs_recent(c, ids[i]) + 1);
        nk_put(c, &k, v, sizeof(v));
    }
}

/* The order of a new chunk's replicas, rotated by its id. The first replica heads the chain: it takes the
 * client's bytes and compresses the blocks for the others. Placement ranks candidates the same way for
 * every chunk placed between two heartbeats, so without the rotation one chunkserver would head every
 * chain (all of a cluster's compression and client ingress on one node); with it, the heads spread evenly
 * over the chosen sets. Deterministic: the id comes from the state. */
static void rotate_ids(uint32_t *ids, size_t n, uint64_t by)
{
    if (n < 2 || by % n == 0)
        return;
    uint32_t tmp[NS_MAX_GOAL];
    for (size_t i = 0; i < n; i++)
        tmp[i] = ids[(i + by) % n];
    memcpy(ids, tmp, n * sizeof(*ids));
}

int op_chunk_open_write(struct ns_ctx *c, const Synod__V1__ChunkOpenWriteReq *r)
{
    struct inode *n;
    int rc = chunk_inode(c, r->ino, &n);
    if (rc)
        return rc;
    if (!S_ISREG(n->mode))
        return -EINVAL;
    if (r->index >= (uint64_t)INT64_MAX / NS_CHUNK_SIZE)
        return -EFBIG;
    Synod__V1__NsCounters *ctr = ctr_get(c);
    int64_t lease_ns = (int64_t)ctr->lease_ms * 1000000;
    Synod__V1__ChunkRec *old = chunk_get(c, n->ino, r->index);
    if (old && old->unwritten && chunk_placer(old) != c->session &&
        !(old->lease_session && old->lease_expire_ns > c->now)) {
        /* Placed by another session whose lease lapsed before it completed a write: its replicas hold
         * nothing, or what that writer left on some of them. This writer could not be told `fresh` on it (it
         * would create the chunk empty where that data is missing, and the replicas would differ), nor
         * without it (its writes would find the chunk on no replica). So it starts over on a new chunk; the
         * old one's replicas are deleted at any version, and its placer's lease and index key go with it. */
        chunk_drop(c, old, 0);
        chunk_free(old);
        old = NULL;
    }
    Synod__V1__ChunkRec *nw;
    struct nkey lk;
    bool fresh = !old;
    if (old) {
        bool held = old->lease_session && old->lease_expire_ns > c->now;
        if (held && old->lease_session != c->session) {
            chunk_free(old);
            return -EAGAIN; /* one writer per chunk */
        }
        nw = chunk_dup(old);
        if (!held || nw->n_replicas == 0)
            nw->version++;
        if (nw->n_replicas == 0) { /* every replica lost: start again on fresh chunkservers */
            struct cs_cand *v;
            size_t nc = cands_load(c, &v);
            uint32_t ids[NS_MAX_GOAL];
            size_t got = placement_pick(v, nc, NULL, 0, MIN(MAX(n->goal, 1u), (uint32_t)NS_MAX_GOAL), 0, ids);
            cands_free(v, nc);
            if (!got) {
                chunk_free(old);
                chunk_free(nw);
                return -ENOSPC;
            }
            rotate_ids(ids, got, nw->chunk_id + nw->version);
            set_replicas(nw, ids, got);
            note_placed(c, ids, got);
            nw->unwritten = true;
            nw->placed_by = c->session;
            fresh = true;
        }
        /* Placed for this session and never written since (ChunkRec.unwritten): no replica holds data, and
         * the session may not know it placed it (an answer lost with a leader change, the open sent again as
         * a new request), so its writes may still create it. Not for another session: a writer that died
         * between its writes and their completion may have left data on some replicas, which must not be
         * recreated empty on the others. */
        fresh |= old->unwritten && chunk_placer(old) == c->session;
        if (!held && old->lease_session && old->lease_session != c->session) {
            lease_key(&lk, old->lease_session, old->chunk_id);
            nk_del(c, &lk);
        }
    } else {
        struct cs_cand *v;
        size_t nc = cands_load(c, &v);
        uint32_t ids[NS_MAX_GOAL];
        size_t got = placement_pick(v, nc, NULL, 0, MIN(MAX(n->goal, 1u), (uint32_t)NS_MAX_GOAL), 0, ids);
        cands_free(v, nc);
        if (!got)
            return -ENOSPC;
        nw = xmalloc(sizeof(*nw));
        synod__v1__chunk_rec__init(nw);
        nw->chunk_id = ctr->next_chunk_id++;
        ctr_dirty(c);
        nw->version = 1;
        nw->ino = n->ino;
        nw->index = r->index;
        nw->goal = n->goal;
        nw->replicas = NULL;
        nw->unwritten = true;
        nw->placed_by = c->session;
        rotate_ids(ids, got, nw->chunk_id);
        set_replicas(nw, ids, got);
        note_placed(c, ids, got);
        n->has_chunks = true;
        ino_dirty(n);
    }
    nw->lease_session = c->session;
    nw->lease_expire_ns = c->now + lease_ns;
    lease_key(&lk, c->session, nw->chunk_id);
    nk_put(c, &lk, "", 0);
    chunk_store(c, old, nw);
    Synod__V1__ChunkLoc loc;
    loc_fill(c, nw, &loc);
    Synod__V1__ChunkOpenWriteRep rep = SYNOD__V1__CHUNK_OPEN_WRITE_REP__INIT;
    rep.chunk = &loc;
    rep.lease_ms = ctr->lease_ms;
    rep.fresh = fresh;
    reply_msg(c, &rep.base);
    loc_release(&loc);
    chunk_free(old);
    chunk_free(nw);
    return 0;
}

int op_chunk_write_done(struct ns_ctx *c, const Synod__V1__ChunkWriteDoneReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    if (!S_ISREG(n->mode))
        return -EINVAL;
    Synod__V1__ChunkRec *old = chunk_get(c, n->ino, r->index);
    /* An older version is fine while the lease is still this session's: the client writes only inside its
     * lease, and under a lease the set only shrinks (removals bump the version; copies never start), so
     * every replica still in the set took part in the writes made at the older version. */
    bool current =
        old && old->chunk_id == r->chunk_id &&
        (old->version == r->version || (r->version < old->version && old->lease_session == c->session));
    if (!current) {
        chunk_free(old);
        return -ESTALE;
    }
    Synod__V1__ChunkRec *nw = chunk_dup(old);
    bool changed = false;
    if (!r->release_only) {
        if (r->new_size > n->size)
            n->size = r->new_size;
        /* st_blocks: the sum of the chunks' extents (see ChunkRec.extent) */
        uint64_t start = r->index * NS_CHUNK_SIZE;
        uint64_t ext = r->new_size > start ? MIN(r->new_size - start, (uint64_t)NS_CHUNK_SIZE) : 0;
        if (ext > old->extent) {
            n->blocks += (ext + 511) / 512 - (old->extent + 511) / 512;
            nw->extent = ext;
            changed = true;
        }
        if (old->unwritten) { /* a write completed: the replicas hold data now */
            nw->unwritten = false;
            nw->placed_by = 0;
            changed = true;
        }
        n->mtime = n->ctime = c->now;
        ino_dirty(n);
    }
    if (r->release_lease && old->lease_session == c->session) {
        struct nkey lk;
        lease_key(&lk, nw->lease_session, nw->chunk_id);
        nk_del(c, &lk);
        nw->lease_session = 0;
        nw->lease_expire_ns = 0;
        changed = true;
    }
    if (changed)
        chunk_store(c, old, nw);
    chunk_free(nw);
    chunk_free(old);
    Synod__V1__Attr a;
    attr_fill(&a, n);
    Synod__V1__AttrRep rep = SYNOD__V1__ATTR_REP__INIT;
    rep.attr = &a;
    reply_msg(c, &rep.base);
    return 0;
}

bool bad_replica_apply(struct ns_ctx *c, uint64_t chunk_id, uint32_t version, uint32_t cs)
{
    Synod__V1__ChunkRec *old = chunk_get_by_id(c, chunk_id);
    if (!old)
        return false;
    bool act = old->version == version && has_replica(old, cs);
    chunk_free(old);
    if (act) { /* otherwise already handled (a retry or a concurrent report): nothing to do */
        replica_remove(c, chunk_id, cs, true);
        delete_enqueue(c, cs, chunk_id, version);
    }
    return act;
}

int op_bad_replica(struct ns_ctx *c, const Synod__V1__BadReplicaReq *r)
{
    Synod__V1__ChunkRec *rec = chunk_get_by_id(c, r->chunk_id);
    if (!rec)
        return -ENOENT;
    chunk_free(rec);
    bad_replica_apply(c, r->chunk_id, r->version, r->chunkserver);
    reply_empty(c);
    return 0;
}

static void lease_clear(struct ns_ctx *c, uint64_t chunk_id, uint64_t session)
{
    Synod__V1__ChunkRec *old = chunk_get_by_id(c, chunk_id);
    if (old && old->lease_session == session) {
        Synod__V1__ChunkRec *nw = chunk_dup(old);
        nw->lease_session = 0;
        nw->lease_expire_ns = 0;
        chunk_store(c, old, nw);
        chunk_free(nw);
    }
    chunk_free(old);
}

int op_lease_expire(struct ns_ctx *c, const Synod__V1__LeaseExpire *r)
{
    Synod__V1__ChunkRec *old = chunk_get_by_id(c, r->chunk_id);
    if (!old)
        return -ENOENT;
    bool expired = old->lease_session && old->lease_expire_ns <= c->now;
    uint64_t s = old->lease_session;
    /* the placer's index key stays with an unwritten chunk: its session's end still finds and drops it */
    bool keep_key = old->unwritten && chunk_placer(old) == s;
    chunk_free(old);
    if (!expired)
        return -EBUSY;
    struct nkey lk;
    lease_key(&lk, s, r->chunk_id);
    if (!keep_key)
        nk_del(c, &lk);
    lease_clear(c, r->chunk_id, s);
    reply_empty(c);
    return 0;
}

/* The session ended (closed, or expired: its client is gone) and its write leases with it. A chunk it
 * placed and never completed a write on (ChunkRec.unwritten, placed_by) is dropped, also when its lease had
 * lapsed (op_lease_expire keeps the 'w' key of such a chunk for this). Another session never holds a lease
 * on such a chunk (op_chunk_open_write replaces it with a new one), except in a state from before that: then
 * it is kept for that writer, whose completed write ends `unwritten`. No write on it was committed (the
 * file's size and the chunk's extent never moved), its replicas hold nothing, or what a dying writer left on
 * some of them, and nobody can finish it. Kept, it named replicas without the chunk: a read of that range
 * failed over every replica (ENOENT) instead of reading a hole, and re-replication retried copies from a
 * source that had none. Its replicas are queued for deletion at any version, for the partial data. */
void leases_release_session(struct ns_ctx *c, uint64_t session)
{
    struct nkey p;
    nk_init(&p, 'w');
    nk_u64(&p, session);
    struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        uint64_t chunk = get_be64(k + 11);
        kv_del(c->txn, k, kl);
        Synod__V1__ChunkRec *r = chunk_get_by_id(c, chunk);
        bool other_holder = r && r->lease_session && r->lease_session != session;
        if (r && r->unwritten && chunk_placer(r) == session && !other_holder)
            chunk_drop(c, r, 0);
        else
            lease_clear(c, chunk, session);
        chunk_free(r);
    }
    kv_iter_free(it);
}
