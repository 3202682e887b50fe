/* rpc.c - protobuf-c messages over the gRPC C core: the server and client halves of common/rpc.h.
 *
 * Server design. One completion queue (cq) per server, shared by `nthreads` worker threads that all call
 * grpc_completion_queue_next on it. For every registered method the server keeps RPC_REQS_PER_METHOD calls
 * requested (grpc_server_request_registered_call with the payload read up front), plus RPC_GENERIC_REQS
 * generic requests that catch unknown methods and answer UNIMPLEMENTED (without them such calls hang until
 * their deadline). When a requested call arrives, its slot is re-requested first, then the payload is decoded
 * and the handler runs on the worker. Every call is answered by exactly one batch (initial metadata, message
 * on success, status with trailing metadata "synod-errno", receive-close), whose completion frees the call.
 *
 * Call lifetime. A struct rpc_call is referenced by the worker running its handler and by its answer batch
 * in flight; the last reference frees it, so a handler that parks the call (RPC_DEFERRED) and a thread that
 * answers it while the handler is still returning never race on freed memory. Call state (IN_HANDLER,
 * DEFERRED, ANSWERING, ORPHANED) changes under one process-wide mutex; deferred calls sit on their server's
 * list so rpc_server_free can orphan them: an orphaned call's later rpc_reply/rpc_fail only frees it.
 *
 * Bulk data. A message descriptor with field 15 of type bytes ("data") gets special treatment. Sending: the
 * message is packed without it, then the tag and length are appended and the bytes follow as their own slice,
 * lent (grpc_slice_new_with_user_data) when the sender supplies a release function. Receiving: the byte
 * buffer is flattened once (or, if it is one slice, referenced in place); when field 15 is the last
 * top-level field, only the bytes before it are handed to protobuf-c and `data` is pointed into the flat
 * buffer, so the payload is never copied a second time. Every allocation protobuf-c makes through our
 * allocator carries a small header pointing at the receive buffer, which is how rpc_message_free finds what
 * to release, and the allocator's free ignores pointers inside the flat buffer.
 *
 * Client design. Channels are process-wide per target, created once under a mutex and never freed before
 * rpc_client_shutdown. Blocking calls use a pluck cq cached per thread (at most one plucker per cq).
 * Asynchronous calls share one `next` cq drained by a dispatcher thread that decodes replies and runs the
 * callbacks. No wait-for-ready: a dead peer fails in milliseconds with UNAVAILABLE (-ENOTCONN), which is what
 * leader discovery and failover want; reconnect backoff is 100 ms .. 1 s.
 *
 * Cancellation. A struct rpc_cancel keeps the live calls made with it on a list under its own mutex: a call
 * is added before its batch starts (refused if the token already fired) and removed after its completion
 * was plucked (blocking) or before its callback runs (asynchronous), always before the call's last unref.
 * rpc_cancel_trigger walks the list under the same mutex, so it only ever cancels calls that are alive, and
 * a trigger after completion finds nothing. Wake-up hooks on the same list let callers that wait on their
 * own condition variable be woken (their mutex is taken after the token's: never the other way round).
 *
 * Library setup. Before grpc_init the layer turns off abseil's mutex deadlock detector, which Debian's
 * abseil (built without NDEBUG) otherwise runs on every mutex gRPC takes (see absl_deadlock_detection_off).
 */
#include "common/rpc.h"

#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"

#include <dlfcn.h>
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RPC_REQS_PER_METHOD 8
#define RPC_GENERIC_REQS 2
#define RPC_ERRNO_KEY "synod-errno"
#define RPC_FSID_KEY        "synod-fsid" /* 16 lowercase hex digits */
#define RPC_FOREIGN_LOG_NS  (10 * NS_PER_SEC)
#define RX_HDR 16 /* header before every protobuf-c allocation: the owning rx buffer */

/* ---------------------------------------------------------------------------------------------------- */
/* gRPC library lifetime                                                                                 */

static pthread_once_t grpc_once = PTHREAD_ONCE_INIT;

/* Debian builds abseil without NDEBUG, so every absl::Mutex that gRPC takes also runs the deadlock detector
 * (a lock-order graph: ~3% of a metaserver's CPU in a profile, GraphCycles::GetId/InsertEdge/UpdateStackTrace).
 * It is a debug aid; switch it off through its public C++ API if the library has it (looked up by its mangled
 * name, as this is C: absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore)). */
static void absl_deadlock_detection_off(void)
{
    static const char *const names[] = {
        "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
        "_ZN4absl12lts_2022062329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
        "_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE",
    };
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        if (sym) {
            void (*set_mode)(int);
            memcpy(&set_mode, &sym, sizeof(set_mode));
            set_mode(0); /* OnDeadlockCycle::kIgnore */
            return;
        }
    }
}

static void grpc_init_once(void)
{
    absl_deadlock_detection_off();
    grpc_init();
}

/* ---------------------------------------------------------------------------------------------------- */
/* Status <-> errno, the one place                                                                       */

int rpc_errno_from_status(int st)
{
    switch (st) {
    case GRPC_STATUS_OK: return 0;
    case GRPC_STATUS_CANCELLED: return -ECANCELED;
    case GRPC_STATUS_INVALID_ARGUMENT: return -EINVAL;
    case GRPC_STATUS_DEADLINE_EXCEEDED: return -ETIMEDOUT;
    case GRPC_STATUS_NOT_FOUND: return -ENOENT;
    case GRPC_STATUS_ALREADY_EXISTS: return -EEXIST;
    case GRPC_STATUS_PERMISSION_DENIED: return -EACCES;
    case GRPC_STATUS_UNAUTHENTICATED: return -EACCES;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: return -EMSGSIZE; /* gRPC's answer to an oversize message */
    case GRPC_STATUS_FAILED_PRECONDITION: return -EPROTO;
    case GRPC_STATUS_ABORTED: return -EAGAIN;
    case GRPC_STATUS_OUT_OF_RANGE: return -ERANGE;
    case GRPC_STATUS_UNIMPLEMENTED: return -ENOSYS;
    case GRPC_STATUS_UNAVAILABLE: return -ENOTCONN;
    case GRPC_STATUS_DATA_LOSS: return -EIO;
    case GRPC_STATUS_INTERNAL: return -EIO;
    default: return -EIO;
    }
}

