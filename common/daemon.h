/* daemon.h - what every SynodFS daemon does the same way: command line, config file, logging, signals.
 *
 * Command line: `NAME [-c FILE] [--key=value ...] [--log-level=LEVEL]`, `-h/--help` prints the usage and
 * every config key with its default and documentation (from the daemon's config_key table, so --help and
 * the docs never drift). A key given on the command line overrides the file. Every error names its
 * source ("a.conf:7: unknown key 'foo'", "command line: bad size '1X' for key 'cache_size'").
 *
 * Signals: daemon_block_signals() blocks SIGTERM, SIGINT and SIGHUP (and ignores SIGPIPE) in the calling
 * thread and so in every thread it creates afterwards; call it first in main. daemon_wait_signal() then
 * waits for one of them synchronously, so shutdown runs in main, not in a signal handler.
 */
#ifndef SYNOD_DAEMON_H
#define SYNOD_DAEMON_H

#include "common/config.h"

/* Parse argv and load the config. On success returns 0 and *cfg (caller frees with config_free); returns
 * 1 if --help was printed (exit 0); -EINVAL after printing the error to stderr (exit 2). `usage` is one
 * line describing the daemon. Sets the log component to `name` and the level from --log-level or the
 * key "log_level" if the table has it. */
int daemon_init(int argc, char **argv, const char *name, const char *usage, const struct config_key *keys,
                struct config **cfg);

void daemon_block_signals(void);
/* Block until SIGTERM, SIGINT or SIGHUP arrives; returns the signal number. */
int daemon_wait_signal(void);

#endif
