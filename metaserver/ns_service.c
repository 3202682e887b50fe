/* ns_service.c - nssm_plugin: the namespace state machine inside the rsm runtime, and the RPC services a
 * metaserver offers around it (Meta for clients, ChunkControl for chunkservers, Admin for synodctl).
 *
 * Routing (the table is in ns_service_cmd.c):
 *  - Mutating requests become an NsCommand (the leader's wall clock, the request's credentials, its ReqId
 *    as (session, seq)) submitted with rsm_submit; the handler defers and the done callback answers with
 *    the apply's reply or errno. The runtime deduplicates by (session, seq); `acked` is seq - NSSVC_WINDOW,
 *    so a client keeps fewer than NSSVC_WINDOW requests of one session in flight.
 *  - Read-only requests run ns_apply on the leader's applied state under its lease (rsm_read): -EREMOTE
 *    with "leader=host:port" on a follower, -EAGAIN without a valid lease (the client retries).
 *  - Sessions: open through the log (rsm_session_open), keepalives in the leader's memory
 *    (rsm_session_touch), close = a SessionClose command through the log that releases the session's
 *    opens, locks and write leases (the runtime's own session then lapses; its expiry finds nothing left).
 *  - Chunkserver heartbeats stay in the leader's memory (ns_service_csmon.h); only state changes go through
 *    the log: command results, lost chunks, a dead chunkserver coming back, and capacity figures that
 *    moved (for placement and statfs). The reply carries that chunkserver's commands (ns_cs_commands).
 *
 * Leader duties (leader_tick on the runtime thread): create the root of a fresh cluster (NsInit), declare
 * silent chunkservers dead (timeout on the leader's monotonic clock; a new leader gives everyone a fresh
 * grace period), plan re-replication and the drain of decommissioning chunkservers (ns_plan_replication:
 * fewest copies first, throttled per chunkserver), trim over-goal chunks (ns_plan_trim -> ReplicaDrop),
 * and expire write leases. Each is proposed with rsm_submit(session 0), at most one batch of each kind
 * in flight.
 *
 * Admin: Status and Fileinfo are answered by any replica from its own state; SetGoal and Decommission go
 * through the log; Rebalance plans under the leader's lease and proposes its moves as ReplStart commands
 * (drop_after = source) without waiting for them; Fsck scans a LevelDB snapshot on the RPC worker (the
 * runtime thread keeps applying) and, with repair, answers once its FsckRepair command is applied.
 *
 * Threads: handlers run on RPC workers; done callbacks, hooks and the tick inside the runtime's loop turns
 * (one at a time, on the runtime thread or on the RPC thread that delivered Paxos messages: rsm.h), where
 * the applied state may be read directly (kv_txn on rsm_db) because nothing else writes it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "admin.pb-c.h"
#include "chunk.pb-c.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "meta.pb-c.h"
#include "metaserver/meta_plugin.h"
#include "metaserver/ns_opens.h"
#include "metaserver/ns_service.h"
#include "metaserver/ns_service_csmon.h"

#define NSSVC_WINDOW      1024 /* replies kept per session (see top) */
#define NSSVC_MAX_RELEASES 4096 /* memory releases batched in one Release (ReleaseReq.more_inos) */
#define NSSVC_MAX_CS_CMDS 64   /* commands per heartbeat reply */
#define NSSVC_MAX_SLOTS   40
#define DEAD_CHECK_NS     (200 * NS_PER_MS)
#define REPAIR_EVERY_NS   (1000 * NS_PER_MS)
#define REPL_STALE_NS     (120 * (int64_t)NS_PER_SEC)
#define ORPHAN_EVERY_NS   (100 * NS_PER_MS)
#define ORPHAN_SCAN       2048 /* orphans looked at per purge round (then the next ones next round) */
#define ORPHAN_PURGE_MAX  1024 /* inodes per OrphanPurge command */

struct slot {
    struct nssvc *s;
    const struct nssvc_method *m;
    const ProtobufCMethodDescriptor *md;
};

struct nssvc {
    struct ns *ns;
    struct rsm *r;
    struct csmon *mon;
    struct ns_opens *opens; /* memory opens (leader; see ns_opens.h) */
    struct rpc_server *srv;
    _Atomic uint64_t fsid; /* the file system id once this replica's state has one (fsid_learn), else 0 */
    struct slot slots[NSSVC_MAX_SLOTS];
    rpc_handler_fn meta_h[32], cc_h[8], admin_h[8];
    /* config */
    uint32_t default_goal, lease_ms, heartbeat_ms, max_repl;
    int64_t grace_ns;
    /* leader state (runtime thread) */
    atomic_bool initialized; /* the root exists: serving */
    bool init_inflight;
    bool fsid_settled; /* the state has its file system id (or runs as before it, for tests) */
    bool init_root;    /* the NsInit in flight creates the root (else it only adds the id) */
    uint64_t last_tick, last_dead, last_repair, last_orphan;
    uint64_t term_ballot; /* ballot of the leadership the memory opens belong to */
    int repl_inflight, lease_inflight, dead_inflight, trim_inflight, orphan_inflight;
    struct ns_plan_cursor repl_cur, trim_cur; /* where the planning rounds resume (runtime thread) */
    uint64_t orphan_after;                    /* where the orphan scan resumes */
    uint32_t dead_step;                       /* namespace.cs_dead_step */
    bool orphan_wait_logged;
    uint64_t orphan_wait_since; /* monotonic: since when a session has not reported (0: none) */
    /* fsck scans running on threads of their own (jobs_mu); plugin_detach waits for them */
    pthread_mutex_t jobs_mu;
    pthread_cond_t jobs_cv;
    unsigned jobs;
};

static const struct config_key nssvc_keys[] = {
    {"namespace.cs_timeout", CONFIG_DURATION, "10s",
     "a chunkserver silent this long (leader's clock) is dead"},
    {"namespace.default_goal", CONFIG_INT, "3", "replication goal of the root (inherited on create)"},
    {"namespace.chunk_lease", CONFIG_DURATION, "60s", "write lease on a chunk"},
    {"namespace.cs_heartbeat", CONFIG_DURATION, "1s", "heartbeat period told to chunkservers"},
    {"namespace.max_repl_per_cs", CONFIG_INT, "4",
     "copies in flight per chunkserver, as source or target (at cluster creation; later: synodctl "
     "repl-limit)"},
    {"namespace.unknown_chunk_grace", CONFIG_DURATION, "10m",
     "unknown chunks reported are deleted after this"},
    {"namespace.cs_dead_step", CONFIG_INT, "4096",
     "copies of a dead chunkserver dropped from replica sets per command"},
    {NULL, 0, NULL, NULL},
};

/* --- answering --------------------------------------------------------------------------------------- */

static void fail(struct nssvc *s, struct rpc_call *call, int err)
{
    char detail[300];
    const char *leader = err == -EREMOTE && s->r ? rsm_leader(s->r) : NULL;
    if (leader)
        snprintf(detail, sizeof(detail), "leader=%s", leader);
    rpc_fail(call, err, leader ? detail : NULL);
}

