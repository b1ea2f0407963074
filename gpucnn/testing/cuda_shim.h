// cuda_shim.h: lets the host C++ compiler build a CUDA kernel source for the gpucnn host emulator.
//
// Force-included (g++ -include cuda_shim.h) ahead of a cuda/*.cu file. It supplies the CUDA
// keywords, built-in index variables, vector types, math intrinsics, atomics, block barriers and
// warp-level operations. Every CUDA thread of a block runs as a cooperative fiber (ucontext) on a
// single OS thread; blocks run one after another. __syncthreads() is a real barrier: a fiber
// parks at it and the scheduler resumes the block's fibers in order until all have arrived. Warp
// operations (__shfl_*_sync, __ballot_sync, __syncwarp, ...) park the lane at a warp barrier; the
// scheduler computes the results when every lane named in the mask has arrived.
//
// Kernels of a source that never mentions a barrier or warp operation run in a fast path: each
// thread is a plain function call. The Python side (gpucnn/testing/emulator.py) appends one
// exported C wrapper per `extern "C" __global__` kernel that calls __emu::launch below.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------- keywords
#define __global__
#define __device__ inline
#define __host__
#define __forceinline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// Static shared memory lives in its own section so every block can start with it poisoned
// (0xff bytes: NaN / -1), as on a GPU where it is uninitialised: a kernel that reads shared
// memory before writing it then gives visibly wrong results instead of the zeros of static
// storage.
#define __shared__ static __attribute__((section("emu_shared")))
#define __constant__ static
// A GNU attribute, not alignas: CUDA code writes `__shared__ __align__(16) T x[...]`, where a
// standard attribute would sit in the middle of the decl-specifiers (a g++ error).
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// __restrict__ is understood by g++ itself.

// ---------------------------------------------------------------- vector types and dims
#define EMU_VEC2(T, N, A)                                           \
    struct alignas(A) N##2 { T x, y; };                             \
    inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define EMU_VEC3(T, N)                                              \
    struct N##3 { T x, y, z; };                                     \
    inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define EMU_VEC4(T, N, A)                                           \
    struct alignas(A) N##4 { T x, y, z, w; };                       \
    inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
EMU_VEC2(float, float, 8)
EMU_VEC3(float, float)
EMU_VEC4(float, float, 16)
EMU_VEC2(double, double, 16)
EMU_VEC3(double, double)
EMU_VEC4(double, double, 16)
EMU_VEC2(int, int, 8)
EMU_VEC3(int, int)
EMU_VEC4(int, int, 16)
EMU_VEC2(unsigned int, uint, 8)
EMU_VEC3(unsigned int, uint)
EMU_VEC4(unsigned int, uint, 16)
EMU_VEC2(long long, longlong, 16)
#undef EMU_VEC2
#undef EMU_VEC3
#undef EMU_VEC4

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// Built-in variables: plain globals that the scheduler sets before resuming a thread.
uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;
constexpr int warpSize = 32;

// ---------------------------------------------------------------- scheduler state
// Bounds of the "emu_shared" section, provided by the linker (weak: absent without __shared__).
extern "C" unsigned char __start_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" unsigned char __stop_emu_shared[] __attribute__((weak, visibility("hidden")));

namespace __emu {

enum State : int { READY = 0, AT_BLOCK_BARRIER = 1, AT_WARP_BARRIER = 2, DONE = 3 };
enum WarpOp : int { OP_SYNCWARP = 0, OP_SHFL = 1, OP_BALLOT = 2 };

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 * 1024;  // per fiber; mmap'd lazily, a guard page below

struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;
};

Fiber g_fibers[kMaxThreads];
ucontext_t g_sched;
int g_state[kMaxThreads];
int g_op[kMaxThreads];
unsigned g_mask[kMaxThreads];
uint64_t g_val[kMaxThreads];
int g_src[kMaxThreads];       // absolute thread index a shuffle reads, or -1 for its own value
uint64_t g_res[kMaxThreads];  // result of the last warp operation of a lane
int g_bar_val[kMaxThreads];   // predicate of __syncthreads_count/_and/_or
int g_bar_count = 0;          // result of the last __syncthreads_count
int g_cur = 0;                // linear index of the running thread within its block
int g_nthreads = 0;
bool g_fiber_mode = false;
bool g_failed = false;
char g_error[2048];
unsigned char* g_dyn_smem = nullptr;  // dynamic shared memory of the running block

