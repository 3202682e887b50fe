/* rsm_internal.h - private to the replicated state machine runtime (rsm.c, rsm_store.c, rsm_net.c).
 *
 * rsm.c is the runtime thread and the public API (queue, group commit, batching, apply, sessions, reads);
 * rsm_store.c is the LevelDB storage adapter (key layout, persist, recovery, snapshots as key ranges);
 * rsm_net.c is the gRPC transport (the Paxos service, struct paxos_msg <-> proto mapping in one place,
 * per-peer batching, snapshot streaming). Everything here runs in a loop turn (with rsm.run_mu held, on the
 * runtime thread or on the RPC thread that ran the turn, see rsm_enqueue_run) unless it says otherwise.
 */
#ifndef SYNOD_RSM_INTERNAL_H
#define SYNOD_RSM_INTERNAL_H

#include "metaserver/paxos.h"
#include "metaserver/rsm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct rpc_call;

/* ---- key layout (one LevelDB; see docs/architecture.md "Metaserver runtime") ---- */
#define RSM_KEY_HARD    "p/h"  /* promised ballot, u64 BE */
#define RSM_KEY_LOG     "p/l/" /* + slot u64 BE -> ballot u64 LE, chosen u8, kind u8, zxid u64 LE, data */
#define RSM_KEY_APPLIED "r/applied" /* applied index u64 BE, with every apply and snapshot install */
#define RSM_KEY_SNAP    "r/snap"    /* index of the latest durable local snapshot, u64 BE (synced) */
#define RSM_KEY_NSESS   "r/nsess"   /* last session id allocated, u64 BE */
#define RSM_KEY_SESS    "r/s/"      /* + session u64 BE -> acked floor u64 LE, client name */
#define RSM_KEY_CACHE   "r/c/"      /* + session u64 BE + seq u64 BE -> err i32 LE, zxid u64 LE, reply */
#define RSM_KEY_STAGE   "i/"        /* + key: a snapshot being installed (staging, outside the content) */
#define RSM_KEY_INSTALL "x/install" /* a staged snapshot whose install committed: index u64 BE, synced */
#define RSM_LOG_KEY_LEN 12

/* Values are rejected as absurd above these (untrusted input off the wire). */
#define RSM_MAX_SLOT  (1ull << 62)
#define RSM_MAX_ROUND (1ull << 40)

/* Entry value (kind PAXOS_VAL_CMD): u8 version (1), i64 LE time_ns, u32 LE count, then per command:
 * u8 type, u64 LE session, u64 LE seq, u64 LE acked, u32 LE len, len bytes. */
#define RSM_ENTRY_VERSION 1
#define RSM_ENTRY_HDR     13
#define RSM_CMD_HDR       29
enum rsm_cmd_type { RSM_CMD_APPLY = 1, RSM_CMD_OPEN = 2, RSM_CMD_EXPIRE = 3 };

/* A queued client (or internal) command. */
struct rsm_sub {
    struct rsm_sub *next;
    uint8_t type; /* enum rsm_cmd_type */
    uint64_t session, seq, acked;
    rsm_done_fn done;
    void *arg;
    uint64_t queued_ns;
    uint32_t len;
    uint8_t cmd[];
};

/* A served snapshot: a LevelDB snapshot at `index`, shared with RPC workers by reference count. */
struct rsm_snap {
    uint32_t refs; /* under rsm.snap_mu */
    const leveldb_snapshot_t *snap;
    uint64_t index;
};

enum rsm_input_kind { RSM_IN_MSGS = 1, RSM_IN_SUBMIT, RSM_IN_SNAP };
struct rsm_input {
    struct rsm_input *next;
    enum rsm_input_kind kind;
    size_t bytes; /* accounted against the queue limit */
    /* RSM_IN_MSGS: decoded messages; entries and values owned (released with rsm_msgs_free) */
    struct paxos_msg *msgs;
    size_t n_msgs;
    struct rpc_call
        *call; /* the Deliver that carried them, when its sender takes answers inline (deferred) */
    uint32_t from;
    /* RSM_IN_SUBMIT */
    struct rsm_sub *sub;
    /* RSM_IN_SNAP: a SnapshotChunk reply or error */
    int err;
    void *snap_rep; /* Synod__V1__SnapshotRep *, freed with rpc_message_free */
};

