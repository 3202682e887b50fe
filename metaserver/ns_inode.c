/* ns_inode.c - the POSIX namespace operations of the state machine: lookup, getattr/setattr, create
 * (mknod/mkdir/create+open), unlink/rmdir, rename (NOREPLACE, EXCHANGE), link, symlink, readdir pages,
 * xattrs, open/release references and goals.
 *
 * POSIX rules follow Linux: permission checks with uid/gid/supplementary groups (root bypasses rwx but exec
 * needs an x bit), sticky directories, setgid directories (gid and, for directories, the bit inherited),
 * chmod/chown ownership rules with setuid/setgid clearing, and the ctime/mtime/atime updates of each call,
 * with "now" the leader's time in the command. Hot paths (create, lookup, getattr) are a handful of point
 * reads and writes; only rmdir (one seek for emptiness), readdir and purges scan.
 */
#include <fcntl.h>
#include <stdlib.h>

#include "metaserver/ns_internal.h"

#define NS_LINK_MAX 65000u

/* A name for a new entry. */
static int check_new_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || strchr(name, '/'))
        return -EINVAL;
    if (len > NS_NAME_MAX)
        return -ENAMETOOLONG;
    if (!strcmp(name, ".") || !strcmp(name, ".."))
        return -EEXIST;
    return 0;
}

/* A name to look up or remove. */
static int check_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0)
        return -ENOENT;
    if (strchr(name, '/'))
        return -EINVAL;
    if (len > NS_NAME_MAX)
        return -ENAMETOOLONG;
    return 0;
}

static int dir_get(struct ns_ctx *c, uint64_t ino, struct inode **out)
{
    int rc = ino_get(c, ino, out);
    if (rc)
        return rc;
    if (!S_ISDIR((*out)->mode))
        return -ENOTDIR;
    if ((*out)->nlink == 0)
        return -ENOENT;
    return 0;
}

/* The entry n; with its directory d as the change left it when d is not NULL (EntryRep.parent_attr). */
static void reply_entry(struct ns_ctx *c, const struct inode *n, const struct inode *d)
{
    Synod__V1__Attr a, pa;
    attr_fill(&a, n);
    Synod__V1__EntryRep rep = SYNOD__V1__ENTRY_REP__INIT;
    rep.attr = &a;
    if (d) {
        attr_fill(&pa, d);
        rep.parent_attr = &pa;
    }
    reply_msg(c, &rep.base);
}

/* Unlink, Rename: the directories as the change left them (d2 only when it is another directory). */
static void reply_dirs(struct ns_ctx *c, const struct inode *d, const struct inode *d2)
{
    Synod__V1__Attr a, a2;
    attr_fill(&a, d);
    Synod__V1__DirChangeRep rep = SYNOD__V1__DIR_CHANGE_REP__INIT;
    rep.parent_attr = &a;
    if (d2 && d2 != d) {
        attr_fill(&a2, d2);
        rep.new_parent_attr = &a2;
    }
    reply_msg(c, &rep.base);
}

static void reply_attr(struct ns_ctx *c, const struct inode *n)
{
    Synod__V1__Attr a;
    attr_fill(&a, n);
    Synod__V1__AttrRep rep = SYNOD__V1__ATTR_REP__INIT;
    rep.attr = &a;
    reply_msg(c, &rep.base);
}

static void touch_mc(struct ns_ctx *c, struct inode *n)
{
    n->mtime = n->ctime = c->now;
    ino_dirty(n);
}

static void touch_c(struct ns_ctx *c, struct inode *n)
{
    n->ctime = c->now;
    ino_dirty(n);
}

int op_lookup(struct ns_ctx *c, const Synod__V1__LookupReq *r)
{
    struct inode *d, *n;
    int rc = dir_get(c, r->parent, &d);
    if (rc)
        return rc;
    if ((rc = check_name(r->name)))
        return rc;
    if ((rc = may_access(c->cred, d, MAY_X)))
        return rc;
    uint64_t ino;
    if (!strcmp(r->name, "."))
        ino = d->ino;
    else if (!strcmp(r->name, ".."))
        ino = d->parent;
    else if ((rc = dirent_get(c, d->ino, r->name, &ino, NULL)))
        return rc;
    if ((rc = ino_get(c, ino, &n)))
        return rc;
    reply_entry(c, n, NULL);
    return 0;
}

int op_getattr(struct ns_ctx *c, const Synod__V1__GetattrReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    reply_attr(c, n);
    return 0;
}

