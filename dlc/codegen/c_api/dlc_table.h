/* What dlc_api.c knows of the model: a table that dlc/codegen/c_api.py writes as C for each
 * compile (model_table.c), from the same values as manifest.json (docs/artifact.md). */
#ifndef DLC_TABLE_H
#define DLC_TABLE_H

#include "dlc.h"

struct dlc_table {
    size_t num_inputs, num_outputs;
    const dlc_tensor_info *inputs, *outputs;
    uint64_t arena_size, weights_size;
    int64_t status_offset;            /* -1: no run-time check */
    size_t num_error_sites;
    const char *const *error_sites;   /* the message of code k at k - 1 */
    int64_t threads;                  /* 0: the CPUs the process may use */
    const char *cpu;                  /* for messages: "x86-64-v3", "znver2" */
    size_t num_cpu_flags;
    const char *const *cpu_flags;     /* /proc/cpuinfo flags the code needs */
    const unsigned char *embedded_weights;  /* --embed-weights: weights.bin's bytes; else NULL */
};

extern const struct dlc_table dlc_model_table;

#endif
