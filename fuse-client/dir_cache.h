/* dir_cache.h - look-ahead for lookups ("statahead"): when a program looks up many names of one directory
 * in a row (ls -l, find, a backup, stat of every file, opening every file of a directory), synod-mount
 * fetches the directory's listing with attributes (Readdir plus, 1024 entries per RPC) and answers the
 * following lookups from it, instead of one Lookup RPC per name.
 *
 * Freshness: a listing is used only while it is younger than `ttl` (the smaller of the entry and attribute
 * timeouts), and the kernel is given the remaining time, not the full timeout, so a name or attribute is
 * never older than what the kernel's own cache could show.
 *
 * Names and attributes age differently under this mount's own changes:
 *  - attributes: any change made through this mount (create, unlink, rename, setattr, link, a write
 *    completed...) makes every listing's attributes stale at once (a generation counter); from then on a
 *    listing answers no lookup with attributes.
 *  - names: the names this mount creates, removes or renames are patched into the listings of their
 *    directory (dcache_touch), including a listing being fetched at that moment. A touched name is
 *    "unsure" (it may exist or not): it answers neither way and its lookups go to the server. Every other
 *    name keeps answering "no such name" (dcache_absent) while the listing is fresh: a program creating or
 *    renaming files into a listed directory needs no Lookup RPC to learn that the new name is free. A
 *    change that cannot be patched (dcache_forget_names) drops every listing.
 * So a name created by another client is missed for at most `ttl`, as with positive answers.
 *
 * Permissions: a listing answers only lookups with the credentials (uid, gid, groups) that fetched it, so
 * nobody learns names through another user's read permission.
 *
 * Thread-safe (one mutex; fetches run on the caller's thread outside it).
 */
#ifndef SYNOD_FUSE_DIR_CACHE_H
#define SYNOD_FUSE_DIR_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.pb-c.h"

struct dcache;
struct dcache_fill;

/* ttl_ns 0 disables the cache; `trigger`: lookups that went to the server in one directory within ttl
 * before a listing is fetched; `max_entries`: larger directories are not listed. */
struct dcache *dcache_new(uint64_t ttl_ns, uint32_t trigger, uint32_t max_entries);
void dcache_free(struct dcache *c);
/* The credentials of a request, as one key (uid, gid, groups). */
uint64_t dcache_cred_key(uint32_t uid, uint32_t gid, const uint32_t *groups, size_t n);
/* name in dir's fresh listing fetched with cred: copies its attributes to *out and the listing's age. */
bool dcache_get(struct dcache *c, uint64_t dir, uint64_t cred, const char *name, Synod__V1__Attr *out,
                uint64_t *age_ns);
/* name is not in dir's fresh listing fetched with cred (nor touched by this mount since): true, with the
 * listing's age. */
bool dcache_absent(struct dcache *c, uint64_t dir, uint64_t cred, const char *name, uint64_t *age_ns);
/* A lookup in dir went to the server (found or not). Returns a fill to run (this thread fetches the listing: add every
 * entry, then dcache_fill_end) or NULL. */
struct dcache_fill *dcache_miss(struct dcache *c, uint64_t dir, uint64_t cred);
/* Add one entry; false when the directory turned out too large (stop fetching). */
bool dcache_fill_add(struct dcache_fill *f, const char *name, const Synod__V1__Attr *a);
/* Install the listing (ok and complete; names this mount touched meanwhile are marked unsure, and its
 * attributes count as stale if anything changed through this mount meanwhile) or drop it; frees f. */
void dcache_fill_end(struct dcache_fill *f, bool ok);
/* Something changed through this mount: every listing's attributes are stale. Cheap (an atomic
 * increment). A listing whose attributes went stale before it answered `trigger` lookups was wasted (a
 * program renaming or unlinking every file of a directory while it stats them): the next one for that
 * directory waits ttl, then 2 ttl, 4 ttl... (up to 32 ttl). */
void dcache_invalidate(struct dcache *c);
/* This mount changed (or tried to change) `name` in dir: dcache_invalidate, and the name becomes unsure in
 * dir's listings and in fills of dir running now. Call it after the request's answer (or failure) and
 * before the kernel hears of it. */
void dcache_touch(struct dcache *c, uint64_t dir, const char *name);
/* A change whose names are not known: drop every listing and every running fill's result. */
void dcache_forget_names(struct dcache *c);
/* Listings installed so far, and "no such name" answers given (tests, statistics). */
uint64_t dcache_fills(struct dcache *c);
uint64_t dcache_negatives(struct dcache *c);

#endif
