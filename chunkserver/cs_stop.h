/* cs_stop.h - a stop flag that background threads sleep on: a sleep ends early when the flag is raised.
 *
 * The chunkserver's control thread and scrubber sleep between rounds (heartbeat interval, throttling);
 * shutdown must not wait out those sleeps. The condition variable uses the monotonic clock. Thread-safe.
 */
#ifndef SYNOD_CS_STOP_H
#define SYNOD_CS_STOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct cs_stop {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopped;
    bool nudged; /* cs_stop_nudge since the last cs_stop_wait */
};

void cs_stop_init(struct cs_stop *st);
void cs_stop_destroy(struct cs_stop *st);
/* Raise the flag and wake every sleeper. */
void cs_stop_raise(struct cs_stop *st);
bool cs_stop_raised(struct cs_stop *st);
/* Sleep up to ms milliseconds; returns true if the flag is (or becomes) raised. */
bool cs_stop_sleep_ms(struct cs_stop *st, uint64_t ms);
/* Wake a cs_stop_wait early (without raising the flag); a nudge while nobody waits ends the next wait. */
void cs_stop_nudge(struct cs_stop *st);
/* Like cs_stop_sleep_ms, but a nudge also ends it (*nudged tells). */
bool cs_stop_wait(struct cs_stop *st, uint64_t ms, bool *nudged);

#endif
