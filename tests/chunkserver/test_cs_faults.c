/* test_cs_faults.c - disk faults on a real synod-chunk (ctest cs_fault_<name>).
 *
 * scrub:    write and sync a chunk, flip one byte of a stored block in the chunk file on disk: the
 *           scrubber finds it and the test-double metaserver gets the chunk in a heartbeat's lost list;
 *           reads of that block answer EBADMSG, other blocks still read.
 * enospc:   the last replica of a two-node chain lives on a 4 MiB tmpfs; writes go on until it is full:
 *           the writer gets ENOSPC naming that replica, and everything written before reads back intact
 *           from both replicas. Writes straight to the full node fail with ENOSPC only (or fit), it keeps
 *           serving reads, and after a restart on the same full dir every acknowledged byte reads back
 *           CRC-checked (stored form): a full disk leaves no corrupt state.
 * corrupt_read: scrubber off; a byte flipped in a synced block is found by a client read (EBADMSG), in
 *           stored form and by a 4 KiB plain_crc read of other bytes of that block (the chunkserver checks
 *           the whole stored block before it answers with the range and its CRC): the chunk reaches the metaserver double in a heartbeat's lost list. The metaserver's answer (drop
 *           the replica, re-replicate) is played by hand: CMD_REPLICATE from a healthy replica at the
 *           bumped version replaces the corrupt copy, which then reads back intact.
 * faildir:  two data dirs, the second an ext4 file system on a loop device; after a real fault (the
 *           ext4 "shutdown" ioctl: every later I/O fails with EIO) the chunks on it are reported lost,
 *           failed_dirs becomes 1, and the chunks on the first dir keep serving, new chunks too.
 *           Skipped (exit 77) when loop devices are unavailable.
 * Usage: test_cs_faults <path to synod-chunk> <name>
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/chunkserver/cs_testkit.h"
#include "tests/test.h"

#define MiB (1u << 20)
#define WAIT_MS 30000
#define SLOT_OFF(b, slot) (128u * 1024u + (uint64_t)(slot) * (64u << 20) + (uint64_t)(b) * 65536u)

static char *chunk_path(const char *dir, uint64_t id, uint32_t v)
{
    return xasprintf("%s/%02x/chunk_%016llx_%08x.syc", dir, (unsigned)(id & 0xff), (unsigned long long)id, v);
}

static void test_scrub(void)
{
    struct fake_meta fm;
    fm_start(&fm);
    const char *dir = tk_tempdir("scrub");
    struct cs_proc p;
    tk_start(&p, dir, fm.addr, "--scrub_rate=256M", "--scrub_pause=200ms", NULL);
    uint8_t *buf = xmalloc(MiB), *got = xmalloc(MiB);
    tk_fill(buf, MiB, 77, false);
    T_EQ(tk_write(p.addr, NULL, 0, 0x60, 2, 0, buf, MiB, true, NULL), 0);
    T_EQ(tk_fsync(p.addr, NULL, 0, 0x60, 2, NULL), 0);
    /* Flip one byte of block 3 in whichever slot holds it (the other one is a hole after the sync). */
    char *path = chunk_path(dir, 0x60, 2);
    int fd = open(path, O_RDWR);
    T_CHECK(fd >= 0);
    int flipped = 0;
    for (int slot = 0; slot < 2; slot++) {
        uint8_t b[16];
        T_EQ(pread(fd, b, sizeof(b), (off_t)SLOT_OFF(3, slot) + 100), (ssize_t)sizeof(b));
        bool any = false;
        for (size_t i = 0; i < sizeof(b); i++)
            any |= b[i] != 0;
        if (!any)
            continue;
        b[0] ^= 0x10;
        T_EQ(pwrite(fd, b, 1, (off_t)SLOT_OFF(3, slot) + 100), 1);
        flipped++;
    }
    T_EQ(flipped, 1);
    close(fd);
    free(path);
    uint64_t id = 0x60;
    T_CHECK(fm_wait(&fm, fm_has_lost, &id, WAIT_MS));
    T_EQ(tk_read(p.addr, 0x60, 2, 3 * 65536, 65536, false, got), -EBADMSG);
    T_EQ(tk_read(p.addr, 0x60, 2, 0, 3 * 65536, false, got), 0);
    T_MEMEQ(got, buf, 3 * 65536);
    T_EQ(tk_stop(&p, SIGTERM), 0);
    free(buf);
    free(got);
    fm_free(&fm);
    rpc_client_shutdown();
}

