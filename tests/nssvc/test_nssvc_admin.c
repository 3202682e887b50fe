/* test_nssvc_admin.c - the admin side of the namespace through the service's pure path: decommission
 * (drain by copy-then-drop, reads kept, no new chunks, chunks_left to 0, cancel), over-goal trimming after
 * a goal decrease (and re-replication after an increase, recursive goals), version-safe ReplicaDrop,
 * rebalance planning (sources above mean + threshold, targets below, throttle, leases), and fsck
 * detection and repair through the replicated FsckRepair command. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "nssvc_testutil.h"
#include "tests/test.h"

static const int64_t STALE = 60ll * 1000000000;

/* A heartbeat carrying usage figures and (optionally) one command result. */
static int heartbeat(uint32_t cs, uint64_t used, uint64_t cmd_id, int err)
{
    Synod__V1__ChunkCmdResult res = SYNOD__V1__CHUNK_CMD_RESULT__INIT;
    res.cmd_id = cmd_id;
    res.err = err;
    return tsvc_heartbeat(cs, used, cmd_id ? &res : NULL, NULL);
}

static uint64_t mkfile(uint64_t parent, const char *name, uint32_t mode)
{
    Synod__V1__Cred cr = SYNOD__V1__CRED__INIT;
    Synod__V1__MknodReq mk = SYNOD__V1__MKNOD_REQ__INIT;
    mk.rid = tsvc_rid();
    mk.cred = &cr;
    mk.parent = parent;
    mk.name = (char *)name;
    mk.mode = mode;
    Synod__V1__CreateRep *crep;
    T_EQ(META("Mknod", mk, &crep), 0);
    uint64_t ino = crep->attr->ino;
    protobuf_c_message_free_unpacked(&crep->base, NULL);
    return ino;
}

/* Open chunk `index` of ino for writing (a lease), optionally complete the write and release the lease. */
static uint64_t write_chunk(uint64_t ino, uint64_t index, uint64_t new_size, bool release, uint32_t *version)
{
    Synod__V1__ChunkOpenWriteReq ow = SYNOD__V1__CHUNK_OPEN_WRITE_REQ__INIT;
    ow.rid = tsvc_rid();
    ow.ino = ino;
    ow.index = index;
    Synod__V1__ChunkOpenWriteRep *owr;
    T_EQ(META("ChunkOpenWrite", ow, &owr), 0);
    uint64_t chunk = owr->chunk->chunk_id;
    uint32_t ver = owr->chunk->version;
    protobuf_c_message_free_unpacked(&owr->base, NULL);
    if (release) {
        Synod__V1__ChunkWriteDoneReq wd = SYNOD__V1__CHUNK_WRITE_DONE_REQ__INIT;
        wd.rid = tsvc_rid();
        wd.ino = ino;
        wd.index = index;
        wd.chunk_id = chunk;
        wd.version = ver;
        wd.new_size = new_size;
        wd.release_lease = true;
        Synod__V1__AttrRep *wdr;
        T_EQ(META("ChunkWriteDone", wd, &wdr), 0);
        protobuf_c_message_free_unpacked(&wdr->base, NULL);
    }
    if (version)
        *version = ver;
    return chunk;
}

/* The replica set of chunk `index` of ino (ids sorted ascending); returns the count, *version the table's. */
static size_t replicas(uint64_t ino, uint64_t index, uint32_t *ids, uint32_t *version)
{
    Synod__V1__ChunkLocReq cl = SYNOD__V1__CHUNK_LOC_REQ__INIT;
    cl.ino = ino;
    cl.first_index = index;
    cl.count = 1;
    Synod__V1__ChunkLocRep *rep;
    T_EQ(META("ChunkLocations", cl, &rep), 0);
    T_EQ(rep->n_chunks, 1);
    size_t n = rep->chunks[0]->n_replicas;
    for (size_t i = 0; i < n; i++)
        ids[i] = rep->chunks[0]->replicas[i]->id;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            uint32_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    if (version)
        *version = rep->chunks[0]->version;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return n;
}

