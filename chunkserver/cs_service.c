/* cs_service.c - the ChunkData service: chain write (head and replicas), read, copy and fsync.
 *
 * WRITE PATH. The client sends plain data to the head with the CRC32C of that data: one run of bytes, or a
 * batch of runs in one chunk (WriteReq.ranges; the client batches small writes while its pipeline is
 * full). The head checks the CRC. Blocks a run covers whole are encoded here once with a per-thread codec
 * (incompressible blocks are recognised from two small samples, see cstore_encode_block); the at most two
 * partly covered edge blocks of each run stay plain ranges. The head forwards the stored whole blocks and
 * the plain ranges as one WriteBlocks (one lent buffer) to the next replica, then stores its own part while
 * the chain works in parallel: the ranges with cstore_write (merged into its copy of the block), the whole
 * blocks with cstore_write_stored. Every replica does the same with what it receives (the store re-checks
 * every block CRC, the service every range CRC, before writing) and forwards the same receive buffer. A
 * 4 KiB write thus moves 4 KiB per hop (the head used to merge edge blocks, read them back and forward
 * whole 64 KiB blocks: 16x the bytes on every hop). A call is answered when its local step and its forward
 * are done, so the head's answer means every replica has the data (in its page cache; Fsync makes it durable
 * everywhere). A write with `sync` also makes the chunk durable on each replica before that replica answers
 * (write_sync_local), so a writer's last write before close or fsync needs no Fsync pass of its own; the
 * answer's `synced` says every replica did (a replica that predates the flag answers false).
 *
 * Before any of this, a Write passes the head's block gate (below): it runs only when no earlier write
 * touching one of its blocks is still in flight, else it is parked and resumed later, so every replica
 * applies (merges) the writes of one block in the head's order.
 *
 * READ. Stored form (the blocks as stored, the client checks and decodes them), plain bytes, or plain
 * bytes with plain_crc: the store checks the CRC of every stored block the bytes come from, and the reply
 * carries the CRC32C of the bytes returned, so a small read is checked end to end without shipping 64 KiB
 * blocks.
 *
 * Each chained call is a `struct hop`: three references (the handler's local step, the forward's
 * completion, the release of the lent buffer); the last one to drop answers the call. See cs_service.h for
 * how failures are named.
 */
#include "chunkserver/cs_service.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk.pb-c.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"

#define DEFAULT_TIMEOUT_MS 30000 /* a caller without deadline */

struct cs_service {
    struct cstore *store;
    char *self_addr;
    atomic_uint self_id;
    _Atomic(char *) self_uuid; /* set once (cs_service_set_uuid); NULL until then: to_uuid not checked */
    atomic_uint inflight;
    int level; /* zstd level of the head's block encoding */
    pthread_key_t codec_key;

    /* The block gate (see below). */
    pthread_mutex_t gate_mu; /* the gate list, the ready queue, stopping */
    pthread_cond_t gate_cv;  /* wakes the resumer: a gate ready, a new deadline, stop (monotonic clock) */
    struct gate *gates_head, *gates_tail;
    struct gate *ready_head, **ready_tail;
    bool stopping;
    pthread_t resumer;
    atomic_uint parked_total;

    /* Chain failures of writes we headed, for the control client's next heartbeat (fail_mu). */
    pthread_mutex_t fail_mu;
    struct cs_chain_failure *fails;
    size_t nfails;
};

/* ---- the block gate: one head write per block in flight ---------------------------------------------- *
 *
 * The head forwards plain ranges of partly covered blocks (each replica merges them) and whole blocks
 * verbatim. If two writes touching one block were in flight at once, a downstream replica could apply
 * them in the other order than the head did (the two WriteBlocks are independent calls, run on any
 * worker): overlapping bytes, or a range and a whole block, would end differently there, and replicas
 * would diverge with valid CRCs, invisible to the scrubber (cs_chain_overlap_bytes fails without the
 * gate). Every touched block counts; a batched write holds one span per run.
 *
 * So the head admits writes per block range in arrival order: every Write holds a `gate` (chunk id, and
 * the first and last block of each run) from before its local step until its hop is answered, i.e. until
 * every replica answered it (or the chain failed, after which the client drops the failed replica and the
 * version moves on). A write whose range intersects an earlier gate of the same chunk, running or itself
 * waiting, is PARKED: its call is deferred (no worker held: a worker blocked here could be the one the
 * earlier write's chain needs on another server, which would deadlock chains across servers) and its request
 * stays valid because the call is not answered. When a gate leaves, the parked gates that no longer intersect
 * any earlier gate become ready, in arrival order, and the service's resumer thread runs them. A parked write
 * that is still waiting shortly before its deadline (the same 10 % margin as a forward) fails with EBUSY and
 * a detail naming the block; the detail names no replica, because no replica is at fault, so the client backs
 * off and retries instead of reporting the head bad.
 *
 * Gates live in one list under one mutex: writes in flight on a head number in the tens, and the scan is
 * a few comparisons each. */

struct span {
    uint32_t first, last; /* block range, inclusive */
};

struct gate {
    struct gate *prev, *next; /* arrival order, svc->gate_mu */
    struct gate *ready_next;  /* svc->ready queue */
    uint64_t chunk_id;
    uint32_t first, last; /* bounds of the spans */
    size_t nspan;         /* >= 1; several for a batched write (one per run, ascending, disjoint) */
    struct span *spans;   /* &one, or an array of its own */
    struct span one;
    bool parked;
    /* a parked write */
    struct rpc_call *call;
    const Synod__V1__WriteReq *req; /* borrowed from the call, valid until it is answered */
    uint64_t expire_ns;             /* monotonic */
    uint32_t block;                 /* the first block it waits for (for the error detail) */
};

/* ---- helpers ----------------------------------------------------------------------------------------- */

static void codec_destroy(void *c)
{
    codec_free(c);
}

static struct codec *thread_codec(struct cs_service *svc)
{
    struct codec *c = pthread_getspecific(svc->codec_key);
    if (!c) {
        c = codec_new(svc->level);
        pthread_setspecific(svc->codec_key, c);
    }
    return c;
}

static int bad_request(struct rpc_call *call, const char *what)
{
    rpc_fail(call, -EINVAL, what);
    return 0;
}

/* A request for another chunkserver (its to_uuid is not ours: we took over the address, e.g. a reused port,
 * or a chunkserver of another cluster): refused with ENXIO, nothing stored, read or forwarded. The sender
 * takes it as that replica failed (a head's own refusal names no id: the client blames its head). */
