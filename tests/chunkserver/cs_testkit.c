/* cs_testkit.c - real synod-chunk processes, a ChunkData client and a test-double metaserver (see header). */
#include "tests/chunkserver/cs_testkit.h"

#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/codec.h"
#include "common/crc32c.h"
#include "common/util.h"
#include "tests/test.h"


const char *tk_binary;
int64_t tk_timeout_ms = 20000;

int tk_main(int argc, char **argv, const struct tk_test *tests)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SYNOD_CHUNK_BINARY TEST\n", argv[0]);
        return 2;
    }
    tk_binary = argv[1];
    for (const struct tk_test *t = tests; t->name; t++) {
        if (!strcmp(t->name, argv[2])) {
            fprintf(stderr, "-- %s\n", t->name);
            t->fn();
            return 0;
        }
    }
    T_FAIL("unknown test %s", argv[2]);
}

/* ---- cleanup registry ---- */

static pid_t procs[64];
static size_t nprocs;
static char *dirs[64];
static size_t ndirs;
static char *mounts[16]; /* cleanup commands */
static size_t nmounts;
static pid_t owner_pid;

static void cleanup(void)
{
    if (getpid() != owner_pid)
        return;
    for (size_t i = 0; i < nprocs; i++) {
        if (procs[i] > 0) {
            kill(procs[i], SIGKILL);
            waitpid(procs[i], NULL, 0);
        }
    }
    for (size_t i = nmounts; i-- > 0;) {
        tk_sh("%s", mounts[i]);
        free(mounts[i]);
    }
    for (size_t i = 0; i < ndirs; i++) {
        tk_sh("rm -rf '%s'", dirs[i]);
        free(dirs[i]);
    }
}

static void register_cleanup(void)
{
    if (!owner_pid) {
        owner_pid = getpid();
        atexit(cleanup);
    }
}

int tk_sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd;
    if (vasprintf(&cmd, fmt, ap) < 0)
        abort();
    va_end(ap);
    int r = system(cmd);
    free(cmd);
    return r == -1 ? -1 : WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

const char *tk_tempdir(const char *tag)
{
    register_cleanup();
    char *t = xasprintf("/tmp/synod-cs-%s-XXXXXX", tag);
    if (!mkdtemp(t))
        T_FAIL("mkdtemp: %s", strerror(errno));
    ASSERT(ndirs < ARRAY_SIZE(dirs));
    dirs[ndirs++] = t;
    return t;
}

void tk_cleanup_sh(const char *cmd)
{
    register_cleanup();
    ASSERT(nmounts < ARRAY_SIZE(mounts));
    mounts[nmounts++] = xstrdup(cmd);
}

void tk_start(struct cs_proc *p, const char *data_dirs, const char *metaservers, ...)
{
    register_cleanup();
    ASSERT(tk_binary);
    char *argv[40];
    int argc = 0;
    argv[argc++] = (char *)tk_binary;
    argv[argc++] = "--listen=127.0.0.1:0";
    argv[argc++] = xasprintf("--data_dirs=%s", data_dirs);
    argv[argc++] = xasprintf("--metaservers=%s", metaservers ? metaservers : "");
    argv[argc++] = "--log_level=warn";
    va_list ap;
    va_start(ap, metaservers);
    for (const char *a; (a = va_arg(ap, const char *)) && argc < 38;)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    int fds[2];
    T_CHECK(pipe2(fds, O_CLOEXEC) == 0);
    pid_t pid = fork();
    T_CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a test killed by its timeout */
        dup2(fds[1], 1);
        execv(tk_binary, argv);
        _exit(127);
    }
    close(fds[1]);
    free(argv[2]);
    free(argv[3]);
    ASSERT(nprocs < ARRAY_SIZE(procs));
    procs[nprocs++] = pid;
    p->pid = pid;
    char line[160];
    size_t n = 0;
    uint64_t deadline = clk_mono_ns() + 20 * NS_PER_SEC;
    while (n < sizeof(line) - 1 && (n == 0 || line[n - 1] != '\n')) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int64_t left = (int64_t)(deadline - clk_mono_ns()) / (int64_t)NS_PER_MS;
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            T_FAIL("synod-chunk did not come up");
        ssize_t k = read(fds[0], line + n, 1);
        if (k <= 0)
            T_FAIL("synod-chunk exited during start-up");
        n++;
    }
    line[n] = 0;
    close(fds[0]);
    T_CHECK(sscanf(line, "listening %63s", p->addr) == 1);
    /* Probe until the service answers (an unknown chunk: ENOENT), so a first call never races start-up. */
    uint8_t b;
    int r = -ENOTCONN;
    for (int i = 0; i < 100 && r != -ENOENT; i++) {
        r = tk_read(p->addr, UINT64_MAX, 1, 0, 1, false, &b);
        if (r != -ENOENT) {
            fprintf(stderr, "probe %s: %d\n", p->addr, r);
            clk_sleep_ns(50 * NS_PER_MS);
        }
    }
    if (r != -ENOENT)
        T_FAIL("synod-chunk at %s does not answer: %d", p->addr, r);
}

