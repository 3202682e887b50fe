/* test_config.c - unit tests of common/config: every type, defaults, required keys, the file syntax
 * (sections, comments, quoting, duplicates, CRLF, long lines), every error with its "file:line:" prefix,
 * atomic loads, config_set overrides, the help text, and that misuse of a getter panics. */
#include "common/config.h"

#include "common/util.h"
#include "tests/test.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct config_key keys[] = {
    {"name", CONFIG_STR, "synod", "a string"},
    {"empty", CONFIG_STR, "", "an empty string default"},
    {"count", CONFIG_INT, "-7", "an int"},
    {"verbose", CONFIG_BOOL, "off", "a bool"},
    {"block_size", CONFIG_SIZE, "64K", "a size"},
    {"timeout", CONFIG_DURATION, "2s", "a duration"},
    {"data_dir", CONFIG_STR, NULL, "required string"},
    {"net.port", CONFIG_INT, "9400", "a key in section net"},
    {"net.addr", CONFIG_STR, "0.0.0.0", "another key in section net"},
    {NULL, 0, NULL, NULL},
};

static char err[512];

static struct config *load_ok(const char *text)
{
    struct config *cfg = config_new(keys);
    int rc = config_load_string(cfg, "t.conf", text, err, sizeof(err));
    if (rc != 0)
        T_FAIL("load of <<%s>> failed: %d %s", text, rc, err);
    T_STREQ(err, "");
    return cfg;
}

/* Loading text must fail with -EINVAL and exactly this message. */
static void load_fails(const char *text, const char *msg)
{
    struct config *cfg = config_new(keys);
    T_EQ(config_load_string(cfg, "a.conf", text, err, sizeof(err)), -EINVAL);
    T_STREQ(err, msg);
    config_free(cfg);
}

static void test_defaults(void)
{
    struct config *cfg = config_new(keys);
    T_STREQ(config_get_str(cfg, "name"), "synod");
    T_STREQ(config_get_str(cfg, "empty"), "");
    T_EQ(config_get_int(cfg, "count"), -7);
    T_CHECK(!config_get_bool(cfg, "verbose"));
    T_EQU(config_get_size(cfg, "block_size"), 65536);
    T_EQU(config_get_duration_ms(cfg, "timeout"), 2000);
    T_EQ(config_get_int(cfg, "net.port"), 9400);
    config_free(cfg);
}

static void test_every_type(void)
{
    struct config *cfg = load_ok("name = alpha\n"
                                 "count = 0x7fffffffffffffff\n"
                                 "verbose = YES\n"
                                 "block_size = 3G\n"
                                 "timeout = 1h\n"
                                 "data_dir = /srv/synod\n");
    T_STREQ(config_get_str(cfg, "name"), "alpha");
    T_EQ(config_get_int(cfg, "count"), INT64_MAX);
    T_CHECK(config_get_bool(cfg, "verbose"));
    T_EQU(config_get_size(cfg, "block_size"), 3ull << 30);
    T_EQU(config_get_duration_ms(cfg, "timeout"), 3600000);
    T_STREQ(config_get_str(cfg, "data_dir"), "/srv/synod");
    config_free(cfg);

    static const struct {
        const char *key, *text;
        uint64_t want; /* int64 values cast */
    } ok[] = {
        {"count", "0", 0},
        {"count", "-9223372036854775808", (uint64_t)INT64_MIN},
        {"count", "9223372036854775807", INT64_MAX},
        {"count", "+12", 12},
        {"count", "010", 10},
        {"count", "-0x10", (uint64_t)-16},
        {"count", "0XfF", 255},
        {"block_size", "0", 0},
        {"block_size", "123", 123},
        {"block_size", "1k", 1024},
        {"block_size", "2M", 2ull << 20},
        {"block_size", "16777215T", 16777215ull << 40},
        {"block_size", "18446744073709551615", UINT64_MAX},
        {"timeout", "500", 500},
        {"timeout", "500ms", 500},
        {"timeout", "3s", 3000},
        {"timeout", "2m", 120000},
        {"timeout", "0h", 0},
    };
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        cfg = config_new(keys);
        if (config_set(cfg, ok[i].key, ok[i].text, NULL, err, sizeof(err)) != 0)
            T_FAIL("%s = %s rejected: %s", ok[i].key, ok[i].text, err);
        uint64_t got = ok[i].key[0] == 'c'   ? (uint64_t)config_get_int(cfg, ok[i].key)
                       : ok[i].key[0] == 'b' ? config_get_size(cfg, ok[i].key)
                                             : config_get_duration_ms(cfg, ok[i].key);
        if (got != ok[i].want)
            T_FAIL("%s = %s gave %llu, want %llu", ok[i].key, ok[i].text, (unsigned long long)got,
                   (unsigned long long)ok[i].want);
        config_free(cfg);
    }

    static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "On"};
    static const char *const no[] = {"false", "no", "off", "0", "False", "NO"};
    cfg = config_new(keys);
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        T_EQ(config_set(cfg, "verbose", yes[i], NULL, err, sizeof(err)), 0);
        T_CHECK(config_get_bool(cfg, "verbose"));
        T_EQ(config_set(cfg, "verbose", no[i], NULL, err, sizeof(err)), 0);
        T_CHECK(!config_get_bool(cfg, "verbose"));
    }
    config_free(cfg);
}

