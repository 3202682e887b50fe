/* test_ns_chunks.c - chunk table and chunkserver management: placement across labels, write leases,
 * write completion, bad replicas, truncation and the deletion queue, death and re-replication planning,
 * chunk report reconciliation, statfs. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "ns_testutil.h"
#include "tests/test.h"

#define C(CASE, field, msg)                                                                                 \
    do {                                                                                                    \
        memset(&cmd, 0, sizeof(cmd));                                                                       \
        synod__v1__ns_command__init(&cmd);                                                                  \
        cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_##CASE;                                                   \
        cmd.field = &(msg);                                                                                 \
    } while (0)

static Synod__V1__NsCommand cmd;

static uint32_t cs_register(struct tns *t, const char *addr, const char *label, uint64_t free_gb)
{
    Synod__V1__RegisterReq r = SYNOD__V1__REGISTER_REQ__INIT;
    r.addr = (char *)addr;
    r.label = (char *)label;
    r.uuid = (char *)addr;
    r.total_bytes = 1000ull << 30;
    r.used_bytes = (1000ull - free_gb) << 30;
    C(CS_REGISTER, cs_register, r);
    ProtobufCMessage *m;
    T_EQ(tns_apply(t, &cmd, &m), 0);
    uint32_t id = ((Synod__V1__RegisterRep *)m)->id;
    protobuf_c_message_free_unpacked(m, NULL);
    return id;
}

static int open_write(struct tns *t, uint64_t ino, uint64_t index, Synod__V1__ChunkOpenWriteRep **rep)
{
    Synod__V1__ChunkOpenWriteReq r = SYNOD__V1__CHUNK_OPEN_WRITE_REQ__INIT;
    r.rid = tns_rid(t);
    r.ino = ino;
    r.index = index;
    C(CHUNK_OPEN_WRITE, chunk_open_write, r);
    return tns_apply(t, &cmd, (ProtobufCMessage **)rep);
}

static int write_done(struct tns *t, uint64_t ino, uint64_t index, uint64_t chunk, uint32_t version, uint64_t size)
{
    Synod__V1__ChunkWriteDoneReq r = SYNOD__V1__CHUNK_WRITE_DONE_REQ__INIT;
    r.rid = tns_rid(t);
    r.ino = ino;
    r.index = index;
    r.chunk_id = chunk;
    r.version = version;
    r.new_size = size;
    r.release_lease = true;
    C(CHUNK_WRITE_DONE, chunk_write_done, r);
    return tns_apply(t, &cmd, NULL);
}

/* ChunkLocations of ino's first `count` chunks (free with protobuf_c_message_free_unpacked). */
static Synod__V1__ChunkLocRep *locations(struct tns *t, uint64_t ino, uint32_t count)
{
    Synod__V1__ChunkLocReq lr = SYNOD__V1__CHUNK_LOC_REQ__INIT;
    lr.ino = ino;
    lr.count = count;
    C(CHUNK_LOCATIONS, chunk_locations, lr);
    ProtobufCMessage *m;
    T_EQ(tns_apply(t, &cmd, &m), 0);
    return (Synod__V1__ChunkLocRep *)m;
}

/* A file `name` in dir with its chunk 0 opened for writing (*w: the reply, caller frees). */
static uint64_t file_open_write(struct tns *t, uint64_t dir, const char *name, Synod__V1__ChunkOpenWriteRep **w)
{
    uint64_t f;
    T_EQ(t_mknod(t, ROOT, dir, name, S_IFREG | 0644, &f), 0);
    T_EQ(open_write(t, f, 0, w), 0);
    return f;
}

static void set_goal(struct tns *t, uint64_t ino, uint32_t goal)
{
    Synod__V1__SetGoalReq sg = SYNOD__V1__SET_GOAL_REQ__INIT;
    sg.rid = tns_rid(t);
    sg.ino = ino;
    sg.goal = goal;
    C(SET_GOAL, set_goal, sg);
    T_EQ(tns_apply(t, &cmd, NULL), 0);
}

static size_t cmds_for(struct tns *t, uint32_t cs, Synod__V1__ChunkCmd ***out)
{
    struct kv_txn *txn = kv_txn_begin(t->db);
    size_t n = ns_cs_commands(txn, cs, t->now, 100, out);
    kv_txn_abort(txn);
    return n;
}

static void free_cmds(Synod__V1__ChunkCmd **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        synod__v1__chunk_cmd__free_unpacked(v[i], NULL);
    free(v);
}

static void heartbeat(struct tns *t, uint32_t cs, Synod__V1__ChunkCmd **done, size_t ndone)
{
    Synod__V1__HeartbeatReq r = SYNOD__V1__HEARTBEAT_REQ__INIT;
    r.id = cs;
    r.total_bytes = 1000ull << 30;
    r.used_bytes = 100ull << 30;
    Synod__V1__ChunkCmdResult *res = calloc(ndone + 1, sizeof(*res));
    Synod__V1__ChunkCmdResult **pr = calloc(ndone + 1, sizeof(*pr));
    for (size_t i = 0; i < ndone; i++) {
        synod__v1__chunk_cmd_result__init(&res[i]);
        res[i].cmd_id = done[i]->cmd_id;
        pr[i] = &res[i];
    }
    r.results = pr;
    r.n_results = ndone;
    C(CS_HEARTBEAT, cs_heartbeat, r);
    T_EQ(tns_apply(t, &cmd, NULL), 0);
    free(res);
    free(pr);
}