/* Allocate and link a new inode under d. */
static struct inode *new_inode(struct ns_ctx *c, struct inode *d, uint32_t mode)
{
    Synod__V1__NsCounters *ctr = ctr_get(c);
    struct inode *n = ino_new(c, ctr->next_ino++);
    n->generation = ctr->next_generation++;
    ctr->inodes++;
    ctr_dirty(c);
    n->mode = mode;
    n->uid = cred_uid(c->cred);
    n->gid = cred_gid(c->cred);
    if (d->mode & S_ISGID) {
        n->gid = d->gid;
        if (S_ISDIR(mode))
            n->mode |= S_ISGID;
    }
    /* a setgid bit on a new non-directory survives only for members of its group (Linux) */
    if (!S_ISDIR(n->mode) && (n->mode & S_ISGID) && !cred_in_group(c->cred, n->gid) && !cred_is_root(c->cred))
        n->mode &= ~(uint32_t)S_ISGID;
    n->nlink = S_ISDIR(mode) ? 2 : 1;
    n->atime = n->mtime = n->ctime = c->now;
    n->goal = d->goal;
    n->parent = S_ISDIR(mode) ? d->ino : 0;
    if (S_ISDIR(mode)) {
        d->nlink++;
    }
    touch_mc(c, d);
    return n;
}

/* Allocate an open handle of this session on n. */
static uint64_t handle_new(struct ns_ctx *c, struct inode *n)
{
    Synod__V1__NsCounters *ctr = ctr_get(c);
    uint64_t fh = ctr->next_fh++;
    ctr_dirty(c);
    struct nkey k;
    nk_init(&k, 'o');
    nk_u64(&k, c->session);
    nk_u64(&k, fh);
    uint8_t v[8];
    put_be64(v, n->ino);
    nk_put(c, &k, v, 8);
    n->opens++;
    ino_dirty(n);
    return fh;
}

/* Linux opens a file for execve with __FMODE_EXEC (0x20, an internal bit no O_* flag uses) in f_flags, and
 * FUSE forwards it in the open flags: exec needs x permission (root: some x bit), not only r. */
#define NS_OPEN_EXEC 0x20

/* Permission part of open(2) for flags on an existing inode. */
static int open_check(struct ns_ctx *c, struct inode *n, uint32_t flags)
{
    int acc = (int)(flags & O_ACCMODE);
    int want = acc == O_RDONLY ? MAY_R : acc == O_WRONLY ? MAY_W : (MAY_R | MAY_W);
    if (flags & O_TRUNC)
        want |= MAY_W;
    if (flags & NS_OPEN_EXEC)
        want |= MAY_X;
    if (S_ISDIR(n->mode) && (want & MAY_W))
        return -EISDIR;
    if (S_ISLNK(n->mode))
        return -ELOOP;
    return may_access(c->cred, n, want);
}

static void do_truncate(struct ns_ctx *c, struct inode *n, uint64_t size)
{
    if (size < n->size && n->has_chunks) {
        chunks_drop_from(c, n, (size + NS_CHUNK_SIZE - 1) / NS_CHUNK_SIZE);
        if (size % NS_CHUNK_SIZE)
            chunk_clamp_extent(c, n, size);
    }
    n->size = size;
    /* Growing adds a hole (no storage); shrinking can only free some. */
    n->blocks = MIN(n->blocks, (size + 511) / 512);
    touch_mc(c, n);
}

static void reply_create(struct ns_ctx *c, const struct inode *n, const struct inode *d, uint64_t fh, bool existed)
{
    Synod__V1__Attr a, pa;
    attr_fill(&a, n);
    attr_fill(&pa, d);
    Synod__V1__CreateRep rep = SYNOD__V1__CREATE_REP__INIT;
    rep.attr = &a;
    rep.parent_attr = &pa;
    rep.fh = fh;
    rep.existed = existed;
    reply_msg(c, &rep.base);
}