static bool has(const uint32_t *ids, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

static int cmds_for(uint32_t cs, uint32_t type, uint64_t chunk)
{
    struct kv_txn *txn = kv_txn_begin(tdb);
    Synod__V1__ChunkCmd **v;
    size_t n = ns_cs_commands(txn, cs, tnow, 1000, &v);
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        k += v[i]->type == type && v[i]->chunk_id == chunk;
        synod__v1__chunk_cmd__free_unpacked(v[i], NULL);
    }
    free(v);
    kv_txn_abort(txn);
    return k;
}

static void counts(struct ns_counts *c)
{
    struct kv_txn *txn = kv_txn_begin(tdb);
    ns_count(txn, c);
    kv_txn_abort(txn);
}

static size_t plan_repl(Synod__V1__ReplStart ***plan)
{
    struct kv_txn *txn = kv_txn_begin(tdb);
    size_t n = ns_plan_replication(txn, tnow, STALE, 64, &(struct ns_plan_cursor){.budget = 0}, plan);
    kv_txn_abort(txn);
    return n;
}

static size_t plan_trim(Synod__V1__ReplicaDrop ***plan)
{
    struct kv_txn *txn = kv_txn_begin(tdb);
    size_t n = ns_plan_trim(txn, tnow, STALE, 64, &(struct ns_plan_cursor){.budget = 0}, plan);
    kv_txn_abort(txn);
    return n;
}

static void free_repl(Synod__V1__ReplStart **plan, size_t n)
{
    for (size_t i = 0; i < n; i++)
        synod__v1__repl_start__free_unpacked(plan[i], NULL);
    free(plan);
}

static void free_trim(Synod__V1__ReplicaDrop **plan, size_t n)
{
    for (size_t i = 0; i < n; i++)
        synod__v1__replica_drop__free_unpacked(plan[i], NULL);
    free(plan);
}

static int decommission(uint32_t cs, bool cancel, uint64_t *left, char *state, size_t cap)
{
    Synod__V1__DecommissionReq d = SYNOD__V1__DECOMMISSION_REQ__INIT;
    d.chunkserver = cs;
    d.cancel = cancel;
    Synod__V1__DecommissionRep *rep;
    int rc = tsvc_call("Admin", "Decommission", &d.base, (ProtobufCMessage **)&rep);
    if (rc == 0) {
        if (left)
            *left = rep->chunks_left;
        if (state)
            snprintf(state, cap, "%s", rep->state);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    return rc;
}

/* Run every planned copy to completion: ReplStart applied, the target reports success. */
static size_t run_copies(void)
{
    Synod__V1__ReplStart **plan;
    size_t n = plan_repl(&plan);
    for (size_t i = 0; i < n; i++) {
        T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_REPL_START, &plan[i]->base), 0);
        T_EQ(heartbeat(plan[i]->dst, 0, NS_CMD_ID(SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, plan[i]->chunk_id), 0), 0);
    }
    free_repl(plan, n);
    return n;
}

static size_t run_trims(void)
{
    Synod__V1__ReplicaDrop **plan;
    size_t n = plan_trim(&plan);
    for (size_t i = 0; i < n; i++)
        T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_REPLICA_DROP, &plan[i]->base), 0);
    free_trim(plan, n);
    return n;
}

