/* config.c - see config.h. An INI parser validated against each daemon's key table.
 *
 * Design. A struct config holds one slot per table entry (found by a linear scan: tables are tens of keys
 * and lookups happen at startup). A file is parsed in two phases: every line is parsed and validated into a
 * staging copy of the slots, and only if the whole file is valid is the staging copy committed. So a load
 * that fails leaves the config exactly as it was, and "the later duplicate wins" falls out naturally.
 *
 * Lines are walked in place over the whole text (a file is read into memory first), so there is no line
 * length limit and nothing is ever truncated. A NUL byte inside a file is a syntax error rather than a
 * silent end of input. CRLF line endings are accepted.
 *
 * Value grammar (shared by files, config_set and the table defaults; defaults and config_set values are
 * taken verbatim, without quote or comment processing):
 *   int       [+-] decimal digits, or [+-] 0x hex digits; must fit int64 (leading zeros are decimal)
 *   bool      true/false/yes/no/on/off/1/0, case-insensitive
 *   size      decimal digits with an optional K/M/G/T suffix (case-insensitive, powers of 1024), <= 2^64-1
 *   duration  decimal digits with an optional suffix ms/s/m/h (bare = ms), result in ms, <= 2^64-1
 * No whitespace inside numbers, no fractions, no signs on sizes or durations.
 */
#include "common/config.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* One key's current value. For CONFIG_STR, str owns the string; other types use the union. */
struct config_slot {
    bool set;
    char *str;
    union {
        int64_t i;
        uint64_t u;
        bool b;
    } v;
};

struct config {
    const struct config_key *keys; /* borrowed */
    size_t nkeys;
    struct config_slot *slots; /* nkeys entries, parallel to keys */
};

static const char *const type_names[] = {
    [CONFIG_STR] = "string", [CONFIG_INT] = "int",           [CONFIG_BOOL] = "bool",
    [CONFIG_SIZE] = "size",  [CONFIG_DURATION] = "duration",
};

/* Format a message into err (if the caller gave one); always NUL-terminated when errlen > 0. */
static void __attribute__((format(printf, 3, 4))) set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- value parsing --------------------------------------------------------------------------------- */

/* Parse an unsigned decimal number at *p (at least one digit), advancing *p. false on overflow/no digits. */
static bool parse_digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return true;
}

static bool parse_int(const char *s, int64_t *out)
{
    bool neg = false;
    uint64_t mag = 0;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        if (*s == '\0')
            return false;
        for (; *s; s++) {
            unsigned d;
            if (*s >= '0' && *s <= '9')
                d = (unsigned)(*s - '0');
            else if (*s >= 'a' && *s <= 'f')
                d = (unsigned)(*s - 'a' + 10);
            else if (*s >= 'A' && *s <= 'F')
                d = (unsigned)(*s - 'A' + 10);
            else
                return false;
            if (mag > (UINT64_MAX >> 4))
                return false;
            mag = mag << 4 | d;
        }
    } else if (!parse_digits(&s, &mag) || *s != '\0') {
        return false;
    }
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return false;
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)mag;
    }
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return true;
        }
    }
    return false;
}

struct unit {
    const char *suffix;
    uint64_t mult;
};

static const struct unit size_units[] = {
    {"", 1},           {"K", 1ull << 10}, {"M", 1ull << 20}, {"G", 1ull << 30}, {"T", 1ull << 40},
    {"k", 1ull << 10}, {"m", 1ull << 20}, {"g", 1ull << 30}, {"t", 1ull << 40}, {NULL, 0},
};
static const struct unit duration_units[] = {
    {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}, {NULL, 0},
};

/* Digits followed by exactly one of the units' suffixes; the product must fit uint64. */
static bool parse_scaled(const char *s, const struct unit *units, uint64_t *out)
{
    uint64_t n;
    if (!parse_digits(&s, &n))
        return false;
    for (const struct unit *u = units; u->suffix; u++) {
        if (strcmp(s, u->suffix) == 0) {
            if (n > UINT64_MAX / u->mult)
                return false;
            *out = n * u->mult;
            return true;
        }
    }
    return false;
}