static void test_chunks(void)
{
    struct tns t;
    tns_open(&t);
    uint32_t a = cs_register(&t, "h1:1", "rack1", 900);
    uint32_t b = cs_register(&t, "h2:1", "rack1", 800);
    uint32_t c = cs_register(&t, "h3:1", "rack2", 500);
    uint32_t d = cs_register(&t, "h4:1", "rack3", 100);
    T_CHECK(a && b && c && d && a != b);
    T_EQ(cs_register(&t, "h1:1", "rack1", 900), a); /* same uuid: same id */
    uint64_t f, dir;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "g3", S_IFDIR | 0755, &dir), 0);
    set_goal(&t, dir, 3);
    T_EQ(t_mknod(&t, ROOT, dir, "f", S_IFREG | 0644, &f), 0);
    Synod__V1__Attr at;
    T_EQ(t_getattr(&t, f, &at), 0);
    T_EQ(at.goal, 3); /* inherited */
    Synod__V1__ChunkOpenWriteRep *w;
    T_EQ(open_write(&t, f, 0, &w), 0);
    T_EQ(w->chunk->n_replicas, 3);
    /* spread across labels: rack1 once (the emptier a), rack2, rack3; in that order rotated by the chunk id
     * (the chain's head, see test_heads_spread) */
    uint64_t chunk = w->chunk->chunk_id;
    const uint32_t ranked[3] = {a, c, d};
    for (int i = 0; i < 3; i++)
        T_EQ(w->chunk->replicas[i]->id, ranked[(i + chunk) % 3]);
    for (int i = 0; i < 3; i++)
        if (w->chunk->replicas[i]->id == a)
            T_STREQ(w->chunk->replicas[i]->addr, "h1:1");
    uint32_t ver = w->chunk->version;
    T_EQ(ver, 1);
    T_CHECK(w->fresh); /* placed by this open: writes may create it */
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    /* one writer per chunk */
    uint64_t s1 = t.session, s2 = t_session_open(&t);
    t.session = s2;
    T_EQ(open_write(&t, f, 0, NULL), -EAGAIN);
    t.session = s1;
    T_EQ(open_write(&t, f, 0, &w), 0); /* same session: lease extended, no bump */
    T_EQ(w->chunk->version, 1);
    /* still fresh: nothing was written yet. The client may not know it placed the chunk: its first open can
     * be applied while the answer is lost (leader change), and the open it sends again is a new request.
     * Said not fresh, its writes could not create the chunk anywhere (ENOENT on every replica, EIO). */
    T_CHECK(w->fresh);
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(write_done(&t, f, 0, chunk, 2, 10), -ESTALE);
    T_EQ(write_done(&t, f, 0, chunk, 1, 5000), 0);
    T_EQ(t_getattr(&t, f, &at), 0);
    T_EQ(at.size, 5000);
    t.session = s2;
    T_EQ(open_write(&t, f, 0, &w), 0); /* lease released: s2 gets it with a version bump */
    T_EQ(w->chunk->version, 2);
    T_CHECK(!w->fresh); /* holds data: a replica missing it has lost data, never recreate it empty */
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    t.session = s1; /* the old writer completing at its older version: the lease is no longer its own */
    T_EQ(write_done(&t, f, 0, chunk, 1, 7000), -ESTALE);
    t.session = s2;
    /* bad replica: removed, version bumped, deletion queued */
    Synod__V1__BadReplicaReq br = SYNOD__V1__BAD_REPLICA_REQ__INIT;
    br.rid = tns_rid(&t);
    br.chunk_id = chunk;
    br.version = 2;
    br.chunkserver = d;
    C(BAD_REPLICA, bad_replica, br);
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    Synod__V1__ChunkCmd **cmds;
    size_t n = cmds_for(&t, d, &cmds);
    T_EQ(n, 1);
    T_EQ(cmds[0]->type, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE);
    T_EQU(cmds[0]->chunk_id, chunk);
    heartbeat(&t, d, cmds, n);
    free_cmds(cmds, n);
    T_EQ(cmds_for(&t, d, &cmds), 0);
    free(cmds);
    /* under goal now (2 of 3), but s2 still holds the write lease: no copy may start (it would miss the
     * writes made after its start), and a ReplStart proposed anyway is refused */
    struct kv_txn *txn = kv_txn_begin(t.db);
    Synod__V1__ReplStart **plan;
    T_EQ(ns_plan_replication(txn, t.now, 60ll * 1000000000, 10, &(struct ns_plan_cursor){.budget = 0}, &plan), 0);
    kv_txn_abort(txn);
    free(plan);
    {
        Synod__V1__ReplStart rs = SYNOD__V1__REPL_START__INIT;
        rs.chunk_id = chunk;
        rs.version = 3;
        rs.src = a;
        rs.dst = d;
        C(REPL_START, repl_start, rs);
        T_EQ(tns_apply(&t, &cmd, NULL), -EBUSY);
    }
    /* s2 completes at the version it wrote (2; the removal bumped it to 3): accepted, lease released */
    T_EQ(write_done(&t, f, 0, chunk, 2, 6000), 0);
    /* now the plan prefers d (rack3 unused) over b (rack1 holds a copy) */
    txn = kv_txn_begin(t.db);
    size_t np = ns_plan_replication(txn, t.now, 60ll * 1000000000, 10, &(struct ns_plan_cursor){.budget = 0}, &plan);
    kv_txn_abort(txn);
    T_EQ(np, 1);
    T_EQU(plan[0]->chunk_id, chunk);
    T_EQ(plan[0]->version, 3);
    T_EQ(plan[0]->dst, d);
    C(REPL_START, repl_start, *plan[0]);
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    synod__v1__repl_start__free_unpacked(plan[0], NULL);
    free(plan);
    txn = kv_txn_begin(t.db);
    T_EQ(ns_plan_replication(txn, t.now, 60ll * 1000000000, 10, &(struct ns_plan_cursor){.budget = 0}, &plan), 0); /* pending: not twice */
    kv_txn_abort(txn);
    free(plan);
    n = cmds_for(&t, d, &cmds);
    T_EQ(n, 1);
    T_EQ(cmds[0]->type, SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE);
    uint32_t first_left = 0; /* the source: the first replica left in the set's order (d was dropped) */
    for (int i = 0; i < 3 && !first_left; i++)
        if (ranked[(i + chunk) % 3] != d)
            first_left = ranked[(i + chunk) % 3];
    T_EQ(cmds[0]->source->id, first_left);
    heartbeat(&t, d, cmds, n);
    free_cmds(cmds, n);
    Synod__V1__ChunkLocReq lr = SYNOD__V1__CHUNK_LOC_REQ__INIT;
    lr.ino = f;
    lr.count = 4;
    C(CHUNK_LOCATIONS, chunk_locations, lr);
    ProtobufCMessage *m;
    T_EQ(tns_apply(&t, &cmd, &m), 0);
    Synod__V1__ChunkLocRep *loc = (Synod__V1__ChunkLocRep *)m;
    T_EQ(loc->n_chunks, 1);
    T_EQ(loc->chunks[0]->n_replicas, 3);
    protobuf_c_message_free_unpacked(m, NULL);
    /* chunkserver c dies: dropped from the set, chunk under goal again */
    Synod__V1__ChunkserverDead cd = SYNOD__V1__CHUNKSERVER_DEAD__INIT;
    txn = kv_txn_begin(t.db);
    uint32_t *dead;
    T_EQ(ns_find_dead_chunkservers(txn, t.now + 100ll * 1000000000, 30ll * 1000000000, &dead), 4);
    free(dead);
    kv_txn_abort(txn);
    cd.id = c;
    C(CS_DEAD, cs_dead, cd);
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    T_EQ(tns_apply(&t, &cmd, &m), 0);
    protobuf_c_message_free_unpacked(m, NULL);
    /* chunk report from a: a stale chunk (unknown id gets grace), the good one */
    Synod__V1__ChunkVersion cv1 = SYNOD__V1__CHUNK_VERSION__INIT, cv2 = SYNOD__V1__CHUNK_VERSION__INIT;
    cv1.chunk_id = chunk;
    cv1.version = 3;
    cv2.chunk_id = 999;
    cv2.version = 1;
    Synod__V1__ChunkVersion *cvs[2] = {&cv1, &cv2};
    Synod__V1__ChunkReportReq rr = SYNOD__V1__CHUNK_REPORT_REQ__INIT;
    rr.id = a;
    rr.chunks = cvs;
    rr.n_chunks = 2;
    rr.first = rr.last = true;
    C(CS_REPORT, cs_report, rr);
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    T_EQ(cmds_for(&t, a, &cmds), 0); /* unknown chunk still in its grace period */
    free(cmds);
    t.now += 2000000000ll;
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    n = cmds_for(&t, a, &cmds);
    T_EQ(n, 1);
    T_EQU(cmds[0]->chunk_id, 999);
    free_cmds(cmds, n);
    /* report from d without the chunk: d's replica is missing and dropped */
    rr.id = d;
    rr.n_chunks = 0;
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    C(CHUNK_LOCATIONS, chunk_locations, lr);
    T_EQ(tns_apply(&t, &cmd, &m), 0);
    loc = (Synod__V1__ChunkLocRep *)m;
    T_EQ(loc->chunks[0]->n_replicas, 1);
    T_EQ(loc->chunks[0]->replicas[0]->id, a);
    protobuf_c_message_free_unpacked(m, NULL);
    /* a stale version from a non-member is deleted */
    cv1.version = 1;
    rr.id = b;
    rr.n_chunks = 1;
    C(CS_REPORT, cs_report, rr);
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    n = cmds_for(&t, b, &cmds);
    T_EQ(n, 1);
    free_cmds(cmds, n);
    /* truncate to 0 queues the chunk for deletion on its replica and drops it */
    T_EQ(t_setattr(&t, ROOT, f, SYNOD__V1__SETATTR_VALID__SETATTR_SIZE, 0, 0, 0, 0, NULL), 0);
    n = cmds_for(&t, a, &cmds);
    T_EQ(n, 2);
    free_cmds(cmds, n);
    C(CHUNK_LOCATIONS, chunk_locations, lr);
    T_EQ(tns_apply(&t, &cmd, &m), 0);
    T_EQ(((Synod__V1__ChunkLocRep *)m)->n_chunks, 0);
    protobuf_c_message_free_unpacked(m, NULL);
    /* statfs counts the chunkservers that are not dead */
    Synod__V1__StatfsReq sr = SYNOD__V1__STATFS_REQ__INIT;
    C(STATFS, statfs, sr);
    T_EQ(tns_apply(&t, &cmd, &m), 0);
    T_EQU(((Synod__V1__StatfsRep *)m)->total_bytes, 3 * (1000ull << 30));
    protobuf_c_message_free_unpacked(m, NULL);
    /* no chunkservers for a file with an unknown inode */
    T_EQ(open_write(&t, 4242, 0, NULL), -ENOENT);
    tns_close(&t, false);
}

