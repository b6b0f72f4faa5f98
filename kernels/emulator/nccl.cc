// The emulated NCCL (`libnccl.so`): the communicator calls cudarc makes, for ranks that are threads of one
// process, each on its own emulated device (as NCCL requires: two ranks of a communicator on one GPU is an
// error). A collective is a rendezvous: every rank posts its buffers and waits for the others; then each
// rank computes its own result from all ranks' inputs, waits until every rank has read them, and writes its
// output (so in-place collectives are safe). Reductions run in rank order, in the element type. Work runs at
// once, as the emulated driver's kernels do, so ordering on the stream holds trivially.
//
// Checks real NCCL does not make: ranks that call different collectives, counts, types, operations or roots
// are an error naming both ranks (on hardware: a hang or garbage); a rank that waits longer than
// TGEMU_NCCL_TIMEOUT seconds (default 300) for the others fails instead of hanging. Buffers must lie inside
// allocations of the rank's own device. Every failure prints "tgemu nccl: ..." and is kept for
// ncclGetLastError. At exit, with TGEMU_COVERAGE=FILE, appends "nccl COLLECTIVE calls seconds" per collective.
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <unistd.h>

extern "C" {
int cuCtxGetDevice(int* device);
int cuPointerGetAttribute(void* data, int attribute, unsigned long long address);
int cuMemGetAddressRange_v2(unsigned long long* base, size_t* bytes, unsigned long long address);
}