/* Parse text as a value of key k into slot (replacing what it held). false if the text is not valid. */
static bool parse_value(const struct config_key *k, const char *text, struct config_slot *slot)
{
    struct config_slot nv = {.set = true};
    bool ok;
    switch (k->type) {
    case CONFIG_STR:
        nv.str = xstrdup(text);
        ok = true;
        break;
    case CONFIG_INT:
        ok = parse_int(text, &nv.v.i);
        break;
    case CONFIG_BOOL:
        ok = parse_bool(text, &nv.v.b);
        break;
    case CONFIG_SIZE:
        ok = parse_scaled(text, size_units, &nv.v.u);
        break;
    case CONFIG_DURATION:
        ok = parse_scaled(text, duration_units, &nv.v.u);
        break;
    default:
        PANIC("config key '%s' has unknown type %d", k->name, (int)k->type);
    }
    if (!ok)
        return false;
    free(slot->str);
    *slot = nv;
    return true;
}

/* ---- the table ------------------------------------------------------------------------------------- */

static long find_key(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nkeys; i++)
        if (strcmp(cfg->keys[i].name, name) == 0)
            return (long)i;
    return -1;
}

static void free_slots(struct config_slot *slots, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(slots[i].str);
    free(slots);
}

static struct config_slot *copy_slots(const struct config *cfg)
{
    struct config_slot *s = xcalloc(cfg->nkeys, sizeof(*s));
    for (size_t i = 0; i < cfg->nkeys; i++) {
        s[i] = cfg->slots[i];
        if (s[i].str)
            s[i].str = xstrdup(s[i].str);
    }
    return s;
}

struct config *config_new(const struct config_key *keys)
{
    ASSERT(keys != NULL);
    struct config *cfg = xcalloc(1, sizeof(*cfg));
    cfg->keys = keys;
    while (keys[cfg->nkeys].name)
        cfg->nkeys++;
    cfg->slots = xcalloc(cfg->nkeys, sizeof(*cfg->slots));
    for (size_t i = 0; i < cfg->nkeys; i++) {
        const struct config_key *k = &keys[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(keys[j].name, k->name) == 0)
                PANIC("config table: duplicate key '%s'", k->name);
        if (k->def && !parse_value(k, k->def, &cfg->slots[i]))
            PANIC("config table: bad %s default '%s' for key '%s'", type_names[k->type], k->def, k->name);
    }
    return cfg;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free_slots(cfg->slots, cfg->nkeys);
    free(cfg);
}

/* Apply one key = value to slots, or explain why not in err, prefixed by where (e.g. "a.conf:7"). */
static int apply(const struct config *cfg, struct config_slot *slots, const char *where, const char *key,
                 const char *value, char *err, size_t errlen)
{
    long i = find_key(cfg, key);
    if (i < 0) {
        set_err(err, errlen, "%s: unknown key '%s'", where, key);
        return -EINVAL;
    }
    const struct config_key *k = &cfg->keys[i];
    if (!parse_value(k, value, &slots[i])) {
        set_err(err, errlen, "%s: bad %s '%s' for key '%s'", where, type_names[k->type], value, key);
        return -EINVAL;
    }
    return 0;
}

/* A NUL-terminated copy of [b, e), which need not be NUL-terminated itself. */
static char *dup_range(const char *b, const char *e)
{
    size_t n = (size_t)(e - b);
    char *s = xmalloc(n + 1);
    memcpy(s, b, n);
    s[n] = '\0';
    return s;
}

/* ---- the file syntax ------------------------------------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_comment(char c)
{
    return c == '#' || c == ';';
}

/* Trim [*b, *e) of surrounding whitespace. */
static void trim(const char **b, const char **e)
{
    while (*b < *e && is_space(**b))
        (*b)++;
    while (*e > *b && is_space((*e)[-1]))
        (*e)--;
}

/* True if [p, e) is only whitespace, optionally followed by a comment. */
static bool only_comment_left(const char *p, const char *e)
{
    while (p < e && is_space(*p))
        p++;
    return p == e || is_comment(*p);
}

