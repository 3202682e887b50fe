/* rsm_net.c - the gRPC transport of the replicated state machine runtime: the Paxos service.
 *
 * Deliver(PaxosBatch): the handler validates the batch (node ids, message types, absurd slots and ballots,
 * sizes), converts it to struct paxos_msg (the ONLY place that maps proto <-> core messages, both
 * directions) and queues it with rsm_enqueue_run: when no loop turn is running, the handler's worker runs one
 * at once (fsync and answer included) instead of waking the runtime thread. Replies travel as messages in the
 * other direction. A turn collects its messages per peer and sends each peer one Deliver (rsm_net_flush) with
 * rpc_call_async and reply_inline set: a dead peer fails in milliseconds, a stopped one holds at most
 * RSM_MAX_INFLIGHT calls, after which batches to it are dropped (Paxos tolerates loss: the core retransmits
 * and lagging replicas catch up). No turn waits for a peer.
 *
 * Inline answers. A Deliver with reply_inline is deferred: its input carries the call, and after the runtime
 * has fed it, the call is held for that peer (rsm_net_hold); the next flush to that peer in the same loop
 * turn (typically the ACCEPTED / HEARTBEAT_ACK of send_after, i.e. after the fsync) goes out as the call's
 * PaxosAck instead of a Deliver of our own, and every call still held at the end of the turn is acked empty
 * (rsm_net_release). The sender's completion (dispatcher thread) queues the PaxosAck's messages like a
 * Deliver's, and runs the turn itself when none is running (on the leader: learn the commit, apply, answer
 * the clients, without a hop to the runtime thread). That saves a whole RPC per round trip (the follower's
 * call and the leader's worker hop). A sender without reply_inline (an older node) is acked at once and
 * answered with Deliver calls.
 *
 * Held COMMITs. A COMMIT (no entries) is copied and held up to RSM_COMMIT_DELAY_US: when an ACCEPT, HEARTBEAT
 * or COMMIT of the same ballot with at least that commit point goes to the peer first, it is dropped (every
 * message carries the commit point); otherwise rsm_net_commits sends it when due (a turn on an RPC thread
 * does not wake the runtime thread for it: then it goes out at the next tick, within 5 ms). At one request in
 * flight the next ACCEPT follows within a round trip, so followers run one loop turn per write instead of
 * two.
 *
 * SnapshotChunk serves the current local snapshot (a LevelDB snapshot shared by reference count) in
 * pieces of ~1 MiB, pulled by the receiver; rsm_net_snap_request is the receiving side's request.
 */
#include "metaserver/rsm_internal.h"

#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "paxos.pb-c.h"

#include <errno.h>
#include <string.h>

#define RSM_MAX_INFLIGHT       128
#define RSM_MAX_DELIVER_BYTES  (24u << 20) /* per Deliver call or reply (RPC_MAX_MESSAGE is 64 MiB) */
#define RSM_DELIVER_TIMEOUT_MS 1000
#define RSM_SNAP_TIMEOUT_MS    5000
#define RSM_MAX_BATCH_MSGS     65536
#define RSM_MAX_MSG_ENTRIES    (1u << 20)
#define RSM_COMMIT_DELAY_US    2000

/* ---- proto -> core ---- */

void rsm_msgs_free(struct paxos_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < msgs[i].n_entries; j++)
            paxos_val_unref(msgs[i].entries[j].val);
        free(msgs[i].entries);
    }
    free(msgs);
}

static bool ballot_sane(uint64_t b)
{
    return PAXOS_BALLOT_ROUND(b) < RSM_MAX_ROUND;
}

