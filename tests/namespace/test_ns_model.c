/* test_ns_model.c - the namespace state machine against a simple in-memory reference model (a tree of
 * nodes), driven by seeded random operation sequences: mknod, mkdir, unlink, rmdir, rename (plain,
 * NOREPLACE, EXCHANGE), link, symlink, chmod, truncate and lookup, as root and as an unprivileged user,
 * in directories with varied modes including sticky ones. Every result (errno and inode) is compared, and
 * at the end the whole tree (readdir of every directory, attributes of every inode). Commands are applied
 * in batches sharing one transaction, as Paxos entries are. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "common/util.h"
#include "ns_testutil.h"
#include "tests/test.h"

#define MAXN 40000
#define NNAMES 5
static const char *NAMES[NNAMES] = {"a", "b", "c", "dd", "e"};

struct mnode {
    bool live;
    uint32_t mode, uid, gid, nlink;
    uint64_t parent, size;
    uint64_t child[NNAMES]; /* dirs: ino per name, 0 = none */
};

static struct mnode *M;
static uint64_t known[MAXN];
static size_t nknown;

static int name_idx(const char *n)
{
    for (int i = 0; i < NNAMES; i++)
        if (!strcmp(NAMES[i], n))
            return i;
    return -1;
}

static bool m_root(const struct tcred *c)
{
    return c->c.uid == 0;
}

static bool m_ingroup(const struct tcred *c, uint32_t g)
{
    if (c->c.gid == g)
        return true;
    for (size_t i = 0; i < c->c.n_groups; i++)
        if (c->c.groups[i] == g)
            return true;
    return false;
}

static int m_may(const struct tcred *c, const struct mnode *n, int want)
{
    if (m_root(c))
        return ((want & 1) && !S_ISDIR(n->mode) && !(n->mode & 0111)) ? -EACCES : 0;
    uint32_t bits = c->c.uid == n->uid ? (n->mode >> 6) & 7 : m_ingroup(c, n->gid) ? (n->mode >> 3) & 7 : n->mode & 7;
    return ((uint32_t)want & ~bits) ? -EACCES : 0;
}

static int m_sticky(const struct tcred *c, const struct mnode *d, const struct mnode *v)
{
    if (!(d->mode & S_ISVTX) || m_root(c) || c->c.uid == d->uid || c->c.uid == v->uid)
        return 0;
    return -EPERM;
}

static int m_dir(uint64_t ino)
{
    if (ino >= MAXN || !M[ino].live)
        return -ENOENT;
    if (!S_ISDIR(M[ino].mode))
        return -ENOTDIR;
    return 0;
}

static bool m_empty(uint64_t d)
{
    for (int i = 0; i < NNAMES; i++)
        if (M[d].child[i])
            return false;
    return true;
}

static void m_unref(uint64_t d, uint64_t n)
{
    if (S_ISDIR(M[n].mode)) {
        M[d].nlink--;
        M[n].live = false;
        return;
    }
    if (--M[n].nlink == 0)
        M[n].live = false;
}

static bool m_ancestor(uint64_t anc, uint64_t ino)
{
    for (;;) {
        if (ino == anc)
            return true;
        if (ino == NS_ROOT_INO)
            return false;
        ino = M[ino].parent;
    }
}

static void m_new(uint64_t ino, uint64_t d, uint32_t mode, const struct tcred *c)
{
    T_CHECK(ino < MAXN && !M[ino].live);
    memset(&M[ino], 0, sizeof(M[ino]));
    M[ino].live = true;
    M[ino].mode = mode;
    M[ino].uid = c->c.uid;
    M[ino].gid = c->c.gid;
    M[ino].nlink = S_ISDIR(mode) ? 2 : 1;
    M[ino].parent = S_ISDIR(mode) ? d : 0;
    if (S_ISDIR(mode))
        M[d].nlink++;
    known[nknown++] = ino;
}

/* model of mknod/mkdir/symlink: expected errno */
static int m_create_check(const struct tcred *c, uint64_t d, int ni)
{
    int rc = m_dir(d);
    if (rc)
        return rc;
    if (M[d].child[ni])
        return -EEXIST;
    return m_may(c, &M[d], 3);
}

