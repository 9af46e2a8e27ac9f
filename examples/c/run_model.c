/* Run a model compiled by dlc from C, without Python (docs/c-api.md).
 *
 *   dlc compile model.onnx -o out/
 *   cc -I"$(dlc --include-dir)" examples/c/run_model.c -o run_model -ldl
 *   ./run_model out/ input.bin [threads]
 *
 * input.bin holds every input's bytes, in the model's input order, C-contiguous, nothing
 * else. Prints each output as `name dtype d0xd1...` and then one value per line. Without
 * ARTIFACT_DIR/weights.bin, the weights inside model.so (`dlc compile --embed-weights`).
 * The model's library is opened with dlopen, so one program runs any model.
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dlc.h"

/* The API's functions, looked up in the model's library. */
static struct {
    dlc_status (*open)(const char *, dlc_model **);
    void (*close)(dlc_model *);
    size_t (*num_inputs)(const dlc_model *), (*num_outputs)(const dlc_model *);
    dlc_status (*input)(const dlc_model *, size_t, dlc_tensor_info *);
    dlc_status (*output)(const dlc_model *, size_t, dlc_tensor_info *);
    dlc_status (*set_num_threads)(dlc_model *, int64_t);
    dlc_status (*run)(dlc_model *, const void *const *, void *const *);
    const char *(*last_error)(void);
    const char *(*dtype_name)(dlc_dtype);
} api;

static int load_api(const char *directory) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.so", directory);
    /* RTLD_GLOBAL: models opened by one process share one thread pool. */
    void *library = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!library) {
        fprintf(stderr, "error: %s\n", dlerror());
        return 0;
    }
#define FIND(field, symbol) \
    if (!(*(void **)&api.field = dlsym(library, symbol))) { \
        fprintf(stderr, "error: %s lacks %s (compiled without a C compiler?)\n", path, symbol); \
        return 0; \
    }
    FIND(open, "dlc_model_open") FIND(close, "dlc_model_close") FIND(num_inputs, "dlc_model_num_inputs")
    FIND(num_outputs, "dlc_model_num_outputs") FIND(input, "dlc_model_input") FIND(output, "dlc_model_output")
    FIND(set_num_threads, "dlc_model_set_num_threads") FIND(run, "dlc_model_run")
    FIND(last_error, "dlc_last_error") FIND(dtype_name, "dlc_dtype_name")
#undef FIND
    return 1;
}

static void print_value(dlc_dtype dtype, const unsigned char *at) {
    switch (dtype) {
    case DLC_FLOAT32: { float v; memcpy(&v, at, 4); printf("%.9g\n", v); break; }
    case DLC_FLOAT64: { double v; memcpy(&v, at, 8); printf("%.17g\n", v); break; }
    case DLC_INT8: printf("%d\n", *(const int8_t *)at); break;
    case DLC_INT16: { int16_t v; memcpy(&v, at, 2); printf("%d\n", v); break; }
    case DLC_INT32: { int32_t v; memcpy(&v, at, 4); printf("%" PRId32 "\n", v); break; }
    case DLC_INT64: { int64_t v; memcpy(&v, at, 8); printf("%" PRId64 "\n", v); break; }
    case DLC_UINT8: case DLC_BOOL: printf("%u\n", *at); break;
    case DLC_UINT16: { uint16_t v; memcpy(&v, at, 2); printf("%u\n", v); break; }
    case DLC_UINT32: { uint32_t v; memcpy(&v, at, 4); printf("%" PRIu32 "\n", v); break; }
    case DLC_UINT64: { uint64_t v; memcpy(&v, at, 8); printf("%" PRIu64 "\n", v); break; }
    case DLC_FLOAT16: { uint16_t v; memcpy(&v, at, 2); printf("0x%04x\n", v); break; }
    }
}

static size_t element_size(dlc_dtype dtype) {
    static const size_t sizes[] = {0, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1};
    return sizes[dtype];
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ARTIFACT_DIR INPUT.bin [THREADS]\n", argv[0]);
        return 2;
    }
    if (!load_api(argv[1])) return 1;
    dlc_model *model = NULL;
    char weights[4096];
    snprintf(weights, sizeof weights, "%s/weights.bin", argv[1]);
    if (api.open(access(weights, F_OK) == 0 ? argv[1] : NULL, &model) != DLC_OK) {
        fprintf(stderr, "error: %s\n", api.last_error());
        return 1;
    }
    if (argc > 3 && api.set_num_threads(model, strtoll(argv[3], NULL, 10)) != DLC_OK) {
        fprintf(stderr, "error: %s\n", api.last_error());
        api.close(model);
        return 1;
    }
    size_t num_inputs = api.num_inputs(model), num_outputs = api.num_outputs(model);
    void **inputs = calloc(num_inputs + 1, sizeof *inputs), **outputs = calloc(num_outputs + 1, sizeof *outputs);
    FILE *file = fopen(argv[2], "rb");
    int status = 1;
    if (!file) {
        fprintf(stderr, "error: cannot open %s\n", argv[2]);
        goto done;
    }
    for (size_t i = 0; i < num_inputs; i++) {
        dlc_tensor_info info;
        api.input(model, i, &info);
        /* malloc's alignment (16) covers every element type. */
        inputs[i] = malloc(info.size_bytes ? info.size_bytes : 1);
        if (fread(inputs[i], 1, info.size_bytes, file) != info.size_bytes) {
            fprintf(stderr, "error: %s ends before input '%s' (%zu bytes)\n", argv[2], info.name, info.size_bytes);
            goto done;
        }
    }
    if (fgetc(file) != EOF) {
        fprintf(stderr, "error: %s is longer than the model's inputs\n", argv[2]);
        goto done;
    }
    for (size_t i = 0; i < num_outputs; i++) {
        dlc_tensor_info info;
        api.output(model, i, &info);
        outputs[i] = malloc(info.size_bytes ? info.size_bytes : 1);
    }
    if (api.run(model, (const void *const *)inputs, outputs) != DLC_OK) {
        fprintf(stderr, "error: %s\n", api.last_error());
        goto done;
    }
    for (size_t i = 0; i < num_outputs; i++) {
        dlc_tensor_info info;
        api.output(model, i, &info);
        printf("%s %s ", info.name, api.dtype_name(info.dtype));
        for (int64_t d = 0; d < info.rank; d++) printf("%s%" PRId64, d ? "x" : "", info.shape[d]);
        printf("\n");
        size_t size = element_size(info.dtype);
        for (size_t at = 0; at < info.size_bytes; at += size) print_value(info.dtype, (unsigned char *)outputs[i] + at);
    }
    status = 0;
done:
    if (file) fclose(file);
    for (size_t i = 0; i < num_inputs; i++) free(inputs[i]);
    for (size_t i = 0; i < num_outputs; i++) free(outputs[i]);
    free(inputs);
    free(outputs);
    api.close(model);
    return status;
}
