/* test_codec.c - unit tests of common/codec: round trips (text, zeros, random, short, empty, full 64 KiB
 * blocks) at several levels, the raw fallback and the 97% rule, argument errors, and corrupt input: every
 * byte of a compressed block flipped one at a time, truncation at every length, trailing bytes, wrong
 * raw_len, garbage flags, and hand-made frames (no content size, skippable, huge window, two frames).
 * Corrupt input must give an error (or, if a flip still decodes to the right length, 0) and never touch
 * memory outside the buffers: stored blocks live in exact-size heap allocations (so ASan sees any over-read)
 * and dst is followed by a canary (so an over-write is seen even without ASan). */
#include "common/codec.h"

#include "common/util.h"
#include "tests/test.h"

#include <errno.h>
#include <zstd.h>

#define CANARY 64

static const int levels[] = {-1, 1, 3, 9};

/* Text-like data: words from a small vocabulary in lines with numbers, fixed seed. */
static void gen_text(uint8_t *buf, size_t len, uint64_t seed)
{
    static const char *const words[] = {"chunk", "write",  "replica", "paxos",  "lease", "ok",
                                        "the",   "block",  "leader",  "commit", "crc",   "to",
                                        "from",  "server", "client",  "retry"};
    size_t n = 0;
    while (n < len) {
        char word[32];
        uint64_t r = util_rand_next(&seed);
        int w = r % 8 == 0
                    ? snprintf(word, sizeof(word), "%u%c", (unsigned)(r >> 40) % 100000, r % 3 ? ' ' : '\n')
                    : snprintf(word, sizeof(word), "%s ", words[(r >> 8) % ARRAY_SIZE(words)]);
        for (int i = 0; i < w && n < len; i++)
            buf[n++] = (uint8_t)word[i];
    }
}

static void gen_random(uint8_t *buf, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)util_rand_next(&seed);
}

/* A heap copy of exactly len bytes, so ASan flags any read past the end. */
static uint8_t *exact_copy(const void *p, size_t len)
{
    uint8_t *q = xmalloc(len);
    if (len)
        memcpy(q, p, len);
    return q;
}

struct stored {
    uint8_t *data; /* exactly len bytes */
    size_t len;
    enum codec_flag flag;
};

static struct stored encode(struct codec *c, const uint8_t *src, size_t len)
{
    uint8_t *dst = xmalloc(codec_bound(len));
    struct stored s;
    T_EQ(codec_encode(c, src, len, dst, codec_bound(len), &s.len, &s.flag), 0);
    T_CHECK(s.len <= codec_bound(len));
    if (s.flag == CODEC_ZSTD)
        T_CHECK(s.len * 100 < len * CODEC_RAW_THRESHOLD_PCT);
    else
        T_CHECK(s.flag == CODEC_RAW && s.len == len && (len == 0 || memcmp(dst, src, len) == 0));
    s.data = exact_copy(dst, s.len);
    free(dst);
    return s;
}

/* Decode into a raw_len buffer followed by a canary; check the canary. Returns the codec's result. */
static int decode_checked(struct codec *c, enum codec_flag flag, const uint8_t *src, size_t src_len,
                          uint8_t *out, size_t raw_len)
{
    memset(out + raw_len, 0xA5, CANARY);
    int rc = codec_decode(c, flag, src, src_len, out, raw_len);
    for (size_t i = 0; i < CANARY; i++)
        if (out[raw_len + i] != 0xA5)
            T_FAIL("decode wrote past raw_len %zu (byte %zu)", raw_len, i);
    return rc;
}

static void roundtrip(struct codec *c, const uint8_t *src, size_t len, enum codec_flag want_flag)
{
    struct stored s = encode(c, src, len);
    if ((int)want_flag >= 0 && s.flag != want_flag)
        T_FAIL("len %zu level %d: flag %d, want %d (stored %zu)", len, codec_level(c), s.flag, want_flag,
               s.len);
    uint8_t *out = xmalloc(len + CANARY);
    T_EQ(decode_checked(c, s.flag, s.data, s.len, out, len), 0);
    T_CHECK(len == 0 || memcmp(out, src, len) == 0);
    free(out);
    free(s.data);
}

