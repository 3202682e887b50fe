/* clock.h - time sources. Protocol timing (leases, timeouts, heartbeats) uses only the monotonic clock;
 * wall-clock time is for file timestamps chosen by the leader and for log lines. Thread-safe, non-blocking.
 */
#ifndef SYNOD_CLOCK_H
#define SYNOD_CLOCK_H

#include <pthread.h>
#include <stdint.h>

#define NS_PER_US 1000ull
#define NS_PER_MS 1000000ull
#define NS_PER_SEC 1000000000ull

/* CLOCK_MONOTONIC in nanoseconds. Cannot fail. */
uint64_t clk_mono_ns(void);
/* CLOCK_REALTIME in nanoseconds since the Unix epoch. Cannot fail. */
int64_t clk_real_ns(void);
/* Sleep for ns nanoseconds (restarts on EINTR). */
void clk_sleep_ns(uint64_t ns);
/* Initialise a condition variable whose timed waits take CLOCK_MONOTONIC deadlines (clk_mono_ns based), so
 * a wall-clock step never stretches or cuts a wait. Panics on failure (cannot happen with valid memory). */
void clk_cond_init(pthread_cond_t *cv);

#endif
