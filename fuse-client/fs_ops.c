/* fs_ops.c - the libfuse low-level operations of synod-mount (contract in fs_ops.h).
 *
 * Every handler follows one shape: build the request (credentials from the kernel request), mc_call, turn
 * the reply into the FUSE reply. Errors are -errno all the way and become fuse_reply_err(-r). File handles
 * are pointers to struct handle (the metaserver's handle id plus our inode entry), directory handles to
 * struct dirh (a readdir cursor over name-ordered pages).
 */
#include "fuse-client/fs_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h> /* RENAME_NOREPLACE, RENAME_EXCHANGE */
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "common/clock.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "fuse-client/dir_cache.h"
#include "fuse-client/open_refs.h"
#include "meta.pb-c.h"

#define MAX_GROUPS 256

static struct fs *FS(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* ---- credentials and attributes --------------------------------------------------------------------- */

struct cred {
    Synod__V1__Cred c;
    uint32_t groups[MAX_GROUPS];
};

/* The caller's credentials. The supplementary groups cost fuse_req_getgroups an open and parse of
 * /proc/PID/task/TID/status (two system calls and ~70 us per operation on our test VM); the namespace
 * consults them only for a caller that is not root (cred_in_group is behind every cred_is_root bypass), so
 * root's operations skip them. */
static Synod__V1__Cred *cred_of(fuse_req_t req, struct cred *cr)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    synod__v1__cred__init(&cr->c);
    cr->c.uid = ctx->uid;
    cr->c.gid = ctx->gid;
    cr->c.umask = 0; /* the kernel applied it already */
    if (ctx->uid == 0)
        return &cr->c;
    gid_t g[MAX_GROUPS];
    int n = fuse_req_getgroups(req, MAX_GROUPS, g);
    if (n < 0)
        n = 0; /* not supported: primary group only */
    n = MIN(n, MAX_GROUPS);
    for (int i = 0; i < n; i++)
        cr->groups[i] = g[i];
    cr->c.n_groups = (size_t)n;
    cr->c.groups = cr->groups;
    return &cr->c;
}

static void ts_of(int64_t ns, struct timespec *ts)
{
    int64_t s = ns / (int64_t)NS_PER_SEC, r = ns % (int64_t)NS_PER_SEC;
    if (r < 0) {
        r += (int64_t)NS_PER_SEC;
        s--;
    }
    ts->tv_sec = s;
    ts->tv_nsec = r;
}

static int64_t ns_of(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * (int64_t)NS_PER_SEC + ts->tv_nsec;
}

/* Attr -> stat; the size also counts this client's unflushed writes. */
static void stat_of(struct fs *fs, const Synod__V1__Attr *a, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = a->ino;
    st->st_mode = a->mode;
    st->st_nlink = a->nlink;
    st->st_uid = a->uid;
    st->st_gid = a->gid;
    st->st_size = (off_t)(S_ISREG(a->mode) ? itab_note_size(fs->it, a->ino, a->size) : a->size);
    st->st_rdev = a->rdev;
    st->st_blksize = CIO_BLOCK_SIZE;
    st->st_blocks = (blkcnt_t)a->blocks;
    ts_of(a->atime_ns, &st->st_atim);
    ts_of(a->mtime_ns, &st->st_mtim);
    ts_of(a->ctime_ns, &st->st_ctim);
}

/* The entry parameters of attr with the configured timeouts. */
static void entry_of(struct fs *fs, const Synod__V1__Attr *a, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = a->ino;
    e->generation = a->generation;
    stat_of(fs, a, &e->attr);
    e->attr_timeout = fs->attr_timeout;
    e->entry_timeout = fs->entry_timeout;
}

/* Reply with an entry for attr, taking one lookup reference (given back if the kernel never got it). */
static void reply_entry(fuse_req_t req, const Synod__V1__Attr *a)
{
    struct fs *fs = FS(req);
    if (!a) {
        fuse_reply_err(req, EIO);
        return;
    }
    struct fuse_entry_param e;
    itab_lookup(fs->it, a->ino, a->size);
    entry_of(fs, a, &e);
    if (fuse_reply_entry(req, &e) != 0)
        itab_forget(fs->it, a->ino, 1);
}

static void reply_attr(fuse_req_t req, const Synod__V1__Attr *a)
{
    struct fs *fs = FS(req);
    if (!a) {
        fuse_reply_err(req, EIO);
        return;
    }
    struct stat st;
    stat_of(fs, a, &st);
    fuse_reply_attr(req, &st, fs->attr_timeout);
}

static void reply_result(fuse_req_t req, int r)
{
    fuse_reply_err(req, r < 0 ? -r : r);
}

/* ---- directory attributes from this mount's own changes ------------------------------------------- */

void fsops_init(struct fs *fs)
{
    pthread_mutex_init(&fs->dattr_mu, NULL);
    atomic_init(&fs->changes, 0);
    memset(fs->dattr, 0, sizeof(fs->dattr));
    pthread_mutex_init(&fs->rel_mu, NULL);
    clk_cond_init(&fs->rel_cv);
    fs->rel_ino = xmalloc(FSOPS_RELEASE_MAX * sizeof(*fs->rel_ino));
    fs->rel_seq = xmalloc(FSOPS_RELEASE_MAX * sizeof(*fs->rel_seq));
    fs->rel_n = 0;
    fs->rel_stop = fs->rel_running = false;
}

/* One Release call for n memory releases (n >= 1). A lost Release only keeps an unlinked file until the
 * session ends; the leader never purges a file this client still holds. */
static void send_releases(struct fs *fs, uint64_t *ino, uint64_t *seq, size_t n)
{
    Synod__V1__ReleaseReq m = SYNOD__V1__RELEASE_REQ__INIT;
    m.ino = ino[0];
    m.memory = true;
    m.open_seq = seq[0];
    m.n_more_inos = m.n_more_seqs = n - 1;
    m.more_inos = ino + 1;
    m.more_seqs = seq + 1;
    ProtobufCMessage *rep;
    int r = mc_call(fs->mc, "Release", &m.base, 0, &rep);
    rpc_message_free(rep);
    if (r)
        LOG_WARN("%s: release of %zu inodes (%llu first) failed", err_name(r), n, (unsigned long long)ino[0]);
}

