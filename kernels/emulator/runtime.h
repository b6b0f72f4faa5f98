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
};
// Every kernel of every family compiled into this library (registered by the generated `<family>.reg.cc`).
std::vector<Kernel*>& registry();
struct Registrar {
    Registrar(Kernel* kernel) { registry().push_back(kernel); }
};
template <typename F> struct Invoker;
template <typename... A> struct Invoker<void(A...)> {
    template <void (*K)(A...), size_t... I> static void call(void** params, std::index_sequence<I...>) {
        K(*static_cast<std::decay_t<A>*>(params[I])...);
    }
    template <void (*K)(A...)> static void invoke(void** params) {
        call<K>(params, std::index_sequence_for<A...>{});
    }
};
#define TGEMU_KERNEL(FAMILY, NAME)                                                                              \
    static tgemu::Kernel tgemu_kernel_##NAME{FAMILY, #NAME,                                                   \
                                             &tgemu::Invoker<decltype(NAME)>::invoke<NAME>, 0};                \
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

}  // namespace tgemu
