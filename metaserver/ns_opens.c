/* ns_opens.c - the leader's memory opens (see ns_opens.h). Four chained hash tables under one mutex:
 * entries by (session, ino), holders per ino (a count, for the purge check), reported sessions, and each
 * session's entries (a count and a list through the entries), so that a session's report or drop costs
 * its own entries, not a walk over every session's. */
#include "metaserver/ns_opens.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/util.h"

struct ent {
    uint64_t session, ino, seq;
    uint32_t pending; /* opens being checked (ns_opens_begin) */
    bool confirmed;   /* an open succeeded (or was reported) */
    struct ent *next;
    struct ent *sprev, *snext; /* the session's list */
};
struct cnt {
    uint64_t key;
    uint64_t n;
    struct cnt *next;
    struct ent *head; /* sessions table: the session's entries */
};
struct htab {
    void **b;
    size_t nb, n;
};

struct ns_opens {
    pthread_mutex_t mu;
    struct htab ents;     /* struct ent */
    struct htab holders;  /* struct cnt: ino -> sessions holding it */
    struct htab reported; /* struct cnt: session -> 1 */
    struct htab sessions; /* struct cnt: session -> its entries (n, head) */
};

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t h = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull + (a << 6) + (a >> 2));
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static void htab_init(struct htab *t)
{
    t->nb = 64;
    t->n = 0;
    t->b = xcalloc(t->nb, sizeof(void *));
}