static void *releaser_main(void *arg)
{
    struct fs *fs = arg;
    uint64_t *ino = xmalloc(FSOPS_RELEASE_MAX * sizeof(*ino));
    uint64_t *seq = xmalloc(FSOPS_RELEASE_MAX * sizeof(*seq));
    pthread_mutex_lock(&fs->rel_mu);
    for (;;) {
        while (!fs->rel_n && !fs->rel_stop)
            pthread_cond_wait(&fs->rel_cv, &fs->rel_mu);
        if (fs->rel_stop)
            break;
        /* gather for a few milliseconds: a program closing files one after another sends one call */
        uint64_t until = clk_mono_ns() + FSOPS_RELEASE_MS * NS_PER_MS;
        while (!fs->rel_stop && fs->rel_n < FSOPS_RELEASE_MAX && clk_mono_ns() < until) {
            struct timespec ts = {(time_t)(until / NS_PER_SEC), (long)(until % NS_PER_SEC)};
            pthread_cond_timedwait(&fs->rel_cv, &fs->rel_mu, &ts);
        }
        if (fs->rel_stop)
            break;
        size_t n = fs->rel_n;
        memcpy(ino, fs->rel_ino, n * sizeof(*ino));
        memcpy(seq, fs->rel_seq, n * sizeof(*seq));
        fs->rel_n = 0;
        pthread_cond_broadcast(&fs->rel_cv); /* a closer waiting for room */
        pthread_mutex_unlock(&fs->rel_mu);
        send_releases(fs, ino, seq, n);
        pthread_mutex_lock(&fs->rel_mu);
    }
    pthread_mutex_unlock(&fs->rel_mu);
    free(ino);
    free(seq);
    return NULL;
}

void fsops_start(struct fs *fs)
{
    if (pthread_create(&fs->rel_thread, NULL, releaser_main, fs) != 0)
        PANIC("cannot start the releaser thread");
    fs->rel_running = true;
}

void fsops_stop(struct fs *fs)
{
    if (fs->rel_running) {
        pthread_mutex_lock(&fs->rel_mu);
        fs->rel_stop = true;
        pthread_cond_broadcast(&fs->rel_cv);
        pthread_mutex_unlock(&fs->rel_mu);
        pthread_join(fs->rel_thread, NULL);
        fs->rel_running = false;
    }
    free(fs->rel_ino);
    free(fs->rel_seq);
    fs->rel_ino = fs->rel_seq = NULL;
}

/* A change's reply carried directory a as the change left it. Kept only if no other change went through
 * this mount while it was in flight (`changes` moved by exactly this request's one since `before`):
 * otherwise a reply overtaken by a later change could bring older attributes back. */
static void dattr_put(struct fs *fs, const Synod__V1__Attr *a, uint64_t before)
{
    if (!a || !a->ino || !S_ISDIR(a->mode) || fs->attr_timeout <= 0)
        return;
    pthread_mutex_lock(&fs->dattr_mu);
    if (atomic_load(&fs->changes) == before + 1) {
        struct fs_dattr *d = &fs->dattr[a->ino % ARRAY_SIZE(fs->dattr)];
        d->a = *a;
        d->a.base.unknown_fields = NULL;
        d->a.base.n_unknown_fields = 0;
        d->changes = before + 1;
        d->until_ns = clk_mono_ns() + (uint64_t)(fs->attr_timeout * 1e9);
    }
    pthread_mutex_unlock(&fs->dattr_mu);
}

/* Directory ino as this mount's last change left it, if no change came since and attr_timeout has not
 * passed: copies it and the seconds left. */
static bool dattr_get(struct fs *fs, uint64_t ino, Synod__V1__Attr *out, double *left_s)
{
    bool hit = false;
    uint64_t now = clk_mono_ns();
    pthread_mutex_lock(&fs->dattr_mu);
    const struct fs_dattr *d = &fs->dattr[ino % ARRAY_SIZE(fs->dattr)];
    if (d->a.ino == ino && d->changes == atomic_load(&fs->changes) && now < d->until_ns) {
        *out = d->a;
        *left_s = (double)(d->until_ns - now) / 1e9;
        hit = true;
    }
    pthread_mutex_unlock(&fs->dattr_mu);
    return hit;
}

/* Interrupts (FUSE_INTERRUPT, a signal to the blocked process) trigger a cancellation token that the
 * operation passes down (rpc.h, mc_call_cancellable, cio_*_cancellable); libfuse calls intr_fire at once if
 * the interrupt came first. intr_end unregisters before the reply: fuse_req_interrupt_func takes the
 * request's lock, which libfuse holds while it runs the callback, so the token never dies under it. */
static void intr_fire(fuse_req_t req, void *tok)
{
    UNUSED(req);
    rpc_cancel_trigger(tok);
}

static struct rpc_cancel *intr_begin(fuse_req_t req, struct rpc_cancel *tok)
{
    rpc_cancel_init(tok);
    fuse_req_interrupt_func(req, intr_fire, tok);
    return tok;
}

static void intr_end(fuse_req_t req, struct rpc_cancel *tok)
{
    fuse_req_interrupt_func(req, NULL, NULL);
    rpc_cancel_destroy(tok);
}

/* As ask (below), interruptible (see mc_call_cancellable for when a mutation may stop). */
static ProtobufCMessage *ask_intr(fuse_req_t req, const char *method, ProtobufCMessage *m, unsigned flags)
{
    struct rpc_cancel tok;
    ProtobufCMessage *rep;
    int r = mc_call_cancellable(FS(req)->mc, method, m, flags, intr_begin(req, &tok), &rep);
    intr_end(req, &tok);
    if (r) {
        reply_result(req, r);
        return NULL;
    }
    return rep;
}

/* Call `method`; on failure answer the request with the error and return NULL, else the reply (caller
 * frees with rpc_message_free). */
static ProtobufCMessage *ask(fuse_req_t req, const char *method, ProtobufCMessage *m)
{
    ProtobufCMessage *rep;
    int r = mc_call(FS(req)->mc, method, m, 0, &rep);
    if (r) {
        reply_result(req, r);
        return NULL;
    }
    return rep;
}

/* Call a method that makes an entry (EntryRep, or CreateRep for Mknod) and reply with it; keep the
 * directory's attributes. */
static void call_entry(fuse_req_t req, const char *method, ProtobufCMessage *m)
{
    uint64_t before = atomic_load(&FS(req)->changes);
    ProtobufCMessage *rep = ask(req, method, m);
    if (!rep)
        return;
    const Synod__V1__Attr *a, *pa;
    if (rep->descriptor == &synod__v1__create_rep__descriptor) {
        a = ((const Synod__V1__CreateRep *)rep)->attr;
        pa = ((const Synod__V1__CreateRep *)rep)->parent_attr;
    } else {
        a = ((const Synod__V1__EntryRep *)rep)->attr;
        pa = ((const Synod__V1__EntryRep *)rep)->parent_attr;
    }
    dattr_put(FS(req), pa, before);
    reply_entry(req, a);
    rpc_message_free(rep);
}

/* Call Unlink or Rename (DirChangeRep) and answer with the result; keep the directories' attributes. */
static void call_dirs(fuse_req_t req, const char *method, ProtobufCMessage *m)
{
    struct fs *fs = FS(req);
    uint64_t before = atomic_load(&fs->changes);
    ProtobufCMessage *rep;
    int r = mc_call(fs->mc, method, m, 0, &rep);
    if (r == 0) {
        const Synod__V1__DirChangeRep *dc = (const Synod__V1__DirChangeRep *)rep;
        /* two directories: the second would see `changes` at before + 1 too, both came from this request */
        dattr_put(fs, dc->parent_attr, before);
        dattr_put(fs, dc->new_parent_attr, before);
    }
    rpc_message_free(rep);
    reply_result(req, r);
}

/* ---- names ------------------------------------------------------------------------------------------ */