static bool valid_section_name(const char *b, const char *e)
{
    if (b == e)
        return false;
    for (; b < e; b++)
        if (!(*b == '_' || *b == '-' || *b == '.' || (*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') ||
              (*b >= '0' && *b <= '9')))
            return false;
    return true;
}

/* Parse the value part [b, e) of a line (b at its first non-space character) into a new string.
 * Unquoted: ends at a '#' or ';' that follows whitespace, trailing whitespace trimmed. Quoted: "..." with
 * the escapes \" \\ \n \t; only whitespace or a comment may follow. NULL with *why set on error. */
static char *parse_line_value(const char *b, const char *e, const char **why)
{
    if (b < e && *b == '"') {
        char *out = xmalloc((size_t)(e - b));
        size_t n = 0;
        const char *p = b + 1;
        for (;; p++) {
            if (p == e) {
                *why = "unterminated quoted value";
                goto out_free;
            }
            if (*p == '"')
                break;
            if (*p == '\\') {
                if (++p == e) {
                    *why = "unterminated quoted value";
                    goto out_free;
                }
                switch (*p) {
                case '"':
                case '\\':
                    out[n++] = *p;
                    break;
                case 'n':
                    out[n++] = '\n';
                    break;
                case 't':
                    out[n++] = '\t';
                    break;
                default:
                    *why = "bad escape in quoted value (use \\\" \\\\ \\n \\t)";
                    goto out_free;
                }
                continue;
            }
            out[n++] = *p;
        }
        if (!only_comment_left(p + 1, e)) {
            *why = "unexpected text after quoted value";
            goto out_free;
        }
        out[n] = '\0';
        return out;
    out_free:
        free(out);
        return NULL;
    }
    const char *end = b;
    while (end < e && !(is_comment(*end) && (end == b || is_space(end[-1]))))
        end++;
    trim(&b, &end);
    return dup_range(b, end);
}

/* Report a syntax error at name:lineno. Returns -EINVAL for the caller to pass on. */
static int __attribute__((format(printf, 5, 6)))
line_err(char *err, size_t errlen, const char *name, unsigned long lineno, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    set_err(err, errlen, "%s:%lu: %s", name, lineno, msg);
    return -EINVAL;
}

/* Parse one line [b, e) into slots; section is the current "[section]" (NULL before the first one) and is
 * replaced when the line is a section header. */
static int parse_line(const struct config *cfg, struct config_slot *slots, char **section, const char *name,
                      unsigned long lineno, const char *b, const char *e, char *err, size_t errlen)
{
    if (memchr(b, '\0', (size_t)(e - b)))
        return line_err(err, errlen, name, lineno, "NUL byte in line");
    trim(&b, &e);
    if (b == e || is_comment(*b))
        return 0;
    if (*b == '[') {
        const char *close = memchr(b, ']', (size_t)(e - b));
        if (close == NULL || !only_comment_left(close + 1, e))
            return line_err(err, errlen, name, lineno, "expected '[section]'");
        const char *sb = b + 1, *se = close;
        trim(&sb, &se);
        char *sec = dup_range(sb, se);
        if (!valid_section_name(sb, se)) {
            int rc = line_err(err, errlen, name, lineno, "bad section name '%s'", sec);
            free(sec);
            return rc;
        }
        free(*section);
        *section = sec;
        return 0;
    }
    const char *eq = memchr(b, '=', (size_t)(e - b));
    const char *ke = eq;
    if (eq)
        trim(&b, &ke);
    if (eq == NULL || b == ke)
        return line_err(err, errlen, name, lineno, "expected 'key = value'");
    const char *vb = eq + 1, *why = NULL;
    while (vb < e && is_space(*vb))
        vb++;
    char *value = parse_line_value(vb, e, &why);
    if (value == NULL)
        return line_err(err, errlen, name, lineno, "%s", why);
    char *key = dup_range(b, ke);
    if (*section) {
        char *full = xasprintf("%s.%s", *section, key);
        free(key);
        key = full;
    }
    char *where = xasprintf("%s:%lu", name, lineno);
    int rc = apply(cfg, slots, where, key, value, err, errlen);
    free(where);
    free(key);
    free(value);
    return rc;
}

/* Parse len bytes of text (NULs inside are errors) and commit them only if every line is valid. */
static int load_buf(struct config *cfg, const char *name, const char *text, size_t len, char *err,
                    size_t errlen)
{
    struct config_slot *staged = copy_slots(cfg);
    char *section = NULL;
    const char *p = text, *end = text + len;
    int rc = 0;

    set_err(err, errlen, "%s", "");
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) /* a UTF-8 byte order mark, as some editors write */
        p += 3;
    for (unsigned long lineno = 1; p < end && rc == 0; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        rc = parse_line(cfg, staged, &section, name, lineno, p, e, err, errlen);
        p = nl ? nl + 1 : end;
    }
    free(section);
    if (rc == 0) {
        free_slots(cfg->slots, cfg->nkeys);
        cfg->slots = staged;
    } else {
        free_slots(staged, cfg->nkeys);
    }
    return rc;
}