/* The three tables chain through a `next` pointer at different offsets; each has its own grow. */
static void ents_grow(struct htab *t)
{
    size_t nb = t->nb * 2;
    void **b = xcalloc(nb, sizeof(void *));
    for (size_t i = 0; i < t->nb; i++) {
        for (struct ent *e = t->b[i], *nx; e; e = nx) {
            nx = e->next;
            size_t h = mix(e->session, e->ino) & (nb - 1);
            e->next = b[h];
            b[h] = e;
        }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

static void cnts_grow(struct htab *t)
{
    size_t nb = t->nb * 2;
    void **b = xcalloc(nb, sizeof(void *));
    for (size_t i = 0; i < t->nb; i++) {
        for (struct cnt *c = t->b[i], *nx; c; c = nx) {
            nx = c->next;
            size_t h = mix(c->key, 0) & (nb - 1);
            c->next = b[h];
            b[h] = c;
        }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

static struct ent **ent_slot(struct htab *t, uint64_t session, uint64_t ino)
{
    struct ent **p = (struct ent **)&t->b[mix(session, ino) & (t->nb - 1)];
    while (*p && ((*p)->session != session || (*p)->ino != ino))
        p = &(*p)->next;
    return p;
}

static struct cnt **cnt_slot(struct htab *t, uint64_t key)
{
    struct cnt **p = (struct cnt **)&t->b[mix(key, 0) & (t->nb - 1)];
    while (*p && (*p)->key != key)
        p = &(*p)->next;
    return p;
}

/* Add d (+1 or -1) to key's count; the record goes at zero. */
static void cnt_add(struct htab *t, uint64_t key, int d)
{
    struct cnt **p = cnt_slot(t, key);
    if (!*p) {
        if (d < 0)
            return;
        if (t->n >= t->nb) {
            cnts_grow(t);
            p = cnt_slot(t, key);
        }
        struct cnt *c = xcalloc(1, sizeof(*c));
        c->key = key;
        *p = c;
        t->n++;
    }
    struct cnt *c = *p;
    if (d > 0) {
        c->n++;
    } else if (--c->n == 0) {
        *p = c->next;
        free(c);
        t->n--;
    }
}

/* Remove the entry at *p (and its holder count, and from its session's list). */
static void ent_unlink(struct ns_opens *o, struct ent **p)
{
    struct ent *e = *p;
    *p = e->next;
    o->ents.n--;
    cnt_add(&o->holders, e->ino, -1);
    if (e->sprev)
        e->sprev->snext = e->snext;
    else
        (*cnt_slot(&o->sessions, e->session))->head = e->snext;
    if (e->snext)
        e->snext->sprev = e->sprev;
    cnt_add(&o->sessions, e->session, -1);
    free(e);
}

/* Unlink every entry of `session` for which drop(e, arg) says so. */
static void session_unlink(struct ns_opens *o, uint64_t session, bool (*drop)(const struct ent *e, uint64_t arg),
                           uint64_t arg)
{
    struct cnt *sc = *cnt_slot(&o->sessions, session);
    for (struct ent *e = sc ? sc->head : NULL, *nx; e; e = nx) {
        nx = e->snext; /* unlinking e may free the session's record too, but never nx */
        if (drop(e, arg))
            ent_unlink(o, ent_slot(&o->ents, e->session, e->ino));
    }
}

static void clear_all(struct ns_opens *o)
{
    for (size_t i = 0; i < o->ents.nb; i++) {
        for (struct ent *e = o->ents.b[i], *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    }
    struct htab *cs[] = {&o->holders, &o->reported, &o->sessions};
    for (size_t k = 0; k < ARRAY_SIZE(cs); k++) {
        for (size_t i = 0; i < cs[k]->nb; i++) {
            for (struct cnt *c = cs[k]->b[i], *nx; c; c = nx) {
                nx = c->next;
                free(c);
            }
        }
        free(cs[k]->b);
        htab_init(cs[k]);
    }
    free(o->ents.b);
    htab_init(&o->ents);
}

struct ns_opens *ns_opens_new(void)
{
    struct ns_opens *o = xcalloc(1, sizeof(*o));
    pthread_mutex_init(&o->mu, NULL);
    htab_init(&o->ents);
    htab_init(&o->holders);
    htab_init(&o->reported);
    htab_init(&o->sessions);
    return o;
}

void ns_opens_free(struct ns_opens *o)
{
    if (!o)
        return;
    clear_all(o);
    free(o->ents.b);
    free(o->holders.b);
    free(o->reported.b);
    free(o->sessions.b);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

void ns_opens_reset(struct ns_opens *o)
{
    pthread_mutex_lock(&o->mu);
    clear_all(o);
    pthread_mutex_unlock(&o->mu);
}

/* Register under mu (confirmed, or one more pending check); true if new. */
static bool reg_locked(struct ns_opens *o, uint64_t session, uint64_t ino, uint64_t seq, bool pending)
{
    struct ent **p = ent_slot(&o->ents, session, ino);
    if (*p) {
        if (seq > (*p)->seq)
            (*p)->seq = seq;
        if (pending)
            (*p)->pending++;
        else
            (*p)->confirmed = true;
        return false;
    }
    if (o->ents.n >= o->ents.nb) {
        ents_grow(&o->ents);
        p = ent_slot(&o->ents, session, ino);
    }
    struct ent *e = xcalloc(1, sizeof(*e));
    e->session = session;
    e->ino = ino;
    e->seq = seq;
    e->pending = pending;
    e->confirmed = !pending;
    *p = e;
    o->ents.n++;
    cnt_add(&o->holders, ino, +1);
    cnt_add(&o->sessions, session, +1);
    struct cnt *sc = *cnt_slot(&o->sessions, session);
    e->snext = sc->head;
    if (sc->head)
        sc->head->sprev = e;
    sc->head = e;
    return true;
}

bool ns_opens_register(struct ns_opens *o, uint64_t session, uint64_t ino, uint64_t seq)
{
    pthread_mutex_lock(&o->mu);
    bool fresh = reg_locked(o, session, ino, seq, false);
    pthread_mutex_unlock(&o->mu);
    return fresh;
}

void ns_opens_begin(struct ns_opens *o, uint64_t session, uint64_t ino, uint64_t seq, bool *held)
{
    pthread_mutex_lock(&o->mu);
    struct ent **p = ent_slot(&o->ents, session, ino);
    *held = *p && (*p)->confirmed;
    reg_locked(o, session, ino, seq, true);
    pthread_mutex_unlock(&o->mu);
}

void ns_opens_end(struct ns_opens *o, uint64_t session, uint64_t ino, bool ok)
{
    pthread_mutex_lock(&o->mu);
    struct ent **p = ent_slot(&o->ents, session, ino);
    if (*p) { /* absent only after a reset or a session drop */
        if ((*p)->pending)
            (*p)->pending--;
        if (ok)
            (*p)->confirmed = true;
        else if (!(*p)->confirmed && !(*p)->pending)
            ent_unlink(o, p);
    }
    pthread_mutex_unlock(&o->mu);
}

void ns_opens_release(struct ns_opens *o, uint64_t session, uint64_t ino, uint64_t seq)
{
    pthread_mutex_lock(&o->mu);
    struct ent **p = ent_slot(&o->ents, session, ino);
    if (*p && (*p)->seq < seq && !(*p)->pending)
        ent_unlink(o, p);
    pthread_mutex_unlock(&o->mu);
}

static bool older_settled(const struct ent *e, uint64_t seq)
{
    return e->seq < seq && !e->pending;
}

static bool any_ent(const struct ent *e, uint64_t arg)
{
    UNUSED(e);
    UNUSED(arg);
    return true;
}

void ns_opens_report(struct ns_opens *o, uint64_t session, uint64_t seq, const uint64_t *inos, size_t n)
{
    pthread_mutex_lock(&o->mu);
    /* drop this session's entries older than the report; the listed ones come back just below */
    session_unlink(o, session, older_settled, seq);
    for (size_t i = 0; i < n; i++)
        reg_locked(o, session, inos[i], seq, false);
    if (!*cnt_slot(&o->reported, session))
        cnt_add(&o->reported, session, +1);
    pthread_mutex_unlock(&o->mu);
}

bool ns_opens_reported(struct ns_opens *o, uint64_t session)
{
    pthread_mutex_lock(&o->mu);
    bool r = *cnt_slot(&o->reported, session) != NULL;
    pthread_mutex_unlock(&o->mu);
    return r;
}

bool ns_opens_held(struct ns_opens *o, uint64_t ino)
{
    pthread_mutex_lock(&o->mu);
    bool r = *cnt_slot(&o->holders, ino) != NULL;
    pthread_mutex_unlock(&o->mu);
    return r;
}

bool ns_opens_holds(struct ns_opens *o, uint64_t session, uint64_t ino)
{
    pthread_mutex_lock(&o->mu);
    bool r = *ent_slot(&o->ents, session, ino) != NULL;
    pthread_mutex_unlock(&o->mu);
    return r;
}

void ns_opens_session_drop(struct ns_opens *o, uint64_t session)
{
    pthread_mutex_lock(&o->mu);
    session_unlink(o, session, any_ent, 0);
    struct cnt **c = cnt_slot(&o->reported, session);
    if (*c)
        cnt_add(&o->reported, session, -1);
    pthread_mutex_unlock(&o->mu);
}

size_t ns_opens_count(struct ns_opens *o)
{
    pthread_mutex_lock(&o->mu);
    size_t n = o->ents.n;
    pthread_mutex_unlock(&o->mu);
    return n;
}