static bool wrong_target(struct cs_service *svc, struct rpc_call *call, const char *to)
{
    const char *mine = atomic_load(&svc->self_uuid);
    if (!to || !to[0] || !mine || strcmp(mine, to) == 0)
        return false;
    char why[200];
    snprintf(why, sizeof(why), "not the chunkserver addressed: this is %s, the request is for %s", mine, to);
    /* logged at most every 10 s (a client's reads may hit us many times before its locations change) */
    static _Atomic uint64_t last_log_ns, refused;
    uint64_t n = atomic_fetch_add(&refused, 1) + 1, now = clk_mono_ns(), prev = atomic_load(&last_log_ns);
    if ((!prev || now - prev >= 10 * NS_PER_SEC) && atomic_compare_exchange_strong(&last_log_ns, &prev, now))
        LOG_WARN("refused a request from %s: %s (%llu refused so far)", rpc_call_peer(call), why,
                 (unsigned long long)n);
    rpc_fail(call, -ENXIO, why);
    return true;
}

static void name_failure(char *out, size_t n, uint32_t id, const char *addr, int err, const char *more)
{
    snprintf(out, n, "failed=%u:%d addr=%s%s%s", id, -err, addr, more && *more ? ": " : "", more ? more : "");
}

static int64_t hop_timeout_ms(struct rpc_call *call)
{
    int64_t rem = rpc_call_remaining_ms(call);
    if (rem == INT64_MAX)
        rem = DEFAULT_TIMEOUT_MS;
    int64_t margin = MAX(50, MIN(rem / 10, 2000));
    return rem - margin;
}

static int check_chain(Synod__V1__ChunkserverAddr *const *chain, size_t n, char *why, size_t whylen)
{
    if (n > CS_MAX_CHAIN) {
        snprintf(why, whylen, "chain of %zu replicas (at most %d)", n, CS_MAX_CHAIN);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!chain[i] || !chain[i]->addr || !chain[i]->addr[0] || strlen(chain[i]->addr) > 255) {
            snprintf(why, whylen, "chain[%zu]: empty or overlong address", i);
            return -EINVAL;
        }
    }
    return 0;
}

static int check_range(uint64_t offset, uint64_t length, char *why, size_t whylen)
{
    if (length > CS_MAX_IO) {
        snprintf(why, whylen, "length %" PRIu64 " over the %u-byte limit per call", length, CS_MAX_IO);
        return -EINVAL;
    }
    if (offset > CSTORE_CHUNK_SIZE || length > CSTORE_CHUNK_SIZE - offset) {
        snprintf(why, whylen, "range %" PRIu64 "+%" PRIu64 " outside the chunk", offset, length);
        return -EINVAL;
    }
    return 0;
}

/* Wire blocks -> store blocks, validating what the store would also reject (so the error says why). */
static int blocks_from_wire(Synod__V1__StoredBlock *const *in, size_t n, size_t data_len,
                            struct cstore_block **out, char *why, size_t whylen)
{
    if (n > CSTORE_BLOCKS) {
        snprintf(why, whylen, "%zu blocks (at most %u)", n, CSTORE_BLOCKS);
        return -EINVAL;
    }
    struct cstore_block *b = xmalloc((n ? n : 1) * sizeof(*b));
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        const Synod__V1__StoredBlock *w = in[i];
        if (!w || w->index >= CSTORE_BLOCKS || w->raw_len == 0 || w->raw_len > CSTORE_BLOCK_SIZE ||
            w->stored_len > CSTORE_BLOCK_SIZE || w->flags > CODEC_ZSTD ||
            (w->flags == CODEC_RAW && w->stored_len != w->raw_len)) {
            snprintf(why, whylen, "block descriptor %zu is malformed", i);
            free(b);
            return -EINVAL;
        }
        b[i] = (struct cstore_block){.index = w->index,
                                     .raw_len = w->raw_len,
                                     .stored_len = w->stored_len,
                                     .crc = w->crc,
                                     .flags = w->flags};
        sum += w->stored_len;
    }
    if (sum != data_len) {
        snprintf(why, whylen, "block lengths sum to %" PRIu64 " but data has %zu bytes", sum, data_len);
        free(b);
        return -EINVAL;
    }
    *out = b;
    return 0;
}

/* Store blocks -> wire blocks: one array of messages plus the pointer array protobuf-c wants. */
struct wire_blocks {
    Synod__V1__StoredBlock *msgs;
    Synod__V1__StoredBlock **ptrs;
};

static void wire_blocks_init(struct wire_blocks *w, const struct cstore_block *b, size_t n)
{
    w->msgs = xmalloc((n ? n : 1) * sizeof(*w->msgs));
    w->ptrs = xmalloc((n ? n : 1) * sizeof(*w->ptrs));
    for (size_t i = 0; i < n; i++) {
        synod__v1__stored_block__init(&w->msgs[i]);
        w->msgs[i].index = b[i].index;
        w->msgs[i].raw_len = b[i].raw_len;
        w->msgs[i].stored_len = b[i].stored_len;
        w->msgs[i].crc = b[i].crc;
        w->msgs[i].flags = b[i].flags;
        w->ptrs[i] = &w->msgs[i];
    }
}

static void wire_blocks_destroy(struct wire_blocks *w)
{
    free(w->msgs);
    free(w->ptrs);
}

/* ---- a chained call ---------------------------------------------------------------------------------- */

enum hop_kind { HOP_WRITE, HOP_FSYNC };

struct hop {
    struct cs_service *svc;
    struct rpc_call *call;
    enum hop_kind kind;
    atomic_int refs;
    uint64_t chunk_id;
    uint32_t version;
    int local_err;
    char local_detail[256];
    int down_err;
    char down_detail[512];
    uint64_t chunk_len; /* after the local step (Write/WriteBlocks) */
    uint32_t next_id;
    char next_addr[256];
    bool forwarded;    /* the forward was started: replicas may now hold the write, or not */
    bool local_synced; /* a write with sync: this node synced the chunk after writing it */
    bool down_synced;  /* ... and the next replica answered synced */
    void *owned;       /* buffer lent to the forward (head only), freed with the hop */
    struct gate *gate; /* head only: the write's block range, released when the hop is answered */
};

static struct hop *hop_new(struct cs_service *svc, struct rpc_call *call, enum hop_kind kind, uint64_t id,
                           uint32_t version)
{
    struct hop *h = xcalloc(1, sizeof(*h));
    atomic_fetch_add(&svc->inflight, 1);
    h->svc = svc;
    h->call = call;
    h->kind = kind;
    h->chunk_id = id;
    h->version = version;
    atomic_init(&h->refs, 1); /* the handler's */
    return h;
}

