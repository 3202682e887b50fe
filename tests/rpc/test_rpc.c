/* test_rpc.c - the RPC layer over loopback: each subtest runs as its own process (ctest rpc_<name>).
 *
 * The Echo service (rpctest.proto) echoes text, checks the CRC32C of the bulk data it received, can sleep,
 * fail with an errno, answer from another thread (deferred), or reply with lent bulk data. Raw gRPC calls
 * from this file send bytes that are not a valid message and call unknown methods.
 */
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "rpctest.pb-c.h"
#include "tests/test.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int handled;
static atomic_int lent_released;

struct deferred_job {
    struct rpc_call *call;
    uint32_t sleep_ms;
    char *text;
};

static void *deferred_main(void *arg)
{
    struct deferred_job *j = arg;
    clk_sleep_ns(j->sleep_ms * NS_PER_MS);
    Synod__Test__EchoRep rep = SYNOD__TEST__ECHO_REP__INIT;
    rep.text = j->text;
    rpc_reply(j->call, &rep.base);
    free(j->text);
    free(j);
    return NULL;
}

static void release_lent(void *ctx)
{
    free(ctx);
    atomic_fetch_add(&lent_released, 1);
}

static int echo_handler(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    UNUSED(arg);
    const Synod__Test__EchoReq *req = (const Synod__Test__EchoReq *)m;
    atomic_fetch_add(&handled, 1);
    if (req->defer) {
        struct deferred_job *j = xmalloc(sizeof(*j));
        j->call = call;
        j->sleep_ms = req->sleep_ms;
        j->text = xstrdup(req->text);
        pthread_t t;
        T_CHECK(pthread_create(&t, NULL, deferred_main, j) == 0);
        pthread_detach(t);
        return RPC_DEFERRED;
    }
    if (req->sleep_ms)
        clk_sleep_ns(req->sleep_ms * NS_PER_MS);
    if (req->fail_errno) {
        char detail[300];
        snprintf(detail, sizeof(detail), "detail:%s", req->text);
        rpc_fail(call, -req->fail_errno, detail);
        return 0;
    }
    Synod__Test__EchoRep rep = SYNOD__TEST__ECHO_REP__INIT;
    rep.text = req->text;
    rep.crc = crc32c(0, req->data.data, req->data.len);
    rep.data_len = req->data.len;
    if (req->reply_bytes) {
        uint8_t *buf = xmalloc(req->reply_bytes);
        for (uint32_t i = 0; i < req->reply_bytes; i++)
            buf[i] = (uint8_t)(i * 7 + 3);
        rpc_reply_lend(call, &rep.base, buf, req->reply_bytes, release_lent, buf);
        return 0;
    }
    rpc_reply(call, &rep.base);
    return 0;
}

static const rpc_handler_fn echo_handlers[] = {echo_handler, NULL};

static struct rpc_server *start_server(const char *addr, int threads)
{
    struct rpc_server *srv;
    T_EQ(rpc_server_new(addr, threads, &srv), 0);
    rpc_server_add_service(srv, &synod__test__echo__descriptor, echo_handlers, NULL);
    T_EQ(rpc_server_start(srv), 0);
    return srv;
}

static char target[64];

static struct rpc_server *start_any(int threads)
{
    struct rpc_server *srv = start_server("127.0.0.1:0", threads);
    snprintf(target, sizeof(target), "127.0.0.1:%d", rpc_server_port(srv));
    return srv;
}

/* One echo call; returns the errno and fills *out (caller frees) on success. */
static int echo(const char *tgt, Synod__Test__EchoReq *req, int64_t timeout_ms, Synod__Test__EchoRep **out,
                struct rpc_status *st)
{
    ProtobufCMessage *rep = NULL;
    int r = rpc_call(rpc_channel_get(tgt), &synod__test__echo__descriptor, "Echo", &req->base, NULL, timeout_ms,
                     &rep, st);
    if (out)
        *out = (Synod__Test__EchoRep *)rep;
    else
        rpc_message_free(rep);
    return r;
}

static void test_basic(void)
{
    struct rpc_server *srv = start_any(2);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "hello";
    uint8_t small[100];
    memset(small, 0x5a, sizeof(small));
    req.data.data = small;
    req.data.len = sizeof(small);
    Synod__Test__EchoRep *rep;
    T_EQ(echo(target, &req, 2000, &rep, NULL), 0);
    T_STREQ(rep->text, "hello");
    T_EQU(rep->crc, crc32c(0, small, sizeof(small)));
    T_EQ(rep->data_len, 100);
    rpc_message_free(&rep->base);
    /* Only the outcome: reply may be NULL. */
    T_EQ(rpc_call(rpc_channel_get(target), &synod__test__echo__descriptor, "Echo", &req.base, NULL, 2000, NULL,
                  NULL),
         0);
    /* The same channel object is reused for the same target. */
    T_CHECK(rpc_channel_get(target) == rpc_channel_get(target));
    rpc_server_free(srv);
    rpc_client_shutdown();
}