int rpc_status_from_errno(int err)
{
    switch (err < 0 ? -err : err) {
    case 0: return GRPC_STATUS_OK;
    case ECANCELED: return GRPC_STATUS_CANCELLED;
    case EINVAL: case EBADMSG: return GRPC_STATUS_INVALID_ARGUMENT;
    case ETIMEDOUT: return GRPC_STATUS_DEADLINE_EXCEEDED;
    case ENOENT: return GRPC_STATUS_NOT_FOUND;
    case EEXIST: return GRPC_STATUS_ALREADY_EXISTS;
    case EACCES: case EPERM: return GRPC_STATUS_PERMISSION_DENIED;
    case EMSGSIZE: case ENOSPC: case EDQUOT: case ENOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case ESTALE: case EREMOTE: case EPROTO: return GRPC_STATUS_FAILED_PRECONDITION;
    case EAGAIN: case EBUSY: return GRPC_STATUS_ABORTED;
    case ERANGE: return GRPC_STATUS_OUT_OF_RANGE;
    case ENOSYS: return GRPC_STATUS_UNIMPLEMENTED;
    case ENOTCONN: case ECONNREFUSED: case EHOSTDOWN: case EHOSTUNREACH: return GRPC_STATUS_UNAVAILABLE;
    case EIO: return GRPC_STATUS_DATA_LOSS;
    default: return GRPC_STATUS_UNKNOWN;
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Encoding: pack with field 15 split off                                                                 */

static const ProtobufCFieldDescriptor *data_field(const ProtobufCMessageDescriptor *d)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, RPC_DATA_FIELD);
    if (f && f->type == PROTOBUF_C_TYPE_BYTES && f->label != PROTOBUF_C_LABEL_REPEATED)
        return f;
    return NULL;
}

static void free_user_slice(void *p, size_t len)
{
    UNUSED(len);
    free(p);
}

/* Build the wire form of msg: if `bulk` is non-NULL (and the message has a data field), the message's own
 * field 15 is ignored and bulk is appended as field 15, lent when bulk->release is set. */
static grpc_byte_buffer *encode(const ProtobufCMessage *msg, const struct rpc_payload *bulk)
{
    const ProtobufCFieldDescriptor *f = bulk ? data_field(msg->descriptor) : NULL;
    if (!f) {
        size_t n = protobuf_c_message_get_packed_size(msg);
        uint8_t *buf = xmalloc(n);
        protobuf_c_message_pack(msg, buf);
        grpc_slice s = grpc_slice_new_with_len(buf, n, free_user_slice);
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        return bb;
    }
    /* Shallow copy with the data field emptied, packed, then tag + length + lent bytes. */
    size_t msz = msg->descriptor->sizeof_message;
    ProtobufCMessage *tmp = alloca(msz);
    memcpy(tmp, msg, msz);
    ProtobufCBinaryData *d = (ProtobufCBinaryData *)((char *)tmp + f->offset);
    d->len = 0;
    d->data = NULL;
    size_t n = protobuf_c_message_get_packed_size(tmp);
    uint8_t *head = xmalloc(n + 11);
    protobuf_c_message_pack(tmp, head);
    size_t hl = n;
    head[hl++] = (uint8_t)(RPC_DATA_FIELD << 3 | 2);
    hl += util_put_varint(head + hl, bulk->len);
    grpc_slice s[2];
    s[0] = grpc_slice_new_with_len(head, hl, free_user_slice);
    if (bulk->release)
        s[1] = grpc_slice_new_with_user_data((void *)bulk->data, bulk->len, bulk->release, bulk->ctx);
    else
        s[1] = grpc_slice_from_copied_buffer(bulk->data, bulk->len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, 2);
    grpc_slice_unref(s[0]);
    grpc_slice_unref(s[1]);
    return bb;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Decoding: flatten once, point `data` into the flat buffer                                              */

struct rx {
    ProtobufCAllocator alloc;
    uint8_t *flat;      /* the whole message, or NULL once no longer needed */
    size_t len;
    bool owns_flat;     /* malloc'd copy (else: flat lives in `slice`) */
    grpc_slice slice;   /* single-slice messages are referenced in place */
    bool has_slice;
};

static void *rx_alloc(void *ad, size_t size)
{
    uint8_t *p = xmalloc(size + RX_HDR);
    memcpy(p, &ad, sizeof(ad));
    return p + RX_HDR;
}

static void rx_free(void *ad, void *ptr)
{
    struct rx *rx = ad;
    if (!ptr)
        return;
    /* Points into the receive buffer (an empty trailing data field points at its very end): released
     * with the buffer. */
    if (rx->flat && (uint8_t *)ptr >= rx->flat && (uint8_t *)ptr <= rx->flat + rx->len)
        return;
    free((uint8_t *)ptr - RX_HDR);
}

static void rx_release(struct rx *rx)
{
    if (rx->owns_flat)
        free(rx->flat);
    if (rx->has_slice)
        grpc_slice_unref(rx->slice);
    free(rx);
}

void rpc_message_free(ProtobufCMessage *msg)
{
    if (!msg)
        return;
    struct rx *rx;
    memcpy(&rx, (uint8_t *)msg - RX_HDR, sizeof(rx));
    protobuf_c_message_free_unpacked(msg, &rx->alloc);
    rx_release(rx);
}

/* Scan the top-level fields of buf. If the last field is field 15 (length-delimited), set *tag_off to where
 * its tag starts and *data_off, *data_len to its bytes and return true. Malformed input returns false (the
 * full unpack then reports it). */
static bool find_trailing_data(const uint8_t *buf, size_t len, size_t *tag_off, size_t *data_off,
                               size_t *data_len)
{
    const uint8_t *p = buf, *end = buf + len;
    bool last_is_data = false;
    while (p < end) {
        const uint8_t *start = p;
        uint64_t key, v;
        size_t n = util_get_varint(p, end, &key);
        if (!n)
            return false;
        p += n;
        unsigned wt = key & 7;
        uint64_t field = key >> 3;
        last_is_data = false;
        switch (wt) {
        case 0:
            if (!(n = util_get_varint(p, end, &v)))
                return false;
            p += n;
            break;
        case 1:
            if (end - p < 8)
                return false;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return false;
            p += 4;
            break;
        case 2:
            if (!(n = util_get_varint(p, end, &v)) || v > (uint64_t)(end - p - (ptrdiff_t)n))
                return false;
            p += n;
            if (field == RPC_DATA_FIELD) {
                last_is_data = true;
                *tag_off = (size_t)(start - buf);
                *data_off = (size_t)(p - buf);
                *data_len = (size_t)v;
            }
            p += v;
            break;
        default:
            return false;
        }
    }
    return last_is_data;
}

/* Decode a received byte buffer into a message of descriptor d. Returns NULL if it does not decode. Takes
 * nothing: bb stays the caller's. */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    struct rx *rx = xcalloc(1, sizeof(*rx));
    rx->alloc.alloc = rx_alloc;
    rx->alloc.free = rx_free;
    rx->alloc.allocator_data = rx;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) {
        free(rx);
        return NULL;
    }
    size_t total = grpc_byte_buffer_length(bb);
    grpc_slice s;
    if (bb->data.raw.slice_buffer.count == 1 && grpc_byte_buffer_reader_next(&rd, &s)) {
        rx->slice = s; /* the reader's ref becomes ours */
        rx->has_slice = true;
        rx->flat = GRPC_SLICE_START_PTR(s);
        rx->len = GRPC_SLICE_LENGTH(s);
    } else {
        rx->flat = xmalloc(total);
        rx->owns_flat = true;
        rx->len = 0;
        while (grpc_byte_buffer_reader_next(&rd, &s)) {
            size_t n = GRPC_SLICE_LENGTH(s);
            ASSERT(rx->len + n <= total);
            memcpy(rx->flat + rx->len, GRPC_SLICE_START_PTR(s), n);
            rx->len += n;
            grpc_slice_unref(s);
        }
    }
    grpc_byte_buffer_reader_destroy(&rd);

    const ProtobufCFieldDescriptor *f = data_field(d);
    size_t tag_off = 0, data_off = 0, data_len = 0;
    bool split = f && find_trailing_data(rx->flat, rx->len, &tag_off, &data_off, &data_len);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, &rx->alloc, split ? tag_off : rx->len, rx->flat);
    if (!m) {
        rx_release(rx);
        return NULL;
    }
    if (split) {
        ProtobufCBinaryData *bd = (ProtobufCBinaryData *)((char *)m + f->offset);
        if (bd->data)
            rx_free(rx, bd->data); /* an earlier duplicate of field 15: the last one wins */
        bd->data = rx->flat + data_off;
        bd->len = data_len;
    } else {
        /* Nothing points into the flat buffer: release it now. */
        if (rx->owns_flat)
            free(rx->flat);
        if (rx->has_slice)
            grpc_slice_unref(rx->slice);
        rx->flat = NULL;
        rx->owns_flat = rx->has_slice = false;
    }
    return m;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Server                                                                                                */

