/* dir_cache.c - lookup look-ahead from directory listings (see dir_cache.h). A few listings (pointers to
 * entries sorted by name as Readdir returns them, binary searched; this mount's own name changes are
 * inserted in place) and a small table of recent misses per directory. */
#include "fuse-client/dir_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/util.h"

#define DC_LISTS 4  /* listings kept */
#define DC_MISSES 16 /* directories whose misses are counted */

/* A name of a listing. `maybe`: this mount changed the name since the listing was fetched (created,
 * removed or renamed it): it may or may not exist now, so it answers neither way (no attributes, and no
 * "no such name" either). */
struct dent {
    Synod__V1__Attr attr;
    bool maybe;
    char name[];
};

struct dlist {
    uint64_t dir, cred, gen, ngen, fetched_ns, hits;
    struct dent **e; /* sorted by name (bytes) */
    size_t n, cap;
    bool used;       /* a listing (an empty directory has none of e) */
    bool stale_seen; /* its attributes went stale (gen) and that was counted */
};

struct dmiss {
    uint64_t dir, cred, first_ns, quiet_until;
    uint32_t count, wasted; /* wasted: listings in a row whose attributes went stale before they answered
                             * `trigger` lookups */
    bool fetching;
};

struct dcache {
    pthread_mutex_t mu;
    uint64_t ttl_ns;
    uint32_t trigger, max_entries;
    atomic_uint_fast64_t gen;  /* attributes: any change through this mount */
    atomic_uint_fast64_t ngen; /* names: a change that could not be patched into the listings */
    struct dlist lists[DC_LISTS];
    struct dmiss miss[DC_MISSES];
    struct dcache_fill *filling; /* fills running (under mu): they collect the names touched meanwhile */
    uint64_t fills, negatives;
};

struct dcache_fill {
    struct dcache *c;
    uint64_t dir, cred, gen, ngen;
    struct dent **e;
    size_t n, cap;
    bool too_big;
    char **touched; /* names of dir this mount changed while the fill ran (under c->mu) */
    size_t ntouched;
    struct dcache_fill *next;
};

static struct dent *dent_new(const char *name, const Synod__V1__Attr *a)
{
    size_t len = strlen(name) + 1;
    struct dent *d = xmalloc(sizeof(*d) + len);
    if (a) {
        d->attr = *a;
        d->maybe = false;
    } else {
        synod__v1__attr__init(&d->attr);
        d->maybe = true;
    }
    memcpy(d->name, name, len);
    return d;
}

static void list_clear(struct dlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i]);
    free(l->e);
    memset(l, 0, sizeof(*l));
}

/* Index of name in l, or of where it would go (*found false). */
static size_t list_find(const struct dlist *l, const char *name, bool *found)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(name, l->e[mid]->name);
        if (r == 0) {
            *found = true;
            return mid;
        }
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    *found = false;
    return lo;
}

/* This mount changed `name` in l's directory: mark it (adding it if absent). False if l grew too large. */
static bool list_touch(struct dlist *l, const char *name, uint32_t max_entries)
{
    bool found;
    size_t i = list_find(l, name, &found);
    if (found) {
        l->e[i]->maybe = true;
        return true;
    }
    if (l->n >= max_entries)
        return false;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->e = xrealloc(l->e, l->cap * sizeof(*l->e));
    }
    memmove(&l->e[i + 1], &l->e[i], (l->n - i) * sizeof(*l->e));
    l->e[i] = dent_new(name, NULL);
    l->n++;
    return true;
}