static void test_errors(void)
{
    struct rpc_server *srv = start_any(2);
    int errs[] = {ENOENT, EEXIST, EACCES, EPERM, ENOTEMPTY, ENAMETOOLONG, EREMOTE, ENOSPC, ESTALE, EXDEV};
    for (size_t i = 0; i < ARRAY_SIZE(errs); i++) {
        Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
        req.text = "leader=127.0.0.1:7001";
        req.fail_errno = errs[i];
        struct rpc_status st;
        Synod__Test__EchoRep *rep = (void *)1;
        T_EQ(echo(target, &req, 2000, &rep, &st), -errs[i]);
        T_CHECK(rep == NULL);
        T_EQ(st.err, -errs[i]);
        T_STREQ(st.detail, "detail:leader=127.0.0.1:7001");
    }
    /* The mapping is total and round-trips the common codes. */
    T_EQ(rpc_errno_from_status(rpc_status_from_errno(-ENOENT)), -ENOENT);
    T_EQ(rpc_errno_from_status(rpc_status_from_errno(-ETIMEDOUT)), -ETIMEDOUT);
    T_EQ(rpc_errno_from_status(rpc_status_from_errno(-ENOTCONN)), -ENOTCONN);
    T_EQ(rpc_status_from_errno(0), 0);
    rpc_server_free(srv);
    rpc_client_shutdown();
}

#define CONC_THREADS 16
#define CONC_CALLS 300

static void *conc_main(void *arg)
{
    long id = (long)arg;
    char text[64];
    for (int i = 0; i < CONC_CALLS; i++) {
        snprintf(text, sizeof(text), "t%ld-c%d", id, i);
        Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
        req.text = text;
        req.defer = (i % 10) == 0;
        Synod__Test__EchoRep *rep;
        int r = echo(target, &req, 10000, &rep, NULL);
        if (r != 0)
            T_FAIL("call %s failed: %d", text, r);
        T_STREQ(rep->text, text);
        rpc_message_free(&rep->base);
    }
    return NULL;
}

static void test_concurrent(void)
{
    struct rpc_server *srv = start_any(4);
    pthread_t th[CONC_THREADS];
    atomic_store(&handled, 0);
    for (long i = 0; i < CONC_THREADS; i++)
        T_CHECK(pthread_create(&th[i], NULL, conc_main, (void *)i) == 0);
    for (int i = 0; i < CONC_THREADS; i++)
        pthread_join(th[i], NULL);
    T_EQ(atomic_load(&handled), CONC_THREADS * CONC_CALLS);
    rpc_server_free(srv);
    rpc_client_shutdown();
}

static atomic_int async_ok, async_done;

static void async_done_cb(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    UNUSED(st);
    long want = (long)arg;
    if (err == 0) {
        Synod__Test__EchoRep *rep = (Synod__Test__EchoRep *)reply;
        if (atoi(rep->text) == want)
            atomic_fetch_add(&async_ok, 1);
        rpc_message_free(reply);
    }
    atomic_fetch_add(&async_done, 1);
}

static void test_async(void)
{
    struct rpc_server *srv = start_any(2);
    enum { N = 2000 };
    for (long i = 0; i < N; i++) {
        char text[32];
        snprintf(text, sizeof(text), "%ld", i);
        Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
        req.text = text;
        rpc_call_async(rpc_channel_get(target), &synod__test__echo__descriptor, "Echo", &req.base, NULL, 10000,
                       async_done_cb, (void *)i);
    }
    uint64_t start = clk_mono_ns();
    while (atomic_load(&async_done) < N && clk_mono_ns() - start < 30 * NS_PER_SEC)
        clk_sleep_ns(NS_PER_MS);
    T_EQ(atomic_load(&async_done), N);
    T_EQ(atomic_load(&async_ok), N);
    /* Async calls to a dead peer complete with an error, not never. */
    atomic_store(&async_done, 0);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "x";
    rpc_call_async(rpc_channel_get("127.0.0.1:1"), &synod__test__echo__descriptor, "Echo", &req.base, NULL, 5000,
                   async_done_cb, (void *)0);
    rpc_client_shutdown(); /* waits for the in-flight call */
    T_EQ(atomic_load(&async_done), 1);
    rpc_server_free(srv);
}

