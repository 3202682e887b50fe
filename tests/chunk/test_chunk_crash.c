/* test_chunk_crash.c - crash safety: a child overwrites blocks in a loop and is kill -9'ed at random times;
 * after every kill the parent reopens the store and checks every block.
 *
 * Block k's content at generation g is derived from (k, g) (its first 8 bytes name k and g; the rest is
 * text or random bytes of a (k, g)-dependent length, then zeros), so any torn or mixed block is detected.
 * The child publishes, in a shared anonymous mapping that survives its death, the generation it STARTED
 * writing for each block (bumped before the write), the generation it holds when no write is in flight
 * (after a write returns, or as the parent read it back after a kill), and the generation known DURABLE
 * (that value as of the start of a cstore_sync, recorded when the sync returns). The check: every block reads back exactly as some generation g with
 * durable <= g <= started (g == 0: never written, must read as zeros). kill -9 keeps the page cache, so this
 * tests torn writes at syscall granularity; test_chunk's `torn` test covers torn sectors by hand.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chunk_test.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "tests/test.h"

#define BS CSTORE_BLOCK_SIZE
#define ID 0xC4A5Dull
#define NBLK 48 /* 6 groups of 8 consecutive blocks spread over the chunk */
#define MAX_KILLS 200
#define TIME_BUDGET_NS (30 * NS_PER_SEC)

struct shared {
    _Atomic uint32_t started[NBLK];
    _Atomic uint32_t durable[NBLK];
    _Atomic uint32_t current[NBLK]; /* what the block holds when no write is in flight */
    _Atomic uint64_t ops;
};

static char *g_dir;
static pid_t g_parent;

static void cleanup(void)
{
    if (getpid() == g_parent && g_dir)
        ct_rmrf(g_dir);
}

static uint32_t blk_index(int k)
{
    return (uint32_t)(k % 8 + (k / 8) * 170);
}

static void gen_block(int k, uint32_t g, uint8_t *buf)
{
    memset(buf, 0, BS);
    if (g == 0)
        return;
    uint64_t rng = (uint64_t)k << 32 | g;
    size_t len = 16 + util_rand_next(&rng) % (BS - 16);
    if (g % 3 == 0)
        len = BS;
    if (g % 2)
        ct_fill_text(&rng, buf, len);
    else
        ct_fill_random(&rng, buf, len);
    put_le32(buf, (uint32_t)k);
    put_le32(buf + 4, g);
}

static _Noreturn void child_loop(struct shared *sh, uint64_t seed)
{
    const char *dirs[] = { g_dir };
    struct cstore_config cfg = { .dirs = dirs, .ndirs = 1 };
    struct cstore *s;
    if (cstore_open(&cfg, &s))
        _exit(3);
    uint8_t *buf = xmalloc(4 * BS);
    uint64_t rng = seed;
    for (uint64_t op = 0;; op++) {
        uint64_t r = util_rand_next(&rng);
        int k = (int)(r % NBLK);
        int n = (r >> 8) % 4 == 0 ? 1 + (int)((r >> 16) % 4) : 1; /* sometimes 2-4 blocks in one write */
        if (k % 8 + n > 8)
            n = 8 - k % 8;
        for (int i = 0; i < n; i++) {
            uint32_t g = atomic_load(&sh->started[k + i]) + 1;
            atomic_store(&sh->started[k + i], g); /* before the write starts */
            gen_block(k + i, g, buf + (size_t)i * BS);
        }
        if (cstore_write(s, ID, 1, (uint64_t)blk_index(k) * BS, buf, (size_t)n * BS) != 0)
            _exit(4);
        for (int i = 0; i < n; i++)
            atomic_store(&sh->current[k + i], atomic_load(&sh->started[k + i]));
        if ((r >> 40) % 16 == 0) {
            uint32_t snap[NBLK];
            for (int i = 0; i < NBLK; i++)
                snap[i] = atomic_load(&sh->current[i]);
            if (cstore_sync(s, ID, 1) != 0)
                _exit(5);
            for (int i = 0; i < NBLK; i++)
                atomic_store(&sh->durable[i], snap[i]);
        }
        atomic_fetch_add(&sh->ops, 1);
    }
}

/* On failure: show both index entries of block b as stored on disk. */
static void dump_block(uint32_t b)
{
    char *path = xasprintf("%s/%02x/chunk_%016llx_%08x.syc", g_dir, (unsigned)(ID & 0xff), (unsigned long long)ID, 1u);
    int fd = open(path, O_RDONLY);
    for (int slot = 0; fd >= 0 && slot < 2; slot++) {
        uint8_t e[32], *data = xmalloc(BS);
        if (pread(fd, e, 32, CT_TABLE_OFF(slot) + b * 32) == 32 && pread(fd, data, BS, (off_t)CT_SLOT_OFF(b, slot)) == BS)
            fprintf(stderr, "block %u slot %d: gen %llu raw %u stored %u crc %08x (data crc %08x) flags %u, data g %u\n",
                    b, slot, (unsigned long long)get_le64(e), get_le32(e + 8), get_le32(e + 12), get_le32(e + 16),
                    crc32c(0, data, MIN(get_le32(e + 12), BS)), get_le32(e + 20), get_le32(data + 4));
        free(data);
    }
    if (fd >= 0)
        close(fd);
    free(path);
}

