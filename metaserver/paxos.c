/* paxos.c - the Multi-Paxos core: proposer, acceptor and learner of one replica, with no I/O inside.
 *
 * DESIGN. Every replica runs three named parts over one log of slots:
 *   - the ACCEPTOR keeps one promised ballot for all slots (Multi-Paxos) and, per slot, the last accepted
 *     (ballot, value). It answers PREPARE with every accepted entry from the candidate's first unchosen slot,
 *     and ACCEPT with the slots it stored. Its replies go in send_after: they leave only once the promise and
 *     the accepted entries are durable (the adapter's persist barrier).
 *   - the PROPOSER campaigns when it has not heard from a leader for a randomized election timeout: it picks
 *     a ballot with a round above everything it has promised or seen, promises it to itself (durable before
 *     the PREPAREs leave), and collects promises from a voter quorum. It then re-proposes, at its own ballot,
 *     for every slot from its first unchosen one to the highest slot any promise reported: the known-chosen
 *     value if a promise flagged one, else the value with the highest accepted ballot, else a no-op; and one
 *     more no-op (so its epoch has an entry of its own). It serves clients only after all of that is chosen
 *     and applied (the ZAB rule). Its ACCEPTs go out at once (send_now), before its own copy is durable: the
 *     leader counts its own vote only after the barrier, and ballots are never reused, so an ACCEPT the
 *     leader sent and then lost in a crash can never meet a different value at the same ballot.
 *   - the LEARNER marks a slot chosen when (a) a voter quorum acknowledged it at the leader's ballot (leader),
 *     (b) a leader at ballot b announces commit c and our entry at slot s <= c was accepted at ballot b (a
 *     leader proposes exactly one value per slot per ballot, and it only announces slots that it got chosen
 *     at that ballot or knew chosen before its phase 1, where nobody holds ballot b), or (c) a peer sends it
 *     as chosen in a catch-up reply. The commit point is the end of the contiguous chosen prefix.
 *
 * WHY IT IS SAFE (the invariants, asserted where they can be):
 *   I1 A ballot is used by at most one proposer incarnation: ballot = round << 16 | node, and the round of a
 *      new campaign exceeds the durable promise, which already covers every ballot this node used.
 *   I2 An acceptor never accepts below its promise and never lowers it (promised is persisted before any
 *      reply that depends on it; on restart it is also raised to the highest ballot in the durable log).
 *   I3 For each slot, a leader proposes at its ballot only the value its phase 1 quorum forces (chosen flag,
 *      else highest ballot, else free); so once a value is chosen every higher ballot proposes the same
 *      value (classic Paxos P2c). A "chosen" flag always marks a truly chosen value, and a new leader adopts
 *      it, so storing a chosen value under any ballot cannot steer a later leader wrong.
 *   I4 An acceptor holding a chosen entry acknowledges an ACCEPT for that slot only if the value is equal.
 *   I5 Log truncation only below a durable snapshot (log_start <= snap_index + 1), and every slot in
 *      [log_start, commit] is present and chosen. A candidate that meets a promise with log_start above its
 *      first unchosen slot cannot see everything and gives up the campaign to catch up first.
 *   I6 Leases: a voter that acks a heartbeat refuses other nodes' PREPAREs for lease_ms of its own clock
 *      from receipt, and for lease_ms after a restart. The leader's lease ends at (send time of a round a
 *      quorum acked) + lease - margin, margin >= lease * 2 * drift + 1 ms, so in true time the leader's lease
 *      ends before any quorum member's promise does; no other node can complete phase 1 meanwhile, so at
 *      most one node serves lease reads at any true time.
 *   I7 applied <= commit <= last; the apply order is slot order with no gaps.
 *
 * WORKLOAD. ~20k+ commands/s arrive batched; per message work is proportional to the slots it carries, the
 * log is a power-of-two ring indexed by slot (O(1) lookups, truncated after snapshots), retransmission is
 * bounded by the window per heartbeat, and all ACCEPTs of one batch to a peer share one message.
 */
#include "metaserver/paxos.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define HB_RING 16

struct slot_ent {
    uint64_t ballot;
    struct paxos_val *val;
    uint32_t acks; /* leader: voters that accepted at its ballot */
    uint8_t present, chosen;
};

struct rec_ent { /* phase 1 recovery: what the candidate must propose per slot */
    uint64_t ballot;
    struct paxos_val *val;
    uint8_t present, chosen;
};

struct msgvec {
    struct paxos_msg *v;
    size_t n, cap;
};
struct entvec {
    struct paxos_entry *v;
    size_t n, cap;
};

struct paxos {
    struct paxos_config cfg;
    uint64_t rng;
    uint32_t quorum;
    bool voter;
    enum paxos_state state;
    uint32_t leader;
    uint64_t now;
    uint64_t hb_us, elect_us, lease_us, margin_us;

    /* acceptor */
    uint64_t promised;
    bool hard_dirty;
    uint64_t lease_until; /* refuse other nodes' prepares until then */
    uint32_t lease_holder;

    /* log: present slots in [log_start, last] */
    struct slot_ent *ring;
    uint64_t cap;
    uint64_t log_start, last, commit, applied, snap_index;
    uint64_t known_commit;

    /* proposer */
    uint64_t ballot;
    uint64_t max_round_seen;
    uint64_t reuse_ballot; /* PAXOS_BUG_REUSE_BALLOT only */
    bool campaigning;
    uint64_t camp_start, camp_deadline, camp_resend;
    uint32_t promise_mask;
    struct rec_ent *rec;
    size_t n_rec, cap_rec;

    /* leader */
    uint64_t lead_start, recover_end, bcast_from;
    uint32_t epoch_counter;
    uint64_t hb_seq, next_hb, lease_end, last_quorum;
    uint64_t hb_sent[HB_RING], hb_seqs[HB_RING];
    uint32_t hb_acks[HB_RING];
    uint64_t next_retransmit;
    bool commit_dirty;

    /* timers */
    uint64_t election_deadline, next_catchup;

    /* outputs */
    struct msgvec out_now, out_after;
    struct entvec persist, apply;
    uint64_t truncate_below;
    bool in_ready;
};

/* ---- values ---- */

