/* test_ns_snapshot.c - snapshot/restore equality and determinism: the same command stream applied to two
 * databases (different batchings) gives byte-identical state; a snapshot streamed into a third database
 * through ns_restore reproduces it exactly, also over a database that held other state. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "common/util.h"
#include "ns_testutil.h"
#include "tests/test.h"

/* a deterministic workload touching every record type */
static void workload(struct tns *t, int batch)
{
    uint64_t rng = 42;
    uint64_t dirs[64] = {NS_ROOT_INO};
    int ndirs = 1;
    Synod__V1__NsCommand cmd;
    Synod__V1__RegisterReq reg = SYNOD__V1__REGISTER_REQ__INIT;
    for (int i = 0; i < 3; i++) {
        char addr[32];
        snprintf(addr, sizeof(addr), "cs%d:1", i);
        reg.addr = addr;
        reg.uuid = addr;
        reg.total_bytes = 1ull << 40;
        synod__v1__ns_command__init(&cmd);
        cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_CS_REGISTER;
        cmd.cs_register = &reg;
        T_EQ(tns_apply(t, &cmd, NULL), 0);
    }
    if (batch)
        tns_begin(t);
    for (int op = 0; op < 3000; op++) {
        if (batch && op % batch == batch - 1) {
            tns_commit(t);
            tns_begin(t);
        }
        char name[32];
        snprintf(name, sizeof(name), "n%llu", (unsigned long long)(util_rand_next(&rng) % 300));
        uint64_t d = dirs[util_rand_next(&rng) % (uint64_t)ndirs], ino;
        switch (util_rand_next(&rng) % 8) {
        case 0:
            if (t_mknod(t, ROOT, d, name, S_IFDIR | 0755, &ino) == 0 && ndirs < 64)
                dirs[ndirs++] = ino;
            break;
        case 1:
        case 2: {
            uint64_t fh;
            if (t_create(t, ROOT, d, name, 0644, 2, false, &ino, &fh) == 0) {
                Synod__V1__ChunkOpenWriteReq w = SYNOD__V1__CHUNK_OPEN_WRITE_REQ__INIT;
                w.rid = tns_rid(t);
                w.ino = ino;
                w.index = util_rand_next(&rng) % 3;
                synod__v1__ns_command__init(&cmd);
                cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_CHUNK_OPEN_WRITE;
                cmd.chunk_open_write = &w;
                tns_apply(t, &cmd, NULL);
                t_setxattr(t, ROOT, ino, "user.k", name, 0);
                if (util_rand_next(&rng) % 2)
                    t_release(t, ino, fh);
            }
            break;
        }
        case 3:
            t_unlink(t, ROOT, d, name, false);
            break;
        case 4:
            t_rename(t, ROOT, d, name, dirs[util_rand_next(&rng) % (uint64_t)ndirs], name, 0);
            break;
        case 5:
            if (t_lookup(t, ROOT, d, name, NULL) == 0) {
                Synod__V1__Attr a;
                t_lookup(t, ROOT, d, name, &a);
                t_lock(t, true, a.ino, util_rand_next(&rng) % 3, 0, 1 + util_rand_next(&rng) % 2,
                       util_rand_next(&rng) % 100, 100 + util_rand_next(&rng) % 100, NULL);
            }
            break;
        case 6:
            t_symlink(t, ROOT, d, name, "somewhere", NULL);
            break;
        default:
            t_unlink(t, ROOT, d, name, true);
            break;
        }
    }
    if (batch)
        tns_commit(t);
}

struct copy {
    struct ns_restore *r;
    size_t n;
};

static int copy_cb(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    struct copy *c = arg;
    c->n++;
    return ns_restore_add(c->r, k, kl, v, vl);
}

int main(void)
{
    struct tns a, b, c;
    tns_open(&a);
    tns_open(&b);
    workload(&a, 0);   /* one txn per command */
    workload(&b, 37);  /* batches of 37 commands per txn */
    size_t na, nb;
    uint64_t da = tns_digest(a.db, &na), db = tns_digest(b.db, &nb);
    fprintf(stderr, "a: %zu keys %016llx, b: %zu keys %016llx\n", na, (unsigned long long)da, nb,
            (unsigned long long)db);
    T_EQ(na, nb);
    T_EQU(da, db);
    T_CHECK(na > 1000);
    /* snapshot a (through a LevelDB snapshot) into c, which has unrelated namespace state first */
    tns_open(&c);
    T_EQ(t_mknod(&c, ROOT, NS_ROOT_INO, "junk", S_IFDIR | 0755, NULL), 0);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    char *err = NULL;
    leveldb_put(c.db, wo, "p/other", 7, "x", 1, &err); /* another module's key: restore leaves it */
    T_CHECK(!err);
    leveldb_writeoptions_destroy(wo);
    const leveldb_snapshot_t *snap = leveldb_create_snapshot(a.db);
    T_EQ(t_mknod(&a, ROOT, NS_ROOT_INO, "after-snapshot", S_IFREG, NULL), 0); /* not in the snapshot */
    struct copy cp = {0};
    T_EQ(ns_restore_begin(c.db, &cp.r), 0);
    T_EQ(ns_snapshot_write(a.db, snap, copy_cb, &cp), 0);
    T_EQ(ns_restore_end(cp.r, true), 0);
    leveldb_release_snapshot(a.db, snap);
    T_EQ(cp.n, na);
    size_t nc;
    T_EQU(tns_digest(c.db, &nc), da);
    T_EQ(nc, na);
    struct ns_restore *r;
    T_EQ(ns_restore_begin(c.db, &r), 0);
    T_EQ(ns_restore_add(r, "x/1", 3, "", 0), -EINVAL);
    T_EQ(ns_restore_end(r, false), 0);
    tns_digest(c.db, &nc);
    T_EQ(nc, 0);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    size_t vl;
    char *v = leveldb_get(c.db, ro, "p/other", 7, &vl, &err);
    T_CHECK(v && vl == 1);
    leveldb_free(v);
    leveldb_readoptions_destroy(ro);
    tns_close(&a, false);
    tns_close(&b, false);
    tns_close(&c, false);
    return 0;
}