/* Patch the names a change touched into the cached listings (dir_cache.h). A method not known here to leave
 * names alone drops them all: a new name-changing request must never leave a listing that says "no such
 * name" for a name it made. */
static void names_changed(struct dcache *dc, const char *method, const ProtobufCMessage *req)
{
    static const char *const neutral[] = {"Setattr", "Setxattr", "Removexattr", "Open", "Release",
                                          "ChunkOpenWrite", "ChunkWriteDone", "BadReplica", "SetLock", "GetLock",
                                          "SessionOpen", "SessionClose", "SessionKeepalive"};
    if (!strcmp(method, "Mknod")) {
        const Synod__V1__MknodReq *m = (const Synod__V1__MknodReq *)req;
        dcache_touch(dc, m->parent, m->name);
    } else if (!strcmp(method, "Symlink")) {
        const Synod__V1__SymlinkReq *m = (const Synod__V1__SymlinkReq *)req;
        dcache_touch(dc, m->parent, m->name);
    } else if (!strcmp(method, "Link")) {
        const Synod__V1__LinkReq *m = (const Synod__V1__LinkReq *)req;
        dcache_touch(dc, m->new_parent, m->new_name);
    } else if (!strcmp(method, "Unlink")) {
        const Synod__V1__UnlinkReq *m = (const Synod__V1__UnlinkReq *)req;
        dcache_touch(dc, m->parent, m->name);
    } else if (!strcmp(method, "Rename")) {
        const Synod__V1__RenameReq *m = (const Synod__V1__RenameReq *)req;
        dcache_touch(dc, m->parent, m->name);
        dcache_touch(dc, m->new_parent, m->new_name);
    } else {
        for (size_t i = 0; i < ARRAY_SIZE(neutral); i++) {
            if (!strcmp(method, neutral[i])) {
                dcache_invalidate(dc);
                return;
            }
        }
        dcache_forget_names(dc);
    }
}

void fsops_changed(void *arg, const char *method, const ProtobufCMessage *req)
{
    struct fs *fs = arg;
    /* opening and closing change nothing a listing or a directory's attributes show (O_TRUNC does) */
    if (!strcmp(method, "Open") && ((const Synod__V1__OpenReq *)req)->memory &&
        !(((const Synod__V1__OpenReq *)req)->flags & O_TRUNC))
        return;
    if (!strcmp(method, "Release") && ((const Synod__V1__ReleaseReq *)req)->memory)
        return;
    /* a file's data, leases and locks: no directory's attributes move (its listings' attributes may) */
    static const char *const file_only[] = {"ChunkOpenWrite", "ChunkWriteDone", "BadReplica", "SetLock",
                                            "GetLock"};
    bool dirs_same = false;
    for (size_t i = 0; i < ARRAY_SIZE(file_only) && !dirs_same; i++)
        dirs_same = !strcmp(method, file_only[i]);
    if (!dirs_same)
        atomic_fetch_add(&fs->changes, 1);
    if (fs->dc)
        names_changed(fs->dc, method, req);
}

/* Answer a lookup from a cached listing `age_ns` old: the kernel may keep it only for what is left of the
 * timeouts. An inode this client already knows (open, written) is not answered from a listing: its size
 * here may be older than what the client itself wrote. */
static bool lookup_cached(fuse_req_t req, const Synod__V1__Attr *a, uint64_t age_ns)
{
    struct fs *fs = FS(req);
    if (itab_has(fs->it, a->ino))
        return false;
    struct fuse_entry_param e;
    itab_lookup(fs->it, a->ino, a->size);
    entry_of(fs, a, &e);
    double age = (double)age_ns / 1e9;
    e.attr_timeout = MAX(fs->attr_timeout - age, 0.0);
    e.entry_timeout = MAX(fs->entry_timeout - age, 0.0);
    if (fuse_reply_entry(req, &e) != 0)
        itab_forget(fs->it, a->ino, 1);
    return true;
}

/* List dir into the fill (Readdir plus, page by page, with the lookup's credentials). */
static void lookahead_fetch(struct fs *fs, Synod__V1__Cred *cred, uint64_t dir, struct dcache_fill *f)
{
    char *after = xstrdup("");
    bool ok = false;
    for (;;) {
        Synod__V1__ReaddirReq m = SYNOD__V1__READDIR_REQ__INIT;
        m.cred = cred;
        m.ino = dir;
        m.after = after;
        m.max_entries = 4096; /* the server's largest page */
        m.plus = true;
        ProtobufCMessage *rep;
        if (mc_call(fs->mc, "Readdir", &m.base, 0, &rep))
            break;
        const Synod__V1__ReaddirRep *p = (const Synod__V1__ReaddirRep *)rep;
        bool more = true;
        for (size_t i = 0; i < p->n_entries && more; i++) {
            const Synod__V1__Dirent *d = p->entries[i];
            if (d->attr && strcmp(d->name, ".") && strcmp(d->name, ".."))
                more = dcache_fill_add(f, d->name, d->attr);
        }
        bool eof = p->eof || p->n_entries == 0;
        if (!eof) {
            free(after);
            after = xstrdup(p->entries[p->n_entries - 1]->name);
        }
        rpc_message_free(rep);
        if (!more)
            break;
        if (eof) {
            ok = true;
            break;
        }
    }
    free(after);
    dcache_fill_end(f, ok);
}

/* "No such name": cached by the kernel for negative_timeout, at most `cap` seconds (an answer from a listing:
 * what is left of entry_timeout), or not at all. */
