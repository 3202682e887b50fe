/* test_nssvc_opens.c - the leader's memory opens (metaserver/ns_opens.h) and the client's side of them
 * (fuse-client/open_refs.h): the ordering rules that keep a file held while any handle is open. */
#include <stdlib.h>

#include "fuse-client/open_refs.h"
#include "metaserver/ns_opens.h"
#include "tests/test.h"

static void test_register_release_order(void)
{
    struct ns_opens *o = ns_opens_new();
    T_CHECK(ns_opens_register(o, 1, 100, 5));
    T_CHECK(!ns_opens_register(o, 1, 100, 7)); /* same session: one entry, seq 7 */
    T_CHECK(ns_opens_held(o, 100));
    ns_opens_release(o, 1, 100, 6); /* older than the Open with seq 7: it must not drop the entry */
    T_CHECK(ns_opens_held(o, 100));
    ns_opens_release(o, 1, 100, 8);
    T_CHECK(!ns_opens_held(o, 100));
    /* two sessions hold it: both must release */
    ns_opens_register(o, 1, 100, 9);
    ns_opens_register(o, 2, 100, 1);
    ns_opens_release(o, 1, 100, 10);
    T_CHECK(ns_opens_held(o, 100));
    T_CHECK(ns_opens_holds(o, 2, 100));
    T_CHECK(!ns_opens_holds(o, 1, 100));
    ns_opens_session_drop(o, 2);
    T_CHECK(!ns_opens_held(o, 100));
    T_EQ(ns_opens_count(o), 0);
    /* an open being checked counts as held; a failed one leaves nothing, and only a confirmed entry lets
     * the session open an inode again (with no name left) */
    bool held;
    ns_opens_begin(o, 3, 200, 1, &held);
    T_CHECK(!held);
    T_CHECK(ns_opens_held(o, 200));
    ns_opens_begin(o, 3, 200, 2, &held); /* a second open, same session, while the first is checked */
    T_CHECK(!held);
    ns_opens_release(o, 3, 200, 9); /* never drops an entry with a check in flight */
    T_CHECK(ns_opens_held(o, 200));
    ns_opens_end(o, 3, 200, false);
    T_CHECK(ns_opens_held(o, 200));
    ns_opens_end(o, 3, 200, false);
    T_CHECK(!ns_opens_held(o, 200));
    ns_opens_begin(o, 3, 201, 3, &held);
    ns_opens_end(o, 3, 201, true);
    ns_opens_begin(o, 3, 201, 4, &held);
    T_CHECK(held);
    ns_opens_end(o, 3, 201, false); /* a failed reopen keeps the confirmed entry */
    T_CHECK(ns_opens_holds(o, 3, 201));
    ns_opens_free(o);
}

static void test_report(void)
{
    struct ns_opens *o = ns_opens_new();
    T_CHECK(!ns_opens_reported(o, 1));
    ns_opens_register(o, 1, 10, 3);  /* released since (not in the report): dropped */
    ns_opens_register(o, 1, 11, 9);  /* opened after the report was taken: kept */
    ns_opens_register(o, 2, 10, 1);  /* another session's: untouched */
    uint64_t set[] = {12, 13};
    ns_opens_report(o, 1, 5, set, 2);
    T_CHECK(ns_opens_reported(o, 1));
    T_CHECK(!ns_opens_holds(o, 1, 10));
    T_CHECK(ns_opens_holds(o, 1, 11));
    T_CHECK(ns_opens_holds(o, 1, 12) && ns_opens_holds(o, 1, 13));
    T_CHECK(ns_opens_held(o, 10)); /* session 2 */
    T_EQ(ns_opens_count(o), 4);
    /* a new leadership forgets everything, reports included */
    ns_opens_reset(o);
    T_CHECK(!ns_opens_reported(o, 1));
    T_EQ(ns_opens_count(o), 0);
    /* many entries: the tables grow and keep every one */
    for (uint64_t i = 0; i < 5000; i++)
        ns_opens_register(o, 1 + i % 7, 1000 + i, i + 1);
    T_EQ(ns_opens_count(o), 5000);
    for (uint64_t i = 0; i < 5000; i++)
        T_CHECK(ns_opens_holds(o, 1 + i % 7, 1000 + i));
    ns_opens_session_drop(o, 1);
    T_EQ(ns_opens_count(o), 5000 - 715);
    ns_opens_free(o);
}