/* The file system id: a channel's id travels with every call (blocking and async); a server with another id
 * refuses before the handler runs (ENXIO, RPC_DETAIL_FOREIGN); either side at 0 checks nothing. */
static void test_fsid(void)
{
    struct rpc_server *srv = start_any(2);
    struct rpc_channel *ch = rpc_channel_get(target);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "x";
    struct rpc_status st;
    T_EQ(echo(target, &req, 2000, NULL, &st), 0); /* neither side has an id */
    rpc_channel_set_fsid(ch, 0x1234);
    T_EQ(echo(target, &req, 2000, NULL, &st), 0); /* the server was never given one: no check */
    rpc_server_set_fsid(srv, 0);                  /* a member that does not know it yet cannot vouch */
    T_EQ(echo(target, &req, 2000, NULL, &st), -ENXIO);
    T_CHECK(strncmp(st.detail, RPC_DETAIL_FOREIGN, strlen(RPC_DETAIL_FOREIGN)) == 0);
    rpc_channel_set_fsid(ch, 0);
    T_EQ(echo(target, &req, 2000, NULL, &st), 0); /* but serves callers that name none */
    rpc_channel_set_fsid(ch, 0x1234);
    rpc_server_set_fsid(srv, 0x1234);
    T_EQ(echo(target, &req, 2000, NULL, &st), 0); /* the same */
    int before = atomic_load(&handled);
    rpc_channel_set_fsid(ch, 0xfedcba9876543210ull);
    T_EQ(echo(target, &req, 2000, NULL, &st), -ENXIO);
    T_CHECK(strncmp(st.detail, RPC_DETAIL_FOREIGN, strlen(RPC_DETAIL_FOREIGN)) == 0);
    T_CHECK(strstr(st.detail, "0000000000001234") && strstr(st.detail, "fedcba9876543210"));
    T_EQ(atomic_load(&handled), before); /* refused before the handler */
    atomic_store(&async_done, 0);
    atomic_store(&async_ok, 0);
    rpc_call_async(ch, &synod__test__echo__descriptor, "Echo", &req.base, NULL, 5000, async_done_cb,
                   (void *)0);
    uint64_t start = clk_mono_ns();
    while (atomic_load(&async_done) < 1 && clk_mono_ns() - start < 10 * NS_PER_SEC)
        clk_sleep_ns(NS_PER_MS);
    T_EQ(atomic_load(&async_done), 1);
    T_EQ(atomic_load(&async_ok), 0);
    T_EQ(atomic_load(&handled), before);
    rpc_channel_set_fsid(ch, 0); /* a caller without an id is served */
    T_EQ(echo(target, &req, 2000, NULL, &st), 0);
    rpc_channel_set_fsid(ch, 0x1234);
    rpc_call_async(ch, &synod__test__echo__descriptor, "Echo", &req.base, NULL, 5000, async_done_cb,
                   (void *)0);
    start = clk_mono_ns();
    while (atomic_load(&async_done) < 2 && clk_mono_ns() - start < 10 * NS_PER_SEC)
        clk_sleep_ns(NS_PER_MS);
    T_EQ(atomic_load(&async_ok), 1);
    rpc_server_free(srv);
    rpc_client_shutdown();
}

static void test_deadline(void)
{
    struct rpc_server *srv = start_any(2);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "slow";
    req.sleep_ms = 1500;
    uint64_t t0 = clk_mono_ns();
    T_EQ(echo(target, &req, 200, NULL, NULL), -ETIMEDOUT);
    uint64_t took = (clk_mono_ns() - t0) / NS_PER_MS;
    fprintf(stderr, "deadline 200 ms -> failed after %llu ms\n", (unsigned long long)took);
    T_CHECK(took >= 190 && took < 1000);
    /* Deferred answers past the deadline are dropped quietly; the server stays healthy. */
    req.defer = true;
    req.sleep_ms = 400;
    T_EQ(echo(target, &req, 100, NULL, NULL), -ETIMEDOUT);
    clk_sleep_ns(1600 * NS_PER_MS);
    req.sleep_ms = 0;
    req.defer = false;
    T_EQ(echo(target, &req, 2000, NULL, NULL), 0);
    rpc_server_free(srv);
    rpc_client_shutdown();
}

static void test_dead_peer(void)
{
    /* Find a port nobody listens on: bind a server, learn its port, free it. */
    struct rpc_server *srv = start_any(1);
    char dead[64];
    snprintf(dead, sizeof(dead), "%s", target);
    rpc_server_free(srv);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "anyone";
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = clk_mono_ns();
        int r = echo(dead, &req, 5000, NULL, NULL);
        uint64_t took = (clk_mono_ns() - t0) / NS_PER_MS;
        fprintf(stderr, "dead peer: %d after %llu ms\n", r, (unsigned long long)took);
        T_EQ(r, -ENOTCONN);
        T_CHECK(took < 1500); /* fail fast, not the 5 s deadline */
    }
    rpc_client_shutdown();
}

