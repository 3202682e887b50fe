/* bench_proc.h - child processes and scratch space of the benchmarks that start their own clusters
 * (ops/bench/meta, ops/bench/paxos). */
#ifndef SYNOD_BENCH_PROC_H
#define SYNOD_BENCH_PROC_H

#include <sys/types.h>

/* A child running argv[0] with argv, stdin from /dev/null, stdout and stderr appended to log_path, killed
 * when this process dies (PR_SET_PDEATHSIG). PANICs if fork fails. */
pid_t bench_spawn(char *const argv[], const char *log_path);

/* A loopback TCP port that was free a moment ago (bind to port 0 and let go). */
int bench_free_port(void);

/* Remove dir and everything below it (best effort). */
void bench_rm_tree(const char *dir);

#endif