static void test_decommission(void)
{
    tsvc_setup();
    static const char *addrs[4] = {"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"};
    static const char *uuids[4] = {"u1", "u2", "u3", "u4"};
    for (int i = 0; i < 4; i++)
        T_EQ(tsvc_register(addrs[i], uuids[i], ""), (uint32_t)i + 1);
    uint64_t f = mkfile(NS_ROOT_INO, "f", S_IFREG | 0644);
    for (uint64_t i = 0; i < 6; i++)
        write_chunk(f, i, (i + 1) * NS_CHUNK_SIZE, true, NULL);
    uint32_t set[8], v0;
    T_EQ(replicas(f, 0, set, &v0), 2);
    uint32_t x = set[0]; /* drain the first holder of chunk 0 */
    uint64_t left;
    char state[32];
    T_EQ(decommission(x, false, &left, state, sizeof(state)), 0);
    T_STREQ(state, "DECOMMISSIONING");
    T_CHECK(left >= 1);
    struct ns_counts c;
    counts(&c);
    T_EQU(c.under_goal, left); /* each of its chunks meets the goal only by counting it */
    T_EQU(c.over_goal, 0);
    /* reads still list it; new chunks never go there */
    T_EQ(replicas(f, 0, set, NULL), 2);
    T_CHECK(has(set, 2, x));
    uint64_t g = mkfile(NS_ROOT_INO, "g", S_IFREG | 0644);
    for (uint64_t i = 0; i < 8; i++) {
        write_chunk(g, i, (i + 1) * NS_CHUNK_SIZE, i != 7, NULL); /* the last stays under its lease */
        T_EQ(replicas(g, i, set, NULL), 2);
        T_CHECK(!has(set, 2, x));
    }
    /* a chunk of x's under a live write lease is not copied */
    uint32_t lv;
    write_chunk(f, 5, 0, false, &lv);
    Synod__V1__ReplStart **plan;
    size_t np = plan_repl(&plan);
    T_CHECK(np >= 1);
    for (size_t i = 0; i < np; i++) {
        T_EQ(plan[i]->drop_after, x);
        T_CHECK(plan[i]->dst != x);
    }
    free_repl(plan, np);
    /* drain: copies land and drop x's copy in the same apply, bumping the version */
    for (int round = 0; round < 20 && run_copies() > 0; round++)
        ;
    T_EQ(decommission(x, false, &left, NULL, 0), 0);
    uint32_t v1;
    T_EQ(replicas(f, 0, set, &v1), 2);
    T_CHECK(!has(set, 2, x));
    T_CHECK(v1 > v0);
    T_EQ(cmds_for(x, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 1), 1); /* chunk 0 of f is chunk id 1 */
    /* chunk 5 of f was leased: it is the one left, and is copied once its lease goes */
    T_EQ(replicas(f, 5, set, NULL), 2);
    bool leased_on_x = has(set, 2, x);
    T_EQU(left, leased_on_x ? 1 : 0);
    tnow += 120ll * 1000000000; /* past the lease */
    for (int round = 0; round < 5 && run_copies() > 0; round++)
        ;
    T_EQ(decommission(x, false, &left, state, sizeof(state)), 0);
    T_EQU(left, 0);
    counts(&c);
    T_EQU(c.under_goal, 0);
    T_EQU(c.over_goal, 0);
    /* a restart keeps the drain; cancel makes it UP */
    T_EQ(tsvc_register(addrs[x - 1], uuids[x - 1], ""), x);
    T_EQ(decommission(x, false, NULL, state, sizeof(state)), 0);
    T_STREQ(state, "DECOMMISSIONING");
    T_EQ(decommission(x, true, NULL, state, sizeof(state)), 0);
    T_STREQ(state, "UP");
    T_EQ(decommission(999, false, NULL, NULL, 0), -ENOENT);
    tsvc_teardown();
}

