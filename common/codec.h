/* codec.h - the block codec: zstd at a fast level, with a raw fallback for incompressible blocks.
 *
 * A block (up to CODEC_BLOCK_SIZE bytes) is encoded to its stored form plus a flag: CODEC_ZSTD when zstd
 * made it smaller than CODEC_RAW_THRESHOLD_PCT percent of the input, CODEC_RAW (a verbatim copy) otherwise,
 * so incompressible data costs one memcpy and reads back with no decoding. Decoding validates everything:
 * a corrupt or truncated frame, a frame whose content size differs from the expected raw length, or an
 * unknown flag is -EBADMSG, never a crash or an over-read; decoder memory is bounded (window log limit).
 * Callers keep their own CRC32C of the stored bytes (raw blocks carry no zstd checksum).
 *
 * A struct codec holds one ZSTD_CCtx and one ZSTD_DCtx and is NOT thread-safe: keep one per thread.
 */
#ifndef SYNOD_CODEC_H
#define SYNOD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define CODEC_BLOCK_SIZE 65536u
#define CODEC_RAW_THRESHOLD_PCT 97u
#define CODEC_DEFAULT_LEVEL 1

enum codec_flag { CODEC_RAW = 0, CODEC_ZSTD = 1 };

struct codec; /* opaque */

/* New codec at zstd `level` (negative levels allowed; 1 is the default). Never fails (aborts on OOM). */
struct codec *codec_new(int level);
void codec_free(struct codec *c);
int codec_level(const struct codec *c);

/* Capacity dst must have for any input of src_len <= CODEC_BLOCK_SIZE (currently src_len itself: a stored
 * block is never longer than its input). Cannot fail. */
size_t codec_bound(size_t src_len);

/* Encode src[0..src_len) (src_len <= CODEC_BLOCK_SIZE, else -EINVAL) into dst (capacity dst_cap >=
 * codec_bound(src_len), else -ENOBUFS). On success returns 0, *out_len = stored length, *out_flag =
 * CODEC_ZSTD or CODEC_RAW. src and dst must not overlap. Blocks only on CPU. */
int codec_encode(struct codec *c, const void *src, size_t src_len, void *dst, size_t dst_cap, size_t *out_len,
                 enum codec_flag *out_flag);

/* Decode a stored block (flag, src, src_len) into dst, which must receive exactly raw_len bytes
 * (raw_len <= CODEC_BLOCK_SIZE). Returns 0, or -EBADMSG if the stored bytes are not a valid encoding of
 * exactly raw_len bytes or the flag is unknown (flags come from disk: an unknown one is corruption, as the
 * file comment says), or -EINVAL if raw_len > CODEC_BLOCK_SIZE. On error dst's contents are unspecified.
 * src and dst must not overlap. */
int codec_decode(struct codec *c, enum codec_flag flag, const void *src, size_t src_len, void *dst,
                 size_t raw_len);

#endif
