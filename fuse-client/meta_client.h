/* meta_client.h - synod-mount's client of the metaserver cluster: leader discovery, the session, exactly-once
 * request ids, retries, and the one total timeout after which an operation fails with EIO.
 *
 * LEADER. The client starts from a list of addresses and talks to one "current" target. A follower answers
 * -EREMOTE with the detail "leader=host:port": the client switches to that address (learning it if it was
 * not in the list). A dead or unreachable peer (-ENOTCONN, -ETIMEDOUT) or -EREMOTE without a hint moves
 * to the next address in the list. -EAGAIN (a new leader not serving yet, overload) backs off and retries.
 *
 * EXACTLY ONCE. Every request message that has a `ReqId rid` field gets (session, seq) filled in here; a
 * retry resends the SAME seq, so the state machine applies it once and answers a retry from its reply
 * cache. Seqs are allocated in order; the `acked` floor is the smallest seq still in flight (every seq
 * below it has been answered): it is sent when the contract has a place for it (a field `acked` in
 * ReqId, found through the descriptor, so the client keeps working whether or not the field exists).
 *
 * SESSION. Opened at start (mc_new) and kept alive by a thread every lease/3. If the metaserver forgot it
 * (-ESTALE on keepalive: expired after a long partition), the client opens a new one; requests in flight
 * are retried under the new session with new seqs (exactly-once cannot span sessions) and the callback
 * registered with mc_set_session_lost (if any) is told, because locks and write leases died with the old
 * session. -ESTALE from a request is ambiguous (the op's own result, e.g. a stale chunk version, or an
 * unknown session): the client asks with a keepalive before deciding.
 *
 * FILE SYSTEM ID. The first SessionOpen or keepalive answer that names the cluster's file system id pins it
 * (unless the configuration gave one); every later call carries it (rpc.h "File system id"). A server of
 * another cluster that took one of the addresses refuses with -ENXIO "another cluster...": the client skips
 * that address like a dead one (said in the log at most every 10 s) and never acts on the other cluster.
 *
 * TIMEOUTS. Each attempt has a deadline (rpc_timeout_ms); an operation as a whole gives up after
 * op_timeout_ms of failing attempts and returns -EIO: a leader change is a pause, a cluster that stays
 * unreachable is an error, never an endless hang.
 *
 * Thread-safe: every function may be called from any number of threads at once.
 */
#ifndef SYNOD_FUSE_META_CLIENT_H
#define SYNOD_FUSE_META_CLIENT_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/rpc.h"

struct mc; /* opaque */

struct mc_config {
    const char *addrs;        /* "host:port[,host:port...]" (borrowed) */
    const char *client_name;  /* shown in the session table (borrowed) */
    uint32_t rpc_timeout_ms;  /* one attempt; 0 = 5000 */
    uint32_t op_timeout_ms;   /* total per operation, then -EIO; 0 = 30000 */
    uint32_t lease_ms;        /* requested session lease; 0 = server default */
    uint64_t fsid;            /* the file system id expected from the start; 0 = the first one told */
};

/* Flags for mc_call. */
enum {
    MC_EAGAIN_RESULT = 1, /* -EAGAIN is the operation's answer (locks, write leases), not "retry" */
    MC_NO_TIMEOUT_EIO = 2, /* return the last error instead of -EIO when the total timeout passes */
    MC_CANCEL_INFLIGHT = 4, /* the method has no side effects: an interrupt may cancel an attempt in flight */
};

/* Parse the address list, open a session (retrying until op_timeout_ms) and start the keepalive thread.
 * Returns 0 with *out, -EINVAL for an empty or malformed list, -EIO if no metaserver answered in time.
 * Blocks. Free with mc_free. */
int mc_new(const struct mc_config *cfg, struct mc **out);
/* Stop the keepalive thread, close the session (best effort, short timeout) and free. Blocks briefly. */
void mc_free(struct mc *mc);

/* Call Meta method `method` ("Lookup", "Mknod"...) with `req` (borrowed; its rid, if it has one, is
 * overwritten). On success returns 0 and *rep is the reply, which the caller frees with rpc_message_free.
 * On failure returns -errno (the operation's own error), or -EIO after op_timeout_ms of transport
 * trouble (see top). Blocks. */
int mc_call(struct mc *mc, const char *method, ProtobufCMessage *req, unsigned flags, ProtobufCMessage **rep);
/* As mc_call, but `cancel` (may be NULL) can end it early with -EINTR (a FUSE interrupt). The rule keeps
 * mutations exactly-once from the application's point of view: an operation is abandoned only while it
 * certainly has not been applied, i.e. before its first attempt is sent, or when every attempt so far was
 * refused unapplied (EREMOTE from a follower, EAGAIN "not serving yet", ENOSYS, or a connection that was
 * never established); once an attempt may have reached a leader (in flight, timed out, reset), it runs to
 * its normal end. With MC_CANCEL_INFLIGHT (read-only methods) the attempt in flight is cancelled as well and
 * the call returns -EINTR within milliseconds. Blocks. */
int mc_call_cancellable(struct mc *mc, const char *method, ProtobufCMessage *req, unsigned flags,
                        struct rpc_cancel *cancel, ProtobufCMessage **rep);
/* As mc_call for the Admin service (Status...). */
int mc_admin_call(struct mc *mc, const char *method, ProtobufCMessage *req, ProtobufCMessage **rep);

/* The current session id (changes if the session had to be reopened). */
uint64_t mc_session(struct mc *mc);
/* Called (from the keepalive thread) after the session was lost and a new one opened. */
void mc_set_session_lost(struct mc *mc, void (*fn)(void *arg, uint64_t old_session), void *arg);
/* fn runs after every call of a method that carries a ReqId (a mutation, or a memory Open/Release), on the
 * calling thread, once the call has ended (whatever its result): for caches of the namespace. */
void mc_set_change_hook(struct mc *mc, void (*fn)(void *arg, const char *method, const ProtobufCMessage *req),
                        void *arg);
/* The keepalive thread calls fn when the leader asks for this client's open files (memory opens, see
 * open_refs.h): fn returns the report's seq and fills *inos (freed by the caller) and *n. */
void mc_set_opens_reporter(struct mc *mc, uint64_t (*fn)(void *arg, uint64_t **inos, size_t *n), void *arg);
/* The configured total timeout (ms), for layers that run their own retry loops (chunk I/O). */
uint32_t mc_op_timeout_ms(const struct mc *mc);

#endif
