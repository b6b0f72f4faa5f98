// The block scheduler of the emulated device: every CUDA thread of a block is a fiber on one OS thread. A fiber
// runs until it reaches a barrier (`__syncthreads`, or a warp collective and its mask) or ends; the scheduler
// then resumes the next ready fiber, in an order shuffled per launch, so code that depends on thread order
// fails. A barrier opens when every thread it waits for has arrived; when no fiber can run and some have not
// ended, the launch fails naming who waits where. Blocks run one after another. Under AddressSanitizer (the
// TGEMU_SANITIZE=address build) every switch is announced to it, so it checks each fiber against its own stack.
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define TGEMU_ASAN 1
#endif

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime.h"

// x86-64 System V context switch: saves the callee-saved registers, MXCSR and the x87 control word on the
// current stack, stores its pointer in *save_sp and continues on new_sp.
extern "C" void tgemu_switch(void** save_sp, void* new_sp);
extern "C" void tgemu_fiber_start();
asm(R"(
    .text
    .globl tgemu_switch
    .hidden tgemu_switch
    .type tgemu_switch, @function
tgemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tgemu_switch, .-tgemu_switch

    .globl tgemu_fiber_start
    .hidden tgemu_fiber_start
    .type tgemu_fiber_start, @function
tgemu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size tgemu_fiber_start, .-tgemu_fiber_start
)");

