/* dir_cache.c - lookup look-ahead from directory listings (see dir_cache.h). A few listings (sorted by
 * name as Readdir returns them, searched with bsearch) and a small table of recent misses per directory. */
#include "fuse-client/dir_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/util.h"

#define DC_LISTS 4  /* listings kept */
#define DC_MISSES 16 /* directories whose misses are counted */

struct dent {
    char *name;
    Synod__V1__Attr attr;
};

struct dlist {
    uint64_t dir, cred, gen, fetched_ns, hits;
    struct dent *e;
    size_t n;
};

struct dmiss {
    uint64_t dir, cred, first_ns, quiet_until;
    uint32_t count, wasted; /* wasted: listings in a row dropped before they answered `trigger` lookups */
    bool fetching;
};

struct dcache {
    pthread_mutex_t mu;
    uint64_t ttl_ns;
    uint32_t trigger, max_entries;
    atomic_uint_fast64_t gen;
    struct dlist lists[DC_LISTS];
    struct dmiss miss[DC_MISSES];
    uint64_t fills;
};

struct dcache_fill {
    struct dcache *c;
    uint64_t dir, cred, gen;
    struct dent *e;
    size_t n, cap;
    bool too_big;
};

static void list_clear(struct dlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].name);
    free(l->e);
    memset(l, 0, sizeof(*l));
}

struct dcache *dcache_new(uint64_t ttl_ns, uint32_t trigger, uint32_t max_entries)
{
    struct dcache *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    c->ttl_ns = ttl_ns;
    c->trigger = MAX(trigger, 1u);
    c->max_entries = max_entries;
    atomic_init(&c->gen, 1);
    return c;
}

void dcache_free(struct dcache *c)
{
    if (!c)
        return;
    for (int i = 0; i < DC_LISTS; i++)
        list_clear(&c->lists[i]);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

uint64_t dcache_cred_key(uint32_t uid, uint32_t gid, const uint32_t *groups, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    uint32_t v[2] = {uid, gid};
    for (int i = 0; i < 2; i++)
        h = (h ^ v[i]) * 0x100000001b3ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ groups[i]) * 0x100000001b3ull;
    return h;
}

static struct dmiss *miss_find(struct dcache *c, uint64_t dir, uint64_t cred)
{
    for (int i = 0; i < DC_MISSES; i++)
        if (c->miss[i].dir == dir && c->miss[i].cred == cred && c->miss[i].first_ns)
            return &c->miss[i];
    return NULL;
}

/* A listing of (dir, cred) was dropped by a change before it was worth its fetch (a program renaming or
 * unlinking every file of a directory): wait ttl, 2 ttl, 4 ttl... before the next. Under mu. */
static void wasted(struct dcache *c, uint64_t dir, uint64_t cred, uint64_t now)
{
    struct dmiss *m = miss_find(c, dir, cred);
    if (!m)
        return;
    m->wasted = MIN(m->wasted + 1, 6u);
    m->quiet_until = now + (c->ttl_ns << (m->wasted - 1));
}

static int dent_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct dent *)elem)->name);
}

static int dent_cmp_sort(const void *a, const void *b)
{
    return strcmp(((const struct dent *)a)->name, ((const struct dent *)b)->name);
}