int op_mknod(struct ns_ctx *c, const Synod__V1__MknodReq *r)
{
    struct inode *d, *n;
    int rc = dir_get(c, r->parent, &d);
    if (rc)
        return rc;
    if ((rc = check_new_name(r->name)))
        return rc;
    uint32_t type = r->mode & S_IFMT;
    if (type == 0)
        type = S_IFREG;
    if (type != S_IFREG && type != S_IFDIR && type != S_IFCHR && type != S_IFBLK && type != S_IFIFO &&
        type != S_IFSOCK)
        return -EINVAL;
    if (r->open && type != S_IFREG)
        return -EINVAL;
    uint64_t ino;
    if (dirent_get(c, d->ino, r->name, &ino, NULL) == 0) {
        if (!r->open || r->exclusive)
            return -EEXIST;
        /* O_CREAT without O_EXCL on an existing name: open it */
        if ((rc = may_access(c->cred, d, MAY_X)))
            return rc;
        if ((rc = ino_get(c, ino, &n)))
            return rc;
        if ((rc = open_check(c, n, r->open_flags)))
            return rc;
        if ((r->open_flags & O_TRUNC) && S_ISREG(n->mode))
            do_truncate(c, n, 0);
        uint64_t fh = r->memory ? 0 : handle_new(c, n); /* memory: the leader registers it (ns_opens) */
        reply_create(c, n, d, fh, true);
        return 0;
    }
    if ((rc = may_access(c->cred, d, MAY_W | MAY_X)))
        return rc;
    if ((type == S_IFCHR || type == S_IFBLK) && !cred_is_root(c->cred))
        return -EPERM; /* device nodes need CAP_MKNOD, as in vfs_mknod */
    uint32_t umask = c->cred ? c->cred->umask : 0;
    n = new_inode(c, d, type | (r->mode & 07777 & ~umask));
    if (type == S_IFCHR || type == S_IFBLK)
        n->rdev = r->rdev;
    dirent_put(c, d->ino, r->name, n->ino, n->mode);
    uint64_t fh = r->open && !r->memory ? handle_new(c, n) : 0;
    reply_create(c, n, d, fh, false);
    return 0;
}

int op_symlink(struct ns_ctx *c, const Synod__V1__SymlinkReq *r)
{
    struct inode *d, *n;
    int rc = dir_get(c, r->parent, &d);
    if (rc)
        return rc;
    if ((rc = check_new_name(r->name)))
        return rc;
    size_t tlen = strlen(r->target);
    if (tlen == 0)
        return -ENOENT;
    if (tlen > NS_SYMLINK_MAX)
        return -ENAMETOOLONG;
    uint64_t ino;
    if (dirent_get(c, d->ino, r->name, &ino, NULL) == 0)
        return -EEXIST;
    if ((rc = may_access(c->cred, d, MAY_W | MAY_X)))
        return rc;
    n = new_inode(c, d, S_IFLNK | 0777);
    n->target = xstrdup(r->target);
    n->tlen = tlen;
    n->size = tlen;
    dirent_put(c, d->ino, r->name, n->ino, n->mode);
    reply_entry(c, n, d);
    return 0;
}

int op_readlink(struct ns_ctx *c, const Synod__V1__ReadlinkReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    if (!S_ISLNK(n->mode))
        return -EINVAL;
    Synod__V1__ReadlinkRep rep = SYNOD__V1__READLINK_REP__INIT;
    rep.target = n->target ? n->target : "";
    reply_msg(c, &rep.base);
    return 0;
}

int op_link(struct ns_ctx *c, const Synod__V1__LinkReq *r)
{
    struct inode *d, *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    if ((rc = dir_get(c, r->new_parent, &d)))
        return rc;
    if ((rc = check_new_name(r->new_name)))
        return rc;
    if (S_ISDIR(n->mode))
        return -EPERM;
    if (n->nlink == 0)
        return -ENOENT;
    if (n->nlink >= NS_LINK_MAX)
        return -EMLINK;
    uint64_t ino;
    if (dirent_get(c, d->ino, r->new_name, &ino, NULL) == 0)
        return -EEXIST;
    if ((rc = may_access(c->cred, d, MAY_W | MAY_X)))
        return rc;
    n->nlink++;
    touch_c(c, n);
    touch_mc(c, d);
    dirent_put(c, d->ino, r->new_name, n->ino, n->mode);
    reply_entry(c, n, d);
    return 0;
}

/* Drop one name's reference to n (already removed from its directory d). */
static void unref_name(struct ns_ctx *c, struct inode *d, struct inode *n)
{
    if (S_ISDIR(n->mode)) {
        d->nlink--;
        n->nlink = 0;
        ino_purge(c, n);
        return;
    }
    n->nlink--;
    touch_c(c, n);
    if (n->nlink == 0)
        orphan_add(c, n); /* purged by the leader once nobody holds it open (memory opens are not here) */
}