/* Convert one message; -EINVAL when a field is out of range (the core validates protocol semantics). */
static int msg_from_proto(const struct rsm *r, const Synod__V1__PaxosMsg *pm, uint32_t from,
                          struct paxos_msg *m, size_t *bytes)
{
    memset(m, 0, sizeof(*m));
    if (pm->type < PAXOS_MSG_PREPARE || pm->type > PAXOS_MSG_SNAPSHOT || pm->from != from ||
        pm->to != r->cfg.self || !ballot_sane(pm->ballot) || !ballot_sane(pm->promised) ||
        pm->first_slot >= RSM_MAX_SLOT || pm->commit >= RSM_MAX_SLOT || pm->log_start >= RSM_MAX_SLOT ||
        pm->n_entries > RSM_MAX_MSG_ENTRIES)
        return -EINVAL;
    m->type = (enum paxos_msg_type)pm->type;
    m->from = pm->from;
    m->to = pm->to;
    m->ballot = pm->ballot;
    m->ok = pm->ok;
    m->promised = pm->promised;
    m->first_slot = pm->first_slot;
    m->commit = pm->commit;
    m->log_start = pm->log_start;
    m->seq = pm->seq;
    m->lease_ms = pm->lease_ms;
    m->max_slots = pm->max_slots;
    if (!pm->n_entries)
        return 0;
    m->entries = xcalloc(pm->n_entries, sizeof(*m->entries));
    for (size_t i = 0; i < pm->n_entries; i++) {
        const Synod__V1__PaxosSlot *s = pm->entries[i];
        if (s->slot == 0 || s->slot >= RSM_MAX_SLOT || !ballot_sane(s->ballot) ||
            (s->value && (s->value->kind > PAXOS_VAL_CONFIG || s->value->payload.len > UINT32_MAX))) {
            m->n_entries = i;
            return -EINVAL;
        }
        struct paxos_entry *e = &m->entries[i];
        e->slot = s->slot;
        e->ballot = s->ballot;
        e->chosen = s->chosen;
        if (s->value) {
            e->val = paxos_val_new(s->value->kind, s->value->zxid, s->value->payload.data,
                                   (uint32_t)s->value->payload.len);
            *bytes += s->value->payload.len;
        }
        m->n_entries = i + 1;
        *bytes += sizeof(*e);
    }
    return 0;
}

/* proto messages -> a queued input; -EINVAL when one is malformed (nothing queued). `call`: see rsm_input. */
static int queue_msgs(struct rsm *r, Synod__V1__PaxosMsg *const *msgs, size_t n_msgs, uint32_t from,
                      struct rpc_call *call)
{
    struct rsm_input *in = xcalloc(1, sizeof(*in));
    in->kind = RSM_IN_MSGS;
    in->from = from;
    in->msgs = xcalloc(n_msgs ? n_msgs : 1, sizeof(*in->msgs));
    for (size_t i = 0; i < n_msgs; i++) {
        in->bytes += sizeof(struct paxos_msg);
        if (msg_from_proto(r, msgs[i], from, &in->msgs[i], &in->bytes) != 0) {
            LOG_DEBUG("paxos from node %u: malformed message %zu: batch dropped", from, i);
            rsm_msgs_free(in->msgs, i + 1);
            free(in);
            return -EINVAL;
        }
        in->n_msgs = i + 1;
    }
    in->call = call;
    if (!rsm_enqueue_run(r, in)) {
        in->call = NULL;
        rsm_msgs_free(in->msgs, in->n_msgs);
        free(in);
        if (call)
            rsm_net_ack(call);
    }
    return 0;
}

void rsm_net_ack(struct rpc_call *call)
{
    Synod__V1__PaxosAck ack = SYNOD__V1__PAXOS_ACK__INIT;
    rpc_reply(call, &ack.base);
}

/* A batch or snapshot request of another cluster (cluster id not ours): logged at most every 10 s per
 * claimed node id. */
static void log_foreign(struct rsm *r, uint32_t from, const char *peer, const char *what, uint64_t theirs)
{
    uint64_t now = clk_mono_ns();
    _Atomic uint64_t *last = &r->peers[from < r->cfg.n_nodes ? from : 0].foreign_log_ns;
    uint64_t prev = atomic_load(last);
    if (prev && now - prev < 10 * NS_PER_SEC)
        return;
    if (!atomic_compare_exchange_strong(last, &prev, now))
        return;
    LOG_WARN(
        "paxos: refused %s from %s claiming node %u: it belongs to another cluster (cluster id %016llx, ours "
        "%016llx): a node of another cluster on a peer's address, or a different peers list, observers or "
        "cluster_token in its config",
        what, peer, from, (unsigned long long)theirs, (unsigned long long)r->cluster_id);
}

