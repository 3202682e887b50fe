/* rpc.h - the one small RPC layer every SynodFS daemon uses: protobuf-c messages over the gRPC C core.
 *
 * Server: rpc_server_add_service registers every method of a protoc-c service descriptor with one handler
 * table; worker threads each own a completion queue and run handlers. A handler gets the decoded request
 * and either returns a reply (rpc_reply) and 0, or returns -errno, or returns RPC_DEFERRED and answers
 * later from any thread (rpc_reply / rpc_fail on the kept call): that is how a metaserver parks a client
 * request until its Paxos slot is chosen without blocking a worker. Unknown methods answer UNIMPLEMENTED;
 * bytes that do not decode answer INVALID_ARGUMENT (the handler never sees them); a call whose deadline
 * has passed before its handler runs answers DEADLINE_EXCEEDED without running it.
 *
 * Errors: an application error is an errno. It travels as a gRPC status (mapped in one place,
 * rpc_status_from_errno / rpc_errno_from_status) plus trailing metadata "synod-errno" carrying the exact
 * value, and an optional detail string (gRPC status details), e.g. "leader=127.0.0.1:7001" with EREMOTE.
 * Transport failures map to: dead or unreachable peer -> -ENOTCONN; deadline -> -ETIMEDOUT; cancelled ->
 * -ECANCELED; message too large -> -EMSGSIZE; malformed -> -EINVAL; unknown method -> -ENOSYS.
 *
 * Bulk data: field 15 `bytes data` of any message is sent as a lent buffer (no copy when the sender gives
 * a release function, see struct rpc_payload), and a received message's `data` points into the receive
 * buffer instead of being copied a second time; it stays valid as long as the message.
 *
 * Client: rpc_channel_get returns the process-wide channel for a target ("host:port"), created once and
 * reused (thread-safe). Calls fail fast on a dead peer (no wait-for-ready); channels reconnect with a short
 * backoff (100 ms .. 1 s) so a restarted server is reachable again within about a second. Unary calls
 * block the calling thread; asynchronous calls invoke a completion callback on the layer's dispatcher
 * thread (fan-out: Paxos broadcasts, chain forwarding). Message limits: RPC_MAX_MESSAGE on both sides.
 * Either kind can be cancelled from another thread through a struct rpc_cancel token (FUSE interrupts).
 *
 * File system id (fsid): a server may be told which SynodFS cluster it belongs to (rpc_server_set_fsid), and
 * a channel which cluster its caller expects at that address (rpc_channel_set_fsid). Each call on such a
 * channel carries the id as metadata "synod-fsid"; a server that was given an id (0 included: a member that
 * does not know it yet) refuses a call naming another before any handler runs: -ENXIO, detail starting with
 * RPC_DETAIL_FOREIGN. Calls without the metadata, and every call to a server never given an id, are
 * served. This is what keeps a client or a chunkserver of one cluster from acting on another that took
 * over its servers' addresses (a reused port, a redeployed host).
 */
#ifndef SYNOD_RPC_H
#define SYNOD_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct grpc_call; /* gRPC core's call (grpc/grpc.h), named here for struct rpc_cancel_hook */

#define RPC_MAX_MESSAGE (64u << 20)  /* send and receive limit, both sides */
#define RPC_CONNECT_TIMEOUT_MS 1000  /* the least time one connection attempt gets (then backoff, at most 1 s) */
#define RPC_DEFERRED 1               /* handler return: it will answer later via rpc_reply/rpc_fail */
#define RPC_DATA_FIELD 15            /* the bulk `bytes data` field number */
/* Status detail of an EAGAIN that the server's runtime gave, not the operation (no leader serving, leadership
 * lost): the request was not applied by that attempt; send it again with the same ReqId. Without this detail
 * an EAGAIN from a method that can answer EAGAIN itself (write leases, locks) is that method's answer. */
#define RPC_DETAIL_RETRY "retry: not applied"
/* Status detail prefix of the ENXIO a server answers to a call meant for another cluster (see the top). */
#define RPC_DETAIL_FOREIGN "another cluster"

/* ---------------------------------------------------------------------------------------------------- */
/* Server                                                                                                */

struct rpc_server; /* opaque */
struct rpc_call;   /* opaque: one incoming call, owned by the layer */

/* A method handler. `req` is the decoded request (borrowed, valid until the call is answered). Return 0
 * after rpc_reply(), -errno to fail the call, or RPC_DEFERRED to answer later. Runs on a worker thread;
 * may block, but a blocked handler holds that worker. */
typedef int (*rpc_handler_fn)(struct rpc_call *call, const ProtobufCMessage *req, void *arg);