/* Every replica of a chunk lost while its writer holds the lease: the writer's next open places the chunk
 * afresh (new version, live chunkservers) and says it is fresh, so its writes may create it; it stays fresh
 * until a write completes (ChunkRec.unwritten); a chunk written once is never fresh again. */
static void test_fresh_replace(void)
{
    struct tns t;
    tns_open(&t);
    uint32_t a = cs_register(&t, "h1:1", "rack1", 900);
    uint32_t b = cs_register(&t, "h2:1", "rack2", 900);
    uint64_t f;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "f", S_IFREG | 0644, &f), 0);
    Synod__V1__ChunkOpenWriteRep *w;
    T_EQ(open_write(&t, f, 0, &w), 0);
    T_CHECK(w->fresh);
    uint32_t v1 = w->chunk->version;
    T_EQ(w->chunk->n_replicas, 1); /* goal 1 (the default) */
    uint32_t holder = w->chunk->replicas[0]->id;
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    /* the holder reports without the chunk: its replica is dropped, none left */
    Synod__V1__ChunkReportReq rr = SYNOD__V1__CHUNK_REPORT_REQ__INIT;
    rr.id = holder;
    rr.first = rr.last = true;
    C(CS_REPORT, cs_report, rr);
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    T_EQ(open_write(&t, f, 0, &w), 0); /* same session, lease still held */
    T_CHECK(w->fresh);
    T_CHECK(w->chunk->version > v1);
    T_EQ(w->chunk->n_replicas, 1);
    T_CHECK(w->chunk->replicas[0]->id == a || w->chunk->replicas[0]->id == b);
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(open_write(&t, f, 0, &w), 0); /* re-placed, still unwritten: a renewal is fresh */
    T_CHECK(w->fresh);
    uint64_t chunk = w->chunk->chunk_id;
    uint32_t ver = w->chunk->version;
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(write_done(&t, f, 0, chunk, ver, 100), 0); /* written: its replica holds data now */
    T_EQ(open_write(&t, f, 0, &w), 0);
    T_CHECK(!w->fresh); /* a replica missing it has lost data: never recreate it empty */
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    tns_close(&t, false);
}