static void test_bad_values(void)
{
    static const struct {
        const char *key, *type, *text;
    } bad[] = {
        {"count", "int", ""},
        {"count", "int", "12x"},
        {"count", "int", "1 2"},
        {"count", "int", "0x"},
        {"count", "int", "0xg"},
        {"count", "int", "9223372036854775808"},
        {"count", "int", "-9223372036854775809"},
        {"count", "int", "0x10000000000000000"},
        {"count", "int", "1.5"},
        {"verbose", "bool", "maybe"},
        {"verbose", "bool", "2"},
        {"verbose", "bool", ""},
        {"block_size", "size", "12X"},
        {"block_size", "size", "-1"},
        {"block_size", "size", "+1"},
        {"block_size", "size", "1.5G"},
        {"block_size", "size", "64 K"},
        {"block_size", "size", "64KB"},
        {"block_size", "size", "K"},
        {"block_size", "size", "16777216T"},
        {"block_size", "size", "18446744073709551616"},
        {"block_size", "size", "99999999999999999999999"},
        {"timeout", "duration", "1d"},
        {"timeout", "duration", "-5s"},
        {"timeout", "duration", "5 s"},
        {"timeout", "duration", "1.5s"},
        {"timeout", "duration", "5S"},
        {"timeout", "duration", "5sec"},
        {"timeout", "duration", "307445734561825861m"},
        {"timeout", "duration", ""},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char text[256], want[512];
        snprintf(text, sizeof(text), "# header\n%s = %s\n", bad[i].key, bad[i].text);
        snprintf(want, sizeof(want), "a.conf:2: bad %s '%s' for key '%s'", bad[i].type, bad[i].text,
                 bad[i].key);
        load_fails(text, want);
    }
    /* the example messages of the brief, verbatim */
    load_fails("name = x\n\nblock_size = 12X\n", "a.conf:3: bad size '12X' for key 'block_size'");
    load_fails("\n\n\n\n\n\nfoo = 1\n", "a.conf:7: unknown key 'foo'");
    load_fails("name = x\njust some words\n", "a.conf:2: expected 'key = value'");
}

static void test_syntax_errors(void)
{
    load_fails("= 5\n", "a.conf:1: expected 'key = value'");
    load_fails("name x\n", "a.conf:1: expected 'key = value'");
    load_fails("name = x\n[net\n", "a.conf:2: expected '[section]'");
    load_fails("[net] port = 1\n", "a.conf:1: expected '[section]'");
    load_fails("[]\n", "a.conf:1: bad section name ''");
    load_fails("[a b]\n", "a.conf:1: bad section name 'a b'");
    load_fails("name = \"abc\n", "a.conf:1: unterminated quoted value");
    load_fails("name = \"abc\\\n", "a.conf:1: unterminated quoted value");
    load_fails("name = \"abc\" def\n", "a.conf:1: unexpected text after quoted value");
    load_fails("name = \"a\\qb\"\n", "a.conf:1: bad escape in quoted value (use \\\" \\\\ \\n \\t)");
    load_fails("[net]\nname = x\n", "a.conf:2: unknown key 'net.name'");
    load_fails("[other]\nport = 1\n", "a.conf:2: unknown key 'other.port'");
    /* the error is reported for the first bad line, even with more after it */
    load_fails("name = ok\ncount = 1\nbogus = 2\nverbose = nope\n", "a.conf:3: unknown key 'bogus'");
}