int tk_stop(struct cs_proc *p, int sig)
{
    int status = 0;
    if (p->pid <= 0)
        return 0;
    kill(p->pid, sig);
    waitpid(p->pid, &status, 0);
    for (size_t i = 0; i < nprocs; i++)
        if (procs[i] == p->pid)
            procs[i] = 0;
    p->pid = 0;
    return status;
}

/* ---- ChunkData client ---- */

static Synod__V1__ChunkserverAddr **chain_msgs(const char *const *chain, size_t n)
{
    Synod__V1__ChunkserverAddr **v = xcalloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i] = xmalloc(sizeof(**v));
        synod__v1__chunkserver_addr__init(v[i]);
        v[i]->id = (uint32_t)(i + 2);
        v[i]->addr = (char *)chain[i];
    }
    return v;
}

static void chain_free(Synod__V1__ChunkserverAddr **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int tk_write(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version, uint64_t off,
             const void *data, size_t len, bool create, struct rpc_status *st)
{
    return tk_write_timeout(head, chain, nchain, id, version, off, data, len, create, tk_timeout_ms, st);
}

int tk_write_timeout(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version,
                     uint64_t off, const void *data, size_t len, bool create, int64_t timeout_ms, struct rpc_status *st)
{
    return tk_write_sync(head, chain, nchain, id, version, off, data, len, create, false, NULL, timeout_ms, st);
}

int tk_write_sync(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version,
                  uint64_t off, const void *data, size_t len, bool create, bool sync, bool *synced,
                  int64_t timeout_ms, struct rpc_status *st)
{
    Synod__V1__WriteReq req = SYNOD__V1__WRITE_REQ__INIT;
    req.chunk_id = id;
    req.version = version;
    req.offset = off;
    req.length = (uint32_t)len;
    req.crc = crc32c(0, data, len);
    req.create = create;
    req.sync = sync;
    req.chain = chain_msgs(chain, nchain);
    req.n_chain = nchain;
    struct rpc_payload p = {.data = data, .len = len, .release = NULL};
    ProtobufCMessage *rep = NULL;
    int r = rpc_call(rpc_channel_get(head), &synod__v1__chunk_data__descriptor, "Write", &req.base, len ? &p : NULL,
                     timeout_ms, &rep, st);
    if (synced)
        *synced = r == 0 && rep && ((const Synod__V1__WriteRep *)rep)->synced;
    rpc_message_free(rep);
    chain_free(req.chain, nchain);
    return r;
}

int tk_write_runs(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version,
                  const uint64_t *offs, const uint32_t *lens, size_t nruns, const void *data, bool create,
                  struct rpc_status *st)
{
    Synod__V1__WriteReq req = SYNOD__V1__WRITE_REQ__INIT;
    Synod__V1__PlainRange *msgs = xcalloc(nruns + 1, sizeof(*msgs)), **ptrs = xcalloc(nruns + 1, sizeof(*ptrs));
    size_t len = 0;
    for (size_t i = 0; i < nruns; i++) {
        synod__v1__plain_range__init(&msgs[i]);
        msgs[i].offset = offs[i];
        msgs[i].length = lens[i];
        ptrs[i] = &msgs[i];
        len += lens[i];
    }
    req.chunk_id = id;
    req.version = version;
    req.n_ranges = nruns;
    req.ranges = ptrs;
    req.crc = crc32c(0, data, len);
    req.create = create;
    req.chain = chain_msgs(chain, nchain);
    req.n_chain = nchain;
    struct rpc_payload p = {.data = data, .len = len, .release = NULL};
    ProtobufCMessage *rep = NULL;
    int r = rpc_call(rpc_channel_get(head), &synod__v1__chunk_data__descriptor, "Write", &req.base, len ? &p : NULL,
                     tk_timeout_ms, &rep, st);
    rpc_message_free(rep);
    chain_free(req.chain, nchain);
    free(msgs);
    free(ptrs);
    return r;
}

/* One Read of [off, off + len) in stored form, plain, or plain with its CRC; *rep to rpc_message_free. */
static int read_call(const char *addr, uint64_t id, uint32_t version, uint64_t off, size_t len, bool stored,
                     bool plain_crc, Synod__V1__ReadRep **rep)
{
    Synod__V1__ReadReq req = SYNOD__V1__READ_REQ__INIT;
    req.chunk_id = id;
    req.version = version;
    req.offset = off;
    req.length = (uint32_t)len;
    req.stored_form = stored;
    req.plain_crc = plain_crc;
    *rep = NULL;
    return rpc_call(rpc_channel_get(addr), &synod__v1__chunk_data__descriptor, "Read", &req.base, NULL,
                    tk_timeout_ms, (ProtobufCMessage **)rep, NULL);
}

int tk_read_crc(const char *addr, uint64_t id, uint32_t version, uint64_t off, size_t len, void *out)
{
    Synod__V1__ReadRep *rep;
    int r = read_call(addr, id, version, off, len, false, true, &rep);
    if (r)
        return r;
    T_CHECK(rep->data.len <= len && rep->n_blocks == 0);
    if (!rep->has_data_crc || crc32c(0, rep->data.data, rep->data.len) != rep->data_crc) {
        r = -EBADMSG;
    } else {
        memset(out, 0, len);
        if (rep->data.len)
            memcpy(out, rep->data.data, rep->data.len);
    }
    if (rep->data.len == 0)
        rep->data.data = NULL; /* see read_rep_free in fuse-client/chunk_io.c */
    rpc_message_free(&rep->base);
    return r;
}

int tk_fsync(const char *head, const char *const *chain, size_t nchain, uint64_t id, uint32_t version,
             struct rpc_status *st)
{
    Synod__V1__FsyncReq req = SYNOD__V1__FSYNC_REQ__INIT;
    req.chunk_id = id;
    req.version = version;
    req.chain = chain_msgs(chain, nchain);
    req.n_chain = nchain;
    ProtobufCMessage *rep = NULL;
    int r = rpc_call(rpc_channel_get(head), &synod__v1__chunk_data__descriptor, "Fsync", &req.base, NULL,
                     tk_timeout_ms, &rep, st);
    rpc_message_free(rep);
    chain_free(req.chain, nchain);
    return r;
}

int tk_read(const char *addr, uint64_t id, uint32_t version, uint64_t off, size_t len, bool stored, void *out)
{
    Synod__V1__ReadRep *rep;
    int r = read_call(addr, id, version, off, len, stored, false, &rep);
    if (r)
        return r;
    memset(out, 0, len);
    if (!stored) {
        T_CHECK(rep->data.len <= len);
        if (rep->data.len)
            memcpy(out, rep->data.data, rep->data.len);
    } else {
        static __thread uint8_t block[65536];
        struct codec *codec = codec_new(1);
        const uint8_t *p = rep->data.data;
        for (size_t i = 0; i < rep->n_blocks; i++) {
            const Synod__V1__StoredBlock *b = rep->blocks[i];
            T_CHECK(p + b->stored_len <= rep->data.data + rep->data.len);
            if (crc32c(0, p, b->stored_len) != b->crc) {
                r = -EBADMSG;
                break;
            }
            r = codec_decode(codec, (enum codec_flag)b->flags, p, b->stored_len, block, b->raw_len);
            if (r)
                break;
            memset(block + b->raw_len, 0, sizeof(block) - b->raw_len);
            uint64_t bs = (uint64_t)b->index * 65536, be = bs + 65536;
            uint64_t s = MAX(bs, off), e = MIN(be, off + len);
            if (s < e)
                memcpy((uint8_t *)out + (s - off), block + (s - bs), e - s);
            p += b->stored_len;
        }
        codec_free(codec);
    }
    rpc_message_free(&rep->base);
    return r;
}

int tk_raw_call(const char *target, const char *path, const void *bytes, size_t len)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice method = grpc_slice_from_copied_string(path);
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(10000, GPR_TIMESPAN));
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

