/* nssvc_testutil.h - the harness of the namespace service's pure tests: a temporary LevelDB with an
 * initialised namespace, and one call that runs a request the way the service does (table lookup ->
 * nssvc_cmd_pack -> nssvc_apply_packed in a txn -> reply decoded as the RPC's output type). */
#ifndef SYNOD_NSSVC_TESTUTIL_H
#define SYNOD_NSSVC_TESTUTIL_H

#include "admin.pb-c.h"
#include "chunk.pb-c.h"
#include "meta.pb-c.h"
#include "metaserver/ns_service.h"

extern leveldb_t *tdb;
extern struct ns *tns_;
extern int64_t tnow;      /* the next entry's time; advanced 1 us per call */
extern uint64_t tsession; /* the session put into rid() */

/* Open a fresh namespace (root 0777, goal 2, unknown-chunk grace 1 s). */
void tsvc_setup(void);
void tsvc_teardown(void);
/* Run `method` of `svc` ("Meta", "ChunkControl", "Admin"); *out (may be NULL): decoded reply or NULL. */
int tsvc_call(const char *svc, const char *method, const ProtobufCMessage *req, ProtobufCMessage **out);
/* Apply an internal command (session 0) as case cc. */
int tsvc_internal(Synod__V1__NsCommand__CmdCase cc, const ProtobufCMessage *req);
/* Register a chunkserver (capacity 1 TiB) through ChunkControl; returns its id (asserts success). */
uint32_t tsvc_register(const char *addr, const char *uuid, const char *label);
/* Create regular file `name` under the root and open its chunk 0 for writing (ChunkOpenWrite); returns the
 * inode, with the chunk's id and version (asserts success). */
uint64_t tsvc_file_open_write(const char *name, uint64_t *chunk, uint32_t *version);
/* A heartbeat from chunkserver cs (capacity 1 TiB, `used` bytes used) carrying, when given, one command
 * result and one chain failure. Returns the call's result. */
int tsvc_heartbeat(uint32_t cs, uint64_t used, const Synod__V1__ChunkCmdResult *res,
                   const Synod__V1__ChainFailure *cf);
/* ChunkWriteDone of chunk 0 of ino at (chunk, version), new size `size`, returning the lease (asserts
 * success). */
void tsvc_write_done_release(uint64_t ino, uint64_t chunk, uint32_t version, uint64_t size);
/* A fresh ReqId (tsession, next seq); static storage, 64 in rotation. */
Synod__V1__ReqId *tsvc_rid(void);

#define META(method, req, out) tsvc_call("Meta", method, &(req).base, (ProtobufCMessage **)(out))

#endif