struct dcache *dcache_new(uint64_t ttl_ns, uint32_t trigger, uint32_t max_entries)
{
    struct dcache *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    c->ttl_ns = ttl_ns;
    c->trigger = MAX(trigger, 1u);
    c->max_entries = max_entries;
    atomic_init(&c->gen, 1);
    atomic_init(&c->ngen, 1);
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

static int dent_cmp_sort(const void *a, const void *b)
{
    return strcmp((*(struct dent *const *)a)->name, (*(struct dent *const *)b)->name);
}

/* The fresh listing of (dir, cred), or NULL; drops an expired one. Under mu. */
static struct dlist *list_of(struct dcache *c, uint64_t dir, uint64_t cred, uint64_t now)
{
    uint64_t ngen = atomic_load(&c->ngen);
    for (int i = 0; i < DC_LISTS; i++) {
        struct dlist *l = &c->lists[i];
        if (!l->used || l->dir != dir || l->cred != cred)
            continue;
        if (l->ngen != ngen || now - l->fetched_ns >= c->ttl_ns) {
            list_clear(l);
            continue;
        }
        return l;
    }
    return NULL;
}

/* l answered a lookup: once it has answered `trigger`, it was worth its fetch. Under mu. */
static void list_hit(struct dcache *c, struct dlist *l)
{
    if (++l->hits == c->trigger) {
        struct dmiss *m = miss_find(c, l->dir, l->cred);
        if (m)
            m->wasted = 0;
    }
}

bool dcache_get(struct dcache *c, uint64_t dir, uint64_t cred, const char *name, Synod__V1__Attr *out,
                uint64_t *age_ns)
{
    if (!c->ttl_ns)
        return false;
    uint64_t now = clk_mono_ns(), gen = atomic_load(&c->gen);
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    struct dlist *l = list_of(c, dir, cred, now);
    if (l && l->gen != gen) {
        /* a change through this mount: every attribute may be stale (names are patched, see dcache_touch) */
        if (!l->stale_seen && l->hits < c->trigger)
            wasted(c, dir, cred, now);
        l->stale_seen = true;
    } else if (l) {
        bool found;
        size_t i = list_find(l, name, &found);
        if (found && !l->e[i]->maybe) {
            *out = l->e[i]->attr;
            *age_ns = now - l->fetched_ns;
            hit = true;
            list_hit(c, l);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

bool dcache_absent(struct dcache *c, uint64_t dir, uint64_t cred, const char *name, uint64_t *age_ns)
{
    if (!c->ttl_ns)
        return false;
    uint64_t now = clk_mono_ns();
    bool absent = false;
    pthread_mutex_lock(&c->mu);
    struct dlist *l = list_of(c, dir, cred, now);
    if (l) {
        bool found;
        list_find(l, name, &found);
        if (!found) {
            absent = true;
            *age_ns = now - l->fetched_ns;
            list_hit(c, l);
            c->negatives++;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return absent;
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
        *f = (struct dcache_fill){.c = c, .dir = dir, .cred = cred, .gen = atomic_load(&c->gen),
                                  .ngen = atomic_load(&c->ngen), .next = c->filling};
        c->filling = f;
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
    f->e[f->n++] = dent_new(name, a);
    return true;
}

void dcache_fill_end(struct dcache_fill *f, bool ok)
{
    struct dcache *c = f->c;
    struct dlist l = {.dir = f->dir, .cred = f->cred, .gen = f->gen, .ngen = f->ngen, .e = f->e, .n = f->n,
                      .cap = f->cap};
    pthread_mutex_lock(&c->mu);
    for (struct dcache_fill **pp = &c->filling; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
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
    /* Changes through this mount while the pages came are in f->touched (their names are unsure: the page
     * holding them may have been read before or after); one that could not be patched moved ngen. */
    bool install = ok && !f->too_big && f->ngen == atomic_load(&c->ngen);
    if (install) {
        /* the sort order is Readdir's (name bytes); keep it for the binary search even if a page came back
         * unsorted */
        for (size_t i = 1; i < l.n; i++) {
            if (strcmp(l.e[i - 1]->name, l.e[i]->name) >= 0) {
                qsort(l.e, l.n, sizeof(*l.e), dent_cmp_sort);
                break;
            }
        }
        for (size_t i = 0; i < f->ntouched && install; i++)
            install = list_touch(&l, f->touched[i], c->max_entries);
    }
    if (install) {
        l.fetched_ns = now;
        l.used = true;
        struct dlist *slot = &c->lists[0];
        for (int i = 0; i < DC_LISTS; i++) {
            struct dlist *s = &c->lists[i];
            if (s->used && s->dir == l.dir && s->cred == l.cred) {
                slot = s;
                break;
            }
            if (!s->used || s->fetched_ns < slot->fetched_ns)
                slot = s;
        }
        list_clear(slot);
        *slot = l;
        c->fills++;
        memset(&l, 0, sizeof(l));
    }
    pthread_mutex_unlock(&c->mu);
    list_clear(&l);
    for (size_t i = 0; i < f->ntouched; i++)
        free(f->touched[i]);
    free(f->touched);
    free(f);
}

void dcache_invalidate(struct dcache *c)
{
    atomic_fetch_add(&c->gen, 1);
}

void dcache_touch(struct dcache *c, uint64_t dir, const char *name)
{
    atomic_fetch_add(&c->gen, 1);
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < DC_LISTS; i++) {
        struct dlist *l = &c->lists[i];
        if (l->used && l->dir == dir && !list_touch(l, name, c->max_entries))
            list_clear(l);
    }
    for (struct dcache_fill *f = c->filling; f; f = f->next) {
        if (f->dir == dir) {
            f->touched = xrealloc(f->touched, (f->ntouched + 1) * sizeof(*f->touched));
            f->touched[f->ntouched++] = xstrdup(name);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

void dcache_forget_names(struct dcache *c)
{
    atomic_fetch_add(&c->gen, 1);
    atomic_fetch_add(&c->ngen, 1);
}

uint64_t dcache_fills(struct dcache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->fills;
    pthread_mutex_unlock(&c->mu);
    return n;
}

uint64_t dcache_negatives(struct dcache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->negatives;
    pthread_mutex_unlock(&c->mu);
    return n;
}