enum call_kind { K_REGISTERED, K_GENERIC, K_SHUTDOWN };
enum call_state { S_REQUESTED, S_IN_HANDLER, S_DEFERRED, S_ANSWERING, S_ORPHANED };

struct method_reg {
    const ProtobufCServiceDescriptor *svc;
    const ProtobufCMethodDescriptor *md;
    rpc_handler_fn fn;
    void *arg;
    void *handle;
    char *path;
};

struct rpc_call {
    enum call_kind kind;
    enum call_state state;
    atomic_int refs;
    struct rpc_server *srv;
    struct method_reg *m; /* NULL for generic; dangling once orphaned (the server is gone) */
    const ProtobufCMessageDescriptor *out; /* reply type (static), valid even when orphaned */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* generic calls only */
    grpc_byte_buffer *payload;
    ProtobufCMessage *req;
    char *peer;
    /* the answer batch */
    grpc_byte_buffer *reply_bb;
    grpc_metadata trailer;
    char errno_buf[16];
    grpc_slice status_details;
    bool has_details;
    int cancelled;
    struct rpc_call *dnext, *dprev; /* on srv->deferred while S_DEFERRED */
};

struct rpc_server {
    grpc_server *gs;
    grpc_completion_queue *cq;
    int port;
    int nthreads;
    pthread_t *threads;
    bool started;
    struct method_reg *methods;
    size_t nmethods;
    struct rpc_call deferred; /* list head */
    int in_handler;           /* handlers running now (under calls_mu) */
    atomic_bool stopping;
    _Atomic uint64_t fsid;            /* rpc_server_set_fsid (valid when fsid_set) */
    _Atomic bool fsid_set;            /* rpc_server_set_fsid was called: callers naming an id are checked */
    _Atomic uint64_t foreign_log_ns;  /* when a refused foreign call was last logged */
    _Atomic uint64_t foreign_refused; /* refused since then */
    struct rpc_call shutdown_tag;
    pthread_mutex_t shutdown_mu;
    pthread_cond_t shutdown_cv;
    bool shutdown_done;
};

/* Call state, the deferred lists and in_handler counts of every server change under this one lock. */
static pthread_mutex_t calls_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t calls_cv = PTHREAD_COND_INITIALIZER;

/* Make a parked call an orphan: cancel it on the wire and drop the grpc call; the application's later
 * answer only frees it. Caller holds calls_mu. */
static void orphan_locked(struct rpc_call *c)
{
    c->state = S_ORPHANED;
    grpc_call_cancel(c->call, NULL);
    grpc_call_unref(c->call);
    c->call = NULL;
}

static void call_free(struct rpc_call *c)
{
    if (c->req)
        rpc_message_free(c->req);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply_bb)
        grpc_byte_buffer_destroy(c->reply_bb);
    if (c->has_details)
        grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md);
    if (c->kind == K_GENERIC)
        grpc_call_details_destroy(&c->details);
    if (c->peer)
        gpr_free(c->peer);
    if (c->call)
        grpc_call_unref(c->call);
    free(c);
}

static void call_unref(struct rpc_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        call_free(c);
}

static void request_call(struct rpc_server *srv, struct method_reg *m)
{
    struct rpc_call *c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->m = m;
    c->kind = m ? K_REGISTERED : K_GENERIC;
    c->out = m ? m->md->output : NULL;
    c->state = S_REQUESTED;
    atomic_init(&c->refs, 1);
    grpc_metadata_array_init(&c->md);
    grpc_call_error e;
    if (m) {
        e = grpc_server_request_registered_call(srv->gs, m->handle, &c->call, &c->deadline, &c->md, &c->payload,
                                                srv->cq, srv->cq, c);
    } else {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(srv->gs, &c->call, &c->details, &c->md, srv->cq, srv->cq, c);
    }
    if (e != GRPC_CALL_OK) {
        LOG_WARN("rpc request_call failed: %d", (int)e);
        c->call = NULL;
        call_free(c);
    }
}