int config_load_string(struct config *cfg, const char *name, const char *text, char *err, size_t errlen)
{
    ASSERT(cfg != NULL && name != NULL && text != NULL);
    return load_buf(cfg, name, text, strlen(text), err, errlen);
}

int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    ASSERT(cfg != NULL && path != NULL);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap);
    int rc = 0;
    for (;;) {
        if (len + 1 >= cap) /* + 1: keep room for a terminating NUL */
            buf = xrealloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            set_err(err, errlen, "%s: read error: %s", path, strerror(-rc));
            goto out_free_buf;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0'; /* not needed by the parser, which is length-bounded; a guard for string functions */
    rc = load_buf(cfg, path, buf, len, err, errlen);
out_free_buf:
    free(buf);
    close(fd);
    return rc;
}

int config_set(struct config *cfg, const char *key, const char *value, const char *origin, char *err,
               size_t errlen)
{
    ASSERT(cfg != NULL && key != NULL && value != NULL);
    set_err(err, errlen, "%s", "");
    return apply(cfg, cfg->slots, origin ? origin : "command line", key, value, err, errlen);
}

int config_check_required(const struct config *cfg, char *err, size_t errlen)
{
    ASSERT(cfg != NULL);
    size_t off = 0, missing = 0;
    set_err(err, errlen, "%s", "");
    for (size_t i = 0; i < cfg->nkeys; i++) {
        if (cfg->slots[i].set)
            continue;
        if (err && off < errlen) {
            int n = snprintf(err + off, errlen - off, "%s'%s'", missing ? ", " : "missing required key ",
                             cfg->keys[i].name);
            off += n > 0 ? (size_t)n : 0;
        }
        missing++;
    }
    return missing ? -EINVAL : 0;
}

/* The slot of key, which must exist with type t and have a value: anything else is a programming error. */
static const struct config_slot *get(const struct config *cfg, const char *key, enum config_type t)
{
    ASSERT(cfg != NULL && key != NULL);
    long i = find_key(cfg, key);
    if (i < 0)
        PANIC("config: get of unknown key '%s'", key);
    if (cfg->keys[i].type != t)
        PANIC("config: key '%s' is a %s, not a %s", key, type_names[cfg->keys[i].type], type_names[t]);
    if (!cfg->slots[i].set)
        PANIC("config: required key '%s' read before being set (call config_check_required)", key);
    return &cfg->slots[i];
}

const char *config_get_str(const struct config *cfg, const char *key)
{
    return get(cfg, key, CONFIG_STR)->str;
}

int64_t config_get_int(const struct config *cfg, const char *key)
{
    return get(cfg, key, CONFIG_INT)->v.i;
}

bool config_get_bool(const struct config *cfg, const char *key)
{
    return get(cfg, key, CONFIG_BOOL)->v.b;
}

uint64_t config_get_size(const struct config *cfg, const char *key)
{
    return get(cfg, key, CONFIG_SIZE)->v.u;
}

uint64_t config_get_duration_ms(const struct config *cfg, const char *key)
{
    return get(cfg, key, CONFIG_DURATION)->v.u;
}

/* "name = default" as shown by --help: a required key says so, an empty string default shows as "". */
static char *help_lhs(const struct config_key *k)
{
    const char *def = k->def == NULL ? "(required)" : k->def[0] == '\0' ? "\"\"" : k->def;
    return xasprintf("%s = %s", k->name, def);
}

void config_print_help(const struct config_key *keys, FILE *out)
{
    int width = 0;
    for (const struct config_key *k = keys; k->name; k++) {
        char *lhs = help_lhs(k);
        width = MAX(width, (int)strlen(lhs));
        free(lhs);
    }
    for (const struct config_key *k = keys; k->name; k++) {
        char *lhs = help_lhs(k);
        fprintf(out, "  %-*s   %s [%s]\n", width, lhs, k->doc ? k->doc : "", type_names[k->type]);
        free(lhs);
    }
}