static void test_enospc(void)
{
    const char *top = tk_tempdir("enospc");
    char *mnt = xasprintf("%s/small", top);
    T_EQ(tk_sh("mkdir -p '%s' && mount -t tmpfs -o size=4m tmpfs '%s'", mnt, mnt), 0);
    char *um = xasprintf("umount -l '%s'", mnt);
    tk_cleanup_sh(um);
    free(um);
    struct cs_proc head, full;
    tk_start(&head, tk_tempdir("enospc-head"), "", "--scrub_rate=0", NULL);
    tk_start(&full, mnt, "", "--scrub_rate=0", NULL);
    const char *chain[] = {full.addr};
    uint8_t *buf = xmalloc(MiB), *got = xmalloc(MiB);
    struct rpc_status st;
    int r = 0, n;
    for (n = 0; n < 32; n++) {
        tk_fill(buf, MiB, 500 + (uint64_t)n, false);
        r = tk_write(head.addr, chain, 1, 0x70, 1, (uint64_t)n * MiB, buf, MiB, n == 0, &st);
        if (r)
            break;
    }
    fprintf(stderr, "after %d MiB: %d (%s)\n", n, r, st.detail);
    T_EQ(r, -ENOSPC);
    T_CHECK(n >= 1);
    T_CHECK(strstr(st.detail, "failed=") && strstr(st.detail, full.addr));
    /* Sync what was acknowledged, then everything before the failure reads back from both. */
    T_EQ(tk_fsync(head.addr, NULL, 0, 0x70, 1, NULL), 0);
    for (int i = 0; i < n; i++) {
        tk_fill(buf, MiB, 500 + (uint64_t)i, false);
        T_EQ(tk_read(head.addr, 0x70, 1, (uint64_t)i * MiB, MiB, false, got), 0);
        T_MEMEQ(got, buf, MiB);
        T_EQ(tk_read(full.addr, 0x70, 1, (uint64_t)i * MiB, MiB, true, got), 0);
        T_MEMEQ(got, buf, MiB);
    }
    /* Straight to the full node: ENOSPC (or it fits), never anything else, and reads keep working. */
    for (int i = 0; i < 8; i++) {
        tk_fill(buf, MiB, 600 + (uint64_t)i, i % 2 == 1);
        /* 1 MiB past the acknowledged data, or a one-block overwrite inside it (a failed one leaves the
         * old block: the head keeps the reference) */
        bool small = i % 2;
        uint64_t off = small ? (uint64_t)((i * 5) % n) * MiB + 12345 : (uint64_t)(n + i / 2) * MiB;
        r = tk_write(full.addr, NULL, 0, 0x70, 1, off, buf, small ? 4096 : MiB, false, &st);
        fprintf(stderr, "direct write %d at %llu: %d\n", i, (unsigned long long)off, r);
        T_CHECK(r == 0 || r == -ENOSPC);
        if (r == 0 && small) /* it fit: keep the reference in step */
            T_EQ(tk_write(head.addr, NULL, 0, 0x70, 1, off, buf, 4096, false, &st), 0);
        T_EQ(tk_read(full.addr, 0x70, 1, 0, MiB, true, got), 0);
    }
    r = tk_fsync(full.addr, NULL, 0, 0x70, 1, &st);
    T_CHECK(r == 0 || r == -ENOSPC);
    /* Restart on the full dir: everything the head has (the reference) reads back CRC-checked. */
    T_EQ(tk_stop(&full, SIGTERM), 0);
    tk_start(&full, mnt, "", "--scrub_rate=0", NULL);
    uint8_t *want = xmalloc(MiB);
    for (int i = 0; i < n; i++) {
        T_EQ(tk_read(head.addr, 0x70, 1, (uint64_t)i * MiB, MiB, false, want), 0);
        T_EQ(tk_read(full.addr, 0x70, 1, (uint64_t)i * MiB, MiB, true, got), 0);
        T_MEMEQ(got, want, MiB);
    }
    free(want);
    T_EQ(tk_stop(&full, SIGTERM), 0);
    T_EQ(tk_stop(&head, SIGTERM), 0);
    T_EQ(tk_sh("umount '%s'", mnt), 0);
    free(mnt);
    free(buf);
    free(got);
    rpc_client_shutdown();
}

