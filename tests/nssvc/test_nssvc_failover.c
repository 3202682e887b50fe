/* test_nssvc_failover.c - real processes: 3 synod-meta (state_machine = namespace) on loopback. One client
 * session streams creates, mkdirs, renames and unlinks through the Meta service, retrying on ENOTCONN,
 * EAGAIN, EREMOTE (following the leader hint), ETIMEDOUT with the SAME (session, seq); the leader is killed
 * with SIGKILL in the middle. Afterwards every acknowledged operation is present exactly once: the root
 * matches a local model, and a chain of renames c0 -> c1 -> ... (each would fail with ENOENT if applied
 * twice) ends at exactly one name. Then a test-double chunkserver registers, heartbeats, falls silent and
 * is declared dead after the timeout. Usage: test_nssvc_failover PATH-TO-synod-meta */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "chunk.pb-c.h"
#include "common/clock.h"
#include "common/rpc.h"
#include "meta.pb-c.h"
#include "tests/test.h"

#define N   3
#define OPS 400

static char addrs[N][32], dir[64];
static pid_t pids[N];
static int target; /* node the client talks to */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    T_CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static void start(const char *bin, int i)
{
    char peers[128], id[32], dd[128];
    snprintf(peers, sizeof(peers), "--peers=%s,%s,%s", addrs[0], addrs[1], addrs[2]);
    snprintf(id, sizeof(id), "--node_id=%d", i);
    snprintf(dd, sizeof(dd), "--data_dir=%s/n%d", dir, i);
    mkdir(dd + 11, 0755);
    pid_t p = fork();
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        execl(bin, bin, id, peers, dd, "--state_machine=namespace", "--namespace.cs_timeout=2s",
              "--log_level=warn", (char *)NULL);
        _exit(127);
    }
    pids[i] = p;
}

/* One call with failover: retry the same request (same ReqId) until a real answer or 60 s. */
static int call(const ProtobufCServiceDescriptor *svc, const char *method, const ProtobufCMessage *req,
                ProtobufCMessage **rep)
{
    uint64_t deadline = clk_mono_ns() + 60 * NS_PER_SEC;
    for (;;) {
        struct rpc_status st;
        int rc = rpc_call(rpc_channel_get(addrs[target]), svc, method, req, NULL, 3000, rep, &st);
        if (rc != -ENOTCONN && rc != -EAGAIN && rc != -EREMOTE && rc != -ETIMEDOUT && rc != -ECANCELED)
            return rc;
        if (clk_mono_ns() > deadline)
            T_FAIL("%s: no answer for 60 s (last %d)", method, rc);
        const char *hint = rc == -EREMOTE ? strstr(st.detail, "leader=") : NULL;
        int next = (target + 1) % N;
        for (int i = 0; hint && i < N; i++)
            if (!strcmp(hint + 7, addrs[i]) && pids[i] > 0)
                next = i;
        if (pids[next] <= 0)
            next = (next + 1) % N;
        target = next;
        clk_sleep_ns(rc == -EREMOTE && hint ? 0 : 30 * NS_PER_MS);
    }
}
#define META(m, r, out) call(&synod__v1__meta__descriptor, m, &(r).base, (ProtobufCMessage **)(out))

static uint64_t session, seq;
static Synod__V1__Cred root = SYNOD__V1__CRED__INIT;

static Synod__V1__ReqId *rid(void)
{
    static Synod__V1__ReqId r;
    synod__v1__req_id__init(&r);
    r.session = session;
    r.seq = ++seq;
    return &r;
}

static char model[OPS * 2][16];
static int nmodel;

static void model_del(const char *n)
{
    for (int i = 0; i < nmodel; i++)
        if (!strcmp(model[i], n)) {
            memcpy(model[i], model[--nmodel], sizeof(model[0]));
            return;
        }
    T_FAIL("model: %s not present", n);
}