static void test_large(void)
{
    struct rpc_server *srv = start_any(2);
    size_t sizes[] = {1u << 20, 8u << 20, 32u << 20};
    for (size_t k = 0; k < ARRAY_SIZE(sizes); k++) {
        size_t n = sizes[k];
        uint8_t *buf = xmalloc(n);
        uint64_t seed = n;
        for (size_t i = 0; i < n; i += 8) {
            uint64_t v = util_rand_next(&seed);
            memcpy(buf + i, &v, MIN(8, n - i));
        }
        Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
        req.text = "big";
        /* Once as a copied payload, once lent (zero copy). */
        for (int lend = 0; lend < 2; lend++) {
            struct rpc_payload p = {.data = buf, .len = n, .release = NULL, .ctx = NULL};
            if (lend) {
                uint8_t *copy = xmalloc(n);
                memcpy(copy, buf, n);
                p.data = copy;
                p.release = free;
                p.ctx = copy;
            }
            ProtobufCMessage *rep;
            T_EQ(rpc_call(rpc_channel_get(target), &synod__test__echo__descriptor, "Echo", &req.base, &p, 10000,
                          &rep, NULL),
                 0);
            Synod__Test__EchoRep *er = (Synod__Test__EchoRep *)rep;
            T_EQ(er->data_len, n);
            T_EQU(er->crc, crc32c(0, buf, n));
            rpc_message_free(rep);
        }
        free(buf);
    }
    /* Lent bulk replies arrive intact, and the lent buffer is released. */
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "give";
    req.reply_bytes = 4u << 20;
    Synod__Test__EchoRep *rep;
    T_EQ(echo(target, &req, 10000, &rep, NULL), 0);
    T_EQ(rep->data.len, 4u << 20);
    for (uint32_t i = 0; i < rep->data.len; i++)
        if (rep->data.data[i] != (uint8_t)(i * 7 + 3))
            T_FAIL("lent reply byte %u wrong", i);
    rpc_message_free(&rep->base);
    uint64_t t0 = clk_mono_ns();
    while (atomic_load(&lent_released) < 1 && clk_mono_ns() - t0 < 5 * NS_PER_SEC)
        clk_sleep_ns(NS_PER_MS);
    T_EQ(atomic_load(&lent_released), 1);
    /* Over the limit: a clear error, and the server lives on. */
    size_t over = RPC_MAX_MESSAGE + 1024;
    uint8_t *huge = xcalloc(1, over);
    struct rpc_payload p = {.data = huge, .len = over};
    ProtobufCMessage *r2 = NULL;
    int r = rpc_call(rpc_channel_get(target), &synod__test__echo__descriptor, "Echo", &req.base, &p, 10000, &r2,
                     NULL);
    fprintf(stderr, "oversize message -> %d\n", r);
    T_EQ(r, -EMSGSIZE);
    free(huge);
    req.reply_bytes = 0;
    T_EQ(echo(target, &req, 2000, NULL, NULL), 0);
    rpc_server_free(srv);
    rpc_client_shutdown();
}

/* A raw gRPC unary call with arbitrary bytes; returns the gRPC status code. */
static int raw_call(const char *tgt, const char *path, const void *bytes, size_t len)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(tgt, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice method = grpc_slice_from_copied_string(path);
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(5000, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, dl, NULL);
    grpc_slice s = grpc_slice_from_copied_buffer(bytes, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array md1, md2;
    grpc_metadata_array_init(&md1);
    grpc_metadata_array_init(&md2);
    grpc_status_code status;
    grpc_slice details;
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md1;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &md2;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    T_EQ(grpc_call_start_batch(call, ops, 6, ops, NULL), GRPC_CALL_OK);
    grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(bb);
    grpc_slice_unref(s);
    grpc_slice_unref(method);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md1);
    grpc_metadata_array_destroy(&md2);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    return (int)status;
}