static void test_roundtrips(void)
{
    size_t n = CODEC_BLOCK_SIZE;
    uint8_t *text = xmalloc(n), *rnd = xmalloc(n), *zeros = xcalloc(1, n);
    gen_text(text, n, 1);
    gen_random(rnd, n, 2);
    static const size_t sizes[] = {0, 1, 2, 7, 31, 64, 100, 1000, 4096, 4097, 30000, 65535, 65536};
    for (size_t li = 0; li < ARRAY_SIZE(levels); li++) {
        struct codec *c = codec_new(levels[li]);
        T_EQ(codec_level(c), levels[li]);
        for (size_t si = 0; si < ARRAY_SIZE(sizes); si++) {
            size_t len = sizes[si];
            enum codec_flag big = len >= 4096 ? CODEC_ZSTD : (enum codec_flag) - 1;
            roundtrip(c, text, len, big);
            roundtrip(c, zeros, len, len >= 100 ? CODEC_ZSTD : (enum codec_flag) - 1);
            roundtrip(c, rnd, len, CODEC_RAW);
        }
        roundtrip(c, NULL, 0, CODEC_RAW); /* empty with no buffer at all */
        codec_free(c);
    }
    free(text);
    free(rnd);
    free(zeros);
}

static void test_ratios(void)
{
    size_t n = CODEC_BLOCK_SIZE;
    uint8_t *text = xmalloc(n), *mixed = xmalloc(n);
    gen_text(text, n, 3);
    struct codec *c = codec_new(CODEC_DEFAULT_LEVEL);
    struct stored s = encode(c, text, n);
    T_EQ(s.flag, CODEC_ZSTD);
    T_CHECK(s.len < n / 2);
    /* frames carry the content size and no checksum (Frame_Header_Descriptor bit 2) */
    T_EQU(ZSTD_getFrameContentSize(s.data, s.len), n);
    T_EQ(s.data[4] & 0x04, 0);
    fprintf(stderr, "   text 64 KiB at level %d: %zu bytes (%.1f%%)\n", CODEC_DEFAULT_LEVEL, s.len,
            100.0 * s.len / n);
    free(s.data);

    /* Around the threshold: random data with a compressible prefix of growing size. Whatever zstd achieves,
     * the codec must pick ZSTD exactly when that is below 97%, and both sides must round-trip. */
    int saw_raw = 0, saw_zstd = 0;
    for (size_t pct = 0; pct <= 10; pct++) {
        gen_random(mixed, n, 4 + pct);
        memset(mixed, 'x', n * pct / 100);
        struct stored m = encode(c, mixed, n);
        saw_raw += m.flag == CODEC_RAW;
        saw_zstd += m.flag == CODEC_ZSTD;
        roundtrip(c, mixed, n, m.flag);
        free(m.data);
    }
    T_CHECK(saw_raw > 0 && saw_zstd > 0);
    codec_free(c);
    free(text);
    free(mixed);
}

static void test_args(void)
{
    struct codec *c = codec_new(1);
    uint8_t *src = xcalloc(1, CODEC_BLOCK_SIZE + 1), *dst = xmalloc(CODEC_BLOCK_SIZE + 1);
    size_t out_len = 12345;
    enum codec_flag flag = CODEC_ZSTD;
    T_EQU(codec_bound(0), 0);
    T_CHECK(codec_bound(CODEC_BLOCK_SIZE) >= CODEC_BLOCK_SIZE);
    T_EQ(codec_encode(c, src, CODEC_BLOCK_SIZE + 1, dst, CODEC_BLOCK_SIZE + 1, &out_len, &flag), -EINVAL);
    T_EQ(codec_encode(c, src, 1000, dst, codec_bound(1000) - 1, &out_len, &flag), -ENOBUFS);
    T_EQ(out_len, 12345); /* untouched on error */
    T_EQ(codec_decode(c, CODEC_RAW, src, CODEC_BLOCK_SIZE + 1, dst, CODEC_BLOCK_SIZE + 1), -EINVAL);
    T_EQ(codec_decode(c, CODEC_ZSTD, src, 100, dst, CODEC_BLOCK_SIZE + 1), -EINVAL);
    /* raw blocks must have exactly raw_len bytes */
    T_EQ(codec_decode(c, CODEC_RAW, src, 99, dst, 100), -EBADMSG);
    T_EQ(codec_decode(c, CODEC_RAW, src, 101, dst, 100), -EBADMSG);
    T_EQ(codec_decode(c, CODEC_RAW, src, 100, dst, 100), 0);
    T_EQ(codec_decode(c, CODEC_RAW, NULL, 0, NULL, 0), 0);
    T_EQ(codec_decode(c, CODEC_ZSTD, NULL, 0, NULL, 0), -EBADMSG);
    codec_free(c);
    codec_free(NULL);
    free(src);
    free(dst);
}

