/* ns_service.h - the namespace service: the glue between the RPC services on a metaserver (Meta for
 * clients, ChunkControl for chunkservers, Admin for synodctl) and the namespace state machine
 * (namespace.h) inside the rsm runtime (rsm.h).
 *
 * The plugin itself (nssm_plugin, meta_plugin.h) lives in ns_service.c and needs the runtime. What is
 * declared here is pure and testable without it:
 *
 *  - the method table: for every RPC method the NsCommand case it becomes and how it travels (through
 *    the log, as a lease read on the leader, or handled by the runtime's session calls);
 *  - nssvc_cmd_pack: request -> packed NsCommand (the leader's time, the request's session; a request
 *    type with a `cred` field but no credentials is refused: the namespace reads a missing Cred as root);
 *  - nssvc_apply_packed: the rsm apply hook minus the runtime's buffer: decode + ns_apply.
 *
 * Thread safety: everything here is reentrant; the table is immutable.
 */
#ifndef SYNOD_NS_SERVICE_H
#define SYNOD_NS_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metaserver/namespace.h"

/* How a method travels. */
enum nssvc_route {
    NSSVC_LOG,           /* a command through the log (rsm_submit), deduplicated by its ReqId */
    NSSVC_READ,          /* read-only: applied on the leader under its lease (rsm_read) */
    NSSVC_SESSION_OPEN,  /* rsm_session_open */
    NSSVC_KEEPALIVE,     /* rsm_session_touch (leader memory only) */
    NSSVC_LOCAL,         /* handled by the service itself (heartbeats, status, fileinfo, rebalance, fsck) */
    NSSVC_UNSUPPORTED,   /* answers ENOSYS */
};

struct nssvc_method {
    const char *service;                   /* "Meta", "ChunkControl", "Admin" */
    const char *name;                      /* method name as in the .proto */
    Synod__V1__NsCommand__CmdCase cmd_case; /* NOT_SET for NSSVC_SESSION_OPEN/KEEPALIVE/LOCAL/UNSUPPORTED */
    enum nssvc_route route;
};

/* The table entry of service.method, or NULL. */
const struct nssvc_method *nssvc_method_find(const char *service, const char *name);
/* Every entry of `service` in table order; *n gets the count. Borrowed, static. */
const struct nssvc_method *nssvc_methods(size_t *n);

/* The (session, seq) of a request: its `rid` field if the message type has one and it is set, else 0s. */
void nssvc_req_id(const ProtobufCMessage *req, uint64_t *session, uint64_t *seq);

/* Build the NsCommand for `req` (borrowed: cmd points into it; valid while req lives) as case `cc`:
 * now_ns and session as given. -EINVAL if req's type is not the one the case holds, or if the type has a
 * `cred` field and it is not set (a client never becomes root by omission). */
int nssvc_cmd_build(Synod__V1__NsCommand *cmd, Synod__V1__NsCommand__CmdCase cc, const ProtobufCMessage *req,
                    int64_t now_ns, uint64_t session);
/* nssvc_cmd_build, then pack: *out is malloc'd (caller frees), *len its length. */
int nssvc_cmd_pack(Synod__V1__NsCommand__CmdCase cc, const ProtobufCMessage *req, int64_t now_ns,
                   uint64_t session, uint8_t **out, size_t *len);

/* The apply hook without the runtime: decode cmd[0..len) as an NsCommand and apply it in txn with
 * ns_apply. The entry's time (time_ns, if nonzero) replaces the command's now_ns and the runtime's session
 * (if nonzero) its session, so apply depends only on the log. Undecodable bytes: -EINVAL. Returns rep->err;
 * release rep with ns_reply_release. */
int nssvc_apply_packed(struct ns *ns, struct kv_txn *txn, int64_t time_ns, uint64_t session, const uint8_t *cmd,
                       size_t len, struct ns_reply *rep);

/* Decode reply bytes of a command as `desc` (the RPC's output type). NULL if they do not decode. Free with
 * protobuf_c_message_free_unpacked. */
ProtobufCMessage *nssvc_reply_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len);

#endif
