/* ns_core.c - the namespace state machine's apply loop: dispatch, session release, the per-command inode
 * cache and record codecs, POSIX permission helpers, snapshot/restore.
 *
 * Sessions and exactly-once belong to the rsm runtime (metaserver/rsm.h): it keeps the reply of every
 * (session, seq) and never applies a retried command twice, and it expires sessions through the log. The
 * namespace keeps only what a session holds (open handles, locks, write leases) and releases it on
 * SessionClose / SessionExpire or ns_session_release.
 *
 * A command runs in a struct ns_ctx. Inodes are decoded once per command into a small cache (so aliasing
 * roles such as "parent" and "new parent" share one copy) and written back only when the command succeeds;
 * the counters record likewise. See namespace.h for the contract and the key layout.
 */
#include <stdlib.h>

#include "common/log.h"
#include "metaserver/ns_internal.h"

struct ns {
    int unused;
};

struct ns *ns_new(void)
{
    return xcalloc(1, sizeof(struct ns));
}

void ns_free(struct ns *ns)
{
    free(ns);
}

/* --- kv wrappers -------------------------------------------------------------------------------------- */

int nk_get(struct ns_ctx *c, const struct nkey *k, char **val, size_t *vlen)
{
    int rc = kv_get(c->txn, k->b, k->len, val, vlen);
    if (rc == -EIO)
        PANIC("namespace: database read failed during apply");
    return rc;
}

void nk_put(struct ns_ctx *c, const struct nkey *k, const void *val, size_t vlen)
{
    kv_put(c->txn, k->b, k->len, val, vlen);
}

void nk_put_msg(struct ns_ctx *c, const struct nkey *k, const ProtobufCMessage *m)
{
    uint8_t stackbuf[512];
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = n <= sizeof(stackbuf) ? stackbuf : xmalloc(n);
    protobuf_c_message_pack(m, buf);
    kv_put(c->txn, k->b, k->len, buf, n);
    if (buf != stackbuf)
        free(buf);
}

void nk_del(struct ns_ctx *c, const struct nkey *k)
{
    kv_del(c->txn, k->b, k->len);
}

ProtobufCMessage *nk_get_msg(struct ns_ctx *c, const struct nkey *k, const ProtobufCMessageDescriptor *d)
{
    char *v;
    size_t vl;
    if (nk_get(c, k, &v, &vl) < 0)
        return NULL;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, vl, (uint8_t *)v);
    if (!m)
        PANIC("namespace: corrupt %s record", d->name);
    free(v);
    return m;
}

ProtobufCMessage *iter_msg(const struct kv_iter *it, const ProtobufCMessageDescriptor *d)
{
    size_t vl;
    const char *v = kv_iter_value(it, &vl);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, vl, (const uint8_t *)v);
    if (!m)
        PANIC("namespace: corrupt %s record", d->name);
    return m;
}

/* --- counters ----------------------------------------------------------------------------------------- */

Synod__V1__NsCounters *ctr_get(struct ns_ctx *c)
{
    if (!c->ctr) {
        struct nkey k;
        nk_init(&k, 'c');
        c->ctr = (Synod__V1__NsCounters *)nk_get_msg(c, &k, &synod__v1__ns_counters__descriptor);
        if (!c->ctr) {
            /* a fresh database that never got NsInit: defaults */
            c->ctr = xmalloc(sizeof(*c->ctr));
            synod__v1__ns_counters__init(c->ctr);
            c->ctr->next_ino = NS_ROOT_INO + 1;
            c->ctr->next_chunk_id = 1;
            c->ctr->next_session = 1;
            c->ctr->next_cs = 1;
            c->ctr->next_fh = 1;
            c->ctr->next_generation = 1;
            c->ctr->default_goal = 3;
            c->ctr->heartbeat_ms = 1000;
            c->ctr->lease_ms = 60000;
            c->ctr->unknown_chunk_grace_ns = 600 * (int64_t)1000000000;
            c->ctr->max_repl_per_cs = 2;
            c->ctr_dirty = true;
        }
    }
    return c->ctr;
}

void ctr_dirty(struct ns_ctx *c)
{
    c->ctr_dirty = true;
}

/* --- inodes ------------------------------------------------------------------------------------------- */

static void inode_free(struct inode *n)
{
    if (n) {
        free(n->target);
        free(n);
    }
}

