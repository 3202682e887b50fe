/* ns_opens.h - the leader's memory of which inodes each client session holds open ("memory opens").
 *
 * WHY. Logging every open and close cost a Paxos commit each (an fsync on a majority), so reading a small
 * file cost two. An open only matters when the file loses its last name while open: apply then keeps the
 * inode as an orphan (n/O) and the leader purges it once no session holds it. So opens live here, in the
 * serving leader's memory, and only the purge goes through the log.
 *
 * ORDERING. Each client numbers its Open, Release and report calls with one increasing `seq` (per mount).
 * An entry (session, ino) remembers the highest seq that registered it. A Release(seq) removes the entry
 * only if it is older than the Release, so a Release overtaken by a later Open of the same inode (another
 * thread of the client) cannot drop it. A client sends a Release only when its last handle of the inode is
 * gone and no Open of it is pending, so a registration is never lost; a stale duplicate of an old Open
 * arriving after the Release can only leave an extra entry (the purge waits until the session ends).
 *
 * A NEW LEADER knows nothing (ns_opens_reset at its first tick). Every session must send its whole set
 * (ns_opens_report, asked through SessionKeepaliveRep.need_opens) before the leader purges anything: a
 * report replaces the session's older entries (seq below the report's) and marks it reported. The purge
 * rule, applied by the namespace service: every live session of the runtime is reported, and the orphan
 * is held by no entry. A session that expires or closes drops its entries.
 *
 * Thread-safe (one mutex): RPC workers register and release, the runtime thread checks and resets.
 */
#ifndef SYNOD_NS_OPENS_H
#define SYNOD_NS_OPENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ns_opens;

struct ns_opens *ns_opens_new(void);
void ns_opens_free(struct ns_opens *o);
/* Forget everything: entries and which sessions reported (a new leadership). */
void ns_opens_reset(struct ns_opens *o);
/* Session holds ino open as of seq (an open that the log applied). Returns true if the entry is new. */
bool ns_opens_register(struct ns_opens *o, uint64_t session, uint64_t ino, uint64_t seq);
/* An open about to be checked against the state: registered (pending) first, so that the purge check,
 * which counts pending entries as held, cannot miss it. *held: the session already held ino (a confirmed
 * entry), so it may open it again even with no name left (e.g. /proc/PID/fd/N). End with ns_opens_end. */
void ns_opens_begin(struct ns_opens *o, uint64_t session, uint64_t ino, uint64_t seq, bool *held);
/* The open begun with ns_opens_begin succeeded (ok: the entry is confirmed) or failed (the entry goes if
 * nothing else made it). */
void ns_opens_end(struct ns_opens *o, uint64_t session, uint64_t ino, bool ok);
/* The session's last handle of ino is gone as of seq: drop the entry if it is older than seq. */
void ns_opens_release(struct ns_opens *o, uint64_t session, uint64_t ino, uint64_t seq);
/* The session's whole set as of seq: adds the listed inodes and drops its entries older than seq that are
 * not listed; marks the session reported. */
void ns_opens_report(struct ns_opens *o, uint64_t session, uint64_t seq, const uint64_t *inos, size_t n);
/* Did the session report since the last reset? */
bool ns_opens_reported(struct ns_opens *o, uint64_t session);
/* Does any session hold ino? */
bool ns_opens_held(struct ns_opens *o, uint64_t ino);
/* Does this session hold ino? */
bool ns_opens_holds(struct ns_opens *o, uint64_t session, uint64_t ino);
/* The session ended (closed or expired): drop its entries and its reported mark. */
void ns_opens_session_drop(struct ns_opens *o, uint64_t session);
/* Entries in the table (status, tests). */
size_t ns_opens_count(struct ns_opens *o);

#endif
