/* cs_service.h - the chunkserver's data service (proto ChunkData): chain write, read, copy, fsync.
 *
 * The service is a thin, validating adapter between the RPC layer and the chunk store. Every request field
 * is checked before the store sees it (offset + length inside the chunk, length == data.len, at most
 * CS_MAX_IO bytes per call, block descriptors, the runs of a batched write and the plain ranges of a
 * WriteBlocks, chain length <= CS_MAX_CHAIN, non-empty addresses) and a bad request is answered -EINVAL
 * with a detail naming the field (a plain range whose CRC fails: -EBADMSG); nothing off the network is
 * asserted.
 *
 * FAILURE NAMING. Write, WriteBlocks and Fsync travel a chain of replicas. A reply message exists only on
 * success (the contract's rule); a failure is the RPC's errno plus the detail
 *     "failed=<id>:<errno> addr=<host:port>[: more text]"
 * naming the replica that failed, with <errno> the positive errno seen there. The errno of the RPC is the
 * failing replica's own store error (ENOSPC, ESTALE, ENOENT, EBADMSG, EIO ...), or EIO when that replica
 * could not be reached at all (dead, timed out: the detail keeps the transport errno, e.g. 107 ENOTCONN).
 * A node whose own step fails names itself even if the rest of the chain also failed. Each hop forwards
 * with a deadline shorter than its own (10%, 50 ms .. 2 s shorter), so the node before a hung replica
 * times out first and can still name it.
 *
 * WRITE ORDER PER BLOCK. The head never has two writes touching one 64 KiB block in flight: a Write whose
 * blocks intersect an earlier one still in flight (not yet answered by the whole chain) is parked, without
 * holding a worker, and resumed in arrival order by the service's resumer thread once they are free; if
 * it is still waiting shortly before its deadline it fails with EBUSY and a detail naming the block and
 * no replica ("write waited until its deadline for a write in flight on block N of chunk X"), which the
 * client retries. Each replica merges the plain ranges of partly covered blocks into its own copy, so a
 * block's writes must reach every replica one at a time, in the head's order; the gate ensures exactly
 * that, and replicas cannot diverge.
 *
 * THREADS. Handlers run on RPC worker threads. Chain hops are asynchronous: a node starts the forward, does
 * its local store step in parallel, and the call is answered (deferred) when both are done AND the layer
 * has released the bulk buffer it lent to the forward (the buffer may be the request's own receive buffer).
 */
#ifndef SYNOD_CS_SERVICE_H
#define SYNOD_CS_SERVICE_H

#include <stdint.h>

#include "chunkserver/chunk_store.h"
#include "common/rpc.h"

#define CS_MAX_IO           (16u << 20) /* bytes per Write / Read call */
#define CS_MAX_CHAIN        8           /* replicas after the head */
#define CS_MAX_RUNS         64u         /* runs of one batched Write (WriteReq.ranges) */
#define CS_COPY_PAGE_BLOCKS 64          /* default Copy page (4 MiB raw at most) */
#define CS_COPY_MAX_BLOCKS  256

struct cs_service; /* opaque */

/* A service over `store` (borrowed, must outlive it). The head compresses whole blocks at zstd `level`
 * (0 = CODEC_DEFAULT_LEVEL; use the store's level). `self_addr` (copied) is the advertised host:port used
 * to name this node in failure details. Cannot fail. */
struct cs_service *cs_service_new(struct cstore *store, int level, const char *self_addr);
/* Stop resuming parked writes: those still waiting for an overlapping write fail with ECANCELED, and
 * writes that overlap one in flight from now on are refused the same way. Call before rpc_server_free and
 * rpc_client_shutdown (a resumed write forwards with the RPC client). Blocks until a write being resumed
 * has started its forward. Idempotent. */
void cs_service_stop(struct cs_service *svc);
/* Free the service (cs_service_stop first if not done). Call after rpc_server_free and
 * rpc_client_shutdown (async forwards hold it). */
void cs_service_free(struct cs_service *svc);
/* Register the ChunkData handlers on srv (before rpc_server_start). */
void cs_service_register(struct cs_service *svc, struct rpc_server *srv);
/* Set the id the metaserver assigned (used in failure details). Thread-safe. */
void cs_service_set_id(struct cs_service *svc, uint32_t id);
/* Set this chunkserver's uuid (its identity file's; the first call wins). From then on a data request whose
 * to_uuid names another chunkserver is refused with ENXIO. Thread-safe. */
void cs_service_set_uuid(struct cs_service *svc, const char *uuid);
/* Requests in flight (heartbeat "load"). Thread-safe. */
uint32_t cs_service_load(const struct cs_service *svc);

/* A replica that failed a chained write this node headed (see HeartbeatReq.chain_failures). */
struct cs_chain_failure {
    uint64_t chunk_id;
    uint32_t version, chunkserver;
    int err;
};
/* Take the chain failures recorded since the last call (*out malloc'd, caller frees; at most
 * CS_MAX_CHAIN_FAILURES are kept, the oldest dropped first: the writer reports them too). Thread-safe. */
#define CS_MAX_CHAIN_FAILURES 4096
void cs_service_take_chain_failures(struct cs_service *svc, struct cs_chain_failure **out, size_t *n);

#endif