static void test_drain_only_copy(void)
{
    /* goal 1 and the only copy on the draining chunkserver: it is the copy's source */
    tsvc_setup();
    uint32_t a = tsvc_register("127.0.0.1:9001", "u1", ""), b = tsvc_register("127.0.0.1:9002", "u2", "");
    uint64_t d = mkfile(NS_ROOT_INO, "d", S_IFDIR | 0755);
    Synod__V1__Cred cr = SYNOD__V1__CRED__INIT;
    Synod__V1__SetGoalReq sg = SYNOD__V1__SET_GOAL_REQ__INIT;
    sg.cred = &cr;
    sg.ino = d;
    sg.goal = 1;
    T_EQ(tsvc_call("Admin", "SetGoal", &sg.base, NULL), 0);
    uint64_t f = mkfile(d, "f", S_IFREG | 0644);
    write_chunk(f, 0, 10, true, NULL);
    uint32_t set[4];
    T_EQ(replicas(f, 0, set, NULL), 1);
    uint32_t x = set[0], other = x == a ? b : a;
    T_EQ(decommission(x, false, NULL, NULL, 0), 0);
    Synod__V1__ReplStart **plan;
    T_EQ(plan_repl(&plan), 1);
    T_EQ(plan[0]->src, x);
    T_EQ(plan[0]->dst, other);
    T_EQ(plan[0]->drop_after, x);
    free_repl(plan, 1);
    T_EQ(run_copies(), 1);
    T_EQ(replicas(f, 0, set, NULL), 1);
    T_EQ(set[0], other);
    T_EQ(cmds_for(x, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 1), 1); /* chunk ids start at 1 */
    /* a deletion refused for a version mismatch is queued again for any version, not retried forever */
    T_EQ(heartbeat(x, 0, NS_CMD_ID(SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 1), -ESTALE), 0);
    T_EQ(cmds_for(x, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 1), 1);
    /* while that deletion is queued, no copy of the chunk may start to x */
    Synod__V1__ReplStart rs = SYNOD__V1__REPL_START__INIT;
    uint32_t ver;
    replicas(f, 0, set, &ver);
    rs.chunk_id = 1;
    rs.version = ver;
    rs.src = other;
    rs.dst = x;
    T_EQ(decommission(x, true, NULL, NULL, 0), 0); /* UP again: a valid target but for the deletion */
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_REPL_START, &rs.base), -EBUSY);
    tsvc_teardown();
}

static void test_goal_trim(void)
{
    tsvc_setup();
    tsvc_register("127.0.0.1:9001", "u1", "");
    tsvc_register("127.0.0.1:9002", "u2", "");
    tsvc_register("127.0.0.1:9003", "u3", "");
    uint64_t d = mkfile(NS_ROOT_INO, "d", S_IFDIR | 0755);
    uint64_t sub = mkfile(d, "sub", S_IFDIR | 0755);
    uint64_t f1 = mkfile(d, "f1", S_IFREG | 0644), f2 = mkfile(sub, "f2", S_IFREG | 0644);
    write_chunk(f1, 0, 100, true, NULL);
    write_chunk(f2, 0, 100, true, NULL);
    uint32_t set[4], v0;
    T_EQ(replicas(f2, 0, set, &v0), 2);
    /* recursive goal 3: both chunks under goal, copied to the third chunkserver */
    Synod__V1__Cred cr = SYNOD__V1__CRED__INIT;
    Synod__V1__SetGoalReq sg = SYNOD__V1__SET_GOAL_REQ__INIT;
    sg.cred = &cr;
    sg.ino = d;
    sg.goal = 3;
    sg.recursive = true;
    Synod__V1__SetGoalRep *sgr;
    T_EQ(tsvc_call("Admin", "SetGoal", &sg.base, (ProtobufCMessage **)&sgr), 0);
    T_EQU(sgr->changed, 4);
    protobuf_c_message_free_unpacked(&sgr->base, NULL);
    struct ns_counts c;
    counts(&c);
    T_EQU(c.under_goal, 2);
    T_EQ(run_copies(), 2);
    T_EQ(replicas(f1, 0, set, NULL), 3);
    T_EQ(replicas(f2, 0, set, NULL), 3);
    /* recursive goal 1: both over goal; under a live lease a chunk is not trimmed */
    sg.goal = 1;
    T_EQ(tsvc_call("Admin", "SetGoal", &sg.base, NULL), 0);
    counts(&c);
    T_EQU(c.over_goal, 2);
    T_EQU(c.under_goal, 0);
    write_chunk(f1, 0, 0, false, NULL); /* f1's chunk leased */
    Synod__V1__ReplicaDrop **plan;
    size_t n = plan_trim(&plan);
    T_EQ(n, 1);
    uint32_t v1;
    replicas(f2, 0, set, &v1);
    T_EQ(plan[0]->version, v1);
    /* a drop planned on an older version does not apply */
    plan[0]->version--;
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_REPLICA_DROP, &plan[0]->base), -ESTALE);
    free_trim(plan, n);
    /* trimmed to the goal, one copy per round at most per chunk; each drop bumps the version */
    for (int round = 0; round < 5 && run_trims() > 0; round++)
        ;
    uint32_t v2;
    T_EQ(replicas(f2, 0, set, &v2), 1);
    T_CHECK(v2 >= v1 + 2);
    T_EQ(replicas(f1, 0, set, NULL), 3); /* still leased */
    /* a drop that would leave fewer copies than the goal is refused */
    Synod__V1__ReplicaDrop rd = SYNOD__V1__REPLICA_DROP__INIT;
    T_EQ(replicas(f2, 0, set, NULL), 1);
    rd.chunk_id = 2;
    rd.version = v2;
    rd.cs = set[0];
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_REPLICA_DROP, &rd.base), -EAGAIN);
    tnow += 120ll * 1000000000;
    for (int round = 0; round < 5 && run_trims() > 0; round++)
        ;
    T_EQ(replicas(f1, 0, set, NULL), 1);
    counts(&c);
    T_EQU(c.over_goal, 0);
    tsvc_teardown();
}

