/* nssvc_testutil.c - see nssvc_testutil.h. */
#include "nssvc_testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test.h"

leveldb_t *tdb;
struct ns *tns_;
int64_t tnow = 1700000000LL * 1000000000LL;
uint64_t tsession = 5;
static uint64_t seq;
static char dir[64];

static const ProtobufCServiceDescriptor *svc_desc(const char *svc)
{
    if (!strcmp(svc, "Meta"))
        return &synod__v1__meta__descriptor;
    if (!strcmp(svc, "ChunkControl"))
        return &synod__v1__chunk_control__descriptor;
    return &synod__v1__admin__descriptor;
}

static int apply(const uint8_t *buf, size_t len, uint64_t session, bool read, struct ns_reply *rep)
{
    struct kv_txn *txn = kv_txn_begin(tdb);
    int rc = nssvc_apply_packed(tns_, txn, tnow, session, buf, len, rep);
    tnow += 1000;
    if (read)
        kv_txn_abort(txn);
    else
        T_EQ(kv_txn_commit(txn, NULL, 0, false), 0);
    return rc;
}

int tsvc_call(const char *svc, const char *method, const ProtobufCMessage *req, ProtobufCMessage **out)
{
    const struct nssvc_method *m = nssvc_method_find(svc, method);
    T_CHECK(m != NULL);
    T_CHECK(m->cmd_case != SYNOD__V1__NS_COMMAND__CMD__NOT_SET);
    const ProtobufCMethodDescriptor *md = protobuf_c_service_descriptor_get_method_by_name(svc_desc(svc), method);
    T_CHECK(md != NULL && md->input == req->descriptor);
    uint64_t s, q;
    nssvc_req_id(req, &s, &q);
    uint8_t *buf;
    size_t len;
    int rc = nssvc_cmd_pack(m->cmd_case, req, tnow, s, &buf, &len);
    if (out)
        *out = NULL;
    if (rc)
        return rc;
    struct ns_reply rep;
    /* the runtime passes the entry's time and the validated session (reads have none) */
    rc = apply(buf, len, m->route == NSSVC_READ ? 0 : s, m->route == NSSVC_READ, &rep);
    free(buf);
    if (rc == 0) {
        ProtobufCMessage *r = nssvc_reply_decode(md->output, rep.buf, rep.len);
        T_CHECK(r != NULL);
        if (out)
            *out = r;
        else
            protobuf_c_message_free_unpacked(r, NULL);
    }
    ns_reply_release(&rep);
    return rc;
}

int tsvc_internal(Synod__V1__NsCommand__CmdCase cc, const ProtobufCMessage *req)
{
    uint8_t *buf;
    size_t len;
    T_EQ(nssvc_cmd_pack(cc, req, tnow, 0, &buf, &len), 0);
    struct ns_reply rep;
    int rc = apply(buf, len, 0, false, &rep);
    free(buf);
    ns_reply_release(&rep);
    return rc;
}

Synod__V1__ReqId *tsvc_rid(void)
{
    static Synod__V1__ReqId r[64];
    static int i;
    Synod__V1__ReqId *x = &r[i++ % 64];
    synod__v1__req_id__init(x);
    x->session = tsession;
    x->seq = ++seq;
    return x;
}

void tsvc_setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/nssvc.XXXXXX");
    T_CHECK(mkdtemp(dir) != NULL);
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 1);
    char *err = NULL;
    tdb = leveldb_open(o, dir, &err);
    T_CHECK(!err);
    leveldb_options_destroy(o);
    tns_ = ns_new();
    Synod__V1__NsInit init = SYNOD__V1__NS_INIT__INIT;
    init.root_mode = 0777;
    init.default_goal = 2;
    init.unknown_chunk_grace_ns = 1000000000;
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_INIT, &init.base), 0);
}

void tsvc_teardown(void)
{
    leveldb_close(tdb);
    ns_free(tns_);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    T_EQ(system(cmd), 0);
}

uint32_t tsvc_register(const char *addr, const char *uuid, const char *label)
{
    Synod__V1__RegisterReq r = SYNOD__V1__REGISTER_REQ__INIT;
    r.addr = (char *)addr;
    r.uuid = (char *)uuid;
    r.label = (char *)label;
    r.total_bytes = 1ull << 40;
    Synod__V1__RegisterRep *rep;
    T_EQ(tsvc_call("ChunkControl", "RegisterChunkserver", &r.base, (ProtobufCMessage **)&rep), 0);
    uint32_t id = rep->id;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return id;
}

uint64_t tsvc_file_open_write(const char *name, uint64_t *chunk, uint32_t *version)
{
    Synod__V1__Cred cr = SYNOD__V1__CRED__INIT;
    Synod__V1__MknodReq mk = SYNOD__V1__MKNOD_REQ__INIT;
    mk.rid = tsvc_rid();
    mk.cred = &cr;
    mk.parent = NS_ROOT_INO;
    mk.name = (char *)name;
    mk.mode = S_IFREG | 0644;
    Synod__V1__CreateRep *crep;
    T_EQ(META("Mknod", mk, &crep), 0);
    uint64_t ino = crep->attr->ino;
    protobuf_c_message_free_unpacked(&crep->base, NULL);
    Synod__V1__ChunkOpenWriteReq ow = SYNOD__V1__CHUNK_OPEN_WRITE_REQ__INIT;
    ow.rid = tsvc_rid();
    ow.ino = ino;
    Synod__V1__ChunkOpenWriteRep *owr;
    T_EQ(META("ChunkOpenWrite", ow, &owr), 0);
    *chunk = owr->chunk->chunk_id;
    *version = owr->chunk->version;
    protobuf_c_message_free_unpacked(&owr->base, NULL);
    return ino;
}

int tsvc_heartbeat(uint32_t cs, uint64_t used, const Synod__V1__ChunkCmdResult *res,
                   const Synod__V1__ChainFailure *cf)
{
    Synod__V1__HeartbeatReq r = SYNOD__V1__HEARTBEAT_REQ__INIT;
    Synod__V1__ChunkCmdResult *pres = (Synod__V1__ChunkCmdResult *)res;
    Synod__V1__ChainFailure *pcf = (Synod__V1__ChainFailure *)cf;
    r.id = cs;
    r.total_bytes = 1ull << 40;
    r.used_bytes = used;
    if (res) {
        r.n_results = 1;
        r.results = &pres;
    }
    if (cf) {
        r.n_chain_failures = 1;
        r.chain_failures = &pcf;
    }
    return tsvc_call("ChunkControl", "Heartbeat", &r.base, NULL);
}

void tsvc_write_done_release(uint64_t ino, uint64_t chunk, uint32_t version, uint64_t size)
{
    Synod__V1__ChunkWriteDoneReq wd = SYNOD__V1__CHUNK_WRITE_DONE_REQ__INIT;
    wd.rid = tsvc_rid();
    wd.ino = ino;
    wd.chunk_id = chunk;
    wd.version = version;
    wd.new_size = size;
    wd.release_lease = true;
    Synod__V1__AttrRep *rep;
    T_EQ(META("ChunkWriteDone", wd, &rep), 0);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}
