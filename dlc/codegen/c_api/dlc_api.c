/* The C API of docs/c-api.md (dlc/include/dlc.h), compiled into each model.so by the C
 * compiler that links it (dlc/codegen/link.py). It does in C what dlc/runtime/executable.py
 * does in Python: read weights.bin, keep arenas, call dlc_main with the runtime context of
 * docs/artifact.md ("Native calling convention"), read the status word. Every failure is a
 * status code and a message (dlc_last_error), never an abort.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dlc.h"
#include "dlc_table.h"

#define ALIGNMENT 64
#define MAX_THREADS 4096
#define MAX_FREE_ARENAS 64

typedef void (*dlc_worker)(void *data, int64_t item);
typedef struct {
    void (*parallel)(dlc_worker worker, void *data, int64_t items);
    int64_t num_threads;
    int64_t *profile;
} dlc_runtime_context;

/* The model's code and the thread pool, linked into the same library. The pool's symbols
 * stay interposable (a dynamic list): the process's first definition serves every model. */
extern void dlc_main(void **buffers, const void *weights, dlc_runtime_context *context);
extern void dlc_pool_parallel(dlc_worker worker, void *data, int64_t items);
extern int64_t dlc_pool_start(int64_t wanted);
/* The integer weights the code trusts (dlc/runtime/contract.py, TRUSTED_SYMBOL): count, then
 * offset, bytes and checksum of each; opening compares the weights with it. */
extern const int64_t dlc_trusted_weights[];

struct dlc_model {
    const void *weights;
    void *owned_weights;              /* read from weights.bin; NULL for embedded weights */
    int64_t threads;
    pthread_mutex_t lock;             /* guards free_arenas */
    size_t num_free;
    void *free_arenas[MAX_FREE_ARENAS];
    int64_t profile[1];               /* a profiling build's counters are not read here */
};

static __thread char last_error[1024];

static dlc_status fail(dlc_status status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    return status;
}

DLC_EXPORT int dlc_api_version(void) { return DLC_API_VERSION; }

DLC_EXPORT const char *dlc_last_error(void) { return last_error; }

DLC_EXPORT const char *dlc_dtype_name(dlc_dtype dtype) {
    static const char *const names[] = {NULL, "float16", "float32", "float64", "int8", "int16", "int32",
                                        "int64", "uint8", "uint16", "uint32", "uint64", "bool"};
    return dtype >= DLC_FLOAT16 && dtype <= DLC_BOOL ? names[dtype] : NULL;
}

/* The flags of /proc/cpuinfo's first "flags" line (AArch64: "Features") the code needs and
 * this CPU lacks, named in last_error; 0 when none lacks (or where Linux does not list them:
 * qemu-user shows the host's /proc/cpuinfo, whose x86 "flags" an AArch64 build ignores). */
#if defined(__aarch64__)
#define CPUINFO_KEY "Features"
#else
#define CPUINFO_KEY "flags"
#endif
static int missing_cpu_flags(void) {
    const struct dlc_table *t = &dlc_model_table;
    if (t->num_cpu_flags == 0) return 0;
    FILE *cpuinfo = fopen("/proc/cpuinfo", "re");
    if (!cpuinfo) return 0;
    char *line = NULL, *flags = NULL;
    size_t capacity = 0;
    while (getline(&line, &capacity, cpuinfo) > 0) {
        if (strncmp(line, CPUINFO_KEY, sizeof CPUINFO_KEY - 1) == 0 && strchr(line, ':')) {
            flags = strchr(line, ':') + 1;
            break;
        }
    }
    fclose(cpuinfo);
    int missing = 0;
    if (flags) {
        char names[512] = "";
        for (size_t i = 0; i < t->num_cpu_flags; i++) {
            const char *flag = t->cpu_flags[i], *at = flags;
            size_t length = strlen(flag);
            int found = 0;
            while ((at = strstr(at, flag)) != NULL) {
                if ((at == flags || at[-1] == ' ' || at[-1] == '\t') &&
                    (at[length] == ' ' || at[length] == '\n' || at[length] == '\0')) {
                    found = 1;
                    break;
                }
                at += length;
            }
            if (!found) {
                missing++;
                size_t used = strlen(names);
                snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", flag);
            }
        }
        if (missing)
            fail(DLC_ERROR_ARTIFACT, "this model was compiled for CPU '%s' and needs features this "
                 "machine lacks: %s; compile it again with `dlc compile --cpu` naming this CPU",
                 t->cpu, names);
    }
    free(line);
    return missing;
}

static int64_t default_threads(void) {
    if (dlc_model_table.threads > 0) return dlc_model_table.threads;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? online : 1;
}

static void *aligned_alloc_bytes(uint64_t size) {
    void *memory = NULL;
    if (posix_memalign(&memory, ALIGNMENT, size < ALIGNMENT ? ALIGNMENT : (size_t)size) != 0) return NULL;
    return memory;
}