namespace {

enum Result : int {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
};

enum DataType : int { Int8, Uint8, Int32, Uint32, Int64, Uint64, Float16, Float32, Float64, Bfloat16 };
enum RedOp : int { Sum, Prod, Max, Min, Avg };
// The collectives the crate calls (ncclReduce, send/recv and groups are not emulated).
enum Collective : int { AllReduce, Broadcast, ReduceScatter, AllGather, kCollectives };
const char* const kCollectiveNames[kCollectives] = {"all_reduce", "broadcast", "reduce_scatter", "all_gather"};

// One rank's part in one collective.
struct Call {
    Collective kind;
    const void* send;
    void* recv;
    size_t count;  // elements: of each rank's input (reduce_scatter: of each rank's output)
    int type;
    int op;
    int root;
};

// The ranks sharing one unique id.
struct Clique {
    explicit Clique(int size) : size(size), devices(size, -1), calls(size) {}
    const int size;
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<int> devices;  // each rank's device, -1 until it joins
    int joined = 0;
    std::string failure;  // once set, every rank's next call fails with it
    // The collective in progress: ranks arrive, compute, then depart.
    std::vector<Call> calls;
    uint64_t generation = 0;
    int arrived = 0;
    int departed = 0;
    bool ready = false;
};

struct Comm {
    std::shared_ptr<Clique> clique;
    int rank;
    int device;
};

struct Coverage {
    std::mutex mutex;
    unsigned long calls[kCollectives] = {};
    double seconds[kCollectives] = {};
};

std::mutex registry_mutex;
std::map<std::string, std::weak_ptr<Clique>>& registry() {
    static auto* r = new std::map<std::string, std::weak_ptr<Clique>>;
    return *r;
}

Coverage& coverage() {
    static auto* c = new Coverage;
    return *c;
}

thread_local std::string last_error;

Result fail(Result code, const char* format, ...) {
    char text[512];
    va_list args;
    va_start(args, format);
    std::vsnprintf(text, sizeof text, format, args);
    va_end(args);
    last_error = text;
    std::fprintf(stderr, "tgemu nccl: %s\n", text);
    return code;
}

std::chrono::seconds timeout() {
    const char* text = std::getenv("TGEMU_NCCL_TIMEOUT");
    const long v = text != nullptr ? std::atol(text) : 0;
    return std::chrono::seconds(v > 0 ? v : 300);
}

size_t type_size(int type) {
    switch (type) {
        case Int8: case Uint8: return 1;
        case Float16: case Bfloat16: return 2;
        case Int32: case Uint32: case Float32: return 4;
        case Int64: case Uint64: case Float64: return 8;
        default: return 0;
    }
}

void write_coverage() {
    const char* path = std::getenv("TGEMU_COVERAGE");
    if (path == nullptr) return;
    FILE* f = std::fopen(path, "a");
    if (f == nullptr) return;
    Coverage& c = coverage();
    for (int k = 0; k < kCollectives; ++k) {
        std::fprintf(f, "nccl %s %lu %.3f\n", kCollectiveNames[k], c.calls[k], c.seconds[k]);
    }
    std::fclose(f);
}

// Whether [address, address + bytes) lies inside one allocation of `device`.
bool on_device(const void* address, size_t bytes, int device) {
    if (bytes == 0) return true;
    const auto a = reinterpret_cast<unsigned long long>(address);
    unsigned long long base = 0;
    size_t size = 0;
    int owner = -1;
    if (cuMemGetAddressRange_v2(&base, &size, a) != 0) return false;
    if (cuPointerGetAttribute(&owner, 9, a) != 0) return false;  // DEVICE_ORDINAL
    return owner == device && a + bytes <= base + size;
}

// Elements each rank reads and writes.
size_t input_count(const Call& c, int size) { return c.kind == ReduceScatter ? c.count * size : c.count; }
size_t output_count(const Call& c, int size) { return c.kind == AllGather ? c.count * size : c.count; }

template <typename T>
T combine(T a, T b, int op) {
    switch (op) {
        case Prod: return a * b;
        case Max: return a < b ? b : a;
        case Min: return b < a ? b : a;
        default: return a + b;  // Sum, Avg (divided at the end)
    }
}

// Rank `rank`'s output of the collective, from every rank's input.
template <typename T>
std::vector<char> result_of(const std::vector<Call>& calls, int rank) {
    const int size = static_cast<int>(calls.size());
    const Call& me = calls[rank];
    std::vector<T> out(output_count(me, size));
    auto input = [&](int r) { return static_cast<const T*>(calls[r].send); };
    auto reduce = [&](size_t offset) {
        for (size_t i = 0; i < out.size(); ++i) {
            T v = input(0)[offset + i];
            for (int r = 1; r < size; ++r) v = combine(v, input(r)[offset + i], me.op);
            if (me.op == Avg) v = static_cast<T>(v / static_cast<T>(size));
            out[i] = v;
        }
    };
    switch (me.kind) {
        case AllReduce: reduce(0); break;
        case ReduceScatter: reduce(me.count * rank); break;
        case Broadcast: std::memcpy(out.data(), input(me.root), out.size() * sizeof(T)); break;
        case AllGather:
            for (int r = 0; r < size; ++r) std::memcpy(out.data() + me.count * r, input(r), me.count * sizeof(T));
            break;
        default: break;
    }
    std::vector<char> bytes(out.size() * sizeof(T));
    std::memcpy(bytes.data(), out.data(), bytes.size());
    return bytes;
}

std::vector<char> result_for(const std::vector<Call>& calls, int rank) {
    switch (calls[rank].type) {
        case Int8: return result_of<int8_t>(calls, rank);
        case Uint8: return result_of<uint8_t>(calls, rank);
        case Int32: return result_of<int32_t>(calls, rank);
        case Uint32: return result_of<uint32_t>(calls, rank);
        case Int64: return result_of<int64_t>(calls, rank);
        case Uint64: return result_of<uint64_t>(calls, rank);
        case Float32: return result_of<float>(calls, rank);
        default: return result_of<double>(calls, rank);
    }
}

// What differs between two ranks' calls of one collective, or "" when they agree.
std::string mismatch(const Call& a, const Call& b) {
    if (a.kind != b.kind) return std::string(kCollectiveNames[a.kind]) + " vs " + kCollectiveNames[b.kind];
    if (a.count != b.count) return std::to_string(a.count) + " vs " + std::to_string(b.count) + " elements";
    if (a.type != b.type) return "data type " + std::to_string(a.type) + " vs " + std::to_string(b.type);
    if (a.kind != Broadcast && a.kind != AllGather && a.op != b.op) {
        return "reduction " + std::to_string(a.op) + " vs " + std::to_string(b.op);
    }
    if (a.kind == Broadcast && a.root != b.root) {
        return "root " + std::to_string(a.root) + " vs " + std::to_string(b.root);
    }
    return "";
}

Result run(Comm* comm, Call call) {
    if (comm == nullptr) return fail(ncclInvalidArgument, "%s on a null communicator", kCollectiveNames[call.kind]);
    const char* name = kCollectiveNames[call.kind];
    Clique& c = *comm->clique;
    if (type_size(call.type) == 0 || call.type == Float16 || call.type == Bfloat16) {
        return fail(ncclInvalidArgument, "%s: data type %d is not emulated", name, call.type);
    }
    if (call.op < Sum || call.op > Avg) return fail(ncclInvalidArgument, "%s: reduction %d", name, call.op);
    if (call.kind == Broadcast && (call.root < 0 || call.root >= c.size)) {
        return fail(ncclInvalidArgument, "%s: root %d of %d ranks", name, call.root, c.size);
    }
    const size_t width = type_size(call.type);
    const bool sends = call.kind != Broadcast || comm->rank == call.root;
    if (sends && !on_device(call.send, input_count(call, c.size) * width, comm->device)) {
        return fail(ncclInvalidArgument, "%s: rank %d's send buffer %p (%zu bytes) is not memory of its device %d",
                    name, comm->rank, call.send, input_count(call, c.size) * width, comm->device);
    }
    if (!on_device(call.recv, output_count(call, c.size) * width, comm->device)) {
        return fail(ncclInvalidArgument, "%s: rank %d's receive buffer %p (%zu bytes) is not memory of its device %d",
                    name, comm->rank, call.recv, output_count(call, c.size) * width, comm->device);
    }
    const auto started = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> lock(c.mutex);
    auto wait = [&](auto done) {
        if (c.changed.wait_for(lock, timeout(), [&] { return done() || !c.failure.empty(); })) return true;
        c.failure = std::string(name) + ": rank " + std::to_string(comm->rank) + " waited " +
                    std::to_string(timeout().count()) + " s for the other ranks";
        c.changed.notify_all();
        return false;
    };
    if (!c.failure.empty()) return fail(ncclInvalidUsage, "%s", c.failure.c_str());
    const uint64_t generation = c.generation;
    c.calls[comm->rank] = call;
    if (++c.arrived == c.size) {
        for (int r = 1; r < c.size && c.failure.empty(); ++r) {
            const std::string why = mismatch(c.calls[0], c.calls[r]);
            if (!why.empty()) c.failure = std::string(name) + ": ranks 0 and " + std::to_string(r) + " differ: " + why;
        }
        c.ready = true;
        c.changed.notify_all();
    } else if (!wait([&] { return c.ready && c.generation == generation; })) {
        return fail(ncclSystemError, "%s", c.failure.c_str());
    }
    if (!c.failure.empty()) return fail(ncclInvalidUsage, "%s", c.failure.c_str());
    // Every rank's input is posted and stays untouched until all have departed.
    const std::vector<char> out = result_for(c.calls, comm->rank);
    if (++c.departed == c.size) {
        c.generation += 1;
        c.arrived = c.departed = 0;
        c.ready = false;
        c.changed.notify_all();
    } else if (!wait([&] { return c.generation != generation; })) {
        return fail(ncclSystemError, "%s", c.failure.c_str());
    }
    lock.unlock();
    std::memcpy(call.recv, out.data(), out.size());
    const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::lock_guard<std::mutex> guard(coverage().mutex);
    coverage().calls[call.kind] += 1;
    coverage().seconds[call.kind] += spent;
    return ncclSuccess;
}

}  // namespace