static void test_rebalance(void)
{
    tsvc_setup();
    uint32_t a = tsvc_register("127.0.0.1:9001", "u1", ""), b = tsvc_register("127.0.0.1:9002", "u2", ""),
             c3 = tsvc_register("127.0.0.1:9003", "u3", "");
    /* goal 1 everywhere; make a the emptiest so it gets the chunks, then report it full */
    Synod__V1__Cred cr = SYNOD__V1__CRED__INIT;
    Synod__V1__SetGoalReq sg = SYNOD__V1__SET_GOAL_REQ__INIT;
    sg.cred = &cr;
    sg.ino = NS_ROOT_INO;
    sg.goal = 1;
    T_EQ(tsvc_call("Admin", "SetGoal", &sg.base, NULL), 0);
    T_EQ(heartbeat(b, 600ull << 30, 0, 0), 0);
    T_EQ(heartbeat(c3, 600ull << 30, 0, 0), 0);
    uint64_t f = mkfile(NS_ROOT_INO, "f", S_IFREG | 0644);
    for (uint64_t i = 0; i < 10; i++) {
        write_chunk(f, i, (i + 1) * NS_CHUNK_SIZE, i != 9, NULL); /* chunk 9 stays under its lease */
        uint32_t set[2];
        T_EQ(replicas(f, i, set, NULL), 1);
        T_EQ(set[0], a);
        T_EQ(heartbeat(a, 0, 0, 0), 0); /* clears recent_allocs */
    }
    T_EQ(heartbeat(a, 900ull << 30, 0, 0), 0);
    T_EQ(heartbeat(b, 100ull << 30, 0, 0), 0);
    T_EQ(heartbeat(c3, 200ull << 30, 0, 0), 0);
    struct kv_txn *txn = kv_txn_begin(tdb);
    struct ns_move *mv;
    uint32_t mean;
    size_t n = ns_plan_rebalance(txn, tnow, STALE, 10, 100, &mv, &mean);
    kv_txn_abort(txn);
    T_EQ(mean, 39); /* 1200 GiB of 3 TiB */
    /* the throttle (2 copies per source) bounds one round */
    T_EQ(n, 2);
    for (size_t i = 0; i < n; i++) {
        T_EQ(mv[i].from, a);
        T_EQ(mv[i].to, b); /* the least used below the mean */
        T_EQU(mv[i].bytes, NS_CHUNK_SIZE);
        T_CHECK(mv[i].chunk_id != 10); /* never the leased chunk */
    }
    /* max_moves bounds it too; a threshold above the excess plans nothing */
    free(mv);
    txn = kv_txn_begin(tdb);
    T_EQ(ns_plan_rebalance(txn, tnow, STALE, 10, 1, &mv, &mean), 1);
    free(mv);
    T_EQ(ns_plan_rebalance(txn, tnow, STALE, 60, 100, &mv, &mean), 0);
    free(mv);
    n = ns_plan_rebalance(txn, tnow, STALE, 10, 100, &mv, &mean);
    kv_txn_abort(txn);
    /* start the moves as the service does: copy, then drop the source when the copy lands */
    for (size_t i = 0; i < n; i++) {
        Synod__V1__ReplStart rs = SYNOD__V1__REPL_START__INIT;
        rs.chunk_id = mv[i].chunk_id;
        rs.version = mv[i].version;
        rs.src = mv[i].from;
        rs.dst = mv[i].to;
        rs.drop_after = mv[i].from;
        T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_REPL_START, &rs.base), 0);
    }
    /* in flight: the throttle leaves no room for more */
    txn = kv_txn_begin(tdb);
    struct ns_move *mv2;
    T_EQ(ns_plan_rebalance(txn, tnow, STALE, 10, 100, &mv2, &mean), 0);
    free(mv2);
    kv_txn_abort(txn);
    for (size_t i = 0; i < n; i++)
        T_EQ(heartbeat(mv[i].to, 100ull << 30, NS_CMD_ID(SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, mv[i].chunk_id), 0),
             0);
    for (uint64_t i = 0; i < 10; i++) {
        uint32_t set[4];
        size_t k = replicas(f, i, set, NULL);
        bool moved = false;
        for (size_t j = 0; j < n; j++)
            moved |= mv[j].chunk_id == i + 1;
        T_EQ(k, 1);
        T_EQ(set[0], moved ? b : a);
        if (moved)
            T_EQ(cmds_for(a, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, i + 1), 1);
    }
    free(mv);
    struct ns_counts c;
    counts(&c);
    T_EQU(c.over_goal, 0);
    T_EQU(c.under_goal, 0);
    tsvc_teardown();
}

