/* ns_admin.c - the administrative side of the namespace state machine: the replicated commands the
 * leader's maintenance and synodctl produce (ReplicaDrop, FsckRepair), and fsck, a consistent read-only
 * check of the whole namespace and chunk table.
 *
 * Commands. ReplicaDrop and FsckRepair are NsCommand cases dispatched by ns_apply (ns_core.c) like every
 * other command. Both are deterministic: they decide from their contents and the state.
 * Both re-validate at apply what the leader saw when it planned them (a chunk's version, an inode's nlink
 * and ctime, a dirent's target), because the state may have moved between the plan and the apply; a fix
 * that no longer fits is skipped, never forced.
 *
 * Fsck reads one LevelDB snapshot (so every scan sees the same point in time, unlike a kv_txn, which reads
 * the latest committed state at each step) on the calling thread, never the runtime thread: the leader
 * keeps applying meanwhile. Cost: one pass over inodes, dirents and the chunk table, O(records) time and
 * about 48 bytes of memory per inode. Bounded: past `max_inodes` inodes it stops collecting, reports
 * `truncated` and skips the checks that need the whole picture (link counts, dangling entries, orphan
 * chunks); problems past `max_problems` are counted but not listed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "metaserver/ns_internal.h"

/* --- replicated commands ------------------------------------------------------------------------------ */

static bool rec_has(const Synod__V1__ChunkRec *r, uint32_t cs)
{
    for (size_t i = 0; i < r->n_replicas; i++)
        if (r->replicas[i] == cs)
            return true;
    return false;
}

int op_replica_drop(struct ns_ctx *c, const Synod__V1__ReplicaDrop *r)
{
    Synod__V1__ChunkRec *rec = chunk_get_by_id(c, r->chunk_id);
    if (!rec)
        return -ENOENT;
    int rc = 0;
    if (rec->version != r->version || !rec_has(rec, r->cs))
        rc = -ESTALE; /* planned on an older state */
    else if (rec->lease_session && rec->lease_expire_ns > c->now)
        rc = -EBUSY; /* being written: never change the set under a live lease */
    size_t good = 0;
    for (size_t i = 0; !rc && i < rec->n_replicas; i++) {
        if (rec->replicas[i] == r->cs)
            continue;
        Synod__V1__ChunkserverRec *cs = cs_get(c, rec->replicas[i]);
        if (cs && cs->state == NS_CS_UP)
            good++;
        if (cs)
            protobuf_c_message_free_unpacked(&cs->base, NULL);
    }
    if (!rc && good < rec->goal)
        rc = -EAGAIN; /* the copies left on UP chunkservers would not meet the goal */
    chunk_free(rec);
    if (rc)
        return rc;
    replica_drop(c, r->chunk_id, r->cs);
    reply_empty(c);
    return 0;
}

static Synod__V1__InodeRec *inode_rec_get(struct ns_ctx *c, uint64_t ino)
{
    struct nkey k;
    nk_init(&k, 'i');
    nk_u64(&k, ino);
    return (Synod__V1__InodeRec *)nk_get_msg(c, &k, &synod__v1__inode_rec__descriptor);
}

/* One fix; true if it still fitted and was applied. Inodes are read and written as records (not through
 * the per-command inode cache, which holds only a few inodes). */
static bool fsck_fix(struct ns_ctx *c, const Synod__V1__FsckFix *f)
{
    Synod__V1__InodeRec *ir = inode_rec_get(c, f->ino);
    bool done = false;
    switch (f->kind) {
    case SYNOD__V1__FSCK_FIX__KIND__ORPHAN_CHUNKS:
        if (!ir) {
            struct inode tmp = {.ino = f->ino};
            chunks_drop_from(c, &tmp, 0); /* replicas queued for deletion, leases and copies gone */
            done = true;
        }
        break;
    case SYNOD__V1__FSCK_FIX__KIND__DANGLING_DIRENT: {
        if (ir || !f->name.len || f->name.len > NS_NAME_MAX || memchr(f->name.data, 0, f->name.len))
            break;
        char name[NS_NAME_MAX + 1];
        memcpy(name, f->name.data, f->name.len);
        name[f->name.len] = 0;
        uint64_t ino;
        uint32_t type;
        if (dirent_get(c, f->parent, name, &ino, &type) == 0 && ino == f->ino) {
            dirent_del(c, f->parent, name);
            done = true;
        }
        break;
    }
    case SYNOD__V1__FSCK_FIX__KIND__NLINK:
        /* a zero count would make the inode purgeable: fsck reports those (unreachable) and leaves them */
        if (ir && f->new_nlink > 0 && ir->nlink == f->old_nlink && ir->ctime_ns == f->ctime_ns) {
            ir->nlink = f->new_nlink;
            struct nkey k;
            nk_init(&k, 'i');
            nk_u64(&k, f->ino);
            nk_put_msg(c, &k, &ir->base);
            done = true;
        }
        break;
    default:
        break;
    }
    if (ir)
        protobuf_c_message_free_unpacked(&ir->base, NULL);
    return done;
}