/* Cmds of type `type` for chunk on cs. */
static size_t cmds_of(struct tns *t, uint32_t cs, uint32_t type, uint64_t chunk)
{
    Synod__V1__ChunkCmd **cmds;
    size_t n = cmds_for(t, cs, &cmds), k = 0;
    for (size_t i = 0; i < n; i++)
        k += cmds[i]->type == type && cmds[i]->chunk_id == chunk;
    free_cmds(cmds, n);
    return k;
}

/* A writer's session ends (its client died) after it placed chunks: the one it never completed a write on
 * is dropped, replicas queued for deletion at any version, and the range reads as a hole; the one it wrote
 * stays, lease released. */
static void test_unwritten_session_end(void)
{
    struct tns t;
    tns_open(&t);
    uint32_t a = cs_register(&t, "h1:1", "rack1", 900);
    uint32_t b = cs_register(&t, "h2:1", "rack2", 900);
    uint64_t f, g;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "g", S_IFREG | 0644, &g), 0);
    set_goal(&t, f, 2);
    set_goal(&t, g, 2);
    uint64_t s1 = t.session, s2 = t_session_open(&t);
    t.session = s2;
    Synod__V1__ChunkOpenWriteRep *w;
    T_EQ(open_write(&t, f, 0, &w), 0);
    T_CHECK(w->fresh);
    T_EQ(w->chunk->n_replicas, 2);
    uint64_t fc = w->chunk->chunk_id;
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(open_write(&t, g, 0, &w), 0);
    uint64_t gc = w->chunk->chunk_id;
    uint32_t gv = w->chunk->version;
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(write_done(&t, g, 0, gc, gv, 4096), 0);
    T_EQ(open_write(&t, g, 0, &w), 0); /* written before, leased again */
    T_CHECK(!w->fresh);
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    Synod__V1__ChunkLocRep *ul = locations(&t, f, 1); /* readers are told: found nowhere, it reads as zeros */
    T_EQ(ul->n_chunks, 1);
    T_CHECK(ul->chunks[0]->unwritten);
    protobuf_c_message_free_unpacked(&ul->base, NULL);
    ul = locations(&t, g, 1);
    T_CHECK(!ul->chunks[0]->unwritten);
    protobuf_c_message_free_unpacked(&ul->base, NULL);
    t.session = s1;
    T_EQ(t_session_end(&t, s2, true), 0);
    Synod__V1__ChunkLocRep *loc = locations(&t, f, 1);
    T_EQ(loc->n_chunks, 0); /* a hole */
    protobuf_c_message_free_unpacked(&loc->base, NULL);
    T_EQ(cmds_of(&t, a, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, fc), 1);
    T_EQ(cmds_of(&t, b, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, fc), 1);
    loc = locations(&t, g, 1);
    T_EQ(loc->n_chunks, 1);
    T_EQU(loc->chunks[0]->chunk_id, gc);
    T_EQ(loc->chunks[0]->n_replicas, 2);
    protobuf_c_message_free_unpacked(&loc->base, NULL);
    T_EQ(cmds_of(&t, a, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, gc), 0);
    T_EQ(open_write(&t, g, 0, &w), 0); /* the lease went with the session: another one gets it at once */
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(open_write(&t, f, 0, &w), 0); /* and f's chunk 0 is placed afresh */
    T_CHECK(w->fresh);
    T_CHECK(w->chunk->chunk_id != fc);
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    tns_close(&t, false);
}

/* The leader's LeaseExpire of chunk (proposed once the lease's time is past). */
static int lease_expire(struct tns *t, uint64_t chunk)
{
    Synod__V1__LeaseExpire m = SYNOD__V1__LEASE_EXPIRE__INIT;
    m.chunk_id = chunk;
    C(LEASE_EXPIRE, lease_expire, m);
    return tns_apply(t, &cmd, NULL);
}

/* The placing session outlives its write lease (a client stalled past lease_ms, then back): the lapse clears
 * the lease holder, not the placer. Its next open is still `fresh` (its first writes may create the chunk:
 * no replica has it), and its end still drops the chunk. Before ChunkRec.placed_by, both keyed on the lease
 * holder: the reopen was not fresh (the writes then found the chunk on no replica: EIO), and the chunk
 * outlived the session as a record without data (reads failed over every replica). Another session's open
 * is never fresh, and a chunk it holds is not dropped at the placer's end. */
static void test_unwritten_lease_lapsed(void)
{
    struct tns t;
    tns_open(&t);
    uint32_t a = cs_register(&t, "h1:1", "rack1", 900);
    uint64_t f, g;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "f", S_IFREG | 0644, &f), 0);
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "g", S_IFREG | 0644, &g), 0);
    uint64_t s1 = t.session, s2 = t_session_open(&t), s3 = t_session_open(&t);
    t.session = s2;
    Synod__V1__ChunkOpenWriteRep *w;
    T_EQ(open_write(&t, f, 0, &w), 0);
    uint64_t fc = w->chunk->chunk_id;
    int64_t lease_ns = (int64_t)w->lease_ms * 1000000;
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(open_write(&t, g, 0, &w), 0);
    uint64_t gc = w->chunk->chunk_id;
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    t.now += lease_ns + 1000000000;
    t.session = s1;
    T_EQ(lease_expire(&t, fc), 0);
    T_EQ(lease_expire(&t, gc), 0);
    t.session = s2; /* back after the stall */
    T_EQ(open_write(&t, f, 0, &w), 0);
    T_CHECK(w->fresh);
    T_EQU(w->chunk->chunk_id, fc);
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    t.now += lease_ns + 1000000000;
    t.session = s1;
    T_EQ(lease_expire(&t, fc), 0);
    /* g's chunk: another writer takes the lapsed lease. It was not placed for s3, and s2 may have left data
     * on some replicas: s3 gets a new chunk, fresh, and the old one's replicas are deleted */
    t.session = s3;
    T_EQ(open_write(&t, g, 0, &w), 0);
    T_CHECK(w->fresh);
    uint64_t gc2 = w->chunk->chunk_id;
    uint32_t gv2 = w->chunk->version;
    T_CHECK(gc2 != gc);
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(cmds_of(&t, a, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, gc), 1);
    t.session = s1;
    T_EQ(t_session_end(&t, s2, true), 0);
    Synod__V1__ChunkLocRep *loc = locations(&t, f, 1);
    T_EQ(loc->n_chunks, 0); /* dropped with its placer, lease lapsed or not */
    protobuf_c_message_free_unpacked(&loc->base, NULL);
    T_EQ(cmds_of(&t, a, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, fc), 1);
    loc = locations(&t, g, 1);
    T_EQ(loc->n_chunks, 1); /* s3's chunk stays: s2's end is not its placer's */
    T_EQU(loc->chunks[0]->chunk_id, gc2);
    T_CHECK(loc->chunks[0]->unwritten);
    protobuf_c_message_free_unpacked(&loc->base, NULL);
    t.session = s3;
    T_EQ(write_done(&t, g, 0, gc2, gv2, 100), 0);
    loc = locations(&t, g, 1);
    T_CHECK(!loc->chunks[0]->unwritten);
    protobuf_c_message_free_unpacked(&loc->base, NULL);
    /* s3's session ends after its write: the chunk stays (written) */
    t.session = s1;
    T_EQ(t_session_end(&t, s3, true), 0);
    loc = locations(&t, g, 1);
    T_EQ(loc->n_chunks, 1);
    protobuf_c_message_free_unpacked(&loc->base, NULL);
    tns_close(&t, false);
}

