/* cs_control.c - the control client: leader discovery, registration, heartbeats, reports, commands.
 *
 * See cs_control.h for the protocol. State shared between the control thread, the command workers and the
 * scrubber (pending results, pending lost chunks, the command queue, known command ids) lives under one
 * mutex; RPCs are never made while holding it. The control thread is the only one talking to the
 * metaserver, so leader tracking needs no locking.
 */
#include "chunkserver/cs_control.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunk.pb-c.h"
#include "chunkserver/cs_stop.h"
#include "common/clock.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"

#define REGISTER_TIMEOUT_MS 2000
#define COPY_TIMEOUT_MS     30000
#define MAX_REDIRECTS       4
#define RESULT_BATCH_MS     20 /* after a copy finished: wait this long for others, then heartbeat */

struct cmd {
    struct cmd *next;
    uint64_t cmd_id;
    uint32_t type;
    uint64_t chunk_id;
    uint32_t version, new_version;
    char *source;
    char *source_uuid; /* names the source in each Copy (CopyReq.to_uuid); "" if the metaserver did not say */
};

struct cs_control {
    char **metas;
    size_t nmetas;
    char *addr, *label, *id_path;
    uint64_t heartbeat_ms;
    uint64_t copy_rate; /* bytes per second for all copies together, 0 = unlimited */
    struct cstore *store;
    struct cs_service *svc;

    uint32_t id;
    char uuid[40];
    uint64_t fsid; /* the file system id of our cluster, once a metaserver told it (control thread) */
    uint64_t foreign_log_ns; /* when a metaserver of another cluster was last logged (control thread) */
    char *target; /* current leader guess (control thread only) */
    size_t meta_idx;

    struct cs_stop stop;
    pthread_t thread;
    pthread_t *workers;
    int nworkers;

    pthread_mutex_t mu; /* everything below */
    pthread_cond_t work_cv;
    bool stopping;
    struct cmd *queue, **queue_tail;
    uint64_t *known; /* command ids queued, running or with undelivered results */
    size_t nknown, known_cap;
    Synod__V1__ChunkCmdResult *results;
    size_t nresults, results_cap;
    Synod__V1__ChunkVersion *lost;
    size_t nlost, lost_cap;
    Synod__V1__ChainFailure *cfails; /* chain failures taken from the service, not yet delivered */
    size_t ncfails, cfails_cap;
    uint64_t copy_next_ns; /* the copy throttle's clock: when the bytes received so far are paid for */
};

/* ---- identity ---------------------------------------------------------------------------------------- */

static int identity_load(struct cs_control *ctl)
{
    FILE *f = fopen(ctl->id_path, "r");
    if (!f)
        return errno == ENOENT ? 1 : -errno;
    char line[128];
    while (fgets(line, sizeof(line), f)) {
        unsigned id;
        unsigned long long fsid;
        char u[40];
        if (sscanf(line, "id=%u", &id) == 1)
            ctl->id = id;
        else if (sscanf(line, "fsid=%llx", &fsid) == 1)
            ctl->fsid = (uint64_t)fsid;
        else if (sscanf(line, "uuid=%36s", u) == 1)
            snprintf(ctl->uuid, sizeof(ctl->uuid), "%s", u);
    }
    fclose(f);
    return ctl->uuid[0] ? 0 : -EINVAL;
}

static int identity_save(const struct cs_control *ctl)
{
    char *tmp = xasprintf("%s.tmp", ctl->id_path);
    int r = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = -errno;
        goto out_free;
    }
    char buf[160];
    int n = ctl->fsid ? snprintf(buf, sizeof(buf), "id=%u\nuuid=%s\nfsid=%016llx\n", ctl->id, ctl->uuid,
                                 (unsigned long long)ctl->fsid)
                      : snprintf(buf, sizeof(buf), "id=%u\nuuid=%s\n", ctl->id, ctl->uuid);
    if (write(fd, buf, (size_t)n) != n || fsync(fd) != 0)
        r = errno ? -errno : -EIO;
    close(fd);
    if (!r && rename(tmp, ctl->id_path) != 0)
        r = -errno;
    if (!r) {
        char *dir = xstrdup(ctl->id_path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    if (r)
        unlink(tmp);
out_free:
    free(tmp);
    return r;
}

static int identity_init(struct cs_control *ctl)
{
    int r = identity_load(ctl);
    if (r <= 0)
        return r;
    uint8_t b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, b, sizeof(b)) != (ssize_t)sizeof(b)) {
        r = fd < 0 ? -errno : -EIO;
        if (fd >= 0)
            close(fd);
        return r;
    }
    close(fd);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(ctl->uuid, sizeof(ctl->uuid),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return identity_save(ctl);
}

