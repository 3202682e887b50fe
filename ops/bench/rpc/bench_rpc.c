/* bench_rpc.c - throughput of the RPC layer on loopback: small-call rate and 1 MiB payloads, with and
 * without concurrency. The server runs in a forked child process (its own worker threads), the client
 * here, so the figures include the real loopback TCP path and both halves of the layer.
 *
 *   bench_rpc [seconds-per-case]      (default 3)
 */
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "rpctest.pb-c.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int echo_handler(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    UNUSED(arg);
    const Synod__Test__EchoReq *req = (const Synod__Test__EchoReq *)m;
    Synod__Test__EchoRep rep = SYNOD__TEST__ECHO_REP__INIT;
    rep.text = req->text;
    rep.data_len = req->data.len;
    rpc_reply(call, &rep.base);
    return 0;
}

static const rpc_handler_fn handlers[] = {echo_handler, NULL};

static void serve(int fd)
{
    struct rpc_server *srv;
    if (rpc_server_new("127.0.0.1:0", 2, &srv) != 0)
        exit(1);
    rpc_server_add_service(srv, &synod__test__echo__descriptor, handlers, NULL);
    rpc_server_start(srv);
    int port = rpc_server_port(srv);
    if (write(fd, &port, sizeof(port)) != sizeof(port))
        exit(1);
    pause();
}

static char target[64];
static uint64_t run_ns;
static uint8_t *payload;
static size_t payload_len;
static atomic_ulong done_calls;
static atomic_int failures;

static void *sync_main(void *arg)
{
    UNUSED(arg);
    struct rpc_channel *ch = rpc_channel_get(target);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "ping";
    struct rpc_payload p = {.data = payload, .len = payload_len, .release = NULL};
    uint64_t end = clk_mono_ns() + run_ns;
    while (clk_mono_ns() < end) {
        ProtobufCMessage *rep;
        int r = rpc_call(ch, &synod__test__echo__descriptor, "Echo", &req.base, payload_len ? &p : NULL, 10000,
                         &rep, NULL);
        if (r)
            atomic_fetch_add(&failures, 1);
        else
            rpc_message_free(rep);
        atomic_fetch_add(&done_calls, 1);
    }
    return NULL;
}

/* Asynchronous window: keep `window` calls in flight from one thread. */
static atomic_int inflight;
static pthread_mutex_t win_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t win_cv = PTHREAD_COND_INITIALIZER;

static void async_done(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    UNUSED(st);
    UNUSED(arg);
    if (err)
        atomic_fetch_add(&failures, 1);
    rpc_message_free(reply);
    atomic_fetch_add(&done_calls, 1);
    pthread_mutex_lock(&win_mu);
    atomic_fetch_sub(&inflight, 1);
    pthread_cond_signal(&win_cv);
    pthread_mutex_unlock(&win_mu);
}

static void run_async(int window)
{
    struct rpc_channel *ch = rpc_channel_get(target);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "ping";
    struct rpc_payload p = {.data = payload, .len = payload_len, .release = NULL};
    uint64_t end = clk_mono_ns() + run_ns;
    while (clk_mono_ns() < end) {
        pthread_mutex_lock(&win_mu);
        while (atomic_load(&inflight) >= window)
            pthread_cond_wait(&win_cv, &win_mu);
        atomic_fetch_add(&inflight, 1);
        pthread_mutex_unlock(&win_mu);
        rpc_call_async(ch, &synod__test__echo__descriptor, "Echo", &req.base, payload_len ? &p : NULL, 10000,
                       async_done, NULL);
    }
    pthread_mutex_lock(&win_mu);
    while (atomic_load(&inflight) > 0)
        pthread_cond_wait(&win_cv, &win_mu);
    pthread_mutex_unlock(&win_mu);
}

static void report(const char *name, int conc, uint64_t t0)
{
    double secs = (double)(clk_mono_ns() - t0) / 1e9;
    double rate = (double)atomic_load(&done_calls) / secs;
    if (payload_len)
        printf("%-28s %6d %12.0f %12.1f %10d\n", name, conc, rate, rate * (double)payload_len / 1e6,
               atomic_load(&failures));
    else
        printf("%-28s %6d %12.0f %12s %10d\n", name, conc, rate, "-", atomic_load(&failures));
    fflush(stdout);
}

static void bench_sync(const char *name, int threads)
{
    atomic_store(&done_calls, 0);
    atomic_store(&failures, 0);
    pthread_t th[64];
    uint64_t t0 = clk_mono_ns();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, sync_main, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    report(name, threads, t0);
}

static void bench_async(const char *name, int window)
{
    atomic_store(&done_calls, 0);
    atomic_store(&failures, 0);
    uint64_t t0 = clk_mono_ns();
    run_async(window);
    report(name, window, t0);
}

int main(int argc, char **argv)
{
    log_init("bench_rpc", LOG_LVL_WARN);
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    run_ns = (uint64_t)(secs * 1e9);
    int pfd[2];
    if (pipe(pfd))
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        serve(pfd[1]);
        _exit(0);
    }
    close(pfd[1]);
    int port;
    if (read(pfd[0], &port, sizeof(port)) != sizeof(port)) {
        fprintf(stderr, "server did not start\n");
        return 1;
    }
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    printf("RPC layer on loopback, server in a separate process with 2 workers, %.1f s per case\n", secs);
    printf("%-28s %6s %12s %12s %10s\n", "case", "conc", "calls/s", "MB/s", "failures");

    payload_len = 0;
    bench_sync("small, blocking", 1);
    bench_sync("small, blocking threads", 16);
    bench_async("small, async window", 64);
    bench_async("small, async window", 256);

    payload_len = 1u << 20;
    payload = xmalloc(payload_len);
    uint64_t seed = 1;
    for (size_t i = 0; i < payload_len; i++)
        payload[i] = (uint8_t)util_rand_next(&seed);
    bench_sync("1 MiB request, blocking", 1);
    bench_sync("1 MiB request, threads", 4);
    bench_async("1 MiB request, async window", 8);

    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    free(payload);
    return 0;
}