static dlc_status read_weights(const char *directory, void **weights) {
    const uint64_t size = dlc_model_table.weights_size;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/weights.bin", directory) >= sizeof path)
        return fail(DLC_ERROR_ARGUMENT, "the directory name is longer than %zu bytes", sizeof path - 16);
    /* O_NONBLOCK: a FIFO in place of the weights is refused, never waited on. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return fail(DLC_ERROR_IO, "%s: cannot be opened (%s)", path, strerror(errno));
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) || (uint64_t)info.st_size != size) {
        close(fd);
        return fail(DLC_ERROR_ARTIFACT, "%s: expected a regular file of %llu bytes (this model's "
                    "weights); is DIR the artifact this model.so came from? compile the model again "
                    "with `dlc compile`", path, (unsigned long long)size);
    }
    unsigned char *data = aligned_alloc_bytes(size);
    if (!data) {
        close(fd);
        return fail(DLC_ERROR_MEMORY, "no memory for the %llu bytes of weights", (unsigned long long)size);
    }
    uint64_t done = 0;
    while (done < size) {
        ssize_t got = read(fd, data + done, size - done > (1u << 30) ? (1u << 30) : (size_t)(size - done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            int error = got < 0 ? errno : 0;
            close(fd);
            free(data);
            return fail(DLC_ERROR_IO, "%s: %s after %llu bytes", path,
                        error ? strerror(error) : "shrank while it was read", (unsigned long long)done);
        }
        done += (uint64_t)got;
    }
    close(fd);
    *weights = data;
    return DLC_OK;
}

/* weights_checksum of dlc/runtime/contract.py: sum of w_i * (2i + 1) mod 2^64 over the
 * little-endian 32-bit words w_i (x86-64 and AArch64 are little-endian). */
static uint64_t weights_checksum(const unsigned char *data, uint64_t size) {
    uint64_t sum = 0;
    for (uint64_t i = 0; i < size / 4; i++) {
        uint32_t word;
        memcpy(&word, data + 4 * i, sizeof word);
        sum += (uint64_t)word * (2 * i + 1);
    }
    return sum;
}

static dlc_status check_trusted_weights(const unsigned char *weights) {
    const uint64_t total = dlc_model_table.weights_size;
    for (int64_t k = 0; k < dlc_trusted_weights[0]; k++) {
        const uint64_t offset = (uint64_t)dlc_trusted_weights[1 + 3 * k];
        const uint64_t size = (uint64_t)dlc_trusted_weights[2 + 3 * k];
        if (offset > total || size > total - offset || size % 4 ||
            weights_checksum(weights + offset, size) != (uint64_t)dlc_trusted_weights[3 + 3 * k])
            return fail(DLC_ERROR_ARTIFACT, "weights.bin disagrees with the model's code: the integer weight at "
                        "byte %llu (%llu bytes) is not the one the code was compiled with; compile the model "
                        "again with `dlc compile`", (unsigned long long)offset, (unsigned long long)size);
    }
    return DLC_OK;
}

DLC_EXPORT dlc_status dlc_model_open(const char *directory, dlc_model **model) {
    if (!model) return fail(DLC_ERROR_ARGUMENT, "dlc_model_open: model (the result pointer) is NULL");
    *model = NULL;
    if (!directory && !dlc_model_table.embedded_weights)
        return fail(DLC_ERROR_ARGUMENT, "dlc_model_open: directory is NULL and this model.so holds no "
                    "weights; give the artifact's directory, or compile with --embed-weights");
    if (missing_cpu_flags()) return DLC_ERROR_ARTIFACT;
    dlc_model *opened = calloc(1, sizeof *opened);
    if (!opened) return fail(DLC_ERROR_MEMORY, "no memory for a model");
    if (directory) {
        dlc_status status = read_weights(directory, &opened->owned_weights);
        if (status != DLC_OK) {
            free(opened);
            return status;
        }
        opened->weights = opened->owned_weights;
    } else {
        opened->weights = dlc_model_table.embedded_weights;  /* read-only, 64-byte aligned */
    }
    dlc_status trusted = check_trusted_weights(opened->weights);
    if (trusted != DLC_OK) {
        free(opened->owned_weights);
        free(opened);
        return trusted;
    }
    pthread_mutex_init(&opened->lock, NULL);
    opened->threads = default_threads();
    *model = opened;
    return DLC_OK;
}

DLC_EXPORT void dlc_model_close(dlc_model *model) {
    if (!model) return;
    for (size_t i = 0; i < model->num_free; i++) free(model->free_arenas[i]);
    pthread_mutex_destroy(&model->lock);
    free(model->owned_weights);
    free(model);
}

DLC_EXPORT size_t dlc_model_num_inputs(const dlc_model *model) {
    return model ? dlc_model_table.num_inputs : 0;
}

DLC_EXPORT size_t dlc_model_num_outputs(const dlc_model *model) {
    return model ? dlc_model_table.num_outputs : 0;
}

static dlc_status tensor_info(const dlc_model *model, size_t index, dlc_tensor_info *info, int output) {
    const char *what = output ? "output" : "input";
    size_t count = output ? dlc_model_table.num_outputs : dlc_model_table.num_inputs;
    if (!model || !info) return fail(DLC_ERROR_ARGUMENT, "dlc_model_%s: model or info is NULL", what);
    if (index >= count)
        return fail(DLC_ERROR_ARGUMENT, "dlc_model_%s: index %zu, but the model has %zu %ss", what, index,
                    count, what);
    *info = (output ? dlc_model_table.outputs : dlc_model_table.inputs)[index];
    return DLC_OK;
}

DLC_EXPORT dlc_status dlc_model_input(const dlc_model *model, size_t index, dlc_tensor_info *info) {
    return tensor_info(model, index, info, 0);
}

DLC_EXPORT dlc_status dlc_model_output(const dlc_model *model, size_t index, dlc_tensor_info *info) {
    return tensor_info(model, index, info, 1);
}

DLC_EXPORT dlc_status dlc_model_set_num_threads(dlc_model *model, int64_t threads) {
    if (!model) return fail(DLC_ERROR_ARGUMENT, "dlc_model_set_num_threads: model is NULL");
    if (threads < 1 || threads > MAX_THREADS)
        return fail(DLC_ERROR_ARGUMENT, "dlc_model_set_num_threads: %lld threads; give 1 to %d",
                    (long long)threads, MAX_THREADS);
    __atomic_store_n(&model->threads, threads, __ATOMIC_RELAXED);
    return DLC_OK;
}

DLC_EXPORT int64_t dlc_model_num_threads(const dlc_model *model) {
    return model ? __atomic_load_n(&model->threads, __ATOMIC_RELAXED) : 0;
}

DLC_EXPORT dlc_status dlc_model_run(dlc_model *model, const void *const *inputs, void *const *outputs) {
    const struct dlc_table *t = &dlc_model_table;
    if (!model) return fail(DLC_ERROR_ARGUMENT, "dlc_model_run: model is NULL");
    if ((t->num_inputs && !inputs) || (t->num_outputs && !outputs))
        return fail(DLC_ERROR_ARGUMENT, "dlc_model_run: inputs or outputs is NULL");
    for (size_t i = 0; i < t->num_inputs; i++)
        if (!inputs[i]) return fail(DLC_ERROR_ARGUMENT, "dlc_model_run: input %zu ('%s') is NULL", i, t->inputs[i].name);
    for (size_t i = 0; i < t->num_outputs; i++)
        if (!outputs[i]) return fail(DLC_ERROR_ARGUMENT, "dlc_model_run: output %zu ('%s') is NULL", i, t->outputs[i].name);
    size_t count = t->num_inputs + t->num_outputs + 1;
    void **buffers = malloc(count * sizeof *buffers);
    if (!buffers) return fail(DLC_ERROR_MEMORY, "no memory for the run's buffer list");
    /* An arena per run in flight: a free one, else a new one (kept afterwards, up to 64). */
    void *arena = NULL;
    pthread_mutex_lock(&model->lock);
    if (model->num_free) arena = model->free_arenas[--model->num_free];
    pthread_mutex_unlock(&model->lock);
    if (!arena && !(arena = aligned_alloc_bytes(t->arena_size))) {
        free(buffers);
        return fail(DLC_ERROR_MEMORY, "no memory for the %llu-byte arena", (unsigned long long)t->arena_size);
    }
    for (size_t i = 0; i < t->num_inputs; i++) buffers[i] = (void *)inputs[i];
    for (size_t i = 0; i < t->num_outputs; i++) buffers[t->num_inputs + i] = outputs[i];
    buffers[count - 1] = arena;
    dlc_runtime_context context = {NULL, 1, model->profile};
    int64_t threads = dlc_model_num_threads(model);
    if (threads > 1) {
        int64_t started = dlc_pool_start(threads - 1);  /* grows the pool; never shrinks it */
        context.parallel = dlc_pool_parallel;
        context.num_threads = started + 1 < threads ? started + 1 : threads;
    }
    dlc_main(buffers, model->weights, &context);
    free(buffers);
    int32_t code = 0;
    if (t->status_offset >= 0) memcpy(&code, (unsigned char *)arena + t->status_offset, sizeof code);
    pthread_mutex_lock(&model->lock);
    if (model->num_free < MAX_FREE_ARENAS) {
        model->free_arenas[model->num_free++] = arena;
        arena = NULL;
    }
    pthread_mutex_unlock(&model->lock);
    free(arena);
    if (code != 0) {
        if (code > 0 && (size_t)code <= t->num_error_sites)
            return fail(DLC_ERROR_RUN, "%s", t->error_sites[code - 1]);
        return fail(DLC_ERROR_RUN, "a run-time check failed with the unknown code %d", code);
    }
    return DLC_OK;
}
