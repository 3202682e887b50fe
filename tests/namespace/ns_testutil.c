/* ns_testutil.c - the test harness of ns_testutil.h. */
#include "ns_testutil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/test.h"

static struct tcred root_cred;
struct tcred *ROOT = &root_cred;

struct tcred *tcred(struct tcred *cr, uint32_t uid, uint32_t gid, int ngroups, ...)
{
    synod__v1__cred__init(&cr->c);
    cr->c.uid = uid;
    cr->c.gid = gid;
    va_list ap;
    va_start(ap, ngroups);
    for (int i = 0; i < ngroups && i < 8; i++)
        cr->groups[i] = va_arg(ap, uint32_t);
    va_end(ap);
    cr->c.n_groups = (size_t)ngroups;
    cr->c.groups = cr->groups;
    return cr;
}

void tns_open_at(struct tns *t, const char *dir)
{
    memset(t, 0, sizeof(*t));
    tcred(ROOT, 0, 0, 0);
    snprintf(t->dir, sizeof(t->dir), "%s", dir);
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 1);
    char *err = NULL;
    t->db = leveldb_open(o, t->dir, &err);
    if (err)
        T_FAIL("leveldb_open %s: %s", t->dir, err);
    leveldb_options_destroy(o);
    t->ns = ns_new();
    t->now = 1700000000LL * 1000000000LL;
    Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
    Synod__V1__NsInit init = SYNOD__V1__NS_INIT__INIT;
    init.root_mode = 0755;
    init.default_goal = 1;
    init.unknown_chunk_grace_ns = 1000000000;
    cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_INIT;
    cmd.init = &init;
    T_EQ(tns_apply(t, &cmd, NULL), 0);
    t->session = t_session_open(t);
}

void tns_open(struct tns *t)
{
    char tmpl[] = "/tmp/nstest.XXXXXX";
    if (!mkdtemp(tmpl))
        T_FAIL("mkdtemp");
    tns_open_at(t, tmpl);
}

void tns_close(struct tns *t, bool keep)
{
    if (t->txn)
        tns_commit(t);
    /* every test's final state: the status counters kept by apply agree with fsck's scan */
    struct ns_fsck f;
    T_EQ(ns_fsck_run(t->db, t->now, 1000000, 50, &f), 0);
    for (size_t i = 0; i < f.rep.n_problems; i++)
        if (!strcmp(f.rep.problems[i]->kind, "counter"))
            T_FAIL("%s", f.rep.problems[i]->detail);
    ns_fsck_release(&f);
    leveldb_close(t->db);
    ns_free(t->ns);
    if (!keep) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "rm -rf %s failed\n", t->dir);
    }
}

void tns_begin(struct tns *t)
{
    ASSERT(!t->txn);
    t->txn = kv_txn_begin(t->db);
}

void tns_commit(struct tns *t)
{
    ASSERT(t->txn);
    T_EQ(kv_txn_commit(t->txn, NULL, 0, t->sync), 0);
    t->txn = NULL;
}

Synod__V1__ReqId *tns_rid(struct tns *t)
{
    static __thread Synod__V1__ReqId rid;
    synod__v1__req_id__init(&rid);
    rid.session = t->session;
    rid.seq = ++t->seq;
    return &rid;
}

/* The leader's part: OrphanPurge of every orphan but keep[] (the ones it knows are held), inside txn. */
static size_t purge_in(struct tns *t, struct kv_txn *txn, int64_t now, const uint64_t *keep, size_t nkeep)
{
    uint64_t *inos;
    size_t n = ns_orphans(txn, 0, 1024, &inos), k = 0;
    for (size_t i = 0; i < n; i++) {
        bool kept = false;
        for (size_t j = 0; j < nkeep; j++)
            kept |= keep[j] == inos[i];
        if (!kept)
            inos[k++] = inos[i];
    }
    if (k) {
        Synod__V1__OrphanPurge op = SYNOD__V1__ORPHAN_PURGE__INIT;
        op.n_inos = k;
        op.inos = inos;
        Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
        cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_ORPHAN_PURGE;
        cmd.orphan_purge = &op;
        cmd.now_ns = now;
        struct ns_reply rep;
        T_EQ(ns_apply(t->ns, txn, &cmd, &rep), 0);
        ns_reply_release(&rep);
    }
    free(inos);
    return n;
}

