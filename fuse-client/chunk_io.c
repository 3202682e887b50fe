/* chunk_io.c - synod-mount's data path (contract in chunk_io.h).
 *
 * Locks of a cio_file: `op_mu` serialises the write side (open piece, complete pieces waiting to be sent,
 * chunk opening, flush) and is held across RPCs; `mu` protects the shared state (chunk table, in-flight
 * and failed write lists, sizes, read-ahead slots) and is only held briefly, because the RPC dispatcher
 * thread takes it in write completions. Order: op_mu before mu. Readers take only `mu`, so reads run in
 * parallel with each other and with writes. A write holds op_mu only to copy its bytes and hand complete
 * pieces on (it waits only when the waiting pieces are over their budget), so writers of one file queue
 * on op_mu for microseconds, not for chain round trips.
 *
 * Per chunk (struct cchunk): the location (chunk id, version, replicas; valid until loc_until) and, under
 * op_mu, the write lease (wopen, lease_until, the session generation it was taken in, fresh); under
 * mu, what completion owes (dirty: ChunkWriteDone needed, unsynced: Fsync needed, wend: end of the data
 * written in the file).
 */
#include "fuse-client/chunk_io.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.pb-c.h"
#include "common/clock.h"
#include "common/codec.h"
#include "common/crc32c.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "meta.pb-c.h"

#define MAX_REPL  9
#define ADDR_MAX  64
#define UUID_MAX  65 /* RegisterReq.uuid is at most 64 bytes */
#define NBUCKETS  64
#define LOC_BATCH CIO_LOC_BATCH

struct replica {
    uint32_t id;
    char addr[ADDR_MAX];
    char uuid[UUID_MAX]; /* ChunkserverAddr.uuid: every request to it names it (to_uuid); "" if unknown */
};

struct loc {
    uint64_t chunk_id; /* 0 = hole */
    uint32_t version;
    uint32_t nrep;
    bool unwritten; /* ChunkLoc.unwritten: found on no replica, it reads as zeros */
    struct replica rep[MAX_REPL];
};

struct cchunk {
    uint64_t index;
    struct cchunk *next;
    /* under mu */
    bool loc_valid;
    uint64_t loc_until;
    struct loc loc;
    bool dirty, unsynced;
    uint64_t wend;
    uint32_t nin;  /* asynchronous writes of this chunk in flight */
    uint64_t wseq; /* asynchronous writes of this chunk sent so far */
    /* under op_mu */
    bool wopen;
    uint64_t lease_until;
    uint64_t wgen;
    bool fresh; /* placed by our open and no write has succeeded yet: writes carry create */
    bool wrote; /* a write of ours to this chunk (this chunk id) succeeded: never fresh again */
};

/* A run of bytes in the file. */
struct wrun {
    uint64_t off;
    uint32_t len;
};

/* A buffered piece of one run that is complete but not yet sent (op_mu). */
struct pend {
    struct pend *next;
    uint64_t off;
    uint32_t len;
    uint8_t *data;
    bool pooled; /* data is a buf_get buffer (else a malloc of len bytes) */
};

/* A write sent to a chain head: one run, or a batch of runs in one chunk (ascending, no two in one block)
 * with their bytes concatenated in data. */
struct wreq {
    struct cio_file *f;
    atomic_int refs;
    uint64_t index;
    struct wrun *runs; /* &one, or an array of its own */
    struct wrun one;
    uint32_t nruns;
    uint32_t len; /* bytes in data */
    uint8_t *data;
    bool pooled; /* data is a buf_get buffer (else a malloc of len bytes) */
    uint64_t chunk_id;
    uint32_t version;
    uint32_t head;
    bool sync;    /* sent with WriteReq.sync (see send_pieces) */
    uint64_t seq; /* its chunk's wseq when it was sent */
    int err;
    char detail[256];
    struct wreq *next;
};

struct cio {
    struct mc *mc;
    struct cio_config cfg;
    atomic_uint_fast64_t sess_gen;
    atomic_uint rr; /* replica rotation for reads */
    pthread_key_t tls;
    /* Spare 1 MiB buffers (write pieces, read-ahead slots): reusing them saves an allocation, its page
     * faults and its unmapping per MiB moved (several percent of the client's CPU on both paths). */
    pthread_mutex_t pool_mu;
    uint8_t *pool[32];
    unsigned npool;
};

struct cio_file {
    struct cio *c;
    uint64_t ino;
    pthread_mutex_t op_mu;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cchunk *buckets[NBUCKETS];
    uint64_t meta_size; /* last size known from the metaserver */
    uint64_t local_end; /* end of local writes not yet completed (0 = none) */
    int err;            /* sticky write error */
    /* write buffer (op_mu) */
    uint8_t *wbuf; /* the open piece: contiguous writes extend it */
    uint64_t wb_off;
    size_t wb_len;
    struct pend *pend, **pend_tail; /* complete pieces waiting for room in flight, FIFO */
    unsigned npend;
    uint64_t pend_bytes;
    uint64_t last_done;
    bool flush_sync; /* a flush that syncs is sending: its last write of a chunk may carry the sync */
    /* under op_mu: the interrupt token of the flush running (NULL outside a flush, and in the write path:
     * a write whose bytes were taken is never interrupted). Replays of failed writes (drain, write_sync)
     * stop on it with -EINTR and leave the writes queued for the next flush. */
    struct rpc_cancel *flush_cancel;
    /* in flight and failed writes (mu) */
    struct wreq *inflight;
    unsigned ninflight;
    uint64_t ndone; /* writes completed (or failed) so far: a waiter for room sees one end */
    uint64_t inflight_bytes;
    struct wreq *failed, **failed_tail;
    /* read-ahead (mu): slots of RA_SLOT bytes fetched in the background, see "read-ahead" below */
    struct ra_slot *ra;
    unsigned nra;        /* slots in the list */
    unsigned ra_pending; /* fetches in flight, including orphaned slots' */
    uint64_t seq_next;   /* end of the last read: the next sequential read starts here */
    uint64_t ra_gen;     /* bumped when every slot is dropped (write, truncate, invalidation) */
    unsigned nwreq;      /* struct wreq alive (mu) */
};

/* Per-thread scratch: a codec and one block. */
struct tls {
    struct codec *codec;
    uint8_t block[CIO_BLOCK_SIZE];
};

static void tls_free(void *p)
{
    struct tls *t = p;
    codec_free(t->codec);
    free(t);
}

static struct tls *tls_get(struct cio *c)
{
    struct tls *t = pthread_getspecific(c->tls);
    if (!t) {
        t = xmalloc(sizeof(*t));
        t->codec = codec_new(CODEC_DEFAULT_LEVEL);
        pthread_setspecific(c->tls, t);
    }
    return t;
}

static uint64_t deadline_after(uint32_t ms)
{
    return clk_mono_ns() + (uint64_t)ms * NS_PER_MS;
}

static bool past(uint64_t deadline)
{
    return clk_mono_ns() >= deadline;
}

static void backoff_sleep(uint32_t *ms)
{
    clk_sleep_ns((uint64_t)*ms * NS_PER_MS);
    *ms = MIN(*ms * 2, 500u);
}

/* backoff_sleep cut short by `cancel` (may be NULL): -ECANCELED if it fired. */
static int backoff_sleep_c(uint32_t *ms, struct rpc_cancel *cancel)
{
    int r = rpc_cancel_sleep(cancel, (uint64_t)*ms * NS_PER_MS);
    *ms = MIN(*ms * 2, 500u);
    return r;
}

/* A CIO_MAX_IO buffer (write pieces, read-ahead slots) from the spare pool, or a new one. */
static uint8_t *buf_get(struct cio *c)
{
    pthread_mutex_lock(&c->pool_mu);
    uint8_t *b = c->npool ? c->pool[--c->npool] : NULL;
    pthread_mutex_unlock(&c->pool_mu);
    return b ? b : xmalloc(CIO_MAX_IO);
}

/* Give a buf_get buffer back (NULL: no-op). */
static void buf_put(struct cio *c, uint8_t *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool < ARRAY_SIZE(c->pool)) {
        c->pool[c->npool++] = b;
        b = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    free(b);
}

/* ---- layer ------------------------------------------------------------------------------------------ */

struct cio *cio_new(struct mc *mc, const struct cio_config *cfg)
{
    struct cio *c = xcalloc(1, sizeof(*c));
    c->mc = mc;
    c->cfg = *cfg;
    if (!c->cfg.io_timeout_ms)
        c->cfg.io_timeout_ms = 30000;
    if (!c->cfg.rpc_timeout_ms)
        c->cfg.rpc_timeout_ms = 10000;
    if (!c->cfg.loc_ttl_ms)
        c->cfg.loc_ttl_ms = 1000;
    if (!c->cfg.max_inflight)
        c->cfg.max_inflight = 4;
    if (!c->cfg.writedone_ms)
        c->cfg.writedone_ms = 1000;
    atomic_init(&c->sess_gen, 1);
    atomic_init(&c->rr, 0);
    if (pthread_key_create(&c->tls, tls_free) != 0)
        PANIC("pthread_key_create failed");
    pthread_mutex_init(&c->pool_mu, NULL);
    return c;
}

void cio_free(struct cio *c)
{
    if (!c)
        return;
    struct tls *t = pthread_getspecific(c->tls);
    if (t) {
        pthread_setspecific(c->tls, NULL);
        tls_free(t);
    }
    pthread_key_delete(c->tls);
    while (c->npool)
        free(c->pool[--c->npool]);
    pthread_mutex_destroy(&c->pool_mu);
    free(c);
}

void cio_session_lost(struct cio *c)
{
    atomic_fetch_add(&c->sess_gen, 1);
}

/* ---- per file --------------------------------------------------------------------------------------- */

struct cio_file *cio_file_new(struct cio *c, uint64_t ino, uint64_t size)
{
    struct cio_file *f = xcalloc(1, sizeof(*f));
    f->c = c;
    f->ino = ino;
    f->meta_size = size;
    pthread_mutex_init(&f->op_mu, NULL);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->failed_tail = &f->failed;
    f->pend_tail = &f->pend;
    f->last_done = clk_mono_ns();
    return f;
}

static void ra_drop_locked(struct cio_file *f, uint64_t below);

/* The last reference gives the buffer back; the file waits for nwreq == 0 before it is freed, so this is
 * the last touch of f (the payload release may come after the write's completion). */
static void wreq_put(struct wreq *w)
{
    if (atomic_fetch_sub(&w->refs, 1) == 1) {
        struct cio_file *f = w->f;
        if (w->pooled)
            buf_put(f->c, w->data);
        else
            free(w->data);
        if (w->runs != &w->one)
            free(w->runs);
        free(w);
        pthread_mutex_lock(&f->mu);
        f->nwreq--;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    }
}