struct paxos_val *paxos_val_new(uint32_t kind, uint64_t zxid, const void *data, uint32_t len)
{
    struct paxos_val *v = xmalloc(sizeof(*v) + len);
    v->refs = 1;
    v->kind = kind;
    v->zxid = zxid;
    v->len = len;
    if (len)
        memcpy(v->data, data, len);
    return v;
}

struct paxos_val *paxos_val_ref(struct paxos_val *v)
{
    ASSERT(v && v->refs > 0);
    v->refs++;
    return v;
}

void paxos_val_unref(struct paxos_val *v)
{
    if (!v)
        return;
    ASSERT(v->refs > 0);
    if (--v->refs == 0)
        free(v);
}

bool paxos_val_equal(const struct paxos_val *a, const struct paxos_val *b)
{
    if (a == b)
        return true;
    return a->kind == b->kind && a->zxid == b->zxid && a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* ---- small vectors ---- */

static struct paxos_msg *msg_push(struct msgvec *mv)
{
    if (mv->n == mv->cap) {
        mv->cap = mv->cap ? mv->cap * 2 : 16;
        mv->v = xrealloc(mv->v, mv->cap * sizeof(*mv->v));
    }
    struct paxos_msg *m = &mv->v[mv->n++];
    memset(m, 0, sizeof(*m));
    return m;
}

/* Append an entry taking a new reference on val. */
static void ent_push(struct entvec *ev, uint64_t slot, uint64_t ballot, bool chosen, struct paxos_val *val)
{
    if (ev->n == ev->cap) {
        ev->cap = ev->cap ? ev->cap * 2 : 16;
        ev->v = xrealloc(ev->v, ev->cap * sizeof(*ev->v));
    }
    ev->v[ev->n++] = (struct paxos_entry){ slot, ballot, chosen, val ? paxos_val_ref(val) : NULL };
}

static void ent_release(struct paxos_entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        paxos_val_unref(v[i].val);
}

static void msgvec_clear(struct msgvec *mv)
{
    for (size_t i = 0; i < mv->n; i++) {
        ent_release(mv->v[i].entries, mv->v[i].n_entries);
        free(mv->v[i].entries);
    }
    mv->n = 0;
}

/* Move an entvec's array into a message (the message frees it at advance). */
static void msg_take_entries(struct paxos_msg *m, struct entvec *ev)
{
    m->entries = ev->v;
    m->n_entries = ev->n;
    memset(ev, 0, sizeof(*ev));
}

/* ---- helpers ---- */

static uint32_t popcount(uint32_t x) { return (uint32_t)__builtin_popcount(x); }
static uint32_t bit(uint32_t node) { return 1u << node; }
static bool is_voter(const struct paxos *p, uint32_t node) { return (p->cfg.voter_mask & bit(node)) != 0; }

static uint64_t rand_timeout(struct paxos *p)
{
    return p->elect_us + util_rand_next(&p->rng) % p->elect_us;
}

static struct paxos_msg *out(struct paxos *p, bool after, enum paxos_msg_type type, uint32_t to)
{
    struct paxos_msg *m = msg_push(after ? &p->out_after : &p->out_now);
    m->type = type;
    m->from = p->cfg.self;
    m->to = to;
    m->commit = p->commit;
    return m;
}

/* A message of our proposer, at our ballot. */
static struct paxos_msg *prop_msg(struct paxos *p, bool after, enum paxos_msg_type type, uint32_t to)
{
    struct paxos_msg *m = out(p, after, type, to);
    m->ballot = p->ballot;
    return m;
}

static void set_promised(struct paxos *p, uint64_t b)
{
    ASSERT(b >= p->promised || (p->cfg.test_bugs & PAXOS_BUG_REUSE_BALLOT));
    if (b != p->promised) {
        p->promised = b;
        p->hard_dirty = true;
    }
}

/* ---- the log ring ---- */

static struct slot_ent *ent(const struct paxos *p, uint64_t slot)
{
    ASSERT(slot >= p->log_start && slot - p->log_start < p->cap);
    return &p->ring[slot & (p->cap - 1)];
}

static struct slot_ent *ent_get(const struct paxos *p, uint64_t slot)
{
    if (slot < p->log_start || slot > p->last)
        return NULL;
    struct slot_ent *e = ent(p, slot);
    return e->present ? e : NULL;
}

static void ring_reserve(struct paxos *p, uint64_t slot)
{
    ASSERT(slot >= p->log_start);
    if (slot - p->log_start < p->cap)
        return;
    uint64_t ncap = p->cap;
    while (slot - p->log_start >= ncap)
        ncap *= 2;
    struct slot_ent *nr = xcalloc(ncap, sizeof(*nr));
    for (uint64_t s = p->log_start; s <= p->last; s++)
        nr[s & (ncap - 1)] = p->ring[s & (p->cap - 1)];
    free(p->ring);
    p->ring = nr;
    p->cap = ncap;
}

/* Store (ballot, val, chosen) at slot and queue the persist record. Takes a new reference on val. */
static void put_entry(struct paxos *p, uint64_t slot, uint64_t ballot, struct paxos_val *val, bool chosen)
{
    ASSERT(val && slot >= p->log_start && slot > p->commit);
    ring_reserve(p, slot);
    if (slot > p->last) {
        for (uint64_t s = p->last + 1; s < slot; s++)
            memset(ent(p, s), 0, sizeof(struct slot_ent));
        memset(ent(p, slot), 0, sizeof(struct slot_ent));
        p->last = slot;
    }
    struct slot_ent *e = ent(p, slot);
    ASSERT(!e->present || !e->chosen || paxos_val_equal(e->val, val)); /* I3: a chosen value never changes */
    paxos_val_ref(val);
    paxos_val_unref(e->val);
    e->val = val;
    e->ballot = ballot;
    e->acks = 0;
    e->present = 1;
    e->chosen = chosen;
    ent_push(&p->persist, slot, ballot, chosen, val);
}

static void truncate_log(struct paxos *p, uint64_t new_start)
{
    if (new_start <= p->log_start)
        return;
    for (uint64_t s = p->log_start; s < new_start && s <= p->last; s++) {
        struct slot_ent *e = ent(p, s);
        paxos_val_unref(e->val);
        memset(e, 0, sizeof(*e));
    }
    p->log_start = new_start;
    if (p->last < new_start - 1)
        p->last = new_start - 1;
    if (new_start > p->truncate_below)
        p->truncate_below = new_start;
}

static void advance_commit(struct paxos *p)
{
    uint64_t old = p->commit;
    for (;;) {
        struct slot_ent *e = ent_get(p, p->commit + 1);
        if (!e || !e->chosen)
            break;
        p->commit++;
    }
    if (p->commit != old && p->state == PAXOS_LEADING)
        p->commit_dirty = true;
    if (p->commit > p->known_commit)
        p->known_commit = p->commit;
}

/* ---- roles ---- */

static void abort_campaign(struct paxos *p)
{
    if (!p->campaigning)
        return;
    p->campaigning = false;
    for (size_t i = 0; i < p->n_rec; i++)
        paxos_val_unref(p->rec[i].val);
    p->n_rec = 0;
    p->election_deadline = p->now + rand_timeout(p);
}

static void step_down(struct paxos *p, uint64_t seen)
{
    if (PAXOS_BALLOT_ROUND(seen) > p->max_round_seen)
        p->max_round_seen = PAXOS_BALLOT_ROUND(seen);
    abort_campaign(p);
    if (p->state == PAXOS_LEADING) {
        p->state = PAXOS_LOOKING;
        p->leader = PAXOS_NO_NODE;
        p->lease_end = 0;
        p->election_deadline = p->now + rand_timeout(p);
    }
}

static void follow(struct paxos *p, uint32_t leader)
{
    ASSERT(p->state != PAXOS_LEADING);
    p->leader = leader;
    if (p->state != PAXOS_OBSERVING)
        p->state = PAXOS_FOLLOWING;
    p->election_deadline = p->now + rand_timeout(p);
}

/* Bring one reported/own entry into the recovery table (slot >= camp_start, bounded by the caller). */
static void rec_merge(struct paxos *p, uint64_t slot, uint64_t ballot, bool chosen, struct paxos_val *val)
{
    size_t i = (size_t)(slot - p->camp_start);
    if (i >= p->cap_rec) {
        size_t nc = p->cap_rec ? p->cap_rec : 64;
        while (nc <= i)
            nc *= 2;
        p->rec = xrealloc(p->rec, nc * sizeof(*p->rec));
        p->cap_rec = nc;
    }
    while (p->n_rec <= i)
        p->rec[p->n_rec++] = (struct rec_ent){ 0 };
    struct rec_ent *r = &p->rec[i];
    if (r->chosen) {
        ASSERT(!chosen || paxos_val_equal(r->val, val)); /* two chosen values for one slot */
        return;
    }
    if (chosen || !r->present || ballot > r->ballot) {
        paxos_val_ref(val);
        paxos_val_unref(r->val);
        r->val = val;
        r->ballot = ballot;
        r->present = 1;
        r->chosen = chosen;
    }
}

static void send_prepare(struct paxos *p, uint32_t to)
{
    struct paxos_msg *m = prop_msg(p, true, PAXOS_MSG_PREPARE, to); /* after: our ballot must be durable */
    m->first_slot = p->camp_start;
}

static void become_leader(struct paxos *p);

static void check_promises(struct paxos *p)
{
    if (p->campaigning && popcount(p->promise_mask & p->cfg.voter_mask) >= p->quorum)
        become_leader(p);
}

static void campaign(struct paxos *p)
{
    ASSERT(p->voter && p->state != PAXOS_LEADING);
    abort_campaign(p);
    uint64_t round = MAX(PAXOS_BALLOT_ROUND(p->promised), p->max_round_seen) + 1;
    uint64_t b = PAXOS_BALLOT(round, p->cfg.self);
    if (p->reuse_ballot) { /* test-only bug: a restarted proposer reuses its last ballot */
        if (p->reuse_ballot >= p->promised)
            b = p->reuse_ballot;
        p->reuse_ballot = 0;
    }
    ASSERT(b >= p->promised); /* I1 */
    set_promised(p, b);
    p->ballot = b;
    p->campaigning = true;
    p->state = PAXOS_LOOKING;
    p->leader = PAXOS_NO_NODE;
    p->camp_start = p->commit + 1;
    p->camp_deadline = p->now + rand_timeout(p);
    p->camp_resend = p->now + p->hb_us;
    p->promise_mask = bit(p->cfg.self);
    p->n_rec = 0;
    for (uint64_t s = p->camp_start; s <= p->last; s++) {
        struct slot_ent *e = ent_get(p, s);
        if (e)
            rec_merge(p, s, e->ballot, e->chosen, e->val);
    }
    for (uint32_t i = 0; i < p->cfg.n_nodes; i++)
        if (i != p->cfg.self && is_voter(p, i))
            send_prepare(p, i);
    check_promises(p);
}

/* A voter refused us because it promised a higher ballot. A leader that still hears from a quorum takes the
 * lead back at once with a fresh phase 1 above that promise, instead of going quiet until an election
 * timeout: otherwise a node that campaigned alone while cut off (raising its promise each time) unseats a
 * healthy majority leader when it rejoins, and wins once the lease lapses. Phase 1 is always safe (I1-I3);
 * this only changes who campaigns when. An unhealthy leader just steps down. */
static void outbid(struct paxos *p, uint64_t seen)
{
    bool healthy = p->state == PAXOS_LEADING && p->now <= p->last_quorum + p->elect_us;
    step_down(p, seen);
    if (healthy)
        campaign(p);
}

static void send_heartbeats(struct paxos *p)
{
    uint64_t seq = ++p->hb_seq;
    unsigned k = (unsigned)(seq % HB_RING);
    p->hb_seqs[k] = seq;
    p->hb_sent[k] = p->now;
    p->hb_acks[k] = bit(p->cfg.self);
    p->lease_until = p->now + p->lease_us; /* our own acceptor is part of the lease quorum */
    p->lease_holder = p->cfg.self;
    for (uint32_t i = 0; i < p->cfg.n_nodes; i++) {
        if (i == p->cfg.self)
            continue;
        struct paxos_msg *m = prop_msg(p, false, PAXOS_MSG_HEARTBEAT, i);
        m->seq = seq;
        m->lease_ms = p->cfg.lease_ms;
    }
    p->next_hb = p->now + p->hb_us;
}

static void become_leader(struct paxos *p)
{
    ASSERT(p->campaigning && p->promised == p->ballot);
    p->campaigning = false;
    p->state = PAXOS_LEADING;
    p->leader = p->cfg.self;
    p->lead_start = p->camp_start; /* commit may have moved past it while we campaigned: those are chosen */
    uint64_t end = p->camp_start + p->n_rec; /* first slot past everything reported */
    struct paxos_val *noop = paxos_val_new(PAXOS_VAL_NOOP, 0, NULL, 0);
    for (uint64_t s = p->camp_start; s < end; s++) {
        struct rec_ent *r = &p->rec[s - p->camp_start];
        if (s < p->log_start)
            continue; /* learned chosen and snapshotted while we campaigned */
        struct slot_ent *e = ent_get(p, s);
        if (e && e->chosen) {
            ASSERT(!r->chosen || paxos_val_equal(r->val, e->val));
            continue; /* broadcast below carries our chosen value at our ballot */
        }
        put_entry(p, s, p->ballot, r->present ? r->val : noop, r->present && r->chosen);
    }
    put_entry(p, end, p->ballot, noop, false);
    paxos_val_unref(noop);
    for (size_t i = 0; i < p->n_rec; i++)
        paxos_val_unref(p->rec[i].val);
    p->n_rec = 0;
    p->recover_end = end;
    p->bcast_from = MAX(p->camp_start, p->log_start);
    p->epoch_counter = 0;
    p->lease_end = 0;
    p->last_quorum = p->now;
    p->next_retransmit = p->now + p->hb_us;
    advance_commit(p);
    send_heartbeats(p);
}

/* ---- message handlers ---- */

/* Replies of the acceptor; a refusal names the promise that blocks the proposer. */
static struct paxos_msg *reply(struct paxos *p, enum paxos_msg_type type, const struct paxos_msg *m, bool ok)
{
    struct paxos_msg *r = out(p, true, type, m->from); /* after: it vouches for our durable state */
    r->ballot = m->ballot;
    r->ok = ok;
    r->promised = p->promised;
    r->seq = m->seq;
    return r;
}

static void nack(struct paxos *p, enum paxos_msg_type type, const struct paxos_msg *m)
{
    if (p->voter)
        reply(p, type, m, false);
}

static void on_prepare(struct paxos *p, const struct paxos_msg *m)
{
    if (!p->voter)
        return;
    bool lease_block = p->now < p->lease_until && m->from != p->lease_holder;
    if (m->ballot < p->promised || lease_block) {
        nack(p, PAXOS_MSG_PROMISE, m);
        return;
    }
    set_promised(p, m->ballot);
    if (p->state == PAXOS_LEADING && m->ballot != p->ballot)
        step_down(p, m->ballot);
    if (p->campaigning && m->ballot != p->ballot)
        abort_campaign(p);
    if (p->state != PAXOS_OBSERVING) {
        p->state = PAXOS_LOOKING;
        p->leader = m->from;
        p->election_deadline = p->now + rand_timeout(p);
    }
    /* A candidate behind our commit point (first_slot <= commit) may get a promise without the entries when
     * they would exceed PAXOS_MAX_MSG_BYTES: the promise then names commit + 1 as our log start, which makes
     * the candidate abort its campaign and catch up from us (on_promise, I5), exactly as if we had
     * snapshotted up to there; it never proposes on an incomplete promise. */
    bool behind = m->first_slot <= p->commit;
    uint64_t bytes = 0;
    struct entvec ev = { 0 };
    for (uint64_t s = MAX(m->first_slot, p->log_start); s <= p->last; s++) {
        struct slot_ent *e = ent_get(p, s);
        if (!e)
            continue;
        bytes += e->val ? e->val->len : 0;
        if (behind && bytes > PAXOS_MAX_MSG_BYTES) {
            ent_release(ev.v, ev.n);
            free(ev.v);
            ev = (struct entvec){ 0 };
            break;
        }
        ent_push(&ev, s, e->ballot, e->chosen, e->val);
    }
    struct paxos_msg *r = reply(p, PAXOS_MSG_PROMISE, m, true);
    r->log_start = behind && bytes > PAXOS_MAX_MSG_BYTES ? p->commit + 1 : p->log_start;
    msg_take_entries(r, &ev);
}

static void on_promise(struct paxos *p, const struct paxos_msg *m)
{
    if (!m->ok) {
        if (m->promised > p->promised || m->promised > p->ballot) {
            if (PAXOS_BALLOT_ROUND(m->promised) > p->max_round_seen)
                p->max_round_seen = PAXOS_BALLOT_ROUND(m->promised);
            if (p->campaigning && m->ballot == p->ballot)
                abort_campaign(p);
        }
        return;
    }
    if (!p->campaigning || m->ballot != p->ballot || (p->promise_mask & bit(m->from)) || !is_voter(p, m->from))
        return;
    if (m->commit > p->known_commit)
        p->known_commit = m->commit;
    /* I5: the acceptor dropped slots we have not seen chosen, or we are too far behind to recover. */
    if (m->log_start > p->camp_start || m->commit >= p->camp_start + p->cfg.max_ahead) {
        abort_campaign(p);
        struct paxos_msg *r = out(p, false, PAXOS_MSG_CATCHUP_REQ, m->from);
        r->first_slot = p->commit + 1;
        r->max_slots = p->cfg.catchup_batch;
        return;
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct paxos_entry *e = &m->entries[i];
        if (e->slot < p->camp_start)
            continue;
        if (e->slot >= p->camp_start + 2 * (uint64_t)p->cfg.max_ahead) {
            abort_campaign(p); /* cannot hold it all: catch up first */
            return;
        }
        rec_merge(p, e->slot, e->ballot, e->chosen, e->val);
    }
    p->promise_mask |= bit(m->from);
    check_promises(p);
}

/* Learner rule (b): slots up to c holding ballot b are chosen. */
static void learn_commit(struct paxos *p, uint64_t b, uint64_t c)
{
    if (c > p->known_commit)
        p->known_commit = c;
    if (p->state == PAXOS_LEADING)
        return;
    while (p->commit < c) {
        struct slot_ent *e = ent_get(p, p->commit + 1);
        if (!e || (!e->chosen && e->ballot != b))
            break;
        e->chosen = 1;
        p->commit++;
    }
}

/* An ACCEPT or HEARTBEAT from a leader: follow it when its ballot is at or above our promise (raising the
 * promise, stepping down from leading or campaigning), else refuse. Returns true when we follow it. */
static bool heed_leader(struct paxos *p, const struct paxos_msg *m, enum paxos_msg_type reply)
{
    if (m->ballot < p->promised) {
        nack(p, reply, m);
        return false;
    }
    set_promised(p, m->ballot);
    if (p->state == PAXOS_LEADING) {
        if (m->ballot == p->ballot)
            return false; /* cannot happen with unique ballots */
        step_down(p, m->ballot);
    }
    if (p->campaigning && m->ballot != p->ballot)
        abort_campaign(p);
    follow(p, m->from);
    return true;
}

static void on_accept(struct paxos *p, const struct paxos_msg *m)
{
    if (!heed_leader(p, m, PAXOS_MSG_ACCEPTED))
        return;
    struct entvec ev = { 0 };
    bool truncated = false;
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct paxos_entry *e = &m->entries[i];
        truncated |= e->slot < p->log_start;
        if (!e->val || e->slot < p->log_start || e->slot > p->commit + p->cfg.max_ahead)
            continue;
        struct slot_ent *cur = ent_get(p, e->slot);
        ASSERT(e->slot > p->commit || (cur && cur->chosen)); /* I5 */
        if (cur && cur->chosen) {
            if (paxos_val_equal(cur->val, e->val)) /* I4 */
                ent_push(&ev, e->slot, m->ballot, false, NULL);
            continue;
        }
        put_entry(p, e->slot, m->ballot, e->val, false);
        ent_push(&ev, e->slot, m->ballot, false, NULL);
    }
    learn_commit(p, m->ballot, m->commit);
    if (p->voter) {
        struct paxos_msg *r = reply(p, PAXOS_MSG_ACCEPTED, m, true);
        r->log_start = truncated ? p->log_start : 0; /* tells a leader it is behind our snapshot */
        msg_take_entries(r, &ev);
    } else {
        free(ev.v);
    }
}

