/* test_ns_perms.c - POSIX permissions as root and as unprivileged users with supplementary groups, sticky
 * and setgid directories, chmod/chown rules and setuid/setgid clearing. */
#include <fcntl.h>
#include <sys/stat.h>

#include "ns_testutil.h"
#include "tests/test.h"

#define R NS_ROOT_INO
#define V(x) SYNOD__V1__SETATTR_VALID__SETATTR_##x

static void test_rwx(void)
{
    struct tns t;
    tns_open(&t);
    struct tcred alice, bob, carol;
    tcred(&alice, 1000, 1000, 0);
    tcred(&bob, 1001, 1001, 2, 500u, 1000u); /* bob is in alice's group */
    tcred(&carol, 1002, 1002, 1, 500u);
    uint64_t d, f, x;
    T_EQ(t_mknod(&t, ROOT, R, "d", S_IFDIR | 0755, &d), 0);
    T_EQ(t_mknod(&t, &alice, d, "a", S_IFREG | 0644, NULL), -EACCES); /* no w on d */
    T_EQ(t_setattr(&t, ROOT, d, V(UID) | V(GID), 0, 1000, 1000, 0, NULL), 0);
    T_EQ(t_setattr(&t, ROOT, d, V(MODE), 0770, 0, 0, 0, NULL), 0);
    T_EQ(t_mknod(&t, &alice, d, "a", S_IFREG | 0640, &f), 0);
    Synod__V1__Attr a;
    T_EQ(t_getattr(&t, f, &a), 0);
    T_EQ(a.uid, 1000);
    T_EQ(a.gid, 1000);
    T_EQ(t_mknod(&t, &bob, d, "b", S_IFREG | 0600, NULL), 0);   /* group rwx via supplementary group */
    T_EQ(t_mknod(&t, &carol, d, "c", S_IFREG | 0600, NULL), -EACCES);
    T_EQ(t_lookup(&t, &carol, d, "a", NULL), -EACCES);           /* no x for others */
    T_EQ(t_lookup(&t, &bob, d, "a", NULL), 0);
    T_EQ(t_open(&t, &bob, f, O_RDONLY, NULL), 0);                /* group r */
    T_EQ(t_open(&t, &bob, f, O_WRONLY, NULL), -EACCES);
    T_EQ(t_open(&t, &alice, f, O_RDWR, NULL), 0);
    T_EQ(t_open(&t, ROOT, f, O_RDWR, NULL), 0);                  /* root bypasses rw */
    /* owner bits win even if group would allow more */
    T_EQ(t_setattr(&t, &alice, f, V(MODE), 0070, 0, 0, 0, NULL), 0);
    T_EQ(t_open(&t, &alice, f, O_RDONLY, NULL), -EACCES);
    T_EQ(t_open(&t, &bob, f, O_RDWR, NULL), 0);
    /* root: exec needs an x bit somewhere (lookup in a dir without x is fine for root) */
    T_EQ(t_mknod(&t, ROOT, R, "nx", S_IFDIR | 0000, &x), 0);
    T_EQ(t_mknod(&t, ROOT, x, "in", S_IFREG, NULL), 0);
    T_EQ(t_lookup(&t, ROOT, x, "in", NULL), 0);
    T_EQ(t_lookup(&t, &alice, x, "in", NULL), -EACCES);
    /* unlink needs w+x on the directory */
    T_EQ(t_unlink(&t, &carol, d, "a", false), -EACCES);
    T_EQ(t_unlink(&t, &bob, d, "a", false), 0);
    tns_close(&t, false);
}

static void test_sticky(void)
{
    struct tns t;
    tns_open(&t);
    struct tcred alice, bob, owner;
    tcred(&alice, 1000, 1000, 0);
    tcred(&bob, 1001, 1001, 0);
    tcred(&owner, 1002, 1002, 0);
    uint64_t tmp, fa, db;
    T_EQ(t_mknod(&t, ROOT, R, "tmp", S_IFDIR | 01777, &tmp), 0);
    T_EQ(t_setattr(&t, ROOT, tmp, V(UID), 0, 1002, 0, 0, NULL), 0);
    T_EQ(t_mknod(&t, &alice, tmp, "fa", S_IFREG | 0666, &fa), 0);
    T_EQ(t_mknod(&t, &bob, tmp, "db", S_IFDIR | 0777, &db), 0);
    T_EQ(t_unlink(&t, &bob, tmp, "fa", false), -EPERM);
    T_EQ(t_rename(&t, &bob, tmp, "fa", tmp, "x", 0), -EPERM);
    T_EQ(t_rename(&t, &alice, tmp, "fa", tmp, "db", 0), -EPERM); /* target owned by bob */
    T_EQ(t_unlink(&t, &alice, tmp, "db", true), -EPERM);
    T_EQ(t_rename(&t, &alice, tmp, "fa", tmp, "fa2", 0), 0);       /* own file */
    T_EQ(t_unlink(&t, &owner, tmp, "fa2", false), 0);              /* directory owner */
    T_EQ(t_unlink(&t, ROOT, tmp, "db", true), 0);                  /* root */
    tns_close(&t, false);
}