struct rsm_peer {
    struct rsm *r;
    uint32_t id;
    char *addr;
    struct rpc_channel *ch;
    atomic_int inflight; /* Deliver calls outstanding (dispatcher thread decrements) */
    bool unreachable;    /* the last Deliver failed (dispatcher thread only: logs the transitions) */
    _Atomic uint64_t foreign_log_ns; /* when a batch from another cluster under this id was last logged */
    _Atomic uint32_t version;        /* the RSM_VERSION it last said (PaxosBatch/PaxosAck), 0: not yet */
    struct rpc_call *held;  /* a Deliver from this peer whose PaxosAck will carry our next messages to it */
    struct paxos_msg **out; /* messages collected for the next flush (borrowed from the ready) */
    size_t n_out, cap_out;
    struct paxos_msg commit; /* a COMMIT held back (copy, no entries) while commit_held */
    bool commit_held;
    uint64_t commit_due_us; /* send it by then unless an ACCEPT/HEARTBEAT to the peer carries it first */
};

struct cmd_result { /* one applied command's outcome */
    int err;
    uint64_t zxid;
    struct rsm_buf reply;
};

struct rsm_pending { /* a proposed slot whose submissions wait for its apply */
    uint64_t slot, zxid;
    struct rsm_sub **subs;
    size_t n;
};

struct rsm_sess { /* in-memory lease of a session (meaningful on the leader) */
    uint64_t id;
    uint64_t expires_ns; /* CLOCK_MONOTONIC */
    bool expiring;       /* an expiry is in the log */
};

struct rsm_install { /* a snapshot being pulled from a peer */
    bool active;
    uint32_t from;
    uint64_t snapshot_id, index, bytes;
    char *last_key;
    size_t last_key_len;
};

struct rsm {
    struct rsm_config cfg;
    uint64_t cluster_id; /* rsm_cluster_id(&cfg): carried by and required of every Paxos batch */
    uint32_t version;    /* RSM_VERSION, or 0 under SYNOD_META_TEST_OLD=1 (rsm.h) */
    const struct rsm_sm *sm;
    void *sm_arg;
    struct paxos *px;
    leveldb_t *db;
    leveldb_options_t *dbopt;
    leveldb_writeoptions_t *wsync, *wnosync;
    leveldb_readoptions_t *ropt;
    const char **prefixes; /* "r/" + the state machine's, NULL-terminated (snapshot content) */
    struct rsm_peer peers[PAXOS_MAX_NODES];
    uint32_t heartbeat_ms, election_ms, lease_ms, session_lease_ms, snapshot_every;
    uint32_t max_batch_cmds, max_batch_bytes, snapshot_chunk;
    size_t install_batch; /* bytes per LevelDB batch of a snapshot install (4 pieces) */

    /* input queue (any thread -> whoever runs the next turn) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rsm_input *in_head, *in_tail;
    size_t in_bytes;
    bool stopping;
    pthread_t thread;
    bool started;

    _Atomic uint64_t wake_us; /* the runtime thread runs a turn by then, input or not (CLOCK_MONOTONIC us) */

    /* The runtime lock: a loop turn runs with it held, on the runtime thread or on an RPC thread that queued
     * Paxos messages and found it free (rsm_enqueue_run). Everything from here to "published" is under it. */
    pthread_mutex_t run_mu;
    uint64_t next_tick, next_sm_tick; /* us / ns, CLOCK_MONOTONIC */
    uint64_t next_commit;             /* a held COMMIT is due (rsm_net_commits); UINT64_MAX: none */

    struct rsm_sub *wait_head, *wait_tail; /* submitted, not yet proposed */
    size_t n_wait;
    struct rsm_pending *pend; /* proposed, FIFO by slot */
    size_t n_pend, cap_pend;
    uint64_t trunc_floor; /* log keys below this are already deleted */
    uint64_t last_snap;   /* index of the latest local snapshot */
    bool was_serving;
    uint64_t logged_ballot; /* role changes already logged (handle_role): ballot campaigned/led with, */
    uint32_t logged_leader; /* and the leader followed */
    uint64_t next_expiry_scan;
    struct rsm_install inst;
    uint8_t *ebuf; /* entry encoding scratch */
    size_t ebuf_cap;
    struct cmd_result *res; /* apply scratch */
    size_t cap_res;
    atomic_int snap_inflight; /* SnapshotChunk calls outstanding */

    /* published for other threads */
    _Atomic uint64_t read_until_us; /* lease reads allowed before this (CLOCK_MONOTONIC us) */
    _Atomic uint32_t pub_state, pub_leader;
    atomic_bool pub_serving;
    _Atomic uint64_t pub_ballot, pub_zxid, pub_commit, pub_applied, pub_log_start;

    /* sessions (any thread, under sess_mu) */
    pthread_mutex_t sess_mu;
    struct rsm_sess *sess;
    size_t n_sess, cap_sess;

    /* served snapshot */
    pthread_mutex_t snap_mu;
    struct rsm_snap *snap;
};