static void count_ack(struct paxos *p, uint64_t slot, uint32_t node)
{
    struct slot_ent *e = ent_get(p, slot);
    if (!e || e->chosen || e->ballot != p->ballot || slot <= p->commit)
        return;
    e->acks |= bit(node);
    if (popcount(e->acks & p->cfg.voter_mask) >= p->quorum)
        e->chosen = 1;
}

static void on_accepted(struct paxos *p, const struct paxos_msg *m)
{
    if (!m->ok) {
        if (m->promised > p->ballot && p->state == PAXOS_LEADING)
            outbid(p, m->promised);
        else if (m->promised > p->ballot && p->campaigning)
            step_down(p, m->promised);
        return;
    }
    if (p->state != PAXOS_LEADING || m->ballot != p->ballot || !is_voter(p, m->from))
        return;
    for (size_t i = 0; i < m->n_entries; i++)
        count_ack(p, m->entries[i].slot, m->from);
    advance_commit(p);
    if (m->log_start > p->commit + 1) {
        /* The voter snapshotted slots we re-proposed but have not seen chosen: it cannot vote on them and we
         * cannot learn them while leading. Step down and catch up from it; a later campaign starts there. */
        step_down(p, p->ballot);
        p->leader = m->from;
        if (m->log_start - 1 > p->known_commit)
            p->known_commit = m->log_start - 1;
    }
}

