/* chunk_store.h - the chunk store: compressed, checksummed, crash-safe 64 MiB chunks on local data dirs.
 *
 * WORKLOAD. The chunkserver's data service calls this from several threads: plain writes of partly covered
 * blocks on every replica of a chain (merge, encode; 4 KiB random writes are all of this kind), verbatim
 * writes of whole blocks the head encoded (cstore_encode_block), plain or stored-form reads, a sync on client fsync/close, version bumps and deletes from metaserver commands, a
 * full chunk listing on (re)connect, and a throttled background scrub.
 *
 * ON-DISK FORMAT (one sparse file per chunk).
 *   <dir>/<xx>/chunk_<id:016x>_<version:08x>.syc   xx = low byte of the id (256 subdirs, as MooseFS)
 *   offset 0            header page (4 KiB): magic "SYNODCHK", format 1, chunk id, version at creation,
 *                       geometry, CRC32C of the header.
 *   offset 64 KiB       index table of slot A: 1024 entries of 32 bytes (one per block)
 *   offset 96 KiB       index table of slot B: 1024 entries of 32 bytes
 *   offset 128 KiB      data region A: 1024 slots of 64 KiB (block b at 128 KiB + b * 64 KiB)
 *   offset 64 MiB+128K  data region B: 1024 slots of 64 KiB
 *   entry = { u64 generation, u32 raw_len, u32 stored_len, u32 crc (CRC32C of the stored bytes), u32 flags
 *             (0 raw, 1 zstd), u32 reserved, u32 entry_crc } little-endian; entry_crc covers the first 28
 *   bytes seeded with (chunk id, block, slot), so a misdirected or torn entry never validates. An all-zero
 *   entry (generation 0) is "no data".
 * The version lives in the file NAME only: a version change is a rename() plus an fsync of the directory,
 * which is atomic (the header's version is informational). A block's stored bytes occupy
 * ceil(stored_len / 4 KiB) pages of its slot; the rest of the slot is a hole (the tail is punched with
 * FALLOC_FL_PUNCH_HOLE when a slot is reused by a smaller block), so compression saves real disk space.
 * The file's apparent size is ~128 MiB; `du` shows only what is stored.
 *
 * CRASH SAFETY. Every block has two slots (A/B), each with its own index entry, in separate tables (a torn
 * index page can only damage one slot's entries). The valid entry with the highest generation is the
 * block's current version; a read verifies the data CRC and falls back to the other slot if the CRC fails.
 * A write stores the block in a slot and then writes that slot's entry with generation max+1 (data first;
 * no barrier is needed because the entry carries the data CRC: an entry that reached the disk before its
 * data simply fails its CRC and the other slot is used). The target slot is the non-current one, EXCEPT when
 * the non-current slot holds the block's last DURABLE version (the current one was written after the last
 * sync): then the current, never-synced slot is overwritten in place. So a write never touches the last
 * durable version of a block, and needs no fdatasync on the write path: after a crash each block reads as
 * the new version, the previous one, or (only if the previous one was never synced) the last durable one,
 * never a torn mixture and never older than what a sync acknowledged. cstore_sync() = fdatasync (plus a
 * directory fsync after a create or rename), then, for every block written since the last sync, the now
 * obsolete other slot is invalidated (entry zeroed, data punched): this keeps an overwritten block at one
 * slot's worth of disk, and makes a later bit flip in a durable block an error (-EBADMSG, to be repaired
 * from another replica) instead of a silent fallback to stale data. After a restart (or a kill -9) the
 * store does not know what is durable, so the first write to a chunk after loading it fdatasyncs it once.
 * ENOSPC: an in-place overwrite first reserves its pages with fallocate(), so a full disk fails before any
 * byte of a readable version is touched; a write into the other slot that fails leaves the current one.
 *
 * FAILURES. An I/O error (EIO, EROFS, ENOTDIR, ...) on a data dir marks the dir failed: its chunks leave the
 * store and are put on the lost list (cstore_take_lost), operations on them return -ENOENT, and the other
 * dirs keep serving. A block whose both slots fail their CRC is -EBADMSG (logged with chunk, block and dir)
 * and its chunk is put on the lost list once, so the metaserver re-replicates it.
 *
 * THREADS. Every function is thread-safe. Operations on different chunks run in parallel; on one chunk,
 * reads share a read lock and writes/sync/version changes are serialized. Each calling thread gets its own
 * codec and scratch buffers (thread-specific data, freed at thread exit or by cstore_thread_release()).
 * All functions may block on disk I/O. Open files and loaded indexes are cached (LRU, cstore_config.max_open).
 *
 * ERRORS. 0 or -errno: -ENOENT unknown chunk, -ESTALE version mismatch (the caller's version differs from
 * the stored one, older or newer), -EINVAL bad offset/length/descriptor, -EBADMSG both slots corrupt or a
 * received block failing its CRC, -ENOSPC disk full (nothing readable was damaged), -EIO failed data dir.
 */