/* Answer with packed reply bytes of type desc. */
static void reply_bytes(struct rpc_call *call, const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
                        size_t len)
{
    ProtobufCMessage *m = nssvc_reply_decode(desc, buf, len);
    if (!m) {
        LOG_ERR("namespace service: reply of type %s does not decode", desc->name);
        rpc_fail(call, -EIO, "bad reply");
        return;
    }
    rpc_reply(call, m);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* --- commands through the log ------------------------------------------------------------------------ */

struct pending {
    struct nssvc *s;
    struct rpc_call *call;
    const ProtobufCMethodDescriptor *md;
    /* memory opens registered when the command applies (Mknod with open, Open with O_TRUNC) */
    uint64_t session, ino, open_seq;
};

static void log_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    struct pending *p = arg;
    if (err == -EAGAIN && !zxid) /* not applied by this submission: the runtime's, not the operation's */
        rpc_fail(p->call, err, RPC_DETAIL_RETRY);
    else if (err)
        fail(p->s, p->call, err);
    else
        reply_bytes(p->call, p->md->output, reply, len);
    free(p);
}

/* Submit cmd (packed from req as cc) and answer `call` from its completion with `done`/`arg`. */
static int submit(struct nssvc *s, Synod__V1__NsCommand__CmdCase cc, const ProtobufCMessage *req,
                  rsm_done_fn done, void *arg)
{
    uint64_t session, seq;
    nssvc_req_id(req, &session, &seq);
    uint8_t *buf;
    size_t len;
    int rc = nssvc_cmd_pack(cc, req, clk_real_ns(), session, &buf, &len);
    if (rc)
        return rc;
    rsm_submit(s->r, session, seq, seq > NSSVC_WINDOW ? seq - NSSVC_WINDOW : 0, buf, len, done, arg);
    free(buf);
    return 0;
}

/* Submit the slot's command and answer from `done`: log_done, or a wrapper of it that uses the pending's
 * session, ino and open_seq. */
static int handle_log(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req, rsm_done_fn done,
                      uint64_t session, uint64_t ino, uint64_t open_seq)
{
    struct pending *p = xmalloc(sizeof(*p));
    *p = (struct pending){sl->s, call, sl->md, session, ino, open_seq};
    int rc = submit(sl->s, sl->m->cmd_case, req, done, p);
    if (rc) {
        free(p);
        return rc;
    }
    return RPC_DEFERRED;
}

/* --- reads under the lease --------------------------------------------------------------------------- */

struct readop {
    struct ns *ns;
    Synod__V1__NsCommand cmd;
    struct ns_reply rep;
};

static int read_fn(void *arg, struct kv_txn *txn)
{
    struct readop *o = arg;
    return ns_apply(o->ns, txn, &o->cmd, &o->rep);
}

static int handle_read(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    struct readop o;
    memset(&o, 0, sizeof(o));
    o.ns = sl->s->ns;
    uint64_t session, seq;
    nssvc_req_id(req, &session, &seq); /* GetLock: whose locks are "own" */
    int rc = nssvc_cmd_build(&o.cmd, sl->m->cmd_case, req, clk_real_ns(), session);
    if (rc)
        return rc;
    rc = rsm_read(sl->s->r, false, read_fn, &o);
    if (rc == 0)
        reply_bytes(call, sl->md->output, o.rep.buf, o.rep.len);
    else
        fail(sl->s, call, rc);
    ns_reply_release(&o.rep);
    return 0;
}

/* --- sessions ---------------------------------------------------------------------------------------- */

static void session_open_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    struct pending *p = arg;
    if (!err && len != 8)
        err = -EIO;
    if (err) {
        fail(p->s, p->call, err);
    } else {
        Synod__V1__SessionOpenRep rep = SYNOD__V1__SESSION_OPEN_REP__INIT;
        rep.session = get_le64(reply);
        rep.lease_ms = rsm_session_lease_ms(p->s->r);
        rep.zxid = zxid;
        rep.fsid = atomic_load(&p->s->fsid);
        rpc_reply(p->call, &rep.base);
    }
    free(p);
}

static int handle_session_open(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    const Synod__V1__SessionOpenReq *r = (const Synod__V1__SessionOpenReq *)req;
    struct pending *p = xmalloc(sizeof(*p));
    *p = (struct pending){sl->s, call, sl->md, 0, 0, 0};
    rsm_session_open(sl->s->r, r->client_name, session_open_done, p);
    return RPC_DEFERRED;
}

static int handle_keepalive(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    const Synod__V1__SessionKeepaliveReq *r = (const Synod__V1__SessionKeepaliveReq *)req;
    int rc = rsm_session_touch(sl->s->r, r->session);
    if (rc) {
        fail(sl->s, call, rc);
        return 0;
    }
    if (r->opens_report)
        ns_opens_report(sl->s->opens, r->session, r->open_seq, r->open_inos, r->n_open_inos);
    Synod__V1__SessionKeepaliveRep rep = SYNOD__V1__SESSION_KEEPALIVE_REP__INIT;
    rep.lease_ms = rsm_session_lease_ms(sl->s->r);
    rep.need_opens = !ns_opens_reported(sl->s->opens, r->session);
    rep.fsid = atomic_load(&sl->s->fsid);
    rpc_reply(call, &rep.base);
    return 0;
}

/* --- chunkservers ------------------------------------------------------------------------------------ */

/* Fill rep->cmds from the state (caller frees with free_cmds). */
static void cs_cmds(struct kv_txn *txn, uint32_t id, Synod__V1__HeartbeatRep *rep)
{
    rep->n_cmds = ns_cs_commands(txn, id, clk_real_ns(), NSSVC_MAX_CS_CMDS, &rep->cmds);
}

static void free_cmds(Synod__V1__HeartbeatRep *rep)
{
    for (size_t i = 0; i < rep->n_cmds; i++)
        synod__v1__chunk_cmd__free_unpacked(rep->cmds[i], NULL);
    free(rep->cmds);
    rep->cmds = NULL;
    rep->n_cmds = 0;
}

struct hb_pending {
    struct nssvc *s;
    struct rpc_call *call;
    uint32_t id;
    struct csmon_stats st;
};

static void heartbeat_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    UNUSED(zxid);
    struct hb_pending *p = arg;
    Synod__V1__HeartbeatRep *m = err ? NULL : synod__v1__heartbeat_rep__unpack(NULL, len, reply);
    if (!err && !m)
        err = -EIO;
    if (err) {
        fail(p->s, p->call, err);
    } else {
        csmon_logged(p->s->mon, p->id, clk_mono_ns(), &p->st);
        /* inside a turn: the applied state is read directly, this entry included */
        Synod__V1__HeartbeatRep rep = SYNOD__V1__HEARTBEAT_REP__INIT;
        struct kv_txn *txn = kv_txn_begin(rsm_db(p->s->r));
        rep.report_wanted = m->report_wanted || ns_cs_unknown_due(txn, p->id, clk_real_ns());
        rep.fsid = atomic_load(&p->s->fsid);
        cs_cmds(txn, p->id, &rep);
        kv_txn_abort(txn);
        rpc_reply(p->call, &rep.base);
        free_cmds(&rep);
    }
    if (m)
        synod__v1__heartbeat_rep__free_unpacked(m, NULL);
    free(p);
}

struct hb_read {
    uint32_t id;
    bool known, dead;
    Synod__V1__HeartbeatRep rep;
};

static int hb_read_fn(void *arg, struct kv_txn *txn)
{
    struct hb_read *h = arg;
    Synod__V1__ChunkserverRec *cs = ns_chunkserver(txn, h->id);
    if (cs) {
        h->known = true;
        h->dead = cs->state == NS_CS_DEAD;
        synod__v1__chunkserver_rec__free_unpacked(cs, NULL);
        cs_cmds(txn, h->id, &h->rep);
        h->rep.report_wanted = ns_cs_unknown_due(txn, h->id, clk_real_ns());
    }
    return 0;
}

