// The emulated CUDA driver (`libcuda.so`): the `cu*` functions cudarc calls, with the real error codes, over
// host memory. Device addresses are host addresses of allocations the driver tracks; fresh allocations are
// filled with 0xff bytes (NaN in every float type), so a read of memory never written shows. Modules are the
// PTX NVRTC produced: the driver reads its `.version`, `.target`, entries, `.maxntid` and static shared
// memory, and binds each entry to the kernel of that name compiled for the CPU. Work runs at once, in call
// order, so every stream is trivially ordered. Settings (environment):
//   TGEMU_ARCH=sm_80|sm_90 (default sm_90)  an A100 or an H100
//   TGEMU_DEVICES=N (default 2, at most 8)    how many such GPUs (each with its own memory and context)
//   TGEMU_MEMORY=BYTES (default 4 GiB)        each device's memory; allocations past it fail as out of memory
//   TGEMU_SEED=N                              seeds the per-launch thread order (default 1)
//   TGEMU_COVERAGE=FILE                       appends "family kernel launches seconds" per kernel at exit
//   TGEMU_ABORT=1                             aborts at the first kernel failure (to stop there under gdb)
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;

namespace {

enum : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_UNKNOWN = 999,
};

struct ErrorText {
    int code;
    const char* name;
    const char* text;
};
const ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_UNSUPPORTED_PTX_VERSION, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain."},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

struct Arch {
    const char* name;
    int major, minor, sms, optin_shared, shared_per_sm;
};
const Arch kA100{"NVIDIA A100-SXM4-80GB (emulated)", 8, 0, 108, 166912, 167936};
const Arch kH100{"NVIDIA H100 80GB HBM3 (emulated)", 9, 0, 132, 232448, 233472};

struct Function {
    std::string name;
    tgemu::Kernel* kernel = nullptr;
    unsigned max_threads = 1024;  // .maxntid, or the device limit
    int static_shared = 0;
    int max_dynamic_shared = 48 * 1024;
};

struct Module {
    std::vector<std::unique_ptr<Function>> functions;
};

struct Stream {
    int id;
};
struct Event {
    double at = 0;
};
struct Context {
    int device;
    int refs = 0;
    size_t used = 0;  // bytes allocated on this device
};

struct Allocation {
    size_t bytes;
    int device;
};

constexpr int kMaxDevices = 8;

struct State {
    std::recursive_mutex mutex;
    bool initialized = false;
    const Arch* arch = &kH100;
    int devices = 2;
    size_t memory = size_t{4} << 30;
    uint64_t seed = 1;
    uint64_t launches = 0;
    CUresult sticky = CUDA_SUCCESS;  // a failed kernel leaves the context unusable, as on hardware
    std::map<uint64_t, Allocation> allocations;
    Context primaries[kMaxDevices] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};
};

State& state() {
    static State* s = new State;  // never destroyed: the driver outlives every static of its users
    return *s;
}

thread_local Context* current_context = nullptr;
// The device whose kernel this thread runs (-1 outside launches): a kernel touches its own device's memory only.
thread_local int launch_device = -1;

size_t parse_size(const char* text, size_t fallback) {
    if (text == nullptr || *text == 0) return fallback;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(text, &end, 10);
    return end != text ? static_cast<size_t>(v) : fallback;
}

// The allocation that holds [address, address + bytes), or end() when none does.
std::map<uint64_t, Allocation>::const_iterator allocation_of(const State& s, uint64_t address, size_t bytes) {
    auto it = s.allocations.upper_bound(address);
    if (it == s.allocations.begin()) return s.allocations.end();
    --it;
    const bool inside = address >= it->first && address + bytes <= it->first + it->second.bytes;
    return inside ? it : s.allocations.end();
}

bool inside_allocation(const State& s, uint64_t address, size_t bytes) {
    return allocation_of(s, address, bytes) != s.allocations.end();
}

bool valid_device(CUdevice device) { return device >= 0 && device < state().devices; }

