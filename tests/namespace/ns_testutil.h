/* ns_testutil.h - a harness for the namespace state machine tests: a temporary LevelDB, a command clock,
 * a client session, and one wrapper per operation returning 0 or -errno with the decoded results. */
#ifndef SYNOD_NS_TESTUTIL_H
#define SYNOD_NS_TESTUTIL_H

#include <errno.h>
#include <leveldb/c.h>
#include <string.h>
#include <stdbool.h>
#include <stdint.h>

#include "metaserver/kv.h"
#include "metaserver/namespace.h"

struct tns {
    char dir[256];
    leveldb_t *db;
    struct ns *ns;
    int64_t now;              /* next command time; advanced 1 us per command */
    uint64_t session, seq;    /* the client session used in ReqIds */
    uint64_t next_session;    /* the harness plays the rsm runtime's session table */
    struct kv_txn *txn;       /* when non-NULL, commands accumulate here (tns_begin/tns_commit) */
    bool sync;                /* synced commits */
    bool keep_orphans;        /* false: every command is followed by the purge of all orphans (n/O), as a
                               * leader with no memory opens would do; true: orphans stay (t_purge_orphans) */
};

struct tcred {
    Synod__V1__Cred c;
    uint32_t groups[8];
};

/* Open a fresh database in a new temp dir, apply NsInit (root 0755, goal 1) and open a session. */
void tns_open(struct tns *t);
void tns_open_at(struct tns *t, const char *dir);
/* Close and delete the directory (unless keep). */
void tns_close(struct tns *t, bool keep);
void tns_begin(struct tns *t);
void tns_commit(struct tns *t);

struct tcred *tcred(struct tcred *cr, uint32_t uid, uint32_t gid, int ngroups, ...);
extern struct tcred *ROOT;

/* Apply one command (the envelope's now_ns and session are filled in). *reply: decoded (free with
 * protobuf_c_message_free_unpacked) or NULL; reply may be NULL. Returns the command's errno. */
int tns_apply(struct tns *t, Synod__V1__NsCommand *cmd, ProtobufCMessage **reply);
Synod__V1__ReqId *tns_rid(struct tns *t);
/* Apply OrphanPurge of every orphan (n/O) except those in keep[0..nkeep). Returns how many were listed. */
size_t t_purge_orphans(struct tns *t, const uint64_t *keep, size_t nkeep);

int t_mknod(struct tns *t, struct tcred *cr, uint64_t parent, const char *name, uint32_t mode, uint64_t *ino);
int t_create(struct tns *t, struct tcred *cr, uint64_t parent, const char *name, uint32_t mode, uint32_t flags,
             bool excl, uint64_t *ino, uint64_t *fh);
int t_unlink(struct tns *t, struct tcred *cr, uint64_t parent, const char *name, bool is_dir);
int t_rename(struct tns *t, struct tcred *cr, uint64_t p, const char *n, uint64_t np, const char *nn,
             uint32_t flags);
int t_link(struct tns *t, struct tcred *cr, uint64_t ino, uint64_t np, const char *nn);
int t_symlink(struct tns *t, struct tcred *cr, uint64_t p, const char *n, const char *target, uint64_t *ino);
int t_readlink(struct tns *t, uint64_t ino, char *buf, size_t len);
int t_lookup(struct tns *t, struct tcred *cr, uint64_t p, const char *n, Synod__V1__Attr *out);
int t_getattr(struct tns *t, uint64_t ino, Synod__V1__Attr *out);
int t_setattr(struct tns *t, struct tcred *cr, uint64_t ino, uint32_t valid, uint32_t mode, uint32_t uid,
              uint32_t gid, uint64_t size, Synod__V1__Attr *out);
int t_open(struct tns *t, struct tcred *cr, uint64_t ino, uint32_t flags, uint64_t *fh);
int t_release(struct tns *t, uint64_t ino, uint64_t fh);
int t_setxattr(struct tns *t, struct tcred *cr, uint64_t ino, const char *name, const char *val, uint32_t flags);
int t_getxattr(struct tns *t, struct tcred *cr, uint64_t ino, const char *name, char *buf, size_t cap, size_t *len);
int t_listxattr(struct tns *t, struct tcred *cr, uint64_t ino, size_t *count);
int t_removexattr(struct tns *t, struct tcred *cr, uint64_t ino, const char *name);
/* *rep: caller frees with synod__v1__readdir_rep__free_unpacked(rep, NULL) */
int t_readdir(struct tns *t, struct tcred *cr, uint64_t ino, const char *after, uint32_t max, bool plus,
              Synod__V1__ReaddirRep **rep);
int t_lock(struct tns *t, bool set, uint64_t ino, uint64_t owner, uint32_t kind, uint32_t type, uint64_t start,
           uint64_t end, Synod__V1__LockRep *out);
/* A new session id (the runtime's job; the namespace only sees ids). */
uint64_t t_session_open(struct tns *t);
/* End a session: expire = the runtime's session_expired hook (ns_session_release), else SessionClose. */
int t_session_end(struct tns *t, uint64_t session, bool expire);

/* Every key/value under the prefix as one digest-able dump: calls cb for each record. */
int tns_dump(leveldb_t *db, int (*cb)(void *arg, const char *k, size_t kl, const char *v, size_t vl), void *arg);
/* A 64-bit FNV-1a digest of the whole namespace state. */
uint64_t tns_digest(leveldb_t *db, size_t *nkeys);

#endif