static void on_heartbeat(struct paxos *p, const struct paxos_msg *m)
{
    if (!heed_leader(p, m, PAXOS_MSG_HEARTBEAT_ACK))
        return;
    learn_commit(p, m->ballot, m->commit);
    if (!p->voter)
        return;
    p->lease_until = MAX(p->lease_until, p->now + p->lease_us); /* I6: the follower's promise */
    p->lease_holder = m->from;
    reply(p, PAXOS_MSG_HEARTBEAT_ACK, m, true);
}

static void on_heartbeat_ack(struct paxos *p, const struct paxos_msg *m)
{
    if (!m->ok) {
        if (m->promised > p->ballot && p->state == PAXOS_LEADING)
            outbid(p, m->promised);
        return;
    }
    if (p->state != PAXOS_LEADING || m->ballot != p->ballot || !is_voter(p, m->from))
        return;
    unsigned k = (unsigned)(m->seq % HB_RING);
    if (p->hb_seqs[k] != m->seq)
        return;
    p->hb_acks[k] |= bit(m->from);
    if (popcount(p->hb_acks[k] & p->cfg.voter_mask) >= p->quorum) {
        uint64_t end = p->hb_sent[k] + p->lease_us - p->margin_us; /* counted from when we SENT it */
        if (end > p->lease_end)
            p->lease_end = end;
        if (p->hb_sent[k] > p->last_quorum)
            p->last_quorum = p->hb_sent[k];
    }
}

