/* bench_chain.c - chain-replication throughput of three real synod-chunk processes on loopback.
 *
 * Starts three chunkservers (standalone, scrubber off) with data dirs under $BENCH_DIR (default /tmp) and
 * measures, with 1 MiB requests:
 *   - chain write (client -> head -> replica 2 -> replica 3) of incompressible and compressible data,
 *     1 and 4 concurrent streams (each stream its own chunks), with and without a final Fsync along the
 *     chain for every chunk (the time includes the syncs);
 *   - read from the head, plain form (server decompresses) vs stored form (client checks CRC and
 *     decompresses), 1 and 4 streams.
 * MB/s counts client payload bytes (1 MB = 10^6 bytes). Everything, client included, shares the machine.
 * Usage: bench_chain SYNOD_CHUNK_BINARY [MiB per case, default 256]
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/util.h"
#include "tests/chunkserver/cs_testkit.h"
#include "tests/test.h"

#define MiB (1u << 20)
#define CHUNK (64u * MiB)

static struct cs_proc cs[3];
static uint8_t *pool_rand, *pool_text; /* 16 MiB each */
#define POOL (16u * MiB)

#define WRITERS 4 /* reads cover the chunks written by the 4-stream write cases */

struct job {
    int stream, nstreams;
    bool write, compressible, fsync, stored;
    uint64_t bytes;
    uint64_t base_id;
};

static void *run_job(void *arg)
{
    struct job *j = arg;
    const char *chain[] = {cs[1].addr, cs[2].addr};
    const uint8_t *pool = j->compressible ? pool_text : pool_rand;
    uint8_t *buf = xmalloc(MiB);
    for (uint64_t done = 0; j->write && done < j->bytes; done += MiB) {
        uint64_t id = j->base_id + (uint64_t)j->stream * 1000 + done / CHUNK;
        uint64_t off = done % CHUNK;
        const uint8_t *src = pool + (done * 7 + (uint64_t)j->stream * MiB) % (POOL - MiB) / 4096 * 4096;
        struct rpc_status st;
        int r = tk_write(cs[0].addr, chain, 2, id, 1, off, src, MiB, off == 0, &st);
        if (!r && j->fsync && (off + MiB == CHUNK || done + MiB >= j->bytes))
            r = tk_fsync(cs[0].addr, chain, 2, id, 1, &st);
        if (r)
            T_FAIL("write chunk %llx: %d %s", (unsigned long long)id, r, st.detail);
    }
    /* Reader i of n reads what writers i, i+n, ... wrote (bytes / WRITERS each). */
    for (int w = j->stream; !j->write && w < WRITERS; w += j->nstreams) {
        for (uint64_t done = 0; done < j->bytes; done += MiB) {
            uint64_t id = j->base_id + (uint64_t)w * 1000 + done / CHUNK;
            int r = tk_read(cs[0].addr, id, 1, done % CHUNK, MiB, j->stored, buf);
            if (r)
                T_FAIL("read chunk %llx: %d", (unsigned long long)id, r);
        }
    }
    free(buf);
    return NULL;
}

/* CPU seconds (user + system) used so far by the three daemons, from /proc/<pid>/stat. */
static double daemons_cpu(void)
{
    double t = 0;
    long hz = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < 3; i++) {
        char path[64], line[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)cs[i].pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        unsigned long ut = 0, st = 0;
        if (fgets(line, sizeof(line), f)) {
            const char *p = strrchr(line, ')');
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
                t += (double)(ut + st) / (double)hz;
        }
        fclose(f);
    }
    return t;
}

static double last_cpu_per_gib;

static double run_case(int streams, bool write, bool compressible, bool fsync, bool stored, uint64_t bytes,
                       uint64_t base_id)
{
    pthread_t t[8];
    struct job j[8];
    uint64_t t0 = clk_mono_ns();
    double c0 = daemons_cpu();
    for (int i = 0; i < streams; i++) {
        j[i] = (struct job){.stream = i, .nstreams = streams, .write = write, .compressible = compressible, .fsync = fsync,
                            .stored = stored, .bytes = bytes / (uint64_t)(write ? streams : WRITERS), .base_id = base_id};
        pthread_create(&t[i], NULL, run_job, &j[i]);
    }
    for (int i = 0; i < streams; i++)
        pthread_join(t[i], NULL);
    double s = (double)(clk_mono_ns() - t0) / 1e9;
    last_cpu_per_gib = (daemons_cpu() - c0) / ((double)bytes / (1u << 30));
    return (double)bytes / 1e6 / s;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SYNOD_CHUNK_BINARY [MiB per case]\n", argv[0]);
        return 2;
    }
    tk_binary = argv[1];
    uint64_t bytes = (uint64_t)(argc > 2 ? atoi(argv[2]) : 256) * MiB;
    pool_rand = xmalloc(POOL);
    pool_text = xmalloc(POOL);
    tk_fill(pool_rand, POOL, 1, false);
    tk_fill(pool_text, POOL, 2, true);
    const char *base = getenv("BENCH_DIR");
    for (int i = 0; i < 3; i++) {
        char tag[64];
        snprintf(tag, sizeof(tag), "bench%d", i);
        if (base) {
            char *d = xasprintf("%s/synod-bench-%d", base, i);
            tk_sh("rm -rf '%s' && mkdir -p '%s'", d, d);
            char *rm = xasprintf("rm -rf '%s'", d);
            tk_cleanup_sh(rm);
            free(rm);
            tk_start(&cs[i], d, "", "--scrub_rate=0", "--log_level=error", NULL);
            free(d);
        } else {
            tk_start(&cs[i], tk_tempdir(tag), "", "--scrub_rate=0", "--log_level=error", NULL);
        }
    }
    printf("chain of 3 synod-chunk on loopback, 1 MiB requests, %llu MiB per case\n",
           (unsigned long long)(bytes / MiB));
    printf("%-34s %8s %8s %18s\n", "case", "streams", "MB/s", "daemon CPU s/GiB");
    uint64_t id = 1;
    const struct {
        bool compressible, fsync;
    } wc[] = {{false, false}, {false, true}, {true, false}, {true, true}};
    uint64_t read_base[2] = {0, 0};
    for (size_t c = 0; c < ARRAY_SIZE(wc); c++) {
        for (int streams = 1; streams <= 4; streams *= 4) {
            id += 100000;
            double mbs = run_case(streams, true, wc[c].compressible, wc[c].fsync, false, bytes, id);
            char name[64];
            snprintf(name, sizeof(name), "write %s%s", wc[c].compressible ? "compressible" : "incompressible",
                     wc[c].fsync ? " + fsync" : "");
            printf("%-34s %8d %8.0f %18.2f\n", name, streams, mbs, last_cpu_per_gib);
            fflush(stdout);
            if (streams == WRITERS && !wc[c].fsync)
                read_base[wc[c].compressible] = id;
        }
    }
    for (int comp = 0; comp < 2; comp++) {
        for (int stored = 0; stored < 2; stored++) {
            for (int streams = 1; streams <= 4; streams *= 4) {
                double mbs = run_case(streams, false, comp, false, stored, bytes, read_base[comp]);
                char name[64];
                snprintf(name, sizeof(name), "read %s, %s form", comp ? "compressible" : "incompressible",
                         stored ? "stored" : "plain");
                printf("%-34s %8d %8.0f %18.2f\n", name, streams, mbs, last_cpu_per_gib);
                fflush(stdout);
            }
        }
    }
    for (int i = 0; i < 3; i++)
        tk_stop(&cs[i], SIGTERM);
    rpc_client_shutdown();
    free(pool_rand);
    free(pool_text);
    return 0;
}