static void test_corrupt_read(void)
{
    struct fake_meta fm;
    fm_start(&fm);
    const char *dir = tk_tempdir("corrupt");
    struct cs_proc p, good;
    tk_start(&p, dir, fm.addr, "--scrub_rate=0", "--heartbeat_ms=100ms", NULL);
    tk_start(&good, tk_tempdir("corrupt-good"), "", "--scrub_rate=0", NULL);
    int one = 1;
    T_CHECK(fm_wait(&fm, fm_reports_at_least, &one, WAIT_MS));
    uint8_t *buf = xmalloc(MiB), *got = xmalloc(MiB);
    tk_fill(buf, MiB, 78, false);
    const char *chain[] = {good.addr};
    T_EQ(tk_write(p.addr, chain, 1, 0x61, 2, 0, buf, MiB, true, NULL), 0);
    T_EQ(tk_fsync(p.addr, chain, 1, 0x61, 2, NULL), 0);
    char *path = chunk_path(dir, 0x61, 2);
    int fd = open(path, O_RDWR);
    T_CHECK(fd >= 0);
    int flipped = 0;
    for (int slot = 0; slot < 2; slot++) {
        uint8_t b[16];
        T_EQ(pread(fd, b, sizeof(b), (off_t)SLOT_OFF(5, slot) + 7), (ssize_t)sizeof(b));
        bool any = false;
        for (size_t i = 0; i < sizeof(b); i++)
            any |= b[i] != 0;
        if (!any)
            continue;
        b[0] ^= 0x01;
        T_EQ(pwrite(fd, b, 1, (off_t)SLOT_OFF(5, slot) + 7), 1);
        flipped++;
    }
    T_EQ(flipped, 1);
    close(fd);
    free(path);
    /* A client read finds it: EBADMSG (the client reads another replica), and the chunk is reported. A
     * small read with plain_crc, which returns only the bytes asked for, verifies the whole stored block
     * first: EBADMSG too, also for bytes the flipped one is not among. */
    T_EQ(tk_read_crc(p.addr, 0x61, 2, 5 * 65536 + 40000, 4096, got), -EBADMSG);
    T_EQ(tk_read_crc(p.addr, 0x61, 2, 4 * 65536, 4096, got), 0); /* the block before is fine */
    T_MEMEQ(got, buf + 4 * 65536, 4096);
    T_EQ(tk_read(p.addr, 0x61, 2, 5 * 65536, 100, true, got), -EBADMSG);
    uint64_t id = 0x61;
    T_CHECK(fm_wait(&fm, fm_has_lost, &id, WAIT_MS));
    /* The metaserver drops the replica (version 2 -> 3 on the good one) and re-replicates onto p. */
    T_EQ(tk_fsync(good.addr, NULL, 0, 0x61, 3, NULL), 0);
    fm_push_cmd(&fm, 7, SYNOD__V1__CHUNK_CMD_TYPE__CMD_REPLICATE, 0x61, 3, 0, good.addr);
    T_CHECK(fm_wait(&fm, fm_has_result, &(uint64_t){7}, WAIT_MS));
    T_EQ(fm_result(&fm, 7), 0);
    T_EQ(tk_read(p.addr, 0x61, 3, 0, MiB, true, got), 0);
    T_MEMEQ(got, buf, MiB);
    T_EQ(tk_read(p.addr, 0x61, 2, 0, 100, true, got), -ESTALE);
    T_EQ(tk_stop(&p, SIGTERM), 0);
    T_EQ(tk_stop(&good, SIGTERM), 0);
    free(buf);
    free(got);
    fm_free(&fm);
    rpc_client_shutdown();
}

#define FS_SHUTDOWN_IOCTL _IOR('X', 125, uint32_t) /* EXT4_IOC_SHUTDOWN == XFS_IOC_GOINGDOWN */
#define FS_SHUTDOWN_NOLOGFLUSH 2

static bool failed_dirs_set(struct fake_meta *fm, const void *unused)
{
    UNUSED(unused);
    return fm->last_failed_dirs == 1;
}