static int mk(const char *name, uint32_t mode)
{
    Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
    r.rid = rid();
    r.cred = &root;
    r.parent = 1;
    r.name = (char *)name;
    r.mode = mode;
    ProtobufCMessage *rep = NULL;
    int rc = META("Mknod", r, &rep);
    rpc_message_free(rep);
    return rc;
}

static int leader_index(void)
{
    for (int tries = 0; tries < 200; tries++) {
        Synod__V1__StatusReq q = SYNOD__V1__STATUS_REQ__INIT;
        Synod__V1__StatusRep *rep = NULL;
        int rc = call(&synod__v1__admin__descriptor, "Status", &q.base, (ProtobufCMessage **)&rep);
        if (rc == 0 && rep->leader < N) {
            int l = (int)rep->leader;
            rpc_message_free(&rep->base);
            return l;
        }
        rpc_message_free(rep ? &rep->base : NULL);
        clk_sleep_ns(50 * NS_PER_MS);
    }
    T_FAIL("no leader");
}

static void stream(void)
{
    char name[16], from[16];
    int chain = 0, killed = -1;
    T_CHECK(mk("c0", S_IFREG | 0644) == 0);
    snprintf(model[nmodel++], 16, "c0");
    for (int i = 0; i < OPS; i++) {
        if (i == OPS / 2) {
            killed = leader_index();
            fprintf(stderr, "killing leader %d (%s) at op %d\n", killed, addrs[killed], i);
            kill(pids[killed], SIGKILL);
            waitpid(pids[killed], NULL, 0);
            pids[killed] = 0;
        }
        switch (i % 4) {
        case 0:
            snprintf(name, sizeof(name), "f%d", i);
            T_EQ(mk(name, S_IFREG | 0644), 0);
            snprintf(model[nmodel++], 16, "%s", name);
            break;
        case 1:
            snprintf(name, sizeof(name), "d%d", i);
            T_EQ(mk(name, S_IFDIR | 0755), 0);
            snprintf(model[nmodel++], 16, "%s", name);
            break;
        case 2: { /* the chain: applied twice it would fail with ENOENT */
            Synod__V1__RenameReq r = SYNOD__V1__RENAME_REQ__INIT;
            snprintf(from, sizeof(from), "c%d", chain);
            snprintf(name, sizeof(name), "c%d", chain + 1);
            r.rid = rid();
            r.cred = &root;
            r.parent = r.new_parent = 1;
            r.name = from;
            r.new_name = name;
            T_EQ(META("Rename", r, NULL), 0);
            model_del(from);
            snprintf(model[nmodel++], 16, "%s", name);
            chain++;
            break;
        }
        case 3: { /* unlink the file made 3 ops ago */
            Synod__V1__UnlinkReq r = SYNOD__V1__UNLINK_REQ__INIT;
            snprintf(name, sizeof(name), "f%d", i - 3);
            r.rid = rid();
            r.cred = &root;
            r.parent = 1;
            r.name = name;
            T_EQ(META("Unlink", r, NULL), 0);
            model_del(name);
            break;
        }
        }
    }
    /* the tree matches the model exactly */
    int seen = 0;
    char after[16] = "";
    for (;;) {
        Synod__V1__ReaddirReq r = SYNOD__V1__READDIR_REQ__INIT;
        r.cred = &root;
        r.ino = 1;
        r.after = after;
        r.max_entries = 100;
        Synod__V1__ReaddirRep *rep;
        T_EQ(META("Readdir", r, &rep), 0);
        for (size_t j = 0; j < rep->n_entries; j++) {
            model_del(rep->entries[j]->name); /* fails on a name the model does not have */
            snprintf(after, sizeof(after), "%s", rep->entries[j]->name);
            seen++;
        }
        bool eof = rep->eof;
        rpc_message_free(&rep->base);
        if (eof)
            break;
    }
    T_EQ(nmodel, 0);
    fprintf(stderr, "tree matches: %d entries, chain at c%d\n", seen, chain);
}