/* Raw LevelDB surgery: the damage fsck must find (a crash or a bug, not something apply ever does). */
static void raw_del(char tag, uint64_t id)
{
    uint8_t k[11] = {'n', '/', (uint8_t)tag};
    for (int i = 0; i < 8; i++)
        k[3 + i] = (uint8_t)(id >> (56 - 8 * i));
    char *err = NULL;
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_delete(tdb, wo, (const char *)k, sizeof(k), &err);
    leveldb_writeoptions_destroy(wo);
    T_CHECK(!err);
}

static void raw_set_nlink(uint64_t ino, uint32_t nlink)
{
    uint8_t k[11] = {'n', '/', 'i'};
    for (int i = 0; i < 8; i++)
        k[3 + i] = (uint8_t)(ino >> (56 - 8 * i));
    char *err = NULL;
    size_t vl;
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    char *v = leveldb_get(tdb, ro, (const char *)k, sizeof(k), &vl, &err);
    leveldb_readoptions_destroy(ro);
    T_CHECK(v && !err);
    Synod__V1__InodeRec *r = synod__v1__inode_rec__unpack(NULL, vl, (const uint8_t *)v);
    leveldb_free(v);
    r->nlink = nlink;
    uint8_t buf[512];
    size_t n = synod__v1__inode_rec__pack(r, buf);
    synod__v1__inode_rec__free_unpacked(r, NULL);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_put(tdb, wo, (const char *)k, sizeof(k), (const char *)buf, n, &err);
    leveldb_writeoptions_destroy(wo);
    T_CHECK(!err);
}