/* Record the result of this node's own step; after a successful write also the chunk length (taken here,
 * on the worker, because the answer may be sent from the dispatcher thread, which must not block). */
static void hop_local(struct hop *h, int r, const char *what)
{
    if (!r && h->kind == HOP_WRITE)
        cstore_length(h->svc->store, h->chunk_id, h->version, &h->chunk_len);
    if (!r || h->local_err)
        return;
    h->local_err = r;
    snprintf(h->local_detail, sizeof(h->local_detail), "%s chunk %016" PRIx64 " v%u: %s", what, h->chunk_id,
             h->version, err_name(r));
}

/* ---- the block gate (functions) ---------------------------------------------------------------------- */

static bool gate_overlaps(const struct gate *a, const struct gate *b)
{
    if (a->chunk_id != b->chunk_id || a->first > b->last || b->first > a->last)
        return false;
    for (size_t i = 0, j = 0; i < a->nspan && j < b->nspan;) { /* both ascending: one merge walk */
        const struct span *x = &a->spans[i], *y = &b->spans[j];
        if (x->last < y->first)
            i++;
        else if (y->last < x->first)
            j++;
        else
            return true;
    }
    return false;
}

static void gate_free(struct gate *g)
{
    if (g->spans != &g->one)
        free(g->spans);
    free(g);
}

/* The nearest earlier gate that g must wait for, or NULL. */
static const struct gate *gate_blocker_locked(const struct gate *g)
{
    for (const struct gate *x = g->prev; x; x = x->prev)
        if (gate_overlaps(x, g))
            return x;
    return NULL;
}

static void gate_unlink_locked(struct cs_service *svc, struct gate *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        svc->gates_head = g->next;
    if (g->next)
        g->next->prev = g->prev;
    else
        svc->gates_tail = g->prev;
    g->prev = g->next = NULL;
}

/* Move every parked gate that no earlier gate blocks any more to the ready queue, in arrival order. */
static void gate_wake_locked(struct cs_service *svc)
{
    bool any = false;
    for (struct gate *g = svc->gates_head; g; g = g->next) {
        if (!g->parked || gate_blocker_locked(g))
            continue;
        g->parked = false;
        g->ready_next = NULL;
        *svc->ready_tail = g;
        svc->ready_tail = &g->ready_next;
        any = true;
    }
    if (any)
        pthread_cond_signal(&svc->gate_cv);
}

/* A write's hop was answered: its blocks are free. Non-blocking (may run on the RPC dispatcher). */
static void gate_leave(struct cs_service *svc, struct gate *g)
{
    pthread_mutex_lock(&svc->gate_mu);
    gate_unlink_locked(svc, g);
    gate_wake_locked(svc);
    pthread_mutex_unlock(&svc->gate_mu);
    gate_free(g);
}

/* Answer a write that never ran (expired or shut down) and free its gate, which is no longer listed. */
static void gate_fail(struct gate *g, int err, const char *why)
{
    char d[200];
    snprintf(d, sizeof(d), "write %s on block %u of chunk %016" PRIx64, why, g->block, g->chunk_id);
    rpc_fail(g->call, err, d);
    gate_free(g);
}

/* Record a replica that failed a write we headed once the chain had started: some replicas may hold the
 * write and this one not (or the reverse). The writer reports it too, but it may die first; then the
 * metaserver learns it from our heartbeat and drops the replica (bumping the version), so a divergent copy
 * never stays in the set. */
static void chain_failure_add(struct cs_service *svc, uint64_t chunk_id, uint32_t version, uint32_t cs,
                              int err)
{
    if (cs == 0)
        return; /* not registered yet: no id to name */
    pthread_mutex_lock(&svc->fail_mu);
    if (svc->nfails == CS_MAX_CHAIN_FAILURES) {
        memmove(svc->fails, svc->fails + 1, (svc->nfails - 1) * sizeof(*svc->fails));
        svc->nfails--;
    }
    if (!svc->fails)
        svc->fails = xmalloc(CS_MAX_CHAIN_FAILURES * sizeof(*svc->fails));
    svc->fails[svc->nfails++] = (struct cs_chain_failure){chunk_id, version, cs, err};
    pthread_mutex_unlock(&svc->fail_mu);
    LOG_WARN("chunk %016" PRIx64 " v%u: chain write failed on chunkserver %u (%s): reporting it", chunk_id,
             version, cs, err_name(err));
}

void cs_service_take_chain_failures(struct cs_service *svc, struct cs_chain_failure **out, size_t *n)
{
    pthread_mutex_lock(&svc->fail_mu);
    *out = svc->fails;
    *n = svc->nfails;
    svc->fails = NULL;
    svc->nfails = 0;
    pthread_mutex_unlock(&svc->fail_mu);
}

/* The replica a "failed=<id>:<errno> ..." detail names; 0 if none. */
static uint32_t named_replica(const char *detail, int *err)
{
    if (strncmp(detail, "failed=", 7) != 0)
        return 0;
    char *end;
    unsigned long id = strtoul(detail + 7, &end, 10);
    if (*end == ':')
        *err = -(int)strtol(end + 1, NULL, 10);
    return id <= UINT32_MAX ? (uint32_t)id : 0;
}

static void hop_answer(struct hop *h)
{
    struct cs_service *svc = h->svc;
    if (h->kind == HOP_WRITE && h->forwarded) {
        if (h->local_err)
            chain_failure_add(svc, h->chunk_id, h->version, atomic_load(&svc->self_id), h->local_err);
        if (h->down_err) {
            int e = h->down_err;
            uint32_t id = named_replica(h->down_detail, &e);
            chain_failure_add(svc, h->chunk_id, h->version, id ? id : h->next_id, e);
        }
    }
    if (h->local_err) {
        char d[300];
        name_failure(d, sizeof(d), atomic_load(&svc->self_id), svc->self_addr, h->local_err, h->local_detail);
        rpc_fail(h->call, h->local_err, d);
    } else if (h->down_err) {
        if (strncmp(h->down_detail, "failed=", 7) == 0) {
            rpc_fail(h->call, h->down_err, h->down_detail); /* named further down the chain */
        } else {
            /* The next hop failed without naming anyone: it is the one that failed. */
            int e = h->down_err;
            bool transport = e == -ENOTCONN || e == -ETIMEDOUT || e == -ECANCELED || e == -ENOSYS ||
                             e == -EBADMSG || e == -EMSGSIZE;
            char d[800];
            name_failure(d, sizeof(d), h->next_id, h->next_addr, e, h->down_detail);
            rpc_fail(h->call, transport ? -EIO : e, d);
        }
    } else {
        Synod__V1__WriteRep rep = SYNOD__V1__WRITE_REP__INIT;
        rep.chunk_len = h->chunk_len;
        rep.synced = h->kind == HOP_WRITE && h->local_synced && (!h->forwarded || h->down_synced);
        rpc_reply(h->call, &rep.base);
    }
    if (h->gate)
        gate_leave(svc, h->gate);
    atomic_fetch_sub(&svc->inflight, 1);
    free(h->owned);
    free(h);
}