/* ---- shared lists (ctl->mu held) ---------------------------------------------------------------------- */

static bool known_has_locked(const struct cs_control *ctl, uint64_t cmd_id)
{
    for (size_t i = 0; i < ctl->nknown; i++)
        if (ctl->known[i] == cmd_id)
            return true;
    return false;
}

static void known_del_locked(struct cs_control *ctl, uint64_t cmd_id)
{
    for (size_t i = 0; i < ctl->nknown; i++) {
        if (ctl->known[i] == cmd_id) {
            ctl->known[i] = ctl->known[--ctl->nknown];
            return;
        }
    }
}

#define GROW(arr, n, cap)                                                                                    \
    do {                                                                                                     \
        if ((n) == (cap)) {                                                                                  \
            (cap) = (cap) ? (cap)*2 : 16;                                                                    \
            (arr) = xrealloc((arr), (cap) * sizeof(*(arr)));                                                 \
        }                                                                                                    \
    } while (0)

static void lost_add_locked(struct cs_control *ctl, uint64_t chunk_id, uint32_t version)
{
    for (size_t i = 0; i < ctl->nlost; i++)
        if (ctl->lost[i].chunk_id == chunk_id && ctl->lost[i].version == version)
            return;
    GROW(ctl->lost, ctl->nlost, ctl->lost_cap);
    synod__v1__chunk_version__init(&ctl->lost[ctl->nlost]);
    ctl->lost[ctl->nlost].chunk_id = chunk_id;
    ctl->lost[ctl->nlost].version = version;
    ctl->nlost++;
}

void cs_control_report_lost(struct cs_control *ctl, uint64_t chunk_id, uint32_t version)
{
    pthread_mutex_lock(&ctl->mu);
    lost_add_locked(ctl, chunk_id, version);
    pthread_mutex_unlock(&ctl->mu);
}

/* ---- commands ---------------------------------------------------------------------------------------- */

/* The copy throttle: account `bytes` just received by a copy and sleep until they are paid for at
 * copy_rate. One clock shared by every command worker, so concurrent copies share the rate instead of each
 * getting it; an idle period earns no credit (the clock restarts at now), so a copy never bursts above the
 * rate for more than one page. Returns -ECANCELED if the control client stops meanwhile. */
static int copy_throttle(struct cs_control *ctl, uint64_t bytes)
{
    if (ctl->copy_rate == 0 || bytes == 0)
        return 0;
    uint64_t cost = (uint64_t)((double)bytes * NS_PER_SEC / (double)ctl->copy_rate);
    pthread_mutex_lock(&ctl->mu);
    uint64_t now = clk_mono_ns();
    ctl->copy_next_ns = MAX(ctl->copy_next_ns, now) + cost;
    uint64_t until = ctl->copy_next_ns;
    pthread_mutex_unlock(&ctl->mu);
    if (until <= now)
        return 0;
    return cs_stop_sleep_ms(&ctl->stop, (until - now + NS_PER_MS - 1) / NS_PER_MS) ? -ECANCELED : 0;
}

/* Pull chunk `id` at `version` from `source`, page by page, into a temporary version 0 chunk, at most
 * copy_rate bytes per second (a re-replication storm must not starve client I/O). */