static void test_setgid_dir(void)
{
    struct tns t;
    tns_open(&t);
    struct tcred alice;
    tcred(&alice, 1000, 1000, 1, 2000u);
    uint64_t d, f, sub;
    T_EQ(t_mknod(&t, ROOT, R, "proj", S_IFDIR | 02777, &d), 0);
    T_EQ(t_setattr(&t, ROOT, d, V(GID), 0, 0, 3000, 0, NULL), 0);
    Synod__V1__Attr a;
    T_EQ(t_getattr(&t, d, &a), 0);
    T_EQ(a.mode, S_IFDIR | 02777);
    T_EQ(t_mknod(&t, &alice, d, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_getattr(&t, f, &a), 0);
    T_EQ(a.gid, 3000);
    T_EQ(a.mode & 02000, 0);
    T_EQ(t_mknod(&t, &alice, d, "sub", S_IFDIR | 0755, &sub), 0);
    T_EQ(t_getattr(&t, sub, &a), 0);
    T_EQ(a.gid, 3000);
    T_EQ(a.mode, S_IFDIR | 02755); /* subdirectories inherit the bit */
    /* a setgid file in a group the creator is not in loses the bit */
    T_EQ(t_mknod(&t, &alice, d, "g", S_IFREG | 02755, &f), 0);
    T_EQ(t_getattr(&t, f, &a), 0);
    T_EQ(a.mode & 02000, 0);
    tns_close(&t, false);
}

static void test_chmod_chown(void)
{
    struct tns t;
    tns_open(&t);
    struct tcred alice, bob;
    tcred(&alice, 1000, 1000, 1, 2000u);
    tcred(&bob, 1001, 1001, 0);
    uint64_t d, f;
    Synod__V1__Attr a;
    T_EQ(t_mknod(&t, ROOT, R, "d", S_IFDIR | 0777, &d), 0);
    T_EQ(t_mknod(&t, &alice, d, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_setattr(&t, &bob, f, V(MODE), 0777, 0, 0, 0, NULL), -EPERM);      /* chmod by non-owner */
    T_EQ(t_setattr(&t, &alice, f, V(UID), 0, 1001, 0, 0, NULL), -EPERM);     /* only root changes uid */
    T_EQ(t_setattr(&t, &alice, f, V(UID), 0, 1000, 0, 0, NULL), 0);          /* no-op chown by owner */
    T_EQ(t_setattr(&t, &alice, f, V(GID), 0, 0, 3000, 0, NULL), -EPERM);     /* not a member */
    T_EQ(t_setattr(&t, &alice, f, V(GID), 0, 0, 2000, 0, &a), 0);            /* member of 2000 */
    T_EQ(a.gid, 2000);
    T_EQ(t_setattr(&t, &bob, f, V(GID), 0, 0, 1001, 0, NULL), -EPERM);       /* not the owner */
    T_EQ(t_setattr(&t, ROOT, f, V(UID), 0, 1001, 0, 0, &a), 0);
    T_EQ(a.uid, 1001);
    /* setuid/setgid cleared by chown and by truncate from a non-root writer */
    T_EQ(t_setattr(&t, ROOT, f, V(MODE), 06777, 0, 0, 0, &a), 0);
    T_EQ(a.mode, S_IFREG | 06777);
    T_EQ(t_setattr(&t, ROOT, f, V(UID), 0, 1000, 0, 0, &a), 0);
    T_EQ(a.mode, S_IFREG | 0777);
    T_EQ(t_setattr(&t, ROOT, f, V(MODE), 06777, 0, 0, 0, &a), 0);
    T_EQ(t_setattr(&t, &bob, f, V(SIZE), 0, 0, 0, 10, &a), 0);
    T_EQ(a.mode, S_IFREG | 0777);
    /* chmod g+s by an owner outside the file's group drops the bit */
    T_EQ(t_setattr(&t, ROOT, f, V(GID), 0, 0, 4000, 0, NULL), 0);
    T_EQ(t_setattr(&t, &alice, f, V(MODE), 02755, 0, 0, 0, &a), 0);
    T_EQ(a.mode, S_IFREG | 0755);
    /* times: explicit needs owner, NOW needs owner or write access */
    T_EQ(t_setattr(&t, &bob, f, V(MTIME), 0, 0, 0, 0, NULL), -EPERM);
    T_EQ(t_setattr(&t, &bob, f, V(MTIME_NOW), 0, 0, 0, 0, NULL), -EACCES);
    T_EQ(t_setattr(&t, &alice, f, V(MODE), 0666, 0, 0, 0, NULL), 0);
    T_EQ(t_setattr(&t, &bob, f, V(MTIME_NOW) | V(ATIME_NOW), 0, 0, 0, 0, NULL), 0);
    T_EQ(t_setattr(&t, &bob, f, V(SIZE), 0, 0, 0, 0, NULL), 0);
    T_EQ(t_setattr(&t, &alice, f, V(MODE), 0644, 0, 0, 0, NULL), 0);
    T_EQ(t_setattr(&t, &bob, f, V(SIZE), 0, 0, 0, 0, NULL), -EACCES);
    /* moving a directory to another parent needs write on it (its ".." changes) */
    uint64_t sub, other;
    T_EQ(t_mknod(&t, &alice, d, "sub", S_IFDIR | 0555, &sub), 0);
    T_EQ(t_mknod(&t, &alice, d, "other", S_IFDIR | 0777, &other), 0);
    T_EQ(t_rename(&t, &alice, d, "sub", other, "sub", 0), -EACCES);
    T_EQ(t_rename(&t, &alice, d, "sub", d, "sub2", 0), 0);
    tns_close(&t, false);
}

int main(void)
{
    T_RUN(test_rwx);
    T_RUN(test_sticky);
    T_RUN(test_setgid_dir);
    T_RUN(test_chmod_chown);
    return 0;
}
