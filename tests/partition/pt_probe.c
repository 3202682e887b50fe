/* pt_probe.c - the Kv client of the partition test (tests/partition/partition_minority_leader.sh).
 *
 * The shell script owns the network namespaces and the daemons; this program does the timed parts, which
 * a shell cannot do precisely: it runs inside a namespace (ip netns exec) and talks to synod-meta's Kv
 * service through the kv client of the metaserver tests (tests/metaserver/kvc.h: sessions, leader
 * following, retries with the same (session, seq)). Subcommands (ADDRS is a comma-separated list of
 * host:port):
 *
 *   leader ADDRS [WAIT_MS]        print the address of the node that answers a lease read itself
 *   role ADDR                     "leader", "follower <hint>" (EREMOTE with a leader hint) or "error <errno>"
 *   put ADDRS KEY VALUE [WAIT_MS] write through a fresh session, following leader hints; 0 once acknowledged
 *   get ADDRS KEY [WAIT_MS]       print the value ("<absent>" if not found), following leader hints
 *   check ADDRS FILE [WAIT_MS]    every "key value" line of FILE must read back with that value (linearizable
 *                                 reads at the leader); prints how many are missing or wrong, exit 1 if any
 *   stale-check ADDR FILE [WAIT_MS]  the same from ADDR's own applied state (Kv Get op 1, any replica),
 *                                 retried until it has caught up or WAIT_MS passed
 *   isolate ADDR CUT_CMD BEFORE_MS AFTER_MS ACKED_FILE
 *       Against the leader ADDR (from inside its own namespace, so the cut does not cut us off): a reader
 *       thread issues Get back to back and a writer thread issues Put of unique keys, both with short
 *       deadlines. After BEFORE_MS the main thread runs CUT_CMD (which isolates the node) and notes the
 *       monotonic time just after it returned; probing goes on for AFTER_MS. Prints
 *         cut_ms=<duration of the command> reads_ok=<n> writes_ok=<n>
 *         last_read_after_cut_ms=<t or -1> last_write_after_cut_ms=<t or -1>
 *       and writes every acknowledged "key value" to ACKED_FILE (for check on the majority side).
 *
 * Exit status: 0 success, 1 the check failed or nothing answered in time, 2 usage.
 */
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "tests/metaserver/kvc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ISO_WRITE_TIMEOUT_MS 300 /* per write against the isolated node, retries included */

static int64_t wait_ms(int argc, char **argv, int i, int64_t def)
{
    return argc > i ? strtoll(argv[i], NULL, 10) : def;
}

static int cmd_leader(int argc, char **argv)
{
    struct kvc c;
    kvc_init(&c, argv[0], 0);
    uint64_t deadline = clk_mono_ns() + (uint64_t)wait_ms(argc, argv, 1, 10000) * NS_PER_MS;
    int rc = 1;
    do {
        for (int i = 0; i < c.n_servers && rc; i++) {
            bool found;
            char *val = NULL;
            if (kvc_get_at(c.servers[i], "pt-probe", false, &val, &found, NULL, 0) == 0) {
                printf("%s\n", c.servers[i]);
                rc = 0;
            }
            free(val);
        }
        if (rc)
            clk_sleep_ns(20 * NS_PER_MS);
    } while (rc && clk_mono_ns() < deadline);
    if (rc)
        fprintf(stderr, "pt_probe: no leader among %s\n", argv[0]);
    kvc_destroy(&c);
    return rc;
}

static int cmd_role(char **argv)
{
    bool found;
    char *val = NULL, detail[256] = "";
    int r = kvc_get_at(argv[0], "pt-probe", false, &val, &found, detail, sizeof(detail));
    free(val);
    if (r == 0)
        printf("leader\n");
    else if (r == -EREMOTE && strncmp(detail, "leader=", 7) == 0)
        printf("follower %s\n", detail + 7);
    else
        printf("error %d %s\n", -r, detail);
    return 0;
}