static void inode_encode(struct ns_ctx *c, const struct inode *n)
{
    Synod__V1__InodeRec r = SYNOD__V1__INODE_REC__INIT;
    r.mode = n->mode; r.uid = n->uid; r.gid = n->gid; r.nlink = n->nlink;
    r.size = n->size; r.rdev = n->rdev;
    r.atime_ns = n->atime; r.mtime_ns = n->mtime; r.ctime_ns = n->ctime;
    r.generation = n->generation; r.goal = n->goal; r.parent = n->parent; r.opens = n->opens;
    r.has_xattrs = n->has_xattrs; r.has_chunks = n->has_chunks;
    r.target.data = (uint8_t *)n->target;
    r.target.len = n->tlen;
    r.blocks = n->blocks;
    struct nkey k;
    nk_init(&k, 'i');
    nk_u64(&k, n->ino);
    nk_put_msg(c, &k, &r.base);
}

int ino_get(struct ns_ctx *c, uint64_t ino, struct inode **out)
{
    for (int i = 0; i < c->nic; i++) {
        if (c->ic[i]->ino == ino) {
            if (c->ic[i]->deleted)
                return -ENOENT;
            *out = c->ic[i];
            return 0;
        }
    }
    struct nkey k;
    nk_init(&k, 'i');
    nk_u64(&k, ino);
    Synod__V1__InodeRec *r = (Synod__V1__InodeRec *)nk_get_msg(c, &k, &synod__v1__inode_rec__descriptor);
    if (!r)
        return -ENOENT;
    ASSERT(c->nic < NS_ICACHE);
    struct inode *n = xcalloc(1, sizeof(*n));
    n->ino = ino;
    n->mode = r->mode; n->uid = r->uid; n->gid = r->gid; n->nlink = r->nlink;
    n->size = r->size; n->rdev = r->rdev;
    n->atime = r->atime_ns; n->mtime = r->mtime_ns; n->ctime = r->ctime_ns;
    n->generation = r->generation; n->goal = r->goal; n->parent = r->parent; n->opens = r->opens;
    n->has_xattrs = r->has_xattrs; n->has_chunks = r->has_chunks;
    if (r->target.len) {
        n->target = xstrndup((const char *)r->target.data, r->target.len);
        n->tlen = r->target.len;
    }
    n->blocks = r->blocks;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    c->ic[c->nic++] = n;
    *out = n;
    return 0;
}

struct inode *ino_new(struct ns_ctx *c, uint64_t ino)
{
    ASSERT(c->nic < NS_ICACHE);
    struct inode *n = xcalloc(1, sizeof(*n));
    n->ino = ino;
    n->dirty = true;
    c->ic[c->nic++] = n;
    return n;
}

void ino_dirty(struct inode *n)
{
    n->dirty = true;
}

void attr_fill(Synod__V1__Attr *a, const struct inode *n)
{
    synod__v1__attr__init(a);
    a->ino = n->ino; a->mode = n->mode; a->nlink = n->nlink; a->uid = n->uid; a->gid = n->gid;
    a->size = n->size; a->rdev = n->rdev;
    a->atime_ns = n->atime; a->mtime_ns = n->mtime; a->ctime_ns = n->ctime;
    a->generation = n->generation; a->goal = n->goal; a->blocks = n->blocks;
}

/* Delete every key under a prefix (purge paths only, never hot). */
static void del_prefix(struct ns_ctx *c, const struct nkey *p)
{
    struct kv_iter *it = kv_iter_prefix(c->txn, p->b, p->len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl;
        const char *k = kv_iter_key(it, &kl);
        kv_del(c->txn, k, kl);
    }
    kv_iter_free(it);
}

void ino_purge(struct ns_ctx *c, struct inode *n)
{
    struct nkey k;
    if (n->has_xattrs) {
        nk_init(&k, 'x');
        nk_u64(&k, n->ino);
        del_prefix(c, &k);
    }
    if (n->has_chunks)
        chunks_drop_from(c, n, 0);
    locks_drop_inode(c, n->ino);
    if (!S_ISDIR(n->mode)) {
        nk_init(&k, 'O');
        nk_u64(&k, n->ino);
        nk_del(c, &k);
    }
    n->deleted = true;
    Synod__V1__NsCounters *ctr = ctr_get(c);
    if (ctr->inodes)
        ctr->inodes--;
    ctr_dirty(c);
}