void cio_file_free(struct cio_file *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    while (f->ninflight || f->ra_pending)
        pthread_cond_wait(&f->cv, &f->mu);
    ra_drop_locked(f, 0);
    pthread_mutex_unlock(&f->mu);
    if (f->wb_len || f->failed || f->pend)
        LOG_ERR("inode %llu: freed with unflushed writes (dropped)", (unsigned long long)f->ino);
    for (struct pend *p = f->pend, *n; p; p = n) {
        n = p->next;
        p->pooled ? buf_put(f->c, p->data) : free(p->data);
        free(p);
    }
    for (struct wreq *w = f->failed, *n; w; w = n) {
        n = w->next;
        wreq_put(w);
    }
    for (int i = 0; i < NBUCKETS; i++)
        for (struct cchunk *ch = f->buckets[i], *n; ch; ch = n) {
            n = ch->next;
            free(ch);
        }
    buf_put(f->c, f->wbuf);
    pthread_mutex_lock(&f->mu);
    while (f->nwreq)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    pthread_mutex_destroy(&f->op_mu);
    free(f);
}

uint64_t cio_file_size(struct cio_file *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t s = MAX(f->meta_size, f->local_end);
    pthread_mutex_unlock(&f->mu);
    return s;
}

void cio_file_set_size(struct cio_file *f, uint64_t size, bool exact)
{
    pthread_mutex_lock(&f->mu);
    f->meta_size = size;
    if (exact) {
        f->local_end = 0;
        ra_drop_locked(f, 0);
        /* A truncate: what the chunks were written to before it must not come back with their next
         * ChunkWriteDone (the file would grow back to its old size). */
        for (int i = 0; i < NBUCKETS; i++)
            for (struct cchunk *ch = f->buckets[i]; ch; ch = ch->next)
                ch->wend = MIN(ch->wend, size);
    }
    pthread_mutex_unlock(&f->mu);
}

void cio_file_invalidate(struct cio_file *f)
{
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < NBUCKETS; i++)
        for (struct cchunk *ch = f->buckets[i]; ch; ch = ch->next)
            ch->loc_valid = false;
    ra_drop_locked(f, 0);
    pthread_mutex_unlock(&f->mu);
}

bool cio_file_dirty(struct cio_file *f)
{
    pthread_mutex_lock(&f->mu);
    bool d = f->local_end != 0 || f->ninflight || f->failed;
    pthread_mutex_unlock(&f->mu);
    return d;
}

/* The chunk record for index (created empty); mu held. */
static struct cchunk *chunk_at(struct cio_file *f, uint64_t index)
{
    struct cchunk **b = &f->buckets[index % NBUCKETS];
    for (struct cchunk *ch = *b; ch; ch = ch->next)
        if (ch->index == index)
            return ch;
    struct cchunk *ch = xcalloc(1, sizeof(*ch));
    ch->index = index;
    ch->next = *b;
    *b = ch;
    return ch;
}

/* Copy a wire ChunkLoc into l; false if it is malformed. */
static bool loc_from_wire(const Synod__V1__ChunkLoc *w, struct loc *l)
{
    memset(l, 0, sizeof(*l));
    l->chunk_id = w->chunk_id;
    l->version = w->version;
    l->unwritten = w->unwritten;
    for (size_t i = 0; i < w->n_replicas && l->nrep < MAX_REPL; i++) {
        const Synod__V1__ChunkserverAddr *a = w->replicas[i];
        if (!a || !a->addr || !a->addr[0] || strlen(a->addr) >= ADDR_MAX)
            return false;
        l->rep[l->nrep].id = a->id;
        snprintf(l->rep[l->nrep].addr, ADDR_MAX, "%s", a->addr);
        snprintf(l->rep[l->nrep].uuid, UUID_MAX, "%s", a->uuid && strlen(a->uuid) < UUID_MAX ? a->uuid : "");
        l->nrep++;
    }
    return l->chunk_id == 0 || l->nrep > 0;
}

/* Cache the locations of chunks [first, first+count) from a metaserver answer (absent indexes are holes);
 * f->mu held. */
static void locs_install(struct cio_file *f, uint64_t first, uint32_t count,
                         Synod__V1__ChunkLoc *const *chunks, size_t n)
{
    uint64_t until = clk_mono_ns() + (uint64_t)f->c->cfg.loc_ttl_ms * NS_PER_MS;
    /* Absent indexes in the range are holes. */
    for (uint32_t i = 0; i < count; i++) {
        struct cchunk *ch = chunk_at(f, first + i);
        memset(&ch->loc, 0, sizeof(ch->loc));
        ch->loc_valid = true;
        ch->loc_until = until;
    }
    for (size_t i = 0; i < n; i++) {
        const Synod__V1__ChunkLoc *w = chunks[i];
        if (!w || w->index < first || w->index >= first + count)
            continue;
        struct cchunk *ch = chunk_at(f, w->index);
        if (!loc_from_wire(w, &ch->loc)) {
            if (w->chunk_id && w->n_replicas == 0)
                LOG_WARN(
                    "inode %llu chunk %llu (id %llu): no live replica known to the metaserver: unreadable "
                    "until a chunkserver holding it reports again",
                    (unsigned long long)f->ino, (unsigned long long)w->index,
                    (unsigned long long)w->chunk_id);
            else
                LOG_WARN("inode %llu chunk %llu: malformed location from the metaserver",
                         (unsigned long long)f->ino, (unsigned long long)w->index);
            ch->loc_valid = false;
        }
    }
}

void cio_file_seed_locations(struct cio_file *f, uint32_t located, Synod__V1__ChunkLoc *const *chunks,
                             size_t n)
{
    if (!located)
        return;
    pthread_mutex_lock(&f->mu);
    locs_install(f, 0, located, chunks, n);
    pthread_mutex_unlock(&f->mu);
}

/* Ask the metaserver where chunks [first, first+count) are and cache the answer. */
static int locs_fetch(struct cio_file *f, uint64_t first, uint32_t count, struct rpc_cancel *cancel)
{
    Synod__V1__ChunkLocReq req = SYNOD__V1__CHUNK_LOC_REQ__INIT;
    req.ino = f->ino;
    req.first_index = first;
    req.count = count;
    ProtobufCMessage *m;
    int r = mc_call_cancellable(f->c->mc, "ChunkLocations", &req.base, MC_CANCEL_INFLIGHT, cancel, &m);
    if (r)
        return r;
    Synod__V1__ChunkLocRep *rep = (Synod__V1__ChunkLocRep *)m;
    pthread_mutex_lock(&f->mu);
    locs_install(f, first, count, rep->chunks, rep->n_chunks);
    f->meta_size = rep->size;
    pthread_mutex_unlock(&f->mu);
    rpc_message_free(m);
    return 0;
}

static int loc_get(struct cio_file *f, uint64_t index, struct loc *out, struct rpc_cancel *cancel)
{
    for (int attempt = 0;; attempt++) {
        pthread_mutex_lock(&f->mu);
        struct cchunk *ch = chunk_at(f, index);
        bool ok = ch->loc_valid && (ch->loc_until > clk_mono_ns() || attempt > 0);
        if (ok)
            *out = ch->loc;
        pthread_mutex_unlock(&f->mu);
        if (ok)
            return 0;
        if (attempt > 0)
            return -EIO;
        int r = locs_fetch(f, index, LOC_BATCH, cancel);
        if (r)
            return r;
    }
}

static void loc_drop(struct cio_file *f, uint64_t index)
{
    pthread_mutex_lock(&f->mu);
    chunk_at(f, index)->loc_valid = false;
    pthread_mutex_unlock(&f->mu);
}

static void report_bad(struct cio_file *f, uint64_t chunk_id, uint32_t version, uint32_t cs, int err)
{
    Synod__V1__BadReplicaReq req = SYNOD__V1__BAD_REPLICA_REQ__INIT;
    req.chunk_id = chunk_id;
    req.version = version;
    req.chunkserver = cs;
    req.err = err < 0 ? -err : err;
    ProtobufCMessage *m;
    int r = mc_call(f->c->mc, "BadReplica", &req.base, 0, &m);
    rpc_message_free(m);
    LOG_WARN("chunk %llu v%u: reported replica on chunkserver %u bad (%s)%s%s", (unsigned long long)chunk_id,
             version, cs, err_name(err), r ? ", report failed: " : "", r ? err_name(r) : "");
}

/* ---- reads ------------------------------------------------------------------------------------------ */

/* Free a ReadRep. An empty bulk `data` points one past the receive buffer, which rpc_message_free (common/
 * rpc.c, rx_free's bounds check) mistakes for a heap pointer: detach it first. */
static void read_rep_free(ProtobufCMessage *m)
{
    Synod__V1__ReadRep *rep = (Synod__V1__ReadRep *)m;
    if (rep && rep->data.len == 0)
        rep->data.data = NULL;
    rpc_message_free(m);
}

struct rwait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
};

struct seg {
    struct rwait *wait;
    uint64_t index;
    uint64_t coff; /* offset inside the chunk */
    uint32_t len;
    uint8_t *dst;
    struct loc loc;
    uint32_t ri; /* replica index used */
    bool plain;  /* asked for plain bytes with their CRC (read_req) */
    int err;
    ProtobufCMessage *rep;
};

static void read_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    UNUSED(st);
    struct seg *s = arg;
    s->err = err;
    s->rep = reply;
    pthread_mutex_lock(&s->wait->mu);
    if (--s->wait->pending == 0)
        pthread_cond_signal(&s->wait->cv);
    pthread_mutex_unlock(&s->wait->mu);
}

/* The Read for a segment: the stored form of the blocks it touches, checked and decoded here, or for a
 * segment marked plain exactly its bytes with their CRC32C (the chunkserver verifies the blocks' stored
 * CRCs). */
static void read_req(const struct seg *s, uint32_t ri, Synod__V1__ReadReq *req)
{
    synod__v1__read_req__init(req);
    req->to_uuid = (char *)s->loc.rep[ri].uuid;
    req->chunk_id = s->loc.chunk_id;
    req->version = s->loc.version;
    if (s->plain) {
        req->offset = s->coff;
        req->length = s->len;
        req->plain_crc = true;
        return;
    }
    uint64_t b0 = s->coff / CIO_BLOCK_SIZE * CIO_BLOCK_SIZE;
    uint64_t b1 =
        MIN((s->coff + s->len + CIO_BLOCK_SIZE - 1) / CIO_BLOCK_SIZE * CIO_BLOCK_SIZE, CIO_CHUNK_SIZE);
    req->offset = b0;
    req->length = (uint32_t)(b1 - b0);
    req->stored_form = true;
}

/* Whether a direct read asks for plain bytes: when the blocks it touches are at least twice its length, a
 * stored-form read would move and check mostly bytes nobody wants (a 4 KiB random read fetched a whole
 * 64 KiB block: 16x the bytes through the chunkserver's socket, the RPC layer's receive copy and the CRC
 * here). Larger reads keep the stored form, which spares the chunkserver the decompression. */
static bool want_plain(uint64_t coff, uint32_t len)
{
    uint64_t b0 = coff / CIO_BLOCK_SIZE * CIO_BLOCK_SIZE;
    uint64_t b1 = (coff + len + CIO_BLOCK_SIZE - 1) / CIO_BLOCK_SIZE * CIO_BLOCK_SIZE;
    return b1 - b0 >= 2 * (uint64_t)len;
}