static int handle_heartbeat(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    struct nssvc *s = sl->s;
    const Synod__V1__HeartbeatReq *r = (const Synod__V1__HeartbeatReq *)req;
    struct hb_read h = {.id = r->id, .rep = SYNOD__V1__HEARTBEAT_REP__INIT};
    h.rep.fsid = atomic_load(&s->fsid);
    int rc = rsm_read(s->r, false, hb_read_fn, &h);
    if (rc == 0 && !h.known)
        rc = -ENOENT; /* register first */
    if (rc) {
        free_cmds(&h.rep);
        fail(s, call, rc);
        return 0;
    }
    struct csmon_stats st = {.total = r->total_bytes,
                             .used = r->used_bytes,
                             .logical = r->logical_bytes,
                             .chunks = r->chunks,
                             .load = r->load,
                             .failed_dirs = r->failed_dirs};
    bool log = csmon_heard(s->mon, r->id, clk_mono_ns(), &st);
    if (!log && !h.dead && r->n_results == 0 && r->n_lost == 0 && r->n_chain_failures == 0) {
        rpc_reply(call, &h.rep.base); /* memory only */
        free_cmds(&h.rep);
        return 0;
    }
    free_cmds(&h.rep);
    struct hb_pending *p = xmalloc(sizeof(*p));
    *p = (struct hb_pending){s, call, r->id, st};
    rc = submit(s, SYNOD__V1__NS_COMMAND__CMD_CS_HEARTBEAT, req, heartbeat_done, p);
    if (rc) {
        free(p);
        return rc;
    }
    return RPC_DEFERRED;
}

static void register_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    struct pending *p = arg;
    if (!err) {
        Synod__V1__RegisterRep *m = synod__v1__register_rep__unpack(NULL, len, reply);
        if (m) {
            csmon_forget(p->s->mon, m->id); /* its next heartbeat is logged; the grace period restarts */
            synod__v1__register_rep__free_unpacked(m, NULL);
        }
    }
    log_done(p, err, reply, len, zxid);
}

/* --- admin ------------------------------------------------------------------------------------------- */

struct status_read {
    struct nssvc *s;
    Synod__V1__StatusRep *rep;
    Synod__V1__ChunkserverRec **cs;
    uint64_t *held; /* copies the table places on each */
    size_t ncs;
};

static int status_read_fn(void *arg, struct kv_txn *txn)
{
    struct status_read *st = arg;
    struct ns_counts c;
    ns_count(txn, &c);
    st->rep->files = c.files;
    st->rep->dirs = c.dirs;
    st->rep->chunks = c.chunks;
    st->rep->under_goal = c.under_goal;
    st->rep->missing = c.missing;
    st->rep->over_goal = c.over_goal;
    st->rep->fsid = ns_fsid(txn);
    st->ncs = ns_chunkservers(txn, &st->cs);
    st->held = xcalloc(st->ncs + 1, sizeof(*st->held));
    for (size_t i = 0; i < st->ncs; i++)
        st->held[i] = ns_cs_held(txn, st->cs[i]->id);
    return 0;
}

static const char *cs_state_name(uint32_t state)
{
    return state == NS_CS_UP ? "UP" : state == NS_CS_DEAD ? "DEAD" : "DECOMMISSIONING";
}

static int handle_status(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    UNUSED(req);
    struct nssvc *s = sl->s;
    Synod__V1__StatusRep rep = SYNOD__V1__STATUS_REP__INIT;
    struct rsm_status rs;
    rsm_get_status(s->r, &rs);
    rep.leader = rs.leader;
    rep.zxid = rs.zxid;
    /* this node's view, and the leader as this node knows it */
    Synod__V1__NodeInfo self = SYNOD__V1__NODE_INFO__INIT, lead = SYNOD__V1__NODE_INFO__INIT;
    Synod__V1__NodeInfo *nodes[2] = {&self, &lead};
    self.id = rs.self;
    self.role = (char *)rs.state;
    self.zxid = rs.zxid;
    self.applied = rs.applied;
    self.healthy = rs.serving || strcmp(rs.state, "LOOKING") != 0;
    self.addr = "";
    rep.metaservers = nodes;
    rep.n_metaservers = 1;
    const char *laddr = rsm_leader(s->r);
    if (rs.leader != UINT32_MAX && rs.leader != rs.self) {
        lead.id = rs.leader;
        lead.role = "LEADING";
        lead.addr = (char *)(laddr ? laddr : "");
        lead.healthy = true;
        rep.n_metaservers = 2;
    } else if (laddr) {
        self.addr = (char *)laddr;
    }
    Synod__V1__StatusRep *rp = &rep;
    struct status_read st = {.s = s, .rep = rp};
    int rc = rsm_read(s->r, true, status_read_fn, &st);
    if (rc) {
        fail(s, call, rc);
        return 0;
    }
    Synod__V1__ChunkserverStatus *cv = xcalloc(st.ncs ? st.ncs : 1, sizeof(*cv));
    Synod__V1__ChunkserverStatus **cp = xcalloc(st.ncs ? st.ncs : 1, sizeof(*cp));
    Synod__V1__ChunkserverAddr *ca = xcalloc(st.ncs ? st.ncs : 1, sizeof(*ca));
    uint64_t mono = clk_mono_ns();
    int64_t wall = clk_real_ns();
    bool leading = rsm_is_leader(s->r);
    for (size_t i = 0; i < st.ncs; i++) {
        const Synod__V1__ChunkserverRec *c = st.cs[i];
        synod__v1__chunkserver_status__init(&cv[i]);
        synod__v1__chunkserver_addr__init(&ca[i]);
        ca[i].id = c->id;
        ca[i].addr = c->addr;
        ca[i].label = c->label;
        ca[i].uuid = c->uuid;
        cv[i].addr = &ca[i];
        cv[i].state = (char *)cs_state_name(c->state);
        cv[i].total_bytes = c->total_bytes;
        cv[i].used_bytes = c->used_bytes;
        cv[i].logical_bytes = c->logical_bytes;
        cv[i].chunks = c->chunks;
        cv[i].load = c->load;
        cv[i].replicas = st.held[i];
        cv[i].last_heard_ms = c->last_heard_ns ? (wall - c->last_heard_ns) / (int64_t)NS_PER_MS : -1;
        struct csmon_stats ms;
        uint64_t heard;
        if (leading && csmon_get(s->mon, c->id, &ms, &heard)) { /* the leader's fresher figures */
            cv[i].total_bytes = ms.total;
            cv[i].used_bytes = ms.used;
            cv[i].logical_bytes = ms.logical;
            cv[i].chunks = ms.chunks;
            cv[i].load = ms.load;
            cv[i].last_heard_ms = (int64_t)((mono - heard) / NS_PER_MS);
        }
        cp[i] = &cv[i];
    }
    rep.chunkservers = cp;
    rep.n_chunkservers = st.ncs;
    rpc_reply(call, &rep.base);
    for (size_t i = 0; i < st.ncs; i++)
        synod__v1__chunkserver_rec__free_unpacked(st.cs[i], NULL);
    free(st.cs);
    free(st.held);
    free(cv);
    free(cp);
    free(ca);
    return 0;
}

struct fileinfo_read {
    struct ns *ns;
    const Synod__V1__FileinfoReq *req;
    struct ns_reply attr, locs;
};