#define TGEMU_API extern "C" __attribute__((visibility("default")))

struct ncclUniqueId {
    char internal[128];
};
using ncclComm_t = Comm*;

TGEMU_API Result ncclGetVersion(int* version) {
    *version = 22703;  // 2.27.3
    return ncclSuccess;
}

TGEMU_API const char* ncclGetErrorString(Result result) {
    switch (result) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error";
        case ncclSystemError: return "unhandled system error";
        case ncclInternalError: return "internal error";
        case ncclInvalidArgument: return "invalid argument";
        case ncclInvalidUsage: return "invalid usage";
        default: return "unknown result code";
    }
}

TGEMU_API const char* ncclGetLastError(ncclComm_t) { return last_error.c_str(); }

TGEMU_API Result ncclGetUniqueId(ncclUniqueId* id) {
    static std::mutex mutex;
    static uint64_t next = 0;
    std::lock_guard<std::mutex> lock(mutex);
    std::memset(id->internal, 0, sizeof id->internal);
    std::snprintf(id->internal, sizeof id->internal, "tgemu %ld %llu", static_cast<long>(getpid()),
                  static_cast<unsigned long long>(++next));
    return ncclSuccess;
}

TGEMU_API Result ncclCommInitRank(ncclComm_t* out, int size, ncclUniqueId id, int rank) {
    static bool registered = (std::atexit(write_coverage), true);
    (void)registered;
    if (size < 1 || rank < 0 || rank >= size) return fail(ncclInvalidArgument, "init: rank %d of %d", rank, size);
    int device = 0;  // the runtime's default device when no context is current
    cuCtxGetDevice(&device);
    std::shared_ptr<Clique> clique;
    {
        std::lock_guard<std::mutex> lock(registry_mutex);
        const std::string key(id.internal, sizeof id.internal);
        clique = registry()[key].lock();
        if (clique == nullptr) {
            clique = std::make_shared<Clique>(size);
            registry()[key] = clique;
        }
    }
    std::unique_lock<std::mutex> lock(clique->mutex);
    if (clique->size != size) {
        return fail(ncclInvalidUsage, "init: rank %d says %d ranks, the communicator has %d", rank, size,
                    clique->size);
    }
    if (clique->devices[rank] >= 0) return fail(ncclInvalidUsage, "init: rank %d joined twice", rank);
    for (int r = 0; r < size; ++r) {
        if (clique->devices[r] == device) {
            clique->failure = "init: ranks " + std::to_string(r) + " and " + std::to_string(rank) +
                              " are both on device " + std::to_string(device) + " (Duplicate GPU detected)";
            clique->changed.notify_all();
            return fail(ncclInvalidUsage, "%s", clique->failure.c_str());
        }
    }
    clique->devices[rank] = device;
    clique->joined += 1;
    clique->changed.notify_all();
    const bool all = clique->changed.wait_for(lock, timeout(), [&] {
        return clique->joined == size || !clique->failure.empty();
    });
    if (!clique->failure.empty()) return fail(ncclInvalidUsage, "%s", clique->failure.c_str());
    if (!all) return fail(ncclSystemError, "init: rank %d waited for the other ranks to join", rank);
    *out = new Comm{clique, rank, device};
    return ncclSuccess;
}