/* Delete the directory entry (parent, name) or add the orphan index key of ino, behind the service's back. */
static void raw_dirent_del(uint64_t parent, const char *name)
{
    uint8_t k[11 + 256] = {'n', '/', 'd'};
    for (int i = 0; i < 8; i++)
        k[3 + i] = (uint8_t)(parent >> (56 - 8 * i));
    size_t nl = strlen(name);
    memcpy(k + 11, name, nl);
    char *err = NULL;
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_delete(tdb, wo, (const char *)k, 11 + nl, &err);
    leveldb_writeoptions_destroy(wo);
    T_CHECK(!err);
}

static void raw_orphan_put(uint64_t ino)
{
    uint8_t k[11] = {'n', '/', 'O'};
    for (int i = 0; i < 8; i++)
        k[3 + i] = (uint8_t)(ino >> (56 - 8 * i));
    char *err = NULL;
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_put(tdb, wo, (const char *)k, sizeof(k), "", 0, &err);
    leveldb_writeoptions_destroy(wo);
    T_CHECK(!err);
}

static size_t kind_count(const struct ns_fsck *f, const char *kind)
{
    size_t n = 0;
    for (size_t i = 0; i < f->rep.n_problems; i++)
        n += !strcmp(f->rep.problems[i]->kind, kind);
    return n;
}

