/* dlc.h: the C API of a model compiled by dlc (`dlc compile MODEL.onnx -o DIR`).
 *
 * DIR/model.so exports these functions (docs/c-api.md); DIR/weights.bin holds the weights,
 * read by dlc_model_open. Link a program against DIR/model.so, or dlopen it (RTLD_GLOBAL
 * lets every model of the process share one thread pool). `dlc --include-dir` prints the
 * directory of this header. Mirrors the shape of onnx-mlir's and IREE's runtime APIs:
 * opaque handles, status codes, caller-owned buffers; no call aborts the process.
 */
#ifndef DLC_H
#define DLC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DLC_API_VERSION 1

#if defined(__GNUC__)
#define DLC_EXPORT __attribute__((visibility("default")))
#else
#define DLC_EXPORT
#endif

/* What each call returns; dlc_last_error() then says what went wrong, in words. */
typedef enum dlc_status {
    DLC_OK = 0,
    DLC_ERROR_ARGUMENT = 1, /* a NULL pointer, an index or a thread count out of range */
    DLC_ERROR_IO = 2,       /* DIR/weights.bin missing or unreadable */
    DLC_ERROR_ARTIFACT = 3, /* weights.bin of another size, or a CPU without the code's features */
    DLC_ERROR_MEMORY = 4,   /* an allocation failed */
    DLC_ERROR_RUN = 5       /* a run-time check failed (integer division by zero, an index out of
                               range): the outputs are undefined */
} dlc_status;

/* Element types, as the manifest's "dtype" names them. bool: one byte, 0 or 1. */
typedef enum dlc_dtype {
    DLC_FLOAT16 = 1, DLC_FLOAT32 = 2, DLC_FLOAT64 = 3,
    DLC_INT8 = 4, DLC_INT16 = 5, DLC_INT32 = 6, DLC_INT64 = 7,
    DLC_UINT8 = 8, DLC_UINT16 = 9, DLC_UINT32 = 10, DLC_UINT64 = 11,
    DLC_BOOL = 12
} dlc_dtype;

/* An input or output: pointers valid while the library stays loaded. */
typedef struct dlc_tensor_info {
    const char *name;
    dlc_dtype dtype;
    int64_t rank;
    const int64_t *shape;  /* rank dimensions */
    size_t size_bytes;     /* product of the shape times the element size */
} dlc_tensor_info;

typedef struct dlc_model dlc_model;

/* DLC_API_VERSION of the library. */
DLC_EXPORT int dlc_api_version(void);

/* Open the model of this library with the weights of DIR (DIR/weights.bin, checked for its
 * size; Python's dlc.load also checks every hash), or, for DIR NULL, with the weights inside
 * the library (`dlc compile --embed-weights`). *model is NULL on failure. */
DLC_EXPORT dlc_status dlc_model_open(const char *directory, dlc_model **model);

/* Free the model (NULL is allowed). No run of it may be in flight. */
DLC_EXPORT void dlc_model_close(dlc_model *model);

DLC_EXPORT size_t dlc_model_num_inputs(const dlc_model *model);
DLC_EXPORT size_t dlc_model_num_outputs(const dlc_model *model);
DLC_EXPORT dlc_status dlc_model_input(const dlc_model *model, size_t index, dlc_tensor_info *info);
DLC_EXPORT dlc_status dlc_model_output(const dlc_model *model, size_t index, dlc_tensor_info *info);

/* Threads a run uses, the calling thread included (1 to 4096; the process's one pool grows
 * to the largest count asked). Default: the count compiled for (`--threads`), else the CPUs
 * the process may use. */
DLC_EXPORT dlc_status dlc_model_set_num_threads(dlc_model *model, int64_t threads);
DLC_EXPORT int64_t dlc_model_num_threads(const dlc_model *model);

/* Run once. inputs[i]: dlc_model_input(i)'s size_bytes, C-contiguous, aligned to its element
 * size, only read; outputs[i] likewise, written. The buffers stay the caller's. Runs of one
 * model may overlap on several threads. */
DLC_EXPORT dlc_status dlc_model_run(dlc_model *model, const void *const *inputs, void *const *outputs);

/* The message of this thread's last failed call ("" if none). Valid until its next call. */
DLC_EXPORT const char *dlc_last_error(void);

/* "float32", ...; NULL for an unknown value. */
DLC_EXPORT const char *dlc_dtype_name(dlc_dtype dtype);

#ifdef __cplusplus
}
#endif

#endif /* DLC_H */