static int cmd_put(int argc, char **argv)
{
    struct kvc c;
    kvc_init(&c, argv[0], wait_ms(argc, argv, 3, 10000));
    int r = kvc_write(&c, KVC_PUT, argv[1], argv[2], strlen(argv[2]), NULL, NULL);
    if (r)
        fprintf(stderr, "pt_probe: put %s failed: %s\n", argv[1], strerror(-r));
    kvc_destroy(&c);
    return r ? 1 : 0;
}

static int cmd_get(int argc, char **argv)
{
    struct kvc c;
    kvc_init(&c, argv[0], wait_ms(argc, argv, 2, 10000));
    bool found;
    char *val = NULL;
    int r = kvc_get(&c, argv[1], false, &val, NULL, &found);
    if (r)
        fprintf(stderr, "pt_probe: get %s failed: %s\n", argv[1], strerror(-r));
    else
        printf("%s\n", found ? val : "<absent>");
    free(val);
    kvc_destroy(&c);
    return r ? 1 : 0;
}

/* check / stale-check: every "key value" line of the file reads back. check: linearizable reads through
 * the leader of ADDRS. stale: ADDRS is one node, read from its own applied state, and the whole file is
 * retried until that node has caught up or the deadline passes. */
static int cmd_check(int argc, char **argv, bool stale)
{
    int64_t wait = wait_ms(argc, argv, 2, 20000);
    uint64_t deadline = clk_mono_ns() + (uint64_t)wait * NS_PER_MS;
    struct kvc c;
    kvc_init(&c, argv[0], wait);
    int total, bad;
    do {
        FILE *f = fopen(argv[1], "r");
        if (!f) {
            fprintf(stderr, "pt_probe: cannot open %s: %s\n", argv[1], strerror(errno));
            kvc_destroy(&c);
            return 1;
        }
        char key[256], want[256];
        total = bad = 0;
        bool last_round = !stale || clk_mono_ns() >= deadline;
        while (fscanf(f, "%255s %255s", key, want) == 2) {
            total++;
            bool found = false;
            char *val = NULL;
            int r = stale ? kvc_get_at(argv[0], key, true, &val, &found, NULL, 0)
                          : kvc_get(&c, key, false, &val, NULL, &found);
            if (r || !found || strcmp(val, want) != 0) {
                bad++;
                if (last_round)
                    fprintf(stderr, "pt_probe: %s: %s\n", key,
                            r        ? strerror(-r)
                            : !found ? "absent"
                                     : "wrong value");
            }
            free(val);
        }
        fclose(f);
        if (bad && !last_round)
            clk_sleep_ns(100 * NS_PER_MS);
        else
            break;
    } while (1);
    printf("checked=%d missing_or_wrong=%d\n", total, bad);
    kvc_destroy(&c);
    return bad ? 1 : 0;
}

/* isolate: probing threads against one node while it is cut off. */
struct iso {
    const char *addr;
    atomic_bool stop;
    _Atomic uint64_t cut_ns; /* 0 until the cut command returned */
    _Atomic uint64_t last_read_ns, last_write_ns;
    atomic_int reads_ok, writes_ok;
    FILE *acked;
    struct kvc k; /* the writer's: one server, short total timeout, a new seq per write */
};

static void *iso_reader(void *arg)
{
    struct iso *s = arg;
    while (!atomic_load(&s->stop)) {
        bool found;
        char *val = NULL;
        if (kvc_get_at(s->addr, "pt-iso-read", false, &val, &found, NULL, 0) == 0) {
            atomic_store(&s->last_read_ns, clk_mono_ns());
            atomic_fetch_add(&s->reads_ok, 1);
        } else {
            clk_sleep_ns(NS_PER_MS);
        }
        free(val);
    }
    return NULL;
}

