/* kvc.h - a client of the "kv" state machine (synod-meta with state_machine = kv), for tests and the
 * synod-kv tool: a session, (session, seq) on every write, leader following and retries.
 *
 * Retries: EREMOTE with "leader=host:port" follows the hint; ENOTCONN, ETIMEDOUT, EAGAIN, ECANCELED and
 * EREMOTE without a hint move to the next server (with a short pause after a full round). A write is
 * retried with the SAME (session, seq), so the state machine applies it once. Every operation gives up
 * after the client's total timeout (-ETIMEDOUT). One struct kvc per thread (not thread-safe).
 */
#ifndef SYNOD_TESTS_KVC_H
#define SYNOD_TESTS_KVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { KVC_PUT = 0, KVC_ADD = 1, KVC_DEL = 2 };

struct kvc {
    char **servers;
    int n_servers;
    int cur; /* index into servers, or -1 when target is a hint */
    char target[256];
    uint64_t session, seq;
    int64_t call_timeout_ms, total_timeout_ms;
    unsigned retries; /* retries made (statistics) */
};

/* servers: "host:port,host:port,...". Cannot fail (an empty list fails every call). */
void kvc_init(struct kvc *c, const char *servers, int64_t total_timeout_ms);
void kvc_destroy(struct kvc *c);
/* Open a session (through the log). 0 or -errno. */
int kvc_open(struct kvc *c);
/* A write (op KVC_*) under the session (opened on first use). On success *reply (may be NULL; caller
 * frees) holds the apply's reply (ADD: the new total) and *zxid (may be NULL). */
int kvc_write(struct kvc *c, int op, const char *key, const void *val, size_t vlen, char **reply,
              uint64_t *zxid);
/* A read: linearizable from the leader, or `stale` from whichever server answers first. *val (caller
 * frees, NUL-terminated) is NULL and *found false when the key is absent. */
int kvc_get(struct kvc *c, const char *key, bool stale, char **val, size_t *vlen, bool *found);
/* One Get sent to one server only, no retries (for tests): 0, or -errno with the detail in detail. */
int kvc_get_at(const char *server, const char *key, bool stale, char **val, bool *found, char *detail,
               size_t dlen);

#endif
