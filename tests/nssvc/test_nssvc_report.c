/* test_nssvc_report.c - chunkserver management through the service's pure path: chunk report
 * reconciliation (stale versions deleted, unknown chunks deleted after the grace period, missing
 * replicas dropped after the last page), heartbeat results through the log, a dead chunkserver's
 * replicas dropped, re-replication planned fewest copies first and handed out on heartbeat replies. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "nssvc_testutil.h"
#include "tests/test.h"

static bool unknown_due(uint32_t cs)
{
    struct kv_txn *txn = kv_txn_begin(tdb);
    bool due = ns_cs_unknown_due(txn, cs, tnow);
    kv_txn_abort(txn);
    return due;
}

static int report(uint32_t cs, bool first, bool last, size_t n, const uint64_t *ids, const uint32_t *vers)
{
    Synod__V1__ChunkReportReq r = SYNOD__V1__CHUNK_REPORT_REQ__INIT;
    Synod__V1__ChunkVersion cv[8], *pcv[8];
    for (size_t i = 0; i < n; i++) {
        synod__v1__chunk_version__init(&cv[i]);
        cv[i].chunk_id = ids[i];
        cv[i].version = vers[i];
        pcv[i] = &cv[i];
    }
    r.id = cs;
    r.first = first;
    r.last = last;
    r.n_chunks = n;
    r.chunks = pcv;
    return tsvc_call("ChunkControl", "ChunkReport", &r.base, NULL);
}

/* The commands the heartbeat reply would carry: count of `type` for `chunk`. */
static int cmds_for(uint32_t cs, uint32_t type, uint64_t chunk, uint32_t *src)
{
    struct kv_txn *txn = kv_txn_begin(tdb);
    Synod__V1__ChunkCmd **v;
    size_t n = ns_cs_commands(txn, cs, tnow, 100, &v);
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->type == type && v[i]->chunk_id == chunk) {
            k++;
            if (src && v[i]->source)
                *src = v[i]->source->id;
        }
        synod__v1__chunk_cmd__free_unpacked(v[i], NULL);
    }
    free(v);
    kv_txn_abort(txn);
    return k;
}

static int heartbeat_result(uint32_t cs, uint64_t cmd_id, int err)
{
    Synod__V1__ChunkCmdResult res = SYNOD__V1__CHUNK_CMD_RESULT__INIT;
    res.cmd_id = cmd_id;
    res.err = err;
    return tsvc_heartbeat(cs, 0, &res, NULL);
}
static size_t replicas(uint64_t ino, uint32_t *ids)
{
    Synod__V1__ChunkLocReq cl = SYNOD__V1__CHUNK_LOC_REQ__INIT;
    cl.ino = ino;
    cl.count = 1;
    Synod__V1__ChunkLocRep *rep;
    T_EQ(META("ChunkLocations", cl, &rep), 0);
    size_t n = rep->chunks[0]->n_replicas;
    for (size_t i = 0; i < n; i++)
        ids[i] = rep->chunks[0]->replicas[i]->id;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return n;
}