#ifndef SYNOD_CHUNK_STORE_H
#define SYNOD_CHUNK_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/codec.h"

#define CSTORE_BLOCK_SIZE CODEC_BLOCK_SIZE                          /* 64 KiB */
#define CSTORE_BLOCKS 1024u                                          /* blocks per chunk */
#define CSTORE_CHUNK_SIZE ((uint64_t)CSTORE_BLOCK_SIZE * CSTORE_BLOCKS) /* 64 MiB */
#define CSTORE_ANY_VERSION UINT32_MAX /* for cstore_delete: whatever version is stored */

struct cstore; /* opaque */

struct cstore_config {
    const char *const *dirs; /* data directories (borrowed; created if missing) */
    size_t ndirs;            /* >= 1 */
    int level;               /* zstd level for plain writes; 0 means CODEC_DEFAULT_LEVEL */
    unsigned max_open;       /* open chunk files / loaded indexes to cache; 0 means 1024 */
    unsigned writeback_ms;   /* > 0: a background thread syncs chunks left unsynced this long (and the least
                              * recently used unsynced ones while more than max_open / 2 are), so that
                              * evicting from the open-file cache rarely syncs on a writer's path; 0: off */
};

/* A stored block, as in proto StoredBlock; its bytes live in a separate buffer, concatenated in order. */
struct cstore_block {
    uint32_t index;      /* 0..1023 */
    uint32_t raw_len;    /* 1..65536 (bytes beyond raw_len inside the block read as zeros) */
    uint32_t stored_len; /* bytes of stored data, <= 65536; == raw_len when flags is CODEC_RAW */
    uint32_t crc;        /* CRC32C of the stored bytes */
    uint32_t flags;      /* enum codec_flag */
};

struct cstore_chunk_info {
    uint64_t chunk_id;
    uint32_t version;
    uint64_t length; /* logical bytes: highest written offset */
    int dir;         /* index into cstore_config.dirs */
};

enum cstore_lost_reason { CSTORE_LOST_DIR_FAILED = 1, CSTORE_LOST_CORRUPT = 2 };
struct cstore_lost {
    uint64_t chunk_id;
    uint32_t version;
    enum cstore_lost_reason reason;
};

struct cstore_dir_stat {
    const char *path;       /* borrowed from the store; valid until cstore_close */
    bool failed;
    uint64_t total_bytes;   /* statvfs of the file system holding the dir (0 when failed) */
    uint64_t avail_bytes;
    uint32_t chunks;
    uint64_t logical_bytes; /* sum of chunk lengths */
};

struct cstore_bad_block {
    uint64_t chunk_id;
    uint32_t version;
    uint32_t block;
    bool fell_back; /* the current slot is corrupt but an older slot is valid (reads return that version) */
};

