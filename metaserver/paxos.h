/* paxos.h - the Multi-Paxos core: a deterministic state machine with no I/O, clock or randomness of its own.
 *
 * This header is the contract between the core and its adapters (the LevelDB storage adapter, the gRPC
 * transport, the seeded simulator in tests/paxos/). The core is single-threaded: one struct paxos is driven
 * by one thread at a time; it never blocks and never calls out.
 *
 * HOW AN ADAPTER DRIVES THE CORE
 *
 *   p = paxos_new(&cfg, &durable, now_us);     // durable: what was synced before the last crash
 *   loop:
 *     feed inputs:  paxos_step(p, msg, now)     // a message from a peer (borrowed; copy what you keep)
 *                   paxos_tick(p, now)          // the monotonic clock moved (call every few ms)
 *                   paxos_propose(p, ...)       // a client command batch (leader only)
 *                   paxos_snapshot_done(p, i)   // the state machine made a durable snapshot at index i
 *                   paxos_snapshot_installed()  // a snapshot received from a peer is durably installed
 *     if (paxos_ready(p, &rd)) {                // collect outputs of everything fed so far
 *         1. send rd.send_now[]        (may go out at once, even before the barrier)
 *         2. persist rd.entries[], rd.truncate_below, rd.hard (if rd.hard_changed) in ONE write batch
 *            and fsync it                                                       <- the persist barrier
 *         3. send rd.send_after[]      (ONLY after step 2 is durable: they promise durable state)
 *         4. apply rd.apply[] to the state machine in order (slot by slot; applied index stored
 *            atomically with the effects of each entry)
 *         5. paxos_advance(p, &rd)     // releases rd; nothing else may be called between 0 and 5
 *     }
 *   Inputs that arrive while steps 1-5 run (a fsync is in progress) are queued by the adapter and fed in one
 *   go afterwards, so every batch of messages costs one fsync (group commit). Step 1 may overlap step 2:
 *   only the leader's ACCEPTs/heartbeats/commits and catch-up traffic are in send_now, and the leader counts
 *   its own vote only at paxos_advance. Everything an acceptor says (PROMISE, ACCEPTED, HEARTBEAT_ACK) and
 *   every PREPARE is in send_after. If the process crashes anywhere in 1-5, restart from what was synced.
 *   Messages may be lost, duplicated and reordered; the core retransmits what matters.
 *
 * PERSISTENCE (what the storage adapter keeps, under one key prefix per kind):
 *   - hard state: the acceptor's promised ballot (it is also the proposer's ballot floor: a node always
 *     promises its own ballot before sending a prepare, so a restarted node never reuses a ballot).
 *   - log entries by slot: (slot, ballot, chosen flag, value). A later record for the same slot replaces the
 *     earlier one. truncate_below = X deletes every entry with slot < X (only ever below a durable snapshot).
 *   - the state machine's applied index (written atomically with each apply, and with installed snapshots).
 *   Write a batch as: the entries in order (a later record for a slot wins), then truncate_below, then the
 *   hard state. On restart pass all of it back in struct paxos_durable; the commit point itself need not be
 *   persisted (entries <= applied are known chosen; the rest is re-learned from the leader).
 *
 * SNAPSHOTS: the state machine (not the core) owns snapshots. Call paxos_snapshot_done() when a snapshot of
 * the applied state at index i is durable; the core then truncates its log below i + 1 - log_retain. When a
 * peer needs entries the log no longer has, the core emits a PAXOS_MSG_SNAPSHOT to it (log_start field = the
 * index of our latest durable snapshot): the adapter streams that snapshot (with applied index) to the peer;
 * the receiving adapter installs it durably (state + applied index atomically), then calls
 * paxos_snapshot_installed().
 *
 * CLIENT COMMANDS: paxos_propose() copies the value into a new slot and returns (slot, zxid). The command is
 * done when an applied entry at that slot carries that zxid (a different zxid there means it lost; the
 * client retries under its session). Pack many client commands into one value (batching); the core keeps
 * up to cfg.window slots in flight (pipelining) and coalesces all accepts of a batch into one message per peer.
 * Reads: when paxos_can_read() says yes, the leader may answer linearizable reads from its applied state
 * (leader lease); otherwise put the read through the log as a command (that is the quorum round). Followers
 * answer with paxos_leader_hint(); observers may serve stale reads from their applied state.
 * The zxid is part of the chosen value, so it is identical on every replica; it is unique, and increases
 * with the slot within one epoch (a value re-proposed by a later leader keeps its original zxid).
 *
 * MEMBERSHIP is static (cfg.voter_mask; observers are the non-voters). PAXOS_VAL_CONFIG is reserved.
 *
 * Errors are negative errno values. Functions that cannot fail say so.
 */