static void test_faildir(void)
{
    const char *top = tk_tempdir("faildir");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "truncate -s 96M %s/disk.img && losetup -f --show %s/disk.img > %s/loopdev", top, top,
             top);
    if (tk_sh("%s", cmd) != 0) {
        fprintf(stderr, "SKIP: no loop device\n");
        exit(77);
    }
    char loopdev[64] = "", path[300];
    snprintf(path, sizeof(path), "%s/loopdev", top);
    FILE *f = fopen(path, "r");
    T_CHECK(f && fscanf(f, "%63s", loopdev) == 1);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "losetup -d %s", loopdev);
    tk_cleanup_sh(cmd);
    char *mnt = xasprintf("%s/mnt", top);
    T_EQ(tk_sh("mkfs.ext4 -q -F %s && mkdir -p %s && mount -t ext4 %s %s", loopdev, mnt, loopdev, mnt), 0);
    snprintf(cmd, sizeof(cmd), "umount -l %s", mnt);
    tk_cleanup_sh(cmd);

    /* The first dir is a tmpfs of the same size, so placement (weighted by free space) uses both. */
    char *d1 = xasprintf("%s/ok", top);
    T_EQ(tk_sh("mkdir -p %s && mount -t tmpfs -o size=96m tmpfs %s", d1, d1), 0);
    snprintf(cmd, sizeof(cmd), "umount -l %s", d1);
    tk_cleanup_sh(cmd);
    struct fake_meta fm;
    fm_start(&fm);
    char *d2 = xasprintf("%s/data", mnt);
    char *dirs = xasprintf("%s,%s", d1, d2);
    struct cs_proc p;
    tk_start(&p, dirs, fm.addr, "--scrub_rate=64M", "--scrub_pause=200ms", NULL);
    int one = 1;
    T_CHECK(fm_wait(&fm, fm_reports_at_least, &one, WAIT_MS));
    uint8_t *buf = xmalloc(256 * 1024), *got = xmalloc(256 * 1024);
    enum { N = 24 };
    bool on_d2[N];
    int n2 = 0;
    for (int i = 0; i < N; i++) {
        tk_fill(buf, 256 * 1024, 900 + (uint64_t)i, false);
        T_EQ(tk_write(p.addr, NULL, 0, 0x800 + (uint64_t)i, 1, 0, buf, 256 * 1024, true, NULL), 0);
        T_EQ(tk_fsync(p.addr, NULL, 0, 0x800 + (uint64_t)i, 1, NULL), 0);
        char *cp = chunk_path(d2, 0x800 + (uint64_t)i, 1);
        on_d2[i] = access(cp, F_OK) == 0;
        n2 += on_d2[i];
        free(cp);
    }
    fprintf(stderr, "%d of %d chunks on the loop-device dir\n", n2, N);
    T_CHECK(n2 > 0 && n2 < N);

    /* The fault: shut the file system down; every later I/O on it fails with EIO. */
    int fd = open(mnt, O_RDONLY | O_DIRECTORY);
    T_CHECK(fd >= 0);
    uint32_t flags = FS_SHUTDOWN_NOLOGFLUSH;
    if (ioctl(fd, FS_SHUTDOWN_IOCTL, &flags) != 0)
        T_FAIL("shutdown ioctl: %s", strerror(errno));
    close(fd);

    /* Reads of chunks on the failed dir fail (EIO, then ENOENT once the dir is marked failed); the rest
     * read back. The scrubber finds the dead dir even without reads, but reads make it quick. */
    for (int i = 0; i < N; i++) {
        int r = tk_read(p.addr, 0x800 + (uint64_t)i, 1, 0, 256 * 1024, false, got);
        if (on_d2[i]) {
            T_CHECK(r == -EIO || r == -ENOENT);
        } else {
            T_EQ(r, 0);
            tk_fill(buf, 256 * 1024, 900 + (uint64_t)i, false);
            T_MEMEQ(got, buf, 256 * 1024);
        }
    }
    T_CHECK(fm_wait(&fm, failed_dirs_set, NULL, WAIT_MS));
    for (int i = 0; i < N; i++) {
        uint64_t id = 0x800 + (uint64_t)i;
        if (on_d2[i] && !fm_wait(&fm, fm_has_lost, &id, WAIT_MS))
            T_FAIL("chunk %llx on the failed dir not reported lost", (unsigned long long)id);
        pthread_mutex_lock(&fm.mu);
        bool lost = fm_has_lost(&fm, &id);
        pthread_mutex_unlock(&fm.mu);
        T_EQ(lost, on_d2[i]);
    }
    /* New chunks go to the surviving dir. */
    for (int i = 0; i < 4; i++) {
        tk_fill(buf, 256 * 1024, 1, true);
        T_EQ(tk_write(p.addr, NULL, 0, 0x900 + (uint64_t)i, 1, 0, buf, 256 * 1024, true, NULL), 0);
        T_EQ(tk_read(p.addr, 0x900 + (uint64_t)i, 1, 0, 256 * 1024, true, got), 0);
        T_MEMEQ(got, buf, 256 * 1024);
    }
    T_EQ(tk_stop(&p, SIGTERM), 0);
    fm_free(&fm);
    free(buf);
    free(got);
    free(d1);
    free(d2);
    free(dirs);
    free(mnt);
    rpc_client_shutdown();
}

int main(int argc, char **argv)
{
    static const struct tk_test tests[] = {{"scrub", test_scrub}, {"corrupt_read", test_corrupt_read}, {"enospc", test_enospc}, {"faildir", test_faildir}, {NULL, NULL}};
    return tk_main(argc, argv, tests);
}