static int fileinfo_read_fn(void *arg, struct kv_txn *txn)
{
    struct fileinfo_read *f = arg;
    uint64_t ino = f->req->ino ? f->req->ino : NS_ROOT_INO;
    Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
    if (!f->req->ino && f->req->path[0]) {
        /* resolve the path as root, one lookup per component */
        char *path = xstrdup(f->req->path), *save = NULL;
        int rc = 0;
        for (char *c = strtok_r(path, "/", &save); c && !rc; c = strtok_r(NULL, "/", &save)) {
            Synod__V1__LookupReq lr = SYNOD__V1__LOOKUP_REQ__INIT;
            lr.parent = ino;
            lr.name = c;
            cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_LOOKUP;
            cmd.lookup = &lr;
            struct ns_reply rep;
            rc = ns_apply(f->ns, txn, &cmd, &rep);
            if (!rc) {
                Synod__V1__EntryRep *e = (Synod__V1__EntryRep *)ns_reply_unpack(&rep);
                ino = e->attr->ino;
                synod__v1__entry_rep__free_unpacked(e, NULL);
            }
            ns_reply_release(&rep);
        }
        free(path);
        if (rc)
            return rc;
    }
    Synod__V1__GetattrReq ga = SYNOD__V1__GETATTR_REQ__INIT;
    ga.ino = ino;
    cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_GETATTR;
    cmd.getattr = &ga;
    int rc = ns_apply(f->ns, txn, &cmd, &f->attr);
    if (rc)
        return rc;
    Synod__V1__AttrRep *a = (Synod__V1__AttrRep *)ns_reply_unpack(&f->attr);
    Synod__V1__ChunkLocReq cl = SYNOD__V1__CHUNK_LOC_REQ__INIT;
    cl.ino = ino;
    cl.count = (uint32_t)MIN(a->attr->size / NS_CHUNK_SIZE + 1, 4096);
    synod__v1__attr_rep__free_unpacked(a, NULL);
    cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_CHUNK_LOCATIONS;
    cmd.chunk_locations = &cl;
    rc = ns_apply(f->ns, txn, &cmd, &f->locs);
    return rc == -EISDIR || rc == -EINVAL ? 0 : rc; /* directories and others have no chunks */
}

static int handle_fileinfo(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    struct fileinfo_read f = {.ns = sl->s->ns, .req = (const Synod__V1__FileinfoReq *)req};
    int rc = rsm_read(sl->s->r, true, fileinfo_read_fn, &f);
    if (rc == 0) {
        Synod__V1__AttrRep *a = (Synod__V1__AttrRep *)ns_reply_unpack(&f.attr);
        Synod__V1__ChunkLocRep *l = (Synod__V1__ChunkLocRep *)ns_reply_unpack(&f.locs);
        Synod__V1__FileinfoRep rep = SYNOD__V1__FILEINFO_REP__INIT;
        rep.attr = a->attr;
        if (l) {
            rep.chunks = l->chunks;
            rep.n_chunks = l->n_chunks;
        }
        rpc_reply(call, &rep.base);
        synod__v1__attr_rep__free_unpacked(a, NULL);
        if (l)
            synod__v1__chunk_loc_rep__free_unpacked(l, NULL);
    } else {
        fail(sl->s, call, rc);
    }
    ns_reply_release(&f.attr);
    ns_reply_release(&f.locs);
    return 0;
}

/* Chunkserver ids start at 1. A drain that cannot finish (too few UP chunkservers for some goal) does not
 * lose data: no copy is ever dropped below its goal in UP copies, so it stalls with chunks_left > 0. */
static int check_decommission(struct slot *sl, const ProtobufCMessage *req)
{
    UNUSED(sl);
    const Synod__V1__DecommissionReq *r = (const Synod__V1__DecommissionReq *)req;
    return r->chunkserver ? 0 : -EINVAL;
}

static void propose(struct nssvc *s, struct rsm *r, Synod__V1__NsCommand__CmdCase cc,
                    const ProtobufCMessage *m, int *inflight, uint32_t cs);

struct rebalance_read {
    const Synod__V1__RebalanceReq *req;
    struct ns_move *moves;
    size_t n;
    uint32_t mean_pct;
};

static int rebalance_read_fn(void *arg, struct kv_txn *txn)
{
    struct rebalance_read *rb = arg;
    uint32_t thr = rb->req->threshold_pct ? rb->req->threshold_pct : 10;
    size_t max = rb->req->max_moves ? MIN(rb->req->max_moves, 4096u) : 64;
    rb->n = ns_plan_rebalance(txn, clk_real_ns(), REPL_STALE_NS, thr, max, &rb->moves, &rb->mean_pct);
    return 0;
}

/* Rebalance: plan on the leader's state under its lease; unless dry_run, start each move as a ReplStart
 * (drop_after = from) through the log. The reply does not wait for the copies: progress shows in status. */
static int handle_rebalance(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    struct nssvc *s = sl->s;
    struct rebalance_read rb = {.req = (const Synod__V1__RebalanceReq *)req};
    if (rb.req->threshold_pct > 100)
        return -EINVAL;
    int rc = rsm_read(s->r, false, rebalance_read_fn, &rb);
    if (rc) {
        fail(s, call, rc);
        return 0;
    }
    Synod__V1__RebalanceRep rep = SYNOD__V1__REBALANCE_REP__INIT;
    Synod__V1__Move *mv = xcalloc(rb.n + 1, sizeof(*mv));
    Synod__V1__Move **mp = xcalloc(rb.n + 1, sizeof(*mp));
    for (size_t i = 0; i < rb.n; i++) {
        synod__v1__move__init(&mv[i]);
        mv[i].chunk_id = rb.moves[i].chunk_id;
        mv[i].from = rb.moves[i].from;
        mv[i].to = rb.moves[i].to;
        mv[i].bytes = rb.moves[i].bytes;
        mp[i] = &mv[i];
        if (!rb.req->dry_run) {
            Synod__V1__ReplStart rs = SYNOD__V1__REPL_START__INIT;
            rs.chunk_id = rb.moves[i].chunk_id;
            rs.version = rb.moves[i].version;
            rs.src = rb.moves[i].from;
            rs.dst = rb.moves[i].to;
            rs.drop_after = rb.moves[i].from;
            propose(s, s->r, SYNOD__V1__NS_COMMAND__CMD_REPL_START, &rs.base, NULL, 0);
        }
    }
    rep.moves = mp;
    rep.n_moves = rb.n;
    rep.started = !rb.req->dry_run && rb.n > 0;
    rep.mean_pct = rb.mean_pct;
    rpc_reply(call, &rep.base);
    free(mv);
    free(mp);
    free(rb.moves);
    return 0;
}

#define FSCK_MAX_INODES   (8u << 20) /* about 400 MB of scan state; past it fsck reports `truncated` */
#define FSCK_MAX_PROBLEMS 1000

struct fsck_job {
    struct nssvc *s;
    struct rpc_call *call;
    struct ns_fsck f;
    int rc;
};

static int fsck_read_fn(void *arg, struct kv_txn *txn)
{
    struct fsck_job *j = arg;
    return ns_fsck_run(kv_txn_db(txn), clk_real_ns(), FSCK_MAX_INODES, FSCK_MAX_PROBLEMS, &j->f);
}

static void fsck_finish(struct fsck_job *j)
{
    rpc_reply(j->call, &j->f.rep.base);
    ns_fsck_release(&j->f);
    free(j);
}