#ifndef SYNOD_PAXOS_H
#define SYNOD_PAXOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAXOS_MAX_NODES 16
#define PAXOS_NO_NODE UINT32_MAX

/* Ballot = round << 16 | node id, compared as one 64-bit number. 0 is "no ballot". */
#define PAXOS_BALLOT(round, node) ((uint64_t)(round) << 16 | (uint64_t)(node))
#define PAXOS_BALLOT_ROUND(b) ((b) >> 16)
#define PAXOS_BALLOT_NODE(b) ((uint32_t)((b) & 0xffff))
/* zxid = epoch << 32 | counter, epoch = the proposing leader's ballot round. */
#define PAXOS_ZXID(epoch, counter) ((uint64_t)(epoch) << 32 | (uint32_t)(counter))

enum paxos_state { PAXOS_LOOKING = 0, PAXOS_LEADING = 1, PAXOS_FOLLOWING = 2, PAXOS_OBSERVING = 3 };

enum paxos_value_kind { PAXOS_VAL_NOOP = 0, PAXOS_VAL_CMD = 1, PAXOS_VAL_CONFIG = 2 };

/* An immutable, reference-counted value (one slot's content). Single-threaded refcount: share only between
 * objects driven by the same thread, or copy. */
/* Bytes of values that one PROMISE or CATCHUP_REP carries at most (one entry more can pass it). A turn's
 * messages to a peer travel together (the transport splits them by size, rsm_net.c) and one message must fit
 * the transport's 64 MiB limit; unbounded, a PROMISE to a candidate far behind carried the whole retained
 * log (up to ~100k slots of up to 1 MiB) and its encoding ran the acceptor out of memory. */
#define PAXOS_MAX_MSG_BYTES (16u << 20)
/* Bytes of values a leader keeps unchosen at most (its slots above its commit point; one slot may always go,
 * whatever its size). A PROMISE to a candidate at or past an acceptor's commit point carries the acceptor's
 * unchosen slots, which lag the leader's commit point by at most a round: about twice this, within
 * PAXOS_MAX_MSG_BYTES. The window alone (64 slots of up to 1 MiB) allowed 64 MiB and more. */
#define PAXOS_MAX_INFLIGHT_BYTES (PAXOS_MAX_MSG_BYTES / 2)

struct paxos_val {
    uint32_t refs;
    uint32_t kind; /* enum paxos_value_kind */
    uint64_t zxid; /* stamped by the leader that first proposed it; 0 for no-ops */
    uint32_t len;
    uint8_t data[];
};
/* Make a value with a copy of (data, len); refs = 1. Cannot fail. */
struct paxos_val *paxos_val_new(uint32_t kind, uint64_t zxid, const void *data, uint32_t len);
struct paxos_val *paxos_val_ref(struct paxos_val *v);
void paxos_val_unref(struct paxos_val *v); /* NULL is fine */
bool paxos_val_equal(const struct paxos_val *a, const struct paxos_val *b);