/* Start the one answer batch of a call. Caller holds calls_mu and has moved the state to S_ANSWERING. */
static void start_answer(struct rpc_call *c, grpc_byte_buffer *reply, int err, const char *detail)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    if (reply) {
        c->reply_bb = reply;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = reply;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)rpc_status_from_errno(err);
    if (err) {
        snprintf(c->errno_buf, sizeof(c->errno_buf), "%d", err < 0 ? -err : err);
        c->trailer.key = grpc_slice_from_static_string(RPC_ERRNO_KEY);
        c->trailer.value = grpc_slice_from_static_string(c->errno_buf);
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
        if (detail && *detail) {
            c->status_details = grpc_slice_from_copied_string(detail);
            c->has_details = true;
            ops[n].data.send_status_from_server.status_details = &c->status_details;
        }
    }
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
    atomic_fetch_add(&c->refs, 1); /* the batch's reference */
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
    if (e != GRPC_CALL_OK) {
        LOG_ERR("rpc start_batch failed on answer: %d", (int)e);
        atomic_fetch_sub(&c->refs, 1);
    }
}

static void deferred_unlink(struct rpc_call *c)
{
    c->dprev->dnext = c->dnext;
    c->dnext->dprev = c->dprev;
    c->dnext = c->dprev = NULL;
}

/* Common path of rpc_reply / rpc_reply_lend / rpc_fail. Takes ownership of reply (may be NULL). */
static void answer(struct rpc_call *c, grpc_byte_buffer *reply, int err, const char *detail)
{
    pthread_mutex_lock(&calls_mu);
    switch (c->state) {
    case S_IN_HANDLER:
    case S_DEFERRED: {
        bool parked = c->state == S_DEFERRED;
        if (parked)
            deferred_unlink(c);
        c->state = S_ANSWERING;
        start_answer(c, reply, err, detail);
        pthread_mutex_unlock(&calls_mu);
        if (parked)
            call_unref(c); /* the parking reference; the batch holds its own */
        return;
    }
    case S_ORPHANED:
        pthread_mutex_unlock(&calls_mu);
        if (reply)
            grpc_byte_buffer_destroy(reply);
        call_unref(c); /* the parking reference: its server is gone */
        return;
    default:
        pthread_mutex_unlock(&calls_mu);
        PANIC("rpc call answered twice (state %d)", (int)c->state);
    }
}

void rpc_reply(struct rpc_call *call, const ProtobufCMessage *reply)
{
    ASSERT(reply->descriptor == call->out);
    answer(call, encode(reply, NULL), 0, NULL);
}

void rpc_reply_lend(struct rpc_call *call, const ProtobufCMessage *reply, const void *data, size_t len,
                    void (*release)(void *ctx), void *ctx)
{
    ASSERT(reply->descriptor == call->out);
    struct rpc_payload p = {.data = data, .len = len, .release = release, .ctx = ctx};
    if (!data_field(reply->descriptor))
        PANIC("rpc_reply_lend: %s has no bytes field %d", reply->descriptor->name, RPC_DATA_FIELD);
    answer(call, encode(reply, &p), 0, NULL);
}

void rpc_fail(struct rpc_call *call, int err, const char *detail)
{
    if (err == 0)
        err = -EIO;
    answer(call, NULL, err, detail);
}

int64_t rpc_call_remaining_ms(const struct rpc_call *call)
{
    if (gpr_time_cmp(call->deadline, gpr_inf_future(call->deadline.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec now = gpr_now(call->deadline.clock_type);
    return gpr_time_to_millis(gpr_time_sub(call->deadline, now));
}

const char *rpc_call_peer(struct rpc_call *call)
{
    if (!call->peer)
        call->peer = grpc_call_get_peer(call->call);
    return call->peer;
}

static void handler_done_locked(struct rpc_server *srv)
{
    if (--srv->in_handler == 0)
        pthread_cond_broadcast(&calls_cv);
}

/* The id a caller's metadata names (0: none or unparsable). */
static uint64_t md_fsid(const grpc_metadata_array *md)
{
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, RPC_FSID_KEY) != 0)
            continue;
        char buf[17];
        size_t n = GRPC_SLICE_LENGTH(md->metadata[i].value);
        if (n == 0 || n > 16)
            return 0;
        memcpy(buf, GRPC_SLICE_START_PTR(md->metadata[i].value), n);
        buf[n] = 0;
        char *end;
        unsigned long long v = strtoull(buf, &end, 16);
        return *end ? 0 : (uint64_t)v;
    }
    return 0;
}

/* A call meant for another cluster: refuse it (true) before anything is decoded or run. Logged at most every
 * RPC_FOREIGN_LOG_NS per server, with the count since the last line. */
static bool refuse_foreign(struct rpc_call *c)
{
    struct rpc_server *srv = c->srv;
    if (!atomic_load(&srv->fsid_set))
        return false;
    uint64_t mine = atomic_load(&srv->fsid), theirs = md_fsid(&c->md);
    if (!theirs || theirs == mine)
        return false;
    char detail[160];
    if (mine)
        snprintf(detail, sizeof(detail),
                 RPC_DETAIL_FOREIGN ": this server is of file system %016llx, not %016llx",
                 (unsigned long long)mine, (unsigned long long)theirs);
    else
        snprintf(detail, sizeof(detail),
                 RPC_DETAIL_FOREIGN
                 "?: this server does not know its file system id yet, cannot vouch for %016llx",
                 (unsigned long long)theirs);
    uint64_t now = clk_mono_ns(), last = atomic_load(&srv->foreign_log_ns);
    uint64_t n = atomic_fetch_add(&srv->foreign_refused, 1) + 1;
    if ((!last || now - last >= RPC_FOREIGN_LOG_NS) &&
        atomic_compare_exchange_strong(&srv->foreign_log_ns, &last, now)) {
        atomic_store(&srv->foreign_refused, 0);
        LOG_WARN(
            "rpc %s from %s: refused (%llu such calls): %s; a client or chunkserver of another cluster has "
            "this server's address in its list",
            c->m->path, rpc_call_peer(c), (unsigned long long)n, detail);
    }
    rpc_fail(c, -ENXIO, detail);
    return true;
}