/* Write back (on success) and free the command's cached state. */
void ctx_finish(struct ns_ctx *c, bool ok)
{
    for (int i = 0; i < c->nic; i++) {
        struct inode *n = c->ic[i];
        if (ok && n->deleted) {
            struct nkey k;
            nk_init(&k, 'i');
            nk_u64(&k, n->ino);
            nk_del(c, &k);
        } else if (ok && n->dirty) {
            inode_encode(c, n);
        }
        inode_free(n);
    }
    c->nic = 0;
    if (c->ctr) {
        if (ok && c->ctr_dirty) {
            struct nkey k;
            nk_init(&k, 'c');
            nk_put_msg(c, &k, &c->ctr->base);
        }
        protobuf_c_message_free_unpacked(&c->ctr->base, NULL);
        c->ctr = NULL;
    }
}

/* --- dirents ------------------------------------------------------------------------------------------ */

static void dirent_key(struct nkey *k, uint64_t parent, const char *name)
{
    nk_init(k, 'd');
    nk_u64(k, parent);
    nk_bytes(k, name, strlen(name));
}

int dirent_get(struct ns_ctx *c, uint64_t parent, const char *name, uint64_t *ino, uint32_t *type)
{
    struct nkey k;
    dirent_key(&k, parent, name);
    char *v;
    size_t vl;
    if (nk_get(c, &k, &v, &vl) < 0)
        return -ENOENT;
    ASSERT(vl == 9);
    *ino = get_be64(v);
    if (type)
        *type = (uint32_t)(uint8_t)v[8] << 12;
    free(v);
    return 0;
}

/* The status counters of directory entries: `delta` entries of type `type` (S_IF*). */
static void dirent_count(struct ns_ctx *c, uint32_t type, int delta)
{
    Synod__V1__NsCounters *ctr = ctr_get(c);
    if (!ctr->counted)
        return;
    uint64_t *n = type == S_IFDIR ? &ctr->dirs : &ctr->files;
    *n += (uint64_t)(int64_t)delta;
    ctr_dirty(c);
}

void dirent_put(struct ns_ctx *c, uint64_t parent, const char *name, uint64_t ino, uint32_t mode)
{
    uint64_t old;
    uint32_t otype;
    if (dirent_get(c, parent, name, &old, &otype) == 0)
        dirent_count(c, otype, -1);
    dirent_count(c, mode & S_IFMT, 1);
    struct nkey k;
    dirent_key(&k, parent, name);
    uint8_t v[9];
    put_be64(v, ino);
    v[8] = (uint8_t)((mode & S_IFMT) >> 12);
    nk_put(c, &k, v, sizeof(v));
}

void dirent_del(struct ns_ctx *c, uint64_t parent, const char *name)
{
    uint64_t old;
    uint32_t otype;
    if (dirent_get(c, parent, name, &old, &otype) != 0)
        return;
    dirent_count(c, otype, -1);
    struct nkey k;
    dirent_key(&k, parent, name);
    nk_del(c, &k);
}

bool dir_is_empty(struct ns_ctx *c, uint64_t ino)
{
    struct nkey k;
    nk_init(&k, 'd');
    nk_u64(&k, ino);
    struct kv_iter *it = kv_iter_prefix(c->txn, k.b, k.len);
    bool empty = !kv_iter_valid(it);
    kv_iter_free(it);
    return empty;
}

/* --- permissions -------------------------------------------------------------------------------------- */

bool cred_is_root(const Synod__V1__Cred *cr)
{
    return !cr || cr->uid == 0;
}

uint32_t cred_uid(const Synod__V1__Cred *cr)
{
    return cr ? cr->uid : 0;
}

uint32_t cred_gid(const Synod__V1__Cred *cr)
{
    return cr ? cr->gid : 0;
}

bool cred_in_group(const Synod__V1__Cred *cr, uint32_t gid)
{
    if (!cr)
        return true;
    if (cr->gid == gid)
        return true;
    for (size_t i = 0; i < cr->n_groups; i++)
        if (cr->groups[i] == gid)
            return true;
    return false;
}

int may_access(const Synod__V1__Cred *cr, const struct inode *n, int want)
{
    if (cred_is_root(cr)) {
        /* root bypasses rwx, except that exec of a non-directory needs some x bit */
        if ((want & MAY_X) && !S_ISDIR(n->mode) && !(n->mode & 0111))
            return -EACCES;
        return 0;
    }
    uint32_t bits;
    if (cr->uid == n->uid)
        bits = (n->mode >> 6) & 7;
    else if (cred_in_group(cr, n->gid))
        bits = (n->mode >> 3) & 7;
    else
        bits = n->mode & 7;
    return ((uint32_t)want & ~bits) ? -EACCES : 0;
}

