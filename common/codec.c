/* codec.c - see codec.h. The block codec: zstd one-shot frames with a raw fallback.
 *
 * Encoding. The compressor writes straight into the caller's dst with its capacity capped at the largest
 * stored size that still counts as a win (strictly below CODEC_RAW_THRESHOLD_PCT percent of the input).
 * If zstd cannot fit (it reports dstSize_tooSmall, which incompressible data reaches quickly because zstd
 * emits raw blocks for it) the block is stored verbatim instead. So codec_bound(n) is just n: a stored
 * block is never longer than its input, and no scratch buffer or second copy is needed. Frames carry the
 * content size (ZSTD_c_contentSizeFlag) and no zstd checksum (callers keep a CRC32C of the stored bytes);
 * with a known size of <= 64 KiB, zstd shrinks the window to the block, so frames are single-segment.
 *
 * Decoding treats the stored bytes as untrusted. A CODEC_ZSTD block must be exactly one zstd frame (no
 * skippable frames, no trailing bytes, no second frame) that declares a content size equal to raw_len, and
 * decompressing it into exactly raw_len bytes of dst must succeed and produce raw_len bytes. zstd's
 * one-shot decoder is bounds-checked on both buffers and needs no window buffer; frames that ask for a
 * window bigger than any block we write are refused anyway (frame_window_ok; ZSTD_d_windowLogMax is set as
 * well, for the streaming paths where zstd honours it). Every failure is -EBADMSG; dst's contents are then
 * unspecified.
 *
 * One ZSTD_CCtx and one ZSTD_DCtx per struct codec, reused for every block (creating contexts per block
 * costs far more than compressing 64 KiB at level 1).
 */
#include "common/codec.h"

#include "common/util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

/* A block of CODEC_BLOCK_SIZE bytes needs a window log of 16; one more leaves headroom. */
#define CODEC_WINDOW_LOG_MAX 17

_Static_assert(CODEC_RAW_THRESHOLD_PCT <= 100, "a raw block must always fit in codec_bound");
_Static_assert(CODEC_BLOCK_SIZE <= (1u << CODEC_WINDOW_LOG_MAX), "window log limit below block size");

struct codec {
    int level;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
};

/* The zstd boundary: a zstd size_t result that is an error, seen while decoding untrusted bytes, becomes
 * -EBADMSG, except out-of-memory, which aborts like every allocation failure. */
static int zstd_decode_err(size_t r)
{
    ASSERT(ZSTD_isError(r));
    if (ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation)
        PANIC("zstd: out of memory");
    return -EBADMSG;
}

/* Setting a parameter on a context we own can only fail through a bug of ours. */
static void zstd_check(size_t r, const char *what)
{
    if (ZSTD_isError(r))
        PANIC("zstd: %s: %s", what, ZSTD_getErrorName(r));
}

struct codec *codec_new(int level)
{
    struct codec *c = xcalloc(1, sizeof(*c));
    c->level = level;
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    if (c->cctx == NULL || c->dctx == NULL)
        PANIC("zstd: out of memory creating contexts");
    zstd_check(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level), "set level");
    zstd_check(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_contentSizeFlag, 1), "set content size flag");
    zstd_check(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 0), "set checksum flag");
    zstd_check(ZSTD_DCtx_setParameter(c->dctx, ZSTD_d_windowLogMax, CODEC_WINDOW_LOG_MAX), "set window log");
    return c;
}

void codec_free(struct codec *c)
{
    if (c == NULL)
        return;
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c);
}

int codec_level(const struct codec *c)
{
    return c->level;
}

size_t codec_bound(size_t src_len)
{
    return src_len;
}

int codec_encode(struct codec *c, const void *src, size_t src_len, void *dst, size_t dst_cap, size_t *out_len,
                 enum codec_flag *out_flag)
{
    ASSERT(c != NULL && out_len != NULL && out_flag != NULL);
    if (src_len > CODEC_BLOCK_SIZE)
        return -EINVAL;
    if (dst_cap < codec_bound(src_len))
        return -ENOBUFS;
    ASSERT(src_len == 0 || (src != NULL && dst != NULL));