static void hop_put(struct hop *h)
{
    if (atomic_fetch_sub(&h->refs, 1) == 1)
        hop_answer(h);
}

static void hop_release(void *arg)
{
    hop_put(arg);
}

static void hop_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    struct hop *h = arg;
    if (err) {
        h->down_err = err;
        snprintf(h->down_detail, sizeof(h->down_detail), "%s", st ? st->detail : "");
    } else if (h->kind == HOP_WRITE && reply) {
        h->down_synced = ((const Synod__V1__WriteRep *)reply)->synced;
    }
    rpc_message_free(reply);
    hop_put(h);
}

/* Start forwarding `req` (method on ChunkData) to `next`; `data` (may be NULL) is lent until released. */
static void hop_forward(struct hop *h, const Synod__V1__ChunkserverAddr *next, const char *method,
                        const ProtobufCMessage *req, const void *data, size_t len)
{
    h->next_id = next->id;
    snprintf(h->next_addr, sizeof(h->next_addr), "%s", next->addr);
    int64_t tmo = hop_timeout_ms(h->call);
    if (tmo <= 0) {
        h->down_err = -ETIMEDOUT;
        snprintf(h->down_detail, sizeof(h->down_detail), "no time left to forward");
        return;
    }
    h->forwarded = true;
    atomic_fetch_add(&h->refs, 1);
    /* Never an empty bulk field (see reply_bulk). */
    struct rpc_payload p = {.data = data, .len = len, .release = hop_release, .ctx = h};
    if (len)
        atomic_fetch_add(&h->refs, 1);
    rpc_call_async(rpc_channel_get(next->addr), &synod__v1__chunk_data__descriptor, method, req,
                   len ? &p : NULL, tmo, hop_done, h);
}

/* ---- Write (head) ------------------------------------------------------------------------------------ */

/* Bring the local copy to `version` before a write, fsync, read or copy at that version.
 *
 * The metaserver bumps a chunk's version when it grants a write lease or drops a failed replica, in the
 * same command that fixes the replica set, and it hands out version V only together with V's replica set.
 * A replica stays in the set only while no write it took part in failed (a failure removes it and bumps
 * the version). So a request at V reaching a local copy at an OLDER version comes from a member that simply
 * has not been written since the bump: its data is current and the copy moves forward (an atomic rename).
 * A NEWER local version means the request itself is stale (-ESTALE: the client refreshes its locations).
 * A replica dropped from the set keeps its old version and is found stale by the metaserver's report
 * reconciliation. `create` makes a missing chunk. Concurrent upgrades race benignly: the loser sees the
 * new version on its second look. */
static int adopt_version(struct cs_service *svc, bool create, uint64_t id, uint32_t version)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        uint32_t have;
        int r = cstore_version(svc->store, id, &have);
        if (r == -ENOENT) {
            if (!create)
                return -ENOENT;
            r = cstore_create(svc->store, id, version);
            if (r != -EEXIST)
                return r;
            continue; /* someone created it meanwhile: look again */
        }
        if (r)
            return r;
        if (have == version)
            return 0;
        if (have > version)
            return -ESTALE;
        r = cstore_set_version(svc->store, id, have, version);
        if (r == 0) {
            LOG_INFO("chunk 0x%" PRIx64 ": version %u -> %u (a request at the newer one)", id, have, version);
            return 0;
        }
        if (r != -ESTALE && r != -ENOENT)
            return r;
    }
    return -ESTALE;
}

struct range {
    uint64_t off, len;
};

/* The runs of a Write: [offset, offset+length), or its `ranges` (a batched write), with their bytes in
 * data in order. Checks what the wire contract promises: a batch has offset and length 0, at most
 * CS_MAX_RUNS non-empty runs inside the chunk, ascending, no two in one block, adding up to data. Caller
 * frees *out. */
static int write_runs(const Synod__V1__WriteReq *req, struct range **out, size_t *n, char *why, size_t whylen)
{
    if (req->n_ranges == 0) {
        if (check_range(req->offset, req->length, why, whylen))
            return -EINVAL;
        if (req->data.len != req->length) {
            snprintf(why, whylen, "length %u but %zu data bytes", req->length, req->data.len);
            return -EINVAL;
        }
        *out = xmalloc(sizeof(**out));
        (*out)[0] = (struct range){req->offset, req->length};
        *n = req->length ? 1 : 0;
        return 0;
    }
    if (req->offset || req->length || req->n_ranges > CS_MAX_RUNS) {
        snprintf(why, whylen, "batched write with offset/length set or %zu runs (at most %u)", req->n_ranges,
                 CS_MAX_RUNS);
        return -EINVAL;
    }
    struct range *r = xmalloc(req->n_ranges * sizeof(*r));
    uint64_t sum = 0;
    for (size_t i = 0; i < req->n_ranges; i++) {
        const Synod__V1__PlainRange *w = req->ranges[i];
        if (!w || w->length == 0 || w->offset > CSTORE_CHUNK_SIZE ||
            w->length > CSTORE_CHUNK_SIZE - w->offset ||
            (i && w->offset / CSTORE_BLOCK_SIZE <= (r[i - 1].off + r[i - 1].len - 1) / CSTORE_BLOCK_SIZE)) {
            snprintf(why, whylen,
                     "run %zu of a batched write is empty, outside the chunk, out of order or in "
                     "the block of the one before",
                     i);
            free(r);
            return -EINVAL;
        }
        r[i] = (struct range){w->offset, w->length};
        sum += w->length;
    }
    if (sum != req->data.len || sum > CS_MAX_IO) {
        snprintf(why, whylen, "runs add up to %" PRIu64 " bytes but data has %zu", sum, req->data.len);
        free(r);
        return -EINVAL;
    }
    *out = r;
    *n = req->n_ranges;
    return 0;
}

/* A write with sync (WriteReq.sync), after this node wrote its part: make the chunk durable here, as an
 * Fsync would (fdatasync, and the directory if the chunk file is new). The next replica does the same in
 * parallel with us (it got the forward first), so the chain pays one round trip for write and sync. */