static void *iso_writer(void *arg)
{
    struct iso *s = arg;
    for (uint64_t n = 0; !atomic_load(&s->stop); n++) {
        char key[64], val[64];
        snprintf(key, sizeof(key), "pt-iso-%llu", (unsigned long long)n);
        snprintf(val, sizeof(val), "v%llu", (unsigned long long)n);
        /* A failed write's seq is abandoned (kvc_write takes a new one each time): each is a distinct write,
         * which may or may not survive; only acknowledged ones are recorded and must. */
        if (kvc_write(&s->k, KVC_PUT, key, val, strlen(val), NULL, NULL) == 0) {
            atomic_store(&s->last_write_ns, clk_mono_ns());
            atomic_fetch_add(&s->writes_ok, 1);
            fprintf(s->acked, "%s %s\n", key, val);
        } else {
            clk_sleep_ns(NS_PER_MS);
        }
    }
    return NULL;
}

static double ms_after_cut(const struct iso *s, uint64_t t)
{
    uint64_t cut = atomic_load(&s->cut_ns);
    if (!t || !cut || t < cut)
        return -1;
    return (double)(t - cut) / 1e6;
}

static int cmd_isolate(char **argv)
{
    static struct iso s;
    s.addr = argv[0];
    const char *cut_cmd = argv[1];
    uint64_t before = strtoull(argv[2], NULL, 10), after = strtoull(argv[3], NULL, 10);
    s.acked = fopen(argv[4], "w");
    if (!s.acked) {
        fprintf(stderr, "pt_probe: cannot write %s: %s\n", argv[4], strerror(errno));
        return 1;
    }
    setvbuf(s.acked, NULL, _IOLBF, 0);
    kvc_init(&s.k, s.addr, 5000);
    int r = kvc_open(&s.k);
    if (r) {
        fprintf(stderr, "pt_probe: cannot open a session at %s: %s\n", s.addr, strerror(-r));
        return 1;
    }
    s.k.total_timeout_ms = ISO_WRITE_TIMEOUT_MS;
    pthread_t rt, wt;
    pthread_create(&rt, NULL, iso_reader, &s);
    pthread_create(&wt, NULL, iso_writer, &s);
    clk_sleep_ns(before * NS_PER_MS);
    uint64_t t0 = clk_mono_ns();
    int rc = system(cut_cmd);
    atomic_store(&s.cut_ns, clk_mono_ns());
    if (rc != 0)
        fprintf(stderr, "pt_probe: cut command failed (%d): %s\n", rc, cut_cmd);
    clk_sleep_ns(after * NS_PER_MS);
    atomic_store(&s.stop, true);
    pthread_join(rt, NULL);
    pthread_join(wt, NULL);
    fclose(s.acked);
    kvc_destroy(&s.k);
    printf("cut_ms=%.1f reads_ok=%d writes_ok=%d last_read_after_cut_ms=%.1f last_write_after_cut_ms=%.1f\n",
           (double)(atomic_load(&s.cut_ns) - t0) / 1e6, atomic_load(&s.reads_ok), atomic_load(&s.writes_ok),
           ms_after_cut(&s, atomic_load(&s.last_read_ns)), ms_after_cut(&s, atomic_load(&s.last_write_ns)));
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    log_init("pt_probe", LOG_LVL_ERROR);
    if (argc < 3)
        goto usage;
    const char *cmd = argv[1];
    argc -= 2;
    argv += 2;
    int rc;
    if (strcmp(cmd, "leader") == 0)
        rc = cmd_leader(argc, argv);
    else if (strcmp(cmd, "role") == 0)
        rc = cmd_role(argv);
    else if (strcmp(cmd, "put") == 0 && argc >= 3)
        rc = cmd_put(argc, argv);
    else if (strcmp(cmd, "get") == 0 && argc >= 2)
        rc = cmd_get(argc, argv);
    else if (strcmp(cmd, "check") == 0 && argc >= 2)
        rc = cmd_check(argc, argv, false);
    else if (strcmp(cmd, "stale-check") == 0 && argc >= 2)
        rc = cmd_check(argc, argv, true);
    else if (strcmp(cmd, "isolate") == 0 && argc >= 5)
        rc = cmd_isolate(argv);
    else
        goto usage;
    fflush(stdout);
    rpc_client_shutdown();
    return rc;
usage:
    fprintf(stderr, "usage: pt_probe leader|role|put|get|check|isolate ... (see pt_probe.c)\n");
    return 2;
}
