// mma.cuh: warp-level tensor-core steps (mma.sync) and the 16-bit / TF32 number formats.
//
// Included by kernels that use tensor cores (cuda/gemm.cu, ...). No CUDA headers: the 16-bit
// types are raw bit patterns (`unsigned short`) with our own round-to-nearest-even conversions,
// identical in every build (NVRTC, nvcc -ptx, the host emulator).
//
// Three MMA shapes, all row.col with FP32 accumulation (PTX ISA "Matrix Fragments for mma"):
//   mma_m16n8k8_tf32  : D(16x8,f32) = A(16x8,tf32) * B(8x8,tf32)  + C(16x8,f32)
//   mma_m16n8k16_f16  : D(16x8,f32) = A(16x16,f16) * B(16x8,f16)  + C(16x8,f32)
//   mma_m16n8k16_bf16 : D(16x8,f32) = A(16x16,bf16)* B(16x8,bf16) + C(16x8,f32)
//
// Fragment layouts (lane = linear thread id % 32, g = lane >> 2, t = lane % 4):
//   tf32 A, 4 regs:  a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)          [row, col]
//   tf32 B, 2 regs:  b0 (t, g)  b1 (t+4, g)                                       [k, n]
//   16-bit A, 4 regs of 2 halves (low half = lower column):
//                    a0,a1 (g, 2t..2t+1)   a2,a3 (g+8, 2t..2t+1)
//                    a4,a5 (g, 2t+8..+9)   a6,a7 (g+8, 2t+8..+9)
//   16-bit B, 2 regs of 2 halves (low half = lower k):
//                    b0,b1 (2t..2t+1, g)   b2,b3 (2t+8..2t+9, g)
//   C / D, 4 floats: c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
//
// On sm_80+ devices each step is one inline-PTX mma.sync. Everywhere else (the host emulator,
// which defines GPUCNN_EMULATOR, and pre-sm_80 devices) a portable body gathers the other
// lanes' fragments with warp shuffles, decodes them by the layouts above and accumulates
// d = c, then d += a[k] * b[k] for k = 0..K-1 in float32. Products of tf32 / f16 / bf16 values
// are exact in float32, so that body rounds only at each addition: a kernel that runs its MMA
// steps in k order gives a plain sequential float32 sum over k. (Tensor cores add in an
// unspecified order and internal precision: real-GPU results differ within tolerance.) The tf32
// body ignores the low 13 bits of each register, as the hardware does.
// Every lane of the warp must call an MMA step together (mask 0xffffffff).
#pragma once

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800) && !defined(GPUCNN_EMULATOR)
#define GPUCNN_MMA_PTX 1
#else
#define GPUCNN_MMA_PTX 0
#endif

typedef unsigned short gpucnn_f16;   // IEEE binary16 bits
typedef unsigned short gpucnn_bf16;  // bfloat16 bits (the high half of a float32)

// ---------------------------------------------------------------- number formats

// float32 -> binary16 bits, round to nearest even; overflow -> inf; NaN -> quiet NaN.
__device__ __forceinline__ gpucnn_f16 gpucnn_float_to_f16(float f) {
    unsigned x = __float_as_uint(f);
    unsigned sign = (x >> 16) & 0x8000u;
    unsigned ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (gpucnn_f16)(sign | 0x7e00u);
    if (ax >= 0x38800000u) {  // normal half range (>= 2^-14) or overflow
        unsigned r = ax + 0xfffu + ((ax >> 13) & 1u);  // RNE at bit 13
        unsigned h = (r - 0x38000000u) >> 13;        // rebias exponent 127 -> 15
        if (h >= 0x7c00u) h = 0x7c00u;
        return (gpucnn_f16)(sign | h);
    }
    // subnormal half: value / 2^-24 rounded to an integer (exact scaling, RNE rounding)
    float v = __uint_as_float(ax) * 16777216.0f;
    return (gpucnn_f16)(sign | (unsigned)__float2int_rn(v));
}

