/* sim.c - the seeded simulator for the Paxos core: fake network, fake clocks, fake disk, a KV state machine.
 *
 * One seed = one deterministic run: 3 or 5 voters (sometimes plus an observer) driven exactly the way the
 * storage/transport adapters will drive them (paxos.h): send_now at once, persist to a fake disk that only
 * keeps what was synced, send_after and apply only after the sync. The network drops, duplicates, delays,
 * reorders and partitions; nodes crash (losing unsynced writes, often right after a promise or in the
 * middle of a fsync) and restart; every node's clock runs at its own rate within the drift bound.
 *
 * Checked after every step: (1) one value per slot - an oracle watches every durable accept and declares a
 * value chosen when a voter quorum accepted it at one ballot; two chosen values for a slot, or an applied
 * value that differs from the chosen/previously applied one, is a violation; (2) identical applied
 * prefixes (hash chain per slot); (3) at most one node may serve lease reads at any true time; (4) each
 * core's own invariants (paxos_check); (5) no acceptor reply or PREPARE is offered before the barrier. At the
 * end: the client histories are linearizable per key (lin.c); after the heal (partitions gone, crashed nodes
 * back, no more drops) a new put commits within 5 s of simulated time, and 1 s later every replica, the
 * observer included, has applied it (catch-up and snapshot install converge).
 *
 * With --bug forget|reuse|lease the core runs with a deliberately broken acceptor (forgets its promise on
 * restart), proposer (reuses its ballot after a restart) or lease (no drift margin), under a fault mix made
 * to expose it, and the run must find a safety violation (exit 0 when it does; each seed runs in a child so
 * a core assertion counts too, a mere liveness failure does not). The same seed gives the same run; a
 * violation prints the seed, the trace tail and the command line that replays it.
 *
 * Usage: paxos_sim [--seeds N] [--first S] [--long] [--bug forget|reuse|lease] [--verbose]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "metaserver/paxos.h"
#include "tests/paxos/lin.h"

#define MAXN 6
#define NKEYS 4
#define PROBE_KEY NKEYS /* the progress probe's own key */
#define NCLI 6
#define US 1ull
#define MS ((uint64_t)1000)
#define TRACE_N 64
#define SNAP_EVERY 24

/* ---------------- scenario and global state ---------------- */

struct params {
    int n, n_voters;
    double drop, dup;
    uint64_t delay_min, delay_jitter;
    uint64_t crash_mean, down_max;
    double crash_after_promise, crash_mid_sync, crash_mid_sync_leader;
    uint64_t part_mean;
    uint32_t drift_ppm, hb_ms, election_ms, lease_ms, window;
    int n_clients;
    uint64_t fault_end, progress_bound;
    uint32_t bugs;
    bool lease_stress;
};

enum ev_type { EV_DELIVER, EV_TICK, EV_SYNC, EV_CRASH, EV_RESTART, EV_PART, EV_CLIENT, EV_CLIENT_TIMEOUT };

struct snap {
    int refs;
    uint64_t index, digest;
    uint64_t kv[NKEYS + 1];
};

struct smsg {
    struct paxos_msg m;
    struct snap *snap;
};

struct event {
    uint64_t t, seq;
    enum ev_type type;
    int node;
    uint64_t gen;
    struct smsg *msg;
};

struct dentry {
    uint64_t ballot;
    bool present, chosen;
    struct paxos_val *val;
};

struct pending_put {
    int client;
    uint64_t value;
    int key;
    uint64_t invoke;
};

struct node {
    struct paxos *p;
    bool up, busy;
    uint64_t gen;
    double rate;
    uint64_t offset;
    struct paxos_ready rd;
    /* pending (unsynced) write: rd.entries etc. stay valid until advance */
    struct smsg **inbox;
    size_t n_inbox, cap_inbox;
    /* volatile state machine */
    uint64_t kv[NKEYS + 1];
    uint64_t applied, digest;
    /* fake disk (synced state only) */
    uint64_t d_promised;
    struct dentry *d_log;
    uint64_t d_cap;
    struct snap *d_snap;
    /* adapter batching: client puts waiting to be proposed as one value */
    struct pending_put *q;
    size_t n_q, cap_q;
};

struct client {
    int target;
    bool waiting;
    uint64_t op_value; /* the put in flight (0: none) */
    uint64_t gen;
};

struct op {
    int key;
    bool is_put, done;
    uint64_t value, invoke, response;
    int node;
    uint64_t node_gen;
    int client;
};

struct oracle_acc {
    uint64_t ballot;
    struct paxos_val *val;
    uint32_t mask;
};
struct oracle_slot {
    struct oracle_acc *acc;
    size_t n, cap;
    struct paxos_val *chosen;
    struct paxos_val *applied;
    uint64_t digest;
};

struct trace_rec {
    uint64_t t;
    int node;
    char what[96];
};

static struct {
    struct params pr;
    uint64_t seed, rng, now, seq;
    struct event *heap;
    size_t n_heap, cap_heap;
    struct node nodes[MAXN];
    int part[MAXN];
    struct client cli[NCLI];
    struct op *ops;
    size_t n_ops, cap_ops;
    size_t ops_per_key[NKEYS + 1];
    uint64_t next_value;
    struct oracle_slot *slots;
    uint64_t n_slots;
    bool healed, probe_done;
    uint64_t heal_time, probe_ok_time, probe_slot;
    char violation[256];
    struct trace_rec trace[TRACE_N];
    uint64_t n_trace;
    bool verbose, liveness;
    uint64_t events, max_slot;
    uint64_t lead_ballot[MAXN];
    struct stats {
        uint64_t crashes, lost_writes, snap_installs, leader_changes, reads, puts_ok, puts_pending, ops;
    } st;
} S;
static struct stats total;

