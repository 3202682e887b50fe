/* fs_ops.h - the libfuse low-level operations of synod-mount: each kernel request becomes metaserver RPCs
 * (through the meta client) and chunk I/O (through the chunk I/O layer).
 *
 * Credentials come from the request (uid, gid, supplementary groups via fuse_req_getgroups); the
 * metaserver checks permissions, so the mount does not use default_permissions. The kernel applies the
 * umask itself (we never ask for FUSE_CAP_DONT_MASK). Attribute and entry replies carry the configured
 * timeouts; the reported size also counts this client's unflushed writes.
 *
 * Lookup references: every successful entry reply (lookup, mknod, mkdir, create, symlink, link) and every
 * readdirplus entry except "." and ".." adds one in the inode table; a reply the kernel never received
 * (fuse_reply_* failed) takes it back; forget/forget_multi drop them.
 *
 * Locks: getlk/setlk (POSIX) and flock go to the metaserver, owned by (session, fi->lock_owner). A blocking
 * request polls with exponential backoff (10 ms .. 1 s) until granted, or answers EINTR once the kernel
 * interrupts it. flush releases the POSIX locks of the closing owner, release the flock of the file.
 */
#ifndef SYNOD_FUSE_FS_OPS_H
#define SYNOD_FUSE_FS_OPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "fuse-client/chunk_io.h"
#include "fuse-client/inode_table.h"
#include "fuse-client/meta_client.h"

struct fs {
    struct mc *mc;
    struct cio *cio;
    struct itab *it;
    struct oref *orefs;      /* inodes held open (memory opens at the leader, see open_refs.h) */
    struct dcache *dc;       /* lookup look-ahead from directory listings (dir_cache.h); NULL: off */
    double attr_timeout;     /* seconds the kernel may cache attributes */
    double entry_timeout;    /* seconds the kernel may cache names */
    double negative_timeout; /* seconds the kernel may cache "no such name" (0 = never) */
    uint32_t max_write;      /* bytes per write request we ask for (<= 1 MiB) */
    uint32_t max_readahead;  /* kernel read-ahead we ask for */
    uint32_t readdir_page;   /* entries per Readdir RPC */
    bool sync_close;         /* flush (close) and release sync what was written, as fsync does */
    /* Directories as this mount's own last change left them (the parent_attr of its replies), to answer
     * the GETATTR the kernel sends after each change in a directory: valid only while no other change
     * went through this mount since (`changes`) and for attr_timeout. Initialise mu with fsops_init. */
    atomic_uint_fast64_t changes; /* requests that may have changed the namespace (fsops_changed) */
    pthread_mutex_t dattr_mu;
    struct fs_dattr {
        Synod__V1__Attr a; /* a.ino 0: empty */
        uint64_t changes, until_ns;
    } dattr[64];
    /* Memory releases waiting to be sent, batched by the releaser thread (fsops_start / fsops_stop). */
    pthread_mutex_t rel_mu;
    pthread_cond_t rel_cv;
    uint64_t *rel_ino, *rel_seq;
    size_t rel_n;
    bool rel_stop, rel_running;
    pthread_t rel_thread;
};

#define FSOPS_RELEASE_MS  10   /* how long the releaser gathers memory releases before one call */
#define FSOPS_RELEASE_MAX 1024 /* memory releases in one call at most (the leader takes 4096) */

/* Initialise what the table needs besides the configuration fields (before the session starts). */
void fsops_init(struct fs *fs);
/* Start the releaser thread (fs->mc ready): an inode's last close queues its memory Release, and the thread
 * sends what gathered in FSOPS_RELEASE_MS (or FSOPS_RELEASE_MAX of them) as one Release call. A Release
 * later than the close is safe: the leader orders Opens and Releases by their seq (ns_opens.h), and it only
 * keeps an unlinked file a little longer. */
void fsops_start(struct fs *fs);
/* Stop the releaser (after the FUSE session is gone, before fs->mc is freed); releases still queued are
 * dropped: the session's close drops every open the leader holds for it. */
void fsops_stop(struct fs *fs);

/* The meta client's change hook (mc_set_change_hook; arg: the struct fs): a request that may have changed
 * the namespace makes every cached directory listing and directory attribute stale. */
void fsops_changed(void *arg, const char *method, const ProtobufCMessage *req);
/* The operation table; the session's userdata must be a struct fs. */
extern const struct fuse_lowlevel_ops fsops_ops;

#endif