void (*g_invoke)(void*) = nullptr;
void* g_invoke_ctx = nullptr;

inline void fail(const char* msg) {
    if (!g_failed) {
        g_failed = true;
        snprintf(g_error, sizeof g_error, "%s", msg);
    }
}

inline void set_thread(int t) {
    g_cur = t;
    threadIdx.x = t % blockDim.x;
    threadIdx.y = (t / blockDim.x) % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

// Park the running fiber (its state already set) and return to the scheduler.
inline void park() {
    if (!g_fiber_mode) {
        fail("a barrier or warp operation ran in the fast path (emulator bug: source scan missed it)");
        return;
    }
    swapcontext(&g_fibers[g_cur].ctx, &g_sched);
}

inline void fiber_main() {
    g_invoke(g_invoke_ctx);
    g_state[g_cur] = DONE;  // returning switches to g_sched through uc_link
}

inline bool ensure_stacks(int n) {
    long page = 4096;
    for (int t = 0; t < n; ++t) {
        if (g_fibers[t].stack) continue;
        void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            fail("mmap of a fiber stack failed");
            return false;
        }
        mprotect(p, page, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting
        g_fibers[t].stack = static_cast<char*>(p) + page;
    }
    return true;
}

inline int lane_of(int t) { return t & 31; }
inline int warp_base(int t) { return t & ~31; }

// Mask of the lanes that exist in the warp starting at thread `base`.
inline unsigned existing_lanes(int base) {
    int n = g_nthreads - base;
    return n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
}

// Release warp groups whose named lanes have all arrived; returns whether any was released.
inline bool release_warps() {
    bool progress = false;
    for (int t = 0; t < g_nthreads; ++t) {
        if (g_state[t] != AT_WARP_BARRIER) continue;
        int base = warp_base(t);
        unsigned mask = g_mask[t] & existing_lanes(base);
        if (!(mask & (1u << lane_of(t)))) {
            char buf[256];
            snprintf(buf, sizeof buf,
                     "thread %d (lane %d) called a warp operation whose mask 0x%08x excludes it",
                     t, lane_of(t), g_mask[t]);
            fail(buf);
            return false;
        }
        bool ready = true;
        for (int l = 0; l < 32; ++l) {
            if (!(mask & (1u << l))) continue;
            int u = base + l;
            if (g_state[u] == DONE) {
                char buf[256];
                snprintf(buf, sizeof buf,
                         "lane %d of warp %d exited but is named in the mask 0x%08x of a warp "
                         "operation that lane %d waits at",
                         l, base / 32, g_mask[t], lane_of(t));
                fail(buf);
                return false;
            }
            if (g_state[u] != AT_WARP_BARRIER) ready = false;
        }
        if (!ready) continue;
        for (int l = 0; l < 32; ++l) {
            if (!(mask & (1u << l))) continue;
            int u = base + l;
            if (g_op[u] != g_op[t] || (g_mask[u] & existing_lanes(base)) != mask) {
                char buf[256];
                snprintf(buf, sizeof buf,
                         "lanes %d and %d of warp %d meet at different warp operations or masks "
                         "(divergent __shfl/__ballot/__syncwarp)",
                         lane_of(t), l, base / 32);
                fail(buf);
                return false;
            }
        }
        uint64_t ballot = 0;
        if (g_op[t] == OP_BALLOT)
            for (int l = 0; l < 32; ++l)
                if ((mask & (1u << l)) && g_val[base + l]) ballot |= (1ull << l);
        for (int l = 0; l < 32; ++l) {
            if (!(mask & (1u << l))) continue;
            int u = base + l;
            if (g_op[u] == OP_SHFL) {
                int s = g_src[u];
                bool ok = s >= 0 && s < g_nthreads && warp_base(s) == base &&
                          (mask & (1u << lane_of(s)));
                g_res[u] = ok ? g_val[s] : g_val[u];
            } else if (g_op[u] == OP_BALLOT) {
                g_res[u] = ballot;
            }
            g_state[u] = READY;
        }
        progress = true;
    }
    return progress;
}

inline void describe_deadlock() {
    int counts[4] = {0, 0, 0, 0};
    for (int t = 0; t < g_nthreads; ++t) counts[g_state[t]]++;
    char buf[512];
    if (counts[DONE] > 0 && counts[AT_BLOCK_BARRIER] > 0) {
        snprintf(buf, sizeof buf,
                 "block (%u,%u,%u): %d thread(s) exited while %d wait at __syncthreads() "
                 "(a barrier inside a divergent branch or after an early return)",
                 blockIdx.x, blockIdx.y, blockIdx.z, counts[DONE], counts[AT_BLOCK_BARRIER]);
    } else {
        snprintf(buf, sizeof buf,
                 "block (%u,%u,%u) deadlocked: %d thread(s) at __syncthreads(), %d at a warp "
                 "operation whose lanes never all arrive, %d exited",
                 blockIdx.x, blockIdx.y, blockIdx.z, counts[AT_BLOCK_BARRIER],
                 counts[AT_WARP_BARRIER], counts[DONE]);
    }
    fail(buf);
}

inline void run_block_fibers() {
    const int n = g_nthreads;
    for (int t = 0; t < n; ++t) {
        getcontext(&g_fibers[t].ctx);
        g_fibers[t].ctx.uc_stack.ss_sp = g_fibers[t].stack;
        g_fibers[t].ctx.uc_stack.ss_size = kStackBytes;
        g_fibers[t].ctx.uc_link = &g_sched;
        makecontext(&g_fibers[t].ctx, fiber_main, 0);
        g_state[t] = READY;
    }
    for (;;) {
        for (int t = 0; t < n; ++t) {
            if (g_state[t] != READY) continue;
            set_thread(t);
            swapcontext(&g_sched, &g_fibers[t].ctx);
            if (g_failed) return;
        }
        int done = 0, at_block = 0;
        for (int t = 0; t < n; ++t) {
            done += g_state[t] == DONE;
            at_block += g_state[t] == AT_BLOCK_BARRIER;
        }
        if (done == n) return;
        if (release_warps()) continue;
        if (g_failed) return;
        if (at_block == n) {
            int count = 0;
            for (int t = 0; t < n; ++t) count += g_bar_val[t] != 0;
            g_bar_count = count;
            for (int t = 0; t < n; ++t) g_state[t] = READY;
            continue;
        }
        describe_deadlock();
        return;
    }
}

inline void run_block_fast() {
    for (int t = 0; t < g_nthreads; ++t) {
        set_thread(t);
        g_invoke(g_invoke_ctx);
        if (g_failed) return;
    }
}

struct KernelCall {
    void* kernel;
    void** args;
};

template <class T>
using bare_t = std::remove_cv_t<std::remove_reference_t<T>>;

template <class... A, size_t... I>
inline void call_kernel(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<bare_t<A>*>(args[I])...);
}