static void on_catchup_req(struct paxos *p, const struct paxos_msg *m)
{
    uint64_t first = m->first_slot;
    if (first == 0 || first > p->commit)
        return;
    if (first < p->log_start) {
        ASSERT(p->snap_index + 1 >= p->log_start); /* I5 */
        struct paxos_msg *r = out(p, false, PAXOS_MSG_SNAPSHOT, m->from);
        r->log_start = p->snap_index;
        return;
    }
    uint64_t n = MIN((uint64_t)MAX(m->max_slots, 1u), (uint64_t)p->cfg.catchup_batch);
    uint64_t end = MIN(p->commit, first + n - 1), bytes = 0;
    struct entvec ev = { 0 };
    for (uint64_t s = first; s <= end && bytes <= PAXOS_MAX_MSG_BYTES; s++) { /* the requester asks again */
        struct slot_ent *e = ent_get(p, s);
        ASSERT(e && e->chosen); /* I5 */
        ent_push(&ev, s, e->ballot, true, e->val);
        bytes += e->val ? e->val->len : 0;
    }
    struct paxos_msg *r = out(p, false, PAXOS_MSG_CATCHUP_REP, m->from);
    r->log_start = p->log_start;
    msg_take_entries(r, &ev);
}

static void on_catchup_rep(struct paxos *p, const struct paxos_msg *m)
{
    if (p->state == PAXOS_LEADING)
        return; /* a leader knows everything chosen below its start and chooses the rest itself */
    if (m->commit > p->known_commit)
        p->known_commit = m->commit;
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct paxos_entry *e = &m->entries[i];
        if (!e->val || !e->chosen || e->slot <= p->commit || e->slot < p->log_start ||
            e->slot > p->commit + p->cfg.max_ahead)
            continue;
        struct slot_ent *cur = ent_get(p, e->slot);
        if (cur && cur->chosen)
            continue;
        put_entry(p, e->slot, MAX(e->ballot, cur ? cur->ballot : 0), e->val, true);
    }
    uint64_t before = p->commit;
    advance_commit(p);
    if (p->commit > before)
        p->next_catchup = p->now; /* keep streaming */
}