/* Directory dname (under the root) at goal, holding f[0..n) named f0, f1...: chunk 0 of each placed on goal
 * chunkservers under a write lease, or written (ChunkWriteDone, lease returned) when `written`. */
static void files_at_goal(struct tns *t, const char *dname, uint32_t goal, uint64_t *f, int n, bool written)
{
    uint64_t dir;
    T_EQ(t_mknod(t, ROOT, NS_ROOT_INO, dname, S_IFDIR | 0755, &dir), 0);
    set_goal(t, dir, goal);
    for (int i = 0; i < n; i++) {
        char name[8];
        snprintf(name, sizeof(name), "f%d", i);
        Synod__V1__ChunkOpenWriteRep *w;
        f[i] = file_open_write(t, dir, name, &w);
        T_EQ(w->chunk->n_replicas, goal);
        if (written)
            T_EQ(write_done(t, f[i], 0, w->chunk->chunk_id, w->chunk->version, 100), 0);
        synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    }
}

static int repl_limit(struct tns *t, uint32_t limit, uint32_t *now)
{
    Synod__V1__ReplLimitReq r = SYNOD__V1__REPL_LIMIT_REQ__INIT;
    r.limit = limit;
    C(REPL_LIMIT, repl_limit, r);
    ProtobufCMessage *m = NULL;
    int rc = tns_apply(t, &cmd, &m);
    if (rc == 0) {
        *now = ((Synod__V1__ReplLimitRep *)m)->limit;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

static size_t planned(struct tns *t)
{
    struct kv_txn *txn = kv_txn_begin(t->db);
    Synod__V1__ReplStart **plan;
    size_t n = ns_plan_replication(txn, t->now, 60ll * 1000000000, 100, &(struct ns_plan_cursor){.budget = 0}, &plan);
    kv_txn_abort(txn);
    for (size_t i = 0; i < n; i++)
        synod__v1__repl_start__free_unpacked(plan[i], NULL);
    free(plan);
    return n;
}

/* An unwritten chunk is never copied, even with its lease lapsed: no replica has anything to copy (the
 * source would answer ENOENT, every round). Its first completed write makes it copyable. */
static void test_unwritten_not_copied(void)
{
    struct tns t;
    tns_open(&t);
    cs_register(&t, "h1:1", "rack1", 900);
    cs_register(&t, "h2:1", "rack2", 900);
    uint64_t f;
    Synod__V1__ChunkOpenWriteRep *w;
    f = file_open_write(&t, NS_ROOT_INO, "f", &w);
    T_EQ(w->chunk->n_replicas, 1);
    uint64_t chunk = w->chunk->chunk_id;
    uint32_t ver = w->chunk->version;
    t.now += (int64_t)w->lease_ms * 1000000 + 1000000000; /* the lease lapsed, the session lives on */
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    set_goal(&t, f, 2);
    T_EQ(planned(&t), 0);
    T_EQ(write_done(&t, f, 0, chunk, ver, 100), 0);
    T_EQ(planned(&t), 1);
    tns_close(&t, false);
}

/* The per-chunkserver copy limit is read and changed through the log (synodctl repl-limit), and the next
 * plan obeys it: 12 chunks short of one copy that only one chunkserver can take. */
static void test_repl_limit(void)
{
    struct tns t;
    tns_open(&t);
    cs_register(&t, "h1:1", "rack1", 900);
    cs_register(&t, "h2:1", "rack2", 900);
    uint64_t f[12];
    files_at_goal(&t, "d", 2, f, 12, true);
    cs_register(&t, "h3:1", "rack3", 900);
    for (int i = 0; i < 12; i++)
        set_goal(&t, f[i], 3);
    uint32_t lim = 0;
    T_EQ(repl_limit(&t, 0, &lim), 0); /* 0 reads */
    T_EQ(lim, 2);                     /* this namespace's NsInit did not set it */
    T_EQ(planned(&t), 2);
    T_EQ(repl_limit(&t, 7, &lim), 0);
    T_EQ(lim, 7);
    T_EQ(planned(&t), 7);
    T_EQ(repl_limit(&t, 1001, &lim), -EINVAL);
    T_EQ(repl_limit(&t, 0, &lim), 0);
    T_EQ(lim, 7);
    tns_close(&t, false);
}

static uint64_t held(struct tns *t, uint32_t cs)
{
    struct kv_txn *txn = kv_txn_begin(t->db);
    uint64_t n = ns_cs_held(txn, cs);
    kv_txn_abort(txn);
    return n;
}

static void cs_dead(struct tns *t, uint32_t id, uint32_t max, bool only_holdings)
{
    Synod__V1__ChunkserverDead cd = SYNOD__V1__CHUNKSERVER_DEAD__INIT;
    cd.id = id;
    cd.max_holdings = max;
    cd.only_holdings = only_holdings;
    C(CS_DEAD, cs_dead, cd);
    T_EQ(tns_apply(t, &cmd, NULL), 0);
}

/* A dead chunkserver leaves the replica sets in bounded steps; meanwhile its copies are not handed out. */
static void test_dead_steps(void)
{
    struct tns t;
    tns_open(&t);
    uint32_t a = cs_register(&t, "h1:1", "rack1", 900), b = cs_register(&t, "h2:1", "rack2", 800);
    uint64_t f[5];
    files_at_goal(&t, "g2", 2, f, 5, false);
    T_EQ(held(&t, a), 5);
    cs_dead(&t, b, 2, true); /* b is UP: a continuation does nothing */
    T_EQ(held(&t, b), 5);
    cs_dead(&t, a, 2, false);
    T_EQ(held(&t, a), 3);
    for (int i = 0; i < 5; i++) { /* whether still listed or not, a's copy is not handed out */
        Synod__V1__ChunkLocRep *loc = locations(&t, f[i], 1);
        T_EQ(loc->n_chunks, 1);
        T_EQ(loc->chunks[0]->n_replicas, 1);
        T_EQ(loc->chunks[0]->replicas[0]->id, b);
        protobuf_c_message_free_unpacked(&loc->base, NULL);
    }
    { /* an Open asking for locations answers them like ChunkLocations (no copy on the dead one) */
        Synod__V1__OpenReq o = SYNOD__V1__OPEN_REQ__INIT;
        o.rid = tns_rid(&t);
        o.cred = &ROOT->c;
        o.ino = f[0];
        o.flags = O_RDONLY;
        o.memory = true;
        o.locations = 4;
        C(OPEN, open, o);
        ProtobufCMessage *m;
        T_EQ(tns_apply(&t, &cmd, &m), 0);
        const Synod__V1__OpenRep *rep = (const Synod__V1__OpenRep *)m;
        T_EQ(rep->located, 4);
        T_EQ(rep->n_chunks, 1);
        T_EQ(rep->chunks[0]->index, 0);
        T_EQ(rep->chunks[0]->n_replicas, 1);
        T_EQ(rep->chunks[0]->replicas[0]->id, b);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    cs_dead(&t, a, 2, true);
    T_EQ(held(&t, a), 1);
    cs_dead(&t, a, 2, true);
    T_EQ(held(&t, a), 0);
    cs_dead(&t, a, 2, true);
    T_EQ(held(&t, b), 5);
    tns_close(&t, false);
}

/* A deletion that fails on the chunkserver waits (10 s, then 20 s...) and does not hold back the others. */
static void test_delete_retry(void)
{
    struct tns t;
    tns_open(&t);
    uint32_t a = cs_register(&t, "h1:1", "rack1", 900);
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof(name), "f%d", i);
        Synod__V1__ChunkOpenWriteRep *w;
        uint64_t f = file_open_write(&t, NS_ROOT_INO, name, &w);
        T_EQ(write_done(&t, f, 0, w->chunk->chunk_id, w->chunk->version, 100), 0);
        synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
        T_EQ(t_setattr(&t, ROOT, f, SYNOD__V1__SETATTR_VALID__SETATTR_SIZE, 0, 0, 0, 0, NULL), 0);
    }
    Synod__V1__ChunkCmd **cmds;
    T_EQ(cmds_for(&t, a, &cmds), 3);
    uint64_t first = cmds[0]->chunk_id;
    for (int round = 0; round < 2; round++) {
        /* the first one fails there (EIO) */
        Synod__V1__ChunkCmdResult res = SYNOD__V1__CHUNK_CMD_RESULT__INIT, *pr = &res;
        res.cmd_id = cmds[0]->cmd_id;
        res.err = -EIO;
        free_cmds(cmds, 3);
        Synod__V1__HeartbeatReq r = SYNOD__V1__HEARTBEAT_REQ__INIT;
        r.id = a;
        r.total_bytes = 1000ull << 30;
        r.results = &pr;
        r.n_results = 1;
        C(CS_HEARTBEAT, cs_heartbeat, r);
        T_EQ(tns_apply(&t, &cmd, NULL), 0);
        size_t n = cmds_for(&t, a, &cmds);
        T_EQ(n, 2); /* the others go on */
        T_CHECK(cmds[0]->chunk_id != first && cmds[1]->chunk_id != first);
        free_cmds(cmds, n);
        t.now += (round ? 15 : 5) * 1000000000ll; /* round 1: 10 s + 5 s, still within 20 s */
        T_EQ(cmds_for(&t, a, &cmds), 2);
        free_cmds(cmds, 2);
        t.now += 6 * 1000000000ll;
        T_EQ(cmds_for(&t, a, &cmds), 3); /* its wait is over */
        T_EQU(cmds[0]->chunk_id, first);
    }
    free_cmds(cmds, 3);
    tns_close(&t, false);
}

static size_t expired(struct tns *t, int64_t at, uint64_t **ids)
{
    struct kv_txn *txn = kv_txn_begin(t->db);
    size_t n = ns_find_expired_leases(txn, at, 10, ids);
    kv_txn_abort(txn);
    return n;
}

/* Write leases by expiry: the search returns the ended ones, oldest first, and stops at a running one. */
static void test_lease_expiry(void)
{
    struct tns t;
    tns_open(&t);
    T_CHECK(cs_register(&t, "h1:1", "rack1", 900) != 0);
    uint64_t f[3], chunk[3];
    int64_t lease = 0, t0 = 0;
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof(name), "f%d", i);
        T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, name, S_IFREG | 0644, &f[i]), 0);
        if (i == 0)
            t0 = t.now; /* f0's lease begins here or a little later */
        Synod__V1__ChunkOpenWriteRep *w;
        T_EQ(open_write(&t, f[i], 0, &w), 0);
        chunk[i] = w->chunk->chunk_id;
        lease = (int64_t)w->lease_ms * 1000000;
        synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
        t.now += 1000000000; /* f0's lease ends first */
    }
    T_CHECK(lease > 0);
    uint64_t *ids;
    T_EQ(expired(&t, t0 + lease - 1, &ids), 0);
    free(ids);
    T_EQ(expired(&t, t0 + lease + 1500000000, &ids), 2); /* f0's and f1's */
    T_EQU(ids[0], chunk[0]);
    T_EQU(ids[1], chunk[1]);
    free(ids);
    /* f0 renewed (same session, later): its lease moves behind the others; f1 returned: gone */
    Synod__V1__ChunkOpenWriteRep *w;
    T_EQ(open_write(&t, f[0], 0, &w), 0);
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(write_done(&t, f[1], 0, chunk[1], 1, 10), 0);
    T_EQ(expired(&t, t0 + lease + 2500000000, &ids), 1);
    T_EQU(ids[0], chunk[2]);
    free(ids);
    T_EQ(expired(&t, t.now + lease + 500000000, &ids), 2);
    T_EQU(ids[0], chunk[2]);
    T_EQU(ids[1], chunk[0]);
    free(ids);
    tns_close(&t, false);
}

