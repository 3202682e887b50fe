/* test_dir_cache.c - the lookup look-ahead's cache (fuse-client/dir_cache.h) without a mount: when a listing
 * is fetched, what it answers (names with attributes, and "no such name"), and what makes it stale. */
#include <stdio.h>
#include <time.h>

#include "fuse-client/dir_cache.h"
#include "tests/test.h"

static Synod__V1__Attr attr(uint64_t ino)
{
    Synod__V1__Attr a = SYNOD__V1__ATTR__INIT;
    a.ino = ino;
    a.size = ino * 10;
    return a;
}

/* Fill dir with n entries "e000000".. (inode 100 + i); returns whether the fill ran. */
static bool fill(struct dcache *c, uint64_t dir, uint64_t cred, int n, bool invalidate_midway)
{
    struct dcache_fill *f = dcache_miss(c, dir, cred);
    if (!f)
        return false;
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        char name[16];
        snprintf(name, sizeof(name), "e%06d", i);
        Synod__V1__Attr a = attr(100 + (uint64_t)i);
        ok = dcache_fill_add(f, name, &a);
        if (invalidate_midway && i == n / 2)
            dcache_invalidate(c);
    }
    dcache_fill_end(f, true);
    return true;
}

static void test_trigger_and_answers(void)
{
    struct dcache *c = dcache_new(1000000000ull, 3, 1000);
    uint64_t cred = dcache_cred_key(1000, 1000, NULL, 0);
    Synod__V1__Attr a;
    uint64_t age;
    T_CHECK(!dcache_get(c, 1, cred, "e000005", &a, &age));
    T_CHECK(!fill(c, 1, cred, 10, false)); /* miss 1 */
    T_CHECK(!fill(c, 1, cred, 10, false)); /* miss 2 */
    T_CHECK(fill(c, 1, cred, 10, false));  /* miss 3: this one lists */
    T_EQ(dcache_fills(c), 1);
    T_CHECK(dcache_get(c, 1, cred, "e000005", &a, &age));
    T_EQ(a.ino, 105);
    T_EQ(a.size, 1050);
    T_CHECK(age < 1000000000ull);
    T_CHECK(dcache_get(c, 1, cred, "e000000", &a, &age) && a.ino == 100);
    T_CHECK(dcache_get(c, 1, cred, "e000009", &a, &age) && a.ino == 109);
    T_CHECK(!dcache_get(c, 1, cred, "e000010", &a, &age)); /* not listed: the server answers */
    T_CHECK(!dcache_get(c, 2, cred, "e000005", &a, &age)); /* another directory */
    /* another user's lookups never see this listing */
    uint64_t other = dcache_cred_key(1001, 1000, NULL, 0);
    T_CHECK(other != cred);
    T_CHECK(!dcache_get(c, 1, other, "e000005", &a, &age));
    uint32_t g[] = {5};
    T_CHECK(dcache_cred_key(1000, 1000, g, 1) != cred);
    /* any change through the mount makes its attributes stale; it had answered enough lookups, so the
     * next fetch may come at once */
    dcache_invalidate(c);
    T_CHECK(!dcache_get(c, 1, cred, "e000005", &a, &age));
    T_CHECK(dcache_absent(c, 1, cred, "e000010", &age)); /* names still hold */
    T_CHECK(!fill(c, 1, cred, 10, false));
    T_CHECK(!fill(c, 1, cred, 10, false));
    T_CHECK(fill(c, 1, cred, 10, false));
    /* dropped before it answered 3 lookups: wasted, so no listing for a while */
    T_CHECK(dcache_get(c, 1, cred, "e000001", &a, &age));
    dcache_invalidate(c);
    T_CHECK(!dcache_get(c, 1, cred, "e000001", &a, &age));
    for (int i = 0; i < 10; i++)
        T_CHECK(!fill(c, 1, cred, 10, false));
    dcache_free(c);
}

static void test_stale_fill_and_limits(void)
{
    struct dcache *c = dcache_new(1000000000ull, 1, 100);
    uint64_t cred = 7;
    Synod__V1__Attr a;
    uint64_t age;
    /* a change while the listing was being fetched: installed for names, its attributes already stale */
    T_CHECK(fill(c, 1, cred, 10, true));
    T_CHECK(!dcache_get(c, 1, cred, "e000001", &a, &age));
    T_EQ(dcache_fills(c), 1);
    T_CHECK(dcache_absent(c, 1, cred, "zzz", &age));
    T_CHECK(!dcache_absent(c, 1, cred, "e000001", &age));
    /* too large a directory: not installed, and not tried again at once */
    T_CHECK(fill(c, 2, cred, 500, false));
    T_CHECK(!dcache_get(c, 2, cred, "e000001", &a, &age));
    T_CHECK(!fill(c, 2, cred, 10, false));
    /* one fetch per directory at a time */
    struct dcache_fill *f = dcache_miss(c, 3, cred);
    T_CHECK(f != NULL);
    T_CHECK(dcache_miss(c, 3, cred) == NULL);
    dcache_fill_end(f, false); /* a failed fetch installs nothing */
    T_CHECK(!dcache_get(c, 3, cred, "e000000", &a, &age));
    dcache_free(c);
}

