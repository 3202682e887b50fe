/* namespace.h - the SynodFS metadata state machine: the POSIX namespace, chunk table, chunkserver
 * registry, sessions and locks, applied deterministically over a kv_txn.
 *
 * Paxos delivers chosen entries in order on every replica; each entry's payload is a packed NsBatch
 * (proto/state.proto). The adapter applies an entry as:
 *
 *     struct kv_txn *t = kv_txn_begin(db);
 *     for each cmd in batch: ns_apply(ns, t, cmd, &rep[i]);   // later commands see earlier writes
 *     kv_txn_commit(t, &applied_index_pair, 1, sync);          // one WriteBatch
 *     answer the waiting clients with rep[i] (err or the packed reply), ns_reply_release each.
 *
 * Determinism: the result depends only on the stored state and the command. Apply reads no clock and no
 * randomness: the leader puts its wall-clock time into NsCommand.now_ns (file times, lease expiries,
 * chunkserver silence), and ids (inodes, chunks, sessions, file handles, chunkserver ids, generations) come
 * from counters in the state. A database read error during apply aborts the process (a replica that cannot
 * read its state must not diverge); apply itself never fails otherwise: errors are results (-errno).
 * Every command validates fully before it writes, so a failed command leaves the txn untouched.
 *
 * Sessions and exactly once belong to the rsm runtime (metaserver/rsm.h): it opens sessions through the
 * log, rejects commands of unknown or expired sessions with -ESTALE before apply, keeps the reply of
 * every (session, seq) so a retry is never applied twice, and expires sessions through the log. The
 * namespace only keeps what a session holds (open handles, locks, write leases): NsCommand.session names
 * the holder, and SessionClose / SessionExpire / ns_session_release free them (idempotent).
 *
 * Reads (lookup, getattr, readdir, readlink, getxattr, listxattr, statfs, chunk_locations, get_lock) write
 * nothing: the leader may serve them under its lease with ns_apply on a fresh txn that it aborts
 * (ns_cmd_is_read tells which). Each read sees one point in time only if the adapter serialises them with
 * commits or uses its own snapshot; per-key reads are atomic.
 *
 * Credentials: a NULL Cred counts as root (internal commands); the RPC adapter must always fill Cred from
 * the client's request.
 *
 * Key layout: everything this module owns lives under the prefix NS_KEY_PREFIX ("n/"); the Paxos log and
 * acceptor state use other prefixes in the same LevelDB. Big-endian ids so keys sort numerically:
 *   n/c                     NsCounters (ids, inode count, cluster parameters)
 *   n/i ino                 InodeRec
 *   n/d parent name         dirent: ino (8, BE) + type (1: mode >> 12). Ordered by name bytes, so a
 *                           readdir page "after NAME" is one range scan from parent|NAME|0x00.
 *   n/x ino name            xattr value (raw bytes)
 *   n/k ino index           ChunkRec (the chunk table)
 *   n/K chunk               ino (8) + index (8): chunk id -> table entry
 *   n/h cs chunk            replica index: chunk held by chunkserver (value: report generation, 8 LE)
 *   n/g copies(1) chunk     under-goal index (copies < goal), scanned fewest copies first
 *   n/G chunk               over-goal index (copies > goal): the leader trims these
 *   n/p chunk dst(4)        ReplPending: replication handed to chunkserver dst
 *   n/q cs chunk            deletion queue: version (4 LE) of a replica chunkserver cs must delete
 *   n/u cs chunk            unknown chunk first seen at (8 LE ns), for the deletion grace period
 *   n/s cs                  ChunkserverRec (cs: 4 bytes BE)
 *   n/o session fh          open handle: ino (8 BE) (logged opens; memory opens live in the leader's ns_opens)
 *   n/O ino                 orphan: a file with no name left, purged by the leader's OrphanPurge once no
 *                           session holds it open (empty value)
 *   n/l ino                 LockSet (all flock/fcntl locks on the inode)
 *   n/L session ino         index: session holds locks on ino
 *   n/w session chunk       index: session holds the write lease on chunk
 * Records are protobuf (state.proto) except the raw ones noted.
 */