int sticky_check(const Synod__V1__Cred *cr, const struct inode *dir, const struct inode *victim)
{
    if (!(dir->mode & S_ISVTX) || cred_is_root(cr))
        return 0;
    if (cr->uid == dir->uid || cr->uid == victim->uid)
        return 0;
    return -EPERM;
}

/* --- replies ------------------------------------------------------------------------------------------ */

void reply_msg(struct ns_ctx *c, const ProtobufCMessage *m)
{
    struct ns_reply *rep = c->rep;
    free(rep->buf);
    rep->desc = m->descriptor;
    rep->len = protobuf_c_message_get_packed_size(m);
    rep->buf = xmalloc(rep->len);
    protobuf_c_message_pack(m, rep->buf);
}

void reply_empty(struct ns_ctx *c)
{
    Synod__V1__Empty e = SYNOD__V1__EMPTY__INIT;
    reply_msg(c, &e.base);
}

ProtobufCMessage *ns_reply_unpack(const struct ns_reply *rep)
{
    if (rep->err || !rep->desc)
        return NULL;
    return protobuf_c_message_unpack(rep->desc, NULL, rep->len, rep->buf);
}

void ns_reply_release(struct ns_reply *rep)
{
    free(rep->buf);
    memset(rep, 0, sizeof(*rep));
}

/* --- sessions ----------------------------------------------------------------------------------------- */

/* Sessions belong to the rsm runtime (opened, kept alive, expired and deduplicated there). The namespace
 * keeps only what a session holds: open handles (n/o), locks (n/L) and write leases (n/w). Releasing is
 * idempotent: a close followed by the runtime's expiry of the same session finds nothing the second time. */
static void session_release(struct ns_ctx *c, uint64_t session)
{
    struct nkey p;
    nk_init(&p, 'o');
    nk_u64(&p, session);
    struct kv_iter *it = kv_iter_prefix(c->txn, p.b, p.len);
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl, vl;
        const char *key = kv_iter_key(it, &kl);
        const char *v = kv_iter_value(it, &vl);
        uint64_t ino = get_be64(v);
        kv_del(c->txn, key, kl);
        open_ref_drop(c, ino);
    }
    kv_iter_free(it);
    locks_release_session(c, session);
    leases_release_session(c, session);
}

static int op_session_end(struct ns_ctx *c, uint64_t session)
{
    if (!session)
        return -EINVAL;
    session_release(c, session);
    reply_empty(c);
    return 0;
}

void ns_session_release(struct ns *ns, struct kv_txn *txn, int64_t now_ns, uint64_t session)
{
    struct ns_ctx c = {.ns = ns, .txn = txn, .now = now_ns};
    if (session)
        session_release(&c, session);
    ctx_finish(&c, true);
}

/* Write n back now (or delete it) and drop it from the command's cache: for commands that touch any
 * number of inodes (session end, orphan purge) while the cache holds NS_ICACHE. */
static void ino_evict(struct ns_ctx *c, struct inode *n)
{
    for (int i = 0; i < c->nic; i++) {
        if (c->ic[i] == n) {
            struct nkey k;
            nk_init(&k, 'i');
            nk_u64(&k, n->ino);
            if (n->deleted)
                nk_del(c, &k);
            else
                inode_encode(c, n);
            inode_free(n);
            c->ic[i] = c->ic[--c->nic];
            break;
        }
    }
}

/* Logged open-handle references. An inode whose last name and last handle are gone stays an orphan (n/O)
 * until the leader purges it: memory opens, which apply cannot see, may still hold it. Flushes and evicts
 * the cached inode so that session_end can drop any number of handles within one command. */
void open_ref_drop(struct ns_ctx *c, uint64_t ino)
{
    struct inode *n;
    if (ino_get(c, ino, &n) < 0)
        return;
    if (n->opens)
        n->opens--;
    ino_dirty(n);
    ino_evict(c, n); /* keeps the cache bounded */
}

/* --- init --------------------------------------------------------------------------------------------- */