static void fsck_repair_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    UNUSED(zxid);
    struct fsck_job *j = arg;
    Synod__V1__FsckRepairRep *m = err ? NULL : synod__v1__fsck_repair_rep__unpack(NULL, len, reply);
    if (!m) {
        fail(j->s, j->call, err ? err : -EIO);
        ns_fsck_release(&j->f);
        free(j);
        return;
    }
    /* the reply counts the fixes that still fitted at apply, not which: itemise only when all did */
    j->f.rep.repaired = m->applied;
    for (size_t i = 0; m->applied == j->f.repair.n_fixes && i < j->f.repair.n_fixes; i++)
        j->f.rep.problems[j->f.fix_problem[i]]->repaired = true;
    synod__v1__fsck_repair_rep__free_unpacked(m, NULL);
    fsck_finish(j);
}

/* The scan, then with repair one FsckRepair through the log; answers the call. On the job's own thread. */
static void fsck_run(struct fsck_job *j, bool repair)
{
    struct nssvc *s = j->s;
    int rc = rsm_read(s->r, false, fsck_read_fn, j);
    if (rc) {
        fail(s, j->call, rc);
        free(j);
        return;
    }
    if (!repair || j->f.repair.n_fixes == 0) {
        fsck_finish(j);
        return;
    }
    uint8_t *buf;
    size_t len;
    rc = nssvc_cmd_pack(SYNOD__V1__NS_COMMAND__CMD_FSCK_REPAIR, &j->f.repair.base, clk_real_ns(), 0, &buf,
                        &len);
    if (rc) {
        fail(s, j->call, rc);
        ns_fsck_release(&j->f);
        free(j);
        return;
    }
    rsm_submit(s->r, 0, 0, 0, buf, len, fsck_repair_done, j); /* answered from fsck_repair_done */
    free(buf);
}

struct fsck_start {
    struct fsck_job *j;
    bool repair;
};

static void *fsck_main(void *arg)
{
    struct fsck_start st = *(struct fsck_start *)arg;
    free(arg);
    struct nssvc *s = st.j->s;
    fsck_run(st.j, st.repair);
    pthread_mutex_lock(&s->jobs_mu);
    s->jobs--;
    pthread_cond_broadcast(&s->jobs_cv);
    pthread_mutex_unlock(&s->jobs_mu);
    return NULL;
}

/* Fsck: a consistent scan on the leader (its own LevelDB snapshot: the runtime thread keeps applying), then,
 * with repair, one FsckRepair command through the log whose fixes re-validate at apply. Answered when the
 * repair is applied. The scan is O(records) (seconds on a large namespace), so it runs on a thread of its
 * own: the metaserver has one RPC thread, which must not stop serving meanwhile. */
static int handle_fsck(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    struct nssvc *s = sl->s;
    const Synod__V1__FsckReq *r = (const Synod__V1__FsckReq *)req;
    struct fsck_job *j = xcalloc(1, sizeof(*j));
    j->s = s;
    j->call = call;
    struct fsck_start *st = xmalloc(sizeof(*st));
    *st = (struct fsck_start){j, r->repair};
    pthread_mutex_lock(&s->jobs_mu);
    s->jobs++;
    pthread_mutex_unlock(&s->jobs_mu);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int e = pthread_create(&t, &a, fsck_main, st);
    pthread_attr_destroy(&a);
    if (e) {
        LOG_WARN("fsck: cannot start a thread (%s): scanning on the RPC thread", strerror(e));
        fsck_main(st);
    }
    return RPC_DEFERRED;
}

/* --- dispatch ---------------------------------------------------------------------------------------- */

/* --- memory opens (ns_opens.h) ------------------------------------------------------------------------ */

/* Mknod with open / Open with O_TRUNC applied: register the open before answering (inside the turn, so
 * before any later tick can judge the inode an unheld orphan). */
static void mem_open_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    struct pending *p = arg;
    if (!err) {
        uint64_t ino = p->ino;
        if (!ino) {
            Synod__V1__CreateRep *c = synod__v1__create_rep__unpack(NULL, len, reply);
            ino = c && c->attr ? c->attr->ino : 0;
            if (c)
                synod__v1__create_rep__free_unpacked(c, NULL);
        }
        if (ino)
            ns_opens_register(p->s->opens, p->session, ino, p->open_seq);
    }
    log_done(p, err, reply, len, zxid);
}

static int submit_mem_open(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req, uint64_t ino,
                           uint64_t open_seq)
{
    uint64_t session, seq;
    nssvc_req_id(req, &session, &seq);
    return handle_log(sl, call, req, mem_open_done, session, ino, open_seq);
}

/* Open without O_TRUNC: a read under the lease, registered first, so that a tick that runs between the
 * check and the answer sees it (an orphan found unheld cannot be opened: nlink 0 answers ENOENT). */
static int handle_open_mem(struct slot *sl, struct rpc_call *call, const Synod__V1__OpenReq *r)
{
    struct nssvc *s = sl->s;
    uint64_t session = r->rid ? r->rid->session : 0;
    if (!session)
        return -EINVAL;
    int rc = rsm_session_touch(s->r, session);
    if (rc) {
        fail(s, call, rc);
        return 0;
    }
    bool held;
    ns_opens_begin(s->opens, session, r->ino, r->open_seq, &held);
    Synod__V1__OpenReq req = *r; /* `held` is the leader's to say, never the client's */
    req.held = held;
    struct readop o;
    memset(&o, 0, sizeof(o));
    o.ns = s->ns;
    rc = nssvc_cmd_build(&o.cmd, sl->m->cmd_case, &req.base, clk_real_ns(), session);
    if (rc == 0)
        rc = rsm_read(s->r, false, read_fn, &o);
    ns_opens_end(s->opens, session, r->ino, rc == 0);
    if (rc == 0)
        reply_bytes(call, sl->md->output, o.rep.buf, o.rep.len);
    else
        fail(s, call, rc);
    ns_reply_release(&o.rep);
    return 0;
}

static int handle_release_mem(struct slot *sl, struct rpc_call *call, const Synod__V1__ReleaseReq *r)
{
    uint64_t session = r->rid ? r->rid->session : 0;
    if (!session || r->n_more_inos != r->n_more_seqs || r->n_more_inos > NSSVC_MAX_RELEASES)
        return -EINVAL;
    ns_opens_release(sl->s->opens, session, r->ino, r->open_seq);
    for (size_t i = 0; i < r->n_more_inos; i++)
        ns_opens_release(sl->s->opens, session, r->more_inos[i], r->more_seqs[i]);
    Synod__V1__Empty rep = SYNOD__V1__EMPTY__INIT;
    rpc_reply(call, &rep.base);
    return 0;
}

static void session_close_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    struct pending *p = arg;
    if (!err)
        ns_opens_session_drop(p->s->opens, p->session);
    log_done(p, err, reply, len, zxid);
}

/* Routes that depend on the request, not only the method; -ENOENT when the table's route applies. */
static int dispatch_special(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    switch (sl->m->cmd_case) {
    case SYNOD__V1__NS_COMMAND__CMD_OPEN: {
        const Synod__V1__OpenReq *r = (const Synod__V1__OpenReq *)req;
        ((Synod__V1__OpenReq *)r)->held = false; /* set only by handle_open_mem */
        if (!r->memory)
            return -ENOENT;
        if (r->flags & O_TRUNC)
            return submit_mem_open(sl, call, req, r->ino, r->open_seq);
        return handle_open_mem(sl, call, r);
    }
    case SYNOD__V1__NS_COMMAND__CMD_MKNOD: {
        const Synod__V1__MknodReq *r = (const Synod__V1__MknodReq *)req;
        if (!r->memory || !r->open)
            return -ENOENT;
        return submit_mem_open(sl, call, req, 0, r->open_seq);
    }
    case SYNOD__V1__NS_COMMAND__CMD_RELEASE: {
        const Synod__V1__ReleaseReq *r = (const Synod__V1__ReleaseReq *)req;
        return r->memory ? handle_release_mem(sl, call, r) : -ENOENT;
    }
    case SYNOD__V1__NS_COMMAND__CMD_SESSION_CLOSE: {
        const Synod__V1__SessionCloseReq *r = (const Synod__V1__SessionCloseReq *)req;
        return handle_log(sl, call, req, session_close_done, r->session, 0, 0);
    }
    default:
        return -ENOENT;
    }
}

