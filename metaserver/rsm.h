/* rsm.h - the replicated state machine runtime of a metaserver: Paxos core + LevelDB + gRPC, and a
 * pluggable deterministic state machine (the POSIX namespace in production, a key-value store in tests).
 *
 * WHAT IT DOES. One struct rsm per process drives the Paxos core (metaserver/paxos.h) in loop turns, on its
 * own thread or on the RPC thread that delivered Paxos messages (see THREADS): it feeds peer messages (the
 * Paxos service, registered on the daemon's RPC server), clock ticks and client commands into the core;
 * persists the core's records with ONE synced LevelDB WriteBatch per loop turn (group commit) before sending
 * the messages that promise them; and applies chosen entries to the state machine, each entry in one kv_txn
 * committed together with the applied index. Client commands submitted while a fsync is in progress are
 * packed into the next slot (batching); up to `window` slots are in flight (pipelining).
 *
 * ONE LEVELDB, KEY PREFIXES. "p/" Paxos (hard state, log entries), "r/" this runtime (applied index,
 * sessions, reply cache, snapshot marker), and the state machine's own prefixes (declared in struct
 * rsm_sm, e.g. "n/" namespace, "k/" test KV). Snapshots cover "r/" and the state machine's prefixes.
 *
 * DETERMINISM. Every replica applies the same entries in the same order and must reach the same state.
 * apply() may use only: the current state (through the txn), the command bytes, and the apply context
 * (index, zxid, and time_ns = the leader's wall clock when it proposed the entry). No clock, randomness,
 * or process-local state that is not rebuilt from LevelDB.
 *
 * EXACTLY ONCE. Client commands carry (session, seq). The runtime keeps the reply of every (session, seq)
 * it applied until the client acknowledges it (the `acked` floor each request carries: every seq < acked
 * is done and forgotten), so a retry across a leader change gets the original reply instead of a second
 * apply. Sessions are opened through the log; keepalives are kept in the leader's memory (a new leader
 * gives every session a fresh lease when it takes over); the leader proposes the expiry of a session whose
 * lease passed, and applying the expiry calls sm->session_expired (release locks, open files, leases) and
 * drops its reply cache. session 0 means "no session" (internal commands from the leader itself).
 *
 * THREADS. rsm_submit, rsm_read, rsm_session_touch and the accessors are thread-safe (RPC workers call them).
 * Completion callbacks and every rsm_sm hook run inside a loop turn: one at a time, under the runtime's lock,
 * on the runtime thread or on the RPC thread (worker or client dispatcher) that delivered Paxos messages and
 * ran the turn itself. They must not block (answering an RPC with rpc_reply/rpc_fail is fine) and must not
 * depend on which thread they run on. rsm_submit and rsm_session_open never run a turn on the caller's thread
 * (only their own early failures, see rsm_submit), so a caller may hold its own locks across them.
 */
#ifndef SYNOD_RSM_H
#define SYNOD_RSM_H

#include "metaserver/kv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rpc_server;
struct rsm; /* opaque */

/* A growable byte buffer for replies (owned by the runtime; apply appends into it). */
struct rsm_buf {
    uint8_t *data;
    size_t len, cap;
};
/* Append bytes (grows as needed). Cannot fail. */
void rsm_buf_append(struct rsm_buf *b, const void *data, size_t len);

/* What apply knows about the entry and command it applies. */
struct rsm_apply_ctx {
    uint64_t index;   /* log slot of the entry */
    uint64_t zxid;    /* epoch << 32 | counter of the entry */
    int64_t time_ns;  /* the proposing leader's wall clock (ns since the epoch): use for timestamps */
    uint64_t session; /* 0 for internal commands */
    uint64_t seq;
};

/* The state machine plugged into the runtime. All hooks run in a loop turn (see THREADS). */
struct rsm_sm {
    const char *name;
    const char *const
        *prefixes; /* LevelDB key prefixes it owns (snapshotted and restored); NULL-terminated */
    /* Apply one command inside txn (shared by every command of the entry; later commands see earlier
     * writes). Return 0 with the reply bytes appended to `reply`, or -errno, which becomes the client's
     * answer. Deterministic (see top). Must not commit or abort the txn. */
    int (*apply)(void *sm, struct kv_txn *txn, const struct rsm_apply_ctx *ctx, const uint8_t *cmd,
                 size_t len, struct rsm_buf *reply);
    /* A session expired (through the log): release what it held. Deterministic, inside the entry's txn. */
    void (*session_expired)(void *sm, struct kv_txn *txn, const struct rsm_apply_ctx *ctx, uint64_t session);
    /* A snapshot from a peer replaced the state (drop caches). May be NULL. */
    void (*restored)(void *sm);
    /* On the serving leader, every tick (~10 ms): a chance to propose internal commands (timeouts, repair
     * planning) with rsm_submit(session 0). `now_ns` is CLOCK_MONOTONIC. May be NULL. */
    void (*leader_tick)(void *sm, struct rsm *r, uint64_t now_ns);
};

