/* test_nssvc_cmd.c - every Meta (and ChunkControl/Admin log) method through the service's pure path:
 * request -> nssvc_cmd_pack -> nssvc_apply_packed on a LevelDB txn -> reply decoded as the RPC's output
 * type. Checks the answers and the errno of each error class (ENOENT, EEXIST, ENOTEMPTY, EACCES, EPERM,
 * ENAMETOOLONG, EINVAL for a rename into its own subtree; never EXDEV), and that a request without
 * credentials is refused rather than run as root. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nssvc_testutil.h"
#include "tests/test.h"

static Synod__V1__Cred root_cred = SYNOD__V1__CRED__INIT, user_cred = SYNOD__V1__CRED__INIT,
                      other_cred = SYNOD__V1__CRED__INIT;
static uint32_t user_groups[] = {100, 200};

static void creds(void)
{
    user_cred.uid = 1000;
    user_cred.gid = 100;
    user_cred.groups = user_groups;
    user_cred.n_groups = 2;
    other_cred.uid = 2000;
    other_cred.gid = 300;
}

static int mknod_(Synod__V1__Cred *cr, uint64_t parent, const char *name, uint32_t mode, uint64_t *ino)
{
    Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
    r.rid = tsvc_rid();
    r.cred = cr;
    r.parent = parent;
    r.name = (char *)name;
    r.mode = mode;
    Synod__V1__CreateRep *rep;
    int rc = META("Mknod", r, &rep);
    if (rc == 0) {
        if (ino)
            *ino = rep->attr->ino;
        T_EQU(rep->attr->uid, cr->uid);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    return rc;
}

static int lookup_(Synod__V1__Cred *cr, uint64_t parent, const char *name, uint64_t *ino)
{
    Synod__V1__LookupReq r = SYNOD__V1__LOOKUP_REQ__INIT;
    r.cred = cr;
    r.parent = parent;
    r.name = (char *)name;
    Synod__V1__EntryRep *rep;
    int rc = META("Lookup", r, &rep);
    if (rc == 0) {
        if (ino)
            *ino = rep->attr->ino;
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    return rc;
}

static int unlink_(Synod__V1__Cred *cr, uint64_t parent, const char *name, bool is_dir)
{
    Synod__V1__UnlinkReq r = SYNOD__V1__UNLINK_REQ__INIT;
    r.rid = tsvc_rid();
    r.cred = cr;
    r.parent = parent;
    r.name = (char *)name;
    r.is_dir = is_dir;
    return META("Unlink", r, NULL);
}

static int rename_(Synod__V1__Cred *cr, uint64_t p, const char *n, uint64_t np, const char *nn, uint32_t flags)
{
    Synod__V1__RenameReq r = SYNOD__V1__RENAME_REQ__INIT;
    r.rid = tsvc_rid();
    r.cred = cr;
    r.parent = p;
    r.name = (char *)n;
    r.new_parent = np;
    r.new_name = (char *)nn;
    r.flags = flags;
    return META("Rename", r, NULL);
}

static void test_table(void)
{
    /* every method of the three services is routed, and the log/read cases hold the right request type */
    const ProtobufCServiceDescriptor *svcs[] = {&synod__v1__meta__descriptor, &synod__v1__chunk_control__descriptor,
                                                &synod__v1__admin__descriptor};
    const char *names[] = {"Meta", "ChunkControl", "Admin"};
    for (int s = 0; s < 3; s++) {
        for (unsigned i = 0; i < svcs[s]->n_methods; i++) {
            const ProtobufCMethodDescriptor *md = &svcs[s]->methods[i];
            const struct nssvc_method *m = nssvc_method_find(names[s], md->name);
            if (!m)
                T_FAIL("%s.%s not routed", names[s], md->name);
            if (m->route == NSSVC_LOG || m->route == NSSVC_READ) {
                const ProtobufCFieldDescriptor *f =
                    protobuf_c_message_descriptor_get_field(&synod__v1__ns_command__descriptor, m->cmd_case);
                T_CHECK(f && f->descriptor == md->input);
                /* a command read-only in the namespace iff it is served as a read */
                Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
                cmd.cmd_case = m->cmd_case;
                T_EQ(ns_cmd_is_read(&cmd), m->route == NSSVC_READ);
            }
        }
    }
    /* a mismatched request type and a missing cred are refused */
    Synod__V1__GetattrReq g = SYNOD__V1__GETATTR_REQ__INIT;
    uint8_t *buf;
    size_t len;
    T_EQ(nssvc_cmd_pack(SYNOD__V1__NS_COMMAND__CMD_LOOKUP, &g.base, tnow, 0, &buf, &len), -EINVAL);
    Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
    r.parent = NS_ROOT_INO;
    r.name = "x";
    r.mode = S_IFREG | 0644;
    T_EQ(META("Mknod", r, NULL), -EINVAL);
    /* garbage bytes never reach ns_apply */
    struct kv_txn *txn = kv_txn_begin(tdb);
    struct ns_reply rep;
    uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    T_EQ(nssvc_apply_packed(tns_, txn, tnow, 0, junk, sizeof(junk), &rep), -EINVAL);
    kv_txn_abort(txn);
}