/* Re-replication rounds look at a bounded number of index entries and resume where the previous round
 * stopped: under-goal chunks that cannot be copied now (being written) do not starve the one behind them. */
static void test_plan_cursor(void)
{
    struct tns t;
    tns_open(&t);
    for (int i = 0; i < 4; i++) {
        char addr[16], label[16];
        snprintf(addr, sizeof(addr), "h%d:1", i + 1);
        snprintf(label, sizeof(label), "rack%d", i + 1);
        T_CHECK(cs_register(&t, addr, label, 900 - 100 * (uint64_t)i) != 0);
    }
    uint64_t dir;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "g3", S_IFDIR | 0755, &dir), 0);
    set_goal(&t, dir, 3);
    /* 10 chunks under goal and still leased to their writer, then one under goal and free to copy */
    uint64_t last = 0;
    for (int i = 0; i < 11; i++) {
        char name[16];
        snprintf(name, sizeof(name), "f%02d", i);
        Synod__V1__ChunkOpenWriteRep *w;
        uint64_t f = file_open_write(&t, dir, name, &w);
        T_EQ(w->chunk->n_replicas, 3);
        uint64_t chunk = w->chunk->chunk_id;
        uint32_t version = w->chunk->version, victim = w->chunk->replicas[0]->id;
        synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
        if (i == 10) {
            T_EQ(write_done(&t, f, 0, chunk, version, 100), 0);
            last = chunk;
        }
        Synod__V1__BadReplicaReq br = SYNOD__V1__BAD_REPLICA_REQ__INIT;
        br.rid = tns_rid(&t);
        br.chunk_id = chunk;
        br.version = version;
        br.chunkserver = victim;
        C(BAD_REPLICA, bad_replica, br);
        T_EQ(tns_apply(&t, &cmd, NULL), 0);
    }
    Synod__V1__ReplStart **plan;
    /* a round without a cursor never gets past the leased ones with a budget of 4 */
    for (int round = 0; round < 3; round++) {
        struct kv_txn *txn = kv_txn_begin(t.db);
        T_EQ(ns_plan_replication(txn, t.now, 60ll * 1000000000, 10, &(struct ns_plan_cursor){.budget = 4}, &plan),
             0);
        kv_txn_abort(txn);
        free(plan);
    }
    /* with one: 2 from the front and 2 more each round, so the 11th is reached by the 5th round */
    struct ns_plan_cursor cur = {.budget = 4};
    int rounds = 0;
    size_t np = 0;
    while (np == 0 && rounds < 20) {
        struct kv_txn *txn = kv_txn_begin(t.db);
        np = ns_plan_replication(txn, t.now, 60ll * 1000000000, 10, &cur, &plan);
        kv_txn_abort(txn);
        rounds++;
        if (np == 0)
            free(plan);
    }
    fprintf(stderr, "planned after %d rounds\n", rounds);
    T_EQ(np, 1);
    T_EQ(rounds, 5);
    T_EQU(plan[0]->chunk_id, last);
    synod__v1__repl_start__free_unpacked(plan[0], NULL);
    free(plan);
    /* the whole index in one round when the budget covers it */
    struct kv_txn *txn = kv_txn_begin(t.db);
    T_EQ(ns_plan_replication(txn, t.now, 60ll * 1000000000, 10, &(struct ns_plan_cursor){.budget = 0}, &plan), 1);
    kv_txn_abort(txn);
    synod__v1__repl_start__free_unpacked(plan[0], NULL);
    free(plan);
    tns_close(&t, false);
}