static void chunkserver_double(void)
{
    Synod__V1__RegisterReq reg = SYNOD__V1__REGISTER_REQ__INIT;
    reg.addr = "127.0.0.1:1";
    reg.uuid = "test-double";
    reg.total_bytes = 1ull << 40;
    Synod__V1__RegisterRep *rr;
    T_EQ(call(&synod__v1__chunk_control__descriptor, "RegisterChunkserver", &reg.base,
              (ProtobufCMessage **)&rr),
         0);
    uint32_t id = rr->id;
    rpc_message_free(&rr->base);
    for (int i = 0; i < 5; i++) {
        Synod__V1__HeartbeatReq hb = SYNOD__V1__HEARTBEAT_REQ__INIT;
        hb.id = id;
        hb.total_bytes = 1ull << 40;
        hb.used_bytes = (uint64_t)i << 20;
        ProtobufCMessage *rep = NULL;
        T_EQ(call(&synod__v1__chunk_control__descriptor, "Heartbeat", &hb.base, &rep), 0);
        rpc_message_free(rep);
        clk_sleep_ns(300 * NS_PER_MS);
    }
    const char *state = NULL;
    uint64_t t0 = clk_mono_ns();
    while (clk_mono_ns() - t0 < 20 * NS_PER_SEC) {
        Synod__V1__StatusReq q = SYNOD__V1__STATUS_REQ__INIT;
        Synod__V1__StatusRep *rep;
        leader_index();
        T_EQ(call(&synod__v1__admin__descriptor, "Status", &q.base, (ProtobufCMessage **)&rep), 0);
        state = "?";
        for (size_t i = 0; i < rep->n_chunkservers; i++)
            if (rep->chunkservers[i]->addr->id == id)
                state = strcmp(rep->chunkservers[i]->state, "DEAD") ? "UP" : "DEAD";
        rpc_message_free(&rep->base);
        if (!strcmp(state, "DEAD"))
            break;
        clk_sleep_ns(200 * NS_PER_MS);
    }
    T_STREQ(state, "DEAD");
    fprintf(stderr, "chunkserver %u declared dead after %.1f s of silence\n", id,
            (double)(clk_mono_ns() - t0) / 1e9);
}

/* A leader cut off from both followers (SIGSTOP) loses its leadership with a mutation pending: the answer is
 * EAGAIN from the runtime, marked as not applied (RPC_DETAIL_RETRY), which tells a client to send the same
 * request again. For methods that answer EAGAIN themselves (ChunkOpenWrite: lease held elsewhere), a client
 * that took the runtime's EAGAIN for the answer sent a NEW request, while the first could still be applied
 * (by the next leader): the chunk was placed twice for it. Once in CI the answer was 0: the killed node's
 * port, free since the stream, had most likely been taken by another test's metaserver (ctest -j), whose
 * votes then counted; Paxos batches now carry the cluster id (meta_foreign reproduces that case). */

/* The state letter of pid from /proc/PID/stat ('T' when stopped), '?' if unreadable. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    return p && p[1] == ' ' ? p[2] : '?';
}

/* Which node `at` names as leader (its own view), or -1. */
static int leader_seen_by(int at)
{
    Synod__V1__StatusReq q = SYNOD__V1__STATUS_REQ__INIT;
    ProtobufCMessage *rep = NULL;
    struct rpc_status st;
    int l = -1;
    if (rpc_call(rpc_channel_get(addrs[at]), &synod__v1__admin__descriptor, "Status", &q.base, NULL, 2000,
                 &rep, &st) == 0 &&
        ((Synod__V1__StatusRep *)rep)->leader < N)
        l = (int)((Synod__V1__StatusRep *)rep)->leader;
    rpc_message_free(rep);
    return l;
}

