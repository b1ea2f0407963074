// gemm.cu: C = act(alpha * op(A) @ op(B) + beta * C (+ bias[n])), row-major, FP32 output.
//
// op(A) is (M, K): A stored (M, K) with row stride lda, or (K, M) when trans_a (A^T used).
// op(B) is (K, N): B stored (K, N) with row stride ldb, or (N, K) when trans_b.
// C is (M, N) with row stride ldc. beta == 0 never reads C (it may hold garbage).
// epilogue: bit 0 adds bias[n] (length N); bits 1.. (epilogue >> 1) are an activation code of
// epilogue.cuh applied after it: 1 ReLU (v > 0 ? v : 0, as before: bit 1 alone is ReLU),
// 2 LeakyReLU (negative slope `slope`, the kernels' last argument), 3 GELU (erf), 4 GELU (tanh
// approximation); all after v = alpha * acc (+ beta * C). `bias` must point to valid memory
// even when unused.
// NumPy twin: gpucnn/backend/numpy_ops/gemm.py (gemm).
//
// Kernels (all: inputs, outputs, then sizes; one block per output tile, tile-stride loop over
// tiles, so any grid size is correct; block size fixed by the tile defines, the launcher passes
// it):
//   gemm_f32_simt : FP32 SIMT. Block tile GEMM_BM x GEMM_BN x GEMM_BK; each of
//                   (GEMM_BM/GEMM_TM)*(GEMM_BN/GEMM_TN) threads owns a GEMM_TM x GEMM_TN patch.
//   gemm_tf32_tc  : float32 inputs rounded to TF32 (cvt.rna) at the shared-memory store,
//                   mma.m16n8k8, FP32 accumulation.
//   gemm_f16_tc   : binary16 inputs (raw bits), mma.m16n8k16, FP32 accumulation.
//   gemm_bf16_tc  : bfloat16 inputs (raw bits), mma.m16n8k16, FP32 accumulation.
//   Tensor-core block tile: GEMM_TC_WARPS_M x GEMM_TC_WARPS_N warps, each owning a
//   GEMM_TC_WM x GEMM_TC_WN patch of (WM/16) x (WN/8) MMA tiles; GEMM_TC_BK deep along k.
// Every k tile is staged in shared memory with zero fill past M, N and K (the tails), A as
// [m][k] and B as [n][k] (k contiguous, what the fragment loads of mma.cuh read). Each output
// accumulates over k in ascending order (tile by tile, step by step).
#include "common.cuh"
#include "epilogue.cuh"
#include "mma.cuh"

#ifndef GEMM_BM
#define GEMM_BM 64
#endif
#ifndef GEMM_BN
#define GEMM_BN 64
#endif
#ifndef GEMM_BK
#define GEMM_BK 8
#endif
#ifndef GEMM_TM
#define GEMM_TM 4
#endif
#ifndef GEMM_TN
#define GEMM_TN 4
#endif
#define GEMM_SIMT_THREADS ((GEMM_BM / GEMM_TM) * (GEMM_BN / GEMM_TN))

#ifndef GEMM_TC_WARPS_M
#define GEMM_TC_WARPS_M 2
#endif
#ifndef GEMM_TC_WARPS_N
#define GEMM_TC_WARPS_N 2
#endif
#ifndef GEMM_TC_WM
#define GEMM_TC_WM 32
#endif
#ifndef GEMM_TC_WN
#define GEMM_TC_WN 32
#endif
#ifndef GEMM_TC_BK
#define GEMM_TC_BK 32
#endif
#define GEMM_TC_BM (GEMM_TC_WARPS_M * GEMM_TC_WM)
#define GEMM_TC_BN (GEMM_TC_WARPS_N * GEMM_TC_WN)
#define GEMM_TC_THREADS (32 * GEMM_TC_WARPS_M * GEMM_TC_WARPS_N)
#define GEMM_TC_MT (GEMM_TC_WM / 16)
#define GEMM_TC_NT (GEMM_TC_WN / 8)

#if GEMM_BM % GEMM_TM || GEMM_BN % GEMM_TN || GEMM_SIMT_THREADS > 1024
#error "gemm.cu: GEMM_BM/GEMM_TM and GEMM_BN/GEMM_TN must divide, at most 1024 threads"
#endif
#if GEMM_TC_WM % 16 || GEMM_TC_WN % 8 || GEMM_TC_BK % 16 || GEMM_TC_THREADS > 1024
#error "gemm.cu: GEMM_TC_WM % 16, GEMM_TC_WN % 8 and GEMM_TC_BK % 16 must be 0"
#endif

// Element (m, k) of op(A) and (k, n) of op(B) in their stored layouts.
__device__ __forceinline__ index_t gemm_a_index(int m, int k, int lda, int trans_a) {
    return trans_a ? (index_t)k * lda + m : (index_t)m * lda + k;
}
__device__ __forceinline__ index_t gemm_b_index(int k, int n, int ldb, int trans_b) {
    return trans_b ? (index_t)n * ldb + k : (index_t)k * ldb + n;
}

