/* log.c - see log.h. A line is formatted into a stack buffer and written with one write(2). */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_component[32] = "synod";
static volatile int log_level = LOG_LVL_INFO;

void log_init(const char *component, enum log_level level)
{
    snprintf(log_component, sizeof(log_component), "%s", component);
    log_level = level;
}

void log_set_level(enum log_level level)
{
    log_level = level;
}

enum log_level log_get_level(void)
{
    return (enum log_level)log_level;
}

int log_parse_level(const char *s, enum log_level *out)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
{
    static const char lvl_char[] = "EWID";
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %c %s:%d ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     log_component, lvl_char[level & 3], base, line);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : ((size_t)m < sizeof(buf) - (size_t)n - 2 ? (size_t)m : sizeof(buf) - (size_t)n - 2));
    buf[len++] = '\n';
    int saved = errno;
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
    errno = saved;
}