static void reply_absent(fuse_req_t req, double cap)
{
    struct fs *fs = FS(req);
    double t = MIN(fs->negative_timeout, cap);
    if (t <= 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.entry_timeout = t;
    fuse_reply_entry(req, &e);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = FS(req);
    struct cred cr;
    Synod__V1__LookupReq m = SYNOD__V1__LOOKUP_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.parent = parent;
    m.name = (char *)name;
    uint64_t ck = 0;
    if (fs->dc) {
        ck = dcache_cred_key(cr.c.uid, cr.c.gid, cr.c.groups, cr.c.n_groups);
        Synod__V1__Attr a;
        uint64_t age;
        if (dcache_get(fs->dc, parent, ck, name, &a, &age) && lookup_cached(req, &a, age))
            return;
        if (dcache_absent(fs->dc, parent, ck, name, &age)) {
            reply_absent(req, fs->entry_timeout - (double)age / 1e9);
            return;
        }
    }
    ProtobufCMessage *rep;
    struct rpc_cancel tok;
    int r = mc_call_cancellable(fs->mc, "Lookup", &m.base, MC_CANCEL_INFLIGHT, intr_begin(req, &tok), &rep);
    intr_end(req, &tok);
    if (r == -ENOENT)
        reply_absent(req, fs->negative_timeout);
    else if (r)
        reply_result(req, r);
    if (r && r != -ENOENT)
        return;
    if (!r) {
        reply_entry(req, ((Synod__V1__EntryRep *)rep)->attr);
        rpc_message_free(rep);
    }
    /* many lookups in one directory (found or not): list it now (after answering), so the next ones need no
     * RPC */
    struct dcache_fill *f = fs->dc ? dcache_miss(fs->dc, parent, ck) : NULL;
    if (f)
        lookahead_fetch(fs, &cr.c, parent, f);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    itab_forget(FS(req)->it, ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        itab_forget(FS(req)->it, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    UNUSED(fi);
    struct fs *fs = FS(req);
    Synod__V1__Attr da;
    double left;
    if (dattr_get(fs, ino, &da, &left)) {
        struct stat st;
        stat_of(fs, &da, &st);
        fuse_reply_attr(req, &st, left);
        return;
    }
    Synod__V1__GetattrReq m = SYNOD__V1__GETATTR_REQ__INIT;
    m.ino = ino;
    ProtobufCMessage *rep = ask(req, "Getattr", &m.base);
    if (!rep)
        return;
    reply_attr(req, ((Synod__V1__AttrRep *)rep)->attr);
    rpc_message_free(rep);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
    UNUSED(fi);
    struct fs *fs = FS(req);
    struct cred cr;
    Synod__V1__SetattrReq m = SYNOD__V1__SETATTR_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.ino = ino;
    if (to_set & FUSE_SET_ATTR_MODE) {
        m.valid |= SYNOD__V1__SETATTR_VALID__SETATTR_MODE;
        m.mode = attr->st_mode;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        m.valid |= SYNOD__V1__SETATTR_VALID__SETATTR_UID;
        m.uid = attr->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        m.valid |= SYNOD__V1__SETATTR_VALID__SETATTR_GID;
        m.gid = attr->st_gid;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        m.valid |= SYNOD__V1__SETATTR_VALID__SETATTR_SIZE;
        m.size = (uint64_t)attr->st_size;
        itab_cache_changed(fs->it, ino);
    }
    /* UTIME_NOW is its own bit: the metaserver lets anyone with write access set "now", only the owner
     * an explicit time. */
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
        m.valid |= SYNOD__V1__SETATTR_VALID__SETATTR_ATIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
        m.valid |= SYNOD__V1__SETATTR_VALID__SETATTR_ATIME;
        m.atime_ns = ns_of(&attr->st_atim);
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
        m.valid |= SYNOD__V1__SETATTR_VALID__SETATTR_MTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
        m.valid |= SYNOD__V1__SETATTR_VALID__SETATTR_MTIME;
        m.mtime_ns = ns_of(&attr->st_mtim);
    }
    /* Data first: written data must not land after (and undo) a truncate or an explicit mtime. */
    struct itab_inode *n = itab_pin(fs->it, ino, 0);
    int r = 0;
    if (m.valid & SYNOD__V1__SETATTR_VALID__SETATTR_SIZE)
        r = cio_truncate_prepare(n->file, m.size);
    else if (cio_file_dirty(n->file) || (m.valid & (SYNOD__V1__SETATTR_VALID__SETATTR_MTIME |
                                                     SYNOD__V1__SETATTR_VALID__SETATTR_MTIME_NOW)))
        r = cio_flush(n->file, false, true);
    ProtobufCMessage *rep = NULL;
    if (r == 0)
        r = mc_call(fs->mc, "Setattr", &m.base, 0, &rep);
    if (r == 0 && (m.valid & SYNOD__V1__SETATTR_VALID__SETATTR_SIZE)) {
        const Synod__V1__Attr *a = ((Synod__V1__AttrRep *)rep)->attr;
        cio_file_set_size(n->file, a ? a->size : m.size, true);
        cio_file_invalidate(n->file);
    }
    itab_unpin(fs->it, n);
    if (r) {
        reply_result(req, r);
        return;
    }
    reply_attr(req, ((Synod__V1__AttrRep *)rep)->attr);
    rpc_message_free(rep);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    Synod__V1__ReadlinkReq m = SYNOD__V1__READLINK_REQ__INIT;
    m.ino = ino;
    ProtobufCMessage *rep = ask(req, "Readlink", &m.base);
    if (!rep)
        return;
    fuse_reply_readlink(req, ((Synod__V1__ReadlinkRep *)rep)->target);
    rpc_message_free(rep);
}

static void mknod_common(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    struct cred cr;
    Synod__V1__MknodReq m = SYNOD__V1__MKNOD_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.parent = parent;
    m.name = (char *)name;
    m.mode = mode;
    m.rdev = rdev;
    call_entry(req, "Mknod", &m.base);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    mknod_common(req, parent, name, mode, rdev);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    mknod_common(req, parent, name, (mode & 07777) | S_IFDIR, 0);
}

static void unlink_common(fuse_req_t req, fuse_ino_t parent, const char *name, bool is_dir)
{
    struct cred cr;
    Synod__V1__UnlinkReq m = SYNOD__V1__UNLINK_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.parent = parent;
    m.name = (char *)name;
    m.is_dir = is_dir;
    call_dirs(req, "Unlink", &m.base);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    unlink_common(req, parent, name, false);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    unlink_common(req, parent, name, true);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct cred cr;
    Synod__V1__SymlinkReq m = SYNOD__V1__SYMLINK_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.parent = parent;
    m.name = (char *)name;
    m.target = (char *)link;
    call_entry(req, "Symlink", &m.base);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
        fuse_reply_err(req, EINVAL); /* RENAME_WHITEOUT: no overlay support */
        return;
    }
    struct cred cr;
    Synod__V1__RenameReq m = SYNOD__V1__RENAME_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.parent = parent;
    m.name = (char *)name;
    m.new_parent = newparent;
    m.new_name = (char *)newname;
    m.flags = (flags & RENAME_NOREPLACE ? SYNOD__V1__RENAME_FLAGS__RENAME_NOREPLACE : 0) |
              (flags & RENAME_EXCHANGE ? SYNOD__V1__RENAME_FLAGS__RENAME_EXCHANGE : 0);
    call_dirs(req, "Rename", &m.base);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    struct cred cr;
    Synod__V1__LinkReq m = SYNOD__V1__LINK_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.ino = ino;
    m.new_parent = newparent;
    m.new_name = (char *)newname;
    call_entry(req, "Link", &m.base);
}

/* ---- files ------------------------------------------------------------------------------------------ */

struct handle {
    struct itab_inode *n;
    uint64_t meta_fh;
    atomic_bool posix_locks; /* this handle's owner took POSIX locks: release them on flush */
    bool append;             /* O_APPEND: writes go to the end as the metaserver says, not the kernel */
};

static struct handle *H(struct fuse_file_info *fi)
{
    return (struct handle *)(uintptr_t)fi->fh;
}

/* A new handle of ino, whose attributes the Open (or create) just answered (a may be NULL). The kernel's
 * page cache of the file is kept when it holds data of the version `a` names (itab_keep_cache) and
 * may_keep (not for a truncating open or a create, whose data just changed). */
static void handle_open(struct fs *fs, fuse_ino_t ino, const Synod__V1__Attr *a, uint64_t meta_fh, bool may_keep,
                        struct fuse_file_info *fi)
{
    struct handle *h = xcalloc(1, sizeof(*h));
    h->n = itab_pin(fs->it, ino, a ? a->size : 0);
    bool keep = false;
    if (a) {
        struct itab_stamp s = {.ctime_ns = a->ctime_ns, .mtime_ns = a->mtime_ns, .size = a->size};
        keep = itab_keep_cache(fs->it, ino, &s) && may_keep;
    } else {
        itab_cache_changed(fs->it, ino);
    }
    if (a)
        cio_file_set_size(h->n->file, a->size, false);
    cio_file_invalidate(h->n->file); /* close-to-open: see other clients' writes */
    h->meta_fh = meta_fh;
    /* O_APPEND: the kernel would place each write at its cached size, which lags behind another client's
     * appends for up to attr_timeout. So this handle bypasses the page cache and the client appends at the
     * size the metaserver just gave (close-to-open), grown by its own writes. */
    fi->direct_io = 0;
    if (fi->flags & O_APPEND) {
        h->append = true;
        fi->direct_io = 1;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->keep_cache = keep;
}

/* One open of ino is over (a handle closed, or an Open that failed): after the last one, the leader's
 * memory open goes (a Release outside the log), queued for the releaser (fsops_start), or sent here when no
 * releaser runs. */
static void open_ref_put(struct fs *fs, uint64_t ino)
{
    uint64_t seq;
    if (!oref_put(fs->orefs, ino, &seq))
        return;
    pthread_mutex_lock(&fs->rel_mu);
    if (!fs->rel_running || fs->rel_stop) {
        pthread_mutex_unlock(&fs->rel_mu);
        send_releases(fs, &ino, &seq, 1);
        return;
    }
    while (fs->rel_n == FSOPS_RELEASE_MAX && !fs->rel_stop)
        pthread_cond_wait(&fs->rel_cv, &fs->rel_mu); /* full: the releaser is sending; wait for room */
    if (fs->rel_n < FSOPS_RELEASE_MAX) {
        fs->rel_ino[fs->rel_n] = ino;
        fs->rel_seq[fs->rel_n] = seq;
        if (fs->rel_n++ == 0 || fs->rel_n == FSOPS_RELEASE_MAX)
            pthread_cond_broadcast(&fs->rel_cv);
    }
    pthread_mutex_unlock(&fs->rel_mu);
}

/* Give the open back and drop our pin. */
static void handle_close(struct fs *fs, struct handle *h)
{
    open_ref_put(fs, h->n->ino);
    itab_unpin(fs->it, h->n);
    free(h);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
    struct fs *fs = FS(req);
    struct cred cr;
    Synod__V1__MknodReq m = SYNOD__V1__MKNOD_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.parent = parent;
    m.name = (char *)name;
    m.mode = (mode & 07777) | S_IFREG;
    m.open = true;
    m.open_flags = (uint32_t)fi->flags;
    m.exclusive = (fi->flags & O_EXCL) != 0;
    m.memory = true;
    m.open_seq = oref_create_begin(fs->orefs);
    uint64_t before = atomic_load(&fs->changes);
    ProtobufCMessage *rep = ask_intr(req, "Mknod", &m.base, 0);
    const Synod__V1__CreateRep *cr_rep = (const Synod__V1__CreateRep *)rep;
    oref_create_end(fs->orefs, m.open_seq, rep && cr_rep->attr ? cr_rep->attr->ino : 0);
    if (!rep)
        return;
    if (!cr_rep->attr) {
        rpc_message_free(rep);
        fuse_reply_err(req, EIO);
        return;
    }
    dattr_put(fs, cr_rep->parent_attr, before);
    if (cr_rep->existed) {
        /* O_CREAT opened a file another client had just created, which this mount may also hold: a
         * Release of its other handle could have passed the create's registration, so register again */
        Synod__V1__OpenReq o = SYNOD__V1__OPEN_REQ__INIT;
        struct cred cr2;
        o.cred = cred_of(req, &cr2);
        o.ino = cr_rep->attr->ino;
        o.flags = (uint32_t)(fi->flags & ~(O_TRUNC | O_CREAT | O_EXCL));
        o.memory = true;
        o.open_seq = oref_open_begin(fs->orefs, o.ino);
        ProtobufCMessage *orep;
        int r = mc_call(fs->mc, "Open", &o.base, 0, &orep);
        rpc_message_free(orep);
        open_ref_put(fs, o.ino); /* the create's own count stays */
        if (r) {
            open_ref_put(fs, o.ino);
            rpc_message_free(rep);
            reply_result(req, r);
            return;
        }
    }
    handle_open(fs, cr_rep->attr->ino, cr_rep->attr, cr_rep->fh, false, fi);
    struct fuse_entry_param e;
    itab_lookup(fs->it, cr_rep->attr->ino, cr_rep->attr->size);
    if (!cr_rep->existed && fs->attr_timeout > 0) /* a file made just now has no xattrs */
        itab_nocaps_note(fs->it, cr_rep->attr->ino, itab_xattr_gen(fs->it, cr_rep->attr->ino),
                         clk_mono_ns() + (uint64_t)(fs->attr_timeout * 1e9));
    entry_of(fs, cr_rep->attr, &e);
    rpc_message_free(rep);
    if (fuse_reply_create(req, &e, fi) != 0) {
        itab_forget(fs->it, e.ino, 1);
        handle_close(fs, H(fi));
    }
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = FS(req);
    struct cred cr;
    Synod__V1__OpenReq m = SYNOD__V1__OPEN_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.ino = ino;
    m.flags = (uint32_t)fi->flags;
    bool trunc = (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY;
    if (trunc) {
        /* O_TRUNC arrives here (atomic_o_trunc): like a truncate to 0, this client's data goes first and
         * its write leases are returned, so nothing written before lands after the truncation. */
        struct itab_inode *n = itab_pin(fs->it, ino, 0);
        int r = cio_truncate_prepare(n->file, 0);
        itab_unpin(fs->it, n);
        if (r) {
            reply_result(req, r);
            return;
        }
    }
    m.memory = true;
    m.open_seq = oref_open_begin(fs->orefs, ino);
    if ((fi->flags & O_ACCMODE) != O_WRONLY && !trunc)
        m.locations = CIO_LOC_BATCH; /* a reader: where the first chunks live, in the same answer */
    ProtobufCMessage *rep = ask_intr(req, "Open", &m.base, 0);
    if (!rep) {
        open_ref_put(fs, ino);
        return;
    }
    const Synod__V1__OpenRep *o = (const Synod__V1__OpenRep *)rep;
    handle_open(fs, ino, o->attr, o->fh, !trunc, fi);
    cio_file_seed_locations(H(fi)->n->file, o->located, o->chunks, o->n_chunks);
    if (trunc) /* the chunks' write ends must not bring the old size back */
        cio_file_set_size(H(fi)->n->file, o->attr ? o->attr->size : 0, true);
    rpc_message_free(rep);
    if (fuse_reply_open(req, fi) != 0)
        handle_close(fs, H(fi));
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    UNUSED(ino);
    struct handle *h = H(fi);
    uint8_t *buf = xmalloc(size ? size : 1);
    size_t n;
    struct rpc_cancel tok;
    int r = cio_read_cancellable(h->n->file, (uint64_t)off, size, buf, &n, intr_begin(req, &tok));
    intr_end(req, &tok);
    if (r)
        reply_result(req, r);
    else
        fuse_reply_buf(req, (const char *)buf, n);
    free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct handle *h = H(fi);
    itab_cache_changed(FS(req)->it, ino); /* the next open drops the page cache (see itab_keep_cache) */
    struct rpc_cancel tok;
    uint64_t at = (uint64_t)off;
    int r = cio_write_at(h->n->file, &at, h->append, buf, size, intr_begin(req, &tok));
    intr_end(req, &tok);
    if (r)
        reply_result(req, r);
    else
        fuse_reply_write(req, size);
}

static int lock_call(struct fs *fs, const char *method, uint64_t ino, uint64_t owner, uint32_t kind, uint32_t type,
                     uint64_t start, uint64_t end, uint32_t pid, bool wait, Synod__V1__LockRep *out);

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = FS(req);
    struct handle *h = H(fi);
    struct rpc_cancel tok;
    /* close(): complete the writes (durable on every replica with sync_on_close, as fsync makes them) and
     * return the write leases in the same ChunkWriteDone, so another client can write at once (a later
     * write through another descriptor just reopens). */
    int r = cio_flush_cancellable(h->n->file, fs->sync_close, true, intr_begin(req, &tok));
    intr_end(req, &tok);
    if (atomic_load(&h->posix_locks)) {
        /* close() drops every POSIX lock of the owner on this file */
        int r2 = lock_call(fs, "SetLock", ino, fi->lock_owner, SYNOD__V1__LOCK_KIND__LOCK_POSIX,
                           SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK, 0, UINT64_MAX, 0, false, NULL);
        if (r2)
            LOG_WARN("%s: cannot drop the POSIX locks of inode %llu on close", err_name(r2), (unsigned long long)ino);
    }
    reply_result(req, r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = FS(req);
    struct handle *h = H(fi);
    int r = cio_flush(h->n->file, fs->sync_close, true);
    if (r)
        LOG_ERR("%s: data of inode %llu not stored at close", err_name(r), (unsigned long long)ino);
    if (fi->flock_release)
        lock_call(fs, "SetLock", ino, fi->lock_owner, SYNOD__V1__LOCK_KIND__LOCK_FLOCK,
                  SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK, 0, UINT64_MAX, 0, false, NULL);
    handle_close(fs, h);
    reply_result(req, r);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    UNUSED(ino);
    UNUSED(datasync);
    struct rpc_cancel tok;
    int r = cio_flush_cancellable(H(fi)->n->file, true, false, intr_begin(req, &tok));
    intr_end(req, &tok);
    reply_result(req, r);
}

/* ---- directories ------------------------------------------------------------------------------------ */

struct dirh {
    pthread_mutex_t mu;
    Synod__V1__ReaddirRep *page; /* current page (rpc message) */
    uint64_t base;               /* index of page->entries[0] among the directory's entries */
    bool plus;
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    UNUSED(ino);
    struct dirh *d = xcalloc(1, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    fi->fh = (uint64_t)(uintptr_t)d;
    if (fuse_reply_open(req, fi) != 0) {
        pthread_mutex_destroy(&d->mu);
        free(d);
    }
}

/* Fetch the page after `after` ("" = first page) into d; mu held. */
static int dir_fetch(fuse_req_t req, fuse_ino_t ino, struct dirh *d, const char *after, uint64_t base, bool plus)
{
    struct fs *fs = FS(req);
    struct cred cr;
    Synod__V1__ReaddirReq m = SYNOD__V1__READDIR_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.ino = ino;
    m.after = (char *)after;
    m.max_entries = fs->readdir_page;
    m.plus = plus;
    ProtobufCMessage *rep;
    int r = mc_call(fs->mc, "Readdir", &m.base, 0, &rep);
    if (r)
        return r;
    if (d->page)
        rpc_message_free(&d->page->base);
    d->page = (Synod__V1__ReaddirRep *)rep;
    d->base = base;
    d->plus = plus;
    return 0;
}

/* Make the page hold entry `idx` (or be the last page, eof, when idx is past the end); mu held. */
static int dir_seek(fuse_req_t req, fuse_ino_t ino, struct dirh *d, uint64_t idx, bool plus)
{
    if (!d->page || idx < d->base || d->plus != plus) {
        int r = dir_fetch(req, ino, d, "", 0, plus);
        if (r)
            return r;
    }
    while (idx >= d->base + d->page->n_entries && !d->page->eof && d->page->n_entries) {
        char *last = xstrdup(d->page->entries[d->page->n_entries - 1]->name);
        int r = dir_fetch(req, ino, d, last, d->base + d->page->n_entries, plus);
        free(last);
        if (r)
            return r;
    }
    return 0;
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi,
                           bool plus)
{
    struct fs *fs = FS(req);
    struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
    char *buf = xmalloc(size);
    size_t pos = 0;
    uint64_t *counted = NULL;
    size_t ncounted = 0;
    int r = 0;
    pthread_mutex_lock(&d->mu);
    /* Offsets: 1 = after ".", 2 = after "..", 3 + i = after entry i. */
    for (uint64_t o = (uint64_t)off; o < 2; o++) {
        const char *name = o == 0 ? "." : "..";
        struct stat st;
        memset(&st, 0, sizeof(st));
        st.st_ino = o == 0 ? ino : FUSE_ROOT_ID;
        st.st_mode = S_IFDIR;
        size_t need;
        if (plus) {
            struct fuse_entry_param e;
            memset(&e, 0, sizeof(e)); /* ino 0: no lookup reference for "." and ".." */
            e.attr = st;
            need = fuse_add_direntry_plus(req, buf + pos, size - pos, name, &e, (off_t)(o + 1));
        } else {
            need = fuse_add_direntry(req, buf + pos, size - pos, name, &st, (off_t)(o + 1));
        }
        if (need > size - pos)
            goto out_reply;
        pos += need;
    }
    uint64_t idx = (uint64_t)MAX(off, 2) - 2;
    for (;;) {
        r = dir_seek(req, ino, d, idx, plus);
        if (r)
            goto out_reply;
        if (idx >= d->base + d->page->n_entries)
            break; /* end of directory */
        const Synod__V1__Dirent *de = d->page->entries[idx - d->base];
        size_t need;
        if (plus && de->attr) {
            struct fuse_entry_param e;
            entry_of(fs, de->attr, &e);
            need = fuse_add_direntry_plus(req, buf + pos, size - pos, de->name, &e, (off_t)(idx + 3));
            if (need > size - pos)
                break;
            itab_lookup(fs->it, e.ino, de->attr->size);
            counted = xrealloc(counted, (ncounted + 1) * sizeof(*counted));
            counted[ncounted++] = e.ino;
        } else if (plus) {
            struct fuse_entry_param e;
            memset(&e, 0, sizeof(e)); /* no attributes: an entry without a lookup reference */
            e.attr.st_ino = de->ino;
            e.attr.st_mode = (mode_t)de->type & S_IFMT; /* Dirent.type carries the S_IFMT bits */
            need = fuse_add_direntry_plus(req, buf + pos, size - pos, de->name, &e, (off_t)(idx + 3));
            if (need > size - pos)
                break;
        } else {
            struct stat st;
            memset(&st, 0, sizeof(st));
            st.st_ino = de->ino;
            st.st_mode = (mode_t)de->type & S_IFMT; /* else d_type is DT_UNKNOWN and ls/find stat every name */
            need = fuse_add_direntry(req, buf + pos, size - pos, de->name, &st, (off_t)(idx + 3));
            if (need > size - pos)
                break;
        }
        pos += need;
        idx++;
    }
out_reply:
    pthread_mutex_unlock(&d->mu);
    if (r && pos == 0) {
        reply_result(req, r);
    } else if (fuse_reply_buf(req, buf, pos) != 0) {
        for (size_t i = 0; i < ncounted; i++)
            itab_forget(fs->it, counted[i], 1);
    }
    free(counted);
    free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    UNUSED(ino);
    struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
    if (d->page)
        rpc_message_free(&d->page->base);
    pthread_mutex_destroy(&d->mu);
    free(d);
    fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    UNUSED(ino);
    UNUSED(datasync);
    UNUSED(fi);
    fuse_reply_err(req, 0); /* metadata is durable once the Paxos entry is chosen */
}

/* ---- file system ------------------------------------------------------------------------------------ */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    UNUSED(ino);
    Synod__V1__StatfsReq m = SYNOD__V1__STATFS_REQ__INIT;
    ProtobufCMessage *rep = ask(req, "Statfs", &m.base);
    if (!rep)
        return;
    const Synod__V1__StatfsRep *s = (const Synod__V1__StatfsRep *)rep;
    struct statvfs v;
    memset(&v, 0, sizeof(v));
    v.f_bsize = CIO_BLOCK_SIZE;
    v.f_frsize = 4096;
    v.f_blocks = s->total_bytes / v.f_frsize;
    v.f_bfree = s->free_bytes / v.f_frsize;
    v.f_bavail = v.f_bfree;
    v.f_files = s->inodes + s->free_inodes;
    v.f_ffree = s->free_inodes;
    v.f_favail = s->free_inodes;
    v.f_namemax = 255;
    rpc_message_free(rep);
    fuse_reply_statfs(req, &v);
}

/* Setxattr or Removexattr of ino: what itab caches about ino's xattrs is dropped before the call and again
 * after it (before the kernel hears the answer), so a negative answer read before the change took effect
 * is never kept (see itab_xattr_gen). */
static void xattr_change(fuse_req_t req, fuse_ino_t ino, const char *method, ProtobufCMessage *m)
{
    struct fs *fs = FS(req);
    itab_xattr_changed(fs->it, ino);
    ProtobufCMessage *rep;
    int r = mc_call(fs->mc, method, m, 0, &rep);
    rpc_message_free(rep);
    itab_xattr_changed(fs->it, ino);
    reply_result(req, r);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
                        int flags)
{
    struct cred cr;
    Synod__V1__SetxattrReq m = SYNOD__V1__SETXATTR_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.ino = ino;
    m.name = (char *)name;
    m.value.data = (uint8_t *)value;
    m.value.len = size;
    m.flags = (flags & XATTR_CREATE ? SYNOD__V1__XATTR_FLAGS__XATTR_CREATE : 0) |
              (flags & XATTR_REPLACE ? SYNOD__V1__XATTR_FLAGS__XATTR_REPLACE : 0);
    xattr_change(req, ino, "Setxattr", &m.base);
}

/* The kernel's xattr protocol: size 0 asks for the length; a buffer too small is ERANGE. */
static void reply_xattr_bytes(fuse_req_t req, const void *data, size_t len, size_t size)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (len > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, data, len);
}

/* The xattr the kernel reads before every write(2) (file capabilities, dropped by a write): "none" is
 * cached for attr_timeout (itab_nocaps). */
#define XATTR_CAPS "security.capability"

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fs *fs = FS(req);
    bool caps = fs->attr_timeout > 0 && strcmp(name, XATTR_CAPS) == 0;
    if (caps && itab_nocaps(fs->it, ino, clk_mono_ns())) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    uint64_t gen = caps ? itab_xattr_gen(fs->it, ino) : 0;
    struct cred cr;
    Synod__V1__GetxattrReq m = SYNOD__V1__GETXATTR_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.ino = ino;
    m.name = (char *)name;
    ProtobufCMessage *rep;
    int r = mc_call(fs->mc, "Getxattr", &m.base, 0, &rep);
    if (r == -ENODATA && gen)
        itab_nocaps_note(fs->it, ino, gen, clk_mono_ns() + (uint64_t)(fs->attr_timeout * 1e9));
    if (r) {
        reply_result(req, r);
        return;
    }
    const Synod__V1__GetxattrRep *g = (const Synod__V1__GetxattrRep *)rep;
    reply_xattr_bytes(req, g->value.data, g->value.len, size);
    rpc_message_free(rep);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct cred cr;
    Synod__V1__ListxattrReq m = SYNOD__V1__LISTXATTR_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.ino = ino;
    ProtobufCMessage *rep = ask(req, "Listxattr", &m.base);
    if (!rep)
        return;
    const Synod__V1__ListxattrRep *l = (const Synod__V1__ListxattrRep *)rep;
    size_t len = 0;
    for (size_t i = 0; i < l->n_names; i++)
        len += strlen(l->names[i]) + 1;
    char *buf = xmalloc(len ? len : 1);
    size_t pos = 0;
    for (size_t i = 0; i < l->n_names; i++) {
        size_t n = strlen(l->names[i]) + 1;
        memcpy(buf + pos, l->names[i], n);
        pos += n;
    }
    reply_xattr_bytes(req, buf, len, size);
    free(buf);
    rpc_message_free(rep);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    struct cred cr;
    Synod__V1__RemovexattrReq m = SYNOD__V1__REMOVEXATTR_REQ__INIT;
    m.cred = cred_of(req, &cr);
    m.ino = ino;
    m.name = (char *)name;
    xattr_change(req, ino, "Removexattr", &m.base);
}

/* access(2): the POSIX check on fresh attributes, with the caller's groups (root: any x bit for X_OK). */
static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    Synod__V1__GetattrReq m = SYNOD__V1__GETATTR_REQ__INIT;
    m.ino = ino;
    ProtobufCMessage *rep = ask(req, "Getattr", &m.base);
    if (!rep)
        return;
    const Synod__V1__Attr *a = ((Synod__V1__AttrRep *)rep)->attr;
    struct cred cr;
    const Synod__V1__Cred *c = cred_of(req, &cr);
    int err = 0;
    if (!a) {
        err = EIO;
    } else if (mask != F_OK) {
        uint32_t mode = a->mode, perm;
        if (c->uid == 0) {
            perm = 6 | ((mode & 0111) || S_ISDIR(mode) ? 1 : 0);
        } else if (c->uid == a->uid) {
            perm = (mode >> 6) & 7;
        } else {
            bool in = c->gid == a->gid;
            for (size_t i = 0; i < c->n_groups && !in; i++)
                in = c->groups[i] == a->gid;
            perm = in ? (mode >> 3) & 7 : mode & 7;
        }
        if ((mask & R_OK && !(perm & 4)) || (mask & W_OK && !(perm & 2)) || (mask & X_OK && !(perm & 1)))
            err = EACCES;
    }
    rpc_message_free(rep);
    fuse_reply_err(req, err);
}