static int op_init(struct ns_ctx *c, const Synod__V1__NsInit *r)
{
    struct inode *root;
    Synod__V1__NsCounters *ctr = ctr_get(c);
    if (ino_get(c, NS_ROOT_INO, &root) == 0) {
        if (!ctr->fsid && r->fsid) { /* a state made before fsid existed gets one; nothing else changes */
            ctr->fsid = r->fsid;
            ctr_dirty(c);
        }
        reply_empty(c);
        return 0; /* idempotent */
    }
    ctr->fsid = r->fsid;
    if (r->default_goal)
        ctr->default_goal = MIN(r->default_goal, (uint32_t)NS_MAX_GOAL);
    if (r->heartbeat_ms)
        ctr->heartbeat_ms = r->heartbeat_ms;
    if (r->lease_ms)
        ctr->lease_ms = r->lease_ms;
    if (r->unknown_chunk_grace_ns)
        ctr->unknown_chunk_grace_ns = r->unknown_chunk_grace_ns < 0 ? 0 : r->unknown_chunk_grace_ns;
    if (r->max_repl_per_cs)
        ctr->max_repl_per_cs = r->max_repl_per_cs;
    root = ino_new(c, NS_ROOT_INO);
    root->mode = S_IFDIR | (r->root_mode ? (r->root_mode & 07777) : 0755);
    root->nlink = 2;
    root->parent = NS_ROOT_INO;
    root->atime = root->mtime = root->ctime = c->now;
    root->goal = ctr->default_goal;
    root->generation = ctr->next_generation++;
    ctr->inodes = 1;
    ctr->counted = true; /* a fresh state: the status counters start here */
    ctr_dirty(c);
    reply_empty(c);
    return 0;
}

/* --- dispatch ----------------------------------------------------------------------------------------- */

bool ns_cmd_is_read(const Synod__V1__NsCommand *cmd)
{
    switch (cmd->cmd_case) {
    case SYNOD__V1__NS_COMMAND__CMD_LOOKUP:
    case SYNOD__V1__NS_COMMAND__CMD_GETATTR:
    case SYNOD__V1__NS_COMMAND__CMD_READLINK:
    case SYNOD__V1__NS_COMMAND__CMD_READDIR:
    case SYNOD__V1__NS_COMMAND__CMD_STATFS:
    case SYNOD__V1__NS_COMMAND__CMD_GETXATTR:
    case SYNOD__V1__NS_COMMAND__CMD_LISTXATTR:
    case SYNOD__V1__NS_COMMAND__CMD_CHUNK_LOCATIONS:
    case SYNOD__V1__NS_COMMAND__CMD_GET_LOCK:
        return true;
    default:
        return false;
    }
}

/* The ReqId of a mutating request (NULL if none). */
static const Synod__V1__ReqId *cmd_rid(const Synod__V1__NsCommand *cmd)
{
    switch (cmd->cmd_case) {
    case SYNOD__V1__NS_COMMAND__CMD_SETATTR: return cmd->setattr->rid;
    case SYNOD__V1__NS_COMMAND__CMD_MKNOD: return cmd->mknod->rid;
    case SYNOD__V1__NS_COMMAND__CMD_UNLINK: return cmd->unlink->rid;
    case SYNOD__V1__NS_COMMAND__CMD_RENAME: return cmd->rename->rid;
    case SYNOD__V1__NS_COMMAND__CMD_LINK: return cmd->link->rid;
    case SYNOD__V1__NS_COMMAND__CMD_SYMLINK: return cmd->symlink->rid;
    case SYNOD__V1__NS_COMMAND__CMD_SETXATTR: return cmd->setxattr->rid;
    case SYNOD__V1__NS_COMMAND__CMD_REMOVEXATTR: return cmd->removexattr->rid;
    case SYNOD__V1__NS_COMMAND__CMD_OPEN: return cmd->open->rid;
    case SYNOD__V1__NS_COMMAND__CMD_RELEASE: return cmd->release->rid;
    case SYNOD__V1__NS_COMMAND__CMD_CHUNK_OPEN_WRITE: return cmd->chunk_open_write->rid;
    case SYNOD__V1__NS_COMMAND__CMD_CHUNK_WRITE_DONE: return cmd->chunk_write_done->rid;
    case SYNOD__V1__NS_COMMAND__CMD_BAD_REPLICA: return cmd->bad_replica->rid;
    case SYNOD__V1__NS_COMMAND__CMD_SET_LOCK: return cmd->set_lock->rid;
    case SYNOD__V1__NS_COMMAND__CMD_SET_GOAL: return cmd->set_goal->rid;
    default: return NULL;
    }
}