#ifndef SYNOD_NAMESPACE_H
#define SYNOD_NAMESPACE_H

#include <leveldb/c.h>
#include <stdbool.h>
#include <stdint.h>

#include "metaserver/kv.h"
#include "state.pb-c.h"

#define NS_KEY_PREFIX "n/"
#define NS_ROOT_INO 1ull
#define NS_NAME_MAX 255
#define NS_SYMLINK_MAX 4095
#define NS_XATTR_NAME_MAX 255
#define NS_XATTR_VALUE_MAX 65536
#define NS_CHUNK_SIZE (64ull << 20)
#define NS_READDIR_MAX 4096      /* entries per page at most (0 in the request = 1024) */
#define NS_MAX_GOAL 9
#define NS_MAX_REPL_LIMIT 1000 /* namespace.max_repl_per_cs, synodctl repl-limit */

/* Chunkserver states (ChunkserverRec.state). */
enum ns_cs_state { NS_CS_UP = 0, NS_CS_DEAD = 1, NS_CS_DECOMMISSIONING = 2 };

/* ChunkCmd.cmd_id encodes the command type and chunk id: (type << 60) | chunk_id. */
#define NS_CMD_ID(type, chunk) (((uint64_t)(type) << 60) | (chunk))

struct ns; /* opaque; holds no state of its own beyond scratch: the state is in LevelDB */

/* The result of one command. On err == 0, buf/len hold the packed reply message of type `desc` (the
 * meta.proto / chunk.proto / admin.proto reply of the request; Empty where the RPC returns Empty). */
struct ns_reply {
    int err;                               /* 0 or -errno */
    const ProtobufCMessageDescriptor *desc;
    uint8_t *buf;                          /* owned; free with ns_reply_release */
    size_t len;
};

/* A new state machine handle. Cannot fail. Free with ns_free. */
struct ns *ns_new(void);
void ns_free(struct ns *ns);

/* Apply one command (borrowed) in `txn`. Returns rep->err. `rep` is overwritten (release it after use).
 * Blocks only on LevelDB reads. One thread per txn; see kv.h. */
int ns_apply(struct ns *ns, struct kv_txn *txn, const Synod__V1__NsCommand *cmd, struct ns_reply *rep);
/* Apply every command of a packed NsBatch in `txn`; reps is an array of at least batch->n_cmds. */
void ns_apply_batch(struct ns *ns, struct kv_txn *txn, const Synod__V1__NsBatch *batch, struct ns_reply *reps);
/* Release everything `session` holds (open handles, locks, write leases) inside txn: the rsm runtime's
 * session_expired hook. Idempotent; cannot fail (a database read error aborts, as in apply). */
void ns_session_release(struct ns *ns, struct kv_txn *txn, int64_t now_ns, uint64_t session);
/* Does the command only read? (Then it may be served outside the log under the leader's lease.) */
bool ns_cmd_is_read(const Synod__V1__NsCommand *cmd);
/* Decode rep's reply message; caller frees with protobuf_c_message_free_unpacked(m, NULL). NULL if err. */
ProtobufCMessage *ns_reply_unpack(const struct ns_reply *rep);
void ns_reply_release(struct ns_reply *rep);

/* --- leader-side helpers (read-only; the leader acts on their results outside the state machine) ----- */

/* Chunkservers whose last heartbeat (state time) is older than now - timeout_ns and that are not yet
 * DEAD: the leader proposes ChunkserverDead for each. *ids: caller frees. Returns the count. */
size_t ns_find_dead_chunkservers(struct kv_txn *txn, int64_t now_ns, int64_t timeout_ns, uint32_t **ids);
/* Chunks whose write lease ended before now_ns (leader wall clock): propose LeaseExpire for each, at most
 * `max`. *ids: caller frees. Returns the count. */
size_t ns_find_expired_leases(struct kv_txn *txn, int64_t now_ns, size_t max, uint64_t **ids);
/* Up to max orphans (n/O: files with no name left) above inode `after`, in inode order, into *out (caller
 * frees). The leader proposes an OrphanPurge of those no session holds open. */
