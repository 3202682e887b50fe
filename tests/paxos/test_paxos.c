/* test_paxos.c - unit tests of the Paxos core (driven by hand, no faults) and of the linearizability checker.
 *
 * A tiny synchronous harness delivers every message at once and treats every persist as synced, so each
 * test can poke one rule of paxos.h: the persist/send split, ballots, leases, restarts, snapshots.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "metaserver/paxos.h"
#include "tests/paxos/lin.h"
#include "tests/test.h"

#define N 3
#define MAXQ 4096

struct tnode {
    struct paxos *p;
    uint64_t promised;
    uint64_t applied;
    uint64_t last_applied_zxid;
    size_t n_applied;
};

static struct tnode nodes[N];
static struct paxos_msg q[MAXQ];
static size_t nq;
static uint64_t now = 1000000;
static bool drop_to[N], drop_from[N];

static size_t max_msg_bytes; /* the largest message sent (bytes of values) */

static void copy_msg(const struct paxos_msg *m)
{
    T_CHECK(nq < MAXQ);
    size_t bytes = 0;
    for (size_t i = 0; i < m->n_entries; i++)
        bytes += m->entries[i].val ? m->entries[i].val->len : 0;
    max_msg_bytes = MAX(max_msg_bytes, bytes);
    q[nq] = *m;
    if (m->n_entries) {
        q[nq].entries = xmalloc(m->n_entries * sizeof(*m->entries));
        for (size_t i = 0; i < m->n_entries; i++) {
            q[nq].entries[i] = m->entries[i];
            if (m->entries[i].val)
                paxos_val_ref(m->entries[i].val);
        }
    }
    nq++;
}

static void free_msg(struct paxos_msg *m)
{
    for (size_t i = 0; i < m->n_entries; i++)
        paxos_val_unref(m->entries[i].val);
    free(m->entries);
}

static void drive(int i)
{
    struct paxos_ready rd;
    struct tnode *t = &nodes[i];
    while (paxos_ready(t->p, &rd)) {
        for (size_t k = 0; k < rd.n_send_now; k++)
            copy_msg(&rd.send_now[k]);
        if (rd.hard_changed)
            t->promised = rd.promised;
        for (size_t k = 0; k < rd.n_send_after; k++)
            copy_msg(&rd.send_after[k]);
        for (size_t k = 0; k < rd.n_apply; k++) {
            T_EQ(rd.apply[k].slot, t->applied + 1);
            t->applied = rd.apply[k].slot;
            t->last_applied_zxid = rd.apply[k].val->zxid;
            t->n_applied++;
        }
        paxos_advance(t->p, &rd);
    }
}

static void pump(void)
{
    for (int rounds = 0; rounds < 1000; rounds++) {
        for (int i = 0; i < N; i++)
            if (nodes[i].p)
                drive(i);
        if (!nq)
            return;
        size_t n = nq;
        struct paxos_msg *batch = xmalloc(n * sizeof(*batch));
        memcpy(batch, q, n * sizeof(*batch));
        nq = 0;
        for (size_t k = 0; k < n; k++) {
            if (nodes[batch[k].to].p && !drop_to[batch[k].to] && !drop_from[batch[k].from])
                T_EQ(paxos_step(nodes[batch[k].to].p, &batch[k], now), 0);
            free_msg(&batch[k]);
        }
        free(batch);
    }
    T_FAIL("messages never settle");
}

static uint32_t test_window = 4;

static struct paxos_config config(uint32_t self)
{
    struct paxos_config c;
    memset(&c, 0, sizeof(c));
    paxos_config_defaults(&c);
    c.self = self;
    c.n_nodes = N;
    c.voter_mask = (1u << N) - 1;
    c.seed = 7;
    c.heartbeat_ms = 10;
    c.election_ms = 100;
    c.lease_ms = 50;
    c.window = test_window;
    c.log_retain = 2;
    c.max_ahead = MAX(64, 2 * test_window);
    return c;
}