static void test_malformed(void)
{
    struct rpc_server *srv = start_any(2);
    grpc_init();
    uint64_t seed = 42;
    uint8_t junk[512];
    int invalid = 0;
    for (int i = 0; i < 200; i++) {
        size_t len = 1 + util_rand_next(&seed) % sizeof(junk);
        for (size_t k = 0; k < len; k++)
            junk[k] = (uint8_t)util_rand_next(&seed);
        int st = raw_call(target, "/synod.test.Echo/Echo", junk, len);
        T_CHECK(st == GRPC_STATUS_INVALID_ARGUMENT || st == GRPC_STATUS_OK);
        invalid += st == GRPC_STATUS_INVALID_ARGUMENT;
    }
    fprintf(stderr, "200 random payloads: %d rejected as INVALID_ARGUMENT, rest decoded\n", invalid);
    T_CHECK(invalid > 100);
    /* Specific broken encodings: truncated varint, length past the end, wrong wire type, field 15 cut. */
    const uint8_t bad1[] = {0x08 | 0x10, 0xff};           /* field 2 varint, truncated */
    const uint8_t bad2[] = {0x0a, 0x50, 'a', 'b'};         /* field 1 string, length 80 but 2 bytes */
    const uint8_t bad3[] = {0x7a, 0x80, 0x80, 0x04, 1, 2}; /* field 15, length 64 KiB, 2 bytes */
    const uint8_t bad4[] = {0x0b};                         /* start group: unsupported */
    T_EQ(raw_call(target, "/synod.test.Echo/Echo", bad1, sizeof(bad1)), GRPC_STATUS_INVALID_ARGUMENT);
    T_EQ(raw_call(target, "/synod.test.Echo/Echo", bad2, sizeof(bad2)), GRPC_STATUS_INVALID_ARGUMENT);
    T_EQ(raw_call(target, "/synod.test.Echo/Echo", bad3, sizeof(bad3)), GRPC_STATUS_INVALID_ARGUMENT);
    T_EQ(raw_call(target, "/synod.test.Echo/Echo", bad4, sizeof(bad4)), GRPC_STATUS_INVALID_ARGUMENT);
    /* An empty field 15 at the very end: data points at the end of the buffer and frees cleanly. */
    const uint8_t empty_data[] = {0x0a, 0x01, 'k', 0x7a, 0x00};
    T_EQ(raw_call(target, "/synod.test.Echo/Echo", empty_data, sizeof(empty_data)), GRPC_STATUS_OK);
    /* Field 15 duplicated, the last one not at the end: still decodes (last wins). */
    const uint8_t dup[] = {0x7a, 0x01, 'x', 0x7a, 0x02, 'y', 'z', 0x0a, 0x01, 'k'};
    T_EQ(raw_call(target, "/synod.test.Echo/Echo", dup, sizeof(dup)), GRPC_STATUS_OK);
    /* And the server still serves. */
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "still here";
    T_EQ(echo(target, &req, 2000, NULL, NULL), 0);
    rpc_server_free(srv);
    rpc_client_shutdown();
    grpc_shutdown();
}

static void test_unknown_method(void)
{
    struct rpc_server *srv = start_any(2);
    grpc_init();
    uint64_t t0 = clk_mono_ns();
    T_EQ(raw_call(target, "/synod.test.Echo/NoSuchMethod", "", 0), GRPC_STATUS_UNIMPLEMENTED);
    T_EQ(raw_call(target, "/no.Such/Service", "", 0), GRPC_STATUS_UNIMPLEMENTED);
    T_CHECK(clk_mono_ns() - t0 < 2 * NS_PER_SEC); /* answered, not left to the deadline */
    /* A declared method without a handler answers UNIMPLEMENTED (-ENOSYS) through the client too. */
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "x";
    ProtobufCMessage *rep;
    T_EQ(rpc_call(rpc_channel_get(target), &synod__test__echo__descriptor, "Unimplemented", &req.base, NULL, 2000,
                  &rep, NULL),
         -ENOSYS);
    rpc_server_free(srv);
    rpc_client_shutdown();
    grpc_shutdown();
}

static void test_deferred(void)
{
    struct rpc_server *srv = start_any(1);
    /* With one worker, 20 deferred calls of 300 ms each overlap: total well under 20 x 300 ms. */
    enum { N = 20 };
    atomic_store(&async_done, 0);
    atomic_store(&async_ok, 0);
    uint64_t t0 = clk_mono_ns();
    for (long i = 0; i < N; i++) {
        char text[32];
        snprintf(text, sizeof(text), "%ld", i);
        Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
        req.text = text;
        req.defer = true;
        req.sleep_ms = 300;
        rpc_call_async(rpc_channel_get(target), &synod__test__echo__descriptor, "Echo", &req.base, NULL, 10000,
                       async_done_cb, (void *)i);
    }
    while (atomic_load(&async_done) < N && clk_mono_ns() - t0 < 10 * NS_PER_SEC)
        clk_sleep_ns(NS_PER_MS);
    uint64_t took = (clk_mono_ns() - t0) / NS_PER_MS;
    fprintf(stderr, "%d deferred calls of 300 ms on one worker: %llu ms\n", N, (unsigned long long)took);
    T_EQ(atomic_load(&async_ok), N);
    T_CHECK(took < 3000);
    rpc_server_free(srv);
    rpc_client_shutdown();
}