/* st_blocks counts what was written, not holes: the sum of the chunks' extents, clamped by truncation and
 * dropped with the chunks. A release-only completion returns the lease without touching size or times. */
static void test_blocks_release(void)
{
    struct tns t;
    tns_open(&t);
    cs_register(&t, "h1:1", "rack1", 900);
    uint64_t f;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "sparse", S_IFREG | 0644, &f), 0);
    const uint64_t CH = NS_CHUNK_SIZE, M = 1ull << 20;
    Synod__V1__ChunkOpenWriteRep *w;
    T_EQ(open_write(&t, f, 2, &w), 0); /* a write at 128 MiB + [0, 3 MiB) only */
    uint64_t chunk = w->chunk->chunk_id;
    uint32_t ver = w->chunk->version;
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(write_done(&t, f, 2, chunk, ver, 2 * CH + 3 * M), 0);
    Synod__V1__Attr at;
    T_EQ(t_getattr(&t, f, &at), 0);
    T_EQU(at.size, 2 * CH + 3 * M);
    T_EQU(at.blocks, 3 * M / 512); /* the 128 MiB hole is not counted */
    T_EQ(open_write(&t, f, 2, &w), 0);
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(write_done(&t, f, 2, chunk, ver + 1, 2 * CH + 2 * M), 0); /* inside the extent: no growth */
    T_EQ(t_getattr(&t, f, &at), 0);
    T_EQU(at.blocks, 3 * M / 512);
    T_EQ(t_setattr(&t, ROOT, f, SYNOD__V1__SETATTR_VALID__SETATTR_SIZE, 0, 0, 0, 2 * CH + M, NULL), 0);
    T_EQ(t_getattr(&t, f, &at), 0);
    T_EQU(at.blocks, M / 512); /* clamped with the chunk's extent */
    T_EQ(t_setattr(&t, ROOT, f, SYNOD__V1__SETATTR_VALID__SETATTR_SIZE, 0, 0, 0, CH, NULL), 0);
    T_EQ(t_getattr(&t, f, &at), 0);
    T_EQU(at.blocks, 0); /* the chunk dropped */
    /* release only: the lease goes, size and mtime stay */
    T_EQ(open_write(&t, f, 0, &w), 0);
    chunk = w->chunk->chunk_id;
    ver = w->chunk->version;
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    T_EQ(t_getattr(&t, f, &at), 0);
    int64_t mtime = at.mtime_ns;
    t.now += 5000000000ll;
    Synod__V1__ChunkWriteDoneReq r = SYNOD__V1__CHUNK_WRITE_DONE_REQ__INIT;
    r.rid = tns_rid(&t);
    r.ino = f;
    r.chunk_id = chunk;
    r.version = ver;
    r.new_size = 2 * CH; /* ignored */
    r.release_lease = true;
    r.release_only = true;
    C(CHUNK_WRITE_DONE, chunk_write_done, r);
    T_EQ(tns_apply(&t, &cmd, NULL), 0);
    T_EQ(t_getattr(&t, f, &at), 0);
    T_EQU(at.size, CH);
    T_EQ(at.mtime_ns, mtime);
    uint64_t s1 = t.session;
    t.session = t_session_open(&t);
    T_EQ(open_write(&t, f, 0, &w), 0); /* the lease was returned: another session gets it at once */
    synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    t.session = s1;
    tns_close(&t, false);
}

