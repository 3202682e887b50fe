/* kv.c - the transaction overlay over LevelDB (see kv.h for the contract).
 *
 * Overlay: a skip list of entries ordered by key (O(log n) insert and seek: a transaction of millions of
 * writes, such as a chunkserver's death or a snapshot install, stays n log n, where a sorted array's inserts
 * were n^2). Each entry holds its key and value bytes in one allocation, replaced when the key is written
 * again. Iterators re-locate their overlay position by key at each step, so writes during a scan cannot
 * invalidate them.
 */
#include "metaserver/kv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define SL_LEVELS 24 /* skip list levels: plenty for 4^24 entries */

struct kv_ent {
    size_t klen, vlen;
    bool deleted;
    char *data;   /* key bytes, then value bytes (one allocation) */
    char *val;    /* points into data after the key */
    int height;
    struct kv_ent *next[]; /* [height] */
};

struct kv_txn {
    leveldb_t *db;
    leveldb_readoptions_t *ropt;
    struct kv_ent *head; /* SL_LEVELS links, no key */
    int level;           /* levels in use */
    size_t n;
    uint64_t rng;
};

struct kv_iter {
    struct kv_txn *txn;
    leveldb_iterator_t *dbit;
    char *end;
    size_t elen;
    bool has_end;
    /* current position */
    bool valid;
    char *key; /* copy of the current key */
    size_t klen, kcap;
    const char *val;
    size_t vlen;
};

int kv_leveldb_err(char **errptr, const char *what)
{
    if (!*errptr)
        return 0;
    LOG_ERR("leveldb %s failed: %s", what, *errptr);
    leveldb_free(*errptr);
    *errptr = NULL;
    return -EIO;
}

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, MIN(alen, blen));
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* First overlay entry whose key is >= key (or > key when strict), NULL if none. update (optional) gets the
 * last entry before it at every level in use. */
static struct kv_ent *ov_lower(const struct kv_txn *txn, const void *key, size_t klen, bool strict,
                               struct kv_ent **update)
{
    struct kv_ent *x = txn->head;
    for (int l = txn->level - 1; l >= 0; l--) {
        for (struct kv_ent *nx; (nx = x->next[l]);) {
            int c = key_cmp(nx->data, nx->klen, key, klen);
            if (c > 0 || (c == 0 && !strict))
                break;
            x = nx;
        }
        if (update)
            update[l] = x;
    }
    return x->next[0];
}

static struct kv_ent *ent_alloc(int height)
{
    struct kv_ent *e = xcalloc(1, sizeof(*e) + (size_t)height * sizeof(e->next[0]));
    e->height = height;
    return e;
}

struct kv_txn *kv_txn_begin(leveldb_t *db)
{
    struct kv_txn *txn = xcalloc(1, sizeof(*txn));
    txn->db = db;
    txn->ropt = leveldb_readoptions_create();
    txn->head = ent_alloc(SL_LEVELS);
    txn->level = 1;
    txn->rng = 0x9E3779B97F4A7C15ull;
    return txn;
}

leveldb_t *kv_txn_db(const struct kv_txn *txn)
{
    return txn->db;
}

size_t kv_txn_size(const struct kv_txn *txn)
{
    return txn->n;
}

int kv_get(struct kv_txn *txn, const void *key, size_t klen, char **val, size_t *vlen)
{
    struct kv_ent *e = ov_lower(txn, key, klen, false, NULL);
    if (e && key_cmp(e->data, e->klen, key, klen) == 0) {
        if (e->deleted)
            return -ENOENT;
        if (val) {
            *val = xmalloc(e->vlen + 1);
            memcpy(*val, e->val, e->vlen);
            (*val)[e->vlen] = 0;
        }
        if (vlen)
            *vlen = e->vlen;
        return 0;
    }
    char *err = NULL;
    size_t len = 0;
    char *v = leveldb_get(txn->db, txn->ropt, key, klen, &len, &err);
    if (err)
        return kv_leveldb_err(&err, "get");
    if (!v)
        return -ENOENT;
    if (val) {
        *val = xmalloc(len + 1);
        memcpy(*val, v, len);
        (*val)[len] = 0;
    }
    leveldb_free(v);
    if (vlen)
        *vlen = len;
    return 0;
}

