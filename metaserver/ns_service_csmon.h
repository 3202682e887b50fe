/* ns_service_csmon.h - the leader's in-memory view of chunkserver heartbeats, and dead detection.
 *
 * Heartbeats arrive every second or so from every chunkserver; logging each through Paxos would cost a
 * fsync on every replica for nothing that changes the state. So the leader keeps the latest figures
 * (capacity, usage, load, chunk count) and the time it last heard each chunkserver here, on ITS monotonic
 * clock, and logs a heartbeat only when the state must change: command results or lost chunks (decided by
 * the caller), the first heartbeat this leader sees from a chunkserver, usage or capacity that moved by
 * more than max(1% of capacity, min(64 MiB, 5% of capacity)) since the last logged figures, or every
 * `log_every_ns` (so the state's figures used for placement and statfs stay roughly current).
 *
 * Dead detection: a chunkserver that the state says is alive and that this leader has not heard for
 * `timeout_ns` is dead. A leader knows nothing of heartbeats its predecessor received, so a chunkserver
 * it has never heard gets a full grace period counted from the first time the leader asks
 * (csmon_reset on taking over forgets everything for the same reason). A death is reported once, and
 * again only if it is still alive in the state `timeout_ns` later (the proposal may have been lost).
 *
 * Time is an explicit argument everywhere (monotonic ns), so the logic is tested with a fake clock.
 * Thread safety: every function takes the monitor's mutex (heartbeat handlers on RPC workers, the tick on
 * the runtime thread). Nothing blocks.
 */
#ifndef SYNOD_NS_SERVICE_CSMON_H
#define SYNOD_NS_SERVICE_CSMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct csmon_stats {
    uint64_t total, used, logical;
    uint32_t chunks, load, failed_dirs;
};

struct csmon; /* opaque */

/* A monitor with the dead timeout and the forced-log period (both ns). Cannot fail. */
struct csmon *csmon_new(uint64_t timeout_ns, uint64_t log_every_ns);
void csmon_free(struct csmon *m);
uint64_t csmon_timeout_ns(const struct csmon *m);

/* Forget everything (a new leader): every chunkserver gets a fresh grace period. */
void csmon_reset(struct csmon *m);

/* A heartbeat from `id` at `now` with figures `st`. Returns true if the figures should be logged (see
 * top); the caller then logs and calls csmon_logged once the log accepted them. */
bool csmon_heard(struct csmon *m, uint32_t id, uint64_t now, const struct csmon_stats *st);
/* The figures `st` of `id` reached the state at `now`. */
void csmon_logged(struct csmon *m, uint32_t id, uint64_t now, const struct csmon_stats *st);
/* The chunkserver was declared dead or re-registered: drop its entry (the next heartbeat is logged). */
void csmon_forget(struct csmon *m, uint32_t id);

/* Of the chunkservers alive in the state (alive[0..n)), those silent for longer than the timeout at
 * `now`, written to out (capacity n). Chunkservers seen for the first time start their grace period now.
 * Returns the count. */
size_t csmon_dead(struct csmon *m, uint64_t now, const uint32_t *alive, size_t n, uint32_t *out);

/* The latest figures of `id` and when they arrived; false if unknown. */
bool csmon_get(struct csmon *m, uint32_t id, struct csmon_stats *st, uint64_t *heard_ns);

#endif