void tk_fill(void *buf, size_t len, uint64_t seed, bool compressible)
{
    uint8_t *p = buf;
    uint64_t st = seed ? seed : 1;
    static const char *const words[] = {"chunk ", "block ", "replica ", "paxos ", "leader ", "version ",
                                        "zstd ", "crc ", "the ", "of ", "and ", "metaserver\n"};
    size_t i = 0;
    while (i < len) {
        uint64_t r = util_rand_next(&st);
        if (compressible) {
            const char *w = words[r % ARRAY_SIZE(words)];
            size_t wl = strlen(w);
            for (size_t k = 0; k < wl && i < len; k++)
                p[i++] = (uint8_t)w[k];
        } else {
            for (int k = 0; k < 8 && i < len; k++, r >>= 8)
                p[i++] = (uint8_t)r;
        }
    }
}

/* ---- test-double metaserver ---- */

static void append_versions(Synod__V1__ChunkVersion **arr, size_t *n, Synod__V1__ChunkVersion *const *in,
                            size_t k)
{
    *arr = xrealloc(*arr, (*n + k + 1) * sizeof(**arr));
    for (size_t i = 0; i < k; i++) {
        synod__v1__chunk_version__init(&(*arr)[*n + i]);
        (*arr)[*n + i].chunk_id = in[i]->chunk_id;
        (*arr)[*n + i].version = in[i]->version;
        (*arr)[*n + i].length = in[i]->length;
    }
    *n += k;
}