static void start_all(void)
{
    memset(nodes, 0, sizeof(nodes));
    memset(drop_to, 0, sizeof(drop_to));
    nq = 0;
    for (uint32_t i = 0; i < N; i++) {
        struct paxos_config c = config(i);
        struct paxos_durable d = { 0 };
        T_EQ(paxos_new(&c, &d, now, &nodes[i].p), 0);
    }
}

static void stop_all(void)
{
    for (int i = 0; i < N; i++)
        paxos_free(nodes[i].p);
    for (size_t k = 0; k < nq; k++)
        free_msg(&q[k]);
    nq = 0;
}

/* Advance time in ticks until some node leads and serves; returns it. */
static int elect(void)
{
    for (int step = 0; step < 2000; step++) {
        now += 1000;
        for (int i = 0; i < N; i++)
            if (nodes[i].p) {
                paxos_tick(nodes[i].p, now);
                paxos_check(nodes[i].p);
            }
        pump();
        for (int i = 0; i < N; i++)
            if (nodes[i].p && paxos_serving(nodes[i].p) && paxos_can_read(nodes[i].p, now))
                return i;
    }
    T_FAIL("no leader elected");
}

static void test_ballots(void)
{
    T_CHECK(PAXOS_BALLOT(2, 0) > PAXOS_BALLOT(1, 15));
    T_CHECK(PAXOS_BALLOT(1, 2) > PAXOS_BALLOT(1, 1));
    T_EQ(PAXOS_BALLOT_ROUND(PAXOS_BALLOT(77, 3)), 77);
    T_EQ(PAXOS_BALLOT_NODE(PAXOS_BALLOT(77, 3)), 3);
    T_EQU(PAXOS_ZXID(5, 9), 0x500000009ull);
}

static void test_config_validation(void)
{
    struct paxos_durable d = { 0 };
    struct paxos *p;
    struct paxos_config c = config(0);
    c.lease_ms = c.election_ms; /* a lease must end before followers may elect */
    T_EQ(paxos_new(&c, &d, 0, &p), -EINVAL);
    c = config(0);
    c.self = N;
    T_EQ(paxos_new(&c, &d, 0, &p), -EINVAL);
    c = config(0);
    c.voter_mask = 1u << N;
    T_EQ(paxos_new(&c, &d, 0, &p), -EINVAL);
}

static void test_elect_and_replicate(void)
{
    start_all();
    int l = elect();
    struct paxos *lp = nodes[l].p;
    T_EQ(paxos_state(lp), PAXOS_LEADING);
    for (int i = 0; i < N; i++)
        if (i != l) {
            T_EQ(paxos_state(nodes[i].p), PAXOS_FOLLOWING);
            T_EQ(paxos_leader_hint(nodes[i].p), l);
            uint64_t s, z;
            T_EQ(paxos_propose(nodes[i].p, PAXOS_VAL_CMD, "x", 1, now, &s, &z), -EREMOTE);
            T_CHECK(!paxos_can_read(nodes[i].p, now));
        }
    uint64_t slot, zxid;
    T_EQ(paxos_propose(lp, PAXOS_VAL_CMD, "hello", 5, now, &slot, &zxid), 0);
    T_EQ(zxid >> 32, PAXOS_BALLOT_ROUND(paxos_ballot(lp)));
    T_EQ(zxid & 0xffffffff, 1);
    /* window: at most 4 slots in flight */
    uint64_t s2, z2;
    int ok = 0;
    while (paxos_propose(lp, PAXOS_VAL_CMD, "more", 4, now, &s2, &z2) == 0)
        ok++;
    T_EQ(ok, 3);
    T_EQ(paxos_propose(lp, PAXOS_VAL_CMD, "more", 4, now, &s2, &z2), -EAGAIN);
    pump();
    now += 20000;
    for (int i = 0; i < N; i++)
        paxos_tick(nodes[i].p, now);
    pump();
    for (int i = 0; i < N; i++) {
        T_EQ(paxos_commit_index(nodes[i].p), s2);
        T_EQ(nodes[i].applied, s2);
        T_EQU(nodes[i].last_applied_zxid, z2);
        paxos_check(nodes[i].p);
    }
    stop_all();
}