int op_unlink(struct ns_ctx *c, const Synod__V1__UnlinkReq *r)
{
    struct inode *d, *n;
    int rc = dir_get(c, r->parent, &d);
    if (rc)
        return rc;
    if (!strcmp(r->name, "."))
        return r->is_dir ? -EINVAL : -EISDIR;
    if (!strcmp(r->name, ".."))
        return r->is_dir ? -ENOTEMPTY : -EISDIR;
    if ((rc = check_name(r->name)))
        return rc;
    uint64_t ino;
    if ((rc = dirent_get(c, d->ino, r->name, &ino, NULL)))
        return rc;
    if ((rc = ino_get(c, ino, &n)))
        return rc;
    if ((rc = may_access(c->cred, d, MAY_W | MAY_X)))
        return rc;
    if ((rc = sticky_check(c->cred, d, n)))
        return rc;
    if (r->is_dir && !S_ISDIR(n->mode))
        return -ENOTDIR;
    if (!r->is_dir && S_ISDIR(n->mode))
        return -EISDIR;
    if (S_ISDIR(n->mode) && !dir_is_empty(c, n->ino))
        return -ENOTEMPTY;
    dirent_del(c, d->ino, r->name);
    touch_mc(c, d);
    unref_name(c, d, n);
    reply_dirs(c, d, NULL);
    return 0;
}

/* Is `anc` an ancestor of (or equal to) directory `ino`? Walks the parent chain up to the root. */
static bool is_ancestor(struct ns_ctx *c, uint64_t anc, uint64_t ino)
{
    for (int depth = 0; depth < 100000; depth++) {
        if (ino == anc)
            return true;
        if (ino == NS_ROOT_INO)
            return false;
        struct nkey k;
        nk_init(&k, 'i');
        nk_u64(&k, ino);
        Synod__V1__InodeRec *rec =
            (Synod__V1__InodeRec *)nk_get_msg(c, &k, &synod__v1__inode_rec__descriptor);
        if (!rec)
            return false;
        uint64_t p = rec->parent;
        protobuf_c_message_free_unpacked(&rec->base, NULL);
        /* the cache may hold a newer parent (not the case within rename's checks, which run first) */
        ino = p;
    }
    PANIC("namespace: parent chain loop above inode %llu", (unsigned long long)ino);
}

int op_rename(struct ns_ctx *c, const Synod__V1__RenameReq *r)
{
    struct inode *sd, *dd, *sn, *dn = NULL;
    int rc;
    if (r->flags & ~(uint32_t)(SYNOD__V1__RENAME_FLAGS__RENAME_NOREPLACE | SYNOD__V1__RENAME_FLAGS__RENAME_EXCHANGE))
        return -EINVAL;
    bool exchange = r->flags & SYNOD__V1__RENAME_FLAGS__RENAME_EXCHANGE;
    bool noreplace = r->flags & SYNOD__V1__RENAME_FLAGS__RENAME_NOREPLACE;
    if (exchange && noreplace)
        return -EINVAL;
    if ((rc = dir_get(c, r->parent, &sd)) || (rc = dir_get(c, r->new_parent, &dd)))
        return rc;
    if (!strcmp(r->name, ".") || !strcmp(r->name, "..") || !strcmp(r->new_name, ".") ||
        !strcmp(r->new_name, ".."))
        return -EBUSY;
    if ((rc = check_name(r->name)))
        return rc;
    if ((rc = check_new_name(r->new_name)))
        return rc;
    uint64_t sino, dino;
    if ((rc = dirent_get(c, sd->ino, r->name, &sino, NULL)))
        return rc;
    bool dexists = dirent_get(c, dd->ino, r->new_name, &dino, NULL) == 0;
    if ((rc = may_access(c->cred, sd, MAY_W | MAY_X)) || (rc = may_access(c->cred, dd, MAY_W | MAY_X)))
        return rc;
    if ((rc = ino_get(c, sino, &sn)))
        return rc;
    if (exchange && !dexists)
        return -ENOENT;
    if (noreplace && dexists)
        return -EEXIST;
    if (dexists && (rc = ino_get(c, dino, &dn)))
        return rc;
    if ((rc = sticky_check(c->cred, sd, sn)))
        return rc;
    if (dn && (rc = sticky_check(c->cred, dd, dn)))
        return rc;
    if (dexists && dino == sino) {
        reply_dirs(c, sd, dd); /* two names of one file: POSIX says do nothing */
        return 0;
    }
    bool sdir = S_ISDIR(sn->mode), ddir = dn && S_ISDIR(dn->mode);
    /* moving a directory to another parent rewrites its "..": needs write permission on it */
    if (sd != dd) {
        if (sdir && (rc = may_access(c->cred, sn, MAY_W)))
            return rc;
        if (exchange && ddir && (rc = may_access(c->cred, dn, MAY_W)))
            return rc;
    }
    /* no directory may move into its own subtree */
    if (sdir && sd != dd && is_ancestor(c, sn->ino, dd->ino))
        return -EINVAL;
    if (exchange && ddir && sd != dd && is_ancestor(c, dn->ino, sd->ino))
        return -EINVAL;
    if (dn && !exchange) {
        if (sdir && !ddir)
            return -ENOTDIR;
        if (!sdir && ddir)
            return -EISDIR;
        if (ddir && !dir_is_empty(c, dn->ino))
            return -ENOTEMPTY;
    }
    /* all checks passed: write */
    if (exchange) {
        dirent_put(c, sd->ino, r->name, dn->ino, dn->mode);
        dirent_put(c, dd->ino, r->new_name, sn->ino, sn->mode);
        if (sd != dd) {
            if (sdir) {
                sn->parent = dd->ino;
                sd->nlink--;
                dd->nlink++;
            }
            if (ddir) {
                dn->parent = sd->ino;
                dd->nlink--;
                sd->nlink++;
            }
        }
        touch_c(c, dn);
    } else {
        dirent_del(c, sd->ino, r->name);
        if (dn)
            unref_name(c, dd, dn);
        dirent_put(c, dd->ino, r->new_name, sn->ino, sn->mode);
        if (sdir && sd != dd) {
            sn->parent = dd->ino;
            sd->nlink--;
            dd->nlink++;
        }
    }
    touch_c(c, sn);
    touch_mc(c, sd);
    touch_mc(c, dd);
    reply_dirs(c, sd, dd);
    return 0;
}