static int fm_redirect(struct fake_meta *fm, struct rpc_call *call)
{
    if (fm->mode != FM_REDIRECT)
        return 0;
    char d[100];
    snprintf(d, sizeof(d), "leader=%s", fm->redirect_to);
    pthread_mutex_unlock(&fm->mu);
    rpc_fail(call, -EREMOTE, d);
    return 1;
}

static int fm_register(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct fake_meta *fm = arg;
    const Synod__V1__RegisterReq *req = (const Synod__V1__RegisterReq *)m;
    pthread_mutex_lock(&fm->mu);
    if (fm_redirect(fm, call))
        return 0;
    fm->registrations++;
    fm->unknown = false;
    fm->last_reg_id = req->id;
    snprintf(fm->last_uuid, sizeof(fm->last_uuid), "%s", req->uuid);
    snprintf(fm->last_addr, sizeof(fm->last_addr), "%s", req->addr);
    Synod__V1__RegisterRep rep = SYNOD__V1__REGISTER_REP__INIT;
    rep.id = req->id ? req->id : fm->next_id++;
    rep.heartbeat_ms = fm->heartbeat_ms ? fm->heartbeat_ms : 100;
    pthread_mutex_unlock(&fm->mu);
    rpc_reply(call, &rep.base);
    return 0;
}

