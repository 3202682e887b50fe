/* lin.c - Wing-Gong linearizability search for one register with unique put values (see lin.h). */
#include "tests/paxos/lin.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct memo {
    uint64_t *keys; /* pairs (mask, value); mask 0 with value 0 never stored (the root is visited once) */
    size_t cap, n;
};

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull);
    h ^= h >> 31;
    return h * 0xBF58476D1CE4E5B9ull;
}

static bool memo_insert(struct memo *m, uint64_t mask, uint64_t value) /* false if present */
{
    if ((m->n + 1) * 2 > m->cap) {
        struct memo nm = { xcalloc(m->cap ? m->cap * 4 : 2048, sizeof(uint64_t)), m->cap ? m->cap * 2 : 1024, 0 };
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[2 * i] | m->keys[2 * i + 1])
                memo_insert(&nm, m->keys[2 * i], m->keys[2 * i + 1]);
        free(m->keys);
        *m = nm;
    }
    for (size_t i = mix(mask, value) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!(m->keys[2 * i] | m->keys[2 * i + 1])) {
            m->keys[2 * i] = mask;
            m->keys[2 * i + 1] = value;
            m->n++;
            return true;
        }
        if (m->keys[2 * i] == mask && m->keys[2 * i + 1] == value)
            return false;
    }
}

struct search {
    const struct lin_op *ops;
    size_t n;
    uint64_t completed;
    struct memo memo;
};

static bool dfs(struct search *s, uint64_t done, uint64_t value)
{
    if ((done & s->completed) == s->completed)
        return true;
    if (done && !memo_insert(&s->memo, done, value))
        return false; /* already explored (and failed) */
    uint64_t min_resp = LIN_PENDING;
    for (size_t i = 0; i < s->n; i++)
        if (!(done & (1ull << i)) && s->ops[i].response < min_resp)
            min_resp = s->ops[i].response;
    for (size_t i = 0; i < s->n; i++) {
        const struct lin_op *o = &s->ops[i];
        if ((done & (1ull << i)) || o->invoke > min_resp)
            continue;
        if (o->is_put) {
            if (dfs(s, done | 1ull << i, o->value))
                return true;
        } else if (o->value == value) {
            if (dfs(s, done | 1ull << i, value))
                return true;
        }
    }
    return false;
}

bool lin_check(const struct lin_op *ops, size_t n)
{
    ASSERT(n <= LIN_MAX_OPS);
    struct search s = { ops, n, 0, { 0 } };
    for (size_t i = 0; i < n; i++)
        if (ops[i].response != LIN_PENDING)
            s.completed |= 1ull << i;
    bool ok = dfs(&s, 0, 0);
    free(s.memo.keys);
    return ok;
}
