/* rsm_store.c - the LevelDB storage adapter of the replicated state machine runtime.
 *
 * One LevelDB at <data_dir>/db holds the Paxos log and hard state ("p/"), the runtime's state ("r/": applied
 * index, sessions, reply cache, snapshot marker) and the state machine's own prefixes. The core's persist
 * records of one loop turn (accepted entries, promise, log truncation) go out in ONE synced WriteBatch before
 * any message that depends on them (rsm_store_persist). Apply commits are written without sync; that is
 * safe because LevelDB's log is sequential, so every later synced write (the next turn's persist batch, or
 * the snapshot marker) also makes them durable, and the log is truncated only below a snapshot index that
 * was made durable by a synced write first (rsm_store_mark_snapshot). After a crash, the recovered applied
 * index may be lower than the one reached before, but every entry above it is still in the log.
 *
 * Snapshots are key ranges: a LevelDB snapshot (consistent image) of "r/" and the state machine's prefixes,
 * serialised as (varint klen, key, varint vlen, value) records for the wire.
 *
 * INSTALL, in memory bounded by the piece size whatever the state's size (one WriteBatch of the whole
 * snapshot needed the state's size in memory, and LevelDB wrote it as one log record):
 *   1. each piece received is written at once under the staging prefix "i/" (i/<key>, unsynced); the live
 *      state stays as it was, so an abandoned transfer only leaves staging, cleared at the next start;
 *   2. after the last piece, the install marker RSM_KEY_INSTALL = index is written synced (and with it, the
 *      log being sequential, every staged record before it): from here the install is committed;
 *   3. the live content is deleted and the staging copied into it, in batches of ~install_batch bytes;
 *   4. one synced batch sets applied = snapshot marker = index and drops the install marker;
 *   5. the staging is deleted in batches.
 * A crash in 3 or 4 leaves the marker and a complete staging: the next start redoes 3-5 before it reads the
 * applied index (rsm_store_install_recover). Steps 3 and 5 are idempotent.
 */
#include "metaserver/rsm_internal.h"

#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void log_key(uint8_t out[RSM_LOG_KEY_LEN], uint64_t slot)
{
    memcpy(out, RSM_KEY_LOG, 4);
    put_be64(out + 4, slot);
}

int rsm_store_open(struct rsm *r)
{
    char *path = xasprintf("%s/db", r->cfg.data_dir);
    if (mkdir(r->cfg.data_dir, 0755) != 0 && errno != EEXIST) {
        int e = -errno;
        LOG_ERR("cannot create data dir %s: %s", r->cfg.data_dir, strerror(errno));
        free(path);
        return e;
    }
    r->dbopt = leveldb_options_create();
    leveldb_options_set_create_if_missing(r->dbopt, 1);
    leveldb_options_set_write_buffer_size(r->dbopt, 16u << 20);
    char *err = NULL;
    r->db = leveldb_open(r->dbopt, path, &err);
    int rc = 0;
    if (err) {
        rc = strstr(err, "lock") ? -EBUSY : -EIO;
        LOG_ERR("leveldb open %s failed: %s", path, err);
        leveldb_free(err);
    }
    free(path);
    r->wsync = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(r->wsync, 1);
    r->wnosync = leveldb_writeoptions_create();
    r->ropt = leveldb_readoptions_create();
    return rc;
}

void rsm_store_close(struct rsm *r)
{
    if (r->db)
        leveldb_close(r->db);
    if (r->dbopt)
        leveldb_options_destroy(r->dbopt);
    if (r->wsync)
        leveldb_writeoptions_destroy(r->wsync);
    if (r->wnosync)
        leveldb_writeoptions_destroy(r->wnosync);
    if (r->ropt)
        leveldb_readoptions_destroy(r->ropt);
    r->db = NULL;
}

uint64_t rsm_store_get_u64(struct rsm *r, const char *key)
{
    char *err = NULL;
    size_t len = 0;
    char *v = leveldb_get(r->db, r->ropt, key, strlen(key), &len, &err);
    if (kv_leveldb_err(&err, "get") || !v)
        return 0;
    uint64_t x = len == 8 ? get_be64(v) : 0;
    leveldb_free(v);
    return x;
}