/* ---- locks ------------------------------------------------------------------------------------------ */

static int lock_call_c(struct fs *fs, const char *method, uint64_t ino, uint64_t owner, uint32_t kind,
                       uint32_t type, uint64_t start, uint64_t end, uint32_t pid, bool wait, Synod__V1__LockRep *out,
                       struct rpc_cancel *cancel);

static int lock_call(struct fs *fs, const char *method, uint64_t ino, uint64_t owner, uint32_t kind, uint32_t type,
                     uint64_t start, uint64_t end, uint32_t pid, bool wait, Synod__V1__LockRep *out)
{
    return lock_call_c(fs, method, ino, owner, kind, type, start, end, pid, wait, out, NULL);
}

/* As lock_call, stopped by `cancel` only while SetLock certainly was not applied (mc_call_cancellable): an
 * interrupted request must not leave a lock granted behind the application's back. */
static int lock_call_c(struct fs *fs, const char *method, uint64_t ino, uint64_t owner, uint32_t kind,
                       uint32_t type, uint64_t start, uint64_t end, uint32_t pid, bool wait, Synod__V1__LockRep *out,
                       struct rpc_cancel *cancel)
{
    Synod__V1__LockReq m = SYNOD__V1__LOCK_REQ__INIT;
    m.ino = ino;
    m.owner = owner;
    m.kind = kind;
    m.type = type;
    m.start = start;
    m.end = end;
    m.pid = pid;
    m.wait = wait;
    ProtobufCMessage *rep;
    int r = mc_call_cancellable(fs->mc, method, &m.base, MC_EAGAIN_RESULT, cancel, &rep);
    if (r == 0 && out)
        *out = *(Synod__V1__LockRep *)rep;
    rpc_message_free(rep);
    return r;
}

