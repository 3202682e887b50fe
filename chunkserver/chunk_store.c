/* chunk_store.c - the chunk store: sparse A/B-slot chunk files, per-block CRC, zstd blocks (see chunk_store.h).
 *
 * In memory every chunk has a struct chunk in a hash map (id -> chunk) owned by the store. Opening the file
 * and reading its index ("loading") is lazy and cached in an LRU of at most max_open chunks. Chunks with
 * unsynced writes are not simply closed (their durability bookkeeping lives only in memory): when clean
 * chunks do not bring the cache under max_open, the least recently used unsynced one is synced by the
 * thread dropping a reference, then evicted (chunk_put_evict). So that writers rarely pay for that, a
 * background thread (writeback_ms > 0) syncs chunks left unsynced for writeback_ms, and the least recently
 * used unsynced ones at once while more than half of max_open are unsynced (cstore_writeback).
 *
 * Locks: s->mu guards the map, the LRU, refcounts, the lost list and dir failure; each chunk has a rwlock
 * guarding its loaded state. Order: a chunk lock may be held while taking s->mu, never the reverse (the
 * evictor only touches chunks with refs == 0, which nobody can have locked). A chunk is freed when it is
 * dead (removed from the map) and its last reference is dropped.
 *
 * Per block we keep both entries, the pages allocated in each slot (to know when to punch), which slot
 * holds the last durable version (-1 none, -2 unknown after load) and whether it was written since the last
 * sync. The write-target rule and the sync-time invalidation are described in the header.
 */
#include "chunkserver/chunk_store.h"
#include "chunkserver/cs_stop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"

#define BS CSTORE_BLOCK_SIZE
#define NB CSTORE_BLOCKS
#define PAGE 4096u
#define HDR_SIZE PAGE
#define ENTRY_SIZE 32u
#define TABLE_OFF(slot) (65536u + (unsigned)(slot) * (NB * ENTRY_SIZE))
#define DATA_OFF (128u * 1024u)
#define FILE_SIZE (DATA_OFF + 2 * CSTORE_CHUNK_SIZE)
#define SLOT_OFF(b, slot) (DATA_OFF + (uint64_t)(slot) * CSTORE_CHUNK_SIZE + (uint64_t)(b) * BS)
#define PAGES_UNKNOWN 0xFF
#define DURABLE_UNKNOWN (-2)
#define FORMAT_VERSION 1u
#define HDR_MAGIC "SYNODCHK"
#define NSUBDIRS 256
#define CHUNK_FMT "chunk 0x%016" PRIx64 " v%u"

_Static_assert(NB * ENTRY_SIZE * 2 + 65536u <= DATA_OFF, "index tables overlap the data");

struct entry {
    uint64_t gen; /* 0: no valid version in this slot */
    uint32_t raw_len, stored_len, crc, flags;
};

struct bstate {
    struct entry e[2];
    uint8_t pages[2]; /* pages allocated in each slot, PAGES_UNKNOWN if not known */
    int8_t durable;   /* slot with the last durable version, -1 none, DURABLE_UNKNOWN */
    uint8_t dirty;    /* written since the last sync */
};

struct chunk {
    uint64_t id;
    uint32_t version; /* changed under the chunk write lock and s->mu */
    int dir;
    _Atomic uint64_t length;
    /* What this chunk adds to its dir's `logical`, shifted left by one, with bit 0 set once the chunk left the
     * map (see len_counted): a write and a removal racing on it never count a length twice or not at all. */
    _Atomic uint64_t counted;
    _Atomic bool dead;
    atomic_flag corrupt_reported;
    int refs;                          /* under s->mu */
    bool in_lru;                       /* under s->mu */
    struct chunk *hnext;               /* under s->mu */
    struct chunk *lru_prev, *lru_next; /* under s->mu */
    pthread_rwlock_t lock;
    /* loaded state, under lock */
    int fd;             /* -1 when not loaded */
    struct bstate *bs;  /* [NB] */
    unsigned ndirty;
    bool need_load_sync; /* fdatasync before the first write after loading */
    bool need_dir_sync;  /* created or renamed since the last sync */
    bool evict_syncing;  /* under s->mu: being synced by chunk_put_evict or the writeback */
    _Atomic uint64_t dirty_since; /* monotonic ns when it last became unsynced (0: synced); a hint */
    uint64_t wseq;                /* under lock: bumped by every write, create and rename (see writeback) */
    bool evict_failed;   /* under s->mu: that sync failed; not tried again until a sync succeeds */
};

struct dir {
    char *path;
    int sync_fd; /* the directory, open for syncfs (-1 if it could not be opened) */
    _Atomic uint32_t nchunks;  /* chunks of this dir in the map (changed under s->mu) */
    _Atomic uint64_t logical;  /* sum of their lengths (kept by len_counted; no walk per heartbeat) */
    _Atomic bool failed;
    _Atomic int inject_err;
};

struct cstore {
    struct dir *dirs;
    size_t ndirs;
    int level;
    unsigned max_open;
    pthread_mutex_t mu;
    struct chunk **buckets;
    size_t nbuckets, nchunks;
    struct chunk *lru_head, *lru_tail; /* head = most recently used */
    unsigned nloaded;
    uint64_t rng; /* placement */
    struct cstore_lost *lost;
    size_t nlost, lost_cap;
    _Atomic uint64_t evict_syncs, writeback_syncs; /* syncs done by chunk_put_evict / cstore_writeback */
    /* the writeback thread (writeback_ms > 0) */
    unsigned writeback_ms;
    bool wb_running;
    pthread_t wb_thread;
    struct cs_stop wb_stop;
};

/* ---- per-thread context --------------------------------------------------------------------------- */

struct tctx {
    struct codec *codec;
    uint8_t *raw;    /* a decoded block */
    uint8_t *stored; /* a stored block */
    uint8_t *verify; /* block_store's check of the current slot */
};

static pthread_key_t tctx_key;
static pthread_once_t tctx_once = PTHREAD_ONCE_INIT;

static void tctx_destroy(void *p)
{
    struct tctx *t = p;
    if (!t)
        return;
    codec_free(t->codec);
    free(t->raw);
    free(t->stored);
    free(t->verify);
    free(t);
}

static void tctx_key_init(void)
{
    ASSERT(pthread_key_create(&tctx_key, tctx_destroy) == 0);
}

static struct tctx *tctx_get(int level)
{
    pthread_once(&tctx_once, tctx_key_init);
    struct tctx *t = pthread_getspecific(tctx_key);
    if (!t) {
        t = xcalloc(1, sizeof(*t));
        t->raw = xmalloc(BS);
        t->stored = xmalloc(codec_bound(BS));
        t->verify = xmalloc(codec_bound(BS));
        ASSERT(pthread_setspecific(tctx_key, t) == 0);
    }
    if (!t->codec || codec_level(t->codec) != level) {
        codec_free(t->codec);
        t->codec = codec_new(level);
    }
    return t;
}

void cstore_thread_release(void)
{
    pthread_once(&tctx_once, tctx_key_init);
    tctx_destroy(pthread_getspecific(tctx_key));
    pthread_setspecific(tctx_key, NULL);
}

/* ---- names, map, LRU, lost list (all under s->mu unless said) ------------------------------------- */

static char *chunk_path(const struct cstore *s, int dir, uint64_t id, uint32_t version)
{
    return xasprintf("%s/%02x/chunk_%016" PRIx64 "_%08x.syc", s->dirs[dir].path, (unsigned)(id & 0xff), id,
                     version);
}

static char *chunk_subdir(const struct cstore *s, int dir, uint64_t id)
{
    return xasprintf("%s/%02x", s->dirs[dir].path, (unsigned)(id & 0xff));
}

static size_t id_hash(uint64_t id, size_t nbuckets)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (nbuckets - 1);
}

static struct chunk *map_find(struct cstore *s, uint64_t id)
{
    for (struct chunk *c = s->buckets[id_hash(id, s->nbuckets)]; c; c = c->hnext)
        if (c->id == id)
            return c;
    return NULL;
}

/* Move c's share of its dir's logical bytes to `len` (no-op once c left the map). */
static void len_counted(struct cstore *s, struct chunk *c, uint64_t len)
{
    uint64_t v = atomic_load(&c->counted);
    do {
        if (v & 1)
            return;
    } while (!atomic_compare_exchange_weak(&c->counted, &v, len << 1));
    atomic_fetch_add(&s->dirs[c->dir].logical, len - (v >> 1)); /* modular: a shrink subtracts */
}

/* Set c's length (grow_only: only if larger) and keep its dir's sum. */
static void len_set(struct cstore *s, struct chunk *c, uint64_t len, bool grow_only)
{
    uint64_t old = atomic_load(&c->length);
    do {
        if (grow_only && len <= old)
            return;
    } while (!atomic_compare_exchange_weak(&c->length, &old, len));
    len_counted(s, c, len);
}