static int replicate(struct cs_control *ctl, const struct cmd *c)
{
    if (!c->source || !c->source[0] || c->version == 0)
        return -EINVAL;
    struct cstore *s = ctl->store;
    cstore_delete(s, c->chunk_id, CSTORE_ANY_VERSION); /* a stale or partial copy of ours */
    int r = cstore_create(s, c->chunk_id, 0);
    if (r)
        return r;
    struct rpc_channel *ch = rpc_channel_get(c->source);
    uint32_t first = 0;
    struct cstore_block *blocks = xmalloc(CS_COPY_PAGE_BLOCKS * sizeof(*blocks));
    for (;;) {
        Synod__V1__CopyReq req = SYNOD__V1__COPY_REQ__INIT;
        req.to_uuid = c->source_uuid ? c->source_uuid : "";
        req.chunk_id = c->chunk_id;
        req.version = c->version;
        req.first_block = first;
        req.max_blocks = CS_COPY_PAGE_BLOCKS;
        Synod__V1__CopyRep *rep = NULL;
        struct rpc_status st;
        r = rpc_call(ch, &synod__v1__chunk_data__descriptor, "Copy", &req.base, NULL, COPY_TIMEOUT_MS,
                     (ProtobufCMessage **)&rep, &st);
        if (r) {
            LOG_WARN("%s: copy chunk %016" PRIx64 " v%u from %s at block %u: %s", err_name(r), c->chunk_id,
                     c->version, c->source, first, st.detail);
            break;
        }
        uint32_t next = first + CS_COPY_PAGE_BLOCKS;
        bool ok = rep->n_blocks <= CS_COPY_PAGE_BLOCKS;
        uint64_t sum = 0;
        for (size_t i = 0; ok && i < rep->n_blocks; i++) {
            const Synod__V1__StoredBlock *w = rep->blocks[i];
            blocks[i] = (struct cstore_block){.index = w->index,
                                              .raw_len = w->raw_len,
                                              .stored_len = w->stored_len,
                                              .crc = w->crc,
                                              .flags = w->flags};
            ok = w->index >= first && w->index < next;
            sum += w->stored_len;
        }
        if (!ok || sum != rep->data.len)
            r = -EBADMSG;
        else if (rep->n_blocks)
            r = cstore_write_stored(s, c->chunk_id, 0, blocks, rep->n_blocks, rep->data.data, rep->data.len);
        bool last = rep->last || next >= CSTORE_BLOCKS;
        size_t got = rep->data.len;
        rpc_message_free(&rep->base);
        if (!r)
            r = copy_throttle(ctl, got);
        if (r || last)
            break;
        first = next;
    }
    free(blocks);
    if (!r)
        r = cstore_sync(s, c->chunk_id, 0);
    if (!r)
        r = cstore_set_version(s, c->chunk_id, 0, c->version);
    if (r)
        cstore_delete(s, c->chunk_id, 0);
    return r;
}

static int run_cmd(struct cs_control *ctl, const struct cmd *c)
{
    switch (c->type) {
    case SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE:
        return cstore_delete(ctl->store, c->chunk_id, c->version ? c->version : CSTORE_ANY_VERSION);
    case SYNOD__V1__CHUNK_CMD_TYPE__CMD_SET_VERSION:
        return cstore_set_version(ctl->store, c->chunk_id, c->version, c->new_version);
    case SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE:
        return replicate(ctl, c);
    default:
        return -EINVAL;
    }
}

static void *worker_main(void *arg)
{
    struct cs_control *ctl = arg;
    pthread_mutex_lock(&ctl->mu);
    for (;;) {
        while (!ctl->queue && !ctl->stopping)
            pthread_cond_wait(&ctl->work_cv, &ctl->mu);
        if (ctl->stopping)
            break;
        struct cmd *c = ctl->queue;
        ctl->queue = c->next;
        if (!ctl->queue)
            ctl->queue_tail = &ctl->queue;
        pthread_mutex_unlock(&ctl->mu);
        uint64_t t0 = clk_mono_ns();
        int r = run_cmd(ctl, c);
        LOG_INFO("command %" PRIu64 " type %u chunk %016" PRIx64 " v%u: %s (%" PRIu64 " ms)", c->cmd_id,
                 c->type, c->chunk_id, c->version, r ? err_name(r) : "done",
                 (uint64_t)((clk_mono_ns() - t0) / NS_PER_MS));
        pthread_mutex_lock(&ctl->mu);
        GROW(ctl->results, ctl->nresults, ctl->results_cap);
        synod__v1__chunk_cmd_result__init(&ctl->results[ctl->nresults]);
        ctl->results[ctl->nresults].cmd_id = c->cmd_id;
        ctl->results[ctl->nresults].err = r;
        ctl->nresults++;
        /* A copy's result goes out at once (the metaserver starts the next copy only after it: at most
         * max_repl_per_cs in flight per chunkserver), not at the next heartbeat, up to heartbeat_ms later. */
        if (c->type == SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE)
            cs_stop_nudge(&ctl->stop);
        free(c->source);
        free(c->source_uuid);
        free(c);
    }
    pthread_mutex_unlock(&ctl->mu);
    cstore_thread_release();
    return NULL;
}