    /* Largest stored size that is a win: out * 100 < src_len * PCT. Zero for tiny blocks. */
    size_t win = src_len * CODEC_RAW_THRESHOLD_PCT;
    size_t limit = win ? (win - 1) / 100 : 0;
    if (limit > 0) {
        size_t r = ZSTD_compress2(c->cctx, dst, limit, src, src_len);
        if (!ZSTD_isError(r)) {
            ASSERT(r <= limit);
            *out_len = r;
            *out_flag = CODEC_ZSTD;
            return 0;
        }
        if (ZSTD_getErrorCode(r) != ZSTD_error_dstSize_tooSmall)
            PANIC("zstd: compressing %zu bytes at level %d: %s", src_len, c->level, ZSTD_getErrorName(r));
    }
    if (src_len > 0)
        memcpy(dst, src, src_len);
    *out_len = src_len;
    *out_flag = CODEC_RAW;
    return 0;
}

/* True if the frame at src declares a window of at most 2^CODEC_WINDOW_LOG_MAX bytes (call only after
 * ZSTD_getFrameContentSize parsed the whole header). zstd's one-shot decoder ignores ZSTD_d_windowLogMax
 * (checked with zstd 1.5.4: it decodes straight into dst and allocates no window), so the limit is enforced
 * here: a frame we did not write is refused before any decoding. Single-segment frames (all of ours) have
 * no window descriptor: their window is the content size, already checked against raw_len.
 * Layout: RFC 8878, 3.1.1.1. */
static bool frame_window_ok(const uint8_t *src)
{
    uint8_t fhd = src[4];
    if (fhd & 0x20) /* Single_Segment_Flag */
        return true;
    uint8_t wd = src[5]; /* Window_Descriptor: exponent (5 bits), mantissa (3 bits) */
    unsigned window_log = 10u + (wd >> 3);
    return window_log < CODEC_WINDOW_LOG_MAX || (window_log == CODEC_WINDOW_LOG_MAX && (wd & 7) == 0);
}

/* Decode one CODEC_ZSTD block, validating it as described at the top of the file. */
static int decode_zstd(struct codec *c, const void *src, size_t src_len, void *dst, size_t raw_len)
{
    /* A zstd frame, not a skippable one (which would "decode" to 0 bytes) nor another format. */
    if (src_len < 4 || get_le32(src) != ZSTD_MAGICNUMBER)
        return -EBADMSG;
    /* Unknown (no content size written) and error both differ from any raw_len <= CODEC_BLOCK_SIZE. */
    if (ZSTD_getFrameContentSize(src, src_len) != raw_len || !frame_window_ok(src))
        return -EBADMSG;
    /* Exactly one frame filling src: no trailing bytes, no second frame. */
    size_t r = ZSTD_findFrameCompressedSize(src, src_len);
    if (ZSTD_isError(r) || r != src_len)
        return -EBADMSG;
    r = ZSTD_decompressDCtx(c->dctx, dst, raw_len, src, src_len);
    if (ZSTD_isError(r))
        return zstd_decode_err(r);
    return r == raw_len ? 0 : -EBADMSG;
}

int codec_decode(struct codec *c, enum codec_flag flag, const void *src, size_t src_len, void *dst,
                 size_t raw_len)
{
    ASSERT(c != NULL);
    if (raw_len > CODEC_BLOCK_SIZE)
        return -EINVAL;
    ASSERT(src_len == 0 || src != NULL);
    ASSERT(raw_len == 0 || dst != NULL);
    switch (flag) {
    case CODEC_RAW:
        if (src_len != raw_len)
            return -EBADMSG;
        if (raw_len > 0)
            memcpy(dst, src, raw_len);
        return 0;
    case CODEC_ZSTD:
        return decode_zstd(c, src, src_len, dst, raw_len);
    default:
        return -EBADMSG; /* the flag came from disk or the network: corruption, not misuse */
    }
}
