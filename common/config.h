/* config.h - the one configuration format for every daemon: INI-style "key = value" files.
 *
 * Each daemon declares its keys in a table (name, type, default, one-line doc). Loading validates every line
 * against the table: unknown keys, bad values and syntax errors are reported as "FILE:LINE: message" and
 * the load fails, so a typo never silently falls back to a default. Optional "[section]" headers prefix
 * keys as "section.key". '#' and ';' start comments (whole-line, or after whitespace). Values may be quoted
 * with "..." to keep leading/trailing spaces or '#'. Command-line overrides use config_set (origin
 * "command line"). The table's documentation is printed by config_print_help, so --help and the docs come
 * from the same source.
 *
 * Types: CONFIG_STR; CONFIG_INT (int64, decimal or 0x hex); CONFIG_BOOL (true/false/yes/no/on/off/1/0);
 * CONFIG_SIZE (bytes, with optional K/M/G/T suffix, powers of 1024, e.g. "64K", "1G");
 * CONFIG_DURATION (milliseconds, with optional suffix ms/s/m/h, e.g. "500ms", "2s"; bare number = ms).
 *
 * Thread safety: a loaded config is read-only and may be shared; config_set must not race with getters.
 */
#ifndef SYNOD_CONFIG_H
#define SYNOD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum config_type { CONFIG_STR, CONFIG_INT, CONFIG_BOOL, CONFIG_SIZE, CONFIG_DURATION };

struct config_key {
    const char *name;      /* "section.key" or "key" */
    enum config_type type;
    const char *def;       /* default value as text (parsed like a file value); NULL = required, no default */
    const char *doc;       /* one line for --help and docs */
};

struct config; /* opaque */

/* Create a config holding the defaults of `keys` (borrowed: must outlive the config; terminate the array
 * with a {NULL} entry). Defaults are parsed like config_set values; a bad default or a duplicate name is a
 * programming error and panics. Never fails otherwise. Free with config_free. */
struct config *config_new(const struct config_key *keys);
void config_free(struct config *cfg);

/* Read `path` and apply its values. Returns 0, -ENOENT if the file does not exist, or -EINVAL on any
 * syntax, unknown-key or value error; on error writes "path:line: message" into err (errlen bytes,
 * always NUL-terminated; err may be NULL). Other -errno for I/O errors (message in err too). A load is
 * all or nothing: on any error the config is left unchanged. Within a file a repeated key's last value
 * wins. No line length limit. */
int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen);
/* Parse text as if it were a file called `name` (for tests and embedded configs). Same errors. */
int config_load_string(struct config *cfg, const char *name, const char *text, char *err, size_t errlen);
/* Set one key from text (e.g. a --key=value option). The value is taken verbatim (no quote or comment
 * processing). -EINVAL with a message naming key and origin ("origin: bad size '12X' for key 'k'");
 * origin NULL means "command line". */
int config_set(struct config *cfg, const char *key, const char *value, const char *origin, char *err,
               size_t errlen);
/* After loading: -EINVAL if a key without a default was never set (message names it). */
int config_check_required(const struct config *cfg, char *err, size_t errlen);

/* Typed getters. The key must be in the table with that type and have a value (a programming error
 * otherwise: panics; call config_check_required after loading). Strings are owned by the config and stay
 * valid until the key is set again or the config is freed. */
const char *config_get_str(const struct config *cfg, const char *key);
int64_t config_get_int(const struct config *cfg, const char *key);
bool config_get_bool(const struct config *cfg, const char *key);
uint64_t config_get_size(const struct config *cfg, const char *key);
uint64_t config_get_duration_ms(const struct config *cfg, const char *key);

/* Print "  name = default   doc [type]" lines for every key, for --help ("(required)" for keys without a
 * default). */
void config_print_help(const struct config_key *keys, FILE *out);

#endif