/* Check and copy a plain ReadRep into s->dst: -EBADMSG when its CRC does not match, -EPROTO when it has no
 * CRC (a chunkserver that predates plain_crc: the caller retries in stored form). */
static int seg_plain(struct seg *s, const Synod__V1__ReadRep *rep)
{
    if (!rep->has_data_crc)
        return -EPROTO;
    if (rep->data.len > s->len || rep->n_blocks || crc32c(0, rep->data.data, rep->data.len) != rep->data_crc)
        return -EBADMSG;
    if (rep->data.len) /* none at all past the chunk's end (data.data is NULL then) */
        memcpy(s->dst, rep->data.data, rep->data.len);
    memset(s->dst + rep->data.len, 0, s->len - rep->data.len); /* past the chunk's end */
    return 0;
}

/* Verify and decode a ReadRep into s->dst. -EBADMSG on any checksum or format problem. */
static int seg_decode(struct cio *c, struct seg *s, const Synod__V1__ReadRep *rep)
{
    if (s->plain)
        return seg_plain(s, rep);
    struct tls *t = tls_get(c);
    uint64_t lo = s->coff, hi = s->coff + s->len;
    /* Bytes no block covers (holes inside the chunk, past its end) read as zeros. Rather than clearing
     * everything first, clear each gap before the next block and the tail: `filled` is the highest end
     * written so far, so any gap is cleared whatever order the blocks come in. */
    uint64_t filled = lo;
    size_t pos = 0;
    for (size_t i = 0; i < rep->n_blocks; i++) {
        const Synod__V1__StoredBlock *b = rep->blocks[i];
        if (!b || b->index >= CIO_CHUNK_SIZE / CIO_BLOCK_SIZE || b->raw_len > CIO_BLOCK_SIZE ||
            b->stored_len > rep->data.len - pos || (b->flags != CODEC_RAW && b->flags != CODEC_ZSTD))
            return -EBADMSG;
        const uint8_t *src = rep->data.data + pos;
        pos += b->stored_len;
        if (crc32c(0, src, b->stored_len) != b->crc)
            return -EBADMSG;
        uint64_t bs = (uint64_t)b->index * CIO_BLOCK_SIZE, be = bs + b->raw_len;
        uint64_t from = MAX(bs, lo), to = MIN(be, hi);
        if (from >= to)
            continue;
        if (from > filled)
            memset(s->dst + (filled - lo), 0, (size_t)(from - filled));
        filled = MAX(filled, to);
        if (from == bs && to == be) { /* the whole block is wanted: decode in place */
            if (codec_decode(t->codec, (enum codec_flag)b->flags, src, b->stored_len, s->dst + (bs - lo),
                             b->raw_len))
                return -EBADMSG;
        } else {
            if (codec_decode(t->codec, (enum codec_flag)b->flags, src, b->stored_len, t->block, b->raw_len))
                return -EBADMSG;
            memcpy(s->dst + (from - lo), t->block + (from - bs), (size_t)(to - from));
        }
    }
    if (hi > filled)
        memset(s->dst + (filled - lo), 0, (size_t)(hi - filled));
    return 0;
}

/* Read one segment synchronously, trying every replica in turn and refreshing locations, until the io
 * timeout. `skip` is a replica index that already failed (UINT32_MAX for none). */
static int seg_read_sync(struct cio_file *f, struct seg *s, uint32_t skip, struct rpc_cancel *cancel)
{
    struct cio *c = f->c;
    uint64_t deadline = deadline_after(c->cfg.io_timeout_ms);
    uint32_t backoff = 20;
    int last = -EIO;
    s->plain = false; /* the failover path uses the stored form, which every chunkserver serves */
    for (int round = 0;; round++) {
        if (round > 0) {
            loc_drop(f, s->index);
            int r = loc_get(f, s->index, &s->loc, cancel);
            if (r)
                return r;
            if (s->loc.chunk_id == 0) {
                memset(s->dst, 0, s->len);
                return 0;
            }
        }
        uint32_t start = atomic_fetch_add(&c->rr, 1);
        uint32_t tried = 0, missing = 0; /* replicas asked this round, and those without the chunk */
        for (uint32_t k = 0; k < s->loc.nrep; k++) {
            uint32_t ri = (start + k) % s->loc.nrep;
            if (round == 0 && ri == skip && s->loc.nrep > 1)
                continue;
            tried++;
            Synod__V1__ReadReq req;
            read_req(s, ri, &req);
            ProtobufCMessage *m;
            struct rpc_status st;
            int r =
                rpc_call_cancellable(rpc_channel_get(s->loc.rep[ri].addr), &synod__v1__chunk_data__descriptor,
                                     "Read", &req.base, NULL, c->cfg.rpc_timeout_ms, cancel, &m, &st);
            if (rpc_cancel_triggered(cancel)) {
                read_rep_free(m);
                return -EINTR;
            }
            if (r == 0) {
                r = seg_decode(c, s, (Synod__V1__ReadRep *)m);
                read_rep_free(m);
                if (r == 0)
                    return 0;
            }
            last = r;
            missing += r == -ENOENT;
            LOG_WARN("%s: read of chunk %llu v%u from %s (chunkserver %u) failed%s%s", err_name(r),
                     (unsigned long long)s->loc.chunk_id, s->loc.version, s->loc.rep[ri].addr,
                     s->loc.rep[ri].id, st.detail[0] && r != -EBADMSG ? ": " : "",
                     r != -EBADMSG ? st.detail : "");
            if (r == -EBADMSG)
                report_bad(f, s->loc.chunk_id, s->loc.version, s->loc.rep[ri].id, r);
        }
        /* Placed but never written (by a fresh lookup, not a cached one: a written chunk missing everywhere
         * has lost its data), and on no replica: no write of it is visible yet, so it reads as a hole. Waiting
         * for it would fail with EIO after io_timeout while its writer takes its time. */
        if (round > 0 && s->loc.unwritten && tried && missing == tried) {
            memset(s->dst, 0, s->len);
            return 0;
        }
        if (past(deadline)) {
            LOG_ERR("%s: chunk %llu of inode %llu unreadable on every replica for %u ms: EIO", err_name(last),
                    (unsigned long long)s->loc.chunk_id, (unsigned long long)f->ino, c->cfg.io_timeout_ms);
            return -EIO;
        }
        if (backoff_sleep_c(&backoff, cancel))
            return -EINTR;
    }
}

/* Read [off, off+len) of the file (clipped by the caller to the size) into dst, in parallel pieces. */
static int read_range(struct cio_file *f, uint64_t off, size_t len, uint8_t *dst, struct rpc_cancel *cancel)
{
    struct cio *c = f->c;
    size_t nseg = 0, cap = len / CIO_MAX_IO + 2 + len / CIO_CHUNK_SIZE;
    struct seg *segs = xcalloc(cap, sizeof(*segs));
    struct rwait w;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.pending = 0;
    int r = 0;
    for (uint64_t p = off; p < off + len;) {
        uint64_t index = p / CIO_CHUNK_SIZE;
        uint64_t cend = (index + 1) * CIO_CHUNK_SIZE;
        uint32_t n = (uint32_t)MIN(MIN(off + len, cend) - p, (uint64_t)CIO_MAX_IO);
        ASSERT(nseg < cap);
        struct seg *s = &segs[nseg++];
        s->wait = &w;
        s->index = index;
        s->coff = p - index * CIO_CHUNK_SIZE;
        s->len = n;
        s->dst = dst + (p - off);
        s->ri = UINT32_MAX;
        p += n;
    }
    for (size_t i = 0; i < nseg; i++) {
        struct seg *s = &segs[i];
        r = loc_get(f, s->index, &s->loc, cancel);
        if (r)
            goto out_wait;
        if (s->loc.chunk_id == 0 || s->loc.nrep == 0) {
            memset(s->dst, 0, s->len);
            s->loc.chunk_id = 0;
            continue;
        }
        s->ri = atomic_fetch_add(&c->rr, 1) % s->loc.nrep;
        s->plain = want_plain(s->coff, s->len);
        Synod__V1__ReadReq req;
        read_req(s, s->ri, &req);
        pthread_mutex_lock(&w.mu);
        w.pending++;
        pthread_mutex_unlock(&w.mu);
        rpc_call_async_cancellable(rpc_channel_get(s->loc.rep[s->ri].addr),
                                   &synod__v1__chunk_data__descriptor, "Read", &req.base, NULL,
                                   c->cfg.rpc_timeout_ms, cancel, read_done, s);
    }
out_wait:
    pthread_mutex_lock(&w.mu);
    while (w.pending)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    for (size_t i = 0; i < nseg; i++) {
        struct seg *s = &segs[i];
        if (s->ri == UINT32_MAX) /* hole, or never sent */
            continue;
        int e = s->err;
        if (e == 0)
            e = seg_decode(c, s, (Synod__V1__ReadRep *)s->rep);
        if (e == -EBADMSG) /* found here, or by the chunkserver in its stored copy (it reports that too) */
            report_bad(f, s->loc.chunk_id, s->loc.version, s->loc.rep[s->ri].id, e);
        read_rep_free(s->rep);
        s->rep = NULL;
        if (e && r == 0 && rpc_cancel_triggered(cancel)) {
            r = -EINTR; /* interrupted: no failover */
        } else if (e && r == 0) {
            LOG_DEBUG("%s: read of chunk %llu v%u from %s failed, failing over", err_name(e),
                      (unsigned long long)s->loc.chunk_id, s->loc.version, s->loc.rep[s->ri].addr);
            if (e == -ESTALE || e == -ENOENT)
                loc_drop(f, s->index);
            int e2 = seg_read_sync(f, s, s->ri, cancel);
            if (e2)
                r = e2;
        }
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    free(segs);
    return r;
}

static int flush_locked(struct cio_file *f, bool fsync, bool release, struct rpc_cancel *cancel);
static bool overlaps_inflight(struct cio_file *f, uint64_t off, uint64_t end);

/* ---- read-ahead --------------------------------------------------------------------------------------
 *
 * A sequential reader gets the next `readahead` bytes fetched in the background while it consumes the
 * current ones: the file keeps a short list of slots, each RA_SLOT bytes aligned in the file (so inside one
 * chunk, one Read RPC), fetched asynchronously in stored form. The dispatcher thread only parks the reply
 * (RA_ARRIVED); the first reader that needs the slot checks and decodes it on its own thread (RA_DECODING,
 * then RA_READY), so decoding runs in parallel on the FUSE threads; a failed fetch is redone there with the
 * synchronous failover path. Readers find slots by offset each time they wake and never keep a pointer
 * across an unlock, so a slot may be dropped at any time: a write, a truncate or an invalidation drops them
 * all (a slot still being fetched or decoded is orphaned and freed by whoever holds it). A slot read in full
 * is freed at once (the kernel's page cache absorbs re-reads), leftovers more than `readahead` behind a
 * sequential reader are dropped. Memory per file is bounded by RA_MAX_SLOTS(readahead) slots.
 *
 * Sequential means: the read starts exactly where the previous one ended, or hits a slot, or (while slots
 * exist) starts within RA_SLOT of the previous end: the kernel sends its own read-ahead as several
 * concurrent requests that arrive slightly out of order. Anything else is read directly, exactly the
 * blocks asked for, and starts no read-ahead: random reads pay nothing (a tolerance without slots would
 * start an 8 MiB window for ~0.2% of random 4 KiB reads on a 1 GiB file, ~25% more bytes fetched). */

#define RA_SLOT          CIO_MAX_IO
#define RA_MAX_SLOTS(ra) ((ra) / RA_SLOT + 4)

enum ra_state { RA_PENDING, RA_ARRIVED, RA_DECODING, RA_READY };

struct ra_slot {
    struct ra_slot *next;
    struct cio_file *f;
    uint64_t off; /* in the file, RA_SLOT aligned */
    enum ra_state state;
    bool orphan;       /* dropped while fetched or decoded: the fetch completion or the decoder frees it */
    uint32_t consumed; /* bytes served from it */
    struct seg seg;    /* the piece (len clipped at the size when issued), its location, replica and reply */
    uint8_t *buf;
};

/* `c` is passed rather than read from sl->f: an orphan may outlive its file. */
static void ra_slot_free(struct cio *c, struct ra_slot *sl)
{
    read_rep_free(sl->seg.rep);
    buf_put(c, sl->buf);
    free(sl);
}

/* Drop the slots that end at or before `below` (0: all of them, and slots being issued are refused); mu
 * held. */
static void ra_drop_locked(struct cio_file *f, uint64_t below)
{
    if (!below)
        f->ra_gen++;
    for (struct ra_slot **pp = &f->ra, *sl; (sl = *pp);) {
        if (below && sl->off + RA_SLOT > below) {
            pp = &sl->next;
            continue;
        }
        *pp = sl->next;
        f->nra--;
        if (sl->state == RA_PENDING || sl->state == RA_DECODING)
            sl->orphan = true;
        else
            ra_slot_free(f->c, sl);
    }
}

/* Unlink and free a slot that nobody holds (READY or ARRIVED); mu held. */
static void ra_unlink_free(struct cio_file *f, struct ra_slot *sl)
{
    for (struct ra_slot **pp = &f->ra; *pp; pp = &(*pp)->next)
        if (*pp == sl) {
            *pp = sl->next;
            f->nra--;
            break;
        }
    ra_slot_free(f->c, sl);
}

static struct ra_slot *ra_find(struct cio_file *f, uint64_t slot_off)
{
    for (struct ra_slot *sl = f->ra; sl; sl = sl->next)
        if (sl->off == slot_off)
            return sl;
    return NULL;
}

static void ra_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    UNUSED(st);
    struct ra_slot *sl = arg;
    struct cio_file *f = sl->f;
    struct cio *c = f->c;
    pthread_mutex_lock(&f->mu);
    bool orphan = sl->orphan;
    sl->seg.err = err;
    sl->seg.rep = reply;
    sl->state = RA_ARRIVED;
    f->ra_pending--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu); /* the last touch of f: cio_file_free waits for ra_pending */
    if (orphan)
        ra_slot_free(c, sl);
}

