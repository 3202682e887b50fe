/* mount_main.c - synod-mount (also installed as `synodfs`, the name mount.fuse3 runs for -t fuse.synodfs):
 * command line, daemonizing, the FUSE session.
 *
 *     synod-mount [options] METASERVERS MOUNTPOINT        METASERVERS = host:port[,host:port...]
 *     synodfs METASERVERS MOUNTPOINT -o opts              (how mount(8) -> mount.fuse3 calls it)
 *
 * Start-up order matters: fork first (gRPC threads do not survive fork), then open the metaserver session
 * and mount, and only then let the parent exit, with status 0 if the file system is mounted and 1 (after
 * printing the reason) if not, so `mount` and fstab report failures truthfully.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "fuse-client/fs_ops.h"
#include "fuse-client/dir_cache.h"
#include "fuse-client/open_refs.h"

#define SYNOD_VERSION "0.1"

struct opts {
    char *metas, *mountpoint;
    int foreground, debug, single, help, version;
    double attr_timeout, entry_timeout, negative_timeout;
    double unreachable_timeout, io_timeout, rpc_timeout, loc_ttl, writedone_interval;
    char *readahead, *max_write, *log_file, *log_level, *client_name, *fsid;
    unsigned write_inflight, readdir_page, max_threads, lookahead, sync_on_close;
    int have_fsname, have_subtype;
};

enum { KEY_FG, KEY_DEBUG, KEY_SINGLE, KEY_HELP, KEY_VERSION, KEY_DROP };

#define O(t, f) {t, offsetof(struct opts, f), 1}
static const struct fuse_opt opt_spec[] = {
    O("attr_timeout=%lf", attr_timeout),
    O("entry_timeout=%lf", entry_timeout),
    O("negative_timeout=%lf", negative_timeout),
    O("unreachable_timeout=%lf", unreachable_timeout),
    O("io_timeout=%lf", io_timeout),
    O("rpc_timeout=%lf", rpc_timeout),
    O("loc_ttl=%lf", loc_ttl),
    O("writedone_interval=%lf", writedone_interval),
    O("readahead=%s", readahead),
    O("max_write=%s", max_write),
    O("write_inflight=%u", write_inflight),
    O("readdir_page=%u", readdir_page),
    O("max_threads=%u", max_threads),
    O("lookahead=%u", lookahead),
    O("sync_on_close=%u", sync_on_close),
    O("fsid=%s", fsid),
    O("log_file=%s", log_file),
    O("log_level=%s", log_level),
    O("client_name=%s", client_name),
    FUSE_OPT_KEY("-f", KEY_FG),
    FUSE_OPT_KEY("-d", KEY_DEBUG),
    FUSE_OPT_KEY("debug", KEY_DEBUG),
    FUSE_OPT_KEY("-s", KEY_SINGLE),
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    /* mount(8)/fstab options that mean nothing to the file system itself */
    FUSE_OPT_KEY("defaults", KEY_DROP),
    FUSE_OPT_KEY("auto", KEY_DROP),
    FUSE_OPT_KEY("noauto", KEY_DROP),
    FUSE_OPT_KEY("nofail", KEY_DROP),
    FUSE_OPT_KEY("_netdev", KEY_DROP),
    FUSE_OPT_KEY("user", KEY_DROP),
    FUSE_OPT_KEY("users", KEY_DROP),
    FUSE_OPT_KEY("nouser", KEY_DROP),
    FUSE_OPT_KEY("owner", KEY_DROP),
    FUSE_OPT_KEY("relatime", KEY_DROP),
    FUSE_OPT_KEY("strictatime", KEY_DROP),
    FUSE_OPT_KEY("lazytime", KEY_DROP),
    FUSE_OPT_KEY("x-", KEY_DROP),
    FUSE_OPT_KEY("comment=", KEY_DROP),
    FUSE_OPT_END,
};