static void enqueue_cmds(struct cs_control *ctl, Synod__V1__ChunkCmd *const *cmds, size_t n)
{
    pthread_mutex_lock(&ctl->mu);
    for (size_t i = 0; i < n; i++) {
        const Synod__V1__ChunkCmd *w = cmds[i];
        if (!w || known_has_locked(ctl, w->cmd_id))
            continue;
        struct cmd *c = xcalloc(1, sizeof(*c));
        c->cmd_id = w->cmd_id;
        c->type = w->type;
        c->chunk_id = w->chunk_id;
        c->version = w->version;
        c->new_version = w->new_version;
        if (w->source && w->source->addr) {
            c->source = xstrdup(w->source->addr);
            c->source_uuid = xstrdup(w->source->uuid ? w->source->uuid : "");
        }
        GROW(ctl->known, ctl->nknown, ctl->known_cap);
        ctl->known[ctl->nknown++] = c->cmd_id;
        *ctl->queue_tail = c;
        ctl->queue_tail = &c->next;
    }
    pthread_cond_broadcast(&ctl->work_cv);
    pthread_mutex_unlock(&ctl->mu);
}

/* ---- talking to the metaserver ------------------------------------------------------------------------ */

static void set_target(struct cs_control *ctl, const char *t)
{
    free(ctl->target);
    ctl->target = xstrdup(t);
}

/* If st carries "leader=host:port", point the target there and return true. */
static bool follow_leader(struct cs_control *ctl, int err, const struct rpc_status *st)
{
    const char *p = err == -EREMOTE ? strstr(st->detail, "leader=") : NULL;
    if (!p)
        return false;
    p += 7;
    size_t n = strcspn(p, " ,;");
    if (n == 0 || n > 255)
        return false;
    char *t = xstrndup(p, n);
    LOG_INFO("metaserver %s is not the leader: following %s", ctl->target, t);
    free(ctl->target);
    ctl->target = t;
    return true;
}

/* The channel to the current target, naming our file system id (rpc.h "File system id"). */
static struct rpc_channel *meta_channel(struct cs_control *ctl)
{
    struct rpc_channel *ch = rpc_channel_get(ctl->target);
    rpc_channel_set_fsid(ch, ctl->fsid);
    return ch;
}

/* A metaserver of another cluster (refused our call, or answered with another id): said at most every 10 s.
 * We never register with it, report to it or run its commands: it would count our chunks as unknown and
 * have them deleted. */
static void log_foreign(struct cs_control *ctl, const char *detail)
{
    uint64_t now = clk_mono_ns();
    if (ctl->foreign_log_ns && now - ctl->foreign_log_ns < 10 * NS_PER_SEC)
        return;
    ctl->foreign_log_ns = now;
    LOG_WARN("metaserver %s belongs to another cluster (%s): skipped; this chunkserver is of file system "
             "%016llx (fsid in %s)",
             ctl->target, detail, (unsigned long long)ctl->fsid, ctl->id_path);
}

static bool is_foreign(int err, const struct rpc_status *st)
{
    return err == -ENXIO && !strncmp(st->detail, RPC_DETAIL_FOREIGN, strlen(RPC_DETAIL_FOREIGN));
}

/* Check the id a metaserver answered with: 0 if it is ours (kept and persisted the first time) or none,
 * -ENXIO if it is another. None (0) is accepted: a metaserver that knows its id refuses our call before
 * answering when the ids differ (rpc.h), one whose state has none yet refuses every caller that names one,
 * so a 0 comes only from a metaserver older than the id: refusing it would make a rolling upgrade declare
 * every chunkserver dead while an old node leads. */