/* ---- rsm_store.c ---- */
int rsm_store_open(struct rsm *r);
void rsm_store_close(struct rsm *r);
/* Load the hard state, log and applied index into *d (entries and values owned: rsm_store_durable_free). */
int rsm_store_recover(struct rsm *r, struct paxos_durable *d);
void rsm_store_durable_free(struct paxos_durable *d);
/* Persist a ready's records in one synced WriteBatch (nothing written when there is nothing). */
int rsm_store_persist(struct rsm *r, const struct paxos_ready *rd);
/* Read a u64 BE value (0 when absent). */
uint64_t rsm_store_get_u64(struct rsm *r, const char *key);
/* Make everything written so far durable and record `index` as the latest snapshot (synced). */
int rsm_store_mark_snapshot(struct rsm *r, uint64_t index);
/* Whether a key belongs to the snapshot content ("r/" or a state-machine prefix). */
bool rsm_store_snap_key(const struct rsm *r, const char *key, size_t klen);
/* Serialise records of snapshot `s` after `after` (NULL: from the start) into *out (caller frees), at most
 * ~max bytes; *last: no more records; *last_key: copy of the last key written (caller frees). */
int rsm_store_snap_read(struct rsm *r, const struct rsm_snap *s, const void *after, size_t alen, size_t max,
                        uint8_t **out, size_t *len, uint32_t *count, bool *last, char **last_key,
                        size_t *lklen);
/* Snapshot install (see rsm_store.c): write a received piece's records (validated; -EBADMSG on malformed
 * input) under the staging prefix; commit the staging as snapshot `index` (marker synced, then the swap
 * into the live content, applied = index); at start, finish a committed install or clear an abandoned
 * staging; clear the staging. All in batches of ~install_batch bytes. */
int rsm_store_stage_put(struct rsm *r, const uint8_t *data, size_t len, uint32_t count);
int rsm_store_stage_commit(struct rsm *r, uint64_t index);
int rsm_store_install_recover(struct rsm *r);
int rsm_store_stage_clear(struct rsm *r);
/* Delete the snapshot content and set applied = snapshot marker = 0, synced (state lost: a peer's
 * snapshot replaces it). */
int rsm_store_reset_content(struct rsm *r);
/* The served snapshot (refcounted; any thread). */
struct rsm_snap *rsm_snap_get(struct rsm *r);
void rsm_snap_put(struct rsm *r, struct rsm_snap *s);
/* Take a new served snapshot of the current state at index (runtime thread). */
void rsm_snap_take(struct rsm *r, uint64_t index);

/* ---- rsm_net.c ---- */
void rsm_net_register(struct rsm *r, struct rpc_server *srv);
/* Queue a ready's message for its peer (borrowed until rsm_net_flush). A COMMIT is copied and held back for
 * RSM_COMMIT_DELAY_US instead (longer, up to the runtime thread's next tick, when the turn ran on an RPC
 * thread): the next ACCEPT or HEARTBEAT to that peer carries the commit point. */
void rsm_net_queue(struct rsm *r, struct paxos_msg *m);
/* Send the held COMMITs that are due at now_us; returns when the next one is due (UINT64_MAX: none). */
uint64_t rsm_net_commits(struct rsm *r, uint64_t now_us);
/* Send every peer's queued messages: in the reply of the call held from that peer if there is one, else as
 * one asynchronous Deliver (never blocks on a peer). */
void rsm_net_flush(struct rsm *r);
/* Keep a deferred Deliver from peer `from` to answer with our next messages to it (an older held call from
 * that peer is acked empty). */
void rsm_net_hold(struct rsm *r, uint32_t from, struct rpc_call *call);
/* Ack every held call that got no messages (end of a loop turn: the sender must not wait for more). */
void rsm_net_release(struct rsm *r);
/* Ack a deferred Deliver with no messages (any thread). */
void rsm_net_ack(struct rpc_call *call);
/* Ask `from` for the next snapshot chunk (the reply arrives as an RSM_IN_SNAP input). */
void rsm_net_snap_request(struct rsm *r, uint32_t from, uint64_t snapshot_id, const void *after, size_t alen);
void rsm_msgs_free(struct paxos_msg *msgs, size_t n);

/* ---- rsm.c ---- */
/* Queue an input for the runtime thread (any thread). Returns false (input not taken) when the queue is
 * over its limit or the runtime stops. */
bool rsm_enqueue(struct rsm *r, struct rsm_input *in);
/* As rsm_enqueue, but when no turn is running, run one on the calling thread at once instead of waking the
 * runtime thread (one thread hand-off less on the commit path). Only for callers that hold no lock and may
 * block for a fsync: the Deliver handler and the Deliver completion (rsm_net.c). */
bool rsm_enqueue_run(struct rsm *r, struct rsm_input *in);

#endif