/* A requested call arrived: run its handler (or answer UNIMPLEMENTED / INVALID_ARGUMENT / DEADLINE). */
static void serve(struct rpc_call *c)
{
    struct rpc_server *srv = c->srv;
    if (!atomic_load(&srv->stopping))
        request_call(srv, c->m); /* keep the slot filled before doing any work */

    pthread_mutex_lock(&calls_mu);
    c->state = S_IN_HANDLER;
    srv->in_handler++;
    pthread_mutex_unlock(&calls_mu);

    if (c->kind == K_GENERIC) {
        rpc_fail(c, -ENOSYS, "unknown method");
        goto out_unref;
    }
    if (rpc_call_remaining_ms(c) <= 0) {
        rpc_fail(c, -ETIMEDOUT, "deadline passed before the handler ran");
        goto out_unref;
    }
    if (refuse_foreign(c))
        goto out_unref;
    bool no_message = !c->payload;
    c->req = c->payload ? decode(c->m->md->input, c->payload) : NULL;
    if (c->payload) {
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
    }
    if (!c->req) {
        /* No message at all is what a call cancelled by its client (rpc_cancel) before the request was
         * through looks like: not worth a warning. */
        if (no_message)
            LOG_DEBUG("rpc %s from %s: no request message (cancelled by the client?)", c->m->path,
                      rpc_call_peer(c));
        else
            LOG_WARN("rpc %s from %s: malformed request", c->m->path, rpc_call_peer(c));
        rpc_fail(c, -EINVAL, "malformed request");
        goto out_unref;
    }
    if (!c->m->fn) {
        rpc_fail(c, -ENOSYS, "method not implemented by this server");
        goto out_unref;
    }
    int r = c->m->fn(c, c->req, c->m->arg);
    pthread_mutex_lock(&calls_mu);
    if (r == RPC_DEFERRED) {
        if (c->state == S_IN_HANDLER) {
            /* Park it: the worker's reference becomes the parking reference. A server that is stopping
             * orphans it at once (its queue is about to go). */
            if (atomic_load(&srv->stopping)) {
                orphan_locked(c);
            } else {
                c->state = S_DEFERRED;
                c->dnext = srv->deferred.dnext;
                c->dprev = &srv->deferred;
                srv->deferred.dnext->dprev = c;
                srv->deferred.dnext = c;
            }
            handler_done_locked(srv);
            pthread_mutex_unlock(&calls_mu);
            return;
        }
        pthread_mutex_unlock(&calls_mu); /* already answered from another thread */
    } else if (c->state == S_IN_HANDLER) {
        pthread_mutex_unlock(&calls_mu);
        if (r == 0) {
            LOG_ERR("rpc %s: handler returned 0 without a reply", c->m->path);
            r = -EIO;
        }
        rpc_fail(c, r, NULL);
    } else {
        pthread_mutex_unlock(&calls_mu);
        if (r != 0)
            LOG_ERR("rpc %s: handler returned %d after answering", c->m->path, r);
    }
out_unref:
    pthread_mutex_lock(&calls_mu);
    handler_done_locked(srv);
    pthread_mutex_unlock(&calls_mu);
    call_unref(c);
}

/* A worker: new calls are served, answer-batch completions drop the batch's reference. */
static void *worker_main(void *arg)
{
    struct rpc_server *srv = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct rpc_call *c = ev.tag;
        if (c->kind == K_SHUTDOWN) {
            pthread_mutex_lock(&srv->shutdown_mu);
            srv->shutdown_done = true;
            pthread_cond_broadcast(&srv->shutdown_cv);
            pthread_mutex_unlock(&srv->shutdown_mu);
            continue;
        }
        if (c->state == S_REQUESTED) {
            if (!ev.success) { /* server shutting down: the request is void */
                c->call = NULL;
                call_free(c);
                continue;
            }
            serve(c);
        } else {
            /* The answer batch completed. */
            call_unref(c);
        }
    }
    return NULL;
}

int rpc_server_new(const char *addr, int nthreads, struct rpc_server **out)
{
    pthread_once(&grpc_once, grpc_init_once);
    grpc_init(); /* balanced by grpc_shutdown in rpc_server_free */
    struct rpc_server *srv = xcalloc(1, sizeof(*srv));
    srv->nthreads = nthreads > 0 ? nthreads : 2;
    srv->deferred.dnext = srv->deferred.dprev = &srv->deferred;
    srv->shutdown_tag.kind = K_SHUTDOWN;
    pthread_mutex_init(&srv->shutdown_mu, NULL);
    pthread_cond_init(&srv->shutdown_cv, NULL);
    atomic_init(&srv->stopping, false);

    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)RPC_MAX_MESSAGE;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)RPC_MAX_MESSAGE;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT; /* a taken port must be an error, not a second listener */
    args[2].value.integer = 0;
    grpc_channel_args ca = {.num_args = 3, .args = args};
    srv->gs = grpc_server_create(&ca, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->gs, srv->cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    srv->port = grpc_server_add_http2_port(srv->gs, addr, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        LOG_ERR("rpc cannot listen on %s (address in use or invalid)", addr);
        grpc_server_destroy(srv->gs);
        grpc_completion_queue_shutdown(srv->cq);
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(srv->cq);
        free(srv);
        grpc_shutdown();
        return strchr(addr, ':') ? -EADDRINUSE : -EINVAL;
    }
    *out = srv;
    return 0;
}

void rpc_server_add_service(struct rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                            const rpc_handler_fn *handlers, void *arg)
{
    ASSERT(!srv->started);
    srv->methods = xrealloc(srv->methods, (srv->nmethods + svc->n_methods) * sizeof(*srv->methods));
    for (unsigned i = 0; i < svc->n_methods; i++) {
        struct method_reg *m = &srv->methods[srv->nmethods++];
        m->svc = svc;
        m->md = &svc->methods[i];
        m->fn = handlers[i];
        m->arg = arg;
        m->path = xasprintf("/%s/%s", svc->name, svc->methods[i].name);
        m->handle = grpc_server_register_method(srv->gs, m->path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                                0);
        if (!m->handle)
            PANIC("rpc cannot register method %s", m->path);
    }
}

int rpc_server_start(struct rpc_server *srv)
{
    ASSERT(!srv->started);
    grpc_server_start(srv->gs);
    srv->started = true;
    for (size_t i = 0; i < srv->nmethods; i++)
        for (int k = 0; k < RPC_REQS_PER_METHOD; k++)
            request_call(srv, &srv->methods[i]);
    for (int k = 0; k < RPC_GENERIC_REQS; k++)
        request_call(srv, NULL);
    srv->threads = xcalloc((size_t)srv->nthreads, sizeof(pthread_t));
    for (int i = 0; i < srv->nthreads; i++) {
        int r = pthread_create(&srv->threads[i], NULL, worker_main, srv);
        if (r)
            PANIC("rpc cannot start worker thread: %s", strerror(r));
    }
    return 0;
}

int rpc_server_port(const struct rpc_server *srv)
{
    return srv->port;
}

void rpc_server_set_fsid(struct rpc_server *srv, uint64_t fsid)
{
    atomic_store(&srv->fsid, fsid);
    atomic_store(&srv->fsid_set, true);
}

