/* synodctl.c - the SynodFS admin tool: cluster status, replication goals, chunkserver decommission,
 * rebalance and fsck, over the metaservers' Admin service.
 *
 *   synodctl [-m METASERVERS] [--json] [-t MS] COMMAND ...
 *
 * Status asks EVERY configured metaserver (each answers for itself: role, zxid, applied index), so a
 * metaserver that is down or partitioned shows as unreachable; the cluster figures (chunkservers, counts)
 * come from the leader's answer when it answered (its heartbeat figures are the freshest), else from any
 * replica's own state. Every other command is served by the leader only: a follower redirects with
 * "leader=host:port", which is followed, and "no valid lease yet" (EAGAIN) is retried for a few seconds.
 * Paths are namespace paths ("/dir/file"), resolved by the leader as root.
 *
 * Exit status: 0 success; 1 no metaserver answered or the command failed; 2 usage; 3 status found no
 * leader (or fsck found problems it did not repair).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.pb-c.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"

static const char *metas;
static bool json;
static int64_t timeout_ms = 2000;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: synodctl [-m|--metaservers host:port[,host:port...]] [--json] [-t|--timeout MS] COMMAND\n"
            "  -m, --metaservers  metaservers to ask (default: $SYNOD_METASERVERS, else 127.0.0.1:7001)\n"
            "  --json             one JSON object instead of tables (status, rebalance, fsck, repl-limit)\n"
            "  -t, --timeout      per-call deadline in ms (default 2000; fsck waits at least 120 s)\n"
            "commands:\n"
            "  status                         every metaserver (role, zxid, applied, reachable), chunkservers\n"
            "                                 (state, usage, chunks, copies left), counts and replication health;\n"
            "                                 exits 3 when no metaserver leads\n"
            "  goal get PATH                  the replication goal of PATH\n"
            "  goal set [-r] N PATH           set it (-r: the whole subtree); the leader then copies or trims\n"
            "  decommission [--cancel] [--wait SECS] ID\n"
            "                                 drain chunkserver ID (reads still served, no new chunks, copies\n"
            "                                 moved away); prints state and chunks_left; --wait until 0\n"
            "  rebalance [--dry-run] [--threshold PCT] [--max-moves N]\n"
            "                                 move copies from chunkservers above mean usage + PCT (default 10)\n"
            "                                 to ones below it, copy then drop; --dry-run only lists them\n"
            "  fsck [--repair]                check namespace and chunk table; --repair fixes what is safe\n"
            "  repl-limit [N]                 copies in flight per chunkserver (re-replication, drain, rebalance);\n"
            "                                 with N (1..1000) set it\n");
}

/* --- calls ------------------------------------------------------------------------------------------- */

static void leader_hint(const struct rpc_status *st, char *leader, size_t cap)
{
    leader[0] = 0;
    const char *p = strstr(st->detail, "leader=");
    if (p)
        snprintf(leader, cap, "%.*s", (int)strcspn(p + 7, " ,;"), p + 7);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Call `method` on the leader: each metaserver in turn, following redirects. A pass where some metaserver
 * said "no leader / no lease yet" (EAGAIN, or EREMOTE without a hint: an election) is retried every 0.5 s
 * for up to ~10 s; a pass where none answered at all is tried once more. Returns 0 with *out, the leader's
 * own error (EINVAL, ENOENT, ...), or the last transport error. */
static int call_leader(const char *method, const ProtobufCMessage *req, int64_t tmo, ProtobufCMessage **out)
{
    int last = -ENOTCONN;
    for (int attempt = 0; attempt < 20; attempt++) {
        bool electing = false;
        char *list = xstrdup(metas), *save = NULL;
        for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
            char target[256];
            snprintf(target, sizeof(target), "%s", a);
            for (int hop = 0; hop < 3; hop++) {
                struct rpc_status st;
                last = rpc_call(rpc_channel_get(target), &synod__v1__admin__descriptor, method, req, NULL, tmo, out,
                                &st);
                if (last == 0) {
                    free(list);
                    return 0;
                }
                char leader[256];
                leader_hint(&st, leader, sizeof(leader));
                if (last != -EREMOTE || !leader[0] || !strcmp(leader, target))
                    break;
                snprintf(target, sizeof(target), "%s", leader);
            }
            if (last == -EAGAIN || last == -EREMOTE) {
                electing = true;
            } else if (last != -ENOTCONN && last != -ETIMEDOUT) {
                free(list);
                return last; /* the leader's own answer */
            }
        }
        free(list);
        if (!electing && attempt >= 1)
            break;
        sleep_ms(500);
    }
    return last;
}

