/* A stand-in for the NVIDIA driver's libcuda.so.1: the entry points the
 * cuda:backend=driver check calls, with the real signatures and the real
 * CUresult numbers (cuda.h), behaving like the driver where the check can
 * tell: calls before cuInit fail with CUDA_ERROR_NOT_INITIALIZED, memory
 * calls without a current context with CUDA_ERROR_INVALID_CONTEXT, cuInit
 * with no device with CUDA_ERROR_NO_DEVICE, a module that is not PTX with
 * CUDA_ERROR_INVALID_PTX, an unknown kernel name with CUDA_ERROR_NOT_FOUND.
 * "Device memory" is host memory; the "kernel" runs on the host when
 * cuLaunchKernel is called.
 *
 * Environment:
 *   FAKE_CUDA_DEVICES=N        visible devices (default 1)
 *   FAKE_CUDA_FAIL=CALL:CODE[@DEV][,...]  CALL returns CODE (on device DEV only)
 *   FAKE_CUDA_WRONG=1          the kernel computes in*3+2 instead of in*3+1
 *   FAKE_CUDA_HANG=1           cuCtxSynchronize never returns
 *   FAKE_CUDA_LOG=PATH         append each call's name (and device) to PATH
 *   FAKE_CUDA_MIG=1            the devices are MIG slices: cuDeviceGetUuid_v2 differs from v1
 *
 * Build: gcc -shared -fPIC -o libcuda.so.1 libcuda.c; with -DFAKE_OLD_DRIVER it
 * exports what a driver before CUDA 11 does (no cuDeviceGetUuid_v2, no
 * cuDevicePrimaryCtxRelease_v2); with -DFAKE_NO_LAUNCH it lacks cuLaunchKernel.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;

#define MAX_DEVICES 8
#ifdef FAKE_OLD_DRIVER
#define FAKE_OLD_NAME(name) name
#else
#define FAKE_OLD_NAME(name) name "_v2"
#endif
static int initialised;
static int current = -1; /* device of the current context, -1: none */
static int stack[16];
static int depth;
static char contexts[MAX_DEVICES]; /* their addresses are the CUcontext handles */
static int retained[MAX_DEVICES];
static char function_handle;

static int devices(void) {
    const char *n = getenv("FAKE_CUDA_DEVICES");
    int count = n ? atoi(n) : 1;
    return count < 0 ? 0 : (count > MAX_DEVICES ? MAX_DEVICES : count);
}

static void note(const char *call, int device) {
    const char *path = getenv("FAKE_CUDA_LOG");
    if (!path) return;
    FILE *fp = fopen(path, "a");
    if (!fp) return;
    fprintf(fp, "%s %d\n", call, device);
    fclose(fp);
}

/* The code FAKE_CUDA_FAIL sets for CALL on DEVICE, else 0. */
static CUresult planned(const char *call, int device) {
    const char *spec = getenv("FAKE_CUDA_FAIL");
    note(call, device);
    if (!spec) return 0;
    char copy[512];
    strncpy(copy, spec, sizeof copy - 1);
    copy[sizeof copy - 1] = 0;
    for (char *item = strtok(copy, ","); item; item = strtok(NULL, ",")) {
        char *colon = strchr(item, ':');
        if (!colon) continue;
        *colon = 0;
        char *at = strchr(colon + 1, '@');
        int only = at ? atoi(at + 1) : -1;
        if (strcmp(item, call) == 0 && (only < 0 || only == device)) return atoi(colon + 1);
    }
    return 0;
}

#define ENTER(call, device)                        \
    do {                                           \
        CUresult planned_ = planned(call, device); \
        if (planned_) return planned_;             \
    } while (0)
#define NEED_INIT() \
    if (!initialised) return 3 /* CUDA_ERROR_NOT_INITIALIZED */
#define NEED_CONTEXT() \
    if (current < 0) return 201 /* CUDA_ERROR_INVALID_CONTEXT */
#define NEED_DEVICE(d) \
    if ((d) < 0 || (d) >= devices()) return 101 /* CUDA_ERROR_INVALID_DEVICE */

