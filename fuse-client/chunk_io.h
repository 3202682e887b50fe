/* chunk_io.h - synod-mount's data path: chunk locations, verified reads from any replica, buffered
 * chain writes, write completion and fsync.
 *
 * A file is a sequence of 64 MiB chunks of 64 KiB blocks. Per open inode the layer keeps a `struct
 * cio_file`: a location cache per chunk index, the write buffer, the writes in flight, and a read-ahead
 * window.
 *
 * READS. Locations come from ChunkLocations (a range of chunks per call; the reply also carries the file
 * size) and are cached for loc_ttl_ms, dropped on any error. A read is split into pieces of at most 1 MiB
 * inside one chunk, sent in parallel (asynchronous RPCs) to one up-to-date replica each (rotating, so
 * readers spread over replicas), in STORED form: the client checks every block's CRC32C of the stored
 * bytes, decompresses it (one codec per thread) and zero-fills holes. A piece smaller than half the blocks
 * it touches (a 4 KiB random read) asks for exactly its plain bytes with their CRC32C instead (plain_crc:
 * the chunkserver checks the stored blocks' CRCs, the client the CRC of what arrives). A piece that fails
 * (error, CRC mismatch on either side, undecodable block) is retried in stored form on the next replica;
 * a bad block is reported with BadReplica. A stale
 * version (ESTALE/ENOENT) refreshes the locations. A sequential reader gets the next `readahead` bytes
 * fetched in the background in 1 MiB slots (bounded per file, dropped on write, truncate and invalidation);
 * other reads fetch exactly what they ask for and start no read-ahead.
 *
 * WRITES. Writes are buffered per file into one contiguous piece inside one chunk, up to 1 MiB (ending on
 * a 1 MiB file boundary), which is complete when full or on a non-contiguous write, and then waits to be
 * sent (flush sends everything). Sending: ChunkOpenWrite gives the chunk (allocated or version-bumped) and
 * a write lease, renewed when half spent; the data goes to replicas[0] with the other replicas as the
 * chain and the CRC32C of the plain data, asynchronously (up to max_inflight Writes and max_inflight MiB
 * in flight per file, so different chunks and consecutive pieces travel in parallel). While that is full,
 * complete pieces wait (up to 64 pieces or max_inflight MiB; beyond that the writer blocks), and the
 * waiting pieces of one chunk then leave together as one batched Write (up to 32 runs): small random
 * writes share chain round trips. Per 64 KiB block writes go out in order and never two at once (a piece
 * waits for an older waiting piece or a write in flight touching one of its blocks), so a failed write
 * can be replayed without undoing a later one. A failed write names the failed replica ("failed=<id>:<errno>"): the client reports it
 * (BadReplica), reopens the chunk (new version without that replica) and resends, until io_timeout_ms.
 * Errors that retrying cannot fix (ENOSPC, EFBIG...) stick to the file and are returned by the next write,
 * flush or fsync, as the kernel does for write-back errors.
 *
 * COMPLETION. cio_flush waits for the writes in flight and sends ChunkWriteDone (new size and mtime) for
 * every chunk written since the last one; with fsync it first sends Fsync along each chunk's chain; with
 * release it returns the write leases. ChunkWriteDone also goes out from the write path every
 * writedone_ms, so other clients see the size grow during long writes.
 *
 * Thread safety: a cio_file may be used by many FUSE threads at once (an internal lock serialises writers;
 * reads run in parallel). Functions block on RPCs.
 */
#ifndef SYNOD_FUSE_CHUNK_IO_H
#define SYNOD_FUSE_CHUNK_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.pb-c.h"
#include "fuse-client/meta_client.h"

#define CIO_CHUNK_SIZE (64ull << 20)
#define CIO_BLOCK_SIZE 65536u
#define CIO_MAX_IO (1u << 20) /* bytes per data RPC */

struct cio_config {
    uint32_t io_timeout_ms;   /* give up on a piece of I/O after this (EIO); 0 = 30000 */
    uint32_t rpc_timeout_ms;  /* one data RPC; 0 = 10000 */
    uint32_t loc_ttl_ms;      /* location cache lifetime; 0 = 1000 */
    uint32_t readahead;       /* bytes fetched ahead of a sequential reader, in the background (0 = off) */
    uint32_t max_inflight;    /* write RPCs (and MiB of data) in flight per file; 0 = 4 */
    uint32_t writedone_ms;    /* ChunkWriteDone at least this often while writing; 0 = 1000 */
};