static void test_reconcile(void)
{
    uint32_t a = tsvc_register("127.0.0.1:9001", "ua", ""), b = tsvc_register("127.0.0.1:9002", "ub", ""), c = tsvc_register("127.0.0.1:9003", "uc", "");
    uint64_t chunk;
    uint32_t ver;
    uint64_t ino = tsvc_file_open_write("f", &chunk, &ver);
    uint32_t set[4];
    T_EQ(replicas(ino, set), 2);
    uint32_t out = a + b + c - set[0] - set[1]; /* the one not in the set */
    T_CHECK(ver >= 1);

    /* the outsider reports an older version: stale, queued for deletion */
    uint64_t ids[2] = {chunk, 777};
    uint32_t vers[2] = {ver - 1, 1};
    T_EQ(report(out, true, true, 2, ids, vers), 0);
    T_EQ(cmds_for(out, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, chunk, NULL), 1);
    /* 777 is unknown: kept during the grace period, deleted when reported after it; once its grace is over,
     * the chunkserver's heartbeat replies ask for that report */
    T_EQ(cmds_for(out, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 777, NULL), 0);
    T_CHECK(!unknown_due(out));
    tnow += 2000000000;
    T_CHECK(unknown_due(out));
    T_EQ(report(out, true, true, 1, &ids[1], &vers[1]), 0);
    T_EQ(cmds_for(out, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, 777, NULL), 1);
    T_CHECK(!unknown_due(out));
    /* an unknown chunk gone before the next report is forgotten (no marker left to ask for reports) */
    uint64_t id888 = 888;
    uint32_t v1 = 1;
    T_EQ(report(out, true, true, 1, &id888, &v1), 0);
    T_EQ(report(out, true, true, 0, NULL, NULL), 0);
    tnow += 2000000000;
    T_CHECK(!unknown_due(out));
    /* the delete's result rides on a heartbeat through the log: the queue entry goes */
    T_EQ(heartbeat_result(out, NS_CMD_ID(SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, chunk), 0), 0);
    T_EQ(cmds_for(out, SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, chunk, NULL), 0);

    /* set[0] reports in two pages without the chunk: after the last page, its replica is missing */
    T_EQ(report(set[0], true, false, 0, NULL, NULL), 0);
    T_EQ(replicas(ino, set + 2), 2);
    T_EQ(report(set[0], false, true, 0, NULL, NULL), 0);
    uint32_t now_set[4];
    T_EQ(replicas(ino, now_set), 1);
    T_EQ(now_set[0], set[1]);

    /* re-replication: not while the chunk is under a write lease; once the writer completes (at its
     * version, older than the table's after the removal) and releases it, planned to a chunkserver not
     * holding it, handed out on its heartbeat */
    struct kv_txn *txn = kv_txn_begin(tdb);
    Synod__V1__ReplStart **plan;
    T_EQ(ns_plan_replication(txn, tnow, 60ll * 1000000000, 10, &(struct ns_plan_cursor){.budget = 0}, &plan), 0);
    kv_txn_abort(txn);
    free(plan);
    tsvc_write_done_release(ino, chunk, ver, 100);
    txn = kv_txn_begin(tdb);
    size_t np = ns_plan_replication(txn, tnow, 60ll * 1000000000, 10, &(struct ns_plan_cursor){.budget = 0}, &plan);
    kv_txn_abort(txn);
    T_EQ(np, 1);
    T_EQU(plan[0]->chunk_id, chunk);
    T_EQ(plan[0]->src, set[1]);
    T_CHECK(plan[0]->dst != set[1]);
    uint32_t dst = plan[0]->dst;
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_REPL_START, &plan[0]->base), 0);
    synod__v1__repl_start__free_unpacked(plan[0], NULL);
    free(plan);
    uint32_t src = 0;
    T_EQ(cmds_for(dst, SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, chunk, &src), 1);
    T_EQ(src, set[1]);
    T_EQ(heartbeat_result(dst, NS_CMD_ID(SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, chunk), 0), 0);
    T_EQ(replicas(ino, now_set), 2);

    /* a dead chunkserver leaves every replica set */
    Synod__V1__ChunkserverDead dead = SYNOD__V1__CHUNKSERVER_DEAD__INIT;
    dead.id = dst;
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_CS_DEAD, &dead.base), 0);
    T_EQ(replicas(ino, now_set), 1);
    T_EQ(now_set[0], set[1]);
    txn = kv_txn_begin(tdb);
    uint32_t *dids;
    T_EQ(ns_find_dead_chunkservers(txn, tnow, 1, &dids), 2); /* the state's clock: both others are silent */
    free(dids);
    kv_txn_abort(txn);
}

/* A heartbeat carrying a chain failure (a replica that failed a chained write the sender took part in):
 * the replica leaves the set and the version moves on, as for a client's BadReplica; a repeat or a report
 * at an older version changes nothing. */
static int heartbeat_chain_failure(uint32_t cs, uint64_t chunk, uint32_t version, uint32_t failed)
{
    Synod__V1__ChainFailure f = SYNOD__V1__CHAIN_FAILURE__INIT;
    f.chunk_id = chunk;
    f.version = version;
    f.chunkserver = failed;
    f.err = -EIO;
    return tsvc_heartbeat(cs, 0, NULL, &f);
}

static uint32_t chunk_version(uint64_t ino)
{
    Synod__V1__ChunkLocReq cl = SYNOD__V1__CHUNK_LOC_REQ__INIT;
    cl.ino = ino;
    cl.count = 1;
    Synod__V1__ChunkLocRep *rep;
    T_EQ(META("ChunkLocations", cl, &rep), 0);
    uint32_t v = rep->chunks[0]->version;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return v;
}