CUresult cuInit(unsigned int flags) {
    ENTER("cuInit", -1);
    if (flags != 0) return 1; /* CUDA_ERROR_INVALID_VALUE */
    if (devices() == 0) return 100; /* CUDA_ERROR_NO_DEVICE, as the driver says it */
    initialised = 1;
    return 0;
}

CUresult cuDriverGetVersion(int *version) {
    ENTER("cuDriverGetVersion", -1);
    if (!version) return 1;
    *version = 12080;
    return 0;
}

CUresult cuDeviceGetCount(int *count) {
    ENTER("cuDeviceGetCount", -1);
    NEED_INIT();
    if (!count) return 1;
    *count = devices();
    return 0;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    ENTER("cuDeviceGet", ordinal);
    NEED_INIT();
    NEED_DEVICE(ordinal);
    *device = ordinal;
    return 0;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice device) {
    ENTER("cuDeviceGetName", device);
    NEED_INIT();
    NEED_DEVICE(device);
    if (!name || len <= 0) return 1;
    snprintf(name, (size_t)len, "Fake GPU %d", device);
    return 0;
}

#ifndef FAKE_OLD_DRIVER
CUresult cuDeviceGetUuid_v2(unsigned char *uuid, CUdevice device) {
    ENTER("cuDeviceGetUuid_v2", device);
    NEED_INIT();
    NEED_DEVICE(device);
    for (int i = 0; i < 16; i++) uuid[i] = (unsigned char)(0x10 * device + i);
    if (getenv("FAKE_CUDA_MIG")) uuid[15] ^= 0xff;
    return 0;
}
#endif

/* v1: the GPU's UUID; v2 differs from it only for a MIG slice (FAKE_CUDA_MIG=1). */
CUresult cuDeviceGetUuid(unsigned char *uuid, CUdevice device) {
    ENTER("cuDeviceGetUuid", device);
    NEED_INIT();
    NEED_DEVICE(device);
    for (int i = 0; i < 16; i++) uuid[i] = (unsigned char)(0x10 * device + i);
    return 0;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *context, CUdevice device) {
    ENTER("cuDevicePrimaryCtxRetain", device);
    NEED_INIT();
    NEED_DEVICE(device);
    retained[device]++;
    *context = &contexts[device];
    return 0;
}

#ifdef FAKE_OLD_DRIVER
/* A driver before CUDA 11 exports only the first version of each. */
#define cuDevicePrimaryCtxRelease_v2 cuDevicePrimaryCtxRelease
#endif
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
    ENTER(FAKE_OLD_NAME("cuDevicePrimaryCtxRelease"), device);
    NEED_INIT();
    NEED_DEVICE(device);
    if (retained[device] <= 0) return 201;
    retained[device]--;
    return 0;
}

static int device_of(CUcontext context) {
    char *c = (char *)context;
    if (c < contexts || c >= contexts + MAX_DEVICES) return -1;
    return (int)(c - contexts);
}

CUresult cuCtxPushCurrent_v2(CUcontext context) {
    int device = device_of(context);
    ENTER("cuCtxPushCurrent_v2", device);
    NEED_INIT();
    if (device < 0 || depth >= 16) return 201;
    stack[depth++] = current;
    current = device;
    return 0;
}

CUresult cuCtxPopCurrent_v2(CUcontext *context) {
    ENTER("cuCtxPopCurrent_v2", current);
    NEED_INIT();
    NEED_CONTEXT();
    if (context) *context = &contexts[current];
    current = depth > 0 ? stack[--depth] : -1;
    return 0;
}

CUresult cuCtxSetCurrent(CUcontext context) {
    ENTER("cuCtxSetCurrent", device_of(context));
    NEED_INIT();
    current = context ? device_of(context) : -1;
    return 0;
}

CUresult cuMemAlloc_v2(CUdeviceptr *pointer, size_t size) {
    ENTER("cuMemAlloc_v2", current);
    NEED_INIT();
    NEED_CONTEXT();
    if (!pointer || size == 0) return 1;
    void *memory = calloc(1, size);
    if (!memory) return 2;
    *pointer = (CUdeviceptr)(uintptr_t)memory;
    return 0;
}