int rsm_store_recover(struct rsm *r, struct paxos_durable *d)
{
    memset(d, 0, sizeof(*d));
    d->promised = rsm_store_get_u64(r, RSM_KEY_HARD);
    d->applied = rsm_store_get_u64(r, RSM_KEY_APPLIED);
    size_t cap = 0;
    struct paxos_entry *ents = NULL;
    leveldb_iterator_t *it = leveldb_create_iterator(r->db, r->ropt);
    uint8_t start[RSM_LOG_KEY_LEN];
    log_key(start, d->applied + 1);
    r->trunc_floor = UINT64_MAX;
    for (leveldb_iter_seek(it, RSM_KEY_LOG, 4); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = leveldb_iter_key(it, &klen);
        if (klen < 4 || memcmp(k, RSM_KEY_LOG, 4) != 0)
            break;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vlen);
        if (klen != RSM_LOG_KEY_LEN || vlen < 18) {
            LOG_ERR("paxos log: malformed record (key %zu bytes, value %zu bytes): skipped", klen, vlen);
            continue;
        }
        uint64_t slot = get_be64(k + 4);
        if (r->trunc_floor == UINT64_MAX)
            r->trunc_floor = slot;
        if (slot <= d->applied)
            continue;
        if (d->n_entries == cap) {
            cap = cap ? cap * 2 : 256;
            ents = xrealloc(ents, cap * sizeof(*ents));
        }
        ents[d->n_entries++] = (struct paxos_entry){
            .slot = slot,
            .ballot = get_le64(v),
            .chosen = v[8] != 0,
            .val = paxos_val_new(v[9], get_le64(v + 10), v + 18, (uint32_t)(vlen - 18)),
        };
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    leveldb_iter_destroy(it);
    if (r->trunc_floor == UINT64_MAX)
        r->trunc_floor = 0;
    d->entries = ents;
    if (kv_leveldb_err(&err, "recover iterate")) {
        rsm_store_durable_free(d);
        return -EIO;
    }
    return 0;
}

void rsm_store_durable_free(struct paxos_durable *d)
{
    struct paxos_entry *e = (struct paxos_entry *)d->entries;
    for (size_t i = 0; i < d->n_entries; i++)
        paxos_val_unref(e[i].val);
    free(e);
    memset(d, 0, sizeof(*d));
}

int rsm_store_persist(struct rsm *r, const struct paxos_ready *rd)
{
    if (!rd->n_entries && !rd->truncate_below && !rd->hard_changed)
        return 0;
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    if (rd->truncate_below > r->trunc_floor) {
        uint8_t k[RSM_LOG_KEY_LEN];
        leveldb_iterator_t *it = leveldb_create_iterator(r->db, r->ropt);
        log_key(k, r->trunc_floor);
        for (leveldb_iter_seek(it, (const char *)k, sizeof(k)); leveldb_iter_valid(it); leveldb_iter_next(it)) {
            size_t klen;
            const char *key = leveldb_iter_key(it, &klen);
            if (klen != RSM_LOG_KEY_LEN || memcmp(key, RSM_KEY_LOG, 4) != 0 || get_be64(key + 4) >= rd->truncate_below)
                break;
            leveldb_writebatch_delete(b, key, klen);
        }
        leveldb_iter_destroy(it);
        r->trunc_floor = rd->truncate_below;
    }
    size_t cap = 256;
    uint8_t *v = xmalloc(cap);
    for (size_t i = 0; i < rd->n_entries; i++) {
        const struct paxos_entry *e = &rd->entries[i];
        if (e->slot < rd->truncate_below)
            continue;
        size_t need = 18 + e->val->len;
        if (need > cap) {
            cap = need;
            v = xrealloc(v, cap);
        }
        put_le64(v, e->ballot);
        v[8] = e->chosen;
        v[9] = (uint8_t)e->val->kind;
        put_le64(v + 10, e->val->zxid);
        memcpy(v + 18, e->val->data, e->val->len);
        uint8_t k[RSM_LOG_KEY_LEN];
        log_key(k, e->slot);
        leveldb_writebatch_put(b, (const char *)k, sizeof(k), (const char *)v, need);
    }
    free(v);
    if (rd->hard_changed) {
        uint8_t hv[8];
        put_be64(hv, rd->promised);
        leveldb_writebatch_put(b, RSM_KEY_HARD, strlen(RSM_KEY_HARD), (const char *)hv, 8);
    }
    char *err = NULL;
    leveldb_write(r->db, r->wsync, b, &err);
    leveldb_writebatch_destroy(b);
    return kv_leveldb_err(&err, "persist paxos batch");
}