static int fsid_check(struct cs_control *ctl, uint64_t fsid)
{
    if (!fsid || ctl->fsid == fsid)
        return 0;
    if (!ctl->fsid) {
        ctl->fsid = fsid;
        int w = identity_save(ctl);
        if (w)
            LOG_ERR("%s: cannot persist the file system id in %s", err_name(w), ctl->id_path);
        LOG_INFO("file system id %016llx", (unsigned long long)fsid);
        return 0;
    }
    char d[96];
    snprintf(d, sizeof(d), "it answered for file system %016llx", (unsigned long long)fsid);
    log_foreign(ctl, d);
    return -ENXIO;
}

static void capacity(struct cs_control *ctl, uint64_t *total, uint64_t *used, uint64_t *logical,
                     uint32_t *chunks, uint32_t *failed)
{
    size_t nd = cstore_ndirs(ctl->store);
    struct cstore_dir_stat *ds = xcalloc(nd, sizeof(*ds));
    cstore_dir_stats(ctl->store, ds);
    *total = *used = *logical = 0;
    *chunks = *failed = 0;
    for (size_t i = 0; i < nd; i++) {
        *failed += ds[i].failed;
        *total += ds[i].total_bytes;
        *used += ds[i].total_bytes - MIN(ds[i].avail_bytes, ds[i].total_bytes);
        *logical += ds[i].logical_bytes;
        *chunks += ds[i].chunks;
    }
    free(ds);
}

static int do_register(struct cs_control *ctl)
{
    Synod__V1__RegisterReq req = SYNOD__V1__REGISTER_REQ__INIT;
    req.id = ctl->id;
    req.addr = ctl->addr;
    req.label = ctl->label;
    req.uuid = ctl->uuid;
    uint64_t logical;
    uint32_t chunks, failed;
    capacity(ctl, &req.total_bytes, &req.used_bytes, &logical, &chunks, &failed);
    int r = -ENOTCONN;
    for (size_t attempt = 0; attempt < ctl->nmetas + MAX_REDIRECTS; attempt++) {
        Synod__V1__RegisterRep *rep = NULL;
        struct rpc_status st;
        r = rpc_call(meta_channel(ctl), &synod__v1__chunk_control__descriptor, "RegisterChunkserver",
                     &req.base, NULL, REGISTER_TIMEOUT_MS, (ProtobufCMessage **)&rep, &st);
        if (r == 0 && (r = fsid_check(ctl, rep->fsid)) != 0) {
            rpc_message_free(&rep->base);
            snprintf(st.detail, sizeof(st.detail), RPC_DETAIL_FOREIGN);
        }
        if (r == 0) {
            uint32_t id = rep->id;
            if (rep->heartbeat_ms)
                ctl->heartbeat_ms = rep->heartbeat_ms;
            rpc_message_free(&rep->base);
            if (id == 0)
                return -EPROTO;
            if (id != ctl->id) {
                ctl->id = id;
                int w = identity_save(ctl);
                if (w)
                    LOG_ERR("%s: cannot persist chunkserver id %u in %s", err_name(w), id, ctl->id_path);
            }
            cs_service_set_id(ctl->svc, id);
            LOG_INFO("registered with metaserver %s as chunkserver %u", ctl->target, id);
            return 0;
        }
        if (cs_stop_raised(&ctl->stop))
            return r;
        if (follow_leader(ctl, r, &st))
            continue;
        if (is_foreign(r, &st))
            log_foreign(ctl, st.detail);
        LOG_DEBUG("%s: register at %s: %s", err_name(r), ctl->target, st.detail);
        ctl->meta_idx = (ctl->meta_idx + 1) % ctl->nmetas;
        set_target(ctl, ctl->metas[ctl->meta_idx]);
    }
    return r;
}