static uint32_t lock_type(short t)
{
    return t == F_RDLCK ? SYNOD__V1__LOCK_TYPE__LOCK_READ
                        : t == F_WRLCK ? SYNOD__V1__LOCK_TYPE__LOCK_WRITE : SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK;
}

/* Take a lock; with `sleep`, poll with backoff until granted or interrupted (EINTR: the interrupt token
 * wakes the backoff sleep at once; a SetLock in flight is answered first, see lock_call_c). */
static int lock_acquire(fuse_req_t req, uint64_t ino, uint64_t owner, uint32_t kind, uint32_t type, uint64_t start,
                        uint64_t end, uint32_t pid, bool sleep)
{
    struct rpc_cancel tok;
    intr_begin(req, &tok);
    uint64_t backoff_ms = 10;
    int r;
    for (;;) {
        r = lock_call_c(FS(req), "SetLock", ino, owner, kind, type, start, end, pid, sleep, NULL, &tok);
        if (r != -EAGAIN || !sleep)
            break;
        if (rpc_cancel_sleep(&tok, backoff_ms * NS_PER_MS)) {
            r = -EINTR;
            break;
        }
        backoff_ms = MIN(backoff_ms * 2, 1000u);
    }
    intr_end(req, &tok);
    return r;
}

static void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
    uint64_t start = (uint64_t)lock->l_start;
    uint64_t end = lock->l_len == 0 ? UINT64_MAX : start + (uint64_t)lock->l_len - 1;
    Synod__V1__LockRep rep;
    int r = lock_call(FS(req), "GetLock", ino, fi->lock_owner, SYNOD__V1__LOCK_KIND__LOCK_POSIX,
                      lock_type(lock->l_type), start, end, (uint32_t)lock->l_pid, false, &rep);
    if (r) {
        reply_result(req, r);
        return;
    }
    if (rep.type == SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK) {
        lock->l_type = F_UNLCK;
    } else {
        lock->l_type = rep.type == SYNOD__V1__LOCK_TYPE__LOCK_READ ? F_RDLCK : F_WRLCK;
        lock->l_whence = SEEK_SET;
        lock->l_start = (off_t)rep.start;
        lock->l_len = rep.end == UINT64_MAX ? 0 : (off_t)(rep.end - rep.start + 1);
        lock->l_pid = (pid_t)rep.pid;
    }
    fuse_reply_lock(req, lock);
}