/* One slot in a message or a persist record. val is borrowed from the message/ready that holds it. */
struct paxos_entry {
    uint64_t slot;
    uint64_t ballot;  /* the ballot it was accepted at (for chosen entries: informational) */
    bool chosen;      /* known chosen: must be adopted by a new leader as is */
    struct paxos_val *val; /* NULL in ACCEPTED (slot list only) */
};

enum paxos_msg_type {
    PAXOS_MSG_PREPARE = 1,   /* ballot, first_slot = first unchosen slot of the candidate */
    PAXOS_MSG_PROMISE,       /* ballot, ok, promised, entries = accepted at >= first_slot, commit, log_start */
    PAXOS_MSG_ACCEPT,        /* ballot, entries (many slots), commit */
    PAXOS_MSG_ACCEPTED,      /* ballot, ok, promised, entries = slots accepted (val NULL), log_start (0, or ours
                              * when the ACCEPT named slots below it: the leader is behind our snapshot) */
    PAXOS_MSG_COMMIT,        /* ballot, commit: every slot <= commit holding `ballot` is chosen */
    PAXOS_MSG_HEARTBEAT,     /* ballot, commit, seq, lease_ms; doubles as the lease round */
    PAXOS_MSG_HEARTBEAT_ACK, /* ballot, ok, promised, seq, commit (the acker's) */
    PAXOS_MSG_CATCHUP_REQ,   /* first_slot, max_slots */
    PAXOS_MSG_CATCHUP_REP,   /* entries (all chosen), commit, log_start */
    PAXOS_MSG_SNAPSHOT,      /* log_start = index of the sender's durable snapshot: the adapter streams it;
                              * paxos_step() ignores it (install, then paxos_snapshot_installed) */
};

struct paxos_msg {
    enum paxos_msg_type type;
    uint32_t from, to;
    uint64_t ballot;
    bool ok;
    uint64_t promised;
    uint64_t first_slot;
    uint64_t commit;
    uint64_t log_start;
    uint64_t seq;
    uint32_t lease_ms;
    uint32_t max_slots;
    struct paxos_entry *entries;
    size_t n_entries;
};

/* Test-only fault switches (never set in production): the simulator must catch both. */
#define PAXOS_BUG_FORGET_PROMISE 0x1u /* a restarted acceptor forgets its promise */
#define PAXOS_BUG_REUSE_BALLOT 0x2u   /* a restarted proposer reuses its last ballot */
#define PAXOS_BUG_NO_LEASE_MARGIN 0x4u /* the leader's lease ignores clock drift (no margin) */

struct paxos_config {
    uint32_t self;         /* node id, < n_nodes */
    uint32_t n_nodes;      /* <= PAXOS_MAX_NODES */
    uint32_t voter_mask;   /* bit i set: node i votes; others are observers (non-voting learners) */
    uint64_t seed;         /* randomized election timeouts (deterministic given inputs) */
    uint32_t heartbeat_ms; /* leader heartbeat / retransmit interval */
    uint32_t election_ms;  /* election timeout is uniform in [election_ms, 2 * election_ms) */
    uint32_t lease_ms;     /* follower promise after a heartbeat; must be < election_ms */
    uint32_t max_drift_ppm; /* bound on clock-rate error of any node; sizes the lease margin */
    uint32_t window;        /* max slots in flight (proposed, not chosen) */
    uint32_t catchup_batch; /* max slots per catch-up reply */
    uint32_t max_apply;     /* max entries handed out per ready */
    uint32_t log_retain;    /* slots kept below a snapshot for cheap catch-up */
    uint32_t max_ahead;     /* a replica ignores accepts this far beyond its commit point (bounds memory) */
    uint32_t test_bugs;     /* PAXOS_BUG_* (tests only) */
};
/* Fill sane defaults for everything but self, n_nodes, voter_mask, seed. Cannot fail. */
void paxos_config_defaults(struct paxos_config *cfg);

/* What the storage adapter had synced before the crash (borrowed during paxos_new; the core takes its own
 * references on the values). All times given to the core are one monotonic clock, in microseconds. */
