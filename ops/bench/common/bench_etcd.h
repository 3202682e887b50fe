/* bench_etcd.h - running etcd, the named peer of ops/bench/paxos and ops/bench/meta: the command line of each
 * member of a new loopback cluster, and the probes that find its leader. Processes are the caller's (it
 * spawns the argv, kills and reaps by PID). The API is etcd's public v3 gRPC API through etcd_min.proto. */
#ifndef SYNOD_BENCH_ETCD_H
#define SYNOD_BENCH_ETCD_H

#include <stdbool.h>
#include <stdint.h>

#define BENCH_ETCD_ARGS 40 /* argv slots bench_etcd_args fills (NULL-terminated) */

/* argv of member i of an n-member cluster: client address client[i] ("127.0.0.1:port"), peer port
 * peer_port[i], data in dir/etcd<i>, logs at warn level on stderr, default fsync behaviour. Strings are
 * allocated: bench_etcd_free_args. token names the cluster (unique per run). */
void bench_etcd_args(const char *etcd_bin, const char *dir, const char *token, int i, int n,
                     char client[][64], const int *peer_port, char *argv[BENCH_ETCD_ARGS]);
void bench_etcd_free_args(char *argv[BENCH_ETCD_ARGS]);

/* Maintenance.Status of the member at addr: 0 with its member id and the leader it believes in (0: none), or
 * -errno. */
int bench_etcd_status(const char *addr, uint64_t *self_id, uint64_t *leader_id);

/* Index of the member (among the n at client[], those with alive[i]) that every answering member names as
 * leader, or -1. */
int bench_etcd_leader(char client[][64], const bool *alive, int n);

#endif