// binary16 bits -> float32 (exact).
__device__ __forceinline__ float gpucnn_f16_to_float(gpucnn_f16 h) {
    unsigned sign = ((unsigned)h & 0x8000u) << 16;
    unsigned e = ((unsigned)h >> 10) & 0x1fu;
    unsigned m = (unsigned)h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
        return __uint_as_float(__float_as_uint(v) | sign);
    }
    if (e == 31) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

// float32 -> bfloat16 bits, round to nearest even; NaN -> quiet NaN.
__device__ __forceinline__ gpucnn_bf16 gpucnn_float_to_bf16(float f) {
    unsigned x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (gpucnn_bf16)(((x >> 16) & 0x8000u) | 0x7fc0u);
    return (gpucnn_bf16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// bfloat16 bits -> float32 (exact).
__device__ __forceinline__ float gpucnn_bf16_to_float(gpucnn_bf16 h) {
    return __uint_as_float((unsigned)h << 16);
}

// float32 -> tf32 (as float32 bits, low 13 bits zero): round to nearest, ties away from zero,
// as cvt.rna.tf32.f32. Inf and NaN pass through.
__device__ __forceinline__ unsigned gpucnn_float_to_tf32(float f) {
#if GPUCNN_MMA_PTX
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f));
    return r;
#else
    unsigned x = __float_as_uint(f);
    if ((x & 0x7f800000u) == 0x7f800000u) return x;
    return (x + 0x1000u) & 0xffffe000u;
#endif
}

// ---------------------------------------------------------------- lanes and fragment indices

