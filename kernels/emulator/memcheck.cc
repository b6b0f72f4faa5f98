// Checks of every memory access a kernel makes. The kernels are compiled with g++'s `-fsanitize=thread`
// instrumentation, which calls `__tsan_read4(address)` and friends before each load and store; this file
// implements those hooks itself (no sanitizer runtime is linked). Outside a kernel they do nothing. Inside one,
// an access must fall in the thread's own stack, the block's dynamic shared memory, a device allocation, or this
// library's own data (static `__shared__` arrays, constants); anything else is an out-of-bounds access. Shared
// memory (dynamic and static) is also checked for races: two threads touching the same byte between two
// barriers, at least one of them writing, is a failure naming both threads and the offset. Threads of one warp
// are ordered by a warp barrier (`__syncwarp` or a warp collective) they both passed; atomics are not checked
// for races.
#include <dlfcn.h>
#include <link.h>

#include <cstdint>
#include <cstdio>
#include <unordered_map>
#include <vector>

#include "runtime.h"

namespace tgemu {

namespace {

// One byte of shared memory: who last wrote it and who read it since (-1 nobody, -2 several threads), each
// with the block and warp barrier counts at the time. `generation` tells cells of an earlier block apart.
struct Cell {
    uint32_t generation = 0;
    int32_t writer = -1;
    uint32_t writer_block = 0, writer_warp = 0;
    int32_t reader = -1;
    uint32_t reader_block = 0, reader_warp = 0;
};

struct Library {
    std::vector<Range> writable, readable;
};

Library find_library() {
    Library lib;
    Dl_info self;
    dladdr(reinterpret_cast<void*>(&find_library), &self);
    struct Search {
        const void* base;
        Library* lib;
    } search{self.dli_fbase, &lib};
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) {
            auto* s = static_cast<Search*>(data);
            if (reinterpret_cast<const void*>(info->dlpi_addr) != s->base) return 0;
            for (int i = 0; i < info->dlpi_phnum; ++i) {
                const ElfW(Phdr)& ph = info->dlpi_phdr[i];
                if (ph.p_type != PT_LOAD) continue;
                const Range r{info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz};
                ((ph.p_flags & PF_W) ? s->lib->writable : s->lib->readable).push_back(r);
            }
            return 1;
        },
        &search);
    return lib;
}

const Library& library() {
    static const Library lib = find_library();
    return lib;
}

thread_local std::vector<Cell> dynamic_cells;
thread_local std::unordered_map<uintptr_t, Cell> static_cells;
thread_local uint32_t generation = 0;

bool ordered(int32_t other, uint32_t other_block, uint32_t other_warp, const Accessor& me) {
    if (other == me.thread) return true;
    if (other_block != me.block_epoch) return true;
    return other / 32 == me.thread / 32 && other_warp != me.warp_epoch;
}

// `where` is an offset into dynamic shared memory, or (`is_static`) the address of a static `__shared__` byte.
void check_cell(Cell& c, const Accessor& me, bool write, bool is_static, uintptr_t where) {
    const char* space = is_static ? "static shared" : "shared";
    char offset[40];
    auto describe = [&] {
        std::snprintf(offset, sizeof offset, is_static ? "address %#zx" : "offset %zu", static_cast<size_t>(where));
        return offset;
    };
    if (c.generation != generation) c = Cell{generation};
    const char* verb = write ? "writes" : "reads";
    if (c.writer >= 0 && !ordered(c.writer, c.writer_block, c.writer_warp, me)) {
        fail("%s memory race at %s: thread %d wrote it and thread %d %s it with no barrier between", space, describe(),
             c.writer, me.thread, verb);
    }
    if (write) {
        if (c.reader == -2 && c.reader_block == me.block_epoch) {
            fail("%s memory race at %s: several threads read it and thread %d writes it with no barrier between",
                 space, describe(), me.thread);
        }
        if (c.reader >= 0 && !ordered(c.reader, c.reader_block, c.reader_warp, me)) {
            fail("%s memory race at %s: thread %d read it and thread %d writes it with no barrier between", space,
                 describe(), c.reader, me.thread);
        }
        c.writer = me.thread;
        c.writer_block = me.block_epoch;
        c.writer_warp = me.warp_epoch;
        c.reader = -1;
    } else if (c.reader < 0 || c.reader == me.thread || c.reader_block != me.block_epoch) {
        c.reader = me.thread;
        c.reader_block = me.block_epoch;
        c.reader_warp = me.warp_epoch;
    } else {
        c.reader = -2;
    }
}

}  // namespace

void memcheck_block_start(size_t dynamic_shared) {
    generation += 1;
    if (dynamic_cells.size() < dynamic_shared) dynamic_cells.resize(dynamic_shared);
    static_cells.clear();
}

void shared_access(unsigned offset, size_t bytes, bool write) {
    Accessor me;
    if (!accessor(me)) return;
    for (size_t i = 0; i < bytes; ++i) {
        check_cell(dynamic_cells[offset + i], me, write, false, offset + i);
    }
}

void check_access(const void* address, size_t bytes, bool write) {
    Accessor me;
    if (!accessor(me)) return;
    const auto a = reinterpret_cast<uintptr_t>(address);
    if (me.stack.contains(a, bytes) || me.own.contains(a, bytes) || me.slot.contains(a, bytes)) return;
    const SharedWindow& w = shared_window();
    const auto base = reinterpret_cast<uintptr_t>(w.base);
    if (a >= base && a < base + w.size) {
        if (a + bytes > base + w.size) {
            fail("%s of %zu bytes at shared offset %zu runs past the %zu bytes of dynamic shared memory the launch "
                 "declared",
                 write ? "write" : "read", bytes, static_cast<size_t>(a - base), w.size);
        }
        for (size_t i = 0; i < bytes; ++i) {
            check_cell(dynamic_cells[a - base + i], me, write, false, a - base + i);
        }
        return;
    }
    if (device_memory_contains(a, bytes)) return;
    for (const Range& r : library().writable) {
        if (r.contains(a, bytes)) {
            for (size_t i = 0; i < bytes; ++i) check_cell(static_cells[a + i], me, write, true, a + i);
            return;
        }
    }
    if (!write) {
        for (const Range& r : library().readable) {
            if (r.contains(a, bytes)) return;
        }
    }
    fail("%s of %zu bytes at %p: outside every device allocation, the block's shared memory and the thread's "
         "stack",
         write ? "write" : "read", bytes, address);
}

}  // namespace tgemu

// The hooks g++'s thread-sanitizer instrumentation calls.
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
#define TGEMU_HOOKS(N)                                                                                           \
    void __tsan_read##N(void* a) { tgemu::check_access(a, N, false); }                                          \
    void __tsan_write##N(void* a) { tgemu::check_access(a, N, true); }                                          \
    void __tsan_unaligned_read##N(void* a) { tgemu::check_access(a, N, false); }                                \
    void __tsan_unaligned_write##N(void* a) { tgemu::check_access(a, N, true); }
TGEMU_HOOKS(1)
TGEMU_HOOKS(2)
TGEMU_HOOKS(4)
TGEMU_HOOKS(8)
TGEMU_HOOKS(16)
void __tsan_read_range(void* a, unsigned long n) { tgemu::check_access(a, n, false); }
void __tsan_write_range(void* a, unsigned long n) { tgemu::check_access(a, n, true); }
int __tsan_atomic32_fetch_add(volatile int* a, int v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }
}