int rsm_store_mark_snapshot(struct rsm *r, uint64_t index)
{
    uint8_t v[8];
    put_be64(v, index);
    char *err = NULL;
    leveldb_put(r->db, r->wsync, RSM_KEY_SNAP, strlen(RSM_KEY_SNAP), (const char *)v, 8, &err);
    return kv_leveldb_err(&err, "snapshot marker");
}

bool rsm_store_snap_key(const struct rsm *r, const char *key, size_t klen)
{
    for (const char **p = r->prefixes; *p; p++) {
        size_t pl = strlen(*p);
        if (klen >= pl && memcmp(key, *p, pl) == 0)
            return true;
    }
    return false;
}

/* ---- served snapshots ---- */

struct rsm_snap *rsm_snap_get(struct rsm *r)
{
    pthread_mutex_lock(&r->snap_mu);
    struct rsm_snap *s = r->snap;
    if (s)
        s->refs++;
    pthread_mutex_unlock(&r->snap_mu);
    return s;
}

void rsm_snap_put(struct rsm *r, struct rsm_snap *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&r->snap_mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&r->snap_mu);
    if (last) {
        leveldb_release_snapshot(r->db, s->snap);
        free(s);
    }
}

void rsm_snap_take(struct rsm *r, uint64_t index)
{
    struct rsm_snap *s = xcalloc(1, sizeof(*s));
    s->refs = 1;
    s->snap = leveldb_create_snapshot(r->db);
    s->index = index;
    pthread_mutex_lock(&r->snap_mu);
    struct rsm_snap *old = r->snap;
    r->snap = s;
    pthread_mutex_unlock(&r->snap_mu);
    rsm_snap_put(r, old);
}