static void maybe_catchup(struct paxos *p)
{
    if (p->state == PAXOS_LEADING || p->known_commit <= p->commit || p->now < p->next_catchup)
        return;
    uint32_t to = p->leader;
    if (to == PAXOS_NO_NODE || to == p->cfg.self)
        return;
    struct paxos_msg *r = out(p, false, PAXOS_MSG_CATCHUP_REQ, to);
    r->first_slot = p->commit + 1;
    r->max_slots = p->cfg.catchup_batch;
    p->next_catchup = p->now + p->hb_us;
}

/* ---- public API ---- */

void paxos_config_defaults(struct paxos_config *cfg)
{
    cfg->heartbeat_ms = 50;
    cfg->election_ms = 500;
    cfg->lease_ms = 300;
    cfg->max_drift_ppm = 10000;
    cfg->window = 64;
    cfg->catchup_batch = 256;
    cfg->max_apply = 1024;
    cfg->log_retain = 1024;
    cfg->max_ahead = 1u << 16;
    cfg->test_bugs = 0;
}

int paxos_new(const struct paxos_config *cfg, const struct paxos_durable *d, uint64_t now_us,
              struct paxos **out_p)
{
    if (cfg->n_nodes == 0 || cfg->n_nodes > PAXOS_MAX_NODES || cfg->self >= cfg->n_nodes ||
        (cfg->voter_mask & ~((1u << cfg->n_nodes) - 1)) || cfg->voter_mask == 0 || cfg->heartbeat_ms == 0 ||
        cfg->election_ms <= cfg->heartbeat_ms || cfg->lease_ms == 0 || cfg->lease_ms >= cfg->election_ms ||
        cfg->max_drift_ppm >= 200000 || cfg->window == 0 || cfg->catchup_batch == 0 || cfg->max_apply == 0 ||
        cfg->max_ahead < cfg->window * 2u)
        return -EINVAL;
    struct paxos *p = xcalloc(1, sizeof(*p));
    p->cfg = *cfg;
    p->rng = cfg->seed * 0x9E3779B97F4A7C15ull + cfg->self + 1;
    p->quorum = popcount(cfg->voter_mask) / 2 + 1;
    p->voter = is_voter(p, cfg->self);
    p->state = p->voter ? PAXOS_LOOKING : PAXOS_OBSERVING;
    p->leader = PAXOS_NO_NODE;
    p->now = now_us;
    p->hb_us = (uint64_t)cfg->heartbeat_ms * 1000;
    p->elect_us = (uint64_t)cfg->election_ms * 1000;
    p->lease_us = (uint64_t)cfg->lease_ms * 1000;
    p->margin_us = p->lease_us * 2 * cfg->max_drift_ppm / 1000000 + 1000;
    if (cfg->test_bugs & PAXOS_BUG_NO_LEASE_MARGIN)
        p->margin_us = 0;
    if (p->margin_us >= p->lease_us) {
        free(p);
        return -EINVAL;
    }
    p->cap = 256;
    p->ring = xcalloc(p->cap, sizeof(*p->ring));
    p->applied = p->commit = p->snap_index = p->known_commit = d->applied;
    p->log_start = d->applied + 1;
    p->last = d->applied;
    uint64_t max_b = 0;
    for (size_t i = 0; i < d->n_entries; i++) {
        const struct paxos_entry *e = &d->entries[i];
        if (e->ballot > max_b)
            max_b = e->ballot;
        if (e->slot <= d->applied || !e->val)
            continue;
        struct slot_ent *cur = ent_get(p, e->slot);
        put_entry(p, e->slot, e->ballot, e->val, e->chosen || (cur && cur->chosen));
    }
    ent_release(p->persist.v, p->persist.n); /* already durable: nothing to write back */
    p->persist.n = 0;
    advance_commit(p);
    p->promised = d->promised;
    if (max_b > p->promised)
        p->promised = max_b; /* I2: accepting raised the promise */
    if (cfg->test_bugs & PAXOS_BUG_FORGET_PROMISE)
        p->promised = 0;
    if ((cfg->test_bugs & PAXOS_BUG_REUSE_BALLOT) && PAXOS_BALLOT_NODE(d->promised) == cfg->self)
        p->reuse_ballot = d->promised;
    p->truncate_below = 0;
    /* I6 across restarts: we may have promised a lease before the crash. */
    p->lease_until = now_us + p->lease_us;
    p->lease_holder = PAXOS_NO_NODE;
    p->election_deadline = now_us + p->lease_us + rand_timeout(p);
    *out_p = p;
    return 0;
}

void paxos_free(struct paxos *p)
{
    if (!p)
        return;
    for (uint64_t s = p->log_start; s <= p->last; s++)
        paxos_val_unref(ent(p, s)->val);
    free(p->ring);
    for (size_t i = 0; i < p->n_rec; i++)
        paxos_val_unref(p->rec[i].val);
    free(p->rec);
    msgvec_clear(&p->out_now);
    msgvec_clear(&p->out_after);
    free(p->out_now.v);
    free(p->out_after.v);
    ent_release(p->persist.v, p->persist.n);
    free(p->persist.v);
    ent_release(p->apply.v, p->apply.n);
    free(p->apply.v);
    free(p);
}