static int send_report(struct cs_control *ctl)
{
    struct cstore_chunk_info *all;
    size_t n;
    cstore_list(ctl->store, &all, &n);
    int r = 0;
    size_t pos = 0;
    Synod__V1__ChunkVersion *cv = xmalloc(CS_REPORT_PAGE * sizeof(*cv));
    Synod__V1__ChunkVersion **ptrs = xmalloc(CS_REPORT_PAGE * sizeof(*ptrs));
    do {
        size_t k = MIN((size_t)CS_REPORT_PAGE, n - pos);
        for (size_t i = 0; i < k; i++) {
            synod__v1__chunk_version__init(&cv[i]);
            cv[i].chunk_id = all[pos + i].chunk_id;
            cv[i].version = all[pos + i].version;
            cv[i].length = all[pos + i].length;
            ptrs[i] = &cv[i];
        }
        Synod__V1__ChunkReportReq req = SYNOD__V1__CHUNK_REPORT_REQ__INIT;
        req.id = ctl->id;
        req.chunks = ptrs;
        req.n_chunks = k;
        req.first = pos == 0;
        req.last = pos + k == n;
        ProtobufCMessage *rep = NULL;
        struct rpc_status st;
        r = rpc_call(meta_channel(ctl), &synod__v1__chunk_control__descriptor, "ChunkReport", &req.base, NULL,
                     REGISTER_TIMEOUT_MS * 5, &rep, &st);
        rpc_message_free(rep);
        if (r) {
            LOG_WARN("%s: chunk report to %s: %s", err_name(r), ctl->target, st.detail);
            break;
        }
        pos += k;
    } while (pos < n);
    if (!r)
        LOG_INFO("reported %zu chunks to metaserver %s", n, ctl->target);
    free(cv);
    free(ptrs);
    free(all);
    return r;
}

/* One heartbeat; on success executes the reply. Returns 0 or -errno: -ENOENT means the metaservers do not
 * know this chunkserver (register again); on any other failure the target has moved to the leader it named
 * (*followed) or to the next metaserver. */
