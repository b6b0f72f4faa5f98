// The inline PTX the kernels use, emulated from the PTX ISA's descriptions (not from the kernels' comments):
// `cp.async` (a copy lands only when `cp.async.wait_group` retires its group), `st.shared.b32`,
// `ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16` and `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`.
// The two warp-wide instructions exchange every lane's operands through the scheduler, so a lane missing from the
// call is a deadlock the scheduler reports.
#include <cstring>

#include "runtime.h"

namespace tgemu {

void warp_posts(const char* what, const void* mine, int bytes, unsigned char (**posts)[64]);
void warp_posts_done(const char* what);
int current_lane();

void cp_async(unsigned dst, const void* src, unsigned cp_size, unsigned src_size) {
    if (src_size > cp_size) fail("cp.async with src-size %u above cp-size %u", src_size, cp_size);
    shared_pointer(dst, cp_size);  // bounds and alignment, checked when issued
    if (reinterpret_cast<uintptr_t>(src) % cp_size != 0 && src_size > 0) {
        fail("cp.async of %u bytes from the misaligned global address %p", cp_size, src);
    }
    async_state().open.push_back(AsyncCopy{dst, src, cp_size, src_size});
}

void cp_async_commit() {
    AsyncState& s = async_state();
    s.groups.push_back(std::move(s.open));
    s.open.clear();
}

void cp_async_wait(int n) {
    AsyncState& s = async_state();
    while (s.groups.size() > static_cast<size_t>(n)) {
        for (const AsyncCopy& c : s.groups.front()) {
            auto* d = static_cast<unsigned char*>(shared_pointer(c.dst, c.cp_size));
            if (c.src_size > 0) check_access(c.src, c.src_size, false);
            std::memcpy(d, c.src, c.src_size);
            std::memset(d + c.src_size, 0, c.cp_size - c.src_size);
            shared_access(c.dst, c.cp_size, true);
        }
        s.groups.erase(s.groups.begin());
    }
}

void st_shared_b32(unsigned address, unsigned value) {
    std::memcpy(shared_pointer(address, 4), &value, 4);
    shared_access(address, 4, true);
}

// Lanes 8i..8i+7 give the addresses of the eight 16-byte rows of matrix i. Lane l receives, of matrix i, the two
// 16-bit elements of row l/4 at columns 2(l%4) and 2(l%4)+1 — or with .trans, of column l/4 at rows 2(l%4) and
// 2(l%4)+1 — the first in the low half of the register.
void ldmatrix(unsigned* regs, int count, bool trans, unsigned row_address) {
    const char* what = trans ? "ldmatrix.trans" : "ldmatrix";
    unsigned char(*posts)[64];
    warp_posts(what, &row_address, 4, &posts);
    const int lane = current_lane();
    const int group = lane / 4, pair = lane % 4;
    auto element = [&](int matrix, int row, int col) {
        unsigned address;
        std::memcpy(&address, posts[matrix * 8 + row], 4);
        uint16_t v;
        std::memcpy(&v, static_cast<unsigned char*>(shared_pointer(address, 16)) + 2 * col, 2);
        shared_access(address + 2 * col, 2, false);
        return static_cast<unsigned>(v);
    };
    for (int i = 0; i < count; ++i) {
        unsigned lo, hi;
        if (trans) {
            lo = element(i, 2 * pair, group);
            hi = element(i, 2 * pair + 1, group);
        } else {
            lo = element(i, group, 2 * pair);
            hi = element(i, group, 2 * pair + 1);
        }
        regs[i] = lo | (hi << 16);
    }
    warp_posts_done(what);
}

namespace {
float bf16_lo(unsigned r) { return __uint_as_float(r << 16); }
float bf16_hi(unsigned r) { return __uint_as_float(r & 0xffff0000u); }
}  // namespace

// With g = l/4 and t = l%4 for lane l:
//   A (16x16): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]
//   B (16x8):  b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]
//   C, D (16x8 f32): c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
// Products of bf16 are exact in f32; each sum runs in k order in f32.
void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    const char* what = "mma.sync.m16n8k16";
    unsigned mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
    unsigned char(*posts)[64];
    warp_posts(what, mine, sizeof mine, &posts);
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        unsigned r[6];
        std::memcpy(r, posts[l], sizeof r);
        const int g = l / 4, t = l % 4;
        A[g][2 * t] = bf16_lo(r[0]);
        A[g][2 * t + 1] = bf16_hi(r[0]);
        A[g + 8][2 * t] = bf16_lo(r[1]);
        A[g + 8][2 * t + 1] = bf16_hi(r[1]);
        A[g][2 * t + 8] = bf16_lo(r[2]);
        A[g][2 * t + 9] = bf16_hi(r[2]);
        A[g + 8][2 * t + 8] = bf16_lo(r[3]);
        A[g + 8][2 * t + 9] = bf16_hi(r[3]);
        B[2 * t][g] = bf16_lo(r[4]);
        B[2 * t + 1][g] = bf16_hi(r[4]);
        B[2 * t + 8][g] = bf16_lo(r[5]);
        B[2 * t + 9][g] = bf16_hi(r[5]);
    }
    warp_posts_done(what);
    const int lane = current_lane();
    const int g = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; ++e) {
        const int row = g + (e >> 1) * 8, col = 2 * t + (e & 1);
        float acc = d[e];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        d[e] = acc;
    }
}

}  // namespace tgemu