int op_setattr(struct ns_ctx *c, const Synod__V1__SetattrReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    const Synod__V1__Cred *cr = c->cred;
    bool root = cred_is_root(cr), owner = root || cred_uid(cr) == n->uid;
    uint32_t v = r->valid;
    uint32_t mode = n->mode;
    /* validate everything first */
    if ((v & SYNOD__V1__SETATTR_VALID__SETATTR_MODE) && !owner)
        return -EPERM;
    bool is_owner = !root && cred_uid(cr) == n->uid; /* owner without privilege */
    if ((v & SYNOD__V1__SETATTR_VALID__SETATTR_UID) && !root && !(is_owner && r->uid == n->uid))
        return -EPERM;
    if ((v & SYNOD__V1__SETATTR_VALID__SETATTR_GID) && !root &&
        !(is_owner && (r->gid == n->gid || cred_in_group(cr, r->gid))))
        return -EPERM;
    if (v & SYNOD__V1__SETATTR_VALID__SETATTR_SIZE) {
        if (S_ISDIR(n->mode))
            return -EISDIR;
        if (!S_ISREG(n->mode))
            return -EINVAL;
        if (r->size > (uint64_t)INT64_MAX)
            return -EFBIG;
        if ((rc = may_access(cr, n, MAY_W)))
            return rc;
    }
    if (v & (SYNOD__V1__SETATTR_VALID__SETATTR_ATIME | SYNOD__V1__SETATTR_VALID__SETATTR_MTIME |
             SYNOD__V1__SETATTR_VALID__SETATTR_CTIME)) {
        if (!owner)
            return -EPERM;
    }
    if (v & (SYNOD__V1__SETATTR_VALID__SETATTR_ATIME_NOW | SYNOD__V1__SETATTR_VALID__SETATTR_MTIME_NOW)) {
        if (!owner && may_access(cr, n, MAY_W))
            return -EACCES;
    }
    /* apply */
    if (v & SYNOD__V1__SETATTR_VALID__SETATTR_MODE) {
        mode = (n->mode & S_IFMT) | (r->mode & 07777);
        if (!root && !cred_in_group(cr, n->gid))
            mode &= ~(uint32_t)S_ISGID;
    }
    bool chown = false;
    if ((v & SYNOD__V1__SETATTR_VALID__SETATTR_UID) && r->uid != n->uid) {
        n->uid = r->uid;
        chown = true;
    }
    if ((v & SYNOD__V1__SETATTR_VALID__SETATTR_GID) && r->gid != n->gid) {
        n->gid = r->gid;
        chown = true;
    }
    if ((v & (SYNOD__V1__SETATTR_VALID__SETATTR_UID | SYNOD__V1__SETATTR_VALID__SETATTR_GID)) &&
        !S_ISDIR(n->mode) && (chown || !root)) {
        /* chown clears setuid, and setgid when group-exec is set (Linux) */
        mode &= ~(uint32_t)S_ISUID;
        if (mode & S_IXGRP)
            mode &= ~(uint32_t)S_ISGID;
    }
    if ((v & SYNOD__V1__SETATTR_VALID__SETATTR_SIZE)) {
        if (!root) {
            mode &= ~(uint32_t)S_ISUID;
            if (mode & S_IXGRP)
                mode &= ~(uint32_t)S_ISGID;
        }
        do_truncate(c, n, r->size);
    }
    n->mode = mode;
    if (v & SYNOD__V1__SETATTR_VALID__SETATTR_ATIME_NOW)
        n->atime = c->now;
    else if (v & SYNOD__V1__SETATTR_VALID__SETATTR_ATIME)
        n->atime = r->atime_ns;
    if (v & SYNOD__V1__SETATTR_VALID__SETATTR_MTIME_NOW)
        n->mtime = c->now;
    else if (v & SYNOD__V1__SETATTR_VALID__SETATTR_MTIME)
        n->mtime = r->mtime_ns;
    n->ctime = (v & SYNOD__V1__SETATTR_VALID__SETATTR_CTIME) ? r->ctime_ns : c->now;
    ino_dirty(n);
    reply_attr(c, n);
    return 0;
}

