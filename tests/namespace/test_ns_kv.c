/* test_ns_kv.c - the transaction overlay: read-your-writes, deletes hiding database keys, the merged
 * ordered iterator (also while the txn is written), abort, and one atomic commit with extra records. */
#include <stdio.h>
#include <stdlib.h>

#include "ns_testutil.h"
#include "tests/test.h"

static int get(struct kv_txn *t, const char *k, char *out)
{
    char *v;
    size_t vl;
    int rc = kv_get(t, k, strlen(k), &v, &vl);
    if (!rc) {
        memcpy(out, v, vl);
        out[vl] = 0;
        free(v);
    }
    return rc;
}

int main(void)
{
    struct tns tn;
    tns_open(&tn);
    leveldb_t *db = tn.db;
    struct kv_txn *t = kv_txn_begin(db);
    for (int i = 0; i < 10; i += 2) {
        char k[8];
        snprintf(k, sizeof(k), "t/%d", i);
        kv_put(t, k, strlen(k), k, strlen(k));
    }
    T_EQ(kv_txn_commit(t, NULL, 0, true), 0);
    t = kv_txn_begin(db);
    char buf[64];
    T_EQ(get(t, "t/2", buf), 0);
    T_STREQ(buf, "t/2");
    kv_put(t, "t/2", 3, "new", 3);
    kv_put(t, "t/3", 3, "three", 5);
    kv_del(t, "t/4", 3);
    T_EQ(get(t, "t/2", buf), 0);
    T_STREQ(buf, "new");
    T_EQ(get(t, "t/4", buf), -ENOENT);
    T_EQ(get(t, "t/9", buf), -ENOENT);
    const char *want[] = {"t/0", "t/2", "t/3", "t/7", "t/8"}; /* t/6 deleted, t/7 added on the way */
    struct kv_iter *it = kv_iter_prefix(t, "t/", 2);
    size_t n = 0;
    for (; kv_iter_valid(it); kv_iter_next(it), n++) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        T_CHECK(n < 5 && kl == 3 && !memcmp(k, want[n], 3));
        if (n == 1) { /* writes during iteration: delete ahead, insert behind */
            kv_del(t, "t/6", 3);
            kv_put(t, "t/1", 3, "x", 1);
            kv_put(t, "t/7", 3, "x", 1);
        }
    }
    T_EQ(n, 5);
    kv_iter_free(it);
    it = kv_iter_new(t, "t/2", 3, "t/7", 3); /* [t/2, t/7) */
    n = 0;
    for (; kv_iter_valid(it); kv_iter_next(it))
        n++;
    T_EQ(n, 2); /* t/2, t/3 */
    kv_iter_free(it);
    struct kv_pair extra = {"a/idx", 5, "17", 2};
    T_EQ(kv_txn_commit(t, &extra, 1, true), 0);
    t = kv_txn_begin(db);
    T_EQ(get(t, "a/idx", buf), 0);
    T_STREQ(buf, "17");
    T_EQ(get(t, "t/6", buf), -ENOENT);
    kv_put(t, "t/9", 3, "x", 1);
    kv_txn_abort(t);
    t = kv_txn_begin(db);
    T_EQ(get(t, "t/9", buf), -ENOENT);
    kv_txn_abort(t);
    tns_close(&tn, false);
    return 0;
}
