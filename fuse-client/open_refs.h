/* open_refs.h - which inodes this mount holds open, for the metaserver's memory opens (metaserver/ns_opens.h).
 *
 * The leader keeps, per session, the inodes a client holds open, in memory; it purges a file that lost its
 * last name only when nobody holds it. This table is the client's side: a count per inode (open handles
 * plus opens in flight) and one increasing sequence number (`seq`) that orders this mount's Open, Release
 * and report calls at the leader:
 *  - before an Open is sent: oref_open_begin (count + 1, a seq for the request);
 *  - a Mknod that opens (create) does not know its inode yet: oref_create_begin gives its seq and marks it
 *    pending; oref_create_end(ino) adds the handle (or drops the mark on failure);
 *  - a handle closes, or an Open failed: oref_put; when the count reaches 0 it returns true and the seq
 *    for the Release to send;
 *  - the leader asks for the whole set (a new leader, a new session): oref_snapshot. Its seq is the
 *    smallest seq of a create still pending, so the report cannot drop the entry a create's apply has
 *    just registered but whose reply has not come back yet.
 * Thread-safe (one mutex).
 */
#ifndef SYNOD_FUSE_OPEN_REFS_H
#define SYNOD_FUSE_OPEN_REFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct oref;

struct oref *oref_new(void);
void oref_free(struct oref *o);
/* An Open of ino is about to be sent: count + 1; returns its seq. */
uint64_t oref_open_begin(struct oref *o, uint64_t ino);
/* A create (Mknod with open) is about to be sent: returns its seq (pending until oref_create_end). */
uint64_t oref_create_begin(struct oref *o);
/* The create with seq ended: ino != 0 on success (count + 1), 0 on failure. */
void oref_create_end(struct oref *o, uint64_t seq, uint64_t ino);
/* One handle (or failed open) of ino is gone. True when it was the last: *release_seq is the seq for the
 * Release to send. */
bool oref_put(struct oref *o, uint64_t ino, uint64_t *release_seq);
/* The whole set: *inos (caller frees) with *n inodes held or being opened; returns the report's seq. */
uint64_t oref_snapshot(struct oref *o, uint64_t **inos, size_t *n);
/* How many handles (and opens in flight) of ino (tests). */
uint64_t oref_count(struct oref *o, uint64_t ino);

#endif