static int m_unlink(const struct tcred *c, uint64_t d, int ni, bool is_dir)
{
    int rc = m_dir(d);
    if (rc)
        return rc;
    uint64_t n = M[d].child[ni];
    if (!n)
        return -ENOENT;
    if ((rc = m_may(c, &M[d], 3)) || (rc = m_sticky(c, &M[d], &M[n])))
        return rc;
    if (is_dir && !S_ISDIR(M[n].mode))
        return -ENOTDIR;
    if (!is_dir && S_ISDIR(M[n].mode))
        return -EISDIR;
    if (S_ISDIR(M[n].mode) && !m_empty(n))
        return -ENOTEMPTY;
    M[d].child[ni] = 0;
    m_unref(d, n);
    return 0;
}

static int m_rename(const struct tcred *c, uint64_t sd, int si, uint64_t dd, int di, uint32_t flags)
{
    bool ex = flags & 2, nr = flags & 1;
    int rc;
    if ((rc = m_dir(sd)) || (rc = m_dir(dd)))
        return rc;
    uint64_t sn = M[sd].child[si], dn = M[dd].child[di];
    if (!sn)
        return -ENOENT;
    if ((rc = m_may(c, &M[sd], 3)) || (rc = m_may(c, &M[dd], 3)))
        return rc;
    if (ex && !dn)
        return -ENOENT;
    if (nr && dn)
        return -EEXIST;
    if ((rc = m_sticky(c, &M[sd], &M[sn])))
        return rc;
    if (dn && (rc = m_sticky(c, &M[dd], &M[dn])))
        return rc;
    if (dn == sn)
        return 0;
    bool sdir = S_ISDIR(M[sn].mode), ddir = dn && S_ISDIR(M[dn].mode);
    if (sd != dd) {
        if (sdir && (rc = m_may(c, &M[sn], 2)))
            return rc;
        if (ex && ddir && (rc = m_may(c, &M[dn], 2)))
            return rc;
    }
    if (sdir && sd != dd && m_ancestor(sn, dd))
        return -EINVAL;
    if (ex && ddir && sd != dd && m_ancestor(dn, sd))
        return -EINVAL;
    if (dn && !ex) {
        if (sdir && !ddir)
            return -ENOTDIR;
        if (!sdir && ddir)
            return -EISDIR;
        if (ddir && !m_empty(dn))
            return -ENOTEMPTY;
    }
    if (ex) {
        M[sd].child[si] = dn;
        M[dd].child[di] = sn;
        if (sd != dd) {
            if (sdir) {
                M[sn].parent = dd;
                M[sd].nlink--;
                M[dd].nlink++;
            }
            if (ddir) {
                M[dn].parent = sd;
                M[dd].nlink--;
                M[sd].nlink++;
            }
        }
    } else {
        M[sd].child[si] = 0;
        if (dn)
            m_unref(dd, dn);
        M[dd].child[di] = sn;
        if (sdir && sd != dd) {
            M[sn].parent = dd;
            M[sd].nlink--;
            M[dd].nlink++;
        }
    }
    return 0;
}

static int m_link(const struct tcred *c, uint64_t ino, uint64_t d, int ni)
{
    int rc;
    if (ino >= MAXN || !M[ino].live)
        return -ENOENT;
    if ((rc = m_dir(d)))
        return rc;
    if (S_ISDIR(M[ino].mode))
        return -EPERM;
    if (M[d].child[ni])
        return -EEXIST;
    if ((rc = m_may(c, &M[d], 3)))
        return rc;
    M[ino].nlink++;
    M[d].child[ni] = ino;
    return 0;
}

static uint64_t pick(uint64_t *rng)
{
    if (util_rand_next(rng) % 8 == 0)
        return NS_ROOT_INO;
    /* prefer live directories, sometimes anything known */
    for (int tries = 0; tries < 8; tries++) {
        uint64_t ino = known[util_rand_next(rng) % nknown];
        if (util_rand_next(rng) % 10 == 0 || (M[ino].live && S_ISDIR(M[ino].mode)))
            return ino;
    }
    return known[util_rand_next(rng) % nknown];
}

