/* cs_scrub.c - the throttled background scrubber thread (see cs_scrub.h). */
#include "chunkserver/cs_scrub.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>

#include "chunkserver/cs_stop.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"

#define STEP_BLOCKS 16u

struct cs_scrubber {
    struct cstore *store;
    uint64_t rate_bytes, pause_ms;
    cs_scrub_bad_fn on_bad;
    void *arg;
    struct cs_stop stop;
    pthread_t thread;
};

static void *scrub_main(void *arg)
{
    struct cs_scrubber *sc = arg;
    struct cstore_scrub *cur = cstore_scrub_new(sc->store);
    struct cstore_bad_block bad[STEP_BLOCKS];
    uint64_t t0 = clk_mono_ns(), verified = 0, pass_blocks = 0;
    while (!cs_stop_raised(&sc->stop)) {
        size_t nbad = 0;
        bool done = false;
        int n = cstore_scrub_step(cur, STEP_BLOCKS, bad, ARRAY_SIZE(bad), &nbad, &done);
        for (size_t i = 0; i < nbad; i++) {
            LOG_ERR("chunk %016" PRIx64 " v%u: corrupt block %u found by the scrubber%s", bad[i].chunk_id,
                    bad[i].version, bad[i].block, bad[i].fell_back ? " (an older slot is still valid)" : "");
            sc->on_bad(sc->arg, bad[i].chunk_id, bad[i].version);
        }
        verified += (uint64_t)MAX(n, 0);
        pass_blocks += (uint64_t)MAX(n, 0);
        /* Throttle: the verified bytes may not run ahead of rate_bytes per second since t0. */
        uint64_t due_ns = verified * CSTORE_BLOCK_SIZE * NS_PER_SEC / sc->rate_bytes;
        uint64_t now = clk_mono_ns() - t0;
        if (due_ns > now && cs_stop_sleep_ms(&sc->stop, (due_ns - now) / NS_PER_MS + 1))
            break;
        if (done) {
            LOG_DEBUG("scrub pass done: %" PRIu64 " blocks verified", pass_blocks);
            pass_blocks = 0;
            if (cs_stop_sleep_ms(&sc->stop, sc->pause_ms))
                break;
            t0 = clk_mono_ns();
            verified = 0;
        }
    }
    cstore_scrub_free(cur);
    cstore_thread_release();
    return NULL;
}

struct cs_scrubber *cs_scrub_start(struct cstore *store, uint64_t rate_bytes, uint64_t pause_ms,
                                   cs_scrub_bad_fn on_bad, void *arg)
{
    if (rate_bytes == 0)
        return NULL;
    struct cs_scrubber *sc = xcalloc(1, sizeof(*sc));
    sc->store = store;
    sc->rate_bytes = rate_bytes;
    sc->pause_ms = pause_ms;
    sc->on_bad = on_bad;
    sc->arg = arg;
    cs_stop_init(&sc->stop);
    if (pthread_create(&sc->thread, NULL, scrub_main, sc) != 0)
        PANIC("cannot start the scrubber thread");
    return sc;
}

void cs_scrub_stop(struct cs_scrubber *sc)
{
    if (!sc)
        return;
    cs_stop_raise(&sc->stop);
    pthread_join(sc->thread, NULL);
    cs_stop_destroy(&sc->stop);
    free(sc);
}