struct cio;      /* the layer: config + metaserver client */
struct cio_file; /* per-inode data state */

/* A layer over `mc` (borrowed, must outlive it). Cannot fail. */
struct cio *cio_new(struct mc *mc, const struct cio_config *cfg);
void cio_free(struct cio *c);
/* The session was lost: every write lease is gone; chunks are reopened on the next write. Thread-safe. */
void cio_session_lost(struct cio *c);

/* Per-inode state; `size` is the size last known from the metaserver. Cannot fail. */
struct cio_file *cio_file_new(struct cio *c, uint64_t ino, uint64_t size);
/* Free; the file must be flushed (nothing buffered or in flight), or its unflushed data is dropped. */
void cio_file_free(struct cio_file *f);

/* The size as this client sees it: max(last known metaserver size, end of local unflushed writes). */
uint64_t cio_file_size(struct cio_file *f);
/* A metaserver attribute reply arrived (lookup, getattr, open...): remember its size. `exact` (after a
 * truncate this client made) also forgets the end of local writes. */
void cio_file_set_size(struct cio_file *f, uint64_t size, bool exact);
/* Forget cached locations and the read-ahead window (on open, so close-to-open sees other writers). */
void cio_file_invalidate(struct cio_file *f);
/* Chunks asked per ChunkLocations, and by an Open (OpenReq.locations). */
#define CIO_LOC_BATCH 16
/* Cache the locations of chunks [0, located) that an Open answered (indexes without an entry are holes), as
 * a ChunkLocations would, so the first reads need no RPC of their own. */
void cio_file_seed_locations(struct cio_file *f, uint32_t located, Synod__V1__ChunkLoc *const *chunks, size_t n);
/* Did this client write since the last completed flush? */
bool cio_file_dirty(struct cio_file *f);

/* Read up to len bytes at off into buf; *out_len < len only at end of file. Returns 0 or -errno (EIO when
 * no replica could serve the data within io_timeout_ms). Blocks. */
int cio_read(struct cio_file *f, uint64_t off, size_t len, void *buf, size_t *out_len);
/* cio_read, cio_write and cio_flush with a cancellation token (may be NULL), for FUSE interrupts: they
 * return -EINTR promptly when `cancel` fires while they wait, under one rule for the write side: a write,
 * flush or fsync is abandoned only while it has sent nothing itself (waiting for room or for earlier writes
 * in flight); once it sent data it completes (bounded by io_timeout_ms), so an interrupted call never leaves
 * its own data half pushed and acknowledged data is never dropped. A read is abandoned at any point (its
 * RPCs are cancelled; shared read-ahead fetches go on). Waits for another thread's flush of the same file
 * (op_mu) and the read-your-writes flush of cio_read are not interruptible. */
int cio_read_cancellable(struct cio_file *f, uint64_t off, size_t len, void *buf, size_t *out_len,
                         struct rpc_cancel *cancel);
int cio_write_cancellable(struct cio_file *f, uint64_t off, const void *buf, size_t len, struct rpc_cancel *cancel);
/* As cio_write_cancellable at *off, or with `append` at the file's end as this client knows it (the size
 * the metaserver gave at open, grown by this client's writes), chosen atomically with the write; *off is
 * set to the offset used. */
int cio_write_at(struct cio_file *f, uint64_t *off, bool append, const void *buf, size_t len,
                 struct rpc_cancel *cancel);
int cio_flush_cancellable(struct cio_file *f, bool fsync, bool release, struct rpc_cancel *cancel);
/* Buffer and send len bytes at off. Returns 0 (the data is buffered or in flight) or a sticky -errno from
 * an earlier write of this file. Blocks only when the pieces waiting to be sent (64, or max_inflight MiB)
 * are full. */
int cio_write(struct cio_file *f, uint64_t off, const void *buf, size_t len);
/* Push everything written: wait for writes in flight, Fsync the chains if `fsync`, ChunkWriteDone for
 * every written chunk (returning the leases if `release`); the size in the replies becomes the file's known
 * size. Returns 0 or -errno (a sticky write error is returned once and cleared). Blocks. */
int cio_flush(struct cio_file *f, bool fsync, bool release);
/* Make [new_size, old_size) read as zeros if the file is later extended again: the metaserver drops whole
 * chunks past a truncation, so the tail of the last partial chunk is overwritten with zeros here. Call
 * before the Setattr that shrinks the file. Returns 0 or -errno. */
int cio_truncate_prepare(struct cio_file *f, uint64_t new_size);

#endif
