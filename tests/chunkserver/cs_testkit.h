/* cs_testkit.h - helpers for chunkserver tests and the chain benchmark: real synod-chunk processes, a
 * ChunkData client, and a test-double metaserver (a small ChunkControl server inside the test process).
 *
 * Processes are started with fork/exec of the binary path CMake passes in, on port 0; the bound address is
 * read from the daemon's "listening host:port" stdout line. Every process, temp dir and mount a test makes
 * is registered here and cleaned up at exit (atexit), also when a check fails.
 */
#ifndef SYNOD_CS_TESTKIT_H
#define SYNOD_CS_TESTKIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "chunk.pb-c.h"
#include "common/rpc.h"

/* ---- test programs: `test_x SYNOD_CHUNK_BINARY NAME` runs the test called NAME ---- */

struct tk_test {
    const char *name;
    void (*fn)(void);
};
/* Set tk_binary from argv[1] and run the test named argv[2] from the NULL-terminated table. */
int tk_main(int argc, char **argv, const struct tk_test *tests);

/* ---- processes and temp dirs ---- */

struct cs_proc {
    pid_t pid;
    char addr[64];
};

/* The daemon binary (set once from argv). */
extern const char *tk_binary;

/* A fresh temp dir (removed at exit). Returns a static-lifetime string. */
const char *tk_tempdir(const char *tag);
/* Start synod-chunk with data_dirs and metaservers (may be "") plus extra "--k=v" args (NULL-terminated).
 * Fails the test if it does not come up in 20 s. */
void tk_start(struct cs_proc *p, const char *data_dirs, const char *metaservers, ...) __attribute__((sentinel));
/* Send sig and (for SIGKILL/SIGTERM) wait for the exit; returns the wait status. */
int tk_stop(struct cs_proc *p, int sig);
/* A shell command to run at exit, after the processes are killed (e.g. "umount -l X"); run in reverse
 * order of registration. */
void tk_cleanup_sh(const char *cmd);
/* Run a shell command; returns its exit status (-1 if it could not run). */
int tk_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- ChunkData client ---- */

/* Deadline of the client calls below (ms, default 20000). */
extern int64_t tk_timeout_ms;
/* Write plain data through `head` along chain[0..nchain) (addresses). Returns 0 or -errno; st may be NULL. */
int tk_write(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version, uint64_t off,
             const void *data, size_t len, bool create, struct rpc_status *st);
/* tk_write with its own deadline (tk_timeout_ms is shared by all threads). */
int tk_write_timeout(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version,
                     uint64_t off, const void *data, size_t len, bool create, int64_t timeout_ms, struct rpc_status *st);
/* tk_write_timeout with WriteReq.sync; *synced (may be NULL) = the answer's WriteRep.synced. */
int tk_write_sync(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version,
                  uint64_t off, const void *data, size_t len, bool create, bool sync, bool *synced,
                  int64_t timeout_ms, struct rpc_status *st);
/* A batched Write (WriteReq.ranges): runs [offs[i], offs[i] + lens[i]) inside the chunk, their bytes
 * concatenated in data (sum of lens bytes). Sent as given (tests also send malformed batches). */
int tk_write_runs(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version,
                  const uint64_t *offs, const uint32_t *lens, size_t nruns, const void *data, bool create,
                  struct rpc_status *st);
/* A plain read with plain_crc: fills out[0..len) (zero-filled past the chunk's end) after checking that the
 * reply carries data_crc and that it matches. Returns 0, -EBADMSG on a missing or wrong CRC, or -errno. */
int tk_read_crc(const char *addr, uint64_t id, uint32_t version, uint64_t off, size_t len, void *out);
int tk_fsync(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version,
             struct rpc_status *st);
/* Read [off, off+len) into out (zero-filled past the chunk's end); stored form is decoded and CRC-checked
 * here. Returns 0 or -errno. */
int tk_read(const char *addr, uint64_t id, uint32_t version, uint64_t off, size_t len, bool stored, void *out);
/* A raw gRPC unary call with arbitrary bytes; returns the gRPC status code. */
int tk_raw_call(const char *target, const char *path, const void *bytes, size_t len);
/* Fill buf deterministically: compressible (text-like) or not. */
void tk_fill(void *buf, size_t len, uint64_t seed, bool compressible);

/* ---- test-double metaserver ---- */

enum fm_mode { FM_LEADER, FM_REDIRECT };

struct fake_meta {
    struct rpc_server *srv;
    char addr[64];
    pthread_mutex_t mu;
    enum fm_mode mode;
    char redirect_to[64];
    uint32_t next_id;
    /* recorded */
    int registrations;
    uint32_t last_reg_id; /* id the chunkserver asked for */
    char last_uuid[64];
    char last_addr[64];
    int heartbeats;
    int reports_done; /* complete reports (first..last) received */
    Synod__V1__ChunkVersion *report; /* chunks of the last complete report */
    size_t nreport;
    Synod__V1__ChunkVersion *building;
    size_t nbuilding;
    Synod__V1__ChunkVersion *lost; /* every chunk reported lost */
    size_t nlost;
    Synod__V1__ChunkCmdResult *results;
    size_t nresults;
    Synod__V1__ChainFailure *cfails; /* every chain failure reported */
    size_t ncfails;
    uint32_t last_failed_dirs;
    uint64_t last_total;
    uint32_t last_chunks;
    /* to hand out */
    Synod__V1__ChunkCmd *cmds;
    size_t ncmds;
    bool want_report;
    bool unknown; /* heartbeats answer ENOENT ("register first") until a registration */
    uint32_t heartbeat_ms;  /* told at registration (0: 100) */
    uint64_t cmds_sent_ns;  /* CLOCK_MONOTONIC of the last heartbeat answer that carried commands */
    uint64_t result_ns;     /* ... and of the last heartbeat that brought results */
};

/* Start a double on a free port (mode FM_LEADER, ids from 100). Cannot fail (fails the test). */
void fm_start(struct fake_meta *fm);
void fm_free(struct fake_meta *fm);
/* Queue a command for the next heartbeat (source may be NULL). */
void fm_push_cmd(struct fake_meta *fm, uint64_t cmd_id, uint32_t type, uint64_t chunk, uint32_t version,
                 uint32_t new_version, const char *source);
/* Wait (up to timeout_ms) until pred(fm, arg) holds, evaluated under fm->mu. Returns true if it did. */
bool fm_wait(struct fake_meta *fm, bool (*pred)(struct fake_meta *, const void *), const void *arg, int timeout_ms);
/* Predicates. */
bool fm_has_lost(struct fake_meta *fm, const void *chunk_id_ptr);
bool fm_has_chain_failure(struct fake_meta *fm, const void *chunk_id_ptr);
bool fm_has_result(struct fake_meta *fm, const void *cmd_id_ptr);
bool fm_reports_at_least(struct fake_meta *fm, const void *int_ptr);
bool fm_heartbeats_at_least(struct fake_meta *fm, const void *int_ptr);
/* Result errno of cmd_id (call after fm_has_result). */
int fm_result(struct fake_meta *fm, uint64_t cmd_id);

#endif