static int heartbeat(struct cs_control *ctl, bool *report_wanted, bool *followed)
{
    *followed = false;
    struct cstore_lost *lost;
    size_t nl;
    cstore_take_lost(ctl->store, &lost, &nl);
    pthread_mutex_lock(&ctl->mu);
    for (size_t i = 0; i < nl; i++) {
        LOG_WARN("chunk %016" PRIx64 " v%u lost (%s): reporting it", lost[i].chunk_id, lost[i].version,
                 lost[i].reason == CSTORE_LOST_DIR_FAILED ? "failed data dir" : "corrupt block");
        lost_add_locked(ctl, lost[i].chunk_id, lost[i].version);
    }
    free(lost);
    struct cs_chain_failure *cf;
    size_t ncf;
    cs_service_take_chain_failures(ctl->svc, &cf, &ncf);
    for (size_t i = 0; i < ncf; i++) {
        if (ctl->ncfails == CS_MAX_CHAIN_FAILURES)
            break; /* the writers report them too */
        GROW(ctl->cfails, ctl->ncfails, ctl->cfails_cap);
        Synod__V1__ChainFailure *x = &ctl->cfails[ctl->ncfails++];
        synod__v1__chain_failure__init(x);
        x->chunk_id = cf[i].chunk_id;
        x->version = cf[i].version;
        x->chunkserver = cf[i].chunkserver;
        x->err = cf[i].err;
    }
    free(cf);
    /* Snapshot what we send; the lists are trimmed by these counts only after success. */
    size_t nres = ctl->nresults, nlost = ctl->nlost, nfail = ctl->ncfails;
    Synod__V1__ChainFailure **fp = xmalloc((nfail ? nfail : 1) * sizeof(*fp));
    Synod__V1__ChainFailure *fv = xmalloc((nfail ? nfail : 1) * sizeof(*fv));
    if (nfail)
        memcpy(fv, ctl->cfails, nfail * sizeof(*fv));
    for (size_t i = 0; i < nfail; i++)
        fp[i] = &fv[i];
    Synod__V1__ChunkCmdResult **rp = xmalloc((nres ? nres : 1) * sizeof(*rp));
    Synod__V1__ChunkVersion **lp = xmalloc((nlost ? nlost : 1) * sizeof(*lp));
    Synod__V1__ChunkCmdResult *res = xmalloc((nres ? nres : 1) * sizeof(*res));
    Synod__V1__ChunkVersion *lv = xmalloc((nlost ? nlost : 1) * sizeof(*lv));
    if (nres)
        memcpy(res, ctl->results, nres * sizeof(*res));
    if (nlost)
        memcpy(lv, ctl->lost, nlost * sizeof(*lv));
    pthread_mutex_unlock(&ctl->mu);
    for (size_t i = 0; i < nres; i++)
        rp[i] = &res[i];
    for (size_t i = 0; i < nlost; i++)
        lp[i] = &lv[i];

    Synod__V1__HeartbeatReq req = SYNOD__V1__HEARTBEAT_REQ__INIT;
    req.id = ctl->id;
    capacity(ctl, &req.total_bytes, &req.used_bytes, &req.logical_bytes, &req.chunks, &req.failed_dirs);
    req.load = cs_service_load(ctl->svc);
    req.results = rp;
    req.n_results = nres;
    req.lost = lp;
    req.n_lost = nlost;
    req.chain_failures = fp;
    req.n_chain_failures = nfail;
    Synod__V1__HeartbeatRep *rep = NULL;
    struct rpc_status st;
    int64_t tmo = (int64_t)MAX(ctl->heartbeat_ms * 2, (uint64_t)REGISTER_TIMEOUT_MS);
    int r = rpc_call(meta_channel(ctl), &synod__v1__chunk_control__descriptor, "Heartbeat", &req.base, NULL,
                     tmo, (ProtobufCMessage **)&rep, &st);
    if (r == 0 && (r = fsid_check(ctl, rep->fsid)) != 0) { /* its commands are not ours to run */
        rpc_message_free(&rep->base);
        snprintf(st.detail, sizeof(st.detail), RPC_DETAIL_FOREIGN);
    }
    free(rp);
    free(lp);
    free(fp);
    if (r == 0) {
        pthread_mutex_lock(&ctl->mu);
        for (size_t i = 0; i < nres; i++)
            known_del_locked(ctl, res[i].cmd_id);
        if (nres)
            memmove(ctl->results, ctl->results + nres, (ctl->nresults - nres) * sizeof(*ctl->results));
        ctl->nresults -= nres;
        if (nlost)
            memmove(ctl->lost, ctl->lost + nlost, (ctl->nlost - nlost) * sizeof(*ctl->lost));
        ctl->nlost -= nlost;
        if (nfail)
            memmove(ctl->cfails, ctl->cfails + nfail, (ctl->ncfails - nfail) * sizeof(*ctl->cfails));
        ctl->ncfails -= nfail;
        pthread_mutex_unlock(&ctl->mu);
        *report_wanted = rep->report_wanted;
        enqueue_cmds(ctl, rep->cmds, rep->n_cmds);
        rpc_message_free(&rep->base);
    } else if (follow_leader(ctl, r, &st)) {
        *followed = true;
    } else if (r != -ENOENT) {
        if (is_foreign(r, &st))
            log_foreign(ctl, st.detail);
        else
            LOG_WARN("%s: heartbeat to %s: %s", err_name(r), ctl->target, st.detail);
        ctl->meta_idx = (ctl->meta_idx + 1) % ctl->nmetas;
        set_target(ctl, ctl->metas[ctl->meta_idx]);
    }
    free(res);
    free(lv);
    free(fv);
    return r;
}