void rpc_server_free(struct rpc_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stopping, true);
    if (srv->started) {
        grpc_server_shutdown_and_notify(srv->gs, srv->cq, &srv->shutdown_tag);
        grpc_server_cancel_all_calls(srv->gs);
        /* Orphan parked calls (handlers that park from now on orphan their call themselves), then wait
         * for running handlers, whose answers need the queue alive. */
        pthread_mutex_lock(&calls_mu);
        while (srv->deferred.dnext != &srv->deferred) {
            struct rpc_call *c = srv->deferred.dnext;
            deferred_unlink(c);
            orphan_locked(c);
        }
        while (srv->in_handler > 0)
            pthread_cond_wait(&calls_cv, &calls_mu);
        pthread_mutex_unlock(&calls_mu);
        pthread_mutex_lock(&srv->shutdown_mu);
        while (!srv->shutdown_done)
            pthread_cond_wait(&srv->shutdown_cv, &srv->shutdown_mu);
        pthread_mutex_unlock(&srv->shutdown_mu);
    }
    grpc_server_destroy(srv->gs);
    grpc_completion_queue_shutdown(srv->cq);
    if (srv->started) {
        for (int i = 0; i < srv->nthreads; i++)
            pthread_join(srv->threads[i], NULL);
    } else {
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
    }
    grpc_completion_queue_destroy(srv->cq);
    for (size_t i = 0; i < srv->nmethods; i++)
        free(srv->methods[i].path);
    free(srv->methods);
    free(srv->threads);
    pthread_mutex_destroy(&srv->shutdown_mu);
    pthread_cond_destroy(&srv->shutdown_cv);
    free(srv);
    grpc_shutdown();
}

/* ---------------------------------------------------------------------------------------------------- */
/* Client                                                                                                */

struct rpc_channel {
    struct rpc_channel *next;
    char *target;
    grpc_channel *ch;
    _Atomic uint64_t fsid; /* rpc_channel_set_fsid */
};

static pthread_mutex_t chan_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rpc_channel *channels;
static bool client_inited;

/* Asynchronous calls: one `next` cq, one dispatcher thread. */
static grpc_completion_queue *async_cq;
static pthread_t async_thread;
static atomic_int async_inflight;
static pthread_mutex_t async_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t async_cv = PTHREAD_COND_INITIALIZER;

/* Per-thread pluck cq for blocking calls. */
static pthread_key_t pluck_key;
static pthread_once_t pluck_once = PTHREAD_ONCE_INIT;

static void pluck_cq_destroy(void *p)
{
    grpc_completion_queue *cq = p;
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

static void pluck_key_init(void)
{
    pthread_key_create(&pluck_key, pluck_cq_destroy);
}

static grpc_completion_queue *thread_cq(void)
{
    pthread_once(&pluck_once, pluck_key_init);
    grpc_completion_queue *cq = pthread_getspecific(pluck_key);
    if (!cq) {
        cq = grpc_completion_queue_create_for_pluck(NULL);
        pthread_setspecific(pluck_key, cq);
    }
    return cq;
}

struct async_call {
    grpc_call *call;
    struct rpc_cancel *cancel; /* NULL, or the token the call is registered on (hook) */
    struct rpc_cancel_hook hook;
    const ProtobufCMessageDescriptor *out;
    rpc_done_fn done;
    void *arg;
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    grpc_metadata fsid_md; /* sent when fsid_md.value is not empty */
};

/* Turn a finished call's status, trailing metadata and reply bytes into (errno, message). */
static int finish_call(grpc_status_code status, const grpc_slice *details, const grpc_metadata_array *trail,
                       grpc_byte_buffer *recv_bb, const ProtobufCMessageDescriptor *out,
                       ProtobufCMessage **reply, struct rpc_status *st)
{
    int err = rpc_errno_from_status((int)status);
    if (status != GRPC_STATUS_OK) {
        for (size_t i = 0; i < trail->count; i++) {
            if (grpc_slice_str_cmp(trail->metadata[i].key, RPC_ERRNO_KEY) == 0) {
                char buf[16];
                size_t n = MIN(GRPC_SLICE_LENGTH(trail->metadata[i].value), sizeof(buf) - 1);
                memcpy(buf, GRPC_SLICE_START_PTR(trail->metadata[i].value), n);
                buf[n] = 0;
                long v = strtol(buf, NULL, 10);
                if (v > 0 && v < 4096)
                    err = -(int)v;
            }
        }
    }
    if (st) {
        st->err = err;
        size_t n = MIN(GRPC_SLICE_LENGTH(*details), sizeof(st->detail) - 1);
        memcpy(st->detail, GRPC_SLICE_START_PTR(*details), n);
        st->detail[n] = 0;
    }
    *reply = NULL;
    if (err == 0) {
        if (!recv_bb || !(*reply = decode(out, recv_bb))) {
            err = -EBADMSG;
            if (st) {
                st->err = err;
                snprintf(st->detail, sizeof(st->detail), "malformed or missing reply");
            }
        }
    }
    return err;
}

static void *dispatcher_main(void *unused)
{
    UNUSED(unused);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(async_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct async_call *a = ev.tag;
        /* Unregister before the callback: the token may be destroyed as soon as the last callback ran. */
        rpc_cancel_hook_del(a->cancel, &a->hook);
        ProtobufCMessage *reply = NULL;
        struct rpc_status st;
        int err = finish_call(a->status, &a->details, &a->trail_md, a->recv_bb, a->out, &reply, &st);
        a->done(err, reply, &st, a->arg);
        if (a->send_bb)
            grpc_byte_buffer_destroy(a->send_bb);
        if (a->recv_bb)
            grpc_byte_buffer_destroy(a->recv_bb);
        grpc_metadata_array_destroy(&a->init_md);
        grpc_metadata_array_destroy(&a->trail_md);
        grpc_slice_unref(a->details);
        grpc_slice_unref(a->fsid_md.value);
        grpc_call_unref(a->call);
        free(a);
        if (atomic_fetch_sub(&async_inflight, 1) == 1) {
            pthread_mutex_lock(&async_mu);
            pthread_cond_broadcast(&async_cv);
            pthread_mutex_unlock(&async_mu);
        }
    }
    return NULL;
}

/* Caller holds chan_mu. */
static void client_init_locked(void)
{
    if (client_inited)
        return;
    pthread_once(&grpc_once, grpc_init_once);
    grpc_init();
    async_cq = grpc_completion_queue_create_for_next(NULL);
    atomic_init(&async_inflight, 0);
    int r = pthread_create(&async_thread, NULL, dispatcher_main, NULL);
    if (r)
        PANIC("rpc cannot start dispatcher thread: %s", strerror(r));
    client_inited = true;
}

struct rpc_channel *rpc_channel_get(const char *target)
{
    pthread_mutex_lock(&chan_mu);
    client_init_locked();
    struct rpc_channel *c;
    for (c = channels; c; c = c->next)
        if (strcmp(c->target, target) == 0)
            break;
    if (!c) {
        grpc_arg args[7];
        const char *ikeys[] = {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                               GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                               GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, GRPC_ARG_ENABLE_RETRIES,
                               GRPC_ARG_KEEPALIVE_TIME_MS};
        /* Reconnects start 100 ms after a failure and back off to at most 1 s apart. gRPC takes the "minimum
         * reconnect backoff" as the minimum time it gives one connection attempt: at 100 ms a peer that was
         * slow to answer the HTTP/2 handshake (a replica restarting on a loaded machine: 200-400 ms seen) was
         * never reached, each attempt cut short, for seconds (rpc_slow_handshake; meta_failover). */
        int ivals[] = {(int)RPC_MAX_MESSAGE, (int)RPC_MAX_MESSAGE, RPC_CONNECT_TIMEOUT_MS, 100, 1000, 0, 10000};
        for (int i = 0; i < 7; i++) {
            args[i].type = GRPC_ARG_INTEGER;
            args[i].key = (char *)ikeys[i];
            args[i].value.integer = ivals[i];
        }
        grpc_channel_args ca = {.num_args = 7, .args = args};
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        c = xcalloc(1, sizeof(*c));
        c->target = xstrdup(target);
        c->ch = grpc_channel_create(target, creds, &ca);
        grpc_channel_credentials_release(creds);
        c->next = channels;
        channels = c;
    }
    pthread_mutex_unlock(&chan_mu);
    return c;
}

const char *rpc_channel_target(const struct rpc_channel *ch)
{
    return ch->target;
}

void rpc_channel_set_fsid(struct rpc_channel *ch, uint64_t fsid)
{
    atomic_store(&ch->fsid, fsid);
}

static const ProtobufCMethodDescriptor *method_desc(const ProtobufCServiceDescriptor *svc, const char *method)
{
    const ProtobufCMethodDescriptor *md = protobuf_c_service_descriptor_get_method_by_name(svc, method);
    if (!md)
        PANIC("rpc: service %s has no method %s", svc->name, method);
    return md;
}

static grpc_call *create_call(struct rpc_channel *ch, grpc_completion_queue *cq,
                              const ProtobufCServiceDescriptor *svc, const char *method, int64_t timeout_ms)
{
    char path[256];
    snprintf(path, sizeof(path), "/%s/%s", svc->name, method);
    grpc_slice ms = grpc_slice_from_copied_string(path);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, ms, NULL, deadline, NULL);
    grpc_slice_unref(ms);
    return call;
}