static int fm_heartbeat(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct fake_meta *fm = arg;
    const Synod__V1__HeartbeatReq *req = (const Synod__V1__HeartbeatReq *)m;
    pthread_mutex_lock(&fm->mu);
    if (fm_redirect(fm, call))
        return 0;
    if (fm->unknown) {
        pthread_mutex_unlock(&fm->mu);
        rpc_fail(call, -ENOENT, "register first");
        return 0;
    }
    fm->heartbeats++;
    fm->last_failed_dirs = req->failed_dirs;
    fm->last_total = req->total_bytes;
    fm->last_chunks = req->chunks;
    append_versions(&fm->lost, &fm->nlost, req->lost, req->n_lost);
    fm->results = xrealloc(fm->results, (fm->nresults + req->n_results + 1) * sizeof(*fm->results));
    for (size_t i = 0; i < req->n_results; i++)
        fm->results[fm->nresults++] = *req->results[i];
    if (req->n_results)
        fm->result_ns = clk_mono_ns();
    fm->cfails = xrealloc(fm->cfails, (fm->ncfails + req->n_chain_failures + 1) * sizeof(*fm->cfails));
    for (size_t i = 0; i < req->n_chain_failures; i++)
        fm->cfails[fm->ncfails++] = *req->chain_failures[i];
    Synod__V1__HeartbeatRep rep = SYNOD__V1__HEARTBEAT_REP__INIT;
    Synod__V1__ChunkCmd **ptrs = xcalloc(fm->ncmds + 1, sizeof(*ptrs));
    for (size_t i = 0; i < fm->ncmds; i++)
        ptrs[i] = &fm->cmds[i];
    rep.cmds = ptrs;
    rep.n_cmds = fm->ncmds;
    rep.report_wanted = fm->want_report;
    fm->want_report = false;
    if (fm->ncmds)
        fm->cmds_sent_ns = clk_mono_ns();
    rpc_reply(call, &rep.base);
    for (size_t i = 0; i < fm->ncmds; i++)
        if (fm->cmds[i].source) {
            free(fm->cmds[i].source->addr);
            free(fm->cmds[i].source);
        }
    fm->ncmds = 0;
    pthread_mutex_unlock(&fm->mu);
    free(ptrs);
    return 0;
}

static int fm_report(struct rpc_call *call, const ProtobufCMessage *m, void *arg)
{
    struct fake_meta *fm = arg;
    const Synod__V1__ChunkReportReq *req = (const Synod__V1__ChunkReportReq *)m;
    pthread_mutex_lock(&fm->mu);
    if (fm_redirect(fm, call))
        return 0;
    if (req->first)
        fm->nbuilding = 0;
    append_versions(&fm->building, &fm->nbuilding, req->chunks, req->n_chunks);
    if (req->last) {
        free(fm->report);
        fm->report = fm->building;
        fm->nreport = fm->nbuilding;
        fm->building = NULL;
        fm->nbuilding = 0;
        fm->reports_done++;
    }
    pthread_mutex_unlock(&fm->mu);
    Synod__V1__Ack ack = SYNOD__V1__ACK__INIT;
    rpc_reply(call, &ack.base);
    return 0;
}

static const rpc_handler_fn fm_handlers[] = {fm_register, fm_heartbeat, fm_report};