struct rsm_config {
    uint32_t self;            /* this node's id: index into peers[] */
    uint32_t n_nodes;         /* 1..16 */
    const char *const *peers; /* "host:port" of every node, by id (the same port serves Paxos and clients) */
    uint32_t voter_mask;      /* bit i: node i votes; others observe. 0 = all vote */
    const char *data_dir;     /* LevelDB lives in <data_dir>/db */
    uint32_t heartbeat_ms;    /* 0 = default (50) */
    uint32_t election_ms;     /* 0 = default (300): timeout uniform in [election_ms, 2*election_ms) */
    uint32_t lease_ms;        /* 0 = default (election_ms * 2 / 3) */
    uint32_t window;          /* slots in flight; 0 = default */
    uint32_t max_batch_cmds;  /* commands per slot; 0 = default (1024) */
    uint32_t max_batch_bytes; /* bytes per slot; 0 = default (1 MiB) */
    uint32_t snapshot_every;  /* entries between snapshots; 0 = default (100000) */
    uint32_t snapshot_chunk;  /* bytes of records per SnapshotChunk answer; 0 = default (1 MiB) */
    uint32_t log_retain; /* log slots kept below a snapshot for cheap catch-up; 0 = core default (1024) */
    uint32_t session_lease_ms; /* client session lease; 0 = default (10000) */
    uint64_t seed;             /* election jitter seed; 0 = derived from self and time */
    const char *cluster_token; /* names the cluster (NULL = ""): with peers and voter_mask it makes the
                                * cluster id that every Paxos batch carries (rsm_cluster_id) */
};

/* The cluster id of a configuration: FNV-1a 64 of cluster_token, the peers by id and the voter mask (never
 * 0). Nodes configured alike agree on it; a node of another cluster does not, and its batches are refused. */
uint64_t rsm_cluster_id(const struct rsm_config *cfg);

/* This build's software level, sent in every Paxos batch and answer. 1: the file system id (NsInit.fsid),
 * which a node older than it would apply as a no-op, leaving its state without the id. */
#define RSM_VERSION 1
/* The lowest level this node and every other configured node (voter or observer) has said it runs; 0
 * while any has not spoken since this node started. Thread-safe. SYNOD_META_TEST_OLD=1 (tests only)
 * makes a node say 0, as a node from before RSM_VERSION 1 does, and its namespace service propose no
 * file system id. */
uint32_t rsm_min_version(const struct rsm *r);

/* Open (or create) the data dir, recover the Paxos state and the applied index, register the Paxos service
 * on `srv` (which the caller starts after registering its own services), and return the runtime, not yet
 * running. -errno on failure (logged): -EINVAL bad config, -EIO LevelDB errors, -EBUSY db locked. */
int rsm_new(const struct rsm_config *cfg, const struct rsm_sm *sm, void *sm_arg, struct rpc_server *srv,
            struct rsm **out);
/* Start the runtime thread. */
int rsm_start(struct rsm *r);
/* Stop the thread and free everything; pending submissions complete with -ECANCELED. Call after the RPC
 * server is freed (no handler may call in any more). */
void rsm_free(struct rsm *r);

/* Completion of a submitted command: err 0 with the reply bytes (borrowed for the callback), or -errno:
 * -EREMOTE not the leader (see rsm_leader), -EAGAIN leader not serving yet / overloaded / leadership lost
 * (retry), -ECANCELED shutting down, -ESTALE unknown or expired session, or the apply's own -errno. `zxid`
 * is the entry's zxid when the command was applied, its own error included (an apply may answer -EAGAIN
 * itself, e.g. a write lease held elsewhere); 0 when this submission was not applied (whether an earlier
 * proposal of it was is unknown: retry with the same session and seq). Runs in a loop turn (see THREADS);
 * must not block. */
typedef void (*rsm_done_fn)(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid);

/* Submit a command for the log. session/seq for exactly-once (session 0: internal, no dedup); `acked`: every
 * seq < acked of this session has been answered to the client and may be forgotten. The command is copied.
 * `done` is called exactly once: in a loop turn (see THREADS), or on the calling thread before this returns
 * when the submission fails at once (-EREMOTE, -EAGAIN, -EMSGSIZE, -ECANCELED). */
void rsm_submit(struct rsm *r, uint64_t session, uint64_t seq, uint64_t acked, const void *cmd, size_t len,
                rsm_done_fn done, void *arg);

/* Open a client session through the log; done's reply is 8 bytes: the session id (little-endian). */
void rsm_session_open(struct rsm *r, const char *client, rsm_done_fn done, void *arg);
/* A keepalive from the client: extends the session's lease on this leader. -EREMOTE if not the leader,
 * -ESTALE if the session is unknown or expired. */
int rsm_session_touch(struct rsm *r, uint64_t session);
/* The sessions this node knows (on the serving leader: every live session, expiring ones included): up to
 * max ids into ids; returns how many there are (may exceed max). */
size_t rsm_session_ids(struct rsm *r, uint64_t *ids, size_t max);
/* The session lease length (ms). */
uint32_t rsm_session_lease_ms(const struct rsm *r);

/* Linearizable read: if this node is the serving leader and holds its lease, run fn(arg, txn) on the
 * applied state in the calling thread (a read-only txn, aborted after) and return its result. Otherwise
 * -EREMOTE (not leader) or -EAGAIN (no valid lease right now: retry shortly). With `stale_ok`, any replica
 * runs fn on its own applied state (observers, status pages). */
int rsm_read(struct rsm *r, bool stale_ok, int (*fn)(void *arg, struct kv_txn *txn), void *arg);

/* The leader's address ("host:port", borrowed, stable) or NULL when unknown; true if this node leads. */
const char *rsm_leader(const struct rsm *r);
bool rsm_is_leader(const struct rsm *r);

struct rsm_status {
    uint32_t self;
    const char *state; /* LOOKING, LEADING, FOLLOWING, OBSERVING */
    bool serving;      /* leading and caught up */
    uint32_t leader;   /* node id or UINT32_MAX */
    uint64_t ballot, zxid, commit, applied, log_start;
};
void rsm_get_status(const struct rsm *r, struct rsm_status *st);
/* The LevelDB handle (shared; for read-only use by services, e.g. a follower's stale read). */
leveldb_t *rsm_db(const struct rsm *r);

#endif