int op_fsck_repair(struct ns_ctx *c, const Synod__V1__FsckRepair *r)
{
    if (r->n_fixes > NS_FSCK_MAX_FIXES)
        return -EINVAL;
    Synod__V1__FsckRepairRep rep = SYNOD__V1__FSCK_REPAIR_REP__INIT;
    for (size_t i = 0; i < r->n_fixes; i++)
        if (fsck_fix(c, r->fixes[i]))
            rep.applied++;
    reply_msg(c, &rep.base);
    return 0;
}

/* --- fsck --------------------------------------------------------------------------------------------- */

struct fino {
    uint64_t ino;
    uint64_t size;
    int64_t ctime;
    uint32_t mode, nlink, opens;
    uint32_t refs, subdirs; /* names pointing at it; subdirectories (directories) */
    bool orphan_key;        /* indexed in n/O (an orphan awaiting purge) */
};

struct fscan {
    leveldb_t *db;
    leveldb_readoptions_t *ro;
    struct ns_fsck *out;
    size_t max_problems;
};

static leveldb_iterator_t *scan_prefix(struct fscan *s, char tag, uint8_t *pfx)
{
    pfx[0] = 'n';
    pfx[1] = '/';
    pfx[2] = (uint8_t)tag;
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro);
    leveldb_iter_seek(it, (const char *)pfx, 3);
    return it;
}

static bool in_prefix(leveldb_iterator_t *it, const uint8_t *pfx, size_t *kl, const char **k)
{
    if (!leveldb_iter_valid(it))
        return false;
    *k = leveldb_iter_key(it, kl);
    return *kl >= 3 && !memcmp(*k, pfx, 3);
}

/* Record a problem (listed while under the cap); returns it or NULL when only counted. */
static Synod__V1__FsckProblem *problem(struct fscan *s, const char *kind, uint64_t ino, uint64_t chunk,
                                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static Synod__V1__FsckProblem *problem(struct fscan *s, const char *kind, uint64_t ino, uint64_t chunk,
                                       const char *fmt, ...)
{
    Synod__V1__FsckRep *rep = &s->out->rep;
    rep->total_problems++;
    if (rep->n_problems >= s->max_problems)
        return NULL;
    Synod__V1__FsckProblem *p = xmalloc(sizeof(*p));
    synod__v1__fsck_problem__init(p);
    p->kind = xstrdup(kind);
    p->ino = ino;
    p->chunk_id = chunk;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    p->detail = xstrdup(buf);
    rep->problems = xrealloc(rep->problems, (rep->n_problems + 1) * sizeof(*rep->problems));
    rep->problems[rep->n_problems++] = p;
    return p;
}

/* A repair for the last listed problem. */
static Synod__V1__FsckFix *fix_add(struct fscan *s, Synod__V1__FsckFix__Kind kind, uint64_t ino)
{
    struct ns_fsck *o = s->out;
    if (o->repair.n_fixes >= NS_FSCK_MAX_FIXES)
        return NULL;
    Synod__V1__FsckFix *f = xmalloc(sizeof(*f));
    synod__v1__fsck_fix__init(f);
    f->kind = kind;
    f->ino = ino;
    o->repair.fixes = xrealloc(o->repair.fixes, (o->repair.n_fixes + 1) * sizeof(*o->repair.fixes));
    o->fix_problem = xrealloc(o->fix_problem, (o->repair.n_fixes + 1) * sizeof(*o->fix_problem));
    o->fix_problem[o->repair.n_fixes] = o->rep.n_problems - 1;
    o->repair.fixes[o->repair.n_fixes++] = f;
    return f;
}

static struct fino *fino_find(struct fino *v, size_t n, uint64_t ino)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid].ino == ino)
            return &v[mid];
        if (v[mid].ino < ino)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

struct fcs {
    uint32_t id, state;
    uint64_t copies; /* replicas the chunk table lists on it */
};