static void test_addr_in_use(void)
{
    struct rpc_server *srv = start_any(1);
    struct rpc_server *second = NULL;
    T_EQ(rpc_server_new(target, 1, &second), -EADDRINUSE);
    T_CHECK(second == NULL);
    rpc_server_free(srv);
}

static void test_restart(void)
{
    struct rpc_server *srv = start_any(2);
    char addr[64];
    snprintf(addr, sizeof(addr), "%s", target);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "one";
    T_EQ(echo(addr, &req, 2000, NULL, NULL), 0);
    rpc_server_free(srv);
    T_EQ(echo(addr, &req, 2000, NULL, NULL), -ENOTCONN);
    srv = start_server(addr, 2);
    uint64_t t0 = clk_mono_ns();
    int r;
    while ((r = echo(addr, &req, 2000, NULL, NULL)) != 0 && clk_mono_ns() - t0 < 10 * NS_PER_SEC)
        clk_sleep_ns(20 * NS_PER_MS);
    uint64_t took = (clk_mono_ns() - t0) / NS_PER_MS;
    fprintf(stderr, "restarted server reachable on the old channel after %llu ms\n", (unsigned long long)took);
    T_EQ(r, 0);
    T_CHECK(took < 3000);
    rpc_server_free(srv);
    rpc_client_shutdown();
}

static void *cont_later(void *arg)
{
    pid_t pid = (pid_t)(intptr_t)arg;
    clk_sleep_ns(400 * NS_PER_MS);
    kill(pid, SIGCONT);
    return NULL;
}

/* A peer slow to finish the connection handshake is still reached by a call whose deadline allows it. Here
 * the server is a stopped process: the kernel accepts its TCP connections, the HTTP/2 handshake waits until
 * it runs again 400 ms later (a replica restarting on a loaded machine answered after 200-400 ms). gRPC's
 * minimum connect timeout is the channel argument min_reconnect_backoff; at 100 ms every attempt was cut
 * short ("tcp handshaker shutdown"), the channel went to TRANSIENT_FAILURE and the call failed at once. */
static void test_slow_handshake(void)
{
    int fds[2];
    T_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    T_CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        struct rpc_server *srv = start_any(2);
        int port = rpc_server_port(srv);
        if (write(fds[1], &port, sizeof(port)) != (ssize_t)sizeof(port))
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    int port = 0;
    T_EQ(read(fds[0], &port, sizeof(port)), (ssize_t)sizeof(port));
    close(fds[0]);
    T_EQ(kill(pid, SIGSTOP), 0);
    int st;
    T_EQ(waitpid(pid, &st, WUNTRACED), pid);
    T_CHECK(WIFSTOPPED(st));
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    pthread_t th;
    T_CHECK(pthread_create(&th, NULL, cont_later, (void *)(intptr_t)pid) == 0);
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "slow";
    struct rpc_status rs;
    uint64_t t0 = clk_mono_ns();
    int r = echo(addr, &req, 3000, NULL, &rs);
    uint64_t took = (clk_mono_ns() - t0) / NS_PER_MS;
    fprintf(stderr, "call to a peer that handshakes after 400 ms: %d (%s) after %llu ms\n", r, r ? rs.detail : "ok",
            (unsigned long long)took);
    pthread_join(th, NULL);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    T_EQ(r, 0);
    T_CHECK(took >= 350);
    rpc_client_shutdown();
}

static atomic_bool load_stop;
static atomic_int load_ok, load_err;

static void *load_main(void *arg)
{
    long id = (long)arg;
    int i = 0;
    while (!atomic_load(&load_stop)) {
        Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
        req.text = "load";
        req.defer = (i % 3) == 0;
        req.sleep_ms = (uint32_t)((id + i) % 4) * 10;
        int r = echo(target, &req, 3000, NULL, NULL);
        if (r == 0)
            atomic_fetch_add(&load_ok, 1);
        else
            atomic_fetch_add(&load_err, 1);
        i++;
    }
    return NULL;
}