void fm_start(struct fake_meta *fm)
{
    memset(fm, 0, sizeof(*fm));
    pthread_mutex_init(&fm->mu, NULL);
    fm->next_id = 100;
    T_EQ(rpc_server_new("127.0.0.1:0", 2, &fm->srv), 0);
    rpc_server_add_service(fm->srv, &synod__v1__chunk_control__descriptor, fm_handlers, fm);
    T_EQ(rpc_server_start(fm->srv), 0);
    snprintf(fm->addr, sizeof(fm->addr), "127.0.0.1:%d", rpc_server_port(fm->srv));
}

void fm_free(struct fake_meta *fm)
{
    rpc_server_free(fm->srv);
    for (size_t i = 0; i < fm->ncmds; i++)
        if (fm->cmds[i].source) {
            free(fm->cmds[i].source->addr);
            free(fm->cmds[i].source);
        }
    free(fm->cmds);
    free(fm->report);
    free(fm->building);
    free(fm->lost);
    free(fm->cfails);
    free(fm->results);
    pthread_mutex_destroy(&fm->mu);
}

void fm_push_cmd(struct fake_meta *fm, uint64_t cmd_id, uint32_t type, uint64_t chunk, uint32_t version,
                 uint32_t new_version, const char *source)
{
    pthread_mutex_lock(&fm->mu);
    fm->cmds = xrealloc(fm->cmds, (fm->ncmds + 1) * sizeof(*fm->cmds));
    Synod__V1__ChunkCmd *c = &fm->cmds[fm->ncmds++];
    synod__v1__chunk_cmd__init(c);
    c->cmd_id = cmd_id;
    c->type = type;
    c->chunk_id = chunk;
    c->version = version;
    c->new_version = new_version;
    if (source) {
        c->source = xmalloc(sizeof(*c->source));
        synod__v1__chunkserver_addr__init(c->source);
        c->source->addr = xstrdup(source);
    }
    pthread_mutex_unlock(&fm->mu);
}

bool fm_wait(struct fake_meta *fm, bool (*pred)(struct fake_meta *, const void *), const void *arg, int timeout_ms)
{
    uint64_t until = clk_mono_ns() + (uint64_t)timeout_ms * NS_PER_MS;
    for (;;) {
        pthread_mutex_lock(&fm->mu);
        bool ok = pred(fm, arg);
        pthread_mutex_unlock(&fm->mu);
        if (ok)
            return true;
        if (clk_mono_ns() > until)
            return false;
        clk_sleep_ns(20 * NS_PER_MS);
    }
}

bool fm_has_chain_failure(struct fake_meta *fm, const void *chunk_id_ptr)
{
    uint64_t id = *(const uint64_t *)chunk_id_ptr;
    for (size_t i = 0; i < fm->ncfails; i++)
        if (fm->cfails[i].chunk_id == id)
            return true;
    return false;
}

bool fm_has_lost(struct fake_meta *fm, const void *chunk_id_ptr)
{
    uint64_t id = *(const uint64_t *)chunk_id_ptr;
    for (size_t i = 0; i < fm->nlost; i++)
        if (fm->lost[i].chunk_id == id)
            return true;
    return false;
}

bool fm_has_result(struct fake_meta *fm, const void *cmd_id_ptr)
{
    uint64_t id = *(const uint64_t *)cmd_id_ptr;
    for (size_t i = 0; i < fm->nresults; i++)
        if (fm->results[i].cmd_id == id)
            return true;
    return false;
}

int fm_result(struct fake_meta *fm, uint64_t cmd_id)
{
    pthread_mutex_lock(&fm->mu);
    int r = 1;
    for (size_t i = 0; i < fm->nresults; i++)
        if (fm->results[i].cmd_id == cmd_id)
            r = fm->results[i].err;
    pthread_mutex_unlock(&fm->mu);
    return r;
}

bool fm_reports_at_least(struct fake_meta *fm, const void *int_ptr) { return fm->reports_done >= *(const int *)int_ptr; }

bool fm_heartbeats_at_least(struct fake_meta *fm, const void *int_ptr)
{
    return fm->heartbeats >= *(const int *)int_ptr;
}