static int dispatch(struct slot *sl, struct rpc_call *call, const ProtobufCMessage *req)
{
    struct nssvc *s = sl->s;
    const struct nssvc_method *m = sl->m;
    if (!m || m->route == NSSVC_UNSUPPORTED)
        return -ENOSYS;
    if (!strcmp(m->name, "Status"))
        return handle_status(sl, call, req);
    if (!strcmp(m->name, "Fileinfo"))
        return handle_fileinfo(sl, call, req);
    if (!strcmp(m->name, "Decommission")) {
        int rc = check_decommission(sl, req);
        if (rc)
            return rc;
    }
    /* everything else is served by the leader only */
    if (!rsm_is_leader(s->r)) {
        fail(s, call, -EREMOTE);
        return 0;
    }
    if (!atomic_load(&s->initialized))
        return -EAGAIN; /* a fresh cluster's root is being created */
    int rc = dispatch_special(sl, call, req);
    if (rc != -ENOENT)
        return rc;
    switch (m->route) {
    case NSSVC_LOG:
        return handle_log(sl, call, req,
                          m->cmd_case == SYNOD__V1__NS_COMMAND__CMD_CS_REGISTER ? register_done : log_done, 0,
                          0, 0);
    case NSSVC_READ:
        return handle_read(sl, call, req);
    case NSSVC_SESSION_OPEN:
        return handle_session_open(sl, call, req);
    case NSSVC_KEEPALIVE:
        return handle_keepalive(sl, call, req);
    case NSSVC_LOCAL:
        if (!strcmp(m->name, "Rebalance"))
            return handle_rebalance(sl, call, req);
        if (!strcmp(m->name, "Fsck"))
            return handle_fsck(sl, call, req);
        return handle_heartbeat(sl, call, req);
    default:
        return -ENOSYS;
    }
}

#define TRAMP(i)                                                                                             \
    static int tramp_##i(struct rpc_call *call, const ProtobufCMessage *req, void *arg)                      \
    {                                                                                                        \
        return dispatch(&((struct nssvc *)arg)->slots[i], call, req);                                        \
    }
TRAMP(0)
TRAMP(1) TRAMP(2) TRAMP(3) TRAMP(4) TRAMP(5) TRAMP(6) TRAMP(7) TRAMP(8) TRAMP(9) TRAMP(10) TRAMP(11) TRAMP(12)
    TRAMP(13) TRAMP(14) TRAMP(15) TRAMP(16) TRAMP(17) TRAMP(18) TRAMP(19) TRAMP(20) TRAMP(21) TRAMP(22)
        TRAMP(23) TRAMP(24) TRAMP(25) TRAMP(26) TRAMP(27) TRAMP(28) TRAMP(29) TRAMP(30) TRAMP(31) TRAMP(32)
            TRAMP(33) TRAMP(34) TRAMP(35) TRAMP(36) TRAMP(37) TRAMP(38)
                TRAMP(39) static const rpc_handler_fn tramps[NSSVC_MAX_SLOTS] = {
                    tramp_0,  tramp_1,  tramp_2,  tramp_3,  tramp_4,  tramp_5,  tramp_6,  tramp_7,
                    tramp_8,  tramp_9,  tramp_10, tramp_11, tramp_12, tramp_13, tramp_14, tramp_15,
                    tramp_16, tramp_17, tramp_18, tramp_19, tramp_20, tramp_21, tramp_22, tramp_23,
                    tramp_24, tramp_25, tramp_26, tramp_27, tramp_28, tramp_29, tramp_30, tramp_31,
                    tramp_32, tramp_33, tramp_34, tramp_35, tramp_36, tramp_37, tramp_38, tramp_39,
};

/* Bind every method of svc to a slot and its trampoline. */
static void bind_service(struct nssvc *s, struct rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                         const char *name, rpc_handler_fn *h, size_t hcap, size_t *next)
{
    ASSERT(svc->n_methods <= hcap && *next + svc->n_methods <= NSSVC_MAX_SLOTS);
    for (unsigned i = 0; i < svc->n_methods; i++) {
        struct slot *sl = &s->slots[*next];
        sl->s = s;
        sl->md = &svc->methods[i];
        sl->m = nssvc_method_find(name, svc->methods[i].name);
        h[i] = tramps[(*next)++];
    }
    rpc_server_add_service(srv, svc, h, s);
}

/* --- the state machine hooks -------------------------------------------------------------------------- */

static const char *const prefixes[] = {NS_KEY_PREFIX, NULL};

/* Take the file system id from the state once it has one: the RPC server refuses callers that expect another
 * from then on (rpc.h "File system id"). Runtime thread or startup. */
static void fsid_learn(struct nssvc *s, struct kv_txn *txn)
{
    if (atomic_load(&s->fsid))
        return;
    uint64_t id = ns_fsid(txn);
    if (!id)
        return;
    atomic_store(&s->fsid, id);
    rpc_server_set_fsid(s->srv, id);
    LOG_INFO("namespace: file system id %016llx", (unsigned long long)id);
}

static int sm_apply(void *arg, struct kv_txn *txn, const struct rsm_apply_ctx *ctx, const uint8_t *cmd,
                    size_t len, struct rsm_buf *reply)
{
    struct nssvc *s = arg;
    struct ns_reply rep;
    int rc = nssvc_apply_packed(s->ns, txn, ctx->time_ns, ctx->session, cmd, len, &rep);
    if (rc == 0)
        rsm_buf_append(reply, rep.buf, rep.len);
    ns_reply_release(&rep);
    if (rc == 0 && !atomic_load(&s->fsid))
        fsid_learn(s, txn);
    return rc;
}

static void sm_restored(void *arg)
{
    struct nssvc *s = arg;
    struct kv_txn *txn = kv_txn_begin(rsm_db(s->r));
    fsid_learn(s, txn);
    kv_txn_abort(txn);
}

static void sm_session_expired(void *arg, struct kv_txn *txn, const struct rsm_apply_ctx *ctx,
                               uint64_t session)
{
    struct nssvc *s = arg;
    ns_session_release(s->ns, txn, ctx->time_ns, session);
    ns_opens_session_drop(s->opens, session);
}

/* --- leader duties ----------------------------------------------------------------------------------- */

struct internal_done {
    struct nssvc *s;
    int *inflight;
    uint32_t cs; /* for ChunkserverDead */
};

static void internal_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    UNUSED(reply);
    UNUSED(len);
    UNUSED(zxid);
    struct internal_done *d = arg;
    if (d->inflight)
        (*d->inflight)--;
    if (err && err != -EREMOTE && err != -ECANCELED && err != -ESTALE && err != -ENOENT && err != -EBUSY &&
        err != -EAGAIN)
        LOG_DEBUG("namespace: internal command failed: %d", err);
    if (!err && d->cs) {
        LOG_WARN("chunkserver %u: declared dead (silent past the timeout)", d->cs);
        csmon_forget(d->s->mon, d->cs);
    }
    free(d);
}

