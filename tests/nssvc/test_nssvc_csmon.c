/* test_nssvc_csmon.c - the leader's heartbeat table with a fake clock: dead after the timeout and not
 * before, a fresh grace period for chunkservers a (new) leader never heard, one report per death, and
 * the rule for which heartbeats are logged. */
#include "metaserver/ns_service_csmon.h"
#include "tests/test.h"

#define S 1000000000ull

static void test_dead(void)
{
    struct csmon *m = csmon_new(10 * S, 30 * S);
    struct csmon_stats st = {.total = 1ull << 40, .used = 1ull << 30};
    uint32_t alive[] = {1, 2, 3}, out[3];
    uint64_t t = 1000 * S;
    csmon_heard(m, 1, t, &st);
    csmon_heard(m, 2, t, &st);
    /* 3 was never heard by this leader: its grace period starts at the first check */
    T_EQ(csmon_dead(m, t + 5 * S, alive, 3, out), 0);
    csmon_heard(m, 1, t + 9 * S, &st);
    T_EQ(csmon_dead(m, t + 10 * S, alive, 3, out), 0);           /* exactly the timeout: not yet */
    T_EQ(csmon_dead(m, t + 10 * S + 1, alive, 3, out), 1);       /* 2 silent for > 10 s */
    T_EQ(out[0], 2);
    T_EQ(csmon_dead(m, t + 11 * S, alive, 3, out), 0);           /* reported once... */
    T_EQ(csmon_dead(m, t + 15 * S + 2, alive, 3, out), 1);       /* 3: 10 s after its grace started */
    T_EQ(out[0], 3);
    uint32_t still[] = {2};
    T_EQ(csmon_dead(m, t + 21 * S + 2, still, 1, out), 1);       /* ...again if still alive in the state */
    /* a heartbeat revives */
    csmon_heard(m, 2, t + 22 * S, &st);
    T_EQ(csmon_dead(m, t + 23 * S, still, 1, out), 0);
    struct csmon_stats got;
    uint64_t heard;
    T_CHECK(csmon_get(m, 2, &got, &heard));
    T_EQU(heard, t + 22 * S);
    T_EQU(got.used, st.used);
    T_CHECK(!csmon_get(m, 3, NULL, NULL)); /* never heard */
    /* a new leader: everyone gets a fresh grace period */
    csmon_reset(m);
    T_EQ(csmon_dead(m, t + 100 * S, alive, 3, out), 0);
    T_EQ(csmon_dead(m, t + 109 * S, alive, 3, out), 0);
    T_EQ(csmon_dead(m, t + 111 * S, alive, 3, out), 3);
    csmon_free(m);
}

static void test_logging(void)
{
    struct csmon *m = csmon_new(10 * S, 30 * S);
    struct csmon_stats st = {.total = 1ull << 40, .used = 1ull << 30, .chunks = 10};
    uint64_t t = 5 * S;
    T_CHECK(csmon_heard(m, 1, t, &st)); /* first heartbeat this leader sees */
    csmon_logged(m, 1, t, &st);
    T_CHECK(!csmon_heard(m, 1, t + S, &st));
    st.used += 1ull << 20; /* small change: memory only */
    st.load = 50;
    T_CHECK(!csmon_heard(m, 1, t + 2 * S, &st));
    st.used += 20ull << 30; /* > 1% of 1 TiB */
    T_CHECK(csmon_heard(m, 1, t + 3 * S, &st));
    csmon_logged(m, 1, t + 3 * S, &st);
    T_CHECK(!csmon_heard(m, 1, t + 4 * S, &st));
    T_CHECK(csmon_heard(m, 1, t + 33 * S, &st)); /* periodic */
    csmon_logged(m, 1, t + 33 * S, &st);
    st.failed_dirs = 1;
    T_CHECK(csmon_heard(m, 1, t + 34 * S, &st));
    csmon_forget(m, 1);
    T_CHECK(csmon_heard(m, 1, t + 35 * S, &st));
    /* a small chunkserver (40 MiB): 5% of it is logged, it could fill up within the 64 MiB floor */
    struct csmon_stats sm = {.total = 40ull << 20, .used = 0};
    T_CHECK(csmon_heard(m, 2, t, &sm));
    csmon_logged(m, 2, t, &sm);
    sm.used = 1ull << 20;
    T_CHECK(!csmon_heard(m, 2, t + S, &sm));
    sm.used = 3ull << 20;
    T_CHECK(csmon_heard(m, 2, t + 2 * S, &sm));
    csmon_free(m);
}

/* The tick reads its clock, then a heartbeat handler on another thread stores a later time before the tick
 * looks: the chunkserver was heard a moment ago, not 584 years ago (an unsigned difference wrapped and
 * declared a live chunkserver dead; admin_cluster caught it under load). Likewise for the forced-log age. */
static void test_heard_after_now(void)
{
    struct csmon *m = csmon_new(10 * S, 30 * S);
    struct csmon_stats st = {.total = 1ull << 40, .used = 1ull << 30};
    uint32_t alive[] = {1}, out[1];
    uint64_t t = 1000 * S;
    T_EQ(csmon_dead(m, t, alive, 1, out), 0);
    csmon_heard(m, 1, t + 5 * S, &st);
    T_EQ(csmon_dead(m, t + 5 * S - 1000, alive, 1, out), 0);
    T_EQ(csmon_dead(m, t + 15 * S, alive, 1, out), 0);
    T_EQ(csmon_dead(m, t + 15 * S + 1, alive, 1, out), 1);
    /* reported at t+15 s; a check with an older clock reading does not report it again at once */
    T_EQ(csmon_dead(m, t + 15 * S - 1000, alive, 1, out), 0);
    /* logged at a later reading than the next heartbeat's: not "30 s old" */
    csmon_logged(m, 1, t + 20 * S, &st);
    T_CHECK(!csmon_heard(m, 1, t + 20 * S - 1000, &st));
    csmon_free(m);
}

int main(void)
{
    T_RUN(test_dead);
    T_RUN(test_logging);
    T_RUN(test_heard_after_now);
    return 0;
}
