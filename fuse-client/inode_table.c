/* inode_table.c - lookup counts and per-inode state of synod-mount (contract in inode_table.h).
 *
 * A chained hash table under one mutex; it grows by doubling when the load passes 1, so a `find` over
 * millions of cached inodes stays O(1). Entries are freed only when both the kernel's lookup count and the
 * pins are zero, and the root (ino 1) never.
 */
#include "fuse-client/inode_table.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/log.h"
#include "common/util.h"

#define ROOT_INO 1

struct itab {
    pthread_mutex_t mu;
    struct cio *cio;
    struct itab_inode **b;
    size_t nb, n;
    uint64_t xgen; /* last xattr generation handed out */
};

static size_t hash(uint64_t ino, size_t nb)
{
    return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 17) & (nb - 1);
}

struct itab *itab_new(struct cio *cio)
{
    struct itab *t = xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    t->cio = cio;
    t->nb = 1024;
    t->b = xcalloc(t->nb, sizeof(*t->b));
    return t;
}

void itab_free(struct itab *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nb; i++)
        for (struct itab_inode *e = t->b[i], *n; e; e = n) {
            n = e->next;
            cio_file_free(e->file);
            free(e);
        }
    free(t->b);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static void grow(struct itab *t)
{
    size_t nb = t->nb * 2;
    struct itab_inode **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < t->nb; i++)
        for (struct itab_inode *e = t->b[i], *n; e; e = n) {
            n = e->next;
            size_t h = hash(e->ino, nb);
            e->next = b[h];
            b[h] = e;
        }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

static struct itab_inode *find(struct itab *t, uint64_t ino)
{
    for (struct itab_inode *e = t->b[hash(ino, t->nb)]; e; e = e->next)
        if (e->ino == ino)
            return e;
    return NULL;
}

static struct itab_inode *get(struct itab *t, uint64_t ino, uint64_t size)
{
    struct itab_inode *e = find(t, ino);
    if (e) {
        cio_file_set_size(e->file, size, false);
        return e;
    }
    if (t->n >= t->nb)
        grow(t);
    e = xcalloc(1, sizeof(*e));
    e->ino = ino;
    e->xgen = ++t->xgen;
    e->file = cio_file_new(t->cio, ino, size);
    size_t h = hash(ino, t->nb);
    e->next = t->b[h];
    t->b[h] = e;
    t->n++;
    return e;
}

/* Unlink and free e if nothing references it; mu held. */
static void maybe_free(struct itab *t, struct itab_inode *e)
{
    if (e->nlookup || e->pins || e->ino == ROOT_INO)
        return;
    struct itab_inode **pp = &t->b[hash(e->ino, t->nb)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    t->n--;
    if (cio_file_dirty(e->file))
        LOG_WARN("inode %llu: forgotten with unflushed data", (unsigned long long)e->ino);
    cio_file_free(e->file);
    free(e);
}

struct itab_inode *itab_lookup(struct itab *t, uint64_t ino, uint64_t size)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = get(t, ino, size);
    e->nlookup++;
    pthread_mutex_unlock(&t->mu);
    return e;
}

void itab_forget(struct itab *t, uint64_t ino, uint64_t n)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    if (!e) {
        pthread_mutex_unlock(&t->mu);
        if (ino != ROOT_INO)
            LOG_WARN("forget of unknown inode %llu", (unsigned long long)ino);
        return;
    }
    if (n > e->nlookup) {
        LOG_WARN("inode %llu: forget %llu > lookup count %llu", (unsigned long long)ino, (unsigned long long)n,
                 (unsigned long long)e->nlookup);
        n = e->nlookup;
    }
    e->nlookup -= n;
    maybe_free(t, e);
    pthread_mutex_unlock(&t->mu);
}

struct itab_inode *itab_pin(struct itab *t, uint64_t ino, uint64_t size)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    if (!e)
        e = get(t, ino, size);
    e->pins++;
    pthread_mutex_unlock(&t->mu);
    return e;
}

void itab_unpin(struct itab *t, struct itab_inode *e)
{
    pthread_mutex_lock(&t->mu);
    ASSERT(e->pins > 0);
    e->pins--;
    maybe_free(t, e);
    pthread_mutex_unlock(&t->mu);
}

uint64_t itab_note_size(struct itab *t, uint64_t ino, uint64_t meta_size)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    uint64_t s = meta_size;
    if (e) {
        cio_file_set_size(e->file, meta_size, false);
        s = cio_file_size(e->file);
    }
    pthread_mutex_unlock(&t->mu);
    return s;
}

bool itab_has(struct itab *t, uint64_t ino)
{
    pthread_mutex_lock(&t->mu);
    bool r = find(t, ino) != NULL;
    pthread_mutex_unlock(&t->mu);
    return r;
}

uint64_t itab_xattr_gen(struct itab *t, uint64_t ino)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    uint64_t g = e ? e->xgen : 0;
    pthread_mutex_unlock(&t->mu);
    return g;
}

void itab_nocaps_note(struct itab *t, uint64_t ino, uint64_t gen, uint64_t until_ns)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    if (e && gen && e->xgen == gen)
        e->nocaps_until = until_ns;
    pthread_mutex_unlock(&t->mu);
}

bool itab_keep_cache(struct itab *t, uint64_t ino, const struct itab_stamp *s)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    bool keep = false;
    if (e) {
        keep = e->stamped && e->stamp.ctime_ns == s->ctime_ns && e->stamp.mtime_ns == s->mtime_ns &&
               e->stamp.size == s->size;
        e->stamp = *s;
        e->stamped = true;
    }
    pthread_mutex_unlock(&t->mu);
    return keep;
}

void itab_cache_changed(struct itab *t, uint64_t ino)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    if (e)
        e->stamped = false;
    pthread_mutex_unlock(&t->mu);
}

bool itab_nocaps(struct itab *t, uint64_t ino, uint64_t now_ns)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    bool r = e && now_ns < e->nocaps_until;
    pthread_mutex_unlock(&t->mu);
    return r;
}

void itab_xattr_changed(struct itab *t, uint64_t ino)
{
    pthread_mutex_lock(&t->mu);
    struct itab_inode *e = find(t, ino);
    if (e) {
        e->xgen = ++t->xgen;
        e->nocaps_until = 0;
    }
    pthread_mutex_unlock(&t->mu);
}

uint64_t itab_count(struct itab *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t n = t->n;
    pthread_mutex_unlock(&t->mu);
    return n;
}