/* An 80 GiB GPU with 1 GiB in use by others and a primary context's 300 MiB. */
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    ENTER("cuMemGetInfo_v2", current);
    NEED_INIT();
    NEED_CONTEXT();
    if (!free_bytes || !total_bytes) return 1;
    *total_bytes = (size_t)80 << 30;
    *free_bytes = *total_bytes - ((size_t)1 << 30) - ((size_t)300 << 20);
    return 0;
}

CUresult cuMemFree_v2(CUdeviceptr pointer) {
    ENTER("cuMemFree_v2", current);
    NEED_INIT();
    NEED_CONTEXT();
    free((void *)(uintptr_t)pointer);
    return 0;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t size) {
    ENTER("cuMemcpyHtoD_v2", current);
    NEED_INIT();
    NEED_CONTEXT();
    memcpy((void *)(uintptr_t)dst, src, size);
    return 0;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t size) {
    ENTER("cuMemcpyDtoH_v2", current);
    NEED_INIT();
    NEED_CONTEXT();
    memcpy(dst, (const void *)(uintptr_t)src, size);
    return 0;
}

static char module_handle;

CUresult cuModuleLoadData(CUmodule *module, const void *image) {
    ENTER("cuModuleLoadData", current);
    NEED_INIT();
    NEED_CONTEXT();
    const char *text = (const char *)image;
    /* The driver takes a NUL-terminated PTX text or a cubin; this fake, PTX only. */
    if (!text || !strstr(text, ".version") || !strstr(text, ".target") ||
        !strstr(text, ".entry"))
        return 218; /* CUDA_ERROR_INVALID_PTX */
    *module = &module_handle;
    return 0;
}

CUresult cuModuleGetFunction(CUfunction *function, CUmodule module, const char *name) {
    ENTER("cuModuleGetFunction", current);
    NEED_INIT();
    NEED_CONTEXT();
    if (module != &module_handle) return 400; /* CUDA_ERROR_INVALID_HANDLE */
    if (!name || strcmp(name, "torchprobe_probe") != 0) return 500; /* NOT_FOUND */
    *function = &function_handle;
    return 0;
}

CUresult cuModuleUnload(CUmodule module) {
    ENTER("cuModuleUnload", current);
    NEED_INIT();
    NEED_CONTEXT();
    return module == &module_handle ? 0 : 400;
}

#ifndef FAKE_NO_LAUNCH
/* The probe's kernel: out[i] = in[i] * 3 + 1 for i < n (params: out, in, n). */
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared, CUstream stream,
                        void **params, void **extra) {
    (void)stream;
    (void)extra;
    ENTER("cuLaunchKernel", current);
    NEED_INIT();
    NEED_CONTEXT();
    if (f != &function_handle) return 400;
    if (!params || gx * gy * gz == 0 || bx * by * bz == 0 || bx > 1024 || shared > 49152)
        return 1;
    uint32_t *out = (uint32_t *)(uintptr_t)*(CUdeviceptr *)params[0];
    const uint32_t *in = (const uint32_t *)(uintptr_t)*(CUdeviceptr *)params[1];
    uint32_t n = *(uint32_t *)params[2];
    uint32_t threads = gx * bx;
    uint32_t add = getenv("FAKE_CUDA_WRONG") ? 2u : 1u;
    for (uint32_t i = 0; i < n && i < threads; i++) out[i] = in[i] * 3u + add;
    return 0;
}
#endif

CUresult cuCtxSynchronize(void) {
    ENTER("cuCtxSynchronize", current);
    NEED_INIT();
    NEED_CONTEXT();
    if (getenv("FAKE_CUDA_HANG"))
        for (;;) pause(); /* a kernel that never finishes */
    return 0;
}

static const struct {
    int code;
    const char *name, *text;
} known[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
    {12345, "CUDA_ERROR_FROM_THE_FUTURE", "a code only a newer driver knows"},
};

/* Like the driver: CUDA_ERROR_INVALID_VALUE for a code it does not know. */
static CUresult lookup(int code, const char **out, int want_name) {
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (known[i].code == code) {
            *out = want_name ? known[i].name : known[i].text;
            return 0;
        }
    *out = NULL;
    return 1;
}

CUresult cuGetErrorName(CUresult code, const char **name) { return lookup(code, name, 1); }
CUresult cuGetErrorString(CUresult code, const char **text) { return lookup(code, text, 0); }
