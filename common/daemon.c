/* daemon.c - see daemon.h. */
#include "common/daemon.h"

#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool table_has(const struct config_key *keys, const char *name)
{
    for (const struct config_key *k = keys; k->name; k++)
        if (strcmp(k->name, name) == 0)
            return true;
    return false;
}

static void print_help(const char *name, const char *usage, const struct config_key *keys)
{
    printf("usage: %s [-c FILE] [--KEY=VALUE ...] [--log-level=error|warn|info|debug]\n%s\n\n", name, usage);
    printf("Configuration keys (in FILE as 'key = value', or on the command line as --key=value):\n");
    config_print_help(keys, stdout);
}

int daemon_init(int argc, char **argv, const char *name, const char *usage, const struct config_key *keys,
                struct config **out)
{
    char err[512];
    const char *file = NULL;
    const char *level = NULL;
    log_init(name, LOG_LVL_INFO);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            print_help(name, usage, keys);
            return 1;
        }
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            file = argv[++i];
        else if (strncmp(argv[i], "--log-level=", 12) == 0)
            level = argv[i] + 12;
    }
    struct config *cfg = config_new(keys);
    int r;
    if (file && (r = config_load_file(cfg, file, err, sizeof(err))) != 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        goto out_free;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--log-level=", 12) == 0)
            continue;
        if (strncmp(argv[i], "--", 2) != 0 || !strchr(argv[i], '=')) {
            fprintf(stderr, "%s: command line: unexpected argument '%s' (see --help)\n", name, argv[i]);
            r = -EINVAL;
            goto out_free;
        }
        char *kv = xstrdup(argv[i] + 2);
        char *eq = strchr(kv, '=');
        *eq = 0;
        for (char *p = kv; *p; p++) /* --data-dir and --data_dir both work */
            if (*p == '-')
                *p = '_';
        r = config_set(cfg, kv, eq + 1, "command line", err, sizeof(err));
        free(kv);
        if (r) {
            fprintf(stderr, "%s: %s\n", name, err);
            goto out_free;
        }
    }
    if ((r = config_check_required(cfg, err, sizeof(err))) != 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        goto out_free;
    }
    if (!level && table_has(keys, "log_level"))
        level = config_get_str(cfg, "log_level");
    if (level) {
        enum log_level lv;
        if (log_parse_level(level, &lv) != 0) {
            fprintf(stderr, "%s: bad log level '%s' (error, warn, info, debug)\n", name, level);
            r = -EINVAL;
            goto out_free;
        }
        log_set_level(lv);
    }
    *out = cfg;
    return 0;

out_free:
    config_free(cfg);
    return -EINVAL;
}

void daemon_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int daemon_wait_signal(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}