/* --- status ------------------------------------------------------------------------------------------ */

static void print_json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void human(char *buf, size_t cap, uint64_t b)
{
    const char *u = "BKMGTP";
    double v = (double)b;
    while (v >= 1024 && u[1]) {
        v /= 1024;
        u++;
    }
    snprintf(buf, cap, *u == 'B' ? "%.0f%c" : "%.1f%c", v, *u);
}

/* One configured metaserver as it answered (or not). */
struct meta_view {
    char addr[128];
    int err;
    Synod__V1__StatusRep *rep;
    const Synod__V1__NodeInfo *self; /* its own entry in rep */
};

static void print_status_json(const struct meta_view *mv, size_t n, const struct meta_view *from)
{
    const Synod__V1__StatusRep *s = from->rep;
    printf("{\"answered_by\":");
    print_json_str(from->addr);
    printf(",\"fsid\":\"%016llx\"", (unsigned long long)s->fsid);
    printf(",\"leader\":%u,\"zxid\":%llu,\"files\":%llu,\"dirs\":%llu,\"chunks\":%llu,\"under_goal\":%llu,"
           "\"missing\":%llu,\"over_goal\":%llu,\"metaservers\":[",
           s->leader, (unsigned long long)s->zxid, (unsigned long long)s->files, (unsigned long long)s->dirs,
           (unsigned long long)s->chunks, (unsigned long long)s->under_goal, (unsigned long long)s->missing,
           (unsigned long long)s->over_goal);
    for (size_t i = 0; i < n; i++) {
        const Synod__V1__NodeInfo *x = mv[i].self;
        printf("%s{\"id\":", i ? "," : "");
        if (x)
            printf("%u", x->id);
        else
            printf("null");
        printf(",\"addr\":");
        print_json_str(mv[i].addr);
        printf(",\"reachable\":%s,\"role\":", x ? "true" : "false");
        print_json_str(x ? x->role : "UNREACHABLE");
        printf(",\"zxid\":%llu,\"applied\":%llu,\"healthy\":%s}", x ? (unsigned long long)x->zxid : 0ull,
               x ? (unsigned long long)x->applied : 0ull, x && x->healthy ? "true" : "false");
    }
    printf("],\"chunkservers\":[");
    for (size_t i = 0; i < s->n_chunkservers; i++) {
        const Synod__V1__ChunkserverStatus *c = s->chunkservers[i];
        printf("%s{\"id\":%u,\"addr\":", i ? "," : "", c->addr ? c->addr->id : 0);
        print_json_str(c->addr ? c->addr->addr : "");
        printf(",\"label\":");
        print_json_str(c->addr ? c->addr->label : "");
        printf(",\"state\":");
        print_json_str(c->state);
        printf(",\"total_bytes\":%llu,\"used_bytes\":%llu,\"logical_bytes\":%llu,\"chunks\":%u,\"load\":%u,"
               "\"last_heard_ms\":%lld,\"chunks_left\":%llu}",
               (unsigned long long)c->total_bytes, (unsigned long long)c->used_bytes,
               (unsigned long long)c->logical_bytes, c->chunks, c->load, (long long)c->last_heard_ms,
               (unsigned long long)c->replicas);
    }
    printf("]}\n");
}