int op_readdir(struct ns_ctx *c, const Synod__V1__ReaddirReq *r)
{
    struct inode *d;
    int rc = ino_get(c, r->ino, &d);
    if (rc)
        return rc;
    if (!S_ISDIR(d->mode))
        return -ENOTDIR;
    if ((rc = may_access(c->cred, d, MAY_R)))
        return rc;
    size_t max = r->max_entries ? MIN(r->max_entries, (uint32_t)NS_READDIR_MAX) : 1024;
    struct nkey start, end;
    nk_init(&start, 'd');
    nk_u64(&start, d->ino);
    end = start;
    nk_u64(&end, 0);
    put_be64(end.b + 3, d->ino + 1);
    end.len = 11;
    size_t alen = strlen(r->after);
    if (alen) {
        if (alen > NS_NAME_MAX)
            return -ENAMETOOLONG;
        nk_bytes(&start, r->after, alen);
        nk_u8(&start, 0); /* the smallest key after `after` */
    }
    Synod__V1__ReaddirRep rep = SYNOD__V1__READDIR_REP__INIT;
    Synod__V1__Dirent *ents = xcalloc(max, sizeof(*ents));
    Synod__V1__Dirent **ptrs = xcalloc(max, sizeof(*ptrs));
    Synod__V1__Attr *attrs = r->plus ? xcalloc(max, sizeof(*attrs)) : NULL;
    struct kv_iter *it = kv_iter_new(c->txn, start.b, start.len, end.b, end.len);
    size_t n = 0;
    for (; kv_iter_valid(it) && n < max; kv_iter_next(it)) {
        size_t kl, vl;
        const char *k = kv_iter_key(it, &kl);
        const char *v = kv_iter_value(it, &vl);
        Synod__V1__Dirent *e = &ents[n];
        synod__v1__dirent__init(e);
        e->name = xstrndup(k + 11, kl - 11);
        e->ino = get_be64(v);
        e->type = (uint32_t)(uint8_t)v[8] << 12;
        if (attrs) {
            struct nkey ik;
            nk_init(&ik, 'i');
            nk_u64(&ik, e->ino);
            Synod__V1__InodeRec *ir =
                (Synod__V1__InodeRec *)nk_get_msg(c, &ik, &synod__v1__inode_rec__descriptor);
            ASSERT(ir);
            struct inode tmp = {.ino = e->ino, .mode = ir->mode, .uid = ir->uid, .gid = ir->gid,
                                .nlink = ir->nlink, .size = ir->size, .rdev = ir->rdev,
                                .atime = ir->atime_ns, .mtime = ir->mtime_ns, .ctime = ir->ctime_ns,
                                .generation = ir->generation, .goal = ir->goal, .blocks = ir->blocks};
            attr_fill(&attrs[n], &tmp);
            e->attr = &attrs[n];
            protobuf_c_message_free_unpacked(&ir->base, NULL);
        }
        ptrs[n] = e;
        n++;
    }
    rep.eof = !kv_iter_valid(it);
    kv_iter_free(it);
    rep.entries = ptrs;
    rep.n_entries = n;
    reply_msg(c, &rep.base);
    for (size_t i = 0; i < n; i++)
        free(ents[i].name);
    free(ents);
    free(ptrs);
    free(attrs);
    return 0;
}

/* --- xattrs ------------------------------------------------------------------------------------------- */

static void xattr_key(struct nkey *k, uint64_t ino, const char *name)
{
    nk_init(k, 'x');
    nk_u64(k, ino);
    nk_bytes(k, name, strlen(name));
}