static void write_sync_local(struct hop *h)
{
    int r = cstore_sync(h->svc->store, h->chunk_id, h->version);
    if (r)
        hop_local(h, r, "sync");
    else
        LOG_DEBUG("chunk %016" PRIx64 " v%u: synced with its write", h->chunk_id, h->version);
    h->local_synced = r == 0;
}

/* The head's write once its gate (may be NULL for an empty write) admits it: merge, forward, store. Runs
 * on a worker, or on the resumer for a write that was parked. Always answers through the hop. */
static int write_run(struct cs_service *svc, struct rpc_call *call, const Synod__V1__WriteReq *req,
                     struct gate *g)
{
    struct hop *h = hop_new(svc, call, HOP_WRITE, req->chunk_id, req->version);
    h->gate = g;
    int r = adopt_version(svc, req->create, req->chunk_id, req->version);
    if (r) {
        hop_local(h, r, "create");
        hop_put(h);
        return RPC_DEFERRED;
    }

    /* Blocks a run covers whole are encoded here once and travel in stored form. The at most two partly
     * covered edge blocks of each run travel as plain ranges that every replica merges into its own copy:
     * forwarding the merged block would cost a read-back here and 64 KiB per hop for a 4 KiB write, and
     * the gate already keeps each block's writes in one order along the chain. */
    char why[200];
    struct range *runs;
    size_t nruns;
    r = write_runs(req, &runs, &nruns, why, sizeof(why));
    ASSERT(r == 0); /* checked by h_write */
    struct cstore_block *blocks = xmalloc((req->data.len / CSTORE_BLOCK_SIZE + 1) * sizeof(*blocks));
    struct range *rg = xmalloc((2 * nruns + 1) * sizeof(*rg));
    const uint8_t **rsrc = xmalloc((2 * nruns + 1) * sizeof(*rsrc));
    uint8_t *buf = xmalloc(req->data.len + 1); /* stored whole blocks are never longer than their input */
    size_t nwhole = 0, nrg = 0, len = 0;
    uint64_t max_end = nruns ? runs[nruns - 1].off + runs[nruns - 1].len : 0; /* runs ascend */
    struct codec *codec = thread_codec(svc);
    const uint8_t *src = req->data.data;
    for (size_t k = 0; k < nruns && !r; src += runs[k].len, k++) {
        uint64_t off = runs[k].off, end = off + runs[k].len;
        uint64_t ws =
            (off + CSTORE_BLOCK_SIZE - 1) / CSTORE_BLOCK_SIZE * CSTORE_BLOCK_SIZE; /* whole blocks */
        uint64_t we = end / CSTORE_BLOCK_SIZE * CSTORE_BLOCK_SIZE;
        if (ws >= we) /* none: one plain range */
            ws = we = end;
        if (off < ws) {
            rsrc[nrg] = src;
            rg[nrg++] = (struct range){off, ws - off};
        }
        for (uint64_t bs = ws; bs < we && !r; bs += CSTORE_BLOCK_SIZE) {
            size_t slen;
            enum codec_flag fl;
            r = cstore_encode_block(codec, src + (bs - off), CSTORE_BLOCK_SIZE, buf + len, &slen, &fl);
            blocks[nwhole++] = (struct cstore_block){.index = (uint32_t)(bs / CSTORE_BLOCK_SIZE),
                                                     .raw_len = CSTORE_BLOCK_SIZE,
                                                     .stored_len = (uint32_t)slen,
                                                     .crc = crc32c(0, buf + len, slen),
                                                     .flags = fl};
            len += slen;
        }
        if (we < end) {
            rsrc[nrg] = src + (we - off);
            rg[nrg++] = (struct range){we, end - we};
        }
    }
    free(runs);
    if (r) {
        hop_local(h, r, "write");
        goto out_free;
    }
    size_t stored_len = len;
    Synod__V1__PlainRange *rmsg = xmalloc((nrg + 1) * sizeof(*rmsg)),
                          **rptr = xmalloc((nrg + 1) * sizeof(*rptr));
    for (size_t i = 0; i < nrg; i++) {
        synod__v1__plain_range__init(&rmsg[i]);
        rmsg[i].offset = rg[i].off;
        rmsg[i].length = (uint32_t)rg[i].len;
        rmsg[i].crc = crc32c(0, rsrc[i], rg[i].len);
        rptr[i] = &rmsg[i];
        if (req->n_chain) /* into the lent buffer, after the stored blocks */
            memcpy(buf + len, rsrc[i], rg[i].len);
        len += rg[i].len;
    }

    h->owned = buf;
    buf = NULL;
    if (req->n_chain) {
        Synod__V1__WriteBlocksReq fw = SYNOD__V1__WRITE_BLOCKS_REQ__INIT;
        struct wire_blocks wb;
        wire_blocks_init(&wb, blocks, nwhole);
        fw.chunk_id = req->chunk_id;
        fw.version = req->version;
        fw.n_blocks = nwhole;
        fw.blocks = wb.ptrs;
        fw.n_ranges = nrg;
        fw.ranges = rptr;
        fw.n_chain = req->n_chain - 1;
        fw.chain = req->chain + 1;
        fw.create = req->create;
        fw.chunk_len = max_end;
        fw.sync = req->sync;
        fw.to_uuid = req->chain[0]->uuid;
        hop_forward(h, req->chain[0], "WriteBlocks", &fw.base, h->owned, len);
        wire_blocks_destroy(&wb);
    }
    free(rmsg);
    free(rptr);
    for (size_t i = 0; i < nrg && !r; i++)
        r = cstore_write(svc->store, req->chunk_id, req->version, rg[i].off, rsrc[i], (size_t)rg[i].len);
    if (nwhole && !r)
        r = cstore_write_stored(svc->store, req->chunk_id, req->version, blocks, nwhole, h->owned,
                                stored_len);
    hop_local(h, r, "write");
    if (!r && req->sync)
        write_sync_local(h);
out_free:
    free(buf);
    free(blocks);
    free(rg);
    free(rsrc);
    hop_put(h);
    return RPC_DEFERRED;
}