static void compare_tree(struct tns *t)
{
    for (size_t k = 0; k < nknown; k++) {
        uint64_t ino = known[k];
        Synod__V1__Attr a;
        int rc = t_getattr(t, ino, &a);
        if (!M[ino].live) {
            T_EQ(rc, -ENOENT);
            continue;
        }
        T_EQ(rc, 0);
        T_EQ(a.mode, M[ino].mode);
        T_EQ(a.nlink, M[ino].nlink);
        T_EQ(a.uid, M[ino].uid);
        T_EQ(a.gid, M[ino].gid);
        if (S_ISREG(M[ino].mode))
            T_EQU(a.size, M[ino].size);
        if (!S_ISDIR(M[ino].mode))
            continue;
        Synod__V1__ReaddirRep *rep;
        T_EQ(t_readdir(t, ROOT, ino, "", 0, false, &rep), 0);
        size_t want = 0;
        for (int i = 0; i < NNAMES; i++)
            want += M[ino].child[i] != 0;
        T_EQ(rep->n_entries, want);
        T_CHECK(rep->eof);
        for (size_t i = 0; i < rep->n_entries; i++) {
            int ni = name_idx(rep->entries[i]->name);
            T_CHECK(ni >= 0);
            T_EQU(rep->entries[i]->ino, M[ino].child[ni]);
        }
        synod__v1__readdir_rep__free_unpacked(rep, NULL);
        Synod__V1__Attr pa;
        T_EQ(t_lookup(t, ROOT, ino, "..", &pa), 0);
        T_EQU(pa.ino, M[ino].parent);
    }
}