static void test_namespace_ops(void)
{
    const uint64_t R = NS_ROOT_INO;
    uint64_t d, f, sub, x;
    T_EQ(mknod_(&user_cred, R, "d", S_IFDIR | 0755, &d), 0);
    T_EQ(mknod_(&user_cred, R, "d", S_IFDIR | 0755, NULL), -EEXIST);
    T_EQ(mknod_(&user_cred, d, "f", S_IFREG | 0644, &f), 0);
    T_EQ(mknod_(&other_cred, d, "g", S_IFREG | 0644, NULL), -EACCES);
    char longname[300];
    memset(longname, 'a', 256);
    longname[256] = 0;
    T_EQ(mknod_(&user_cred, d, longname, S_IFREG | 0644, NULL), -ENAMETOOLONG);
    T_EQ(mknod_(&user_cred, d, "dev", S_IFCHR | 0644, NULL), -EPERM); /* devices: root only */
    T_EQ(mknod_(&root_cred, d, "dev", S_IFCHR | 0644, NULL), 0);
    T_EQ(mknod_(&user_cred, d, "fifo", S_IFIFO | 0644, NULL), 0);
    T_EQ(mknod_(&user_cred, d, "sock", S_IFSOCK | 0644, NULL), 0);
    T_EQ(lookup_(&user_cred, d, "f", &x), 0);
    T_EQU(x, f);
    T_EQ(lookup_(&user_cred, d, "nope", NULL), -ENOENT);
    T_EQ(mknod_(&user_cred, d, "sub", S_IFDIR | 0755, &sub), 0);

    /* getattr / setattr */
    Synod__V1__GetattrReq ga = SYNOD__V1__GETATTR_REQ__INIT;
    ga.ino = f;
    Synod__V1__AttrRep *ar;
    T_EQ(META("Getattr", ga, &ar), 0);
    T_EQU(ar->attr->mode, S_IFREG | 0644);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    ga.ino = 9999;
    T_EQ(META("Getattr", ga, NULL), -ENOENT);
    Synod__V1__SetattrReq sa = SYNOD__V1__SETATTR_REQ__INIT;
    sa.rid = tsvc_rid();
    sa.cred = &other_cred;
    sa.ino = f;
    sa.valid = SYNOD__V1__SETATTR_VALID__SETATTR_MODE;
    sa.mode = 0600;
    T_EQ(META("Setattr", sa, NULL), -EPERM);
    sa.rid = tsvc_rid();
    sa.cred = &user_cred;
    sa.valid = SYNOD__V1__SETATTR_VALID__SETATTR_MODE | SYNOD__V1__SETATTR_VALID__SETATTR_SIZE |
               SYNOD__V1__SETATTR_VALID__SETATTR_MTIME_NOW;
    sa.size = 12345;
    T_EQ(META("Setattr", sa, &ar), 0);
    T_EQU(ar->attr->mode, S_IFREG | 0600);
    T_EQU(ar->attr->size, 12345);
    T_EQ(ar->attr->mtime_ns, tnow - 1000); /* "tnow" is the entry's time */
    protobuf_c_message_free_unpacked(&ar->base, NULL);

    /* link, symlink, readlink */
    Synod__V1__LinkReq lr = SYNOD__V1__LINK_REQ__INIT;
    lr.rid = tsvc_rid();
    lr.cred = &user_cred;
    lr.ino = f;
    lr.new_parent = d;
    lr.new_name = "f2";
    Synod__V1__EntryRep *er;
    T_EQ(META("Link", lr, &er), 0);
    T_EQ(er->attr->nlink, 2);
    protobuf_c_message_free_unpacked(&er->base, NULL);
    lr.rid = tsvc_rid();
    T_EQ(META("Link", lr, NULL), -EEXIST);
    Synod__V1__SymlinkReq sl = SYNOD__V1__SYMLINK_REQ__INIT;
    sl.rid = tsvc_rid();
    sl.cred = &user_cred;
    sl.parent = d;
    sl.name = "ln";
    sl.target = "f";
    T_EQ(META("Symlink", sl, &er), 0);
    Synod__V1__ReadlinkReq rl = SYNOD__V1__READLINK_REQ__INIT;
    rl.ino = er->attr->ino;
    protobuf_c_message_free_unpacked(&er->base, NULL);
    Synod__V1__ReadlinkRep *rlr;
    T_EQ(META("Readlink", rl, &rlr), 0);
    T_STREQ(rlr->target, "f");
    protobuf_c_message_free_unpacked(&rlr->base, NULL);
    rl.ino = f;
    T_EQ(META("Readlink", rl, NULL), -EINVAL);

    /* rename: plain, NOREPLACE, EXCHANGE, into own subtree, across directories (never EXDEV) */
    T_EQ(rename_(&user_cred, d, "f2", d, "f3", 0), 0);
    T_EQ(rename_(&user_cred, d, "f3", d, "f", SYNOD__V1__RENAME_FLAGS__RENAME_NOREPLACE), -EEXIST);
    T_EQ(rename_(&user_cred, d, "f3", d, "sub", SYNOD__V1__RENAME_FLAGS__RENAME_EXCHANGE), 0);
    T_EQ(lookup_(&user_cred, d, "f3", &x), 0);
    T_EQU(x, sub);
    T_EQ(rename_(&user_cred, R, "d", sub, "inside", 0), -EINVAL);
    T_EQ(rename_(&user_cred, d, "fifo", sub, "fifo", 0), 0);
    T_EQ(rename_(&user_cred, d, "nope", d, "x", 0), -ENOENT);

    /* readdir: paged, with attributes */
    Synod__V1__ReaddirReq rd = SYNOD__V1__READDIR_REQ__INIT;
    rd.cred = &user_cred;
    rd.ino = d;
    rd.max_entries = 2;
    rd.plus = true;
    size_t total = 0;
    char after[300] = "";
    for (;;) {
        rd.after = after;
        Synod__V1__ReaddirRep *rr;
        T_EQ(META("Readdir", rd, &rr), 0);
        for (size_t i = 0; i < rr->n_entries; i++) {
            T_CHECK(rr->entries[i]->attr != NULL);
            T_EQU(rr->entries[i]->attr->ino, rr->entries[i]->ino);
            snprintf(after, sizeof(after), "%s", rr->entries[i]->name);
        }
        total += rr->n_entries;
        bool eof = rr->eof;
        protobuf_c_message_free_unpacked(&rr->base, NULL);
        if (eof)
            break;
    }
    T_EQ(total, 6); /* f, f3(sub), dev, sock, ln, sub(file f2->f3 swapped) */
    rd.ino = f;
    rd.after = "";
    T_EQ(META("Readdir", rd, NULL), -ENOTDIR);

    /* unlink / rmdir */
    T_EQ(unlink_(&user_cred, R, "d", true), -ENOTEMPTY);
    T_EQ(unlink_(&user_cred, d, "f3", false), -EISDIR);
    T_EQ(unlink_(&other_cred, d, "f", false), -EACCES);
    T_EQ(unlink_(&user_cred, d, "nope", false), -ENOENT);

    /* sticky directory: only the owner of the entry (or the dir) may remove it */
    uint64_t tmp;
    T_EQ(mknod_(&root_cred, R, "tmp", S_IFDIR | 01777, &tmp), 0);
    T_EQ(mknod_(&user_cred, tmp, "mine", S_IFREG | 0644, NULL), 0);
    T_EQ(unlink_(&other_cred, tmp, "mine", false), -EPERM);
    T_EQ(unlink_(&user_cred, tmp, "mine", false), 0);

    /* statfs */
    Synod__V1__StatfsReq sf = SYNOD__V1__STATFS_REQ__INIT;
    Synod__V1__StatfsRep *sfr;
    T_EQ(META("Statfs", sf, &sfr), 0);
    T_CHECK(sfr->inodes >= 8);
    protobuf_c_message_free_unpacked(&sfr->base, NULL);
}