static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock, int sleep)
{
    uint64_t start = (uint64_t)lock->l_start;
    uint64_t end = lock->l_len == 0 ? UINT64_MAX : start + (uint64_t)lock->l_len - 1;
    if (lock->l_type != F_UNLCK && fi->fh)
        atomic_store(&H(fi)->posix_locks, true);
    int r = lock_acquire(req, ino, fi->lock_owner, SYNOD__V1__LOCK_KIND__LOCK_POSIX, lock_type(lock->l_type), start,
                         end, (uint32_t)lock->l_pid, sleep);
    reply_result(req, r);
}

static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
    int what = op & (LOCK_SH | LOCK_EX | LOCK_UN);
    uint32_t type = what == LOCK_SH   ? SYNOD__V1__LOCK_TYPE__LOCK_READ
                    : what == LOCK_EX ? SYNOD__V1__LOCK_TYPE__LOCK_WRITE
                                      : SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK;
    int r = lock_acquire(req, ino, fi->lock_owner, SYNOD__V1__LOCK_KIND__LOCK_FLOCK, type, 0, UINT64_MAX, 0,
                         !(op & LOCK_NB) && type != SYNOD__V1__LOCK_TYPE__LOCK_UNLOCK);
    reply_result(req, r == -EAGAIN ? -EWOULDBLOCK : r);
}

/* ---- session ---------------------------------------------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct fs *fs = userdata;
    /* Ask only for what the kernel offers: a `want` bit outside `capable` kills the session. */
    unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_PARALLEL_DIROPS;
    conn->want |= want & conn->capable;
    /* Never write-back cache (it makes the kernel authoritative for size/mtime and breaks O_APPEND across
     * clients) and never DONT_MASK (the kernel applies the umask). */
    conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_DONT_MASK);
    conn->want &= conn->capable;
    conn->max_write = fs->max_write;
    conn->max_readahead = MIN(fs->max_readahead, conn->max_readahead);
    LOG_INFO("fuse: protocol %u.%u, capable 0x%x, want 0x%x, max_write %u, max_readahead %u", conn->proto_major,
             conn->proto_minor, conn->capable, conn->want, conn->max_write, conn->max_readahead);
}

const struct fuse_lowlevel_ops fsops_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .access = op_access,
    .create = op_create,
    .getlk = op_getlk,
    .setlk = op_setlk,
    .flock = op_flock,
};