static void test_chain_failure(void)
{
    tsvc_register("127.0.0.1:9101", "cf-a", "");
    tsvc_register("127.0.0.1:9102", "cf-b", "");
    tsvc_register("127.0.0.1:9103", "cf-c", "");
    uint64_t chunk;
    uint32_t ver;
    uint64_t ino = tsvc_file_open_write("cf", &chunk, &ver);
    uint32_t set[4];
    size_t n = replicas(ino, set);
    T_CHECK(n >= 2);
    T_EQ(heartbeat_chain_failure(set[0], chunk, ver - 1, set[1]), 0); /* older version: already handled */
    T_EQ(replicas(ino, set), n);
    T_EQ(chunk_version(ino), ver);
    T_EQ(heartbeat_chain_failure(set[0], chunk, ver, set[1]), 0);
    uint32_t now_set[4];
    T_EQ(replicas(ino, now_set), n - 1);
    for (size_t i = 0; i < n - 1; i++)
        T_CHECK(now_set[i] != set[1]);
    T_EQ(chunk_version(ino), ver + 1);
    T_EQ(cmds_for(set[1], SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, chunk, NULL), 1); /* its copy goes */
    T_EQ(heartbeat_chain_failure(set[0], chunk, ver, set[1]), 0); /* a repeat: nothing more */
    T_EQ(replicas(ino, now_set), n - 1);
    T_EQ(chunk_version(ino), ver + 1);
}

/* A chunkserver declared dead that comes back: with no write lease live, its copy kept the version and
 * rejoins on its report; when every member was dropped while a lease was live (the version moved on), the
 * only copy left is kept and rejoins anyway, never deleted as stale (a false death must not cost data). */
static void dead_cs(uint32_t id)
{
    Synod__V1__ChunkserverDead d = SYNOD__V1__CHUNKSERVER_DEAD__INIT;
    d.id = id;
    T_EQ(tsvc_internal(SYNOD__V1__NS_COMMAND__CMD_CS_DEAD, &d.base), 0);
}

static void test_dead_returns(void)
{
    tsvc_register("127.0.0.1:9201", "dr-a", "");
    tsvc_register("127.0.0.1:9202", "dr-b", "");
    uint64_t chunk;
    uint32_t ver;
    uint64_t ino = tsvc_file_open_write("dr", &chunk, &ver); /* lease live from here */
    uint32_t set[4];
    T_EQ(replicas(ino, set), 2);
    /* lease released: a death keeps the version, the copy rejoins when it reports */
    tsvc_write_done_release(ino, chunk, ver, 10);
    dead_cs(set[1]);
    T_EQ(chunk_version(ino), ver);
    T_EQ(tsvc_heartbeat(set[1], 0, NULL, NULL), 0); /* heard again: UP */
    T_EQ(report(set[1], true, true, 1, &chunk, &ver), 0);
    uint32_t now_set[4];
    T_EQ(replicas(ino, now_set), 2);
    T_EQ(cmds_for(set[1], SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, chunk, NULL), 0);
    /* under a live lease both die: the version moves on, no member left; the first to come back with its
     * (older) copy is kept, not deleted */
    Synod__V1__ChunkOpenWriteReq ow = SYNOD__V1__CHUNK_OPEN_WRITE_REQ__INIT;
    ow.rid = tsvc_rid();
    ow.ino = ino;
    Synod__V1__ChunkOpenWriteRep *owr;
    T_EQ(META("ChunkOpenWrite", ow, &owr), 0);
    uint32_t v2 = owr->chunk->version;
    protobuf_c_message_free_unpacked(&owr->base, NULL);
    dead_cs(now_set[0]);
    dead_cs(now_set[1]);
    T_EQ(replicas(ino, set), 0);
    T_CHECK(chunk_version(ino) > v2);
    T_EQ(tsvc_heartbeat(now_set[0], 0, NULL, NULL), 0);
    T_EQ(report(now_set[0], true, true, 1, &chunk, &v2), 0);
    T_EQ(replicas(ino, set), 1);
    T_EQ(set[0], now_set[0]);
    T_EQ(cmds_for(now_set[0], SYNOD__V1__CHUNK_CMD_TYPE__CMD_DELETE, chunk, NULL), 0);
}

int main(void)
{
    tsvc_setup();
    T_RUN(test_reconcile);
    T_RUN(test_chain_failure);
    T_RUN(test_dead_returns);
    tsvc_teardown();
    return 0;
}
