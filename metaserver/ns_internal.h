/* ns_internal.h - what the ns_*.c files of the namespace state machine share: the apply context (with
 * its small inode cache, so one command that touches the same inode in two roles sees one copy), key
 * builders, record codecs and the POSIX permission helpers. Not part of the module's API.
 *
 * Rule for every operation: validate everything, then write. Inodes and counters are written back by
 * ctx_finish only when the operation succeeds; direct kv_put/kv_del calls come after the last error return.
 */
#ifndef SYNOD_NS_INTERNAL_H
#define SYNOD_NS_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util.h"
#include "metaserver/kv.h"
#include "metaserver/namespace.h"

/* In-memory inode (decoded InodeRec). */
struct inode {
    uint64_t ino;
    uint32_t mode, uid, gid, nlink;
    uint64_t size, rdev;
    int64_t atime, mtime, ctime;
    uint64_t generation;
    uint32_t goal;
    uint64_t parent;
    uint32_t opens;
    bool has_xattrs, has_chunks;
    char *target;
    size_t tlen;
    uint64_t blocks;
    /* cache state */
    bool dirty, deleted;
};

#define NS_ICACHE 8

struct ns_ctx {
    struct ns *ns;
    struct kv_txn *txn;
    const Synod__V1__NsCommand *cmd;
    int64_t now;
    uint64_t session;         /* the request's session (ReqId or envelope), 0 if none */
    const Synod__V1__Cred *cred;
    struct inode *ic[NS_ICACHE];
    int nic;
    Synod__V1__NsCounters *ctr; /* loaded lazily */
    bool ctr_dirty;
    struct ns_reply *rep;
};

/* keys: 'n' '/' tag, then big-endian fields */
struct nkey {
    uint8_t b[2 + 1 + 8 + 8 + NS_XATTR_NAME_MAX + 16];
    size_t len;
};
static inline void nk_init(struct nkey *k, char tag)
{
    k->b[0] = 'n';
    k->b[1] = '/';
    k->b[2] = (uint8_t)tag;
    k->len = 3;
}
static inline void nk_u64(struct nkey *k, uint64_t v)
{
    put_be64(k->b + k->len, v);
    k->len += 8;
}
static inline void nk_u32(struct nkey *k, uint32_t v)
{
    k->b[k->len] = (uint8_t)(v >> 24); k->b[k->len + 1] = (uint8_t)(v >> 16);
    k->b[k->len + 2] = (uint8_t)(v >> 8); k->b[k->len + 3] = (uint8_t)v;
    k->len += 4;
}
static inline void nk_u8(struct nkey *k, uint8_t v)
{
    k->b[k->len++] = v;
}
static inline void nk_bytes(struct nkey *k, const void *p, size_t n)
{
    ASSERT(k->len + n <= sizeof(k->b));
    memcpy(k->b + k->len, p, n);
    k->len += n;
}
static inline uint32_t get_be32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* kv wrappers: a read error aborts (a replica must not diverge) */
int nk_get(struct ns_ctx *c, const struct nkey *k, char **val, size_t *vlen); /* 0 or -ENOENT */
void nk_put(struct ns_ctx *c, const struct nkey *k, const void *val, size_t vlen);
void nk_put_msg(struct ns_ctx *c, const struct nkey *k, const ProtobufCMessage *m);
void nk_del(struct ns_ctx *c, const struct nkey *k);
/* get + unpack; NULL if absent. Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *nk_get_msg(struct ns_ctx *c, const struct nkey *k, const ProtobufCMessageDescriptor *d);

/* Write back (ok) or drop the command's cached inodes and counters. Read-only contexts pass false. */
void ctx_finish(struct ns_ctx *c, bool ok);

/* Unpack the iterator's current value as a `d` record (aborts on a corrupt record). Free with
 * protobuf_c_message_free_unpacked. */
ProtobufCMessage *iter_msg(const struct kv_iter *it, const ProtobufCMessageDescriptor *d);

/* counters */
Synod__V1__NsCounters *ctr_get(struct ns_ctx *c);
void ctr_dirty(struct ns_ctx *c);

/* inodes: cached per command; -ENOENT if absent (or deleted in this command) */
int ino_get(struct ns_ctx *c, uint64_t ino, struct inode **out);
struct inode *ino_new(struct ns_ctx *c, uint64_t ino); /* a fresh zeroed cached inode, dirty */
void ino_dirty(struct inode *n);
void ino_purge(struct ns_ctx *c, struct inode *n); /* delete inode, xattrs, chunks (queued), locks */
void attr_fill(Synod__V1__Attr *a, const struct inode *n);