/* Namespace rules: user.* only on files and directories; trusted.* root only; others allowed. */
static int xattr_access(struct ns_ctx *c, const struct inode *n, const char *name, bool write)
{
    size_t len = strlen(name);
    if (len == 0)
        return -EINVAL;
    if (len > NS_XATTR_NAME_MAX)
        return -ERANGE;
    if (!strncmp(name, "trusted.", 8) && !cred_is_root(c->cred))
        return write ? -EPERM : -ENODATA;
    if (!strncmp(name, "user.", 5)) {
        if (!S_ISREG(n->mode) && !S_ISDIR(n->mode))
            return write ? -EPERM : -ENODATA;
        return may_access(c->cred, n, write ? MAY_W : MAY_R);
    }
    if (write && !cred_is_root(c->cred) && cred_uid(c->cred) != n->uid)
        return -EPERM;
    return 0;
}

int op_setxattr(struct ns_ctx *c, const Synod__V1__SetxattrReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    if ((rc = xattr_access(c, n, r->name, true)))
        return rc;
    if (r->value.len > NS_XATTR_VALUE_MAX)
        return -E2BIG;
    if (r->flags & ~(uint32_t)3 || r->flags == 3)
        return -EINVAL;
    struct nkey k;
    xattr_key(&k, n->ino, r->name);
    bool exists = nk_get(c, &k, NULL, NULL) == 0;
    if ((r->flags & SYNOD__V1__XATTR_FLAGS__XATTR_CREATE) && exists)
        return -EEXIST;
    if ((r->flags & SYNOD__V1__XATTR_FLAGS__XATTR_REPLACE) && !exists)
        return -ENODATA;
    nk_put(c, &k, r->value.data, r->value.len);
    n->has_xattrs = true;
    touch_c(c, n);
    reply_empty(c);
    return 0;
}

int op_getxattr(struct ns_ctx *c, const Synod__V1__GetxattrReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    if ((rc = xattr_access(c, n, r->name, false)))
        return rc;
    struct nkey k;
    xattr_key(&k, n->ino, r->name);
    char *v;
    size_t vl;
    if (nk_get(c, &k, &v, &vl) < 0)
        return -ENODATA;
    Synod__V1__GetxattrRep rep = SYNOD__V1__GETXATTR_REP__INIT;
    rep.value.data = (uint8_t *)v;
    rep.value.len = vl;
    reply_msg(c, &rep.base);
    free(v);
    return 0;
}

int op_listxattr(struct ns_ctx *c, const Synod__V1__ListxattrReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    Synod__V1__ListxattrRep rep = SYNOD__V1__LISTXATTR_REP__INIT;
    size_t cap = 0;
    if (n->has_xattrs) {
        struct nkey p;
        nk_init(&p, 'x');
        nk_u64(&p, n->ino);
        struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
        for (; kv_iter_valid(it); kv_iter_next(it)) {
            size_t kl;
            const char *k = kv_iter_key(it, &kl);
            char *name = xstrndup(k + 11, kl - 11);
            if (!strncmp(name, "trusted.", 8) && !cred_is_root(c->cred)) {
                free(name);
                continue;
            }
            if (rep.n_names == cap) {
                cap = cap ? cap * 2 : 8;
                rep.names = xrealloc(rep.names, cap * sizeof(char *));
            }
            rep.names[rep.n_names++] = name;
        }
        kv_iter_free(it);
    }
    reply_msg(c, &rep.base);
    for (size_t i = 0; i < rep.n_names; i++)
        free(rep.names[i]);
    free(rep.names);
    return 0;
}

int op_removexattr(struct ns_ctx *c, const Synod__V1__RemovexattrReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    if ((rc = xattr_access(c, n, r->name, true)))
        return rc;
    struct nkey k;
    xattr_key(&k, n->ino, r->name);
    if (nk_get(c, &k, NULL, NULL) < 0)
        return -ENODATA;
    nk_del(c, &k);
    touch_c(c, n);
    reply_empty(c);
    return 0;
}

/* --- open / release ----------------------------------------------------------------------------------- */