static void map_insert(struct cstore *s, struct chunk *c)
{
    if (s->nchunks + 1 > s->nbuckets) {
        size_t nb = s->nbuckets * 2;
        struct chunk **b = xcalloc(nb, sizeof(*b));
        for (size_t i = 0; i < s->nbuckets; i++) {
            for (struct chunk *x = s->buckets[i], *next; x; x = next) {
                next = x->hnext;
                size_t h = id_hash(x->id, nb);
                x->hnext = b[h];
                b[h] = x;
            }
        }
        free(s->buckets);
        s->buckets = b;
        s->nbuckets = nb;
    }
    size_t h = id_hash(c->id, s->nbuckets);
    c->hnext = s->buckets[h];
    s->buckets[h] = c;
    s->nchunks++;
    atomic_fetch_add(&s->dirs[c->dir].nchunks, 1);
    len_counted(s, c, atomic_load(&c->length));
}

static void lru_unlink(struct cstore *s, struct chunk *c)
{
    if (!c->in_lru)
        return;
    if (c->lru_prev)
        c->lru_prev->lru_next = c->lru_next;
    else
        s->lru_head = c->lru_next;
    if (c->lru_next)
        c->lru_next->lru_prev = c->lru_prev;
    else
        s->lru_tail = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
    c->in_lru = false;
    s->nloaded--;
}

static void lru_push_head(struct cstore *s, struct chunk *c)
{
    ASSERT(!c->in_lru);
    c->lru_prev = NULL;
    c->lru_next = s->lru_head;
    if (s->lru_head)
        s->lru_head->lru_prev = c;
    else
        s->lru_tail = c;
    s->lru_head = c;
    c->in_lru = true;
    s->nloaded++;
}

static struct chunk *chunk_alloc(uint64_t id, uint32_t version, int dir, uint64_t length)
{
    struct chunk *c = xcalloc(1, sizeof(*c));
    c->id = id;
    c->version = version;
    c->dir = dir;
    atomic_init(&c->length, length);
    atomic_init(&c->counted, 0);
    atomic_init(&c->dead, false);
    atomic_flag_clear(&c->corrupt_reported);
    c->fd = -1;
    ASSERT(pthread_rwlock_init(&c->lock, NULL) == 0);
    return c;
}

/* Drop the loaded state (fd, index). Caller has exclusive access (chunk write lock or refs == 0). */
static void chunk_unload(struct chunk *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->bs);
    c->bs = NULL;
}

static void chunk_free(struct chunk *c)
{
    chunk_unload(c);
    pthread_rwlock_destroy(&c->lock);
    free(c);
}

/* Remove c from the map and the LRU and mark it dead; freed by its last chunk_put. */
static void map_remove_locked(struct cstore *s, struct chunk *c)
{
    struct chunk **pp = &s->buckets[id_hash(c->id, s->nbuckets)];
    while (*pp && *pp != c)
        pp = &(*pp)->hnext;
    ASSERT(*pp == c);
    *pp = c->hnext;
    s->nchunks--;
    atomic_fetch_sub(&s->dirs[c->dir].nchunks, 1);
    atomic_fetch_sub(&s->dirs[c->dir].logical, atomic_fetch_or(&c->counted, 1) >> 1);
    lru_unlink(s, c);
    atomic_store(&c->dead, true);
}

static void lost_add_locked(struct cstore *s, const struct chunk *c, enum cstore_lost_reason why)
{
    if (s->nlost == s->lost_cap) {
        s->lost_cap = s->lost_cap ? s->lost_cap * 2 : 16;
        s->lost = xrealloc(s->lost, s->lost_cap * sizeof(*s->lost));
    }
    s->lost[s->nlost++] = (struct cstore_lost){ .chunk_id = c->id, .version = c->version, .reason = why };
}

/* ---- dir failure and I/O wrappers ------------------------------------------------------------------ */

static bool err_is_dir_fatal(int err)
{
    return err == -EIO || err == -EROFS || err == -ENOTDIR || err == -ENXIO || err == -ENODEV ||
           err == -EUCLEAN;
}

static void dir_fail(struct cstore *s, int d, int err, const char *what)
{
    pthread_mutex_lock(&s->mu);
    if (atomic_exchange(&s->dirs[d].failed, true)) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    size_t nlost = 0;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (struct chunk *c = s->buckets[i], *next; c; c = next) {
            next = c->hnext;
            if (c->dir != d)
                continue;
            lost_add_locked(s, c, CSTORE_LOST_DIR_FAILED);
            nlost++;
            map_remove_locked(s, c);
            if (c->refs == 0)
                chunk_free(c);
        }
    }
    pthread_mutex_unlock(&s->mu);
    LOG_ERR("%s on data dir %s (%s): dir marked failed, %zu chunks lost", err_name(err), s->dirs[d].path, what,
            nlost);
}

/* Every I/O on a chunk goes through here: fault injection, then dir failure on fatal errors. */
static int io_result(struct cstore *s, int d, int err, const char *what)
{
    if (err < 0 && err_is_dir_fatal(err))
        dir_fail(s, d, err, what);
    return err;
}

static int io_injected(struct cstore *s, int d)
{
    int inj = atomic_load_explicit(&s->dirs[d].inject_err, memory_order_relaxed);
    return inj ? -inj : 0;
}

static int cs_pread(struct cstore *s, struct chunk *c, void *buf, size_t len, uint64_t off)
{
    int r = io_injected(s, c->dir);
    if (r)
        return io_result(s, c->dir, r, "read");
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(c->fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return io_result(s, c->dir, -errno, "read");
        }
        if (n == 0) { /* a truncated file: the missing part reads as zeros and fails its CRC */
            memset((char *)buf + done, 0, len - done);
            break;
        }
        done += (size_t)n;
    }
    return 0;
}

static int cs_pwrite(struct cstore *s, struct chunk *c, const void *buf, size_t len, uint64_t off)
{
    int r = io_injected(s, c->dir);
    if (r)
        return io_result(s, c->dir, r, "write");
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(c->fd, (const char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return io_result(s, c->dir, -errno, "write");
        }
        done += (size_t)n;
    }
    return 0;
}

static int cs_fallocate(struct cstore *s, struct chunk *c, int mode, uint64_t off, uint64_t len)
{
    int r = io_injected(s, c->dir);
    if (r)
        return io_result(s, c->dir, r, "fallocate");
    while (fallocate(c->fd, mode, (off_t)off, (off_t)len) < 0) {
        if (errno != EINTR)
            return io_result(s, c->dir, -errno, "fallocate");
    }
    return 0;
}