static void test_comments_quotes_sections(void)
{
    struct config *cfg = load_ok("# a comment\n"
                                 "; another comment\n"
                                 "   # indented comment\n"
                                 "\n"
                                 "name = a#b ; not the comment char without space before\n"
                                 "data_dir = \"  spaced # kept ; too \"   # trailing comment\n"
                                 "empty = \"\"\n"
                                 "[net]   ; comment after header\n"
                                 "port = 1234\n"
                                 "[ net ]\n"
                                 "addr = \"q\\\"uo\\\\te\\tx\"\n");
    T_STREQ(config_get_str(cfg, "name"), "a#b");
    T_STREQ(config_get_str(cfg, "data_dir"), "  spaced # kept ; too ");
    T_STREQ(config_get_str(cfg, "empty"), "");
    T_EQ(config_get_int(cfg, "net.port"), 1234);
    T_STREQ(config_get_str(cfg, "net.addr"), "q\"uo\\te\tx");
    config_free(cfg);

    /* "count=5# glued": the '#' follows a digit, so it is part of the value and the int is bad */
    load_fails("count=5# glued\n", "a.conf:1: bad int '5# glued' for key 'count'");

    /* a UTF-8 byte order mark is skipped */
    cfg = load_ok("\xEF\xBB\xBF"
                  "count = 4\n");
    T_EQ(config_get_int(cfg, "count"), 4);
    config_free(cfg);

    /* a key with a dot at top level addresses a section key directly; empty unquoted value */
    cfg = load_ok("net.port = 1\nname =\n");
    T_EQ(config_get_int(cfg, "net.port"), 1);
    T_STREQ(config_get_str(cfg, "name"), "");
    config_free(cfg);
}

static void test_duplicates_and_atomicity(void)
{
    struct config *cfg = load_ok("count = 1\ncount = 2\nname = a\nname = b\n");
    T_EQ(config_get_int(cfg, "count"), 2);
    T_STREQ(config_get_str(cfg, "name"), "b");

    /* A failing load changes nothing, even the lines before the error. */
    T_EQ(config_load_string(cfg, "b.conf", "count = 99\nname = c\nverbose = perhaps\n", err, sizeof(err)),
         -EINVAL);
    T_STREQ(err, "b.conf:3: bad bool 'perhaps' for key 'verbose'");
    T_EQ(config_get_int(cfg, "count"), 2);
    T_STREQ(config_get_str(cfg, "name"), "b");

    /* A later file overrides an earlier one key by key. */
    T_EQ(config_load_string(cfg, "c.conf", "count = 3\n", err, sizeof(err)), 0);
    T_EQ(config_get_int(cfg, "count"), 3);
    T_STREQ(config_get_str(cfg, "name"), "b");
    config_free(cfg);
}

static void test_required(void)
{
    struct config *cfg = config_new(keys);
    T_EQ(config_check_required(cfg, err, sizeof(err)), -EINVAL);
    T_STREQ(err, "missing required key 'data_dir'");
    T_EQ(config_load_string(cfg, "t.conf", "data_dir = /d\n", err, sizeof(err)), 0);
    T_EQ(config_check_required(cfg, err, sizeof(err)), 0);
    T_STREQ(config_get_str(cfg, "data_dir"), "/d");
    config_free(cfg);

    static const struct config_key two[] = {{"a", CONFIG_INT, NULL, "x"},
                                            {"b", CONFIG_INT, "1", "y"},
                                            {"c", CONFIG_SIZE, NULL, "z"},
                                            {NULL, 0, NULL, NULL}};
    cfg = config_new(two);
    T_EQ(config_check_required(cfg, err, sizeof(err)), -EINVAL);
    T_STREQ(err, "missing required key 'a', 'c'");
    /* a tiny error buffer is still NUL-terminated */
    char small[8];
    T_EQ(config_check_required(cfg, small, sizeof(small)), -EINVAL);
    T_STREQ(small, "missing");
    /* and no buffer at all is allowed */
    T_EQ(config_check_required(cfg, NULL, 0), -EINVAL);
    config_free(cfg);
}

static void test_set(void)
{
    struct config *cfg = config_new(keys);
    T_EQ(config_set(cfg, "block_size", "1M", "command line", err, sizeof(err)), 0);
    T_EQU(config_get_size(cfg, "block_size"), 1u << 20);
    /* values from config_set are verbatim: no quote or comment processing, spaces kept */
    T_EQ(config_set(cfg, "name", " \"x\" # y ", NULL, err, sizeof(err)), 0);
    T_STREQ(config_get_str(cfg, "name"), " \"x\" # y ");
    T_EQ(config_set(cfg, "block_size", "12X", "--block_size", err, sizeof(err)), -EINVAL);
    T_STREQ(err, "--block_size: bad size '12X' for key 'block_size'");
    T_EQU(config_get_size(cfg, "block_size"), 1u << 20);
    T_EQ(config_set(cfg, "nope", "1", NULL, err, sizeof(err)), -EINVAL);
    T_STREQ(err, "command line: unknown key 'nope'");

    /* a file loaded after an override wins; an override after a file wins */
    T_EQ(config_load_string(cfg, "t.conf", "block_size = 2M\n", err, sizeof(err)), 0);
    T_EQU(config_get_size(cfg, "block_size"), 2u << 20);
    T_EQ(config_set(cfg, "block_size", "4M", NULL, err, sizeof(err)), 0);
    T_EQU(config_get_size(cfg, "block_size"), 4u << 20);
    config_free(cfg);
}