/* A new server listening on `addr` ("127.0.0.1:7001", "0.0.0.0:0" for any port) with `nthreads` worker
 * threads (0 = 2). Not started until rpc_server_start. Returns 0 or -errno (-EADDRINUSE if the port is
 * taken, -EINVAL for a bad address). */
int rpc_server_new(const char *addr, int nthreads, struct rpc_server **out);
/* Register every method of `svc`: handlers[i] serves svc->methods[i] (NULL entries answer UNIMPLEMENTED).
 * `handlers` is borrowed and must outlive the server; `arg` is passed to every handler. Call before start. */
void rpc_server_add_service(struct rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                            const rpc_handler_fn *handlers, void *arg);
/* Start the worker threads. Returns 0 or -errno. */
int rpc_server_start(struct rpc_server *srv);
/* The port actually bound (useful with port 0). */
int rpc_server_port(const struct rpc_server *srv);
/* This server's file system id (0: a member that does not know it yet: callers that name one are refused
 * too). Thread-safe; may change at any time. Never called: no check. */
void rpc_server_set_fsid(struct rpc_server *srv, uint64_t fsid);
/* Stop accepting, cancel calls in flight (deferred calls not yet answered get -ECANCELED on their
 * rpc_reply/rpc_fail, which then only release the call), join workers and free everything. Blocks until
 * done. */
void rpc_server_free(struct rpc_server *srv);

/* Answer a call with `reply` (borrowed: packed before return, the caller may free it right after).
 * Exactly one of rpc_reply / rpc_fail per call; after it the call and its request are gone. Thread-safe.
 * For a direct (non-deferred) answer, return 0 from the handler after calling it. */
void rpc_reply(struct rpc_call *call, const ProtobufCMessage *reply);
/* As rpc_reply, but the reply's bulk `data` field (field 15) is sent from `data`, lent until `release` is
 * called by the layer (release may be NULL: then the bytes are copied before return). */
void rpc_reply_lend(struct rpc_call *call, const ProtobufCMessage *reply, const void *data, size_t len,
                    void (*release)(void *ctx), void *ctx);
/* Fail a call with -errno `err` and an optional detail string (may be NULL; copied). Thread-safe. */
void rpc_fail(struct rpc_call *call, int err, const char *detail);
/* Remaining time before the client's deadline, in ms (INT64_MAX if none; <= 0 if already passed). */
int64_t rpc_call_remaining_ms(const struct rpc_call *call);
/* Peer address as gRPC reports it ("ipv4:127.0.0.1:53412"); owned by the call. */
const char *rpc_call_peer(struct rpc_call *call);

/* ---------------------------------------------------------------------------------------------------- */
/* Client                                                                                                */

struct rpc_channel; /* opaque, process-wide per target, never freed before rpc_client_shutdown */

/* The shared channel to `target` ("host:port"), created on first use. Thread-safe; never fails (a bad or
 * dead target makes calls fail with -ENOTCONN). */
struct rpc_channel *rpc_channel_get(const char *target);
const char *rpc_channel_target(const struct rpc_channel *ch);
/* The file system id calls on `ch` carry from now on (0: none). Channels are shared per target in a process:
 * a process sets an address's expected id where it talks to that address as a member of a cluster (the
 * metaservers of a mount or a chunkserver). Thread-safe. */
void rpc_channel_set_fsid(struct rpc_channel *ch, uint64_t fsid);

/* Outcome of a call beyond its errno: the server's detail string (empty if none). */
struct rpc_status {
    int err;            /* 0 or -errno, same as the return value */
    char detail[256];   /* NUL-terminated, possibly truncated */
};

/* Bulk data to send as the request's field 15 (see top). */
struct rpc_payload {
    const void *data;
    size_t len;
    void (*release)(void *ctx); /* NULL: data is copied and need not outlive the call */
    void *ctx;
};

/* Blocking unary call of `method` (name as in the .proto, e.g. "Lookup") on service `svc`. On success
 * returns 0 and *reply is a decoded message the caller frees with rpc_message_free (reply may be NULL when
 * only the outcome matters: the reply is then freed here). On failure returns -errno and *reply is NULL; `st` (may be NULL) receives the detail string. `timeout_ms` > 0 is required.
 * `payload` may be NULL; otherwise it replaces the request's field 15. Thread-safe. */
int rpc_call(struct rpc_channel *ch, const ProtobufCServiceDescriptor *svc, const char *method,
             const ProtobufCMessage *req, const struct rpc_payload *payload, int64_t timeout_ms,
             ProtobufCMessage **reply, struct rpc_status *st);