static void usage(const char *prog)
{
    printf("usage: %s [options] METASERVERS MOUNTPOINT\n"
           "       mount -t fuse.synodfs METASERVERS MOUNTPOINT [-o options]\n"
           "\n"
           "Mount a SynodFS cluster. METASERVERS is host:port[,host:port...]: any metaservers of the cluster;\n"
           "the client finds and follows the leader.\n"
           "\n"
           "General options:\n"
           "    -h, --help             print this help and exit\n"
           "    -V, --version          print the version and exit\n"
           "    -f                     stay in the foreground\n"
           "    -d, -o debug           foreground, with FUSE request tracing and log_level=debug\n"
           "    -s                     single-threaded session loop\n"
           "    -o opt[,opt...]        mount options, below\n"
           "\n"
           "SynodFS options (-o):\n"
           "    attr_timeout=SEC       kernel attribute cache lifetime (default 1)\n"
           "    entry_timeout=SEC      kernel name cache lifetime (default 1)\n"
           "    negative_timeout=SEC   kernel cache lifetime of \"no such name\" (default 0: not cached)\n"
           "    unreachable_timeout=SEC  a metadata operation that cannot reach a serving metaserver for\n"
           "                           this long fails with EIO (default 30); leader changes are shorter\n"
           "    io_timeout=SEC         a data operation that no replica can serve for this long fails\n"
           "                           with EIO (default 30)\n"
           "    rpc_timeout=SEC        deadline of one RPC attempt (default 5)\n"
           "    readahead=BYTES        bytes fetched at once by sequential reads, K/M suffix (default 8M,\n"
           "                           0 = off); also the kernel read-ahead asked for\n"
           "    max_write=BYTES        largest write request asked from the kernel (default 1M, max 1M)\n"
           "    write_inflight=N       write RPCs in flight per file (default 4)\n"
           "    loc_ttl=SEC            lifetime of cached chunk locations (default 1)\n"
           "    writedone_interval=SEC report the growing size of a file being written at least this\n"
           "                           often (default 1)\n"
           "    sync_on_close=0|1      1 (default): close(2) makes what was written durable on every\n"
           "                           replica, as fsync does (a chain Fsync of each chunk written since\n"
           "                           the last one); 0: close makes it visible on every replica (their\n"
           "                           page cache) and only fsync makes it durable\n"
           "    readdir_page=N         directory entries per Readdir RPC (default 1024)\n"
           "    max_threads=N          FUSE worker threads at most (default 10)\n"
           "    lookahead=N            after 8 lookups in one directory within the cache timeouts, list it\n"
           "                           with attributes and answer the next lookups from the listing (for\n"
           "                           the rest of the smaller timeout), if it has at most N entries\n"
           "                           (default 65536, 0 = off)\n"
           "    fsid=HEX               the file system id to expect (`synodctl status` shows it); default:\n"
           "                           the first metaserver's answer. Either way a server of another\n"
           "                           cluster on a listed address is refused and skipped\n"
           "    client_name=NAME       name of this client in the metaserver's session table\n"
           "                           (default synod-mount@HOST)\n"
           "    log_file=PATH          append log lines to PATH (default: stderr; /dev/null once daemonized)\n"
           "    log_level=LEVEL        error, warn, info (default) or debug\n"
           "\n"
           "Ignored (accepted for fstab): defaults, auto, noauto, nofail, _netdev, user, users, nouser,\n"
           "owner, relatime, strictatime, lazytime, x-*, comment=*.\n"
           "\n"
           "FUSE options (-o), handled by libfuse:\n"
           "    allow_other, allow_root, auto_unmount, default_permissions (always on: the kernel checks\n"
           "    cached paths too), fsname=NAME (default synodfs:METASERVERS), subtype=NAME (default\n"
           "    synodfs), ro, rw, nosuid, suid, nodev, dev, noexec, exec, noatime, sync, dirsync,\n"
           "    max_read=N, blkdev, and those listed below.\n",
           prog);
    fuse_lowlevel_help();
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    UNUSED(outargs);
    struct opts *o = data;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (!o->metas) {
            o->metas = xstrdup(arg);
            return 0;
        }
        if (!o->mountpoint) {
            o->mountpoint = xstrdup(arg);
            return 0;
        }
        fprintf(stderr, "synod-mount: unexpected argument '%s'\n", arg);
        return -1;
    case FUSE_OPT_KEY_OPT:
        if (strncmp(arg, "fsname=", 7) == 0)
            o->have_fsname = 1;
        if (strncmp(arg, "subtype=", 8) == 0)
            o->have_subtype = 1;
        return 1; /* for libfuse */
    case KEY_FG:
        o->foreground = 1;
        return 0;
    case KEY_DEBUG:
        o->debug = o->foreground = 1;
        return 1; /* libfuse traces requests with -o debug */
    case KEY_SINGLE:
        o->single = 1;
        return 0;
    case KEY_HELP:
        o->help = 1;
        return 0;
    case KEY_VERSION:
        o->version = 1;
        return 0;
    case KEY_DROP:
        return 0;
    }
    return 1;
}

/* "8M" -> bytes; -1 if malformed. */
static int64_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    switch (*end) {
    case 'k': case 'K': v *= 1024; end++; break;
    case 'm': case 'M': v *= 1024 * 1024; end++; break;
    case 'g': case 'G': v *= 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end == 'B')
        end++;
    return *end ? -1 : (int64_t)v;
}