TGEMU_API Result ncclCommDestroy(ncclComm_t comm) {
    delete comm;
    return ncclSuccess;
}

TGEMU_API Result ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }
TGEMU_API Result ncclCommFinalize(ncclComm_t) { return ncclSuccess; }

TGEMU_API Result ncclCommCount(ncclComm_t comm, int* count) {
    *count = comm->clique->size;
    return ncclSuccess;
}

TGEMU_API Result ncclCommCuDevice(ncclComm_t comm, int* device) {
    *device = comm->device;
    return ncclSuccess;
}

TGEMU_API Result ncclCommUserRank(ncclComm_t comm, int* rank) {
    *rank = comm->rank;
    return ncclSuccess;
}

TGEMU_API Result ncclAllReduce(const void* send, void* recv, size_t count, int type, int op, ncclComm_t comm, void*) {
    return run(comm, Call{AllReduce, send, recv, count, type, op, 0});
}

TGEMU_API Result ncclBroadcast(const void* send, void* recv, size_t count, int type, int root, ncclComm_t comm,
                               void*) {
    return run(comm, Call{Broadcast, send, recv, count, type, Sum, root});
}

TGEMU_API Result ncclReduceScatter(const void* send, void* recv, size_t count, int type, int op, ncclComm_t comm,
                                   void*) {
    return run(comm, Call{ReduceScatter, send, recv, count, type, op, 0});
}

TGEMU_API Result ncclAllGather(const void* send, void* recv, size_t count, int type, ncclComm_t comm, void*) {
    return run(comm, Call{AllGather, send, recv, count, type, Sum, 0});
}