static int h_write(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct cs_service *svc = arg;
    const Synod__V1__WriteReq *req = (const Synod__V1__WriteReq *)m;
    char why[200];
    struct range *runs;
    size_t nruns;
    if (wrong_target(svc, call, req->to_uuid))
        return 0;
    if (check_chain(req->chain, req->n_chain, why, sizeof(why)) ||
        write_runs(req, &runs, &nruns, why, sizeof(why)))
        return bad_request(call, why);
    if (crc32c(0, req->data.data, req->data.len) != req->crc) {
        free(runs);
        rpc_fail(call, -EBADMSG, "crc mismatch on the plain data received by the head");
        return 0;
    }
    if (nruns == 0) {
        free(runs);
        return write_run(svc, call, req, NULL); /* touches no block */
    }

    struct gate *g = xcalloc(1, sizeof(*g));
    g->chunk_id = req->chunk_id;
    g->nspan = nruns;
    g->spans = nruns == 1 ? &g->one : xmalloc(nruns * sizeof(*g->spans));
    for (size_t i = 0; i < nruns; i++)
        g->spans[i] = (struct span){(uint32_t)(runs[i].off / CSTORE_BLOCK_SIZE),
                                    (uint32_t)((runs[i].off + runs[i].len - 1) / CSTORE_BLOCK_SIZE)};
    g->first = g->spans[0].first;
    g->last = g->spans[nruns - 1].last;
    free(runs);
    pthread_mutex_lock(&svc->gate_mu);
    g->prev = svc->gates_tail;
    if (svc->gates_tail)
        svc->gates_tail->next = g;
    else
        svc->gates_head = g;
    svc->gates_tail = g;
    const struct gate *x = gate_blocker_locked(g);
    if (!x) {
        pthread_mutex_unlock(&svc->gate_mu);
        return write_run(svc, call, req, g);
    }
    /* Park: deferred, resumed by the resumer thread when the blocks are free, or failed shortly before
     * the caller's deadline (the same margin as a forward, so the answer still arrives). */
    g->call = call;
    g->req = req;
    g->block = MAX(x->first, g->first);
    int64_t tmo = hop_timeout_ms(call);
    bool stopping = svc->stopping;
    if (stopping || tmo <= 0) {
        gate_unlink_locked(svc, g);
        pthread_mutex_unlock(&svc->gate_mu);
        gate_fail(g, stopping ? -ECANCELED : -EBUSY,
                  stopping ? "refused at shutdown: it overlaps a write in flight"
                           : "overlaps a write in flight and has no time left to wait");
        return 0;
    }
    g->expire_ns = clk_mono_ns() + (uint64_t)tmo * NS_PER_MS;
    g->parked = true;
    atomic_fetch_add(&svc->parked_total, 1);
    LOG_DEBUG("chunk %016" PRIx64 ": write of blocks %u..%u parked behind a write in flight on block %u",
              req->chunk_id, g->first, g->last,
              g->block); /* under the lock: g may run and go once it drops */
    pthread_cond_signal(&svc->gate_cv);
    pthread_mutex_unlock(&svc->gate_mu);
    return RPC_DEFERRED;
}

/* The resumer: runs parked writes once their blocks are free, and expires those that waited too long. */
static void *resumer_main(void *arg)
{
    struct cs_service *svc = arg;
    pthread_mutex_lock(&svc->gate_mu);
    while (!svc->stopping) {
        struct gate *g = svc->ready_head;
        if (g) {
            svc->ready_head = g->ready_next;
            if (!svc->ready_head)
                svc->ready_tail = &svc->ready_head;
            pthread_mutex_unlock(&svc->gate_mu);
            write_run(svc, g->call, g->req, g);
            pthread_mutex_lock(&svc->gate_mu);
            continue;
        }
        uint64_t now = clk_mono_ns(), next = UINT64_MAX;
        struct gate *expired = NULL;
        for (struct gate *x = svc->gates_head, *n; x; x = n) {
            n = x->next;
            if (!x->parked)
                continue;
            if (x->expire_ns <= now) {
                gate_unlink_locked(svc, x);
                x->ready_next = expired;
                expired = x;
            } else {
                next = MIN(next, x->expire_ns);
            }
        }
        if (expired) {
            gate_wake_locked(svc); /* a write behind an expired one may be free now */
            pthread_mutex_unlock(&svc->gate_mu);
            for (struct gate *x = expired, *n; x; x = n) {
                n = x->ready_next;
                LOG_WARN("EBUSY: chunk %016" PRIx64 ": write of blocks %u..%u waited on block %u until its "
                         "deadline",
                         x->chunk_id, x->first, x->last, x->block);
                gate_fail(x, -EBUSY, "waited until its deadline for a write in flight");
            }
            pthread_mutex_lock(&svc->gate_mu);
            continue;
        }
        if (next == UINT64_MAX) {
            pthread_cond_wait(&svc->gate_cv, &svc->gate_mu);
        } else {
            struct timespec ts = {.tv_sec = (time_t)(next / NS_PER_SEC),
                                  .tv_nsec = (long)(next % NS_PER_SEC)};
            pthread_cond_timedwait(&svc->gate_cv, &svc->gate_mu, &ts);
        }
    }
    pthread_mutex_unlock(&svc->gate_mu);
    cstore_thread_release();
    return NULL;
}

/* ---- WriteBlocks (replicas) -------------------------------------------------------------------------- */

/* The plain ranges of a WriteBlocks, validated: each inside the chunk, non-empty, its bytes (after the
 * stored blocks' in data) matching its CRC. *out_len = their total length. */
static int ranges_from_wire(Synod__V1__PlainRange *const *in, size_t n, const uint8_t *data, size_t data_len,
                            struct range **out, size_t *out_len, char *why, size_t whylen)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const Synod__V1__PlainRange *w = in[i];
        if (!w || w->length == 0 || w->offset > CSTORE_CHUNK_SIZE ||
            w->length > CSTORE_CHUNK_SIZE - w->offset || w->length > data_len - total) {
            snprintf(why, whylen, "plain range %zu is malformed or overruns the data", i);
            return -EINVAL;
        }
        total += w->length;
    }
    struct range *r = xmalloc((n ? n : 1) * sizeof(*r));
    const uint8_t *p = data + (data_len - total);
    for (size_t i = 0; i < n; i++) {
        if (crc32c(0, p, in[i]->length) != in[i]->crc) {
            snprintf(why, whylen, "crc mismatch on plain range %zu (%u bytes at %" PRIu64 ")", i,
                     in[i]->length, in[i]->offset);
            free(r);
            return -EBADMSG;
        }
        r[i] = (struct range){in[i]->offset, in[i]->length};
        p += in[i]->length;
    }
    *out = r;
    *out_len = total;
    return 0;
}