// The shared epilogue: C[m, n] = act(alpha * acc + beta * C[m, n] + bias[n]).
__device__ __forceinline__ void gemm_store(float* C, int ldc, int m, int n, float acc, float alpha,
                                           float beta, const float* bias, int epilogue,
                                           float slope) {
    const index_t i = (index_t)m * ldc + n;
    float v = alpha * acc;
    if (beta != 0.0f) v = v + beta * C[i];
    if (epilogue & 1) v = v + bias[n];
    const int act = epilogue >> 1;
    if (act == GPUCNN_ACT_RELU) v = v > 0.0f ? v : 0.0f;  // gemm's ReLU: NaN -> 0, as before
    else if (act != GPUCNN_ACT_NONE) v = gpucnn_epilogue_act<float>(v, act, slope);
    C[i] = v;
}

// ---------------------------------------------------------------- FP32 SIMT

extern "C" __global__ void
gemm_f32_simt(const float* __restrict__ A, const float* __restrict__ B,
              const float* __restrict__ bias, float* C, int M, int N, int K, int lda, int ldb,
              int ldc, int trans_a, int trans_b, float alpha, float beta, int epilogue,
              float slope) {
    __shared__ float As[GEMM_BK][GEMM_BM];  // [k][m]
    __shared__ float Bs[GEMM_BK][GEMM_BN];  // [k][n]
    const int tid = (int)threadIdx.x;
    const int tn = tid % (GEMM_BN / GEMM_TN), tm = tid / (GEMM_BN / GEMM_TN);
    const index_t tiles_n = ceil_div(N, GEMM_BN);
    const index_t tiles = ceil_div(M, GEMM_BM) * tiles_n;
    for (index_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int m0 = (int)(tile / tiles_n) * GEMM_BM, n0 = (int)(tile % tiles_n) * GEMM_BN;
        float acc[GEMM_TM][GEMM_TN];
        for (int i = 0; i < GEMM_TM; ++i)
            for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = 0.0f;
        for (int k0 = 0; k0 < K; k0 += GEMM_BK) {
            for (int e = tid; e < GEMM_BK * GEMM_BM; e += GEMM_SIMT_THREADS) {
                const int kk = e % GEMM_BK, mm = e / GEMM_BK;
                const int m = m0 + mm, k = k0 + kk;
                As[kk][mm] = (m < M && k < K) ? A[gemm_a_index(m, k, lda, trans_a)] : 0.0f;
            }
            for (int e = tid; e < GEMM_BK * GEMM_BN; e += GEMM_SIMT_THREADS) {
                const int nn = e % GEMM_BN, kk = e / GEMM_BN;
                const int n = n0 + nn, k = k0 + kk;
                Bs[kk][nn] = (n < N && k < K) ? B[gemm_b_index(k, n, ldb, trans_b)] : 0.0f;
            }
            __syncthreads();
            for (int kk = 0; kk < GEMM_BK; ++kk) {
                float a[GEMM_TM], b[GEMM_TN];
                for (int i = 0; i < GEMM_TM; ++i) a[i] = As[kk][tm * GEMM_TM + i];
                for (int j = 0; j < GEMM_TN; ++j) b[j] = Bs[kk][tn * GEMM_TN + j];
                for (int i = 0; i < GEMM_TM; ++i)
                    for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = acc[i][j] + a[i] * b[j];
            }
            __syncthreads();
        }
        for (int i = 0; i < GEMM_TM; ++i) {
            const int m = m0 + tm * GEMM_TM + i;
            if (m >= M) continue;
            for (int j = 0; j < GEMM_TN; ++j) {
                const int n = n0 + tn * GEMM_TN + j;
                if (n < N) gemm_store(C, ldc, m, n, acc[i][j], alpha, beta, bias, epilogue, slope);
            }
        }
    }
}

// ---------------------------------------------------------------- tensor cores