static void retry_detail(void)
{
    int l = -1;
    for (int tries = 0; tries < 100 && l < 0; tries++) { /* a leader that names itself: no stale hint */
        int c = leader_index();
        if (leader_seen_by(c) == c)
            l = c;
        else
            clk_sleep_ns(50 * NS_PER_MS);
    }
    T_CHECK(l >= 0);
    for (int i = 0; i < N; i++)
        if (i != l && pids[i] > 0) {
            kill(pids[i], SIGSTOP);
            for (int w = 0; w < 200 && proc_state(pids[i]) != 'T'; w++) /* stopped before we send */
                clk_sleep_ns(5 * NS_PER_MS);
            fprintf(stderr, "node %d (%s) stopped: state %c\n", i, addrs[i], proc_state(pids[i]));
        }
    Synod__V1__MknodReq r = SYNOD__V1__MKNOD_REQ__INIT;
    r.rid = rid();
    r.cred = &root;
    r.parent = 1;
    r.name = "cut-off";
    r.mode = S_IFREG | 0644;
    struct rpc_status st;
    ProtobufCMessage *rep = NULL;
    int rc = rpc_call(rpc_channel_get(addrs[l]), &synod__v1__meta__descriptor, "Mknod", &r.base, NULL, 10000,
                      &rep, &st);
    rpc_message_free(rep);
    for (int i = 0; i < N; i++)
        if (i != l && pids[i] > 0)
            kill(pids[i], SIGCONT);
    fprintf(stderr, "mutation on leader %d (%s) cut off: %d (%s)\n", l, addrs[l], rc, st.detail);
    if (rc != -EAGAIN) /* what each node says now, for the record */
        for (int i = 0; i < N; i++)
            if (pids[i] > 0)
                fprintf(stderr, "node %d (%s, pid %d): leader %d\n", i, addrs[i], (int)pids[i],
                        leader_seen_by(i));
    T_EQ(rc, -EAGAIN);
    T_STREQ(st.detail, RPC_DETAIL_RETRY);
}

/* A batched memory Release: well formed, answered (inodes not held are no-ops); arrays of different
 * lengths or too many entries: EINVAL. */
static void release_batch(void)
{
    uint64_t inos[3] = {101, 102, 103}, seqs[3] = {1, 2, 3};
    Synod__V1__ReleaseReq r = SYNOD__V1__RELEASE_REQ__INIT;
    r.rid = rid();
    r.memory = true;
    r.ino = 100;
    r.open_seq = 1;
    r.n_more_inos = r.n_more_seqs = 3;
    r.more_inos = inos;
    r.more_seqs = seqs;
    ProtobufCMessage *rep = NULL;
    T_EQ(META("Release", r, &rep), 0);
    rpc_message_free(rep);
    r.rid = rid();
    r.n_more_seqs = 2;
    T_EQ(META("Release", r, &rep), -EINVAL);
    static uint64_t many[4097];
    r.rid = rid();
    r.n_more_inos = r.n_more_seqs = 4097;
    r.more_inos = r.more_seqs = many;
    T_EQ(META("Release", r, &rep), -EINVAL);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        T_FAIL("usage: %s SYNOD-META", argv[0]);
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof(dir), "/tmp/nssvcfo.XXXXXX");
    T_CHECK(mkdtemp(dir) != NULL);
    for (int i = 0; i < N; i++)
        snprintf(addrs[i], sizeof(addrs[i]), "127.0.0.1:%d", free_port());
    for (int i = 0; i < N; i++)
        start(argv[1], i);
    Synod__V1__SessionOpenReq so = SYNOD__V1__SESSION_OPEN_REQ__INIT;
    so.client_name = "failover-test";
    Synod__V1__SessionOpenRep *sr;
    T_EQ(META("SessionOpen", so, &sr), 0);
    session = sr->session;
    T_CHECK(sr->fsid != 0); /* the file system id the client will name in every call */
    rpc_message_free(&sr->base);
    release_batch();
    uint64_t t0 = clk_mono_ns();
    stream();
    fprintf(stderr, "stream of %d ops with a failover: %.2f s\n", OPS, (double)(clk_mono_ns() - t0) / 1e9);
    chunkserver_double();
    retry_detail();
    for (int i = 0; i < N; i++)
        if (pids[i] > 0) {
            kill(pids[i], SIGTERM);
            waitpid(pids[i], NULL, 0);
        }
    rpc_client_shutdown();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    T_EQ(system(cmd), 0);
    return 0;
}