static int h_write_blocks(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct cs_service *svc = arg;
    const Synod__V1__WriteBlocksReq *req = (const Synod__V1__WriteBlocksReq *)m;
    char why[200];
    struct cstore_block *blocks;
    struct range *ranges;
    size_t plain_len;
    if (wrong_target(svc, call, req->to_uuid))
        return 0;
    if (check_chain(req->chain, req->n_chain, why, sizeof(why)))
        return bad_request(call, why);
    int r = ranges_from_wire(req->ranges, req->n_ranges, req->data.data, req->data.len, &ranges, &plain_len,
                             why, sizeof(why));
    if (r) {
        rpc_fail(call, r, why);
        return 0;
    }
    size_t stored_len = req->data.len - plain_len;
    if (blocks_from_wire(req->blocks, req->n_blocks, stored_len, &blocks, why, sizeof(why))) {
        free(ranges);
        return bad_request(call, why);
    }
    struct hop *h = hop_new(svc, call, HOP_WRITE, req->chunk_id, req->version);
    r = adopt_version(svc, req->create, req->chunk_id, req->version);
    if (r) {
        hop_local(h, r, "create");
        free(blocks);
        free(ranges);
        hop_put(h);
        return RPC_DEFERRED;
    }
    if (req->n_chain) {
        Synod__V1__WriteBlocksReq fw = *req;
        fw.n_chain = req->n_chain - 1;
        fw.chain = req->chain + 1;
        fw.to_uuid = req->chain[0]->uuid;
        fw.data.data = NULL;
        fw.data.len = 0;
        hop_forward(h, req->chain[0], "WriteBlocks", &fw.base, req->data.data, req->data.len);
    }
    if (req->n_blocks)
        r = cstore_write_stored(svc->store, req->chunk_id, req->version, blocks, req->n_blocks,
                                req->data.data, stored_len);
    const uint8_t *p = req->data.data + stored_len;
    for (size_t i = 0; i < req->n_ranges && !r; i++) {
        r = cstore_write(svc->store, req->chunk_id, req->version, ranges[i].off, p, (size_t)ranges[i].len);
        p += ranges[i].len;
    }
    hop_local(h, r, "write");
    if (!r && req->sync)
        write_sync_local(h);
    free(blocks);
    free(ranges);
    hop_put(h);
    return RPC_DEFERRED;
}

/* ---- Fsync ------------------------------------------------------------------------------------------- */

static int h_fsync(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct cs_service *svc = arg;
    const Synod__V1__FsyncReq *req = (const Synod__V1__FsyncReq *)m;
    char why[200];
    if (wrong_target(svc, call, req->to_uuid))
        return 0;
    if (check_chain(req->chain, req->n_chain, why, sizeof(why)))
        return bad_request(call, why);
    struct hop *h = hop_new(svc, call, HOP_FSYNC, req->chunk_id, req->version);
    LOG_DEBUG("chunk %016" PRIx64 " v%u: Fsync, %zu after us", req->chunk_id, req->version, req->n_chain);
    if (req->n_chain) {
        Synod__V1__FsyncReq fw = *req;
        fw.n_chain = req->n_chain - 1;
        fw.chain = req->chain + 1;
        fw.to_uuid = req->chain[0]->uuid;
        hop_forward(h, req->chain[0], "Fsync", &fw.base, NULL, 0);
    }
    int r = adopt_version(svc, false, req->chunk_id, req->version);
    if (r == 0)
        r = cstore_sync(svc->store, req->chunk_id, req->version);
    hop_local(h, r, "sync");
    hop_put(h);
    return RPC_DEFERRED;
}

/* ---- Read and Copy ----------------------------------------------------------------------------------- */

/* Reply with buf[0..len) lent as the bulk field; takes buf. An empty bulk field is never sent: the RPC
 * layer's receiver mishandles a zero-length field 15 at the very end of a message (see the report). */
static void reply_bulk(struct rpc_call *call, const ProtobufCMessage *rep, uint8_t *buf, size_t len)
{
    if (len) {
        rpc_reply_lend(call, rep, buf, len, free, buf);
    } else {
        rpc_reply(call, rep);
        free(buf);
    }
}

static int reply_stored(struct cs_service *svc, struct rpc_call *call, uint64_t id, uint32_t version,
                        uint32_t first, uint32_t max_blocks, bool is_copy)
{
    struct cstore_block *blocks = xmalloc((max_blocks ? max_blocks : 1) * sizeof(*blocks));
    size_t cap = (size_t)(max_blocks ? max_blocks : 1) * CSTORE_BLOCK_SIZE;
    uint8_t *buf = xmalloc(cap);
    size_t n = 0, len = 0;
    uint32_t next = first;
    uint64_t clen = 0;
    int r = 0;
    if (max_blocks)
        r = cstore_read_stored(svc->store, id, version, first, max_blocks, blocks, max_blocks, buf, cap, &n,
                               &len, &next, &clen);
    else
        r = cstore_length(svc->store, id, version, &clen);
    if (r) {
        free(blocks);
        free(buf);
        return r;
    }
    struct wire_blocks wb;
    wire_blocks_init(&wb, blocks, n);
    if (is_copy) {
        Synod__V1__CopyRep rep = SYNOD__V1__COPY_REP__INIT;
        rep.n_blocks = n;
        rep.blocks = wb.ptrs;
        rep.chunk_len = clen;
        rep.last = next >= CSTORE_BLOCKS || (uint64_t)next * CSTORE_BLOCK_SIZE >= clen;
        reply_bulk(call, &rep.base, buf, len);
    } else {
        Synod__V1__ReadRep rep = SYNOD__V1__READ_REP__INIT;
        rep.n_blocks = n;
        rep.blocks = wb.ptrs;
        rep.chunk_len = clen;
        reply_bulk(call, &rep.base, buf, len);
    }
    wire_blocks_destroy(&wb);
    free(blocks);
    return 0;
}

static int h_read(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct cs_service *svc = arg;
    const Synod__V1__ReadReq *req = (const Synod__V1__ReadReq *)m;
    char why[200];
    if (wrong_target(svc, call, req->to_uuid))
        return 0;
    if (check_range(req->offset, req->length, why, sizeof(why)))
        return bad_request(call, why);
    atomic_fetch_add(&svc->inflight, 1);
    int r;
    if (req->stored_form) {
        uint32_t first = (uint32_t)(req->offset / CSTORE_BLOCK_SIZE);
        uint32_t nb =
            req->length ? (uint32_t)((req->offset + req->length - 1) / CSTORE_BLOCK_SIZE) - first + 1 : 0;
        r = reply_stored(svc, call, req->chunk_id, req->version, first, nb, false);
        if (r == -ESTALE && adopt_version(svc, false, req->chunk_id, req->version) == 0)
            r = reply_stored(svc, call, req->chunk_id, req->version, first, nb, false);
    } else {
        uint8_t *buf = xmalloc(req->length ? req->length : 1);
        uint64_t clen = 0;
        r = cstore_read(svc->store, req->chunk_id, req->version, req->offset, buf, req->length, &clen);
        if (r == -ESTALE && adopt_version(svc, false, req->chunk_id, req->version) == 0)
            r = cstore_read(svc->store, req->chunk_id, req->version, req->offset, buf, req->length, &clen);
        if (r == 0) {
            /* Bytes past the chunk's end are not sent: the reader zero-fills up to what it asked. */
            size_t n = req->offset >= clen ? 0 : (size_t)MIN((uint64_t)req->length, clen - req->offset);
            Synod__V1__ReadRep rep = SYNOD__V1__READ_REP__INIT;
            rep.chunk_len = clen;
            if (req->plain_crc) {
                /* cstore_read verified every stored block these bytes come from; the client checks this */
                rep.data_crc = crc32c(0, buf, n);
                rep.has_data_crc = true;
            }
            reply_bulk(call, &rep.base, buf, n);
        } else {
            free(buf);
        }
    }
    atomic_fetch_sub(&svc->inflight, 1);
    return r;
}

