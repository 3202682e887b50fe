/* errors.h - errno helpers. Every function in SynodFS returns 0 or -errno; these name and describe them.
 * Foreign error spaces are converted at their boundary, each in one helper (gRPC status: rpc.c; LevelDB
 * errptr: the LevelDB adapters; zstd size_t: codec.c).
 */
#ifndef SYNOD_ERRORS_H
#define SYNOD_ERRORS_H

/* Symbolic name of an errno value ("ENOENT"); accepts err or -err; "E?" for unknown. Static string. */
const char *err_name(int err);
/* strerror for err or -err, thread-safe; static string. */
const char *err_str(int err);

#endif
