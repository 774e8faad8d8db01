/* A Sabot WASM node in C: the sum of each int64 or float64 column.
 *
 * Output: one row, one column per input column (same name and type), the
 * sum of its valid values; null when none is valid (as pyarrow.compute.sum).
 * Build: make wasm-example (clang --target=wasm32 -nostdlib, linked by wasm-ld).
 */
#include "sabot_node.h"

static const char *last_error;

SABOT_EXPORT("sabot_error") const char *sabot_error(void) { return last_error; }

static int64_t sum_int64(const sabot_column *c, uint32_t rows, int *seen) {
    const int64_t *v = c->values;
    int64_t total = 0;
    uint32_t i;
    if (!c->validity) {
        for (i = 0; i < rows; i++)
            total += v[i];
        *seen = rows > 0;
        return total;
    }
    /* Branch-free: a null adds nothing (its value masked to 0). */
    uint32_t any = 0;
    for (i = 0; i < rows; i++) {
        int64_t bit = (c->validity[i >> 3] >> (i & 7)) & 1;
        total += v[i] & -bit;
        any |= (uint32_t)bit;
    }
    *seen = any != 0;
    return total;
}

static double sum_float64(const sabot_column *c, uint32_t rows, int *seen) {
    const double *v = c->values;
    double total = 0;
    uint32_t i;
    for (i = 0; i < rows; i++)
        if (sabot_valid(c, i)) {
            total += v[i];
            *seen = 1;
        }
    return total;
}

SABOT_EXPORT("sabot_run")
const sabot_batch *sabot_run(const sabot_batch *in, const char *params, uint32_t params_len) {
    uint32_t n = in->num_columns, i;
    sabot_batch *out = sabot_heap_alloc(sizeof(sabot_batch) + n * sizeof(sabot_column));
    int64_t *sums = sabot_heap_alloc(8 * n);
    uint8_t *valid = sabot_heap_alloc(n);
    (void)params; (void)params_len;
    if (!out || !sums || !valid) {
        last_error = "out of memory";
        return 0;
    }
    out->num_rows = 1;
    out->num_columns = n;
    for (i = 0; i < n; i++) {
        const sabot_column *c = &in->columns[i];
        sabot_column *o = &out->columns[i];
        int seen = 0;
        if (c->type == SABOT_INT64)
            sums[i] = sum_int64(c, in->num_rows, &seen);
        else if (c->type == SABOT_FLOAT64)
            ((double *)sums)[i] = sum_float64(c, in->num_rows, &seen);
        else {
            last_error = "sum takes int64 and float64 columns only";
            return 0;
        }
        valid[i] = seen;
        *o = (sabot_column){c->type, 0, &valid[i], 1, &sums[i], 8, 0, 0, c->name, c->name_len};
    }
    return out;
}