static void set_now(struct paxos *p, uint64_t now_us)
{
    ASSERT(!p->in_ready);
    if (now_us > p->now)
        p->now = now_us;
}

int paxos_step(struct paxos *p, const struct paxos_msg *m, uint64_t now_us)
{
    set_now(p, now_us);
    if (m->to != p->cfg.self || m->from >= p->cfg.n_nodes || m->from == p->cfg.self)
        return -EINVAL;
    if (m->n_entries && !m->entries)
        return -EINVAL;
    if (m->type == PAXOS_MSG_PROMISE || m->type == PAXOS_MSG_ACCEPT || m->type == PAXOS_MSG_CATCHUP_REP)
        for (size_t i = 0; i < m->n_entries; i++)
            if (!m->entries[i].val || m->entries[i].slot == 0)
                return -EINVAL; /* slots start at 1; these messages carry values */
    switch (m->type) {
    case PAXOS_MSG_PREPARE: on_prepare(p, m); break;
    case PAXOS_MSG_PROMISE: on_promise(p, m); break;
    case PAXOS_MSG_ACCEPT: on_accept(p, m); break;
    case PAXOS_MSG_ACCEPTED: on_accepted(p, m); break;
    case PAXOS_MSG_COMMIT: learn_commit(p, m->ballot, m->commit); break;
    case PAXOS_MSG_HEARTBEAT: on_heartbeat(p, m); break;
    case PAXOS_MSG_HEARTBEAT_ACK: on_heartbeat_ack(p, m); break;
    case PAXOS_MSG_CATCHUP_REQ: on_catchup_req(p, m); break;
    case PAXOS_MSG_CATCHUP_REP: on_catchup_rep(p, m); break;
    case PAXOS_MSG_SNAPSHOT: break; /* handled by the adapter */
    default: return -EINVAL;
    }
    maybe_catchup(p);
    return 0;
}

static void retransmit(struct paxos *p)
{
    for (uint32_t i = 0; i < p->cfg.n_nodes; i++) {
        if (i == p->cfg.self || !is_voter(p, i))
            continue;
        struct entvec ev = { 0 };
        for (uint64_t s = p->commit + 1; s < p->bcast_from; s++) {
            struct slot_ent *e = ent_get(p, s);
            if (e && !e->chosen && !(e->acks & bit(i)))
                ent_push(&ev, s, p->ballot, false, e->val);
        }
        if (!ev.n) {
            free(ev.v);
            continue;
        }
        msg_take_entries(prop_msg(p, false, PAXOS_MSG_ACCEPT, i), &ev);
    }
}

void paxos_tick(struct paxos *p, uint64_t now_us)
{
    set_now(p, now_us);
    if (p->state == PAXOS_LEADING) {
        if (p->now >= p->next_hb)
            send_heartbeats(p);
        if (p->now >= p->next_retransmit) {
            retransmit(p);
            p->next_retransmit = p->now + p->hb_us;
        }
        if (p->now > p->last_quorum + 2 * p->elect_us) /* cannot reach a quorum: let others try */
            step_down(p, p->ballot);
    } else if (p->voter) {
        if (p->campaigning) {
            if (p->now >= p->camp_deadline) {
                abort_campaign(p);
            } else if (p->now >= p->camp_resend) {
                for (uint32_t i = 0; i < p->cfg.n_nodes; i++)
                    if (i != p->cfg.self && is_voter(p, i) && !(p->promise_mask & bit(i)))
                        send_prepare(p, i);
                p->camp_resend = p->now + p->hb_us;
            }
        }
        if (!p->campaigning && p->now >= p->election_deadline && p->now >= p->lease_until)
            campaign(p);
    }
    maybe_catchup(p);
}

int paxos_propose(struct paxos *p, uint32_t kind, const void *data, uint32_t len, uint64_t now_us,
                  uint64_t *slot, uint64_t *zxid)
{
    set_now(p, now_us);
    if (p->state != PAXOS_LEADING)
        return -EREMOTE;
    if (!paxos_serving(p) || p->last - p->commit >= p->cfg.window)
        return -EAGAIN;
    if (p->last > p->commit) { /* M4: bytes of unchosen values (at most `window` slots to add up) */
        uint64_t bytes = len;
        for (uint64_t s = MAX(p->commit + 1, p->log_start); s <= p->last; s++) {
            const struct slot_ent *e = ent_get(p, s);
            bytes += e && e->val ? e->val->len : 0;
        }
        if (bytes > PAXOS_MAX_INFLIGHT_BYTES)
            return -EAGAIN;
    }
    uint64_t z = PAXOS_ZXID(PAXOS_BALLOT_ROUND(p->ballot), ++p->epoch_counter);
    struct paxos_val *v = paxos_val_new(kind, z, data, len);
    uint64_t s = p->last + 1;
    put_entry(p, s, p->ballot, v, false);
    paxos_val_unref(v);
    *slot = s;
    *zxid = z;
    return 0;
}

