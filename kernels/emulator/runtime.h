// The emulated device's internals shared by the scheduler, the PTX emulations and the driver: a kernel as the
// registry holds it, a launch, its blocks and threads, and the checks that run while a kernel executes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace tgemu {

// A `__global__` function compiled for the CPU: `invoke` reads the arguments through the kernel's C++
// signature from `params` (cuLaunchKernel's `kernelParams`: one pointer per argument).
struct Kernel {
    const char* family;
    const char* name;
    void (*invoke)(void** params);
    unsigned launches;
    double seconds;  // spent running it
};
// Every kernel of every family compiled into this library (registered by the generated `<family>.reg.cc`).
std::vector<Kernel*>& registry();
struct Registrar {
    Registrar(Kernel* kernel) { registry().push_back(kernel); }
};
template <typename F> struct Invoker;
// Reading the arguments is the driver's part, not the kernel's: it is not checked as a kernel access.
template <typename... A> struct Invoker<void(A...)> {
    template <void (*K)(A...), size_t... I>
    __attribute__((no_sanitize_thread)) static void call(void** params, std::index_sequence<I...>) {
        K(*static_cast<std::decay_t<A>*>(params[I])...);
    }
    template <void (*K)(A...)> __attribute__((no_sanitize_thread)) static void invoke(void** params) {
        call<K>(params, std::index_sequence_for<A...>{});
    }
};
#define TGEMU_KERNEL(FAMILY, NAME)                                                                              \
    static tgemu::Kernel tgemu_kernel_##NAME{FAMILY, #NAME,                                                   \
                                             &tgemu::Invoker<decltype(NAME)>::invoke<NAME>, 0, 0.0};                \
    static tgemu::Registrar tgemu_registrar_##NAME(&tgemu_kernel_##NAME);

// A launch as the driver hands it to the scheduler.
struct LaunchSpec {
    const Kernel* kernel;
    uint3 grid;
    uint3 block;
    size_t dynamic_shared;
    void** params;
    uint64_t seed;  // orders the threads of each block
};

// Runs every block of the launch. Returns an empty string, or the failure that stopped it (naming kernel,
// block, thread(s) and what went wrong).
std::string run_grid(const LaunchSpec& spec);

// The shared window of the block running now (dynamic shared memory), for the PTX emulations.
struct SharedWindow {
    unsigned char* base;
    size_t size;
};
SharedWindow& shared_window();

// A pending cp.async copy of one thread.
struct AsyncCopy {
    unsigned dst;
    const void* src;
    unsigned cp_size;
    unsigned src_size;
};
// The cp.async state of the thread running now: copies not yet committed, and committed groups in order.
struct AsyncState {
    std::vector<AsyncCopy> open;
    std::vector<std::vector<AsyncCopy>> groups;
};
AsyncState& async_state();

// --- memory checks (memcheck.cc) ---
struct Range {
    uintptr_t begin, end;
    bool contains(uintptr_t a, size_t n) const { return a >= begin && a + n <= end; }
};
// The thread making an access: its index in the block, the block's and its warp's barrier counts, and the
// memory that is its own (its fiber stack, its `threadIdx` state and the pointer to it).
struct Accessor {
    int32_t thread;
    uint32_t block_epoch, warp_epoch;
    Range stack, own, slot;
};
// The running kernel thread, or false outside a kernel (scheduler.cc).
bool accessor(Accessor& out);
// Whether [address, address + bytes) lies in one device allocation (driver.cc; called during a launch).
bool device_memory_contains(uintptr_t address, size_t bytes);
void memcheck_block_start(size_t dynamic_shared);
// An access by the running thread to dynamic shared memory at `offset` (for the PTX emulations).
void shared_access(unsigned offset, size_t bytes, bool write);
// An access by the running thread to any address.
void check_access(const void* address, size_t bytes, bool write);

}  // namespace tgemu