static const Synod__V1__Cred *cmd_cred(const Synod__V1__NsCommand *cmd)
{
    switch (cmd->cmd_case) {
    case SYNOD__V1__NS_COMMAND__CMD_LOOKUP: return cmd->lookup->cred;
    case SYNOD__V1__NS_COMMAND__CMD_SETATTR: return cmd->setattr->cred;
    case SYNOD__V1__NS_COMMAND__CMD_MKNOD: return cmd->mknod->cred;
    case SYNOD__V1__NS_COMMAND__CMD_UNLINK: return cmd->unlink->cred;
    case SYNOD__V1__NS_COMMAND__CMD_RENAME: return cmd->rename->cred;
    case SYNOD__V1__NS_COMMAND__CMD_LINK: return cmd->link->cred;
    case SYNOD__V1__NS_COMMAND__CMD_SYMLINK: return cmd->symlink->cred;
    case SYNOD__V1__NS_COMMAND__CMD_READDIR: return cmd->readdir->cred;
    case SYNOD__V1__NS_COMMAND__CMD_SETXATTR: return cmd->setxattr->cred;
    case SYNOD__V1__NS_COMMAND__CMD_GETXATTR: return cmd->getxattr->cred;
    case SYNOD__V1__NS_COMMAND__CMD_LISTXATTR: return cmd->listxattr->cred;
    case SYNOD__V1__NS_COMMAND__CMD_REMOVEXATTR: return cmd->removexattr->cred;
    case SYNOD__V1__NS_COMMAND__CMD_OPEN: return cmd->open->cred;
    case SYNOD__V1__NS_COMMAND__CMD_SET_GOAL: return cmd->set_goal->cred;
    default: return NULL;
    }
}

static int dispatch(struct ns_ctx *c, const Synod__V1__NsCommand *cmd)
{
    switch (cmd->cmd_case) {
    /* session open and keepalive are the runtime's (rsm_session_open / rsm_session_touch) */
    case SYNOD__V1__NS_COMMAND__CMD_SESSION_CLOSE: return op_session_end(c, cmd->session_close->session);
    case SYNOD__V1__NS_COMMAND__CMD_SESSION_EXPIRE: return op_session_end(c, cmd->session_expire->session);
    case SYNOD__V1__NS_COMMAND__CMD_LOOKUP: return op_lookup(c, cmd->lookup);
    case SYNOD__V1__NS_COMMAND__CMD_GETATTR: return op_getattr(c, cmd->getattr);
    case SYNOD__V1__NS_COMMAND__CMD_SETATTR: return op_setattr(c, cmd->setattr);
    case SYNOD__V1__NS_COMMAND__CMD_MKNOD: return op_mknod(c, cmd->mknod);
    case SYNOD__V1__NS_COMMAND__CMD_UNLINK: return op_unlink(c, cmd->unlink);
    case SYNOD__V1__NS_COMMAND__CMD_RENAME: return op_rename(c, cmd->rename);
    case SYNOD__V1__NS_COMMAND__CMD_LINK: return op_link(c, cmd->link);
    case SYNOD__V1__NS_COMMAND__CMD_SYMLINK: return op_symlink(c, cmd->symlink);
    case SYNOD__V1__NS_COMMAND__CMD_READLINK: return op_readlink(c, cmd->readlink);
    case SYNOD__V1__NS_COMMAND__CMD_READDIR: return op_readdir(c, cmd->readdir);
    case SYNOD__V1__NS_COMMAND__CMD_STATFS: return op_statfs(c);
    case SYNOD__V1__NS_COMMAND__CMD_SETXATTR: return op_setxattr(c, cmd->setxattr);
    case SYNOD__V1__NS_COMMAND__CMD_GETXATTR: return op_getxattr(c, cmd->getxattr);
    case SYNOD__V1__NS_COMMAND__CMD_LISTXATTR: return op_listxattr(c, cmd->listxattr);
    case SYNOD__V1__NS_COMMAND__CMD_REMOVEXATTR: return op_removexattr(c, cmd->removexattr);
    case SYNOD__V1__NS_COMMAND__CMD_OPEN: return op_open(c, cmd->open);
    case SYNOD__V1__NS_COMMAND__CMD_RELEASE: return op_release(c, cmd->release);
    case SYNOD__V1__NS_COMMAND__CMD_CHUNK_LOCATIONS: return op_chunk_locations(c, cmd->chunk_locations);
    case SYNOD__V1__NS_COMMAND__CMD_CHUNK_OPEN_WRITE: return op_chunk_open_write(c, cmd->chunk_open_write);
    case SYNOD__V1__NS_COMMAND__CMD_CHUNK_WRITE_DONE: return op_chunk_write_done(c, cmd->chunk_write_done);
    case SYNOD__V1__NS_COMMAND__CMD_BAD_REPLICA: return op_bad_replica(c, cmd->bad_replica);
    case SYNOD__V1__NS_COMMAND__CMD_GET_LOCK: return op_get_lock(c, cmd->get_lock);
    case SYNOD__V1__NS_COMMAND__CMD_SET_LOCK: return op_set_lock(c, cmd->set_lock);
    case SYNOD__V1__NS_COMMAND__CMD_SET_GOAL: return op_set_goal(c, cmd->set_goal);
    case SYNOD__V1__NS_COMMAND__CMD_DECOMMISSION: return op_decommission(c, cmd->decommission);
    case SYNOD__V1__NS_COMMAND__CMD_REPL_LIMIT: return op_repl_limit(c, cmd->repl_limit);
    case SYNOD__V1__NS_COMMAND__CMD_CS_REGISTER: return op_cs_register(c, cmd->cs_register);
    case SYNOD__V1__NS_COMMAND__CMD_CS_HEARTBEAT: return op_cs_heartbeat(c, cmd->cs_heartbeat);
    case SYNOD__V1__NS_COMMAND__CMD_CS_REPORT: return op_cs_report(c, cmd->cs_report);
    case SYNOD__V1__NS_COMMAND__CMD_INIT: return op_init(c, cmd->init);
    case SYNOD__V1__NS_COMMAND__CMD_CS_DEAD: return op_cs_dead(c, cmd->cs_dead);
    case SYNOD__V1__NS_COMMAND__CMD_REPL_START: return op_repl_start(c, cmd->repl_start);
    case SYNOD__V1__NS_COMMAND__CMD_LEASE_EXPIRE: return op_lease_expire(c, cmd->lease_expire);
    case SYNOD__V1__NS_COMMAND__CMD_REPLICA_DROP: return op_replica_drop(c, cmd->replica_drop);
    case SYNOD__V1__NS_COMMAND__CMD_FSCK_REPAIR: return op_fsck_repair(c, cmd->fsck_repair);
    case SYNOD__V1__NS_COMMAND__CMD_ORPHAN_PURGE: return op_orphan_purge(c, cmd->orphan_purge);
    default: return -EINVAL;
    }
}