bool dcache_get(struct dcache *c, uint64_t dir, uint64_t cred, const char *name, Synod__V1__Attr *out,
                uint64_t *age_ns)
{
    if (!c->ttl_ns)
        return false;
    uint64_t now = clk_mono_ns(), gen = atomic_load(&c->gen);
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < DC_LISTS && !hit; i++) {
        struct dlist *l = &c->lists[i];
        if (!l->e || l->dir != dir || l->cred != cred)
            continue;
        if (l->gen != gen || now - l->fetched_ns >= c->ttl_ns) {
            if (l->gen != gen && l->hits < c->trigger)
                wasted(c, dir, cred, now);
            list_clear(l);
            continue;
        }
        const struct dent *d = bsearch(name, l->e, l->n, sizeof(*l->e), dent_cmp);
        if (d) {
            *out = d->attr;
            *age_ns = now - l->fetched_ns;
            hit = true;
            if (++l->hits == c->trigger) {
                struct dmiss *m = miss_find(c, dir, cred);
                if (m)
                    m->wasted = 0;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

struct dcache_fill *dcache_miss(struct dcache *c, uint64_t dir, uint64_t cred)
{
    if (!c->ttl_ns)
        return NULL;
    uint64_t now = clk_mono_ns();
    struct dcache_fill *f = NULL;
    pthread_mutex_lock(&c->mu);
    struct dmiss *m = miss_find(c, dir, cred), *oldest = &c->miss[0];
    for (int i = 0; i < DC_MISSES && !m; i++)
        if (!c->miss[i].fetching && c->miss[i].first_ns < oldest->first_ns)
            oldest = &c->miss[i];
    if (!m) {
        if (oldest->fetching) {
            pthread_mutex_unlock(&c->mu);
            return NULL;
        }
        m = oldest;
        *m = (struct dmiss){.dir = dir, .cred = cred, .first_ns = now};
    }
    if (now - m->first_ns > c->ttl_ns) { /* a new run of lookups */
        m->first_ns = now;
        m->count = 0;
    }
    m->count++;
    if (m->count >= c->trigger && !m->fetching && now >= m->quiet_until) {
        m->fetching = true;
        f = xcalloc(1, sizeof(*f));
        *f = (struct dcache_fill){.c = c, .dir = dir, .cred = cred, .gen = atomic_load(&c->gen)};
    }
    pthread_mutex_unlock(&c->mu);
    return f;
}

bool dcache_fill_add(struct dcache_fill *f, const char *name, const Synod__V1__Attr *a)
{
    if (f->too_big || f->n >= f->c->max_entries) {
        f->too_big = true;
        return false;
    }
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 1024;
        f->e = xrealloc(f->e, f->cap * sizeof(*f->e));
    }
    f->e[f->n].name = xstrdup(name);
    f->e[f->n].attr = *a;
    f->n++;
    return true;
}

void dcache_fill_end(struct dcache_fill *f, bool ok)
{
    struct dcache *c = f->c;
    struct dlist l = {.dir = f->dir, .cred = f->cred, .gen = f->gen, .e = f->e, .n = f->n};
    pthread_mutex_lock(&c->mu);
    uint64_t now = clk_mono_ns();
    for (int i = 0; i < DC_MISSES; i++) {
        struct dmiss *m = &c->miss[i];
        if (m->dir == f->dir && m->cred == f->cred && m->fetching) {
            m->fetching = false;
            m->count = 0;
            /* a failed or too large listing is not tried again for a while */
            if (!ok || f->too_big)
                m->quiet_until = now + 10 * c->ttl_ns;
        }
    }
    if (ok && !f->too_big && f->gen != atomic_load(&c->gen))
        wasted(c, f->dir, f->cred, now);
    if (ok && !f->too_big && f->gen == atomic_load(&c->gen)) {
        /* the sort order is Readdir's (name bytes); keep it for bsearch even if a page came back unsorted */
        for (size_t i = 1; i < l.n; i++) {
            if (strcmp(l.e[i - 1].name, l.e[i].name) >= 0) {
                qsort(l.e, l.n, sizeof(*l.e), dent_cmp_sort);
                break;
            }
        }
        l.fetched_ns = now;
        struct dlist *slot = &c->lists[0];
        for (int i = 0; i < DC_LISTS; i++) {
            struct dlist *s = &c->lists[i];
            if (s->e && s->dir == l.dir && s->cred == l.cred) {
                slot = s;
                break;
            }
            if (!s->e || s->fetched_ns < slot->fetched_ns)
                slot = s;
        }
        list_clear(slot);
        *slot = l;
        c->fills++;
        l.e = NULL;
        l.n = 0;
    }
    pthread_mutex_unlock(&c->mu);
    list_clear(&l);
    free(f);
}

void dcache_invalidate(struct dcache *c)
{
    atomic_fetch_add(&c->gen, 1);
}

uint64_t dcache_fills(struct dcache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->fills;
    pthread_mutex_unlock(&c->mu);
    return n;
}
