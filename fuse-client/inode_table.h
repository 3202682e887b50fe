/* inode_table.h - synod-mount's table of the inodes the kernel knows: lookup counts and per-inode state.
 *
 * The kernel holds a lookup reference for every entry we hand it (lookup, create, mknod, mkdir, symlink,
 * link, each readdirplus entry except "." and ".."), and gives them back with forget/forget_multi. An
 * inode's client-side state (its struct cio_file: buffered writes, location cache, read-ahead) lives in
 * this table while the kernel references it or a handle has it open (a pin); it is freed when both counts
 * reach zero. The root inode is never freed. Unlinked-but-open files are kept alive by the metaserver
 * (open handles), so nothing here needs to know about unlink.
 *
 * Thread-safe (one mutex over a hash table; per-inode data has its own locks).
 */
#ifndef SYNOD_FUSE_INODE_TABLE_H
#define SYNOD_FUSE_INODE_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "fuse-client/chunk_io.h"

struct itab;
struct itab_inode {
    uint64_t ino;
    struct cio_file *file; /* data state; created with the entry, freed with it */
    /* private to the table */
    uint64_t nlookup;
    uint32_t pins;
    uint64_t xgen;         /* xattr generation (see itab_xattr_gen) */
    uint64_t nocaps_until; /* "no security.capability" known until this monotonic time (ns); 0: unknown */
    bool stamped;          /* the kernel's page cache holds data of the version `stamp` (see itab_keep_cache) */
    struct itab_stamp {
        int64_t ctime_ns, mtime_ns;
        uint64_t size;
    } stamp;
    struct itab_inode *next;
};

/* A table whose entries get cio files from `cio` (borrowed). Cannot fail. */
struct itab *itab_new(struct cio *cio);
/* Free every entry (after the session loop ended). */
void itab_free(struct itab *t);

/* Add `n` kernel lookup references to ino (creating the entry; `size` seeds a new entry's file size, and
 * refreshes an existing one). Returns the entry (valid while referenced). */
struct itab_inode *itab_lookup(struct itab *t, uint64_t ino, uint64_t size);
/* Drop n kernel references (forget); frees the entry at zero references and pins. */
void itab_forget(struct itab *t, uint64_t ino, uint64_t n);
/* Pin ino (creating the entry if the kernel's reference predates it, e.g. the root): for open handles and
 * in-progress operations. Returns the entry; release with itab_unpin. */
struct itab_inode *itab_pin(struct itab *t, uint64_t ino, uint64_t size);
void itab_unpin(struct itab *t, struct itab_inode *n);
/* An attribute reply from the metaserver says ino has `meta_size`: remember it (if the inode is in the
 * table) and return the size this client must report, which also counts its own unflushed writes. */
uint64_t itab_note_size(struct itab *t, uint64_t ino, uint64_t meta_size);
/* Is ino in the table (the kernel or a handle references it)? */
bool itab_has(struct itab *t, uint64_t ino);

/* The kernel asks for `security.capability` before EVERY write(2) to a file (it must drop file
 * capabilities on a write): an RPC to the leader per write. The table caches the answer "ino has none" for
 * a while, like attributes. Other mounts' changes are seen when it expires; this mount's own setxattr and
 * removexattr bracket their RPC with itab_xattr_changed.
 *
 * A negative answer is recorded with the generation read before its RPC was sent, and dropped if the
 * inode's xattrs changed meanwhile (or its entry was freed and made again: generations are unique in the
 * table). Returns 0 if ino is not in the table (nothing is cached for it then). */
uint64_t itab_xattr_gen(struct itab *t, uint64_t ino);
/* ino had no security.capability at generation gen: remember it until `until_ns` (monotonic). */
void itab_nocaps_note(struct itab *t, uint64_t ino, uint64_t gen, uint64_t until_ns);
/* Is ino known to have no security.capability at monotonic time now_ns? */
bool itab_nocaps(struct itab *t, uint64_t ino, uint64_t now_ns);
/* This mount is changing ino's xattrs: forget what is cached and start a new generation. */
void itab_xattr_changed(struct itab *t, uint64_t ino);
/* Close-to-open without rereading unchanged files. An open must drop the kernel's page cache of the file
 * when another client may have changed the data since it was read; when nothing changed, keeping it
 * (FOPEN_KEEP_CACHE) turns a re-read into page-cache hits. The version of the data is the attribute triple
 * (ctime, mtime, size) from the Open answer: every change of the data moves ctime (set by the leader at apply
 * time, in ns, and not settable by clients), and mtime and size besides. itab_keep_cache(s) answers true if
 * the cache is known to hold data of version s; otherwise it records s (the caller then opens without
 * keep_cache, so the kernel drops the cache and refills it from data of version s or later) and answers
 * false. A write or truncate through this mount forgets the version (itab_cache_changed). */
bool itab_keep_cache(struct itab *t, uint64_t ino, const struct itab_stamp *s);
void itab_cache_changed(struct itab *t, uint64_t ino);
/* Number of entries (tests, statistics). */
uint64_t itab_count(struct itab *t);

#endif