static void propose(struct nssvc *s, struct rsm *r, Synod__V1__NsCommand__CmdCase cc,
                    const ProtobufCMessage *m, int *inflight, uint32_t cs)
{
    uint8_t *buf;
    size_t len;
    if (nssvc_cmd_pack(cc, m, clk_real_ns(), 0, &buf, &len))
        return;
    struct internal_done *d = xmalloc(sizeof(*d));
    *d = (struct internal_done){s, inflight, cs};
    if (inflight)
        (*inflight)++;
    rsm_submit(r, 0, 0, 0, buf, len, internal_done, d);
    free(buf);
}

static void init_done(void *arg, int err, const uint8_t *reply, size_t len, uint64_t zxid)
{
    UNUSED(reply);
    UNUSED(len);
    UNUSED(zxid);
    struct nssvc *s = arg;
    s->init_inflight = false;
    if (!err) {
        if (s->init_root)
            LOG_INFO("namespace: root created");
        atomic_store(&s->initialized, true);
    }
}

static void check_root(struct nssvc *s, struct rsm *r, struct kv_txn *txn)
{
    Synod__V1__GetattrReq ga = SYNOD__V1__GETATTR_REQ__INIT;
    ga.ino = NS_ROOT_INO;
    Synod__V1__NsCommand cmd = SYNOD__V1__NS_COMMAND__INIT;
    cmd.cmd_case = SYNOD__V1__NS_COMMAND__CMD_GETATTR;
    cmd.getattr = &ga;
    struct ns_reply rep;
    int rc = ns_apply(s->ns, txn, &cmd, &rep);
    ns_reply_release(&rep);
    /* SYNOD_META_TEST_OLD=1 (tests only): behave as a metaserver from before the file system id */
    const char *old = getenv("SYNOD_META_TEST_OLD");
    bool no_fsid = old && !strcmp(old, "1");
    if (rc == 0) {
        atomic_store(&s->initialized, true); /* the root exists: serve */
        if (ns_fsid(txn) || no_fsid) {
            s->fsid_settled = true;
            return;
        }
    }
    if (s->init_inflight)
        return;
    /* A fresh state, or one made before the file system id: NsInit creates the root, or only adds the id.
     * The id goes in only once every node runs a version that keeps it (rsm_min_version): an older node
     * applies NsInit's id as a no-op, and its state would lack it for good (once upgraded and leading, it
     * would refuse every client and chunkserver that names the id). Until then a fresh state gets its root
     * alone, and the id comes with a later NsInit. */
    bool with_fsid = !no_fsid && rsm_min_version(r) >= 1;
    if (rc == 0 && !with_fsid)
        return;
    Synod__V1__NsInit init = SYNOD__V1__NS_INIT__INIT;
    while (with_fsid && !init.fsid)
        if (getrandom(&init.fsid, sizeof(init.fsid), 0) != (ssize_t)sizeof(init.fsid))
            return; /* no entropy yet: the next tick tries again */
    s->init_root = rc != 0;
    init.root_mode = 0755;
    init.default_goal = s->default_goal;
    init.heartbeat_ms = s->heartbeat_ms;
    init.lease_ms = s->lease_ms;
    init.unknown_chunk_grace_ns = s->grace_ns ? s->grace_ns : -1;
    init.max_repl_per_cs = s->max_repl;
    uint8_t *buf;
    size_t len;
    if (nssvc_cmd_pack(SYNOD__V1__NS_COMMAND__CMD_INIT, &init.base, clk_real_ns(), 0, &buf, &len))
        return;
    s->init_inflight = true;
    rsm_submit(r, 0, 0, 0, buf, len, init_done, s);
    free(buf);
}

static void dead_check(struct nssvc *s, struct rsm *r, struct kv_txn *txn, uint64_t now)
{
    Synod__V1__ChunkserverRec **v;
    size_t n = ns_chunkservers(txn, &v);
    uint32_t *alive = xmalloc((n + 1) * sizeof(*alive)), *dead = xmalloc((n + 1) * sizeof(*dead));
    uint32_t purge = 0; /* a DEAD chunkserver some replica sets still list */
    size_t na = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->state != NS_CS_DEAD)
            alive[na++] = v[i]->id;
        else if (!purge && ns_cs_holds_any(txn, v[i]->id))
            purge = v[i]->id;
        synod__v1__chunkserver_rec__free_unpacked(v[i], NULL);
    }
    free(v);
    size_t nd = csmon_dead(s->mon, now, alive, na, dead);
    for (size_t i = 0; i < nd; i++) {
        Synod__V1__ChunkserverDead m = SYNOD__V1__CHUNKSERVER_DEAD__INIT;
        m.id = dead[i];
        m.max_holdings = s->dead_step;
        propose(s, r, SYNOD__V1__NS_COMMAND__CMD_CS_DEAD, &m.base, &s->dead_inflight, dead[i]);
    }
    if (!nd && purge) {
        Synod__V1__ChunkserverDead m = SYNOD__V1__CHUNKSERVER_DEAD__INIT;
        m.id = purge;
        m.max_holdings = s->dead_step;
        m.only_holdings = true;
        propose(s, r, SYNOD__V1__NS_COMMAND__CMD_CS_DEAD, &m.base, &s->dead_inflight, purge);
    }
    free(alive);
    free(dead);
}

static void repair(struct nssvc *s, struct rsm *r, struct kv_txn *txn)
{
    int64_t wall = clk_real_ns();
    if (s->repl_inflight == 0) {
        Synod__V1__ReplStart **plan;
        size_t n = ns_plan_replication(txn, wall, REPL_STALE_NS, 64, &s->repl_cur, &plan);
        for (size_t i = 0; i < n; i++) {
            propose(s, r, SYNOD__V1__NS_COMMAND__CMD_REPL_START, &plan[i]->base, &s->repl_inflight, 0);
            synod__v1__repl_start__free_unpacked(plan[i], NULL);
        }
        free(plan);
    }
    if (s->trim_inflight == 0) {
        Synod__V1__ReplicaDrop **drops;
        size_t n = ns_plan_trim(txn, wall, REPL_STALE_NS, 64, &s->trim_cur, &drops);
        for (size_t i = 0; i < n; i++) {
            propose(s, r, SYNOD__V1__NS_COMMAND__CMD_REPLICA_DROP, &drops[i]->base, &s->trim_inflight, 0);
            synod__v1__replica_drop__free_unpacked(drops[i], NULL);
        }
        free(drops);
    }
    if (s->lease_inflight == 0) {
        uint64_t *ids;
        size_t n = ns_find_expired_leases(txn, wall, 256, &ids);
        for (size_t i = 0; i < n; i++) {
            Synod__V1__LeaseExpire m = SYNOD__V1__LEASE_EXPIRE__INIT;
            m.chunk_id = ids[i];
            propose(s, r, SYNOD__V1__NS_COMMAND__CMD_LEASE_EXPIRE, &m.base, &s->lease_inflight, 0);
        }
        free(ids);
    }
}

/* Propose the purge of orphans no session holds open, once every live session has reported its opens to
 * this leader (ns_opens.h). */