static char *write_tmp(const char *data, size_t len)
{
    char *path = xstrdup("/tmp/synod_test_config_XXXXXX");
    int fd = mkstemp(path);
    T_CHECK(fd >= 0);
    T_EQ(write(fd, data, len), (long long)len);
    close(fd);
    return path;
}

static void test_files(void)
{
    struct config *cfg = config_new(keys);
    T_EQ(config_load_file(cfg, "/nonexistent/synod.conf", err, sizeof(err)), -ENOENT);
    T_CHECK(strstr(err, "/nonexistent/synod.conf") != NULL);

    /* CRLF line endings, no final newline */
    const char crlf[] = "name = dos\r\n[net]\r\nport = 7\r\ncount = 1";
    char *path = write_tmp(crlf, sizeof(crlf) - 1);
    T_EQ(config_load_file(cfg, path, err, sizeof(err)), -EINVAL);
    char want[256];
    snprintf(want, sizeof(want), "%s:4: unknown key 'net.count'", path);
    T_STREQ(err, want);
    unlink(path);
    free(path);

    /* a NUL byte is an error with its line, not a silent end of file */
    const char nul[] = "name = a\ncount = 1\0\nverbose = on\n";
    path = write_tmp(nul, sizeof(nul) - 1);
    T_EQ(config_load_file(cfg, path, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "%s:2: NUL byte in line", path);
    T_STREQ(err, want);
    unlink(path);
    free(path);

    /* a 3 MiB line is read whole, nothing truncated */
    size_t n = 3u << 20;
    char *big = xmalloc(n + 64);
    int off = snprintf(big, 64, "[net]\naddr = ");
    memset(big + off, 'a', n);
    strcpy(big + off + n, "z\nport = 5\n");
    path = write_tmp(big, strlen(big));
    T_EQ(config_load_file(cfg, path, err, sizeof(err)), 0);
    const char *addr = config_get_str(cfg, "net.addr");
    T_EQ(strlen(addr), n + 1);
    T_EQ(addr[n], 'z');
    T_EQ(config_get_int(cfg, "net.port"), 5);
    unlink(path);
    free(path);
    free(big);

    /* a directory is an I/O error, not a syntax error */
    T_EQ(config_load_file(cfg, "/tmp", err, sizeof(err)), -EISDIR);
    T_CHECK(strstr(err, "/tmp") != NULL);
    config_free(cfg);
}

static void test_help(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    T_CHECK(f != NULL);
    config_print_help(keys, f);
    fclose(f);
    T_CHECK(len > 0);
    for (const struct config_key *k = keys; k->name; k++) {
        T_CHECK(strstr(buf, k->name) != NULL);
        T_CHECK(strstr(buf, k->doc) != NULL);
    }
    T_CHECK(strstr(buf, "block_size = 64K") != NULL);
    T_CHECK(strstr(buf, "data_dir = (required)") != NULL);
    T_CHECK(strstr(buf, "empty = \"\"") != NULL);
    /* one line per key */
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += buf[i] == '\n';
    T_EQ(lines, ARRAY_SIZE(keys) - 1);
    free(buf);
}

/* fn must abort the process (a PANIC): run it in a child with stderr silenced. */
static void expect_panic(void (*fn)(void))
{
    pid_t pid = fork();
    T_CHECK(pid >= 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        fn();
        _exit(0);
    }
    int status;
    T_EQ(waitpid(pid, &status, 0), pid);
    T_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

static void get_wrong_type(void)
{
    struct config *cfg = config_new(keys);
    config_get_int(cfg, "name");
}
static void get_unknown(void)
{
    struct config *cfg = config_new(keys);
    config_get_str(cfg, "nope");
}
static void get_unset_required(void)
{
    struct config *cfg = config_new(keys);
    config_get_str(cfg, "data_dir");
}
static void bad_default(void)
{
    static const struct config_key k[] = {{"x", CONFIG_SIZE, "12X", "bad"}, {NULL, 0, NULL, NULL}};
    config_new(k);
}

static void test_misuse_panics(void)
{
    expect_panic(get_wrong_type);
    expect_panic(get_unknown);
    expect_panic(get_unset_required);
    expect_panic(bad_default);
}

int main(void)
{
    T_RUN(test_defaults);
    T_RUN(test_every_type);
    T_RUN(test_bad_values);
    T_RUN(test_syntax_errors);
    T_RUN(test_comments_quotes_sections);
    T_RUN(test_duplicates_and_atomicity);
    T_RUN(test_required);
    T_RUN(test_set);
    T_RUN(test_files);
    T_RUN(test_help);
    T_RUN(test_misuse_panics);
    fprintf(stderr, "ok\n");
    return 0;
}