static void print_status_tables(const struct meta_view *mv, size_t n, const struct meta_view *from)
{
    const Synod__V1__StatusRep *s = from->rep;
    printf("cluster (figures from %s): leader %s", from->addr, s->leader == UINT32_MAX ? "NONE" : "");
    if (s->leader != UINT32_MAX)
        printf("%u", s->leader);
    printf(", zxid %llu:%llu, fsid %016llx\n", (unsigned long long)(s->zxid >> 32),
           (unsigned long long)(s->zxid & 0xffffffffu), (unsigned long long)s->fsid);
    printf("files %llu, dirs %llu, chunks %llu; under goal %llu, missing %llu, over goal %llu\n\n",
           (unsigned long long)s->files, (unsigned long long)s->dirs, (unsigned long long)s->chunks,
           (unsigned long long)s->under_goal, (unsigned long long)s->missing, (unsigned long long)s->over_goal);
    printf("%-4s %-22s %-11s %-20s %-10s %s\n", "ID", "METASERVER", "ROLE", "ZXID", "APPLIED", "REACHABLE");
    for (size_t i = 0; i < n; i++) {
        const Synod__V1__NodeInfo *x = mv[i].self;
        if (!x) {
            printf("%-4s %-22s %-11s %-20s %-10s no (%s)\n", "-", mv[i].addr, "-", "-", "-", err_str(mv[i].err));
            continue;
        }
        char z[32];
        snprintf(z, sizeof(z), "%llu:%llu", (unsigned long long)(x->zxid >> 32),
                 (unsigned long long)(x->zxid & 0xffffffffu));
        printf("%-4u %-22s %-11s %-20s %-10llu yes%s\n", x->id, mv[i].addr, x->role, z,
               (unsigned long long)x->applied, x->healthy ? "" : " (not healthy)");
    }
    printf("\n%-4s %-22s %-16s %-8s %-9s %-9s %-9s %-8s %-11s %-6s %s\n", "ID", "CHUNKSERVER", "STATE", "LABEL",
           "USED", "LOGICAL", "TOTAL", "CHUNKS", "CHUNKS_LEFT", "LOAD", "HEARD");
    for (size_t i = 0; i < s->n_chunkservers; i++) {
        const Synod__V1__ChunkserverStatus *c = s->chunkservers[i];
        char used[16], logical[16], total[16];
        human(used, sizeof(used), c->used_bytes);
        human(logical, sizeof(logical), c->logical_bytes);
        human(total, sizeof(total), c->total_bytes);
        printf("%-4u %-22s %-16s %-8s %-9s %-9s %-9s %-8u %-11llu %-6u %lldms ago\n", c->addr ? c->addr->id : 0,
               c->addr ? c->addr->addr : "?", c->state, c->addr && c->addr->label[0] ? c->addr->label : "-", used,
               logical, total, c->chunks, (unsigned long long)c->replicas, c->load, (long long)c->last_heard_ms);
    }
}

static int cmd_status(void)
{
    char *list = xstrdup(metas), *save = NULL;
    struct meta_view *mv = NULL;
    size_t n = 0;
    for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        mv = xrealloc(mv, (n + 1) * sizeof(*mv));
        struct meta_view *m = &mv[n++];
        memset(m, 0, sizeof(*m));
        snprintf(m->addr, sizeof(m->addr), "%s", a);
        Synod__V1__StatusReq req = SYNOD__V1__STATUS_REQ__INIT;
        ProtobufCMessage *rep;
        struct rpc_status st;
        m->err = rpc_call(rpc_channel_get(a), &synod__v1__admin__descriptor, "Status", &req.base, NULL, timeout_ms,
                          &rep, &st);
        if (m->err == 0) {
            m->rep = (Synod__V1__StatusRep *)rep;
            m->self = m->rep->n_metaservers ? m->rep->metaservers[0] : NULL;
        }
    }
    free(list);
    const struct meta_view *from = NULL;
    for (size_t i = 0; i < n; i++)
        if (mv[i].self && !strcmp(mv[i].self->role, "LEADING") && (!from || mv[i].self->zxid > from->self->zxid))
            from = &mv[i];
    bool leader = from != NULL;
    for (size_t i = 0; i < n && !from; i++)
        if (mv[i].rep)
            from = &mv[i];
    int rc;
    if (!from) {
        fprintf(stderr, "synodctl: no metaserver of %s answered: %s\n", metas, n ? err_str(mv[n - 1].err) : "none");
        rc = 1;
    } else {
        if (json)
            print_status_json(mv, n, from);
        else
            print_status_tables(mv, n, from);
        rc = leader ? 0 : 3;
        if (!leader)
            fprintf(stderr, "synodctl: no metaserver is leading\n");
    }
    for (size_t i = 0; i < n; i++)
        if (mv[i].rep)
            rpc_message_free(&mv[i].rep->base);
    free(mv);
    return rc;
}