/* Cancellation token: lets another thread end blocking and asynchronous calls early (a FUSE interrupt).
 * Embed or stack-allocate one, rpc_cancel_init it, pass it to the *_cancellable calls, and call
 * rpc_cancel_trigger from any thread (e.g. libfuse's interrupt callback). Triggering is sticky: every call
 * registered on the token is cancelled with grpc_call_cancel at once, every later call made with it fails
 * with -ECANCELED without being sent, and rpc_cancel_sleep / hooks wake. A call that completed before the
 * trigger keeps its result (cancelling after completion is a no-op). Race-free: a call is registered under
 * the token's lock before it starts and unregistered before its grpc_call is released, so the trigger
 * never touches a finished call. A token may be shared by any number of calls at once; it must outlive them
 * (and be unused) when rpc_cancel_destroy is called. To reuse a token, destroy and init it again. */
struct rpc_cancel_hook {
    struct rpc_cancel_hook *next, *prev;
    struct grpc_call *call;      /* a live call to cancel, or NULL */
    void (*fn)(void *arg);       /* or a wake-up function (called with the token's lock held: must not block
                                  * beyond taking a leaf mutex) */
    void *arg;
};
struct rpc_cancel {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic bool triggered;
    struct rpc_cancel_hook head; /* circular list of registered calls and waiters */
};

/* Cannot fail. */
void rpc_cancel_init(struct rpc_cancel *c);
/* Nothing may be registered any more. */
void rpc_cancel_destroy(struct rpc_cancel *c);
/* Cancel everything registered, now and later. Idempotent, thread-safe, does not block. */
void rpc_cancel_trigger(struct rpc_cancel *c);
/* Has the token been triggered? NULL: false. Lock-free. */
bool rpc_cancel_triggered(struct rpc_cancel *c);
/* Sleep up to `ns`; returns -ECANCELED at once (or as soon as) the token is triggered, else 0. NULL token:
 * a plain sleep. */
int rpc_cancel_sleep(struct rpc_cancel *c, uint64_t ns);
/* Register a wake-up hook (`fn(arg)` is called once on trigger); false (not registered) if the token was
 * already triggered. For callers that wait on their own condition variable: fn takes that mutex and
 * broadcasts; the waiter re-checks rpc_cancel_triggered under the same mutex before each wait. NULL token:
 * true, nothing registered. */
bool rpc_cancel_hook_add(struct rpc_cancel *c, struct rpc_cancel_hook *h, void (*fn)(void *arg), void *arg);
/* Unregister (after it returns, fn is not running and will not run). NULL token: no-op. */
void rpc_cancel_hook_del(struct rpc_cancel *c, struct rpc_cancel_hook *h);

/* As rpc_call, cancellable through `cancel` (may be NULL = rpc_call). Returns -ECANCELED if the token was
 * triggered before the call completed (also if it was triggered before the call; then nothing is sent). */
int rpc_call_cancellable(struct rpc_channel *ch, const ProtobufCServiceDescriptor *svc, const char *method,
                         const ProtobufCMessage *req, const struct rpc_payload *payload, int64_t timeout_ms,
                         struct rpc_cancel *cancel, ProtobufCMessage **reply, struct rpc_status *st);

/* Completion of an asynchronous call: `err` 0 or -errno; `reply` is the decoded reply on success (callee
 * owns it: free with rpc_message_free, or keep it), NULL on failure; `st` is borrowed for the callback.
 * Runs on the dispatcher thread: must not block. */
typedef void (*rpc_done_fn)(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg);

/* Start an asynchronous call; `done` is called exactly once (also when the call cannot even start, then
 * from the calling thread before this returns). The request is packed before return (borrowed). */
void rpc_call_async(struct rpc_channel *ch, const ProtobufCServiceDescriptor *svc, const char *method,
                    const ProtobufCMessage *req, const struct rpc_payload *payload, int64_t timeout_ms,
                    rpc_done_fn done, void *arg);

/* As rpc_call_async, cancellable through `cancel` (may be NULL); `done` gets -ECANCELED for a call the
 * trigger ended. The token must outlive the call (until `done` has run). */
void rpc_call_async_cancellable(struct rpc_channel *ch, const ProtobufCServiceDescriptor *svc, const char *method,
                                const ProtobufCMessage *req, const struct rpc_payload *payload, int64_t timeout_ms,
                                struct rpc_cancel *cancel, rpc_done_fn done, void *arg);

/* Free a message returned by rpc_call / given to rpc_done_fn. NULL is a no-op. */
void rpc_message_free(ProtobufCMessage *msg);

/* Wait for every asynchronous call to complete, stop the dispatcher and destroy all channels. For clean
 * process exit and tests; no rpc_* client call may run concurrently or after. */
void rpc_client_shutdown(void);

/* ---------------------------------------------------------------------------------------------------- */
/* Shared                                                                                                */

/* The gRPC <-> errno mapping, in one place. Cannot fail. */
int rpc_errno_from_status(int grpc_status);
int rpc_status_from_errno(int err);

#endif