/* "No such name" answers, and this mount's own name changes patched in. */
static void test_names(void)
{
    struct dcache *c = dcache_new(1000000000ull, 1, 12);
    uint64_t cred = 7, other = 8, age;
    Synod__V1__Attr a;
    T_CHECK(!dcache_absent(c, 1, cred, "x", &age)); /* no listing: the server answers */
    T_CHECK(fill(c, 1, cred, 10, false));
    T_CHECK(fill(c, 1, other, 10, false));
    T_CHECK(dcache_absent(c, 1, cred, "x", &age));
    T_CHECK(!dcache_absent(c, 1, cred, "e000003", &age));
    T_CHECK(!dcache_absent(c, 2, cred, "x", &age)); /* another directory */
    T_CHECK(!dcache_absent(c, 1, 9, "x", &age));    /* another user */
    T_EQ(dcache_negatives(c), 1);
    /* this mount creates x and removes e000003: both unsure, in every user's listing of the directory */
    dcache_touch(c, 1, "x");
    dcache_touch(c, 1, "e000003");
    dcache_touch(c, 2, "y"); /* another directory's change leaves these alone */
    for (int k = 0; k < 2; k++) {
        uint64_t cr = k ? other : cred;
        T_CHECK(!dcache_absent(c, 1, cr, "x", &age));
        T_CHECK(!dcache_absent(c, 1, cr, "e000003", &age));
        T_CHECK(!dcache_get(c, 1, cr, "x", &a, &age));
        T_CHECK(dcache_absent(c, 1, cr, "y", &age));
        T_CHECK(dcache_absent(c, 1, cr, "a", &age)); /* before the first name */
        T_CHECK(dcache_absent(c, 1, cr, "z", &age)); /* after the last */
    }
    /* a change during a fetch: the names touched meanwhile are unsure in what it installs */
    struct dcache_fill *f = dcache_miss(c, 3, cred);
    T_CHECK(f != NULL);
    Synod__V1__Attr at = attr(100);
    T_CHECK(dcache_fill_add(f, "b", &at));
    dcache_touch(c, 3, "a"); /* a page already read: the server's answer may predate it */
    dcache_touch(c, 3, "c"); /* a page still to come */
    at = attr(101);
    T_CHECK(dcache_fill_add(f, "d", &at));
    dcache_fill_end(f, true);
    T_CHECK(!dcache_absent(c, 3, cred, "a", &age));
    T_CHECK(!dcache_absent(c, 3, cred, "b", &age));
    T_CHECK(!dcache_absent(c, 3, cred, "c", &age));
    T_CHECK(dcache_absent(c, 3, cred, "bb", &age));
    /* a listing that would grow past the limit (12) with touches is dropped: 10 listed + x, then x2 */
    dcache_touch(c, 1, "x2");
    T_CHECK(dcache_absent(c, 1, cred, "q", &age));
    dcache_touch(c, 1, "x3");
    T_CHECK(!dcache_absent(c, 1, cred, "q", &age));
    T_CHECK(dcache_absent(c, 3, cred, "q", &age));
    /* an empty directory's listing answers too, and takes touches */
    T_CHECK(fill(c, 5, cred, 0, false));
    T_CHECK(dcache_absent(c, 5, cred, "a", &age));
    dcache_touch(c, 5, "a");
    T_CHECK(!dcache_absent(c, 5, cred, "a", &age));
    T_CHECK(dcache_absent(c, 5, cred, "b", &age));
    /* a change that cannot be patched drops every listing, and the fills running */
    f = dcache_miss(c, 4, cred);
    T_CHECK(f != NULL);
    dcache_forget_names(c);
    dcache_fill_end(f, true);
    T_CHECK(!dcache_absent(c, 3, cred, "q", &age));
    T_CHECK(!dcache_absent(c, 4, cred, "q", &age));
    dcache_free(c);
}

static void test_expiry(void)
{
    struct dcache *c = dcache_new(50000000ull, 1, 100); /* 50 ms */
    Synod__V1__Attr a;
    uint64_t age;
    T_CHECK(fill(c, 1, 1, 5, false));
    T_CHECK(dcache_get(c, 1, 1, "e000004", &a, &age));
    T_CHECK(dcache_absent(c, 1, 1, "zz", &age));
    struct timespec ts = {0, 80000000};
    nanosleep(&ts, NULL);
    T_CHECK(!dcache_get(c, 1, 1, "e000004", &a, &age));
    T_CHECK(!dcache_absent(c, 1, 1, "zz", &age));
    /* more listings than slots: the oldest goes */
    for (uint64_t d = 10; d < 16; d++)
        T_CHECK(fill(c, d, 1, 3, false));
    T_CHECK(dcache_get(c, 15, 1, "e000002", &a, &age));
    T_CHECK(!dcache_get(c, 10, 1, "e000002", &a, &age));
    dcache_free(c);
    /* ttl 0: off */
    c = dcache_new(0, 1, 100);
    T_CHECK(dcache_miss(c, 1, 1) == NULL);
    dcache_free(c);
}

int main(void)
{
    T_RUN(test_trigger_and_answers);
    T_RUN(test_stale_fill_and_limits);
    T_RUN(test_names);
    T_RUN(test_expiry);
    return 0;
}