/* Sub-messages that proto3 may leave NULL are validated here once, so ops can dereference freely. */
static bool cmd_well_formed(const Synod__V1__NsCommand *cmd)
{
    if (cmd->cmd_case == SYNOD__V1__NS_COMMAND__CMD__NOT_SET)
        return false;
    /* every oneof member is a message pointer at the same place */
    return cmd->session_open != NULL;
}

int ns_apply(struct ns *ns, struct kv_txn *txn, const Synod__V1__NsCommand *cmd, struct ns_reply *rep)
{
    memset(rep, 0, sizeof(*rep));
    if (!cmd_well_formed(cmd))
        return rep->err = -EINVAL;
    struct ns_ctx c = {.ns = ns, .txn = txn, .cmd = cmd, .now = cmd->now_ns, .rep = rep};
    c.cred = cmd_cred(cmd);
    /* the envelope's session is the one the runtime validated; a read outside the log has none */
    const Synod__V1__ReqId *rid = cmd_rid(cmd);
    c.session = cmd->session ? cmd->session : rid ? rid->session : 0;
    int rc = dispatch(&c, cmd);
    ctx_finish(&c, rc == 0);
    if (rc) {
        free(rep->buf);
        rep->buf = NULL;
        rep->len = 0;
        rep->desc = NULL;
    }
    return rep->err = rc;
}

void ns_apply_batch(struct ns *ns, struct kv_txn *txn, const Synod__V1__NsBatch *batch, struct ns_reply *reps)
{
    for (size_t i = 0; i < batch->n_cmds; i++)
        ns_apply(ns, txn, batch->cmds[i], &reps[i]);
}

/* --- snapshot / restore ------------------------------------------------------------------------------- */