static void test_fsck(void)
{
    tsvc_setup();
    uint32_t a = tsvc_register("127.0.0.1:9001", "u1", "");
    tsvc_register("127.0.0.1:9002", "u2", "");
    uint64_t d = mkfile(NS_ROOT_INO, "d", S_IFDIR | 0755);
    mkfile(d, "sub", S_IFDIR | 0755);
    uint64_t f = mkfile(d, "f", S_IFREG | 0644), gone = mkfile(d, "gone", S_IFREG | 0644);
    uint64_t h = mkfile(NS_ROOT_INO, "h", S_IFREG | 0644);
    Synod__V1__LinkReq ln = SYNOD__V1__LINK_REQ__INIT;
    Synod__V1__Cred cr = SYNOD__V1__CRED__INIT;
    ln.rid = tsvc_rid();
    ln.cred = &cr;
    ln.ino = h;
    ln.new_parent = d;
    ln.new_name = "h2";
    Synod__V1__EntryRep *er;
    T_EQ(META("Link", ln, &er), 0);
    protobuf_c_message_free_unpacked(&er->base, NULL);
    write_chunk(f, 0, 100, true, NULL);
    write_chunk(gone, 0, 100, true, NULL);
    write_chunk(gone, 1, 100, true, NULL); /* past the end: size 100 */
    write_chunk(h, 0, 10, false, NULL);    /* under a lease: fine */

    struct ns_fsck r;
    T_EQ(ns_fsck_run(tdb, tnow, 1000000, 100, &r), 0);
    T_EQU(r.rep.checked_inodes, 6);
    T_EQU(r.rep.checked_chunks, 4);
    T_EQU(r.rep.total_problems, 1);
    T_EQ(kind_count(&r, "beyond_size"), 1);
    T_EQ(kind_count(&r, "counter"), 0); /* the status counters kept by apply agree with the scan */
    ns_fsck_release(&r);

    /* damage: an inode record lost (its entry dangles, its chunks are orphans), a wrong nlink on a file
     * and on a directory, a chunkserver dead (under goal) */
    raw_del('i', gone);
    raw_set_nlink(h, 5);
    raw_set_nlink(d, 9);
    Synod__V1__ChunkserverDead dead = SYNOD__V1__CHUNKSERVER_DEAD__INIT;
    dead.id = a;
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_CS_DEAD, &dead.base), 0);
    T_EQ(ns_fsck_run(tdb, tnow, 1000000, 100, &r), 0);
    T_EQ(kind_count(&r, "dangling_dirent"), 1);
    T_EQ(kind_count(&r, "orphan_chunk"), 2);
    T_EQ(kind_count(&r, "nlink"), 2);
    T_EQ(kind_count(&r, "under_goal"), 4); /* f's, h's and gone's two (orphans, still counted) */
    T_EQU(r.repair.n_fixes, 4);           /* one per dangling entry, orphan inode, nlink */
    /* a bounded run: past max_inodes the whole-namespace checks are skipped */
    struct ns_fsck small;
    T_EQ(ns_fsck_run(tdb, tnow, 2, 100, &small), 0);
    T_CHECK(small.rep.truncated);
    T_EQ(kind_count(&small, "nlink"), 0);
    ns_fsck_release(&small);
    /* a fix planned on an older state does not apply: h's ctime moves (a new link) before the repair */
    Synod__V1__FsckRepair stale = SYNOD__V1__FSCK_REPAIR__INIT;
    Synod__V1__FsckFix *sf[4];
    size_t ns = 0;
    for (size_t i = 0; i < r.repair.n_fixes; i++)
        if (r.repair.fixes[i]->kind == SYNOD__V1__FSCK_FIX__KIND__NLINK && r.repair.fixes[i]->ino == h)
            sf[ns++] = r.repair.fixes[i];
    T_EQ(ns, 1);
    stale.fixes = sf;
    stale.n_fixes = ns;
    sf[0]->ctime_ns--;
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_FSCK_REPAIR, &stale.base), 0);
    sf[0]->ctime_ns++;
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_FSCK_REPAIR, &r.repair.base), 0);
    ns_fsck_release(&r);
    T_EQ(ns_fsck_run(tdb, tnow, 1000000, 100, &r), 0);
    T_EQ(kind_count(&r, "dangling_dirent"), 0);
    T_EQ(kind_count(&r, "orphan_chunk"), 0);
    T_EQ(kind_count(&r, "nlink"), 0);
    T_EQ(kind_count(&r, "under_goal"), 2);
    T_EQU(r.rep.total_problems, 2);
    ns_fsck_release(&r);
    /* the orphans' copies were queued for deletion */
    T_EQ(cmds_for(a, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 2) + cmds_for(a + 1, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 2), 1);

    /* the orphan index: a nameless inode (nlink 0) missing from it would never be purged; a key naming a
     * named inode is stale */
    uint64_t lost = mkfile(NS_ROOT_INO, "lost", S_IFREG | 0644);
    raw_dirent_del(NS_ROOT_INO, "lost");
    raw_set_nlink(lost, 0);
    raw_orphan_put(f);
    T_EQ(ns_fsck_run(tdb, tnow, 1000000, 100, &r), 0);
    T_EQ(kind_count(&r, "orphan_unindexed"), 1);
    T_EQ(kind_count(&r, "orphan_key"), 1);
    T_EQ(kind_count(&r, "unreachable"), 0);
    T_EQ(kind_count(&r, "counter"), 1); /* the entry removed behind apply's back: files counter one high */
    ns_fsck_release(&r);
    raw_orphan_put(lost); /* indexed: an orphan awaiting purge, not a problem */
    raw_del('O', f);
    T_EQ(ns_fsck_run(tdb, tnow, 1000000, 100, &r), 0);
    T_EQ(kind_count(&r, "orphan_unindexed"), 0);
    T_EQ(kind_count(&r, "orphan_key"), 0);
    ns_fsck_release(&r);
    tsvc_teardown();
}

int main(void)
{
    T_RUN(test_decommission);
    T_RUN(test_drain_only_copy);
    T_RUN(test_goal_trim);
    T_RUN(test_rebalance);
    T_RUN(test_fsck);
    return 0;
}
