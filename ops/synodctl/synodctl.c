/* synodctl.c - the SynodFS admin tool. Minimal for now: `synodctl [-m METASERVERS] [--json] status`.
 *
 * It asks the metaservers in turn (Admin.Status may be answered by any replica; a follower that redirects
 * with "leader=host:port" is followed) and prints the cluster as human tables, or one JSON object with
 * --json for scripts. Exit status: 0 when a metaserver answered, 1 when none did, 2 on usage errors.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: synodctl [-m|--metaservers host:port[,host:port...]] [--json] [-t|--timeout MS] status\n"
                 "  -m, --metaservers  metaservers to ask (default: $SYNOD_METASERVERS, else 127.0.0.1:7001)\n"
                 "  --json             one JSON object instead of tables\n"
                 "  -t, --timeout      per-metaserver deadline in ms (default 2000)\n"
                 "commands:\n"
                 "  status             metaservers (role, zxid, applied, health), chunkservers (state, usage),\n"
                 "                     file/chunk counts and replication health\n");
}

static int ask(const char *addr, int64_t timeout_ms, Synod__V1__StatusRep **out, char *leader, size_t cap)
{
    Synod__V1__StatusReq req = SYNOD__V1__STATUS_REQ__INIT;
    ProtobufCMessage *m;
    struct rpc_status st;
    int r = rpc_call(rpc_channel_get(addr), &synod__v1__admin__descriptor, "Status", &req.base, NULL, timeout_ms,
                     &m, &st);
    leader[0] = 0;
    if (r == -EREMOTE) {
        const char *p = strstr(st.detail, "leader=");
        if (p)
            snprintf(leader, cap, "%.*s", (int)strcspn(p + 7, " ,;"), p + 7);
    }
    *out = r ? NULL : (Synod__V1__StatusRep *)m;
    return r;
}

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

static void print_json(const char *from, const Synod__V1__StatusRep *s)
{
    printf("{\"answered_by\":");
    print_json_str(from);
    printf(",\"leader\":%u,\"zxid\":%llu,\"files\":%llu,\"dirs\":%llu,\"chunks\":%llu,\"under_goal\":%llu,"
           "\"missing\":%llu,\"over_goal\":%llu,\"metaservers\":[",
           s->leader, (unsigned long long)s->zxid, (unsigned long long)s->files, (unsigned long long)s->dirs,
           (unsigned long long)s->chunks, (unsigned long long)s->under_goal, (unsigned long long)s->missing,
           (unsigned long long)s->over_goal);
    for (size_t i = 0; i < s->n_metaservers; i++) {
        const Synod__V1__NodeInfo *n = s->metaservers[i];
        printf("%s{\"id\":%u,\"addr\":", i ? "," : "", n->id);
        print_json_str(n->addr);
        printf(",\"role\":");
        print_json_str(n->role);
        printf(",\"zxid\":%llu,\"applied\":%llu,\"healthy\":%s}", (unsigned long long)n->zxid,
               (unsigned long long)n->applied, n->healthy ? "true" : "false");
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
               "\"last_heard_ms\":%lld}",
               (unsigned long long)c->total_bytes, (unsigned long long)c->used_bytes,
               (unsigned long long)c->logical_bytes, c->chunks, c->load, (long long)c->last_heard_ms);
    }
    printf("]}\n");
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

static void print_tables(const char *from, const Synod__V1__StatusRep *s)
{
    printf("cluster (answered by %s): leader %u, zxid %llu:%llu\n", from, s->leader,
           (unsigned long long)(s->zxid >> 32), (unsigned long long)(s->zxid & 0xffffffffu));
    printf("files %llu, dirs %llu, chunks %llu; under goal %llu, missing %llu, over goal %llu\n\n",
           (unsigned long long)s->files, (unsigned long long)s->dirs, (unsigned long long)s->chunks,
           (unsigned long long)s->under_goal, (unsigned long long)s->missing, (unsigned long long)s->over_goal);
    printf("%-4s %-22s %-10s %-20s %-10s %s\n", "ID", "METASERVER", "ROLE", "ZXID", "APPLIED", "HEALTH");
    for (size_t i = 0; i < s->n_metaservers; i++) {
        const Synod__V1__NodeInfo *n = s->metaservers[i];
        char z[32];
        snprintf(z, sizeof(z), "%llu:%llu", (unsigned long long)(n->zxid >> 32),
                 (unsigned long long)(n->zxid & 0xffffffffu));
        printf("%-4u %-22s %-10s %-20s %-10llu %s\n", n->id, n->addr, n->role, z, (unsigned long long)n->applied,
               n->healthy ? "ok" : "DOWN");
    }
    printf("\n%-4s %-22s %-16s %-8s %-9s %-9s %-9s %-8s %-6s %s\n", "ID", "CHUNKSERVER", "STATE", "LABEL", "USED",
           "LOGICAL", "TOTAL", "CHUNKS", "LOAD", "HEARD");
    for (size_t i = 0; i < s->n_chunkservers; i++) {
        const Synod__V1__ChunkserverStatus *c = s->chunkservers[i];
        char used[16], logical[16], total[16];
        human(used, sizeof(used), c->used_bytes);
        human(logical, sizeof(logical), c->logical_bytes);
        human(total, sizeof(total), c->total_bytes);
        printf("%-4u %-22s %-16s %-8s %-9s %-9s %-9s %-8u %-6u %lldms ago\n", c->addr ? c->addr->id : 0,
               c->addr ? c->addr->addr : "?", c->state, c->addr && c->addr->label[0] ? c->addr->label : "-", used,
               logical, total, c->chunks, c->load, (long long)c->last_heard_ms);
    }
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"metaservers", required_argument, 0, 'm'}, {"json", no_argument, 0, 'j'},
                                       {"timeout", required_argument, 0, 't'},     {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *metas = getenv("SYNOD_METASERVERS") ? getenv("SYNOD_METASERVERS") : "127.0.0.1:7001";
    bool json = false;
    int64_t timeout = 2000;
    int c;
    while ((c = getopt_long(argc, argv, "m:t:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': metas = optarg; break;
        case 'j': json = true; break;
        case 't': timeout = strtoll(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || strcmp(argv[optind], "status") != 0 || timeout <= 0) {
        usage(stderr);
        return 2;
    }
    log_init("synodctl", LOG_LVL_ERROR);
    char *list = xstrdup(metas), *save = NULL;
    int rc = 1, last = -ENOTCONN;
    char leader[128] = "";
    for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        Synod__V1__StatusRep *s;
        last = ask(a, timeout, &s, leader, sizeof(leader));
        char hint[128];
        if (last == -EREMOTE && leader[0]) {
            snprintf(hint, sizeof(hint), "%s", leader);
            a = hint;
            last = ask(a, timeout, &s, leader, sizeof(leader));
        }
        if (last == 0) {
            if (json)
                print_json(a, s);
            else
                print_tables(a, s);
            rpc_message_free(&s->base);
            rc = 0;
            break;
        }
    }
    if (rc)
        fprintf(stderr, "synodctl: no metaserver of %s answered: %s\n", metas, err_str(last));
    free(list);
    rpc_client_shutdown();
    return rc;
}