int rsm_store_snap_read(struct rsm *r, const struct rsm_snap *s, const void *after, size_t alen, size_t max,
                        uint8_t **out, size_t *len, uint32_t *count, bool *last, char **last_key, size_t *lklen)
{
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_readoptions_set_snapshot(ro, s->snap);
    leveldb_readoptions_set_fill_cache(ro, 0);
    leveldb_iterator_t *it = leveldb_create_iterator(r->db, ro);
    size_t cap = 4096, n = 0;
    uint8_t *buf = xmalloc(cap);
    *count = 0;
    *last = true;
    *last_key = NULL;
    *lklen = 0;
    if (after && alen) {
        leveldb_iter_seek(it, after, alen);
        if (leveldb_iter_valid(it)) {
            size_t kl;
            const char *k = leveldb_iter_key(it, &kl);
            if (kl == alen && memcmp(k, after, alen) == 0)
                leveldb_iter_next(it);
        }
    } else {
        leveldb_iter_seek_to_first(it);
    }
    while (leveldb_iter_valid(it)) {
        size_t kl, vl;
        const char *k = leveldb_iter_key(it, &kl);
        if (!rsm_store_snap_key(r, k, kl)) {
            if (kl >= 2 && k[0] == 'p' && k[1] == '/')
                leveldb_iter_seek(it, "p0", 2); /* skip the whole Paxos log */
            else
                leveldb_iter_next(it);
            continue;
        }
        if (n >= max) {
            *last = false;
            break;
        }
        const char *v = leveldb_iter_value(it, &vl);
        if (n + kl + vl + 20 > cap) {
            cap = MAX(cap * 2, n + kl + vl + 20);
            buf = xrealloc(buf, cap);
        }
        n += util_put_varint(buf + n, kl);
        memcpy(buf + n, k, kl);
        n += kl;
        n += util_put_varint(buf + n, vl);
        memcpy(buf + n, v, vl);
        n += vl;
        (*count)++;
        free(*last_key);
        *last_key = xmalloc(kl); /* binary: keys hold 0 bytes (big-endian ids), so never a string copy */
        memcpy(*last_key, k, kl);
        *lklen = kl;
        leveldb_iter_next(it);
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    leveldb_iter_destroy(it);
    leveldb_readoptions_destroy(ro);
    if (kv_leveldb_err(&err, "snapshot iterate")) {
        free(buf);
        free(*last_key);
        *last_key = NULL;
        return -EIO;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Write b (unsynced) and reset it for the next batch. */
static int flush_batch(struct rsm *r, leveldb_writebatch_t *b, size_t *bytes, const char *what)
{
    char *err = NULL;
    leveldb_write(r->db, r->wnosync, b, &err);
    leveldb_writebatch_clear(b);
    *bytes = 0;
    return kv_leveldb_err(&err, what);
}

/* Crash injection for tests (SYNOD_META_CRASH_IN_INSTALL=N: the process exits abruptly after N batches of
 * the copy in step 3), so that the resumed install is tested. */
static void maybe_crash(size_t *batches)
{
    const char *e = getenv("SYNOD_META_CRASH_IN_INSTALL");
    if (e && *e && ++*batches >= (size_t)strtoul(e, NULL, 10)) {
        LOG_ERR("SYNOD_META_CRASH_IN_INSTALL: exiting in the middle of a snapshot install (test)");
        _exit(70);
    }
}

static bool is_key(const char *k, size_t kl, const char *name)
{
    return kl == strlen(name) && memcmp(k, name, kl) == 0;
}

/* Delete every key under prefix (plen bytes), in batches of ~max bytes (unsynced); with keep_indexes, not
 * r/applied and r/snap. */
static int delete_prefix(struct rsm *r, const char *prefix, size_t plen, size_t max, bool keep_indexes)
{
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    leveldb_iterator_t *it = leveldb_create_iterator(r->db, r->ropt);
    size_t bytes = 0;
    int rc = 0;
    for (leveldb_iter_seek(it, prefix, plen); rc == 0 && leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kl;
        const char *k = leveldb_iter_key(it, &kl);
        if (kl < plen || memcmp(k, prefix, plen) != 0)
            break;
        if (keep_indexes && (is_key(k, kl, RSM_KEY_APPLIED) || is_key(k, kl, RSM_KEY_SNAP)))
            continue;
        leveldb_writebatch_delete(b, k, kl); /* the iterator reads its own snapshot: deleting is safe */
        bytes += kl + 16;
        if (bytes >= max)
            rc = flush_batch(r, b, &bytes, "snapshot install: delete");
    }
    leveldb_iter_destroy(it);
    if (rc == 0 && bytes)
        rc = flush_batch(r, b, &bytes, "snapshot install: delete");
    leveldb_writebatch_destroy(b);
    return rc;
}

/* Steps 3-5 of an install whose staging is complete and whose marker is durable. */
static int install_swap(struct rsm *r, uint64_t index)
{
    size_t max = MAX(r->install_batch, (size_t)1);
    int rc = 0;
    for (const char **pp = r->prefixes; *pp && rc == 0; pp++)
        rc = delete_prefix(r, *pp, strlen(*pp), max, false);
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    leveldb_iterator_t *it = leveldb_create_iterator(r->db, r->ropt);
    size_t sl = strlen(RSM_KEY_STAGE), bytes = 0, batches = 0;
    for (leveldb_iter_seek(it, RSM_KEY_STAGE, sl); rc == 0 && leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kl, vl;
        const char *k = leveldb_iter_key(it, &kl);
        if (kl <= sl || memcmp(k, RSM_KEY_STAGE, sl) != 0)
            break;
        const char *v = leveldb_iter_value(it, &vl);
        leveldb_writebatch_put(b, k + sl, kl - sl, v, vl);
        bytes += kl + vl;
        if (bytes >= max) {
            rc = flush_batch(r, b, &bytes, "snapshot install: copy");
            maybe_crash(&batches);
        }
    }
    leveldb_iter_destroy(it);
    if (rc == 0 && bytes)
        rc = flush_batch(r, b, &bytes, "snapshot install: copy");
    if (rc == 0) {
        uint8_t v[8];
        put_be64(v, index);
        leveldb_writebatch_put(b, RSM_KEY_APPLIED, strlen(RSM_KEY_APPLIED), (const char *)v, 8);
        leveldb_writebatch_put(b, RSM_KEY_SNAP, strlen(RSM_KEY_SNAP), (const char *)v, 8);
        leveldb_writebatch_delete(b, RSM_KEY_INSTALL, strlen(RSM_KEY_INSTALL));
        char *err = NULL;
        leveldb_write(r->db, r->wsync, b, &err);
        rc = kv_leveldb_err(&err, "snapshot install: applied index");
    }
    leveldb_writebatch_destroy(b);
    if (rc == 0)
        rc = delete_prefix(r, RSM_KEY_STAGE, sl, max, false);
    return rc;
}

int rsm_store_stage_clear(struct rsm *r)
{
    return delete_prefix(r, RSM_KEY_STAGE, strlen(RSM_KEY_STAGE), MAX(r->install_batch, (size_t)1), false);
}

int rsm_store_stage_put(struct rsm *r, const uint8_t *data, size_t len, uint32_t count)
{
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    const uint8_t *p = data, *end = data + len;
    uint32_t n = 0;
    size_t sl = strlen(RSM_KEY_STAGE);
    char *key = NULL;
    size_t cap = 0;
    int rc = 0;
    while (p < end) {
        uint64_t kl, vl;
        size_t m = util_get_varint(p, end, &kl);
        if (!m || kl > (uint64_t)(end - p - (ptrdiff_t)m) || kl == 0) {
            rc = -EBADMSG;
            break;
        }
        const uint8_t *k = p + m;
        p = k + kl;
        m = util_get_varint(p, end, &vl);
        if (!m || vl > (uint64_t)(end - p - (ptrdiff_t)m) || !rsm_store_snap_key(r, (const char *)k, kl)) {
            rc = -EBADMSG;
            break;
        }
        p += m;
        if (sl + kl > cap) {
            cap = sl + kl;
            key = xrealloc(key, cap);
        }
        memcpy(key, RSM_KEY_STAGE, sl);
        memcpy(key + sl, k, kl);
        leveldb_writebatch_put(b, key, sl + kl, (const char *)p, vl);
        p += vl;
        n++;
    }
    free(key);
    if (rc == 0 && n != count)
        rc = -EBADMSG;
    if (rc == 0) {
        char *err = NULL;
        leveldb_write(r->db, r->wnosync, b, &err);
        rc = kv_leveldb_err(&err, "snapshot install: stage");
    }
    leveldb_writebatch_destroy(b);
    return rc;
}

int rsm_store_stage_commit(struct rsm *r, uint64_t index)
{
    uint8_t v[8];
    put_be64(v, index);
    char *err = NULL;
    leveldb_put(r->db, r->wsync, RSM_KEY_INSTALL, strlen(RSM_KEY_INSTALL), (const char *)v, 8, &err);
    int rc = kv_leveldb_err(&err, "snapshot install: marker");
    return rc ? rc : install_swap(r, index);
}

int rsm_store_install_recover(struct rsm *r)
{
    uint64_t index = rsm_store_get_u64(r, RSM_KEY_INSTALL);
    if (index) {
        LOG_WARN("snapshot %llu: the install was interrupted after its commit: finishing it",
                 (unsigned long long)index);
        return install_swap(r, index);
    }
    return rsm_store_stage_clear(r); /* an abandoned transfer's pieces, if any */
}

/* r/applied and r/snap go last, in the synced batch: until then a crash leaves the condition that called
 * for the reset (snapshot marker above the applied index), and the next start resets again. */
int rsm_store_reset_content(struct rsm *r)
{
    size_t max = MAX(r->install_batch, (size_t)1);
    int rc = 0;
    for (const char **pp = r->prefixes; *pp && rc == 0; pp++)
        rc = delete_prefix(r, *pp, strlen(*pp), max, true);
    if (rc)
        return rc;
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    uint8_t v[8];
    put_be64(v, 0);
    leveldb_writebatch_put(b, RSM_KEY_APPLIED, strlen(RSM_KEY_APPLIED), (const char *)v, 8);
    leveldb_writebatch_put(b, RSM_KEY_SNAP, strlen(RSM_KEY_SNAP), (const char *)v, 8);
    char *err = NULL;
    leveldb_write(r->db, r->wsync, b, &err);
    leveldb_writebatch_destroy(b);
    return kv_leveldb_err(&err, "reset state");
}