static uint32_t ms_of(double sec)
{
    return sec <= 0 ? 0 : (uint32_t)MIN(sec * 1000.0 + 0.5, 4e9);
}

/* Daemonizing: the parent waits on a pipe for the child's verdict. */
static int daemon_pipe = -1;

static void daemon_start(void)
{
    int p[2];
    if (pipe(p) != 0) {
        perror("synod-mount: pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("synod-mount: fork");
        exit(1);
    }
    if (pid > 0) {
        close(p[1]);
        char c = 1;
        ssize_t n;
        do
            n = read(p[0], &c, 1);
        while (n < 0 && errno == EINTR);
        _exit(n == 1 ? c : 1);
    }
    close(p[0]);
    daemon_pipe = p[1];
    setsid();
}

static void daemon_done(int status, const char *log_file)
{
    if (daemon_pipe < 0)
        return;
    if (status == 0) {
        if (chdir("/") != 0) { /* nothing to do about it */
        }
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            if (!log_file)
                dup2(fd, 2);
            if (fd > 2)
                close(fd);
        }
    }
    char c = (char)status;
    if (write(daemon_pipe, &c, 1) != 1) { /* the parent is gone: nothing to tell */
    }
    close(daemon_pipe);
    daemon_pipe = -1;
}

static uint64_t opens_report(void *arg, uint64_t **inos, size_t *n)
{
    return oref_snapshot(arg, inos, n);
}