template <class... A>
inline void invoke(void* p) {
    auto* c = static_cast<KernelCall*>(p);
    call_kernel(reinterpret_cast<void (*)(A...)>(c->kernel), c->args,
                std::index_sequence_for<A...>{});
}

// Launch: every block in order; returns 0, or 1 with the message in g_error.
template <class... A>
int launch(void (*k)(A...), unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
           unsigned bz, size_t shmem, void** args, int fibers) {
    g_failed = false;
    g_error[0] = 0;
    const long long nthreads = (long long)bx * by * bz;
    if (nthreads < 1 || nthreads > kMaxThreads) {
        fail("block size must be between 1 and 1024 threads");
        return 1;
    }
    g_nthreads = (int)nthreads;
    g_fiber_mode = fibers != 0;
    if (g_fiber_mode && !ensure_stacks(g_nthreads)) return 1;
    KernelCall call{reinterpret_cast<void*>(k), args};
    g_invoke = &invoke<A...>;
    g_invoke_ctx = &call;
    gridDim = dim3(gx, gy, gz);
    blockDim = dim3(bx, by, bz);
    // Dynamic shared memory: uninitialised on a GPU, so fill it with 0xff bytes (NaN / -1).
    unsigned char* smem = nullptr;
    if (shmem) {
        smem = static_cast<unsigned char*>(aligned_alloc(256, (shmem + 255) / 256 * 256));
        if (!smem) {
            fail("allocating dynamic shared memory failed");
            return 1;
        }
    }
    g_dyn_smem = smem;
    for (unsigned z = 0; z < gz && !g_failed; ++z)
        for (unsigned y = 0; y < gy && !g_failed; ++y)
            for (unsigned x = 0; x < gx && !g_failed; ++x) {
                blockIdx = uint3{x, y, z};
                if (smem) memset(smem, 0xff, shmem);
                if (__start_emu_shared != __stop_emu_shared)
                    memset(__start_emu_shared, 0xff,
                           static_cast<size_t>(__stop_emu_shared - __start_emu_shared));
                if (g_fiber_mode)
                    run_block_fibers();
                else
                    run_block_fast();
            }
    free(smem);
    g_dyn_smem = nullptr;
    return g_failed ? 1 : 0;
}