static void test_client_refs(void)
{
    struct oref *r = oref_new();
    uint64_t s1 = oref_open_begin(r, 7);
    uint64_t s2 = oref_open_begin(r, 7);
    T_CHECK(s2 > s1);
    uint64_t rel;
    T_CHECK(!oref_put(r, 7, &rel)); /* one handle left: no Release */
    T_EQ(oref_count(r, 7), 1);
    T_CHECK(oref_put(r, 7, &rel));
    T_CHECK(rel > s2);
    T_EQ(oref_count(r, 7), 0);
    /* a create in flight caps the report's seq, so the report cannot drop what its apply registered */
    uint64_t c = oref_create_begin(r);
    oref_open_begin(r, 8);
    uint64_t *inos;
    size_t n;
    uint64_t rs = oref_snapshot(r, &inos, &n);
    T_EQ(rs, c);
    T_EQ(n, 1);
    T_EQ(inos[0], 8);
    free(inos);
    oref_create_end(r, c, 9);
    rs = oref_snapshot(r, &inos, &n);
    T_CHECK(rs > c);
    T_EQ(n, 2);
    free(inos);
    oref_create_end(r, oref_create_begin(r), 0); /* a failed create adds nothing */
    rs = oref_snapshot(r, &inos, &n);
    T_EQ(n, 2);
    free(inos);
    for (uint64_t i = 0; i < 3000; i++)
        oref_open_begin(r, 100 + i);
    T_EQ(oref_count(r, 100 + 2999), 1);
    oref_free(r);
}

/* The client and the leader together, with a report in the middle of opens and closes: after any
 * interleaving, the leader holds exactly what the client holds (or more, never less). */
static void test_together(void)
{
    struct ns_opens *o = ns_opens_new();
    struct oref *r = oref_new();
    uint64_t rng = 12345;
    uint64_t held[16] = {0};
    for (int step = 0; step < 20000; step++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t ino = 1 + (rng >> 33) % 16;
        int what = (int)((rng >> 20) % 5);
        if (what < 2) {
            uint64_t s = oref_open_begin(r, ino);
            ns_opens_register(o, 1, ino, s);
            held[ino - 1]++;
        } else if (what < 4 && held[ino - 1]) {
            uint64_t s;
            held[ino - 1]--;
            if (oref_put(r, ino, &s))
                ns_opens_release(o, 1, ino, s);
        } else if (what == 4) {
            uint64_t *inos;
            size_t n;
            uint64_t s = oref_snapshot(r, &inos, &n);
            ns_opens_report(o, 1, s, inos, n);
            free(inos);
        }
        for (uint64_t i = 1; i <= 16; i++)
            if (held[i - 1])
                T_CHECK(ns_opens_holds(o, 1, i));
    }
    ns_opens_free(o);
    oref_free(r);
}

/* Many sessions: registrations, releases, reports and drops at random against a model of who holds what
 * (the per-session lists that reports and drops walk must match the hash table). */
static void test_sessions_model(void)
{
    enum { NS = 8, NI = 24 };
    struct ns_opens *o = ns_opens_new();
    uint64_t seq[NS][NI] = {{0}}; /* 0: not held, else the seq of its registration */
    uint64_t rng = 777, next_seq = 1;
    for (int step = 0; step < 50000; step++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t sess = (rng >> 33) % NS, ino = (rng >> 40) % NI;
        int what = (int)((rng >> 20) % 16);
        if (what < 7) {
            ns_opens_register(o, sess + 1, ino + 1, next_seq);
            seq[sess][ino] = next_seq++;
        } else if (what < 13) {
            ns_opens_release(o, sess + 1, ino + 1, next_seq++);
            seq[sess][ino] = 0;
        } else if (what < 15) { /* a report of a few of its files: the others go */
            uint64_t inos[NI];
            size_t n = 0;
            uint64_t s = next_seq++;
            for (uint64_t i = 0; i < NI; i++) {
                if (seq[sess][i] && (rng >> (i % 50)) % 2)
                    inos[n++] = i + 1;
                else
                    seq[sess][i] = 0;
            }
            ns_opens_report(o, sess + 1, s, inos, n);
            for (size_t k = 0; k < n; k++)
                seq[sess][inos[k] - 1] = s;
        } else {
            ns_opens_session_drop(o, sess + 1);
            for (uint64_t i = 0; i < NI; i++)
                seq[sess][i] = 0;
        }
        size_t total = 0;
        for (uint64_t i = 0; i < NI; i++) {
            bool any = false;
            for (uint64_t j = 0; j < NS; j++) {
                T_EQ(ns_opens_holds(o, j + 1, i + 1), seq[j][i] != 0);
                any |= seq[j][i] != 0;
                total += seq[j][i] != 0;
            }
            T_EQ(ns_opens_held(o, i + 1), any);
        }
        T_EQ(ns_opens_count(o), total);
    }
    ns_opens_free(o);
}

int main(void)
{
    T_RUN(test_register_release_order);
    T_RUN(test_report);
    T_RUN(test_client_refs);
    T_RUN(test_together);
    T_RUN(test_sessions_model);
    return 0;
}
