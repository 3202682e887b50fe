/* cs_control.h - the chunkserver's control client: registration, heartbeats, chunk reports, commands.
 *
 * PROTOCOL (proto ChunkControl, client side). One thread:
 *  1. Register with the metaserver leader. The configured addresses are tried in order; a reply -EREMOTE
 *     with detail "leader=host:port" is followed at once (that address becomes the target, even if it is
 *     not in the list); -ENOTCONN, -ETIMEDOUT or any other error moves to the next address. After a full
 *     round without success it waits (200 ms, doubling to 2 s) and starts again. The request carries the
 *     persisted id (0 the first time) and uuid; the id the leader returns is persisted before use.
 *  2. Send a full chunk report (ChunkReport pages of CS_REPORT_PAGE chunks, first/last flags; an empty
 *     store sends one empty page with both) after every registration and whenever a heartbeat reply sets
 *     report_wanted.
 *  3. Heartbeat every heartbeat_ms (the RegisterRep value if non-zero, else the configured one): capacity
 *     (total_bytes of the data dirs' file systems), used_bytes (total - available on those file systems),
 *     logical_bytes, chunk count, load (data requests in flight), failed dir count, the results of finished
 *     commands and the chunks lost since the last delivered heartbeat (cstore_take_lost + corrupt chunks
 *     the scrubber found). Results and lost chunks are removed only once a heartbeat carrying them succeeded.
 *     A failed heartbeat (or -EREMOTE) means: register again (following the leader hint if any).
 *  4. Commands from heartbeat replies run on a small worker pool, so a slow replicate never delays a
 *     heartbeat. A command id already queued, running or awaiting delivery of its result is ignored.
 *     CMD_DELETE: cstore_delete (version 0 = any version). CMD_SET_VERSION: version -> new_version.
 *     CMD_REPLICATE: pull the chunk from `source` with Copy pages of stored blocks, store them verbatim
 *     under the temporary version 0 (so a crash mid-copy leaves a chunk the metaserver sees as stale),
 *     sync, then rename to the wanted version; a failed copy deletes the partial chunk. Copies are throttled
 *     to copy_rate bytes per second of stored data, one budget shared by all workers (each page received
 *     is paid for by sleeping until the shared clock allows it). The result (0 or
 *     the errno, e.g. -ENOENT for a delete of an absent chunk) goes into the next heartbeat.
 *
 * IDENTITY. "<first data dir>/chunkserver.id" holds "id=N" and "uuid=..." (written atomically: temp file,
 * fsync, rename, dir fsync), so a restarted chunkserver keeps its id.
 *
 * THREADS. cs_control_* functions are thread-safe. The control thread and workers block on RPCs.
 */
#ifndef SYNOD_CS_CONTROL_H
#define SYNOD_CS_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "chunkserver/chunk_store.h"
#include "chunkserver/cs_service.h"

#define CS_REPORT_PAGE 4096

struct cs_control_config {
    const char *const *metaservers; /* host:port (borrowed for the lifetime of the control client) */
    size_t nmetaservers;            /* >= 1 */
    const char *addr;               /* advertised data-service address (copied) */
    const char *label;              /* copied; may be "" */
    const char *id_path;            /* identity file (copied) */
    uint64_t heartbeat_ms;          /* > 0 */
    int workers;                    /* command workers (0 = 2) */
    uint64_t copy_rate;             /* CMD_REPLICATE pull rate, bytes/s shared by all copies (0 = unlimited) */
};

struct cs_control; /* opaque */

/* Load (or create) the identity, then start the control thread and the workers. `store` and `svc` are
 * borrowed and must outlive the control client. Returns 0, or -errno if the identity file cannot be read
 * or written. */
int cs_control_start(const struct cs_control_config *cfg, struct cstore *store, struct cs_service *svc,
                     struct cs_control **out);
/* Stop the thread and the workers (a running command finishes first; RPCs are bounded by their timeouts)
 * and free everything. NULL is a no-op. */
void cs_control_stop(struct cs_control *ctl);
/* Queue a chunk to be reported lost in the next heartbeat (deduplicated). */
void cs_control_report_lost(struct cs_control *ctl, uint64_t chunk_id, uint32_t version);

#endif