/* Open the store over cfg->dirs: creates missing dirs and subdirs, scans existing chunk files (header check,
 * length from the index tables; files with a bad header are renamed to *.bad and skipped; of two files of
 * one chunk the higher version wins and the other is removed). A dir that cannot be used is marked failed
 * and logged; that is not an error. Returns 0 and *out (caller frees with cstore_close), or -EINVAL for a
 * bad config. Blocks on disk I/O. */
int cstore_open(const struct cstore_config *cfg, struct cstore **out);
/* Close files and free the store. Does NOT sync (callers sync what they acknowledge). No operation may be
 * running. NULL is a no-op. */
void cstore_close(struct cstore *s);
/* One writeback pass (what the writeback_ms thread runs): sync up to `max` (<= 64) unused loaded chunks that
 * have been unsynced for at least older_than_ns, least recently used first; while more than max_open / 2
 * loaded chunks are unsynced, regardless of age. Then evict the clean ones beyond max_open. Returns how
 * many it synced. A failed sync is logged and the chunk left for its next fsync (as an eviction sync). */
unsigned cstore_writeback(struct cstore *s, uint64_t older_than_ns, unsigned max);
/* Syncs done so far to evict a chunk on some operation's path, and by cstore_writeback. */
void cstore_sync_counts(const struct cstore *s, uint64_t *evict_syncs, uint64_t *writeback_syncs);
/* Free the calling thread's codec and scratch buffers now (they are otherwise freed at thread exit). */
void cstore_thread_release(void);

/* Create an empty chunk at version on a usable dir picked at random weighted by free space. Returns 0 (also when
 * the chunk already exists at this version), -EEXIST if it exists at another version, -EIO if no dir is
 * usable, -ENOSPC, or another -errno. Not durable until cstore_sync(). */
int cstore_create(struct cstore *s, uint64_t id, uint32_t version);

/* Encode one block of raw_len (1..CSTORE_BLOCK_SIZE) bytes for storage into dst (capacity >=
 * codec_bound(raw_len)): compressed with `codec`, or raw when it does not pay. A whole block is judged from
 * two 4 KiB samples first, and stored raw without a full zstd attempt unless one shrinks by 1/8. Returns 0
 * or a codec error (-EINVAL for a bad length). Thread-safe with one codec per thread; CPU only. */
int cstore_encode_block(struct codec *codec, const void *src, size_t raw_len, void *dst, size_t *out_len,
                        enum codec_flag *out_flag);

/* Write plain data buf[0..len) at byte offset inside the chunk (offset + len <= CSTORE_CHUNK_SIZE, else
 * -EINVAL). Partial blocks are merged with the existing content (holes read as zeros); every touched block
 * is encoded at the store's level with cstore_encode_block (whole blocks straight from buf) and stored with
 * its CRC. Not durable
 * until cstore_sync(). On error some leading blocks may have been written; every block stays readable as
 * its old or new content. -EBADMSG if a partially overwritten block's old content is corrupt. */
int cstore_write(struct cstore *s, uint64_t id, uint32_t version, uint64_t offset, const void *buf, size_t len);

/* Store blocks verbatim (chain replicas, chunk copy): blocks[0..n) describe data[0..data_len), their
 * stored bytes concatenated in order (sum of stored_len must equal data_len). Every descriptor is validated
 * and every CRC checked BEFORE anything is stored (-EINVAL / -EBADMSG, nothing written). Zero-copy. */
int cstore_write_stored(struct cstore *s, uint64_t id, uint32_t version, const struct cstore_block *blocks,
                        size_t n, const void *data, size_t data_len);

/* Read plain bytes [offset, offset+len) into buf (offset + len <= CSTORE_CHUNK_SIZE): decompressed and
 * CRC-checked; holes and bytes beyond the chunk length read as zeros. *out_chunk_len (may be NULL) gets the
 * chunk length so the caller can clip. -EBADMSG when a block has no valid slot. */
int cstore_read(struct cstore *s, uint64_t id, uint32_t version, uint64_t offset, void *buf, size_t len,
                uint64_t *out_chunk_len);