/* Start fetching the slots of [from, to) that are missing (to is clipped at `size`); mu NOT held. Holes are
 * zero-filled by their reader; a slot whose location cannot be had is left for its reader's failover path.
 * `gen` is ra_gen when the read decided to read ahead: a write since then (which may have data for this
 * range still buffered) stops the issuing, so no slot is ever older than a write acknowledged before it
 * was inserted (writes after that drop it). */
static void ra_issue(struct cio_file *f, uint64_t from, uint64_t to, uint64_t size, uint64_t gen)
{
    struct cio *c = f->c;
    to = MIN(to, size);
    for (uint64_t o = from / RA_SLOT * RA_SLOT; o < to; o += RA_SLOT) {
        pthread_mutex_lock(&f->mu);
        bool have = ra_find(f, o) != NULL;
        if (f->ra_gen != gen) {
            pthread_mutex_unlock(&f->mu);
            return;
        }
        if (have || f->nra >= RA_MAX_SLOTS(c->cfg.readahead)) {
            pthread_mutex_unlock(&f->mu);
            if (have)
                continue;
            return;
        }
        struct ra_slot *sl = xcalloc(1, sizeof(*sl));
        sl->f = f;
        sl->off = o;
        sl->state = RA_PENDING;
        sl->buf = buf_get(c);
        sl->seg.index = o / CIO_CHUNK_SIZE;
        sl->seg.coff = o % CIO_CHUNK_SIZE;
        sl->seg.len = (uint32_t)MIN((uint64_t)RA_SLOT, size - o);
        sl->seg.dst = sl->buf;
        sl->seg.ri = UINT32_MAX;
        sl->next = f->ra;
        f->ra = sl;
        f->nra++;
        f->ra_pending++;
        pthread_mutex_unlock(&f->mu);
        struct loc l;
        int r = loc_get(f, sl->seg.index, &l, NULL);
        if (r == 0 && (l.chunk_id == 0 || l.nrep == 0)) { /* a hole: its reader zero-fills it */
            sl->seg.loc.chunk_id = 0;
            ra_done(0, NULL, NULL, sl); /* sl may be gone after this */
            continue;
        }
        if (r) { /* the reader's failover path looks the location up again */
            ra_done(r, NULL, NULL, sl);
            continue;
        }
        sl->seg.loc = l;
        sl->seg.ri = atomic_fetch_add(&c->rr, 1) % l.nrep;
        Synod__V1__ReadReq req;
        read_req(&sl->seg, sl->seg.ri, &req);
        rpc_call_async(rpc_channel_get(l.rep[sl->seg.ri].addr), &synod__v1__chunk_data__descriptor, "Read",
                       &req.base, NULL, c->cfg.rpc_timeout_ms, ra_done, sl);
    }
}

/* Check and decode an arrived slot on this thread (failing over if needed); mu held on entry and return,
 * released meanwhile. Returns 0 or -errno; on error the slot is gone. */
static int ra_decode(struct cio_file *f, struct ra_slot *sl, struct rpc_cancel *cancel)
{
    sl->state = RA_DECODING;
    pthread_mutex_unlock(&f->mu);
    struct seg *s = &sl->seg;
    int e = s->err;
    if (e == 0 && s->loc.chunk_id == 0) {
        memset(s->dst, 0, s->len);
    } else if (e == 0) {
        e = seg_decode(f->c, s, (Synod__V1__ReadRep *)s->rep);
        if (e == -EBADMSG)
            report_bad(f, s->loc.chunk_id, s->loc.version, s->loc.rep[s->ri].id, e);
    }
    read_rep_free(s->rep);
    s->rep = NULL;
    if (e) {
        if (e == -ESTALE || e == -ENOENT)
            loc_drop(f, s->index);
        if (s->loc.chunk_id == 0 && s->ri == UINT32_MAX) { /* the location lookup itself failed */
            e = loc_get(f, s->index, &s->loc, cancel);
            if (e == 0 && s->loc.chunk_id == 0)
                memset(s->dst, 0, s->len);
            else if (e == 0)
                e = seg_read_sync(f, s, UINT32_MAX, cancel);
        } else {
            e = seg_read_sync(f, s, s->ri, cancel);
        }
    }
    pthread_mutex_lock(&f->mu);
    if (sl->orphan) {
        ra_slot_free(f->c, sl); /* dropped meanwhile: whoever dropped it counts on us */
        return -EAGAIN;         /* the caller looks again (and reads directly) */
    }
    if (e) {
        ra_unlink_free(f, sl);
        pthread_cond_broadcast(&f->cv);
        return e;
    }
    sl->state = RA_READY;
    pthread_cond_broadcast(&f->cv);
    return 0;
}