static uint64_t rnd(void) { return util_rand_next(&S.rng); }
static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }
static double rnd_unit(void) { return (double)(rnd() >> 11) / (double)(1ull << 53); }
static bool chance(double p) { return rnd_unit() < p; }

static void trace(int node, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace(int node, const char *fmt, ...)
{
    struct trace_rec *r = &S.trace[S.n_trace++ % TRACE_N];
    r->t = S.now;
    r->node = node;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->what, sizeof(r->what), fmt, ap);
    va_end(ap);
    if (S.verbose)
        fprintf(stderr, "%10.3f ms n%d %s\n", (double)r->t / 1000.0, node, r->what);
}

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    if (S.violation[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(S.violation, sizeof(S.violation), fmt, ap);
    va_end(ap);
}

static void dump_trace(void)
{
    uint64_t from = S.n_trace > TRACE_N ? S.n_trace - TRACE_N : 0;
    for (uint64_t i = from; i < S.n_trace; i++) {
        struct trace_rec *r = &S.trace[i % TRACE_N];
        fprintf(stderr, "  %10.3f ms n%d %s\n", (double)r->t / 1000.0, r->node, r->what);
    }
}

static uint64_t local_now(const struct node *n) { return n->offset + (uint64_t)((double)S.now * n->rate); }
static uint64_t true_after_local(const struct node *n, uint64_t local_us)
{
    return S.now + (uint64_t)((double)local_us / n->rate) + 1;
}
static bool is_voter(int i) { return i < S.pr.n_voters; }
static int quorum(void) { return S.pr.n_voters / 2 + 1; }

/* ---------------- event heap ---------------- */

static bool ev_less(const struct event *a, const struct event *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void push_event(uint64_t t, enum ev_type type, int node, struct smsg *msg)
{
    if (S.n_heap == S.cap_heap) {
        S.cap_heap = S.cap_heap ? S.cap_heap * 2 : 1024;
        S.heap = xrealloc(S.heap, S.cap_heap * sizeof(*S.heap));
    }
    struct event e = { t, S.seq++, type, node, node >= 0 && node < MAXN ? S.nodes[node].gen : 0, msg };
    size_t i = S.n_heap++;
    while (i > 0 && ev_less(&e, &S.heap[(i - 1) / 2])) {
        S.heap[i] = S.heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    S.heap[i] = e;
}

static struct event pop_event(void)
{
    struct event top = S.heap[0], last = S.heap[--S.n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= S.n_heap)
            break;
        if (c + 1 < S.n_heap && ev_less(&S.heap[c + 1], &S.heap[c]))
            c++;
        if (!ev_less(&S.heap[c], &last))
            break;
        S.heap[i] = S.heap[c];
        i = c;
    }
    if (S.n_heap)
        S.heap[i] = last;
    return top;
}

/* ---------------- messages ---------------- */

static void snap_unref(struct snap *s)
{
    if (s && --s->refs == 0)
        free(s);
}

static struct smsg *msg_copy(const struct paxos_msg *m)
{
    struct smsg *c = xcalloc(1, sizeof(*c));
    c->m = *m;
    if (m->n_entries) {
        c->m.entries = xmalloc(m->n_entries * sizeof(*m->entries));
        for (size_t i = 0; i < m->n_entries; i++) {
            c->m.entries[i] = m->entries[i];
            if (m->entries[i].val)
                paxos_val_ref(m->entries[i].val);
        }
    } else {
        c->m.entries = NULL;
    }
    return c;
}

static struct smsg *smsg_dup(const struct smsg *s)
{
    struct smsg *c = msg_copy(&s->m);
    c->snap = s->snap;
    if (c->snap)
        c->snap->refs++;
    return c;
}

static void smsg_free(struct smsg *s)
{
    for (size_t i = 0; i < s->m.n_entries; i++)
        paxos_val_unref(s->m.entries[i].val);
    free(s->m.entries);
    snap_unref(s->snap);
    free(s);
}

static void net_send(int from, const struct paxos_msg *m)
{
    ASSERT(m->from == (uint32_t)from && m->to < (uint32_t)S.pr.n);
    if (S.part[from] != S.part[m->to] || chance(S.pr.drop))
        return;
    struct smsg *c = msg_copy(m);
    if (m->type == PAXOS_MSG_SNAPSHOT) {
        c->snap = S.nodes[from].d_snap; /* the adapter streams its latest durable snapshot */
        c->snap->refs++;
        c->m.log_start = c->snap->index;
    }
    int copies = chance(S.pr.dup) ? 2 : 1;
    for (int k = 0; k < copies; k++) {
        struct smsg *x = k ? smsg_dup(c) : c;
        push_event(S.now + S.pr.delay_min + rnd_below(S.pr.delay_jitter + 1), EV_DELIVER, (int)m->to, x);
    }
}

/* ---------------- oracle ---------------- */

static struct oracle_slot *oslot(uint64_t slot)
{
    if (slot >= S.n_slots) {
        uint64_t nn = S.n_slots ? S.n_slots : 256;
        while (nn <= slot)
            nn *= 2;
        S.slots = xrealloc(S.slots, nn * sizeof(*S.slots));
        memset(S.slots + S.n_slots, 0, (nn - S.n_slots) * sizeof(*S.slots));
        S.n_slots = nn;
    }
    if (slot > S.max_slot)
        S.max_slot = slot;
    return &S.slots[slot];
}

static void oracle_chosen(uint64_t slot, struct paxos_val *v, const char *how)
{
    struct oracle_slot *o = oslot(slot);
    if (!o->chosen) {
        o->chosen = paxos_val_ref(v);
    } else if (!paxos_val_equal(o->chosen, v)) {
        violation("slot %" PRIu64 ": two different values chosen (%s; zxid %" PRIx64 " vs %" PRIx64 ")", slot, how,
                  o->chosen->zxid, v->zxid);
    }
    if (o->applied && !paxos_val_equal(o->applied, v))
        violation("slot %" PRIu64 ": applied value differs from chosen value (%s)", slot, how);
}

/* A voter durably accepted (ballot, val) at slot. */
static void oracle_accept(int node, uint64_t slot, uint64_t ballot, struct paxos_val *v)
{
    struct oracle_slot *o = oslot(slot);
    struct oracle_acc *a = NULL;
    for (size_t i = 0; i < o->n; i++)
        if (o->acc[i].ballot == ballot && paxos_val_equal(o->acc[i].val, v)) {
            a = &o->acc[i];
            break;
        }
    if (!a) {
        if (o->n == o->cap) {
            o->cap = o->cap ? o->cap * 2 : 4;
            o->acc = xrealloc(o->acc, o->cap * sizeof(*o->acc));
        }
        a = &o->acc[o->n++];
        *a = (struct oracle_acc){ ballot, paxos_val_ref(v), 0 };
    }
    a->mask |= 1u << node;
    if (__builtin_popcount(a->mask) >= quorum())
        oracle_chosen(slot, a->val, "quorum accepted");
}

/* ---------------- the state machine (KV) ---------------- */

/* Command = repeated (key u8, value u64 LE). Values are unique per run: they double as operation ids. */
static uint64_t digest_step(uint64_t h, const struct paxos_val *v)
{
    h ^= v->kind + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= v->zxid * 0xff51afd7ed558ccdull;
    for (uint32_t i = 0; i < v->len; i++)
        h = (h ^ v->data[i]) * 0x100000001b3ull;
    return h;
}

static struct op *find_put(uint64_t value)
{
    for (size_t i = S.n_ops; i-- > 0;)
        if (S.ops[i].is_put && S.ops[i].value == value)
            return &S.ops[i];
    return NULL;
}

static void client_next(int c, uint64_t delay);

static void apply_entry(int ni, const struct paxos_entry *e)
{
    struct node *n = &S.nodes[ni];
    if (e->slot != n->applied + 1) {
        violation("n%d: applied slot %" PRIu64 " after %" PRIu64, ni, e->slot, n->applied);
        return;
    }
    struct oracle_slot *o = oslot(e->slot);
    n->digest = digest_step(n->digest, e->val);
    if (!o->applied) {
        o->applied = paxos_val_ref(e->val);
        o->digest = n->digest;
    } else if (!paxos_val_equal(o->applied, e->val) || o->digest != n->digest) {
        violation("n%d: applied prefix differs at slot %" PRIu64, ni, e->slot);
    }
    if (o->chosen && !paxos_val_equal(o->chosen, e->val))
        violation("n%d: applied value at slot %" PRIu64 " is not the chosen one", ni, e->slot);
    n->applied = e->slot;
    if (e->val->kind != PAXOS_VAL_CMD)
        return;
    for (uint32_t off = 0; off + 9 <= e->val->len; off += 9) {
        int key = e->val->data[off];
        uint64_t value = get_le64(e->val->data + off + 1);
        ASSERT(key <= NKEYS);
        n->kv[key] = value;
        struct op *op = find_put(value);
        if (op && !op->done && op->node == ni && op->node_gen == n->gen) {
            op->done = true;
            op->response = S.now;
            struct client *cl = &S.cli[op->client];
            if (cl->waiting && cl->op_value == value) {
                cl->waiting = false;
                cl->op_value = 0;
                if (key == PROBE_KEY && S.healed && !S.probe_done) {
                    S.probe_done = true;
                    S.probe_ok_time = S.now;
                    S.probe_slot = e->slot;
                }
                client_next(op->client, 1 * MS + rnd_below(10 * MS));
            }
        }
    }
}

static void take_snapshot(int ni)
{
    struct node *n = &S.nodes[ni];
    struct snap *s = xmalloc(sizeof(*s));
    s->refs = 1;
    s->index = n->applied;
    s->digest = n->digest;
    memcpy(s->kv, n->kv, sizeof(s->kv));
    snap_unref(n->d_snap);
    n->d_snap = s; /* the state machine's durable state (LevelDB) */
    paxos_snapshot_done(n->p, s->index);
}

/* ---------------- fake disk ---------------- */

static struct dentry *dslot(struct node *n, uint64_t slot)
{
    if (slot >= n->d_cap) {
        uint64_t nc = n->d_cap ? n->d_cap : 256;
        while (nc <= slot)
            nc *= 2;
        n->d_log = xrealloc(n->d_log, nc * sizeof(*n->d_log));
        memset(n->d_log + n->d_cap, 0, (nc - n->d_cap) * sizeof(*n->d_log));
        n->d_cap = nc;
    }
    return &n->d_log[slot];
}

/* The write batch of the node's current ready becomes durable. */
static void disk_sync(int ni)
{
    struct node *n = &S.nodes[ni];
    struct paxos_ready *rd = &n->rd;
    for (size_t i = 0; i < rd->n_entries; i++) {
        const struct paxos_entry *e = &rd->entries[i];
        struct dentry *d = dslot(n, e->slot);
        paxos_val_ref(e->val);
        paxos_val_unref(d->val);
        *d = (struct dentry){ e->ballot, true, e->chosen, e->val };
        if (e->chosen)
            oracle_chosen(e->slot, e->val, "persisted as chosen");
        else if (is_voter(ni))
            oracle_accept(ni, e->slot, e->ballot, e->val);
    }
    if (rd->truncate_below)
        for (uint64_t s = 0; s < rd->truncate_below && s < n->d_cap; s++) {
            paxos_val_unref(n->d_log[s].val);
            memset(&n->d_log[s], 0, sizeof(n->d_log[s]));
        }
    if (rd->hard_changed)
        n->d_promised = rd->promised;
}

/* ---------------- node driving (the adapter loop of paxos.h) ---------------- */

static void node_crash(int ni);
static void feed(int ni, struct smsg *s);

/* The queued puts never entered the log: their clients just fail and move on. */
static void fail_queue(struct node *n)
{
    for (size_t i = 0; i < n->n_q; i++) {
        struct client *cl = &S.cli[n->q[i].client];
        if (cl->waiting && cl->op_value == n->q[i].value) {
            cl->waiting = false;
            cl->op_value = 0;
            client_next(n->q[i].client, 5 * MS);
        }
    }
}

static void propose_queue(int ni)
{
    struct node *n = &S.nodes[ni];
    if (!n->n_q || !paxos_serving(n->p))
        return;
    uint8_t *buf = xmalloc(n->n_q * 9);
    for (size_t i = 0; i < n->n_q; i++) {
        buf[i * 9] = (uint8_t)n->q[i].key;
        put_le64(buf + i * 9 + 1, n->q[i].value);
    }
    uint64_t slot, zxid;
    int rc = paxos_propose(n->p, PAXOS_VAL_CMD, buf, (uint32_t)(n->n_q * 9), local_now(n), &slot, &zxid);
    free(buf);
    if (rc == -EAGAIN)
        return; /* window full: keep batching */
    if (rc == 0) {
        for (size_t i = 0; i < n->n_q; i++) {
            struct pending_put *q = &n->q[i];
            if (S.n_ops == S.cap_ops) {
                S.cap_ops = S.cap_ops ? S.cap_ops * 2 : 64;
                S.ops = xrealloc(S.ops, S.cap_ops * sizeof(*S.ops));
            }
            S.ops[S.n_ops++] = (struct op){ q->key, true, false, q->value, q->invoke, LIN_PENDING, ni, n->gen,
                                            q->client };
        }
        trace(ni, "propose slot %" PRIu64 " zxid %" PRIx64 " (%zu puts)", slot, zxid, n->n_q);
    } else {
        fail_queue(n);
    }
    n->n_q = 0;
}

static void finish_ready(int ni);

static void drive(int ni)
{
    struct node *n = &S.nodes[ni];
    while (n->up && !n->busy) {
        propose_queue(ni);
        if (!paxos_ready(n->p, &n->rd))
            return;
        for (size_t i = 0; i < n->rd.n_send_now; i++) {
            enum paxos_msg_type t = n->rd.send_now[i].type;
            if (t == PAXOS_MSG_PREPARE || t == PAXOS_MSG_PROMISE || t == PAXOS_MSG_ACCEPTED ||
                t == PAXOS_MSG_HEARTBEAT_ACK)
                violation("n%d: %s offered before the persist barrier", ni, paxos_msg_name(t));
            net_send(ni, &n->rd.send_now[i]);
        }
        if (n->rd.n_entries || n->rd.truncate_below || n->rd.hard_changed) {
            n->busy = true;
            uint64_t d = 50 + rnd_below(1500);
            push_event(S.now + d, EV_SYNC, ni, NULL);
            bool leader_accepts = n->rd.n_send_now && n->rd.send_now[0].type == PAXOS_MSG_ACCEPT;
            /* crash with the write not yet durable (a leader: its ACCEPTs are already out) */
            if (chance(leader_accepts ? S.pr.crash_mid_sync_leader : S.pr.crash_mid_sync))
                push_event(S.now + rnd_below(d), EV_CRASH, ni, NULL);
            return;
        }
        finish_ready(ni);
    }
}

static void finish_ready(int ni)
{
    struct node *n = &S.nodes[ni];
    bool promised_changed = n->rd.hard_changed;
    for (size_t i = 0; i < n->rd.n_send_after; i++)
        net_send(ni, &n->rd.send_after[i]);
    for (size_t i = 0; i < n->rd.n_apply; i++)
        apply_entry(ni, &n->rd.apply[i]);
    paxos_advance(n->p, &n->rd);
    n->busy = false;
    if (n->applied >= n->d_snap->index + SNAP_EVERY)
        take_snapshot(ni);
    if (promised_changed && chance(S.pr.crash_after_promise))
        push_event(S.now + rnd_below(2 * MS), EV_CRASH, ni, NULL);
    /* everything that arrived during the fsync goes in as one batch */
    size_t k = n->n_inbox;
    struct smsg **in = n->inbox;
    n->inbox = NULL;
    n->n_inbox = n->cap_inbox = 0;
    for (size_t i = 0; i < k; i++) {
        if (n->up && !n->busy)
            feed(ni, in[i]);
        else
            smsg_free(in[i]);
    }
    free(in);
}

static void install_snapshot(int ni, struct snap *s)
{
    struct node *n = &S.nodes[ni];
    if (s->index <= n->applied || paxos_state(n->p) == PAXOS_LEADING)
        return;
    struct oracle_slot *o = oslot(s->index);
    if (o->applied && o->digest != s->digest)
        violation("n%d: snapshot at %" PRIu64 " differs from the applied prefix", ni, s->index);
    memcpy(n->kv, s->kv, sizeof(n->kv));
    n->applied = s->index;
    n->digest = s->digest;
    s->refs++;
    snap_unref(n->d_snap);
    n->d_snap = s; /* durable together with its applied index */
    trace(ni, "install snapshot at %" PRIu64, s->index);
    S.st.snap_installs++;
    ASSERT(paxos_snapshot_installed(n->p, s->index, local_now(n)) == 0);
}

static void feed(int ni, struct smsg *s)
{
    struct node *n = &S.nodes[ni];
    ASSERT(n->up && !n->busy);
    const struct paxos_msg *m = &s->m;
    trace(ni, "<- n%u %s b=%" PRIx64 " ok=%d c=%" PRIu64 " n=%zu first=%" PRIu64 " ls=%" PRIu64 " (commit %" PRIu64 ")", m->from,
          paxos_msg_name(m->type), m->ballot, m->ok, m->commit, m->n_entries,
          m->n_entries ? m->entries[0].slot : m->first_slot, m->log_start, paxos_commit_index(n->p));
    if (m->type == PAXOS_MSG_SNAPSHOT)
        install_snapshot(ni, s->snap);
    else
        ASSERT(paxos_step(n->p, m, local_now(n)) == 0);
    smsg_free(s);
    drive(ni);
}

static void node_start(int ni)
{
    struct node *n = &S.nodes[ni];
    struct paxos_config cfg = { 0 };
    paxos_config_defaults(&cfg);
    cfg.self = (uint32_t)ni;
    cfg.n_nodes = (uint32_t)S.pr.n;
    cfg.voter_mask = (1u << S.pr.n_voters) - 1;
    cfg.seed = S.seed * 131 + n->gen;
    cfg.heartbeat_ms = S.pr.hb_ms;
    cfg.election_ms = S.pr.election_ms;
    cfg.lease_ms = S.pr.lease_ms;
    cfg.max_drift_ppm = S.pr.drift_ppm;
    cfg.window = S.pr.window;
    cfg.catchup_batch = 16;
    cfg.log_retain = 8;
    cfg.max_ahead = 256;
    cfg.test_bugs = S.pr.bugs;
    /* restore: durable state machine (snapshot) + durable log + promise */
    memcpy(n->kv, n->d_snap->kv, sizeof(n->kv));
    n->applied = n->d_snap->index;
    n->digest = n->d_snap->digest;
    size_t cnt = 0;
    struct paxos_entry *es = xmalloc((n->d_cap + 1) * sizeof(*es));
    for (uint64_t s = n->applied + 1; s < n->d_cap; s++)
        if (n->d_log[s].present)
            es[cnt++] = (struct paxos_entry){ s, n->d_log[s].ballot, n->d_log[s].chosen, n->d_log[s].val };
    struct paxos_durable d = { n->d_promised, es, cnt, n->applied };
    ASSERT(paxos_new(&cfg, &d, local_now(n), &n->p) == 0);
    free(es);
    n->up = true;
    n->busy = false;
    trace(ni, "start (promised %" PRIx64 ", applied %" PRIu64 ", %zu log entries)", n->d_promised, n->applied, cnt);
}

static void node_crash(int ni)
{
    struct node *n = &S.nodes[ni];
    if (!n->up)
        return;
    trace(ni, "CRASH%s", n->busy ? " (unsynced write lost)" : "");
    S.st.crashes++;
    S.st.lost_writes += n->busy;
    paxos_free(n->p); /* drops the unsynced write along with the ready */
    n->p = NULL;
    n->up = false;
    n->busy = false;
    n->gen++;
    for (size_t i = 0; i < n->n_inbox; i++)
        smsg_free(n->inbox[i]);
    n->n_inbox = 0;
    fail_queue(n);
    n->n_q = 0;
    push_event(S.now + 1 * MS + rnd_below(S.pr.down_max), EV_RESTART, ni, NULL);
}

/* ---------------- clients ---------------- */

static void client_next(int c, uint64_t delay) { push_event(S.now + delay, EV_CLIENT, c, NULL); }

static int pick_key(void)
{
    int k = (int)rnd_below(NKEYS);
    for (int i = 0; i < NKEYS; i++, k = (k + 1) % NKEYS)
        if (S.ops_per_key[k] < LIN_MAX_OPS - 6)
            return k;
    return -1;
}

static void client_op(int c)
{
    struct client *cl = &S.cli[c];
    if (cl->waiting)
        return;
    if (S.healed && S.probe_done)
        return;
    int key = S.healed && c == 0 ? PROBE_KEY : pick_key();
    if (key < 0) { /* history budget spent: idle (client 0 becomes the progress probe after the heal) */
        client_next(c, 50 * MS);
        return;
    }
    struct node *n = &S.nodes[cl->target];
    if (!n->up || paxos_state(n->p) != PAXOS_LEADING) {
        uint32_t hint = n->up ? paxos_leader_hint(n->p) : PAXOS_NO_NODE;
        cl->target = hint < (uint32_t)S.pr.n ? (int)hint : (int)rnd_below((uint64_t)S.pr.n);
        client_next(c, 2 * MS + rnd_below(10 * MS));
        return;
    }
    bool put = key == PROBE_KEY || chance(0.5);
    if (!put) {
        if (paxos_can_read(n->p, local_now(n))) {
            if (S.n_ops == S.cap_ops) {
                S.cap_ops = S.cap_ops ? S.cap_ops * 2 : 64;
                S.ops = xrealloc(S.ops, S.cap_ops * sizeof(*S.ops));
            }
            S.ops[S.n_ops++] = (struct op){ key, false, true, n->kv[key], S.now, S.now, cl->target, n->gen, c };
            S.ops_per_key[key]++;
            S.st.reads++;
            trace(cl->target, "read key %d = %" PRIu64, key, n->kv[key]);
        }
        client_next(c, 1 * MS + rnd_below(10 * MS));
        return;
    }
    if (S.ops_per_key[key] >= LIN_MAX_OPS - 1) {
        client_next(c, 50 * MS);
        return;
    }
    S.ops_per_key[key]++;
    uint64_t value = ++S.next_value;
    if (n->n_q == n->cap_q) {
        n->cap_q = n->cap_q ? n->cap_q * 2 : 8;
        n->q = xrealloc(n->q, n->cap_q * sizeof(*n->q));
    }
    n->q[n->n_q++] = (struct pending_put){ c, value, key, S.now };
    cl->waiting = true;
    cl->op_value = value;
    cl->gen++;
    push_event(S.now + 400 * MS, EV_CLIENT_TIMEOUT, c, (struct smsg *)(uintptr_t)cl->gen);
    if (!n->busy)
        drive(cl->target);
}

/* ---------------- checks ---------------- */

static void check_step(void)
{
    int readers = 0, who[MAXN];
    for (int i = 0; i < S.pr.n; i++) {
        struct node *n = &S.nodes[i];
        if (!n->up)
            continue;
        paxos_check(n->p);
        if (paxos_state(n->p) == PAXOS_LEADING && paxos_ballot(n->p) != S.lead_ballot[i]) {
            S.lead_ballot[i] = paxos_ballot(n->p);
            S.st.leader_changes++;
            trace(i, "LEADING at ballot %" PRIx64, S.lead_ballot[i]);
        }
        if (paxos_can_read(n->p, local_now(n)))
            who[readers++] = i;
    }
    if (readers > 1)
        violation("two nodes serve lease reads at true time %" PRIu64 " us: n%d and n%d", S.now, who[0], who[1]);
}

static void check_history(void)
{
    for (int k = 0; k <= NKEYS && !S.violation[0]; k++) {
        struct lin_op h[LIN_MAX_OPS];
        size_t n = 0;
        for (size_t i = 0; i < S.n_ops; i++) {
            struct op *o = &S.ops[i];
            if (o->key != k)
                continue;
            ASSERT(n < LIN_MAX_OPS);
            h[n++] = (struct lin_op){ o->is_put, o->value, o->invoke, o->done ? o->response : LIN_PENDING };
        }
        if (!lin_check(h, n))
            violation("key %d: history of %zu ops is not linearizable", k, n);
    }
}

/* ---------------- one run ---------------- */

static void pick_params(uint64_t seed, uint32_t bugs)
{
    struct params *p = &S.pr;
    memset(p, 0, sizeof(*p));
    p->bugs = bugs;
    if (bugs & (PAXOS_BUG_FORGET_PROMISE | PAXOS_BUG_REUSE_BALLOT)) { /* aggressive: competing proposers, crashes right after promises, stale messages */
        p->n_voters = 3;
        p->n = 3;
        p->drop = 0.05;
        p->dup = 0.2;
        p->delay_min = 100;
        p->delay_jitter = 30 * MS;
        p->crash_mean = 600 * MS;
        p->down_max = 20 * MS;
        p->crash_after_promise = 0.5;
        p->crash_mid_sync = 0.1;
        p->crash_mid_sync_leader = 0.4;
        p->part_mean = 200 * MS;
        p->drift_ppm = 10000;
        p->fault_end = 3000 * MS;
    } else {
        p->n_voters = (seed % 2) ? 5 : 3;
        p->n = p->n_voters + (seed % 4 == 3 ? 1 : 0); /* every 4th seed carries an observer */
        p->drop = rnd_unit() * 0.1;
        p->dup = rnd_unit() * 0.05;
        p->delay_min = 100 + rnd_below(2 * MS);
        p->delay_jitter = rnd_below(15 * MS);
        p->crash_mean = 200 * MS + rnd_below(1500 * MS);
        p->down_max = 10 * MS + rnd_below(300 * MS);
        p->crash_after_promise = chance(0.3) ? 0.1 : 0.01;
        p->crash_mid_sync = chance(0.3) ? 0.01 : 0.001;
        p->crash_mid_sync_leader = chance(0.3) ? 0.02 : 0.002;
        p->part_mean = 200 * MS + rnd_below(800 * MS);
        p->drift_ppm = chance(0.5) ? 20000 : 1000;
        p->fault_end = 1500 * MS + rnd_below(1500 * MS);
    }
    p->window = 1u << rnd_below(5); /* 1..16 slots in flight: a small window makes proposers batch and wait */
    p->n_clients = 2 + (int)rnd_below(NCLI - 1);
    p->hb_ms = 20;
    p->election_ms = 150;
    p->lease_ms = 100;
    if ((!bugs && chance(0.5)) || (bugs & PAXOS_BUG_NO_LEASE_MARGIN)) { /* leases nearly as long as the election timeout, large drift: leases bite */
        p->election_ms = 104;
        p->lease_ms = 100;
        p->drift_ppm = chance(0.5) ? 50000 : 100000;
        p->lease_stress = true;
        p->delay_min = 100 + rnd_below(500);
        p->delay_jitter = rnd_below(2 * MS);
    }
    p->progress_bound = 5000 * MS;
}

static void cleanup(void)
{
    while (S.n_heap) {
        struct event e = pop_event();
        if (e.type == EV_DELIVER)
            smsg_free(e.msg);
    }
    free(S.heap);
    for (int i = 0; i < MAXN; i++) {
        struct node *n = &S.nodes[i];
        if (n->p)
            paxos_free(n->p);
        for (size_t k = 0; k < n->n_inbox; k++)
            smsg_free(n->inbox[k]);
        free(n->inbox);
        for (uint64_t s = 0; s < n->d_cap; s++)
            paxos_val_unref(n->d_log[s].val);
        free(n->d_log);
        snap_unref(n->d_snap);
        free(n->q);
    }
    for (uint64_t s = 0; s < S.n_slots; s++) {
        struct oracle_slot *o = &S.slots[s];
        for (size_t i = 0; i < o->n; i++)
            paxos_val_unref(o->acc[i].val);
        free(o->acc);
        paxos_val_unref(o->chosen);
        paxos_val_unref(o->applied);
    }
    free(S.slots);
    free(S.ops);
}

static void heal(void)
{
    S.healed = true;
    S.heal_time = S.now;
    for (int i = 0; i < S.pr.n; i++) {
        S.part[i] = 0;
        if (!S.nodes[i].up) {
            S.nodes[i].gen++;
            node_start(i);
            push_event(S.now + 1, EV_TICK, i, NULL);
        }
    }
    S.pr.drop = S.pr.dup = 0;
    S.pr.crash_after_promise = S.pr.crash_mid_sync = S.pr.crash_mid_sync_leader = 0;
    trace(-1, "HEAL");
}

/* Returns 0 when the run is clean, 1 on a safety violation, 2 on a liveness (progress) failure. */
static int run_seed(uint64_t seed, uint32_t bugs, bool verbose)
{
    memset(&S, 0, sizeof(S));
    S.seed = seed;
    S.verbose = verbose;
    S.rng = seed * 0x9E3779B97F4A7C15ull ^ 0x5DEECE66Dull;
    pick_params(seed, bugs);
    double eps = S.pr.drift_ppm / 1e6;
    for (int i = 0; i < S.pr.n; i++) {
        struct node *n = &S.nodes[i];
        n->rate = 1.0 - eps + 2 * eps * rnd_unit();
        if (chance(S.pr.lease_stress ? 1.0 : 0.3)) /* the extremes of the bound are where leases break */
            n->rate = chance(0.5) ? 1.0 - eps : 1.0 + eps;
        n->offset = rnd_below(1000000 * MS);
        n->d_snap = xcalloc(1, sizeof(*n->d_snap));
        n->d_snap->refs = 1;
        node_start(i);
        push_event(rnd_below(5 * MS), EV_TICK, i, NULL);
        push_event(rnd_below(S.pr.crash_mean * 2), EV_CRASH, i, NULL);
    }
    for (int c = 0; c < S.pr.n_clients; c++) {
        S.cli[c].target = (int)rnd_below((uint64_t)S.pr.n);
        client_next(c, 50 * MS + rnd_below(50 * MS));
    }
    push_event(rnd_below(S.pr.part_mean), EV_PART, -1, NULL);
    uint64_t end = S.pr.fault_end + S.pr.progress_bound;
    while (S.n_heap && !S.violation[0]) {
        struct event e = pop_event();
        S.now = e.t;
        S.events++;
        if (!S.healed && S.now >= S.pr.fault_end)
            heal();
        if (S.now > end) {
            if (e.type == EV_DELIVER)
                smsg_free(e.msg);
            break;
        }
        if (S.probe_done && S.now > S.probe_ok_time + 1000 * MS) {
            if (e.type == EV_DELIVER)
                smsg_free(e.msg);
            break;
        }
        struct node *n = e.node >= 0 && e.node < MAXN ? &S.nodes[e.node] : NULL;
        switch (e.type) {
        case EV_DELIVER:
            if (!n->up)
                smsg_free(e.msg);
            else if (n->busy) {
                if (n->n_inbox == n->cap_inbox) {
                    n->cap_inbox = n->cap_inbox ? n->cap_inbox * 2 : 8;
                    n->inbox = xrealloc(n->inbox, n->cap_inbox * sizeof(*n->inbox));
                }
                n->inbox[n->n_inbox++] = e.msg;
            } else
                feed(e.node, e.msg);
            break;
        case EV_TICK:
            if (e.gen != n->gen || !n->up)
                break;
            if (!n->busy) {
                enum paxos_state before = paxos_state(n->p);
                paxos_tick(n->p, local_now(n));
                if (paxos_state(n->p) != before)
                    trace(e.node, "%s -> %s ballot %" PRIx64, paxos_state_name(before),
                          paxos_state_name(paxos_state(n->p)), paxos_ballot(n->p));
                drive(e.node);
            }
            push_event(true_after_local(n, 5 * MS), EV_TICK, e.node, NULL);
            break;
        case EV_SYNC:
            if (e.gen != n->gen || !n->up || !n->busy)
                break;
            disk_sync(e.node);
            finish_ready(e.node);
            drive(e.node);
            break;
        case EV_CRASH:
            if (e.gen != n->gen || S.healed)
                break;
            node_crash(e.node);
            break;
        case EV_RESTART:
            if (e.gen != n->gen || n->up)
                break;
            node_start(e.node);
            push_event(S.now + 1, EV_TICK, e.node, NULL);
            push_event(S.now + rnd_below(S.pr.crash_mean * 2), EV_CRASH, e.node, NULL);
            break;
        case EV_PART:
            if (S.healed)
                break;
            double r = rnd_unit();
            if (r < 0.35) { /* isolate one node, preferably a leader (old leaders keep proposing) */
                int victim = (int)rnd_below((uint64_t)S.pr.n);
                for (int i = 0; i < S.pr.n; i++)
                    if (S.nodes[i].up && paxos_state(S.nodes[i].p) == PAXOS_LEADING && chance(0.8))
                        victim = i;
                for (int i = 0; i < S.pr.n; i++)
                    S.part[i] = i == victim;
                trace(-1, "ISOLATE n%d", victim);
            } else if (r < 0.6) {
                for (int i = 0; i < S.pr.n; i++)
                    S.part[i] = (int)rnd_below(2);
                trace(-1, "PARTITION %d%d%d%d%d%d", S.part[0], S.part[1], S.part[2], S.part[3], S.part[4],
                      S.part[5]);
            } else {
                memset(S.part, 0, sizeof(S.part));
                trace(-1, "heal partition");
            }
            push_event(S.now + rnd_below(S.pr.part_mean * 2), EV_PART, -1, NULL);
            break;
        case EV_CLIENT:
            client_op(e.node);
            break;
        case EV_CLIENT_TIMEOUT: {
            struct client *cl = &S.cli[e.node];
            if (cl->waiting && cl->gen == (uint64_t)(uintptr_t)e.msg) {
                cl->waiting = false; /* the put stays pending in the history: it may still apply */
                cl->op_value = 0;
                cl->target = (int)rnd_below((uint64_t)S.pr.n);
                client_next(e.node, 1 * MS);
            }
            break;
        }
        }
        check_step();
    }
    if (!S.violation[0] && !S.probe_done) {
        S.liveness = true;
        violation("no progress: no put committed within %" PRIu64 " ms after the heal at %" PRIu64 " ms",
                  S.pr.progress_bound / MS, S.heal_time / MS);
    }
    for (int i = 0; i < S.pr.n && !S.violation[0] && S.probe_done; i++)
        if (S.nodes[i].applied < S.probe_slot) { /* catch-up, snapshots and observers must converge */
            S.liveness = true;
            violation("n%d%s: applied %" PRIu64 " still below slot %" PRIu64 " 1 s after it committed", i,
                      is_voter(i) ? "" : " (observer)", S.nodes[i].applied, S.probe_slot);
        }
    if (!S.violation[0])
        check_history();
    for (size_t i = 0; i < S.n_ops; i++)
        if (S.ops[i].is_put)
            S.ops[i].done ? S.st.puts_ok++ : S.st.puts_pending++;
    S.st.ops += S.n_ops;
    int rc = !S.violation[0] ? 0 : S.liveness ? 2 : 1;
    if (rc) {
        fprintf(stderr, "VIOLATION seed %" PRIu64 " (n=%d voters=%d bugs=%u): %s\n  trace tail:\n", seed, S.pr.n,
                S.pr.n_voters, bugs, S.violation);
        dump_trace();
        fprintf(stderr, "  reproduce: paxos_sim --first %" PRIu64 " --seeds 1 --verbose%s\n", seed,
                bugs == PAXOS_BUG_FORGET_PROMISE ? " --bug forget"
                : bugs == PAXOS_BUG_REUSE_BALLOT ? " --bug reuse"
                : bugs                           ? " --bug lease"
                                                 : "");
    }
    cleanup();
    return rc;
}

static const char *bug_name(uint32_t bugs)
{
    return bugs == PAXOS_BUG_FORGET_PROMISE ? "forget-promise"
           : bugs == PAXOS_BUG_REUSE_BALLOT ? "reuse-ballot"
                                            : "no-lease-margin";
}

int main(int argc, char **argv)
{
    uint64_t seeds = 2000, first = 1;
    uint32_t bugs = 0;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
            seeds = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--first") && i + 1 < argc)
            first = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--long"))
            seeds = 50000;
        else if (!strcmp(argv[i], "--verbose"))
            verbose = true;
        else if (!strcmp(argv[i], "--bug") && i + 1 < argc) {
            i++;
            bugs = !strcmp(argv[i], "forget") ? PAXOS_BUG_FORGET_PROMISE
                   : !strcmp(argv[i], "reuse")     ? PAXOS_BUG_REUSE_BALLOT
                   : !strcmp(argv[i], "lease")     ? PAXOS_BUG_NO_LEASE_MARGIN
                                                   : 0;
            if (!bugs) {
                fprintf(stderr, "unknown bug %s\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--seeds N] [--first S] [--long] [--bug forget|reuse|lease] [--verbose]\n",
                    argv[0]);
            return 2;
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t bad = 0, events = 0, slots = 0;
    for (uint64_t s = first; s < first + seeds; s++) {
        if (bugs) {
            /* A broken core may also trip its own assertions: run each seed in a child so that counts too. */
            fflush(stderr);
            pid_t pid = fork();
            ASSERT(pid >= 0);
            if (pid == 0)
                _exit(run_seed(s, bugs, verbose));
            int st;
            ASSERT(waitpid(pid, &st, 0) == pid);
            if (!WIFEXITED(st) || WEXITSTATUS(st) == 1) { /* liveness failures (2) do not count */
                printf("bug %s caught at seed %" PRIu64 " (%" PRIu64 " seeds tried) by %s\n", bug_name(bugs), s,
                       s - first + 1,
                       WIFEXITED(st) ? "a simulator invariant" : "a core assertion");
                return 0;
            }
            continue;
        }
        if (run_seed(s, bugs, verbose))
            bad++;
        events += S.events;
        slots += S.max_slot;
        total.crashes += S.st.crashes;
        total.lost_writes += S.st.lost_writes;
        total.snap_installs += S.st.snap_installs;
        total.leader_changes += S.st.leader_changes;
        total.reads += S.st.reads;
        total.puts_ok += S.st.puts_ok;
        total.puts_pending += S.st.puts_pending;
        total.ops += S.st.ops;
        if (bad)
            break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (bugs) {
        printf("bug %s NOT caught in %" PRIu64 " seeds\n", bug_name(bugs), seeds);
        return 1;
    }
    printf("%" PRIu64 " seeds from %" PRIu64 ": %s (%" PRIu64 " events, %" PRIu64 " slots, %.1f s)\n", seeds, first,
           bad ? "VIOLATION" : "all clean", events, slots, secs);
    printf("  per seed: %.1f crashes (%.2f losing unsynced writes), %.1f snapshot installs, %.1f leader changes,\n"
           "  %.1f lease reads, %.1f puts committed, %.1f puts left pending, %.1f ops checked for linearizability\n",
           (double)total.crashes / (double)seeds, (double)total.lost_writes / (double)seeds,
           (double)total.snap_installs / (double)seeds, (double)total.leader_changes / (double)seeds,
           (double)total.reads / (double)seeds, (double)total.puts_ok / (double)seeds,
           (double)total.puts_pending / (double)seeds, (double)total.ops / (double)seeds);
    return bad ? 1 : 0;
}