/* The acceptor's promise goes out only after the barrier, with the hard state in the same ready. */
static void test_persist_before_promise(void)
{
    start_all();
    struct paxos_msg m = { .type = PAXOS_MSG_PREPARE, .from = 1, .to = 0, .ballot = PAXOS_BALLOT(5, 1),
                           .first_slot = 1 };
    now += 200000; /* past the restart lease */
    T_EQ(paxos_step(nodes[0].p, &m, now), 0);
    struct paxos_ready rd;
    T_CHECK(paxos_ready(nodes[0].p, &rd));
    T_CHECK(rd.hard_changed);
    T_EQU(rd.promised, PAXOS_BALLOT(5, 1));
    T_EQ(rd.n_send_now, 0);
    T_EQ(rd.n_send_after, 1);
    T_EQ(rd.send_after[0].type, PAXOS_MSG_PROMISE);
    T_CHECK(rd.send_after[0].ok);
    paxos_advance(nodes[0].p, &rd);
    /* a lower ballot is refused, with the reason */
    m.ballot = PAXOS_BALLOT(4, 2);
    m.from = 2;
    T_EQ(paxos_step(nodes[0].p, &m, now), 0);
    T_CHECK(paxos_ready(nodes[0].p, &rd));
    T_EQ(rd.n_send_after, 1);
    T_CHECK(!rd.send_after[0].ok);
    T_EQU(rd.send_after[0].promised, PAXOS_BALLOT(5, 1));
    paxos_advance(nodes[0].p, &rd);
    /* an accept below the promise is refused and stores nothing */
    struct paxos_val *v = paxos_val_new(PAXOS_VAL_CMD, 1, "v", 1);
    struct paxos_entry e = { 1, PAXOS_BALLOT(4, 2), false, v };
    struct paxos_msg a = { .type = PAXOS_MSG_ACCEPT, .from = 2, .to = 0, .ballot = PAXOS_BALLOT(4, 2),
                           .entries = &e, .n_entries = 1 };
    T_EQ(paxos_step(nodes[0].p, &a, now), 0);
    T_CHECK(paxos_ready(nodes[0].p, &rd));
    T_EQ(rd.n_entries, 0);
    T_CHECK(!rd.send_after[0].ok);
    paxos_advance(nodes[0].p, &rd);
    /* malformed input is rejected, not asserted */
    a.to = 1;
    T_EQ(paxos_step(nodes[0].p, &a, now), -EINVAL);
    a.to = 0;
    a.from = 0;
    T_EQ(paxos_step(nodes[0].p, &a, now), -EINVAL);
    paxos_val_unref(v);
    stop_all();
}

/* Followers that acked a heartbeat refuse other proposers for the lease; so does a restarted acceptor. */
static void test_lease_refusal(void)
{
    start_all();
    int l = elect();
    int f = (l + 1) % N, o = (l + 2) % N;
    struct paxos_msg m = { .type = PAXOS_MSG_PREPARE, .from = (uint32_t)o, .to = (uint32_t)f,
                           .ballot = PAXOS_BALLOT(1000, o), .first_slot = 1 };
    T_EQ(paxos_step(nodes[f].p, &m, now), 0);
    struct paxos_ready rd;
    T_CHECK(paxos_ready(nodes[f].p, &rd));
    T_EQ(rd.send_after[0].type, PAXOS_MSG_PROMISE);
    T_CHECK(!rd.send_after[0].ok);
    T_CHECK(!rd.hard_changed);
    paxos_advance(nodes[f].p, &rd);
    /* restart f from its durable promise: still refuses during lease_ms after the restart */
    uint64_t promised = nodes[f].promised;
    paxos_free(nodes[f].p);
    struct paxos_config c = config((uint32_t)f);
    struct paxos_durable d = { promised, NULL, 0, 0 };
    T_EQ(paxos_new(&c, &d, now, &nodes[f].p), 0);
    T_EQU(paxos_promised(nodes[f].p), promised);
    T_EQ(paxos_step(nodes[f].p, &m, now + 1000), 0);
    T_CHECK(paxos_ready(nodes[f].p, &rd));
    T_CHECK(!rd.send_after[0].ok);
    paxos_advance(nodes[f].p, &rd);
    /* after the lease the same prepare is promised */
    T_EQ(paxos_step(nodes[f].p, &m, now + 60000), 0);
    T_CHECK(paxos_ready(nodes[f].p, &rd));
    T_CHECK(rd.send_after[0].ok);
    T_CHECK(rd.hard_changed);
    paxos_advance(nodes[f].p, &rd);
    stop_all();
}

