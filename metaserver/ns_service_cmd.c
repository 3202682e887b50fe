/* ns_service_cmd.c - the pure half of the namespace service: which RPC becomes which NsCommand, how it
 * travels, and the apply glue (decode + ns_apply) that the rsm hook wraps.
 *
 * Commands are built without copying the request: the NsCommand oneof member is pointed at the decoded
 * request (found generically through the descriptors: the oneof field whose number is the case), so the
 * packed command is the request's bytes plus a small envelope (time, session).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "metaserver/ns_service.h"

#define C(x) SYNOD__V1__NS_COMMAND__CMD_##x
#define NONE SYNOD__V1__NS_COMMAND__CMD__NOT_SET

static const struct nssvc_method methods[] = {
    {"Meta", "SessionOpen", NONE, NSSVC_SESSION_OPEN},
    {"Meta", "SessionKeepalive", NONE, NSSVC_KEEPALIVE},
    {"Meta", "SessionClose", C(SESSION_CLOSE), NSSVC_LOG},
    {"Meta", "Lookup", C(LOOKUP), NSSVC_READ},
    {"Meta", "Getattr", C(GETATTR), NSSVC_READ},
    {"Meta", "Setattr", C(SETATTR), NSSVC_LOG},
    {"Meta", "Mknod", C(MKNOD), NSSVC_LOG},
    {"Meta", "Unlink", C(UNLINK), NSSVC_LOG},
    {"Meta", "Rename", C(RENAME), NSSVC_LOG},
    {"Meta", "Link", C(LINK), NSSVC_LOG},
    {"Meta", "Symlink", C(SYMLINK), NSSVC_LOG},
    {"Meta", "Readlink", C(READLINK), NSSVC_READ},
    {"Meta", "Readdir", C(READDIR), NSSVC_READ},
    {"Meta", "Statfs", C(STATFS), NSSVC_READ},
    {"Meta", "Setxattr", C(SETXATTR), NSSVC_LOG},
    {"Meta", "Getxattr", C(GETXATTR), NSSVC_READ},
    {"Meta", "Listxattr", C(LISTXATTR), NSSVC_READ},
    {"Meta", "Removexattr", C(REMOVEXATTR), NSSVC_LOG},
    {"Meta", "Open", C(OPEN), NSSVC_LOG},
    {"Meta", "Release", C(RELEASE), NSSVC_LOG},
    {"Meta", "ChunkLocations", C(CHUNK_LOCATIONS), NSSVC_READ},
    {"Meta", "ChunkOpenWrite", C(CHUNK_OPEN_WRITE), NSSVC_LOG},
    {"Meta", "ChunkWriteDone", C(CHUNK_WRITE_DONE), NSSVC_LOG},
    {"Meta", "BadReplica", C(BAD_REPLICA), NSSVC_LOG},
    {"Meta", "GetLock", C(GET_LOCK), NSSVC_READ},
    {"Meta", "SetLock", C(SET_LOCK), NSSVC_LOG},
    {"ChunkControl", "RegisterChunkserver", C(CS_REGISTER), NSSVC_LOG},
    {"ChunkControl", "Heartbeat", C(CS_HEARTBEAT), NSSVC_LOCAL},
    {"ChunkControl", "ChunkReport", C(CS_REPORT), NSSVC_LOG},
    {"Admin", "Status", NONE, NSSVC_LOCAL},
    {"Admin", "Fileinfo", NONE, NSSVC_LOCAL},
    {"Admin", "SetGoal", C(SET_GOAL), NSSVC_LOG},
    {"Admin", "Rebalance", NONE, NSSVC_LOCAL},
    {"Admin", "Decommission", C(DECOMMISSION), NSSVC_LOG},
    {"Admin", "Fsck", NONE, NSSVC_LOCAL},
    {"Admin", "ReplLimit", C(REPL_LIMIT), NSSVC_LOG},
};

const struct nssvc_method *nssvc_method_find(const char *service, const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(methods); i++)
        if (!strcmp(methods[i].service, service) && !strcmp(methods[i].name, name))
            return &methods[i];
    return NULL;
}

const struct nssvc_method *nssvc_methods(size_t *n)
{
    *n = ARRAY_SIZE(methods);
    return methods;
}

/* A message-typed field of req by name, or NULL if the type has none. */
static const ProtobufCFieldDescriptor *msg_field(const ProtobufCMessage *req, const char *name,
                                                 const ProtobufCMessageDescriptor *type)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(req->descriptor, name);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE || f->descriptor != type)
        return NULL;
    return f;
}

void nssvc_req_id(const ProtobufCMessage *req, uint64_t *session, uint64_t *seq)
{
    *session = *seq = 0;
    const ProtobufCFieldDescriptor *f = msg_field(req, "rid", &synod__v1__req_id__descriptor);
    if (!f)
        return;
    const Synod__V1__ReqId *rid = *(Synod__V1__ReqId *const *)((const char *)req + f->offset);
    if (rid) {
        *session = rid->session;
        *seq = rid->seq;
    }
}

int nssvc_cmd_build(Synod__V1__NsCommand *cmd, Synod__V1__NsCommand__CmdCase cc, const ProtobufCMessage *req,
                    int64_t now_ns, uint64_t session)
{
    synod__v1__ns_command__init(cmd);
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&synod__v1__ns_command__descriptor, (unsigned)cc);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE || !req || f->descriptor != req->descriptor)
        return -EINVAL;
    /* the namespace reads a NULL Cred as root (internal commands): a client must always send one */
    const ProtobufCFieldDescriptor *cf = msg_field(req, "cred", &synod__v1__cred__descriptor);
    if (cf && !*(Synod__V1__Cred *const *)((const char *)req + cf->offset))
        return -EINVAL;
    cmd->cmd_case = cc;
    *(const ProtobufCMessage **)((char *)cmd + f->offset) = req;
    cmd->now_ns = now_ns;
    cmd->session = session;
    return 0;
}

int nssvc_cmd_pack(Synod__V1__NsCommand__CmdCase cc, const ProtobufCMessage *req, int64_t now_ns,
                   uint64_t session, uint8_t **out, size_t *len)
{
    Synod__V1__NsCommand cmd;
    int rc = nssvc_cmd_build(&cmd, cc, req, now_ns, session);
    if (rc)
        return rc;
    *len = protobuf_c_message_get_packed_size(&cmd.base);
    *out = xmalloc(*len);
    protobuf_c_message_pack(&cmd.base, *out);
    return 0;
}

int nssvc_apply_packed(struct ns *ns, struct kv_txn *txn, int64_t time_ns, uint64_t session, const uint8_t *buf,
                       size_t len, struct ns_reply *rep)
{
    Synod__V1__NsCommand *cmd = synod__v1__ns_command__unpack(NULL, len, buf);
    if (!cmd) {
        memset(rep, 0, sizeof(*rep));
        return rep->err = -EINVAL;
    }
    if (time_ns)
        cmd->now_ns = time_ns;
    if (session)
        cmd->session = session;
    int rc = ns_apply(ns, txn, cmd, rep);
    synod__v1__ns_command__free_unpacked(cmd, NULL);
    return rc;
}

ProtobufCMessage *nssvc_reply_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len)
{
    return protobuf_c_message_unpack(desc, NULL, len, buf);
}