/* --- goal -------------------------------------------------------------------------------------------- */

static int resolve(const char *path, Synod__V1__FileinfoRep **out)
{
    Synod__V1__FileinfoReq req = SYNOD__V1__FILEINFO_REQ__INIT;
    req.path = (char *)path;
    int rc = call_leader("Fileinfo", &req.base, timeout_ms, (ProtobufCMessage **)out);
    if (rc)
        fprintf(stderr, "synodctl: %s: %s\n", path, err_str(rc));
    return rc;
}

static int cmd_goal(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[0], "get")) {
        if (argc != 2)
            return 2;
        Synod__V1__FileinfoRep *fi;
        if (resolve(argv[1], &fi))
            return 1;
        printf("%s: goal %u\n", argv[1], fi->attr ? fi->attr->goal : 0);
        rpc_message_free(&fi->base);
        return 0;
    }
    if (argc < 3 || strcmp(argv[0], "set"))
        return 2;
    int i = 1;
    bool rec = false;
    if (!strcmp(argv[i], "-r")) {
        rec = true;
        i++;
    }
    if (argc != i + 2)
        return 2;
    char *end;
    long goal = strtol(argv[i], &end, 10);
    if (*end || goal < 1 || goal > 9) {
        fprintf(stderr, "synodctl: goal must be 1..9\n");
        return 2;
    }
    Synod__V1__FileinfoRep *fi;
    if (resolve(argv[i + 1], &fi))
        return 1;
    Synod__V1__Cred cred = SYNOD__V1__CRED__INIT; /* root: synodctl is the administrator's tool */
    Synod__V1__SetGoalReq req = SYNOD__V1__SET_GOAL_REQ__INIT;
    req.cred = &cred;
    req.ino = fi->attr->ino;
    req.goal = (uint32_t)goal;
    req.recursive = rec;
    rpc_message_free(&fi->base);
    Synod__V1__SetGoalRep *rep;
    int rc = call_leader("SetGoal", &req.base, timeout_ms, (ProtobufCMessage **)&rep);
    if (rc) {
        fprintf(stderr, "synodctl: goal set %s: %s\n", argv[i + 1], err_str(rc));
        return 1;
    }
    printf("%s: goal %ld (%llu inodes changed)\n", argv[i + 1], goal, (unsigned long long)rep->changed);
    rpc_message_free(&rep->base);
    return 0;
}

/* --- decommission ------------------------------------------------------------------------------------ */

static int cmd_decommission(int argc, char **argv)
{
    bool cancel = false;
    long wait_s = 0;
    const char *id = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--cancel"))
            cancel = true;
        else if (!strcmp(argv[i], "--wait") && i + 1 < argc)
            wait_s = strtol(argv[++i], NULL, 10);
        else if (!id && argv[i][0] != '-')
            id = argv[i];
        else
            return 2;
    }
    char *end;
    unsigned long cs = id ? strtoul(id, &end, 10) : 0;
    if (!id || *end || cs == 0 || cs > UINT32_MAX)
        return 2;
    Synod__V1__DecommissionReq req = SYNOD__V1__DECOMMISSION_REQ__INIT;
    req.chunkserver = (uint32_t)cs;
    req.cancel = cancel;
    for (long waited = 0;; waited++) {
        Synod__V1__DecommissionRep *rep;
        /* the command is idempotent: repeating it is how progress is read */
        int rc = call_leader("Decommission", &req.base, timeout_ms, (ProtobufCMessage **)&rep);
        if (rc) {
            fprintf(stderr, "synodctl: decommission %lu: %s\n", cs, err_str(rc));
            return 1;
        }
        bool done = cancel || rep->chunks_left == 0 || waited >= wait_s;
        if (done || waited == 0)
            printf("chunkserver %lu: %s, chunks_left %llu\n", cs, rep->state, (unsigned long long)rep->chunks_left);
        uint64_t left = rep->chunks_left;
        rpc_message_free(&rep->base);
        if (done)
            return left && wait_s ? 1 : 0;
        sleep_ms(1000);
    }
}