bool paxos_ready(struct paxos *p, struct paxos_ready *rd)
{
    ASSERT(!p->in_ready);
    memset(rd, 0, sizeof(*rd));
    if (p->state == PAXOS_LEADING && p->bcast_from <= p->last) {
        /* one ACCEPT per peer carrying every slot proposed in this batch */
        for (uint32_t i = 0; i < p->cfg.n_nodes; i++) {
            if (i == p->cfg.self)
                continue;
            struct entvec ev = { 0 };
            for (uint64_t s = MAX(p->bcast_from, p->log_start); s <= p->last; s++) {
                struct slot_ent *e = ent(p, s);
                ASSERT(e->present);
                ent_push(&ev, s, p->ballot, false, e->val);
            }
            msg_take_entries(prop_msg(p, false, PAXOS_MSG_ACCEPT, i), &ev);
        }
        p->bcast_from = p->last + 1;
        p->commit_dirty = false;
    }
    if (p->state == PAXOS_LEADING && p->commit_dirty) {
        for (uint32_t i = 0; i < p->cfg.n_nodes; i++) {
            if (i == p->cfg.self)
                continue;
            prop_msg(p, false, PAXOS_MSG_COMMIT, i);
        }
        p->commit_dirty = false;
    }
    /* every message carries the commit point as of now */
    for (size_t i = 0; i < p->out_now.n; i++)
        p->out_now.v[i].commit = p->commit;
    for (size_t i = 0; i < p->out_after.n; i++)
        p->out_after.v[i].commit = p->commit;
    uint64_t end = MIN(p->commit, p->applied + p->cfg.max_apply);
    for (uint64_t s = p->applied + 1; s <= end; s++) {
        struct slot_ent *e = ent(p, s);
        ASSERT(e->present && e->chosen); /* I7 */
        ent_push(&p->apply, s, e->ballot, true, e->val);
    }
    rd->send_now = p->out_now.v;
    rd->n_send_now = p->out_now.n;
    rd->entries = p->persist.v;
    rd->n_entries = p->persist.n;
    rd->truncate_below = p->truncate_below;
    rd->hard_changed = p->hard_dirty;
    rd->promised = p->promised;
    rd->send_after = p->out_after.v;
    rd->n_send_after = p->out_after.n;
    rd->apply = p->apply.v;
    rd->n_apply = p->apply.n;
    bool any = rd->n_send_now || rd->n_entries || rd->truncate_below || rd->hard_changed || rd->n_send_after ||
               rd->n_apply;
    p->in_ready = any;
    return any;
}

void paxos_advance(struct paxos *p, struct paxos_ready *rd)
{
    ASSERT(p->in_ready && rd->send_now == p->out_now.v && rd->entries == p->persist.v);
    p->in_ready = false;
    /* The leader's own vote counts once its copy is durable. */
    if (p->state == PAXOS_LEADING) {
        for (size_t i = 0; i < p->persist.n; i++)
            if (p->persist.v[i].ballot == p->ballot)
                count_ack(p, p->persist.v[i].slot, p->cfg.self);
        advance_commit(p);
    }
    if (p->apply.n) {
        ASSERT(p->apply.v[0].slot == p->applied + 1);
        p->applied = p->apply.v[p->apply.n - 1].slot;
        ASSERT(p->applied <= p->commit);
    }
    msgvec_clear(&p->out_now);
    msgvec_clear(&p->out_after);
    ent_release(p->persist.v, p->persist.n);
    p->persist.n = 0;
    ent_release(p->apply.v, p->apply.n);
    p->apply.n = 0;
    p->truncate_below = 0;
    p->hard_dirty = false;
    memset(rd, 0, sizeof(*rd));
}

void paxos_snapshot_done(struct paxos *p, uint64_t index)
{
    ASSERT(!p->in_ready && index <= p->applied);
    if (index <= p->snap_index)
        return;
    p->snap_index = index;
    if (index + 1 > (uint64_t)p->cfg.log_retain + p->log_start) {
        truncate_log(p, index + 1 - p->cfg.log_retain);
    }
}

int paxos_snapshot_installed(struct paxos *p, uint64_t index, uint64_t now_us)
{
    set_now(p, now_us);
    if (p->state == PAXOS_LEADING)
        return -EBUSY;
    if (index <= p->applied)
        return 0;
    abort_campaign(p);
    truncate_log(p, index + 1);
    if (p->commit < index)
        p->commit = index;
    p->applied = index;
    p->snap_index = index;
    if (p->known_commit < index)
        p->known_commit = index;
    advance_commit(p);
    return 0;
}

bool paxos_serving(const struct paxos *p)
{
    return p->state == PAXOS_LEADING && p->applied >= p->recover_end;
}

bool paxos_can_read(const struct paxos *p, uint64_t now_us)
{
    return paxos_serving(p) && now_us < p->lease_end;
}

enum paxos_state paxos_state(const struct paxos *p) { return p->state; }
uint32_t paxos_leader_hint(const struct paxos *p) { return p->leader; }
uint64_t paxos_ballot(const struct paxos *p)
{
    return p->state == PAXOS_LEADING || p->campaigning ? p->ballot : 0;
}
uint64_t paxos_promised(const struct paxos *p) { return p->promised; }
uint64_t paxos_commit_index(const struct paxos *p) { return p->commit; }
uint64_t paxos_applied_index(const struct paxos *p) { return p->applied; }
uint64_t paxos_log_start(const struct paxos *p) { return p->log_start; }

const char *paxos_state_name(enum paxos_state s)
{
    static const char *names[] = { "LOOKING", "LEADING", "FOLLOWING", "OBSERVING" };
    return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "?";
}

const char *paxos_msg_name(enum paxos_msg_type t)
{
    static const char *names[] = { "?", "PREPARE", "PROMISE", "ACCEPT", "ACCEPTED", "COMMIT",
                                   "HEARTBEAT", "HB_ACK", "CATCHUP_REQ", "CATCHUP_REP", "SNAPSHOT" };
    return (unsigned)t < ARRAY_SIZE(names) ? names[t] : "?";
}

void paxos_check(const struct paxos *p)
{
    ASSERT(p->applied <= p->commit);                    /* I7 */
    ASSERT(p->commit <= p->last);
    ASSERT(p->log_start <= p->commit + 1);
    ASSERT(p->log_start <= p->snap_index + 1);          /* I5 */
    ASSERT(p->snap_index <= p->applied);
    ASSERT(p->last - p->log_start < p->cap || p->last + 1 == p->log_start);
    if (p->commit >= p->log_start) {
        struct slot_ent *e = ent_get(p, p->commit);
        ASSERT(e && e->chosen);                         /* I5 */
    }
    if (p->state == PAXOS_LEADING) {
        ASSERT(p->promised == p->ballot);               /* I2: the leader's own acceptor is with it */
        ASSERT(PAXOS_BALLOT_NODE(p->ballot) == p->cfg.self);
        ASSERT(!p->campaigning && p->voter);
        ASSERT(p->bcast_from >= p->lead_start);
    }
    if (p->campaigning)
        ASSERT(p->promise_mask & bit(p->cfg.self));
    if (!p->voter)
        ASSERT(p->state == PAXOS_OBSERVING);
}