size_t t_purge_orphans(struct tns *t, const uint64_t *keep, size_t nkeep)
{
    struct kv_txn *txn = kv_txn_begin(t->db);
    size_t n = purge_in(t, txn, t->now, keep, nkeep);
    t->now += 1000;
    T_EQ(kv_txn_commit(txn, NULL, 0, t->sync), 0);
    return n;
}

int tns_apply(struct tns *t, Synod__V1__NsCommand *cmd, ProtobufCMessage **reply)
{
    cmd->now_ns = t->now;
    t->now += 1000;
    if (!cmd->session)
        cmd->session = t->session;
    struct kv_txn *txn = t->txn ? t->txn : kv_txn_begin(t->db);
    struct ns_reply rep;
    int rc = ns_apply(t->ns, txn, cmd, &rep);
    if (rc == 0 && !t->keep_orphans && cmd->cmd_case != SYNOD__V1__NS_COMMAND__CMD_ORPHAN_PURGE)
        purge_in(t, txn, cmd->now_ns, NULL, 0);
    if (!t->txn)
        T_EQ(kv_txn_commit(txn, NULL, 0, t->sync), 0);
    if (reply)
        *reply = ns_reply_unpack(&rep);
    if (rc == 0)
        T_CHECK(rep.desc != NULL);
    ns_reply_release(&rep);
    return rc;
}

#define CMD(field, CASE, msg)                                                                               \
    Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;                                                 \
    cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_##CASE;                                                       \
    cmd.field = &(msg)