static void *control_main(void *arg)
{
    struct cs_control *ctl = arg;
    bool registered = false;
    uint64_t backoff_ms = 200;
    while (!cs_stop_raised(&ctl->stop)) {
        if (!registered) {
            if (do_register(ctl) != 0 || send_report(ctl) != 0) {
                if (cs_stop_sleep_ms(&ctl->stop, backoff_ms))
                    break;
                backoff_ms = MIN(backoff_ms * 2, 2000);
                continue;
            }
            registered = true;
            backoff_ms = 200;
        }
        /* A failed heartbeat (leader change, election, timeout, dead metaserver) leaves the registration
         * standing: it is replicated state. Registering again would also send a full chunk report (every
         * chunk, logged) from every chunkserver at every leader change. Only a metaserver that does not know
         * us (-ENOENT) or asks for a report (we were declared dead) gets one. */
        bool report = false, followed;
        int r = heartbeat(ctl, &report, &followed);
        if (r == -ENOENT) {
            registered = false;
            continue;
        }
        if (r != 0) { /* to the named leader soon (stale hints cannot make this spin), else back off */
            if (cs_stop_sleep_ms(&ctl->stop, followed ? 20 : backoff_ms))
                break;
            if (!followed)
                backoff_ms = MIN(backoff_ms * 2, 2000);
            continue;
        }
        backoff_ms = 200;
        if (report && send_report(ctl) != 0) {
            registered = false;
            continue;
        }
        bool nudged;
        if (cs_stop_wait(&ctl->stop, ctl->heartbeat_ms, &nudged))
            break;
        if (nudged &&
            cs_stop_sleep_ms(&ctl->stop, RESULT_BATCH_MS)) /* results finishing together: one heartbeat */
            break;
    }
    cstore_thread_release();
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------------------------- */

int cs_control_start(const struct cs_control_config *cfg, struct cstore *store, struct cs_service *svc,
                     struct cs_control **out)
{
    ASSERT(cfg->nmetaservers >= 1 && cfg->heartbeat_ms > 0);
    struct cs_control *ctl = xcalloc(1, sizeof(*ctl));
    ctl->nmetas = cfg->nmetaservers;
    ctl->metas = xcalloc(ctl->nmetas, sizeof(*ctl->metas));
    for (size_t i = 0; i < ctl->nmetas; i++)
        ctl->metas[i] = xstrdup(cfg->metaservers[i]);
    ctl->addr = xstrdup(cfg->addr);
    ctl->label = xstrdup(cfg->label ? cfg->label : "");
    ctl->id_path = xstrdup(cfg->id_path);
    ctl->heartbeat_ms = cfg->heartbeat_ms;
    ctl->copy_rate = cfg->copy_rate;
    ctl->store = store;
    ctl->svc = svc;
    ctl->target = xstrdup(ctl->metas[0]);
    ctl->queue_tail = &ctl->queue;
    pthread_mutex_init(&ctl->mu, NULL);
    pthread_cond_init(&ctl->work_cv, NULL);
    cs_stop_init(&ctl->stop);
    int r = identity_init(ctl);
    if (r) {
        LOG_ERR("%s: chunkserver identity file %s", err_name(r), ctl->id_path);
        goto out_free;
    }
    if (ctl->id)
        cs_service_set_id(svc, ctl->id);
    cs_service_set_uuid(svc, ctl->uuid);
    LOG_INFO("chunkserver id %u uuid %s", ctl->id, ctl->uuid);
    ctl->nworkers = cfg->workers > 0 ? cfg->workers : 2;
    ctl->workers = xcalloc((size_t)ctl->nworkers, sizeof(*ctl->workers));
    for (int i = 0; i < ctl->nworkers; i++)
        if (pthread_create(&ctl->workers[i], NULL, worker_main, ctl) != 0)
            PANIC("cannot start command worker");
    if (pthread_create(&ctl->thread, NULL, control_main, ctl) != 0)
        PANIC("cannot start control thread");
    *out = ctl;
    return 0;
out_free:
    *out = NULL;
    ctl->thread = 0;
    cs_control_stop(ctl);
    return r;
}

void cs_control_stop(struct cs_control *ctl)
{
    if (!ctl)
        return;
    cs_stop_raise(&ctl->stop);
    pthread_mutex_lock(&ctl->mu);
    ctl->stopping = true;
    pthread_cond_broadcast(&ctl->work_cv);
    pthread_mutex_unlock(&ctl->mu);
    if (ctl->thread)
        pthread_join(ctl->thread, NULL);
    for (int i = 0; i < ctl->nworkers; i++)
        pthread_join(ctl->workers[i], NULL);
    while (ctl->queue) {
        struct cmd *c = ctl->queue;
        ctl->queue = c->next;
        free(c->source);
        free(c->source_uuid);
        free(c);
    }
    for (size_t i = 0; i < ctl->nmetas; i++)
        free(ctl->metas[i]);
    free(ctl->metas);
    free(ctl->workers);
    free(ctl->known);
    free(ctl->results);
    free(ctl->lost);
    free(ctl->cfails);
    free(ctl->addr);
    free(ctl->label);
    free(ctl->id_path);
    free(ctl->target);
    cs_stop_destroy(&ctl->stop);
    pthread_cond_destroy(&ctl->work_cv);
    pthread_mutex_destroy(&ctl->mu);
    free(ctl);
}
