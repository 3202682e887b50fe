/* test_ns_ops.c - every namespace operation and its errors, times, unlink-while-open, paged readdir over
 * thousands of entries, xattrs, exactly-once replies. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "ns_testutil.h"
#include "tests/test.h"

#define R NS_ROOT_INO
#define RN SYNOD__V1__RENAME_FLAGS__RENAME_NOREPLACE
#define RX SYNOD__V1__RENAME_FLAGS__RENAME_EXCHANGE

static void test_create_lookup_errors(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t d, f, x;
    Synod__V1__Attr a, pa;
    T_EQ(t_getattr(&t, R, &pa), 0);
    T_EQ(t_mknod(&t, ROOT, R, "d", S_IFDIR | 0755, &d), 0);
    T_EQ(t_getattr(&t, R, &a), 0);
    T_EQ(a.nlink, 3);
    T_CHECK(a.mtime_ns > pa.mtime_ns && a.ctime_ns == a.mtime_ns);
    T_EQ(t_mknod(&t, ROOT, d, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_lookup(&t, ROOT, d, "f", &a), 0);
    T_EQU(a.ino, f);
    T_EQ(a.nlink, 1);
    T_EQ(a.mode, S_IFREG | 0644);
    T_EQ(t_lookup(&t, ROOT, d, "..", &a), 0);
    T_EQU(a.ino, R);
    T_EQ(t_lookup(&t, ROOT, d, "nope", NULL), -ENOENT);
    T_EQ(t_lookup(&t, ROOT, f, "x", NULL), -ENOTDIR);
    T_EQ(t_mknod(&t, ROOT, d, "f", S_IFREG | 0644, NULL), -EEXIST);
    T_EQ(t_mknod(&t, ROOT, d, "", S_IFREG | 0644, NULL), -EINVAL);
    T_EQ(t_mknod(&t, ROOT, d, ".", S_IFDIR | 0755, NULL), -EEXIST);
    T_EQ(t_mknod(&t, ROOT, d, "..", S_IFDIR | 0755, NULL), -EEXIST);
    T_EQ(t_mknod(&t, ROOT, d, "a/b", S_IFREG, NULL), -EINVAL);
    T_EQ(t_mknod(&t, ROOT, f, "x", S_IFREG, NULL), -ENOTDIR);
    T_EQ(t_mknod(&t, ROOT, 9999, "x", S_IFREG, NULL), -ENOENT);
    char longname[300];
    memset(longname, 'a', 256);
    longname[256] = 0;
    T_EQ(t_mknod(&t, ROOT, d, longname, S_IFREG, NULL), -ENAMETOOLONG);
    T_EQ(t_lookup(&t, ROOT, d, longname, NULL), -ENAMETOOLONG);
    longname[255] = 0;
    T_EQ(t_mknod(&t, ROOT, d, longname, S_IFREG, NULL), 0);
    T_EQ(t_mknod(&t, ROOT, d, "fifo", S_IFIFO | 0600, &x), 0);
    T_EQ(t_mknod(&t, ROOT, d, "lnk", S_IFLNK | 0777, NULL), -EINVAL);
    /* O_CREAT without O_EXCL opens the existing file; with O_EXCL: EEXIST */
    uint64_t ino2, fh;
    T_EQ(t_create(&t, ROOT, d, "f", 0644, O_RDWR, false, &ino2, &fh), 0);
    T_EQU(ino2, f);
    T_EQ(t_create(&t, ROOT, d, "f", 0644, O_RDWR, true, NULL, NULL), -EEXIST);
    T_EQ(t_create(&t, ROOT, d, "new", 0644, O_RDWR, true, &ino2, &fh), 0);
    T_CHECK(fh != 0);
    /* umask */
    struct tcred u;
    tcred(&u, 0, 0, 0)->c.umask = 022;
    T_EQ(t_mknod(&t, &u, d, "um", S_IFREG | 0666, &x), 0);
    T_EQ(t_getattr(&t, x, &a), 0);
    T_EQ(a.mode & 0777, 0644);
    tns_close(&t, false);
}