CUresult check_range(State& s, CUdeviceptr address, size_t bytes) {
    if (bytes == 0) return CUDA_SUCCESS;
    return inside_allocation(s, address, bytes) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

double seconds_now() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void write_coverage() {
    const char* path = std::getenv("TGEMU_COVERAGE");
    if (path == nullptr) return;
    FILE* f = std::fopen(path, "a");
    if (f == nullptr) return;
    std::string lines;
    for (const tgemu::Kernel* k : tgemu::registry()) {
        char line[256];
        std::snprintf(line, sizeof line, "%s %s %u %.3f\n", k->family, k->name, k->launches, k->seconds);
        lines += line;
    }
    std::fwrite(lines.data(), 1, lines.size(), f);
    std::fclose(f);
}

// The static shared bytes an entry uses: the module-level `.shared` arrays its body names.
int static_shared_of(const std::string& ptx, size_t body_begin, size_t body_end) {
    int total = 0;
    size_t at = 0;
    while ((at = ptx.find(".shared ", at)) != std::string::npos) {
        const size_t line_end = ptx.find('\n', at);
        const std::string line = ptx.substr(at, line_end - at);
        at = line_end;
        if (line.find(".extern") != std::string::npos) continue;
        const size_t open = line.find('['), close = line.find(']');
        if (open == std::string::npos || close == std::string::npos) continue;
        size_t name_begin = line.rfind(' ', open) + 1;
        const std::string name = line.substr(name_begin, open - name_begin);
        const int count = std::atoi(line.substr(open + 1, close - open - 1).c_str());
        int width = 1;
        for (const char* t : {".b16", ".u16", ".s16", ".f16"}) {
            if (line.find(t) != std::string::npos) width = 2;
        }
        for (const char* t : {".b32", ".u32", ".s32", ".f32"}) {
            if (line.find(t) != std::string::npos) width = 4;
        }
        for (const char* t : {".b64", ".u64", ".s64", ".f64"}) {
            if (line.find(t) != std::string::npos) width = 8;
        }
        const size_t use = ptx.find(name, body_begin);
        if (use != std::string::npos && use < body_end) total += count * width;
    }
    return total;
}

}  // namespace

bool tgemu::device_memory_contains(uintptr_t address, size_t bytes) {
    const State& s = state();
    auto it = allocation_of(s, address, bytes);
    return it != s.allocations.end() && (launch_device < 0 || it->second.device == launch_device);
}