int ns_snapshot_write(leveldb_t *db, const leveldb_snapshot_t *snap,
                      int (*cb)(void *arg, const char *key, size_t klen, const char *val, size_t vlen),
                      void *arg)
{
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_readoptions_set_fill_cache(ro, 0);
    if (snap)
        leveldb_readoptions_set_snapshot(ro, snap);
    leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
    int rc = 0;
    size_t plen = strlen(NS_KEY_PREFIX);
    for (leveldb_iter_seek(it, NS_KEY_PREFIX, plen); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kl, vl;
        const char *k = leveldb_iter_key(it, &kl);
        if (kl < plen || memcmp(k, NS_KEY_PREFIX, plen) != 0)
            break;
        const char *v = leveldb_iter_value(it, &vl);
        rc = cb(arg, k, kl, v, vl);
        if (rc)
            break;
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (!rc)
        rc = kv_leveldb_err(&err, "snapshot iterate");
    else if (err)
        leveldb_free(err);
    leveldb_iter_destroy(it);
    leveldb_readoptions_destroy(ro);
    return rc;
}

struct ns_restore {
    leveldb_t *db;
    leveldb_writebatch_t *wb;
    size_t n;
};

static int restore_flush(struct ns_restore *r, bool sync)
{
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(wo, sync);
    char *err = NULL;
    leveldb_write(r->db, wo, r->wb, &err);
    leveldb_writeoptions_destroy(wo);
    leveldb_writebatch_clear(r->wb);
    r->n = 0;
    return kv_leveldb_err(&err, "restore write");
}

int ns_restore_begin(leveldb_t *db, struct ns_restore **out)
{
    struct ns_restore *r = xcalloc(1, sizeof(*r));
    r->db = db;
    r->wb = leveldb_writebatch_create();
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
    size_t plen = strlen(NS_KEY_PREFIX);
    int rc = 0;
    for (leveldb_iter_seek(it, NS_KEY_PREFIX, plen); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kl;
        const char *k = leveldb_iter_key(it, &kl);
        if (kl < plen || memcmp(k, NS_KEY_PREFIX, plen) != 0)
            break;
        leveldb_writebatch_delete(r->wb, k, kl);
        if (++r->n >= 4096 && (rc = restore_flush(r, false)) < 0)
            break;
    }
    leveldb_iter_destroy(it);
    leveldb_readoptions_destroy(ro);
    if (!rc)
        rc = restore_flush(r, false);
    if (rc) {
        leveldb_writebatch_destroy(r->wb);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int ns_restore_add(struct ns_restore *r, const char *key, size_t klen, const char *val, size_t vlen)
{
    size_t plen = strlen(NS_KEY_PREFIX);
    if (klen <= plen || memcmp(key, NS_KEY_PREFIX, plen) != 0)
        return -EINVAL;
    leveldb_writebatch_put(r->wb, key, klen, val, vlen);
    if (++r->n >= 4096)
        return restore_flush(r, false);
    return 0;
}

int ns_restore_end(struct ns_restore *r, bool sync)
{
    int rc = restore_flush(r, sync);
    leveldb_writebatch_destroy(r->wb);
    free(r);
    return rc;
}

/* --- orphans ------------------------------------------------------------------------------------------ */

void orphan_add(struct ns_ctx *c, const struct inode *n)
{
    struct nkey k;
    nk_init(&k, 'O');
    nk_u64(&k, n->ino);
    nk_put(c, &k, "", 0);
}

/* Purge each listed orphan that still has no name and no logged handle. The leader checked its memory
 * opens when it planned the list; an orphan cannot be opened again (no name, and a memory open of an inode
 * with nlink 0 is refused unless the same session already holds it), so that check still holds here. */
int op_orphan_purge(struct ns_ctx *c, const Synod__V1__OrphanPurge *r)
{
    if (r->n_inos > 4096)
        return -EINVAL;
    for (size_t i = 0; i < r->n_inos; i++) {
        struct nkey k;
        nk_init(&k, 'O');
        nk_u64(&k, r->inos[i]);
        if (nk_get(c, &k, NULL, NULL) < 0)
            continue; /* purged already (a retry) */
        struct inode *n;
        if (ino_get(c, r->inos[i], &n) < 0) {
            nk_del(c, &k);
            continue;
        }
        if (n->nlink > 0) {
            nk_del(c, &k); /* not an orphan (cannot happen: an inode with no name gets none back) */
        } else if (n->opens == 0) {
            ino_purge(c, n);
        } else {
            continue; /* a logged handle still holds it: kept for a later plan (after its Release) */
        }
        ino_evict(c, n);
    }
    reply_empty(c);
    return 0;
}

size_t ns_orphans(struct kv_txn *txn, uint64_t after, size_t max, uint64_t **out)
{
    uint8_t p[3] = {'n', '/', 'O'}, start[11] = {'n', '/', 'O'};
    put_be64(start + 3, after + 1);
    uint64_t *v = xmalloc((max ? max : 1) * sizeof(*v));
    size_t n = 0;
    struct kv_iter *it = after == UINT64_MAX ? NULL : kv_iter_prefix_from(txn, (const char *)p, 3, start, 11);
    if (!it) {
        *out = v;
        return 0;
    }
    for (; n < max && kv_iter_valid(it); kv_iter_next(it)) {
        size_t kl;
        const char *key = kv_iter_key(it, &kl);
        if (kl == 11)
            v[n++] = get_be64((const uint8_t *)key + 3);
    }
    kv_iter_free(it);
    *out = v;
    return n;
}