static int h_copy(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct cs_service *svc = arg;
    const Synod__V1__CopyReq *req = (const Synod__V1__CopyReq *)m;
    if (wrong_target(svc, call, req->to_uuid))
        return 0;
    if (req->first_block > CSTORE_BLOCKS)
        return bad_request(call, "first_block beyond the chunk");
    uint32_t max = req->max_blocks ? MIN(req->max_blocks, CS_COPY_MAX_BLOCKS) : CS_COPY_PAGE_BLOCKS;
    max = MIN(max, CSTORE_BLOCKS - req->first_block);
    atomic_fetch_add(&svc->inflight, 1);
    int r = reply_stored(svc, call, req->chunk_id, req->version, req->first_block, max, true);
    if (r == -ESTALE && adopt_version(svc, false, req->chunk_id, req->version) == 0)
        r = reply_stored(svc, call, req->chunk_id, req->version, req->first_block, max, true);
    atomic_fetch_sub(&svc->inflight, 1);
    return r;
}

/* ---- lifecycle --------------------------------------------------------------------------------------- */

static const rpc_handler_fn handlers[] = {h_write, h_write_blocks, h_read, h_copy, h_fsync};

struct cs_service *cs_service_new(struct cstore *store, int level, const char *self_addr)
{
    struct cs_service *svc = xcalloc(1, sizeof(*svc));
    svc->store = store;
    svc->level = level ? level : CODEC_DEFAULT_LEVEL;
    svc->self_addr = xstrdup(self_addr);
    atomic_init(&svc->self_id, 0);
    atomic_init(&svc->inflight, 0);
    int r = pthread_key_create(&svc->codec_key, codec_destroy);
    if (r)
        PANIC("pthread_key_create: %s", strerror(r));
    clk_cond_init(&svc->gate_cv); /* clk_mono_ns deadlines */
    ASSERT(pthread_mutex_init(&svc->gate_mu, NULL) == 0);
    ASSERT(pthread_mutex_init(&svc->fail_mu, NULL) == 0);
    svc->ready_tail = &svc->ready_head;
    atomic_init(&svc->parked_total, 0);
    r = pthread_create(&svc->resumer, NULL, resumer_main, svc);
    if (r)
        PANIC("pthread_create: %s", strerror(r));
    return svc;
}

void cs_service_stop(struct cs_service *svc)
{
    if (!svc)
        return;
    pthread_mutex_lock(&svc->gate_mu);
    if (svc->stopping) {
        pthread_mutex_unlock(&svc->gate_mu);
        return;
    }
    svc->stopping = true;
    /* Writes parked or ready but not started never run: they would forward after the RPC client stops. */
    struct gate *drop = NULL;
    for (struct gate *x = svc->gates_head, *n; x; x = n) {
        n = x->next;
        bool queued = x->parked;
        for (struct gate *q = svc->ready_head; q && !queued; q = q->ready_next)
            queued = q == x;
        if (!queued)
            continue;
        gate_unlink_locked(svc, x);
        x->ready_next = drop;
        drop = x;
    }
    svc->ready_head = NULL;
    svc->ready_tail = &svc->ready_head;
    pthread_cond_broadcast(&svc->gate_cv);
    pthread_mutex_unlock(&svc->gate_mu);
    pthread_join(svc->resumer, NULL);
    for (struct gate *x = drop, *n; x; x = n) {
        n = x->ready_next;
        gate_fail(x, -ECANCELED, "cancelled at shutdown while waiting for a write in flight");
    }
    unsigned parked = atomic_load(&svc->parked_total);
    if (parked) /* our client never sends these: a warning, so a misbehaving client gets noticed */
        LOG_WARN("%u writes had to wait for an overlapping write in flight", parked);
}

void cs_service_free(struct cs_service *svc)
{
    if (!svc)
        return;
    cs_service_stop(svc);
    /* Every hop was answered (rpc_client_shutdown waited for the forwards), so no gate should be left. */
    if (svc->gates_head)
        LOG_WARN("chunk %016" PRIx64 ": a write is still in flight at shutdown", svc->gates_head->chunk_id);
    pthread_cond_destroy(&svc->gate_cv);
    pthread_mutex_destroy(&svc->gate_mu);
    pthread_mutex_destroy(&svc->fail_mu);
    free(svc->fails);
    struct codec *c = pthread_getspecific(svc->codec_key);
    codec_free(c);
    pthread_key_delete(svc->codec_key);
    free(svc->self_addr);
    free(atomic_load(&svc->self_uuid));
    free(svc);
}

void cs_service_register(struct cs_service *svc, struct rpc_server *srv)
{
    const ProtobufCServiceDescriptor *d = &synod__v1__chunk_data__descriptor;
    ASSERT(d->n_methods == ARRAY_SIZE(handlers));
    /* The table is indexed by the descriptor's method order; check the names so a reordered .proto fails. */
    static const char *const names[] = {"Write", "WriteBlocks", "Read", "Copy", "Fsync"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        ASSERT(strcmp(d->methods[i].name, names[i]) == 0);
    rpc_server_add_service(srv, d, handlers, svc);
}

void cs_service_set_id(struct cs_service *svc, uint32_t id)
{
    atomic_store(&svc->self_id, id);
}

void cs_service_set_uuid(struct cs_service *svc, const char *uuid)
{
    char *mine = xstrdup(uuid), *none = NULL;
    if (!atomic_compare_exchange_strong(&svc->self_uuid, &none, mine))
        free(mine); /* set once: the identity file's uuid never changes while the process runs */
}

uint32_t cs_service_load(const struct cs_service *svc)
{
    return atomic_load(&svc->inflight);
}