template <class P>
__device__ __forceinline__ void gemm_tc(const typename P::in_t* __restrict__ A,
                                        const typename P::in_t* __restrict__ B,
                                        const float* __restrict__ bias, float* C, int M, int N,
                                        int K, int lda, int ldb, int ldc, int trans_a,
                                        int trans_b, float alpha, float beta, int epilogue,
                                        float slope, typename P::smem_t* As,
                                        typename P::smem_t* Bs) {
    // As: [GEMM_TC_BM][LD] ([m][k]), Bs: [GEMM_TC_BN][LD] ([n][k]), declared by the kernel.
    const int LD = GEMM_TC_BK + P::PAD;
    const int tid = (int)threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp / GEMM_TC_WARPS_N, wn = warp % GEMM_TC_WARPS_N;
    const index_t tiles_n = ceil_div(N, GEMM_TC_BN);
    const index_t tiles = ceil_div(M, GEMM_TC_BM) * tiles_n;
    for (index_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int m0 = (int)(tile / tiles_n) * GEMM_TC_BM;
        const int n0 = (int)(tile % tiles_n) * GEMM_TC_BN;
        float acc[GEMM_TC_MT][GEMM_TC_NT][4];
        for (int i = 0; i < GEMM_TC_MT; ++i)
            for (int j = 0; j < GEMM_TC_NT; ++j)
                for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
        for (int k0 = 0; k0 < K; k0 += GEMM_TC_BK) {
            // Staging: consecutive threads take consecutive elements of the stored row, so the
            // global reads coalesce for either transpose.
            for (int e = tid; e < GEMM_TC_BM * GEMM_TC_BK; e += GEMM_TC_THREADS) {
                int mm, kk;
                if (trans_a) { mm = e % GEMM_TC_BM; kk = e / GEMM_TC_BM; }
                else { kk = e % GEMM_TC_BK; mm = e / GEMM_TC_BK; }
                const int m = m0 + mm, k = k0 + kk;
                As[mm * LD + kk] = (m < M && k < K) ? P::stage(A[gemm_a_index(m, k, lda, trans_a)])
                                                    : P::zero();
            }
            for (int e = tid; e < GEMM_TC_BN * GEMM_TC_BK; e += GEMM_TC_THREADS) {
                int nn, kk;
                if (trans_b) { kk = e % GEMM_TC_BK; nn = e / GEMM_TC_BK; }
                else { nn = e % GEMM_TC_BN; kk = e / GEMM_TC_BN; }
                const int n = n0 + nn, k = k0 + kk;
                Bs[nn * LD + kk] = (n < N && k < K) ? P::stage(B[gemm_b_index(k, n, ldb, trans_b)])
                                                    : P::zero();
            }
            __syncthreads();
            for (int kk = 0; kk < GEMM_TC_BK; kk += P::KSTEP) {
                unsigned af[GEMM_TC_MT][4], bf[GEMM_TC_NT][2];
                for (int i = 0; i < GEMM_TC_MT; ++i)
                    P::load_a(af[i], As, LD, wm * GEMM_TC_WM + i * 16, kk);
                for (int j = 0; j < GEMM_TC_NT; ++j)
                    P::load_b(bf[j], Bs, LD, wn * GEMM_TC_WN + j * 8, kk);
                for (int i = 0; i < GEMM_TC_MT; ++i)
                    for (int j = 0; j < GEMM_TC_NT; ++j) P::mma(acc[i][j], af[i], bf[j]);
            }
            __syncthreads();
        }
        for (int i = 0; i < GEMM_TC_MT; ++i)
            for (int j = 0; j < GEMM_TC_NT; ++j)
                for (int r = 0; r < 4; ++r) {
                    const int m = m0 + wm * GEMM_TC_WM + i * 16 + mma_c_row(lane, r);
                    const int n = n0 + wn * GEMM_TC_WN + j * 8 + mma_c_col(lane, r);
                    if (m < M && n < N)
                        gemm_store(C, ldc, m, n, acc[i][j][r], alpha, beta, bias, epilogue,
                                   slope);
                }
    }
}

extern "C" __global__ void
gemm_tf32_tc(const float* __restrict__ A, const float* __restrict__ B,
             const float* __restrict__ bias, float* C, int M, int N, int K, int lda, int ldb,
             int ldc, int trans_a, int trans_b, float alpha, float beta, int epilogue,
             float slope) {
    __shared__ __align__(16) float As[GEMM_TC_BM * (GEMM_TC_BK + MmaTf32::PAD)];
    __shared__ __align__(16) float Bs[GEMM_TC_BN * (GEMM_TC_BK + MmaTf32::PAD)];
    gemm_tc<MmaTf32>(A, B, bias, C, M, N, K, lda, ldb, ldc, trans_a, trans_b, alpha, beta,
                      epilogue, slope, As, Bs);
}

extern "C" __global__ void
gemm_f16_tc(const unsigned short* __restrict__ A, const unsigned short* __restrict__ B,
            const float* __restrict__ bias, float* C, int M, int N, int K, int lda, int ldb,
            int ldc, int trans_a, int trans_b, float alpha, float beta, int epilogue,
            float slope) {
    __shared__ __align__(16) unsigned short As[GEMM_TC_BM * (GEMM_TC_BK + MmaF16::PAD)];
    __shared__ __align__(16) unsigned short Bs[GEMM_TC_BN * (GEMM_TC_BK + MmaF16::PAD)];
    gemm_tc<MmaF16>(A, B, bias, C, M, N, K, lda, ldb, ldc, trans_a, trans_b, alpha, beta,
                      epilogue, slope, As, Bs);
}

extern "C" __global__ void
gemm_bf16_tc(const unsigned short* __restrict__ A, const unsigned short* __restrict__ B,
             const float* __restrict__ bias, float* C, int M, int N, int K, int lda, int ldb,
             int ldc, int trans_a, int trans_b, float alpha, float beta, int epilogue,
             float slope) {
    __shared__ __align__(16) unsigned short As[GEMM_TC_BM * (GEMM_TC_BK + MmaBf16::PAD)];
    __shared__ __align__(16) unsigned short Bs[GEMM_TC_BN * (GEMM_TC_BK + MmaBf16::PAD)];
    gemm_tc<MmaBf16>(A, B, bias, C, M, N, K, lda, ldb, ldc, trans_a, trans_b, alpha, beta,
                      epilogue, slope, As, Bs);
}