static void ov_set(struct kv_txn *txn, const void *key, size_t klen, const void *val, size_t vlen, bool del)
{
    char *data = xmalloc(klen + vlen + 1);
    memcpy(data, key, klen);
    if (vlen)
        memcpy(data + klen, val, vlen);
    struct kv_ent *update[SL_LEVELS];
    struct kv_ent *e = ov_lower(txn, key, klen, false, update);
    if (!e || key_cmp(e->data, e->klen, key, klen) != 0) {
        int h = 1; /* a quarter of the entries one level up */
        for (;;) {
            txn->rng ^= txn->rng << 13;
            txn->rng ^= txn->rng >> 7;
            txn->rng ^= txn->rng << 17;
            if (h == SL_LEVELS || (txn->rng & 3))
                break;
            h++;
        }
        for (int l = txn->level; l < h; l++)
            update[l] = txn->head;
        txn->level = MAX(txn->level, h);
        e = ent_alloc(h);
        for (int l = 0; l < h; l++) {
            e->next[l] = update[l]->next[l];
            update[l]->next[l] = e;
        }
        txn->n++;
    }
    free(e->data);
    e->data = data;
    e->klen = klen;
    e->val = data + klen;
    e->vlen = vlen;
    e->deleted = del;
}

void kv_put(struct kv_txn *txn, const void *key, size_t klen, const void *val, size_t vlen)
{
    ov_set(txn, key, klen, val, vlen, false);
}

void kv_del(struct kv_txn *txn, const void *key, size_t klen)
{
    ov_set(txn, key, klen, NULL, 0, true);
}

static void txn_free(struct kv_txn *txn)
{
    for (struct kv_ent *e = txn->head->next[0], *nx; e; e = nx) {
        nx = e->next[0];
        free(e->data);
        free(e);
    }
    free(txn->head);
    leveldb_readoptions_destroy(txn->ropt);
    free(txn);
}

int kv_txn_commit(struct kv_txn *txn, const struct kv_pair *extra, size_t nextra, bool sync)
{
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    for (struct kv_ent *e = txn->head->next[0]; e; e = e->next[0]) {
        if (e->deleted)
            leveldb_writebatch_delete(wb, e->data, e->klen);
        else
            leveldb_writebatch_put(wb, e->data, e->klen, e->val, e->vlen);
    }
    for (size_t i = 0; i < nextra; i++) {
        if (extra[i].val)
            leveldb_writebatch_put(wb, extra[i].key, extra[i].klen, extra[i].val, extra[i].vlen);
        else
            leveldb_writebatch_delete(wb, extra[i].key, extra[i].klen);
    }
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(wo, sync);
    char *err = NULL;
    leveldb_write(txn->db, wo, wb, &err);
    int rc = kv_leveldb_err(&err, "write batch");
    leveldb_writeoptions_destroy(wo);
    leveldb_writebatch_destroy(wb);
    txn_free(txn);
    return rc;
}

void kv_txn_abort(struct kv_txn *txn)
{
    if (txn)
        txn_free(txn);
}

/* --- iterators ------------------------------------------------------------------------------------- */

static bool below_end(const struct kv_iter *it, const char *k, size_t klen)
{
    return !it->has_end || key_cmp(k, klen, it->end, it->elen) < 0;
}

static void set_cur(struct kv_iter *it, const char *k, size_t klen, const char *v, size_t vlen)
{
    if (klen > it->kcap) {
        it->kcap = klen * 2 + 16;
        it->key = xrealloc(it->key, it->kcap);
    }
    memcpy(it->key, k, klen);
    it->klen = klen;
    it->val = v;
    it->vlen = vlen;
    it->valid = true;
}