static void test_unlink_rmdir(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t d, f, sub;
    T_EQ(t_mknod(&t, ROOT, R, "d", S_IFDIR | 0755, &d), 0);
    T_EQ(t_mknod(&t, ROOT, d, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_mknod(&t, ROOT, d, "sub", S_IFDIR | 0755, &sub), 0);
    T_EQ(t_unlink(&t, ROOT, R, "d", true), -ENOTEMPTY);
    T_EQ(t_unlink(&t, ROOT, d, "f", true), -ENOTDIR);
    T_EQ(t_unlink(&t, ROOT, d, "sub", false), -EISDIR);
    T_EQ(t_unlink(&t, ROOT, d, "nope", false), -ENOENT);
    T_EQ(t_unlink(&t, ROOT, d, ".", true), -EINVAL);
    T_EQ(t_unlink(&t, ROOT, d, "..", true), -ENOTEMPTY);
    T_EQ(t_unlink(&t, ROOT, d, "f", false), 0);
    T_EQ(t_getattr(&t, f, NULL), -ENOENT);
    T_EQ(t_unlink(&t, ROOT, d, "sub", true), 0);
    Synod__V1__Attr a;
    T_EQ(t_getattr(&t, d, &a), 0);
    T_EQ(a.nlink, 2);
    T_EQ(t_unlink(&t, ROOT, R, "d", true), 0);
    T_EQ(t_getattr(&t, R, &a), 0);
    T_EQ(a.nlink, 2);
    /* creating inside a removed directory */
    T_EQ(t_mknod(&t, ROOT, d, "x", S_IFREG, NULL), -ENOENT);
    tns_close(&t, false);
}

static void test_unlink_while_open(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t f, fh1, fh2;
    T_EQ(t_create(&t, ROOT, R, "f", 0644, O_RDWR, true, &f, &fh1), 0);
    T_EQ(t_open(&t, ROOT, f, O_RDONLY, &fh2), 0);
    T_EQ(t_unlink(&t, ROOT, R, "f", false), 0);
    Synod__V1__Attr a;
    T_EQ(t_lookup(&t, ROOT, R, "f", NULL), -ENOENT);
    T_EQ(t_getattr(&t, f, &a), 0); /* still there for its handles */
    T_EQ(a.nlink, 0);
    T_EQ(t_release(&t, f, fh1), 0);
    T_EQ(t_release(&t, f, fh1), -EBADF);
    T_EQ(t_getattr(&t, f, NULL), 0);
    T_EQ(t_release(&t, f, fh2), 0);
    T_EQ(t_getattr(&t, f, NULL), -ENOENT);
    /* session expiry drops the handles */
    uint64_t s2 = t_session_open(&t), s1 = t.session;
    t.session = s2;
    T_EQ(t_create(&t, ROOT, R, "g", 0644, O_RDWR, true, &f, &fh1), 0);
    T_EQ(t_open(&t, ROOT, f, O_RDONLY, &fh2), 0);
    T_EQ(t_unlink(&t, ROOT, R, "g", false), 0);
    t.session = s1;
    T_EQ(t_getattr(&t, f, NULL), 0);
    T_EQ(t_session_end(&t, s2, true), 0);
    T_EQ(t_getattr(&t, f, NULL), -ENOENT);
    T_EQ(t_session_end(&t, s2, true), 0); /* idempotent: close, then the runtime's expiry */
    T_EQ(t_session_end(&t, s2, false), 0);
    tns_close(&t, false);
}

/* Memory opens: a file that loses its last name stays as an orphan (n/O) until the leader's OrphanPurge,
 * which never takes one with a logged handle; the leader decides about memory opens (ns_opens). */
static void test_orphans(void)
{
    struct tns t;
    tns_open(&t);
    t.keep_orphans = true;
    uint64_t f, g, h, fh;
    T_EQ(t_mknod(&t, ROOT, R, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_mknod(&t, ROOT, R, "g", S_IFREG | 0644, &g), 0);
    /* a memory open has no handle in the state */
    Synod__V1__OpenReq o = SYNOD__V1__OPEN_REQ__INIT;
    o.rid = tns_rid(&t);
    o.cred = &ROOT->c;
    o.ino = f;
    o.flags = O_RDONLY;
    o.memory = true;
    Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
    cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_OPEN;
    cmd.open = &o;
    ProtobufCMessage *m;
    T_EQ(tns_apply(&t, &cmd, &m), 0);
    T_EQ(((Synod__V1__OpenRep *)m)->fh, 0);
    protobuf_c_message_free_unpacked(m, NULL);
    T_EQ(t_unlink(&t, ROOT, R, "f", false), 0);
    Synod__V1__Attr a;
    T_EQ(t_getattr(&t, f, &a), 0); /* an orphan: still readable by inode */
    T_EQ(a.nlink, 0);
    T_EQ(t_link(&t, ROOT, f, R, "again"), -ENOENT); /* no name comes back */
    T_EQ(t_open(&t, ROOT, f, O_RDONLY, NULL), -ENOENT);
    /* the leader keeps what a session holds */
    T_EQ(t_purge_orphans(&t, &f, 1), 1);
    T_EQ(t_getattr(&t, f, NULL), 0);
    { /* the scan resumes above an inode (the leader's next round) */
        struct kv_txn *txn = kv_txn_begin(t.db);
        uint64_t *inos;
        T_EQ(ns_orphans(txn, f - 1, 10, &inos), 1);
        T_EQU(inos[0], f);
        free(inos);
        T_EQ(ns_orphans(txn, f, 10, &inos), 0);
        free(inos);
        T_EQ(ns_orphans(txn, UINT64_MAX, 10, &inos), 0);
        free(inos);
        kv_txn_abort(txn);
    }
    T_EQ(t_purge_orphans(&t, NULL, 0), 1);
    T_EQ(t_getattr(&t, f, NULL), -ENOENT);
    T_EQ(t_purge_orphans(&t, NULL, 0), 0);
    /* a logged handle holds it through any purge; after its release it is an orphan again */
    T_EQ(t_open(&t, ROOT, g, O_RDONLY, &fh), 0);
    T_EQ(t_rename(&t, ROOT, R, "ng", R, "g", 0), -ENOENT);
    T_EQ(t_mknod(&t, ROOT, R, "h", S_IFREG | 0644, &h), 0);
    T_EQ(t_rename(&t, ROOT, R, "h", R, "g", 0), 0); /* g replaced: no name left */
    T_EQ(t_purge_orphans(&t, NULL, 0), 1);
    T_EQ(t_getattr(&t, g, NULL), 0);
    T_EQ(t_release(&t, g, fh), 0);
    T_EQ(t_getattr(&t, g, NULL), 0);
    T_EQ(t_purge_orphans(&t, NULL, 0), 1);
    T_EQ(t_getattr(&t, g, NULL), -ENOENT);
    /* a hard link keeps it off the orphan list */
    T_EQ(t_link(&t, ROOT, h, R, "h2"), 0);
    T_EQ(t_unlink(&t, ROOT, R, "g", false), 0);
    T_EQ(t_purge_orphans(&t, NULL, 0), 0);
    T_EQ(t_getattr(&t, h, &a), 0);
    T_EQ(a.nlink, 1);
    tns_close(&t, false);
}

static void test_rename(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t a, b, c, f, g, e;
    T_EQ(t_mknod(&t, ROOT, R, "a", S_IFDIR | 0755, &a), 0);
    T_EQ(t_mknod(&t, ROOT, a, "b", S_IFDIR | 0755, &b), 0);
    T_EQ(t_mknod(&t, ROOT, b, "c", S_IFDIR | 0755, &c), 0);
    T_EQ(t_mknod(&t, ROOT, R, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_mknod(&t, ROOT, R, "g", S_IFREG | 0644, &g), 0);
    T_EQ(t_mknod(&t, ROOT, R, "e", S_IFDIR | 0755, &e), 0);
    /* into its own subtree */
    T_EQ(t_rename(&t, ROOT, R, "a", c, "x", 0), -EINVAL);
    T_EQ(t_rename(&t, ROOT, R, "a", a, "x", 0), -EINVAL);
    T_EQ(t_rename(&t, ROOT, a, "b", c, "x", 0), -EINVAL);
    /* type mismatches and non-empty targets */
    T_EQ(t_rename(&t, ROOT, R, "f", R, "e", 0), -EISDIR);
    T_EQ(t_rename(&t, ROOT, R, "e", R, "f", 0), -ENOTDIR);
    T_EQ(t_rename(&t, ROOT, R, "e", R, "a", 0), -ENOTEMPTY);
    T_EQ(t_rename(&t, ROOT, R, "nope", R, "x", 0), -ENOENT);
    T_EQ(t_rename(&t, ROOT, R, "f", R, "g", RN), -EEXIST);
    T_EQ(t_rename(&t, ROOT, R, "f", R, "zz", RX), -ENOENT);
    T_EQ(t_rename(&t, ROOT, R, "f", R, "g", RN | RX), -EINVAL);
    char longname[300];
    memset(longname, 'q', 256);
    longname[256] = 0;
    T_EQ(t_rename(&t, ROOT, R, "f", R, longname, 0), -ENAMETOOLONG);
    /* replace a file */
    Synod__V1__Attr at, before;
    T_EQ(t_getattr(&t, f, &before), 0);
    T_EQ(t_rename(&t, ROOT, R, "f", R, "g", 0), 0);
    T_EQ(t_getattr(&t, g, NULL), -ENOENT);
    T_EQ(t_lookup(&t, ROOT, R, "g", &at), 0);
    T_EQU(at.ino, f);
    T_CHECK(at.ctime_ns > before.ctime_ns);
    T_EQ(t_lookup(&t, ROOT, R, "f", NULL), -ENOENT);
    /* replace an empty directory, across parents: nlinks follow */
    uint64_t e2;
    T_EQ(t_mknod(&t, ROOT, a, "e2", S_IFDIR | 0755, &e2), 0);
    T_EQ(t_rename(&t, ROOT, R, "e", a, "e2", 0), 0);
    T_EQ(t_getattr(&t, e2, NULL), -ENOENT);
    T_EQ(t_getattr(&t, R, &at), 0);
    T_EQ(at.nlink, 3); /* root, ., a */
    T_EQ(t_getattr(&t, a, &at), 0);
    T_EQ(at.nlink, 4); /* a, ., b, e2 */
    T_EQ(t_lookup(&t, ROOT, e, "..", &at), 0);
    T_EQU(at.ino, a);
    /* exchange a file and a directory in different parents */
    T_EQ(t_rename(&t, ROOT, R, "g", a, "b", RX), 0);
    T_EQ(t_lookup(&t, ROOT, R, "g", &at), 0);
    T_EQU(at.ino, b);
    T_EQ(t_lookup(&t, ROOT, a, "b", &at), 0);
    T_EQU(at.ino, f);
    T_EQ(t_lookup(&t, ROOT, b, "..", &at), 0);
    T_EQU(at.ino, R);
    T_EQ(t_getattr(&t, R, &at), 0);
    T_EQ(at.nlink, 4); /* root, ., a, b */
    T_EQ(t_getattr(&t, a, &at), 0);
    T_EQ(at.nlink, 3); /* a, ., e */
    /* exchange into own subtree */
    T_EQ(t_rename(&t, ROOT, R, "g", b, "c", RX), -EINVAL);
    /* rename over a hard link of itself: no-op */
    T_EQ(t_link(&t, ROOT, f, R, "f2"), 0);
    T_EQ(t_rename(&t, ROOT, a, "b", R, "f2", 0), 0);
    T_EQ(t_lookup(&t, ROOT, a, "b", NULL), 0);
    T_EQ(t_rename(&t, ROOT, R, ".", R, "x", 0), -EBUSY);
    tns_close(&t, false);
}

static void test_link_symlink_setattr(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t f, d, s;
    Synod__V1__Attr a, b;
    T_EQ(t_mknod(&t, ROOT, R, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_mknod(&t, ROOT, R, "d", S_IFDIR | 0755, &d), 0);
    T_EQ(t_getattr(&t, f, &b), 0);
    T_EQ(t_link(&t, ROOT, f, d, "h"), 0);
    T_EQ(t_getattr(&t, f, &a), 0);
    T_EQ(a.nlink, 2);
    T_CHECK(a.ctime_ns > b.ctime_ns);
    T_EQ(t_link(&t, ROOT, d, R, "dl"), -EPERM);
    T_EQ(t_link(&t, ROOT, f, d, "h"), -EEXIST);
    T_EQ(t_link(&t, ROOT, f, f, "h"), -ENOTDIR);
    T_EQ(t_unlink(&t, ROOT, R, "f", false), 0);
    T_EQ(t_getattr(&t, f, &a), 0);
    T_EQ(a.nlink, 1);
    T_EQ(t_symlink(&t, ROOT, R, "s", "/some/where", &s), 0);
    char buf[64];
    T_EQ(t_readlink(&t, s, buf, sizeof(buf)), 0);
    T_STREQ(buf, "/some/where");
    T_EQ(t_getattr(&t, s, &a), 0);
    T_EQ(a.mode, S_IFLNK | 0777);
    T_EQ(a.size, 11);
    T_EQ(t_readlink(&t, f, buf, sizeof(buf)), -EINVAL);
    T_EQ(t_symlink(&t, ROOT, R, "s", "x", NULL), -EEXIST);
    T_EQ(t_symlink(&t, ROOT, R, "s2", "", NULL), -ENOENT);
    /* setattr: size, times, mode */
    T_EQ(t_setattr(&t, ROOT, f, SYNOD__V1__SETATTR_VALID__SETATTR_SIZE, 0, 0, 0, 12345, &a), 0);
    T_EQ(a.size, 12345);
    T_EQ(t_setattr(&t, ROOT, d, SYNOD__V1__SETATTR_VALID__SETATTR_SIZE, 0, 0, 0, 1, NULL), -EISDIR);
    T_EQ(t_setattr(&t, ROOT, f, SYNOD__V1__SETATTR_VALID__SETATTR_MODE, 0600, 0, 0, 0, &a), 0);
    T_EQ(a.mode, S_IFREG | 0600);
    T_EQ(t_setattr(&t, ROOT, f, SYNOD__V1__SETATTR_VALID__SETATTR_MTIME_NOW, 0, 0, 0, 0, &b), 0);
    T_CHECK(b.mtime_ns > a.mtime_ns && b.ctime_ns == b.mtime_ns);
    /* O_TRUNC */
    uint64_t fh;
    T_EQ(t_open(&t, ROOT, f, O_WRONLY | O_TRUNC, &fh), 0);
    T_EQ(t_getattr(&t, f, &a), 0);
    T_EQ(a.size, 0);
    T_EQ(t_open(&t, ROOT, d, O_WRONLY, NULL), -EISDIR);
    T_EQ(t_open(&t, ROOT, 424242, O_RDONLY, NULL), -ENOENT);
    tns_close(&t, false);
}

static void test_xattr(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t f;
    char buf[64];
    size_t len, n;
    T_EQ(t_mknod(&t, ROOT, R, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_getxattr(&t, ROOT, f, "user.a", buf, sizeof(buf), &len), -ENODATA);
    T_EQ(t_setxattr(&t, ROOT, f, "user.a", "one", SYNOD__V1__XATTR_FLAGS__XATTR_REPLACE), -ENODATA);
    T_EQ(t_setxattr(&t, ROOT, f, "user.a", "one", SYNOD__V1__XATTR_FLAGS__XATTR_CREATE), 0);
    T_EQ(t_setxattr(&t, ROOT, f, "user.a", "two", SYNOD__V1__XATTR_FLAGS__XATTR_CREATE), -EEXIST);
    T_EQ(t_setxattr(&t, ROOT, f, "user.a", "three", SYNOD__V1__XATTR_FLAGS__XATTR_REPLACE), 0);
    T_EQ(t_setxattr(&t, ROOT, f, "user.b", "", 0), 0);
    T_EQ(t_getxattr(&t, ROOT, f, "user.a", buf, sizeof(buf), &len), 0);
    T_EQ(len, 5);
    T_STREQ(buf, "three");
    T_EQ(t_getxattr(&t, ROOT, f, "user.b", buf, sizeof(buf), &len), 0);
    T_EQ(len, 0);
    T_EQ(t_listxattr(&t, ROOT, f, &n), 0);
    T_EQ(n, 2);
    T_EQ(t_removexattr(&t, ROOT, f, "user.a"), 0);
    T_EQ(t_removexattr(&t, ROOT, f, "user.a"), -ENODATA);
    T_EQ(t_listxattr(&t, ROOT, f, &n), 0);
    T_EQ(n, 1);
    struct tcred u;
    tcred(&u, 1000, 1000, 0);
    T_EQ(t_setxattr(&t, &u, f, "user.c", "x", 0), -EACCES);
    T_EQ(t_setxattr(&t, &u, f, "trusted.c", "x", 0), -EPERM);
    T_EQ(t_getxattr(&t, &u, f, "user.b", buf, sizeof(buf), &len), 0);
    T_EQ(t_setxattr(&t, ROOT, f, "trusted.t", "x", 0), 0);
    T_EQ(t_listxattr(&t, &u, f, &n), 0);
    T_EQ(n, 1); /* trusted.* hidden from users */
    /* purge removes xattrs: no n/x keys left */
    T_EQ(t_unlink(&t, ROOT, R, "f", false), 0);
    size_t before;
    tns_digest(t.db, &before);
    T_EQ(t_mknod(&t, ROOT, R, "f", S_IFREG | 0644, &f), 0);
    tns_close(&t, false);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_readdir_paged(void)
{
    struct tns t;
    tns_open(&t);
    uint64_t d;
    T_EQ(t_mknod(&t, ROOT, R, "big", S_IFDIR | 0755, &d), 0);
    enum { N = 5000 };
    char **names = malloc(N * sizeof(char *));
    tns_begin(&t);
    for (int i = 0; i < N; i++) {
        char nm[32];
        snprintf(nm, sizeof(nm), "file-%05d-%x", (i * 7919) % N, i);
        names[i] = strdup(nm);
        T_EQ(t_mknod(&t, ROOT, d, nm, S_IFREG | 0644, NULL), 0);
        if (i % 500 == 499) {
            tns_commit(&t);
            tns_begin(&t);
        }
    }
    /* some deletions still in the open txn: the merged iterator must hide them */
    T_EQ(t_unlink(&t, ROOT, d, names[0], false), 0);
    T_EQ(t_unlink(&t, ROOT, d, names[N - 1], false), 0);
    qsort(names, N, sizeof(char *), cmp_str);
    char after[64] = "";
    int seen = 0, pages = 0;
    int want_i = 0;
    for (;;) {
        Synod__V1__ReaddirRep *rep;
        T_EQ(t_readdir(&t, ROOT, d, after, 333, pages % 2 == 0, &rep), 0);
        pages++;
        for (size_t i = 0; i < rep->n_entries; i++) {
            /* skip the two deleted names in the expected order */
            while (want_i < N && (!strcmp(names[want_i], "file-00000-0") || 0))
                want_i++;
            (void)0;
            T_CHECK(rep->entries[i]->ino != 0);
            T_EQ(rep->entries[i]->type, S_IFREG);
            if (pages % 2 == 1)
                T_CHECK(rep->entries[i]->attr && rep->entries[i]->attr->ino == rep->entries[i]->ino);
            if (seen > 0)
                T_CHECK(strcmp(after, rep->entries[i]->name) < 0);
            snprintf(after, sizeof(after), "%s", rep->entries[i]->name);
            seen++;
        }
        bool eof = rep->eof;
        synod__v1__readdir_rep__free_unpacked(rep, NULL);
        if (eof)
            break;
    }
    T_EQ(seen, N - 2);
    T_CHECK(pages >= N / 333);
    tns_commit(&t);
    /* permission: readdir needs r */
    struct tcred u;
    tcred(&u, 1000, 1000, 0);
    T_EQ(t_setattr(&t, ROOT, d, SYNOD__V1__SETATTR_VALID__SETATTR_MODE, 0711, 0, 0, 0, NULL), 0);
    Synod__V1__ReaddirRep *rep;
    T_EQ(t_readdir(&t, &u, d, "", 10, false, &rep), -EACCES);
    uint64_t f;
    T_EQ(t_readdir(&t, ROOT, R, "", 10, false, &rep), 0);
    synod__v1__readdir_rep__free_unpacked(rep, NULL);
    T_EQ(t_mknod(&t, ROOT, R, "f", S_IFREG, &f), 0);
    T_EQ(t_readdir(&t, ROOT, f, "", 10, false, &rep), -ENOTDIR);
    for (int i = 0; i < N; i++)
        free(names[i]);
    free(names);
    tns_close(&t, false);
}

static uint64_t fsid_of(struct tns *t)
{
    struct kv_txn *txn = kv_txn_begin(t->db);
    uint64_t id = ns_fsid(txn);
    kv_txn_abort(txn);
    return id;
}

static int apply_init(struct tns *t, uint64_t fsid, uint32_t root_mode)
{
    Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
    Synod__V1__NsInit init = SYNOD__V1__NS_INIT__INIT;
    init.root_mode = root_mode;
    init.default_goal = 5;
    init.fsid = fsid;
    cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_INIT;
    cmd.init = &init;
    return tns_apply(t, &cmd, NULL);
}

/* The file system id: a fresh state takes NsInit's; a state made before it (tns_open's NsInit has none) gets
 * one from a later NsInit, which changes nothing else; after that, NsInit never changes it. */
static void test_init_fsid(void)
{
    struct tns t;
    tns_open(&t);
    T_EQU(fsid_of(&t), 0);
    uint64_t f;
    T_EQ(t_mknod(&t, ROOT, R, "f", S_IFREG, &f), 0);
    Synod__V1__Attr a, b;
    T_EQ(t_getattr(&t, R, &a), 0);
    T_EQ(apply_init(&t, 0x0123456789abcdefull, 0700), 0);
    T_EQU(fsid_of(&t), 0x0123456789abcdefull);
    T_EQ(t_getattr(&t, R, &b), 0); /* the root and its contents are untouched */
    T_EQU(b.mode, a.mode);
    T_EQ(b.mtime_ns, a.mtime_ns);
    T_EQU(b.nlink, a.nlink);
    T_EQ(t_lookup(&t, ROOT, R, "f", &b), 0);
    T_EQU(b.ino, f);
    T_EQ(apply_init(&t, 0x1111, 0755), 0);
    T_EQU(fsid_of(&t), 0x0123456789abcdefull);
    tns_close(&t, false);

    /* a fresh state: NsInit creates the root and sets the id together */
    char tmpl[] = "/tmp/nstest.XXXXXX";
    T_CHECK(mkdtemp(tmpl) != NULL);
    struct tns u;
    memset(&u, 0, sizeof(u));
    snprintf(u.dir, sizeof(u.dir), "%s", tmpl);
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 1);
    char *err = NULL;
    u.db = leveldb_open(o, u.dir, &err);
    T_CHECK(err == NULL);
    leveldb_options_destroy(o);
    u.ns = ns_new();
    u.now = 1700000000LL * 1000000000LL;
    T_EQU(fsid_of(&u), 0);
    T_EQ(apply_init(&u, 0xfeed, 0750), 0);
    T_EQU(fsid_of(&u), 0xfeed);
    T_EQ(t_getattr(&u, R, &a), 0);
    T_EQU(a.mode & 07777, 0750);
    tns_close(&u, false);
}

int main(void)
{
    T_RUN(test_create_lookup_errors);
    T_RUN(test_unlink_rmdir);
    T_RUN(test_unlink_while_open);
    T_RUN(test_orphans);
    T_RUN(test_rename);
    T_RUN(test_link_symlink_setattr);
    T_RUN(test_xattr);
    T_RUN(test_readdir_paged);
    T_RUN(test_init_fsid);
    return 0;
}