static uint32_t cs_state_of(const struct fcs *v, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].id == id)
            return v[i].state;
    return NS_CS_DEAD; /* unknown: does not count */
}

/* A stored value of the scan's snapshot (malloc'd, NULL if absent). */
static char *snap_get(struct fscan *s, const uint8_t *key, size_t klen, size_t *vl)
{
    char *err = NULL;
    char *v = leveldb_get(s->db, s->ro, (const char *)key, klen, vl, &err);
    if (err) {
        leveldb_free(err);
        return NULL;
    }
    return v;
}

static void counter(struct fscan *s, const char *what, uint64_t kept, uint64_t counted)
{
    if (kept != counted)
        problem(s, "counter", 0, 0, "status counter %s is %llu, the scan counts %llu", what,
                (unsigned long long)kept, (unsigned long long)counted);
}

/* The counters status reads (NsCounters, n/H) against the scans' counts. */
static void check_counters(struct fscan *s, const struct fcs *cs, size_t ncs, uint64_t files, uint64_t dirs,
                           uint64_t chunks, uint64_t under, uint64_t missing, uint64_t over)
{
    size_t vl;
    const uint8_t ck[3] = {'n', '/', 'c'};
    char *v = snap_get(s, ck, sizeof(ck), &vl);
    Synod__V1__NsCounters *ctr = v ? synod__v1__ns_counters__unpack(NULL, vl, (const uint8_t *)v) : NULL;
    if (v)
        leveldb_free(v);
    if (ctr && ctr->counted) {
        counter(s, "files", ctr->files, files);
        counter(s, "dirs", ctr->dirs, dirs);
        counter(s, "chunks", ctr->chunks, chunks);
        counter(s, "under_goal", ctr->under_goal, under);
        counter(s, "missing", ctr->missing, missing);
        counter(s, "over_goal", ctr->over_goal, over);
    }
    if (ctr)
        synod__v1__ns_counters__free_unpacked(ctr, NULL);
    for (size_t i = 0; i < ncs; i++) {
        struct nkey hk;
        cs_held_key(&hk, cs[i].id);
        v = snap_get(s, hk.b, hk.len, &vl);
        if (!v)
            continue; /* registered before the counters */
        uint64_t kept = vl == 8 ? get_le64(v) : UINT64_MAX;
        leveldb_free(v);
        if (kept != cs[i].copies)
            problem(s, "counter", 0, 0, "chunkserver %u: copy counter %llu, the chunk table lists %llu", cs[i].id,
                    (unsigned long long)kept, (unsigned long long)cs[i].copies);
    }
}