/* --- rebalance --------------------------------------------------------------------------------------- */

static int cmd_rebalance(int argc, char **argv)
{
    Synod__V1__RebalanceReq req = SYNOD__V1__REBALANCE_REQ__INIT;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--dry-run"))
            req.dry_run = true;
        else if (!strcmp(argv[i], "--threshold") && i + 1 < argc)
            req.threshold_pct = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--max-moves") && i + 1 < argc)
            req.max_moves = (uint32_t)strtoul(argv[++i], NULL, 10);
        else
            return 2;
    }
    if (req.threshold_pct > 100)
        return 2;
    Synod__V1__RebalanceRep *rep;
    int rc = call_leader("Rebalance", &req.base, timeout_ms, (ProtobufCMessage **)&rep);
    if (rc) {
        fprintf(stderr, "synodctl: rebalance: %s\n", err_str(rc));
        return 1;
    }
    if (json) {
        printf("{\"mean_pct\":%u,\"started\":%s,\"moves\":[", rep->mean_pct, rep->started ? "true" : "false");
        for (size_t i = 0; i < rep->n_moves; i++)
            printf("%s{\"chunk_id\":%llu,\"from\":%u,\"to\":%u,\"bytes\":%llu}", i ? "," : "",
                   (unsigned long long)rep->moves[i]->chunk_id, rep->moves[i]->from, rep->moves[i]->to,
                   (unsigned long long)rep->moves[i]->bytes);
        printf("]}\n");
    } else {
        printf("mean usage %u%%; %zu move%s %s\n", rep->mean_pct, rep->n_moves, rep->n_moves == 1 ? "" : "s",
               req.dry_run ? "planned (dry run)" : rep->started ? "started" : "");
        for (size_t i = 0; i < rep->n_moves; i++) {
            char b[16];
            human(b, sizeof(b), rep->moves[i]->bytes);
            printf("  chunk %llu: %u -> %u (%s)\n", (unsigned long long)rep->moves[i]->chunk_id,
                   rep->moves[i]->from, rep->moves[i]->to, b);
        }
    }
    rpc_message_free(&rep->base);
    return 0;
}

/* --- repl-limit -------------------------------------------------------------------------------------- */

static int cmd_repl_limit(int argc, char **argv)
{
    Synod__V1__ReplLimitReq req = SYNOD__V1__REPL_LIMIT_REQ__INIT;
    if (argc > 1)
        return 2;
    if (argc == 1) {
        char *end;
        long v = strtol(argv[0], &end, 10);
        if (*end || v < 1 || v > 1000) {
            fprintf(stderr, "synodctl: repl-limit must be 1..1000\n");
            return 2;
        }
        req.limit = (uint32_t)v;
    }
    Synod__V1__ReplLimitRep *rep;
    int rc = call_leader("ReplLimit", &req.base, timeout_ms, (ProtobufCMessage **)&rep);
    if (rc) {
        fprintf(stderr, "synodctl: repl-limit: %s\n", err_str(rc));
        return 1;
    }
    if (json)
        printf("{\"repl_limit\":%u}\n", rep->limit);
    else
        printf("copies in flight per chunkserver: %u\n", rep->limit);
    rpc_message_free(&rep->base);
    return 0;
}

/* --- fsck -------------------------------------------------------------------------------------------- */