size_t ns_orphans(struct kv_txn *txn, uint64_t after, size_t max, uint64_t **out);
/* Where the leader's planning rounds resume (leader memory; zero it to start). Each round looks at no more
 * than `budget` entries of an index (0: NS_PLAN_SCAN): half from the front (a chunk that just lost a copy
 * is planned in the next round), half from where the previous round stopped (entries that cannot be planned
 * now are looked at in bounded time per round and never starve the ones behind them). A round also ends
 * when no chunkserver can take another copy (max_repl_per_cs). */
#define NS_PLAN_SCAN 4096
struct ns_plan_pos {
    uint8_t key[32];
    size_t len;
};
struct ns_plan_cursor {
    struct ns_plan_pos g, h; /* n/g or n/G (trim), n/h of a draining chunkserver */
    size_t budget;
};

/* Re-replication plan: up to `max` ReplStart commands for under-goal chunks, fewest copies first, then for
 * chunks that meet their goal only with a copy on a DECOMMISSIONING chunkserver (drop_after = that one);
 * at most max_repl_per_cs (state parameter) in flight per source and per destination; pending ones older
 * than stale_ns are planned again. Sources may be draining chunkservers, targets only UP ones without a
 * queued deletion of the chunk. Each ReplStart is to be proposed; once applied, ns_cs_commands hands the
 * copy to the destination. *out: array of heap messages, free each with synod__v1__repl_start__free_unpacked
 * and the array with free(). Returns the count. */
size_t ns_plan_replication(struct kv_txn *txn, int64_t now_ns, int64_t stale_ns, size_t max,
                           struct ns_plan_cursor *cur, Synod__V1__ReplStart ***out);
/* Commands for chunkserver `cs` to ride on its heartbeat reply: deletions from its queue and the copies
 * planned to it, at most `max`. A deletion that failed there (an I/O error) waits before it is sent again
 * (10 s, doubling up to 10 min, against now_ns, the leader's wall clock), so failing ones never hold back
 * the rest of the queue; at most 32 * max queue entries are looked at. *out: heap messages, free each with
 * synod__v1__chunk_cmd__free_unpacked and the array with free(). The chunkserver reports results in
 * HeartbeatReq.results (cmd_id), which apply turns into queue removals / new replicas. Returns the count. */
size_t ns_cs_commands(struct kv_txn *txn, uint32_t cs, int64_t now_ns, size_t max, Synod__V1__ChunkCmd ***out);

/* Over-goal trimming: up to `max` ReplicaDrop commands for chunks with more copies than their goal (after a
 * goal decrease, or a draining chunkserver's copy that is no longer needed), skipping chunks under a live
 * write lease or with a copy in flight (pending younger than stale_ns). The copy dropped is one on a
 * chunkserver that is not UP first, then the fullest; never one that would leave fewer UP copies than the
 * goal. *out: free each with synod__v1__replica_drop__free_unpacked and the array with free(). */
size_t ns_plan_trim(struct kv_txn *txn, int64_t now_ns, int64_t stale_ns, size_t max, struct ns_plan_cursor *cur,
                    Synod__V1__ReplicaDrop ***out);

/* Rebalance plan: moves of one copy each from UP chunkservers whose used fraction is above the weighted
 * mean + threshold_pct to ones below the mean (least used first), until the source is back under the
 * line, at most max_moves, within the per-chunkserver copy throttle (copies in flight count). Never a
 * chunk under a live write lease, under its goal, with a copy in flight, or with zero estimated bytes
 * (bytes = the file's data in that chunk). Keeps label spread (a target whose label another copy already
 * has is skipped unless the source has that label too). Each move is started as a ReplStart with
 * drop_after = from (copy, then drop the source when the copy lands). Read-only; deterministic.
 * *out: caller frees with free(); *mean_pct: the mean used percentage. */
struct ns_move {
    uint64_t chunk_id, bytes;
    uint32_t version, from, to;
};
size_t ns_plan_rebalance(struct kv_txn *txn, int64_t now_ns, int64_t stale_ns, uint32_t threshold_pct,
                         size_t max_moves, struct ns_move **out, uint32_t *mean_pct);

