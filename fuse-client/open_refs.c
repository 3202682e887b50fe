/* open_refs.c - this mount's open inodes for the metaserver's memory opens (see open_refs.h). A chained hash
 * table of counts and a small list of the seqs of creates in flight, under one mutex. */
#include "fuse-client/open_refs.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/util.h"

struct ref {
    uint64_t ino, count;
    struct ref *next;
};

struct oref {
    pthread_mutex_t mu;
    struct ref **b;
    size_t nb, n;
    uint64_t seq;
    uint64_t *pending; /* seqs of creates in flight */
    size_t npending, cap_pending;
};

static size_t hash(uint64_t ino, size_t nb)
{
    uint64_t h = ino * 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ (h >> 31)) & (nb - 1);
}

static struct ref **slot(struct oref *o, uint64_t ino)
{
    struct ref **p = &o->b[hash(ino, o->nb)];
    while (*p && (*p)->ino != ino)
        p = &(*p)->next;
    return p;
}

static void grow(struct oref *o)
{
    size_t nb = o->nb * 2;
    struct ref **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < o->nb; i++) {
        for (struct ref *r = o->b[i], *nx; r; r = nx) {
            nx = r->next;
            size_t h = hash(r->ino, nb);
            r->next = b[h];
            b[h] = r;
        }
    }
    free(o->b);
    o->b = b;
    o->nb = nb;
}

/* count + 1 under mu */
static void inc(struct oref *o, uint64_t ino)
{
    struct ref **p = slot(o, ino);
    if (!*p) {
        if (o->n >= o->nb) {
            grow(o);
            p = slot(o, ino);
        }
        *p = xcalloc(1, sizeof(**p));
        (*p)->ino = ino;
        o->n++;
    }
    (*p)->count++;
}

struct oref *oref_new(void)
{
    struct oref *o = xcalloc(1, sizeof(*o));
    pthread_mutex_init(&o->mu, NULL);
    o->nb = 64;
    o->b = xcalloc(o->nb, sizeof(*o->b));
    return o;
}

void oref_free(struct oref *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->nb; i++) {
        for (struct ref *r = o->b[i], *nx; r; r = nx) {
            nx = r->next;
            free(r);
        }
    }
    free(o->b);
    free(o->pending);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

uint64_t oref_open_begin(struct oref *o, uint64_t ino)
{
    pthread_mutex_lock(&o->mu);
    inc(o, ino);
    uint64_t s = ++o->seq;
    pthread_mutex_unlock(&o->mu);
    return s;
}

uint64_t oref_create_begin(struct oref *o)
{
    pthread_mutex_lock(&o->mu);
    uint64_t s = ++o->seq;
    if (o->npending == o->cap_pending) {
        o->cap_pending = o->cap_pending ? o->cap_pending * 2 : 16;
        o->pending = xrealloc(o->pending, o->cap_pending * sizeof(*o->pending));
    }
    o->pending[o->npending++] = s;
    pthread_mutex_unlock(&o->mu);
    return s;
}

void oref_create_end(struct oref *o, uint64_t seq, uint64_t ino)
{
    pthread_mutex_lock(&o->mu);
    for (size_t i = 0; i < o->npending; i++) {
        if (o->pending[i] == seq) {
            o->pending[i] = o->pending[--o->npending];
            break;
        }
    }
    if (ino)
        inc(o, ino);
    pthread_mutex_unlock(&o->mu);
}

bool oref_put(struct oref *o, uint64_t ino, uint64_t *release_seq)
{
    bool last = false;
    pthread_mutex_lock(&o->mu);
    struct ref **p = slot(o, ino);
    if (*p && --(*p)->count == 0) {
        struct ref *r = *p;
        *p = r->next;
        free(r);
        o->n--;
        *release_seq = ++o->seq;
        last = true;
    }
    pthread_mutex_unlock(&o->mu);
    return last;
}

uint64_t oref_snapshot(struct oref *o, uint64_t **inos, size_t *n)
{
    pthread_mutex_lock(&o->mu);
    uint64_t *v = xmalloc((o->n ? o->n : 1) * sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < o->nb; i++)
        for (struct ref *r = o->b[i]; r; r = r->next)
            v[k++] = r->ino;
    uint64_t s = ++o->seq;
    for (size_t i = 0; i < o->npending; i++)
        s = MIN(s, o->pending[i]);
    pthread_mutex_unlock(&o->mu);
    *inos = v;
    *n = k;
    return s;
}

uint64_t oref_count(struct oref *o, uint64_t ino)
{
    pthread_mutex_lock(&o->mu);
    struct ref **p = slot(o, ino);
    uint64_t c = *p ? (*p)->count : 0;
    pthread_mutex_unlock(&o->mu);
    return c;
}