static void orphan_purge(struct nssvc *s, struct rsm *r, struct kv_txn *txn, uint64_t now)
{
    /* the sessions first (memory only): while one has not reported, the orphans are not even scanned */
    size_t cap = 256, ns;
    uint64_t *ids = xmalloc(cap * sizeof(*ids));
    while ((ns = rsm_session_ids(r, ids, cap)) > cap) {
        cap = ns;
        ids = xrealloc(ids, cap * sizeof(*ids));
    }
    for (size_t i = 0; i < ns; i++) {
        if (!ns_opens_reported(s->opens, ids[i])) {
            /* normal for a keepalive period after a session opens or a leader starts; said once if long */
            if (!s->orphan_wait_since)
                s->orphan_wait_since = now;
            if (!s->orphan_wait_logged && now - s->orphan_wait_since > 30 * NS_PER_SEC) {
                LOG_WARN("namespace: no orphan purged for 30 s: session %llu has not reported its open files",
                         (unsigned long long)ids[i]);
                s->orphan_wait_logged = true;
            }
            free(ids);
            return;
        }
    }
    free(ids);
    s->orphan_wait_since = 0;
    s->orphan_wait_logged = false;
    /* from where the last round stopped: orphans still held open (temporary files) are looked at once per
     * pass, not every round, and never hide the ones behind them */
    uint64_t *inos;
    size_t n = ns_orphans(txn, s->orphan_after, ORPHAN_SCAN, &inos);
    s->orphan_after = n < ORPHAN_SCAN ? 0 : inos[n - 1];
    size_t k = 0;
    for (size_t i = 0; i < n && k < ORPHAN_PURGE_MAX; i++)
        if (!ns_opens_held(s->opens, inos[i]))
            inos[k++] = inos[i];
    if (k) {
        Synod__V1__OrphanPurge m = SYNOD__V1__ORPHAN_PURGE__INIT;
        m.n_inos = k;
        m.inos = inos;
        propose(s, r, SYNOD__V1__NS_COMMAND__CMD_ORPHAN_PURGE, &m.base, &s->orphan_inflight, 0);
    }
    free(inos);
}

static void sm_leader_tick(void *arg, struct rsm *r, uint64_t now)
{
    struct nssvc *s = arg;
    struct rsm_status st;
    rsm_get_status(r, &st);
    if (st.ballot != s->term_ballot) {
        /* a new leadership: opens registered under an earlier one may have been released elsewhere, and
         * opens made under another leader are unknown: start empty, every session reports again */
        ns_opens_reset(s->opens);
        s->term_ballot = st.ballot;
        s->last_orphan = now;
    }
    if (!s->last_tick || now - s->last_tick > 500 * NS_PER_MS) {
        /* (again) the serving leader: what a predecessor heard is unknown, so everyone gets a full grace */
        csmon_reset(s->mon);
        s->last_dead = s->last_repair = now;
    }
    s->last_tick = now;
    struct kv_txn *txn = kv_txn_begin(rsm_db(r));
    if (!atomic_load(&s->initialized) || !s->fsid_settled)
        check_root(s, r, txn);
    if (now - s->last_dead >= DEAD_CHECK_NS && s->dead_inflight == 0) {
        s->last_dead = now;
        dead_check(s, r, txn, now);
    }
    if (now - s->last_repair >= REPAIR_EVERY_NS) {
        s->last_repair = now;
        repair(s, r, txn);
    }
    if (now - s->last_orphan >= ORPHAN_EVERY_NS && s->orphan_inflight == 0) {
        s->last_orphan = now;
        orphan_purge(s, r, txn, now);
    }
    kv_txn_abort(txn);
}

static const struct rsm_sm nssm = {
    .name = "namespace",
    .prefixes = prefixes,
    .apply = sm_apply,
    .session_expired = sm_session_expired,
    .restored = sm_restored,
    .leader_tick = sm_leader_tick,
};

/* --- the plugin -------------------------------------------------------------------------------------- */

static int plugin_create(const struct config *cfg, struct rpc_server *srv, const struct rsm_sm **sm,
                         void **arg)
{
    struct nssvc *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->jobs_mu, NULL);
    pthread_cond_init(&s->jobs_cv, NULL);
    s->ns = ns_new();
    s->opens = ns_opens_new();
    s->srv = srv;
    rpc_server_set_fsid(srv, 0); /* a member: until the state has its id, callers that name one are refused */
    uint64_t timeout_ms = config_get_duration_ms(cfg, "namespace.cs_timeout");
    s->mon = csmon_new(timeout_ms * NS_PER_MS, 30 * NS_PER_SEC);
    int64_t goal = config_get_int(cfg, "namespace.default_goal");
    int64_t repl = config_get_int(cfg, "namespace.max_repl_per_cs");
    int64_t step = config_get_int(cfg, "namespace.cs_dead_step");
    if (goal < 1 || goal > NS_MAX_GOAL || repl < 1 || repl > NS_MAX_REPL_LIMIT || timeout_ms == 0 ||
        step < 1 || step > 1000000) {
        LOG_ERR(
            "namespace: bad config: default_goal %lld (1..%d), max_repl_per_cs %lld (1..1000), cs_timeout "
            "%llu ms, cs_dead_step %lld (1..1000000)",
            (long long)goal, NS_MAX_GOAL, (long long)repl, (unsigned long long)timeout_ms, (long long)step);
        csmon_free(s->mon);
        ns_opens_free(s->opens);
        ns_free(s->ns);
        free(s);
        return -EINVAL;
    }
    s->default_goal = (uint32_t)goal;
    s->max_repl = (uint32_t)repl;
    s->dead_step = (uint32_t)step;
    s->lease_ms = (uint32_t)config_get_duration_ms(cfg, "namespace.chunk_lease");
    s->heartbeat_ms = (uint32_t)config_get_duration_ms(cfg, "namespace.cs_heartbeat");
    s->grace_ns = (int64_t)config_get_duration_ms(cfg, "namespace.unknown_chunk_grace") * (int64_t)NS_PER_MS;
    size_t next = 0;
    bind_service(s, srv, &synod__v1__meta__descriptor, "Meta", s->meta_h, ARRAY_SIZE(s->meta_h), &next);
    bind_service(s, srv, &synod__v1__chunk_control__descriptor, "ChunkControl", s->cc_h, ARRAY_SIZE(s->cc_h),
                 &next);
    bind_service(s, srv, &synod__v1__admin__descriptor, "Admin", s->admin_h, ARRAY_SIZE(s->admin_h), &next);
    *sm = &nssm;
    *arg = s;
    return 0;
}

static void plugin_attach(void *arg, struct rsm *r)
{
    struct nssvc *s = arg;
    s->r = r;
    struct kv_txn *txn = kv_txn_begin(rsm_db(r));
    fsid_learn(s, txn);
    kv_txn_abort(txn);
}

/* After the RPC server is gone, before the runtime: wait for the fsck scans still running. */
static void plugin_detach(void *arg)
{
    struct nssvc *s = arg;
    pthread_mutex_lock(&s->jobs_mu);
    while (s->jobs)
        pthread_cond_wait(&s->jobs_cv, &s->jobs_mu);
    pthread_mutex_unlock(&s->jobs_mu);
}

static void plugin_destroy(void *arg)
{
    struct nssvc *s = arg;
    if (!s)
        return;
    pthread_cond_destroy(&s->jobs_cv);
    pthread_mutex_destroy(&s->jobs_mu);
    csmon_free(s->mon);
    ns_opens_free(s->opens);
    ns_free(s->ns);
    free(s);
}

const struct meta_plugin nssm_plugin = {
    .name = "namespace",
    .keys = nssvc_keys,
    .create = plugin_create,
    .attach = plugin_attach,
    .detach = plugin_detach,
    .destroy = plugin_destroy,
};