/* Read the stored form of blocks [first, first+max_blocks) (clipped to the chunk): for each block that has
 * data (holes are skipped; the reader zero-fills them), a descriptor in blocks[] (capacity blocks_cap) and
 * its CRC-verified stored bytes appended to buf (capacity buf_cap). Stops early when the next block would not
 * fit. *out_n = descriptors filled, *out_len = bytes in buf, *out_next = the first block not examined
 * (== first + max_blocks, clipped to 1024, when done), *out_chunk_len (may be NULL) = chunk length. Returns
 * -ENOBUFS if not even one block fits. */
int cstore_read_stored(struct cstore *s, uint64_t id, uint32_t version, uint32_t first, uint32_t max_blocks,
                       struct cstore_block *blocks, size_t blocks_cap, void *buf, size_t buf_cap, size_t *out_n,
                       size_t *out_len, uint32_t *out_next, uint64_t *out_chunk_len);

/* Chunk length in bytes (the highest written offset). */
int cstore_length(struct cstore *s, uint64_t id, uint32_t version, uint64_t *out_len);

/* The version the chunk is stored at (-ENOENT if unknown). A snapshot: it may change right after. */
int cstore_version(struct cstore *s, uint64_t id, uint32_t *out_version);

/* Make everything written to the chunk durable (fdatasync; directory fsync after create/set_version), then
 * drop the now obsolete older slots. Blocks for the disk flush. */
int cstore_sync(struct cstore *s, uint64_t id, uint32_t version);

/* Atomically change the version from version to new_version (rename + directory fsync): after a crash the
 * chunk has one or the other. -ESTALE if the stored version is not `version`. */
int cstore_set_version(struct cstore *s, uint64_t id, uint32_t version, uint32_t new_version);

/* Delete the chunk (version must match unless CSTORE_ANY_VERSION): unlink, then fsync of its directory, so
 * a delete that returned 0 survives a crash. */
int cstore_delete(struct cstore *s, uint64_t id, uint32_t version);

/* All chunks on usable dirs, sorted by id. *out is caller-freed with free(); *out_n may be 0. Cannot fail. */
void cstore_list(struct cstore *s, struct cstore_chunk_info **out, size_t *out_n);

/* Chunks lost since the previous call (failed dir, corrupt block), then the list is cleared. Caller frees
 * *out with free(). Cannot fail. */
void cstore_take_lost(struct cstore *s, struct cstore_lost **out, size_t *out_n);

/* Per-dir capacity and usage; out has room for the store's ndirs entries. Chunks and logical bytes are
 * counters kept as chunks are created, written and removed (the heartbeat calls this every second: no walk
 * over the chunks); capacity is one statvfs per dir. */
void cstore_dir_stats(struct cstore *s, struct cstore_dir_stat *out);

/* Disk actually used by all chunk files (st_blocks): one stat per chunk, for tests and benchmarks. */
uint64_t cstore_stored_bytes(struct cstore *s);
size_t cstore_ndirs(const struct cstore *s);

/* Scrubbing. A cursor walks all chunks (a snapshot of ids taken at the start of each pass) block by block.
 * cstore_scrub_step verifies the data CRC of up to max_blocks stored blocks, appends corrupt ones to bad[]
 * (capacity bad_cap; stops early when full), and sets *pass_done when the pass completed (the next step
 * starts a new pass). Returns the number of blocks verified (>= 0). Blocks on disk reads; the caller
 * throttles. A cursor is used by one thread at a time. */
struct cstore_scrub;
struct cstore_scrub *cstore_scrub_new(struct cstore *s);
void cstore_scrub_free(struct cstore_scrub *sc);
int cstore_scrub_step(struct cstore_scrub *sc, unsigned max_blocks, struct cstore_bad_block *bad, size_t bad_cap,
                      size_t *out_nbad, bool *pass_done);

/* Fault injection for tests: every later I/O on data dir `dir` fails with -err (0 turns it off). */
void cstore_debug_inject_error(struct cstore *s, int dir, int err);

#endif