static void run(uint64_t seed, int nops)
{
    struct tns t;
    tns_open(&t);
    memset(M, 0, MAXN * sizeof(*M));
    nknown = 0;
    M[NS_ROOT_INO] = (struct mnode){.live = true, .mode = S_IFDIR | 0777, .nlink = 2, .parent = NS_ROOT_INO};
    known[nknown++] = NS_ROOT_INO;
    T_EQ(t_setattr(&t, ROOT, NS_ROOT_INO, SYNOD__V1__SETATTR_VALID__SETATTR_MODE, 0777, 0, 0, 0, NULL), 0);
    struct tcred user;
    tcred(&user, 1000, 1000, 1, 2000u);
    static const uint32_t dmodes[] = {0755, 0777, 01777, 0700, 0775};
    uint64_t rng = seed;
    int counts[10] = {0}, oks = 0;
    tns_begin(&t);
    for (int op = 0; op < nops; op++) {
        if (op % 50 == 49) { /* an entry boundary */
            tns_commit(&t);
            tns_begin(&t);
        }
        struct tcred *c = util_rand_next(&rng) % 3 == 0 ? ROOT : &user;
        uint64_t d = pick(&rng), d2 = pick(&rng);
        int ni = (int)(util_rand_next(&rng) % NNAMES), ni2 = (int)(util_rand_next(&rng) % NNAMES);
        int kind = (int)(util_rand_next(&rng) % 100);
        int want, got;
        uint64_t ino = 0;
        if (kind < 20) {
            want = m_create_check(c, d, ni);
            got = t_mknod(&t, c, d, NAMES[ni], S_IFREG | 0644, &ino);
            if (!want && !got) {
                m_new(ino, d, S_IFREG | 0644, c);
                M[d].child[ni] = ino;
            }
            counts[0]++;
        } else if (kind < 35) {
            uint32_t m = S_IFDIR | dmodes[util_rand_next(&rng) % ARRAY_SIZE(dmodes)];
            want = m_create_check(c, d, ni);
            got = t_mknod(&t, c, d, NAMES[ni], m, &ino);
            if (!want && !got) {
                m_new(ino, d, m, c);
                M[d].child[ni] = ino;
            }
            counts[1]++;
        } else if (kind < 47) {
            want = m_unlink(c, d, ni, false);
            got = t_unlink(&t, c, d, NAMES[ni], false);
            counts[2]++;
        } else if (kind < 55) {
            want = m_unlink(c, d, ni, true);
            got = t_unlink(&t, c, d, NAMES[ni], true);
            counts[3]++;
        } else if (kind < 75) {
            uint32_t fl = util_rand_next(&rng) % 4 == 0 ? (uint32_t)(1 + util_rand_next(&rng) % 2) : 0;
            want = m_rename(c, d, ni, d2, ni2, fl);
            got = t_rename(&t, c, d, NAMES[ni], d2, NAMES[ni2], fl);
            counts[4]++;
        } else if (kind < 83) {
            uint64_t src = known[util_rand_next(&rng) % nknown];
            want = m_link(c, src, d, ni);
            got = t_link(&t, c, src, d, NAMES[ni]);
            counts[5]++;
        } else if (kind < 88) {
            want = m_create_check(c, d, ni);
            got = t_symlink(&t, c, d, NAMES[ni], "target", &ino);
            if (!want && !got) {
                m_new(ino, d, S_IFLNK | 0777, c);
                M[ino].size = 6;
                M[d].child[ni] = ino;
            }
            counts[6]++;
        } else if (kind < 94) {
            uint64_t n = known[util_rand_next(&rng) % nknown];
            uint64_t size = util_rand_next(&rng) % 1000000;
            if (!M[n].live)
                want = -ENOENT;
            else if (S_ISDIR(M[n].mode))
                want = -EISDIR;
            else if (!S_ISREG(M[n].mode))
                want = -EINVAL;
            else
                want = m_may(c, &M[n], 2);
            got = t_setattr(&t, c, n, SYNOD__V1__SETATTR_VALID__SETATTR_SIZE, 0, 0, 0, size, NULL);
            if (!want && !got)
                M[n].size = size;
            counts[7]++;
        } else if (kind < 97) {
            uint64_t n = known[util_rand_next(&rng) % nknown];
            uint32_t mode = S_ISDIR(M[n].mode) ? dmodes[util_rand_next(&rng) % ARRAY_SIZE(dmodes)] : 0644;
            want = !M[n].live ? -ENOENT : (!m_root(c) && c->c.uid != M[n].uid) ? -EPERM : 0;
            got = t_setattr(&t, c, n, SYNOD__V1__SETATTR_VALID__SETATTR_MODE, mode, 0, 0, 0, NULL);
            if (!want && !got)
                M[n].mode = (M[n].mode & S_IFMT) | mode;
            counts[8]++;
        } else {
            int rc = m_dir(d);
            want = rc ? rc : m_may(c, &M[d], 1) ? -EACCES : M[d].child[ni] ? 0 : -ENOENT;
            Synod__V1__Attr a;
            got = t_lookup(&t, c, d, NAMES[ni], &a);
            if (!want && !got)
                T_EQU(a.ino, M[d].child[ni]);
            counts[9]++;
        }
        if (want != got)
            T_FAIL("seed %llu op %d kind %d: model %s, state machine %s", (unsigned long long)seed, op, kind,
                   strerror(-want), strerror(-got));
        oks += got == 0;
    }
    tns_commit(&t);
    compare_tree(&t);
    fprintf(stderr, "seed %llu: %d ops (%d ok), %zu inodes; mk %d mkdir %d unlink %d rmdir %d rename %d link %d "
                    "symlink %d trunc %d chmod %d lookup %d\n",
            (unsigned long long)seed, nops, oks, nknown, counts[0], counts[1], counts[2], counts[3], counts[4],
            counts[5], counts[6], counts[7], counts[8], counts[9]);
    tns_close(&t, false);
}

int main(int argc, char **argv)
{
    M = calloc(MAXN, sizeof(*M));
    int nops = argc > 1 ? atoi(argv[1]) : 6000;
    for (uint64_t seed = 1; seed <= 4; seed++)
        run(seed * 0x9E3779B97F4A7C15ull, nops);
    free(M);
    return 0;
}