static void test_xattr_open_locks(void)
{
    uint64_t f;
    T_EQ(mknod_(&user_cred, NS_ROOT_INO, "xf", S_IFREG | 0644, &f), 0);
    Synod__V1__SetxattrReq sx = SYNOD__V1__SETXATTR_REQ__INIT;
    sx.rid = tsvc_rid();
    sx.cred = &user_cred;
    sx.ino = f;
    sx.name = "user.a";
    sx.value.data = (uint8_t *)"v1";
    sx.value.len = 2;
    sx.flags = SYNOD__V1__XATTR_FLAGS__XATTR_REPLACE;
    T_EQ(META("Setxattr", sx, NULL), -ENODATA);
    sx.rid = tsvc_rid();
    sx.flags = SYNOD__V1__XATTR_FLAGS__XATTR_CREATE;
    T_EQ(META("Setxattr", sx, NULL), 0);
    sx.rid = tsvc_rid();
    T_EQ(META("Setxattr", sx, NULL), -EEXIST);
    sx.rid = tsvc_rid();
    sx.cred = &other_cred;
    sx.flags = 0;
    T_EQ(META("Setxattr", sx, NULL), -EACCES);
    Synod__V1__GetxattrReq gx = SYNOD__V1__GETXATTR_REQ__INIT;
    gx.cred = &user_cred;
    gx.ino = f;
    gx.name = "user.a";
    Synod__V1__GetxattrRep *gxr;
    T_EQ(META("Getxattr", gx, &gxr), 0);
    T_EQ(gxr->value.len, 2);
    T_MEMEQ(gxr->value.data, "v1", 2);
    protobuf_c_message_free_unpacked(&gxr->base, NULL);
    Synod__V1__ListxattrReq lx = SYNOD__V1__LISTXATTR_REQ__INIT;
    lx.cred = &user_cred;
    lx.ino = f;
    Synod__V1__ListxattrRep *lxr;
    T_EQ(META("Listxattr", lx, &lxr), 0);
    T_EQ(lxr->n_names, 1);
    protobuf_c_message_free_unpacked(&lxr->base, NULL);
    Synod__V1__RemovexattrReq rx = SYNOD__V1__REMOVEXATTR_REQ__INIT;
    rx.rid = tsvc_rid();
    rx.cred = &user_cred;
    rx.ino = f;
    rx.name = "user.a";
    T_EQ(META("Removexattr", rx, NULL), 0);
    rx.rid = tsvc_rid();
    T_EQ(META("Removexattr", rx, NULL), -ENODATA);
    T_EQ(META("Getxattr", gx, NULL), -ENODATA);

    /* open / release */
    Synod__V1__OpenReq op = SYNOD__V1__OPEN_REQ__INIT;
    op.rid = tsvc_rid();
    op.cred = &other_cred;
    op.ino = f;
    op.flags = O_RDWR;
    T_EQ(META("Open", op, NULL), -EACCES);
    op.rid = tsvc_rid();
    op.cred = &user_cred;
    Synod__V1__OpenRep *orp;
    T_EQ(META("Open", op, &orp), 0);
    uint64_t fh = orp->fh;
    protobuf_c_message_free_unpacked(&orp->base, NULL);
    Synod__V1__ReleaseReq rel = SYNOD__V1__RELEASE_REQ__INIT;
    rel.rid = tsvc_rid();
    rel.ino = f;
    rel.fh = fh;
    T_EQ(META("Release", rel, NULL), 0);
    rel.rid = tsvc_rid();
    T_EQ(META("Release", rel, NULL), -EBADF);

    /* locks: the session comes from the ReqId */
    Synod__V1__LockReq lk = SYNOD__V1__LOCK_REQ__INIT;
    lk.rid = tsvc_rid();
    lk.ino = f;
    lk.owner = 1;
    lk.type = SYNOD__V1__LOCK_TYPE__LOCK_WRITE;
    lk.end = UINT64_MAX;
    T_EQ(META("SetLock", lk, NULL), 0);
    tsession = 6;
    lk.rid = tsvc_rid();
    T_EQ(META("SetLock", lk, NULL), -EAGAIN);
    Synod__V1__LockRep *lkr;
    T_EQ(META("GetLock", lk, &lkr), 0);
    T_EQ(lkr->type, SYNOD__V1__LOCK_TYPE__LOCK_WRITE);
    T_EQU(lkr->owner, 1);
    protobuf_c_message_free_unpacked(&lkr->base, NULL);
    /* the holder's session closes (through the log, as the service does): the lock is free */
    Synod__V1__SessionCloseReq sc = SYNOD__V1__SESSION_CLOSE_REQ__INIT;
    sc.session = 5;
    T_EQ(META("SessionClose", sc, NULL), 0);
    lk.rid = tsvc_rid();
    T_EQ(META("SetLock", lk, NULL), 0);
    tsession = 5;
}

