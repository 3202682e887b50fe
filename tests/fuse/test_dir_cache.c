/* test_dir_cache.c - the lookup look-ahead's cache (fuse-client/dir_cache.h) without a mount: when a listing
 * is fetched, what it answers, and what makes it stale. */
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
    /* any change through the mount drops it; it had answered enough lookups, so the next fetch may
     * come at once */
    dcache_invalidate(c);
    T_CHECK(!dcache_get(c, 1, cred, "e000005", &a, &age));
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
    /* a change while the listing was being fetched: not installed */
    T_CHECK(fill(c, 1, cred, 10, true));
    T_CHECK(!dcache_get(c, 1, cred, "e000001", &a, &age));
    T_EQ(dcache_fills(c), 0);
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

static void test_expiry(void)
{
    struct dcache *c = dcache_new(50000000ull, 1, 100); /* 50 ms */
    Synod__V1__Attr a;
    uint64_t age;
    T_CHECK(fill(c, 1, 1, 5, false));
    T_CHECK(dcache_get(c, 1, 1, "e000004", &a, &age));
    struct timespec ts = {0, 80000000};
    nanosleep(&ts, NULL);
    T_CHECK(!dcache_get(c, 1, 1, "e000004", &a, &age));
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
    T_RUN(test_expiry);
    return 0;
}