/* Fsck: one consistent pass (a LevelDB snapshot of `db`) over inodes, dirents and the chunk table.
 * Problems go to out->rep (FsckRep: kind, ino, chunk, detail), at most max_problems listed (all counted in
 * total_problems); the safe repairs to out->repair (at most NS_FSCK_MAX_FIXES; fix i repairs problem
 * out->fix_problem[i]) to be proposed as one FsckRepair command. Past max_inodes inodes the scan stops
 * collecting (rep.truncated) and the whole-namespace checks are skipped. now_ns: the leader's wall clock
 * (a chunk past the end of its file is expected while under a write lease). Runs on the caller's thread,
 * O(records), about 48 bytes per inode. Returns 0 or -EIO; release with ns_fsck_release. */
#define NS_FSCK_MAX_FIXES 1000
struct ns_fsck {
    Synod__V1__FsckRep rep;
    Synod__V1__FsckRepair repair;
    size_t *fix_problem;
};
int ns_fsck_run(leveldb_t *db, int64_t now_ns, size_t max_inodes, size_t max_problems, struct ns_fsck *out);
void ns_fsck_release(struct ns_fsck *f);

/* Figures for status pages (read-only scans: O(entries + chunks), not for hot paths). files/dirs count
 * directory entries (a file with two names counts twice); missing = under-goal chunks with no copy;
 * under_goal also counts chunks that meet their goal only with a copy on a draining chunkserver. */
struct ns_counts {
    uint64_t inodes, files, dirs, chunks, under_goal, missing, over_goal;
};
void ns_count(struct kv_txn *txn, struct ns_counts *out);
/* The file system id (NsCounters.fsid): 0 until an NsInit with one has been applied. */
uint64_t ns_fsid(struct kv_txn *txn);
/* Copies the chunk table places on chunkserver cs (a draining one is done at 0). O(copies). */
uint64_t ns_cs_held(struct kv_txn *txn, uint32_t cs);
/* Whether chunks that chunkserver cs reported unknown (n/u) have outlived the grace period (among the
 * first 64): its next heartbeat reply asks for a full report, which deletes them (a report is otherwise
 * sent only at registration and after a death). */
bool ns_cs_unknown_due(struct kv_txn *txn, uint32_t cs, int64_t now_ns);
/* Whether the state still lists a copy on chunkserver cs (n/h). */
bool ns_cs_holds_any(struct kv_txn *txn, uint32_t cs);
/* One chunkserver's record (free with synod__v1__chunkserver_rec__free_unpacked), NULL if unknown. */
Synod__V1__ChunkserverRec *ns_chunkserver(struct kv_txn *txn, uint32_t id);
/* Every chunkserver record, in id order. *out: free each with synod__v1__chunkserver_rec__free_unpacked
 * and the array with free(). Returns the count. */
size_t ns_chunkservers(struct kv_txn *txn, Synod__V1__ChunkserverRec ***out);

/* --- snapshot and restore (Paxos catch-up) ------------------------------------------------------------ */

/* Stream every record under NS_KEY_PREFIX as seen by `snap` (may be NULL: the current state) to `cb` in key
 * order. cb returns 0 to go on or -errno to stop (then returned). Returns 0, a cb error or -EIO. */
int ns_snapshot_write(leveldb_t *db, const leveldb_snapshot_t *snap,
                      int (*cb)(void *arg, const char *key, size_t klen, const char *val, size_t vlen),
                      void *arg);
/* Restore: ns_restore_begin deletes every key under NS_KEY_PREFIX; ns_restore_add loads records (keys
 * outside the prefix: -EINVAL); ns_restore_end writes the rest (fsync'd when sync) and frees. Writes go in
 * batches, so a crash mid-restore leaves a partial state: the caller marks "restore in progress" (outside
 * our prefix) and writes its applied index only after ns_restore_end succeeds. */
struct ns_restore;
int ns_restore_begin(leveldb_t *db, struct ns_restore **out);
int ns_restore_add(struct ns_restore *r, const char *key, size_t klen, const char *val, size_t vlen);
int ns_restore_end(struct ns_restore *r, bool sync);

#endif
