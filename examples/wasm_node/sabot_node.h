/* The Sabot WASM node ABI, version 1, for C compiled with clang --target=wasm32.
 *
 * A node exports its memory (the linker does: "memory") and two functions:
 *   void *sabot_alloc(uint32_t size)   memory for the next batch's input, 8-byte
 *                                      aligned (0: none); the memory of the previous
 *                                      batch (its input and output) may be reused
 *   const sabot_batch *sabot_run(const sabot_batch *in, const char *params_json,
 *                                uint32_t params_len)    the output batch (0: failure)
 * and optionally
 *   const char *sabot_error(void)      a message about the last failure
 * Buffers are Arrow's: a validity bitmap (bit i of byte i/8 set = row i valid;
 * a 0 pointer = every row valid), fixed-width values, or for strings int32
 * offsets (rows + 1) and the bytes. Output pointers may point at the input.
 * docs/executor.md ("WASM executor") is the reference.
 */
#ifndef SABOT_NODE_H
#define SABOT_NODE_H

typedef unsigned int uint32_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned char uint8_t;

enum sabot_type {
    SABOT_BOOL = 1, SABOT_INT8, SABOT_INT16, SABOT_INT32, SABOT_INT64,
    SABOT_UINT8, SABOT_UINT16, SABOT_UINT32, SABOT_UINT64,
    SABOT_FLOAT32, SABOT_FLOAT64, SABOT_UTF8, SABOT_BINARY
};

typedef struct {
    uint32_t type, null_count;
    const uint8_t *validity; uint32_t validity_len;
    const void *values; uint32_t values_len;
    const uint8_t *data; uint32_t data_len;
    const char *name; uint32_t name_len;
} sabot_column;

typedef struct {
    uint32_t num_rows, num_columns;
    sabot_column columns[];
} sabot_batch;

#define SABOT_EXPORT(name) __attribute__((export_name(name)))

static inline int sabot_valid(const sabot_column *c, uint32_t i) {
    return !c->validity || ((c->validity[i >> 3] >> (i & 7)) & 1);
}

/* A bump allocator over the memory above the program's data: a new batch
 * (sabot_alloc) frees everything at once, which is all a node needs. */
extern unsigned char __heap_base;
static unsigned long sabot_heap_top;

/* Memory for the node's own use (its outputs) while it handles a batch. */
static void *sabot_heap_alloc(uint32_t size) {
    unsigned long start = (sabot_heap_top + 7) & ~7UL, end = start + size, have;
    if (end < start)
        return 0;
    have = __builtin_wasm_memory_size(0) * 65536UL;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == -1UL)
        return 0;
    sabot_heap_top = end;
    return (void *)start;
}

SABOT_EXPORT("sabot_alloc") void *sabot_alloc(uint32_t size) {
    sabot_heap_top = (unsigned long)&__heap_base;
    return sabot_heap_alloc(size);
}

#endif