/* dirents */
int dirent_get(struct ns_ctx *c, uint64_t parent, const char *name, uint64_t *ino, uint32_t *type);
void dirent_put(struct ns_ctx *c, uint64_t parent, const char *name, uint64_t ino, uint32_t mode);
void dirent_del(struct ns_ctx *c, uint64_t parent, const char *name);
bool dir_is_empty(struct ns_ctx *c, uint64_t ino);

/* permissions */
#define MAY_R 4
#define MAY_W 2
#define MAY_X 1
bool cred_is_root(const Synod__V1__Cred *cr);
uint32_t cred_uid(const Synod__V1__Cred *cr);
uint32_t cred_gid(const Synod__V1__Cred *cr);
bool cred_in_group(const Synod__V1__Cred *cr, uint32_t gid);
int may_access(const Synod__V1__Cred *cr, const struct inode *n, int want);
int sticky_check(const Synod__V1__Cred *cr, const struct inode *dir, const struct inode *victim);

/* replies */
void reply_msg(struct ns_ctx *c, const ProtobufCMessage *m);
void reply_empty(struct ns_ctx *c);

/* operations, one per request type (ns_inode.c, ns_chunk.c, ns_lock.c, ns_cs.c) */
int op_lookup(struct ns_ctx *c, const Synod__V1__LookupReq *r);
int op_getattr(struct ns_ctx *c, const Synod__V1__GetattrReq *r);
int op_setattr(struct ns_ctx *c, const Synod__V1__SetattrReq *r);
int op_mknod(struct ns_ctx *c, const Synod__V1__MknodReq *r);
int op_unlink(struct ns_ctx *c, const Synod__V1__UnlinkReq *r);
int op_rename(struct ns_ctx *c, const Synod__V1__RenameReq *r);
int op_link(struct ns_ctx *c, const Synod__V1__LinkReq *r);
int op_symlink(struct ns_ctx *c, const Synod__V1__SymlinkReq *r);
int op_readlink(struct ns_ctx *c, const Synod__V1__ReadlinkReq *r);
int op_readdir(struct ns_ctx *c, const Synod__V1__ReaddirReq *r);
int op_setxattr(struct ns_ctx *c, const Synod__V1__SetxattrReq *r);
int op_getxattr(struct ns_ctx *c, const Synod__V1__GetxattrReq *r);
int op_listxattr(struct ns_ctx *c, const Synod__V1__ListxattrReq *r);
int op_removexattr(struct ns_ctx *c, const Synod__V1__RemovexattrReq *r);
int op_open(struct ns_ctx *c, const Synod__V1__OpenReq *r);
int op_release(struct ns_ctx *c, const Synod__V1__ReleaseReq *r);
int op_set_goal(struct ns_ctx *c, const Synod__V1__SetGoalReq *r);
int op_statfs(struct ns_ctx *c);
int op_chunk_locations(struct ns_ctx *c, const Synod__V1__ChunkLocReq *r);
int op_chunk_open_write(struct ns_ctx *c, const Synod__V1__ChunkOpenWriteReq *r);
int op_chunk_write_done(struct ns_ctx *c, const Synod__V1__ChunkWriteDoneReq *r);
int op_bad_replica(struct ns_ctx *c, const Synod__V1__BadReplicaReq *r);
int op_lease_expire(struct ns_ctx *c, const Synod__V1__LeaseExpire *r);
int op_get_lock(struct ns_ctx *c, const Synod__V1__LockReq *r);
int op_set_lock(struct ns_ctx *c, const Synod__V1__LockReq *r);
int op_cs_register(struct ns_ctx *c, const Synod__V1__RegisterReq *r);
int op_cs_heartbeat(struct ns_ctx *c, const Synod__V1__HeartbeatReq *r);
int op_cs_report(struct ns_ctx *c, const Synod__V1__ChunkReportReq *r);
int op_cs_dead(struct ns_ctx *c, const Synod__V1__ChunkserverDead *r);
int op_decommission(struct ns_ctx *c, const Synod__V1__DecommissionReq *r);
int op_repl_limit(struct ns_ctx *c, const Synod__V1__ReplLimitReq *r);
int op_repl_start(struct ns_ctx *c, const Synod__V1__ReplStart *r);

/* chunk-side hooks used by the namespace */
/* Truncation to `size` inside a chunk: that chunk's extent (and the inode's blocks) clamped to it. */
void chunk_clamp_extent(struct ns_ctx *c, struct inode *n, uint64_t size);
void chunks_drop_from(struct ns_ctx *c, struct inode *n, uint64_t first_index); /* truncate / purge */
void chunks_set_goal(struct ns_ctx *c, struct inode *n);
void leases_release_session(struct ns_ctx *c, uint64_t session);
void locks_release_session(struct ns_ctx *c, uint64_t session);
void locks_drop_inode(struct ns_ctx *c, uint64_t ino);
/* release one logged open handle's reference (close or session end) */
void open_ref_drop(struct ns_ctx *c, uint64_t ino);
/* n lost its last name: index it as an orphan (n/O), purged by the leader's OrphanPurge once no session
 * holds it open (logged handles: n->opens; memory opens: the leader's ns_opens table) */