/* The metadata naming ch's file system id; its value is empty when the channel has none. Unref the value
 * once the call is complete. */
static void fsid_md_fill(const struct rpc_channel *ch, grpc_metadata *md)
{
    memset(md, 0, sizeof(*md));
    md->key = grpc_slice_from_static_string(RPC_FSID_KEY);
    uint64_t id = atomic_load(&ch->fsid);
    if (!id) {
        md->value = grpc_empty_slice();
        return;
    }
    char hex[17];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)id);
    md->value = grpc_slice_from_copied_buffer(hex, 16);
}

static void fill_client_ops(grpc_op *ops, grpc_byte_buffer *send_bb, grpc_metadata *fsid_md,
                            grpc_metadata_array *init_md, grpc_byte_buffer **recv_bb,
                            grpc_metadata_array *trail_md, grpc_status_code *status, grpc_slice *details)
{
    memset(ops, 0, 6 * sizeof(*ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (GRPC_SLICE_LENGTH(fsid_md->value)) {
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = fsid_md;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = trail_md;
    ops[5].data.recv_status_on_client.status = status;
    ops[5].data.recv_status_on_client.status_details = details;
}

/* ---- cancellation tokens ---------------------------------------------------------------------------- */

void rpc_cancel_init(struct rpc_cancel *c)
{
    pthread_mutex_init(&c->mu, NULL);
    clk_cond_init(&c->cv);
    atomic_init(&c->triggered, false);
    c->head.next = c->head.prev = &c->head;
}

void rpc_cancel_destroy(struct rpc_cancel *c)
{
    ASSERT(c->head.next == &c->head);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

void rpc_cancel_trigger(struct rpc_cancel *c)
{
    pthread_mutex_lock(&c->mu);
    if (!atomic_exchange(&c->triggered, true)) {
        /* Registered calls are alive (they unregister under this lock before their last unref), so
         * cancelling them here is safe; grpc_call_cancel only schedules the cancellation. */
        for (struct rpc_cancel_hook *h = c->head.next; h != &c->head; h = h->next) {
            if (h->call)
                grpc_call_cancel(h->call, NULL);
            else if (h->fn)
                h->fn(h->arg);
        }
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

bool rpc_cancel_triggered(struct rpc_cancel *c)
{
    return c && atomic_load(&c->triggered);
}

int rpc_cancel_sleep(struct rpc_cancel *c, uint64_t ns)
{
    if (!c) {
        clk_sleep_ns(ns);
        return 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec + ns;
    ts.tv_sec = (time_t)(t / NS_PER_SEC);
    ts.tv_nsec = (long)(t % NS_PER_SEC);
    pthread_mutex_lock(&c->mu);
    while (!atomic_load(&c->triggered))
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    bool trig = atomic_load(&c->triggered);
    pthread_mutex_unlock(&c->mu);
    return trig ? -ECANCELED : 0;
}

/* Register h (a call or a wake-up); false if the token was already triggered. */
static bool hook_add_locked(struct rpc_cancel *c, struct rpc_cancel_hook *h)
{
    if (atomic_load(&c->triggered))
        return false;
    h->next = c->head.next;
    h->prev = &c->head;
    c->head.next->prev = h;
    c->head.next = h;
    return true;
}

bool rpc_cancel_hook_add(struct rpc_cancel *c, struct rpc_cancel_hook *h, void (*fn)(void *arg), void *arg)
{
    if (!c)
        return true;
    h->call = NULL;
    h->fn = fn;
    h->arg = arg;
    pthread_mutex_lock(&c->mu);
    bool ok = hook_add_locked(c, h);
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void rpc_cancel_hook_del(struct rpc_cancel *c, struct rpc_cancel_hook *h)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->next = h->prev = h;
    pthread_mutex_unlock(&c->mu);
}

/* Register a call that is about to start; false (do not start it) if the token was triggered. */
static bool cancel_register(struct rpc_cancel *c, struct rpc_cancel_hook *h, grpc_call *call)
{
    if (!c)
        return true;
    h->call = call;
    h->fn = NULL;
    h->arg = NULL;
    pthread_mutex_lock(&c->mu);
    bool ok = hook_add_locked(c, h);
    pthread_mutex_unlock(&c->mu);
    return ok;
}

int rpc_call(struct rpc_channel *ch, const ProtobufCServiceDescriptor *svc, const char *method,
             const ProtobufCMessage *req, const struct rpc_payload *payload, int64_t timeout_ms,
             ProtobufCMessage **reply, struct rpc_status *st)
{
    return rpc_call_cancellable(ch, svc, method, req, payload, timeout_ms, NULL, reply, st);
}

/* A call refused because its token was triggered before it started. The payload is released as a sent one
 * would be. */
static int refuse_cancelled(const struct rpc_payload *payload, ProtobufCMessage **reply, struct rpc_status *st)
{
    if (payload && payload->release)
        payload->release(payload->ctx);
    if (reply)
        *reply = NULL;
    if (st) {
        st->err = -ECANCELED;
        snprintf(st->detail, sizeof(st->detail), "cancelled by the caller");
    }
    return -ECANCELED;
}

int rpc_call_cancellable(struct rpc_channel *ch, const ProtobufCServiceDescriptor *svc, const char *method,
                         const ProtobufCMessage *req, const struct rpc_payload *payload, int64_t timeout_ms,
                         struct rpc_cancel *cancel, ProtobufCMessage **reply, struct rpc_status *st)
{
    ASSERT(timeout_ms > 0);
    const ProtobufCMethodDescriptor *md = method_desc(svc, method);
    ASSERT(req->descriptor == md->input);
    if (rpc_cancel_triggered(cancel))
        return refuse_cancelled(payload, reply, st);
    grpc_completion_queue *cq = thread_cq();
    grpc_call *call = create_call(ch, cq, svc, method, timeout_ms);
    struct rpc_cancel_hook hook;
    if (!cancel_register(cancel, &hook, call)) {
        grpc_call_unref(call);
        return refuse_cancelled(payload, reply, st);
    }
    grpc_byte_buffer *send_bb = encode(req, payload);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_metadata fsid_md;
    fsid_md_fill(ch, &fsid_md);
    grpc_op ops[6];
    fill_client_ops(ops, send_bb, &fsid_md, &init_md, &recv_bb, &trail_md, &status, &details);
    int tag;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, &tag, NULL);
    if (e != GRPC_CALL_OK)
        PANIC("rpc start_batch failed: %d", (int)e);
    grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    ASSERT(ev.type == GRPC_OP_COMPLETE);
    rpc_cancel_hook_del(cancel, &hook); /* before the unref below: the trigger never sees a dead call */
    ProtobufCMessage *rep = NULL;
    int err = finish_call(status, &details, &trail_md, recv_bb, md->output, &rep, st);
    if (reply)
        *reply = rep;
    else
        rpc_message_free(rep);
    grpc_byte_buffer_destroy(send_bb);
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_slice_unref(details);
    grpc_slice_unref(fsid_md.value);
    grpc_call_unref(call);
    return err;
}

void rpc_call_async(struct rpc_channel *ch, const ProtobufCServiceDescriptor *svc, const char *method,
                    const ProtobufCMessage *req, const struct rpc_payload *payload, int64_t timeout_ms,
                    rpc_done_fn done, void *arg)
{
    rpc_call_async_cancellable(ch, svc, method, req, payload, timeout_ms, NULL, done, arg);
}

void rpc_call_async_cancellable(struct rpc_channel *ch, const ProtobufCServiceDescriptor *svc, const char *method,
                                const ProtobufCMessage *req, const struct rpc_payload *payload, int64_t timeout_ms,
                                struct rpc_cancel *cancel, rpc_done_fn done, void *arg)
{
    ASSERT(timeout_ms > 0);
    const ProtobufCMethodDescriptor *md = method_desc(svc, method);
    ASSERT(req->descriptor == md->input);
    if (rpc_cancel_triggered(cancel)) {
        struct rpc_status st;
        refuse_cancelled(payload, NULL, &st);
        done(-ECANCELED, NULL, &st, arg);
        return;
    }
    struct async_call *a = xcalloc(1, sizeof(*a));
    a->cancel = cancel;
    a->out = md->output;
    a->done = done;
    a->arg = arg;
    a->details = grpc_empty_slice();
    a->status = GRPC_STATUS_UNKNOWN;
    grpc_metadata_array_init(&a->init_md);
    grpc_metadata_array_init(&a->trail_md);
    a->call = create_call(ch, async_cq, svc, method, timeout_ms);
    if (!cancel_register(cancel, &a->hook, a->call)) { /* triggered since the check above */
        struct rpc_status st;
        grpc_call_unref(a->call);
        grpc_metadata_array_destroy(&a->init_md);
        grpc_metadata_array_destroy(&a->trail_md);
        free(a);
        refuse_cancelled(payload, NULL, &st);
        done(-ECANCELED, NULL, &st, arg);
        return;
    }
    a->send_bb = encode(req, payload);
    fsid_md_fill(ch, &a->fsid_md);
    grpc_op ops[6];
    fill_client_ops(ops, a->send_bb, &a->fsid_md, &a->init_md, &a->recv_bb, &a->trail_md, &a->status,
                    &a->details);
    atomic_fetch_add(&async_inflight, 1);
    grpc_call_error e = grpc_call_start_batch(a->call, ops, 6, a, NULL);
    if (e != GRPC_CALL_OK)
        PANIC("rpc start_batch failed: %d", (int)e);
}

void rpc_client_shutdown(void)
{
    pthread_mutex_lock(&chan_mu);
    if (!client_inited) {
        pthread_mutex_unlock(&chan_mu);
        return;
    }
    pthread_mutex_lock(&async_mu);
    while (atomic_load(&async_inflight) > 0)
        pthread_cond_wait(&async_cv, &async_mu);
    pthread_mutex_unlock(&async_mu);
    grpc_completion_queue_shutdown(async_cq);
    pthread_join(async_thread, NULL);
    grpc_completion_queue_destroy(async_cq);
    while (channels) {
        struct rpc_channel *c = channels;
        channels = c->next;
        grpc_channel_destroy(c->ch);
        free(c->target);
        free(c);
    }
    /* This thread's pluck cq, if any (other threads' are destroyed at their exit). */
    pthread_once(&pluck_once, pluck_key_init);
    if (pthread_getspecific(pluck_key)) {
        pluck_cq_destroy(pthread_getspecific(pluck_key));
        pthread_setspecific(pluck_key, NULL);
    }
    client_inited = false;
    pthread_mutex_unlock(&chan_mu);
    grpc_shutdown();
}