static void test_shutdown_load(void)
{
    for (int round = 0; round < 5; round++) {
        struct rpc_server *srv = start_any(3);
        atomic_store(&load_stop, false);
        pthread_t th[8];
        for (long i = 0; i < 8; i++)
            T_CHECK(pthread_create(&th[i], NULL, load_main, (void *)i) == 0);
        clk_sleep_ns(300 * NS_PER_MS);
        uint64_t t0 = clk_mono_ns();
        rpc_server_free(srv); /* with calls in flight, some parked (deferred) */
        uint64_t took = (clk_mono_ns() - t0) / NS_PER_MS;
        atomic_store(&load_stop, true);
        for (int i = 0; i < 8; i++)
            pthread_join(th[i], NULL);
        fprintf(stderr, "round %d: shutdown took %llu ms; ok=%d err=%d\n", round, (unsigned long long)took,
                atomic_load(&load_ok), atomic_load(&load_err));
        T_CHECK(took < 2000);
        T_CHECK(atomic_load(&load_ok) > 0);
    }
    clk_sleep_ns(500 * NS_PER_MS); /* let orphaned deferred jobs answer (and free) their calls */
    rpc_client_shutdown();
}

/* ---- cancellation ------------------------------------------------------------------------------------ */

struct trigger_job {
    struct rpc_cancel *tok;
    uint64_t delay_ns;
    uint64_t at; /* when the trigger fired (mono ns) */
};

static void *trigger_main(void *arg)
{
    struct trigger_job *j = arg;
    clk_sleep_ns(j->delay_ns);
    j->at = clk_mono_ns();
    rpc_cancel_trigger(j->tok);
    return NULL;
}

static atomic_int cancel_done_n, cancel_done_cancelled;

static void cancel_done_cb(int err, ProtobufCMessage *reply, const struct rpc_status *st, void *arg)
{
    UNUSED(st);
    UNUSED(arg);
    rpc_message_free(reply);
    if (err == -ECANCELED)
        atomic_fetch_add(&cancel_done_cancelled, 1);
    atomic_fetch_add(&cancel_done_n, 1);
}

struct race_arg {
    struct rpc_cancel *tok;
    atomic_int *phase;
};