int op_open(struct ns_ctx *c, const Synod__V1__OpenReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    /* no name left: only a holder may open it again (/proc/PID/fd/N): a logged handle, or a memory open
     * of this session that the leader vouches for (held) */
    if (n->nlink == 0 && !n->opens && !(r->memory && r->held))
        return -ENOENT;
    if ((rc = open_check(c, n, r->flags)))
        return rc;
    if ((r->flags & O_TRUNC) && S_ISREG(n->mode))
        do_truncate(c, n, 0);
    /* memory: no handle here; the leader holds the open in its memory (ns_opens), through the log only
     * when O_TRUNC makes it a change */
    uint64_t fh = r->memory ? 0 : handle_new(c, n);
    Synod__V1__Attr a;
    attr_fill(&a, n);
    Synod__V1__OpenRep rep = SYNOD__V1__OPEN_REP__INIT;
    rep.fh = fh;
    rep.attr = &a;
    Synod__V1__ChunkLoc *locs = NULL;
    if (r->locations && S_ISREG(n->mode)) { /* a reader's first ChunkLocations, saved */
        rep.located = MIN(r->locations, 16u);
        rep.n_chunks = chunk_locs_get(c, n, 0, rep.located, &locs, &rep.chunks);
    }
    reply_msg(c, &rep.base);
    if (locs)
        chunk_locs_free(locs, rep.chunks, rep.n_chunks);
    return 0;
}

int op_release(struct ns_ctx *c, const Synod__V1__ReleaseReq *r)
{
    struct nkey k;
    nk_init(&k, 'o');
    nk_u64(&k, c->session);
    nk_u64(&k, r->fh);
    char *v;
    size_t vl;
    if (nk_get(c, &k, &v, &vl) < 0)
        return -EBADF;
    uint64_t ino = get_be64(v);
    free(v);
    if (r->ino && r->ino != ino)
        return -EBADF;
    nk_del(c, &k);
    open_ref_drop(c, ino);
    reply_empty(c);
    return 0;
}

/* --- goals -------------------------------------------------------------------------------------------- */

static uint64_t goal_set_one(struct ns_ctx *c, uint64_t ino, uint32_t goal)
{
    struct inode *n;
    if (ino_get(c, ino, &n))
        return 0;
    uint64_t changed = 0;
    if (n->goal != goal) {
        n->goal = goal;
        touch_c(c, n);
        if (n->has_chunks)
            chunks_set_goal(c, n);
        changed = 1;
    }
    return changed;
}

int op_set_goal(struct ns_ctx *c, const Synod__V1__SetGoalReq *r)
{
    struct inode *n;
    int rc = ino_get(c, r->ino, &n);
    if (rc)
        return rc;
    if (r->goal < 1 || r->goal > NS_MAX_GOAL)
        return -EINVAL;
    if (!cred_is_root(c->cred) && cred_uid(c->cred) != n->uid)
        return -EPERM;
    uint64_t changed = goal_set_one(c, n->ino, r->goal);
    if (r->recursive && S_ISDIR(n->mode)) {
        /* breadth-first over the subtree; children are updated through direct record writes so the
         * per-command inode cache stays small */
        size_t cap = 64, head = 0, tail = 0;
        uint64_t *q = xmalloc(cap * sizeof(*q));
        q[tail++] = n->ino;
        while (head < tail) {
            uint64_t dir = q[head++];
            struct nkey p;
            nk_init(&p, 'd');
            nk_u64(&p, dir);
            struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
            for (; kv_iter_valid(it); kv_iter_next(it)) {
                size_t vl;
                const char *v = kv_iter_value(it, &vl);
                uint64_t child = get_be64(v);
                uint32_t type = (uint32_t)(uint8_t)v[8] << 12;
                struct nkey ik;
                nk_init(&ik, 'i');
                nk_u64(&ik, child);
                Synod__V1__InodeRec *ir =
                    (Synod__V1__InodeRec *)nk_get_msg(c, &ik, &synod__v1__inode_rec__descriptor);
                ASSERT(ir);
                if (ir->goal != r->goal) {
                    ir->goal = r->goal;
                    ir->ctime_ns = c->now;
                    nk_put_msg(c, &ik, &ir->base);
                    changed++;
                    if (ir->has_chunks) {
                        struct inode tmp = {.ino = child, .goal = r->goal};
                        chunks_set_goal(c, &tmp);
                    }
                }
                protobuf_c_message_free_unpacked(&ir->base, NULL);
                if (S_ISDIR(type)) {
                    if (tail == cap) {
                        cap *= 2;
                        q = xrealloc(q, cap * sizeof(*q));
                    }
                    q[tail++] = child;
                }
            }
            kv_iter_free(it);
        }
        free(q);
    }
    Synod__V1__SetGoalRep rep = SYNOD__V1__SET_GOAL_REP__INIT;
    rep.changed = changed;
    reply_msg(c, &rep.base);
    return 0;
}