static void wake_file(void *arg)
{
    struct cio_file *f = arg;
    pthread_mutex_lock(&f->mu);
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Serve [off, off+len) (inside the size) from slots, reading directly what no slot holds; mu NOT held. */
static int ra_read(struct cio_file *f, uint64_t off, size_t len, uint8_t *buf, struct rpc_cancel *cancel)
{
    int r = 0;
    pthread_mutex_lock(&f->mu);
    for (uint64_t p = off; p < off + len && r == 0;) {
        uint64_t so = p / RA_SLOT * RA_SLOT;
        size_t n = (size_t)MIN(off + len - p, so + RA_SLOT - p);
        struct ra_slot *sl = ra_find(f, so);
        if (sl && sl->state == RA_READY && p + n <= so + sl->seg.len) {
            memcpy(buf + (p - off), sl->buf + (p - so), n);
            p += n;
            /* A sequential stream reads each byte once (the page cache absorbs re-reads), in any order
             * across the kernel's concurrent requests: a slot read in full is done. */
            sl->consumed += n;
            if (sl->consumed >= sl->seg.len)
                ra_unlink_free(f, sl);
        } else if (sl && sl->state == RA_ARRIVED) {
            r = ra_decode(f, sl, cancel);
            if (r == -EAGAIN)
                r = 0; /* look again */
        } else if (sl && sl->state != RA_READY) {
            if (rpc_cancel_triggered(cancel)) {
                r = -EINTR;
                break;
            }
            pthread_cond_wait(&f->cv, &f->mu);
        } else { /* no slot (dropped, or too short for a grown file): read this part directly */
            pthread_mutex_unlock(&f->mu);
            r = read_range(f, p, n, buf + (p - off), cancel);
            pthread_mutex_lock(&f->mu);
            p += n;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return r;
}

int cio_read(struct cio_file *f, uint64_t off, size_t len, void *buf, size_t *out_len)
{
    return cio_read_cancellable(f, off, len, buf, out_len, NULL);
}

int cio_read_cancellable(struct cio_file *f, uint64_t off, size_t len, void *buf, size_t *out_len,
                         struct rpc_cancel *cancel)
{
    struct cio *c = f->c;
    *out_len = 0;
    /* Read-your-writes: push buffered or in-flight data this read covers. Pushing data already acknowledged
     * to the application is never abandoned, so this part does not look at `cancel`. */
    pthread_mutex_lock(&f->mu);
    bool pending = (f->local_end && off < f->local_end) || overlaps_inflight(f, off, off + len) || f->failed;
    pthread_mutex_unlock(&f->mu);
    if (pending) {
        pthread_mutex_lock(&f->op_mu);
        int r = flush_locked(f, false, false, NULL);
        pthread_mutex_unlock(&f->op_mu);
        if (r)
            return r;
    }
    if (rpc_cancel_triggered(cancel))
        return -EINTR;
    pthread_mutex_lock(&f->mu);
    uint64_t size = MAX(f->meta_size, f->local_end);
    if (off >= size) {
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    len = (size_t)MIN((uint64_t)len, size - off);
    /* No read-ahead while this client has writes not yet completed: the window could cover bytes still in
     * its buffer (read-your-writes); they are pushed by the next read below local_end, or by flush. */
    bool seq = c->cfg.readahead && !f->local_end &&
               (off == f->seq_next || ra_find(f, off / RA_SLOT * RA_SLOT) ||
                (f->nra && off + RA_SLOT >= f->seq_next && off <= f->seq_next + RA_SLOT));
    uint64_t gen = f->ra_gen;
    f->seq_next = off + len;
    if (seq && off >= (uint64_t)c->cfg.readahead + RA_SLOT) /* leftovers well behind the reader */
        ra_drop_locked(f, (off - c->cfg.readahead) / RA_SLOT * RA_SLOT);
    pthread_mutex_unlock(&f->mu);
    if (!seq) {
        int r = read_range(f, off, len, buf, cancel);
        if (r)
            return r;
        *out_len = len;
        return 0;
    }
    struct rpc_cancel_hook hook;
    if (!rpc_cancel_hook_add(cancel, &hook, wake_file, f))
        return -EINTR;
    ra_issue(f, off, off + len + c->cfg.readahead, size, gen);
    int r = ra_read(f, off, len, buf, cancel);
    rpc_cancel_hook_del(cancel, &hook);
    if (r)
        return r;
    *out_len = len;
    return 0;
}

/* ---- writes ----------------------------------------------------------------------------------------- */

/* Whether [off, end) and [o2, o2 + len2) share a 64 KiB block. */
static bool same_block(uint64_t off, uint64_t end, uint64_t o2, uint32_t len2)
{
    off -= off % CIO_BLOCK_SIZE;
    end = (end + CIO_BLOCK_SIZE - 1) / CIO_BLOCK_SIZE * CIO_BLOCK_SIZE;
    return o2 < end && off < o2 + len2;
}

static bool wreq_touches(const struct wreq *w, uint64_t off, uint64_t end)
{
    for (uint32_t i = 0; i < w->nruns; i++)
        if (same_block(off, end, w->runs[i].off, w->runs[i].len))
            return true;
    return false;
}

/* Whether [off, end) shares a 64 KiB block with a write in flight or failed. Block granularity, not byte:
 * a failed write is replayed later, so it must not be overtaken by a later write of the same bytes; and
 * the head admits one write per block at a time anyway (its gate), so waiting here costs nothing more. */
static bool overlaps_inflight(struct cio_file *f, uint64_t off, uint64_t end)
{
    for (struct wreq *w = f->inflight; w; w = w->next)
        if (wreq_touches(w, off, end))
            return true;
    for (struct wreq *w = f->failed; w; w = w->next)
        if (wreq_touches(w, off, end))
            return true;
    return false;
}

/* Whether a Write of len bytes may go out now; mu held: fewer than max_inflight Writes and at most
 * max_inflight MiB in flight for the file (a file with nothing in flight always has room). Depth for small
 * writes comes from batching instead (pump): each write is acknowledged once buffered, small ones pile up
 * while the Writes in flight travel and then share one chain round trip. That round trip (three RPCs,
 * each several thread hand-offs) costs the daemons ~1.5 ms of CPU on the shared 2-core VM whatever its
 * size, so random 4 KiB writes were CPU-bound at one write per round trip; letting 64 single writes fly
 * instead of 4 gained little for the same reason. */
#define MAX_PIECES  64u            /* complete pieces waiting to be sent (pend_full) */
#define MAX_RUNS    32u            /* runs of one batched Write (the chunkserver takes up to 64) */
#define SMALL_PIECE CIO_BLOCK_SIZE /* pieces up to this size wait in their own copy (wbuf_send) */
static bool room_locked(const struct cio_file *f, size_t len)
{
    return f->ninflight == 0 || (f->ninflight < f->c->cfg.max_inflight &&
                                 f->inflight_bytes + len <= (uint64_t)f->c->cfg.max_inflight * CIO_MAX_IO);
}

/* Open chunk `index` for writing (or renew its lease); op_mu held. Fills *out. */
static int chunk_open(struct cio_file *f, uint64_t index, bool force, struct loc *out, bool *create)
{
    struct cio *c = f->c;
    uint64_t now = clk_mono_ns();
    uint64_t gen = atomic_load(&c->sess_gen);
    pthread_mutex_lock(&f->mu);
    struct cchunk *ch = chunk_at(f, index);
    bool fresh = !force && ch->wopen && ch->wgen == gen && ch->lease_until > now;
    if (fresh) {
        *out = ch->loc;
        *create = ch->fresh;
    }
    pthread_mutex_unlock(&f->mu);
    if (fresh)
        return 0;
    uint64_t deadline = deadline_after(c->cfg.io_timeout_ms);
    uint32_t backoff = 50;
    for (;;) {
        Synod__V1__ChunkOpenWriteReq req = SYNOD__V1__CHUNK_OPEN_WRITE_REQ__INIT;
        req.ino = f->ino;
        req.index = index;
        ProtobufCMessage *m;
        int r = mc_call(c->mc, "ChunkOpenWrite", &req.base, MC_EAGAIN_RESULT, &m);
        if (r == -EAGAIN) { /* another client holds the write lease: wait for it */
            if (past(deadline)) {
                LOG_ERR("inode %llu chunk %llu: write lease held elsewhere for %u ms: EIO",
                        (unsigned long long)f->ino, (unsigned long long)index, c->cfg.io_timeout_ms);
                return -EIO;
            }
            backoff_sleep(&backoff);
            continue;
        }
        if (r)
            return r;
        Synod__V1__ChunkOpenWriteRep *rep = (Synod__V1__ChunkOpenWriteRep *)m;
        struct loc l;
        if (!rep->chunk || !loc_from_wire(rep->chunk, &l) || l.chunk_id == 0 || l.nrep == 0) {
            rpc_message_free(m);
            LOG_ERR("inode %llu chunk %llu: malformed ChunkOpenWrite reply", (unsigned long long)f->ino,
                    (unsigned long long)index);
            return -EIO;
        }
        uint32_t lease = rep->lease_ms ? rep->lease_ms : 10000;
        bool rep_fresh = rep->fresh;
        rpc_message_free(m);
        pthread_mutex_lock(&f->mu);
        ch = chunk_at(f, index);
        /* A renewal of our own fresh chunk stays fresh until a write succeeds (see written()); once one has,
         * a replica without the chunk lost data, whatever the answer says. */
        if (ch->loc.chunk_id != l.chunk_id)
            ch->fresh = ch->wrote = false;
        if (!ch->wrote)
            ch->fresh |= rep_fresh;
        ch->loc = l;
        ch->loc_valid = true;
        ch->loc_until = now + (uint64_t)lease * NS_PER_MS;
        ch->wopen = true;
        ch->wgen = gen;
        ch->lease_until = now + (uint64_t)lease * NS_PER_MS / 2; /* renew when half spent */
        *out = l;
        *create = ch->fresh;
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
}

/* The replicas after the head, as the wire chain (pointing into l). Returns the count. */
static size_t chain_fill(const struct loc *l, Synod__V1__ChunkserverAddr *chain,
                         Synod__V1__ChunkserverAddr **pchain)
{
    for (uint32_t i = 1; i < l->nrep; i++) {
        synod__v1__chunkserver_addr__init(&chain[i - 1]);
        chain[i - 1].id = l->rep[i].id;
        chain[i - 1].addr = (char *)l->rep[i].addr;
        chain[i - 1].uuid = (char *)l->rep[i].uuid;
        pchain[i - 1] = &chain[i - 1];
    }
    return l->nrep ? l->nrep - 1 : 0;
}

/* A Write of w's runs (chunk offsets; a batch goes as `ranges`, whose storage rmsg/rptr has room for
 * w->nruns each). */
static void fill_write(Synod__V1__WriteReq *req, Synod__V1__ChunkserverAddr *chain,
                       Synod__V1__ChunkserverAddr **pchain, const struct loc *l, const struct wreq *w,
                       Synod__V1__PlainRange *rmsg, Synod__V1__PlainRange **rptr, bool create)
{
    synod__v1__write_req__init(req);
    req->to_uuid = (char *)l->rep[0].uuid;
    req->chunk_id = l->chunk_id;
    req->version = l->version;
    uint64_t base = w->index * CIO_CHUNK_SIZE;
    if (w->nruns == 1) {
        req->offset = w->runs[0].off - base;
        req->length = w->len;
    } else {
        for (uint32_t i = 0; i < w->nruns; i++) {
            synod__v1__plain_range__init(&rmsg[i]);
            rmsg[i].offset = w->runs[i].off - base;
            rmsg[i].length = w->runs[i].len;
            rptr[i] = &rmsg[i];
        }
        req->n_ranges = w->nruns;
        req->ranges = rptr;
    }
    req->crc = crc32c(0, w->data, w->len);
    req->create = create;
    req->n_chain = chain_fill(l, chain, pchain);
    req->chain = pchain;
}

/* Mark the chunk of a completed write as owing completion; mu held. */
static void written(struct cio_file *f, uint64_t index, uint64_t end)
{
    struct cchunk *ch = chunk_at(f, index);
    ch->dirty = ch->unsynced = true;
    ch->fresh = false; /* every replica of the chain has the chunk now */
    ch->wrote = true;
    ch->wend = MAX(ch->wend, end);
}

static void write_released(void *ctx)
{
    wreq_put(ctx);
}

static void write_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    struct wreq *w = arg;
    struct cio_file *f = w->f;
    bool synced = err == 0 && w->sync && reply && ((const Synod__V1__WriteRep *)reply)->synced;
    rpc_message_free(reply);
    pthread_mutex_lock(&f->mu);
    struct cchunk *ch = chunk_at(f, w->index);
    ch->nin--;
    struct wreq **pp = &f->inflight;
    while (*pp != w)
        pp = &(*pp)->next;
    *pp = w->next;
    w->next = NULL;
    f->ninflight--;
    f->ndone++;
    f->inflight_bytes -= w->len;
    if (err == 0) {
        written(f, w->index, w->runs[w->nruns - 1].off + w->runs[w->nruns - 1].len);
        /* Synced by its chain: it was sent with no other write of the chunk in flight (every earlier one
         * had completed, so each replica's sync covered it too) and none was sent after it. */
        if (synced && ch->wseq == w->seq)
            ch->unsynced = false;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        wreq_put(w);
        return;
    }
    w->err = err;
    snprintf(w->detail, sizeof(w->detail), "%s", st ? st->detail : "");
    *f->failed_tail = w;
    f->failed_tail = &w->next;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* The replica a failed write or fsync names ("failed=<id>:<errno>"), or the head when the head itself
 * could not be reached. UINT32_MAX when nobody is to blame (a CRC error in transit...). */
static uint32_t failed_replica(int err, const char *detail, uint32_t head, int *rerr)
{
    const char *p = strstr(detail, "failed=");
    *rerr = err;
    if (p) {
        char *end;
        unsigned long id = strtoul(p + 7, &end, 10);
        if (*end == ':')
            *rerr = -(int)strtol(end + 1, NULL, 10);
        return (uint32_t)id;
    }
    if (err == -ENOTCONN || err == -ETIMEDOUT || err == -ECANCELED || err == -ENXIO) /* ENXIO: not it there */
        return head;
    return UINT32_MAX;
}

static bool fatal_write_err(int err)
{
    return err == -ENOSPC || err == -EDQUOT || err == -EFBIG || err == -EINVAL || err == -EROFS ||
           err == -EPERM || err == -EACCES || err == -EISDIR;
}

/* Send a failed write again synchronously until it is stored on the whole (current) chain; op_mu held.
 * Handles failed replicas, stale versions and missing chunks. */
static int write_sync(struct cio_file *f, const struct wreq *w)
{
    struct cio *c = f->c;
    uint64_t index = w->index;
    uint64_t deadline = deadline_after(c->cfg.io_timeout_ms);
    uint32_t backoff = 20;
    int err = w->err;
    char detail[256];
    snprintf(detail, sizeof(detail), "%s", w->detail);
    uint32_t head = w->head, version = w->version;
    uint64_t chunk_id = 0;
    unsigned forced = 0;
    unsigned heads_full = 0; /* heads that answered "no space" for their own copy */
    struct rpc_cancel *cancel = f->flush_cancel;
    for (;;) {
        if (rpc_cancel_triggered(cancel))
            return -EINTR;
        bool force = false;
        int rerr = 0;
        uint32_t bad = UINT32_MAX;
        struct loc cur = {0};
        bool space = false;
        if (err) {
            bad = failed_replica(err, detail, head, &rerr);
            pthread_mutex_lock(&f->mu);
            cur = chunk_at(f, index)->loc;
            pthread_mutex_unlock(&f->mu);
            space = (rerr == -ENOSPC || rerr == -EDQUOT) && bad != UINT32_MAX;
        }
        if (space && bad == head) {
            /* The head is out of space; the others may not be. The next try heads the chain with the next
             * replica (the full one goes last, where its failure is named after the others stored the
             * bytes). Every replica full in turn: the application gets ENOSPC, and no copy was dropped for
             * it (a full cluster must not cost the chunk its redundancy). */
            if (++heads_full >= cur.nrep)
                return rerr;
            LOG_WARN("inode %llu chunk %llu: chunkserver %u is out of space: %s", (unsigned long long)f->ino,
                     (unsigned long long)index, bad, detail);
        } else if (err) {
            /* A replica out of space behind a head that stored the bytes: only that one is full. It is
             * dropped like a failed replica and the write goes on with the others (re-replication restores
             * the goal where there is room); the application sees ENOSPC only from the last replica. */
            if (fatal_write_err(rerr) && !(space && cur.nrep > 1))
                return rerr;
            /* A replica without the chunk (ENOENT) on a chunk that is not fresh has lost its data: it is
             * reported like any failed replica, never recreated empty (that would serve zeros). */
            if (bad != UINT32_MAX && cur.nrep > 1) {
                report_bad(f, chunk_id ? chunk_id : cur.chunk_id, version ? version : cur.version, bad, rerr);
                force = true;
            } else if (rerr == -ESTALE) {
                force = true;
            }
            if (past(deadline)) {
                LOG_ERR("%s: write to inode %llu chunk %llu failed for %u ms (%s): EIO", err_name(err),
                        (unsigned long long)f->ino, (unsigned long long)index, c->cfg.io_timeout_ms, detail);
                return -EIO;
            }
            /* A forced reopen goes at once the first time; repeated failures back off, so a chain that
             * keeps refusing (e.g. replicas that do not take the bumped version) does not spin. */
            if ((!force || ++forced > 1) && backoff_sleep_c(&backoff, cancel))
                return -EINTR;
        }
        struct loc l;
        bool create;
        int r = chunk_open(f, index, force, &l, &create);
        if (r)
            return r;
        if (l.nrep > 1 && heads_full % l.nrep) { /* full heads go last (see above) */
            struct loc rot = l;
            for (uint32_t i = 0; i < l.nrep; i++)
                rot.rep[i] = l.rep[(i + heads_full) % l.nrep];
            l = rot;
        }
        Synod__V1__WriteReq req;
        Synod__V1__ChunkserverAddr chain[MAX_REPL];
        Synod__V1__ChunkserverAddr *pchain[MAX_REPL];
        Synod__V1__PlainRange rmsg[MAX_RUNS], *rptr[MAX_RUNS];
        fill_write(&req, chain, pchain, &l, w, rmsg, rptr, create);
        struct rpc_payload pl = {.data = w->data, .len = w->len};
        ProtobufCMessage *m;
        struct rpc_status st;
        err = rpc_call_cancellable(rpc_channel_get(l.rep[0].addr), &synod__v1__chunk_data__descriptor,
                                   "Write", &req.base, &pl, c->cfg.rpc_timeout_ms, cancel, &m, &st);
        rpc_message_free(m);
        if (err == -ECANCELED && rpc_cancel_triggered(cancel))
            return -EINTR; /* resent in full by the next flush: overwriting the same bytes is harmless */
        if (err == 0) {
            pthread_mutex_lock(&f->mu);
            written(f, index, w->runs[w->nruns - 1].off + w->runs[w->nruns - 1].len);
            pthread_mutex_unlock(&f->mu);
            return 0;
        }
        snprintf(detail, sizeof(detail), "%s", st.detail);
        head = l.rep[0].id;
        version = l.version;
        chunk_id = l.chunk_id;
        LOG_WARN("%s: write of inode %llu chunk %llu v%u via %s failed: %s", err_name(err),
                 (unsigned long long)f->ino, (unsigned long long)l.chunk_id, l.version, l.rep[0].addr,
                 detail);
    }
}

static int wait_idle(struct cio_file *f, size_t room_for, struct rpc_cancel *cancel);

/* Wait for writes in flight and replay the failed ones, in order; op_mu held. In a flush, both waits stop
 * when its token fires (-EINTR; see cio_file.flush_cancel). */
static int drain(struct cio_file *f)
{
    if (f->flush_cancel) {
        int r = wait_idle(f, 0, f->flush_cancel);
        if (r)
            return r;
    }
    pthread_mutex_lock(&f->mu);
    while (f->ninflight)
        pthread_cond_wait(&f->cv, &f->mu);
    struct wreq *list = f->failed;
    f->failed = NULL;
    f->failed_tail = &f->failed;
    pthread_mutex_unlock(&f->mu);
    int rc = 0;
    for (struct wreq *w = list, *n; w; w = n) {
        n = w->next;
        if (rc == 0) {
            int r = write_sync(f, w);
            if (r == -EINTR) {
                /* The flush was interrupted: this write and the ones after it go back, in order, to be
                 * replayed by the next flush (nothing is in flight and nothing new failed: op_mu is held). */
                struct wreq *last = w;
                while (last->next)
                    last = last->next;
                pthread_mutex_lock(&f->mu);
                last->next = f->failed;
                f->failed = w;
                if (f->failed_tail == &f->failed)
                    f->failed_tail = &last->next;
                pthread_mutex_unlock(&f->mu);
                return -EINTR;
            }
            if (r)
                rc = r;
        }
        wreq_put(w);
    }
    if (rc) {
        pthread_mutex_lock(&f->mu);
        if (!f->err)
            f->err = rc;
        pthread_mutex_unlock(&f->mu);
    }
    return rc;
}

/* Send pieces ps[0..n) (all in chunk `index`, ascending, no two in one block, none touching a write in
 * flight) as one asynchronous Write; takes the pieces. op_mu held. */
static int send_pieces(struct cio_file *f, uint64_t index, struct pend **ps, uint32_t n)
{
    struct cio *c = f->c;
    struct loc l;
    bool create;
    int r = chunk_open(f, index, false, &l, &create);
    if (r) {
        for (uint32_t i = 0; i < n; i++) {
            ps[i]->pooled ? buf_put(c, ps[i]->data) : free(ps[i]->data);
            free(ps[i]);
        }
        pthread_mutex_lock(&f->mu);
        if (!f->err)
            f->err = r;
        pthread_mutex_unlock(&f->mu);
        return r;
    }
    struct wreq *w = xcalloc(1, sizeof(*w));
    w->f = f;
    atomic_init(&w->refs, 2); /* the payload release and the completion */
    w->index = index;
    w->nruns = n;
    w->runs = n == 1 ? &w->one : xmalloc(n * sizeof(*w->runs));
    for (uint32_t i = 0; i < n; i++) {
        w->runs[i] = (struct wrun){ps[i]->off, ps[i]->len};
        w->len += ps[i]->len;
    }
    if (n == 1) { /* its buffer travels as it is */
        w->data = ps[0]->data;
        w->pooled = ps[0]->pooled;
        free(ps[0]);
    } else {
        w->data = xmalloc(w->len);
        for (uint32_t i = 0, pos = 0; i < n; i++) {
            memcpy(w->data + pos, ps[i]->data, ps[i]->len);
            pos += ps[i]->len; /* before ps[i] goes (it was in the loop's increment: a use after free) */
            ps[i]->pooled ? buf_put(c, ps[i]->data) : free(ps[i]->data);
            free(ps[i]);
        }
    }
    w->chunk_id = l.chunk_id;
    w->version = l.version;
    w->head = l.rep[0].id;
    bool later = false; /* another piece of this chunk still waits: it will be the chunk's last write */
    for (const struct pend *p = f->pend; p && !later; p = p->next)
        later = p->off / CIO_CHUNK_SIZE == index;
    Synod__V1__WriteReq req;
    Synod__V1__ChunkserverAddr chain[MAX_REPL];
    Synod__V1__ChunkserverAddr *pchain[MAX_REPL];
    Synod__V1__PlainRange rmsg[MAX_RUNS], *rptr[MAX_RUNS];
    fill_write(&req, chain, pchain, &l, w, rmsg, rptr, create);
    pthread_mutex_lock(&f->mu);
    struct cchunk *ch = chunk_at(f, index);
    /* A flush that syncs sends a chunk's last write with sync when no other write of the chunk is in flight:
     * the chain then makes the chunk durable (everything written to it before, too) in the write's own round
     * trip, and fsync_all skips it (write_done). Otherwise the chunk gets its Fsync pass as before. */
    w->sync = f->flush_sync && !later && ch->nin == 0;
    req.sync = w->sync;
    w->seq = ++ch->wseq;
    ch->nin++;
    f->nwreq++;
    w->next = f->inflight;
    f->inflight = w;
    f->ninflight++;
    f->inflight_bytes += w->len;
    pthread_mutex_unlock(&f->mu);
    struct rpc_payload pl = {.data = w->data, .len = w->len, .release = write_released, .ctx = w};
    rpc_call_async(rpc_channel_get(l.rep[0].addr), &synod__v1__chunk_data__descriptor, "Write", &req.base,
                   &pl, c->cfg.rpc_timeout_ms, write_done, w);
    return 0;
}

/* Whether the complete pieces waiting to be sent are more than the file may buffer besides its writes in
 * flight (the same budget again), so the writer must wait for room. */
static bool pend_full(const struct cio_file *f)
{
    return f->npend >= MAX_PIECES || f->pend_bytes > (uint64_t)f->c->cfg.max_inflight * CIO_MAX_IO;
}

static int pend_cmp(const void *a, const void *b)
{
    const struct pend *x = *(struct pend *const *)a, *y = *(struct pend *const *)b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Send complete pieces while there is room in flight; op_mu held. The oldest waiting piece goes first,
 * together with every other waiting piece of its chunk (up to MAX_RUNS runs and CIO_MAX_IO bytes) in one
 * batched Write: while the pipeline is full, small writes pile up here and then share one chain round
 * trip, whose cost (three RPCs, each several thread hand-offs) dwarfs the bytes of a 4 KiB write. With
 * `all` (flush), waits for room until everything is sent; otherwise sends what fits and returns (a writer
 * over the budget waits in cio_write_at). Per block the order is the order of the writes: a piece waits while
 * an older waiting piece or a write in flight touches one of its blocks, so the runs of a batch never share a
 * block (the chunkserver refuses such a batch). Failed writes are replayed first. */
static int pump(struct cio_file *f, bool all)
{
    while (f->pend) {
        pthread_mutex_lock(&f->mu);
        if (f->failed) { /* checked under the same hold as the selection: none may overtake a replay */
            pthread_mutex_unlock(&f->mu);
            int r = drain(f);
            if (r)
                return r;
            continue;
        }
        struct pend *batch[MAX_RUNS];
        uint32_t n = 0;
        uint64_t bytes = 0, index = f->pend->off / CIO_CHUNK_SIZE;
        for (struct pend *p = f->pend; p && n < MAX_RUNS; p = p->next) {
            bool ok = p->off / CIO_CHUNK_SIZE == index && bytes + p->len <= CIO_MAX_IO &&
                      !overlaps_inflight(f, p->off, p->off + p->len);
            /* An older waiting piece in one of its blocks goes first (and never in the same batch). */
            for (const struct pend *q = f->pend; ok && q != p; q = q->next)
                ok = !same_block(p->off, p->off + p->len, q->off, q->len);
            if (!ok)
                continue;
            batch[n++] = p;
            bytes += p->len;
        }
        bool go = n > 0 && room_locked(f, bytes);
        if (!go) {
            /* Only flush waits here. A writer over the budget waits before it takes any byte, where an
             * interrupt can still stop it (cio_write_at): a wait here, after its piece joined the queue,
             * could not be interrupted (it hung an interrupted write for as long as the chain was stuck). */
            bool wait = all;
            if (wait)
                pthread_cond_wait(&f->cv, &f->mu); /* a completion makes room or ends an overlap */
            pthread_mutex_unlock(&f->mu);
            if (!wait)
                return 0;
            continue;
        }
        pthread_mutex_unlock(&f->mu);
        /* Unlink the batch (pieces are only touched under op_mu, which we hold). */
        for (uint32_t i = 0; i < n; i++) {
            struct pend **pp = &f->pend;
            while (*pp != batch[i])
                pp = &(*pp)->next;
            *pp = batch[i]->next;
            f->npend--;
            f->pend_bytes -= batch[i]->len;
        }
        f->pend_tail = &f->pend;
        while (*f->pend_tail)
            f->pend_tail = &(*f->pend_tail)->next;
        qsort(batch, n, sizeof(batch[0]), pend_cmp);
        int r = send_pieces(f, index, batch, n);
        if (r)
            return r;
    }
    return 0;
}

/* Close the open piece: it joins the waiting pieces, which go out as room allows (pump); op_mu held. */
static int wbuf_send(struct cio_file *f)
{
    if (!f->wb_len)
        return 0;
    uint64_t off = f->wb_off;
    uint32_t len = (uint32_t)f->wb_len;
    f->wb_len = 0;
    /* A small piece waits in a copy of its own size and the 1 MiB buffer stays for the next one: 64 small
     * pieces must not pin 64 MiB. */
    struct pend *p = xcalloc(1, sizeof(*p));
    p->off = off;
    p->len = len;
    p->pooled = len > SMALL_PIECE;
    if (p->pooled) {
        p->data = f->wbuf;
        f->wbuf = NULL;
    } else {
        p->data = xmalloc(len);
        memcpy(p->data, f->wbuf, len);
    }
    *f->pend_tail = p;
    f->pend_tail = &p->next;
    f->npend++;
    f->pend_bytes += len;
    return pump(f, false);
}

/* Every chunk record of the file (records live until the file is freed); caller frees the array. */
static struct cchunk **chunks_all(struct cio_file *f, size_t *n)
{
    size_t cap = 16;
    struct cchunk **v = xmalloc(cap * sizeof(*v));
    *n = 0;
    pthread_mutex_lock(&f->mu);
    for (int b = 0; b < NBUCKETS; b++)
        for (struct cchunk *ch = f->buckets[b]; ch; ch = ch->next) {
            if (*n == cap)
                v = xrealloc(v, (cap *= 2) * sizeof(*v));
            v[(*n)++] = ch;
        }
    pthread_mutex_unlock(&f->mu);
    return v;
}

/* ChunkWriteDone for every chunk owing it; op_mu held. */
static int write_done_all(struct cio_file *f, bool release)
{
    int rc = 0;
    size_t nch;
    struct cchunk **all = chunks_all(f, &nch);
    for (size_t k = 0; k < nch; k++) {
        struct cchunk *ch = all[k];
        {
            pthread_mutex_lock(&f->mu);
            bool dirty = ch->dirty, send = dirty || (release && ch->wopen);
            struct loc l = ch->loc;
            uint64_t wend = ch->wend;
            ch->dirty = false;
            pthread_mutex_unlock(&f->mu);
            if (!send)
                continue;
            Synod__V1__ChunkWriteDoneReq req = SYNOD__V1__CHUNK_WRITE_DONE_REQ__INIT;
            req.ino = f->ino;
            req.index = ch->index;
            req.chunk_id = l.chunk_id;
            req.version = l.version;
            req.new_size = wend;
            req.mtime_ns = clk_real_ns();
            req.release_lease = release;
            /* A clean lease is returned without touching size or mtime, so another client can write the
             * chunk at once instead of waiting for the lease to lapse. */
            req.release_only = !dirty;
            ProtobufCMessage *m;
            int r = mc_call(f->c->mc, "ChunkWriteDone", &req.base, 0, &m);
            if (r == 0) {
                Synod__V1__AttrRep *rep = (Synod__V1__AttrRep *)m;
                if (rep->attr) {
                    pthread_mutex_lock(&f->mu);
                    f->meta_size = rep->attr->size;
                    pthread_mutex_unlock(&f->mu);
                }
                rpc_message_free(m);
                if (release)
                    ch->wopen = false;
            } else if (!dirty) { /* only returning a lease: if that fails it simply lapses */
                LOG_DEBUG("%s: returning the write lease of inode %llu chunk %llu v%u", err_name(r),
                          (unsigned long long)f->ino, (unsigned long long)l.chunk_id, l.version);
                ch->wopen = false;
            } else {
                LOG_ERR("%s: ChunkWriteDone of inode %llu chunk %llu v%u failed", err_name(r),
                        (unsigned long long)f->ino, (unsigned long long)l.chunk_id, l.version);
                pthread_mutex_lock(&f->mu);
                ch->dirty = true;
                pthread_mutex_unlock(&f->mu);
                ch->wopen = false;
                rc = rc ? rc : (r == -ESTALE ? -EIO : r);
            }
        }
    }
    free(all);
    f->last_done = clk_mono_ns();
    return rc;
}

/* The chain Fsync of l's chunk (chain points into l's replicas via the arrays given). */
static void fsync_req_fill(Synod__V1__FsyncReq *req, const struct loc *l, Synod__V1__ChunkserverAddr *chain,
                           Synod__V1__ChunkserverAddr **pchain)
{
    synod__v1__fsync_req__init(req);
    req->to_uuid = (char *)l->rep[0].uuid;
    req->chunk_id = l->chunk_id;
    req->version = l->version;
    req->n_chain = chain_fill(l, chain, pchain);
    req->chain = pchain;
}

/* One chunk's chain Fsync after a first attempt that failed with err (detail): drop a replica the failure
 * names (reported to the metaserver) and try the rest, back off and retry otherwise, until `deadline`.
 * Returns 0 or the error for the caller. */
static int fsync_retry(struct cio_file *f, struct cchunk *ch, struct loc l, int err, const char *detail,
                       uint64_t deadline)
{
    struct cio *c = f->c;
    uint32_t backoff = 20;
    char d[256];
    snprintf(d, sizeof(d), "%s", detail);
    for (;;) {
        int rerr;
        uint32_t bad = failed_replica(err, d, l.rep[0].id, &rerr);
        LOG_WARN("%s: fsync of chunk %llu v%u failed: %s", err_name(err), (unsigned long long)l.chunk_id,
                 l.version, d);
        bool retry_now = false;
        if (bad != UINT32_MAX && l.nrep > 1) {
            /* Drop the failed replica from the chain; the others still hold the data. */
            report_bad(f, l.chunk_id, l.version, bad, rerr);
            uint32_t kept = 0;
            for (uint32_t i = 0; i < l.nrep; i++)
                if (l.rep[i].id != bad)
                    l.rep[kept++] = l.rep[i];
            if (kept < l.nrep) {
                l.nrep = kept;
                ch->wopen = false; /* the version moved on: reopen before the next write */
                retry_now = true;
            }
        }
        if (!retry_now) {
            if (past(deadline) || fatal_write_err(rerr))
                return fatal_write_err(rerr) ? rerr : -EIO;
            backoff_sleep(&backoff);
        }
        Synod__V1__FsyncReq req;
        Synod__V1__ChunkserverAddr chain[MAX_REPL];
        Synod__V1__ChunkserverAddr *pchain[MAX_REPL];
        fsync_req_fill(&req, &l, chain, pchain);
        ProtobufCMessage *m;
        struct rpc_status st;
        err = rpc_call(rpc_channel_get(l.rep[0].addr), &synod__v1__chunk_data__descriptor, "Fsync", &req.base,
                       NULL, c->cfg.rpc_timeout_ms, &m, &st);
        rpc_message_free(m);
        if (err == 0)
            return 0;
        snprintf(d, sizeof(d), "%s", st.detail);
    }
}

#define FSYNC_WINDOW 32 /* chain Fsyncs of one file in flight at once */

/* The first round of fsync_all: one asynchronous chain Fsync per chunk, FSYNC_WINDOW in flight at once. */
struct fsync_round {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t left;
};

struct fsync_one {
    struct fsync_round *round;
    struct cchunk *ch;
    struct loc l;
    int err;
    char detail[256];
};

static void fsync_one_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    struct fsync_one *o = arg;
    rpc_message_free(reply);
    o->err = err;
    if (err)
        snprintf(o->detail, sizeof(o->detail), "%s", st ? st->detail : "");
    pthread_mutex_lock(&o->round->mu);
    if (--o->round->left == 0)
        pthread_cond_signal(&o->round->cv);
    pthread_mutex_unlock(&o->round->mu);
}

/* Sync every chunk written since its last sync on every replica of its chain. The chains work in parallel,
 * FSYNC_WINDOW at a time (a file closed after a long write owes one Fsync per 64 MiB chunk: one after the
 * other they cost a chain round trip each); a chunk whose Fsync fails is then retried alone (fsync_retry),
 * all within io_timeout_ms. op_mu held. */
static int fsync_all(struct cio_file *f)
{
    struct cio *c = f->c;
    size_t nch;
    struct cchunk **all = chunks_all(f, &nch);
    struct fsync_one *ones = xcalloc(nch ? nch : 1, sizeof(*ones));
    struct fsync_round round = {.left = 0};
    pthread_mutex_init(&round.mu, NULL);
    pthread_cond_init(&round.cv, NULL);
    size_t n = 0;
    pthread_mutex_lock(&f->mu);
    for (size_t k = 0; k < nch; k++) {
        if (!all[k]->unsynced)
            continue;
        all[k]->unsynced = false;
        ones[n] = (struct fsync_one){.round = &round, .ch = all[k], .l = all[k]->loc};
        n++;
    }
    pthread_mutex_unlock(&f->mu);
    uint64_t deadline = deadline_after(c->cfg.io_timeout_ms);
    for (size_t i = 0; i < n; i++) {
        if (i % FSYNC_WINDOW == 0) {
            pthread_mutex_lock(&round.mu);
            while (round.left)
                pthread_cond_wait(&round.cv, &round.mu);
            round.left = MIN(n - i, (size_t)FSYNC_WINDOW);
            pthread_mutex_unlock(&round.mu);
        }
        Synod__V1__FsyncReq req;
        Synod__V1__ChunkserverAddr chain[MAX_REPL];
        Synod__V1__ChunkserverAddr *pchain[MAX_REPL];
        fsync_req_fill(&req, &ones[i].l, chain, pchain);
        rpc_call_async(rpc_channel_get(ones[i].l.rep[0].addr), &synod__v1__chunk_data__descriptor, "Fsync",
                       &req.base, NULL, c->cfg.rpc_timeout_ms, fsync_one_done, &ones[i]);
    }
    pthread_mutex_lock(&round.mu);
    while (round.left)
        pthread_cond_wait(&round.cv, &round.mu);
    pthread_mutex_unlock(&round.mu);
    pthread_cond_destroy(&round.cv);
    pthread_mutex_destroy(&round.mu);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (ones[i].err == 0)
            continue;
        int r = fsync_retry(f, ones[i].ch, ones[i].l, ones[i].err, ones[i].detail, deadline);
        rc = rc ? rc : r;
    }
    free(ones);
    free(all);
    return rc;
}

static bool idle_locked(const struct cio_file *f, size_t room_for)
{
    return room_for ? room_locked(f, room_for) : f->ninflight == 0;
}

/* Wait until no write of the file is in flight (room_for == 0) or there is room for a piece of room_for
 * bytes, or `cancel` fires (-EINTR); op_mu held, nothing sent. */
static int wait_idle(struct cio_file *f, size_t room_for, struct rpc_cancel *cancel)
{
    struct rpc_cancel_hook hook;
    if (!rpc_cancel_hook_add(cancel, &hook, wake_file, f))
        return -EINTR;
    pthread_mutex_lock(&f->mu);
    while (!idle_locked(f, room_for) && !rpc_cancel_triggered(cancel))
        pthread_cond_wait(&f->cv, &f->mu);
    int r = idle_locked(f, room_for) ? 0 : -EINTR;
    pthread_mutex_unlock(&f->mu);
    rpc_cancel_hook_del(cancel, &hook);
    return r;
}

/* Wait until a write in flight ends (or none is in flight), or `cancel` fires (-EINTR); op_mu held. */
static int wait_done(struct cio_file *f, struct rpc_cancel *cancel)
{
    struct rpc_cancel_hook hook;
    if (!rpc_cancel_hook_add(cancel, &hook, wake_file, f))
        return -EINTR;
    pthread_mutex_lock(&f->mu);
    uint64_t d = f->ndone;
    while (f->ndone == d && f->ninflight && !rpc_cancel_triggered(cancel))
        pthread_cond_wait(&f->cv, &f->mu);
    int r = f->ndone != d || !f->ninflight ? 0 : -EINTR;
    pthread_mutex_unlock(&f->mu);
    rpc_cancel_hook_del(cancel, &hook);
    return r;
}

/* The interrupt rule of the write side: an interrupted write, flush or fsync returns -EINTR only while it
 * has sent nothing itself (it may have been waiting for writes sent earlier, which go on and whose errors
 * stay sticky); from its first send on it completes, bounded by io_timeout_ms like any write. So the
 * application never sees EINTR for data that was half pushed by the interrupted call, and acknowledged
 * data is never dropped. */
static int flush_locked(struct cio_file *f, bool fsync, bool release, struct rpc_cancel *cancel)
{
    if (cancel) {
        int r0 = wait_idle(f, 0, cancel);
        if (r0)
            return r0;
    }
    f->flush_sync = fsync;
    f->flush_cancel = cancel;
    int r = wbuf_send(f);
    if (!r)
        r = pump(f, true);
    f->flush_sync = false;
    int r2 = r == -EINTR ? r : drain(f);
    f->flush_cancel = NULL;
    r = r ? r : r2;
    if (r == -EINTR)
        return r; /* interrupted: what is not stored yet stays queued (drain) for the next flush */
    if (fsync) {
        r2 = fsync_all(f);
        r = r ? r : r2;
    }
    r2 = write_done_all(f, release);
    r = r ? r : r2;
    pthread_mutex_lock(&f->mu);
    if (!f->ninflight && !f->failed && !f->wb_len && !f->pend) {
        bool dirty = false;
        for (int b = 0; b < NBUCKETS && !dirty; b++)
            for (struct cchunk *ch = f->buckets[b]; ch; ch = ch->next)
                dirty |= ch->dirty;
        if (!dirty)
            f->local_end = 0;
    }
    if (!r)
        r = f->err;
    f->err = 0;
    pthread_mutex_unlock(&f->mu);
    return r;
}

int cio_flush(struct cio_file *f, bool fsync, bool release)
{
    return cio_flush_cancellable(f, fsync, release, NULL);
}

int cio_flush_cancellable(struct cio_file *f, bool fsync, bool release, struct rpc_cancel *cancel)
{
    pthread_mutex_lock(&f->op_mu);
    int r = flush_locked(f, fsync, release, cancel);
    pthread_mutex_unlock(&f->op_mu);
    return r;
}

static int write_locked(struct cio_file *f, uint64_t off, const uint8_t *buf, size_t len)
{
    struct cio *c = f->c;
    pthread_mutex_lock(&f->mu);
    int err = f->err;
    f->err = 0;
    ra_drop_locked(f, 0);
    f->local_end = MAX(f->local_end, off + len);
    pthread_mutex_unlock(&f->mu);
    if (err)
        return err;
    while (len) {
        /* Pieces end on 1 MiB boundaries of the file (which divide chunks), so the pieces of a sequential
         * stream never share a block and travel in parallel even when the stream starts unaligned. */
        if (f->wb_len && (off != f->wb_off + f->wb_len || off / CIO_MAX_IO != f->wb_off / CIO_MAX_IO)) {
            int r = wbuf_send(f);
            if (r)
                return r;
        }
        if (!f->wb_len) {
            if (!f->wbuf)
                f->wbuf = buf_get(c);
            f->wb_off = off;
        }
        uint64_t lim = (f->wb_off / CIO_MAX_IO + 1) * CIO_MAX_IO;
        size_t n = (size_t)MIN((uint64_t)len, lim - off);
        memcpy(f->wbuf + f->wb_len, buf, n);
        f->wb_len += n;
        off += n;
        buf += n;
        len -= n;
        if (f->wb_off + f->wb_len == lim) {
            int r = wbuf_send(f);
            if (r)
                return r;
        }
    }
    if (clk_mono_ns() - f->last_done > (uint64_t)c->cfg.writedone_ms * NS_PER_MS) {
        /* Let other clients see the size grow during a long write: complete what has landed. */
        int r = write_done_all(f, false);
        if (r)
            return r;
    }
    return 0;
}

int cio_write(struct cio_file *f, uint64_t off, const void *buf, size_t len)
{
    return cio_write_cancellable(f, off, buf, len, NULL);
}

int cio_write_cancellable(struct cio_file *f, uint64_t off, const void *buf, size_t len,
                          struct rpc_cancel *cancel)
{
    return cio_write_at(f, &off, false, buf, len, cancel);
}

int cio_write_at(struct cio_file *f, uint64_t *off, bool append, const void *buf, size_t len,
                 struct rpc_cancel *cancel)
{
    pthread_mutex_lock(&f->op_mu);
    /* The one wait of a write, interruptible (see flush_locked): room in flight when the pieces waiting to be
     * sent are over their budget, before any byte is taken. So the queue exceeds its budget by at most one
     * write's pieces. */
    while (pend_full(f)) {
        int r = wait_done(f, cancel);
        if (!r)
            r = pump(
                f, false); /* what fits now (earlier writes' pieces: this call has sent nothing of its own) */
        if (r) {
            pthread_mutex_unlock(&f->op_mu);
            return r;
        }
    }
    if (append) /* under op_mu: two appenders of this client never pick the same end */
        *off = cio_file_size(f);
    int r = write_locked(f, *off, buf, len);
    pthread_mutex_unlock(&f->op_mu);
    return r;
}

int cio_truncate_prepare(struct cio_file *f, uint64_t new_size)
{
    static const uint8_t zeros[CIO_MAX_IO];
    pthread_mutex_lock(&f->op_mu);
    /* Leases returned: the metaserver drops the chunks past the new end (and their leases), so a write
     * after the truncate must reopen its chunk rather than reuse a dropped one. */
    int r = flush_locked(f, false, true, NULL);
    if (r)
        goto out;
    uint64_t old = cio_file_size(f);
    if (new_size >= old || new_size % CIO_CHUNK_SIZE == 0)
        goto out;
    struct loc l;
    r = loc_get(f, new_size / CIO_CHUNK_SIZE, &l, NULL);
    if (r || l.chunk_id == 0)
        goto out;
    uint64_t end = MIN(old, (new_size / CIO_CHUNK_SIZE + 1) * CIO_CHUNK_SIZE);
    for (uint64_t p = new_size; p < end && !r;) {
        size_t n = (size_t)MIN(end - p, (uint64_t)CIO_MAX_IO - p % CIO_MAX_IO);
        r = write_locked(f, p, zeros, n);
        p += n;
    }
    if (!r)
        r = flush_locked(f, false, true, NULL);
out:
    pthread_mutex_unlock(&f->op_mu);
    return r;
}