static int deliver_handler(struct rpc_call *call, const ProtobufCMessage *req, void *arg)
{
    struct rsm *r = arg;
    const Synod__V1__PaxosBatch *b = (const Synod__V1__PaxosBatch *)req;
    if (b->from >= r->cfg.n_nodes || b->from == r->cfg.self || b->n_msgs > RSM_MAX_BATCH_MSGS) {
        LOG_DEBUG("paxos deliver from %s: bad batch (from %u, %zu msgs): dropped", rpc_call_peer(call),
                  b->from, b->n_msgs);
        return -EINVAL;
    }
    if (b->cluster != r->cluster_id) {
        log_foreign(r, b->from, rpc_call_peer(call), "a batch", b->cluster);
        rpc_fail(call, -EPERM, "another cluster: its cluster id differs from this node's");
        return 0;
    }
    atomic_store(&r->peers[b->from].version, b->version);
    if (b->n_msgs && b->reply_inline) {
        /* The runtime answers after its turn (the answers, e.g. ACCEPTED, only after their fsync). The
         * request (and the messages' proto) is gone once the call is answered: queue_msgs copies. */
        int rc = queue_msgs(r, b->msgs, b->n_msgs, b->from, call);
        return rc ? rc : RPC_DEFERRED;
    }
    if (b->n_msgs && queue_msgs(r, b->msgs, b->n_msgs, b->from, NULL) != 0)
        return -EINVAL;
    rsm_net_ack(call);
    return 0;
}

/* ---- core -> proto ---- */

void rsm_net_queue(struct rsm *r, struct paxos_msg *m)
{
    if (m->to >= r->cfg.n_nodes || m->to == r->cfg.self)
        return;
    struct rsm_peer *p = &r->peers[m->to];
    if (m->type == PAXOS_MSG_COMMIT && !m->n_entries) {
        if (!p->commit_held)
            p->commit_due_us = clk_mono_ns() / 1000 + RSM_COMMIT_DELAY_US;
        p->commit = *m;
        p->commit_held = true;
        return;
    }
    if (p->n_out == p->cap_out) {
        p->cap_out = p->cap_out ? p->cap_out * 2 : 16;
        p->out = xrealloc(p->out, p->cap_out * sizeof(*p->out));
    }
    p->out[p->n_out++] = m;
}

/* A Deliver completed (dispatcher thread): the peer's answers may ride its PaxosAck. */
static void deliver_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    struct rsm_peer *p = arg;
    if (err && !p->unreachable)
        LOG_INFO("paxos: node %u (%s) unreachable: %s", p->id, p->addr,
                 st && st->detail[0] ? st->detail : strerror(-err));
    else if (!err && p->unreachable)
        LOG_INFO("paxos: node %u (%s) reachable again", p->id, p->addr);
    p->unreachable = err != 0;
    const Synod__V1__PaxosAck *a = (const Synod__V1__PaxosAck *)reply;
    if (a && a->n_msgs && a->cluster != p->r->cluster_id) {
        log_foreign(p->r, p->id, p->addr, "the answers of a batch", a->cluster);
    } else if (a && a->n_msgs) {
        atomic_store(&p->version, a->version);
        if (a->from != p->id || a->n_msgs > RSM_MAX_BATCH_MSGS)
            LOG_DEBUG("paxos ack from node %u: bad batch (from %u, %zu msgs): dropped", p->id, a->from,
                      a->n_msgs);
        else
            queue_msgs(p->r, a->msgs, a->n_msgs, p->id, NULL);
    }
    rpc_message_free(reply);
    atomic_fetch_sub(&p->inflight, 1);
}

void rsm_net_hold(struct rsm *r, uint32_t from, struct rpc_call *call)
{
    struct rsm_peer *p = &r->peers[from];
    if (p->held)
        rsm_net_ack(p->held);
    p->held = call;
}

void rsm_net_release(struct rsm *r)
{
    for (uint32_t i = 0; i < r->cfg.n_nodes; i++) {
        if (r->peers[i].held) {
            rsm_net_ack(r->peers[i].held);
            r->peers[i].held = NULL;
        }
    }
}

uint64_t rsm_net_commits(struct rsm *r, uint64_t now_us)
{
    uint64_t next = UINT64_MAX;
    for (uint32_t i = 0; i < r->cfg.n_nodes; i++) {
        struct rsm_peer *p = &r->peers[i];
        if (!p->commit_held)
            continue;
        if (now_us < p->commit_due_us) {
            next = MIN(next, p->commit_due_us);
            continue;
        }
        p->commit_held = false;
        if (p->n_out == p->cap_out) {
            p->cap_out = p->cap_out ? p->cap_out * 2 : 16;
            p->out = xrealloc(p->out, p->cap_out * sizeof(*p->out));
        }
        p->out[p->n_out++] = &p->commit;
    }
    rsm_net_flush(r);
    return next;
}