static void session_lost(void *arg, uint64_t old_session)
{
    UNUSED(old_session);
    cio_session_lost(arg);
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct opts o = {.attr_timeout = 1, .entry_timeout = 1, .negative_timeout = 0, .unreachable_timeout = 30,
                     .io_timeout = 30, .rpc_timeout = 5, .loc_ttl = 1, .writedone_interval = 1,
                     .write_inflight = 4, .readdir_page = 1024, .max_threads = 10,
                     .lookahead = 65536, .sync_on_close = 1};
    if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) != 0)
        return 2;
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (o.help) {
        usage(prog);
        return 0;
    }
    if (o.version) {
        printf("synod-mount (SynodFS) %s, libfuse %s\n", SYNOD_VERSION, fuse_pkgversion());
        return 0;
    }
    if (!o.metas || !o.mountpoint) {
        fprintf(stderr, "usage: %s [options] METASERVERS MOUNTPOINT   (--help for the options)\n", prog);
        return 2;
    }
    int64_t ra = parse_size(o.readahead ? o.readahead : "8M");
    int64_t mw = parse_size(o.max_write ? o.max_write : "1M");
    if (ra < 0 || ra > (256 << 20) || mw < 4096 || mw > (1 << 20)) {
        fprintf(stderr, "synod-mount: bad readahead (0..256M) or max_write (4K..1M)\n");
        return 2;
    }
    enum log_level lvl = LOG_LVL_INFO;
    if (o.log_level && log_parse_level(o.log_level, &lvl) != 0) {
        fprintf(stderr, "synod-mount: bad log_level '%s'\n", o.log_level);
        return 2;
    }
    if (o.debug)
        lvl = LOG_LVL_DEBUG;
    struct stat st;
    if (stat(o.mountpoint, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "synod-mount: mount point %s is not a directory\n", o.mountpoint);
        return 1;
    }
    if (!o.have_fsname) {
        /* fsname=synodfs:LIST, commas escaped for libfuse's option parser */
        size_t n = strlen(o.metas);
        char *v = xmalloc(2 * n + 40), *p = v;
        p += sprintf(p, "-ofsname=synodfs:");
        for (size_t i = 0; i < n; i++) {
            if (o.metas[i] == ',')
                *p++ = '\\';
            *p++ = o.metas[i];
        }
        *p = 0;
        fuse_opt_add_arg(&args, v);
        free(v);
    }
    if (!o.have_subtype)
        fuse_opt_add_arg(&args, "-osubtype=synodfs");
    /* The metaserver checks permissions on every request it sees, but the kernel answers path walks from its
     * dentry cache without asking us: a name that root looked up would then be reachable by a user without
     * search permission on its directory (and exec would need only some x bit). With default_permissions the
     * kernel checks every access against the attributes we gave it (refreshed when older than attr_timeout),
     * with the caller's supplementary groups; the metaserver still checks each mutating request itself. */
    fuse_opt_add_arg(&args, "-odefault_permissions");

    if (!o.foreground)
        daemon_start();
    if (o.log_file) {
        int fd = open(o.log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "synod-mount: cannot open log file %s: %s\n", o.log_file, strerror(errno));
            daemon_done(1, NULL);
            return 1;
        }
        dup2(fd, 2);
        close(fd);
    }
    log_init("synod-mount", lvl);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    char host[128] = "localhost";
    gethostname(host, sizeof(host) - 1);
    char *name = o.client_name ? xstrdup(o.client_name) : xasprintf("synod-mount@%s", host);
    struct mc_config mcc = {.addrs = o.metas, .client_name = name, .rpc_timeout_ms = ms_of(o.rpc_timeout),
                            .op_timeout_ms = ms_of(o.unreachable_timeout)};
    if (o.fsid) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(o.fsid, &end, 16);
        if (errno || !*o.fsid || *end || !v) {
            fprintf(stderr, "synod-mount: bad fsid '%s' (16 hex digits, as synodctl status shows)\n", o.fsid);
            free(name);
            return 2;
        }
        mcc.fsid = (uint64_t)v;
    }
    struct fs fs = {.attr_timeout = o.attr_timeout, .entry_timeout = o.entry_timeout,
                    .negative_timeout = o.negative_timeout, .max_write = (uint32_t)mw,
                    .max_readahead = (uint32_t)MAX(ra, 128 << 10), .readdir_page = o.readdir_page,
                    .sync_close = o.sync_on_close != 0};
    struct fuse_session *se = NULL;
    int r = mc_new(&mcc, &fs.mc);
    if (r) {
        fprintf(stderr, "synod-mount: cannot reach the metaservers %s: %s\n", o.metas, err_str(r));
        goto out_free;
    }
    struct cio_config cc = {.io_timeout_ms = ms_of(o.io_timeout), .rpc_timeout_ms = ms_of(MAX(o.rpc_timeout, 1) * 2),
                            .loc_ttl_ms = ms_of(o.loc_ttl), .readahead = (uint32_t)ra,
                            .max_inflight = o.write_inflight, .writedone_ms = ms_of(o.writedone_interval)};
    fs.cio = cio_new(fs.mc, &cc);
    mc_set_session_lost(fs.mc, session_lost, fs.cio);
    fsops_init(&fs);
    fs.it = itab_new(fs.cio);
    fs.orefs = oref_new();
    double ttl = MIN(o.attr_timeout, o.entry_timeout);
    if (o.lookahead && ttl > 0) {
        fs.dc = dcache_new((uint64_t)(ttl * 1e9), 8, o.lookahead);
        mc_set_change_hook(fs.mc, fsops_changed, &fs);
    }
    mc_set_opens_reporter(fs.mc, opens_report, fs.orefs);
    fsops_start(&fs);

    se = fuse_session_new(&args, &fsops_ops, sizeof(fsops_ops), &fs);
    if (!se) {
        fprintf(stderr, "synod-mount: bad FUSE options (see --help)\n");
        goto out_free;
    }
    if (fuse_set_signal_handlers(se) != 0)
        goto out_destroy;
    if (fuse_session_mount(se, o.mountpoint) != 0) {
        fprintf(stderr, "synod-mount: cannot mount on %s\n", o.mountpoint);
        goto out_handlers;
    }
    LOG_INFO("mounted %s on %s", o.metas, o.mountpoint);
    daemon_done(0, o.log_file);
    if (o.single) {
        r = fuse_session_loop(se);
    } else {
        struct fuse_loop_config *lc = fuse_loop_cfg_create();
        fuse_loop_cfg_set_max_threads(lc, o.max_threads ? o.max_threads : 10);
        fuse_loop_cfg_set_clone_fd(lc, 0);
        r = fuse_session_loop_mt(se, lc);
        fuse_loop_cfg_destroy(lc);
    }
    rc = r == 0 ? 0 : 1;
    LOG_INFO("unmounting %s", o.mountpoint);
    fuse_session_unmount(se);
out_handlers:
    fuse_remove_signal_handlers(se);
out_destroy:
    fuse_session_destroy(se);
out_free:
    daemon_done(rc ? rc : 1, NULL); /* no-op when already reported */
    if (fs.orefs)
        fsops_stop(&fs);
    itab_free(fs.it);
    cio_free(fs.cio);
    mc_free(fs.mc);
    oref_free(fs.orefs);
    dcache_free(fs.dc);
    rpc_client_shutdown();
    free(name);
    fuse_opt_free_args(&args);
    free(o.metas);
    free(o.mountpoint);
    free(o.readahead);
    free(o.max_write);
    free(o.log_file);
    free(o.log_level);
    free(o.client_name);
    return rc;
}