namespace tgemu {

thread_local ThreadState* current = nullptr;

std::vector<Kernel*>& registry() {
    static std::vector<Kernel*> kernels;
    return kernels;
}

namespace {

constexpr size_t kStackBytes = 128 * 1024;
constexpr size_t kGuardBytes = 4096;

enum class Status { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Thread {
    ThreadState state;
    int linear = 0;
    int lane = 0;
    int warp = 0;
    void* sp = nullptr;
    unsigned char* stack = nullptr;
    Status status = Status::Ready;
    unsigned wait_mask = 0;
    const char* wait_what = "";
    AsyncState async;
};

struct Warp {
    unsigned present = 0;  // lanes that exist (the last warp of a block may be partial)
    unsigned arrived = 0;
    uint32_t epoch = 0;  // warp barriers completed
    alignas(16) unsigned char posts[32][64];
};

struct Block {
    const LaunchSpec* spec = nullptr;
    uint3 index{0, 0, 0};
    std::vector<Thread> threads;
    std::vector<Warp> warps;
    std::vector<unsigned char> shared;
    int live = 0;
    int at_barrier = 0;
    uint32_t epoch = 0;  // block barriers completed
    void* scheduler_sp = nullptr;
    const void* scheduler_stack = nullptr;  // the scheduler's stack, for AddressSanitizer
    size_t scheduler_stack_bytes = 0;
    Thread* running = nullptr;
    std::string failure;
};

thread_local Block* block = nullptr;
thread_local SharedWindow window{nullptr, 0};

// Fiber stacks, kept for the next block (a guard page below each turns an overflow into a fault).
struct Stacks {
    std::vector<unsigned char*> stacks;
    unsigned char* get(size_t i) {
        while (stacks.size() <= i) {
            void* p = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) {
                std::fprintf(stderr, "tgemu: cannot map a fiber stack\n");
                std::abort();
            }
            mprotect(p, kGuardBytes, PROT_NONE);
            stacks.push_back(static_cast<unsigned char*>(p) + kGuardBytes);
        }
        return stacks[i];
    }
};
thread_local Stacks stacks;

uint64_t splitmix(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::string where(const Thread* t) {
    char buf[256];
    const Block* b = block;
    if (t == nullptr) {
        std::snprintf(buf, sizeof buf, "kernel %s, block (%u, %u, %u)", b->spec->kernel->name, b->index.x,
                      b->index.y, b->index.z);
    } else {
        std::snprintf(buf, sizeof buf, "kernel %s, block (%u, %u, %u), thread (%u, %u, %u)",
                      b->spec->kernel->name, b->index.x, b->index.y, b->index.z, t->state.thread_idx.x,
                      t->state.thread_idx.y, t->state.thread_idx.z);
    }
    return buf;
}

// Fiber → scheduler. A fiber that is done is never resumed: AddressSanitizer may drop its state.
void yield(Thread* t) {
#ifdef TGEMU_ASAN
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(t->status == Status::Done ? nullptr : &fake_stack, block->scheduler_stack,
                                   block->scheduler_stack_bytes);
    tgemu_switch(&t->sp, block->scheduler_sp);
    __sanitizer_finish_switch_fiber(fake_stack, &block->scheduler_stack, &block->scheduler_stack_bytes);
#else
    tgemu_switch(&t->sp, block->scheduler_sp);
#endif
}

// Scheduler → fiber `t`, until it yields.
void resume(Thread& t) {
#ifdef TGEMU_ASAN
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, t.stack, kStackBytes);
    tgemu_switch(&block->scheduler_sp, t.sp);
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
    tgemu_switch(&block->scheduler_sp, t.sp);
#endif
}

void release_block_barrier() {
    for (Thread& o : block->threads) {
        if (o.status == Status::AtBlockBarrier) o.status = Status::Ready;
    }
    block->at_barrier = 0;
    block->epoch += 1;
}

void fiber_main(void* arg) {
#ifdef TGEMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &block->scheduler_stack, &block->scheduler_stack_bytes);
#endif
    Thread* t = static_cast<Thread*>(arg);
    block->spec->kernel->invoke(block->spec->params);
    t->status = Status::Done;
    block->live -= 1;
    if (block->at_barrier > 0 && block->at_barrier == block->live) release_block_barrier();
    yield(t);
    std::abort();  // a finished fiber is never resumed
}

void start_fiber(Thread& t, unsigned char* stack_low) {
    // Initial frame, as tgemu_switch leaves one: MXCSR and x87 control word, r15, r14, r13 (entry), r12
    // (argument), rbx, rbp, and the return address tgemu_fiber_start; the top stays 16-byte aligned.
    auto* top = reinterpret_cast<uint64_t*>(stack_low + kStackBytes);
    uint64_t* sp = top - 8;
    uint32_t control[2];
    asm volatile("stmxcsr %0" : "=m"(control[0]));
    asm volatile("fnstcw %0" : "=m"(control[1]));
    std::memcpy(&sp[0], control, 8);
    sp[1] = 0;                                                // r15
    sp[2] = 0;                                                // r14
    sp[3] = reinterpret_cast<uint64_t>(&fiber_main);          // r13
    sp[4] = reinterpret_cast<uint64_t>(&t);                   // r12
    sp[5] = 0;                                                // rbx
    sp[6] = 0;                                                // rbp
    sp[7] = reinterpret_cast<uint64_t>(&tgemu_fiber_start);  // return address
    t.sp = sp;
    t.stack = stack_low;
#ifdef TGEMU_ASAN
    // The frames an earlier fiber left on this stack when it ended are gone.
    __asan_unpoison_memory_region(stack_low, kStackBytes);
#endif
}

const char* status_name(const Thread& t) {
    switch (t.status) {
        case Status::Ready: return "ready";
        case Status::AtBlockBarrier: return "at __syncthreads";
        case Status::AtWarpBarrier: return t.wait_what;
        case Status::Done: return "exited";
    }
    return "?";
}

// Who waits where, when no fiber can run.
std::string deadlock_report() {
    std::string out = where(nullptr) + ": deadlock, no thread can continue:";
    for (const Thread& t : block->threads) {
        if (t.status == Status::Done) continue;
        char buf[200];
        if (t.status == Status::AtWarpBarrier) {
            std::snprintf(buf, sizeof buf, " thread %d (warp %d lane %d) at %s with mask 0x%08x;", t.linear,
                          t.warp, t.lane, t.wait_what, t.wait_mask);
        } else {
            std::snprintf(buf, sizeof buf, " thread %d %s;", t.linear, status_name(t));
        }
        out += buf;
        if (out.size() > 2000) {
            out += " ...";
            break;
        }
    }
    return out;
}

// Arrival of the running lane at a warp barrier of `mask`; returns once every lane of the mask is there.
void warp_arrive(unsigned mask, const char* what) {
    Thread* t = block->running;
    Warp& w = block->warps[t->warp];
    const unsigned bit = 1u << t->lane;
    if ((mask & bit) == 0) {
        fail("%s with mask 0x%08x called by lane %d, which the mask does not name", what, mask, t->lane);
    }
    if ((mask & ~w.present) != 0) {
        fail("%s with mask 0x%08x names lanes that do not exist in this warp (present: 0x%08x)", what, mask,
             w.present);
    }
    for (int l = 0; l < 32; ++l) {
        if ((mask >> l) & 1u) {
            const Thread& o = block->threads[t->warp * 32 + l];
            if (o.status == Status::Done) {
                fail("%s with mask 0x%08x: lane %d has exited and will never arrive", what, mask, l);
            }
            if (o.status == Status::AtBlockBarrier) {
                fail("%s with mask 0x%08x: lane %d waits at __syncthreads instead", what, mask, l);
            }
        }
    }
    t->status = Status::AtWarpBarrier;
    t->wait_mask = mask;
    t->wait_what = what;
    w.arrived |= bit;
    if ((w.arrived & mask) == mask) {
        for (int l = 0; l < 32; ++l) {
            if (((mask >> l) & 1u) == 0) continue;
            Thread& o = block->threads[t->warp * 32 + l];
            if (o.wait_mask != mask || std::strcmp(o.wait_what, what) != 0) {
                fail("lane %d is at %s with mask 0x%08x while lane %d is at %s with mask 0x%08x", l, o.wait_what,
                     o.wait_mask, t->lane, what, mask);
            }
        }
        for (int l = 0; l < 32; ++l) {
            if ((mask >> l) & 1u) block->threads[t->warp * 32 + l].status = Status::Ready;
        }
        w.arrived &= ~mask;
        w.epoch += 1;
    } else {
        yield(t);
    }
}

}  // namespace

SharedWindow& shared_window() { return window; }

bool accessor(Accessor& out) {
    if (block == nullptr || block->running == nullptr) return false;
    const Thread* t = block->running;
    const auto stack = reinterpret_cast<uintptr_t>(t->stack);
    const auto own = reinterpret_cast<uintptr_t>(&t->state);
    const auto slot = reinterpret_cast<uintptr_t>(&current);
    out = Accessor{t->linear,
                   block->epoch,
                   block->warps[static_cast<size_t>(t->warp)].epoch,
                   Range{stack, stack + kStackBytes},
                   Range{own, own + sizeof(ThreadState)},
                   Range{slot, slot + sizeof(current)}};
    return true;
}
AsyncState& async_state() { return block->running->async; }

void fail(const char* fmt, ...) {
    char msg[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, args);
    va_end(args);
    if (block == nullptr || block->running == nullptr) {
        std::fprintf(stderr, "tgemu: %s\n", msg);
        std::abort();
    }
    Thread* t = block->running;
    block->failure = where(t) + ": " + msg;
    if (std::getenv("TGEMU_ABORT") != nullptr) {
        std::fprintf(stderr, "tgemu: %s\n", block->failure.c_str());
        std::abort();
    }
    t->status = Status::Done;
    yield(t);
    std::abort();
}

void syncthreads() {
    Thread* t = block->running;
    t->status = Status::AtBlockBarrier;
    block->at_barrier += 1;
    if (block->at_barrier == block->live) {
        release_block_barrier();
    } else {
        yield(t);
    }
}

void syncwarp(unsigned mask) { warp_arrive(mask, "__syncwarp"); }

void warp_exchange(unsigned mask, const char* what, const void* mine, void* out, int bytes, int src) {
    Thread* t = block->running;
    Warp& w = block->warps[t->warp];
    std::memcpy(w.posts[t->lane], mine, static_cast<size_t>(bytes));
    warp_arrive(mask, what);
    if (src < 0 || src > 31 || ((mask >> src) & 1u) == 0) {
        fail("%s with mask 0x%08x: lane %d reads lane %d, which the mask does not name", what, mask, t->lane, src);
    }
    std::memcpy(out, w.posts[src], static_cast<size_t>(bytes));
    // A second barrier, so no lane posts its next value before every lane has read this one.
    warp_arrive(mask, what);
}

unsigned warp_ballot(unsigned mask, const char* what, bool predicate) {
    Thread* t = block->running;
    Warp& w = block->warps[t->warp];
    w.posts[t->lane][0] = predicate ? 1 : 0;
    warp_arrive(mask, what);
    unsigned votes = 0;
    for (int l = 0; l < 32; ++l) {
        if (((mask >> l) & 1u) && w.posts[l][0]) votes |= 1u << l;
    }
    warp_arrive(mask, what);
    return votes;
}

// A warp-wide exchange of up to 64 bytes a lane for the PTX emulations: every lane of the warp posts, then
// `compute` runs on each lane with all posts visible.
void warp_posts(const char* what, const void* mine, int bytes, unsigned char (**posts)[64]) {
    Thread* t = block->running;
    Warp& w = block->warps[t->warp];
    std::memcpy(w.posts[t->lane], mine, static_cast<size_t>(bytes));
    warp_arrive(0xffffffffu, what);
    *posts = w.posts;
}
void warp_posts_done(const char* what) { warp_arrive(0xffffffffu, what); }
int current_lane() { return block->running->lane; }

unsigned char* dynamic_shared() { return window.base; }
size_t dynamic_shared_size() { return window.size; }

unsigned shared_address(const void* p) {
    const auto* c = static_cast<const unsigned char*>(p);
    if (c < window.base || c > window.base + window.size) {
        fail("__cvta_generic_to_shared of %p, which is not in the block's %zu bytes of dynamic shared memory", p,
             window.size);
    }
    return static_cast<unsigned>(c - window.base);
}

void* shared_pointer(unsigned address, unsigned bytes) {
    if (static_cast<size_t>(address) + bytes > window.size) {
        fail("shared memory access of %u bytes at offset %u, past the %zu bytes the launch declared", bytes, address,
             window.size);
    }
    if (address % bytes != 0) fail("misaligned shared memory access of %u bytes at offset %u", bytes, address);
    return window.base + address;
}

std::string run_grid(const LaunchSpec& spec) {
    const int threads = static_cast<int>(spec.block.x * spec.block.y * spec.block.z);
    Block b;
    b.spec = &spec;
    b.threads.resize(static_cast<size_t>(threads));
    b.warps.resize(static_cast<size_t>((threads + 31) / 32));
    b.shared.resize(std::max<size_t>(spec.dynamic_shared, 1));
    Block* outer = block;
    ThreadState* outer_current = current;
    block = &b;
    window = SharedWindow{b.shared.data(), spec.dynamic_shared};
    uint64_t rng = spec.seed;
    std::vector<int> order(static_cast<size_t>(threads));
    std::string failure;
    for (unsigned z = 0; z < spec.grid.z && failure.empty(); ++z) {
        for (unsigned y = 0; y < spec.grid.y && failure.empty(); ++y) {
            for (unsigned x = 0; x < spec.grid.x && failure.empty(); ++x) {
                b.index = uint3{x, y, z};
                // Shared memory starts out as garbage on hardware: NaN bytes here.
                std::memset(b.shared.data(), 0xff, b.shared.size());
                memcheck_block_start(spec.dynamic_shared);
                b.epoch = 0;
                for (Warp& w : b.warps) {
                    w.present = 0;
                    w.arrived = 0;
                }
                for (int i = 0; i < threads; ++i) {
                    Thread& t = b.threads[static_cast<size_t>(i)];
                    t = Thread{};
                    t.linear = i;
                    t.lane = i % 32;
                    t.warp = i / 32;
                    t.state.thread_idx = uint3{static_cast<unsigned>(i) % spec.block.x,
                                               (static_cast<unsigned>(i) / spec.block.x) % spec.block.y,
                                               static_cast<unsigned>(i) / (spec.block.x * spec.block.y)};
                    t.state.block_idx = b.index;
                    t.state.block_dim = spec.block;
                    t.state.grid_dim = spec.grid;
                    b.warps[static_cast<size_t>(t.warp)].present |= 1u << t.lane;
                    start_fiber(t, stacks.get(static_cast<size_t>(i)));
                    order[static_cast<size_t>(i)] = i;
                }
                for (int i = threads - 1; i > 0; --i) {
                    std::swap(order[static_cast<size_t>(i)],
                              order[splitmix(rng) % static_cast<uint64_t>(i + 1)]);
                }
                b.live = threads;
                b.at_barrier = 0;
                int done = 0;
                while (done < threads && b.failure.empty()) {
                    bool progressed = false;
                    for (int i : order) {
                        Thread& t = b.threads[static_cast<size_t>(i)];
                        if (t.status != Status::Ready) continue;
                        b.running = &t;
                        current = &t.state;
                        resume(t);
                        b.running = nullptr;
                        progressed = true;
                        if (t.status == Status::Done) done += 1;
                        if (!b.failure.empty()) break;
                    }
                    if (!progressed && done < threads && b.failure.empty()) b.failure = deadlock_report();
                }
                failure = b.failure;
            }
        }
    }
    block = outer;
    current = outer_current;
    window = outer != nullptr ? SharedWindow{outer->shared.data(), outer->spec->dynamic_shared}
                              : SharedWindow{nullptr, 0};
    return failure;
}

}  // namespace tgemu