/* Every way of damaging one stored block: wrong raw_len, garbage flags, truncation at every length, a
 * trailing byte, every byte flipped (two masks). Returns how many flips still decoded (not an error). */
static int attack(struct codec *c, const struct stored *s, const uint8_t *orig, size_t raw_len)
{
    uint8_t *out = xmalloc(CODEC_BLOCK_SIZE + 1 + CANARY);
    T_EQ(s->flag, CODEC_ZSTD);
    T_EQ(decode_checked(c, s->flag, s->data, s->len, out, raw_len), 0);
    T_MEMEQ(out, orig, raw_len);

    static const size_t deltas[] = {1, 2, 100};
    for (size_t i = 0; i < ARRAY_SIZE(deltas); i++) {
        if (raw_len + deltas[i] <= CODEC_BLOCK_SIZE)
            T_EQ(decode_checked(c, s->flag, s->data, s->len, out, raw_len + deltas[i]), -EBADMSG);
        if (raw_len >= deltas[i])
            T_EQ(decode_checked(c, s->flag, s->data, s->len, out, raw_len - deltas[i]), -EBADMSG);
    }
    T_EQ(decode_checked(c, s->flag, s->data, s->len, out, 0), -EBADMSG);
    /* garbage flags; and a compressed block presented as raw is only valid if the lengths happen to match */
    static const int flags[] = {2, 3, 7, 255, -1, 0x7fffffff};
    for (size_t i = 0; i < ARRAY_SIZE(flags); i++)
        T_EQ(decode_checked(c, (enum codec_flag)flags[i], s->data, s->len, out, raw_len), -EBADMSG);
    T_EQ(decode_checked(c, CODEC_RAW, s->data, s->len, out, raw_len), -EBADMSG);

    for (size_t len = 0; len < s->len; len++) {
        uint8_t *t = exact_copy(s->data, len);
        if (decode_checked(c, s->flag, t, len, out, raw_len) != -EBADMSG)
            T_FAIL("truncation to %zu of %zu bytes not detected", len, s->len);
        free(t);
    }
    uint8_t *longer = xmalloc(s->len + 1);
    memcpy(longer, s->data, s->len);
    longer[s->len] = 0;
    T_EQ(decode_checked(c, s->flag, longer, s->len + 1, out, raw_len), -EBADMSG);
    free(longer);

    int survived = 0;
    uint8_t *f = exact_copy(s->data, s->len);
    static const uint8_t masks[] = {0xFF, 0x01};
    for (size_t m = 0; m < ARRAY_SIZE(masks); m++) {
        for (size_t i = 0; i < s->len; i++) {
            f[i] ^= masks[m];
            int rc = decode_checked(c, s->flag, f, s->len, out, raw_len);
            if (rc != 0 && rc != -EBADMSG)
                T_FAIL("flip of byte %zu (mask 0x%02x): unexpected %d", i, masks[m], rc);
            survived += rc == 0;
            f[i] ^= masks[m];
        }
    }
    free(f);
    /* the codec still works after all that */
    T_EQ(decode_checked(c, s->flag, s->data, s->len, out, raw_len), 0);
    T_MEMEQ(out, orig, raw_len);
    free(out);
    return survived;
}

static void test_corruption(void)
{
    static const size_t sizes[] = {100, 4096, CODEC_BLOCK_SIZE};
    uint8_t *text = xmalloc(CODEC_BLOCK_SIZE);
    for (size_t li = 0; li < ARRAY_SIZE(levels); li++) {
        struct codec *c = codec_new(levels[li]);
        for (size_t si = 0; si < ARRAY_SIZE(sizes); si++) {
            size_t len = sizes[si];
            gen_text(text, len, 10 + si);
            if (len == 100)
                memset(text, 'q', len); /* short text does not compress below 97%; a run does */
            struct stored s = encode(c, text, len);
            int survived = attack(c, &s, text, len);
            fprintf(stderr, "   level %d, %zu -> %zu bytes: %d of %zu flips still decoded\n", levels[li], len,
                    s.len, survived, 2 * s.len);
            free(s.data);
        }
        codec_free(c);
    }
    free(text);
}