/* A restarted node campaigns with a round above its durable promise (never reuses a ballot), and the leader
 * lease ends the drift margin before the followers' promise. */
static void test_restart_new_ballot(void)
{
    start_all();
    int l = elect();
    uint64_t b = paxos_ballot(nodes[l].p);
    uint64_t promised = nodes[l].promised;
    T_EQU(promised, b);
    paxos_free(nodes[l].p);
    struct paxos_config c = config((uint32_t)l);
    struct paxos_durable d = { promised, NULL, 0, nodes[l].applied };
    T_EQ(paxos_new(&c, &d, now, &nodes[l].p), 0);
    for (int i = 0; i < N; i++)
        if (i != l)
            drop_to[i] = true; /* only l campaigns, nobody answers */
    for (int k = 0; k < 400 && !paxos_ballot(nodes[l].p); k++) {
        now += 1000;
        paxos_tick(nodes[l].p, now);
        pump();
    }
    T_CHECK(paxos_ballot(nodes[l].p) > b);
    T_EQ(PAXOS_BALLOT_NODE(paxos_ballot(nodes[l].p)), l);
    stop_all();
}

/* Snapshots: the log is truncated below a snapshot (keeping log_retain), a lagging replica gets a SNAPSHOT,
 * and installing it moves its commit and applied points. */
static void test_snapshot_and_catchup(void)
{
    start_all();
    int l = elect();
    int lag = (l + 1) % N;
    drop_to[lag] = true;
    for (int k = 0; k < 20; k++) {
        uint64_t s, z;
        T_EQ(paxos_propose(nodes[l].p, PAXOS_VAL_CMD, "k", 1, now, &s, &z), 0);
        pump();
        now += 1000;
        for (int i = 0; i < N; i++)
            paxos_tick(nodes[i].p, now);
        pump();
    }
    uint64_t applied = nodes[l].applied;
    T_CHECK(applied >= 20);
    paxos_snapshot_done(nodes[l].p, applied);
    T_EQ(paxos_log_start(nodes[l].p), applied + 1 - 2);
    struct paxos_msg m = { .type = PAXOS_MSG_CATCHUP_REQ, .from = (uint32_t)lag, .to = (uint32_t)l,
                           .first_slot = 1, .max_slots = 16 };
    T_EQ(paxos_step(nodes[l].p, &m, now), 0);
    struct paxos_ready rd;
    T_CHECK(paxos_ready(nodes[l].p, &rd));
    T_CHECK(rd.truncate_below == applied + 1 - 2);
    bool found = false;
    for (size_t k = 0; k < rd.n_send_now; k++)
        if (rd.send_now[k].type == PAXOS_MSG_SNAPSHOT && rd.send_now[k].to == (uint32_t)lag) {
            found = true;
            T_EQ(rd.send_now[k].log_start, applied);
        }
    T_CHECK(found);
    paxos_advance(nodes[l].p, &rd);
    T_EQ(paxos_snapshot_installed(nodes[l].p, applied, now), -EBUSY);
    T_EQ(paxos_snapshot_installed(nodes[lag].p, applied, now), 0);
    nodes[lag].applied = applied;
    T_EQ(paxos_applied_index(nodes[lag].p), applied);
    T_CHECK(paxos_commit_index(nodes[lag].p) >= applied);
    paxos_check(nodes[lag].p);
    /* then the tail arrives by catch-up once it hears from the leader again */
    drop_to[lag] = false;
    uint64_t s, z;
    T_EQ(paxos_propose(nodes[l].p, PAXOS_VAL_CMD, "tail", 4, now, &s, &z), 0);
    for (int k = 0; k < 50; k++) {
        now += 1000;
        for (int i = 0; i < N; i++)
            paxos_tick(nodes[i].p, now);
        pump();
    }
    T_EQ(paxos_commit_index(nodes[lag].p), s);
    T_EQ(nodes[lag].applied, s);
    stop_all();
}