static void test_cancel(void)
{
    struct rpc_server *srv = start_any(4);
    struct rpc_channel *ch = rpc_channel_get(target);
    /* A handler that does not answer for 2 s (parked: it holds no worker); a trigger 50 ms into the call
     * must end it within ~100 ms. */
    Synod__Test__EchoReq slow = SYNOD__TEST__ECHO_REQ__INIT;
    slow.text = "slow";
    slow.defer = true;
    slow.sleep_ms = 2000;
    for (int round = 0; round < 3; round++) {
        struct rpc_cancel tok;
        rpc_cancel_init(&tok);
        struct trigger_job j = {.tok = &tok, .delay_ns = 50 * NS_PER_MS};
        pthread_t t;
        T_CHECK(pthread_create(&t, NULL, trigger_main, &j) == 0);
        ProtobufCMessage *rep = (void *)1;
        struct rpc_status st;
        uint64_t t0 = clk_mono_ns();
        int r = rpc_call_cancellable(ch, &synod__test__echo__descriptor, "Echo", &slow.base, NULL, 10000, &tok, &rep,
                                     &st);
        uint64_t t1 = clk_mono_ns();
        pthread_join(t, NULL);
        T_EQ(r, -ECANCELED);
        T_CHECK(rep == NULL);
        T_EQ(st.err, -ECANCELED);
        fprintf(stderr, "cancelled blocking call returned %.1f ms after the trigger (%.1f ms in all)\n",
                (double)(t1 - j.at) / 1e6, (double)(t1 - t0) / 1e6);
        T_CHECK(t1 - j.at < 100 * NS_PER_MS);
        /* Sticky: a later call with the same token is refused without reaching the server. */
        int before = atomic_load(&handled);
        Synod__Test__EchoReq quick = SYNOD__TEST__ECHO_REQ__INIT;
        quick.text = "quick";
        T_EQ(rpc_call_cancellable(ch, &synod__test__echo__descriptor, "Echo", &quick.base, NULL, 2000, &tok, NULL,
                                  NULL),
             -ECANCELED);
        T_EQ(atomic_load(&handled), before);
        T_EQ(rpc_cancel_sleep(&tok, 10 * NS_PER_SEC), -ECANCELED);
        rpc_cancel_destroy(&tok);
    }
    /* Cancel after completion is a no-op: the result stands and the token can be triggered and destroyed. */
    {
        struct rpc_cancel tok;
        rpc_cancel_init(&tok);
        Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
        req.text = "done";
        ProtobufCMessage *rep;
        T_EQ(rpc_call_cancellable(ch, &synod__test__echo__descriptor, "Echo", &req.base, NULL, 2000, &tok, &rep, NULL),
             0);
        rpc_cancel_trigger(&tok);
        rpc_cancel_trigger(&tok); /* idempotent */
        T_STREQ(((Synod__Test__EchoRep *)rep)->text, "done");
        rpc_message_free(rep);
        rpc_cancel_destroy(&tok);
    }
    /* Asynchronous calls on one token: all end with -ECANCELED promptly; a token triggered before the call
     * fails it from the calling thread. */
    {
        struct rpc_cancel tok;
        rpc_cancel_init(&tok);
        atomic_store(&cancel_done_n, 0);
        atomic_store(&cancel_done_cancelled, 0);
        for (int i = 0; i < 8; i++)
            rpc_call_async_cancellable(ch, &synod__test__echo__descriptor, "Echo", &slow.base, NULL, 10000, &tok,
                                       cancel_done_cb, NULL);
        clk_sleep_ns(50 * NS_PER_MS);
        uint64_t t0 = clk_mono_ns();
        rpc_cancel_trigger(&tok);
        while (atomic_load(&cancel_done_n) < 8 && clk_mono_ns() - t0 < 5 * NS_PER_SEC)
            clk_sleep_ns(NS_PER_MS);
        uint64_t took = clk_mono_ns() - t0;
        fprintf(stderr, "8 cancelled async calls completed %.1f ms after the trigger\n", (double)took / 1e6);
        T_EQ(atomic_load(&cancel_done_n), 8);
        T_EQ(atomic_load(&cancel_done_cancelled), 8);
        T_CHECK(took < 100 * NS_PER_MS);
        rpc_call_async_cancellable(ch, &synod__test__echo__descriptor, "Echo", &slow.base, NULL, 10000, &tok,
                                   cancel_done_cb, NULL);
        T_EQ(atomic_load(&cancel_done_n), 9);
        rpc_cancel_destroy(&tok);
    }
    /* Races: triggers at random moments around short calls (run under ASan: no use after free, no leak);
     * every call either completes or is cancelled, and the lent payload is released exactly once. */
    {
        uint64_t seed = 12345;
        int ok = 0, cancelled = 0;
        atomic_store(&lent_released, 0);
        for (int i = 0; i < 300; i++) {
            struct rpc_cancel tok;
            rpc_cancel_init(&tok);
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            struct trigger_job j = {.tok = &tok, .delay_ns = (seed >> 33) % 400000};
            pthread_t t;
            T_CHECK(pthread_create(&t, NULL, trigger_main, &j) == 0);
            Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
            req.text = "race";
            uint8_t *buf = xmalloc(4096);
            memset(buf, (int)i, 4096);
            struct rpc_payload pl = {.data = buf, .len = 4096, .release = release_lent, .ctx = buf};
            int r = rpc_call_cancellable(ch, &synod__test__echo__descriptor, "Echo", &req.base, &pl, 2000, &tok, NULL,
                                         NULL);
            pthread_join(t, NULL);
            T_CHECK(r == 0 || r == -ECANCELED);
            ok += r == 0;
            cancelled += r == -ECANCELED;
            rpc_cancel_destroy(&tok);
        }
        for (int k = 0; k < 200 && atomic_load(&lent_released) < 300; k++)
            clk_sleep_ns(10 * NS_PER_MS);
        fprintf(stderr, "races: %d completed, %d cancelled\n", ok, cancelled);
        T_EQ(atomic_load(&lent_released), 300);
    }
    /* The channel is still healthy. */
    Synod__Test__EchoReq req = SYNOD__TEST__ECHO_REQ__INIT;
    req.text = "after";
    T_EQ(echo(target, &req, 2000, NULL, NULL), 0);
    rpc_server_free(srv);
    clk_sleep_ns(2200 * NS_PER_MS); /* let the parked jobs answer (and free) their orphaned calls */
    rpc_client_shutdown();
}

int main(int argc, char **argv)
{
    log_init("test_rpc", LOG_LVL_WARN);
    if (argc != 2) {
        fprintf(stderr, "usage: test_rpc TEST\n");
        return 2;
    }
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"basic", test_basic},         {"errors", test_errors},     {"concurrent", test_concurrent},
        {"async", test_async},         {"deadline", test_deadline}, {"dead_peer", test_dead_peer},
        {"large", test_large},         {"malformed", test_malformed}, {"unknown_method", test_unknown_method},
        {"deferred", test_deferred},   {"addr_in_use", test_addr_in_use}, {"restart", test_restart},
        {"slow_handshake", test_slow_handshake},
        {"shutdown_load", test_shutdown_load}, {"cancel", test_cancel}, {"fsid", test_fsid},
    };
    for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
        if (strcmp(argv[1], tests[i].name) == 0) {
            tests[i].fn();
            fprintf(stderr, "PASS %s\n", tests[i].name);
            return 0;
        }
    }
    fprintf(stderr, "unknown test %s\n", argv[1]);
    return 2;
}