/* Position on the first visible key >= (key) or > key when strict. */
static void iter_seek(struct kv_iter *it, const char *key, size_t klen, bool strict)
{
    struct kv_ent *oe = ov_lower(it->txn, key, klen, strict, NULL);
    if (strict) {
        /* advance the db iterator past key */
        while (leveldb_iter_valid(it->dbit)) {
            size_t dl;
            const char *dk = leveldb_iter_key(it->dbit, &dl);
            if (key_cmp(dk, dl, key, klen) > 0)
                break;
            leveldb_iter_next(it->dbit);
        }
    }
    for (;;) {
        const char *dk = NULL, *ok = NULL;
        size_t dl = 0, ol = 0;
        if (leveldb_iter_valid(it->dbit))
            dk = leveldb_iter_key(it->dbit, &dl);
        if (oe) {
            ok = oe->data;
            ol = oe->klen;
        }
        if (!dk && !ok)
            break;
        int c = !dk ? 1 : !ok ? -1 : key_cmp(dk, dl, ok, ol);
        if (c < 0) { /* database key not shadowed by the overlay */
            if (!below_end(it, dk, dl))
                break;
            size_t vl;
            const char *v = leveldb_iter_value(it->dbit, &vl);
            set_cur(it, dk, dl, v, vl);
            return;
        }
        if (c == 0)
            leveldb_iter_next(it->dbit); /* overlay shadows it */
        if (!below_end(it, oe->data, oe->klen))
            break;
        if (!oe->deleted) {
            set_cur(it, oe->data, oe->klen, oe->val, oe->vlen);
            return;
        }
        oe = oe->next[0];
    }
    it->valid = false;
}

struct kv_iter *kv_iter_new(struct kv_txn *txn, const void *start, size_t slen, const void *end, size_t elen)
{
    struct kv_iter *it = xcalloc(1, sizeof(*it));
    it->txn = txn;
    it->dbit = leveldb_create_iterator(txn->db, txn->ropt);
    if (end) {
        it->has_end = true;
        it->end = xmalloc(elen + 1);
        memcpy(it->end, end, elen);
        it->elen = elen;
    }
    leveldb_iter_seek(it->dbit, start, slen);
    iter_seek(it, start, slen, false);
    return it;
}

struct kv_iter *kv_iter_prefix(struct kv_txn *txn, const void *prefix, size_t plen)
{
    return kv_iter_prefix_from(txn, prefix, plen, prefix, plen);
}

struct kv_iter *kv_iter_prefix_from(struct kv_txn *txn, const void *prefix, size_t plen, const void *start,
                                    size_t slen)
{
    /* end = the prefix with its last non-0xff byte incremented */
    char *end = xmalloc(plen + 1);
    memcpy(end, prefix, plen);
    size_t elen = plen;
    while (elen > 0 && (unsigned char)end[elen - 1] == 0xff)
        elen--;
    struct kv_iter *it;
    if (elen == 0) {
        it = kv_iter_new(txn, start, slen, NULL, 0);
    } else {
        end[elen - 1]++;
        it = kv_iter_new(txn, start, slen, end, elen);
    }
    free(end);
    return it;
}

bool kv_iter_valid(const struct kv_iter *it)
{
    return it->valid;
}

void kv_iter_next(struct kv_iter *it)
{
    ASSERT(it->valid);
    iter_seek(it, it->key, it->klen, true);
}

const char *kv_iter_key(const struct kv_iter *it, size_t *klen)
{
    ASSERT(it->valid);
    *klen = it->klen;
    return it->key;
}

const char *kv_iter_value(const struct kv_iter *it, size_t *vlen)
{
    ASSERT(it->valid);
    *vlen = it->vlen;
    return it->val;
}

void kv_iter_free(struct kv_iter *it)
{
    if (!it)
        return;
    leveldb_iter_destroy(it->dbit);
    free(it->end);
    free(it->key);
    free(it);
}