// Parameter signature: "p<pointee>" for pointers, i/u/f/b + byte size for scalars, s<size> else.
template <class T>
inline std::string scalar_code() {
    using U = bare_t<T>;
    if constexpr (std::is_void_v<U>) return "v";
    else if constexpr (std::is_same_v<U, bool>) return "b1";
    else if constexpr (std::is_integral_v<U>)
        return (std::is_signed_v<U> ? "i" : "u") + std::to_string(sizeof(U));
    else if constexpr (std::is_floating_point_v<U>) return "f" + std::to_string(sizeof(U));
    else if constexpr (std::is_pointer_v<U>) return "p";
    else return "s" + std::to_string(sizeof(U));
}

template <class T>
inline std::string param_code() {
    using U = bare_t<T>;
    if constexpr (std::is_pointer_v<U>) return "p" + scalar_code<std::remove_pointer_t<U>>();
    else return scalar_code<U>();
}

template <class... A>
inline const char* signature(void (*)(A...)) {
    static std::string s = [] {
        std::string out;
        ((out += param_code<A>() + ","), ...);
        if (!out.empty()) out.pop_back();
        return out;
    }();
    return s.c_str();
}

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp operations on values wider than 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}

template <class T>
inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}

inline uint64_t warp_op(int op, unsigned mask, uint64_t val, int src) {
    g_op[g_cur] = op;
    g_mask[g_cur] = mask;
    g_val[g_cur] = val;
    g_src[g_cur] = src;
    g_state[g_cur] = AT_WARP_BARRIER;
    park();
    return g_res[g_cur];
}

}  // namespace __emu

extern "C" const char* __emu_error() { return __emu::g_error; }

// ---------------------------------------------------------------- barriers and warp operations
inline void __syncthreads() {
    __emu::g_bar_val[__emu::g_cur] = 0;
    __emu::g_state[__emu::g_cur] = __emu::AT_BLOCK_BARRIER;
    __emu::park();
}
inline int __syncthreads_count(int pred) {
    __emu::g_bar_val[__emu::g_cur] = pred != 0;
    __emu::g_state[__emu::g_cur] = __emu::AT_BLOCK_BARRIER;
    __emu::park();
    return __emu::g_bar_count;
}
inline int __syncthreads_and(int pred) { return __syncthreads_count(pred) == __emu::g_nthreads; }
inline int __syncthreads_or(int pred) { return __syncthreads_count(pred) != 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    __emu::warp_op(__emu::OP_SYNCWARP, mask, 0, -1);
}

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
    int t = __emu::g_cur, lane = t & 31;
    int src = __emu::warp_base(t) + (lane / width) * width + (src_lane % width);
    return __emu::from_bits<T>(__emu::warp_op(__emu::OP_SHFL, mask, __emu::to_bits(var), src));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    int t = __emu::g_cur, lane = t & 31;
    int src = (lane % width) + (int)delta < width ? t + (int)delta : t;
    return __emu::from_bits<T>(__emu::warp_op(__emu::OP_SHFL, mask, __emu::to_bits(var), src));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    int t = __emu::g_cur, lane = t & 31;
    int src = (lane % width) >= (int)delta ? t - (int)delta : t;
    return __emu::from_bits<T>(__emu::warp_op(__emu::OP_SHFL, mask, __emu::to_bits(var), src));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    int t = __emu::g_cur, lane = t & 31;
    int s = lane ^ lane_mask;
    int src = s < (lane / width + 1) * width ? __emu::warp_base(t) + s : t;
    return __emu::from_bits<T>(__emu::warp_op(__emu::OP_SHFL, mask, __emu::to_bits(var), src));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)__emu::warp_op(__emu::OP_BALLOT, mask, pred != 0, -1);
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    unsigned m = mask & __emu::existing_lanes(__emu::warp_base(__emu::g_cur));
    return (__ballot_sync(mask, pred) & m) == m;
}
inline unsigned __activemask() { return __emu::existing_lanes(__emu::warp_base(__emu::g_cur)); }

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T>
inline T __ldg(const T* p) { return *p; }