void orphan_add(struct ns_ctx *c, const struct inode *n);
int op_orphan_purge(struct ns_ctx *c, const Synod__V1__OrphanPurge *r);


/* chunk table internals shared by ns_chunk.c and ns_cs.c */
Synod__V1__ChunkRec *chunk_get(struct ns_ctx *c, uint64_t ino, uint64_t index); /* NULL if absent */
Synod__V1__ChunkRec *chunk_get_by_id(struct ns_ctx *c, uint64_t chunk_id);     /* NULL if absent */
/* Write `nw` (NULL: delete) replacing `old` (NULL: new), keeping n/K, n/h and n/g in step. */
void chunk_store(struct ns_ctx *c, const Synod__V1__ChunkRec *old, const Synod__V1__ChunkRec *nw);
/* Where n's chunks [first, first+count) live (copies on DEAD chunkservers left out); indexes without a
 * record are holes. Free with chunk_locs_free. Returns how many records. */
size_t chunk_locs_get(struct ns_ctx *c, const struct inode *n, uint64_t first, uint32_t count,
                      Synod__V1__ChunkLoc **out_locs, Synod__V1__ChunkLoc ***out_ptrs);
void chunk_locs_free(Synod__V1__ChunkLoc *locs, Synod__V1__ChunkLoc **ptrs, size_t n);
/* n/H <cs>: the chunkserver's copy count (le64), kept by chunk_store; absent if it registered before the
 * state had counters (NsCounters.counted). */
void cs_held_key(struct nkey *k, uint32_t cs);
void chunk_free(Synod__V1__ChunkRec *r);
void delete_enqueue(struct ns_ctx *c, uint32_t cs, uint64_t chunk_id, uint32_t version);
/* Remove chunkserver cs from the chunk's replica set; false if absent. The version is bumped when the copy
 * `failed` (bad replica, chain failure, lost, dropped on purpose) or a write lease is live; a copy that is
 * only out of reach (dead, missing from a report) with no lease keeps it, so it may rejoin. */
bool replica_remove(struct ns_ctx *c, uint64_t chunk_id, uint32_t cs, bool failed);
/* A replica reported bad at `version` (by a client, or by a chunkserver of the chain): if the chunk is still
 * at that version and cs in its set, remove it (bumping the version) and queue the deletion of its copy.
 * False when there was nothing to do (a retry, a concurrent report, a stale version). */
bool bad_replica_apply(struct ns_ctx *c, uint64_t chunk_id, uint32_t version, uint32_t cs);
/* replica_remove, then queue the deletion of cs's copy (any version). False if cs was not in the set. */
bool replica_drop(struct ns_ctx *c, uint64_t chunk_id, uint32_t cs);
/* admin commands (ns_admin.c) */
int op_replica_drop(struct ns_ctx *c, const Synod__V1__ReplicaDrop *r);
int op_fsck_repair(struct ns_ctx *c, const Synod__V1__FsckRepair *r);
Synod__V1__ChunkserverRec *cs_get(struct ns_ctx *c, uint32_t id); /* NULL if absent */
void cs_put(struct ns_ctx *c, const Synod__V1__ChunkserverRec *r);
/* Chunks placed on a chunkserver since its last logged heartbeat (n/a+cs, u32 LE; absent = 0). Kept out of
 * its n/s record on purpose: placement iterates n/s, and a LevelDB iterator walks every version of a key
 * still in the memtable, so a record rewritten on every placement made each allocation scan thousands of
 * dead versions (3.5 ms per ChunkOpenWrite after a few thousand small files). Gets do not pay that. */
void cs_recent_key(struct nkey *k, uint32_t cs);
uint32_t cs_recent(struct ns_ctx *c, uint32_t cs);

/* placement candidates: UP chunkservers with capacity, in id order */
struct cs_cand {
    uint32_t id;
    uint64_t total, used;
    uint32_t load, recent;
    char *label;
    char *addr;
    uint32_t busy;     /* caller's throttle counter (copies to it) */
    uint32_t busy_src; /* copies from it */
};
size_t cands_load(struct ns_ctx *c, struct cs_cand **out);
void cands_free(struct cs_cand *v, size_t n);
/* Choose up to `want` distinct candidates not in exclude[], best first (free space, then load and recent
 * placements, then id), spreading across labels first; skip those with busy >= max_busy (0: no limit).
 * Deterministic. Returns the number chosen (ids in out). */
size_t placement_pick(struct cs_cand *v, size_t n, const uint32_t *exclude, size_t nexcl, size_t want,
                      uint32_t max_busy, uint32_t *out);

#endif