static int cmd_fsck(int argc, char **argv)
{
    Synod__V1__FsckReq req = SYNOD__V1__FSCK_REQ__INIT;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--repair"))
            req.repair = true;
        else
            return 2;
    }
    Synod__V1__FsckRep *rep;
    int rc = call_leader("Fsck", &req.base, MAX(timeout_ms, 120000), (ProtobufCMessage **)&rep);
    if (rc) {
        fprintf(stderr, "synodctl: fsck: %s\n", err_str(rc));
        return 1;
    }
    size_t unrepaired = 0;
    for (size_t i = 0; i < rep->n_problems; i++)
        unrepaired += !rep->problems[i]->repaired;
    if (json) {
        printf("{\"checked_inodes\":%llu,\"checked_chunks\":%llu,\"total_problems\":%llu,\"truncated\":%s,"
               "\"repaired\":%u,\"problems\":[",
               (unsigned long long)rep->checked_inodes, (unsigned long long)rep->checked_chunks,
               (unsigned long long)rep->total_problems, rep->truncated ? "true" : "false", rep->repaired);
        for (size_t i = 0; i < rep->n_problems; i++) {
            const Synod__V1__FsckProblem *p = rep->problems[i];
            printf("%s{\"kind\":", i ? "," : "");
            print_json_str(p->kind);
            printf(",\"ino\":%llu,\"chunk_id\":%llu,\"repaired\":%s,\"detail\":", (unsigned long long)p->ino,
                   (unsigned long long)p->chunk_id, p->repaired ? "true" : "false");
            print_json_str(p->detail);
            printf("}");
        }
        printf("]}\n");
    } else {
        for (size_t i = 0; i < rep->n_problems; i++) {
            const Synod__V1__FsckProblem *p = rep->problems[i];
            printf("%-16s ino %-8llu chunk %-8llu %s%s\n", p->kind, (unsigned long long)p->ino,
                   (unsigned long long)p->chunk_id, p->detail, p->repaired ? " [repaired]" : "");
        }
        printf("checked %llu inodes, %llu chunks: %llu problem%s%s", (unsigned long long)rep->checked_inodes,
               (unsigned long long)rep->checked_chunks, (unsigned long long)rep->total_problems,
               rep->total_problems == 1 ? "" : "s", rep->total_problems ? "" : " (clean)");
        if (rep->total_problems > rep->n_problems)
            printf(" (%zu listed)", rep->n_problems);
        if (req.repair)
            printf(", %u repaired", rep->repaired);
        printf("\n");
        if (rep->truncated)
            printf("note: the namespace is larger than one fsck pass covers: link counts, dangling entries and "
                   "orphan chunks were not checked\n");
    }
    rc = rep->total_problems > rep->n_problems || unrepaired ? 3 : 0;
    rpc_message_free(&rep->base);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"metaservers", required_argument, 0, 'm'}, {"json", no_argument, 0, 'j'},
                                       {"timeout", required_argument, 0, 't'},     {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    metas = getenv("SYNOD_METASERVERS") ? getenv("SYNOD_METASERVERS") : "127.0.0.1:7001";
    int c;
    /* "+": stop at the command, so its own options (-r, --dry-run...) are not taken for ours */
    while ((c = getopt_long(argc, argv, "+m:t:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': metas = optarg; break;
        case 'j': json = true; break;
        case 't': timeout_ms = strtoll(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc || timeout_ms <= 0) {
        usage(stderr);
        return 2;
    }
    log_init("synodctl", LOG_LVL_ERROR);
    const char *cmd = argv[optind];
    int nargs = argc - optind - 1;
    char **args = argv + optind + 1;
    int rc;
    if (!strcmp(cmd, "status") && nargs == 0)
        rc = cmd_status();
    else if (!strcmp(cmd, "goal"))
        rc = cmd_goal(nargs, args);
    else if (!strcmp(cmd, "decommission"))
        rc = cmd_decommission(nargs, args);
    else if (!strcmp(cmd, "rebalance"))
        rc = cmd_rebalance(nargs, args);
    else if (!strcmp(cmd, "repl-limit"))
        rc = cmd_repl_limit(nargs, args);
    else if (!strcmp(cmd, "fsck"))
        rc = cmd_fsck(nargs, args);
    else
        rc = 2;
    if (rc == 2)
        usage(stderr);
    rpc_client_shutdown();
    return rc;
}
