/* ns_service_csmon.c - the leader's heartbeat table (see ns_service_csmon.h).
 *
 * A small array of entries found by linear search: a cluster has tens to hundreds of chunkservers, each
 * heard about once a second, so this is never hot.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "metaserver/ns_service_csmon.h"

#define LOG_MIN_DELTA (64ull << 20)

struct ent {
    uint32_t id;
    bool heard;          /* a heartbeat arrived (else: only the grace period started) */
    bool logged;         /* figures logged by this leader */
    uint64_t last_ns;    /* last heartbeat, or the start of the grace period */
    uint64_t logged_ns;
    uint64_t reported_ns; /* when it was last reported dead (0: never) */
    struct csmon_stats st, logged_st;
};

struct csmon {
    pthread_mutex_t mu;
    uint64_t timeout_ns, log_every_ns;
    struct ent *v;
    size_t n, cap;
};

struct csmon *csmon_new(uint64_t timeout_ns, uint64_t log_every_ns)
{
    struct csmon *m = xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
    m->timeout_ns = timeout_ns;
    m->log_every_ns = log_every_ns;
    return m;
}

void csmon_free(struct csmon *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m->v);
    free(m);
}

uint64_t csmon_timeout_ns(const struct csmon *m)
{
    return m->timeout_ns;
}

void csmon_reset(struct csmon *m)
{
    pthread_mutex_lock(&m->mu);
    m->n = 0;
    pthread_mutex_unlock(&m->mu);
}

/* Find or add; called with mu held. A new entry's clock starts at now. */
static struct ent *ent_get(struct csmon *m, uint32_t id, uint64_t now)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i].id == id)
            return &m->v[i];
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->v = xrealloc(m->v, m->cap * sizeof(*m->v));
    }
    struct ent *e = &m->v[m->n++];
    memset(e, 0, sizeof(*e));
    e->id = id;
    e->last_ns = now;
    return e;
}

/* Time from `then` to `now`, 0 if `then` is later: the caller's `now` may have been read before another
 * thread stored a newer time (a heartbeat arriving while the tick runs), and a wrapped difference would
 * make a chunkserver heard a moment ago look silent for centuries. */
static uint64_t since(uint64_t now, uint64_t then)
{
    return now > then ? now - then : 0;
}

static uint64_t absdiff(uint64_t a, uint64_t b)
{
    return a > b ? a - b : b - a;
}

bool csmon_heard(struct csmon *m, uint32_t id, uint64_t now, const struct csmon_stats *st)
{
    pthread_mutex_lock(&m->mu);
    struct ent *e = ent_get(m, id, now);
    e->heard = true;
    e->last_ns = now;
    e->reported_ns = 0;
    e->st = *st;
    /* 1% of the capacity, at least 64 MiB, but 5% of a small one: a chunkserver of a few hundred MiB could
     * otherwise fill up without the placement seeing it before the forced log */
    uint64_t delta = MAX(st->total / 100, MIN(LOG_MIN_DELTA, st->total / 20));
    bool log = !e->logged || since(now, e->logged_ns) >= m->log_every_ns || st->total != e->logged_st.total ||
               absdiff(st->used, e->logged_st.used) > delta || st->failed_dirs != e->logged_st.failed_dirs;
    pthread_mutex_unlock(&m->mu);
    return log;
}

void csmon_logged(struct csmon *m, uint32_t id, uint64_t now, const struct csmon_stats *st)
{
    pthread_mutex_lock(&m->mu);
    struct ent *e = ent_get(m, id, now);
    e->logged = true;
    e->logged_ns = now;
    e->logged_st = *st;
    pthread_mutex_unlock(&m->mu);
}

void csmon_forget(struct csmon *m, uint32_t id)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].id == id) {
            m->v[i] = m->v[--m->n];
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

size_t csmon_dead(struct csmon *m, uint64_t now, const uint32_t *alive, size_t n, uint32_t *out)
{
    size_t k = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        struct ent *e = ent_get(m, alive[i], now);
        if (since(now, e->last_ns) <= m->timeout_ns)
            continue;
        if (e->reported_ns && since(now, e->reported_ns) <= m->timeout_ns)
            continue; /* reported; give the proposal time to land */
        e->reported_ns = now;
        out[k++] = alive[i];
    }
    pthread_mutex_unlock(&m->mu);
    return k;
}

bool csmon_get(struct csmon *m, uint32_t id, struct csmon_stats *st, uint64_t *heard_ns)
{
    bool found = false;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n && !found; i++) {
        if (m->v[i].id == id && m->v[i].heard) {
            if (st)
                *st = m->v[i].st;
            if (heard_ns)
                *heard_ns = m->v[i].last_ns;
            found = true;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return found;
}