int ns_fsck_run(leveldb_t *db, int64_t now_ns, size_t max_inodes, size_t max_problems, struct ns_fsck *out)
{
    memset(out, 0, sizeof(*out));
    synod__v1__fsck_rep__init(&out->rep);
    synod__v1__fsck_repair__init(&out->repair);
    const leveldb_snapshot_t *snap = leveldb_create_snapshot(db);
    struct fscan s = {.db = db, .ro = leveldb_readoptions_create(), .out = out, .max_problems = max_problems};
    leveldb_readoptions_set_snapshot(s.ro, snap);
    leveldb_readoptions_set_fill_cache(s.ro, 0);
    uint8_t pfx[3];
    size_t kl, vl;
    const char *k, *v;
    int rc = 0;

    /* the status counters, checked against what the scans count (counted: NsCounters) */
    struct {
        uint64_t files, dirs, chunks, under, missing, over;
    } cnt = {0};

    /* inodes, in ino order */
    struct fino *in = NULL;
    size_t nin = 0, cap = 0;
    leveldb_iterator_t *it = scan_prefix(&s, 'i', pfx);
    for (; in_prefix(it, pfx, &kl, &k); leveldb_iter_next(it)) {
        if (nin == max_inodes) {
            out->rep.truncated = true;
            break;
        }
        v = leveldb_iter_value(it, &vl);
        Synod__V1__InodeRec *r = synod__v1__inode_rec__unpack(NULL, vl, (const uint8_t *)v);
        if (kl != 11 || !r) {
            problem(&s, "corrupt", kl >= 11 ? get_be64(k + 3) : 0, 0, "undecodable inode record");
            if (r)
                synod__v1__inode_rec__free_unpacked(r, NULL);
            continue;
        }
        if (nin == cap) {
            cap = cap ? cap * 2 : 1024;
            in = xrealloc(in, cap * sizeof(*in));
        }
        in[nin++] = (struct fino){.ino = get_be64(k + 3), .size = r->size, .ctime = r->ctime_ns,
                                  .mode = r->mode, .nlink = r->nlink, .opens = r->opens};
        synod__v1__inode_rec__free_unpacked(r, NULL);
    }
    leveldb_iter_destroy(it);
    out->rep.checked_inodes = nin;
    bool whole = !out->rep.truncated;

    /* chunkserver states (few) */
    struct fcs *cs = NULL;
    size_t ncs = 0;
    it = scan_prefix(&s, 's', pfx);
    for (; in_prefix(it, pfx, &kl, &k); leveldb_iter_next(it)) {
        v = leveldb_iter_value(it, &vl);
        Synod__V1__ChunkserverRec *r = synod__v1__chunkserver_rec__unpack(NULL, vl, (const uint8_t *)v);
        if (!r)
            continue;
        cs = xrealloc(cs, (ncs + 1) * sizeof(*cs));
        cs[ncs++] = (struct fcs){.id = r->id, .state = r->state};
        synod__v1__chunkserver_rec__free_unpacked(r, NULL);
    }
    leveldb_iter_destroy(it);

    /* directory entries: count names per inode and subdirectories per directory */
    it = scan_prefix(&s, 'd', pfx);
    for (; whole && in_prefix(it, pfx, &kl, &k); leveldb_iter_next(it)) {
        v = leveldb_iter_value(it, &vl);
        if (kl < 12 || vl != 9)
            continue;
        uint64_t parent = get_be64(k + 3), child = get_be64(v);
        const char *name = k + 11;
        int nlen = (int)(kl - 11);
        if (((uint32_t)(uint8_t)v[8] << 12) == S_IFDIR)
            cnt.dirs++;
        else
            cnt.files++;
        struct fino *c = fino_find(in, nin, child);
        if (!c) {
            Synod__V1__FsckProblem *p = problem(&s, "dangling_dirent", child, 0,
                                                "entry '%.*s' in directory %llu names a missing inode", nlen,
                                                name, (unsigned long long)parent);
            Synod__V1__FsckFix *f = p ? fix_add(&s, SYNOD__V1__FSCK_FIX__KIND__DANGLING_DIRENT, child) : NULL;
            if (f) {
                f->parent = parent;
                f->name.len = (size_t)nlen;
                f->name.data = xmalloc((size_t)nlen + 1);
                memcpy(f->name.data, name, (size_t)nlen);
            }
            continue;
        }
        c->refs++;
        if (S_ISDIR(c->mode)) {
            struct fino *pd = fino_find(in, nin, parent);
            if (pd)
                pd->subdirs++;
        }
    }
    leveldb_iter_destroy(it);

    /* the orphan index: each key names an inode that has lost its last name (nlink 0), which the leader
     * purges once nobody holds it open */
    it = scan_prefix(&s, 'O', pfx);
    for (; whole && in_prefix(it, pfx, &kl, &k); leveldb_iter_next(it)) {
        uint64_t ino = kl == 11 ? get_be64(k + 3) : 0;
        struct fino *n = ino ? fino_find(in, nin, ino) : NULL;
        if (!n)
            problem(&s, "orphan_key", ino, 0, "the orphan index names a missing inode");
        else if (n->nlink > 0)
            problem(&s, "orphan_key", ino, 0, "the orphan index names an inode with nlink %u", n->nlink);
        else
            n->orphan_key = true;
    }
    leveldb_iter_destroy(it);

    /* link counts */
    for (size_t i = 0; whole && i < nin; i++) {
        struct fino *n = &in[i];
        bool dir = S_ISDIR(n->mode);
        if (n->ino == NS_ROOT_INO)
            n->refs++; /* the root has no entry */
        if (n->refs == 0) {
            if (n->nlink > 0)
                problem(&s, "unreachable", n->ino, 0, "no name reaches it (nlink %u, open %u times)", n->nlink,
                        n->opens);
            else if (!n->orphan_key) /* nlink 0 is an orphan awaiting purge only while it is indexed */
                problem(&s, "orphan_unindexed", n->ino, 0,
                        "nlink 0 and not in the orphan index: never purged (open %u times)", n->opens);
            continue;
        }
        uint32_t want = dir ? 2 + n->subdirs : n->refs;
        if (dir && n->refs > 1)
            problem(&s, "dir_links", n->ino, 0, "directory has %u names", n->refs);
        if (n->nlink != want) {
            Synod__V1__FsckProblem *p =
                problem(&s, "nlink", n->ino, 0, "nlink %u, expected %u", n->nlink, want);
            Synod__V1__FsckFix *f = p ? fix_add(&s, SYNOD__V1__FSCK_FIX__KIND__NLINK, n->ino) : NULL;
            if (f) {
                f->old_nlink = n->nlink;
                f->ctime_ns = n->ctime;
                f->new_nlink = want;
            }
        }
    }

    /* the chunk table, in (ino, index) order */
    uint64_t last_orphan = 0;
    it = scan_prefix(&s, 'k', pfx);
    for (; in_prefix(it, pfx, &kl, &k); leveldb_iter_next(it)) {
        v = leveldb_iter_value(it, &vl);
        Synod__V1__ChunkRec *r = synod__v1__chunk_rec__unpack(NULL, vl, (const uint8_t *)v);
        if (kl != 19 || !r) {
            problem(&s, "corrupt", 0, 0, "undecodable chunk record");
            if (r)
                synod__v1__chunk_rec__free_unpacked(r, NULL);
            continue;
        }
        out->rep.checked_chunks++;
        cnt.chunks++;
        cnt.missing += r->n_replicas == 0;
        cnt.under += r->n_replicas > 0 && r->n_replicas < r->goal;
        cnt.over += r->n_replicas > r->goal;
        for (size_t j = 0; j < r->n_replicas; j++) {
            struct fcs *x = NULL;
            for (size_t m = 0; m < ncs && !x; m++)
                x = cs[m].id == r->replicas[j] ? &cs[m] : NULL;
            if (x)
                x->copies++;
        }
        uint64_t ino = get_be64(k + 3), index = get_be64(k + 11);
        bool leased = r->lease_session && r->lease_expire_ns > now_ns;
        struct fino *n = fino_find(in, nin, ino);
        if (!n && whole) {
            Synod__V1__FsckProblem *p = problem(&s, "orphan_chunk", ino, r->chunk_id,
                                                "chunk %llu of missing inode %llu (index %llu)",
                                                (unsigned long long)r->chunk_id, (unsigned long long)ino,
                                                (unsigned long long)index);
            if (p && ino != last_orphan) /* one fix drops every chunk of the inode */
                fix_add(&s, SYNOD__V1__FSCK_FIX__KIND__ORPHAN_CHUNKS, ino);
            last_orphan = ino;
        } else if (n && !leased && index * NS_CHUNK_SIZE >= n->size && S_ISREG(n->mode)) {
            problem(&s, "beyond_size", ino, r->chunk_id, "chunk index %llu past the end (size %llu)",
                    (unsigned long long)index, (unsigned long long)n->size);
        }
        size_t good = 0;
        for (size_t j = 0; j < r->n_replicas; j++)
            good += cs_state_of(cs, ncs, r->replicas[j]) == NS_CS_UP;
        if (r->n_replicas == 0)
            problem(&s, "missing", ino, r->chunk_id, "no copy left: data lost (index %llu, version %u)",
                    (unsigned long long)index, r->version);
        else if (good < r->goal)
            problem(&s, "under_goal", ino, r->chunk_id, "%zu good copies of %zu, goal %u", good, r->n_replicas,
                    r->goal);
        else if (r->n_replicas > r->goal)
            problem(&s, "over_goal", ino, r->chunk_id, "%zu copies, goal %u", r->n_replicas, r->goal);
        synod__v1__chunk_rec__free_unpacked(r, NULL);
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (err) {
        rc = kv_leveldb_err(&err, "fsck scan");
    }
    leveldb_iter_destroy(it);
    if (whole && !rc)
        check_counters(&s, cs, ncs, cnt.files, cnt.dirs, cnt.chunks, cnt.under, cnt.missing, cnt.over);
    free(cs);
    free(in);
    leveldb_readoptions_destroy(s.ro);
    leveldb_release_snapshot(db, snap);
    if (rc)
        ns_fsck_release(out);
    return rc;
}

void ns_fsck_release(struct ns_fsck *f)
{
    for (size_t i = 0; i < f->rep.n_problems; i++) {
        free(f->rep.problems[i]->kind);
        free(f->rep.problems[i]->detail);
        free(f->rep.problems[i]);
    }
    free(f->rep.problems);
    for (size_t i = 0; i < f->repair.n_fixes; i++) {
        free(f->repair.fixes[i]->name.data);
        free(f->repair.fixes[i]);
    }
    free(f->repair.fixes);
    free(f->fix_problem);
    memset(f, 0, sizeof(*f));
}