static void attr_out(ProtobufCMessage *m, Synod__V1__Attr *attr, Synod__V1__Attr *out)
{
    if (out && attr)
        *out = *attr;
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

int t_create(struct tns *t, struct tcred *cr, uint64_t parent, const char *name, uint32_t mode, uint32_t flags,
             bool excl, uint64_t *ino, uint64_t *fh)
{
    Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.parent = parent;
    r.name = (char *)name;
    r.mode = mode;
    r.open = true;
    r.open_flags = flags;
    r.exclusive = excl;
    CMD(mknod, MKNOD, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    if (m) {
        Synod__V1__CreateRep *cr2 = (Synod__V1__CreateRep *)m;
        if (ino)
            *ino = cr2->attr->ino;
        if (fh)
            *fh = cr2->fh;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

int t_mknod(struct tns *t, struct tcred *cr, uint64_t parent, const char *name, uint32_t mode, uint64_t *ino)
{
    Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.parent = parent;
    r.name = (char *)name;
    r.mode = mode;
    CMD(mknod, MKNOD, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    if (m) {
        if (ino)
            *ino = ((Synod__V1__CreateRep *)m)->attr->ino;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

int t_unlink(struct tns *t, struct tcred *cr, uint64_t parent, const char *name, bool is_dir)
{
    Synod__V1__UnlinkReq r = SYNOD__V1__UNLINK_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.parent = parent;
    r.name = (char *)name;
    r.is_dir = is_dir;
    CMD(unlink, UNLINK, r);
    return tns_apply(t, &cmd, NULL);
}

int t_rename(struct tns *t, struct tcred *cr, uint64_t p, const char *n, uint64_t np, const char *nn,
             uint32_t flags)
{
    Synod__V1__RenameReq r = SYNOD__V1__RENAME_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.parent = p;
    r.name = (char *)n;
    r.new_parent = np;
    r.new_name = (char *)nn;
    r.flags = flags;
    CMD(rename, RENAME, r);
    return tns_apply(t, &cmd, NULL);
}

int t_link(struct tns *t, struct tcred *cr, uint64_t ino, uint64_t np, const char *nn)
{
    Synod__V1__LinkReq r = SYNOD__V1__LINK_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.ino = ino;
    r.new_parent = np;
    r.new_name = (char *)nn;
    CMD(link, LINK, r);
    return tns_apply(t, &cmd, NULL);
}

int t_symlink(struct tns *t, struct tcred *cr, uint64_t p, const char *n, const char *target, uint64_t *ino)
{
    Synod__V1__SymlinkReq r = SYNOD__V1__SYMLINK_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.parent = p;
    r.name = (char *)n;
    r.target = (char *)target;
    CMD(symlink, SYMLINK, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    if (m) {
        if (ino)
            *ino = ((Synod__V1__EntryRep *)m)->attr->ino;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

int t_readlink(struct tns *t, uint64_t ino, char *buf, size_t len)
{
    Synod__V1__ReadlinkReq r = SYNOD__V1__READLINK_REQ__INIT;
    r.ino = ino;
    CMD(readlink, READLINK, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    if (m) {
        snprintf(buf, len, "%s", ((Synod__V1__ReadlinkRep *)m)->target);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

int t_lookup(struct tns *t, struct tcred *cr, uint64_t p, const char *n, Synod__V1__Attr *out)
{
    Synod__V1__LookupReq r = SYNOD__V1__LOOKUP_REQ__INIT;
    r.cred = &cr->c;
    r.parent = p;
    r.name = (char *)n;
    CMD(lookup, LOOKUP, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    attr_out(m, m ? ((Synod__V1__EntryRep *)m)->attr : NULL, out);
    return rc;
}

int t_getattr(struct tns *t, uint64_t ino, Synod__V1__Attr *out)
{
    Synod__V1__GetattrReq r = SYNOD__V1__GETATTR_REQ__INIT;
    r.ino = ino;
    CMD(getattr, GETATTR, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    attr_out(m, m ? ((Synod__V1__AttrRep *)m)->attr : NULL, out);
    return rc;
}

int t_setattr(struct tns *t, struct tcred *cr, uint64_t ino, uint32_t valid, uint32_t mode, uint32_t uid,
              uint32_t gid, uint64_t size, Synod__V1__Attr *out)
{
    Synod__V1__SetattrReq r = SYNOD__V1__SETATTR_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.ino = ino;
    r.valid = valid;
    r.mode = mode;
    r.uid = uid;
    r.gid = gid;
    r.size = size;
    CMD(setattr, SETATTR, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    attr_out(m, m ? ((Synod__V1__AttrRep *)m)->attr : NULL, out);
    return rc;
}

int t_open(struct tns *t, struct tcred *cr, uint64_t ino, uint32_t flags, uint64_t *fh)
{
    Synod__V1__OpenReq r = SYNOD__V1__OPEN_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.ino = ino;
    r.flags = flags;
    CMD(open, OPEN, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    if (m) {
        if (fh)
            *fh = ((Synod__V1__OpenRep *)m)->fh;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

int t_release(struct tns *t, uint64_t ino, uint64_t fh)
{
    Synod__V1__ReleaseReq r = SYNOD__V1__RELEASE_REQ__INIT;
    r.rid = tns_rid(t);
    r.ino = ino;
    r.fh = fh;
    CMD(release, RELEASE, r);
    return tns_apply(t, &cmd, NULL);
}

int t_setxattr(struct tns *t, struct tcred *cr, uint64_t ino, const char *name, const char *val, uint32_t flags)
{
    Synod__V1__SetxattrReq r = SYNOD__V1__SETXATTR_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.ino = ino;
    r.name = (char *)name;
    r.value.data = (uint8_t *)val;
    r.value.len = strlen(val);
    r.flags = flags;
    CMD(setxattr, SETXATTR, r);
    return tns_apply(t, &cmd, NULL);
}

int t_getxattr(struct tns *t, struct tcred *cr, uint64_t ino, const char *name, char *buf, size_t cap, size_t *len)
{
    Synod__V1__GetxattrReq r = SYNOD__V1__GETXATTR_REQ__INIT;
    r.cred = &cr->c;
    r.ino = ino;
    r.name = (char *)name;
    CMD(getxattr, GETXATTR, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    if (m) {
        Synod__V1__GetxattrRep *g = (Synod__V1__GetxattrRep *)m;
        *len = g->value.len;
        if (g->value.len)
            memcpy(buf, g->value.data, MIN(cap, g->value.len));
        if (g->value.len < cap)
            buf[g->value.len] = 0;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

int t_listxattr(struct tns *t, struct tcred *cr, uint64_t ino, size_t *count)
{
    Synod__V1__ListxattrReq r = SYNOD__V1__LISTXATTR_REQ__INIT;
    r.cred = &cr->c;
    r.ino = ino;
    CMD(listxattr, LISTXATTR, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    if (m) {
        *count = ((Synod__V1__ListxattrRep *)m)->n_names;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

int t_removexattr(struct tns *t, struct tcred *cr, uint64_t ino, const char *name)
{
    Synod__V1__RemovexattrReq r = SYNOD__V1__REMOVEXATTR_REQ__INIT;
    r.rid = tns_rid(t);
    r.cred = &cr->c;
    r.ino = ino;
    r.name = (char *)name;
    CMD(removexattr, REMOVEXATTR, r);
    return tns_apply(t, &cmd, NULL);
}

int t_readdir(struct tns *t, struct tcred *cr, uint64_t ino, const char *after, uint32_t max, bool plus,
              Synod__V1__ReaddirRep **rep)
{
    Synod__V1__ReaddirReq r = SYNOD__V1__READDIR_REQ__INIT;
    r.cred = &cr->c;
    r.ino = ino;
    r.after = (char *)after;
    r.max_entries = max;
    r.plus = plus;
    CMD(readdir, READDIR, r);
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    *rep = (Synod__V1__ReaddirRep *)m;
    return rc;
}

int t_lock(struct tns *t, bool set, uint64_t ino, uint64_t owner, uint32_t kind, uint32_t type, uint64_t start,
           uint64_t end, Synod__V1__LockRep *out)
{
    Synod__V1__LockReq r = SYNOD__V1__LOCK_REQ__INIT;
    r.rid = set ? tns_rid(t) : NULL;
    r.ino = ino;
    r.owner = owner;
    r.kind = kind;
    r.type = type;
    r.start = start;
    r.end = end;
    r.pid = (uint32_t)owner;
    Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
    if (set) {
        cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_SET_LOCK;
        cmd.set_lock = &r;
    } else {
        cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_GET_LOCK;
        cmd.get_lock = &r;
    }
    ProtobufCMessage *m;
    int rc = tns_apply(t, &cmd, &m);
    if (m) {
        if (out)
            *out = *(Synod__V1__LockRep *)m;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

uint64_t t_session_open(struct tns *t)
{
    /* sessions are the rsm runtime's: the harness plays it and hands out ids */
    return ++t->next_session;
}

int t_session_end(struct tns *t, uint64_t session, bool expire)
{
    if (expire) {
        struct kv_txn *txn = t->txn ? t->txn : kv_txn_begin(t->db);
        ns_session_release(t->ns, txn, t->now, session);
        t->now += 1000;
        if (!t->txn)
            T_EQ(kv_txn_commit(txn, NULL, 0, t->sync), 0);
        if (!t->keep_orphans && !t->txn)
            t_purge_orphans(t, NULL, 0);
        return 0;
    }
    Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
    Synod__V1__SessionCloseReq cr = SYNOD__V1__SESSION_CLOSE_REQ__INIT;
    cr.session = session;
    cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_SESSION_CLOSE;
    cmd.session_close = &cr;
    cmd.session = session;
    return tns_apply(t, &cmd, NULL);
}

int tns_dump(leveldb_t *db, int (*cb)(void *arg, const char *k, size_t kl, const char *v, size_t vl), void *arg)
{
    return ns_snapshot_write(db, NULL, cb, arg);
}

struct digest {
    uint64_t h;
    size_t n;
};

static void fnv(uint64_t *h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 1099511628211ull;
    }
}

static int digest_cb(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    struct digest *d = arg;
    uint8_t len[8];
    put_le64(len, kl);
    fnv(&d->h, len, 8);
    fnv(&d->h, k, kl);
    put_le64(len, vl);
    fnv(&d->h, len, 8);
    fnv(&d->h, v, vl);
    d->n++;
    return 0;
}

uint64_t tns_digest(leveldb_t *db, size_t *nkeys)
{
    struct digest d = {14695981039346656037ull, 0};
    T_EQ(tns_dump(db, digest_cb, &d), 0);
    if (nkeys)
        *nkeys = d.n;
    return d.h;
}