// ---------------------------------------------------------------- atomics
// One OS thread runs every CUDA thread and fibers switch only at barriers, so a plain
// read-modify-write is atomic here.
// The value parameters are non-deduced, so atomicAdd(&unsigned_counter, 1) converts as in CUDA.
namespace __emu {
template <class T>
struct same {
    using type = T;
};
}  // namespace __emu
#define EMU_ATOMIC_RMW(NAME, EXPR)                                    \
    template <class T>                                                \
    inline T NAME(T* addr, typename __emu::same<T>::type val) {       \
        T old = *addr;                             \
        *addr = (EXPR);                            \
        return old;                                \
    }
EMU_ATOMIC_RMW(atomicAdd, old + val)
EMU_ATOMIC_RMW(atomicSub, old - val)
EMU_ATOMIC_RMW(atomicExch, val)
EMU_ATOMIC_RMW(atomicMax, old < val ? val : old)
EMU_ATOMIC_RMW(atomicMin, val < old ? val : old)
EMU_ATOMIC_RMW(atomicAnd, old & val)
EMU_ATOMIC_RMW(atomicOr, old | val)
EMU_ATOMIC_RMW(atomicXor, old ^ val)
#undef EMU_ATOMIC_RMW
template <class T>
inline T atomicCAS(T* addr, typename __emu::same<T>::type compare,
                   typename __emu::same<T>::type val) {
    T old = *addr;
    if (old == compare) *addr = val;
    return old;
}
inline unsigned atomicInc(unsigned* addr, unsigned val) {
    unsigned old = *addr;
    *addr = old >= val ? 0 : old + 1;
    return old;
}
inline unsigned atomicDec(unsigned* addr, unsigned val) {
    unsigned old = *addr;
    *addr = (old == 0 || old > val) ? val : old - 1;
    return old;
}

// ---------------------------------------------------------------- math
#define EMU_MINMAX(T)                                   \
    inline T max(T a, T b) { return a < b ? b : a; }    \
    inline T min(T a, T b) { return b < a ? b : a; }
EMU_MINMAX(int)
EMU_MINMAX(unsigned int)
EMU_MINMAX(long)
EMU_MINMAX(unsigned long)
EMU_MINMAX(long long)
EMU_MINMAX(unsigned long long)
#undef EMU_MINMAX
inline float max(float a, float b) { return fmaxf(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline unsigned int max(int a, unsigned int b) { return max((unsigned int)a, b); }
inline unsigned int max(unsigned int a, int b) { return max(a, (unsigned int)b); }
inline unsigned int min(int a, unsigned int b) { return min((unsigned int)a, b); }
inline unsigned int min(unsigned int a, int b) { return min(a, (unsigned int)b); }
inline long long max(int a, long long b) { return max((long long)a, b); }
inline long long max(long long a, int b) { return max(a, (long long)b); }
inline long long min(int a, long long b) { return min((long long)a, b); }
inline long long min(long long a, int b) { return min(a, (long long)b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double max(double a, float b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double min(double a, float b) { return fmin(a, b); }

using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }

inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; memcpy(&x, &i, 4); return x; }
inline long long __double_as_longlong(double x) { long long i; memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; memcpy(&x, &i, 8); return x; }

inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline float __int2float_rn(int i) { return (float)i; }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}

// A monotonic tick count (no cycle meaning in the emulator).
inline long long clock64() {
    static long long ticks = 0;
    return ++ticks;
}
