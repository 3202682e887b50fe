/* cs_scrub.h - the background scrubber: re-verifies every stored block's CRC at a throttled rate.
 *
 * One thread walks the store with a cstore_scrub cursor, STEP_BLOCKS blocks at a time, and sleeps so that
 * the blocks verified (counted as 64 KiB each) stay at or under `rate_bytes` per second. A corrupt block is
 * logged and its chunk handed to `on_bad` (the control client reports it lost, so the metaserver
 * re-replicates it from a good copy); a block whose current slot is corrupt but whose older slot is valid
 * counts as corrupt too, because that replica would serve stale data. Between passes it rests `pause_ms`.
 * An I/O error while scrubbing marks the data dir failed inside the store (its chunks then go out as lost
 * in the next heartbeat), so the scrubber also detects dead disks that no client touches.
 */
#ifndef SYNOD_CS_SCRUB_H
#define SYNOD_CS_SCRUB_H

#include <stdint.h>

#include "chunkserver/chunk_store.h"

typedef void (*cs_scrub_bad_fn)(void *arg, uint64_t chunk_id, uint32_t version);

struct cs_scrubber; /* opaque */

/* Start scrubbing `store` (borrowed). rate_bytes == 0 disables the scrubber (returns NULL). Cannot fail. */
struct cs_scrubber *cs_scrub_start(struct cstore *store, uint64_t rate_bytes, uint64_t pause_ms,
                                   cs_scrub_bad_fn on_bad, void *arg);
/* Stop and free (joins the thread; at most one step of disk reads). NULL is a no-op. */
void cs_scrub_stop(struct cs_scrubber *sc);

#endif
