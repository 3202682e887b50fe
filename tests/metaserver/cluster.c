/* cluster.c - real synod-meta processes for tests (see cluster.h). */
#include "tests/metaserver/cluster.h"

#include "common/clock.h"
#include "common/util.h"
#include "metaserver/rsm.h"
#include "tests/metaserver/kvc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct cluster *live[4];

static void cleanup_all(void)
{
    for (size_t i = 0; i < ARRAY_SIZE(live); i++)
        if (live[i])
            cl_destroy(live[i]);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0)
        PANIC("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

void cl_init(struct cluster *c, int n, const char *bin, const char *const *extra)
{
    static bool hooked;
    if (!hooked) {
        atexit(cleanup_all);
        hooked = true;
    }
    ASSERT(n > 0 && n <= CL_MAX_NODES);
    memset(c, 0, sizeof(*c));
    c->n = n;
    c->bin = bin;
    snprintf(c->base, sizeof(c->base), "/tmp/synod-meta-test-XXXXXX");
    if (!mkdtemp(c->base))
        PANIC("mkdtemp: %s", strerror(errno));
    for (int i = 0; extra && extra[i] && i < 15; i++)
        c->extra[i] = extra[i];
    for (int i = 0; i < n; i++) {
        struct cl_node *nd = &c->nodes[i];
        nd->port = free_port();
        snprintf(nd->addr, sizeof(nd->addr), "127.0.0.1:%d", nd->port);
        snprintf(nd->dir, sizeof(nd->dir), "%s/node%d", c->base, i);
        size_t l = strlen(c->peers);
        snprintf(c->peers + l, sizeof(c->peers) - l, "%s%d=%s", i ? "," : "", i, nd->addr);
        l = strlen(c->servers);
        snprintf(c->servers + l, sizeof(c->servers) - l, "%s%s", i ? "," : "", nd->addr);
    }
    for (size_t i = 0; i < ARRAY_SIZE(live); i++)
        if (!live[i]) {
            live[i] = c;
            break;
        }
}

void cl_start(struct cluster *c, int i)
{
    struct cl_node *nd = &c->nodes[i];
    ASSERT(nd->pid == 0);
    char a_id[32], a_peers[sizeof(c->peers) + 16], a_dir[350], logpath[350];
    snprintf(a_id, sizeof(a_id), "--node_id=%d", i);
    snprintf(a_peers, sizeof(a_peers), "--peers=%s", c->peers);
    snprintf(a_dir, sizeof(a_dir), "--data_dir=%s", nd->dir);
    snprintf(logpath, sizeof(logpath), "%s/node%d.log", c->base, i);
    const char *argv[24] = {c->bin, a_id, a_peers, a_dir};
    int k = 4;
    for (int j = 0; c->extra[j]; j++)
        argv[k++] = c->extra[j];
    argv[k] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        PANIC("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that fails (T_FAIL exits) leaves no daemon running */
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execv(c->bin, (char *const *)argv);
        _exit(127);
    }
    nd->pid = pid;
}

uint64_t cl_cluster_id(const struct cluster *c)
{
    const char *peers[CL_MAX_NODES];
    for (int i = 0; i < c->n; i++)
        peers[i] = c->nodes[i].addr;
    struct rsm_config cfg = {.n_nodes = (uint32_t)c->n, .peers = peers};
    return rsm_cluster_id(&cfg);
}

void cl_start_all(struct cluster *c)
{
    for (int i = 0; i < c->n; i++)
        cl_start(c, i);
}

int cl_signal(struct cluster *c, int i, int sig)
{
    struct cl_node *nd = &c->nodes[i];
    if (nd->pid <= 0)
        return -1;
    kill(nd->pid, sig);
    if (sig == SIGKILL) { /* prompt: reap at once */
        waitpid(nd->pid, NULL, 0);
        nd->pid = 0;
    } else if (sig == SIGTERM) {
        kill(nd->pid, SIGCONT);
        int st;
        /* a SIGTERM'd node gets 10 s to shut down cleanly, then it is killed */
        for (int t = 0; t < 1000; t++) {
            if (waitpid(nd->pid, &st, WNOHANG) == nd->pid) {
                nd->pid = 0;
                return st;
            }
            clk_sleep_ns(10 * NS_PER_MS);
        }
        kill(nd->pid, SIGKILL);
        waitpid(nd->pid, &st, 0);
        nd->pid = 0;
        return st;
    }
    return 0;
}

bool cl_alive(struct cluster *c, int i)
{
    struct cl_node *nd = &c->nodes[i];
    int st;
    if (nd->pid <= 0)
        return false;
    if (waitpid(nd->pid, &st, WNOHANG) == 0)
        return true;
    nd->pid = 0; /* reaped (or gone): it may be started again */
    return false;
}

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

void cl_wipe(struct cluster *c, int i)
{
    ASSERT(c->nodes[i].pid == 0);
    rm_rf(c->nodes[i].dir);
}

int cl_leader(struct cluster *c, int timeout_ms)
{
    uint64_t end = clk_mono_ns() + (uint64_t)timeout_ms * NS_PER_MS;
    do {
        for (int i = 0; i < c->n; i++) {
            if (c->nodes[i].pid <= 0)
                continue;
            char *v = NULL;
            bool found;
            if (kvc_get_at(c->nodes[i].addr, "cl/probe", false, &v, &found, NULL, 0) == 0) {
                free(v);
                return i;
            }
        }
        clk_sleep_ns(10 * NS_PER_MS);
    } while (clk_mono_ns() < end);
    return -1;
}

int cl_stop_all(struct cluster *c)
{
    int bad = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid <= 0)
            continue;
        int st = cl_signal(c, i, SIGTERM);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "node %d: unclean exit (status 0x%x); its log:\n", i, st);
            /* a sanitizer report from its first line (its stack is what matters), else the log's tail */
            char cmd[600];
            snprintf(cmd, sizeof(cmd),
                     "f='%s/node%d.log'; { grep -m1 -A60 'ERROR: [A-Za-z]*Sanitizer' \"$f\" || tail -n 40 "
                     "\"$f\"; } >&2",
                     c->base, i);
            if (system(cmd) != 0)
                fprintf(stderr, "(no log)\n");
            bad++;
        }
    }
    return bad;
}

bool cl_log_has(struct cluster *c, int i, const char *text)
{
    char path[350];
    snprintf(path, sizeof(path), "%s/node%d.log", c->base, i);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

void cl_destroy(struct cluster *c)
{
    for (size_t i = 0; i < ARRAY_SIZE(live); i++)
        if (live[i] == c)
            live[i] = NULL;
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid > 0) {
            kill(c->nodes[i].pid, SIGKILL);
            waitpid(c->nodes[i].pid, NULL, 0);
            c->nodes[i].pid = 0;
        }
    }
    const char *keep = getenv("SYNOD_KEEP");
    if (keep && *keep == '1')
        fprintf(stderr, "keeping %s\n", c->base);
    else if (c->base[0])
        rm_rf(c->base);
    c->base[0] = 0;
}
