/* test.h - the tiny assertion kit for unit tests: each test is its own process under ctest, and a failed
 * check prints the location and values and exits 1 at once (so ctest reports the failure). */
#ifndef SYNOD_TEST_H
#define SYNOD_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_FAIL(...)                                                                                         \
    do {                                                                                                    \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                               \
        fprintf(stderr, __VA_ARGS__);                                                                       \
        fputc('\n', stderr);                                                                                \
        exit(1);                                                                                            \
    } while (0)
#define T_CHECK(cond)                                                                                       \
    do {                                                                                                    \
        if (!(cond))                                                                                        \
            T_FAIL("check failed: %s", #cond);                                                              \
    } while (0)
#define T_EQ(a, b)                                                                                          \
    do {                                                                                                    \
        long long _a = (long long)(a), _b = (long long)(b);                                                 \
        if (_a != _b)                                                                                       \
            T_FAIL("%s == %s: %lld != %lld", #a, #b, _a, _b);                                               \
    } while (0)
#define T_EQU(a, b)                                                                                         \
    do {                                                                                                    \
        unsigned long long _a = (unsigned long long)(a), _b = (unsigned long long)(b);                      \
        if (_a != _b)                                                                                       \
            T_FAIL("%s == %s: 0x%llx != 0x%llx", #a, #b, _a, _b);                                           \
    } while (0)
#define T_STREQ(a, b)                                                                                       \
    do {                                                                                                    \
        const char *_a = (a), *_b = (b);                                                                    \
        if (strcmp(_a, _b) != 0)                                                                            \
            T_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, _a, _b);                                           \
    } while (0)
#define T_MEMEQ(a, b, n) T_CHECK(memcmp((a), (b), (n)) == 0)

/* Run a named test function and print a line for it. */
#define T_RUN(fn)                                                                                           \
    do {                                                                                                    \
        fprintf(stderr, "-- %s\n", #fn);                                                                    \
        fn();                                                                                               \
    } while (0)

#endif
