/* kv.h - a write-buffering transaction over a shared LevelDB: reads see the transaction's own writes.
 *
 * The metadata state machine applies the commands of one Paxos entry (a batch) in one kv_txn, so a
 * command sees the writes of the commands before it, and the whole entry plus the caller's extra records
 * (applied_index) land in ONE LevelDB WriteBatch at commit: "apply entry i" and "applied_index = i" are
 * atomic. Until commit nothing reaches the database; abort drops everything.
 *
 * The overlay is a sorted array of (key -> value | tombstone), found by binary search: apply batches write
 * tens to a few thousand keys, where that beats any tree. Range iterators merge the overlay with a LevelDB
 * iterator in key order (overlay wins on equal keys, tombstones hide database keys).
 *
 * Thread safety: a kv_txn and its iterators belong to one thread. The leveldb_t is shared (LevelDB is
 * thread-safe); several transactions may run at once on one database, but they do not isolate from each
 * other: each reads the committed state at the time of each read (no snapshot), and commits do not check
 * for conflicts. The state machine therefore applies entries on one thread; concurrent read-only
 * transactions (leader-lease reads) are fine. Nothing here blocks except kv_txn_commit with sync=true.
 */
#ifndef SYNOD_KV_H
#define SYNOD_KV_H

#include <leveldb/c.h>
#include <stdbool.h>
#include <stddef.h>

struct kv_txn;  /* opaque */
struct kv_iter; /* opaque */

/* A record the caller adds at commit (e.g. applied_index). Both borrowed. */
struct kv_pair {
    const void *key;
    size_t klen;
    const void *val; /* NULL = delete the key */
    size_t vlen;
};

/* Begin a transaction on `db` (borrowed; must outlive the txn). Cannot fail. */
struct kv_txn *kv_txn_begin(leveldb_t *db);
/* The database the transaction runs on. */
leveldb_t *kv_txn_db(const struct kv_txn *txn);

/* Read `key`: the overlay first, then the database. On success returns 0 and *val (caller frees with free();
 * never NULL, NUL-terminated past vlen for convenience) and *vlen. -ENOENT if absent or deleted in this
 * txn, -EIO on a database error (logged). `val` may be NULL to test existence only. */
int kv_get(struct kv_txn *txn, const void *key, size_t klen, char **val, size_t *vlen);
/* Buffer a put / delete (key and value are copied). Cannot fail. */
void kv_put(struct kv_txn *txn, const void *key, size_t klen, const void *val, size_t vlen);
void kv_del(struct kv_txn *txn, const void *key, size_t klen);
/* Number of buffered writes (puts + deletes, after overwrites). */
size_t kv_txn_size(const struct kv_txn *txn);

/* Write all buffered writes and `extra` (may be NULL with nextra 0) as one LevelDB WriteBatch, fsync'd when
 * `sync`. Frees the txn (also on failure). Returns 0 or -EIO (nothing was written). Blocks for the fsync. */
int kv_txn_commit(struct kv_txn *txn, const struct kv_pair *extra, size_t nextra, bool sync);
/* Drop the transaction and everything buffered. NULL is a no-op. */
void kv_txn_abort(struct kv_txn *txn);

/* An ordered iterator over keys in [start, end) as this txn sees them (end NULL = no upper bound).
 * Positioned at the first key; the bounds are copied. The txn may be written while the iterator is open:
 * the iterator then sees the overlay as it is at each step (the database side is the state at creation).
 * Free with kv_iter_free before the txn ends. */
struct kv_iter *kv_iter_new(struct kv_txn *txn, const void *start, size_t slen, const void *end, size_t elen);
/* A prefix iterator: every key starting with `prefix`. */
struct kv_iter *kv_iter_prefix(struct kv_txn *txn, const void *prefix, size_t plen);
/* The same from `start` on (a key with that prefix, included). */
struct kv_iter *kv_iter_prefix_from(struct kv_txn *txn, const void *prefix, size_t plen, const void *start,
                                    size_t slen);
bool kv_iter_valid(const struct kv_iter *it);
void kv_iter_next(struct kv_iter *it);
/* The current key / value; borrowed, valid until the next kv_iter_next/free. Only when valid. */
const char *kv_iter_key(const struct kv_iter *it, size_t *klen);
const char *kv_iter_value(const struct kv_iter *it, size_t *vlen);
void kv_iter_free(struct kv_iter *it);

/* Convert and free a LevelDB errptr (NULL: 0). Logs `what`. Returns 0 or -EIO. */
int kv_leveldb_err(char **errptr, const char *what);

#endif