static int cs_fdatasync(struct cstore *s, struct chunk *c)
{
    int r = io_injected(s, c->dir);
    if (r)
        return io_result(s, c->dir, r, "fdatasync");
    if (fdatasync(c->fd) < 0)
        return io_result(s, c->dir, -errno, "fdatasync");
    return 0;
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int cs_fsync_subdir(struct cstore *s, struct chunk *c)
{
    int r = io_injected(s, c->dir);
    if (r)
        return io_result(s, c->dir, r, "fsync dir");
    char *sub = chunk_subdir(s, c->dir, c->id);
    r = fsync_path(sub);
    free(sub);
    return io_result(s, c->dir, r, "fsync dir");
}

/* ---- on-disk encodings ---------------------------------------------------------------------------- */

static uint32_t entry_seed(uint64_t id, uint32_t b, int slot)
{
    uint8_t k[16];
    put_le64(k, id);
    put_le32(k + 8, b);
    put_le32(k + 12, (uint32_t)slot);
    return crc32c(0, k, sizeof(k));
}

static void entry_encode(const struct entry *e, uint64_t id, uint32_t b, int slot, uint8_t out[ENTRY_SIZE])
{
    memset(out, 0, ENTRY_SIZE);
    put_le64(out, e->gen);
    put_le32(out + 8, e->raw_len);
    put_le32(out + 12, e->stored_len);
    put_le32(out + 16, e->crc);
    put_le32(out + 20, e->flags);
    put_le32(out + 28, crc32c(entry_seed(id, b, slot), out, 28));
}

static bool desc_valid(uint32_t raw_len, uint32_t stored_len, uint32_t flags)
{
    if (raw_len == 0 || raw_len > BS || stored_len == 0 || stored_len > BS)
        return false;
    if (flags == CODEC_RAW)
        return stored_len == raw_len;
    return flags == CODEC_ZSTD;
}

/* Untrusted bytes from disk: a bad CRC or impossible field makes the entry invalid (gen 0). */
static void entry_decode(const uint8_t in[ENTRY_SIZE], uint64_t id, uint32_t b, int slot, struct entry *e)
{
    memset(e, 0, sizeof(*e));
    if (get_le32(in + 28) != crc32c(entry_seed(id, b, slot), in, 28))
        return;
    struct entry x = { .gen = get_le64(in),
                       .raw_len = get_le32(in + 8),
                       .stored_len = get_le32(in + 12),
                       .crc = get_le32(in + 16),
                       .flags = get_le32(in + 20) };
    if (x.gen != 0 && desc_valid(x.raw_len, x.stored_len, x.flags))
        *e = x;
}

static void header_encode(uint64_t id, uint32_t version, uint8_t out[HDR_SIZE])
{
    memset(out, 0, HDR_SIZE);
    memcpy(out, HDR_MAGIC, 8);
    put_le32(out + 8, FORMAT_VERSION);
    put_le64(out + 12, id);
    put_le32(out + 20, version);
    put_le32(out + 24, BS);
    put_le32(out + 28, NB);
    put_le32(out + 32, DATA_OFF);
    put_le32(out + 60, crc32c(0, out, 60));
}

static bool header_valid(const uint8_t in[64], uint64_t id)
{
    return memcmp(in, HDR_MAGIC, 8) == 0 && get_le32(in + 60) == crc32c(0, in, 60) &&
           get_le32(in + 8) == FORMAT_VERSION && get_le64(in + 12) == id && get_le32(in + 24) == BS &&
           get_le32(in + 28) == NB && get_le32(in + 32) == DATA_OFF;
}

static int cur_slot(const struct bstate *b)
{
    if (b->e[0].gen == 0 && b->e[1].gen == 0)
        return -1;
    return b->e[1].gen > b->e[0].gen ? 1 : 0;
}

static uint8_t pages_of(uint32_t stored_len)
{
    return (uint8_t)((stored_len + PAGE - 1) / PAGE);
}

static uint64_t length_of(const struct bstate *bs)
{
    for (int b = NB - 1; b >= 0; b--) {
        int cur = cur_slot(&bs[b]);
        if (cur >= 0)
            return (uint64_t)b * BS + bs[b].e[cur].raw_len;
    }
    return 0;
}

/* ---- loading and locking ---------------------------------------------------------------------------- */

/* Open the file and read both index tables. Caller holds the chunk write lock. */
static int chunk_load(struct cstore *s, struct chunk *c)
{
    ASSERT(c->fd < 0);
    char *path = chunk_path(s, c->dir, c->id, c->version);
    int r = io_injected(s, c->dir);
    c->fd = r ? -1 : open(path, O_RDWR | O_CLOEXEC);
    if (c->fd < 0) {
        r = r ? r : -errno;
        LOG_ERR("%s: " CHUNK_FMT ": cannot open %s", err_name(r), c->id, c->version, path);
        free(path);
        if (r == -ENOENT) { /* removed behind our back: the chunk is lost, the dir may be fine */
            pthread_mutex_lock(&s->mu);
            if (!atomic_load(&c->dead)) {
                lost_add_locked(s, c, CSTORE_LOST_CORRUPT);
                map_remove_locked(s, c);
            }
            pthread_mutex_unlock(&s->mu);
            return r;
        }
        return io_result(s, c->dir, r, "open chunk");
    }
    free(path);
    uint8_t *tab = xmalloc(2 * NB * ENTRY_SIZE);
    r = cs_pread(s, c, tab, 2 * NB * ENTRY_SIZE, TABLE_OFF(0));
    if (r < 0) {
        free(tab);
        close(c->fd);
        c->fd = -1;
        return r;
    }
    c->bs = xcalloc(NB, sizeof(*c->bs));
    for (uint32_t b = 0; b < NB; b++) {
        struct bstate *st = &c->bs[b];
        for (int slot = 0; slot < 2; slot++) {
            entry_decode(tab + (size_t)slot * NB * ENTRY_SIZE + (size_t)b * ENTRY_SIZE, c->id, b, slot,
                         &st->e[slot]);
            st->pages[slot] = PAGES_UNKNOWN;
        }
        st->durable = DURABLE_UNKNOWN;
    }
    free(tab);
    c->ndirty = 0;
    c->need_load_sync = true;
    len_set(s, c, length_of(c->bs), false);
    pthread_mutex_lock(&s->mu);
    lru_push_head(s, c);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Take a reference on chunk id (version checked unless CSTORE_ANY_VERSION). */
static int chunk_get(struct cstore *s, uint64_t id, uint32_t version, struct chunk **out)
{
    pthread_mutex_lock(&s->mu);
    struct chunk *c = map_find(s, id);
    int r = 0;
    if (!c)
        r = -ENOENT;
    else if (version != CSTORE_ANY_VERSION && c->version != version)
        r = -ESTALE;
    if (r == 0) {
        c->refs++;
        if (c->in_lru && s->lru_head != c) {
            lru_unlink(s, c);
            lru_push_head(s, c);
        }
        *out = c;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

enum lock_mode { CHUNK_RD, CHUNK_WR, CHUNK_WR_NOLOAD };

static int chunk_sync_locked(struct cstore *s, struct chunk *c);
static void chunk_synced_locked(struct cstore *s, struct chunk *c);
static int chunk_lock(struct cstore *s, struct chunk *c, enum lock_mode mode, uint32_t version);

static bool chunk_unsynced(const struct chunk *c) { return c->ndirty != 0 || c->need_dir_sync; }

/* c was written, created or renamed: something to sync (chunk write lock held). */
static void mark_unsynced(struct chunk *c)
{
    c->wseq++;
    if (!atomic_load(&c->dirty_since))
        atomic_store(&c->dirty_since, clk_mono_ns() | 1);
}

/* Drop a reference; frees dead chunks and evicts clean loaded chunks beyond max_open. If that is not
 * enough (the LRU tail holds chunks written but never synced, e.g. files written and closed without
 * fsync), the least recently used unsynced chunk is synced by this caller and then evicted: an unsynced
 * chunk cannot simply be closed, because its durability bookkeeping (which slot is durable, which blocks
 * are dirty) lives only in memory and a writeback error would be reported to no one. One such sync per
 * put at most (`may_sync`), so a caller pays for at most one fdatasync of another chunk. */
static void chunk_put_evict(struct cstore *s, struct chunk *c, bool may_sync)
{
    pthread_mutex_lock(&s->mu);
    ASSERT(c->refs > 0);
    if (--c->refs == 0 && atomic_load(&c->dead))
        chunk_free(c);
    struct chunk *x = s->lru_tail, *unsynced = NULL;
    for (int tries = 0; x && s->nloaded > s->max_open && tries < 16; tries++) {
        struct chunk *prev = x->lru_prev;
        if (x->refs == 0 && !chunk_unsynced(x)) {
            lru_unlink(s, x);
            chunk_unload(x);
        } else if (x->refs == 0 && !unsynced && !x->evict_syncing && !x->evict_failed) {
            unsynced = x;
        }
        x = prev;
    }
    if (!may_sync || !unsynced || s->nloaded <= s->max_open) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    unsynced->refs++;
    unsynced->evict_syncing = true; /* one syncer per chunk */
    pthread_mutex_unlock(&s->mu);
    int r = chunk_lock(s, unsynced, CHUNK_WR, CSTORE_ANY_VERSION);
    if (r == 0) {
        r = chunk_sync_locked(s, unsynced);
        pthread_rwlock_unlock(&unsynced->lock);
        atomic_fetch_add(&s->evict_syncs, 1);
    }
    if (r && r != -ENOENT)
        LOG_WARN("%s: " CHUNK_FMT ": sync to evict it from the open-file cache; it stays open", err_name(r),
                 unsynced->id, unsynced->version);
    pthread_mutex_lock(&s->mu);
    unsynced->evict_syncing = false;
    unsynced->evict_failed = r != 0; /* not retried by every put; a successful cstore_sync clears it */
    if (r == 0 && unsynced->refs == 1 && unsynced->in_lru && !chunk_unsynced(unsynced)) {
        lru_unlink(s, unsynced); /* evict it now: it is the least recently used, whatever the tail holds */
        chunk_unload(unsynced);
    }
    pthread_mutex_unlock(&s->mu);
    chunk_put_evict(s, unsynced, false);
}

static void chunk_put(struct cstore *s, struct chunk *c) { chunk_put_evict(s, c, true); }


/* Lock c (holding a reference), re-check it is alive and at `version`, and load it unless NOLOAD. */
static int chunk_lock(struct cstore *s, struct chunk *c, enum lock_mode mode, uint32_t version)
{
    for (;;) {
        if (mode == CHUNK_RD)
            pthread_rwlock_rdlock(&c->lock);
        else
            pthread_rwlock_wrlock(&c->lock);
        int r = 0;
        if (atomic_load(&c->dead))
            r = -ENOENT;
        else if (version != CSTORE_ANY_VERSION && c->version != version)
            r = -ESTALE;
        else if (c->fd >= 0 || mode == CHUNK_WR_NOLOAD)
            return 0;
        else if (mode == CHUNK_WR) {
            r = chunk_load(s, c);
            if (r == 0)
                return 0;
        }
        pthread_rwlock_unlock(&c->lock);
        if (r)
            return r;
        /* a reader found it unloaded: load under the write lock, then retry for reading */
        pthread_rwlock_wrlock(&c->lock);
        if (!atomic_load(&c->dead) && c->fd < 0)
            r = chunk_load(s, c);
        pthread_rwlock_unlock(&c->lock);
        if (r)
            return r;
    }
}

/* chunk_get + chunk_lock; on success the caller ends with chunk_release. */
static int chunk_acquire(struct cstore *s, uint64_t id, uint32_t version, enum lock_mode mode,
                         struct chunk **out)
{
    int r = chunk_get(s, id, version, out);
    if (r)
        return r;
    r = chunk_lock(s, *out, mode, version);
    if (r)
        chunk_put(s, *out);
    return r;
}

static void chunk_release(struct cstore *s, struct chunk *c)
{
    pthread_rwlock_unlock(&c->lock);
    chunk_put(s, c);
}

/* ---- block I/O ---------------------------------------------------------------------------------- */

static void report_corrupt(struct cstore *s, struct chunk *c, uint32_t b)
{
    LOG_ERR("crc mismatch: " CHUNK_FMT ": block %u has no valid slot on %s", c->id, c->version, b,
            s->dirs[c->dir].path);
    if (atomic_flag_test_and_set(&c->corrupt_reported))
        return;
    pthread_mutex_lock(&s->mu);
    lost_add_locked(s, c, CSTORE_LOST_CORRUPT);
    pthread_mutex_unlock(&s->mu);
}

/* Read slot's stored bytes into buf (>= stored_len) and check the CRC: 0, -EBADMSG or an I/O error. */
static int read_slot(struct cstore *s, struct chunk *c, uint32_t b, int slot, void *buf)
{
    const struct entry *e = &c->bs[b].e[slot];
    ASSERT(e->gen != 0);
    int r = cs_pread(s, c, buf, e->stored_len, SLOT_OFF(b, slot));
    if (r)
        return r;
    return crc32c(0, buf, e->stored_len) == e->crc ? 0 : -EBADMSG;
}

/* Fetch block b's newest verifiable version, falling back to the other slot: stored bytes in `stored`, and
 * when raw != NULL also decoded into raw. *out_slot = the slot used, -1 for a hole. */
static int block_get(struct cstore *s, struct chunk *c, uint32_t b, void *stored, void *raw, int *out_slot)
{
    struct bstate *st = &c->bs[b];
    int cur = cur_slot(st);
    *out_slot = -1;
    if (cur < 0)
        return 0;
    for (int i = 0; i < 2; i++) {
        int slot = i ? 1 - cur : cur;
        if (st->e[slot].gen == 0)
            continue;
        int r = read_slot(s, c, b, slot, stored);
        if (r == 0 && raw) {
            struct tctx *t = tctx_get(s->level);
            r = codec_decode(t->codec, st->e[slot].flags, stored, st->e[slot].stored_len, raw,
                             st->e[slot].raw_len);
        }
        if (r == 0) {
            if (i)
                LOG_WARN("crc mismatch: " CHUNK_FMT ": block %u slot %d on %s, using older generation %" PRIu64,
                         c->id, c->version, b, cur, s->dirs[c->dir].path, st->e[slot].gen);
            *out_slot = slot;
            return 0;
        }
        if (r != -EBADMSG)
            return r;
    }
    report_corrupt(s, c, b);
    return -EBADMSG;
}

/* Store one block (stored bytes + descriptor) crash-safely. Caller holds the chunk write lock. */
static int block_store(struct cstore *s, struct chunk *c, uint32_t b, const void *stored, uint32_t stored_len,
                       uint32_t raw_len, uint32_t crc, uint32_t flags)
{
    struct bstate *st = &c->bs[b];
    int r;
    ASSERT(desc_valid(raw_len, stored_len, flags));
    if (c->need_load_sync) { /* we cannot know what survived in the page cache only: make it durable */
        r = cs_fdatasync(s, c);
        if (r)
            return r;
        c->need_load_sync = false;
    }
    int cur = cur_slot(st), target;
    if (cur < 0) {
        target = 0;
        st->durable = -1;
    } else {
        int other = 1 - cur;
        if (st->durable == DURABLE_UNKNOWN) {
            st->durable = (int8_t)cur;
            if (st->e[other].gen) { /* both valid after a reload: never overwrite the only good copy */
                r = read_slot(s, c, b, cur, tctx_get(s->level)->verify);
                if (r && r != -EBADMSG)
                    return r;
                if (r == -EBADMSG)
                    st->durable = (int8_t)other;
            }
        }
        /* never overwrite the last durable version: if it is in the other slot, cur was never synced */
        target = st->durable == other ? cur : other;
    }
    uint64_t off = SLOT_OFF(b, target);
    uint8_t need = pages_of(stored_len), had = st->pages[target];
    if (target == cur && (had == PAGES_UNKNOWN || had < need)) {
        r = cs_fallocate(s, c, 0, off, (uint64_t)need * PAGE); /* ENOSPC here touches nothing */
        if (r)
            return r;
    }
    struct entry ne = { .gen = MAX(st->e[0].gen, st->e[1].gen) + 1,
                        .raw_len = raw_len,
                        .stored_len = stored_len,
                        .crc = crc,
                        .flags = flags };
    uint8_t enc[ENTRY_SIZE];
    entry_encode(&ne, c->id, b, target, enc);
    r = cs_pwrite(s, c, stored, stored_len, off);
    if (r == 0 && (had == PAGES_UNKNOWN || had > need) && need < BS / PAGE) {
        r = cs_fallocate(s, c, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off + (uint64_t)need * PAGE,
                         BS - (uint64_t)need * PAGE);
        if (r == -EOPNOTSUPP)
            r = 0;
    }
    if (r == 0)
        r = cs_pwrite(s, c, enc, ENTRY_SIZE, TABLE_OFF(target) + (uint64_t)b * ENTRY_SIZE);
    if (r) { /* the target's data no longer matches its on-disk entry: it reads as invalid */
        st->e[target].gen = 0;
        st->pages[target] = PAGES_UNKNOWN;
        return r;
    }
    st->e[target] = ne;
    st->pages[target] = need;
    if (!st->dirty) {
        st->dirty = 1;
        c->ndirty++;
    }
    mark_unsynced(c);
    len_set(s, c, (uint64_t)b * BS + raw_len, true);
    return 0;
}

/* ---- public API: chunk operations --------------------------------------------------------------- */

/* Incompressible data (already-compressed media, encrypted data, random bench data) is common and zstd
 * spends real CPU discovering it: for a whole block two 4 KiB samples (start and middle) are tried first,
 * and unless one shrinks by at least 1/8 the block is stored raw without a full attempt. Barely
 * compressible data (fio's default buffers shrink to ~92 %) cost the chain head 65 % of its CPU in zstd
 * for a few percent of disk; such blocks are stored raw too. A block that only compresses outside the
 * samples is stored raw: a lost compression opportunity, never an error. Shorter blocks (a chunk's last)
 * get a full attempt. */
#define SAMPLE 4096u
#define SAMPLE_WORTH (SAMPLE - SAMPLE / 8) /* a sample must encode to at most this to try the block */
int cstore_encode_block(struct codec *codec, const void *src, size_t raw_len, void *dst, size_t *out_len,
                        enum codec_flag *out_flag)
{
    static const size_t at[] = {0, BS / 2};
    if (raw_len != BS)
        return codec_encode(codec, src, raw_len, dst, codec_bound(raw_len), out_len, out_flag);
    bool shrinks = false;
    for (size_t i = 0; i < ARRAY_SIZE(at) && !shrinks; i++) {
        size_t n;
        enum codec_flag f;
        int r = codec_encode(codec, (const uint8_t *)src + at[i], SAMPLE, dst, SAMPLE, &n, &f);
        if (r)
            return r;
        shrinks = f != CODEC_RAW && n <= SAMPLE_WORTH;
    }
    if (!shrinks) {
        memcpy(dst, src, BS);
        *out_len = BS;
        *out_flag = CODEC_RAW;
        return 0;
    }
    return codec_encode(codec, src, BS, dst, BS, out_len, out_flag);
}

/* Check that [offset, offset+len) lies inside a chunk, then chunk_acquire. */
static int range_acquire(struct cstore *s, uint64_t id, uint32_t version, uint64_t offset, uint64_t len,
                         enum lock_mode mode, struct chunk **out)
{
    if (offset > CSTORE_CHUNK_SIZE || len > CSTORE_CHUNK_SIZE - offset)
        return -EINVAL;
    return chunk_acquire(s, id, version, mode, out);
}

int cstore_write(struct cstore *s, uint64_t id, uint32_t version, uint64_t offset, const void *buf, size_t len)
{
    struct chunk *c;
    int r = range_acquire(s, id, version, offset, len, CHUNK_WR, &c);
    if (r)
        return r;
    struct tctx *t = tctx_get(s->level);
    const uint8_t *p = buf;
    for (uint64_t pos = offset, end = offset + len; pos < end && r == 0;) {
        uint32_t b = (uint32_t)(pos / BS), boff = (uint32_t)(pos % BS);
        uint32_t n = (uint32_t)MIN((uint64_t)(BS - boff), end - pos);
        int cur = cur_slot(&c->bs[b]);
        uint32_t old_raw = cur >= 0 ? c->bs[b].e[cur].raw_len : 0;
        const uint8_t *src = p;
        uint32_t raw_len = boff + n;
        if (boff != 0 || raw_len < old_raw) { /* partial block: merge with the old content */
            int slot = -1;
            if (old_raw) {
                r = block_get(s, c, b, t->stored, t->raw, &slot);
                if (r)
                    break;
                old_raw = slot >= 0 ? c->bs[b].e[slot].raw_len : 0;
            }
            raw_len = MAX(old_raw, boff + n);
            if (old_raw < boff)
                memset(t->raw + old_raw, 0, boff - old_raw);
            memcpy(t->raw + boff, p, n);
            src = t->raw;
        }
        size_t stored_len;
        enum codec_flag flag;
        r = cstore_encode_block(t->codec, src, raw_len, t->stored, &stored_len, &flag);
        ASSERT(r == 0);
        r = block_store(s, c, b, t->stored, (uint32_t)stored_len, raw_len, crc32c(0, t->stored, stored_len),
                        flag);
        pos += n;
        p += n;
    }
    chunk_release(s, c);
    return r;
}

int cstore_write_stored(struct cstore *s, uint64_t id, uint32_t version, const struct cstore_block *blocks,
                        size_t n, const void *data, size_t data_len)
{
    const uint8_t *p = data;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) { /* untrusted: validate everything before storing anything */
        const struct cstore_block *bl = &blocks[i];
        if (bl->index >= NB || !desc_valid(bl->raw_len, bl->stored_len, bl->flags) ||
            bl->stored_len > data_len - total)
            return -EINVAL;
        if (crc32c(0, p + total, bl->stored_len) != bl->crc) {
            LOG_WARN("crc mismatch: " CHUNK_FMT ": received block %u", id, version, bl->index);
            return -EBADMSG;
        }
        total += bl->stored_len;
    }
    if (total != data_len)
        return -EINVAL;
    struct chunk *c;
    int r = chunk_acquire(s, id, version, CHUNK_WR, &c);
    if (r)
        return r;
    for (size_t i = 0, off = 0; i < n && r == 0; off += blocks[i].stored_len, i++)
        r = block_store(s, c, blocks[i].index, p + off, blocks[i].stored_len, blocks[i].raw_len, blocks[i].crc,
                        blocks[i].flags);
    chunk_release(s, c);
    return r;
}

int cstore_read(struct cstore *s, uint64_t id, uint32_t version, uint64_t offset, void *buf, size_t len,
                uint64_t *out_chunk_len)
{
    struct chunk *c;
    int r = range_acquire(s, id, version, offset, len, CHUNK_RD, &c);
    if (r)
        return r;
    struct tctx *t = tctx_get(s->level);
    uint8_t *p = buf;
    for (uint64_t pos = offset, end = offset + len; pos < end && r == 0; pos += BS - pos % BS) {
        uint32_t b = (uint32_t)(pos / BS), boff = (uint32_t)(pos % BS);
        uint32_t n = (uint32_t)MIN((uint64_t)(BS - boff), end - pos);
        uint8_t *dst = p + (pos - offset);
        const struct bstate *st = &c->bs[b];
        int cur = cur_slot(st);
        if (cur < 0) {
            memset(dst, 0, n);
            continue;
        }
        const struct entry *e = &st->e[cur];
        if (boff == 0 && n >= e->raw_len && e->flags == CODEC_RAW) { /* whole raw block: read in place */
            r = read_slot(s, c, b, cur, dst);
            if (r == 0) {
                memset(dst + e->raw_len, 0, n - e->raw_len);
                continue;
            }
            if (r != -EBADMSG)
                break;
        }
        /* decode straight into dst when the block starts there and any slot's version fits */
        uint32_t maxraw = MAX(st->e[0].gen ? st->e[0].raw_len : 0, st->e[1].gen ? st->e[1].raw_len : 0);
        bool direct = boff == 0 && n >= maxraw;
        int slot;
        r = block_get(s, c, b, t->stored, direct ? dst : t->raw, &slot);
        if (r)
            break;
        uint32_t raw_len = st->e[slot].raw_len;
        if (direct) {
            memset(dst + raw_len, 0, n - raw_len);
            continue;
        }
        if (raw_len < BS)
            memset(t->raw + raw_len, 0, BS - raw_len);
        memcpy(dst, t->raw + boff, n);
    }
    if (r == 0 && out_chunk_len)
        *out_chunk_len = atomic_load(&c->length);
    chunk_release(s, c);
    return r;
}

int cstore_read_stored(struct cstore *s, uint64_t id, uint32_t version, uint32_t first, uint32_t max_blocks,
                       struct cstore_block *blocks, size_t blocks_cap, void *buf, size_t buf_cap, size_t *out_n,
                       size_t *out_len, uint32_t *out_next, uint64_t *out_chunk_len)
{
    if (first > NB)
        return -EINVAL;
    struct chunk *c;
    int r = chunk_acquire(s, id, version, CHUNK_RD, &c);
    if (r)
        return r;
    uint32_t last = (uint32_t)MIN((uint64_t)NB, (uint64_t)first + max_blocks);
    size_t nb = 0, used = 0;
    uint32_t b = first;
    for (; b < last; b++) {
        const struct bstate *st = &c->bs[b];
        int cur = cur_slot(st);
        if (cur < 0)
            continue;
        /* the fallback slot may be longer: require room for a whole block unless cur fits */
        uint32_t worst = MAX(st->e[0].gen ? st->e[0].stored_len : 0, st->e[1].gen ? st->e[1].stored_len : 0);
        if (nb == blocks_cap || buf_cap - used < worst)
            break;
        int slot;
        r = block_get(s, c, b, (uint8_t *)buf + used, NULL, &slot);
        if (r)
            break;
        const struct entry *e = &st->e[slot];
        blocks[nb++] = (struct cstore_block){
            .index = b, .raw_len = e->raw_len, .stored_len = e->stored_len, .crc = e->crc, .flags = e->flags
        };
        used += e->stored_len;
    }
    if (r == 0 && nb == 0 && b < last)
        r = -ENOBUFS;
    if (r == 0) {
        *out_n = nb;
        *out_len = used;
        *out_next = b;
        if (out_chunk_len)
            *out_chunk_len = atomic_load(&c->length);
    }
    chunk_release(s, c);
    return r;
}

int cstore_length(struct cstore *s, uint64_t id, uint32_t version, uint64_t *out_len)
{
    struct chunk *c;
    int r = chunk_get(s, id, version, &c);
    if (r)
        return r;
    *out_len = atomic_load(&c->length);
    chunk_put(s, c);
    return 0;
}

int cstore_version(struct cstore *s, uint64_t id, uint32_t *out_version)
{
    struct chunk *c;
    int r = chunk_get(s, id, CSTORE_ANY_VERSION, &c);
    if (r)
        return r;
    pthread_mutex_lock(&s->mu);
    *out_version = c->version;
    pthread_mutex_unlock(&s->mu);
    chunk_put(s, c);
    return 0;
}

/* fdatasync (and dir fsync if needed), then drop obsolete slots. Caller holds the loaded chunk's write lock. */
static int chunk_sync_locked(struct cstore *s, struct chunk *c)
{
    if (c->ndirty == 0 && !c->need_dir_sync && !c->need_load_sync)
        return 0;
    int r = cs_fdatasync(s, c);
    if (r == 0 && c->need_dir_sync)
        r = cs_fsync_subdir(s, c);
    if (r)
        return r;
    chunk_synced_locked(s, c);
    return 0;
}

/* Everything written to c is durable (fdatasync and dir fsync, or a syncfs begun after its last write):
 * every dirty block's current slot becomes its durable one and the other slot is dropped. Caller holds the
 * loaded chunk's write lock. */
static void chunk_synced_locked(struct cstore *s, struct chunk *c)
{
    int r = 0;
    c->need_dir_sync = false;
    c->need_load_sync = false;
    static const uint8_t zero[ENTRY_SIZE];
    for (uint32_t b = 0; b < NB && c->ndirty; b++) {
        struct bstate *st = &c->bs[b];
        if (!st->dirty)
            continue;
        st->dirty = 0;
        c->ndirty--;
        int cur = cur_slot(st);
        st->durable = (int8_t)cur;
        if (cur < 0 || st->e[1 - cur].gen == 0)
            continue;
        /* the other slot is obsolete now: drop it (space, and no silent fallback to stale data) */
        int other = 1 - cur;
        st->e[other].gen = 0;
        r = cs_pwrite(s, c, zero, ENTRY_SIZE, TABLE_OFF(other) + (uint64_t)b * ENTRY_SIZE);
        if (r == 0)
            r = cs_fallocate(s, c, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, SLOT_OFF(b, other), BS);
        if (r == -EOPNOTSUPP)
            r = 0;
        st->pages[other] = r ? PAGES_UNKNOWN : 0;
        if (r) /* durability is done; cleanup failures only cost space */
            break;
    }
    if (r && !atomic_load(&c->dead))
        LOG_WARN("%s: " CHUNK_FMT ": dropping obsolete slots after sync", err_name(r), c->id, c->version);
    if (c->ndirty == 0)
        atomic_store(&c->dirty_since, 0);
}

int cstore_sync(struct cstore *s, uint64_t id, uint32_t version)
{
    struct chunk *c;
    int r = chunk_acquire(s, id, version, CHUNK_WR, &c);
    if (r)
        return r;
    r = chunk_sync_locked(s, c);
    if (r == 0) {
        pthread_mutex_lock(&s->mu);
        c->evict_failed = false;
        pthread_mutex_unlock(&s->mu);
    }
    chunk_release(s, c);
    return r;
}

/* syncfs of the file system holding dir d (the fd opened at cstore_open), or -errno. */
static int dir_syncfs(struct cstore *s, int d)
{
    if (atomic_load(&s->dirs[d].failed) || s->dirs[d].sync_fd < 0)
        return -EBADF;
    int r = io_injected(s, d);
    if (r == 0 && syncfs(s->dirs[d].sync_fd) < 0)
        r = -errno;
    return r;
}

unsigned cstore_writeback(struct cstore *s, uint64_t older_than_ns, unsigned max)
{
    enum { BATCH = 256 };
    struct chunk *pick[BATCH];
    uint64_t seq[BATCH];
    unsigned n = 0, synced = 0;
    max = MIN(max, (unsigned)BATCH);
    uint64_t now = clk_mono_ns();
    uint64_t cutoff = now > older_than_ns ? now - older_than_ns : 0;
    pthread_mutex_lock(&s->mu);
    unsigned unsynced = 0;
    for (struct chunk *x = s->lru_head; x; x = x->lru_next)
        unsynced += atomic_load(&x->dirty_since) != 0;
    /* Under pressure (more than half the cache unsynced) the least recently used go first whatever their
     * age, so that writers find clean chunks to evict. Chunks in use (refs) are left to their users. */
    bool pressure = unsynced > s->max_open / 2;
    for (struct chunk *x = s->lru_tail; x && n < max; x = x->lru_prev) {
        uint64_t since = atomic_load(&x->dirty_since);
        if (!since || x->refs || x->evict_syncing || x->evict_failed || atomic_load(&x->dead))
            continue;
        if (since > cutoff && !pressure)
            continue;
        x->refs++;
        x->evict_syncing = true; /* one syncer per chunk */
        pick[n++] = x;
    }
    pthread_mutex_unlock(&s->mu);
    if (!n)
        return 0;
    /* Each chunk's write sequence before the syncfs: a chunk written meanwhile is left for the next pass,
     * everything written before the syncfs began is durable once it returns. One syncfs per data dir
     * covers the whole batch (one device flush instead of two per chunk: data and directory). */
    for (unsigned i = 0; i < n; i++) {
        pthread_rwlock_rdlock(&pick[i]->lock);
        seq[i] = pick[i]->wseq;
        pthread_rwlock_unlock(&pick[i]->lock);
    }
    enum { NOT_YET = 1 };
    int *dres = xmalloc(s->ndirs * sizeof(*dres));
    for (size_t d = 0; d < s->ndirs; d++)
        dres[d] = NOT_YET;
    for (unsigned i = 0; i < n; i++)
        if (dres[pick[i]->dir] == NOT_YET)
            dres[pick[i]->dir] = dir_syncfs(s, pick[i]->dir);
    for (unsigned i = 0; i < n; i++) {
        struct chunk *x = pick[i];
        int r = chunk_lock(s, x, CHUNK_WR_NOLOAD, CSTORE_ANY_VERSION);
        if (r == 0) {
            if (x->fd >= 0 && chunk_unsynced(x)) {
                if (dres[x->dir] == 0 && x->wseq == seq[i])
                    chunk_synced_locked(s, x);
                else if (dres[x->dir] != 0) /* the syncfs failed: the chunk's own sync names the culprit */
                    r = chunk_sync_locked(s, x);
            }
            synced += r == 0 && !chunk_unsynced(x);
            pthread_rwlock_unlock(&x->lock);
        }
        if (r && r != -ENOENT)
            LOG_WARN("%s: " CHUNK_FMT ": background sync failed; left to the next fsync", err_name(r), x->id,
                     x->version);
        pthread_mutex_lock(&s->mu);
        x->evict_syncing = false;
        x->evict_failed = r != 0 && r != -ENOENT; /* like an eviction sync: not retried until a sync succeeds */
        pthread_mutex_unlock(&s->mu);
        chunk_put_evict(s, x, false); /* evicts the clean tail beyond max_open */
    }
    free(dres);
    atomic_fetch_add(&s->writeback_syncs, synced);
    return synced;
}

static void *writeback_main(void *arg)
{
    struct cstore *s = arg;
    uint64_t age = (uint64_t)s->writeback_ms * NS_PER_MS;
    uint64_t period_ms = MIN((uint64_t)s->writeback_ms / 2, 250) + 1;
    while (!cs_stop_sleep_ms(&s->wb_stop, period_ms)) {
        while (cstore_writeback(s, age, 256) == 256 && !cs_stop_raised(&s->wb_stop))
            ; /* a backlog: keep going, one batch at a time */
    }
    cstore_thread_release();
    return NULL;
}

void cstore_sync_counts(const struct cstore *s, uint64_t *evict_syncs, uint64_t *writeback_syncs)
{
    *evict_syncs = atomic_load(&s->evict_syncs);
    *writeback_syncs = atomic_load(&s->writeback_syncs);
}

int cstore_set_version(struct cstore *s, uint64_t id, uint32_t version, uint32_t new_version)
{
    if (new_version == CSTORE_ANY_VERSION)
        return -EINVAL;
    struct chunk *c;
    int r = chunk_acquire(s, id, version, CHUNK_WR_NOLOAD, &c);
    if (r)
        return r;
    if (new_version == version)
        goto out_release;
    char *from = chunk_path(s, c->dir, id, version), *to = chunk_path(s, c->dir, id, new_version);
    r = io_injected(s, c->dir);
    if (r == 0 && rename(from, to) < 0)
        r = -errno;
    r = io_result(s, c->dir, r, "rename");
    free(from);
    free(to);
    if (r == 0) {
        pthread_mutex_lock(&s->mu);
        c->version = new_version;
        pthread_mutex_unlock(&s->mu);
        r = cs_fsync_subdir(s, c);
        c->need_dir_sync = r != 0;
        if (r)
            mark_unsynced(c);
    }
out_release:
    chunk_release(s, c);
    return r;
}

int cstore_delete(struct cstore *s, uint64_t id, uint32_t version)
{
    struct chunk *c;
    int r = chunk_acquire(s, id, version, CHUNK_WR_NOLOAD, &c);
    if (r)
        return r;
    char *path = chunk_path(s, c->dir, id, c->version);
    r = io_injected(s, c->dir);
    if (r == 0 && unlink(path) < 0)
        r = -errno;
    if (r == -ENOENT)
        r = 0;
    r = io_result(s, c->dir, r, "unlink");
    free(path);
    if (r == 0) {
        pthread_mutex_lock(&s->mu);
        if (!atomic_load(&c->dead))
            map_remove_locked(s, c);
        pthread_mutex_unlock(&s->mu);
        /* Make the unlink durable before reporting it done: otherwise a crash could bring back a chunk the
         * metaserver was told is gone (it would be found stale and deleted again, but only after it had
         * counted as a replica in a report). The file is gone either way, so a failure here fails the
         * dir (io_result) rather than leaving the chunk in the map. */
        r = cs_fsync_subdir(s, c);
    }
    chunk_release(s, c);
    return r;
}

/* ---- create and placement ----------------------------------------------------------------------- */

/* A usable dir chosen at random with probability proportional to its free space (MooseFS-like): the
 * emptiest dir gets most new chunks, and dirs sharing a file system share the load. */
static int pick_dir(struct cstore *s)
{
    uint64_t avail[s->ndirs], sum = 0;
    for (size_t d = 0; d < s->ndirs; d++) {
        struct statvfs sv;
        avail[d] = 0;
        if (!atomic_load(&s->dirs[d].failed) && statvfs(s->dirs[d].path, &sv) == 0)
            avail[d] = (uint64_t)sv.f_bavail * sv.f_frsize / 4096 + 1; /* +1: a full dir still gets ENOSPC */
        sum += avail[d];
    }
    if (sum == 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    uint64_t x = util_rand_next(&s->rng) % sum;
    pthread_mutex_unlock(&s->mu);
    for (size_t d = 0; d < s->ndirs; d++) {
        if (x < avail[d])
            return (int)d;
        x -= avail[d];
    }
    return -1;
}

/* Create the file of c: header, sparse size, reserved index tables. Caller holds c's write lock. */
static int chunk_create_file(struct cstore *s, struct chunk *c)
{
    char *path = chunk_path(s, c->dir, c->id, c->version);
    int r = io_injected(s, c->dir);
    c->fd = r ? -1 : open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (c->fd < 0) {
        r = io_result(s, c->dir, r ? r : -errno, "create chunk");
        goto out_free_path;
    }
    uint8_t hdr[HDR_SIZE];
    header_encode(c->id, c->version, hdr);
    r = cs_fallocate(s, c, 0, 0, DATA_OFF); /* entry writes never hit ENOSPC later */
    if (r == 0)
        r = cs_pwrite(s, c, hdr, HDR_SIZE, 0);
    if (r == 0 && ftruncate(c->fd, (off_t)FILE_SIZE) < 0)
        r = io_result(s, c->dir, -errno, "ftruncate");
    if (r == 0)
        goto out_free_path;
    close(c->fd);
    c->fd = -1;
    unlink(path);
out_free_path:
    free(path);
    return r;
}

int cstore_create(struct cstore *s, uint64_t id, uint32_t version)
{
    if (version == CSTORE_ANY_VERSION)
        return -EINVAL;
    int d = pick_dir(s);
    if (d < 0)
        return -EIO;
    struct chunk *c = chunk_alloc(id, version, d, 0);
    pthread_rwlock_wrlock(&c->lock);
    pthread_mutex_lock(&s->mu);
    struct chunk *old = map_find(s, id);
    if (old) {
        int r = old->version == version ? 0 : -EEXIST;
        pthread_mutex_unlock(&s->mu);
        pthread_rwlock_unlock(&c->lock);
        chunk_free(c);
        return r;
    }
    c->refs = 1;
    map_insert(s, c); /* others wait on our write lock */
    pthread_mutex_unlock(&s->mu);
    int r = chunk_create_file(s, c);
    if (r) {
        pthread_mutex_lock(&s->mu);
        if (!atomic_load(&c->dead))
            map_remove_locked(s, c);
        pthread_mutex_unlock(&s->mu);
        chunk_release(s, c);
        return r;
    }
    c->bs = xcalloc(NB, sizeof(*c->bs));
    for (uint32_t b = 0; b < NB; b++)
        c->bs[b].durable = -1;
    c->need_dir_sync = true;
    mark_unsynced(c);
    pthread_mutex_lock(&s->mu);
    if (!atomic_load(&c->dead))
        lru_push_head(s, c);
    pthread_mutex_unlock(&s->mu);
    chunk_release(s, c);
    return 0;
}

/* ---- open / scan / close ------------------------------------------------------------------------ */

/* Length from the index tables without loading them: scan both tables backwards a page at a time. */
static int scan_length(int fd, uint64_t id, uint64_t *out)
{
    uint8_t page[PAGE];
    uint64_t len = 0;
    for (int slot = 0; slot < 2; slot++) {
        for (int pg = (int)(NB * ENTRY_SIZE / PAGE) - 1; pg >= 0; pg--) {
            ssize_t n = pread(fd, page, PAGE, (off_t)(TABLE_OFF(slot) + (uint64_t)pg * PAGE));
            if (n < 0)
                return -errno;
            if (n < (ssize_t)PAGE)
                memset(page + n, 0, PAGE - (size_t)n);
            bool found = false;
            for (int i = PAGE / ENTRY_SIZE - 1; i >= 0 && !found; i--) {
                uint32_t b = (uint32_t)pg * (PAGE / ENTRY_SIZE) + (uint32_t)i;
                struct entry e;
                entry_decode(page + i * ENTRY_SIZE, id, b, slot, &e);
                if (e.gen) {
                    len = MAX(len, (uint64_t)b * BS + e.raw_len);
                    found = true;
                }
            }
            if (found)
                break;
        }
    }
    *out = len;
    return 0;
}

/* Register one chunk file found by the scan (or set it aside). Returns an I/O error only. */
static int scan_file(struct cstore *s, int d, const char *sub, const char *name)
{
    uint64_t id;
    uint32_t version;
    int consumed = 0;
    if (strlen(name) != 35 || sscanf(name, "chunk_%16" SCNx64 "_%8x.syc%n", &id, &version, &consumed) != 2 ||
        consumed != 35)
        return 0;
    char *path = xasprintf("%s/%s", sub, name);
    int r = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        goto out_free_path;
    }
    uint8_t hdr[64];
    ssize_t n = pread(fd, hdr, sizeof(hdr), 0);
    if (n < 0) {
        r = -errno;
        goto out_close;
    }
    if (n != sizeof(hdr) || !header_valid(hdr, id) || (unsigned)(id & 0xff) != strtoul(sub + strlen(sub) - 2,
                                                                                       NULL, 16)) {
        char *bad = xasprintf("%s.bad", path);
        LOG_ERR("bad header: " CHUNK_FMT ": %s renamed to *.bad", id, version, path);
        if (rename(path, bad) < 0)
            r = -errno;
        free(bad);
        goto out_close;
    }
    uint64_t len;
    r = scan_length(fd, id, &len);
    if (r)
        goto out_close;
    struct chunk *old = map_find(s, id);
    if (old && old->version >= version) {
        LOG_WARN("duplicate chunk: " CHUNK_FMT ": removing %s (v%u kept)", id, version, path, old->version);
        if (unlink(path) < 0)
            r = -errno;
        goto out_close;
    }
    if (old) {
        char *op = chunk_path(s, old->dir, id, old->version);
        LOG_WARN("duplicate chunk: " CHUNK_FMT ": removing %s", id, old->version, op);
        unlink(op);
        free(op);
        map_remove_locked(s, old);
        chunk_free(old);
    }
    map_insert(s, chunk_alloc(id, version, d, len));
out_close:
    close(fd);
out_free_path:
    free(path);
    return r;
}

static int scan_dir(struct cstore *s, int d)
{
    const char *root = s->dirs[d].path;
    if (mkdir(root, 0755) < 0 && errno != EEXIST)
        return -errno;
    int r = 0;
    for (int i = 0; i < NSUBDIRS && r == 0; i++) {
        char *sub = xasprintf("%s/%02x", root, i);
        if (mkdir(sub, 0755) < 0 && errno != EEXIST)
            r = -errno;
        DIR *dh = r ? NULL : opendir(sub);
        if (!r && !dh)
            r = -errno;
        for (struct dirent *de; dh && r == 0 && (errno = 0, de = readdir(dh));)
            r = scan_file(s, d, sub, de->d_name);
        if (dh && r == 0 && errno)
            r = -errno;
        if (dh)
            closedir(dh);
        free(sub);
    }
    if (r == 0)
        r = fsync_path(root); /* the subdirs we may have made */
    return r;
}

int cstore_open(const struct cstore_config *cfg, struct cstore **out)
{
    if (!cfg || cfg->ndirs == 0 || cfg->ndirs > 1024)
        return -EINVAL;
    struct cstore *s = xcalloc(1, sizeof(*s));
    s->ndirs = cfg->ndirs;
    s->dirs = xcalloc(s->ndirs, sizeof(*s->dirs));
    s->level = cfg->level ? cfg->level : CODEC_DEFAULT_LEVEL;
    s->max_open = cfg->max_open ? cfg->max_open : 1024;
    s->nbuckets = 1024;
    s->buckets = xcalloc(s->nbuckets, sizeof(*s->buckets));
    pthread_mutex_init(&s->mu, NULL);
    s->rng = 0x5EED5EEDull;
    for (size_t d = 0; d < s->ndirs; d++)
        s->dirs[d].path = xstrdup(cfg->dirs[d]);
    for (size_t d = 0; d < s->ndirs; d++) {
        int r = scan_dir(s, (int)d);
        if (r) { /* startup: single-threaded, nobody holds references */
            LOG_ERR("%s: data dir %s unusable at startup: marked failed", err_name(r), s->dirs[d].path);
            dir_fail(s, (int)d, r, "scan");
        }
    }
    for (size_t d = 0; d < s->ndirs; d++)
        s->dirs[d].sync_fd = open(s->dirs[d].path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    LOG_INFO("chunk store open: %zu chunks on %zu dirs, zstd level %d", s->nchunks, s->ndirs, s->level);
    cs_stop_init(&s->wb_stop);
    s->writeback_ms = cfg->writeback_ms;
    if (s->writeback_ms) {
        int r = pthread_create(&s->wb_thread, NULL, writeback_main, s);
        if (r)
            PANIC("chunk store cannot start its writeback thread: %s", strerror(r));
        s->wb_running = true;
    }
    *out = s;
    return 0;
}

void cstore_close(struct cstore *s)
{
    if (!s)
        return;
    if (s->wb_running) {
        cs_stop_raise(&s->wb_stop);
        pthread_join(s->wb_thread, NULL);
    }
    cs_stop_destroy(&s->wb_stop);
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (struct chunk *c = s->buckets[i], *next; c; c = next) {
            next = c->hnext;
            ASSERT(c->refs == 0);
            chunk_free(c);
        }
    }
    for (size_t d = 0; d < s->ndirs; d++) {
        if (s->dirs[d].sync_fd >= 0)
            close(s->dirs[d].sync_fd);
        free(s->dirs[d].path);
    }
    free(s->dirs);
    free(s->buckets);
    free(s->lost);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- listing, usage, lost ------------------------------------------------------------------------- */

static int info_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct cstore_chunk_info *)a)->chunk_id, y = ((const struct cstore_chunk_info *)b)->chunk_id;
    return x < y ? -1 : x > y;
}

void cstore_list(struct cstore *s, struct cstore_chunk_info **out, size_t *out_n)
{
    pthread_mutex_lock(&s->mu);
    struct cstore_chunk_info *v = xmalloc(s->nchunks * sizeof(*v));
    size_t n = 0;
    for (size_t i = 0; i < s->nbuckets; i++)
        for (struct chunk *c = s->buckets[i]; c; c = c->hnext)
            v[n++] = (struct cstore_chunk_info){
                .chunk_id = c->id, .version = c->version, .length = atomic_load(&c->length), .dir = c->dir
            };
    pthread_mutex_unlock(&s->mu);
    qsort(v, n, sizeof(*v), info_cmp);
    *out = v;
    *out_n = n;
}

void cstore_take_lost(struct cstore *s, struct cstore_lost **out, size_t *out_n)
{
    pthread_mutex_lock(&s->mu);
    *out = s->lost ? s->lost : xmalloc(0);
    *out_n = s->nlost;
    s->lost = NULL;
    s->nlost = s->lost_cap = 0;
    pthread_mutex_unlock(&s->mu);
}

size_t cstore_ndirs(const struct cstore *s)
{
    return s->ndirs;
}

void cstore_dir_stats(struct cstore *s, struct cstore_dir_stat *out)
{
    for (size_t d = 0; d < s->ndirs; d++) {
        struct statvfs sv;
        out[d] = (struct cstore_dir_stat){ .path = s->dirs[d].path, .failed = atomic_load(&s->dirs[d].failed),
                                           .chunks = atomic_load(&s->dirs[d].nchunks),
                                           .logical_bytes = atomic_load(&s->dirs[d].logical) };
        if (!out[d].failed && statvfs(s->dirs[d].path, &sv) == 0) {
            out[d].total_bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
            out[d].avail_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
        }
    }
}

uint64_t cstore_stored_bytes(struct cstore *s)
{
    struct cstore_chunk_info *v;
    size_t n;
    uint64_t sum = 0;
    cstore_list(s, &v, &n);
    for (size_t i = 0; i < n; i++) {
        char *path = chunk_path(s, v[i].dir, v[i].chunk_id, v[i].version);
        struct stat st;
        if (stat(path, &st) == 0)
            sum += (uint64_t)st.st_blocks * 512;
        free(path);
    }
    free(v);
    return sum;
}

void cstore_debug_inject_error(struct cstore *s, int dir, int err)
{
    ASSERT(dir >= 0 && (size_t)dir < s->ndirs);
    atomic_store(&s->dirs[dir].inject_err, err < 0 ? -err : err);
}

/* ---- scrub -------------------------------------------------------------------------------------- */

struct cstore_scrub {
    struct cstore *s;
    struct cstore_chunk_info *chunks; /* this pass's snapshot; NULL between passes */
    size_t n, pos;
    uint32_t block;
    struct chunk *cur; /* the chunk being scrubbed (a reference), NULL between chunks */
    bool cold;         /* it was not loaded when its scrub began */
};

/* Done with sc->cur: drop the scrubber's reference; unload it if the scrubber loaded it and nobody uses it. */
static void scrub_let_go(struct cstore_scrub *sc)
{
    struct chunk *c = sc->cur;
    if (sc->cold) {
        pthread_mutex_lock(&sc->s->mu);
        if (c->refs == 1 && c->in_lru && !chunk_unsynced(c)) {
            lru_unlink(sc->s, c);
            chunk_unload(c);
        }
        pthread_mutex_unlock(&sc->s->mu);
    }
    chunk_put_evict(sc->s, c, false); /* the scrubber never pays (or causes) an eviction sync */
    sc->cur = NULL;
    sc->cold = false;
}

struct cstore_scrub *cstore_scrub_new(struct cstore *s)
{
    struct cstore_scrub *sc = xcalloc(1, sizeof(*sc));
    sc->s = s;
    return sc;
}

void cstore_scrub_free(struct cstore_scrub *sc)
{
    if (!sc)
        return;
    if (sc->cur)
        scrub_let_go(sc);
    free(sc->chunks);
    free(sc);
}

/* Verify blocks of one chunk from sc->block on; returns the number verified or an error. */
static int scrub_chunk(struct cstore_scrub *sc, struct chunk *c, unsigned max_blocks, struct cstore_bad_block *bad,
                       size_t bad_cap, size_t *nbad)
{
    struct cstore *s = sc->s;
    uint8_t *buf = tctx_get(s->level)->verify;
    int verified = 0;
    for (; sc->block < NB && (unsigned)verified < max_blocks && *nbad < bad_cap; sc->block++) {
        uint32_t b = sc->block;
        int cur = cur_slot(&c->bs[b]);
        if (cur < 0)
            continue;
        verified++;
        int r = read_slot(s, c, b, cur, buf);
        if (r == 0)
            continue;
        if (r != -EBADMSG)
            return r;
        int other = 1 - cur;
        bool ok = c->bs[b].e[other].gen && read_slot(s, c, b, other, buf) == 0;
        if (ok)
            LOG_WARN("crc mismatch: " CHUNK_FMT ": block %u slot %d on %s (older slot valid)", c->id, c->version,
                     b, cur, s->dirs[c->dir].path);
        else
            report_corrupt(s, c, b);
        bad[(*nbad)++] = (struct cstore_bad_block){
            .chunk_id = c->id, .version = c->version, .block = b, .fell_back = ok
        };
    }
    return verified;
}

int cstore_scrub_step(struct cstore_scrub *sc, unsigned max_blocks, struct cstore_bad_block *bad, size_t bad_cap,
                      size_t *out_nbad, bool *pass_done)
{
    *out_nbad = 0;
    *pass_done = false;
    if (!sc->chunks) {
        cstore_list(sc->s, &sc->chunks, &sc->n);
        sc->pos = 0;
        sc->block = 0;
    }
    int total = 0;
    while (sc->pos < sc->n && (unsigned)total < max_blocks && *out_nbad < bad_cap) {
        /* The chunk being scrubbed stays referenced across steps (never evicted under the scrubber); one the
         * scrubber loaded itself leaves the open-file cache when its scrub is done (if clean and unused), so
         * a pass over every chunk does not push the writers' chunks out and make them pay eviction syncs.
         * Loading a chunk (its index) counts as a block against the throttle. */
        int r = 0;
        if (!sc->cur) {
            r = chunk_get(sc->s, sc->chunks[sc->pos].chunk_id, CSTORE_ANY_VERSION, &sc->cur);
            if (r == 0) {
                pthread_rwlock_rdlock(&sc->cur->lock);
                sc->cold = sc->cur->fd < 0;
                pthread_rwlock_unlock(&sc->cur->lock);
                total += sc->cold;
            }
        }
        struct chunk *c = sc->cur;
        if (r == 0) {
            r = chunk_lock(sc->s, c, CHUNK_RD, CSTORE_ANY_VERSION);
            if (r == 0) {
                r = scrub_chunk(sc, c, MAX(max_blocks - (unsigned)MIN((unsigned)total, max_blocks), 1u), bad,
                                bad_cap, out_nbad);
                pthread_rwlock_unlock(&c->lock);
            }
        }
        if (r > 0)
            total += r;
        if (r < 0 || sc->block >= NB) { /* gone, failed or done: next chunk */
            if (c)
                scrub_let_go(sc);
            sc->pos++;
            sc->block = 0;
        }
    }
    if (sc->pos >= sc->n) {
        free(sc->chunks);
        sc->chunks = NULL;
        *pass_done = true;
    }
    return total;
}
