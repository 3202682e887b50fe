/* cs_stop.c - a stop flag with an interruptible, monotonic sleep (see cs_stop.h). */
#include "chunkserver/cs_stop.h"

#include <time.h>

#include "common/clock.h"

void cs_stop_init(struct cs_stop *st)
{
    pthread_mutex_init(&st->mu, NULL);
    clk_cond_init(&st->cv);
    st->stopped = false;
    st->nudged = false;
}

void cs_stop_destroy(struct cs_stop *st)
{
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
}

void cs_stop_raise(struct cs_stop *st)
{
    pthread_mutex_lock(&st->mu);
    st->stopped = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

bool cs_stop_raised(struct cs_stop *st)
{
    pthread_mutex_lock(&st->mu);
    bool r = st->stopped;
    pthread_mutex_unlock(&st->mu);
    return r;
}

bool cs_stop_sleep_ms(struct cs_stop *st, uint64_t ms)
{
    uint64_t until = clk_mono_ns() + ms * NS_PER_MS;
    struct timespec ts = {.tv_sec = (time_t)(until / NS_PER_SEC), .tv_nsec = (long)(until % NS_PER_SEC)};
    pthread_mutex_lock(&st->mu);
    while (!st->stopped && clk_mono_ns() < until)
        pthread_cond_timedwait(&st->cv, &st->mu, &ts);
    bool r = st->stopped;
    pthread_mutex_unlock(&st->mu);
    return r;
}

void cs_stop_nudge(struct cs_stop *st)
{
    pthread_mutex_lock(&st->mu);
    st->nudged = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

bool cs_stop_wait(struct cs_stop *st, uint64_t ms, bool *nudged)
{
    uint64_t until = clk_mono_ns() + ms * NS_PER_MS;
    struct timespec ts = {.tv_sec = (time_t)(until / NS_PER_SEC), .tv_nsec = (long)(until % NS_PER_SEC)};
    pthread_mutex_lock(&st->mu);
    while (!st->stopped && !st->nudged && clk_mono_ns() < until)
        pthread_cond_timedwait(&st->cv, &st->mu, &ts);
    bool r = st->stopped;
    *nudged = st->nudged;
    st->nudged = false;
    pthread_mutex_unlock(&st->mu);
    return r;
}