/* Messages stay near PAXOS_MAX_MSG_BYTES whatever the log holds: a replica 40 MiB behind (40 values of
 * 1 MiB) catches up in CATCHUP_REPs of ~16 MiB, and if it campaigns first, the promise it gets carries no
 * entries but makes it abort and catch up (it named everything up to the acceptor's commit point). Before,
 * either message carried all 40 MiB; with a real log (100k slots of up to 1 MiB) that ran the acceptor out of
 * memory. The replica ends up with every value. */
static void test_big_values_bounded(void)
{
    start_all();
    int l = elect();
    int lag = (l + 1) % N, other = (l + 2) % N;
    drop_to[lag] = true;
    static uint8_t big[1 << 20];
    uint64_t s = 0, z;
    for (int k = 0; k < 40; k++) {
        memset(big, k + 1, sizeof(big));
        T_EQ(paxos_propose(nodes[l].p, PAXOS_VAL_CMD, big, sizeof(big), now, &s, &z), 0);
        pump();
        now += 1000;
        for (int i = 0; i < N; i++)
            paxos_tick(nodes[i].p, now);
        pump();
    }
    T_CHECK(paxos_commit_index(nodes[other].p) >= s);
    T_CHECK(paxos_commit_index(nodes[lag].p) + 40 <= s);
    /* the leader dies; the replica behind comes back */
    paxos_free(nodes[l].p);
    nodes[l].p = NULL;
    drop_to[lag] = false;
    max_msg_bytes = 0;
    for (int k = 0; k < 3000 && paxos_commit_index(nodes[lag].p) < s; k++) {
        now += 1000;
        for (int i = 0; i < N; i++)
            if (nodes[i].p)
                paxos_tick(nodes[i].p, now);
        pump();
    }
    T_CHECK(paxos_commit_index(nodes[lag].p) >= s); /* and a new leader's first slot, maybe */
    T_CHECK(nodes[lag].applied >= s);
    T_CHECK(max_msg_bytes > 0 && max_msg_bytes <= PAXOS_MAX_MSG_BYTES + sizeof(big));
    printf("largest message while catching up: %zu bytes of values\n", max_msg_bytes);
    stop_all();
}

/* M4: the leader keeps at most PAXOS_MAX_INFLIGHT_BYTES of values unchosen. Both followers accept 1 MiB
 * values but their answers are lost, so nothing is chosen: proposals stop at the byte bound, not at the
 * 64-slot window. The leader dies, the answers flow again: a follower campaigns, the other's PROMISE carries
 * every value it accepted and not saw chosen, within PAXOS_MAX_MSG_BYTES + one value, and all of them are
 * chosen. Without the bound the leader took 64 slots and the PROMISE carried 64 MiB, over what the transport
 * takes per message. */
static void test_inflight_bytes_bounded(void)
{
    test_window = 64; /* the default */
    start_all();
    int l = elect();
    int a = (l + 1) % N, b = (l + 2) % N;
    drop_from[a] = drop_from[b] = true;
    static uint8_t big[1 << 20];
    uint64_t s = 0, z;
    int n = 0;
    for (int k = 0; k < 200; k++) {
        memset(big, k + 1, sizeof(big));
        if (paxos_propose(nodes[l].p, PAXOS_VAL_CMD, big, sizeof(big), now, &s, &z) != 0)
            break;
        n++;
        pump();
    }
    printf("unchosen 1 MiB values the leader took: %d\n", n);
    T_CHECK(n >= 2 && (uint64_t)n * sizeof(big) <= PAXOS_MAX_INFLIGHT_BYTES);
    T_EQ(paxos_propose(nodes[l].p, PAXOS_VAL_CMD, big, 100, now, &s, &z), -EAGAIN); /* even a small one */
    uint64_t last = s;
    paxos_free(nodes[l].p);
    nodes[l].p = NULL;
    drop_from[a] = drop_from[b] = false;
    max_msg_bytes = 0;
    for (int k = 0; k < 3000; k++) {
        if (paxos_commit_index(nodes[a].p) >= last && paxos_commit_index(nodes[b].p) >= last)
            break;
        now += 1000;
        for (int i = 0; i < N; i++)
            if (nodes[i].p)
                paxos_tick(nodes[i].p, now);
        pump();
    }
    T_CHECK(paxos_commit_index(nodes[a].p) >= last && paxos_commit_index(nodes[b].p) >= last);
    T_CHECK(nodes[a].applied >= last && nodes[b].applied >= last);
    T_CHECK(max_msg_bytes > 0 && max_msg_bytes <= PAXOS_MAX_MSG_BYTES + sizeof(big));
    printf("largest message of the failover: %zu bytes of values\n", max_msg_bytes);
    stop_all();
    test_window = 4;
}