/* The chunkserver's record (n/s+id) raw, as stored (caller frees). */
static char *cs_raw(struct tns *t, uint32_t id, size_t *len)
{
    uint8_t k[7] = {'n', '/', 's', (uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
    struct kv_txn *txn = kv_txn_begin(t->db);
    char *v = NULL;
    T_EQ(kv_get(txn, k, sizeof(k), &v, len), 0);
    kv_txn_abort(txn);
    return v;
}

/* Placement spreads single-copy chunks over equal chunkservers by counting recent placements, and counts
 * them OUTSIDE the chunkservers' n/s records: placement iterates n/s, and a LevelDB iterator walks every
 * version of a key still in the memtable, so rewriting a record on each placement made every allocation
 * slower (3.5 ms per ChunkOpenWrite after a few thousand small files). A logged heartbeat resets the
 * count. */
static void test_recent_allocs(void)
{
    struct tns t;
    tns_open(&t);
    uint32_t ids[3] = {cs_register(&t, "h1:1", "", 900), cs_register(&t, "h2:1", "", 900),
                       cs_register(&t, "h3:1", "", 900)}; /* as much free space as heartbeat() says */
    uint64_t dir;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "g1", S_IFDIR | 0755, &dir), 0);
    set_goal(&t, dir, 1);
    size_t len0[3];
    char *raw0[3];
    for (int i = 0; i < 3; i++)
        raw0[i] = cs_raw(&t, ids[i], &len0[i]);
    unsigned on[3] = {0, 0, 0};
    for (int i = 0; i < 6; i++) {
        char name[8];
        snprintf(name, sizeof(name), "f%d", i);
        uint64_t f;
        T_EQ(t_mknod(&t, ROOT, dir, name, S_IFREG | 0644, &f), 0);
        Synod__V1__ChunkOpenWriteRep *w;
        T_EQ(open_write(&t, f, 0, &w), 0);
        T_EQ(w->chunk->n_replicas, 1);
        for (int j = 0; j < 3; j++)
            on[j] += w->chunk->replicas[0]->id == ids[j];
        synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    }
    T_EQ(on[0], 2); /* spread evenly */
    T_EQ(on[1], 2);
    T_EQ(on[2], 2);
    for (int i = 0; i < 3; i++) {
        size_t len;
        char *raw = cs_raw(&t, ids[i], &len);
        T_CHECK(len == len0[i] && memcmp(raw, raw0[i], len) == 0); /* placements did not rewrite n/s */
        free(raw);
        free(raw0[i]);
    }
    /* a logged heartbeat of ids[0] (same capacity) clears its count, 0 against 2 for the others: the next
     * two chunks go there */
    heartbeat(&t, ids[0], NULL, 0);
    uint64_t f;
    T_EQ(t_mknod(&t, ROOT, dir, "g", S_IFREG | 0644, &f), 0);
    for (uint64_t idx = 0; idx < 2; idx++) {
        Synod__V1__ChunkOpenWriteRep *w;
        T_EQ(open_write(&t, f, idx, &w), 0);
        T_EQ(w->chunk->replicas[0]->id, ids[0]);
        synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    }
    tns_close(&t, false);
}

/* Chain heads (the first replica) of new chunks spread over the chunkservers of their sets, although
 * placement ranks the candidates the same way for each (rotate_ids). */
static void test_heads_spread(void)
{
    struct tns t;
    tns_open(&t);
    uint32_t ids[3] = {cs_register(&t, "h1:1", "", 900), cs_register(&t, "h2:1", "", 900),
                       cs_register(&t, "h3:1", "", 900)};
    uint64_t f, dir;
    T_EQ(t_mknod(&t, ROOT, NS_ROOT_INO, "g3", S_IFDIR | 0755, &dir), 0);
    set_goal(&t, dir, 3);
    T_EQ(t_mknod(&t, ROOT, dir, "f", S_IFREG | 0644, &f), 0);
    unsigned head[3] = {0, 0, 0};
    for (uint64_t idx = 0; idx < 9; idx++) {
        Synod__V1__ChunkOpenWriteRep *w;
        T_EQ(open_write(&t, f, idx, &w), 0);
        T_EQ(w->chunk->n_replicas, 3);
        for (int j = 0; j < 3; j++)
            head[j] += w->chunk->replicas[0]->id == ids[j];
        synod__v1__chunk_open_write_rep__free_unpacked(w, NULL);
    }
    for (int j = 0; j < 3; j++)
        T_EQ(head[j], 3);
    tns_close(&t, false);
}

int main(void)
{
    T_RUN(test_chunks);
    T_RUN(test_fresh_replace);
    T_RUN(test_unwritten_session_end);
    T_RUN(test_unwritten_lease_lapsed);
    T_RUN(test_repl_limit);
    T_RUN(test_unwritten_not_copied);
    T_RUN(test_blocks_release);
    T_RUN(test_plan_cursor);
    T_RUN(test_dead_steps);
    T_RUN(test_lease_expiry);
    T_RUN(test_delete_retry);
    T_RUN(test_recent_allocs);
    T_RUN(test_heads_spread);
    return 0;
}