/* Send msgs[0..n) to p as one PaxosAck (the reply of its held Deliver) or one Deliver call. */
static void send_group(struct rsm *r, struct rsm_peer *p, struct paxos_msg *const *msgs, size_t n)
{
    size_t n_ent = 0;
    if (!p->held && atomic_load(&p->inflight) >= RSM_MAX_INFLIGHT) {
        LOG_DEBUG("paxos: peer %s has %d calls in flight: batch of %zu messages dropped", p->addr,
                  RSM_MAX_INFLIGHT, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        n_ent += msgs[i]->n_entries;
    Synod__V1__PaxosMsg *pm = xcalloc(n, sizeof(*pm));
    Synod__V1__PaxosMsg **pmp = xcalloc(n, sizeof(*pmp));
    Synod__V1__PaxosSlot *ps = xcalloc(n_ent ? n_ent : 1, sizeof(*ps));
    Synod__V1__PaxosSlot **psp = xcalloc(n_ent ? n_ent : 1, sizeof(*psp));
    Synod__V1__PaxosValue *pv = xcalloc(n_ent ? n_ent : 1, sizeof(*pv));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct paxos_msg *m = msgs[i];
        synod__v1__paxos_msg__init(&pm[i]);
        pmp[i] = &pm[i];
        pm[i].type = m->type;
        pm[i].from = m->from;
        pm[i].to = m->to;
        pm[i].ballot = m->ballot;
        pm[i].ok = m->ok;
        pm[i].promised = m->promised;
        pm[i].first_slot = m->first_slot;
        pm[i].commit = m->commit;
        pm[i].log_start = m->log_start;
        pm[i].seq = m->seq;
        pm[i].lease_ms = m->lease_ms;
        pm[i].max_slots = m->max_slots;
        pm[i].n_entries = m->n_entries;
        pm[i].entries = &psp[k];
        for (size_t j = 0; j < m->n_entries; j++, k++) {
            const struct paxos_entry *e = &m->entries[j];
            synod__v1__paxos_slot__init(&ps[k]);
            psp[k] = &ps[k];
            ps[k].slot = e->slot;
            ps[k].ballot = e->ballot;
            ps[k].chosen = e->chosen;
            if (e->val) {
                synod__v1__paxos_value__init(&pv[k]);
                pv[k].kind = e->val->kind;
                pv[k].zxid = e->val->zxid;
                pv[k].payload.data = e->val->data;
                pv[k].payload.len = e->val->len;
                ps[k].value = &pv[k];
            }
        }
    }
    if (p->held) { /* in the reply of the peer's own Deliver: no call of ours, no dispatcher hop there */
        Synod__V1__PaxosAck a = SYNOD__V1__PAXOS_ACK__INIT;
        a.from = r->cfg.self;
        a.cluster = r->cluster_id;
        a.version = r->version;
        a.n_msgs = n;
        a.msgs = pmp;
        rpc_reply(p->held, &a.base);
        p->held = NULL;
    } else {
        Synod__V1__PaxosBatch b = SYNOD__V1__PAXOS_BATCH__INIT;
        b.from = r->cfg.self;
        b.cluster = r->cluster_id;
        b.version = r->version;
        b.n_msgs = n;
        b.msgs = pmp;
        b.reply_inline = true;
        atomic_fetch_add(&p->inflight, 1);
        rpc_call_async(p->ch, &synod__v1__paxos__descriptor, "Deliver", &b.base, NULL, RSM_DELIVER_TIMEOUT_MS,
                       deliver_done, p);
    }
    free(pm);
    free(pmp);
    free(ps);
    free(psp);
    free(pv);
}

/* Wire bytes of a message, roughly (values plus per-entry and per-message overhead). */
static size_t msg_bytes(const struct paxos_msg *m)
{
    size_t b = 64;
    for (size_t j = 0; j < m->n_entries; j++)
        b += 48 + (m->entries[j].val ? m->entries[j].val->len : 0);
    return b;
}

/* A turn's messages to p, in groups of at most RSM_MAX_DELIVER_BYTES (one message alone may pass it: the
 * core bounds each to about PAXOS_MAX_MSG_BYTES): the first answers p's held Deliver if there is one, the
 * others go as Deliver calls. One encoding of everything overran the transport's 64 MiB limit, or memory
 * (a PROMISE per PREPARE of a candidate far behind, each with the whole log). */
static void flush_peer(struct rsm *r, struct rsm_peer *p)
{
    size_t n = p->n_out;
    p->n_out = 0;
    for (size_t i = 0; i < n && p->commit_held; i++) { /* a message that carries the held commit point */
        const struct paxos_msg *m = p->out[i];
        if ((m->type == PAXOS_MSG_ACCEPT || m->type == PAXOS_MSG_HEARTBEAT || m->type == PAXOS_MSG_COMMIT) &&
            m->ballot == p->commit.ballot && m->commit >= p->commit.commit)
            p->commit_held = false;
    }
    size_t i = 0, bytes = 0;
    for (size_t j = 0; j < n; j++) { /* each message's size once: [i, j) is the group being filled */
        size_t b = msg_bytes(p->out[j]);
        if (j > i && bytes + b > RSM_MAX_DELIVER_BYTES) {
            send_group(r, p, p->out + i, j - i);
            i = j;
            bytes = 0;
        }
        bytes += b;
    }
    if (i < n)
        send_group(r, p, p->out + i, n - i);
}

void rsm_net_flush(struct rsm *r)
{
    for (uint32_t i = 0; i < r->cfg.n_nodes; i++)
        if (r->peers[i].n_out)
            flush_peer(r, &r->peers[i]);
}

/* ---- snapshots ---- */

static int snapshot_handler(struct rpc_call *call, const ProtobufCMessage *req, void *arg)
{
    struct rsm *r = arg;
    const Synod__V1__SnapshotReq *q = (const Synod__V1__SnapshotReq *)req;
    if (q->cluster != r->cluster_id) {
        log_foreign(r, q->from, rpc_call_peer(call), "a snapshot request", q->cluster);
        return -EPERM;
    }
    struct rsm_snap *s = rsm_snap_get(r);
    if (!s)
        return -EAGAIN;
    if (q->snapshot_id && q->snapshot_id != s->index) {
        rsm_snap_put(r, s);
        return -ESTALE;
    }
    uint8_t *data;
    size_t len, lklen;
    uint32_t count;
    bool last;
    char *lk;
    int rc = rsm_store_snap_read(r, s, q->after_key.data, q->after_key.len, r->snapshot_chunk, &data, &len,
                                 &count, &last, &lk, &lklen);
    if (rc == 0) {
        Synod__V1__SnapshotRep rep = SYNOD__V1__SNAPSHOT_REP__INIT;
        rep.snapshot_id = s->index;
        rep.cluster = r->cluster_id;
        rep.applied_index = s->index;
        rep.offset = q->offset;
        rep.last = last;
        rep.count = count;
        rep.last_key.data = (uint8_t *)lk;
        rep.last_key.len = lklen;
        rep.data.data = data;
        rep.data.len = len;
        rpc_reply(call, &rep.base);
        free(data);
        free(lk);
    }
    rsm_snap_put(r, s);
    return rc;
}

static void snap_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    UNUSED(st);
    struct rsm *r = arg;
    if (reply && ((const Synod__V1__SnapshotRep *)reply)->cluster != r->cluster_id) {
        log_foreign(r, 0, "a snapshot server", "a snapshot piece",
                    ((const Synod__V1__SnapshotRep *)reply)->cluster);
        rpc_message_free(reply);
        reply = NULL;
        err = -EPERM;
    }
    struct rsm_input *in = xcalloc(1, sizeof(*in));
    in->kind = RSM_IN_SNAP;
    in->err = err;
    in->snap_rep = reply;
    if (!rsm_enqueue(r, in)) {
        rpc_message_free(reply);
        free(in);
    }
    atomic_fetch_sub(&r->snap_inflight, 1);
}

void rsm_net_snap_request(struct rsm *r, uint32_t from, uint64_t snapshot_id, const void *after, size_t alen)
{
    Synod__V1__SnapshotReq q = SYNOD__V1__SNAPSHOT_REQ__INIT;
    q.from = r->cfg.self;
    q.cluster = r->cluster_id;
    q.snapshot_id = snapshot_id;
    q.after_key.data = (uint8_t *)after;
    q.after_key.len = alen;
    atomic_fetch_add(&r->snap_inflight, 1);
    rpc_call_async(r->peers[from].ch, &synod__v1__paxos__descriptor, "SnapshotChunk", &q.base, NULL,
                   RSM_SNAP_TIMEOUT_MS, snap_done, r);
}

static const rpc_handler_fn paxos_handlers[] = {deliver_handler, snapshot_handler};

void rsm_net_register(struct rsm *r, struct rpc_server *srv)
{
    ASSERT(synod__v1__paxos__descriptor.n_methods == ARRAY_SIZE(paxos_handlers));
    ASSERT(strcmp(synod__v1__paxos__descriptor.methods[0].name, "Deliver") == 0);
    rpc_server_add_service(srv, &synod__v1__paxos__descriptor, paxos_handlers, r);
}