// Lane of this thread in its warp (warps are runs of 32 linear thread ids).
__device__ __forceinline__ int gpucnn_lane_id() {
    return (int)((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u);
}

// Row / column in the 16x8 C (D) tile of accumulator element i (0..3) of `lane`.
__device__ __forceinline__ int mma_c_row(int lane, int i) { return (lane >> 2) + 8 * (i >> 1); }
__device__ __forceinline__ int mma_c_col(int lane, int i) { return 2 * (lane & 3) + (i & 1); }

__device__ __forceinline__ unsigned gpucnn_pack16(unsigned short lo, unsigned short hi) {
    return (unsigned)lo | ((unsigned)hi << 16);
}

// ---------------------------------------------------------------- fragment loads (plain loads)
// `As` holds A row-major with k contiguous: element (row, k) at As[row * lda + k].
// `Bs` holds B "column-major" with k contiguous: element (k, n) at Bs[n * ldb + k].
// (row0, k0) / (n0, k0) are the tile origin. tf32 operands hold values already rounded to tf32.
// Shared-memory banks: with lda = ldb = BK + 4 floats (tf32) or BK + 8 halves (16-bit) and BK a
// multiple of 16, the 32 lanes of one load hit 32 different banks.

__device__ __forceinline__ void mma_load_a_tf32(unsigned a[4], const float* As, int lda, int row0,
                                                int k0) {
    const int lane = gpucnn_lane_id(), g = lane >> 2, t = lane & 3;
    const float* p = As + (row0 + g) * lda + k0 + t;
    a[0] = __float_as_uint(p[0]);
    a[1] = __float_as_uint(p[8 * lda]);
    a[2] = __float_as_uint(p[4]);
    a[3] = __float_as_uint(p[8 * lda + 4]);
}

__device__ __forceinline__ void mma_load_b_tf32(unsigned b[2], const float* Bs, int ldb, int n0,
                                                int k0) {
    const int lane = gpucnn_lane_id(), g = lane >> 2, t = lane & 3;
    const float* p = Bs + (n0 + g) * ldb + k0 + t;
    b[0] = __float_as_uint(p[0]);
    b[1] = __float_as_uint(p[4]);
}

// 16-bit fragments: each register is two k-consecutive elements, read as one 32-bit word
// (little-endian: the lower k in the low half, as the ISA wants). Needs a 4-byte-aligned array,
// even lda / ldb and even k0.
__device__ __forceinline__ unsigned gpucnn_load_pair16(const unsigned short* p) {
    return *reinterpret_cast<const unsigned*>(p);
}

__device__ __forceinline__ void mma_load_a_16(unsigned a[4], const unsigned short* As, int lda,
                                              int row0, int k0) {
    const int lane = gpucnn_lane_id(), g = lane >> 2, t = lane & 3;
    const unsigned short* p = As + (row0 + g) * lda + k0 + 2 * t;
    const unsigned short* q = p + 8 * lda;
    a[0] = gpucnn_load_pair16(p);
    a[1] = gpucnn_load_pair16(q);
    a[2] = gpucnn_load_pair16(p + 8);
    a[3] = gpucnn_load_pair16(q + 8);
}

__device__ __forceinline__ void mma_load_b_16(unsigned b[2], const unsigned short* Bs, int ldb,
                                              int n0, int k0) {
    const int lane = gpucnn_lane_id(), g = lane >> 2, t = lane & 3;
    const unsigned short* p = Bs + (n0 + g) * ldb + k0 + 2 * t;
    b[0] = gpucnn_load_pair16(p);
    b[1] = gpucnn_load_pair16(p + 8);
}

// ---------------------------------------------------------------- the portable bodies
#if !GPUCNN_MMA_PTX
// Gather, for this lane's rows (g, g+8) of A and columns (2t, 2t+1) of B, every element along k
// from the lanes that hold them, then accumulate in k order. `kind`: 0 tf32, 1 f16, 2 bf16.
__device__ __forceinline__ float gpucnn_mma_decode(unsigned bits, int kind) {
    if (kind == 0) return __uint_as_float(bits & 0xffffe000u);
    if (kind == 1) return gpucnn_f16_to_float((gpucnn_f16)bits);
    return gpucnn_bf16_to_float((gpucnn_bf16)bits);
}

__device__ __forceinline__ unsigned long long gpucnn_pair64(unsigned lo, unsigned hi) {
    return (unsigned long long)lo | ((unsigned long long)hi << 32);
}

__device__ void gpucnn_mma_emulated(float d[4], const unsigned a[4], const unsigned b[2],
                                           const float c[4], int kind) {
    const unsigned full = 0xffffffffu;
    const int lane = gpucnn_lane_id(), g = lane >> 2, t = lane & 3;
    const int K = kind == 0 ? 8 : 16;
    float arow[2][16];  // [0]: row g, [1]: row g+8; along k
    float bcol[2][16];  // [0]: column 2t, [1]: column 2t+1; along k
    for (int s = 0; s < 4; ++s) {  // the four lanes of my group hold my A rows
        const int src = (g << 2) | s;
        for (int j = 0; j < 4; j += 2) {  // registers j and j+1 in one 64-bit shuffle
            unsigned long long v = __shfl_sync(full, gpucnn_pair64(a[j], a[j + 1]), src);
            const unsigned r[2] = {(unsigned)v, (unsigned)(v >> 32)};
            for (int h = 0; h < 2; ++h) {
                const int reg = j + h, row = reg & 1;  // a0/a2: row g, a1/a3: row g+8
                if (kind == 0) {
                    arow[row][s + 4 * (reg >> 1)] = gpucnn_mma_decode(r[h], 0);
                } else {
                    const int col = 2 * s + 8 * (reg >> 1);
                    arow[row][col] = gpucnn_mma_decode(r[h] & 0xffffu, kind);
                    arow[row][col + 1] = gpucnn_mma_decode(r[h] >> 16, kind);
                }
            }
        }
    }
    for (int cc = 0; cc < 2; ++cc) {  // column n = 2t + cc is held by group n
        for (int s = 0; s < 4; ++s) {
            const int src = ((2 * t + cc) << 2) | s;
            unsigned long long v = __shfl_sync(full, gpucnn_pair64(b[0], b[1]), src);
            const unsigned r[2] = {(unsigned)v, (unsigned)(v >> 32)};
            for (int j = 0; j < 2; ++j) {
                if (kind == 0) {
                    bcol[cc][s + 4 * j] = gpucnn_mma_decode(r[j], 0);
                } else {
                    const int k = 2 * s + 8 * j;
                    bcol[cc][k] = gpucnn_mma_decode(r[j] & 0xffffu, kind);
                    bcol[cc][k + 1] = gpucnn_mma_decode(r[j] >> 16, kind);
                }
            }
        }
    }
    float out[4];
    for (int i = 0; i < 4; ++i) {
        const float* ar = arow[i >> 1];
        const float* bc = bcol[i & 1];
        float acc = c[i];
        for (int k = 0; k < K; ++k) acc = acc + ar[k] * bc[k];
        out[i] = acc;
    }
    for (int i = 0; i < 4; ++i) d[i] = out[i];
}
#endif

// ---------------------------------------------------------------- the MMA steps (d may alias c)

__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const unsigned a[4],
                                                 const unsigned b[2], const float c[4]) {
#if GPUCNN_MMA_PTX
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    gpucnn_mma_emulated(d, a, b, c, 0);
#endif
}