static void test_chunks_and_cs(void)
{
    /* a chunkserver registers through the log; then chunks can be placed */
    Synod__V1__RegisterReq reg = SYNOD__V1__REGISTER_REQ__INIT;
    reg.addr = "127.0.0.1:9001";
    reg.uuid = "u1";
    reg.total_bytes = 1ull << 40;
    Synod__V1__RegisterRep *rr;
    T_EQ(tsvc_call("ChunkControl", "RegisterChunkserver", &reg.base, (ProtobufCMessage **)&rr), 0);
    uint32_t cs1 = rr->id;
    T_CHECK(cs1 != 0);
    protobuf_c_message_free_unpacked(&rr->base, NULL);
    reg.addr = "127.0.0.1:9002";
    reg.uuid = "u2";
    T_EQ(tsvc_call("ChunkControl", "RegisterChunkserver", &reg.base, (ProtobufCMessage **)&rr), 0);
    T_CHECK(rr->id != cs1);
    protobuf_c_message_free_unpacked(&rr->base, NULL);
    reg.addr = "";
    T_EQ(tsvc_call("ChunkControl", "RegisterChunkserver", &reg.base, NULL), -EINVAL);

    uint64_t f;
    T_EQ(mknod_(&user_cred, NS_ROOT_INO, "data", S_IFREG | 0644, &f), 0);
    Synod__V1__ChunkOpenWriteReq ow = SYNOD__V1__CHUNK_OPEN_WRITE_REQ__INIT;
    ow.rid = tsvc_rid();
    ow.ino = f;
    ow.index = 0;
    Synod__V1__ChunkOpenWriteRep *owr;
    T_EQ(META("ChunkOpenWrite", ow, &owr), 0);
    T_EQ(owr->chunk->n_replicas, 2); /* goal 2 on distinct chunkservers */
    T_CHECK(owr->chunk->replicas[0]->id != owr->chunk->replicas[1]->id);
    uint64_t chunk = owr->chunk->chunk_id;
    uint32_t version = owr->chunk->version;
    protobuf_c_message_free_unpacked(&owr->base, NULL);
    /* another session cannot take the write lease */
    tsession = 7;
    ow.rid = tsvc_rid();
    T_EQ(META("ChunkOpenWrite", ow, NULL), -EAGAIN);
    tsession = 5;
    Synod__V1__ChunkWriteDoneReq wd = SYNOD__V1__CHUNK_WRITE_DONE_REQ__INIT;
    wd.rid = tsvc_rid();
    wd.ino = f;
    wd.index = 0;
    wd.chunk_id = chunk;
    wd.version = version;
    wd.new_size = 4096;
    wd.mtime_ns = tnow;
    wd.release_lease = true;
    Synod__V1__AttrRep *ar;
    T_EQ(META("ChunkWriteDone", wd, &ar), 0);
    T_EQU(ar->attr->size, 4096);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    Synod__V1__ChunkLocReq cl = SYNOD__V1__CHUNK_LOC_REQ__INIT;
    cl.ino = f;
    cl.count = 4;
    Synod__V1__ChunkLocRep *clr;
    T_EQ(META("ChunkLocations", cl, &clr), 0);
    T_EQ(clr->n_chunks, 1);
    T_EQU(clr->chunks[0]->chunk_id, chunk);
    T_EQ(clr->chunks[0]->n_replicas, 2);
    protobuf_c_message_free_unpacked(&clr->base, NULL);
    /* a bad replica is dropped (version bumped), leaving one */
    Synod__V1__BadReplicaReq br = SYNOD__V1__BAD_REPLICA_REQ__INIT;
    br.rid = tsvc_rid();
    br.chunk_id = chunk;
    br.version = version;
    br.chunkserver = cs1;
    br.err = -EIO;
    T_EQ(META("BadReplica", br, NULL), 0);
    T_EQ(META("ChunkLocations", cl, &clr), 0);
    T_EQ(clr->chunks[0]->n_replicas, 1);
    T_CHECK(clr->chunks[0]->replicas[0]->id != cs1);
    protobuf_c_message_free_unpacked(&clr->base, NULL);

    /* admin: set goal through the log */
    Synod__V1__SetGoalReq sg = SYNOD__V1__SET_GOAL_REQ__INIT;
    sg.rid = tsvc_rid();
    sg.cred = &user_cred;
    sg.ino = f;
    sg.goal = 3;
    Synod__V1__SetGoalRep *sgr;
    T_EQ(tsvc_call("Admin", "SetGoal", &sg.base, (ProtobufCMessage **)&sgr), 0);
    T_EQU(sgr->changed, 1);
    protobuf_c_message_free_unpacked(&sgr->base, NULL);
    Synod__V1__DecommissionReq dc = SYNOD__V1__DECOMMISSION_REQ__INIT;
    dc.chunkserver = 99;
    T_EQ(tsvc_call("Admin", "Decommission", &dc.base, NULL), -ENOENT);
}

int main(void)
{
    tsvc_setup();
    creds();
    T_RUN(test_table);
    T_RUN(test_namespace_ops);
    T_RUN(test_xattr_open_locks);
    T_RUN(test_chunks_and_cs);
    tsvc_teardown();
    return 0;
}
