/* cluster.h - real synod-meta processes on loopback for tests: free ports, temp data dirs, fork/exec,
 * kill/stop/restart by PID, and cleanup on every exit path (an atexit hook kills every child and removes
 * the directory unless SYNOD_KEEP=1 is set; each node's log is <dir>/node<i>.log).
 */
#ifndef SYNOD_TESTS_CLUSTER_H
#define SYNOD_TESTS_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define CL_MAX_NODES 5

struct cl_node {
    pid_t pid;
    int port;
    char addr[64];
    char dir[300];
};

struct cluster {
    int n;
    const char *bin;
    char base[256];
    char peers[CL_MAX_NODES * 64];
    char servers[CL_MAX_NODES * 64]; /* same list, for kvc */
    const char *extra[16];           /* extra --key=value arguments for every node, NULL-terminated */
    struct cl_node nodes[CL_MAX_NODES];
};

/* Create n nodes (not started) with free ports and a temp base dir. extra: NULL-terminated or NULL. */
void cl_init(struct cluster *c, int n, const char *bin, const char *const *extra);
void cl_start(struct cluster *c, int i);
void cl_start_all(struct cluster *c);
/* Send sig to node i; SIGKILL/SIGTERM also reap it (a SIGTERM'd node gets 10 s, then SIGKILL) and return
 * its wait status; 0 for other signals, -1 if the node is not running. */
int cl_signal(struct cluster *c, int i, int sig);
bool cl_alive(struct cluster *c, int i);
/* Remove node i's data dir (node must be down). */
void cl_wipe(struct cluster *c, int i);
/* The node that serves a linearizable Get within timeout_ms, or -1. */
int cl_leader(struct cluster *c, int timeout_ms);
/* SIGTERM every running node and reap it; returns how many did not exit with status 0 (crash, sanitizer
 * report, leak), printing the tail of their logs. */
int cl_stop_all(struct cluster *c);
/* Kill everything and remove the directory. */
void cl_destroy(struct cluster *c);
/* The cluster id its nodes carry in every Paxos batch (rsm_cluster_id of their peers, no cluster_token). */
uint64_t cl_cluster_id(const struct cluster *c);
/* Whether node i's log contains text. */
bool cl_log_has(struct cluster *c, int i, const char *text);

#endif