extern "C" {

__attribute__((visibility("default"))) CUresult cuGetErrorString(CUresult error, const char** text) {
    for (const ErrorText& e : kErrors) {
        if (e.code == error) {
            *text = e.text;
            return CUDA_SUCCESS;
        }
    }
    *text = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
}

__attribute__((visibility("default"))) CUresult cuGetErrorName(CUresult error, const char** name) {
    for (const ErrorText& e : kErrors) {
        if (e.code == error) {
            *name = e.name;
            return CUDA_SUCCESS;
        }
    }
    *name = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
}

__attribute__((visibility("default"))) CUresult cuInit(unsigned flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (s.initialized) return CUDA_SUCCESS;
    const char* arch = std::getenv("TGEMU_ARCH");
    if (arch != nullptr && std::strcmp(arch, "sm_80") == 0) {
        s.arch = &kA100;
    } else if (arch != nullptr && std::strcmp(arch, "sm_90") != 0) {
        std::fprintf(stderr, "tgemu: TGEMU_ARCH=%s is neither sm_80 nor sm_90\n", arch);
        return CUDA_ERROR_NO_DEVICE;
    }
    s.memory = parse_size(std::getenv("TGEMU_MEMORY"), s.memory);
    s.devices = static_cast<int>(parse_size(std::getenv("TGEMU_DEVICES"), 2));
    if (s.devices < 1 || s.devices > kMaxDevices) {
        std::fprintf(stderr, "tgemu: TGEMU_DEVICES=%d is not between 1 and %d\n", s.devices, kMaxDevices);
        return CUDA_ERROR_NO_DEVICE;
    }
    s.seed = parse_size(std::getenv("TGEMU_SEED"), 1);
    std::atexit(write_coverage);
    s.initialized = true;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDriverGetVersion(int* version) {
    *version = 13000;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetCount(int* count) {
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    *count = state().devices;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!valid_device(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetName(char* name, int len, CUdevice device) {
    if (!valid_device(device)) return CUDA_ERROR_INVALID_DEVICE;
    std::snprintf(name, static_cast<size_t>(len), "%s", state().arch->name);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) {
    if (!valid_device(device)) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = state().memory;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice device) {
    if (!valid_device(device)) return CUDA_ERROR_INVALID_DEVICE;
    std::memset(uuid, 0, 16);
    std::memcpy(uuid, "tgemu", 5);
    uuid[15] = static_cast<unsigned char>(device);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice device) {
    return cuDeviceGetUuid(uuid, device);
}

__attribute__((visibility("default"))) CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice device) {
    if (!valid_device(device)) return CUDA_ERROR_INVALID_DEVICE;
    const Arch& a = *state().arch;
    switch (attribute) {
        case 1: *value = 1024; break;                    // MAX_THREADS_PER_BLOCK
        case 2: case 3: *value = 1024; break;            // MAX_BLOCK_DIM_X, Y
        case 4: *value = 64; break;                      // MAX_BLOCK_DIM_Z
        case 5: *value = 2147483647; break;              // MAX_GRID_DIM_X
        case 6: case 7: *value = 65535; break;           // MAX_GRID_DIM_Y, Z
        case 8: *value = 48 * 1024; break;               // MAX_SHARED_MEMORY_PER_BLOCK
        case 9: *value = 64 * 1024; break;               // TOTAL_CONSTANT_MEMORY
        case 10: *value = 32; break;                     // WARP_SIZE
        case 12: *value = 65536; break;                  // MAX_REGISTERS_PER_BLOCK
        case 13: *value = 1755000; break;                // CLOCK_RATE (kHz)
        case 16: *value = a.sms; break;                  // MULTIPROCESSOR_COUNT
        case 39: *value = 2048; break;                   // MAX_THREADS_PER_MULTIPROCESSOR
        case 75: *value = a.major; break;                // COMPUTE_CAPABILITY_MAJOR
        case 76: *value = a.minor; break;                // COMPUTE_CAPABILITY_MINOR
        case 81: *value = a.shared_per_sm; break;        // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        case 82: *value = 65536; break;                  // MAX_REGISTERS_PER_MULTIPROCESSOR
        case 97: *value = a.optin_shared; break;         // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        case 115: *value = 0; break;                     // MEMORY_POOLS_SUPPORTED: plain cuMemAlloc
        default: *value = 0; break;
    }
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDevicePrimaryCtxRetain(void** context, CUdevice device) {
    State& s = state();
    if (!s.initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!valid_device(device)) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    s.primaries[device].refs += 1;
    *context = &s.primaries[device];
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
    State& s = state();
    if (!valid_device(device)) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (s.primaries[device].refs > 0) s.primaries[device].refs -= 1;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuCtxSetCurrent(void* context) {
    const Context* first = state().primaries;
    if (context != nullptr && (context < first || context >= first + state().devices)) {
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    current_context = static_cast<Context*>(context);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuCtxGetDevice(CUdevice* device) {
    if (current_context == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
    *device = current_context->device;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuCtxGetCurrent(void** context) {
    *context = current_context;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuCtxSynchronize() { return state().sticky; }

__attribute__((visibility("default"))) CUresult cuStreamCreate(void** stream, unsigned) {
    static int next = 1;
    *stream = new Stream{next++};
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuStreamDestroy_v2(void* stream) {
    delete static_cast<Stream*>(stream);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuStreamSynchronize(void*) { return state().sticky; }

__attribute__((visibility("default"))) CUresult cuStreamWaitEvent(void*, void*, unsigned) { return state().sticky; }

__attribute__((visibility("default"))) CUresult cuEventCreate(void** event, unsigned) {
    *event = new Event;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuEventDestroy_v2(void* event) {
    delete static_cast<Event*>(event);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuEventRecord(void* event, void*) {
    static_cast<Event*>(event)->at = seconds_now() * 1e3;
    return state().sticky;
}

__attribute__((visibility("default"))) CUresult cuEventSynchronize(void*) { return state().sticky; }
__attribute__((visibility("default"))) CUresult cuEventQuery(void*) { return state().sticky; }

__attribute__((visibility("default"))) CUresult cuEventElapsedTime(float* ms, void* start, void* end) {
    *ms = static_cast<float>(static_cast<Event*>(end)->at - static_cast<Event*>(start)->at);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuEventElapsedTime_v2(float* ms, void* start, void* end) {
    return cuEventElapsedTime(ms, start, end);
}

__attribute__((visibility("default"))) CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (current_context == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
    *free_bytes = s.memory - current_context->used;
    *total = s.memory;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemAlloc_v2(CUdeviceptr* address, size_t bytes) {
    State& s = state();
    if (!s.initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (current_context == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    Context& device = *current_context;
    const size_t rounded = (bytes + 255) / 256 * 256;
    if (rounded > s.memory - device.used) return CUDA_ERROR_OUT_OF_MEMORY;
    void* p = std::aligned_alloc(256, rounded);
    if (p == nullptr) return CUDA_ERROR_OUT_OF_MEMORY;
    std::memset(p, 0xff, rounded);
#if defined(__SANITIZE_ADDRESS__)
    // The rounding past the requested size is no one's: AddressSanitizer reports a touch.
    __asan_poison_memory_region(static_cast<char*>(p) + bytes, rounded - bytes);
#endif
    device.used += rounded;
    s.allocations[reinterpret_cast<uint64_t>(p)] = Allocation{bytes, device.device};
    *address = reinterpret_cast<CUdeviceptr>(p);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemFree_v2(CUdeviceptr address) {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    auto it = s.allocations.find(address);
    if (it == s.allocations.end()) return CUDA_ERROR_INVALID_VALUE;
    const size_t rounded = (it->second.bytes + 255) / 256 * 256;
    s.primaries[it->second.device].used -= rounded;
    s.allocations.erase(it);
#if defined(__SANITIZE_ADDRESS__)
    __asan_unpoison_memory_region(reinterpret_cast<void*>(address), rounded);
#endif
    std::free(reinterpret_cast<void*>(address));
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemGetAddressRange_v2(CUdeviceptr* base, size_t* bytes,
                                                                        CUdeviceptr address) {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    auto it = allocation_of(s, address, 1);
    if (it == s.allocations.end()) return CUDA_ERROR_NOT_FOUND;
    if (base != nullptr) *base = it->first;
    if (bytes != nullptr) *bytes = it->second.bytes;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuPointerGetAttribute(void* data, int attribute, CUdeviceptr address) {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    auto it = allocation_of(s, address, 1);
    if (it == s.allocations.end()) return CUDA_ERROR_INVALID_VALUE;
    switch (attribute) {
        case 2: *static_cast<int*>(data) = 2; break;                   // MEMORY_TYPE: CU_MEMORYTYPE_DEVICE
        case 9: *static_cast<int*>(data) = it->second.device; break;  // DEVICE_ORDINAL
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (s.sticky != CUDA_SUCCESS) return s.sticky;
    if (CUresult r = check_range(s, dst, bytes)) return r;
    std::memcpy(reinterpret_cast<void*>(dst), src, bytes);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes,
                                                                     void*) {
    return cuMemcpyHtoD_v2(dst, src, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (s.sticky != CUDA_SUCCESS) return s.sticky;
    if (CUresult r = check_range(s, src, bytes)) return r;
    std::memcpy(dst, reinterpret_cast<const void*>(src), bytes);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, void*) {
    return cuMemcpyDtoH_v2(dst, src, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (s.sticky != CUDA_SUCCESS) return s.sticky;
    if (CUresult r = check_range(s, src, bytes)) return r;
    if (CUresult r = check_range(s, dst, bytes)) return r;
    std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes,
                                                                     void*) {
    return cuMemcpyDtoD_v2(dst, src, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t count) {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (s.sticky != CUDA_SUCCESS) return s.sticky;
    if (CUresult r = check_range(s, dst, count)) return r;
    std::memset(reinterpret_cast<void*>(dst), value, count);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t count,
                                                                void*) {
    return cuMemsetD8_v2(dst, value, count);
}

__attribute__((visibility("default"))) CUresult cuModuleLoadData(void** module, const void* image) {
    State& s = state();
    if (!s.initialized) return CUDA_ERROR_NOT_INITIALIZED;
    const char* text = static_cast<const char*>(image);
    if (std::memcmp(text, "\x7f" "ELF", 4) == 0) {
        std::fprintf(stderr, "tgemu: the emulated device loads PTX only, not cubins\n");
        return CUDA_ERROR_INVALID_IMAGE;
    }
    const std::string ptx(text);
    // NVRTC 13.0 writes PTX ISA 9.0, the newest a CUDA 13.0 driver (580) loads.
    const size_t version = ptx.find(".version ");
    if (version == std::string::npos) return CUDA_ERROR_INVALID_PTX;
    const int major = std::atoi(ptx.c_str() + version + 9);
    const int minor = std::atoi(ptx.c_str() + ptx.find('.', version + 9) + 1);
    if (major > 9 || (major == 9 && minor > 0)) {
        std::fprintf(stderr, "tgemu: PTX ISA %d.%d is newer than a CUDA 13.0 driver loads (9.0)\n", major, minor);
        return CUDA_ERROR_UNSUPPORTED_PTX_VERSION;
    }
    const size_t target = ptx.find(".target sm_");
    if (target == std::string::npos) return CUDA_ERROR_INVALID_PTX;
    const int sm = std::atoi(ptx.c_str() + target + 11);
    if (sm > s.arch->major * 10 + s.arch->minor) {
        std::fprintf(stderr, "tgemu: PTX for sm_%d does not run on an sm_%d%d device\n", sm, s.arch->major,
                     s.arch->minor);
        return CUDA_ERROR_NO_BINARY_FOR_GPU;
    }
    auto m = std::make_unique<Module>();
    size_t at = 0;
    while ((at = ptx.find(".entry ", at)) != std::string::npos) {
        const size_t name_begin = at + 7;
        const size_t name_end = ptx.find_first_of("( \n", name_begin);
        auto f = std::make_unique<Function>();
        f->name = ptx.substr(name_begin, name_end - name_begin);
        const size_t body = ptx.find('{', name_end);
        const size_t next = ptx.find(".entry ", name_end);
        const size_t maxntid = ptx.find(".maxntid", name_end);
        if (maxntid != std::string::npos && maxntid < body) {
            unsigned x = 1, y = 1, z = 1;
            std::sscanf(ptx.c_str() + maxntid + 8, " %u, %u, %u", &x, &y, &z);
            f->max_threads = x * y * z;
        }
        f->static_shared = static_shared_of(ptx, body, next == std::string::npos ? ptx.size() : next);
        f->max_dynamic_shared = 48 * 1024 - f->static_shared;
        m->functions.push_back(std::move(f));
        at = name_end;
    }
    *module = m.release();
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuModuleUnload(void* module) {
    delete static_cast<Module*>(module);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuModuleGetFunction(void** function, void* module, const char* name) {
    auto* m = static_cast<Module*>(module);
    if (m == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    for (auto& f : m->functions) {
        if (f->name != name) continue;
        if (f->kernel == nullptr) {
            for (tgemu::Kernel* k : tgemu::registry()) {
                if (f->name == k->name) f->kernel = k;
            }
        }
        if (f->kernel == nullptr) {
            std::fprintf(stderr, "tgemu: kernel %s is in the PTX but was not compiled for the emulated device\n", name);
            return CUDA_ERROR_NOT_FOUND;
        }
        *function = f.get();
        return CUDA_SUCCESS;
    }
    return CUDA_ERROR_NOT_FOUND;
}

__attribute__((visibility("default"))) CUresult cuFuncGetAttribute(int* value, int attribute, void* function) {
    auto* f = static_cast<Function*>(function);
    if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    switch (attribute) {
        case 0: *value = static_cast<int>(f->max_threads); break;  // MAX_THREADS_PER_BLOCK
        case 1: *value = f->static_shared; break;                  // SHARED_SIZE_BYTES
        case 2: case 3: *value = 0; break;                         // CONST_SIZE_BYTES, LOCAL_SIZE_BYTES
        case 4: *value = 64; break;                                // NUM_REGS (ptxas decides; not emulated)
        case 5: case 6: *value = state().arch->major * 10 + state().arch->minor; break;
        case 8: *value = f->max_dynamic_shared; break;             // MAX_DYNAMIC_SHARED_SIZE_BYTES
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuFuncSetAttribute(void* function, int attribute, int value) {
    auto* f = static_cast<Function*>(function);
    if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (attribute == 8) {  // MAX_DYNAMIC_SHARED_SIZE_BYTES
        if (value < 0 || value > state().arch->optin_shared - f->static_shared) return CUDA_ERROR_INVALID_VALUE;
        f->max_dynamic_shared = value;
        return CUDA_SUCCESS;
    }
    if (attribute == 9) return CUDA_SUCCESS;  // PREFERRED_SHARED_MEMORY_CARVEOUT: a hint
    return CUDA_ERROR_INVALID_VALUE;
}

__attribute__((visibility("default"))) CUresult cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz,
                                                               unsigned bx, unsigned by, unsigned bz,
                                                               unsigned shared_bytes, void*, void** params,
                                                               void** extra) {
    State& s = state();
    auto* f = static_cast<Function*>(function);
    if (f == nullptr || f->kernel == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (extra != nullptr) return CUDA_ERROR_NOT_SUPPORTED;
    if (current_context == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) return CUDA_ERROR_INVALID_VALUE;
    if (gx > 2147483647u || gy > 65535 || gz > 65535 || bx > 1024 || by > 1024 || bz > 64) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    const unsigned long long threads = 1ull * bx * by * bz;
    if (threads > 1024) return CUDA_ERROR_INVALID_VALUE;
    if (threads > f->max_threads) return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    if (static_cast<int>(shared_bytes) > f->max_dynamic_shared) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (s.sticky != CUDA_SUCCESS) return s.sticky;
    f->kernel->launches += 1;
    tgemu::LaunchSpec spec{f->kernel, uint3{gx, gy, gz}, uint3{bx, by, bz}, shared_bytes, params,
                           s.seed * 0x9e3779b97f4a7c15ull + ++s.launches};
    const double started = seconds_now();
    launch_device = current_context->device;
    const std::string failure = tgemu::run_grid(spec);
    launch_device = -1;
    f->kernel->seconds += seconds_now() - started;
    if (!failure.empty()) {
        std::fprintf(stderr, "tgemu: %s\n", failure.c_str());
        s.sticky = CUDA_ERROR_LAUNCH_FAILED;
        return s.sticky;
    }
    return CUDA_SUCCESS;
}

}  // extern "C"

// NVRTC opens the driver when one is loaded and asks for its private tables: there are none here, which NVRTC
// takes as a driver without them.
extern "C" __attribute__((visibility("default"))) CUresult cuGetExportTable(const void** table, const void*) {
    *table = nullptr;
    return CUDA_ERROR_NOT_SUPPORTED;
}