__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const unsigned a[4],
                                                 const unsigned b[2], const float c[4]) {
#if GPUCNN_MMA_PTX
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    gpucnn_mma_emulated(d, a, b, c, 1);
#endif
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4],
                                                  const unsigned b[2], const float c[4]) {
#if GPUCNN_MMA_PTX
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    gpucnn_mma_emulated(d, a, b, c, 2);
#endif
}

// ---------------------------------------------------------------- the three input kinds
// What a tensor-core kernel (gemm.cu, conv_igemm_tc.cu) needs per input kind, as a traits
// class: in_t the tensors' element type; smem_t what shared memory holds (TF32-rounded float
// bits, or 16-bit patterns); KSTEP the MMA's k; PAD the row padding of [m][k] / [n][k]
// staging arrays (bank-conflict-free fragment loads); stage() the value stored; zero() a tail
// element; load_a/load_b the fragment loads above; mma() one MMA step d += a * b.
struct MmaTf32 {
    typedef float in_t;
    typedef float smem_t;
    enum { KSTEP = 8, PAD = 4 };
    static __device__ __forceinline__ float stage(float x) {
        return __uint_as_float(gpucnn_float_to_tf32(x));
    }
    static __device__ __forceinline__ float zero() { return 0.0f; }
    static __device__ __forceinline__ void load_a(unsigned a[4], const float* s, int ld, int r,
                                                  int k) {
        mma_load_a_tf32(a, s, ld, r, k);
    }
    static __device__ __forceinline__ void load_b(unsigned b[2], const float* s, int ld, int n,
                                                  int k) {
        mma_load_b_tf32(b, s, ld, n, k);
    }
    static __device__ __forceinline__ void mma(float d[4], const unsigned a[4],
                                               const unsigned b[2]) {
        mma_m16n8k8_tf32(d, a, b, d);
    }
};

struct MmaF16 {
    typedef unsigned short in_t;
    typedef unsigned short smem_t;
    enum { KSTEP = 16, PAD = 8 };
    static __device__ __forceinline__ unsigned short stage(unsigned short x) { return x; }
    static __device__ __forceinline__ unsigned short zero() { return 0; }
    static __device__ __forceinline__ void load_a(unsigned a[4], const unsigned short* s, int ld,
                                                  int r, int k) {
        mma_load_a_16(a, s, ld, r, k);
    }
    static __device__ __forceinline__ void load_b(unsigned b[2], const unsigned short* s, int ld,
                                                  int n, int k) {
        mma_load_b_16(b, s, ld, n, k);
    }
    static __device__ __forceinline__ void mma(float d[4], const unsigned a[4],
                                               const unsigned b[2]) {
        mma_m16n8k16_f16(d, a, b, d);
    }
};

struct MmaBf16 : MmaF16 {
    static __device__ __forceinline__ void mma(float d[4], const unsigned a[4],
                                               const unsigned b[2]) {
        mma_m16n8k16_bf16(d, a, b, d);
    }
};