/* Throughput of the core itself (three cores in one thread, messages copied as a transport would): each
 * round proposes a full window of slots, then delivers everything. Printed, and held to a low floor. */
static void test_throughput(void)
{
    start_all();
    int l = elect();
    uint8_t cmd[256] = { 0 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t slots = 0, s, z;
    while (slots < 200000) {
        while (paxos_propose(nodes[l].p, PAXOS_VAL_CMD, cmd, sizeof(cmd), now, &s, &z) == 0)
            slots++;
        pump();
    }
    pump();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    for (int i = 0; i < N; i++)
        T_EQ(nodes[i].applied, s);
    fprintf(stderr, "   %" PRIu64 " slots of %zu bytes through 3 replicas in %.2f s: %.0f slots/s\n", slots,
            sizeof(cmd), secs, (double)slots / secs);
    T_CHECK((double)slots / secs > 20000); /* one command per slot already beats the 20k/s target */
    stop_all();
}

static void test_lin_checker(void)
{
    /* put 1 [0,10], get -> 1 [20,20]: fine; get -> 0 after the put completed: not linearizable */
    struct lin_op ok[] = { { true, 1, 0, 10 }, { false, 1, 20, 20 } };
    T_CHECK(lin_check(ok, 2));
    struct lin_op bad[] = { { true, 1, 0, 10 }, { false, 0, 20, 20 } };
    T_CHECK(!lin_check(bad, 2));
    /* concurrent put: either value may be read */
    struct lin_op conc[] = { { true, 1, 0, 100 }, { false, 0, 20, 20 }, { false, 1, 30, 30 } };
    T_CHECK(lin_check(conc, 3));
    /* reads cannot go back in time */
    struct lin_op back[] = { { true, 1, 0, 100 }, { false, 1, 20, 20 }, { false, 0, 30, 30 } };
    T_CHECK(!lin_check(back, 3));
    /* a pending put may take effect at any later time, or never */
    struct lin_op pend[] = { { true, 1, 0, LIN_PENDING }, { false, 0, 20, 20 }, { false, 1, 500, 500 } };
    T_CHECK(lin_check(pend, 3));
    struct lin_op pend2[] = { { true, 1, 0, LIN_PENDING }, { false, 1, 20, 20 }, { false, 0, 500, 500 } };
    T_CHECK(!lin_check(pend2, 3));
    /* a read of a value nobody wrote */
    struct lin_op ghost[] = { { false, 9, 0, 1 } };
    T_CHECK(!lin_check(ghost, 1));
}

int main(void)
{
    T_RUN(test_ballots);
    T_RUN(test_config_validation);
    T_RUN(test_elect_and_replicate);
    T_RUN(test_persist_before_promise);
    T_RUN(test_lease_refusal);
    T_RUN(test_restart_new_ballot);
    T_RUN(test_snapshot_and_catchup);
    T_RUN(test_big_values_bounded);
    T_RUN(test_inflight_bytes_bounded);
    T_RUN(test_lin_checker);
    T_RUN(test_throughput);
    fprintf(stderr, "all paxos unit tests passed\n");
    return 0;
}
