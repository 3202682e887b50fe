/* test_ns_locks.c - cluster-wide flock and POSIX byte-range locks: conflicts, getlk, split/merge,
 * release on session end. */
#include <sys/stat.h>

#include "ns_testutil.h"
#include "tests/test.h"

#define P SYNOD__V1__LOCK_KIND__LOCK_POSIX
#define F SYNOD__V1__LOCK_KIND__LOCK_FLOCK
#define RD SYNOD__V1__LOCK_TYPE__LOCK_READ
#define WR SYNOD__V1__LOCK_TYPE__LOCK_WRITE
#define UN SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK
#define END UINT64_MAX

static void test_posix(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t f;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "f", S_IFREG | 0644, &f), 0);
    uint64_t s1 = t.session, s2 = t_session_open(&t);
    Synod__V1__LockRep r;
    T_EQ(t_lock(&t, true, f, 1, P, WR, 0, 99, NULL), 0);
    T_EQ(t_lock(&t, true, f, 1, P, RD, 200, 299, NULL), 0);
    t.session = s2;
    T_EQ(t_lock(&t, true, f, 7, P, RD, 50, 60, NULL), -EAGAIN);
    T_EQ(t_lock(&t, true, f, 7, P, RD, 250, 260, NULL), 0);    /* read/read shares */
    T_EQ(t_lock(&t, true, f, 7, P, WR, 100, 199, NULL), 0);    /* gap between */
    T_EQ(t_lock(&t, false, f, 7, P, WR, 90, 95, &r), 0);
    T_EQ(r.type, WR);
    T_EQU(r.start, 0);
    T_EQU(r.end, 99);
    T_EQU(r.owner, 1);
    T_EQ(t_lock(&t, false, f, 7, P, WR, 300, END, &r), 0);
    T_EQ(r.type, UN);
    /* same session, another owner conflicts too */
    t.session = s1;
    T_EQ(t_lock(&t, true, f, 2, P, RD, 150, 150, NULL), -EAGAIN);
    /* split: unlock the middle of owner 1's write lock; then the middle is free */
    T_EQ(t_lock(&t, true, f, 1, P, UN, 40, 59, NULL), 0);
    t.session = s2;
    T_EQ(t_lock(&t, true, f, 7, P, WR, 40, 59, NULL), 0);
    T_EQ(t_lock(&t, true, f, 7, P, WR, 39, 39, NULL), -EAGAIN);
    T_EQ(t_lock(&t, true, f, 7, P, WR, 60, 60, NULL), -EAGAIN);
    /* merge: adjacent same-type ranges of one owner coalesce; getlk reports the merged range */
    T_EQ(t_lock(&t, true, f, 7, P, WR, 300, 399, NULL), 0);
    T_EQ(t_lock(&t, true, f, 7, P, WR, 400, 499, NULL), 0);
    t.session = s1;
    T_EQ(t_lock(&t, false, f, 1, P, RD, 450, 450, &r), 0);
    T_EQ(r.type, WR);
    T_EQU(r.start, 300);
    T_EQU(r.end, 499);
    /* downgrade part of a lock: type change splits */
    t.session = s2;
    T_EQ(t_lock(&t, true, f, 7, P, RD, 350, 359, NULL), 0);
    t.session = s1;
    T_EQ(t_lock(&t, true, f, 1, P, RD, 355, 355, NULL), 0);
    T_EQ(t_lock(&t, true, f, 1, P, RD, 360, 360, NULL), -EAGAIN);
    /* session expiry releases s2's locks */
    T_EQ(t_session_end(&t, s2, true), 0);
    T_EQ(t_lock(&t, false, f, 1, P, WR, 0, END, &r), 0);
    T_EQ(r.type, UN);
    T_EQ(t_lock(&t, true, f, 1, P, WR, 0, END, NULL), 0);
    T_EQ(t_lock(&t, true, f, 1, P, UN, 0, END, NULL), 0);
    T_EQ(t_lock(&t, true, f, 1, P, WR, 10, 5, NULL), -EINVAL);
    T_EQ(t_lock(&t, true, 777, 1, P, WR, 0, 5, NULL), -ENOENT);
    tns_close(&t, false);
}

static void test_flock(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t f;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "f", S_IFREG | 0644, &f), 0);
    uint64_t s1 = t.session, s2 = t_session_open(&t);
    T_EQ(t_lock(&t, true, f, 1, F, RD, 0, 0, NULL), 0);
    t.session = s2;
    T_EQ(t_lock(&t, true, f, 9, F, RD, 0, 0, NULL), 0);
    T_EQ(t_lock(&t, true, f, 9, F, WR, 0, 0, NULL), -EAGAIN);
    T_EQ(t_lock(&t, true, f, 9, P, WR, 0, END, NULL), 0); /* flock and POSIX are independent */
    t.session = s1;
    T_EQ(t_lock(&t, true, f, 1, F, UN, 0, 0, NULL), 0);
    t.session = s2;
    T_EQ(t_lock(&t, true, f, 9, F, WR, 0, 0, NULL), 0);   /* upgrade once alone */
    t.session = s1;
    T_EQ(t_lock(&t, true, f, 1, F, RD, 0, 0, NULL), -EAGAIN);
    T_EQ(t_session_end(&t, s2, false), 0);
    T_EQ(t_lock(&t, true, f, 1, F, WR, 0, 0, NULL), 0);
    /* unlinking the file drops its locks and the index */
    T_EQ(t_unlink(&t, ROOT, NS_ROOT_INO, "f", false), 0);
    size_t n1, n2;
    tns_digest(t.db, &n1);
    T_EQ(t_session_end(&t, s1, false), 0);
    tns_digest(t.db, &n2);
    T_EQ(n2, n1); /* nothing left to release: the unlink dropped the locks and their index */
    tns_close(&t, false);
}

int main(void)
{
    T_RUN(test_posix);
    T_RUN(test_flock);
    return 0;
}