/* Frames the encoder never writes, made by hand or with other zstd settings, are refused. */
static void test_foreign_frames(void)
{
    struct codec *c = codec_new(1);
    uint8_t raw[100], out[200 + CANARY];
    memset(raw, 'a', sizeof(raw));

    /* A frame built by hand (RFC 8878): magic, FHD with a 4-byte content size and no single-segment flag,
     * a window descriptor, the content size, one last raw block of 100 bytes. */
    uint8_t fr[4 + 1 + 1 + 4 + 3 + 100];
    put_le32(fr, ZSTD_MAGICNUMBER);
    fr[4] = 0x80;
    fr[5] = 0; /* window log 10 */
    put_le32(fr + 6, 100);
    fr[10] = (uint8_t)(1 | 100 << 3); /* Last_Block = 1, Block_Type = raw, Block_Size = 100 */
    fr[11] = (uint8_t)(100 << 3 >> 8);
    fr[12] = 0;
    memcpy(fr + 13, raw, 100);
    T_EQ(decode_checked(c, CODEC_ZSTD, fr, sizeof(fr), out, 100), 0);
    T_MEMEQ(out, raw, 100);
    fr[5] = 7 << 3; /* window log 17: still allowed */
    T_EQ(decode_checked(c, CODEC_ZSTD, fr, sizeof(fr), out, 100), 0);
    fr[5] = 7 << 3 | 1; /* a little over 2^17 */
    T_EQ(decode_checked(c, CODEC_ZSTD, fr, sizeof(fr), out, 100), -EBADMSG);
    fr[5] = 20 << 3; /* a 1 GiB window */
    T_EQ(decode_checked(c, CODEC_ZSTD, fr, sizeof(fr), out, 100), -EBADMSG);

    /* no content size in the header */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    uint8_t zf[256];
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
    size_t zn = ZSTD_compress2(cc, zf, sizeof(zf), raw, sizeof(raw));
    T_CHECK(!ZSTD_isError(zn));
    T_EQU(ZSTD_getFrameContentSize(zf, zn), ZSTD_CONTENTSIZE_UNKNOWN);
    T_EQ(decode_checked(c, CODEC_ZSTD, zf, zn, out, 100), -EBADMSG);

    /* with a zstd checksum: a valid frame of the right size, accepted */
    ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    zn = ZSTD_compress2(cc, zf, sizeof(zf), raw, sizeof(raw));
    T_CHECK(!ZSTD_isError(zn));
    T_EQ(decode_checked(c, CODEC_ZSTD, zf, zn, out, 100), 0);
    zf[zn - 1] ^= 1; /* and its checksum is verified */
    T_EQ(decode_checked(c, CODEC_ZSTD, zf, zn, out, 100), -EBADMSG);

    /* two frames back to back, each 100 bytes: neither 100 nor 200 is accepted */
    ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
    zn = ZSTD_compress2(cc, zf, sizeof(zf) / 2, raw, sizeof(raw));
    T_CHECK(!ZSTD_isError(zn));
    memcpy(zf + zn, zf, zn);
    T_EQ(decode_checked(c, CODEC_ZSTD, zf, zn, out, 100), 0);
    T_EQ(decode_checked(c, CODEC_ZSTD, zf, 2 * zn, out, 100), -EBADMSG);
    T_EQ(decode_checked(c, CODEC_ZSTD, zf, 2 * zn, out, 200), -EBADMSG);
    ZSTD_freeCCtx(cc);

    /* a skippable frame "decodes" to nothing with plain zstd; not a block */
    uint8_t sk[8 + 4];
    put_le32(sk, ZSTD_MAGIC_SKIPPABLE_START);
    put_le32(sk + 4, 4);
    memset(sk + 8, 0, 4);
    T_EQ(decode_checked(c, CODEC_ZSTD, sk, sizeof(sk), out, 0), -EBADMSG);
    /* an empty frame is a valid encoding of 0 bytes (the encoder stores empty blocks raw, though) */
    cc = ZSTD_createCCtx();
    zn = ZSTD_compress2(cc, zf, sizeof(zf), raw, 0);
    T_CHECK(!ZSTD_isError(zn));
    T_EQ(decode_checked(c, CODEC_ZSTD, zf, zn, out, 0), 0);
    ZSTD_freeCCtx(cc);
    codec_free(c);
}

int main(void)
{
    T_RUN(test_roundtrips);
    T_RUN(test_ratios);
    T_RUN(test_args);
    T_RUN(test_corruption);
    T_RUN(test_foreign_frames);
    fprintf(stderr, "ok\n");
    return 0;
}
