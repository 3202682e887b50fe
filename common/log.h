/* log.h - leveled, timestamped log lines to stderr (journald picks them up under systemd).
 *
 * One line per call, written with a single write(2) so lines from concurrent threads never interleave.
 * Format: "2026-11-26T05:03:12.123Z meta1 W paxos.c:120 chunk 0x3f2a v7: crc mismatch ...". Messages are
 * lowercase, error first, the object named. Thread-safe; never blocks beyond the write itself.
 */
#ifndef SYNOD_LOG_H
#define SYNOD_LOG_H

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN = 1, LOG_LVL_INFO = 2, LOG_LVL_DEBUG = 3 };

/* Set the component name shown on every line (copied, at most 31 bytes) and the minimum level. */
void log_init(const char *component, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error", "warn", "info", "debug"; returns 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG_AT(lvl, ...)                                                                                    \
    do {                                                                                                    \
        if ((lvl) <= log_get_level())                                                                       \
            log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);                                              \
    } while (0)
#define LOG_ERR(...) LOG_AT(LOG_LVL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