/* Reopen the store and check every block; returns how many blocks read as an older generation than the
 * last one started (legal: the write in flight was lost or torn and fell back). */
static int verify(struct shared *sh, uint8_t *buf, uint8_t *want)
{
    const char *dirs[] = { g_dir };
    struct cstore_config cfg = { .dirs = dirs, .ndirs = 1 };
    struct cstore *s;
    T_EQ(cstore_open(&cfg, &s), 0);
    int older = 0;
    for (int k = 0; k < NBLK; k++) {
        int r = cstore_read(s, ID, 1, (uint64_t)blk_index(k) * BS, buf, BS, NULL);
        if (r)
            T_FAIL("block %d: read error %d", k, r);
        uint32_t g = get_le32(buf + 4), started = atomic_load(&sh->started[k]), dur = atomic_load(&sh->durable[k]);
        bool zero = true;
        for (int i = 0; i < 8 && zero; i++)
            zero = buf[i] == 0;
        if (zero)
            g = 0;
        else if (get_le32(buf) != (uint32_t)k)
            T_FAIL("block %d: holds data of block %u", k, get_le32(buf));
        if (g < dur || g > started) {
            dump_block(blk_index(k));
            T_FAIL("block %d: generation %u outside [durable %u, started %u]", k, g, dur, started);
        }
        gen_block(k, g, want);
        if (memcmp(buf, want, BS) != 0)
            T_FAIL("block %d: torn block (generation %u)", k, g);
        older += g < started;
        atomic_store(&sh->current[k], g); /* a sync by the next child makes THIS durable */
    }
    cstore_close(s);
    return older;
}

int main(void)
{
    g_parent = getpid();
    log_init("crash", LOG_LVL_ERROR); /* fallbacks after kills are expected: keep the output short */
    g_dir = ct_mkdtemp(NULL);
    atexit(cleanup);
    struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    T_CHECK(sh != MAP_FAILED);
    memset(sh, 0, sizeof(*sh));
    {
        const char *dirs[] = { g_dir };
        struct cstore_config cfg = { .dirs = dirs, .ndirs = 1 };
        struct cstore *s;
        T_EQ(cstore_open(&cfg, &s), 0);
        T_EQ(cstore_create(s, ID, 1), 0);
        T_EQ(cstore_sync(s, ID, 1), 0);
        cstore_close(s);
    }
    uint8_t *buf = xmalloc(BS), *want = xmalloc(BS);
    uint64_t rng = 20261126, t0 = clk_mono_ns();
    int kills = 0, older = 0;
    while (kills < MAX_KILLS && clk_mono_ns() - t0 < TIME_BUDGET_NS) {
        uint64_t ops0 = atomic_load(&sh->ops), seed = util_rand_next(&rng);
        pid_t pid = fork();
        T_CHECK(pid >= 0);
        if (pid == 0)
            child_loop(sh, seed);
        /* wait until the child is writing, then let it run a random while */
        uint64_t wait0 = clk_mono_ns();
        while (atomic_load(&sh->ops) == ops0 && clk_mono_ns() - wait0 < 5 * NS_PER_SEC)
            clk_sleep_ns(50 * NS_PER_US);
        clk_sleep_ns(util_rand_next(&rng) % (40 * NS_PER_MS));
        T_EQ(kill(pid, SIGKILL), 0);
        int status;
        T_EQ(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status))
            T_FAIL("child exited with status %d before the kill", WEXITSTATUS(status));
        kills++;
        older += verify(sh, buf, want);
    }
    uint64_t durable_sum = 0, started_sum = 0;
    for (int k = 0; k < NBLK; k++) {
        durable_sum += atomic_load(&sh->durable[k]);
        started_sum += atomic_load(&sh->started[k]);
    }
    fprintf(stderr, "%d kills in %.1f s, %llu writes, %llu block generations started, %llu durable, %d blocks "
                    "read back older than the last started\n",
            kills, (double)(clk_mono_ns() - t0) / 1e9, (unsigned long long)atomic_load(&sh->ops),
            (unsigned long long)started_sum, (unsigned long long)durable_sum, older);
    T_CHECK(kills >= 50);
    T_CHECK(durable_sum > 0);
    free(buf);
    free(want);
    return 0;
}