struct paxos_durable {
    uint64_t promised;
    const struct paxos_entry *entries; /* any order; later duplicates of a slot win */
    size_t n_entries;
    uint64_t applied;  /* the state machine's durable applied index (a snapshot's index counts) */
};

/* Everything the core wants done; the arrays and the values they point to are owned by the core until
 * paxos_advance() (take paxos_val_ref() to keep a value longer, e.g. in a send queue). See the loop above. */
struct paxos_ready {
    struct paxos_msg *send_now;
    size_t n_send_now;
    struct paxos_entry *entries; /* persist, in order */
    size_t n_entries;
    uint64_t truncate_below;     /* 0 = none; else delete entries with slot < truncate_below */
    bool hard_changed;
    uint64_t promised;           /* the hard state to persist when hard_changed */
    struct paxos_msg *send_after;
    size_t n_send_after;
    struct paxos_entry *apply;   /* chosen entries, consecutive slots from applied + 1 */
    size_t n_apply;
};

struct paxos;

/* Validate cfg (returns -EINVAL when invalid) and build a core from durable state. */
int paxos_new(const struct paxos_config *cfg, const struct paxos_durable *d, uint64_t now_us,
              struct paxos **out);
void paxos_free(struct paxos *p);

/* Feed one message (borrowed). Untrusted fields are validated; malformed messages are dropped (-EINVAL).
 * Messages not addressed to us are dropped. Returns 0 otherwise. */
int paxos_step(struct paxos *p, const struct paxos_msg *m, uint64_t now_us);
/* Time passed. Cannot fail. now_us must not go backwards. */
void paxos_tick(struct paxos *p, uint64_t now_us);
/* Leader only: put a value (copied) into a new slot. Returns 0 and the slot and zxid; -EREMOTE when not
 * the leader (see paxos_leader_hint), -EAGAIN when the leader is not serving yet or the window is full (in
 * slots, or PAXOS_MAX_INFLIGHT_BYTES of unchosen values). */
int paxos_propose(struct paxos *p, uint32_t kind, const void *data, uint32_t len, uint64_t now_us,
                  uint64_t *slot, uint64_t *zxid);
/* Collect outputs; returns false (and an empty rd) when there is nothing to do. */
bool paxos_ready(struct paxos *p, struct paxos_ready *rd);
/* Steps 1-4 of the loop are done: the persisted records are durable and the entries applied. */
void paxos_advance(struct paxos *p, struct paxos_ready *rd);

/* The state machine has a durable snapshot at index (<= applied): allows log truncation. */
void paxos_snapshot_done(struct paxos *p, uint64_t index);
/* A peer's snapshot at index is durably installed (state and applied index). Returns -EBUSY when we lead
 * (a leader never rolls its state forward from a peer), 0 otherwise (a stale snapshot is ignored). */
int paxos_snapshot_installed(struct paxos *p, uint64_t index, uint64_t now_us);

/* Leader lease: true when we may answer a linearizable read from the applied state right now. */
bool paxos_can_read(const struct paxos *p, uint64_t now_us);
/* Accessors; cannot fail. */
enum paxos_state paxos_state(const struct paxos *p);
bool paxos_serving(const struct paxos *p); /* leading, recovered prefix chosen and applied */
uint32_t paxos_leader_hint(const struct paxos *p); /* PAXOS_NO_NODE when unknown */
uint64_t paxos_ballot(const struct paxos *p);      /* the ballot we lead or campaign with, else 0 */
uint64_t paxos_promised(const struct paxos *p);
uint64_t paxos_commit_index(const struct paxos *p);
uint64_t paxos_applied_index(const struct paxos *p);
uint64_t paxos_log_start(const struct paxos *p);
const char *paxos_state_name(enum paxos_state s);
const char *paxos_msg_name(enum paxos_msg_type t);
/* Check the core's internal invariants (cheap; aborts on violation). For tests and debug builds. */
void paxos_check(const struct paxos *p);

#endif
