/* lin.h - a Wing-Gong style linearizability checker for a history of register operations on one key.
 *
 * Each put writes a value unique in the history; a get observes a value (0 = the initial value). Times are
 * true simulated time; a pending operation (no response) has response = LIN_PENDING and may or may not have
 * taken effect. The search linearizes one minimal operation at a time (no remaining operation responded
 * before it was invoked) and memoizes (set of done operations, register value) states that failed, so the
 * cost stays small for the history sizes the simulator keeps (<= 60 operations per key).
 */
#ifndef SYNOD_TESTS_PAXOS_LIN_H
#define SYNOD_TESTS_PAXOS_LIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LIN_PENDING UINT64_MAX
#define LIN_MAX_OPS 60

struct lin_op {
    bool is_put;
    uint64_t value;
    uint64_t invoke, response;
};

/* Returns true when the history (ops borrowed, at most LIN_MAX_OPS) is linearizable. */
bool lin_check(const struct lin_op *ops, size_t n);

#endif
